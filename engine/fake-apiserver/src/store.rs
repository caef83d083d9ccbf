//! The object store with the API server's semantics: resourceVersion on every write,
//! optimistic concurrency, `dryRun=All`, the four patch content types, watches with history
//! and compaction, the status and scale subresources, evictions, logs and exec. One `State` behind one
//! lock, so every request sees a consistent store, as etcd gives a real server.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use serde_json::{json, Value as Json};
use tokio::sync::mpsc;

use crate::objects::{
    body_object, check_identity, container, content_type, not_allowed, patched, resource_version,
    scale_of, text, validate, MODIFIED,
};
use crate::reply::{
    bad_request, conflict, details, fail, json_reply, no_such_path, not_found, ok, status, Reply,
};
use crate::requests::{ExecReply, Fault, FaultAnswer, Recorded};
use crate::resources::{by_kind, group_list, resource_list, ResourceType};
use crate::routes::{route, Route};
use crate::selectors::Selectors;
use crate::strategy::{
    allows_unconditional_update, prepare_for_create, prepare_for_update, resource_version_required,
    Endpoint,
};
use crate::validation::{check_types, check_update, Write};
use crate::{APPLY, VERSION};

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Key {
    pub(crate) api_version: String,
    pub(crate) plural: String,
    pub(crate) namespace: Option<String>,
    pub(crate) name: String,
}

impl Key {
    pub(crate) fn new(resource: &ResourceType, namespace: Option<&str>, name: &str) -> Self {
        Self {
            api_version: resource.api_version.to_owned(),
            plural: resource.plural.to_owned(),
            namespace: namespace.filter(|_| resource.namespaced).map(str::to_owned),
            name: name.to_owned(),
        }
    }

