//! The actions, one family a file: what each does to the world, its intent, and the undo
//! state it captures before acting.

mod apply;
mod call;
mod metadata;
mod node;
mod notify;
mod patch;
mod process;
mod scale;
mod verify;
mod wait;

pub use patch::inverse_merge_patch;
pub(in crate::exec) use process::{command_failure, outside_allowed};

use super::*;

/// A step that completed, with what it printed and how to undo it.
pub(in crate::exec) fn done(output: Option<String>, undo: Option<UndoState>) -> Finished {
    Finished::Done { output, undo }
}

impl Run {
    /// Does `action` once, as (a part of) `step`. A panic in the action (a bug in the engine,
    /// or in an effects implementation) fails this attempt like any other error, so the run
    /// goes on to its undo and rollback instead of dying with the changes it made.
    pub(super) async fn perform_action(
        &self,
        step: &StepSpec,
        action: &Action,
        attempt: u32,
    ) -> Result<Finished, StepError> {
        use futures::FutureExt as _;
        let attempted = std::panic::AssertUnwindSafe(Box::pin(
            self.perform_action_unguarded(step, action, attempt),
        ))
        .catch_unwind()
        .await;
        match attempted {
            Ok(result) => result,
            Err(payload) => {
                let why = panic_message(payload.as_ref());
                tracing::error!(step = %step.id, error = %why, "the engine panicked in a step");
                Err(StepError::Panicked(why))
            }
        }
    }

    async fn perform_action_unguarded(
        &self,
        step: &StepSpec,
        action: &Action,
        attempt: u32,
    ) -> Result<Finished, StepError> {
        match action {
            Action::Run {
                argv,
                env,
                allow_exit_codes,
            } => {
                self.run_process(step, attempt, argv, env, allow_exit_codes.as_ref())
                    .await
            }
            Action::Exec {
                namespace,
                pod,
                container,
                argv,
                allow_exit_codes,
            } => {
                let target = (namespace, pod, container.as_ref());
                self.exec_in_pod(step, attempt, target, argv, allow_exit_codes.as_ref())
                    .await
            }
            Action::Scale { target, replicas } => self.scale(step, attempt, target, replicas).await,
            Action::Restart { target } => self.restart(step, attempt, target).await,
            Action::Patch {
                target,
                patch_type,
                body,
            } => self.patch(step, attempt, target, patch_type, body).await,
            Action::Apply { manifest } => self.apply(step, attempt, manifest).await,
            Action::Annotate { target, set } => {
                self.set_metadata(step, attempt, target, set, true).await
            }
            Action::Label { target, set } => {
                self.set_metadata(step, attempt, target, set, false).await
            }
            Action::Delete {
                target,
                propagation,
                grace_period_seconds,
            } => {
                self.delete(step, attempt, target, propagation, grace_period_seconds)
                    .await
            }
            Action::Cordon { node } => self.set_unschedulable(step, attempt, node, true).await,
            Action::Uncordon { node } => self.set_unschedulable(step, attempt, node, false).await,
            Action::Drain {
                node,
                delete_empty_dir_data,
                eviction_timeout,
            } => {
                self.drain(step, attempt, node, delete_empty_dir_data, eviction_timeout)
                    .await
            }
            Action::Wait {
                target,
                condition,
                until,
            } => self.wait(target, condition, until).await,
            Action::Verify {
                expr,
                interval,
                fail_when,
            } => self.verify(step, expr, fail_when.as_ref(), interval).await,
            Action::Gate => Ok(done(None, None)),
            Action::Capture(values) => self.capture(step, values).await,
            Action::Notify(message) => self.notify(message, false).await,
            Action::Page(message) => self.notify(message, true).await,
            Action::Call { runbook, params } => self.call_step(runbook, params).await,
        }
    }
}

/// The text a panic was raised with.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned())
}
