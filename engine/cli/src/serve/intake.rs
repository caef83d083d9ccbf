//! From a webhook payload to verdicts: each alert matched against the triggers, its labels
//! bound to params (through their types and patterns), and admitted, refused or joined to a
//! run by `runbook_core::admission`; a resolved alert cancels its queued run. Never waits for a
//! run. Also the drain at shutdown, which empties the same queue.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use runbook_core::admission::{Candidate, Decision, Resolution};
use runbook_core::alert::{Alert, AlertStatus, WebhookPayload};
use runbook_core::bind::{bind, Bindings};
use runbook_core::compile::TriggeredBy;
use runbook_core::effects::Answer;
use runbook_core::journal::{Event, Journal, Record};
use runbook_core::runbook::Runbook;
use serde_json::{json, Value as Json};

use super::registry::{RunEntry, RunState};
use super::{lock, metrics, Server};

/// What a worker needs to start a queued run.
pub(super) struct Job {
    pub(super) runbook: Arc<Runbook>,
    pub(super) bindings: Bindings,
    pub(super) triggered_by: TriggeredBy,
    pub(super) auto_approve: bool,
    /// A run taken over from a replica that stopped: where it stands, from its journal.
    pub(super) resume: Option<runbook_core::exec::Resume>,
    /// Its journal's copy in the cluster, opened when it was taken over.
    pub(super) mirror: Option<Arc<dyn runbook_core::journal::Mirror>>,
}

/// What became of one alert, for the response and the logs.
pub(super) struct Verdict {
    pub(super) runbook: String,
    pub(super) fingerprint: String,
    pub(super) decision: &'static str,
    pub(super) run: Option<String>,
    pub(super) reason: Option<String>,
}

impl Verdict {
    pub(super) fn to_json(&self) -> Json {
        let mut object = json!({
            "runbook": self.runbook,
            "fingerprint": self.fingerprint,
            "decision": self.decision,
        });
        if let Some(run) = &self.run {
            object["run"] = json!(run);
        }
        if let Some(reason) = &self.reason {
            object["reason"] = json!(reason);
        }
        object
    }
}

impl Server {
    /// Matches, binds and admits every alert of a payload. Never waits for a run.
    pub(super) async fn intake(self: &Arc<Self>, payload: &WebhookPayload) -> Vec<Verdict> {
        let mut verdicts = Vec::new();
        let mut queued = false;
        for alert in &payload.alerts {
            let status = match alert.status {
                AlertStatus::Firing => "firing",
                AlertStatus::Resolved => "resolved",
            };
            self.metrics
                .alerts_received
                .get_or_create(&metrics::StatusLabel {
                    status: status.to_owned(),
                })
                .inc();
            let mut matched = false;
            for runbook in &self.triggered {
                let Some(trigger) = runbook
                    .triggers
                    .iter()
                    .position(|trigger| trigger.matches(&alert.labels))
                else {
                    continue;
                };
                matched = true;
                let verdict = match alert.status {
                    AlertStatus::Firing => {
                        let verdict = self.admit(runbook, trigger, alert, payload).await;
                        queued |= verdict.decision == "queued";
                        verdict
                    }
                    AlertStatus::Resolved => self.resolve(runbook, trigger, alert),
                };
                verdicts.push(verdict);
            }
            if !matched && alert.status == AlertStatus::Firing {
                self.metrics.alerts_unmatched.inc();
                tracing::debug!(alert = alert.name(), fingerprint = %alert.fingerprint, "no runbook's trigger matches");
            }
        }
        if queued {
            self.update_queue_depth();
            // Every idle worker: one webhook may queue runs for several keys.
            self.wake.notify_waiters();
        }
        verdicts
    }

