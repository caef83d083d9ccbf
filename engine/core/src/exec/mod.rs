//! The executor: drives a compiled [`Plan`] through the [`Effects`] boundary.
//!
//! Order of a run: journal the start; check every precondition (any that fails ends the run,
//! having changed nothing); run steps in DAG order, independent ones in parallel up to a
//! bound, each with its `when`, `timeout` and `retries`; ask at confirmation gates. When a
//! step fails for good: start nothing new, let steps in flight finish, undo every completed
//! step in reverse order of completion (native actions from the state they captured before
//! acting), then the rollback. Every event is journaled (intent before each mutation) and
//! reported. Facts are read lazily, cached for the run, and forgotten after any mutation.

mod actions;
mod eval;
mod facts;
mod gate;
mod interrupt;
mod report;
mod rollback;
mod secrets;
mod step;
mod undo;

pub use actions::inverse_merge_patch;
pub use interrupt::Interrupt;
pub use report::{RunReport, StepReport, StepStatus, UndoReport};
pub use undo::UndoRecord;

use actions::command_result;
use eval::is_cluster_scoped;
use gate::GateRefused;
use rollback::rollback_summary;
use step::Finished;
use undo::UndoState;

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
