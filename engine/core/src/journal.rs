//! The journal: every event of a run, appended as one JSON line.
//!
//! Durability: every record is written with a single `write` before the run goes on, so a
//! crash or kill of the process loses at most the event being written. Records that must
//! survive a machine crash too are also synced to disk (`fdatasync`): the run's start, every
//! intent to mutate (written before the mutation, so `resume` can tell "may have happened"
//! from "did not"), every gate answer, and the outcome. Syncing every line would cost more than
//! the steps themselves (0.18 ms a sync against 1 ms to start a process here).
//!
//! The same [`Event`]s drive progress output and `--output json`.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// One line of the journal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// RFC 3339, milliseconds, UTC.
    pub time: String,
    pub run: String,
    #[serde(flatten)]
    pub event: Event,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    #[serde(rename_all = "camelCase")]
    RunStarted {
        runbook: String,
        file: String,
        /// SHA-256 of the runbook file, so a resumed run knows whether it changed.
        digest: String,
        params: Json,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        trigger: Option<Json>,
        dry_run: bool,
        /// What the run acts on: `context prod (https://...)`, or a simulated cluster.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cluster: Option<String>,
    },
    /// `runbook resume`: the run goes on from its journal.
    #[serde(rename_all = "camelCase")]
    RunResumed {
        /// Steps taken as done (journaled, or confirmed by a human).
        completed: Vec<String>,
        roll_back: bool,
    },
    #[serde(rename_all = "camelCase")]
    FactRead {
        fact: String,
        /// The value read (redacted, shortened).
        value: String,
    },
    #[serde(rename_all = "camelCase")]
    FactFailed { fact: String, error: String },
    #[serde(rename_all = "camelCase")]
    PreconditionChecked {
        index: usize,
        check: String,
        held: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    #[serde(rename_all = "camelCase")]
    StepStarted {
        step: String,
        action: String,
        summary: String,
    },
    #[serde(rename_all = "camelCase")]
    StepSkipped { step: String, reason: String },
    /// Written before a mutation goes out, with what the undo needs.
    #[serde(rename_all = "camelCase")]
    StepIntent {
        step: String,
        attempt: u32,
        mutation: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        undo_state: Option<Json>,
    },
    #[serde(rename_all = "camelCase")]
    StepAttemptFailed {
        step: String,
        attempt: u32,
        error: String,
        /// What kind of failure it was (`forbidden`, `timed-out`...): it decides the retry.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error_kind: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_in_ms: Option<u64>,
    },
    #[serde(rename_all = "camelCase")]
    VerifyPolled { step: String, poll: u32, held: bool },
    /// An unattended run waits at a gate for an approval (`runbook approve`).
    #[serde(rename_all = "camelCase")]
    GatePaused { step: String, question: String },
    #[serde(rename_all = "camelCase")]
    GateAnswered {
        step: String,
        question: String,
        answer: String,
        by: String,
    },
    #[serde(rename_all = "camelCase")]
    StepFinished {
        step: String,
        result: StepResult,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error_kind: Option<String>,
        duration_ms: u64,
    },
    /// Ctrl-C: scheduling stopped; what the human chose.
    #[serde(rename_all = "camelCase")]
    Interrupted { roll_back: bool, by: String },
    #[serde(rename_all = "camelCase")]
    UndoStarted { step: String, summary: String },
    #[serde(rename_all = "camelCase")]
    UndoFinished {
        step: String,
        succeeded: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    #[serde(rename_all = "camelCase")]
    RollbackStarted { summary: String },
    #[serde(rename_all = "camelCase")]
    RollbackFinished {
        succeeded: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// The alert that started the run was resolved while the run was going on (recorded by
    /// `runbook serve`; the run is not stopped by it).
    #[serde(rename_all = "camelCase")]
    AlertResolved { alert: String, fingerprint: String },
    #[serde(rename_all = "camelCase")]
    RunFinished {
        outcome: Outcome,
        exit_code: u8,
        message: String,
    },
}

impl Event {
    /// Whether the record must reach the disk before the run goes on (see the module docs).
    pub fn is_durable(&self) -> bool {
        matches!(
            self,
            Self::RunStarted { .. }
                | Self::RunResumed { .. }
                | Self::StepIntent { .. }
                | Self::GatePaused { .. }
                | Self::GateAnswered { .. }
                | Self::RunFinished { .. }
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepResult {
    Succeeded,
    Failed,
    /// `--dry-run`: validated (native actions) or shown (processes), not applied.
    DryRun,
    /// Not started because the run stopped first.
    NotRun,
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Succeeded,
    RolledBack,
    /// A `--dry-run` found a step that would fail (nothing was changed, so nothing is undone).
    Failed,
    PreconditionFailed,
    /// Stopped at a confirmation gate (refused, or nobody to ask), or aborted.
    Stopped,
    RollbackFailed,
}

impl Outcome {
    /// The documented exit code.
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Succeeded => 0,
            Self::RolledBack | Self::Failed => 1,
            Self::PreconditionFailed => 3,
            Self::Stopped => 4,
            Self::RollbackFailed => 5,
        }
    }
}

pub fn timestamp(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

/// An append-only JSON-lines file, one per run, synced after every line.
pub struct Journal {
    path: PathBuf,
    file: Mutex<File>,
}

impl Journal {
    /// Creates `<state_dir>/runs/<run_id>.jsonl`; refuses to overwrite.
    pub fn create(state_dir: &Path, run_id: &str) -> std::io::Result<Self> {
        let dir = state_dir.join("runs");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{run_id}.jsonl"));
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)?;
        Ok(Self {
            path,
            file: Mutex::new(file),
        })
    }

    /// Opens an existing journal to append to it (resume).
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new().append(true).open(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one record; syncs it to disk first if the record must survive a machine crash.
    pub fn append(&self, record: &Record) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut file = self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        file.write_all(&line)?;
        if record.event.is_durable() {
            file.sync_data()?;
        }
        Ok(())
    }
}

/// Reads a journal back. A last line cut short by a crash is ignored; any other bad line is an
/// error naming its line number.
pub fn read(path: &Path) -> Result<Vec<Record>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    let lines: Vec<&str> = text.lines().collect();
    let mut records = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Record>(line) {
            Ok(record) => records.push(record),
            Err(_) if index + 1 == lines.len() && !text.ends_with('\n') => break,
            Err(error) => {
                return Err(format!(
                    "{}:{}: not a journal record: {error}",
                    path.display(),
                    index + 1
                ))
            }
        }
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_and_reads_back_ignoring_a_torn_last_line() {
        let dir = std::env::temp_dir().join(format!("runbook-journal-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let journal = Journal::create(&dir, "r1").expect("create");
        let record = Record {
            time: timestamp(SystemTime::UNIX_EPOCH),
            run: "r1".to_owned(),
            event: Event::StepSkipped {
                step: "a".to_owned(),
                reason: "when was false".to_owned(),
            },
        };
        journal.append(&record).expect("append");
        assert!(
            Journal::create(&dir, "r1").is_err(),
            "a journal is never overwritten"
        );
        let mut file = OpenOptions::new()
            .append(true)
            .open(journal.path())
            .expect("open");
        file.write_all(b"{\"time\":\"2026").expect("torn write");
        assert_eq!(read(journal.path()).expect("read"), vec![record]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
