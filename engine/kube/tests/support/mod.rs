//! A fake Kubernetes API server that speaks real HTTP on a local port, so the live cluster
//! code is exercised through `kube`'s client exactly as against a real one.
//!
//! It serves discovery documents, keeps an in-memory object store with the API server's
//! semantics (resourceVersion on every write, optimistic concurrency, `dryRun=All`, the four
//! patch content types, label and field selectors, watches, the scale subresource, evictions,
//! logs, and pod exec over WebSocket), answers errors with real `metav1.Status` bodies, and
//! records every request. A test seeds objects and scripts faults ("the next N requests to
//! this path answer 503", "never answer"); nothing else about the tests is built in, so a
//! benchmark can drive it too.
//!
//! Simplifications, each one that no caller here depends on: strategic merge patch is a JSON
//! merge patch (RFC 7386); server-side apply merges the body into the object and keeps no
//! managed fields; an apply body must be JSON (which is YAML); deletion is immediate
//! (no finalizers, no grace period); evictions succeed unless a fault says otherwise.

#![allow(dead_code)] // Each test binary uses its own part.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::http::{header, request::Parts, Response, StatusCode};
use futures::SinkExt as _;
use serde_json::{json, Value as Json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{self as websocket, protocol::Role};

/// What `/version` reports.
pub const VERSION: &str = "v1.33.1";

pub const MERGE: &str = "application/merge-patch+json";
pub const STRATEGIC: &str = "application/strategic-merge-patch+json";
pub const JSON_PATCH: &str = "application/json-patch+json";
pub const APPLY: &str = "application/apply-patch+yaml";

/// One resource the fake serves, as its discovery document lists it.
#[derive(Clone, Copy, Debug)]
pub struct ResourceType {
    pub api_version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub subresources: &'static [&'static str],
    /// Defined by a CustomResourceDefinition: no strategic merge patch, and list items keep
    /// their kind and apiVersion.
    pub custom: bool,
}

const fn builtin(
    api_version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    subresources: &'static [&'static str],
) -> ResourceType {
    ResourceType {
        api_version,
        plural,
        // Every kind here has a plural that is its singular plus `s`.
        singular: plural.split_at(plural.len() - 1).0,
        kind,
        namespaced,
        short_names,
        subresources,
        custom: false,
    }
}

#[rustfmt::skip]
pub const RESOURCES: &[ResourceType] = &[
    builtin("v1", "pods", "Pod", true, &["po"], &["eviction", "exec", "log", "status"]),
    builtin("v1", "nodes", "Node", false, &["no"], &["status"]),
    builtin("v1", "namespaces", "Namespace", false, &["ns"], &["status"]),
    builtin("v1", "configmaps", "ConfigMap", true, &["cm"], &[]),
    builtin("v1", "secrets", "Secret", true, &[], &[]),
    builtin("v1", "services", "Service", true, &["svc"], &["status"]),
    builtin("apps/v1", "deployments", "Deployment", true, &["deploy"], &["scale", "status"]),
    builtin("apps/v1", "statefulsets", "StatefulSet", true, &["sts"], &["scale", "status"]),
    builtin("apps/v1", "daemonsets", "DaemonSet", true, &["ds"], &["status"]),
    builtin("coordination.k8s.io/v1", "leases", "Lease", true, &[], &[]),
    builtin("policy/v1", "poddisruptionbudgets", "PodDisruptionBudget", true, &["pdb"], &["status"]),
    builtin("batch/v1", "jobs", "Job", true, &[], &["status"]),
    ResourceType {
        custom: true,
        ..builtin("example.com/v1", "widgets", "Widget", true, &[], &["status"])
    },
];

const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

fn by_plural(api_version: &str, plural: &str) -> Option<&'static ResourceType> {
    RESOURCES
        .iter()
        .find(|r| r.api_version == api_version && r.plural == plural)
}

pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static ResourceType> {
    RESOURCES
        .iter()
        .find(|r| r.api_version == api_version && r.kind == kind)
}

impl ResourceType {
    fn group(&self) -> &'static str {
        self.api_version
            .split_once('/')
            .map_or("", |(group, _)| group)
    }

    /// `deployments.apps`, or `pods` in the core group: how the server names it in messages.
    fn group_resource(&self) -> String {
        match self.group() {
            "" => self.plural.to_owned(),
            group => format!("{}.{group}", self.plural),
        }
    }

    /// `Deployment.apps`, for validation messages.
    fn group_kind(&self) -> String {
        match self.group() {
            "" => self.kind.to_owned(),
            group => format!("{}.{group}", self.kind),
        }
    }

    /// Whether the server counts spec changes in `metadata.generation` (workloads and custom
    /// resources do; pods, nodes, config maps and leases do not).
    fn has_generation(&self) -> bool {
        self.custom || self.api_version != "v1" && self.plural != "leases"
    }

    fn has(&self, subresource: &str) -> bool {
        self.subresources.contains(&subresource)
    }
}

/// The APIResourceList for one group version (`/api/v1`, `/apis/apps/v1`).
fn resource_list(api_version: &str) -> Option<Json> {
    let mut entries = Vec::new();
    for resource in RESOURCES.iter().filter(|r| r.api_version == api_version) {
        let mut entry = json!({
            "name": resource.plural,
            "singularName": resource.singular,
            "namespaced": resource.namespaced,
            "kind": resource.kind,
            "verbs": VERBS,
        });
        if !resource.short_names.is_empty() {
            entry["shortNames"] = json!(resource.short_names);
        }
        entries.push(entry);
        for sub in resource.subresources {
            let (group_version, kind, verbs): (Option<(&str, &str)>, &str, &[&str]) = match *sub {
                "scale" => (
                    Some(("autoscaling", "v1")),
                    "Scale",
                    &["get", "patch", "update"],
                ),
                "eviction" => (Some(("policy", "v1")), "Eviction", &["create"]),
                "exec" => (None, "PodExecOptions", &["create", "get"]),
                "log" => (None, "Pod", &["get"]),
                _ => (None, resource.kind, &["get", "patch", "update"]),
            };
            let mut entry = json!({
                "name": format!("{}/{sub}", resource.plural),
                "singularName": "",
                "namespaced": resource.namespaced,
                "kind": kind,
                "verbs": verbs,
            });
            if let Some((group, version)) = group_version {
                entry["group"] = json!(group);
                entry["version"] = json!(version);
            }
            entries.push(entry);
        }
    }
    (!entries.is_empty()).then(|| {
        json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": api_version,
            "resources": entries,
        })
    })
}

