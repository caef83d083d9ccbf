//! The `runbook` command line: thin commands over the one compiler in `runbook-core`.

mod exit;

use std::io::{IsTerminal, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use runbook_core::alert::{first_match, WebhookPayload};
use runbook_core::bind::{bind, parse_set};
use runbook_core::compile::{Compiler, Plan, TriggeredBy};
use runbook_core::diagnostic::{
    did_you_mean, render_github, render_json, render_text, Diagnostics, Severity,
};
use runbook_core::runbook::{Catalog, Runbook};

use exit::Exit;

/// Declarative runbooks for Kubernetes operations: validate, plan and graph them.
#[derive(Parser, Debug)]
#[command(name = "runbook", version, about, propagate_version = true)]
struct Cli {
    /// The runbooks folder.
    #[arg(
        long,
        global = true,
        env = "RUNBOOK_DIR",
        default_value = "runbooks",
        value_name = "DIR"
    )]
    dir: PathBuf,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check runbooks and fact libraries; report every problem with file:line:col.
    Validate {
        /// Files or folders to check (default: the runbooks folder).
        paths: Vec<PathBuf>,
        #[arg(long, value_enum, default_value_t = DiagnosticFormat::Text)]
        format: DiagnosticFormat,
        /// Treat warnings (such as a mutating step with no undo) as errors.
        #[arg(long)]
        deny_warnings: bool,
        /// Show the source line under each problem: on a terminal (auto), always or never.
        #[arg(long, value_enum, default_value_t = When::Auto)]
        excerpt: When,
    },
    /// The catalog: every runbook with its description, triggers and file.
    List {
        #[arg(long, value_enum, default_value_t = ListFormat::Text)]
        format: ListFormat,
    },
    /// The compiled plan in execution order, with params substituted.
    Plan {
        /// A runbook name (`metadata.name`) or a path to a runbook file.
        name: String,
        /// Bind a param: `--set namespace=openbao`.
        #[arg(long = "set", value_name = "NAME=VALUE")]
        sets: Vec<String>,
        /// Bind params from the first firing alert in an Alertmanager webhook payload.
        #[arg(long, value_name = "FILE")]
        alert: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
        format: PlanFormat,
    },
    /// The plan's DAG, for Graphviz or Mermaid.
    Graph {
        /// A runbook name (`metadata.name`) or a path to a runbook file.
        name: String,
        #[arg(long = "set", value_name = "NAME=VALUE")]
        sets: Vec<String>,
        #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
        format: GraphFormat,
    },
    /// The JSON Schema for runbooks and fact libraries.
    Schema,
    /// Shell completions.
    Completions { shell: clap_complete::Shell },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum DiagnosticFormat {
    Text,
    Json,
    Github,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum When {
    Auto,
    Always,
    Never,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ListFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum PlanFormat {
    Text,
    Markdown,
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum GraphFormat {
    Dot,
    Mermaid,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RUNBOOK_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate {
            paths,
            format,
            deny_warnings,
            excerpt,
        } => validate(&cli.dir, paths, format, deny_warnings, excerpt),
        Command::List { format } => list(&cli.dir, format),
        Command::Plan {
            name,
            sets,
            alert,
            format,
        } => plan(&cli.dir, &name, &sets, alert.as_deref(), format),
        Command::Graph { name, sets, format } => graph(&cli.dir, &name, &sets, format),
        Command::Schema => schema(),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "runbook",
                &mut std::io::stdout(),
            );
            Ok(Exit::Succeeded)
        }
    };
    match result {
        Ok(exit) => exit.into(),
        Err(error) => {
            eprintln!("error: {error:#}");
            Exit::Invalid.into()
        }
    }
}

