//! The workers: each takes the next queued run and executes it in a `RunSession` (the same
//! lock, journal, digest and Lease watch as `runbook run`), keeping the registry and the
//! metrics up to date.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use runbook_core::compile::Compiler;
use runbook_core::effects::Reporter;
use runbook_core::journal::{Outcome, Record};

use super::gates::ServerPrompter;
use super::intake::Job;
use super::registry::RunState;
use super::shared::NotStarted;
use super::{lock, metrics, Server};
use crate::session::{JournalMode, RunSession, SessionError, SessionRun};
use crate::world::LockError;

pub(super) async fn worker(server: Arc<Server>) {
    let _alive = Alive::new(&server);
    loop {
        if server.stopping.load(Ordering::SeqCst) {
            return;
        }
        let notified = server.wake.notified();
        let next = lock(&server.admission).next(Instant::now());
        match next {
            Some(queued) => {
                server.update_queue_depth();
                contain(&server, queued).await;
            }
            None => notified.await,
        }
    }
}

/// Counts down the workers that can take runs when one ends, for `/healthz` (the count
/// starts at `--workers`, so the server is healthy from its first request).
struct Alive(Arc<Server>);

impl Alive {
    fn new(server: &Arc<Server>) -> Self {
        Self(server.clone())
    }
}

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.workers_alive.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Runs one queued run in a task of its own, so a panic in it fails that run and not the
/// worker: the run's future is dropped (its file lock with it), it is journaled as failed, and
/// its key is freed for the next alert.
async fn contain(server: &Arc<Server>, queued: runbook_core::admission::Queued<Job>) {
    let (run_id, key, name) = (
        queued.run.clone(),
        queued.key.clone(),
        queued.runbook.clone(),
    );
    let task_server = server.clone();
    let joined = tokio::spawn(async move { execute(&task_server, queued).await }).await;
    let Err(error) = joined else {
        return;
    };
    let why = match error.try_into_panic() {
        Ok(payload) => runbook_core::exec::panic_message(payload.as_ref()),
        Err(error) => error.to_string(),
    };
    let message = format!(
        "the run failed: the engine panicked ({why}); nothing more was done; this is a bug"
    );
    tracing::error!(run_id = %run_id, runbook = %name, error = %why, "run failed: the engine panicked");
    let (journal, was_running) = {
        let runs = lock(&server.runs);
        runs.get(&run_id).map_or((None, false), |entry| {
            (
                entry.journal.clone(),
                matches!(entry.state, RunState::Running | RunState::WaitingApproval),
            )
        })
    };
    if let Some(path) = journal {
        let appended = runbook_core::journal::Journal::open(&path).and_then(|journal| {
            journal.append(&Record {
                time: runbook_core::journal::timestamp(SystemTime::now()),
                run: run_id.clone(),
                event: runbook_core::journal::Event::RunFinished {
                    outcome: Outcome::Failed,
                    exit_code: Outcome::Failed.exit_code(),
                    message: message.clone(),
                },
            })
        });
        if let Err(e) = appended {
            tracing::error!(run_id = %run_id, error = %e, "cannot journal the failed run");
        }
    }
    if was_running {
        server.metrics.runs_running.dec();
    }
    server
        .metrics
        .runs_finished
        .get_or_create(&metrics::OutcomeLabels {
            runbook: name.clone(),
            outcome: "failed".to_owned(),
        })
        .inc();
    finish(
        server,
        &key,
        &run_id,
        RunState::Finished,
        Some(Outcome::Failed),
        message,
    );
}

