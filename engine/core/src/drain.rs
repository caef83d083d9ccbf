//! What `kubectl drain` decides about each pod on a node, shared by the simulated and the live
//! cluster so both drain alike.

use serde_json::Value as Json;

/// Why a pod is left on the node: it belongs to a DaemonSet (its controller would put it back
/// at once) or it is a mirror pod (the kubelet runs it from a static manifest; the API cannot
/// evict it).
pub fn skip_reason(pod: &Json) -> Option<&'static str> {
    let daemon = pod
        .pointer("/metadata/ownerReferences")
        .and_then(Json::as_array)
        .is_some_and(|owners| {
            owners
                .iter()
                .any(|owner| owner.get("kind").and_then(Json::as_str) == Some("DaemonSet"))
        });
    if daemon {
        return Some("DaemonSet");
    }
    let mirror = pod
        .pointer("/metadata/annotations")
        .and_then(|annotations| annotations.get("kubernetes.io/config.mirror"))
        .is_some();
    mirror.then_some("mirror")
}

/// Whether evicting the pod loses `emptyDir` data (drain refuses unless told to accept it).
pub fn uses_empty_dir(pod: &Json) -> bool {
    pod.pointer("/spec/volumes")
        .and_then(Json::as_array)
        .is_some_and(|volumes| {
            volumes
                .iter()
                .any(|volume| volume.get("emptyDir").is_some())
        })
}
