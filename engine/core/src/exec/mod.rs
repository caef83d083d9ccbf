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
mod error;
mod eval;
mod facts;
mod for_each;
mod gate;
mod interrupt;
mod report;
mod results;
mod rollback;
mod schedule;
mod secrets;
mod step;
mod undo;

pub use actions::{inverse_merge_patch, panic_message};
pub use error::StepError;
pub use interrupt::Interrupt;
pub use report::{RunReport, StepReport, StepStatus, UndoReport};
pub use undo::UndoRecord;

use crate::kinds::is_cluster_scoped;
use actions::{command_failure, outside_allowed};
use gate::Gate;
use results::{Binding, Detail};
use schedule::{Halt, Progress};
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
use crate::expr::{Budget, Expression, Template, TemplatePart};
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
    /// Raised by Ctrl-C or a termination: stop scheduling, cancel what is in flight, then ask
    /// whether to roll back (Ctrl-C) or stop resumable (a termination).
    pub interrupt: Option<Arc<Interrupt>>,
    /// `--rollback-on-interrupt`: an interrupt undoes the completed steps and rolls back
    /// without asking. Without it, nothing is undone unless a human at the terminal says so:
    /// `yes` answers gates, never this.
    pub roll_back_on_interrupt: bool,
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
    /// What `capture` steps captured before the run stopped (`vars`).
    pub vars: serde_json::Map<String, Json>,
    /// The results of the steps that ended before the run stopped (`steps.<id>`).
    pub results: serde_json::Map<String, Json>,
    /// The items each `forEach` step expanded to, with their keys: a resumed fan-out goes on
    /// over the same items, whatever the list reads now.
    pub expansions: BTreeMap<String, Vec<(String, Json)>>,
}

impl Resume {
    /// Where a run stands from its journal's state, with the steps taken as done (those the
    /// journal says, and those a human or the cluster said took effect) and whether to roll
    /// back instead of going on.
    pub fn from_journal(
        state: &crate::resume::JournalState,
        completed: Vec<(String, Option<UndoRecord>)>,
        roll_back: bool,
    ) -> Self {
        Self {
            completed,
            skipped: state.skipped.clone(),
            undone: state.undone.clone(),
            roll_back,
            vars: state.vars.clone(),
            results: state.results.clone(),
            expansions: state.expansions.clone(),
        }
    }
}

struct Run {
    plan: Arc<Plan>,
    effects: Effects,
    options: RunOptions,
    /// Shared with the runbooks this run calls, and with the one that called it.
    redactor: Arc<Redactor>,
    facts: facts::FactCache,
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
    /// `vars`: what `capture` steps captured, once.
    vars: Mutex<rhai::Map>,
    /// `steps`: each step's result so far.
    results: Mutex<rhai::Map>,
    /// What a step printed beyond its summary, by step id, until its end is journaled.
    details: Mutex<HashMap<String, Detail>>,
    /// `forEach` instances that ended, by the position of their step, until the scheduler
    /// takes them (as each ends, so an interrupt mid-fan-out still undoes the finished ones).
    fanned: Mutex<Vec<for_each::Ended>>,
    /// Set once the scheduler halted (a failure, a refused gate, a broken journal): a
    /// `forEach` step in flight starts no more instances, as the run starts no more steps.
    halted: std::sync::atomic::AtomicBool,
}

/// Runs `plan` to the end and reports how it went.
pub async fn execute(plan: Arc<Plan>, effects: Effects, options: RunOptions) -> RunReport {
    execute_with(plan, effects, options, Arc::new(Redactor::new())).await
}

/// [`execute`] with the redactor of the run that called this one: the secrets either run
/// learns are removed from what both of them write (a secret passed to a param the called
/// runbook does not declare secret, a Secret the called runbook reads).
async fn execute_with(
    plan: Arc<Plan>,
    effects: Effects,
    options: RunOptions,
    redactor: Arc<Redactor>,
) -> RunReport {
    for param in &plan.runbook.params {
        if plan.bindings.is_secret(param) {
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
        facts: facts::FactCache::default(),
        captured: Mutex::new(HashMap::new()),
        intended: Mutex::new(BTreeSet::new()),
        written: Mutex::new(HashMap::new()),
        journal_error: Mutex::new(None),
        vars: Mutex::new(rhai::Map::new()),
        results: Mutex::new(rhai::Map::new()),
        details: Mutex::new(HashMap::new()),
        fanned: Mutex::new(Vec::new()),
        halted: std::sync::atomic::AtomicBool::new(false),
    });
    *run.results_lock() = results::initial_results(&run.plan.runbook);
    run.restore_results();
    run.execute().await
}

