//! `runbook validate`: every runbook and fact library checked, every problem reported in one pass.

use std::path::{Path, PathBuf};

use super::{plural, print_diagnostics};
use crate::cli::{DiagnosticFormat, When};
use crate::exit::Exit;

pub fn validate(
    dir: &Path,
    paths: Vec<PathBuf>,
    format: DiagnosticFormat,
    deny_warnings: bool,
    excerpt: When,
) -> anyhow::Result<Exit> {
    let paths = if paths.is_empty() {
        vec![dir.to_path_buf()]
    } else {
        paths
    };
    for path in &paths {
        if !path.exists() {
            anyhow::bail!("{}: no such file or folder", path.display());
        }
    }
    let (catalog, mut diagnostics, workspace) = runbook_core::load_catalog(&paths);
    empty_named_files(&paths, &workspace, &mut diagnostics);
    if deny_warnings {
        diagnostics.deny_warnings();
    }
    let errors = diagnostics.error_count();
    let warnings = diagnostics.warning_count();
    print_diagnostics(diagnostics, format, excerpt)?;
    eprintln!(
        "{}: {} runbook{}, {} fact librar{} in {} file{}; {errors} error{}, {warnings} warning{}",
        if errors > 0 { "invalid" } else { "valid" },
        catalog.runbooks.len(),
        plural(catalog.runbooks.len()),
        workspace.libraries.len(),
        if workspace.libraries.len() == 1 {
            "y"
        } else {
            "ies"
        },
        workspace.files.len(),
        plural(workspace.files.len()),
        plural(errors),
        plural(warnings),
    );
    // The process ends here: freeing thousands of compiled runbooks one by one would only
    // delay the exit (a sixth of validate's time on a 1,000-runbook library).
    std::mem::forget((catalog, workspace));
    Ok(if errors > 0 {
        Exit::Invalid
    } else {
        Exit::Succeeded
    })
}

/// A file named on the command line that holds no runbook and no fact library, and that no
/// other diagnostic is about, is an error: `valid: 0 runbooks` would read as a pass (issue 16).
fn empty_named_files(
    paths: &[PathBuf],
    workspace: &runbook_core::loader::Workspace,
    diagnostics: &mut runbook_core::diagnostic::Diagnostics,
) {
    for path in paths.iter().filter(|path| path.is_file()) {
        let holds = workspace
            .runbooks
            .iter()
            .map(|loaded| loaded.source.path())
            .chain(
                workspace
                    .libraries
                    .iter()
                    .map(|loaded| loaded.source.path()),
            )
            .any(|source| source == path.as_path());
        let said = diagnostics.iter().any(|d| d.path() == path.as_path());
        if holds || said {
            continue;
        }
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let source = runbook_core::source::SourceFile::new(path, text);
        diagnostics.push(
            runbook_core::diagnostic::Diagnostic::error(
                runbook_core::diagnostic::Code::Empty,
                &source,
                runbook_core::source::Span::point(runbook_core::source::Position::new(1, 1)),
                "this file holds no runbook and no fact library",
            )
            .with_help("a runbook starts with `apiVersion: runbook.dev/v1alpha1` and `kind: Runbook`; scenarios and tests are checked by `runbook test`"),
        );
    }
}
