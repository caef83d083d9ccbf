//! The deployment (issue 14, item 5): `deploy/` (a kustomize base, a single-replica overlay,
//! the Alertmanager receiver, an approver Role), the RunbookRun CRD in `schemas/`, and the
//! ClusterRole `runbook rbac` derives from the runbooks.
//!
//! Checked with real tools where they are installed, and skipped with a note where not:
//! kustomize (`kubectl kustomize`, or a `kustomize` binary) builds the base and the overlay,
//! `amtool check-config` reads the receiver, and `buildah` builds and runs the image. The test
//! that asks a real API server (`kubectl apply --dry-run=server`) needs a cluster and is
//! ignored by default:
//!
//! ```sh
//! KUBECONFIG=/path/to/disposable/kubeconfig cargo test -p runbook-cli --test deploy -- --ignored
//! ```
//!
//! Generated files (`deploy/base/clusterrole.yaml`, `runbooks/Kustomization`) are rewritten by
//! `INSTA_UPDATE=always cargo test -p runbook-cli --test deploy`, as the golden files are.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use runbook_core::rbac::{Permission, Rule};
use serde_json::{json, Value as Json};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

/// Runs `runbook ARGS` from the repository root: exit code, stdout, stderr.
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

/// Every document of a YAML text, as JSON (through the engine's own YAML reader).
fn yaml_documents(name: &str, text: &str) -> Vec<Json> {
    let source = runbook_core::source::SourceFile::new(name, text);
    let mut diagnostics = runbook_core::diagnostic::Diagnostics::new();
    let documents = runbook_core::yaml::parse(&source, &mut diagnostics);
    assert!(!diagnostics.has_errors(), "{name}: {diagnostics:?}");
    documents
        .iter()
        .map(|document| document.root.to_json())
        .filter(|json| !json.is_null())
        .collect()
}

fn yaml_file(path: &str) -> Vec<Json> {
    let text = std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    yaml_documents(path, &text)
}

/// Compares a generated file with what is committed; `INSTA_UPDATE=always` rewrites it.
fn compare_generated(path: &str, generated: &str, how: &str) {
    let full = root().join(path);
    let committed = std::fs::read_to_string(&full).unwrap_or_default();
    if committed == generated {
        return;
    }
    if std::env::var("INSTA_UPDATE").as_deref() == Ok("always") {
        std::fs::write(&full, generated).expect("rewrite the generated file");
        return;
    }
    let first = committed
        .lines()
        .zip(generated.lines())
        .position(|(old, new)| old != new)
        .unwrap_or_else(|| committed.lines().count().min(generated.lines().count()))
        + 1;
    panic!(
        "{path} is not {how} (first difference at line {first}); \
         accept it with INSTA_UPDATE=always cargo test -p runbook-cli --test deploy and review the diff"
    );
}

// --- The CRD ---------------------------------------------------------------------------

fn crd() -> Json {
    let mut documents = yaml_file("schemas/runbookrun.crd.yaml");
    assert_eq!(documents.len(), 1);
    documents.remove(0)
}

fn crd_version() -> Json {
    let crd = crd();
    let versions = crd["spec"]["versions"]
        .as_array()
        .expect("versions")
        .clone();
    assert_eq!(versions.len(), 1, "one version");
    versions[0].clone()
}

/// The schema nodes that break the structural rules we can check without an API server:
/// every node says its `type` (or preserves unknown fields, or is int-or-string), and
/// `metadata` at the root says nothing but its type.
fn unstructural(schema: &Json, at: &str, problems: &mut Vec<String>) {
    let preserved = schema["x-kubernetes-preserve-unknown-fields"] == json!(true);
    let int_or_string = schema["x-kubernetes-int-or-string"] == json!(true);
    if schema.get("type").and_then(Json::as_str).is_none() && !int_or_string {
        problems.push(format!("{at}: no type"));
    }
    if preserved && schema["type"] != json!("object") {
        problems.push(format!(
            "{at}: preserves unknown fields but is not an object"
        ));
    }
    for forbidden in [
        "$ref",
        "additionalItems",
        "patternProperties",
        "dependencies",
        "definitions",
    ] {
        if schema.get(forbidden).is_some() {
            problems.push(format!(
                "{at}: `{forbidden}` is not allowed in a structural schema"
            ));
        }
    }
    if let Some(properties) = schema.get("properties").and_then(Json::as_object) {
        for (name, property) in properties {
            unstructural(property, &format!("{at}.{name}"), problems);
        }
    }
    if let Some(items) = schema.get("items") {
        unstructural(items, &format!("{at}[]"), problems);
    }
}

