//! Undo: the state a step captured before it acted, and putting it back.

use super::*;

/// What a completed step needs for its undo, captured before it acted: a native action's
/// inverse (exactly what the journal records), or the runbook's declared undo.
#[derive(Clone, Debug)]
pub(super) enum UndoState {
    /// Never `UndoRecord::Declared`.
    Native(UndoRecord),
    Declared(Box<Action>),
}

impl UndoState {
    pub(super) fn describe(&self) -> String {
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
    pub(super) fn record(&self) -> UndoRecord {
        match self {
            Self::Native(record) => record.clone(),
            Self::Declared(_) => UndoRecord::Declared,
        }
    }

    pub(super) fn from_record(record: &UndoRecord, step: &StepSpec) -> Option<Self> {
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

impl Run {
    /// Undoes the completed steps, newest first: native actions from the state they captured
    /// before acting, declared undos as written. A step that failed part-way is undone only if
    /// its object really changed. What cannot be undone is named for a human. Whether every
    /// undo succeeded.
    pub(super) async fn compensate(&self, report: &mut RunReport, progress: &Progress) -> bool {
        let mut succeeded = true;
        for (unit, undo) in progress.completed.iter().rev() {
            let step = unit.spec(self.runbook());
            let summary = &report.steps[unit.position].summary.clone();
            let state = match (&step.undo, undo) {
                (_, None) if matches!(step.action, Action::Call { .. }) => {
                    report.must_fix.push(format!(
                        "step `{}` ({summary}) ran another runbook, which this run does not undo: check it, and roll that run back if needed",
                        step.id
                    ));
                    continue;
                }
                (UndoSpec::Native(_), None) => {
                    report.must_fix.push(format!(
                        "step `{}` ({summary}) has no recorded undo state (it held secrets, or was lost): restore it by hand",
                        step.id
                    ));
                    continue;
                }
                (UndoSpec::Missing, _) if step.action.mutates(step.readonly) => {
                    report.must_fix.push(format!(
                        "step `{}` ({summary}) changed the system and has no undo: check it by hand",
                        step.id
                    ));
                    continue;
                }
                (_, Some(state)) => state,
                _ => continue,
            };
            // A resumed instance's item is the journal's, where a secret is the placeholder: a
            // declared undo would write the placeholder in the secret's place.
            let redacted_item = unit
                .item()
                .is_some_and(|item| item.value.to_string().contains(crate::redact::REDACTED));
            if redacted_item && matches!(state, UndoState::Declared(_)) {
                report.must_fix.push(format!(
                    "step `{}` ({summary}) ran with an item that held a secret, which the journal keeps redacted, so its undo cannot run: undo it by hand",
                    step.id
                ));
                continue;
            }
            if progress.partial.contains(&step.id) {
                match self.unchanged(state).await {
                    Ok(true) => continue,
                    Ok(false) => {}
                    Err(error) => {
                        report.must_fix.push(format!(
                            "step `{}` ({summary}) failed, and whether it changed anything cannot be checked: {error}",
                            step.id
                        ));
                        continue;
                    }
                }
            }
            succeeded &= results::with_item(unit.item(), self.undo_step(report, step, state)).await;
        }
        succeeded
    }

    /// Undoes one step, journaled; whether it succeeded.
    async fn undo_step(&self, report: &mut RunReport, step: &StepSpec, state: &UndoState) -> bool {
        let summary = match state {
            UndoState::Declared(action) => crate::render::action_summary(&self.plan, action),
            other => other.describe(),
        };
        self.emit(Event::UndoStarted {
            step: step.id.clone(),
            summary: summary.clone(),
        });
        let result = self.undo(state).await.map_err(|error| error.to_string());
        self.forget_all_facts().await;
        self.emit(Event::UndoFinished {
            step: step.id.clone(),
            succeeded: result.is_ok(),
            error: result.as_ref().err().cloned(),
        });
        if let Err(error) = &result {
            report.must_fix.push(format!(
                "undo of step `{}` failed ({summary}): {error}",
                step.id
            ));
        }
        let succeeded = result.is_ok();
        report.undos.push(UndoReport {
            step: step.id.clone(),
            summary,
            result,
        });
        succeeded
    }

    /// Whether the object a native undo would restore is still as it was before the step
    /// acted (so a failed step changed nothing and there is nothing to undo).
    pub(super) async fn unchanged(&self, state: &UndoState) -> Result<bool, StepError> {
        let cluster = &self.effects.cluster;
        let UndoState::Native(record) = state else {
            return Ok(false);
        };
        match record {
            UndoRecord::Replicas { key, previous } => {
                let object = cluster.get(key).await.map_err(StepError::from)?;
                Ok(object
                    .pointer("/spec/replicas")
                    .and_then(Json::as_i64)
                    .unwrap_or(1)
                    == *previous)
            }
            UndoRecord::MergePatch { key, inverse } => {
                let object = cluster.get(key).await.map_err(StepError::from)?;
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
                Err(error) => Err(error.into()),
            },
            UndoRecord::Applied { .. } => Ok(false),
            UndoRecord::Unschedulable { node, previous } => {
                Ok(self.node_unschedulable(node).await? == *previous)
            }
            UndoRecord::Declared => Ok(false),
        }
    }

    pub(super) async fn undo(&self, state: &UndoState) -> Result<(), StepError> {
        let cluster = &self.effects.cluster;
        match state {
            UndoState::Native(UndoRecord::Replicas { key, previous }) => cluster
                .scale(key, *previous, DryRun::No)
                .await
                .map(drop)
                .map_err(StepError::from),
            UndoState::Native(UndoRecord::MergePatch { key, inverse }) => cluster
                .patch(key, PatchType::Merge, inverse, DryRun::No)
                .await
                .map(drop)
                .map_err(StepError::from),
            UndoState::Native(UndoRecord::Applied {
                key,
                previous: None,
            }) => cluster
                .delete(key, None, None, DryRun::No)
                .await
                .map_err(StepError::from),
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
                    .map_err(StepError::from)
            }
            UndoState::Native(UndoRecord::Unschedulable { node, previous }) => cluster
                .set_unschedulable(node, *previous, DryRun::No)
                .await
                .map(drop)
                .map_err(StepError::from),
            UndoState::Native(UndoRecord::Declared) => {
                Err(StepError::Refused("no undo state was recorded".to_owned()))
            }
            UndoState::Declared(action) => {
                let step = self.synthetic_step("undo", action);
                match tokio::time::timeout(
                    step.timeout,
                    Box::pin(self.perform_action(&step, action, 1)),
                )
                .await
                {
                    Err(_) => Err(StepError::TimedOut(step.timeout)),
                    Ok(Err(error)) | Ok(Ok(Finished::Failed(error))) => Err(error),
                    Ok(Ok(_)) => Ok(()),
                }
            }
        }
    }
}
