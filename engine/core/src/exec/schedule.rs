//! Scheduling: which steps may start, read from the compiled plan's graph.
//!
//! The executor walks `Plan.graph` (its `Order` edges between steps), the same DAG that `plan`
//! and `graph` show a reviewer, so the plan that was approved is by construction the plan that
//! runs. Each step waits for a count of unfinished dependencies; a finished (or skipped) step
//! releases its dependants into the ready set, which is taken in file order. Independent steps
//! run in parallel up to the run's bound.

use petgraph::visit::EdgeRef;

use crate::compile::{Dependency, PlanNode};

use super::*;

/// The steps' dependencies, and which steps are ready to start.
pub(super) struct Schedule {
    /// For each step (by position), the steps that wait for it.
    dependants: Vec<Vec<usize>>,
    /// For each step, how many of its dependencies have not finished.
    remaining: Vec<usize>,
    ready: BTreeSet<usize>,
}

impl Schedule {
    /// The schedule of `plan`'s steps, of which those marked in `done` already finished (a
    /// resumed run): what is left waits only on steps not done.
    pub(super) fn new(plan: &Plan, done: &[bool]) -> Self {
        let steps = &plan.runbook.steps;
        let position_of = |index: usize| steps.iter().position(|step| step.index == index);
        let mut dependants: Vec<Vec<usize>> = vec![Vec::new(); steps.len()];
        let mut remaining: Vec<usize> = vec![0; steps.len()];
        for edge in plan.graph.edge_references() {
            if *edge.weight() != Dependency::Order {
                continue;
            }
            let (PlanNode::Step(from), PlanNode::Step(to)) =
                (&plan.graph[edge.source()], &plan.graph[edge.target()])
            else {
                continue;
            };
            let (Some(from), Some(to)) = (position_of(*from), position_of(*to)) else {
                continue;
            };
            // Done steps have released their dependants already; they must not be again.
            if done.get(from).copied().unwrap_or(false) {
                continue;
            }
            dependants[from].push(to);
            remaining[to] += 1;
        }
        let ready = (0..steps.len())
            .filter(|position| !done.get(*position).copied().unwrap_or(false))
            .filter(|position| remaining[*position] == 0)
            .collect();
        Self {
            dependants,
            remaining,
            ready,
        }
    }

    /// The first ready step in file order, taken out of the ready set.
    pub(super) fn take(&mut self) -> Option<usize> {
        self.ready.pop_first()
    }

    /// Puts back a step that was taken but could not start (a drain, a paused gate).
    pub(super) fn put_back(&mut self, position: usize) {
        self.ready.insert(position);
    }

    /// A step finished: its dependants have one dependency fewer to wait for.
    pub(super) fn release(&mut self, position: usize) {
        for dependant in &self.dependants[position] {
            self.remaining[*dependant] -= 1;
            if self.remaining[*dependant] == 0 {
                self.ready.insert(*dependant);
            }
        }
    }

    /// Whether steps are ready that never started (the run stopped before them).
    pub(super) fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }
}

/// Why a run stopped starting steps. Several may happen in one run (a step fails, then Ctrl-C
/// is pressed while another is in flight); [`Halt::raise`] keeps the one that decides the
/// outcome, so the precedence is written once, here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Halt {
    /// A gate was refused, or there was nobody to ask: stop, undo nothing.
    Refused(String),
    /// A step failed for good, the journal broke, or a resumed run was asked to roll back:
    /// undo and roll back.
    Failed(String),
    /// Ctrl-C: cancel what is in flight, then ask whether to roll back.
    Interrupted,
}

impl Halt {
    /// Higher wins: an interruption decides over a failure (the human is asked), and a failure
    /// over a refused gate (something already went wrong and must be undone).
    fn rank(&self) -> u8 {
        match self {
            Self::Refused(_) => 1,
            Self::Failed(_) => 2,
            Self::Interrupted => 3,
        }
    }

    /// Records `new` in `slot` unless what is there already decides over it; of two of the
    /// same kind, the first is kept (the first failure is the cause).
    pub(super) fn raise(slot: &mut Option<Self>, new: Self) {
        if slot.as_ref().is_none_or(|old| new.rank() > old.rank()) {
            *slot = Some(new);
        }
    }
}

/// What completes and is undone: a step, or one instance of a `forEach` step.
#[derive(Clone, Debug)]
pub(super) struct Unit {
    /// The step's position in the runbook.
    pub(super) position: usize,
    pub(super) instance: Option<Arc<for_each::Instance>>,
}