async fn execute(server: &Arc<Server>, queued: runbook_core::admission::Queued<Job>) {
    let runbook_core::admission::Queued {
        run: run_id,
        key,
        runbook: name,
        item: job,
    } = queued;
    // A run taken over goes on in its journal, and waits for the stopped replica's run lock
    // to expire.
    let taken_over = job.mirror.is_some();
    let mode = if job.resume.is_some() {
        JournalMode::Append
    } else {
        JournalMode::Create
    };
    let Some(session) = open_session(server, &run_id, &key, &name, mode, taken_over).await else {
        return;
    };
    if let Some(shared) = &server.shared {
        let mirrored = match job.mirror.clone() {
            // Taken over: its journal was opened (and read) then.
            Some(mirror) => Ok(mirror),
            None => start_in_cluster(shared, &run_id).await,
        };
        match mirrored {
            Ok(mirror) => session.journal().mirror_to(mirror),
            Err(NotStarted::TakenOver(why)) => {
                tracing::warn!(run_id = %run_id, runbook = %name, reason = %why, "not started here: another replica took the run over while it waited");
                drop(session);
                ended(
                    server,
                    &key,
                    &run_id,
                    RunState::Cancelled,
                    None,
                    format!("not started here: another replica took it over ({why})"),
                    End::TakenOver,
                );
                return;
            }
            Err(NotStarted::Stalled(why)) => {
                // Its object says it started: it is handed over, and the replica that takes it
                // finds its journal empty and starts it from its object.
                tracing::error!(run_id = %run_id, runbook = %name, error = %why, "not started here: its journal in the cluster cannot be opened; handed over");
                drop(session);
                ended(
                    server,
                    &key,
                    &run_id,
                    RunState::Cancelled,
                    None,
                    format!("not started here: its journal in the cluster cannot be opened ({why}); handed over"),
                    End::HandedOver,
                );
                return;
            }
            Err(NotStarted::Resolved(by)) => {
                tracing::info!(run_id = %run_id, runbook = %name, resolved = %by, "queued run cancelled: its alert resolved (at another replica)");
                drop(session);
                server
                    .metrics
                    .runs_cancelled
                    .get_or_create(&metrics::reason(&name, "resolved"))
                    .inc();
                finish(
                    server,
                    &key,
                    &run_id,
                    RunState::Cancelled,
                    None,
                    format!("its alert resolved before it started: {by}"),
                );
                return;
            }
            Err(NotStarted::Unavailable(why)) => {
                tracing::error!(run_id = %run_id, runbook = %name, error = %why, "not started: the cluster cannot record that it starts");
                drop(session);
                not_started(
                    server,
                    &key,
                    &run_id,
                    format!("not started: the cluster cannot record that it starts: {why}"),
                );
                return;
            }
        }
    }
    let interrupt = session.interrupt().clone();
    if let Some(entry) = lock(&server.runs).get_mut(&run_id) {
        entry.state = RunState::Running;
        entry.started_at = Some(SystemTime::now());
        entry.journal = Some(session.journal_path().to_path_buf());
        entry.interrupt = Some(interrupt.clone());
    }
    // A drain that came while this run was being set up.
    if server.stopping.load(Ordering::SeqCst) {
        interrupt.drain("server shutdown");
    }
    server
        .metrics
        .runs_started
        .get_or_create(&metrics::runbook(&name))
        .inc();
    server.metrics.runs_running.inc();
    tracing::info!(run_id = %run_id, runbook = %name, "run started");
    let plan = Compiler::compile(job.runbook.clone(), job.bindings, Some(job.triggered_by));
    let run = SessionRun {
        clock: Arc::new(runbook_core::effects::SystemClock),
        prompter: Arc::new(ServerPrompter {
            run: run_id.clone(),
            server: server.clone(),
            auto_approve: job.auto_approve,
            interrupt: interrupt.clone(),
            answered_by: Mutex::new(HashMap::new()),
        }),
        reporter: Arc::new(LogReporter {
            server: server.clone(),
        }),
        catalog: server.catalog.clone(),
        parallelism: server.parallelism,
        dry_run: false,
        yes: false,
        // A server shutting down drains its runs, which never rolls back.
        roll_back_on_interrupt: false,
        resume: job.resume,
    };
    let started = Instant::now();
    let lost_run = run_id.clone();
    let report = session
        .execute(plan, run, move || {
            tracing::error!(run_id = %lost_run, "the run lock (Lease) was lost; stopping after the steps in flight");
        })
        .await;
    let outcome = report.outcome;
    let outcome_label = serde_json::to_value(outcome)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    server.metrics.runs_running.dec();
    server
        .metrics
        .runs_finished
        .get_or_create(&metrics::OutcomeLabels {
            runbook: name.clone(),
            outcome: outcome_label.clone(),
        })
        .inc();
    server
        .metrics
        .run_duration
        .get_or_create(&metrics::runbook(&name))
        .observe(started.elapsed().as_secs_f64());
    tracing::info!(
        run_id = %run_id,
        runbook = %name,
        outcome = %outcome_label,
        detail = %report.message,
        must_fix = report.must_fix.len(),
        "run finished"
    );
    for item in &report.must_fix {
        tracing::warn!(run_id = %run_id, runbook = %name, "must fix: {item}");
    }
    let message = match &report.journal_error {
        Some(error) => {
            tracing::error!(run_id = %run_id, runbook = %name, %error, "the run's journal is incomplete");
            format!("{}; the journal is incomplete: {error}", report.message)
        }
        None => report.message,
    };
    let handed_over = server.shared.is_some()
        && interrupt.draining().is_some()
        && outcome == Outcome::Stopped
        && report.journal_error.is_none();
    ended(
        server,
        &key,
        &run_id,
        RunState::Finished,
        Some(outcome),
        message,
        if handed_over {
            End::HandedOver
        } else {
            End::Finished
        },
    );
}

