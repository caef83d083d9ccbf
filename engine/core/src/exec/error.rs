//! Why a step failed, typed until the edge: the journal and the report turn it into text, and
//! the retry policy ([`StepError::retryable`]) decides from the kind, in the spirit of
//! kube-runtime's `error_policy`. Once an error is a string nobody can tell a Forbidden, which
//! no retry will fix, from a timeout, which one may.

use std::time::Duration;

use crate::effects::EffectError;
use crate::runbook::format_duration;

#[derive(Clone, Debug, thiserror::Error)]
pub enum StepError {
    /// The cluster, a process, an HTTP endpoint or the notifier answered with an error.
    #[error("{0}")]
    Effect(#[from] EffectError),
    /// The attempt ran past the step's `timeout`.
    #[error("timed out after {}", format_duration(*.0))]
    TimedOut(Duration),
    /// A fact the step reads could not be read.
    #[error("fact `{name}`: {error}")]
    Fact { name: String, error: Box<StepError> },
    /// An expression or template could not be evaluated, or gave a value of the wrong kind.
    #[error("{0}")]
    Expression(String),
    /// A process or pod command exited non-zero, or printed what could not be parsed.
    #[error("{0}")]
    Command(String),
    /// The journal could not be written: nothing more may change.
    #[error("{0}")]
    Journal(String),
    /// The runbook asked for something that cannot be done (a count that is not one, a
    /// manifest without a name, a called runbook that failed).
    #[error("{0}")]
    Refused(String),
    /// Cancelled by an interrupt (Ctrl-C, SIGTERM) while it ran.
    #[error("interrupted")]
    Interrupted,
    /// The engine panicked while doing the step: a bug. The step fails (never retried, since
    /// the same input panics again) and the run undoes and rolls back as for any failure.
    #[error("the engine panicked ({0}); this is a bug")]
    Panicked(String),
    /// Anything else; retried as before, since nothing says it is permanent.
    #[error("{0}")]
    Other(String),
}

impl StepError {
    /// Whether another attempt may succeed. Forbidden, Invalid, NotFound and a field-manager
    /// conflict are the same every time (RBAC, the object's schema, a missing object, another
    /// owner of the field): retrying only delays the rollback. A broken journal stops the run.
    /// Throttling, server errors, lost connections, timeouts and failed commands may pass.
    pub fn retryable(&self) -> bool {
        match self {
            Self::Effect(error) => error.retryable(),
            Self::Fact { error, .. } => error.retryable(),
            Self::Journal(_) | Self::Refused(_) | Self::Interrupted | Self::Panicked(_) => false,
            Self::TimedOut(_) | Self::Expression(_) | Self::Command(_) | Self::Other(_) => true,
        }
    }

    /// Whether the error is the engine's or the runbook's, never the world's: polling again
    /// (a `verify`) cannot make it pass. A fact the cluster cannot read yet (NotFound, a
    /// timeout) is not permanent: the object may appear.
    pub fn permanent(&self) -> bool {
        match self {
            Self::Fact { error, .. } => error.permanent(),
            Self::Journal(_) | Self::Refused(_) | Self::Panicked(_) | Self::Interrupted => true,
            _ => false,
        }
    }

    /// The kind, as the journal records it (`errorKind`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Effect(error) => error.kind(),
            Self::Fact { error, .. } => error.kind(),
            Self::TimedOut(_) => "timed-out",
            Self::Expression(_) => "expression",
            Self::Command(_) => "command",
            Self::Journal(_) => "journal",
            Self::Refused(_) => "refused",
            Self::Interrupted => "interrupted",
            Self::Panicked(_) => "panicked",
            Self::Other(_) => "other",
        }
    }
}

impl From<String> for StepError {
    fn from(message: String) -> Self {
        Self::Other(message)
    }
}

impl From<&str> for StepError {
    fn from(message: &str) -> Self {
        Self::Other(message.to_owned())
    }
}

impl From<Box<rhai::EvalAltResult>> for StepError {
    fn from(error: Box<rhai::EvalAltResult>) -> Self {
        Self::Expression(error.to_string())
    }
}
