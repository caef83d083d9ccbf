//! Expressions and templates: the scope of facts and params, evaluation, rendering.

use super::*;

/// Raises the flag that stops an evaluation when the future awaiting it is dropped.
struct StopOnDrop(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Run {
    pub(super) async fn key(&self, target: &Target) -> Result<ObjectKey, StepError> {
        let namespace = if is_cluster_scoped(&target.kind) {
            None
        } else {
            Some(match &target.namespace {
                Some(namespace) => self.render(namespace, None).await?,
                None => self.options.namespace.clone(),
            })
        };
        Ok(ObjectKey {
            api_version: target.api_version.clone(),
            kind: target.kind.clone(),
            namespace,
            name: self.render(&target.name, None).await?,
        })
    }

    /// Builds the scope an expression needs (its facts, params, and `object` for `wait`).
    pub(super) async fn scope(
        &self,
        expression: &Expression,
        object: Option<&Json>,
    ) -> Result<rhai::Scope<'static>, StepError> {
        let mut roots: BTreeMap<String, Json> = BTreeMap::new();
        for name in facts_read(&self.fact_names, expression) {
            let value = self.fact(&name).await?;
            insert_dotted(&mut roots, &name, value);
        }
        let mut scope = rhai::Scope::new();
        for (root, value) in roots {
            let dynamic = rhai::serde::to_dynamic(&value).map_err(StepError::from)?;
            scope.push_dynamic(root, dynamic);
        }
        scope.push("params", self.params.clone());
        let reads = |root: &str| expression.references.iter().any(|r| r.path[0] == root);
        if reads("vars") {
            scope.push("vars", self.vars_lock().clone());
        }
        if reads("steps") {
            scope.push("steps", self.results_lock().clone());
        }
        if let Some(item) = results::current_item() {
            scope.push_dynamic(
                item.name,
                rhai::serde::to_dynamic(&item.value).map_err(StepError::from)?,
            );
        }
        if let Some(object) = object {
            scope.push_dynamic(
                "object",
                rhai::serde::to_dynamic(object).map_err(StepError::from)?,
            );
        }
        Ok(scope)
    }

    pub(super) async fn eval(
        &self,
        expression: &Expression,
        object: Option<&Json>,
    ) -> Result<Dynamic, StepError> {
        let mut scope = self.scope(expression, object).await?;
        let ast = expression.ast.clone();
        let budget = Budget {
            now: Some(self.effects.clock.now()),
            ..Budget::standard()
        };
        let redactor = self.redactor.clone();
        let describe = |error: String| {
            StepError::Expression(format!("`{}`: {error}", expression.source.trim()))
        };
        // On a runtime of one thread (`runbook test`, the golden traces, on a paused clock)
        // there is nothing to keep free, and evaluating in place keeps the interleaving of
        // parallel steps, and so the journal, the same on every run. On a runtime of several
        // threads (`run`, `serve`), the evaluation goes to a blocking thread, so the threads
        // that answer HTTP and drive other runs are never held up by it.
        let flavor = tokio::runtime::Handle::current().runtime_flavor();
        if flavor == tokio::runtime::RuntimeFlavor::CurrentThread {
            return crate::expr::evaluate::<Dynamic>(&mut scope, &ast, &budget, Some(&redactor))
                .map_err(|error| describe(error.to_string()));
        }
        // A step's timeout drops this future: the evaluation is then told to stop.
        let _stop_when_dropped = StopOnDrop(budget.cancelled.clone());
        let evaluated = tokio::task::spawn_blocking(move || {
            crate::expr::evaluate::<Dynamic>(&mut scope, &ast, &budget, Some(&redactor))
        })
        .await;
        match evaluated {
            Ok(result) => result.map_err(|error| describe(error.to_string())),
            // A panic inside Rhai fails this evaluation, not the run or the server.
            Err(error) => Err(describe(format!("the evaluation failed: {error}"))),
        }
    }

    pub(super) async fn eval_bool(
        &self,
        expression: &Expression,
        object: Option<&Json>,
    ) -> Result<bool, StepError> {
        let value = self.eval(expression, object).await?;
        value.as_bool().map_err(|kind| {
            let shown = crate::expr::text_of(&value).unwrap_or_else(|_| value.to_string());
            StepError::Expression(format!(
                "`{}` gave {kind} `{shown}`, not true or false",
                expression.source.trim()
            ))
        })
    }

    pub(super) async fn render(
        &self,
        template: &Template,
        object: Option<&Json>,
    ) -> Result<String, StepError> {
        let mut out = String::new();
        for part in &template.parts {
            match part {
                TemplatePart::Text(text) => out.push_str(text),
                TemplatePart::Expr(expression, _) => {
                    let value = self.eval(expression, object).await?;
                    out.push_str(&crate::expr::text_of(&value).map_err(StepError::from)?);
                }
            }
        }
        Ok(out)
    }

    pub(super) async fn render_opt(
        &self,
        template: Option<&Template>,
    ) -> Result<Option<String>, StepError> {
        match template {
            Some(template) => self.render(template, None).await.map(Some),
            None => Ok(None),
        }
    }

    pub(super) async fn pod_ref(
        &self,
        namespace: &Template,
        pod: &Template,
        container: Option<&Template>,
    ) -> Result<PodRef, StepError> {
        Ok(PodRef {
            namespace: self.render(namespace, None).await?,
            pod: self.render(pod, None).await?,
            container: self.render_opt(container).await?,
        })
    }

    pub(super) async fn render_all(
        &self,
        templates: &[Template],
    ) -> Result<Vec<String>, StepError> {
        let mut out = Vec::with_capacity(templates.len());
        for template in templates {
            out.push(self.render(template, None).await?);
        }
        Ok(out)
    }

    /// A patch body, a manifest or a call's params, rendered. A string that is exactly one
    /// `${...}` keeps the type of its value (`replicas: "${params.n}"` sends `3`, not `"3"`);
    /// any other string is text.
    pub(super) async fn render_json(&self, value: &JsonTemplate) -> Result<Json, StepError> {
        Ok(match value {
            JsonTemplate::Literal(value) => value.clone(),
            JsonTemplate::String(template) => match template.whole_expression() {
                Some(expression) => {
                    let value = self.eval(expression, None).await?;
                    rhai::serde::from_dynamic::<Json>(&value).map_err(StepError::from)?
                }
                None => Json::String(self.render(template, None).await?),
            },
            JsonTemplate::Array(items) => {
                let mut out = Vec::new();
                for item in items {
                    out.push(Box::pin(self.render_json(item)).await?);
                }
                Json::Array(out)
            }
            JsonTemplate::Object(entries) => {
                let mut out = serde_json::Map::new();
                for (key, item) in entries {
                    out.insert(key.clone(), Box::pin(self.render_json(item)).await?);
                }
                Json::Object(out)
            }
        })
    }
}

/// Puts `value` at a dotted path in nested maps (`openbao.status` -> {openbao: {status: v}}).
pub(super) fn insert_dotted(roots: &mut BTreeMap<String, Json>, name: &str, value: Json) {
    let mut parts = name.split('.');
    let Some(root) = parts.next() else {
        return;
    };
    let rest: Vec<&str> = parts.collect();
    if rest.is_empty() {
        roots.insert(root.to_owned(), value);
        return;
    }
    let mut node = roots.entry(root.to_owned()).or_insert_with(|| json!({}));
    for (index, part) in rest.iter().enumerate() {
        if !node.is_object() {
            *node = json!({});
        }
        let Some(map) = node.as_object_mut() else {
            return;
        };
        if index + 1 == rest.len() {
            map.insert((*part).to_owned(), value);
            return;
        }
        node = map.entry((*part).to_owned()).or_insert_with(|| json!({}));
    }
}
