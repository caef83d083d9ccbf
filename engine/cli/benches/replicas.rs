//! Benchmark of `runbook serve --cluster-state` with three replicas sharing one API server
//! (issue 14): `INCIDENTS` (1,000) distinct firing incidents, each notification delivered to
//! all three replicas at once (as an Alertmanager HA pair, or a Service in front of the
//! replicas, would spread them), must give exactly one run per incident. Reports intake
//! latency (p50, p99, max over every request to every replica), the API requests per incident
//! (admission alone, and in all, with the run itself), and audits the result: one RunbookRun
//! and one journal per incident, and each incident's one change made once.
//!
//!     cargo bench -p runbook-cli --bench replicas
//!     INCIDENTS=300 BATCH=10 cargo bench -p runbook-cli --bench replicas
//!
//! `BATCH` alerts go in one notification (default 1: a request per incident per replica).
//! The API server is the HTTP-level fake (`engine/fake-apiserver`), in this process, on
//! loopback; the load is closed-loop (each replica's sender waits for its answer), and the
//! replicas, the fake and the senders share this machine's two cores.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead as _, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use runbook_fake_apiserver as support;
use serde_json::{json, Value as Json};

/// The replica tests' runbook: one `annotate` per incident, keyed by its `shard` label.
const RUNBOOK: &str = include_str!("../tests/fixtures/replicas/api-down.yaml");

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Replica {
    child: std::process::Child,
    address: String,
    state: PathBuf,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn replica(dir: &Path, kubeconfig: &Path, name: &str) -> Replica {
    let state = dir.join(format!("state-{name}"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_runbook"))
        .arg("--dir")
        .arg(dir.join("runbooks"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--lock",
            "lease",
            "--cluster-state",
            "--replica",
            name,
            "--queue",
            "100000",
            "--run-cap",
            "100000",
            "--keep-finished",
            "100000",
        ])
        .arg("--token-file")
        .arg(dir.join("token"))
        .arg("--state-dir")
        .arg(&state)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .env_remove("KUBECONFIG")
        .env("HOME", dir)
        .env("RUNBOOK_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn runbook serve");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let parsed: Json = serde_json::from_str(&line).unwrap_or(json!({"raw": line}));
            if parsed["level"] == "WARN" || parsed["level"] == "ERROR" {
                eprintln!("  replica: {line}");
            }
            let _ = tx.send(parsed);
        }
    });
    let address = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the replica starts");
        if line["message"] == "listening" {
            break line["address"].as_str().expect("address").to_owned();
        }
    };
    Replica {
        child,
        address,
        state,
    }
}

