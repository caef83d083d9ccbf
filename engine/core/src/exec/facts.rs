//! Facts: read lazily, cached for the run, forgotten after any mutation.

use super::*;

/// The facts read so far in this run. Its generation moves whenever everything is forgotten
/// (after anything that may have changed the world), so a read that began before a change is
/// not cached after it; the two change together, under one lock.
#[derive(Default)]
pub(super) struct FactCache {
    inner: Mutex<CacheState>,
}

#[derive(Default)]
struct CacheState {
    values: HashMap<String, Json>,
    generation: u64,
}

impl FactCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, CacheState> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, name: &str) -> Option<Json> {
        self.lock().values.get(name).cloned()
    }

    /// Where the cache stands now: give it back to [`FactCache::insert_read_at`].
    fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Caches a value read since `generation`, unless the cache was cleared meanwhile.
    fn insert_read_at(&self, generation: u64, name: &str, value: Json) {
        let mut state = self.lock();
        if state.generation == generation {
            state.values.insert(name.to_owned(), value);
        }
    }

    fn forget_all(&self) {
        let mut state = self.lock();
        state.generation += 1;
        state.values.clear();
    }

    fn forget(&self, name: &str) {
        self.lock().values.remove(name);
    }
}

tokio::task_local! {
    /// The facts whose reading is in progress on this task's path (see [`Run::fact`]).
    static READING: Vec<String>;
}

/// How deep facts may read facts that read facts.
const MAX_FACT_DEPTH: usize = 32;

impl Run {
    /// Forgets every cached fact (after anything that may have changed the world).
    pub(super) async fn forget_all_facts(&self) {
        self.facts.forget_all();
    }

    /// Forgets the facts `expression` reads (and what they read), so they are read again.
    pub(super) async fn forget_facts_of(&self, expression: &Expression) {
        let mut names: Vec<String> = facts_read(&self.fact_names, expression)
            .into_iter()
            .collect();
        // Each once, so facts that read each other (refused by `validate`) cannot loop here.
        let mut forgotten = std::collections::BTreeSet::new();
        while let Some(name) = names.pop() {
            if !forgotten.insert(name.clone()) {
                continue;
            }
            self.facts.forget(&name);
            if let Some(fact) = self.runbook().facts.get(&name) {
                names.extend(fact.reads.iter().cloned());
            }
        }
    }

    /// The value of a fact: from the cache, or read now (and journaled).
    pub(super) async fn fact(&self, name: &str) -> Result<Json, StepError> {
        if let Some(value) = self.facts.get(name) {
            return Ok(value);
        }
        let fact = self
            .runbook()
            .facts
            .get(name)
            .cloned()
            .ok_or_else(|| StepError::Refused(format!("unknown fact `{name}`")))?;
        // The facts being read on this path, outermost first: `validate` refuses a fact that
        // reads itself, so a cycle here means the runbook was not checked; it fails the fact
        // instead of recursing until memory runs out.
        let mut chain = READING.try_with(Clone::clone).unwrap_or_default();
        if chain.iter().any(|read| read == name) || chain.len() >= MAX_FACT_DEPTH {
            chain.push(name.to_owned());
            let why = if chain.len() > MAX_FACT_DEPTH {
                format!("facts read other facts more than {MAX_FACT_DEPTH} deep")
            } else {
                "facts read each other in a cycle".to_owned()
            };
            return Err(StepError::Refused(format!(
                "{why}: {}; `runbook validate` reports this",
                chain.join(" -> ")
            )));
        }
        chain.push(name.to_owned());
        let generation = self.facts.generation();
        let result = READING.scope(chain, Box::pin(self.read_fact(&fact))).await;
        match result {
            Ok(value) => {
                if fact.secret {
                    self.redactor.add_json(&value, false);
                }
                // Redact before shortening, so a secret is never cut in half at the boundary.
                let shown = if fact.secret {
                    crate::redact::REDACTED.to_owned()
                } else {
                    crate::render::shorten(&self.redactor.redact(&value.to_string()), 300)
                };
                self.emit(Event::FactRead {
                    fact: name.to_owned(),
                    value: shown,
                });
                self.facts.insert_read_at(generation, name, value.clone());
                Ok(value)
            }
            Err(error) => {
                self.emit(Event::FactFailed {
                    fact: name.to_owned(),
                    error: error.to_string(),
                });
                Err(StepError::Fact {
                    name: name.to_owned(),
                    error: Box::new(error),
                })
            }
        }
    }

