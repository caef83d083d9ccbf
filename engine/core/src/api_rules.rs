//! What the API server refuses that a runbook can write, listed once: the types of the fields
//! it decodes into typed structs (`replicas: "3"` where an int32 belongs, a number where an
//! annotation's string belongs), and the fields whose change it refuses (a claim that would
//! shrink, immutable fields), so an undo that would put one back cannot work.
//!
//! Read by the simulator (`sim/store`), which refuses the same writes with the server's own
//! messages, and by the checker, which warns where a runbook's patch reaches them (issue 15,
//! items 7 and 8). A live cluster is the authority: the table is what the engine knows before
//! asking it. The fake API server (`engine/fake-apiserver`) keeps its own copy of these rules
//! on purpose, written from kube-apiserver's code, so it checks this table rather than
//! repeating it.

use serde_json::Value as Json;

/// The Go type a field decodes into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    Int32,
    Bool,
    String,
}

impl FieldType {
    /// As Go names it (`json: ... of type int32`).
    pub fn go(self) -> &'static str {
        match self {
            Self::Int32 => "int32",
            Self::Bool => "bool",
            Self::String => "string",
        }
    }

    /// As an OpenAPI schema names it (`... in body must be of type boolean`).
    pub fn openapi(self) -> &'static str {
        match self {
            Self::Int32 => "integer",
            Self::Bool => "boolean",
            Self::String => "string",
        }
    }

    /// How a runbook author would say it.
    pub fn plain(self) -> &'static str {
        match self {
            Self::Int32 => "an integer",
            Self::Bool => "true or false",
            Self::String => "a string",
        }
    }

    /// Whether `value` decodes into the type. `null` does: it leaves the field unset.
    pub fn accepts(self, value: &Json) -> bool {
        match self {
            Self::Int32 => {
                value.is_null() || value.as_i64().is_some_and(|n| i32::try_from(n).is_ok())
            }
            Self::Bool => value.is_null() || value.is_boolean(),
            Self::String => value.is_null() || value.is_string(),
        }
    }
}

/// Which objects a rule is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kinds {
    /// Every kind (object metadata).
    All,
    /// These kinds.
    Only(&'static [&'static str]),
}

impl Kinds {
    pub fn contains(self, kind: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(kinds) => kinds.contains(&kind),
        }
    }
}

/// A field whose value must have one type. `*` in `path` is any key of a map or any item of a
/// list.
#[derive(Clone, Copy, Debug)]
pub struct TypedField {
    pub kinds: Kinds,
    pub path: &'static [&'static str],
    pub field_type: FieldType,
    /// The Go struct field, as `encoding/json` names it in its error (for built-in kinds):
    /// `DeploymentSpec.spec.replicas`. `None` for a custom resource, which the server checks
    /// against its CRD's OpenAPI schema instead.
    pub go_field: Option<&'static str>,
}

const WORKLOADS_WITH_PODS: &[&str] = &[
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Job",
];

/// The typed fields the engine knows.
pub const TYPED_FIELDS: &[TypedField] = &[
    typed(
        &["Deployment"],
        &["spec", "replicas"],
        FieldType::Int32,
        "DeploymentSpec.spec.replicas",
    ),
    typed(
        &["StatefulSet"],
        &["spec", "replicas"],
        FieldType::Int32,
        "StatefulSetSpec.spec.replicas",
    ),
    typed(
        &["ReplicaSet"],
        &["spec", "replicas"],
        FieldType::Int32,
        "ReplicaSetSpec.spec.replicas",
    ),
    typed(
        &["Deployment"],
        &["spec", "paused"],
        FieldType::Bool,
        "DeploymentSpec.spec.paused",
    ),
    typed(
        &["CronJob"],
        &["spec", "suspend"],
        FieldType::Bool,
        "CronJobSpec.spec.suspend",
    ),
    typed(
        &["Job"],
        &["spec", "suspend"],
        FieldType::Bool,
        "JobSpec.spec.suspend",
    ),
    typed(
        &["Node"],
        &["spec", "unschedulable"],
        FieldType::Bool,
        "NodeSpec.spec.unschedulable",
    ),
    custom(&["HelmRelease"], &["spec", "suspend"], FieldType::Bool),
    custom(&["Kustomization"], &["spec", "suspend"], FieldType::Bool),
    TypedField {
        kinds: Kinds::All,
        path: &["metadata", "annotations", "*"],
        field_type: FieldType::String,
        go_field: Some("ObjectMeta.metadata.annotations"),
    },
    TypedField {
        kinds: Kinds::All,
        path: &["metadata", "labels", "*"],
        field_type: FieldType::String,
        go_field: Some("ObjectMeta.metadata.labels"),
    },
    typed(
        &["ConfigMap"],
        &["data", "*"],
        FieldType::String,
        "ConfigMap.data",
    ),
    typed(
        &["Secret"],
        &["stringData", "*"],
        FieldType::String,
        "Secret.stringData",
    ),
    TypedField {
        kinds: Kinds::Only(WORKLOADS_WITH_PODS),
        path: &["spec", "template", "metadata", "annotations", "*"],
        field_type: FieldType::String,
        go_field: Some("ObjectMeta.spec.template.metadata.annotations"),
    },
    TypedField {
        kinds: Kinds::Only(WORKLOADS_WITH_PODS),
        path: &[
            "spec",
            "template",
            "spec",
            "containers",
            "*",
            "env",
            "*",
            "value",
        ],
        field_type: FieldType::String,
        go_field: Some("EnvVar.spec.template.spec.containers.env.value"),
    },
];

