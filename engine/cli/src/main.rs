//! The `runbook` command line: thin commands over the one compiler in `runbook-core`.

mod client;
mod exit;
mod live;
mod serve;
mod world;

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

/// How `run` and `resume` run: params, approvals, the world, output and state.
#[derive(clap::Args, Debug)]
struct Execution {
    /// Bind a param: `--set namespace=openbao` (for `resume`: params the journal could not keep,
    /// such as secrets).
    #[arg(long = "set", value_name = "NAME=VALUE")]
    sets: Vec<String>,
    /// Approve every confirmation gate.
    #[arg(long)]
    yes: bool,
    /// Run against a simulated cluster loaded from a scenario file.
    #[arg(long, value_name = "SCENARIO")]
    simulate: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    output: OutputFormat,
    /// Where journals and locks live (default: $RUNBOOK_STATE_DIR, else ~/.local/state/runbook).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// The namespace for objects whose runbook names none (default: the kubeconfig
    /// context's, else `default`).
    #[arg(long, short = 'n')]
    namespace: Option<String>,
    /// Steps that may run at once.
    #[arg(long, default_value_t = 4)]
    parallelism: usize,
    #[command(flatten)]
    cluster: live::ClusterArgs,
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
    /// Run a runbook: preconditions, steps and verify; on failure, undo and roll back.
    Run {
        /// A runbook name (`metadata.name`) or a path to a runbook file.
        name: String,
        /// Bind params from the first firing alert in an Alertmanager webhook payload.
        #[arg(long, value_name = "FILE")]
        alert: Option<PathBuf>,
        /// Read live, validate every change server-side, change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        execution: Execution,
    },
    /// Run scenario tests (`*.test.yaml`) against the simulated cluster.
    Test {
        /// Test files or folders (default: the runbooks folder).
        paths: Vec<PathBuf>,
    },
    /// Go on with a run that was killed, from its journal (or roll it back).
    Resume {
        run_id: String,
        /// Undo the completed steps and roll back instead of going on.
        #[arg(long)]
        rollback: bool,
        /// A step that was running when the run stopped did take effect.
        #[arg(long, value_name = "STEP")]
        assume_done: Vec<String>,
        /// A step that was running when the run stopped did not take effect: run it again.
        #[arg(long, value_name = "STEP")]
        rerun: Vec<String>,
        #[command(flatten)]
        execution: Execution,
    },
    /// The runs recorded in the state dir, newest last.
    Runs {
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// One run's journal.
    Show {
        run_id: String,
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
    /// Serve Alertmanager webhooks: matching alerts start their runbooks.
    Serve {
        /// The address to listen on (port 0 picks a free one; the log says which).
        #[arg(long, default_value = "127.0.0.1:9095", value_name = "ADDR")]
        listen: std::net::SocketAddr,
        /// A file holding the bearer token every endpoint but /healthz requires (default: one
        /// is made and kept in STATE_DIR/serve.token).
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// Where journals and locks live (default: $RUNBOOK_STATE_DIR, else ~/.local/state/runbook).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// Run against a simulated cluster loaded from a scenario file.
        #[arg(long, value_name = "SCENARIO")]
        simulate: Option<PathBuf>,
        /// The namespace for objects whose runbook names none (default: the kubeconfig
        /// context's, else `default`).
        #[arg(long, short = 'n')]
        namespace: Option<String>,
        #[command(flatten)]
        cluster: live::ClusterArgs,
        /// Runs executed at the same time.
        #[arg(long, default_value_t = 4)]
        workers: usize,
        /// Steps of one run executed at the same time.
        #[arg(long, default_value_t = 4)]
        parallelism: usize,
        /// Runs waiting for a worker; when full, new alerts get 503 with Retry-After.
        #[arg(long, default_value_t = 256)]
        queue: usize,
        /// Runs one runbook may start per --run-cap-window.
        #[arg(long, default_value_t = 10)]
        run_cap: usize,
        #[arg(long, default_value = "1h", value_parser = parse_duration, value_name = "DURATION")]
        run_cap_window: std::time::Duration,
        /// Retry-After of a 503.
        #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
        retry_after: std::time::Duration,
        /// On SIGTERM, how long runs in flight may take to finish their current steps.
        #[arg(long, default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
        shutdown_grace: std::time::Duration,
        #[arg(long, value_enum, default_value_t = LogFormat::Json)]
        log_format: LogFormat,
    },
    /// Approve (or refuse) the gate a run started by `runbook serve` waits at.
    Approve {
        run_id: String,
        /// Refuse instead: the run stops there, nothing undone.
        #[arg(long)]
        deny: bool,
        /// The step whose gate is meant (refused if the run waits elsewhere).
        #[arg(long, value_name = "STEP")]
        step: Option<String>,
        /// The server's address.
        #[arg(
            long,
            env = "RUNBOOK_SERVER",
            default_value = "http://127.0.0.1:9095",
            value_name = "URL"
        )]
        server: String,
        /// The bearer token's file (default: STATE_DIR/serve.token).
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
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

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum OutputFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration such as 30s or 1h: {e}"))
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum GraphFormat {
    Dot,
    Mermaid,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `serve` sets up its own (structured) logs.
    if !matches!(cli.command, Command::Serve { .. }) {
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("RUNBOOK_LOG")
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,kube_client=off")),
            )
            .with_writer(std::io::stderr)
            .init();
    }
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
        Command::Run {
            name,
            alert,
            dry_run,
            execution,
        } => run(
            &cli.dir,
            RunArgs {
                name,
                alert,
                dry_run,
                execution,
            },
        ),
        Command::Test { paths } => test(&cli.dir, paths),
        Command::Resume {
            run_id,
            rollback,
            assume_done,
            rerun,
            execution,
        } => resume(
            &cli.dir,
            &run_id,
            ResumeArgs {
                rollback,
                assume_done,
                rerun,
            },
            RunArgs {
                name: String::new(),
                alert: None,
                dry_run: false,
                execution,
            },
        ),
        Command::Runs { state_dir } => runs(state_dir.as_deref()),
        Command::Show {
            run_id,
            state_dir,
            output,
        } => show(&run_id, state_dir.as_deref(), output),
        Command::Serve {
            listen,
            token_file,
            state_dir,
            simulate,
            namespace,
            cluster,
            workers,
            parallelism,
            queue,
            run_cap,
            run_cap_window,
            retry_after,
            shutdown_grace,
            log_format,
        } => serve::serve(
            &cli.dir,
            serve::ServeArgs {
                listen,
                token_file,
                state_dir: world::state_dir(state_dir.as_deref()),
                simulate,
                namespace,
                cluster,
                workers,
                parallelism,
                queue,
                run_cap,
                run_cap_window,
                retry_after,
                shutdown_grace,
                json_logs: log_format == LogFormat::Json,
            },
        ),
        Command::Approve {
            run_id,
            deny,
            step,
            server,
            token_file,
            state_dir,
        } => client::approve(
            &server,
            &run_id,
            !deny,
            step.as_deref(),
            token_file.as_deref(),
            &world::state_dir(state_dir.as_deref()),
        ),
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

struct RunArgs {
    name: String,
    alert: Option<PathBuf>,
    dry_run: bool,
    execution: Execution,
}

fn run(dir: &Path, args: RunArgs) -> anyhow::Result<Exit> {
    let plan = match build_plan(
        dir,
        &args.name,
        &args.execution.sets,
        args.alert.as_deref(),
        false,
    )? {
        Ok(plan) => plan,
        Err(exit) => return Ok(exit),
    };
    let state_dir = world::state_dir(args.execution.state_dir.as_deref());
    let run_id = world::new_run_id(&plan.runbook.name);
    drive(dir, plan, &args, &state_dir, &run_id, None)
}

/// Runs a plan: the world (simulated for now), the lock, the journal, progress, Ctrl-C, and
/// the summary. Shared by `run` and `resume`.
fn drive(
    dir: &Path,
    plan: runbook_core::compile::Plan,
    args: &RunArgs,
    state_dir: &Path,
    run_id: &str,
    resume: Option<(runbook_core::exec::Resume, Option<String>)>,
) -> anyhow::Result<Exit> {
    use runbook_core::effects::{Answer, Effects, FixedAnswer, Prompter, Reporter, SystemClock};
    let (resume, acted_on) = match resume {
        Some((resume, acted_on)) => (Some(resume), acted_on),
        None => (None, None),
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let world = match args.execution.simulate.as_deref() {
        Some(scenario_path) => {
            let scenario = match runbook_core::sim::load_scenario(scenario_path) {
                Ok(scenario) => scenario,
                Err(diagnostics) => {
                    print_diagnostics(diagnostics, DiagnosticFormat::Text, When::Auto)?;
                    eprintln!("error: scenario {} is invalid", scenario_path.display());
                    return Ok(Exit::Invalid);
                }
            };
            live::World::simulated(
                Arc::new(runbook_core::sim::SimWorld::new(&scenario)),
                scenario_path,
                args.execution.namespace.clone(),
            )
        }
        None => match runtime.block_on(live::World::live(
            &args.execution.cluster,
            args.execution.namespace.clone(),
        )) {
            Ok(world) => world,
            Err(error) => {
                eprintln!("error: {error}");
                return Ok(Exit::Unreachable);
            }
        },
    };
    // A half-done run goes on where it started, never on another cluster. (A simulated
    // cluster is a snapshot, not a place: another scenario may stand for the world as the
    // run left it.)
    let simulated = |what: &str| what.starts_with("simulated cluster ");
    if let Some(acted_on) = acted_on.filter(|acted_on| {
        *acted_on != world.description && !(simulated(acted_on) && simulated(&world.description))
    }) {
        eprintln!(
            "error: run `{run_id}` acted on {acted_on}; this resume would act on {}. Resume it against the same cluster (--kubeconfig, --context, or the same --simulate scenario)",
            world.description
        );
        return Ok(Exit::Invalid);
    }
    if let Some(live) = &world.live {
        if args.execution.output == OutputFormat::Text {
            eprintln!(
                "cluster: {}, Kubernetes {}, namespace {}{}",
                live.connection.describe(),
                live.connection.version,
                world.namespace,
                if args.dry_run {
                    " (dry-run: every change is sent with dryRun=All)"
                } else {
                    ""
                }
            );
        }
    }

    let target = lock_target(&plan.runbook, &plan.bindings);
    // A dry-run changes nothing, so it needs no lock and never blocks a real run.
    let lock = if args.dry_run {
        None
    } else {
        match runtime.block_on(live::Lock::acquire(
            &world,
            &args.execution.cluster,
            state_dir,
            &target,
            run_id,
        )) {
            Ok(lock) => Some(lock),
            Err(live::LockError::Held(holder)) => {
                eprintln!(
                    "error: runbook `{}` with these params is already running: {holder}",
                    plan.runbook.name
                );
                return Ok(Exit::Stopped);
            }
            Err(live::LockError::Unusable(why)) => {
                eprintln!("error: cannot take the run lock: {why}");
                return Ok(if world.live.is_some() {
                    Exit::Unreachable
                } else {
                    Exit::Invalid
                });
            }
        }
    };
    let journal = if resume.is_some() {
        let path = state_dir.join("runs").join(format!("{run_id}.jsonl"));
        runbook_core::journal::Journal::open(&path)
            .with_context(|| format!("cannot append to the journal {}", path.display()))?
    } else {
        runbook_core::journal::Journal::create(state_dir, run_id)
            .with_context(|| format!("cannot create the journal in {}", state_dir.display()))?
    };
    let journal = Arc::new(journal);
    let reporter: Arc<dyn Reporter> = match args.execution.output {
        OutputFormat::Json => Arc::new(world::JsonLines),
        OutputFormat::Text if std::io::stderr().is_terminal() => Arc::new(world::Progress::new()),
        OutputFormat::Text => Arc::new(world::PlainLines),
    };
    let prompter: Arc<dyn Prompter> = if args.execution.yes {
        Arc::new(FixedAnswer(Answer::Yes))
    } else {
        Arc::new(world::TerminalPrompter {
            lock: std::sync::Mutex::new(()),
        })
    };
    let digest = runbook_digest(&plan.runbook);
    let effects = Effects {
        cluster: world.cluster.clone(),
        processes: world.processes.clone(),
        http: world.http.clone(),
        notifier: world.notifier.clone(),
        prompter,
        clock: Arc::new(SystemClock),
        reporter,
        observer: world.observer.clone(),
    };
    let catalog = Arc::new(runbook_core::load_catalog(&[dir.to_path_buf()]).0);
    let interrupt = Arc::new(runbook_core::exec::Interrupt::default());
    let options = runbook_core::exec::RunOptions {
        run_id: run_id.to_owned(),
        dry_run: args.dry_run,
        yes: args.execution.yes,
        parallelism: args.execution.parallelism,
        namespace: world.namespace.clone(),
        journal: Some(journal.clone()),
        catalog: Some(catalog),
        digest,
        interrupt: Some(interrupt.clone()),
        resume,
        cluster: Some(world.description.clone()),
    };
    let lost = lock.as_ref().and_then(live::Lock::lost_signal);
    let report = runtime.block_on(async {
        // A run lock lost mid-run (its Lease taken over or not renewable) means another run
        // may start: finish the steps in flight, start no more, stop resumable.
        if let Some(lost) = lost {
            let signal = interrupt.clone();
            tokio::spawn(async move {
                lost.wait().await;
                eprintln!(
                    "\nerror: the run lock (Lease) was lost; stopping after the steps in flight"
                );
                signal.drain("run lock lost");
            });
        }
        // The first Ctrl-C stops scheduling and asks whether to roll back; a second one ends
        // the process at once (the journal says where it stood; `runbook show` reads it).
        let signal = interrupt.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!(
                    "\ninterrupted: letting running steps stop; press Ctrl-C again to quit at once"
                );
                signal.raise();
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            }
        });
        let report = runbook_core::exec::execute(Arc::new(plan), effects, options).await;
        if let Some(lock) = lock {
            lock.release().await;
        }
        report
    });
    if args.execution.output == OutputFormat::Text {
        eprint!("{}", summary(&report, journal.path()));
    }
    Ok(Exit::from_code(report.exit_code()))
}