    pub(super) async fn read_fact(&self, fact: &FactSpec) -> Result<Json, StepError> {
        let raw = match &fact.source {
            FactSource::Kubernetes {
                api_version,
                kind,
                name,
                namespace,
                label_selector,
                field_selector,
            } => {
                let selectors = [label_selector.as_ref(), field_selector.as_ref()];
                self.read_objects(
                    api_version,
                    kind,
                    name.as_ref(),
                    namespace.as_ref(),
                    selectors,
                )
                .await?
            }
            FactSource::Exec {
                namespace,
                pod,
                container,
                argv,
                format,
                allow_exit_codes,
            } => {
                let pod = self.pod_ref(namespace, pod, container.as_ref()).await?;
                let argv = self.render_all(argv).await?;
                let output = self
                    .effects
                    .cluster
                    .exec(&pod, &argv, FACT_TIMEOUT)
                    .await
                    .map_err(StepError::from)?;
                process_value(&output, *format, allow_exit_codes.as_ref())?
            }
            FactSource::Logs {
                namespace,
                target,
                container,
                previous,
                tail,
                format,
            } => {
                let pod = match target {
                    LogTarget::Pod(pod) => self.pod_ref(namespace, pod, container.as_ref()).await?,
                    LogTarget::Deployment(deployment) => PodRef {
                        namespace: self.render(namespace, None).await?,
                        pod: self.deployment_pod(namespace, deployment).await?,
                        container: self.render_opt(container.as_ref()).await?,
                    },
                };
                let options = LogOptions {
                    tail_lines: *tail,
                    previous: *previous,
                };
                let log = self
                    .effects
                    .cluster
                    .logs(&pod, options)
                    .await
                    .map_err(StepError::from)?;
                parse_log(&log, *format)?
            }
            FactSource::Command {
                argv,
                format,
                allow_exit_codes,
            } => {
                let argv = self.render_all(argv).await?;
                let output = self
                    .effects
                    .processes
                    .run(&argv, &BTreeMap::new(), FACT_TIMEOUT)
                    .await
                    .map_err(StepError::from)?;
                process_value(&output, *format, allow_exit_codes.as_ref())?
            }
            FactSource::Http {
                url,
                query,
                headers,
                format,
                expect_status,
            } => {
                self.read_http(url, query, headers, *format, expect_status.as_ref())
                    .await?
            }
            FactSource::Expr(expression) => {
                let value = self.eval(expression, None).await?;
                rhai::serde::from_dynamic::<Json>(&value).map_err(StepError::from)?
            }
        };
        Ok(match &fact.jsonpath {
            Some(selection) => select(&raw, &selection.query)?,
            None => raw,
        })
    }

    /// A `kubernetes` fact: one object by name, or a list by selectors.
    async fn read_objects(
        &self,
        api_version: &str,
        kind: &str,
        name: Option<&Template>,
        namespace: Option<&Template>,
        [label_selector, field_selector]: [Option<&Template>; 2],
    ) -> Result<Json, StepError> {
        let namespace = if is_cluster_scoped(kind) {
            None
        } else {
            match namespace {
                Some(namespace) => Some(self.render(namespace, None).await?),
                None if name.is_some() => Some(self.options.namespace.clone()),
                None => None,
            }
        };
        let value = match name {
            Some(name) => {
                let key = ObjectKey {
                    api_version: api_version.to_owned(),
                    kind: kind.to_owned(),
                    namespace,
                    name: self.render(name, None).await?,
                };
                self.effects.cluster.get(&key).await?
            }
            None => {
                let query = ListQuery {
                    api_version: api_version.to_owned(),
                    kind: kind.to_owned(),
                    namespace,
                    label_selector: self.render_opt(label_selector).await?,
                    field_selector: self.render_opt(field_selector).await?,
                };
                self.effects.cluster.list(&query).await?
            }
        };
        self.harvest_secrets(&value, Some(kind));
        Ok(value)
    }