    pub(super) async fn admit(
        self: &Arc<Self>,
        runbook: &Arc<Runbook>,
        trigger: usize,
        alert: &Alert,
        payload: &WebhookPayload,
    ) -> Verdict {
        let name = runbook.name.as_str();
        self.metrics
            .alerts_matched
            .get_or_create(&metrics::runbook(name))
            .inc();
        let mut verdict = Verdict {
            runbook: name.to_owned(),
            fingerprint: alert.fingerprint.clone(),
            decision: "queued",
            run: None,
            reason: None,
        };
        // Labels become params only through their declared types and patterns; a value that
        // fails is refused here and never reaches a command.
        let (bindings, errors) = bind(runbook, &[], Some(alert));
        if !errors.is_empty() {
            return self.unbound(verdict, alert, &errors);
        }
        let key = crate::session::lock_target(runbook, &bindings);
        let spec = &runbook.triggers[trigger];
        let params = redacted_params(runbook, &bindings);
        let job = Job {
            runbook: runbook.clone(),
            bindings,
            triggered_by: TriggeredBy {
                trigger,
                alert: alert.clone(),
                receiver: payload.receiver.clone(),
                group_key: payload.group_key.clone(),
            },
            auto_approve: spec.auto_approve,
            resume: None,
            mirror: None,
        };
        let mut new_id = None;
        let incident = incident(alert);
        let candidate = Candidate {
            key: &key,
            incident: Some(&incident),
            runbook: name,
            cooldown: spec.effective_cooldown(),
        };
        let decision = match &self.shared {
            None => lock(&self.admission).admit_incident(
                Instant::now(),
                &candidate,
                || {
                    let id = self.new_run_id(name);
                    new_id = Some(id.clone());
                    id
                },
                job,
            ),
            Some(shared) => {
                match self
                    .admit_shared(shared, runbook, trigger, alert, &key, &incident, job)
                    .await
                {
                    Ok((decision, id)) => {
                        new_id = id;
                        decision
                    }
                    Err(why) => {
                        self.metrics
                            .alerts_rejected
                            .get_or_create(&metrics::reason(name, "cluster-unavailable"))
                            .inc();
                        tracing::warn!(runbook = name, alert = alert.name(), fingerprint = %alert.fingerprint, error = %why, "alert refused (503): the cluster, which admits runs, cannot be reached; Alertmanager sends it again");
                        verdict.decision = "unavailable";
                        verdict.reason = Some(format!(
                            "the cluster, which admits runs, cannot be reached: {why}"
                        ));
                        return verdict;
                    }
                }
            }
        };
        let alert_json = json!({
            "alert": alert.name(),
            "fingerprint": alert.fingerprint,
            "startsAt": alert.starts_at,
            "status": "firing",
        });
        match decision {
            Decision::Queued => {
                let id = new_id.unwrap_or_default();
                tracing::info!(run_id = %id, runbook = name, alert = alert.name(), fingerprint = %alert.fingerprint, "run queued");
                lock(&self.order).push_back(id.clone());
                lock(&self.runs).insert(
                    id.clone(),
                    RunEntry::queued(&id, name, key, params, alert_json),
                );
                self.evict_finished();
                verdict.run = Some(id);
            }
            Decision::Duplicate { ref run }
            | Decision::CoolingDown { ref run, .. }
            | Decision::SameIncident { ref run } => {
                let run = run.clone();
                let cooling = matches!(decision, Decision::CoolingDown { .. });
                let reason = match decision {
                    Decision::CoolingDown { .. } => "cooldown",
                    Decision::SameIncident { .. } => "same-incident",
                    _ => "in-progress",
                };
                self.metrics
                    .alerts_deduplicated
                    .get_or_create(&metrics::reason(name, reason))
                    .inc();
                if let Some(entry) = lock(&self.runs).get_mut(&run) {
                    if entry.alerts.len() < 100 {
                        entry.alerts.push(alert_json);
                    }
                }
                verdict.decision = if cooling { "cooldown" } else { "duplicate" };
                verdict.reason = Some(match decision {
                    Decision::CoolingDown { remaining, .. } => format!(
                        "run {run} started less than the trigger's cooldown ago; {} left",
                        humantime::format_duration(Duration::from_secs(remaining.as_secs()))
                    ),
                    Decision::SameIncident { .. } => format!(
                        "run {run} already served this incident (fingerprint {}, startsAt {}); a repeated or regrouped notification starts no other run",
                        alert.fingerprint, alert.starts_at
                    ),
                    _ => format!("run {run} for the same runbook and params is queued or running"),
                });
                verdict.run = Some(run);
            }
            Decision::Capped { cap, window } => {
                self.metrics
                    .alerts_rejected
                    .get_or_create(&metrics::reason(name, "run-cap"))
                    .inc();
                let reason = format!(
                    "runbook {name} already started {cap} runs within {}",
                    humantime::format_duration(window)
                );
                if self.refusals.first(&[name, "run-cap", &incident]) {
                    tracing::warn!(runbook = name, alert = alert.name(), fingerprint = %alert.fingerprint, reason = %reason, "alert rejected: run cap (its repeats are logged at debug)");
                } else {
                    tracing::debug!(runbook = name, fingerprint = %alert.fingerprint, "alert rejected again: run cap");
                }
                verdict.decision = "capped";
                verdict.reason = Some(reason);
            }
            Decision::QueueFull => {
                self.metrics
                    .alerts_rejected
                    .get_or_create(&metrics::reason(name, "queue-full"))
                    .inc();
                tracing::warn!(
                    runbook = name,
                    alert = alert.name(),
                    "alert refused: the run queue is full"
                );
                verdict.decision = "queue-full";
                verdict.reason = Some("the run queue is full".to_owned());
            }
        }
        verdict
    }