/// `/apis`: every named group, one version each.
fn group_list() -> Json {
    let mut groups: Vec<Json> = Vec::new();
    for resource in RESOURCES {
        let Some((group, version)) = resource.api_version.split_once('/') else {
            continue;
        };
        if groups.iter().any(|g| g["name"] == group) {
            continue;
        }
        let version = json!({"groupVersion": resource.api_version, "version": version});
        groups.push(json!({"name": group, "versions": [version], "preferredVersion": version}));
    }
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// A `metav1.Status` failure, as the API server sends it.
pub fn status(code: u16, reason: &str, message: &str, details: Json) -> Json {
    let mut status = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    if details.as_object().is_some_and(|d| !d.is_empty()) {
        status["details"] = details;
    }
    status
}

/// One request as the server received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Decoded query parameters, in order (`command` may repeat).
    pub query: Vec<(String, String)>,
    pub content_type: Option<String>,
    pub authorization: Option<String>,
    /// The body, parsed when it is JSON.
    pub body: Option<Json>,
    pub text: String,
}

impl Recorded {
    fn new(parts: &Parts, body: &[u8]) -> Self {
        let header = |name: header::HeaderName| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        Self {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            query: form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
            content_type: header(header::CONTENT_TYPE),
            authorization: header(header::AUTHORIZATION),
            body: serde_json::from_slice(body).ok(),
            text: String::from_utf8_lossy(body).into_owned(),
        }
    }

    /// The first value of a query parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a repeated query parameter.
    pub fn params(&self, name: &str) -> Vec<&str> {
        self.query
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn is(&self, method: &str, path: &str) -> bool {
        self.method == method && self.path == path
    }

    /// `PATCH /apis/apps/v1/...?dryRun=All`, for assertion messages.
    pub fn line(&self) -> String {
        let query: Vec<String> = self.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if query.is_empty() {
            format!("{} {}", self.method, self.path)
        } else {
            format!("{} {}?{}", self.method, self.path, query.join("&"))
        }
    }
}

/// A scripted failure: the next `times` requests (all, when unset) whose method and path
/// match answer as told instead of being served.
#[derive(Clone, Debug)]
pub struct Fault {
    method: String,
    prefix: String,
    times: Option<usize>,
    answer: FaultAnswer,
}

#[derive(Clone, Debug)]
enum FaultAnswer {
    Status {
        code: u16,
        body: Json,
        retry_after: Option<u64>,
    },
    /// Never answer.
    Hang,
    /// Serve the request (its change is made), then never answer: an answer lost on the way.
    LoseAnswer,
}

impl Fault {
    /// `method` is `GET`, `PATCH`... or `*`; `prefix` is matched against the path.
    pub fn status(method: &str, prefix: &str, code: u16, reason: &str, message: &str) -> Self {
        Self {
            method: method.to_owned(),
            prefix: prefix.to_owned(),
            times: None,
            answer: FaultAnswer::Status {
                code,
                body: status(code, reason, message, json!({})),
                retry_after: None,
            },
        }
    }

    pub fn hang(method: &str, prefix: &str) -> Self {
        Self {
            method: method.to_owned(),
            prefix: prefix.to_owned(),
            times: None,
            answer: FaultAnswer::Hang,
        }
    }

    /// The request is served (whatever it changes, changes) but its answer never comes.
    pub fn lose_answer(method: &str, prefix: &str) -> Self {
        Self {
            answer: FaultAnswer::LoseAnswer,
            ..Self::hang(method, prefix)
        }
    }

    pub fn times(mut self, times: usize) -> Self {
        self.times = Some(times);
        self
    }

    pub fn retry_after(mut self, seconds: u64) -> Self {
        if let FaultAnswer::Status { retry_after, .. } = &mut self.answer {
            *retry_after = Some(seconds);
        }
        self
    }

    /// Adds a `details.causes` entry (`FieldManagerConflict`, `DisruptionBudget`...).
    pub fn cause(mut self, reason: &str, field: &str, message: &str) -> Self {
        if let FaultAnswer::Status { body, .. } = &mut self.answer {
            let cause = json!({"reason": reason, "field": field, "message": message});
            match body
                .pointer_mut("/details/causes")
                .and_then(Json::as_array_mut)
            {
                Some(causes) => causes.push(cause),
                None => body["details"] = json!({"causes": [cause]}),
            }
        }
        self
    }

    fn matches(&self, request: &Recorded) -> bool {
        (self.method == "*" || self.method == request.method)
            && request.path.starts_with(&self.prefix)
    }
}

/// What a scripted exec prints and how it exits.
#[derive(Clone, Debug, Default)]
pub struct ExecReply {
    pub stdout: String,
    pub stderr: String,
    pub exit_code: i32,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    api_version: String,
    plural: String,
    namespace: Option<String>,
    name: String,
}

impl Key {
    fn new(resource: &ResourceType, namespace: Option<&str>, name: &str) -> Self {
        Self {
            api_version: resource.api_version.to_owned(),
            plural: resource.plural.to_owned(),
            namespace: namespace.filter(|_| resource.namespaced).map(str::to_owned),
            name: name.to_owned(),
        }
    }

    fn of(object: &Json) -> (&'static ResourceType, Self) {
        let text = |pointer: &str| object.pointer(pointer).and_then(Json::as_str);
        let (api_version, kind) = (
            text("/apiVersion").unwrap_or_default(),
            text("/kind").unwrap_or_default(),
        );
        let resource = by_kind(api_version, kind)
            .unwrap_or_else(|| panic!("the fake API server serves no {api_version} {kind}"));
        let name = text("/metadata/name").expect("an object needs metadata.name");
        let key = Self::new(resource, text("/metadata/namespace"), name);
        (resource, key)
    }
}

/// `key=value`, `key==value`, `key!=value`, `key` and `!key`.
#[derive(Clone, Debug)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    Absent(String),
}

impl Requirement {
    fn holds(&self, value: impl Fn(&str) -> Option<String>) -> bool {
        match self {
            Self::Equals(key, wanted) => value(key).unwrap_or_default() == *wanted,
            Self::NotEquals(key, unwanted) => value(key).unwrap_or_default() != *unwanted,
            Self::Exists(key) => value(key).is_some(),
            Self::Absent(key) => value(key).is_none(),
        }
    }
}

