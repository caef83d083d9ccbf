//! The executor runs the plan it was given: its order of steps comes from `Plan.graph`, the DAG
//! that `plan` and `graph` show a reviewer (issue 11), not from a second reading of `needs`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use petgraph::visit::EdgeRef;
use runbook_core::compile::{Compiler, Dependency, Plan, PlanNode};
use runbook_core::effects::{Answer, FixedAnswer, ScenarioClock};
use runbook_core::exec::{execute, RunOptions};
use runbook_core::journal::{Event, Record};
use runbook_core::sim::SimWorld;
use runbook_core::testing::Collect;

fn paused<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime")
        .block_on(future)
}

/// The ids of the steps in the order the trace says they started.
fn started(trace: &[Record]) -> Vec<String> {
    trace
        .iter()
        .filter_map(|record| match &record.event {
            Event::StepStarted { step, .. } => Some(step.clone()),
            _ => None,
        })
        .collect()
}

/// Runs `plan` against an empty simulated cluster, one step at a time.
fn run_plan(plan: Plan, catalog: Arc<runbook_core::runbook::Catalog>) -> Vec<Record> {
    let scenario = runbook_core::sim::parse_scenario(
        Path::new("empty.scenario.yaml"),
        "apiVersion: runbook.dev/v1alpha1\nkind: Scenario\nmetadata: {name: empty}\nspec: {}\n",
    )
    .unwrap_or_else(|_| panic!("the empty scenario parses"));
    let world = Arc::new(SimWorld::new(&scenario));
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
        namespace: "default".to_owned(),
        journal: None,
        catalog: Some(catalog),
        digest: String::new(),
        interrupt: None,
        roll_back_on_interrupt: false,
        resume: None,
        cluster: None,
    };
    let report = paused(execute(Arc::new(plan), effects, options));
    assert_eq!(report.exit_code(), 0, "{}", report.message);
    let records = collect.0.lock().expect("records").clone();
    records
}

const TWO_INDEPENDENT_STEPS: &str = "apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata: {name: order}
spec:
  steps:
    - id: first
      notify: first
    - id: second
      needs: []
      notify: second
";

#[test]
fn independent_steps_start_in_file_order() {
    let (catalog, runbook) =
        runbook_core::testing::inline_runbook("order.yaml", TWO_INDEPENDENT_STEPS)
            .unwrap_or_else(|errors| panic!("{errors:?}"));
    let (bindings, _) = runbook_core::bind::bind(&runbook, &[], None);
    let plan = Compiler::compile(runbook, bindings, None);
    assert_eq!(plan.stages, vec![vec![0, 1]], "both steps are in one stage");
    assert_eq!(started(&run_plan(plan, catalog)), ["first", "second"]);
}

#[test]
fn an_order_edge_in_the_plan_graph_decides_what_runs_first() {
    let (catalog, runbook) =
        runbook_core::testing::inline_runbook("order.yaml", TWO_INDEPENDENT_STEPS)
            .unwrap_or_else(|errors| panic!("{errors:?}"));
    let (bindings, _) = runbook_core::bind::bind(&runbook, &[], None);
    let mut plan = Compiler::compile(runbook, bindings, None);
    // The same runbook, but the plan says `first` waits for `second`: the executor must follow
    // the plan's graph, though neither step's `needs` says so.
    let first = plan.node(&PlanNode::Step(0)).expect("step node");
    let second = plan.node(&PlanNode::Step(1)).expect("step node");
    plan.graph.add_edge(second, first, Dependency::Order);
    assert_eq!(started(&run_plan(plan, catalog)), ["second", "first"]);
}

fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// For every scenario case of every shipped runbook: no step starts before every step the
/// plan's graph orders before it has finished (or was skipped), and each step's stage in the
/// plan is one past the latest stage of the steps the graph orders before it.
#[test]
fn plan_stages_and_the_executed_order_agree_for_every_shipped_runbook() {
    let root = repository_root().join("runbooks");
    let (catalog, diagnostics, _) = runbook_core::load_catalog(std::slice::from_ref(&root));
    assert!(!diagnostics.has_errors(), "the shipped runbooks are valid");
    let catalog = Arc::new(catalog);
    let mut cases = 0;
    let mut failures = Vec::new();
    for path in runbook_core::testing::find_test_files(std::slice::from_ref(&root)).0 {
        let file = runbook_core::testing::load_test_file(&path)
            .unwrap_or_else(|_| panic!("{} is a valid test file", path.display()));
        let runbook = catalog
            .get(&file.document.spec.runbook)
            .cloned()
            .expect("the test's runbook is shipped");
        let (bindings, _) = runbook_core::bind::bind(&runbook, &[], None);
        let plan = Compiler::compile(runbook.clone(), bindings, None);
        let order_edges: Vec<(usize, usize)> = plan
            .graph
            .edge_references()
            .filter(|edge| *edge.weight() == Dependency::Order)
            .filter_map(
                |edge| match (&plan.graph[edge.source()], &plan.graph[edge.target()]) {
                    (PlanNode::Step(from), PlanNode::Step(to)) => Some((*from, *to)),
                    _ => None,
                },
            )
            .collect();
        // The stages agree with the graph.
        let stage_of = |position: usize| {
            plan.stages
                .iter()
                .position(|stage| stage.contains(&position))
                .expect("every step is in a stage")
        };
        for position in 0..runbook.steps.len() {
            let expected = order_edges
                .iter()
                .filter(|(_, to)| *to == position)
                .map(|(from, _)| stage_of(*from) + 1)
                .max()
                .unwrap_or(0);
            if stage_of(position) != expected {
                failures.push(format!(
                    "{}: step `{}` is in stage {} but the graph puts it in {expected}",
                    runbook.name,
                    runbook.steps[position].id,
                    stage_of(position)
                ));
            }
        }
        for case in &file.document.spec.cases {
            cases += 1;
            let result = paused(runbook_core::testing::run_case(&catalog, &file, case));
            // Where in the trace each step started and ended.
            let at = |wanted: &dyn Fn(&Event) -> bool| {
                result.trace.iter().position(|r| wanted(&r.event))
            };
            for (from, to) in &order_edges {
                let before = &runbook.steps[*from].id;
                let after = &runbook.steps[*to].id;
                let Some(started_at) =
                    at(&|event| matches!(event, Event::StepStarted { step, .. } if step == after))
                else {
                    continue;
                };
                let ended_at = at(&|event| match event {
                    Event::StepFinished { step, .. } | Event::StepSkipped { step, .. } => {
                        step == before
                    }
                    _ => false,
                });
                if ended_at.is_none_or(|ended_at| ended_at > started_at) {
                    failures.push(format!(
                        "{} / {}: `{after}` started before `{before}`, which the plan orders first, had ended",
                        runbook.name, case.name
                    ));
                }
            }
        }
    }
    assert!(cases >= 200, "only {cases} cases were run");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