fn notification(first: u64, count: u64) -> String {
    let alerts: Vec<Json> = (first..first + count)
        .map(|n| {
            json!({"status": "firing", "labels": {"alertname": "ApiDown", "shard": format!("s{n}")},
                   "annotations": {}, "startsAt": "2026-12-04T03:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                   "generatorURL": "http://prom", "fingerprint": format!("{n:016x}")})
        })
        .collect();
    json!({
        "version": "4", "status": "firing", "receiver": "runbook", "groupKey": format!("{{}}:{{batch=\"{first}\"}}"),
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am",
        "alerts": alerts,
    })
    .to_string()
}

/// One request on a fresh connection; its status code and latency.
fn post(address: &str, body: &str) -> (u16, Duration, String) {
    let started = Instant::now();
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    write!(
        stream,
        "POST /api/v1/alerts HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nAuthorization: Bearer bench-token\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    let code = answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, started.elapsed(), answer)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() {
    let incidents = env_or("INCIDENTS", 1000).max(1);
    let batch = env_or("BATCH", 1).max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let fake = runtime.block_on(support::FakeApi::start());
    fake.insert(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}));
    fake.insert(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "api", "namespace": "shop"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "api"}},
                 "template": {"metadata": {"labels": {"app": "api"}}, "spec": {"containers": [{"name": "api", "image": "api:1"}]}}}
    }));
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("runbooks")).expect("mkdir");
    std::fs::write(dir.path().join("runbooks/api-down.yaml"), RUNBOOK).expect("write");
    std::fs::write(dir.path().join("token"), "bench-token\n").expect("write");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: dev\nclusters:\n- name: dev\n  cluster: {{server: '{}'}}\nusers:\n- name: me\n  user: {{token: t}}\ncontexts:\n- name: dev\n  context: {{cluster: dev, user: me, namespace: shop}}\n",
            fake.url()
        ),
    )
    .expect("write");
    let replicas: Vec<Replica> = ["r1", "r2", "r3"]
        .iter()
        .map(|name| replica(dir.path(), &kubeconfig, name))
        .collect();
    // Idle replicas poll for orphans; what they cost is counted apart from the incidents.
    fake.clear_requests();
    println!(
        "incidents: {incidents}, alerts per notification: {batch}, replicas: 3, each notification to all three"
    );
    let bodies: Vec<String> = (0..incidents)
        .step_by(batch as usize)
        .map(|first| notification(first, batch.min(incidents - first)))
        .collect();
    let started = Instant::now();
    let answers: Vec<Vec<(u16, Duration, String)>> = std::thread::scope(|scope| {
        let senders: Vec<_> = replicas
            .iter()
            .map(|replica| {
                let (address, bodies) = (replica.address.clone(), &bodies);
                scope.spawn(move || {
                    bodies
                        .iter()
                        .map(|body| post(&address, body))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        senders
            .into_iter()
            .map(|s| s.join().expect("sender"))
            .collect()
    });
    let sent = started.elapsed();
    let admitted_requests = fake.requests().len();
    let mut latencies: Vec<Duration> = answers.iter().flatten().map(|(_, l, _)| *l).collect();
    latencies.sort();
    let mut codes: BTreeMap<u16, usize> = BTreeMap::new();
    let mut decisions: BTreeMap<String, usize> = BTreeMap::new();
    for (code, _, answer) in answers.iter().flatten() {
        *codes.entry(*code).or_default() += 1;
        let body: Json = answer
            .split_once("\r\n\r\n")
            .and_then(|(_, b)| serde_json::from_str(b).ok())
            .unwrap_or_default();
        for result in body["results"].as_array().into_iter().flatten() {
            *decisions
                .entry(result["decision"].as_str().unwrap_or("?").to_owned())
                .or_default() += 1;
        }
    }
    // Every run ends.
    let deadline = Instant::now() + Duration::from_secs(600);
    let runs = loop {
        let runs: Vec<Json> = fake
            .objects()
            .into_iter()
            .filter(|o| o["kind"] == "RunbookRun")
            .collect();
        let finished = runs
            .iter()
            .filter(|r| r["status"]["phase"] == "Finished")
            .count();
        if finished as u64 >= incidents || Instant::now() > deadline {
            break runs;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let done = started.elapsed();
    let requests = fake.requests();
    let mut by_kind: HashMap<String, usize> = HashMap::new();
    for request in &requests {
        let kind = if request.path.contains("/runbookruns") {
            "runbookruns"
        } else if request.path.contains("/configmaps") && request.path.contains("-journal-")
            || request.path.ends_with("/configmaps")
                && request.method == "POST"
                && request.text.contains("-journal-")
            || request.path.ends_with("/configmaps")
                && request.method == "GET"
                && request.text.is_empty()
                && request
                    .query
                    .iter()
                    .any(|(n, v)| n == "labelSelector" && v.contains("runbook.dev/run"))
        {
            "journal chunks (configmaps)"
        } else if request.path.contains("/configmaps") {
            "ledger (configmaps)"
        } else if request.path.contains("/leases") {
            "leases"
        } else if request.path.contains("/deployments") {
            "the run's own reads and writes (deployments)"
        } else {
            "other"
        };
        *by_kind
            .entry(format!("{} {kind}", request.method))
            .or_default() += 1;
    }
    let mut journals = 0;
    let mut started_twice = 0;
    for replica in &replicas {
        for entry in std::fs::read_dir(replica.state.join("runs"))
            .into_iter()
            .flatten()
            .flatten()
        {
            journals += 1;
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            if text.matches("\"event\":\"run-started\"").count() != 1 {
                started_twice += 1;
            }
        }
    }
    let changes = requests
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.ends_with("/deployments/api"))
        .count();
    let succeeded = runs
        .iter()
        .filter(|r| r["status"]["outcome"] == "succeeded")
        .count();
    println!(
        "sent {} requests in {:.2} s; all runs ended after {:.2} s",
        latencies.len(),
        sent.as_secs_f64(),
        done.as_secs_f64()
    );
    println!("answers: {codes:?}; decisions: {decisions:?}");
    println!(
        "intake latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&latencies, 50.0).as_secs_f64() * 1e3,
        percentile(&latencies, 99.0).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    println!(
        "runs: {} RunbookRuns, {} succeeded, {} journals, {} started more than once, {} changes to the Deployment",
        runs.len(),
        succeeded,
        journals,
        started_twice,
        changes
    );
    println!(
        "API requests per incident: {:.1} while the notifications were taken in, {:.1} in all (with the runs)",
        admitted_requests as f64 / incidents as f64,
        requests.len() as f64 / incidents as f64
    );
    let mut kinds: Vec<_> = by_kind.into_iter().collect();
    kinds.sort();
    for (kind, count) in kinds {
        println!(
            "  {kind}: {:.2} per incident",
            count as f64 / incidents as f64
        );
    }
    let duplicates = runs.len() as u64 - incidents.min(runs.len() as u64);
    assert_eq!(runs.len() as u64, incidents, "one RunbookRun per incident");
    assert_eq!(succeeded as u64, incidents, "every run succeeded");
    assert_eq!(journals, incidents, "one journal per incident");
    assert_eq!(started_twice, 0);
    assert_eq!(
        changes as u64, incidents,
        "each incident's change made once"
    );
    assert_eq!(duplicates, 0);
    drop(replicas);
    drop(runtime);
}
