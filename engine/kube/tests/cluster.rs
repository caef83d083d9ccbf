//! `KubeCluster` against a real, disposable Kubernetes cluster: every native action through the
//! executor's `Cluster` boundary, each action's undo done the way the executor does it, server
//! dry-runs, the Lease run lock, what `serve --cluster-state` keeps in the cluster (a
//! RunbookRun's status, a run's journal in ConfigMaps), and runbooks run end to end by the
//! executor.
//!
//! Every test is `#[ignore = "needs cluster"]`; `README.md` beside this file says how to run
//! them and what they create. Each works in a namespace of its own (`runbook-it-<random>`) that
//! is deleted when the test ends, passed or failed.
//!
//! They pass on a cluster with or without a kubelet (kind, k3d, or a bare kube-apiserver with
//! etcd): pods live on fake Node objects the tests create and stay Pending there. Such pods
//! have `terminationGracePeriodSeconds: 0`, so an eviction or a delete removes them at once
//! instead of waiting for a kubelet that never confirms. What needs a running container (exec,
//! logs) or kube-controller-manager (the garbage collector) is checked where it exists and
//! skipped with a message where it does not.

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use futures::FutureExt as _;
use http::Method;
use runbook_core::document::{PatchType, Propagation};
use runbook_core::effects::{
    Answer, Cluster, CommandOutput, DrainOptions, DryRun, EffectError, EffectResult, Effects,
    FixedAnswer, Http, HttpResponse, ListQuery, LocalProcesses, LogOptions, Notification, Notifier,
    ObjectKey, PodRef, SystemClock,
};
use runbook_core::exec::{execute, inverse_merge_patch, RunOptions, RunReport, StepStatus};
use runbook_core::journal::{Event, Outcome};
use runbook_core::runbook::{Catalog, Runbook};
use runbook_core::testing::Collect;
use runbook_kube::auth::{may, review_token, Attributes};
use runbook_kube::journal_store::{JournalSpec, JournalStore};
use runbook_kube::lease::{lease_name, LeaseError, LeaseLock, LeaseSpec};
use runbook_kube::transport::{Call, Retry, Transport};
use runbook_kube::{ConnectOptions, KubeCluster, KubeOptions, FIELD_MANAGER};
use serde_json::{json, Value as Json};

/// Every object the tests create runs this image, and none ever starts (no node can run it).
const PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.10";
/// Marks everything the tests create, so leftovers can be found: `kubectl get ns,nodes,crd -l`.
const IT_LABEL: &str = "runbook.dev/it";
/// The manager of the objects the tests set up, so they are not the executor's (`runbook`).
const SETUP_MANAGER: &str = "runbook-it";
/// A test that takes longer is stuck: it fails, and its namespace is still deleted.
const TEST_TIMEOUT: Duration = Duration::from_secs(420);
/// 2026-01-01T00:00:00Z, for restarts.
const RESTARTED_AT: u64 = 1_767_225_600;
const RESTARTED_AT_TEXT: &str = "2026-01-01T00:00:00Z";
const RESTARTED_AT_ANNOTATION: &str = "kubectl.kubernetes.io/restartedAt";

// --- The sandbox: a namespace per test, deleted whatever happens --------------------------------

/// One test's namespace, its client, and the cluster-scoped objects to delete with it.
struct Sandbox {
    namespace: String,
    cluster: Arc<KubeCluster>,
    transport: Transport,
    /// Nodes and CRDs the test created, deleted at the end, newest first.
    cluster_scoped: Mutex<Vec<ObjectKey>>,
}

/// Runs `body` in a fresh namespace on a multi-thread runtime, then deletes the namespace and
/// every tracked cluster-scoped object, also when `body` panics or times out; a panic is
/// raised again after the cleanup.
fn in_sandbox<F, Fut>(test: &'static str, body: F)
where
    F: FnOnce(Arc<Sandbox>) -> Fut,
    Fut: Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async move {
        let sandbox = Arc::new(Sandbox::open(test).await);
        let inner = sandbox.clone();
        let outcome = AssertUnwindSafe(async move {
            inner.prepare().await;
            tokio::time::timeout(TEST_TIMEOUT, body(inner.clone())).await
        })
        .catch_unwind()
        .await;
        sandbox.clean_up().await;
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(_)) => panic!(
                "{test}: did not finish within {}",
                humantime::format_duration(TEST_TIMEOUT)
            ),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    });
}

impl Sandbox {
    async fn open(test: &str) -> Self {
        // ~/.kube/config is often a cluster that matters: these tests create Nodes and CRDs, so
        // they run only against a cluster named on purpose.
        let kubeconfig = std::env::var_os("KUBECONFIG").filter(|value| !value.is_empty());
        assert!(
            kubeconfig.is_some(),
            "KUBECONFIG is not set: point it at a disposable cluster (see engine/kube/tests/README.md)"
        );
        let connection = runbook_kube::connect(&ConnectOptions::default())
            .await
            .unwrap_or_else(|error| panic!("{test}: {error}"));
        let namespace = format!("runbook-it-{}", random_suffix());
        let cluster = Arc::new(KubeCluster::new(
            connection.client.clone(),
            KubeOptions {
                namespace: namespace.clone(),
                // Drain re-tries a refused eviction, and checks an evicted pod is gone, this
                // often: kubectl's 5s would only make the tests slower.
                eviction_retry: Duration::from_secs(1),
                ..KubeOptions::default()
            },
        ));
        let transport = cluster.transport().clone();
        let sandbox = Self {
            namespace: namespace.clone(),
            cluster,
            transport,
            cluster_scoped: Mutex::new(Vec::new()),
        };
        sandbox
            .create(json!({
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": namespace, "labels": {"runbook.dev/it": "true", "runbook.dev/it-test": test}},
            }))
            .await;
        eprintln!(
            "{test}: namespace {namespace} on {} (Kubernetes {})",
            connection.describe(),
            connection.version
        );
        sandbox
    }

    /// The ServiceAccount admission plugin refuses pods in a namespace without a `default`
    /// ServiceAccount; kube-controller-manager creates it, a bare API server never does.
    async fn prepare(&self) {
        let account =
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}});
        match self.try_create(&account).await {
            Ok(_) | Err(EffectError::Conflict(_)) => {}
            Err(error) => panic!("cannot create the default ServiceAccount: {error}"),
        }
    }

    async fn clean_up(&self) {
        // Pods first, with no grace period: on a node without a kubelet a graceful delete
        // never finishes, and neither would the namespace's deletion.
        let pods = Call::new(
            Method::DELETE,
            format!("/api/v1/namespaces/{}/pods", self.namespace),
            format!("delete the pods of {}", self.namespace),
        )
        .json(
            "application/json",
            &json!({"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0}),
        );
        if let Err(error) = self.transport.send(&pods).await {
            eprintln!("cleanup: {error}");
        }
        let tracked = std::mem::take(
            &mut *self
                .cluster_scoped
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let namespace = cluster_key("v1", "Namespace", &self.namespace);
        for key in tracked.iter().rev().chain([&namespace]) {
            match self
                .cluster
                .delete(key, Some(Propagation::Background), None, DryRun::No)
                .await
            {
                Ok(()) | Err(EffectError::NotFound(_)) => {}
                Err(error) => eprintln!("cleanup: cannot delete {key}: {error}"),
            }
        }
    }

    /// Deleted with the namespace at the end of the test.
    fn track(&self, key: ObjectKey) {
        self.cluster_scoped
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(key);
    }

    fn key(&self, api_version: &str, kind: &str, name: &str) -> ObjectKey {
        ObjectKey {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
            namespace: Some(self.namespace.clone()),
            name: name.to_owned(),
        }
    }

    fn pod_key(&self, name: &str) -> ObjectKey {
        self.key("v1", "Pod", name)
    }

    fn config_map_key(&self, name: &str) -> ObjectKey {
        self.key("v1", "ConfigMap", name)
    }

    fn qualified(&self, name: &str) -> String {
        format!("{}/{name}", self.namespace)
    }

    /// Creates an object with a plain POST under the setup's own field manager, in the
    /// sandbox's namespace unless it is cluster-scoped; returns it as created.
    async fn create(&self, manifest: Json) -> Json {
        self.try_create(&manifest).await.unwrap_or_else(|error| {
            panic!(
                "cannot create {} {}: {error}",
                manifest["kind"], manifest["metadata"]["name"]
            )
        })
    }

    async fn try_create(&self, manifest: &Json) -> EffectResult<Json> {
        let api_version = manifest["apiVersion"].as_str().unwrap_or("v1");
        let kind = manifest["kind"].as_str().unwrap_or_default();
        let group = if api_version.contains('/') {
            format!("/apis/{api_version}")
        } else {
            format!("/api/{api_version}")
        };
        // Every kind the tests create has the regular plural.
        let plural = format!("{}s", kind.to_lowercase());
        let collection = if matches!(kind, "Namespace" | "Node" | "CustomResourceDefinition") {
            format!("{group}/{plural}")
        } else {
            format!("{group}/namespaces/{}/{plural}", self.namespace)
        };
        let call = Call::new(
            Method::POST,
            format!("{collection}?fieldManager={SETUP_MANAGER}"),
            format!("create {kind}"),
        )
        .json("application/json", manifest)
        .retry(Retry::Once);
        self.transport.json(&call).await
    }

    async fn read(&self, key: &ObjectKey) -> Json {
        self.cluster
            .get(key)
            .await
            .unwrap_or_else(|error| panic!("get {key}: {error}"))
    }

    async fn absent(&self, key: &ObjectKey) -> bool {
        match self.cluster.get(key).await {
            Err(EffectError::NotFound(_)) => true,
            Ok(_) => false,
            Err(error) => panic!("get {key}: {error}"),
        }
    }

    /// Whether the object is gone within `within`.
    async fn gone_within(&self, key: &ObjectKey, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if self.absent(key).await {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn versions(&self, keys: &[ObjectKey]) -> Vec<Option<String>> {
        let mut versions = Vec::new();
        for key in keys {
            versions.push(match self.cluster.get(key).await {
                Ok(object) => Some(resource_version(&object)),
                Err(EffectError::NotFound(_)) => None,
                Err(error) => panic!("get {key}: {error}"),
            });
        }
        versions
    }

    /// Waits until no controller is still writing the objects (their resourceVersions hold
    /// for 2s): kube-controller-manager writes a new Deployment's status and a new Node's
    /// taints and podCIDR in its first seconds.
    async fn settle(&self, keys: &[ObjectKey]) {
        let started = Instant::now();
        let mut last = self.versions(keys).await;
        let mut stable_since = Instant::now();
        while stable_since.elapsed() < Duration::from_secs(2)
            && started.elapsed() < Duration::from_secs(30)
        {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let now = self.versions(keys).await;
            if now != last {
                last = now;
                stable_since = Instant::now();
            }
        }
    }

    /// Runs a dry-run and checks it left every object's resourceVersion as it was. A
    /// controller may write an object during the dry-run; then it is tried again, and only a
    /// resourceVersion that moves on every attempt fails the test.
    async fn unchanged<T, F, Fut>(&self, keys: &[ObjectKey], mut dry_run: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = T>,
    {
        for attempt in 1..=3 {
            self.settle(keys).await;
            let before = self.versions(keys).await;
            let result = dry_run().await;
            let after = self.versions(keys).await;
            if before == after {
                return result;
            }
            eprintln!(
                "attempt {attempt}: a resourceVersion moved during the dry-run ({before:?} -> {after:?}); a controller may have written; trying again"
            );
        }
        panic!("the dry-run changed one of {keys:?} on every attempt: it persisted something");
    }

    /// A Deployment whose pods can never be scheduled (no node has the label it selects), so
    /// it behaves the same with or without a kubelet: its spec changes, its pods never run.
    async fn deployment(&self, name: &str, replicas: i64) -> ObjectKey {
        self.create(json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "labels": {"app": name, "tier": "frontend"}, "annotations": {"team": "web"}},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}, "annotations": {"team": "web"}},
                    "spec": {
                        "nodeSelector": {"runbook.dev/it-unschedulable": "true"},
                        "automountServiceAccountToken": false,
                        "terminationGracePeriodSeconds": 0,
                        "containers": [
                            {"name": "app", "image": PAUSE_IMAGE},
                            {"name": "sidecar", "image": PAUSE_IMAGE},
                        ],
                    },
                },
            },
        }))
        .await;
        self.key("apps/v1", "Deployment", name)
    }

    async fn config_map(&self, name: &str, metadata: Json, data: Json) -> ObjectKey {
        self.create(config_map_manifest(name, metadata, data)).await;
        self.config_map_key(name)
    }

    /// A Node name of this sandbox; [`Sandbox::fake_node`] creates it.
    fn node_name(&self, tag: &str) -> String {
        format!("{}-{tag}", self.namespace)
    }

    /// A Node object with no kubelet behind it: it never reports Ready, and the scheduler
    /// never places a pod on it (it has no allocatable pods), but cordon, pods bound to it
    /// with `spec.nodeName`, and evictions all work through the API.
    async fn fake_node(&self, name: &str) {
        self.create(json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": {"runbook.dev/it": "true", "runbook.dev/it-node": name}},
        }))
        .await;
        self.track(node_key(name));
    }

    /// A pod bound to `node` that never runs; deleted at once when evicted or deleted.
    async fn pod_on(&self, name: &str, node: &str, extra: Json) -> Json {
        let mut pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": name}},
            "spec": {
                "nodeName": node,
                "terminationGracePeriodSeconds": 0,
                "automountServiceAccountToken": false,
                "tolerations": [{"operator": "Exists"}],
                "containers": [{"name": "app", "image": PAUSE_IMAGE}],
            },
        });
        merge(&mut pod, extra);
        self.create(pod).await
    }

    /// Writes a pod's status as a kubelet would: Running and Ready.
    async fn mark_running(&self, pod: &str) {
        let conditions: Vec<Json> = ["PodScheduled", "Initialized", "ContainersReady", "Ready"]
            .iter()
            .map(|kind| json!({"type": kind, "status": "True"}))
            .collect();
        let call = Call::new(
            Method::PATCH,
            format!("/api/v1/namespaces/{}/pods/{pod}/status", self.namespace),
            format!("mark pod {pod} running"),
        )
        .json(
            "application/merge-patch+json",
            &json!({"status": {"phase": "Running", "conditions": conditions}}),
        );
        self.transport
            .json(&call)
            .await
            .unwrap_or_else(|error| panic!("{error}"));
    }

    /// Creates (or takes over a leftover of) a CRD, waits until it is Established and served
    /// in discovery, and deletes it at the end of the test.
    async fn crd(&self, definition: Json) {
        let name = definition["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let key = cluster_key("apiextensions.k8s.io/v1", "CustomResourceDefinition", &name);
        // A leftover of an earlier run that is still being deleted (its custom resources go
        // first) would be deleted under this test, Established as it still is: wait it out.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.cluster.get(&key).await {
                Ok(existing) if existing["metadata"]["deletionTimestamp"].is_string() => {
                    assert!(
                        Instant::now() < deadline,
                        "CRD {name}, left by an earlier run, is still being deleted after 60s"
                    );
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Ok(_) | Err(EffectError::NotFound(_)) => break,
                Err(error) => panic!("get CRD {name}: {error}"),
            }
        }
        self.cluster
            .apply(&definition, DryRun::No)
            .await
            .unwrap_or_else(|error| panic!("apply CRD {name}: {error}"));
        self.track(key.clone());
        let established =
            |object: &Json| -> Result<bool, String> { Ok(has_condition(object, "Established")) };
        tokio::time::timeout(
            Duration::from_secs(60),
            self.cluster
                .wait(&key, &established, Duration::from_secs(1)),
        )
        .await
        .unwrap_or_else(|_| panic!("CRD {name} is not Established after 60s"))
        .unwrap_or_else(|error| panic!("wait for CRD {name}: {error}"));
        // Established comes before the group is in the discovery document that KubeCluster
        // reads; ask for it until it is.
        let spec = &definition["spec"];
        let group_version = format!(
            "/apis/{}/{}",
            spec["group"].as_str().unwrap_or_default(),
            spec["versions"][0]["name"].as_str().unwrap_or_default()
        );
        let plural = spec["names"]["plural"].as_str().unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let document = self
                .transport
                .json(&Call::new(
                    Method::GET,
                    group_version.clone(),
                    "discover".to_owned(),
                ))
                .await;
            let served = document.ok().is_some_and(|document| {
                document["resources"]
                    .as_array()
                    .is_some_and(|resources| resources.iter().any(|r| r["name"] == plural))
            });
            if served {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{group_version} does not serve {plural} 30s after the CRD was Established"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn list(
        &self,
        kind_key: (&str, &str),
        labels: Option<&str>,
        fields: Option<&str>,
    ) -> Json {
        let (api_version, kind) = kind_key;
        self.cluster
            .list(&ListQuery {
                api_version: api_version.to_owned(),
                kind: kind.to_owned(),
                namespace: Some(self.namespace.clone()),
                label_selector: labels.map(str::to_owned),
                field_selector: fields.map(str::to_owned),
            })
            .await
            .unwrap_or_else(|error| panic!("list {kind}: {error}"))
    }
}

