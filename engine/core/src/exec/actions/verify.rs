//! `verify`: poll an expression with fresh facts until it holds (the step's timeout bounds it).

use super::*;

impl Run {
    pub(in crate::exec) async fn verify(
        &self,
        step: &StepSpec,
        expr: &Expression,
        interval: &Duration,
    ) -> Result<Finished, StepError> {
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
                // Facts that read each other, a panic, a broken journal: no poll will pass.
                Err(error) if error.permanent() => return Err(error),
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
}
