//! The runbook document as written: the serde model of `kind: Runbook` and `kind: FactLibrary`.
//!
//! These types are the single source of truth for the format: the JSON Schema in `schemas/`
//! is generated from them, and the structure check (`structure.rs`) walks that schema over the
//! YAML tree to report unknown fields, wrong types and missing fields with positions before
//! serde ever sees the document. Nothing here is checked for meaning yet (that is `check/`),
//! so fields that take expressions or durations are plain strings.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group we publish. Any `<group>/v1alpha1` is accepted, so runbooks written for the
/// platform handbook (`catalyst.openova.io/v1alpha1`) load as they are.
pub const API_GROUP: &str = "runbook.dev";
pub const API_VERSION: &str = "v1alpha1";

/// Any document in the runbooks folder.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
#[schemars(title = "runbook document")]
pub enum AnyDocument {
    Runbook(RunbookDocument),
    FactLibrary(FactLibraryDocument),
}

/// A runbook: triggers, preconditions, facts, steps and rollback.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RunbookDocument {
    /// `<group>/v1alpha1`, for example `runbook.dev/v1alpha1`.
    pub api_version: String,
    pub kind: RunbookKind,
    pub metadata: Metadata,
    pub spec: RunbookSpec,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum RunbookKind {
    Runbook,
}

/// Named facts shared by many runbooks, so `spire.server.healthy` is defined once.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FactLibraryDocument {
    pub api_version: String,
    pub kind: FactLibraryKind,
    pub metadata: Metadata,
    pub spec: FactLibrarySpec,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum FactLibraryKind {
    FactLibrary,
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FactLibrarySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub facts: Vec<Fact>,
    /// Functions every expression of the catalog may call, such as
    /// `{name: days_until, params: [t], body: '(t - now()) / duration("1d")'}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub functions: Vec<Function>,
}

/// A function of a fact library: a Rhai expression over its params only (no facts, no
/// `params.NAME`), so it stays pure and is checked like any expression.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Function {
    /// A lowercase identifier (`days_until`), unique in the catalog and not a built-in's name.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The names its arguments are read by in `body`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<String>,
    /// A Rhai expression over `params`.
    pub body: String,
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    /// The name `runbook run NAME` uses; lowercase letters, digits and `-`.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RunbookSpec {
    /// One line for the catalog.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Who to ask about this runbook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<Param>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<Trigger>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub facts: Vec<Fact>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preconditions: Vec<Precondition>,
    pub steps: Vec<Step>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<Rollback>,
}

/// A typed input, bound from `--set name=value` or from an alert label.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Param {
    pub name: String,
    #[serde(default, rename = "type")]
    pub kind: ParamType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<serde_json::Value>,
    /// Where an alert supplies the value: `alert.labels.NAME` or `alert.annotations.NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Defaults to true when there is no `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
    /// Redacted wherever the value would be printed or stored.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub secret: bool,
    /// A regular expression the whole value must match (strings only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// The only values accepted.
    #[serde(default, rename = "enum", skip_serializing_if = "Option::is_none")]
    pub allowed: Option<Vec<serde_json::Value>>,
    /// Accept a value that starts with `-` where it opens an argument of a command, which the
    /// command would take as an option (refused otherwise).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_option_like: bool,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    #[default]
    String,
    Integer,
    Number,
    Boolean,
    Duration,
}

/// An Alertmanager alert that starts this runbook.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Trigger {
    pub alert_name: String,
    /// Alertmanager label matchers: `severity="critical"`, `namespace=~"team-.*"`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matchers: Vec<String>,
    /// No new run for the same params within this long after the last one started (a new
    /// incident; a repeat of one already served never runs again). Default `5m`; `0s` disables
    /// it (`validate` warns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown: Option<String>,
    /// Unattended runs pass confirmation gates without waiting for a human.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub auto_approve: bool,
}

