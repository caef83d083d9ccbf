//! `runbook approve`: answers the gate a served run waits at, over the server's HTTP API.
//!
//! hyper's HTTP/1 client (already in the build for the server) does the request; the server
//! is reached over plain HTTP, as Alertmanager reaches it (TLS ends at the ingress or mesh).

use std::path::Path;

use anyhow::Context as _;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::json;

use crate::exit::Exit;

pub fn approve(
    server: &str,
    run_id: &str,
    yes: bool,
    step: Option<&str>,
    token_file: Option<&Path>,
    state_dir: &Path,
) -> anyhow::Result<Exit> {
    let default_token = state_dir.join("serve.token");
    let token_path = token_file.unwrap_or(&default_token);
    let token = crate::commands::read_named(token_path)
        .with_context(|| {
            format!(
                "cannot read the server's token from {} (pass --token-file)",
                token_path.display()
            )
        })?
        .trim()
        .to_owned();
    let by = format!(
        "runbook approve ({})",
        std::env::var("USER").unwrap_or_else(|_| "unknown user".to_owned())
    );
    let mut body = json!({ "approve": yes, "by": by });
    if let Some(step) = step {
        body["step"] = json!(step);
    }
    let path = format!("/api/v1/runs/{run_id}/approve");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let (status, text) = runtime.block_on(post(server, &path, &token, &body.to_string()))?;
    let reply: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    if (200..300).contains(&status) {
        println!(
            "run {run_id}: gate of step {} answered {}",
            reply["step"].as_str().unwrap_or("?"),
            reply["answer"]
                .as_str()
                .unwrap_or(if yes { "yes" } else { "no" })
        );
        return Ok(Exit::Succeeded);
    }
    let message = reply["error"].as_str().unwrap_or(text.trim());
    anyhow::bail!("{server} answered {status}: {message}")
}

/// `runbook approve RUN --cluster`: a RunbookApproval, made with the caller's own kubeconfig
/// credentials, which the replica running RUN takes in (see `serve/approvals.rs`); waits for
/// its decision. Exit 0 when the gate was answered, 2 when the approval was refused (the
/// reason is printed), 6 when the cluster cannot be reached or no replica took it in.
pub fn approve_through_cluster(
    run_id: &str,
    yes: bool,
    step: Option<&str>,
    connect: runbook_kube::ConnectOptions,
    wait: std::time::Duration,
) -> anyhow::Result<Exit> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let policy = connect.policy.clone();
        let connection = match runbook_kube::connect(&connect).await {
            Ok(connection) => connection,
            Err(error) => {
                eprintln!("error: {error}");
                return Ok(Exit::Unreachable);
            }
        };
        let transport =
            runbook_kube::transport::Transport::new(connection.client.clone(), policy);
        // Who the API server says we are: the admission policy refuses any other name.
        let me = match runbook_kube::auth::who_am_i(&transport).await {
            Ok(me) => me,
            Err(error) => {
                eprintln!("error: cannot ask the API server who you are: {error}");
                return Ok(Exit::Unreachable);
            }
        };
        let objects =
            runbook_kube::runs::RunObjects::new(transport, connection.namespace.clone());
        // The approval names its gate's step, so it can answer that gate only: by default the
        // one the run waits at now.
        let step = match step {
            Some(step) => step.to_owned(),
            None => match objects.get(run_id).await {
                Ok(Some(run)) => match run["status"]["gate"].as_str().filter(|g| !g.is_empty()) {
                    Some(gate) => gate.to_owned(),
                    None => {
                        eprintln!(
                            "error: run {run_id} is not waiting at a gate (it is {}); nothing to approve",
                            run["status"]["phase"].as_str().unwrap_or("without a phase")
                        );
                        return Ok(Exit::Invalid);
                    }
                },
                Ok(None) => {
                    eprintln!("error: there is no run {run_id} in namespace {} (see `runbook runs --cluster`)", connection.namespace);
                    return Ok(Exit::Invalid);
                }
                Err(error) => {
                    eprintln!("error: cannot read run {run_id}: {error}");
                    return Ok(Exit::Unreachable);
                }
            },
        };
        let mut salt = [0_u8; 4];
        getrandom::fill(&mut salt).map_err(|e| anyhow::anyhow!("cannot make a name: {e}"))?;
        let name = format!(
            "{run_id}-{}",
            salt.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        let spec = json!({
            "run": run_id,
            "step": step,
            "answer": if yes { "approve" } else { "deny" },
            "by": me.username,
            "groups": me.groups,
        });
        let approval = json!({
            "apiVersion": runbook_kube::runs::API_VERSION,
            "kind": "RunbookApproval",
            "metadata": {"name": name, "namespace": connection.namespace},
            "spec": spec,
        });
        if let Err(error) = objects.create_approval(&approval).await {
            eprintln!("error: {error}");
            return Ok(match error {
                runbook_core::effects::EffectError::Forbidden(_)
                | runbook_core::effects::EffectError::Invalid(_) => Exit::Invalid,
                _ => Exit::Unreachable,
            });
        }
        let deadline = std::time::Instant::now() + wait;
        loop {
            let decided = objects
                .get_approval(&name)
                .await
                .ok()
                .flatten()
                .filter(|a| a["status"]["result"].is_string());
            if let Some(decided) = decided {
                let message = decided["status"]["message"].as_str().unwrap_or_default();
                let replica = decided["status"]["decidedBy"].as_str().unwrap_or("?");
                if decided["status"]["result"] == "Accepted" {
                    println!("run {run_id}: {message}, by {} (replica {replica})", me.username);
                    return Ok(Exit::Succeeded);
                }
                eprintln!("error: run {run_id}: approval refused by replica {replica}: {message}");
                return Ok(Exit::Invalid);
            }
            if std::time::Instant::now() >= deadline {
                eprintln!(
                    "error: no replica took RunbookApproval {}/{name} in within {}; is `runbook serve --cluster-state` running there, and does run {run_id} wait at a gate?",
                    connection.namespace,
                    humantime::format_duration(wait)
                );
                return Ok(Exit::Unreachable);
            }
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
    })
}

/// POSTs `body` (JSON) to `base` + `path` with the bearer token; returns the status and body.
async fn post(base: &str, path: &str, token: &str, body: &str) -> anyhow::Result<(u16, String)> {
    let uri: hyper::Uri = base
        .parse()
        .with_context(|| format!("`{base}` is not a URL such as http://127.0.0.1:9095"))?;
    if uri.scheme_str() != Some("http") {
        anyhow::bail!("`{base}`: only http:// is supported (terminate TLS in front of the server)");
    }
    let host = uri
        .host()
        .with_context(|| format!("`{base}` names no host"))?
        .to_owned();
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    .map_err(|_| anyhow::anyhow!("cannot reach {base}: timed out after 10s"))?
    .with_context(|| format!("cannot reach {base} (is `runbook serve` running there?)"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .with_context(|| format!("cannot talk HTTP to {base}"))?;
    tokio::spawn(connection);
    let request = Request::post(path)
        .header(hyper::header::HOST, format!("{host}:{port}"))
        .header(hyper::header::AUTHORIZATION, format!("Bearer {token}"))
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .context("cannot build the request")?;
    let response = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        sender.send_request(request),
    )
    .await
    .map_err(|_| anyhow::anyhow!("{base} did not answer within 30s"))?
    .with_context(|| format!("the request to {base} failed"))?;
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .with_context(|| format!("cannot read the answer of {base}"))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}
