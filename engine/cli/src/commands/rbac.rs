//! `runbook rbac`: the ClusterRole the runbooks folder needs, derived by `runbook_core::rbac`
//! from what its runbooks' steps, undos, rollbacks and facts send to the API server. A runbook
//! that does not check would be missing from the role, so any error refuses (exit 2) instead
//! of printing a role that is silently too small.

use std::io::Write as _;
use std::path::Path;

use runbook_core::diagnostic::Severity;

use super::{load_dir, print_diagnostics};
use crate::cli::{DiagnosticFormat, When};
use crate::exit::Exit;

pub fn rbac(dir: &Path, name: &str) -> anyhow::Result<Exit> {
    let (catalog, mut diagnostics, _) = load_dir(dir)?;
    if diagnostics.has_errors() {
        diagnostics.retain(|d| d.severity == Severity::Error);
        print_diagnostics(diagnostics, DiagnosticFormat::Text, When::Auto)?;
        eprintln!("error: the runbooks above do not check, so the role would leave out what they need; fix them first");
        return Ok(Exit::Invalid);
    }
    let requirements = runbook_core::rbac::requirements(&catalog);
    for unknown in &requirements.unknown {
        eprintln!("warning: not derived, grant it yourself: {unknown}");
    }
    std::io::stdout()
        .lock()
        .write_all(requirements.cluster_role(name).as_bytes())?;
    Ok(Exit::Succeeded)
}
