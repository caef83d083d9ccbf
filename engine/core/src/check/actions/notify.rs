//! `notify` and `page`: a message to a channel, or to whoever is on call.

use super::*;

pub(super) const NOTIFY: ActionKind = ActionKind {
    keyword: "notify",
    present: |step| step.notify.is_some(),
    check: notify,
};

pub(super) const PAGE: ActionKind = ActionKind {
    keyword: "page",
    present: |step| step.page.is_some(),
    check: page,
};

fn notify(
    checker: &mut Checker<'_>,
    site: &Site<'_>,
    step: &document::Step,
    reads: &mut Reads,
    _calls: &mut Vec<Call>,
) -> Option<Action> {
    Some(Action::Notify(message(
        checker,
        site,
        step.notify.as_ref()?,
        reads,
    )))
}

fn page(
    checker: &mut Checker<'_>,
    site: &Site<'_>,
    step: &document::Step,
    reads: &mut Reads,
    _calls: &mut Vec<Call>,
) -> Option<Action> {
    Some(Action::Page(message(
        checker,
        site,
        step.page.as_ref()?,
        reads,
    )))
}

fn message(
    checker: &mut Checker<'_>,
    site: &Site<'_>,
    message: &document::Message,
    reads: &mut Reads,
) -> MessageSpec {
    match message {
        document::Message::Text(text) => MessageSpec {
            text: checker.template(site.at, &site.pointer, text, site.scope, reads),
            channel: None,
            severity: None,
        },
        document::Message::Detailed(detail) => MessageSpec {
            text: site.template(checker, "message", &detail.message, reads),
            channel: detail.channel.clone(),
            severity: detail.severity.clone(),
        },
    }
}
