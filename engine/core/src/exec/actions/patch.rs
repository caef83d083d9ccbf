//! `patch`: merge, strategic and JSON patches, from the object this run last wrote when the
//! server can check it is still current; the inverse merge patch that undoes one.

use super::*;

/// A patch to send: what, how, and the body as the runbook wrote it.
#[derive(Clone, Copy)]
pub(in crate::exec) struct PatchCall<'a> {
    key: &'a ObjectKey,
    patch_type: PatchType,
    body: &'a Json,
}

/// Why a patch from a known object did not go through.
pub(in crate::exec) enum PatchError {
    /// The server refused the known object's resourceVersion: it changed since.
    Stale,
    Failed(StepError),
}

impl Run {
    pub(in crate::exec) async fn patch(
        &self,
        step: &StepSpec,
        attempt: u32,
        target: &Target,
        patch_type: &PatchType,
        body: &JsonTemplate,
    ) -> Result<Finished, StepError> {
        let key = self.key(target).await?;
        let body = self.render_json(body).await?;
        // The object as this run's last patch of it left it, when the server can
        // check that it still is (a merge or strategic patch carrying its
        // resourceVersion): one request instead of a read and a write.
        let known = (attempt == 1
            && !self.options.dry_run
            && *patch_type != PatchType::Json
            && body.pointer("/metadata/resourceVersion").is_none()
            && !self.has_captured(step))
        .then(|| self.written_lock().remove(&key))
        .flatten();
        if let Some(known) = known {
            let patch = PatchCall {
                key: &key,
                patch_type: *patch_type,
                body: &body,
            };
            match self.patch_from(step, attempt, patch, known, true).await {
                Err(PatchError::Stale) => {
                    // Changed since our last write: read it and start again.
                    self.captured_lock().remove(&step.id);
                }
                Err(PatchError::Failed(error)) => return Err(error),
                Ok(finished) => return Ok(finished),
            }
        }
        let current = self
            .effects
            .cluster
            .get(&key)
            .await
            .map_err(StepError::from)?;
        let patch = PatchCall {
            key: &key,
            patch_type: *patch_type,
            body: &body,
        };
        self.patch_from(step, attempt, patch, current, false)
            .await
            .map_err(|error| match error {
                PatchError::Stale => StepError::Other("the object kept changing".to_owned()),
                PatchError::Failed(error) => error,
            })
    }

    /// Patches `key` starting from `current`, the object before: the undo state comes from
    /// it, and the report compares it with the server's answer. With `precondition`, the
    /// patch carries `current`'s resourceVersion and a 409 means `current` was stale.
    pub(in crate::exec) async fn patch_from(
        &self,
        step: &StepSpec,
        attempt: u32,
        patch: PatchCall<'_>,
        current: Json,
        precondition: bool,
    ) -> Result<Finished, PatchError> {
        let PatchCall {
            key,
            patch_type,
            body,
        } = patch;
        self.harvest_secrets(&current, Some(&key.kind));
        let inverse = (patch_type != PatchType::Json).then(|| inverse_merge_patch(&current, body));
        let native = inverse.clone().map(|inverse| {
            UndoState::Native(UndoRecord::MergePatch {
                key: key.clone(),
                inverse,
            })
        });
        let undo = self.undo_for(step, native);
        // A merge patch says what the object holds after it; a strategic one may merge lists
        // by key, so it is not compared.
        let effect = inverse
            .filter(|_| patch_type == PatchType::Merge)
            .map(|before| crate::journal::Effect {
                object: key.clone(),
                after: body.clone(),
                before,
            });
        self.intent(
            step,
            attempt,
            format!("patch {key} with {body}"),
            undo.as_ref(),
            effect,
        )
        .map_err(PatchError::Failed)?;
        let version = current
            .pointer("/metadata/resourceVersion")
            .cloned()
            .filter(|_| precondition);
        let sent = match (&version, body) {
            (Some(version), Json::Object(fields)) => {
                let mut fields = fields.clone();
                let metadata = fields.entry("metadata").or_insert_with(|| json!({}));
                if let Some(metadata) = metadata.as_object_mut() {
                    metadata.insert("resourceVersion".to_owned(), version.clone());
                }
                Json::Object(fields)
            }
            _ => body.clone(),
        };
        // What the server did (or, in a dry-run, would do): the object it answered against
        // the one before.
        let after = match self
            .effects
            .cluster
            .patch(key, patch_type, &sent, self.dry())
            .await
        {
            Ok(after) => after,
            Err(EffectError::Conflict(_)) if version.is_some() => return Err(PatchError::Stale),
            Err(error) => return Err(PatchError::Failed(error.into())),
        };
        let changed = field_changes(&current, &after);
        if !self.options.dry_run && patch_type != PatchType::Json {
            self.written_lock().insert(key.clone(), after);
        }
        Ok(self.native_done(format!("{key}: {changed}"), undo))
    }
}

/// The merge patch that puts back what `patch` changes in `current`.
pub fn inverse_merge_patch(current: &Json, patch: &Json) -> Json {
    match patch {
        Json::Object(entries) => {
            let mut inverse = serde_json::Map::new();
            for (key, value) in entries {
                let before = current.get(key);
                let restored = match (before, value) {
                    (Some(before @ Json::Object(_)), Json::Object(_)) => {
                        inverse_merge_patch(before, value)
                    }
                    (Some(before), _) => before.clone(),
                    // An absent map: put back "absent" for each key the patch sets, not a null
                    // for the whole map (which would delete what others add to it later).
                    (None, Json::Object(_)) => inverse_merge_patch(&json!({}), value),
                    (None, _) => Json::Null,
                };
                inverse.insert(key.clone(), restored);
            }
            Json::Object(inverse)
        }
        _ => current.clone(),
    }
}

/// The leaf fields a patch sets, with their values after, for the journal.
/// The fields that differ between an object before and after a write, as
/// `.spec.replicas: 3 -> 5`, leaving out what the server keeps for itself (resourceVersion,
/// managedFields, generation, status).
pub(in crate::exec) fn field_changes(before: &Json, after: &Json) -> String {
    const LIMIT: usize = 12;
    fn shown(value: Option<&Json>) -> String {
        value.map_or_else(|| "(none)".to_owned(), ToString::to_string)
    }
    fn walk(
        before: Option<&Json>,
        after: Option<&Json>,
        path: &mut Vec<String>,
        out: &mut Vec<String>,
    ) {
        if before == after {
            return;
        }
        let bookkeeping = matches!(
            path.iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .as_slice(),
            ["status"]
                | [
                    "metadata",
                    "resourceVersion"
                        | "managedFields"
                        | "generation"
                        | "uid"
                        | "creationTimestamp"
                ]
        );
        if bookkeeping {
            return;
        }
        match (before, after) {
            (Some(Json::Object(old)), Some(Json::Object(new))) => {
                let mut keys: Vec<&String> = old.keys().collect();
                keys.extend(new.keys().filter(|key| !old.contains_key(*key)));
                for key in keys {
                    path.push(key.clone());
                    walk(old.get(key), new.get(key), path, out);
                    path.pop();
                }
            }
            _ => out.push(format!(
                ".{}: {} -> {}",
                path.join("."),
                shown(before),
                shown(after)
            )),
        }
    }
    let mut out = Vec::new();
    walk(Some(before), Some(after), &mut Vec::new(), &mut out);
    match out.len() {
        0 => "no change".to_owned(),
        n if n > LIMIT => format!("{}, and {} more", out[..LIMIT].join(", "), n - LIMIT),
        _ => out.join(", "),
    }
}
