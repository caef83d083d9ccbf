//! The executor against the simulated cluster, on a paused clock: what an on-call engineer
//! relies on when a run goes wrong.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use runbook_core::effects::{Answer, FixedAnswer, ObjectKey, ScenarioClock};
use runbook_core::exec::{execute, Resume, RunOptions, RunReport, StepStatus};
use runbook_core::journal::{Event, Journal, Outcome, Record};
use runbook_core::sim::SimWorld;
use runbook_core::testing::{Collect, TEST_EPOCH};

const SCENARIO: &str = r#"apiVersion: runbook.dev/v1alpha1
kind: Scenario
metadata: {name: shop}
spec:
  objects:
    - apiVersion: apps/v1
      kind: Deployment
      metadata: {name: api, namespace: shop}
      spec: {replicas: 2}
    - apiVersion: apps/v1
      kind: Deployment
      metadata: {name: worker, namespace: shop}
      spec: {replicas: 1}
    - apiVersion: v1
      kind: Node
      metadata: {name: node-1}
      spec: {}
    - apiVersion: v1
      kind: Pod
      metadata: {name: api-0, namespace: shop, labels: {app: api}}
      spec: {nodeName: node-1}
    - apiVersion: v1
      kind: Secret
      metadata: {name: db, namespace: shop}
      data: {password: c3VwZXItc2VjcmV0LXB3}
  exec:
    - pod: shop/api-0
      command: [app, status]
      responses:
        - stdout: '{"healthy": false}'
        - after: {step: fix}
          stdout: '{"healthy": true}'
  commands:
    - argv: [deploy-tool, rollout]
      responses:
        - stdout: "token=abcd1234efgh rolled out"
"#;

/// One run of the executor against the simulated cluster on a paused clock, described the
/// way casey/just's tests describe theirs: `Test::new().runbook(&text).scenario(faults)
/// .answer(Answer::No).run()`. What a test does not say is the common case: the shop scenario
/// above, every gate answered yes, a real run (not a dry run) with run id `test`, four steps at
/// a time, in namespace `shop`, on a clock starting at the test epoch, with no journal, no
/// interrupt and no resume.
struct Test {
    runbook: String,
    scenario: String,
    prompt: Prompt,
    dry_run: bool,
    yes: bool,
    parallelism: usize,
    run_id: String,
    sets: Vec<(String, String)>,
    journal: Option<Arc<Journal>>,
    resume: Option<Resume>,
    start: SystemTime,
    interrupt: Option<Interruption>,
    /// `--rollback-on-interrupt`.
    roll_back_on_interrupt: bool,
    record_deployments: bool,
    panic_on_scale: Option<String>,
    /// Changes the checked runbook before it is compiled (what `validate` would refuse).
    edit: Option<Edit>,
}

/// A change to a checked runbook (see [`Test::edit`]).
type Edit = Box<dyn FnOnce(&mut runbook_core::runbook::Runbook)>;

/// Who answers the gates.
enum Prompt {
    Fixed(Answer),
    /// A [`Meddler`]: drains (or Ctrl-Cs) the run when asked, then answers.
    Meddler {
        drain: bool,
        answer: Answer,
    },
}

/// What happens to the run's interrupt while it runs.
enum Interruption {
    /// The run has an interrupt, but only a [`Meddler`] uses it.
    Armed,
    /// Ctrl-C this long into the run.
    CtrlCAfter(Duration),
    /// A drain (a shutting-down server) this long into the run.
    DrainAfter(Duration),
    /// A termination (SIGTERM) this long into the run.
    TerminateAfter(Duration),
}

/// What a run left behind.
struct Harness {
    world: Arc<SimWorld>,
    collect: Arc<Collect>,
    report: RunReport,
    /// With [`Test::record_deployments`]: every get and patch of a Deployment, in order.
    calls: Vec<String>,
}

impl Test {
    fn new() -> Self {
        Self {
            runbook: String::new(),
            scenario: SCENARIO.to_owned(),
            prompt: Prompt::Fixed(Answer::Yes),
            dry_run: false,
            yes: false,
            parallelism: 4,
            run_id: "test".to_owned(),
            sets: Vec::new(),
            journal: None,
            resume: None,
            start: SystemTime::UNIX_EPOCH + TEST_EPOCH,
            interrupt: None,
            roll_back_on_interrupt: false,
            record_deployments: false,
            panic_on_scale: None,
            edit: None,
        }
    }

    fn runbook(mut self, text: &str) -> Self {
        self.runbook = text.to_owned();
        self
    }

    /// Adds to the end of the shop scenario (faults, changes, logs...).
    fn scenario(mut self, extra: &str) -> Self {
        self.scenario.push_str(extra);
        self
    }

    /// Replaces the whole scenario (the shop scenario edited in place).
    fn world(mut self, scenario: &str) -> Self {
        self.scenario = scenario.to_owned();
        self
    }

    fn answer(mut self, answer: Answer) -> Self {
        self.prompt = Prompt::Fixed(answer);
        self
    }

    /// The gates are answered by a [`Meddler`], which drains or Ctrl-Cs the run first.
    fn meddler(mut self, drain: bool, answer: Answer) -> Self {
        self.prompt = Prompt::Meddler { drain, answer };
        self.interrupt.get_or_insert(Interruption::Armed);
        self
    }

    fn dry_run(mut self) -> Self {
        self.dry_run = true;
        self
    }

    /// `--yes`.
    fn yes(mut self) -> Self {
        self.yes = true;
        self
    }

    fn parallelism(mut self, parallelism: usize) -> Self {
        self.parallelism = parallelism;
        self
    }

    fn run_id(mut self, run_id: &str) -> Self {
        self.run_id = run_id.to_owned();
        self
    }

    /// A param, as `--set name=value` gives it.
    fn set(mut self, name: &str, value: &str) -> Self {
        self.sets.push((name.to_owned(), value.to_owned()));
        self
    }

    fn journal(mut self, journal: &Arc<Journal>) -> Self {
        self.journal = Some(journal.clone());
        self
    }

    fn resume(mut self, resume: Resume) -> Self {
        self.resume = Some(resume);
        self
    }

    /// The wall time the scenario clock starts at.
    fn started_at(mut self, start: SystemTime) -> Self {
        self.start = start;
        self
    }

    fn ctrl_c_after(mut self, after: Duration) -> Self {
        self.interrupt = Some(Interruption::CtrlCAfter(after));
        self
    }

    fn terminate_after(mut self, after: Duration) -> Self {
        self.interrupt = Some(Interruption::TerminateAfter(after));
        self
    }

    /// `--rollback-on-interrupt`.
    fn roll_back_on_interrupt(mut self) -> Self {
        self.roll_back_on_interrupt = true;
        self
    }

    fn drain_after(mut self, after: Duration) -> Self {
        self.interrupt = Some(Interruption::DrainAfter(after));
        self
    }

    /// Puts a [`Recording`] between the executor and the simulated cluster.
    fn record_deployments(mut self) -> Self {
        self.record_deployments = true;
        self
    }

    /// Puts a [`Recording`] between the executor and the simulated cluster that panics when
    /// asked to scale the Deployment named (a bug in an effects implementation).
    fn panic_on_scale(mut self, name: &str) -> Self {
        self.record_deployments = true;
        self.panic_on_scale = Some(name.to_owned());
        self
    }

    /// Edits the runbook after it was checked, to run what `validate` refuses.
    fn edit(mut self, edit: impl FnOnce(&mut runbook_core::runbook::Runbook) + 'static) -> Self {
        self.edit = Some(Box::new(edit));
        self
    }

    fn run(self) -> Harness {
        let (catalog, mut runbook) = runbook_core::testing::inline_runbook("t.yaml", &self.runbook)
            .unwrap_or_else(|errors| panic!("{errors:?}"));
        if let Some(edit) = self.edit {
            let mut edited = (*runbook).clone();
            edit(&mut edited);
            runbook = Arc::new(edited);
        }
        let scenario =
            runbook_core::sim::parse_scenario(Path::new("t.scenario.yaml"), &self.scenario)
                .unwrap_or_else(|d| {
                    panic!(
                        "{:?}",
                        d.sorted()
                            .iter()
                            .map(|d| d.message.clone())
                            .collect::<Vec<_>>()
                    )
                });
        let world = Arc::new(SimWorld::new(&scenario));
        let (bindings, errors) = runbook_core::bind::bind(&runbook, &self.sets, None);
        assert!(errors.is_empty(), "{errors:?}");
        let plan = Arc::new(runbook_core::compile::Compiler::compile(
            runbook, bindings, None,
        ));
        let collect = Arc::new(Collect::default());
        let interrupt = self
            .interrupt
            .as_ref()
            .map(|_| Arc::new(runbook_core::exec::Interrupt::default()));
        let prompter: Arc<dyn runbook_core::effects::Prompter> = match self.prompt {
            Prompt::Fixed(answer) => Arc::new(FixedAnswer(answer)),
            Prompt::Meddler { drain, answer } => Arc::new(Meddler {
                interrupt: interrupt.clone().expect("a meddler arms the interrupt"),
                drain,
                answer,
            }),
        };
        let mut effects = world.effects(
            prompter,
            Arc::new(ScenarioClock::new(self.start)),
            collect.clone(),
        );
        let recording = self.record_deployments.then(|| {
            Arc::new(Recording {
                inner: world.clone(),
                calls: std::sync::Mutex::new(Vec::new()),
                panic_on_scale: self.panic_on_scale.clone(),
            })
        });
        if let Some(recording) = &recording {
            effects.cluster = recording.clone();
        }
        let options = RunOptions {
            run_id: self.run_id,
            dry_run: self.dry_run,
            yes: self.yes,
            parallelism: self.parallelism,
            namespace: "shop".to_owned(),
            journal: self.journal,
            catalog: Some(catalog),
            digest: String::new(),
            interrupt: interrupt.clone(),
            roll_back_on_interrupt: self.roll_back_on_interrupt,
            resume: self.resume,
            cluster: None,
        };
        let report = match (interrupt, self.interrupt) {
            (Some(interrupt), Some(interruption)) => paused(async move {
                let run = tokio::spawn(execute(plan, effects, options));
                match interruption {
                    Interruption::Armed => {}
                    Interruption::CtrlCAfter(after) => {
                        tokio::time::sleep(after).await;
                        interrupt.raise();
                    }
                    Interruption::DrainAfter(after) => {
                        tokio::time::sleep(after).await;
                        interrupt.drain("test shutdown");
                    }
                    Interruption::TerminateAfter(after) => {
                        tokio::time::sleep(after).await;
                        interrupt.terminate("SIGTERM");
                    }
                }
                run.await.expect("run")
            }),
            _ => paused(execute(plan, effects, options)),
        };
        let calls = recording.map_or_else(Vec::new, |recording| {
            recording.calls.lock().expect("calls").clone()
        });
        Harness {
            world,
            collect,
            report,
            calls,
        }
    }
}

impl Harness {
    /// What the run wrote where a secret could leak: the journal's file, the events (as JSON)
    /// and the notifications, each named.
    fn everything_written(&self, journal: &Journal) -> [(&'static str, String); 3] {
        let written = std::fs::read_to_string(journal.path()).expect("journal");
        let shown: String = events(&self.collect)
            .iter()
            .map(|r| serde_json::to_string(r).expect("json"))
            .collect();
        let sent: String = self
            .world
            .notifications()
            .iter()
            .map(|n| n.message.clone())
            .collect();
        [
            ("journal", written),
            ("events", shown),
            ("notifications", sent),
        ]
    }
}

fn paused<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime")
        .block_on(future)
}

fn runbook(
    text: &str,
) -> (
    Arc<runbook_core::runbook::Catalog>,
    Arc<runbook_core::runbook::Runbook>,
) {
    runbook_core::testing::inline_runbook("t.yaml", text)
        .unwrap_or_else(|errors| panic!("{errors:?}"))
}

fn head(name: &str, steps: &str) -> String {
    format!("apiVersion: runbook.dev/v1alpha1\nkind: Runbook\nmetadata: {{name: {name}}}\nspec:\n  steps:\n{steps}")
}

fn replicas(world: &SimWorld, name: &str) -> i64 {
    let key = ObjectKey {
        api_version: "apps/v1".to_owned(),
        kind: "Deployment".to_owned(),
        namespace: Some("shop".to_owned()),
        name: name.to_owned(),
    };
    world
        .object(&key)
        .and_then(|o| {
            o.pointer("/spec/replicas")
                .and_then(serde_json::Value::as_i64)
        })
        .expect("replicas")
}

fn events(collect: &Collect) -> Vec<Record> {
    collect.0.lock().expect("records").clone()
}

fn status(report: &RunReport, id: &str) -> StepStatus {
    report
        .steps
        .iter()
        .find(|s| s.id == id)
        .map(|s| s.status.clone())
        .expect("step")
}

