//! The live cluster: [`KubeCluster`] implements the executor's [`Cluster`] boundary against a
//! real API server through `kube`'s client, with the same semantics as the simulated cluster
//! and as kubectl.
//!
//! - Every kind is reached through discovery, so custom resources work like built-ins.
//! - Every write carries `dryRun=All` in a dry-run, so admission webhooks, validation and RBAC
//!   run and nothing is persisted.
//! - Every call has a timeout; 429, 5xx and lost connections are retried with back-off, and a
//!   409 conflict after re-reading, a bounded number of times ([`transport`]).
//! - `wait` watches the object instead of polling; `drain` evicts through the Eviction API.
//!
//! [`connect`] builds the client from a kubeconfig or the pod's service account;
//! [`lease`] is the run lock held in the cluster; for `serve --cluster-state`, [`runs`] keeps
//! the runs as `RunbookRun` objects with their admission ledgers, and [`journal_store`] a
//! run's journal through the API (chunked into ConfigMaps), so another replica can resume it.

pub mod auth;
pub mod connect;
mod discovery;
mod drain;
pub mod journal_store;
pub mod lease;
mod pod;
pub mod runs;
pub mod transport;

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures::StreamExt as _;
use http::Method;
use http_body_util::BodyExt as _;
use runbook_core::document::{PatchType, Propagation};
use runbook_core::effects::{
    Cluster, CommandOutput, DrainOptions, DrainReport, DryRun, EffectError, EffectResult,
    ListQuery, LogOptions, ObjectKey, PodRef, WaitCondition,
};
use serde_json::{json, Value as Json};

pub use connect::{connect, ConnectOptions, Connection};
use discovery::{Discovery, Resource};
pub use journal_store::{BlockingJournalStore, JournalSpec, JournalStore, JournalStoreError};
pub use transport::Policy;
use transport::{Call, Retry, Transport};

/// Our field manager for server-side apply (and the manager of our other writes).
pub const FIELD_MANAGER: &str = "runbook";

const MERGE: &str = "application/merge-patch+json";
const STRATEGIC: &str = "application/strategic-merge-patch+json";
const JSON_PATCH: &str = "application/json-patch+json";
const APPLY: &str = "application/apply-patch+yaml";
const JSON: &str = "application/json";

/// How the live cluster behaves, beyond the connection.
#[derive(Clone, Debug)]
pub struct KubeOptions {
    pub policy: Policy,
    /// The namespace for namespaced objects that name none (an applied manifest without
    /// `metadata.namespace`).
    pub namespace: String,
    /// How long to wait between eviction attempts a PodDisruptionBudget refuses (kubectl: 5s),
    /// and between checks that an evicted pod is gone.
    pub eviction_retry: Duration,
}

impl Default for KubeOptions {
    fn default() -> Self {
        Self {
            policy: Policy::default(),
            namespace: "default".to_owned(),
            eviction_retry: Duration::from_secs(5),
        }
    }
}

/// The Kubernetes API as the executor needs it.
pub struct KubeCluster {
    transport: Transport,
    discovery: Discovery,
    options: KubeOptions,
}

impl KubeCluster {
    pub fn new(client: kube::Client, options: KubeOptions) -> Self {
        Self {
            transport: Transport::new(client, options.policy.clone()),
            discovery: Discovery::default(),
            options,
        }
    }

    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    async fn resource(&self, api_version: &str, kind: &str) -> EffectResult<Resource> {
        self.discovery
            .resolve(&self.transport, api_version, kind)
            .await
    }

    /// The object's URL, with its names checked to be path segments.
    async fn object_path(&self, key: &ObjectKey) -> EffectResult<(Resource, String)> {
        let (resource, namespace) = self.located(key).await?;
        let path = format!(
            "{}/{}",
            resource.collection(namespace.as_deref()),
            segment(&key.name, "name")?
        );
        Ok((resource, path))
    }

