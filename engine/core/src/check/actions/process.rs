//! `run` and `exec`: processes, on this machine or in a pod.

use super::*;

pub(super) const RUN: ActionKind = ActionKind {
    keyword: "run",
    present: |step| step.run.is_some(),
    check: run,
};

pub(super) const EXEC: ActionKind = ActionKind {
    keyword: "exec",
    present: |step| step.exec.is_some(),
    check: exec,
};

fn run(
    checker: &mut Checker<'_>,
    site: &Site<'_>,
    step: &document::Step,
    reads: &mut Reads,
    _calls: &mut Vec<Call>,
) -> Option<Action> {
    let at = site.at;
    let p = site.pointer.as_str();
    let scope = site.scope;
    let mut env = BTreeMap::new();
    for (name, value) in step.env.iter().flatten() {
        let pointer = format!("{}/env/{}", site.step, escape_pointer(name));
        if !is_env_name(name) {
            checker.error_help(
                Code::Env,
                at,
                at.key_span(&pointer),
                format!("`{name}` is not an environment variable name"),
                Some("use letters, digits and `_`, not starting with a digit".to_owned()),
            );
            continue;
        }
        env.insert(
            name.clone(),
            checker.template(at, &pointer, value, scope, reads),
        );
    }
    Some(Action::Run {
        argv: checker.argv(at, p, step.run.as_ref()?, scope, reads),
        env,
        allow_exit_codes: allow_exit_codes(checker, site, step),
    })
}

/// A name every shell and `execve` takes: letters, digits and `_`, not starting with a digit.
fn is_env_name(name: &str) -> bool {
    name.chars().next().is_some_and(|c| !c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn exec(
    checker: &mut Checker<'_>,
    site: &Site<'_>,
    step: &document::Step,
    reads: &mut Reads,
    _calls: &mut Vec<Call>,
) -> Option<Action> {
    let at = site.at;
    let p = site.pointer.as_str();
    let scope = site.scope;
    let exec = step.exec.as_ref()?;
    Some(Action::Exec {
        namespace: site.template(checker, "namespace", &exec.namespace, reads),
        pod: site.template(checker, "pod", &exec.pod, reads),
        container: exec
            .container
            .as_ref()
            .map(|text| site.template(checker, "container", text, reads)),
        argv: checker.argv(at, &format!("{p}/command"), &exec.command, scope, reads),
        allow_exit_codes: allow_exit_codes(checker, site, step),
    })
}

/// A step's `allowExitCodes`, checked.
fn allow_exit_codes(
    checker: &mut Checker<'_>,
    site: &Site<'_>,
    step: &document::Step,
) -> Option<ExitCodes> {
    let codes = step.allow_exit_codes.as_deref()?;
    checker.exit_codes(site.at, &format!("{}/allowExitCodes", site.step), codes)
}
