//! `patch`: a merge, strategic or JSON patch to one object.

use super::*;

pub(super) const PATCH: ActionKind = ActionKind {
    keyword: "patch",
    present: |step| step.patch.is_some(),
    check: patch,
};

fn patch(
    checker: &mut Checker<'_>,
    site: &Site<'_>,
    step: &document::Step,
    reads: &mut Reads,
    _calls: &mut Vec<Call>,
) -> Option<Action> {
    let at = site.at;
    let p = site.pointer.as_str();
    let scope = site.scope;
    let patch = step.patch.as_ref()?;
    let target = checker.target(
        at,
        p,
        patch.api_version.as_deref(),
        patch.kind.as_deref(),
        &patch.name,
        patch.namespace.as_deref(),
        scope,
        reads,
    )?;
    match (patch.patch_type, &patch.patch) {
        (PatchType::Json, serde_json::Value::Array(_)) => {}
        (PatchType::Json, _) => {
            checker.error_help(Code::PatchBody, at, at.span(&format!("{p}/patch")), "a `type: json` patch is a list of operations", Some("write `- {op: replace, path: /spec/x, value: 1}`, or use `type: merge` with an object".to_owned()));
            return None;
        }
        (_, serde_json::Value::Object(_)) => {}
        (_, _) => {
            checker.error_help(
                Code::PatchBody,
                at,
                at.span(&format!("{p}/patch")),
                "a merge or strategic patch is an object",
                Some("for a list of operations, set `type: json`".to_owned()),
            );
            return None;
        }
    }
    if patch.patch_type == PatchType::Strategic && !is_builtin_group(&target.api_version) {
        checker.error_help(
            Code::PatchType,
            at,
            at.span(&format!("{p}/type")),
            format!("the API server does not take strategic merge patches for custom resources such as {}", target.kind),
            Some("use `type: merge`".to_owned()),
        );
        return None;
    }
    checker.check_field_types(
        at,
        &format!("{p}/patch"),
        &target.kind,
        &patch.patch,
        Some(patch.patch_type),
    );
    let body = checker.json_template(at, &format!("{p}/patch"), &patch.patch, scope, reads);
    Some(Action::Patch {
        target,
        patch_type: patch.patch_type,
        body,
    })
}