#[test]
fn the_crd_is_structural_and_names_runbookruns_of_runbook_dev() {
    let crd = crd();
    assert_eq!(crd["apiVersion"], "apiextensions.k8s.io/v1");
    assert_eq!(crd["kind"], "CustomResourceDefinition");
    assert_eq!(crd["metadata"]["name"], "runbookruns.runbook.dev");
    let spec = &crd["spec"];
    assert_eq!(spec["group"], "runbook.dev");
    assert_eq!(spec["scope"], "Namespaced");
    assert_eq!(spec["names"]["kind"], "RunbookRun");
    assert_eq!(spec["names"]["plural"], "runbookruns");
    assert_eq!(spec["names"]["singular"], "runbookrun");
    assert_eq!(spec["names"]["shortNames"], json!(["rbr"]));
    // The name is `<plural>.<group>`, as the API server requires.
    assert_eq!(
        crd["metadata"]["name"].as_str().unwrap(),
        format!(
            "{}.{}",
            spec["names"]["plural"].as_str().unwrap(),
            spec["group"].as_str().unwrap()
        )
    );

    let version = crd_version();
    assert_eq!(version["name"], "v1alpha1");
    assert_eq!(version["served"], true);
    assert_eq!(version["storage"], true);
    assert_eq!(version["subresources"], json!({"status": {}}));

    let schema = &version["schema"]["openAPIV3Schema"];
    let mut problems = Vec::new();
    unstructural(schema, "openAPIV3Schema", &mut problems);
    if schema["properties"]["metadata"] != json!({"type": "object"}) {
        problems.push("metadata may only say `type: object`".to_owned());
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let status = &schema["properties"]["status"]["properties"];
    assert_eq!(
        status["phase"]["enum"],
        json!([
            "Pending",
            "Queued",
            "Running",
            "WaitingApproval",
            "Finished",
            "Cancelled",
            "Joined",
            "Interrupted"
        ])
    );
    // The outcomes are the journal's (`runbook test` expects the same words).
    assert_eq!(
        status["outcome"]["enum"],
        json!([
            "succeeded",
            "rolled-back",
            "failed",
            "precondition-failed",
            "stopped",
            "rollback-failed"
        ])
    );

    // `kubectl get runbookruns` reads like `runbook runs`.
    let columns: Vec<(String, String, String)> = version["additionalPrinterColumns"]
        .as_array()
        .expect("printer columns")
        .iter()
        .map(|column| {
            (
                column["name"].as_str().unwrap_or_default().to_owned(),
                column["jsonPath"].as_str().unwrap_or_default().to_owned(),
                column["type"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("Runbook", ".spec.runbook", "string"),
        ("Phase", ".status.phase", "string"),
        ("Outcome", ".status.outcome", "string"),
        ("Step", ".status.step", "string"),
        ("Owner", ".status.owner", "string"),
        ("Age", ".metadata.creationTimestamp", "date"),
    ];
    assert_eq!(
        columns,
        expected.map(|(n, p, t)| (n.to_owned(), p.to_owned(), t.to_owned()))
    );
    // Every column's path is in the schema.
    for (_, path, _) in &columns {
        let mut node = schema;
        for part in path.trim_start_matches('.').split('.') {
            if part == "metadata" {
                break;
            }
            node = &node["properties"][part];
            assert!(
                !node.is_null(),
                "printer column {path} is not in the schema"
            );
        }
    }
}

fn sample_run() -> Json {
    json!({
        "apiVersion": "runbook.dev/v1alpha1",
        "kind": "RunbookRun",
        "metadata": {"name": "scale-api-3f2a9c", "namespace": "runbook-system"},
        "spec": {
            "runbook": "scale-api",
            "digest": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "target": "scale-api{namespace=shop}",
            "params": {"namespace": "shop", "replicas": 3, "force": false},
            "secretParams": ["token"],
            "incident": "c0ffee1234567890@2026-12-04T03:00:00Z",
            "trigger": {
                "alert": "ApiDown",
                "fingerprint": "c0ffee1234567890",
                "startsAt": "2026-12-04T03:00:00Z",
                "receiver": "runbook",
                "groupKey": "{}:{alertname=\"ApiDown\"}",
                "index": 0
            }
        },
        "status": {
            "phase": "WaitingApproval",
            "step": "scale",
            "gate": "scale",
            "owner": "runbook-7d9f-abcde",
            "message": "waiting for approval",
            "queuedAt": "2026-12-04T03:00:01Z",
            "startedAt": "2026-12-04T03:00:02Z",
            "journal": {"chunks": 1, "records": 12}
        }
    })
}

#[test]
fn a_runbookrun_validates_against_the_crd_schema_and_a_wrong_one_does_not() {
    let schema = crd_version()["schema"]["openAPIV3Schema"].clone();
    // OpenAPI v3's schema is JSON Schema draft 4 with extensions (x-kubernetes-*), which a
    // draft 4 validator ignores; formats are checked as the API server checks date-time.
    let validator = jsonschema::draft4::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("the CRD's schema is a valid JSON Schema");
    let sample = sample_run();
    let errors: Vec<String> = validator
        .iter_errors(&sample)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}");

    let mut finished = sample.clone();
    finished["status"] = json!({
        "phase": "Finished", "outcome": "rolled-back", "finishedAt": "2026-12-04T03:10:00Z",
        "approvedBy": "alice (kubernetes)", "joined": "scale-api-1111"
    });
    assert!(validator.is_valid(&finished));

    type Change = fn(&mut Json);
    let wrong: [(&str, Change); 6] = [
        ("no runbook", |run| {
            run["spec"].as_object_mut().unwrap().remove("runbook");
        }),
        ("a phase that is not one", |run| {
            run["status"]["phase"] = json!("Done")
        }),
        ("an outcome that is not one", |run| {
            run["status"]["outcome"] = json!("aborted")
        }),
        ("a digest that is not sha256 hex", |run| {
            run["spec"]["digest"] = json!("abc")
        }),
        ("a time that is not RFC 3339", |run| {
            run["status"]["startedAt"] = json!("yesterday")
        }),
        ("a trigger index that is text", |run| {
            run["spec"]["trigger"]["index"] = json!("first")
        }),
    ];
    for (what, change) in wrong {
        let mut run = sample.clone();
        change(&mut run);
        assert!(!validator.is_valid(&run), "{what} was accepted");
    }
}

// --- The ClusterRole -------------------------------------------------------------------

#[test]
fn the_cluster_role_is_what_runbook_rbac_prints() {
    let (code, generated, stderr) = runbook(&["rbac"]);
    assert_eq!(code, 0, "{stderr}");
    compare_generated(
        "deploy/base/clusterrole.yaml",
        &generated,
        "what `runbook rbac` prints for runbooks/",
    );
}

/// What the shipped runbooks need, from the library (not from the file being checked).
fn needed_by_the_shipped_runbooks() -> Vec<Permission> {
    let (catalog, diagnostics, _) = runbook_core::load_catalog(&[root().join("runbooks")]);
    assert!(!diagnostics.has_errors(), "{diagnostics:?}");
    runbook_core::rbac::requirements(&catalog)
        .needs
        .into_keys()
        .collect()
}

fn uncovered(rules: &[Rule], needed: &[Permission]) -> Vec<String> {
    needed
        .iter()
        .filter(|permission| !rules.iter().any(|rule| rule.allows(permission)))
        .map(ToString::to_string)
        .collect()
}

#[test]
fn the_cluster_role_covers_every_permission_the_runbooks_need() {
    let role = yaml_file("deploy/base/clusterrole.yaml");
    assert_eq!(role.len(), 1);
    assert_eq!(role[0]["kind"], "ClusterRole");
    let rules = Rule::all_in(&role[0]);
    let needed = needed_by_the_shipped_runbooks();
    assert!(
        needed.len() > 50,
        "only {} permissions derived",
        needed.len()
    );
    let missing = uncovered(&rules, &needed);
    assert!(
        missing.is_empty(),
        "clusterrole.yaml does not allow: {missing:?}"
    );
    // Nothing in it is broader than asked: no wildcards.
    for rule in &rules {
        for list in [&rule.api_groups, &rule.resources, &rule.verbs] {
            assert!(
                !list.iter().any(|item| item == "*"),
                "a wildcard in {rule:?}"
            );
        }
    }
    // And the check can fail: a hand edit that drops one verb is caught.
    let mut edited = rules.clone();
    let scale = edited
        .iter_mut()
        .find(|rule| rule.resources == ["deployments/scale"])
        .expect("the shipped runbooks scale deployments");
    scale.verbs.retain(|verb| verb != "patch");
    assert_eq!(
        uncovered(&edited, &needed),
        ["patch apps/deployments/scale"]
    );
}

/// A runbooks folder of its own, in a temporary directory.
fn folder_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }
    dir
}

#[test]
fn a_runbook_with_a_scale_step_adds_patch_on_the_scale_subresource() {
    let dir = folder_with(&[(
        "scale-api.yaml",
        "apiVersion: runbook.dev/v1alpha1\nkind: Runbook\nmetadata:\n  name: scale-api\nspec:\n  steps:\n    - scale: {kind: StatefulSet, name: db, namespace: shop, replicas: 3}\n",
    )]);
    let (code, role, stderr) = runbook(&["--dir", dir.path().to_str().unwrap(), "rbac"]);
    assert_eq!(code, 0, "{stderr}");
    let rules = Rule::all_in(&yaml_documents("role", &role)[0]);
    let scale = Permission {
        group: "apps".into(),
        resource: "statefulsets/scale".into(),
        verb: "patch".into(),
        name: None,
    };
    assert!(rules.iter().any(|rule| rule.allows(&scale)), "{role}");
    // The read its undo needs, and nothing else.
    assert_eq!(
        rules,
        [
            Rule {
                api_groups: vec!["apps".into()],
                resources: vec!["statefulsets".into()],
                verbs: vec!["get".into()],
                resource_names: vec![],
            },
            Rule {
                api_groups: vec!["apps".into()],
                resources: vec!["statefulsets/scale".into()],
                verbs: vec!["patch".into()],
                resource_names: vec![],
            },
        ]
    );
}

#[test]
fn rbac_refuses_a_folder_with_a_broken_runbook_rather_than_print_a_role_too_small() {
    let dir = folder_with(&[(
        "broken.yaml",
        "apiVersion: runbook.dev/v1alpha1\nkind: Runbook\nmetadata:\n  name: broken\nspec:\n  steps:\n    - scael: {kind: Deployment, name: api, replicas: 3}\n",
    )]);
    let (code, stdout, stderr) = runbook(&["--dir", dir.path().to_str().unwrap(), "rbac"]);
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("broken.yaml"), "{stderr}");
}