fn parse_selector(text: Option<&str>, fields: bool) -> Result<Vec<Requirement>, Reply> {
    let token = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
    };
    let pair = |(key, value): (&str, &str)| (key.trim().to_owned(), value.trim().to_owned());
    let mut requirements = Vec::new();
    for part in text.unwrap_or_default().split(',').map(str::trim) {
        if part.is_empty() {
            continue;
        }
        let unparsable = || bad_request(&format!("unable to parse requirement: {part:?}"));
        let requirement = if let Some((key, value)) = part.split_once("!=").map(pair) {
            Requirement::NotEquals(key, value)
        } else if let Some((key, value)) = part
            .split_once("==")
            .or_else(|| part.split_once('='))
            .map(pair)
        {
            Requirement::Equals(key, value)
        } else if fields {
            return Err(unparsable());
        } else if let Some(key) = part.strip_prefix('!') {
            Requirement::Absent(key.to_owned())
        } else {
            Requirement::Exists(part.to_owned())
        };
        let (key, value) = match &requirement {
            Requirement::Equals(key, value) | Requirement::NotEquals(key, value) => {
                (key.as_str(), value.as_str())
            }
            Requirement::Exists(key) | Requirement::Absent(key) => (key.as_str(), ""),
        };
        if !token(key) || !(value.is_empty() || token(value)) {
            return Err(unparsable());
        }
        requirements.push(requirement);
    }
    Ok(requirements)
}

/// The field selectors the real API server supports for each resource.
fn field_supported(resource: &ResourceType, field: &str) -> bool {
    matches!(field, "metadata.name" | "metadata.namespace")
        || match resource.plural {
            "pods" => matches!(
                field,
                "spec.nodeName"
                    | "spec.restartPolicy"
                    | "spec.schedulerName"
                    | "spec.serviceAccountName"
                    | "status.phase"
                    | "status.podIP"
                    | "status.nominatedNodeName"
            ),
            "nodes" => field == "spec.unschedulable",
            "secrets" => field == "type",
            _ => false,
        }
}

struct Selectors {
    labels: Vec<Requirement>,
    fields: Vec<Requirement>,
}

impl Selectors {
    fn of(resource: &ResourceType, request: &Recorded) -> Result<Self, Reply> {
        let labels = parse_selector(request.param("labelSelector"), false)?;
        let fields = parse_selector(request.param("fieldSelector"), true)?;
        for field in &fields {
            let (Requirement::Equals(name, _) | Requirement::NotEquals(name, _)) = field else {
                continue;
            };
            if !field_supported(resource, name) {
                return Err(bad_request(&format!("field label not supported: {name}")));
            }
        }
        Ok(Self { labels, fields })
    }

    fn select(&self, object: &Json) -> bool {
        let label = |key: &str| {
            object
                .pointer("/metadata/labels")
                .and_then(|labels| labels.get(key))
                .and_then(Json::as_str)
                .map(str::to_owned)
        };
        let field = |path: &str| {
            object
                .pointer(&format!("/{}", path.replace('.', "/")))
                .map(|value| match value {
                    Json::String(text) => text.clone(),
                    other => other.to_string(),
                })
        };
        self.labels.iter().all(|r| r.holds(label)) && self.fields.iter().all(|r| r.holds(field))
    }
}

struct Watcher {
    api_version: String,
    plural: String,
    namespace: Option<String>,
    selectors: Selectors,
    sender: mpsc::UnboundedSender<Bytes>,
}

impl Watcher {
    fn wants(&self, key: &Key, object: &Json) -> bool {
        key.api_version == self.api_version
            && key.plural == self.plural
            && (self.namespace.is_none() || key.namespace == self.namespace)
            && self.selectors.select(object)
    }

    fn send(&self, event_type: &str, object: &Json) {
        let mut line =
            serde_json::to_vec(&json!({"type": event_type, "object": object})).unwrap_or_default();
        line.push(b'\n');
        let _ = self.sender.send(Bytes::from(line));
    }
}

/// How the server answers one request.
enum Reply {
    Json {
        code: u16,
        body: Json,
        retry_after: Option<u64>,
    },
    Text(String),
    Watch {
        events: mpsc::UnboundedReceiver<Bytes>,
        timeout: Duration,
    },
    /// Upgrade to WebSocket and send these binary frames, then close.
    Exec(Vec<Vec<u8>>),
    Hang,
}

fn ok(body: Json) -> Reply {
    json_reply(200, body)
}

fn json_reply(code: u16, body: Json) -> Reply {
    Reply::Json {
        code,
        body,
        retry_after: None,
    }
}

fn fail(code: u16, reason: &str, message: &str, details: Json) -> Reply {
    json_reply(code, status(code, reason, message, details))
}

fn bad_request(message: &str) -> Reply {
    fail(400, "BadRequest", message, json!({}))
}

fn no_such_path() -> Reply {
    fail(
        404,
        "NotFound",
        "the server could not find the requested resource",
        json!({}),
    )
}

fn details(resource: &ResourceType, name: &str) -> Json {
    let mut details = json!({"name": name, "kind": resource.plural});
    if !resource.group().is_empty() {
        details["group"] = json!(resource.group());
    }
    details
}

fn not_found(resource: &ResourceType, name: &str) -> Reply {
    let message = format!("{} \"{name}\" not found", resource.group_resource());
    fail(404, "NotFound", &message, details(resource, name))
}

fn conflict(resource: &ResourceType, name: &str, why: &str) -> Reply {
    let message = format!(
        "Operation cannot be fulfilled on {} \"{name}\": {why}",
        resource.group_resource()
    );
    fail(409, "Conflict", &message, details(resource, name))
}

const MODIFIED: &str =
    "the object has been modified; please apply your changes to the latest version and try again";

fn text<'a>(object: &'a Json, pointer: &str) -> Option<&'a str> {
    object.pointer(pointer).and_then(Json::as_str)
}

fn resource_version(object: &Json) -> Option<&str> {
    text(object, "/metadata/resourceVersion")
}

/// Where a request goes: a group version's discovery document, or a resource.
enum Route {
    Discovery(String),
    Resource {
        resource: &'static ResourceType,
        namespace: Option<String>,
        name: Option<String>,
        subresource: Option<String>,
    },
}

fn route(path: &str) -> Option<Route> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let (api_version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ((*version).to_owned(), rest),
        ["apis", group, version, rest @ ..] => (format!("{group}/{version}"), rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        [] => return Some(Route::Discovery(api_version)),
        ["namespaces", namespace, rest @ ..] if !rest.is_empty() => {
            (Some((*namespace).to_owned()), rest)
        }
        rest => (None, rest),
    };
    let (plural, name, subresource) = match rest {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some(*name), None),
        [plural, name, sub] => (*plural, Some(*name), Some(*sub)),
        _ => return None,
    };
    let resource = by_plural(&api_version, plural)?;
    let scoped_right = match (resource.namespaced, &namespace) {
        (true, None) => name.is_none(),
        (false, Some(_)) => false,
        _ => true,
    };
    scoped_right.then(|| Route::Resource {
        resource,
        namespace,
        name: name.map(str::to_owned),
        subresource: subresource.map(str::to_owned),
    })
}

