//! One request to the API server, with a timeout on every call and bounded retries: 429 and
//! 5xx (and a connection that failed or timed out) back off and try again; a 409 conflict is
//! retried after re-reading. Every answer the server refuses becomes an [`EffectError`] whose
//! message says what was asked, what the server said and its HTTP status.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt as _;
use runbook_core::effects::{EffectError, EffectResult};
use serde_json::Value as Json;

/// How hard to try.
#[derive(Clone, Debug)]
pub struct Policy {
    /// The longest one call (connect, send, read the whole answer) may take.
    pub call_timeout: Duration,
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// The first back-off; it doubles up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_secs(30),
            attempts: 5,
            backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// Which failures a call may be retried after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Reads and writes that give the same result when repeated (gets, merge patches, scale,
    /// apply, delete): 409, 429, 5xx, timeouts and lost connections are retried.
    Idempotent,
    /// Like `Idempotent`, but a 409 is final (a delete whose precondition failed).
    NoConflict,
    /// Writes that must not be repeated once the server may have acted (a JSON patch that
    /// appends): only a 429, which the server sends before it acts, is retried.
    Once,
    /// No retries at all (the caller has its own loop, as drain's evictions do for 429).
    Never,
}

/// A request to send: built again for every attempt.
#[derive(Clone, Debug)]
pub struct Call {
    pub method: Method,
    /// Path and query, e.g. `/apis/apps/v1/namespaces/shop/deployments/api?dryRun=All`.
    pub uri: String,
    pub content_type: Option<&'static str>,
    pub body: Option<Vec<u8>>,
    /// What is being done, for messages: `patch Deployment shop/api`.
    pub what: String,
    pub retry: Retry,
}

impl Call {
    pub fn new(method: Method, uri: String, what: impl Into<String>) -> Self {
        Self {
            method,
            uri,
            content_type: None,
            body: None,
            what: what.into(),
            retry: Retry::Idempotent,
        }
    }

    pub fn json(mut self, content_type: &'static str, body: &Json) -> Self {
        self.content_type = Some(content_type);
        self.body = Some(serde_json::to_vec(body).unwrap_or_default());
        self
    }

    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }
}

/// Why one attempt failed.
#[derive(Clone, Debug)]
pub struct Failure {
    /// The HTTP status; `None` when no answer came (connection, timeout).
    pub status: Option<u16>,
    /// The `metav1.Status` reason (`NotFound`, `Conflict`, `TooManyRequests`...), if any.
    pub reason: String,
    pub message: String,
    /// `details.causes[].reason`, e.g. `FieldManagerConflict`.
    pub causes: Vec<String>,
    pub retry_after: Option<Duration>,
}

impl Failure {
    /// A `metav1.Status` that kube's client turned into an error (exec's upgrade).
    pub fn from_status(status: &kube::core::Status) -> Self {
        Self {
            status: Some(status.code),
            reason: status.reason.clone(),
            message: status.message.clone(),
            causes: Vec::new(),
            retry_after: None,
        }
    }

    fn transient(&self) -> bool {
        match self.status {
            None => true,
            Some(500) if self.message.contains("failed to create typed patch object") => false,
            Some(status) => status == 429 || status >= 500,
        }
    }

    /// A 409 that re-reading can fix ("the object has been modified"), not an apply that
    /// conflicts with another field manager, which is the same every time.
    fn retryable_conflict(&self) -> bool {
        self.status == Some(409)
            && self.reason != "AlreadyExists"
            && !self.causes.iter().any(|c| c == "FieldManagerConflict")
    }

