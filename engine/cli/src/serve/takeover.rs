//! `--cluster-state`: runs whose replica is gone are taken over by another.
//!
//! Each replica holds a Lease named after it for as long as it serves (renewed every third of
//! `--takeover-after`). Every few seconds each replica lists the run objects and claims the
//! ones that are not finished and whose owner's Lease has expired, or that their owner handed
//! over when it stopped (`Interrupted`). A claim replaces the object's status at the
//! resourceVersion read, so of several replicas claiming at once exactly one wins.
//!
//! What the winner does depends on whether the run had started (its owner writes `Running`
//! through the API before the run's first step, so `Queued` means nothing was done):
//! - not started: it is queued here, rebuilt from its object (the runbook by name, the params
//!   bound again from the alert its object keeps). A run whose secret params were left out of
//!   its object, or whose alert no longer binds, cannot be rebuilt: it is left to a human.
//! - started: the journal that says which steps are done is on the stopped replica's disk, so
//!   the run is marked as needing a human (`runbook resume` there), and it is logged as an
//!   error. It is never started again from the top.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use runbook_core::alert::Alert;
use runbook_core::bind::bind;
use runbook_core::compile::TriggeredBy;
use runbook_core::effects::EffectError;
use serde_json::{json, Value as Json};

use super::intake::Job;
use super::registry::RunEntry;
use super::shared::{phase, Shared};
use super::{lock, Server};

/// Passes in a row that may fail to read a taken-over run's journal before it is left to a
/// human.
const READ_ATTEMPTS: u32 = 5;

/// The name of the Lease a replica holds while it serves.
pub(super) fn replica_lease(replica: &str) -> String {
    runbook_kube::lease::lease_name(&format!("replica-{replica}"))
}

/// Claims orphaned runs every `interval` until the server stops, and deletes the objects of
/// runs that ended more than `keep` ago.
pub(super) async fn adopt_orphans(server: Arc<Server>, interval: Duration, keep: Duration) {
    let Some(shared) = server.shared.as_ref() else {
        return;
    };
    loop {
        if server.stopping.load(Ordering::SeqCst) {
            return;
        }
        match scan(&server, shared, keep).await {
            Ok(0) => {}
            Ok(adopted) => tracing::info!(adopted, "took over runs whose replica stopped"),
            Err(error) => {
                tracing::warn!(%error, "cannot look for runs whose replica stopped; trying again")
            }
        }
        tokio::time::sleep(interval).await;
    }
}