/// [`execute_with`] behind a boxed `Send` future: a runbook that calls another runs a plan
/// inside a plan, and the compiler needs the recursion to have a named type.
fn execute_boxed(
    plan: Arc<Plan>,
    effects: Effects,
    options: RunOptions,
    redactor: Arc<Redactor>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = RunReport> + Send>> {
    Box::pin(execute_with(plan, effects, options, redactor))
}

impl Run {
    fn runbook(&self) -> &Runbook {
        &self.plan.runbook
    }

    /// Journals and reports one event, redacted. A journal that cannot be written stops the
    /// run before its next mutation, and the report says the journal is incomplete.
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
                self.journal_failed(format!(
                    "cannot write the journal {}: {error}",
                    journal.path().display()
                ));
            }
        }
        self.effects.reporter.record(&record);
    }

    /// Keeps the first reason the journal is missing records; later ones follow from it.
    fn journal_failed(&self, message: String) {
        let mut slot = self
            .journal_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if slot.is_none() {
            tracing::error!(run = %self.options.run_id, error = %message, "The journal is missing a record; the run stops before its next change.");
            *slot = Some(message);
        }
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

    /// The outline of a run: start, preconditions, steps in the plan's order, then what the
    /// way they ended calls for (stop, pause, or undo and roll back).
    async fn execute(self: Arc<Self>) -> RunReport {
        let mut report = self.start();
        if let Err(message) = self.check_preconditions().await {
            return self.finish(report, Outcome::PreconditionFailed, message);
        }
        let progress = self.run_steps(&mut report).await;
        let failure = match self.conclude(&progress).await {
            Conclusion::Finished(outcome, message) => return self.finish(report, outcome, message),
            Conclusion::Compensate(failure) => failure,
        };
        let compensated = self.compensate(&mut report, &progress).await;
        let rolled_back = self.roll_back(&mut report, &failure).await;
        let outcome = if !(compensated && rolled_back) {
            Outcome::RollbackFailed
        } else if progress.halt == Some(Halt::Interrupted) {
            Outcome::Stopped
        } else {
            Outcome::RolledBack
        };
        let message = if outcome == Outcome::RollbackFailed {
            format!("{failure}; the undo or rollback failed: a human must act")
        } else {
            format!("{failure}; completed steps were undone and the rollback ran")
        };
        self.finish(report, outcome, message)
    }

    /// Journals the start (or the resumption) and makes the report every step starts in.
    fn start(&self) -> RunReport {
        let runbook = &self.plan.runbook;
        if let Some(resume) = &self.options.resume {
            self.emit(Event::RunResumed {
                completed: resume.completed.iter().map(|(id, _)| id.clone()).collect(),
                roll_back: resume.roll_back,
            });
        } else {
            let params: serde_json::Map<String, Json> = runbook
                .params
                .iter()
                .filter_map(|param| {
                    let value = self.plan.bindings.values.get(&param.name)?;
                    Some((
                        param.name.clone(),
                        if self.plan.bindings.is_secret(param) {
                            json!(crate::redact::REDACTED)
                        } else {
                            value.to_json()
                        },
                    ))
                })
                .collect();
            self.emit(Event::RunStarted {
                runbook: runbook.name.clone(),
                file: runbook.source.path().display().to_string(),
                digest: self.options.digest.clone(),
                params: Json::Object(params),
                trigger: self.plan.triggered_by.as_ref().map(|t| {
                    json!({"alert": t.alert.name(), "fingerprint": t.alert.fingerprint, "labels": t.alert.labels,
                        "startsAt": t.alert.starts_at, "receiver": t.receiver, "groupKey": t.group_key})
                }),
                dry_run: self.options.dry_run,
                cluster: self.options.cluster.clone(),
            });
        }
        RunReport {
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
            instances: Vec::new(),
            undos: Vec::new(),
            rollback: None,
            must_fix: Vec::new(),
            journal_error: None,
        }
    }

    /// Evaluates every precondition, so the journal says which held and which did not. A
    /// resumed run has changed things already; its preconditions held when it started.
    async fn check_preconditions(&self) -> Result<(), String> {
        if self.options.resume.is_some() {
            return Ok(());
        }
        let mut failed_checks = Vec::new();
        for (index, check) in self.runbook().preconditions.iter().enumerate() {
            let (held, error) = match self.eval_bool(&check.expr, None).await {
                Ok(held) => (held, None),
                Err(error) => (false, Some(error.to_string())),
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
        if failed_checks.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "precondition did not hold: {}; nothing was changed",
                failed_checks.join("; ")
            ))
        }
    }

    /// What the way the steps ended calls for. The precedence of the ways a run can halt is
    /// [`Halt::raise`]'s; this decides, from the one that won, whether the run stops as it is
    /// or must be undone and rolled back (with the failure to report).
    async fn conclude(&self, progress: &Progress) -> Conclusion {
        let done = progress.done_ids(self.runbook());
        let completed = |none: &str| {
            if done.is_empty() {
                none.to_owned()
            } else {
                format!("completed: {}", done.join(", "))
            }
        };
        let draining = self.draining();
        match &progress.halt {
            // A drain stops the run where it stood, to be resumed: nothing is undone.
            None | Some(Halt::Refused(_)) if draining.is_some() && progress.steps_left => {
                let by = draining.unwrap_or_default();
                self.emit(Event::Interrupted {
                    roll_back: false,
                    by: by.clone(),
                });
                Conclusion::Finished(
                    Outcome::Stopped,
                    format!(
                        "paused ({by}); {}; nothing was undone; `runbook resume {}` goes on from here",
                        completed("no step had completed"),
                        self.options.run_id
                    ),
                )
            }
            Some(Halt::Interrupted) => {
                if self
                    .ask_to_roll_back(progress, &completed("no step had completed"))
                    .await
                {
                    Conclusion::Compensate(format!("interrupted by {}", self.interrupted_by()))
                } else {
                    Conclusion::Finished(
                        Outcome::Stopped,
                        format!(
                            "interrupted by {}; {}; nothing was undone; `runbook resume {}` goes on from here",
                            self.interrupted_by(),
                            completed("no step had completed"),
                            self.options.run_id
                        ),
                    )
                }
            }
            Some(Halt::Refused(reason)) => Conclusion::Finished(
                Outcome::Stopped,
                format!(
                    "{reason}; {}; nothing was undone",
                    completed("no step had run")
                ),
            ),
            None => Conclusion::Finished(
                Outcome::Succeeded,
                if self.options.dry_run {
                    "dry-run: the run would proceed; nothing was changed".to_owned()
                } else {
                    "all steps succeeded".to_owned()
                },
            ),
            Some(Halt::Failed(failure)) if self.options.dry_run => Conclusion::Finished(
                Outcome::Failed,
                format!("dry-run: {failure}; nothing was changed"),
            ),
            Some(Halt::Failed(failure)) => Conclusion::Compensate(failure.clone()),
        }
    }

    /// After an interrupt: decides whether to undo the completed steps and roll back, asking
    /// a human only for a Ctrl-C, and journals the decision and who made it. The precedence:
    /// a drain, a dry-run or nothing to undo never roll back; `--rollback-on-interrupt` always
    /// does; a termination never asks; otherwise the prompter asks (no terminal: no).
    async fn ask_to_roll_back(&self, progress: &Progress, detail: &str) -> bool {
        let terminated = self
            .options
            .interrupt
            .as_ref()
            .and_then(|interrupt| interrupt.terminated());
        let (roll_back, by) = if let Some(by) = self.draining() {
            (false, format!("{by}; steps in flight cancelled"))
        } else if self.options.dry_run {
            (false, "dry-run (nothing to undo)".to_owned())
        } else if progress.completed.is_empty() {
            (false, "nothing to undo".to_owned())
        } else if self.options.roll_back_on_interrupt {
            (true, "--rollback-on-interrupt".to_owned())
        } else if let Some(by) = terminated {
            (false, format!("{by} (nobody to ask: nothing undone)"))
        } else {
            match self
                .effects
                .prompter
                .confirm(
                    "interrupt",
                    "Interrupted. Undo the completed steps and roll back?",
                    detail,
                )
                .await
            {
                Answer::Yes => (true, "terminal".to_owned()),
                Answer::No => (false, "terminal".to_owned()),
                Answer::NoTerminal | Answer::Paused => {
                    (false, "none (no terminal: nothing undone)".to_owned())
                }
            }
        };
        self.emit(Event::Interrupted { roll_back, by });
        roll_back
    }

    /// What interrupted the run, for the failure its rollback reports.
    fn interrupted_by(&self) -> String {
        self.options
            .interrupt
            .as_ref()
            .and_then(|interrupt| interrupt.terminated())
            .unwrap_or_else(|| "Ctrl-C".to_owned())
    }
}

/// What the way the steps ended calls for.
enum Conclusion {
    /// The run ends here, as it is.
    Finished(Outcome, String),
    /// Undo the completed steps and roll back; the failure is reported.
    Compensate(String),
}
