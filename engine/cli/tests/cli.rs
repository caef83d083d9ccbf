//! The command line as a user drives it: exit codes, output formats, param binding, and the
//! schema that ships in `schemas/`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

fn runbook_in(dir: &Path, args: &[&str]) -> Output {
    runbook_with(dir, args, &[])
}

/// `runbook` in `dir` with `env` set (after the defaults, so it may set `RUNBOOK_LOG`).
fn runbook_with(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_runbook"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUNBOOK_DIR")
        .env("RUNBOOK_LOG", "off")
        .envs(env.iter().copied())
        .output()
        .expect("runbook runs");
    Output {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn runbook(args: &[&str]) -> Output {
    runbook_in(&root(), args)
}

/// A runbooks folder in a temporary directory, holding `files`.
fn folder(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, text) in files {
        let path = dir.path().join("runbooks").join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }
    dir
}

const SCALE: &str = r#"apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata:
  name: scale-api
spec:
  description: Scale the API.
  params:
    - name: namespace
      pattern: "[a-z0-9-]+"
      from: alert.labels.namespace
    - name: replicas
      type: integer
      default: 3
  triggers:
    - alertName: HighLatency
      matchers: ['severity="critical"']
  steps:
    - id: scale
      scale: {name: api, namespace: "${params.namespace}", replicas: "${params.replicas}"}
    - id: restart
      needs: []
      restart: {name: worker, namespace: "${params.namespace}"}
      irreversible: a restart replaces pods; there is nothing to put back
    - id: check
      needs: [scale, restart]
      verify: "true"
"#;

const NO_UNDO: &str = r#"apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata:
  name: flush
spec:
  steps:
    - run: [redis-cli, FLUSHALL]
"#;

