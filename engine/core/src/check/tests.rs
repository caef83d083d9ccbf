//! Unit tests of the checker on small runbooks written inline.

use std::path::Path;

use super::*;
use crate::loader::Loader;

fn check_text(files: &[(&str, &str)]) -> (Catalog, Vec<String>) {
    let mut diagnostics = Diagnostics::new();
    let mut workspace = Workspace::default();
    let loader = Loader::new();
    for (path, text) in files {
        loader.load_text(
            Path::new(path),
            (*text).to_owned(),
            &mut workspace,
            &mut diagnostics,
        );
    }
    let catalog = check(&workspace, &mut diagnostics);
    let messages = diagnostics
        .sorted()
        .iter()
        .map(|d| {
            format!(
                "{}:{}:{}: {}",
                d.path().display(),
                d.span.start.line,
                d.span.start.column,
                d.message
            )
        })
        .collect();
    (catalog, messages)
}

const LIBRARY: &str = "apiVersion: runbook.dev/v1alpha1
kind: FactLibrary
metadata: {name: lib}
spec:
  facts:
    - {name: spire.server.sts, kubernetes: {kind: StatefulSet, name: spire-server, namespace: spire}}
    - {name: spire.server.healthy, expr: spire.server.sts.status.readyReplicas >= 1}
";

#[test]
fn library_facts_resolve_with_everything_they_read() {
    let runbook = "apiVersion: catalyst.openova.io/v1alpha1
kind: Runbook
metadata: {name: r}
spec:
  preconditions:
    - check: spire.server.healthy
  steps:
    - {verify: 'true'}
";
    let (catalog, messages) = check_text(&[("lib.yaml", LIBRARY), ("r.yaml", runbook)]);
    assert!(messages.is_empty(), "{messages:?}");
    let runbook = catalog.get("r").expect("checked");
    assert_eq!(
        runbook.facts.keys().collect::<Vec<_>>(),
        ["spire.server.healthy", "spire.server.sts"]
    );
}

#[test]
fn default_ids_and_native_undos() {
    let runbook = "apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata: {name: r}
spec:
  steps:
    - scale: {name: a, replicas: 1}
    - cordon: {node: n}
    - {run: ['true'], irreversible: nothing to undo}
    - {confirm: Go on?}
";
    let (catalog, messages) = check_text(&[("r.yaml", runbook)]);
    assert!(messages.is_empty(), "{messages:?}");
    let runbook = catalog.get("r").expect("checked");
    let ids: Vec<&str> = runbook.steps.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["scale-1", "cordon-2", "run-3", "step-4"]);
    assert!(matches!(
        runbook.steps[0].undo,
        UndoSpec::Native(NativeUndo::RestoreReplicas)
    ));
    assert!(matches!(
        runbook.steps[1].undo,
        UndoSpec::Native(NativeUndo::Uncordon)
    ));
    assert!(
        matches!(&runbook.steps[2].undo, UndoSpec::Irreversible(Some(reason)) if reason == "nothing to undo")
    );
    assert!(matches!(runbook.steps[3].action, Action::Gate));
    assert_eq!(runbook.steps[1].needs, ["scale-1"]);
}

#[test]
fn errors_in_one_runbook_keep_it_out_of_the_catalog_but_not_others() {
    let good = "apiVersion: runbook.dev/v1alpha1\nkind: Runbook\nmetadata: {name: good}\nspec:\n  steps:\n    - {verify: 'true'}\n";
    let bad = "apiVersion: runbook.dev/v1alpha1\nkind: Runbook\nmetadata: {name: bad}\nspec:\n  steps:\n    - {verify: nope.x}\n";
    let (catalog, messages) = check_text(&[("good.yaml", good), ("bad.yaml", bad)]);
    assert_eq!(
        messages,
        ["bad.yaml:6:16: unknown name `nope`: not a fact or `params`"]
    );
    assert!(catalog.get("good").is_some());
    assert!(catalog.get("bad").is_none());
}

