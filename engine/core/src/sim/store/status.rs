//! The controller model: what a workload's status becomes after a write.

use super::*;

/// The controller model: a workload reaches what its spec asks for at once, unless stuck.
pub(super) fn reconcile_status(object: &mut Json) {
    if is_stuck(object) {
        return;
    }
    let generation = object
        .pointer("/metadata/generation")
        .and_then(Json::as_i64);
    let kind = object
        .get("kind")
        .and_then(Json::as_str)
        .unwrap_or("")
        .to_owned();
    let replicas = object
        .pointer("/spec/replicas")
        .and_then(Json::as_i64)
        .unwrap_or(1);
    let counts: &[&str] = match kind.as_str() {
        "Deployment" | "ReplicaSet" => &[
            "replicas",
            "readyReplicas",
            "availableReplicas",
            "updatedReplicas",
        ],
        "StatefulSet" => &[
            "replicas",
            "readyReplicas",
            "availableReplicas",
            "updatedReplicas",
            "currentReplicas",
        ],
        "DaemonSet" => &[
            "currentNumberScheduled",
            "numberReady",
            "numberAvailable",
            "updatedNumberScheduled",
        ],
        _ => return,
    };
    let desired = if kind == "DaemonSet" {
        object
            .pointer("/status/desiredNumberScheduled")
            .and_then(Json::as_i64)
            .unwrap_or(0)
    } else {
        replicas
    };
    let status = ensure_object(object, "status");
    for field in counts {
        // The API server leaves zero counts out (`omitempty`).
        if desired == 0 {
            status.shift_remove(*field);
        } else {
            status.insert((*field).to_owned(), json!(desired));
        }
    }
    if let Some(generation) = generation {
        status.insert("observedGeneration".into(), json!(generation));
    }
    if kind == "Deployment" {
        let conditions = status.entry("conditions").or_insert_with(|| json!([]));
        if !conditions.is_array() {
            *conditions = json!([]);
        }
        if let Some(conditions) = conditions.as_array_mut() {
            for (kind, reason) in [
                ("Available", "MinimumReplicasAvailable"),
                ("Progressing", "NewReplicaSetAvailable"),
            ] {
                let condition = json!({"type": kind, "status": "True", "reason": reason});
                match conditions
                    .iter_mut()
                    .find(|c| c.get("type").and_then(Json::as_str) == Some(kind))
                {
                    Some(existing) => {
                        existing["status"] = json!("True");
                        existing["reason"] = json!(reason);
                    }
                    None => conditions.push(condition),
                }
            }
        }
    }
}

/// The status of a Deployment or StatefulSet whose controller has seen a write but not caught
/// up (a scenario's `reconcile.delay`): `replicas` is the new count, the ready and available
/// counts stay as they were (at most the new count: scaling down is quick), `updatedReplicas`
/// too unless the pod template changed (a restart), when no pod is updated yet, and
/// `unavailableReplicas` is how many the new count misses. `observedGeneration` moves: the
/// controller has seen the spec.
pub(super) fn lagging_status(old: Option<&Json>, object: &mut Json) {
    let desired = object
        .pointer("/spec/replicas")
        .and_then(Json::as_i64)
        .unwrap_or(1);
    let template_changed =
        old.is_some_and(|old| old.pointer("/spec/template") != object.pointer("/spec/template"));
    let generation = object
        .pointer("/metadata/generation")
        .and_then(Json::as_i64);
    let status = ensure_object(object, "status");
    let count = |status: &serde_json::Map<String, Json>, field: &str| {
        status
            .get(field)
            .and_then(Json::as_i64)
            .unwrap_or(0)
            .min(desired)
    };
    let ready = count(status, "readyReplicas");
    let available = count(status, "availableReplicas");
    let updated = if template_changed {
        0
    } else {
        count(status, "updatedReplicas")
    };
    // The API server leaves zero counts out (`omitempty`).
    for (field, value) in [
        ("replicas", desired),
        ("readyReplicas", ready),
        ("availableReplicas", available),
        ("updatedReplicas", updated),
        ("unavailableReplicas", desired - available),
    ] {
        if value > 0 {
            status.insert(field.to_owned(), json!(value));
        } else {
            status.shift_remove(field);
        }
    }
    if let Some(generation) = generation {
        status.insert("observedGeneration".into(), json!(generation));
    }
}