    /// The key's kind and the namespace it lives in: its own, the default one for a
    /// namespaced kind that names none, or none for a cluster-scoped kind.
    async fn located(&self, key: &ObjectKey) -> EffectResult<(Resource, Option<String>)> {
        let resource = self.resource(&key.api_version, &key.kind).await?;
        let namespace = match (resource.namespaced, key.namespace.as_deref()) {
            (true, Some(namespace)) => Some(segment(namespace, "namespace")?.to_owned()),
            (true, None) => Some(segment(&self.options.namespace, "namespace")?.to_owned()),
            (false, _) => None,
        };
        Ok((resource, namespace))
    }

    async fn read(&self, key: &ObjectKey) -> EffectResult<Json> {
        let (_, path) = self.object_path(key).await?;
        self.transport
            .json(&Call::new(Method::GET, path, format!("get {key}")))
            .await
    }

    async fn patch_path(
        &self,
        key: &ObjectKey,
        path: String,
        content_type: &'static str,
        body: &Json,
        dry_run: DryRun,
        what: String,
    ) -> EffectResult<Json> {
        let retry = if content_type == JSON_PATCH {
            Retry::Once
        } else if body.pointer("/metadata/resourceVersion").is_some() {
            // A precondition that failed fails every time: the caller reads again.
            Retry::NoConflict
        } else {
            Retry::Idempotent
        };
        // Our own field manager on every patch, as on apply, so managedFields say runbook
        // changed it. (The server keys managers by name and operation: a later apply by
        // runbook of a field a patch set still conflicts with runbook's Update.)
        let call = Call::new(
            Method::PATCH,
            with_query(
                &path,
                &write_query(dry_run, &[("fieldManager", FIELD_MANAGER.to_owned())]),
            ),
            what,
        )
        .json(content_type, body)
        .retry(retry);
        // A 409 means the object moved under us: read it again (which also tells whether it
        // is still there) before sending the change again.
        self.transport
            .json_rereading(&call, || async {
                let _ = self.read(key).await;
            })
            .await
    }

    /// Watches one object from `resource_version`; returns the object once `ready` holds, or
    /// `None` when the watch ended (timeout, 410 Gone, a dropped connection) and the caller
    /// should read again and watch anew.
    async fn watch_until(
        &self,
        key: &ObjectKey,
        resource_version: &str,
        ready: &WaitCondition,
    ) -> EffectResult<Option<Json>> {
        let (resource, namespace) = self.located(key).await?;
        let query = [
            ("watch", "true".to_owned()),
            ("fieldSelector", format!("metadata.name={}", key.name)),
            ("resourceVersion", resource_version.to_owned()),
            ("allowWatchBookmarks", "true".to_owned()),
            ("timeoutSeconds", "60".to_owned()),
        ];
        let uri = with_query(&resource.collection(namespace.as_deref()), &query);
        let request = http::Request::builder()
            .method(Method::GET)
            .uri(&uri)
            .header(http::header::ACCEPT, JSON)
            .body(kube::client::Body::empty())
            .map_err(|e| EffectError::Other(format!("watch {key}: {e}")))?;
        let response = tokio::time::timeout(
            self.options.policy.call_timeout,
            self.transport.client().send(request),
        )
        .await
        .map_err(|_| EffectError::Unavailable(format!("watch {key}: no answer")))?
        .map_err(|e| {
            EffectError::Unavailable(format!("watch {key}: {}", transport::root_cause(&e)))
        })?;
        if !response.status().is_success() {
            let status = response.status().as_u16();
            return Err(EffectError::Other(format!(
                "watch {key}: the API server answered HTTP {status}"
            )));
        }
        let mut body = response.into_body().into_data_stream();
        let mut pending: Vec<u8> = Vec::new();
        // The server ends the watch after timeoutSeconds; a silent connection is given a
        // little longer before it is read again.
        let idle = Duration::from_secs(75);
        loop {
            let chunk = match tokio::time::timeout(idle, body.next()).await {
                Ok(Some(Ok(chunk))) => chunk,
                Ok(Some(Err(error))) => {
                    tracing::debug!(%key, error = %transport::root_cause(&error), "Watch dropped.");
                    return Ok(None);
                }
                Ok(None) | Err(_) => return Ok(None),
            };
            pending.extend_from_slice(&chunk);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let Ok(event) = serde_json::from_slice::<Json>(&line) else {
                    continue;
                };
                match event.get("type").and_then(Json::as_str) {
                    Some("ADDED" | "MODIFIED") => {
                        let object = event.get("object").cloned().unwrap_or(Json::Null);
                        if ready(&object).map_err(EffectError::Invalid)? {
                            return Ok(Some(object));
                        }
                    }
                    // 410 Gone (the version is too old) and other errors: read again.
                    Some("ERROR") => return Ok(None),
                    _ => {}
                }
            }
        }
    }
}

