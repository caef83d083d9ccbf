//! `runbook:` steps: another runbook run to completion as part of this one. Secrecy goes with
//! the values passed: one rendered from a secret is secret in the called runbook, whatever its
//! param says, and the two runs share one redactor.

use super::*;

use crate::bind::{Given, Origin};

impl Run {
    pub(in crate::exec) async fn call_step(
        &self,
        runbook: &str,
        params: &BTreeMap<String, JsonTemplate>,
    ) -> Result<Finished, StepError> {
        let given = self.call_params(params).await?;
        let outcome = self.call(runbook, &given).await?;
        if self.options.dry_run {
            Ok(Finished::DryRun(outcome))
        } else {
            Ok(done(Some(outcome), None))
        }
    }

    /// The params a `runbook:` step or rollback passes, rendered, each marked secret if it was
    /// rendered from a secret.
    pub(in crate::exec) async fn call_params(
        &self,
        params: &BTreeMap<String, JsonTemplate>,
    ) -> Result<Vec<Given>, StepError> {
        let mut given = Vec::new();
        for (name, template) in params {
            let value = match self.render_json(template).await? {
                Json::String(text) => text,
                other => other.to_string(),
            };
            let secret = self.is_secret_value(template, &value);
            given.push(Given {
                name: name.clone(),
                value,
                origin: Origin::Caller,
                secret,
            });
        }
        Ok(given)
    }

    /// Runs another runbook to completion as part of this one.
    pub(in crate::exec) async fn call(
        &self,
        name: &str,
        given: &[Given],
    ) -> Result<String, StepError> {
        let catalog = self.options.catalog.clone().ok_or_else(|| {
            StepError::Refused(format!("runbook `{name}` cannot be called: no catalog"))
        })?;
        let runbook = catalog
            .get(name)
            .cloned()
            .ok_or_else(|| StepError::Refused(format!("unknown runbook `{name}`")))?;
        let (bindings, errors) = crate::bind::bind_given(&runbook, given, None);
        if let Some(error) = errors.first() {
            return Err(StepError::Refused(format!("runbook `{name}`: {error}")));
        }
        let plan = Arc::new(crate::compile::Compiler::compile(runbook, bindings, None));
        let mut options = self.options.clone();
        options.run_id = format!("{}.{name}", self.options.run_id);
        options.resume = None;
        options.digest = String::new();
        let report =
            execute_boxed(plan, self.effects.clone(), options, self.redactor.clone()).await;
        // The called run writes into this run's journal: what it could not write is missing
        // from this run's record too.
        if let Some(error) = report.journal_error {
            self.journal_failed(error);
        }
        match report.outcome {
            Outcome::Succeeded => Ok(format!("runbook `{name}` succeeded")),
            other => Err(StepError::Other(format!(
                "runbook `{name}` ended {other:?}: {}",
                report.message
            ))),
        }
    }
}