    /// The pod whose log `kubectl logs deployment/NAME` reads: the Deployment's selector, its
    /// pods listed, one picked (see [`crate::log_pod`]).
    async fn deployment_pod(
        &self,
        namespace: &Template,
        deployment: &Template,
    ) -> Result<String, StepError> {
        let namespace = self.render(namespace, None).await?;
        let name = self.render(deployment, None).await?;
        let object = self
            .effects
            .cluster
            .get(&ObjectKey {
                api_version: "apps/v1".to_owned(),
                kind: "Deployment".to_owned(),
                namespace: Some(namespace.clone()),
                name: name.clone(),
            })
            .await?;
        let selector = crate::log_pod::selector_of(&object).map_err(|why| {
            StepError::Other(format!(
                "no pod of deployment {namespace}/{name} to read the log of: {why}"
            ))
        })?;
        let list = self
            .effects
            .cluster
            .list(&ListQuery {
                api_version: "v1".to_owned(),
                kind: "Pod".to_owned(),
                namespace: Some(namespace.clone()),
                label_selector: Some(selector.clone()),
                field_selector: None,
            })
            .await?;
        let pods = list
            .get("items")
            .and_then(Json::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let pod = crate::log_pod::pick(pods)
            .and_then(|pod| pod.pointer("/metadata/name"))
            .and_then(Json::as_str)
            .ok_or_else(|| {
                StepError::Other(format!(
                    "deployment {namespace}/{name} has no pods to read the log of (selector {selector})"
                ))
            })?;
        tracing::debug!(deployment = %name, pod, "Log read from the deployment's pod.");
        Ok(pod.to_owned())
    }

    /// An `http` fact: a GET whose 2xx body is the value, as JSON or text; with
    /// `expectStatus`, `{status, headers, body}` for every status it lists.
    async fn read_http(
        &self,
        url: &Template,
        query: &BTreeMap<String, Template>,
        headers: &BTreeMap<String, Template>,
        format: OutputFormat,
        expect_status: Option<&StatusSet>,
    ) -> Result<Json, StepError> {
        let url = self.render(url, None).await?;
        let mut rendered_query = BTreeMap::new();
        for (k, v) in query {
            rendered_query.insert(k.clone(), self.render(v, None).await?);
        }
        let mut rendered_headers = BTreeMap::new();
        for (k, v) in headers {
            rendered_headers.insert(k.clone(), self.render(v, None).await?);
        }
        let response = self
            .effects
            .http
            .get(&url, &rendered_query, &rendered_headers)
            .await?;
        if let Some(expected) = expect_status {
            return http_value(&url, &response, format, expected);
        }
        if !(200..300).contains(&response.status) {
            return Err(StepError::Other(format!(
                "GET {url} answered {}",
                response.status
            )));
        }
        Ok(match format {
            OutputFormat::Json => serde_json::from_str(&response.body)
                .map_err(|e| StepError::Command(format!("GET {url}: the body is not JSON: {e}")))?,
            OutputFormat::Text => Json::String(response.body.trim().to_owned()),
        })
    }
}

/// Header names whose values are credentials: never part of a fact.
const CREDENTIAL_HEADERS: [&str; 4] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
];

/// An `http` answer read with `expectStatus`: `{status, headers, body}`, the body parsed per
/// `format`. A status it does not list fails the read, naming both. A body that is not JSON is
/// kept as text when the status is not 2xx (an error page), and fails the read when it is.
pub(super) fn http_value(
    url: &str,
    response: &HttpResponse,
    format: OutputFormat,
    expected: &StatusSet,
) -> Result<Json, StepError> {
    if !expected.contains(response.status) {
        return Err(StepError::Other(format!(
            "GET {url} answered {}, which is not in expectStatus ({expected})",
            response.status
        )));
    }
    let text = || Json::String(response.body.trim().to_owned());
    let body = match format {
        OutputFormat::Text => text(),
        OutputFormat::Json => match serde_json::from_str::<Json>(&response.body) {
            Ok(value) => value,
            Err(_) if !(200..300).contains(&response.status) => text(),
            Err(error) => {
                return Err(StepError::Command(format!(
                    "GET {url}: the body is not JSON: {error}"
                )))
            }
        },
    };
    let headers: serde_json::Map<String, Json> = response
        .headers
        .iter()
        .map(|(name, value)| {
            let name = name.to_ascii_lowercase();
            let value = if CREDENTIAL_HEADERS.contains(&name.as_str()) {
                crate::redact::REDACTED.to_owned()
            } else {
                value.clone()
            };
            (name, Json::String(value))
        })
        .collect();
    Ok(json!({"status": response.status, "headers": headers, "body": body}))
}

