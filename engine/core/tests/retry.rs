//! The retry policy (issue 11): a step is tried again only when another attempt may succeed.
//! Forbidden (RBAC), Invalid (the object's schema), NotFound and a field-manager conflict are
//! the same every time, so they fail the step at once and the rollback starts without waiting
//! out the back-off; throttling (429), server errors and lost connections are retried. The
//! journal records the kind of each failure.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use runbook_core::effects::{Answer, FixedAnswer, ScenarioClock};
use runbook_core::exec::{execute, RunOptions, RunReport};
use runbook_core::journal::{Event, Outcome, Record};
use runbook_core::sim::SimWorld;
use runbook_core::testing::Collect;

const RUNBOOK: &str = "apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata: {name: retry}
spec:
  steps:
    - id: scale-api
      scale: {name: api, replicas: 4}
      retries: {attempts: 3, backoff: 1s}
";

fn scenario(fault: &str) -> String {
    format!(
        "apiVersion: runbook.dev/v1alpha1
kind: Scenario
metadata: {{name: shop}}
spec:
  objects:
    - apiVersion: apps/v1
      kind: Deployment
      metadata: {{name: api, namespace: shop}}
      spec: {{replicas: 2}}
  faults:
    - {{verb: scale, name: api, error: {fault}, message: injected, times: 1}}
"
    )
}

/// Runs the one-step runbook with a single failure of `fault` injected into its scale.
fn run_with_one(fault: &str) -> (RunReport, Vec<Record>) {
    let (catalog, runbook) = runbook_core::testing::inline_runbook("retry.yaml", RUNBOOK)
        .unwrap_or_else(|errors| panic!("{errors:?}"));
    let scenario =
        runbook_core::sim::parse_scenario(Path::new("shop.scenario.yaml"), &scenario(fault))
            .unwrap_or_else(|_| panic!("the scenario with a {fault} fault parses"));
    let world = Arc::new(SimWorld::new(&scenario));
    let (bindings, _) = runbook_core::bind::bind(&runbook, &[], None);
    let plan = Arc::new(runbook_core::compile::Compiler::compile(
        runbook, bindings, None,
    ));
    let collect = Arc::new(Collect::default());
    let effects = world.effects(
        Arc::new(FixedAnswer(Answer::Yes)),
        Arc::new(ScenarioClock::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600),
        )),
        collect.clone(),
    );
    let options = RunOptions {
        run_id: "test".to_owned(),
        dry_run: false,
        yes: true,
        parallelism: 1,
        namespace: "shop".to_owned(),
        journal: None,
        catalog: Some(catalog),
        digest: String::new(),
        interrupt: None,
        resume: None,
        cluster: None,
    };
    let report = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime")
        .block_on(execute(plan, effects, options));
    let records = collect.0.lock().expect("records").clone();
    (report, records)
}

/// The kinds of the failed attempts that were retried.
fn retried(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .filter_map(|record| match &record.event {
            Event::StepAttemptFailed { error_kind, .. } => error_kind.clone(),
            _ => None,
        })
        .collect()
}

/// The kind the journal gives the step's final failure.
fn failed_as(records: &[Record]) -> Option<String> {
    records.iter().find_map(|record| match &record.event {
        Event::StepFinished { error_kind, .. } => error_kind.clone(),
        _ => None,
    })
}

#[test]
fn a_forbidden_answer_fails_the_step_at_once_without_a_retry() {
    let (report, records) = run_with_one("forbidden");
    assert_eq!(report.outcome, Outcome::RolledBack, "{}", report.message);
    assert!(retried(&records).is_empty(), "{:?}", retried(&records));
    assert_eq!(failed_as(&records).as_deref(), Some("forbidden"));
    assert!(
        report.message.contains("forbidden: injected"),
        "{}",
        report.message
    );
}

#[test]
fn an_invalid_answer_fails_the_step_at_once_without_a_retry() {
    let (report, records) = run_with_one("invalid");
    assert_eq!(report.outcome, Outcome::RolledBack, "{}", report.message);
    assert!(retried(&records).is_empty(), "{:?}", retried(&records));
    assert_eq!(failed_as(&records).as_deref(), Some("invalid"));
}

#[test]
fn not_found_and_a_field_manager_conflict_are_not_retried_either() {
    for fault in ["not-found", "field-manager-conflict"] {
        let (report, records) = run_with_one(fault);
        assert_eq!(
            report.outcome,
            Outcome::RolledBack,
            "{fault}: {}",
            report.message
        );
        assert!(
            retried(&records).is_empty(),
            "{fault}: {:?}",
            retried(&records)
        );
        assert_eq!(failed_as(&records).as_deref(), Some(fault));
    }
}

#[test]
fn throttling_and_server_errors_are_retried_and_the_step_then_succeeds() {
    for (fault, kind) in [("blocked", "blocked"), ("unavailable", "unavailable")] {
        let (report, records) = run_with_one(fault);
        assert_eq!(
            report.outcome,
            Outcome::Succeeded,
            "{fault}: {}",
            report.message
        );
        assert_eq!(
            retried(&records),
            [kind],
            "{fault}: one retry, journaled with its kind"
        );
        assert_eq!(failed_as(&records), None, "{fault}: the step finished well");
    }
}