/// One pass: the runs claimed.
async fn scan(server: &Arc<Server>, shared: &Shared, keep: Duration) -> Result<usize, EffectError> {
    let objects = shared
        .objects
        .list(Some("app.kubernetes.io/managed-by=runbook"))
        .await?;
    if !shared.holds_lease() {
        // The others may be taking this replica's runs over: it takes none meanwhile.
        return Ok(0);
    }
    let mut alive: HashMap<String, bool> = HashMap::new();
    let mut adopted = 0;
    for object in objects {
        if server.stopping.load(Ordering::SeqCst) {
            break;
        }
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let status = &object["status"];
        let run_phase = status["phase"].as_str().unwrap_or_default();
        if expired(&object, keep) {
            // Its journal chunks are owned by it: the garbage collector deletes them with it.
            let uid = object["metadata"]["uid"].as_str().unwrap_or_default();
            match shared.objects.delete(&name, uid).await {
                Ok(()) => {
                    tracing::info!(run_id = %name, "deleted the object of a run that ended longer ago than --keep-runs")
                }
                Err(error) => {
                    tracing::warn!(run_id = %name, %error, "cannot delete the object of an old run")
                }
            }
            continue;
        }
        if !matches!(
            run_phase,
            phase::QUEUED | phase::RUNNING | phase::WAITING | phase::INTERRUPTED
        ) || status["needsHuman"].as_str().is_some()
            || shared.is_mine(&name)
        {
            continue;
        }
        let owner = status["owner"].as_str().unwrap_or_default().to_owned();
        if run_phase != phase::INTERRUPTED {
            let owner_alive = match alive.get(&owner) {
                Some(known) => *known,
                None => {
                    let known = owner != shared.replica && shared.is_alive(&owner).await?;
                    alive.insert(owner.clone(), known);
                    known
                }
            };
            if owner_alive {
                continue;
            }
        }
        let started = status["startedAt"].as_str().is_some();
        let adoption = if started {
            match resume_started(server, shared, &object, &owner).await {
                Ok(adoption) => {
                    shared.read_failures(&name, false);
                    adoption
                }
                // Tried again at the next pass; one that keeps failing (a damaged journal, a
                // gap in its chunks, no permission) is not retried forever in silence.
                Err(error) if shared.read_failures(&name, true) < READ_ATTEMPTS => {
                    tracing::warn!(run_id = %name, %error, "cannot read the journal of a run whose replica stopped; trying again");
                    continue;
                }
                Err(error) => {
                    shared.read_failures(&name, false);
                    Adoption::Human(format!(
                        "its journal in the cluster could not be read {READ_ATTEMPTS} times in a row: {error}"
                    ))
                }
            }
        } else {
            match rebuild(server, &object) {
                Ok((job, key)) => Adoption::Queue(Box::new(job), key),
                Err(why) => Adoption::Human(why),
            }
        };
        let (rebuilt, finished) = match adoption {
            Adoption::Queue(job, key) => (Ok((*job, key)), None),
            Adoption::Human(why) => (Err(why), None),
            Adoption::Finished(outcome, message) => (
                Err(String::new()),
                Some(super::shared::final_status(
                    phase::FINISHED,
                    Some(outcome),
                    &message,
                )),
            ),
        };
        let mut claimed = status.clone();
        claimed["owner"] = json!(shared.replica);
        claimed["takenOverFrom"] = json!(owner);
        match &rebuilt {
            _ if finished.is_some() => {
                if let Some(last) = &finished {
                    claimed = last.clone();
                    claimed["owner"] = json!(shared.replica);
                    claimed["takenOverFrom"] = json!(owner);
                }
            }
            Ok(_) => {
                claimed["phase"] = json!(phase::QUEUED);
                claimed["message"] = json!(format!(
                    "taken over from replica {owner}, which stopped before starting it"
                ));
            }
            Err(why) => {
                claimed["phase"] = json!(phase::INTERRUPTED);
                claimed["needsHuman"] = json!(why);
                claimed["message"] = json!(format!("needs a human: {why}"));
            }
        }
        shared.claiming(&name);
        match shared.objects.replace_status(&object, claimed).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => {
                // Another replica claimed it first: the copy of its journal read for the claim
                // is not this replica's to go on from.
                shared.not_mine(&name);
                let _ =
                    std::fs::remove_file(crate::session::journal_path(&server.state_dir, &name));
                continue;
            }
            Err(error) => {
                shared.not_mine(&name);
                return Err(error);
            }
        }
        if let Some(last) = finished {
            // Its journal says it ended; only its object and its key were not told.
            tracing::info!(run_id = %name, previous_owner = %owner, "a run whose replica stopped had ended; recorded");
            shared.ended(
                object["spec"]["runbook"].as_str().unwrap_or_default(),
                object["spec"]["target"].as_str().unwrap_or_default(),
                &name,
                last,
                false,
            );
            continue;
        }
        match rebuilt {
            Ok((job, key)) => {
                if job.resume.is_some() {
                    tracing::warn!(run_id = %name, previous_owner = %owner, "took over a run whose replica stopped while it ran; it resumes here from its journal");
                } else {
                    tracing::warn!(run_id = %name, previous_owner = %owner, "took over a run whose replica stopped before starting it; it is queued here");
                }
                queue(server, &name, key, job, &object);
                adopted += 1;
            }
            Err(why) => {
                // Its key is freed: the next alert for it is not a silent duplicate of a run
                // nobody goes on with (a human closes this one, `kubectl delete rbr NAME`).
                let (runbook, key) = (
                    object["spec"]["runbook"].as_str().unwrap_or_default(),
                    object["spec"]["target"].as_str().unwrap_or_default(),
                );
                if let Err(error) = shared
                    .objects
                    .update_ledger(runbook, |ledger| ((), ledger.finished(key, &name)))
                    .await
                {
                    tracing::warn!(run_id = %name, %error, "cannot free the key of a run that needs a human");
                }
                server
                    .metrics
                    .runs_cancelled
                    .get_or_create(&super::metrics::reason(
                        object["spec"]["runbook"].as_str().unwrap_or_default(),
                        "needs-human",
                    ))
                    .inc();
                tracing::error!(run_id = %name, previous_owner = %owner, reason = %why, "a run whose replica stopped needs a human");
                // Paged as a runbook's `page` step would be (printed, and to --notify-webhook).
                let page = runbook_core::effects::Notification {
                    kind: runbook_core::effects::NotificationKind::Page,
                    message: format!(
                        "run {name} of runbook {} needs a human: {why}",
                        object["spec"]["runbook"].as_str().unwrap_or_default()
                    ),
                    channel: None,
                    severity: Some("critical".to_owned()),
                };
                if let Err(error) = server.world.notifier.send(&page).await {
                    tracing::error!(run_id = %name, %error, "cannot page about the run that needs a human");
                }
            }
        }
    }
    Ok(adopted)
}

