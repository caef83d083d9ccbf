//! Resuming a killed run: what its journal says happened.
//!
//! A step with a journaled result is done (or skipped). A step whose intent to mutate was
//! journaled but whose result was not may or may not have taken effect: it is *unknown*, and
//! the caller must find out (ask, or be told) before the run goes on; it is never repeated
//! blindly. A step that started without an intent changed nothing and simply runs again.

use serde_json::{Map, Value as Json};

use crate::exec::UndoRecord;
use crate::journal::{Event, Outcome, Record, StepResult};

/// A step that may or may not have taken effect.
#[derive(Clone, Debug, PartialEq)]
pub struct Unknown {
    pub step: String,
    /// What it was about to do.
    pub mutation: String,
    pub undo: Option<UndoRecord>,
    /// What it leaves on its object, for a native mutation: whether it took effect can be
    /// seen ([`observe`]).
    pub effect: Option<crate::journal::Effect>,
}

/// What the object as it is now says of a mutation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observed {
    /// It is as the mutation leaves it: it took effect.
    Done,
    /// It is as it was before: it did not.
    NotDone,
    /// Neither (someone else changed it, or it is gone): a human must look.
    Neither,
}

/// Whether `effect` took effect, by the object as it is now (`None`: there is none).
pub fn observe(effect: &crate::journal::Effect, current: Option<&Json>) -> Observed {
    let Some(current) = current else {
        return Observed::Neither;
    };
    if holds(current, &effect.after) {
        Observed::Done
    } else if holds(current, &effect.before) {
        Observed::NotDone
    } else {
        Observed::Neither
    }
}

/// Whether `object` has every field of `shape` (merge-patch shaped: `null` is absent).
fn holds(object: &Json, shape: &Json) -> bool {
    match shape {
        Json::Object(fields) => fields.iter().all(|(name, wanted)| {
            match (object.get(name), wanted) {
                (None | Some(Json::Null), Json::Null) => true,
                // An absent map holds nothing: it is as a shape that names only absent fields.
                (None, wanted) => absent(wanted),
                (Some(found), wanted) => holds(found, wanted),
            }
        }),
        wanted => object == wanted,
    }
}

