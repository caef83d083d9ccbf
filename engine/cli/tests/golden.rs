//! Golden tests: what a user sees, snapshotted under `tests/golden/` and reviewed like code.
//!
//! - `tests/golden/diagnostics/`: a corpus of broken runbooks, each aimed at one check, and
//!   the exact `runbook validate` output (with caret excerpts) and exit code for each.
//! - `runbooks/NAME/PLAN.md`: the markdown plan (the pull-request review) of every runbook in
//!   `runbooks/`, beside its YAML so a pull request shows the plan's diff next to the change.
//! - `tests/golden/plans/`: `plan` (text) and `graph` (dot, mermaid) for every runbook in
//!   `runbooks/`, and every format for a fixture that uses every action.
//! - `tests/golden/traces/`: the event trace of every scenario test case.
//!
//! To accept changed output: `INSTA_UPDATE=always cargo test --test golden`, then review the
//! diff of `tests/golden/` and `runbooks/*/PLAN.md` before committing.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

/// Runs `runbook` from the repository root, returning exit code, stdout and stderr.
fn runbook(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_runbook"))
        .args(args)
        .current_dir(root())
        .env_remove("RUNBOOK_DIR")
        .env("RUNBOOK_LOG", "off")
        .output()
        .expect("runbook runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn golden_settings(folder: &str) -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(root().join("tests/golden").join(folder));
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    settings
}

/// The corpus: every `*.yaml` file and every folder directly under
/// `tests/golden/diagnostics/cases/`, in name order.
fn corpus() -> Vec<String> {
    let folder = root().join("tests/golden/diagnostics/cases");
    let mut cases: Vec<String> = std::fs::read_dir(&folder)
        .expect("corpus folder")
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".yaml") || !name.contains('.'))
        .collect();
    cases.sort();
    cases
}

