//! Executor overhead (figures go in BENCHMARKS.md; not a timed test).
//!
//! 1. 1,000 sequential `run: ["true"]` steps with journaling on, against a plain loop that
//!    spawns `true` 1,000 times in the same process (same runtime, same spawn call).
//! 2. A 2,000-node DAG of no-op native actions (scale to the current count) against the
//!    simulated cluster, with and without the journal.
//!
//! cargo bench -p runbook-core --bench executor

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use runbook_core::effects::{Answer, Effects, FixedAnswer, LocalProcesses, Silent, SystemClock};
use runbook_core::exec::{execute, RunOptions};
use runbook_core::journal::{Journal, Outcome};
use runbook_core::sim::SimWorld;

fn plan(
    text: &str,
) -> (
    Arc<runbook_core::compile::Plan>,
    Arc<runbook_core::runbook::Catalog>,
) {
    let mut diagnostics = runbook_core::diagnostic::Diagnostics::new();
    let mut workspace = runbook_core::loader::Workspace::default();
    runbook_core::loader::Loader::new().load_text(
        Path::new("bench.yaml"),
        text.to_owned(),
        &mut workspace,
        &mut diagnostics,
    );
    let catalog = runbook_core::check::check(&workspace, &mut diagnostics);
    assert!(
        !diagnostics.has_errors(),
        "{:?}",
        diagnostics
            .sorted()
            .iter()
            .map(|d| d.message.clone())
            .collect::<Vec<_>>()
    );
    let runbook = catalog.runbooks[0].clone();
    let (bindings, _) = runbook_core::bind::bind(&runbook, &[], None);
    (
        Arc::new(runbook_core::compile::Compiler::compile(
            runbook, bindings, None,
        )),
        Arc::new(catalog),
    )
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let state = std::env::temp_dir().join(format!("runbook-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);

    // 1. Sequential process steps with the journal on, against a plain spawn loop.
    let mut text = String::from("apiVersion: runbook.dev/v1alpha1\nkind: Runbook\nmetadata: {name: bench}\nspec:\n  steps:\n");
    for index in 0..1000 {
        text.push_str(&format!(
            "    - {{id: s{index}, run: [\"true\"], irreversible: bench}}\n"
        ));
    }
    let (process_plan, catalog) = plan(&text);
    let empty = runbook_core::sim::parse_scenario(
        Path::new("empty.scenario.yaml"),
        "apiVersion: runbook.dev/v1alpha1\nkind: Scenario\nmetadata: {name: empty}\nspec: {}\n",
    )
    .expect("scenario");
    let mut engine = Vec::new();
    let mut plain = Vec::new();
    for round in 0..5 {
        let world = Arc::new(SimWorld::new(&empty));
        let effects = Effects {
            cluster: world.clone(),
            processes: Arc::new(LocalProcesses),
            http: world.clone(),
            notifier: world.clone(),
            prompter: Arc::new(FixedAnswer(Answer::Yes)),
            clock: Arc::new(SystemClock),
            reporter: Arc::new(Silent),
            observer: None,
        };
        let journal =
            Arc::new(Journal::create(&state, &format!("process-{round}")).expect("journal"));
        let options = options(&format!("process-{round}"), Some(journal), &catalog);
        let started = Instant::now();
        let report = runtime.block_on(execute(process_plan.clone(), effects, options));
        engine.push(started.elapsed());
        assert_eq!(report.outcome, Outcome::Succeeded, "{}", report.message);

        let started = Instant::now();
        runtime.block_on(async {
            for _ in 0..1000 {
                let output = tokio::process::Command::new("true")
                    .output()
                    .await
                    .expect("true runs");
                assert!(output.status.success());
            }
        });
        plain.push(started.elapsed());
    }
    let (engine, plain) = (median(engine), median(plain));
    println!(
        "1,000 sequential `run: [\"true\"]` steps, journal on: {:.0} ms",
        engine.as_secs_f64() * 1e3
    );
    println!(
        "plain loop spawning `true` 1,000 times:              {:.0} ms",
        plain.as_secs_f64() * 1e3
    );
    println!(
        "ratio: {:.2}x (target: at most 1.5x)",
        engine.as_secs_f64() / plain.as_secs_f64()
    );

    // 2. A 2,000-node DAG of no-op native actions against the simulator.
    let mut text = String::from(
        "apiVersion: runbook.dev/v1alpha1\nkind: Runbook\nmetadata: {name: dag}\nspec:\n  steps:\n",
    );
    let mut scenario = String::from("apiVersion: runbook.dev/v1alpha1\nkind: Scenario\nmetadata: {name: dag}\nspec:\n  objects:\n");
    for index in 0..2000 {
        // Each step needs one or two earlier ones, so the DAG has width and depth.
        let needs = match index {
            0 => "[]".to_owned(),
            i if i % 3 == 0 => format!("[s{}, s{}]", i / 2, i - 1),
            i => format!("[s{}]", i / 2),
        };
        text.push_str(&format!("    - {{id: s{index}, needs: {needs}, scale: {{name: app-{index}, namespace: bench, replicas: 1}}}}\n"));
        scenario.push_str(&format!("    - {{apiVersion: apps/v1, kind: Deployment, metadata: {{name: app-{index}, namespace: bench}}, spec: {{replicas: 1}}}}\n"));
    }
    let (dag_plan, catalog) = plan(&text);
    let scenario = runbook_core::sim::parse_scenario(Path::new("dag.scenario.yaml"), &scenario)
        .expect("scenario");
    for with_journal in [false, true] {
        let mut samples = Vec::new();
        for round in 0..5 {
            let world = Arc::new(SimWorld::new(&scenario));
            let effects = world.effects(
                Arc::new(FixedAnswer(Answer::Yes)),
                Arc::new(SystemClock),
                Arc::new(Silent),
            );
            let id = format!("dag-{with_journal}-{round}");
            let journal =
                with_journal.then(|| Arc::new(Journal::create(&state, &id).expect("journal")));
            let options = options(&id, journal, &catalog);
            let started = Instant::now();
            let report = runtime.block_on(execute(dag_plan.clone(), effects, options));
            samples.push(started.elapsed());
            assert_eq!(report.outcome, Outcome::Succeeded, "{}", report.message);
        }
        println!(
            "2,000-step DAG of no-op scales on the simulator, journal {}: {:.0} ms (target: under 200 ms)",
            if with_journal { "on " } else { "off" },
            median(samples).as_secs_f64() * 1e3
        );
    }
    let _ = std::fs::remove_dir_all(&state);
}

fn options(
    run_id: &str,
    journal: Option<Arc<Journal>>,
    catalog: &Arc<runbook_core::runbook::Catalog>,
) -> RunOptions {
    RunOptions {
        run_id: run_id.to_owned(),
        dry_run: false,
        yes: true,
        parallelism: 4,
        namespace: "default".to_owned(),
        journal,
        catalog: Some(catalog.clone()),
        digest: String::new(),
        interrupt: None,
        roll_back_on_interrupt: false,
        resume: None,
        cluster: None,
    }
}
