//! The scenario document (`kind: Scenario`): the objects of a simulated cluster and scripted
//! answers for everything else the executor may ask (pod exec, pod logs, local commands,
//! HTTP), plus faults to inject into cluster calls.
//!
//! Parsed like runbooks are: `yaml::parse` keeps positions, the structure check walks the JSON
//! Schema generated from these types (every unknown field, wrong type and missing field, each
//! at `file:line:col`), serde builds the typed document, and a last pass checks what the schema
//! cannot say (objects need `apiVersion`, `kind` and `metadata.name`; `pod` is
//! `namespace/name`; no two scripts answer the same call).
//!
//! A scenario may extend another (`spec.extends`, a path relative to its file): the base is
//! loaded first (and what it extends before it), then the extending file's items win over the
//! base's ones for the same thing; see [`ScenarioSpec::extended_by`] for what "the same" is.
//! A missing base and a circle of `extends` are errors at the `extends` line.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::diagnostic::{Code, Diagnostic, Diagnostics};
use crate::document::{Command, Metadata, API_GROUP, API_VERSION};
use crate::effects::EffectError;
use crate::source::{Position, Source, SourceFile, Span};
use crate::yaml::{self, Node, Value};

/// A simulated world for `runbook test` and the test suite.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Scenario {
    /// `<group>/v1alpha1`, for example `runbook.dev/v1alpha1`.
    pub api_version: String,
    pub kind: ScenarioKind,
    pub metadata: Metadata,
    pub spec: ScenarioSpec,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum ScenarioKind {
    Scenario,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScenarioSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Another scenario file this one builds on, relative to this file. Everything of the base
    /// applies, and this file's objects, scripts, faults and changes replace the base's for
    /// the same object, the same call or the same step and object; the rest is added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extends: Option<String>,
    /// Kubernetes objects of any kind, as they would be read from the API server. Each needs
    /// `apiVersion`, `kind` and `metadata.name`; namespaced kinds without `metadata.namespace`
    /// land in `default`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<serde_json::Map<String, Json>>,
    /// Scripted answers for commands run in pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exec: Vec<ExecScript>,
    /// Scripted container logs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<LogsScript>,
    /// Scripted answers for local commands.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<CommandScript>,
    /// Scripted answers for HTTP GETs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<HttpScript>,
    /// Errors to return from cluster calls.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<Fault>,
    /// What the cluster's controllers do on their own once a step of the run has succeeded
    /// (Flux marking a HelmRelease Ready after a reconcile, cert-manager issuing a new
    /// Secret): each change is applied once, and is not one of the run's mutations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<Change>,
    /// How fast the simulated controllers follow a write; without it, at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconcile: Option<Reconcile>,
}

/// How the simulated workload controllers follow a write.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Reconcile {
    /// How long after a scale or restart (any write to `spec`) of a Deployment or StatefulSet
    /// its ready, available and updated counts catch up, on the run's clock (`10s`, `2m`).
    /// Meanwhile `unavailableReplicas` says how many replicas are missing, and a restart has
    /// no updated replicas yet.
    pub delay: String,
}

impl ScenarioSpec {
    /// This spec (a base) with `own`'s items over it, as `extends` and a test case's
    /// `objects` and `changes` apply. `own`'s item wins over the base's items for the same
    /// thing, and the base's other items stay:
    ///
    /// - an object: the same group, kind, namespace and name (the whole object is replaced);
    /// - an exec script: the same pod, container and command; a logs script: the same pod and
    ///   container; a command script: the same argv; an HTTP script: the same URL and query;
    /// - faults: the same verb, kind, namespace and name (all of the base's faults for that
    ///   call give way to `own`'s);
    /// - a change: the same `after.step` and object.
    ///
    /// `description` and `reconcile` are `own`'s when given. A replacing item takes the place of the first
    /// item it replaces; `own`'s other items come after the base's.
    pub fn extended_by(self, own: ScenarioSpec) -> ScenarioSpec {
        ScenarioSpec {
            description: own.description.or(self.description),
            extends: None,
            objects: overlay(self.objects, own.objects, |object| {
                super::store::StoreKey::of_object(&Json::Object(object.clone()))
            }),
            exec: overlay(self.exec, own.exec, |script| {
                argv(&script.command)
                    .ok()
                    .map(|argv| (script.pod.clone(), script.container.clone(), argv))
            }),
            logs: overlay(self.logs, own.logs, |script| {
                Some((script.pod.clone(), script.container.clone()))
            }),
            commands: overlay(self.commands, own.commands, |script| {
                argv(&script.argv).ok()
            }),
            http: overlay(self.http, own.http, |script| {
                Some((script.url.clone(), script.query.clone()))
            }),
            faults: overlay(self.faults, own.faults, |fault| {
                Some((
                    fault.verb,
                    fault.kind.clone(),
                    fault.namespace.clone(),
                    fault.name.clone(),
                ))
            }),
            changes: overlay(self.changes, own.changes, change_key),
            reconcile: own.reconcile.or(self.reconcile),
        }
    }
}