/// Whether a shape names only fields that are absent (`null`, or maps of them).
fn absent(shape: &Json) -> bool {
    match shape {
        Json::Null => true,
        Json::Object(fields) => fields.values().all(absent),
        _ => false,
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct JournalState {
    pub run_id: String,
    pub runbook: String,
    pub digest: String,
    pub params: Map<String, Json>,
    pub dry_run: bool,
    /// What the run acted on (`context prod (https://...)`), if the journal says.
    pub cluster: Option<String>,
    /// How the run ended, if it did.
    pub finished: Option<Outcome>,
    /// Steps that succeeded, in completion order, with the undo state from their last intent.
    pub completed: Vec<(String, Option<UndoRecord>)>,
    pub skipped: Vec<String>,
    pub unknown: Vec<Unknown>,
    /// A step that failed before the run stopped: the run was already failing.
    pub failed: Option<String>,
    /// Steps whose undo already succeeded.
    pub undone: Vec<String>,
    /// What `capture` steps captured (`vars`), as journaled.
    pub vars: Map<String, Json>,
    /// Each ended step's result (`steps.<id>`: `status`, `output`, `exitCode`), as journaled.
    pub results: Map<String, Json>,
    /// The items each `forEach` step expanded to, by step id, in order, with their keys.
    pub expansions: std::collections::BTreeMap<String, Vec<(String, Json)>>,
}

/// Reads the state of a run from its journal records.
pub fn analyze(records: &[Record]) -> Result<JournalState, String> {
    let mut state = JournalState::default();
    let mut started = false;
    type Intent = (
        String,
        String,
        Option<UndoRecord>,
        Option<crate::journal::Effect>,
    );
    let mut intents: Vec<Intent> = Vec::new();
    // A runbook called as a step writes into the same journal under its own run id
    // (`parent.child`): only the parent's records describe the run being resumed.
    let own = records.iter().find_map(|record| match record.event {
        Event::RunStarted { .. } => Some(record.run.clone()),
        _ => None,
    });
    for record in records
        .iter()
        .filter(|record| Some(&record.run) == own.as_ref())
    {
        match &record.event {
            Event::RunStarted {
                runbook,
                digest,
                params,
                dry_run,
                cluster,
                ..
            } => {
                started = true;
                state.cluster = cluster.clone();
                state.run_id = record.run.clone();
                state.runbook = runbook.clone();
                state.digest = digest.clone();
                state.params = params.as_object().cloned().unwrap_or_default();
                state.dry_run = *dry_run;
            }
            Event::StepIntent {
                step,
                mutation,
                undo_state,
                effect,
                ..
            } => {
                // An undo state that held a secret was redacted in the journal: writing it back
                // would put the placeholder into the cluster, so it is not used.
                let undo = undo_state
                    .as_ref()
                    .filter(|value| !value.to_string().contains(crate::redact::REDACTED))
                    .and_then(|value| serde_json::from_value(value.clone()).ok());
                intents.retain(|(id, _, _, _)| id != step);
                intents.push((step.clone(), mutation.clone(), undo, effect.clone()));
            }
            Event::StepSkipped { step, .. } => {
                state.skipped.push(step.clone());
                state.results.insert(
                    step.clone(),
                    serde_json::json!({"status": "skipped", "output": "", "exitCode": null}),
                );
            }
            // A step cancelled by an interrupt did not fail: the run was stopped around it. Its
            // intent, if journaled, stays: it may or may not have taken effect.
            Event::StepFinished {
                result: StepResult::Failed,
                error_kind: Some(kind),
                ..
            } if kind == "interrupted" => {}
            Event::StepExpanded { step, keys, items } => {
                state.expansions.insert(
                    step.clone(),
                    keys.iter().cloned().zip(items.iter().cloned()).collect(),
                );
            }
            Event::StepFinished {
                step,
                result,
                error,
                output,
                stdout,
                exit_code,
                vars,
                ..
            } => {
                let status = match result {
                    StepResult::Succeeded => "succeeded",
                    StepResult::Failed => "failed",
                    StepResult::DryRun => "dry-run",
                    StepResult::NotRun => "not-run",
                };
                state.results.insert(
                    step.clone(),
                    serde_json::json!({
                        "status": status,
                        "output": stdout.clone().or_else(|| output.clone()).unwrap_or_default(),
                        "exitCode": exit_code,
                    }),
                );
                // A captured secret is journaled redacted: the placeholder must not become the
                // value, so the capture is taken as not done, and runs again on resume.
                let redacted_capture = vars
                    .as_ref()
                    .is_some_and(|value| value.to_string().contains(crate::redact::REDACTED));
                if let (StepResult::Succeeded, Some(Json::Object(captured))) = (result, vars) {
                    if !redacted_capture {
                        state.vars.extend(captured.clone());
                    }
                }
                let intent = intents
                    .iter()
                    .position(|(id, _, _, _)| id == step)
                    .map(|index| intents.remove(index));
                match result {
                    StepResult::Succeeded if redacted_capture => {}
                    StepResult::Succeeded => state
                        .completed
                        .push((step.clone(), intent.and_then(|(_, _, undo, _)| undo))),
                    StepResult::Failed => {
                        state.failed.get_or_insert_with(|| {
                            format!(
                                "step `{step}` failed: {}",
                                error.clone().unwrap_or_default()
                            )
                        });
                    }
                    StepResult::DryRun | StepResult::NotRun => {}
                }
            }
            Event::UndoFinished {
                step,
                succeeded: true,
                ..
            } => state.undone.push(step.clone()),
            // An interrupt whose answer was to roll back: a resume finishes the undo.
            Event::Interrupted {
                roll_back: true,
                by,
            } => {
                state
                    .failed
                    .get_or_insert_with(|| format!("interrupted, and rolling back (by {by})"));
            }
            // A stopped run (a refused gate, a declined Ctrl-C rollback, a server's drain)
            // left its completed steps in place: it can be resumed or rolled back.
            Event::RunFinished { outcome, .. } => {
                state.finished = (*outcome != Outcome::Stopped).then_some(*outcome);
            }
            _ => {}
        }
    }
    if !started {
        return Err("the journal has no run-started record".to_owned());
    }
    state.unknown = intents
        .into_iter()
        .map(|(step, mutation, undo, effect)| Unknown {
            step,
            mutation,
            undo,
            effect,
        })
        .collect();
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(event: Event) -> Record {
        Record {
            time: "2026-01-01T00:00:00.000Z".to_owned(),
            run: "r".to_owned(),
            event,
        }
    }

    fn started() -> Record {
        record(Event::RunStarted {
            runbook: "rb".to_owned(),
            file: "rb.yaml".to_owned(),
            digest: "d".to_owned(),
            params: serde_json::json!({"namespace": "shop"}),
            trigger: None,
            dry_run: false,
            cluster: Some("context dev (https://dev:6443)".to_owned()),
        })
    }

    fn intent(step: &str) -> Record {
        record(Event::StepIntent {
            step: step.to_owned(),
            attempt: 1,
            mutation: format!("do {step}"),
            undo_state: Some(
                serde_json::json!({"kind": "unschedulable", "node": "n1", "previous": false}),
            ),
            effect: None,
        })
    }

    fn finished(step: &str, result: StepResult) -> Record {
        record(Event::StepFinished {
            step: step.to_owned(),
            result,
            output: None,
            error: None,
            error_kind: None,
            duration_ms: 1,
            stdout: None,
            exit_code: None,
            vars: None,
        })
    }

    #[test]
    fn a_step_killed_between_intent_and_result_is_unknown() {
        let records = [
            started(),
            intent("a"),
            finished("a", StepResult::Succeeded),
            intent("b"),
        ];
        let state = analyze(&records).expect("analyzed");
        assert_eq!(state.runbook, "rb");
        assert_eq!(state.params["namespace"], "shop");
        assert_eq!(
            state.completed,
            [(
                "a".to_owned(),
                Some(UndoRecord::Unschedulable {
                    node: "n1".to_owned(),
                    previous: false
                })
            )]
        );
        assert_eq!(state.unknown.len(), 1);
        assert_eq!(state.unknown[0].step, "b");
        assert_eq!(state.unknown[0].mutation, "do b");
        assert!(state.finished.is_none() && state.failed.is_none());
    }

    /// Issue 15: what a `capture` captured is restored on resume, except a secret, which the
    /// journal holds redacted: that capture runs again rather than resume with the placeholder.
    #[test]
    fn captured_values_are_restored_but_a_redacted_capture_runs_again() {
        let captured = |step: &str, vars: serde_json::Value| {
            record(Event::StepFinished {
                step: step.to_owned(),
                result: StepResult::Succeeded,
                output: None,
                error: None,
                error_kind: None,
                duration_ms: 1,
                stdout: None,
                exit_code: None,
                vars: Some(vars),
            })
        };
        let records = [
            started(),
            captured("keep", serde_json::json!({"count": 2})),
            captured(
                "secret",
                serde_json::json!({"token": crate::redact::REDACTED}),
            ),
        ];
        let state = analyze(&records).expect("analyzed");
        assert_eq!(state.vars.get("count"), Some(&serde_json::json!(2)));
        assert!(!state.vars.contains_key("token"));
        let done: Vec<&str> = state.completed.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(done, ["keep"]);
        assert_eq!(state.results["keep"]["status"], "succeeded");
    }

    #[test]
    fn a_retried_step_that_then_succeeded_is_done_not_unknown() {
        let records = [
            started(),
            intent("a"),
            intent("a"),
            finished("a", StepResult::Succeeded),
        ];
        let state = analyze(&records).expect("analyzed");
        assert!(state.unknown.is_empty());
        assert_eq!(state.completed.len(), 1);
    }

    fn interrupted(step: &str) -> Record {
        record(Event::StepFinished {
            step: step.to_owned(),
            result: StepResult::Failed,
            output: None,
            error: Some("interrupted".to_owned()),
            error_kind: Some("interrupted".to_owned()),
            duration_ms: 1,
            stdout: None,
            exit_code: None,
            vars: None,
        })
    }

    /// Issue 13: a run stopped by Ctrl-C or SIGTERM was resumed as a failing run (undo and roll
    /// back), because the step the interrupt cancelled was journaled as failed. The cancelled
    /// step did not fail: it is unknown once its intent was journaled, and runs again if not.
    #[test]
    fn a_step_cancelled_by_an_interrupt_is_unknown_not_failed() {
        let stopped = record(Event::Interrupted {
            roll_back: false,
            by: "SIGTERM".to_owned(),
        });
        let records = [
            started(),
            intent("a"),
            interrupted("a"),
            interrupted("b"),
            stopped,
        ];
        let state = analyze(&records).expect("analyzed");
        assert!(state.failed.is_none(), "{:?}", state.failed);
        assert_eq!(state.unknown.len(), 1);
        assert_eq!(state.unknown[0].step, "a");
        assert!(state.completed.is_empty());
    }

    #[test]
    fn an_interrupt_that_chose_to_roll_back_is_resumed_rolling_back() {
        let rolling_back = record(Event::Interrupted {
            roll_back: true,
            by: "terminal".to_owned(),
        });
        let records = [
            started(),
            intent("a"),
            finished("a", StepResult::Succeeded),
            interrupted("b"),
            rolling_back,
        ];
        let state = analyze(&records).expect("analyzed");
        assert_eq!(
            state.failed.as_deref(),
            Some("interrupted, and rolling back (by terminal)")
        );
    }

    #[test]
    fn a_journal_without_a_start_is_refused() {
        assert!(analyze(&[intent("a")]).is_err());
    }

    fn effect() -> crate::journal::Effect {
        crate::journal::Effect {
            object: crate::effects::ObjectKey {
                api_version: "apps/v1".to_owned(),
                kind: "Deployment".to_owned(),
                namespace: Some("shop".to_owned()),
                name: "api".to_owned(),
            },
            after: serde_json::json!({"metadata": {"annotations": {"a": "new", "gone": null}}}),
            before: serde_json::json!({"metadata": {"annotations": {"a": null, "gone": "x"}}}),
        }
    }

    #[test]
    fn an_object_as_the_mutation_leaves_it_says_it_took_effect_and_as_before_that_it_did_not() {
        let object = |annotations: serde_json::Value| serde_json::json!({"metadata": {"name": "api", "annotations": annotations}, "spec": {}});
        assert_eq!(
            observe(
                &effect(),
                Some(&object(serde_json::json!({"a": "new", "b": "kept"})))
            ),
            Observed::Done
        );
        assert_eq!(
            observe(&effect(), Some(&object(serde_json::json!({"gone": "x"})))),
            Observed::NotDone
        );
        assert_eq!(
            observe(
                &effect(),
                Some(&object(serde_json::json!({"a": "someone else's"})))
            ),
            Observed::Neither,
            "changed by someone else since"
        );
        assert_eq!(observe(&effect(), None), Observed::Neither, "gone");
        let added = crate::journal::Effect {
            after: serde_json::json!({"metadata": {"annotations": {"a": "new"}}}),
            before: serde_json::json!({"metadata": {"annotations": {"a": null}}}),
            ..effect()
        };
        assert_eq!(
            observe(
                &added,
                Some(&serde_json::json!({"metadata": {"name": "api"}}))
            ),
            Observed::NotDone,
            "an object with no annotations at all is as before an annotation was added"
        );
        let scaled = crate::journal::Effect {
            after: serde_json::json!({"spec": {"replicas": 3}}),
            before: serde_json::json!({"spec": {"replicas": 2}}),
            ..effect()
        };
        assert_eq!(
            observe(&scaled, Some(&serde_json::json!({"spec": {"replicas": 2}}))),
            Observed::NotDone
        );
    }

    #[test]
    fn an_unknown_step_keeps_the_effect_its_intent_journaled() {
        let mut with_effect = intent("mark");
        if let Event::StepIntent { effect: slot, .. } = &mut with_effect.event {
            *slot = Some(self::effect());
        }
        let state = analyze(&[started(), with_effect]).expect("analyzed");
        assert_eq!(state.unknown.len(), 1);
        assert_eq!(state.unknown[0].effect, Some(effect()));
    }
}

#[cfg(test)]
mod nested {
    use super::*;

    #[test]
    fn a_called_runbooks_records_do_not_count_for_the_parent() {
        let record = |run: &str, event: Event| Record {
            time: "t".to_owned(),
            run: run.to_owned(),
            event,
        };
        let records = [
            record(
                "p",
                Event::RunStarted {
                    runbook: "parent".to_owned(),
                    file: "p.yaml".to_owned(),
                    digest: "d".to_owned(),
                    params: serde_json::json!({}),
                    trigger: None,
                    dry_run: false,
                    cluster: None,
                },
            ),
            record(
                "p.child",
                Event::RunStarted {
                    runbook: "child".to_owned(),
                    file: "c.yaml".to_owned(),
                    digest: String::new(),
                    params: serde_json::json!({}),
                    trigger: None,
                    dry_run: false,
                    cluster: None,
                },
            ),
            record(
                "p.child",
                Event::RunFinished {
                    outcome: Outcome::Succeeded,
                    exit_code: 0,
                    message: String::new(),
                },
            ),
        ];
        let state = analyze(&records).expect("analyzed");
        assert_eq!(state.runbook, "parent");
        assert_eq!(
            state.finished, None,
            "the child finishing does not finish the parent"
        );
    }
}
