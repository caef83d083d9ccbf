//! What kube-apiserver refuses about the values of a write, for the kinds the fake serves, as
//! it words it (issue 15, items 7 and 8). Written from the server's code, apart from the
//! engine's own table (`runbook_core::api_rules`), so the contract tests check one against
//! the other:
//!
//! - a value of the wrong type in a typed field of a built-in kind fails Go's JSON decoder:
//!   `json: cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type
//!   int32`. A create or update (the body decoded as it comes) answers 400 `Deployment in
//!   version "v1" cannot be handled as a Deployment: ...`; a merge, JSON or strategic patch
//!   (the patched object decoded, `handlers/patch.go`) answers 422 ` "" is invalid: patch:
//!   Invalid value: "<the patched object>": ...`; a server-side apply (structured-merge-diff's
//!   typed conversion) answers 500 `failed to create typed patch object (...): .spec.replicas:
//!   expected numeric (int or float), got string` (kubernetes/kubernetes#139255 would make it
//!   a 400).
//! - changes the kinds' `ValidateUpdate` refuse, 422 Invalid: a claim's storage request that
//!   shrinks (`Forbidden: field can not be less than previous value`), a Job's template and
//!   selector and a Deployment's or DaemonSet's selector (`field is immutable`), a Service's
//!   cluster IPs (`may not change once set`).

use serde_json::{json, Value as Json};

use crate::reply::{bad_request, details, fail, Reply};
use crate::resources::ResourceType;

/// How a write reached the store, which decides how a type error is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Write {
    /// POST or PUT: the body is decoded as it is.
    Body,
    /// A merge, JSON or strategic merge patch: the patched object is decoded.
    Patch,
    /// A server-side apply.
    Apply,
}

/// `(plural, path, Go type, Go struct field)`; `*` is any key of a map or item of a list.
const TYPED: &[(&str, &[&str], &str, &str)] = &[
    (
        "deployments",
        &["spec", "replicas"],
        "int32",
        "DeploymentSpec.spec.replicas",
    ),
    (
        "statefulsets",
        &["spec", "replicas"],
        "int32",
        "StatefulSetSpec.spec.replicas",
    ),
    (
        "deployments",
        &["spec", "paused"],
        "bool",
        "DeploymentSpec.spec.paused",
    ),
    ("jobs", &["spec", "suspend"], "bool", "JobSpec.spec.suspend"),
    (
        "nodes",
        &["spec", "unschedulable"],
        "bool",
        "NodeSpec.spec.unschedulable",
    ),
    (
        "*",
        &["metadata", "labels", "*"],
        "string",
        "ObjectMeta.metadata.labels",
    ),
    (
        "*",
        &["metadata", "annotations", "*"],
        "string",
        "ObjectMeta.metadata.annotations",
    ),
    ("configmaps", &["data", "*"], "string", "ConfigMap.data"),
];

fn decodes(go_type: &str, value: &Json) -> bool {
    match go_type {
        "int32" => value.is_null() || value.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
        "bool" => value.is_null() || value.is_boolean(),
        _ => value.is_null() || value.is_string(),
    }
}

/// The first value at `path` under `value` that does not decode, and its dotted path.
fn first_bad<'a>(
    value: &'a Json,
    path: &[&str],
    go_type: &str,
    at: &mut Vec<String>,
) -> Option<(String, &'a Json)> {
    let Some((first, rest)) = path.split_first() else {
        return (!decodes(go_type, value)).then(|| (at.join("."), value));
    };
    let children: Vec<(Option<String>, &Json)> = match (value, *first) {
        (Json::Object(map), "*") => map.iter().map(|(k, v)| (Some(k.clone()), v)).collect(),
        (Json::Array(items), "*") => items.iter().map(|v| (None, v)).collect(),
        (Json::Object(map), key) => map
            .get(key)
            .map(|v| (Some(key.to_owned()), v))
            .into_iter()
            .collect(),
        _ => Vec::new(),
    };
    for (key, child) in children {
        if let Some(key) = &key {
            at.push(key.clone());
        }
        let found = first_bad(child, rest, go_type, at);
        if key.is_some() {
            at.pop();
        }
        if found.is_some() {
            return found;
        }
    }
    None
}

