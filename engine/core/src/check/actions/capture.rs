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
    // The values are taken in name order: each reads those before it.
    let mut names = site.scope.run.map(|run| RunNames {
        vars: run.vars.clone(),
        steps: run.steps.clone(),
        unsure: run.unsure.clone(),
    });
    for (name, text) in values {
        if let Some(names) = &mut names {
            for later in values.keys().filter(|later| *later >= name) {
                names.unsure.insert(
                    later.clone(),
                    if later == name {
                        (
                            format!("`vars.{name}` is the value this expression captures"),
                            "read it in a step after this one".to_owned(),
                        )
                    } else {
                        (
                            format!("`vars.{later}` is captured after `{name}` in this step: a capture's values are taken in name order"),
                            format!("capture `{name}` in a later step, or rename the values so that `{later}` sorts before `{name}`"),
                        )
                    },
                );
            }
        }
        let scope = Scope {
            run: names.as_ref(),
            ..*site.scope
        };
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
        match checker.expression(at, &pointer, text, &scope, reads) {
            Some(expression) => captured.push((name.clone(), expression)),
            None => ok = false,
        }
        if let Some(names) = &mut names {
            names.unsure.remove(name);
            names.vars.insert(name.clone());
        }
    }
    ok.then_some(Action::Capture(captured))
}