/// Whether `object` is of a run that ended (or joined another) more than `keep` ago.
fn expired(object: &Json, keep: Duration) -> bool {
    let status = &object["status"];
    let ended = match status["phase"].as_str().unwrap_or_default() {
        phase::FINISHED | phase::CANCELLED => status["finishedAt"].as_str(),
        phase::JOINED => object["metadata"]["creationTimestamp"].as_str(),
        _ => None,
    };
    ended
        .and_then(|at| humantime::parse_rfc3339_weak(at).ok())
        .and_then(|at| std::time::SystemTime::now().duration_since(at).ok())
        .is_some_and(|age| age > keep)
}

/// What a replica does with a run it takes over.
enum Adoption {
    /// Queue it here (resuming it from its journal, if it had started).
    Queue(Box<Job>, String),
    /// Its journal says it ended.
    Finished(runbook_core::journal::Outcome, String),
    /// Leave it to a human, and say why.
    Human(String),
}

/// A run that had started on a replica that stopped: from its journal in the cluster, where
/// it stands, and whether it can go on here under `runbook resume`'s rules: the runbook as it
/// was, done steps not repeated, and a step that may or may not have taken effect left to a
/// human. `Err`: the journal cannot be read now (try again later).
async fn resume_started(
    server: &Server,
    shared: &Shared,
    object: &Json,
    owner: &str,
) -> Result<Adoption, String> {
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let uid = object["metadata"]["uid"].as_str().map(str::to_owned);
    let (mirror, bytes) = shared.open_journal(name, uid).await?;
    if bytes.is_empty() {
        // Stopped between saying it starts and its first record: nothing was done.
        return Ok(match rebuild(server, object) {
            Ok((job, key)) => Adoption::Queue(
                Box::new(Job {
                    mirror: Some(mirror),
                    ..job
                }),
                key,
            ),
            Err(why) => Adoption::Human(why),
        });
    }
    // The cluster's copy is the journal: a local one (from an earlier claim, or this
    // replica's previous life) may be behind what another replica did since.
    let path = crate::session::journal_path(&server.state_dir, name);
    write_journal(&path, &bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let records = runbook_core::journal::read(&path)?.records;
    let state = match runbook_core::resume::analyze(&records) {
        Ok(state) => state,
        Err(why) => {
            return Ok(Adoption::Human(format!(
                "its journal cannot be resumed: {why}"
            )))
        }
    };
    if let Some(outcome) = state.finished {
        return Ok(Adoption::Finished(
            outcome,
            format!("it ended on replica {owner} before that replica stopped"),
        ));
    }
    let (job, key) = match rebuild(server, object) {
        Ok(rebuilt) => rebuilt,
        Err(why) => return Ok(Adoption::Human(why)),
    };
    let digest = crate::session::runbook_digest(&job.runbook);
    if digest != state.digest {
        return Ok(Adoption::Human(format!(
            "runbook `{}` changed since the run started on replica {owner}; it goes on only as it was",
            job.runbook.name
        )));
    }
    // A change that may or may not have taken effect is looked at where the action says what
    // it leaves on its object: as it leaves it, the step is done; as before, it runs again.
    // Otherwise (someone changed the object since, or nothing can be read back) a human must.
    let mut completed = state.completed.clone();
    let mut unclear = Vec::new();
    for unknown in &state.unknown {
        let observed = match &unknown.effect {
            Some(effect) => {
                let current = match server.world.cluster.get(&effect.object).await {
                    Ok(object) => Some(object),
                    Err(runbook_core::effects::EffectError::NotFound(_)) => None,
                    Err(error) => return Err(error.to_string()),
                };
                runbook_core::resume::observe(effect, current.as_ref())
            }
            None => runbook_core::resume::Observed::Neither,
        };
        match observed {
            runbook_core::resume::Observed::Done => {
                tracing::info!(run_id = %name, step = %unknown.step, "the change it was making when its replica stopped had taken effect: done");
                completed.push((unknown.step.clone(), unknown.undo.clone()));
            }
            runbook_core::resume::Observed::NotDone => {
                tracing::info!(run_id = %name, step = %unknown.step, "the change it was making when its replica stopped had not taken effect: it runs again");
            }
            runbook_core::resume::Observed::Neither => unclear.push(match &unknown.effect {
                Some(effect) => format!(
                    "`{}` was about to {}, and {} is neither as it was before nor as the change leaves it",
                    unknown.step, unknown.mutation, effect.object
                ),
                None => format!(
                    "`{}` was about to {}, which cannot be read back",
                    unknown.step, unknown.mutation
                ),
            }),
        }
    }
    if !unclear.is_empty() {
        let steps = unclear.join("; ");
        return Ok(Adoption::Human(format!(
            "replica {owner} stopped during a change that may or may not have taken effect ({steps}): check it, then `runbook resume {name} --assume-done STEP` or `--rerun STEP` with its journal (`runbook show {name} --cluster`)"
        )));
    }
    let resume =
        runbook_core::exec::Resume::from_journal(&state, completed, state.failed.is_some());
    Ok(Adoption::Queue(
        Box::new(Job {
            resume: Some(resume),
            mirror: Some(mirror),
            ..job
        }),
        key,
    ))
}

/// The journal of a run taken over, as the cluster holds it, in this replica's state dir
/// (private, never through a symbolic link), where `runbook resume`'s reading finds it.
fn write_journal(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    if let Some(dir) = path.parent() {
        runbook_core::state_files::own_dir(dir)?;
    }
    let mut file = runbook_core::state_files::open(
        path,
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false),
    )?;
    file.set_len(0)?;
    file.write_all(bytes)?;
    file.sync_data()
}

