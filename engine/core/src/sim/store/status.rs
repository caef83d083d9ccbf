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
