//! `runbook serve --cluster-state` (issue 14): several replicas, one view of every incident.
//! Three `serve` processes share the HTTP-level fake API server, each with a state dir of its
//! own (as pods would), and get the same notifications (as an Alertmanager HA pair sends
//! them). What a user would notice: the answers, the RunbookRun objects, the journals, and the
//! runs' changes to the cluster.

use runbook_fake_apiserver as support;

use std::collections::BTreeMap;
use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};
use support::{FakeApi, Fault};

/// Marks the Deployment with the shard of the alert it serves, so the API server's requests
/// show every run's one change.
const RUNBOOK: &str = include_str!("fixtures/replicas/api-down.yaml");

/// Waits at its gate until someone approves, holding its worker.
const GATED: &str = r#"apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata:
  name: gated
spec:
  description: Wait for a human, then mark the Deployment.
  triggers:
    - alertName: GatedDown
  steps:
    - id: mark
      confirm: "Mark the Deployment?"
      annotate:
        kind: Deployment
        name: api
        set: {gated.runbook.dev/approved: "yes"}
"#;

struct Cluster {
    runtime: tokio::runtime::Runtime,
    fake: FakeApi,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

/// A `runbook serve` replica, killed and reaped however the test ends.
struct Replica {
    child: std::process::Child,
    address: String,
    name: String,
    state: PathBuf,
    logs: std::sync::mpsc::Receiver<Json>,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `runbook serve --cluster-state --replica NAME` on the runbooks and token in `dir`,
/// with a state dir of its own, and waits until it listens. Its warnings and errors are
/// printed (shown when a test fails).
fn spawn_replica(dir: &Path, kubeconfig: &Path, name: &str, extra: &[&str]) -> Replica {
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
        ])
        .arg("--token-file")
        .arg(dir.join("token"))
        .arg("--state-dir")
        .arg(&state)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(extra)
        .env_remove("KUBECONFIG")
        .env("HOME", dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn runbook serve");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, logs) = std::sync::mpsc::channel();
    let who = name.to_owned();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let parsed: Json = serde_json::from_str(&line).unwrap_or(json!({"raw": line}));
            // Shown when a test fails (the harness captures this thread's output too).
            if parsed["level"] != "INFO" && parsed["level"] != "DEBUG" {
                eprintln!("[{who}] {line}");
            }
            let _ = tx.send(parsed);
        }
    });
    let mut replica = Replica {
        child,
        address: String::new(),
        name: name.to_owned(),
        state,
        logs,
    };
    loop {
        let line = replica
            .logs
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("replica {name} did not start"));
        if line["message"] == "listening" {
            replica.address = line["address"].as_str().expect("address").to_owned();
            return replica;
        }
    }
}

fn cluster() -> Cluster {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let fake = runtime.block_on(FakeApi::start());
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
    std::fs::write(dir.path().join("runbooks/gated.yaml"), GATED).expect("write");
    std::fs::write(dir.path().join("token"), "serve-token\n").expect("write");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: dev\nclusters:\n- name: dev\n  cluster: {{server: '{}'}}\nusers:\n- name: me\n  user: {{token: secret-token}}\ncontexts:\n- name: dev\n  context: {{cluster: dev, user: me, namespace: shop}}\n",
            fake.url()
        ),
    )
    .expect("write");
    Cluster {
        runtime,
        fake,
        dir,
        kubeconfig,
    }
}

impl Cluster {
    fn replica(&self, name: &str, extra: &[&str]) -> Replica {
        spawn_replica(self.dir.path(), &self.kubeconfig, name, extra)
    }

