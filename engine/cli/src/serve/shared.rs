//! `--cluster-state`: admission across replicas through the API server, and each run's
//! progress in its `RunbookRun` object (see `runbook_kube::runs`).
//!
//! An alert is admitted in three writes, none of which two replicas can both win:
//! 1. the run's object is created under its incident's name; every other replica (and every
//!    repeat) gets 409 AlreadyExists and answers with the run that object stands for;
//! 2. the replica that created it decides on the runbook's ledger (a key with a run, a
//!    cooldown, the cap per window) and writes the ledger at the resourceVersion it read;
//! 3. it records the verdict in the object's status: `Queued` (with itself as owner),
//!    `Joined` (the key's run was going on: this incident is served by it), or, for a cooldown
//!    or the cap, deletes the object again so a later notification may be admitted.
//!
//! When the API server cannot be reached, nothing runs: the alert is answered 503 with
//! Retry-After, and Alertmanager sends it again. A replica that dies between 1 and 3 leaves an
//! object with no verdict; after [`ABANDONED_AFTER`] whoever sees it deletes it and admits the
//! incident afresh.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use runbook_core::admission::Decision;
use runbook_core::journal::{timestamp, Event, Outcome, Record};
use runbook_core::ledger::Ask;
use runbook_kube::runs::{Created, NewRun, RunObjects, ADMITTED_BY};
use serde_json::{json, Value as Json};

use super::lock;

/// How old an object with no verdict must be before it counts as left by a replica that died
/// while admitting it.
pub(super) const ABANDONED_AFTER: Duration = Duration::from_secs(60);

/// Incident runs this replica remembers the answer for, so a repeat costs no request.
const REMEMBERED: usize = 10_000;

/// What the shared state answered about one alert.
pub(super) enum Admitted {
    /// The rules' verdict; for `Queued`, the run's object name is the run id.
    Decided(Decision),
    /// The API server could not be asked: answer 503, nothing runs.
    Unavailable(String),
}

/// The cluster side of a server with `--cluster-state`.
pub(super) struct Shared {
    pub(super) objects: RunObjects,
    pub(super) replica: String,
    /// One admission at a time per runbook on this replica: its ledger is one object, and
    /// deciding twice at once here would only make one of the writes conflict.
    admitting: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Runs that incidents (by their object's name) went to, as this replica learnt them.
    answered: Mutex<(HashMap<String, String>, VecDeque<String>)>,
    /// Each run's status writer, so its patches reach the object in order.
    writers: Mutex<HashMap<String, tokio::sync::mpsc::UnboundedSender<Json>>>,
    /// Writes still going on, awaited before the server exits.
    pending: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Runs this process admitted or took over (so it never takes over its own).
    mine: Mutex<HashSet<String>>,
    /// The runs' journals in the cluster, written from a thread of their own.
    journals: super::journals::Journals,
    /// The Lease that says this replica is alive, held while it serves.
    lease: Arc<tokio::sync::Mutex<Option<runbook_kube::lease::LeaseLock>>>,
    /// Set while this replica does not hold its Lease (it could not renew it): the others may
    /// be taking its runs over, so it admits, starts and takes over nothing until it holds
    /// it again.
    lease_lost: Arc<std::sync::atomic::AtomicBool>,
    /// Other replicas' Leases as this replica saw them: the resourceVersion, and since when
    /// (this machine's monotonic clock). A replica is gone when its Lease did not change for
    /// its duration as measured here, as client-go's leader election decides: no comparing
    /// clocks across machines.
    seen: Mutex<HashMap<String, (String, std::time::Instant)>>,
    /// Failed reads of the journals of runs being taken over, in a row.
    read_failures: Mutex<HashMap<String, u32>>,
}

/// A phase in the object's status.
pub(super) mod phase {
    pub const QUEUED: &str = "Queued";
    pub const RUNNING: &str = "Running";
    pub const WAITING: &str = "WaitingApproval";
    pub const FINISHED: &str = "Finished";
    pub const CANCELLED: &str = "Cancelled";
    pub const JOINED: &str = "Joined";
    pub const INTERRUPTED: &str = "Interrupted";
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn now_text() -> String {
    timestamp(SystemTime::now())
}

fn status_of(object: &Json) -> (&str, &str) {
    (
        object["status"]["phase"].as_str().unwrap_or_default(),
        object["metadata"]["uid"].as_str().unwrap_or_default(),
    )
}

/// How long ago the object was created (zero if it does not say).
fn age(object: &Json) -> Duration {
    object["metadata"]["creationTimestamp"]
        .as_str()
        .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
        .and_then(|created| SystemTime::now().duration_since(created).ok())
        .unwrap_or_default()
}

/// Why a queued run did not start here.
pub(super) enum NotStarted {
    /// Another replica owns it now (it took it over while it waited here): leave it alone.
    TakenOver(String),
    /// The cluster could not be told: the run is withdrawn, so a re-sent alert may start it.
    Unavailable(String),
    /// Its alert resolved (the resolve reached another replica) before it started.
    Resolved(String),
    /// Its object says it started, but its journal could not be opened: it is handed over.
    Stalled(String),
}

/// What one alert asks for, with what its run's object must say.
pub(super) struct Request<'a> {
    pub(super) runbook: &'a str,
    pub(super) key: &'a str,
    pub(super) cooldown: Option<Duration>,
    pub(super) cap: usize,
    pub(super) window: Duration,
    pub(super) spec: Json,
}

impl Shared {
    pub(super) fn new(
        objects: RunObjects,
        replica: String,
        journals: super::journals::Journals,
    ) -> Self {
        Self {
            objects,
            replica,
            journals,
            admitting: Mutex::new(HashMap::new()),
            answered: Mutex::new((HashMap::new(), VecDeque::new())),
            writers: Mutex::new(HashMap::new()),
            pending: Mutex::new(Vec::new()),
            mine: Mutex::new(HashSet::new()),
            lease: Arc::new(tokio::sync::Mutex::new(None)),
            lease_lost: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            seen: Mutex::new(HashMap::new()),
            read_failures: Mutex::new(HashMap::new()),
        }
    }

