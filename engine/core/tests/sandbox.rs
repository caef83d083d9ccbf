//! The expression sandbox (issue 12, item 4): nothing an expression calls blocks the run, a
//! slow expression never holds up the async runtime (which, under `serve`, answers HTTP), and
//! it is stopped at its step's timeout.

/// As the binaries do, so the memory bound of an evaluation is enforced here too.
#[global_allocator]
static ALLOCATOR: runbook_core::alloc::CountingAllocator = runbook_core::alloc::CountingAllocator;

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
    let (report, longest_gap, took) = run_beside_a_ticker(&runbook(&slow_expression(), "1s"));
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

/// An expression that runs for seconds within the operation and size limits: each of 20,000
/// items builds a 512 KiB string by doubling and scans it. Were it to finish, it would hold.
/// (Rhai's operation limit stops it after some 9,000 items, seconds into a debug build.)
pub fn slow_expression() -> String {
    format!(
        r#""{}".split("").filter(|c| "aaaaaaaaaaaaaaaaa".split("").reduce(|s, x| s + s, "y").contains("z")).len() == 0"#,
        "a".repeat(20_000)
    )
}

/// Issue 13: `params.t.split("").map(|c| cm.data.big + c)` allocated about 4 GB and aborted:
/// each string was within the size limit, but not all of them together. An evaluation that
/// holds more than its memory bound is stopped with an error saying so.
#[test]
fn an_expression_that_builds_too_much_altogether_is_stopped_with_a_clear_error() {
    let text = r#"t.split("").map(|c| big + c).len() > 0"#;
    let compiled = runbook_core::expr::Expression::compile(text).expect("compiles");
    let mut scope = rhai::Scope::new();
    scope.push_dynamic("t", rhai::Dynamic::from("x".repeat(5_000)));
    scope.push_dynamic("big", rhai::Dynamic::from("y".repeat(1_000_000)));
    let started = std::time::Instant::now();
    let result = runbook_core::expr::evaluate::<bool>(
        &mut scope,
        &compiled.ast,
        &runbook_core::expr::Budget::standard(),
        None,
    );
    let error = result.expect_err("stopped").to_string();
    assert!(
        error.contains("the evaluation was stopped: its values took more than 64 MiB"),
        "{error}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(9),
        "stopped by memory, not time"
    );
    // What an evaluation held is freed: a small one right after runs.
    let small = runbook_core::expr::Expression::compile("big.len() > 10").expect("compiles");
    assert!(runbook_core::expr::evaluate::<bool>(
        &mut scope,
        &small.ast,
        &runbook_core::expr::Budget::standard(),
        None,
    )
    .expect("runs"));
}

/// Issue 13: `sort`, `order_by`, `extract`, `replace` on a fact passed `validate` and failed at
/// run time ("Non-pure method 'sort' cannot be called on constant"), and a closure reading a
/// sibling fact failed with "Data race detected". Facts are now values an expression may use
/// freely: `order_by` and `extract` work, closures read sibling facts; methods that change a
/// value in place and give back nothing (`sort`, `replace`) are refused at `validate`, at
/// their position, naming what to use instead (`sorted()`, `replaced()`).
#[test]
fn facts_are_values_an_expression_may_use_freely() {
    let text = "apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata: {name: sandbox}
spec:
  facts:
    - {name: p.events, expr: '[3, 1, 2]'}
    - {name: p.deploys, expr: '[1]'}
    - {name: p.name, expr: '\"a-b\"'}
  steps:
    - id: check
      verify: 'p.events.filter(|e| e > p.deploys[0]).len() == 2 && p.events.order_by(|a, b| a - b)[0] == 1 && p.events.extract(0, 1) == [3] && p.events.sorted() == [1, 2, 3] && p.events.reversed() == [2, 1, 3] && p.name.replaced(\"-\", \"_\") == \"a_b\" && p.events == [3, 1, 2]'
      timeout: 5s
";
    let (report, _, _) = run_beside_a_ticker(text);
    assert_eq!(
        report.steps[0].status,
        StepStatus::Succeeded,
        "{}",
        report.message
    );

    for (expression, name, column, instead) in [
        ("p.events.sort() == []", "sort", 10, "use `sorted()`"),
        (
            "p.name.replace(\"a\", \"b\") == ()",
            "replace",
            8,
            "use `replaced(FROM, TO)`",
        ),
    ] {
        let error = runbook_core::expr::Expression::compile(expression)
            .err()
            .unwrap_or_else(|| panic!("`{expression}` must not compile"));
        assert_eq!(error.column, column, "{error:?}");
        assert!(
            error
                .message
                .contains(&format!("`{name}` changes its value in place"))
                && error.message.contains(instead),
            "{error:?}"
        );
    }
}

/// Issue 15: `now()` (before it existed; any function that does not exist) passed `validate`
/// and failed at run time. A call of an unknown function or method is refused at its position, with the near
/// name when there is one; every function the engine has still compiles.
#[test]
fn a_call_of_a_function_that_does_not_exist_is_refused_at_its_position() {
    let error = runbook_core::expr::Expression::compile("utcnow() > 0").expect_err("refused");
    assert_eq!((error.line, error.column), (1, 1), "{error:?}");
    assert_eq!(
        error.message,
        "there is no function `utcnow` in runbook expressions"
    );
    let error = runbook_core::expr::Expression::compile(
        "pods.filter(|p| p.name.starts_wth(\"api\")).len() > 0",
    )
    .expect_err("refused");
    assert!(
        error.message.contains("`starts_wth`")
            && error.message.contains("did you mean `starts_with`?"),
        "{error:?}"
    );
    for fine in [
        "pods.filter(|p| p.name.starts_with(\"api\")).len() > 0",
        "type_of(x) == \"string\" && x.to_upper().contains(\"A\")",
        "range(0, 3).contains(1) && [3, 1].sorted()[0] == 1",
    ] {
        runbook_core::expr::Expression::compile(fine).unwrap_or_else(|e| panic!("`{fine}`: {e:?}"));
    }
}
