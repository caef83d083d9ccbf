//! `runbook serve`: runbooks that run themselves when Alertmanager fires.
//!
//! The intake path (`POST /api/v1/alerts`) only matches, binds and queues: it never waits for
//! a run, so Alertmanager gets its answer in microseconds. Workers take queued runs and execute
//! them with the same executor as `runbook run`. See `runbook_core::admission` for the rules
//! on duplicates, cooldowns, run caps and the bounded queue.
//!
//! axum serves HTTP (tokio's own web framework, on hyper); `subtle` compares tokens in constant
//! time; `getrandom` makes a token when none is given; metrics are in `serve/metrics.rs`.

mod metrics;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use runbook_core::admission::{Admission, Decision, Limits};
use runbook_core::alert::{Alert, AlertStatus, WebhookPayload};
use runbook_core::bind::{bind, Bindings};
use runbook_core::compile::{Compiler, TriggeredBy};
use runbook_core::effects::{Answer, Effects, Prompter, Reporter, SystemClock};
use runbook_core::exec::{Interrupt, RunOptions};
use runbook_core::journal::{Event, Journal, Outcome, Record};
use runbook_core::runbook::{Catalog, Runbook};
use serde_json::{json, Value as Json};
use subtle::ConstantTimeEq as _;

use crate::exit::Exit;
use metrics::Metrics;

/// Request bodies larger than this get 413.
const BODY_LIMIT: usize = 1024 * 1024;

/// `runbook serve` options.
pub struct ServeArgs {
    pub listen: SocketAddr,
    pub token_file: Option<PathBuf>,
    pub state_dir: PathBuf,
    pub simulate: Option<PathBuf>,
    pub namespace: Option<String>,
    pub cluster: crate::live::ClusterArgs,
    pub workers: usize,
    pub parallelism: usize,
    pub queue: usize,
    pub run_cap: usize,
    pub run_cap_window: Duration,
    pub retry_after: Duration,
    pub shutdown_grace: Duration,
    pub json_logs: bool,
}

/// A run the server knows of.
struct RunEntry {
    id: String,
    runbook: String,
    key: String,
    /// Bound params, secret ones redacted.
    params: Json,
    state: RunState,
    /// Alerts that asked for this run (the first started it), with their status.
    alerts: Vec<Json>,
    queued_at: SystemTime,
    started_at: Option<SystemTime>,
    finished_at: Option<SystemTime>,
    outcome: Option<Outcome>,
    message: Option<String>,
    journal: Option<PathBuf>,
    gate: Option<Gate>,
    interrupt: Option<Arc<Interrupt>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RunState {
    Queued,
    Running,
    WaitingApproval,
    Finished,
    /// Never started: its alert resolved first, the server shut down, or a run with the same
    /// runbook and params was going on outside the server.
    Cancelled,
}

impl RunState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::WaitingApproval => "waiting-approval",
            Self::Finished => "finished",
            Self::Cancelled => "cancelled",
        }
    }
}

/// A gate waiting for `runbook approve`.
struct Gate {
    step: String,
    question: String,
    detail: String,
    reply: tokio::sync::oneshot::Sender<(Answer, String)>,
}

/// What a worker needs to start a queued run.
struct Job {
    runbook: Arc<Runbook>,
    bindings: Bindings,
    triggered_by: TriggeredBy,
    auto_approve: bool,
}

