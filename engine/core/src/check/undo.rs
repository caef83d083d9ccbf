//! The undo pass: how each step is undone (declared, native, irreversible or not needed),
//! what an `undo:` may hold, and the `missing-undo` lint for a change with no way back (and,
//! in api_rules.rs, `undo-refused` for a native undo the API server would refuse).

use super::*;

impl Checker<'_> {
    /// How the step is undone, given its `undo:` checked by [`Checker::undo`] when it has one
    /// and is not also `irreversible`. Warns (`missing-undo`) about a change with no way back
    /// unless a `# runbook:allow missing-undo` comment waives it.
    pub(super) fn step_undo(
        &mut self,
        at: At<'_>,
        pointer: &str,
        step: &document::Step,
        id: &str,
        action: &Action,
        declared: Option<Action>,
    ) -> UndoSpec {
        let irreversible = irreversible(step);
        match (&step.undo, irreversible) {
            (Some(_), Some(_)) => {
                self.error(
                    Code::Undo,
                    at,
                    at.key_span(&format!("{pointer}/irreversible")),
                    "a step cannot have an `undo` and be `irreversible`",
                );
                UndoSpec::Missing
            }
            (Some(_), None) => match declared {
                Some(action) => UndoSpec::Declared(Box::new(action)),
                None => UndoSpec::Missing,
            },
            (None, Some(reason)) => UndoSpec::Irreversible(reason),
            (None, None) if !action.mutates(step.readonly) => UndoSpec::NotNeeded,
            (None, None) => match action.native_undo() {
                Some(native) => {
                    self.lint_undo_refused(at, pointer, step, id, action);
                    UndoSpec::Native(native)
                }
                None => {
                    let span = at.span(pointer);
                    if let Some(reason) = at.allowed(span, Code::MissingUndo) {
                        UndoSpec::Irreversible(reason)
                    } else {
                        self.diagnostics.push(
                            Diagnostic::warning(
                                Code::MissingUndo,
                                at.source,
                                span,
                                format!("step `{id}` changes the system (`{}`) but has no `undo` and is not marked `irreversible`", action.keyword()),
                            )
                            .with_help("add `undo:` with the action that reverses it, or `irreversible: <reason>`; to keep the step as written, put `# runbook:allow missing-undo <reason>` on the line above it"),
                        );
                        UndoSpec::Missing
                    }
                }
            },
        }
    }

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

/// `irreversible:` as written: `Some(reason)` when set, the reason being optional.
pub(super) fn irreversible(step: &document::Step) -> Option<Option<String>> {
    match &step.irreversible {
        None | Some(Confirm::Flag(false)) => None,
        Some(Confirm::Flag(true)) => Some(None),
        Some(Confirm::Text(reason)) => Some(Some(reason.clone())),
    }
}
