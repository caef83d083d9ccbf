//! What the run learns is secret, harvested in one place from every object it reads and
//! writes, so the journal, the report and the logs redact the same values whichever way the
//! run came to see them: a `kubernetes` fact (one Secret or a list of them), the object a patch
//! or an apply starts from, or the manifest an apply sends. And what the run passes on as
//! secret: a value rendered from a secret, for a runbook it calls.

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

    /// Whether a value rendered from `template` is secret: the template reads a secret param
    /// (declared so, or bound from a secret), a secret fact or a fact that reads one; or what
    /// it rendered holds a known secret.
    pub(super) fn is_secret_value(&self, template: &JsonTemplate, rendered: &str) -> bool {
        template
            .expressions()
            .into_iter()
            .any(|expression| self.reads_secret(expression))
            || self.redactor.contains_known(rendered)
    }

    fn reads_secret(&self, expression: &Expression) -> bool {
        let secret_param = |param: &ParamSpec| self.plan.bindings.is_secret(param);
        let params = expression.references.iter().any(|reference| {
            match (reference.path.first(), reference.path.get(1)) {
                (Some(root), Some(name)) if root == "params" => {
                    self.runbook().param(name).is_some_and(secret_param)
                }
                // `params` whole reads every param.
                (Some(root), None) if root == "params" => {
                    self.runbook().params.iter().any(secret_param)
                }
                _ => false,
            }
        });
        params
            || facts_read(&self.fact_names, expression)
                .iter()
                .any(|name| self.is_secret_fact(name))
    }

    /// A fact marked secret, or one that reads one (facts that read each other are refused by
    /// `validate`; each is looked at once here all the same).
    fn is_secret_fact(&self, name: &str) -> bool {
        let mut pending = vec![name.to_owned()];
        let mut seen = BTreeSet::new();
        while let Some(name) = pending.pop() {
            if !seen.insert(name.clone()) {
                continue;
            }
            if let Some(fact) = self.runbook().facts.get(&name) {
                if fact.secret {
                    return true;
                }
                pending.extend(fact.reads.iter().cloned());
            }
        }
        false
    }
}
