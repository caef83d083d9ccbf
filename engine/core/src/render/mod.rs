//! What a plan looks like to people and machines: text for the terminal, markdown for a
//! pull-request review, JSON for tools, and the DAG as Graphviz DOT or Mermaid.
//!
//! Params are substituted into templates here (only params: facts are read at run time, so a
//! `${...}` that reads a fact is shown as written). Secret params (declared so, or bound from a
//! secret by a calling runbook) are shown as `<secret>`.

use std::fmt::Write as _;

use serde_json::{json, Value as Json};

use crate::compile::{Dependency, Plan, PlanNode};
use crate::expr::{Template, TemplatePart};
use crate::runbook::*;

mod graph;
mod json;
mod markdown;
mod text;

pub use graph::{graph_dot, graph_mermaid};
pub use json::plan_json;
pub use markdown::plan_markdown;
pub use text::plan_text;

/// How long a param-only expression in a template may take when a plan is rendered.
const RENDER_EVALUATION_TIME: std::time::Duration = std::time::Duration::from_millis(200);

/// How a plan shows a secret param's value.
pub(crate) const SECRET: &str = "<secret>";

/// Substitutes bound params into a template; holes that read anything else stay as written.
pub fn template(plan: &Plan, template: &Template) -> String {
    let mut out = String::new();
    for part in &template.parts {
        match part {
            TemplatePart::Text(text) => out.push_str(text),
            TemplatePart::Expr(expression, _) => match hole(plan, expression) {
                Hole::Secret => out.push_str(SECRET),
                Hole::Value(value) => out.push_str(&value.to_string()),
                Hole::Unknown => {
                    let _ = write!(out, "${{{}}}", expression.source);
                }
            },
        }
    }
    out
}

/// What a plan can show of one `${...}`.
enum Hole {
    /// It reads a secret param.
    Secret,
    /// It reads only params, and this is its value.
    Value(rhai::Dynamic),
    /// It reads facts (known at run time only), or could not be evaluated in time.
    Unknown,
}

fn hole(plan: &Plan, expression: &crate::expr::Expression) -> Hole {
    let only_params = expression.references.iter().all(|r| r.path[0] == "params");
    let secret = expression.references.iter().any(|r| {
        r.path
            .get(1)
            .and_then(|name| plan.runbook.param(name))
            .is_some_and(|p| plan.bindings.is_secret(p))
    });
    if secret {
        return Hole::Secret;
    }
    if !only_params {
        return Hole::Unknown;
    }
    let mut scope = rhai::Scope::new();
    scope.push("params", plan.bindings.to_rhai());
    // Shown in a plan and in every step's summary, on the caller's thread: a short budget,
    // and the expression as written if it runs out.
    let budget = crate::expr::Budget {
        deadline: std::time::Instant::now() + RENDER_EVALUATION_TIME,
        cancelled: Default::default(),
        now: None,
    };
    match crate::expr::evaluate::<rhai::Dynamic>(&mut scope, &expression.ast, &budget, None) {
        Ok(value) if !value.is_unit() => Hole::Value(value),
        _ => Hole::Unknown,
    }
}

