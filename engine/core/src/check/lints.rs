//! Lints: warnings about runbooks that are valid but probably not what their author meant.
//! Each can be waived where it is reported with `# runbook:allow <code> <reason>`.

use super::facts::RunbookFacts;
use super::*;

impl Checker<'_> {
    /// A param bound from an alert in a runbook that no alert starts.
    pub(super) fn lint_unused_from(
        &mut self,
        at: At<'_>,
        params: &[ParamSpec],
        triggers: &[TriggerSpec],
    ) {
        for param in params {
            if param.from.is_some() && triggers.is_empty() {
                self.diagnostics.push(
                    Diagnostic::warning(
                        "unused-from",
                        at.source,
                        param.span,
                        format!(
                            "param `{}` is bound from an alert, but the runbook has no triggers",
                            param.name
                        ),
                    )
                    .with_help("add a trigger under `triggers:`, or drop `from:`"),
                );
            }
        }
    }

    /// Local facts nothing reads are likely a typo or left over.
    pub(super) fn lint_unused_facts(
        &mut self,
        at: At<'_>,
        declared: &[document::Fact],
        local: &RunbookFacts,
        reads: &Reads,
    ) {
        for (index, fact) in declared.iter().enumerate() {
            let read_by_others = local
                .checked
                .values()
                .any(|other| other.spec.reads.contains(&fact.name));
            if local.names.contains(&fact.name)
                && !reads.facts.contains(&fact.name)
                && !read_by_others
            {
                self.diagnostics.push(
                    Diagnostic::warning("unused-fact", at.source, at.span(&format!("/spec/facts/{index}/name")), format!("fact `{}` is never read", fact.name))
                        .with_help("read it in a precondition, `when`, `verify` or a `${...}` template, or remove it"),
                );
            }
        }
    }
}