impl Unit {
    pub(super) fn step(position: usize) -> Self {
        Self {
            position,
            instance: None,
        }
    }

    /// The step as it ran: the runbook's, or the instance's (`<id>[<key>]`).
    pub(super) fn spec<'a>(&'a self, runbook: &'a Runbook) -> &'a StepSpec {
        match &self.instance {
            Some(instance) => &instance.spec,
            None => &runbook.steps[self.position],
        }
    }

    /// The item its expressions read, for an instance.
    pub(super) fn item(&self) -> Option<Binding> {
        self.instance.as_ref().map(|instance| instance.item.clone())
    }
}

/// How the scheduling of steps ended: what completed (to undo), and why it stopped.
pub(super) struct Progress {
    /// Completed steps (and `forEach` instances) in completion order, with their undo state.
    pub(super) completed: Vec<(Unit, Option<UndoState>)>,
    /// Failed steps (by id, instances too) whose intent was journaled: undone only if the
    /// object really changed.
    pub(super) partial: BTreeSet<String>,
    pub(super) halt: Option<Halt>,
    /// Whether steps were left that never started.
    pub(super) steps_left: bool,
}

impl Progress {
    /// The ids of the completed steps, for the messages of a run that stops.
    pub(super) fn done_ids<'a>(&'a self, runbook: &'a Runbook) -> Vec<&'a str> {
        self.completed
            .iter()
            .map(|(unit, _)| unit.spec(runbook).id.as_str())
            .collect()
    }
}

/// The scheduler's state while steps run.
pub(super) struct Scheduler {
    schedule: Schedule,
    running: tokio::task::JoinSet<(usize, Finished, Duration)>,
    in_flight: BTreeSet<usize>,
    pub(super) progress: Progress,
}

impl Run {
    /// Runs the steps in the plan's order until all finished or the run halted.
    pub(super) async fn run_steps(self: &Arc<Self>, report: &mut RunReport) -> Progress {
        let mut scheduler = self.resumed_schedule(report);
        let parallelism = self.options.parallelism.max(1);
        loop {
            if scheduler.progress.halt.is_none() {
                self.start_ready(&mut scheduler, report, parallelism).await;
            }
            self.halted.store(
                scheduler.progress.halt.is_some(),
                std::sync::atomic::Ordering::SeqCst,
            );
            if scheduler.running.is_empty() {
                break;
            }
            let interrupt = self.options.interrupt.clone();
            let already = scheduler.progress.halt == Some(Halt::Interrupted);
            let interruption = async {
                match &interrupt {
                    Some(interrupt) if !already => interrupt.wait().await,
                    _ => std::future::pending().await,
                }
            };
            let joined = tokio::select! {
                biased;
                () = interruption => {
                    self.cancel_in_flight(&mut scheduler, report).await;
                    continue;
                }
                joined = scheduler.running.join_next() => joined,
            };
            let Some(joined) = joined else {
                break;
            };
            match joined {
                Ok((position, finished, elapsed)) => {
                    self.step_ended(&mut scheduler, report, position, finished, elapsed)
                        .await;
                }
                Err(error) => Halt::raise(
                    &mut scheduler.progress.halt,
                    Halt::Failed(format!("a step task failed: {error}")),
                ),
            }
        }
        // Ctrl-C while nothing was in flight (at a gate, between steps) stopped the scheduling
        // above without going through the cancellation.
        if self.interrupted() && scheduler.schedule.has_ready() {
            Halt::raise(&mut scheduler.progress.halt, Halt::Interrupted);
        }
        scheduler.progress.steps_left = scheduler.schedule.has_ready();
        scheduler.progress
    }

