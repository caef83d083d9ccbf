//! `capture`: expressions evaluated once, their values kept as `vars.NAME` for the rest of the
//! run, so a value chosen before a change (a name built from the time, a condition that picked
//! a verify) is still the same value after it.

use super::*;

pub(super) const CAPTURE: ActionKind = ActionKind {
    keyword: "capture",
    present: |step| step.capture.is_some(),
    check: capture,
};

fn capture(
    checker: &mut Checker<'_>,
    site: &Site<'_>,
    step: &document::Step,
    reads: &mut Reads,
    _calls: &mut Vec<Call>,
) -> Option<Action> {
    let at = site.at;
    let values = step.capture.as_ref()?;
    if values.is_empty() {
        checker.error_help(
            Code::Capture,
            at,
            at.span(&site.pointer),
            "`capture` names no value",
            Some("write `capture: {NAME: EXPRESSION}`, then read `vars.NAME`".to_owned()),
        );
        return None;
    }
    let mut captured = Vec::new();
    let mut ok = true;
    for (name, text) in values {
        let pointer = format!("{}/{}", site.pointer, escape_pointer(name));
        if !is_identifier(name) {
            checker.error_help(
                Code::Capture,
                at,
                at.key_span(&pointer),
                format!("`{name}` cannot name a captured value"),
                Some("use lowercase letters, digits and `_`, starting with a letter or `_`; it is read as `vars.NAME`".to_owned()),
            );
            ok = false;
            continue;
        }
        match checker.expression(at, &pointer, text, site.scope, reads) {
            Some(expression) => captured.push((name.clone(), expression)),
            None => ok = false,
        }
    }
    ok.then_some(Action::Capture(captured))
}
