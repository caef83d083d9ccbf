//! `runbook serve` from the outside: real HTTP requests on loopback against the binary, running
//! the fixture runbooks in `tests/fixtures/serve/` against a simulated cluster. The requests are
//! written by hand on a `TcpStream`, so what goes over the wire is exactly what the test says.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};

const TOKEN: &str = "test-token-4f1c9a";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/serve")
}

struct Server {
    child: Child,
    address: String,
    state: tempfile::TempDir,
    token_file: PathBuf,
    logs: Arc<Mutex<Vec<Json>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `runbook serve` on a free port and waits for its "listening" log line.
fn start(extra: &[&str]) -> Server {
    start_in(&fixtures().join("runbooks"), extra)
}

/// `start`, serving the runbooks of `dir`.
fn start_in(dir: &Path, extra: &[&str]) -> Server {
    start_with(dir, &[], extra)
}

/// `start_in`, with `env` set for the server.
fn start_with(dir: &Path, env: &[(&str, &str)], extra: &[&str]) -> Server {
    let state = tempfile::tempdir().expect("tempdir");
    let token_file = state.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token file");
    launch(dir, state, env, extra, Some(token_file))
}

/// Starts `runbook serve` on the state dir `state`; with no `token_file`, the server makes its
/// own token (`STATE/serve.token`).
fn launch(
    dir: &Path,
    state: tempfile::TempDir,
    env: &[(&str, &str)],
    extra: &[&str],
    token_file: Option<PathBuf>,
) -> Server {
    let mut command = Command::new(env!("CARGO_BIN_EXE_runbook"));
    command.arg("--dir").arg(dir).args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--log-format",
        "json",
    ]);
    if let Some(token_file) = &token_file {
        command.arg("--token-file").arg(token_file);
    }
    let token_file = token_file.unwrap_or_else(|| state.path().join("serve.token"));
    let mut child = command
        .arg("--state-dir")
        .arg(state.path())
        .arg("--simulate")
        .arg(fixtures().join("world.scenario.yaml"))
        .args(extra)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn runbook serve");
    let stderr = child.stderr.take().expect("stderr");
    let logs = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = logs.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let parsed: Json = serde_json::from_str(&line)
                .unwrap_or_else(|_| json!({ "message": line, "unstructured": true }));
            if parsed["message"] == "listening" {
                let _ = tx.send(parsed["address"].as_str().unwrap_or_default().to_owned());
            }
            sink.lock().unwrap().push(parsed);
        }
    });
    let address = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(address) => address,
        Err(_) => {
            let _ = child.kill();
            panic!("the server did not start: {:?}", logs.lock().unwrap());
        }
    };
    Server {
        child,
        address,
        state,
        token_file,
        logs,
    }
}

struct Reply {
    status: u16,
    headers: String,
    body: String,
}

impl Reply {
    fn json(&self) -> Json {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    }
}