// --- get and list -------------------------------------------------------------------------------

#[test]
#[ignore = "needs cluster"]
fn get_and_list_read_objects_with_label_and_field_selectors() {
    in_sandbox("read", |sandbox| async move {
        let run = sandbox.namespace.clone();
        for (name, tier, app) in [("a", "web", "a"), ("b", "web", "b"), ("c", "db", "c")] {
            sandbox
                .config_map(
                    name,
                    json!({"labels": {"tier": tier, "app": app, "runbook.dev/it-run": run}}),
                    json!({"name": name}),
                )
                .await;
        }
        let a = sandbox.read(&sandbox.config_map_key("a")).await;
        assert_eq!(a["data"]["name"], "a");
        assert_eq!(a["kind"], "ConfigMap");
        assert_eq!(a["apiVersion"], "v1");

        let missing = sandbox.cluster.get(&sandbox.config_map_key("nope")).await;
        assert!(
            matches!(&missing, Err(EffectError::NotFound(m)) if m.contains("nope")),
            "{missing:?}"
        );
        let unknown_kind = sandbox.cluster.get(&sandbox.key("v1", "Gadget", "a")).await;
        assert!(
            matches!(&unknown_kind, Err(EffectError::NotFound(m)) if m.contains("no kind Gadget in v1")),
            "{unknown_kind:?}"
        );
        let unknown_group = sandbox
            .cluster
            .get(&sandbox.key("nowhere.runbook.dev/v1", "Gadget", "a"))
            .await;
        assert!(
            matches!(&unknown_group, Err(EffectError::NotFound(m)) if m.contains("does not serve nowhere.runbook.dev/v1")),
            "{unknown_group:?}"
        );

        let config_maps = ("v1", "ConfigMap");
        let cases: [(Option<&str>, Option<&str>, &[&str]); 5] = [
            (Some("tier=web"), None, &["a", "b"]),
            (Some("app in (a,c)"), None, &["a", "c"]),
            // `tier` first: kube-root-ca.crt (no labels) would match `tier!=web` alone.
            (Some("tier,tier!=web"), None, &["c"]),
            (None, Some("metadata.name=b"), &["b"]),
            (Some("tier=web"), Some("metadata.name!=b"), &["a"]),
        ];
        for (labels, fields, expected) in cases {
            let list = sandbox.list(config_maps, labels, fields).await;
            assert_eq!(
                names(&list),
                expected.to_vec(),
                "labels {labels:?}, fields {fields:?}"
            );
        }

        // Across namespaces: the items carry their namespace, and their kind and apiVersion,
        // which the API server leaves off list items, are put back.
        let everywhere = sandbox
            .cluster
            .list(&ListQuery {
                api_version: "v1".to_owned(),
                kind: "ConfigMap".to_owned(),
                namespace: None,
                label_selector: Some(format!("runbook.dev/it-run={run}")),
                field_selector: None,
            })
            .await
            .expect("list across namespaces");
        assert_eq!(names(&everywhere), ["a", "b", "c"]);
        for item in items(&everywhere) {
            assert_eq!(item["metadata"]["namespace"], json!(run));
            assert_eq!(item["kind"], "ConfigMap");
            assert_eq!(item["apiVersion"], "v1");
        }

        // A field the server cannot select on is the caller's mistake, said so.
        let unsupported = sandbox
            .cluster
            .list(&ListQuery {
                api_version: "v1".to_owned(),
                kind: "ConfigMap".to_owned(),
                namespace: Some(run.clone()),
                label_selector: None,
                field_selector: Some("data.name=a".to_owned()),
            })
            .await;
        assert!(
            matches!(unsupported, Err(EffectError::Invalid(_))),
            "{unsupported:?}"
        );
    });
}

// --- custom resources -----------------------------------------------------------------------------

fn widget_crd() -> Json {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.it.runbook.dev", "labels": {"runbook.dev/it": "true"}},
        "spec": {
            "group": "it.runbook.dev",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": true,
                            "properties": {"replicas": {"type": "integer"}},
                        },
                        "status": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": true,
                            "properties": {"replicas": {"type": "integer"}},
                        },
                    },
                }},
                "subresources": {"scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}},
            }],
        },
    })
}

#[test]
#[ignore = "needs cluster"]
fn custom_resources_are_read_scaled_restarted_and_patched_like_built_in_kinds() {
    in_sandbox("crd", |sandbox| async move {
        sandbox.crd(widget_crd()).await;
        for (name, shape) in [("round-one", "round"), ("square-one", "square")] {
            sandbox
                .create(json!({
                    "apiVersion": "it.runbook.dev/v1",
                    "kind": "Widget",
                    "metadata": {"name": name, "labels": {"shape": shape}},
                    "spec": {"replicas": 1, "color": "red", "template": {"metadata": {"annotations": {"keep": "yes"}}}},
                }))
                .await;
        }
        let key = sandbox.key("it.runbook.dev/v1", "Widget", "round-one");
        let widget = sandbox.read(&key).await;
        assert_eq!(widget["spec"]["color"], "red");
        assert_eq!(widget["kind"], "Widget");

        let widgets = ("it.runbook.dev/v1", "Widget");
        let round = sandbox.list(widgets, Some("shape=round"), None).await;
        assert_eq!(names(&round), ["round-one"]);
        assert_eq!(items(&round)[0]["apiVersion"], "it.runbook.dev/v1");
        let by_name = sandbox
            .list(widgets, None, Some("metadata.name=square-one"))
            .await;
        assert_eq!(names(&by_name), ["square-one"]);

        // Scale through the CRD's scale subresource, found in discovery; then back.
        let before = sandbox.read(&key).await;
        let would = sandbox
            .unchanged(std::slice::from_ref(&key), || {
                sandbox.cluster.scale(&key, 3, DryRun::Server)
            })
            .await
            .expect("dry-run scale of a Widget");
        assert_eq!(would["spec"]["replicas"], 3, "{would}");
        sandbox
            .cluster
            .scale(&key, 3, DryRun::No)
            .await
            .expect("scale a Widget");
        assert_eq!(sandbox.read(&key).await["spec"]["replicas"], 3);
        sandbox
            .cluster
            .scale(&key, 1, DryRun::No)
            .await
            .expect("scale the Widget back");
        assert_eq!(sandbox.read(&key).await["spec"], before["spec"]);

        // Restart: a merge patch of the template's annotations (custom resources take no
        // strategic merge patch), which keeps the annotations already there.
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(RESTARTED_AT);
        sandbox
            .cluster
            .restart(&key, at, DryRun::No)
            .await
            .expect("restart a Widget");
        let restarted = sandbox.read(&key).await;
        let annotations = &restarted["spec"]["template"]["metadata"]["annotations"];
        assert_eq!(annotations[RESTARTED_AT_ANNOTATION], RESTARTED_AT_TEXT);
        assert_eq!(annotations["keep"], "yes");

        let strategic = sandbox
            .cluster
            .patch(
                &key,
                PatchType::Strategic,
                &json!({"spec": {"color": "green"}}),
                DryRun::No,
            )
            .await;
        assert!(
            matches!(strategic, Err(EffectError::Invalid(_))),
            "the API server takes no strategic merge patch for a custom resource: {strategic:?}"
        );

        // A merge patch and its inverse, as the executor undoes it.
        let current = sandbox.read(&key).await;
        let body = json!({"spec": {"color": "blue", "size": "L"}});
        let inverse = inverse_merge_patch(&current, &body);
        let patched = sandbox
            .cluster
            .patch(&key, PatchType::Merge, &body, DryRun::No)
            .await
            .expect("merge patch a Widget");
        assert_eq!(patched["spec"]["color"], "blue");
        assert_eq!(patched["spec"]["size"], "L");
        sandbox
            .cluster
            .patch(&key, PatchType::Merge, &inverse, DryRun::No)
            .await
            .expect("undo the merge patch");
        assert_eq!(sandbox.read(&key).await["spec"], current["spec"]);
    });
}

// --- scale ------------------------------------------------------------------------------------------