    /// `--cluster-state`: the verdict of the replicas' shared state, and the run id if it
    /// queued a run here (the run object's name). Nothing is queued when the cluster cannot be
    /// asked.
    #[allow(clippy::too_many_arguments)]
    async fn admit_shared(
        &self,
        shared: &super::shared::Shared,
        runbook: &Arc<Runbook>,
        trigger: usize,
        alert: &Alert,
        key: &str,
        incident: &str,
        job: Job,
    ) -> Result<(Decision, Option<String>), String> {
        if lock(&self.admission).is_full() {
            return Ok((Decision::QueueFull, None));
        }
        let name = runbook.name.as_str();
        let run = runbook_kube::runs::run_name(name, key, incident);
        let spec = run_spec(runbook, &job, key, incident, trigger, alert);
        let request = super::shared::Request {
            runbook: name,
            key,
            cooldown: runbook.triggers[trigger].effective_cooldown(),
            cap: self.limits.cap,
            window: self.limits.window,
            spec,
        };
        match shared.admit(&run, &request).await {
            super::shared::Admitted::Unavailable(why) => Err(why),
            super::shared::Admitted::Decided(Decision::Queued) => {
                lock(&self.admission).enqueue(key, name, run.clone(), job);
                Ok((Decision::Queued, Some(run)))
            }
            super::shared::Admitted::Decided(decision) => Ok((decision, None)),
        }
    }

    /// The verdict on an alert whose labels do not bind the runbook's params.
    fn unbound(
        &self,
        mut verdict: Verdict,
        alert: &Alert,
        errors: &[runbook_core::bind::BindError],
    ) -> Verdict {
        let reason = errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        self.metrics
            .alerts_rejected
            .get_or_create(&metrics::reason(&verdict.runbook, "invalid-params"))
            .inc();
        if self
            .refusals
            .first(&[&verdict.runbook, "invalid-params", &incident(alert)])
        {
            tracing::warn!(
                runbook = %verdict.runbook,
                alert = alert.name(),
                fingerprint = %alert.fingerprint,
                reason = %reason,
                "alert rejected: its labels do not bind the runbook's params (its repeats are logged at debug)"
            );
        } else {
            tracing::debug!(runbook = %verdict.runbook, fingerprint = %alert.fingerprint, "alert rejected again: its labels do not bind the runbook's params");
        }
        verdict.decision = "rejected";
        verdict.reason = Some(reason);
        verdict
    }

