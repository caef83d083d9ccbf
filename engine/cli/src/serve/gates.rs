//! Gates of unattended runs: approved at once when the trigger says `autoApprove: true`,
//! otherwise the run pauses until `runbook approve` (or the HTTP call) answers, or the server
//! drains it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use runbook_core::effects::{Answer, Prompter};
use runbook_core::exec::Interrupt;
use serde_json::json;

use super::approvers::Refusal;
use super::http::{bearer, error};
use super::registry::RunState;
use super::{lock, metrics, Server};

/// A gate waiting for `runbook approve`.
pub(super) struct Gate {
    pub(super) step: String,
    pub(super) question: String,
    pub(super) detail: String,
    pub(super) reply: tokio::sync::oneshot::Sender<(Answer, String)>,
}

/// Gates of unattended runs: approved at once when the trigger says `autoApprove: true`,
/// otherwise paused until `runbook approve` (or the HTTP call) answers.
pub(super) struct ServerPrompter {
    pub(super) run: String,
    pub(super) server: Arc<Server>,
    pub(super) auto_approve: bool,
    pub(super) interrupt: Arc<Interrupt>,
    pub(super) answered_by: Mutex<HashMap<String, String>>,
}

#[async_trait::async_trait]
impl Prompter for ServerPrompter {
    async fn confirm(&self, step: &str, question: &str, detail: &str) -> Answer {
        if self.auto_approve {
            lock(&self.answered_by).insert(step.to_owned(), "autoApprove (trigger)".to_owned());
            return Answer::Yes;
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        {
            let mut runs = lock(&self.server.runs);
            let Some(entry) = runs.get_mut(&self.run) else {
                return Answer::NoTerminal;
            };
            entry.state = RunState::WaitingApproval;
            entry.gate = Some(Gate {
                step: step.to_owned(),
                question: question.to_owned(),
                detail: detail.to_owned(),
                reply,
            });
        }
        self.server.metrics.runs_waiting_approval.inc();
        tracing::info!(run_id = %self.run, step, question, "paused at a gate: waiting for `runbook approve {}`", self.run);
        let result = tokio::select! {
            answer = answer => answer.ok(),
            () = self.interrupt.drained() => None,
        };
        self.server.metrics.runs_waiting_approval.dec();
        if let Some(entry) = lock(&self.server.runs).get_mut(&self.run) {
            entry.gate = None;
            if entry.state == RunState::WaitingApproval {
                entry.state = RunState::Running;
            }
        }
        match result {
            Some((answer, by)) => {
                lock(&self.answered_by).insert(step.to_owned(), by);
                answer
            }
            None => Answer::Paused,
        }
    }

    fn pauses(&self, _step: &str) -> bool {
        !self.auto_approve
    }

    fn answered_by(&self, step: &str) -> String {
        lock(&self.answered_by)
            .get(step)
            .cloned()
            .unwrap_or_else(|| "approve".to_owned())
    }
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ApproveBody {
    /// `false` refuses the gate (the run stops, nothing undone).
    #[serde(default)]
    pub(super) approve: Option<bool>,
    /// The gate's step; when given, it must be the one the run waits at.
    #[serde(default)]
    pub(super) step: Option<String>,
    /// Who the caller says approves: journaled only when the server's own token approves
    /// (no `--approvers`), and then marked unverified.
    #[serde(default)]
    pub(super) by: Option<String>,
}

pub(super) async fn approve(
    State(server): State<Arc<Server>>,
    UrlPath(id): UrlPath<String>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    // Who asks is checked first: a caller without a valid token learns nothing, not even
    // whether their body was well-formed.
    let parsed: Result<ApproveBody, String> = if body.iter().all(u8::is_ascii_whitespace) {
        Ok(ApproveBody::default())
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            format!("the body must be {{\"approve\": true|false, \"step\": ID, \"by\": NAME}}: {e}")
        })
    };
    let claimed: String = parsed
        .as_ref()
        .ok()
        .and_then(|request| request.by.as_deref())
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(100)
        .collect();
    let runbook = lock(&server.runs)
        .get(&id)
        .map(|entry| entry.runbook.clone());
    let verified = server
        .approvers
        .verify(
            &server.token_digest,
            bearer(&headers),
            runbook.as_deref().unwrap_or(""),
            &claimed,
        )
        .await;
    let by = match verified {
        Ok(by) => by,
        Err(refusal) => {
            server
                .metrics
                .approvals
                .get_or_create(&metrics::ResultLabel {
                    result: refusal.label().to_owned(),
                })
                .inc();
            tracing::warn!(run_id = %id, refused = refusal.label(), reason = ?refusal, "approval refused");
            return match refusal {
                Refusal::Unauthenticated(why) => {
                    let mut response = error(StatusCode::UNAUTHORIZED, why);
                    response.headers_mut().insert(
                        axum::http::header::WWW_AUTHENTICATE,
                        axum::http::HeaderValue::from_static("Bearer realm=\"runbook\""),
                    );
                    response
                }
                Refusal::Forbidden(why) => error(StatusCode::FORBIDDEN, why),
                Refusal::Unavailable(why) => error(StatusCode::SERVICE_UNAVAILABLE, why),
            };
        }
    };
    let request = match parsed {
        Ok(request) => request,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let yes = request.approve.unwrap_or(true);
    let mut runs = lock(&server.runs);
    let Some(entry) = runs.get_mut(&id) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no run `{id}` on this server"),
        );
    };
    if let Some(reason) = &entry.cancelled {
        return (
            StatusCode::CONFLICT,
            axum::Json(json!({
                "error": format!("run `{id}` was cancelled; there is nothing to approve"),
                "reason": reason,
                "state": entry.state.as_str(),
            })),
        )
            .into_response();
    }
    let Some(gate) = entry.gate.take() else {
        return error(
            StatusCode::CONFLICT,
            format!(
                "run `{id}` is not waiting at a gate (it is {})",
                entry.state.as_str()
            ),
        );
    };
    if let Some(step) = &request.step {
        if step != &gate.step {
            let message = format!(
                "run `{id}` waits at the gate of step `{}`, not `{step}`",
                gate.step
            );
            entry.gate = Some(gate);
            return error(StatusCode::CONFLICT, message);
        }
    }
    let step = gate.step.clone();
    let answer = if yes { Answer::Yes } else { Answer::No };
    if gate.reply.send((answer, format!("approve: {by}"))).is_err() {
        return error(
            StatusCode::CONFLICT,
            format!("run `{id}` stopped waiting at the gate of step `{step}`"),
        );
    }
    entry.state = RunState::Running;
    server
        .metrics
        .approvals
        .get_or_create(&metrics::ResultLabel {
            result: if yes { "approved" } else { "denied" }.to_owned(),
        })
        .inc();
    tracing::info!(run_id = %id, step = %step, approved = yes, by = %by, "gate answered");
    axum::Json(json!({
        "run": id,
        "step": step,
        "answer": if yes { "yes" } else { "no" },
        "by": by,
    }))
    .into_response()
}