#[test]
fn a_failure_in_one_branch_undoes_every_completed_step_newest_first() {
    let text = head(
        "branches",
        "    - {id: scale-api, needs: [], scale: {name: api, replicas: 5}}
    - {id: mark-worker, needs: [], annotate: {kind: Deployment, name: worker, set: {maintenance: 'on'}}}
    - {id: scale-worker, needs: [mark-worker], scale: {name: worker, replicas: 3}}
    - {id: after, needs: [scale-api, scale-worker], verify: 'true'}
",
    );
    let faults = "  faults:\n    - {verb: scale, kind: Deployment, name: worker, error: unavailable, message: connection refused}\n";
    let h = Test::new().runbook(&text).scenario(faults).run();
    assert_eq!(
        h.report.outcome,
        Outcome::RolledBack,
        "{}",
        h.report.message
    );
    assert_eq!(h.report.exit_code(), 1);
    assert_eq!(status(&h.report, "scale-api"), StepStatus::Succeeded);
    assert!(
        matches!(status(&h.report, "scale-worker"), StepStatus::Failed(e) if e.contains("connection refused"))
    );
    assert_eq!(status(&h.report, "after"), StepStatus::NotRun);
    let undone: Vec<&str> = h.report.undos.iter().map(|u| u.step.as_str()).collect();
    assert_eq!(undone.len(), 2);
    assert_eq!(
        undone[0], "mark-worker",
        "the step that completed last is undone first"
    );
    assert_eq!(undone[1], "scale-api");
    assert_eq!(
        replicas(&h.world, "api"),
        2,
        "scaled back to the count seen before"
    );
    let worker = h
        .world
        .object(&ObjectKey {
            api_version: "apps/v1".to_owned(),
            kind: "Deployment".to_owned(),
            namespace: Some("shop".to_owned()),
            name: "worker".to_owned(),
        })
        .expect("worker");
    assert!(
        worker
            .pointer("/metadata/annotations/maintenance")
            .is_none(),
        "the added annotation is removed: {worker}"
    );
}