    /// A resolved alert cancels its run if it has not started, and is recorded against it if
    /// it is going on (the run is not stopped: a remediation half done is worse than one done).
    pub(super) fn resolve(&self, runbook: &Arc<Runbook>, trigger: usize, alert: &Alert) -> Verdict {
        let name = runbook.name.as_str();
        let mut verdict = Verdict {
            runbook: name.to_owned(),
            fingerprint: alert.fingerprint.clone(),
            decision: "resolved",
            run: None,
            reason: None,
        };
        let (bindings, errors) = bind(runbook, &[], Some(alert));
        if !errors.is_empty() {
            verdict.reason = Some("its labels bind no run".to_owned());
            return verdict;
        }
        let key = crate::session::lock_target(runbook, &bindings);
        let retention = runbook.triggers[trigger]
            .effective_cooldown()
            .unwrap_or_default();
        let (cancelled, still_needed) = match lock(&self.admission).resolve(
            Instant::now(),
            &key,
            &incident(alert),
            retention,
        ) {
            Resolution::Cancelled(queued) => (Some(queued), false),
            Resolution::StillNeeded => (None, true),
            Resolution::NotQueued => (None, false),
        };
        if let Some(queued) = cancelled {
            self.update_queue_depth();
            self.metrics
                .alerts_resolved
                .get_or_create(&metrics::reason(name, "cancelled-queued-run"))
                .inc();
            self.metrics
                .runs_cancelled
                .get_or_create(&metrics::reason(name, "resolved"))
                .inc();
            if let Some(entry) = lock(&self.runs).get_mut(&queued.run) {
                entry.state = RunState::Cancelled;
                entry.finished_at = Some(SystemTime::now());
                entry.message = Some("its alert resolved before it started".to_owned());
                entry.alerts.push(json!({
                    "alert": alert.name(), "fingerprint": alert.fingerprint, "status": "resolved",
                }));
            }
            if let Some(shared) = &self.shared {
                shared.ended(
                    name,
                    &key,
                    &queued.run,
                    super::shared::final_status(
                        super::shared::phase::CANCELLED,
                        None,
                        "its alert resolved before it started",
                    ),
                    false,
                );
            }
            tracing::info!(run_id = %queued.run, runbook = name, fingerprint = %alert.fingerprint, "queued run cancelled: its alert resolved");
            verdict.decision = "cancelled";
            verdict.run = Some(queued.run);
            return verdict;
        }
        let active = lock(&self.admission).active(&key).map(str::to_owned);
        if let Some(run) = active {
            let journal = {
                let mut runs = lock(&self.runs);
                runs.get_mut(&run).and_then(|entry| {
                    entry.alerts.push(json!({
                        "alert": alert.name(), "fingerprint": alert.fingerprint, "status": "resolved",
                    }));
                    entry.journal.clone()
                })
            };
            if let Some(path) = journal {
                let appended = Journal::open(&path).and_then(|journal| {
                    journal.append(&Record {
                        time: runbook_core::journal::timestamp(SystemTime::now()),
                        run: run.clone(),
                        event: Event::AlertResolved {
                            alert: alert.name().to_owned(),
                            fingerprint: alert.fingerprint.clone(),
                        },
                    })
                });
                if let Err(e) = appended {
                    tracing::warn!(run_id = %run, error = %e, "cannot journal the resolved alert");
                }
            }
            if still_needed {
                self.metrics
                    .alerts_resolved
                    .get_or_create(&metrics::reason(name, "recorded-other-incident-fires"))
                    .inc();
                tracing::info!(run_id = %run, runbook = name, fingerprint = %alert.fingerprint, "alert resolved; its run goes on for another incident that still fires");
                verdict.decision = "recorded";
                verdict.reason = Some(format!(
                    "run {run} also serves an incident that still fires; it is not cancelled"
                ));
                verdict.run = Some(run);
                return verdict;
            }
            if let Some(step) = self.cancel_at_gate(&run, alert) {
                self.metrics
                    .alerts_resolved
                    .get_or_create(&metrics::reason(name, "cancelled-run-at-gate"))
                    .inc();
                self.metrics
                    .runs_cancelled
                    .get_or_create(&metrics::reason(name, "resolved"))
                    .inc();
                tracing::info!(run_id = %run, runbook = name, step = %step, fingerprint = %alert.fingerprint, "run cancelled at its gate: its alert resolved before it changed anything");
                verdict.decision = "cancelled";
                verdict.run = Some(run);
                return verdict;
            }
            self.metrics
                .alerts_resolved
                .get_or_create(&metrics::reason(name, "recorded-on-running-run"))
                .inc();
            tracing::info!(run_id = %run, runbook = name, fingerprint = %alert.fingerprint, "alert resolved while its run goes on; recorded");
            verdict.decision = "recorded";
            verdict.run = Some(run);
            return verdict;
        }
        self.metrics
            .alerts_resolved
            .get_or_create(&metrics::reason(name, "no-run"))
            .inc();
        if let Some(shared) = &self.shared {
            // The incident's run may be another replica's: its object says the alert
            // resolved, and its owner cancels it if it has changed nothing yet.
            let run = runbook_kube::runs::run_name(name, &key, &incident(alert));
            shared.resolved_elsewhere(
                &run,
                &format!("{} (fingerprint {})", alert.name(), alert.fingerprint),
            );
            verdict.run = Some(run);
            verdict.reason =
                Some("recorded in its run's object, for the replica that owns it".to_owned());
        }
        tracing::info!(runbook = name, alert = alert.name(), fingerprint = %alert.fingerprint, "alert resolved; no run of it is queued or running here");
        verdict
    }

