//! The runs the server knows of (queued, running, waiting at a gate, finished or cancelled),
//! in the order they were queued, and the endpoints that list and show them; a run of an
//! earlier server is shown from its journal.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{Path as UrlPath, RawQuery, State};
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

/// `GET /api/v1/runs?limit=N&continue=TOKEN` (a token is a run id: no escaping needed).
#[derive(Default)]
pub(super) struct ListQuery {
    limit: Option<usize>,
    continue_from: Option<String>,
}

impl ListQuery {
    fn parse(query: Option<&str>) -> Self {
        let mut parsed = Self::default();
        for pair in query.unwrap_or_default().split('&') {
            match pair.split_once('=') {
                Some(("limit", value)) => parsed.limit = value.parse().ok(),
                Some(("continue", value)) => parsed.continue_from = Some(value.to_owned()),
                _ => {}
            }
        }
        parsed
    }
}

/// Runs listed per page at most (and by default).
const PAGE_LIMIT: usize = 500;

/// The runs in the order they were queued, a page at a time: `continue` in the answer, when
/// present, is the token of the next page (the id of its first run).
pub(super) async fn list_runs(
    State(server): State<Arc<Server>>,
    RawQuery(query): RawQuery,
) -> Response {
    let query = ListQuery::parse(query.as_deref());
    let limit = query.limit.unwrap_or(PAGE_LIMIT).clamp(1, PAGE_LIMIT);
    let order = lock(&server.order);
    let start = match &query.continue_from {
        Some(token) => match order.iter().position(|id| id == token) {
            Some(at) => at,
            None => {
                return error(
                    StatusCode::GONE,
                    "the continue token names a run the server no longer lists; list again from the start",
                )
            }
        },
        None => 0,
    };
    let runs = lock(&server.runs);
    let list: Vec<Json> = order
        .iter()
        .skip(start)
        .take(limit)
        .filter_map(|id| runs.get(id))
        .map(summary)
        .collect();
    let mut body = json!({ "runs": list });
    if let Some(next) = order.get(start + limit) {
        body["continue"] = json!(next);
    }
    axum::Json(body).into_response()
}

impl Server {
    /// Forgets the oldest finished runs beyond `--keep-finished`; their journals stay on disk.
    pub(super) fn evict_finished(&self) {
        let mut order = lock(&self.order);
        let mut runs = lock(&self.runs);
        let finished =
            |entry: &RunEntry| matches!(entry.state, RunState::Finished | RunState::Cancelled);
        let mut excess = runs
            .values()
            .filter(|entry| finished(entry))
            .count()
            .saturating_sub(self.keep_finished);
        if excess == 0 {
            return;
        }
        order.retain(|id| {
            if excess > 0 && runs.get(id).is_some_and(finished) {
                runs.remove(id);
                excess -= 1;
                return false;
            }
            true
        });
    }
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
                // A run of an earlier server, or one evicted from memory, from its journal.
                let path = server.state_dir.join("runs").join(format!("{id}.jsonl"));
                if !path.is_file() {
                    return error(StatusCode::NOT_FOUND, format!("no run `{id}`"));
                }
                (json!({ "id": id, "fromJournal": true }), Some(path))
            }
        }
    };
    let events = match journal {
        Some(path) => match runbook_core::journal::read(&path) {
            Ok(contents) => {
                // A crash or a full disk cut the last line short: the records before it are
                // shown, and the torn line is named.
                if let (Some(torn), Some(warning)) = (contents.torn, contents.torn_warning(&path)) {
                    object["tornLine"] = json!({
                        "line": torn.line,
                        "bytes": torn.bytes,
                        "message": warning,
                    });
                }
                contents
                    .records
                    .into_iter()
                    .filter_map(|record| serde_json::to_value(record).ok())
                    .collect()
            }
            Err(e) => {
                return error(StatusCode::INTERNAL_SERVER_ERROR, e);
            }
        },
        None => Vec::new(),
    };
    object["events"] = Json::Array(events);
    axum::Json(object).into_response()
}
