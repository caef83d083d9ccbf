//! Prometheus metrics of `runbook serve`: the Prometheus text format 0.0.4 by default (what
//! `promtool check metrics` and a scrape without `Accept` read), OpenMetrics when asked.
//!
//! The `prometheus-client` crate (the Prometheus project's own Rust client) does the encoding
//! and keeps each counter a lock-free atomic, so counting adds nothing measurable to intake.
//! It writes only OpenMetrics, whose counter families are named without `_total`; the 0.0.4
//! text is derived from it by naming each counter family as its samples are named.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunbookLabel {
    pub runbook: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub runbook: String,
    pub reason: String,
}

/// Why a connection was refused: `total` (`--max-connections`) or `per-client`
/// (`--max-connections-per-client`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub runbook: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

type HistogramFamily = Family<RunbookLabel, Histogram, fn() -> Histogram>;

/// 0.1 s to 2 hours, written as decimals so each bound prints as written (`le="0.3"`, never
/// the `0.30000000000000004` of a computed series).
const DURATION_BUCKETS: [f64; 12] = [
    0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 60.0, 180.0, 600.0, 1800.0, 3600.0, 7200.0,
];

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    /// Webhook requests by HTTP status: every payload is accounted for here.
    pub payloads: Family<CodeLabel, Counter>,
    /// Alerts in accepted payloads, by status (firing, resolved).
    pub alerts_received: Family<StatusLabel, Counter>,
    /// Firing alerts that matched a trigger, by runbook.
    pub alerts_matched: Family<RunbookLabel, Counter>,
    /// Firing alerts that matched no trigger.
    pub alerts_unmatched: Counter,
    /// Matched alerts that joined a run already queued or running, or fell in its cooldown.
    pub alerts_deduplicated: Family<ReasonLabels, Counter>,
    /// Matched alerts refused: a label failed its param's validation, the runbook's run cap,
    /// a full queue, or a run already going on outside the server.
    pub alerts_rejected: Family<ReasonLabels, Counter>,
    /// Resolved alerts that cancelled a queued run or were recorded against a running one.
    pub alerts_resolved: Family<ReasonLabels, Counter>,
    pub runs_started: Family<RunbookLabel, Counter>,
    /// Finished runs by outcome (succeeded, rolled-back, failed, ...).
    pub runs_finished: Family<OutcomeLabels, Counter>,
    /// Runs cancelled before they changed anything: queued ones (a resolved alert, a shutdown)
    /// and ones waiting at a gate when their alert resolved.
    pub runs_cancelled: Family<ReasonLabels, Counter>,
    /// Answers to gates (approved, denied) and approvals refused (unauthenticated,
    /// forbidden, unavailable).
    pub approvals: Family<ResultLabel, Counter>,
    pub queue_depth: Gauge,
    pub runs_running: Gauge,
    pub runs_waiting_approval: Gauge,
    pub run_duration: HistogramFamily,
    /// Connections accepted and being served (idle keep-alive ones too).
    pub connections_open: Gauge,
    /// Connections answered 503 and closed for a connection limit, by which limit.
    pub connections_refused: Family<RefusalLabel, Counter>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("runbook");
        let payloads = Family::<CodeLabel, Counter>::default();
        registry.register(
            "webhook_requests",
            "Webhook requests received, by HTTP status",
            payloads.clone(),
        );
        let alerts_received = Family::<StatusLabel, Counter>::default();
        registry.register(
            "alerts_received",
            "Alerts in accepted webhook payloads, by status",
            alerts_received.clone(),
        );
        let alerts_matched = Family::<RunbookLabel, Counter>::default();
        registry.register(
            "alerts_matched",
            "Firing alerts that matched a runbook's trigger",
            alerts_matched.clone(),
        );
        let alerts_unmatched = Counter::default();
        registry.register(
            "alerts_unmatched",
            "Firing alerts that matched no trigger",
            alerts_unmatched.clone(),
        );
        let alerts_deduplicated = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "alerts_deduplicated",
            "Matched alerts that joined a queued or running run, or fell within its cooldown",
            alerts_deduplicated.clone(),
        );
        let alerts_rejected = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "alerts_rejected",
            "Matched alerts that started no run: invalid label, run cap, full queue, or a run outside the server",
            alerts_rejected.clone(),
        );
        let alerts_resolved = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "alerts_resolved",
            "Resolved alerts, by what they did to the run they belong to",
            alerts_resolved.clone(),
        );
        let runs_started = Family::<RunbookLabel, Counter>::default();
        registry.register("runs_started", "Runs started", runs_started.clone());
        let runs_finished = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "runs_finished",
            "Runs finished, by outcome",
            runs_finished.clone(),
        );
        let runs_cancelled = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "runs_cancelled",
            "Runs cancelled before they changed anything (queued, or waiting at a gate), by reason",
            runs_cancelled.clone(),
        );
        let approvals = Family::<ResultLabel, Counter>::default();
        registry.register(
            "approvals",
            "Gate answers (approved, denied) and approvals refused (unauthenticated, forbidden, unavailable)",
            approvals.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth",
            "Runs waiting for a worker",
            queue_depth.clone(),
        );
        let runs_running = Gauge::default();
        registry.register("runs_running", "Runs in progress", runs_running.clone());
        let runs_waiting_approval = Gauge::default();
        registry.register(
            "runs_waiting_approval",
            "Runs paused at a confirmation gate, waiting for `runbook approve`",
            runs_waiting_approval.clone(),
        );
        let run_duration: HistogramFamily = Family::new_with_constructor(duration_histogram);
        registry.register(
            "run_duration_seconds",
            "How long runs took, from start to outcome",
            run_duration.clone(),
        );
        let connections_open = Gauge::default();
        registry.register(
            "connections_open",
            "HTTP connections open (idle keep-alive ones included)",
            connections_open.clone(),
        );
        let connections_refused = Family::<RefusalLabel, Counter>::default();
        registry.register(
            "connections_refused",
            "HTTP connections refused with 503 for a connection limit, by limit (total, per-client)",
            connections_refused.clone(),
        );
        // Both reasons are served from the start (at 0), so a rate over them has a beginning.
        for reason in ["total", "per-client"] {
            let _ = connections_refused.get_or_create(&RefusalLabel {
                reason: reason.to_owned(),
            });
        }
        Self {
            registry,
            payloads,
            alerts_received,
            alerts_matched,
            alerts_unmatched,
            alerts_deduplicated,
            alerts_rejected,
            alerts_resolved,
            runs_started,
            runs_finished,
            runs_cancelled,
            approvals,
            queue_depth,
            runs_running,
            runs_waiting_approval,
            run_duration,
            connections_open,
            connections_refused,
        }
    }

    /// OpenMetrics 1.0 text.
    pub fn encode_openmetrics(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// The Prometheus text format 0.0.4.
    pub fn encode_text(&self) -> String {
        to_text_format(&self.encode_openmetrics())
    }
}