const fn typed(
    kinds: &'static [&'static str],
    path: &'static [&'static str],
    field_type: FieldType,
    go_field: &'static str,
) -> TypedField {
    TypedField {
        kinds: Kinds::Only(kinds),
        path,
        field_type,
        go_field: Some(go_field),
    }
}

const fn custom(
    kinds: &'static [&'static str],
    path: &'static [&'static str],
    field_type: FieldType,
) -> TypedField {
    TypedField {
        kinds: Kinds::Only(kinds),
        path,
        field_type,
        go_field: None,
    }
}

/// A value of the wrong type, where it was found.
#[derive(Clone, Debug)]
pub struct TypeMismatch {
    pub field: &'static TypedField,
    /// The dotted path of the value (`spec.replicas`, `metadata.annotations.team`).
    pub path: String,
    pub value: Json,
}

impl TypeMismatch {
    /// `json: cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of
    /// type int32`, as Go's decoder says it (built-in kinds).
    pub fn go_error(&self) -> String {
        let found = match &self.value {
            Json::String(_) => "string".to_owned(),
            Json::Bool(_) => "bool".to_owned(),
            Json::Array(_) => "array".to_owned(),
            Json::Object(_) => "object".to_owned(),
            Json::Number(_) if self.field.field_type == FieldType::String => "number".to_owned(),
            // Go names the number when it is one, just not one that fits.
            Json::Number(number) => format!("number {number}"),
            Json::Null => "null".to_owned(),
        };
        format!(
            "json: cannot unmarshal {found} into Go struct field {} of type {}",
            self.field.go_field.unwrap_or_default(),
            self.field.field_type.go()
        )
    }

    /// What structured-merge-diff says of the value in a server-side apply:
    /// `.spec.replicas: expected numeric (int or float), got string`.
    pub fn apply_error(&self) -> String {
        let expected = match self.field.field_type {
            FieldType::Int32 => "numeric (int or float)",
            FieldType::Bool => "boolean",
            FieldType::String => "string",
        };
        let found = match &self.value {
            Json::String(_) => "string".to_owned(),
            other => format!("&value.valueUnstructured{{Value:{other}}}"),
        };
        format!(".{}: expected {expected}, got {found}", self.path)
    }

    /// The JSON type of the value, as an OpenAPI schema error names it.
    fn openapi_found(&self) -> &'static str {
        match &self.value {
            Json::String(_) => "string",
            Json::Bool(_) => "boolean",
            Json::Array(_) => "array",
            Json::Object(_) => "object",
            Json::Number(number) if number.is_i64() || number.is_u64() => "integer",
            Json::Number(_) => "number",
            Json::Null => "null",
        }
    }

    /// `spec.suspend: Invalid value: "string": spec.suspend in body must be of type boolean:
    /// "string"`, as a CRD's structural schema refuses it (custom resources).
    pub fn schema_error(&self) -> String {
        let found = self.openapi_found();
        format!(
            "{path}: Invalid value: \"{found}\": {path} in body must be of type {}: \"{found}\"",
            self.field.field_type.openapi(),
            path = self.path
        )
    }
}