/// What a change is about: its step and its object.
fn change_key(change: &Change) -> Option<(String, super::store::StoreKey)> {
    super::store::StoreKey::of_object(&Json::Object(change.object.clone()))
        .map(|key| (change.after.step.clone(), key))
}

/// `base`'s items, each replaced by `own`'s items of the same key (in the base item's place, so
/// objects keep their order, and with it their uids and resourceVersions), then `own`'s other
/// items. An item without a key (which the checks refuse) never replaces anything.
fn overlay<T, K: PartialEq>(base: Vec<T>, own: Vec<T>, key: impl Fn(&T) -> Option<K>) -> Vec<T> {
    let own_keys: Vec<Option<K>> = own.iter().map(&key).collect();
    let mut own: Vec<Option<T>> = own.into_iter().map(Some).collect();
    let mut items = Vec::new();
    for item in base {
        let replaced =
            key(&item).filter(|item_key| own_keys.iter().flatten().any(|k| k == item_key));
        match replaced {
            None => items.push(item),
            Some(item_key) => {
                // The first base item of a key takes all of `own`'s for it; later ones go.
                for (slot, own_key) in own.iter_mut().zip(&own_keys) {
                    if own_key.as_ref() == Some(&item_key) {
                        items.extend(slot.take());
                    }
                }
            }
        }
    }
    items.extend(own.into_iter().flatten());
    items
}

/// A change the cluster makes by itself after a step.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Change {
    /// The step after whose success the change happens.
    pub after: ChangeAfter,
    /// The object, with `apiVersion`, `kind` and `metadata.name` (and `metadata.namespace`):
    /// merged into the stored object as a JSON merge patch (`null` removes a field), or
    /// created if there is none.
    pub object: serde_json::Map<String, Json>,
    /// Delete the object instead.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delete: bool,
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ChangeAfter {
    pub step: String,
}

/// Answers for one command in one pod, matched on the pod, the container (when given) and the
/// exact argv.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExecScript {
    /// `namespace/name`.
    pub pod: String,
    /// Without it, a call for any container of the pod matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// An argv list, or a line split as runbook commands are.
    pub command: Command,
    /// The last one whose `after` holds answers.
    pub responses: Vec<ProcessResponse>,
}

/// The log of one pod, matched on the pod and the container (when given).
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LogsScript {
    /// `namespace/name`.
    pub pod: String,
    /// Without it, a read of any container of the pod matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// The last one whose `after` holds answers.
    pub responses: Vec<LogResponse>,
}

/// What a log read answers.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LogResponse {
    /// When this answer starts to apply; without it, always.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<After>,
    /// The whole log, lines ended by newlines; a read with `tail` gets its last lines.
    #[serde(default)]
    pub text: String,
    /// The log of the container's previous instance, the one that exited before its last
    /// restart (read with `previous: true`). Without it, such a read fails as the API server
    /// fails it for a container that never restarted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// Fail the call instead of answering (the pod or its log could not be reached).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorKind>,
    /// The error's message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Answers for one local command, matched on the exact argv.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CommandScript {
    /// An argv list, or a line split as runbook commands are.
    pub argv: Command,
    /// The last one whose `after` holds answers.
    pub responses: Vec<ProcessResponse>,
}

