//! `annotate` and `label`: keys set on (or, with a null value, removed from) an object's
//! metadata.

use super::*;

pub(super) const ANNOTATE: ActionKind = ActionKind {
    keyword: "annotate",
    present: |step| step.annotate.is_some(),
    check: annotate,
};

pub(super) const LABEL: ActionKind = ActionKind {
    keyword: "label",
    present: |step| step.label.is_some(),
    check: label,
};

fn annotate(
    checker: &mut Checker<'_>,
    site: &Site<'_>,
    step: &document::Step,
    reads: &mut Reads,
    _calls: &mut Vec<Call>,
) -> Option<Action> {
    let (target, set) = metadata(checker, site, "annotate", step.annotate.as_ref()?, reads)?;
    Some(Action::Annotate { target, set })
}

fn label(
    checker: &mut Checker<'_>,
    site: &Site<'_>,
    step: &document::Step,
    reads: &mut Reads,
    _calls: &mut Vec<Call>,
) -> Option<Action> {
    let (target, set) = metadata(checker, site, "label", step.label.as_ref()?, reads)?;
    Some(Action::Label { target, set })
}

/// The object and the keys to set, the same for annotations and labels.
fn metadata(
    checker: &mut Checker<'_>,
    site: &Site<'_>,
    keyword: &str,
    action: &document::MetadataAction,
    reads: &mut Reads,
) -> Option<(Target, BTreeMap<String, Option<Template>>)> {
    let at = site.at;
    let p = site.pointer.as_str();
    let scope = site.scope;
    let Some(kind) = action.kind.as_deref() else {
        checker.error(
            Code::MissingField,
            at,
            at.span(p),
            format!("missing required field `kind` in {keyword}"),
        );
        return None;
    };
    let target = checker.target(
        at,
        p,
        action.api_version.as_deref(),
        Some(kind),
        &action.name,
        action.namespace.as_deref(),
        scope,
        reads,
    )?;
    if action.set.is_empty() {
        checker.error(
            Code::MissingField,
            at,
            at.span(&format!("{p}/set")),
            format!("`set` names no keys to {keyword}"),
        );
    }
    let set = action
        .set
        .iter()
        .map(|(key, value)| {
            (
                key.clone(),
                value.as_ref().map(|text| {
                    checker.template(
                        at,
                        &format!("{p}/set/{}", escape_pointer(key)),
                        text,
                        scope,
                        reads,
                    )
                }),
            )
        })
        .collect();
    Some((target, set))
}