#[test]
#[ignore = "needs cluster"]
fn scale_sets_spec_replicas_and_scaling_back_restores_the_spec() {
    in_sandbox("scale", |sandbox| async move {
        let key = sandbox.deployment("web", 2).await;
        sandbox.settle(std::slice::from_ref(&key)).await;
        let before = sandbox.read(&key).await;
        // What the executor records before it scales.
        let previous = before["spec"]["replicas"].as_i64().unwrap_or(1);
        assert_eq!(previous, 2);

        let would = sandbox
            .unchanged(std::slice::from_ref(&key), || {
                sandbox.cluster.scale(&key, 5, DryRun::Server)
            })
            .await
            .expect("dry-run scale");
        assert_eq!(would["kind"], "Scale", "{would}");
        assert_eq!(would["spec"]["replicas"], 5);
        assert_eq!(sandbox.read(&key).await["spec"]["replicas"], 2);

        let scale = sandbox
            .cluster
            .scale(&key, 5, DryRun::No)
            .await
            .expect("scale");
        assert_eq!(scale["spec"]["replicas"], 5);
        let scaled = sandbox.read(&key).await;
        assert_eq!(scaled["spec"]["replicas"], 5);
        assert!(
            generation(&scaled) > generation(&before),
            "a new spec is a new generation"
        );
        assert!(
            managed_by(&scaled, FIELD_MANAGER, "Update", "scale"),
            "the scale is recorded under runbook's field manager, through the scale subresource: {}",
            scaled["metadata"]["managedFields"]
        );

        // The undo: scale back to the count read before.
        sandbox
            .cluster
            .scale(&key, previous, DryRun::No)
            .await
            .expect("scale back");
        assert_eq!(sandbox.read(&key).await["spec"], before["spec"]);

        let config = sandbox
            .config_map("plain", json!({}), json!({"a": "1"}))
            .await;
        let refused = sandbox.cluster.scale(&config, 2, DryRun::No).await;
        assert!(
            matches!(&refused, Err(EffectError::Invalid(m)) if m.contains("cannot be scaled")),
            "{refused:?}"
        );
        let missing = sandbox
            .cluster
            .scale(&sandbox.key("apps/v1", "Deployment", "gone"), 1, DryRun::No)
            .await;
        assert!(
            matches!(missing, Err(EffectError::NotFound(_))),
            "{missing:?}"
        );
    });
}

// --- restart ----------------------------------------------------------------------------------------

#[test]
#[ignore = "needs cluster"]
fn restart_stamps_the_pod_template_as_kubectl_rollout_restart_does() {
    in_sandbox("restart", |sandbox| async move {
        let key = sandbox.deployment("web", 1).await;
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(RESTARTED_AT);

        let would = sandbox
            .unchanged(std::slice::from_ref(&key), || {
                sandbox.cluster.restart(&key, at, DryRun::Server)
            })
            .await
            .expect("dry-run restart");
        assert_eq!(
            template_annotation(&would, RESTARTED_AT_ANNOTATION),
            Some(RESTARTED_AT_TEXT),
            "the dry-run answer shows the change"
        );
        let before = sandbox.read(&key).await;
        assert_eq!(template_annotation(&before, RESTARTED_AT_ANNOTATION), None);

        sandbox
            .cluster
            .restart(&key, at, DryRun::No)
            .await
            .expect("restart");
        let restarted = sandbox.read(&key).await;
        assert_eq!(
            template_annotation(&restarted, RESTARTED_AT_ANNOTATION),
            Some(RESTARTED_AT_TEXT)
        );
        assert_eq!(
            template_annotation(&restarted, "team"),
            Some("web"),
            "a strategic merge patch keeps the template's other annotations"
        );
        assert!(
            managed_by(&restarted, FIELD_MANAGER, "Update", ""),
            "{}",
            restarted["metadata"]["managedFields"]
        );
        assert_eq!(generation(&restarted), generation(&before) + 1);
        assert_eq!(
            restarted["spec"]["template"]["spec"],
            before["spec"]["template"]["spec"]
        );

        // A second restart is a new rollout.
        let later = at + Duration::from_secs(3600);
        sandbox
            .cluster
            .restart(&key, later, DryRun::No)
            .await
            .expect("restart again");
        let again = sandbox.read(&key).await;
        assert_eq!(
            template_annotation(&again, RESTARTED_AT_ANNOTATION),
            Some("2026-01-01T01:00:00Z")
        );
        assert_eq!(generation(&again), generation(&restarted) + 1);
    });
}

// --- patch ------------------------------------------------------------------------------------------

#[test]
#[ignore = "needs cluster"]
fn patches_merge_strategic_and_json_and_the_inverse_merge_patch_restores() {
    in_sandbox("patch", |sandbox| async move {
        let key = sandbox.deployment("web", 2).await;
        sandbox.settle(std::slice::from_ref(&key)).await;

        // Merge patch, undone as the executor undoes it: the inverse merge patch of what it
        // read before.
        let current = sandbox.read(&key).await;
        let body = json!({
            "metadata": {"annotations": {"runbook.dev/reason": "it", "team": "platform"}},
            "spec": {"paused": true, "minReadySeconds": 5},
        });
        let inverse = inverse_merge_patch(&current, &body);
        let would = sandbox
            .unchanged(std::slice::from_ref(&key), || {
                sandbox
                    .cluster
                    .patch(&key, PatchType::Merge, &body, DryRun::Server)
            })
            .await
            .expect("dry-run merge patch");
        assert_eq!(would["spec"]["paused"], true, "{would}");
        let patched = sandbox
            .cluster
            .patch(&key, PatchType::Merge, &body, DryRun::No)
            .await
            .expect("merge patch");
        assert_eq!(patched["spec"]["paused"], true);
        assert_eq!(patched["spec"]["minReadySeconds"], 5);
        assert_eq!(patched["metadata"]["annotations"]["team"], "platform");
        assert!(
            managed_by(&patched, FIELD_MANAGER, "Update", ""),
            "the patch is recorded under runbook's field manager: {}",
            patched["metadata"]["managedFields"]
        );
        sandbox
            .cluster
            .patch(&key, PatchType::Merge, &inverse, DryRun::No)
            .await
            .expect("the inverse merge patch");
        let restored = sandbox.read(&key).await;
        assert_eq!(restored["spec"], current["spec"]);
        let annotations = &restored["metadata"]["annotations"];
        assert_eq!(annotations["team"], "web");
        assert!(
            annotations.get("runbook.dev/reason").is_none(),
            "{annotations}"
        );

        // The same containers patch, strategic and merge: a strategic merge patch merges the
        // list by container name, a merge patch replaces it (shown by a dry-run).
        let containers = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "sidecar", "image": "registry.k8s.io/pause:3.9"},
        ]}}}});
        let current = sandbox.read(&key).await;
        let replaced = sandbox
            .unchanged(std::slice::from_ref(&key), || {
                sandbox
                    .cluster
                    .patch(&key, PatchType::Merge, &containers, DryRun::Server)
            })
            .await
            .expect("dry-run merge patch of the containers");
        assert_eq!(
            container_images(&replaced),
            [("sidecar", "registry.k8s.io/pause:3.9")]
        );
        let merged = sandbox
            .cluster
            .patch(&key, PatchType::Strategic, &containers, DryRun::No)
            .await
            .expect("strategic merge patch");
        assert_eq!(
            container_images(&merged),
            [
                ("app", PAUSE_IMAGE),
                ("sidecar", "registry.k8s.io/pause:3.9")
            ]
        );
        // Its undo puts the whole list back.
        let inverse = inverse_merge_patch(&current, &containers);
        sandbox
            .cluster
            .patch(&key, PatchType::Merge, &inverse, DryRun::No)
            .await
            .expect("undo the strategic merge patch");
        assert_eq!(
            sandbox.read(&key).await["spec"]["template"]["spec"]["containers"],
            current["spec"]["template"]["spec"]["containers"]
        );

        // JSON patch.
        let settings = sandbox
            .config_map("settings", json!({}), json!({"color": "red"}))
            .await;
        let replace = json!([{"op": "replace", "path": "/data/color", "value": "blue"}]);
        let would = sandbox
            .unchanged(std::slice::from_ref(&settings), || {
                sandbox
                    .cluster
                    .patch(&settings, PatchType::Json, &replace, DryRun::Server)
            })
            .await
            .expect("dry-run JSON patch");
        assert_eq!(would["data"]["color"], "blue");
        assert_eq!(sandbox.read(&settings).await["data"]["color"], "red");
        let operations = json!([
            {"op": "test", "path": "/data/color", "value": "red"},
            {"op": "replace", "path": "/data/color", "value": "blue"},
            {"op": "add", "path": "/data/size", "value": "L"},
        ]);
        sandbox
            .cluster
            .patch(&settings, PatchType::Json, &operations, DryRun::No)
            .await
            .expect("JSON patch");
        assert_eq!(
            sandbox.read(&settings).await["data"],
            json!({"color": "blue", "size": "L"})
        );
        // A `test` that fails refuses the whole patch.
        let stale = json!([
            {"op": "test", "path": "/data/color", "value": "red"},
            {"op": "replace", "path": "/data/color", "value": "green"},
        ]);
        let refused = sandbox
            .cluster
            .patch(&settings, PatchType::Json, &stale, DryRun::No)
            .await;
        assert!(
            matches!(refused, Err(EffectError::Invalid(_))),
            "{refused:?}"
        );
        assert_eq!(sandbox.read(&settings).await["data"]["color"], "blue");
    });
}

// --- apply ------------------------------------------------------------------------------------------

#[test]
#[ignore = "needs cluster"]
fn apply_creates_then_updates_under_the_runbook_field_manager_and_is_undone() {
    in_sandbox("apply", |sandbox| async move {
        let key = sandbox.config_map_key("settings");
        let manifest = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "settings", "labels": {"app": "shop"}},
            "data": {"mode": "a", "keep": "yes"},
        });
        let would = sandbox
            .cluster
            .apply(&manifest, DryRun::Server)
            .await
            .expect("dry-run apply of a new object");
        assert_eq!(would["data"]["mode"], "a");
        assert!(
            sandbox.absent(&key).await,
            "a dry-run apply creates nothing"
        );

        // Created: the executor read NotFound before, so its undo is a delete.
        let created = sandbox
            .cluster
            .apply(&manifest, DryRun::No)
            .await
            .expect("apply creates");
        assert_eq!(
            created["metadata"]["namespace"],
            json!(sandbox.namespace),
            "a manifest without a namespace goes to KubeOptions.namespace"
        );
        assert_eq!(created["data"], json!({"mode": "a", "keep": "yes"}));
        assert!(
            managed_by(&created, FIELD_MANAGER, "Apply", ""),
            "{}",
            created["metadata"]["managedFields"]
        );

        // Updated: the executor keeps the object as it was for the undo.
        let previous = sandbox.read(&key).await;
        let update = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "settings", "labels": {"app": "shop"}},
            "data": {"mode": "b", "extra": "1"},
        });
        let would = sandbox
            .unchanged(std::slice::from_ref(&key), || {
                sandbox.cluster.apply(&update, DryRun::Server)
            })
            .await
            .expect("dry-run apply of a change");
        assert_eq!(would["data"], json!({"mode": "b", "extra": "1"}));
        sandbox
            .cluster
            .apply(&update, DryRun::No)
            .await
            .expect("apply updates");
        assert_eq!(
            sandbox.read(&key).await["data"],
            json!({"mode": "b", "extra": "1"}),
            "server-side apply drops `keep`, which only this manager had applied"
        );

        // Undo of the update: apply the previous object without what the server set.
        sandbox
            .cluster
            .apply(&without_server_fields(&previous), DryRun::No)
            .await
            .expect("apply the previous object");
        let undone = sandbox.read(&key).await;
        assert_eq!(undone["data"], previous["data"]);
        assert_eq!(undone["metadata"]["labels"], previous["metadata"]["labels"]);

        // Undo of the create: delete it.
        sandbox
            .cluster
            .delete(&key, None, None, DryRun::No)
            .await
            .expect("delete what the apply created");
        assert!(sandbox.absent(&key).await);

        // A field another manager set is a conflict, not taken over: no force.
        let shared = sandbox
            .config_map("shared", json!({}), json!({"owner": "someone"}))
            .await;
        let conflicting = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "shared"},
            "data": {"owner": "runbook"},
        });
        let conflict = sandbox.cluster.apply(&conflicting, DryRun::No).await;
        // The server's message: `Apply failed with 1 conflict: conflict with "runbook-it"
        // using v1: .data.owner`. The name quoted, so that `runbook` and `runbook-it` differ.
        let other = format!("\"{SETUP_MANAGER}\"");
        assert!(
            matches!(&conflict, Err(EffectError::FieldManagerConflict(m)) if m.contains(&other)),
            "the conflict names the other manager: {conflict:?}"
        );
        assert_eq!(sandbox.read(&shared).await["data"]["owner"], "someone");
        // The same value is no conflict: both managers own it then.
        let agreeing = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "shared"},
            "data": {"owner": "someone"},
        });
        sandbox
            .cluster
            .apply(&agreeing, DryRun::No)
            .await
            .expect("apply of a value another manager set to the same");

        // runbook's own patches are recorded as manager `runbook` with operation Update, and
        // server-side apply tells managers apart by name and operation: to an apply (`runbook`,
        // Apply), a field a runbook patch set is another manager's. Applying another value for
        // it is a conflict naming `runbook`; applying the value the patch set is not.
        let patched = sandbox
            .cluster
            .patch(
                &shared,
                PatchType::Merge,
                &json!({"data": {"mode": "patched"}}),
                DryRun::No,
            )
            .await
            .expect("merge patch the shared ConfigMap");
        assert!(
            managed_by(&patched, FIELD_MANAGER, "Update", ""),
            "{}",
            patched["metadata"]["managedFields"]
        );
        let over_the_patch = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "shared"},
            "data": {"owner": "someone", "mode": "applied"},
        });
        let conflict = sandbox.cluster.apply(&over_the_patch, DryRun::No).await;
        let ours = format!("\"{FIELD_MANAGER}\"");
        assert!(
            matches!(&conflict, Err(EffectError::FieldManagerConflict(m)) if m.contains(&ours)),
            "an apply over runbook's own patch conflicts with it: {conflict:?}"
        );
        assert_eq!(sandbox.read(&shared).await["data"]["mode"], "patched");
        let same_as_the_patch = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "shared"},
            "data": {"owner": "someone", "mode": "patched"},
        });
        sandbox
            .cluster
            .apply(&same_as_the_patch, DryRun::No)
            .await
            .expect("apply of the value runbook's patch set");
    });
}

