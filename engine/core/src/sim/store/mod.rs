//! The simulated API server's object store and the writes it accepts.
//!
//! Every write goes through [`Store::commit`]: identity fields may not change, a
//! `resourceVersion` in the new object is a precondition, `metadata.generation` moves when
//! `spec` does, a simple controller brings workload status to the desired state (unless the
//! object is annotated `sim.runbook.dev/stuck: "true"`), and a new `resourceVersion` is taken
//! from one counter. A server dry-run runs the same code on a copy of the store and keeps the
//! old `resourceVersion`.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value as Json};

use super::selector::selector_matches;
use super::Mutation;
use crate::drain::{skip_reason, uses_empty_dir};
use crate::effects::{DrainOptions, DrainReport, EffectError, EffectResult};

mod drain;
mod merge;
mod status;

pub use merge::strategic_merge;
use status::{lagging_status, reconcile_status};

/// The annotation that keeps the controller model away from an object.
pub const STUCK_ANNOTATION: &str = "sim.runbook.dev/stuck";

pub use crate::kinds::is_cluster_scoped;

/// The API group of an apiVersion: `apps/v1` -> `apps`, `v1` -> `` (the core group).
pub fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(group, _)| group)
}

/// Where an object is stored: the API server serves one object under every version of its
/// group, so the version is not part of the key. Namespaced kinds without a namespace are in
/// `default`; cluster-scoped kinds ignore any namespace given.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StoreKey {
    pub group: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl StoreKey {
    pub fn new(api_version: &str, kind: &str, namespace: Option<&str>, name: &str) -> Self {
        let namespace = if is_cluster_scoped(kind) {
            None
        } else {
            Some(
                namespace
                    .filter(|ns| !ns.is_empty())
                    .unwrap_or("default")
                    .to_owned(),
            )
        };
        Self {
            group: group_of(api_version).to_owned(),
            kind: kind.to_owned(),
            namespace,
            name: name.to_owned(),
        }
    }

    pub fn of(key: &crate::effects::ObjectKey) -> Self {
        Self::new(
            &key.api_version,
            &key.kind,
            key.namespace.as_deref(),
            &key.name,
        )
    }

    /// The key of an object, if it has `apiVersion`, `kind` and `metadata.name`.
    pub fn of_object(object: &Json) -> Option<Self> {
        Some(Self::new(
            object.get("apiVersion")?.as_str()?,
            object.get("kind")?.as_str()?,
            object.pointer("/metadata/namespace").and_then(Json::as_str),
            object.pointer("/metadata/name")?.as_str()?,
        ))
    }

    /// `Deployment shop/api`, `Node n1`: how mutations name their target.
    pub fn display(&self) -> String {
        match &self.namespace {
            Some(namespace) => format!("{} {namespace}/{}", self.kind, self.name),
            None => format!("{} {}", self.kind, self.name),
        }
    }

    /// `deployments.apps "api" not found in namespace "shop"`, as the API server says it.
    pub fn not_found(&self) -> EffectError {
        let resource = plural(&self.kind);
        let resource = if self.group.is_empty() {
            resource
        } else {
            format!("{resource}.{}", self.group)
        };
        EffectError::NotFound(match &self.namespace {
            Some(namespace) => {
                format!(
                    "{resource} \"{}\" not found in namespace \"{namespace}\"",
                    self.name
                )
            }
            None => format!("{resource} \"{}\" not found", self.name),
        })
    }
}

/// The resource name of a kind: `Deployment` -> `deployments`, `NetworkPolicy` ->
/// `networkpolicies`, `Ingress` -> `ingresses`.
fn plural(kind: &str) -> String {
    let lower = kind.to_lowercase();
    if lower == "endpoints" {
        lower
    } else if lower.ends_with('s') || lower.ends_with('x') || lower.ends_with("ch") {
        format!("{lower}es")
    } else if let Some(stem) = lower
        .strip_suffix('y')
        .filter(|stem| !stem.ends_with(['a', 'e', 'i', 'o', 'u']))
    {
        format!("{stem}ies")
    } else {
        format!("{lower}s")
    }
}

