//! Load benchmark of `runbook serve` on loopback (issues 5 and 12): alert intake at a fixed
//! rate, with the latency of every request, the server's resident memory at idle and under
//! load, and an audit afterwards that every payload is accounted for in `/metrics` and that no
//! dedup key got a second run. Under `cargo bench` it also fails when p99 latency (at up to
//! 5,000 payloads/s) or peak memory misses its target.
//!
//!     cargo bench -p runbook-cli --bench serve_load
//!     RATE=5000 SECONDS=10 CONNECTIONS=32 cargo bench -p runbook-cli --bench serve_load
//!     PATTERN=alertmanager cargo bench -p runbook-cli --bench serve_load
//!     PATTERN=alertmanager WORKERS=1 INCIDENTS=1000 RESENDS=10 cargo bench -p runbook-cli --bench serve_load
//!
//! Two patterns (`PATTERN`):
//!
//! - `storm` (the default): 64 payloads cycled for `SECONDS`, mostly the same three `ApiDown`
//!   alerts again and again (three dedup keys, so exactly three runs).
//! - `alertmanager`: what Alertmanager sends for `INCIDENTS` (1,000) distinct firing
//!   incidents, each with its own labels, fingerprint and `startsAt`, each in `RESENDS` (10)
//!   notifications: regrouped batches, so the same alert comes under other `groupKey`s beside
//!   other alerts; a quarter of the incidents resolve afterwards (some get a late firing
//!   repeat after their resolve, as from the other peer of an HA pair). Every incident binds
//!   other params, so each is a dedup key of its own and must get exactly one run, or be
//!   cancelled by its resolve before it started. The sequence is sent once, in order, at
//!   `RATE`: its length, not `SECONDS`, sets how long the load lasts. The server gets queue,
//!   run cap and registry room for twice the incidents, so a refusal can only be a bug.
//!
//! `WORKERS` sets the server's `--workers` (default: the server's own, 4).
//!
//! The load is open-loop: request `i` is due at `start + i / RATE` whatever happened before,
//! and its latency counts from when it was due, so a stalled server cannot hide its queueing
//! (no coordinated omission). Client and server share this machine's cores.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value as Json};

const TOKEN: &str = "bench-token";

/// The targets, judged under `cargo bench` (a release build).
const P99_TARGET: Duration = Duration::from_millis(5);
/// The rate up to which the p99 target holds.
const P99_TARGET_RATE: u64 = 5000;
const PEAK_MEMORY_TARGET_MIB: f64 = 150.0;

/// The runbook of the Alertmanager pattern (benches/fixtures/alertmanager).
const QUEUE_RUNBOOK: &str = "requeue-stuck-queue";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Resident and peak resident memory of a process, in KiB.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// One webhook payload and the alerts in it, by status.
struct Payload {
    body: Bytes,
    firing: usize,
    resolved: usize,
}

/// What is sent, to which server, and what the audit expects of it.
struct Load {
    payloads: Vec<Payload>,
    /// Payloads sent in all (the payloads cycled).
    total: usize,
    runbooks: PathBuf,
    scenario: PathBuf,
    serve_args: Vec<String>,
    /// The Alertmanager pattern's incidents (none for the storm).
    incidents: Vec<Incident>,
}