/// `runbook resume RUN_ID`: goes on with a run that was killed, from its journal. Steps whose
/// intent was journaled but not their result are unknown: the human says whether they took
/// effect (`--assume-done`, `--rerun`, or at the prompt); they are never repeated blindly.
fn resume(
    dir: &Path,
    run_id: &str,
    resume_args: ResumeArgs,
    args: RunArgs,
) -> anyhow::Result<Exit> {
    let state_dir = world::state_dir(args.execution.state_dir.as_deref());
    let path = state_dir.join("runs").join(format!("{run_id}.jsonl"));
    if !path.is_file() {
        anyhow::bail!(
            "no run `{run_id}` in {} (see `runbook runs`)",
            state_dir.join("runs").display()
        );
    }
    let records = runbook_core::journal::read(&path).map_err(anyhow::Error::msg)?;
    let state = runbook_core::resume::analyze(&records)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if let Some(outcome) = state.finished {
        anyhow::bail!("run `{run_id}` already finished ({outcome:?}); there is nothing to resume");
    }
    if state.dry_run {
        anyhow::bail!("run `{run_id}` was a dry-run, which changes nothing; run it again instead");
    }
    // The params it ran with (secret ones were never written down: pass them with --set).
    let mut sets: Vec<String> = state
        .params
        .iter()
        .filter(|(_, value)| value.as_str() != Some(runbook_core::redact::REDACTED))
        .map(|(name, value)| {
            format!(
                "{name}={}",
                value
                    .as_str()
                    .map_or_else(|| value.to_string(), str::to_owned)
            )
        })
        .collect();
    sets.extend(args.execution.sets.iter().cloned());
    let plan = match build_plan(dir, &state.runbook, &sets, None, false)? {
        Ok(plan) => plan,
        Err(exit) => return Ok(exit),
    };
    let digest = runbook_digest(&plan.runbook);
    if !state.digest.is_empty() && digest != state.digest {
        anyhow::bail!(
            "runbook `{}` changed since run `{run_id}` started ({} then, {} now); resume needs the runbook as it was",
            state.runbook,
            &state.digest[..12.min(state.digest.len())],
            &digest[..12]
        );
    }
    let mut completed = state.completed.clone();
    for unknown in &state.unknown {
        let done = if resume_args.assume_done.contains(&unknown.step) {
            true
        } else if resume_args.rerun.contains(&unknown.step) {
            false
        } else if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
            eprint!(
                "step {} was about to {} when the run stopped; it may or may not have taken effect.\n? Did it take effect? [y = treat as done / N = run it again] ",
                unknown.step, unknown.mutation
            );
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            matches!(line.trim().to_lowercase().as_str(), "y" | "yes")
        } else {
            eprintln!(
                "error: step `{}` was about to {} when the run stopped, and may or may not have taken effect. Check it, then resume with --assume-done {} or --rerun {} (or --rollback)",
                unknown.step, unknown.mutation, unknown.step, unknown.step
            );
            return Ok(Exit::Stopped);
        };
        if done {
            completed.push((unknown.step.clone(), unknown.undo.clone()));
        }
    }
    let mut roll_back = resume_args.rollback;
    if let Some(failure) = &state.failed {
        if !roll_back {
            eprintln!("note: the run was already failing ({failure}); resuming finishes its undo and rollback");
        }
        roll_back = true;
    }
    let resume = runbook_core::exec::Resume {
        completed,
        skipped: state.skipped.clone(),
        undone: state.undone.clone(),
        roll_back,
    };
    drive(
        dir,
        plan,
        &args,
        &state_dir,
        run_id,
        Some((resume, state.cluster.clone())),
    )
}