#[derive(Default)]
struct State {
    objects: BTreeMap<Key, Json>,
    /// The last resourceVersion handed out.
    version: u64,
    /// Watches from versions older than this get 410 Gone.
    compacted: u64,
    history: Vec<(u64, Key, &'static str, Json)>,
    watchers: Vec<Watcher>,
    requests: Vec<Recorded>,
    faults: Vec<Fault>,
    /// By namespace, pod and container.
    logs: BTreeMap<(String, String, String), String>,
    /// By namespace, pod and argv.
    execs: BTreeMap<(String, String, Vec<String>), ExecReply>,
    uids: u64,
    /// Added before every answer, as a real server's time would be (the benchmark's knob).
    latency: Duration,
}

impl State {
    fn answer(&mut self, request: Recorded) -> Reply {
        self.requests.push(request.clone());
        match self.fault(&request) {
            Some(FaultAnswer::Status {
                code,
                body,
                retry_after,
            }) => Reply::Json {
                code,
                body,
                retry_after,
            },
            Some(FaultAnswer::Hang) => Reply::Hang,
            Some(FaultAnswer::LoseAnswer) => {
                let _ = self.serve(&request);
                Reply::Hang
            }
            None => match self.serve(&request) {
                Ok(reply) | Err(reply) => reply,
            },
        }
    }

    fn fault(&mut self, request: &Recorded) -> Option<FaultAnswer> {
        let index = self.faults.iter().position(|f| f.matches(request))?;
        let fault = &mut self.faults[index];
        let answer = fault.answer.clone();
        if let Some(times) = &mut fault.times {
            *times -= 1;
            if *times == 0 {
                self.faults.remove(index);
            }
        }
        Some(answer)
    }

