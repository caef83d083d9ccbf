//! The executor: drives a compiled [`Plan`] through the [`Effects`] boundary.
//!
//! Order of a run: journal the start; check every precondition (any that fails ends the run,
//! having changed nothing); run steps in DAG order, independent ones in parallel up to a
//! bound, each with its `when`, `timeout` and `retries`; ask at confirmation gates. When a
//! step fails for good: start nothing new, let steps in flight finish, undo every completed
//! step in reverse order of completion (native actions from the state they captured before
//! acting), then the rollback. Every event is journaled (intent before each mutation) and
//! reported. Facts are read lazily, cached for the run, and forgotten after any mutation.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rhai::Dynamic;
use serde_json::{json, Value as Json};

use crate::check::facts_read;
use crate::compile::Plan;
use crate::document::{LogFormat, OutputFormat, PatchType};
use crate::effects::*;
use crate::expr::{sandboxed_engine, Expression, Template, TemplatePart};
use crate::journal::{timestamp, Event, Journal, Outcome, Record, StepResult};
use crate::redact::Redactor;
use crate::runbook::*;

/// How often `wait` re-reads its object.
const WAIT_INTERVAL: Duration = Duration::from_secs(2);
/// How long a fact's probe (exec, command, HTTP) may take.
const FACT_TIMEOUT: Duration = Duration::from_secs(30);

/// How to run.
#[derive(Clone)]
pub struct RunOptions {
    pub run_id: String,
    pub dry_run: bool,
    /// Approve every gate (`--yes`).
    pub yes: bool,
    /// Steps run at once, at most.
    pub parallelism: usize,
    /// The namespace for objects whose runbook names none (`--namespace`, or the context's).
    pub namespace: String,
    pub journal: Option<Arc<Journal>>,
    /// Runbooks that `runbook:` steps and runbook rollbacks may call.
    pub catalog: Option<Arc<Catalog>>,
    /// The runbook file's SHA-256, for the journal.
    pub digest: String,
    /// Raised by Ctrl-C: stop scheduling, cancel what is in flight, ask whether to roll back.
    pub interrupt: Option<Arc<Interrupt>>,
    /// Going on with a run that was killed (`runbook resume`).
    pub resume: Option<Resume>,
    /// What the run acts on, for the journal: `context prod (https://...)`, or the simulated
    /// cluster's scenario. `runbook resume` refuses to go on against another.
    pub cluster: Option<String>,
}

/// Where a resumed run stands, from its journal (and a human, for steps that may or may not
/// have taken effect).
#[derive(Clone, Debug, Default)]
pub struct Resume {
    /// Steps that are done, in completion order, with their journaled undo state.
    pub completed: Vec<(String, Option<UndoRecord>)>,
    pub skipped: Vec<String>,
    /// Steps already undone before the run stopped.
    pub undone: Vec<String>,
    /// Undo and roll back instead of going on.
    pub roll_back: bool,
}

/// A Ctrl-C, delivered to a running executor; or a drain (a server shutting down).
#[derive(Default)]
pub struct Interrupt {
    raised: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
    /// Why the run is draining: no new step starts, steps in flight finish, and the run stops
    /// where it is, resumable, without undoing anything.
    draining: std::sync::Mutex<Option<String>>,
}