    /// Whether this replica holds its Lease (see `lease_lost`).
    pub(super) fn holds_lease(&self) -> bool {
        !self.lease_lost.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether replica `owner` is alive: its Lease names it and has changed within its
    /// duration, as this replica has watched it. A Lease seen for the first time counts as
    /// alive until it has stood still that long.
    pub(super) async fn is_alive(
        &self,
        owner: &str,
    ) -> Result<bool, runbook_core::effects::EffectError> {
        let lease = runbook_kube::lease::read(
            self.objects.transport(),
            self.objects.namespace(),
            &super::takeover::replica_lease(owner),
        )
        .await?;
        let Some((holder, version, duration)) = lease else {
            lock(&self.seen).remove(owner);
            return Ok(false);
        };
        if holder != owner {
            // Released (no holder), or another process took the name over.
            return Ok(false);
        }
        let now = std::time::Instant::now();
        let mut seen = lock(&self.seen);
        let since = match seen.get(owner) {
            Some((seen_version, since)) if *seen_version == version => *since,
            _ => {
                seen.insert(owner.to_owned(), (version, now));
                now
            }
        };
        Ok(now.duration_since(since) < duration)
    }

    /// Takes this replica's Lease (see `takeover`); refused if a live replica has its name.
    pub(super) async fn hold_lease(&self, duration: Duration) -> Result<(), String> {
        let spec = runbook_kube::lease::LeaseSpec {
            namespace: self.objects.namespace().to_owned(),
            name: super::takeover::replica_lease(&self.replica),
            holder: self.replica.clone(),
            duration,
            renew_every: duration / 3,
        };
        // A Lease of this name that is still renewed is another live process with the same
        // name (or this one's previous life, not yet expired): two replicas of one name would
        // each take the other's runs for their own.
        let holder =
            runbook_kube::lease::holder(self.objects.transport(), &spec.namespace, &spec.name)
                .await
                .map_err(|e| e.to_string())?;
        if holder.as_deref() == Some(self.replica.as_str()) {
            return Err(format!(
                "the Lease {}/{} of replica {} is still held (another process serves under this name, or this one stopped less than --takeover-after ago): give each replica its own --replica, or wait for it to expire",
                spec.namespace, spec.name, self.replica
            ));
        }
        let transport = self.objects.transport().clone();
        let lease = acquire_replica_lease(&transport, &spec, &self.replica).await?;
        let lost = lease.lost_signal();
        *self.lease.lock().await = Some(lease);
        tokio::spawn(keep_lease(
            transport,
            spec,
            self.replica.clone(),
            self.lease.clone(),
            self.lease_lost.clone(),
            lost,
        ));
        Ok(())
    }

    /// Lets go of this replica's Lease: the other replicas may take over at once what it
    /// still owns.
    pub(super) async fn release_lease(&self) {
        if let Some(lease) = self.lease.lock().await.take() {
            if let Err(error) = lease.release().await {
                tracing::warn!(%error, "cannot release the replica's Lease; it expires on its own");
            }
        }
    }

    /// Counts one more failed read of `run`'s journal (`failed`), or forgets them; how many in
    /// a row.
    pub(super) fn read_failures(&self, run: &str, failed: bool) -> u32 {
        let mut failures = lock(&self.read_failures);
        if failed {
            let count = failures.entry(run.to_owned()).or_default();
            *count += 1;
            *count
        } else {
            failures.remove(run);
            0
        }
    }

    pub(super) fn is_mine(&self, run: &str) -> bool {
        lock(&self.mine).contains(run)
    }

    pub(super) fn claiming(&self, run: &str) {
        lock(&self.mine).insert(run.to_owned());
    }

    pub(super) fn not_mine(&self, run: &str) {
        lock(&self.mine).remove(run);
    }

    /// Records, through the API and before the run's first step, that it has started here:
    /// a replica that takes it over then knows not to start it from the top. The object's uid.
    ///
    /// Only if the object still says this replica owns it and it has not started: written at
    /// the resourceVersion read, so a replica that took it over meanwhile wins
    /// ([`NotStarted::TakenOver`]: leave it alone).
    pub(super) async fn starting(&self, run: &str) -> Result<String, NotStarted> {
        if !self.holds_lease() {
            return Err(NotStarted::Unavailable(
                "this replica does not hold its Lease".to_owned(),
            ));
        }
        let unavailable =
            |e: runbook_core::effects::EffectError| NotStarted::Unavailable(e.to_string());
        let Some(object) = self.objects.get(run).await.map_err(unavailable)? else {
            return Err(NotStarted::TakenOver("its object is gone".to_owned()));
        };
        let status = &object["status"];
        if let Some(by) = status["resolvedBy"].as_str() {
            return Err(NotStarted::Resolved(by.to_owned()));
        }
        let owner = status["owner"].as_str().unwrap_or_default();
        if owner != self.replica
            || status["phase"] != phase::QUEUED
            || status["startedAt"].is_string()
        {
            return Err(NotStarted::TakenOver(format!(
                "replica {owner} has it now ({})",
                status["phase"].as_str().unwrap_or("no phase")
            )));
        }
        let mut started = status.clone();
        started["phase"] = json!(phase::RUNNING);
        started["startedAt"] = json!(now_text());
        match self.objects.replace_status(&object, started).await {
            Ok(Ok(object)) => Ok(object["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_owned()),
            Ok(Err(_)) => Err(NotStarted::TakenOver(
                "its object changed while it was being started".to_owned(),
            )),
            Err(error) => Err(unavailable(error)),
        }
    }

    /// Opens the run's journal in the cluster (owned by its object `uid`, when known, so it
    /// goes when the object does): the mirror a run's journal writes to, and what it holds.
    pub(super) async fn open_journal(
        &self,
        run: &str,
        uid: Option<String>,
    ) -> Result<(Arc<dyn runbook_core::journal::Mirror>, Vec<u8>), String> {
        let existing = self.journals.open(run, uid).await?;
        Ok((Arc::new(self.journals.mirror(run)), existing))
    }

    /// A resolve of `run`'s incident reached this replica, which does not run it: the object
    /// says so (if the run has not ended), for its owner to cancel it while it has changed
    /// nothing ([`NotStarted::Resolved`], and at a gate `approvals`).
    pub(super) fn resolved_elsewhere(&self, run: &str, alert: &str) {
        let objects = self.objects.clone();
        let (run, alert, replica) = (run.to_owned(), alert.to_owned(), self.replica.clone());
        self.track(tokio::spawn(async move {
            let object = match objects.get(&run).await {
                Ok(Some(object)) => object,
                Ok(None) => return,
                Err(error) => {
                    tracing::warn!(run_id = %run, %error, "cannot record the resolve in the run's object");
                    return;
                }
            };
            let phase = object["status"]["phase"].as_str().unwrap_or_default();
            if !matches!(phase, phase::QUEUED | phase::RUNNING | phase::WAITING | phase::INTERRUPTED) {
                return;
            }
            let change = json!({
                "resolvedAt": now_text(),
                "resolvedBy": format!("{alert}, taken in by replica {replica}"),
            });
            if let Err(error) = objects.patch_status(&run, &change).await {
                tracing::warn!(run_id = %run, %error, "cannot record the resolve in the run's object");
            }
        }));
    }

    /// The run stopped resumable because this replica is stopping: another replica takes it
    /// over at once.
    pub(super) fn handed_over(&self, run: &str, message: &str) {
        self.status(
            run,
            json!({"phase": phase::INTERRUPTED, "message": message, "gate": Json::Null}),
        );
        let writer = lock(&self.writers).remove(run);
        drop(writer);
    }

    fn track(&self, task: tokio::task::JoinHandle<()>) {
        let mut pending = lock(&self.pending);
        pending.retain(|task| !task.is_finished());
        pending.push(task);
    }

    /// Waits (at most `limit`) for the writes still going on: the last statuses and ledger
    /// changes of a server that stops.
    pub(super) async fn flush(&self, limit: Duration) {
        let tasks = std::mem::take(&mut *lock(&self.pending));
        let all = async {
            for task in tasks {
                let _ = task.await;
            }
        };
        if tokio::time::timeout(limit, all).await.is_err() {
            tracing::warn!(
                "some run objects or ledgers were not updated before the server stopped"
            );
        }
    }

    fn remember(&self, name: &str, run: &str) {
        let mut answered = lock(&self.answered);
        let (runs, order) = &mut *answered;
        if runs.insert(name.to_owned(), run.to_owned()).is_none() {
            order.push_back(name.to_owned());
            while order.len() > REMEMBERED {
                if let Some(oldest) = order.pop_front() {
                    runs.remove(&oldest);
                }
            }
        }
    }

    /// The lock that lets one write of `runbook`'s ledger at a time go from this replica.
    fn gate(&self, runbook: &str) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.admitting)
            .entry(runbook.to_owned())
            .or_default()
            .clone()
    }

    /// Admits one alert across replicas (see the module doc). `run` is the run's object name.
    pub(super) async fn admit(&self, run: &str, request: &Request<'_>) -> Admitted {
        if !self.holds_lease() {
            return Admitted::Unavailable(
                "this replica does not hold its Lease (the others may be taking its runs over)"
                    .to_owned(),
            );
        }
        if let Some(answer) = lock(&self.answered).0.get(run).cloned() {
            return Admitted::Decided(Decision::SameIncident { run: answer });
        }
        let gate = self.gate(request.runbook);
        let _one_at_a_time = gate.lock().await;
        match self.admit_once(run, request).await {
            Ok((decision, settled)) => {
                // Remembered only once the object has its verdict: one still being decided
                // (or abandoned) may yet go away, and its incident be admitted afresh.
                match &decision {
                    Decision::SameIncident { run: answer }
                    | Decision::Duplicate { run: answer }
                        if settled =>
                    {
                        self.remember(run, answer)
                    }
                    Decision::Queued => self.remember(run, run),
                    _ => {}
                }
                Admitted::Decided(decision)
            }
            Err(error) => Admitted::Unavailable(error.to_string()),
        }
    }

    async fn admit_once(
        &self,
        run: &str,
        request: &Request<'_>,
    ) -> Result<(Decision, bool), runbook_core::effects::EffectError> {
        let new = NewRun {
            name: run.to_owned(),
            runbook: request.runbook.to_owned(),
            key: request.key.to_owned(),
            replica: self.replica.clone(),
            spec: request.spec.clone(),
        };
        let mut created = self.objects.create(&new).await?;
        if let Created::Exists(object) = &created {
            let (phase, uid) = status_of(object);
            let mine = object["metadata"]["annotations"][ADMITTED_BY].as_str()
                == Some(self.replica.as_str());
            if phase.is_empty() && mine {
                // Our own create, whose answer was lost and whose retry found it.
                created = Created::New(object.clone());
            } else if phase.is_empty() && age(object) >= ABANDONED_AFTER {
                tracing::warn!(run_id = %run, admitted_by = %object["metadata"]["annotations"][ADMITTED_BY], "a run object left without a verdict (its replica stopped while admitting it); admitting its incident afresh");
                self.objects.delete(run, uid).await?;
                created = self.objects.create(&new).await?;
            }
        }
        let object = match created {
            Created::New(object) => object,
            Created::Exists(object) => {
                let (phase, _) = status_of(&object);
                let joined = object["status"]["joined"].as_str().unwrap_or_default();
                let settled = !phase.is_empty();
                return Ok(if phase == phase::JOINED && !joined.is_empty() {
                    (
                        Decision::Duplicate {
                            run: joined.to_owned(),
                        },
                        settled,
                    )
                } else {
                    (
                        Decision::SameIncident {
                            run: run.to_owned(),
                        },
                        settled,
                    )
                });
            }
        };
        let uid = object["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        self.claiming(run);
        let decided = self.decide(run, request).await;
        if !matches!(decided, Ok(Decision::Queued)) {
            self.not_mine(run);
        }
        let decision = match decided {
            Ok(decision) => decision,
            Err(error) => {
                // Nothing was admitted: the object goes, so the re-sent alert starts afresh.
                if let Err(e) = self.objects.delete(run, &uid).await {
                    tracing::warn!(run_id = %run, error = %e, "cannot delete the run object of an admission that failed; it is deleted by the next replica that sees it");
                }
                return Err(error);
            }
        };
        let verdict = match &decision {
            Decision::Queued => Some(json!({
                "phase": phase::QUEUED,
                "owner": self.replica,
                "queuedAt": now_text(),
            })),
            Decision::Duplicate { run: joined } => Some(json!({
                "phase": phase::JOINED,
                "joined": joined,
                "message": format!("the same runbook with the same params was going on ({joined}): this incident is served by it"),
            })),
            _ => None,
        };
        match verdict {
            Some(status) => {
                if let Err(error) = self.objects.patch_status(run, &status).await {
                    if decision == Decision::Queued {
                        // The ledger holds it; the run goes on without its status.
                        tracing::warn!(run_id = %run, %error, "cannot record the admission in the run's object; the run goes on");
                    } else {
                        tracing::warn!(run_id = %run, %error, "cannot record the join in the run's object");
                    }
                }
            }
            None => {
                if let Err(error) = self.objects.delete(run, &uid).await {
                    tracing::warn!(run_id = %run, %error, "cannot delete the run object of a refused alert; it is deleted by the next replica that sees it");
                }
            }
        }
        Ok((decision, true))
    }

    /// The ledger's verdict. A key held by a run that has ended (its replica finished it but
    /// could not write the ledger, or its object is gone) is freed, and the alert decided again.
    async fn decide(
        &self,
        run: &str,
        request: &Request<'_>,
    ) -> Result<Decision, runbook_core::effects::EffectError> {
        let ask = Ask {
            key: request.key,
            run,
            cooldown: request.cooldown,
            cap: request.cap,
            window: request.window,
        };
        let mut stale: Option<String> = None;
        let mut decision = Decision::QueueFull;
        for _ in 0..3 {
            let free = stale.take();
            decision = self
                .objects
                .update_ledger(request.runbook, |ledger| {
                    let before = ledger.clone();
                    if let Some(ended) = &free {
                        ledger.finished(request.key, ended);
                    }
                    let decision = ledger.decide(now_millis(), &ask);
                    let changed = *ledger != before;
                    (decision, changed)
                })
                .await?;
            let Decision::Duplicate { run: holder } = &decision else {
                return Ok(decision);
            };
            if holder == run {
                // The key is held by this very run: an earlier admission of this incident
                // wrote the ledger and stopped before its object said so. It is this one.
                return Ok(Decision::Queued);
            }
            let ended = match self.objects.get(holder).await? {
                None => true,
                Some(object) => {
                    let (phase, _) = status_of(&object);
                    phase == phase::FINISHED
                        || phase == phase::CANCELLED
                        || (phase.is_empty() && age(&object) >= ABANDONED_AFTER)
                }
            };
            if !ended {
                return Ok(decision);
            }
            tracing::info!(run_id = %holder, key = %request.key, "the key's run has ended but still held it in the ledger; freed");
            stale = Some(holder.clone());
        }
        Ok(decision)
    }

    /// Sends a status change of `run` to its object, after every earlier one.
    pub(super) fn status(&self, run: &str, status: Json) {
        let mut writers = lock(&self.writers);
        let sender = writers.entry(run.to_owned()).or_insert_with(|| {
            let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
            self.track(tokio::spawn(write_status(
                self.objects.clone(),
                run.to_owned(),
                receiver,
            )));
            sender
        });
        let _ = sender.send(status);
    }

    /// The run has ended: its last status, and its key freed in the ledger. `withdraw`: it
    /// never started for a reason that was not its alert's (a shutdown, no lock, no journal):
    /// its object is deleted and its admission taken back, so the re-sent alert may start it.
    pub(super) fn ended(&self, runbook: &str, key: &str, run: &str, status: Json, withdraw: bool) {
        let gate = self.gate(runbook);
        let writer = lock(&self.writers).remove(run);
        if withdraw {
            lock(&self.answered).0.remove(run);
        }
        let objects = self.objects.clone();
        let replica = self.replica.clone();
        let (runbook, key, run) = (runbook.to_owned(), key.to_owned(), run.to_owned());
        self.track(tokio::spawn(async move {
            if let Some(writer) = writer {
                // The earlier changes first: the writer ends when its channel closes.
                let _ = writer.send(status.clone());
                drop(writer);
            } else if !withdraw {
                if let Err(error) = objects.patch_status(&run, &status).await {
                    tracing::warn!(run_id = %run, %error, "cannot record the run's end in its object");
                }
            }
            let _one_at_a_time = gate.lock().await;
            let mut uid = None;
            if withdraw {
                // Only a run this replica still owns and nobody started is taken back: one
                // another replica took over (and may have run) is theirs.
                let object = match objects.get(&run).await {
                    Ok(object) => object,
                    Err(error) => {
                        tracing::warn!(run_id = %run, %error, "cannot read the object of a run that never started; the next replica that sees it decides");
                        return;
                    }
                };
                let ours = object.as_ref().is_some_and(|o| {
                    o["status"]["owner"].as_str() == Some(replica.as_str())
                        && !o["status"]["startedAt"].is_string()
                });
                if !ours {
                    tracing::info!(run_id = %run, "a run that did not start here is another replica's now; left alone");
                    return;
                }
                uid = object.map(|o| status_of(&o).1.to_owned());
            }
            let freed = objects
                .update_ledger(&runbook, |ledger| {
                    let changed = if withdraw {
                        ledger.withdraw(&key, &run)
                    } else {
                        ledger.finished(&key, &run)
                    };
                    ((), changed)
                })
                .await;
            if let Err(error) = freed {
                tracing::warn!(run_id = %run, %error, "cannot free the run's key in the admission ledger; the next alert for it frees it");
            }
            if let Some(uid) = uid {
                if let Err(error) = objects.delete(&run, &uid).await {
                    tracing::warn!(run_id = %run, %error, "cannot delete the object of a run that never started");
                }
            }
        }));
    }
}

async fn acquire_replica_lease(
    transport: &runbook_kube::transport::Transport,
    spec: &runbook_kube::lease::LeaseSpec,
    replica: &str,
) -> Result<runbook_kube::lease::LeaseLock, String> {
    runbook_kube::lease::LeaseLock::acquire(transport.clone(), spec.clone())
        .await
        .map_err(|e| match e {
            held @ runbook_kube::lease::LeaseError::Held { .. } => format!(
                "another replica serves under the name {replica}: {held}; give each replica its own --replica"
            ),
            other => other.to_string(),
        })
}

/// Watches this replica's Lease: when it is lost (not renewed in time, or taken), the replica
/// stops admitting, starting and taking over until it holds it again, which it tries every
/// few seconds.
async fn keep_lease(
    transport: runbook_kube::transport::Transport,
    spec: runbook_kube::lease::LeaseSpec,
    replica: String,
    slot: Arc<tokio::sync::Mutex<Option<runbook_kube::lease::LeaseLock>>>,
    lost_flag: Arc<std::sync::atomic::AtomicBool>,
    mut lost: runbook_kube::lease::LostSignal,
) {
    loop {
        lost.clone().wait().await;
        lost_flag.store(true, std::sync::atomic::Ordering::SeqCst);
        tracing::error!(replica = %replica, "this replica lost its Lease: the others may take its runs over; it admits and starts nothing until it holds it again");
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            match acquire_replica_lease(&transport, &spec, &replica).await {
                Ok(lease) => {
                    lost = lease.lost_signal();
                    *slot.lock().await = Some(lease);
                    lost_flag.store(false, std::sync::atomic::Ordering::SeqCst);
                    tracing::warn!(replica = %replica, "this replica holds its Lease again");
                    break;
                }
                Err(error) => {
                    tracing::warn!(replica = %replica, %error, "cannot take the replica's Lease again yet")
                }
            }
        }
    }
}

/// Patches one run's status in order; changes that queued up while a patch was in flight are
/// merged into one.
async fn write_status(
    objects: RunObjects,
    run: String,
    mut changes: tokio::sync::mpsc::UnboundedReceiver<Json>,
) {
    while let Some(mut status) = changes.recv().await {
        while let Ok(more) = changes.try_recv() {
            merge(&mut status, more);
        }
        if let Err(error) = objects.patch_status(&run, &status).await {
            tracing::warn!(run_id = %run, %error, "cannot update the run's object");
        }
    }
}

fn merge(into: &mut Json, from: Json) {
    if let (Some(into), Json::Object(from)) = (into.as_object_mut(), from) {
        for (key, value) in from {
            into.insert(key, value);
        }
    }
}

/// The status change a journal event makes, if any.
pub(super) fn status_change(record: &Record, replica: &str) -> Option<Json> {
    Some(match &record.event {
        // A run's start was recorded through the API before it started (`Shared::starting`).
        Event::RunStarted { .. } => return None,
        Event::RunResumed { .. } => json!({
            "phase": phase::RUNNING,
            "owner": replica,
            "startedAt": record.time,
        }),
        Event::StepStarted { step, .. } => json!({"step": step}),
        Event::GatePaused { step, .. } => json!({"phase": phase::WAITING, "gate": step}),
        Event::GateAnswered { by, .. } => json!({
            "phase": phase::RUNNING,
            "gate": Json::Null,
            "approvedBy": by,
        }),
        _ => return None,
    })
}

/// The last status of a run that ended.
pub(super) fn final_status(phase: &str, outcome: Option<Outcome>, message: &str) -> Json {
    let mut status = json!({
        "phase": phase,
        "message": message,
        "finishedAt": now_text(),
        "gate": Json::Null,
    });
    if let Some(outcome) = outcome {
        status["outcome"] = serde_json::to_value(outcome).unwrap_or(Json::Null);
    }
    status
}
