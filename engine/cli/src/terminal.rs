//! The terminal side of a run started by hand: the y/N prompt at gates, the progress
//! spinners or plain lines (or JSON lines) of its events, and the summary at its end. `serve`
//! has no terminal; its prompter and reporter are in `serve/`.

use std::io::{BufRead as _, IsTerminal, Write as _};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use runbook_core::effects::{Answer, Prompter, Reporter};
use runbook_core::journal::{Event, Record, StepResult};

/// Asks y/N on the terminal; no terminal means nobody can be asked.
pub struct TerminalPrompter;

/// One question on the terminal at a time, whichever step asks.
static PROMPT: Mutex<()> = Mutex::new(());

#[async_trait]
impl Prompter for TerminalPrompter {
    async fn confirm(&self, step: &str, question: &str, detail: &str) -> Answer {
        if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
            return Answer::NoTerminal;
        }
        let step = step.to_owned();
        let question = question.to_owned();
        let detail = detail.to_owned();
        // A blocking task, not `block_in_place`: it works on the current-thread runtime of a
        // simulated run too, and while it waits a paused clock stands still, so a human
        // thinking at a gate does not time the run out.
        let asked = tokio::task::spawn_blocking(move || {
            let _one_at_a_time = PROMPT
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "\n  step {step}: {detail}\n? {question} [y/N] ");
            let _ = stderr.flush();
            let mut line = String::new();
            match std::io::stdin().lock().read_line(&mut line) {
                Ok(_) if matches!(line.trim().to_lowercase().as_str(), "y" | "yes") => Answer::Yes,
                _ => Answer::No,
            }
        });
        asked.await.unwrap_or(Answer::No)
    }
}

/// `--output json`: every journal record as a JSON line on stdout.
pub struct JsonLines;

impl Reporter for JsonLines {
    fn record(&self, record: &Record) {
        if let Ok(line) = serde_json::to_string(record) {
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "{line}");
        }
    }
}

/// One line per event, for logs and pipes.
pub struct PlainLines;

impl Reporter for PlainLines {
    fn record(&self, record: &Record) {
        if let Some(text) = describe(&record.event) {
            let mut stderr = std::io::stderr().lock();
            let _ = writeln!(stderr, "{} {text}", record.time);
        }
    }
}

