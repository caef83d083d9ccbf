//! What steps leave for later steps to read: `vars` (what `capture` steps captured, once) and
//! `steps.<id>` (each step's `status`, `output` and `exitCode`), and the item a `forEach`
//! instance runs with. All of it is journaled and restored on resume.

use super::*;

/// The most of a process's standard output a step result keeps (and the journal records);
/// what is past it is cut, and the cut is said.
pub(super) const OUTPUT_LIMIT: usize = 64 * 1024;

tokio::task_local! {
    /// The item of the `forEach` instance this task runs (or undoes), if it runs one.
    static ITEM: Option<Binding>;
}

/// A name bound for one instance's expressions: `item` (or `as:`) and its value.
#[derive(Clone, Debug)]
pub(super) struct Binding {
    pub(super) name: String,
    pub(super) value: Json,
}

/// Runs `future` with `binding` in scope of every expression it evaluates.
pub(super) async fn with_item<F: std::future::Future>(
    binding: Option<Binding>,
    future: F,
) -> F::Output {
    ITEM.scope(binding, future).await
}

/// The item in scope, if this task runs a `forEach` instance.
pub(super) fn current_item() -> Option<Binding> {
    ITEM.try_with(Clone::clone).ok().flatten()
}

/// What a step printed, beyond its summary line, until its end is journaled.
#[derive(Clone, Debug, Default)]
pub(super) struct Detail {
    pub(super) stdout: Option<String>,
    pub(super) exit_code: Option<i64>,
    pub(super) vars: Option<Json>,
}

/// `text` cut to [`OUTPUT_LIMIT`] bytes at a character boundary, saying how much was cut.
pub(super) fn bounded(text: &str) -> String {
    if text.len() <= OUTPUT_LIMIT {
        return text.to_owned();
    }
    let mut end = OUTPUT_LIMIT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}\n… ({} bytes more not kept)",
        &text[..end],
        text.len() - end
    )
}

/// A value as the journal's summary line shows it: a string as it is, anything else as JSON,
/// at most 200 characters.
fn short(value: &Json) -> String {
    crate::render::shorten(&crate::render::json_scalar(value), 200)
}

/// How a step result's `status` reads.
pub(super) fn status_word(result: StepResult) -> &'static str {
    match result {
        StepResult::Succeeded => "succeeded",
        StepResult::Failed => "failed",
        StepResult::DryRun => "dry-run",
        StepResult::NotRun => "not-run",
    }
}

/// Every step's result before it ran, so `steps.<id>` always reads something.
pub(super) fn initial_results(runbook: &Runbook) -> rhai::Map {
    let mut results = rhai::Map::new();
    for step in &runbook.steps {
        insert_result(&mut results, &step.id, result_map("not-run", "", None));
    }
    results
}

fn result_map(status: &str, output: &str, exit_code: Option<i64>) -> Dynamic {
    let mut map = rhai::Map::new();
    map.insert("status".into(), status.into());
    map.insert("output".into(), output.into());
    map.insert(
        "exitCode".into(),
        exit_code.map_or(Dynamic::UNIT, Dynamic::from),
    );
    map.into()
}

/// A result under its id, and under the id with `_` for `-` (`steps.restart_api`), since a
/// `-` after `steps.` would be a minus.
fn insert_result(results: &mut rhai::Map, id: &str, value: Dynamic) {
    let written = id.replace('-', "_");
    if written != id {
        results.insert(written.into(), value.clone());
    }
    results.insert(id.into(), value);
}

impl Run {
    pub(super) fn vars_lock(&self) -> std::sync::MutexGuard<'_, rhai::Map> {
        self.vars
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn results_lock(&self) -> std::sync::MutexGuard<'_, rhai::Map> {
        self.results
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn details_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Detail>> {
        self.details
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keeps what a process step printed, for its result and its journal record.
    pub(super) fn keep_output(&self, step: &StepSpec, output: &CommandOutput) {
        self.details_lock().insert(
            step.id.clone(),
            Detail {
                stdout: Some(bounded(&output.stdout)),
                exit_code: Some(i64::from(output.exit_code)),
                vars: None,
            },
        );
    }

    /// The step's result, readable as `steps.<id>` from now on.
    pub(super) fn record_result(
        &self,
        id: &str,
        status: &str,
        output: Option<&str>,
        detail: &Detail,
    ) {
        // A process's stdout was redacted as it was read; a summary line is redacted here.
        let output = match (&detail.stdout, output) {
            (Some(stdout), _) => stdout.clone(),
            (None, Some(line)) => self.redactor.redact(line),
            (None, None) => String::new(),
        };
        insert_result(
            &mut self.results_lock(),
            id,
            result_map(status, &output, detail.exit_code),
        );
    }

    /// Why the step must be skipped: a need it asks to have succeeded (`{step, status:
    /// succeeded}`) did not (it was skipped), if one did not.
    pub(super) fn unmet_need(&self, step: &StepSpec) -> Option<String> {
        let results = self.results_lock();
        step.must_succeed.iter().find_map(|id| {
            let status = results
                .get(id.as_str())
                .and_then(|result| result.read_lock::<rhai::Map>()?.get("status").cloned())
                .map(|status| status.to_string())
                .unwrap_or_default();
            // A dry-run's steps are `dry-run`: what would have succeeded.
            let how = match status.as_str() {
                "succeeded" | "dry-run" => return None,
                "skipped" => "was skipped".to_owned(),
                "not-run" => "did not run".to_owned(),
                other => format!("ended {other}"),
            };
            Some(format!(
                "it needs step `{id}` to have succeeded, and `{id}` {how}"
            ))
        })
    }

    /// What a resumed run had captured and the results of its ended steps, as journaled.
    pub(super) fn restore_results(&self) {
        let Some(resume) = &self.options.resume else {
            return;
        };
        let mut vars = self.vars_lock();
        for (name, value) in &resume.vars {
            if let Ok(value) = rhai::serde::to_dynamic(value) {
                vars.insert(name.as_str().into(), value);
            }
        }
        drop(vars);
        let mut results = self.results_lock();
        for (id, value) in &resume.results {
            if let Ok(value) = rhai::serde::to_dynamic(value) {
                insert_result(&mut results, id, value);
            }
        }
    }

    /// `capture`: each expression evaluated once, in name order, its value kept as
    /// `vars.NAME` (a later one may read an earlier one).
    pub(super) async fn capture(
        &self,
        step: &StepSpec,
        values: &[(String, Expression)],
    ) -> Result<Finished, StepError> {
        let mut captured = serde_json::Map::new();
        for (name, expression) in values {
            let value = self.eval(expression, None).await?;
            let json = rhai::serde::from_dynamic::<Json>(&value).map_err(StepError::from)?;
            self.vars_lock().insert(name.as_str().into(), value);
            captured.insert(name.clone(), json);
        }
        let shown = captured
            .iter()
            .map(|(name, value)| format!("vars.{name} = {}", short(value)))
            .collect::<Vec<_>>()
            .join("; ");
        self.details_lock().insert(
            step.id.clone(),
            Detail {
                vars: Some(Json::Object(captured)),
                ..Detail::default()
            },
        );
        Ok(if self.options.dry_run {
            Finished::DryRun(format!("captured {shown}"))
        } else {
            actions::done(Some(format!("captured {shown}")), None)
        })
    }
}
