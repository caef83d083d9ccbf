//! `runbook test`: the scenario tests (`*.test.yaml`) of a library, each case against its own
//! simulated cluster.
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;

use super::{load_dir, note_broken_files, print_diagnostics};
use crate::cli::{DiagnosticFormat, When};
use crate::exit::Exit;

/// `runbook test`: every case of every test file, each on a paused clock so retries and verify
/// polls take no real time. Ends with `N passed, N failed`; exit 0 only if all passed.
pub fn test(dir: &Path, paths: Vec<PathBuf>) -> anyhow::Result<Exit> {
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
    let (catalog, diagnostics, _) = load_dir(dir)?;
    note_broken_files(&diagnostics);
    let catalog = Arc::new(catalog);
    let (files, skipped) = runbook_core::testing::find_test_files(&paths);
    if !skipped.is_empty() {
        print_diagnostics(skipped, DiagnosticFormat::Text, When::Auto)?;
    }
    if files.is_empty() {
        anyhow::bail!(
            "no test files (*.test.yaml) under {}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let (mut passed, mut failed) = (0usize, 0usize);
    let mut invalid = false;
    let mut stdout = std::io::stdout().lock();
    for path in files {
        let file = match runbook_core::testing::load_test_file(&path) {
            Ok(file) => file,
            Err(diagnostics) => {
                print_diagnostics(diagnostics, DiagnosticFormat::Text, When::Auto)?;
                invalid = true;
                continue;
            }
        };
        for case in &file.document.spec.cases {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .context("cannot start the async runtime")?;
            let result = runtime.block_on(runbook_core::testing::run_case(&catalog, &file, case));
            if result.failures.is_empty() {
                passed += 1;
                writeln!(stdout, "PASS {} :: {}", path.display(), case.name)?;
            } else {
                failed += 1;
                writeln!(stdout, "FAIL {} :: {}", path.display(), case.name)?;
                for failure in &result.failures {
                    writeln!(stdout, "     {}", failure.replace('\n', "\n     "))?;
                }
            }
        }
    }
    writeln!(stdout, "{passed} passed, {failed} failed")?;
    Ok(if invalid {
        Exit::Invalid
    } else if failed > 0 {
        Exit::RolledBack
    } else {
        Exit::Succeeded
    })
}