impl Server {
    fn request(&self, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> Reply {
        let mut stream = TcpStream::connect(&self.address).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            self.address,
            body.len()
        );
        if let Some(token) = token {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).unwrap();
        // The server may answer (413, 401) before reading a large body; a reset then is fine.
        let _ = stream.write_all(body);
        let mut raw = Vec::new();
        let _ = stream.read_to_end(&mut raw);
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (headers, body) = text
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
        let status = headers
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("no status line: {headers}"));
        Reply {
            status,
            headers: headers.to_owned(),
            body: body.to_owned(),
        }
    }

    fn post_alerts(&self, payload: &Json) -> Reply {
        self.request(
            "POST",
            "/api/v1/alerts",
            Some(TOKEN),
            payload.to_string().as_bytes(),
        )
    }

    fn get(&self, path: &str) -> Reply {
        self.request("GET", path, Some(TOKEN), b"")
    }

    /// Polls a run until `done` holds (20 s at most).
    fn wait_run(&self, id: &str, what: &str, done: impl Fn(&Json) -> bool) -> Json {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let run = self.get(&format!("/api/v1/runs/{id}")).json();
            if done(&run) {
                return run;
            }
            assert!(
                Instant::now() < deadline,
                "run {id} never became {what}: {run:#}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_finished(&self, id: &str) -> Json {
        self.wait_run(id, "finished", |run| {
            run["state"] == "finished" || run["state"] == "cancelled"
        })
    }

    /// One sample of `/metrics`, 0 when absent.
    fn metric(&self, sample: &str) -> f64 {
        metric_in(&self.get("/metrics").body, sample)
    }

    fn logs(&self) -> Vec<Json> {
        self.logs.lock().unwrap().clone()
    }

    /// Whether a log line satisfying `wanted` arrives within 10 s (the reader thread may lag).
    fn logged(&self, wanted: impl Fn(&Json) -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.logs().iter().any(&wanted) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn journal(&self, run: &str) -> Vec<Json> {
        let path = self.state.path().join("runs").join(format!("{run}.jsonl"));
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .lines()
            .map(|line| serde_json::from_str(line).expect("journal line"))
            .collect()
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() >= deadline {
                // What it was still doing, for the failure (it flaked once on a fresh clone).
                let logs = self
                    .logs
                    .lock()
                    .map(|logs| logs.clone())
                    .unwrap_or_default();
                let last: Vec<&Json> = logs.iter().rev().take(20).rev().collect();
                panic!("the server did not stop after SIGTERM; its last log lines: {last:#?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// One sample of a `/metrics` text, 0 when absent.
fn metric_in(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == sample).then(|| value.parse().ok())?
        })
        .unwrap_or(0.0)
}

/// An Alertmanager webhook payload (version 4) of `alerts`: (status, labels, annotations).
fn payload(group: &str, alerts: &[(&str, Json, Json)]) -> Json {
    let alerts: Vec<Json> = alerts
        .iter()
        .map(|(status, labels, annotations)| {
            let fingerprint = format!(
                "{:016x}",
                labels.to_string().bytes().fold(0xcbf29ce484222325_u64, |h, b| {
                    (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
                })
            );
            json!({
                "status": status,
                "labels": labels,
                "annotations": annotations,
                "startsAt": "2026-11-22T03:00:00Z",
                "endsAt": if *status == "resolved" { "2026-11-22T03:10:00Z" } else { "0001-01-01T00:00:00Z" },
                "generatorURL": "http://prometheus:9090/graph",
                "fingerprint": fingerprint,
            })
        })
        .collect();
    let status = if alerts.iter().any(|a| a["status"] == "firing") {
        "firing"
    } else {
        "resolved"
    };
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{{group=\"{group}\"}}"),
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "runbook",
        "groupLabels": {"group": group},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": alerts,
    })
}

fn api_down(deployment: &str) -> Json {
    json!({"alertname": "ApiDown", "severity": "critical", "namespace": "shop", "deployment": deployment})
}

fn results(reply: &Reply) -> Vec<Json> {
    reply.json()["results"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn a_firing_alert_starts_its_runbook_with_params_from_labels() {
    let server = start(&[]);
    let reply = server.post_alerts(&payload("a", &[("firing", api_down("api"), json!({}))]));
    assert_eq!(reply.status, 202, "{}", reply.body);
    let results = results(&reply);
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(results[0]["runbook"], "restart-api");
    assert_eq!(results[0]["decision"], "queued");
    let id = results[0]["run"].as_str().expect("run id").to_owned();

    let run = server.wait_finished(&id);
    assert_eq!(run["outcome"], "succeeded", "{run:#}");
    assert_eq!(
        run["params"],
        json!({"namespace": "shop", "deployment": "api"})
    );
    // The journal says what was done, to which object.
    let events = server.journal(&id);
    assert_eq!(events[0]["event"], "run-started");
    assert_eq!(events[0]["trigger"]["alert"], "ApiDown");
    assert_eq!(events[0]["trigger"]["labels"]["deployment"], "api");
    assert!(
        events.iter().any(|e| e["event"] == "step-finished"
            && e["step"] == "restart"
            && e["result"] == "succeeded"),
        "{events:#?}"
    );
    let started = events
        .iter()
        .find(|e| e["event"] == "step-started" && e["step"] == "restart")
        .expect("restart started");
    assert!(
        started["summary"].as_str().unwrap().contains("shop/api"),
        "{started}"
    );
    // The API shows the same events; the structured log carries the run id.
    let shown = server.get(&format!("/api/v1/runs/{id}")).json();
    assert_eq!(shown["events"].as_array().unwrap().len(), events.len());
    let listed = server.get("/api/v1/runs").json();
    assert_eq!(listed["runs"][0]["id"], id.as_str());
    assert!(server.logged(|l| l["message"] == "run finished" && l["run_id"] == id.as_str()));
    assert_eq!(
        server.metric("runbook_runs_finished_total{runbook=\"restart-api\",outcome=\"succeeded\"}"),
        1.0
    );
    assert_eq!(
        server.metric("runbook_alerts_matched_total{runbook=\"restart-api\"}"),
        1.0
    );
}

/// Issue 11: the journal's runbook digest (what `resume` checks) was taken by re-reading the
/// file when the run started, so a runbook edited after the server loaded it was journaled as
/// the edited text although the loaded one ran.
#[test]
fn the_journal_digest_is_of_the_runbook_that_was_loaded_not_of_the_file_edited_since() {
    use sha2::Digest as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("restart-api.yaml");
    std::fs::copy(fixtures().join("runbooks/restart-api.yaml"), &file).expect("copy");
    let loaded = std::fs::read(&file).expect("read");
    let server = start_in(dir.path(), &[]);
    let mut edited = loaded.clone();
    edited.extend_from_slice(b"# edited after the server loaded it\n");
    std::fs::write(&file, &edited).expect("edit");

    let reply = server.post_alerts(&payload("a", &[("firing", api_down("api"), json!({}))]));
    assert_eq!(reply.status, 202, "{}", reply.body);
    let id = results(&reply)[0]["run"]
        .as_str()
        .expect("run id")
        .to_owned();
    server.wait_finished(&id);
    let events = server.journal(&id);
    assert_eq!(events[0]["event"], "run-started");
    let hex = |bytes: &[u8]| -> String {
        sha2::Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    assert_eq!(
        events[0]["digest"],
        hex(&loaded).as_str(),
        "{:#}",
        events[0]
    );
    assert_ne!(events[0]["digest"], hex(&edited).as_str());
}

#[test]
fn alerts_that_match_no_trigger_start_nothing() {
    let server = start(&[]);
    let reply = server.post_alerts(&payload(
        "b",
        &[
            // Another alert name.
            ("firing", json!({"alertname": "DiskFull", "severity": "critical"}), json!({})),
            // The right name, but the matcher `severity=~"critical|page"` (anchored) fails.
            (
                "firing",
                json!({"alertname": "ApiDown", "severity": "critical-ish", "namespace": "shop", "deployment": "api"}),
                json!({}),
            ),
        ],
    ));
    assert_eq!(reply.status, 202, "{}", reply.body);
    assert_eq!(reply.json()["alerts"], 2);
    assert!(results(&reply).is_empty(), "{}", reply.body);
    assert_eq!(server.metric("runbook_alerts_unmatched_total"), 2.0);
    assert_eq!(server.get("/api/v1/runs").json()["runs"], json!([]));
    assert!(!server.state.path().join("runs").exists());
}

#[test]
fn duplicates_join_the_running_run_and_cooldown_holds_off_a_second() {
    let server = start(&[]);
    // The same alert in one payload twice, and in another group: one run.
    let first = server.post_alerts(&payload(
        "g1",
        &[
            ("firing", api_down("api"), json!({})),
            ("firing", api_down("api"), json!({})),
        ],
    ));
    assert_eq!(first.status, 202);
    let results1 = results(&first);
    assert_eq!(results1[0]["decision"], "queued");
    assert_eq!(results1[1]["decision"], "duplicate", "{results1:?}");
    let id = results1[0]["run"].as_str().unwrap().to_owned();
    assert_eq!(results1[1]["run"], id.as_str());
    let other_group = server.post_alerts(&payload("g2", &[("firing", api_down("api"), json!({}))]));
    let decision = results(&other_group)[0]["decision"].clone();
    assert!(
        decision == "duplicate" || decision == "cooldown",
        "{}",
        other_group.body
    );
    assert_eq!(results(&other_group)[0]["run"], id.as_str());
    server.wait_finished(&id);

    // Finished, but within the trigger's 10m cooldown: still no second run.
    let again = server.post_alerts(&payload("g1", &[("firing", api_down("api"), json!({}))]));
    let result = &results(&again)[0];
    assert_eq!(result["decision"], "cooldown", "{result}");
    assert_eq!(result["run"], id.as_str());
    assert!(result["reason"].as_str().unwrap().contains("cooldown"));

    // Other params are another run.
    let web = server.post_alerts(&payload("g1", &[("firing", api_down("web"), json!({}))]));
    let web_result = &results(&web)[0];
    assert_eq!(web_result["decision"], "queued");
    server.wait_finished(web_result["run"].as_str().unwrap());

    assert_eq!(
        server.metric("runbook_runs_started_total{runbook=\"restart-api\"}"),
        2.0
    );
    assert_eq!(
        server.metric(
            "runbook_alerts_deduplicated_total{runbook=\"restart-api\",reason=\"in-progress\"}"
        ) + server.metric(
            "runbook_alerts_deduplicated_total{runbook=\"restart-api\",reason=\"cooldown\"}"
        ),
        3.0
    );
    // The run lists every alert that asked for it.
    let run = server.get(&format!("/api/v1/runs/{id}")).json();
    assert_eq!(run["alerts"].as_array().unwrap().len(), 4, "{run:#}");
}

fn shard(name: &str) -> Json {
    json!({"alertname": "ShardBacklog", "shard": name})
}

#[test]
fn a_full_queue_pushes_back_and_a_resolved_alert_cancels_its_queued_run() {
    let server = start(&["--workers", "1", "--queue", "1", "--retry-after", "15s"]);
    let a = server.post_alerts(&payload("s", &[("firing", shard("a"), json!({}))]));
    let run_a = results(&a)[0]["run"].as_str().unwrap().to_owned();
    // The one worker is busy with shard a for about two seconds.
    server.wait_run(&run_a, "running", |run| run["state"] == "running");
    let b = server.post_alerts(&payload("s", &[("firing", shard("b"), json!({}))]));
    assert_eq!(b.status, 202);
    let run_b = results(&b)[0]["run"].as_str().unwrap().to_owned();
    assert_eq!(
        server.get(&format!("/api/v1/runs/{run_b}")).json()["state"],
        "queued"
    );
    assert_eq!(server.metric("runbook_queue_depth"), 1.0);

    let c = server.post_alerts(&payload("s", &[("firing", shard("c"), json!({}))]));
    assert_eq!(c.status, 503, "{}", c.body);
    assert_eq!(c.header("retry-after").as_deref(), Some("15"));
    assert_eq!(results(&c)[0]["decision"], "queue-full");

    // Shard b's alert resolves before its run starts: the run is cancelled.
    let resolved = server.post_alerts(&payload("s", &[("resolved", shard("b"), json!({}))]));
    assert_eq!(resolved.status, 202);
    let result = &results(&resolved)[0];
    assert_eq!(result["decision"], "cancelled", "{result}");
    assert_eq!(result["run"], run_b.as_str());
    let cancelled = server.get(&format!("/api/v1/runs/{run_b}")).json();
    assert_eq!(cancelled["state"], "cancelled");
    assert!(cancelled["message"].as_str().unwrap().contains("resolved"));
    assert_eq!(server.metric("runbook_queue_depth"), 0.0);

    // Shard a's alert resolves while its run goes on: recorded, not stopped.
    let resolved_a = server.post_alerts(&payload("s", &[("resolved", shard("a"), json!({}))]));
    assert_eq!(results(&resolved_a)[0]["decision"], "recorded");
    let run = server.wait_finished(&run_a);
    assert_eq!(run["outcome"], "succeeded", "{run:#}");
    let events = server.journal(&run_a);
    assert!(
        events.iter().any(|e| e["event"] == "alert-resolved"),
        "{events:#?}"
    );
    assert!(!server
        .state
        .path()
        .join("runs")
        .join(format!("{run_b}.jsonl"))
        .exists());
    assert_eq!(
        server.metric("runbook_webhook_requests_total{code=\"503\"}"),
        1.0
    );
    assert_eq!(
        server.metric("runbook_runs_cancelled_total{runbook=\"slow-shard\",reason=\"resolved\"}"),
        1.0
    );
}

#[test]
fn every_endpoint_but_healthz_needs_the_token() {
    let server = start(&[]);
    let body = payload("x", &[("firing", api_down("api"), json!({}))]).to_string();
    for (method, path) in [
        ("POST", "/api/v1/alerts"),
        ("GET", "/api/v1/runs"),
        ("GET", "/api/v1/runs/some-run"),
        ("POST", "/api/v1/runs/some-run/approve"),
        ("GET", "/metrics"),
    ] {
        let missing = server.request(method, path, None, body.as_bytes());
        assert_eq!(missing.status, 401, "{method} {path} without a token");
        assert!(missing.header("www-authenticate").is_some());
        let wrong = server.request(method, path, Some("test-token-4f1c9b"), body.as_bytes());
        assert_eq!(wrong.status, 401, "{method} {path} with a wrong token");
        let prefix = server.request(method, path, Some("test-token"), body.as_bytes());
        assert_eq!(
            prefix.status, 401,
            "{method} {path} with a prefix of the token"
        );
    }
    let health = server.request("GET", "/healthz", None, b"");
    assert_eq!(health.status, 200);
    assert_eq!(health.body, "ok\n");
    // Nothing was started by the refused requests.
    assert_eq!(server.get("/api/v1/runs").json()["runs"], json!([]));
    assert_eq!(
        server.metric("runbook_webhook_requests_total{code=\"401\"}"),
        3.0
    );
}

#[test]
fn oversized_and_malformed_bodies_are_refused_with_a_reason() {
    let server = start(&[]);
    let big = vec![b' '; 1024 * 1024 + 1];
    let reply = server.request("POST", "/api/v1/alerts", Some(TOKEN), &big);
    assert_eq!(reply.status, 413, "{}", reply.body);

    let malformed = server.request(
        "POST",
        "/api/v1/alerts",
        Some(TOKEN),
        b"{\"version\": \"4\",",
    );
    assert_eq!(malformed.status, 400);
    let reason = malformed.json()["error"].as_str().unwrap().to_owned();
    assert!(reason.contains("line 1 column"), "{reason}");

    let mut old = payload("x", &[("firing", api_down("api"), json!({}))]);
    old["version"] = json!("3");
    let reply = server.post_alerts(&old);
    assert_eq!(reply.status, 400);
    assert!(reply.json()["error"].as_str().unwrap().contains("version"));

    let wrong_shape = server.request(
        "POST",
        "/api/v1/alerts",
        Some(TOKEN),
        b"{\"version\":\"4\",\"alerts\":{}}",
    );
    assert_eq!(wrong_shape.status, 400, "{}", wrong_shape.body);

    assert_eq!(server.get("/api/v1/runs").json()["runs"], json!([]));
    assert_eq!(
        server.metric("runbook_webhook_requests_total{code=\"400\"}"),
        3.0
    );
    assert_eq!(
        server.metric("runbook_webhook_requests_total{code=\"413\"}"),
        1.0
    );
    // The server is still up and serving.
    let ok = server.post_alerts(&payload("x", &[("firing", api_down("api"), json!({}))]));
    assert_eq!(ok.status, 202);
}

const HOSTILE: [&str; 4] = ["x; rm -rf /", "$(id)", "`reboot`", "line one\nline two"];

#[test]
fn a_hostile_label_is_refused_by_its_params_pattern() {
    let server = start(&[]);
    for value in HOSTILE {
        let reply = server.post_alerts(&payload("h", &[("firing", api_down(value), json!({}))]));
        assert_eq!(reply.status, 202);
        let result = &results(&reply)[0];
        assert_eq!(result["decision"], "rejected", "{value:?}: {result}");
        assert!(
            result["reason"].as_str().unwrap().contains("deployment"),
            "{result}"
        );
        assert!(result.get("run").is_none());
    }
    assert_eq!(server.get("/api/v1/runs").json()["runs"], json!([]));
    assert_eq!(
        server.metric(
            "runbook_alerts_rejected_total{runbook=\"restart-api\",reason=\"invalid-params\"}"
        ),
        4.0
    );
    assert!(server.logged(|l| l["level"] == "WARN"
        && l["reason"]
            .as_str()
            .is_some_and(|r| r.contains("deployment"))));
}

#[test]
fn a_hostile_annotation_reaches_a_command_as_one_argv_element() {
    let server = start(&[]);
    for (n, value) in HOSTILE.iter().enumerate() {
        let reply = server.post_alerts(&payload(
            &format!("n{n}"),
            &[(
                "firing",
                json!({"alertname": "IncidentNote", "n": n.to_string()}),
                json!({"summary": value}),
            )],
        ));
        let result = &results(&reply)[0];
        assert_eq!(result["decision"], "queued", "{result}");
        let id = result["run"].as_str().unwrap().to_owned();
        let run = server.wait_finished(&id);
        // The simulated command answers only to exactly [incident-log, --summary, VALUE].
        assert_eq!(run["outcome"], "succeeded", "{value:?}: {run:#}");
        let events = server.journal(&id);
        let finished = events
            .iter()
            .find(|e| e["event"] == "step-finished" && e["step"] == "record")
            .expect("record finished");
        assert_eq!(finished["output"], format!("recorded {}", n + 1));
    }
}

/// Issue 12: the approver recorded was `$USER` or whatever `by` the caller sent. With
/// `--approvers`, each approver has a token of their own; the journal records the name the
/// token belongs to, the server's token (Alertmanager's) approves nothing, and an unknown token
/// is refused.
#[test]
fn with_an_approvers_file_each_approval_is_journaled_with_the_name_its_token_belongs_to() {
    use sha2::Digest as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let bob_token = "bob-token-0123456789abcdef";
    let bob_digest: String = sha2::Sha256::digest(bob_token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let approvers = dir.path().join("approvers");
    std::fs::write(
        &approvers,
        format!("# who may approve\nalice:alice-token-0123456789abcdef\nbob:sha256:{bob_digest}\n"),
    )
    .expect("approvers");
    let bob_file = dir.path().join("bob.token");
    std::fs::write(&bob_file, format!("{bob_token}\n")).expect("bob's token");
    let server = start(&["--approvers", approvers.to_str().unwrap()]);
    let pause = |deployment: &str| {
        let reply = server.post_alerts(&payload(
            "o",
            &[("firing", overloaded("ApiOverloaded", deployment), json!({}))],
        ));
        let id = results(&reply)[0]["run"].as_str().unwrap().to_owned();
        server.wait_run(&id, "waiting at its gate", |run| {
            run["state"] == "waiting-approval"
        });
        id
    };
    let id = pause("api");
    let approve = format!("/api/v1/runs/{id}/approve");
    let claim = br#"{"by": "alice"}"#;
    let missing = server.request("POST", &approve, None, claim);
    assert_eq!(missing.status, 401, "{}", missing.body);
    let unknown = server.request("POST", &approve, Some("mallory-token-0123456789"), claim);
    assert_eq!(unknown.status, 401, "{}", unknown.body);
    let alertmanager = server.request("POST", &approve, Some(TOKEN), claim);
    assert_eq!(alertmanager.status, 403, "{}", alertmanager.body);
    assert!(
        alertmanager.body.contains("approves nothing"),
        "{}",
        alertmanager.body
    );
    assert_eq!(
        server.get(&format!("/api/v1/runs/{id}")).json()["state"],
        "waiting-approval",
        "refused approvals leave the gate waiting"
    );
    // Alice's token, claiming to be someone else: the journal says alice.
    let alice = server.request(
        "POST",
        &approve,
        Some("alice-token-0123456789abcdef"),
        br#"{"by": "mallory"}"#,
    );
    assert_eq!(alice.status, 200, "{}", alice.body);
    server.wait_finished(&id);
    let by = |id: &str| {
        server
            .journal(id)
            .iter()
            .find(|e| e["event"] == "gate-answered")
            .map(|e| e["by"].clone())
            .expect("gate answered")
    };
    assert_eq!(by(&id), "approve: alice (approvers file)");

    // `runbook approve --token-file` with bob's own token (the file lists only its digest).
    let id = pause("web");
    let output = Command::new(env!("CARGO_BIN_EXE_runbook"))
        .args(["approve", &id, "--server"])
        .arg(format!("http://{}", server.address))
        .arg("--token-file")
        .arg(&bob_file)
        .output()
        .expect("runbook approve");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    server.wait_finished(&id);
    assert_eq!(by(&id), "approve: bob (approvers file)");
    assert_eq!(
        server.metric("runbook_approvals_total{result=\"approved\"}"),
        2.0
    );
    assert_eq!(
        server.metric("runbook_approvals_total{result=\"unauthenticated\"}"),
        2.0
    );
    assert_eq!(
        server.metric("runbook_approvals_total{result=\"forbidden\"}"),
        1.0
    );
}

/// A malformed approvers file stops the server at start, naming the line.
#[test]
fn a_malformed_approvers_file_is_refused_at_start_with_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let approvers = dir.path().join("approvers");
    std::fs::write(
        &approvers,
        "alice:alice-token-0123456789abcdef\nbob:short\n",
    )
    .expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_runbook"))
        .arg("--dir")
        .arg(fixtures().join("runbooks"))
        .args(["serve", "--listen", "127.0.0.1:0", "--simulate"])
        .arg(fixtures().join("world.scenario.yaml"))
        .arg("--state-dir")
        .arg(dir.path())
        .arg("--approvers")
        .arg(&approvers)
        .output()
        .expect("runbook serve");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:2:1: `bob`: the token is shorter than 16 characters",
            approvers.display()
        )),
        "{stderr}"
    );
}

fn overloaded(name: &str, deployment: &str) -> Json {
    json!({"alertname": name, "deployment": deployment})
}

#[test]
fn a_gate_pauses_until_approved_over_http_or_by_runbook_approve() {
    let server = start(&[]);
    let reply = server.post_alerts(&payload(
        "o",
        &[("firing", overloaded("ApiOverloaded", "api"), json!({}))],
    ));
    let id = results(&reply)[0]["run"].as_str().unwrap().to_owned();
    let waiting = server.wait_run(&id, "waiting at its gate", |run| {
        run["state"] == "waiting-approval"
    });
    assert_eq!(waiting["gate"]["step"], "scale");
    assert_eq!(
        waiting["gate"]["question"],
        "Scale api in shop to 3 replicas?"
    );
    let events = server.journal(&id);
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "gate-paused" && e["step"] == "scale"),
        "{events:#?}"
    );
    assert!(!events.iter().any(|e| e["event"] == "step-started"));
    assert_eq!(server.metric("runbook_runs_waiting_approval"), 1.0);

    // The wrong step is refused; so is approving a run that does not wait.
    let wrong = server.request(
        "POST",
        &format!("/api/v1/runs/{id}/approve"),
        Some(TOKEN),
        br#"{"step": "other"}"#,
    );
    assert_eq!(wrong.status, 409, "{}", wrong.body);

    // `runbook approve` goes through the same endpoint with the same token.
    let output = Command::new(env!("CARGO_BIN_EXE_runbook"))
        .args(["approve", &id, "--server"])
        .arg(format!("http://{}", server.address))
        .arg("--token-file")
        .arg(&server.token_file)
        .output()
        .expect("runbook approve");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("gate of step scale answered yes"));
    let run = server.wait_finished(&id);
    assert_eq!(run["outcome"], "succeeded", "{run:#}");
    let events = server.journal(&id);
    let answered = events
        .iter()
        .find(|e| e["event"] == "gate-answered")
        .expect("gate answered");
    assert_eq!(answered["answer"], "yes");
    // No --approvers: the server's token approves, and the journal says that is all it knows.
    assert!(
        answered["by"]
            .as_str()
            .unwrap()
            .starts_with("approve: the server's token (unverified name: runbook approve"),
        "{answered}"
    );
    let again = server.request(
        "POST",
        &format!("/api/v1/runs/{id}/approve"),
        Some(TOKEN),
        b"",
    );
    assert_eq!(again.status, 409);
    let unknown = server.request("POST", "/api/v1/runs/no-such-run/approve", Some(TOKEN), b"");
    assert_eq!(unknown.status, 404);

    // Refused over HTTP: the run stops at the gate, nothing is changed.
    let reply = server.post_alerts(&payload(
        "o",
        &[("firing", overloaded("ApiOverloaded", "web"), json!({}))],
    ));
    let denied = results(&reply)[0]["run"].as_str().unwrap().to_owned();
    server.wait_run(&denied, "waiting", |run| run["state"] == "waiting-approval");
    let no = server.request(
        "POST",
        &format!("/api/v1/runs/{denied}/approve"),
        Some(TOKEN),
        br#"{"approve": false, "step": "scale", "by": "alice"}"#,
    );
    assert_eq!(no.status, 200, "{}", no.body);
    let run = server.wait_finished(&denied);
    assert_eq!(run["outcome"], "stopped", "{run:#}");
    assert!(!server
        .journal(&denied)
        .iter()
        .any(|e| e["event"] == "step-started"));

    // `autoApprove: true` on the trigger: no pause.
    let reply = server.post_alerts(&payload(
        "o",
        &[(
            "firing",
            overloaded("ApiOverloadedAuto", "worker"),
            json!({}),
        )],
    ));
    let auto = results(&reply)[0]["run"].as_str().unwrap().to_owned();
    let run = server.wait_finished(&auto);
    assert_eq!(run["outcome"], "succeeded");
    let events = server.journal(&auto);
    assert!(!events.iter().any(|e| e["event"] == "gate-paused"));
    assert!(events
        .iter()
        .any(|e| e["event"] == "gate-answered" && e["by"] == "autoApprove (trigger)"));
}