    pub fn into_error(self, what: &str, attempts: u32) -> EffectError {
        let tried = if attempts > 1 {
            format!("; gave up after {attempts} attempts")
        } else {
            String::new()
        };
        let message = match self.status {
            Some(status) => format!("{what}: {} (HTTP {status}{tried})", self.message),
            None => format!("{what}: {}{tried}", self.message),
        };
        match self.status {
            Some(404) => EffectError::NotFound(message),
            Some(409) if self.causes.iter().any(|c| c == "FieldManagerConflict") => {
                EffectError::FieldManagerConflict(message)
            }
            Some(409) => EffectError::Conflict(message),
            Some(400 | 415 | 422) => EffectError::Invalid(message),
            // A server-side apply whose values do not fit the kind's schema: the server answers
            // 500 (kubernetes/kubernetes#139255 would make it 400), but the same request never
            // succeeds, so it is not retried (issue 15, item 7).
            Some(500) if self.message.contains("failed to create typed patch object") => {
                EffectError::Invalid(message)
            }
            Some(401 | 403) => EffectError::Forbidden(message),
            Some(429) => EffectError::Blocked(message),
            None => EffectError::Unavailable(message),
            Some(status) if status >= 500 => EffectError::Unavailable(message),
            Some(_) => EffectError::Other(message),
        }
    }
}

/// The client and how hard it tries.
#[derive(Clone)]
pub struct Transport {
    client: kube::Client,
    pub policy: Policy,
}

impl Transport {
    pub fn new(client: kube::Client, policy: Policy) -> Self {
        Self { client, policy }
    }

    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    /// Sends the call, retrying as its [`Retry`] allows; the answer's body on success.
    pub async fn send(&self, call: &Call) -> EffectResult<Bytes> {
        self.send_inner(call, || async {}).await
    }

    /// Sends a JSON call and parses the answer.
    pub async fn json(&self, call: &Call) -> EffectResult<Json> {
        self.json_rereading(call, || async {}).await
    }

    /// Like [`Transport::json`], calling `reread` before retrying after a 409 conflict.
    pub async fn json_rereading<F, Fut>(&self, call: &Call, reread: F) -> EffectResult<Json>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let body = self.send_inner(call, reread).await?;
        serde_json::from_slice(&body).map_err(|e| {
            EffectError::Other(format!(
                "{}: the server's answer is not JSON: {e}",
                call.what
            ))
        })
    }

    /// Sends the call once; the raw failure (for callers with their own retry loop).
    pub async fn attempt(&self, call: &Call) -> Result<Bytes, Failure> {
        self.once(call).await
    }

    async fn send_inner<F, Fut>(&self, call: &Call, reread: F) -> EffectResult<Bytes>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let mut delay = self.policy.backoff;
        let mut attempt = 1;
        loop {
            let failure = match self.once(call).await {
                Ok(body) => return Ok(body),
                // A DELETE sent again after an attempt whose answer was lost finds the object
                // gone: the first attempt did it.
                Err(failure)
                    if attempt > 1
                        && call.method == Method::DELETE
                        && failure.status == Some(404) =>
                {
                    return Ok(Bytes::new())
                }
                Err(failure) => failure,
            };
            let retryable = match call.retry {
                Retry::Idempotent => failure.transient() || failure.retryable_conflict(),
                Retry::NoConflict => failure.transient(),
                Retry::Once => failure.status == Some(429),
                Retry::Never => false,
            };
            if !retryable {
                return Err(failure.into_error(&call.what, 1));
            }
            if attempt >= self.policy.attempts.max(1) {
                return Err(failure.into_error(&call.what, attempt));
            }
            let wait = failure
                .retry_after
                .unwrap_or(delay)
                .min(self.policy.max_backoff);
            tracing::debug!(
                what = %call.what,
                attempt,
                status = failure.status,
                message = %failure.message,
                retry_in_ms = wait.as_millis() as u64,
                "API call failed; retrying."
            );
            if failure.status == Some(409) {
                reread().await;
            }
            tokio::time::sleep(wait).await;
            delay = (delay * 2).min(self.policy.max_backoff);
            attempt += 1;
        }
    }

    async fn once(&self, call: &Call) -> Result<Bytes, Failure> {
        let mut builder = Request::builder()
            .method(call.method.clone())
            .uri(&call.uri)
            .header(http::header::ACCEPT, "application/json");
        if let Some(content_type) = call.content_type {
            builder = builder.header(http::header::CONTENT_TYPE, content_type);
        }
        let request = builder
            .body(kube::client::Body::from(
                call.body.clone().unwrap_or_default(),
            ))
            .map_err(|e| Failure {
                status: Some(400),
                reason: "BadRequest".to_owned(),
                message: format!("cannot build the request for {}: {e}", call.uri),
                causes: Vec::new(),
                retry_after: None,
            })?;
        let timeout = self.policy.call_timeout;
        let exchange = async {
            let response = self
                .client
                .send(request)
                .await
                .map_err(|e| connection_failure(&e))?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| connection_failure(&e))?
                .to_bytes();
            Ok::<_, Failure>((status, retry_after, body))
        };
        let (status, retry_after, body) = match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(Failure {
                    status: None,
                    reason: "Timeout".to_owned(),
                    message: format!(
                        "the API server did not answer within {}",
                        humantime::format_duration(timeout)
                    ),
                    causes: Vec::new(),
                    retry_after: None,
                })
            }
        };
        if status.is_success() {
            return Ok(body);
        }
        Err(status_failure(status, retry_after, &body))
    }
}