/// A runbook that sends every kind of request a native action or fact makes, on kinds the
/// fake API server serves, and fails at its end when `fail` is set, so every undo runs too.
const EVERY_REQUEST: &str = r#"apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata:
  name: every-request
spec:
  params:
    - {name: fail, type: boolean, default: false}
  facts:
    - name: api
      kubernetes: {kind: Deployment, name: api, namespace: shop}
    - name: pods
      kubernetes: {kind: Pod, namespace: shop}
    - name: log
      logs: {namespace: shop, pod: api-0, tail: 5}
    - name: agent
      exec: {namespace: shop, pod: api-0, command: [status]}
  preconditions:
    - check: pods.items.len() == 2 && log != "" && agent.ok
  steps:
    - scale: {kind: Deployment, name: api, namespace: shop, replicas: 3}
    - restart: {kind: Deployment, name: api, namespace: shop}
      irreversible: true
    - patch: {kind: Deployment, name: api, namespace: shop, patch: {metadata: {labels: {patched: "yes"}}}}
    - annotate: {kind: Deployment, name: api, namespace: shop, set: {annotated: "yes"}}
    - label: {kind: Deployment, name: api, namespace: shop, set: {labelled: "yes"}}
    - apply:
        manifest: {apiVersion: v1, kind: ConfigMap, metadata: {name: probe, namespace: shop}, data: {a: "1"}}
    - cordon: {node: n2}
    - drain: {node: n1}
    - exec: {namespace: shop, pod: api-0, command: [touch, /tmp/x]}
      irreversible: true
    - wait: {kind: Deployment, name: api, namespace: shop, until: "object.metadata.labels.rolled == \"yes\""}
      timeout: 20s
    - delete: {kind: Job, name: old, namespace: shop}
      irreversible: true
    - verify: "!params.fail"
      timeout: 1s
"#;

/// The RBAC attributes the API server gives a request (as its RequestInfoFactory does): the
/// group, the resource (with subresource) and the verb; `None` for discovery and `/version`,
/// which every authenticated identity may read.
fn attributes(request: &runbook_fake_apiserver::Recorded) -> Option<Permission> {
    let parts: Vec<&str> = request.path.trim_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return None,
    };
    let rest = match rest {
        ["namespaces", _namespace, rest @ ..] if !rest.is_empty() => rest,
        rest => rest,
    };
    let (resource, name) = match rest {
        [] => return None,
        [resource] => (resource.to_string(), None),
        [resource, name] => (resource.to_string(), Some(*name)),
        [resource, name, subresource] => (format!("{resource}/{subresource}"), Some(*name)),
        _ => panic!("unexpected path {}", request.path),
    };
    let verb = match (request.method.as_str(), name) {
        ("GET", _) if request.param("watch") == Some("true") => "watch",
        ("GET", Some(_)) => "get",
        ("GET", None) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", Some(_)) => "delete",
        ("DELETE", None) => "deletecollection",
        (method, _) => panic!("unexpected method {method}"),
    };
    Some(Permission {
        group: group.to_owned(),
        resource,
        verb: verb.to_owned(),
        name: None,
    })
}

/// Runs EVERY_REQUEST against the fake API server (live, failing so the undos run, and as a
/// dry run) and checks that every request it sent is one the role `runbook rbac` derives for
/// it allows: the derivation follows what the live cluster code really sends.
#[test]
fn every_request_a_run_sends_is_allowed_by_the_role_runbook_rbac_derives() {
    use runbook_fake_apiserver::{ExecReply, FakeApi};
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pod = |name: &str, node: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "shop", "uid": name},
               "spec": {"nodeName": node, "containers": [{"name": "main", "image": "busybox"}]},
               "status": {"phase": "Running"}})
    };
    let seed = |fake: &FakeApi| {
        fake.insert(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}));
        for node in ["n1", "n2"] {
            fake.insert(
                json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}, "spec": {}}),
            );
        }
        fake.insert(pod("api-0", "n2"));
        fake.insert(pod("worker-0", "n1"));
        fake.insert(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "api", "namespace": "shop"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "api"}},
                     "template": {"metadata": {"labels": {"app": "api"}}, "spec": {"containers": [{"name": "api", "image": "api:1"}]}}}
        }));
        fake.insert(json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "old", "namespace": "shop"}, "spec": {}}));
        fake.set_logs("shop", "api-0", "main", "listening\n");
        for argv in [&["status"][..], &["touch", "/tmp/x"][..]] {
            fake.script_exec(
                "shop",
                "api-0",
                argv,
                ExecReply {
                    stdout: "{\"ok\": true}".to_owned(),
                    stderr: String::new(),
                    exit_code: 0,
                },
            );
        }
    };
    let dir = folder_with(&[("runbooks/every-request.yaml", EVERY_REQUEST)]);
    let runbooks = dir.path().join("runbooks");
    let (code, role, stderr) = runbook(&["--dir", runbooks.to_str().unwrap(), "rbac"]);
    assert_eq!(code, 0, "{stderr}");
    let rules = Rule::all_in(&yaml_documents("role", &role)[0]);

    let mut seen = BTreeSet::new();
    for (args, exit) in [
        (&["--yes"][..], 0),
        (&["--yes", "--set", "fail=true"][..], 1),
        (&["--yes", "--dry-run"][..], 0),
    ] {
        // Each run starts from the same cluster.
        let fake = runtime.block_on(FakeApi::start());
        seed(&fake);
        let kubeconfig = fake.write_kubeconfig(dir.path(), "shop");
        let run = Command::new(env!("CARGO_BIN_EXE_runbook"))
            .arg("--dir")
            .arg(&runbooks)
            .args(["run", "every-request", "--lock", "file", "--kubeconfig"])
            .arg(&kubeconfig)
            .args(args)
            .env_remove("KUBECONFIG")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("HOME", dir.path())
            .env("RUNBOOK_STATE_DIR", dir.path().join("state"))
            .env("RUNBOOK_LOG", "off")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // What the wait waits for happens once it watches (a dry run only reads once).
        if !args.contains(&"--dry-run") {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
            while !fake
                .requests()
                .iter()
                .any(|r| r.param("watch") == Some("true"))
            {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the wait never watched"
                );
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            fake.modify("apps/v1", "Deployment", Some("shop"), "api", |deployment| {
                deployment["metadata"]["labels"]["rolled"] = json!("yes");
            });
        }
        let output = run.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(exit), "{args:?}: {stderr}");
        for request in fake.requests() {
            let Some(permission) = attributes(&request) else {
                continue;
            };
            assert!(
                rules.iter().any(|rule| rule.allows(&permission)),
                "{args:?}: {} needs {permission}, which the derived role does not allow:\n{role}",
                request.line()
            );
            seen.insert(permission.to_string());
        }
    }
    // The runs did reach every family: reads, the scale subresource, eviction, exec, logs,
    // watch, and the delete that undoes what an apply created. (An apply that creates is a
    // PATCH the API server also authorizes as `create`; no request shows that.)
    for wanted in [
        "get apps/deployments",
        "list core/pods",
        "patch apps/deployments/scale",
        "create core/pods/eviction",
        "get core/pods/exec",
        "get core/pods/log",
        "watch apps/deployments",
        "patch core/configmaps",
        "delete core/configmaps",
        "patch core/nodes",
        "delete batch/jobs",
    ] {
        assert!(
            seen.contains(wanted),
            "no request needed {wanted}: {seen:?}"
        );
    }
}