#[test]
fn sigterm_lets_runs_finish_their_step_pause_them_and_stop() {
    let mut server = start(&[]);
    let slow = server.post_alerts(&payload("s", &[("firing", shard("a"), json!({}))]));
    let slow_id = results(&slow)[0]["run"].as_str().unwrap().to_owned();
    let gated = server.post_alerts(&payload(
        "o",
        &[("firing", overloaded("ApiOverloaded", "api"), json!({}))],
    ));
    let gated_id = results(&gated)[0]["run"].as_str().unwrap().to_owned();
    server.wait_run(&gated_id, "waiting", |run| {
        run["state"] == "waiting-approval"
    });
    server.wait_run(&slow_id, "in its verify step", |run| {
        run["state"] == "running"
            && run["events"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["event"] == "step-started"))
    });

    let status = server.terminate();
    assert!(status.success(), "{status:?}");

    // The slow run finished the step it was in, and started no other.
    let events = server.journal(&slow_id);
    let finished: Vec<&Json> = events
        .iter()
        .filter(|e| e["event"] == "step-finished")
        .collect();
    assert_eq!(finished.len(), 1, "{events:#?}");
    assert_eq!(finished[0]["step"], "wait-drained");
    assert_eq!(finished[0]["result"], "succeeded");
    let interrupted = events
        .iter()
        .find(|e| e["event"] == "interrupted")
        .expect("interrupted");
    assert_eq!(interrupted["rollBack"], false);
    assert_eq!(interrupted["by"], "server shutdown (SIGTERM)");
    let last = events.last().unwrap();
    assert_eq!(last["event"], "run-finished");
    assert_eq!(last["outcome"], "stopped");
    assert!(last["message"].as_str().unwrap().contains("runbook resume"));

    // The gated run was paused at its gate, unanswered.
    let events = server.journal(&gated_id);
    assert!(events.iter().any(|e| e["event"] == "interrupted"));
    assert!(!events.iter().any(|e| e["event"] == "gate-answered"));
    assert_eq!(events.last().unwrap()["outcome"], "stopped");
    assert!(server.logged(|l| l["message"] == "stopped" && l["signal"] == "SIGTERM"));

    // `runbook resume` goes on from where the slow run stopped.
    let output = Command::new(env!("CARGO_BIN_EXE_runbook"))
        .arg("--dir")
        .arg(fixtures().join("runbooks"))
        .args(["resume", &slow_id, "--yes", "--state-dir"])
        .arg(server.state.path())
        .arg("--simulate")
        .arg(fixtures().join("world.scenario.yaml"))
        .output()
        .expect("runbook resume");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let events = server.journal(&slow_id);
    assert!(events.iter().any(|e| e["event"] == "step-finished"
        && e["step"] == "scale-down"
        && e["result"] == "succeeded"));
    assert!(!events
        .iter()
        .skip_while(|e| e["event"] != "run-resumed")
        .any(|e| e["event"] == "step-started" && e["step"] == "wait-drained"));
}

