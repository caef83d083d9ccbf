//! `wait`: until an object has a condition or an expression on it holds.

use super::*;

pub(super) const WAIT: ActionKind = ActionKind {
    keyword: "wait",
    present: |step| step.wait.is_some(),
    check: wait,
};

fn wait(
    checker: &mut Checker<'_>,
    site: &Site<'_>,
    step: &document::Step,
    reads: &mut Reads,
    _calls: &mut Vec<Call>,
) -> Option<Action> {
    let at = site.at;
    let p = site.pointer.as_str();
    let scope = site.scope;
    let wait = step.wait.as_ref()?;
    let target = checker.target(
        at,
        p,
        wait.api_version.as_deref(),
        Some(&wait.kind),
        &wait.name,
        wait.namespace.as_deref(),
        scope,
        reads,
    )?;
    let until = match (&wait.condition, &wait.until) {
        (Some(_), None) => None,
        (None, Some(text)) => {
            let mut locals = scope.locals.to_vec();
            locals.push("object");
            let with_object = Scope {
                locals: &locals,
                ..*scope
            };
            Some(checker.expression(at, &format!("{p}/until"), text, &with_object, reads)?)
        }
        _ => {
            checker.error_help(Code::Wait, at, at.span(p), "`wait` needs exactly one of `condition` and `until`", Some("`condition: Ready` waits for a status condition; `until: object.status.readyReplicas == 3` for an expression".to_owned()));
            return None;
        }
    };
    Some(Action::Wait {
        target,
        condition: wait.condition.clone(),
        until,
    })
}