/// A named probe of the world. Exactly one source: `kubernetes`, `exec`, `logs`, `command`,
/// `http`, or `expr` (derived from other facts).
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Fact {
    /// Dotted name, such as `openbao.status`; expressions read it as a nested map.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesRead>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecRead>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<LogsRead>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandRead>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpRead>,
    /// A Rhai expression over other facts and params.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expr: Option<String>,
    /// A JSONPath selection applied to what was read, as `kubectl -o jsonpath` takes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jsonpath: Option<String>,
    /// Redact the value wherever it would be printed or stored.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub secret: bool,
}

/// A Kubernetes get (with `name`) or list (without).
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubernetesRead {
    /// Defaults to the built-in group of `kind` (`apps/v1` for Deployment, `v1` for Pod, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_selector: Option<String>,
}

/// A command run inside a pod; its standard output is parsed per `format`.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExecRead {
    pub namespace: String,
    pub pod: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    pub command: Command,
    #[serde(default)]
    pub format: OutputFormat,
    /// Every exit code that is an answer rather than a failure, such as `[0, 1]`: the fact is
    /// then `{exitCode, stdout, stderr}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_exit_codes: Option<Vec<i64>>,
}

/// A container's log, as `kubectl logs [--previous] [--tail N] [-c CONTAINER]` prints it,
/// parsed per `format`. It names a `pod`, or a `deployment` whose pod is chosen as
/// `kubectl logs deployment/NAME` chooses it.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LogsRead {
    pub namespace: String,
    /// The pod; or give `deployment` instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// A Deployment: its log is the log of one of its pods (selected by `spec.selector`),
    /// picked as `kubectl logs deployment/NAME` picks it: a running, ready pod, the one ready
    /// the longest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    /// Needed when the pod has more than one container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// The log of the container's previous instance, the one that exited before its last
    /// restart (`kubectl logs --previous`): what a crash-looping container said as it died.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub previous: bool,
    /// Only the last this many lines; without it, the whole log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<std::num::NonZeroU32>,
    #[serde(default)]
    pub format: LogFormat,
}

/// How a log becomes a value. Unlike the `format` of `exec`, `command` and `http` reads, it
/// defaults to text, and JSON comes one value a line (structured logging).
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// The log as one string, without its final newline.
    #[default]
    Text,
    /// A list of strings, one a line.
    Lines,
    /// A list of values, each non-empty line parsed as JSON.
    Json,
}

/// A local command; its standard output is parsed per `format`.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CommandRead {
    pub argv: Command,
    #[serde(default)]
    pub format: OutputFormat,
    /// Every exit code that is an answer rather than a failure, such as `[0, 1]`: the fact is
    /// then `{exitCode, stdout, stderr}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_exit_codes: Option<Vec<i64>>,
}

/// An HTTP GET, such as a Prometheus instant query.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRead {
    pub url: String,
    /// Query parameters, encoded for you: `{query: 'up{job="x"}'}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub format: OutputFormat,
    /// The statuses that are answers rather than failures: a code (`503`), a range
    /// (`"200-299"`, `"5xx"`) or a list of them. The fact is then `{status, headers, body}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_status: Option<ExpectStatus>,
}

/// `expectStatus`: one entry or a list.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum ExpectStatus {
    One(StatusEntry),
    Many(Vec<StatusEntry>),
}

impl ExpectStatus {
    pub fn entries(&self) -> &[StatusEntry] {
        match self {
            Self::One(entry) => std::slice::from_ref(entry),
            Self::Many(entries) => entries,
        }
    }
}

/// An HTTP status (`503`) or a range of them (`"200-299"`, `"2xx"`).
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum StatusEntry {
    Code(i64),
    Range(String),
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    #[default]
    Json,
    Text,
}

