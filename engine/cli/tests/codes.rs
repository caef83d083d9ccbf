//! The diagnostic codes are public (JSON `code`, GitHub `title=`, `# runbook:allow <code>`), so
//! each must be shown to a user somewhere a reviewer sees it: every code in the registry appears
//! in at least one golden snapshot under `tests/golden/diagnostics/`.
//!
//! Most codes come from `runbook validate` on the corpus in `tests/golden/diagnostics/cases/`
//! (snapshotted by `golden.rs`). Codes that only scenario files produce come from the small
//! corpus in `tests/golden/diagnostics/scenarios/`, snapshotted here.
//!
//! To accept changed output: `INSTA_UPDATE=always cargo test --test codes`, then review the diff.

use std::path::{Path, PathBuf};
use std::process::Command;

use runbook_core::diagnostic::Code;

/// Codes no input can produce, each with the reason; every other code needs a golden case.
const UNREACHABLE: [(Code, &str); 1] = [(
    Code::Internal,
    "guards an invariant of the checker; reaching it is a bug",
)];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

fn snapshots(folder: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(folder).expect("golden folder").flatten() {
        let path = entry.path();
        if path.is_dir() {
            snapshots(&path, found);
        } else if path
            .extension()
            .is_some_and(|extension| extension == "snap")
        {
            found.push(path);
        }
    }
}

#[test]
fn every_code_has_a_unique_name_and_a_doc() {
    let mut names: Vec<&str> = Code::ALL.iter().map(|code| code.as_str()).collect();
    names.sort_unstable();
    let count = names.len();
    names.dedup();
    assert_eq!(names.len(), count, "two codes share a name");
    for code in Code::ALL {
        assert!(!code.doc().is_empty(), "`{code}` has no doc");
        assert_eq!(Code::from_name(code.as_str()), Some(*code));
    }
}

#[test]
fn every_code_appears_in_a_golden_diagnostic() {
    let mut files = Vec::new();
    snapshots(&root().join("tests/golden/diagnostics"), &mut files);
    let text: String = files
        .iter()
        .map(|path| std::fs::read_to_string(path).expect("snapshot"))
        .collect();
    let mut missing = Vec::new();
    for code in Code::ALL {
        let shown = text.contains(&format!("error[{code}]:"))
            || text.contains(&format!("warning[{code}]:"));
        let unreachable = UNREACHABLE.iter().any(|(exempt, _)| exempt == code);
        if unreachable {
            assert!(
                !shown,
                "`{code}` is listed as unreachable but a golden shows it"
            );
        } else if !shown {
            missing.push(format!("{code} ({})", code.doc()));
        }
    }
    assert!(
        missing.is_empty(),
        "no golden case under tests/golden/diagnostics/ shows these codes; add one to cases/:\n{}",
        missing.join("\n")
    );
}

/// Scenario files are checked when a run loads them; the run must refuse each broken one.
#[test]
fn broken_scenarios_get_precise_diagnostics() {
    let folder = root().join("tests/golden/diagnostics/scenarios");
    let mut cases: Vec<String> = std::fs::read_dir(&folder)
        .expect("scenario corpus")
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".scenario.yaml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 3, "found {cases:?}");
    let state = std::env::temp_dir().join(format!("runbook-codes-{}", std::process::id()));
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(&folder);
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    let mut failures = Vec::new();
    for case in &cases {
        let runbook = "tests/golden/diagnostics/scenarios/simulated.yaml";
        let scenario = format!("tests/golden/diagnostics/scenarios/{case}");
        let output = Command::new(env!("CARGO_BIN_EXE_runbook"))
            .args(["run", runbook, "--simulate", &scenario, "--state-dir"])
            .arg(&state)
            .current_dir(root())
            .env_remove("RUNBOOK_DIR")
            .env("RUNBOOK_LOG", "off")
            .output()
            .expect("runbook runs");
        let code = output.status.code().unwrap_or(-1);
        if code != 2 {
            failures.push(format!("{case}: exit {code}, expected 2"));
        }
        let shown = format!(
            "$ runbook run {runbook} --simulate {scenario}\nexit: {code}\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let name = case.trim_end_matches(".scenario.yaml");
        settings.bind(|| {
            if std::panic::catch_unwind(|| insta::assert_snapshot!(name, shown)).is_err() {
                failures.push(format!("{case}: output differs from its snapshot"));
            }
        });
    }
    let _ = std::fs::remove_dir_all(&state);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
