//! `wait`: for a status condition or an `until` expression on one object, by watch.

use super::*;

impl Run {
    pub(in crate::exec) async fn wait(
        &self,
        target: &Target,
        condition: &Option<String>,
        until: &Option<Expression>,
    ) -> Result<Finished, StepError> {
        let key = self.key(target).await?;
        // The facts and params an `until` reads are read once; only `object` changes.
        let base = match until {
            Some(until) => Some((self.scope(until, None).await?, until.ast.clone())),
            None => None,
        };
        let condition = condition.clone();
        let redactor = self.redactor.clone();
        let clock = self.effects.clock.clone();
        let ready = move |object: &Json| -> Result<bool, String> {
            match (&condition, &base) {
                (Some(condition), _) => Ok(has_condition(object, condition)),
                (None, Some((scope, ast))) => {
                    let mut scope = scope.clone();
                    scope.push_dynamic(
                        "object",
                        rhai::serde::to_dynamic(object).map_err(|e| e.to_string())?,
                    );
                    // A field the controller has not reported yet (no `status`) means
                    // "not yet", as in `verify`; the step's timeout bounds the wait.
                    let budget = crate::expr::Budget {
                        now: Some(clock.now()),
                        ..crate::expr::Budget::standard()
                    };
                    match crate::expr::evaluate::<bool>(&mut scope, ast, &budget, Some(&redactor)) {
                        Ok(held) => Ok(held),
                        Err(error) => {
                            tracing::debug!(%error, "Wait condition not evaluable yet.");
                            Ok(false)
                        }
                    }
                }
                (None, None) => Ok(true),
            }
        };
        if self.options.dry_run {
            let object = self
                .effects
                .cluster
                .get(&key)
                .await
                .map_err(StepError::from)?;
            let held = ready(&object)?;
            return Ok(Finished::DryRun(if held {
                format!("{key} already holds")
            } else {
                format!("{key} does not hold yet; the run would wait")
            }));
        }
        self.effects
            .cluster
            .wait(&key, &ready, WAIT_INTERVAL)
            .await
            .map_err(StepError::from)?;
        Ok(done(Some(format!("{key} holds")), None))
    }
}

pub(in crate::exec) fn has_condition(object: &Json, condition: &str) -> bool {
    object
        .pointer("/status/conditions")
        .and_then(Json::as_array)
        .is_some_and(|conditions| {
            conditions.iter().any(|c| {
                c.get("type").and_then(Json::as_str) == Some(condition)
                    && c.get("status").and_then(Json::as_str) == Some("True")
            })
        })
}
