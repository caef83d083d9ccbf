//! `cordon`, `uncordon` and `drain`: a node's schedulability and its pods.

use super::*;

pub(super) const CORDON: ActionKind = ActionKind {
    keyword: "cordon",
    present: |step| step.cordon.is_some(),
    check: cordon,
};

pub(super) const UNCORDON: ActionKind = ActionKind {
    keyword: "uncordon",
    present: |step| step.uncordon.is_some(),
    check: uncordon,
};

pub(super) const DRAIN: ActionKind = ActionKind {
    keyword: "drain",
    present: |step| step.drain.is_some(),
    check: drain,
};

fn cordon(
    checker: &mut Checker<'_>,
    site: &Site<'_>,
    step: &document::Step,
    reads: &mut Reads,
    _calls: &mut Vec<Call>,
) -> Option<Action> {
    Some(Action::Cordon {
        node: site.template(checker, "node", &step.cordon.as_ref()?.node, reads),
    })
}

fn uncordon(
    checker: &mut Checker<'_>,
    site: &Site<'_>,
    step: &document::Step,
    reads: &mut Reads,
    _calls: &mut Vec<Call>,
) -> Option<Action> {
    Some(Action::Uncordon {
        node: site.template(checker, "node", &step.uncordon.as_ref()?.node, reads),
    })
}

fn drain(
    checker: &mut Checker<'_>,
    site: &Site<'_>,
    step: &document::Step,
    reads: &mut Reads,
    _calls: &mut Vec<Call>,
) -> Option<Action> {
    let at = site.at;
    let p = site.pointer.as_str();
    let drain = step.drain.as_ref()?;
    Some(Action::Drain {
        node: site.template(checker, "node", &drain.node, reads),
        delete_empty_dir_data: drain.delete_empty_dir_data,
        eviction_timeout: drain
            .eviction_timeout
            .as_ref()
            .and_then(|text| checker.duration(at, &format!("{p}/evictionTimeout"), text))
            .unwrap_or(DEFAULT_EVICTION_TIMEOUT),
    })
}
