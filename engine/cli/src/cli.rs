//! The command line's shape: every command, flag and help text, as clap types. The commands
//! themselves live in `commands/`, one file each; this file only says what can be typed.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Declarative runbooks for Kubernetes operations: validate, plan and graph them.
#[derive(Parser, Debug)]
#[command(name = "runbook", version, about, propagate_version = true)]
pub struct Cli {
    /// The runbooks folder.
    #[arg(
        long,
        global = true,
        env = "RUNBOOK_DIR",
        default_value = "runbooks",
        value_name = "DIR"
    )]
    pub dir: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

/// Param values from the command line. Precedence, highest first: `--set`, `--set-file`, the
/// environment's `RUNBOOK_PARAM_<NAME>`, the alert, the param's default.
#[derive(clap::Args, Debug, Default)]
pub struct ParamArgs {
    /// Bind a param: `--set namespace=openbao` (for `resume`: params the journal could not keep,
    /// such as secrets). A value given here shows in the process list: give secrets with
    /// --set-file or RUNBOOK_PARAM_<NAME>.
    #[arg(long = "set", value_name = "NAME=VALUE")]
    pub sets: Vec<String>,
    /// Bind a param to the contents of a file, without its final newline:
    /// `--set-file token=/run/secrets/token`.
    #[arg(long = "set-file", value_name = "NAME=PATH")]
    pub set_files: Vec<String>,
}