    fn serve(&mut self, request: &Recorded) -> Result<Reply, Reply> {
        let method = request.method.as_str();
        match (method, request.path.trim_end_matches('/')) {
            ("GET", "/version") => {
                return Ok(ok(json!({
                    "major": "1",
                    "minor": "33",
                    "gitVersion": VERSION,
                    "gitCommit": "8adc0f041b8e7ad1d30e29cc59c6ae7a15e19828",
                    "gitTreeState": "clean",
                    "buildDate": "2025-05-15T08:19:08Z",
                    "goVersion": "go1.24.2",
                    "compiler": "gc",
                    "platform": "linux/amd64",
                })))
            }
            ("GET", "/api") => {
                return Ok(ok(json!({
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "172.18.0.2:6443"}],
                })))
            }
            ("GET", "/apis") => return Ok(ok(group_list())),
            _ => {}
        }
        let (resource, namespace, name, subresource) = match route(&request.path) {
            Some(Route::Discovery(api_version)) if method == "GET" => {
                return resource_list(&api_version).map(ok).ok_or_else(no_such_path)
            }
            Some(Route::Resource {
                resource,
                namespace,
                name,
                subresource,
            }) => (resource, namespace, name, subresource),
            _ => return Err(no_such_path()),
        };
        let dry = match request.param("dryRun") {
            None => false,
            Some("All") => true,
            Some(other) => {
                return Err(bad_request(&format!(
                    "Invalid dry run value: {other:?}: supported values: \"All\""
                )))
            }
        };
        let Some(name) = name else {
            return match method {
                "GET" if request.param("watch") == Some("true") => {
                    self.watch(resource, namespace, request)
                }
                "GET" => self.list(resource, namespace.as_deref(), request),
                "POST" if resource.namespaced == namespace.is_some() => {
                    self.create(resource, namespace.as_deref(), request, dry)
                }
                _ => Err(not_allowed()),
            };
        };
        let key = Key::new(resource, namespace.as_deref(), &name);
        match (method, subresource.as_deref()) {
            ("GET", None | Some("status")) => self.get(resource, &key).map(ok),
            ("PUT", None | Some("status")) => self.update(resource, key, request, dry),
            ("PATCH", None | Some("status")) => self.patch(resource, key, request, dry),
            ("DELETE", None) => self.delete(resource, &key, request, dry),
            (_, Some("scale")) if resource.has("scale") => self.scale(resource, key, request, dry),
            ("POST", Some("eviction")) if resource.has("eviction") => {
                self.evict(resource, &key, request, dry)
            }
            ("GET", Some("log")) if resource.has("log") => self.log(resource, &key, request),
            ("GET" | "POST", Some("exec")) if resource.has("exec") => {
                self.exec(resource, &key, request)
            }
            (_, Some(sub)) if !resource.has(sub) => Err(no_such_path()),
            _ => Err(not_allowed()),
        }
    }

    fn get(&self, resource: &ResourceType, key: &Key) -> Result<Json, Reply> {
        self.objects
            .get(key)
            .cloned()
            .ok_or_else(|| not_found(resource, &key.name))
    }

    fn list(
        &self,
        resource: &ResourceType,
        namespace: Option<&str>,
        request: &Recorded,
    ) -> Result<Reply, Reply> {
        let selectors = Selectors::of(resource, request)?;
        let items: Vec<Json> = self
            .objects
            .iter()
            .filter(|(key, object)| {
                key.api_version == resource.api_version
                    && key.plural == resource.plural
                    && (namespace.is_none() || key.namespace.as_deref() == namespace)
                    && selectors.select(object)
            })
            .map(|(_, object)| {
                let mut item = object.clone();
                // The API server leaves these off the items of built-in lists.
                if let (Some(item), false) = (item.as_object_mut(), resource.custom) {
                    item.remove("apiVersion");
                    item.remove("kind");
                }
                item
            })
            .collect();
        Ok(ok(json!({
            "kind": format!("{}List", resource.kind),
            "apiVersion": resource.api_version,
            "metadata": {"resourceVersion": self.version.to_string()},
            "items": items,
        })))
    }

    fn watch(
        &mut self,
        resource: &ResourceType,
        namespace: Option<String>,
        request: &Recorded,
    ) -> Result<Reply, Reply> {
        let (sender, events) = mpsc::unbounded_channel();
        let watcher = Watcher {
            api_version: resource.api_version.to_owned(),
            plural: resource.plural.to_owned(),
            namespace,
            selectors: Selectors::of(resource, request)?,
            sender,
        };
        let timeout = request
            .param("timeoutSeconds")
            .and_then(|s| s.parse().ok())
            .map_or(Duration::from_secs(1800), Duration::from_secs);
        match request.param("resourceVersion").unwrap_or_default() {
            // From "any version": the current state first, as synthetic ADDED events.
            "" | "0" => {
                for (key, object) in &self.objects {
                    if watcher.wants(key, object) {
                        watcher.send("ADDED", object);
                    }
                }
            }
            version => {
                let Ok(from) = version.parse::<u64>() else {
                    return Err(bad_request(&format!(
                        "invalid resource version {version:?}"
                    )));
                };
                if from < self.compacted {
                    let message = format!("too old resource version: {from} ({})", self.compacted);
                    watcher.send("ERROR", &status(410, "Expired", &message, json!({})));
                    return Ok(Reply::Watch { events, timeout });
                }
                for (version, key, event_type, object) in &self.history {
                    if *version > from && watcher.wants(key, object) {
                        watcher.send(event_type, object);
                    }
                }
            }
        }
        self.watchers.push(watcher);
        Ok(Reply::Watch { events, timeout })
    }

    fn create(
        &mut self,
        resource: &ResourceType,
        namespace: Option<&str>,
        request: &Recorded,
        dry: bool,
    ) -> Result<Reply, Reply> {
        let object = body_object(resource, request)?;
        let Some(name) = text(&object, "/metadata/name") else {
            let message = format!(
                "{} \"\" is invalid: metadata.name: Required value: name or generateName is required",
                resource.group_kind()
            );
            return Err(fail(422, "Invalid", &message, json!({})));
        };
        let key = Key::new(resource, namespace, name);
        check_identity(resource, &key, &object)?;
        if self.objects.contains_key(&key) {
            let message = format!("{} \"{name}\" already exists", resource.group_resource());
            return Err(fail(
                409,
                "AlreadyExists",
                &message,
                details(resource, name),
            ));
        }
        self.commit(resource, key, object, dry)
    }

    fn update(
        &mut self,
        resource: &ResourceType,
        key: Key,
        request: &Recorded,
        dry: bool,
    ) -> Result<Reply, Reply> {
        let object = body_object(resource, request)?;
        let current = self.get(resource, &key)?;
        check_identity(resource, &key, &object)?;
        if let Some(version) = resource_version(&object) {
            if Some(version) != resource_version(&current) {
                return Err(conflict(resource, &key.name, MODIFIED));
            }
        }
        self.commit(resource, key, object, dry)
    }

    fn patch(
        &mut self,
        resource: &ResourceType,
        key: Key,
        request: &Recorded,
        dry: bool,
    ) -> Result<Reply, Reply> {
        let current = self.objects.get(&key).cloned();
        if content_type(request) == APPLY {
            if request.param("fieldManager").is_none_or(str::is_empty) {
                return Err(fail(422, "Invalid", "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch", json!({})));
            }
            if !matches!(request.param("force"), None | Some("true" | "false")) {
                return Err(bad_request("force: invalid boolean value"));
            }
            let body = body_object(resource, request)?;
            check_identity(resource, &key, &body)?;
            let mut next = current.unwrap_or_else(|| json!({}));
            json_patch::merge(&mut next, &body);
            return self.commit(resource, key, next, dry);
        }
        let current = current.ok_or_else(|| not_found(resource, &key.name))?;
        let next = patched(resource, &current, request)?;
        if resource_version(&next).is_some_and(|v| Some(v) != resource_version(&current)) {
            return Err(conflict(resource, &key.name, MODIFIED));
        }
        self.commit(resource, key, next, dry)
    }

    fn delete(
        &mut self,
        resource: &ResourceType,
        key: &Key,
        request: &Recorded,
        dry: bool,
    ) -> Result<Reply, Reply> {
        let current = self.get(resource, key)?;
        let options = request.body.clone().unwrap_or(Json::Null);
        for (field, name) in [("ResourceVersion", "resourceVersion"), ("UID", "uid")] {
            let precondition = options
                .pointer(&format!("/preconditions/{name}"))
                .and_then(Json::as_str);
            let pointer = format!("/metadata/{name}");
            let actual = text(&current, &pointer).unwrap_or_default();
            if let Some(wanted) = precondition.filter(|wanted| *wanted != actual) {
                let why = format!("Precondition failed: {field} in precondition: {wanted}, {field} in object meta: {actual}");
                return Err(conflict(resource, &key.name, &why));
            }
        }
        if dry || options.get("dryRun") == Some(&json!(["All"])) {
            return Ok(ok(current));
        }
        Ok(ok(self.remove(key).unwrap_or(current)))
    }

    fn scale(
        &mut self,
        resource: &ResourceType,
        key: Key,
        request: &Recorded,
        dry: bool,
    ) -> Result<Reply, Reply> {
        let current = self.get(resource, &key)?;
        let scale = scale_of(&current);
        let wanted = match request.method.as_str() {
            "GET" => return Ok(ok(scale)),
            "PATCH" => patched(resource, &scale, request)?,
            "PUT" => request
                .body
                .clone()
                .ok_or_else(|| bad_request("the body is not JSON"))?,
            _ => return Err(not_allowed()),
        };
        if resource_version(&wanted).is_some_and(|v| Some(v) != resource_version(&current)) {
            return Err(conflict(resource, &key.name, MODIFIED));
        }
        let replicas = wanted
            .pointer("/spec/replicas")
            .cloned()
            .unwrap_or(json!(0));
        if replicas.as_i64().is_none_or(|n| n < 0) {
            let message = format!("Scale.autoscaling \"{}\" is invalid: spec.replicas: Invalid value: {replicas}: must be greater than or equal to 0", key.name);
            return Err(fail(422, "Invalid", &message, details(resource, &key.name)));
        }
        let mut next = current;
        next["spec"]["replicas"] = replicas;
        match self.commit(resource, key, next, dry)? {
            Reply::Json { body, .. } => Ok(ok(scale_of(&body))),
            other => Ok(other),
        }
    }

    fn evict(
        &mut self,
        resource: &ResourceType,
        key: &Key,
        request: &Recorded,
        dry: bool,
    ) -> Result<Reply, Reply> {
        self.get(resource, key)?;
        let body = request.body.clone().unwrap_or(Json::Null);
        if text(&body, "/kind") != Some("Eviction") {
            return Err(bad_request("the body of an eviction must be an Eviction"));
        }
        if text(&body, "/metadata/name") != Some(key.name.as_str()) {
            return Err(bad_request(
                "name in URL does not match name in Eviction object",
            ));
        }
        if !dry {
            self.remove(key);
        }
        Ok(json_reply(
            201,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        ))
    }

    fn log(&self, resource: &ResourceType, key: &Key, request: &Recorded) -> Result<Reply, Reply> {
        let pod = self.get(resource, key)?;
        let container = container(&pod, &key.name, request.param("container"))?;
        let namespace = key.namespace.clone().unwrap_or_default();
        let log = self
            .logs
            .get(&(namespace, key.name.clone(), container))
            .cloned()
            .unwrap_or_default();
        let Some(tail) = request.param("tailLines") else {
            return Ok(Reply::Text(log));
        };
        let tail: usize = tail
            .parse()
            .map_err(|_| bad_request(&format!("tailLines: invalid value {tail:?}")))?;
        let lines: Vec<&str> = log.split_inclusive('\n').collect();
        Ok(Reply::Text(
            lines[lines.len().saturating_sub(tail)..].concat(),
        ))
    }

    fn exec(&self, resource: &ResourceType, key: &Key, request: &Recorded) -> Result<Reply, Reply> {
        let pod = self.get(resource, key)?;
        container(&pod, &key.name, request.param("container"))?;
        let argv: Vec<String> = request
            .params("command")
            .into_iter()
            .map(str::to_owned)
            .collect();
        if argv.is_empty() {
            return Err(bad_request("you must specify at least 1 command"));
        }
        let namespace = key.namespace.clone().unwrap_or_default();
        let reply = self
            .execs
            .get(&(namespace, key.name.clone(), argv.clone()))
            .cloned()
            .unwrap_or_else(|| ExecReply {
                stdout: format!("OCI runtime exec failed: exec failed: unable to start container process: exec: \"{}\": executable file not found in $PATH: unknown\r\n", argv[0]),
                stderr: String::new(),
                exit_code: 126,
            });
        let exit = if reply.exit_code == 0 {
            json!({"metadata": {}, "status": "Success"})
        } else {
            json!({
                "metadata": {},
                "status": "Failure",
                "message": format!("command terminated with non-zero exit code: error executing command [{}], exit code {}", argv.join(" "), reply.exit_code),
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": reply.exit_code.to_string()}]},
            })
        };
        let frame = |channel: u8, data: &[u8]| [&[channel][..], data].concat();
        // Each channel announces itself with a frame holding only its number.
        let mut frames = vec![frame(1, b""), frame(2, b""), frame(3, b"")];
        if !reply.stdout.is_empty() {
            frames.push(frame(1, reply.stdout.as_bytes()));
        }
        if !reply.stderr.is_empty() {
            frames.push(frame(2, reply.stderr.as_bytes()));
        }
        frames.push(frame(3, exit.to_string().as_bytes()));
        Ok(Reply::Exec(frames))
    }

    /// Stores `next` as the object at `key` (creating it when absent), as a write does:
    /// validated, identity fields kept, resourceVersion and generation bumped; in a dry run
    /// the answer is the same and nothing is kept.
    fn commit(
        &mut self,
        resource: &ResourceType,
        key: Key,
        mut next: Json,
        dry: bool,
    ) -> Result<Reply, Reply> {
        validate(resource, &key.name, &next)?;
        let Some(current) = self.objects.get(&key).cloned() else {
            let object = self.fill_new(resource, &key, next);
            if dry {
                return Ok(json_reply(201, object));
            }
            return Ok(json_reply(201, self.store(key, object, "ADDED")));
        };
        next["apiVersion"] = current["apiVersion"].clone();
        next["kind"] = current["kind"].clone();
        for field in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "resourceVersion",
            "generation",
        ] {
            match current["metadata"].get(field) {
                Some(value) => next["metadata"][field] = value.clone(),
                None => {
                    if let Some(metadata) = next["metadata"].as_object_mut() {
                        metadata.remove(field);
                    }
                }
            }
        }
        if next == current {
            return Ok(ok(current));
        }
        if resource.has_generation() && next.get("spec") != current.get("spec") {
            let generation = current["metadata"]["generation"].as_i64().unwrap_or(1);
            next["metadata"]["generation"] = json!(generation + 1);
        }
        if dry {
            return Ok(ok(next));
        }
        Ok(ok(self.store(key, next, "MODIFIED")))
    }

    fn fill_new(&mut self, resource: &ResourceType, key: &Key, mut object: Json) -> Json {
        self.uids += 1;
        object["apiVersion"] = json!(resource.api_version);
        object["kind"] = json!(resource.kind);
        let metadata = &mut object["metadata"];
        metadata["name"] = json!(key.name);
        if let Some(namespace) = &key.namespace {
            metadata["namespace"] = json!(namespace);
        }
        metadata["uid"] = json!(format!("6f1c2a4e-0000-4000-8000-{:012x}", self.uids));
        metadata["creationTimestamp"] =
            json!(humantime::format_rfc3339_seconds(SystemTime::now()).to_string());
        if resource.has_generation() {
            object["metadata"]["generation"] = json!(1);
        }
        if let Some(metadata) = object["metadata"].as_object_mut() {
            metadata.remove("resourceVersion");
        }
        object
    }

    fn store(&mut self, key: Key, mut object: Json, event_type: &'static str) -> Json {
        self.version += 1;
        object["metadata"]["resourceVersion"] = json!(self.version.to_string());
        self.objects.insert(key.clone(), object.clone());
        self.emit(event_type, key, &object);
        object
    }

    fn remove(&mut self, key: &Key) -> Option<Json> {
        let mut object = self.objects.remove(key)?;
        self.version += 1;
        object["metadata"]["resourceVersion"] = json!(self.version.to_string());
        self.emit("DELETED", key.clone(), &object);
        Some(object)
    }

    fn emit(&mut self, event_type: &'static str, key: Key, object: &Json) {
        self.watchers.retain(|w| !w.sender.is_closed());
        for watcher in &self.watchers {
            if watcher.wants(&key, object) {
                watcher.send(event_type, object);
            }
        }
        self.history
            .push((self.version, key, event_type, object.clone()));
    }
}

