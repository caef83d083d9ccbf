//! `forEach`: a step run once per item of a list. The list is read once, when the step
//! starts; a longer list than `maxItems` fails the step before any instance runs. Each
//! instance is a step of its own, `<id>[<key>]`, with its item in scope: it is journaled,
//! undone and resumed on its own. At most `parallelism` run at once; after a failure no new
//! one starts, and those in flight finish. The expansion is journaled, so a resumed run goes
//! on over the same items whatever the list reads by then.

use futures::stream::{FuturesUnordered, StreamExt as _};

use super::schedule::{Scheduler, Unit};
use super::*;

/// One instance of a `forEach` step: the step as it runs for one item.
#[derive(Debug)]
pub(super) struct Instance {
    /// The step with the instance's id (`<id>[<key>]`), no `forEach` and no gate (the gate is
    /// asked once, for all items).
    pub(super) spec: StepSpec,
    pub(super) item: Binding,
}

/// An instance that ended, for the scheduler to record (its report, undo state, partial
/// changes).
pub(super) struct Ended {
    pub(super) position: usize,
    pub(super) instance: Arc<Instance>,
    pub(super) status: StepStatus,
    pub(super) elapsed: Duration,
    /// `Some(undo)` when it completed; `None` when it failed or did not change anything.
    pub(super) completed: Option<Option<UndoState>>,
}

impl Run {
    /// Runs every instance of the `forEach` step at `position`, and says how the whole ended.
    pub(super) async fn fan_out(&self, position: usize) -> Finished {
        let step = &self.runbook().steps[position];
        let Some(for_each) = &step.for_each else {
            return Finished::Failed(StepError::Refused("not a forEach step".to_owned()));
        };
        self.emit(Event::StepStarted {
            step: step.id.clone(),
            action: step.action.keyword().to_owned(),
            summary: crate::render::action_summary(&self.plan, &step.action),
        });
        let items = match self.expansion(step, for_each).await {
            Ok(items) => items,
            Err(error) => return Finished::Failed(error),
        };
        let instances: Vec<Arc<Instance>> = items
            .into_iter()
            .map(|(key, value)| Arc::new(self.instance(step, for_each, &key, value)))
            .collect();
        let done_before: BTreeSet<&str> = self
            .options
            .resume
            .iter()
            .flat_map(|resume| {
                resume
                    .completed
                    .iter()
                    .map(|(id, _)| id.as_str())
                    .chain(resume.skipped.iter().map(String::as_str))
            })
            .collect();
        let mut waiting = instances
            .iter()
            .filter(|instance| !done_before.contains(instance.spec.id.as_str()))
            .cloned()
            .collect::<Vec<_>>()
            .into_iter();
        let mut running = FuturesUnordered::new();
        let mut failures = Vec::new();
        let mut ran = 0;
        loop {
            while running.len() < for_each.parallelism
                && failures.is_empty()
                && !self.interrupted()
                && self.draining().is_none()
                && !self.halted.load(std::sync::atomic::Ordering::SeqCst)
            {
                let Some(instance) = waiting.next() else {
                    break;
                };
                running.push(async move {
                    let started_at = tokio::time::Instant::now();
                    let finished = results::with_item(
                        Some(instance.item.clone()),
                        self.run_one(&instance.spec),
                    )
                    .await;
                    (instance, finished, started_at.elapsed())
                });
            }
            let Some((instance, finished, elapsed)) = running.next().await else {
                break;
            };
            ran += 1;
            if let Some(failure) = self.instance_ended(position, instance, finished, elapsed) {
                failures.push(failure);
            }
        }
        let left = waiting.len();
        let keys: Vec<&str> = instances
            .iter()
            .map(|instance| instance.spec.id.as_str())
            .collect();
        if !failures.is_empty() {
            return Finished::Failed(StepError::Refused(format!(
                "{} of its {} items failed ({}){}",
                failures.len(),
                instances.len(),
                failures.join("; "),
                if left > 0 {
                    format!("; {left} did not start")
                } else {
                    String::new()
                }
            )));
        }
        if left > 0 {
            // Stopped by an interrupt, a drain or the run's halt: the scheduler decides what
            // happens next.
            return Finished::Paused;
        }
        let summary = match instances.len() {
            0 => "the list was empty: nothing to do".to_owned(),
            count => format!(
                "{count} item{} ({}){}",
                if count == 1 { "" } else { "s" },
                keys.join(", "),
                if ran < count {
                    format!("; {} done before the run was resumed", count - ran)
                } else {
                    String::new()
                }
            ),
        };
        if self.options.dry_run {
            Finished::DryRun(summary)
        } else {
            actions::done(Some(summary), None)
        }
    }

    /// The step for one item: its id `<id>[<key>]`, no `forEach`, no gate.
    fn instance(&self, step: &StepSpec, for_each: &ForEach, key: &str, value: Json) -> Instance {
        Instance {
            spec: StepSpec {
                id: format!("{}[{key}]", step.id),
                for_each: None,
                confirm: None,
                ..step.clone()
            },
            item: Binding {
                name: for_each.name.clone(),
                value,
            },
        }
    }

