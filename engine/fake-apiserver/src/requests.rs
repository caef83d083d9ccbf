//! What a test sees and scripts: every request as received (`Recorded`), scripted faults
//! (`Fault`) and scripted exec answers (`ExecReply`).

use axum::http::{header, request::Parts};
use serde_json::{json, Value as Json};

use crate::reply::status;

/// One request as the server received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Decoded query parameters, in order (`command` may repeat).
    pub query: Vec<(String, String)>,
    pub content_type: Option<String>,
    pub authorization: Option<String>,
    /// The body, parsed when it is JSON.
    pub body: Option<Json>,
    pub text: String,
}

impl Recorded {
    pub(crate) fn new(parts: &Parts, body: &[u8]) -> Self {
        let header = |name: header::HeaderName| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        Self {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            query: form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
            content_type: header(header::CONTENT_TYPE),
            authorization: header(header::AUTHORIZATION),
            body: serde_json::from_slice(body).ok(),
            text: String::from_utf8_lossy(body).into_owned(),
        }
    }

    /// The first value of a query parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a repeated query parameter.
    pub fn params(&self, name: &str) -> Vec<&str> {
        self.query
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn is(&self, method: &str, path: &str) -> bool {
        self.method == method && self.path == path
    }

    /// `PATCH /apis/apps/v1/...?dryRun=All`, for assertion messages.
    pub fn line(&self) -> String {
        let query: Vec<String> = self.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if query.is_empty() {
            format!("{} {}", self.method, self.path)
        } else {
            format!("{} {}?{}", self.method, self.path, query.join("&"))
        }
    }
}

/// A scripted failure: the next `times` requests (all, when unset) whose method and path
/// match answer as told instead of being served.
#[derive(Clone, Debug)]
pub struct Fault {
    pub(crate) method: String,
    pub(crate) prefix: String,
    pub(crate) times: Option<usize>,
    pub(crate) answer: FaultAnswer,
}

#[derive(Clone, Debug)]
pub(crate) enum FaultAnswer {
    Status {
        code: u16,
        body: Json,
        retry_after: Option<u64>,
    },
    /// Never answer.
    Hang,
    /// Serve the request (its change is made), then never answer: an answer lost on the way.
    LoseAnswer,
}

impl Fault {
    /// `method` is `GET`, `PATCH`... or `*`; `prefix` is matched against the path.
    pub fn status(method: &str, prefix: &str, code: u16, reason: &str, message: &str) -> Self {
        Self {
            method: method.to_owned(),
            prefix: prefix.to_owned(),
            times: None,
            answer: FaultAnswer::Status {
                code,
                body: status(code, reason, message, json!({})),
                retry_after: None,
            },
        }
    }

    pub fn hang(method: &str, prefix: &str) -> Self {
        Self {
            method: method.to_owned(),
            prefix: prefix.to_owned(),
            times: None,
            answer: FaultAnswer::Hang,
        }
    }

    /// The request is served (whatever it changes, changes) but its answer never comes.
    pub fn lose_answer(method: &str, prefix: &str) -> Self {
        Self {
            answer: FaultAnswer::LoseAnswer,
            ..Self::hang(method, prefix)
        }
    }

    pub fn times(mut self, times: usize) -> Self {
        self.times = Some(times);
        self
    }

    pub fn retry_after(mut self, seconds: u64) -> Self {
        if let FaultAnswer::Status { retry_after, .. } = &mut self.answer {
            *retry_after = Some(seconds);
        }
        self
    }

    /// Adds a `details.causes` entry (`FieldManagerConflict`, `DisruptionBudget`...).
    pub fn cause(mut self, reason: &str, field: &str, message: &str) -> Self {
        if let FaultAnswer::Status { body, .. } = &mut self.answer {
            let cause = json!({"reason": reason, "field": field, "message": message});
            match body
                .pointer_mut("/details/causes")
                .and_then(Json::as_array_mut)
            {
                Some(causes) => causes.push(cause),
                None => body["details"] = json!({"causes": [cause]}),
            }
        }
        self
    }

    pub(crate) fn matches(&self, request: &Recorded) -> bool {
        (self.method == "*" || self.method == request.method)
            && request.path.starts_with(&self.prefix)
    }
}

/// What a scripted exec prints and how it exits.
#[derive(Clone, Debug, Default)]
pub struct ExecReply {
    pub stdout: String,
    pub stderr: String,
    pub exit_code: i32,
}
