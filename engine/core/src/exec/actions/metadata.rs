//! `annotate`, `label` and `delete`.

use super::*;
use crate::document::Propagation;

impl Run {
    pub(in crate::exec) async fn set_metadata(
        &self,
        step: &StepSpec,
        attempt: u32,
        target: &Target,
        set: &BTreeMap<String, Option<Template>>,
        annotate: bool,
    ) -> Result<Finished, StepError> {
        let dry = self.dry();
        let key = self.key(target).await?;
        let field = if annotate { "annotations" } else { "labels" };
        let mut values = BTreeMap::new();
        for (name, value) in set {
            values.insert(
                name.clone(),
                match value {
                    Some(template) => Some(self.render(template, None).await?),
                    None => None,
                },
            );
        }
        let shown: serde_json::Map<String, Json> = values
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().map_or(Json::Null, Json::String)))
            .collect();
        let body = json!({"metadata": {field: shown.clone()}});
        let current = self
            .effects
            .cluster
            .get(&key)
            .await
            .map_err(StepError::from)?;
        let inverse = inverse_merge_patch(&current, &body);
        let undo = self.undo_for(
            step,
            Some(UndoState::Native(UndoRecord::MergePatch {
                key: key.clone(),
                inverse: inverse.clone(),
            })),
        );
        let effect = crate::journal::Effect {
            object: key.clone(),
            after: body.clone(),
            before: inverse,
        };
        self.intent(
            step,
            attempt,
            format!("set {field} of {key}: {}", Json::Object(shown)),
            undo.as_ref(),
            Some(effect),
        )?;
        let cluster = &self.effects.cluster;
        if annotate {
            cluster.annotate(&key, &values, dry).await
        } else {
            cluster.label(&key, &values, dry).await
        }
        .map_err(StepError::from)?;
        Ok(self.native_done(format!("{key}: {field} set"), undo))
    }

    pub(in crate::exec) async fn delete(
        &self,
        step: &StepSpec,
        attempt: u32,
        target: &Target,
        propagation: &Option<Propagation>,
        grace_period_seconds: &Option<u32>,
    ) -> Result<Finished, StepError> {
        let dry = self.dry();
        let key = self.key(target).await?;
        let undo = self.undo_for(step, None);
        self.intent(step, attempt, format!("delete {key}"), undo.as_ref(), None)?;
        self.effects
            .cluster
            .delete(&key, *propagation, *grace_period_seconds, dry)
            .await
            .map_err(StepError::from)?;
        Ok(self.native_done(format!("{key}: deleted"), undo))
    }
}
