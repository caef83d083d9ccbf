//! Triggers and preconditions: which alerts start a runbook, and what must hold before its
//! first step.

use super::*;

impl Checker<'_> {
    pub(super) fn check_triggers(
        &mut self,
        at: At<'_>,
        declared: &[document::Trigger],
    ) -> Vec<TriggerSpec> {
        let mut triggers = Vec::new();
        for (index, trigger) in declared.iter().enumerate() {
            let pointer = format!("/spec/triggers/{index}");
            let mut matchers = Vec::new();
            for (m, text) in trigger.matchers.iter().enumerate() {
                let p = format!("{pointer}/matchers/{m}");
                match Matcher::parse(text) {
                    Ok(matcher) => matchers.push(matcher),
                    Err(error) => {
                        let span = self.offset_span(at, &p, text, error.offset);
                        self.error_help(
                            Code::Matcher,
                            at,
                            span,
                            format!("invalid label matcher `{text}`: {}", error.message),
                            Some("use Alertmanager's syntax: `severity=\"critical\"`, `namespace=~\"team-.*\"`, `env!=\"dev\"`".to_owned()),
                        );
                    }
                }
            }
            if trigger.alert_name.trim().is_empty() {
                self.error(
                    Code::Trigger,
                    at,
                    at.span(&format!("{pointer}/alertName")),
                    "`alertName` is empty",
                );
            }
            let cooldown = trigger.cooldown.as_ref().and_then(|text| {
                // `0s` is how a trigger says it wants no cooldown at all.
                if humantime::parse_duration(text.trim()).is_ok_and(|d| d.is_zero()) {
                    self.diagnostics.push(
                        Diagnostic::warning(
                            Code::NoCooldown,
                            at.source,
                            at.span(&format!("{pointer}/cooldown")),
                            "`cooldown: 0s` disables the cooldown: an alert that resolves and fires again re-runs the remediation every time",
                        )
                        .with_help(format!(
                            "leave `cooldown` out for the default ({}), or say how long a run's effect needs to show",
                            crate::runbook::format_duration(crate::runbook::DEFAULT_COOLDOWN)
                        )),
                    );
                    return Some(std::time::Duration::ZERO);
                }
                self.duration(at, &format!("{pointer}/cooldown"), text)
            });
            triggers.push(TriggerSpec {
                alert_name: trigger.alert_name.clone(),
                matchers,
                cooldown,
                auto_approve: trigger.auto_approve,
                span: at.span(&pointer),
            });
        }
        triggers
    }

    pub(super) fn check_preconditions(
        &mut self,
        at: At<'_>,
        declared: &[document::Precondition],
        scope: &Scope<'_>,
        reads: &mut Reads,
    ) -> Vec<Check> {
        let mut preconditions = Vec::new();
        for (index, precondition) in declared.iter().enumerate() {
            let pointer = format!("/spec/preconditions/{index}/check");
            if let Some(expr) = self.expression(at, &pointer, &precondition.check, scope, reads) {
                preconditions.push(Check {
                    expr,
                    message: precondition.message.clone(),
                    span: at.span(&pointer),
                });
            }
        }
        preconditions
    }
}
