//! `runbook`: a call to another runbook, checked against it once every runbook is known.

use super::*;

pub(super) const RUNBOOK: ActionKind = ActionKind {
    keyword: "runbook",
    present: |step| step.runbook.is_some(),
    check: runbook,
};

fn runbook(
    checker: &mut Checker<'_>,
    site: &Site<'_>,
    step: &document::Step,
    reads: &mut Reads,
    calls: &mut Vec<Call>,
) -> Option<Action> {
    let at = site.at;
    let p = site.pointer.as_str();
    let scope = site.scope;
    let runbook = site.runbook;
    let call = step.runbook.as_ref()?;
    if call.name == runbook {
        checker.error(
            Code::CallCycle,
            at,
            at.span(&format!("{p}/name")),
            format!("runbook `{runbook}` calls itself"),
        );
        return None;
    }
    calls.push(Call {
        from: runbook.to_owned(),
        to: call.name.clone(),
        params: call.params.keys().cloned().collect(),
        source: at.source.clone(),
        span: at.span(&format!("{p}/name")),
    });
    Some(Action::Call {
        runbook: call.name.clone(),
        params: checker.json_params(at, &format!("{p}/params"), &call.params, scope, reads),
    })
}