fn not_allowed() -> Reply {
    fail(
        405,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource",
        json!({}),
    )
}

fn content_type(request: &Recorded) -> &str {
    request
        .content_type
        .as_deref()
        .and_then(|c| c.split(';').next())
        .unwrap_or_default()
        .trim()
}

fn body_object(resource: &ResourceType, request: &Recorded) -> Result<Json, Reply> {
    match &request.body {
        Some(body @ Json::Object(_)) => {
            let kind = text(body, "/kind");
            if kind.is_some_and(|kind| kind != resource.kind) {
                return Err(bad_request(&format!(
                    "the body kind {} does not match the resource {}",
                    kind.unwrap_or_default(),
                    resource.group_resource()
                )));
            }
            Ok(body.clone())
        }
        _ => Err(bad_request(&format!(
            "the body of the request is not a JSON object: {}",
            request.text.chars().take(80).collect::<String>()
        ))),
    }
}

/// The name and namespace a body gives must be those of the URL.
fn check_identity(resource: &ResourceType, key: &Key, body: &Json) -> Result<(), Reply> {
    if let Some(name) = text(body, "/metadata/name").filter(|n| *n != key.name) {
        return Err(bad_request(&format!(
            "the name of the object ({name}) does not match the name on the URL ({})",
            key.name
        )));
    }
    let namespace = text(body, "/metadata/namespace");
    if resource.namespaced && namespace.is_some_and(|n| Some(n) != key.namespace.as_deref()) {
        return Err(bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    Ok(())
}

/// The object after a merge, strategic merge or JSON patch.
fn patched(resource: &ResourceType, current: &Json, request: &Recorded) -> Result<Json, Reply> {
    let body = request
        .body
        .clone()
        .ok_or_else(|| bad_request("the body of the request is not JSON"))?;
    let mut next = current.clone();
    match content_type(request) {
        STRATEGIC if resource.custom => return Err(unsupported_media_type()),
        MERGE | STRATEGIC => json_patch::merge(&mut next, &body),
        JSON_PATCH => {
            let patch: json_patch::Patch = serde_json::from_value(body)
                .map_err(|e| bad_request(&format!("invalid JSON patch: {e}")))?;
            json_patch::patch(&mut next, &patch).map_err(|e| {
                fail(
                    422,
                    "Invalid",
                    &format!("the server rejected our request due to an error in our request: {e}"),
                    json!({}),
                )
            })?;
        }
        _ => return Err(unsupported_media_type()),
    }
    Ok(next)
}

fn unsupported_media_type() -> Reply {
    fail(
        415,
        "UnsupportedMediaType",
        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
        json!({}),
    )
}

/// What the API server itself would refuse with 422 (or 400, for a body it cannot decode).
fn validate(resource: &ResourceType, name: &str, object: &Json) -> Result<(), Reply> {
    for field in ["labels", "annotations"] {
        let values = object.pointer(&format!("/metadata/{field}"));
        if values.is_some_and(|v| {
            !v.is_null()
                && !v
                    .as_object()
                    .is_some_and(|m| m.values().all(Json::is_string))
        }) {
            return Err(bad_request(&format!(
                "json: cannot unmarshal into Go struct field ObjectMeta.metadata.{field} of type string"
            )));
        }
    }
    if matches!(resource.plural, "deployments" | "statefulsets") {
        if let Some(replicas) = object.pointer("/spec/replicas") {
            if replicas.as_i64().is_none_or(|n| n < 0) {
                let message = format!(
                    "{} \"{name}\" is invalid: spec.replicas: Invalid value: {replicas}: must be greater than or equal to 0",
                    resource.group_kind()
                );
                let mut details = details(resource, name);
                details["kind"] = json!(resource.kind);
                details["causes"] = json!([{"reason": "FieldValueInvalid", "message": format!("Invalid value: {replicas}: must be greater than or equal to 0"), "field": "spec.replicas"}]);
                return Err(fail(422, "Invalid", &message, details));
            }
        }
    }
    Ok(())
}

/// The `autoscaling/v1` Scale of a workload.
fn scale_of(object: &Json) -> Json {
    let selector: Vec<String> = object
        .pointer("/spec/selector/matchLabels")
        .and_then(Json::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    let metadata = &object["metadata"];
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": metadata["name"],
            "namespace": metadata["namespace"],
            "uid": metadata["uid"],
            "resourceVersion": metadata["resourceVersion"],
            "creationTimestamp": metadata["creationTimestamp"],
        },
        "spec": {"replicas": object.pointer("/spec/replicas").cloned().unwrap_or(json!(1))},
        "status": {
            "replicas": object.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector.join(","),
        },
    })
}

