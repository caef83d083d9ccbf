//! The run lock: one run at a time per runbook and bound params.
//!
//! Locally it is an exclusive lock on a file in the state dir, which the operating system
//! releases when the process dies, however it dies; the file names the holder so a second run
//! can say who has it.

use std::io::{Read as _, Write as _};
use std::path::Path;

/// One run at a time per runbook and bound params: an exclusive lock on a file in the state
/// dir, which the operating system releases when the process dies.
pub struct RunLock {
    file: std::fs::File,
}

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another run holds it; the message names the holder.
    #[error("{0}")]
    Held(String),
    /// The lock cannot be taken at all (the state dir is not writable, the cluster refuses).
    #[error("{0}")]
    Unusable(String),
}

impl RunLock {
    pub fn acquire(state_dir: &Path, target: &str, holder: &str) -> Result<Self, LockError> {
        let dir = state_dir.join("locks");
        crate::state_files::own_dir(&dir)
            .map_err(|e| LockError::Unusable(format!("cannot create {}: {e}", dir.display())))?;
        let name: String = target
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = dir.join(format!("{name}.lock"));
        let mut file = crate::state_files::open(
            &path,
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true),
        )
        .map_err(|e| LockError::Unusable(format!("cannot open {}: {e}", path.display())))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(_) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(LockError::Held(format!(
                    "another run holds {} ({})",
                    path.display(),
                    holder.trim()
                )));
            }
        }
        let _ = file.set_len(0);
        let _ = writeln!(
            file,
            "run {holder}, pid {}, started {}",
            std::process::id(),
            humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        );
        let _ = file.flush();
        Ok(Self { file })
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // The lock itself goes with the file handle; clear the holder line so a stale one is
        // never shown (through the handle: the path may have been replaced since).
        let _ = self.file.set_len(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_run_is_refused_naming_the_holder_until_the_first_ends() {
        let dir = std::env::temp_dir().join(format!("runbook-lock-test-{}", std::process::id()));
        let first = RunLock::acquire(&dir, "openbao-sealed-abc", "run-1")
            .expect("first run takes the lock");
        let refused = RunLock::acquire(&dir, "openbao-sealed-abc", "run-2")
            .err()
            .expect("second run refused")
            .to_string();
        assert!(refused.contains("run run-1, pid"), "{refused}");
        assert!(
            RunLock::acquire(&dir, "openbao-sealed-other-params", "run-3").is_ok(),
            "other params are another target"
        );
        drop(first);
        assert!(
            RunLock::acquire(&dir, "openbao-sealed-abc", "run-4").is_ok(),
            "released when the holder ends"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
