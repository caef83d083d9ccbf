//! The actions pass: a step's one action keyword, resolved into a typed [`Action`], with the
//! objects it targets and the templates it renders checked on the way.
//!
//! Each family of actions has its file, which says how its keywords are found in a step and
//! checked; [`REGISTRY`] lists them. Adding an action to the checker means one file here and
//! one line in the registry (beside its field in `document::Step` and its variant in
//! `runbook::Action`).

use super::*;

mod apply;
mod call;
mod capture;
mod metadata;
mod node;
mod notify;
mod patch;
mod process;
mod scale;
mod verify;
mod wait;

/// One action keyword: how to see it in a step, and how to check it.
pub(super) struct ActionKind {
    pub(super) keyword: &'static str,
    pub(super) present: fn(&document::Step) -> bool,
    pub(super) check: fn(
        &mut Checker<'_>,
        &Site<'_>,
        &document::Step,
        &mut Reads,
        &mut Vec<Call>,
    ) -> Option<Action>,
}

/// Every action, in the order that picks a step's default id (`scale-1`) and names the second
/// action in a step that has several.
const REGISTRY: [ActionKind; 18] = [
    process::RUN,
    scale::SCALE,
    scale::RESTART,
    patch::PATCH,
    apply::APPLY,
    metadata::ANNOTATE,
    metadata::LABEL,
    apply::DELETE,
    node::CORDON,
    node::UNCORDON,
    node::DRAIN,
    process::EXEC,
    wait::WAIT,
    verify::VERIFY,
    notify::NOTIFY,
    notify::PAGE,
    call::RUNBOOK,
    capture::CAPTURE,
];

/// Where one action is written, and what it may read.
pub(super) struct Site<'a> {
    pub(super) at: At<'a>,
    /// The step (or undo) that holds the action.
    pub(super) step: &'a str,
    /// The action's keyword in that step, such as `/spec/steps/0/scale`.
    pub(super) pointer: String,
    pub(super) scope: &'a Scope<'a>,
    /// The runbook being checked, which a `runbook:` call must not name.
    pub(super) runbook: &'a str,
}

impl Site<'_> {
    /// A template written in `field` of the action.
    pub(super) fn template(
        &self,
        checker: &mut Checker<'_>,
        field: &str,
        text: &str,
        reads: &mut Reads,
    ) -> Template {
        let pointer = format!("{}/{field}", self.pointer);
        checker.template(self.at, &pointer, text, self.scope, reads)
    }
}

impl Checker<'_> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn action(
        &mut self,
        at: At<'_>,
        pointer: &str,
        step: &document::Step,
        scope: &Scope<'_>,
        reads: &mut Reads,
        calls: &mut Vec<Call>,
        runbook: &str,
        in_undo: bool,
    ) -> Option<Action> {
        let keywords = action_keywords(step);
        let keyword = match keywords.as_slice() {
            [] if step.confirm.is_some() && !in_undo => return Some(Action::Gate),
            [] => {
                self.error_help(
                    Code::NoAction,
                    at,
                    at.span(pointer),
                    if in_undo {
                        "the undo has no action".to_owned()
                    } else {
                        "the step has no action".to_owned()
                    },
                    Some(format!(
                        "give it one of {}",
                        REGISTRY
                            .iter()
                            .map(|kind| kind.keyword)
                            .chain((!in_undo).then_some(GATE))
                            .map(|a| format!("`{a}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                );
                return None;
            }
            [one] => *one,
            several => {
                self.error_help(
                    Code::SeveralActions,
                    at,
                    at.key_span(&format!("{pointer}/{}", several[1])),
                    format!(
                        "a step does one thing, but this one has {}",
                        several
                            .iter()
                            .map(|s| format!("`{s}`"))
                            .collect::<Vec<_>>()
                            .join(" and ")
                    ),
                    Some("split it into one step per action".to_owned()),
                );
                return None;
            }
        };
        let kind = REGISTRY.iter().find(|kind| kind.keyword == keyword)?;
        let site = Site {
            at,
            step: pointer,
            pointer: format!("{pointer}/{keyword}"),
            scope,
            runbook,
        };
        (kind.check)(self, &site, step, reads, calls)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn target(
        &mut self,
        at: At<'_>,
        pointer: &str,
        api_version: Option<&str>,
        kind: Option<&str>,
        name: &str,
        namespace: Option<&str>,
        scope: &Scope<'_>,
        reads: &mut Reads,
    ) -> Option<Target> {
        let Some(kind) = kind else {
            self.error_help(
                Code::MissingField,
                at,
                Span::point(at.span(pointer).start),
                "missing required field `kind`",
                Some("name the kind of object, such as `kind: Deployment`".to_owned()),
            );
            return None;
        };
        let api_version = self.api_version(at, pointer, api_version, kind)?;
        Some(Target {
            api_version,
            kind: kind.to_owned(),
            name: self.template(at, &format!("{pointer}/name"), name, scope, reads),
            namespace: namespace
                .map(|text| self.template(at, &format!("{pointer}/namespace"), text, scope, reads)),
        })
    }

    pub(super) fn api_version(
        &mut self,
        at: At<'_>,
        pointer: &str,
        written: Option<&str>,
        kind: &str,
    ) -> Option<String> {
        match written {
            Some(version) => Some(version.to_owned()),
            None => match default_api_version(kind) {
                Some(version) => Some(version.to_owned()),
                None => {
                    self.error_help(
                        Code::ApiVersion,
                        at,
                        at.span(&format!("{pointer}/kind")),
                        format!("kind `{kind}` is not one we know the API group of"),
                        Some(format!(
                            "set `apiVersion` (such as `example.com/v1`) beside `kind: {kind}`"
                        )),
                    );
                    None
                }
            },
        }
    }
}

/// The keyword a step may hold instead of an action: `confirm` alone makes a gate.
const GATE: &str = "confirm";

/// The keywords of the actions a step holds, in registry order.
pub(super) fn action_keywords(step: &document::Step) -> Vec<&'static str> {
    REGISTRY
        .iter()
        .filter(|kind| (kind.present)(step))
        .map(|kind| kind.keyword)
        .collect()
}