#[async_trait]
impl Cluster for KubeCluster {
    async fn get(&self, key: &ObjectKey) -> EffectResult<Json> {
        self.read(key).await
    }

    async fn list(&self, query: &ListQuery) -> EffectResult<Json> {
        let resource = self.resource(&query.api_version, &query.kind).await?;
        let namespace = match &query.namespace {
            Some(namespace) => Some(segment(namespace, "namespace")?),
            None => None,
        };
        let mut params = Vec::new();
        if let Some(selector) = &query.label_selector {
            params.push(("labelSelector", selector.clone()));
        }
        if let Some(selector) = &query.field_selector {
            params.push(("fieldSelector", selector.clone()));
        }
        let uri = with_query(&resource.collection(namespace), &params);
        let what = match namespace {
            Some(namespace) => format!("list {} in {namespace}", query.kind),
            None => format!("list {}", query.kind),
        };
        let mut list = self
            .transport
            .json(&Call::new(Method::GET, uri, what))
            .await?;
        // The API server leaves kind and apiVersion off list items; put them back so a fact
        // reads the same as a get (and as the simulated cluster).
        if let Some(items) = list.get_mut("items").and_then(Json::as_array_mut) {
            for item in items {
                if let Some(object) = item.as_object_mut() {
                    object
                        .entry("apiVersion")
                        .or_insert_with(|| json!(query.api_version));
                    object.entry("kind").or_insert_with(|| json!(query.kind));
                }
            }
        }
        Ok(list)
    }

    async fn scale(&self, key: &ObjectKey, replicas: i64, dry_run: DryRun) -> EffectResult<Json> {
        let (resource, path) = self.object_path(key).await?;
        if !resource.subresources.iter().any(|s| s == "scale") {
            return Err(EffectError::Invalid(format!(
                "{key} cannot be scaled: the API server has no scale subresource for {}",
                resource.plural
            )));
        }
        self.patch_path(
            key,
            format!("{path}/scale"),
            MERGE,
            &json!({"spec": {"replicas": replicas}}),
            dry_run,
            format!("scale {key} to {replicas}"),
        )
        .await
    }

    async fn restart(
        &self,
        key: &ObjectKey,
        at: SystemTime,
        dry_run: DryRun,
    ) -> EffectResult<Json> {
        let (resource, path) = self.object_path(key).await?;
        // As `kubectl rollout restart`: a strategic merge patch of the pod template's
        // annotation (custom resources take a merge patch).
        let content_type = if matches!(resource.api_version.as_str(), "apps/v1" | "v1" | "batch/v1")
        {
            STRATEGIC
        } else {
            MERGE
        };
        let body = json!({"spec": {"template": {"metadata": {"annotations": {
            "kubectl.kubernetes.io/restartedAt": humantime::format_rfc3339_seconds(at).to_string()
        }}}}});
        self.patch_path(
            key,
            path,
            content_type,
            &body,
            dry_run,
            format!("restart {key}"),
        )
        .await
    }

    async fn patch(
        &self,
        key: &ObjectKey,
        patch_type: PatchType,
        body: &Json,
        dry_run: DryRun,
    ) -> EffectResult<Json> {
        let (_, path) = self.object_path(key).await?;
        let content_type = match patch_type {
            PatchType::Merge => MERGE,
            PatchType::Strategic => STRATEGIC,
            PatchType::Json => JSON_PATCH,
        };
        self.patch_path(
            key,
            path,
            content_type,
            body,
            dry_run,
            format!("patch {key}"),
        )
        .await
    }