/// `payload`, as Alertmanager sends a notification of receiver `receiver` for alerts that
/// started at `starts_at`.
fn notification(group: &str, receiver: &str, starts_at: &str, alerts: &[(&str, Json)]) -> Json {
    let alerts: Vec<(&str, Json, Json)> = alerts
        .iter()
        .map(|(status, labels)| (*status, labels.clone(), json!({})))
        .collect();
    let mut payload = payload(group, &alerts);
    payload["receiver"] = json!(receiver);
    for alert in payload["alerts"].as_array_mut().unwrap() {
        alert["startsAt"] = json!(starts_at);
    }
    payload
}

fn cache(alert: &str, deployment: &str) -> Json {
    json!({"alertname": alert, "deployment": deployment})
}

/// Issue 12: Alertmanager re-sent one firing alert every `repeat_interval`, and each repeat
/// started the remediation again.
#[test]
fn a_repeated_or_regrouped_notification_of_one_incident_starts_one_run() {
    let server = start(&[]);
    let first = server.post_alerts(&notification(
        "g1",
        "runbook",
        "2026-11-22T03:00:00Z",
        &[("firing", cache("CacheFlapping", "web"))],
    ));
    let result = &results(&first)[0];
    assert_eq!(result["decision"], "queued", "{result}");
    let id = result["run"].as_str().unwrap().to_owned();
    assert_eq!(server.wait_finished(&id)["outcome"], "succeeded");

    // The trigger has `cooldown: 0s`, yet the same incident repeated, in another group, to
    // another receiver, beside another alert, starts nothing.
    let repeat = server.post_alerts(&notification(
        "g2",
        "runbook-pager",
        "2026-11-22T03:00:00Z",
        &[
            ("firing", cache("DiskFull", "web")),
            ("firing", cache("CacheFlapping", "web")),
        ],
    ));
    assert_eq!(repeat.status, 202, "{}", repeat.body);
    let result = &results(&repeat)[0];
    assert_eq!(result["decision"], "duplicate", "{result}");
    assert_eq!(result["run"], id.as_str());
    assert!(
        result["reason"].as_str().unwrap().contains("incident"),
        "{result}"
    );
    assert_eq!(
        server.metric("runbook_runs_started_total{runbook=\"restart-cache\"}"),
        1.0
    );

    // The journal says which incident and which notification the run served.
    let trigger = server.journal(&id)[0]["trigger"].clone();
    assert_eq!(trigger["alert"], "CacheFlapping");
    assert_eq!(trigger["startsAt"], "2026-11-22T03:00:00Z");
    assert_eq!(trigger["receiver"], "runbook");
    assert_eq!(trigger["groupKey"], "{}:{group=\"g1\"}");
    assert!(trigger["fingerprint"]
        .as_str()
        .is_some_and(|f| !f.is_empty()));

    // It resolves, and fires again: a new incident, which runs.
    server.post_alerts(&notification(
        "g1",
        "runbook",
        "2026-11-22T03:00:00Z",
        &[("resolved", cache("CacheFlapping", "web"))],
    ));
    assert!(server.logged(|l| l["message"]
        .as_str()
        .is_some_and(|m| m.starts_with("alert resolved"))));
    let again = server.post_alerts(&notification(
        "g1",
        "runbook",
        "2026-11-22T04:00:00Z",
        &[("firing", cache("CacheFlapping", "web"))],
    ));
    let result = &results(&again)[0];
    assert_eq!(result["decision"], "queued", "{result}");
    server.wait_finished(result["run"].as_str().unwrap());
    assert_eq!(
        server.metric("runbook_runs_started_total{runbook=\"restart-cache\"}"),
        2.0
    );
}

#[test]
fn a_new_incident_after_a_resolve_runs_only_once_the_cooldown_passed() {
    let server = start(&[]);
    let begun = Instant::now();
    let first = server.post_alerts(&notification(
        "c",
        "runbook",
        "2026-11-22T03:00:00Z",
        &[("firing", cache("CacheDown", "api"))],
    ));
    let id = results(&first)[0]["run"].as_str().unwrap().to_owned();
    server.wait_finished(&id);
    server.post_alerts(&notification(
        "c",
        "runbook",
        "2026-11-22T03:00:00Z",
        &[("resolved", cache("CacheDown", "api"))],
    ));
    let next = notification(
        "c",
        "runbook",
        "2026-11-22T03:05:00Z",
        &[("firing", cache("CacheDown", "api"))],
    );
    // Within the trigger's 2 s cooldown: held off.
    let early = server.post_alerts(&next);
    let result = &results(&early)[0];
    assert!(begun.elapsed() < Duration::from_secs(2), "too slow to test");
    assert_eq!(result["decision"], "cooldown", "{result}");
    assert_eq!(result["run"], id.as_str());
    std::thread::sleep(Duration::from_millis(2200).saturating_sub(begun.elapsed()));
    // Alertmanager repeats the notification after the cooldown: now it runs.
    let late = server.post_alerts(&next);
    let result = &results(&late)[0];
    assert_eq!(result["decision"], "queued", "{result}");
    assert_ne!(result["run"], id.as_str());
    server.wait_finished(result["run"].as_str().unwrap());
}

