//! `apply`: server-side apply of a manifest; the undo deletes what it created or applies what was
//! there before.

use super::*;

impl Run {
    pub(in crate::exec) async fn apply(
        &self,
        step: &StepSpec,
        attempt: u32,
        manifest: &JsonTemplate,
    ) -> Result<Finished, StepError> {
        let dry = self.dry();
        let mut manifest = self.render_json(manifest).await?;
        let key = manifest_key(&manifest, &self.options.namespace)?;
        // The namespace the run's undo and reads use is the one the object goes to
        // (the run's, when the manifest names none).
        if let (Some(namespace), Some(metadata)) = (
            &key.namespace,
            manifest.get_mut("metadata").and_then(Json::as_object_mut),
        ) {
            metadata
                .entry("namespace")
                .or_insert_with(|| Json::String(namespace.clone()));
        }
        self.harvest_secrets(&manifest, Some(&key.kind));
        let previous = match self.effects.cluster.get(&key).await {
            Ok(object) => {
                self.harvest_secrets(&object, Some(&key.kind));
                Some(object)
            }
            Err(EffectError::NotFound(_)) => None,
            Err(error) => return Err(error.into()),
        };
        let existed = previous.is_some();
        let undo = self.undo_for(
            step,
            Some(UndoState::Native(UndoRecord::Applied {
                key: key.clone(),
                previous,
            })),
        );
        self.intent(step, attempt, format!("apply {key}"), undo.as_ref(), None)?;
        self.effects
            .cluster
            .apply(&manifest, dry)
            .await
            .map_err(StepError::from)?;
        Ok(self.native_done(
            format!("{key}: {}", if existed { "updated" } else { "created" }),
            undo,
        ))
    }
}

pub(in crate::exec) fn manifest_key(
    manifest: &Json,
    namespace: &str,
) -> Result<ObjectKey, StepError> {
    let field = |pointer: &str| {
        manifest
            .pointer(pointer)
            .and_then(Json::as_str)
            .map(str::to_owned)
    };
    let kind =
        field("/kind").ok_or_else(|| StepError::Refused("the manifest has no kind".to_owned()))?;
    Ok(ObjectKey {
        api_version: field("/apiVersion")
            .ok_or_else(|| StepError::Refused("the manifest has no apiVersion".to_owned()))?,
        namespace: if is_cluster_scoped(&kind) {
            None
        } else {
            Some(field("/metadata/namespace").unwrap_or_else(|| namespace.to_owned()))
        },
        name: field("/metadata/name")
            .ok_or_else(|| StepError::Refused("the manifest has no metadata.name".to_owned()))?,
        kind,
    })
}