    /// The items and their keys: journaled ones on resume, else the list read now, refused
    /// when it is not a list, is longer than `maxItems`, or two items have the same key.
    async fn expansion(
        &self,
        step: &StepSpec,
        for_each: &ForEach,
    ) -> Result<Vec<(String, Json)>, StepError> {
        let journaled = self
            .options
            .resume
            .as_ref()
            .and_then(|resume| resume.expansions.get(&step.id))
            .filter(|items| {
                !items
                    .iter()
                    .any(|(_, value)| value.to_string().contains(crate::redact::REDACTED))
            });
        if let Some(items) = journaled {
            return Ok(items.clone());
        }
        let list = self.eval(&for_each.list, None).await?;
        let list = rhai::serde::from_dynamic::<Json>(&list).map_err(StepError::from)?;
        let Json::Array(items) = list else {
            return Err(StepError::Expression(format!(
                "`forEach: {}` gave {}, not a list",
                for_each.list.source.trim(),
                crate::render::json_kind(&list)
            )));
        };
        if items.len() > for_each.max_items {
            return Err(StepError::Refused(format!(
                "`forEach: {}` gave {} items, more than `maxItems: {}`; no item was started (raise `maxItems` if that many is meant)",
                for_each.list.source.trim(),
                items.len(),
                for_each.max_items
            )));
        }
        let mut keyed: Vec<(String, Json)> = Vec::with_capacity(items.len());
        for (index, item) in items.into_iter().enumerate() {
            let key = self.key_of(for_each, &item, index).await?;
            if let Some(earlier) = keyed.iter().position(|(seen, _)| *seen == key) {
                return Err(StepError::Refused(format!(
                    "items {earlier} and {index} of `forEach` have the same key `{key}`; give the step a `key:` that tells them apart"
                )));
            }
            keyed.push((key, item));
        }
        let (keys, values): (Vec<String>, Vec<Json>) = keyed.iter().cloned().unzip();
        self.emit(Event::StepExpanded {
            step: step.id.clone(),
            keys,
            items: values,
        });
        Ok(keyed)
    }

    /// An item's key: the `key` expression's value, else its `metadata.name`, its `name`, or
    /// the item itself (a string or a number), else its position.
    async fn key_of(
        &self,
        for_each: &ForEach,
        item: &Json,
        index: usize,
    ) -> Result<String, StepError> {
        let text = |value: &Json| match value {
            Json::String(text) if !text.is_empty() => Some(text.clone()),
            Json::Number(number) => Some(number.to_string()),
            _ => None,
        };
        let Some(expression) = &for_each.key else {
            return Ok(item
                .pointer("/metadata/name")
                .and_then(text)
                .or_else(|| item.get("name").and_then(text))
                .or_else(|| text(item))
                .unwrap_or_else(|| index.to_string()));
        };
        let binding = Binding {
            name: for_each.name.clone(),
            value: item.clone(),
        };
        let value = results::with_item(Some(binding), self.eval(expression, None)).await?;
        let value = rhai::serde::from_dynamic::<Json>(&value).map_err(StepError::from)?;
        text(&value).ok_or_else(|| {
            StepError::Expression(format!(
                "`key: {}` gave {} for item {index}, not a string or a number",
                expression.source.trim(),
                crate::render::json_kind(&value)
            ))
        })
    }

    /// Journals how an instance ended and keeps it for the scheduler; its failure, if it
    /// failed, for the step's message.
    fn instance_ended(
        &self,
        position: usize,
        instance: Arc<Instance>,
        finished: Finished,
        elapsed: Duration,
    ) -> Option<String> {
        let step = &instance.spec;
        let (status, completed, failure) = match finished {
            Finished::Done { output, undo } => {
                self.finish_step(step, StepResult::Succeeded, output, None, elapsed);
                (StepStatus::Succeeded, Some(undo), None)
            }
            Finished::DryRun(output) => {
                self.finish_step(
                    step,
                    StepResult::DryRun,
                    Some(output.clone()),
                    None,
                    elapsed,
                );
                (StepStatus::DryRun(output), None, None)
            }
            Finished::Skipped(reason) => {
                self.record_result(&step.id, "skipped", Some(&reason), &Detail::default());
                (StepStatus::Skipped(reason), None, None)
            }
            Finished::Failed(error) => {
                self.finish_step(step, StepResult::Failed, None, Some(&error), elapsed);
                let failure = format!("`{}`: {error}", step.id);
                (StepStatus::Failed(error.to_string()), None, Some(failure))
            }
            Finished::Paused => return None,
        };
        self.fanned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Ended {
                position,
                instance,
                status,
                elapsed,
                completed,
            });
        failure
    }

    /// Records the instances that ended since last asked: completed ones to undo, failed ones
    /// as any failed step (a native change that may have half-happened is checked and undone).
    pub(super) async fn take_instances(&self, scheduler: &mut Scheduler, report: &mut RunReport) {
        let ended = std::mem::take(
            &mut *self
                .fanned
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for ended in ended {
            let failed = matches!(ended.status, StepStatus::Failed(_));
            report.instances.push(StepReport {
                id: ended.instance.spec.id.clone(),
                summary: report.steps[ended.position].summary.clone(),
                status: ended.status,
                duration: ended.elapsed,
            });
            let unit = Unit {
                position: ended.position,
                instance: Some(ended.instance),
            };
            match ended.completed {
                Some(undo) => scheduler.progress.completed.push((unit, undo)),
                None if failed => self.after_failed_mutation(scheduler, report, &unit).await,
                None => {}
            }
        }
    }

    /// The instance a journal names as done (`<id>[<key>]`), with its item as the journal
    /// recorded the expansion, for its undo on a resumed run.
    pub(super) fn resumed_instance(&self, id: &str) -> Option<Unit> {
        let (base, rest) = id.split_once('[')?;
        let key = rest.strip_suffix(']')?;
        let position = self.runbook().steps.iter().position(|s| s.id == base)?;
        let step = &self.runbook().steps[position];
        let for_each = step.for_each.as_ref()?;
        let value = self
            .options
            .resume
            .as_ref()
            .and_then(|resume| resume.expansions.get(base))
            .and_then(|items| items.iter().find(|(k, _)| k == key))
            .map(|(_, value)| value.clone())
            .unwrap_or(Json::Null);
        Some(Unit {
            position,
            instance: Some(Arc::new(self.instance(step, for_each, key, value))),
        })
    }
}
