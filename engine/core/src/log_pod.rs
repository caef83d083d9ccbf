//! Which pod a `logs` fact with `deployment: NAME` reads: the pods the Deployment's
//! `spec.selector` selects, ordered as `kubectl logs deployment/NAME` orders them (kubectl's
//! `ByLogging`), and the first taken.
//!
//! It lives apart from the clusters so the live cluster, the dry-run and the simulator pick
//! the same pod: the executor reads the Deployment and lists its pods through [`Cluster`]
//! (`crate::effects::Cluster`) like any other read, then asks this module.

use std::cmp::Ordering;

use serde_json::Value as Json;

/// The label selector, in the text form a list request takes, of a Deployment's
/// `spec.selector` (`matchLabels` and `matchExpressions`, as `LabelSelectorAsSelector` writes
/// it). A Deployment without one selects nothing: that is an error, not every pod.
pub fn selector_of(deployment: &Json) -> Result<String, String> {
    let Some(selector) = deployment.pointer("/spec/selector") else {
        return Err("it has no spec.selector".to_owned());
    };
    let mut requirements = Vec::new();
    if let Some(labels) = selector.get("matchLabels").and_then(Json::as_object) {
        for (key, value) in labels {
            let value = value.as_str().unwrap_or_default();
            requirements.push(format!("{key}={value}"));
        }
    }
    for expression in selector
        .get("matchExpressions")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
    {
        let key = expression
            .get("key")
            .and_then(Json::as_str)
            .unwrap_or_default();
        let values: Vec<&str> = expression
            .get("values")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .filter_map(Json::as_str)
            .collect();
        let operator = expression
            .get("operator")
            .and_then(Json::as_str)
            .unwrap_or_default();
        requirements.push(match operator {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_owned(),
            "DoesNotExist" => format!("!{key}"),
            other => return Err(format!("its selector has an unknown operator `{other}`")),
        });
    }
    if requirements.is_empty() {
        return Err("its spec.selector is empty".to_owned());
    }
    Ok(requirements.join(","))
}

/// The pod `kubectl logs` reads among `pods`: assigned to a node before unassigned; running
/// before unknown before pending; ready before not; ready longer before ready less long;
/// more restarts before fewer; older before newer. Ties keep the list's order.
pub fn pick(pods: &[Json]) -> Option<&Json> {
    let mut best: Option<&Json> = None;
    for pod in pods {
        if best.is_none_or(|current| by_logging(pod, current) == Ordering::Less) {
            best = Some(pod);
        }
    }
    best
}

/// kubectl's `ByLogging` comparison (`k8s.io/kubectl/pkg/util/podutils`): `Less` is "better
/// to read the log of".
fn by_logging(a: &Json, b: &Json) -> Ordering {
    let assigned = |pod: &Json| {
        pod.pointer("/spec/nodeName")
            .and_then(Json::as_str)
            .is_some_and(|node| !node.is_empty())
    };
    // kubectl ranks a phase outside these three (Succeeded, Failed) as it ranks Running: its
    // map gives them zero. Readiness then puts them after running pods.
    let phase = |pod: &Json| match pod.pointer("/status/phase").and_then(Json::as_str) {
        Some("Unknown") => 1,
        Some("Pending") => 2,
        _ => 0,
    };
    assigned(b)
        .cmp(&assigned(a))
        .then_with(|| phase(a).cmp(&phase(b)))
        .then_with(|| ready_since(b).is_some().cmp(&ready_since(a).is_some()))
        .then_with(|| earlier_or_zero_last(ready_since(a), ready_since(b)))
        .then_with(|| restarts(b).cmp(&restarts(a)))
        .then_with(|| earlier_or_zero_last(created(a), created(b)))
}