/// The first value of `object` (a `kind`) whose type the server refuses.
pub fn type_mismatch(kind: &str, object: &Json) -> Option<TypeMismatch> {
    for field in TYPED_FIELDS
        .iter()
        .filter(|field| field.kinds.contains(kind))
    {
        let mut found = None;
        visit(object, field.path, &mut Vec::new(), &mut |path, value| {
            if found.is_none() && !field.field_type.accepts(value) {
                found = Some(TypeMismatch {
                    field,
                    path: dotted(path),
                    value: value.clone(),
                });
            }
        });
        if found.is_some() {
            return found;
        }
    }
    None
}

/// A value's path as the server names it: a list's items have no index in Go's errors.
fn dotted(path: &[String]) -> String {
    path.iter()
        .filter(|part| !part.is_empty())
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(".")
}

/// Calls `found` with every value at `path` (with `*` for any key or item), and its path.
fn visit(
    value: &Json,
    path: &[&str],
    at: &mut Vec<String>,
    found: &mut dyn FnMut(&[String], &Json),
) {
    let Some((first, rest)) = path.split_first() else {
        found(at, value);
        return;
    };
    let mut step = |key: String, child: &Json, at: &mut Vec<String>| {
        at.push(key);
        visit(child, rest, at, found);
        at.pop();
    };
    match (value, *first) {
        (Json::Object(map), "*") => {
            for (key, child) in map {
                step(key.clone(), child, at);
            }
        }
        (Json::Array(items), "*") => {
            // Go's decoder names a list's field without an index.
            for child in items {
                at.push(String::new());
                visit(child, rest, at, found);
                at.pop();
            }
        }
        (Json::Object(map), key) => {
            if let Some(child) = map.get(key) {
                step(key.to_owned(), child, at);
            }
        }
        _ => {}
    }
}

/// The type a field at `path` (JSON names, `*`-free) of a `kind` must have, if it is one the
/// engine knows.
pub fn field_type(kind: &str, path: &[String]) -> Option<FieldType> {
    TYPED_FIELDS
        .iter()
        .filter(|field| field.kinds.contains(kind))
        .find(|field| {
            field.path.len() == path.len()
                && field
                    .path
                    .iter()
                    .zip(path)
                    .all(|(want, have)| *want == "*" || want == have)
        })
        .map(|field| field.field_type)
}

// ----- changes the server refuses -------------------------------------------------------------

/// What the server allows of a change to a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guard {
    /// A quantity that may grow but never shrink (a claim's storage).
    NoShrink,
    /// Set at creation, never changed (`field is immutable`).
    Immutable,
    /// A Service's cluster IPs: kept once allocated (`may not change once set`).
    ClusterIps,
    /// A StatefulSet's spec outside the fields it lets change.
    StatefulSetSpec,
}

/// A field whose change (or whose undo) the server refuses.
#[derive(Clone, Copy, Debug)]
pub struct GuardedField {
    pub kind: &'static str,
    pub path: &'static [&'static str],
    pub guard: Guard,
}

impl GuardedField {
    /// `spec.resources.requests.storage`.
    pub fn dotted(&self) -> String {
        self.path.join(".")
    }

    /// Why an undo that puts the field back would fail, for `validate`'s warning.
    pub fn why(&self) -> &'static str {
        match self.guard {
            Guard::NoShrink => "the API server lets it grow but refuses to shrink it, so the undo that puts the old size back fails",
            Guard::Immutable => "the API server refuses any change to it once the object exists, and so the undo too",
            Guard::ClusterIps => "the API server keeps a Service's cluster IPs once they are set and refuses to change them, and so the undo too",
            Guard::StatefulSetSpec => "the API server refuses changes to a StatefulSet's spec other than replicas, template, updateStrategy, persistentVolumeClaimRetentionPolicy, ordinals and minReadySeconds, and so the undo too",
        }
    }
}

/// The guarded fields the engine knows.
pub const GUARDED_FIELDS: &[GuardedField] = &[
    guarded(
        "PersistentVolumeClaim",
        &["spec", "resources", "requests", "storage"],
        Guard::NoShrink,
    ),
    guarded("Job", &["spec", "template"], Guard::Immutable),
    guarded("Job", &["spec", "selector"], Guard::Immutable),
    guarded("Deployment", &["spec", "selector"], Guard::Immutable),
    guarded("DaemonSet", &["spec", "selector"], Guard::Immutable),
    guarded("ReplicaSet", &["spec", "selector"], Guard::Immutable),
    guarded("StatefulSet", &["spec", "selector"], Guard::StatefulSetSpec),
    guarded(
        "StatefulSet",
        &["spec", "volumeClaimTemplates"],
        Guard::StatefulSetSpec,
    ),
    guarded(
        "StatefulSet",
        &["spec", "serviceName"],
        Guard::StatefulSetSpec,
    ),
    guarded(
        "StatefulSet",
        &["spec", "podManagementPolicy"],
        Guard::StatefulSetSpec,
    ),
    guarded("Service", &["spec", "clusterIP"], Guard::ClusterIps),
    guarded("Service", &["spec", "clusterIPs"], Guard::ClusterIps),
];

