//! `runbook show`: one run's journal, as lines a person reads or as the JSON records.

use std::io::Write as _;
use std::path::Path;

use crate::cli::OutputFormat;
use crate::exit::Exit;

/// `runbook show RUN --cluster`: the run's journal as `serve --cluster-state` keeps it through
/// the API (every replica's records of it, in order).
pub fn show_from_cluster(
    run_id: &str,
    connect: runbook_kube::ConnectOptions,
    output: OutputFormat,
) -> anyhow::Result<Exit> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let policy = connect.policy.clone();
    let read = runtime.block_on(async {
        let connection = runbook_kube::connect(&connect).await?;
        let transport = runbook_kube::transport::Transport::new(connection.client.clone(), policy);
        let bytes = runbook_kube::journal_store::JournalStore::read(
            &transport,
            &connection.namespace,
            run_id,
        )
        .await
        .map_err(|e| e.to_string())?;
        Ok::<_, String>((bytes, connection.namespace))
    });
    let (bytes, namespace) = match read {
        Ok(read) => read,
        Err(error) => {
            eprintln!("error: {error}");
            return Ok(Exit::Unreachable);
        }
    };
    if bytes.is_empty() {
        anyhow::bail!(
            "no journal of run `{run_id}` in namespace {namespace} (see `runbook runs --cluster`)"
        );
    }
    let name = std::path::PathBuf::from(format!("{namespace}/{run_id} (in the cluster)"));
    let contents = runbook_core::journal::read_bytes(&bytes, &name).map_err(anyhow::Error::msg)?;
    print(&contents, output, &name)
}

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
    print(&contents, output, &path)
}

fn print(
    contents: &runbook_core::journal::Contents,
    output: OutputFormat,
    path: &Path,
) -> anyhow::Result<Exit> {
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
    if let Some(warning) = contents.torn_warning(path) {
        stdout.flush()?;
        eprintln!("warning: {warning}");
    }
    Ok(Exit::Succeeded)
}
