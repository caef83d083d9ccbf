//! The effects boundary, implemented by the simulated world: `Cluster` against the store,
//! `Processes`, `Http` and `Notifier` from the scenario's scripts, and `StepObserver` for the
//! controller changes a scenario makes after a step.

use super::*;

fn key_call<'a>(verb: FaultVerb, key: &'a StoreKey) -> Call<'a> {
    Call {
        verb,
        kind: &key.kind,
        namespace: key.namespace.as_deref(),
        name: Some(&key.name),
    }
}

/// The object as the caller asked for it: under the apiVersion of the request.
fn as_requested(mut object: Json, api_version: &str) -> Json {
    if !api_version.is_empty() {
        object["apiVersion"] = json!(api_version);
    }
    object
}

#[async_trait]
impl Cluster for SimWorld {
    async fn get(&self, key: &ObjectKey) -> EffectResult<Json> {
        let store_key = StoreKey::of(key);
        let mut state = self.lock();
        state.check_fault(&key_call(FaultVerb::Get, &store_key), true)?;
        let object = state.store.get(&store_key)?.clone();
        Ok(as_requested(object, &key.api_version))
    }

    async fn list(&self, query: &ListQuery) -> EffectResult<Json> {
        let mut state = self.lock();
        state.check_fault(
            &Call {
                verb: FaultVerb::List,
                kind: &query.kind,
                namespace: query.namespace.as_deref(),
                name: None,
            },
            true,
        )?;
        let labels = match &query.label_selector {
            Some(text) => selector::parse_labels(text).map_err(EffectError::Invalid)?,
            None => Vec::new(),
        };
        let fields = match &query.field_selector {
            Some(text) => {
                selector::parse_fields(&query.kind, text).map_err(EffectError::Invalid)?
            }
            None => Vec::new(),
        };
        let group = group_of(&query.api_version);
        let namespace = query
            .namespace
            .as_deref()
            .filter(|_| !is_cluster_scoped(&query.kind));
        let items: Vec<Json> = state
            .store
            .objects
            .iter()
            .filter(|(key, object)| {
                key.group == group
                    && key.kind == query.kind
                    && namespace.is_none_or(|ns| key.namespace.as_deref() == Some(ns))
                    && labels.iter().all(|requirement| {
                        requirement
                            .matches(object.pointer("/metadata/labels").and_then(Json::as_object))
                    })
                    && fields.iter().all(|requirement| requirement.matches(object))
            })
            .map(|(_, object)| as_requested(object.clone(), &query.api_version))
            .collect();
        Ok(json!({
            "apiVersion": query.api_version,
            "kind": format!("{}List", query.kind),
            "metadata": {"resourceVersion": state.store.revision().to_string()},
            "items": items,
        }))
    }

    async fn scale(&self, key: &ObjectKey, replicas: i64, dry_run: DryRun) -> EffectResult<Json> {
        let store_key = StoreKey::of(key);
        self.write(
            key_call(FaultVerb::Scale, &store_key),
            dry_run,
            |store, log, dry| store.scale(&store_key, replicas, dry, log),
        )
    }

    async fn restart(
        &self,
        key: &ObjectKey,
        at: SystemTime,
        dry_run: DryRun,
    ) -> EffectResult<Json> {
        let store_key = StoreKey::of(key);
        let at = humantime::format_rfc3339_seconds(at).to_string();
        self.write(
            key_call(FaultVerb::Restart, &store_key),
            dry_run,
            |store, log, dry| store.restart(&store_key, &at, dry, log),
        )
    }

    async fn patch(
        &self,
        key: &ObjectKey,
        patch_type: PatchType,
        body: &Json,
        dry_run: DryRun,
    ) -> EffectResult<Json> {
        let store_key = StoreKey::of(key);
        self.write(
            key_call(FaultVerb::Patch, &store_key),
            dry_run,
            |store, log, dry| store.patch(&store_key, patch_type, body, dry, log),
        )
    }

    async fn apply(&self, manifest: &Json, dry_run: DryRun) -> EffectResult<Json> {
        let text = |pointer: &str| manifest.pointer(pointer).and_then(Json::as_str);
        let kind = text("/kind").unwrap_or("");
        let key = StoreKey::new(
            text("/apiVersion").unwrap_or(""),
            kind,
            text("/metadata/namespace"),
            text("/metadata/name").unwrap_or(""),
        );
        self.write(
            key_call(FaultVerb::Apply, &key),
            dry_run,
            |store, log, dry| store.apply(manifest, dry, log),
        )
    }

    async fn delete(
        &self,
        key: &ObjectKey,
        propagation: Option<Propagation>,
        _grace_period_seconds: Option<u32>,
        dry_run: DryRun,
    ) -> EffectResult<()> {
        let store_key = StoreKey::of(key);
        let orphan = propagation == Some(Propagation::Orphan);
        self.write(
            key_call(FaultVerb::Delete, &store_key),
            dry_run,
            |store, log, _| store.delete(&store_key, orphan, log),
        )
    }

