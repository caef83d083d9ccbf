//! The runs the server knows of (queued, running, waiting at a gate, finished or cancelled),
//! in the order they were queued, and the endpoints that list and show them; a run of an
//! earlier server is shown from its journal.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use runbook_core::exec::Interrupt;
use runbook_core::journal::Outcome;
use serde_json::{json, Value as Json};

use super::gates::Gate;
use super::http::error;
use super::{lock, Server};

/// A run the server knows of.
pub(super) struct RunEntry {
    pub(super) id: String,
    pub(super) runbook: String,
    pub(super) key: String,
    /// Bound params, secret ones redacted.
    pub(super) params: Json,
    pub(super) state: RunState,
    /// Alerts that asked for this run (the first started it), with their status.
    pub(super) alerts: Vec<Json>,
    pub(super) queued_at: SystemTime,
    pub(super) started_at: Option<SystemTime>,
    pub(super) finished_at: Option<SystemTime>,
    pub(super) outcome: Option<Outcome>,
    pub(super) message: Option<String>,
    pub(super) journal: Option<PathBuf>,
    pub(super) gate: Option<Gate>,
    pub(super) interrupt: Option<Arc<Interrupt>>,
    /// Why the run was cancelled at its gate (its alert resolved before anything changed).
    pub(super) cancelled: Option<String>,
}

impl RunEntry {
    /// A run just admitted, asked for by its first alert.
    pub(super) fn queued(id: &str, runbook: &str, key: String, params: Json, alert: Json) -> Self {
        Self {
            id: id.to_owned(),
            runbook: runbook.to_owned(),
            key,
            params,
            state: RunState::Queued,
            alerts: vec![alert],
            queued_at: SystemTime::now(),
            started_at: None,
            finished_at: None,
            outcome: None,
            message: None,
            journal: None,
            gate: None,
            interrupt: None,
            cancelled: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RunState {
    Queued,
    Running,
    WaitingApproval,
    Finished,
    /// Never started, or stopped at its gate before it changed anything: its alert resolved
    /// first, the server shut down, or a run with the same runbook and params was going on
    /// outside the server.
    Cancelled,
}

impl RunState {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::WaitingApproval => "waiting-approval",
            Self::Finished => "finished",
            Self::Cancelled => "cancelled",
        }
    }
}

fn summary(entry: &RunEntry) -> Json {
    let time = |t: Option<SystemTime>| t.map(runbook_core::journal::timestamp);
    let mut object = json!({
        "id": entry.id,
        "runbook": entry.runbook,
        "key": entry.key,
        "params": entry.params,
        "state": entry.state.as_str(),
        "alerts": entry.alerts,
        "queuedAt": runbook_core::journal::timestamp(entry.queued_at),
        "startedAt": time(entry.started_at),
        "finishedAt": time(entry.finished_at),
        "outcome": entry.outcome,
        "message": entry.message,
    });
    if let Some(gate) = &entry.gate {
        object["gate"] = json!({
            "step": gate.step,
            "question": gate.question,
            "detail": gate.detail,
        });
    }
    object
}

pub(super) async fn list_runs(State(server): State<Arc<Server>>) -> Response {
    let order = lock(&server.order).clone();
    let runs = lock(&server.runs);
    let list: Vec<Json> = order
        .iter()
        .filter_map(|id| runs.get(id))
        .map(summary)
        .collect();
    axum::Json(json!({ "runs": list })).into_response()
}

/// Run ids are `STAMP-RUNBOOK-SALT`: letters, digits, `-`, `_` and `.` (never a path).
fn valid_run_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 200
        && !id.contains("..")
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

pub(super) async fn show_run(
    State(server): State<Arc<Server>>,
    UrlPath(id): UrlPath<String>,
) -> Response {
    if !valid_run_id(&id) {
        return error(StatusCode::BAD_REQUEST, "not a run id");
    }
    let (mut object, journal) = {
        let runs = lock(&server.runs);
        match runs.get(&id) {
            Some(entry) => (summary(entry), entry.journal.clone()),
            None => {
                // A run of an earlier server, from its journal.
                let path = server.state_dir.join("runs").join(format!("{id}.jsonl"));
                if !path.is_file() {
                    return error(StatusCode::NOT_FOUND, format!("no run `{id}`"));
                }
                (json!({ "id": id }), Some(path))
            }
        }
    };
    let events = match journal {
        Some(path) => match runbook_core::journal::read(&path) {
            Ok(records) => records
                .into_iter()
                .filter_map(|record| serde_json::to_value(record).ok())
                .collect(),
            Err(e) => {
                return error(StatusCode::INTERNAL_SERVER_ERROR, e);
            }
        },
        None => Vec::new(),
    };
    object["events"] = Json::Array(events);
    axum::Json(object).into_response()
}
