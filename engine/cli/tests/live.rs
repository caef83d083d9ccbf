//! `runbook run` against a live cluster, from the outside: the binary, a kubeconfig, and the
//! HTTP-level fake API server the kube crate's contract tests use. What an engineer would see:
//! exit codes, the first line naming the cluster, the writes the server received, the state
//! left behind, and the Lease lock.

use runbook_fake_apiserver as support;

use std::path::PathBuf;
use std::process::Command;

use serde_json::json;
use support::FakeApi;

const RUNBOOK: &str = r#"apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata:
  name: scale-api
spec:
  description: Scale the API to three and check it took.
  params:
    - name: replicas
      type: integer
      default: 3
  facts:
    - name: api
      kubernetes: {apiVersion: apps/v1, kind: Deployment, name: api}
  steps:
    - id: scale
      scale: {name: api, replicas: "${params.replicas}"}
    - id: check
      verify: api.spec.replicas == 3
      timeout: 2s
"#;

struct Live {
    runtime: tokio::runtime::Runtime,
    fake: FakeApi,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

struct Output {
    code: i32,
    stderr: String,
}

fn live() -> Live {
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
    std::fs::write(dir.path().join("runbooks/scale-api.yaml"), RUNBOOK).expect("write");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: dev\nclusters:\n- name: dev\n  cluster: {{server: '{}'}}\nusers:\n- name: me\n  user: {{token: secret-token}}\ncontexts:\n- name: dev\n  context: {{cluster: dev, user: me, namespace: shop}}\n",
            fake.url()
        ),
    )
    .expect("write");
    Live {
        runtime,
        fake,
        dir,
        kubeconfig,
    }
}

