//! What a run reports: the outcome, each step's status, the undos and the rollback, redacted.

use super::*;

/// What happened, for the summary and the exit code.
#[derive(Clone, Debug)]
pub struct RunReport {
    pub run_id: String,
    pub outcome: Outcome,
    pub message: String,
    pub steps: Vec<StepReport>,
    /// The instances of `forEach` steps (`<id>[<key>]`), in the order they ended.
    pub instances: Vec<StepReport>,
    pub undos: Vec<UndoReport>,
    pub rollback: Option<Result<(), String>>,
    /// What a human must look at: undos and rollbacks that failed, changes with no undo.
    pub must_fix: Vec<String>,
    /// Why the journal is missing records, if it is (the first write that failed, or the
    /// journal deleted during the run): the record of the run is incomplete.
    pub journal_error: Option<String>,
}

impl RunReport {
    /// The outcome's exit code; 7 if the journal is incomplete, unless an undo or the rollback
    /// failed (5), which a human must act on first.
    pub fn exit_code(&self) -> u8 {
        match (&self.journal_error, self.outcome) {
            (Some(_), outcome) if outcome != Outcome::RollbackFailed => {
                crate::journal::INCOMPLETE_JOURNAL_EXIT_CODE
            }
            _ => self.outcome.exit_code(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepStatus {
    Succeeded,
    Failed(String),
    Skipped(String),
    DryRun(String),
    NotRun,
}

#[derive(Clone, Debug)]
pub struct StepReport {
    pub id: String,
    pub summary: String,
    pub status: StepStatus,
    pub duration: Duration,
}

#[derive(Clone, Debug)]
pub struct UndoReport {
    pub step: String,
    pub summary: String,
    pub result: Result<(), String>,
}

impl Run {
    pub(super) fn finish(
        &self,
        mut report: RunReport,
        outcome: Outcome,
        message: String,
    ) -> RunReport {
        // The report is printed as the summary: nothing in it may carry a secret.
        let redact = |text: &str| self.redactor.redact(text);
        report.outcome = outcome;
        report.message = redact(&message);
        report.must_fix = report.must_fix.iter().map(|line| redact(line)).collect();
        for step in report.steps.iter_mut().chain(report.instances.iter_mut()) {
            step.summary = redact(&step.summary);
            step.status = match &step.status {
                StepStatus::Failed(error) => StepStatus::Failed(redact(error)),
                StepStatus::Skipped(reason) => StepStatus::Skipped(redact(reason)),
                StepStatus::DryRun(note) => StepStatus::DryRun(redact(note)),
                other => other.clone(),
            };
        }
        for undo in &mut report.undos {
            undo.summary = redact(&undo.summary);
            undo.result = undo.result.clone().map_err(|error| redact(&error));
        }
        report.rollback = report
            .rollback
            .clone()
            .map(|result| result.map_err(|error| redact(&error)));
        // The outcome's record says whether records before it are missing; it may itself be
        // the record that cannot be written, which the report says then.
        report.journal_error = self.journal_broken();
        self.emit(Event::RunFinished {
            outcome,
            exit_code: report.exit_code(),
            message: report.message.clone(),
        });
        report.journal_error = self.journal_broken();
        report
    }

    pub(super) fn finish_step(
        &self,
        step: &StepSpec,
        result: StepResult,
        output: Option<String>,
        error: Option<&StepError>,
        elapsed: Duration,
    ) {
        let detail = self.details_lock().remove(&step.id).unwrap_or_default();
        let shown = output.clone().or_else(|| error.map(ToString::to_string));
        self.record_result(
            &step.id,
            results::status_word(result),
            shown.as_deref(),
            &detail,
        );
        self.emit(Event::StepFinished {
            step: step.id.clone(),
            result,
            output,
            error: error.map(ToString::to_string),
            error_kind: error.map(|error| error.kind().to_owned()),
            duration_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            stdout: detail.stdout,
            exit_code: detail.exit_code,
            vars: detail.vars,
        });
        if let Some(observer) = &self.effects.observer {
            observer.step_finished(&step.id, matches!(result, StepResult::Succeeded));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(outcome: Outcome, journal_error: Option<&str>) -> RunReport {
        RunReport {
            run_id: "r".to_owned(),
            outcome,
            message: String::new(),
            steps: Vec::new(),
            instances: Vec::new(),
            undos: Vec::new(),
            rollback: None,
            must_fix: Vec::new(),
            journal_error: journal_error.map(str::to_owned),
        }
    }

    #[test]
    fn an_incomplete_journal_exits_7_whatever_the_outcome_but_a_failed_rollback_still_exits_5() {
        let full = Some("cannot write the journal: No space left on device");
        for outcome in [
            Outcome::Succeeded,
            Outcome::RolledBack,
            Outcome::Failed,
            Outcome::PreconditionFailed,
            Outcome::Stopped,
        ] {
            assert_eq!(report(outcome, None).exit_code(), outcome.exit_code());
            assert_eq!(report(outcome, full).exit_code(), 7, "{outcome:?}");
        }
        assert_eq!(report(Outcome::RollbackFailed, full).exit_code(), 5);
    }
}
