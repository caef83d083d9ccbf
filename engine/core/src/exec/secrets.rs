//! What the run learns is secret, harvested in one place from every object it reads and
//! writes, so the journal, the report and the logs redact the same values whichever way the
//! run came to see them: a `kubernetes` fact (one Secret or a list of them), the object a patch
//! or an apply starts from, or the manifest an apply sends.

use super::*;

impl Run {
    /// Everything in a Secret is secret: `data` in its base64 and decoded forms, `stringData`
    /// as written. `value` is one object or a list (`items`); `kind` is what the caller asked
    /// for, since list items do not always carry their kind.
    pub(super) fn harvest_secrets(&self, value: &Json, kind: Option<&str>) {
        let is_secret =
            |object: &Json| object.get("kind").and_then(Json::as_str).or(kind) == Some("Secret");
        let objects: Vec<&Json> = match value.get("items").and_then(Json::as_array) {
            Some(items) => items.iter().collect(),
            None => vec![value],
        };
        for object in objects.into_iter().filter(|object| is_secret(object)) {
            if let Some(data) = object.get("data") {
                self.redactor.add_json(data, true);
            }
            if let Some(data) = object.get("stringData") {
                self.redactor.add_json(data, false);
            }
        }
    }
}