impl Interrupt {
    pub fn raise(&self) {
        self.raised.store(true, std::sync::atomic::Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// Stops the run gently: steps in flight finish, no new one starts, a gate that is waiting
    /// is left unanswered, and the journal records `by` as the reason. Nothing is undone:
    /// `runbook resume` goes on from there.
    pub fn drain(&self, by: &str) {
        self.draining
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_or_insert_with(|| by.to_owned());
        self.notify.notify_waiters();
    }

    /// Why the run is draining, if it is.
    pub fn draining(&self) -> Option<String> {
        self.draining
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Resolves once the run is asked to drain (or interrupted).
    pub async fn drained(&self) {
        loop {
            let notified = self.notify.notified();
            if self.draining().is_some() || self.is_raised() {
                return;
            }
            notified.await;
        }
    }

    pub fn is_raised(&self) -> bool {
        self.raised.load(std::sync::atomic::Ordering::SeqCst)
    }

    async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            if self.is_raised() {
                return;
            }
            notified.await;
        }
    }
}

/// Why the run may not pass a gate.
enum GateRefused {
    /// Refused, or nobody to ask: the run stops.
    Stop(String),
    /// Left unanswered while the run drains.
    Paused,
}

/// What happened, for the summary and the exit code.
#[derive(Clone, Debug)]
pub struct RunReport {
    pub run_id: String,
    pub outcome: Outcome,
    pub message: String,
    pub steps: Vec<StepReport>,
    pub undos: Vec<UndoReport>,
    pub rollback: Option<Result<(), String>>,
    /// What a human must look at: undos and rollbacks that failed, changes with no undo.
    pub must_fix: Vec<String>,
}

impl RunReport {
    pub fn exit_code(&self) -> u8 {
        self.outcome.exit_code()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepStatus {
    Succeeded,
    Failed(String),
    Skipped(String),
    DryRun(String),
    NotRun,
}

#[derive(Clone, Debug)]
pub struct StepReport {
    pub id: String,
    pub summary: String,
    pub status: StepStatus,
    pub duration: Duration,
}

#[derive(Clone, Debug)]
pub struct UndoReport {
    pub step: String,
    pub summary: String,
    pub result: Result<(), String>,
}

/// What a completed step needs for its undo, captured before it acted: a native action's
/// inverse (exactly what the journal records), or the runbook's declared undo.
#[derive(Clone, Debug)]
enum UndoState {
    /// Never `UndoRecord::Declared`.
    Native(UndoRecord),
    Declared(Box<Action>),
}

impl UndoState {
    fn describe(&self) -> String {
        match self {
            Self::Native(UndoRecord::Replicas { key, previous }) => {
                format!("scale {key} back to {previous} replicas")
            }
            Self::Native(UndoRecord::MergePatch { key, inverse }) => {
                format!("merge patch {key} with {inverse}")
            }
            Self::Native(UndoRecord::Applied {
                key,
                previous: None,
            }) => format!("delete {key}, which the apply created"),
            Self::Native(UndoRecord::Applied {
                key,
                previous: Some(_),
            }) => format!("apply the previous {key}"),
            Self::Native(UndoRecord::Unschedulable {
                node,
                previous: true,
            }) => format!("cordon node {node} again"),
            Self::Native(UndoRecord::Unschedulable {
                node,
                previous: false,
            }) => format!("uncordon node {node}"),
            Self::Native(UndoRecord::Declared) | Self::Declared(_) => {
                "the declared undo".to_owned()
            }
        }
    }

    /// What the journal keeps, so a resumed run can undo this step after a crash. A declared
    /// undo is an action of the runbook, found again from the plan.
    fn record(&self) -> UndoRecord {
        match self {
            Self::Native(record) => record.clone(),
            Self::Declared(_) => UndoRecord::Declared,
        }
    }

    fn from_record(record: &UndoRecord, step: &StepSpec) -> Option<Self> {
        match (record, &step.undo) {
            (UndoRecord::Declared, UndoSpec::Declared(action)) => {
                Some(Self::Declared(action.clone()))
            }
            (UndoRecord::Declared, _) => None,
            (record, _) => Some(Self::Native(record.clone())),
        }
    }
}

/// The undo state of a step as the journal records it (in the step's intent).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum UndoRecord {
    Replicas {
        key: ObjectKey,
        previous: i64,
    },
    MergePatch {
        key: ObjectKey,
        inverse: Json,
    },
    Applied {
        key: ObjectKey,
        previous: Option<Json>,
    },
    Unschedulable {
        node: String,
        previous: bool,
    },
    Declared,
}

/// How one step ended.
enum Finished {
    Done {
        output: Option<String>,
        undo: Option<UndoState>,
    },
    Skipped(String),
    DryRun(String),
    Failed(String),
}

/// A patch to send: what, how, and the body as the runbook wrote it.
#[derive(Clone, Copy)]
struct PatchCall<'a> {
    key: &'a ObjectKey,
    patch_type: PatchType,
    body: &'a Json,
}

/// Why a patch from a known object did not go through.
enum PatchError {
    /// The server refused the known object's resourceVersion: it changed since.
    Stale,
    Failed(String),
}

struct Run {
    plan: Arc<Plan>,
    effects: Effects,
    options: RunOptions,
    redactor: Redactor,
    facts: tokio::sync::Mutex<HashMap<String, Json>>,
    /// Bumped whenever the cache is cleared, so a read that began before a change is not
    /// cached after it.
    fact_generation: std::sync::atomic::AtomicU64,
    /// The undo state of each step as captured before its first attempt: a retry must not
    /// capture the half-changed state left by the attempt before it.
    captured: Mutex<HashMap<String, UndoState>>,
    /// Steps whose intent to mutate was journaled.
    intended: Mutex<BTreeSet<String>>,
    /// Objects as this run's own last patch of each left them (the server's answer). A later
    /// patch of the same object starts from it, carrying its resourceVersion, so the server
    /// refuses it (409) if anything changed the object since; then it is read again.
    written: Mutex<HashMap<ObjectKey, Json>>,
    fact_names: BTreeSet<String>,
    params: rhai::Map,
    journal_error: Mutex<Option<String>>,
}

/// Runs `plan` to the end and reports how it went.
pub async fn execute(plan: Arc<Plan>, effects: Effects, options: RunOptions) -> RunReport {
    let redactor = Redactor::new();
    for param in &plan.runbook.params {
        if param.secret {
            if let Some(value) = plan.bindings.values.get(&param.name) {
                redactor.add(&value.to_string());
            }
        }
    }
    let run = Arc::new(Run {
        fact_names: plan.runbook.facts.keys().cloned().collect(),
        params: plan.bindings.to_rhai(),
        plan,
        effects,
        options,
        redactor,
        facts: tokio::sync::Mutex::new(HashMap::new()),
        fact_generation: std::sync::atomic::AtomicU64::new(0),
        captured: Mutex::new(HashMap::new()),
        intended: Mutex::new(BTreeSet::new()),
        written: Mutex::new(HashMap::new()),
        journal_error: Mutex::new(None),
    });
    run.execute().await
}

/// [`execute`] behind a boxed `Send` future: a runbook that calls another runs a plan inside
/// a plan, and the compiler needs the recursion to have a named type.
fn execute_boxed(
    plan: Arc<Plan>,
    effects: Effects,
    options: RunOptions,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = RunReport> + Send>> {
    Box::pin(execute(plan, effects, options))
}

impl Run {
    fn runbook(&self) -> &Runbook {
        &self.plan.runbook
    }

    /// Journals and reports one event, redacted. A journal that cannot be written stops the
    /// run before its next mutation.
    fn emit(&self, event: Event) {
        // Redact each string value of the event, never the serialized line: keys such as
        // `token` in an undo state must not trigger the credential patterns, and a secret's
        // JSON escaping must not hide it. There is no unredacted fallback.
        let value = serde_json::to_value(&event).unwrap_or(Json::Null);
        let redacted = self.redact_value(value, false);
        let Ok(event) = serde_json::from_value::<Event>(redacted) else {
            tracing::error!("An event could not be redacted; it is not recorded.");
            return;
        };
        let record = Record {
            time: timestamp(self.effects.clock.now()),
            run: self.options.run_id.clone(),
            event,
        };
        if let Some(journal) = &self.options.journal {
            if let Err(error) = journal.append(&record) {
                let mut slot = self
                    .journal_error
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                slot.get_or_insert_with(|| {
                    format!(
                        "cannot write the journal {}: {error}",
                        journal.path().display()
                    )
                });
            }
        }
        self.effects.reporter.record(&record);
    }

    /// Redacts every string in a JSON value. Inside an undo state (values the run may write
    /// back to the cluster) only known secrets are removed, and the free-text credential
    /// patterns are not applied.
    fn redact_value(&self, value: Json, in_undo_state: bool) -> Json {
        match value {
            Json::String(text) => Json::String(if in_undo_state {
                self.redactor.redact_known(&text)
            } else {
                self.redactor.redact(&text)
            }),
            Json::Array(items) => Json::Array(
                items
                    .into_iter()
                    .map(|item| self.redact_value(item, in_undo_state))
                    .collect(),
            ),
            Json::Object(entries) => Json::Object(
                entries
                    .into_iter()
                    .map(|(key, item)| {
                        let inside = in_undo_state || key == "undoState";
                        (key, self.redact_value(item, inside))
                    })
                    .collect(),
            ),
            other => other,
        }
    }

    /// Whether Ctrl-C has been pressed: no new step may start.
    fn interrupted(&self) -> bool {
        self.options
            .interrupt
            .as_ref()
            .is_some_and(|interrupt| interrupt.is_raised())
    }

    /// Why the run is draining (no new step may start), if it is.
    fn draining(&self) -> Option<String> {
        self.options
            .interrupt
            .as_ref()
            .and_then(|interrupt| interrupt.draining())
    }

    fn journal_broken(&self) -> Option<String> {
        self.journal_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn dry(&self) -> DryRun {
        if self.options.dry_run {
            DryRun::Server
        } else {
            DryRun::No
        }
    }

    async fn execute(self: Arc<Self>) -> RunReport {
        let runbook = self.plan.runbook.clone();
        let params: serde_json::Map<String, Json> = runbook
            .params
            .iter()
            .filter_map(|param| {
                let value = self.plan.bindings.values.get(&param.name)?;
                Some((
                    param.name.clone(),
                    if param.secret {
                        json!(crate::redact::REDACTED)
                    } else {
                        value.to_json()
                    },
                ))
            })
            .collect();
        if let Some(resume) = &self.options.resume {
            self.emit(Event::RunResumed {
                completed: resume.completed.iter().map(|(id, _)| id.clone()).collect(),
                roll_back: resume.roll_back,
            });
        } else {
            self.emit(Event::RunStarted {
                runbook: runbook.name.clone(),
                file: runbook.source.path().display().to_string(),
                digest: self.options.digest.clone(),
                params: Json::Object(params),
                trigger: self.plan.triggered_by.as_ref().map(|t| {
                    json!({"alert": t.alert.name(), "fingerprint": t.alert.fingerprint, "labels": t.alert.labels})
                }),
                dry_run: self.options.dry_run,
                cluster: self.options.cluster.clone(),
            });
        }
        let mut report = RunReport {
            run_id: self.options.run_id.clone(),
            outcome: Outcome::Succeeded,
            message: String::new(),
            steps: runbook
                .steps
                .iter()
                .map(|step| StepReport {
                    id: step.id.clone(),
                    summary: crate::render::action_summary(&self.plan, &step.action),
                    status: StepStatus::NotRun,
                    duration: Duration::ZERO,
                })
                .collect(),
            undos: Vec::new(),
            rollback: None,
            must_fix: Vec::new(),
        };

        // Preconditions: all of them, so the journal says which held and which did not.
        let mut failed_checks = Vec::new();
        // A resumed run has changed things already; its preconditions held when it started.
        let preconditions: &[Check] = if self.options.resume.is_some() {
            &[]
        } else {
            &runbook.preconditions
        };
        for (index, check) in preconditions.iter().enumerate() {
            let result = self.eval_bool(&check.expr, None).await;
            let (held, error) = match result {
                Ok(held) => (held, None),
                Err(error) => (false, Some(error)),
            };
            self.emit(Event::PreconditionChecked {
                index,
                check: check.expr.source.trim().to_owned(),
                held,
                error: error.clone(),
            });
            if !held {
                let why = error
                    .map(|e| format!(" ({e})"))
                    .or_else(|| check.message.as_ref().map(|m| format!(": {m}")))
                    .unwrap_or_default();
                failed_checks.push(format!("`{}`{why}", check.expr.source.trim()));
            }
        }
        if !failed_checks.is_empty() {
            return self.finish(
                report,
                Outcome::PreconditionFailed,
                format!(
                    "precondition did not hold: {}; nothing was changed",
                    failed_checks.join("; ")
                ),
            );
        }

        // Steps. Each step waits for a count of unfinished dependencies; a finished (or
        // skipped) step releases its dependants into the ready set, taken in file order.
        let count = runbook.steps.len();
        let position_of: HashMap<&str, usize> = runbook
            .steps
            .iter()
            .enumerate()
            .map(|(p, s)| (s.id.as_str(), p))
            .collect();
        let mut dependants: Vec<Vec<usize>> = vec![Vec::new(); count];
        let mut remaining: Vec<usize> = vec![0; count];
        for (position, step) in runbook.steps.iter().enumerate() {
            for need in &step.needs {
                if let Some(dependency) = position_of.get(need.as_str()) {
                    dependants[*dependency].push(position);
                    remaining[position] += 1;
                }
            }
        }
        let mut ready: BTreeSet<usize> = (0..count).filter(|p| remaining[*p] == 0).collect();
        let mut completed: Vec<(usize, Option<UndoState>)> = Vec::new();
        // Failed steps whose intent was journaled: undone only if the object really changed.
        let mut partial: BTreeSet<usize> = BTreeSet::new();
        let mut failure: Option<String> = None;
        if let Some(resume) = &self.options.resume {
            // Every done step first; then what is left waits only on steps not done.
            let mut done = vec![false; count];
            for id in resume
                .completed
                .iter()
                .map(|(id, _)| id)
                .chain(resume.skipped.iter())
            {
                if let Some(position) = position_of.get(id.as_str()).copied() {
                    done[position] = true;
                    report.steps[position].status = if resume.skipped.contains(id) {
                        StepStatus::Skipped("skipped before the run was resumed".to_owned())
                    } else {
                        StepStatus::Succeeded
                    };
                }
            }
            for (position, step) in runbook.steps.iter().enumerate() {
                remaining[position] = step
                    .needs
                    .iter()
                    .filter_map(|need| position_of.get(need.as_str()))
                    .filter(|dependency| !done[**dependency])
                    .count();
            }
            ready = (0..count)
                .filter(|p| !done[*p] && remaining[*p] == 0)
                .collect();
            // Dependants of done steps were counted out above; they must not be released again.
            for (position, is_done) in done.iter().enumerate() {
                if *is_done {
                    dependants[position].clear();
                }
            }
            for (id, record) in &resume.completed {
                if resume.undone.contains(id) {
                    continue;
                }
                if let Some(position) = position_of.get(id.as_str()).copied() {
                    let step = &runbook.steps[position];
                    let undo = record
                        .as_ref()
                        .and_then(|record| UndoState::from_record(record, step))
                        .or_else(|| match &step.undo {
                            UndoSpec::Declared(action) => Some(UndoState::Declared(action.clone())),
                            _ => None,
                        });
                    completed.push((position, undo));
                }
            }
            if resume.roll_back {
                failure = Some("rolled back on request when the run was resumed".to_owned());
            }
        }
        let mut stop: Option<String> = None;
        let mut running = tokio::task::JoinSet::new();
        let mut in_flight: BTreeSet<usize> = BTreeSet::new();
        let mut interrupted: Option<()> = None;
        let parallelism = self.options.parallelism.max(1);
        loop {
            if failure.is_none() && stop.is_none() && interrupted.is_none() {
                while running.len() < parallelism {
                    let Some(position) = ready.pop_first() else {
                        break;
                    };
                    let step = &runbook.steps[position];
                    if let Some(message) = self.journal_broken() {
                        failure = Some(message);
                        break;
                    }
                    if self.interrupted() || self.draining().is_some() {
                        ready.insert(position);
                        break;
                    }
                    if step.confirm.is_some() {
                        // A step its `when` skips asks nobody.
                        if let Some(when) = &step.when {
                            if let Ok(false) = self.eval_bool(when, None).await {
                                let reason = format!("`when: {}` was false", when.source.trim());
                                self.emit(Event::StepSkipped {
                                    step: step.id.clone(),
                                    reason: reason.clone(),
                                });
                                report.steps[position].status = StepStatus::Skipped(reason);
                                release(&dependants[position], &mut remaining, &mut ready);
                                continue;
                            }
                        }
                        match self.gate(step).await {
                            Ok(()) => {}
                            Err(GateRefused::Stop(reason)) => {
                                stop = Some(reason);
                                break;
                            }
                            Err(GateRefused::Paused) => {
                                ready.insert(position);
                                break;
                            }
                        }
                        if self.interrupted() || self.draining().is_some() {
                            ready.insert(position);
                            break;
                        }
                    }
                    let run = self.clone();
                    in_flight.insert(position);
                    running.spawn(async move {
                        let started_at = tokio::time::Instant::now();
                        let finished = run.run_step(position).await;
                        (position, finished, started_at.elapsed())
                    });
                }
            }
            if running.is_empty() {
                break;
            }
            let interrupt = self.options.interrupt.clone();
            let already = interrupted.is_some();
            let interruption = async {
                match &interrupt {
                    Some(interrupt) if !already => interrupt.wait().await,
                    _ => std::future::pending().await,
                }
            };
            let joined = tokio::select! {
                biased;
                () = interruption => {
                    // Stop scheduling and cancel what is in flight; a step cancelled after its
                    // intent was journaled may have half-happened.
                    running.abort_all();
                    while running.join_next().await.is_some() {}
                    for position in std::mem::take(&mut in_flight) {
                        let step = &runbook.steps[position];
                        report.steps[position].status = StepStatus::Failed("interrupted".to_owned());
                        self.finish_step(step, StepResult::Failed, None, Some("interrupted by Ctrl-C".to_owned()), Duration::ZERO);
                        if step.action.mutates(step.readonly) && !self.options.dry_run {
                            report.must_fix.push(format!(
                                "step `{}` ({}) was interrupted while running: check whether it took effect",
                                step.id, report.steps[position].summary
                            ));
                        }
                    }
                    interrupted = Some(());
                    continue;
                }
                joined = running.join_next() => joined,
            };
            let Some(joined) = joined else {
                break;
            };
            let (position, finished, elapsed) = match joined {
                Ok(result) => result,
                Err(error) => {
                    failure.get_or_insert_with(|| format!("a step task failed: {error}"));
                    continue;
                }
            };
            in_flight.remove(&position);
            let step = &runbook.steps[position];
            report.steps[position].duration = elapsed;
            match finished {
                Finished::Done { output, undo } => {
                    release(&dependants[position], &mut remaining, &mut ready);
                    report.steps[position].status = StepStatus::Succeeded;
                    completed.push((position, undo));
                    self.finish_step(step, StepResult::Succeeded, output, None, elapsed);
                }
                Finished::Skipped(reason) => {
                    release(&dependants[position], &mut remaining, &mut ready);
                    report.steps[position].status = StepStatus::Skipped(reason);
                }
                Finished::DryRun(output) => {
                    release(&dependants[position], &mut remaining, &mut ready);
                    report.steps[position].status = StepStatus::DryRun(output.clone());
                    self.finish_step(step, StepResult::DryRun, Some(output), None, elapsed);
                }
                Finished::Failed(error) => {
                    report.steps[position].status = StepStatus::Failed(error.clone());
                    self.finish_step(step, StepResult::Failed, None, Some(error.clone()), elapsed);
                    // A failed mutation may have half-happened: what it read is stale, and
                    // once its intent was journaled, part of it may have taken effect (a drain
                    // that cordoned and evicted some pods). A native undo restores the state
                    // captured before it acted, so it is safe to apply; anything else is named.
                    if step.action.mutates(step.readonly) {
                        self.forget_all_facts().await;
                        let intended = self
                            .intended
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .contains(&step.id);
                        let captured = self
                            .captured
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .get(&step.id)
                            .cloned();
                        if intended && !self.options.dry_run {
                            match captured {
                                Some(state @ UndoState::Native(_)) => {
                                    partial.insert(position);
                                    completed.push((position, Some(state)));
                                }
                                _ => report.must_fix.push(format!(
                                    "step `{}` ({}) failed after it began to change the system: check whether part of it took effect",
                                    step.id, report.steps[position].summary
                                )),
                            }
                        }
                    }
                    failure.get_or_insert_with(|| format!("step `{}` failed: {error}", step.id));
                }
            }
        }

        // Ctrl-C while nothing was in flight (at a gate, between steps) stopped the scheduling
        // above without going through the cancellation branch.
        if interrupted.is_none() && self.interrupted() && !ready.is_empty() {
            interrupted = Some(());
        }
        // The steps that completed, for the messages of a run that stops here.
        let done: Vec<&str> = completed
            .iter()
            .map(|(p, _)| runbook.steps[*p].id.as_str())
            .collect();
        let drained = self
            .draining()
            .filter(|_| interrupted.is_none() && failure.is_none() && !ready.is_empty());
        if let Some(by) = drained {
            // Stopped where it stood, to be resumed: nothing is undone.
            let detail = if done.is_empty() {
                "no step had completed".to_owned()
            } else {
                format!("completed: {}", done.join(", "))
            };
            self.emit(Event::Interrupted {
                roll_back: false,
                by: by.clone(),
            });
            return self.finish(
                report,
                Outcome::Stopped,
                format!(
                    "paused ({by}); {detail}; nothing was undone; `runbook resume {}` goes on from here",
                    self.options.run_id
                ),
            );
        }
        if interrupted.is_some() {
            let detail = if done.is_empty() {
                "no step had completed".to_owned()
            } else {
                format!("completed: {}", done.join(", "))
            };
            let draining = self.draining();
            let answer = if self.options.dry_run || completed.is_empty() || draining.is_some() {
                Answer::No
            } else {
                self.effects
                    .prompter
                    .confirm(
                        "interrupt",
                        "Interrupted. Undo the completed steps and roll back?",
                        &detail,
                    )
                    .await
            };
            let roll_back = answer == Answer::Yes;
            self.emit(Event::Interrupted {
                roll_back,
                by: if let Some(by) = draining {
                    format!("{by}; steps in flight cancelled")
                } else if self.options.dry_run {
                    "dry-run (nothing to undo)".to_owned()
                } else if completed.is_empty() {
                    "nothing to undo".to_owned()
                } else if self.options.yes {
                    "--yes".to_owned()
                } else if answer == Answer::NoTerminal {
                    "none (no terminal: nothing undone)".to_owned()
                } else {
                    "terminal".to_owned()
                },
            });
            if !roll_back {
                return self.finish(
                    report,
                    Outcome::Stopped,
                    format!("interrupted; {detail}; nothing was undone (`runbook show {}` has the journal)", self.options.run_id),
                );
            }
            failure = Some("interrupted by Ctrl-C".to_owned());
        } else if let Some(reason) = stop.filter(|_| failure.is_none()) {
            let done = if done.is_empty() {
                "no step had run".to_owned()
            } else {
                format!("completed: {}", done.join(", "))
            };
            return self.finish(
                report,
                Outcome::Stopped,
                format!("{reason}; {done}; nothing was undone"),
            );
        }
        let Some(failure) = failure.clone() else {
            let message = if self.options.dry_run {
                "dry-run: the run would proceed; nothing was changed".to_owned()
            } else {
                "all steps succeeded".to_owned()
            };
            return self.finish(report, Outcome::Succeeded, message);
        };
        if self.options.dry_run {
            return self.finish(
                report,
                Outcome::Failed,
                format!("dry-run: {failure}; nothing was changed"),
            );
        }

        // Undo completed steps, newest first.
        let mut compensation_failed = false;
        for (position, undo) in completed.iter().rev() {
            let step = &runbook.steps[*position];
            match (&step.undo, undo) {
                (_, None) if matches!(step.action, Action::Call { .. }) => {
                    report.must_fix.push(format!(
                        "step `{}` ({}) ran another runbook, which this run does not undo: check it, and roll that run back if needed",
                        step.id, report.steps[*position].summary
                    ));
                }
                (UndoSpec::Native(_), None) => {
                    report.must_fix.push(format!(
                        "step `{}` ({}) has no recorded undo state (it held secrets, or was lost): restore it by hand",
                        step.id, report.steps[*position].summary
                    ));
                }
                (UndoSpec::Missing, _) if step.action.mutates(step.readonly) => {
                    report.must_fix.push(format!(
                        "step `{}` ({}) changed the system and has no undo: check it by hand",
                        step.id, report.steps[*position].summary
                    ));
                }
                (_, Some(state)) => {
                    if partial.contains(position) {
                        match self.unchanged(state).await {
                            Ok(true) => continue,
                            Ok(false) => {}
                            Err(error) => {
                                report.must_fix.push(format!(
                                    "step `{}` ({}) failed, and whether it changed anything cannot be checked: {error}",
                                    step.id, report.steps[*position].summary
                                ));
                                continue;
                            }
                        }
                    }
                    let summary = match state {
                        UndoState::Declared(action) => {
                            crate::render::action_summary(&self.plan, action)
                        }
                        other => other.describe(),
                    };
                    self.emit(Event::UndoStarted {
                        step: step.id.clone(),
                        summary: summary.clone(),
                    });
                    let result = self.undo(state).await;
                    self.forget_all_facts().await;
                    self.emit(Event::UndoFinished {
                        step: step.id.clone(),
                        succeeded: result.is_ok(),
                        error: result.as_ref().err().cloned(),
                    });
                    if let Err(error) = &result {
                        compensation_failed = true;
                        report.must_fix.push(format!(
                            "undo of step `{}` failed ({summary}): {error}",
                            step.id
                        ));
                    }
                    report.undos.push(UndoReport {
                        step: step.id.clone(),
                        summary,
                        result,
                    });
                }
                _ => {}
            }
        }

        // Then the rollback.
        if let Some(rollback) = &runbook.rollback {
            let summary = rollback_summary(rollback);
            self.emit(Event::RollbackStarted {
                summary: summary.clone(),
            });
            let result = self.rollback(rollback, &failure, &report).await;
            self.emit(Event::RollbackFinished {
                succeeded: result.is_ok(),
                error: result.as_ref().err().cloned(),
            });
            if let Err(error) = &result {
                compensation_failed = true;
                report
                    .must_fix
                    .push(format!("rollback ({summary}) failed: {error}"));
            }
            report.rollback = Some(result);
        }
        if compensation_failed {
            self.finish(
                report,
                Outcome::RollbackFailed,
                format!("{failure}; the undo or rollback failed: a human must act"),
            )
        } else if interrupted.is_some() {
            self.finish(
                report,
                Outcome::Stopped,
                format!("{failure}; completed steps were undone and the rollback ran"),
            )
        } else {
            self.finish(
                report,
                Outcome::RolledBack,
                format!("{failure}; completed steps were undone and the rollback ran"),
            )
        }
    }

    fn finish(&self, mut report: RunReport, outcome: Outcome, message: String) -> RunReport {
        // The report is printed as the summary: nothing in it may carry a secret.
        let redact = |text: &str| self.redactor.redact(text);
        report.outcome = outcome;
        report.message = redact(&message);
        report.must_fix = report.must_fix.iter().map(|line| redact(line)).collect();
        for step in &mut report.steps {
            step.summary = redact(&step.summary);
            step.status = match &step.status {
                StepStatus::Failed(error) => StepStatus::Failed(redact(error)),
                StepStatus::Skipped(reason) => StepStatus::Skipped(redact(reason)),
                StepStatus::DryRun(note) => StepStatus::DryRun(redact(note)),
                other => other.clone(),
            };
        }
        for undo in &mut report.undos {
            undo.summary = redact(&undo.summary);
            undo.result = undo.result.clone().map_err(|error| redact(&error));
        }
        report.rollback = report
            .rollback
            .clone()
            .map(|result| result.map_err(|error| redact(&error)));
        self.emit(Event::RunFinished {
            outcome,
            exit_code: outcome.exit_code(),
            message: report.message.clone(),
        });
        report
    }

    fn finish_step(
        &self,
        step: &StepSpec,
        result: StepResult,
        output: Option<String>,
        error: Option<String>,
        elapsed: Duration,
    ) {
        self.emit(Event::StepFinished {
            step: step.id.clone(),
            result,
            output,
            error,
            duration_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        });
        if let Some(observer) = &self.effects.observer {
            observer.step_finished(&step.id, matches!(result, StepResult::Succeeded));
        }
    }

    /// Asks at a gate. `Err` stops the run.
    async fn gate(&self, step: &StepSpec) -> Result<(), GateRefused> {
        let question = match &step.confirm {
            Some(template) => self
                .render(template, None)
                .await
                .unwrap_or_else(|_| template.source.clone()),
            None => return Ok(()),
        };
        let detail = crate::render::action_summary(&self.plan, &step.action);
        let (answer, by) = if self.options.dry_run {
            ("not asked (dry-run)", "dry-run".to_owned())
        } else if self.options.yes {
            ("yes", "--yes".to_owned())
        } else {
            let prompter = &self.effects.prompter;
            if prompter.pauses(&step.id) {
                // Nobody is at a terminal: the run waits for an approval from elsewhere.
                self.emit(Event::GatePaused {
                    step: step.id.clone(),
                    question: question.clone(),
                });
            }
            let answer = prompter.confirm(&step.id, &question, &detail).await;
            let by = prompter.answered_by(&step.id);
            match answer {
                Answer::Yes => ("yes", by),
                Answer::No => ("no", by),
                Answer::NoTerminal => ("not asked (no terminal)", "none".to_owned()),
                // Left unanswered: the run drains and a resume asks again.
                Answer::Paused => return Err(GateRefused::Paused),
            }
        };
        self.emit(Event::GateAnswered {
            step: step.id.clone(),
            question: question.clone(),
            answer: answer.to_owned(),
            by,
        });
        match answer {
            "no" => Err(GateRefused::Stop(format!(
                "stopped at the gate of step `{}`: the answer was no",
                step.id
            ))),
            "not asked (no terminal)" => Err(GateRefused::Stop(format!(
                "stopped before the gate of step `{}` (\"{question}\"): there is no terminal to ask; run with --yes to approve every gate",
                step.id
            ))),
            _ => Ok(()),
        }
    }

    async fn run_step(self: Arc<Self>, position: usize) -> Finished {
        let step = &self.plan.runbook.steps[position];
        let summary = match self.render_action_summary(&step.action).await {
            Ok(summary) => summary,
            Err(_) => crate::render::action_summary(&self.plan, &step.action),
        };
        self.emit(Event::StepStarted {
            step: step.id.clone(),
            action: step.action.keyword().to_owned(),
            summary,
        });
        if let Some(when) = &step.when {
            match self.eval_bool(when, None).await {
                Ok(true) => {}
                Ok(false) => {
                    let reason = format!("`when: {}` was false", when.source.trim());
                    self.emit(Event::StepSkipped {
                        step: step.id.clone(),
                        reason: reason.clone(),
                    });
                    return Finished::Skipped(reason);
                }
                Err(error) => {
                    return Finished::Failed(format!("`when` could not be evaluated: {error}"))
                }
            }
        }
        let mut attempt = 0;
        let mut backoff = step.retries.backoff;
        loop {
            attempt += 1;
            let outcome = match tokio::time::timeout(step.timeout, self.perform(step, attempt))
                .await
            {
                Ok(outcome) => outcome,
                Err(_) => {
                    Finished::Failed(format!("timed out after {}", format_duration(step.timeout)))
                }
            };
            if (step.action.mutates(step.readonly) || matches!(step.action, Action::Call { .. }))
                && !self.options.dry_run
            {
                // Whatever the outcome, the world may have changed.
                self.forget_all_facts().await;
            }
            match outcome {
                Finished::Failed(error)
                    if attempt <= step.retries.retries && !self.options.dry_run =>
                {
                    self.emit(Event::StepAttemptFailed {
                        step: step.id.clone(),
                        attempt,
                        error,
                        retry_in_ms: Some(u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX)),
                    });
                    self.effects.clock.sleep(backoff).await;
                    backoff = (backoff * 2).min(step.retries.max_backoff);
                }
                other => return other,
            }
        }
    }

    /// Does the step's action once.
    async fn perform(&self, step: &StepSpec, attempt: u32) -> Finished {
        match self.perform_action(step, &step.action, attempt).await {
            Ok(finished) => finished,
            Err(error) => Finished::Failed(error),
        }
    }

    fn intent(
        &self,
        step: &StepSpec,
        attempt: u32,
        mutation: String,
        undo: Option<&UndoState>,
    ) -> Result<(), String> {
        if self.options.dry_run {
            return Ok(());
        }
        self.intended
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(step.id.clone());
        self.emit(Event::StepIntent {
            step: step.id.clone(),
            attempt,
            mutation,
            undo_state: undo.and_then(|state| serde_json::to_value(state.record()).ok()),
        });
        match self.journal_broken() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    fn undo_for(&self, step: &StepSpec, native: Option<UndoState>) -> Option<UndoState> {
        let mut captured = self.captured_lock();
        if let Some(first) = captured.get(&step.id) {
            return Some(first.clone());
        }
        let state = match &step.undo {
            UndoSpec::Declared(action) => Some(UndoState::Declared(action.clone())),
            UndoSpec::Native(_) => native,
            _ => None,
        };
        if let (Some(state), false) = (&state, self.options.dry_run) {
            captured.insert(step.id.clone(), state.clone());
        }
        state
    }

    /// Whether the object a native undo would restore is still as it was before the step
    /// acted (so a failed step changed nothing and there is nothing to undo).
    async fn unchanged(&self, state: &UndoState) -> Result<bool, String> {
        let cluster = &self.effects.cluster;
        let UndoState::Native(record) = state else {
            return Ok(false);
        };
        match record {
            UndoRecord::Replicas { key, previous } => {
                let object = cluster.get(key).await.map_err(|e| e.to_string())?;
                Ok(object
                    .pointer("/spec/replicas")
                    .and_then(Json::as_i64)
                    .unwrap_or(1)
                    == *previous)
            }
            UndoRecord::MergePatch { key, inverse } => {
                let object = cluster.get(key).await.map_err(|e| e.to_string())?;
                let mut restored = object.clone();
                json_patch::merge(&mut restored, inverse);
                Ok(restored == object)
            }
            UndoRecord::Applied {
                key,
                previous: None,
            } => match cluster.get(key).await {
                Err(EffectError::NotFound(_)) => Ok(true),
                Ok(_) => Ok(false),
                Err(error) => Err(error.to_string()),
            },
            UndoRecord::Applied { .. } => Ok(false),
            UndoRecord::Unschedulable { node, previous } => {
                Ok(self.node_unschedulable(node).await? == *previous)
            }
            UndoRecord::Declared => Ok(false),
        }
    }

    /// Forgets every cached fact (after anything that may have changed the world).
    async fn forget_all_facts(&self) {
        let mut cache = self.facts.lock().await;
        self.fact_generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        cache.clear();
    }

    async fn perform_action(
        &self,
        step: &StepSpec,
        action: &Action,
        attempt: u32,
    ) -> Result<Finished, String> {
        let dry = self.dry();
        let done =
            |output: Option<String>, undo: Option<UndoState>| Finished::Done { output, undo };
        match action {
            Action::Run { argv } => {
                let argv = self.render_all(argv).await?;
                let shown = shell_words::join(&argv);
                if self.options.dry_run && !step.readonly {
                    return Ok(Finished::DryRun(format!("would run: {shown}")));
                }
                if !step.readonly {
                    self.intent(
                        step,
                        attempt,
                        format!("run {shown}"),
                        self.undo_for(step, None).as_ref(),
                    )?;
                }
                let output = self
                    .effects
                    .processes
                    .run(&argv, step.timeout)
                    .await
                    .map_err(|e| e.to_string())?;
                let output = CommandOutput {
                    stdout: self.redactor.redact(&output.stdout),
                    stderr: self.redactor.redact(&output.stderr),
                    ..output
                };
                command_result(output, self.options.dry_run && step.readonly).map(|(out, _)| {
                    if self.options.dry_run {
                        Finished::DryRun(out.unwrap_or_else(|| "ran (readonly)".to_owned()))
                    } else {
                        done(out, self.undo_for(step, None))
                    }
                })
            }
            Action::Exec {
                namespace,
                pod,
                container,
                argv,
            } => {
                let pod = self.pod_ref(namespace, pod, container.as_ref()).await?;
                let argv = self.render_all(argv).await?;
                let shown = format!(
                    "exec in pod {}/{}: {}",
                    pod.namespace,
                    pod.pod,
                    shell_words::join(&argv)
                );
                if self.options.dry_run && !step.readonly {
                    return Ok(Finished::DryRun(format!("would {shown}")));
                }
                if !step.readonly {
                    self.intent(step, attempt, shown, self.undo_for(step, None).as_ref())?;
                }
                let output = self
                    .effects
                    .cluster
                    .exec(&pod, &argv, step.timeout)
                    .await
                    .map_err(|e| e.to_string())?;
                let output = CommandOutput {
                    stdout: self.redactor.redact(&output.stdout),
                    stderr: self.redactor.redact(&output.stderr),
                    ..output
                };
                command_result(output, false).map(|(out, _)| {
                    if self.options.dry_run {
                        Finished::DryRun(out.unwrap_or_else(|| "ran (readonly)".to_owned()))
                    } else {
                        done(out, self.undo_for(step, None))
                    }
                })
            }
            Action::Scale { target, replicas } => {
                let key = self.key(target).await?;
                let count = match replicas {
                    IntValue::Literal(count) => *count,
                    IntValue::Template(template) => {
                        let text = self.render(template, None).await?;
                        text.trim()
                            .parse::<i64>()
                            .ok()
                            .filter(|n| *n >= 0)
                            .ok_or_else(|| format!("replicas `{text}` is not a count"))?
                    }
                };
                let current = self
                    .effects
                    .cluster
                    .get(&key)
                    .await
                    .map_err(|e| e.to_string())?;
                let previous = current
                    .pointer("/spec/replicas")
                    .and_then(Json::as_i64)
                    .unwrap_or(1);
                let undo = self.undo_for(
                    step,
                    Some(UndoState::Native(UndoRecord::Replicas {
                        key: key.clone(),
                        previous,
                    })),
                );
                self.intent(
                    step,
                    attempt,
                    format!("scale {key} from {previous} to {count} replicas"),
                    undo.as_ref(),
                )?;
                self.effects
                    .cluster
                    .scale(&key, count, dry)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(self.native_done(format!("{key}: replicas {previous} -> {count}"), undo))
            }
            Action::Restart { target } => {
                let key = self.key(target).await?;
                let undo = self.undo_for(step, None);
                self.intent(
                    step,
                    attempt,
                    format!("rollout restart {key}"),
                    undo.as_ref(),
                )?;
                self.effects
                    .cluster
                    .restart(&key, self.effects.clock.now(), dry)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(self.native_done(format!("{key}: restarted"), undo))
            }
            Action::Patch {
                target,
                patch_type,
                body,
            } => {
                let key = self.key(target).await?;
                let body = self.render_json(body).await?;
                // The object as this run's last patch of it left it, when the server can
                // check that it still is (a merge or strategic patch carrying its
                // resourceVersion): one request instead of a read and a write.
                let known = (attempt == 1
                    && !self.options.dry_run
                    && *patch_type != PatchType::Json
                    && body.pointer("/metadata/resourceVersion").is_none()
                    && !self.has_captured(step))
                .then(|| self.written_lock().remove(&key))
                .flatten();
                if let Some(known) = known {
                    let patch = PatchCall {
                        key: &key,
                        patch_type: *patch_type,
                        body: &body,
                    };
                    match self.patch_from(step, attempt, patch, known, true).await {
                        Err(PatchError::Stale) => {
                            // Changed since our last write: read it and start again.
                            self.captured_lock().remove(&step.id);
                        }
                        Err(PatchError::Failed(error)) => return Err(error),
                        Ok(finished) => return Ok(finished),
                    }
                }
                let current = self
                    .effects
                    .cluster
                    .get(&key)
                    .await
                    .map_err(|e| e.to_string())?;
                let patch = PatchCall {
                    key: &key,
                    patch_type: *patch_type,
                    body: &body,
                };
                self.patch_from(step, attempt, patch, current, false)
                    .await
                    .map_err(|error| match error {
                        PatchError::Stale => "the object kept changing".to_owned(),
                        PatchError::Failed(error) => error,
                    })
            }
            Action::Apply { manifest } => {
                let mut manifest = self.render_json(manifest).await?;
                let key = manifest_key(&manifest, &self.options.namespace)?;
                // The namespace the run's undo and reads use is the one the object goes to
                // (the run's, when the manifest names none).
                if let (Some(namespace), Some(metadata)) = (
                    &key.namespace,
                    manifest.get_mut("metadata").and_then(Json::as_object_mut),
                ) {
                    metadata
                        .entry("namespace")
                        .or_insert_with(|| Json::String(namespace.clone()));
                }
                if key.kind == "Secret" {
                    if let Some(data) = manifest.get("data") {
                        self.redactor.add_json(data, true);
                    }
                    if let Some(data) = manifest.get("stringData") {
                        self.redactor.add_json(data, false);
                    }
                }
                let previous = match self.effects.cluster.get(&key).await {
                    Ok(object) => {
                        self.remember_secret_object(&object);
                        Some(object)
                    }
                    Err(EffectError::NotFound(_)) => None,
                    Err(error) => return Err(error.to_string()),
                };
                let existed = previous.is_some();
                let undo = self.undo_for(
                    step,
                    Some(UndoState::Native(UndoRecord::Applied {
                        key: key.clone(),
                        previous,
                    })),
                );
                self.intent(step, attempt, format!("apply {key}"), undo.as_ref())?;
                self.effects
                    .cluster
                    .apply(&manifest, dry)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(self.native_done(
                    format!("{key}: {}", if existed { "updated" } else { "created" }),
                    undo,
                ))
            }
            Action::Annotate { target, set } | Action::Label { target, set } => {
                let key = self.key(target).await?;
                let annotate = matches!(action, Action::Annotate { .. });
                let field = if annotate { "annotations" } else { "labels" };
                let mut values = BTreeMap::new();
                for (name, value) in set {
                    values.insert(
                        name.clone(),
                        match value {
                            Some(template) => Some(self.render(template, None).await?),
                            None => None,
                        },
                    );
                }
                let shown: serde_json::Map<String, Json> = values
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone().map_or(Json::Null, Json::String)))
                    .collect();
                let body = json!({"metadata": {field: shown.clone()}});
                let current = self
                    .effects
                    .cluster
                    .get(&key)
                    .await
                    .map_err(|e| e.to_string())?;
                let undo = self.undo_for(
                    step,
                    Some(UndoState::Native(UndoRecord::MergePatch {
                        key: key.clone(),
                        inverse: inverse_merge_patch(&current, &body),
                    })),
                );
                self.intent(
                    step,
                    attempt,
                    format!("set {field} of {key}: {}", Json::Object(shown)),
                    undo.as_ref(),
                )?;
                let cluster = &self.effects.cluster;
                if annotate {
                    cluster.annotate(&key, &values, dry).await
                } else {
                    cluster.label(&key, &values, dry).await
                }
                .map_err(|e| e.to_string())?;
                Ok(self.native_done(format!("{key}: {field} set"), undo))
            }
            Action::Delete {
                target,
                propagation,
                grace_period_seconds,
            } => {
                let key = self.key(target).await?;
                let undo = self.undo_for(step, None);
                self.intent(step, attempt, format!("delete {key}"), undo.as_ref())?;
                self.effects
                    .cluster
                    .delete(&key, *propagation, *grace_period_seconds, dry)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(self.native_done(format!("{key}: deleted"), undo))
            }
            Action::Cordon { node } | Action::Uncordon { node } => {
                let node = self.render(node, None).await?;
                let wanted = matches!(action, Action::Cordon { .. });
                let previous = self.node_unschedulable(&node).await?;
                let undo = self.undo_for(
                    step,
                    Some(UndoState::Native(UndoRecord::Unschedulable {
                        node: node.clone(),
                        previous,
                    })),
                );
                let verb = if wanted { "cordon" } else { "uncordon" };
                self.intent(step, attempt, format!("{verb} node {node}"), undo.as_ref())?;
                self.effects
                    .cluster
                    .set_unschedulable(&node, wanted, dry)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(self.native_done(
                    format!("node {node}: unschedulable {previous} -> {wanted}"),
                    undo,
                ))
            }
            Action::Drain {
                node,
                delete_empty_dir_data,
                eviction_timeout,
            } => {
                let node = self.render(node, None).await?;
                let previous = self.node_unschedulable(&node).await?;
                let undo = self.undo_for(
                    step,
                    Some(UndoState::Native(UndoRecord::Unschedulable {
                        node: node.clone(),
                        previous,
                    })),
                );
                self.intent(step, attempt, format!("drain node {node}"), undo.as_ref())?;
                let options = DrainOptions {
                    delete_empty_dir_data: *delete_empty_dir_data,
                    eviction_timeout: *eviction_timeout,
                };
                let drained = self
                    .effects
                    .cluster
                    .drain(&node, &options, dry)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(self.native_done(
                    format!(
                        "node {node}: evicted {} pod(s), skipped {}",
                        drained.evicted.len(),
                        drained.skipped.len()
                    ),
                    undo,
                ))
            }
            Action::Wait {
                target,
                condition,
                until,
            } => {
                let key = self.key(target).await?;
                // The facts and params an `until` reads are read once; only `object` changes.
                let base = match until {
                    Some(until) => Some((self.scope(until, None).await?, until.ast.clone())),
                    None => None,
                };
                let condition = condition.clone();
                let ready = move |object: &Json| -> Result<bool, String> {
                    match (&condition, &base) {
                        (Some(condition), _) => Ok(has_condition(object, condition)),
                        (None, Some((scope, ast))) => {
                            let mut scope = scope.clone();
                            scope.push_constant_dynamic(
                                "object",
                                rhai::serde::to_dynamic(object).map_err(|e| e.to_string())?,
                            );
                            // A field the controller has not reported yet (no `status`) means
                            // "not yet", as in `verify`; the step's timeout bounds the wait.
                            match sandboxed_engine().eval_ast_with_scope::<bool>(&mut scope, ast) {
                                Ok(held) => Ok(held),
                                Err(error) => {
                                    tracing::debug!(%error, "Wait condition not evaluable yet.");
                                    Ok(false)
                                }
                            }
                        }
                        (None, None) => Ok(true),
                    }
                };
                if self.options.dry_run {
                    let object = self
                        .effects
                        .cluster
                        .get(&key)
                        .await
                        .map_err(|e| e.to_string())?;
                    let held = ready(&object)?;
                    return Ok(Finished::DryRun(if held {
                        format!("{key} already holds")
                    } else {
                        format!("{key} does not hold yet; the run would wait")
                    }));
                }
                self.effects
                    .cluster
                    .wait(&key, &ready, WAIT_INTERVAL)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(done(Some(format!("{key} holds")), None))
            }
            Action::Verify { expr, interval } => {
                let mut poll = 0u32;
                loop {
                    poll += 1;
                    self.forget_facts_of(expr).await;
                    let held = self.eval_bool(expr, None).await;
                    let held = match held {
                        Ok(held) => held,
                        Err(error) if self.options.dry_run => {
                            return Ok(Finished::DryRun(format!("cannot evaluate yet: {error}")))
                        }
                        Err(error) => {
                            self.emit(Event::VerifyPolled {
                                step: step.id.clone(),
                                poll,
                                held: false,
                            });
                            tracing::debug!(step = %step.id, %error, "Verify could not be evaluated; polling again.");
                            self.effects.clock.sleep(*interval).await;
                            continue;
                        }
                    };
                    self.emit(Event::VerifyPolled {
                        step: step.id.clone(),
                        poll,
                        held,
                    });
                    if self.options.dry_run {
                        return Ok(Finished::DryRun(format!(
                            "`{}` is {held} now",
                            expr.source.trim()
                        )));
                    }
                    if held {
                        return Ok(done(Some(format!("true after {poll} poll(s)")), None));
                    }
                    self.effects.clock.sleep(*interval).await;
                }
            }
            Action::Gate => Ok(done(None, None)),
            Action::Notify(message) | Action::Page(message) => {
                let notification = Notification {
                    kind: if matches!(action, Action::Page(_)) {
                        NotificationKind::Page
                    } else {
                        NotificationKind::Notify
                    },
                    message: self
                        .redactor
                        .redact(&self.render(&message.text, None).await?),
                    channel: message.channel.clone(),
                    severity: message.severity.clone(),
                };
                if self.options.dry_run {
                    return Ok(Finished::DryRun(format!(
                        "would send: {}",
                        notification.message
                    )));
                }
                self.effects
                    .notifier
                    .send(&notification)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(done(Some(format!("sent: {}", notification.message)), None))
            }
            Action::Call { runbook, params } => {
                let mut sets = Vec::new();
                for (name, value) in params {
                    let value = self.render_json(value).await?;
                    sets.push((
                        name.clone(),
                        match value {
                            Json::String(text) => text,
                            other => other.to_string(),
                        },
                    ));
                }
                let outcome = self.call(runbook, &sets).await?;
                if self.options.dry_run {
                    Ok(Finished::DryRun(outcome))
                } else {
                    Ok(done(Some(outcome), None))
                }
            }
        }
    }

    /// Everything in a Secret is secret, in its base64 and decoded forms.
    fn remember_secret_object(&self, object: &Json) {
        if object.get("kind").and_then(Json::as_str) == Some("Secret") {
            if let Some(data) = object.get("data") {
                self.redactor.add_json(data, true);
            }
            if let Some(data) = object.get("stringData") {
                self.redactor.add_json(data, false);
            }
        }
    }

    /// Patches `key` starting from `current`, the object before: the undo state comes from
    /// it, and the report compares it with the server's answer. With `precondition`, the
    /// patch carries `current`'s resourceVersion and a 409 means `current` was stale.
    async fn patch_from(
        &self,
        step: &StepSpec,
        attempt: u32,
        patch: PatchCall<'_>,
        current: Json,
        precondition: bool,
    ) -> Result<Finished, PatchError> {
        let PatchCall {
            key,
            patch_type,
            body,
        } = patch;
        self.remember_secret_object(&current);
        let native = (patch_type != PatchType::Json).then(|| {
            UndoState::Native(UndoRecord::MergePatch {
                key: key.clone(),
                inverse: inverse_merge_patch(&current, body),
            })
        });
        let undo = self.undo_for(step, native);
        self.intent(
            step,
            attempt,
            format!("patch {key} with {body}"),
            undo.as_ref(),
        )
        .map_err(PatchError::Failed)?;
        let version = current
            .pointer("/metadata/resourceVersion")
            .cloned()
            .filter(|_| precondition);
        let sent = match (&version, body) {
            (Some(version), Json::Object(fields)) => {
                let mut fields = fields.clone();
                let metadata = fields.entry("metadata").or_insert_with(|| json!({}));
                if let Some(metadata) = metadata.as_object_mut() {
                    metadata.insert("resourceVersion".to_owned(), version.clone());
                }
                Json::Object(fields)
            }
            _ => body.clone(),
        };
        // What the server did (or, in a dry-run, would do): the object it answered against
        // the one before.
        let after = match self
            .effects
            .cluster
            .patch(key, patch_type, &sent, self.dry())
            .await
        {
            Ok(after) => after,
            Err(EffectError::Conflict(_)) if version.is_some() => return Err(PatchError::Stale),
            Err(error) => return Err(PatchError::Failed(error.to_string())),
        };
        let changed = field_changes(&current, &after);
        if !self.options.dry_run && patch_type != PatchType::Json {
            self.written_lock().insert(key.clone(), after);
        }
        Ok(self.native_done(format!("{key}: {changed}"), undo))
    }

    fn written_lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectKey, Json>> {
        self.written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn captured_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, UndoState>> {
        self.captured
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn has_captured(&self, step: &StepSpec) -> bool {
        self.captured_lock().contains_key(&step.id)
    }

    fn native_done(&self, output: String, undo: Option<UndoState>) -> Finished {
        if self.options.dry_run {
            Finished::DryRun(format!("server accepted (dry-run): {output}"))
        } else {
            Finished::Done {
                output: Some(output),
                undo,
            }
        }
    }

    async fn node_unschedulable(&self, node: &str) -> Result<bool, String> {
        let key = ObjectKey {
            api_version: "v1".to_owned(),
            kind: "Node".to_owned(),
            namespace: None,
            name: node.to_owned(),
        };
        let object = self
            .effects
            .cluster
            .get(&key)
            .await
            .map_err(|e| e.to_string())?;
        Ok(object
            .pointer("/spec/unschedulable")
            .and_then(Json::as_bool)
            .unwrap_or(false))
    }

    /// Runs another runbook to completion as part of this one.
    async fn call(&self, name: &str, sets: &[(String, String)]) -> Result<String, String> {
        let catalog = self
            .options
            .catalog
            .clone()
            .ok_or_else(|| format!("runbook `{name}` cannot be called: no catalog"))?;
        let runbook = catalog
            .get(name)
            .cloned()
            .ok_or_else(|| format!("unknown runbook `{name}`"))?;
        let (bindings, errors) = crate::bind::bind(&runbook, sets, None);
        if let Some(error) = errors.first() {
            return Err(format!("runbook `{name}`: {error}"));
        }
        let plan = Arc::new(crate::compile::Compiler::compile(runbook, bindings, None));
        let mut options = self.options.clone();
        options.run_id = format!("{}.{name}", self.options.run_id);
        options.resume = None;
        options.digest = String::new();
        let report = execute_boxed(plan, self.effects.clone(), options).await;
        match report.outcome {
            Outcome::Succeeded => Ok(format!("runbook `{name}` succeeded")),
            other => Err(format!(
                "runbook `{name}` ended {other:?}: {}",
                report.message
            )),
        }
    }

    async fn undo(&self, state: &UndoState) -> Result<(), String> {
        let cluster = &self.effects.cluster;
        match state {
            UndoState::Native(UndoRecord::Replicas { key, previous }) => cluster
                .scale(key, *previous, DryRun::No)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            UndoState::Native(UndoRecord::MergePatch { key, inverse }) => cluster
                .patch(key, PatchType::Merge, inverse, DryRun::No)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            UndoState::Native(UndoRecord::Applied {
                key,
                previous: None,
            }) => cluster
                .delete(key, None, None, DryRun::No)
                .await
                .map_err(|e| e.to_string()),
            UndoState::Native(UndoRecord::Applied {
                previous: Some(previous),
                ..
            }) => {
                let mut previous = previous.clone();
                if let Some(metadata) = previous.get_mut("metadata").and_then(Json::as_object_mut) {
                    for field in [
                        "resourceVersion",
                        "managedFields",
                        "uid",
                        "creationTimestamp",
                        "generation",
                    ] {
                        metadata.remove(field);
                    }
                }
                if let Some(object) = previous.as_object_mut() {
                    object.remove("status");
                }
                cluster
                    .apply(&previous, DryRun::No)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
            UndoState::Native(UndoRecord::Unschedulable { node, previous }) => cluster
                .set_unschedulable(node, *previous, DryRun::No)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            UndoState::Native(UndoRecord::Declared) => Err("no undo state was recorded".to_owned()),
            UndoState::Declared(action) => {
                let step = self.synthetic_step("undo", action);
                match tokio::time::timeout(
                    step.timeout,
                    Box::pin(self.perform_action(&step, action, 1)),
                )
                .await
                {
                    Err(_) => Err(format!("timed out after {}", format_duration(step.timeout))),
                    Ok(Err(error)) | Ok(Ok(Finished::Failed(error))) => Err(error),
                    Ok(Ok(_)) => Ok(()),
                }
            }
        }
    }

    fn synthetic_step(&self, id: &str, action: &Action) -> StepSpec {
        StepSpec {
            index: usize::MAX,
            id: id.to_owned(),
            name: None,
            needs: Vec::new(),
            when: None,
            timeout: DEFAULT_STEP_TIMEOUT,
            retries: RetrySpec::default(),
            confirm: None,
            undo: UndoSpec::NotNeeded,
            readonly: false,
            action: action.clone(),
            span: Default::default(),
        }
    }

    async fn rollback(
        &self,
        rollback: &RollbackSpec,
        failure: &str,
        report: &RunReport,
    ) -> Result<(), String> {
        match rollback {
            RollbackSpec::Named(named) => {
                let undone = report
                    .undos
                    .iter()
                    .map(|u| {
                        format!(
                            "{}: {}",
                            u.step,
                            if u.result.is_ok() {
                                "undone"
                            } else {
                                "UNDO FAILED"
                            }
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                let message = self.redactor.redact(&format!(
                    "runbook {} (run {}) failed: {failure}. Undos: {}.",
                    self.runbook().name,
                    self.options.run_id,
                    if undone.is_empty() {
                        "none".to_owned()
                    } else {
                        undone
                    }
                ));
                let notification = Notification {
                    kind: match named {
                        NamedRollback::PageOncall => NotificationKind::Page,
                        NamedRollback::NotifyOncall => NotificationKind::Notify,
                    },
                    message,
                    channel: None,
                    severity: Some("critical".to_owned()),
                };
                self.effects
                    .notifier
                    .send(&notification)
                    .await
                    .map_err(|e| e.to_string())
            }
            RollbackSpec::Runbook { name, params } => {
                let mut sets = Vec::new();
                for (param, value) in params {
                    let value = self.render_json(value).await?;
                    sets.push((
                        param.clone(),
                        match value {
                            Json::String(text) => text,
                            other => other.to_string(),
                        },
                    ));
                }
                self.call(name, &sets).await.map(drop)
            }
            RollbackSpec::Steps(steps) => {
                for step in steps {
                    if let Some(when) = &step.when {
                        if !self.eval_bool(when, None).await? {
                            continue;
                        }
                    }
                    let performed = tokio::time::timeout(
                        step.timeout,
                        Box::pin(self.perform_action(step, &step.action, 1)),
                    )
                    .await;
                    match performed {
                        Err(_) => {
                            return Err(format!(
                                "rollback step `{}` timed out after {}",
                                step.id,
                                format_duration(step.timeout)
                            ))
                        }
                        Ok(Err(error)) => {
                            return Err(format!("rollback step `{}`: {error}", step.id))
                        }
                        Ok(Ok(Finished::Failed(error))) => {
                            return Err(format!("rollback step `{}`: {error}", step.id))
                        }
                        Ok(Ok(_)) => continue,
                    }
                }
                Ok(())
            }
        }
    }

    // ----- facts and expressions ----------------------------------------------------------

    async fn key(&self, target: &Target) -> Result<ObjectKey, String> {
        let namespace = if is_cluster_scoped(&target.kind) {
            None
        } else {
            Some(match &target.namespace {
                Some(namespace) => self.render(namespace, None).await?,
                None => self.options.namespace.clone(),
            })
        };
        Ok(ObjectKey {
            api_version: target.api_version.clone(),
            kind: target.kind.clone(),
            namespace,
            name: self.render(&target.name, None).await?,
        })
    }

    /// Forgets the facts `expression` reads (and what they read), so they are read again.
    async fn forget_facts_of(&self, expression: &Expression) {
        let mut names: Vec<String> = facts_read(&self.fact_names, expression)
            .into_iter()
            .collect();
        let mut cache = self.facts.lock().await;
        while let Some(name) = names.pop() {
            cache.remove(&name);
            if let Some(fact) = self.runbook().facts.get(&name) {
                names.extend(fact.reads.iter().cloned());
            }
        }
    }

    /// The value of a fact: from the cache, or read now (and journaled).
    async fn fact(&self, name: &str) -> Result<Json, String> {
        if let Some(value) = self.facts.lock().await.get(name) {
            return Ok(value.clone());
        }
        let fact = self
            .runbook()
            .facts
            .get(name)
            .cloned()
            .ok_or_else(|| format!("unknown fact `{name}`"))?;
        let generation = self
            .fact_generation
            .load(std::sync::atomic::Ordering::SeqCst);
        let result = Box::pin(self.read_fact(&fact)).await;
        match result {
            Ok(value) => {
                if fact.secret {
                    self.redactor.add_json(&value, false);
                }
                // Redact before shortening, so a secret is never cut in half at the boundary.
                let mut shown = if fact.secret {
                    crate::redact::REDACTED.to_owned()
                } else {
                    self.redactor.redact(&value.to_string())
                };
                if shown.chars().count() > 300 {
                    shown = format!("{}…", shown.chars().take(299).collect::<String>());
                }
                self.emit(Event::FactRead {
                    fact: name.to_owned(),
                    value: shown,
                });
                let mut cache = self.facts.lock().await;
                if self
                    .fact_generation
                    .load(std::sync::atomic::Ordering::SeqCst)
                    == generation
                {
                    cache.insert(name.to_owned(), value.clone());
                }
                Ok(value)
            }
            Err(error) => {
                self.emit(Event::FactFailed {
                    fact: name.to_owned(),
                    error: error.clone(),
                });
                Err(format!("fact `{name}`: {error}"))
            }
        }
    }

    async fn read_fact(&self, fact: &FactSpec) -> Result<Json, String> {
        let raw = match &fact.source {
            FactSource::Kubernetes {
                api_version,
                kind,
                name,
                namespace,
                label_selector,
                field_selector,
            } => {
                let namespace = if is_cluster_scoped(kind) {
                    None
                } else {
                    match namespace {
                        Some(namespace) => Some(self.render(namespace, None).await?),
                        None if name.is_some() => Some(self.options.namespace.clone()),
                        None => None,
                    }
                };
                let value = match name {
                    Some(name) => {
                        let key = ObjectKey {
                            api_version: api_version.clone(),
                            kind: kind.clone(),
                            namespace,
                            name: self.render(name, None).await?,
                        };
                        self.effects
                            .cluster
                            .get(&key)
                            .await
                            .map_err(|e| e.to_string())?
                    }
                    None => {
                        let query = ListQuery {
                            api_version: api_version.clone(),
                            kind: kind.clone(),
                            namespace,
                            label_selector: self.render_opt(label_selector.as_ref()).await?,
                            field_selector: self.render_opt(field_selector.as_ref()).await?,
                        };
                        self.effects
                            .cluster
                            .list(&query)
                            .await
                            .map_err(|e| e.to_string())?
                    }
                };
                if kind == "Secret" {
                    // Everything in a Secret is secret, in its base64 and decoded forms.
                    if let Some(data) = value.get("data") {
                        self.redactor.add_json(data, true);
                    }
                    if let Some(items) = value.get("items").and_then(Json::as_array) {
                        for item in items {
                            if let Some(data) = item.get("data") {
                                self.redactor.add_json(data, true);
                            }
                        }
                    }
                }
                value
            }
            FactSource::Exec {
                namespace,
                pod,
                container,
                argv,
                format,
            } => {
                let pod = self.pod_ref(namespace, pod, container.as_ref()).await?;
                let argv = self.render_all(argv).await?;
                let output = self
                    .effects
                    .cluster
                    .exec(&pod, &argv, FACT_TIMEOUT)
                    .await
                    .map_err(|e| e.to_string())?;
                parse_output(&output, *format)?
            }
            FactSource::Logs {
                namespace,
                pod,
                container,
                tail,
                format,
            } => {
                let pod = self.pod_ref(namespace, pod, container.as_ref()).await?;
                let log = self
                    .effects
                    .cluster
                    .logs(&pod, *tail)
                    .await
                    .map_err(|e| e.to_string())?;
                parse_log(&log, *format)?
            }
            FactSource::Command { argv, format } => {
                let argv = self.render_all(argv).await?;
                let output = self
                    .effects
                    .processes
                    .run(&argv, FACT_TIMEOUT)
                    .await
                    .map_err(|e| e.to_string())?;
                parse_output(&output, *format)?
            }
            FactSource::Http {
                url,
                query,
                headers,
                format,
            } => {
                let url = self.render(url, None).await?;
                let mut rendered_query = BTreeMap::new();
                for (k, v) in query {
                    rendered_query.insert(k.clone(), self.render(v, None).await?);
                }
                let mut rendered_headers = BTreeMap::new();
                for (k, v) in headers {
                    rendered_headers.insert(k.clone(), self.render(v, None).await?);
                }
                let response = self
                    .effects
                    .http
                    .get(&url, &rendered_query, &rendered_headers)
                    .await
                    .map_err(|e| e.to_string())?;
                if !(200..300).contains(&response.status) {
                    return Err(format!("GET {url} answered {}", response.status));
                }
                match format {
                    OutputFormat::Json => serde_json::from_str(&response.body)
                        .map_err(|e| format!("GET {url}: the body is not JSON: {e}"))?,
                    OutputFormat::Text => Json::String(response.body.trim().to_owned()),
                }
            }
            FactSource::Expr(expression) => {
                let value = self.eval(expression, None).await?;
                rhai::serde::from_dynamic::<Json>(&value).map_err(|e| e.to_string())?
            }
        };
        Ok(match &fact.jsonpath {
            Some(selection) => select(&raw, &selection.query)?,
            None => raw,
        })
    }

    /// Builds the scope an expression needs (its facts, params, and `object` for `wait`).
    async fn scope(
        &self,
        expression: &Expression,
        object: Option<&Json>,
    ) -> Result<rhai::Scope<'static>, String> {
        let mut roots: BTreeMap<String, Json> = BTreeMap::new();
        for name in facts_read(&self.fact_names, expression) {
            let value = self.fact(&name).await?;
            insert_dotted(&mut roots, &name, value);
        }
        let mut scope = rhai::Scope::new();
        for (root, value) in roots {
            let dynamic = rhai::serde::to_dynamic(&value).map_err(|e| e.to_string())?;
            scope.push_constant_dynamic(root, dynamic);
        }
        scope.push_constant("params", self.params.clone());
        if let Some(object) = object {
            scope.push_constant_dynamic(
                "object",
                rhai::serde::to_dynamic(object).map_err(|e| e.to_string())?,
            );
        }
        Ok(scope)
    }

    async fn eval(
        &self,
        expression: &Expression,
        object: Option<&Json>,
    ) -> Result<Dynamic, String> {
        let mut scope = self.scope(expression, object).await?;
        sandboxed_engine()
            .eval_ast_with_scope::<Dynamic>(&mut scope, &expression.ast)
            .map_err(|error| format!("`{}`: {}", expression.source.trim(), error))
    }

    async fn eval_bool(
        &self,
        expression: &Expression,
        object: Option<&Json>,
    ) -> Result<bool, String> {
        let value = self.eval(expression, object).await?;
        value.as_bool().map_err(|kind| {
            format!(
                "`{}` gave {kind} `{value}`, not true or false",
                expression.source.trim()
            )
        })
    }

    async fn render(&self, template: &Template, object: Option<&Json>) -> Result<String, String> {
        let mut out = String::new();
        for part in &template.parts {
            match part {
                TemplatePart::Text(text) => out.push_str(text),
                TemplatePart::Expr(expression, _) => {
                    let value = self.eval(expression, object).await?;
                    if value.is_string() {
                        out.push_str(&value.to_string());
                    } else {
                        let json =
                            rhai::serde::from_dynamic::<Json>(&value).map_err(|e| e.to_string())?;
                        out.push_str(&match json {
                            Json::String(text) => text,
                            other => other.to_string(),
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    async fn render_opt(&self, template: Option<&Template>) -> Result<Option<String>, String> {
        match template {
            Some(template) => self.render(template, None).await.map(Some),
            None => Ok(None),
        }
    }

    async fn pod_ref(
        &self,
        namespace: &Template,
        pod: &Template,
        container: Option<&Template>,
    ) -> Result<PodRef, String> {
        Ok(PodRef {
            namespace: self.render(namespace, None).await?,
            pod: self.render(pod, None).await?,
            container: self.render_opt(container).await?,
        })
    }

    async fn render_all(&self, templates: &[Template]) -> Result<Vec<String>, String> {
        let mut out = Vec::with_capacity(templates.len());
        for template in templates {
            out.push(self.render(template, None).await?);
        }
        Ok(out)
    }

    async fn render_json(&self, value: &JsonTemplate) -> Result<Json, String> {
        Ok(match value {
            JsonTemplate::Literal(value) => value.clone(),
            JsonTemplate::String(template) => Json::String(self.render(template, None).await?),
            JsonTemplate::Array(items) => {
                let mut out = Vec::new();
                for item in items {
                    out.push(Box::pin(self.render_json(item)).await?);
                }
                Json::Array(out)
            }
            JsonTemplate::Object(entries) => {
                let mut out = serde_json::Map::new();
                for (key, item) in entries {
                    out.insert(key.clone(), Box::pin(self.render_json(item)).await?);
                }
                Json::Object(out)
            }
        })
    }

    async fn render_action_summary(&self, action: &Action) -> Result<String, String> {
        // Params are already substituted by the plan renderer; facts in templates are shown as
        // written there, which is what the journal should say before anything is read.
        Ok(crate::render::action_summary(&self.plan, action))
    }
}

/// A step finished: its dependants have one dependency fewer to wait for.
fn release(dependants: &[usize], remaining: &mut [usize], ready: &mut BTreeSet<usize>) {
    for dependant in dependants {
        remaining[*dependant] -= 1;
        if remaining[*dependant] == 0 {
            ready.insert(*dependant);
        }
    }
}

fn rollback_summary(rollback: &RollbackSpec) -> String {
    match rollback {
        RollbackSpec::Named(named) => named.name().to_owned(),
        RollbackSpec::Runbook { name, .. } => format!("runbook {name}"),
        RollbackSpec::Steps(steps) => format!("{} rollback step(s)", steps.len()),
    }
}

/// A process result: success with its last line of output, or a failure saying why.
fn command_result(output: CommandOutput, _dry: bool) -> Result<(Option<String>, i32), String> {
    if output.exit_code != 0 {
        let detail = last_line(&output.stderr)
            .or_else(|| last_line(&output.stdout))
            .unwrap_or_default();
        return Err(format!(
            "exited with status {}{}",
            output.exit_code,
            if detail.is_empty() {
                String::new()
            } else {
                format!(": {detail}")
            }
        ));
    }
    Ok((last_line(&output.stdout), output.exit_code))
}

fn last_line(text: &str) -> Option<String> {
    let line = text
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())?
        .trim();
    Some(if line.chars().count() > 200 {
        format!("{}…", line.chars().take(199).collect::<String>())
    } else {
        line.to_owned()
    })
}

/// A probe's output as a value. JSON output is used whatever the exit status (`bao status`
/// exits 2 when sealed, and says so in JSON); otherwise a non-zero status is an error.
fn parse_output(output: &CommandOutput, format: OutputFormat) -> Result<Json, String> {
    match format {
        OutputFormat::Json => match serde_json::from_str::<Json>(&output.stdout) {
            Ok(value) => Ok(value),
            Err(error) if output.exit_code == 0 => Err(format!("the output is not JSON: {error}")),
            Err(_) => Err(command_result(output.clone(), false)
                .err()
                .unwrap_or_default()),
        },
        OutputFormat::Text => {
            if output.exit_code != 0 {
                return Err(command_result(output.clone(), false)
                    .err()
                    .unwrap_or_default());
            }
            Ok(Json::String(output.stdout.trim().to_owned()))
        }
    }
}

/// A log as a value: one string, its lines, or one JSON value a line (blank lines skipped).
fn parse_log(log: &str, format: LogFormat) -> Result<Json, String> {
    match format {
        LogFormat::Text => Ok(Json::String(log.trim_end().to_owned())),
        LogFormat::Lines => Ok(Json::Array(
            log.lines()
                .map(|line| Json::String(line.to_owned()))
                .collect(),
        )),
        LogFormat::Json => log
            .lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(index, line)| {
                serde_json::from_str::<Json>(line)
                    .map_err(|error| format!("line {} of the log is not JSON: {error}", index + 1))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Json::Array),
    }
}

/// Applies a JSONPath selection as kubectl does: one match is the value, none is null, and a
/// query that can match many (wildcards, filters, slices, recursion) is always a list.
fn select(value: &Json, query: &str) -> Result<Json, String> {
    use jsonpath_rust::JsonPath;
    let found = value
        .query(query)
        .map_err(|e| format!("JSONPath `{query}`: {e}"))?;
    let many = query.contains('*')
        || query.contains("..")
        || query.contains("?(")
        || query.contains('?')
        || query.contains(':')
        || query.contains(',');
    Ok(if many {
        Json::Array(found.into_iter().cloned().collect())
    } else {
        found.first().map_or(Json::Null, |v| (*v).clone())
    })
}

/// Puts `value` at a dotted path in nested maps (`openbao.status` -> {openbao: {status: v}}).
fn insert_dotted(roots: &mut BTreeMap<String, Json>, name: &str, value: Json) {
    let mut parts = name.split('.');
    let Some(root) = parts.next() else {
        return;
    };
    let rest: Vec<&str> = parts.collect();
    if rest.is_empty() {
        roots.insert(root.to_owned(), value);
        return;
    }
    let mut node = roots.entry(root.to_owned()).or_insert_with(|| json!({}));
    for (index, part) in rest.iter().enumerate() {
        if !node.is_object() {
            *node = json!({});
        }
        let Some(map) = node.as_object_mut() else {
            return;
        };
        if index + 1 == rest.len() {
            map.insert((*part).to_owned(), value);
            return;
        }
        node = map.entry((*part).to_owned()).or_insert_with(|| json!({}));
    }
}

/// The merge patch that puts back what `patch` changes in `current`.
pub fn inverse_merge_patch(current: &Json, patch: &Json) -> Json {
    match patch {
        Json::Object(entries) => {
            let mut inverse = serde_json::Map::new();
            for (key, value) in entries {
                let before = current.get(key);
                let restored = match (before, value) {
                    (Some(before @ Json::Object(_)), Json::Object(_)) => {
                        inverse_merge_patch(before, value)
                    }
                    (Some(before), _) => before.clone(),
                    // An absent map: put back "absent" for each key the patch sets, not a null
                    // for the whole map (which would delete what others add to it later).
                    (None, Json::Object(_)) => inverse_merge_patch(&json!({}), value),
                    (None, _) => Json::Null,
                };
                inverse.insert(key.clone(), restored);
            }
            Json::Object(inverse)
        }
        _ => current.clone(),
    }
}

/// The leaf fields a patch sets, with their values after, for the journal.
/// The fields that differ between an object before and after a write, as
/// `.spec.replicas: 3 -> 5`, leaving out what the server keeps for itself (resourceVersion,
/// managedFields, generation, status).
fn field_changes(before: &Json, after: &Json) -> String {
    const LIMIT: usize = 12;
    fn shown(value: Option<&Json>) -> String {
        value.map_or_else(|| "(none)".to_owned(), ToString::to_string)
    }
    fn walk(
        before: Option<&Json>,
        after: Option<&Json>,
        path: &mut Vec<String>,
        out: &mut Vec<String>,
    ) {
        if before == after {
            return;
        }
        let bookkeeping = matches!(
            path.iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .as_slice(),
            ["status"]
                | [
                    "metadata",
                    "resourceVersion"
                        | "managedFields"
                        | "generation"
                        | "uid"
                        | "creationTimestamp"
                ]
        );
        if bookkeeping {
            return;
        }
        match (before, after) {
            (Some(Json::Object(old)), Some(Json::Object(new))) => {
                let mut keys: Vec<&String> = old.keys().collect();
                keys.extend(new.keys().filter(|key| !old.contains_key(*key)));
                for key in keys {
                    path.push(key.clone());
                    walk(old.get(key), new.get(key), path, out);
                    path.pop();
                }
            }
            _ => out.push(format!(
                ".{}: {} -> {}",
                path.join("."),
                shown(before),
                shown(after)
            )),
        }
    }
    let mut out = Vec::new();
    walk(Some(before), Some(after), &mut Vec::new(), &mut out);
    match out.len() {
        0 => "no change".to_owned(),
        n if n > LIMIT => format!("{}, and {} more", out[..LIMIT].join(", "), n - LIMIT),
        _ => out.join(", "),
    }
}

fn has_condition(object: &Json, condition: &str) -> bool {
    object
        .pointer("/status/conditions")
        .and_then(Json::as_array)
        .is_some_and(|conditions| {
            conditions.iter().any(|c| {
                c.get("type").and_then(Json::as_str) == Some(condition)
                    && c.get("status").and_then(Json::as_str) == Some("True")
            })
        })
}

fn manifest_key(manifest: &Json, namespace: &str) -> Result<ObjectKey, String> {
    let field = |pointer: &str| {
        manifest
            .pointer(pointer)
            .and_then(Json::as_str)
            .map(str::to_owned)
    };
    let kind = field("/kind").ok_or("the manifest has no kind")?;
    Ok(ObjectKey {
        api_version: field("/apiVersion").ok_or("the manifest has no apiVersion")?,
        namespace: if is_cluster_scoped(&kind) {
            None
        } else {
            Some(field("/metadata/namespace").unwrap_or_else(|| namespace.to_owned()))
        },
        name: field("/metadata/name").ok_or("the manifest has no metadata.name")?,
        kind,
    })
}

/// Kinds that live outside namespaces.
pub fn is_cluster_scoped(kind: &str) -> bool {
    matches!(
        kind,
        "Node"
            | "Namespace"
            | "PersistentVolume"
            | "StorageClass"
            | "ClusterRole"
            | "ClusterRoleBinding"
            | "CustomResourceDefinition"
            | "ClusterIssuer"
            | "ClusterPolicy"
            | "ClusterSecretStore"
            | "ClusterPolicyReport"
            | "PriorityClass"
            | "ValidatingWebhookConfiguration"
            | "MutatingWebhookConfiguration"
    )
}
