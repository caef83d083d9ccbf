//! `apply` and `delete`: whole objects, created or updated by server-side apply, or removed.

use super::*;

pub(super) const APPLY: ActionKind = ActionKind {
    keyword: "apply",
    present: |step| step.apply.is_some(),
    check: apply,
};

pub(super) const DELETE: ActionKind = ActionKind {
    keyword: "delete",
    present: |step| step.delete.is_some(),
    check: delete,
};

fn apply(
    checker: &mut Checker<'_>,
    site: &Site<'_>,
    step: &document::Step,
    reads: &mut Reads,
    _calls: &mut Vec<Call>,
) -> Option<Action> {
    let at = site.at;
    let p = site.pointer.as_str();
    let scope = site.scope;
    let apply = step.apply.as_ref()?;
    let manifest = &apply.manifest;
    let missing: Vec<&str> = ["apiVersion", "kind", "metadata"]
        .into_iter()
        .filter(|field| manifest.get(field).is_none())
        .collect();
    if !manifest.is_object() || !missing.is_empty() {
        checker.error_help(
            Code::ApplyManifest,
            at,
            at.span(&format!("{p}/manifest")),
            "the manifest must be a Kubernetes object",
            Some(format!(
                "it needs {}",
                missing
                    .iter()
                    .map(|f| format!("`{f}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        );
        return None;
    }
    if let Some(kind) = manifest.get("kind").and_then(serde_json::Value::as_str) {
        checker.check_field_types(at, &format!("{p}/manifest"), kind, manifest, None);
    }
    Some(Action::Apply {
        manifest: checker.json_template(at, &format!("{p}/manifest"), manifest, scope, reads),
    })
}

fn delete(
    checker: &mut Checker<'_>,
    site: &Site<'_>,
    step: &document::Step,
    reads: &mut Reads,
    _calls: &mut Vec<Call>,
) -> Option<Action> {
    let at = site.at;
    let p = site.pointer.as_str();
    let scope = site.scope;
    let delete = step.delete.as_ref()?;
    Some(Action::Delete {
        target: checker.target(
            at,
            p,
            delete.api_version.as_deref(),
            Some(&delete.kind),
            &delete.name,
            delete.namespace.as_deref(),
            scope,
            reads,
        )?,
        propagation: delete.propagation,
        grace_period_seconds: delete.grace_period_seconds,
    })
}
