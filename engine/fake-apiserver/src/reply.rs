//! How the server answers one request, and the `metav1.Status` bodies of its errors, built
//! the way the API server builds them (reason, message, details) so the client's error
//! mapping is exercised against the real shapes.

use std::time::Duration;

use axum::body::Bytes;
use serde_json::{json, Value as Json};
use tokio::sync::mpsc;

use crate::resources::ResourceType;

/// A `metav1.Status` failure, as the API server sends it.
pub fn status(code: u16, reason: &str, message: &str, details: Json) -> Json {
    let mut status = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    if details.as_object().is_some_and(|d| !d.is_empty()) {
        status["details"] = details;
    }
    status
}

/// How the server answers one request.
pub(crate) enum Reply {
    Json {
        code: u16,
        body: Json,
        retry_after: Option<u64>,
    },
    Text(String),
    Watch {
        events: mpsc::UnboundedReceiver<Bytes>,
        timeout: Duration,
    },
    /// Upgrade to WebSocket and send these binary frames, then close.
    Exec(Vec<Vec<u8>>),
    Hang,
}

pub(crate) fn ok(body: Json) -> Reply {
    json_reply(200, body)
}

pub(crate) fn json_reply(code: u16, body: Json) -> Reply {
    Reply::Json {
        code,
        body,
        retry_after: None,
    }
}

pub(crate) fn fail(code: u16, reason: &str, message: &str, details: Json) -> Reply {
    json_reply(code, status(code, reason, message, details))
}

pub(crate) fn bad_request(message: &str) -> Reply {
    fail(400, "BadRequest", message, json!({}))
}

pub(crate) fn no_such_path() -> Reply {
    fail(
        404,
        "NotFound",
        "the server could not find the requested resource",
        json!({}),
    )
}

pub(crate) fn details(resource: &ResourceType, name: &str) -> Json {
    let mut details = json!({"name": name, "kind": resource.plural});
    if !resource.group().is_empty() {
        details["group"] = json!(resource.group());
    }
    details
}

pub(crate) fn not_found(resource: &ResourceType, name: &str) -> Reply {
    let message = format!("{} \"{name}\" not found", resource.group_resource());
    fail(404, "NotFound", &message, details(resource, name))
}

pub(crate) fn conflict(resource: &ResourceType, name: &str, why: &str) -> Reply {
    let message = format!(
        "Operation cannot be fulfilled on {} \"{name}\": {why}",
        resource.group_resource()
    );
    fail(409, "Conflict", &message, details(resource, name))
}