// --- The runbooks ConfigMap ------------------------------------------------------------

/// The ConfigMap key of a file of the runbooks folder: `NAME/runbook.yaml` is `NAME.yaml`,
/// `lib/NAME.yaml` is `lib.NAME.yaml` (keys cannot hold `/`).
fn key_of(relative: &str) -> String {
    match relative.strip_suffix("/runbook.yaml") {
        Some(name) => format!("{name}.yaml"),
        None => relative.replace('/', "."),
    }
}

/// `runbooks/Kustomization` as it must be: every runbook and fact library the loader finds.
fn runbooks_kustomization() -> String {
    let runbooks = root().join("runbooks");
    let (_, diagnostics, workspace) = runbook_core::load_catalog(std::slice::from_ref(&runbooks));
    assert!(!diagnostics.has_errors(), "{diagnostics:?}");
    let mut entries: BTreeMap<String, String> = BTreeMap::new();
    let files = workspace
        .runbooks
        .iter()
        .map(|loaded| loaded.source.path().to_path_buf())
        .chain(
            workspace
                .libraries
                .iter()
                .map(|loaded| loaded.source.path().to_path_buf()),
        );
    for file in files {
        let relative = file
            .strip_prefix(&runbooks)
            .expect("under runbooks/")
            .to_string_lossy()
            .into_owned();
        let key = key_of(&relative);
        assert!(
            key.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')),
            "{key} is not a ConfigMap key"
        );
        if let Some(other) = entries.insert(key.clone(), relative.clone()) {
            panic!("{relative} and {other} would both be the key {key}");
        }
    }
    let committed = std::fs::read_to_string(runbooks.join("Kustomization")).unwrap_or_default();
    // The comment at the top is kept as written; what follows is generated.
    let header_end = committed.find("apiVersion:").unwrap_or(0);
    let mut text = committed[..header_end].to_owned();
    text.push_str(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nconfigMapGenerator:\n  - name: runbooks\n    files:\n",
    );
    for (key, relative) in &entries {
        text.push_str(&format!("      - {key}={relative}\n"));
    }
    text
}

#[test]
fn the_runbooks_kustomization_lists_every_runbook_and_fact_library_under_a_flat_key() {
    let generated = runbooks_kustomization();
    assert!(generated.contains("openbao-sealed.yaml=openbao-sealed/runbook.yaml"));
    assert!(generated.contains("lib.spire.yaml=lib/spire.yaml"));
    compare_generated(
        "runbooks/Kustomization",
        &generated,
        "every runbook and fact library of runbooks/",
    );
}

/// The ConfigMap's data: from kustomize's own output where kustomize is installed, else
/// from the files `runbooks/Kustomization` names.
fn runbooks_configmap_data() -> BTreeMap<String, String> {
    if let Some(objects) = kustomize("deploy/base") {
        let configmap = objects
            .iter()
            .find(|object| object["kind"] == "ConfigMap")
            .expect("the runbooks ConfigMap");
        return configmap["data"]
            .as_object()
            .expect("data")
            .iter()
            .map(|(key, value)| (key.clone(), value.as_str().unwrap_or_default().to_owned()))
            .collect();
    }
    let kustomization = yaml_file("runbooks/Kustomization");
    kustomization[0]["configMapGenerator"][0]["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|entry| {
            let (key, path) = entry.as_str().unwrap().split_once('=').unwrap();
            let text = std::fs::read_to_string(root().join("runbooks").join(path)).unwrap();
            (key.to_owned(), text)
        })
        .collect()
}

/// Lays `data` out as the kubelet mounts a ConfigMap: the files in a hidden timestamped
/// folder, `..data` a link to it, and each key a link through `..data`.
#[cfg(unix)]
fn mount_like_the_kubelet(data: &BTreeMap<String, String>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let stamped = "..2026_12_04_03_00_00.123456789";
    std::fs::create_dir(dir.path().join(stamped)).expect("mkdir");
    for (key, text) in data {
        std::fs::write(dir.path().join(stamped).join(key), text).expect("write");
    }
    std::os::unix::fs::symlink(stamped, dir.path().join("..data")).expect("link ..data");
    for key in data.keys() {
        std::os::unix::fs::symlink(format!("..data/{key}"), dir.path().join(key)).expect("link");
    }
    dir
}

