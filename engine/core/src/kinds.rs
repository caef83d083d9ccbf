//! The kinds we know without asking a cluster: their scope, the apiVersion a runbook may leave
//! out, whether they have a scale subresource, and the resource (plural) their URLs and RBAC
//! rules name. One table, read by the checker (default apiVersions), the executor (which keys
//! carry a namespace), the simulator (scope and `scale`) and the RBAC derivation (`rbac.rs`:
//! resources), so they cannot disagree. A live cluster answers these for every kind through
//! discovery; this table is what we assume before one is asked, and all the simulator knows.

/// One known kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kind {
    pub name: &'static str,
    /// The apiVersion used when a runbook names the kind without one.
    pub api_version: &'static str,
    /// Lives outside namespaces (a Node, a ClusterRole).
    pub cluster_scoped: bool,
    /// Has the `/scale` subresource, so `scale` works on it.
    pub scale: bool,
    /// The resource, when it is not what [`plural`] makes of the name (`Endpoints` is
    /// `endpoints`; metrics-server serves `NodeMetrics` as `nodes`).
    pub resource: Option<&'static str>,
}

impl Kind {
    /// The same kind served under a resource name the plural rule would not guess.
    const fn served_as(self, resource: &'static str) -> Kind {
        Kind {
            resource: Some(resource),
            ..self
        }
    }
}

const fn namespaced(name: &'static str, api_version: &'static str) -> Kind {
    Kind {
        name,
        api_version,
        cluster_scoped: false,
        scale: false,
        resource: None,
    }
}

const fn cluster(name: &'static str, api_version: &'static str) -> Kind {
    Kind {
        name,
        api_version,
        cluster_scoped: true,
        scale: false,
        resource: None,
    }
}

const fn scalable(name: &'static str, api_version: &'static str) -> Kind {
    Kind {
        name,
        api_version,
        cluster_scoped: false,
        scale: true,
        resource: None,
    }
}

/// Every kind we know, by name. Kinds in several groups (`Gateway`) are listed once, with the
/// group the platform guides use; a runbook names the other with `apiVersion`.
pub const KINDS: &[Kind] = &[
    // Core.
    namespaced("Pod", "v1"),
    namespaced("Service", "v1"),
    namespaced("ConfigMap", "v1"),
    namespaced("Secret", "v1"),
    namespaced("PersistentVolumeClaim", "v1"),
    namespaced("ServiceAccount", "v1"),
    namespaced("Endpoints", "v1").served_as("endpoints"),
    namespaced("Event", "v1"),
    namespaced("ReplicationController", "v1"),
    cluster("Node", "v1"),
    cluster("Namespace", "v1"),
    cluster("PersistentVolume", "v1"),
    cluster("ComponentStatus", "v1"),
    // metrics-server (`kubectl top`): read-only views named after what they measure.
    cluster("NodeMetrics", "metrics.k8s.io/v1beta1").served_as("nodes"),
    namespaced("PodMetrics", "metrics.k8s.io/v1beta1").served_as("pods"),
    // Workloads.
    scalable("Deployment", "apps/v1"),
    scalable("StatefulSet", "apps/v1"),
    scalable("ReplicaSet", "apps/v1"),
    namespaced("DaemonSet", "apps/v1"),
    namespaced("Job", "batch/v1"),
    namespaced("CronJob", "batch/v1"),
    namespaced("HorizontalPodAutoscaler", "autoscaling/v2"),
    namespaced("PodDisruptionBudget", "policy/v1"),
    // Networking, coordination, scheduling, storage, RBAC, admission.
    namespaced("Ingress", "networking.k8s.io/v1"),
    namespaced("NetworkPolicy", "networking.k8s.io/v1"),
    cluster("IngressClass", "networking.k8s.io/v1"),
    namespaced("Lease", "coordination.k8s.io/v1"),
    cluster("PriorityClass", "scheduling.k8s.io/v1"),
    cluster("RuntimeClass", "node.k8s.io/v1"),
    cluster("StorageClass", "storage.k8s.io/v1"),
    cluster("CSIDriver", "storage.k8s.io/v1"),
    cluster("CSINode", "storage.k8s.io/v1"),
    cluster("VolumeAttachment", "storage.k8s.io/v1"),
    cluster("ClusterRole", "rbac.authorization.k8s.io/v1"),
    cluster("ClusterRoleBinding", "rbac.authorization.k8s.io/v1"),
    cluster("CertificateSigningRequest", "certificates.k8s.io/v1"),
    cluster("APIService", "apiregistration.k8s.io/v1"),
    cluster("CustomResourceDefinition", "apiextensions.k8s.io/v1"),
    cluster(
        "MutatingWebhookConfiguration",
        "admissionregistration.k8s.io/v1",
    ),
    cluster(
        "ValidatingWebhookConfiguration",
        "admissionregistration.k8s.io/v1",
    ),
    cluster(
        "ValidatingAdmissionPolicy",
        "admissionregistration.k8s.io/v1",
    ),
    cluster(
        "ValidatingAdmissionPolicyBinding",
        "admissionregistration.k8s.io/v1",
    ),
    // The platform's operators.
    namespaced("HelmRelease", "helm.toolkit.fluxcd.io/v2"),
    namespaced("Kustomization", "kustomize.toolkit.fluxcd.io/v1"),
    namespaced("GitRepository", "source.toolkit.fluxcd.io/v1"),
    namespaced("HelmRepository", "source.toolkit.fluxcd.io/v1"),
    namespaced("OCIRepository", "source.toolkit.fluxcd.io/v1"),
    namespaced("Certificate", "cert-manager.io/v1"),
    namespaced("Issuer", "cert-manager.io/v1"),
    namespaced("CertificateRequest", "cert-manager.io/v1"),
    cluster("ClusterIssuer", "cert-manager.io/v1"),
    namespaced("ExternalSecret", "external-secrets.io/v1beta1"),
    namespaced("SecretStore", "external-secrets.io/v1beta1"),
    cluster("ClusterSecretStore", "external-secrets.io/v1beta1"),
    namespaced("Application", "argoproj.io/v1alpha1"),
    namespaced("AppProject", "argoproj.io/v1alpha1"),
    namespaced("Backup", "velero.io/v1"),
    namespaced("Restore", "velero.io/v1"),
    namespaced("Schedule", "velero.io/v1"),
    namespaced("PolicyReport", "wgpolicyk8s.io/v1alpha2"),
    cluster("ClusterPolicyReport", "wgpolicyk8s.io/v1alpha2"),
    namespaced("Policy", "kyverno.io/v1"),
    cluster("ClusterPolicy", "kyverno.io/v1"),
    namespaced("PeerAuthentication", "security.istio.io/v1"),
    namespaced("AuthorizationPolicy", "security.istio.io/v1"),
    namespaced("VirtualService", "networking.istio.io/v1"),
    namespaced("DestinationRule", "networking.istio.io/v1"),
    namespaced("Gateway", "networking.istio.io/v1"),
];