/// Refuses a value of the wrong type, as the server does for `write`.
pub(crate) fn check_types(
    resource: &ResourceType,
    namespace: Option<&str>,
    name: &str,
    object: &Json,
    write: Write,
) -> Result<(), Reply> {
    if resource.custom {
        return Ok(());
    }
    for (plural, path, go_type, go_field) in TYPED {
        if *plural != "*" && *plural != resource.plural {
            continue;
        }
        let Some((at, value)) = first_bad(object, path, go_type, &mut Vec::new()) else {
            continue;
        };
        let found = match value {
            Json::String(_) => "string".to_owned(),
            Json::Bool(_) => "bool".to_owned(),
            Json::Array(_) => "array".to_owned(),
            Json::Object(_) => "object".to_owned(),
            Json::Number(_) if *go_type == "string" => "number".to_owned(),
            Json::Number(number) => format!("number {number}"),
            Json::Null => "null".to_owned(),
        };
        let go_error = format!(
            "json: cannot unmarshal {found} into Go struct field {go_field} of type {go_type}"
        );
        return Err(match write {
            Write::Body => bad_request(&format!(
                "{kind} in version \"{version}\" cannot be handled as a {kind}: {go_error}",
                kind = resource.kind,
                version = resource.api_version.rsplit('/').next().unwrap_or_default(),
            )),
            Write::Patch => {
                let patched = serde_json::to_string(object).unwrap_or_default();
                let message =
                    format!(" \"\" is invalid: patch: Invalid value: {patched:?}: {go_error}");
                fail(
                    422,
                    "Invalid",
                    &message,
                    json!({"causes": [{"reason": "FieldValueInvalid", "message": format!("Invalid value: {patched:?}: {go_error}"), "field": "patch"}]}),
                )
            }
            Write::Apply => {
                let expected = match *go_type {
                    "int32" => "numeric (int or float)",
                    "bool" => "boolean",
                    _ => "string",
                };
                let got = match value {
                    Json::String(_) => "string".to_owned(),
                    other => format!("&value.valueUnstructured{{Value:{other}}}"),
                };
                let object_name = match namespace {
                    Some(namespace) => format!("{namespace}/{name}"),
                    None => name.to_owned(),
                };
                let message = format!(
                    "failed to create typed patch object ({object_name}; {}, Kind={}): .{at}: expected {expected}, got {got}",
                    resource.api_version, resource.kind
                );
                fail(
                    500,
                    "InternalError",
                    &format!("Internal error occurred: {message}"),
                    json!({"causes": [{"message": message}]}),
                )
            }
        });
    }
    Ok(())
}

/// Refuses an update that changes what the kind's `ValidateUpdate` keeps.
pub(crate) fn check_update(
    resource: &ResourceType,
    name: &str,
    current: &Json,
    next: &Json,
) -> Result<(), Reply> {
    let changed = |pointer: &str| current.pointer(pointer) != next.pointer(pointer);
    let (field, why) = match resource.plural {
        "persistentvolumeclaims" => {
            let size = |object: &Json| {
                object
                    .pointer("/spec/resources/requests/storage")
                    .and_then(Json::as_str)
                    .and_then(quantity)
            };
            match (size(current), size(next)) {
                (Some(before), Some(after)) if after < before => (
                    "spec.resources.requests.storage",
                    "Forbidden: field can not be less than previous value".to_owned(),
                ),
                _ => return Ok(()),
            }
        }
        "jobs" if changed("/spec/template") => (
            "spec.template",
            format!(
                "Invalid value: {}: field is immutable",
                shown(next.pointer("/spec/template"))
            ),
        ),
        "jobs" | "deployments" | "daemonsets" if changed("/spec/selector") => (
            "spec.selector",
            format!(
                "Invalid value: {}: field is immutable",
                shown(next.pointer("/spec/selector"))
            ),
        ),
        "services" => {
            // The strategy fills `clusterIPs[0]` from a changed `clusterIP` before validating.
            let ips = |object: &Json| -> Vec<String> {
                match object.pointer("/spec/clusterIPs").and_then(Json::as_array) {
                    Some(ips) if !ips.is_empty() => ips
                        .iter()
                        .filter_map(|ip| ip.as_str().map(str::to_owned))
                        .collect(),
                    _ => object
                        .pointer("/spec/clusterIP")
                        .and_then(Json::as_str)
                        .map(str::to_owned)
                        .into_iter()
                        .collect(),
                }
            };
            let mut after = ips(next);
            if changed("/spec/clusterIP") {
                if let (Some(ip), Some(first)) = (
                    next.pointer("/spec/clusterIP").and_then(Json::as_str),
                    after.first_mut(),
                ) {
                    *first = ip.to_owned();
                }
            }
            let before = ips(current);
            let allocated = before
                .first()
                .is_some_and(|ip| !ip.is_empty() && ip != "None");
            if !allocated || before.first() == after.first() {
                return Ok(());
            }
            let list = after
                .iter()
                .map(|ip| format!("{ip:?}"))
                .collect::<Vec<_>>()
                .join(", ");
            (
                "spec.clusterIPs[0]",
                format!("Invalid value: []string{{{list}}}: may not change once set"),
            )
        }
        _ => return Ok(()),
    };
    let message = format!(
        "{} {name:?} is invalid: {field}: {why}",
        resource.group_kind()
    );
    let mut details = details(resource, name);
    details["kind"] = json!(resource.kind);
    let reason = if why.starts_with("Forbidden") {
        "FieldValueForbidden"
    } else {
        "FieldValueInvalid"
    };
    details["causes"] = json!([{"reason": reason, "message": why, "field": field}]);
    Err(fail(422, "Invalid", &message, details))
}

/// How Go's `%v` of a struct is stood in for: the value as JSON.
fn shown(value: Option<&Json>) -> String {
    value.map_or_else(|| "null".to_owned(), Json::to_string)
}

/// A quantity in base units (`100Gi`, `1.5T`, `500M`).
fn quantity(text: &str) -> Option<f64> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        _ => return None,
    };
    Some(number * factor)
}
