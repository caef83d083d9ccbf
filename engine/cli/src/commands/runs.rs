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

/// `runbook runs --cluster`: the RunbookRun objects `runbook serve --cluster-state` keeps in
/// the namespace, oldest first, with the columns `kubectl get runbookruns` shows.
pub fn cluster_runs(
    kubeconfig: Option<PathBuf>,
    context: Option<String>,
    namespace: Option<String>,
) -> anyhow::Result<Exit> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let policy = runbook_kube::Policy::default();
        let connection = match runbook_kube::connect(&runbook_kube::ConnectOptions {
            kubeconfig,
            context,
            namespace,
            policy: policy.clone(),
        })
        .await
        {
            Ok(connection) => connection,
            Err(error) => {
                eprintln!("error: {error}");
                return Ok(Exit::Unreachable);
            }
        };
        let objects = runbook_kube::runs::RunObjects::new(
            runbook_kube::transport::Transport::new(connection.client.clone(), policy),
            connection.namespace.clone(),
        );
        let mut runs = match objects.list(None).await {
            Ok(runs) => runs,
            Err(runbook_core::effects::EffectError::NotFound(_)) => {
                eprintln!("error: the cluster does not serve runbookruns.runbook.dev: install the CRD (kubectl apply -f schemas/runbookrun.crd.yaml)");
                return Ok(Exit::Invalid);
            }
            Err(error) => {
                eprintln!("error: {error}");
                return Ok(Exit::Unreachable);
            }
        };
        if runs.is_empty() {
            eprintln!("no RunbookRuns in namespace {}", connection.namespace);
            return Ok(Exit::Succeeded);
        }
        let field = |run: &serde_json::Value, pointer: &str| {
            run.pointer(pointer)
                .and_then(|v| v.as_str())
                .filter(|v| !v.is_empty())
                .unwrap_or("-")
                .to_owned()
        };
        runs.sort_by_key(|run| {
            (
                field(run, "/metadata/creationTimestamp"),
                field(run, "/metadata/name"),
            )
        });
        let rows: Vec<[String; 7]> = runs
            .iter()
            .map(|run| {
                [
                    field(run, "/metadata/name"),
                    field(run, "/spec/runbook"),
                    field(run, "/status/phase"),
                    field(run, "/status/outcome"),
                    field(run, "/status/step"),
                    field(run, "/status/owner"),
                    field(run, "/metadata/creationTimestamp"),
                ]
            })
            .collect();
        let header = [
            "RUN", "RUNBOOK", "PHASE", "OUTCOME", "STEP", "OWNER", "CREATED",
        ];
        let mut widths = header.map(str::len);
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut stdout = std::io::stdout().lock();
        let line = |cells: Vec<&str>| {
            cells
                .iter()
                .zip(widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_owned()
        };
        writeln!(stdout, "{}", line(header.to_vec()))?;
        for row in &rows {
            let cells: Vec<String> = row.iter().map(|cell| printable(cell)).collect();
            writeln!(stdout, "{}", line(cells.iter().map(String::as_str).collect()))?;
        }
        Ok(Exit::Succeeded)
    })
}

/// `text` with its control characters escaped (`\x1b`), so a value from an alert cannot move
/// the cursor or forge a line.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                format!("\\x{:02x}", u32::from(c))
            } else {
                c.to_string()
            }
        })
        .collect()
}