/// A process: a string (split like a shell would, but never run by one) or an argv list.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Command {
    Line(String),
    Argv(Vec<String>),
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Precondition {
    /// A Rhai expression that must be true before anything changes.
    pub check: String,
    /// Said when the check fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One thing to do. A step has exactly one action (`run`, a Kubernetes action, `verify`,
/// `notify`, `page`, `runbook`), or only `confirm`, which makes it a gate.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Step {
    /// Unique within the runbook; defaults to `<action>-<n>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// What this step is for, in a few words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Steps this one waits for. Without `needs`, a step waits for the one before it. A step
    /// that was skipped satisfies a need; `{step: x, status: succeeded}` skips this step too
    /// unless `x` succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needs: Option<Vec<Need>>,
    /// Run only when this expression is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<Retries>,
    /// Ask a human first: `true`, or the question to ask.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirm: Option<Confirm>,
    /// How to compensate this step when a later one fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo: Option<Box<Step>>,
    /// This step cannot be undone: `true`, or the reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub irreversible: Option<Confirm>,
    /// A `run` or `exec` that only reads: it runs during `--dry-run` and needs no undo.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub readonly: bool,
    /// Environment variables for a `run` step's process, added to those `runbook` runs with:
    /// `{PGPASSWORD: "${params.password}"}`. Arguments are readable by every user of the
    /// machine (`ps`); a process's environment only by its user and root, so pass secrets here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    /// Every exit code of a `run` or `exec` step that means it succeeded, such as `[0, 1]`
    /// (`argocd app diff` exits 1 when it finds a difference).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_exit_codes: Option<Vec<i64>>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<Command>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<ScaleAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<ObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<PatchAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apply: Option<ApplyAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotate: Option<MetadataAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<MetadataAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete: Option<DeleteAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cordon: Option<NodeRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uncordon: Option<NodeRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<DrainAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<WaitAction>,
    /// An expression polled until it is true, or the step times out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<String>,
    /// How often `verify` re-reads its facts; default 5s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// An expression that makes a `verify` fail at once, without waiting for its timeout, when
    /// it holds (a restore that ended `PartiallyFailed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_when: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Message>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<Message>,
    /// Run another runbook as this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runbook: Option<RunbookCall>,
    /// Evaluate expressions once and keep them as `vars.NAME` for the rest of the run (and a
    /// resume): `{restore: "'restore-' + format_time(now(), \"%Y%m%d-%H%M\")"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture: Option<BTreeMap<String, String>>,

    /// Run the step once for each item of the list this expression gives, with `item` (or the
    /// name in `as`) in scope. Each instance is journaled, undone and resumed on its own, as
    /// `<id>[<key>]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_each: Option<String>,
    /// The name an item of `forEach` is read by; default `item`.
    #[serde(default, rename = "as", skip_serializing_if = "Option::is_none")]
    pub item_name: Option<String>,
    /// An expression of the item that names its instance (`<id>[<key>]`); default the item's
    /// `metadata.name`, its `name`, or the item itself when it is a string or a number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// How many instances of a `forEach` run at once; default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<u32>,
    /// A `forEach` over a longer list fails before any instance runs; default 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_items: Option<u32>,
}

/// One entry of `needs`: a step id, or a step and the status it must have ended with.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Need {
    Step(String),
    Status(NeedStatus),
}

impl Need {
    pub fn step(&self) -> &str {
        match self {
            Self::Step(step) => step,
            Self::Status(need) => &need.step,
        }
    }

    /// Whether the step must have succeeded (not been skipped).
    pub fn strict(&self) -> bool {
        matches!(self, Self::Status(_))
    }
}

/// `{step: x, status: succeeded}`: wait for `x`, and run only if it succeeded.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NeedStatus {
    pub step: String,
    pub status: RequiredStatus,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RequiredStatus {
    /// The step ran and succeeded: a skipped one does not do.
    Succeeded,
}

/// `retries: 3`, or with backoff: `{attempts: 3, backoff: 2s, maxBackoff: 30s}`.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Retries {
    Count(u32),
    Policy(RetryPolicy),
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RetryPolicy {
    pub attempts: u32,
    /// The first wait; each next one doubles. Default 1s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<String>,
    /// Default 30s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_backoff: Option<String>,
}