    async fn set_unschedulable(
        &self,
        node: &str,
        unschedulable: bool,
        dry_run: DryRun,
    ) -> EffectResult<Json> {
        let verb = if unschedulable {
            FaultVerb::Cordon
        } else {
            FaultVerb::Uncordon
        };
        let call = Call {
            verb,
            kind: "Node",
            namespace: None,
            name: Some(node),
        };
        self.write(call, dry_run, |store, log, dry| {
            store.set_unschedulable(node, unschedulable, dry, log)
        })
    }

    async fn drain(
        &self,
        node: &str,
        options: &DrainOptions,
        dry_run: DryRun,
    ) -> EffectResult<DrainReport> {
        let call = Call {
            verb: FaultVerb::Drain,
            kind: "Node",
            namespace: None,
            name: Some(node),
        };
        self.write(call, dry_run, |store, log, dry| {
            store.drain(node, options, dry, log)
        })
    }

    async fn exec(
        &self,
        pod: &PodRef,
        argv: &[String],
        _timeout: Duration,
    ) -> EffectResult<CommandOutput> {
        let mut state = self.lock();
        let container = pod
            .container
            .as_ref()
            .map(|c| format!(" -c {c}"))
            .unwrap_or_default();
        let shown = shown(argv);
        state.calls.push(format!(
            "exec {}/{}{container} -- {shown}",
            pod.namespace, pod.pod
        ));
        state.check_fault(
            &Call {
                verb: FaultVerb::Exec,
                kind: "Pod",
                namespace: Some(&pod.namespace),
                name: Some(&pod.pod),
            },
            true,
        )?;
        let State { exec, finished, .. } = &mut *state;
        let what = format!(
            "exec in pod {}/{}{container}: {shown}",
            pod.namespace, pod.pod
        );
        let script = exec.iter_mut().find(|script| {
            let matcher = &script.matcher;
            matcher.namespace == pod.namespace
                && matcher.pod == pod.pod
                && matcher.argv == argv
                && container_matches(matcher.container.as_ref(), pod.container.as_ref())
        });
        let Some(script) = script else {
            let container = pod
                .container
                .as_ref()
                .map(|c| format!(", container: {c}"))
                .unwrap_or_default();
            return Err(EffectError::NotFound(format!(
                "no scripted answer matches {what} (argv {}); add one to the scenario's spec.exec: {{pod: {}/{}{container}, command: {}, responses: [{{exitCode: 0, stdout: \"...\"}}]}}",
                flow_list(argv),
                pod.namespace,
                pod.pod,
                flow_list(argv)
            )));
        };
        let response = script
            .answer(finished)
            .ok_or_else(|| none_in_effect(&what))?;
        process_output(response, &what)
    }

    async fn logs(&self, pod: &PodRef, options: LogOptions) -> EffectResult<String> {
        let mut state = self.lock();
        let container = pod
            .container
            .as_ref()
            .map(|c| format!(" -c {c}"))
            .unwrap_or_default();
        state.calls.push(format!(
            "logs {}/{}{container}{}",
            pod.namespace,
            pod.pod,
            options.flags()
        ));
        state.check_fault(
            &Call {
                verb: FaultVerb::Logs,
                kind: "Pod",
                namespace: Some(&pod.namespace),
                name: Some(&pod.pod),
            },
            true,
        )?;
        let State {
            logs,
            finished,
            store,
            ..
        } = &mut *state;
        let what = format!("the log of pod {}/{}{container}", pod.namespace, pod.pod);
        let script = logs.iter_mut().find(|script| {
            let matcher = &script.matcher;
            matcher.namespace == pod.namespace
                && matcher.pod == pod.pod
                && container_matches(matcher.container.as_ref(), pod.container.as_ref())
        });
        let Some(script) = script else {
            let container = pod
                .container
                .as_ref()
                .map(|c| format!(", container: {c}"))
                .unwrap_or_default();
            return Err(EffectError::NotFound(format!(
                "no scripted answer matches {what}; add one to the scenario's spec.logs: {{pod: {}/{}{container}, responses: [{{text: \"...\"}}]}}",
                pod.namespace, pod.pod
            )));
        };
        let scripted_container = script.matcher.container.clone();
        let response = script
            .answer(finished)
            .ok_or_else(|| none_in_effect(&what))?;
        if let Some(kind) = response.error {
            return Err(kind.error(
                response
                    .message
                    .unwrap_or_else(|| format!("scripted failure for {what}")),
            ));
        }
        let log = if options.previous {
            // The API server's answer for a container that never restarted.
            let Some(previous) = response.previous else {
                let name = pod
                    .container
                    .clone()
                    .or(scripted_container)
                    .or_else(|| only_container(store, pod))
                    .unwrap_or_default();
                return Err(EffectError::Invalid(format!(
                    "previous terminated container \"{name}\" in pod \"{}\" not found",
                    pod.pod
                )));
            };
            previous
        } else {
            response.text
        };
        Ok(tail(&log, options.tail_lines))
    }
}

