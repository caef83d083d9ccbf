//! The state dir (journals, locks, the server's token) and the run ids that name its files.

use std::path::{Path, PathBuf};

/// Where runs keep their journals and locks: `--state-dir`, `RUNBOOK_STATE_DIR`,
/// `$XDG_STATE_HOME/runbook`, or `~/.local/state/runbook`.
pub fn state_dir(given: Option<&Path>) -> PathBuf {
    if let Some(dir) = given {
        return dir.to_path_buf();
    }
    if let Some(dir) = std::env::var_os("RUNBOOK_STATE_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME") {
        return PathBuf::from(dir).join("runbook");
    }
    std::env::var_os("HOME").map_or_else(
        || PathBuf::from(".runbook-state"),
        |home| PathBuf::from(home).join(".local/state/runbook"),
    )
}

/// A run id that sorts by time: `20261122T043000Z-openbao-sealed-3f2a`.
pub fn new_run_id(runbook: &str) -> String {
    let now = std::time::SystemTime::now();
    let stamp = humantime::format_rfc3339_seconds(now)
        .to_string()
        .replace(['-', ':'], "");
    let nanos = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let salt = (nanos ^ std::process::id().rotate_left(16)) & 0xffff;
    format!("{stamp}-{runbook}-{salt:04x}")
}