#[cfg(unix)]
#[test]
fn the_runbooks_configmap_mounted_as_the_kubelet_mounts_it_loads_as_the_runbooks_folder() {
    let data = runbooks_configmap_data();
    let mount = mount_like_the_kubelet(&data);
    let dir = mount.path().to_str().unwrap();

    let (code, _, stderr) = runbook(&["validate", dir]);
    assert_eq!(code, 0, "{stderr}");
    // As many runbooks and fact libraries as runbooks/ holds, and no problem.
    let (_, _, shipped) = runbook(&["validate"]);
    let summary = |text: &str| text.lines().last().unwrap_or_default().to_owned();
    assert_eq!(summary(&stderr), summary(&shipped));
    assert!(stderr.contains("0 errors, 0 warnings"), "{stderr}");

    let names = |args: &[&str]| -> BTreeSet<String> {
        let (code, stdout, stderr) = runbook(args);
        assert_eq!(code, 0, "{stderr}");
        serde_json::from_str::<Json>(&stdout)
            .expect("json")
            .as_array()
            .unwrap()
            .iter()
            .map(|item| item["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let mounted = names(&["--dir", dir, "list", "--format", "json"]);
    let shipped = names(&["list", "--format", "json"]);
    assert_eq!(mounted, shipped);
    assert!(mounted.contains("openbao-sealed"));

    // The server in the pod derives the same role from what it loads: the fact libraries
    // resolved, the same facts read.
    let (code, role, stderr) = runbook(&["--dir", dir, "rbac"]);
    assert_eq!(code, 0, "{stderr}");
    let committed = std::fs::read_to_string(root().join("deploy/base/clusterrole.yaml")).unwrap();
    assert_eq!(role, committed);

    // A plan of a runbook that needs a fact library compiles from the mount.
    let (code, plan, stderr) = runbook(&["--dir", dir, "plan", "openbao-sealed"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(plan.contains("spire.server.healthy"), "{plan}");
}

// --- kustomize ---------------------------------------------------------------------------

/// `kustomize build DIR` with whichever kustomize is installed (kubectl's own, or the
/// binary), as objects; `None`, with a note, when there is none.
fn kustomize(dir: &str) -> Option<Vec<Json>> {
    let attempts: [(&str, &[&str]); 2] = [("kubectl", &["kustomize"]), ("kustomize", &["build"])];
    for (program, args) in attempts {
        let Ok(output) = Command::new(program)
            .args(args)
            .arg(root().join(dir))
            .output()
        else {
            continue;
        };
        assert!(
            output.status.success(),
            "{program} {} {dir}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
        return Some(yaml_documents(
            dir,
            &String::from_utf8_lossy(&output.stdout),
        ));
    }
    eprintln!("note: neither kubectl nor kustomize is installed; {dir} is checked file by file");
    None
}

/// The objects of `dir`: kustomize's output, or (without kustomize) the files its
/// kustomization lists, read as they are (no generators, no patches).
fn objects(dir: &str) -> (Vec<Json>, bool) {
    if let Some(objects) = kustomize(dir) {
        return (objects, true);
    }
    let kustomization = &yaml_file(&format!("{dir}/kustomization.yaml"))[0];
    let mut objects = Vec::new();
    for resource in kustomization["resources"].as_array().into_iter().flatten() {
        let path = format!("{dir}/{}", resource.as_str().unwrap());
        if root().join(&path).is_file() {
            objects.extend(yaml_file(&path));
        } else if root().join(&path).join("kustomization.yaml").is_file() {
            objects.extend(objects_of_kustomization(&path));
        } else if path.ends_with("schemas") {
            objects.extend(yaml_file("schemas/runbookrun.crd.yaml"));
            objects.extend(yaml_file("schemas/runbookapproval.crd.yaml"));
        }
    }
    (objects, false)
}

fn objects_of_kustomization(dir: &str) -> Vec<Json> {
    objects(dir).0
}

fn find<'a>(objects: &'a [Json], kind: &str, name: &str) -> &'a Json {
    objects
        .iter()
        .find(|object| object["kind"] == kind && object["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn container(deployment: &Json) -> &Json {
    &deployment["spec"]["template"]["spec"]["containers"][0]
}

fn args(deployment: &Json) -> Vec<String> {
    container(deployment)["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|arg| arg.as_str().unwrap().to_owned())
        .collect()
}

/// Flags being added to `serve` in parallel with this deployment (issue 14); accepted here
/// until `serve --help` lists them, then checked like the rest.
/// The flags of `serve --cluster-state`, which the single-replica overlay must not pass.
const CLUSTER_FLAGS: [&str; 2] = ["--cluster-state", "--replica"];

/// Every flag of `args` is one `runbook serve --help` lists.
fn assert_real_serve_flags(args: &[String]) {
    let (code, help, stderr) = runbook(&["serve", "--help"]);
    assert_eq!(code, 0, "{stderr}");
    let known: BTreeSet<&str> = help
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|word| word.starts_with("--") && word.len() > 2)
        .collect();
    assert!(known.contains("--token-file") && known.contains("--lock-namespace"));
    assert_eq!(args.first().map(String::as_str), Some("serve"));
    for arg in &args[1..] {
        let flag = arg.split('=').next().unwrap();
        assert!(
            flag.starts_with("--"),
            "{arg}: not a flag (every value is given as --flag=value)"
        );
        assert!(
            known.contains(flag),
            "{flag} is not a flag of `runbook serve` (its --help lists {known:?})"
        );
    }
}

/// The pod runs hardened: not root, no privilege, no capability, a read-only root, the
/// runtime's seccomp profile, and bounded resources.
fn assert_hardened(deployment: &Json) {
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert!(pod["securityContext"]["runAsUser"].as_i64().unwrap_or(0) > 0);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let container = container(deployment);
    let security = &container["securityContext"];
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
    assert!(security["capabilities"].get("add").is_none());
    for kind in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                container["resources"][kind][resource].is_string(),
                "no {kind}.{resource}"
            );
        }
    }
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(container[probe]["httpGet"]["path"], "/healthz", "{probe}");
        assert_eq!(container[probe]["httpGet"]["port"], "http", "{probe}");
    }
    assert_eq!(container["ports"][0]["name"], "http");
    assert_eq!(container["ports"][0]["containerPort"], 9095);
}

/// The value of `--NAME=` in `args`.
fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .find_map(|arg| arg.strip_prefix(&format!("{name}=")))
}

fn mount_of<'a>(deployment: &'a Json, volume: &str) -> &'a str {
    container(deployment)["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|mount| mount["name"] == volume)
        .and_then(|mount| mount["mountPath"].as_str())
        .unwrap_or_else(|| panic!("volume {volume} is not mounted"))
}

fn volume<'a>(deployment: &'a Json, name: &str) -> &'a Json {
    deployment["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|volume| volume["name"] == name)
        .unwrap_or_else(|| panic!("no volume {name}"))
}

const NAMESPACE: &str = "runbook-system";

/// Kinds that live in no namespace.
const CLUSTER_SCOPED: [&str; 6] = [
    "Namespace",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
];

/// Cluster-scoped kinds kustomize does not know are (see the base test).
const KUSTOMIZE_NAMESPACES: [&str; 2] = [
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
];

