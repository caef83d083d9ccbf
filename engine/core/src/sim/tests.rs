use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::json;

use super::*;

const HEAD: &str = "apiVersion: runbook.dev/v1alpha1\nkind: Scenario\nmetadata: {name: t}\n";

fn scenario(spec: &str) -> Scenario {
    let text = format!("{HEAD}spec:\n{spec}");
    match parse_scenario(Path::new("t.scenario.yaml"), &text) {
        Ok(scenario) => scenario,
        Err(diagnostics) => panic!("{}", problems_of(diagnostics).join("\n")),
    }
}

fn world(spec: &str) -> SimWorld {
    SimWorld::new(&scenario(spec))
}

fn problems_of(diagnostics: crate::diagnostic::Diagnostics) -> Vec<String> {
    diagnostics
        .sorted()
        .iter()
        .map(|d| {
            format!(
                "{}:{}:{}: {}{}",
                d.path().display(),
                d.span.start.line,
                d.span.start.column,
                d.message,
                d.help
                    .as_deref()
                    .map(|h| format!(" ({h})"))
                    .unwrap_or_default()
            )
        })
        .collect()
}

fn problems(spec: &str) -> Vec<String> {
    let text = format!("{HEAD}spec:\n{spec}");
    match parse_scenario(Path::new("t.scenario.yaml"), &text) {
        Ok(_) => Vec::new(),
        Err(diagnostics) => problems_of(diagnostics),
    }
}

fn key(api_version: &str, kind: &str, namespace: Option<&str>, name: &str) -> ObjectKey {
    ObjectKey {
        api_version: api_version.into(),
        kind: kind.into(),
        namespace: namespace.map(Into::into),
        name: name.into(),
    }
}

fn deployment(namespace: &str, name: &str) -> ObjectKey {
    key("apps/v1", "Deployment", Some(namespace), name)
}

async fn read(world: &SimWorld, key: &ObjectKey) -> EffectResult<Json> {
    Cluster::get(world, key).await
}

async fn fetch(
    world: &SimWorld,
    url: &str,
    query: &BTreeMap<String, String>,
) -> EffectResult<HttpResponse> {
    Http::get(world, url, query, &BTreeMap::new()).await
}

fn argv(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| (*w).to_owned()).collect()
}

fn mutation(verb: &str, target: &str, detail: &str) -> Mutation {
    Mutation {
        verb: verb.into(),
        target: target.into(),
        detail: detail.into(),
    }
}

fn rv(object: &Json) -> String {
    object["metadata"]["resourceVersion"]
        .as_str()
        .expect("resourceVersion")
        .to_owned()
}

const SHOP: &str = "  objects:
    - apiVersion: apps/v1
      kind: Deployment
      metadata: {name: api, namespace: shop, labels: {app: api, tier: web}}
      spec:
        replicas: 3
        template:
          spec:
            containers:
              - name: api
                image: api:1
                env: [{name: A, value: '1'}, {name: B, value: '2'}]
              - name: sidecar
                image: proxy:1
      status: {replicas: 3, readyReplicas: 3, availableReplicas: 3, updatedReplicas: 3}
    - apiVersion: apps/v1
      kind: Deployment
      metadata:
        name: worker
        namespace: shop
        labels: {app: worker}
        annotations: {sim.runbook.dev/stuck: 'true'}
      spec: {replicas: 1}
      status: {replicas: 1, readyReplicas: 1}
    - apiVersion: batch/v1
      kind: CronJob
      metadata: {name: report, namespace: shop}
      spec: {schedule: '0 * * * *', suspend: false}
    - apiVersion: v1
      kind: ConfigMap
      metadata: {name: settings, namespace: shop, labels: {app: api}}
      data: {mode: normal}
";

#[tokio::test]
async fn scale_sets_replicas_and_the_controller_follows() {
    let world = world(SHOP);
    let before = world.object(&deployment("shop", "api")).unwrap();
    let after = world
        .scale(&deployment("shop", "api"), 5, DryRun::No)
        .await
        .unwrap();
    assert_eq!(after["spec"]["replicas"], 5);
    for field in [
        "replicas",
        "readyReplicas",
        "availableReplicas",
        "updatedReplicas",
    ] {
        assert_eq!(after["status"][field], 5, "{field}");
    }
    assert_eq!(after["metadata"]["generation"], 2);
    assert_eq!(after["status"]["observedGeneration"], 2);
    assert_eq!(
        after["status"]["conditions"][0],
        json!({"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"})
    );
    assert_ne!(rv(&after), rv(&before));
    assert_eq!(world.object(&deployment("shop", "api")).unwrap(), after);
    assert_eq!(
        world.mutations(),
        [mutation("scale", "Deployment shop/api", "replicas 3 -> 5")]
    );

    // Scaled to zero, the counts disappear as the API server leaves them out.
    let zero = world
        .scale(&deployment("shop", "api"), 0, DryRun::No)
        .await
        .unwrap();
    assert!(zero["status"].get("readyReplicas").is_none());
}

#[tokio::test]
async fn scale_of_a_stuck_workload_leaves_status_alone() {
    let world = world(SHOP);
    let after = world
        .scale(&deployment("shop", "worker"), 4, DryRun::No)
        .await
        .unwrap();
    assert_eq!(after["spec"]["replicas"], 4);
    assert_eq!(after["status"], json!({"replicas": 1, "readyReplicas": 1}));
}

#[tokio::test]
async fn scale_refuses_kinds_without_scale_and_missing_objects() {
    let world = world(SHOP);
    let error = world
        .scale(
            &key("batch/v1", "CronJob", Some("shop"), "report"),
            2,
            DryRun::No,
        )
        .await
        .unwrap_err();
    assert!(matches!(error, EffectError::Invalid(_)), "{error:?}");
    let error = world
        .scale(&deployment("shop", "nope"), 2, DryRun::No)
        .await
        .unwrap_err();
    assert_eq!(
        error,
        EffectError::NotFound("deployments.apps \"nope\" not found in namespace \"shop\"".into())
    );
    assert!(world.mutations().is_empty());
}

#[tokio::test]
async fn restart_stamps_the_template_and_bumps_generation() {
    let world = world(SHOP);
    let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let after = world
        .restart(&deployment("shop", "api"), at, DryRun::No)
        .await
        .unwrap();
    assert_eq!(
        after["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"],
        "2023-11-14T22:13:20Z"
    );
    assert_eq!(after["metadata"]["generation"], 2);
    assert_eq!(after["status"]["observedGeneration"], 2);

    // A stuck workload gets the new generation but never observes it.
    let stuck = world
        .restart(&deployment("shop", "worker"), at, DryRun::No)
        .await
        .unwrap();
    assert_eq!(stuck["metadata"]["generation"], 2);
    assert!(stuck["status"].get("observedGeneration").is_none());

    let error = world
        .restart(
            &key("v1", "ConfigMap", Some("shop"), "settings"),
            at,
            DryRun::No,
        )
        .await
        .unwrap_err();
    assert!(matches!(error, EffectError::Invalid(_)), "{error:?}");
    assert_eq!(
        world.mutations(),
        [
            mutation(
                "restart",
                "Deployment shop/api",
                "restartedAt 2023-11-14T22:13:20Z"
            ),
            mutation(
                "restart",
                "Deployment shop/worker",
                "restartedAt 2023-11-14T22:13:20Z"
            ),
        ]
    );
}

#[tokio::test]
async fn merge_patch_merges_and_moves_generation_only_for_spec() {
    let world = world(SHOP);
    let cronjob = key("batch/v1", "CronJob", Some("shop"), "report");
    let body = json!({"spec": {"suspend": true}});
    let after = world
        .patch(&cronjob, PatchType::Merge, &body, DryRun::No)
        .await
        .unwrap();
    assert_eq!(
        after["spec"],
        json!({"schedule": "0 * * * *", "suspend": true})
    );
    assert_eq!(after["metadata"]["generation"], 2);
    let labelled = world
        .patch(
            &cronjob,
            PatchType::Merge,
            &json!({"metadata": {"labels": {"paused": "yes"}}}),
            DryRun::No,
        )
        .await
        .unwrap();
    assert_eq!(labelled["metadata"]["generation"], 2);
    assert_eq!(labelled["metadata"]["labels"]["paused"], "yes");
    assert_eq!(
        world.mutations()[0],
        mutation(
            "patch",
            "CronJob shop/report",
            r#"merge {"spec":{"suspend":true}}"#
        )
    );

    // A merge patch replaces lists whole and deletes keys set to null.
    let after = world
        .patch(
            &deployment("shop", "api"),
            PatchType::Merge,
            &json!({"spec": {"template": {"spec": {"containers": [{"name": "api", "image": "api:2"}]}}},
                    "metadata": {"labels": {"tier": null}}}),
            DryRun::No,
        )
        .await
        .unwrap();
    assert_eq!(
        after["spec"]["template"]["spec"]["containers"],
        json!([{"name": "api", "image": "api:2"}])
    );
    assert_eq!(after["metadata"]["labels"], json!({"app": "api"}));
}