/// A trigger that declares no cooldown gets the default one (5 minutes).
#[test]
fn a_trigger_without_a_cooldown_holds_off_a_new_incident_for_five_minutes() {
    let server = start(&[]);
    let first = server.post_alerts(&notification(
        "i",
        "runbook",
        "2026-11-22T03:00:00Z",
        &[(
            "firing",
            json!({"alertname": "ApiOverloadedAuto", "deployment": "web"}),
        )],
    ));
    let id = results(&first)[0]["run"].as_str().unwrap().to_owned();
    server.wait_finished(&id);
    let second = server.post_alerts(&notification(
        "i",
        "runbook",
        "2026-11-22T03:30:00Z",
        &[(
            "firing",
            json!({"alertname": "ApiOverloadedAuto", "deployment": "web"}),
        )],
    ));
    let result = &results(&second)[0];
    assert_eq!(result["decision"], "cooldown", "{result}");
    let reason = result["reason"].as_str().unwrap();
    assert!(reason.contains("4m") || reason.contains("5m"), "{reason}");
}

/// Issue 12: a run paused at its gate stayed `waiting-approval` after its alert resolved, and a
/// later approval deleted the pod all the same.
#[test]
fn a_resolve_while_paused_at_a_gate_cancels_the_run_and_a_later_approval_is_refused() {
    let server = start(&[]);
    let firing = payload(
        "r",
        &[("firing", overloaded("ApiOverloaded", "web"), json!({}))],
    );
    let id = results(&server.post_alerts(&firing))[0]["run"]
        .as_str()
        .unwrap()
        .to_owned();
    server.wait_run(&id, "waiting at its gate", |run| {
        run["state"] == "waiting-approval"
    });
    let mut resolved = firing.clone();
    resolved["status"] = json!("resolved");
    resolved["alerts"][0]["status"] = json!("resolved");
    let reply = server.post_alerts(&resolved);
    let result = &results(&reply)[0];
    assert_eq!(result["decision"], "cancelled", "{result}");
    assert_eq!(result["run"], id.as_str());

    let run = server.wait_finished(&id);
    assert_eq!(run["state"], "cancelled", "{run:#}");
    let message = run["message"].as_str().unwrap();
    assert!(
        message.contains("resolved") && message.contains("nothing was changed"),
        "{message}"
    );
    // Journaled: the resolve, the gate answered no by it, and no step started or intended.
    let events = server.journal(&id);
    assert!(
        events.iter().any(|e| e["event"] == "alert-resolved"),
        "{events:#?}"
    );
    let answered = events
        .iter()
        .find(|e| e["event"] == "gate-answered")
        .expect("gate answered");
    assert_eq!(answered["answer"], "no");
    assert!(
        answered["by"]
            .as_str()
            .unwrap()
            .starts_with("alert resolved"),
        "{answered}"
    );
    assert!(!events
        .iter()
        .any(|e| e["event"] == "step-started" || e["event"] == "step-intent"));
    let finished = events.last().unwrap();
    assert_eq!(finished["event"], "run-finished");
    assert_eq!(finished["outcome"], "stopped");
    assert_eq!(
        server.metric("runbook_runs_cancelled_total{runbook=\"scale-api\",reason=\"resolved\"}"),
        1.0
    );
    assert_eq!(server.metric("runbook_runs_waiting_approval"), 0.0);

    // Approving it now is refused, with the reason.
    let approve = server.request(
        "POST",
        &format!("/api/v1/runs/{id}/approve"),
        Some(TOKEN),
        b"",
    );
    assert_eq!(approve.status, 409, "{}", approve.body);
    assert!(
        approve.json()["reason"]
            .as_str()
            .unwrap()
            .contains("resolved"),
        "{}",
        approve.body
    );
}

/// Issue 12: one webhook with four alerts for four keys started one run; three workers sat
/// idle until another webhook came.
#[test]
fn n_alerts_in_one_webhook_start_n_runs_together_on_n_workers() {
    let server = start(&["--workers", "4"]);
    let names = ["api", "web", "worker", "cache"];
    let alerts: Vec<(&str, Json, Json)> = names
        .iter()
        .map(|name| ("firing", overloaded("ApiOverloaded", name), json!({})))
        .collect();
    let reply = server.post_alerts(&payload("n", &alerts));
    let ids: Vec<String> = results(&reply)
        .iter()
        .map(|r| r["run"].as_str().expect("queued").to_owned())
        .collect();
    assert_eq!(ids.len(), 4, "{}", reply.body);
    // Each run pauses at its gate, so all four are going on at once or the test times out.
    for id in &ids {
        server.wait_run(id, "waiting at its gate", |run| {
            run["state"] == "waiting-approval"
        });
    }
    assert_eq!(server.metric("runbook_runs_running"), 4.0);
    assert_eq!(server.metric("runbook_queue_depth"), 0.0);
}

/// Issue 12: after a panic in a run its worker was gone for good, the run showed `running`
/// forever and every later alert for its key was answered `duplicate`.
#[test]
fn a_panicking_run_fails_alone_and_the_next_alert_for_its_key_runs() {
    let server = start_with(
        &fixtures().join("runbooks"),
        &[("RUNBOOK_TEST_PANIC_ON_EVENT", "run-started")],
        &["--workers", "1"],
    );
    let first = server.post_alerts(&notification(
        "p",
        "runbook",
        "2026-11-22T03:00:00Z",
        &[("firing", cache("CacheFlapping", "api"))],
    ));
    let id = results(&first)[0]["run"].as_str().unwrap().to_owned();
    let run = server.wait_finished(&id);
    assert_eq!(run["outcome"], "failed", "{run:#}");
    assert!(
        run["message"].as_str().unwrap().contains("panicked"),
        "{run:#}"
    );
    let finished = server.journal(&id).last().cloned().unwrap();
    assert_eq!(finished["event"], "run-finished");
    assert_eq!(finished["outcome"], "failed");
    assert_eq!(server.metric("runbook_runs_running"), 0.0);
    assert_eq!(server.get("/healthz").status, 200);

    // The key and its lock are free, and the one worker still takes runs.
    let next = server.post_alerts(&notification(
        "p",
        "runbook",
        "2026-11-22T03:30:00Z",
        &[("firing", cache("CacheFlapping", "api"))],
    ));
    let result = &results(&next)[0];
    assert_eq!(result["decision"], "queued", "{result}");
    let run = server.wait_finished(result["run"].as_str().unwrap());
    assert_eq!(run["outcome"], "succeeded", "{run:#}");
}

/// Issue 12: a panic after the run changed something. The panic fails the step it happened in,
/// and the run undoes what it changed, as for any failure: the annotation it set is removed,
/// journaled, and the next alert for the key runs.
#[test]
fn a_panic_after_a_change_fails_the_step_and_the_run_undoes_the_change() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("mark-and-scale.yaml"),
        r#"apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata:
  name: mark-and-scale
spec:
  description: Mark a deployment, then scale it.
  params:
    - name: deployment
      pattern: "api|web|worker"
      from: alert.labels.deployment
  triggers:
    - alertName: MarkAndScale
      cooldown: 0s
  steps:
    - id: mark
      annotate: {kind: Deployment, name: "${params.deployment}", namespace: shop, set: {runbook.dev/remediating: "true"}}
    - id: scale
      needs: [mark]
      retries: 2
      scale: {name: "${params.deployment}", namespace: shop, replicas: 3}
  rollback: notify-oncall
"#,
    )
    .expect("runbook");
    let server = start_with(
        dir.path(),
        &[("RUNBOOK_TEST_PANIC_ON_EVENT", "step-intent@scale")],
        &["--workers", "1"],
    );
    let first = server.post_alerts(&notification(
        "p",
        "runbook",
        "2026-11-22T03:00:00Z",
        &[("firing", cache("MarkAndScale", "web"))],
    ));
    let id = results(&first)[0]["run"].as_str().unwrap().to_owned();
    let run = server.wait_finished(&id);
    assert_eq!(run["outcome"], "rolled-back", "{run:#}");
    let journal = server.journal(&id);
    let failed = journal
        .iter()
        .find(|event| event["event"] == "step-finished" && event["step"] == "scale")
        .unwrap_or_else(|| panic!("{journal:#?}"));
    assert_eq!(failed["errorKind"], "panicked", "{failed:#}");
    assert!(
        !journal
            .iter()
            .any(|event| event["event"] == "step-attempt-failed" && event["step"] == "scale"),
        "a panic is not retried: {journal:#?}"
    );
    let undone = journal
        .iter()
        .find(|event| event["event"] == "undo-finished" && event["succeeded"] == true)
        .unwrap_or_else(|| panic!("the mark is undone: {journal:#?}"));
    assert_eq!(undone["step"], "mark", "{undone:#}");
    assert_eq!(server.metric("runbook_runs_running"), 0.0);
    assert_eq!(server.get("/healthz").status, 200);

    let next = server.post_alerts(&notification(
        "p",
        "runbook",
        "2026-11-22T03:30:00Z",
        &[("firing", cache("MarkAndScale", "web"))],
    ));
    let result = &results(&next)[0];
    assert_eq!(result["decision"], "queued", "{result}");
    let run = server.wait_finished(result["run"].as_str().unwrap());
    assert_eq!(run["outcome"], "succeeded", "{run:#}");
}

