//! Load benchmark of `runbook serve` on loopback (issue 5): sustained alert intake at a fixed
//! rate, with the latency of every request, the server's resident memory at idle and under
//! load, and an audit afterwards that every payload is accounted for in `/metrics` and that no
//! dedup key got a second run.
//!
//!     cargo bench -p runbook-cli --bench serve_load
//!     RATE=5000 SECONDS=10 CONNECTIONS=32 cargo bench -p runbook-cli --bench serve_load
//!
//! The load is open-loop: request `i` is due at `start + i / RATE` whatever happened before,
//! and its latency counts from when it was due, so a stalled server cannot hide its queueing
//! (no coordinated omission). Client and server share this machine's cores.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value as Json};

const TOKEN: &str = "bench-token";

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

/// The payloads: an alert storm. Most are the same three ApiDown alerts again and again (three
/// dedup keys, so exactly three runs), some match nothing, some are resolutions.
fn payloads() -> Vec<(Bytes, usize)> {
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
        out.push((Bytes::from(payload.to_string()), count));
    }
    out
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

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: run briefly then.
    let benching = std::env::args().any(|a| a == "--bench");
    let rate = env_or("RATE", 5000);
    let seconds = env_or("SECONDS", if benching { 10 } else { 1 });
    let connections = env_or("CONNECTIONS", 32) as usize;

    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/serve");
    let state = tempfile::tempdir().expect("tempdir");
    let token_file = state.path().join("token");
    std::fs::write(&token_file, TOKEN).expect("token");
    let mut child = Command::new(env!("CARGO_BIN_EXE_runbook"))
        .arg("--dir")
        .arg(fixtures.join("runbooks"))
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .arg("--token-file")
        .arg(&token_file)
        .arg("--state-dir")
        .arg(state.path())
        .arg("--simulate")
        .arg(fixtures.join("world.scenario.yaml"))
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
    let payloads = Arc::new(payloads());
    let total = (rate * seconds) as usize;
    let alerts_sent: usize = (0..total).map(|i| payloads[i % payloads.len()].1).sum();
    let (latencies, statuses, elapsed) = runtime.block_on(async {
        let start = Instant::now() + Duration::from_millis(100);
        let interval = Duration::from_secs_f64(1.0 / rate as f64);
        let mut tasks = tokio::task::JoinSet::new();
        for c in 0..connections {
            let address = address.clone();
            let payloads = payloads.clone();
            tasks.spawn(async move {
                let mut sender = connect(&address).await;
                let mut latencies = Vec::new();
                let mut statuses = Vec::new();
                let mut i = c;
                while i < total {
                    let due = start + interval * i as u32;
                    tokio::time::sleep_until(due.into()).await;
                    let (body, _) = &payloads[i % payloads.len()];
                    let request = hyper::Request::post("/api/v1/alerts")
                        .header("host", &address)
                        .header("authorization", format!("Bearer {TOKEN}"))
                        .header("content-type", "application/json")
                        .body(Full::new(body.clone()))
                        .expect("request");
                    sender.ready().await.expect("connection ready");
                    let response = sender.send_request(request).await.expect("POST");
                    let status = response.status().as_u16();
                    let _ = response.into_body().collect().await.expect("body");
                    latencies.push(due.elapsed());
                    statuses.push(status);
                    i += connections;
                }
                (latencies, statuses)
            });
        }
        let mut latencies = Vec::new();
        let mut statuses = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            let (l, s) = joined.expect("client task");
            latencies.extend(l);
            statuses.extend(s);
        }
        (latencies, statuses, start.elapsed())
    });
    let (load_rss, peak_rss) = memory(pid);

    let mut sorted = latencies.clone();
    sorted.sort();
    let accepted = statuses.iter().filter(|s| **s == 202).count();
    let achieved = latencies.len() as f64 / elapsed.as_secs_f64();
    println!(
        "serve_load: {} payloads ({} alerts) at {rate}/s target over {seconds}s, {connections} connections",
        latencies.len(),
        alerts_sent
    );
    println!("  achieved {achieved:.0} payloads/s; {accepted} answered 202");
    println!(
        "  latency p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        percentile(&sorted, 0.50).as_secs_f64() * 1e3,
        percentile(&sorted, 0.99).as_secs_f64() * 1e3,
        percentile(&sorted, 0.999).as_secs_f64() * 1e3,
        sorted.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    println!(
        "  server RSS: idle {:.1} MiB, after load {:.1} MiB, peak {:.1} MiB",
        idle_rss as f64 / 1024.0,
        load_rss as f64 / 1024.0,
        peak_rss as f64 / 1024.0
    );

    // The audit: every payload and alert counted, and one run per dedup key.
    std::thread::sleep(Duration::from_millis(500));
    let (metrics, runs) = runtime.block_on(async {
        (
            get(&address, "/metrics").await,
            get(&address, "/api/v1/runs").await,
        )
    });
    let counted_payloads = metric_sum(&metrics, "runbook_webhook_requests_total");
    let counted_alerts = metric_sum(&metrics, "runbook_alerts_received_total");
    let started = metric_sum(&metrics, "runbook_runs_started_total");
    let runs: Json = serde_json::from_str(&runs).expect("runs");
    let mut keys: Vec<&str> = runs["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .filter_map(|run| run["key"].as_str())
        .collect();
    let listed = keys.len();
    keys.sort_unstable();
    keys.dedup();
    println!(
        "  audit: /metrics counts {counted_payloads} payloads and {counted_alerts} alerts; {started} runs started for {} dedup keys",
        keys.len()
    );
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(counted_payloads as usize, latencies.len(), "lost payloads");
    assert_eq!(counted_alerts as usize, alerts_sent, "lost alerts");
    assert_eq!(accepted, latencies.len(), "payloads not accepted");
    assert_eq!(listed, keys.len(), "a dedup key got a second run");
    assert_eq!(started as usize, keys.len());
    assert_eq!(keys.len(), 3, "one run per ApiDown deployment");
}
