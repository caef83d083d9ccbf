//! Confirmation gates: ask, pause for an approval from elsewhere, or stop.

use super::*;

/// Why the run may not pass a gate.
pub(super) enum GateRefused {
    /// Refused, or nobody to ask: the run stops.
    Stop(String),
    /// Left unanswered while the run drains.
    Paused,
}

impl Run {
    /// Asks at a gate. `Err` stops the run.
    pub(super) async fn gate(&self, step: &StepSpec) -> Result<(), GateRefused> {
        let question = match &step.confirm {
            Some(template) => self
                .render(template, None)
                .await
                .unwrap_or_else(|_| template.source.clone()),
            None => return Ok(()),
        };
        let detail = crate::render::action_summary(&self.plan, &step.action);
        let (answer, by) = if self.options.dry_run {
            ("not asked (dry-run)", "dry-run".to_owned())
        } else if self.options.yes {
            ("yes", "--yes".to_owned())
        } else {
            let prompter = &self.effects.prompter;
            if prompter.pauses(&step.id) {
                // Nobody is at a terminal: the run waits for an approval from elsewhere.
                self.emit(Event::GatePaused {
                    step: step.id.clone(),
                    question: question.clone(),
                });
            }
            let answer = prompter.confirm(&step.id, &question, &detail).await;
            let by = prompter.answered_by(&step.id);
            match answer {
                Answer::Yes => ("yes", by),
                Answer::No => ("no", by),
                Answer::NoTerminal => ("not asked (no terminal)", "none".to_owned()),
                // Left unanswered: the run drains and a resume asks again.
                Answer::Paused => return Err(GateRefused::Paused),
            }
        };
        self.emit(Event::GateAnswered {
            step: step.id.clone(),
            question: question.clone(),
            answer: answer.to_owned(),
            by,
        });
        match answer {
            "no" => Err(GateRefused::Stop(format!(
                "stopped at the gate of step `{}`: the answer was no",
                step.id
            ))),
            "not asked (no terminal)" => Err(GateRefused::Stop(format!(
                "stopped before the gate of step `{}` (\"{question}\"): there is no terminal to ask; run with --yes to approve every gate",
                step.id
            ))),
            _ => Ok(()),
        }
    }
}