// --- annotate and label -----------------------------------------------------------------------------

#[test]
#[ignore = "needs cluster"]
fn annotate_and_label_set_and_remove_keys_and_their_inverse_restores_them() {
    in_sandbox("metadata", |sandbox| async move {
        let key = sandbox
            .config_map(
                "target",
                json!({"labels": {"tier": "web", "app": "shop"}, "annotations": {"owner": "team-a"}}),
                json!({}),
            )
            .await;

        let set = values(&[
            ("owner", Some("team-b")),
            ("runbook.dev/note", Some("checked")),
        ]);
        let current = sandbox.read(&key).await;
        let inverse = inverse_merge_patch(&current, &metadata_body("annotations", &set));
        let would = sandbox
            .unchanged(std::slice::from_ref(&key), || {
                sandbox.cluster.annotate(&key, &set, DryRun::Server)
            })
            .await
            .expect("dry-run annotate");
        assert_eq!(would["metadata"]["annotations"]["owner"], "team-b");
        let annotated = sandbox
            .cluster
            .annotate(&key, &set, DryRun::No)
            .await
            .expect("annotate");
        assert_eq!(
            annotated["metadata"]["annotations"],
            json!({"owner": "team-b", "runbook.dev/note": "checked"})
        );
        assert!(
            managed_by(&annotated, FIELD_MANAGER, "Update", ""),
            "{}",
            annotated["metadata"]["managedFields"]
        );
        sandbox
            .cluster
            .patch(&key, PatchType::Merge, &inverse, DryRun::No)
            .await
            .expect("undo the annotations");
        assert_eq!(
            sandbox.read(&key).await["metadata"]["annotations"],
            current["metadata"]["annotations"]
        );

        // Labels: one set, one removed.
        let set = values(&[("stage", Some("canary")), ("tier", None)]);
        let current = sandbox.read(&key).await;
        let inverse = inverse_merge_patch(&current, &metadata_body("labels", &set));
        let would = sandbox
            .unchanged(std::slice::from_ref(&key), || {
                sandbox.cluster.label(&key, &set, DryRun::Server)
            })
            .await
            .expect("dry-run label");
        assert_eq!(
            would["metadata"]["labels"],
            json!({"app": "shop", "stage": "canary"})
        );
        sandbox
            .cluster
            .label(&key, &set, DryRun::No)
            .await
            .expect("label");
        assert_eq!(
            sandbox.read(&key).await["metadata"]["labels"],
            json!({"app": "shop", "stage": "canary"})
        );
        let selected = sandbox
            .list(("v1", "ConfigMap"), Some("stage=canary,!tier"), None)
            .await;
        assert_eq!(names(&selected), ["target"]);
        sandbox
            .cluster
            .patch(&key, PatchType::Merge, &inverse, DryRun::No)
            .await
            .expect("undo the labels");
        assert_eq!(
            sandbox.read(&key).await["metadata"]["labels"],
            json!({"tier": "web", "app": "shop"})
        );

        let missing = sandbox
            .cluster
            .annotate(&sandbox.config_map_key("gone"), &set, DryRun::No)
            .await;
        assert!(
            matches!(missing, Err(EffectError::NotFound(_))),
            "{missing:?}"
        );
    });
}

// --- delete -----------------------------------------------------------------------------------------

#[test]
#[ignore = "needs cluster"]
fn delete_with_background_and_foreground_propagation_and_a_grace_period() {
    in_sandbox("delete", |sandbox| async move {
        let doomed = sandbox
            .config_map("doomed", json!({}), json!({"a": "1"}))
            .await;
        sandbox
            .unchanged(std::slice::from_ref(&doomed), || {
                sandbox.cluster.delete(&doomed, None, None, DryRun::Server)
            })
            .await
            .expect("dry-run delete");
        assert!(!sandbox.absent(&doomed).await, "a dry-run deletes nothing");
        sandbox
            .cluster
            .delete(&doomed, None, None, DryRun::No)
            .await
            .expect("delete");
        assert!(sandbox.absent(&doomed).await);
        let again = sandbox
            .cluster
            .delete(&doomed, None, None, DryRun::No)
            .await;
        assert!(matches!(again, Err(EffectError::NotFound(_))), "{again:?}");

        // Owners with one dependent each.
        let mut dependents = Vec::new();
        for owner in ["owner-background", "owner-foreground"] {
            let created = sandbox
                .create(config_map_manifest(owner, json!({}), json!({})))
                .await;
            let dependent = format!("{owner}-dependent");
            sandbox
                .create(config_map_manifest(
                    &dependent,
                    json!({"ownerReferences": [{
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "name": owner,
                        "uid": created["metadata"]["uid"],
                        "blockOwnerDeletion": true,
                    }]}),
                    json!({}),
                ))
                .await;
            dependents.push(sandbox.config_map_key(&dependent));
        }

        // Background: the owner goes at once; the garbage collector deletes the dependent.
        let background = sandbox.config_map_key("owner-background");
        sandbox
            .cluster
            .delete(&background, Some(Propagation::Background), None, DryRun::No)
            .await
            .expect("delete in the background");
        assert!(sandbox.absent(&background).await);

        // Foreground: the owner stays, marked for deletion, until its dependents are gone.
        let foreground = sandbox.config_map_key("owner-foreground");
        sandbox
            .cluster
            .delete(&foreground, Some(Propagation::Foreground), None, DryRun::No)
            .await
            .expect("delete in the foreground");
        match sandbox.cluster.get(&foreground).await {
            Err(EffectError::NotFound(_)) => {}
            Ok(owner) => {
                assert!(
                    owner["metadata"]["deletionTimestamp"].is_string(),
                    "{owner}"
                );
                assert!(
                    owner["metadata"]["finalizers"]
                        .as_array()
                        .is_some_and(|f| f.contains(&json!("foregroundDeletion"))),
                    "{owner}"
                );
            }
            Err(error) => panic!("{error}"),
        }

        if sandbox
            .gone_within(&dependents[0], Duration::from_secs(30))
            .await
        {
            assert!(
                sandbox
                    .gone_within(&dependents[1], Duration::from_secs(30))
                    .await,
                "the garbage collector deletes a foreground-deleted owner's dependent"
            );
            assert!(
                sandbox
                    .gone_within(&foreground, Duration::from_secs(30))
                    .await,
                "then the owner"
            );
        } else {
            eprintln!(
                "skipped: no garbage collector (kube-controller-manager) deleted the dependents within 30s, so propagation ends at the owner here"
            );
            let owner = sandbox.read(&foreground).await;
            assert!(
                owner["metadata"]["deletionTimestamp"].is_string(),
                "{owner}"
            );
            // Let it go, as the garbage collector would have.
            sandbox
                .cluster
                .patch(
                    &foreground,
                    PatchType::Merge,
                    &json!({"metadata": {"finalizers": null}}),
                    DryRun::No,
                )
                .await
                .expect("remove the foregroundDeletion finalizer");
            assert!(
                sandbox
                    .gone_within(&foreground, Duration::from_secs(10))
                    .await
            );
        }

        // A pod bound to a node that no kubelet serves: a graceful delete only marks it (it
        // would stay Terminating until a kubelet confirms), a zero grace period removes it.
        let nowhere = sandbox.node_name("nowhere");
        sandbox
            .pod_on(
                "stuck",
                &nowhere,
                json!({"spec": {"terminationGracePeriodSeconds": 30}}),
            )
            .await;
        let stuck = sandbox.pod_key("stuck");
        sandbox
            .cluster
            .delete(&stuck, None, None, DryRun::No)
            .await
            .expect("graceful delete");
        let terminating = sandbox.read(&stuck).await;
        assert!(
            terminating["metadata"]["deletionTimestamp"].is_string(),
            "{terminating}"
        );
        sandbox
            .cluster
            .delete(&stuck, None, Some(0), DryRun::No)
            .await
            .expect("delete with gracePeriodSeconds 0");
        assert!(sandbox.absent(&stuck).await);
    });
}

// --- cordon and uncordon ----------------------------------------------------------------------------

#[test]
#[ignore = "needs cluster"]
fn cordon_and_uncordon_a_node_and_the_undo_restores_it() {
    in_sandbox("cordon", |sandbox| async move {
        let node = sandbox.node_name("cordon");
        sandbox.fake_node(&node).await;
        let key = node_key(&node);
        // What the executor records before it cordons.
        let previous = unschedulable(&sandbox.read(&key).await);
        assert!(!previous);

        let would = sandbox
            .unchanged(std::slice::from_ref(&key), || {
                sandbox
                    .cluster
                    .set_unschedulable(&node, true, DryRun::Server)
            })
            .await
            .expect("dry-run cordon");
        assert_eq!(would["spec"]["unschedulable"], true);
        assert!(!unschedulable(&sandbox.read(&key).await));

        let cordoned = sandbox
            .cluster
            .set_unschedulable(&node, true, DryRun::No)
            .await
            .expect("cordon");
        assert_eq!(cordoned["spec"]["unschedulable"], true);
        assert!(
            managed_by(&cordoned, FIELD_MANAGER, "Update", ""),
            "{}",
            cordoned["metadata"]["managedFields"]
        );
        assert!(unschedulable(&sandbox.read(&key).await));
        sandbox
            .cluster
            .set_unschedulable(&node, true, DryRun::No)
            .await
            .expect("cordon a cordoned node");

        // A dry-run uncordon of the cordoned node.
        let would = sandbox
            .unchanged(std::slice::from_ref(&key), || {
                sandbox
                    .cluster
                    .set_unschedulable(&node, false, DryRun::Server)
            })
            .await
            .expect("dry-run uncordon");
        assert!(!unschedulable(&would));
        assert!(unschedulable(&sandbox.read(&key).await));

        // The undo: back to what it was, which kubectl uncordon writes as no field at all.
        sandbox
            .cluster
            .set_unschedulable(&node, previous, DryRun::No)
            .await
            .expect("uncordon");
        let uncordoned = sandbox.read(&key).await;
        assert!(
            uncordoned["spec"].get("unschedulable").is_none(),
            "{uncordoned}"
        );

        let missing = sandbox
            .cluster
            .set_unschedulable(&sandbox.node_name("absent"), true, DryRun::No)
            .await;
        assert!(
            matches!(missing, Err(EffectError::NotFound(_))),
            "{missing:?}"
        );
    });
}

// --- drain ------------------------------------------------------------------------------------------

