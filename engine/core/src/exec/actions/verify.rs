//! `verify`: poll an expression with fresh facts until it holds (the step's timeout bounds it),
//! or until its `failWhen` does.

use super::*;

impl Run {
    pub(in crate::exec) async fn verify(
        &self,
        step: &StepSpec,
        expr: &Expression,
        fail_when: Option<&Expression>,
        interval: &Duration,
    ) -> Result<Finished, StepError> {
        let mut poll = 0u32;
        // The last reason a poll could not be evaluated: a reason is journaled (and shown) when
        // it changes, not again at every poll.
        let mut last_error: Option<String> = None;
        loop {
            poll += 1;
            self.forget_facts_of(expr).await;
            if let Some(fail_when) = fail_when {
                self.forget_facts_of(fail_when).await;
                // Not evaluable yet is not a failure: the facts it reads may not exist yet.
                if let Ok(true) = self.eval_bool(fail_when, None).await {
                    let why = format!(
                        "`failWhen: {}` held at poll {poll}; the verify gives up without waiting for its timeout",
                        fail_when.source.trim()
                    );
                    self.emit(Event::VerifyPolled {
                        step: step.id.clone(),
                        poll,
                        held: false,
                        error: None,
                    });
                    if self.options.dry_run {
                        return Ok(Finished::DryRun(why));
                    }
                    return Err(StepError::Refused(why));
                }
            }
            let held = self.eval_bool(expr, None).await;
            let held = match held {
                Ok(held) => held,
                Err(error) if self.options.dry_run => {
                    return Ok(Finished::DryRun(format!("cannot evaluate yet: {error}")))
                }
                // Facts that read each other, a panic, a broken journal: no poll will pass.
                Err(error) if error.permanent() => return Err(error),
                Err(error) => {
                    let text = self.redactor.redact(&error.to_string());
                    let new = last_error.as_deref() != Some(text.as_str());
                    self.emit(Event::VerifyPolled {
                        step: step.id.clone(),
                        poll,
                        held: false,
                        error: new.then(|| text.clone()),
                    });
                    last_error = Some(text);
                    self.effects.clock.sleep(*interval).await;
                    continue;
                }
            };
            last_error = None;
            self.emit(Event::VerifyPolled {
                step: step.id.clone(),
                poll,
                held,
                error: None,
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
}