#[test]
fn logs_facts_read_templates_a_tail_and_a_format() {
    let runbook = "apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata: {name: r}
spec:
  params:
    - {name: namespace, default: shop}
  facts:
    - {name: api.pod, kubernetes: {kind: Pod, name: api-0, namespace: shop}}
    - name: api.log
      logs:
        namespace: ${params.namespace}
        pod: ${api.pod.metadata.name}
        container: server
        tail: 200
        format: lines
  preconditions:
    - check: '!api.log.contains(\"panic: \")'
  steps:
    - {verify: 'true'}
";
    let (catalog, messages) = check_text(&[("r.yaml", runbook)]);
    assert!(messages.is_empty(), "{messages:?}");
    let runbook = catalog.get("r").expect("checked");
    let fact = &runbook.facts["api.log"];
    assert!(
        matches!(
            &fact.source,
            FactSource::Logs {
                container: Some(_),
                tail: Some(200),
                format: crate::document::LogFormat::Lines,
                ..
            }
        ),
        "{:?}",
        fact.source
    );
    assert_eq!(fact.reads, ["api.pod"]);
    assert_eq!(fact.params, ["namespace"]);
}

#[test]
fn a_logs_fact_may_read_a_deployments_pod_and_the_previous_container() {
    let runbook = "apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata: {name: r}
spec:
  params:
    - {name: app, default: api}
  facts:
    - name: api.crash
      logs: {namespace: shop, deployment: '${params.app}', previous: true, tail: 50}
  steps:
    - {verify: 'api.crash != \"\"'}
";
    let (catalog, messages) = check_text(&[("r.yaml", runbook)]);
    assert!(messages.is_empty(), "{messages:?}");
    let fact = &catalog.get("r").expect("checked").facts["api.crash"];
    let FactSource::Logs {
        target: LogTarget::Deployment(deployment),
        previous: true,
        tail: Some(50),
        ..
    } = &fact.source
    else {
        panic!("{:?}", fact.source);
    };
    assert_eq!(deployment.source, "${params.app}");
    assert_eq!(fact.params, ["app"]);
}

#[test]
fn logs_facts_with_a_bad_tail_or_no_pod_are_pointed_at() {
    let runbook = "apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata: {name: r}
spec:
  facts:
    - {name: a, logs: {namespace: shop, pod: api-0, tail: -1}}
    - {name: b, logs: {namespace: shop, pod: api-0, tail: many}}
    - {name: c, logs: {namespace: shop, pod: api-0, tail: 0}}
    - {name: d, logs: {namespace: shop, container: server}}
    - {name: e, logs: {namespace: shop, pod: api-0, format: line}}
    - {name: f, logs: {namespace: shop, pod: api-0}, exec: {namespace: shop, pod: api-0, command: [ls]}}
    - {name: g, logs: {namespace: shop, pod: deployment/api}}
    - {name: h, logs: {namespace: shop, pod: api-0, deployment: api}}
    - {name: i, logs: {namespace: shop, deployment: api, previous: yes}}
  steps:
    - {verify: 'true'}
";
    let (_, messages) = check_text(&[("r.yaml", runbook)]);
    assert_eq!(
            messages,
            [
                "r.yaml:6:59: must be at least 1, found -1",
                "r.yaml:7:59: expected an integer, found a string `many`",
                "r.yaml:8:59: must be at least 1, found 0",
                "r.yaml:9:23: missing `pod` (or `deployment`) in logs read",
                "r.yaml:10:61: unknown value `line` for log format, expected one of `text`, `lines`, `json`",
                "r.yaml:11:7: fact `f` has more than one source (`exec`, `logs`)",
                "r.yaml:12:46: `pod` names a pod, and `deployment/api` is a Deployment",
                "r.yaml:13:53: a logs read names a `pod` or a `deployment`, not both",
                "r.yaml:14:68: expected a boolean, found a string `yes`",
            ]
        );
}

#[test]
fn sandboxed_expressions_cannot_loop() {
    let runbook = "apiVersion: runbook.dev/v1alpha1\nkind: Runbook\nmetadata: {name: r}\nspec:\n  steps:\n    - {verify: 'loop { }'}\n";
    let (_, messages) = check_text(&[("r.yaml", runbook)]);
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert!(messages[0].starts_with("r.yaml:6:"), "{messages:?}");
}