impl Server {
    /// `GET /metrics` with `accept` (none when `None`).
    fn scrape(&self, accept: Option<&str>) -> Reply {
        let mut stream = TcpStream::connect(&self.address).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut head = format!(
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\n",
            self.address
        );
        if let Some(accept) = accept {
            head.push_str(&format!("Accept: {accept}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).unwrap();
        let mut raw = Vec::new();
        let _ = stream.read_to_end(&mut raw);
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (headers, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
        Reply {
            status: headers
                .split_whitespace()
                .nth(1)
                .and_then(|code| code.parse().ok())
                .expect("status"),
            headers: headers.to_owned(),
            body: body.to_owned(),
        }
    }
}

/// Issue 12: `promtool check metrics` exited 3 (no HELP on the counters, OpenMetrics to
/// `Accept: text/plain`, bounds such as `le="0.30000000000000007"`).
#[test]
fn metrics_are_prometheus_text_that_promtool_accepts_and_openmetrics_when_asked() {
    let server = start(&[]);
    let reply = server.post_alerts(&payload("m", &[("firing", api_down("api"), json!({}))]));
    server.wait_finished(results(&reply)[0]["run"].as_str().unwrap());

    for accept in [None, Some("text/plain")] {
        let text = server.scrape(accept);
        assert_eq!(text.status, 200);
        assert_eq!(
            text.header("content-type").as_deref(),
            Some("text/plain; version=0.0.4; charset=utf-8"),
            "{accept:?}"
        );
        assert!(!text.body.contains("# EOF"), "{}", text.body);
    }
    let body = server.scrape(None).body;
    // Every sample belongs to a family with HELP and TYPE named as the sample is.
    let mut families = std::collections::BTreeMap::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("help text");
            assert!(!help.trim().is_empty(), "{line}");
            families.insert(name.to_owned(), None);
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("type");
            assert!(families.contains_key(name), "TYPE before HELP: {line}");
            families.insert(name.to_owned(), Some(kind.to_owned()));
        } else if !line.is_empty() {
            let sample = line.split(['{', ' ']).next().unwrap();
            let family = families.keys().find(|name| {
                sample == name.as_str()
                    || ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|suffix| sample == format!("{name}{suffix}"))
            });
            assert!(family.is_some(), "sample without HELP/TYPE: {line}");
            if let Some(at) = line.find("le=\"") {
                let bound = &line[at + 4..];
                let bound = &bound[..bound.find('"').unwrap()];
                if bound != "+Inf" {
                    let value: f64 = bound.parse().unwrap();
                    assert_eq!(format!("{value:?}"), bound, "{line}");
                    assert!(bound.len() <= 6, "not a clean bound: {line}");
                }
            }
        }
    }
    assert_eq!(
        families.get("runbook_runs_started_total"),
        Some(&Some("counter".to_owned()))
    );
    // README lists every family served.
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .expect("README");
    for name in families.keys() {
        assert!(
            readme.contains(&format!("`{name}`")),
            "README does not list {name}"
        );
    }

    // `promtool check metrics`, where the prometheus package is installed (CI installs it).
    if let Ok(mut promtool) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        promtool
            .stdin
            .take()
            .unwrap()
            .write_all(body.as_bytes())
            .unwrap();
        let output = promtool.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "promtool check metrics: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    let open = server.scrape(Some(
        "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3",
    ));
    assert!(open
        .header("content-type")
        .unwrap()
        .starts_with("application/openmetrics-text"));
    assert!(open.body.trim_end().ends_with("# EOF"), "{}", open.body);
}

/// Issue 12: eight alerts with 1 MB labels added 61 MB of memory never freed and 46 MB of
/// journals.
#[test]
fn a_megabyte_label_is_refused_with_422_and_counted() {
    let server = start(&[]);
    let mut labels = api_down("api");
    labels["deployment"] = json!("a".repeat(1_000_000));
    let reply = server.post_alerts(&payload("big", &[("firing", labels, json!({}))]));
    assert_eq!(
        reply.status,
        422,
        "{}",
        &reply.body[..reply.body.len().min(300)]
    );
    let reason = reply.json()["error"].as_str().unwrap().to_owned();
    assert!(reason.contains("limited to 4096 bytes"), "{reason}");
    assert!(reason.len() < 400, "the reason does not echo the label");
    let annotation = json!({"summary": "b".repeat(100_000)});
    let reply = server.post_alerts(&payload(
        "big",
        &[("firing", json!({"alertname": "IncidentNote"}), annotation)],
    ));
    assert_eq!(reply.status, 422);
    assert_eq!(
        server.metric("runbook_webhook_requests_total{code=\"422\"}"),
        2.0
    );
    assert_eq!(server.get("/api/v1/runs").json()["runs"], json!([]));
}

/// Issue 12: a newline, an escape sequence or a NUL in a label forged lines (and colours) in
/// `--log-format text`, which also wrote colour codes into files.
#[test]
fn text_logs_escape_control_characters_and_have_no_colour_off_a_terminal() {
    let state = tempfile::tempdir().expect("tempdir");
    let token_file = state.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token file");
    let log = state.path().join("serve.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_runbook"))
        .arg("--dir")
        .arg(fixtures().join("runbooks"))
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "text"])
        .arg("--token-file")
        .arg(&token_file)
        .arg("--state-dir")
        .arg(state.path())
        .arg("--simulate")
        .arg(fixtures().join("world.scenario.yaml"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn runbook serve");
    let deadline = Instant::now() + Duration::from_secs(30);
    let address = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(at) = text.find("address=") {
            break text[at + 8..].split_whitespace().next().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "no listening line: {text}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let server = Server {
        child: Command::new("true").spawn().unwrap(),
        address,
        state: tempfile::tempdir().unwrap(),
        token_file,
        logs: Arc::new(Mutex::new(Vec::new())),
    };
    let mut labels = api_down("api");
    labels["deployment"] = json!("api\nFORGED run finished outcome=succeeded\u{1b}[31m\u{0}");
    let reply = server.post_alerts(&payload("esc", &[("firing", labels, json!({}))]));
    assert_eq!(reply.status, 202, "{}", reply.body);
    std::thread::sleep(Duration::from_millis(300));
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("alert rejected"), "{text}");
    assert!(
        !text.lines().any(|line| line.starts_with("FORGED")),
        "a label forged a line: {text}"
    );
    assert!(
        !text.contains('\u{1b}'),
        "colour or escape codes in a file: {text:?}"
    );
    assert!(!text.contains('\u{0}'), "{text:?}");
}

/// Issue 12: runs were never evicted from the registry, and `GET /api/v1/runs` grew to 16 MB.
#[test]
fn finished_runs_are_evicted_but_readable_from_their_journals_and_runs_are_listed_by_page() {
    let server = start(&["--keep-finished", "1"]);
    let mut ids = Vec::new();
    for deployment in ["api", "web", "worker"] {
        let reply = server.post_alerts(&notification(
            "e",
            "runbook",
            "2026-11-22T03:00:00Z",
            &[("firing", cache("CacheFlapping", deployment))],
        ));
        let id = results(&reply)[0]["run"].as_str().unwrap().to_owned();
        server.wait_finished(&id);
        ids.push(id);
    }
    // One more run queued: the oldest finished ones beyond one are forgotten.
    let reply = server.post_alerts(&notification(
        "e",
        "runbook",
        "2026-11-22T03:00:00Z",
        &[("firing", overloaded("ApiOverloaded", "api"))],
    ));
    let gated = results(&reply)[0]["run"].as_str().unwrap().to_owned();
    let listed = server.get("/api/v1/runs").json();
    let listed: Vec<&str> = listed["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|run| run["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [ids[2].as_str(), gated.as_str()]);
    // An evicted run is still shown, from its journal.
    let evicted = server.get(&format!("/api/v1/runs/{}", ids[0])).json();
    assert_eq!(evicted["fromJournal"], true, "{evicted:#}");
    assert_eq!(evicted["events"][0]["event"], "run-started");

    // Pages.
    let first = server.get("/api/v1/runs?limit=1").json();
    assert_eq!(first["runs"].as_array().unwrap().len(), 1);
    assert_eq!(first["runs"][0]["id"], ids[2].as_str());
    let token = first["continue"]
        .as_str()
        .expect("a continue token")
        .to_owned();
    let second = server
        .get(&format!("/api/v1/runs?limit=1&continue={token}"))
        .json();
    assert_eq!(second["runs"][0]["id"], gated.as_str());
    assert!(second.get("continue").is_none(), "{second:#}");
}