struct Server {
    catalog: Arc<Catalog>,
    /// The runbooks with triggers.
    triggered: Vec<Arc<Runbook>>,
    token_digest: [u8; 32],
    state_dir: PathBuf,
    world: crate::live::World,
    cluster_args: crate::live::ClusterArgs,
    parallelism: usize,
    retry_after: Duration,
    admission: Mutex<Admission<Job>>,
    runs: Mutex<HashMap<String, RunEntry>>,
    /// Run ids in the order they were queued.
    order: Mutex<Vec<String>>,
    wake: tokio::sync::Notify,
    stopping: AtomicBool,
    metrics: Metrics,
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
        crate::print_diagnostics(
            diagnostics,
            crate::DiagnosticFormat::Text,
            crate::When::Auto,
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
            let scenario = match runbook_core::sim::load_scenario(scenario_path) {
                Ok(scenario) => scenario,
                Err(diagnostics) => {
                    crate::print_diagnostics(
                        diagnostics,
                        crate::DiagnosticFormat::Text,
                        crate::When::Auto,
                    )?;
                    eprintln!("error: scenario {} is invalid", scenario_path.display());
                    return Ok(Exit::Invalid);
                }
            };
            crate::live::World::simulated(
                Arc::new(runbook_core::sim::SimWorld::new(&scenario)),
                scenario_path,
                args.namespace.clone(),
            )
        }
        None => match runtime.block_on(crate::live::World::live(
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
    if args.cluster.lock == crate::live::LockKind::Lease && world.live.is_none() {
        eprintln!("error: {}", crate::live::LEASE_NEEDS_CLUSTER);
        return Ok(Exit::Invalid);
    }
    let token = load_token(args.token_file.as_deref(), &args.state_dir)?;
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
        state_dir: args.state_dir.clone(),
        world,
        cluster_args: args.cluster.clone(),
        parallelism: args.parallelism,
        retry_after: args.retry_after,
        admission: Mutex::new(Admission::new(Limits {
            queue_capacity: args.queue,
            cap: args.run_cap,
            window: args.run_cap_window,
        })),
        runs: Mutex::new(HashMap::new()),
        order: Mutex::new(Vec::new()),
        wake: tokio::sync::Notify::new(),
        stopping: AtomicBool::new(false),
        metrics: Metrics::new(),
    });

    runtime.block_on(run_server(server, &args))?;
    Ok(Exit::Succeeded)
}

fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUNBOOK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube_client=off"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

/// The bearer token: from `--token-file`, or made at start and kept in the state dir (mode
/// 0600) so `runbook approve` on the same machine finds it.
fn load_token(file: Option<&Path>, state_dir: &Path) -> anyhow::Result<String> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
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
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("cannot create {}", state_dir.display()))?;
    let path = state_dir.join("serve.token");
    write_private(&path, &token).with_context(|| format!("cannot write {}", path.display()))?;
    tracing::warn!(
        token_file = %path.display(),
        "no --token-file: made a bearer token; give it to Alertmanager (credentials_file) and to `runbook approve`"
    );
    Ok(token)
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")
}

async fn run_server(server: Arc<Server>, args: &ServeArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let address = listener.local_addr()?;
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.workers.max(1) {
        workers.spawn(worker(server.clone()));
    }
    let router = router(server.clone());
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
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = stop_rx.await;
        })
        .await
        .context("the HTTP server failed")?;
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

fn router(server: Arc<Server>) -> Router {
    let authenticated = Router::new()
        .route("/api/v1/alerts", post(alerts))
        // The path of the handbook's Alertmanager receivers (section 12), so a receiver can be
        // pointed here by changing only its host.
        .route(
            "/api/v1/repos/{org}/{repo}/actions/dispatches",
            post(alerts),
        )
        .route("/api/v1/runs", get(list_runs))
        .route("/api/v1/runs/{id}", get(show_run))
        .route("/api/v1/runs/{id}/approve", post(approve))
        .route("/metrics", get(metrics_text))
        .route_layer(axum::middleware::from_fn_with_state(
            server.clone(),
            authenticate,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .merge(authenticated)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(server)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such endpoint")
}

async fn healthz(State(server): State<Arc<Server>>) -> Response {
    if server.stopping.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "stopping\n").into_response();
    }
    (StatusCode::OK, "ok\n").into_response()
}

/// Bearer-token auth, the token compared in constant time (as SHA-256 digests, so not even
/// its length shows in the timing).
async fn authenticate(State(server): State<Arc<Server>>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
        })
        .map(str::trim);
    let authorized = presented
        .is_some_and(|token| bool::from(digest(token.as_bytes()).ct_eq(&server.token_digest)));
    if !authorized {
        if is_intake(request.uri().path()) {
            server
                .metrics
                .payloads
                .get_or_create(&metrics::CodeLabel { code: 401 })
                .inc();
        }
        let mut response = error(
            StatusCode::UNAUTHORIZED,
            if presented.is_some() {
                "the bearer token is not the server's"
            } else {
                "missing `Authorization: Bearer TOKEN`"
            },
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"runbook\""),
        );
        return response;
    }
    next.run(request).await
}

fn is_intake(path: &str) -> bool {
    path == "/api/v1/alerts" || path.ends_with("/actions/dispatches")
}

/// What became of one alert, for the response and the logs.
struct Verdict {
    runbook: String,
    fingerprint: String,
    decision: &'static str,
    run: Option<String>,
    reason: Option<String>,
}