/// OpenMetrics text as the Prometheus text format 0.0.4: a counter family takes its samples'
/// `_total` name in `# HELP` and `# TYPE`, and `# UNIT` and `# EOF` (unknown to 0.0.4) go.
fn to_text_format(openmetrics: &str) -> String {
    let mut text = String::with_capacity(openmetrics.len());
    let mut help: Option<&str> = None;
    for line in openmetrics.lines() {
        if line.starts_with("# HELP ") {
            help = Some(line);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let name = if kind == "counter" && !name.ends_with("_total") {
                format!("{name}_total")
            } else {
                name.to_owned()
            };
            if let Some(help) = help.take() {
                let words = help
                    .strip_prefix("# HELP ")
                    .and_then(|h| h.split_once(' '))
                    .map_or("", |(_, words)| words);
                text.push_str(&format!("# HELP {name} {words}\n"));
            }
            text.push_str(&format!("# TYPE {name} {kind}\n"));
            continue;
        }
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        text.push_str(line);
        text.push('\n');
    }
    text
}

pub fn runbook(name: &str) -> RunbookLabel {
    RunbookLabel {
        runbook: name.to_owned(),
    }
}

pub fn reason(runbook: &str, reason: &str) -> ReasonLabels {
    ReasonLabels {
        runbook: runbook.to_owned(),
        reason: reason.to_owned(),
    }
}
