//! `runbook list`: the catalog, as a table for people or JSON for tools.

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use runbook_core::runbook::Runbook;

use super::{load_dir, note_broken_files};
use crate::cli::ListFormat;
use crate::exit::Exit;

pub fn list(dir: &Path, format: ListFormat) -> anyhow::Result<Exit> {
    let (catalog, diagnostics, _) = load_dir(dir)?;
    match format {
        ListFormat::Json => {
            let items: Vec<serde_json::Value> = catalog
                .runbooks
                .iter()
                .map(|runbook| {
                    serde_json::json!({
                        "name": runbook.name,
                        "description": runbook.description,
                        "owner": runbook.owner,
                        "tags": runbook.tags,
                        "triggers": runbook.triggers.iter().map(|t| t.alert_name.clone()).collect::<Vec<_>>(),
                        "file": runbook.source.path().display().to_string(),
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&items)?);
        }
        ListFormat::Text => {
            let mut rows = vec![[
                "NAME".to_owned(),
                "DESCRIPTION".to_owned(),
                "TRIGGERS".to_owned(),
                "FILE".to_owned(),
            ]];
            let mut sorted: Vec<&Arc<Runbook>> = catalog.runbooks.iter().collect();
            sorted.sort_by(|a, b| a.name.cmp(&b.name));
            for runbook in sorted {
                let triggers = runbook
                    .triggers
                    .iter()
                    .map(|t| t.alert_name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ");
                rows.push([
                    runbook.name.clone(),
                    runbook.description.clone().unwrap_or_default(),
                    if triggers.is_empty() {
                        "-".to_owned()
                    } else {
                        triggers
                    },
                    runbook.source.path().display().to_string(),
                ]);
            }
            let widths: Vec<usize> = (0..4)
                .map(|column| {
                    rows.iter()
                        .map(|row| row[column].chars().count())
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            let mut stdout = std::io::stdout().lock();
            for row in &rows {
                let line = row
                    .iter()
                    .enumerate()
                    .map(|(column, cell)| {
                        if column == 3 {
                            cell.clone()
                        } else {
                            format!("{cell:<width$}", width = widths[column])
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("  ");
                writeln!(stdout, "{}", line.trim_end())?;
            }
        }
    }
    note_broken_files(&diagnostics);
    Ok(Exit::Succeeded)
}