impl Verdict {
    fn to_json(&self) -> Json {
        let mut object = json!({
            "runbook": self.runbook,
            "fingerprint": self.fingerprint,
            "decision": self.decision,
        });
        if let Some(run) = &self.run {
            object["run"] = json!(run);
        }
        if let Some(reason) = &self.reason {
            object["reason"] = json!(reason);
        }
        object
    }
}

async fn alerts(
    State(server): State<Arc<Server>>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let count = |code: u16| {
        server
            .metrics
            .payloads
            .get_or_create(&metrics::CodeLabel { code })
            .inc();
    };
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            let status = rejection.status();
            count(status.as_u16());
            let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
                format!("the payload is larger than {BODY_LIMIT} bytes")
            } else {
                rejection.body_text()
            };
            return error(status, message);
        }
    };
    if server.stopping.load(Ordering::SeqCst) {
        count(503);
        return retry_later(&server, "the server is shutting down");
    }
    let text = match std::str::from_utf8(&body) {
        Ok(text) => text,
        Err(e) => {
            count(400);
            return error(
                StatusCode::BAD_REQUEST,
                format!("the payload is not UTF-8: {e}"),
            );
        }
    };
    let payload = match WebhookPayload::parse(text) {
        Ok(payload) => payload,
        Err(e) => {
            count(400);
            return error(StatusCode::BAD_REQUEST, e.to_string());
        }
    };
    let verdicts = server.intake(&payload);
    let full = verdicts.iter().any(|v| v.decision == "queue-full");
    let body = json!({
        "alerts": payload.alerts.len(),
        "results": verdicts.iter().map(Verdict::to_json).collect::<Vec<_>>(),
    });
    if full {
        count(503);
        let mut response = retry_later(&server, "the run queue is full");
        if let Ok(value) = serde_json::to_string(&body) {
            *response.body_mut() = axum::body::Body::from(value);
        }
        return response;
    }
    count(202);
    (StatusCode::ACCEPTED, axum::Json(body)).into_response()
}