#[test]
#[ignore = "needs cluster"]
fn drain_evicts_pods_skipping_daemon_set_and_mirror_pods() {
    in_sandbox("drain", |sandbox| async move {
        let node = sandbox.node_name("drain");
        // A DaemonSet that runs on this node only, and that never replaces its pods by itself
        // (OnDelete): its controller, where one runs, keeps the pod made here as its own.
        let daemon_set = sandbox
            .create(json!({
                "apiVersion": "apps/v1",
                "kind": "DaemonSet",
                "metadata": {"name": "agent"},
                "spec": {
                    "selector": {"matchLabels": {"app": "agent"}},
                    "updateStrategy": {"type": "OnDelete"},
                    "template": {
                        "metadata": {"labels": {"app": "agent"}},
                        "spec": {
                            "nodeSelector": {"runbook.dev/it-node": node},
                            "terminationGracePeriodSeconds": 0,
                            "automountServiceAccountToken": false,
                            "tolerations": [{"operator": "Exists"}],
                            "containers": [{"name": "agent", "image": PAUSE_IMAGE}],
                        },
                    },
                },
            }))
            .await;
        // The pods exist before the node, so a DaemonSet controller finds its pod there.
        sandbox.pod_on("plain", &node, json!({})).await;
        sandbox
            .pod_on(
                "scratch",
                &node,
                json!({"spec": {"volumes": [{"name": "scratch", "emptyDir": {}}]}}),
            )
            .await;
        sandbox
            .pod_on(
                "daemon",
                &node,
                json!({"metadata": {
                    "labels": {"app": "agent"},
                    "ownerReferences": [{
                        "apiVersion": "apps/v1",
                        "kind": "DaemonSet",
                        "name": "agent",
                        "uid": daemon_set["metadata"]["uid"],
                        "controller": true,
                        "blockOwnerDeletion": true,
                    }],
                }}),
            )
            .await;
        // What a kubelet creates for a static pod: no ServiceAccount, the mirror annotation.
        sandbox
            .pod_on(
                "mirror",
                &node,
                json!({"metadata": {"annotations": {"kubernetes.io/config.mirror": "runbook-it"}}}),
            )
            .await;
        sandbox.fake_node(&node).await;
        let node_key = node_key(&node);
        let pods: Vec<ObjectKey> = ["plain", "scratch", "daemon", "mirror"]
            .iter()
            .map(|name| sandbox.pod_key(name))
            .collect();
        let mut watched = pods.clone();
        watched.push(node_key.clone());
        let refuse_local = DrainOptions {
            delete_empty_dir_data: false,
            eviction_timeout: Duration::from_secs(60),
        };
        let evict_all = DrainOptions {
            delete_empty_dir_data: true,
            eviction_timeout: Duration::from_secs(60),
        };

        // Dry-runs: refused for the emptyDir pod, then what would be evicted and skipped.
        let refused = sandbox
            .unchanged(&watched, || {
                sandbox.cluster.drain(&node, &refuse_local, DryRun::Server)
            })
            .await;
        assert!(
            matches!(&refused, Err(EffectError::Invalid(m)) if m.contains(&sandbox.qualified("scratch"))),
            "{refused:?}"
        );
        let report = sandbox
            .unchanged(&watched, || {
                sandbox.cluster.drain(&node, &evict_all, DryRun::Server)
            })
            .await
            .expect("dry-run drain");
        assert_eq!(
            sorted(report.evicted.clone()),
            [sandbox.qualified("plain"), sandbox.qualified("scratch")]
        );
        for skipped in ["daemon", "mirror"] {
            assert!(
                report.skipped.contains(&sandbox.qualified(skipped)),
                "{skipped} not skipped: {report:?}"
            );
        }
        assert!(!unschedulable(&sandbox.read(&node_key).await));
        for pod in &pods {
            let pod = sandbox.read(pod).await;
            assert!(pod["metadata"].get("deletionTimestamp").is_none(), "{pod}");
        }

        // For real: kubectl drain cordons first, then refuses pods with local storage.
        let refused = sandbox
            .cluster
            .drain(&node, &refuse_local, DryRun::No)
            .await;
        assert!(
            matches!(&refused, Err(EffectError::Invalid(_))),
            "{refused:?}"
        );
        assert!(unschedulable(&sandbox.read(&node_key).await));
        assert!(!sandbox.absent(&sandbox.pod_key("plain")).await);

        // The pods have no grace period, so each eviction deletes its pod at once and drain's
        // wait for the pod to be gone ends without a kubelet.
        let report = sandbox
            .cluster
            .drain(&node, &evict_all, DryRun::No)
            .await
            .expect("drain");
        assert_eq!(
            sorted(report.evicted.clone()),
            [sandbox.qualified("plain"), sandbox.qualified("scratch")]
        );
        for skipped in ["daemon", "mirror"] {
            assert!(report.skipped.contains(&sandbox.qualified(skipped)));
            assert!(!sandbox.absent(&sandbox.pod_key(skipped)).await);
        }
        for evicted in ["plain", "scratch"] {
            assert!(sandbox.absent(&sandbox.pod_key(evicted)).await);
        }
        assert!(unschedulable(&sandbox.read(&node_key).await));

        // The undo of a drain is the uncordon (evicted pods are their controllers' to replace).
        sandbox
            .cluster
            .set_unschedulable(&node, false, DryRun::No)
            .await
            .expect("uncordon");
        assert!(!unschedulable(&sandbox.read(&node_key).await));

        let missing = sandbox
            .cluster
            .drain(&sandbox.node_name("absent"), &evict_all, DryRun::No)
            .await;
        assert!(
            matches!(missing, Err(EffectError::NotFound(_))),
            "{missing:?}"
        );
    });
}

#[test]
#[ignore = "needs cluster"]
fn drain_is_blocked_by_a_disruption_budget_until_it_allows_the_eviction() {
    in_sandbox("budget", |sandbox| async move {
        let node = sandbox.node_name("budget");
        sandbox.fake_node(&node).await;
        sandbox.pod_on("guarded", &node, json!({})).await;
        // The Eviction API ignores budgets for Pending pods (nothing runs yet to disrupt), and
        // without a kubelet a pod stays Pending: say it runs and is Ready, as a kubelet would.
        sandbox.mark_running("guarded").await;
        sandbox
            .create(json!({
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": {"name": "guarded"},
                "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "guarded"}}},
            }))
            .await;
        // The eviction answers 429 either way: with its status computed, the budget allows no
        // disruption; without (no disruption controller), it is "still being processed".
        let budget = sandbox.key("policy/v1", "PodDisruptionBudget", "guarded");
        let mut computed = false;
        for _ in 0..10 {
            if sandbox.read(&budget).await["status"]["observedGeneration"].is_i64() {
                computed = true;
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        eprintln!(
            "the disruption budget's status is {}",
            if computed {
                "computed by the disruption controller"
            } else {
                "never computed (no kube-controller-manager): the Eviction API refuses while it is unprocessed"
            }
        );

        let options = DrainOptions {
            delete_empty_dir_data: false,
            eviction_timeout: Duration::from_secs(5),
        };
        let started = Instant::now();
        let blocked = sandbox.cluster.drain(&node, &options, DryRun::No).await;
        assert!(
            matches!(&blocked, Err(EffectError::Blocked(m)) if m.contains(&sandbox.qualified("guarded"))),
            "{blocked:?}"
        );
        assert!(
            started.elapsed() >= Duration::from_secs(3),
            "the eviction is retried until the eviction timeout"
        );
        let guarded = sandbox.read(&sandbox.pod_key("guarded")).await;
        assert!(
            guarded["metadata"].get("deletionTimestamp").is_none(),
            "{guarded}"
        );
        assert!(unschedulable(&sandbox.read(&node_key(&node)).await));

        sandbox
            .cluster
            .delete(&budget, None, None, DryRun::No)
            .await
            .expect("delete the budget");
        let options = DrainOptions {
            eviction_timeout: Duration::from_secs(30),
            ..options
        };
        let report = sandbox
            .cluster
            .drain(&node, &options, DryRun::No)
            .await
            .expect("drain once the budget is gone");
        assert_eq!(report.evicted, [sandbox.qualified("guarded")]);
        assert!(sandbox.absent(&sandbox.pod_key("guarded")).await);
        sandbox
            .cluster
            .set_unschedulable(&node, false, DryRun::No)
            .await
            .expect("uncordon");
    });
}

// --- wait -------------------------------------------------------------------------------------------

#[test]
#[ignore = "needs cluster"]
fn wait_watches_until_a_change_made_elsewhere_satisfies_it() {
    in_sandbox("wait", |sandbox| async move {
        let key = sandbox
            .config_map("signal", json!({}), json!({"state": "waiting"}))
            .await;
        let writer = {
            let cluster = sandbox.cluster.clone();
            let key = key.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(3)).await;
                cluster
                    .patch(
                        &key,
                        PatchType::Merge,
                        &json!({"data": {"state": "ready"}}),
                        DryRun::No,
                    )
                    .await
            })
        };
        // How many times the condition saw the object not ready yet.
        let waiting = Arc::new(AtomicUsize::new(0));
        let ready = {
            let waiting = waiting.clone();
            move |object: &Json| -> Result<bool, String> {
                let ready = object["data"]["state"] == "ready";
                if !ready {
                    waiting.fetch_add(1, Ordering::SeqCst);
                }
                Ok(ready)
            }
        };
        let started = Instant::now();
        // Polling every 60s could not see the change within 20s. A wait whose watch ended
        // would see it too (it lists the object again after a 1s pause), but only after reading
        // it not ready again: the condition sees the object not ready once (the first list),
        // then the change, which only the watch delivers.
        let seen = tokio::time::timeout(
            Duration::from_secs(20),
            sandbox.cluster.wait(&key, &ready, Duration::from_secs(60)),
        )
        .await
        .expect("the watch saw the change within 20s")
        .expect("wait");
        assert_eq!(seen["data"]["state"], "ready");
        assert!(started.elapsed() >= Duration::from_millis(2500));
        assert_eq!(
            waiting.load(Ordering::SeqCst),
            1,
            "the object was read once before the change; more means the watch ended and wait read it again"
        );
        writer
            .await
            .expect("the writer task")
            .expect("the writer's patch");

        // A condition that cannot be evaluated stops the wait.
        let broken =
            |_: &Json| -> Result<bool, String> { Err("no such field: status.phase".to_owned()) };
        let stopped = tokio::time::timeout(
            Duration::from_secs(10),
            sandbox.cluster.wait(&key, &broken, Duration::from_secs(1)),
        )
        .await
        .expect("an error ends the wait");
        assert!(
            matches!(&stopped, Err(EffectError::Invalid(m)) if m.contains("status.phase")),
            "{stopped:?}"
        );
        let missing = tokio::time::timeout(
            Duration::from_secs(10),
            sandbox.cluster.wait(
                &sandbox.config_map_key("gone"),
                &ready,
                Duration::from_secs(1),
            ),
        )
        .await
        .expect("a missing object ends the wait");
        assert!(
            matches!(missing, Err(EffectError::NotFound(_))),
            "{missing:?}"
        );
    });
}

// --- exec and logs ----------------------------------------------------------------------------------

#[test]
#[ignore = "needs cluster"]
fn exec_and_logs_in_a_running_pod_where_a_node_can_run_one() {
    in_sandbox("exec", |sandbox| async move {
        let nodes = sandbox
            .cluster
            .list(&ListQuery {
                api_version: "v1".to_owned(),
                kind: "Node".to_owned(),
                namespace: None,
                label_selector: Some(format!("!{IT_LABEL}")),
                field_selector: None,
            })
            .await
            .expect("list nodes");
        let Some(node) = items(&nodes)
            .iter()
            .find(|node| has_condition(node, "Ready"))
            .and_then(|node| node["metadata"]["name"].as_str())
            .map(str::to_owned)
        else {
            eprintln!(
                "skipped: no node is Ready (no kubelet), so no container can run for exec and logs"
            );
            return;
        };
        sandbox
            .create(json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "shell"},
                "spec": {
                    "nodeName": node,
                    "terminationGracePeriodSeconds": 0,
                    "automountServiceAccountToken": false,
                    "tolerations": [{"operator": "Exists"}],
                    "containers": [{
                        "name": "shell",
                        "image": "busybox:1.36",
                        "command": ["sh", "-c", "echo first; echo second; exec sleep 3600"],
                    }],
                },
            }))
            .await;
        let key = sandbox.pod_key("shell");
        let running =
            |pod: &Json| -> Result<bool, String> { Ok(pod["status"]["phase"] == "Running") };
        let started = tokio::time::timeout(
            Duration::from_secs(120),
            sandbox.cluster.wait(&key, &running, Duration::from_secs(2)),
        )
        .await;
        if !matches!(started, Ok(Ok(_))) {
            let pod = sandbox.read(&key).await;
            eprintln!(
                "skipped: pod shell on node {node} is not Running after 120s (can the node pull busybox:1.36?): {}",
                pod["status"]
            );
            return;
        }
        let pod = PodRef {
            namespace: sandbox.namespace.clone(),
            pod: "shell".to_owned(),
            container: None,
        };
        let argv =
            |words: &[&str]| -> Vec<String> { words.iter().map(|w| (*w).to_owned()).collect() };

        let output = sandbox
            .cluster
            .exec(
                &pod,
                &argv(&["sh", "-c", "echo out; echo err >&2; exit 3"]),
                Duration::from_secs(30),
            )
            .await
            .expect("exec");
        assert_eq!(
            output,
            CommandOutput {
                exit_code: 3,
                stdout: "out\n".to_owned(),
                stderr: "err\n".to_owned(),
            }
        );
        let in_container = PodRef {
            container: Some("shell".to_owned()),
            ..pod.clone()
        };
        let output = sandbox
            .cluster
            .exec(&in_container, &argv(&["true"]), Duration::from_secs(30))
            .await
            .expect("exec in a named container");
        assert_eq!(output, CommandOutput::default());
        let slow = sandbox
            .cluster
            .exec(&pod, &argv(&["sleep", "30"]), Duration::from_secs(2))
            .await;
        assert!(
            matches!(&slow, Err(EffectError::Unavailable(m)) if m.contains("no exit within")),
            "{slow:?}"
        );
        let no_container = PodRef {
            container: Some("nope".to_owned()),
            ..pod.clone()
        };
        let refused = sandbox
            .cluster
            .exec(&no_container, &argv(&["true"]), Duration::from_secs(30))
            .await;
        assert!(refused.is_err(), "{refused:?}");

        // The container writes its two lines as it starts; give its log a moment.
        let deadline = Instant::now() + Duration::from_secs(15);
        let log = loop {
            let log = sandbox
                .cluster
                .logs(&pod, LogOptions::default())
                .await
                .expect("logs");
            if log.contains("second") || Instant::now() >= deadline {
                break log;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        assert_eq!(log, "first\nsecond\n");
        let last = sandbox
            .cluster
            .logs(
                &in_container,
                LogOptions {
                    tail_lines: Some(1),
                    previous: false,
                },
            )
            .await
            .expect("the last line");
        assert_eq!(last, "second\n");
        let missing = sandbox
            .cluster
            .logs(
                &PodRef {
                    pod: "gone".to_owned(),
                    ..pod.clone()
                },
                LogOptions::default(),
            )
            .await;
        assert!(
            matches!(missing, Err(EffectError::NotFound(_))),
            "{missing:?}"
        );
        // The container never restarted: the API server refuses its previous log (400).
        let never_restarted = sandbox
            .cluster
            .logs(
                &in_container,
                LogOptions {
                    tail_lines: None,
                    previous: true,
                },
            )
            .await;
        assert!(
            matches!(&never_restarted, Err(EffectError::Invalid(m)) if m.contains("previous terminated container")),
            "{never_restarted:?}"
        );
    });
}

