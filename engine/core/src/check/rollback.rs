//! The rollback pass: what runs when a run fails, a named action, another runbook or a list
//! of steps (which run in order and are not undone).

use super::*;

impl Checker<'_> {
    pub(super) fn check_rollback(
        &mut self,
        at: At<'_>,
        rollback: Option<&document::Rollback>,
        scope: &Scope<'_>,
        reads: &mut Reads,
        calls: &mut Vec<Call>,
        name: &str,
    ) -> Option<RollbackSpec> {
        match rollback {
            None => None,
            Some(document::Rollback::Named(text)) => {
                match NamedRollback::ALL.iter().find(|(n, _)| n == text) {
                    Some((_, named)) => Some(RollbackSpec::Named(*named)),
                    None => {
                        self.error_help(
                        Code::Rollback,
                        at,
                        at.span("/spec/rollback"),
                        format!("unknown rollback action `{text}`, expected `page-oncall`, `notify-oncall`, `{{runbook: NAME}}` or a list of steps"),
                        did_you_mean(text, NamedRollback::ALL.iter().map(|(n, _)| *n)),
                    );
                        None
                    }
                }
            }
            Some(document::Rollback::Runbook(call)) => {
                let params =
                    self.json_params(at, "/spec/rollback/params", &call.params, scope, reads);
                calls.push(Call {
                    from: name.to_owned(),
                    to: call.runbook.clone(),
                    params: call.params.keys().cloned().collect(),
                    source: at.source.clone(),
                    span: at.span("/spec/rollback/runbook"),
                });
                Some(RollbackSpec::Runbook {
                    name: call.runbook.clone(),
                    params,
                })
            }
            Some(document::Rollback::Steps(list)) => {
                let steps =
                    self.check_steps(at, "/spec/rollback", list, scope, reads, calls, name, true);
                Some(RollbackSpec::Steps(steps))
            }
        }
    }
}
