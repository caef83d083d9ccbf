//! The server's HTTP face: the routes, bearer-token auth, health, metrics, and the intake
//! endpoint that turns a webhook payload into verdicts (the matching itself is in `intake.rs`).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use runbook_core::alert::WebhookPayload;
use serde_json::json;
use subtle::ConstantTimeEq as _;

use super::gates::approve;
use super::intake::Verdict;
use super::registry::{list_runs, show_run};
use super::{digest, metrics, Server};

/// Request bodies larger than this get 413.
pub(super) const BODY_LIMIT: usize = 1024 * 1024;

/// A label's name or value longer than this (in bytes) gets the payload 422: no real label is
/// near it, and each byte accepted is kept in the run's registry entry and journal.
pub(super) const LABEL_LIMIT: usize = 4 * 1024;

/// An annotation's value longer than this gets the payload 422 (a summary or a description,
/// never a document).
pub(super) const ANNOTATION_LIMIT: usize = 16 * 1024;

pub(super) fn router(server: Arc<Server>) -> Router {
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
        .route("/metrics", get(metrics_text))
        .route_layer(axum::middleware::from_fn_with_state(
            server.clone(),
            authenticate,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        // Authenticated by the approver's own token, not the server's (see `approvers.rs`).
        .route("/api/v1/runs/{id}/approve", post(approve))
        .merge(authenticated)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(server)
}

pub(super) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such endpoint")
}

async fn healthz(State(server): State<Arc<Server>>) -> Response {
    if server.stopping.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "stopping\n").into_response();
    }
    let alive = server.workers_alive.load(Ordering::SeqCst);
    if alive < server.workers {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{alive} of {} workers can take runs\n", server.workers),
        )
            .into_response();
    }
    (StatusCode::OK, "ok\n").into_response()
}

/// Bearer-token auth, the token compared in constant time (as SHA-256 digests, so not even
/// its length shows in the timing).
async fn authenticate(State(server): State<Arc<Server>>, request: Request, next: Next) -> Response {
    let presented = bearer(request.headers());
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

/// The bearer token of a request's `Authorization` header.
pub(super) fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
        })
        .map(str::trim)
}

fn is_intake(path: &str) -> bool {
    path == "/api/v1/alerts" || path.ends_with("/actions/dispatches")
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
    if let Some((alert, why)) = oversized(&payload) {
        count(422);
        let incident = super::intake::incident(alert);
        if server.refusals.first(&["oversized", &incident]) {
            tracing::warn!(fingerprint = %alert.fingerprint.chars().take(64).collect::<String>(), reason = %why, "payload refused (422): its repeats are logged at debug");
        } else {
            tracing::debug!(reason = %why, "payload refused again (422)");
        }
        return error(StatusCode::UNPROCESSABLE_ENTITY, why);
    }
    let verdicts = server.intake(&payload).await;
    let unavailable = verdicts.iter().find(|v| v.decision == "unavailable");
    let full = verdicts.iter().any(|v| v.decision == "queue-full");
    let body = json!({
        "alerts": payload.alerts.len(),
        "results": verdicts.iter().map(Verdict::to_json).collect::<Vec<_>>(),
    });
    if full || unavailable.is_some() {
        count(503);
        let why = match unavailable {
            Some(_) => "the cluster, which admits runs, cannot be reached",
            None => "the run queue is full",
        };
        let mut response = retry_later(&server, why);
        if let Ok(value) = serde_json::to_string(&body) {
            *response.body_mut() = axum::body::Body::from(value);
        }
        return response;
    }
    count(202);
    (StatusCode::ACCEPTED, axum::Json(body)).into_response()
}

/// The alert, and why the payload is refused for the size of its label or annotation, if it is.
fn oversized(payload: &WebhookPayload) -> Option<(&runbook_core::alert::Alert, String)> {
    for alert in &payload.alerts {
        for (name, value) in &alert.labels {
            if name.len() > LABEL_LIMIT || value.len() > LABEL_LIMIT {
                return Some((alert, format!(
                    "alert {} (fingerprint {}) has a label of {} bytes; labels are limited to {LABEL_LIMIT} bytes",
                    alert.name().chars().take(100).collect::<String>(),
                    alert.fingerprint.chars().take(64).collect::<String>(),
                    name.len().max(value.len())
                )));
            }
        }
        for (name, value) in &alert.annotations {
            if name.len() > LABEL_LIMIT || value.len() > ANNOTATION_LIMIT {
                return Some((alert, format!(
                    "alert {} (fingerprint {}) has an annotation `{}` of {} bytes; annotations are limited to {ANNOTATION_LIMIT} bytes",
                    alert.name().chars().take(100).collect::<String>(),
                    alert.fingerprint.chars().take(64).collect::<String>(),
                    name.chars().take(100).collect::<String>(),
                    value.len()
                )));
            }
        }
    }
    None
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

/// The Prometheus text format 0.0.4, unless the scraper asks for OpenMetrics (Prometheus
/// does, in its `Accept`; `promtool`, curl and `Accept: text/plain` get 0.0.4).
async fn metrics_text(State(server): State<Arc<Server>>, request: Request) -> Response {
    let openmetrics = request
        .headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.contains("application/openmetrics-text"));
    if openmetrics {
        return (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            server.metrics.encode_openmetrics(),
        )
            .into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        server.metrics.encode_text(),
    )
        .into_response()
}