#[tokio::test]
async fn strategic_patch_merges_named_lists_by_name() {
    let world = world(SHOP);
    let body = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "api", "image": "api:2", "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}]},
        {"name": "sidecar", "$patch": "delete"},
        {"name": "debug", "image": "busybox"}
    ]}}}});
    let after = world
        .patch(
            &deployment("shop", "api"),
            PatchType::Strategic,
            &body,
            DryRun::No,
        )
        .await
        .unwrap();
    assert_eq!(
        after["spec"]["template"]["spec"]["containers"],
        json!([
            {"name": "api", "image": "api:2", "env": [
                {"name": "A", "value": "1"}, {"name": "B", "value": "3"}, {"name": "C", "value": "4"}
            ]},
            {"name": "debug", "image": "busybox"}
        ])
    );
    assert_eq!(after["spec"]["replicas"], 3);
}

#[tokio::test]
async fn json_patch_applies_operations_and_refuses_a_failing_test() {
    let world = world(SHOP);
    let target = deployment("shop", "api");
    let before = world.object(&target).unwrap();
    let body = json!([
        {"op": "test", "path": "/spec/replicas", "value": 3},
        {"op": "replace", "path": "/spec/replicas", "value": 4},
        {"op": "add", "path": "/metadata/labels/canary", "value": "true"}
    ]);
    let after = world
        .patch(&target, PatchType::Json, &body, DryRun::No)
        .await
        .unwrap();
    assert_eq!(after["spec"]["replicas"], 4);
    assert_eq!(after["metadata"]["labels"]["canary"], "true");

    let failing = json!([
        {"op": "replace", "path": "/spec/replicas", "value": 9},
        {"op": "test", "path": "/spec/replicas", "value": 3}
    ]);
    let error = world
        .patch(&target, PatchType::Json, &failing, DryRun::No)
        .await
        .unwrap_err();
    assert!(matches!(error, EffectError::Invalid(_)), "{error:?}");
    let error = world
        .patch(&target, PatchType::Json, &json!({"op": "add"}), DryRun::No)
        .await
        .unwrap_err();
    assert!(matches!(error, EffectError::Invalid(_)), "{error:?}");
    let now = world.object(&target).unwrap();
    assert_eq!(now["spec"]["replicas"], 4);
    assert_ne!(rv(&now), rv(&before));
    assert_eq!(world.mutations().len(), 1);
}

#[tokio::test]
async fn patch_of_a_missing_object_and_stale_resource_version() {
    let world = world(SHOP);
    let error = world
        .patch(
            &deployment("shop", "gone"),
            PatchType::Merge,
            &json!({"spec": {}}),
            DryRun::No,
        )
        .await
        .unwrap_err();
    assert!(matches!(error, EffectError::NotFound(_)), "{error:?}");

    let current = rv(&world.object(&deployment("shop", "api")).unwrap());
    let error = world
        .patch(
            &deployment("shop", "api"),
            PatchType::Merge,
            &json!({"metadata": {"resourceVersion": "999"}, "spec": {"replicas": 1}}),
            DryRun::No,
        )
        .await
        .unwrap_err();
    assert!(matches!(error, EffectError::Conflict(_)), "{error:?}");
    world
        .patch(
            &deployment("shop", "api"),
            PatchType::Merge,
            &json!({"metadata": {"resourceVersion": current}, "spec": {"replicas": 1}}),
            DryRun::No,
        )
        .await
        .unwrap();

    let error = world
        .patch(
            &deployment("shop", "api"),
            PatchType::Merge,
            &json!({"metadata": {"name": "other"}}),
            DryRun::No,
        )
        .await
        .unwrap_err();
    assert!(matches!(error, EffectError::Invalid(_)), "{error:?}");
}

#[tokio::test]
async fn server_dry_run_reports_the_result_and_changes_nothing() {
    let world = world(&format!("{SHOP}{NODES}"));
    let objects = world.objects();
    let revision = world.resource_version();

    let scaled = world
        .scale(&deployment("shop", "api"), 7, DryRun::Server)
        .await
        .unwrap();
    assert_eq!(scaled["spec"]["replicas"], 7);
    assert_eq!(scaled["metadata"]["generation"], 2);
    // No controller runs for a dry run.
    assert_eq!(scaled["status"]["readyReplicas"], 3);
    let patched = world
        .patch(
            &key("batch/v1", "CronJob", Some("shop"), "report"),
            PatchType::Merge,
            &json!({"spec": {"suspend": true}}),
            DryRun::Server,
        )
        .await
        .unwrap();
    assert_eq!(patched["spec"]["suspend"], true);
    let created = world
        .apply(
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "new", "namespace": "shop"}}),
            DryRun::Server,
        )
        .await
        .unwrap();
    assert_eq!(created["metadata"]["name"], "new");
    world
        .delete(&deployment("shop", "api"), None, None, DryRun::Server)
        .await
        .unwrap();
    world
        .set_unschedulable("node-1", true, DryRun::Server)
        .await
        .unwrap();
    let report = world
        .drain("node-1", &drain_options(true), DryRun::Server)
        .await
        .unwrap();
    assert_eq!(report.evicted, ["shop/api-0", "shop/api-1"]);

    // Validation still happens.
    let error = world
        .patch(
            &deployment("shop", "gone"),
            PatchType::Merge,
            &json!({}),
            DryRun::Server,
        )
        .await
        .unwrap_err();
    assert!(matches!(error, EffectError::NotFound(_)));

    assert_eq!(world.objects(), objects);
    assert_eq!(world.resource_version(), revision);
    assert_eq!(
        rv(&scaled),
        rv(&world.object(&deployment("shop", "api")).unwrap())
    );
    assert!(world.mutations().is_empty());
}

#[tokio::test]
async fn every_write_takes_a_new_resource_version_from_one_counter() {
    let world = world(SHOP);
    let versions: Vec<u64> = world
        .objects()
        .iter()
        .map(|o| rv(o).parse().unwrap())
        .collect();
    let mut sorted = versions.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), versions.len());
    let last = world.resource_version();
    let a = world
        .scale(&deployment("shop", "api"), 2, DryRun::No)
        .await
        .unwrap();
    let b = world
        .patch(
            &key("v1", "ConfigMap", Some("shop"), "settings"),
            PatchType::Merge,
            &json!({"data": {"mode": "safe"}}),
            DryRun::No,
        )
        .await
        .unwrap();
    assert_eq!(rv(&a), (last + 1).to_string());
    assert_eq!(rv(&b), (last + 2).to_string());
    // A write that changes nothing keeps the version.
    let same = world
        .patch(
            &key("v1", "ConfigMap", Some("shop"), "settings"),
            PatchType::Merge,
            &json!({"data": {"mode": "safe"}}),
            DryRun::No,
        )
        .await
        .unwrap();
    assert_eq!(rv(&same), rv(&b));
}

#[tokio::test]
async fn apply_creates_then_merges() {
    let world = world(SHOP);
    let manifest = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "flags", "namespace": "shop"},
        "data": {"a": "1"}
    });
    let created = world.apply(&manifest, DryRun::No).await.unwrap();
    assert_eq!(created["data"], json!({"a": "1"}));
    assert!(created["metadata"]["uid"].is_string());
    let unchanged = world.apply(&manifest, DryRun::No).await.unwrap();
    assert_eq!(rv(&unchanged), rv(&created));
    let updated = world
        .apply(
            &json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "flags", "namespace": "shop"}, "data": {"b": "2"}}),
            DryRun::No,
        )
        .await
        .unwrap();
    assert_eq!(updated["data"], json!({"a": "1", "b": "2"}));
    // Namespaced kinds default to `default`.
    world
        .apply(
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}),
            DryRun::No,
        )
        .await
        .unwrap();
    assert!(world
        .object(&key("v1", "ConfigMap", Some("default"), "x"))
        .is_some());
    let error = world
        .apply(
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}),
            DryRun::No,
        )
        .await
        .unwrap_err();
    assert!(matches!(error, EffectError::Invalid(_)), "{error:?}");
    let details: Vec<String> = world.mutations().into_iter().map(|m| m.detail).collect();
    assert_eq!(details, ["created", "unchanged", "configured", "created"]);
}