impl Server {
    /// A connection to the server, reads timing out after 10 s.
    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(&self.address).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
    }

    /// `GET path` on a connection of its own once the connection limits let one in: until
    /// then (the server may not have seen a closed connection go yet) the answer is 503. The
    /// answer, and how many connections were refused first.
    fn get_admitted(&self, path: &str) -> (Reply, usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut refused = 0;
        loop {
            let reply = self.get(path);
            if reply.status != 503 || !reply.body.contains("connections open") {
                return (reply, refused);
            }
            refused += 1;
            assert!(
                Instant::now() < deadline,
                "connections still refused: {}",
                reply.body
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The log lines warning of a refused connection.
    fn refusal_warnings(&self) -> Vec<Json> {
        self.logs()
            .into_iter()
            .filter(|l| {
                l["level"] == "WARN"
                    && l["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("refused a connection"))
            })
            .collect()
    }
}

/// One answer read off a keep-alive connection (its body by `Content-Length`).
fn read_answer(stream: &mut TcpStream) -> Reply {
    let mut raw = Vec::new();
    let mut byte = [0_u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => raw.push(byte[0]),
            other => panic!(
                "the answer's head ended early ({other:?}): {:?}",
                String::from_utf8_lossy(&raw)
            ),
        }
    }
    let headers = String::from_utf8_lossy(&raw[..raw.len() - 4]).into_owned();
    let status = headers
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {headers}"));
    let mut reply = Reply {
        status,
        headers,
        body: String::new(),
    };
    let length: usize = reply
        .header("content-length")
        .and_then(|length| length.parse().ok())
        .expect("content-length");
    let mut body = vec![0_u8; length];
    stream.read_exact(&mut body).expect("the answer's body");
    reply.body = String::from_utf8_lossy(&body).into_owned();
    reply
}

/// Reads until the server closes `stream`: what the read saw (0 bytes, or a reset), and
/// when. A read timing out (the server kept the connection) is an error.
fn wait_closed(stream: &mut TcpStream, what: &str) -> Instant {
    let mut buf = [0_u8; 1024];
    let read = stream.read(&mut buf);
    let at = Instant::now();
    match read {
        Ok(0) => {}
        Ok(n) => panic!(
            "{what}: answered {:?} instead of closed",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("{what}: still open ({e})"),
    }
    at
}

const HEALTHZ_KEEP_ALIVE: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";

/// Issue 12: a connection sending half a request head (or nothing) was kept open for ever.
#[test]
fn a_connection_that_does_not_send_its_request_head_in_time_is_closed() {
    let server = start(&["--header-timeout", "1s"]);
    let mut partial = server.connect();
    let opened = Instant::now();
    partial
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut silent = server.connect();
    // hyper answers nothing on a header timeout (no 408): it closes the connection.
    for (stream, what) in [(&mut partial, "half a head"), (&mut silent, "nothing")] {
        let closed = wait_closed(stream, what).duration_since(opened);
        assert!(
            closed >= Duration::from_millis(800) && closed < Duration::from_secs(4),
            "{what}: closed after {closed:?}"
        );
    }

    // Keep-alive goes on; an idle keep-alive connection is closed within the timeout too.
    let mut kept = server.connect();
    for _ in 0..2 {
        kept.write_all(HEALTHZ_KEEP_ALIVE).unwrap();
        let reply = read_answer(&mut kept);
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.body, "ok\n");
    }
    let answered = Instant::now();
    let closed = wait_closed(&mut kept, "idle keep-alive").duration_since(answered);
    assert!(closed < Duration::from_secs(4), "closed after {closed:?}");

    assert_eq!(server.get("/healthz").status, 200);
}

/// With a header timeout, SIGTERM stops the server though a client never finishes its request
/// head (`axum::serve` waited for it for ever).
#[test]
fn sigterm_stops_the_server_while_a_request_head_is_half_sent() {
    let mut server = start(&["--header-timeout", "1s"]);
    let mut partial = server.connect();
    partial
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut idle = server.connect();
    idle.write_all(HEALTHZ_KEEP_ALIVE).unwrap();
    assert_eq!(read_answer(&mut idle).status, 200);
    let asked = Instant::now();
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "stopped after {:?}",
        asked.elapsed()
    );
    wait_closed(&mut partial, "half a head");
    wait_closed(&mut idle, "idle keep-alive");
    assert!(server.logged(|l| l["message"] == "stopped"));
}

/// Issue 12: one client could open any number of connections.
#[test]
fn a_client_over_its_connection_limit_is_answered_503_counted_and_warned_of_once() {
    let server = start(&["--max-connections-per-client", "2"]);
    let first = server.connect();
    let mut second = server.connect();
    // The server accepts connections in the order they came: both are counted before the
    // next ones are accepted.
    for _ in 0..3 {
        let reply = server.request("GET", "/healthz", None, b"");
        assert_eq!(reply.status, 503, "{}", reply.body);
        assert_eq!(reply.header("retry-after").as_deref(), Some("30"));
        assert_eq!(reply.header("connection").as_deref(), Some("close"));
        let error = reply.json()["error"].as_str().unwrap().to_owned();
        assert!(
            error.contains("2 connections open") && error.contains("--max-connections-per-client"),
            "{error}"
        );
    }
    // Warned of once, not once a connection.
    assert!(server.logged(|l| l["message"]
        .as_str()
        .is_some_and(|m| m.starts_with("refused a connection"))));
    std::thread::sleep(Duration::from_millis(200));
    let warnings = server.refusal_warnings();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert_eq!(warnings[0]["client"], "127.0.0.1");
    assert_eq!(warnings[0]["reason"], "per-client");
    assert_eq!(warnings[0]["limit"], 2);

    // The idle connections were kept and serve.
    second.write_all(HEALTHZ_KEEP_ALIVE).unwrap();
    assert_eq!(read_answer(&mut second).status, 200);

    // One closed, a new connection is served.
    drop(first);
    let (reply, refused) = server.get_admitted("/metrics");
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        metric_in(
            &reply.body,
            "runbook_connections_refused_total{reason=\"per-client\"}"
        ),
        (3 + refused) as f64,
        "{}",
        reply.body
    );
    assert_eq!(
        metric_in(
            &reply.body,
            "runbook_connections_refused_total{reason=\"total\"}"
        ),
        0.0
    );
    // `second` and the scrape's own.
    assert_eq!(
        metric_in(&reply.body, "runbook_connections_open"),
        2.0,
        "{}",
        reply.body
    );
    assert_eq!(server.refusal_warnings().len(), 1);
}

/// Issue 12: the server took any number of connections.
#[test]
fn connections_over_the_servers_limit_are_answered_503_and_counted() {
    let server = start(&["--max-connections", "3"]);
    let idle: Vec<TcpStream> = (0..3).map(|_| server.connect()).collect();
    let reply = server.request("GET", "/healthz", None, b"");
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(reply.header("retry-after").as_deref(), Some("30"));
    assert_eq!(reply.header("connection").as_deref(), Some("close"));
    let error = reply.json()["error"].as_str().unwrap().to_owned();
    assert!(
        error.contains("3 connections open") && error.contains("(--max-connections)"),
        "{error}"
    );
    assert!(server.logged(|l| l["message"]
        .as_str()
        .is_some_and(|m| m.starts_with("refused a connection"))
        && l["reason"] == "total"
        && l["limit"] == 3));

    let mut idle = idle.into_iter();
    drop(idle.next());
    let (reply, refused) = server.get_admitted("/metrics");
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        metric_in(
            &reply.body,
            "runbook_connections_refused_total{reason=\"total\"}"
        ),
        (1 + refused) as f64,
        "{}",
        reply.body
    );
    assert_eq!(
        metric_in(
            &reply.body,
            "runbook_connections_refused_total{reason=\"per-client\"}"
        ),
        0.0
    );
    // The two still idle, and the scrape's own.
    assert_eq!(metric_in(&reply.body, "runbook_connections_open"), 3.0);
}

/// Issue 12: each refused hostile alert was logged again on every repeat (Alertmanager sends
/// a firing alert again every `repeat_interval`). A refusal is logged at warn once; its
/// repeats are counted as before and logged at debug only.
#[test]
fn a_refused_alert_is_logged_once_however_often_it_is_repeated() {
    let server = start(&[]);
    let hostile = cache("CacheDown", "web; rm -rf /");
    let huge = json!({"alertname": "CacheDown", "deployment": "x".repeat(8 * 1024)});
    for _ in 0..3 {
        let reply = server.post_alerts(&payload("h", &[("firing", hostile.clone(), json!({}))]));
        assert_eq!(results(&reply)[0]["decision"], "rejected", "{}", reply.body);
        let reply = server.post_alerts(&payload("h", &[("firing", huge.clone(), json!({}))]));
        assert_eq!(reply.status, 422, "{}", reply.body);
    }
    assert_eq!(
        server.metric(
            "runbook_alerts_rejected_total{runbook=\"restart-cache\",reason=\"invalid-params\"}"
        ),
        3.0
    );
    assert_eq!(
        server.metric("runbook_webhook_requests_total{code=\"422\"}"),
        3.0
    );
    let warned = |what: &str| {
        server
            .logs()
            .iter()
            .filter(|line| {
                line["level"] == "WARN"
                    && line["message"].as_str().is_some_and(|m| m.contains(what))
            })
            .count()
    };
    assert_eq!(
        warned("alert rejected: its labels do not bind"),
        1,
        "{:#?}",
        server.logs()
    );
    assert_eq!(warned("payload refused (422)"), 1, "{:#?}", server.logs());
    // Another incident (a new startsAt) is a refusal of its own, logged again.
    let mut again = payload("h", &[("firing", hostile, json!({}))]);
    again["alerts"][0]["startsAt"] = json!("2026-11-22T05:00:00Z");
    server.post_alerts(&again);
    assert_eq!(warned("alert rejected: its labels do not bind"), 2);
}

/// Issue 12: a slow expression made `/healthz` take 11 s while two runs evaluated it. The
/// expression now runs off the async runtime and stops at the step's timeout: both runs fail
/// their step at 2 s, and `/healthz` answers within 100 ms throughout.
#[test]
fn runaway_expressions_fail_at_their_timeout_while_healthz_answers_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("runaway.yaml"),
        r#"apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata:
  name: runaway
spec:
  description: A verify whose expression would take far longer than its step allows.
  params:
    - name: deployment
      pattern: "api|web|worker"
      from: alert.labels.deployment
  triggers:
    - alertName: Runaway
  steps:
    - id: check
      verify: 'SLOW'
      timeout: 2s
  rollback: notify-oncall