/// A non-2xx answer: the `metav1.Status` the API server sends, or whatever text a proxy sent.
fn status_failure(status: StatusCode, retry_after: Option<Duration>, body: &[u8]) -> Failure {
    let parsed: Option<Json> = serde_json::from_slice(body).ok();
    let field = |name: &str| {
        parsed
            .as_ref()
            .and_then(|s| s.get(name))
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let mut message = field("message");
    if message.is_empty() {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        message = if text.is_empty() {
            status
                .canonical_reason()
                .unwrap_or("no message")
                .to_lowercase()
        } else {
            text.chars().take(300).collect()
        };
    }
    let causes = parsed
        .as_ref()
        .and_then(|s| s.pointer("/details/causes"))
        .and_then(Json::as_array)
        .map(|causes| {
            causes
                .iter()
                .filter_map(|c| c.get("reason").and_then(Json::as_str))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    Failure {
        status: Some(status.as_u16()),
        reason: field("reason"),
        message,
        causes,
        retry_after,
    }
}

/// A request that got no HTTP answer: the innermost cause says why in one line
/// ("Connection refused (os error 111)"), not a stack of wrappers.
fn connection_failure(error: &(dyn std::error::Error + 'static)) -> Failure {
    Failure {
        status: None,
        reason: "Unavailable".to_owned(),
        message: root_cause(error),
        causes: Vec::new(),
        retry_after: None,
    }
}

/// The innermost error's message.
pub fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(source) = current.source() {
        current = source;
    }
    let message = current.to_string();
    if message.is_empty() {
        error.to_string()
    } else {
        message
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_answer_keeps_the_servers_reason_and_causes() {
        let body = br#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"Apply failed with 1 conflict","reason":"Conflict","details":{"causes":[{"reason":"FieldManagerConflict","field":".spec.replicas"}]},"code":409}"#;
        let failure = status_failure(StatusCode::CONFLICT, None, body);
        assert_eq!(failure.reason, "Conflict");
        assert!(
            !failure.retryable_conflict(),
            "a field manager conflict is permanent"
        );
        let error = failure.into_error("apply Deployment shop/api", 1);
        assert_eq!(
            error,
            EffectError::FieldManagerConflict(
                "apply Deployment shop/api: Apply failed with 1 conflict (HTTP 409)".to_owned()
            )
        );
    }

    #[test]
    fn a_proxy_answer_that_is_not_a_status_is_kept_short() {
        let failure = status_failure(StatusCode::BAD_GATEWAY, None, b"<html>bad gateway</html>");
        assert!(failure.transient());
        let error = failure.into_error("get Pod a/b", 5);
        assert_eq!(
            error,
            EffectError::Unavailable(
                "get Pod a/b: <html>bad gateway</html> (HTTP 502; gave up after 5 attempts)"
                    .to_owned()
            )
        );
    }
}