/// What the store holds: the objects, the counters for resource versions and uids, and the
/// workloads whose controller has not caught up yet (with a scenario's `reconcile.delay`).
#[derive(Clone, Debug, Default)]
pub struct Store {
    pub objects: BTreeMap<StoreKey, Json>,
    revision: u64,
    uids: u64,
    /// How long a Deployment's or StatefulSet's status lags behind a scale or restart; `None`
    /// reconciles at once.
    pub reconcile_delay: Option<std::time::Duration>,
    /// The workloads whose status lags, each with when it catches up.
    pending: BTreeMap<StoreKey, tokio::time::Instant>,
}

fn metadata_mut(object: &mut Json) -> &mut Map<String, Json> {
    if !object.get("metadata").is_some_and(Json::is_object) {
        object["metadata"] = json!({});
    }
    match object.get_mut("metadata") {
        Some(Json::Object(metadata)) => metadata,
        _ => unreachable!("metadata was just made an object"),
    }
}

fn generation(object: &Json) -> i64 {
    object
        .pointer("/metadata/generation")
        .and_then(Json::as_i64)
        .unwrap_or(1)
}

pub fn is_stuck(object: &Json) -> bool {
    object
        .pointer("/metadata/annotations")
        .and_then(|annotations| annotations.get(STUCK_ANNOTATION))
        .and_then(Json::as_str)
        == Some("true")
}

fn compact(value: &Json) -> String {
    let text = value.to_string();
    if text.chars().count() > 200 {
        format!("{}...", text.chars().take(200).collect::<String>())
    } else {
        text
    }
}

/// The `kubectl` rules for drain: which pods are left alone.
fn pod_name(key: &StoreKey) -> String {
    format!("{}/{}", key.namespace.as_deref().unwrap_or(""), key.name)
}