const fn guarded(kind: &'static str, path: &'static [&'static str], guard: Guard) -> GuardedField {
    GuardedField { kind, path, guard }
}

/// The guarded field of `kind` at `path` or above it (a patch of `spec.template.spec` touches
/// the Job's `spec.template`).
pub fn guarded_field(kind: &str, path: &[String]) -> Option<&'static GuardedField> {
    GUARDED_FIELDS.iter().find(|field| {
        field.kind == kind
            && path.len() >= field.path.len()
            && field.path.iter().zip(path).all(|(want, have)| want == have)
    })
}

/// Why the server refuses to store `new` over `old` (a `kind` in `group` named `name`), as it
/// says it: `PersistentVolumeClaim "data" is invalid: spec.resources.requests.storage:
/// Forbidden: field can not be less than previous value`.
pub fn refused_change(
    group: &str,
    kind: &str,
    name: &str,
    old: &Json,
    new: &Json,
) -> Option<String> {
    let qualified = if group.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}.{group}")
    };
    let mut errors = Vec::new();
    let mut statefulset_spec = false;
    let mut cluster_ips = false;
    for field in GUARDED_FIELDS.iter().filter(|field| field.kind == kind) {
        let pointer = format!("/{}", field.path.join("/"));
        let before = old.pointer(&pointer);
        let after = new.pointer(&pointer);
        if before == after {
            continue;
        }
        match field.guard {
            Guard::NoShrink => {
                let size =
                    |value: Option<&Json>| value.and_then(Json::as_str).and_then(parse_quantity);
                if let (Some(before), Some(after)) = (size(before), size(after)) {
                    if after < before {
                        errors.push(format!(
                            "{}: Forbidden: field can not be less than previous value",
                            field.dotted()
                        ));
                    }
                }
            }
            Guard::Immutable => {
                let shown = after.map_or_else(|| "null".to_owned(), Json::to_string);
                errors.push(format!(
                    "{}: Invalid value: {shown}: field is immutable",
                    field.dotted()
                ));
            }
            Guard::ClusterIps if !cluster_ips => {
                // Only an IP that was allocated is kept: setting one on a Service that had
                // none (or had `None`) is not a change of it.
                let allocated = |value: Option<&Json>| {
                    value.is_some_and(|v| !v.is_null() && v != "" && v != "None")
                };
                if allocated(before) {
                    cluster_ips = true;
                    let ips: Vec<String> =
                        match new.pointer("/spec/clusterIPs").and_then(Json::as_array) {
                            Some(ips) if field.path[1] == "clusterIPs" => ips
                                .iter()
                                .map(|ip| format!("{:?}", ip.as_str().unwrap_or_default()))
                                .collect(),
                            _ => after
                                .and_then(Json::as_str)
                                .map(|ip| format!("{ip:?}"))
                                .into_iter()
                                .collect(),
                        };
                    errors.push(format!(
                        "spec.clusterIPs[0]: Invalid value: []string{{{}}}: may not change once set",
                        ips.join(", ")
                    ));
                }
            }
            Guard::ClusterIps => {}
            Guard::StatefulSetSpec if !statefulset_spec => {
                statefulset_spec = true;
                errors.push("spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden".to_owned());
            }
            Guard::StatefulSetSpec => {}
        }
    }
    match errors.as_slice() {
        [] => None,
        [one] => Some(format!("{qualified} {name:?} is invalid: {one}")),
        many => Some(format!(
            "{qualified} {name:?} is invalid: [{}]",
            many.join(", ")
        )),
    }
}