    /// The RunbookRun objects, by name.
    fn runs(&self) -> BTreeMap<String, Json> {
        self.fake
            .objects()
            .into_iter()
            .filter(|o| o["kind"] == "RunbookRun")
            .map(|o| {
                (
                    o["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    o,
                )
            })
            .collect()
    }

    /// Waits until every run object has ended (Finished or Cancelled), and returns them.
    fn settled(&self, expected: usize) -> BTreeMap<String, Json> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let runs = self.runs();
            let ended = runs
                .values()
                .filter(|r| {
                    matches!(
                        r["status"]["phase"].as_str(),
                        Some("Finished" | "Cancelled")
                    )
                })
                .count();
            if runs.len() >= expected && ended == runs.len() && self.ledgers_idle() {
                return runs;
            }
            assert!(
                Instant::now() < deadline,
                "the runs did not end: {:#?}",
                runs.values().map(|r| &r["status"]).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether no ledger holds a key for a run any more.
    fn ledgers_idle(&self) -> bool {
        self.fake
            .objects()
            .iter()
            .filter(|o| o["kind"] == "ConfigMap")
            .filter_map(|o| o["data"]["ledger.json"].as_str())
            .all(|text| !text.contains("\"active\""))
    }

    /// The shards the runs marked the Deployment with, one per change, in order.
    fn served(&self) -> Vec<String> {
        self.fake
            .requests()
            .iter()
            .filter(|r| r.method == "PATCH" && r.path.ends_with("/deployments/api"))
            .filter(|r| r.query.iter().all(|(name, _)| name != "dryRun"))
            .filter_map(|r| {
                r.body.as_ref()?["metadata"]["annotations"]["served.runbook.dev/shard"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect()
    }
}

/// The CRD's schema (`schemas/runbookrun.crd.yaml`), as JSON.
fn crd_schema() -> Json {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/runbookrun.crd.yaml");
    let text = std::fs::read_to_string(&path).expect("the CRD");
    let source = runbook_core::source::SourceFile::new("runbookrun.crd.yaml", &text);
    let mut diagnostics = runbook_core::diagnostic::Diagnostics::new();
    let documents = runbook_core::yaml::parse(&source, &mut diagnostics);
    assert!(!diagnostics.has_errors(), "{diagnostics:?}");
    documents[0].root.to_json()["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// The fields of `value` that `schema` does not declare: a real API server prunes them from a
/// custom resource silently, so whatever serve wrote there would be lost.
fn undeclared(schema: &Json, value: &Json, at: &str, found: &mut Vec<String>) {
    if schema["x-kubernetes-preserve-unknown-fields"] == true {
        return;
    }
    let Some(fields) = value.as_object() else {
        if let (Some(items), Some(values)) = (schema.get("items"), value.as_array()) {
            for (n, item) in values.iter().enumerate() {
                undeclared(items, item, &format!("{at}[{n}]"), found);
            }
        }
        return;
    };
    for (name, field) in fields {
        let path = format!("{at}.{name}");
        // metadata, apiVersion and kind are the API server's, not the schema's.
        if at.is_empty() && matches!(name.as_str(), "metadata" | "apiVersion" | "kind") {
            continue;
        }
        match (
            schema["properties"].get(name),
            schema.get("additionalProperties"),
        ) {
            (Some(declared), _) => undeclared(declared, field, &path, found),
            (None, Some(any)) if any.is_object() => undeclared(any, field, &path, found),
            _ => found.push(path),
        }
    }
}

/// Every RunbookRun serve wrote is valid for the CRD, and loses nothing to pruning.
fn assert_as_the_crd_says(runs: &BTreeMap<String, Json>) {
    let schema = crd_schema();
    let validator = jsonschema::draft4::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("the CRD's schema");
    for (name, run) in runs {
        let errors: Vec<String> = validator.iter_errors(run).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{name}: {errors:?}\n{run:#}");
        let mut found = Vec::new();
        undeclared(&schema, run, "", &mut found);
        assert!(
            found.is_empty(),
            "{name} has fields the CRD does not declare, which the API server would drop: {found:?}"
        );
    }
}

/// The journals a replica wrote: run id and its records.
fn journals(state: &Path) -> BTreeMap<String, Vec<Json>> {
    let Ok(entries) = std::fs::read_dir(state.join("runs")) else {
        return BTreeMap::new();
    };
    entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "jsonl"))
        .map(|e| {
            let text = std::fs::read_to_string(e.path()).expect("journal");
            (
                e.path()
                    .file_stem()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                text.lines()
                    .map(|l| serde_json::from_str(l).expect("record"))
                    .collect(),
            )
        })
        .collect()
}

fn gated(fingerprint: &str) -> String {
    json!({
        "version": "4", "status": "firing", "receiver": "runbook", "groupKey": "{}:{}",
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am",
        "alerts": [{"status": "firing", "labels": {"alertname": "GatedDown"},
                   "annotations": {}, "startsAt": "2026-12-04T03:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                   "generatorURL": "http://prom", "fingerprint": fingerprint}],
    })
    .to_string()
}

impl Cluster {
    /// Waits until `done` holds of the run objects.
    fn wait_runs(
        &self,
        what: &str,
        done: impl Fn(&BTreeMap<String, Json>) -> bool,
    ) -> BTreeMap<String, Json> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let runs = self.runs();
            if done(&runs) {
                return runs;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {:#?}",
                runs.values()
                    .map(|r| (&r["metadata"]["name"], &r["status"]))
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn by_runbook<'a>(runs: &'a BTreeMap<String, Json>, runbook: &str) -> &'a Json {
    runs.values()
        .find(|r| r["spec"]["runbook"] == runbook)
        .unwrap_or_else(|| panic!("no run of {runbook}"))
}

/// r1 takes a gated run (its one worker waits at the gate) and queues a second behind it.
fn busy_replica(cluster: &Cluster, takeover_after: &str) -> Replica {
    let r1 = cluster.replica(
        "r1",
        &["--workers", "1", "--takeover-after", takeover_after],
    );
    let (code, answer, _) = post(&r1.address, &gated("g1"));
    assert_eq!((code, decisions(&answer)), (202, vec!["queued".to_owned()]));
    cluster.wait_runs("the gated run waits at its gate", |runs| {
        runs.values()
            .any(|r| r["status"]["phase"] == "WaitingApproval")
    });
    let (code, answer, _) = post(
        &r1.address,
        &notification(&[("f1", "a", "2026-12-04T03:00:00Z")]),
    );
    assert_eq!((code, decisions(&answer)), (202, vec!["queued".to_owned()]));
    let runs = cluster.runs();
    assert_eq!(by_runbook(&runs, "api-down")["status"]["phase"], "Queued");
    assert_eq!(by_runbook(&runs, "api-down")["status"]["owner"], "r1");
    r1
}

#[test]
fn the_runs_of_a_replica_killed_outright_are_taken_over_once_its_lease_expires() {
    let cluster = cluster();
    let mut r1 = busy_replica(&cluster, "2s");
    let r2 = cluster.replica("r2", &["--takeover-after", "2s"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        by_runbook(&cluster.runs(), "api-down")["status"]["owner"],
        "r1",
        "a live replica keeps its runs"
    );
    let killed = Instant::now();
    r1.child.kill().expect("kill -9");
    let _ = r1.child.wait();
    let runs = cluster.wait_runs("the queued run is taken over and run by r2", |runs| {
        by_runbook(runs, "api-down")["status"]["phase"] == "Finished"
    });
    let queued = by_runbook(&runs, "api-down");
    assert!(
        killed.elapsed() < Duration::from_secs(10),
        "taken over within the Lease's time"
    );
    assert_eq!(queued["status"]["owner"], "r2");
    assert_eq!(queued["status"]["takenOverFrom"], "r1");
    assert_eq!(queued["status"]["outcome"], "succeeded");
    assert_eq!(cluster.served(), ["a"], "its change made once, by r2");
    let queued_name = queued["metadata"]["name"].as_str().unwrap_or_default();
    assert!(
        journals(&r2.state).contains_key(queued_name),
        "r2 journaled the run it took over"
    );
    // The gated run had started on r1 and waited at its gate: r2 resumes it from its journal
    // in the cluster, and it waits at its gate on r2 now.
    let runs = cluster.wait_runs("the gated run waits at its gate on r2", |runs| {
        let gated = by_runbook(runs, "gated");
        gated["status"]["owner"] == "r2" && gated["status"]["phase"] == "WaitingApproval"
    });
    assert_as_the_crd_says(&runs);
    let gated = by_runbook(&runs, "gated");
    let name = gated["metadata"]["name"].as_str().expect("name").to_owned();
    assert!(
        !cluster.fake.requests().iter().any(|r| r
            .body
            .as_ref()
            .is_some_and(|b| b.to_string().contains("gated.runbook.dev/approved"))),
        "nothing changed before the approval"
    );
    let (code, body) = approve(&r2.address, &name);
    assert_eq!(code, 200, "{body}");
    let runs = cluster.wait_runs("the resumed run finishes on r2", |runs| {
        by_runbook(runs, "gated")["status"]["phase"] == "Finished"
    });
    assert_eq!(by_runbook(&runs, "gated")["status"]["outcome"], "succeeded");
    let records = &journals(&r2.state)[&name];
    let events: Vec<&str> = records
        .iter()
        .map(|r| r["event"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        events.iter().filter(|e| **e == "run-started").count(),
        1,
        "{events:?}"
    );
    assert_eq!(
        events.iter().filter(|e| **e == "run-resumed").count(),
        1,
        "{events:?}"
    );
    assert_eq!(
        events.iter().filter(|e| **e == "step-intent").count(),
        1,
        "one intent for its one change: {events:?}"
    );
    let changed = cluster
        .fake
        .requests()
        .iter()
        .filter(|r| {
            r.method == "PATCH"
                && r.body
                    .as_ref()
                    .is_some_and(|b| b.to_string().contains("gated.runbook.dev/approved"))
        })
        .count();
    assert_eq!(changed, 1, "the gated change made once");
    // The journal in the cluster holds the whole run, r1's records and r2's.
    let chunks: String = cluster
        .fake
        .objects()
        .iter()
        .filter(|o| {
            o["kind"] == "ConfigMap"
                && o["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(&format!("{name}-journal-")))
        })
        .filter_map(|o| o["data"]["records.jsonl"].as_str().map(str::to_owned))
        .collect();
    assert!(
        chunks.contains("\"run-started\"") && chunks.contains("\"run-finished\""),
        "{chunks}"
    );
    // `runbook show --cluster` reads it, as a person would after the replica is gone.
    let shown = Command::new(env!("CARGO_BIN_EXE_runbook"))
        .args([
            "show",
            &name,
            "--cluster",
            "--output",
            "json",
            "--kubeconfig",
        ])
        .arg(&cluster.kubeconfig)
        .env_remove("KUBECONFIG")
        .env("HOME", cluster.dir.path())
        .output()
        .expect("runbook show");
    assert_eq!(
        shown.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    let shown: Vec<String> = String::from_utf8_lossy(&shown.stdout)
        .lines()
        .map(|line| {
            serde_json::from_str::<Json>(line).expect("a record")["event"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(
        shown.first().map(String::as_str),
        Some("run-started"),
        "{shown:?}"
    );
    assert!(shown.contains(&"run-resumed".to_owned()), "{shown:?}");
    assert_eq!(
        shown.last().map(String::as_str),
        Some("run-finished"),
        "{shown:?}"
    );
}

/// r1 sends the run's one change (the fault decides what becomes of it) and is killed before
/// it learns the answer; `tamper` runs before r2 can take over. Returns the cluster and r2.
fn killed_during_a_change(fault: Fault, tamper: impl FnOnce(&Cluster)) -> (Cluster, Replica) {
    let cluster = cluster();
    let mut r1 = cluster.replica(
        "r1",
        &["--takeover-after", "2s", "--request-timeout", "60s"],
    );
    let hook = format!("{}/hooks/page", cluster.fake.url());
    let r2 = cluster.replica("r2", &["--takeover-after", "2s", "--notify-webhook", &hook]);
    cluster.fake.fault(fault);
    let (code, answer, _) = post(
        &r1.address,
        &notification(&[("f1", "a", "2026-12-04T03:00:00Z")]),
    );
    assert_eq!((code, decisions(&answer)), (202, vec!["queued".to_owned()]));
    let deadline = Instant::now() + Duration::from_secs(20);
    while cluster.changes() == 0 {
        assert!(Instant::now() < deadline, "the change was never sent");
        std::thread::sleep(Duration::from_millis(20));
    }
    tamper(&cluster);
    r1.child.kill().expect("kill -9");
    let _ = r1.child.wait();
    cluster.fake.clear_faults();
    (cluster, r2)
}

impl Cluster {
    /// The changes sent to the Deployment (dry runs aside).
    fn changes(&self) -> usize {
        self.fake
            .requests()
            .iter()
            .filter(|r| {
                r.method == "PATCH"
                    && r.path.ends_with("/deployments/api")
                    && r.query.iter().all(|(n, _)| n != "dryRun")
            })
            .count()
    }

    fn shard_annotation(&self) -> Json {
        self.fake
            .object("apps/v1", "Deployment", Some("shop"), "api")
            .expect("the deployment")["metadata"]["annotations"]["served.runbook.dev/shard"]
            .clone()
    }
}

/// Issue 14, item 3: a step whose intent has no result is looked at on its object.
#[test]
fn a_change_that_took_effect_before_its_replica_died_is_not_made_again() {
    // The server makes the change; its answer never reaches r1.
    let (cluster, _r2) = killed_during_a_change(
        Fault::lose_answer("PATCH", "/apis/apps/v1/namespaces/shop/deployments/api"),
        |_| {},
    );
    let runs = cluster.wait_runs("r2 finishes the run", |runs| {
        by_runbook(runs, "api-down")["status"]["phase"] == "Finished"
    });
    let run = by_runbook(&runs, "api-down");
    assert_eq!(run["status"]["owner"], "r2");
    assert_eq!(run["status"]["outcome"], "succeeded", "{run:#}");
    assert_eq!(cluster.changes(), 1, "the change is not sent again");
    assert_eq!(cluster.shard_annotation(), "a");
}

#[test]
fn a_change_that_had_not_taken_effect_when_its_replica_died_is_made_by_the_next() {
    // The change never reaches the server's store.
    let (cluster, _r2) = killed_during_a_change(
        Fault::hang("PATCH", "/apis/apps/v1/namespaces/shop/deployments/api"),
        |_| {},
    );
    let runs = cluster.wait_runs("r2 finishes the run", |runs| {
        by_runbook(runs, "api-down")["status"]["phase"] == "Finished"
    });
    let run = by_runbook(&runs, "api-down");
    assert_eq!(run["status"]["owner"], "r2");
    assert_eq!(run["status"]["outcome"], "succeeded", "{run:#}");
    assert_eq!(cluster.changes(), 2, "the lost one, and r2's");
    assert_eq!(cluster.shard_annotation(), "a");
}

#[test]
fn a_change_whose_object_someone_else_changed_meanwhile_is_left_to_a_human_and_paged() {
    let (cluster, _r2) = killed_during_a_change(
        Fault::hang("PATCH", "/apis/apps/v1/namespaces/shop/deployments/api"),
        |cluster| {
            cluster
                .fake
                .modify("apps/v1", "Deployment", Some("shop"), "api", |d| {
                    d["metadata"]["annotations"] =
                        json!({"served.runbook.dev/shard": "someone-else"});
                });
        },
    );
    let runs = cluster.wait_runs("r2 claims the run and asks for a human", |runs| {
        by_runbook(runs, "api-down")["status"]["needsHuman"].is_string()
    });
    assert_as_the_crd_says(&runs);
    let run = by_runbook(&runs, "api-down");
    assert_eq!(run["status"]["owner"], "r2");
    assert_eq!(run["status"]["phase"], "Interrupted");
    let why = run["status"]["needsHuman"].as_str().unwrap_or_default();
    assert!(why.contains("`mark` was about to"), "{why}");
    assert!(
        why.contains("is neither as it was before nor as the change leaves it"),
        "{why}"
    );
    assert!(why.contains("--assume-done"), "{why}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(cluster.changes(), 1, "the change is not sent again");
    assert_eq!(cluster.shard_annotation(), "someone-else");
    let deadline = Instant::now() + Duration::from_secs(10);
    let paged = loop {
        let found = cluster
            .fake
            .requests()
            .into_iter()
            .find(|r| r.method == "POST" && r.path == "/hooks/page")
            .and_then(|r| r.body);
        if let Some(found) = found {
            break found;
        }
        assert!(Instant::now() < deadline, "r2 never paged");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(paged["kind"], "page", "{paged}");
    let message = paged["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("needs a human") && message.contains("`mark` was about to"),
        "{message}"
    );
}

/// Approves the gate `run` waits at on a replica (its server token approves: no approvers).
fn approve(address: &str, run: &str) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let body = r#"{"by": "test"}"#;
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    write!(
        stream,
        "POST /api/v1/runs/{run}/approve HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nAuthorization: Bearer serve-token\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
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
    (code, answer)
}

#[test]
fn sigterm_hands_a_replicas_queued_runs_over_to_another_at_once() {
    let cluster = cluster();
    // Long Leases: the handover must not wait for one to expire.
    let mut r1 = busy_replica(&cluster, "60s");
    let r2 = cluster.replica("r2", &["--takeover-after", "60s"]);
    let signalled = Instant::now();
    let pid = r1.child.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let exited = r1.child.wait().expect("r1 stops");
    assert_eq!(exited.code(), Some(0), "a clean stop");
    let runs = cluster.wait_runs("the handed-over run is run by r2", |runs| {
        by_runbook(runs, "api-down")["status"]["phase"] == "Finished"
    });
    assert!(
        signalled.elapsed() < Duration::from_secs(15),
        "{:?}",
        signalled.elapsed()
    );
    let handed = by_runbook(&runs, "api-down");
    assert_eq!(handed["status"]["owner"], "r2");
    assert_eq!(handed["status"]["outcome"], "succeeded");
    assert_eq!(cluster.served(), ["a"]);
    let name = handed["metadata"]["name"].as_str().unwrap_or_default();
    assert!(
        journals(&r1.state).keys().all(|id| id != name),
        "r1 never started it"
    );
    // The gated run stopped resumable at its gate and was handed over too: r2 resumes it, and
    // it waits at its gate there.
    cluster.wait_runs("the gated run waits at its gate on r2", |runs| {
        let gated = by_runbook(runs, "gated");
        gated["status"]["owner"] == "r2" && gated["status"]["phase"] == "WaitingApproval"
    });
    drop(r2);
}

fn notification(alerts: &[(&str, &str, &str)]) -> String {
    let alerts: Vec<Json> = alerts
        .iter()
        .map(|(fingerprint, shard, starts_at)| {
            json!({"status": "firing", "labels": {"alertname": "ApiDown", "shard": shard},
                   "annotations": {}, "startsAt": starts_at, "endsAt": "0001-01-01T00:00:00Z",
                   "generatorURL": "http://prom", "fingerprint": fingerprint})
        })
        .collect();
    json!({
        "version": "4", "status": "firing", "receiver": "runbook", "groupKey": "{}:{}",
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am",
        "alerts": alerts,
    })
    .to_string()
}

/// POSTs a webhook; the status code and the JSON body.
fn post(address: &str, body: &str) -> (u16, Json, String) {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    write!(
        stream,
        "POST /api/v1/alerts HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nAuthorization: Bearer serve-token\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
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
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or_default();
    (
        code,
        serde_json::from_str(body).unwrap_or_default(),
        head.to_owned(),
    )
}

fn decisions(body: &Json) -> Vec<String> {
    body["results"]
        .as_array()
        .map(|results| {
            results
                .iter()
                .map(|r| r["decision"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn one_notification_sent_to_three_replicas_a_hundred_times_starts_one_run_per_incident() {
    let cluster = cluster();
    let replicas: Vec<Replica> = ["r1", "r2", "r3"]
        .iter()
        .map(|name| cluster.replica(name, &[]))
        .collect();
    // Five incidents of five keys in one notification, as Alertmanager groups them.
    let incidents: Vec<(String, String)> = (1..=5)
        .map(|n| (format!("f{n}"), format!("s{n}")))
        .collect();
    let alerts: Vec<(&str, &str, &str)> = incidents
        .iter()
        .map(|(f, s)| (f.as_str(), s.as_str(), "2026-12-04T03:00:00Z"))
        .collect();
    let body = notification(&alerts);
    // Each replica gets it 100 times, the three at once.
    let answers: Vec<Vec<String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = replicas
            .iter()
            .map(|replica| {
                let (address, body) = (replica.address.clone(), body.clone());
                scope.spawn(move || {
                    let mut seen = Vec::new();
                    for _ in 0..100 {
                        let (code, answer, head) = post(&address, &body);
                        assert_eq!(code, 202, "{head}\n{answer}");
                        seen.extend(decisions(&answer));
                    }
                    seen
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("sender"))
            .collect()
    });
    let queued: usize = answers
        .iter()
        .map(|a| a.iter().filter(|d| *d == "queued").count())
        .sum();
    assert_eq!(
        queued, 5,
        "one run queued per incident across the replicas: {answers:?}"
    );
    let runs = cluster.settled(5);
    assert_eq!(
        runs.len(),
        5,
        "one RunbookRun per incident: {:?}",
        runs.keys()
    );
    assert_as_the_crd_says(&runs);
    for run in runs.values() {
        assert_eq!(run["status"]["phase"], "Finished", "{run:#}");
        assert_eq!(run["status"]["outcome"], "succeeded", "{run:#}");
        assert_eq!(run["spec"]["runbook"], "api-down");
        assert!(run["status"]["owner"]
            .as_str()
            .is_some_and(|o| o.starts_with('r')));
    }
    let mut journaled = BTreeMap::new();
    for replica in &replicas {
        for (id, records) in journals(&replica.state) {
            let started = records
                .iter()
                .filter(|r| r["event"] == "run-started")
                .count();
            assert_eq!(started, 1, "{id} started once");
            let intents = records
                .iter()
                .filter(|r| r["event"] == "step-intent")
                .count();
            assert_eq!(intents, 1, "{id}: one intent for its one mutation");
            let owner = runs[&id]["status"]["owner"].as_str().unwrap_or_default();
            assert_eq!(
                owner, replica.name,
                "{id} is journaled by the replica that owns it"
            );
            journaled.insert(id, replica.name.clone());
        }
    }
    assert_eq!(
        journaled.keys().collect::<Vec<_>>(),
        runs.keys().collect::<Vec<_>>(),
        "every run object has exactly one journal, on its owner"
    );
    let mut served = cluster.served();
    served.sort();
    assert_eq!(
        served,
        incidents.iter().map(|(_, s)| s.clone()).collect::<Vec<_>>(),
        "each incident's change made once"
    );
}

#[test]
fn cooldowns_and_run_caps_hold_across_replicas() {
    let cluster = cluster();
    let r1 = cluster.replica("r1", &["--run-cap", "2"]);
    let r2 = cluster.replica("r2", &["--run-cap", "2"]);
    let (code, answer, _) = post(
        &r1.address,
        &notification(&[("f1", "a", "2026-12-04T03:00:00Z")]),
    );
    assert_eq!((code, decisions(&answer)), (202, vec!["queued".to_owned()]));
    cluster.settled(1);
    // A new incident of the same key, at the other replica, within the trigger's hour.
    let (code, answer, _) = post(
        &r2.address,
        &notification(&[("f1", "a", "2026-12-04T03:10:00Z")]),
    );
    assert_eq!(code, 202);
    assert_eq!(decisions(&answer), ["cooldown"], "{answer:#}");
    let reason = answer["results"][0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("cooldown"), "{reason}");
    // The cap of two runs per hour: one more key runs, the third is capped, wherever it lands.
    let (_, answer, _) = post(
        &r2.address,
        &notification(&[("f2", "b", "2026-12-04T03:11:00Z")]),
    );
    assert_eq!(decisions(&answer), ["queued"]);
    let (_, answer, _) = post(
        &r1.address,
        &notification(&[("f3", "c", "2026-12-04T03:12:00Z")]),
    );
    assert_eq!(decisions(&answer), ["capped"], "{answer:#}");
    let runs = cluster.settled(2);
    assert_eq!(
        runs.len(),
        2,
        "refused alerts leave no run object: {:?}",
        runs.keys()
    );
    assert_eq!(cluster.served(), ["a", "b"]);
    // The refused incidents are not remembered as served: once the rule allows, they run.
    drop((r1, r2));
}

#[test]
fn when_the_api_server_cannot_admit_an_alert_it_is_refused_with_retry_after_and_nothing_runs() {
    let cluster = cluster();
    let r1 = cluster.replica("r1", &["--retry-after", "7s", "--request-timeout", "2s"]);
    cluster.fake.fault(Fault::status(
        "*",
        "/apis/runbook.dev/v1alpha1/namespaces/shop/runbookruns",
        503,
        "ServiceUnavailable",
        "etcd is down",
    ));
    let body = notification(&[("f1", "a", "2026-12-04T03:00:00Z")]);
    let (code, answer, head) = post(&r1.address, &body);
    assert_eq!(code, 503, "{head}\n{answer}");
    assert!(head.to_lowercase().contains("retry-after: 7"), "{head}");
    assert_eq!(decisions(&answer), ["unavailable"]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        journals(&r1.state).is_empty(),
        "nothing ran without admission"
    );
    assert!(cluster.served().is_empty());
    // Alertmanager sends it again once the API server is back: it runs, once.
    cluster.fake.clear_faults();
    let (code, answer, _) = post(&r1.address, &body);
    assert_eq!((code, decisions(&answer)), (202, vec!["queued".to_owned()]));
    let runs = cluster.settled(1);
    assert_eq!(runs.len(), 1);
    assert_eq!(cluster.served(), ["a"]);
}

#[test]
fn a_create_whose_answer_was_lost_is_taken_as_the_replicas_own_when_retried() {
    let cluster = cluster();
    let r1 = cluster.replica("r1", &["--request-timeout", "1s"]);
    let mut lost = Fault::lose_answer(
        "POST",
        "/apis/runbook.dev/v1alpha1/namespaces/shop/runbookruns",
    );
    lost = lost.times(1);
    cluster.fake.fault(lost);
    let (code, answer, _) = post(
        &r1.address,
        &notification(&[("f1", "a", "2026-12-04T03:00:00Z")]),
    );
    assert_eq!(
        (code, decisions(&answer)),
        (202, vec!["queued".to_owned()]),
        "{answer:#}"
    );
    let runs = cluster.settled(1);
    assert_eq!(runs.len(), 1);
    assert_eq!(cluster.served(), ["a"]);
}

#[test]
fn runbook_runs_with_cluster_lists_the_run_objects() {
    let cluster = cluster();
    let r1 = cluster.replica("r1", &[]);
    let (code, _, _) = post(
        &r1.address,
        &notification(&[("f1", "a", "2026-12-04T03:00:00Z")]),
    );
    assert_eq!(code, 202);
    let runs = cluster.settled(1);
    let name = runs.keys().next().expect("a run").clone();
    let output = Command::new(env!("CARGO_BIN_EXE_runbook"))
        .args(["runs", "--cluster", "--kubeconfig"])
        .arg(&cluster.kubeconfig)
        .env_remove("KUBECONFIG")
        .env("HOME", cluster.dir.path())
        .output()
        .expect("runbook runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("RUN"), "{stdout}");
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        &row[..6],
        [
            name.as_str(),
            "api-down",
            "Finished",
            "succeeded",
            "mark",
            "r1"
        ],
        "{stdout}"
    );
    let _ = &cluster.runtime;
}

impl Cluster {
    /// A kubeconfig for the fake API server with `token`'s credentials.
    fn kubeconfig_for(&self, user: &str, token: &str) -> PathBuf {
        let path = self.dir.path().join(format!("kubeconfig-{user}"));
        let text = std::fs::read_to_string(&self.kubeconfig)
            .expect("kubeconfig")
            .replace("token: secret-token", &format!("token: {token}"));
        std::fs::write(&path, text).expect("write");
        path
    }

    /// `runbook approve RUN --cluster` as the user of `kubeconfig`: exit code, stdout, stderr.
    fn approve_as(&self, kubeconfig: &Path, run: &str) -> (i32, String, String) {
        let output = Command::new(env!("CARGO_BIN_EXE_runbook"))
            .args(["approve", run, "--cluster", "--wait", "15s", "--kubeconfig"])
            .arg(kubeconfig)
            .env_remove("KUBECONFIG")
            .env("HOME", self.dir.path())
            .output()
            .expect("runbook approve");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }
}

/// POSTs `body` to the fake API server with `token`: the status code and the body.
fn api_post(url: &str, path: &str, token: &str, body: &Json) -> (u16, Json) {
    use std::io::{Read as _, Write as _};
    let address = url.trim_start_matches("http://");
    let body = body.to_string();
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
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
    let json = answer
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or_default();
    (code, json)
}

/// Issue 14, item 4: `runbook approve --cluster` with the approver's own credentials; the API
/// server's admission holds the approval's name to its creator, RBAC decides, and whichever
/// replica runs the run takes it in and journals the API-verified name.
#[test]
fn an_approval_through_the_cluster_records_who_the_api_server_says_approved() {
    let cluster = cluster();
    cluster.fake.add_token("alice-token", "alice", &["oncall"]);
    cluster.fake.add_token("bob-token", "bob", &[]);
    cluster.fake.grant(support::Grant {
        subject: "Group:oncall".to_owned(),
        verb: "approve".to_owned(),
        group: "runbook.dev".to_owned(),
        resource: "runbooks".to_owned(),
        namespace: Some("shop".to_owned()),
        names: vec!["gated".to_owned()],
        binding: "runbook-approvers".to_owned(),
    });
    let r1 = cluster.replica("r1", &[]);
    let r2 = cluster.replica("r2", &[]);
    let (code, _, _) = post(&r2.address, &gated("g1"));
    assert_eq!(code, 202);
    let runs = cluster.wait_runs("the run waits at its gate", |runs| {
        runs.values()
            .any(|r| r["status"]["phase"] == "WaitingApproval")
    });
    let run = by_runbook(&runs, "gated")["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_owned();
    let alice = cluster.kubeconfig_for("alice", "alice-token");
    let bob = cluster.kubeconfig_for("bob", "bob-token");

    // Without the admission policy, an approval's name is only its creator's claim: refused.
    let (code, _, stderr) = cluster.approve_as(&alice, &run);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(
            "ValidatingAdmissionPolicy runbook-approvals-name-their-approver is not installed"
        ),
        "{stderr}"
    );
    for kind in [
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ] {
        cluster.fake.insert(json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": kind,
            "metadata": {"name": "runbook-approvals-name-their-approver"}, "spec": {},
        }));
    }

    // Bob is who the API server says, but RBAC does not let him approve this runbook.
    let (code, _, stderr) = cluster.approve_as(&bob, &run);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("bob may not approve runbook `gated`"),
        "{stderr}"
    );
    // Bob cannot pass himself off as alice: the admission policy refuses the approval.
    let (code, body) = api_post(
        &cluster.fake.url(),
        "/apis/runbook.dev/v1alpha1/namespaces/shop/runbookapprovals",
        "bob-token",
        &json!({"apiVersion": "runbook.dev/v1alpha1", "kind": "RunbookApproval",
                "metadata": {"name": "forged", "namespace": "shop"},
                "spec": {"run": run, "answer": "approve", "by": "alice", "groups": ["oncall"]}}),
    );
    assert_eq!(code, 403, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("spec.by must name who gives the approval (bob), not alice"),
        "{body}"
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        by_runbook(&cluster.runs(), "gated")["status"]["phase"],
        "WaitingApproval",
        "refused approvals leave the gate waiting"
    );

    // Alice's approval, through the cluster, reaches the replica that runs it.
    let (code, stdout, stderr) = cluster.approve_as(&alice, &run);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("answered yes, by alice"), "{stdout}");
    let runs = cluster.wait_runs("the approved run finishes", |runs| {
        by_runbook(runs, "gated")["status"]["phase"] == "Finished"
    });
    assert_eq!(by_runbook(&runs, "gated")["status"]["outcome"], "succeeded");
    let owner = by_runbook(&runs, "gated")["status"]["owner"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let state = if owner == "r1" { &r1.state } else { &r2.state };
    let answered = journals(state)[&run]
        .iter()
        .find(|r| r["event"] == "gate-answered")
        .cloned()
        .expect("gate answered");
    let by = answered["by"].as_str().unwrap_or_default();
    assert!(
        by.starts_with("approve: alice (kubernetes, RunbookApproval "),
        "{by}"
    );
    // An approval of a run that has ended is refused with the reason, not left waiting.
    let (code, _, stderr) = cluster.approve_as(&alice, &run);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("is not waiting at a gate (it is Finished)"),
        "{stderr}"
    );
}

// --- Against a real API server ----------------------------------------------------------

/// `kubectl ARGS` against `$KUBECONFIG`; its stdout, or a panic with its stderr.
fn kubectl(args: &[&str], input: Option<&str>) -> String {
    use std::io::Write as _;
    let mut child = Command::new("kubectl")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("kubectl cannot be run ({e}): install it for the cluster tests")
        });
    if let Some(input) = input {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write");
    }
    drop(child.stdin.take());
    let output = child.wait_with_output().expect("kubectl");
    assert!(
        output.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A namespace of its own on the real cluster, deleted when the test ends.
struct RealNamespace(String);

impl Drop for RealNamespace {
    fn drop(&mut self) {
        let _ = Command::new("kubectl")
            .args(["delete", "namespace", &self.0, "--wait=false"])
            .output();
    }
}

/// The scenario of the first test against a real API server (kind, k3d or a bare control
/// plane: no pod runs): the CRDs and the admission policy from the repository, three replicas
/// with one kubeconfig, one notification sent to all three 20 times, and then `kill -9` of the
/// replica that owns a run waiting at its gate: another takes it over within the Lease and it
/// is approved there through a RunbookApproval.
#[test]
#[ignore = "needs cluster"]
fn three_replicas_on_a_real_api_server_start_one_run_per_incident_and_take_over() {
    let kubeconfig = std::env::var("KUBECONFIG")
        .ok()
        .filter(|k| !k.is_empty())
        .expect(
        "KUBECONFIG is not set: point it at a disposable cluster (see engine/kube/tests/README.md)",
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for file in [
        "schemas/runbookrun.crd.yaml",
        "schemas/runbookapproval.crd.yaml",
    ] {
        kubectl(
            &[
                "apply",
                "--server-side",
                "-f",
                root.join(file).to_str().expect("path"),
            ],
            None,
        );
    }
    kubectl(
        &[
            "wait",
            "--for=condition=Established",
            "crd/runbookruns.runbook.dev",
            "crd/runbookapprovals.runbook.dev",
            "--timeout=60s",
        ],
        None,
    );
    let suffix = format!(
        "{:08x}",
        std::process::id() ^ (Instant::now().elapsed().subsec_nanos())
    );
    let namespace = RealNamespace(format!("runbook-it-replicas-{suffix}"));
    kubectl(&["create", "namespace", &namespace.0], None);
    kubectl(
        &["apply", "-n", &namespace.0, "-f", "-"],
        Some(
            &json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "api"},
                "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "api"}},
                         "template": {"metadata": {"labels": {"app": "api"}}, "spec": {"containers": [{"name": "api", "image": "registry.k8s.io/pause:3.10"}]}}}
            })
            .to_string(),
        ),
    );
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("runbooks")).expect("mkdir");
    std::fs::write(dir.path().join("runbooks/api-down.yaml"), RUNBOOK).expect("write");
    std::fs::write(dir.path().join("runbooks/gated.yaml"), GATED).expect("write");
    std::fs::write(dir.path().join("token"), "serve-token\n").expect("write");
    let start = |name: &str| -> Replica {
        spawn_replica(
            dir.path(),
            Path::new(&kubeconfig),
            name,
            &["--takeover-after", "5s", "-n", &namespace.0],
        )
    };

    let runs = || -> BTreeMap<String, Json> {
        let list: Json = serde_json::from_str(&kubectl(
            &["get", "runbookruns", "-n", &namespace.0, "-o", "json"],
            None,
        ))
        .expect("json");
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|o| {
                (
                    o["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    o.clone(),
                )
            })
            .collect()
    };
    let wait =
        |what: &str, done: &dyn Fn(&BTreeMap<String, Json>) -> bool| -> BTreeMap<String, Json> {
            let deadline = Instant::now() + Duration::from_secs(90);
            loop {
                let now = runs();
                if done(&now) {
                    return now;
                }
                assert!(Instant::now() < deadline, "{what}: {now:#?}");
                std::thread::sleep(Duration::from_millis(500));
            }
        };
    let mut replicas: Vec<Replica> = ["r1", "r2", "r3"].iter().map(|n| start(n)).collect();
    let body = notification(&[
        ("f1", "a", "2026-12-04T03:00:00Z"),
        ("f2", "b", "2026-12-04T03:00:00Z"),
    ]);
    let queued: usize = std::thread::scope(|scope| {
        let senders: Vec<_> = replicas
            .iter()
            .map(|r| {
                let (address, body) = (r.address.clone(), body.clone());
                scope.spawn(move || {
                    (0..20)
                        .map(|_| {
                            let (code, answer, head) = post(&address, &body);
                            assert_eq!(code, 202, "{head}");
                            decisions(&answer).iter().filter(|d| *d == "queued").count()
                        })
                        .sum::<usize>()
                })
            })
            .collect();
        senders.into_iter().map(|s| s.join().expect("sender")).sum()
    });
    assert_eq!(queued, 2, "one run queued per incident");
    let settled = wait("both runs finish", &|runs| {
        runs.len() == 2 && runs.values().all(|r| r["status"]["phase"] == "Finished")
    });
    assert_as_the_crd_says(&settled);
    for run in settled.values() {
        assert_eq!(run["status"]["outcome"], "succeeded", "{run:#}");
    }
    // kill -9 of the replica whose run waits at its gate.
    let (code, _, _) = post(&replicas[0].address, &gated("g1"));
    assert_eq!(code, 202);
    let waiting = wait("the gated run waits", &|runs| {
        runs.values()
            .any(|r| r["spec"]["runbook"] == "gated" && r["status"]["phase"] == "WaitingApproval")
    });
    let gated_run = waiting
        .values()
        .find(|r| r["spec"]["runbook"] == "gated")
        .expect("gated")
        .clone();
    let name = gated_run["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_owned();
    let owner = gated_run["status"]["owner"]
        .as_str()
        .expect("owner")
        .to_owned();
    let victim = replicas
        .iter()
        .position(|r| r.name == owner)
        .expect("its owner");
    let mut killed = replicas.remove(victim);
    killed.child.kill().expect("kill -9");
    let _ = killed.child.wait();
    let taken = wait("another replica takes the gated run over", &|runs| {
        runs.get(&name).is_some_and(|r| {
            r["status"]["owner"] != owner.as_str() && r["status"]["phase"] == "WaitingApproval"
        })
    });
    assert_eq!(taken[&name]["status"]["takenOverFrom"], owner.as_str());
    // Approved through the cluster, as whoever the kubeconfig is (cluster-admin may approve).
    let approved = Command::new(env!("CARGO_BIN_EXE_runbook"))
        .args([
            "approve",
            &name,
            "--cluster",
            "-n",
            &namespace.0,
            "--kubeconfig",
            &kubeconfig,
            "--wait",
            "30s",
        ])
        .output()
        .expect("runbook approve");
    assert_eq!(
        approved.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&approved.stderr)
    );
    let done = wait("the gated run finishes", &|runs| {
        runs[&name]["status"]["phase"] == "Finished"
    });
    assert_eq!(done[&name]["status"]["outcome"], "succeeded");
    let annotations: Json = serde_json::from_str(&kubectl(
        &[
            "get",
            "deployment",
            "api",
            "-n",
            &namespace.0,
            "-o",
            "jsonpath={.metadata.annotations}",
        ],
        None,
    ))
    .expect("json");
    assert_eq!(annotations["gated.runbook.dev/approved"], "yes");
    drop(replicas);
}

#[test]
fn the_objects_of_runs_that_ended_longer_ago_than_keep_runs_are_deleted() {
    let cluster = cluster();
    let r1 = cluster.replica("r1", &["--keep-runs", "1s", "--takeover-after", "2s"]);
    let (code, _, _) = post(
        &r1.address,
        &notification(&[("f1", "a", "2026-12-04T03:00:00Z")]),
    );
    assert_eq!(code, 202);
    cluster.settled(1);
    cluster.wait_runs("the ended run's object is deleted", |runs| runs.is_empty());
    // The ledger still holds the trigger's cooldown: the incident's repeat runs nothing, even
    // at a replica that never saw it (r1 remembers it was served).
    let r2 = cluster.replica("r2", &[]);
    let (_, answer, _) = post(
        &r2.address,
        &notification(&[("f1", "a", "2026-12-04T03:00:00Z")]),
    );
    assert_eq!(decisions(&answer), ["cooldown"], "{answer:#}");
    assert_eq!(cluster.served(), ["a"]);
}

/// A replica that lost its Lease (not renewed in time, or taken) may be having its runs taken
/// over: it admits nothing (503, Retry-After) until it holds its Lease again.
#[test]
fn a_replica_that_lost_its_lease_admits_nothing_until_it_holds_it_again() {
    let cluster = cluster();
    let r1 = cluster.replica("r1", &["--takeover-after", "3s"]);
    cluster.fake.modify(
        "coordination.k8s.io/v1",
        "Lease",
        Some("shop"),
        "runbook-replica-r1",
        |lease| {
            lease["spec"]["holderIdentity"] = json!("someone-else");
        },
    );
    let body = notification(&[("f1", "a", "2026-12-04T03:00:00Z")]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, answer, head) = post(&r1.address, &body);
        if code == 503 {
            assert_eq!(decisions(&answer), ["unavailable"], "{head}");
            break;
        }
        // Until its next renewal finds it lost, r1 admits as usual.
        assert_eq!(code, 202, "{head}");
        assert!(
            Instant::now() < deadline,
            "r1 went on admitting after losing its Lease"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Once the other holder's claim expires, r1 takes its Lease again and admits.
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = notification(&[("f2", "b", "2026-12-04T03:00:00Z")]);
    loop {
        let (code, answer, _) = post(&r1.address, &body);
        if code == 202 {
            assert_eq!(decisions(&answer), ["queued"]);
            break;
        }
        assert!(Instant::now() < deadline, "r1 never held its Lease again");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Many steps at once each write their journal's durable records through the API before
/// their change: they must not wait on one another's writes (a journal write once waited on
/// a connection the runs' own threads drive, all of them waiting on the journal).
#[test]
fn parallel_steps_journal_through_the_api_without_waiting_on_each_other() {
    let cluster = cluster();
    let mut text = String::from(
        "apiVersion: runbook.dev/v1alpha1\nkind: Runbook\nmetadata:\n  name: wide\nspec:\n  description: Eight changes at once.\n  triggers:\n    - alertName: WideDown\n  steps:\n",
    );
    for n in 0..8 {
        text.push_str(&format!(
            "    - id: mark-{n}\n      needs: []\n      annotate: {{kind: Deployment, name: api, set: {{wide.runbook.dev/m{n}: \"yes\"}}}}\n"
        ));
    }
    std::fs::write(cluster.dir.path().join("runbooks/wide.yaml"), text).expect("write");
    let r1 = cluster.replica("r1", &["--parallelism", "8", "--request-timeout", "20s"]);
    let body = json!({
        "version": "4", "status": "firing", "receiver": "runbook", "groupKey": "{}:{}",
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am",
        "alerts": [{"status": "firing", "labels": {"alertname": "WideDown"}, "annotations": {},
                    "startsAt": "2026-12-04T03:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "http://prom", "fingerprint": "w1"}],
    })
    .to_string();
    let started = Instant::now();
    let (code, _, _) = post(&r1.address, &body);
    assert_eq!(code, 202);
    let runs = cluster.wait_runs("the wide run finishes", |runs| {
        runs.values().any(|r| r["status"]["phase"] == "Finished")
    });
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "eight parallel steps took {:?}: their journal writes waited on each other",
        started.elapsed()
    );
    assert_eq!(by_runbook(&runs, "wide")["status"]["outcome"], "succeeded");
    let annotations = cluster
        .fake
        .object("apps/v1", "Deployment", Some("shop"), "api")
        .expect("deployment")["metadata"]["annotations"]
        .clone();
    for n in 0..8 {
        assert_eq!(annotations[format!("wide.runbook.dev/m{n}")], "yes");
    }
}

/// r1 takes a gated run and is killed at its gate; `break_journal` runs before r2 starts and
/// takes it over. Returns the cluster, the run's name, and r2.
fn killed_at_gate(break_journal: impl FnOnce(&Cluster, &str)) -> (Cluster, String, Replica) {
    let cluster = cluster();
    let mut r1 = cluster.replica("r1", &["--takeover-after", "2s"]);
    let (code, _, _) = post(&r1.address, &gated("g1"));
    assert_eq!(code, 202);
    let runs = cluster.wait_runs("the run waits at its gate", |runs| {
        runs.values()
            .any(|r| r["status"]["phase"] == "WaitingApproval")
    });
    let name = by_runbook(&runs, "gated")["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_owned();
    r1.child.kill().expect("kill -9");
    let _ = r1.child.wait();
    break_journal(&cluster, &name);
    let hook = format!("{}/hooks/page", cluster.fake.url());
    let r2 = cluster.replica("r2", &["--takeover-after", "2s", "--notify-webhook", &hook]);
    (cluster, name, r2)
}

fn assert_left_to_a_human(cluster: &Cluster, name: &str, reason: &str) {
    let runs = cluster.wait_runs("r2 leaves it to a human", |runs| {
        runs[name]["status"]["needsHuman"].is_string()
    });
    let why = runs[name]["status"]["needsHuman"]
        .as_str()
        .unwrap_or_default();
    assert!(why.contains(reason), "{why}");
    // The page goes out just after the claim that says so.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cluster
        .fake
        .requests()
        .iter()
        .any(|r| r.path == "/hooks/page")
    {
        assert!(Instant::now() < deadline, "never paged");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !cluster.fake.requests().iter().any(|r| r
            .body
            .as_ref()
            .is_some_and(|b| b.to_string().contains("gated.runbook.dev/approved"))),
        "never started again"
    );
}

#[test]
fn a_run_whose_journal_in_the_cluster_is_damaged_is_left_to_a_human() {
    let (cluster, name, _r2) = killed_at_gate(|cluster, name| {
        cluster.fake.modify(
            "v1",
            "ConfigMap",
            Some("shop"),
            &format!("{name}-journal-0000"),
            |chunk| chunk["data"]["records.jsonl"] = json!("{not a record\n"),
        );
    });
    assert_left_to_a_human(&cluster, &name, "its journal cannot be resumed");
}

/// A journal that keeps failing to read (no permission, here) is tried a few times, then left
/// to a human and paged: never retried in silence, nor started again from the top.
#[test]
fn a_run_whose_journal_keeps_failing_to_read_is_left_to_a_human() {
    let (cluster, name, _r2) = killed_at_gate(|cluster, _| {
        cluster.fake.fault(Fault::status(
            "GET",
            "/api/v1/namespaces/shop/configmaps",
            403,
            "Forbidden",
            "configmaps is forbidden: User cannot list resource configmaps",
        ));
    });
    assert_left_to_a_human(&cluster, &name, "could not be read 5 times in a row");
}

fn resolved(alertname: &str, fingerprint: &str, labels: Json) -> String {
    let mut labels = labels;
    labels["alertname"] = json!(alertname);
    json!({
        "version": "4", "status": "resolved", "receiver": "runbook", "groupKey": "{}:{}",
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am",
        "alerts": [{"status": "resolved", "labels": labels, "annotations": {},
                    "startsAt": "2026-12-04T03:00:00Z", "endsAt": "2026-12-04T03:30:00Z",
                    "generatorURL": "http://prom", "fingerprint": fingerprint}],
    })
    .to_string()
}

/// A resolve that reaches a replica other than the run's owner still cancels what has not
/// changed anything yet: the queued run, and the run waiting at its gate.
#[test]
fn a_resolve_at_another_replica_cancels_runs_that_changed_nothing() {
    let cluster = cluster();
    let r1 = busy_replica(&cluster, "30s");
    let r2 = cluster.replica("r2", &[]);
    // The queued run (behind the gated one on r1's one worker) resolves at r2: its object
    // says so at once.
    let (code, _, _) = post(
        &r2.address,
        &resolved("ApiDown", "f1", json!({"shard": "a"})),
    );
    assert_eq!(code, 202);
    cluster.wait_runs("the resolve is in the queued run's object", |runs| {
        by_runbook(runs, "api-down")["status"]["resolvedBy"].is_string()
    });
    // The gated run waits at its gate on r1; its resolve goes to r2 too: r1 cancels it at
    // its gate, and then, instead of starting the queued one, cancels that as well.
    let (code, _, _) = post(&r2.address, &resolved("GatedDown", "g1", json!({})));
    assert_eq!(code, 202);
    let runs = cluster.wait_runs("r1 cancels both", |runs| {
        by_runbook(runs, "gated")["status"]["phase"] == "Cancelled"
            && by_runbook(runs, "api-down")["status"]["phase"] == "Cancelled"
    });
    assert_as_the_crd_says(&runs);
    assert!(
        by_runbook(&runs, "api-down")["status"]["startedAt"].is_null(),
        "the queued run never started"
    );
    assert!(cluster.served().is_empty(), "neither changed anything");
    drop((r1, r2));
}