    async fn apply(&self, manifest: &Json, dry_run: DryRun) -> EffectResult<Json> {
        let text = |pointer: &str| manifest.pointer(pointer).and_then(Json::as_str);
        let (Some(api_version), Some(kind), Some(name)) =
            (text("/apiVersion"), text("/kind"), text("/metadata/name"))
        else {
            return Err(EffectError::Invalid(
                "apply: the manifest needs apiVersion, kind and metadata.name".to_owned(),
            ));
        };
        let resource = self.resource(api_version, kind).await?;
        let mut manifest = manifest.clone();
        let namespace = if resource.namespaced {
            let namespace = text("/metadata/namespace")
                .unwrap_or(&self.options.namespace)
                .to_owned();
            manifest["metadata"]["namespace"] = json!(namespace);
            Some(namespace)
        } else {
            None
        };
        let key = ObjectKey {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
            namespace: namespace.clone(),
            name: name.to_owned(),
        };
        let (_, path) = self.object_path(&key).await?;
        // Server-side apply under our own field manager. No force: a field another manager
        // owns is a conflict to report, not to take over silently (as `kubectl apply
        // --server-side` without `--force-conflicts`).
        let query = write_query(
            dry_run,
            &[
                ("fieldManager", FIELD_MANAGER.to_owned()),
                ("force", "false".to_owned()),
            ],
        );
        let call = Call::new(
            Method::PATCH,
            with_query(&path, &query),
            format!("apply {key}"),
        )
        .json(APPLY, &manifest);
        self.transport.json(&call).await
    }

    async fn delete(
        &self,
        key: &ObjectKey,
        propagation: Option<Propagation>,
        grace_period_seconds: Option<u32>,
        dry_run: DryRun,
    ) -> EffectResult<()> {
        let (_, path) = self.object_path(key).await?;
        let mut options = json!({"apiVersion": "v1", "kind": "DeleteOptions"});
        if let Some(propagation) = propagation {
            options["propagationPolicy"] = json!(match propagation {
                Propagation::Foreground => "Foreground",
                Propagation::Background => "Background",
                Propagation::Orphan => "Orphan",
            });
        }
        if let Some(seconds) = grace_period_seconds {
            options["gracePeriodSeconds"] = json!(seconds);
        }
        if dry_run.is_dry() {
            options["dryRun"] = json!(["All"]);
        }
        let call = Call::new(
            Method::DELETE,
            with_query(&path, &write_query(dry_run, &[])),
            format!("delete {key}"),
        )
        .json(JSON, &options);
        self.transport.send(&call).await.map(drop)
    }

    async fn set_unschedulable(
        &self,
        node: &str,
        unschedulable: bool,
        dry_run: DryRun,
    ) -> EffectResult<Json> {
        let node = segment(node, "node")?;
        // As kubectl: cordon sets the field; uncordon removes it.
        let value = if unschedulable {
            json!(true)
        } else {
            Json::Null
        };
        let key = node_key(node);
        let verb = if unschedulable { "cordon" } else { "uncordon" };
        self.patch_path(
            &key,
            format!("/api/v1/nodes/{node}"),
            STRATEGIC,
            &json!({"spec": {"unschedulable": value}}),
            dry_run,
            format!("{verb} node {node}"),
        )
        .await
    }

    async fn drain(
        &self,
        node: &str,
        options: &DrainOptions,
        dry_run: DryRun,
    ) -> EffectResult<DrainReport> {
        self.drain_node(node, options, dry_run).await
    }

    async fn exec(
        &self,
        pod: &PodRef,
        argv: &[String],
        timeout: Duration,
    ) -> EffectResult<CommandOutput> {
        self.exec_in_pod(pod, argv, timeout).await
    }

    async fn logs(&self, pod: &PodRef, options: LogOptions) -> EffectResult<String> {
        self.pod_logs(pod, options).await
    }