// --- who approves: TokenReview and SubjectAccessReview --------------------------------------------

/// What `runbook serve --kubernetes-approvers` asks of the API server: a ServiceAccount's token
/// (from the TokenRequest API) is reviewed to its user, and a SubjectAccessReview decides from a
/// RoleBinding whether that user may `approve` `runbooks.runbook.dev` of one name. The test's
/// credentials (cluster-admin) are the server's here.
#[test]
#[ignore = "needs cluster"]
fn a_service_account_token_is_reviewed_and_rbac_decides_who_may_approve() {
    in_sandbox("approvers", |sandbox| async move {
        let transport = sandbox.cluster.transport().clone();
        let namespace = sandbox.namespace.clone();
        for name in ["it-approver", "it-bystander"] {
            sandbox
                .create(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}}))
                .await;
        }
        sandbox
            .create(json!({
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": "it-runbook-approver"},
                "rules": [{"apiGroups": ["runbook.dev"], "resources": ["runbooks"], "verbs": ["approve"], "resourceNames": ["scale-api"]}],
            }))
            .await;
        sandbox
            .create(json!({
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": "it-runbook-approvers"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "it-runbook-approver"},
                "subjects": [{"kind": "ServiceAccount", "name": "it-approver", "namespace": namespace}],
            }))
            .await;
        let token = |name: &'static str| {
            let transport = transport.clone();
            let namespace = namespace.clone();
            async move {
                let call = Call::new(
                    Method::POST,
                    format!("/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token"),
                    format!("request a token for {name}"),
                )
                .json(
                    "application/json",
                    &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 600}}),
                )
                .retry(Retry::Once);
                let answer = transport.json(&call).await.expect("TokenRequest");
                answer["status"]["token"]
                    .as_str()
                    .expect("a token")
                    .to_owned()
            }
        };
        let approver = review_token(&transport, &token("it-approver").await)
            .await
            .expect("review")
            .expect("a ServiceAccount token is authenticated");
        assert_eq!(
            approver.username,
            format!("system:serviceaccount:{namespace}:it-approver")
        );
        assert!(
            approver
                .groups
                .iter()
                .any(|g| g == "system:serviceaccounts"),
            "{approver:?}"
        );
        assert_eq!(
            review_token(&transport, "not-a-token")
                .await
                .expect("review"),
            None
        );
        let attributes = |name| Attributes {
            verb: "approve",
            group: "runbook.dev",
            resource: "runbooks",
            namespace: Some(namespace.as_str()),
            name: Some(name),
        };
        // RBAC is eventually consistent for a moment after the binding is created.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let decision = may(&transport, &approver, &attributes("scale-api"))
                .await
                .expect("review");
            if decision.allowed {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the RoleBinding never allowed it: {decision:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert!(
            !may(&transport, &approver, &attributes("restart-api"))
                .await
                .expect("review")
                .allowed,
            "resourceNames limit the approver to scale-api"
        );
        let bystander = review_token(&transport, &token("it-bystander").await)
            .await
            .expect("review")
            .expect("authenticated");
        assert!(
            !may(&transport, &bystander, &attributes("scale-api"))
                .await
                .expect("review")
                .allowed
        );
    });
}

// --- serve's cluster state: a RunbookRun's status, and a run's journal in ConfigMaps ------------

#[path = "shared/journal_round_trip.rs"]
mod journal_round_trip;
#[path = "shared/status_subresource.rs"]
mod status_subresource;

const RUNBOOK_RUN_CRD: &str = "runbookruns.runbook.dev";

/// A minimal stand-in for `runbookruns.runbook.dev`: any spec and status, and a status
/// subresource.
fn runbook_run_crd() -> Json {
    let open = json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": RUNBOOK_RUN_CRD, "labels": {"runbook.dev/it": "true"}},
        "spec": {
            "group": "runbook.dev",
            "scope": "Namespaced",
            "names": {"plural": "runbookruns", "singular": "runbookrun", "kind": "RunbookRun", "listKind": "RunbookRunList", "shortNames": ["rbr"]},
            "versions": [{
                "name": "v1alpha1",
                "served": true,
                "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": open, "status": open}}},
                "subresources": {"status": {}},
            }],
        },
    })
}

impl Sandbox {
    /// The RunbookRun CRD: the one installed, left as it is, or else the stand-in, deleted at
    /// the end of the test.
    async fn runbook_runs(&self) {
        let key = cluster_key(
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            RUNBOOK_RUN_CRD,
        );
        match self.cluster.get(&key).await {
            Ok(installed)
                if !installed["metadata"]["deletionTimestamp"].is_string()
                    && installed["metadata"]["labels"][IT_LABEL] != "true" =>
            {
                eprintln!("using the installed CRD {RUNBOOK_RUN_CRD}; it is left as it is");
            }
            Ok(_) | Err(EffectError::NotFound(_)) => self.crd(runbook_run_crd()).await,
            Err(error) => panic!("get CRD {RUNBOOK_RUN_CRD}: {error}"),
        }
    }
}

#[test]
#[ignore = "needs cluster"]
fn a_runbook_runs_status_is_written_only_through_its_status_subresource() {
    in_sandbox("status", |sandbox| async move {
        sandbox.runbook_runs().await;
        status_subresource::check_runbook_run_status_subresource(
            &sandbox.transport,
            &sandbox.namespace,
            "run-1",
        )
        .await;
    });
}

#[test]
#[ignore = "needs cluster"]
fn a_journal_in_config_maps_rolls_over_is_read_back_and_taken_over() {
    in_sandbox("journal", |sandbox| async move {
        journal_round_trip::check_journal_round_trip(
            &sandbox.transport,
            &sandbox.namespace,
            "run-1",
        )
        .await;

        // Owned by its RunbookRun, the journal goes with it (where a garbage collector runs).
        sandbox.runbook_runs().await;
        let run = sandbox
            .create(json!({
                "apiVersion": "runbook.dev/v1alpha1",
                "kind": "RunbookRun",
                "metadata": {"name": "run-2"},
                "spec": {"runbook": "scale-api"},
            }))
            .await;
        let mut spec = JournalSpec::new(sandbox.namespace.clone(), "run-2");
        spec.run_uid = run["metadata"]["uid"].as_str().map(str::to_owned);
        let (store, _) = JournalStore::open(sandbox.transport.clone(), spec)
            .await
            .unwrap_or_else(|error| panic!("open: {error}"));
        store
            .append(&journal_round_trip::record(0))
            .await
            .unwrap_or_else(|error| panic!("append: {error}"));
        let chunk = sandbox.config_map_key("run-2-journal-0000");
        let stored = sandbox.read(&chunk).await;
        assert_eq!(
            stored["metadata"]["ownerReferences"][0]["uid"],
            run["metadata"]["uid"]
        );
        sandbox
            .cluster
            .delete(
                &sandbox.key("runbook.dev/v1alpha1", "RunbookRun", "run-2"),
                Some(Propagation::Background),
                None,
                DryRun::No,
            )
            .await
            .unwrap_or_else(|error| panic!("delete the run: {error}"));
        if !sandbox.gone_within(&chunk, Duration::from_secs(30)).await {
            eprintln!(
                "skipped: no garbage collector deleted the journal of a deleted run within 30s"
            );
        }
    });
}

// --- the Lease run lock -----------------------------------------------------------------------------

#[test]
#[ignore = "needs cluster"]
fn the_lease_lock_excludes_renews_releases_and_takes_over_an_expired_lease() {
    in_sandbox("lease", |sandbox| async move {
        let transport = sandbox.cluster.transport().clone();
        let name = lease_name("it-undo/Web");
        assert_eq!(name, "runbook-it-undo-web");
        let spec = |holder: &str| LeaseSpec {
            namespace: sandbox.namespace.clone(),
            name: name.clone(),
            holder: holder.to_owned(),
            duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(1),
        };
        let (first_holder, second_holder) = ("host-a/100/run-a", "host-b/200/run-b");
        let key = sandbox.key("coordination.k8s.io/v1", "Lease", &name);

        let first = LeaseLock::acquire(transport.clone(), spec(first_holder))
            .await
            .expect("acquire a free lease");
        let lease = sandbox.read(&key).await;
        assert_eq!(lease["spec"]["holderIdentity"], first_holder);
        assert_eq!(lease["spec"]["leaseDurationSeconds"], 15);
        assert_eq!(
            lease["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "runbook"
        );

        match LeaseLock::acquire(transport.clone(), spec(second_holder)).await {
            Err(error @ LeaseError::Held { .. }) => {
                let LeaseError::Held { ref holder, .. } = error else {
                    unreachable!()
                };
                assert_eq!(holder, first_holder);
                assert!(error.to_string().contains(first_holder), "{error}");
            }
            Err(error) => panic!("expected the lease to be held by the first holder: {error}"),
            Ok(_) => panic!("a second holder took a held lease"),
        }

        // Renewal moves renewTime forward while the lock is held.
        let renewed = renew_time(&lease);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let later = sandbox.read(&key).await;
        assert!(renew_time(&later) > renewed, "{lease} then {later}");
        assert_eq!(later["spec"]["holderIdentity"], first_holder);
        assert!(!first.is_lost());

        first.release().await.expect("release");
        assert!(sandbox.absent(&key).await, "release deletes the lease");
        let second = LeaseLock::acquire(transport.clone(), spec(second_holder))
            .await
            .expect("a released lease is free");
        second.release().await.expect("release");

        // A lease whose holder stopped renewing an hour ago is taken over.
        sandbox
            .create(json!({
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": name},
                "spec": {
                    "holderIdentity": "host-c/300/run-c",
                    "leaseDurationSeconds": 10,
                    "acquireTime": "2020-01-01T00:00:00.000000Z",
                    "renewTime": "2020-01-01T00:00:00.000000Z",
                    "leaseTransitions": 2,
                },
            }))
            .await;
        let taken = LeaseLock::acquire(transport.clone(), spec(first_holder))
            .await
            .expect("take over an expired lease");
        let lease = sandbox.read(&key).await;
        assert_eq!(lease["spec"]["holderIdentity"], first_holder);
        assert_eq!(lease["spec"]["leaseTransitions"], 3);
        let since_renewal = SystemTime::now()
            .duration_since(renew_time(&lease))
            .unwrap_or_default();
        assert!(since_renewal < Duration::from_secs(60), "{lease}");

        // Taken over behind its back (another runner that judged it expired): the holder's
        // next renewal (a merge patch carrying the version it holds) conflicts, it reads the
        // Lease again, and reports the lock lost.
        sandbox
            .cluster
            .patch(
                &key,
                PatchType::Merge,
                &json!({"spec": {"holderIdentity": second_holder}}),
                DryRun::No,
            )
            .await
            .expect("take the lease over");
        tokio::time::timeout(Duration::from_secs(10), taken.lost())
            .await
            .expect("the lock reports itself lost");
        assert!(taken.is_lost());
        taken.release().await.expect("releasing a lost lock");
        assert_eq!(
            sandbox.read(&key).await["spec"]["holderIdentity"],
            second_holder,
            "releasing a lost lock leaves the new holder's Lease alone"
        );

        // A change that leaves the holder as it is (a label someone adds) is no loss: the
        // renewal that conflicts reads the Lease again and renews from its version. Release
        // after another such change carries a version that is no longer current: the delete
        // conflicts, and release reads the Lease again and deletes it, still ours.
        let held = LeaseLock::acquire(transport.clone(), spec(second_holder))
            .await
            .expect("the holder the Lease names takes it again");
        let touched = sandbox
            .cluster
            .label(
                &key,
                &values(&[("runbook.dev/it-touched", Some("once"))]),
                DryRun::No,
            )
            .await
            .expect("label the Lease");
        // The renewal after the label conflicts; the one after that renews.
        tokio::time::sleep(Duration::from_millis(3500)).await;
        let later = sandbox.read(&key).await;
        assert!(!held.is_lost(), "{later}");
        assert_eq!(later["spec"]["holderIdentity"], second_holder);
        assert!(
            renew_time(&later) > renew_time(&touched),
            "renewed after the conflict: {touched} then {later}"
        );
        sandbox
            .cluster
            .label(
                &key,
                &values(&[("runbook.dev/it-touched", Some("twice"))]),
                DryRun::No,
            )
            .await
            .expect("label the Lease again");
        held.release().await.expect("release after a conflict");
        assert!(
            sandbox.absent(&key).await,
            "release deletes the Lease it still holds"
        );

        // Dropped without a release (a run whose task panicked): deleted in the background.
        let dropped = LeaseLock::acquire(transport.clone(), spec(first_holder))
            .await
            .expect("acquire a free lease");
        drop(dropped);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !sandbox.absent(&key).await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "a dropped lock's Lease is deleted"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        // Deleted behind its back: the next renewal finds it gone (404), the lock reports
        // itself lost, and the Lease is not created again.
        let deleted = LeaseLock::acquire(transport.clone(), spec(first_holder))
            .await
            .expect("acquire a free lease");
        sandbox
            .cluster
            .delete(&key, None, None, DryRun::No)
            .await
            .expect("delete the Lease");
        tokio::time::timeout(Duration::from_secs(10), deleted.lost())
            .await
            .expect("the lock reports itself lost");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(
            sandbox.absent(&key).await,
            "a lost lock does not create its Lease again"
        );
        deleted.release().await.expect("releasing a lost lock");
        assert!(sandbox.absent(&key).await);
    });
}

// --- runbooks through the executor --------------------------------------------------------------

/// HTTP is not part of these tests: every request fails.
struct NoHttp;

#[async_trait]
impl Http for NoHttp {
    async fn get(
        &self,
        url: &str,
        _query: &BTreeMap<String, String>,
        _headers: &BTreeMap<String, String>,
    ) -> EffectResult<HttpResponse> {
        Err(EffectError::Unavailable(format!(
            "no HTTP in the cluster tests: {url}"
        )))
    }
}

/// Keeps the notifications and pages sent.
#[derive(Default)]
struct Sent(Mutex<Vec<Notification>>);

#[async_trait]
impl Notifier for Sent {
    async fn send(&self, notification: &Notification) -> EffectResult<()> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(notification.clone());
        Ok(())
    }
}