impl Store {
    pub fn next_revision(&mut self) -> String {
        self.revision += 1;
        self.revision.to_string()
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    fn next_uid(&mut self) -> String {
        self.uids += 1;
        format!("00000000-0000-4000-8000-{:012x}", self.uids)
    }

    /// Adds a scenario object as the API server would hold it: namespace defaulted, a uid,
    /// `generation` 1 for objects with a spec, and a fresh `resourceVersion`.
    pub fn load(&mut self, mut object: Json) {
        let Some(key) = StoreKey::of_object(&object) else {
            return;
        };
        let has_spec = object.get("spec").is_some();
        let uid = self.next_uid();
        let revision = self.next_revision();
        let metadata = metadata_mut(&mut object);
        match &key.namespace {
            Some(namespace) => {
                metadata.insert("namespace".into(), json!(namespace));
            }
            None => {
                metadata.shift_remove("namespace");
            }
        }
        metadata.entry("uid").or_insert_with(|| json!(uid));
        if has_spec {
            metadata.entry("generation").or_insert_with(|| json!(1));
        }
        metadata.insert("resourceVersion".into(), json!(revision));
        self.objects.insert(key, object);
    }

    /// A change a controller makes on its own (a scenario's `changes`): merged into the
    /// object as a JSON merge patch, or the object is created, or deleted. A new
    /// `resourceVersion` either way; not one of the run's mutations.
    pub fn controller_change(&mut self, object: &serde_json::Map<String, Json>, delete: bool) {
        let object = Json::Object(object.clone());
        let Some(key) = StoreKey::of_object(&object) else {
            return;
        };
        if delete {
            self.objects.remove(&key);
            return;
        }
        match self.objects.get(&key).cloned() {
            Some(mut current) => {
                let mut patch = object;
                if let Some(metadata) = patch.get_mut("metadata").and_then(Json::as_object_mut) {
                    metadata.shift_remove("namespace");
                }
                json_patch::merge(&mut current, &patch);
                let revision = self.next_revision();
                metadata_mut(&mut current).insert("resourceVersion".into(), json!(revision));
                self.objects.insert(key, current);
            }
            None => self.load(object),
        }
    }

    pub fn get(&self, key: &StoreKey) -> EffectResult<&Json> {
        self.objects.get(key).ok_or_else(|| key.not_found())
    }

    /// Stores `new` in place of the object at `key` (`None` for a create) and returns it.
    /// `reconcile` runs the controller model even when `spec` did not change (scale does).
    fn commit(
        &mut self,
        key: &StoreKey,
        mut new: Json,
        dry: bool,
        reconcile: bool,
    ) -> EffectResult<Json> {
        let old = self.objects.get(key).cloned();
        let spec_changed = match &old {
            Some(old) => {
                self.check_identity(key, old, &mut new)?;
                if let Some(refusal) =
                    crate::api_rules::refused_change(&key.group, &key.kind, &key.name, old, &new)
                {
                    return Err(EffectError::Invalid(refusal));
                }
                let changed = old.get("spec") != new.get("spec");
                let generation = generation(old) + i64::from(changed);
                if new.get("spec").is_some() || old.pointer("/metadata/generation").is_some() {
                    metadata_mut(&mut new).insert("generation".into(), json!(generation));
                }
                changed
            }
            None => {
                let has_spec = new.get("spec").is_some();
                let metadata = metadata_mut(&mut new);
                metadata.shift_remove("resourceVersion");
                if has_spec {
                    metadata.insert("generation".into(), json!(1));
                }
                if !dry {
                    let uid = self.next_uid();
                    metadata_mut(&mut new).insert("uid".into(), json!(uid));
                }
                true
            }
        };
        if dry {
            return Ok(new);
        }
        if spec_changed || reconcile {
            self.reconcile(key, old.as_ref(), &mut new);
        }
        if old.as_ref() == Some(&new) {
            return Ok(new); // A no-op write keeps its resourceVersion.
        }
        let revision = self.next_revision();
        metadata_mut(&mut new).insert("resourceVersion".into(), json!(revision));
        self.objects.insert(key.clone(), new.clone());
        Ok(new)
    }

    /// The controller model after a write that moved `spec` (or a scale): at once, or, with a
    /// delay for a Deployment or StatefulSet, a lagging status now and the rest when
    /// [`Store::settle`] finds the delay over.
    fn reconcile(&mut self, key: &StoreKey, old: Option<&Json>, new: &mut Json) {
        let delay = self
            .reconcile_delay
            .filter(|_| matches!(key.kind.as_str(), "Deployment" | "StatefulSet"));
        match delay {
            Some(delay) if !is_stuck(new) => {
                lagging_status(old, new);
                self.pending
                    .insert(key.clone(), tokio::time::Instant::now() + delay);
            }
            _ => reconcile_status(new),
        }
    }

    /// Brings every workload whose delay is over (at `now`) to its spec, as the controller's
    /// own status write (a new `resourceVersion`).
    pub fn settle(&mut self, now: tokio::time::Instant) {
        let due: Vec<StoreKey> = self
            .pending
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(key, _)| key.clone())
            .collect();
        for key in due {
            self.pending.remove(&key);
            let Some(mut object) = self.objects.get(&key).cloned() else {
                continue; // Deleted meanwhile.
            };
            if let Some(status) = object.get_mut("status").and_then(Json::as_object_mut) {
                status.shift_remove("unavailableReplicas");
            }
            reconcile_status(&mut object);
            let revision = self.next_revision();
            metadata_mut(&mut object).insert("resourceVersion".into(), json!(revision));
            self.objects.insert(key, object);
        }
    }

    /// The name, namespace, kind, group and uid of an object cannot change; a
    /// `resourceVersion` in the new object must be the current one.
    fn check_identity(&self, key: &StoreKey, old: &Json, new: &mut Json) -> EffectResult<()> {
        let Some(new_key) = StoreKey::of_object(new) else {
            return Err(EffectError::Invalid(format!(
                "{}: apiVersion, kind and metadata.name are required",
                key.display()
            )));
        };
        if &new_key != key {
            return Err(EffectError::Invalid(format!(
                "{}: the object's identity cannot change (to {})",
                key.display(),
                new_key.display()
            )));
        }
        let uid = |object: &Json| object.pointer("/metadata/uid").cloned();
        if uid(new).is_some() && uid(new) != uid(old) {
            return Err(EffectError::Invalid(format!(
                "{}: metadata.uid: field is immutable",
                key.display()
            )));
        }
        let current = old.pointer("/metadata/resourceVersion").cloned();
        match new.pointer("/metadata/resourceVersion") {
            Some(given) if Some(given) != current.as_ref() => {
                return Err(EffectError::Conflict(format!(
                    "Operation cannot be fulfilled on {}: the object has been modified; please apply your changes to the latest version and try again (resourceVersion {} is not the current {})",
                    key.display(),
                    given,
                    current.unwrap_or(Json::Null)
                )));
            }
            Some(_) => {}
            None => {
                if let Some(current) = current {
                    metadata_mut(new).insert("resourceVersion".into(), current);
                }
            }
        }
        // The apiVersion stays as stored; the caller may have asked through another version.
        if let Some(api_version) = old.get("apiVersion") {
            new["apiVersion"] = api_version.clone();
        }
        Ok(())
    }

