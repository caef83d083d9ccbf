//! The expression sandbox (issue 12, item 4): nothing an expression calls blocks the run, a
//! slow expression never holds up the async runtime (which, under `serve`, answers HTTP), and
//! it is stopped at its step's timeout.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use runbook_core::effects::{Answer, FixedAnswer, ScenarioClock};
use runbook_core::exec::{execute, RunOptions, RunReport, StepStatus};
use runbook_core::sim::SimWorld;
use runbook_core::testing::Collect;

fn runbook(verify: &str, timeout: &str) -> String {
    format!(
        "apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata: {{name: sandbox}}
spec:
  steps:
    - id: check
      verify: '{verify}'
      timeout: {timeout}
"
    )
}

#[test]
fn sleep_and_timestamp_are_refused_when_the_runbook_is_checked() {
    for (expression, name) in [
        ("sleep(15) == ()", "sleep"),
        ("timestamp() != ()", "timestamp"),
    ] {
        let errors =
            runbook_core::testing::inline_runbook("sandbox.yaml", &runbook(expression, "2s"))
                .err()
                .unwrap_or_else(|| panic!("`{expression}` must not validate"));
        assert!(
            errors.iter().any(|error| error
                .contains(&format!("`{name}` is not available in runbook expressions"))),
            "{errors:?}"
        );
    }
}

/// Runs `text` on a real clock, with a task beside it that ticks every 10 ms; returns the
/// report, the longest gap between two ticks, and how long the run took.
fn run_beside_a_ticker(text: &str) -> (RunReport, Duration, Duration) {
    let (catalog, runbook) = runbook_core::testing::inline_runbook("sandbox.yaml", text)
        .unwrap_or_else(|errors| panic!("{errors:?}"));
    let scenario = runbook_core::sim::parse_scenario(
        Path::new("empty.scenario.yaml"),
        "apiVersion: runbook.dev/v1alpha1\nkind: Scenario\nmetadata: {name: empty}\nspec: {}\n",
    )
    .unwrap_or_else(|_| panic!("the empty scenario parses"));
    let world = Arc::new(SimWorld::new(&scenario));
    let (bindings, _) = runbook_core::bind::bind(&runbook, &[], None);
    let plan = Arc::new(runbook_core::compile::Compiler::compile(
        runbook, bindings, None,
    ));
    let effects = world.effects(
        Arc::new(FixedAnswer(Answer::Yes)),
        Arc::new(ScenarioClock::new(SystemTime::UNIX_EPOCH)),
        Arc::new(Collect::default()),
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
    let started = Instant::now();
    // One worker thread, as the CLI's runtime has several: if an evaluation ran on it, the
    // ticker could not tick meanwhile.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_time()
        .build()
        .expect("runtime");
    let (report, longest_gap) = runtime.block_on(async move {
        let ticker = tokio::spawn(async move {
            let mut longest = Duration::ZERO;
            let mut last = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                longest = longest.max(last.elapsed());
                last = Instant::now();
                if started.elapsed() > Duration::from_secs(30) {
                    return longest;
                }
            }
        });
        let report = execute(plan, effects, options).await;
        ticker.abort();
        let longest = match ticker.await {
            Ok(longest) => longest,
            Err(_) => Duration::ZERO,
        };
        (report, longest)
    });
    // Dropping the runtime waits for its blocking threads: an evaluation that was not stopped
    // would hold this up until it finished by itself.
    drop(runtime);
    (report, longest_gap, started.elapsed())
}

#[test]
fn a_runaway_expression_fails_its_step_at_the_timeout_without_blocking_the_runtime() {
    // Each of 20,000 items builds and scans a 1 MB string: many seconds of work in a debug
    // build, within the operation and size limits. Were it to finish, it would hold and the
    // step would succeed.
    let slow = r#"range(0, 20000).filter(|i| "y".pad(1000000, "y").contains("z")).len() == 0"#;
    let (report, longest_gap, took) = run_beside_a_ticker(&runbook(slow, "1s"));
    let status = report
        .steps
        .iter()
        .find(|step| step.id == "check")
        .map(|step| step.status.clone())
        .expect("the step is reported");
    assert_eq!(
        status,
        StepStatus::Failed("timed out after 1s".to_owned()),
        "{}",
        report.message
    );
    assert!(
        longest_gap < Duration::from_millis(250),
        "the runtime was blocked for {longest_gap:?} while the expression ran"
    );
    assert!(
        took < Duration::from_secs(5),
        "the evaluation was not stopped at the step's timeout: the run took {took:?}"
    );
}