/// A panic inside a step (here in the cluster client) fails that step, unretried, and the run
/// undoes what it had changed, as for any failure, instead of dying with the change made.
#[test]
fn a_panic_in_a_step_fails_the_step_and_the_run_undoes_what_it_changed() {
    let text = head(
        "panics",
        "    - {id: scale-api, scale: {name: api, replicas: 5}}
    - {id: scale-worker, needs: [scale-api], retries: 3, scale: {name: worker, replicas: 3}}
",
    );
    let h = Test::new().runbook(&text).panic_on_scale("worker").run();
    assert_eq!(
        h.report.outcome,
        Outcome::RolledBack,
        "{}",
        h.report.message
    );
    assert!(
        matches!(status(&h.report, "scale-worker"), StepStatus::Failed(e) if e.contains("the engine panicked (test: scaling worker panics)")),
        "{:?}",
        status(&h.report, "scale-worker")
    );
    assert_eq!(replicas(&h.world, "api"), 2, "scale-api is undone");
    let journal = events(&h.collect);
    let failed: Vec<_> = journal
        .iter()
        .filter_map(|record| match &record.event {
            Event::StepFinished {
                step, error_kind, ..
            } if step == "scale-worker" => Some(error_kind.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(failed, vec![Some("panicked".to_owned())]);
    assert!(
        !journal.iter().any(|record| matches!(
            &record.event,
            Event::StepAttemptFailed { step, .. } if step == "scale-worker"
        )),
        "a panic is not retried"
    );
}

#[test]
fn retries_back_off_doubling_up_to_the_cap_on_the_clock() {
    let text = head(
        "retries",
        "    - id: scale-api
      scale: {name: api, replicas: 4}
      retries: {attempts: 3, backoff: 2s, maxBackoff: 3s}
",
    );
    let faults = "  faults:\n    - {verb: scale, name: api, error: conflict, message: the object has been modified, times: 2}\n";
    let started = std::time::Instant::now();
    let h = Test::new().runbook(&text).scenario(faults).run();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "no real sleeping"
    );
    assert_eq!(h.report.outcome, Outcome::Succeeded, "{}", h.report.message);
    let retries: Vec<(u32, Option<u64>)> = events(&h.collect)
        .iter()
        .filter_map(|r| match &r.event {
            Event::StepAttemptFailed {
                attempt,
                retry_in_ms,
                ..
            } => Some((*attempt, *retry_in_ms)),
            _ => None,
        })
        .collect();
    assert_eq!(
        retries,
        [(1, Some(2000)), (2, Some(3000))],
        "2s, then doubled but capped at 3s"
    );
    let finished = events(&h.collect)
        .last()
        .map(|r| r.time.clone())
        .expect("records");
    assert_eq!(
        finished, "2026-01-01T00:00:05.000Z",
        "5 s of simulated backoff"
    );
    assert_eq!(replicas(&h.world, "api"), 4);
}

#[test]
fn retries_exhausted_fail_the_step() {
    let text = head(
        "exhausted",
        "    - {id: scale-api, scale: {name: api, replicas: 4}, retries: 1}\n",
    );
    let faults =
        "  faults:\n    - {verb: scale, name: api, error: unavailable, message: apiserver down}\n";
    let h = Test::new().runbook(&text).scenario(faults).run();
    assert_eq!(h.report.outcome, Outcome::RolledBack);
    assert!(
        matches!(status(&h.report, "scale-api"), StepStatus::Failed(e) if e.contains("apiserver down"))
    );
}

const GATED: &str = "    - {id: scale-api, scale: {name: api, replicas: 5}}
    - id: drain
      confirm: Drain node-1?
      drain: {node: node-1}
    - {id: done, notify: finished}
";

#[test]
fn a_refused_gate_stops_the_run_and_undoes_nothing() {
    let h = Test::new()
        .runbook(&head("gated", GATED))
        .answer(Answer::No)
        .run();
    assert_eq!(h.report.outcome, Outcome::Stopped);
    assert_eq!(h.report.exit_code(), 4);
    assert!(
        h.report.message.contains("the answer was no"),
        "{}",
        h.report.message
    );
    assert!(h.report.undos.is_empty());
    assert_eq!(
        replicas(&h.world, "api"),
        5,
        "what was done stays done; the human decides"
    );
    assert_eq!(status(&h.report, "drain"), StepStatus::NotRun);
    let answered = events(&h.collect).iter().any(|r| matches!(&r.event, Event::GateAnswered { answer, by, .. } if answer == "no" && by == "terminal"));
    assert!(answered, "the answer is journaled");
}

#[test]
fn with_no_terminal_and_no_yes_the_run_stops_before_the_gate_and_says_how_to_approve() {
    let h = Test::new()
        .runbook(&head("gated", GATED))
        .answer(Answer::NoTerminal)
        .run();
    assert_eq!(h.report.outcome, Outcome::Stopped);
    assert!(h.report.message.contains("--yes"), "{}", h.report.message);
    let started_drain = events(&h.collect)
        .iter()
        .any(|r| matches!(&r.event, Event::StepStarted { step, .. } if step == "drain"));
    assert!(!started_drain);
    assert!(h
        .world
        .mutations()
        .iter()
        .all(|m| m.verb != "drain" && m.verb != "cordon"));
}

#[test]
fn dry_run_changes_nothing_and_leaves_every_resource_version() {
    let text = head(
        "everything",
        "    - {id: scale-api, scale: {name: api, replicas: 5}}
    - {id: restart-worker, restart: {name: worker}, irreversible: true}
    - {id: patch-api, patch: {kind: Deployment, name: api, patch: {spec: {paused: true}}}}
    - {id: label-api, label: {kind: Deployment, name: api, set: {tier: web}}}
    - {id: cordon, cordon: {node: node-1}}
    - {id: drain, drain: {node: node-1}}
    - id: apply-pdb
      apply:
        manifest: {apiVersion: policy/v1, kind: PodDisruptionBudget, metadata: {name: api, namespace: shop}, spec: {minAvailable: 1}}
    - {id: delete-worker, delete: {kind: Deployment, name: worker}, irreversible: true}
    - {id: rollout, run: [deploy-tool, rollout], irreversible: true}
",
    );
    let before = Test::new().runbook(&text).dry_run().run();
    let initial = runbook_core::sim::parse_scenario(Path::new("t.scenario.yaml"), SCENARIO)
        .expect("scenario");
    let untouched = SimWorld::new(&initial).objects();
    assert_eq!(
        before.report.outcome,
        Outcome::Succeeded,
        "{}",
        before.report.message
    );
    assert!(before.world.mutations().is_empty());
    assert_eq!(
        before.world.objects(),
        untouched,
        "every object, resourceVersion included, is unchanged"
    );
    for step in &before.report.steps {
        assert!(
            matches!(step.status, StepStatus::DryRun(_)),
            "{}: {:?}",
            step.id,
            step.status
        );
    }
    assert!(
        !before
            .world
            .calls()
            .iter()
            .any(|c| c.contains("deploy-tool")),
        "process steps are shown, not run"
    );
    let patch = before
        .report
        .steps
        .iter()
        .find(|s| s.id == "patch-api")
        .expect("patch step");
    assert_eq!(
        patch.status,
        StepStatus::DryRun(
            "server accepted (dry-run): Deployment shop/api: .spec.paused: (none) -> true"
                .to_owned()
        ),
        "a dry-run patch says which fields the server would change"
    );
}

#[test]
fn dry_run_reports_a_step_the_server_would_refuse() {
    let text = head(
        "refused",
        "    - {id: scale-gone, scale: {name: gone, replicas: 1}}\n",
    );
    let h = Test::new().runbook(&text).dry_run().run();
    assert_eq!(h.report.outcome, Outcome::Failed);
    assert_eq!(h.report.exit_code(), 1);
    assert!(h.report.undos.is_empty());
}

#[test]
fn the_intent_is_journaled_before_each_mutation() {
    let dir = tempfile_dir("intent");
    let journal = Arc::new(Journal::create(&dir, "run-1").expect("journal"));
    let text = head("intent", "    - {id: scale-api, scale: {name: api, replicas: 3}}\n    - {id: cordon, cordon: {node: node-1}}\n");
    let h = Test::new().runbook(&text).journal(&journal).run();
    assert_eq!(h.report.outcome, Outcome::Succeeded);
    let records = runbook_core::journal::read(journal.path())
        .expect("read")
        .records;
    let position = |wanted: &dyn Fn(&Event) -> bool| {
        records
            .iter()
            .position(|r| wanted(&r.event))
            .expect("event")
    };
    for step in ["scale-api", "cordon"] {
        let intent = position(&|e| matches!(e, Event::StepIntent { step: s, .. } if s == step));
        let finished = position(&|e| matches!(e, Event::StepFinished { step: s, .. } if s == step));
        assert!(intent < finished);
    }
    let intent = records
        .iter()
        .find_map(|r| match &r.event {
            Event::StepIntent {
                step, undo_state, ..
            } if step == "scale-api" => undo_state.clone(),
            _ => None,
        })
        .expect("undo state captured before acting");
    assert_eq!(intent["kind"], "replicas");
    assert_eq!(intent["previous"], 2);
    assert_eq!(intent["key"]["name"], "api");
    assert!(matches!(
        records.first().map(|r| &r.event),
        Some(Event::RunStarted { .. })
    ));
    assert!(matches!(
        records.last().map(|r| &r.event),
        Some(Event::RunFinished {
            outcome: Outcome::Succeeded,
            exit_code: 0,
            ..
        })
    ));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn secrets_are_redacted_in_the_journal_the_events_and_notifications() {
    let dir = tempfile_dir("secrets");
    let journal = Arc::new(Journal::create(&dir, "run-1").expect("journal"));
    let text = "apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata: {name: secrets}
spec:
  params:
    - {name: api_token, secret: true}
  facts:
    - {name: db.secret, kubernetes: {kind: Secret, name: db, namespace: shop}}
  preconditions:
    - check: db.secret.data.password != \"\"
  steps:
    - {id: rollout, run: [deploy-tool, rollout], irreversible: demo}
    - {id: tell, notify: 'deployed with ${params.api_token}; db pw super-secret-pw'}
";
    let h = Test::new()
        .runbook(text)
        .set("api_token", "tkn-0123456789")
        .journal(&journal)
        .run();
    assert_eq!(h.report.outcome, Outcome::Succeeded, "{}", h.report.message);
    let written = h.everything_written(&journal);
    let sent = &written[2].1;
    for (place, text) in &written {
        for secret in [
            "tkn-0123456789",
            "super-secret-pw",
            "c3VwZXItc2VjcmV0LXB3",
            "abcd1234efgh",
        ] {
            assert!(
                !text.contains(secret),
                "{secret} leaked into the {place}: {text}"
            );
        }
    }
    assert!(sent.contains("<redacted>"), "{sent}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 13: a secret passed to a called runbook's param that is not declared secret was
/// printed and journaled in clear by the called run. Secrecy follows the value: the called
/// run knows the caller's secrets, and a value rendered from a secret (here one changed on
/// the way, so it is not the secret as written) is secret there too.
#[test]
fn a_secret_passed_to_a_called_runbook_stays_secret_whatever_its_param_says() {
    let dir = tempfile_dir("called");
    let journal = Arc::new(Journal::create(&dir, "run-1").expect("journal"));
    let text = "apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata: {name: caller}
spec:
  params:
    - {name: token, secret: true}
  steps:
    - id: deploy
      runbook: {name: deployer, params: {auth: '${params.token}', shout: '${params.token.to_upper()}'}}
---
apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata: {name: deployer}
spec:
  params:
    - {name: auth}
    - {name: shout}
  steps:
    - {id: tell, notify: 'deploying with ${params.auth} (${params.shout})'}
";
    let h = Test::new()
        .runbook(text)
        .set("token", "tkn-Caller-42xy")
        .journal(&journal)
        .run();
    assert_eq!(h.report.outcome, Outcome::Succeeded, "{}", h.report.message);
    let written = h.everything_written(&journal);
    let sent = &written[2].1;
    for (place, text) in &written {
        for secret in ["tkn-Caller-42xy", "TKN-CALLER-42XY"] {
            assert!(
                !text.contains(secret),
                "{secret} leaked into the {place}: {text}"
            );
        }
    }
    assert_eq!(sent, "deploying with <redacted> (<redacted>)");
    let called = events(&h.collect)
        .into_iter()
        .find_map(|record| match record.event {
            Event::RunStarted {
                runbook, params, ..
            } if runbook == "deployer" => Some(params),
            _ => None,
        })
        .expect("the called runbook started");
    assert_eq!(
        called,
        serde_json::json!({"auth": "<redacted>", "shout": "<redacted>"})
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 13: a secret in a `run` step's arguments is in the machine's process list. `env:`
/// passes it in the process's environment instead: the process gets it, and neither the
/// arguments, the journal nor the plan hold it.
#[test]
fn a_run_step_passes_a_secret_in_its_environment_not_its_arguments() {
    let text = "apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata: {name: migrate}
spec:
  params:
    - {name: password, secret: true}
    - {name: host, default: db.shop}
  steps:
    - id: migrate
      run: [deploy-tool, rollout]
      env: {PGPASSWORD: '${params.password}', PGHOST: '${params.host}'}
      irreversible: demo
";
    let h = Test::new()
        .runbook(text)
        .set("password", "pg-s3cret-pw")
        .run();
    assert_eq!(h.report.outcome, Outcome::Succeeded, "{}", h.report.message);
    assert!(
        h.world
            .calls()
            .contains(&"run deploy-tool rollout (env PGHOST, PGPASSWORD)".to_owned()),
        "{:?}",
        h.world.calls()
    );
    assert_eq!(
        h.report.steps[0].summary,
        "run PGHOST=db.shop PGPASSWORD='<secret>' deploy-tool rollout"
    );
    let shown: String = events(&h.collect)
        .iter()
        .map(|r| serde_json::to_string(r).expect("json"))
        .collect();
    assert!(!shown.contains("pg-s3cret-pw"), "{shown}");
    assert!(
        shown.contains(r#""mutation":"run deploy-tool rollout""#),
        "{shown}"
    );
}

/// Issue 13: a secret holding `"` or `\` leaked JSON-escaped in a fact's value, which is shown
/// as JSON.
#[test]
fn a_secret_holding_quotes_and_backslashes_never_leaks_escaped_in_a_fact_value() {
    let text = "apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata: {name: quoting}
spec:
  params:
    - {name: passphrase, secret: true}
  facts:
    - {name: login, expr: '#{user: \"app\", phrase: params.passphrase}'}
  preconditions:
    - check: login.user == \"app\"
  steps:
    - {id: check, verify: 'true'}
";
    let h = Test::new()
        .runbook(text)
        .set("passphrase", r#"Ab"Cd\Ef-9z"#)
        .run();
    assert_eq!(h.report.outcome, Outcome::Succeeded, "{}", h.report.message);
    let records = events(&h.collect);
    let read = records
        .iter()
        .find_map(|record| match &record.event {
            Event::FactRead { fact, value } if fact == "login" => Some(value.clone()),
            _ => None,
        })
        .expect("the fact was read");
    assert_eq!(read, r#"{"phrase":"<redacted>","user":"app"}"#);
    let shown: String = records
        .iter()
        .map(|r| serde_json::to_string(r).expect("json"))
        .collect();
    for piece in ["Ab", "Ef-9z"] {
        assert!(!shown.contains(piece), "{piece} leaked: {shown}");
    }
}

#[test]
fn a_failing_undo_exits_5_and_says_what_a_human_must_fix() {
    let text = format!(
        "{}  rollback: page-oncall\n",
        head("undo-fails", "    - {id: scale-api, scale: {name: api, replicas: 5}}\n    - {id: broken, scale: {name: missing, replicas: 1}}\n")
    );
    let faults = "  faults:\n    - {verb: scale, name: api, error: forbidden, message: RBAC denies scale, after: {step: scale-api}}\n";
    let h = Test::new().runbook(&text).scenario(faults).run();
    assert_eq!(h.report.outcome, Outcome::RollbackFailed);
    assert_eq!(h.report.exit_code(), 5);
    assert!(
        h.report
            .must_fix
            .iter()
            .any(|line| line.contains("undo of step `scale-api` failed")
                && line.contains("RBAC denies scale")),
        "{:?}",
        h.report.must_fix
    );
    assert_eq!(replicas(&h.world, "api"), 5, "the undo really did fail");
    assert_eq!(h.world.notifications().len(), 1, "the rollback still pages");
}

#[test]
fn a_completed_change_without_undo_is_named_for_a_human() {
    let text = head(
        "no-undo",
        "    # runbook:allow missing-undo -- for the test
    - {id: rollout, run: [deploy-tool, rollout]}
    - {id: broken, scale: {name: missing, replicas: 1}}
",
    );
    let h = Test::new().runbook(&text).run();
    assert_eq!(h.report.outcome, Outcome::RolledBack);
    assert!(
        h.report.must_fix.is_empty(),
        "an irreversible step is by design: {:?}",
        h.report.must_fix
    );
    let text = text.replace("    # runbook:allow missing-undo -- for the test\n", "");
    let (_, runbook) = runbook(&text);
    assert!(matches!(
        runbook.steps[0].undo,
        runbook_core::runbook::UndoSpec::Missing
    ));
    let h = Test::new().runbook(&text).run();
    assert!(
        h.report
            .must_fix
            .iter()
            .any(|line| line.contains("step `rollout`") && line.contains("has no undo")),
        "{:?}",
        h.report.must_fix
    );
}

#[test]
fn when_false_skips_the_step_and_the_steps_after_still_run() {
    let text = head("when", "    - {id: maybe, when: 'false', scale: {name: api, replicas: 9}}\n    - {id: next, scale: {name: worker, replicas: 2}}\n");
    let h = Test::new().runbook(&text).run();
    assert_eq!(h.report.outcome, Outcome::Succeeded);
    assert!(matches!(status(&h.report, "maybe"), StepStatus::Skipped(_)));
    assert_eq!(replicas(&h.world, "api"), 2);
    assert_eq!(replicas(&h.world, "worker"), 2);
}

#[test]
fn facts_are_read_once_and_again_after_a_change() {
    let text = "apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata: {name: facts}
spec:
  facts:
    - {name: app.status, exec: {namespace: shop, pod: api-0, command: [app, status]}}
  preconditions:
    - check: app.status.healthy == false
    - check: '!app.status.healthy'
  steps:
    - {id: fix, scale: {name: api, replicas: 3}}
    - verify: app.status.healthy
";
    let h = Test::new().runbook(text).run();
    assert_eq!(h.report.outcome, Outcome::Succeeded, "{}", h.report.message);
    let reads = h
        .world
        .calls()
        .iter()
        .filter(|c| c.contains("app status"))
        .count();
    assert_eq!(
        reads,
        2,
        "once for both preconditions, once more after the change: {:?}",
        h.world.calls()
    );
}

/// Issue 12: a fact that reads itself overflowed the stack at run time. `validate` refuses it
/// now; a runbook that reaches the executor unchecked fails the step that reads it, with the
/// cycle named, instead of recursing.
#[test]
fn facts_that_read_each_other_at_run_time_fail_the_read_naming_the_cycle() {
    let text = |a: &str, b: &str, verify: &str| {
        format!(
            "apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata: {{name: cycle}}
spec:
  facts:
    - {{name: a, expr: '{a}'}}
    - {{name: b, expr: '{b}'}}
  steps:
    - {{id: fix, scale: {{name: api, replicas: 3}}}}
    - {{id: check, needs: [fix], verify: '{verify}', timeout: 5s}}
"
        )
    };
    let (_, reads_a) = runbook(&text("1", "a == 1", "b == true"));
    let b = reads_a.facts["b"].clone();
    let h = Test::new()
        .runbook(&text("b == 1", "1", "a == true"))
        .edit(move |runbook| {
            runbook.facts.insert("b".to_owned(), b);
        })
        .run();
    assert_eq!(
        h.report.outcome,
        Outcome::RolledBack,
        "{}",
        h.report.message
    );
    assert!(
        matches!(status(&h.report, "check"), StepStatus::Failed(e) if e.contains("facts read each other in a cycle: a -> b -> a")),
        "{:?}",
        status(&h.report, "check")
    );
    assert_eq!(
        replicas(&h.world, "api"),
        2,
        "the change before it is undone"
    );
}

#[test]
fn verify_polls_until_true_reading_facts_each_time() {
    let text = "apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata: {name: poll}
spec:
  facts:
    - {name: app.status, exec: {namespace: shop, pod: api-0, command: [app, status]}}
  steps:
    - {id: fix, run: [deploy-tool, rollout], irreversible: demo}
    - {id: check, verify: app.status.healthy, interval: 10s}
";
    let extra = "    - pod: shop/api-0\n      command: [app, status]\n      responses:\n        - stdout: '{\"healthy\": false}'\n        - {after: {calls: 3}, stdout: '{\"healthy\": true}'}\n";
    let scenario = SCENARIO.replace("  exec:\n", &format!("  exec:\n{extra}"));
    let h = Test::new()
        .runbook(text)
        .world(&scenario.replace(
            "    - pod: shop/api-0\n      command: [app, status]\n      responses:\n        - stdout: '{\"healthy\": false}'\n        - after: {step: fix}\n          stdout: '{\"healthy\": true}'\n",
            "",
        ))
        .started_at(SystemTime::UNIX_EPOCH)
        .run_id("t")
        .parallelism(1)
        .yes()
        .run();
    assert_eq!(h.report.outcome, Outcome::Succeeded, "{}", h.report.message);
    let polls: Vec<bool> = events(&h.collect)
        .iter()
        .filter_map(|r| match &r.event {
            Event::VerifyPolled { held, .. } => Some(*held),
            _ => None,
        })
        .collect();
    assert_eq!(polls, [false, false, false, true]);
    assert!(matches!(status(&h.report, "check"), StepStatus::Succeeded));
}

/// Issue 15, item 3: a verify whose `failWhen` holds fails at once with the reason, instead of
/// polling "not yet" until its timeout (a Velero restore that ended `PartiallyFailed` waited
/// its full hour), and the run undoes what it changed.
#[test]
fn a_verify_fails_at_once_when_its_fail_when_holds() {
    let text = "apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata: {name: restore}
spec:
  facts:
    - {name: restore.phase, expr: '\"PartiallyFailed\"'}
  steps:
    - {id: scale-api, scale: {name: api, replicas: 5}}
    - id: check
      needs: [scale-api]
      verify: restore.phase == \"Completed\"
      failWhen: restore.phase == \"PartiallyFailed\" || restore.phase == \"Failed\"
      interval: 10s
      timeout: 1h
";
    let h = Test::new().runbook(text).run();
    assert_eq!(
        h.report.outcome,
        Outcome::RolledBack,
        "{}",
        h.report.message
    );
    assert!(
        matches!(status(&h.report, "check"), StepStatus::Failed(e) if e.contains("`failWhen: restore.phase == \"PartiallyFailed\" || restore.phase == \"Failed\"` held at poll 1")),
        "{:?}",
        status(&h.report, "check")
    );
    let polls = events(&h.collect)
        .iter()
        .filter(|r| matches!(&r.event, Event::VerifyPolled { .. }))
        .count();
    assert_eq!(polls, 1, "no second poll, no hour-long wait");
    assert_eq!(
        replicas(&h.world, "api"),
        2,
        "the change before it is undone"
    );
}

/// Issue 15, item 3: the reason a poll could not be evaluated was visible only at debug level.
/// It is journaled (and shown) with the poll, once per reason: the polls after it that fail the
/// same way carry none.
#[test]
fn a_verify_says_why_a_poll_could_not_be_evaluated_once_per_reason() {
    let text = "apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata: {name: poll}
spec:
  facts:
    - {name: pods, expr: '[]'}
  steps:
    - {id: check, verify: 'pods[0].ready', interval: 10s, timeout: 35s}
";
    let h = Test::new().runbook(text).run();
    assert_eq!(
        status(&h.report, "check"),
        StepStatus::Failed("timed out after 35s".to_owned())
    );
    let errors: Vec<Option<String>> = events(&h.collect)
        .iter()
        .filter_map(|r| match &r.event {
            Event::VerifyPolled { error, .. } => Some(error.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(errors.len(), 4, "{errors:?}");
    assert!(
        errors[0]
            .as_deref()
            .is_some_and(|e| e.contains("out of bounds")),
        "{errors:?}"
    );
    assert!(errors[1..].iter().all(Option::is_none), "{errors:?}");
}

/// Issue 15, item 4: no clock (days-until-expiry took `date +%s` and an RFC 3339 formula pasted
/// five times) and no base64. `now()` is the run's clock (here the paused scenario clock,
/// started at 1,000,000 s), times are seconds, `duration()` and `parse_time()` give numbers that
/// add and compare, `format_time()` prints one; `base64_decode` of a secret stays secret.
#[test]
fn expressions_read_the_runs_clock_and_decode_base64_keeping_secrets() {
    let text = "apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata: {name: clock}
spec:
  facts:
    - {name: cert.not_after, expr: 'parse_time(\"1970-01-13T00:00:00Z\")'}
    - {name: cert.days_left, expr: '(cert.not_after - now()) / duration(\"1d\")'}
    - {name: creds.token, expr: '\"c2VjcmV0LXZhbHVlLTEyMw==\"', secret: true}
  steps:
    - id: check
      verify: 'now() >= 1000000 && now() < 1000060 && cert.days_left == 0 && format_time(now(), \"%Y%m%d-%H%M\") == \"19700112-1346\" && duration(\"90m\") == 5400 && base64_encode(\"ab\") == \"YWI=\"'
    - id: tell
      notify: 'decoded ${base64_decode(creds.token)}'
";
    let h = Test::new()
        .runbook(text)
        .started_at(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000))
        .run();
    assert_eq!(h.report.outcome, Outcome::Succeeded, "{}", h.report.message);
    let sent: Vec<String> = h
        .world
        .notifications()
        .iter()
        .map(|n| n.message.clone())
        .collect();
    assert_eq!(
        sent,
        ["decoded <redacted>"],
        "the decoded secret is redacted"
    );
    let shown: String = events(&h.collect)
        .iter()
        .map(|r| serde_json::to_string(r).expect("json"))
        .collect();
    assert!(!shown.contains("secret-value-123"), "{shown}");
}

fn tempfile_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("runbook-executor-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn interrupted_run(answer: Answer) -> Harness {
    let text = head(
        "interrupt",
        "    - {id: scale-api, scale: {name: api, replicas: 5}}
    - {id: wait-forever, verify: 'false', timeout: 1h}
    - {id: never, scale: {name: worker, replicas: 9}}
",
    );
    Test::new()
        .runbook(&text)
        .answer(answer)
        .started_at(SystemTime::UNIX_EPOCH)
        .run_id("t")
        // Ctrl-C a minute into the verify.
        .ctrl_c_after(Duration::from_secs(60))
        .run()
}

#[test]
fn ctrl_c_stops_scheduling_asks_and_rolls_back_when_told_to() {
    let h = interrupted_run(Answer::Yes);
    assert_eq!(h.report.outcome, Outcome::Stopped, "{}", h.report.message);
    assert_eq!(h.report.exit_code(), 4);
    assert_eq!(
        status(&h.report, "never"),
        StepStatus::NotRun,
        "nothing new starts"
    );
    assert!(
        matches!(status(&h.report, "wait-forever"), StepStatus::Failed(e) if e == "interrupted")
    );
    assert_eq!(
        h.report
            .undos
            .iter()
            .map(|u| u.step.as_str())
            .collect::<Vec<_>>(),
        ["scale-api"]
    );
    assert_eq!(replicas(&h.world, "api"), 2);
    let choice = events(&h.collect).iter().find_map(|r| match &r.event {
        Event::Interrupted { roll_back, .. } => Some(*roll_back),
        _ => None,
    });
    assert_eq!(choice, Some(true), "the choice is journaled");
}

#[test]
fn ctrl_c_without_rollback_leaves_completed_steps_and_says_so() {
    let h = interrupted_run(Answer::No);
    assert_eq!(h.report.outcome, Outcome::Stopped);
    assert!(h.report.undos.is_empty());
    assert_eq!(replicas(&h.world, "api"), 5);
    assert!(
        h.report.message.contains("nothing was undone"),
        "{}",
        h.report.message
    );
    let choice = events(&h.collect).iter().find_map(|r| match &r.event {
        Event::Interrupted { roll_back, .. } => Some(*roll_back),
        _ => None,
    });
    assert_eq!(choice, Some(false));
}

/// Issue 13: `--yes` answers gates, and an interrupt is another decision. A run with `--yes`
/// whose gates were all approved still asks the human at the terminal, and one who says no
/// gets nothing undone and nobody paged.
#[test]
fn ctrl_c_with_yes_asks_rather_than_rolling_back() {
    let text = head(
        "interrupt",
        "    - {id: scale-api, confirm: Scale?, scale: {name: api, replicas: 5}}
    - {id: wait-forever, verify: 'false', timeout: 1h}
  rollback: page-oncall
",
    );
    let h = Test::new()
        .runbook(&text)
        .yes()
        .answer(Answer::No)
        .started_at(SystemTime::UNIX_EPOCH)
        .run_id("t")
        .ctrl_c_after(Duration::from_secs(60))
        .run();
    assert_eq!(h.report.outcome, Outcome::Stopped, "{}", h.report.message);
    assert!(h.report.undos.is_empty());
    assert!(h.report.rollback.is_none(), "nobody is paged");
    assert_eq!(replicas(&h.world, "api"), 5);
    assert_eq!(
        interrupted_by(&h.collect),
        Some((false, "terminal".to_owned()))
    );
}

/// Issue 13: SIGTERM is an interrupt nobody stands behind. It cancels the step in flight and
/// stops the run resumable, undoing nothing, without asking (the prompter would say yes).
#[test]
fn a_termination_stops_resumable_without_asking() {
    let text = head(
        "terminate",
        "    - {id: scale-api, scale: {name: api, replicas: 5}}
    - {id: wait-forever, verify: 'false', timeout: 1h}
    - {id: never, scale: {name: worker, replicas: 9}}
  rollback: page-oncall
",
    );
    let h = Test::new()
        .runbook(&text)
        .answer(Answer::Yes)
        .started_at(SystemTime::UNIX_EPOCH)
        .run_id("t")
        .terminate_after(Duration::from_secs(60))
        .run();
    assert_eq!(h.report.outcome, Outcome::Stopped, "{}", h.report.message);
    assert_eq!(h.report.exit_code(), 4);
    assert!(
        matches!(status(&h.report, "wait-forever"), StepStatus::Failed(e) if e == "interrupted")
    );
    assert_eq!(status(&h.report, "never"), StepStatus::NotRun);
    assert!(h.report.undos.is_empty());
    assert!(h.report.rollback.is_none());
    assert_eq!(replicas(&h.world, "api"), 5, "nothing is undone");
    assert_eq!(
        interrupted_by(&h.collect),
        Some((false, "SIGTERM (nobody to ask: nothing undone)".to_owned()))
    );
    assert!(
        h.report.message.contains("interrupted by SIGTERM")
            && h.report
                .message
                .contains("`runbook resume t` goes on from here"),
        "{}",
        h.report.message
    );
}

/// `--rollback-on-interrupt` decides in advance: a termination undoes the completed steps and
/// rolls back, and so does a Ctrl-C, without asking (the prompter would say no).
#[test]
fn rollback_on_interrupt_undoes_and_rolls_back_without_asking() {
    let text = head(
        "terminate",
        "    - {id: scale-api, scale: {name: api, replicas: 5}}
    - {id: wait-forever, verify: 'false', timeout: 1h}
  rollback: notify-oncall
",
    );
    for terminate in [true, false] {
        let test = Test::new()
            .runbook(&text)
            .answer(Answer::No)
            .roll_back_on_interrupt()
            .started_at(SystemTime::UNIX_EPOCH)
            .run_id("t");
        let h = if terminate {
            test.terminate_after(Duration::from_secs(60))
        } else {
            test.ctrl_c_after(Duration::from_secs(60))
        }
        .run();
        assert_eq!(h.report.outcome, Outcome::Stopped, "{}", h.report.message);
        assert_eq!(replicas(&h.world, "api"), 2, "scale-api was undone");
        assert!(matches!(h.report.rollback, Some(Ok(()))));
        assert_eq!(
            interrupted_by(&h.collect),
            Some((true, "--rollback-on-interrupt".to_owned()))
        );
        let by = if terminate { "SIGTERM" } else { "Ctrl-C" };
        assert!(
            h.report.message.contains(&format!("interrupted by {by}")),
            "{}",
            h.report.message
        );
    }
}

#[test]
fn wait_follows_the_object_until_its_condition_or_expression_holds() {
    let text = head(
        "waits",
        "    - {id: scale-api, scale: {name: api, replicas: 4}}
    - {id: ready, wait: {kind: Deployment, name: api, until: 'object.status.readyReplicas == 4'}}
    - {id: available, wait: {kind: Deployment, name: api, condition: Available}}
",
    );
    let h = Test::new().runbook(&text).run();
    assert_eq!(h.report.outcome, Outcome::Succeeded, "{}", h.report.message);
    assert_eq!(status(&h.report, "ready"), StepStatus::Succeeded);
    assert_eq!(status(&h.report, "available"), StepStatus::Succeeded);
}

#[test]
fn a_wait_that_never_holds_times_out_and_the_run_rolls_back() {
    let text = head(
        "stuck",
        "    - {id: scale-worker, scale: {name: worker, replicas: 3}}
    - {id: ready, wait: {kind: Deployment, name: worker, until: 'object.status.readyReplicas == 3'}, timeout: 3m}
",
    );
    let stuck = SCENARIO.replace(
        "      metadata: {name: worker, namespace: shop}",
        "      metadata: {name: worker, namespace: shop, annotations: {sim.runbook.dev/stuck: \"true\"}}",
    );
    let Harness { report, world, .. } = Test::new()
        .runbook(&text)
        .world(&stuck)
        .started_at(SystemTime::UNIX_EPOCH)
        .run_id("t")
        .parallelism(1)
        .yes()
        .run();
    assert_eq!(report.outcome, Outcome::RolledBack, "{}", report.message);
    let ready = status(&report, "ready");
    assert!(
        matches!(&ready, StepStatus::Failed(e) if e == "timed out after 3m"),
        "{ready:?}"
    );
    assert_eq!(replicas(&world, "worker"), 1, "the scale was undone");
}

// Regression tests from the executor safety review.

#[test]
fn a_failure_while_a_gate_stops_the_run_still_undoes_and_rolls_back() {
    let text = format!(
        "{}  rollback: page-oncall\n",
        head(
            "gate-and-failure",
            "    - {id: c, scale: {name: api, replicas: 5}}
    - {id: f, needs: [c], scale: {name: missing, replicas: 1}}
    - {id: g, needs: [c], confirm: Go on?, scale: {name: worker, replicas: 2}}
",
        )
    );
    let h = Test::new().runbook(&text).answer(Answer::NoTerminal).run();
    assert_eq!(
        h.report.outcome,
        Outcome::RolledBack,
        "{}",
        h.report.message
    );
    assert_eq!(replicas(&h.world, "api"), 2, "the completed step is undone");
    assert_eq!(h.world.notifications().len(), 1, "and on-call is paged");
}

#[test]
fn a_gated_step_that_when_skips_asks_nobody() {
    let text = head("gate-when", "    - {id: big, when: 'false', confirm: Really?, scale: {name: api, replicas: 9}}\n    - {id: after, scale: {name: worker, replicas: 2}}\n");
    let h = Test::new().runbook(&text).answer(Answer::NoTerminal).run();
    assert_eq!(h.report.outcome, Outcome::Succeeded, "{}", h.report.message);
    assert!(matches!(status(&h.report, "big"), StepStatus::Skipped(_)));
    assert!(!events(&h.collect)
        .iter()
        .any(|r| matches!(r.event, Event::GateAnswered { .. })));
}

#[test]
fn undo_state_keeps_values_under_credential_named_keys_and_secrets_never_leak() {
    let dir = tempfile_dir("undo-redaction");
    let journal = Arc::new(Journal::create(&dir, "run-1").expect("journal"));
    let text = "apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata: {name: cm}
spec:
  params:
    - {name: pw, secret: true}
  steps:
    - {id: set, patch: {kind: ConfigMap, name: settings, patch: {data: {token: rotated}}}}
    - {id: boom, run: [fail-tool], irreversible: demo}
";
    let extra = "    - {apiVersion: v1, kind: ConfigMap, metadata: {name: settings, namespace: shop}, data: {token: previous-value}}\n";
    let scenario_extra = "  commands:\n    - argv: [fail-tool]\n      responses: [{exitCode: 1, stderr: 'auth failed for Hu\"nt\\er2: Authorization: Bearer abcdefgh12345678xyz'}]\n".to_owned();
    let scenario = SCENARIO
        .replace("  exec:\n", &format!("    {}  exec:\n", extra.trim_start()))
        .replace(
            "  commands:\n    - argv: [deploy-tool, rollout]",
            &format!(
                "{}    - argv: [deploy-tool, rollout]",
                scenario_extra.trim_end_matches('\n').to_owned() + "\n"
            ),
        );
    let Harness { report, .. } = Test::new()
        .runbook(text)
        .world(&scenario)
        .set("pw", "Hu\"nt\\er2")
        .journal(&journal)
        .started_at(SystemTime::UNIX_EPOCH)
        .run_id("run-1")
        .parallelism(1)
        .yes()
        .run();
    assert_eq!(report.outcome, Outcome::RolledBack, "{}", report.message);
    let records = runbook_core::journal::read(journal.path())
        .expect("journal")
        .records;
    let undo_state = records
        .iter()
        .find_map(|r| match &r.event {
            Event::StepIntent {
                step, undo_state, ..
            } if step == "set" => undo_state.clone(),
            _ => None,
        })
        .expect("undo state");
    assert_eq!(
        undo_state["inverse"]["data"]["token"], "previous-value",
        "the value to restore is kept: {undo_state}"
    );
    let written = std::fs::read_to_string(journal.path()).expect("journal text");
    let summary = format!("{:?}", report);
    for (place, text) in [("journal", &written), ("report", &summary)] {
        assert!(
            !text.contains("abcdefgh12345678xyz"),
            "bearer token leaked into the {place}"
        );
        assert!(
            !text.contains("nt\\\\er2") && !text.contains("Hu\\\"nt"),
            "a secret with quotes leaked into the {place}: {text}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_drain_that_fails_midway_is_undone_because_it_cordoned() {
    let text = format!(
        "{}  rollback: notify-oncall\n",
        head("drain", "    - {id: drain, drain: {node: node-1}}\n")
    );
    let pdb = "    - {apiVersion: policy/v1, kind: PodDisruptionBudget, metadata: {name: api, namespace: shop}, spec: {selector: {matchLabels: {app: api}}}, status: {disruptionsAllowed: 0}}\n";
    let scenario = SCENARIO.replace("  exec:\n", &format!("{pdb}  exec:\n"));
    let Harness { report, world, .. } = Test::new()
        .runbook(&text)
        .world(&scenario)
        .started_at(SystemTime::UNIX_EPOCH)
        .run_id("t")
        .parallelism(1)
        .yes()
        .run();
    assert_eq!(report.outcome, Outcome::RolledBack, "{}", report.message);
    let node = world
        .object(&ObjectKey {
            api_version: "v1".to_owned(),
            kind: "Node".to_owned(),
            namespace: None,
            name: "node-1".to_owned(),
        })
        .expect("node");
    assert_ne!(
        node.pointer("/spec/unschedulable"),
        Some(&serde_json::json!(true)),
        "the cordon the failed drain left is undone: {node}"
    );
}

#[test]
fn resume_with_a_skipped_dependency_never_reruns_a_done_step() {
    let text = head("resume-skip", "    - {id: s, when: 'false', scale: {name: worker, replicas: 7}}\n    - {id: c, needs: [s], scale: {name: api, replicas: 4}}\n    - {id: d, needs: [c], scale: {name: worker, replicas: 3}}\n");
    let Harness {
        report,
        world,
        collect,
        ..
    } = Test::new()
        .runbook(&text)
        .resume(Resume {
            completed: vec![("c".to_owned(), None)],
            skipped: vec!["s".to_owned()],
            undone: Vec::new(),
            roll_back: false,
            ..Resume::default()
        })
        .started_at(SystemTime::UNIX_EPOCH)
        .run_id("t")
        .parallelism(2)
        .yes()
        .run();
    assert_eq!(report.outcome, Outcome::Succeeded, "{}", report.message);
    let started: Vec<String> = events(&collect)
        .iter()
        .filter_map(|r| match &r.event {
            Event::StepStarted { step, .. } => Some(step.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(started, ["d"]);
    assert_eq!(replicas(&world, "api"), 2, "c was not run again here");
}

/// A prompter that does something to the run's interrupt when asked, then answers.
struct Meddler {
    interrupt: Arc<runbook_core::exec::Interrupt>,
    drain: bool,
    answer: Answer,
}

#[async_trait::async_trait]
impl runbook_core::effects::Prompter for Meddler {
    async fn confirm(&self, _step: &str, _question: &str, _detail: &str) -> Answer {
        if self.drain {
            self.interrupt.drain("test shutdown");
        } else {
            self.interrupt.raise();
        }
        self.answer
    }

    fn pauses(&self, _step: &str) -> bool {
        self.drain
    }
}

fn interrupted_by(collect: &Collect) -> Option<(bool, String)> {
    events(collect).iter().find_map(|r| match &r.event {
        Event::Interrupted { roll_back, by } => Some((*roll_back, by.clone())),
        _ => None,
    })
}

#[test]
fn a_drain_lets_the_step_in_flight_finish_starts_no_other_and_undoes_nothing() {
    let text = head(
        "drain",
        "    - {id: scale-api, scale: {name: api, replicas: 5}}
    - {id: check, verify: app.status.healthy, interval: 10s, timeout: 10m}
    - {id: never, scale: {name: worker, replicas: 9}}
  facts:
    - {name: app.status, exec: {namespace: shop, pod: api-0, command: [app, status]}}
",
    );
    // Healthy from the fourth poll on (30 s in); the drain comes 15 s in.
    let h = Test::new()
        .runbook(&text)
        .world(&SCENARIO.replace("after: {step: fix}", "after: {calls: 3}"))
        .started_at(SystemTime::UNIX_EPOCH)
        .run_id("t")
        .drain_after(Duration::from_secs(15))
        .run();
    assert_eq!(h.report.outcome, Outcome::Stopped, "{}", h.report.message);
    assert_eq!(status(&h.report, "check"), StepStatus::Succeeded);
    assert_eq!(status(&h.report, "never"), StepStatus::NotRun);
    assert!(h.report.undos.is_empty());
    assert_eq!(replicas(&h.world, "api"), 5, "nothing is undone");
    assert_eq!(replicas(&h.world, "worker"), 1);
    assert_eq!(
        interrupted_by(&h.collect),
        Some((false, "test shutdown".to_owned()))
    );
    assert!(
        h.report.message.contains("runbook resume t"),
        "{}",
        h.report.message
    );
}

#[test]
fn a_drain_at_a_gate_leaves_it_unanswered_and_the_run_paused() {
    let text = head(
        "gate-drain",
        "    - {id: scale-api, scale: {name: api, replicas: 5}}
    - {id: scale-worker, confirm: Scale the workers?, scale: {name: worker, replicas: 9}}
",
    );
    let h = Test::new()
        .runbook(&text)
        .meddler(true, Answer::Paused)
        .started_at(SystemTime::UNIX_EPOCH)
        .run_id("t")
        .run();
    assert_eq!(h.report.outcome, Outcome::Stopped, "{}", h.report.message);
    assert_eq!(status(&h.report, "scale-worker"), StepStatus::NotRun);
    assert_eq!(replicas(&h.world, "api"), 5);
    assert_eq!(replicas(&h.world, "worker"), 1);
    let records = events(&h.collect);
    assert!(records
        .iter()
        .any(|r| matches!(&r.event, Event::GatePaused { step, .. } if step == "scale-worker")));
    assert!(!records
        .iter()
        .any(|r| matches!(r.event, Event::GateAnswered { .. })));
    assert_eq!(
        interrupted_by(&h.collect),
        Some((false, "test shutdown".to_owned()))
    );
}

#[test]
fn ctrl_c_at_a_gate_stops_the_run_instead_of_calling_it_a_success() {
    let text = head(
        "gate-ctrl-c",
        "    - {id: scale-api, scale: {name: api, replicas: 5}}
    - {id: scale-worker, confirm: Scale the workers?, scale: {name: worker, replicas: 9}}
",
    );
    let h = Test::new()
        .runbook(&text)
        // Ctrl-C while the question was on screen, then `y`.
        .meddler(false, Answer::Yes)
        .started_at(SystemTime::UNIX_EPOCH)
        .run_id("t")
        .run();
    assert_eq!(h.report.outcome, Outcome::Stopped, "{}", h.report.message);
    assert_eq!(status(&h.report, "scale-worker"), StepStatus::NotRun);
    assert_eq!(replicas(&h.world, "worker"), 1);
}

#[test]
fn a_scenario_change_happens_once_its_step_has_run_and_is_not_a_mutation() {
    let text = head(
        "controller",
        "    - {id: reconcile, annotate: {kind: Deployment, name: worker, set: {reconcile.example/requestedAt: now}}}
    - {id: ready, verify: worker.status.ready == true, timeout: 1m}
  facts:
    - {name: worker.status, kubernetes: {kind: Deployment, name: worker}, jsonpath: '{.status}'}
",
    );
    let changes = "  changes:
    - after: {step: reconcile}
      object:
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: worker, namespace: shop}
        status: {ready: true}
    - after: {step: reconcile}
      delete: true
      object: {apiVersion: v1, kind: Secret, metadata: {name: db, namespace: shop}}
";
    let before = Test::new()
        .runbook(&text.replace("{id: reconcile, annotate", "{id: other, annotate"))
        .scenario(changes)
        .run();
    assert_eq!(
        before.report.outcome,
        Outcome::RolledBack,
        "nothing changes before its step"
    );
    let h = Test::new().runbook(&text).scenario(changes).run();
    assert_eq!(h.report.outcome, Outcome::Succeeded, "{}", h.report.message);
    let mutations: Vec<String> = h
        .world
        .mutations()
        .iter()
        .map(|m| format!("{} {}", m.verb, m.target))
        .collect();
    assert_eq!(
        mutations,
        ["patch Deployment shop/worker"],
        "the controller's changes are not the run's"
    );
    let secret = ObjectKey {
        api_version: "v1".into(),
        kind: "Secret".into(),
        namespace: Some("shop".into()),
        name: "db".into(),
    };
    assert!(h.world.object(&secret).is_none(), "deleted by the change");
}

const API_LOGS: &str = r#"  logs:
    - pod: shop/api-0
      container: server
      responses:
        - text: "panic: an old one\nrecovered\nserving\n"
    - pod: shop/api-1
      responses:
        - text: "starting\npanic: assignment to entry in nil map\n"
    - pod: shop/events-0
      responses:
        - text: "{\"level\": \"info\", \"msg\": \"up\"}\n\n{\"level\": \"error\", \"msg\": \"db down\"}\n"
    - pod: shop/plain-0
      responses:
        - text: "not json\n"
    - pod: shop/vault-0
      responses:
        - text: "unsealing\nunsealed with key Zm9vYmFyYmF6cXV4\n"
    - pod: shop/issuer-0
      responses:
        - text: "token=abcd1234efgh issued\n"
"#;

#[test]
fn a_logs_fact_gates_the_run_on_the_last_lines_of_the_log() {
    let text = "apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata: {name: logs}
spec:
  params:
    - {name: pod, default: api-0}
  facts:
    - name: api.log
      logs: {namespace: shop, pod: '${params.pod}', container: server, tail: 2}
  preconditions:
    - check: '!api.log.contains(\"panic\")'
      message: the api is panicking
  steps:
    - {id: fix, scale: {name: api, replicas: 3}}
";
    let h = Test::new().runbook(text).scenario(API_LOGS).run();
    assert_eq!(h.report.outcome, Outcome::Succeeded, "{}", h.report.message);
    assert_eq!(replicas(&h.world, "api"), 3);
    assert!(
        h.world
            .calls()
            .contains(&"logs shop/api-0 -c server --tail 2".to_owned()),
        "the panic is older than the last two lines: {:?}",
        h.world.calls()
    );

    let h = Test::new()
        .runbook(text)
        .scenario(API_LOGS)
        .set("pod", "api-1")
        .run();
    assert_eq!(h.report.outcome, Outcome::PreconditionFailed);
    assert_eq!(h.report.exit_code(), 3);
    assert!(
        h.report.message.contains("the api is panicking"),
        "{}",
        h.report.message
    );
    assert_eq!(replicas(&h.world, "api"), 2, "nothing was changed");
}

#[test]
fn log_formats_give_lines_or_one_json_value_a_line() {
    let text = "apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata: {name: formats}
spec:
  facts:
    - {name: events.lines, logs: {namespace: shop, pod: events-0, format: lines}}
    - {name: events.parsed, logs: {namespace: shop, pod: events-0, format: json}}
    - {name: events.text, logs: {namespace: shop, pod: events-0}}
  preconditions:
    - check: events.lines.len() == 3 && events.lines[1] == \"\"
    - check: events.parsed.len() == 2 && events.parsed[1].level == \"error\"
    - check: events.text.ends_with(\"db down\\\"}\")
  steps:
    - {verify: 'true'}
";
    let h = Test::new().runbook(text).scenario(API_LOGS).run();
    assert_eq!(h.report.outcome, Outcome::Succeeded, "{}", h.report.message);

    let plain = text.replace("pod: events-0, format: json", "pod: plain-0, format: json");
    let h = Test::new().runbook(&plain).scenario(API_LOGS).run();
    assert_eq!(h.report.outcome, Outcome::PreconditionFailed);
    assert!(
        h.report
            .message
            .contains("fact `events.parsed`: line 1 of the log is not JSON"),
        "{}",
        h.report.message
    );
}

#[test]
fn a_log_that_cannot_be_read_fails_its_check_and_says_what_to_script() {
    let text = "apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata: {name: missing}
spec:
  facts:
    - {name: api.log, logs: {namespace: shop, pod: api-7}}
  preconditions:
    - check: '!api.log.contains(\"panic\")'
  steps:
    - {id: fix, scale: {name: api, replicas: 3}}
";
    let h = Test::new().runbook(text).scenario(API_LOGS).run();
    assert_eq!(h.report.outcome, Outcome::PreconditionFailed);
    assert!(
        h.report.message.contains("fact `api.log`: not found:")
            && h.report.message.contains("spec.logs: {pod: shop/api-7"),
        "{}",
        h.report.message
    );
    assert_eq!(replicas(&h.world, "api"), 2);
    let failed = events(&h.collect)
        .iter()
        .any(|r| matches!(&r.event, Event::FactFailed { fact, .. } if fact == "api.log"));
    assert!(failed, "the failed read is journaled");
}

#[test]
fn a_secret_log_and_credentials_in_a_log_never_reach_the_journal_or_a_notification() {
    let text = "apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata: {name: secret-log}
spec:
  facts:
    - {name: vault.log, logs: {namespace: shop, pod: vault-0}, secret: true}
    - {name: vault.lines, logs: {namespace: shop, pod: vault-0, format: lines}, secret: true}
    - {name: issuer.log, logs: {namespace: shop, pod: issuer-0}}
  preconditions:
    - check: vault.log.contains(\"unsealed\") && vault.lines.len() == 2
    - check: issuer.log.ends_with(\"issued\")
  steps:
    - {id: tell, notify: 'log was ${vault.lines[1]}; ${issuer.log}'}
";
    let h = Test::new().runbook(text).scenario(API_LOGS).run();
    assert_eq!(h.report.outcome, Outcome::Succeeded, "{}", h.report.message);
    let shown: String = events(&h.collect)
        .iter()
        .map(|r| serde_json::to_string(r).expect("json"))
        .collect();
    let sent: String = h
        .world
        .notifications()
        .iter()
        .map(|n| n.message.clone())
        .collect();
    for (place, text) in [("events", &shown), ("notifications", &sent)] {
        for secret in ["Zm9vYmFyYmF6cXV4", "abcd1234efgh"] {
            assert!(
                !text.contains(secret),
                "{secret} leaked into the {place}: {text}"
            );
        }
    }
    assert!(sent.contains("<redacted>"), "{sent}");
}

/// Issue 15, item 9: a map reaches a message in one form, whether a template prints it or an
/// expression adds it to a string.
#[test]
fn a_map_in_a_message_is_json_whether_templated_or_concatenated() {
    let text = r#"apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata: {name: labels}
spec:
  facts:
    - {name: api.labels, expr: '#{app: "api", tier: "web"}'}
  steps:
    - id: tell
      notify: 'templated ${api.labels}; added ${"labels " + api.labels}; interpolated ${`${api.labels}`}'
"#;
    let h = Test::new().runbook(text).run();
    assert_eq!(h.report.outcome, Outcome::Succeeded, "{}", h.report.message);
    let json = r#"{"app":"api","tier":"web"}"#;
    let sent: Vec<String> = h
        .world
        .notifications()
        .iter()
        .map(|n| n.message.clone())
        .collect();
    assert_eq!(
        sent,
        [format!(
            "templated {json}; added labels {json}; interpolated {json}"
        )]
    );
}

/// The shop scenario with a selector on Deployment `api` and pods for it in every state
/// `kubectl logs deployment/api` tells apart, with their logs (issue 15, item 9).
fn shop_with_api_pods() -> String {
    let pods = r#"    - apiVersion: v1
      kind: Pod
      metadata: {name: api-1, namespace: shop, labels: {app: api}}
      spec: {nodeName: node-1, containers: [{name: server}]}
      status:
        phase: Running
        conditions: [{type: Ready, status: "True", lastTransitionTime: "2026-01-01T01:00:00Z"}]
    - apiVersion: v1
      kind: Pod
      metadata: {name: api-2, namespace: shop, labels: {app: api}}
      spec: {nodeName: node-1, containers: [{name: server}]}
      status:
        phase: Running
        conditions: [{type: Ready, status: "True", lastTransitionTime: "2026-01-01T02:00:00Z"}]
    - apiVersion: v1
      kind: Pod
      metadata: {name: web-0, namespace: shop, labels: {app: web}}
      spec: {nodeName: node-1}
      status:
        phase: Running
        conditions: [{type: Ready, status: "True", lastTransitionTime: "2025-01-01T00:00:00Z"}]
"#;
    let logs = r#"  logs:
    - pod: shop/api-1
      responses:
        - text: "starting\nserving\n"
          previous: "starting\npanic: nil map\n"
    - pod: shop/api-2
      responses:
        - text: "serving\n"
"#;
    let scenario = SCENARIO
        .replace(
            "metadata: {name: api, namespace: shop}\n      spec: {replicas: 2}",
            "metadata: {name: api, namespace: shop}\n      spec: {replicas: 2, selector: {matchLabels: {app: api}}}",
        )
        .replace("  exec:\n", &format!("{pods}  exec:\n"));
    format!("{scenario}{logs}")
}

#[test]
fn a_deployments_log_is_read_from_the_pod_kubectl_picks_and_previous_reads_the_crash() {
    let text = "apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata: {name: crash}
spec:
  facts:
    - name: api.crash
      logs: {namespace: shop, deployment: api, previous: true, tail: 1}
    - name: api.now
      logs: {namespace: shop, deployment: api}
  preconditions:
    - check: 'api.crash == \"panic: nil map\" && api.now.ends_with(\"serving\")'
      message: the crash is not the one expected
  steps:
    - {id: fix, scale: {name: api, replicas: 3}}
";
    let h = Test::new().runbook(text).world(&shop_with_api_pods()).run();
    assert_eq!(h.report.outcome, Outcome::Succeeded, "{}", h.report.message);
    let logs: Vec<String> = h
        .world
        .calls()
        .into_iter()
        .filter(|call| call.starts_with("logs "))
        .collect();
    // api-1 has been ready the longest; api-0 is not ready and web-0 is not selected.
    assert_eq!(
        logs,
        ["logs shop/api-1 --previous --tail 1", "logs shop/api-1"]
    );

    let never_restarted = text.replace("deployment: api, previous", "pod: api-2, previous");
    let h = Test::new()
        .runbook(&never_restarted)
        .world(&shop_with_api_pods())
        .run();
    assert_eq!(h.report.outcome, Outcome::PreconditionFailed);
    assert!(
        h.report
            .message
            .contains(r#"previous terminated container "server" in pod "api-2" not found"#),
        "{}",
        h.report.message
    );

    let no_selector = text.replace("deployment: api, previous", "deployment: worker, previous");
    let h = Test::new()
        .runbook(&no_selector)
        .world(&shop_with_api_pods())
        .run();
    assert_eq!(h.report.outcome, Outcome::PreconditionFailed);
    assert!(
        h.report.message.contains(
            "no pod of deployment shop/worker to read the log of: it has no spec.selector"
        ),
        "{}",
        h.report.message
    );
    assert_eq!(replicas(&h.world, "api"), 2, "nothing was changed");
}

#[test]
fn a_manifest_without_a_namespace_is_applied_and_undone_in_the_runs_namespace() {
    let text = head(
        "apply-here",
        "    - id: apply-config
      apply:
        manifest: {apiVersion: v1, kind: ConfigMap, metadata: {name: flags}, data: {mode: safe}}
    - {id: check, verify: 'false', timeout: 1s}
",
    );
    let h = Test::new().runbook(&text).run();
    assert_eq!(
        h.report.outcome,
        Outcome::RolledBack,
        "{}",
        h.report.message
    );
    let targets: Vec<(String, String)> = h
        .world
        .mutations()
        .iter()
        .map(|m| (m.verb.clone(), m.target.clone()))
        .collect();
    assert_eq!(
        targets,
        [
            ("apply".to_owned(), "ConfigMap shop/flags".to_owned()),
            ("delete".to_owned(), "ConfigMap shop/flags".to_owned()),
        ],
        "created where the run's reads and undo look (namespace shop), then undone there"
    );
    assert!(
        !h.world
            .objects()
            .iter()
            .any(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == "flags"),
        "nothing left behind in any namespace"
    );
}

/// The simulated cluster, with every get and patch of a Deployment written down in order.
struct Recording {
    inner: Arc<SimWorld>,
    calls: std::sync::Mutex<Vec<String>>,
    /// Scaling this Deployment panics.
    panic_on_scale: Option<String>,
}

impl Recording {
    fn note(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }
}

#[async_trait::async_trait]
impl runbook_core::effects::Cluster for Recording {
    async fn get(&self, key: &ObjectKey) -> runbook_core::effects::EffectResult<serde_json::Value> {
        if key.kind == "Deployment" {
            self.note(format!("get {}", key.name));
        }
        self.inner.get(key).await
    }
    async fn list(
        &self,
        query: &runbook_core::effects::ListQuery,
    ) -> runbook_core::effects::EffectResult<serde_json::Value> {
        self.inner.list(query).await
    }
    async fn scale(
        &self,
        key: &ObjectKey,
        replicas: i64,
        dry_run: runbook_core::effects::DryRun,
    ) -> runbook_core::effects::EffectResult<serde_json::Value> {
        if self.panic_on_scale.as_deref() == Some(key.name.as_str()) {
            panic!("test: scaling {} panics", key.name);
        }
        self.inner.scale(key, replicas, dry_run).await
    }
    async fn restart(
        &self,
        key: &ObjectKey,
        at: SystemTime,
        dry_run: runbook_core::effects::DryRun,
    ) -> runbook_core::effects::EffectResult<serde_json::Value> {
        self.inner.restart(key, at, dry_run).await
    }
    async fn patch(
        &self,
        key: &ObjectKey,
        patch_type: runbook_core::document::PatchType,
        body: &serde_json::Value,
        dry_run: runbook_core::effects::DryRun,
    ) -> runbook_core::effects::EffectResult<serde_json::Value> {
        let result = self.inner.patch(key, patch_type, body, dry_run).await;
        self.note(format!(
            "patch {} {body}{}",
            key.name,
            if result.is_err() { " -> refused" } else { "" }
        ));
        result
    }
    async fn apply(
        &self,
        manifest: &serde_json::Value,
        dry_run: runbook_core::effects::DryRun,
    ) -> runbook_core::effects::EffectResult<serde_json::Value> {
        self.inner.apply(manifest, dry_run).await
    }
    async fn delete(
        &self,
        key: &ObjectKey,
        propagation: Option<runbook_core::document::Propagation>,
        grace_period_seconds: Option<u32>,
        dry_run: runbook_core::effects::DryRun,
    ) -> runbook_core::effects::EffectResult<()> {
        self.inner
            .delete(key, propagation, grace_period_seconds, dry_run)
            .await
    }
    async fn set_unschedulable(
        &self,
        node: &str,
        unschedulable: bool,
        dry_run: runbook_core::effects::DryRun,
    ) -> runbook_core::effects::EffectResult<serde_json::Value> {
        self.inner
            .set_unschedulable(node, unschedulable, dry_run)
            .await
    }
    async fn drain(
        &self,
        node: &str,
        options: &runbook_core::effects::DrainOptions,
        dry_run: runbook_core::effects::DryRun,
    ) -> runbook_core::effects::EffectResult<runbook_core::effects::DrainReport> {
        self.inner.drain(node, options, dry_run).await
    }
    async fn exec(
        &self,
        pod: &runbook_core::effects::PodRef,
        argv: &[String],
        timeout: Duration,
    ) -> runbook_core::effects::EffectResult<runbook_core::effects::CommandOutput> {
        self.inner.exec(pod, argv, timeout).await
    }
}

/// Runs `text` against the scenario plus `extra`, recording the Deployment gets and patches.
fn run_recording(text: &str, extra: &str) -> (RunReport, Arc<SimWorld>, Vec<String>, Vec<Record>) {
    let h = Test::new()
        .runbook(text)
        .scenario(extra)
        .record_deployments()
        .started_at(SystemTime::UNIX_EPOCH)
        .parallelism(1)
        .run();
    let records = events(&h.collect);
    (h.report, h.world, h.calls, records)
}

const THREE_PATCHES: &str = "    - {id: pause, patch: {kind: Deployment, name: api, patch: {spec: {paused: true}}}}
    - {id: note, patch: {kind: Deployment, name: api, patch: {metadata: {annotations: {why: incident}}}}}
    - {id: more, patch: {kind: Deployment, name: api, patch: {spec: {replicas: 7}}}}
    - {id: check, verify: 'false', timeout: 1s}
";

#[test]
fn consecutive_patches_of_one_object_read_it_once_and_are_still_undone_exactly() {
    let (report, world, calls, _) = run_recording(&head("patches", THREE_PATCHES), "");
    assert_eq!(report.outcome, Outcome::RolledBack, "{}", report.message);
    assert_eq!(calls.len(), 7, "{calls:#?}");
    assert_eq!(calls[0], "get api", "one read, before the first patch");
    assert_eq!(calls[1], r#"patch api {"spec":{"paused":true}}"#);
    // The next patches start from the server's answer to the one before, and carry its
    // resourceVersion so the server would refuse them if the object had changed since.
    assert!(
        calls[2].starts_with(
            r#"patch api {"metadata":{"annotations":{"why":"incident"},"resourceVersion":""#
        ),
        "{calls:#?}"
    );
    assert!(
        calls[3].starts_with(r#"patch api {"spec":{"replicas":7},"metadata":{"resourceVersion":""#),
        "{calls:#?}"
    );
    // The undos, newest first, restore exactly what each patch found.
    assert_eq!(
        calls[4..],
        [
            r#"patch api {"spec":{"replicas":2}}"#.to_owned(),
            r#"patch api {"metadata":{"annotations":{"why":null}}}"#.to_owned(),
            r#"patch api {"spec":{"paused":null}}"#.to_owned(),
        ]
    );
    let initial = runbook_core::sim::parse_scenario(Path::new("t.scenario.yaml"), SCENARIO)
        .expect("scenario");
    let spec = |objects: Vec<serde_json::Value>| {
        objects
            .into_iter()
            .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == "api")
            .map(|o| {
                // An emptied map is no map, as the API server stores it.
                let annotations = o["metadata"]
                    .get("annotations")
                    .filter(|a| a.as_object().is_some_and(|a| !a.is_empty()))
                    .cloned();
                (o["spec"].clone(), annotations)
            })
    };
    assert_eq!(
        spec(world.objects()),
        spec(SimWorld::new(&initial).objects()),
        "spec and annotations as they were"
    );
}

#[test]
fn a_patch_whose_object_changed_since_the_last_write_reads_it_again_and_undoes_to_what_it_found() {
    // A controller scales the Deployment once the first patch is done: the second patch's
    // known version is stale, the server refuses it, and the object is read again.
    let extra = "  changes:
    - after: {step: pause}
      object: {apiVersion: apps/v1, kind: Deployment, metadata: {name: api, namespace: shop}, spec: {replicas: 9}}
";
    let steps =
        "    - {id: pause, patch: {kind: Deployment, name: api, patch: {spec: {paused: true}}}}
    - {id: more, patch: {kind: Deployment, name: api, patch: {spec: {replicas: 7}}}}
    - {id: check, verify: 'false', timeout: 1s}
";
    let (report, world, calls, records) = run_recording(&head("stale", steps), extra);
    assert_eq!(report.outcome, Outcome::RolledBack, "{}", report.message);
    assert_eq!(calls.len(), 7, "{calls:#?}");
    assert_eq!(calls[0], "get api");
    assert_eq!(calls[1], r#"patch api {"spec":{"paused":true}}"#);
    assert!(
        calls[2].starts_with(r#"patch api {"spec":{"replicas":7},"metadata":{"resourceVersion":""#)
            && calls[2].ends_with(" -> refused"),
        "{calls:#?}"
    );
    assert_eq!(calls[3], "get api", "read again after the refusal");
    assert_eq!(calls[4], r#"patch api {"spec":{"replicas":7}}"#);
    assert_eq!(
        calls[5], r#"patch api {"spec":{"replicas":9}}"#,
        "the undo restores the 9 the controller set, not the 2 the run last wrote"
    );
    let replicas = world
        .objects()
        .into_iter()
        .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == "api")
        .map(|o| o["spec"]["replicas"].clone());
    assert_eq!(replicas, Some(serde_json::json!(9)));
    let intents: Vec<String> = records
        .iter()
        .filter_map(|r| match &r.event {
            Event::StepIntent { step, .. } if step == "more" => Some(step.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        intents.len(),
        2,
        "the journal shows the refused intent and the one sent after reading again"
    );
}

// The retry policy (issue 11): a step is tried again only when another attempt may succeed.
// Forbidden (RBAC), Invalid (the object's schema), NotFound and a field-manager conflict are
// the same every time, so they fail the step at once and the rollback starts without waiting
// out the back-off; throttling (429), server errors and lost connections are retried. The
// journal records the kind of each failure.

/// A one-step runbook that may retry its scale, with one failure of `fault` injected into it.
fn one_failure_of(fault: &str) -> (RunReport, Vec<Record>) {
    let h = Test::new()
        .runbook(&head(
            "retry",
            "    - id: scale-api
      scale: {name: api, replicas: 4}
      retries: {attempts: 3, backoff: 1s}
",
        ))
        .scenario(&format!(
            "  faults:\n    - {{verb: scale, name: api, error: {fault}, message: injected, times: 1}}\n"
        ))
        .run();
    (h.report, events(&h.collect))
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
    let (report, records) = one_failure_of("forbidden");
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
    let (report, records) = one_failure_of("invalid");
    assert_eq!(report.outcome, Outcome::RolledBack, "{}", report.message);
    assert!(retried(&records).is_empty(), "{:?}", retried(&records));
    assert_eq!(failed_as(&records).as_deref(), Some("invalid"));
}

#[test]
fn not_found_and_a_field_manager_conflict_are_not_retried_either() {
    for fault in ["not-found", "field-manager-conflict"] {
        let (report, records) = one_failure_of(fault);
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
        let (report, records) = one_failure_of(fault);
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

/// Issue 13: where a param's value opens a command's argument, in a step, its undo or a
/// rollback step, a value starting with `-` is refused when params are bound; after other
/// text in the argument (`tag-${params.tag}`) it is only text.
#[test]
fn an_option_like_value_is_refused_wherever_it_would_open_a_commands_argument() {
    let text = head(
        "option-like",
        "    - id: tag
      run: [tool, tag, 'tag-${params.tag}']
      undo: {run: [tool, untag, '${params.node}']}
  rollback:
    - {id: report, run: [tool, report, '${params.report}'], readonly: true}
  params:
    - {name: node, pattern: '[-a-z0-9]+'}
    - {name: tag, pattern: '[-a-z0-9]+'}
    - {name: report, pattern: '[-a-z0-9]+'}
",
    );
    let (_, runbook) = runbook_core::testing::inline_runbook("t.yaml", &text)
        .unwrap_or_else(|errors| panic!("{errors:?}"));
    let sets = [("node", "-x"), ("tag", "-y"), ("report", "--all")]
        .map(|(name, value)| (name.to_owned(), value.to_owned()));
    let (bindings, errors) = runbook_core::bind::bind(&runbook, &sets, None);
    let messages: Vec<&str> = errors.iter().map(|error| error.message.as_str()).collect();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(
        messages[0].starts_with("param `node` from --set: `-x` starts with `-` and opens an argument of a command in the undo of step `tag`"),
        "{messages:?}"
    );
    assert!(
        messages[1].starts_with("param `report` from --set: `--all` starts with `-` and opens an argument of a command in rollback step `report`"),
        "{messages:?}"
    );
    assert_eq!(bindings.values["tag"].to_string(), "-y");
}

// ----- Issue 15: `forEach`, `capture` and step results --------------------------------------

/// The shop's Deployments as a list fact, for `forEach`.
const DEPLOYMENTS: &str = "  facts:
    - {name: shop.deployments, kubernetes: {apiVersion: apps/v1, kind: Deployment, namespace: shop}, jsonpath: '{.items}'}
";

fn with_facts(name: &str, facts: &str, steps: &str) -> String {
    format!("apiVersion: runbook.dev/v1alpha1\nkind: Runbook\nmetadata: {{name: {name}}}\nspec:\n{facts}  steps:\n{steps}")
}

/// Issue 15, item 1: one instance per item, each journaled and undone on its own, as
/// `<id>[<key>]`, newest first, when a later step fails.
#[test]
fn for_each_runs_an_instance_per_item_and_undoes_each_on_its_own() {
    let text = with_facts(
        "fan-out",
        DEPLOYMENTS,
        "    - {id: grow, forEach: shop.deployments, as: deployment, parallelism: 2, scale: {name: '${deployment.metadata.name}', replicas: 6}}
    - {id: check, verify: 'false', timeout: 10s}
",
    );
    let h = Test::new().runbook(&text).run();
    assert_eq!(
        h.report.outcome,
        Outcome::RolledBack,
        "{}",
        h.report.message
    );
    let records = events(&h.collect);
    let expanded: Vec<Vec<String>> = records
        .iter()
        .filter_map(|r| match &r.event {
            Event::StepExpanded { step, keys, .. } if step == "grow" => Some(keys.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        expanded,
        [["api", "worker"]],
        "the expansion is journaled once"
    );
    let intents: Vec<String> = records
        .iter()
        .filter_map(|r| match &r.event {
            Event::StepIntent { step, .. } => Some(step.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(intents, ["grow[api]", "grow[worker]"]);
    let instances: Vec<(&str, &StepStatus)> = h
        .report
        .instances
        .iter()
        .map(|i| (i.id.as_str(), &i.status))
        .collect();
    assert_eq!(
        instances,
        [
            ("grow[api]", &StepStatus::Succeeded),
            ("grow[worker]", &StepStatus::Succeeded)
        ]
    );
    let undone: Vec<&str> = h.report.undos.iter().map(|u| u.step.as_str()).collect();
    assert_eq!(undone, ["grow[worker]", "grow[api]"], "newest first");
    assert_eq!(replicas(&h.world, "api"), 2, "each scaled back");
    assert_eq!(replicas(&h.world, "worker"), 1);
}

/// Issue 15, item 1: a list longer than `maxItems` fails the step before any instance runs.
#[test]
fn a_for_each_over_more_items_than_max_items_changes_nothing() {
    let text = with_facts(
        "too-many",
        DEPLOYMENTS,
        "    - {id: grow, forEach: shop.deployments, maxItems: 1, scale: {name: '${item.metadata.name}', replicas: 6}}\n",
    );
    let h = Test::new().runbook(&text).run();
    assert_eq!(
        h.report.outcome,
        Outcome::RolledBack,
        "{}",
        h.report.message
    );
    assert!(
        matches!(status(&h.report, "grow"), StepStatus::Failed(e) if e.contains("gave 2 items, more than `maxItems: 1`")),
        "{:?}",
        status(&h.report, "grow")
    );
    assert!(h.report.instances.is_empty());
    assert_eq!(replicas(&h.world, "api"), 2);
    assert_eq!(replicas(&h.world, "worker"), 1);
}

/// Issue 15, item 1: `when` is asked of each item; `key` names the instances.
#[test]
fn a_for_each_asks_when_of_each_item_and_keys_instances_by_the_key_expression() {
    let text = with_facts(
        "filtered",
        DEPLOYMENTS,
        "    - {id: grow, forEach: shop.deployments, key: 'item.metadata.name + \"-x\"', when: 'item.spec.replicas > 1', scale: {name: '${item.metadata.name}', replicas: 6}}\n",
    );
    let h = Test::new().runbook(&text).run();
    assert_eq!(h.report.outcome, Outcome::Succeeded, "{}", h.report.message);
    let instances: Vec<(&str, bool)> = h
        .report
        .instances
        .iter()
        .map(|i| (i.id.as_str(), matches!(i.status, StepStatus::Skipped(_))))
        .collect();
    assert_eq!(
        instances,
        [("grow[api-x]", false), ("grow[worker-x]", true)]
    );
    assert_eq!(replicas(&h.world, "api"), 6);
    assert_eq!(replicas(&h.world, "worker"), 1, "its `when` was false");
}

/// Issue 15, item 1: a run killed after some instances completed goes on with the others
/// only, over the items the journal recorded, and a rollback undoes the earlier ones.
#[test]
fn a_resumed_for_each_runs_only_the_instances_left_over_the_journaled_items() {
    let text = with_facts(
        "resume-fan",
        DEPLOYMENTS,
        "    - {id: grow, forEach: shop.deployments, scale: {name: '${item.metadata.name}', replicas: 6}}\n",
    );
    let item = |name: &str, count: i64| serde_json::json!({"metadata": {"name": name, "namespace": "shop"}, "spec": {"replicas": count}});
    let resume = Resume {
        completed: vec![(
            "grow[api]".to_owned(),
            Some(runbook_core::exec::UndoRecord::Replicas {
                key: ObjectKey {
                    api_version: "apps/v1".to_owned(),
                    kind: "Deployment".to_owned(),
                    namespace: Some("shop".to_owned()),
                    name: "api".to_owned(),
                },
                previous: 2,
            }),
        )],
        expansions: [(
            "grow".to_owned(),
            vec![
                ("api".to_owned(), item("api", 2)),
                ("worker".to_owned(), item("worker", 1)),
            ],
        )]
        .into_iter()
        .collect(),
        ..Resume::default()
    };
    let h = Test::new().runbook(&text).resume(resume.clone()).run();
    assert_eq!(h.report.outcome, Outcome::Succeeded, "{}", h.report.message);
    let started: Vec<String> = events(&h.collect)
        .iter()
        .filter_map(|r| match &r.event {
            Event::StepStarted { step, .. } => Some(step.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(started, ["grow", "grow[worker]"], "api was done before");
    assert_eq!(replicas(&h.world, "worker"), 6);
    assert_eq!(replicas(&h.world, "api"), 2, "not run again");

    let h = Test::new()
        .runbook(&text)
        .resume(Resume {
            roll_back: true,
            ..resume
        })
        .run();
    let undone: Vec<&str> = h.report.undos.iter().map(|u| u.step.as_str()).collect();
    assert_eq!(undone, ["grow[api]"], "{}", h.report.message);
}

/// Issue 15, item 2: a captured value is the value at the capture, whatever the facts read
/// after a change; a `run` step's whole output and exit code are readable as `steps.<id>`.
#[test]
fn captured_values_survive_a_change_and_step_results_are_readable() {
    let text = "apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata: {name: results}
spec:
  facts:
    - {name: api.replicas, kubernetes: {apiVersion: apps/v1, kind: Deployment, name: api, namespace: shop}, jsonpath: '{.spec.replicas}'}
  steps:
    - {id: before, capture: {count: api.replicas, doubled: 'api.replicas * 2'}}
    - {id: grow, scale: {name: api, replicas: 5}}
    - {id: report-status, readonly: true, run: [report, status]}
    - id: check
      verify: >-
        vars.count == 2 && vars.doubled == 4 && api.replicas == 5
        && steps.report_status.output == \"one\\ntwo\\n\" && steps.report_status.exitCode == 0
        && steps[\"report-status\"].status == \"succeeded\" && steps.grow.status == \"succeeded\"
      timeout: 10s
";
    let h = Test::new()
        .runbook(text)
        .scenario(
            "    - argv: [report, status]\n      responses:\n        - stdout: \"one\\ntwo\\n\"\n",
        )
        .run();
    assert_eq!(h.report.outcome, Outcome::Succeeded, "{}", h.report.message);
    let records = events(&h.collect);
    let captured = records.iter().find_map(|r| match &r.event {
        Event::StepFinished { step, vars, .. } if step == "before" => vars.clone(),
        _ => None,
    });
    assert_eq!(
        captured,
        Some(serde_json::json!({"count": 2, "doubled": 4}))
    );
    let stdout = records.iter().find_map(|r| match &r.event {
        Event::StepFinished {
            step,
            stdout,
            output,
            exit_code,
            ..
        } if step == "report-status" => Some((stdout.clone(), output.clone(), *exit_code)),
        _ => None,
    });
    assert_eq!(
        stdout,
        Some((
            Some("one\ntwo\n".to_owned()),
            Some("two".to_owned()),
            Some(0)
        )),
        "the whole output is journaled; the summary keeps its last line"
    );
}

/// Issue 15, item 2: a resumed run reads the values its journal says were captured, not new
/// ones.
#[test]
fn a_resumed_run_restores_what_was_captured() {
    let text = head(
        "resume-vars",
        "    - {id: before, capture: {count: '99'}}\n    - {id: check, verify: 'vars.count == 2 && steps.before.status == \"succeeded\"', timeout: 5s}\n",
    );
    let resume = Resume {
        completed: vec![("before".to_owned(), None)],
        vars: serde_json::json!({"count": 2})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        results:
            serde_json::json!({"before": {"status": "succeeded", "output": "", "exitCode": null}})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        ..Resume::default()
    };
    let h = Test::new().runbook(&text).resume(resume).run();
    assert_eq!(h.report.outcome, Outcome::Succeeded, "{}", h.report.message);
}

/// The world for issue 15, item 5: a health endpoint that answers 503, and processes that
/// exit 1 with their answer.
const FAILURES_AS_DATA: &str = r#"apiVersion: runbook.dev/v1alpha1
kind: Scenario
metadata: {name: failures}
spec:
  objects: []
  http:
    - url: https://shop.example.com/healthz
      responses:
        - status: 503
          headers: {Retry-After: "30", Set-Cookie: "session=s3cr3t-cookie"}
          body: upstream connect error
  commands:
    - argv: [argocd, app, diff, shop]
      responses:
        - exitCode: 1
          stdout: "===== apps/Deployment shop/api ======"
    - argv: [helm, template, shop]
      responses:
        - exitCode: 1
          stderr: "Error: parse error at (shop/templates/api.yaml:3)"
    - argv: [helm, lint, shop]
      responses:
        - exitCode: 2
          stderr: "Error: 1 chart(s) failed"
"#;

#[test]
fn an_expected_http_status_is_data_and_an_unexpected_one_fails_the_read_naming_both() {
    // Issue 15, item 5: `GET /healthz answered 503` is what the probe reports, not an abort.
    let text = r#"apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata: {name: probe}
spec:
  facts:
    - name: health.answer
      http: {url: https://shop.example.com/healthz, format: json, expectStatus: [200, "500-599"]}
    - name: health.strict
      http: {url: https://shop.example.com/healthz, expectStatus: "2xx"}
  steps:
    - id: tell
      notify: 'HTTP ${health.answer.status} ${health.answer.body} retry ${health.answer.headers["retry-after"]}'
    - id: strict
      verify: health.strict.status == 200
      timeout: 10s
"#;
    let h = Test::new().runbook(text).world(FAILURES_AS_DATA).run();
    let sent: Vec<String> = h
        .world
        .notifications()
        .iter()
        .map(|n| n.message.clone())
        .collect();
    // The body is not JSON: kept as text for a non-2xx status.
    assert_eq!(sent, ["HTTP 503 upstream connect error retry 30"]);
    assert_eq!(status(&h.report, "tell"), StepStatus::Succeeded);
    let StepStatus::Failed(why) = status(&h.report, "strict") else {
        panic!("the strict read fails its step");
    };
    assert!(why.contains("timed out"), "{why}");
    let shown: String = events(&h.collect)
        .iter()
        .map(|r| serde_json::to_string(r).expect("json"))
        .collect();
    assert!(
        shown.contains("answered 503, which is not in expectStatus (200-299)"),
        "{shown}"
    );
    assert!(
        !shown.contains("s3cr3t-cookie"),
        "Set-Cookie is redacted: {shown}"
    );
    assert!(
        shown.contains(r#"\"set-cookie\":\"<redacted>\""#),
        "{shown}"
    );
}

#[test]
fn allowed_exit_codes_make_a_command_an_answer_and_a_run_step_a_success() {
    // Issue 15, item 5: `argocd app diff` exits 1 on a diff; `helm template` shows its error.
    let text = r#"apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata: {name: diff}
spec:
  facts:
    - name: argo.diff
      command: {argv: [argocd, app, diff, shop], allowExitCodes: [0, 1]}
  steps:
    - id: tell
      notify: 'diff exit ${argo.diff.exitCode}: ${argo.diff.stdout}'
    - id: render
      run: [helm, template, shop]
      readonly: true
      allowExitCodes: [0, 1]
    - id: lint
      run: [helm, lint, shop]
      readonly: true
      allowExitCodes: [0, 1]
"#;
    let h = Test::new().runbook(text).world(FAILURES_AS_DATA).run();
    let sent: Vec<String> = h
        .world
        .notifications()
        .iter()
        .map(|n| n.message.clone())
        .collect();
    // format json (the default) that does not parse on a non-zero code: kept as text.
    assert_eq!(sent, ["diff exit 1: ===== apps/Deployment shop/api ======"]);
    assert_eq!(status(&h.report, "render"), StepStatus::Succeeded);
    let StepStatus::Failed(why) = status(&h.report, "lint") else {
        panic!("exit 2 is not allowed");
    };
    assert!(why.contains("(allowExitCodes: 0, 1)"), "{why}");
    let shown: String = events(&h.collect)
        .iter()
        .map(|r| serde_json::to_string(r).expect("json"))
        .collect();
    assert!(
        shown.contains("exited with status 1 (allowed): Error: parse error"),
        "the allowed failure's output is shown: {shown}"
    );
    assert!(
        shown.contains("exited with status 2: Error: 1 chart(s) failed (allowExitCodes: 0, 1)"),
        "{shown}"
    );
}

#[test]
fn library_functions_are_called_from_expressions_templates_closures_and_each_other() {
    // Issue 15, item 6: one formula, defined once in a fact library.
    let text = r#"apiVersion: runbook.dev/v1alpha1
kind: FactLibrary
metadata: {name: functions}
spec:
  functions:
    - {name: days_until, params: [t], body: '(t - now()) / duration("1d")'}
    - {name: expires_within, params: [t, days], body: days_until(t) < days}
    - name: selects
      params: [selector, labels]
      body: selector.keys().all((|selector, labels, k| labels[k] == selector[k]).curry(selector).curry(labels))
---
apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata: {name: expiry}
spec:
  facts:
    - {name: cert.not_after, expr: 'parse_time("1970-01-23T00:00:00Z")'}
    - name: cert.pods
      expr: '[#{app: "api", tier: "web"}, #{app: "db"}].filter(|labels| selects(#{app: "api"}, labels)).len()'
  preconditions:
    - check: expires_within(cert.not_after, 30)
  steps:
    - id: tell
      notify: '${days_until(cert.not_after)} days left, ${cert.pods} pod selected'
"#;
    let h = Test::new()
        .runbook(text)
        .started_at(SystemTime::UNIX_EPOCH + Duration::from_secs(86_400 * 2))
        .run();
    assert_eq!(h.report.outcome, Outcome::Succeeded, "{}", h.report.message);
    let sent: Vec<String> = h
        .world
        .notifications()
        .iter()
        .map(|n| n.message.clone())
        .collect();
    assert_eq!(sent, ["20 days left, 1 pod selected"]);
}

/// Issue 15, item 9: a skipped step satisfies a plain `needs`; `{step, status: succeeded}`
/// skips the step that needs it, saying why.
#[test]
fn a_strict_need_skips_the_step_when_its_dependency_was_skipped() {
    let text = head(
        "strict-needs",
        "    - {id: maybe, when: 'false', scale: {name: api, replicas: 9}}
    - {id: loose, needs: [maybe], scale: {name: worker, replicas: 2}}
    - {id: strict, needs: [loose, {step: maybe, status: succeeded}], scale: {name: worker, replicas: 5}}
",
    );
    let h = Test::new().runbook(&text).run();
    assert_eq!(h.report.outcome, Outcome::Succeeded, "{}", h.report.message);
    assert_eq!(status(&h.report, "loose"), StepStatus::Succeeded);
    assert_eq!(
        status(&h.report, "strict"),
        StepStatus::Skipped(
            "it needs step `maybe` to have succeeded, and `maybe` was skipped".to_owned()
        )
    );
    assert_eq!(
        replicas(&h.world, "worker"),
        2,
        "the strict step did not run"
    );
}

/// The records of a run's journal, as `runbook resume` reads them.
fn resumed_from(records: &[Record], roll_back: bool) -> Resume {
    let state = runbook_core::resume::analyze(records).expect("analyzed");
    Resume::from_journal(&state, state.completed.clone(), roll_back)
}

/// Review of issue 15, item 1: a resumed run that rolled back a finished `forEach` step
/// undid each instance, then took the step itself (journaled as succeeded) for one more
/// completed step without an undo state, and told a human to restore it by hand.
#[test]
fn rolling_back_a_resumed_run_undoes_a_finished_for_each_by_its_instances_only() {
    let text = with_facts(
        "resume-done-fan",
        DEPLOYMENTS,
        "    - {id: grow, forEach: shop.deployments, scale: {name: '${item.metadata.name}', replicas: 6}}
    - {id: later, needs: [grow], confirm: Go on?, scale: {name: api, replicas: 9}}
",
    );
    let first = Test::new().runbook(&text).answer(Answer::No).run();
    assert_eq!(
        first.report.outcome,
        Outcome::Stopped,
        "{}",
        first.report.message
    );
    let h = Test::new()
        .runbook(&text)
        .resume(resumed_from(&events(&first.collect), true))
        .run();
    let undone: Vec<&str> = h.report.undos.iter().map(|u| u.step.as_str()).collect();
    assert_eq!(
        undone,
        ["grow[worker]", "grow[api]"],
        "{}",
        h.report.message
    );
    assert!(h.report.must_fix.is_empty(), "{:?}", h.report.must_fix);
    assert_eq!(
        h.report.outcome,
        Outcome::RolledBack,
        "{}",
        h.report.message
    );
}

/// Review of issue 15, item 1: when another step failed, the run starts nothing new, but a
/// `forEach` step in flight went on starting its instances, one after the other, while the
/// run waited for it to undo everything.
#[test]
fn a_failure_elsewhere_stops_a_for_each_from_starting_more_instances() {
    let text = with_facts(
        "fan-and-fail",
        &format!("{DEPLOYMENTS}    - {{name: app.status, exec: {{namespace: shop, pod: api-0, command: [app, status]}}}}\n"),
        "    - {id: grow, forEach: shop.deployments, parallelism: 1, verify: app.status.healthy, interval: 10s, timeout: 1m}
    - {id: broken, needs: [], scale: {name: ghost, replicas: 1}}
",
    );
    let h = Test::new()
        .runbook(&text)
        .world(&SCENARIO.replace("after: {step: fix}", "after: {calls: 1}"))
        .run();
    assert_eq!(
        h.report.outcome,
        Outcome::RolledBack,
        "{}",
        h.report.message
    );
    let started: Vec<String> = events(&h.collect)
        .iter()
        .filter_map(|r| match &r.event {
            Event::StepStarted { step, .. } if step.starts_with("grow[") => Some(step.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        started,
        ["grow[api]"],
        "no instance starts after `broken` failed"
    );
}

/// Review of issue 15, item 9: a `forEach` step whose strict need was skipped read its list
/// and ended `succeeded` (each instance skipped), so a step needing it to have succeeded ran.
#[test]
fn a_for_each_step_whose_strict_need_was_skipped_is_skipped_without_reading_its_list() {
    let text = with_facts(
        "strict-fan",
        DEPLOYMENTS,
        "    - {id: maybe, when: 'false', scale: {name: api, replicas: 9}}
    - {id: grow, needs: [{step: maybe, status: succeeded}], forEach: shop.deployments, scale: {name: '${item.metadata.name}', replicas: 6}}
    - {id: after, needs: [{step: grow, status: succeeded}], scale: {name: worker, replicas: 4}}
",
    );
    let h = Test::new().runbook(&text).run();
    assert_eq!(h.report.outcome, Outcome::Succeeded, "{}", h.report.message);
    assert_eq!(
        status(&h.report, "grow"),
        StepStatus::Skipped(
            "it needs step `maybe` to have succeeded, and `maybe` was skipped".to_owned()
        )
    );
    assert!(h.report.instances.is_empty(), "{:?}", h.report.instances);
    assert!(
        !events(&h.collect)
            .iter()
            .any(|r| matches!(&r.event, Event::StepExpanded { .. })),
        "the list is not read"
    );
    assert!(matches!(status(&h.report, "after"), StepStatus::Skipped(_)));
    assert_eq!(replicas(&h.world, "worker"), 1);
}

/// Review of issue 15, item 1: a resumed rollback undid an instance with the item as the
/// journal recorded it, so a declared undo reading an item that held a secret wrote the
/// placeholder where the secret had been.
#[test]
fn a_resumed_instance_whose_item_was_journaled_redacted_is_not_undone_with_the_placeholder() {
    let text = with_facts(
        "redacted-item",
        "  facts:\n    - {name: shop.tokens, expr: '[#{name: \"api\", token: \"t\"}]'}\n",
        "    - id: rotate
      forEach: shop.tokens
      run: [deploy-tool, rollout]
      undo: {notify: 'put back ${item.token}'}
",
    );
    let redacted = runbook_core::redact::REDACTED;
    let h = Test::new()
        .runbook(&text)
        .resume(Resume {
            completed: vec![("rotate[api]".to_owned(), None)],
            expansions: [(
                "rotate".to_owned(),
                vec![(
                    "api".to_owned(),
                    serde_json::json!({"name": "api", "token": redacted}),
                )],
            )]
            .into_iter()
            .collect(),
            roll_back: true,
            ..Resume::default()
        })
        .run();
    let sent: Vec<String> = h
        .world
        .notifications()
        .iter()
        .map(|n| n.message.clone())
        .collect();
    assert!(
        !sent.iter().any(|m| m.contains(redacted)),
        "the placeholder is not sent: {sent:?}"
    );
    assert!(
        h.report
            .must_fix
            .iter()
            .any(|m| m.contains("`rotate[api]`") && m.contains("by hand")),
        "{:?}",
        h.report.must_fix
    );
}