/// A new run's start, through the API: its object says it is running here (refused if
/// another replica took it over, or anything started it: `Shared::starting`), then its
/// journal's copy in the cluster is opened, owned by the object. A run started elsewhere has
/// `startedAt` written before its first record, so the refusal covers a journal with records.
async fn start_in_cluster(
    shared: &super::shared::Shared,
    run_id: &str,
) -> Result<Arc<dyn runbook_core::journal::Mirror>, NotStarted> {
    let uid = shared.starting(run_id).await?;
    let (mirror, _) = shared
        .open_journal(run_id, Some(uid))
        .await
        .map_err(NotStarted::Stalled)?;
    Ok(mirror)
}

/// Takes the run lock and creates the journal; a run that cannot have either is cancelled.
async fn open_session<'s>(
    server: &'s Server,
    run_id: &str,
    key: &str,
    name: &str,
    mode: JournalMode,
    taken_over: bool,
) -> Option<RunSession<'s>> {
    // The same lock as `runbook run`: a run started by hand with the same params wins. A run
    // taken over waits (a Lease's duration, and a little) for its stopped owner's lock.
    let deadline = Instant::now() + std::time::Duration::from_secs(45);
    let opened = loop {
        let opened = RunSession::open(
            &server.world,
            &server.cluster_args,
            &server.state_dir,
            run_id,
            Some(key),
            mode,
        )
        .await;
        match opened {
            Err(SessionError::Lock(LockError::Held(_)))
                if taken_over && Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            opened => break opened,
        }
    };
    match opened {
        Ok(session) => Some(session),
        Err(SessionError::Lock(LockError::Unusable(why))) => {
            server
                .metrics
                .alerts_rejected
                .get_or_create(&metrics::reason(name, "lock-unusable"))
                .inc();
            tracing::error!(run_id = %run_id, runbook = %name, error = %why, "not started: cannot take the run lock");
            not_started(
                server,
                key,
                run_id,
                format!("not started: cannot take the run lock: {why}"),
            );
            None
        }
        Err(SessionError::Lock(LockError::Held(holder))) => {
            server
                .metrics
                .alerts_rejected
                .get_or_create(&metrics::reason(name, "running-elsewhere"))
                .inc();
            tracing::warn!(run_id = %run_id, runbook = %name, holder = %holder, "not started: the same runbook with the same params is already running");
            finish(
                server,
                key,
                run_id,
                RunState::Cancelled,
                None,
                format!("not started: the same runbook with the same params is already running ({holder})"),
            );
            None
        }
        Err(SessionError::Journal(e)) => {
            tracing::error!(run_id = %run_id, runbook = %name, error = %e, "cannot create the journal; the run is not started");
            not_started(
                server,
                key,
                run_id,
                format!("not started: cannot create the journal: {e}"),
            );
            None
        }
    }
}

/// A run that never started (no lock, no journal): its incidents are forgotten, so a repeat
/// of its alert may start it again, and its end is recorded.
fn not_started(server: &Server, key: &str, run_id: &str, message: String) {
    lock(&server.admission).forget_incidents_of(run_id);
    ended(
        server,
        key,
        run_id,
        RunState::Cancelled,
        None,
        message,
        End::Withdrawn,
    );
}