#[tokio::test]
async fn delete_removes_the_object_and_its_dependents() {
    let world = world(
        "  objects:
    - {apiVersion: apps/v1, kind: Deployment, metadata: {name: api, namespace: shop}, spec: {replicas: 1}}
    - apiVersion: apps/v1
      kind: ReplicaSet
      metadata:
        name: api-5d4f
        namespace: shop
        ownerReferences: [{apiVersion: apps/v1, kind: Deployment, name: api}]
      spec: {replicas: 1}
    - apiVersion: v1
      kind: Pod
      metadata:
        name: api-5d4f-x
        namespace: shop
        ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: api-5d4f}]
    - {apiVersion: v1, kind: Pod, metadata: {name: other, namespace: shop}}
",
    );
    world
        .delete(&deployment("shop", "api"), None, None, DryRun::No)
        .await
        .unwrap();
    let names: Vec<String> = world
        .objects()
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["other"]);
    assert_eq!(world.mutations().len(), 3);
    assert_eq!(
        world.mutations()[0],
        mutation("delete", "Deployment shop/api", "deleted")
    );
    let error = world
        .delete(&deployment("shop", "api"), None, None, DryRun::No)
        .await
        .unwrap_err();
    assert!(matches!(error, EffectError::NotFound(_)));
}

const NODES: &str = "    - {apiVersion: v1, kind: Node, metadata: {name: node-1, labels: {zone: a}}, spec: {}}
    - {apiVersion: v1, kind: Node, metadata: {name: node-2, labels: {zone: b}}, spec: {}}
    - apiVersion: v1
      kind: Pod
      metadata: {name: api-0, namespace: shop, labels: {app: api}, ownerReferences: [{kind: ReplicaSet, name: api-1}]}
      spec: {nodeName: node-1}
      status: {phase: Running}
    - apiVersion: v1
      kind: Pod
      metadata: {name: api-1, namespace: shop, labels: {app: api}, ownerReferences: [{kind: ReplicaSet, name: api-1}]}
      spec: {nodeName: node-1}
      status: {phase: Running}
    - apiVersion: v1
      kind: Pod
      metadata: {name: api-2, namespace: shop, labels: {app: api}, ownerReferences: [{kind: ReplicaSet, name: api-1}]}
      spec: {nodeName: node-2}
      status: {phase: Running}
    - apiVersion: v1
      kind: Pod
      metadata: {name: fluentd-x, namespace: logging, ownerReferences: [{kind: DaemonSet, name: fluentd}]}
      spec: {nodeName: node-1}
      status: {phase: Running}
    - apiVersion: v1
      kind: Pod
      metadata: {name: etcd-node-1, namespace: kube-system, annotations: {kubernetes.io/config.mirror: abc}}
      spec: {nodeName: node-1}
      status: {phase: Running}
    - apiVersion: policy/v1
      kind: PodDisruptionBudget
      metadata: {name: api, namespace: shop}
      spec: {minAvailable: 1, selector: {matchLabels: {app: api}}}
      status: {disruptionsAllowed: 2}
";

fn drain_options(delete_empty_dir_data: bool) -> DrainOptions {
    DrainOptions {
        delete_empty_dir_data,
        eviction_timeout: Duration::from_secs(300),
    }
}

fn pdb() -> ObjectKey {
    key("policy/v1", "PodDisruptionBudget", Some("shop"), "api")
}

#[tokio::test]
async fn drain_cordons_skips_daemonset_and_mirror_pods_and_evicts_the_rest() {
    let world = world(&format!("  objects:\n{NODES}"));
    let report = world
        .drain("node-1", &drain_options(false), DryRun::No)
        .await
        .unwrap();
    assert_eq!(report.evicted, ["shop/api-0", "shop/api-1"]);
    assert_eq!(
        report.skipped,
        ["kube-system/etcd-node-1", "logging/fluentd-x"]
    );
    let node = world.object(&key("v1", "Node", None, "node-1")).unwrap();
    assert_eq!(node["spec"]["unschedulable"], true);
    assert!(world
        .object(&key("v1", "Pod", Some("shop"), "api-0"))
        .is_none());
    assert!(world
        .object(&key("v1", "Pod", Some("shop"), "api-2"))
        .is_some());
    assert_eq!(
        world.object(&pdb()).unwrap()["status"]["disruptionsAllowed"],
        0
    );
    assert_eq!(
        world.mutations(),
        [
            mutation("cordon", "Node node-1", "unschedulable true"),
            mutation("drain", "Node node-1", "evicted shop/api-0"),
            mutation("drain", "Node node-1", "evicted shop/api-1"),
        ]
    );
}

#[tokio::test]
async fn drain_stops_at_a_pdb_that_allows_no_disruption() {
    let nodes = NODES.replace("disruptionsAllowed: 2", "disruptionsAllowed: 1");
    let world = world(&format!("  objects:\n{nodes}"));
    let error = world
        .drain("node-1", &drain_options(false), DryRun::No)
        .await
        .unwrap_err();
    let EffectError::Blocked(message) = &error else {
        panic!("{error:?}");
    };
    assert!(message.contains("shop/api-1"), "{message}");
    assert!(
        message.contains("PodDisruptionBudget shop/api"),
        "{message}"
    );
    // The cordon and the first eviction stay.
    let node = world.object(&key("v1", "Node", None, "node-1")).unwrap();
    assert_eq!(node["spec"]["unschedulable"], true);
    assert!(world
        .object(&key("v1", "Pod", Some("shop"), "api-0"))
        .is_none());
    assert!(world
        .object(&key("v1", "Pod", Some("shop"), "api-1"))
        .is_some());
    assert_eq!(world.mutations().len(), 2);
}

#[tokio::test]
async fn drain_computes_disruptions_for_a_pdb_without_status() {
    let nodes = NODES.replace("      status: {disruptionsAllowed: 2}\n", "");
    let world = world(&format!("  objects:\n{nodes}"));
    // Three healthy pods, minAvailable 1: two may go, both on node-1.
    let report = world
        .drain("node-1", &drain_options(false), DryRun::No)
        .await
        .unwrap();
    assert_eq!(report.evicted.len(), 2);
    let error = world
        .drain("node-2", &drain_options(false), DryRun::No)
        .await
        .unwrap_err();
    assert!(matches!(error, EffectError::Blocked(_)), "{error:?}");
}

#[tokio::test]
async fn drain_refuses_empty_dir_pods_unless_allowed() {
    let extra = "    - apiVersion: v1
      kind: Pod
      metadata: {name: cache, namespace: shop, ownerReferences: [{kind: StatefulSet, name: cache}]}
      spec: {nodeName: node-1, volumes: [{name: tmp, emptyDir: {}}]}
";
    let spec = format!("  objects:\n{NODES}{extra}");
    let world_a = world(&spec);
    let error = world_a
        .drain("node-1", &drain_options(false), DryRun::No)
        .await
        .unwrap_err();
    let EffectError::Invalid(message) = &error else {
        panic!("{error:?}");
    };
    assert!(message.contains("shop/cache"), "{message}");
    // Refused before any eviction, after the cordon.
    assert_eq!(
        world_a.mutations(),
        [mutation("cordon", "Node node-1", "unschedulable true")]
    );
    let world_b = world(&spec);
    let report = world_b
        .drain("node-1", &drain_options(true), DryRun::No)
        .await
        .unwrap();
    assert_eq!(report.evicted, ["shop/api-0", "shop/api-1", "shop/cache"]);
}