/// `true`/`false`, or the text to show (the question for `confirm`, the reason for
/// `irreversible`).
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Confirm {
    Flag(bool),
    Text(String),
}

/// A Kubernetes object. `kind` defaults to Deployment where the action says so.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ObjectRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScaleAction {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// A count, or a `${...}` template such as `${params.replicas}`.
    pub replicas: IntOrTemplate,
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum IntOrTemplate {
    Int(i64),
    Template(String),
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PatchAction {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, rename = "type")]
    pub patch_type: PatchType,
    /// The patch body: an object for merge/strategic, a list of operations for json.
    pub patch: serde_json::Value,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PatchType {
    #[default]
    Merge,
    Strategic,
    Json,
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ApplyAction {
    /// The object to apply server-side, as YAML.
    pub manifest: serde_json::Value,
}

/// `annotate` or `label`: keys to set, or to remove with a null value.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MetadataAction {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub set: BTreeMap<String, Option<String>>,
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeleteAction {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagation: Option<Propagation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_period_seconds: Option<u32>,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum Propagation {
    Foreground,
    Background,
    Orphan,
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeRef {
    pub node: String,
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DrainAction {
    pub node: String,
    /// Evict pods that use emptyDir volumes (their data is lost).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delete_empty_dir_data: bool,
    /// How long each eviction may keep being refused by a PodDisruptionBudget; default 5m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eviction_timeout: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExecAction {
    pub namespace: String,
    pub pod: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    pub command: Command,
}

/// Wait until the object has a condition, or until `until` holds over it (as `object`).
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WaitAction {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// A status condition type that must be `True`, such as `Ready` or `Available`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// A Rhai expression over `object` (the resource as JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

/// A message: the text, or `{message, channel}` / `{message, severity}`.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Message {
    Text(String),
    Detailed(MessageDetail),
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MessageDetail {
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RunbookCall {
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, serde_json::Value>,
}

/// After the undos of a failed run: a named action (`page-oncall`, `notify-oncall`), another
/// runbook (`{runbook: NAME}`), or a list of steps.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Rollback {
    Named(String),
    Runbook(RollbackRunbook),
    Steps(Vec<Step>),
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RollbackRunbook {
    pub runbook: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, serde_json::Value>,
}

/// The JSON Schema for every document kind, as `runbook schema` prints it and `schemas/`
/// holds it. Draft-07, which editors' YAML language servers understand.
pub fn json_schema() -> serde_json::Value {
    let generator = schemars::generate::SchemaSettings::draft07().into_generator();
    let schema = generator.into_root_schema_for::<AnyDocument>();
    let mut value = schema.to_value();
    bounds_for_number_formats(&mut value);
    constrain_strings(&mut value);
    if let Some(object) = value.as_object_mut() {
        object.insert(
            "$id".to_owned(),
            serde_json::Value::String(format!("https://{API_GROUP}/schemas/runbook.schema.json")),
        );
    }
    value
}

/// schemars writes Rust's integer types as `format: uint32` (or `int64`, ...), which are no
/// JSON Schema formats: strict validators (ajv's default mode) refuse the schema for them. Each
/// becomes the bounds it means (`minimum`, `maximum`), which every validator, the structure
/// check included, understands.
fn bounds_for_number_formats(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            let bounds: Option<(f64, Option<f64>)> =
                match map.get("format").and_then(|f| f.as_str()) {
                    Some("uint8") => Some((0.0, Some(f64::from(u8::MAX)))),
                    Some("uint16") => Some((0.0, Some(f64::from(u16::MAX)))),
                    Some("uint32") => Some((0.0, Some(f64::from(u32::MAX)))),
                    Some("uint64" | "uint") => Some((0.0, None)),
                    Some("int8") => Some((f64::from(i8::MIN), Some(f64::from(i8::MAX)))),
                    Some("int16") => Some((f64::from(i16::MIN), Some(f64::from(i16::MAX)))),
                    Some("int32") => Some((f64::from(i32::MIN), Some(f64::from(i32::MAX)))),
                    Some("int64" | "int" | "double" | "float") => Some((f64::NEG_INFINITY, None)),
                    _ => None,
                };
            if let Some((minimum, maximum)) = bounds {
                map.remove("format");
                if minimum.is_finite() && !map.contains_key("minimum") {
                    map.insert("minimum".to_owned(), serde_json::json!(minimum as i64));
                }
                if let (Some(maximum), false) = (maximum, map.contains_key("maximum")) {
                    map.insert("maximum".to_owned(), serde_json::json!(maximum as i64));
                }
            }
            for item in map.values_mut() {
                bounds_for_number_formats(item);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(bounds_for_number_formats),
        _ => {}
    }
}

/// A name, as `metadata.name` takes it: a DNS label.
const NAME_PATTERN: &str = "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$";
/// A duration as the engine reads it (`30s`, `5m`, `1h30m`, `250ms`).
const DURATION_PATTERN: &str = r"^\s*([0-9]+\s*[a-zA-Zµ]+\s*)+$";

/// What `validate` refuses in these strings, said in the schema too, so an editor or a CI
/// validator catches it (issue 16): a name that is not a DNS label, a step id, an apiVersion
/// that is not `<group>/v1alpha1`, a duration that is no duration, an empty command, and a
/// count written as text that is no template. The structure check ignores these keywords;
/// the checker says the same with positions and fixes.
fn constrain_strings(schema: &mut serde_json::Value) {
    use serde_json::json;
    let api_version = json!({"pattern": format!("^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/{API_VERSION}$")});
    let duration = json!({"pattern": DURATION_PATTERN});
    let rules = [
        ("RunbookDocument", "apiVersion", api_version.clone()),
        ("FactLibraryDocument", "apiVersion", api_version),
        ("Metadata", "name", json!({"pattern": NAME_PATTERN})),
        ("Step", "id", json!({"pattern": "^[a-z0-9][a-z0-9_-]*$"})),
        ("Step", "timeout", duration.clone()),
        ("Step", "interval", duration.clone()),
        ("Trigger", "cooldown", duration.clone()),
        ("RetryPolicy", "backoff", duration.clone()),
        ("RetryPolicy", "maxBackoff", duration.clone()),
        ("DrainAction", "evictionTimeout", duration),
    ];
    let Some(definitions) = schema.get_mut("definitions") else {
        return;
    };
    for (definition, property, rule) in rules {
        let Some(target) = definitions
            .pointer_mut(&format!("/{definition}/properties/{property}"))
            .and_then(serde_json::Value::as_object_mut)
        else {
            continue;
        };
        if let Some(rule) = rule.as_object() {
            target.extend(rule.clone());
        }
    }
    // `run: []`, `command: ""`: a command needs a program.
    if let Some(branches) = definitions
        .pointer_mut("/Command/anyOf")
        .and_then(serde_json::Value::as_array_mut)
    {
        for branch in branches
            .iter_mut()
            .filter_map(serde_json::Value::as_object_mut)
        {
            match branch.get("type").and_then(serde_json::Value::as_str) {
                Some("string") => {
                    branch.insert("pattern".to_owned(), json!(r"\S"));
                }
                Some("array") => {
                    branch.insert("minItems".to_owned(), json!(1));
                }
                _ => {}
            }
        }
    }
    // `replicas: "two"`: text must be a `${...}` template.
    if let Some(branches) = definitions
        .pointer_mut("/IntOrTemplate/anyOf")
        .and_then(serde_json::Value::as_array_mut)
    {
        for branch in branches
            .iter_mut()
            .filter_map(serde_json::Value::as_object_mut)
        {
            if branch.get("type").and_then(serde_json::Value::as_str) == Some("string") {
                branch.insert("pattern".to_owned(), json!(r"\$\{"));
            }
        }
    }
}