fn kinds(objects: &[Json]) -> BTreeSet<String> {
    objects
        .iter()
        .map(|object| object["kind"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn the_base_builds_every_object_with_real_flags_and_a_hardened_pod() {
    let (objects, built) = objects("deploy/base");
    let mut expected: BTreeSet<String> = [
        "Namespace",
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ]
    .map(str::to_owned)
    .into();
    if built {
        expected.extend(["ConfigMap".to_owned(), "Secret".to_owned()]);
    }
    assert_eq!(kinds(&objects), expected);
    if built {
        for object in &objects {
            let kind = object["kind"].as_str().unwrap();
            let namespace = object["metadata"]["namespace"].as_str();
            if KUSTOMIZE_NAMESPACES.contains(&kind) {
                // kustomize 5.5 does not know these kinds are cluster-scoped and gives them the
                // base's namespace; the API server ignores the namespace of a cluster-scoped
                // object (the `needs cluster` dry-run checks it is accepted).
                assert!(
                    matches!(namespace, None | Some(NAMESPACE)),
                    "{kind}: {namespace:?}"
                );
            } else if CLUSTER_SCOPED.contains(&kind) {
                assert_eq!(namespace, None, "{kind} is cluster-scoped");
            } else {
                assert_eq!(
                    namespace,
                    Some(NAMESPACE),
                    "{kind} {}",
                    object["metadata"]["name"]
                );
            }
        }
    }

    let deployment = find(&objects, "Deployment", "runbook");
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_hardened(deployment);
    let args = args(deployment);
    assert_real_serve_flags(&args);
    for wanted in [
        "--cluster-state",
        "--kubernetes-approvers",
        "--replica=$(POD_NAME)",
    ] {
        assert!(
            args.iter().any(|arg| arg == wanted),
            "{wanted} not in {args:?}"
        );
    }
    // The downward API gives the names the args expand.
    let env: BTreeMap<&str, &str> = container(deployment)["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|var| {
            (
                var["name"].as_str().unwrap(),
                var["valueFrom"]["fieldRef"]["fieldPath"]
                    .as_str()
                    .unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(env.get("POD_NAME"), Some(&"metadata.name"));
    assert_eq!(env.get("POD_NAMESPACE"), Some(&"metadata.namespace"));
    assert_eq!(flag(&args, "--lock-namespace"), Some("$(POD_NAMESPACE)"));
    // Every path a flag names is a mounted volume.
    assert_eq!(flag(&args, "--dir"), Some(mount_of(deployment, "runbooks")));
    assert_eq!(
        flag(&args, "--state-dir"),
        Some(mount_of(deployment, "state"))
    );
    let token = flag(&args, "--token-file").unwrap();
    assert_eq!(
        Path::new(token).parent().unwrap(),
        Path::new(mount_of(deployment, "token"))
    );
    assert!(volume(deployment, "state")["emptyDir"].is_object());
    // The grace the kubelet gives is longer than the one serve takes.
    let grace = flag(&args, "--shutdown-grace").unwrap();
    let grace = humantime_seconds(grace);
    assert!(
        deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
            .as_u64()
            .unwrap()
            > grace
    );

    let service = find(&objects, "Service", "runbook");
    assert_eq!(service["spec"]["ports"][0]["port"], 9095);
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "http");
    assert_eq!(
        service["spec"]["selector"],
        deployment["spec"]["template"]["metadata"]["labels"]
    );
    let budget = find(&objects, "PodDisruptionBudget", "runbook");
    assert_eq!(budget["spec"]["minAvailable"], 1);
    assert_eq!(
        budget["spec"]["selector"]["matchLabels"],
        service["spec"]["selector"]
    );

    // The bindings give the service account the pod runs as what the roles say.
    let account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .unwrap();
    for (kind, name, role_kind) in [
        ("ClusterRoleBinding", "runbook", "ClusterRole"),
        ("ClusterRoleBinding", "runbook-approvals", "ClusterRole"),
        ("RoleBinding", "runbook", "Role"),
    ] {
        let binding = find(&objects, kind, name);
        assert_eq!(binding["roleRef"]["kind"], role_kind);
        find(
            &objects,
            role_kind,
            binding["roleRef"]["name"].as_str().unwrap(),
        );
        assert_eq!(binding["subjects"][0]["kind"], "ServiceAccount");
        assert_eq!(binding["subjects"][0]["name"], account);
        assert_eq!(binding["subjects"][0]["namespace"], NAMESPACE);
    }
    assert_server_role(find(&objects, "Role", "runbook"), true);
    let approvals = Rule::all_in(find(&objects, "ClusterRole", "runbook-approvals"));
    for (group, resource) in [
        ("authentication.k8s.io", "tokenreviews"),
        ("authorization.k8s.io", "subjectaccessreviews"),
    ] {
        let create = Permission {
            group: group.into(),
            resource: resource.into(),
            verb: "create".into(),
            name: None,
        };
        assert!(
            approvals.iter().any(|rule| rule.allows(&create)),
            "{create}"
        );
    }
    for resource in [
        "validatingadmissionpolicies",
        "validatingadmissionpolicybindings",
    ] {
        let get = Permission {
            group: "admissionregistration.k8s.io".into(),
            resource: resource.into(),
            verb: "get".into(),
            name: Some("runbook-approvals-name-their-approver".into()),
        };
        assert!(approvals.iter().any(|rule| rule.allows(&get)), "{get}");
    }
    assert_eq!(
        approvals.len(),
        3,
        "the approvals role grants nothing else (the policy read by name only)"
    );

    if built {
        // The generated ConfigMap and Secret are the ones the pod mounts (kustomize renamed
        // them with a hash of their contents, so a change rolls the pods).
        let configmap = objects.iter().find(|o| o["kind"] == "ConfigMap").unwrap();
        assert_eq!(
            volume(deployment, "runbooks")["configMap"]["name"],
            configmap["metadata"]["name"]
        );
        let bytes: usize = configmap["data"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(key, value)| key.len() + value.as_str().unwrap().len())
            .sum();
        // The API server's limit for one object; past 3/4 of it, split the ConfigMap.
        assert!(
            bytes < 768 * 1024,
            "the runbooks ConfigMap holds {bytes} bytes"
        );
        let secret = objects.iter().find(|o| o["kind"] == "Secret").unwrap();
        assert_eq!(
            volume(deployment, "token")["secret"]["secretName"],
            secret["metadata"]["name"]
        );
        // The token is empty until replaced: serve refuses to start with it.
        assert_eq!(secret["data"]["token"], "");
    }
}

fn humantime_seconds(text: &str) -> u64 {
    let digits: String = text.chars().take_while(char::is_ascii_digit).collect();
    let value: u64 = digits.parse().expect("a number");
    match &text[digits.len()..] {
        "s" => value,
        "m" => value * 60,
        other => panic!("unit {other}"),
    }
}

/// The server's own Role in its namespace: run locks, and with `--cluster-state` its runs,
/// their status, the admission ledger and journal chunks.
fn assert_server_role(role: &Json, cluster_state: bool) {
    let rules = Rule::all_in(role);
    let allows = |group: &str, resource: &str, verb: &str| {
        let permission = Permission {
            group: group.into(),
            resource: resource.into(),
            verb: verb.into(),
            name: None,
        };
        rules.iter().any(|rule| rule.allows(&permission))
    };
    // engine/kube/src/lease.rs: read, create, take over (update), renew (patch), release.
    for verb in ["get", "create", "update", "patch", "delete"] {
        assert!(
            allows("coordination.k8s.io", "leases", verb),
            "leases {verb}"
        );
    }
    let state = [
        (
            "runbook.dev",
            "runbookruns",
            &[
                "get", "list", "watch", "create", "update", "patch", "delete",
            ][..],
        ),
        (
            "runbook.dev",
            "runbookruns/status",
            &["get", "update", "patch"][..],
        ),
        (
            "",
            "configmaps",
            &["get", "list", "create", "update", "patch", "delete"][..],
        ),
    ];
    for (group, resource, verbs) in state {
        for verb in verbs {
            assert_eq!(
                allows(group, resource, verb),
                cluster_state,
                "{resource} {verb} with cluster state {cluster_state}"
            );
        }
    }
    assert!(
        !allows("", "secrets", "get"),
        "the server's Role reads no Secrets"
    );
}

#[test]
fn the_single_overlay_runs_one_replica_on_a_claim_without_cluster_state() {
    let Some(objects) = kustomize("deploy/overlays/single") else {
        // Its patches only mean something applied; without kustomize, check they parse.
        for file in [
            "kustomization.yaml",
            "deployment.yaml",
            "persistentvolumeclaim.yaml",
        ] {
            yaml_file(&format!("deploy/overlays/single/{file}"));
        }
        return;
    };
    let kinds = kinds(&objects);
    assert!(!kinds.contains("PodDisruptionBudget"), "{kinds:?}");
    assert!(kinds.contains("PersistentVolumeClaim"), "{kinds:?}");
    for object in &objects {
        let kind = object["kind"].as_str().unwrap();
        if !CLUSTER_SCOPED.contains(&kind) {
            assert_eq!(object["metadata"]["namespace"], NAMESPACE, "{kind}");
        }
    }
    let deployment = find(&objects, "Deployment", "runbook");
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(deployment["spec"]["strategy"], json!({"type": "Recreate"}));
    assert_hardened(deployment);
    let args = args(deployment);
    assert_real_serve_flags(&args);
    for gone in CLUSTER_FLAGS {
        assert!(
            !args.iter().any(|arg| arg.split('=').next() == Some(gone)),
            "{gone} in {args:?}"
        );
    }
    let state = volume(deployment, "state");
    assert!(state.get("emptyDir").is_none(), "{state}");
    let claim = state["persistentVolumeClaim"]["claimName"]
        .as_str()
        .unwrap();
    find(&objects, "PersistentVolumeClaim", claim);
    assert_eq!(
        flag(&args, "--state-dir"),
        Some(mount_of(deployment, "state"))
    );
    assert_server_role(find(&objects, "Role", "runbook"), false);
}

/// The README's way to give the server its token: an overlay whose secretGenerator replaces
/// the base's empty one; the pods then mount the new Secret (its name's hash changed, so
/// they roll).
#[test]
fn an_overlay_replaces_the_empty_token_as_the_readme_says() {
    // kustomize takes only relative paths to other kustomizations: the overlay is made
    // inside the repository's target/, two levels under its root.
    let scratch = root().join("target");
    std::fs::create_dir_all(&scratch).unwrap();
    let dir = tempfile::tempdir_in(&scratch).unwrap();
    std::fs::write(dir.path().join("token.txt"), "s3cret\n").unwrap();
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        "resources: [../../deploy/base]\nsecretGenerator:\n  - {name: runbook-token, namespace: runbook-system, behavior: replace, files: [token=token.txt]}\n",
    )
    .unwrap();
    let Some(objects) = kustomize(dir.path().to_str().unwrap()) else {
        return;
    };
    let secrets: Vec<&Json> = objects.iter().filter(|o| o["kind"] == "Secret").collect();
    assert_eq!(secrets.len(), 1);
    assert_eq!(secrets[0]["data"]["token"], "czNjcmV0Cg==");
    let deployment = find(&objects, "Deployment", "runbook");
    assert_eq!(
        volume(deployment, "token")["secret"]["secretName"],
        secrets[0]["metadata"]["name"]
    );
}

// --- Alertmanager ------------------------------------------------------------------------

#[test]
fn the_alertmanager_receiver_reaches_the_service_with_the_token_and_amtool_accepts_it() {
    let text = std::fs::read_to_string(root().join("deploy/alertmanager-receiver.yaml")).unwrap();
    let snippet = &yaml_documents("receiver", &text)[0];
    let receiver = &snippet["receivers"][0];
    let webhook = &receiver["webhook_configs"][0];
    let service = &yaml_file("deploy/base/service.yaml")[0];
    assert_eq!(
        webhook["url"],
        format!(
            "http://{}.{NAMESPACE}.svc:{}/api/v1/alerts",
            service["metadata"]["name"].as_str().unwrap(),
            service["spec"]["ports"][0]["port"]
        )
    );
    assert_eq!(webhook["send_resolved"], true);
    let authorization = &webhook["http_config"]["authorization"];
    assert_eq!(authorization["type"], "Bearer");
    assert!(authorization["credentials_file"].is_string());
    assert!(
        authorization.get("credentials").is_none(),
        "no token in the file"
    );

    // Debian's prometheus-alertmanager ships amtool (CI installs it).
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("alertmanager.yml");
    let name = receiver["name"].as_str().unwrap();
    std::fs::write(
        &config,
        format!(
            "route:\n  receiver: oncall\n  routes:\n    - receiver: {name}\n      matchers: ['runbook=\"true\"']\n      continue: true\nreceivers:\n  - name: oncall\n{}",
            text.split_once("receivers:\n").unwrap().1
        ),
    )
    .unwrap();
    match Command::new("amtool")
        .arg("check-config")
        .arg(&config)
        .output()
    {
        Ok(output) => assert!(
            output.status.success(),
            "amtool check-config: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(_) => eprintln!("note: amtool is not installed; the receiver was checked as YAML only"),
    }
}

// --- Approvers ---------------------------------------------------------------------------

#[test]
fn the_approver_example_grants_approve_on_runbooks_of_runbook_dev_per_runbook() {
    let documents = yaml_file("deploy/examples/approver-role.yaml");
    let role = documents
        .iter()
        .find(|d| d["kind"] == "Role")
        .expect("a Role");
    let binding = documents
        .iter()
        .find(|d| d["kind"] == "RoleBinding")
        .expect("a RoleBinding");
    // The server asks in its own namespace (engine/cli/src/serve/approvers.rs).
    assert_eq!(role["metadata"]["namespace"], NAMESPACE);
    assert_eq!(binding["metadata"]["namespace"], NAMESPACE);
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    let rules = Rule::all_in(role);
    let (catalog, _, _) = runbook_core::load_catalog(&[root().join("runbooks")]);
    for runbook in &rules[0].resource_names {
        assert!(
            catalog.get(runbook).is_some(),
            "{runbook} is not a shipped runbook"
        );
    }
    let approve = |runbook: &str| Permission {
        group: "runbook.dev".into(),
        resource: "runbooks".into(),
        verb: "approve".into(),
        name: Some(runbook.into()),
    };
    assert!(rules
        .iter()
        .any(|rule| rule.allows(&approve("node-maintenance"))));
    assert!(!rules
        .iter()
        .any(|rule| rule.allows(&approve("tenant-offboarding"))));
}

// --- A real API server -------------------------------------------------------------------

/// The API server accepts every object of the base and the overlay (a server-side dry run:
/// schemas, admission and the RBAC escalation check of the ClusterRole bindings included).
/// A dry run cannot place objects in a namespace that does not exist yet, so the namespace
/// (and nothing else) is created for real: use a disposable cluster.
#[test]
#[ignore = "needs cluster"]
fn kubectl_apply_dry_run_server_accepts_the_base_and_the_overlay() {
    let namespace = Command::new("kubectl")
        .args(["apply", "--server-side", "-f"])
        .arg(root().join("deploy/base/namespace.yaml"))
        .output();
    match namespace {
        Err(error) => {
            eprintln!("skipped: kubectl cannot be run ({error}); install it to apply deploy/");
            return;
        }
        Ok(output) => assert!(
            output.status.success(),
            "kubectl apply -f deploy/base/namespace.yaml: {}",
            String::from_utf8_lossy(&output.stderr)
        ),
    }
    for dir in ["deploy/base", "deploy/overlays/single"] {
        let output = match Command::new("kubectl")
            .args(["apply", "--server-side", "--dry-run=server", "-k"])
            .arg(root().join(dir))
            .output()
        {
            Ok(output) => output,
            Err(error) => {
                eprintln!("skipped: kubectl cannot be run ({error}); install it to apply {dir}");
                return;
            }
        };
        assert!(
            output.status.success(),
            "kubectl apply --dry-run=server -k {dir}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

// --- The image ---------------------------------------------------------------------------

/// `buildah` with a storage of its own, under `dir`, so a test leaves no image behind.
fn buildah(dir: &Path) -> Command {
    let mut command = Command::new("buildah");
    command.args(buildah_options(dir).split(' '));
    command
}

fn buildah_options(dir: &Path) -> String {
    format!(
        "--root {} --runroot {} --storage-driver vfs",
        dir.join("root").display(),
        dir.join("run").display()
    )
}

/// deploy/image/build.sh builds the image offline (`FROM scratch`, this binary and the
/// libraries it links), and the image runs: as user 65532, with the binary as entrypoint,
/// loading the runbooks from a mount as the Deployment gives them, and with no shell.
#[cfg(unix)]
#[test]
fn the_image_builds_from_scratch_offline_and_runs_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    if Command::new("buildah").arg("--version").output().is_err() {
        eprintln!("note: buildah is not installed; the image is not built");
        return;
    }
    let image = "localhost/runbook:deploy-test";
    let build = Command::new(root().join("deploy/image/build.sh"))
        .arg(env!("CARGO_BIN_EXE_runbook"))
        .arg(image)
        .env("BUILDAH_OPTIONS", buildah_options(dir.path()))
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "build.sh: {}{}",
        String::from_utf8_lossy(&build.stdout),
        String::from_utf8_lossy(&build.stderr)
    );
    let inspect = buildah(dir.path())
        .args([
            "inspect",
            "--format",
            "{{.OCIv1.Config.User}} {{.OCIv1.Config.Entrypoint}}",
            image,
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&inspect.stdout).trim(),
        "65532:65532 [/usr/local/bin/runbook]"
    );
    let from = buildah(dir.path()).args(["from", image]).output().unwrap();
    assert!(
        from.status.success(),
        "{}",
        String::from_utf8_lossy(&from.stderr)
    );
    let container = String::from_utf8_lossy(&from.stdout).trim().to_owned();
    let run = |args: &[&str]| {
        let runbooks = format!(
            "{}:/etc/runbook/runbooks:ro",
            root().join("runbooks").display()
        );
        buildah(dir.path())
            .args([
                "run",
                "--isolation",
                "chroot",
                "-v",
                &runbooks,
                &container,
                "--",
            ])
            .args(args)
            .output()
            .unwrap()
    };
    let validate = run(&[
        "/usr/local/bin/runbook",
        "--dir",
        "/etc/runbook/runbooks",
        "validate",
    ]);
    assert!(
        validate.status.success(),
        "{}",
        String::from_utf8_lossy(&validate.stderr)
    );
    let (_, _, shipped) = runbook(&["validate"]);
    assert_eq!(String::from_utf8_lossy(&validate.stderr), shipped);
    assert!(
        !run(&["/bin/sh", "-c", "true"]).status.success(),
        "the image has a shell"
    );
}

/// `kubectl ARGS` (with `input` on stdin); stdout, or a panic with stderr.
fn kubectl(args: &[&str], input: Option<&str>) -> String {
    use std::io::Write as _;
    let mut child = Command::new("kubectl")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("kubectl cannot be run ({e}): install it for the cluster tests")
        });
    if let Some(input) = input {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write");
    }
    drop(child.stdin.take());
    let output = child.wait_with_output().expect("kubectl");
    assert!(
        output.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Issue 14: the deploy ServiceAccount's own token (`kubectl create token`) is enough for a
/// shipped runbook's native steps: its ServiceAccount, ClusterRole and binding from
/// `deploy/base` are applied (nothing else of the base), and `completed-jobs-cleanup` lists
/// the Jobs of a namespace and deletes a completed one with only that token. Any verb the
/// ClusterRole lacks would be a 403 from the real authorizer.
#[test]
#[ignore = "needs cluster"]
fn the_deploy_service_accounts_token_runs_a_shipped_runbooks_native_steps() {
    std::env::var("KUBECONFIG")
        .ok()
        .filter(|k| !k.is_empty())
        .expect(
        "KUBECONFIG is not set: point it at a disposable cluster (see engine/kube/tests/README.md)",
    );
    let (objects, built) = objects("deploy/base");
    assert!(built, "kubectl kustomize is needed to build deploy/base");
    let wanted = [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
    ];
    for object in objects
        .iter()
        .filter(|o| wanted.contains(&o["kind"].as_str().unwrap_or_default()))
    {
        kubectl(
            &["apply", "--server-side", "-f", "-"],
            Some(&object.to_string()),
        );
    }
    let token = kubectl(
        &[
            "create",
            "token",
            "runbook",
            "-n",
            NAMESPACE,
            "--duration",
            "10m",
        ],
        None,
    );
    let config: Json = serde_json::from_str(&kubectl(
        &["config", "view", "--minify", "--raw", "-o", "json"],
        None,
    ))
    .expect("json");
    let cluster = &config["clusters"][0]["cluster"];
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let mut cluster_entry = json!({"server": cluster["server"]});
    for key in [
        "certificate-authority-data",
        "certificate-authority",
        "insecure-skip-tls-verify",
    ] {
        if !cluster[key].is_null() {
            cluster_entry[key] = cluster[key].clone();
        }
    }
    let test_namespace = format!("runbook-it-rbac-{}", std::process::id());
    std::fs::write(
        &kubeconfig,
        json!({
            "apiVersion": "v1", "kind": "Config", "current-context": "sa",
            "clusters": [{"name": "it", "cluster": cluster_entry}],
            "users": [{"name": "runbook", "user": {"token": token.trim()}}],
            "contexts": [{"name": "sa", "context": {"cluster": "it", "user": "runbook", "namespace": test_namespace}}],
        })
        .to_string(),
    )
    .unwrap();
    kubectl(&["create", "namespace", &test_namespace], None);
    struct Gone(String);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = Command::new("kubectl")
                .args(["delete", "namespace", &self.0, "--wait=false"])
                .output();
        }
    }
    let _gone = Gone(test_namespace.clone());
    kubectl(
        &["apply", "-n", &test_namespace, "-f", "-"],
        Some(&json!({
            "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "done-1"},
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]}}}
        }).to_string()),
    );
    // No kubelet or Job controller is needed: the Job is marked complete as its controller would.
    let now = "2026-12-04T03:00:00Z";
    kubectl(
        &["patch", "job", "done-1", "-n", &test_namespace, "--subresource=status", "--type=merge", "-p",
          &json!({"status": {"startTime": now, "completionTime": now, "succeeded": 1, "active": 0,
                              "conditions": [{"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": now, "lastProbeTime": now},
                                             {"type": "Complete", "status": "True", "lastTransitionTime": now, "lastProbeTime": now}]}}).to_string()],
        None,
    );
    let output = Command::new(env!("CARGO_BIN_EXE_runbook"))
        .args([
            "run",
            "completed-jobs-cleanup",
            "--yes",
            "--set",
            &format!("namespace={test_namespace}"),
            "--set",
            "jobs=done-1",
            "--lock",
            "file",
            "--kubeconfig",
        ])
        .arg(&kubeconfig)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .current_dir(root())
        .env_remove("KUBECONFIG")
        .env("HOME", dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(!stderr.to_lowercase().contains("forbidden"), "{stderr}");
    let left = kubectl(&["get", "jobs", "-n", &test_namespace, "-o", "name"], None);
    assert!(
        !left.contains("done-1"),
        "the completed Job was deleted: {left}"
    );
}