#[tokio::test]
async fn cordon_and_uncordon() {
    let world = world(&format!("  objects:\n{NODES}"));
    world
        .set_unschedulable("node-2", true, DryRun::No)
        .await
        .unwrap();
    let node = world
        .set_unschedulable("node-2", false, DryRun::No)
        .await
        .unwrap();
    assert!(node["spec"].get("unschedulable").is_none());
    let error = world
        .set_unschedulable("node-9", true, DryRun::No)
        .await
        .unwrap_err();
    assert_eq!(
        error,
        EffectError::NotFound("nodes \"node-9\" not found".into())
    );
    assert_eq!(
        world.mutations(),
        [
            mutation("cordon", "Node node-2", "unschedulable true"),
            mutation("uncordon", "Node node-2", "unschedulable false"),
        ]
    );
}

async fn names(world: &SimWorld, query: ListQuery) -> Vec<String> {
    let list = world.list(&query).await.unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["metadata"]["name"].as_str().unwrap().to_owned())
        .collect()
}

fn pods(namespace: Option<&str>, labels: Option<&str>, fields: Option<&str>) -> ListQuery {
    ListQuery {
        api_version: "v1".into(),
        kind: "Pod".into(),
        namespace: namespace.map(Into::into),
        label_selector: labels.map(Into::into),
        field_selector: fields.map(Into::into),
    }
}

#[tokio::test]
async fn list_filters_by_namespace_labels_and_fields() {
    let extra = "    - apiVersion: v1
      kind: Pod
      metadata: {name: web-0, namespace: shop, labels: {app: web, track: canary}}
      spec: {nodeName: node-2}
      status: {phase: Pending}
";
    let world = world(&format!("  objects:\n{NODES}{extra}"));
    let list = world.list(&pods(Some("shop"), None, None)).await.unwrap();
    assert_eq!(list["kind"], "PodList");
    assert_eq!(list["apiVersion"], "v1");
    assert_eq!(
        names(&world, pods(Some("shop"), None, None)).await,
        ["api-0", "api-1", "api-2", "web-0"]
    );
    assert_eq!(names(&world, pods(None, None, None)).await.len(), 6);
    let cases: &[(&str, &[&str])] = &[
        ("app=api", &["api-0", "api-1", "api-2"]),
        ("app==web", &["web-0"]),
        ("app!=api", &["web-0"]),
        ("track", &["web-0"]),
        ("!track", &["api-0", "api-1", "api-2"]),
        ("app in (web, other)", &["web-0"]),
        ("app notin (web),app", &["api-0", "api-1", "api-2"]),
        ("app=web,track=stable", &[]),
    ];
    for (selector, expected) in cases {
        assert_eq!(
            names(&world, pods(Some("shop"), Some(selector), None)).await,
            *expected,
            "{selector}"
        );
    }
    let fields: &[(&str, &[&str])] = &[
        ("spec.nodeName=node-2", &["api-2", "web-0"]),
        ("spec.nodeName=node-2,status.phase!=Running", &["web-0"]),
        ("metadata.name==api-1", &["api-1"]),
        ("metadata.namespace=shop,status.phase=Pending", &["web-0"]),
    ];
    for (selector, expected) in fields {
        assert_eq!(
            names(&world, pods(None, None, Some(selector))).await,
            *expected,
            "{selector}"
        );
    }
    assert_eq!(
        names(
            &world,
            pods(Some("shop"), Some("app=api"), Some("spec.nodeName=node-1"))
        )
        .await,
        ["api-0", "api-1"]
    );
    let error = world
        .list(&pods(None, None, Some("spec.hostname=x")))
        .await
        .unwrap_err();
    assert!(matches!(error, EffectError::Invalid(_)), "{error:?}");
    let error = world
        .list(&pods(None, Some("app in (a"), None))
        .await
        .unwrap_err();
    assert!(matches!(error, EffectError::Invalid(_)), "{error:?}");

    let nodes = ListQuery {
        api_version: "v1".into(),
        kind: "Node".into(),
        namespace: None,
        label_selector: Some("zone=b".into()),
        field_selector: None,
    };
    assert_eq!(names(&world, nodes).await, ["node-2"]);
}

#[tokio::test]
async fn get_matches_the_group_whatever_the_version() {
    let world = world(SHOP);
    let object = read(
        &world,
        &key("apps/v1beta2", "Deployment", Some("shop"), "api"),
    )
    .await
    .unwrap();
    assert_eq!(object["apiVersion"], "apps/v1beta2");
    let error = read(
        &world,
        &key("extensions/v1beta1", "Deployment", Some("shop"), "api"),
    )
    .await
    .unwrap_err();
    assert!(matches!(error, EffectError::NotFound(_)));
}

const BAO: &str = "  exec:
    - pod: openbao/openbao-0
      container: openbao
      command: [bao, status, -format=json]
      responses:
        - {exitCode: 2, stdout: '{\"sealed\": true}'}
        - after: {step: run-1}
          stdout: '{\"sealed\": false}'
  commands:
    - argv: openbao operator unseal --auto-shamir
      responses:
        - {stdout: first}
        - {after: {calls: 1}, stdout: second}
        - {after: {calls: 2}, exitCode: 1, stderr: third}
  http:
    - url: http://prometheus:9090/api/v1/query
      query: {query: up}
      responses:
        - status: 200
          body: {status: success, data: {result: []}}
    - url: http://prometheus:9090/-/ready
      responses:
        - {error: unavailable, message: connection refused}
";

fn bao_pod(container: Option<&str>) -> PodRef {
    PodRef {
        namespace: "openbao".into(),
        pod: "openbao-0".into(),
        container: container.map(Into::into),
    }
}

