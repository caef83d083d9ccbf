//! The journal: every event of a run, appended as one JSON line.
//!
//! Durability: every record is written with a single `write` before the run goes on, so a
//! crash or kill of the process loses at most the event being written. Records that must
//! survive a machine crash too are also synced to disk (`fdatasync`): the run's start, every
//! intent to mutate (written before the mutation, so `resume` can tell "may have happened"
//! from "did not"), every gate answer, and the outcome. Syncing every line would cost more than
//! the steps themselves (0.18 ms a sync against 1 ms to start a process here).
//!
//! A record cut short (a crash mid-write, a full disk) is a torn last line. Readers show the
//! records before it and say it is torn; `runbook resume` sets it aside in `<journal>.torn`
//! before it appends ([`Journal::reopen`]), so no record is ever glued onto a fragment. A
//! write that fails is cut off again and is an error the executor reports, and so is a
//! journal deleted while its run goes on: the record of the run is incomplete, and the run
//! says so (exit 7).
//!
//! The same [`Event`]s drive progress output and `--output json`.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
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
        /// What a native mutation leaves on its object, so a resumed run can tell whether it
        /// took effect (see [`crate::resume::observe`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        effect: Option<Effect>,
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
    VerifyPolled {
        step: String,
        poll: u32,
        held: bool,
        /// Why the expression could not be evaluated at this poll; only when it differs from
        /// the poll before, so a reason repeated every poll is said once.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
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
        /// A `run` or `exec` step's whole standard output (bounded, redacted), which
        /// `steps.<id>.output` reads; `output` is its last line.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stdout: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i64>,
        /// What a `capture` step captured, by name (`vars.NAME`), restored on resume.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vars: Option<Json>,
    },
    /// A `forEach` step read its list: the instances it runs, by key (`<id>[<key>]`), with
    /// their items, which a resumed run uses again rather than reading the list anew.
    #[serde(rename_all = "camelCase")]
    StepExpanded {
        step: String,
        keys: Vec<String>,
        items: Vec<Json>,
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

/// The object a native mutation changes, as it is once the mutation took effect and as it
/// was before: each a JSON merge patch's shape (the fields named, `null` for one that is
/// absent), so both can be compared with the object as it is now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Effect {
    pub object: crate::effects::ObjectKey,
    pub after: Json,
    pub before: Json,
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

/// The documented exit code of a run whose journal could not be written whole (a write
/// failed, or the journal was deleted): the record of the run is incomplete. An undo or a
/// rollback that failed (5) still wins, since a human must act on the cluster first.
pub const INCOMPLETE_JOURNAL_EXIT_CODE: u8 = 7;

pub fn timestamp(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

/// An append-only JSON-lines file, one per run (0600, in a 0700 `runs/`: see
/// [`crate::state_files`]).
pub struct Journal {
    path: PathBuf,
    file: Mutex<Appender>,
}

struct Appender {
    file: File,
    /// Why the journal ends in a torn line that could not be cut off, if it does: nothing more
    /// is appended, since it would be glued onto the fragment.
    torn: Option<String>,
    mirror: Option<Mirrored>,
}

/// Where else a journal's records go as they are written: `runbook serve --cluster-state`
/// keeps each run's journal through the API too, so another replica can resume the run.
pub trait Mirror: Send + Sync {
    /// Writes whole lines; `Ok` once they are durable there.
    fn append(&self, lines: &[u8]) -> Result<(), String>;
}

struct Mirrored {
    mirror: std::sync::Arc<dyn Mirror>,
    /// Lines written here and not yet there: they go with the next record that must be
    /// durable (the same records that are synced to disk), or the end of a step.
    pending: Vec<u8>,
    /// Why the mirror failed, once it has: nothing more is sent (lines sent again after a
    /// failure that had in fact landed would be there twice), and every record after says so,
    /// so the run stops before its next change with its journal incomplete.
    failed: Option<String>,
}

impl Journal {
    /// Creates `<state_dir>/runs/<run_id>.jsonl`; refuses to overwrite.
    pub fn create(state_dir: &Path, run_id: &str) -> std::io::Result<Self> {
        let dir = state_dir.join("runs");
        crate::state_files::own_dir(&dir)?;
        let path = dir.join(format!("{run_id}.jsonl"));
        let file =
            crate::state_files::open(&path, OpenOptions::new().create_new(true).append(true))?;
        Ok(Self::appending(path, file))
    }

    /// Opens an existing journal to add a record beside the run that writes it (the server
    /// records a resolved alert, or the end of a run that panicked). A journal that ends in a
    /// torn line is refused, since the record would be glued onto the fragment; `runbook
    /// resume` sets such a line aside ([`Journal::reopen`]).
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let mut file = crate::state_files::open(path, OpenOptions::new().read(true).append(true))?;
        let mut last = [0_u8; 1];
        if file.metadata()?.len() > 0 {
            file.seek(SeekFrom::End(-1))?;
            file.read_exact(&mut last)?;
            if last[0] != b'\n' {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "{} ends in a torn line (cut short by a crash or a full disk); `runbook resume` sets it aside",
                        path.display()
                    ),
                ));
            }
        }
        Ok(Self::appending(path.to_path_buf(), file))
    }

    /// Opens the journal of a run to go on with it (`runbook resume`, which holds the run lock,
    /// so nothing else writes the journal). A last line that is not a whole record (a crash
    /// mid-write, a full disk) is set aside: kept in `<journal>.torn` and cut off, so the next
    /// record starts a line of its own and the journal stays readable; the caller says so. A
    /// last record missing only its newline is whole, and gets its newline. The journal and its
    /// directory are tightened to 0600 and 0700 if they were looser.
    pub fn reopen(path: &Path) -> std::io::Result<(Self, Option<SetAside>)> {
        if let Some(dir) = path.parent() {
            crate::state_files::own_dir(dir)?;
        }
        let mut file = crate::state_files::open(path, OpenOptions::new().read(true).append(true))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let parsed = parse(&bytes).map_err(|bad| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, bad.message(path))
        })?;
        let set_aside = match parsed.torn {
            Some(torn) => {
                let mut name = path.as_os_str().to_owned();
                name.push(".torn");
                let aside = PathBuf::from(name);
                let fragment = &bytes[torn.offset..];
                let mut kept =
                    crate::state_files::open(&aside, OpenOptions::new().append(true).create(true))?;
                kept.write_all(fragment)?;
                if !fragment.ends_with(b"\n") {
                    kept.write_all(b"\n")?;
                }
                kept.sync_data()?;
                // Only once the fragment is safe elsewhere; a crash in between sets it aside
                // again at the next resume.
                file.set_len(torn.offset as u64)?;
                file.sync_data()?;
                Some(SetAside {
                    journal: path.to_path_buf(),
                    torn: aside,
                    line: torn.line,
                    bytes: torn.bytes,
                })
            }
            None if !bytes.is_empty() && !bytes.ends_with(b"\n") => {
                file.write_all(b"\n")?;
                file.sync_data()?;
                None
            }
            None => None,
        };
        Ok((Self::appending(path.to_path_buf(), file), set_aside))
    }

    fn appending(path: PathBuf, file: File) -> Self {
        Self {
            path,
            file: Mutex::new(Appender {
                file,
                torn: None,
                mirror: None,
            }),
        }
    }

    /// From now on, every record also goes to `mirror` (see [`Mirror`]); a record that must be
    /// durable is not appended until the mirror has it too, so an intent is durable there
    /// before its mutation, as it is on disk.
    pub fn mirror_to(&self, mirror: std::sync::Arc<dyn Mirror>) {
        let mut appender = self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        appender.mirror = Some(Mirrored {
            mirror,
            pending: Vec::new(),
            failed: None,
        });
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one record; syncs it to disk first if the record must survive a machine crash.
    /// A journal deleted since it was opened is not written to (nothing would be left of the
    /// record); a write cut short (a full disk) is cut off again, so the next record does not
    /// glue onto the fragment. (A record another process appended between the two, which only
    /// the server's side records could be, would be cut off with it.)
    pub fn append(&self, record: &Record) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut appender = self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(why) = &appender.torn {
            return Err(std::io::Error::other(format!(
                "it ends in a torn line since an earlier write failed ({why}); nothing more is appended"
            )));
        }
        let before = appender.file.metadata()?;
        if deleted(&before) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "it was deleted while the run went on",
            ));
        }
        if let Err(error) = appender.file.write_all(&line) {
            if let Err(cut) = appender.file.set_len(before.len()) {
                appender.torn = Some(format!("{error}; cutting the fragment off failed: {cut}"));
            }
            return Err(error);
        }
        if record.event.is_durable() {
            appender.file.sync_data()?;
        }
        if let Some(mirrored) = appender.mirror.as_mut() {
            if let Some(why) = &mirrored.failed {
                return Err(std::io::Error::other(format!(
                    "its copy in the cluster stopped taking records ({why})"
                )));
            }
            mirrored.pending.extend_from_slice(&line);
            let flush = record.event.is_durable()
                || matches!(
                    record.event,
                    Event::StepFinished { .. } | Event::UndoFinished { .. }
                );
            if flush {
                if let Err(error) = mirrored.mirror.append(&mirrored.pending) {
                    mirrored.failed = Some(error.clone());
                    return Err(std::io::Error::other(format!(
                        "its copy in the cluster: {error}"
                    )));
                }
                mirrored.pending.clear();
            }
        }
        Ok(())
    }
}

