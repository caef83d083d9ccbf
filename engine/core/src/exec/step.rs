//! One step's lifecycle: `when`, attempts with their timeout and back-off, intent before each
//! mutation, and the undo state captured before the first attempt.

use super::*;

/// How one step ended.
pub(super) enum Finished {
    Done {
        output: Option<String>,
        undo: Option<UndoState>,
    },
    Skipped(String),
    DryRun(String),
    Failed(StepError),
    /// A `forEach` step that stopped starting instances for an interrupt or a drain, with
    /// some left: neither done nor failed, it goes on (from the instances left) on resume.
    Paused,
}

impl Run {
    pub(super) async fn run_step(self: Arc<Self>, position: usize) -> Finished {
        let step = &self.plan.runbook.steps[position];
        if step.for_each.is_some() {
            return self.fan_out(position).await;
        }
        self.run_one(step).await
    }

    /// One step (or one instance of a `forEach` step) from its `when` to its last attempt.
    pub(super) async fn run_one(&self, step: &StepSpec) -> Finished {
        // Params are already substituted by the plan renderer; facts in templates are shown as
        // written, which is what the journal should say before anything is read.
        let mut summary = crate::render::action_summary(&self.plan, &step.action);
        if let Some(item) = results::current_item() {
            let value = crate::render::shorten(&crate::render::json_scalar(&item.value), 120);
            summary.push_str(&format!(" ({} = {value})", item.name));
        }
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
                    return Finished::Failed(StepError::Expression(format!(
                        "`when` could not be evaluated: {error}"
                    )))
                }
            }
        }
        let mut attempt = 0;
        let mut backoff = step.retries.backoff;
        loop {
            attempt += 1;
            let outcome =
                match tokio::time::timeout(step.timeout, self.perform(step, attempt)).await {
                    Ok(outcome) => outcome,
                    Err(_) => Finished::Failed(StepError::TimedOut(step.timeout)),
                };
            if (step.action.mutates(step.readonly) || matches!(step.action, Action::Call { .. }))
                && !self.options.dry_run
            {
                // Whatever the outcome, the world may have changed.
                self.forget_all_facts().await;
            }
            match outcome {
                // The retry policy: only what another attempt may fix is tried again.
                Finished::Failed(error)
                    if attempt <= step.retries.retries
                        && !self.options.dry_run
                        && error.retryable() =>
                {
                    self.emit(Event::StepAttemptFailed {
                        step: step.id.clone(),
                        attempt,
                        error: error.to_string(),
                        error_kind: Some(error.kind().to_owned()),
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
    pub(super) async fn perform(&self, step: &StepSpec, attempt: u32) -> Finished {
        match self.perform_action(step, &step.action, attempt).await {
            Ok(finished) => finished,
            Err(error) => Finished::Failed(error),
        }
    }

    /// Journals the intent to mutate, before the mutation goes out. `effect`: what it leaves
    /// on its object, when that can be said (native actions), so a resume can look.
    pub(super) fn intent(
        &self,
        step: &StepSpec,
        attempt: u32,
        mutation: String,
        undo: Option<&UndoState>,
        effect: Option<crate::journal::Effect>,
    ) -> Result<(), StepError> {
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
            effect,
        });
        match self.journal_broken() {
            Some(error) => Err(StepError::Journal(error)),
            None => Ok(()),
        }
    }

    pub(super) fn undo_for(&self, step: &StepSpec, native: Option<UndoState>) -> Option<UndoState> {
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

    pub(super) fn written_lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectKey, Json>> {
        self.written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn captured_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, UndoState>> {
        self.captured
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn has_captured(&self, step: &StepSpec) -> bool {
        self.captured_lock().contains_key(&step.id)
    }

    pub(super) fn native_done(&self, output: String, undo: Option<UndoState>) -> Finished {
        if self.options.dry_run {
            Finished::DryRun(format!("server accepted (dry-run): {output}"))
        } else {
            Finished::Done {
                output: Some(output),
                undo,
            }
        }
    }
}