    pub(super) fn update_queue_depth(&self) {
        let depth = lock(&self.admission).depth();
        self.metrics
            .queue_depth
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    pub(super) fn new_run_id(&self, runbook: &str) -> String {
        let runs = lock(&self.runs);
        loop {
            let id = crate::state::new_run_id(runbook);
            let taken = runs.contains_key(&id)
                || self
                    .state_dir
                    .join("runs")
                    .join(format!("{id}.jsonl"))
                    .exists();
            if !taken {
                return id;
            }
        }
    }

    /// Stops taking runs: the queue is emptied (its alerts come again from Alertmanager) and
    /// every run in flight is asked to drain.
    pub(super) fn drain_runs(&self, signal: &str) {
        let dropped = lock(&self.admission).drain();
        self.metrics.queue_depth.set(0);
        let mut runs = lock(&self.runs);
        for queued in dropped {
            self.metrics
                .runs_cancelled
                .get_or_create(&metrics::reason(&queued.runbook, "shutdown"))
                .inc();
            if let Some(entry) = runs.get_mut(&queued.run) {
                entry.state = RunState::Cancelled;
                entry.finished_at = Some(SystemTime::now());
                entry.message = Some(format!("not started: the server stopped ({signal})"));
            }
            if let Some(shared) = &self.shared {
                // Another replica takes it over and starts it.
                shared.handed_over(
                    &queued.run,
                    &format!(
                        "handed over: replica {} stopped before starting it",
                        shared.replica
                    ),
                );
            }
            tracing::warn!(run_id = %queued.run, runbook = %queued.runbook, "queued run dropped at shutdown; Alertmanager sends its alert again while it fires");
        }
        let by = format!("server shutdown ({signal})");
        for entry in runs.values() {
            if let Some(interrupt) = &entry.interrupt {
                interrupt.drain(&by);
            }
        }
    }
}

impl Server {
    /// Cancels run `run` if it waits at a gate and has changed nothing yet (its journal holds
    /// no step intent and no step in flight; while a gate waits no other step starts): the
    /// gate is answered no, by the resolve. Returns the gate's step.
    fn cancel_at_gate(&self, run: &str, alert: &Alert) -> Option<String> {
        self.cancel_at_gate_for(
            run,
            &format!(
                "alert resolved ({}, fingerprint {})",
                alert.name(),
                alert.fingerprint
            ),
        )
    }