/// Answers for HTTP GETs of one URL, matched on the URL and, when `query` is given, on exactly
/// those query parameters.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpScript {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<BTreeMap<String, String>>,
    /// The last one whose `after` holds answers.
    pub responses: Vec<HttpAnswer>,
}

/// What a command (in a pod, or local) answers.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProcessResponse {
    /// When this answer starts to apply; without it, always.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<After>,
    #[serde(default)]
    pub exit_code: i32,
    #[serde(default)]
    pub stdout: String,
    #[serde(default)]
    pub stderr: String,
    /// Fail the call instead of answering (the pod or process could not be reached).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorKind>,
    /// The error's message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// What an HTTP GET answers.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpAnswer {
    /// When this answer starts to apply; without it, always.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<After>,
    #[serde(default = "ok_status")]
    pub status: u16,
    /// Response headers, such as `{Retry-After: "30"}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// The body: text, or YAML that is sent as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Json>,
    /// Fail the call instead of answering (the server could not be reached).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorKind>,
    /// The error's message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

fn ok_status() -> u16 {
    200
}

impl HttpAnswer {
    /// The body as sent: text as it is, anything else as JSON.
    pub fn body_text(&self) -> String {
        match &self.body {
            None | Some(Json::Null) => String::new(),
            Some(Json::String(text)) => text.clone(),
            Some(other) => other.to_string(),
        }
    }
}

/// When an answer or a fault applies. With both fields, both must hold.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct After {
    /// From when this step has finished successfully.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// From when the script (or, for a fault, its filter) has already seen this many calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calls: Option<u32>,
}

/// A cluster call that fails.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Fault {
    pub verb: FaultVerb,
    /// Only calls for this kind (`Node` for cordon, uncordon and drain; `Pod` for exec and
    /// logs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Only calls for this object (the node, or the pod for exec and logs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub error: ErrorKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Only the first this many matching calls fail; default every one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<After>,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FaultVerb {
    Scale,
    Restart,
    Patch,
    Apply,
    Delete,
    Cordon,
    Uncordon,
    Drain,
    Exec,
    Logs,
    Get,
    List,
    /// A notification (`notify` steps, `notify-oncall`).
    Notify,
    /// A page (`page` steps, `page-oncall`).
    Page,
}

impl FaultVerb {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scale => "scale",
            Self::Restart => "restart",
            Self::Patch => "patch",
            Self::Apply => "apply",
            Self::Delete => "delete",
            Self::Cordon => "cordon",
            Self::Uncordon => "uncordon",
            Self::Drain => "drain",
            Self::Exec => "exec",
            Self::Logs => "logs",
            Self::Get => "get",
            Self::List => "list",
            Self::Notify => "notify",
            Self::Page => "page",
        }
    }
}

/// The kinds of [`EffectError`], as scenarios name them.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    NotFound,
    Conflict,
    FieldManagerConflict,
    Invalid,
    Forbidden,
    Blocked,
    Unavailable,
    Other,
}

impl ErrorKind {
    pub fn error(self, message: impl Into<String>) -> EffectError {
        let message = message.into();
        match self {
            Self::NotFound => EffectError::NotFound(message),
            Self::Conflict => EffectError::Conflict(message),
            Self::FieldManagerConflict => EffectError::FieldManagerConflict(message),
            Self::Invalid => EffectError::Invalid(message),
            Self::Forbidden => EffectError::Forbidden(message),
            Self::Blocked => EffectError::Blocked(message),
            Self::Unavailable => EffectError::Unavailable(message),
            Self::Other => EffectError::Other(message),
        }
    }
}

/// The argv of a scripted command: a list as it is, a line split as runbook commands are.
pub fn argv(command: &Command) -> Result<Vec<String>, String> {
    match command {
        Command::Argv(argv) => Ok(argv.clone()),
        Command::Line(line) => crate::expr::split_command(line),
    }
}

