//! The plan as terminal text: the stages in order, each step with its action, and the
//! rollback, so `runbook plan` shows at a glance what a run would do.

use std::fmt::Write as _;

use super::*;

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
    if !runbook.functions.is_empty() {
        let _ = writeln!(out, "\nFunctions (from fact libraries):");
        for function in runbook.functions.values() {
            let _ = writeln!(
                out,
                "  {} = {}  [{}]",
                function.signature(),
                function.body.trim(),
                function_origin(function)
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
                format!("  (after {})", crate::render::needs_list(step).join(", "))
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
