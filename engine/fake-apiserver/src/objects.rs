//! Checks and transformations of one object on its way into the store: the request body,
//! its identity, patches by content type, validation, the scale view and the container a
//! log or exec names.

use serde_json::{json, Value as Json};

use crate::reply::{bad_request, details, fail, Reply};
use crate::requests::Recorded;
use crate::resources::ResourceType;
use crate::store::Key;
use crate::{JSON_PATCH, MERGE, STRATEGIC};

pub(crate) const MODIFIED: &str =
    "the object has been modified; please apply your changes to the latest version and try again";

pub(crate) fn text<'a>(object: &'a Json, pointer: &str) -> Option<&'a str> {
    object.pointer(pointer).and_then(Json::as_str)
}

pub(crate) fn resource_version(object: &Json) -> Option<&str> {
    text(object, "/metadata/resourceVersion")
}

pub(crate) fn not_allowed() -> Reply {
    fail(
        405,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource",
        json!({}),
    )
}

pub(crate) fn content_type(request: &Recorded) -> &str {
    request
        .content_type
        .as_deref()
        .and_then(|c| c.split(';').next())
        .unwrap_or_default()
        .trim()
}

pub(crate) fn body_object(resource: &ResourceType, request: &Recorded) -> Result<Json, Reply> {
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
pub(crate) fn check_identity(resource: &ResourceType, key: &Key, body: &Json) -> Result<(), Reply> {
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
pub(crate) fn patched(
    resource: &ResourceType,
    current: &Json,
    request: &Recorded,
) -> Result<Json, Reply> {
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

pub(crate) fn unsupported_media_type() -> Reply {
    fail(
        415,
        "UnsupportedMediaType",
        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
        json!({}),
    )
}

/// What the API server itself would refuse with 422 about a value that decodes (types and
/// changes it refuses are in [`crate::validation`]).
pub(crate) fn validate(resource: &ResourceType, name: &str, object: &Json) -> Result<(), Reply> {
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
pub(crate) fn scale_of(object: &Json) -> Json {
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
pub(crate) fn container(pod: &Json, name: &str, wanted: Option<&str>) -> Result<String, Reply> {
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
