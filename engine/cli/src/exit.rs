//! Exit codes: few, fixed, and the same for every command (documented in README.md).

use std::process::ExitCode;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// 0: the command or run succeeded.
    Succeeded = 0,
    /// 1: a step failed and the run was rolled back.
    RolledBack = 1,
    /// 2: invalid runbook, input or usage.
    Invalid = 2,
    /// 3: a precondition did not hold; nothing was changed.
    PreconditionFailed = 3,
    /// 4: stopped at a confirmation gate, or aborted.
    Stopped = 4,
    /// 5: an undo or the rollback failed; a human must act.
    RollbackFailed = 5,
    /// 6: the cluster could not be reached, or refused the credentials; nothing ran.
    Unreachable = 6,
    /// 7: the run's journal is incomplete (a write failed, or it was deleted during the run),
    /// whatever the outcome, unless an undo or the rollback failed (5).
    JournalIncomplete = 7,
}

impl Exit {
    /// The exit for a run's documented code.
    pub fn from_code(code: u8) -> Self {
        match code {
            0 => Self::Succeeded,
            1 => Self::RolledBack,
            3 => Self::PreconditionFailed,
            4 => Self::Stopped,
            5 => Self::RollbackFailed,
            6 => Self::Unreachable,
            7 => Self::JournalIncomplete,
            _ => Self::Invalid,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}