/// A Kubernetes quantity (`100Gi`, `1.5T`, `500M`, `1e3`) in base units; `None` when it is
/// not one.
pub fn parse_quantity(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let binary = |power: i32| 1024f64.powi(power);
    let decimal = |power: i32| 10f64.powi(power);
    let factor = match suffix {
        "" => 1.0,
        "Ki" => binary(1),
        "Mi" => binary(2),
        "Gi" => binary(3),
        "Ti" => binary(4),
        "Pi" => binary(5),
        "Ei" => binary(6),
        "n" => decimal(-9),
        "u" => decimal(-6),
        "m" => decimal(-3),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        exponent => {
            let exponent = exponent.strip_prefix(['e', 'E'])?;
            decimal(exponent.parse().ok()?)
        }
    };
    Some(number * factor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_string_for_a_deployments_replicas_is_refused_as_go_decodes_it() {
        let object = json!({"spec": {"replicas": "3"}});
        let mismatch = type_mismatch("Deployment", &object).expect("a mismatch");
        assert_eq!(mismatch.path, "spec.replicas");
        assert_eq!(
            mismatch.go_error(),
            "json: cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type int32"
        );
        assert!(type_mismatch("Deployment", &json!({"spec": {"replicas": 3}})).is_none());
        assert!(
            type_mismatch("ConfigMap", &object).is_none(),
            "a ConfigMap has no replicas"
        );
    }

    #[test]
    fn a_number_for_an_annotation_is_refused_and_a_string_is_not() {
        let object = json!({"metadata": {"annotations": {"team": "a", "size": 3}}});
        let mismatch = type_mismatch("Pod", &object).expect("a mismatch");
        assert_eq!(mismatch.path, "metadata.annotations.size");
        assert_eq!(
            mismatch.go_error(),
            "json: cannot unmarshal number into Go struct field ObjectMeta.metadata.annotations of type string"
        );
    }

    #[test]
    fn a_custom_resource_is_refused_as_its_schema_says() {
        let object = json!({"spec": {"suspend": "true"}});
        let mismatch = type_mismatch("HelmRelease", &object).expect("a mismatch");
        assert_eq!(
            mismatch.schema_error(),
            "spec.suspend: Invalid value: \"string\": spec.suspend in body must be of type boolean: \"string\""
        );
    }

    #[test]
    fn an_env_value_in_a_pod_template_must_be_a_string() {
        let object = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "env": [{"name": "N", "value": 3}]}]}}}});
        let mismatch = type_mismatch("Deployment", &object).expect("a mismatch");
        assert!(mismatch
            .go_error()
            .contains("EnvVar.spec.template.spec.containers.env.value of type string"));
    }

    #[test]
    fn a_claim_may_grow_but_not_shrink() {
        let claim = |size: &str| json!({"spec": {"resources": {"requests": {"storage": size}}}});
        assert_eq!(
            refused_change("", "PersistentVolumeClaim", "data", &claim("200Gi"), &claim("100Gi")).as_deref(),
            Some("PersistentVolumeClaim \"data\" is invalid: spec.resources.requests.storage: Forbidden: field can not be less than previous value")
        );
        assert_eq!(
            refused_change(
                "",
                "PersistentVolumeClaim",
                "data",
                &claim("100Gi"),
                &claim("200Gi")
            ),
            None
        );
        assert_eq!(
            refused_change(
                "",
                "PersistentVolumeClaim",
                "data",
                &claim("1Ti"),
                &claim("1024Gi")
            ),
            None
        );
    }

    #[test]
    fn a_jobs_template_and_a_services_cluster_ip_cannot_change() {
        let job = |image: &str| json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": image}]}}}});
        let refused =
            refused_change("batch", "Job", "migrate", &job("a:1"), &job("a:2")).expect("refused");
        assert!(
            refused.starts_with("Job.batch \"migrate\" is invalid: spec.template: Invalid value: "),
            "{refused}"
        );
        assert!(refused.ends_with(": field is immutable"), "{refused}");
        let service = |ip: &str| json!({"spec": {"clusterIP": ip, "clusterIPs": [ip]}});
        assert_eq!(
            refused_change("", "Service", "web", &service("10.0.0.1"), &service("10.0.0.2")).as_deref(),
            Some("Service \"web\" is invalid: spec.clusterIPs[0]: Invalid value: []string{\"10.0.0.2\"}: may not change once set")
        );
        assert_eq!(
            refused_change(
                "",
                "Service",
                "web",
                &json!({"spec": {}}),
                &service("10.0.0.2")
            ),
            None
        );
    }

    #[test]
    fn quantities_compare_across_suffixes() {
        assert_eq!(parse_quantity("1Gi"), Some(1024f64.powi(3)));
        assert_eq!(parse_quantity("1.5G"), Some(1.5e9));
        assert_eq!(parse_quantity("2e3"), Some(2000.0));
        assert_eq!(parse_quantity("lots"), None);
        assert!(parse_quantity("1Ti") > parse_quantity("1000Gi"));
    }
}