struct Run {
    report: RunReport,
    sent: Arc<Sent>,
    records: Arc<Collect>,
}

impl Run {
    fn status(&self, step: &str) -> StepStatus {
        self.report
            .steps
            .iter()
            .find(|s| s.id == step)
            .map(|s| s.status.clone())
            .unwrap_or_else(|| panic!("no step {step}"))
    }

    /// How many intents to mutate the step journaled: one per request it sent, and one more
    /// when a patch's resourceVersion precondition failed and the object was read again.
    fn intents(&self, step: &str) -> usize {
        self.records
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(
                |record| matches!(&record.event, Event::StepIntent { step: s, .. } if s == step),
            )
            .count()
    }

    /// For assertion messages.
    fn describe(&self) -> String {
        format!(
            "{:?}: {}\nsteps: {:?}\nundos: {:?}",
            self.report.outcome, self.report.message, self.report.steps, self.report.undos
        )
    }
}

/// Runs `runbook` against the sandbox's cluster as `runbook run` does, with real processes
/// and clock, no HTTP, notifications kept, and every gate answered `answer`.
async fn run_runbook(
    sandbox: &Sandbox,
    catalog: Arc<Catalog>,
    runbook: Arc<Runbook>,
    sets: &[(&str, &str)],
    answer: Answer,
    dry_run: bool,
) -> Run {
    let sets: Vec<(String, String)> = sets
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect();
    let (bindings, errors) = runbook_core::bind::bind(&runbook, &sets, None);
    assert!(errors.is_empty(), "{errors:?}");
    let plan = Arc::new(runbook_core::compile::Compiler::compile(
        runbook, bindings, None,
    ));
    let sent = Arc::new(Sent::default());
    let records = Arc::new(Collect::default());
    let effects = Effects {
        cluster: sandbox.cluster.clone(),
        processes: Arc::new(LocalProcesses),
        http: Arc::new(NoHttp),
        notifier: sent.clone(),
        prompter: Arc::new(FixedAnswer(answer)),
        clock: Arc::new(SystemClock),
        reporter: records.clone(),
        observer: None,
    };
    let options = RunOptions {
        run_id: format!("it-{}", random_suffix()),
        dry_run,
        yes: false,
        parallelism: 4,
        namespace: sandbox.namespace.clone(),
        journal: None,
        catalog: Some(catalog),
        digest: String::new(),
        interrupt: None,
        roll_back_on_interrupt: false,
        resume: None,
        cluster: None,
    };
    let report = execute(plan, effects, options).await;
    Run {
        report,
        sent,
        records,
    }
}

/// A runbook written in the test, checked as `runbook validate` checks it.
fn inline_runbook(text: &str) -> (Arc<Catalog>, Arc<Runbook>) {
    runbook_core::testing::inline_runbook("it.yaml", text)
        .unwrap_or_else(|errors| panic!("{errors:?}"))
}

fn flux_crd(group: &str, version: &str, kind: &str, plural: &str) -> Json {
    let object = json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{group}"), "labels": {"runbook.dev/it": "true"}},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": plural, "singular": kind.to_lowercase(), "kind": kind, "listKind": format!("{kind}List")},
            "versions": [{
                "name": version,
                "served": true,
                "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": object, "status": object}}},
            }],
        },
    })
}

/// `runbooks/flux-suspend-resume/runbook.yaml` end to end: its steps are all Kubernetes (merge
/// patches, a gate, an annotation, a verify over listed objects), so it runs as written against
/// minimal Flux CRDs and a HelmRelease whose status says Ready, with no Flux controller.
#[test]
#[ignore = "needs cluster"]
fn the_flux_suspend_resume_runbook_runs_end_to_end() {
    in_sandbox("seed", |sandbox| async move {
        let crds = [
            flux_crd(
                "helm.toolkit.fluxcd.io",
                "v2",
                "HelmRelease",
                "helmreleases",
            ),
            flux_crd(
                "kustomize.toolkit.fluxcd.io",
                "v1",
                "Kustomization",
                "kustomizations",
            ),
        ];
        for crd in &crds {
            let name = crd["metadata"]["name"].as_str().unwrap_or_default();
            let key = cluster_key("apiextensions.k8s.io/v1", "CustomResourceDefinition", name);
            if let Ok(existing) = sandbox.cluster.get(&key).await {
                if existing["metadata"]["labels"][IT_LABEL] != "true" {
                    eprintln!("skipped: this cluster has Flux's own CRD {name}; the test needs a cluster without Flux");
                    return;
                }
            }
        }
        for crd in crds {
            sandbox.crd(crd).await;
        }
        sandbox
            .create(json!({
                "apiVersion": "helm.toolkit.fluxcd.io/v2",
                "kind": "HelmRelease",
                "metadata": {"name": "monitoring"},
                "spec": {
                    "interval": "10m",
                    "chart": {"spec": {
                        "chart": "kube-prometheus-stack",
                        "version": "57.2.0",
                        "sourceRef": {"kind": "HelmRepository", "name": "prometheus-community", "namespace": "flux-system"},
                    }},
                },
                "status": {
                    "observedGeneration": 1,
                    "conditions": [{"type": "Ready", "status": "True", "reason": "UpgradeSucceeded", "message": "Helm upgrade succeeded"}],
                },
            }))
            .await;
        let key = sandbox.key("helm.toolkit.fluxcd.io/v2", "HelmRelease", "monitoring");

        let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../runbooks");
        let (catalog, _, _) = runbook_core::load_catalog(&[directory]);
        let runbook = catalog
            .get("flux-suspend-resume")
            .cloned()
            .expect("runbooks/flux-suspend-resume/runbook.yaml loads and checks");
        let catalog = Arc::new(catalog);
        let sets = [
            ("name", "monitoring"),
            ("namespace", sandbox.namespace.as_str()),
        ];

        // Dry-run: every write is sent with dryRun=All; nothing changes.
        let dry = sandbox
            .unchanged(std::slice::from_ref(&key), || {
                run_runbook(
                    &sandbox,
                    catalog.clone(),
                    runbook.clone(),
                    &sets,
                    Answer::Yes,
                    true,
                )
            })
            .await;
        assert_eq!(dry.report.outcome, Outcome::Succeeded, "{}", dry.describe());
        assert!(
            matches!(dry.status("suspend-helmrelease"), StepStatus::DryRun(_)),
            "{}",
            dry.describe()
        );

        let run = run_runbook(
            &sandbox,
            catalog.clone(),
            runbook.clone(),
            &sets,
            Answer::Yes,
            false,
        )
        .await;
        assert_eq!(run.report.outcome, Outcome::Succeeded, "{}", run.describe());
        for (step, succeeded) in [
            ("suspend-helmrelease", true),
            ("suspend-kustomization", false),
            ("manual-work", true),
            ("resume-helmrelease", true),
            ("resume-kustomization", false),
            ("reconcile-helmrelease", true),
            ("reconcile-kustomization", false),
            ("verify", true),
        ] {
            let status = run.status(step);
            if succeeded {
                assert_eq!(status, StepStatus::Succeeded, "{step}: {}", run.describe());
            } else {
                assert!(
                    matches!(status, StepStatus::Skipped(_)),
                    "{step}: {}",
                    run.describe()
                );
            }
        }
        assert!(run.report.undos.is_empty());
        assert!(run.sent.0.lock().expect("sent").is_empty());
        // The resume started from the server's answer to the suspend, carrying its
        // resourceVersion: nothing wrote the HelmRelease in between (no Flux controller), so
        // the server took it as it was sent, one request and one intent.
        assert_eq!(run.intents("resume-helmrelease"), 1, "{}", run.describe());
        let release = sandbox.read(&key).await;
        assert_eq!(release["spec"]["suspend"], false, "{release}");
        let requested = release["metadata"]["annotations"]["reconcile.fluxcd.io/requestedAt"]
            .as_str()
            .unwrap_or_default();
        let requested_at = humantime::parse_rfc3339(requested)
            .unwrap_or_else(|e| panic!("requestedAt `{requested}`: {e}"));
        assert!(
            SystemTime::now()
                .duration_since(requested_at)
                .unwrap_or_default()
                < Duration::from_secs(300)
        );

        // No at the gate: it stops, leaving the HelmRelease suspended on purpose.
        let refused = run_runbook(
            &sandbox,
            catalog.clone(),
            runbook.clone(),
            &sets,
            Answer::No,
            false,
        )
        .await;
        assert_eq!(
            refused.report.outcome,
            Outcome::Stopped,
            "{}",
            refused.describe()
        );
        assert!(
            refused.report.message.contains("manual-work"),
            "{}",
            refused.describe()
        );
        assert_eq!(refused.status("resume-helmrelease"), StepStatus::NotRun);
        assert!(refused.report.undos.is_empty());
        assert_eq!(sandbox.read(&key).await["spec"]["suspend"], true);

        // Suspended now, by "someone else": the next run refuses before changing anything.
        let before = resource_version(&sandbox.read(&key).await);
        let again = run_runbook(&sandbox, catalog, runbook, &sets, Answer::Yes, false).await;
        assert_eq!(
            again.report.outcome,
            Outcome::PreconditionFailed,
            "{}",
            again.describe()
        );
        assert!(
            again.report.message.contains("not ours to lift"),
            "{}",
            again.describe()
        );
        assert_eq!(resource_version(&sandbox.read(&key).await), before);
    });
}

/// Every undoable action of one run, against the server: a later step fails, and the executor
/// undoes each completed step, newest first, from what it read before acting.
#[test]
#[ignore = "needs cluster"]
fn a_failed_run_is_undone_on_the_server_newest_first() {
    in_sandbox("undo", |sandbox| async move {
        let deployment = sandbox.deployment("web", 2).await;
        let existing = sandbox.config_map_key("existing");
        sandbox
            .cluster
            .apply(
                &config_map_manifest("existing", json!({}), json!({"mode": "old", "keep": "yes"})),
                DryRun::No,
            )
            .await
            .expect("apply the existing ConfigMap");
        let node = sandbox.node_name("undo");
        sandbox.fake_node(&node).await;
        sandbox.settle(std::slice::from_ref(&deployment)).await;
        let before = sandbox.read(&deployment).await;
        let existing_before = sandbox.read(&existing).await;

        let (catalog, runbook) = inline_runbook(
            r#"apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata: {name: it-undo}
spec:
  params:
    - {name: node, pattern: "[a-z0-9]([-a-z0-9]*[a-z0-9])?"}
  steps:
    - {id: scale, scale: {name: web, replicas: 3}}
    - {id: patch, patch: {kind: Deployment, name: web, patch: {spec: {minReadySeconds: 7}}}}
    - {id: annotate, annotate: {kind: Deployment, name: web, set: {runbook.dev/touched: "yes", team: null}}}
    - {id: label, label: {kind: Deployment, name: web, set: {tier: null, stage: canary}}}
    - {id: patch-again, patch: {kind: Deployment, name: web, patch: {spec: {revisionHistoryLimit: 4}}}}
    - id: create-config
      apply: {manifest: {apiVersion: v1, kind: ConfigMap, metadata: {name: created}, data: {a: "1"}}}
    - id: update-config
      apply: {manifest: {apiVersion: v1, kind: ConfigMap, metadata: {name: existing}, data: {mode: new}}}
    - {id: cordon, cordon: {node: "${params.node}"}}
    - {id: check, verify: "false", interval: 1s, timeout: 3s}
"#,
        );
        let run = run_runbook(
            &sandbox,
            catalog,
            runbook,
            &[("node", &node)],
            Answer::Yes,
            false,
        )
        .await;
        assert_eq!(
            run.report.outcome,
            Outcome::RolledBack,
            "{}",
            run.describe()
        );
        let undone: Vec<&str> = run.report.undos.iter().map(|u| u.step.as_str()).collect();
        assert_eq!(
            undone,
            [
                "cordon",
                "update-config",
                "create-config",
                "patch-again",
                "label",
                "annotate",
                "patch",
                "scale"
            ],
            "{}",
            run.describe()
        );
        // The undo of create-config deletes `created` where the run's reads look, the run's
        // namespace: the manifest names none, and the apply put it there too.
        for undo in &run.report.undos {
            assert!(undo.result.is_ok(), "{}: {:?}", undo.step, undo.result);
        }
        // patch-again started from the answer to `patch`, with its resourceVersion as a
        // precondition; annotate and label had changed the Deployment since, so the server
        // refused it (409), and the executor read the Deployment again and patched from that:
        // two intents, and an undo from what it read the second time.
        assert_eq!(run.intents("patch"), 1, "{}", run.describe());
        assert_eq!(run.intents("patch-again"), 2, "{}", run.describe());

        let after = sandbox.read(&deployment).await;
        assert_eq!(
            after["spec"], before["spec"],
            "replicas, minReadySeconds and revisionHistoryLimit restored"
        );
        let annotations = &after["metadata"]["annotations"];
        assert_eq!(annotations["team"], "web");
        assert!(
            annotations.get("runbook.dev/touched").is_none(),
            "{annotations}"
        );
        assert_eq!(after["metadata"]["labels"], before["metadata"]["labels"]);
        assert!(sandbox.absent(&sandbox.config_map_key("created")).await);
        assert_eq!(
            sandbox.read(&existing).await["data"],
            existing_before["data"]
        );
        assert!(!unschedulable(&sandbox.read(&node_key(&node)).await));
    });
}