    /// The schedule at the start: every step for a new run; for a resumed one, the steps not
    /// done, with the done ones' undo states ready for a rollback.
    fn resumed_schedule(&self, report: &mut RunReport) -> Scheduler {
        let steps = &self.runbook().steps;
        let mut done = vec![false; steps.len()];
        let mut completed = Vec::new();
        let mut halt = None;
        if let Some(resume) = &self.options.resume {
            let position_of = |id: &str| steps.iter().position(|step| step.id == id);
            for id in resume
                .completed
                .iter()
                .map(|(id, _)| id)
                .chain(resume.skipped.iter())
            {
                if let Some(position) = position_of(id) {
                    done[position] = true;
                    report.steps[position].status = if resume.skipped.contains(id) {
                        StepStatus::Skipped("skipped before the run was resumed".to_owned())
                    } else {
                        StepStatus::Succeeded
                    };
                }
            }
            for (id, record) in &resume.completed {
                if resume.undone.contains(id) {
                    continue;
                }
                let unit = match position_of(id) {
                    // A `forEach` step is undone by its instances, each journaled on its own.
                    Some(position) if steps[position].for_each.is_some() => None,
                    Some(position) => Some(Unit::step(position)),
                    None => self.resumed_instance(id),
                };
                if let Some(unit) = unit {
                    let step = unit.spec(self.runbook());
                    let undo = record
                        .as_ref()
                        .and_then(|record| UndoState::from_record(record, step))
                        .or_else(|| match &step.undo {
                            UndoSpec::Declared(action) => Some(UndoState::Declared(action.clone())),
                            _ => None,
                        });
                    completed.push((unit, undo));
                }
            }
            if resume.roll_back {
                halt = Some(Halt::Failed(
                    "rolled back on request when the run was resumed".to_owned(),
                ));
            }
        }
        Scheduler {
            schedule: Schedule::new(&self.plan, &done),
            running: tokio::task::JoinSet::new(),
            in_flight: BTreeSet::new(),
            progress: Progress {
                completed,
                partial: BTreeSet::new(),
                halt,
                steps_left: false,
            },
        }
    }

    /// Starts ready steps up to the bound, asking at their gates first. Stops starting when
    /// the journal broke, on Ctrl-C or a drain, or at a refused or paused gate.
    async fn start_ready(
        self: &Arc<Self>,
        scheduler: &mut Scheduler,
        report: &mut RunReport,
        parallelism: usize,
    ) {
        while scheduler.running.len() < parallelism {
            let Some(position) = scheduler.schedule.take() else {
                break;
            };
            let step = &self.runbook().steps[position];
            if let Some(message) = self.journal_broken() {
                Halt::raise(&mut scheduler.progress.halt, Halt::Failed(message));
                break;
            }
            if self.interrupted() || self.draining().is_some() {
                scheduler.schedule.put_back(position);
                break;
            }
            // A strict need is asked of every step, gated or not, before anything of it runs
            // (a `forEach` step's list is not read, its instances are not asked again).
            if let Some(reason) = self.unmet_need(step) {
                self.emit(Event::StepSkipped {
                    step: step.id.clone(),
                    reason: reason.clone(),
                });
                self.skipped_before_start(scheduler, report, position, reason);
                continue;
            }
            if step.confirm.is_some() {
                match self.pass_gate(step).await {
                    GatePassage::Skipped(reason) => {
                        self.skipped_before_start(scheduler, report, position, reason);
                        continue;
                    }
                    GatePassage::Open => {}
                    GatePassage::Refused(reason) => {
                        Halt::raise(&mut scheduler.progress.halt, Halt::Refused(reason));
                        break;
                    }
                    GatePassage::Paused => {
                        scheduler.schedule.put_back(position);
                        break;
                    }
                }
                if self.interrupted() || self.draining().is_some() {
                    scheduler.schedule.put_back(position);
                    break;
                }
            }
            let run = self.clone();
            scheduler.in_flight.insert(position);
            scheduler.running.spawn(async move {
                let started_at = tokio::time::Instant::now();
                let finished = run.run_step(position).await;
                (position, finished, started_at.elapsed())
            });
        }
    }

    /// A step skipped before it was started (a strict need, its `when` before its gate): its
    /// result says so and its dependants are released.
    fn skipped_before_start(
        &self,
        scheduler: &mut Scheduler,
        report: &mut RunReport,
        position: usize,
        reason: String,
    ) {
        let step = &self.runbook().steps[position];
        self.record_result(&step.id, "skipped", Some(&reason), &Detail::default());
        report.steps[position].status = StepStatus::Skipped(reason);
        scheduler.schedule.release(position);
    }

    /// A step whose `when` skips it asks nobody; otherwise its gate is asked.
    async fn pass_gate(&self, step: &StepSpec) -> GatePassage {
        // A `forEach` step's `when` reads its item: it is asked of each instance.
        if let Some(when) = step.when.as_ref().filter(|_| step.for_each.is_none()) {
            if let Ok(false) = self.eval_bool(when, None).await {
                let reason = format!("`when: {}` was false", when.source.trim());
                self.emit(Event::StepSkipped {
                    step: step.id.clone(),
                    reason: reason.clone(),
                });
                return GatePassage::Skipped(reason);
            }
        }
        let gate = self.gate(step).await;
        if gate == Gate::Paused {
            return GatePassage::Paused;
        }
        match Self::refusal(&gate, step) {
            Some(reason) => GatePassage::Refused(reason),
            None => GatePassage::Open,
        }
    }

