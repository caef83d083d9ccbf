//! `runbook test`: scenario tests for runbooks.
//!
//! A test file (`tests.yaml` in a runbook's folder, or `*.test.yaml` beside the runbooks)
//! names a runbook and a scenario, and lists cases: params or an alert, gate answers, extra
//! scripted answers or faults, and what must happen: the outcome, each step's result, the
//! ordered mutations the simulated cluster saw (undos included), the undos, and notifications. Cases run against the simulated cluster on a
//! paused clock (the caller's runtime), so retries and verify polls take no real time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::diagnostic::{Code, Diagnostic, Diagnostics};
use crate::document::Metadata;
use crate::effects::{Answer, Prompter, Reporter, ScenarioClock};
use crate::exec::{RunOptions, RunReport, StepStatus};
use crate::journal::{Outcome, Record};
use crate::runbook::Catalog;
use crate::sim::{
    Change, CommandScript, ExecScript, Fault, LogsScript, Scenario, ScenarioSpec, SimWorld,
};
use crate::source::{Position, SourceFile, Span};

/// The wall time every test run starts at, so traces are the same on every machine.
pub const TEST_EPOCH: Duration = Duration::from_secs(1_767_225_600); // 2026-01-01T00:00:00Z

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RunbookTestDocument {
    pub api_version: String,
    pub kind: RunbookTestKind,
    pub metadata: Metadata,
    pub spec: RunbookTestSpec,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum RunbookTestKind {
    RunbookTest,
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RunbookTestSpec {
    /// The runbook under test (`metadata.name`).
    pub runbook: String,
    /// The scenario file, relative to this file.
    pub scenario: String,
    pub cases: Vec<TestCase>,
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TestCase {
    pub name: String,
    /// Params, as `--set` would give them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    /// An Alertmanager payload file, relative to this file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<String>,
    /// Approve every gate (`--yes`).
    #[serde(default)]
    pub yes: bool,
    /// Answers at gates, by step id; a gate not listed finds no terminal.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub answers: BTreeMap<String, GateAnswer>,
    #[serde(default)]
    pub dry_run: bool,
    /// Another scenario file for this case, relative to this file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scenario: Option<String>,
    /// Extra faults for this case.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<Fault>,
    /// Extra exec answers, taking precedence over the scenario's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exec: Vec<ExecScript>,
    /// Extra container logs, taking precedence over the scenario's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<LogsScript>,
    /// Extra command answers, taking precedence over the scenario's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<CommandScript>,
    /// Extra HTTP answers, taking precedence over the scenario's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<crate::sim::HttpScript>,
    /// Objects for this case: each replaces the scenario's object of the same apiVersion
    /// group, kind, namespace and name, or is added.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<serde_json::Map<String, serde_json::Value>>,
    /// Controller changes for this case: each replaces the scenario's change after the same
    /// step for the same object, or is added.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<Change>,
    pub expect: Expectation,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum GateAnswer {
    Yes,
    No,
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Expectation {
    /// How the run ends. Give this or `refused`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// The params are refused before anything runs (a hostile alert label, a value that
    /// fails its pattern): a substring of the refusal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// Each listed step's result.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub steps: BTreeMap<String, ExpectedStep>,
    /// Every write the cluster saw, in order, as `verb target: detail`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mutations: Option<Vec<String>>,
    /// The steps undone, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undone: Option<Vec<String>>,
    /// Notifications sent, in order, as `page: TEXT` or `notify: TEXT` (TEXT is a substring).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notifications: Option<Vec<String>>,
    /// A substring of the run's final message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ExpectedStep {
    Succeeded,
    Failed,
    Skipped,
    DryRun,
    NotRun,
}

/// A loaded test file.
#[derive(Clone, Debug)]
pub struct TestFile {
    pub path: PathBuf,
    pub document: RunbookTestDocument,
}

/// One case's result.
#[derive(Debug)]
pub struct CaseResult {
    pub name: String,
    /// Why it failed; empty when it passed.
    pub failures: Vec<String>,
    /// Every journal record of the run, for golden traces.
    pub trace: Vec<Record>,
    pub report: Option<RunReport>,
}

/// A catalog from one runbook's text, for tests that write their runbook inline: the
/// catalog and its first runbook, or the error messages.
pub fn inline_runbook(
    name: &str,
    text: &str,
) -> Result<(Arc<Catalog>, Arc<crate::runbook::Runbook>), Vec<String>> {
    let mut diagnostics = Diagnostics::new();
    let mut workspace = crate::loader::Workspace::default();
    crate::loader::Loader::new().load_text(
        Path::new(name),
        text.to_owned(),
        &mut workspace,
        &mut diagnostics,
    );
    let catalog = crate::check::check(&workspace, &mut diagnostics);
    let errors: Vec<String> = diagnostics
        .sorted()
        .into_iter()
        .filter(|d| d.severity == crate::diagnostic::Severity::Error)
        .map(|d| d.message)
        .collect();
    match catalog.runbooks.first() {
        Some(runbook) if errors.is_empty() => {
            let runbook = runbook.clone();
            Ok((Arc::new(catalog), runbook))
        }
        _ if errors.is_empty() => Err(vec![format!("{name} holds no runbook")]),
        _ => Err(errors),
    }
}

pub fn test_schema() -> serde_json::Value {
    let generator = schemars::generate::SchemaSettings::draft07().into_generator();
    generator
        .into_root_schema_for::<RunbookTestDocument>()
        .to_value()
}

/// Finds the test files under `paths` (files are taken as they are): `*.test.yaml` in any
/// folder, and `tests.yaml` in a runbook's folder (`runbooks/NAME/tests.yaml`). Paths the
/// walk skipped (named pipes, links to folders already walked) are warnings in the
/// diagnostics.
pub fn find_test_files(paths: &[PathBuf]) -> (Vec<PathBuf>, Diagnostics) {
    let mut diagnostics = Diagnostics::new();
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let wanted = |_: &Path, path: &Path, kind: crate::files::Kind| {
                kind == crate::files::Kind::Folder || crate::loader::is_test_file(path)
            };
            files.extend(crate::files::walk(path, wanted, &mut diagnostics));
        } else {
            files.push(path.clone());
        }
    }
    files.sort();
    (files, diagnostics)
}

/// Reads a test file, reporting every problem with its position.
pub fn load_test_file(path: &Path) -> Result<TestFile, Diagnostics> {
    static SCHEMA: OnceLock<serde_json::Value> = OnceLock::new();
    let schema = SCHEMA.get_or_init(test_schema);
    let text = crate::files::read_text(path, crate::files::Origin::Named).map_err(|error| {
        let mut diagnostics = Diagnostics::new();
        diagnostics.push(error);
        diagnostics
    })?;
    let source = SourceFile::new(path, text);
    let mut diagnostics = Diagnostics::new();
    let documents = crate::yaml::parse(&source, &mut diagnostics);
    let Some(document) = documents
        .into_iter()
        .find(|d| !matches!(d.root.value, crate::yaml::Value::Null))
    else {
        if !diagnostics.has_errors() {
            diagnostics.push(Diagnostic::error(
                Code::Empty,
                &source,
                Span::point(Position::new(1, 1)),
                "the file holds no test",
            ));
        }
        return Err(diagnostics);
    };
    crate::structure::check(
        schema,
        "RunbookTestDocument",
        &document.root,
        &source,
        &mut diagnostics,
    );
    check_cases(&document.root, &source, &mut diagnostics);
    if diagnostics.has_errors() {
        return Err(diagnostics);
    }
    match serde_path_to_error::deserialize::<_, RunbookTestDocument>(document.root.to_json()) {
        Ok(parsed) => Ok(TestFile {
            path: path.to_path_buf(),
            document: parsed,
        }),
        Err(error) => {
            let pointer: String = error
                .path()
                .iter()
                .map(|segment| format!("/{segment}"))
                .collect();
            let span = document
                .root
                .pointer(&pointer)
                .map_or(document.root.span, |node| node.span);
            diagnostics.push(Diagnostic::error(
                Code::InvalidValue,
                &source,
                span,
                error.inner().to_string(),
            ));
            Err(diagnostics)
        }
    }
}

/// What the schema cannot say about a case's `objects` and `changes`: each names its object
/// (`apiVersion`, `kind`, `metadata.name`), and no object is given twice.
fn check_cases(
    root: &crate::yaml::Node,
    source: &crate::source::Source,
    diagnostics: &mut Diagnostics,
) {
    let Some(crate::yaml::Node {
        value: crate::yaml::Value::Seq(cases),
        ..
    }) = root.pointer("/spec/cases")
    else {
        return;
    };
    for case in cases {
        if let Some(objects) = case.get("objects") {
            crate::sim::scenario::check_object_list(objects, source, diagnostics);
        }
        if let Some(changes) = case.get("changes") {
            crate::sim::scenario::check_change_list(changes, source, diagnostics);
        }
    }
}

/// A case's changes must come after steps the runbook has (its own or its rollback's; the
/// steps of a rollback runbook are not looked into).
fn unknown_change_steps(runbook: &crate::runbook::Runbook, case: &TestCase) -> Vec<String> {
    use crate::runbook::{NamedRollback, RollbackSpec};
    let mut steps: Vec<&str> = runbook.steps.iter().map(|step| step.id.as_str()).collect();
    match &runbook.rollback {
        None => {}
        Some(RollbackSpec::Steps(rollback)) => {
            steps.extend(rollback.iter().map(|step| step.id.as_str()));
        }
        Some(RollbackSpec::Named(named)) => steps.extend(
            NamedRollback::ALL
                .iter()
                .filter(|(_, each)| each == named)
                .map(|(name, _)| *name),
        ),
        Some(RollbackSpec::Runbook { .. }) => return Vec::new(),
    }
    case.changes
        .iter()
        .filter(|change| !steps.contains(&change.after.step.as_str()))
        .map(|change| {
            let hint = crate::diagnostic::did_you_mean(&change.after.step, steps.iter().copied())
                .map(|hint| format!("; {hint}"))
                .unwrap_or_default();
            format!(
                "changes: `after: {{step: {}}}` names no step of runbook `{}`{hint}",
                change.after.step, runbook.name
            )
        })
        .collect()
}

/// Gate answers from the test case.
struct CaseAnswers {
    yes: bool,
    answers: BTreeMap<String, GateAnswer>,
}

#[async_trait]
impl Prompter for CaseAnswers {
    async fn confirm(&self, step: &str, _question: &str, _detail: &str) -> Answer {
        match self.answers.get(step) {
            Some(GateAnswer::Yes) => Answer::Yes,
            Some(GateAnswer::No) => Answer::No,
            None if self.yes => Answer::Yes,
            None => Answer::NoTerminal,
        }
    }
}

/// Keeps every record for the trace.
#[derive(Default)]
pub struct Collect(pub Mutex<Vec<Record>>);

impl Reporter for Collect {
    fn record(&self, record: &Record) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(record.clone());
    }
}

/// Runs one case. Call it on a runtime whose clock is paused.
pub async fn run_case(catalog: &Arc<Catalog>, file: &TestFile, case: &TestCase) -> CaseResult {
    let mut result = CaseResult {
        name: case.name.clone(),
        failures: Vec::new(),
        trace: Vec::new(),
        report: None,
    };
    let base = file.path.parent().unwrap_or(Path::new("."));
    let spec = &file.document.spec;
    let Some(runbook) = catalog.get(&spec.runbook).cloned() else {
        result.failures.push(format!(
            "no valid runbook named `{}` (run `runbook validate`)",
            spec.runbook
        ));
        return result;
    };
    let scenario_path = base.join(case.scenario.as_deref().unwrap_or(&spec.scenario));
    let mut scenario: Scenario = match crate::sim::load_scenario(&scenario_path) {
        Ok(scenario) => scenario,
        Err(diagnostics) => {
            for diagnostic in diagnostics.sorted() {
                result.failures.push(
                    crate::diagnostic::render_text(&diagnostic, false)
                        .trim_end()
                        .to_owned(),
                );
            }
            return result;
        }
    };
    let unknown = unknown_change_steps(&runbook, case);
    if !unknown.is_empty() {
        result.failures.extend(unknown);
        return result;
    }
    scenario.spec = std::mem::take(&mut scenario.spec).extended_by(ScenarioSpec {
        objects: case.objects.clone(),
        changes: case.changes.clone(),
        ..ScenarioSpec::default()
    });
    scenario.spec.faults.extend(case.faults.iter().cloned());
    scenario.spec.exec.splice(0..0, case.exec.iter().cloned());
    scenario.spec.logs.splice(0..0, case.logs.iter().cloned());
    scenario
        .spec
        .commands
        .splice(0..0, case.commands.iter().cloned());
    scenario.spec.http.splice(0..0, case.http.iter().cloned());
    let world = Arc::new(SimWorld::new(&scenario));

    let triggered_by = match &case.alert {
        None => None,
        Some(alert) => match case_alert(&runbook, &base.join(alert)) {
            Ok(triggered_by) => Some(triggered_by),
            Err(failure) => {
                result.failures.push(failure);
                return result;
            }
        },
    };
    let sets: Vec<(String, String)> = case
        .set
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let (bindings, errors) =
        crate::bind::bind(&runbook, &sets, triggered_by.as_ref().map(|t| &t.alert));
    let refusal = errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    match (&case.expect.refused, errors.is_empty()) {
        (Some(expected), false) => {
            if !refusal.contains(expected.as_str()) {
                result.failures.push(format!(
                    "refused: expected a refusal containing {expected:?}, got: {refusal}"
                ));
            }
            if !world.mutations().is_empty() || !world.notifications().is_empty() {
                result
                    .failures
                    .push("refused params must change nothing".to_owned());
            }
            return result;
        }
        (Some(expected), true) => {
            result.failures.push(format!(
                "refused: expected the params to be refused ({expected:?}), but they bound"
            ));
            return result;
        }
        (None, false) => {
            result.failures.push(refusal);
            return result;
        }
        (None, true) => {}
    }
    let Some(expected_outcome) = case.expect.outcome else {
        result
            .failures
            .push("`expect` needs `outcome` (or `refused`)".to_owned());
        return result;
    };
    let plan = Arc::new(crate::compile::Compiler::compile(
        runbook,
        bindings,
        triggered_by,
    ));
    let collect = Arc::new(Collect::default());
    let effects = world.effects(
        Arc::new(CaseAnswers {
            yes: case.yes,
            answers: case.answers.clone(),
        }),
        Arc::new(ScenarioClock::new(SystemTime::UNIX_EPOCH + TEST_EPOCH)),
        collect.clone(),
    );
    let options = RunOptions {
        run_id: format!("test-{}", slug(&case.name)),
        dry_run: case.dry_run,
        yes: case.yes,
        parallelism: 4,
        namespace: "default".to_owned(),
        journal: None,
        catalog: Some(catalog.clone()),
        digest: String::new(),
        interrupt: None,
        roll_back_on_interrupt: false,
        resume: None,
        cluster: None,
    };
    let report = crate::exec::execute(plan, effects, options).await;
    result.trace = std::mem::take(
        &mut *collect
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );

    result.failures.extend(unmet_expectations(
        &case.expect,
        expected_outcome,
        &report,
        &world,
    ));
    result.report = Some(report);
    result
}

/// The alert a case fires (an Alertmanager payload file), as the trigger it matches.
fn case_alert(
    runbook: &crate::runbook::Runbook,
    path: &Path,
) -> Result<crate::compile::TriggeredBy, String> {
    let payload = std::fs::read_to_string(path)
        .map_err(|e| e.to_string())
        .and_then(|text| crate::alert::WebhookPayload::parse(&text).map_err(|e| e.to_string()))
        .map_err(|error| format!("{}: {error}", path.display()))?;
    match crate::alert::first_match(runbook, &payload) {
        Some((trigger, alert)) => Ok(crate::compile::TriggeredBy {
            trigger,
            alert: alert.clone(),
            receiver: payload.receiver.clone(),
            group_key: payload.group_key.clone(),
        }),
        None => Err(format!(
            "no firing alert in {} matches a trigger",
            path.display()
        )),
    }
}

/// What a case expected of its run and did not get: the outcome, each step's status, the
/// mutations, the undos, the notifications and the summary, each as one failure line.
fn unmet_expectations(
    expect: &Expectation,
    expected_outcome: Outcome,
    report: &RunReport,
    world: &SimWorld,
) -> Vec<String> {
    let mut failures = Vec::new();
    if report.outcome != expected_outcome {
        failures.push(format!(
            "outcome: expected {:?}, got {:?} ({})",
            expected_outcome, report.outcome, report.message
        ));
    }
    for (id, expected) in &expect.steps {
        match report
            .steps
            .iter()
            .chain(report.instances.iter())
            .find(|step| &step.id == id)
        {
            None => failures.push(format!("step `{id}`: no such step")),
            Some(step) => {
                let actual = match &step.status {
                    StepStatus::Succeeded => ExpectedStep::Succeeded,
                    StepStatus::Failed(_) => ExpectedStep::Failed,
                    StepStatus::Skipped(_) => ExpectedStep::Skipped,
                    StepStatus::DryRun(_) => ExpectedStep::DryRun,
                    StepStatus::NotRun => ExpectedStep::NotRun,
                };
                if actual != *expected {
                    failures.push(format!(
                        "step `{id}`: expected {expected:?}, got {:?}",
                        step.status
                    ));
                }
            }
        }
    }
    if let Some(expected) = &expect.mutations {
        let actual: Vec<String> = world
            .mutations()
            .iter()
            .map(|m| format!("{} {}: {}", m.verb, m.target, m.detail))
            .collect();
        if &actual != expected {
            failures.push(format!(
                "mutations:\n    expected: {expected:?}\n    got:      {actual:?}"
            ));
        }
    }
    if let Some(expected) = &expect.undone {
        let actual: Vec<String> = report.undos.iter().map(|undo| undo.step.clone()).collect();
        if &actual != expected {
            failures.push(format!("undone: expected {expected:?}, got {actual:?}"));
        }
    }
    if let Some(expected) = &expect.notifications {
        let actual: Vec<String> = world
            .notifications()
            .iter()
            .map(|n| {
                format!(
                    "{}: {}",
                    serde_json::to_value(n.kind)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    n.message
                )
            })
            .collect();
        let matches = actual.len() == expected.len()
            && actual.iter().zip(expected).all(|(got, want)| {
                let (want_kind, want_text) = want.split_once(": ").unwrap_or((want, ""));
                got.starts_with(&format!("{want_kind}: ")) && got.contains(want_text)
            });
        if !matches {
            failures.push(format!(
                "notifications:\n    expected: {expected:?}\n    got:      {actual:?}"
            ));
        }
    }
    if let Some(expected) = &expect.message {
        if !report.message.contains(expected.as_str()) {
            failures.push(format!(
                "message: expected it to contain {expected:?}, got {:?}",
                report.message
            ));
        }
    }
    failures
}

fn slug(text: &str) -> String {
    let mut out = String::new();
    for character in text.chars() {
        if character.is_ascii_alphanumeric() {
            out.push(character.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_owned()
}