"#
        .replace(
            "SLOW",
            // Each of 20,000 items builds a 512 KiB string by doubling and scans it: seconds
            // of work within the operation and size limits.
            &format!(
                r#""{}".split("").filter(|c| "aaaaaaaaaaaaaaaaa".split("").reduce(|s, x| s + s, "y").contains("z")).len() == 0"#,
                "a".repeat(20_000)
            ),
        ),
    )
    .expect("runbook");
    let server = start_in(dir.path(), &["--workers", "2"]);
    let reply = server.post_alerts(&notification(
        "r",
        "runbook",
        "2026-11-22T03:00:00Z",
        &[
            ("firing", cache("Runaway", "api")),
            ("firing", cache("Runaway", "web")),
        ],
    ));
    let ids: Vec<String> = results(&reply)
        .iter()
        .map(|r| r["run"].as_str().expect("queued").to_owned())
        .collect();
    assert_eq!(ids.len(), 2, "{}", reply.body);
    server.wait_run(&ids[0], "running", |run| run["state"] == "running");
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut probes = 0;
    while started.elapsed() < Duration::from_millis(1500) {
        let asked = Instant::now();
        assert_eq!(server.get("/healthz").status, 200);
        slowest = slowest.max(asked.elapsed());
        probes += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(probes > 20, "{probes} probes");
    assert!(
        slowest < Duration::from_millis(100),
        "/healthz took {slowest:?} while the expressions ran"
    );
    for id in &ids {
        let run = server.wait_finished(id);
        assert_ne!(run["outcome"], "succeeded", "{run:#}");
        let finished = server
            .journal(id)
            .into_iter()
            .find(|e| e["event"] == "step-finished" && e["step"] == "check")
            .expect("check finished");
        assert_eq!(finished["error"], "timed out after 2s", "{finished:#}");
    }
}

/// Issue 12: a fact whose `expr` names itself passed `validate` and overflowed the stack when
/// an alert ran it, aborting the server. `validate` refuses it (exit 2, both positions), and
/// so does `serve` at start: it never runs, so no alert can reach it.
#[test]
fn a_fact_that_reads_itself_is_refused_by_validate_and_by_serve_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("loops.yaml");
    std::fs::write(
        &file,
        r#"apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata:
  name: loops
spec:
  description: A fact that reads itself.
  params:
    - name: deployment
      pattern: "api|web|worker"
      from: alert.labels.deployment
  triggers:
    - alertName: Loops
  facts:
    - name: a
      expr: "a == 1"
  steps:
    - id: check
      verify: a
  rollback: notify-oncall
"#,
    )
    .expect("runbook");
    let expected = format!(
        "{}:14:13: error[cycle]: fact `a` reads itself at {}:15:14",
        file.display(),
        file.display()
    );
    let validate = Command::new(env!("CARGO_BIN_EXE_runbook"))
        .arg("validate")
        .arg(&file)
        .output()
        .expect("runbook validate");
    assert_eq!(validate.status.code(), Some(2));
    let stdout = String::from_utf8_lossy(&validate.stdout);
    let stderr = String::from_utf8_lossy(&validate.stderr);
    assert!(
        stdout.contains(&expected) || stderr.contains(&expected),
        "{stdout}{stderr}"
    );
    let state = tempfile::tempdir().expect("tempdir");
    let serve = Command::new(env!("CARGO_BIN_EXE_runbook"))
        .arg("--dir")
        .arg(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0", "--simulate"])
        .arg(fixtures().join("world.scenario.yaml"))
        .arg("--state-dir")
        .arg(state.path())
        .output()
        .expect("runbook serve");
    assert_eq!(serve.status.code(), Some(2), "{serve:?}");
    let stderr = String::from_utf8_lossy(&serve.stderr);
    let stdout = String::from_utf8_lossy(&serve.stdout);
    assert!(
        stdout.contains(&expected) || stderr.contains(&expected),
        "{stdout}{stderr}"
    );
    assert!(
        stderr.contains("`runbook serve` starts only with a valid catalog"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Issue 12 (found by the Alertmanager load benchmark): a resolve cancelled the key's queued
/// run whichever incident it belonged to, so an incident that still fired never got a run (its
/// repeats were answered "already served" by the cancelled run). A run is cancelled only when
/// every incident it serves has resolved.
#[test]
fn a_resolve_does_not_cancel_a_run_another_firing_incident_still_needs() {
    let server = start(&["--workers", "1"]);
    // The one worker is busy for about two seconds, so the runs below stay queued.
    let busy = server.post_alerts(&payload("s", &[("firing", shard("s1"), json!({}))]));
    let busy = results(&busy)[0]["run"].as_str().unwrap().to_owned();
    server.wait_run(&busy, "running", |run| run["state"] == "running");
    let web = |pod: &str| json!({"alertname": "CacheFlapping", "deployment": "web", "pod": pod});
    let both = server.post_alerts(&notification(
        "w",
        "runbook",
        "2026-11-22T03:00:00Z",
        &[("firing", web("web-1")), ("firing", web("web-2"))],
    ));
    let verdicts = results(&both);
    assert_eq!(verdicts[0]["decision"], "queued", "{}", both.body);
    assert_eq!(verdicts[1]["decision"], "duplicate", "{}", both.body);
    let id = verdicts[0]["run"].as_str().unwrap().to_owned();

    // web-2 resolves while web-1 still fires: the run is kept for web-1.
    let mixed = server.post_alerts(&notification(
        "w",
        "runbook",
        "2026-11-22T03:00:00Z",
        &[("firing", web("web-1")), ("resolved", web("web-2"))],
    ));
    let resolved = results(&mixed)
        .iter()
        .find(|v| v["decision"] != "duplicate")
        .cloned()
        .expect("the resolve's verdict");
    assert_eq!(resolved["decision"], "recorded", "{}", mixed.body);
    assert_eq!(resolved["run"], id.as_str());
    // A late resolve of an earlier incident of web-1 (another startsAt) changes nothing.
    let late = server.post_alerts(&notification(
        "w",
        "runbook",
        "2026-11-22T02:30:00Z",
        &[("resolved", web("web-1"))],
    ));
    assert_eq!(results(&late)[0]["decision"], "recorded", "{}", late.body);
    let run = server.wait_finished(&id);
    assert_eq!(run["outcome"], "succeeded", "{run:#}");
    assert_eq!(
        server
            .metric("runbook_runs_cancelled_total{runbook=\"restart-cache\",reason=\"resolved\"}"),
        0.0
    );
}

/// Issue 13: a journal whose last line is torn (here, what a resume before the fix left: a
/// fragment with a whole record glued onto it) was answered 500 "not a journal record".
#[test]
fn a_journal_with_a_torn_last_line_is_shown_with_the_records_before_it() {
    let server = start(&[]);
    let id = "20260101T000000Z-scale-api-0001";
    let started = json!({
        "time": "2026-01-01T00:00:00.000Z", "run": id, "event": "run-started",
        "runbook": "scale-api", "file": "scale-api.yaml", "digest": "d", "params": {},
        "dryRun": false,
    });
    let skipped = json!({
        "time": "2026-01-01T00:00:00.001Z", "run": id, "event": "step-skipped",
        "step": "scale", "reason": "when was false",
    });
    let runs = server.state.path().join("runs");
    std::fs::create_dir_all(&runs).expect("runs");
    let journal = runs.join(format!("{id}.jsonl"));
    std::fs::write(
        &journal,
        format!("{started}\n{skipped}\n{{\"time\":\"2026{skipped}\n"),
    )
    .expect("journal");
    let reply = server.get(&format!("/api/v1/runs/{id}"));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let run = reply.json();
    assert_eq!(run["fromJournal"], true);
    assert_eq!(run["events"], json!([started, skipped]), "{run:#}");
    assert_eq!(run["tornLine"]["line"], 3, "{run:#}");
    assert_eq!(
        run["tornLine"]["message"],
        format!(
            "{}:3: the last line is torn ({} bytes cut short by a crash or a full disk); showing the 2 whole records before it",
            journal.display(),
            skipped.to_string().len() + 14
        )
    );
}

/// Issue 13: an existing `serve.token` that all could read stayed so, and a `serve.token` that
/// was a symbolic link had its target overwritten with the token.
#[cfg(unix)]
#[test]
fn the_servers_own_token_is_private_and_never_written_through_a_symbolic_link() {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |path: &Path| {
        std::fs::symlink_metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777
    };
    let state = tempfile::tempdir().expect("tempdir");
    let token = state.path().join("serve.token");
    std::fs::write(&token, "old-token\n").expect("token");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let server = launch(&fixtures().join("runbooks"), state, &[], &[], None);
    assert_eq!(mode(&token), 0o600, "tightened");
    let made = std::fs::read_to_string(&token).expect("token");
    let made = made.trim();
    assert!(
        made.len() == 64 && made.chars().all(|c| c.is_ascii_hexdigit()),
        "{made}"
    );
    assert_eq!(
        server
            .request("GET", "/api/v1/runs", Some(made), b"")
            .status,
        200
    );
    drop(server);

    let state = tempfile::tempdir().expect("tempdir");
    let victim = state.path().join("victim");
    std::fs::write(&victim, "keep me\n").expect("victim");
    let token = state.path().join("serve.token");
    std::os::unix::fs::symlink(&victim, &token).expect("symlink");
    let mut child = Command::new(env!("CARGO_BIN_EXE_runbook"))
        .arg("--dir")
        .arg(fixtures().join("runbooks"))
        .args(["serve", "--listen", "127.0.0.1:0", "--simulate"])
        .arg(fixtures().join("world.scenario.yaml"))
        .arg("--state-dir")
        .arg(state.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runbook serve");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server started with serve.token a symbolic link");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("stderr");
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{} is a symbolic link; state files are never written through one: remove it",
            token.display()
        )),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "keep me\n"
    );
}
