//! Confirmation gates: ask, pause for an approval from elsewhere, or stop.

use super::*;

/// How a gate was passed, or why it was not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Gate {
    /// A dry-run asks nobody and changes nothing.
    NotAsked,
    /// Approved, by whom.
    Approved(String),
    /// Refused, by whom: the run stops.
    Denied(String),
    /// Nobody to ask (no terminal, no `--yes`): the run stops before the gate that asks this.
    NoTerminal(String),
    /// Left unanswered while the run drains; a resume asks again.
    Paused,
}

impl Gate {
    /// The answer as the journal records it.
    fn journaled(&self) -> (&'static str, String) {
        match self {
            Self::NotAsked => ("not asked (dry-run)", "dry-run".to_owned()),
            Self::Approved(by) => ("yes", by.clone()),
            Self::Denied(by) => ("no", by.clone()),
            Self::NoTerminal(_) => ("not asked (no terminal)", "none".to_owned()),
            Self::Paused => ("", String::new()),
        }
    }
}

impl Run {
    /// Asks at a gate, and journals the answer (a pause is journaled when it starts).
    pub(super) async fn gate(&self, step: &StepSpec) -> Gate {
        let question = match &step.confirm {
            Some(template) => self
                .render(template, None)
                .await
                .unwrap_or_else(|_| template.source.clone()),
            None => return Gate::NotAsked,
        };
        let gate = self.ask(step, &question).await;
        if gate == Gate::Paused {
            return gate;
        }
        let (answer, by) = gate.journaled();
        self.emit(Event::GateAnswered {
            step: step.id.clone(),
            question,
            answer: answer.to_owned(),
            by,
        });
        gate
    }

    /// Why the run stops at `gate`, for the summary; `None` when it may pass (or pauses).
    pub(super) fn refusal(gate: &Gate, step: &StepSpec) -> Option<String> {
        match gate {
            Gate::Denied(_) => Some(format!(
                "stopped at the gate of step `{}`: the answer was no",
                step.id
            )),
            Gate::NoTerminal(question) => Some(format!(
                "stopped before the gate of step `{}` (\"{question}\"): there is no terminal to ask; run with --yes to approve every gate",
                step.id
            )),
            Gate::NotAsked | Gate::Approved(_) | Gate::Paused => None,
        }
    }

    async fn ask(&self, step: &StepSpec, question: &str) -> Gate {
        if self.options.dry_run {
            return Gate::NotAsked;
        }
        if self.options.yes {
            return Gate::Approved("--yes".to_owned());
        }
        let prompter = &self.effects.prompter;
        if prompter.pauses(&step.id) {
            // Nobody is at a terminal: the run waits for an approval from elsewhere.
            self.emit(Event::GatePaused {
                step: step.id.clone(),
                question: question.to_owned(),
            });
        }
        let detail = crate::render::action_summary(&self.plan, &step.action);
        let answer = prompter.confirm(&step.id, question, &detail).await;
        match answer {
            Answer::Yes => Gate::Approved(prompter.answered_by(&step.id)),
            Answer::No => Gate::Denied(prompter.answered_by(&step.id)),
            Answer::NoTerminal => Gate::NoTerminal(question.to_owned()),
            Answer::Paused => Gate::Paused,
        }
    }
}