fn print_diagnostics(
    diagnostics: Diagnostics,
    format: DiagnosticFormat,
    excerpt: When,
) -> std::io::Result<()> {
    let sorted = diagnostics.sorted();
    let excerpts = match excerpt {
        When::Always => true,
        When::Never => false,
        When::Auto => std::io::stderr().is_terminal(),
    };
    match format {
        DiagnosticFormat::Text => {
            let mut stderr = std::io::stderr().lock();
            for diagnostic in &sorted {
                stderr.write_all(render_text(diagnostic, excerpts).as_bytes())?;
            }
        }
        DiagnosticFormat::Json => {
            println!("{}", render_json(&sorted));
        }
        DiagnosticFormat::Github => {
            let mut stdout = std::io::stdout().lock();
            for diagnostic in &sorted {
                writeln!(stdout, "{}", render_github(diagnostic))?;
            }
        }
    }
    Ok(())
}

fn validate(
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

fn plural(count: usize) -> &'static str {
    if count == 1 {
        ""
    } else {
        "s"
    }
}

fn list(dir: &Path, format: ListFormat) -> anyhow::Result<Exit> {
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

fn load_dir(dir: &Path) -> anyhow::Result<(Catalog, Diagnostics, runbook_core::loader::Workspace)> {
    if !dir.is_dir() {
        anyhow::bail!(
            "runbooks folder `{}` not found; pass --dir DIR or set RUNBOOK_DIR",
            dir.display()
        );
    }
    Ok(runbook_core::load_catalog(&[dir.to_path_buf()]))
}

/// Problems elsewhere in the folder should not stop an on-call engineer from planning the
/// runbook they need, but they should hear about them.
fn note_broken_files(diagnostics: &Diagnostics) {
    let mut files: Vec<String> = diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| d.path().display().to_string())
        .collect();
    files.sort();
    files.dedup();
    if !files.is_empty() {
        eprintln!(
            "note: {} file{} in the runbooks folder {} problems ({}); run `runbook validate` for details",
            files.len(),
            plural(files.len()),
            if files.len() == 1 { "has" } else { "have" },
            files.join(", ")
        );
    }
}