impl Live {
    /// `runbook ARGS` against the fake API server, not started yet.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_runbook"));
        command
            .arg("--dir")
            .arg(self.dir.path().join("runbooks"))
            .args(args)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .env_remove("KUBECONFIG")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("HOME", self.dir.path())
            .env("RUNBOOK_STATE_DIR", self.dir.path().join("state"))
            .env("RUNBOOK_LOG", "off")
            .stdin(std::process::Stdio::null());
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        let output = self.command(args).output().expect("runbook runs");
        Output {
            code: output.status.code().unwrap_or(-1),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    fn replicas(&self) -> i64 {
        self.deployment()["spec"]["replicas"]
            .as_i64()
            .expect("replicas")
    }

    fn deployment(&self) -> serde_json::Value {
        self.fake
            .object("apps/v1", "Deployment", Some("shop"), "api")
            .expect("the deployment")
    }

    fn writes(&self) -> Vec<support::Recorded> {
        self.fake
            .requests()
            .into_iter()
            .filter(|r| r.method != "GET")
            .collect()
    }
}

#[test]
fn a_run_scales_through_the_subresource_verifies_and_holds_a_lease_while_it_runs() {
    let live = live();
    let out = live.run(&["run", "scale-api", "--yes", "--lock", "lease"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.starts_with(&format!(
            "cluster: context dev ({}), Kubernetes {}, namespace shop\n",
            live.fake.url(),
            support::VERSION
        )),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!(
            " run of scale-api started on context dev ({})\n",
            live.fake.url()
        )),
        "the run says what it acts on: {}",
        out.stderr
    );
    assert_eq!(live.replicas(), 3);
    let writes: Vec<String> = live.writes().iter().map(support::Recorded::line).collect();
    assert_eq!(
        writes,
        [
            "POST /apis/coordination.k8s.io/v1/namespaces/shop/leases",
            "PATCH /apis/apps/v1/namespaces/shop/deployments/api/scale?fieldManager=runbook",
            "DELETE /apis/coordination.k8s.io/v1/namespaces/shop/leases/runbook-scale-api-c6e013609690",
        ],
        "the Lease is taken before the first write and released after the last"
    );
    let requests = live.fake.requests();
    let lease = requests
        .iter()
        .find(|r| r.method == "POST")
        .and_then(|r| r.body.clone())
        .expect("the Lease");
    let holder = lease["spec"]["holderIdentity"].as_str().expect("holder");
    let parts: Vec<&str> = holder.split('/').collect();
    assert!(
        parts.len() == 3 && parts[2].contains("-scale-api-"),
        "the holder is host/pid/run-id: {holder}"
    );
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 30);
    let scale = requests
        .iter()
        .find(|r| r.method == "PATCH")
        .expect("the scale");
    assert_eq!(
        scale.content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert_eq!(scale.body, Some(json!({"spec": {"replicas": 3}})));
    assert_eq!(scale.param("dryRun"), None, "a real run is not a dry-run");
    assert!(
        requests
            .iter()
            .all(|r| r.authorization.as_deref() == Some("Bearer secret-token")),
        "every request carries the kubeconfig's token"
    );
    assert!(
        live.fake
            .object(
                "coordination.k8s.io/v1",
                "Lease",
                Some("shop"),
                "runbook-scale-api-c6e013609690"
            )
            .is_none(),
        "no Lease is left behind"
    );
    drop(live.runtime);
}

#[test]
fn a_dry_run_sends_every_write_with_dry_run_all_and_changes_nothing() {
    let live = live();
    let before = live.deployment();
    let out = live.run(&["run", "scale-api", "--dry-run", "--yes"]);
    // The verify cannot turn true when nothing changed: a dry-run says so and goes on.
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("`api.spec.replicas == 3` is false now"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("(dry-run: every change is sent with dryRun=All)"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("server accepted (dry-run): Deployment shop/api: replicas 2 -> 3"),
        "{}",
        out.stderr
    );
    let writes = live.writes();
    assert_eq!(writes.len(), 1, "one write, no lock: {writes:?}");
    assert_eq!(writes[0].param("dryRun"), Some("All"));
    assert_eq!(
        live.deployment(),
        before,
        "the object, resourceVersion included, is unchanged"
    );
}

#[test]
fn a_lease_held_by_another_run_refuses_this_one_naming_the_holder() {
    let live = live();
    let now = humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string();
    live.fake.insert(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "runbook-scale-api-c6e013609690", "namespace": "shop"},
        "spec": {"holderIdentity": "ops-laptop/4242/run-1", "leaseDurationSeconds": 30,
                 "acquireTime": now, "renewTime": now, "leaseTransitions": 0}
    }));
    let out = live.run(&["run", "scale-api", "--yes", "--lock", "lease"]);
    assert_eq!(out.code, 4, "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "error: runbook `scale-api` with these params is already running: Lease shop/runbook-scale-api-c6e013609690 is held by ops-laptop/4242/run-1"
        ),
        "{}",
        out.stderr
    );
    assert_eq!(live.replicas(), 2, "nothing changed");
    assert!(
        live.writes().is_empty(),
        "no write at all: {:?}",
        live.writes()
    );
}