#[test]
fn broken_runbooks_get_precise_diagnostics() {
    let cases = corpus();
    assert!(
        cases.len() >= 40,
        "the corpus must hold at least 40 broken runbooks, found {}",
        cases.len()
    );
    let settings = golden_settings("diagnostics");
    let mut failures = Vec::new();
    for case in &cases {
        let path = format!("tests/golden/diagnostics/cases/{case}");
        let (code, stdout, stderr) = runbook(&["validate", "--excerpt", "always", &path]);
        // Every case is broken on purpose: validate must refuse it, and never panic.
        if code != 2 {
            failures.push(format!("{case}: exit {code}, expected 2"));
        }
        if stderr.contains("panicked") {
            failures.push(format!("{case}: panicked"));
        }
        let name = case.trim_end_matches(".yaml");
        let shown =
            format!("$ runbook validate --excerpt always {path}\nexit: {code}\n{stdout}{stderr}");
        settings.bind(|| {
            if std::panic::catch_unwind(|| insta::assert_snapshot!(name, shown)).is_err() {
                failures.push(format!(
                    "{case}: output differs from tests/golden/diagnostics/{name}.snap"
                ));
            }
        });
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// What `validate` says of paths in a runbooks folder it will not read (issue 13): links back
/// into the folder, a named pipe, a link to a device, a file over the size limit, and a device
/// named on the command line. These cannot be committed as cases (git keeps no named pipe, a
/// 4 MiB case would bloat the repository, and a link loop trips every tool that walks the
/// tree), so the folder is made here and the snapshot is in `diagnostics/files/`.
#[cfg(unix)]
#[test]
fn paths_the_loader_will_not_read_get_precise_diagnostics() {
    let dir = tempfile::tempdir().expect("temp dir");
    let runbooks = dir.path().join("runbooks");
    std::fs::create_dir_all(runbooks.join("sub")).expect("mkdir");
    std::fs::write(
        runbooks.join("sub/ok.yaml"),
        "apiVersion: runbook.dev/v1alpha1\nkind: Runbook\nmetadata: {name: ok}\nspec:\n  steps:\n    - verify: \"true\"\n",
    )
    .expect("write");
    std::os::unix::fs::symlink(".", runbooks.join("again")).expect("link");
    std::os::unix::fs::symlink("sub", runbooks.join("also-sub")).expect("link");
    std::os::unix::fs::symlink("/dev/zero", runbooks.join("zero.yaml")).expect("link");
    let made = Command::new("mkfifo")
        .arg(runbooks.join("pipe.yaml"))
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    let mut big = "# padding\n".repeat(420_000);
    big.truncate(4 * 1024 * 1024 + 1);
    std::fs::write(runbooks.join("big.yaml"), big).expect("write");

    let real = dir.path().canonicalize().expect("canonical");
    let settings = golden_settings("diagnostics/files");
    let mut failures = Vec::new();
    for (name, args) in [
        (
            "folder",
            vec!["validate", "--excerpt", "always", "runbooks"],
        ),
        ("named-device", vec!["validate", "runbooks/zero.yaml"]),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_runbook"))
            .args(&args)
            .current_dir(dir.path())
            .env_remove("RUNBOOK_DIR")
            .env("RUNBOOK_LOG", "off")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("runbook runs");
        let code = output.status.code().unwrap_or(-1);
        if code != 2 {
            failures.push(format!("{name}: exit {code}, expected 2"));
        }
        let shown = format!(
            "$ runbook {}\nexit: {code}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
        .replace(&real.display().to_string(), "<tmp>");
        settings.bind(|| {
            if std::panic::catch_unwind(|| insta::assert_snapshot!(name, shown)).is_err() {
                failures.push(format!(
                    "{name}: output differs from tests/golden/diagnostics/files/{name}.snap"
                ));
            }
        });
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The names of the runbooks shipped in `runbooks/`.
fn shipped_runbooks() -> Vec<String> {
    let (code, stdout, stderr) = runbook(&["list", "--format", "json"]);
    assert_eq!(code, 0, "{stderr}");
    let items: Vec<serde_json::Value> = serde_json::from_str(&stdout).expect("list --format json");
    let mut names: Vec<String> = items
        .iter()
        .filter_map(|item| item["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

/// Compares a runbook's markdown plan with its `PLAN.md`. A plain file rather than an insta
/// snapshot, so it reads (and renders on a forge) as the review it is; `INSTA_UPDATE=always`
/// rewrites it, as it rewrites every other golden file here.
fn compare_plan_file(path: &Path, actual: &str) -> Result<(), String> {
    let expected = std::fs::read_to_string(path).unwrap_or_default();
    if expected == actual {
        return Ok(());
    }
    if std::env::var("INSTA_UPDATE").is_ok_and(|value| value == "always") {
        return std::fs::write(path, actual)
            .map_err(|error| format!("{}: {error}", path.display()));
    }
    let line = expected
        .lines()
        .zip(actual.lines())
        .position(|(want, got)| want != got)
        .unwrap_or_else(|| expected.lines().count().min(actual.lines().count()))
        + 1;
    Err(format!(
        "output differs from {} (first at line {line}); \
         accept it with INSTA_UPDATE=always and review the diff",
        path.display()
    ))
}

#[test]
fn plans_and_graphs_of_shipped_runbooks() {
    let names = shipped_runbooks();
    assert!(names.contains(&"openbao-sealed".to_owned()));
    let settings = golden_settings("plans");
    let mut failures = Vec::new();
    for name in &names {
        for (command, format) in [
            ("plan", "text"),
            ("plan", "markdown"),
            ("graph", "dot"),
            ("graph", "mermaid"),
        ] {
            let (code, stdout, stderr) = runbook(&[command, name, "--format", format]);
            if code != 0 {
                failures.push(format!(
                    "{command} {name} --format {format}: exit {code}: {stderr}"
                ));
                continue;
            }
            if (command, format) == ("plan", "markdown") {
                let path = root().join("runbooks").join(name).join("PLAN.md");
                if let Err(problem) = compare_plan_file(&path, &stdout) {
                    failures.push(format!("{command} {name} --format {format}: {problem}"));
                }
                continue;
            }
            let snapshot = format!("{command}-{format}@{name}");
            settings.bind(|| {
                if std::panic::catch_unwind(|| insta::assert_snapshot!(snapshot, stdout)).is_err() {
                    failures.push(format!(
                        "{command} {name} --format {format}: output differs from its golden file"
                    ));
                }
            });
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A fixture that uses every action, param type and fact source, in every output format.
#[test]
fn every_action_renders_in_every_format() {
    let path = "tests/golden/fixtures/every-action.yaml";
    let (code, _, stderr) = runbook(&["validate", "--deny-warnings", path]);
    assert_eq!(code, 0, "{stderr}");
    let settings = golden_settings("plans");
    let mut failures = Vec::new();
    for (command, format) in [
        ("plan", "text"),
        ("plan", "markdown"),
        ("plan", "json"),
        ("graph", "dot"),
        ("graph", "mermaid"),
    ] {
        let (code, stdout, stderr) =
            runbook(&[command, path, "--set", "node=worker-3", "--format", format]);
        if code != 0 {
            failures.push(format!(
                "{command} --format {format}: exit {code}: {stderr}"
            ));
            continue;
        }
        let snapshot = format!("{command}-{format}@every-action");
        settings.bind(|| {
            if std::panic::catch_unwind(|| insta::assert_snapshot!(snapshot, stdout)).is_err() {
                failures.push(format!(
                    "{command} --format {format}: output differs from its golden file"
                ));
            }
        });
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `runbook test runbooks/` is part of the test suite: every shipped runbook's scenario tests
/// pass, and the run prints the closing `N passed, N failed` line.
#[test]
fn shipped_scenario_tests_pass() {
    let (code, stdout, stderr) = runbook(&["test", "runbooks/"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let last = stdout.lines().last().unwrap_or_default();
    assert!(last.ends_with(" passed, 0 failed"), "{stdout}");
    let passed: usize = last
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(passed >= 6, "{stdout}");
}

/// A trace as the run's story: one journal record a line, without the fields that would
/// repeat on every line. The run id is the case's name, which the golden file is named after;
/// the time is shown only when the paused test clock has moved since the line before (a
/// retry's backoff, a verify's poll), starting from the clock's fixed start. Every other field
/// is kept, in the journal's order.
fn story(trace: &[runbook_core::journal::Record]) -> String {
    let mut clock = serde_json::Value::String(runbook_core::journal::timestamp(
        std::time::UNIX_EPOCH + runbook_core::testing::TEST_EPOCH,
    ));
    let mut story = String::new();
    for record in trace {
        let mut line = serde_json::to_value(record).expect("JSON");
        let fields = line.as_object_mut().expect("a record is an object");
        fields.shift_remove("run");
        if let Some(time) = fields.get("time").cloned() {
            if time == clock {
                fields.shift_remove("time");
            }
            clock = time;
        }
        story.push_str(&serde_json::to_string(&line).expect("JSON"));
        story.push('\n');
    }
    story
}

/// The event trace of every scenario case of every shipped runbook, as the journal records it
/// (times come from a fixed test clock, so they are stable), told as a story (see `story`).
#[test]
fn scenario_event_traces() {
    let (count, failures) = snapshot_traces(&root().join("runbooks"));
    assert!(count >= 6);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The traces of the fixtures' scenario cases (`tests/golden/fixtures/*/tests.yaml`): runs a
/// shipped runbook should never show, such as an undo the API server refuses (issue 15, item
/// 8: the claim cannot shrink back, so the run ends rollback-failed with a must-fix).
#[test]
fn fixture_event_traces() {
    let (count, failures) = snapshot_traces(&root().join("tests/golden/fixtures"));
    assert!(count >= 1);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Snapshots the trace of every case of every test file under `folder` into
/// `tests/golden/traces/RUNBOOK@CASE.snap`: how many, and which differ.
fn snapshot_traces(folder: &Path) -> (usize, Vec<String>) {
    let root = root();
    let (catalog, diagnostics, _) = runbook_core::load_catalog(&[folder.to_path_buf()]);
    assert!(!diagnostics.has_errors());
    let catalog = std::sync::Arc::new(catalog);
    let settings = golden_settings("traces");
    let mut failures = Vec::new();
    let mut count = 0;
    for path in runbook_core::testing::find_test_files(&[folder.to_path_buf()]).0 {
        let file = runbook_core::testing::load_test_file(&path).expect("valid test file");
        for case in &file.document.spec.cases {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .expect("runtime");
            let result = runtime.block_on(runbook_core::testing::run_case(&catalog, &file, case));
            if !result.failures.is_empty() {
                failures.push(format!("{}: {}", case.name, result.failures.join("; ")));
            }
            let trace = story(&result.trace)
                // The checkout's location differs between machines.
                .replace(&format!("{}/", root.display()), "");
            let name = format!(
                "{}@{}",
                file.document.spec.runbook,
                case.name.replace(' ', "-")
            );
            count += 1;
            settings.bind(|| {
                let snapshot = name.clone();
                if std::panic::catch_unwind(|| insta::assert_snapshot!(snapshot, trace)).is_err() {
                    failures.push(format!("{name}: trace differs from its golden file"));
                }
            });
        }
    }
    (count, failures)
}

/// The runbook library (issue 6): at least 30 runbooks, every one with at least two scenario
/// test cases and a row in `runbooks/README.md`; every alert of the SRE handbook's
/// alert-to-action table that acts on the platform triggers a runbook that verifies.
#[test]
fn the_runbook_library_covers_the_guides() {
    let root = root();
    let (catalog, diagnostics, _) = runbook_core::load_catalog(&[root.join("runbooks")]);
    assert!(!diagnostics.has_errors());
    assert!(
        catalog.runbooks.len() >= 30,
        "{} runbooks",
        catalog.runbooks.len()
    );
    let mut cases: std::collections::BTreeMap<String, usize> = Default::default();
    for path in runbook_core::testing::find_test_files(&[root.join("runbooks")]).0 {
        let file = runbook_core::testing::load_test_file(&path).expect("valid test file");
        *cases.entry(file.document.spec.runbook.clone()).or_default() +=
            file.document.spec.cases.len();
    }
    let table = std::fs::read_to_string(root.join("runbooks/README.md")).expect("README");
    let mut problems = Vec::new();
    for runbook in &catalog.runbooks {
        let name = &runbook.name;
        let count = cases.get(name).copied().unwrap_or(0);
        if count < 2 {
            problems.push(format!(
                "{name}: {count} scenario test case(s), want at least 2"
            ));
        }
        if !table.contains(&format!("[`{name}`]({name}/runbook.yaml)")) {
            problems.push(format!("{name}: no row in runbooks/README.md"));
        }
    }
    for alert in [
        "HighMemoryUsage",
        "PodCrashLoopBackOff",
        "HighErrorRate",
        "DatabaseConnectionExhausted",
        "CertificateExpiringSoon",
        "HighLatency",
        "OpenBaoSealed",
        "JetstreamLagHigh",
        "VLLMHighLatency",
        "VLLMOOMKilled",
        "GPUUtilizationLow",
        "GPUMemoryExhausted",
        "MilvusQuerySlow",
        "EmbeddingQueueBacklog",
        "RAGRetrievalEmpty",
        "LLMGatewayQuotaExhausted",
    ] {
        let triggered: Vec<_> = catalog
            .runbooks
            .iter()
            .filter(|r| r.triggers.iter().any(|t| t.alert_name == alert))
            .collect();
        if triggered.is_empty() {
            problems.push(format!("no runbook is triggered by {alert}"));
        }
        for runbook in triggered {
            if !runbook
                .steps
                .iter()
                .any(|step| step.action.keyword() == "verify")
            {
                problems.push(format!(
                    "{} (triggered by {alert}) has no verify step",
                    runbook.name
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The library's table in `runbooks/README.md` is what `runbook list --format markdown`
/// prints (issue 11): derived from the runbooks, never edited by hand. To refresh it:
/// `INSTA_UPDATE=always cargo test --test golden`, then review the diff.
#[test]
fn the_library_table_is_generated_by_runbook_list() {
    const BEGIN: &str = "<!-- BEGIN runbook list --format markdown -->\n";
    const END: &str = "<!-- END runbook list --format markdown -->";
    let (code, generated, stderr) = runbook(&["list", "--format", "markdown"]);
    assert_eq!(code, 0, "{stderr}");
    let path = root().join("runbooks/README.md");
    let readme = std::fs::read_to_string(&path).expect("runbooks/README.md");
    let start = readme
        .find(BEGIN)
        .expect("the README marks where the table begins")
        + BEGIN.len();
    let end = start + readme[start..].find(END).expect("and where it ends");
    if readme[start..end] == generated {
        return;
    }
    if std::env::var("INSTA_UPDATE").as_deref() == Ok("always") {
        let updated = format!("{}{generated}{}", &readme[..start], &readme[end..]);
        std::fs::write(&path, updated).expect("write runbooks/README.md");
        return;
    }
    let first = readme[start..end]
        .lines()
        .zip(generated.lines())
        .find(|(old, new)| old != new)
        .map(|(old, new)| format!("README: {old}\nlist:   {new}"))
        .unwrap_or_else(|| "the tables differ in length".to_owned());
    panic!("runbooks/README.md's table is not `runbook list --format markdown`:\n{first}");
}
