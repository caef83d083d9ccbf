//! What the API server's registry strategies do to an object on its way into storage, for the
//! kinds the fake serves: which part of the object a write through the main resource or the
//! `status` subresource may change, what a create resets, when `metadata.generation` moves,
//! and which kinds refuse an update that carries no resourceVersion.
//!
//! Taken from kube-apiserver's strategies (`PrepareForCreate`, `PrepareForUpdate`,
//! `AllowUnconditionalUpdate`): `customResourceStrategy` and its `statusStrategy` in
//! apiextensions-apiserver's `registry/customresource`, and the built-ins' in
//! `pkg/registry/{apps,batch,core,policy}/*/strategy.go`. A custom resource with a status
//! subresource: create drops `status`; an update of the main resource keeps the stored
//! `status`, and moves `generation` on any change outside `metadata`; an update of `/status`
//! takes only `status` from the request and keeps everything else as stored. A built-in kind
//! with a status subresource: create resets `status` (a Pod's to Pending, a Namespace's to
//! Active; a Node keeps the one its kubelet registers with); an update of the main resource
//! keeps the stored `status`; an update of `/status` keeps the stored `spec`.

use serde_json::{json, Value as Json};

use crate::reply::{details, fail, Reply};
use crate::resources::ResourceType;

/// Which endpoint of an object a write came through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// The object itself (`.../deployments/api`); also scale, which writes through it.
    Main,
    /// The status subresource (`.../deployments/api/status`).
    Status,
}

/// What a create resets before the object is stored (`PrepareForCreate`).
pub(crate) fn prepare_for_create(resource: &ResourceType, object: &mut Json) {
    if !resource.has("status") {
        return;
    }
    match (resource.custom, resource.plural) {
        (false, "nodes") => {}
        (false, "pods") => {
            let qos_class = qos_class(object);
            object["status"] = json!({"phase": "Pending", "qosClass": qos_class});
        }
        (false, "namespaces") => {
            object["status"] = json!({"phase": "Active"});
            let finalizers = &mut object["spec"]["finalizers"];
            if !finalizers
                .as_array()
                .is_some_and(|all| all.iter().any(|f| f == "kubernetes"))
            {
                match finalizers.as_array_mut() {
                    Some(all) => all.push(json!("kubernetes")),
                    None => *finalizers = json!(["kubernetes"]),
                }
            }
        }
        _ => set(object, "status", None),
    }
}

/// What an update keeps of the stored object, and the generation it gets
/// (`PrepareForUpdate`). `next` already has the stored identity and generation.
pub(crate) fn prepare_for_update(
    resource: &ResourceType,
    endpoint: Endpoint,
    current: &Json,
    next: &mut Json,
) {
    match endpoint {
        Endpoint::Main => {
            if resource.has("status") {
                set(next, "status", current.get("status"));
            }
            if changes_generation(resource, current, next) {
                let generation = current["metadata"]["generation"].as_i64().unwrap_or(1);
                next["metadata"]["generation"] = json!(generation + 1);
            }
        }
        Endpoint::Status if resource.custom => {
            let status = next.get("status").cloned();
            *next = current.clone();
            set(next, "status", status.as_ref());
        }
        Endpoint::Status => set(next, "spec", current.get("spec")),
    }
}

/// Whether an update through the main resource counts in `metadata.generation`.
fn changes_generation(resource: &ResourceType, current: &Json, next: &Json) -> bool {
    if !resource.has_generation() {
        return false;
    }
    let differs = |pointer: &str| current.pointer(pointer) != next.pointer(pointer);
    if resource.custom {
        // Anything but metadata: with a status subresource, status was put back already.
        let outside_metadata = |object: &Json| {
            let mut object = object.clone();
            if let Some(fields) = object.as_object_mut() {
                fields.remove("metadata");
            }
            object
        };
        return outside_metadata(current) != outside_metadata(next);
    }
    // A Deployment copies its annotations to its ReplicaSets, so they count too.
    differs("/spec") || resource.plural == "deployments" && differs("/metadata/annotations")
}

/// Whether a PUT without `metadata.resourceVersion` overwrites whatever is stored. Custom
/// resources, Leases and PodDisruptionBudgets refuse it with 422.
pub(crate) fn allows_unconditional_update(resource: &ResourceType) -> bool {
    !resource.custom && !matches!(resource.plural, "leases" | "poddisruptionbudgets")
}

/// The 422 of a PUT without a resourceVersion where one is required.
pub(crate) fn resource_version_required(resource: &ResourceType, name: &str) -> Reply {
    let why = "Invalid value: 0x0: must be specified for an update";
    let message = format!(
        "{} \"{name}\" is invalid: metadata.resourceVersion: {why}",
        resource.group_resource()
    );
    let mut details = details(resource, name);
    details["causes"] = json!([{"reason": "FieldValueInvalid", "message": why, "field": "metadata.resourceVersion"}]);
    fail(422, "Invalid", &message, details)
}

/// Sets a top-level field to `value`, or removes it when there is none.
fn set(object: &mut Json, field: &str, value: Option<&Json>) {
    let Some(fields) = object.as_object_mut() else {
        return;
    };
    match value {
        Some(value) => {
            fields.insert(field.to_owned(), value.clone());
        }
        None => {
            fields.remove(field);
        }
    }
}

/// A new pod's QoS class from its containers' CPU and memory: BestEffort with no requests or
/// limits, Guaranteed when every container limits both and requests what it limits (a missing
/// request is its limit), Burstable otherwise. Quantities are compared as written.
fn qos_class(pod: &Json) -> &'static str {
    let containers: Vec<&Json> = ["/spec/containers", "/spec/initContainers"]
        .iter()
        .filter_map(|pointer| pod.pointer(pointer).and_then(Json::as_array))
        .flatten()
        .collect();
    let quantity = |container: &Json, kind: &str, resource: &str| {
        container
            .pointer(&format!("/resources/{kind}/{resource}"))
            .filter(|value| !value.is_null())
            .cloned()
    };
    let mut any = false;
    let mut guaranteed = true;
    for container in &containers {
        for resource in ["cpu", "memory"] {
            let limit = quantity(container, "limits", resource);
            let request = quantity(container, "requests", resource).or_else(|| limit.clone());
            any |= limit.is_some() || request.is_some();
            guaranteed &= limit.is_some() && request == limit;
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pods_qos_class_follows_its_requests_and_limits() {
        let pod = |resources: Json| json!({"spec": {"containers": [{"name": "app", "resources": resources}]}});
        assert_eq!(qos_class(&pod(json!({}))), "BestEffort");
        assert_eq!(
            qos_class(&pod(json!({"limits": {"cpu": "1", "memory": "1Gi"}}))),
            "Guaranteed"
        );
        assert_eq!(
            qos_class(&pod(json!({"requests": {"cpu": "100m"}}))),
            "Burstable"
        );
        assert_eq!(
            qos_class(&pod(
                json!({"requests": {"cpu": "1", "memory": "512Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}})
            )),
            "Burstable"
        );
    }
}
