//! `runbook list`: the catalog, as a table for people, JSON for tools, or the markdown table of a
//! library's README (so the README is generated from the runbooks, never kept by hand).

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use runbook_core::runbook::{RollbackSpec, Runbook, UndoSpec};

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
        ListFormat::Markdown => {
            std::io::stdout()
                .lock()
                .write_all(markdown(dir, &catalog.runbooks).as_bytes())?;
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

/// The annotation that names the guide section a runbook follows.
const GUIDE_ANNOTATION: &str = "runbook.dev/guide";

/// The runbooks table of a library's README, each cell derived from the runbook: its
/// triggers, description, gates, and what undoes its changes. Sorted by name, so the table
/// only changes when a runbook does.
fn markdown(dir: &Path, runbooks: &[Arc<Runbook>]) -> String {
    let mut sorted: Vec<&Arc<Runbook>> = runbooks.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    // The guide column only when some runbook names its guide section.
    let guides = sorted
        .iter()
        .any(|runbook| runbook.annotations.contains_key(GUIDE_ANNOTATION));
    let mut out = String::from("| runbook | trigger | what it does | gates | undo / rollback |");
    out.push_str(if guides {
        " guide section |\n|---|---|---|---|---|---|\n"
    } else {
        "\n|---|---|---|---|---|\n"
    });
    for runbook in sorted {
        let path = runbook.source.path();
        let link = path.strip_prefix(dir).unwrap_or(path);
        let cells = [
            format!("[`{}`]({})", runbook.name, link.display()),
            trigger_cell(runbook),
            runbook
                .description
                .clone()
                .unwrap_or_else(|| "—".to_owned()),
            gates_cell(runbook),
            undo_cell(runbook),
        ];
        let guide = runbook
            .annotations
            .get(GUIDE_ANNOTATION)
            .cloned()
            .unwrap_or_else(|| "—".to_owned());
        let cells: Vec<String> = cells
            .iter()
            .chain(guides.then_some(&guide))
            .map(|cell| table_cell(cell))
            .collect();
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    out
}

/// A pipe would end the cell and a line break the row.
fn table_cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// `` alert `Name{matchers}` (cooldown 30m); `a`, `b` labels ``, or the params an operator sets.
fn trigger_cell(runbook: &Runbook) -> String {
    if runbook.triggers.is_empty() {
        let required: Vec<String> = runbook
            .params
            .iter()
            .filter(|param| param.default.is_none())
            .map(|param| format!("{}=", param.name))
            .collect();
        return if required.is_empty() {
            "operator".to_owned()
        } else {
            format!("operator (`--set {}`)", required.join(" "))
        };
    }
    let alerts: Vec<String> = runbook
        .triggers
        .iter()
        .map(|trigger| {
            let matchers: Vec<String> = trigger.matchers.iter().map(ToString::to_string).collect();
            let mut text = if matchers.is_empty() {
                format!("alert `{}`", trigger.alert_name)
            } else {
                format!("alert `{}{{{}}}`", trigger.alert_name, matchers.join(", "))
            };
            let mut notes = Vec::new();
            if let Some(cooldown) = trigger.cooldown {
                notes.push(format!("cooldown {}", humantime::format_duration(cooldown)));
            }
            if trigger.auto_approve {
                notes.push("autoApprove".to_owned());
            }
            if !notes.is_empty() {
                text.push_str(&format!(" ({})", notes.join(", ")));
            }
            text
        })
        .collect();
    let labels: Vec<String> = runbook
        .params
        .iter()
        .filter_map(|param| match &param.from {
            Some(runbook_core::runbook::AlertField::Labels(label)) => Some(format!("`{label}`")),
            _ => None,
        })
        .collect();
    let mut cell = alerts.join(", ");
    if !labels.is_empty() {
        cell.push_str(&format!(
            "; {} label{}",
            labels.join(", "),
            super::plural(labels.len())
        ));
    }
    cell
}

/// The steps behind a confirmation gate.
fn gates_cell(runbook: &Runbook) -> String {
    let gates: Vec<String> = runbook
        .steps
        .iter()
        .filter(|step| step.confirm.is_some())
        .map(|step| format!("`{}`", step.id))
        .collect();
    if gates.is_empty() {
        "—".to_owned()
    } else {
        gates.join(", ")
    }
}

/// How each mutating step is undone (by its action's own inverse, by the author's undo, or
/// not at all, and why), then the rollback.
fn undo_cell(runbook: &Runbook) -> String {
    let (mut native, mut declared, mut irreversible, mut missing) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for step in &runbook.steps {
        let id = format!("`{}`", step.id);
        match &step.undo {
            UndoSpec::NotNeeded => {}
            UndoSpec::Native(_) => native.push(id),
            UndoSpec::Declared(_) => declared.push(id),
            UndoSpec::Irreversible(_) => irreversible.push(id),
            UndoSpec::Missing => missing.push(id),
        }
    }
    let mut parts = Vec::new();
    for (steps, what) in [
        (native, "undone automatically"),
        (declared, "undone by its undo"),
        (irreversible, "irreversible"),
        (missing, "no undo"),
    ] {
        if !steps.is_empty() {
            parts.push(format!("{} {what}", steps.join(", ")));
        }
    }
    if parts.is_empty() {
        parts.push("no mutations".to_owned());
    }
    parts.push(match &runbook.rollback {
        None => "no rollback".to_owned(),
        Some(RollbackSpec::Named(named)) => format!("rollback {}", named.name()),
        Some(RollbackSpec::Runbook { name, .. }) => format!("rollback runbook `{name}`"),
        Some(RollbackSpec::Steps(steps)) => format!(
            "rollback: {} step{}",
            steps.len(),
            super::plural(steps.len())
        ),
    });
    parts.join("; ")
}