/// Records the end of a run (or why it never started) and frees its admission key.
fn finish(
    server: &Server,
    key: &str,
    run_id: &str,
    state: RunState,
    outcome: Option<Outcome>,
    message: String,
) {
    ended(server, key, run_id, state, outcome, message, End::Finished);
}

/// What the end of a run means for the other replicas (`--cluster-state`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    /// It is over: its object says how, and its key is freed.
    Finished,
    /// It never started, for a reason that was not its alert's: its admission is taken back,
    /// so a re-sent alert may start it.
    Withdrawn,
    /// It stopped resumable because this replica is stopping: another takes it over.
    HandedOver,
    /// Another replica took it over before it started here: its object and key are theirs.
    TakenOver,
}

fn ended(
    server: &Server,
    key: &str,
    run_id: &str,
    state: RunState,
    outcome: Option<Outcome>,
    message: String,
    end: End,
) {
    lock(&server.admission).finished(key, run_id);
    let mut last = None;
    if let Some(entry) = lock(&server.runs).get_mut(run_id) {
        entry.outcome = outcome;
        match entry.cancelled.clone() {
            Some(reason) => {
                entry.state = RunState::Cancelled;
                entry.message = Some(format!("{reason}; nothing was changed"));
            }
            None => {
                entry.state = state;
                entry.message = Some(message);
            }
        }
        entry.finished_at = Some(SystemTime::now());
        entry.gate = None;
        entry.interrupt = None;
        let phase = match entry.state {
            RunState::Cancelled => super::shared::phase::CANCELLED,
            _ => super::shared::phase::FINISHED,
        };
        last = Some((
            entry.runbook.clone(),
            super::shared::final_status(
                phase,
                entry.outcome,
                entry.message.as_deref().unwrap_or_default(),
            ),
        ));
    }
    if let (Some(shared), Some((runbook, status))) = (&server.shared, last) {
        match end {
            End::HandedOver => shared.handed_over(
                run_id,
                &format!(
                    "handed over by replica {}: {}",
                    shared.replica,
                    status["message"].as_str().unwrap_or_default()
                ),
            ),
            End::Finished => shared.ended(&runbook, key, run_id, status, false),
            End::Withdrawn => shared.ended(&runbook, key, run_id, status, true),
            End::TakenOver => {}
        }
        shared.not_mine(run_id);
    }
}

/// Run events go to the structured log, with the run id, and with `--cluster-state` to the
/// run's object.
struct LogReporter {
    server: Arc<Server>,
}

impl Reporter for LogReporter {
    fn record(&self, record: &Record) {
        // A test-only hook (debug builds only, from the server's own environment, never from an
        // alert or a param): the first time a run journals the event named (`EVENT`, or
        // `EVENT@STEP` for one step's), panic, to prove a panic fails only its run.
        #[cfg(debug_assertions)]
        if let Ok(hook) = std::env::var("RUNBOOK_TEST_PANIC_ON_EVENT") {
            static PANICKED: std::sync::atomic::AtomicBool =
                std::sync::atomic::AtomicBool::new(false);
            let (event, step) = hook
                .split_once('@')
                .map_or((hook.as_str(), None), |(event, step)| (event, Some(step)));
            if serde_json::to_value(&record.event).is_ok_and(|value| {
                value["event"] == event && step.is_none_or(|step| value["step"] == step)
            }) && !PANICKED.swap(true, Ordering::SeqCst)
            {
                panic!("test hook: RUNBOOK_TEST_PANIC_ON_EVENT={hook}");
            }
        }
        if let Some(text) = crate::terminal::describe(&record.event) {
            tracing::debug!(run_id = %record.run, "{text}");
        }
        // Only the server's own runs have objects (not the runbooks they call).
        if let Some(shared) = self
            .server
            .shared
            .as_ref()
            .filter(|_| lock(&self.server.runs).contains_key(&record.run))
        {
            if let Some(change) = super::shared::status_change(record, &shared.replica) {
                shared.status(&record.run, change);
            }
        }
    }
}