    /// Reads the object, then watches it until `ready` holds, as `kubectl wait` does: the
    /// read is a list of the one object, whose version (the collection's, current) a watch can
    /// always start from; an object's own version may be older than the server's watch
    /// window and get 410 Gone. A watch that ends is opened again from a fresh read after a
    /// short pause; if the watch itself is refused (no `watch` permission), it reads every
    /// `interval` instead. The caller's timeout bounds it.
    async fn wait(
        &self,
        key: &ObjectKey,
        ready: &WaitCondition,
        interval: Duration,
    ) -> EffectResult<Json> {
        let pause = interval.min(Duration::from_secs(1));
        let (_, namespace) = self.located(key).await?;
        loop {
            let list = self
                .list(&ListQuery {
                    api_version: key.api_version.clone(),
                    kind: key.kind.clone(),
                    namespace: namespace.clone(),
                    label_selector: None,
                    field_selector: Some(format!("metadata.name={}", key.name)),
                })
                .await?;
            let Some(object) = list
                .get("items")
                .and_then(Json::as_array)
                .and_then(|items| items.first())
                .cloned()
            else {
                return Err(EffectError::NotFound(format!("{key} does not exist")));
            };
            if ready(&object).map_err(EffectError::Invalid)? {
                return Ok(object);
            }
            let version = list
                .pointer("/metadata/resourceVersion")
                .and_then(Json::as_str)
                .unwrap_or_default()
                .to_owned();
            match self.watch_until(key, &version, ready).await {
                Ok(Some(object)) => return Ok(object),
                Ok(None) => tokio::time::sleep(pause).await,
                Err(EffectError::Invalid(message)) => return Err(EffectError::Invalid(message)),
                Err(error) => {
                    tracing::debug!(%key, %error, "Cannot watch; polling instead.");
                    tokio::time::sleep(interval).await;
                }
            }
        }
    }
}

fn node_key(node: &str) -> ObjectKey {
    ObjectKey {
        api_version: "v1".to_owned(),
        kind: "Node".to_owned(),
        namespace: None,
        name: node.to_owned(),
    }
}

/// `dryRun=All` on a dry-run write, then the other parameters.
fn write_query(dry_run: DryRun, rest: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    let mut query = Vec::new();
    if dry_run.is_dry() {
        query.push(("dryRun", "All".to_owned()));
    }
    query.extend(rest.iter().cloned());
    query
}

fn with_query(path: &str, query: &[(&str, String)]) -> String {
    if query.is_empty() {
        return path.to_owned();
    }
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for (name, value) in query {
        serializer.append_pair(name, value);
    }
    format!("{path}?{}", serializer.finish())
}

/// A name that goes into a URL path: one segment, nothing that could reach another path.
/// Kubernetes names are DNS labels or subdomains, so this refuses nothing real.
fn segment<'a>(value: &'a str, what: &str) -> EffectResult<&'a str> {
    let valid = !value.is_empty()
        && value.len() <= 253
        && value != "."
        && value != ".."
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':'));
    if valid {
        Ok(value)
    } else {
        Err(EffectError::Invalid(format!(
            "{what} `{value}` is not a Kubernetes name (lowercase letters, digits, `-` and `.`)"
        )))
    }
}

/// A `kube` error as ours: the API server's status when there is one, else the root cause.
fn kube_error(what: &str, error: kube::Error) -> EffectError {
    match error {
        kube::Error::Api(status) => transport::Failure::from_status(&status).into_error(what, 1),
        other => EffectError::Unavailable(format!("{what}: {}", transport::root_cause(&other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_would_leave_their_path_segment_are_refused() {
        assert!(segment("api-7d9f.x", "name").is_ok());
        for bad in ["", "..", "a/b", "a?watch=true", "a%2Fb", "a b"] {
            assert!(
                matches!(segment(bad, "name"), Err(EffectError::Invalid(_))),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn queries_are_encoded() {
        assert_eq!(
            with_query(
                "/api/v1/pods",
                &[("labelSelector", "app in (a,b),tier!=db".to_owned())]
            ),
            "/api/v1/pods?labelSelector=app+in+%28a%2Cb%29%2Ctier%21%3Ddb"
        );
        assert_eq!(
            with_query("/x", &write_query(DryRun::Server, &[])),
            "/x?dryRun=All"
        );
    }
}