/// The JSON Schema of scenario files (draft-07, like [`crate::document::json_schema`]); the
/// scenario itself is `#/definitions/Scenario`.
pub fn scenario_schema() -> Json {
    let mut generator = schemars::generate::SchemaSettings::draft07().into_generator();
    let reference = generator.subschema_for::<Scenario>().to_value();
    let definitions = generator.take_definitions(true);
    serde_json::json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$id": format!("https://{API_GROUP}/schemas/scenario.schema.json"),
        "title": "scenario",
        "allOf": [reference],
        "definitions": definitions,
    })
}

fn schema() -> &'static Json {
    static SCHEMA: OnceLock<Json> = OnceLock::new();
    SCHEMA.get_or_init(scenario_schema)
}

/// Reads and parses a scenario file, and the scenarios it extends.
pub fn load_scenario(path: &Path) -> Result<Scenario, Diagnostics> {
    let text = crate::files::read_text(path, crate::files::Origin::Named).map_err(|error| {
        let mut diagnostics = Diagnostics::new();
        diagnostics.push(error);
        diagnostics
    })?;
    parse_scenario(path, &text)
}

/// Parses a scenario, reporting every problem with its position, and reads the scenarios it
/// extends (relative to `path`'s folder).
pub fn parse_scenario(path: &Path, text: &str) -> Result<Scenario, Diagnostics> {
    parse_extending(path, text, &mut Vec::new())
}

/// Where a scenario says `extends`: the path as written, and its position.
struct ExtendsAt {
    reference: String,
    source: Source,
    span: Span,
}

/// Parses the scenario at `path` and the chain of scenarios it extends; `chain` holds the
/// files that extend this one (their identity, and their path as read), to find a circle.
fn parse_extending(
    path: &Path,
    text: &str,
    chain: &mut Vec<(std::path::PathBuf, std::path::PathBuf)>,
) -> Result<Scenario, Diagnostics> {
    let (mut scenario, extends) = parse_one(path, text)?;
    let Some(at) = extends else {
        return Ok(scenario);
    };
    let error = |code: Code, message: String| Diagnostic::error(code, &at.source, at.span, message);
    chain.push((identity(path), path.to_path_buf()));
    let base_path = path.parent().unwrap_or(Path::new("")).join(&at.reference);
    let base_identity = identity(&base_path);
    if let Some(start) = chain.iter().position(|(file, _)| *file == base_identity) {
        let circle: Vec<String> = chain[start..]
            .iter()
            .map(|(_, read_as)| read_as)
            .chain(std::iter::once(&base_path))
            .map(|file| file.display().to_string())
            .collect();
        let mut diagnostics = Diagnostics::new();
        diagnostics.push(
            error(
                Code::ExtendsCycle,
                format!("`extends` goes round in a circle: {}", circle.join(" -> ")),
            )
            .with_help(
                "a scenario cannot extend itself, directly or through others; remove one `extends`",
            ),
        );
        return Err(diagnostics);
    }
    let base_text = match crate::files::read_text(&base_path, crate::files::Origin::Named) {
        Ok(text) => text,
        Err(problem) => {
            let mut diagnostics = Diagnostics::new();
            diagnostics.push(
                error(
                    Code::Extends,
                    format!(
                        "cannot read `{}`, the scenario this one extends: {}",
                        at.reference, problem.message
                    ),
                )
                .with_help(extends_help(&base_path)),
            );
            return Err(diagnostics);
        }
    };
    match parse_extending(&base_path, &base_text, chain) {
        Ok(base) => {
            scenario.spec = base.spec.extended_by(scenario.spec);
            Ok(scenario)
        }
        Err(mut diagnostics) => {
            if !diagnostics
                .iter()
                .any(|diagnostic| diagnostic.code == Code::ExtendsCycle)
            {
                diagnostics.push(error(
                    Code::Extends,
                    format!(
                        "`{}`, the scenario this one extends, is invalid (its problems are listed with it)",
                        at.reference
                    ),
                ));
            }
            Err(diagnostics)
        }
    }
}

/// A file's identity for finding circles: its canonical path when it exists.
fn identity(path: &Path) -> std::path::PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_path_buf())
}

