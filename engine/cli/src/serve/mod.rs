//! `runbook serve`: runbooks that run themselves when Alertmanager fires.
//!
//! The intake path (`POST /api/v1/alerts`) only matches, binds and queues: it never waits for
//! a run, so Alertmanager gets its answer in microseconds. Workers take queued runs and execute
//! them in the same `RunSession` as `runbook run`. See `runbook_core::admission` for the rules
//! on duplicates, cooldowns, run caps and the bounded queue.
//!
//! The parts: `conns.rs` (the accept loop: hyper on each connection, the header-read timeout,
//! the connection limits), `http.rs` (router, auth, the intake endpoint), `intake.rs` (alerts
//! to verdicts, admission), `workers.rs` (the worker loop), `gates.rs` (gates waiting for
//! `runbook approve`), `registry.rs` (the runs the server knows of, listed and shown),
//! `metrics.rs`.
//!
//! axum routes HTTP (tokio's own web framework; hyper serves each connection); `subtle`
//! compares tokens in constant time; `getrandom` makes a token when none is given.

mod approvals;
mod approvers;
mod conns;
mod gates;
mod http;
mod intake;
mod journals;
mod metrics;
mod registry;
mod shared;
mod takeover;
mod workers;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use runbook_core::admission::{Admission, Limits};
use runbook_core::runbook::{Catalog, Runbook};

use crate::exit::Exit;
use intake::Job;
use metrics::Metrics;
use registry::RunEntry;

/// `runbook serve` options.
pub struct ServeArgs {
    pub listen: SocketAddr,
    pub token_file: Option<PathBuf>,
    pub approvers: Option<PathBuf>,
    pub kubernetes_approvers: bool,
    pub state_dir: PathBuf,
    pub simulate: Option<PathBuf>,
    pub namespace: Option<String>,
    pub cluster: crate::world::ClusterArgs,
    pub workers: usize,
    pub parallelism: usize,
    pub queue: usize,
    pub run_cap: usize,
    pub run_cap_window: Duration,
    pub retry_after: Duration,
    pub shutdown_grace: Duration,
    pub keep_finished: usize,
    pub json_logs: bool,
    /// How long a client may take to send a request head (and an idle keep-alive connection
    /// stays open).
    pub header_timeout: Duration,
    /// Connections open at once, in total and from one client IP address.
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    /// Admission and runs kept in the cluster (`--cluster-state`).
    pub cluster_state: bool,
    pub replica: Option<String>,
    /// How long a replica's Lease outlives it before its runs are taken over.
    pub takeover_after: Duration,
    /// How long an ended run's object is kept.
    pub keep_runs: Duration,
}

struct Server {
    catalog: Arc<Catalog>,
    /// The runbooks with triggers.
    triggered: Vec<Arc<Runbook>>,
    token_digest: [u8; 32],
    /// Who may answer gates, and how that is checked.
    approvers: approvers::Approvers,
    state_dir: PathBuf,
    world: crate::world::World,
    cluster_args: crate::world::ClusterArgs,
    parallelism: usize,
    retry_after: Duration,
    admission: Mutex<Admission<Job>>,
    runs: Mutex<HashMap<String, RunEntry>>,
    /// Run ids in the order they were queued.
    order: Mutex<std::collections::VecDeque<String>>,
    /// Finished runs kept in `runs` (older ones are evicted; their journals stay on disk).
    keep_finished: usize,
    wake: tokio::sync::Notify,
    stopping: AtomicBool,
    /// Workers that can take runs, and how many were started.
    workers_alive: AtomicUsize,
    workers: usize,
    metrics: Metrics,
    /// Refusals logged at warn already (each alert's repeats go to debug).
    refusals: intake::RefusalLog,
    /// The run cap and its window, as admission applies them.
    limits: Limits,
    /// `--cluster-state`: admission and runs shared with the other replicas through the API.
    shared: Option<shared::Shared>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).into()
}

