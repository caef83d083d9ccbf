//! Exit codes: few, fixed, and the same for every command (documented in README.md).

use std::process::ExitCode;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(dead_code)] // Run outcomes (1, 3, 4, 5) are produced by `runbook run`, which lands with the executor.
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
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}