/// The payloads: an alert storm. Most are the same three ApiDown alerts again and again (three
/// dedup keys, so exactly three runs), some match nothing, some are resolutions.
fn storm() -> Vec<Payload> {
    let mut out = Vec::new();
    for i in 0..64_usize {
        let deployment = ["api", "web", "worker"][i % 3];
        let firing = |labels: Json| {
            json!({
                "status": "firing",
                "labels": labels,
                "annotations": {"summary": "The API answers 5xx", "runbook_url": "https://runbooks.example/api-down"},
                "startsAt": "2026-11-22T03:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus:9090/graph?g0.expr=up",
                "fingerprint": format!("{:016x}", i * 7919),
            })
        };
        let mut alerts = vec![firing(json!({
            "alertname": "ApiDown", "severity": "critical", "namespace": "shop",
            "deployment": deployment, "pod": format!("{deployment}-{i}"), "cluster": "eu-1",
        }))];
        if i % 4 == 0 {
            alerts.push(firing(json!({"alertname": "DiskFull", "severity": "warning", "node": format!("node-{i}")})));
        }
        if i % 8 == 0 {
            alerts.push(firing(json!({"alertname": "ApiDown", "severity": "info", "namespace": "shop", "deployment": deployment})));
        }
        let count = alerts.len();
        let payload = json!({
            "version": "4",
            "groupKey": format!("{{}}:{{alertname=\"ApiDown\", deployment=\"{deployment}\"}}"),
            "truncatedAlerts": 0,
            "status": "firing",
            "receiver": "runbook",
            "groupLabels": {"alertname": "ApiDown", "deployment": deployment},
            "commonLabels": {"namespace": "shop"},
            "commonAnnotations": {},
            "externalURL": "http://alertmanager:9093",
            "alerts": alerts,
        });
        out.push(Payload {
            body: Bytes::from(payload.to_string()),
            firing: count,
            resolved: 0,
        });
    }
    out
}

/// One incident of the Alertmanager pattern.
struct Incident {
    /// The `queue` label, which the runbook's param binds: one dedup key per incident.
    queue: String,
    fingerprint: String,
    starts_at: String,
    /// It is sent resolved after its firing notifications.
    resolves: bool,
    /// Its last firing notification comes after its resolve.
    late_repeat: bool,
    /// Its firing notifications.
    resends: usize,
}

/// Alertmanager's fingerprint is a hash of the label set; FNV-1a of the JSON does here.
fn fingerprint(labels: &Json) -> String {
    let hash = labels
        .to_string()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("{hash:016x}")
}

/// `seconds` after 2026-12-04T00:00:00Z, as Alertmanager writes it (up to 27 days).
fn timestamp(seconds: usize) -> String {
    format!(
        "2026-12-{:02}T{:02}:{:02}:{:02}Z",
        4 + seconds / 86_400,
        seconds / 3600 % 24,
        seconds / 60 % 60,
        seconds % 60
    )
}

/// A small deterministic generator (xorshift64*), so every run sends the same sequence.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (x >> 33) as usize % n
    }
}

