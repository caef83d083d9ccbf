//! `runbook show`: one run's journal, as lines a person reads or as the JSON records.

use std::io::Write as _;
use std::path::Path;

use crate::cli::OutputFormat;
use crate::exit::Exit;

pub fn show(run_id: &str, state_dir: Option<&Path>, output: OutputFormat) -> anyhow::Result<Exit> {
    let path = crate::state::state_dir(state_dir)
        .join("runs")
        .join(format!("{run_id}.jsonl"));
    if !path.is_file() {
        anyhow::bail!(
            "no run `{run_id}` in {} (see `runbook runs`)",
            path.parent()
                .map(Path::display)
                .map(|d| d.to_string())
                .unwrap_or_default()
        );
    }
    let contents = runbook_core::journal::read(&path).map_err(anyhow::Error::msg)?;
    let mut stdout = std::io::stdout().lock();
    for record in &contents.records {
        match output {
            OutputFormat::Json => writeln!(stdout, "{}", serde_json::to_string(record)?)?,
            OutputFormat::Text => {
                if let Some(text) = crate::terminal::describe(&record.event) {
                    writeln!(stdout, "{} {text}", record.time)?;
                }
            }
        }
    }
    // After the records, so it is the last thing a reader sees.
    if let Some(warning) = contents.torn_warning(&path) {
        stdout.flush()?;
        eprintln!("warning: {warning}");
    }
    Ok(Exit::Succeeded)
}