    pub fn scale(
        &mut self,
        key: &StoreKey,
        replicas: i64,
        dry: bool,
        log: &mut Vec<Mutation>,
    ) -> EffectResult<Json> {
        if !crate::kinds::has_scale(&key.kind) {
            return Err(EffectError::Invalid(format!(
                "{} has no scale subresource (only Deployment, StatefulSet and ReplicaSet do)",
                key.display()
            )));
        }
        if replicas < 0 {
            return Err(EffectError::Invalid(format!(
                "{}: spec.replicas: must be greater than or equal to 0, found {replicas}",
                key.display()
            )));
        }
        let mut object = self.get(key)?.clone();
        let before = object
            .pointer("/spec/replicas")
            .and_then(Json::as_i64)
            .unwrap_or(1);
        ensure_object(&mut object, "spec").insert("replicas".into(), json!(replicas));
        let after = self.commit(key, object, dry, true)?;
        log.push(Mutation::new(
            "scale",
            key,
            format!("replicas {before} -> {replicas}"),
        ));
        Ok(after)
    }

    pub fn restart(
        &mut self,
        key: &StoreKey,
        at: &str,
        dry: bool,
        log: &mut Vec<Mutation>,
    ) -> EffectResult<Json> {
        if !matches!(
            key.kind.as_str(),
            "Deployment" | "StatefulSet" | "DaemonSet"
        ) {
            return Err(EffectError::Invalid(format!(
                "{}: rollout restart works on Deployment, StatefulSet and DaemonSet only",
                key.display()
            )));
        }
        let mut object = self.get(key)?.clone();
        let spec = ensure_object(&mut object, "spec");
        let template = ensure_field(spec, "template");
        let metadata = ensure_field(template, "metadata");
        let annotations = ensure_field(metadata, "annotations");
        annotations.insert("kubectl.kubernetes.io/restartedAt".into(), json!(at));
        let after = self.commit(key, object, dry, false)?;
        log.push(Mutation::new("restart", key, format!("restartedAt {at}")));
        Ok(after)
    }

    pub fn patch(
        &mut self,
        key: &StoreKey,
        patch_type: crate::document::PatchType,
        body: &Json,
        dry: bool,
        log: &mut Vec<Mutation>,
    ) -> EffectResult<Json> {
        use crate::document::PatchType;
        let mut object = self.get(key)?.clone();
        // As the API server: a resourceVersion in a merge or strategic patch is a
        // precondition, and the version moves on with the write whatever it said.
        let mut body = body.clone();
        if patch_type != PatchType::Json {
            let wanted = body
                .pointer_mut("/metadata")
                .and_then(Json::as_object_mut)
                .and_then(|metadata| metadata.remove("resourceVersion"));
            if let Some(wanted) = wanted {
                if Some(&wanted) != object.pointer("/metadata/resourceVersion") {
                    return Err(EffectError::Conflict(format!(
                        "Operation cannot be fulfilled on {}: the object has been modified; please apply your changes to the latest version and try again",
                        key.display()
                    )));
                }
                if body["metadata"]
                    .as_object()
                    .is_some_and(serde_json::Map::is_empty)
                {
                    if let Some(fields) = body.as_object_mut() {
                        fields.remove("metadata");
                    }
                }
            }
        }
        let body = &body;
        let name = match patch_type {
            PatchType::Merge => {
                require_object(key, body, "a merge patch")?;
                json_patch::merge(&mut object, body);
                "merge"
            }
            PatchType::Strategic => {
                require_object(key, body, "a strategic merge patch")?;
                strategic_merge(&mut object, body);
                "strategic"
            }
            PatchType::Json => {
                let operations: json_patch::Patch =
                    serde_json::from_value(body.clone()).map_err(|error| {
                        EffectError::Invalid(format!(
                            "{}: not a JSON patch (a list of operations): {error}",
                            key.display()
                        ))
                    })?;
                json_patch::patch(&mut object, &operations).map_err(|error| {
                    EffectError::Invalid(format!(
                        "{}: the JSON patch does not apply: {error}",
                        key.display()
                    ))
                })?;
                "json"
            }
        };
        check_types(key, &object, Write::Patch)?;
        let after = self.commit(key, object, dry, false)?;
        log.push(Mutation::new(
            "patch",
            key,
            format!("{name} {}", compact(body)),
        ));
        Ok(after)
    }