/// The Alertmanager pattern: `count` incidents, each in `resends` firing notifications.
///
/// Incident `i` first fires at tick `i` and is notified again every `count / 4` ticks (its
/// group's repeat, or another alert joining it), so at any tick notifications of young and
/// old incidents mix. The notifications, in tick order, are cut into batches of 1–3 incidents
/// plus 0–2 companion alerts that match no runbook; each batch is one payload under a
/// `groupKey` of its own, so one alert comes under other groupKeys beside other alerts, with
/// the same fingerprint and `startsAt` every time. Every fourth incident resolves half a
/// period after its last notification; every twentieth resolves before its last one instead,
/// which then comes late, after the resolve.
fn alertmanager(count: usize, resends: usize) -> (Vec<Payload>, Vec<Incident>) {
    assert!(count > 0 && resends >= 2, "INCIDENTS > 0 and RESENDS >= 2");
    let labels = |i: usize| {
        json!({
            "alertname": "QueueStuck", "severity": "critical", "cluster": "eu-1",
            "namespace": "jobs", "queue": format!("q{i:05}"), "consumer": format!("consumer-{}", i % 8),
        })
    };
    let incidents: Vec<Incident> = (0..count)
        .map(|i| Incident {
            queue: format!("q{i:05}"),
            fingerprint: fingerprint(&labels(i)),
            starts_at: timestamp(i),
            resolves: i % 4 == 1,
            late_repeat: i % 20 == 1,
            resends,
        })
        .collect();
    let period = (count / 4).max(1);
    // (tick, incident, firing)
    let mut events = Vec::new();
    for (i, incident) in incidents.iter().enumerate() {
        for k in 0..resends {
            events.push((i + k * period, i, true));
        }
        if incident.resolves {
            let before = if incident.late_repeat { 2 } else { 1 };
            events.push((i + (resends - before) * period + period / 2, i, false));
        }
    }
    events.sort_unstable();

    let alert = |i: usize, firing: bool| {
        let ends_at = if firing {
            "0001-01-01T00:00:00Z".to_owned()
        } else {
            timestamp(i + 1800)
        };
        json!({
            "status": if firing { "firing" } else { "resolved" },
            "labels": labels(i),
            "annotations": {"summary": format!("Queue q{i:05} has not moved for 10 minutes"), "runbook_url": "https://runbooks.example/queue-stuck"},
            "startsAt": incidents[i].starts_at,
            "endsAt": ends_at,
            "generatorURL": "http://prometheus:9090/graph?g0.expr=queue_stuck",
            "fingerprint": incidents[i].fingerprint,
        })
    };
    let companion = |i: usize, which: usize| {
        let labels = if which == 0 {
            json!({"alertname": "QueueLatencyHigh", "severity": "warning", "cluster": "eu-1", "namespace": "jobs", "queue": format!("q{i:05}")})
        } else {
            json!({"alertname": "NodeDiskPressure", "severity": "warning", "cluster": "eu-1", "node": format!("node-{}", i % 13)})
        };
        json!({
            "status": "firing",
            "labels": labels,
            "annotations": {"summary": "Not a runbook's"},
            "startsAt": timestamp(i + 7),
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph",
            "fingerprint": fingerprint(&labels),
        })
    };

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut payloads = Vec::new();
    let mut next = 0;
    while next < events.len() {
        let size = 1 + rng.below(3);
        let mut batch: Vec<(usize, bool)> = Vec::new();
        while batch.len() < size && next < events.len() {
            let (_, i, firing) = events[next];
            // An alert is in a notification once.
            if batch.iter().any(|(j, _)| *j == i) {
                break;
            }
            batch.push((i, firing));
            next += 1;
        }
        let mut alerts: Vec<Json> = batch.iter().map(|(i, firing)| alert(*i, *firing)).collect();
        let companions = [0, 0, 1, 2][rng.below(4)];
        for c in 0..companions {
            alerts.push(companion(batch[0].0, c));
        }
        let firing = alerts.iter().filter(|a| a["status"] == "firing").count();
        let group = payloads.len() % 50;
        let payload = json!({
            "version": "4",
            "groupKey": format!("{{}}/{{namespace=\"jobs\"}}:{{cluster=\"eu-1\", shard=\"{group}\"}}"),
            "truncatedAlerts": 0,
            "status": if firing > 0 { "firing" } else { "resolved" },
            "receiver": "runbook",
            "groupLabels": {"cluster": "eu-1", "shard": group.to_string()},
            "commonLabels": {"cluster": "eu-1"},
            "commonAnnotations": {},
            "externalURL": "http://alertmanager:9093",
            "alerts": alerts,
        });
        payloads.push(Payload {
            body: Bytes::from(payload.to_string()),
            firing,
            resolved: alerts.len() - firing,
        });
    }
    (payloads, incidents)
}

async fn connect(address: &str) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    sender
}

