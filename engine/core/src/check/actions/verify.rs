//! `verify`: an expression that must hold, polled until the step's timeout.

use super::*;

pub(super) const VERIFY: ActionKind = ActionKind {
    keyword: "verify",
    present: |step| step.verify.is_some(),
    check: verify,
};

fn verify(
    checker: &mut Checker<'_>,
    site: &Site<'_>,
    step: &document::Step,
    reads: &mut Reads,
    _calls: &mut Vec<Call>,
) -> Option<Action> {
    let at = site.at;
    let p = site.pointer.as_str();
    let scope = site.scope;
    let fail_when = match step.fail_when.as_deref() {
        Some(text) => {
            Some(checker.expression(at, &format!("{}/failWhen", site.step), text, scope, reads)?)
        }
        None => None,
    };
    Some(Action::Verify {
        expr: checker.expression(at, p, step.verify.as_deref()?, scope, reads)?,
        fail_when,
        interval: step
            .interval
            .as_ref()
            .and_then(|text| checker.duration(at, &format!("{}/interval", site.step), text))
            .unwrap_or(DEFAULT_VERIFY_INTERVAL),
    })
}