#[tokio::test]
async fn exec_answers_change_after_a_step_succeeds() {
    let world = world(BAO);
    let status = argv(&["bao", "status", "-format=json"]);
    let timeout = Duration::from_secs(5);
    let first = world
        .exec(&bao_pod(Some("openbao")), &status, timeout)
        .await
        .unwrap();
    assert_eq!(first.exit_code, 2);
    assert_eq!(first.stdout, r#"{"sealed": true}"#);
    world.step_finished("run-1", false);
    let failed = world.exec(&bao_pod(None), &status, timeout).await.unwrap();
    assert_eq!(failed.exit_code, 2);
    world.step_finished("run-1", true);
    let after = world
        .exec(&bao_pod(Some("openbao")), &status, timeout)
        .await
        .unwrap();
    assert_eq!(after.exit_code, 0);
    assert_eq!(after.stdout, r#"{"sealed": false}"#);
    assert_eq!(
        world.calls(),
        [
            "exec openbao/openbao-0 -c openbao -- bao status -format=json",
            "exec openbao/openbao-0 -- bao status -format=json",
            "exec openbao/openbao-0 -c openbao -- bao status -format=json",
        ]
    );
}

#[tokio::test]
async fn command_answers_change_with_the_number_of_calls() {
    let world = world(BAO);
    let unseal = argv(&["openbao", "operator", "unseal", "--auto-shamir"]);
    let timeout = Duration::from_secs(5);
    let mut outputs = Vec::new();
    for _ in 0..4 {
        let output = world.run(&unseal, &BTreeMap::new(), timeout).await.unwrap();
        outputs.push((output.exit_code, output.stdout, output.stderr));
    }
    assert_eq!(
        outputs,
        [
            (0, "first".to_owned(), String::new()),
            (0, "second".to_owned(), String::new()),
            (1, String::new(), "third".to_owned()),
            (1, String::new(), "third".to_owned()),
        ]
    );
    assert_eq!(
        world.calls()[0],
        "run openbao operator unseal --auto-shamir"
    );
}

#[tokio::test]
async fn unmatched_calls_say_what_to_add() {
    let world = world(BAO);
    let timeout = Duration::from_secs(5);
    let error = world
        .exec(
            &bao_pod(Some("openbao")),
            &argv(&["bao", "operator", "raft", "list-peers"]),
            timeout,
        )
        .await
        .unwrap_err();
    let EffectError::NotFound(message) = &error else {
        panic!("{error:?}");
    };
    assert!(
        message.starts_with("no scripted answer matches exec in pod openbao/openbao-0 -c openbao"),
        "{message}"
    );
    assert!(
        message.contains(r#"["bao","operator","raft","list-peers"]"#),
        "{message}"
    );
    assert!(message.contains("spec.exec"), "{message}");
    let other_container = world
        .exec(
            &bao_pod(Some("sidecar")),
            &argv(&["bao", "status", "-format=json"]),
            timeout,
        )
        .await;
    assert!(matches!(other_container, Err(EffectError::NotFound(_))));
    let error = world
        .run(&argv(&["rm", "-rf", "/"]), &BTreeMap::new(), timeout)
        .await
        .unwrap_err();
    let EffectError::NotFound(message) = &error else {
        panic!("{error:?}");
    };
    assert!(message.contains(r#"["rm","-rf","/"]"#), "{message}");
    assert!(message.contains("spec.commands"), "{message}");
}

const API_LOGS: &str = "  logs:
    - pod: shop/api-0
      container: server
      responses:
        - text: \"starting\\nlistening on :8080\\nready\\n\"
        - after: {step: restart}
          text: \"starting\\npanic: nil map\\n\"
    - pod: shop/worker-0
      responses:
        - {error: unavailable, message: container is not running}
";

fn last(lines: u32) -> LogOptions {
    LogOptions {
        tail_lines: Some(lines),
        previous: false,
    }
}

fn api_pod(container: Option<&str>) -> PodRef {
    PodRef {
        namespace: "shop".into(),
        pod: "api-0".into(),
        container: container.map(Into::into),
    }
}

#[tokio::test]
async fn logs_give_the_last_lines_and_change_after_a_step() {
    let world = world(API_LOGS);
    let whole = world
        .logs(&api_pod(Some("server")), LogOptions::default())
        .await
        .unwrap();
    assert_eq!(whole, "starting\nlistening on :8080\nready\n");
    let last_two = world.logs(&api_pod(None), last(2)).await.unwrap();
    assert_eq!(last_two, "listening on :8080\nready\n");
    let more_than_there_are = world.logs(&api_pod(None), last(50)).await.unwrap();
    assert_eq!(more_than_there_are, whole);
    world.step_finished("restart", true);
    let after = world.logs(&api_pod(Some("server")), last(1)).await.unwrap();
    assert_eq!(after, "panic: nil map\n");
    assert_eq!(
        world.calls(),
        [
            "logs shop/api-0 -c server",
            "logs shop/api-0 --tail 2",
            "logs shop/api-0 --tail 50",
            "logs shop/api-0 -c server --tail 1",
        ]
    );
    assert!(world.mutations().is_empty());
}

#[tokio::test]
async fn logs_fail_as_scripted_and_unscripted_ones_say_what_to_add() {
    let world = world(API_LOGS);
    let worker = PodRef {
        namespace: "shop".into(),
        pod: "worker-0".into(),
        container: None,
    };
    assert_eq!(
        world
            .logs(&worker, LogOptions::default())
            .await
            .unwrap_err(),
        EffectError::Unavailable("container is not running".into())
    );
    let other_container = world
        .logs(&api_pod(Some("istio-proxy")), LogOptions::default())
        .await;
    let Err(EffectError::NotFound(message)) = &other_container else {
        panic!("{other_container:?}");
    };
    assert_eq!(
        message,
        "no scripted answer matches the log of pod shop/api-0 -c istio-proxy; add one to the scenario's spec.logs: {pod: shop/api-0, container: istio-proxy, responses: [{text: \"...\"}]}"
    );
    let unknown = PodRef {
        namespace: "shop".into(),
        pod: "api-9".into(),
        container: None,
    };
    let error = world.logs(&unknown, last(10)).await.unwrap_err();
    assert!(
        matches!(&error, EffectError::NotFound(m) if m.contains("spec.logs: {pod: shop/api-9, responses:")),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_logs_fault_fails_the_read_once() {
    let world = world(&format!(
        "{API_LOGS}  faults:\n    - {{verb: logs, name: api-0, error: forbidden, times: 1}}\n"
    ));
    let error = world
        .logs(&api_pod(None), LogOptions::default())
        .await
        .unwrap_err();
    assert_eq!(
        error,
        EffectError::Forbidden("injected fault: logs Pod shop/api-0".into())
    );
    assert!(world
        .logs(&api_pod(None), LogOptions::default())
        .await
        .is_ok());
}

#[test]
fn logs_scripts_are_checked_with_positions() {
    assert_eq!(
        problems("  logs:\n    - pod: api-0\n      responses: [{txt: x}]\n    - pod: shop/api-0\n      responses: []\n    - pod: shop/api-0\n      responses: [{text: x, error: unavailable}]\n"),
        [
            "t.scenario.yaml:6:12: `pod` must be `namespace/name`, found `api-0`",
            "t.scenario.yaml:7:20: unknown field `txt` in log response (did you mean `text`?)",
            "t.scenario.yaml:9:18: a script needs at least one response",
            "t.scenario.yaml:10:7: a second logs script for this pod and container (the first is at line 8); merge their responses",
            "t.scenario.yaml:11:36: a response with `error` fails the call, so it cannot also give output",
        ]
    );
}

#[tokio::test]
async fn http_answers_by_url_and_query() {
    let world = world(BAO);
    let query: BTreeMap<String, String> = [("query".to_owned(), "up".to_owned())].into();
    let response = fetch(&world, "http://prometheus:9090/api/v1/query", &query)
        .await
        .unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(
        serde_json::from_str::<Json>(&response.body).unwrap(),
        json!({"status": "success", "data": {"result": []}})
    );
    let other: BTreeMap<String, String> = [("query".to_owned(), "down".to_owned())].into();
    let error = fetch(&world, "http://prometheus:9090/api/v1/query", &other)
        .await
        .unwrap_err();
    assert!(matches!(error, EffectError::NotFound(_)));
    let error = fetch(&world, "http://prometheus:9090/-/ready", &BTreeMap::new())
        .await
        .unwrap_err();
    assert_eq!(error, EffectError::Unavailable("connection refused".into()));
    assert_eq!(
        world.calls(),
        [
            "http GET http://prometheus:9090/api/v1/query?query=up",
            "http GET http://prometheus:9090/api/v1/query?query=down",
            "http GET http://prometheus:9090/-/ready",
        ]
    );
}

#[tokio::test]
async fn faults_fail_matching_calls_the_given_number_of_times() {
    let spec = format!(
        "{SHOP}  faults:
    - {{verb: scale, kind: Deployment, name: api, error: unavailable, message: connection refused, times: 1}}
    - {{verb: patch, namespace: shop, error: forbidden, after: {{step: scale-up}}}}
    - {{verb: get, name: settings, error: not-found, after: {{calls: 1}}}}
"
    );
    let world = world(&spec);
    let api = deployment("shop", "api");
    // A dry run fails while the fault is active, and does not use it up.
    let error = world.scale(&api, 4, DryRun::Server).await.unwrap_err();
    assert_eq!(error, EffectError::Unavailable("connection refused".into()));
    let error = world.scale(&api, 4, DryRun::No).await.unwrap_err();
    assert_eq!(error, EffectError::Unavailable("connection refused".into()));
    assert_eq!(world.object(&api).unwrap()["spec"]["replicas"], 3);
    world.scale(&api, 4, DryRun::No).await.unwrap();
    // Other objects were never affected.
    world
        .scale(&deployment("shop", "worker"), 2, DryRun::No)
        .await
        .unwrap();

    let body = json!({"metadata": {"labels": {"x": "y"}}});
    world
        .patch(&api, PatchType::Merge, &body, DryRun::No)
        .await
        .unwrap();
    world.step_finished("scale-up", true);
    let error = world
        .patch(&api, PatchType::Merge, &body, DryRun::No)
        .await
        .unwrap_err();
    assert_eq!(
        error,
        EffectError::Forbidden("injected fault: patch Deployment shop/api".into())
    );

    let settings = key("v1", "ConfigMap", Some("shop"), "settings");
    read(&world, &settings).await.unwrap();
    assert!(matches!(
        read(&world, &settings).await,
        Err(EffectError::NotFound(_))
    ));
    assert!(matches!(
        read(&world, &settings).await,
        Err(EffectError::NotFound(_))
    ));
    assert_eq!(world.mutations().len(), 3);
}

#[tokio::test]
async fn notifications_are_recorded() {
    let world = world("  objects: []\n");
    let notification = Notification {
        kind: crate::effects::NotificationKind::Page,
        message: "OpenBao is still sealed".into(),
        channel: None,
        severity: Some("critical".into()),
    };
    world.send(&notification).await.unwrap();
    assert_eq!(world.notifications(), [notification]);
}

#[test]
fn scenario_errors_have_positions_and_suggestions() {
    assert_eq!(
        problems("  objects:\n    - {apiVersion: v1, kind: Pod, metadata: {name: p}}\n  comands: []\n  exec:\n    - pod: openbao-0\n      command: [bao]\n      responses: [{exitCod: 2}]\n"),
        [
            "t.scenario.yaml:7:3: unknown field `comands` in scenario spec (did you mean `commands`?)",
            "t.scenario.yaml:9:12: `pod` must be `namespace/name`, found `openbao-0`",
            "t.scenario.yaml:11:20: unknown field `exitCod` in process response (did you mean `exitCode`?)",
        ]
    );
    assert_eq!(
        problems("  exec:\n    - pod: openbao-0\n      command: [bao]\n      responses: []\n"),
        [
            "t.scenario.yaml:6:12: `pod` must be `namespace/name`, found `openbao-0`",
            "t.scenario.yaml:8:18: a script needs at least one response",
        ]
    );
    assert_eq!(
        problems("  objects:\n    - {apiVersion: v1, kind: Pod, metadata: {namespace: x}}\n    - kind: Node\n      metadata: {name: n}\n"),
        [
            "t.scenario.yaml:6:45: missing required field `metadata.name` in object",
            "t.scenario.yaml:7:7: missing required field `apiVersion` in object",
        ]
    );
    assert_eq!(
        problems("  commands:\n    - argv: [a, b]\n      responses: [{stdout: x}]\n    - argv: a b\n      responses: [{after: {}, stdout: y}]\n  faults:\n    - {verb: scael, error: unavailable}\n"),
        [
            "t.scenario.yaml:8:7: a second command script for this argv (the first is at line 6); merge their responses",
            "t.scenario.yaml:9:27: `after` needs `step` (a step id) or `calls` (a count)",
            "t.scenario.yaml:11:14: unknown value `scael` for fault verb, expected one of `scale`, `restart`, `patch`, `apply`, `delete`, `cordon`, `uncordon`, `drain`, `exec`, `logs`, `get`, `list` (did you mean `scale`?)",
        ]
    );
    let text = "apiVersion: runbook/v1\nkind: Scenaro\nmetadata: {name: t}\nspec: {}\n";
    let problems = problems_of(parse_scenario(Path::new("x.yaml"), text).unwrap_err());
    assert_eq!(
        problems,
        [
            "x.yaml:1:13: unsupported apiVersion `runbook/v1` (use `<group>/v1alpha1`, for example `runbook.dev/v1alpha1`)",
            "x.yaml:2:7: unknown value `Scenaro` for scenario kind, expected one of `Scenario` (did you mean `Scenario`?)",
        ]
    );
}

#[tokio::test]
async fn the_documented_example_parses() {
    let world = world(
        r#"  objects:
    - apiVersion: apps/v1
      kind: StatefulSet
      metadata: {name: spire-server, namespace: spire}
      spec: {replicas: 1}
      status: {readyReplicas: 1}
  exec:
    - pod: openbao/openbao-0
      container: openbao
      command: [bao, status, -format=json]
      responses:
        - {exitCode: 2, stdout: '{"sealed": true, "t": 3, "n": 5}'}
        - after: {step: run-1}
          stdout: '{"sealed": false, "t": 3, "n": 5}'
  commands:
    - argv: [openbao, operator, unseal, --auto-shamir]
      responses: [{stdout: "Unseal complete"}]
  http:
    - url: http://prometheus.monitoring:9090/api/v1/query
      query: {query: up}
      responses: [{status: 200, body: '{"status":"success"}'}]
  faults:
    - verb: scale
      kind: Deployment
      name: api
      error: unavailable
      message: "connection refused"
      times: 1
      after: {step: scale-up}
"#,
    );
    let query: BTreeMap<String, String> = [("query".to_owned(), "up".to_owned())].into();
    let response = fetch(
        &world,
        "http://prometheus.monitoring:9090/api/v1/query",
        &query,
    )
    .await
    .unwrap();
    assert_eq!(response.body, r#"{"status":"success"}"#);
}

#[test]
fn scenario_schema_defines_the_scenario() {
    let schema = scenario_schema();
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
    let definition = &schema["definitions"]["Scenario"];
    assert_eq!(definition["additionalProperties"], false);
    assert!(schema["definitions"]["ScenarioSpec"]["properties"]["faults"].is_object());
}

fn seed_scenario() -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../runbooks/openbao-sealed/scenarios/default.yaml");
    match load_scenario(&path) {
        Ok(scenario) => scenario,
        Err(diagnostics) => panic!("{}", problems_of(diagnostics).join("\n")),
    }
}

#[tokio::test]
async fn the_seed_scenario_loads_and_tells_its_story() {
    let scenario = seed_scenario();
    assert_eq!(scenario.metadata.name, "openbao-sealed");
    let world = SimWorld::new(&scenario);
    let spire = read(
        &world,
        &key("apps/v1", "StatefulSet", Some("spire"), "spire-server"),
    )
    .await
    .unwrap();
    assert_eq!(spire["status"]["readyReplicas"], 1);
    let secret = read(
        &world,
        &key("v1", "Secret", Some("openbao"), "openbao-unseal-keys"),
    )
    .await
    .unwrap();
    assert_eq!(secret["data"].as_object().unwrap().len(), 3);

    let status = argv(&["bao", "status", "-format=json"]);
    let timeout = Duration::from_secs(10);
    let sealed = world
        .exec(&bao_pod(Some("openbao")), &status, timeout)
        .await
        .unwrap();
    assert_eq!(sealed.exit_code, 2);
    let parsed: Json = serde_json::from_str(&sealed.stdout).unwrap();
    assert_eq!(parsed["sealed"], true);
    assert_eq!(parsed["t"], 3);

    let unseal = world
        .run(
            &argv(&["openbao", "operator", "unseal", "--auto-shamir"]),
            &BTreeMap::new(),
            timeout,
        )
        .await
        .unwrap();
    assert_eq!(unseal.exit_code, 0);
    world.step_finished("run-1", true);
    let unsealed = world
        .exec(&bao_pod(Some("openbao")), &status, timeout)
        .await
        .unwrap();
    assert_eq!(unsealed.exit_code, 0);
    let parsed: Json = serde_json::from_str(&unsealed.stdout).unwrap();
    assert_eq!(parsed["sealed"], false);
    assert!(world.mutations().is_empty());
}

#[test]
fn the_seed_runbook_folder_still_loads_without_the_scenario() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../runbooks");
    let (catalog, diagnostics, workspace) = crate::load_catalog(&[root]);
    assert!(!diagnostics.has_errors());
    assert!(catalog.get("openbao-sealed").is_some());
    assert!(!workspace
        .files
        .iter()
        .any(|file| file.to_string_lossy().ends_with(".scenario.yaml")
            || file.to_string_lossy().contains("/scenarios/")));
}

/// Issue 15, item 7: the simulator refuses a value of the wrong type in a field the API
/// server types, as the server words it, and keeps the object as it was.
#[tokio::test]
async fn a_value_of_the_wrong_type_is_refused_as_the_api_server_refuses_it() {
    let world = world(SHOP);
    let api = deployment("shop", "api");
    let before = read(&world, &api).await.unwrap();
    let error = world
        .patch(
            &api,
            PatchType::Merge,
            &json!({"spec": {"replicas": "3"}}),
            DryRun::No,
        )
        .await
        .expect_err("a string for replicas");
    assert_eq!(
        error,
        EffectError::Invalid("\"\" is invalid: patch: Invalid value: \"{...}\": json: cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type int32".to_owned())
    );
    let error = world
        .patch(
            &api,
            PatchType::Merge,
            &json!({"metadata": {"annotations": {"size": 3}}}),
            DryRun::No,
        )
        .await
        .expect_err("a number for an annotation");
    assert!(
        matches!(&error, EffectError::Invalid(m) if m.ends_with("json: cannot unmarshal number into Go struct field ObjectMeta.metadata.annotations of type string")),
        "{error:?}"
    );
    let error = world
        .apply(
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "limits", "namespace": "shop"}, "data": {"max": 10}}),
            DryRun::No,
        )
        .await
        .expect_err("a number in a ConfigMap's data");
    assert_eq!(
        error,
        EffectError::Invalid("failed to create typed patch object (shop/limits; v1, Kind=ConfigMap): .data.max: expected string, got &value.valueUnstructured{Value:10}".to_owned())
    );
    assert_eq!(read(&world, &api).await.unwrap(), before, "nothing changed");
    assert!(world.mutations().is_empty());
    world
        .patch(
            &api,
            PatchType::Merge,
            &json!({"spec": {"replicas": 3}}),
            DryRun::No,
        )
        .await
        .expect("an integer is taken");
}

/// Issue 15, item 8: a claim grows but does not shrink back, so the undo of a resize fails
/// in the simulator as on a cluster; a Service keeps its cluster IP.
#[tokio::test]
async fn a_claim_grows_but_does_not_shrink_and_a_cluster_ip_is_kept() {
    let world = world(
        "  objects:
    - apiVersion: v1
      kind: PersistentVolumeClaim
      metadata: {name: data, namespace: shop}
      spec: {resources: {requests: {storage: 100Gi}}}
    - apiVersion: v1
      kind: Service
      metadata: {name: web, namespace: shop}
      spec: {clusterIP: 10.96.0.10, clusterIPs: [10.96.0.10]}
",
    );
    let claim = key("v1", "PersistentVolumeClaim", Some("shop"), "data");
    let size = |size: &str| json!({"spec": {"resources": {"requests": {"storage": size}}}});
    world
        .patch(&claim, PatchType::Merge, &size("200Gi"), DryRun::No)
        .await
        .expect("a claim may grow");
    for dry_run in [DryRun::Server, DryRun::No] {
        let error = world
            .patch(&claim, PatchType::Merge, &size("100Gi"), dry_run)
            .await
            .expect_err("a claim may not shrink");
        assert_eq!(
            error,
            EffectError::Invalid("PersistentVolumeClaim \"data\" is invalid: spec.resources.requests.storage: Forbidden: field can not be less than previous value".to_owned())
        );
    }
    let stored = read(&world, &claim).await.unwrap();
    assert_eq!(stored["spec"]["resources"]["requests"]["storage"], "200Gi");
    let error = world
        .patch(
            &key("v1", "Service", Some("shop"), "web"),
            PatchType::Merge,
            &json!({"spec": {"clusterIP": "10.96.0.11", "clusterIPs": ["10.96.0.11"]}}),
            DryRun::No,
        )
        .await
        .expect_err("a cluster IP is kept");
    assert_eq!(
        error,
        EffectError::Invalid("Service \"web\" is invalid: spec.clusterIPs[0]: Invalid value: []string{\"10.96.0.11\"}: may not change once set".to_owned())
    );
}

/// A fresh folder of scenario files under the system's temporary folder, removed when dropped.
struct ScenarioFolder(std::path::PathBuf);

impl ScenarioFolder {
    fn new(test: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("runbook-scenario-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create the folder");
        Self(path)
    }

    /// Writes `NAME` with the scenario head and `spec`, and returns its path.
    fn write(&self, name: &str, spec: &str) -> std::path::PathBuf {
        let path = self.0.join(name);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("create");
        std::fs::write(&path, format!("{HEAD}spec:\n{spec}")).expect("write");
        path
    }

    fn problems(&self, name: &str) -> Vec<String> {
        match load_scenario(&self.0.join(name)) {
            Ok(_) => Vec::new(),
            Err(diagnostics) => problems_of(diagnostics)
                .into_iter()
                .map(|line| line.replace(&format!("{}/", self.0.display()), ""))
                .collect(),
        }
    }
}

impl Drop for ScenarioFolder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const BASE: &str = "  description: the base
  objects:
    - apiVersion: apps/v1
      kind: Deployment
      metadata: {name: api, namespace: shop, labels: {from: base}}
      spec: {replicas: 3}
    - apiVersion: v1
      kind: ConfigMap
      metadata: {name: settings, namespace: shop}
      data: {mode: normal}
  exec:
    - pod: shop/api-0
      command: [cat, /etc/mode]
      responses: [{stdout: base}]
    - pod: shop/api-0
      command: [uptime]
      responses: [{stdout: base uptime}]
  faults:
    - {verb: scale, kind: Deployment, name: api, error: unavailable, message: base fault}
    - {verb: delete, kind: ConfigMap, error: forbidden, message: base delete fault}
  changes:
    - after: {step: fix}
      object:
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: settings, namespace: shop}
        data: {mode: base-fixed}
    - after: {step: fix}
      object:
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: fixed-by, namespace: shop}
        data: {who: base}
";

fn exec_in(pod: &str) -> PodRef {
    let (namespace, name) = pod.split_once('/').expect("namespace/name");
    PodRef {
        namespace: namespace.into(),
        pod: name.into(),
        container: None,
    }
}

// Issue 15, item 9: a scenario extends another; the extending file wins per object, per call
// and per step and object, and keeps the rest of the base.
#[tokio::test]
async fn a_scenario_that_extends_another_replaces_the_same_things_and_keeps_the_rest() {
    let folder = ScenarioFolder::new("extends");
    folder.write("base.yaml", BASE);
    let base = load_scenario(&folder.0.join("base.yaml")).expect("the base loads");
    let base_world = SimWorld::new(&base);
    let path = folder.write(
        "variant/more.yaml",
        "  extends: ../base.yaml
  objects:
    - apiVersion: apps/v1
      kind: Deployment
      metadata: {name: api, namespace: shop}
      spec: {replicas: 5}
    - apiVersion: v1
      kind: Secret
      metadata: {name: token, namespace: shop}
  exec:
    - pod: shop/api-0
      command: cat /etc/mode
      responses: [{stdout: own}]
  faults:
    - {verb: scale, kind: Deployment, name: api, error: conflict, message: own fault}
  changes:
    - after: {step: fix}
      object:
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: settings, namespace: shop}
        data: {mode: own-fixed}
",
    );
    let scenario = load_scenario(&path).expect("the variant loads");
    assert_eq!(scenario.metadata.name, "t");
    assert_eq!(scenario.spec.description.as_deref(), Some("the base"));
    assert_eq!(scenario.spec.extends, None);
    let world = SimWorld::new(&scenario);

    // The whole object is replaced (the base's label is gone), in the base's place: the same
    // uid as in the base alone.
    let api = read(&world, &deployment("shop", "api")).await.unwrap();
    let base_api = read(&base_world, &deployment("shop", "api")).await.unwrap();
    assert_eq!(api["spec"]["replicas"], 5);
    assert_eq!(api["metadata"].get("labels"), None);
    assert_eq!(api["metadata"]["uid"], base_api["metadata"]["uid"]);
    let settings = key("v1", "ConfigMap", Some("shop"), "settings");
    assert_eq!(
        read(&world, &settings).await.unwrap()["data"]["mode"],
        "normal"
    );
    assert!(read(&world, &key("v1", "Secret", Some("shop"), "token"))
        .await
        .is_ok());

    // The same pod and argv (a line or a list): the variant's answer; another argv: the base's.
    let timeout = Duration::from_secs(5);
    let mode = world
        .exec(
            &exec_in("shop/api-0"),
            &argv(&["cat", "/etc/mode"]),
            timeout,
        )
        .await
        .unwrap();
    assert_eq!(mode.stdout, "own");
    let uptime = world
        .exec(&exec_in("shop/api-0"), &argv(&["uptime"]), timeout)
        .await
        .unwrap();
    assert_eq!(uptime.stdout, "base uptime");

    // The variant's fault for the same call replaces the base's; the base's other fault stays.
    let scaled = world.scale(&deployment("shop", "api"), 2, DryRun::No).await;
    assert_eq!(
        scaled.unwrap_err().to_string(),
        EffectError::Conflict("own fault".into()).to_string()
    );
    let deleted = world.delete(&settings, None, None, DryRun::No).await;
    assert!(deleted
        .unwrap_err()
        .to_string()
        .contains("base delete fault"));

    // After the step, the variant's change for settings, and the base's for the other object.
    world.step_finished("fix", true);
    assert_eq!(
        read(&world, &settings).await.unwrap()["data"]["mode"],
        "own-fixed"
    );
    let fixed_by = key("v1", "ConfigMap", Some("shop"), "fixed-by");
    assert_eq!(
        read(&world, &fixed_by).await.unwrap()["data"]["who"],
        "base"
    );
}