async fn get(address: &str, path: &str) -> String {
    let mut sender = connect(address).await;
    let request = hyper::Request::get(path)
        .header("host", address)
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = sender.send_request(request).await.expect("GET");
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

/// Every run the server lists, page by page (at most 500 a page).
async fn list_runs(address: &str) -> Vec<Json> {
    let mut runs = Vec::new();
    let mut path = "/api/v1/runs?limit=500".to_owned();
    loop {
        let page: Json = serde_json::from_str(&get(address, &path).await).expect("runs");
        runs.extend(page["runs"].as_array().expect("runs").iter().cloned());
        match page["continue"].as_str() {
            Some(token) => path = format!("/api/v1/runs?limit=500&continue={token}"),
            None => return runs,
        }
    }
}

fn metric_sum(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(prefix))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// What the client saw of one payload.
struct Sent {
    latency: Duration,
    status: u16,
    /// The answer, kept when the audit reads the verdicts.
    body: Option<Bytes>,
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: run briefly then.
    let benching = std::env::args().any(|a| a == "--bench");
    let rate = env_or("RATE", 5000);
    let seconds = env_or("SECONDS", if benching { 10 } else { 1 });
    let connections = env_or("CONNECTIONS", 32) as usize;
    let pattern = std::env::var("PATTERN").unwrap_or_else(|_| "storm".to_owned());
    // The server's own default (4) unless set.
    let workers = std::env::var("WORKERS").ok();

    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut load = match pattern.as_str() {
        "storm" => {
            let fixtures = manifest.join("tests/fixtures/serve");
            Load {
                payloads: storm(),
                total: (rate * seconds) as usize,
                runbooks: fixtures.join("runbooks"),
                scenario: fixtures.join("world.scenario.yaml"),
                serve_args: Vec::new(),
                incidents: Vec::new(),
            }
        }
        "alertmanager" => {
            let count = env_or("INCIDENTS", if benching { 1000 } else { 200 }) as usize;
            let resends = env_or("RESENDS", 10) as usize;
            let (payloads, incidents) = alertmanager(count, resends);
            let fixtures = manifest.join("benches/fixtures/alertmanager");
            // Room for every incident's run in the queue and under the run cap (the defaults,
            // 256 and 10 an hour, would refuse most of them), and in the registry for the
            // audit (the default keeps 1,000 finished runs).
            let room = (2 * count).to_string();
            Load {
                total: payloads.len(),
                payloads,
                runbooks: fixtures.join("runbooks"),
                scenario: fixtures.join("world.scenario.yaml"),
                serve_args: [
                    "--queue",
                    &room,
                    "--run-cap",
                    &room,
                    "--keep-finished",
                    &room,
                ]
                .map(str::to_owned)
                .to_vec(),
                incidents,
            }
        }
        other => panic!("PATTERN={other}: the patterns are `storm` and `alertmanager`"),
    };
    if let Some(workers) = workers {
        load.serve_args.extend(["--workers".to_owned(), workers]);
    }

    let state = tempfile::tempdir().expect("tempdir");
    let token_file = state.path().join("token");
    std::fs::write(&token_file, TOKEN).expect("token");
    let mut child = Command::new(env!("CARGO_BIN_EXE_runbook"))
        .arg("--dir")
        .arg(&load.runbooks)
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .arg("--token-file")
        .arg(&token_file)
        .arg("--state-dir")
        .arg(state.path())
        .arg("--simulate")
        .arg(&load.scenario)
        .args(&load.serve_args)
        // Every connection of the load comes from one address: let CONNECTIONS of them in.
        .args([
            "--max-connections-per-client",
            &(connections + 16).to_string(),
            "--max-connections",
            &(connections + 16).max(1024).to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn runbook serve");
    let pid = child.id();
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let address = loop {
        let line = lines.next().expect("server log").expect("log line");
        let parsed: Json = serde_json::from_str(&line).unwrap_or_default();
        if parsed["message"] == "listening" {
            break parsed["address"].as_str().expect("address").to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    std::thread::sleep(Duration::from_millis(500));
    let (idle_rss, _) = memory(pid);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let total = load.total;
    let keep_bodies = !load.incidents.is_empty();
    let payloads = Arc::new(load.payloads);
    let sent_alerts = |status: fn(&Payload) -> usize| -> usize {
        (0..total)
            .map(|i| status(&payloads[i % payloads.len()]))
            .sum()
    };
    let firing_sent = sent_alerts(|p| p.firing);
    let resolved_sent = sent_alerts(|p| p.resolved);
    let (mut sent, elapsed) = runtime.block_on(async {
        let start = Instant::now() + Duration::from_millis(100);
        let interval = Duration::from_secs_f64(1.0 / rate as f64);
        let mut tasks = tokio::task::JoinSet::new();
        for c in 0..connections {
            let address = address.clone();
            let payloads = payloads.clone();
            tasks.spawn(async move {
                let mut sender = connect(&address).await;
                let mut sent = Vec::new();
                let mut i = c;
                while i < total {
                    let due = start + interval * i as u32;
                    tokio::time::sleep_until(due.into()).await;
                    let payload = &payloads[i % payloads.len()];
                    let request = hyper::Request::post("/api/v1/alerts")
                        .header("host", &address)
                        .header("authorization", format!("Bearer {TOKEN}"))
                        .header("content-type", "application/json")
                        .body(Full::new(payload.body.clone()))
                        .expect("request");
                    sender.ready().await.expect("connection ready");
                    let response = sender.send_request(request).await.expect("POST");
                    let status = response.status().as_u16();
                    let body = response.into_body().collect().await.expect("body");
                    let latency = due.elapsed();
                    sent.push((
                        i,
                        Sent {
                            latency,
                            status,
                            body: keep_bodies.then(|| body.to_bytes()),
                        },
                    ));
                    i += connections;
                }
                sent
            });
        }
        let mut sent = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            sent.extend(joined.expect("client task"));
        }
        (sent, start.elapsed())
    });
    let (load_rss, peak_rss) = memory(pid);
    sent.sort_unstable_by_key(|(i, _)| *i);
    let sent: Vec<Sent> = sent.into_iter().map(|(_, s)| s).collect();
    let mut sorted: Vec<Duration> = sent.iter().map(|s| s.latency).collect();
    sorted.sort();
    let accepted = sent.iter().filter(|s| s.status == 202).count();
    let achieved = sent.len() as f64 / elapsed.as_secs_f64();
    let p99 = percentile(&sorted, 0.99);
    let peak_mib = peak_rss as f64 / 1024.0;
    println!(
        "serve_load ({pattern}): {} payloads ({firing_sent} firing and {resolved_sent} resolved alerts) at {rate}/s target over {:.1}s, {connections} connections",
        sent.len(),
        elapsed.as_secs_f64()
    );
    if !load.serve_args.is_empty() {
        println!("  serve flags: {}", load.serve_args.join(" "));
    }
    println!("  achieved {achieved:.0} payloads/s; {accepted} answered 202");
    println!(
        "  latency p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        percentile(&sorted, 0.50).as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        percentile(&sorted, 0.999).as_secs_f64() * 1e3,
        sorted.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    println!(
        "  server RSS: idle {:.1} MiB, after load {:.1} MiB, peak {peak_mib:.1} MiB",
        idle_rss as f64 / 1024.0,
        load_rss as f64 / 1024.0,
    );

    // The audit: every payload and alert counted, and one run per dedup key.
    let mut violations = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            violations.push(what);
        }
    };
    if load.incidents.is_empty() {
        std::thread::sleep(Duration::from_millis(500));
    } else {
        wait_for_runs(&runtime, &address);
    }
    let (metrics, runs) =
        runtime.block_on(async { (get(&address, "/metrics").await, list_runs(&address).await) });
    let counted_payloads = metric_sum(&metrics, "runbook_webhook_requests_total") as usize;
    let counted_firing =
        metric_sum(&metrics, "runbook_alerts_received_total{status=\"firing\"}") as usize;
    let counted_resolved = metric_sum(
        &metrics,
        "runbook_alerts_received_total{status=\"resolved\"}",
    ) as usize;
    println!(
        "  audit: /metrics counts {counted_payloads} payloads, {counted_firing} firing and {counted_resolved} resolved alerts"
    );
    check(
        counted_payloads == sent.len(),
        format!(
            "lost payloads: {} sent, {counted_payloads} counted",
            sent.len()
        ),
    );
    check(
        counted_firing == firing_sent && counted_resolved == resolved_sent,
        format!("lost alerts: {firing_sent} firing and {resolved_sent} resolved sent, {counted_firing} and {counted_resolved} counted"),
    );
    check(
        accepted == sent.len(),
        format!("{} payloads not answered 202", sent.len() - accepted),
    );
    if load.incidents.is_empty() {
        audit_storm(&metrics, &runs, &mut check);
    } else {
        audit_incidents(&load.incidents, &sent, &metrics, &runs, &mut check);
    }
    if benching {
        if rate <= P99_TARGET_RATE {
            check(
                p99 < P99_TARGET,
                format!(
                    "p99 latency {:.2} ms, over the {} ms target",
                    p99.as_secs_f64() * 1e3,
                    P99_TARGET.as_millis()
                ),
            );
        }
        check(
            peak_mib < PEAK_MEMORY_TARGET_MIB,
            format!("peak memory {peak_mib:.1} MiB, over the {PEAK_MEMORY_TARGET_MIB} MiB target"),
        );
    }
    let _ = child.kill();
    let _ = child.wait();
    if !violations.is_empty() {
        for violation in &violations {
            eprintln!("serve_load: FAILED: {violation}");
        }
        std::process::exit(1);
    }
    println!("  audit passed");
}

/// Waits until the server has no run queued or running (at most a minute).
fn wait_for_runs(runtime: &tokio::runtime::Runtime, address: &str) {
    let begun = Instant::now();
    loop {
        let metrics = runtime.block_on(get(address, "/metrics"));
        let busy = metric_sum(&metrics, "runbook_queue_depth ")
            + metric_sum(&metrics, "runbook_runs_running ");
        if busy == 0.0 {
            println!(
                "  runs done {:.1}s after the load",
                begun.elapsed().as_secs_f64()
            );
            return;
        }
        if begun.elapsed() > Duration::from_secs(60) {
            println!("  runs still queued or running a minute after the load");
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The storm: one run per ApiDown deployment, whatever the repeats.
fn audit_storm(metrics: &str, runs: &[Json], check: &mut impl FnMut(bool, String)) {
    let started = metric_sum(metrics, "runbook_runs_started_total") as usize;
    let mut keys: Vec<&str> = runs.iter().filter_map(|run| run["key"].as_str()).collect();
    let listed = keys.len();
    keys.sort_unstable();
    keys.dedup();
    println!(
        "  audit: {started} runs started for {} dedup keys",
        keys.len()
    );
    check(
        listed == keys.len(),
        format!(
            "duplicate runs: {listed} runs for {} dedup keys",
            keys.len()
        ),
    );
    check(
        started == keys.len(),
        format!("{started} runs started, {} listed", keys.len()),
    );
    check(
        keys.len() == 3,
        format!("{} runs, not one per ApiDown deployment", keys.len()),
    );
}

/// The Alertmanager pattern: per incident, what the server answered of each of its alerts
/// and the runs it lists; exactly one run each, or one cancelled by its resolve.
fn audit_incidents(
    incidents: &[Incident],
    sent: &[Sent],
    metrics: &str,
    runs: &[Json],
    check: &mut impl FnMut(bool, String),
) {
    let by_fingerprint: HashMap<&str, usize> = incidents
        .iter()
        .enumerate()
        .map(|(i, incident)| (incident.fingerprint.as_str(), i))
        .collect();
    // What the server answered, per incident: how many of its alerts were queued, and every
    // decision by count.
    let mut queued = vec![0_usize; incidents.len()];
    let mut answered = 0;
    let mut decisions: HashMap<String, usize> = HashMap::new();
    for answer in sent.iter().filter_map(|s| s.body.as_ref()) {
        let answer: Json = serde_json::from_slice(answer).unwrap_or_default();
        for result in answer["results"].as_array().into_iter().flatten() {
            let decision = result["decision"].as_str().unwrap_or("?").to_owned();
            let incident = result["fingerprint"]
                .as_str()
                .and_then(|f| by_fingerprint.get(f));
            match incident {
                Some(&i) if result["runbook"] == QUEUE_RUNBOOK => {
                    answered += 1;
                    if decision == "queued" {
                        queued[i] += 1;
                    }
                }
                _ => {
                    *decisions
                        .entry("(not an incident's)".to_owned())
                        .or_default() += 1
                }
            }
            *decisions.entry(decision).or_default() += 1;
        }
    }
    let mut decisions: Vec<(String, usize)> = decisions.into_iter().collect();
    decisions.sort();
    let decisions: Vec<String> = decisions.iter().map(|(d, n)| format!("{n} {d}")).collect();
    println!("  verdicts: {}", decisions.join(", "));
    let incident_alerts: usize = incidents
        .iter()
        .map(|i| i.resends + usize::from(i.resolves))
        .sum();
    check(
        answered == incident_alerts,
        format!("lost alerts: {incident_alerts} alerts of incidents sent, {answered} answered with a verdict"),
    );
    let deduplicated = |reason: &str| {
        metrics
            .lines()
            .filter(|line| line.starts_with("runbook_alerts_deduplicated_total{"))
            .filter(|line| line.contains(&format!("reason=\"{reason}\"")))
            .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum::<f64>() as usize
    };
    println!(
        "  repeats: {} joined a run queued or running, {} came after it (the same incident), {} in a cooldown",
        deduplicated("in-progress"),
        deduplicated("same-incident"),
        deduplicated("cooldown")
    );
    let queued_twice = queued.iter().filter(|&&n| n > 1).count();
    let never_queued = queued.iter().filter(|&&n| n == 0).count();
    check(
        queued_twice == 0,
        format!("duplicate runs: {queued_twice} incidents were queued more than once"),
    );
    check(
        never_queued == 0,
        format!("lost incidents: {never_queued} were never queued"),
    );

    // The runs the server lists, per incident (its `queue` param).
    let by_queue: HashMap<&str, usize> = incidents
        .iter()
        .enumerate()
        .map(|(i, incident)| (incident.queue.as_str(), i))
        .collect();
    let mut listed: Vec<Vec<&Json>> = vec![Vec::new(); incidents.len()];
    let mut strays = 0;
    for run in runs {
        match run["params"]["queue"]
            .as_str()
            .and_then(|q| by_queue.get(q))
        {
            Some(&i) if run["runbook"] == QUEUE_RUNBOOK => listed[i].push(run),
            _ => strays += 1,
        }
    }
    let mut duplicated = 0;
    let mut lost = 0;
    let mut finished = 0;
    let mut cancelled = 0;
    let mut outcomes: HashMap<String, usize> = HashMap::new();
    let mut wrong_incident = 0;
    for (incident, runs) in incidents.iter().zip(&listed) {
        match runs.as_slice() {
            [] => lost += 1,
            [run] => {
                let first = &run["alerts"][0];
                if first["fingerprint"] != incident.fingerprint.as_str()
                    || first["startsAt"] != incident.starts_at.as_str()
                {
                    wrong_incident += 1;
                }
                match run["state"].as_str() {
                    Some("finished") => {
                        finished += 1;
                        let outcome = run["outcome"].as_str().unwrap_or("?").to_owned();
                        *outcomes.entry(outcome).or_default() += 1;
                    }
                    // Its resolve came while it waited for a worker: a verdict, not a loss.
                    Some("cancelled") if incident.resolves => cancelled += 1,
                    _ => lost += 1,
                }
            }
            _ => duplicated += 1,
        }
    }
    let started = metric_sum(metrics, "runbook_runs_started_total") as usize;
    let resolves = incidents.iter().filter(|i| i.resolves).count();
    let late = incidents.iter().filter(|i| i.late_repeat).count();
    let mut outcomes: Vec<String> = outcomes
        .iter()
        .map(|(outcome, n)| format!("{n} {outcome}"))
        .collect();
    outcomes.sort();
    println!(
        "  audit: {} incidents ({resolves} resolved, {late} of them repeated late): {finished} runs finished ({}), {cancelled} cancelled by their resolve before they started; {started} runs started",
        incidents.len(),
        outcomes.join(", ")
    );
    println!(
        "  audit: {duplicated} incidents with more than one run, {lost} with none, {strays} runs of no incident"
    );
    check(
        duplicated == 0,
        format!("duplicate runs: {duplicated} incidents have more than one run"),
    );
    check(
        lost == 0,
        format!(
            "lost incidents: {lost} have no run that finished or was cancelled by their resolve"
        ),
    );
    check(strays == 0, format!("{strays} runs of no incident"));
    check(
        wrong_incident == 0,
        format!("{wrong_incident} runs name another incident's alert first"),
    );
    check(
        started == finished,
        format!("{started} runs started, {finished} finished"),
    );
}