#[test]
fn shipped_runbooks_validate_with_warnings_denied() {
    let out = runbook(&["validate", "--deny-warnings"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("0 errors, 0 warnings"),
        "{}",
        out.stderr
    );
}

#[test]
fn missing_undo_is_a_warning_and_deny_warnings_makes_it_an_error() {
    let dir = folder(&[("flush.yaml", NO_UNDO)]);
    let out = runbook_in(dir.path(), &["validate"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("runbooks/flush.yaml:7:7: warning[missing-undo]: step `run-1` changes the system (`run`) but has no `undo`"),
        "{}",
        out.stderr
    );
    let out = runbook_in(dir.path(), &["validate", "--deny-warnings"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .contains("runbooks/flush.yaml:7:7: error[missing-undo]: step `run-1`"),
        "{}",
        out.stderr
    );
}

#[test]
fn allow_pragma_waives_the_missing_undo_lint_and_gives_the_reason() {
    let text = NO_UNDO.replace(
        "    - run:",
        "    # runbook:allow missing-undo -- the cache refills itself\n    - run:",
    );
    let dir = folder(&[("flush.yaml", &text)]);
    let out = runbook_in(dir.path(), &["validate", "--deny-warnings"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = runbook_in(dir.path(), &["plan", "flush"]);
    assert!(
        out.stdout
            .contains("undo: irreversible: the cache refills itself"),
        "{}",
        out.stdout
    );
}

#[test]
fn json_and_github_formats_for_ci() {
    let broken = NO_UNDO.replace("  steps:", "  stepz:");
    let dir = folder(&[("flush.yaml", &broken)]);
    let out = runbook_in(dir.path(), &["validate", "--format", "json"]);
    assert_eq!(out.code, 2);
    let items: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON diagnostics");
    let first = &items[0];
    assert_eq!(first["file"], "runbooks/flush.yaml");
    assert_eq!(
        (first["line"].as_u64(), first["column"].as_u64()),
        (Some(6), Some(3))
    );
    assert_eq!(first["code"], "unknown-field");
    assert_eq!(first["severity"], "error");
    assert_eq!(first["help"], "did you mean `steps`?");

    let out = runbook_in(dir.path(), &["validate", "--format", "github"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stdout.lines().any(|line| line.starts_with("::error file=runbooks/flush.yaml,line=6,col=3,")
            && line.contains("title=unknown-field::unknown field `stepz` in runbook spec%0Ahelp: did you mean `steps`?")),
        "{}",
        out.stdout
    );
}

#[test]
fn caret_excerpt_only_when_asked_or_on_a_terminal() {
    let broken = NO_UNDO.replace("  steps:", "  stepz:");
    let dir = folder(&[("flush.yaml", &broken)]);
    let plain = runbook_in(dir.path(), &["validate"]);
    assert!(
        !plain.stderr.contains(" | "),
        "no excerpt off a terminal: {}",
        plain.stderr
    );
    let excerpt = runbook_in(dir.path(), &["validate", "--excerpt", "always"]);
    assert!(
        excerpt.stderr.contains("6 |   stepz:\n  |   ^^^^^\n"),
        "{}",
        excerpt.stderr
    );
}

#[test]
fn plan_binds_set_params_and_shows_parallel_stages() {
    let dir = folder(&[("scale.yaml", SCALE)]);
    let out = runbook_in(
        dir.path(),
        &[
            "plan",
            "scale-api",
            "--set",
            "namespace=team-a",
            "--set",
            "replicas=5",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("namespace = team-a (--set)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("replicas = 5 (--set)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("scale: scale Deployment team-a/api to 5 replicas"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("stage 1 (in parallel: scale, restart)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("3. check: verify true  (after scale, restart)"),
        "{}",
        out.stdout
    );

    let out = runbook_in(
        dir.path(),
        &[
            "plan",
            "scale-api",
            "--set",
            "namespace=team-a",
            "--format",
            "json",
        ],
    );
    let plan: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON plan");
    assert_eq!(
        plan["stages"],
        serde_json::json!([["scale", "restart"], ["check"]])
    );
    assert_eq!(
        plan["params"]["replicas"],
        serde_json::json!({"value": 3, "origin": "default", "secret": false})
    );
    assert_eq!(plan["steps"][0]["undo"]["kind"], "automatic");
    assert_eq!(plan["steps"][1]["undo"]["kind"], "irreversible");
}

#[test]
fn plan_refuses_bad_param_values_before_they_reach_anything() {
    let dir = folder(&[("scale.yaml", SCALE)]);
    let out = runbook_in(
        dir.path(),
        &["plan", "scale-api", "--set", "namespace=$(id); rm -rf /"],
    );
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("param `namespace` from --set: `$(id); rm -rf /` does not match the pattern `[a-z0-9-]+`"), "{}", out.stderr);
    let out = runbook_in(
        dir.path(),
        &[
            "plan",
            "scale-api",
            "--set",
            "namespace=a",
            "--set",
            "replicas=many",
        ],
    );
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .contains("param `replicas` from --set: `many` is not an integer"),
        "{}",
        out.stderr
    );
    let out = runbook_in(dir.path(), &["plan", "scale-api", "--set", "namespase=a"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .contains("runbook `scale-api` has no param `namespase`; did you mean `namespace`?"),
        "{}",
        out.stderr
    );
}

#[test]
fn plan_without_a_required_param_shows_the_template_and_says_so() {
    let dir = folder(&[("scale.yaml", SCALE)]);
    let out = runbook_in(dir.path(), &["plan", "scale-api"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("note: param `namespace` is required"),
        "{}",
        out.stderr
    );
    assert!(
        out.stdout
            .contains("scale Deployment ${params.namespace}/api"),
        "{}",
        out.stdout
    );
}

fn payload(alerts: &str) -> String {
    format!(
        r#"{{"version":"4","groupKey":"{{}}:{{alertname=\"HighLatency\"}}","status":"firing","receiver":"runbook",
        "groupLabels":{{"alertname":"HighLatency"}},"commonLabels":{{}},"commonAnnotations":{{}},
        "externalURL":"http://alertmanager:9093","alerts":[{alerts}]}}"#
    )
}

#[test]
fn plan_binds_params_from_the_first_matching_firing_alert() {
    let dir = folder(&[("scale.yaml", SCALE)]);
    let alerts = r#"
        {"status":"resolved","labels":{"alertname":"HighLatency","severity":"critical","namespace":"old"},"annotations":{},"startsAt":"2026-11-22T03:00:00Z","endsAt":"2026-11-22T03:05:00Z","fingerprint":"aaa"},
        {"status":"firing","labels":{"alertname":"HighLatency","severity":"warning","namespace":"quiet"},"annotations":{},"startsAt":"2026-11-22T03:00:00Z","endsAt":"0001-01-01T00:00:00Z","fingerprint":"bbb"},
        {"status":"firing","labels":{"alertname":"HighLatency","severity":"critical","namespace":"shop"},"annotations":{},"startsAt":"2026-11-22T03:00:00Z","endsAt":"0001-01-01T00:00:00Z","fingerprint":"ccc"}"#;
    std::fs::write(dir.path().join("alert.json"), payload(alerts)).expect("write");
    let out = runbook_in(dir.path(), &["plan", "scale-api", "--alert", "alert.json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("triggered by: firing alert HighLatency (fingerprint ccc)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("namespace = shop (alert)"),
        "{}",
        out.stdout
    );

    let hostile = r#"{"status":"firing","labels":{"alertname":"HighLatency","severity":"critical","namespace":"x; rm -rf /"},"annotations":{},"fingerprint":"ddd"}"#;
    std::fs::write(dir.path().join("hostile.json"), payload(hostile)).expect("write");
    let out = runbook_in(
        dir.path(),
        &["plan", "scale-api", "--alert", "hostile.json"],
    );
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains(
            "param `namespace` from alert.labels.namespace: `x; rm -rf /` does not match"
        ),
        "{}",
        out.stderr
    );

    let other = r#"{"status":"firing","labels":{"alertname":"DiskFull"},"annotations":{}}"#;
    std::fs::write(dir.path().join("other.json"), payload(other)).expect("write");
    let out = runbook_in(dir.path(), &["plan", "scale-api", "--alert", "other.json"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("no firing alert in other.json matches a trigger of runbook `scale-api` (triggers: HighLatency)"), "{}", out.stderr);

    std::fs::write(
        dir.path().join("v3.json"),
        payload(other).replace(r#""version":"4""#, r#""version":"3""#),
    )
    .expect("write");
    let out = runbook_in(dir.path(), &["plan", "scale-api", "--alert", "v3.json"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("unsupported payload version `3`"),
        "{}",
        out.stderr
    );
}

const DELETE_POD: &str = r#"apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata:
  name: delete-pod
spec:
  params:
    - name: pod
      pattern: "[-a-z0-9]+"
      from: alert.labels.pod
    - name: namespace
      pattern: "[-a-z0-9]+"
      from: alert.labels.namespace
    - name: lines
      type: integer
      default: -1
      allowOptionLike: true
  triggers:
    - alertName: HighLatency
  steps:
    - run: [kubectl, logs, "${params.pod}", "--namespace=${params.namespace}", --tail, "${params.lines}"]
      readonly: true
    - run: [kubectl, delete, pod, "${params.pod}", "--namespace=${params.namespace}"]
      irreversible: a deleted pod is replaced by its controller
"#;

/// Issue 13: an alert label `pod=--all` reached `kubectl delete pod --all`. A pattern that
/// allows `-` (as `[-a-z0-9]+` does) lets it through, so a value that opens an argument of a
/// command and starts with `-` is refused when params are bound, from an alert or `--set`,
/// unless the param says `allowOptionLike: true`. Inside an argument it is only text.
#[test]
fn a_param_value_that_would_be_an_option_is_refused_where_it_opens_an_argument() {
    let dir = folder(&[("delete-pod.yaml", DELETE_POD)]);
    let out = runbook_in(dir.path(), &["validate", "--deny-warnings"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let alert = r#"{"status":"firing","labels":{"alertname":"HighLatency","pod":"--all","namespace":"shop"},"annotations":{},"fingerprint":"eee"}"#;
    std::fs::write(dir.path().join("all.json"), payload(alert)).expect("write");
    let out = runbook_in(dir.path(), &["plan", "delete-pod", "--alert", "all.json"]);
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(
        out.stderr.contains("param `pod` from alert.labels.pod: `--all` starts with `-` and opens an argument of a command in step `run-1`, where it would be taken as an option; if the param may hold such values, give it `allowOptionLike: true`"),
        "{}",
        out.stderr
    );
    let out = runbook_in(
        dir.path(),
        &[
            "run",
            "delete-pod",
            "--set",
            "pod=-a",
            "--set",
            "namespace=shop",
            "--yes",
        ],
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("param `pod` from --set: `-a` starts with `-`"),
        "{}",
        out.stderr
    );
    // Inside an argument (`--namespace=-x`) it is that argument's text; and `lines` (`--tail
    // -1`, every line) allows it.
    let out = runbook_in(
        dir.path(),
        &[
            "plan",
            "delete-pod",
            "--set",
            "pod=api-0",
            "--set",
            "namespace=-x",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("kubectl logs api-0 --namespace=-x --tail -1"),
        "{}",
        out.stdout
    );
    let strict = DELETE_POD.replace("      allowOptionLike: true\n", "");
    std::fs::write(dir.path().join("runbooks/delete-pod.yaml"), strict).expect("write");
    let out = runbook_in(
        dir.path(),
        &[
            "plan",
            "delete-pod",
            "--set",
            "pod=api-0",
            "--set",
            "namespace=shop",
        ],
    );
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(
        out.stderr
            .contains("param `lines` from its default: `-1` starts with `-`"),
        "{}",
        out.stderr
    );
}

#[test]
fn plan_names_what_it_cannot_find() {
    let out = runbook(&["plan", "openbao-seal"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains(
            "no runbook named `openbao-seal` in runbooks; did you mean `openbao-sealed`?"
        ),
        "{}",
        out.stderr
    );
    let out = runbook(&["plan", "openbao-sealed", "--dir", "nowhere"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("runbooks folder `nowhere` not found"),
        "{}",
        out.stderr
    );
}

#[test]
fn plan_accepts_a_path_and_refuses_an_invalid_runbook_with_its_diagnostics() {
    let out = runbook(&[
        "plan",
        "runbooks/openbao-sealed/runbook.yaml",
        "--format",
        "json",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let plan: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON plan");
    assert_eq!(plan["runbook"], "openbao-sealed");

    let broken = SCALE.replace("needs: [scale, restart]", "needs: [scale, restrat]");
    let dir = folder(&[
        ("scale.yaml", &broken),
        ("flush.yaml", &NO_UNDO.replace("  steps:", "  stepz:")),
    ]);
    let out = runbook_in(dir.path(), &["plan", "scale-api", "--set", "namespace=a"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains(
            "runbooks/scale.yaml:25:22: error[unknown-step]: `needs` names unknown step `restrat`"
        ),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("error: runbook `scale-api` is invalid"),
        "{}",
        out.stderr
    );
    // A broken file elsewhere in the folder does not stop planning a good runbook.
    let dir = folder(&[
        ("scale.yaml", SCALE),
        ("flush.yaml", &NO_UNDO.replace("  steps:", "  stepz:")),
    ]);
    let out = runbook_in(dir.path(), &["plan", "scale-api", "--set", "namespace=a"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("note: 1 file in the runbooks folder has problems (runbooks/flush.yaml)"),
        "{}",
        out.stderr
    );
}

#[test]
fn list_shows_the_catalog() {
    let out = runbook(&["list"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mut lines = out.stdout.lines();
    assert!(lines.next().is_some_and(|header| header.starts_with("NAME")
        && header.contains("TRIGGERS")
        && header.ends_with("FILE")));
    assert!(out
        .stdout
        .lines()
        .any(|line| line.starts_with("openbao-sealed")
            && line.contains("OpenBaoSealed")
            && line.ends_with("runbooks/openbao-sealed/runbook.yaml")));
}

#[test]
fn committed_schema_is_current() {
    let out = runbook(&["schema"]);
    assert_eq!(out.code, 0);
    let committed = std::fs::read_to_string(root().join("schemas/runbook.schema.json"))
        .expect("schemas/runbook.schema.json");
    assert!(
        committed == out.stdout,
        "schemas/runbook.schema.json is out of date: run `cargo run -q -- schema > schemas/runbook.schema.json` and commit it"
    );
}

/// The committed schema, read by an independent JSON Schema validator, accepts every document
/// shipped in `runbooks/`, and refuses an unknown field.
#[test]
fn committed_schema_accepts_every_shipped_document() {
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("schemas/runbook.schema.json")).expect("schema"),
    )
    .expect("schema JSON");
    let validator = jsonschema::validator_for(&schema).expect("a valid JSON Schema");
    let mut checked = 0;
    let mut pending = vec![root().join("runbooks")];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read runbooks").flatten() {
            let path = entry.path();
            if path.is_dir() {
                // A runbook folder's scenarios are not runbooks: the schema is not theirs.
                if !path.ends_with("scenarios") {
                    pending.push(path);
                }
                continue;
            }
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if !(name.ends_with(".yaml") || name.ends_with(".yml"))
                || name.contains(".scenario.")
                || name.contains(".test.")
                || runbook_core::loader::is_test_file(&path)
            {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read");
            let source = runbook_core::source::SourceFile::new(&path, text);
            let mut diagnostics = runbook_core::diagnostic::Diagnostics::new();
            for document in runbook_core::yaml::parse(&source, &mut diagnostics) {
                let json = document.root.to_json();
                let errors: Vec<String> = validator
                    .iter_errors(&json)
                    .map(|e| e.to_string())
                    .collect();
                assert!(errors.is_empty(), "{}: {errors:?}", path.display());
                checked += 1;
            }
        }
    }
    assert!(checked >= 3, "checked {checked} documents");
    let bad = serde_json::json!({"apiVersion": "runbook.dev/v1alpha1", "kind": "Runbook", "metadata": {"name": "x"}, "spec": {"stepz": []}});
    assert!(!validator.is_valid(&bad));
}

/// Issue 16, item 5: ajv, the validator editors and CI tools use, refused the schema in its
/// default strict mode (`unknown format "uint32"`). It compiles it strictly now, accepts the
/// shipped runbooks and fact libraries, and refuses an unknown field.
#[test]
fn ajv_in_strict_mode_accepts_the_schema_and_the_shipped_documents_when_installed() {
    let ajv = |args: &[&str]| {
        Command::new("ajv")
            .args(["--spec=draft7", "--strict=true"])
            .args(args)
            .current_dir(root())
            .output()
    };
    let Ok(compiled) = ajv(&["compile", "-s", "schemas/runbook.schema.json"]) else {
        eprintln!("ajv is not installed; the schema was checked by the Rust validator only (.ci/run installs ajv-cli)");
        return;
    };
    let said = |output: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    };
    assert!(
        compiled.status.success(),
        "ajv refused the schema: {}",
        said(&compiled)
    );
    let shipped = ajv(&[
        "validate",
        "-s",
        "schemas/runbook.schema.json",
        "-d",
        "runbooks/*/runbook.yaml",
        "-d",
        "runbooks/lib/*.yaml",
    ])
    .expect("ajv runs");
    assert!(shipped.status.success(), "{}", said(&shipped));
    assert!(
        said(&shipped).contains("openbao-sealed/runbook.yaml valid"),
        "{}",
        said(&shipped)
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: runbook.dev/v1alpha1\nkind: Runbook\nmetadata: {name: x}\nspec:\n  stepz: []\n",
    )
    .expect("write");
    let refused = ajv(&[
        "validate",
        "-s",
        "schemas/runbook.schema.json",
        "-d",
        bad.to_str().expect("utf-8 path"),
    ])
    .expect("ajv runs");
    assert!(!refused.status.success(), "{}", said(&refused));
}

#[test]
fn graph_dot_is_valid_graphviz_when_dot_is_installed() {
    let out = runbook(&["graph", "openbao-sealed", "--format", "dot"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.starts_with("digraph \"openbao-sealed\" {"));
    let Ok(mut child) = Command::new("dot")
        .arg("-Tsvg")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        eprintln!(
            "graphviz `dot` is not installed; checked the golden output only (.ci/run installs it)"
        );
        return;
    };
    use std::io::Write as _;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(out.stdout.as_bytes())
        .expect("write");
    let result = child.wait_with_output().expect("dot runs");
    assert!(
        result.status.success(),
        "dot refused the graph: {}",
        String::from_utf8_lossy(&result.stderr)
    );
    assert!(String::from_utf8_lossy(&result.stdout).contains("<svg"));
}

#[test]
fn completions_for_shells() {
    for shell in ["bash", "zsh", "fish"] {
        let out = runbook(&["completions", shell]);
        assert_eq!(out.code, 0, "{shell}: {}", out.stderr);
        assert!(
            out.stdout.contains("validate") && out.stdout.contains("plan"),
            "{shell}"
        );
    }
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(runbook(&["plan"]).code, 2);
    assert_eq!(runbook(&["frobnicate"]).code, 2);
    assert_eq!(runbook(&["validate", "no/such/path"]).code, 2);
}

/// The example in README.md is a real, valid runbook.
#[test]
fn readme_example_validates() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let start = readme.find("```yaml\n").expect("a yaml block in README.md") + "```yaml\n".len();
    let end = start + readme[start..].find("```").expect("closed block");
    let dir = folder(&[("example.yaml", &readme[start..end])]);
    let out = runbook_in(dir.path(), &["validate", "--deny-warnings"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = runbook_in(
        dir.path(),
        &["plan", "flux-helmrelease-stuck", "--set", "release=podinfo"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("merge patch HelmRelease flux-system/podinfo"),
        "{}",
        out.stdout
    );
}

/// A `${...}` with spaces inside a string-form command stays one argument (found by the
/// diagnostics corpus review: the command used to be split inside the hole).
#[test]
fn string_commands_keep_template_holes_whole() {
    let text = r#"apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata:
  name: bump
spec:
  params:
    - name: replicas
      type: integer
      default: 3
  steps:
    - run: kubectl scale deploy/api --replicas=${params.replicas + 1} -n "team a"
      irreversible: demo
"#;
    let dir = folder(&[("bump.yaml", text)]);
    let out = runbook_in(dir.path(), &["plan", "bump", "--format", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let plan: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON plan");
    assert_eq!(
        plan["steps"][0]["action"]["summary"],
        "run kubectl scale deploy/api --replicas=4 -n 'team a'"
    );
}

#[test]
fn runbook_dir_comes_from_the_environment() {
    let dir = folder(&[("scale.yaml", SCALE)]);
    let output = Command::new(env!("CARGO_BIN_EXE_runbook"))
        .args(["list"])
        .current_dir(std::env::temp_dir())
        .env("RUNBOOK_DIR", dir.path().join("runbooks"))
        .env("RUNBOOK_LOG", "off")
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&output.stdout).contains("scale-api"));
}

/// Mermaid has no validator we can run offline, so check what breaks a Mermaid parser: every
/// edge joins declared nodes, and labels carry no raw quote, bracket or pipe.
#[test]
fn graph_mermaid_is_well_formed() {
    let out = runbook(&[
        "graph",
        "tests/golden/fixtures/every-action.yaml",
        "--set",
        "node=w1",
        "--format",
        "mermaid",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mut lines = out.stdout.lines();
    assert_eq!(lines.next(), Some("flowchart TD"));
    let mut declared = std::collections::BTreeSet::new();
    let mut edges = 0;
    for line in lines {
        let line = line.trim();
        let id: String = line
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        let rest = &line[id.len()..];
        if rest.starts_with(' ') {
            let target = rest.split_whitespace().last().expect("edge target");
            assert!(
                declared.contains(&id) && declared.contains(target),
                "edge to an undeclared node: {line}"
            );
            edges += 1;
        } else {
            let label_start = rest.find('"').expect("quoted label") + 1;
            let label_end = rest.rfind('"').expect("closing quote");
            let label = &rest[label_start..label_end];
            assert!(
                !label.contains(['"', '<', '>', '|', '`']),
                "unescaped label: {line}"
            );
            declared.insert(id);
        }
    }
    assert!(
        declared.len() > 20 && edges > 20,
        "{} nodes, {edges} edges",
        declared.len()
    );
}

fn state() -> tempfile::TempDir {
    tempfile::tempdir().expect("state dir")
}

#[test]
fn run_the_seed_end_to_end_against_the_simulator() {
    let state = state();
    let state_dir = state.path().to_str().expect("utf-8");
    let out = runbook(&[
        "run",
        "openbao-sealed",
        "--simulate",
        "runbooks/openbao-sealed/scenarios/default.yaml",
        "--yes",
        "--state-dir",
        state_dir,
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for expected in [
        "precondition spire.server.healthy: holds",
        "precondition openbao.unseal.shamir.shares.available: holds",
        "step run-1 succeeded: Unseal complete",
        "step verify-2 verify poll 1: true",
        "read openbao.unseal.shares = <redacted>",
        "Outcome: Succeeded (exit 0): all steps succeeded",
    ] {
        assert!(
            out.stderr.contains(expected),
            "missing {expected:?} in:\n{}",
            out.stderr
        );
    }
    assert!(
        !out.stderr.contains("c2ltdWxhdGVk"),
        "the Secret's data never shows"
    );

    // The run is recorded, and `show` replays it.
    let out = runbook(&["runs", "--state-dir", state_dir]);
    assert_eq!(out.code, 0);
    let line = out.stdout.lines().nth(1).expect("one run");
    assert!(
        line.contains("-openbao-sealed-") && line.contains("Succeeded"),
        "{}",
        out.stdout
    );
    let run_id = line.split_whitespace().next().expect("id");
    let out = runbook(&["show", run_id, "--state-dir", state_dir, "--output", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let events: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(
        events.first().map(|e| e["event"].clone()),
        Some(serde_json::json!("run-started"))
    );
    assert_eq!(
        events.last().map(|e| e["outcome"].clone()),
        Some(serde_json::json!("succeeded"))
    );
    assert!(events
        .iter()
        .any(|e| e["event"] == "step-intent" && e["step"] == "run-1"));
    let out = runbook(&["show", "no-such-run", "--state-dir", state_dir]);
    assert_eq!(out.code, 2);
}

#[test]
fn run_output_json_prints_the_journal_events() {
    let state = state();
    let out = runbook(&[
        "run",
        "openbao-sealed",
        "--simulate",
        "runbooks/openbao-sealed/scenarios/default.yaml",
        "--dry-run",
        "--output",
        "json",
        "--state-dir",
        state.path().to_str().expect("utf-8"),
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let events: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(events[0]["dryRun"], true);
    let finished = events.last().expect("events");
    assert_eq!(finished["event"], "run-finished");
    assert_eq!(
        finished["message"],
        "dry-run: the run would proceed; nothing was changed"
    );
}

/// A scenario where SPIRE is down: the precondition fails and nothing changes (exit 3).
#[test]
fn run_exit_codes_follow_the_outcome() {
    let dir = tempfile::tempdir().expect("dir");
    let scenario =
        std::fs::read_to_string(root().join("runbooks/openbao-sealed/scenarios/default.yaml"))
            .expect("scenario")
            .replace("        readyReplicas: 1\n", "        readyReplicas: 0\n");
    let path = dir.path().join("spire-down.scenario.yaml");
    std::fs::write(&path, scenario).expect("write");
    let state = state();
    let out = runbook(&[
        "run",
        "openbao-sealed",
        "--simulate",
        path.to_str().expect("utf-8"),
        "--yes",
        "--state-dir",
        state.path().to_str().expect("utf-8"),
    ]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("precondition spire.server.healthy: DOES NOT HOLD"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("nothing was changed"), "{}", out.stderr);
}

/// `runbook` with no cluster configured: an empty HOME, no KUBECONFIG, not in a pod.
fn runbook_without_cluster(home: &Path, args: &[&str], kubeconfig: Option<&Path>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_runbook"));
    command
        .args(args)
        .current_dir(root())
        .env_remove("RUNBOOK_DIR")
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("HOME", home)
        .env("RUNBOOK_STATE_DIR", home.join("state"))
        // The default log level, as a user has it: nothing but our one line may show.
        .env_remove("RUNBOOK_LOG");
    if let Some(path) = kubeconfig {
        command.env("KUBECONFIG", path);
    }
    let output = command.output().expect("runbook runs");
    Output {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[test]
fn run_needs_a_cluster_or_a_scenario() {
    let home = tempfile::tempdir().expect("temp dir");
    let out = runbook_without_cluster(home.path(), &["run", "openbao-sealed"], None);
    assert_eq!(out.code, 6, "{}", out.stderr);
    assert_eq!(
        out.stderr.trim(),
        "error: no cluster to connect to: KUBECONFIG is unset, ~/.kube/config does not exist, and this is not a pod; point KUBECONFIG at a kubeconfig, or run against a simulated cluster with --simulate SCENARIO"
    );
    let out = runbook(&[
        "run",
        "openbao-sealed",
        "--simulate",
        "runbooks/openbao-sealed/runbook.yaml",
    ]);
    assert_eq!(out.code, 2, "a runbook is not a scenario");
    assert!(
        out.stderr
            .contains("scenario runbooks/openbao-sealed/runbook.yaml is invalid"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_lease_lock_needs_the_live_cluster() {
    let state = state();
    let out = runbook(&[
        "run",
        "openbao-sealed",
        "--simulate",
        "runbooks/openbao-sealed/scenarios/default.yaml",
        "--yes",
        "--lock",
        "lease",
        "--state-dir",
        state.path().to_str().expect("utf-8"),
    ]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "error: cannot take the run lock: --lock lease needs the live cluster; it cannot be used with --simulate"
        ),
        "{}",
        out.stderr
    );
}

#[test]
fn an_unreachable_cluster_is_one_line_naming_the_context_and_server() {
    // A port nobody listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let home = tempfile::tempdir().expect("temp dir");
    let kubeconfig = home.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: dev\nclusters:\n- name: dev\n  cluster: {{server: 'http://127.0.0.1:{port}'}}\nusers:\n- name: me\n  user: {{token: abc}}\ncontexts:\n- name: dev\n  context: {{cluster: dev, user: me, namespace: shop}}\n- name: prod\n  context: {{cluster: dev, user: me}}\n"
        ),
    )
    .expect("write");
    let out = runbook_without_cluster(
        home.path(),
        &["run", "openbao-sealed", "--yes", "--request-timeout", "5s"],
        Some(&kubeconfig),
    );
    assert_eq!(out.code, 6, "{}", out.stderr);
    let lines: Vec<&str> = out.stderr.trim().lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "one line, not a stack of causes: {}",
        out.stderr
    );
    assert!(
        lines[0].starts_with(&format!(
            "error: cannot reach the Kubernetes API server (context dev, server http://127.0.0.1:{port}): "
        )),
        "{}",
        out.stderr
    );
    assert!(lines[0].contains("refused"), "{}", out.stderr);

    let out = runbook_without_cluster(
        home.path(),
        &["run", "openbao-sealed", "--context", "staging"],
        Some(&kubeconfig),
    );
    assert_eq!(out.code, 6, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("has no context `staging` (it has: dev, prod)"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_second_run_of_the_same_runbook_and_params_is_refused_naming_the_holder() {
    use sha2::Digest as _;
    let state = state();
    let digest = sha2::Sha256::digest(b"{}");
    let target = format!(
        "openbao-sealed-{}",
        digest[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let _held =
        runbook_core::lock::RunLock::acquire(state.path(), &target, "the-first-run").expect("lock");
    let out = runbook(&[
        "run",
        "openbao-sealed",
        "--simulate",
        "runbooks/openbao-sealed/scenarios/default.yaml",
        "--yes",
        "--state-dir",
        state.path().to_str().expect("utf-8"),
    ]);
    assert_eq!(out.code, 4, "{}", out.stderr);
    assert!(
        out.stderr.contains("already running") && out.stderr.contains("the-first-run"),
        "{}",
        out.stderr
    );
}

#[test]
fn runbook_test_reports_failures_and_exits_nonzero() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::copy(
        root().join("runbooks/openbao-sealed/scenarios/default.yaml"),
        dir.path().join("openbao-sealed.scenario.yaml"),
    )
    .expect("copy");
    let test = std::fs::read_to_string(root().join("runbooks/openbao-sealed/tests.yaml"))
        .expect("test")
        // A flat folder: the scenario sits beside the test file.
        .replacen(
            "scenario: scenarios/default.yaml",
            "scenario: openbao-sealed.scenario.yaml",
            1,
        )
        .replacen(
            "steps: {run-1: succeeded, verify-2: succeeded}",
            "steps: {run-1: succeeded, verify-2: failed}",
            1,
        );
    std::fs::write(dir.path().join("openbao-sealed.test.yaml"), test).expect("write");
    let out = runbook(&["test", dir.path().to_str().expect("utf-8")]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.stdout.contains("FAIL") && out.stdout.contains(":: unseals and verifies"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("step `verify-2`: expected Failed, got Succeeded"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.trim_end().ends_with("5 passed, 1 failed"),
        "{}",
        out.stdout
    );
}

/// Issue 15, item 9: `run --simulate` waits on a virtual clock, so a verify that gives up
/// after 10 minutes takes no 10 minutes, while the journal still tells of 10 minutes of
/// polling from when the run started; `--real-time` waits as a live run would.
#[test]
fn a_simulated_run_waits_on_a_virtual_clock_unless_told_to_wait_in_real_time() {
    let runbook_text = |timeout: &str| {
        format!(
            "apiVersion: runbook.dev/v1alpha1\nkind: Runbook\nmetadata: {{name: never-ready}}\nspec:\n  steps:\n    - {{id: scale-api, scale: {{name: api, namespace: shop, replicas: 3}}}}\n    - {{id: wait, verify: \"false\", interval: 1m, timeout: {timeout}}}\n"
        )
    };
    let scenario = "apiVersion: runbook.dev/v1alpha1\nkind: Scenario\nmetadata: {name: shop}\nspec:\n  objects:\n    - {apiVersion: apps/v1, kind: Deployment, metadata: {name: api, namespace: shop}, spec: {replicas: 1}}\n";
    let dir = folder(&[("never-ready.yaml", &runbook_text("10m"))]);
    std::fs::write(dir.path().join("shop.scenario.yaml"), scenario).expect("write");
    let state = state();
    let state_dir = state.path().to_str().expect("utf-8");
    let run = |extra: &[&str]| {
        let started = std::time::Instant::now();
        let mut args = vec![
            "run",
            "never-ready",
            "--simulate",
            "shop.scenario.yaml",
            "--output",
            "json",
            "--state-dir",
            state_dir,
        ];
        args.extend_from_slice(extra);
        let out = runbook_in(dir.path(), &args);
        (out, started.elapsed())
    };
    let (out, took) = run(&[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        took < std::time::Duration::from_secs(60),
        "a 10-minute verify took {took:?} on the virtual clock"
    );
    let events: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let time = |event: &serde_json::Value| {
        event["time"]
            .as_str()
            .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
            .expect("a time")
    };
    let first = time(events.first().expect("events"));
    let last = time(events.last().expect("events"));
    let waited = last.duration_since(first).expect("in order").as_secs();
    assert_eq!(
        waited / 60,
        10,
        "the journal tells of the 10 minutes waited"
    );
    let since_start = std::time::SystemTime::now()
        .duration_since(first)
        .expect("started in the past");
    assert!(
        since_start < std::time::Duration::from_secs(120),
        "the run starts when it started, {since_start:?} ago"
    );
    let polls = events
        .iter()
        .filter(|e| e["event"] == "verify-polled")
        .count();
    assert!((10..=11).contains(&polls), "{polls} polls a minute apart");
    assert!(
        events.last().expect("events")["message"]
            .as_str()
            .is_some_and(|m| m.contains("timed out after 10m")),
        "{}",
        out.stdout
    );

    // In real time, a 2-second verify takes its 2 seconds.
    std::fs::write(
        dir.path().join("runbooks/never-ready.yaml"),
        runbook_text("2s").replace("interval: 1m", "interval: 1s"),
    )
    .expect("write");
    let (out, took) = run(&["--real-time"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(took >= std::time::Duration::from_secs(2), "{took:?}");
    let out = runbook_in(dir.path(), &["run", "never-ready", "--real-time"]);
    assert_eq!(out.code, 2, "--real-time needs --simulate: {}", out.stderr);
}

/// A run that scales `api`, then polls a verify that never holds, until it is interrupted.
const SLOW: &str = r#"apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata:
  name: slow
spec:
  steps:
    - {id: scale-api, scale: {name: api, namespace: shop, replicas: 3}}
    - {id: wait, verify: "false", interval: 1s, timeout: 1h}
  rollback: page-oncall
"#;

/// `runbook run slow` against the simulated shop with `flags`, its output piped.
fn slow_run(dir: &Path, state: &Path, flags: &[&str]) -> Command {
    let scenario = "apiVersion: runbook.dev/v1alpha1\nkind: Scenario\nmetadata: {name: shop}\nspec:\n  objects:\n    - {apiVersion: apps/v1, kind: Deployment, metadata: {name: api, namespace: shop}, spec: {replicas: 1}}\n";
    std::fs::write(dir.join("shop.scenario.yaml"), scenario).expect("write");
    let mut command = Command::new(env!("CARGO_BIN_EXE_runbook"));
    command
        .args([
            "run",
            "slow",
            "--simulate",
            "shop.scenario.yaml",
            // Watched as it happens: these tests interrupt it while its verify polls.
            "--real-time",
            "--state-dir",
        ])
        .arg(state)
        .args(flags)
        .current_dir(dir)
        .env("RUNBOOK_LOG", "off")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    command
}

/// Waits until the verify of the run in `state` is polling; its journal.
fn wait_until_polling(state: &Path) -> PathBuf {
    let journal_dir = state.join("runs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let polling = std::fs::read_dir(&journal_dir)
            .ok()
            .and_then(|mut entries| entries.next())
            .and_then(|entry| entry.ok())
            .filter(|entry| {
                std::fs::read_to_string(entry.path())
                    .is_ok_and(|text| text.contains("verify-polled"))
            });
        if let Some(entry) = polling {
            return entry.path();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the run never reached its verify"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Sends `signal` (`INT`, `TERM`) to `child`, as `kill -INT` does.
fn send(child: &std::process::Child, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

/// Ctrl-C, as `kill -INT`.
fn interrupt(child: &std::process::Child) {
    send(child, "INT");
}

/// Runs `slow` against the simulator with `flags`, sends `signal` once its verify is polling,
/// and returns the exit code, stderr and the journal's events.
fn signalled_run(flags: &[&str], signal: &str) -> (Option<i32>, String, Vec<serde_json::Value>) {
    let dir = folder(&[("slow.yaml", SLOW)]);
    let state = state();
    let child = slow_run(dir.path(), state.path(), flags)
        .spawn()
        .expect("runbook starts");
    let journal = wait_until_polling(state.path());
    send(&child, signal);
    let output = child.wait_with_output().expect("runbook ends");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let events = std::fs::read_to_string(journal)
        .expect("journal")
        .lines()
        .map(|line| serde_json::from_str(line).expect("JSON"))
        .collect();
    (output.status.code(), stderr, events)
}

fn event<'e>(events: &'e [serde_json::Value], name: &str) -> Option<&'e serde_json::Value> {
    events.iter().find(|event| event["event"] == name)
}

/// Ctrl-C (SIGINT) during a run: scheduling stops, the in-flight step is cancelled, nobody can
/// be asked (no terminal), so nothing is undone; the choice is journaled; exit 4.
#[test]
fn sigint_stops_the_run_and_journals_the_choice() {
    let (code, stderr, events) = signalled_run(&[], "INT");
    assert_eq!(code, Some(4), "{stderr}");
    assert!(
        stderr.contains("interrupted: leaving completed steps as they are"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was undone"), "{stderr}");
    let interrupted = event(&events, "interrupted").expect("interrupted is journaled");
    assert_eq!(interrupted["rollBack"], false, "{interrupted}");
}

/// Issue 13: Ctrl-C of a run started with `--yes` undid every step and paged on-call without
/// asking. `--yes` answers gates; with no terminal to ask, an interrupt undoes nothing and runs
/// no rollback, and the run can be resumed.
#[test]
fn sigint_with_yes_undoes_nothing_and_pages_nobody() {
    let (code, stderr, events) = signalled_run(&["--yes"], "INT");
    assert_eq!(code, Some(4), "{stderr}");
    let interrupted = event(&events, "interrupted").expect("interrupted is journaled");
    assert_eq!(interrupted["rollBack"], false, "{interrupted}");
    assert_eq!(
        interrupted["by"], "none (no terminal: nothing undone)",
        "{interrupted}"
    );
    assert!(event(&events, "undo-started").is_none(), "{events:?}");
    assert!(event(&events, "rollback-started").is_none(), "{events:?}");
    assert!(stderr.contains("`runbook resume "), "{stderr}");
}

/// SIGTERM is handled as a Ctrl-C with no terminal: the run stops resumable, exit 4, and
/// `--rollback-on-interrupt` makes either signal undo and roll back without asking.
#[test]
fn sigterm_stops_resumable_and_rollback_on_interrupt_rolls_back() {
    let (code, stderr, events) = signalled_run(&["--yes"], "TERM");
    assert_eq!(code, Some(4), "{stderr}");
    assert!(stderr.contains("terminated (SIGTERM)"), "{stderr}");
    let interrupted = event(&events, "interrupted").expect("interrupted is journaled");
    assert_eq!(interrupted["rollBack"], false, "{interrupted}");
    assert_eq!(
        interrupted["by"], "SIGTERM (nobody to ask: nothing undone)",
        "{interrupted}"
    );
    assert!(event(&events, "undo-started").is_none(), "{events:?}");

    for signal in ["TERM", "INT"] {
        let (code, stderr, events) = signalled_run(&["--yes", "--rollback-on-interrupt"], signal);
        assert_eq!(code, Some(4), "{stderr}");
        let interrupted = event(&events, "interrupted").expect("interrupted is journaled");
        assert_eq!(interrupted["rollBack"], true, "{interrupted}");
        assert_eq!(
            interrupted["by"], "--rollback-on-interrupt",
            "{interrupted}"
        );
        assert_eq!(
            event(&events, "undo-started").map(|undo| &undo["step"]),
            Some(&serde_json::json!("scale-api")),
            "{events:?}"
        );
        assert!(event(&events, "rollback-started").is_some(), "{events:?}");
    }
}

const MAINTENANCE: &str = r#"apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata:
  name: maint
spec:
  steps:
    - {id: cordon, cordon: {node: node-1}}
    - {id: scale-api, scale: {name: api, namespace: shop, replicas: 3}}
    - {id: check, verify: "true"}
"#;

const MAINTENANCE_WORLD: &str = "apiVersion: runbook.dev/v1alpha1\nkind: Scenario\nmetadata: {name: shop}\nspec:\n  objects:\n    - {apiVersion: v1, kind: Node, metadata: {name: node-1}, spec: {}}\n    - {apiVersion: apps/v1, kind: Deployment, metadata: {name: api, namespace: shop}, spec: {replicas: 1}}\n";

/// Runs `maint`, then cuts its journal off right after the intent of `scale-api`, which is
/// what a kill between the intent and the result leaves behind. Returns the run id.
fn killed_run(dir: &Path, state: &Path) -> String {
    std::fs::write(dir.join("shop.scenario.yaml"), MAINTENANCE_WORLD).expect("write");
    let out = runbook_in(
        dir,
        &[
            "run",
            "maint",
            "--simulate",
            "shop.scenario.yaml",
            "--state-dir",
            state.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let journal = std::fs::read_dir(state.join("runs"))
        .expect("runs")
        .flatten()
        .next()
        .expect("journal")
        .path();
    let text = std::fs::read_to_string(&journal).expect("journal");
    let cut = text
        .find(r#""event":"step-intent","step":"scale-api""#)
        .expect("the intent of scale-api");
    let end = cut + text[cut..].find('\n').expect("line end") + 1;
    std::fs::write(&journal, &text[..end]).expect("truncate");
    journal
        .file_stem()
        .expect("id")
        .to_string_lossy()
        .into_owned()
}

fn resumed_events(state: &Path, run_id: &str) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(state.join("runs").join(format!("{run_id}.jsonl")))
        .expect("journal");
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    let resumed = events
        .iter()
        .position(|e| e["event"] == "run-resumed")
        .expect("a run-resumed record");
    events[resumed..].to_vec()
}

#[test]
fn resume_never_repeats_an_unknown_step_blindly() {
    let dir = folder(&[("maint.yaml", MAINTENANCE)]);
    let state = state();
    let run_id = killed_run(dir.path(), state.path());
    let state_dir = state.path().to_str().expect("utf-8");
    let out = runbook_in(
        dir.path(),
        &[
            "resume",
            &run_id,
            "--simulate",
            "shop.scenario.yaml",
            "--state-dir",
            state_dir,
        ],
    );
    assert_eq!(
        out.code, 4,
        "nobody to ask, no decision given: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains(
            "step `scale-api` was about to scale Deployment shop/api from 1 to 3 replicas"
        ),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("--assume-done scale-api or --rerun scale-api"),
        "{}",
        out.stderr
    );
}

#[test]
fn resume_goes_on_after_a_step_that_took_effect() {
    let dir = folder(&[("maint.yaml", MAINTENANCE)]);
    let state = state();
    let run_id = killed_run(dir.path(), state.path());
    let out = runbook_in(
        dir.path(),
        &[
            "resume",
            &run_id,
            "--assume-done",
            "scale-api",
            "--simulate",
            "shop.scenario.yaml",
            "--state-dir",
            state.path().to_str().expect("utf-8"),
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let events = resumed_events(state.path(), &run_id);
    assert_eq!(
        events[0]["completed"],
        serde_json::json!(["cordon", "scale-api"])
    );
    let started: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "step-started")
        .filter_map(|e| e["step"].as_str())
        .collect();
    assert_eq!(started, ["check"], "done steps are not run again");
    assert_eq!(
        events.last().map(|e| e["outcome"].clone()),
        Some(serde_json::json!("succeeded"))
    );
}

#[test]
fn resume_reruns_a_step_that_did_not_take_effect() {
    let dir = folder(&[("maint.yaml", MAINTENANCE)]);
    let state = state();
    let run_id = killed_run(dir.path(), state.path());
    let out = runbook_in(
        dir.path(),
        &[
            "resume",
            &run_id,
            "--rerun",
            "scale-api",
            "--simulate",
            "shop.scenario.yaml",
            "--state-dir",
            state.path().to_str().expect("utf-8"),
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let events = resumed_events(state.path(), &run_id);
    let started: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "step-started")
        .filter_map(|e| e["step"].as_str())
        .collect();
    assert_eq!(started, ["scale-api", "check"]);
}

#[test]
fn resume_rollback_undoes_from_the_journaled_state() {
    let dir = folder(&[("maint.yaml", MAINTENANCE)]);
    let state = state();
    let run_id = killed_run(dir.path(), state.path());
    // The world as the kill left it: cordoned and scaled.
    let after = MAINTENANCE_WORLD
        .replace("spec: {}", "spec: {unschedulable: true}")
        .replace("spec: {replicas: 1}", "spec: {replicas: 3}");
    std::fs::write(dir.path().join("after.scenario.yaml"), after).expect("write");
    let out = runbook_in(
        dir.path(),
        &[
            "resume",
            &run_id,
            "--rollback",
            "--assume-done",
            "scale-api",
            "--simulate",
            "after.scenario.yaml",
            "--state-dir",
            state.path().to_str().expect("utf-8"),
        ],
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    let events = resumed_events(state.path(), &run_id);
    let undone: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "undo-finished" && e["succeeded"] == true)
        .filter_map(|e| e["step"].as_str())
        .collect();
    assert_eq!(undone, ["scale-api", "cordon"], "newest first");
    assert!(
        out.stderr
            .contains("scale Deployment shop/api back to 1 replicas"),
        "from the state journaled before the kill: {}",
        out.stderr
    );
    assert!(!events.iter().any(|e| e["event"] == "step-started"));
}

#[test]
fn resume_refuses_a_changed_runbook_and_a_finished_run() {
    let dir = folder(&[("maint.yaml", MAINTENANCE)]);
    let state = state();
    let state_dir = state.path().to_str().expect("utf-8");
    let run_id = killed_run(dir.path(), state.path());
    std::fs::write(
        dir.path().join("runbooks/maint.yaml"),
        MAINTENANCE.replace("replicas: 3", "replicas: 4"),
    )
    .expect("edit");
    let out = runbook_in(
        dir.path(),
        &[
            "resume",
            &run_id,
            "--rerun",
            "scale-api",
            "--simulate",
            "shop.scenario.yaml",
            "--state-dir",
            state_dir,
        ],
    );
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("changed since run"), "{}", out.stderr);

    let other = tempfile::tempdir().expect("state dir");
    std::fs::write(dir.path().join("runbooks/maint.yaml"), MAINTENANCE).expect("restore");
    let out = runbook_in(
        dir.path(),
        &[
            "run",
            "maint",
            "--simulate",
            "shop.scenario.yaml",
            "--state-dir",
            other.path().to_str().expect("utf-8"),
        ],
    );
    assert_eq!(out.code, 0);
    let finished = std::fs::read_dir(other.path().join("runs"))
        .expect("runs")
        .flatten()
        .next()
        .expect("journal")
        .path();
    let id = finished
        .file_stem()
        .expect("id")
        .to_string_lossy()
        .into_owned();
    let out = runbook_in(
        dir.path(),
        &[
            "resume",
            &id,
            "--simulate",
            "shop.scenario.yaml",
            "--state-dir",
            other.path().to_str().expect("utf-8"),
        ],
    );
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("already finished (Succeeded)"),
        "{}",
        out.stderr
    );
}

fn journal_of(state: &Path, run_id: &str) -> PathBuf {
    state.join("runs").join(format!("{run_id}.jsonl"))
}

/// The fragment a crash leaves when it cuts the next record short.
const FRAGMENT: &str = r#"{"time":"2026-01-01T00:00:00.000Z","run":"20260101T0"#;

/// Issue 13: `resume` of a journal whose last line a crash had cut short appended its first
/// record onto the fragment; `show`, `resume` and the server then refused the journal.
#[test]
fn resume_sets_a_torn_last_line_aside_and_the_journal_stays_readable() {
    let dir = folder(&[("maint.yaml", MAINTENANCE)]);
    let state = state();
    let state_dir = state.path().to_str().expect("utf-8");
    let run_id = killed_run(dir.path(), state.path());
    let journal = journal_of(state.path(), &run_id);
    let whole = std::fs::read_to_string(&journal).expect("journal");
    std::fs::write(&journal, format!("{whole}{FRAGMENT}")).expect("tear");
    let out = runbook_in(
        dir.path(),
        &[
            "resume",
            &run_id,
            "--assume-done",
            "scale-api",
            "--simulate",
            "shop.scenario.yaml",
            "--state-dir",
            state_dir,
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let torn = PathBuf::from(format!("{}.torn", journal.display()));
    let expected = format!(
        "warning: the journal {} ended in a torn line (line {}, {} bytes, cut short by a crash or a full disk): it was moved to {}, and the run goes on from the last whole record",
        journal.display(),
        whole.lines().count() + 1,
        FRAGMENT.len(),
        torn.display()
    );
    assert!(out.stderr.contains(&expected), "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(&torn).expect("the fragment is kept"),
        format!("{FRAGMENT}\n")
    );
    let text = std::fs::read_to_string(&journal).expect("journal");
    assert!(text.starts_with(&whole), "the records before it are kept");
    for line in text.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not a record ({e}): {line}"));
    }

    let out = runbook_in(
        dir.path(),
        &[
            "show",
            &run_id,
            "--state-dir",
            state_dir,
            "--output",
            "json",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stderr, "", "nothing torn is left");
    let last: serde_json::Value =
        serde_json::from_str(out.stdout.lines().last().expect("records")).expect("JSON");
    assert_eq!(last["outcome"], "succeeded");
}

/// Issue 13: `show` of a journal with a torn last line shows the records before it and says
/// the last line is torn.
#[test]
fn show_reports_a_torn_last_line_and_shows_the_records_before_it() {
    let dir = folder(&[("maint.yaml", MAINTENANCE)]);
    let state = state();
    let run_id = killed_run(dir.path(), state.path());
    let journal = journal_of(state.path(), &run_id);
    let whole = std::fs::read_to_string(&journal).expect("journal");
    std::fs::write(&journal, format!("{whole}{FRAGMENT}")).expect("tear");
    let out = runbook_in(
        dir.path(),
        &[
            "show",
            &run_id,
            "--state-dir",
            state.path().to_str().expect("utf-8"),
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("scale-api"),
        "the records before it are shown: {}",
        out.stdout
    );
    let expected = format!(
        "warning: {}:{}: the last line is torn ({} bytes cut short by a crash or a full disk); showing the {} whole records before it",
        journal.display(),
        whole.lines().count() + 1,
        FRAGMENT.len(),
        whole.lines().count()
    );
    assert!(out.stderr.contains(&expected), "{}", out.stderr);
}

/// `runbook_in`, with `set_up` run in the child before the program starts (a umask, a file
/// size limit).
#[cfg(unix)]
fn runbook_set_up(
    dir: &Path,
    args: &[&str],
    set_up: impl FnMut() -> std::io::Result<()> + Send + Sync + 'static,
) -> Output {
    use std::os::unix::process::CommandExt as _;
    let mut command = Command::new(env!("CARGO_BIN_EXE_runbook"));
    command
        .args(args)
        .current_dir(dir)
        .env_remove("RUNBOOK_DIR")
        .env("RUNBOOK_LOG", "off");
    // SAFETY: every `set_up` here makes only system calls that are safe between fork and exec
    // (umask, setrlimit, signal), and allocates nothing.
    unsafe { command.pre_exec(set_up) };
    let output = command.output().expect("runbook runs");
    Output {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// The one file in `dir`.
fn only_file(dir: &Path) -> PathBuf {
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|entry| entry.path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

/// Issue 13: journals and locks were 0644 in 0755 directories, and stayed so.
#[cfg(unix)]
#[test]
fn journals_and_locks_are_private_and_looser_ones_are_tightened() {
    let dir = folder(&[("maint.yaml", MAINTENANCE)]);
    std::fs::write(dir.path().join("shop.scenario.yaml"), MAINTENANCE_WORLD).expect("write");
    let state = state();
    let out = runbook_set_up(
        dir.path(),
        &[
            "run",
            "maint",
            "--simulate",
            "shop.scenario.yaml",
            "--state-dir",
            state.path().to_str().expect("utf-8"),
        ],
        || {
            // SAFETY: umask cannot fail and touches nothing but the process's mask.
            unsafe { libc::umask(0o022) };
            Ok(())
        },
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let (runs, locks) = (state.path().join("runs"), state.path().join("locks"));
    let (journal, lock) = (only_file(&runs), only_file(&locks));
    assert_eq!(
        [mode(&runs), mode(&journal), mode(&locks), mode(&lock)],
        [0o700, 0o600, 0o700, 0o600],
        "runs/, its journal, locks/, its lock"
    );

    // What an older runbook left: a killed run's files, readable by all. Resuming tightens them.
    let state = self::state();
    let run_id = killed_run(dir.path(), state.path());
    let (runs, locks) = (state.path().join("runs"), state.path().join("locks"));
    let journal = journal_of(state.path(), &run_id);
    let lock = only_file(&locks);
    for (path, loose) in [
        (&runs, 0o755),
        (&journal, 0o644),
        (&locks, 0o755),
        (&lock, 0o644),
    ] {
        set_mode(path, loose);
    }
    let out = runbook_in(
        dir.path(),
        &[
            "resume",
            &run_id,
            "--assume-done",
            "scale-api",
            "--simulate",
            "shop.scenario.yaml",
            "--state-dir",
            state.path().to_str().expect("utf-8"),
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        [mode(&runs), mode(&journal), mode(&locks), mode(&lock)],
        [0o700, 0o600, 0o700, 0o600],
        "tightened: runs/, the journal, locks/, the lock"
    );
}

/// Issue 13: a symbolic link planted in place of a lock or a journal had the run write (and
/// truncate) whatever it points to.
#[cfg(unix)]
#[test]
fn a_symbolic_link_in_place_of_a_journal_or_a_lock_is_refused_and_its_target_left_alone() {
    let dir = folder(&[("maint.yaml", MAINTENANCE)]);
    let state = state();
    let state_dir = state.path().to_str().expect("utf-8");
    let run_id = killed_run(dir.path(), state.path());
    let resume = || {
        runbook_in(
            dir.path(),
            &[
                "resume",
                &run_id,
                "--assume-done",
                "scale-api",
                "--simulate",
                "shop.scenario.yaml",
                "--state-dir",
                state_dir,
            ],
        )
    };

    let journal = journal_of(state.path(), &run_id);
    let elsewhere = dir.path().join("elsewhere.jsonl");
    std::fs::rename(&journal, &elsewhere).expect("move");
    std::os::unix::fs::symlink(&elsewhere, &journal).expect("symlink");
    let before = std::fs::read(&elsewhere).expect("journal");
    let out = resume();
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "{} is a symbolic link; state files are never written through one: remove it",
            journal.display()
        )),
        "{}",
        out.stderr
    );
    assert_eq!(std::fs::read(&elsewhere).expect("journal"), before);

    std::fs::remove_file(&journal).expect("unlink");
    std::fs::rename(&elsewhere, &journal).expect("move back");
    let lock = only_file(&state.path().join("locks"));
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "keep me\n").expect("victim");
    std::fs::remove_file(&lock).expect("unlink");
    std::os::unix::fs::symlink(&victim, &lock).expect("symlink");
    let out = resume();
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "error: cannot take the run lock: cannot open {0}: {0} is a symbolic link",
            lock.display()
        )),
        "{}",
        out.stderr
    );
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "keep me\n"
    );
}

/// Issue 13: a full disk at the outcome's record exited 0 and left a torn last line. Here the
/// disk fills up (a file size limit) in the middle of that record.
#[cfg(unix)]
#[test]
fn a_journal_write_that_fails_is_never_silent_and_the_run_exits_7() {
    let dir = folder(&[("maint.yaml", MAINTENANCE)]);
    std::fs::write(dir.path().join("shop.scenario.yaml"), MAINTENANCE_WORLD).expect("write");
    let run = |state: &Path, limit: Option<u64>| {
        let args = [
            "run",
            "maint",
            "--simulate",
            "shop.scenario.yaml",
            "--state-dir",
            state.to_str().expect("utf-8"),
        ];
        runbook_set_up(dir.path(), &args, move || {
            let Some(limit) = limit else { return Ok(()) };
            let limit = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            // SAFETY: plain system calls on this process; a write past the limit then fails
            // with EFBIG, as on a full disk, instead of killing the process (SIGXFSZ).
            unsafe {
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        })
    };
    // A first run says where the outcome's record starts (the same run again differs by a few
    // bytes of durations at most).
    let first = state();
    let out = run(first.path(), None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = std::fs::read_to_string(only_file(&first.path().join("runs"))).expect("journal");
    let outcome_starts = text.trim_end().rfind('\n').expect("lines") + 1;
    assert!(text[outcome_starts..].contains(r#""event":"run-finished""#));
    assert!(text.len() - outcome_starts > 100, "{text}");

    let state = state();
    let out = run(state.path(), Some(outcome_starts as u64 + 40));
    let journal = only_file(&state.path().join("runs"));
    assert_eq!(out.code, 7, "{}", out.stderr);
    for expected in [
        format!(
            "!!! THE JOURNAL OF THIS RUN IS INCOMPLETE: cannot write the journal {}: File too large",
            journal.display()
        ),
        "Outcome: Succeeded (exit 7): all steps succeeded".to_owned(),
        format!("Journal: {} (incomplete)", journal.display()),
    ] {
        assert!(out.stderr.contains(&expected), "{expected:?} in {}", out.stderr);
    }
    // The part of the record that fitted was cut off again: no torn line is left.
    let text = std::fs::read_to_string(&journal).expect("journal");
    assert!(text.ends_with('\n'), "{text}");
    let last: serde_json::Value =
        serde_json::from_str(text.lines().last().expect("records")).expect("a whole record");
    assert_eq!(last["event"], "step-finished", "{text}");
}

/// Issue 13: a journal deleted during a run was not noticed, and the summary gave its path as
/// the record of the run.
#[test]
fn a_journal_deleted_during_the_run_is_noticed_and_the_run_exits_7() {
    let dir = folder(&[("slow.yaml", SLOW)]);
    let state = state();
    let child = slow_run(dir.path(), state.path(), &[])
        .spawn()
        .expect("runbook starts");
    let journal = wait_until_polling(state.path());
    std::fs::remove_file(&journal).expect("delete the journal");
    interrupt(&child);
    let output = child.wait_with_output().expect("runbook ends");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(7), "{stderr}");
    for expected in [
        format!(
            "!!! THE JOURNAL OF THIS RUN IS INCOMPLETE: cannot write the journal {}: it was deleted while the run went on",
            journal.display()
        ),
        format!("Journal: none: {} was deleted during the run", journal.display()),
    ] {
        assert!(stderr.contains(&expected), "{expected:?} in {stderr}");
    }
    assert!(!journal.exists(), "nothing is written at the path");
}

/// `runbook resume RUN_ID --assume-done scale-api` of a `killed_run`.
fn resume_killed(dir: &Path, state: &Path, run_id: &str) -> Output {
    runbook_in(
        dir,
        &[
            "resume",
            run_id,
            "--assume-done",
            "scale-api",
            "--simulate",
            "shop.scenario.yaml",
            "--state-dir",
            state.to_str().expect("utf-8"),
        ],
    )
}

/// Issue 13: a journal with an empty `digest` resumed with the "runbook changed" check
/// skipped.
#[test]
fn resume_refuses_a_journal_without_the_digest_of_its_runbook() {
    let dir = folder(&[("maint.yaml", MAINTENANCE)]);
    let state = state();
    let run_id = killed_run(dir.path(), state.path());
    let journal = journal_of(state.path(), &run_id);
    let text = std::fs::read_to_string(&journal).expect("journal");
    let start = text.find(r#""digest":""#).expect("a digest") + r#""digest":""#.len();
    let end = start + text[start..].find('"').expect("its end");
    assert_eq!(end - start, 64, "a SHA-256 was journaled");
    std::fs::write(&journal, format!("{}{}", &text[..start], &text[end..])).expect("write");
    let out = resume_killed(dir.path(), state.path(), &run_id);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "error: {}: the journal records no digest of runbook `maint`, so resume cannot tell whether it changed since run `{run_id}` started",
            journal.display()
        )),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("run resumed"),
        "nothing ran: {}",
        out.stderr
    );
}

/// Issue 13: `resume` took the journal's `runbook` as a path when it looked like one, and read
/// `/etc/passwd`.
#[test]
fn resume_finds_the_journals_runbook_by_name_in_the_catalog_never_by_path() {
    let dir = folder(&[("maint.yaml", MAINTENANCE)]);
    let state = state();
    let run_id = killed_run(dir.path(), state.path());
    let journal = journal_of(state.path(), &run_id);
    let text = std::fs::read_to_string(&journal).expect("journal");
    assert!(text.contains(r#""runbook":"maint""#), "{text}");
    // The path of the very file that ran (same digest), then a file that is no runbook.
    let file = dir.path().join("runbooks/maint.yaml");
    for named in [file.to_str().expect("utf-8"), "/etc/passwd"] {
        std::fs::write(
            &journal,
            text.replace(r#""runbook":"maint""#, &format!(r#""runbook":"{named}""#)),
        )
        .expect("write");
        let out = resume_killed(dir.path(), state.path(), &run_id);
        assert_eq!(out.code, 2, "{named}: {}", out.stderr);
        assert!(
            out.stderr.contains(&format!(
                "error: {}: the journal names runbook `{named}`, which is not a runbook name (lowercase letters, digits and `-`); resume finds runbooks by name in the catalog only",
                journal.display()
            )),
            "{}",
            out.stderr
        );
        assert!(!out.stderr.contains("run resumed"), "{}", out.stderr);
        assert!(!out.stderr.contains("root:"), "{}", out.stderr);
    }
}

// Issue 13, secrets: what a user must be able to rely on when a runbook takes a secret.

const EMPTY_WORLD: &str =
    "apiVersion: runbook.dev/v1alpha1\nkind: Scenario\nmetadata: {name: empty}\nspec:\n  objects: []\n";

/// A folder holding `runbook` and the empty scenario `empty.scenario.yaml`.
fn folder_with_world(name: &str, runbook: &str) -> tempfile::TempDir {
    let dir = folder(&[(name, runbook)]);
    std::fs::write(dir.path().join("empty.scenario.yaml"), EMPTY_WORLD).expect("write");
    dir
}

const PRINTER: &str = r#"apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata:
  name: printer
spec:
  params:
    - {name: password, secret: true}
  preconditions:
    - check: type_of(print(params.password)) == "()" && type_of(debug(params.password)) == "()"
  steps:
    - {id: check, verify: "true"}
"#;

/// Issue 13: `print(params.password)` and `debug(...)` in an expression wrote the secret to the
/// log (at INFO and DEBUG).
#[test]
fn what_an_expression_prints_reaches_the_log_redacted() {
    let dir = folder_with_world("printer.yaml", PRINTER);
    let state = state();
    let out = runbook_with(
        dir.path(),
        &[
            "run",
            "printer",
            "--set",
            "password=Hunter2-\"quoted\"",
            "--simulate",
            "empty.scenario.yaml",
            "--state-dir",
            state.path().to_str().expect("utf-8"),
        ],
        &[("RUNBOOK_LOG", "runbook=debug")],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let printed: Vec<&str> = out
        .stderr
        .lines()
        .filter(|line| line.contains("Expression printed") || line.contains("Expression debug"))
        .collect();
    assert_eq!(printed.len(), 2, "{}", out.stderr);
    for line in printed {
        assert!(line.contains("<redacted>"), "{line}");
    }
    assert!(!out.stderr.contains("Hunter2"), "{}", out.stderr);
}

const PIN_RESET: &str = r#"apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata:
  name: pin-reset
spec:
  params:
    - {name: user}
    - {name: pin, secret: true, pattern: "[0-9]{6}"}
  steps:
    - {id: check, verify: "true"}
"#;

/// The run key of `pin-reset` for `params` (as `lock_target` makes it).
fn run_key(runbook: &str, params: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(params.as_bytes());
    let hex: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("{runbook}-{hex}")
}

/// Issue 13: the run key (the lock file's and the Lease's name) hashed every param, secrets
/// included, and a 6-digit PIN was recovered from its 48 bits in seconds. A secret param is
/// left out of it: a run that differs only by the PIN is the same run for locking.
#[test]
fn a_secret_param_is_not_part_of_the_run_key() {
    let dir = folder_with_world("pin-reset.yaml", PIN_RESET);
    let state = state();
    let target = run_key("pin-reset", r#"{"user":"alice"}"#);
    let _held =
        runbook_core::lock::RunLock::acquire(state.path(), &target, "the-first-run").expect("lock");
    let out = runbook_in(
        dir.path(),
        &[
            "run",
            "pin-reset",
            "--set",
            "user=alice",
            "--set",
            "pin=123456",
            "--simulate",
            "empty.scenario.yaml",
            "--state-dir",
            state.path().to_str().expect("utf-8"),
        ],
    );
    assert_eq!(out.code, 4, "{}", out.stderr);
    assert!(
        out.stderr.contains("already running") && out.stderr.contains("the-first-run"),
        "{}",
        out.stderr
    );
    let locks: Vec<String> = std::fs::read_dir(state.path().join("locks"))
        .expect("locks")
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        locks,
        [format!("{target}.lock")],
        "no key with the PIN in it"
    );
}

const GREETER: &str = r#"apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata:
  name: greeter
spec:
  params:
    - {name: db_host}
    - {name: greeting}
    - {name: target}
    - {name: token, secret: true}
  steps:
    - {id: check, verify: "true"}
"#;

/// Issue 13: a secret given with `--set` is in the process list. `--set-file NAME=PATH` (the
/// file without its final newline) and `RUNBOOK_PARAM_<NAME>` give params without that, and
/// the precedence is `--set`, then `--set-file`, then the environment.
#[test]
fn params_come_from_files_and_the_environment_below_set() {
    let dir = folder_with_world("greeter.yaml", GREETER);
    std::fs::write(dir.path().join("greeting.txt"), "hello, world\r\n").expect("write");
    std::fs::write(dir.path().join("token.txt"), "tkn-from-a-file\n").expect("write");
    let out = runbook_with(
        dir.path(),
        &[
            "plan",
            "greeter",
            "--format",
            "json",
            "--set-file",
            "greeting=greeting.txt",
            "--set-file",
            "target=greeting.txt",
            "--set",
            "target=prod",
            "--set-file",
            "token=token.txt",
        ],
        &[
            ("RUNBOOK_PARAM_DB_HOST", "db.internal"),
            ("RUNBOOK_PARAM_GREETING", "from the environment"),
            ("RUNBOOK_PARAM_TARGET", "from the environment"),
            ("RUNBOOK_PARAM_NOT_A_PARAM", "left alone"),
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let plan: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    let param = |name: &str| {
        (
            plan["params"][name]["value"].clone(),
            plan["params"][name]["origin"].clone(),
        )
    };
    use serde_json::json;
    assert_eq!(
        param("db_host"),
        (json!("db.internal"), json!("environment"))
    );
    assert_eq!(
        param("greeting"),
        (json!("hello, world"), json!("--set-file"))
    );
    assert_eq!(param("target"), (json!("prod"), json!("--set")));
    assert_eq!(param("token"), (json!("<secret>"), json!("--set-file")));
    assert!(
        !out.stderr.contains("process list"),
        "nothing secret was on the command line: {}",
        out.stderr
    );
    // The token, as read from its file, is a secret the run knows.
    let state = state();
    let out = runbook_with(
        dir.path(),
        &[
            "run",
            "greeter",
            "--set-file",
            "token=token.txt",
            "--set",
            "greeting=hi",
            "--set",
            "target=prod",
            "--simulate",
            "empty.scenario.yaml",
            "--output",
            "json",
            "--state-dir",
            state.path().to_str().expect("utf-8"),
        ],
        &[("RUNBOOK_PARAM_DB_HOST", "db.internal")],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains(r#""token":"<redacted>""#),
        "{}",
        out.stdout
    );

    let out = runbook_in(
        dir.path(),
        &["plan", "greeter", "--set-file", "token=missing.txt"],
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("`--set-file token=missing.txt`: cannot read missing.txt"),
        "{}",
        out.stderr
    );
}

/// A secret given with `--set` works, and the user hears how to keep it out of `ps`.
#[test]
fn a_secret_given_with_set_is_noted_with_the_ways_that_keep_it_off_the_command_line() {
    let dir = folder_with_world("greeter.yaml", GREETER);
    let out = runbook_in(dir.path(), &["plan", "greeter", "--set", "token=abc123"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("note: param `token` is secret, and `--set` puts its value in the process list and the shell's history; give it with `--set-file token=PATH` or RUNBOOK_PARAM_TOKEN instead"),
        "{}",
        out.stderr
    );
}

const TOKENED: &str = r#"apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata:
  name: tokened
spec:
  params:
    - {name: header}
  steps:
    - {id: cordon, cordon: {node: node-1}}
    - {id: deploy, run: [deploy-tool, "${params.header}"], irreversible: demo}
"#;

const TOKENED_WORLD: &str = "apiVersion: runbook.dev/v1alpha1\nkind: Scenario\nmetadata: {name: shop}\nspec:\n  objects:\n    - {apiVersion: v1, kind: Node, metadata: {name: node-1}, spec: {}}\n  commands:\n    - argv: [deploy-tool, \"token=abc123\"]\n      responses: [{stdout: deployed}]\n";

/// Issue 13: a param whose value looked like a credential (`token=abc123`) is journaled as
/// `token=<redacted>`; resume bound that, and the remaining steps ran with the placeholder.
/// A value the journal holds only redacted must be given again, or the resume is refused
/// naming it.
#[test]
fn resume_refuses_to_bind_a_redacted_value_and_asks_for_it_again() {
    let dir = folder(&[("tokened.yaml", TOKENED)]);
    std::fs::write(dir.path().join("shop.scenario.yaml"), TOKENED_WORLD).expect("write");
    let state = state();
    let state_dir = state.path().to_str().expect("utf-8");
    let simulate = ["--simulate", "shop.scenario.yaml", "--state-dir", state_dir];
    let out = runbook_in(
        dir.path(),
        &[
            &["run", "tokened", "--set", "header=token=abc123"][..],
            &simulate,
        ]
        .concat(),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    // Killed after `cordon`, before `deploy` started.
    let journal = std::fs::read_dir(state.path().join("runs"))
        .expect("runs")
        .flatten()
        .next()
        .expect("journal")
        .path();
    let text = std::fs::read_to_string(&journal).expect("journal");
    assert!(
        text.contains(r#""params":{"header":"token=<redacted>"}"#),
        "{text}"
    );
    let cut = text
        .find(r#""event":"step-finished","step":"cordon""#)
        .expect("cordon finished");
    let end = cut + text[cut..].find('\n').expect("line end") + 1;
    std::fs::write(&journal, &text[..end]).expect("truncate");
    let run_id = journal
        .file_stem()
        .expect("id")
        .to_string_lossy()
        .into_owned();

    let out = runbook_in(dir.path(), &[&["resume", &run_id][..], &simulate].concat());
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "error: the journal of run `{run_id}` holds param `header` only redacted; give it again to resume, such as `--set-file header=PATH`, RUNBOOK_PARAM_HEADER or `--set header=VALUE`"
        )),
        "{}",
        out.stderr
    );
    assert!(
        !resumed_started(state.path(), &run_id),
        "nothing ran: {}",
        out.stderr
    );

    std::fs::write(dir.path().join("header.txt"), "token=abc123\n").expect("write");
    let out = runbook_in(
        dir.path(),
        &[
            &["resume", &run_id, "--set-file", "header=header.txt"][..],
            &simulate,
        ]
        .concat(),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let events = resumed_events(state.path(), &run_id);
    let finished: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| e["event"] == "step-finished")
        .filter_map(|e| Some((e["step"].as_str()?, e["result"].as_str()?)))
        .collect();
    assert_eq!(
        finished,
        [("deploy", "succeeded")],
        "deploy ran with the value as given, which the scenario's script answers"
    );
}

/// Whether the run's journal has a `run-resumed` record.
fn resumed_started(state: &Path, run_id: &str) -> bool {
    std::fs::read_to_string(state.join("runs").join(format!("{run_id}.jsonl")))
        .expect("journal")
        .contains(r#""event":"run-resumed""#)
}

// ----- The loader against hostile files (issue 13) ---------------------------------------------

/// `runbook` in `dir`, killed if it has not finished within `limit`, so a regression that hangs
/// fails the test instead of hanging it. Output goes to files: a full pipe must not stall it.
fn runbook_within(dir: &Path, args: &[&str], limit: std::time::Duration) -> Output {
    let capture = tempfile::tempdir().expect("temp dir");
    let stdout = capture.path().join("stdout");
    let stderr = capture.path().join("stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_runbook"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUNBOOK_DIR")
        .env("RUNBOOK_LOG", "off")
        .env("RUNBOOK_STATE_DIR", capture.path().join("state"))
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&stdout).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr).expect("stderr file"))
        .spawn()
        .expect("runbook starts");
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`runbook {}` did not finish within {limit:?}; stderr so far:\n{}",
                args.join(" "),
                std::fs::read_to_string(&stderr).unwrap_or_default()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    Output {
        code: status.code().unwrap_or(-1),
        stdout: std::fs::read_to_string(&stdout).unwrap_or_default(),
        stderr: std::fs::read_to_string(&stderr).unwrap_or_default(),
    }
}

const LIMIT: std::time::Duration = std::time::Duration::from_secs(20);

#[test]
fn nesting_deeper_than_the_limit_is_an_error_at_its_position_not_a_crash() {
    // `- - - - ...` 5,000 times: a list in a list, 5,000 deep, in 10 KB.
    let dashes = "- ".repeat(5000);
    // A mapping in a mapping, 1,890 deep.
    let mut block = String::new();
    for level in 0..1890 {
        block.push_str(&format!("{}k{level}:\n", "  ".repeat(level)));
    }
    let dir = folder(&[("dashes.yaml", &dashes), ("block.yaml", &block)]);
    std::fs::write(dir.path().join("empty.scenario.yaml"), EMPTY_WORLD).expect("write");
    // The 65th list starts at column 129 of line 1; the 65th mapping at key `k64`, line 65.
    let dashes_error =
        "runbooks/dashes.yaml:1:129: error[yaml-too-deep]: collections nest deeper than 64 levels";
    let block_error =
        "runbooks/block.yaml:65:129: error[yaml-too-deep]: collections nest deeper than 64 levels";

    let out = runbook_within(dir.path(), &["validate"], LIMIT);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains(dashes_error), "{}", out.stderr);
    assert!(out.stderr.contains(block_error), "{}", out.stderr);

    for file in ["runbooks/dashes.yaml", "runbooks/block.yaml"] {
        let out = runbook_within(
            dir.path(),
            &["run", file, "--simulate", "empty.scenario.yaml", "--yes"],
            LIMIT,
        );
        assert_eq!(out.code, 2, "{}", out.stderr);
        assert!(
            out.stderr.contains(&format!("{file}:")) && out.stderr.contains("yaml-too-deep"),
            "{}",
            out.stderr
        );
    }

    // `list` shows what is valid (nothing here) and names the broken files.
    let out = runbook_within(dir.path(), &["list"], LIMIT);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("2 files in the runbooks folder have problems (runbooks/block.yaml, runbooks/dashes.yaml)"),
        "{}",
        out.stderr
    );

    // `serve` refuses to start on a folder with errors.
    let out = runbook_within(dir.path(), &["serve", "--listen", "127.0.0.1:0"], LIMIT);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains(dashes_error), "{}", out.stderr);
}

#[test]
fn an_alias_cannot_nest_a_document_deeper_than_the_limit() {
    // Each step's manifest spec is 50 lists deep around an alias to the one before: 3,000
    // levels in all, through aliases, in 60 short lines.
    let mut text = String::from(
        "apiVersion: runbook.dev/v1alpha1\nkind: Runbook\nmetadata: {name: amplified}\nspec:\n  steps:\n",
    );
    for step in 0..60 {
        let inner = if step == 0 {
            "1".to_owned()
        } else {
            format!("*d{}", step - 1)
        };
        text.push_str(&format!(
            "    - irreversible: a test\n      apply: {{manifest: {{apiVersion: example.com/v1, kind: Widget, metadata: {{name: w{step}}}, spec: &d{step} {}{inner}{}}}}}\n",
            "[".repeat(50),
            "]".repeat(50)
        ));
    }
    let dir = folder(&[("amplified.yaml", &text)]);
    let out = runbook_within(dir.path(), &["validate"], LIMIT);
    assert_eq!(out.code, 2, "{}", out.stderr);
    // Line 9 is step 1's manifest: its spec's lists reach depth 56, and the alias to step 0's
    // spec (50 deep) would take it to 106.
    let column = text
        .lines()
        .nth(8)
        .expect("line 9")
        .find("*d0")
        .expect("alias")
        + 1;
    assert!(
        out.stderr.contains(&format!(
            "runbooks/amplified.yaml:9:{column}: error[yaml-too-deep]: collections nest deeper than 64 levels (through this alias)"
        )),
        "{}",
        out.stderr
    );
}

#[test]
fn a_runbook_nested_to_the_limit_validates_plans_and_runs() {
    // Guards the limit from the other side: every pass that walks the tree (structure check,
    // serde, checker, compiler, renderers, executor, journal) takes 64 levels, in a debug build
    // too. Levels: document, spec, steps, step, apply, manifest, then 58 in its spec.
    let nested = |levels: usize| {
        format!(
            "{}\"${{params.ns}}\"{}",
            "{a: ".repeat(levels),
            "}".repeat(levels)
        )
    };
    let text = format!(
        "apiVersion: runbook.dev/v1alpha1\nkind: Runbook\nmetadata: {{name: deep}}\nspec:\n  params:\n    - {{name: ns, default: shop}}\n  steps:\n    - irreversible: a test\n      apply:\n        manifest:\n          apiVersion: example.com/v1\n          kind: Widget\n          metadata: {{name: deep, namespace: \"${{params.ns}}\"}}\n          spec: {}\n",
        nested(58)
    );
    let dir = folder(&[("deep.yaml", &text)]);
    std::fs::write(dir.path().join("empty.scenario.yaml"), EMPTY_WORLD).expect("write");
    let out = runbook_within(dir.path(), &["validate"], LIMIT);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for format in ["text", "json", "markdown"] {
        let out = runbook_within(dir.path(), &["plan", "deep", "--format", format], LIMIT);
        assert_eq!(out.code, 0, "{format}: {}", out.stderr);
    }
    let out = runbook_within(
        dir.path(),
        &["run", "deep", "--simulate", "empty.scenario.yaml", "--yes"],
        LIMIT,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("Outcome: Succeeded"), "{}", out.stderr);

    // One level more is refused where it starts.
    let deeper = text.replace(&nested(58), &nested(59));
    std::fs::write(dir.path().join("runbooks/deep.yaml"), &deeper).expect("write");
    let column = deeper
        .lines()
        .nth(13)
        .expect("line 14")
        .match_indices("{a:")
        .nth(58)
        .expect("level 65")
        .0
        + 1;
    let out = runbook_within(dir.path(), &["validate"], LIMIT);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "runbooks/deep.yaml:14:{column}: error[yaml-too-deep]"
        )),
        "{}",
        out.stderr
    );
}

const ONE: &str = "apiVersion: runbook.dev/v1alpha1\nkind: Runbook\nmetadata: {name: one}\nspec:\n  steps:\n    - verify: \"true\"\n";

#[cfg(unix)]
#[test]
fn links_back_into_the_folder_are_walked_once_and_each_file_loaded_once() {
    let dir = folder(&[
        ("one.yaml", ONE),
        ("sub/two.yaml", &ONE.replace("one", "two")),
    ]);
    let runbooks = dir.path().join("runbooks");
    std::os::unix::fs::symlink(".", runbooks.join("a")).expect("link");
    std::os::unix::fs::symlink(".", runbooks.join("b")).expect("link");
    let out = runbook_within(dir.path(), &["validate"], LIMIT);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let real = runbooks.canonicalize().expect("canonical");
    for link in ["a", "b"] {
        let expected = format!(
            "runbooks/{link}:1:1: warning[skipped-path]: skipped: links to the folder {}, which is read already",
            real.display()
        );
        assert!(out.stderr.contains(&expected), "{}", out.stderr);
    }
    // Two files, each once: no `duplicate-runbook` for the copies reached through the links.
    assert!(
        out.stderr
            .contains("valid: 2 runbooks, 0 fact libraries in 2 files; 0 errors, 2 warnings"),
        "{}",
        out.stderr
    );
    let out = runbook_within(dir.path(), &["list", "--format", "json"], LIMIT);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let files: Vec<String> = serde_json::from_str::<Vec<serde_json::Value>>(&out.stdout)
        .expect("JSON")
        .iter()
        .map(|item| item["file"].as_str().expect("file").to_owned())
        .collect();
    assert_eq!(files, ["runbooks/one.yaml", "runbooks/sub/two.yaml"]);
    // `runbook test` walks the folder for test files the same way.
    let out = runbook_within(dir.path(), &["test"], LIMIT);
    assert!(
        out.stderr
            .contains("no test files (*.test.yaml) under runbooks"),
        "{}",
        out.stderr
    );
}

#[cfg(unix)]
#[test]
fn a_named_pipe_in_the_folder_is_skipped_with_a_warning_not_waited_on() {
    let dir = folder(&[("one.yaml", ONE)]);
    let made = Command::new("mkfifo")
        .arg(dir.path().join("runbooks/x.yaml"))
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    let out = runbook_within(dir.path(), &["validate"], LIMIT);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "runbooks/x.yaml:1:1: warning[skipped-path]: skipped: a named pipe, not a regular file"
        ),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("valid: 1 runbook, 0 fact libraries in 1 file"),
        "{}",
        out.stderr
    );
    let out = runbook_within(dir.path(), &["validate", "--deny-warnings"], LIMIT);
    assert_eq!(out.code, 2, "{}", out.stderr);
    std::fs::write(dir.path().join("empty.scenario.yaml"), EMPTY_WORLD).expect("write");
    let out = runbook_within(
        dir.path(),
        &["run", "one", "--simulate", "empty.scenario.yaml", "--yes"],
        LIMIT,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("Outcome: Succeeded"), "{}", out.stderr);
}

#[cfg(unix)]
#[test]
fn a_link_to_dev_zero_is_refused_without_reading_it() {
    let dir = folder(&[("one.yaml", ONE)]);
    std::fs::write(dir.path().join("empty.scenario.yaml"), EMPTY_WORLD).expect("write");
    std::os::unix::fs::symlink("/dev/zero", dir.path().join("runbooks/x.yaml")).expect("link");
    std::os::unix::fs::symlink("/dev/zero", dir.path().join("zero.scenario.yaml")).expect("link");
    // Found in the folder: not a regular file, so never opened.
    let out = runbook_within(dir.path(), &["validate"], LIMIT);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("runbooks/x.yaml:1:1: warning[skipped-path]: skipped: a link to a device, not to a regular file"),
        "{}",
        out.stderr
    );
    // Named: read, but no further than the size limit.
    let too_long = "error[file-too-large]: the file is longer than the 4 MiB the engine reads";
    let out = runbook_within(dir.path(), &["validate", "runbooks/x.yaml"], LIMIT);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr
            .contains(&format!("runbooks/x.yaml:1:1: {too_long}")),
        "{}",
        out.stderr
    );
    let out = runbook_within(
        dir.path(),
        &["run", "one", "--simulate", "zero.scenario.yaml", "--yes"],
        LIMIT,
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr
            .contains(&format!("zero.scenario.yaml:1:1: {too_long}")),
        "{}",
        out.stderr
    );
}

#[test]
fn a_file_over_the_size_limit_is_refused_naming_the_limit() {
    // A YAML comment: at the limit the file loads (as an empty document), one byte over it
    // does not.
    let limit = 4 * 1024 * 1024;
    let mut at_limit = "# padding\n".repeat(limit / 10 + 1);
    at_limit.truncate(limit - 1);
    at_limit.push('\n');
    let over = format!("{at_limit}#");
    let dir = folder(&[
        ("one.yaml", ONE),
        ("at-limit.yaml", &at_limit),
        ("over.yaml", &over),
    ]);
    let out = runbook_within(dir.path(), &["validate"], LIMIT);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("runbooks/over.yaml:1:1: error[file-too-large]: the file is 4194305 bytes, more than the 4 MiB the engine reads"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("at-limit.yaml"), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("invalid: 1 runbook, 0 fact libraries in 3 files; 1 error, 0 warnings"),
        "{}",
        out.stderr
    );
}

// Issue 13 also found loading quadratic in the keys of a mapping and in the holes of a
// template; BENCHMARKS.md shows the timings. These pin what a user sees at those sizes.

#[test]
fn duplicate_keys_in_a_large_mapping_are_each_reported_at_their_position() {
    // 5,000 labels: well past the size at which a mapping indexes its keys.
    let mut text = String::from(
        "apiVersion: runbook.dev/v1alpha1\nkind: Runbook\nmetadata:\n  name: labelled\n  labels:\n",
    );
    for index in 0..5000 {
        text.push_str(&format!("    key-{index}: value-{index}\n"));
    }
    // Line 6 holds key-0; key-3 is on line 9 and key-4999 on line 5005.
    text.push_str("    key-3: again\n    key-4999: again\n    key-0: again\n");
    text.push_str("spec:\n  steps:\n    - verify: \"true\"\n");
    let dir = folder(&[("labelled.yaml", &text)]);
    let out = runbook_within(dir.path(), &["validate"], LIMIT);
    assert_eq!(out.code, 2, "{}", out.stderr);
    for (line, key, first) in [
        (5006, "key-3", 9),
        (5007, "key-4999", 5005),
        (5008, "key-0", 6),
    ] {
        let expected = format!(
            "runbooks/labelled.yaml:{line}:5: error[duplicate-key]: duplicate key `{key}` (first given at line {first})"
        );
        assert!(
            out.stderr.contains(&expected),
            "missing {expected}\n{}",
            out.stderr
        );
    }
    assert!(
        out.stderr.contains("; 3 errors, 0 warnings"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_template_with_thousands_of_holes_renders_each_and_places_each_error() {
    let holes: String = (0..3000)
        .map(|index| format!("<${{{index} + 1}}>"))
        .collect();
    let text = format!(
        "apiVersion: runbook.dev/v1alpha1\nkind: Runbook\nmetadata: {{name: holes}}\nspec:\n  steps:\n    - notify: \"{holes}\"\n"
    );
    let dir = folder(&[("holes.yaml", &text)]);
    std::fs::write(dir.path().join("empty.scenario.yaml"), EMPTY_WORLD).expect("write");
    let out = runbook_within(
        dir.path(),
        &[
            "run",
            "holes",
            "--simulate",
            "empty.scenario.yaml",
            "--yes",
            "--output",
            "json",
        ],
        LIMIT,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rendered: String = (0..3000).map(|index| format!("<{}>", index + 1)).collect();
    assert!(
        out.stdout.contains(&rendered),
        "the notification is not rendered whole"
    );

    // An unknown name in the last of 3,000 holes is placed at that hole.
    let broken = text.replace("<${2999 + 1}>", "<${nope + 1}>");
    let column = broken
        .lines()
        .nth(5)
        .expect("line 6")
        .find("nope")
        .expect("hole")
        + 1;
    std::fs::write(dir.path().join("runbooks/holes.yaml"), &broken).expect("write");
    let out = runbook_within(dir.path(), &["validate"], LIMIT);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "runbooks/holes.yaml:6:{column}: error[undefined-fact]: unknown name `nope`"
        )),
        "{}",
        out.stderr
    );
}

#[test]
fn a_line_repeated_in_a_block_scalar_is_placed_at_itself() {
    // Each line of a template is found in the file after the line before it: the second of
    // two identical lines used to be placed on the first, and its diagnostic merged into the
    // first's.
    let text = "apiVersion: runbook.dev/v1alpha1\nkind: Runbook\nmetadata: {name: twice}\nspec:\n  steps:\n    - notify: |\n        deploy ${nope}\n        deploy ${nope}\n";
    let dir = folder(&[("twice.yaml", text)]);
    let out = runbook_within(dir.path(), &["validate"], LIMIT);
    assert_eq!(out.code, 2, "{}", out.stderr);
    for line in [7, 8] {
        assert!(
            out.stderr.contains(&format!(
                "runbooks/twice.yaml:{line}:18: error[undefined-fact]: unknown name `nope`"
            )),
            "{}",
            out.stderr
        );
    }
}

#[test]
fn many_unknown_fields_are_each_reported_and_the_rest_still_checked() {
    let mut text = String::from(
        "apiVersion: runbook.dev/v1alpha1\nkind: Runbook\nmetadata:\n  name: fields\n",
    );
    for index in 0..2000 {
        text.push_str(&format!("  field-{index}: x\n"));
    }
    text.push_str("spec:\n  steps:\n    - verify: nope.fact\n");
    let dir = folder(&[("fields.yaml", &text)]);
    let out = runbook_within(dir.path(), &["validate"], LIMIT);
    assert_eq!(out.code, 2, "{}", out.stderr);
    for (line, field) in [(5, "field-0"), (2004, "field-1999")] {
        let expected = format!(
            "runbooks/fields.yaml:{line}:3: error[unknown-field]: unknown field `{field}` in metadata"
        );
        assert!(
            out.stderr.contains(&expected),
            "missing {expected}\n{}",
            out.stderr
        );
    }
    // With the fields set aside, the steps are still checked.
    assert!(
        out.stderr
            .contains("runbooks/fields.yaml:2007:15: error[undefined-fact]: unknown name `nope`"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("; 2001 errors, 0 warnings"),
        "{}",
        out.stderr
    );
}

/// Issue 13 (left from the loader's fix): files named by flags (`--alert`, `--set-file`, and
/// the servers' token and approvers files) were read whole, so `--alert /dev/zero` filled
/// memory. They are read as the loader reads: at most 4 MiB, then refused naming the limit.
#[test]
fn files_named_by_flags_are_read_at_most_four_mib() {
    let dir = folder(&[("maint.yaml", MAINTENANCE)]);
    for flag in [["--alert", "/dev/zero"], ["--set-file", "x=/dev/zero"]] {
        let out = runbook_in(dir.path(), &["plan", "maint", flag[0], flag[1]]);
        assert_eq!(out.code, 2, "{flag:?}: {}", out.stderr);
        assert!(
            out.stderr
                .contains("longer than the 4 MiB the engine reads"),
            "{flag:?}: {}",
            out.stderr
        );
    }
}

/// Issue 16, item 6: every flag and argument of every command says what it is for in
/// `--help` (`--state-dir` of `runs`, `show` and `approve`, and `RUN_ID`, said nothing).
#[test]
fn every_flag_and_argument_has_help_text() {
    let top = runbook(&["--help"]);
    let commands: Vec<String> = top
        .stdout
        .lines()
        .skip_while(|line| !line.starts_with("Commands:"))
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        // A description that wraps goes on under its column.
        .filter(|line| !line.starts_with("   "))
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .filter(|name| name != "help")
        .collect();
    assert!(commands.len() >= 10, "{commands:?}");
    let bare = bare_help_line();
    let mut missing = Vec::new();
    for command in &commands {
        let help = runbook(&[command, "--help"]);
        assert_eq!(help.code, 0, "{command}: {}", help.stderr);
        let lines: Vec<&str> = help.stdout.lines().collect();
        for (index, line) in lines.iter().enumerate() {
            // In the long form (a flag with possible values), the help is on the next line,
            // indented under the flag; "Possible values:" there is no help.
            let next = lines.get(index + 1).map(|l| l.trim()).unwrap_or_default();
            let help_below = lines
                .get(index + 1)
                .is_some_and(|l| l.starts_with("          "))
                && !next.is_empty()
                && !next.starts_with("Possible values:");
            if bare(line) && !help_below {
                missing.push(format!("{command}: {}", line.trim()));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "flags or arguments without help: {missing:#?}"
    );
}

/// Whether a `--help` line is a flag or an argument with nothing after it.
fn bare_help_line() -> impl Fn(&str) -> bool {
    |line: &str| {
        // clap's own notes (`[default: text]`, `[possible values: ...]`, `[env: ...]`) are not
        // help.
        let mut stripped = line.to_owned();
        for note in ["[default:", "[possible values:", "[env:", "[aliases:"] {
            while let Some(start) = stripped.find(note) {
                let end = stripped[start..]
                    .find(']')
                    .map_or(stripped.len(), |end| start + end + 1);
                stripped.replace_range(start..end, "");
            }
        }
        let line = stripped.as_str();
        let trimmed = line.trim();
        if !line.starts_with("  ") || trimmed.is_empty() {
            return false;
        }
        let words: Vec<&str> = trimmed.split_whitespace().collect();
        let is_flag = |word: &str| {
            word.starts_with("--")
                || (word.starts_with('-') && word.len() == 3 && word.ends_with(','))
        };
        let is_value = |word: &str| word.starts_with('<') || word.starts_with('[');
        match words.first() {
            Some(first) if first.starts_with('<') => words.iter().all(|w| is_value(w)),
            Some(first) if is_flag(first) => words.iter().all(|w| is_flag(w) || is_value(w)),
            _ => false,
        }
    }
}

/// Issue 16, item 6: a file named to `validate` that holds no runbook said
/// `valid: 0 runbooks` and exited 0.
#[test]
fn a_named_file_that_holds_no_runbook_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = dir.path().join("empty.yaml");
    std::fs::write(&empty, "# nothing here yet\n").expect("write");
    let out = runbook(&["validate", empty.to_str().expect("utf-8 path")]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "empty.yaml:1:1: error[empty]: this file holds no runbook and no fact library"
        ),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("invalid: 0 runbooks"), "{}", out.stderr);
}

/// Issue 15, item 9: a test case's `objects` and `changes` are checked where they are written,
/// and a change after a step the runbook does not have fails the case, naming the near step.
#[test]
fn runbook_test_checks_the_objects_and_changes_of_a_case() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::copy(
        root().join("runbooks/openbao-sealed/scenarios/default.yaml"),
        dir.path().join("openbao-sealed.scenario.yaml"),
    )
    .expect("copy");
    let head = "apiVersion: runbook.dev/v1alpha1
kind: RunbookTest
metadata: {name: openbao-sealed}
spec:
  runbook: openbao-sealed
  scenario: openbao-sealed.scenario.yaml
  cases:
";
    let broken = format!(
        "{head}    - name: broken
      objects:
        - {{kind: Pod, metadata: {{name: x}}}}
      changes:
        - after: {{step: run-1}}
          object: {{kind: Pod}}
      expect: {{outcome: succeeded}}
"
    );
    std::fs::write(dir.path().join("broken.test.yaml"), broken).expect("write");
    let out = runbook(&[
        "test",
        dir.path().join("broken.test.yaml").to_str().expect("utf-8"),
    ]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    let shown = format!("{}{}", out.stdout, out.stderr);
    assert!(
        shown.contains("broken.test.yaml:10:11: error[missing-field]: missing required field `apiVersion` in object"),
        "{shown}"
    );
    assert!(
        shown.contains("broken.test.yaml:13:19: error[missing-field]: a change's `object` needs `apiVersion`, `kind` and `metadata.name`"),
        "{shown}"
    );

    let unknown = format!(
        "{head}    - name: a change after a step that is not there
      changes:
        - after: {{step: run1}}
          object: {{apiVersion: v1, kind: ConfigMap, metadata: {{name: x, namespace: openbao}}}}
      expect: {{outcome: succeeded}}
"
    );
    std::fs::write(dir.path().join("unknown.test.yaml"), unknown).expect("write");
    let out = runbook(&[
        "test",
        dir.path()
            .join("unknown.test.yaml")
            .to_str()
            .expect("utf-8"),
    ]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("changes: `after: {step: run1}` names no step of runbook `openbao-sealed`; did you mean `run-1`?"),
        "{}",
        out.stdout
    );
}

/// Issue 16, item 5: the schema refuses what `validate` refuses in strings (a name that is no
/// DNS label, a duration that is no duration, an apiVersion that is not `<group>/v1alpha1`, an
/// empty command, a count written as words), so ajv and `validate` agree on each.
#[test]
fn ajv_and_validate_agree_on_broken_strings_when_ajv_is_installed() {
    if Command::new("ajv").arg("help").output().is_err() {
        eprintln!("ajv is not installed; skipped (.ci/run installs ajv-cli)");
        return;
    }
    let head = |name: &str| {
        format!("apiVersion: runbook.dev/v1alpha1\nkind: Runbook\nmetadata: {{name: {name}}}\nspec:\n  steps:\n")
    };
    let cases = [
        (
            "bad-name",
            format!(
                "{}    - {{scale: {{kind: Deployment, name: api, replicas: 2}}}}\n",
                head("BadName_X")
            ),
        ),
        (
            "words",
            format!(
                "{}    - {{scale: {{kind: Deployment, name: api, replicas: two}}}}\n",
                head("a")
            ),
        ),
        (
            "duration",
            format!(
                "{}    - {{verify: 'true', timeout: 5 minutes please}}\n",
                head("a")
            ),
        ),
        (
            "api-version",
            format!(
                "{}    - {{verify: 'true'}}\n",
                head("a").replace("runbook.dev/v1alpha1", "foo/v2")
            ),
        ),
        (
            "empty-run",
            format!("{}    - {{run: [], irreversible: true}}\n", head("a")),
        ),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in &cases {
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, text).expect("write");
        let path = path.to_str().expect("utf-8 path");
        let ajv = Command::new("ajv")
            .args(["validate", "--spec=draft7", "--strict=true", "-s"])
            .arg(root().join("schemas/runbook.schema.json"))
            .args(["-d", path])
            .output()
            .expect("ajv runs");
        assert!(
            !ajv.status.success(),
            "ajv accepted {name}: {}",
            String::from_utf8_lossy(&ajv.stdout)
        );
        let validate = runbook(&["validate", path]);
        assert_eq!(
            validate.code, 2,
            "validate accepted {name}: {}",
            validate.stderr
        );
    }
}