/// The name of the pod's one container, when the scenario holds the pod and it has one.
fn only_container(store: &Store, pod: &PodRef) -> Option<String> {
    let key = StoreKey::new("v1", "Pod", Some(&pod.namespace), &pod.pod);
    match store
        .get(&key)
        .ok()?
        .pointer("/spec/containers")?
        .as_array()?
        .as_slice()
    {
        [only] => only.get("name")?.as_str().map(str::to_owned),
        _ => None,
    }
}

#[async_trait]
impl Processes for SimWorld {
    async fn run(
        &self,
        argv: &[String],
        env: &BTreeMap<String, String>,
        _timeout: Duration,
    ) -> EffectResult<CommandOutput> {
        let mut state = self.lock();
        let shown = shown(argv);
        // The environment's names, never its values (they are where secrets go).
        let names: Vec<&str> = env.keys().map(String::as_str).collect();
        state.calls.push(if names.is_empty() {
            format!("run {shown}")
        } else {
            format!("run {shown} (env {})", names.join(", "))
        });
        let State {
            commands, finished, ..
        } = &mut *state;
        let what = format!("command `{shown}`");
        let Some(script) = commands.iter_mut().find(|script| script.matcher == argv) else {
            return Err(EffectError::NotFound(format!(
                "no scripted answer matches {what} (argv {}); add one to the scenario's spec.commands: {{argv: {}, responses: [{{exitCode: 0, stdout: \"...\"}}]}}",
                flow_list(argv),
                flow_list(argv)
            )));
        };
        let response = script
            .answer(finished)
            .ok_or_else(|| none_in_effect(&what))?;
        process_output(response, &what)
    }
}

#[async_trait]
impl Http for SimWorld {
    async fn get(
        &self,
        url: &str,
        query: &BTreeMap<String, String>,
        _headers: &BTreeMap<String, String>,
    ) -> EffectResult<HttpResponse> {
        let mut state = self.lock();
        let shown = if query.is_empty() {
            url.to_owned()
        } else {
            let pairs: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("{url}?{}", pairs.join("&"))
        };
        state.calls.push(format!("http GET {shown}"));
        let State { http, finished, .. } = &mut *state;
        let what = format!("GET {shown}");
        let script = http.iter_mut().find(|script| {
            script.matcher.url == url && script.matcher.query.as_ref().is_none_or(|q| q == query)
        });
        let Some(script) = script else {
            let query_yaml = if query.is_empty() {
                String::new()
            } else {
                format!(
                    ", query: {}",
                    serde_json::to_string(query).unwrap_or_default()
                )
            };
            return Err(EffectError::NotFound(format!(
                "no scripted answer matches {what}; add one to the scenario's spec.http: {{url: {url}{query_yaml}, responses: [{{status: 200, body: \"...\"}}]}}"
            )));
        };
        let response = script
            .answer(finished)
            .ok_or_else(|| none_in_effect(&what))?;
        match response.error {
            Some(kind) => Err(kind.error(
                response
                    .message
                    .clone()
                    .unwrap_or_else(|| format!("scripted failure for {what}")),
            )),
            None => Ok(HttpResponse {
                status: response.status,
                headers: response
                    .headers
                    .iter()
                    .map(|(name, value)| (name.to_ascii_lowercase(), value.clone()))
                    .collect(),
                body: response.body_text(),
            }),
        }
    }
}

#[async_trait]
impl Notifier for SimWorld {
    async fn send(&self, notification: &Notification) -> EffectResult<()> {
        let mut state = self.lock();
        let verb = match notification.kind {
            crate::effects::NotificationKind::Notify => FaultVerb::Notify,
            crate::effects::NotificationKind::Page => FaultVerb::Page,
        };
        state.check_fault(
            &Call {
                verb,
                kind: "Notification",
                namespace: None,
                name: notification.channel.as_deref(),
            },
            true,
        )?;
        state.notifications.push(notification.clone());
        Ok(())
    }
}

impl StepObserver for SimWorld {
    fn step_finished(&self, step: &str, succeeded: bool) {
        if succeeded {
            let mut state = self.lock();
            state.finished.insert(step.to_owned());
            let due: Vec<scenario::Change> = state
                .changes
                .iter_mut()
                .filter(|(change, applied)| !*applied && change.after.step == step)
                .map(|(change, applied)| {
                    *applied = true;
                    change.clone()
                })
                .collect();
            for change in due {
                state.store.controller_change(&change.object, change.delete);
            }
        }
    }
}