#[test]
fn extends_of_a_missing_file_a_circle_or_an_invalid_base_is_an_error_at_the_extends_line() {
    let folder = ScenarioFolder::new("extends-errors");
    folder.write("default.yaml", "  extends: variant.yaml\n");
    folder.write("variant.yaml", "  extends: default.yaml\n");
    folder.write("self.yaml", "  extends: ./self.yaml\n");
    folder.write(
        "missing.yaml",
        "  description: x\n  extends: defualt.yaml\n",
    );
    folder.write("nowhere.yaml", "  extends: ../elsewhere/base.yaml\n");
    folder.write("broken.yaml", "  objects: [{kind: Pod}]\n");
    folder.write("on-broken.yaml", "  extends: broken.yaml\n");
    folder.write("empty.yaml", "  extends: ''\n");
    assert_eq!(
        folder.problems("default.yaml"),
        ["variant.yaml:5:12: `extends` goes round in a circle: default.yaml -> variant.yaml -> default.yaml (a scenario cannot extend itself, directly or through others; remove one `extends`)"]
    );
    assert_eq!(
        folder.problems("self.yaml"),
        ["self.yaml:5:12: `extends` goes round in a circle: self.yaml -> ./self.yaml (a scenario cannot extend itself, directly or through others; remove one `extends`)"]
    );
    let missing = folder.problems("missing.yaml");
    assert_eq!(missing.len(), 1, "{missing:?}");
    assert!(
        missing[0].starts_with("missing.yaml:6:12: cannot read `defualt.yaml`, the scenario this one extends: cannot read the file:"),
        "{missing:?}"
    );
    assert!(
        missing[0].ends_with("(did you mean `default.yaml`?)"),
        "{missing:?}"
    );
    let nowhere = folder.problems("nowhere.yaml");
    assert!(
        nowhere[0].ends_with(
            "(`extends` is a path relative to the folder of the file that says it (../elsewhere))"
        ),
        "{nowhere:?}"
    );
    assert_eq!(
        folder.problems("on-broken.yaml"),
        [
            "broken.yaml:5:13: missing required field `apiVersion` in object",
            "broken.yaml:5:13: missing required field `metadata.name` in object",
            "on-broken.yaml:5:12: `broken.yaml`, the scenario this one extends, is invalid (its problems are listed with it)",
        ]
    );
    assert_eq!(
        folder.problems("empty.yaml"),
        ["empty.yaml:5:12: `extends` is empty; give the scenario file this one builds on, relative to this file"]
    );
}