fn retry_later(server: &Server, why: &str) -> Response {
    let mut response = error(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("{why}; send the payload again later"),
    );
    let seconds = server.retry_after.as_secs().max(1).to_string();
    if let Ok(value) = HeaderValue::from_str(&seconds) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

impl Server {
    /// Matches, binds and admits every alert of a payload. Never waits for a run.
    fn intake(self: &Arc<Self>, payload: &WebhookPayload) -> Vec<Verdict> {
        let mut verdicts = Vec::new();
        let mut queued = false;
        for alert in &payload.alerts {
            let status = match alert.status {
                AlertStatus::Firing => "firing",
                AlertStatus::Resolved => "resolved",
            };
            self.metrics
                .alerts_received
                .get_or_create(&metrics::StatusLabel {
                    status: status.to_owned(),
                })
                .inc();
            let mut matched = false;
            for runbook in &self.triggered {
                let Some(trigger) = runbook
                    .triggers
                    .iter()
                    .position(|trigger| trigger.matches(&alert.labels))
                else {
                    continue;
                };
                matched = true;
                let verdict = match alert.status {
                    AlertStatus::Firing => {
                        let verdict = self.admit(runbook, trigger, alert);
                        queued |= verdict.decision == "queued";
                        verdict
                    }
                    AlertStatus::Resolved => self.resolve(runbook, alert),
                };
                verdicts.push(verdict);
            }
            if !matched && alert.status == AlertStatus::Firing {
                self.metrics.alerts_unmatched.inc();
                tracing::debug!(alert = alert.name(), fingerprint = %alert.fingerprint, "no runbook's trigger matches");
            }
        }
        if queued {
            self.update_queue_depth();
            self.wake.notify_one();
        }
        verdicts
    }

    fn admit(self: &Arc<Self>, runbook: &Arc<Runbook>, trigger: usize, alert: &Alert) -> Verdict {
        let name = runbook.name.as_str();
        self.metrics
            .alerts_matched
            .get_or_create(&metrics::runbook(name))
            .inc();
        let mut verdict = Verdict {
            runbook: name.to_owned(),
            fingerprint: alert.fingerprint.clone(),
            decision: "queued",
            run: None,
            reason: None,
        };
        // Labels become params only through their declared types and patterns; a value that
        // fails is refused here and never reaches a command.
        let (bindings, errors) = bind(runbook, &[], Some(alert));
        if !errors.is_empty() {
            let reason = errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            self.metrics
                .alerts_rejected
                .get_or_create(&metrics::reason(name, "invalid-params"))
                .inc();
            tracing::warn!(
                runbook = name,
                alert = alert.name(),
                fingerprint = %alert.fingerprint,
                reason = %reason,
                "alert rejected: its labels do not bind the runbook's params"
            );
            verdict.decision = "rejected";
            verdict.reason = Some(reason);
            return verdict;
        }
        let key = crate::lock_target(runbook, &bindings);
        let spec = &runbook.triggers[trigger];
        let params = redacted_params(runbook, &bindings);
        let job = Job {
            runbook: runbook.clone(),
            bindings,
            triggered_by: TriggeredBy {
                trigger,
                alert: alert.clone(),
            },
            auto_approve: spec.auto_approve,
        };
        let mut new_id = None;
        let decision = lock(&self.admission).admit(
            Instant::now(),
            &key,
            name,
            spec.cooldown,
            || {
                let id = self.new_run_id(name);
                new_id = Some(id.clone());
                id
            },
            job,
        );
        let alert_json = json!({
            "alert": alert.name(),
            "fingerprint": alert.fingerprint,
            "status": "firing",
        });
        match decision {
            Decision::Queued => {
                let id = new_id.unwrap_or_default();
                tracing::info!(run_id = %id, runbook = name, alert = alert.name(), fingerprint = %alert.fingerprint, "run queued");
                lock(&self.order).push(id.clone());
                lock(&self.runs).insert(
                    id.clone(),
                    RunEntry {
                        id: id.clone(),
                        runbook: name.to_owned(),
                        key,
                        params,
                        state: RunState::Queued,
                        alerts: vec![alert_json],
                        queued_at: SystemTime::now(),
                        started_at: None,
                        finished_at: None,
                        outcome: None,
                        message: None,
                        journal: None,
                        gate: None,
                        interrupt: None,
                    },
                );
                verdict.run = Some(id);
            }
            Decision::Duplicate { ref run } | Decision::CoolingDown { ref run, .. } => {
                let run = run.clone();
                let cooling = matches!(decision, Decision::CoolingDown { .. });
                let reason = if cooling { "cooldown" } else { "in-progress" };
                self.metrics
                    .alerts_deduplicated
                    .get_or_create(&metrics::reason(name, reason))
                    .inc();
                if let Some(entry) = lock(&self.runs).get_mut(&run) {
                    if entry.alerts.len() < 100 {
                        entry.alerts.push(alert_json);
                    }
                }
                verdict.decision = if cooling { "cooldown" } else { "duplicate" };
                verdict.reason = Some(match decision {
                    Decision::CoolingDown { remaining, .. } => format!(
                        "run {run} started less than the trigger's cooldown ago; {} left",
                        humantime::format_duration(Duration::from_secs(remaining.as_secs()))
                    ),
                    _ => format!("run {run} for the same runbook and params is queued or running"),
                });
                verdict.run = Some(run);
            }
            Decision::Capped { cap, window } => {
                self.metrics
                    .alerts_rejected
                    .get_or_create(&metrics::reason(name, "run-cap"))
                    .inc();
                let reason = format!(
                    "runbook {name} already started {cap} runs within {}",
                    humantime::format_duration(window)
                );
                tracing::warn!(runbook = name, alert = alert.name(), reason = %reason, "alert rejected: run cap");
                verdict.decision = "capped";
                verdict.reason = Some(reason);
            }
            Decision::QueueFull => {
                self.metrics
                    .alerts_rejected
                    .get_or_create(&metrics::reason(name, "queue-full"))
                    .inc();
                tracing::warn!(
                    runbook = name,
                    alert = alert.name(),
                    "alert refused: the run queue is full"
                );
                verdict.decision = "queue-full";
                verdict.reason = Some("the run queue is full".to_owned());
            }
        }
        verdict
    }

    /// A resolved alert cancels its run if it has not started, and is recorded against it if
    /// it is going on (the run is not stopped: a remediation half done is worse than one done).
    fn resolve(&self, runbook: &Arc<Runbook>, alert: &Alert) -> Verdict {
        let name = runbook.name.as_str();
        let mut verdict = Verdict {
            runbook: name.to_owned(),
            fingerprint: alert.fingerprint.clone(),
            decision: "resolved",
            run: None,
            reason: None,
        };
        let (bindings, errors) = bind(runbook, &[], Some(alert));
        if !errors.is_empty() {
            verdict.reason = Some("its labels bind no run".to_owned());
            return verdict;
        }
        let key = crate::lock_target(runbook, &bindings);
        let cancelled = lock(&self.admission).cancel(&key);
        if let Some(queued) = cancelled {
            self.update_queue_depth();
            self.metrics
                .alerts_resolved
                .get_or_create(&metrics::reason(name, "cancelled-queued-run"))
                .inc();
            self.metrics
                .runs_cancelled
                .get_or_create(&metrics::reason(name, "resolved"))
                .inc();
            if let Some(entry) = lock(&self.runs).get_mut(&queued.run) {
                entry.state = RunState::Cancelled;
                entry.finished_at = Some(SystemTime::now());
                entry.message = Some("its alert resolved before it started".to_owned());
                entry.alerts.push(json!({
                    "alert": alert.name(), "fingerprint": alert.fingerprint, "status": "resolved",
                }));
            }
            tracing::info!(run_id = %queued.run, runbook = name, fingerprint = %alert.fingerprint, "queued run cancelled: its alert resolved");
            verdict.decision = "cancelled";
            verdict.run = Some(queued.run);
            return verdict;
        }
        let active = lock(&self.admission).active(&key).map(str::to_owned);
        if let Some(run) = active {
            let journal = {
                let mut runs = lock(&self.runs);
                runs.get_mut(&run).and_then(|entry| {
                    entry.alerts.push(json!({
                        "alert": alert.name(), "fingerprint": alert.fingerprint, "status": "resolved",
                    }));
                    entry.journal.clone()
                })
            };
            if let Some(path) = journal {
                let appended = Journal::open(&path).and_then(|journal| {
                    journal.append(&Record {
                        time: runbook_core::journal::timestamp(SystemTime::now()),
                        run: run.clone(),
                        event: Event::AlertResolved {
                            alert: alert.name().to_owned(),
                            fingerprint: alert.fingerprint.clone(),
                        },
                    })
                });
                if let Err(e) = appended {
                    tracing::warn!(run_id = %run, error = %e, "cannot journal the resolved alert");
                }
            }
            self.metrics
                .alerts_resolved
                .get_or_create(&metrics::reason(name, "recorded-on-running-run"))
                .inc();
            tracing::info!(run_id = %run, runbook = name, fingerprint = %alert.fingerprint, "alert resolved while its run goes on; recorded");
            verdict.decision = "recorded";
            verdict.run = Some(run);
            return verdict;
        }
        self.metrics
            .alerts_resolved
            .get_or_create(&metrics::reason(name, "no-run"))
            .inc();
        verdict
    }

    fn update_queue_depth(&self) {
        let depth = lock(&self.admission).depth();
        self.metrics
            .queue_depth
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    fn new_run_id(&self, runbook: &str) -> String {
        let runs = lock(&self.runs);
        loop {
            let id = crate::world::new_run_id(runbook);
            let taken = runs.contains_key(&id)
                || self
                    .state_dir
                    .join("runs")
                    .join(format!("{id}.jsonl"))
                    .exists();
            if !taken {
                return id;
            }
        }
    }

    /// Stops taking runs: the queue is emptied (its alerts come again from Alertmanager) and
    /// every run in flight is asked to drain.
    fn drain_runs(&self, signal: &str) {
        let dropped = lock(&self.admission).drain();
        self.metrics.queue_depth.set(0);
        let mut runs = lock(&self.runs);
        for queued in dropped {
            self.metrics
                .runs_cancelled
                .get_or_create(&metrics::reason(&queued.runbook, "shutdown"))
                .inc();
            if let Some(entry) = runs.get_mut(&queued.run) {
                entry.state = RunState::Cancelled;
                entry.finished_at = Some(SystemTime::now());
                entry.message = Some(format!("not started: the server stopped ({signal})"));
            }
            tracing::warn!(run_id = %queued.run, runbook = %queued.runbook, "queued run dropped at shutdown; Alertmanager sends its alert again while it fires");
        }
        let by = format!("server shutdown ({signal})");
        for entry in runs.values() {
            if let Some(interrupt) = &entry.interrupt {
                interrupt.drain(&by);
            }
        }
    }
}

fn redacted_params(runbook: &Runbook, bindings: &Bindings) -> Json {
    let mut object = serde_json::Map::new();
    for (name, value) in &bindings.values {
        let secret = runbook.param(name).is_some_and(|param| param.secret);
        object.insert(
            name.clone(),
            if secret {
                json!(runbook_core::redact::REDACTED)
            } else {
                serde_json::to_value(value).unwrap_or(Json::Null)
            },
        );
    }
    Json::Object(object)
}

async fn worker(server: Arc<Server>) {
    loop {
        if server.stopping.load(Ordering::SeqCst) {
            return;
        }
        let notified = server.wake.notified();
        let next = lock(&server.admission).next(Instant::now());
        match next {
            Some(queued) => {
                server.update_queue_depth();
                execute(&server, queued).await;
            }
            None => notified.await,
        }
    }
}

async fn execute(server: &Arc<Server>, queued: runbook_core::admission::Queued<Job>) {
    let runbook_core::admission::Queued {
        run: run_id,
        key,
        runbook: name,
        item: job,
    } = queued;
    let finish = |state: RunState, outcome: Option<Outcome>, message: String| {
        lock(&server.admission).finished(&key, &run_id);
        if let Some(entry) = lock(&server.runs).get_mut(&run_id) {
            entry.state = state;
            entry.outcome = outcome;
            entry.message = Some(message);
            entry.finished_at = Some(SystemTime::now());
            entry.gate = None;
            entry.interrupt = None;
        }
    };
    // The same lock as `runbook run`: a run started by hand with the same params wins.
    let held = match crate::live::Lock::acquire(
        &server.world,
        &server.cluster_args,
        &server.state_dir,
        &key,
        &run_id,
    )
    .await
    {
        Ok(held) => held,
        Err(crate::live::LockError::Unusable(why)) => {
            server
                .metrics
                .alerts_rejected
                .get_or_create(&metrics::reason(&name, "lock-unusable"))
                .inc();
            tracing::error!(run_id = %run_id, runbook = %name, error = %why, "not started: cannot take the run lock");
            finish(
                RunState::Cancelled,
                None,
                format!("not started: cannot take the run lock: {why}"),
            );
            return;
        }
        Err(crate::live::LockError::Held(holder)) => {
            server
                .metrics
                .alerts_rejected
                .get_or_create(&metrics::reason(&name, "running-elsewhere"))
                .inc();
            tracing::warn!(run_id = %run_id, runbook = %name, holder = %holder, "not started: the same runbook with the same params is already running");
            finish(
                RunState::Cancelled,
                None,
                format!("not started: the same runbook with the same params is already running ({holder})"),
            );
            return;
        }
    };
    let journal = match Journal::create(&server.state_dir, &run_id) {
        Ok(journal) => Arc::new(journal),
        Err(e) => {
            tracing::error!(run_id = %run_id, runbook = %name, error = %e, "cannot create the journal; the run is not started");
            finish(
                RunState::Cancelled,
                None,
                format!("not started: cannot create the journal: {e}"),
            );
            return;
        }
    };
    let interrupt = Arc::new(Interrupt::default());
    if let Some(entry) = lock(&server.runs).get_mut(&run_id) {
        entry.state = RunState::Running;
        entry.started_at = Some(SystemTime::now());
        entry.journal = Some(journal.path().to_path_buf());
        entry.interrupt = Some(interrupt.clone());
    }
    // A drain that came while this run was being set up.
    if server.stopping.load(Ordering::SeqCst) {
        interrupt.drain("server shutdown");
    }
    server
        .metrics
        .runs_started
        .get_or_create(&metrics::runbook(&name))
        .inc();
    server.metrics.runs_running.inc();
    tracing::info!(run_id = %run_id, runbook = %name, "run started");
    let digest = crate::runbook_digest(&job.runbook);
    let plan = Compiler::compile(job.runbook.clone(), job.bindings, Some(job.triggered_by));
    let effects = Effects {
        cluster: server.world.cluster.clone(),
        processes: server.world.processes.clone(),
        http: server.world.http.clone(),
        notifier: server.world.notifier.clone(),
        prompter: Arc::new(ServerPrompter {
            run: run_id.clone(),
            server: server.clone(),
            auto_approve: job.auto_approve,
            interrupt: interrupt.clone(),
            answered_by: Mutex::new(HashMap::new()),
        }),
        clock: Arc::new(SystemClock),
        reporter: Arc::new(LogReporter),
        observer: server.world.observer.clone(),
    };
    let options = RunOptions {
        run_id: run_id.clone(),
        dry_run: false,
        yes: false,
        parallelism: server.parallelism,
        namespace: server.world.namespace.clone(),
        journal: Some(journal),
        catalog: Some(server.catalog.clone()),
        digest,
        interrupt: Some(interrupt.clone()),
        resume: None,
        cluster: Some(server.world.description.clone()),
    };
    let interrupt_for_lock = interrupt;
    let started = Instant::now();
    let watcher = held.lost_signal().map(|lost| {
        let interrupt = interrupt_for_lock.clone();
        let run = run_id.clone();
        tokio::spawn(async move {
            lost.wait().await;
            tracing::error!(run_id = %run, "the run lock (Lease) was lost; stopping after the steps in flight");
            interrupt.drain("run lock lost");
        })
    });
    let report = runbook_core::exec::execute(Arc::new(plan), effects, options).await;
    if let Some(watcher) = watcher {
        watcher.abort();
    }
    held.release().await;
    let outcome = report.outcome;
    let outcome_label = serde_json::to_value(outcome)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    server.metrics.runs_running.dec();
    server
        .metrics
        .runs_finished
        .get_or_create(&metrics::OutcomeLabels {
            runbook: name.clone(),
            outcome: outcome_label.clone(),
        })
        .inc();
    server
        .metrics
        .run_duration
        .get_or_create(&metrics::runbook(&name))
        .observe(started.elapsed().as_secs_f64());
    tracing::info!(
        run_id = %run_id,
        runbook = %name,
        outcome = %outcome_label,
        detail = %report.message,
        must_fix = report.must_fix.len(),
        "run finished"
    );
    for item in &report.must_fix {
        tracing::warn!(run_id = %run_id, runbook = %name, "must fix: {item}");
    }
    finish(RunState::Finished, Some(outcome), report.message);
}

/// Run events go to the structured log, with the run id.
struct LogReporter;

impl Reporter for LogReporter {
    fn record(&self, record: &Record) {
        if let Some(text) = crate::world::describe(&record.event) {
            tracing::debug!(run_id = %record.run, "{text}");
        }
    }
}

/// Gates of unattended runs: approved at once when the trigger says `autoApprove: true`,
/// otherwise paused until `runbook approve` (or the HTTP call) answers.
struct ServerPrompter {
    run: String,
    server: Arc<Server>,
    auto_approve: bool,
    interrupt: Arc<Interrupt>,
    answered_by: Mutex<HashMap<String, String>>,
}

#[async_trait::async_trait]
impl Prompter for ServerPrompter {
    async fn confirm(&self, step: &str, question: &str, detail: &str) -> Answer {
        if self.auto_approve {
            lock(&self.answered_by).insert(step.to_owned(), "autoApprove (trigger)".to_owned());
            return Answer::Yes;
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        {
            let mut runs = lock(&self.server.runs);
            let Some(entry) = runs.get_mut(&self.run) else {
                return Answer::NoTerminal;
            };
            entry.state = RunState::WaitingApproval;
            entry.gate = Some(Gate {
                step: step.to_owned(),
                question: question.to_owned(),
                detail: detail.to_owned(),
                reply,
            });
        }
        self.server.metrics.runs_waiting_approval.inc();
        tracing::info!(run_id = %self.run, step, question, "paused at a gate: waiting for `runbook approve {}`", self.run);
        let result = tokio::select! {
            answer = answer => answer.ok(),
            () = self.interrupt.drained() => None,
        };
        self.server.metrics.runs_waiting_approval.dec();
        if let Some(entry) = lock(&self.server.runs).get_mut(&self.run) {
            entry.gate = None;
            if entry.state == RunState::WaitingApproval {
                entry.state = RunState::Running;
            }
        }
        match result {
            Some((answer, by)) => {
                lock(&self.answered_by).insert(step.to_owned(), by);
                answer
            }
            None => Answer::Paused,
        }
    }

    fn pauses(&self, _step: &str) -> bool {
        !self.auto_approve
    }

    fn answered_by(&self, step: &str) -> String {
        lock(&self.answered_by)
            .get(step)
            .cloned()
            .unwrap_or_else(|| "approve".to_owned())
    }
}

fn summary(entry: &RunEntry) -> Json {
    let time = |t: Option<SystemTime>| t.map(runbook_core::journal::timestamp);
    let mut object = json!({
        "id": entry.id,
        "runbook": entry.runbook,
        "key": entry.key,
        "params": entry.params,
        "state": entry.state.as_str(),
        "alerts": entry.alerts,
        "queuedAt": runbook_core::journal::timestamp(entry.queued_at),
        "startedAt": time(entry.started_at),
        "finishedAt": time(entry.finished_at),
        "outcome": entry.outcome,
        "message": entry.message,
    });
    if let Some(gate) = &entry.gate {
        object["gate"] = json!({
            "step": gate.step,
            "question": gate.question,
            "detail": gate.detail,
        });
    }
    object
}

async fn list_runs(State(server): State<Arc<Server>>) -> Response {
    let order = lock(&server.order).clone();
    let runs = lock(&server.runs);
    let list: Vec<Json> = order
        .iter()
        .filter_map(|id| runs.get(id))
        .map(summary)
        .collect();
    axum::Json(json!({ "runs": list })).into_response()
}

/// Run ids are `STAMP-RUNBOOK-SALT`: letters, digits, `-`, `_` and `.` (never a path).
fn valid_run_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 200
        && !id.contains("..")
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

async fn show_run(State(server): State<Arc<Server>>, UrlPath(id): UrlPath<String>) -> Response {
    if !valid_run_id(&id) {
        return error(StatusCode::BAD_REQUEST, "not a run id");
    }
    let (mut object, journal) = {
        let runs = lock(&server.runs);
        match runs.get(&id) {
            Some(entry) => (summary(entry), entry.journal.clone()),
            None => {
                // A run of an earlier server, from its journal.
                let path = server.state_dir.join("runs").join(format!("{id}.jsonl"));
                if !path.is_file() {
                    return error(StatusCode::NOT_FOUND, format!("no run `{id}`"));
                }
                (json!({ "id": id }), Some(path))
            }
        }
    };
    let events = match journal {
        Some(path) => match runbook_core::journal::read(&path) {
            Ok(records) => records
                .into_iter()
                .filter_map(|record| serde_json::to_value(record).ok())
                .collect(),
            Err(e) => {
                return error(StatusCode::INTERNAL_SERVER_ERROR, e);
            }
        },
        None => Vec::new(),
    };
    object["events"] = Json::Array(events);
    axum::Json(object).into_response()
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ApproveBody {
    /// `false` refuses the gate (the run stops, nothing undone).
    #[serde(default)]
    approve: Option<bool>,
    /// The gate's step; when given, it must be the one the run waits at.
    #[serde(default)]
    step: Option<String>,
    /// Who approves, for the journal.
    #[serde(default)]
    by: Option<String>,
}

async fn approve(
    State(server): State<Arc<Server>>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> Response {
    let request: ApproveBody = if body.iter().all(u8::is_ascii_whitespace) {
        ApproveBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(request) => request,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!(
                    "the body must be {{\"approve\": true|false, \"step\": ID, \"by\": NAME}}: {e}"
                ),
                )
            }
        }
    };
    let yes = request.approve.unwrap_or(true);
    let by: String = request
        .by
        .as_deref()
        .unwrap_or("api")
        .chars()
        .filter(|c| !c.is_control())
        .take(100)
        .collect();
    let mut runs = lock(&server.runs);
    let Some(entry) = runs.get_mut(&id) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no run `{id}` on this server"),
        );
    };
    let Some(gate) = entry.gate.take() else {
        return error(
            StatusCode::CONFLICT,
            format!(
                "run `{id}` is not waiting at a gate (it is {})",
                entry.state.as_str()
            ),
        );
    };
    if let Some(step) = &request.step {
        if step != &gate.step {
            let message = format!(
                "run `{id}` waits at the gate of step `{}`, not `{step}`",
                gate.step
            );
            entry.gate = Some(gate);
            return error(StatusCode::CONFLICT, message);
        }
    }
    let step = gate.step.clone();
    let answer = if yes { Answer::Yes } else { Answer::No };
    if gate.reply.send((answer, format!("approve: {by}"))).is_err() {
        return error(
            StatusCode::CONFLICT,
            format!("run `{id}` stopped waiting at the gate of step `{step}`"),
        );
    }
    entry.state = RunState::Running;
    tracing::info!(run_id = %id, step = %step, approved = yes, by = %by, "gate answered");
    axum::Json(json!({
        "run": id,
        "step": step,
        "answer": if yes { "yes" } else { "no" },
    }))
    .into_response()
}

async fn metrics_text(State(server): State<Arc<Server>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        server.metrics.encode(),
    )
        .into_response()
}