    /// [`Server::cancel_at_gate`], answered by `by`.
    pub(super) fn cancel_at_gate_for(&self, run: &str, by: &str) -> Option<String> {
        let mut runs = lock(&self.runs);
        let entry = runs.get_mut(run)?;
        entry.gate.as_ref()?;
        let unchanged = entry.journal.as_deref().is_some_and(nothing_changed);
        if !unchanged {
            return None;
        }
        let gate = entry.gate.take()?;
        let by = by.to_owned();
        let reason = format!(
            "cancelled at the gate of step `{}`: its alert resolved before the run changed anything",
            gate.step
        );
        if gate.reply.send((Answer::No, by)).is_err() {
            return None;
        }
        entry.cancelled = Some(reason);
        Some(gate.step)
    }
}

/// Whether the journal at `path` shows no mutation begun: no step intent, and every step that
/// started has finished. A journal that cannot be read counts as changed, and so does one
/// whose last line is torn (it may have been an intent).
fn nothing_changed(path: &std::path::Path) -> bool {
    let Ok(contents) = runbook_core::journal::read(path) else {
        return false;
    };
    if contents.torn.is_some() {
        return false;
    }
    let mut in_flight = 0_usize;
    for record in &contents.records {
        match record.event {
            Event::StepIntent { .. } => return false,
            Event::StepStarted { .. } => in_flight += 1,
            Event::StepFinished { .. } => in_flight = in_flight.saturating_sub(1),
            _ => {}
        }
    }
    in_flight == 0
}

/// Alertmanager's identity of an alert: its fingerprint (of its labels) and when it started.
/// A payload without a fingerprint (not Alertmanager's) is identified by its labels.
pub(super) fn incident(alert: &Alert) -> String {
    let fingerprint = if alert.fingerprint.is_empty() {
        serde_json::to_string(&alert.labels).unwrap_or_default()
    } else {
        alert.fingerprint.clone()
    };
    format!("{fingerprint}@{}", alert.starts_at)
}

/// A RunbookRun's spec: what the run is, with its secret params left out (by name only).
fn run_spec(
    runbook: &Runbook,
    job: &Job,
    key: &str,
    incident: &str,
    trigger: usize,
    alert: &Alert,
) -> Json {
    let mut params = serde_json::Map::new();
    let mut secret = Vec::new();
    for (name, value) in &job.bindings.values {
        if runbook
            .param(name)
            .is_some_and(|param| job.bindings.is_secret(param))
        {
            secret.push(name.clone());
        } else {
            params.insert(
                name.clone(),
                serde_json::to_value(value).unwrap_or(Json::Null),
            );
        }
    }
    // The alert, for a replica that takes the run over before it started: the labels and
    // annotations that secret params come from are left out, and credential-like text in the
    // rest is redacted (such a run is then left to a human rather than run with placeholders).
    let mut left_out = std::collections::BTreeSet::new();
    for param in runbook.params.iter().filter(|param| param.secret) {
        if let Some(field) = &param.from {
            left_out.insert(field.to_string());
        }
    }
    let redactor = runbook_core::redact::Redactor::new();
    let kept = |kind: &str, map: &std::collections::BTreeMap<String, String>| -> Json {
        map.iter()
            .filter(|(name, _)| !left_out.contains(&format!("alert.{kind}.{name}")))
            .map(|(name, value)| (name.clone(), json!(redactor.redact(value))))
            .collect::<serde_json::Map<String, Json>>()
            .into()
    };
    json!({
        "runbook": runbook.name,
        "digest": crate::session::runbook_digest(runbook),
        "alert": {
            "labels": kept("labels", &alert.labels),
            "annotations": kept("annotations", &alert.annotations),
            "startsAt": alert.starts_at,
            "endsAt": alert.ends_at,
            "generatorURL": alert.generator_url,
            "fingerprint": alert.fingerprint,
        },
        "target": key,
        "params": params,
        "secretParams": secret,
        "incident": incident,
        "trigger": {
            "alert": alert.name(),
            "fingerprint": alert.fingerprint,
            "startsAt": alert.starts_at,
            "receiver": job.triggered_by.receiver,
            "groupKey": job.triggered_by.group_key,
            "index": trigger,
        },
    })
}

pub(super) fn redacted_params(runbook: &Runbook, bindings: &Bindings) -> Json {
    let mut object = serde_json::Map::new();
    for (name, value) in &bindings.values {
        let secret = runbook
            .param(name)
            .is_some_and(|param| bindings.is_secret(param));
        object.insert(
            name.clone(),
            if secret {
                json!(runbook_core::redact::REDACTED)
            } else {
                serde_json::to_value(value).unwrap_or(Json::Null)
            },
        );
    }
    Json::Object(object)
}

/// Refusals already logged at warn: Alertmanager repeats a refused alert every
/// `repeat_interval`, and each repeat is logged at debug only, so one hostile or broken alert
/// cannot fill the log. Bounded; when full it starts over, and an old refusal may be logged
/// once more.
#[derive(Default)]
pub(super) struct RefusalLog {
    seen: std::sync::Mutex<std::collections::HashSet<[u8; 32]>>,
}

/// Refusals remembered by [`RefusalLog`].
const REFUSALS_REMEMBERED: usize = 10_000;

impl RefusalLog {
    /// Whether the refusal named by `parts` is seen for the first time.
    pub(super) fn first(&self, parts: &[&str]) -> bool {
        let key = super::digest(parts.join("\u{0}").as_bytes());
        let mut seen = lock(&self.seen);
        if seen.len() >= REFUSALS_REMEMBERED && !seen.contains(&key) {
            seen.clear();
        }
        seen.insert(key)
    }
}
