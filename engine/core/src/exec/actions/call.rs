//! `runbook:` steps: another runbook run to completion as part of this one.

use super::*;

impl Run {
    pub(in crate::exec) async fn call_step(
        &self,
        runbook: &str,
        params: &BTreeMap<String, JsonTemplate>,
    ) -> Result<Finished, StepError> {
        let mut sets = Vec::new();
        for (name, value) in params {
            let value = self.render_json(value).await?;
            sets.push((
                name.clone(),
                match value {
                    Json::String(text) => text,
                    other => other.to_string(),
                },
            ));
        }
        let outcome = self.call(runbook, &sets).await?;
        if self.options.dry_run {
            Ok(Finished::DryRun(outcome))
        } else {
            Ok(done(Some(outcome), None))
        }
    }

    /// Runs another runbook to completion as part of this one.
    pub(in crate::exec) async fn call(
        &self,
        name: &str,
        sets: &[(String, String)],
    ) -> Result<String, StepError> {
        let catalog = self.options.catalog.clone().ok_or_else(|| {
            StepError::Refused(format!("runbook `{name}` cannot be called: no catalog"))
        })?;
        let runbook = catalog
            .get(name)
            .cloned()
            .ok_or_else(|| StepError::Refused(format!("unknown runbook `{name}`")))?;
        let (bindings, errors) = crate::bind::bind(&runbook, sets, None);
        if let Some(error) = errors.first() {
            return Err(StepError::Refused(format!("runbook `{name}`: {error}")));
        }
        let plan = Arc::new(crate::compile::Compiler::compile(runbook, bindings, None));
        let mut options = self.options.clone();
        options.run_id = format!("{}.{name}", self.options.run_id);
        options.resume = None;
        options.digest = String::new();
        let report = execute_boxed(plan, self.effects.clone(), options).await;
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