/// What we know of `kind`, if it is one we know.
pub fn kind(name: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|kind| kind.name == name)
}

/// Whether objects of `kind` live outside namespaces (unknown kinds are namespaced).
pub fn is_cluster_scoped(name: &str) -> bool {
    kind(name).is_some_and(|kind| kind.cluster_scoped)
}

/// The apiVersion of `kind` when a runbook leaves it out.
pub fn default_api_version(name: &str) -> Option<&'static str> {
    kind(name).map(|kind| kind.api_version)
}

/// Whether `kind` has the scale subresource, as far as we know without discovery.
pub fn has_scale(name: &str) -> bool {
    kind(name).is_some_and(|kind| kind.scale)
}

/// The resource that serves `kind` (`deployments`, `networkpolicies`): the table's word where
/// it has one, else the plural the API machinery gives a kind by default (lower case; `-es`
/// after s, x, z, ch and sh; `-ies` for a `y` after a consonant; else `-s`), which is what a
/// CustomResourceDefinition declares for nearly every kind. A live cluster says for sure
/// through discovery; this is for what is decided before one is asked (RBAC rules).
pub fn plural(name: &str) -> String {
    if let Some(resource) = kind(name).and_then(|kind| kind.resource) {
        return resource.to_owned();
    }
    let lower = name.to_ascii_lowercase();
    let consonant_y = lower.len() >= 2
        && lower.ends_with('y')
        && !matches!(
            lower.as_bytes()[lower.len() - 2],
            b'a' | b'e' | b'i' | b'o' | b'u'
        );
    if consonant_y {
        format!("{}ies", &lower[..lower.len() - 1])
    } else if ["s", "x", "z", "ch", "sh"]
        .iter()
        .any(|end| lower.ends_with(end))
    {
        format!("{lower}es")
    } else {
        format!("{lower}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_listed_once() {
        let mut names: Vec<&str> = KINDS.iter().map(|kind| kind.name).collect();
        names.sort_unstable();
        let count = names.len();
        names.dedup();
        assert_eq!(names.len(), count, "a kind is listed twice");
    }

    #[test]
    fn scope_defaults_and_scale_come_from_the_one_table() {
        assert!(is_cluster_scoped("Node"));
        assert!(is_cluster_scoped("ClusterSecretStore"));
        assert!(is_cluster_scoped("ValidatingAdmissionPolicy"));
        assert!(!is_cluster_scoped("Deployment"));
        assert!(!is_cluster_scoped("SomeCustomResource"));
        assert_eq!(default_api_version("CronJob"), Some("batch/v1"));
        assert_eq!(default_api_version("SomeCustomResource"), None);
        assert!(has_scale("StatefulSet"));
        assert!(!has_scale("DaemonSet"));
    }

    #[test]
    fn resources_are_the_plurals_the_api_server_serves() {
        for (kind, resource) in [
            ("Deployment", "deployments"),
            ("Ingress", "ingresses"),
            ("NetworkPolicy", "networkpolicies"),
            ("ClusterPolicy", "clusterpolicies"),
            ("Gateway", "gateways"),
            ("HelmRepository", "helmrepositories"),
            ("ComponentStatus", "componentstatuses"),
            ("Endpoints", "endpoints"),
            ("NodeMetrics", "nodes"),
            ("PodMetrics", "pods"),
            ("BackupStorageLocation", "backupstoragelocations"),
            ("Mesh", "meshes"),
        ] {
            assert_eq!(plural(kind), resource, "{kind}");
        }
    }
}