struct ResumeArgs {
    rollback: bool,
    assume_done: Vec<String>,
    rerun: Vec<String>,
}

/// What the run lock (and `serve`'s de-duplication) is keyed on: the runbook and its params.
fn lock_target(runbook: &Runbook, bindings: &runbook_core::bind::Bindings) -> String {
    use sha2::Digest as _;
    let params = serde_json::to_string(&bindings.values).unwrap_or_default();
    format!(
        "{}-{}",
        runbook.name,
        hex(&sha2::Sha256::digest(params.as_bytes())[..6])
    )
}

/// What the journal records of the runbook, for `resume` to refuse a changed one: the digest
/// of the text the loader read and compiled, never a second read of the file, which may have
/// been edited since.
fn runbook_digest(runbook: &Runbook) -> String {
    use sha2::Digest as _;
    hex(&sha2::Sha256::digest(runbook.source.text().as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The end-of-run summary: each step's outcome and time, what was undone, and, loudly, what a
/// human must fix.
fn summary(report: &runbook_core::exec::RunReport, journal: &Path) -> String {
    use runbook_core::exec::StepStatus;
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "\nSummary of run {}", report.run_id);
    let width = report.steps.iter().map(|s| s.id.len()).max().unwrap_or(4);
    for step in &report.steps {
        let (status, detail) = match &step.status {
            StepStatus::Succeeded => ("succeeded", String::new()),
            StepStatus::Failed(error) => ("FAILED", format!(" — {error}")),
            StepStatus::Skipped(reason) => ("skipped", format!(" — {reason}")),
            StepStatus::DryRun(note) => ("dry-run", format!(" — {note}")),
            StepStatus::NotRun => ("not run", String::new()),
        };
        let _ = writeln!(
            out,
            "  {:<width$}  {:<9}  {:>7}  {}{detail}",
            step.id,
            status,
            format!("{:.1}s", step.duration.as_secs_f64()),
            step.summary
        );
    }
    for undo in &report.undos {
        let _ = writeln!(
            out,
            "  undo {}: {} — {}",
            undo.step,
            if undo.result.is_ok() {
                "done"
            } else {
                "FAILED"
            },
            match &undo.result {
                Ok(()) => undo.summary.clone(),
                Err(error) => format!("{}: {error}", undo.summary),
            }
        );
    }
    if let Some(rollback) = &report.rollback {
        let _ = writeln!(
            out,
            "  rollback: {}",
            match rollback {
                Ok(()) => "done".to_owned(),
                Err(error) => format!("FAILED: {error}"),
            }
        );
    }
    if !report.must_fix.is_empty() {
        let _ = writeln!(
            out,
            "\n!!! A HUMAN MUST ACT: the system may be left half-changed"
        );
        for line in &report.must_fix {
            let _ = writeln!(out, "!!!   {line}");
        }
    }
    let _ = writeln!(
        out,
        "\nOutcome: {:?} (exit {}): {}\nJournal: {}",
        report.outcome,
        report.exit_code(),
        report.message,
        journal.display()
    );
    out
}

fn runs(state_dir: Option<&Path>) -> anyhow::Result<Exit> {
    let dir = world::state_dir(state_dir).join("runs");
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
        let records = runbook_core::journal::read(&path).unwrap_or_default();
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

fn show(run_id: &str, state_dir: Option<&Path>, output: OutputFormat) -> anyhow::Result<Exit> {
    let path = world::state_dir(state_dir)
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
    let records = runbook_core::journal::read(&path).map_err(anyhow::Error::msg)?;
    let mut stdout = std::io::stdout().lock();
    for record in &records {
        match output {
            OutputFormat::Json => writeln!(stdout, "{}", serde_json::to_string(record)?)?,
            OutputFormat::Text => {
                if let Some(text) = world::describe(&record.event) {
                    writeln!(stdout, "{} {text}", record.time)?;
                }
            }
        }
    }
    Ok(Exit::Succeeded)
}

/// `runbook test`: every case of every test file, each on a paused clock so retries and verify
/// polls take no real time. Ends with `N passed, N failed`; exit 0 only if all passed.
fn test(dir: &Path, paths: Vec<PathBuf>) -> anyhow::Result<Exit> {
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
    let files = runbook_core::testing::find_test_files(&paths);
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