pub fn serve(dir: &Path, args: ServeArgs) -> anyhow::Result<Exit> {
    init_logs(args.json_logs);
    let (catalog, diagnostics, _) = runbook_core::load_catalog(&[dir.to_path_buf()]);
    if diagnostics.has_errors() {
        crate::commands::print_diagnostics(
            diagnostics,
            crate::cli::DiagnosticFormat::Text,
            crate::cli::When::Auto,
        )?;
        eprintln!(
            "error: the runbooks in {} have errors; `runbook serve` starts only with a valid catalog",
            dir.display()
        );
        return Ok(Exit::Invalid);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let world = match args.simulate.as_deref() {
        Some(scenario_path) => {
            match crate::world::World::load_simulated(scenario_path, args.namespace.clone()) {
                Ok(world) => world,
                Err(diagnostics) => {
                    crate::commands::print_diagnostics(
                        diagnostics,
                        crate::cli::DiagnosticFormat::Text,
                        crate::cli::When::Auto,
                    )?;
                    eprintln!("error: scenario {} is invalid", scenario_path.display());
                    return Ok(Exit::Invalid);
                }
            }
        }
        None => match runtime.block_on(crate::world::World::live(
            &args.cluster,
            args.namespace.clone(),
        )) {
            Ok(world) => {
                if let Some(live) = &world.live {
                    tracing::info!(
                        cluster = %live.connection.describe(),
                        version = %live.connection.version,
                        namespace = %world.namespace,
                        "connected to the cluster"
                    );
                }
                world
            }
            Err(error) => {
                tracing::error!(%error, "cannot connect to the cluster");
                eprintln!("error: {error}");
                return Ok(Exit::Unreachable);
            }
        },
    };
    if args.cluster.lock == crate::world::LockKind::Lease && world.live.is_none() {
        eprintln!("error: {}", crate::world::LEASE_NEEDS_CLUSTER);
        return Ok(Exit::Invalid);
    }
    let token = load_token(args.token_file.as_deref(), &args.state_dir)?;
    let approvers = match (&args.approvers, args.kubernetes_approvers, &world.live) {
        (Some(path), _, _) => approvers::Approvers::load_file(path)?,
        (None, true, Some(live)) => approvers::Approvers::Kubernetes {
            transport: live.transport.clone(),
            namespace: world.namespace.clone(),
        },
        (None, true, None) => {
            eprintln!("error: --kubernetes-approvers needs a cluster to ask (not --simulate): use --approvers FILE");
            return Ok(Exit::Invalid);
        }
        (None, false, _) => approvers::Approvers::ServerToken,
    };
    tracing::info!(approvals = %approvers.describe(), "gates are answered by");
    let shared = match (args.cluster_state, &world.live) {
        (false, _) => None,
        (true, None) => {
            eprintln!("error: --cluster-state keeps runs in the cluster; it needs the live cluster, not --simulate");
            return Ok(Exit::Invalid);
        }
        (true, Some(live)) => {
            let replica = args.replica.clone().unwrap_or_else(default_replica);
            tracing::info!(replica = %replica, namespace = %world.namespace, "admission and runs are shared with the other replicas through the cluster");
            let journals = match journals::Journals::start(
                runbook_kube::ConnectOptions {
                    kubeconfig: args.cluster.kubeconfig.clone(),
                    context: args.cluster.context.clone(),
                    namespace: Some(world.namespace.clone()),
                    policy: runbook_kube::Policy {
                        call_timeout: args.cluster.request_timeout,
                        ..runbook_kube::Policy::default()
                    },
                },
                world.namespace.clone(),
            ) {
                Ok(journals) => journals,
                Err(error) => {
                    eprintln!("error: cannot connect the runs' journals to the cluster: {error}");
                    return Ok(Exit::Unreachable);
                }
            };
            Some(shared::Shared::new(
                runbook_kube::runs::RunObjects::new(
                    live.transport.clone(),
                    world.namespace.clone(),
                ),
                replica,
                journals,
            ))
        }
    };
    if let Some(shared) = &shared {
        if let Err(error) = runtime.block_on(shared.hold_lease(args.takeover_after)) {
            tracing::error!(%error, "cannot take the replica's Lease");
            eprintln!("error: {error}");
            return Ok(Exit::Invalid);
        }
    }
    let limits = Limits {
        queue_capacity: args.queue,
        cap: args.run_cap,
        window: args.run_cap_window,
    };
    let triggered: Vec<Arc<Runbook>> = catalog
        .runbooks
        .iter()
        .filter(|runbook| !runbook.triggers.is_empty())
        .cloned()
        .collect();
    let server = Arc::new(Server {
        catalog: Arc::new(catalog),
        triggered,
        token_digest: digest(token.as_bytes()),
        approvers,
        state_dir: args.state_dir.clone(),
        world,
        cluster_args: crate::world::ClusterArgs {
            // A run's Lease expires as its replica's does, so a run taken over starts as soon.
            lease_duration: args.cluster_state.then_some(args.takeover_after),
            ..args.cluster.clone()
        },
        parallelism: args.parallelism,
        retry_after: args.retry_after,
        admission: Mutex::new(Admission::new(limits)),
        runs: Mutex::new(HashMap::new()),
        order: Mutex::new(std::collections::VecDeque::new()),
        keep_finished: args.keep_finished,
        wake: tokio::sync::Notify::new(),
        stopping: AtomicBool::new(false),
        workers_alive: AtomicUsize::new(args.workers.max(1)),
        workers: args.workers.max(1),
        metrics: Metrics::new(),
        refusals: intake::RefusalLog::default(),
        limits,
        shared,
    });

    // Runs execute on a runtime of their own: a run's journal syncs (`fdatasync` before each
    // mutation) and its CPU never hold up the threads that answer webhooks and `/healthz`.
    let runs = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("runbook-runs")
        .enable_all()
        .build()
        .context("cannot start the runs' async runtime")?;
    let served = runtime.block_on(run_server(server, &args, runs.handle()));
    runs.shutdown_timeout(Duration::from_secs(5));
    served?;
    Ok(Exit::Succeeded)
}

/// This replica's name: the pod's (`POD_NAME`, from the downward API), else host and pid.
fn default_replica() -> String {
    if let Some(pod) = std::env::var("POD_NAME").ok().filter(|p| !p.is_empty()) {
        return pod;
    }
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{host}-{}", std::process::id())
}

fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUNBOOK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube_client=off"));
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(move || EscapingWriter {
            inner: std::io::stderr(),
            colour: terminal,
        })
        // Colour codes only on a terminal: never into a file or a log collector.
        .with_ansi(terminal)
        .with_target(false);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

/// Writes each log line with its control characters escaped (`\x0a`, `\x1b`, `\x00`), so a
/// label holding a newline or an escape sequence cannot forge a line or recolour the terminal,
/// whatever the format. The formatter writes one event per call, ending in its own newline,
/// which is kept; so are the formatter's colour codes on a terminal (tracing-subscriber
/// escapes the ones inside field values itself).
struct EscapingWriter {
    inner: std::io::Stderr,
    colour: bool,
}

impl std::io::Write for EscapingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let (body, newline) = match buf.strip_suffix(b"\n") {
            Some(body) => (body, true),
            None => (buf, false),
        };
        let mut line = Vec::with_capacity(buf.len() + 8);
        for &byte in body {
            let keep = byte == b'\t' || (byte == 0x1b && self.colour);
            if (byte < 0x20 || byte == 0x7f) && !keep {
                line.extend_from_slice(format!("\\x{byte:02x}").as_bytes());
            } else {
                line.push(byte);
            }
        }
        if newline {
            line.push(b'\n');
        }
        self.inner.write_all(&line)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The bearer token: from `--token-file`, or made at start and kept in the state dir (mode
/// 0600, never written through a symbolic link) so `runbook approve` on the same machine
/// finds it.
fn load_token(file: Option<&Path>, state_dir: &Path) -> anyhow::Result<String> {
    if let Some(path) = file {
        let text = crate::commands::read_named(path)
            .with_context(|| format!("cannot read the token file {}", path.display()))?;
        let token = text.trim().to_owned();
        if token.is_empty() {
            anyhow::bail!("the token file {} is empty", path.display());
        }
        return Ok(token);
    }
    let mut bytes = [0_u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("cannot make a token: {e}"))?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    runbook_core::state_files::create_dirs(state_dir)
        .with_context(|| format!("cannot create {}", state_dir.display()))?;
    let path = state_dir.join("serve.token");
    write_private(&path, &token).with_context(|| format!("cannot write {}", path.display()))?;
    tracing::warn!(
        token_file = %path.display(),
        "no --token-file: made a bearer token; give it to Alertmanager (credentials_file) and to `runbook approve`"
    );
    Ok(token)
}

/// Writes a state file only its owner may read: a symbolic link there is refused, and an
/// existing file that others could read is tightened before the text goes in.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    // Not truncated on open: only once it is known to be a private regular file.
    let mut file = runbook_core::state_files::open(
        path,
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false),
    )?;
    file.set_len(0)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")
}

