//! What the run learns is secret, harvested from the objects it reads and writes.

use super::*;

impl Run {
    /// Everything in a Secret is secret, in its base64 and decoded forms.
    pub(super) fn remember_secret_object(&self, object: &Json) {
        if object.get("kind").and_then(Json::as_str) == Some("Secret") {
            if let Some(data) = object.get("data") {
                self.redactor.add_json(data, true);
            }
            if let Some(data) = object.get("stringData") {
                self.redactor.add_json(data, false);
            }
        }
    }
}
