//! The rollback: after the undos of a failed run, the runbook's named, called or listed rollback.

use super::*;

impl Run {
    /// After the undos, the runbook's rollback, if it has one, journaled; whether it succeeded
    /// (or there was none).
    pub(super) async fn roll_back(&self, report: &mut RunReport, failure: &str) -> bool {
        let Some(rollback) = &self.runbook().rollback else {
            return true;
        };
        let summary = rollback_summary(rollback);
        self.emit(Event::RollbackStarted {
            summary: summary.clone(),
        });
        let result = self
            .rollback(rollback, failure, report)
            .await
            .map_err(|error| error.to_string());
        self.emit(Event::RollbackFinished {
            succeeded: result.is_ok(),
            error: result.as_ref().err().cloned(),
        });
        if let Err(error) = &result {
            report
                .must_fix
                .push(format!("rollback ({summary}) failed: {error}"));
        }
        let succeeded = result.is_ok();
        report.rollback = Some(result);
        succeeded
    }

    pub(super) fn synthetic_step(&self, id: &str, action: &Action) -> StepSpec {
        StepSpec {
            index: usize::MAX,
            id: id.to_owned(),
            name: None,
            needs: Vec::new(),
            must_succeed: Vec::new(),
            when: None,
            timeout: DEFAULT_STEP_TIMEOUT,
            retries: RetrySpec::default(),
            confirm: None,
            undo: UndoSpec::NotNeeded,
            readonly: false,
            action: action.clone(),
            for_each: None,
            span: Default::default(),
        }
    }

    pub(super) async fn rollback(
        &self,
        rollback: &RollbackSpec,
        failure: &str,
        report: &RunReport,
    ) -> Result<(), StepError> {
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
                    .map_err(StepError::from)
            }
            RollbackSpec::Runbook { name, params } => {
                let given = self.call_params(params).await?;
                self.call(name, &given).await.map(drop)
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
                            return Err(StepError::Other(format!(
                                "rollback step `{}` timed out after {}",
                                step.id,
                                format_duration(step.timeout)
                            )))
                        }
                        Ok(Err(error)) | Ok(Ok(Finished::Failed(error))) => {
                            return Err(StepError::Other(format!(
                                "rollback step `{}`: {error}",
                                step.id
                            )))
                        }
                        Ok(Ok(_)) => continue,
                    }
                }
                Ok(())
            }
        }
    }
}

pub(super) fn rollback_summary(rollback: &RollbackSpec) -> String {
    match rollback {
        RollbackSpec::Named(named) => named.name().to_owned(),
        RollbackSpec::Runbook { name, .. } => format!("runbook {name}"),
        RollbackSpec::Steps(steps) => format!("{} rollback step(s)", steps.len()),
    }
}
