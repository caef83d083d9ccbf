//! The resources the fake serves, as their discovery documents list them: one table, so
//! discovery, routing and the object store agree on every kind's scope, plural and
//! subresources.

use serde_json::{json, Value as Json};

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

pub(crate) const fn builtin(
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
    builtin("v1", "persistentvolumeclaims", "PersistentVolumeClaim", true, &["pvc"], &["status"]),
    builtin("apps/v1", "deployments", "Deployment", true, &["deploy"], &["scale", "status"]),
    builtin("apps/v1", "statefulsets", "StatefulSet", true, &["sts"], &["scale", "status"]),
    builtin("apps/v1", "daemonsets", "DaemonSet", true, &["ds"], &["status"]),
    builtin("coordination.k8s.io/v1", "leases", "Lease", true, &[], &[]),
    builtin("policy/v1", "poddisruptionbudgets", "PodDisruptionBudget", true, &["pdb"], &["status"]),
    builtin("batch/v1", "jobs", "Job", true, &[], &["status"]),
    builtin("admissionregistration.k8s.io/v1", "validatingadmissionpolicies", "ValidatingAdmissionPolicy", false, &[], &["status"]),
    builtin("admissionregistration.k8s.io/v1", "validatingadmissionpolicybindings", "ValidatingAdmissionPolicyBinding", false, &[], &[]),
    ResourceType {
        custom: true,
        ..builtin("example.com/v1", "widgets", "Widget", true, &[], &["status"])
    },
    // Our own CRD (schemas/runbookrun.crd.yaml): one object per run of `runbook serve`.
    ResourceType {
        custom: true,
        ..builtin("runbook.dev/v1alpha1", "runbookruns", "RunbookRun", true, &["rbr"], &["status"])
    },
    // Its approvals (schemas/runbookapproval.crd.yaml), admitted by the policy that
    // `reviews::approval_admission` stands in for.
    ResourceType {
        custom: true,
        ..builtin("runbook.dev/v1alpha1", "runbookapprovals", "RunbookApproval", true, &[], &["status"])
    },
];

pub(crate) const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

pub(crate) fn by_plural(api_version: &str, plural: &str) -> Option<&'static ResourceType> {
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
    pub(crate) fn group(&self) -> &'static str {
        self.api_version
            .split_once('/')
            .map_or("", |(group, _)| group)
    }

    /// `deployments.apps`, or `pods` in the core group: how the server names it in messages.
    pub(crate) fn group_resource(&self) -> String {
        match self.group() {
            "" => self.plural.to_owned(),
            group => format!("{}.{group}", self.plural),
        }
    }

    /// `Deployment.apps`, for validation messages.
    pub(crate) fn group_kind(&self) -> String {
        match self.group() {
            "" => self.kind.to_owned(),
            group => format!("{}.{group}", self.kind),
        }
    }

    /// Whether the server counts spec changes in `metadata.generation` (workloads and custom
    /// resources do; pods, nodes, config maps and leases do not).
    pub(crate) fn has_generation(&self) -> bool {
        self.custom || self.api_version != "v1" && self.plural != "leases"
    }

    pub(crate) fn has(&self, subresource: &str) -> bool {
        self.subresources.contains(&subresource)
    }
}

/// The APIResourceList for one group version (`/api/v1`, `/apis/apps/v1`).
pub(crate) fn resource_list(api_version: &str) -> Option<Json> {
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
pub(crate) fn group_list() -> Json {
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