/// Whether the file of an open handle has no name left (it was deleted).
fn deleted(metadata: &std::fs::Metadata) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        metadata.nlink() == 0
    }
    #[cfg(not(unix))]
    {
        let _ = metadata;
        false
    }
}

/// A torn last line that [`Journal::reopen`] moved out of the journal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetAside {
    pub journal: PathBuf,
    /// `<journal>.torn`, which keeps every fragment set aside, one a line.
    pub torn: PathBuf,
    /// Its line number in the journal (from 1).
    pub line: usize,
    pub bytes: usize,
}

impl std::fmt::Display for SetAside {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the journal {} ended in a torn line (line {}, {} bytes, cut short by a crash or a full disk): it was moved to {}, and the run goes on from the last whole record",
            self.journal.display(),
            self.line,
            self.bytes,
            self.torn.display()
        )
    }
}

/// What a journal holds: its whole records, and the torn line after them, if there is one.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Contents {
    pub records: Vec<Record>,
    pub torn: Option<TornLine>,
}

/// A last line that is not a whole record: what a crash mid-write or a full disk leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TornLine {
    /// Its line number (from 1).
    pub line: usize,
    /// Where it starts in the file.
    pub offset: usize,
    pub bytes: usize,
}

impl Contents {
    /// What a reader of the journal at `path` says of its torn last line, if it has one.
    pub fn torn_warning(&self, path: &Path) -> Option<String> {
        self.torn.map(|torn| {
            format!(
                "{}:{}: the last line is torn ({} bytes cut short by a crash or a full disk); showing the {} whole records before it",
                path.display(),
                torn.line,
                torn.bytes,
                self.records.len()
            )
        })
    }
}

