//! The undo pass: what an `undo:` may hold.

use super::*;

impl Checker<'_> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn undo(
        &mut self,
        at: At<'_>,
        pointer: &str,
        undo: &document::Step,
        scope: &Scope<'_>,
        reads: &mut Reads,
        calls: &mut Vec<Call>,
        runbook: &str,
    ) -> Option<Action> {
        let extras = [
            ("id", undo.id.is_some()),
            ("needs", undo.needs.is_some()),
            ("when", undo.when.is_some()),
            ("timeout", undo.timeout.is_some()),
            ("retries", undo.retries.is_some()),
            ("confirm", undo.confirm.is_some()),
            ("undo", undo.undo.is_some()),
            ("irreversible", undo.irreversible.is_some()),
        ];
        for (field, present) in extras {
            if present {
                self.error_help(
                    Code::Undo,
                    at,
                    at.key_span(&format!("{pointer}/{field}")),
                    format!("`{field}` has no meaning in an `undo`"),
                    Some(
                        "an undo is a single action, such as `run: [...]` or `scale: {...}`"
                            .to_owned(),
                    ),
                );
            }
        }
        let action = self.action(at, pointer, undo, scope, reads, calls, runbook, true)?;
        if matches!(
            action,
            Action::Gate | Action::Verify { .. } | Action::Wait { .. }
        ) {
            self.error(
                Code::Undo,
                at,
                at.span(pointer),
                format!(
                    "`{}` cannot undo anything; give the action that reverses the step",
                    action.keyword()
                ),
            );
        }
        Some(action)
    }
}