#[test]
fn a_failed_verify_scales_back_to_what_it_was() {
    let live = live();
    // The verify waits for a replica count the step never set, so it times out.
    let text = RUNBOOK.replace("api.spec.replicas == 3", "api.spec.replicas == 4");
    std::fs::write(live.dir.path().join("runbooks/scale-api.yaml"), text).expect("write");
    let out = live.run(&["run", "scale-api", "--yes"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let scales: Vec<serde_json::Value> = live
        .writes()
        .iter()
        .filter(|r| r.path.ends_with("/scale"))
        .filter_map(|r| r.body.clone())
        .collect();
    assert_eq!(
        scales,
        [
            json!({"spec": {"replicas": 3}}),
            json!({"spec": {"replicas": 2}})
        ],
        "scaled, then undone to the replicas read before"
    );
    assert_eq!(live.replicas(), 2);
}

const TRIGGERED: &str = r#"apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata:
  name: api-down
spec:
  description: Scale the API up when it is down.
  params:
    - name: namespace
      pattern: "[a-z0-9-]+"
      from: alert.labels.namespace
  triggers:
    - alertName: ApiDown
  steps:
    - id: scale
      scale: {name: api, namespace: "${params.namespace}", replicas: 3}
"#;

/// A `runbook serve` process, killed and reaped however the test ends.
struct Served(std::process::Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `runbook serve` against the fake; returns it with the address it listens on.
fn serve_live(live: &Live) -> (Served, String) {
    serve_live_with(live, TRIGGERED, &[])
}

/// `serve_live`, serving `runbook` as `api-down.yaml`, with `extra` flags.
fn serve_live_with(live: &Live, runbook: &str, extra: &[&str]) -> (Served, String) {
    use std::io::BufRead as _;
    std::fs::write(live.dir.path().join("runbooks/api-down.yaml"), runbook).expect("write");
    std::fs::write(live.dir.path().join("token"), "serve-token\n").expect("write");
    let mut child = Command::new(env!("CARGO_BIN_EXE_runbook"))
        .arg("--dir")
        .arg(live.dir.path().join("runbooks"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--lock",
            "lease",
        ])
        .arg("--token-file")
        .arg(live.dir.path().join("token"))
        .arg("--state-dir")
        .arg(live.dir.path().join("state"))
        .arg("--kubeconfig")
        .arg(&live.kubeconfig)
        .args(extra)
        .env_remove("KUBECONFIG")
        .env("HOME", live.dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn runbook serve");
    let stderr = child.stderr.take().expect("stderr");
    let child = Served(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let parsed: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            let _ = tx.send(parsed);
        }
    });
    let mut connected = false;
    loop {
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("serve logs");
        if line["message"] == "connected to the cluster" {
            connected = true;
        }
        if line["message"] == "listening" {
            assert!(connected, "the cluster is checked before listening");
            return (child, line["address"].as_str().expect("address").to_owned());
        }
    }
}

fn post(address: &str, path: &str, body: &str) -> String {
    request(address, "POST", path, "serve-token", body)
}

/// One HTTP request with `token`; the whole answer, head and body.
fn request(address: &str, method: &str, path: &str, token: &str, body: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

/// The JSON body of an answer.
fn body_of(answer: &str) -> serde_json::Value {
    answer
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str(body).ok())
        .unwrap_or_default()
}

const GATED: &str = r#"apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata:
  name: api-down
spec:
  description: Scale the API up, once someone allowed to approves.
  params:
    - name: namespace
      pattern: "[a-z0-9-]+"
      from: alert.labels.namespace
  triggers:
    - alertName: ApiDown
  steps:
    - id: scale
      confirm: "Scale api to 3?"
      scale: {name: api, namespace: "${params.namespace}", replicas: 3}
"#;

/// Issue 12: with `--kubernetes-approvers` the approver's own token is reviewed by the API
/// server (TokenReview) and RBAC decides (SubjectAccessReview of `approve` on
/// `runbooks.runbook.dev` named by the runbook, in the server's namespace); the journal
/// records the user the API server named, whatever the body claims.
#[test]
fn serve_checks_approvers_with_a_token_review_and_rbac() {
    let live = live();
    live.fake.add_token("alice-token", "alice", &["sre"]);
    live.fake.add_token("bob-token", "bob", &[]);
    live.fake.grant(support::Grant {
        subject: "User:alice".to_owned(),
        verb: "approve".to_owned(),
        group: "runbook.dev".to_owned(),
        resource: "runbooks".to_owned(),
        namespace: Some("shop".to_owned()),
        names: vec!["api-down".to_owned()],
        binding: "runbook-approvers".to_owned(),
    });
    let (served, address) = serve_live_with(&live, GATED, &["--kubernetes-approvers"]);
    let alert = json!({
        "version": "4", "status": "firing", "receiver": "runbook", "groupKey": "{}:{}",
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am",
        "alerts": [{"status": "firing", "labels": {"alertname": "ApiDown", "namespace": "shop"},
                    "annotations": {}, "startsAt": "2026-11-22T06:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "http://prom", "fingerprint": "f1"}]
    });
    let answer = post(&address, "/api/v1/alerts", &alert.to_string());
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    let id = body_of(&answer)["results"][0]["run"]
        .as_str()
        .expect("a run")
        .to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let run = body_of(&request(
            &address,
            "GET",
            &format!("/api/v1/runs/{id}"),
            "serve-token",
            "",
        ));
        if run["state"] == "waiting-approval" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never paused: {run:#}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let approve = format!("/api/v1/runs/{id}/approve");
    let claim = r#"{"approve": true, "by": "alice"}"#;
    let unknown = request(&address, "POST", &approve, "nobody's-token", claim);
    assert!(unknown.starts_with("HTTP/1.1 401"), "{unknown}");
    let bob = request(&address, "POST", &approve, "bob-token", claim);
    assert!(bob.starts_with("HTTP/1.1 403"), "{bob}");
    assert!(
        body_of(&bob)["error"]
            .as_str()
            .is_some_and(|e| e
                .contains("bob may not approve runbooks.runbook.dev `api-down` in namespace shop")),
        "{bob}"
    );
    let server_token = request(&address, "POST", &approve, "serve-token", claim);
    assert!(server_token.starts_with("HTTP/1.1 403"), "{server_token}");
    assert_eq!(live.replicas(), 2, "nothing approved yet");
    let alice = request(
        &address,
        "POST",
        &approve,
        "alice-token",
        r#"{"by": "mallory"}"#,
    );
    assert!(alice.starts_with("HTTP/1.1 200"), "{alice}");
    assert_eq!(body_of(&alice)["by"], "alice (kubernetes)");

    let released = |requests: &[support::Recorded]| {
        requests
            .iter()
            .any(|r| r.method == "DELETE" && r.path.contains("/leases/runbook-api-down-"))
    };
    while !released(&live.fake.requests()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the run did not finish"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    drop(served);
    assert_eq!(live.replicas(), 3, "alice's approval let the run scale");
    let journal = std::fs::read_to_string(live.dir.path().join(format!("state/runs/{id}.jsonl")))
        .expect("journal");
    let answered: serde_json::Value = journal
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).expect("a record"))
        .find(|record| record["event"] == "gate-answered")
        .expect("gate-answered");
    assert_eq!(answered["by"], "approve: alice (kubernetes)");
    let reviews: Vec<serde_json::Value> = live
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.path == "/apis/authorization.k8s.io/v1/subjectaccessreviews")
        .filter_map(|r| r.body)
        .collect();
    assert_eq!(
        reviews.len(),
        2,
        "bob's and alice's (the server's token and the unknown one stop earlier)"
    );
    assert_eq!(
        reviews[1]["spec"]["resourceAttributes"],
        json!({"verb": "approve", "group": "runbook.dev", "resource": "runbooks", "namespace": "shop", "name": "api-down"})
    );
}

/// `--kubernetes-approvers` needs a cluster to ask.
#[test]
fn kubernetes_approvers_without_a_cluster_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("scenario.yaml"),
        "apiVersion: runbook.dev/v1alpha1\nkind: Scenario\nmetadata: {name: empty}\nspec: {}\n",
    )
    .expect("write");
    std::fs::create_dir_all(dir.path().join("runbooks")).expect("mkdir");
    std::fs::write(dir.path().join("runbooks/api-down.yaml"), GATED).expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_runbook"))
        .arg("--dir")
        .arg(dir.path().join("runbooks"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--kubernetes-approvers",
            "--simulate",
        ])
        .arg(dir.path().join("scenario.yaml"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .output()
        .expect("runbook serve");
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--kubernetes-approvers needs a cluster"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn serve_runs_an_alerts_runbook_against_the_live_cluster_under_a_lease() {
    let live = live();
    let (served, address) = serve_live(&live);
    let alert = json!({
        "version": "4", "status": "firing", "receiver": "runbook", "groupKey": "{}:{}",
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am",
        "alerts": [{"status": "firing", "labels": {"alertname": "ApiDown", "namespace": "shop"},
                    "annotations": {}, "startsAt": "2026-11-22T06:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "http://prom", "fingerprint": "f1"}]
    });
    let answer = post(&address, "/api/v1/alerts", &alert.to_string());
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let released = |requests: &[support::Recorded]| {
        requests
            .iter()
            .any(|r| r.method == "DELETE" && r.path.contains("/leases/runbook-api-down-"))
    };
    while !released(&live.fake.requests()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the run did not finish: {:?}",
            live.fake
                .requests()
                .iter()
                .map(support::Recorded::line)
                .collect::<Vec<_>>()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    drop(served);
    assert_eq!(
        live.replicas(),
        3,
        "the alert's runbook scaled the live Deployment"
    );
    let writes: Vec<String> = live
        .writes()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(writes.len(), 3, "{writes:?}");
    assert_eq!(
        writes[0],
        "POST /apis/coordination.k8s.io/v1/namespaces/shop/leases"
    );
    assert_eq!(
        writes[1],
        "PATCH /apis/apps/v1/namespaces/shop/deployments/api/scale"
    );
    assert!(writes[2].starts_with(
        "DELETE /apis/coordination.k8s.io/v1/namespaces/shop/leases/runbook-api-down-"
    ));
}

#[test]
fn http_facts_and_notifications_reach_the_network_outside_the_simulator() {
    let live = live();
    // The fake API server doubles as the HTTP service: its /version is the fact, and it has
    // no /hooks/runbook, so the webhook's 404 fails the notify step.
    let text = format!(
        r#"apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata:
  name: report-version
spec:
  description: Say which Kubernetes version answers.
  facts:
    - name: server
      http: {{url: "{url}/version", query: {{probe: "a b"}}}}
  preconditions:
    - check: server.gitVersion == "{version}"
  steps:
    - id: tell
      notify: "the server runs ${{server.gitVersion}}"
"#,
        url = live.fake.url(),
        version = support::VERSION
    );
    std::fs::write(live.dir.path().join("runbooks/report-version.yaml"), text).expect("write");
    let hook = format!("{}/hooks/runbook", live.fake.url());
    let out = live.run(&["run", "report-version", "--yes", "--notify-webhook", &hook]);
    assert!(
        out.stderr
            .contains(&format!("[notify] the server runs {}", support::VERSION)),
        "printed on the terminal: {}",
        out.stderr
    );
    assert_eq!(
        out.code, 1,
        "the webhook's 404 fails the step: {}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains(&format!("--notify-webhook {hook} answered HTTP 404")),
        "{}",
        out.stderr
    );
    let requests = live.fake.requests();
    let fact = requests
        .iter()
        .find(|r| r.path == "/version" && r.param("probe").is_some())
        .expect("the http fact's GET");
    assert_eq!(
        fact.param("probe"),
        Some("a b"),
        "query encoded and decoded"
    );
    let posted = requests
        .iter()
        .find(|r| r.method == "POST" && r.path == "/hooks/runbook")
        .expect("the webhook POST");
    assert_eq!(posted.content_type.as_deref(), Some("application/json"));
    assert_eq!(
        posted.body,
        Some(json!({"kind": "notify", "message": format!("the server runs {}", support::VERSION)}))
    );
}

#[test]
fn a_run_is_resumed_only_against_the_cluster_it_acted_on() {
    let live = live();
    let text = RUNBOOK.replace(
        "    - id: check\n      verify: api.spec.replicas == 3\n      timeout: 2s\n",
        "    - id: more\n      confirm: Scale to four?\n      scale: {name: api, replicas: 4}\n",
    );
    std::fs::write(live.dir.path().join("runbooks/scale-api.yaml"), text).expect("write");
    // A second context on the same kubeconfig: another cluster, as far as anyone can tell.
    let config = std::fs::read_to_string(&live.kubeconfig).expect("read");
    std::fs::write(
        &live.kubeconfig,
        format!("{config}- name: prod\n  context: {{cluster: dev, user: me, namespace: shop}}\n"),
    )
    .expect("write");
    // No terminal to ask: the run stops before the gate, resumable.
    let out = live.run(&["run", "scale-api"]);
    assert_eq!(out.code, 4, "{}", out.stderr);
    assert_eq!(live.replicas(), 3);
    let runs = std::fs::read_dir(live.dir.path().join("state/runs"))
        .expect("runs")
        .map(|e| e.expect("entry").path())
        .collect::<Vec<_>>();
    assert_eq!(runs.len(), 1);
    let journal = std::fs::read_to_string(&runs[0]).expect("journal");
    assert!(
        journal.contains(&format!(r#""cluster":"context dev ({})""#, live.fake.url())),
        "the journal says what the run acted on: {journal}"
    );
    let run_id = runs[0]
        .file_stem()
        .and_then(|s| s.to_str())
        .expect("run id")
        .to_owned();

    let out = live.run(&["resume", &run_id, "--yes", "--context", "prod"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "error: run `{run_id}` acted on context dev ({url}); this resume would act on context prod ({url})",
            url = live.fake.url()
        )),
        "{}",
        out.stderr
    );
    assert_eq!(live.replicas(), 3, "nothing done on the other cluster");

    let out = live.run(&["resume", &run_id, "--yes"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        live.replicas(),
        4,
        "resumed where it stopped, on its own cluster"
    );
}

#[test]
fn a_lease_the_cluster_will_not_let_us_take_is_an_error_not_a_run_already_running() {
    let live = live();
    live.fake.fault(support::Fault::status(
        "POST",
        "/apis/coordination.k8s.io/v1/namespaces/shop/leases",
        403,
        "Forbidden",
        "leases.coordination.k8s.io is forbidden: User \"oncall\" cannot create resource \"leases\" in API group \"coordination.k8s.io\" in the namespace \"shop\"",
    ));
    let out = live.run(&["run", "scale-api", "--yes", "--lock", "lease"]);
    assert_eq!(out.code, 6, "{}", out.stderr);
    assert!(
        out.stderr.contains("error: cannot take the run lock: Lease shop/runbook-scale-api-c6e013609690: forbidden: create Lease shop/runbook-scale-api-c6e013609690: leases.coordination.k8s.io is forbidden: User \"oncall\" cannot create resource \"leases\""),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("already running"), "{}", out.stderr);
    assert_eq!(live.replicas(), 2, "nothing ran");
}

/// Whether `pid` has ended: no such process, or a zombie nobody reaped yet.
fn ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the command name in parentheses: `1234 (sleep) S ...`.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

/// Issue 13: SIGTERM killed `runbook run` (exit 143) with its step's process orphaned and
/// nothing journaled. Now it is a Ctrl-C with no terminal: the running step is cancelled and
/// its processes killed, including what they started (the shell's background `sleep`), the
/// journal says `interrupted`, the exit is 4, and `runbook resume` goes on from there.
#[test]
fn sigterm_kills_the_running_process_group_journals_interrupted_and_resumes() {
    let live = live();
    let work = live.dir.path().join("work");
    std::fs::create_dir_all(&work).expect("mkdir");
    let work = work.display();
    // The first time, `slow` starts `sleep 30` in the background, writes its own pid and the
    // sleep's, and waits; once `proceed` exists (the resume), it succeeds at once.
    let runbook = format!(
        r#"apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata:
  name: slow-script
spec:
  steps:
    - id: first
      run: [sh, -c, "echo once >> {work}/first"]
      irreversible: a test step
    - id: slow
      run: [sh, -c, "test -e {work}/proceed && exit 0; sleep 30 & echo $$ $! > {work}/pids.tmp && mv {work}/pids.tmp {work}/pids; wait"]
      irreversible: a test step
    - id: after
      run: [sh, -c, "echo done > {work}/after"]
      irreversible: a test step
"#
    );
    std::fs::write(live.dir.path().join("runbooks/slow-script.yaml"), runbook).expect("write");
    let child = live
        .command(&["run", "slow-script"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("runbook starts");
    let pids_file = live.dir.path().join("work/pids");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !pids_file.is_file() {
        assert!(
            std::time::Instant::now() < deadline,
            "the step never started its sleep"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let pids: Vec<u32> = std::fs::read_to_string(&pids_file)
        .expect("pids")
        .split_whitespace()
        .map(|pid| pid.parse().expect("a pid"))
        .collect();
    assert_eq!(pids.len(), 2, "the shell and its sleep");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let output = child.wait_with_output().expect("runbook ends");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    for pid in &pids {
        assert!(ended(*pid), "process {pid} outlived the run: {stderr}");
    }

    let journal = std::fs::read_dir(live.dir.path().join("state/runs"))
        .expect("runs")
        .flatten()
        .next()
        .expect("a journal")
        .path();
    let events: Vec<serde_json::Value> = std::fs::read_to_string(&journal)
        .expect("journal")
        .lines()
        .map(|line| serde_json::from_str(line).expect("JSON"))
        .collect();
    let interrupted = events
        .iter()
        .find(|event| event["event"] == "interrupted")
        .unwrap_or_else(|| panic!("no `interrupted` in {events:?}"));
    assert_eq!(interrupted["rollBack"], false, "{interrupted}");
    assert_eq!(interrupted["by"], "SIGTERM (nobody to ask: nothing undone)");
    let finished = events.last().expect("events");
    assert_eq!(finished["event"], "run-finished", "{finished}");
    assert_eq!(finished["exitCode"], 4, "{finished}");

    std::fs::write(live.dir.path().join("work/proceed"), "").expect("write");
    let run_id = journal
        .file_stem()
        .expect("id")
        .to_string_lossy()
        .into_owned();
    let out = live.run(&["resume", &run_id, "--rerun", "slow"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        live.dir.path().join("work/after").is_file(),
        "the resumed run went on to the next step: {}",
        out.stderr
    );
    assert_eq!(
        std::fs::read_to_string(live.dir.path().join("work/first")).expect("first"),
        "once\n",
        "the step done before the signal is not run again"
    );
}

/// Issue 14: a run killed between its change's intent and its result is resumed by looking at
/// the object: as the change leaves it, the step is done (not sent again); as before, it runs
/// again. No flag and no terminal needed.
#[test]
fn resume_looks_at_the_object_of_a_change_whose_result_was_never_journaled() {
    for (fault, sent, why) in [
        (
            support::Fault::lose_answer("PATCH", "/apis/apps/v1/namespaces/shop/deployments/api"),
            1,
            "as the change leaves it, so it is done",
        ),
        (
            support::Fault::hang("PATCH", "/apis/apps/v1/namespaces/shop/deployments/api"),
            2,
            "as it was before, so it runs again",
        ),
    ] {
        let live = live();
        let runbook = r#"apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata:
  name: mark-api
spec:
  steps:
    - id: mark
      annotate: {kind: Deployment, name: api, set: {marked.runbook.dev/by: test}}
"#;
        std::fs::write(live.dir.path().join("runbooks/mark-api.yaml"), runbook).expect("write");
        live.fake.fault(fault);
        let mut child = live
            .command(&["run", "mark-api", "--request-timeout", "60s"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("runbook starts");
        let changes = || {
            live.writes()
                .iter()
                .filter(|r| r.method == "PATCH" && r.path.ends_with("/deployments/api"))
                .count()
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while changes() == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the change was never sent"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        child.kill().expect("kill -9");
        let _ = child.wait();
        live.fake.clear_faults();
        let journal = std::fs::read_dir(live.dir.path().join("state/runs"))
            .expect("runs")
            .flatten()
            .find(|e| e.path().extension().is_some_and(|x| x == "jsonl"))
            .expect("a journal")
            .path();
        let run_id = journal
            .file_stem()
            .expect("id")
            .to_string_lossy()
            .into_owned();
        let out = live.run(&["resume", &run_id, "--lock", "file"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert!(out.stderr.contains(why), "{}", out.stderr);
        assert_eq!(changes(), sent, "{}", out.stderr);
        assert_eq!(
            live.deployment()["metadata"]["annotations"]["marked.runbook.dev/by"],
            "test"
        );
    }
}
