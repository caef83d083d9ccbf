//! What a plan looks like to people and machines: text for the terminal, markdown for a
//! pull-request review, JSON for tools, and the DAG as Graphviz DOT or Mermaid.
//!
//! Params are substituted into templates here (only params: facts are read at run time, so a
//! `${...}` that reads a fact is shown as written). Secret params are shown as `<secret>`.

use std::fmt::Write as _;

use serde_json::{json, Value as Json};

use crate::compile::{Dependency, Plan, PlanNode};
use crate::expr::{Template, TemplatePart};
use crate::runbook::*;

/// How long a param-only expression in a template may take when a plan is rendered.
const RENDER_EVALUATION_TIME: std::time::Duration = std::time::Duration::from_millis(200);

const SECRET: &str = "<secret>";

/// Substitutes bound params into a template; holes that read anything else stay as written.
pub fn template(plan: &Plan, template: &Template) -> String {
    let mut out = String::new();
    for part in &template.parts {
        match part {
            TemplatePart::Text(text) => out.push_str(text),
            TemplatePart::Expr(expression, _) => {
                let only_params = expression.references.iter().all(|r| r.path[0] == "params");
                let secret = expression.references.iter().any(|r| {
                    r.path
                        .get(1)
                        .and_then(|name| plan.runbook.param(name))
                        .is_some_and(|p| p.secret)
                });
                if secret {
                    out.push_str(SECRET);
                    continue;
                }
                let value = only_params.then(|| {
                    let mut scope = rhai::Scope::new();
                    scope.push_constant("params", plan.bindings.to_rhai());
                    // Shown in a plan and in every step's summary, on the caller's thread: a
                    // short budget, and the expression as written if it runs out.
                    let budget = crate::expr::Budget {
                        deadline: std::time::Instant::now() + RENDER_EVALUATION_TIME,
                        cancelled: Default::default(),
                    };
                    crate::expr::evaluate::<rhai::Dynamic>(&mut scope, &expression.ast, &budget)
                        .ok()
                });
                match value.flatten() {
                    Some(value) if !value.is_unit() => out.push_str(&value.to_string()),
                    _ => {
                        let _ = write!(out, "${{{}}}", expression.source);
                    }
                }
            }
        }
    }
    out
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
        JsonTemplate::String(text) => Json::String(template(plan, text)),
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
        Action::Run { argv: words } => format!("run {}", argv(plan, words)),
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
        } => {
            let container = container.as_ref().map(|c| format!(" (container {})", template(plan, c))).unwrap_or_default();
            format!("exec in pod {}/{}{container}: {}", template(plan, namespace), template(plan, pod), argv(plan, words))
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

fn json_scalar(value: &Json) -> String {
    match value {
        Json::String(text) => text.clone(),
        other => other.to_string(),
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
            ..
        } => {
            let container = container
                .as_ref()
                .map(|c| format!(" (container {})", template(plan, c)))
                .unwrap_or_default();
            format!(
                "exec in pod {}/{}{container}: {}",
                template(plan, namespace),
                template(plan, pod),
                argv(plan, words)
            )
        }
        FactSource::Logs {
            namespace,
            pod,
            container,
            tail,
            ..
        } => {
            let container = container
                .as_ref()
                .map(|c| format!(" (container {})", template(plan, c)))
                .unwrap_or_default();
            let lines = match tail {
                Some(1) => "last line of the log".to_owned(),
                Some(count) => format!("last {count} lines of the log"),
                None => "log".to_owned(),
            };
            format!(
                "{lines} of pod {}/{}{container}",
                template(plan, namespace),
                template(plan, pod)
            )
        }
        FactSource::Command { argv: words, .. } => format!("command: {}", argv(plan, words)),
        FactSource::Http { url, query, .. } => {
            let mut text = format!("http GET {}", template(plan, url));
            if !query.is_empty() {
                let query = query
                    .iter()
                    .map(|(k, v)| format!("{k}={}", template(plan, v)))
                    .collect::<Vec<_>>()
                    .join("&");
                let _ = write!(text, "?{query}");
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

fn param_value(plan: &Plan, param: &ParamSpec) -> String {
    match plan.bindings.values.get(&param.name) {
        Some(_) if param.secret => SECRET.to_owned(),
        Some(value) => value.to_string(),
        None => "(unset)".to_owned(),
    }
}

fn origin_word(plan: &Plan, name: &str) -> &'static str {
    match plan.bindings.origins.get(name) {
        Some(crate::bind::Origin::Set) => "--set",
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

fn step_details(plan: &Plan, step: &StepSpec) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(name) = &step.name {
        lines.push(format!("purpose: {name}"));
    }
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
        Action::Verify { interval, .. } => lines.push(format!(
            "poll every {}, timeout {}",
            format_duration(*interval),
            format_duration(step.timeout)
        )),
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

/// The plan as text for a terminal.
pub fn plan_text(plan: &Plan) -> String {
    let runbook = &plan.runbook;
    let mut out = String::new();
    let _ = writeln!(out, "Plan for runbook {}", runbook.name);
    let _ = writeln!(out, "  file: {}", runbook.source.path().display());
    if let Some(description) = &runbook.description {
        let _ = writeln!(out, "  description: {description}");
    }
    if let Some(owner) = &runbook.owner {
        let _ = writeln!(out, "  owner: {owner}");
    }
    for trigger in &runbook.triggers {
        let _ = writeln!(out, "  trigger: alert {}", trigger_summary(trigger));
    }
    if let Some(triggered) = &plan.triggered_by {
        let _ = writeln!(
            out,
            "  triggered by: firing alert {} (fingerprint {})",
            triggered.alert.name(),
            if triggered.alert.fingerprint.is_empty() {
                "none"
            } else {
                &triggered.alert.fingerprint
            }
        );
    }
    if !runbook.params.is_empty() {
        let _ = writeln!(out, "\nParams:");
        for param in &runbook.params {
            let _ = writeln!(
                out,
                "  {} = {} ({})",
                param.name,
                param_value(plan, param),
                origin_word(plan, &param.name)
            );
        }
    }
    if !runbook.facts.is_empty() {
        let _ = writeln!(
            out,
            "\nFacts (read when first needed, read again after any change):"
        );
        for fact in runbook.facts.values() {
            let _ = writeln!(
                out,
                "  {}: {}  [{}]",
                fact.name,
                fact_summary(plan, fact),
                origin(fact)
            );
        }
    }
    if !runbook.preconditions.is_empty() {
        let _ = writeln!(
            out,
            "\nPreconditions (all must hold, or the run stops having changed nothing):"
        );
        for (index, check) in runbook.preconditions.iter().enumerate() {
            let _ = writeln!(out, "  {}. {}", index + 1, check.expr.source.trim());
            if let Some(message) = &check.message {
                let _ = writeln!(out, "       if not: {message}");
            }
        }
    }
    let _ = writeln!(out, "\nSteps:");
    for (stage_index, stage) in plan.stages.iter().enumerate() {
        if stage.len() > 1 {
            let ids: Vec<&str> = stage
                .iter()
                .map(|p| runbook.steps[*p].id.as_str())
                .collect();
            let _ = writeln!(
                out,
                "  stage {} (in parallel: {})",
                stage_index + 1,
                ids.join(", ")
            );
        } else {
            let _ = writeln!(out, "  stage {}", stage_index + 1);
        }
        for position in stage {
            let step = &runbook.steps[*position];
            let needs = if step.needs.is_empty() {
                String::new()
            } else {
                format!("  (after {})", step.needs.join(", "))
            };
            let _ = writeln!(
                out,
                "    {}. {}: {}{needs}",
                step.index + 1,
                step.id,
                action_summary(plan, &step.action)
            );
            for line in step_details(plan, step) {
                let _ = writeln!(out, "         {line}");
            }
        }
    }
    let _ = writeln!(out, "\nOn failure: stop starting steps, undo completed steps in reverse order of completion, then roll back:");
    match &runbook.rollback {
        Some(RollbackSpec::Steps(steps)) => {
            for step in steps {
                let _ = writeln!(
                    out,
                    "  {}. {}: {}",
                    step.index + 1,
                    step.id,
                    action_summary(plan, &step.action)
                );
            }
        }
        _ => {
            let _ = writeln!(out, "  rollback: {}", rollback_summary(plan));
        }
    }
    out
}

fn md_cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

fn md_code(text: &str) -> String {
    let fence = if text.contains('`') { "``" } else { "`" };
    let pad = if text.starts_with('`') || text.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{}{pad}{fence}", md_cell(text))
}

/// The plan as GitHub-flavoured markdown, for a pull-request review comment.
pub fn plan_markdown(plan: &Plan) -> String {
    let runbook = &plan.runbook;
    let mut out = String::new();
    let _ = writeln!(out, "### Runbook plan: `{}`\n", runbook.name);
    if let Some(description) = &runbook.description {
        let _ = writeln!(out, "> {}\n", description.replace('\n', " "));
    }
    let _ = writeln!(out, "| | |\n|---|---|");
    let _ = writeln!(
        out,
        "| File | {} |",
        md_code(&runbook.source.path().display().to_string())
    );
    if let Some(owner) = &runbook.owner {
        let _ = writeln!(out, "| Owner | {} |", md_cell(owner));
    }
    if !runbook.triggers.is_empty() {
        let triggers = runbook
            .triggers
            .iter()
            .map(|t| md_code(&trigger_summary(t)))
            .collect::<Vec<_>>()
            .join("<br>");
        let _ = writeln!(out, "| Triggers | {triggers} |");
    }
    if !runbook.params.is_empty() {
        let params = runbook
            .params
            .iter()
            .map(|p| {
                format!(
                    "{} ({})",
                    md_code(&format!("{}={}", p.name, param_value(plan, p))),
                    origin_word(plan, &p.name)
                )
            })
            .collect::<Vec<_>>()
            .join("<br>");
        let _ = writeln!(out, "| Params | {params} |");
    }
    let gates = runbook.steps.iter().filter(|s| s.confirm.is_some()).count();
    let _ = writeln!(out, "| Gates | {gates} |");
    let _ = writeln!(out, "| Rollback | {} |", md_cell(&rollback_summary(plan)));
    if !runbook.preconditions.is_empty() {
        let _ = writeln!(
            out,
            "\n**Preconditions** (all must hold; otherwise the run stops having changed nothing)\n"
        );
        for (index, check) in runbook.preconditions.iter().enumerate() {
            let _ = writeln!(out, "{}. {}", index + 1, md_code(check.expr.source.trim()));
        }
    }
    let _ = writeln!(out, "\n**Steps**\n");
    let _ = writeln!(out, "| # | Stage | Step | Action | Gate | Undo | Timeout |");
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for stage in &plan.stages {
        for position in stage {
            let step = &runbook.steps[*position];
            let gate = step.confirm.as_ref().map_or_else(
                || "—".to_owned(),
                |prompt| format!("asks: {}", md_cell(&template(plan, prompt))),
            );
            let undo = match step.undo {
                UndoSpec::Missing => format!("⚠️ {}", undo_summary(plan, &step.undo)),
                _ => undo_summary(plan, &step.undo),
            };
            let _ = writeln!(
                out,
                "| {} | {} | `{}` | {} | {} | {} | {} |",
                step.index + 1,
                stage_of(plan, *position),
                step.id,
                md_code(&action_summary(plan, &step.action)),
                gate,
                md_cell(&undo),
                format_duration(step.timeout)
            );
        }
    }
    let _ = writeln!(out, "\n<details><summary>Step details</summary>\n");
    for step in &runbook.steps {
        let _ = writeln!(out, "#### {}. `{}`\n", step.index + 1, step.id);
        let _ = writeln!(
            out,
            "- action: {}",
            md_code(&action_summary(plan, &step.action))
        );
        if !step.needs.is_empty() {
            let _ = writeln!(
                out,
                "- after: {}",
                step.needs
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        for line in step_details(plan, step) {
            let _ = writeln!(out, "- {}", md_cell(&line));
        }
        out.push('\n');
    }
    let _ = writeln!(out, "</details>\n");
    if !runbook.facts.is_empty() {
        let _ = writeln!(
            out,
            "<details><summary>Facts read ({})</summary>\n",
            runbook.facts.len()
        );
        let _ = writeln!(out, "| Fact | Source | Defined in |\n|---|---|---|");
        for fact in runbook.facts.values() {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} |",
                fact.name,
                md_code(&fact_summary(plan, fact)),
                md_code(&origin(fact))
            );
        }
        let _ = writeln!(out, "\n</details>\n");
    }
    let _ = write!(out, "**On failure:** stop starting steps, undo completed steps in reverse order of completion, then roll back: ");
    match &runbook.rollback {
        Some(RollbackSpec::Steps(steps)) => {
            let _ = writeln!(out, "\n");
            for step in steps {
                let _ = writeln!(out, "1. {}", md_code(&action_summary(plan, &step.action)));
            }
        }
        _ => {
            let _ = writeln!(out, "{}.", md_cell(&rollback_summary(plan)));
        }
    }
    out
}

fn undo_json(plan: &Plan, undo: &UndoSpec) -> Json {
    let kind = match undo {
        UndoSpec::NotNeeded => "not-needed",
        UndoSpec::Native(_) => "automatic",
        UndoSpec::Declared(_) => "declared",
        UndoSpec::Irreversible(_) => "irreversible",
        UndoSpec::Missing => "missing",
    };
    json!({"kind": kind, "summary": undo_summary(plan, undo)})
}

fn step_json(plan: &Plan, step: &StepSpec, stage: Option<usize>) -> Json {
    json!({
        "id": step.id,
        "index": step.index,
        "name": step.name,
        "stage": stage,
        "line": step.span.start.line,
        "needs": step.needs,
        "action": {"type": step.action.keyword(), "summary": action_summary(plan, &step.action)},
        "when": step.when.as_ref().map(|w| w.source.trim().to_owned()),
        "timeoutSeconds": step.timeout.as_secs_f64(),
        "retries": step.retries,
        "confirm": step.confirm.as_ref().map(|prompt| template(plan, prompt)),
        "mutates": step.action.mutates(step.readonly),
        "undo": undo_json(plan, &step.undo),
        "reads": plan.facts_for(&PlanNode::Step(step.index)),
    })
}

/// The plan as JSON for tools.
pub fn plan_json(plan: &Plan) -> Json {
    let runbook = &plan.runbook;
    let params: serde_json::Map<String, Json> = runbook
        .params
        .iter()
        .map(|p| {
            let value = match plan.bindings.values.get(&p.name) {
                Some(_) if p.secret => Json::String(SECRET.to_owned()),
                Some(value) => value.to_json(),
                None => Json::Null,
            };
            (
                p.name.clone(),
                json!({"value": value, "origin": origin_word(plan, &p.name), "secret": p.secret}),
            )
        })
        .collect();
    let rollback = match &runbook.rollback {
        None => Json::Null,
        Some(RollbackSpec::Named(named)) => {
            json!({"type": "named", "name": named.name(), "summary": named.describe()})
        }
        Some(RollbackSpec::Runbook { name, .. }) => {
            json!({"type": "runbook", "name": name, "summary": rollback_summary(plan)})
        }
        Some(RollbackSpec::Steps(steps)) => {
            json!({"type": "steps", "steps": steps.iter().map(|s| step_json(plan, s, None)).collect::<Vec<_>>()})
        }
    };
    json!({
        "runbook": runbook.name,
        "file": runbook.source.path().display().to_string(),
        "description": runbook.description,
        "owner": runbook.owner,
        "tags": runbook.tags,
        "params": params,
        "triggers": runbook.triggers.iter().map(|t| json!({
            "alertName": t.alert_name,
            "matchers": t.matchers.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "cooldownSeconds": t.cooldown.map(|c| c.as_secs_f64()),
            "autoApprove": t.auto_approve,
        })).collect::<Vec<_>>(),
        "triggeredBy": plan.triggered_by.as_ref().map(|t| json!({"trigger": t.trigger, "alert": t.alert.name(), "fingerprint": t.alert.fingerprint})),
        "facts": runbook.facts.values().map(|f| json!({"name": f.name, "source": fact_summary(plan, f), "definedIn": origin(f), "reads": f.reads})).collect::<Vec<_>>(),
        "preconditions": runbook.preconditions.iter().enumerate().map(|(i, c)| json!({
            "check": c.expr.source.trim(),
            "message": c.message,
            "reads": plan.facts_for(&PlanNode::Precondition(i)),
        })).collect::<Vec<_>>(),
        "stages": plan.stages.iter().map(|stage| stage.iter().map(|p| runbook.steps[*p].id.clone()).collect::<Vec<_>>()).collect::<Vec<_>>(),
        "steps": runbook.steps.iter().enumerate().map(|(p, s)| step_json(plan, s, Some(stage_of(plan, p)))).collect::<Vec<_>>(),
        "rollback": rollback,
    })
}

fn truncate(text: &str, limit: usize) -> String {
    let text = text.replace('\n', " ");
    if text.chars().count() <= limit {
        text
    } else {
        format!("{}…", text.chars().take(limit - 1).collect::<String>())
    }
}

/// A short label for a graph node.
fn node_label(plan: &Plan, node: &PlanNode) -> (String, String) {
    let runbook = &plan.runbook;
    match node {
        PlanNode::Fact(name) => ("fact".to_owned(), name.clone()),
        PlanNode::Precondition(index) => (
            format!("precondition {}", index + 1),
            truncate(runbook.preconditions[*index].expr.source.trim(), 60),
        ),
        PlanNode::Step(index) => {
            let step = &runbook.steps[*index];
            let gate = if step.confirm.is_some() {
                " (gate)"
            } else {
                ""
            };
            (
                format!("{}{gate}", step.id),
                truncate(&action_summary(plan, &step.action), 60),
            )
        }
        PlanNode::Undo(index) => {
            let step = &runbook.steps[*index];
            (
                format!("undo {}", step.id),
                truncate(&undo_summary(plan, &step.undo), 60),
            )
        }
        PlanNode::Rollback => ("rollback".to_owned(), truncate(&rollback_summary(plan), 60)),
    }
}

fn node_id(plan: &Plan, node: &PlanNode) -> String {
    match node {
        PlanNode::Fact(name) => format!("fact:{name}"),
        PlanNode::Precondition(index) => format!("precondition:{}", index + 1),
        PlanNode::Step(index) => format!("step:{}", plan.runbook.steps[*index].id),
        PlanNode::Undo(index) => format!("undo:{}", plan.runbook.steps[*index].id),
        PlanNode::Rollback => "rollback".to_owned(),
    }
}

fn dot_escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The DAG in Graphviz DOT.
pub fn graph_dot(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph \"{}\" {{", dot_escape(&plan.runbook.name));
    let _ = writeln!(out, "  rankdir=TB;");
    let _ = writeln!(out, "  node [fontname=\"Helvetica\", fontsize=10];");
    let _ = writeln!(out, "  edge [fontname=\"Helvetica\", fontsize=9];");
    for index in &plan.order {
        let node = &plan.graph[*index];
        let (title, detail) = node_label(plan, node);
        let shape = match node {
            PlanNode::Fact(_) => "shape=ellipse, style=filled, fillcolor=\"#eef5ff\"",
            PlanNode::Precondition(_) => "shape=diamond",
            PlanNode::Step(position) if plan.runbook.steps[*position].confirm.is_some() => {
                "shape=box, style=\"rounded,bold\""
            }
            PlanNode::Step(_) => "shape=box, style=rounded",
            PlanNode::Undo(_) => "shape=box, style=\"rounded,dashed\"",
            PlanNode::Rollback => "shape=octagon",
        };
        let _ = writeln!(
            out,
            "  \"{}\" [label=\"{}\\n{}\", {shape}];",
            dot_escape(&node_id(plan, node)),
            dot_escape(&title),
            dot_escape(&detail)
        );
    }
    for edge in plan.graph.edge_indices() {
        let Some((source, target)) = plan.graph.edge_endpoints(edge) else {
            continue;
        };
        let style = match plan.graph[edge] {
            Dependency::Data => " [style=dotted]",
            Dependency::Order => "",
            Dependency::Compensation => " [style=dashed, color=\"#b00020\", label=\"on failure\"]",
        };
        let _ = writeln!(
            out,
            "  \"{}\" -> \"{}\"{style};",
            dot_escape(&node_id(plan, &plan.graph[source])),
            dot_escape(&node_id(plan, &plan.graph[target]))
        );
    }
    out.push_str("}\n");
    out
}

fn mermaid_escape(text: &str) -> String {
    let mut out = String::new();
    for character in text.chars() {
        match character {
            '"' => out.push_str("#quot;"),
            '<' => out.push_str("#lt;"),
            '>' => out.push_str("#gt;"),
            '#' => out.push_str("#35;"),
            '`' => out.push_str("#96;"),
            '|' => out.push_str("#124;"),
            other => out.push(other),
        }
    }
    out
}

/// The DAG as a Mermaid flowchart.
pub fn graph_mermaid(plan: &Plan) -> String {
    let mut out = String::from("flowchart TD\n");
    let ids: std::collections::BTreeMap<petgraph::graph::NodeIndex, String> = plan
        .order
        .iter()
        .enumerate()
        .map(|(position, index)| (*index, format!("n{position}")))
        .collect();
    for index in &plan.order {
        let node = &plan.graph[*index];
        let (title, detail) = node_label(plan, node);
        let label = mermaid_escape(&format!("{title}: {detail}"));
        let id = &ids[index];
        let _ = match node {
            PlanNode::Fact(_) => writeln!(out, "  {id}([\"{label}\"])"),
            PlanNode::Precondition(_) => writeln!(out, "  {id}{{\"{label}\"}}"),
            PlanNode::Step(_) => writeln!(out, "  {id}[\"{label}\"]"),
            PlanNode::Undo(_) => writeln!(out, "  {id}[/\"{label}\"/]"),
            PlanNode::Rollback => writeln!(out, "  {id}[[\"{label}\"]]"),
        };
    }
    for edge in plan.graph.edge_indices() {
        let Some((source, target)) = plan.graph.edge_endpoints(edge) else {
            continue;
        };
        let arrow = match plan.graph[edge] {
            Dependency::Data => "-.->",
            Dependency::Order => "-->",
            Dependency::Compensation => "-. on failure .->",
        };
        let _ = writeln!(out, "  {} {arrow} {}", ids[&source], ids[&target]);
    }
    out
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
