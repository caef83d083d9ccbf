//! The plan as GitHub-flavoured markdown for a pull-request review comment; table cells and
//! code spans are escaped here because reviewers read the rendered, not the raw, text.

use std::fmt::Write as _;

use super::*;

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
    overview_table(&mut out, plan);
    steps_table(&mut out, plan);
    step_details_section(&mut out, plan);
    facts_section(&mut out, plan);
    failure_section(&mut out, plan);
    out
}

/// The summary table and the preconditions a reviewer checks first.
fn overview_table(out: &mut String, plan: &Plan) {
    let runbook = &plan.runbook;
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
}

/// One row per step, in stage order, so the table reads in the order a run would go.
fn steps_table(out: &mut String, plan: &Plan) {
    let runbook = &plan.runbook;
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
}

/// Each step in full, folded away because the table above is what most reviews need.
fn step_details_section(out: &mut String, plan: &Plan) {
    let runbook = &plan.runbook;
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
                crate::render::needs_list(step)
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
}

/// Where each fact comes from, folded away like the step details.
fn facts_section(out: &mut String, plan: &Plan) {
    let runbook = &plan.runbook;
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
    if !runbook.functions.is_empty() {
        let _ = writeln!(
            out,
            "<details><summary>Functions called ({})</summary>\n",
            runbook.functions.len()
        );
        let _ = writeln!(out, "| Function | Body | Defined in |\n|---|---|---|");
        for function in runbook.functions.values() {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} |",
                function.signature(),
                md_code(function.body.trim()),
                md_code(&function_origin(function))
            );
        }
        let _ = writeln!(out, "\n</details>\n");
    }
}

/// What a failed run would do, so the reviewer sees the undo path next to the plan.
fn failure_section(out: &mut String, plan: &Plan) {
    let runbook = &plan.runbook;
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
}
