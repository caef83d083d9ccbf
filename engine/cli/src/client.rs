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