    /// Server-side apply, approximated: create when absent, else merge the manifest into the
    /// object (lists of named items merged by name). `status` in the manifest is ignored, as
    /// the status subresource would.
    pub fn apply(
        &mut self,
        manifest: &Json,
        dry: bool,
        log: &mut Vec<Mutation>,
    ) -> EffectResult<Json> {
        let Some(fields) = manifest.as_object() else {
            return Err(EffectError::Invalid(
                "the manifest to apply must be an object".into(),
            ));
        };
        for (pointer, name) in [
            ("/apiVersion", "apiVersion"),
            ("/kind", "kind"),
            ("/metadata/name", "metadata.name"),
        ] {
            let given = manifest.pointer(pointer).and_then(Json::as_str);
            if given.is_none_or(str::is_empty) {
                return Err(EffectError::Invalid(format!(
                    "the manifest to apply has no {name}"
                )));
            }
        }
        let Some(key) = StoreKey::of_object(manifest) else {
            return Err(EffectError::Invalid("the manifest has no name".into()));
        };
        let mut manifest = Json::Object(fields.clone());
        if let Some(fields) = manifest.as_object_mut() {
            fields.shift_remove("status");
        }
        let namespace = key.namespace.clone();
        {
            let metadata = metadata_mut(&mut manifest);
            match namespace {
                Some(namespace) => {
                    metadata.insert("namespace".into(), json!(namespace));
                }
                None => {
                    metadata.shift_remove("namespace");
                }
            }
        }
        let (object, detail) = match self.objects.get(&key) {
            None => (manifest.clone(), "created"),
            Some(existing) => {
                let mut object = existing.clone();
                strategic_merge(&mut object, &manifest);
                (object, "configured")
            }
        };
        check_types(&key, &object, Write::Apply)?;
        let before = self.objects.get(&key).cloned();
        let after = self.commit(&key, object, dry, false)?;
        let detail = if before.as_ref() == Some(&after) {
            "unchanged"
        } else {
            detail
        };
        log.push(Mutation::new("apply", &key, detail.to_owned()));
        Ok(after)
    }

    /// Deletes the object and, unless `orphan`, its dependents (by `ownerReferences`).
    pub fn delete(
        &mut self,
        key: &StoreKey,
        orphan: bool,
        log: &mut Vec<Mutation>,
    ) -> EffectResult<()> {
        let object = self.get(key)?.clone();
        self.objects.remove(key);
        log.push(Mutation::new("delete", key, "deleted".to_owned()));
        if orphan {
            return Ok(());
        }
        let mut owners = vec![(key.clone(), object)];
        while let Some((owner_key, owner)) = owners.pop() {
            let uid = owner.pointer("/metadata/uid").and_then(Json::as_str);
            let dependents: Vec<StoreKey> = self
                .objects
                .iter()
                .filter(|(dependent_key, dependent)| {
                    (owner_key.namespace.is_none()
                        || dependent_key.namespace == owner_key.namespace)
                        && dependent
                            .pointer("/metadata/ownerReferences")
                            .and_then(Json::as_array)
                            .is_some_and(|references| {
                                references.iter().any(|reference| {
                                    let field =
                                        |name: &str| reference.get(name).and_then(Json::as_str);
                                    match (field("uid"), uid) {
                                        (Some(theirs), Some(ours)) => theirs == ours,
                                        _ => {
                                            field("kind") == Some(owner_key.kind.as_str())
                                                && field("name") == Some(owner_key.name.as_str())
                                        }
                                    }
                                })
                            })
                })
                .map(|(dependent_key, _)| dependent_key.clone())
                .collect();
            for dependent_key in dependents {
                if let Some(dependent) = self.objects.remove(&dependent_key) {
                    log.push(Mutation::new(
                        "delete",
                        &dependent_key,
                        format!("garbage-collected (owner {})", owner_key.display()),
                    ));
                    owners.push((dependent_key, dependent));
                }
            }
        }
        Ok(())
    }