/// How `run` and `resume` run: params, approvals, the world, output and state.
#[derive(clap::Args, Debug)]
pub struct Execution {
    #[command(flatten)]
    pub params: ParamArgs,
    /// Approve every confirmation gate. (Not an interrupt's question: see
    /// --rollback-on-interrupt.)
    #[arg(long)]
    pub yes: bool,
    /// On Ctrl-C or SIGTERM, undo the completed steps and roll back without asking. Without
    /// it, an interrupt asks at a terminal, and otherwise stops resumable, undoing nothing.
    #[arg(long)]
    pub rollback_on_interrupt: bool,
    /// Run against a simulated cluster loaded from a scenario file (with no file: the
    /// runbook's own `scenarios/default.yaml`).
    #[arg(long, value_name = "SCENARIO", num_args = 0..=1)]
    pub simulate: Option<Option<PathBuf>>,
    /// With --simulate: wait in real time (retries' back-off, verify polls, timeouts), to
    /// watch the run unfold. Without it a simulated run waits on a virtual clock that jumps
    /// ahead whenever the run only waits; the journal's times follow that clock from the
    /// moment the run starts.
    #[arg(long, requires = "simulate")]
    pub real_time: bool,
    /// `text` for a terminal; `json` prints the journal's records, one JSON object a line.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Where journals and locks live (default: $RUNBOOK_STATE_DIR, else ~/.local/state/runbook).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// The namespace for objects whose runbook names none (default: the kubeconfig
    /// context's, else `default`).
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// Steps that may run at once.
    #[arg(long, default_value_t = 4)]
    pub parallelism: usize,
    #[command(flatten)]
    pub cluster: crate::world::ClusterArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check runbooks and fact libraries; report every problem with file:line:col.
    Validate {
        /// Files or folders to check (default: the runbooks folder).
        paths: Vec<PathBuf>,
        /// How to print the problems: `text` with excerpts, `json`, or `github` annotations.
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
        /// How to print the catalog.
        #[arg(long, value_enum, default_value_t = ListFormat::Text)]
        format: ListFormat,
    },
    /// The compiled plan in execution order, with params substituted.
    Plan {
        /// A runbook name (`metadata.name`) or a path to a runbook file.
        name: String,
        #[command(flatten)]
        params: ParamArgs,
        /// Bind params from the first firing alert in an Alertmanager webhook payload.
        #[arg(long, value_name = "FILE")]
        alert: Option<PathBuf>,
        /// `text` for a terminal, `markdown` for a pull-request review, `json` for tools.
        #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
        format: PlanFormat,
    },
    /// The plan's DAG, for Graphviz or Mermaid.
    Graph {
        /// A runbook name (`metadata.name`) or a path to a runbook file.
        name: String,
        #[command(flatten)]
        params: ParamArgs,
        /// Graphviz DOT, or Mermaid (which GitHub and Gitea render in markdown).
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
        /// The run's id, as `runbook runs` lists it.
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
        /// Where journals and locks live (default: $RUNBOOK_STATE_DIR, else ~/.local/state/runbook).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// The RunbookRun objects of `runbook serve --cluster-state` in the cluster instead
        /// of the journals in the state dir.
        #[arg(long)]
        cluster: bool,
        /// With --cluster: the namespace the server keeps its runs in (default: the
        /// kubeconfig context's).
        #[arg(long, short = 'n', requires = "cluster")]
        namespace: Option<String>,
        /// With --cluster: the kubeconfig (default: $KUBECONFIG, else ~/.kube/config).
        #[arg(long, value_name = "FILE", requires = "cluster")]
        kubeconfig: Option<PathBuf>,
        /// With --cluster: the kubeconfig context (default: its current context).
        #[arg(long, value_name = "NAME", requires = "cluster")]
        context: Option<String>,
    },
    /// One run's journal.
    Show {
        /// The run's id, as `runbook runs` lists it (its journal is STATE_DIR/runs/RUN_ID.jsonl).
        run_id: String,
        /// Where journals and locks live (default: $RUNBOOK_STATE_DIR, else ~/.local/state/runbook).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// `text` tells the run's story; `json` prints its records, one JSON object a line.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
        /// The journal `runbook serve --cluster-state` keeps through the API, instead of the
        /// one in the state dir.
        #[arg(long)]
        cluster: bool,
        /// With --cluster: the namespace the server keeps its runs in.
        #[arg(long, short = 'n', requires = "cluster")]
        namespace: Option<String>,
        /// With --cluster: the kubeconfig (default: $KUBECONFIG, else ~/.kube/config).
        #[arg(long, value_name = "FILE", requires = "cluster")]
        kubeconfig: Option<PathBuf>,
        /// With --cluster: the kubeconfig context.
        #[arg(long, value_name = "NAME", requires = "cluster")]
        context: Option<String>,
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
        /// Who may answer gates: one approver per line, `NAME:TOKEN` or `NAME:sha256:HEX`.
        /// Each approves with their own token (`runbook approve --token-file`), and the
        /// journal records their name; the server's token then approves nothing.
        #[arg(long, value_name = "FILE", conflicts_with = "kubernetes_approvers")]
        approvers: Option<PathBuf>,
        /// Approvers present their own Kubernetes token: the API server says whose it is
        /// (TokenReview) and whether they may `approve` `runbooks.runbook.dev` named by the
        /// runbook in the server's namespace (SubjectAccessReview), so a RoleBinding decides.
        /// The server's credentials need the `system:auth-delegator` ClusterRole.
        #[arg(long)]
        kubernetes_approvers: bool,
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
        cluster: crate::world::ClusterArgs,
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
        /// The window `--run-cap` counts runs in, per runbook.
        #[arg(long, default_value = "1h", value_parser = parse_duration, value_name = "DURATION")]
        run_cap_window: std::time::Duration,
        /// Retry-After of a 503.
        #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
        retry_after: std::time::Duration,
        /// On SIGTERM, how long runs in flight may take to finish their current steps.
        #[arg(long, default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
        shutdown_grace: std::time::Duration,
        /// Finished runs the server keeps in memory (oldest forgotten first; their journals
        /// stay in the state dir, where `GET /api/v1/runs/{id}` still reads them).
        #[arg(long, default_value_t = 1000)]
        keep_finished: usize,
        /// The server's log lines: `json` for a log collector, `text` for a terminal.
        #[arg(long, value_enum, default_value_t = LogFormat::Json)]
        log_format: LogFormat,
        /// How long a client may take to send a request's head (request line and headers),
        /// from when it connects or its previous answer was sent; a slower connection is
        /// closed. So an idle keep-alive connection is closed after it too.
        #[arg(long, default_value = "10s", value_parser = parse_timeout, value_name = "DURATION")]
        header_timeout: std::time::Duration,
        /// HTTP connections open at once (idle keep-alive ones count); a connection over it is
        /// answered 503 with Retry-After and closed.
        #[arg(long, default_value_t = 1024, value_parser = parse_count, value_name = "N")]
        max_connections: usize,
        /// HTTP connections open at once from one client IP address; a connection over it is
        /// answered 503 with Retry-After and closed.
        #[arg(long, default_value_t = 64, value_parser = parse_count, value_name = "N")]
        max_connections_per_client: usize,
        /// Keep admission and runs in the cluster, so several replicas serve as one: each run
        /// is a RunbookRun object (runbook.dev/v1alpha1) in the server's namespace, named by
        /// its incident, and cooldowns and run caps are one ledger per runbook there. Needs the
        /// live cluster and the CRD (schemas/runbookrun.crd.yaml).
        #[arg(long, conflicts_with = "simulate")]
        cluster_state: bool,
        /// This replica's name in the runs it owns (default: $POD_NAME, else HOSTNAME-PID).
        #[arg(long, value_name = "NAME", requires = "cluster_state")]
        replica: Option<String>,
        /// With --cluster-state: how long after a replica stopped renewing its Lease another
        /// takes over the runs it owned.
        #[arg(long, default_value = "30s", value_parser = parse_timeout, value_name = "DURATION", requires = "cluster_state")]
        takeover_after: std::time::Duration,
        /// With --cluster-state: how long an ended run's RunbookRun (and with it its journal
        /// in the cluster) is kept. While it is kept, a repeat of its incident starts no run.
        #[arg(long, default_value = "7d", value_parser = parse_timeout, value_name = "DURATION", requires = "cluster_state")]
        keep_runs: std::time::Duration,
    },
    /// Approve (or refuse) the gate a run started by `runbook serve` waits at.
    Approve {
        /// The run's id, as `runbook runs` (or `runbook runs --cluster`) lists it.
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
        #[arg(long, value_name = "FILE", conflicts_with = "cluster")]
        token_file: Option<PathBuf>,
        /// Where journals and locks live (default: $RUNBOOK_STATE_DIR, else ~/.local/state/runbook).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// Approve through the cluster (`serve --cluster-state`): a RunbookApproval made with
        /// your own kubeconfig credentials, so the API server says who you are and RBAC
        /// (`approve` on runbooks.runbook.dev) decides; whichever replica runs it takes it in.
        #[arg(long)]
        cluster: bool,
        /// With --cluster: the namespace the server keeps its runs in (default: the
        /// kubeconfig context's).
        #[arg(long, short = 'n', requires = "cluster")]
        namespace: Option<String>,
        /// With --cluster: the kubeconfig (default: $KUBECONFIG, else ~/.kube/config).
        #[arg(long, value_name = "FILE", requires = "cluster")]
        kubeconfig: Option<PathBuf>,
        /// With --cluster: the kubeconfig context (default: its current context).
        #[arg(long, value_name = "NAME", requires = "cluster")]
        context: Option<String>,
        /// With --cluster: how long to wait for a replica to take the approval in.
        #[arg(long, default_value = "30s", value_parser = parse_timeout, value_name = "DURATION", requires = "cluster")]
        wait: std::time::Duration,
    },
    /// The ClusterRole the runbooks need: every verb their steps, undos, rollbacks and facts
    /// send to the API server, as YAML.
    Rbac {
        /// The ClusterRole's name.
        #[arg(long, default_value = "runbook")]
        name: String,
    },
    /// The JSON Schema for runbooks and fact libraries.
    Schema,
    /// Shell completions.
    Completions {
        /// The shell to write completions for.
        shell: clap_complete::Shell,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum DiagnosticFormat {
    Text,
    Json,
    Github,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum When {
    Auto,
    Always,
    Never,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ListFormat {
    Text,
    Json,
    /// The runbooks table of a library's README.
    Markdown,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum PlanFormat {
    Text,
    Markdown,
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration such as 30s or 1h: {e}"))
}

/// A duration above zero.
pub fn parse_timeout(text: &str) -> Result<std::time::Duration, String> {
    let duration = parse_duration(text)?;
    if duration.is_zero() {
        return Err(format!("`{text}` is no time at all; give one such as 10s"));
    }
    Ok(duration)
}

/// A count of at least 1.
pub fn parse_count(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("0 would refuse everything; give at least 1".to_owned()),
        Ok(count) => Ok(count),
        Err(e) => Err(format!("`{text}` is not a count: {e}")),
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum GraphFormat {
    Dot,
    Mermaid,
}