/// The executor's `--dry-run` against the server: every action is sent with dryRun=All, the
/// server validates it, and no object changes.
#[test]
#[ignore = "needs cluster"]
fn a_dry_run_of_every_action_changes_nothing_on_the_server() {
    in_sandbox("dry-run", |sandbox| async move {
        let deployment = sandbox.deployment("web", 2).await;
        let existing = sandbox.config_map_key("existing");
        sandbox
            .cluster
            .apply(
                &config_map_manifest("existing", json!({}), json!({"mode": "old"})),
                DryRun::No,
            )
            .await
            .expect("apply the existing ConfigMap");
        let node = sandbox.node_name("dry");
        sandbox.pod_on("plain", &node, json!({})).await;
        sandbox.fake_node(&node).await;
        let watched = [
            deployment.clone(),
            existing.clone(),
            node_key(&node),
            sandbox.pod_key("plain"),
            sandbox.config_map_key("created"),
        ];

        let (catalog, runbook) = inline_runbook(
            r#"apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata: {name: it-dry-run}
spec:
  params:
    - {name: node, pattern: "[a-z0-9]([-a-z0-9]*[a-z0-9])?"}
  steps:
    - {id: scale, scale: {name: web, replicas: 5}}
    - {id: restart, restart: {name: web}, irreversible: true}
    - {id: annotate, annotate: {kind: Deployment, name: web, set: {runbook.dev/touched: "yes"}}}
    - {id: label, label: {kind: Deployment, name: web, set: {stage: canary}}}
    - {id: patch, patch: {kind: Deployment, name: web, patch: {spec: {paused: true}}}}
    - id: create-config
      apply: {manifest: {apiVersion: v1, kind: ConfigMap, metadata: {name: created}, data: {a: "1"}}}
    - id: update-config
      apply: {manifest: {apiVersion: v1, kind: ConfigMap, metadata: {name: existing}, data: {mode: new}}}
    - {id: cordon, cordon: {node: "${params.node}"}}
    - {id: drain, drain: {node: "${params.node}", evictionTimeout: 30s}}
    - {id: delete, delete: {kind: ConfigMap, name: existing}, irreversible: true}
"#,
        );
        let sets = [("node", node.as_str())];
        let run = sandbox
            .unchanged(&watched, || {
                run_runbook(
                    &sandbox,
                    catalog.clone(),
                    runbook.clone(),
                    &sets,
                    Answer::Yes,
                    true,
                )
            })
            .await;
        assert_eq!(run.report.outcome, Outcome::Succeeded, "{}", run.describe());
        for step in &run.report.steps {
            assert!(
                matches!(step.status, StepStatus::DryRun(_)),
                "{}: {}",
                step.id,
                run.describe()
            );
        }
        assert!(sandbox.absent(&sandbox.config_map_key("created")).await);
        assert!(!sandbox.absent(&sandbox.pod_key("plain")).await);
    });
}

// --- small helpers ------------------------------------------------------------------------------

fn random_suffix() -> String {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or_default();
    hasher.write_u128(nanos);
    hasher.write_u32(std::process::id());
    format!("{:08x}", hasher.finish() & 0xffff_ffff)
}

fn cluster_key(api_version: &str, kind: &str, name: &str) -> ObjectKey {
    ObjectKey {
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
        namespace: None,
        name: name.to_owned(),
    }
}

fn node_key(name: &str) -> ObjectKey {
    cluster_key("v1", "Node", name)
}

fn config_map_manifest(name: &str, metadata: Json, data: Json) -> Json {
    let mut metadata = metadata;
    metadata["name"] = json!(name);
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data})
}

/// Merges `extra` into `base`, objects key by key (a JSON merge patch without deletes).
fn merge(base: &mut Json, extra: Json) {
    match (base, extra) {
        (Json::Object(base), Json::Object(extra)) => {
            for (key, value) in extra {
                merge(base.entry(key).or_insert(Json::Null), value);
            }
        }
        (base, extra) => *base = extra,
    }
}

fn items(list: &Json) -> &[Json] {
    list["items"].as_array().map_or(&[], Vec::as_slice)
}

fn names(list: &Json) -> Vec<String> {
    sorted(
        items(list)
            .iter()
            .filter_map(|item| item["metadata"]["name"].as_str().map(str::to_owned))
            .collect(),
    )
}

fn sorted(mut values: Vec<String>) -> Vec<String> {
    values.sort();
    values
}

fn resource_version(object: &Json) -> String {
    object["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn generation(object: &Json) -> i64 {
    object["metadata"]["generation"]
        .as_i64()
        .unwrap_or_default()
}

fn unschedulable(node: &Json) -> bool {
    node["spec"]["unschedulable"].as_bool().unwrap_or(false)
}

fn has_condition(object: &Json, condition: &str) -> bool {
    object["status"]["conditions"]
        .as_array()
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c["type"] == condition && c["status"] == "True")
        })
}

fn template_annotation<'a>(object: &'a Json, name: &str) -> Option<&'a str> {
    object["spec"]["template"]["metadata"]["annotations"][name].as_str()
}

fn container_images(object: &Json) -> Vec<(&str, &str)> {
    object["spec"]["template"]["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or_default(),
                c["image"].as_str().unwrap_or_default(),
            )
        })
        .collect()
}

/// Whether `object`'s managedFields have an entry of `manager` with `operation` (`Apply` or
/// `Update`) through `subresource` (`""` for the object itself, `scale`, `status`).
fn managed_by(object: &Json, manager: &str, operation: &str, subresource: &str) -> bool {
    object["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|entry| {
            entry["manager"] == manager
                && entry["operation"] == operation
                && entry["subresource"].as_str().unwrap_or_default() == subresource
        })
}

fn renew_time(lease: &Json) -> SystemTime {
    let text = lease["spec"]["renewTime"].as_str().unwrap_or_default();
    humantime::parse_rfc3339_weak(text).unwrap_or_else(|e| panic!("renewTime `{text}`: {e}"))
}

fn values(pairs: &[(&str, Option<&str>)]) -> BTreeMap<String, Option<String>> {
    pairs
        .iter()
        .map(|(key, value)| ((*key).to_owned(), value.map(str::to_owned)))
        .collect()
}

/// The merge patch `annotate`/`label` send, from which the executor computes their inverse.
fn metadata_body(field: &str, set: &BTreeMap<String, Option<String>>) -> Json {
    let values: serde_json::Map<String, Json> = set
        .iter()
        .map(|(key, value)| (key.clone(), value.clone().map_or(Json::Null, Json::String)))
        .collect();
    json!({"metadata": {field: values}})
}

/// The previous object as the executor applies it back: without what the server sets.
fn without_server_fields(previous: &Json) -> Json {
    let mut previous = previous.clone();
    if let Some(metadata) = previous["metadata"].as_object_mut() {
        for field in [
            "resourceVersion",
            "managedFields",
            "uid",
            "creationTimestamp",
            "generation",
        ] {
            metadata.remove(field);
        }
    }
    if let Some(object) = previous.as_object_mut() {
        object.remove("status");
    }
    previous
}

/// Issue 15, items 7 and 8, on a real API server: what the simulator and the fake refuse, it
/// refuses too, with the words the engine's table (`runbook_core::api_rules`) repeats. A
/// string for `replicas` and a number for an annotation fail a patch with 422; a Job's template
/// and a Service's cluster IP cannot change; a claim cannot shrink (on a claim that is not
/// bound, the server also says its spec is immutable: either way, nothing changes).
#[test]
#[ignore = "needs cluster"]
fn the_api_server_refuses_wrong_types_and_changes_an_undo_cannot_make() {
    in_sandbox("api-rules", |sandbox| async move {
        let cluster = &sandbox.cluster;
        let web = sandbox.deployment("web", 1).await;
        let error = cluster
            .patch(
                &web,
                PatchType::Merge,
                &json!({"spec": {"replicas": "3"}}),
                DryRun::No,
            )
            .await
            .expect_err("a string for replicas");
        assert!(
            matches!(&error, EffectError::Invalid(m) if m.contains("json: cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type int32") && m.contains("(HTTP 422)")),
            "{error:?}"
        );
        let error = cluster
            .patch(
                &web,
                PatchType::Merge,
                &json!({"metadata": {"annotations": {"size": 3}}}),
                DryRun::No,
            )
            .await
            .expect_err("a number for an annotation");
        assert!(
            matches!(&error, EffectError::Invalid(m) if m.contains("json: cannot unmarshal number into Go struct field ObjectMeta.metadata.annotations of type string")),
            "{error:?}"
        );
        assert_eq!(sandbox.read(&web).await["spec"]["replicas"], 1);

        sandbox
            .create(json!({
                "apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": "migrate"},
                "spec": {"suspend": true, "template": {"spec": {
                    "restartPolicy": "Never",
                    "nodeSelector": {"runbook.dev/it-unschedulable": "true"},
                    "containers": [{"name": "migrate", "image": PAUSE_IMAGE}],
                }}},
            }))
            .await;
        let job = sandbox.key("batch/v1", "Job", "migrate");
        let image = json!({"spec": {"template": {"spec": {"containers": [{"name": "migrate", "image": "registry.k8s.io/pause:3.9"}]}}}});
        let error = cluster
            .patch(&job, PatchType::Strategic, &image, DryRun::No)
            .await
            .expect_err("a Job's template is immutable");
        assert!(
            matches!(&error, EffectError::Invalid(m) if m.contains("Job.batch \"migrate\" is invalid: spec.template: Invalid value: ") && m.contains("field is immutable")),
            "{error:?}"
        );

        let service = sandbox
            .create(json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "web"},
                "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
            }))
            .await;
        let allocated = service["spec"]["clusterIP"]
            .as_str()
            .expect("an allocated IP")
            .to_owned();
        let other = if allocated.ends_with(".250") {
            allocated.replace(".250", ".251")
        } else {
            let (prefix, _) = allocated.rsplit_once('.').expect("an IPv4 address");
            format!("{prefix}.250")
        };
        let error = cluster
            .patch(
                &sandbox.key("v1", "Service", "web"),
                PatchType::Merge,
                &json!({"spec": {"clusterIP": other, "clusterIPs": [other]}}),
                DryRun::No,
            )
            .await
            .expect_err("a cluster IP is kept");
        assert!(
            matches!(&error, EffectError::Invalid(m) if m.contains("Service \"web\" is invalid: spec.clusterIPs[0]: Invalid value: []string{") && m.contains("may not change once set")),
            "{error:?}"
        );

        sandbox
            .create(json!({
                "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "100Gi"}}},
            }))
            .await;
        let claim = sandbox.key("v1", "PersistentVolumeClaim", "data");
        let error = cluster
            .patch(
                &claim,
                PatchType::Merge,
                &json!({"spec": {"resources": {"requests": {"storage": "50Gi"}}}}),
                DryRun::No,
            )
            .await
            .expect_err("a claim cannot shrink");
        assert!(
            matches!(&error, EffectError::Invalid(m) if m.contains("PersistentVolumeClaim \"data\" is invalid")),
            "{error:?}"
        );
        assert_eq!(
            sandbox.read(&claim).await["spec"]["resources"]["requests"]["storage"],
            "100Gi"
        );
    });
}