/// When the pod's `Ready` condition turned true: `Some` for a ready pod (an empty time, when
/// the condition has none), `None` for one that is not ready.
fn ready_since(pod: &Json) -> Option<Option<jiff::Timestamp>> {
    let condition = pod
        .pointer("/status/conditions")
        .and_then(Json::as_array)?
        .iter()
        .find(|c| c.get("type").and_then(Json::as_str) == Some("Ready"))?;
    (condition.get("status").and_then(Json::as_str) == Some("True")).then(|| {
        condition
            .get("lastTransitionTime")
            .and_then(Json::as_str)
            .and_then(|text| text.parse().ok())
    })
}

fn created(pod: &Json) -> Option<Option<jiff::Timestamp>> {
    Some(
        pod.pointer("/metadata/creationTimestamp")
            .and_then(Json::as_str)
            .and_then(|text| text.parse().ok()),
    )
}

/// The highest restart count among the pod's containers.
fn restarts(pod: &Json) -> i64 {
    pod.pointer("/status/containerStatuses")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .filter_map(|status| status.get("restartCount").and_then(Json::as_i64))
        .max()
        .unwrap_or(0)
}

/// Earlier first, an empty time last (kubectl's `afterOrZero`); only for two pods that both
/// have the property (ready, or a creation time).
fn earlier_or_zero_last(
    a: Option<Option<jiff::Timestamp>>,
    b: Option<Option<jiff::Timestamp>>,
) -> Ordering {
    match (a, b) {
        (Some(Some(a)), Some(Some(b))) => a.cmp(&b),
        (Some(None), Some(Some(_))) => Ordering::Greater,
        (Some(Some(_)), Some(None)) => Ordering::Less,
        _ => Ordering::Equal,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(name: &str, node: &str, phase: &str, ready_at: Option<&str>, restarts: i64) -> Json {
        let conditions = match ready_at {
            Some(at) => json!([{"type": "Ready", "status": "True", "lastTransitionTime": at}]),
            None => json!([{"type": "Ready", "status": "False"}]),
        };
        json!({
            "metadata": {"name": name, "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"nodeName": node},
            "status": {
                "phase": phase,
                "conditions": conditions,
                "containerStatuses": [{"name": "app", "restartCount": restarts}],
            },
        })
    }

    fn picked(pods: &[Json]) -> &str {
        pick(pods)
            .and_then(|pod| pod.pointer("/metadata/name"))
            .and_then(Json::as_str)
            .unwrap_or("none")
    }

    #[test]
    fn the_pod_read_is_running_and_ready_and_the_one_ready_the_longest() {
        let pending = pod("api-pending", "", "Pending", None, 0);
        let not_ready = pod("api-starting", "n1", "Running", None, 0);
        let ready_late = pod("api-new", "n1", "Running", Some("2026-01-01T02:00:00Z"), 0);
        let ready_early = pod("api-old", "n2", "Running", Some("2026-01-01T01:00:00Z"), 0);
        assert_eq!(
            picked(&[pending.clone(), not_ready.clone()]),
            "api-starting"
        );
        assert_eq!(
            picked(&[pending, not_ready, ready_late.clone(), ready_early]),
            "api-old"
        );
        let crashing = pod(
            "api-crashing",
            "n1",
            "Running",
            Some("2026-01-01T02:00:00Z"),
            7,
        );
        assert_eq!(picked(&[ready_late, crashing]), "api-crashing");
        assert_eq!(picked(&[]), "none");
    }

    #[test]
    fn a_selector_is_written_as_a_list_request_takes_it() {
        let deployment = json!({"spec": {"selector": {
            "matchLabels": {"app": "api"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["web", "edge"]},
                {"key": "canary", "operator": "DoesNotExist"},
            ],
        }}});
        assert_eq!(
            selector_of(&deployment).as_deref(),
            Ok("app=api,tier in (web,edge),!canary")
        );
        assert_eq!(
            selector_of(&json!({"spec": {}})),
            Err("it has no spec.selector".to_owned())
        );
        assert_eq!(
            selector_of(&json!({"spec": {"selector": {}}})),
            Err("its spec.selector is empty".to_owned())
        );
    }
}