/// The container a log or exec request means: the one named, or the pod's only one.
fn container(pod: &Json, name: &str, wanted: Option<&str>) -> Result<String, Reply> {
    let containers: Vec<&str> = pod
        .pointer("/spec/containers")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("name").and_then(Json::as_str))
        .collect();
    match (wanted, containers.as_slice()) {
        (Some(wanted), []) => Ok(wanted.to_owned()),
        (Some(wanted), all) if all.contains(&wanted) => Ok(wanted.to_owned()),
        (Some(wanted), _) => Err(bad_request(&format!(
            "container {wanted} is not valid for pod {name}"
        ))),
        (None, []) => Ok(String::new()),
        (None, [only]) => Ok((*only).to_owned()),
        (None, all) => Err(bad_request(&format!(
            "a container name must be specified for pod {name}, choose one of: [{}]",
            all.join(" ")
        ))),
    }
}

/// The fake API server, listening on 127.0.0.1 until dropped.
pub struct FakeApi {
    address: SocketAddr,
    state: Arc<Mutex<State>>,
    server: tokio::task::JoinHandle<()>,
    /// `http`, or `https` when started with [`FakeApi::start_tls`].
    scheme: &'static str,
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl FakeApi {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a local port");
        let address = listener.local_addr().expect("the local address");
        let state = Arc::new(Mutex::new(State {
            version: 100,
            ..State::default()
        }));
        let shared = state.clone();
        let app = axum::Router::new()
            .fallback(move |request: axum::extract::Request| handle(shared.clone(), request));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            address,
            state,
            server,
            scheme: "http",
        }
    }

    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.address)
    }

    /// The same server behind TLS, as real API servers are: `tls` holds its certificate and
    /// whether (and how) it checks client certificates. A failed handshake closes the
    /// connection before any request, as a real server does.
    pub async fn start_tls(tls: Arc<tokio_rustls::rustls::ServerConfig>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a local port");
        let address = listener.local_addr().expect("the local address");
        let state = Arc::new(Mutex::new(State {
            version: 100,
            ..State::default()
        }));
        let shared = state.clone();
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let server = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let shared = shared.clone();
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(
                        move |request: hyper::Request<hyper::body::Incoming>| {
                            let shared = shared.clone();
                            async move {
                                Ok::<_, Infallible>(
                                    handle(shared, request.map(axum::body::Body::new)).await,
                                )
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Self {
            address,
            state,
            server,
            scheme: "https",
        }
    }

    /// A client for this server whose default namespace is `namespace`, with `kube`'s
    /// defaults (its own retry layer included). To test what the CLI runs, connect through
    /// [`FakeApi::write_kubeconfig`] and `runbook_kube::connect` instead.
    pub fn client(&self, namespace: &str) -> kube::Client {
        let mut config = kube::Config::new(self.url().parse().expect("the server's URL"));
        config.default_namespace = namespace.to_owned();
        kube::Client::try_from(config).expect("a client")
    }

    /// Writes a kubeconfig whose one context, `fake`, points at this server with the bearer
    /// token `fake-token` and the namespace `namespace`; returns its path.
    pub fn write_kubeconfig(&self, dir: &std::path::Path, namespace: &str) -> std::path::PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1
kind: Config
current-context: fake
clusters:
- name: fake
  cluster: {{server: '{}'}}
users:
- name: fake
  user: {{token: fake-token}}
contexts:
- name: fake
  context: {{cluster: fake, user: fake, namespace: {namespace}}}
",
            self.url()
        );
        std::fs::write(&path, text).expect("write the kubeconfig");
        path
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Stores an object as if it had been created (uid, creationTimestamp, resourceVersion).
    pub fn insert(&self, object: Json) -> Json {
        let (resource, key) = Key::of(&object);
        let mut state = self.lock();
        let object = state.fill_new(resource, &key, object);
        state.store(key, object, "ADDED")
    }

    pub fn object(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Json> {
        let resource = by_kind(api_version, kind)?;
        self.lock()
            .objects
            .get(&Key::new(resource, namespace, name))
            .cloned()
    }

    /// Changes a stored object as another client would: a new resourceVersion and a
    /// MODIFIED event for watchers.
    pub fn modify(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        change: impl FnOnce(&mut Json),
    ) -> Json {
        let resource = by_kind(api_version, kind).expect("a kind the fake serves");
        let key = Key::new(resource, namespace, name);
        let mut state = self.lock();
        let mut object = state.objects.get(&key).cloned().expect("a stored object");
        change(&mut object);
        state.store(key, object, "MODIFIED")
    }

    /// Every stored object, in a fixed order.
    pub fn objects(&self) -> Vec<Json> {
        self.lock().objects.values().cloned().collect()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// Delays every answer by `latency`, as a real API server's own time would.
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    pub fn fault(&self, fault: Fault) {
        self.lock().faults.push(fault);
    }

    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    pub fn set_logs(&self, namespace: &str, pod: &str, container: &str, log: &str) {
        let key = (namespace.to_owned(), pod.to_owned(), container.to_owned());
        self.lock().logs.insert(key, log.to_owned());
    }

    pub fn script_exec(&self, namespace: &str, pod: &str, argv: &[&str], reply: ExecReply) {
        let argv = argv.iter().map(|a| (*a).to_owned()).collect();
        self.lock()
            .execs
            .insert((namespace.to_owned(), pod.to_owned(), argv), reply);
    }

    /// Sends an event to the open watches that want `object` (an `ERROR` event's object is a
    /// Status and goes to every watch).
    pub fn push_watch_event(&self, event_type: &str, object: &Json) {
        let state = self.lock();
        for watcher in &state.watchers {
            let wanted = event_type == "ERROR" || {
                let (_, key) = Key::of(object);
                watcher.wants(&key, object)
            };
            if wanted {
                watcher.send(event_type, object);
            }
        }
    }

    /// Ends every open watch, as the server does at its timeout.
    pub fn end_watches(&self) {
        self.lock().watchers.clear();
    }

    /// Forgets the history, as the API server's watch cache does as it moves on: a watch
    /// from a version older than the current one gets 410 Gone.
    pub fn compact(&self) {
        let mut state = self.lock();
        state.compacted = state.version;
        state.history.clear();
    }

    /// Waits (up to 5 s) until the recorded requests satisfy `done`.
    pub async fn wait_until(&self, what: &str, done: impl Fn(&[Recorded]) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !done(&self.lock().requests) {
            if tokio::time::Instant::now() > deadline {
                let seen: Vec<String> = self.requests().iter().map(Recorded::line).collect();
                panic!("timed out waiting for {what}; requests so far: {seen:#?}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

async fn handle(state: Arc<Mutex<State>>, request: axum::extract::Request) -> Response<Body> {
    let (mut parts, body) = request.into_parts();
    let upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
    let body = axum::body::to_bytes(body, 64 << 20)
        .await
        .unwrap_or_default();
    let (reply, latency) = {
        let mut state = lock(&state);
        (state.answer(Recorded::new(&parts, &body)), state.latency)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let response = Response::builder();
    match reply {
        Reply::Json {
            code,
            body,
            retry_after,
        } => {
            let mut response = response
                .status(code)
                .header(header::CONTENT_TYPE, "application/json");
            if let Some(seconds) = retry_after {
                response = response.header(header::RETRY_AFTER, seconds.to_string());
            }
            response.body(Body::from(body.to_string()))
        }
        Reply::Text(text) => response
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Body::from(text)),
        Reply::Watch { events, timeout } => {
            let deadline = tokio::time::Instant::now() + timeout;
            let stream = futures::stream::unfold(events, move |mut events| async move {
                match tokio::time::timeout_at(deadline, events.recv()).await {
                    Ok(Some(line)) => Some((Ok::<_, Infallible>(line), events)),
                    _ => None,
                }
            });
            response
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from_stream(stream))
        }
        Reply::Exec(frames) => return exec_upgrade(&parts, upgrade, frames),
        Reply::Hang => std::future::pending().await,
    }
    .expect("a response")
}

/// Answers the WebSocket upgrade with the v4 channel protocol (or v5, if only that is
/// offered), then sends the frames and closes.
fn exec_upgrade(
    parts: &Parts,
    upgrade: Option<hyper::upgrade::OnUpgrade>,
    frames: Vec<Vec<u8>>,
) -> Response<Body> {
    let header = |name: header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let offered: Vec<&str> = header(header::SEC_WEBSOCKET_PROTOCOL)
        .split(',')
        .map(str::trim)
        .collect();
    let protocol = ["v4.channel.k8s.io", "v5.channel.k8s.io"]
        .into_iter()
        .find(|p| offered.contains(p));
    let key = header(header::SEC_WEBSOCKET_KEY);
    let (Some(upgrade), Some(protocol), false, true) = (
        upgrade,
        protocol,
        key.is_empty(),
        header(header::UPGRADE).eq_ignore_ascii_case("websocket"),
    ) else {
        let body = status(400, "BadRequest", "Upgrade request required", json!({}));
        return Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .expect("a response");
    };
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else {
            return;
        };
        let mut socket = tokio_tungstenite::WebSocketStream::from_raw_socket(
            hyper_util::rt::TokioIo::new(upgraded),
            Role::Server,
            None,
        )
        .await;
        for frame in frames {
            if socket
                .send(websocket::Message::binary(frame))
                .await
                .is_err()
            {
                return;
            }
        }
        let _ = socket.close(None).await;
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(
            header::SEC_WEBSOCKET_ACCEPT,
            websocket::handshake::derive_accept_key(key.as_bytes()),
        )
        .header(header::SEC_WEBSOCKET_PROTOCOL, protocol)
        .body(Body::empty())
        .expect("a response")
}