fn argv(plan: &Plan, argv: &[Template]) -> String {
    argv.iter()
        .map(|word| shell_quote(&template(plan, word)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Quotes a word for display only where a shell would need it, so a command reads the way an
/// engineer would type it (`-format=json`, not `'-format=json'`). Commands are never run
/// through a shell; this is how they are shown.
fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,^".contains(c) || !c.is_ascii());
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

fn json_template(plan: &Plan, value: &JsonTemplate) -> Json {
    match value {
        JsonTemplate::Literal(value) => value.clone(),
        // A string that is exactly one `${...}` keeps its value's type, as the run sends it.
        JsonTemplate::String(text) => match text.whole_expression().map(|e| hole(plan, e)) {
            Some(Hole::Value(value)) => rhai::serde::from_dynamic::<Json>(&value)
                .unwrap_or_else(|_| Json::String(template(plan, text))),
            _ => Json::String(template(plan, text)),
        },
        JsonTemplate::Array(items) => {
            Json::Array(items.iter().map(|item| json_template(plan, item)).collect())
        }
        JsonTemplate::Object(entries) => Json::Object(
            entries
                .iter()
                .map(|(k, v)| (k.clone(), json_template(plan, v)))
                .collect(),
        ),
    }
}

fn object(plan: &Plan, target: &Target) -> String {
    let name = template(plan, &target.name);
    match &target.namespace {
        Some(namespace) => format!("{} {}/{}", target.kind, template(plan, namespace), name),
        None => format!("{} {}", target.kind, name),
    }
}

fn metadata_changes(
    plan: &Plan,
    set: &std::collections::BTreeMap<String, Option<Template>>,
) -> String {
    set.iter()
        .map(|(key, value)| match value {
            Some(value) => format!("{key}={}", template(plan, value)),
            None => format!("{key}-"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// One line saying what an action does, params substituted.
pub fn action_summary(plan: &Plan, action: &Action) -> String {
    match action {
        Action::Run { argv: words, env, allow_exit_codes } => {
            // As a shell would take it: `NAME=value command...`.
            let assignments: String = env
                .iter()
                .map(|(name, value)| format!("{name}={} ", shell_quote(&template(plan, value))))
                .collect();
            format!("run {assignments}{}{}", argv(plan, words), succeeds_on(allow_exit_codes.as_ref()))
        }
        Action::Scale { target, replicas } => {
            let count = match replicas {
                IntValue::Literal(count) => count.to_string(),
                IntValue::Template(text) => template(plan, text),
            };
            format!("scale {} to {count} replicas", object(plan, target))
        }
        Action::Restart { target } => format!("rollout restart {}", object(plan, target)),
        Action::Patch { target, patch_type, body } => {
            let kind = match patch_type {
                crate::document::PatchType::Merge => "merge",
                crate::document::PatchType::Strategic => "strategic merge",
                crate::document::PatchType::Json => "JSON",
            };
            format!("{kind} patch {} with {}", object(plan, target), json_template(plan, body))
        }
        Action::Apply { manifest } => {
            let manifest = json_template(plan, manifest);
            let kind = manifest.get("kind").and_then(Json::as_str).unwrap_or("object");
            let name = manifest.pointer("/metadata/name").and_then(Json::as_str).unwrap_or("?");
            let namespace = manifest.pointer("/metadata/namespace").and_then(Json::as_str);
            match namespace {
                Some(namespace) => format!("server-side apply {kind} {namespace}/{name}"),
                None => format!("server-side apply {kind} {name}"),
            }
        }
        Action::Annotate { target, set } => format!("annotate {} {}", object(plan, target), metadata_changes(plan, set)),
        Action::Label { target, set } => format!("label {} {}", object(plan, target), metadata_changes(plan, set)),
        Action::Delete {
            target,
            propagation,
            grace_period_seconds,
        } => {
            let mut text = format!("delete {}", object(plan, target));
            if let Some(propagation) = propagation {
                let _ = write!(text, " (propagation {propagation:?})");
            }
            if let Some(grace) = grace_period_seconds {
                let _ = write!(text, " (grace period {grace}s)");
            }
            text
        }
        Action::Cordon { node } => format!("cordon node {}", template(plan, node)),
        Action::Uncordon { node } => format!("uncordon node {}", template(plan, node)),
        Action::Drain {
            node,
            delete_empty_dir_data,
            eviction_timeout,
        } => format!(
            "drain node {} (evict pods through PodDisruptionBudgets, skip DaemonSet and mirror pods{}; give up after {})",
            template(plan, node),
            if *delete_empty_dir_data { ", emptyDir data is lost" } else { "" },
            format_duration(*eviction_timeout)
        ),
        Action::Exec {
            namespace,
            pod,
            container,
            argv: words,
            allow_exit_codes,
        } => {
            let container = container.as_ref().map(|c| format!(" (container {})", template(plan, c))).unwrap_or_default();
            format!("exec in pod {}/{}{container}: {}{}", template(plan, namespace), template(plan, pod), argv(plan, words), succeeds_on(allow_exit_codes.as_ref()))
        }
        Action::Wait { target, condition, until } => match (condition, until) {
            (Some(condition), _) => format!("wait for {} to be {condition}", object(plan, target)),
            (_, Some(until)) => format!("wait for {} until {}", object(plan, target), until.source.trim()),
            _ => format!("wait for {}", object(plan, target)),
        },
        Action::Verify { expr, .. } => format!("verify {}", expr.source.trim()),
        Action::Gate => "confirmation gate".to_owned(),
        Action::Notify(message) => format!("notify{}: {}", message.channel.as_ref().map(|c| format!(" {c}")).unwrap_or_default(), template(plan, &message.text)),
        Action::Page(message) => format!("page{}: {}", message.severity.as_ref().map(|s| format!(" ({s})")).unwrap_or_default(), template(plan, &message.text)),
        Action::Capture(values) => format!(
            "capture {}",
            values.iter().map(|(name, value)| format!("vars.{name} = {}", value.source.trim())).collect::<Vec<_>>().join("; ")
        ),
        Action::Call { runbook, params } => {
            if params.is_empty() {
                format!("run runbook {runbook}")
            } else {
                let bound = params.iter().map(|(k, v)| format!("{k}={}", json_scalar(&json_template(plan, v)))).collect::<Vec<_>>().join(" ");
                format!("run runbook {runbook} with {bound}")
            }
        }
    }
}

/// ` (succeeds on exit 0, 1)` for a step with `allowExitCodes`.
fn succeeds_on(allow_exit_codes: Option<&ExitCodes>) -> String {
    allow_exit_codes
        .map(|codes| format!(" (succeeds on exit {codes})"))
        .unwrap_or_default()
}

/// ` (exit 0, 1 read as {exitCode, stdout, stderr})` for a fact with `allowExitCodes`.
fn read_on_exit(allow_exit_codes: Option<&ExitCodes>) -> String {
    allow_exit_codes
        .map(|codes| format!(" (exit {codes} read as {{exitCode, stdout, stderr}})"))
        .unwrap_or_default()
}

/// A JSON value as text: a string as it is, anything else as JSON.
pub(crate) fn json_scalar(value: &Json) -> String {
    match value {
        Json::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// What kind of value a JSON value is, for messages (`gave a map, not a list`).
pub(crate) fn json_kind(value: &Json) -> &'static str {
    match value {
        Json::String(_) => "a string",
        Json::Number(_) => "a number",
        Json::Bool(_) => "a boolean",
        Json::Array(_) => "a list",
        Json::Object(_) => "a map",
        Json::Null => "null",
    }
}

/// `text` cut to at most `limit` characters, an ellipsis saying it was.
pub(crate) fn shorten(text: &str, limit: usize) -> String {
    if text.chars().count() <= limit {
        text.to_owned()
    } else {
        format!("{}…", text.chars().take(limit - 1).collect::<String>())
    }
}

pub fn undo_summary(plan: &Plan, undo: &UndoSpec) -> String {
    match undo {
        UndoSpec::NotNeeded => "nothing to undo".to_owned(),
        UndoSpec::Native(native) => format!("automatic: {}", native.describe()),
        UndoSpec::Declared(action) => action_summary(plan, action),
        UndoSpec::Irreversible(Some(reason)) => format!("irreversible: {reason}"),
        UndoSpec::Irreversible(None) => "irreversible".to_owned(),
        UndoSpec::Missing => "none declared (validate warns)".to_owned(),
    }
}

pub fn fact_summary(plan: &Plan, fact: &FactSpec) -> String {
    let mut text = match &fact.source {
        FactSource::Kubernetes {
            api_version,
            kind,
            name,
            namespace,
            label_selector,
            field_selector,
        } => {
            let mut text = match name {
                Some(name) => format!("get {kind} ({api_version}) {}", template(plan, name)),
                None => format!("list {kind} ({api_version})"),
            };
            if let Some(namespace) = namespace {
                let _ = write!(text, " in namespace {}", template(plan, namespace));
            }
            if let Some(selector) = label_selector {
                let _ = write!(text, " with labels {}", template(plan, selector));
            }
            if let Some(selector) = field_selector {
                let _ = write!(text, " with fields {}", template(plan, selector));
            }
            text
        }
        FactSource::Exec {
            namespace,
            pod,
            container,
            argv: words,
            allow_exit_codes,
            ..
        } => {
            let container = container
                .as_ref()
                .map(|c| format!(" (container {})", template(plan, c)))
                .unwrap_or_default();
            format!(
                "exec in pod {}/{}{container}: {}{}",
                template(plan, namespace),
                template(plan, pod),
                argv(plan, words),
                read_on_exit(allow_exit_codes.as_ref())
            )
        }
        FactSource::Logs {
            namespace,
            target,
            container,
            previous,
            tail,
            ..
        } => {
            let container = container
                .as_ref()
                .map(|c| format!(" (container {})", template(plan, c)))
                .unwrap_or_default();
            let log = if *previous {
                "log before the last restart"
            } else {
                "log"
            };
            let lines = match tail {
                Some(1) => format!("last line of the {log}"),
                Some(count) => format!("last {count} lines of the {log}"),
                None => log.to_owned(),
            };
            let namespace = template(plan, namespace);
            let of = match target {
                LogTarget::Pod(pod) => format!("pod {namespace}/{}", template(plan, pod)),
                LogTarget::Deployment(deployment) => format!(
                    "the pod kubectl logs picks of deployment {namespace}/{}",
                    template(plan, deployment)
                ),
            };
            format!("{lines} of {of}{container}")
        }
        FactSource::Command {
            argv: words,
            allow_exit_codes,
            ..
        } => format!(
            "command: {}{}",
            argv(plan, words),
            read_on_exit(allow_exit_codes.as_ref())
        ),
        FactSource::Http {
            url,
            query,
            expect_status,
            ..
        } => {
            let mut text = format!("http GET {}", template(plan, url));
            if !query.is_empty() {
                let query = query
                    .iter()
                    .map(|(k, v)| format!("{k}={}", template(plan, v)))
                    .collect::<Vec<_>>()
                    .join("&");
                let _ = write!(text, "?{query}");
            }
            if let Some(expected) = expect_status {
                let _ = write!(
                    text,
                    " (status {expected} read as {{status, headers, body}})"
                );
            }
            text
        }
        FactSource::Expr(expression) => format!("expr: {}", expression.source.trim()),
    };
    if let Some(jsonpath) = &fact.jsonpath {
        let _ = write!(text, ", select {}", jsonpath.written);
    }
    if fact.secret {
        text.push_str(" (secret)");
    }
    text
}

fn origin(fact: &FactSpec) -> String {
    format!("{}:{}", fact.origin.path().display(), fact.span.start.line)
}

fn function_origin(function: &FunctionSpec) -> String {
    format!(
        "{}:{}",
        function.origin.path().display(),
        function.span.start.line
    )
}

fn param_value(plan: &Plan, param: &ParamSpec) -> String {
    match plan.bindings.values.get(&param.name) {
        Some(_) if plan.bindings.is_secret(param) => SECRET.to_owned(),
        Some(value) => value.to_string(),
        None => "(unset)".to_owned(),
    }
}

fn origin_word(plan: &Plan, name: &str) -> &'static str {
    match plan.bindings.origins.get(name) {
        Some(crate::bind::Origin::Set) => "--set",
        Some(crate::bind::Origin::Caller) => "caller",
        Some(crate::bind::Origin::File) => "--set-file",
        Some(crate::bind::Origin::Environment) => "environment",
        Some(crate::bind::Origin::Alert) => "alert",
        Some(crate::bind::Origin::Default) => "default",
        None => "unset",
    }
}

fn retries_summary(retries: &RetrySpec) -> String {
    if retries.retries == 0 {
        "no retries".to_owned()
    } else {
        format!(
            "{} {} (backoff {} doubling, at most {})",
            retries.retries,
            if retries.retries == 1 {
                "retry"
            } else {
                "retries"
            },
            format_duration(retries.backoff),
            format_duration(retries.max_backoff)
        )
    }
}

fn stage_of(plan: &Plan, position: usize) -> usize {
    plan.stages
        .iter()
        .position(|stage| stage.contains(&position))
        .unwrap_or(0)
        + 1
}

fn trigger_summary(trigger: &TriggerSpec) -> String {
    let mut text = trigger.alert_name.clone();
    if !trigger.matchers.is_empty() {
        let _ = write!(
            text,
            "{{{}}}",
            trigger
                .matchers
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if let Some(cooldown) = trigger.cooldown {
        let _ = write!(text, " (cooldown {})", format_duration(cooldown));
    }
    if trigger.auto_approve {
        text.push_str(" (gates auto-approved)");
    }
    text
}

fn rollback_summary(plan: &Plan) -> String {
    match &plan.runbook.rollback {
        None => "none".to_owned(),
        Some(RollbackSpec::Named(named)) => format!("{} ({})", named.name(), named.describe()),
        Some(RollbackSpec::Runbook { name, params }) => {
            if params.is_empty() {
                format!("run runbook {name}")
            } else {
                let bound = params
                    .iter()
                    .map(|(k, v)| format!("{k}={}", json_scalar(&json_template(plan, v))))
                    .collect::<Vec<_>>()
                    .join(" ");
                format!("run runbook {name} with {bound}")
            }
        }
        Some(RollbackSpec::Steps(steps)) => format!(
            "{} step{}",
            steps.len(),
            if steps.len() == 1 { "" } else { "s" }
        ),
    }
}

/// The steps a step waits for, a strict need marked: `check (succeeded)`.
pub fn needs_list(step: &StepSpec) -> Vec<String> {
    step.needs
        .iter()
        .map(|need| {
            if step.must_succeed.contains(need) {
                format!("{need} (succeeded)")
            } else {
                need.clone()
            }
        })
        .collect()
}

/// What the plan says of a step that waits for one that may be skipped (its `when`): a
/// skipped step satisfies a need, unless the need asks for `status: succeeded`.
fn skipped_needs_note(plan: &Plan, step: &StepSpec) -> Option<String> {
    let may_skip: Vec<&str> = step
        .needs
        .iter()
        .filter(|need| !step.must_succeed.contains(need))
        .filter(|need| plan.runbook.step(need).is_some_and(|s| s.when.is_some()))
        .map(String::as_str)
        .collect();
    let first = may_skip.first()?;
    Some(format!(
        "runs after {} even when skipped (a skipped step satisfies `needs`); `needs: [{{step: {first}, status: succeeded}}]` runs it only if {first} succeeded",
        may_skip.iter().map(|id| format!("`{id}`")).collect::<Vec<_>>().join(", ")
    ))
}

/// How a `forEach` step fans out, for the plan: the list, the instance ids, the bounds.
pub fn for_each_summary(step: &StepSpec, for_each: &ForEach) -> String {
    format!(
        "for each {} in {}: one instance per item, `{}[KEY]` with KEY {}; {} at a time; more than {} items refuse to start",
        for_each.name,
        for_each.list.source.trim(),
        step.id,
        match &for_each.key {
            Some(key) => format!("= {}", key.source.trim()),
            None => "its metadata.name (or name, or the item)".to_owned(),
        },
        for_each.parallelism,
        for_each.max_items
    )
}

fn step_details(plan: &Plan, step: &StepSpec) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(name) = &step.name {
        lines.push(format!("purpose: {name}"));
    }
    if let Some(for_each) = &step.for_each {
        lines.push(for_each_summary(step, for_each));
    }
    lines.extend(skipped_needs_note(plan, step));
    if let Some(when) = &step.when {
        lines.push(format!("only when: {}", when.source.trim()));
    }
    if let Some(prompt) = &step.confirm {
        lines.push(format!(
            "gate: asks \"{}\" first (--yes approves)",
            template(plan, prompt)
        ));
    }
    match &step.action {
        Action::Verify {
            interval,
            fail_when,
            ..
        } => {
            lines.push(format!(
                "poll every {}, timeout {}",
                format_duration(*interval),
                format_duration(step.timeout)
            ));
            if let Some(fail_when) = fail_when {
                lines.push(format!("fails at once when: {}", fail_when.source.trim()));
            }
        }
        _ => lines.push(format!(
            "timeout {}, {}",
            format_duration(step.timeout),
            retries_summary(&step.retries)
        )),
    }
    if let Action::Patch { body, .. } = &step.action {
        lines.push(format!("patch body: {}", json_template(plan, body)));
    }
    if let Action::Apply { manifest } = &step.action {
        lines.push(format!("manifest: {}", json_template(plan, manifest)));
    }
    let facts = plan.facts_for(&crate::compile::PlanNode::Step(step.index));
    if !facts.is_empty() {
        lines.push(format!("reads: {}", facts.join(", ")));
    }
    if step.action.mutates(step.readonly) || !matches!(step.undo, UndoSpec::NotNeeded) {
        lines.push(format!("undo: {}", undo_summary(plan, &step.undo)));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::shell_quote;

    #[test]
    fn quotes_only_what_a_shell_would_need() {
        assert_eq!(shell_quote("-format=json"), "-format=json");
        assert_eq!(shell_quote("team a"), "'team a'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote("$(id)"), "'$(id)'");
        assert_eq!(shell_quote(""), "''");
    }
}
