//! `scale` and `restart`: a workload's replicas and its rollout.

use super::*;

pub(super) const SCALE: ActionKind = ActionKind {
    keyword: "scale",
    present: |step| step.scale.is_some(),
    check: scale,
};

pub(super) const RESTART: ActionKind = ActionKind {
    keyword: "restart",
    present: |step| step.restart.is_some(),
    check: restart,
};

fn scale(
    checker: &mut Checker<'_>,
    site: &Site<'_>,
    step: &document::Step,
    reads: &mut Reads,
    _calls: &mut Vec<Call>,
) -> Option<Action> {
    let at = site.at;
    let p = site.pointer.as_str();
    let scope = site.scope;
    let scale = step.scale.as_ref()?;
    let target = checker.target(
        at,
        p,
        scale.api_version.as_deref(),
        scale.kind.as_deref().or(Some("Deployment")),
        &scale.name,
        scale.namespace.as_deref(),
        scope,
        reads,
    )?;
    let replicas = match &scale.replicas {
        document::IntOrTemplate::Int(count) if *count < 0 => {
            checker.error(
                Code::Replicas,
                at,
                at.span(&format!("{p}/replicas")),
                format!("replicas must be zero or more, found {count}"),
            );
            return None;
        }
        document::IntOrTemplate::Int(count) => IntValue::Literal(*count),
        document::IntOrTemplate::Template(text) => {
            let parsed = site.template(checker, "replicas", text, reads);
            if parsed.is_literal() {
                checker.error_help(
                    Code::Replicas,
                    at,
                    at.span(&format!("{p}/replicas")),
                    format!("replicas must be a number, found `{text}`"),
                    Some("write a number, or a template such as `${params.replicas}`".to_owned()),
                );
                return None;
            }
            IntValue::Template(parsed)
        }
    };
    Some(Action::Scale { target, replicas })
}

fn restart(
    checker: &mut Checker<'_>,
    site: &Site<'_>,
    step: &document::Step,
    reads: &mut Reads,
    _calls: &mut Vec<Call>,
) -> Option<Action> {
    let at = site.at;
    let p = site.pointer.as_str();
    let scope = site.scope;
    let object = step.restart.as_ref()?;
    let kind = object.kind.as_deref().unwrap_or("Deployment");
    if !["Deployment", "StatefulSet", "DaemonSet"].contains(&kind) {
        checker.error_help(
            Code::RestartKind,
            at,
            at.span(&format!("{p}/kind")),
            format!("`restart` rolls out a Deployment, StatefulSet or DaemonSet, not a {kind}"),
            (kind == "Pod").then(|| "to replace one pod, use `delete` with `kind: Pod`".to_owned()),
        );
        return None;
    }
    Some(Action::Restart {
        target: checker.target(
            at,
            p,
            object.api_version.as_deref(),
            Some(kind),
            &object.name,
            object.namespace.as_deref(),
            scope,
            reads,
        )?,
    })
}