/// A `command` or `exec` fact's output as a value. With `allowExitCodes`, `{exitCode, stdout,
/// stderr}` for every code it lists (stdout parsed per `format`; when it does not parse and the
/// code is not 0, kept as text); without, as [`parse_output`] reads it.
pub(super) fn process_value(
    output: &CommandOutput,
    format: OutputFormat,
    allow_exit_codes: Option<&ExitCodes>,
) -> Result<Json, StepError> {
    let Some(allowed) = allow_exit_codes else {
        return parse_output(output, format);
    };
    if !allowed.allows(output.exit_code) {
        return Err(outside_allowed(output, allowed));
    }
    let text = || Json::String(output.stdout.trim().to_owned());
    let stdout = match format {
        OutputFormat::Text => text(),
        OutputFormat::Json => match serde_json::from_str::<Json>(&output.stdout) {
            Ok(value) => value,
            Err(_) if output.exit_code != 0 => text(),
            Err(error) => {
                return Err(StepError::Command(format!(
                    "the output is not JSON: {error}"
                )))
            }
        },
    };
    Ok(json!({
        "exitCode": output.exit_code,
        "stdout": stdout,
        "stderr": output.stderr.trim(),
    }))
}

/// A probe's output as a value. JSON output is used whatever the exit status (`bao status`
/// exits 2 when sealed, and says so in JSON); otherwise a non-zero status is an error.
pub(super) fn parse_output(
    output: &CommandOutput,
    format: OutputFormat,
) -> Result<Json, StepError> {
    match format {
        OutputFormat::Json => match serde_json::from_str::<Json>(&output.stdout) {
            Ok(value) => Ok(value),
            Err(error) if output.exit_code == 0 => Err(StepError::Command(format!(
                "the output is not JSON: {error}"
            ))),
            Err(_) => Err(command_failure(output)),
        },
        OutputFormat::Text => {
            if output.exit_code != 0 {
                return Err(command_failure(output));
            }
            Ok(Json::String(output.stdout.trim().to_owned()))
        }
    }
}

/// A log as a value: one string, its lines, or one JSON value a line (blank lines skipped).
pub(super) fn parse_log(log: &str, format: LogFormat) -> Result<Json, StepError> {
    match format {
        LogFormat::Text => Ok(Json::String(log.trim_end().to_owned())),
        LogFormat::Lines => Ok(Json::Array(
            log.lines()
                .map(|line| Json::String(line.to_owned()))
                .collect(),
        )),
        LogFormat::Json => log
            .lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(index, line)| {
                serde_json::from_str::<Json>(line).map_err(|error| {
                    StepError::Command(format!(
                        "line {} of the log is not JSON: {error}",
                        index + 1
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Json::Array),
    }
}

/// Applies a JSONPath selection as kubectl does: one match is the value, none is null, and a
/// query that can match many (wildcards, filters, slices, recursion) is always a list.
pub(super) fn select(value: &Json, query: &str) -> Result<Json, StepError> {
    use jsonpath_rust::JsonPath;
    let found = value
        .query(query)
        .map_err(|e| StepError::Expression(format!("JSONPath `{query}`: {e}")))?;
    let many = query.contains('*')
        || query.contains("..")
        || query.contains("?(")
        || query.contains('?')
        || query.contains(':')
        || query.contains(',');
    Ok(if many {
        Json::Array(found.into_iter().cloned().collect())
    } else {
        found.first().map_or(Json::Null, |v| (*v).clone())
    })
}