/// The help for a base scenario that cannot be read: the nearest scenario file beside it, or
/// where the path is taken from.
fn extends_help(path: &Path) -> String {
    let folder = path.parent().unwrap_or(Path::new("."));
    let wanted = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut names: Vec<String> = std::fs::read_dir(folder)
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .filter(|name| name.ends_with(".yaml") || name.ends_with(".yml"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    crate::diagnostic::did_you_mean(&wanted, names.iter().map(String::as_str)).unwrap_or_else(
        || {
            format!(
                "`extends` is a path relative to the folder of the file that says it ({})",
                folder.display()
            )
        },
    )
}

/// Parses one scenario file, without what it extends.
fn parse_one(path: &Path, text: &str) -> Result<(Scenario, Option<ExtendsAt>), Diagnostics> {
    let source = SourceFile::new(path, text);
    let mut diagnostics = Diagnostics::new();
    let documents: Vec<_> = yaml::parse(&source, &mut diagnostics)
        .into_iter()
        .filter(|document| !matches!(document.root.value, Value::Null))
        .collect();
    let Some(first) = documents.first() else {
        if !diagnostics.has_errors() {
            diagnostics.push(Diagnostic::error(
                Code::Empty,
                &source,
                Span::point(Position::new(1, 1)),
                "the file holds no scenario",
            ));
        }
        return Err(diagnostics);
    };
    for extra in &documents[1..] {
        diagnostics.push(Diagnostic::error(
            Code::ExtraDocument,
            &source,
            Span::point(extra.root.span.start),
            "a scenario file holds one document; this is another",
        ));
    }
    let root = &first.root;
    if !matches!(root.value, Value::Map(_)) {
        diagnostics.push(Diagnostic::error(
            Code::WrongType,
            &source,
            root.span,
            format!(
                "expected a mapping with `apiVersion`, `kind`, `metadata` and `spec`, found {}",
                root.describe()
            ),
        ));
        return Err(diagnostics);
    }
    check_api_version(root, &source, &mut diagnostics);
    let bad = crate::structure::check(schema(), "Scenario", root, &source, &mut diagnostics);
    check_objects(root, &source, &mut diagnostics);
    let mut json = root.to_json();
    for pointer in &bad {
        if !prune(&mut json, pointer) {
            return Err(diagnostics);
        }
    }
    // The checks of meaning run item by item, so an item the structure check refused does not
    // hide the problems of the others.
    Checker {
        root,
        source: &source,
        diagnostics: &mut diagnostics,
    }
    .check(&json);
    match serde_path_to_error::deserialize::<_, Scenario>(json) {
        Ok(scenario) if !diagnostics.has_errors() => {
            let extends = scenario.spec.extends.as_ref().map(|reference| ExtendsAt {
                reference: reference.clone(),
                source: source.clone(),
                span: span_at(root, "/spec/extends"),
            });
            Ok((scenario, extends))
        }
        Ok(_) => Err(diagnostics),
        Err(error) => {
            // With fields set aside, serde may refuse the rest; the structure check said why.
            if bad.is_empty() {
                let mut pointer = String::new();
                for segment in error.path().iter() {
                    pointer.push('/');
                    pointer.push_str(&segment.to_string());
                }
                diagnostics.push(Diagnostic::error(
                    Code::InvalidValue,
                    &source,
                    span_at(root, &pointer),
                    error.inner().to_string(),
                ));
            }
            Err(diagnostics)
        }
    }
}

/// The items of the list `/spec/{field}` that deserialize, with their indexes.
fn items<T: serde::de::DeserializeOwned>(json: &Json, field: &str) -> Vec<(usize, T)> {
    json.pointer(&format!("/spec/{field}"))
        .and_then(Json::as_array)
        .map(|items| {
            items
                .iter()
                .enumerate()
                .filter_map(|(index, item)| {
                    serde_json::from_value(item.clone())
                        .ok()
                        .map(|item| (index, item))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn check_api_version(root: &Node, source: &Source, diagnostics: &mut Diagnostics) {
    let Some(node) = root.get("apiVersion") else {
        return;
    };
    let Some(text) = node.as_str() else {
        return;
    };
    let valid = text.split_once('/').is_some_and(|(group, version)| {
        version == API_VERSION && group.contains('.') && !group.contains(' ')
    });
    if !valid {
        diagnostics.push(
            Diagnostic::error(
                Code::ApiVersion,
                source,
                node.span,
                format!("unsupported apiVersion `{text}`"),
            )
            .with_help(format!(
                "use `<group>/{API_VERSION}`, for example `{API_GROUP}/{API_VERSION}`"
            )),
        );
    }
}

/// Every object needs `apiVersion`, `kind` and `metadata.name` (strings), and no two may be
/// the same object.
fn check_objects(root: &Node, source: &Source, diagnostics: &mut Diagnostics) {
    if let Some(objects) = root.pointer("/spec/objects") {
        check_object_list(objects, source, diagnostics);
    }
}

/// The checks of [`check_objects`] on one list of objects (a scenario's, or a test case's).
pub(crate) fn check_object_list(list: &Node, source: &Source, diagnostics: &mut Diagnostics) {
    let Value::Seq(objects) = &list.value else {
        return; // The structure check reported it.
    };
    let mut seen: BTreeMap<super::store::StoreKey, usize> = BTreeMap::new();
    for object in objects {
        if !matches!(object.value, Value::Map(_)) {
            continue; // The structure check reported it.
        }
        let mut fields = Vec::new();
        for (pointer, name) in [
            ("/apiVersion", "apiVersion"),
            ("/kind", "kind"),
            ("/metadata/name", "metadata.name"),
        ] {
            match object.pointer(pointer) {
                Some(node) => match node.as_str() {
                    Some(text) if !text.trim().is_empty() => fields.push(text.to_owned()),
                    _ => diagnostics.push(Diagnostic::error(
                        Code::WrongType,
                        source,
                        node.span,
                        format!(
                            "`{name}` must be a non-empty string, found {}",
                            node.describe()
                        ),
                    )),
                },
                None => {
                    let at = if pointer.starts_with("/metadata/") {
                        object.get("metadata").unwrap_or(object)
                    } else {
                        object
                    };
                    diagnostics.push(Diagnostic::error(
                        Code::MissingField,
                        source,
                        Span::point(at.span.start),
                        format!("missing required field `{name}` in object"),
                    ));
                }
            }
        }
        if let Some(namespace) = object.pointer("/metadata/namespace") {
            if namespace.as_str().is_none() {
                diagnostics.push(Diagnostic::error(
                    Code::WrongType,
                    source,
                    namespace.span,
                    format!(
                        "`metadata.namespace` must be a string, found {}",
                        namespace.describe()
                    ),
                ));
            }
        }
        if let [api_version, kind, name] = fields.as_slice() {
            let namespace = object.pointer("/metadata/namespace").and_then(Node::as_str);
            let key = super::store::StoreKey::new(api_version, kind, namespace, name);
            if let Some(first) = seen.get(&key) {
                diagnostics.push(Diagnostic::error(
                    Code::DuplicateObject,
                    source,
                    Span::point(object.span.start),
                    format!(
                        "duplicate object `{}` (first given at line {first})",
                        key.display()
                    ),
                ));
            } else {
                seen.insert(key, object.span.start.line);
            }
        }
    }
}

struct Checker<'a> {
    root: &'a Node,
    source: &'a Source,
    diagnostics: &'a mut Diagnostics,
}

impl Checker<'_> {
    fn error(&mut self, code: Code, pointer: &str, message: String) {
        let span = span_at(self.root, pointer);
        self.diagnostics
            .push(Diagnostic::error(code, self.source, span, message));
    }

    fn check(&mut self, json: &Json) {
        if let Some(Json::String(reference)) = json.pointer("/spec/extends") {
            if reference.trim().is_empty() {
                self.error(
                    Code::InvalidValue,
                    "/spec/extends",
                    "`extends` is empty; give the scenario file this one builds on, relative to this file".into(),
                );
            }
        }
        if let Some(Json::String(delay)) = json.pointer("/spec/reconcile/delay") {
            if let Err(problem) = crate::runbook::parse_duration(delay) {
                self.error(
                    Code::Duration,
                    "/spec/reconcile/delay",
                    format!(
                        "{problem} (leave `reconcile` out for controllers that follow at once)"
                    ),
                );
            }
        }
        let mut first: BTreeMap<String, usize> = BTreeMap::new();
        for (index, script) in items::<ExecScript>(json, "exec") {
            let pointer = format!("/spec/exec/{index}");
            self.pod(&script.pod, &pointer);
            let identity = self.argv(&script.command, &format!("{pointer}/command"));
            if let Some(argv) = identity {
                let id = format!("exec {} {:?} {argv:?}", script.pod, script.container);
                self.duplicate(
                    &mut first,
                    id,
                    &pointer,
                    "exec script for this pod and command",
                );
            }
            self.process_responses(&script.responses, &pointer);
        }
        for (index, script) in items::<LogsScript>(json, "logs") {
            let pointer = format!("/spec/logs/{index}");
            self.pod(&script.pod, &pointer);
            let id = format!("logs {} {:?}", script.pod, script.container);
            self.duplicate(
                &mut first,
                id,
                &pointer,
                "logs script for this pod and container",
            );
            if script.responses.is_empty() {
                self.no_responses(&pointer);
            }
            for (number, response) in script.responses.iter().enumerate() {
                let at = format!("{pointer}/responses/{number}");
                self.after(response.after.as_ref(), &at);
                let answered = !response.text.is_empty() || response.previous.is_some();
                self.error_fields(response.error, response.message.is_some(), answered, &at);
            }
        }
        for (index, script) in items::<CommandScript>(json, "commands") {
            let pointer = format!("/spec/commands/{index}");
            if let Some(argv) = self.argv(&script.argv, &format!("{pointer}/argv")) {
                let id = format!("command {argv:?}");
                self.duplicate(&mut first, id, &pointer, "command script for this argv");
            }
            self.process_responses(&script.responses, &pointer);
        }
        for (index, script) in items::<HttpScript>(json, "http") {
            let pointer = format!("/spec/http/{index}");
            if script.url.trim().is_empty() {
                self.error(
                    Code::InvalidValue,
                    &format!("{pointer}/url"),
                    "`url` is empty".into(),
                );
            }
            let id = format!("http {} {:?}", script.url, script.query);
            self.duplicate(
                &mut first,
                id,
                &pointer,
                "http script for this url and query",
            );
            if script.responses.is_empty() {
                self.no_responses(&pointer);
            }
            for (number, response) in script.responses.iter().enumerate() {
                let at = format!("{pointer}/responses/{number}");
                self.after(response.after.as_ref(), &at);
                let answered = response.status != 200 || response.body.is_some();
                self.error_fields(response.error, response.message.is_some(), answered, &at);
            }
        }
        if let Some(changes) = self.root.pointer("/spec/changes") {
            check_change_list(changes, self.source, self.diagnostics);
        }
        for (index, fault) in items::<Fault>(json, "faults") {
            let pointer = format!("/spec/faults/{index}");
            self.after(fault.after.as_ref(), &pointer);
            if fault.times == Some(0) {
                self.error(
                    Code::InvalidValue,
                    &format!("{pointer}/times"),
                    "`times: 0` never fails; remove the fault or give at least 1".into(),
                );
            }
        }
    }

    /// A script's `pod` must be `namespace/name`.
    fn pod(&mut self, pod: &str, pointer: &str) {
        let valid = pod
            .split_once('/')
            .is_some_and(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains('/'));
        if !valid {
            self.error(
                Code::InvalidValue,
                &format!("{pointer}/pod"),
                format!("`pod` must be `namespace/name`, found `{pod}`"),
            );
        }
    }

    fn argv(&mut self, command: &Command, pointer: &str) -> Option<Vec<String>> {
        match argv(command) {
            Ok(argv) if argv.is_empty() => {
                self.error(Code::InvalidValue, pointer, "the command is empty".into());
                None
            }
            Ok(argv) => Some(argv),
            Err(error) => {
                self.error(
                    Code::InvalidValue,
                    pointer,
                    format!("cannot split the command: {error}"),
                );
                None
            }
        }
    }

    fn duplicate(
        &mut self,
        first: &mut BTreeMap<String, usize>,
        id: String,
        pointer: &str,
        what: &str,
    ) {
        let line = span_at(self.root, pointer).start.line;
        match first.get(&id) {
            Some(earlier) => self.error(
                Code::DuplicateScript,
                pointer,
                format!("a second {what} (the first is at line {earlier}); merge their responses"),
            ),
            None => {
                first.insert(id, line);
            }
        }
    }

    fn no_responses(&mut self, pointer: &str) {
        self.error(
            Code::InvalidValue,
            &format!("{pointer}/responses"),
            "a script needs at least one response".into(),
        );
    }

    fn process_responses(&mut self, responses: &[ProcessResponse], pointer: &str) {
        if responses.is_empty() {
            self.no_responses(pointer);
        }
        for (number, response) in responses.iter().enumerate() {
            let at = format!("{pointer}/responses/{number}");
            self.after(response.after.as_ref(), &at);
            let answered = response.exit_code != 0
                || !response.stdout.is_empty()
                || !response.stderr.is_empty();
            self.error_fields(response.error, response.message.is_some(), answered, &at);
        }
    }

    fn error_fields(
        &mut self,
        error: Option<ErrorKind>,
        message: bool,
        answered: bool,
        pointer: &str,
    ) {
        if error.is_some() && answered {
            self.error(
                Code::ConflictingFields,
                &format!("{pointer}/error"),
                "a response with `error` fails the call, so it cannot also give output".into(),
            );
        }
        if error.is_none() && message {
            self.error(
                Code::ConflictingFields,
                &format!("{pointer}/message"),
                "`message` goes with `error`".into(),
            );
        }
    }

    fn after(&mut self, after: Option<&After>, pointer: &str) {
        if let Some(after) = after {
            if after.step.is_none() && after.calls.is_none() {
                self.error(
                    Code::InvalidValue,
                    &format!("{pointer}/after"),
                    "`after` needs `step` (a step id) or `calls` (a count)".into(),
                );
            }
        }
    }
}

/// A change's `object` must say which object changes (a scenario's changes, or a test
/// case's).
pub(crate) fn check_change_list(list: &Node, source: &Source, diagnostics: &mut Diagnostics) {
    let Value::Seq(changes) = &list.value else {
        return; // The structure check reported it.
    };
    for change in changes {
        let Some(object) = change.get("object") else {
            continue; // The structure check reported it.
        };
        if !matches!(object.value, Value::Map(_)) {
            continue;
        }
        if super::store::StoreKey::of_object(&object.to_json()).is_none() {
            diagnostics.push(Diagnostic::error(
                Code::MissingField,
                source,
                object.span,
                "a change's `object` needs `apiVersion`, `kind` and `metadata.name`, to say which object changes",
            ));
        }
    }
}

/// The span of the node at `pointer`, or of its nearest ancestor that exists.
fn span_at(root: &Node, pointer: &str) -> Span {
    let mut pointer = pointer;
    loop {
        if let Some(node) = root.pointer(pointer) {
            return node.span;
        }
        match pointer.rsplit_once('/') {
            Some((parent, _)) => pointer = parent,
            None => return root.span,
        }
    }
}

/// Removes the field holding `pointer` (or, inside a list, the field holding the list).
fn prune(json: &mut Json, pointer: &str) -> bool {
    let mut pointer = pointer.to_owned();
    loop {
        let Some((parent, key)) = pointer.rsplit_once('/') else {
            return false;
        };
        let (parent, key) = (parent.to_owned(), key.replace("~1", "/").replace("~0", "~"));
        match json.pointer_mut(&parent) {
            Some(Json::Object(map)) => {
                map.shift_remove(&key);
                return true;
            }
            Some(Json::Array(_)) => pointer = parent,
            _ => return false,
        }
    }
}