    /// Ctrl-C: stop scheduling and cancel what is in flight. A step cancelled after its intent
    /// was journaled may have half-happened.
    async fn cancel_in_flight(&self, scheduler: &mut Scheduler, report: &mut RunReport) {
        scheduler.running.abort_all();
        while scheduler.running.join_next().await.is_some() {}
        // Instances of a fan-out that ended before the interrupt are undone like steps.
        self.take_instances(scheduler, report).await;
        for position in std::mem::take(&mut scheduler.in_flight) {
            let step = &self.runbook().steps[position];
            report.steps[position].status = StepStatus::Failed("interrupted".to_owned());
            self.finish_step(
                step,
                StepResult::Failed,
                None,
                Some(&StepError::Interrupted),
                Duration::ZERO,
            );
            if step.action.mutates(step.readonly) && !self.options.dry_run {
                report.must_fix.push(format!(
                    "step `{}` ({}) was interrupted while running: check whether it took effect",
                    step.id, report.steps[position].summary
                ));
            }
        }
        Halt::raise(&mut scheduler.progress.halt, Halt::Interrupted);
    }

    /// Records how a step ended and releases its dependants, or halts the run on a failure.
    async fn step_ended(
        &self,
        scheduler: &mut Scheduler,
        report: &mut RunReport,
        position: usize,
        finished: Finished,
        elapsed: Duration,
    ) {
        scheduler.in_flight.remove(&position);
        let step = &self.runbook().steps[position];
        report.steps[position].duration = elapsed;
        self.take_instances(scheduler, report).await;
        match finished {
            Finished::Done { output, undo } => {
                scheduler.schedule.release(position);
                report.steps[position].status = StepStatus::Succeeded;
                // A fan-out's instances were recorded, each with its undo, as they ended.
                if step.for_each.is_none() {
                    scheduler
                        .progress
                        .completed
                        .push((Unit::step(position), undo));
                }
                self.finish_step(step, StepResult::Succeeded, output, None, elapsed);
            }
            Finished::Skipped(reason) => {
                scheduler.schedule.release(position);
                self.record_result(&step.id, "skipped", Some(&reason), &Detail::default());
                report.steps[position].status = StepStatus::Skipped(reason);
            }
            Finished::Paused => {
                // Taken again on resume; its finished instances are not run again.
                scheduler.schedule.put_back(position);
            }
            Finished::DryRun(output) => {
                scheduler.schedule.release(position);
                report.steps[position].status = StepStatus::DryRun(output.clone());
                self.finish_step(step, StepResult::DryRun, Some(output), None, elapsed);
            }
            Finished::Failed(error) => {
                report.steps[position].status = StepStatus::Failed(error.to_string());
                self.finish_step(step, StepResult::Failed, None, Some(&error), elapsed);
                if step.for_each.is_none() {
                    self.after_failed_mutation(scheduler, report, &Unit::step(position))
                        .await;
                }
                Halt::raise(
                    &mut scheduler.progress.halt,
                    Halt::Failed(format!("step `{}` failed: {error}", step.id)),
                );
            }
        }
    }

    /// A failed mutation may have half-happened: what it read is stale, and once its intent
    /// was journaled, part of it may have taken effect (a drain that cordoned and evicted some
    /// pods). A native undo restores the state captured before it acted, so it is safe to
    /// apply; anything else is named for a human.
    pub(super) async fn after_failed_mutation(
        &self,
        scheduler: &mut Scheduler,
        report: &mut RunReport,
        unit: &Unit,
    ) {
        let position = unit.position;
        let step = unit.spec(self.runbook());
        if !step.action.mutates(step.readonly) {
            return;
        }
        self.forget_all_facts().await;
        let intended = self
            .intended
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&step.id);
        if !intended || self.options.dry_run {
            return;
        }
        let captured = self.captured_lock().get(&step.id).cloned();
        match captured {
            Some(state @ UndoState::Native(_)) => {
                scheduler.progress.partial.insert(step.id.clone());
                scheduler.progress.completed.push((unit.clone(), Some(state)));
            }
            _ => report.must_fix.push(format!(
                "step `{}` ({}) failed after it began to change the system: check whether part of it took effect",
                step.id, report.steps[position].summary
            )),
        }
    }
}

/// What a gate (with the step's `when` before it) decided.
enum GatePassage {
    Open,
    /// The step's `when` was false: skipped, nobody asked.
    Skipped(String),
    Refused(String),
    /// Left unanswered while the run drains.
    Paused,
}