const SLOW: &str = "  reconcile: {delay: 10s}
  objects:
    - apiVersion: apps/v1
      kind: Deployment
      metadata: {name: api, namespace: shop}
      spec: {replicas: 3, template: {spec: {containers: [{name: api, image: api:1}]}}}
      status: {replicas: 3, readyReplicas: 3, availableReplicas: 3, updatedReplicas: 3}
    - apiVersion: apps/v1
      kind: StatefulSet
      metadata: {name: db, namespace: shop}
      spec: {replicas: 2, template: {spec: {containers: [{name: db, image: db:1}]}}}
      status: {replicas: 2, readyReplicas: 2, availableReplicas: 2, updatedReplicas: 2, currentReplicas: 2}
";

fn counts(object: &Json) -> Vec<(String, Json)> {
    [
        "replicas",
        "readyReplicas",
        "availableReplicas",
        "updatedReplicas",
        "unavailableReplicas",
    ]
    .iter()
    .map(|field| ((*field).to_owned(), object["status"][*field].clone()))
    .collect()
}

fn expected(values: [Option<i64>; 5]) -> Vec<(String, Json)> {
    [
        "replicas",
        "readyReplicas",
        "availableReplicas",
        "updatedReplicas",
        "unavailableReplicas",
    ]
    .iter()
    .zip(values)
    .map(|(field, value)| ((*field).to_owned(), value.map_or(Json::Null, |v| json!(v))))
    .collect()
}

