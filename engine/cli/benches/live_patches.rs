//! The live cluster's speed (issue 4): a runbook of 100 sequential patch steps, run by
//! `runbook run`, against a shell script making the same 100 changes with `kubectl patch`,
//! both against the same API server.
//!
//!     cargo bench -p runbook-cli --bench live_patches
//!     KUBECTL=/path/to/kubectl ROUNDS=5 STEPS=100 LATENCY_MS=2 cargo bench -p runbook-cli --bench live_patches
//!
//! `LATENCY_MS` delays every answer of the server, standing in for a real API server's own
//! time per request (a few milliseconds for a patch on a small cluster).
//!
//! The server is the HTTP-level fake API server the contract tests use
//! (`engine/fake-apiserver`), on loopback, so both sides pay the same (near zero) server
//! time and the difference is the client's: one process with one pooled connection, against
//! a process, a kubeconfig read and a discovery lookup per change. Against a real API server
//! each request also costs the server's time, the same for both sides; see BENCHMARKS.md.
//!
//! Each side runs ROUNDS times (whole runs, timed from outside, process start included); the
//! median is reported, with the requests each side sent. After each runbook round the object
//! carries the last step's annotation, which is checked, so a run that did nothing cannot
//! look fast.

use runbook_fake_apiserver as support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn kubeconfig(dir: &Path, server: &str) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: bench\nclusters:\n- name: bench\n  cluster: {{server: '{server}'}}\nusers:\n- name: bench\n  user: {{token: bench-token}}\ncontexts:\n- name: bench\n  context: {{cluster: bench, user: bench, namespace: bench}}\n"
        ),
    )
    .expect("write the kubeconfig");
    path
}

/// A runbook of `steps` patches, each setting the annotation `bench/step` to its number.
fn runbook(dir: &Path, steps: u64) {
    let mut text = String::from(
        "apiVersion: runbook.dev/v1alpha1\nkind: Runbook\nmetadata: {name: bench-patches}\nspec:\n  description: 100 sequential patches, for the live-cluster benchmark.\n  steps:\n",
    );
    for step in 1..=steps {
        text.push_str(&format!(
            "    - {{id: p{step}, patch: {{kind: Deployment, name: api, patch: {{metadata: {{annotations: {{bench/step: \"{step}\"}}}}}}}}}}\n"
        ));
    }
    std::fs::create_dir_all(dir.join("runbooks")).expect("mkdir");
    std::fs::write(dir.join("runbooks/bench-patches.yaml"), text).expect("write the runbook");
}

fn script(dir: &Path, kubectl: &str, kubeconfig: &Path, steps: u64) -> std::path::PathBuf {
    let mut text = String::from("#!/bin/sh\nset -e\n");
    for step in 1..=steps {
        text.push_str(&format!(
            "{kubectl} --kubeconfig {} patch deployment api -n bench --type merge -p '{{\"metadata\":{{\"annotations\":{{\"bench/step\":\"{step}\"}}}}}}' >/dev/null\n",
            kubeconfig.display()
        ));
    }
    let path = dir.join("patches.sh");
    std::fs::write(&path, text).expect("write the script");
    path
}

fn annotation(fake: &support::FakeApi) -> String {
    fake.object("apps/v1", "Deployment", Some("bench"), "api")
        .and_then(|d| {
            d.pointer("/metadata/annotations/bench~1step")
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        })
        .unwrap_or_default()
}

fn main() {
    let rounds = env_or("ROUNDS", 5).max(1);
    let steps = env_or("STEPS", 100).max(1);
    let kubectl = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".to_owned());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let fake = runtime.block_on(support::FakeApi::start());
    let latency = Duration::from_millis(env_or("LATENCY_MS", 0));
    fake.set_latency(latency);
    fake.insert(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}));
    fake.insert(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "api", "namespace": "bench"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "api"}},
                 "template": {"metadata": {"labels": {"app": "api"}}, "spec": {"containers": [{"name": "api", "image": "api:1"}]}}}
    }));
    let dir = tempfile::tempdir().expect("temp dir");
    let config = kubeconfig(dir.path(), &fake.url());
    runbook(dir.path(), steps);
    let shell = script(dir.path(), &kubectl, &config, steps);
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).expect("mkdir home");

    let version = Command::new(&kubectl)
        .args(["version", "--client"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .unwrap_or_else(|e| panic!("cannot run {kubectl}: {e}; set KUBECTL"));
    println!("server: fake API server on {} (loopback)", fake.url());
    println!("kubectl: {kubectl} ({version})");
    println!(
        "steps: {steps}, rounds: {rounds}, server latency per request: {} ms",
        latency.as_millis()
    );

    let mut runbook_times = Vec::new();
    let mut runbook_requests = 0;
    for round in 0..rounds {
        fake.clear_requests();
        fake.modify("apps/v1", "Deployment", Some("bench"), "api", |d| {
            d["metadata"]["annotations"] = json!({});
        });
        let started = Instant::now();
        let output = Command::new(env!("CARGO_BIN_EXE_runbook"))
            .args(["--dir"])
            .arg(dir.path().join("runbooks"))
            .args([
                "run",
                "bench-patches",
                "--yes",
                "--parallelism",
                "1",
                "--output",
                "json",
                "--kubeconfig",
            ])
            .arg(&config)
            .arg("--state-dir")
            .arg(dir.path().join(format!("state-{round}")))
            .env("HOME", &home)
            .env("RUNBOOK_LOG", "off")
            .output()
            .expect("runbook runs");
        let elapsed = started.elapsed();
        assert!(
            output.status.success(),
            "runbook failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(
            annotation(&fake),
            steps.to_string(),
            "the last patch landed"
        );
        runbook_requests = fake.requests().len();
        if std::env::var_os("SHOW_REQUESTS").is_some() {
            for request in fake.requests().iter().take(12) {
                println!("  runbook: {}", request.line());
            }
        }
        runbook_times.push(elapsed);
    }

    let mut kubectl_times = Vec::new();
    let mut kubectl_requests = 0;
    for _ in 0..rounds {
        fake.clear_requests();
        fake.modify("apps/v1", "Deployment", Some("bench"), "api", |d| {
            d["metadata"]["annotations"] = json!({});
        });
        let started = Instant::now();
        let status = Command::new("sh")
            .arg(&shell)
            .env("HOME", &home)
            .status()
            .expect("the script runs");
        let elapsed = started.elapsed();
        assert!(status.success(), "the kubectl script failed");
        assert_eq!(
            annotation(&fake),
            steps.to_string(),
            "the last patch landed"
        );
        kubectl_requests = fake.requests().len();
        if std::env::var_os("SHOW_REQUESTS").is_some() {
            for request in fake.requests().iter().take(12) {
                println!("  kubectl: {}", request.line());
            }
        }
        kubectl_times.push(elapsed);
    }

    let ours = median(runbook_times.clone());
    let theirs = median(kubectl_times.clone());
    println!(
        "runbook run ({steps} patch steps):   median {:>8.1} ms  (rounds: {:?}); {runbook_requests} requests",
        ours.as_secs_f64() * 1e3,
        runbook_times.iter().map(|t| t.as_millis()).collect::<Vec<_>>()
    );
    println!(
        "kubectl patch x {steps} (sh script): median {:>8.1} ms  (rounds: {:?}); {kubectl_requests} requests",
        theirs.as_secs_f64() * 1e3,
        kubectl_times.iter().map(|t| t.as_millis()).collect::<Vec<_>>()
    );
    println!(
        "speed-up: {:.1}x (target: at least 10x)",
        theirs.as_secs_f64() / ours.as_secs_f64()
    );
}