/// What a person wants to read about an event, if anything. One arm per journal event, kept
/// whole so that every event's wording is in one place.
pub fn describe(event: &Event) -> Option<String> {
    Some(match event {
        Event::RunStarted {
            runbook,
            dry_run,
            cluster,
            ..
        } => format!(
            "run of {runbook} started{}{}",
            cluster
                .as_ref()
                .map(|cluster| format!(" on {cluster}"))
                .unwrap_or_default(),
            if *dry_run {
                " (dry-run: nothing will change)"
            } else {
                ""
            }
        ),
        Event::RunResumed {
            completed,
            roll_back,
        } => format!(
            "run resumed{}; done before: {}",
            if *roll_back { " to roll back" } else { "" },
            if completed.is_empty() {
                "nothing".to_owned()
            } else {
                completed.join(", ")
            }
        ),
        Event::FactRead { fact, value } => format!("read {fact} = {value}"),
        Event::FactFailed { fact, error } => format!("could not read {fact}: {error}"),
        Event::PreconditionChecked {
            check, held, error, ..
        } => match error {
            Some(error) => format!("precondition {check}: could not be evaluated: {error}"),
            None => format!(
                "precondition {check}: {}",
                if *held { "holds" } else { "DOES NOT HOLD" }
            ),
        },
        Event::StepStarted { step, summary, .. } => format!("step {step} started: {summary}"),
        Event::StepSkipped { step, reason } => format!("step {step} skipped: {reason}"),
        Event::StepExpanded { step, keys, .. } => {
            let shown: Vec<&str> = keys.iter().take(10).map(String::as_str).collect();
            let more = keys.len().saturating_sub(shown.len());
            format!(
                "step {step} runs once per item: {} ({}{})",
                keys.len(),
                shown.join(", "),
                if more > 0 {
                    format!(", and {more} more")
                } else {
                    String::new()
                }
            )
        }
        Event::StepIntent { .. } => return None,
        Event::StepAttemptFailed {
            step,
            attempt,
            error,
            retry_in_ms,
            ..
        } => format!(
            "step {step} attempt {attempt} failed: {error}{}",
            retry_in_ms
                .map(|ms| format!(
                    "; retrying in {}",
                    humantime::format_duration(Duration::from_millis(ms))
                ))
                .unwrap_or_default()
        ),
        Event::VerifyPolled {
            step,
            poll,
            held,
            error,
        } => match error {
            Some(error) => format!("step {step} verify poll {poll}: cannot evaluate: {error}"),
            None => format!(
                "step {step} verify poll {poll}: {}",
                if *held { "true" } else { "not yet" }
            ),
        },
        Event::GatePaused { step, question } => {
            format!("gate of step {step} (\"{question}\"): waiting for `runbook approve` (paused)")
        }
        Event::GateAnswered {
            step,
            question,
            answer,
            by,
        } => format!("gate of step {step} (\"{question}\"): {answer} (by {by})"),
        Event::AlertResolved { alert, fingerprint } => {
            format!("alert {alert} ({fingerprint}) resolved while the run goes on")
        }
        Event::StepFinished {
            step,
            result,
            output,
            error,
            ..
        } => {
            let result = match result {
                StepResult::Succeeded => "succeeded",
                StepResult::Failed => "FAILED",
                StepResult::DryRun => "checked (dry-run)",
                StepResult::NotRun => "not run",
            };
            let detail = error
                .as_ref()
                .or(output.as_ref())
                .map(|d| format!(": {d}"))
                .unwrap_or_default();
            format!("step {step} {result}{detail}")
        }
        Event::Interrupted { roll_back, by } => format!(
            "interrupted: {} (by {by})",
            if *roll_back {
                "rolling back"
            } else {
                "leaving completed steps as they are"
            }
        ),
        Event::UndoStarted { step, summary } => format!("undoing step {step}: {summary}"),
        Event::UndoFinished {
            step,
            succeeded,
            error,
        } => match error {
            Some(error) => format!("UNDO OF STEP {step} FAILED: {error}"),
            None => format!(
                "undo of step {step} {}",
                if *succeeded { "succeeded" } else { "failed" }
            ),
        },
        Event::RollbackStarted { summary } => format!("rollback: {summary}"),
        Event::RollbackFinished { succeeded, error } => match error {
            Some(error) => format!("ROLLBACK FAILED: {error}"),
            None => format!(
                "rollback {}",
                if *succeeded { "succeeded" } else { "failed" }
            ),
        },
        Event::RunFinished {
            outcome,
            exit_code,
            message,
        } => format!("run finished: {outcome:?} (exit {exit_code}): {message}"),
    })
}

/// On a terminal: a spinner per running step with its elapsed time and verify polls, and a
/// line for everything else.
pub struct Progress {
    bars: indicatif::MultiProgress,
    running: Mutex<std::collections::HashMap<String, indicatif::ProgressBar>>,
}

impl Progress {
    pub fn new() -> Self {
        Self {
            bars: indicatif::MultiProgress::new(),
            running: Mutex::new(std::collections::HashMap::new()),
        }
    }
}