/// Finds the runbook NAME (a name or a file path) and compiles its plan.
fn build_plan(
    dir: &Path,
    name: &str,
    sets: &[String],
    alert: Option<&Path>,
    lenient: bool,
) -> anyhow::Result<Result<Plan, Exit>> {
    let as_path = Path::new(name);
    let is_path = as_path.is_file() || name.ends_with(".yaml") || name.ends_with(".yml");
    let mut paths = Vec::new();
    if dir.is_dir() {
        paths.push(dir.to_path_buf());
    } else if !is_path {
        anyhow::bail!(
            "runbooks folder `{}` not found; pass --dir DIR or set RUNBOOK_DIR",
            dir.display()
        );
    }
    if is_path {
        if !as_path.is_file() {
            anyhow::bail!("{name}: no such file");
        }
        paths.push(as_path.to_path_buf());
    }
    let (catalog, diagnostics, workspace) = runbook_core::load_catalog(&paths);
    // Which runbook, and which files its plan depends on.
    let wanted = if is_path {
        let canonical = std::fs::canonicalize(as_path).ok();
        workspace
            .runbooks
            .iter()
            .find(|loaded| std::fs::canonicalize(loaded.source.path()).ok() == canonical)
            .map(|loaded| loaded.document.metadata.name.clone())
    } else {
        Some(name.to_owned())
    };
    let relevant = |path: &Path| {
        workspace
            .libraries
            .iter()
            .any(|library| library.source.path() == path)
            || (is_path && std::fs::canonicalize(path).ok() == std::fs::canonicalize(as_path).ok())
            || workspace.runbooks.iter().any(|loaded| {
                Some(&loaded.document.metadata.name) == wanted.as_ref()
                    && loaded.source.path() == path
            })
    };
    let mut blocking = diagnostics.clone();
    blocking.retain(|d| d.severity == Severity::Error && relevant(d.path()));
    let runbook = wanted
        .as_deref()
        .and_then(|wanted| catalog.get(wanted))
        .cloned();
    let Some(runbook) = runbook.filter(|_| !blocking.has_errors()) else {
        if blocking.has_errors() {
            print_diagnostics(blocking, DiagnosticFormat::Text, When::Auto)?;
            eprintln!(
                "error: runbook `{}` is invalid; fix the problems above",
                wanted.as_deref().unwrap_or(name)
            );
            return Ok(Err(Exit::Invalid));
        }
        if is_path {
            anyhow::bail!("{name} holds no runbook (kind: Runbook)");
        }
        let help = did_you_mean(name, catalog.runbooks.iter().map(|r| r.name.as_str()))
            .map(|h| format!("; {h}"))
            .unwrap_or_else(|| "; `runbook list` shows the catalog".to_owned());
        anyhow::bail!("no runbook named `{name}` in {}{help}", dir.display());
    };
    note_broken_files(&{
        let mut others = diagnostics;
        others.retain(|d| !relevant(d.path()));
        others
    });

    let mut parsed_sets = Vec::new();
    for text in sets {
        parsed_sets.push(parse_set(text).map_err(anyhow::Error::msg)?);
    }
    let mut triggered_by = None;
    if let Some(path) = alert {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read alert payload {}", path.display()))?;
        let payload = WebhookPayload::parse(&text).with_context(|| path.display().to_string())?;
        match first_match(&runbook, &payload) {
            Some((trigger, alert)) => {
                triggered_by = Some(TriggeredBy {
                    trigger,
                    alert: alert.clone(),
                })
            }
            None => {
                let triggers = runbook
                    .triggers
                    .iter()
                    .map(|t| t.alert_name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ");
                anyhow::bail!(
                    "no firing alert in {} matches a trigger of runbook `{}` (triggers: {})",
                    path.display(),
                    runbook.name,
                    if triggers.is_empty() {
                        "none"
                    } else {
                        &triggers
                    }
                );
            }
        }
    }
    let (bindings, errors) = bind(
        &runbook,
        &parsed_sets,
        triggered_by.as_ref().map(|t| &t.alert),
    );
    let mut fatal = false;
    for error in &errors {
        if error.missing && lenient {
            eprintln!("note: {error}; `${{params...}}` is shown as written");
        } else {
            eprintln!("error: {error}");
            fatal = true;
        }
    }
    if fatal {
        return Ok(Err(Exit::Invalid));
    }
    Ok(Ok(Compiler::compile(runbook, bindings, triggered_by)))
}

fn plan(
    dir: &Path,
    name: &str,
    sets: &[String],
    alert: Option<&Path>,
    format: PlanFormat,
) -> anyhow::Result<Exit> {
    let plan = match build_plan(dir, name, sets, alert, true)? {
        Ok(plan) => plan,
        Err(exit) => return Ok(exit),
    };
    let text = match format {
        PlanFormat::Text => runbook_core::render::plan_text(&plan),
        PlanFormat::Markdown => runbook_core::render::plan_markdown(&plan),
        PlanFormat::Json => format!(
            "{}\n",
            serde_json::to_string_pretty(&runbook_core::render::plan_json(&plan))?
        ),
    };
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(Exit::Succeeded)
}

fn graph(dir: &Path, name: &str, sets: &[String], format: GraphFormat) -> anyhow::Result<Exit> {
    let plan = match build_plan(dir, name, sets, None, true)? {
        Ok(plan) => plan,
        Err(exit) => return Ok(exit),
    };
    let text = match format {
        GraphFormat::Dot => runbook_core::render::graph_dot(&plan),
        GraphFormat::Mermaid => runbook_core::render::graph_mermaid(&plan),
    };
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(Exit::Succeeded)
}

fn schema() -> anyhow::Result<Exit> {
    println!(
        "{}",
        serde_json::to_string_pretty(&runbook_core::document::json_schema())?
    );
    Ok(Exit::Succeeded)
}
