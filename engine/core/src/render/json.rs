//! The plan as JSON for tools: a stable shape that scripts may parse, kept apart from the
//! human renderings so either can change without the other.

use super::*;

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
        "mustSucceed": step.must_succeed,
        "action": {"type": step.action.keyword(), "summary": action_summary(plan, &step.action)},
        "when": step.when.as_ref().map(|w| w.source.trim().to_owned()),
        "forEach": step.for_each.as_ref().map(|f| json!({
            "list": f.list.source.trim(),
            "as": f.name,
            "key": f.key.as_ref().map(|k| k.source.trim().to_owned()),
            "parallelism": f.parallelism,
            "maxItems": f.max_items,
        })),
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
            let secret = plan.bindings.is_secret(p);
            let value = match plan.bindings.values.get(&p.name) {
                Some(_) if secret => Json::String(SECRET.to_owned()),
                Some(value) => value.to_json(),
                None => Json::Null,
            };
            (
                p.name.clone(),
                json!({"value": value, "origin": origin_word(plan, &p.name), "secret": secret}),
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