impl Reporter for Progress {
    fn record(&self, record: &Record) {
        let mut running = self
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &record.event {
            Event::StepStarted { step, summary, .. } => {
                let bar = self.bars.add(indicatif::ProgressBar::new_spinner());
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{spinner} [{elapsed:>4}] {prefix}: {msg}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
                );
                bar.set_prefix(step.clone());
                bar.set_message(summary.clone());
                bar.enable_steady_tick(Duration::from_millis(120));
                running.insert(step.clone(), bar);
            }
            Event::VerifyPolled {
                step,
                poll,
                held,
                error,
            } => {
                if let Some(bar) = running.get(step) {
                    bar.set_message(format!(
                        "verify poll {poll}: {}",
                        if *held { "true" } else { "not yet" }
                    ));
                }
                // Why a poll could not be evaluated is said at normal verbosity, once per
                // reason (the journal carries it only when it changes).
                if error.is_some() {
                    if let Some(text) = describe(&record.event) {
                        let _ = self.bars.println(text);
                    }
                }
            }
            Event::StepFinished { step, .. } | Event::StepSkipped { step, .. } => {
                if let Some(bar) = running.remove(step) {
                    bar.finish_and_clear();
                }
                if let Some(text) = describe(&record.event) {
                    let _ = self.bars.println(text);
                }
            }
            event => {
                if let Some(text) = describe(event) {
                    let _ = self.bars.println(text);
                }
            }
        }
    }
}

/// The end-of-run summary: each step's outcome and time, what was undone, and, loudly, what a
/// human must fix.
pub fn summary(report: &runbook_core::exec::RunReport, journal: &Path) -> String {
    use runbook_core::exec::StepStatus;
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "\nSummary of run {}", report.run_id);
    let width = report
        .steps
        .iter()
        .chain(report.instances.iter())
        .map(|s| s.id.len())
        .max()
        .unwrap_or(4);
    // A `forEach` step's instances are listed under it.
    let rows = report.steps.iter().flat_map(|step| {
        let prefix = format!("{}[", step.id);
        std::iter::once(step).chain(
            report
                .instances
                .iter()
                .filter(move |instance| instance.id.starts_with(&prefix)),
        )
    });
    for step in rows {
        let (status, detail) = match &step.status {
            StepStatus::Succeeded => ("succeeded", String::new()),
            StepStatus::Failed(error) => ("FAILED", format!(" — {error}")),
            StepStatus::Skipped(reason) => ("skipped", format!(" — {reason}")),
            StepStatus::DryRun(note) => ("dry-run", format!(" — {note}")),
            StepStatus::NotRun => ("not run", String::new()),
        };
        let _ = writeln!(
            out,
            "  {:<width$}  {:<9}  {:>7}  {}{detail}",
            step.id,
            status,
            format!("{:.1}s", step.duration.as_secs_f64()),
            step.summary
        );
    }
    for undo in &report.undos {
        let _ = writeln!(
            out,
            "  undo {}: {} — {}",
            undo.step,
            if undo.result.is_ok() {
                "done"
            } else {
                "FAILED"
            },
            match &undo.result {
                Ok(()) => undo.summary.clone(),
                Err(error) => format!("{}: {error}", undo.summary),
            }
        );
    }
    if let Some(rollback) = &report.rollback {
        let _ = writeln!(
            out,
            "  rollback: {}",
            match rollback {
                Ok(()) => "done".to_owned(),
                Err(error) => format!("FAILED: {error}"),
            }
        );
    }
    if !report.must_fix.is_empty() {
        let _ = writeln!(
            out,
            "\n!!! A HUMAN MUST ACT: the system may be left half-changed"
        );
        for line in &report.must_fix {
            let _ = writeln!(out, "!!!   {line}");
        }
    }
    if let Some(error) = &report.journal_error {
        let _ = writeln!(
            out,
            "\n!!! THE JOURNAL OF THIS RUN IS INCOMPLETE: {error}\n!!!   `runbook show` and `runbook resume` see only what was written; this summary says what the run did"
        );
    }
    // Never a path that is gone as if the record were there.
    let journal = if std::fs::symlink_metadata(journal).is_err() {
        format!("none: {} was deleted during the run", journal.display())
    } else if report.journal_error.is_some() {
        format!("{} (incomplete)", journal.display())
    } else {
        journal.display().to_string()
    };
    let _ = writeln!(
        out,
        "\nOutcome: {:?} (exit {}): {}\nJournal: {journal}",
        report.outcome,
        report.exit_code(),
        report.message,
    );
    out
}