// Issue 15, item 9: with `reconcile: {delay}`, a scaled workload's counts catch up only after
// the delay on the run's clock, and `unavailableReplicas` says what is missing meanwhile.
#[tokio::test(start_paused = true)]
async fn with_a_reconcile_delay_a_scale_is_ready_only_after_the_delay() {
    let world = world(SLOW);
    let api = deployment("shop", "api");
    let scaled = world.scale(&api, 5, DryRun::No).await.unwrap();
    assert_eq!(
        counts(&scaled),
        expected([Some(5), Some(3), Some(3), Some(3), Some(2)])
    );
    assert_eq!(scaled["status"]["observedGeneration"], 2);
    tokio::time::sleep(Duration::from_secs(9)).await;
    let waiting = read(&world, &api).await.unwrap();
    assert_eq!(counts(&waiting), counts(&scaled));
    assert_eq!(rv(&waiting), rv(&scaled));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ready = read(&world, &api).await.unwrap();
    assert_eq!(
        counts(&ready),
        expected([Some(5), Some(5), Some(5), Some(5), None])
    );
    assert_ne!(rv(&ready), rv(&scaled), "the controller's status write");
}

#[tokio::test(start_paused = true)]
async fn with_a_reconcile_delay_a_restart_has_no_updated_replica_until_the_delay() {
    let world = world(SLOW);
    let db = key("apps/v1", "StatefulSet", Some("shop"), "db");
    let at = UNIX_EPOCH + Duration::from_secs(1_767_225_600);
    let restarted = world.restart(&db, at, DryRun::No).await.unwrap();
    assert_eq!(
        counts(&restarted),
        expected([Some(2), Some(2), Some(2), None, None])
    );
    // Scaling down at once is quick; the delay starts again from this write.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let scaled = world.scale(&db, 1, DryRun::No).await.unwrap();
    assert_eq!(
        counts(&scaled),
        expected([Some(1), Some(1), Some(1), None, None])
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        read(&world, &db).await.unwrap()["status"].get("updatedReplicas"),
        None
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    let done = read(&world, &db).await.unwrap();
    assert_eq!(
        counts(&done),
        expected([Some(1), Some(1), Some(1), Some(1), None])
    );
    assert_eq!(done["status"]["currentReplicas"], 1);
}

#[tokio::test(start_paused = true)]
async fn without_a_reconcile_delay_the_controller_follows_at_once() {
    let world = world(&SLOW.replace("  reconcile: {delay: 10s}\n", ""));
    let scaled = world
        .scale(&deployment("shop", "api"), 5, DryRun::No)
        .await
        .unwrap();
    assert_eq!(
        counts(&scaled),
        expected([Some(5), Some(5), Some(5), Some(5), None])
    );
}

#[test]
fn a_reconcile_delay_must_be_a_duration() {
    assert_eq!(
        problems("  reconcile: {delay: soon}\n"),
        ["t.scenario.yaml:5:22: invalid duration `soon`; use a number and a unit, such as `30s`, `5m` or `1h30m` (leave `reconcile` out for controllers that follow at once)"]
    );
    assert_eq!(
        problems("  reconcile: {dealy: 10s}\n"),
        ["t.scenario.yaml:5:15: unknown field `dealy` in reconcile (did you mean `delay`?)"]
    );
}

// The shipped case of component-restart on a slow controller: its verify polls until the
// rollout completes, 25 seconds after the restart.
#[tokio::test(start_paused = true)]
async fn the_slow_rollout_case_polls_its_verify_until_the_rollout_completes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../runbooks");
    let (catalog, _, _) = crate::load_catalog(std::slice::from_ref(&root));
    let catalog = std::sync::Arc::new(catalog);
    let file = crate::testing::load_test_file(&root.join("component-restart/tests.yaml"))
        .expect("the test file loads");
    let case = file
        .document
        .spec
        .cases
        .iter()
        .find(|case| {
            case.name
                .starts_with("waits for a rollout that takes 25 seconds")
        })
        .expect("the case");
    let result = crate::testing::run_case(&catalog, &file, case).await;
    assert!(result.failures.is_empty(), "{:?}", result.failures);
    let polls: Vec<bool> = result
        .trace
        .iter()
        .filter_map(|record| match &record.event {
            crate::journal::Event::VerifyPolled { step, held, .. } if step == "rollout-status" => {
                Some(*held)
            }
            _ => None,
        })
        .collect();
    assert_eq!(polls, [false, false, false, true]);
}
