//! The actions pass: a step's one action keyword, resolved into a typed [`Action`], with the
//! objects it targets and the templates it renders checked on the way.

use super::*;

impl Checker<'_> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn action(
        &mut self,
        at: At<'_>,
        pointer: &str,
        step: &document::Step,
        scope: &Scope<'_>,
        reads: &mut Reads,
        calls: &mut Vec<Call>,
        runbook: &str,
        in_undo: bool,
    ) -> Option<Action> {
        let keywords = action_keywords(step);
        let keyword = match keywords.as_slice() {
            [] if step.confirm.is_some() && !in_undo => return Some(Action::Gate),
            [] => {
                self.error_help(
                    "no-action",
                    at,
                    at.span(pointer),
                    if in_undo {
                        "the undo has no action".to_owned()
                    } else {
                        "the step has no action".to_owned()
                    },
                    Some(format!(
                        "give it one of {}",
                        ACTIONS
                            .iter()
                            .filter(|action| !(in_undo && **action == "confirm"))
                            .map(|a| format!("`{a}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                );
                return None;
            }
            [one] => *one,
            several => {
                self.error_help(
                    "several-actions",
                    at,
                    at.key_span(&format!("{pointer}/{}", several[1])),
                    format!(
                        "a step does one thing, but this one has {}",
                        several
                            .iter()
                            .map(|s| format!("`{s}`"))
                            .collect::<Vec<_>>()
                            .join(" and ")
                    ),
                    Some("split it into one step per action".to_owned()),
                );
                return None;
            }
        };
        let p = format!("{pointer}/{keyword}");
        let template = |checker: &mut Self, field: &str, text: &str, reads: &mut Reads| {
            checker.template(at, &format!("{p}/{field}"), text, scope, reads)
        };
        Some(match keyword {
            "run" => Action::Run {
                argv: self.argv(at, &p, step.run.as_ref()?, scope, reads),
            },
            "scale" => {
                let scale = step.scale.as_ref()?;
                let target = self.target(
                    at,
                    &p,
                    scale.api_version.as_deref(),
                    scale.kind.as_deref().or(Some("Deployment")),
                    &scale.name,
                    scale.namespace.as_deref(),
                    scope,
                    reads,
                )?;
                let replicas = match &scale.replicas {
                    document::IntOrTemplate::Int(count) if *count < 0 => {
                        self.error(
                            "replicas",
                            at,
                            at.span(&format!("{p}/replicas")),
                            format!("replicas must be zero or more, found {count}"),
                        );
                        return None;
                    }
                    document::IntOrTemplate::Int(count) => IntValue::Literal(*count),
                    document::IntOrTemplate::Template(text) => {
                        let parsed = template(self, "replicas", text, reads);
                        if parsed.is_literal() {
                            self.error_help(
                                "replicas",
                                at,
                                at.span(&format!("{p}/replicas")),
                                format!("replicas must be a number, found `{text}`"),
                                Some(
                                    "write a number, or a template such as `${params.replicas}`"
                                        .to_owned(),
                                ),
                            );
                            return None;
                        }
                        IntValue::Template(parsed)
                    }
                };
                Action::Scale { target, replicas }
            }
            "restart" => {
                let object = step.restart.as_ref()?;
                let kind = object.kind.as_deref().unwrap_or("Deployment");
                if !["Deployment", "StatefulSet", "DaemonSet"].contains(&kind) {
                    self.error_help(
                        "restart-kind",
                        at,
                        at.span(&format!("{p}/kind")),
                        format!("`restart` rolls out a Deployment, StatefulSet or DaemonSet, not a {kind}"),
                        (kind == "Pod").then(|| "to replace one pod, use `delete` with `kind: Pod`".to_owned()),
                    );
                    return None;
                }
                Action::Restart {
                    target: self.target(
                        at,
                        &p,
                        object.api_version.as_deref(),
                        Some(kind),
                        &object.name,
                        object.namespace.as_deref(),
                        scope,
                        reads,
                    )?,
                }
            }
            "patch" => {
                let patch = step.patch.as_ref()?;
                let target = self.target(
                    at,
                    &p,
                    patch.api_version.as_deref(),
                    patch.kind.as_deref(),
                    &patch.name,
                    patch.namespace.as_deref(),
                    scope,
                    reads,
                )?;
                match (patch.patch_type, &patch.patch) {
                    (PatchType::Json, serde_json::Value::Array(_)) => {}
                    (PatchType::Json, _) => {
                        self.error_help("patch-body", at, at.span(&format!("{p}/patch")), "a `type: json` patch is a list of operations", Some("write `- {op: replace, path: /spec/x, value: 1}`, or use `type: merge` with an object".to_owned()));
                        return None;
                    }
                    (_, serde_json::Value::Object(_)) => {}
                    (_, _) => {
                        self.error_help(
                            "patch-body",
                            at,
                            at.span(&format!("{p}/patch")),
                            "a merge or strategic patch is an object",
                            Some("for a list of operations, set `type: json`".to_owned()),
                        );
                        return None;
                    }
                }
                if patch.patch_type == PatchType::Strategic
                    && !is_builtin_group(&target.api_version)
                {
                    self.error_help(
                        "patch-type",
                        at,
                        at.span(&format!("{p}/type")),
                        format!("the API server does not take strategic merge patches for custom resources such as {}", target.kind),
                        Some("use `type: merge`".to_owned()),
                    );
                    return None;
                }
                let body =
                    self.json_template(at, &format!("{p}/patch"), &patch.patch, scope, reads);
                Action::Patch {
                    target,
                    patch_type: patch.patch_type,
                    body,
                }
            }
            "apply" => {
                let apply = step.apply.as_ref()?;
                let manifest = &apply.manifest;
                let missing: Vec<&str> = ["apiVersion", "kind", "metadata"]
                    .into_iter()
                    .filter(|field| manifest.get(field).is_none())
                    .collect();
                if !manifest.is_object() || !missing.is_empty() {
                    self.error_help(
                        "apply-manifest",
                        at,
                        at.span(&format!("{p}/manifest")),
                        "the manifest must be a Kubernetes object",
                        Some(format!(
                            "it needs {}",
                            missing
                                .iter()
                                .map(|f| format!("`{f}`"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )),
                    );
                    return None;
                }
                Action::Apply {
                    manifest: self.json_template(
                        at,
                        &format!("{p}/manifest"),
                        manifest,
                        scope,
                        reads,
                    ),
                }
            }
            "annotate" | "label" => {
                let action = if keyword == "annotate" {
                    step.annotate.as_ref()?
                } else {
                    step.label.as_ref()?
                };
                let Some(kind) = action.kind.as_deref() else {
                    self.error(
                        "missing-field",
                        at,
                        at.span(&p),
                        format!("missing required field `kind` in {keyword}"),
                    );
                    return None;
                };
                let target = self.target(
                    at,
                    &p,
                    action.api_version.as_deref(),
                    Some(kind),
                    &action.name,
                    action.namespace.as_deref(),
                    scope,
                    reads,
                )?;
                if action.set.is_empty() {
                    self.error(
                        "missing-field",
                        at,
                        at.span(&format!("{p}/set")),
                        format!("`set` names no keys to {keyword}"),
                    );
                }
                let set = action
                    .set
                    .iter()
                    .map(|(key, value)| {
                        (
                            key.clone(),
                            value.as_ref().map(|text| {
                                self.template(
                                    at,
                                    &format!("{p}/set/{}", escape_pointer(key)),
                                    text,
                                    scope,
                                    reads,
                                )
                            }),
                        )
                    })
                    .collect();
                if keyword == "annotate" {
                    Action::Annotate { target, set }
                } else {
                    Action::Label { target, set }
                }
            }
            "delete" => {
                let delete = step.delete.as_ref()?;
                Action::Delete {
                    target: self.target(
                        at,
                        &p,
                        delete.api_version.as_deref(),
                        Some(&delete.kind),
                        &delete.name,
                        delete.namespace.as_deref(),
                        scope,
                        reads,
                    )?,
                    propagation: delete.propagation,
                    grace_period_seconds: delete.grace_period_seconds,
                }
            }
            "cordon" => Action::Cordon {
                node: template(self, "node", &step.cordon.as_ref()?.node, reads),
            },
            "uncordon" => Action::Uncordon {
                node: template(self, "node", &step.uncordon.as_ref()?.node, reads),
            },
            "drain" => {
                let drain = step.drain.as_ref()?;
                Action::Drain {
                    node: template(self, "node", &drain.node, reads),
                    delete_empty_dir_data: drain.delete_empty_dir_data,
                    eviction_timeout: drain
                        .eviction_timeout
                        .as_ref()
                        .and_then(|text| self.duration(at, &format!("{p}/evictionTimeout"), text))
                        .unwrap_or(DEFAULT_EVICTION_TIMEOUT),
                }
            }
            "exec" => {
                let exec = step.exec.as_ref()?;
                Action::Exec {
                    namespace: template(self, "namespace", &exec.namespace, reads),
                    pod: template(self, "pod", &exec.pod, reads),
                    container: exec
                        .container
                        .as_ref()
                        .map(|text| template(self, "container", text, reads)),
                    argv: self.argv(at, &format!("{p}/command"), &exec.command, scope, reads),
                }
            }
            "wait" => {
                let wait = step.wait.as_ref()?;
                let target = self.target(
                    at,
                    &p,
                    wait.api_version.as_deref(),
                    Some(&wait.kind),
                    &wait.name,
                    wait.namespace.as_deref(),
                    scope,
                    reads,
                )?;
                let until = match (&wait.condition, &wait.until) {
                    (Some(_), None) => None,
                    (None, Some(text)) => {
                        let with_object = Scope {
                            facts: scope.facts,
                            params: scope.params,
                            locals: &["object"],
                        };
                        Some(self.expression(
                            at,
                            &format!("{p}/until"),
                            text,
                            &with_object,
                            reads,
                        )?)
                    }
                    _ => {
                        self.error_help("wait", at, at.span(&p), "`wait` needs exactly one of `condition` and `until`", Some("`condition: Ready` waits for a status condition; `until: object.status.readyReplicas == 3` for an expression".to_owned()));
                        return None;
                    }
                };
                Action::Wait {
                    target,
                    condition: wait.condition.clone(),
                    until,
                }
            }
            "verify" => Action::Verify {
                expr: self.expression(at, &p, step.verify.as_deref()?, scope, reads)?,
                interval: step
                    .interval
                    .as_ref()
                    .and_then(|text| self.duration(at, &format!("{pointer}/interval"), text))
                    .unwrap_or(DEFAULT_VERIFY_INTERVAL),
            },
            "notify" | "page" => {
                let message = if keyword == "notify" {
                    step.notify.as_ref()?
                } else {
                    step.page.as_ref()?
                };
                let spec = match message {
                    document::Message::Text(text) => MessageSpec {
                        text: self.template(at, &p, text, scope, reads),
                        channel: None,
                        severity: None,
                    },
                    document::Message::Detailed(detail) => MessageSpec {
                        text: template(self, "message", &detail.message, reads),
                        channel: detail.channel.clone(),
                        severity: detail.severity.clone(),
                    },
                };
                if keyword == "notify" {
                    Action::Notify(spec)
                } else {
                    Action::Page(spec)
                }
            }
            "runbook" => {
                let call = step.runbook.as_ref()?;
                if call.name == runbook {
                    self.error(
                        "call-cycle",
                        at,
                        at.span(&format!("{p}/name")),
                        format!("runbook `{runbook}` calls itself"),
                    );
                    return None;
                }
                calls.push(Call {
                    from: runbook.to_owned(),
                    to: call.name.clone(),
                    params: call.params.keys().cloned().collect(),
                    source: at.source.clone(),
                    span: at.span(&format!("{p}/name")),
                });
                Action::Call {
                    runbook: call.name.clone(),
                    params: self.json_params(
                        at,
                        &format!("{p}/params"),
                        &call.params,
                        scope,
                        reads,
                    ),
                }
            }
            _ => return None,
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn target(
        &mut self,
        at: At<'_>,
        pointer: &str,
        api_version: Option<&str>,
        kind: Option<&str>,
        name: &str,
        namespace: Option<&str>,
        scope: &Scope<'_>,
        reads: &mut Reads,
    ) -> Option<Target> {
        let Some(kind) = kind else {
            self.error_help(
                "missing-field",
                at,
                Span::point(at.span(pointer).start),
                "missing required field `kind`",
                Some("name the kind of object, such as `kind: Deployment`".to_owned()),
            );
            return None;
        };
        let api_version = self.api_version(at, pointer, api_version, kind)?;
        Some(Target {
            api_version,
            kind: kind.to_owned(),
            name: self.template(at, &format!("{pointer}/name"), name, scope, reads),
            namespace: namespace
                .map(|text| self.template(at, &format!("{pointer}/namespace"), text, scope, reads)),
        })
    }

    pub(super) fn api_version(
        &mut self,
        at: At<'_>,
        pointer: &str,
        written: Option<&str>,
        kind: &str,
    ) -> Option<String> {
        match written {
            Some(version) => Some(version.to_owned()),
            None => match default_api_version(kind) {
                Some(version) => Some(version.to_owned()),
                None => {
                    self.error_help(
                        "api-version",
                        at,
                        at.span(&format!("{pointer}/kind")),
                        format!("kind `{kind}` is not one we know the API group of"),
                        Some(format!(
                            "set `apiVersion` (such as `example.com/v1`) beside `kind: {kind}`"
                        )),
                    );
                    None
                }
            },
        }
    }
}

pub(super) const ACTIONS: [&str; 18] = [
    "run", "scale", "restart", "patch", "apply", "annotate", "label", "delete", "cordon",
    "uncordon", "drain", "exec", "wait", "verify", "notify", "page", "runbook", "confirm",
];

pub(super) fn action_keywords(step: &document::Step) -> Vec<&'static str> {
    [
        ("run", step.run.is_some()),
        ("scale", step.scale.is_some()),
        ("restart", step.restart.is_some()),
        ("patch", step.patch.is_some()),
        ("apply", step.apply.is_some()),
        ("annotate", step.annotate.is_some()),
        ("label", step.label.is_some()),
        ("delete", step.delete.is_some()),
        ("cordon", step.cordon.is_some()),
        ("uncordon", step.uncordon.is_some()),
        ("drain", step.drain.is_some()),
        ("exec", step.exec.is_some()),
        ("wait", step.wait.is_some()),
        ("verify", step.verify.is_some()),
        ("notify", step.notify.is_some()),
        ("page", step.page.is_some()),
        ("runbook", step.runbook.is_some()),
    ]
    .into_iter()
    .filter(|(_, present)| *present)
    .map(|(keyword, _)| keyword)
    .collect()
}