/// The job of a run that never started, from its object; why it cannot be, if it cannot.
fn rebuild(server: &Server, object: &Json) -> Result<(Job, String), String> {
    let spec = &object["spec"];
    let name = spec["runbook"].as_str().unwrap_or_default();
    let runbook = server
        .catalog
        .runbooks
        .iter()
        .find(|runbook| runbook.name == name)
        .ok_or_else(|| format!("runbook `{name}` is not in this replica's catalog"))?
        .clone();
    let secret: Vec<&str> = spec["secretParams"]
        .as_array()
        .map(|names| names.iter().filter_map(Json::as_str).collect())
        .unwrap_or_default();
    if !secret.is_empty() {
        return Err(format!(
            "its secret params ({}) were left out of its object, so no other replica can start it",
            secret.join(", ")
        ));
    }
    let alert_json = &spec["alert"];
    let text = alert_json.to_string();
    if text.contains(runbook_core::redact::REDACTED) {
        return Err(
            "its alert holds values that were redacted as credentials, so no other replica can start it"
                .to_owned(),
        );
    }
    let alert: Alert = serde_json::from_value(json!({
        "status": "firing",
        "labels": alert_json["labels"],
        "annotations": alert_json["annotations"],
        "startsAt": alert_json["startsAt"],
        "endsAt": alert_json["endsAt"],
        "generatorURL": alert_json["generatorURL"],
        "fingerprint": alert_json["fingerprint"],
    }))
    .map_err(|e| format!("its object's alert cannot be read: {e}"))?;
    let (bindings, errors) = bind(&runbook, &[], Some(&alert));
    if !errors.is_empty() {
        return Err(format!(
            "its alert no longer binds the runbook's params: {}",
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    let key = crate::session::lock_target(&runbook, &bindings);
    if spec["target"].as_str() != Some(key.as_str()) {
        return Err(format!(
            "its runbook now binds another target ({key}) than it was admitted for"
        ));
    }
    let trigger = spec["trigger"]["index"]
        .as_u64()
        .and_then(|i| usize::try_from(i).ok())
        .filter(|i| *i < runbook.triggers.len())
        .ok_or_else(|| "its trigger is no longer in the runbook".to_owned())?;
    let auto_approve = runbook.triggers[trigger].auto_approve;
    let job = Job {
        runbook,
        bindings,
        triggered_by: TriggeredBy {
            trigger,
            alert,
            receiver: spec["trigger"]["receiver"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            group_key: spec["trigger"]["groupKey"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        },
        auto_approve,
        resume: None,
        mirror: None,
    };
    Ok((job, key))
}

fn queue(server: &Server, name: &str, key: String, job: Job, object: &Json) {
    let runbook = job.runbook.name.clone();
    let params = super::intake::redacted_params(&job.runbook, &job.bindings);
    let alert = json!({
        "alert": job.triggered_by.alert.name(),
        "fingerprint": job.triggered_by.alert.fingerprint,
        "startsAt": job.triggered_by.alert.starts_at,
        "status": "firing",
        "takenOver": object["status"]["owner"],
    });
    lock(&server.order).push_back(name.to_owned());
    lock(&server.runs).insert(
        name.to_owned(),
        RunEntry::queued(name, &runbook, key.clone(), params, alert),
    );
    lock(&server.admission).enqueue(&key, &runbook, name.to_owned(), job);
    server.update_queue_depth();
    server.wake.notify_waiters();
}