    pub(crate) fn of(object: &Json) -> (&'static ResourceType, Self) {
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

pub(crate) struct Watcher {
    pub(crate) api_version: String,
    pub(crate) plural: String,
    pub(crate) namespace: Option<String>,
    pub(crate) selectors: Selectors,
    pub(crate) sender: mpsc::UnboundedSender<Bytes>,
}

impl Watcher {
    pub(crate) fn wants(&self, key: &Key, object: &Json) -> bool {
        key.api_version == self.api_version
            && key.plural == self.plural
            && (self.namespace.is_none() || key.namespace == self.namespace)
            && self.selectors.select(object)
    }

    pub(crate) fn send(&self, event_type: &str, object: &Json) {
        let mut line =
            serde_json::to_vec(&json!({"type": event_type, "object": object})).unwrap_or_default();
        line.push(b'\n');
        let _ = self.sender.send(Bytes::from(line));
    }
}

#[derive(Default)]
pub(crate) struct State {
    pub(crate) objects: BTreeMap<Key, Json>,
    /// The last resourceVersion handed out.
    pub(crate) version: u64,
    /// Watches from versions older than this get 410 Gone.
    pub(crate) compacted: u64,
    pub(crate) history: Vec<(u64, Key, &'static str, Json)>,
    pub(crate) watchers: Vec<Watcher>,
    pub(crate) requests: Vec<Recorded>,
    pub(crate) faults: Vec<Fault>,
    /// By namespace, pod and container.
    pub(crate) logs: BTreeMap<(String, String, String), String>,
    /// The log of a container's previous instance (one that restarted), by namespace, pod and
    /// container: what `previous=true` reads.
    pub(crate) previous_logs: BTreeMap<(String, String, String), String>,
    /// By namespace, pod and argv.
    pub(crate) execs: BTreeMap<(String, String, Vec<String>), ExecReply>,
    pub(crate) uids: u64,
    /// Added before every answer, as a real server's time would be (the benchmark's knob).
    pub(crate) latency: Duration,
    /// Bearer tokens a TokenReview authenticates, and the `user` it answers with.
    pub(crate) tokens: BTreeMap<String, Json>,
    /// What SubjectAccessReviews allow.
    pub(crate) grants: Vec<crate::reviews::Grant>,
}

impl State {
    pub(crate) fn answer(&mut self, request: Recorded) -> Reply {
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

    pub(crate) fn fault(&mut self, request: &Recorded) -> Option<FaultAnswer> {
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

    pub(crate) fn serve(&mut self, request: &Recorded) -> Result<Reply, Reply> {
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
            ("POST", crate::reviews::TOKEN_REVIEWS) => return Ok(self.token_review(request)),
            ("POST", crate::reviews::ACCESS_REVIEWS) => return Ok(self.access_review(request)),
            ("POST", crate::reviews::SELF_REVIEWS) => return Ok(self.self_review(request)),
            _ => {}
        }
        if let Some(refused) = self.approval_admission(request) {
            return Ok(refused);
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
        let endpoint = match subresource.as_deref() {
            None => Some(Endpoint::Main),
            Some("status") if resource.has("status") => Some(Endpoint::Status),
            Some(_) => None,
        };
        match (method, endpoint, subresource.as_deref()) {
            ("GET", Some(_), _) => self.get(resource, &key).map(ok),
            ("PUT", Some(endpoint), _) => self.update(resource, endpoint, key, request, dry),
            ("PATCH", Some(endpoint), _) => self.patch(resource, endpoint, key, request, dry),
            ("DELETE", Some(Endpoint::Main), _) => self.delete(resource, &key, request, dry),
            (_, None, Some("scale")) if resource.has("scale") => {
                self.scale(resource, key, request, dry)
            }
            ("POST", None, Some("eviction")) if resource.has("eviction") => {
                self.evict(resource, &key, request, dry)
            }
            ("GET", None, Some("log")) if resource.has("log") => self.log(resource, &key, request),
            ("GET" | "POST", None, Some("exec")) if resource.has("exec") => {
                self.exec(resource, &key, request)
            }
            (_, None, Some(sub)) if !resource.has(sub) => Err(no_such_path()),
            _ => Err(not_allowed()),
        }
    }

    pub(crate) fn get(&self, resource: &ResourceType, key: &Key) -> Result<Json, Reply> {
        self.objects
            .get(key)
            .cloned()
            .ok_or_else(|| not_found(resource, &key.name))
    }

    pub(crate) fn list(
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

    pub(crate) fn watch(
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

    pub(crate) fn create(
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
        self.commit(resource, Endpoint::Main, key, object, dry, Write::Body)
    }

    pub(crate) fn update(
        &mut self,
        resource: &ResourceType,
        endpoint: Endpoint,
        key: Key,
        request: &Recorded,
        dry: bool,
    ) -> Result<Reply, Reply> {
        let object = body_object(resource, request)?;
        let current = self.get(resource, &key)?;
        check_identity(resource, &key, &object)?;
        match resource_version(&object) {
            Some(version) if Some(version) != resource_version(&current) => {
                return Err(conflict(resource, &key.name, MODIFIED))
            }
            None if !allows_unconditional_update(resource) => {
                return Err(resource_version_required(resource, &key.name))
            }
            _ => {}
        }
        self.commit(resource, endpoint, key, object, dry, Write::Body)
    }

    pub(crate) fn patch(
        &mut self,
        resource: &ResourceType,
        endpoint: Endpoint,
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
            // Apply creates an absent object, but only through the object itself.
            if current.is_none() && endpoint == Endpoint::Status {
                return Err(not_found(resource, &key.name));
            }
            let mut next = current.unwrap_or_else(|| json!({}));
            json_patch::merge(&mut next, &body);
            return self.commit(resource, endpoint, key, next, dry, Write::Apply);
        }
        let current = current.ok_or_else(|| not_found(resource, &key.name))?;
        let next = patched(resource, &current, request)?;
        if resource_version(&next).is_some_and(|v| Some(v) != resource_version(&current)) {
            return Err(conflict(resource, &key.name, MODIFIED));
        }
        self.commit(resource, endpoint, key, next, dry, Write::Patch)
    }

    pub(crate) fn delete(
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

    pub(crate) fn scale(
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
        match self.commit(resource, Endpoint::Main, key, next, dry, Write::Body)? {
            Reply::Json { body, .. } => Ok(ok(scale_of(&body))),
            other => Ok(other),
        }
    }

    pub(crate) fn evict(
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

    pub(crate) fn log(
        &self,
        resource: &ResourceType,
        key: &Key,
        request: &Recorded,
    ) -> Result<Reply, Reply> {
        let pod = self.get(resource, key)?;
        let container = container(&pod, &key.name, request.param("container"))?;
        let namespace = key.namespace.clone().unwrap_or_default();
        let id = (namespace, key.name.clone(), container);
        let log = if request.param("previous") == Some("true") {
            // The kubelet's answer, relayed as a 400, for a container that never restarted.
            self.previous_logs.get(&id).cloned().ok_or_else(|| {
                bad_request(&format!(
                    "previous terminated container \"{}\" in pod \"{}\" not found",
                    id.2, id.1
                ))
            })?
        } else {
            self.logs.get(&id).cloned().unwrap_or_default()
        };
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

    pub(crate) fn exec(
        &self,
        resource: &ResourceType,
        key: &Key,
        request: &Recorded,
    ) -> Result<Reply, Reply> {
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

    /// Stores `next` as the object at `key` (creating it when absent), as a write through
    /// `endpoint` does: validated, identity fields kept, what the kind's strategy resets reset
    /// (see [`crate::strategy`]), resourceVersion and generation bumped; in a dry run the
    /// answer is the same and nothing is kept.
    pub(crate) fn commit(
        &mut self,
        resource: &ResourceType,
        endpoint: Endpoint,
        key: Key,
        mut next: Json,
        dry: bool,
        write: Write,
    ) -> Result<Reply, Reply> {
        check_types(resource, key.namespace.as_deref(), &key.name, &next, write)?;
        validate(resource, &key.name, &next)?;
        let Some(current) = self.objects.get(&key).cloned() else {
            prepare_for_create(resource, &mut next);
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
        prepare_for_update(resource, endpoint, &current, &mut next);
        check_update(resource, &key.name, &current, &next)?;
        if next == current {
            return Ok(ok(current));
        }
        if dry {
            return Ok(ok(next));
        }
        Ok(ok(self.store(key, next, "MODIFIED")))
    }

    pub(crate) fn fill_new(
        &mut self,
        resource: &ResourceType,
        key: &Key,
        mut object: Json,
    ) -> Json {
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

    pub(crate) fn store(&mut self, key: Key, mut object: Json, event_type: &'static str) -> Json {
        self.version += 1;
        object["metadata"]["resourceVersion"] = json!(self.version.to_string());
        self.objects.insert(key.clone(), object.clone());
        self.emit(event_type, key, &object);
        object
    }

    pub(crate) fn remove(&mut self, key: &Key) -> Option<Json> {
        let mut object = self.objects.remove(key)?;
        self.version += 1;
        object["metadata"]["resourceVersion"] = json!(self.version.to_string());
        self.emit("DELETED", key.clone(), &object);
        Some(object)
    }

    pub(crate) fn emit(&mut self, event_type: &'static str, key: Key, object: &Json) {
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