#[test]
fn a_function_body_that_reads_a_fact_is_refused_at_the_fact_and_callers_get_its_error() {
    // Issue 15, item 6: functions take their inputs as arguments only, so they stay pure.
    let library = "apiVersion: runbook.dev/v1alpha1
kind: FactLibrary
metadata: {name: functions}
spec:
  facts:
    - {name: cert.not_after, expr: '0'}
  functions:
    - {name: days_until, params: [t], body: '(t - now()) / 86400'}
    - {name: days_left, params: [], body: 'days_until(cert.not_after)'}
    - {name: again, params: [n], body: 'again(n)'}
    - {name: over, params: [list, min], body: 'list.filter(|x| x > min)'}
";
    let runbook = "apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata: {name: r}
spec:
  preconditions:
    - check: days_left() > 0 && days_until(1, 2) > 0
  steps:
    - {verify: 'days_until(cert.not_after) > 3'}
";
    let (catalog, messages) = check_text(&[("lib.yaml", library), ("r.yaml", runbook)]);
    assert_eq!(
        messages,
        [
            "lib.yaml:9:55: function `days_left` reads `cert.not_after`, which is not one of its params (it has none)",
            "lib.yaml:10:14: function `again` calls itself",
            "lib.yaml:11:68: a closure in function `over` reads its param `min`, which a closure cannot see",
            "r.yaml:6:14: syntax error in expression: library function `days_left` has an error, reported where it is defined",
        ]
    );
    assert!(
        catalog.get("r").is_none(),
        "a runbook with an error is not compiled"
    );
    assert_eq!(
        catalog.functions.keys().collect::<Vec<_>>(),
        ["days_until"],
        "only the function that passed is in the catalog"
    );
}

#[test]
fn expect_status_and_allow_exit_codes_are_checked_where_they_are_written() {
    // Issue 15, item 5.
    let runbook = "apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata: {name: r}
spec:
  facts:
    - {name: probe.health, http: {url: 'https://x.example.com/', expectStatus: [200, '599-500']}}
    - {name: probe.diff, command: {argv: [argocd, app, diff, x], allowExitCodes: [1]}}
  steps:
    - {verify: 'probe.health.status == 200 && probe.diff.exitCode == 1'}
    - {notify: hi, allowExitCodes: [0, 1]}
";
    let (_, messages) = check_text(&[("r.yaml", runbook)]);
    assert_eq!(
        messages,
        [
            "r.yaml:6:86: `599-500` is an empty range: 599 is above 500",
            "r.yaml:7:66: `allowExitCodes` does not hold 0, so the command fails when it succeeds",
            "r.yaml:10:20: `allowExitCodes` applies to `run` and `exec` steps only",
        ]
    );
}

/// Review of issue 15, item 2: `vars.NAME` read where its capture has not surely run passed
/// `validate`, and read nothing at run time (Rhai gives `()` for a missing map key), so a
/// verify was silently false or a template empty: a step that does not wait for the capture,
/// and a capture that reads one of its own names evaluated after it (they go in name order).
#[test]
fn vars_are_readable_only_after_the_step_that_captures_them() {
    let runbook = "apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata: {name: r}
spec:
  steps:
    - {id: early, needs: [], verify: 'vars.count == 2'}
    - {id: take, needs: [], capture: {b: '2', a: 'vars.b + 1', c: 'vars.a + vars.b'}}
    - {id: late, verify: 'vars.count == 2 && vars.c == 6'}
    - {id: keep, needs: [take], capture: {count: '2'}}
  rollback:
    - {notify: 'count was ${vars.count}'}
";
    let (_, messages) = check_text(&[("r.yaml", runbook)]);
    assert_eq!(
        messages,
        [
            "r.yaml:6:39: `vars.count` is captured by step `keep`, which does not run before this step",
            "r.yaml:7:51: `vars.b` is captured after `a` in this step: a capture's values are taken in name order",
            "r.yaml:8:27: `vars.count` is captured by step `keep`, which does not run before this step",
        ]
    );
}
