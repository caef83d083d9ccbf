//! `runbook runs`: the journals in the state dir, one line each, newest last.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::exit::Exit;

pub fn runs(state_dir: Option<&Path>) -> anyhow::Result<Exit> {
    let dir = crate::state::state_dir(state_dir).join("runs");
    let mut paths: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|e| e == "jsonl"))
            .collect(),
        Err(_) => Vec::new(),
    };
    paths.sort();
    if paths.is_empty() {
        eprintln!("no runs recorded in {}", dir.display());
        return Ok(Exit::Succeeded);
    }
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "RUN  OUTCOME  STARTED")?;
    for path in paths {
        let id = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let records = runbook_core::journal::read(&path)
            .map(|contents| contents.records)
            .unwrap_or_default();
        let started = records.first().map(|r| r.time.clone()).unwrap_or_default();
        let outcome = records
            .iter()
            .rev()
            .find_map(|r| match &r.event {
                runbook_core::journal::Event::RunFinished { outcome, .. } => {
                    Some(format!("{outcome:?}"))
                }
                _ => None,
            })
            .unwrap_or_else(|| "unfinished".to_owned());
        writeln!(stdout, "{id}  {outcome}  {started}")?;
    }
    Ok(Exit::Succeeded)
}