    pub fn set_unschedulable(
        &mut self,
        node: &str,
        unschedulable: bool,
        dry: bool,
        log: &mut Vec<Mutation>,
    ) -> EffectResult<Json> {
        let key = StoreKey::new("v1", "Node", None, node);
        let mut object = self.get(&key)?.clone();
        let spec = ensure_object(&mut object, "spec");
        if unschedulable {
            spec.insert("unschedulable".into(), json!(true));
        } else {
            spec.shift_remove("unschedulable");
        }
        let after = self.commit(&key, object, dry, false)?;
        let verb = if unschedulable { "cordon" } else { "uncordon" };
        log.push(Mutation::new(
            verb,
            &key,
            format!("unschedulable {unschedulable}"),
        ));
        Ok(after)
    }
}

/// How a write reached the server, which decides how it words a value of the wrong type.
#[derive(Clone, Copy)]
enum Write {
    Patch,
    Apply,
}

/// Refuses an object holding a value of the wrong type in a field the server decodes into a
/// typed struct (see [`crate::api_rules::TYPED_FIELDS`]), as the API server words it: a
/// custom resource by its CRD's schema (422); a built-in kind's merge, strategic or JSON patch
/// by the decoder (422, `patch: Invalid value: ...`, where the server shows the whole patched
/// object and this shows `{...}`); a server-side apply by structured-merge-diff (which a real
/// server answers with a 500 today, though the same request never succeeds).
fn check_types(key: &StoreKey, object: &Json, write: Write) -> EffectResult<()> {
    let Some(mismatch) = crate::api_rules::type_mismatch(&key.kind, object) else {
        return Ok(());
    };
    let qualified = if key.group.is_empty() {
        key.kind.clone()
    } else {
        format!("{}.{}", key.kind, key.group)
    };
    let message = match (mismatch.field.go_field, write) {
        (None, _) => format!(
            "{qualified} {:?} is invalid: {}",
            key.name,
            mismatch.schema_error()
        ),
        (Some(_), Write::Patch) => format!(
            "\"\" is invalid: patch: Invalid value: \"{{...}}\": {}",
            mismatch.go_error()
        ),
        (Some(_), Write::Apply) => {
            let name = match &key.namespace {
                Some(namespace) => format!("{namespace}/{}", key.name),
                None => key.name.clone(),
            };
            let api_version = object
                .get("apiVersion")
                .and_then(Json::as_str)
                .unwrap_or_default();
            format!(
                "failed to create typed patch object ({name}; {api_version}, Kind={}): {}",
                key.kind,
                mismatch.apply_error()
            )
        }
    };
    Err(EffectError::Invalid(message))
}

fn require_object(key: &StoreKey, body: &Json, what: &str) -> EffectResult<()> {
    if body.is_object() {
        Ok(())
    } else {
        Err(EffectError::Invalid(format!(
            "{}: {what} must be an object",
            key.display()
        )))
    }
}

/// The object under `field`, made one if it is missing or not an object.
fn ensure_object<'a>(parent: &'a mut Json, field: &str) -> &'a mut Map<String, Json> {
    if !parent.get(field).is_some_and(Json::is_object) {
        parent[field] = json!({});
    }
    match parent.get_mut(field) {
        Some(Json::Object(map)) => map,
        _ => unreachable!("the field was just made an object"),
    }
}

/// The object under `field` of a map, made one if it is missing or not an object.
fn ensure_field<'a>(parent: &'a mut Map<String, Json>, field: &str) -> &'a mut Map<String, Json> {
    let entry = parent.entry(field.to_owned()).or_insert_with(|| json!({}));
    if !entry.is_object() {
        *entry = json!({});
    }
    match entry {
        Json::Object(map) => map,
        _ => unreachable!("the field was just made an object"),
    }
}
