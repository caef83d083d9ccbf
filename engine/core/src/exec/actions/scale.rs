//! `scale` (through the scale subresource) and `restart` (a rollout restart).

use super::*;

impl Run {
    pub(in crate::exec) async fn scale(
        &self,
        step: &StepSpec,
        attempt: u32,
        target: &Target,
        replicas: &IntValue,
    ) -> Result<Finished, StepError> {
        let dry = self.dry();
        let key = self.key(target).await?;
        let count = match replicas {
            IntValue::Literal(count) => *count,
            IntValue::Template(template) => {
                let text = self.render(template, None).await?;
                text.trim()
                    .parse::<i64>()
                    .ok()
                    .filter(|n| *n >= 0)
                    .ok_or_else(|| {
                        StepError::Refused(format!("replicas `{text}` is not a count"))
                    })?
            }
        };
        let current = self
            .effects
            .cluster
            .get(&key)
            .await
            .map_err(StepError::from)?;
        let previous = current
            .pointer("/spec/replicas")
            .and_then(Json::as_i64)
            .unwrap_or(1);
        let undo = self.undo_for(
            step,
            Some(UndoState::Native(UndoRecord::Replicas {
                key: key.clone(),
                previous,
            })),
        );
        let effect = crate::journal::Effect {
            object: key.clone(),
            after: json!({"spec": {"replicas": count}}),
            before: json!({"spec": {"replicas": previous}}),
        };
        self.intent(
            step,
            attempt,
            format!("scale {key} from {previous} to {count} replicas"),
            undo.as_ref(),
            Some(effect),
        )?;
        self.effects
            .cluster
            .scale(&key, count, dry)
            .await
            .map_err(StepError::from)?;
        Ok(self.native_done(format!("{key}: replicas {previous} -> {count}"), undo))
    }

    pub(in crate::exec) async fn restart(
        &self,
        step: &StepSpec,
        attempt: u32,
        target: &Target,
    ) -> Result<Finished, StepError> {
        let dry = self.dry();
        let key = self.key(target).await?;
        let undo = self.undo_for(step, None);
        self.intent(
            step,
            attempt,
            format!("rollout restart {key}"),
            undo.as_ref(),
            None,
        )?;
        self.effects
            .cluster
            .restart(&key, self.effects.clock.now(), dry)
            .await
            .map_err(StepError::from)?;
        Ok(self.native_done(format!("{key}: restarted"), undo))
    }
}