/// Reads a journal back. A torn last line (see [`TornLine`]) is reported beside the records
/// before it; any other line that is not a record is an error naming its line number.
pub fn read(path: &Path) -> Result<Contents, String> {
    let bytes =
        std::fs::read(path).map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    parse(&bytes).map_err(|bad| bad.message(path))
}

/// [`read`], of a journal's bytes from elsewhere (its copy in the cluster); `name` says where
/// in messages.
pub fn read_bytes(bytes: &[u8], name: &Path) -> Result<Contents, String> {
    parse(bytes).map_err(|bad| bad.message(name))
}

/// A line in the middle of a journal that is not a record.
struct BadLine {
    line: usize,
    error: serde_json::Error,
}

impl BadLine {
    fn message(&self, path: &Path) -> String {
        format!(
            "{}:{}: not a journal record: {}",
            path.display(),
            self.line,
            self.error
        )
    }
}

fn parse(bytes: &[u8]) -> Result<Contents, BadLine> {
    let blank = |line: &[u8]| line.iter().all(u8::is_ascii_whitespace);
    let lines: Vec<&[u8]> = bytes.split(|byte| *byte == b'\n').collect();
    let last = lines.iter().rposition(|line| !blank(line));
    let mut contents = Contents::default();
    let mut offset = 0;
    for (index, line) in lines.iter().enumerate() {
        let start = offset;
        offset += line.len() + 1;
        if blank(line) {
            continue;
        }
        match serde_json::from_slice::<Record>(line) {
            Ok(record) => contents.records.push(record),
            Err(_) if Some(index) == last => {
                contents.torn = Some(TornLine {
                    line: index + 1,
                    offset: start,
                    bytes: bytes.len() - start,
                });
            }
            Err(error) => {
                return Err(BadLine {
                    line: index + 1,
                    error,
                })
            }
        }
    }
    Ok(contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("runbook-journal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn skipped(step: &str) -> Record {
        Record {
            time: timestamp(SystemTime::UNIX_EPOCH),
            run: "r1".to_owned(),
            event: Event::StepSkipped {
                step: step.to_owned(),
                reason: "when was false".to_owned(),
            },
        }
    }

    fn tear(path: &Path, fragment: &[u8]) {
        let mut file = OpenOptions::new().append(true).open(path).expect("open");
        file.write_all(fragment).expect("torn write");
    }

    #[test]
    fn appends_and_reads_back_reporting_a_torn_last_line() {
        let dir = scratch("read");
        let journal = Journal::create(&dir, "r1").expect("create");
        journal.append(&skipped("a")).expect("append");
        assert!(
            Journal::create(&dir, "r1").is_err(),
            "a journal is never overwritten"
        );
        let whole = std::fs::metadata(journal.path()).expect("metadata").len();
        tear(journal.path(), b"{\"time\":\"2026");
        let contents = read(journal.path()).expect("read");
        assert_eq!(contents.records, vec![skipped("a")]);
        assert_eq!(
            contents.torn,
            Some(TornLine {
                line: 2,
                offset: usize::try_from(whole).expect("small"),
                bytes: 13
            })
        );
        let warning = contents.torn_warning(journal.path()).expect("a warning");
        assert!(
            warning.ends_with(":2: the last line is torn (13 bytes cut short by a crash or a full disk); showing the 1 whole records before it"),
            "{warning}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Issue 13: `resume` appended its first record onto the fragment a crash left, and the
    /// journal was unreadable from then on.
    #[test]
    fn reopen_sets_a_torn_last_line_aside_and_the_next_record_starts_a_line_of_its_own() {
        let dir = scratch("reopen");
        let journal = Journal::create(&dir, "r1").expect("create");
        journal.append(&skipped("a")).expect("append");
        let whole = std::fs::read(journal.path()).expect("journal");
        tear(journal.path(), b"{\"time\":\"2026-01-01T00:00");
        let (reopened, set_aside) = Journal::reopen(journal.path()).expect("reopen");
        let set_aside = set_aside.expect("the torn line is set aside");
        let torn_path = dir.join("runs/r1.jsonl.torn");
        assert_eq!(
            set_aside,
            SetAside {
                journal: journal.path().to_path_buf(),
                torn: torn_path.clone(),
                line: 2,
                bytes: 25,
            }
        );
        let said = set_aside.to_string();
        assert!(
            said.contains(&journal.path().display().to_string())
                && said.contains(&torn_path.display().to_string()),
            "the warning names both files: {said}"
        );
        assert_eq!(
            std::fs::read_to_string(&torn_path).expect("torn file"),
            "{\"time\":\"2026-01-01T00:00\n"
        );
        assert_eq!(
            std::fs::read(journal.path()).expect("journal"),
            whole,
            "cut back to the last whole record"
        );
        reopened.append(&skipped("b")).expect("append");
        assert_eq!(
            read(journal.path()).expect("read"),
            Contents {
                records: vec![skipped("a"), skipped("b")],
                torn: None
            }
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn reopen_sets_aside_an_unparsable_last_line_keeps_a_whole_one_and_refuses_a_bad_middle() {
        let dir = scratch("lines");
        let journal = Journal::create(&dir, "r1").expect("create");
        journal.append(&skipped("a")).expect("append");
        // What the old resume left: a fragment with a whole record glued onto it.
        let glued = format!(
            "{{\"time\":\"2026{}\n",
            serde_json::to_string(&skipped("b")).expect("json")
        );
        tear(journal.path(), glued.as_bytes());
        let (_, set_aside) = Journal::reopen(journal.path()).expect("reopen");
        assert_eq!(set_aside.map(|aside| aside.line), Some(2));
        assert_eq!(
            read(journal.path()).expect("read").records,
            vec![skipped("a")]
        );

        // A last record missing only its newline is whole: kept, and given its newline.
        let line = serde_json::to_string(&skipped("c")).expect("json");
        tear(journal.path(), line.as_bytes());
        let (reopened, set_aside) = Journal::reopen(journal.path()).expect("reopen");
        assert_eq!(set_aside, None);
        reopened.append(&skipped("d")).expect("append");
        assert_eq!(
            read(journal.path()).expect("read").records,
            vec![skipped("a"), skipped("c"), skipped("d")]
        );

        tear(journal.path(), b"not a record\n");
        reopened.append(&skipped("e")).expect("append");
        let error = read(journal.path()).expect_err("a bad line in the middle");
        assert!(
            error.ends_with(":4: not a journal record: expected ident at line 1 column 2"),
            "{error}"
        );
        assert!(Journal::reopen(journal.path()).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_journal_with_a_torn_last_line_is_not_appended_to_beside_its_run() {
        let dir = scratch("open");
        let journal = Journal::create(&dir, "r1").expect("create");
        journal.append(&skipped("a")).expect("append");
        Journal::open(journal.path()).expect("a whole journal opens");
        tear(journal.path(), b"{\"ti");
        let refused = Journal::open(journal.path())
            .err()
            .expect("refused")
            .to_string();
        assert!(refused.contains("ends in a torn line"), "{refused}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Issue 13: a journal deleted mid-run went on being written, to a file nobody can read.
    #[cfg(unix)]
    #[test]
    fn a_deleted_journal_refuses_the_next_record_saying_so() {
        let dir = scratch("deleted");
        let journal = Journal::create(&dir, "r1").expect("create");
        journal.append(&skipped("a")).expect("append");
        std::fs::remove_file(journal.path()).expect("delete");
        let refused = journal.append(&skipped("b")).expect_err("refused");
        assert_eq!(refused.to_string(), "it was deleted while the run went on");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A failed write that cannot be cut off again (`/dev/full` cannot be truncated) stops the
    /// journal: later records would be glued onto the fragment.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_failed_write_that_cannot_be_cut_off_stops_the_journal() {
        let full = OpenOptions::new()
            .append(true)
            .open("/dev/full")
            .expect("/dev/full");
        let journal = Journal::appending(PathBuf::from("/dev/full"), full);
        let error = journal.append(&skipped("a")).expect_err("the disk is full");
        assert_eq!(error.raw_os_error(), Some(28), "{error}");
        let refused = journal.append(&skipped("b")).expect_err("refused");
        assert!(
            refused
                .to_string()
                .starts_with("it ends in a torn line since an earlier write failed"),
            "{refused}"
        );
    }
}