async fn run_server(
    server: Arc<Server>,
    args: &ServeArgs,
    runs: &tokio::runtime::Handle,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let address = listener.local_addr()?;
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.workers.max(1) {
        workers.spawn_on(workers::worker(server.clone()), runs);
    }
    if server.shared.is_some() {
        let every = (args.takeover_after / 3).min(Duration::from_secs(5));
        tokio::spawn(takeover::adopt_orphans(
            server.clone(),
            every,
            args.keep_runs,
        ));
        tokio::spawn(approvals::take_approvals(
            server.clone(),
            Duration::from_secs(1),
        ));
    }
    let router = http::router(server.clone());
    tracing::info!(
        address = %address,
        runbooks = server.triggered.len(),
        workers = args.workers.max(1),
        "listening"
    );
    let (signal_tx, signal_rx) = tokio::sync::oneshot::channel::<&'static str>();
    tokio::spawn(async move {
        let signal = shutdown_signal().await;
        let _ = signal_tx.send(signal);
    });
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown_server = server.clone();
    let grace = args.shutdown_grace;
    let shutdown = tokio::spawn(async move {
        let signal = signal_rx.await.unwrap_or("shutdown");
        tracing::info!(
            signal,
            "shutting down: no new alerts; runs in flight finish their current steps and pause"
        );
        shutdown_server.stopping.store(true, Ordering::SeqCst);
        let _ = stop_tx.send(());
        shutdown_server.drain_runs(signal);
        signal
    });
    let limits = conns::Limits {
        header_timeout: args.header_timeout,
        total: args.max_connections.max(1),
        per_client: args.max_connections_per_client.max(1),
    };
    conns::serve(listener, router, server.clone(), limits, async {
        let _ = stop_rx.await;
    })
    .await;
    let signal = shutdown.await.unwrap_or("shutdown");
    server.wake.notify_waiters();
    // Runs in flight finish the steps they are in and stop, resumable.
    let drained = tokio::time::timeout(grace, async {
        while workers.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            grace = %humantime::format_duration(grace),
            "runs did not stop within the grace period: cancelling the steps in flight"
        );
        for entry in lock(&server.runs).values() {
            if let Some(interrupt) = &entry.interrupt {
                interrupt.raise();
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while workers.join_next().await.is_some() {}
        })
        .await;
    }
    if let Some(shared) = &server.shared {
        shared.flush(Duration::from_secs(10)).await;
        // Last: what it handed over is taken by another replica as soon as this is released.
        shared.release_lease().await;
    }
    tracing::info!(signal, "stopped");
    Ok(())
}

async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => tokio::select! {
                _ = terminate.recv() => "SIGTERM",
                _ = tokio::signal::ctrl_c() => "SIGINT",
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}
