//! The checked runbook: every name resolved, every expression compiled, every duration parsed.
//!
//! `Checker` turns `document::RunbookDocument`s into these types; nothing downstream (the
//! compiler, the executor) ever sees YAML or an unresolved name. Spans are kept so that
//! runtime errors can still point at the line that caused them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::document::{LogFormat, OutputFormat, ParamType, PatchType, Propagation};
use crate::expr::{Expression, Template};
use crate::matcher::Matcher;
use crate::source::{Source, Span};

/// Defaults an SRE would pick; stated in the plan so nobody has to guess.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(5 * 60);
pub const DEFAULT_VERIFY_TIMEOUT: Duration = Duration::from_secs(2 * 60);
pub const DEFAULT_VERIFY_INTERVAL: Duration = Duration::from_secs(5);
pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(1);
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(30);
pub const DEFAULT_EVICTION_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// Every checked runbook and fact library found under the runbooks folder.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    pub runbooks: Vec<Arc<Runbook>>,
    /// Facts from fact libraries, by name.
    pub library_facts: BTreeMap<String, Arc<FactSpec>>,
    /// Functions from fact libraries, by name.
    pub functions: BTreeMap<String, Arc<FunctionSpec>>,
}

impl Catalog {
    pub fn get(&self, name: &str) -> Option<&Arc<Runbook>> {
        self.runbooks.iter().find(|runbook| runbook.name == name)
    }
}

#[derive(Clone, Debug)]
pub struct Runbook {
    pub name: String,
    pub namespace: Option<String>,
    pub api_version: String,
    pub description: Option<String>,
    pub owner: Option<String>,
    pub tags: Vec<String>,
    /// `metadata.annotations`, as written (`runbook.dev/guide` names the guide section the
    /// runbook follows, for the library's table).
    pub annotations: BTreeMap<String, String>,
    pub source: Source,
    /// Where `metadata.name` is.
    pub span: Span,
    pub params: Vec<ParamSpec>,
    pub triggers: Vec<TriggerSpec>,
    /// Every fact the runbook reads, directly or through other facts, by name.
    pub facts: BTreeMap<String, Arc<FactSpec>>,
    /// Every library function its expressions (and the facts it reads) call, by name.
    pub functions: BTreeMap<String, Arc<FunctionSpec>>,
    pub preconditions: Vec<Check>,
    pub steps: Vec<StepSpec>,
    pub rollback: Option<RollbackSpec>,
}

impl Runbook {
    pub fn step(&self, id: &str) -> Option<&StepSpec> {
        self.steps.iter().find(|step| step.id == id)
    }

    pub fn param(&self, name: &str) -> Option<&ParamSpec> {
        self.params.iter().find(|param| param.name == name)
    }

    /// The params whose value opens an argument of a command somewhere in the runbook (`run`
    /// and `exec` steps, their undos, rollback steps, and the `command` and `exec` facts it
    /// reads), each with the first place it does, such as ``step `delete` ``. A value there
    /// that starts with `-` would be taken as an option.
    pub fn params_opening_arguments(&self) -> BTreeMap<String, String> {
        fn note(
            found: &mut BTreeMap<String, String>,
            argv: &[Template],
            place: &dyn Fn() -> String,
        ) {
            for argument in argv {
                for name in argument.leading_params() {
                    found.entry(name.to_owned()).or_insert_with(place);
                }
            }
        }
        fn action(
            found: &mut BTreeMap<String, String>,
            action: &Action,
            place: &dyn Fn() -> String,
        ) {
            if let Action::Run { argv, .. } | Action::Exec { argv, .. } = action {
                note(found, argv, place);
            }
        }
        let mut found = BTreeMap::new();
        for step in &self.steps {
            action(&mut found, &step.action, &|| format!("step `{}`", step.id));
            if let UndoSpec::Declared(undo) = &step.undo {
                action(&mut found, undo, &|| {
                    format!("the undo of step `{}`", step.id)
                });
            }
        }
        if let Some(RollbackSpec::Steps(steps)) = &self.rollback {
            for step in steps {
                action(&mut found, &step.action, &|| {
                    format!("rollback step `{}`", step.id)
                });
            }
        }
        for fact in self.facts.values() {
            if let FactSource::Command { argv, .. } | FactSource::Exec { argv, .. } = &fact.source {
                note(&mut found, argv, &|| format!("fact `{}`", fact.name));
            }
        }
        found
    }
}

#[derive(Clone, Debug)]
pub struct ParamSpec {
    pub name: String,
    pub kind: ParamType,
    pub description: Option<String>,
    pub default: Option<ParamValue>,
    pub from: Option<AlertField>,
    pub required: bool,
    pub secret: bool,
    pub pattern: Option<crate::pattern::Pattern>,
    pub allowed: Vec<ParamValue>,
    /// `allowOptionLike`: a value starting with `-` may open a command's argument.
    pub allow_option_like: bool,
    pub span: Span,
}

/// Where in an alert a param comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "in", content = "name", rename_all = "lowercase")]
pub enum AlertField {
    Labels(String),
    Annotations(String),
}

impl std::fmt::Display for AlertField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Labels(name) => write!(f, "alert.labels.{name}"),
            Self::Annotations(name) => write!(f, "alert.annotations.{name}"),
        }
    }
}

/// A bound param value, already validated against its declared type.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ParamValue {
    String(String),
    Integer(i64),
    Number(f64),
    Boolean(bool),
    #[serde(serialize_with = "serialize_duration")]
    Duration(Duration),
}

fn serialize_duration<S: serde::Serializer>(
    duration: &Duration,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&humantime::format_duration(*duration).to_string())
}

impl ParamValue {
    /// Parses text (from `--set` or an alert label) as `kind`.
    pub fn parse(kind: ParamType, text: &str) -> Result<Self, String> {
        match kind {
            ParamType::String => Ok(Self::String(text.to_owned())),
            ParamType::Integer => text
                .trim()
                .parse()
                .map(Self::Integer)
                .map_err(|_| format!("`{text}` is not an integer")),
            ParamType::Number => text
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|value| value.is_finite())
                .map(Self::Number)
                .ok_or_else(|| format!("`{text}` is not a number")),
            ParamType::Boolean => match text.trim() {
                "true" => Ok(Self::Boolean(true)),
                "false" => Ok(Self::Boolean(false)),
                _ => Err(format!("`{text}` is not `true` or `false`")),
            },
            ParamType::Duration => parse_duration(text).map(Self::Duration),
        }
    }

    /// Takes a YAML/JSON value (a `default`, an `enum` entry) as `kind`.
    pub fn from_json(kind: ParamType, value: &serde_json::Value) -> Result<Self, String> {
        match (kind, value) {
            (ParamType::String, serde_json::Value::String(text)) => Ok(Self::String(text.clone())),
            (ParamType::Integer, serde_json::Value::Number(number)) if number.is_i64() => {
                Ok(Self::Integer(number.as_i64().unwrap_or_default()))
            }
            (ParamType::Number, serde_json::Value::Number(number)) => {
                Ok(Self::Number(number.as_f64().unwrap_or_default()))
            }
            (ParamType::Boolean, serde_json::Value::Bool(value)) => Ok(Self::Boolean(*value)),
            (ParamType::Duration, serde_json::Value::String(text)) => {
                parse_duration(text).map(Self::Duration)
            }
            (kind, value) => Err(format!("expected {}, found `{value}`", type_name(kind))),
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    pub fn to_dynamic(&self) -> rhai::Dynamic {
        match self {
            Self::String(text) => text.clone().into(),
            Self::Integer(value) => (*value).into(),
            Self::Number(value) => (*value).into(),
            Self::Boolean(value) => (*value).into(),
            Self::Duration(value) => humantime::format_duration(*value).to_string().into(),
        }
    }
}

impl std::fmt::Display for ParamValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::String(text) => f.write_str(text),
            Self::Integer(value) => write!(f, "{value}"),
            Self::Number(value) => write!(f, "{value}"),
            Self::Boolean(value) => write!(f, "{value}"),
            Self::Duration(value) => write!(f, "{}", humantime::format_duration(*value)),
        }
    }
}

pub fn type_name(kind: ParamType) -> &'static str {
    match kind {
        ParamType::String => "a string",
        ParamType::Integer => "an integer",
        ParamType::Number => "a number",
        ParamType::Boolean => "a boolean",
        ParamType::Duration => "a duration",
    }
}

/// `30s`, `5m`, `1h30m`, `250ms`. Zero is refused: a zero timeout or cooldown is a mistake.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    let duration = humantime::parse_duration(trimmed).map_err(|_| {
        format!(
            "invalid duration `{text}`; use a number and a unit, such as `30s`, `5m` or `1h30m`"
        )
    })?;
    if duration.is_zero() {
        return Err(format!("duration `{text}` must be more than zero"));
    }
    Ok(duration)
}

pub fn format_duration(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

/// The cooldown of a trigger that declares none: Alertmanager's default `group_interval`, so a
/// notification re-sent for a changed group does not start the remediation again.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(5 * 60);

#[derive(Clone, Debug)]
pub struct TriggerSpec {
    pub alert_name: String,
    pub matchers: Vec<Matcher>,
    /// As declared: `None` means `DEFAULT_COOLDOWN`, zero (`cooldown: 0s`) means none.
    pub cooldown: Option<Duration>,
    pub auto_approve: bool,
    pub span: Span,
}

impl TriggerSpec {
    /// The time after a run of a key starts during which a new incident for the key starts
    /// no other; `None` when the trigger disables it with `cooldown: 0s`.
    pub fn effective_cooldown(&self) -> Option<Duration> {
        match self.cooldown {
            Some(cooldown) if cooldown.is_zero() => None,
            Some(cooldown) => Some(cooldown),
            None => Some(DEFAULT_COOLDOWN),
        }
    }

    /// Whether a firing alert with these labels starts this trigger.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        labels
            .get("alertname")
            .is_some_and(|name| name == &self.alert_name)
            && self.matchers.iter().all(|matcher| matcher.matches(labels))
    }
}

#[derive(Clone, Debug)]
pub struct FactSpec {
    pub name: String,
    pub description: Option<String>,
    pub source: FactSource,
    /// The JSONPath as written and in the form the JSONPath library takes (`$.items[*]`).
    pub jsonpath: Option<JsonPathSelection>,
    pub secret: bool,
    /// Facts this one reads (for `expr` facts and templates).
    pub reads: Vec<String>,
    /// Params this one reads; a runbook using it must declare them.
    pub params: Vec<String>,
    /// Library functions its expressions call (directly or through other functions).
    pub functions: Vec<String>,
    /// Where it is defined (a fact library or the runbook itself).
    pub origin: Source,
    pub span: Span,
}

/// A function of a fact library, checked: its body compiled (see `expr::Functions`).
#[derive(Clone, Debug)]
pub struct FunctionSpec {
    pub name: String,
    pub description: Option<String>,
    pub params: Vec<String>,
    /// The body as written.
    pub body: String,
    /// Where it is defined.
    pub origin: Source,
    pub span: Span,
}

impl FunctionSpec {
    /// `name(a, b)`, as a call is written.
    pub fn signature(&self) -> String {
        format!("{}({})", self.name, self.params.join(", "))
    }
}

/// `allowExitCodes`: the exit codes of a process that are answers, not failures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExitCodes(pub Vec<i32>);

impl ExitCodes {
    pub fn allows(&self, code: i32) -> bool {
        self.0.contains(&code)
    }
}

impl std::fmt::Display for ExitCodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let codes: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&codes.join(", "))
    }
}

/// `expectStatus`: the HTTP statuses that are answers, not failures, as inclusive ranges
/// (a single code is a range of one), in the order written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusSet(pub Vec<(u16, u16)>);

impl StatusSet {
    pub fn contains(&self, status: u16) -> bool {
        self.0
            .iter()
            .any(|(low, high)| (*low..=*high).contains(&status))
    }
}

impl std::fmt::Display for StatusSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let entries: Vec<String> = self
            .0
            .iter()
            .map(|(low, high)| {
                if low == high {
                    low.to_string()
                } else {
                    format!("{low}-{high}")
                }
            })
            .collect();
        f.write_str(&entries.join(", "))
    }
}

#[derive(Clone, Debug)]
pub struct JsonPathSelection {
    pub written: String,
    pub query: String,
}

#[derive(Clone, Debug)]
pub enum FactSource {
    Kubernetes {
        api_version: String,
        kind: String,
        name: Option<Template>,
        namespace: Option<Template>,
        label_selector: Option<Template>,
        field_selector: Option<Template>,
    },
    Exec {
        namespace: Template,
        pod: Template,
        container: Option<Template>,
        argv: Vec<Template>,
        format: OutputFormat,
        allow_exit_codes: Option<ExitCodes>,
    },
    Logs {
        namespace: Template,
        target: LogTarget,
        container: Option<Template>,
        /// The container's previous instance (`kubectl logs --previous`).
        previous: bool,
        /// Only the last this many lines (at least 1); `None` reads the whole log.
        tail: Option<u32>,
        format: LogFormat,
    },
    Command {
        argv: Vec<Template>,
        format: OutputFormat,
        allow_exit_codes: Option<ExitCodes>,
    },
    Http {
        url: Template,
        query: BTreeMap<String, Template>,
        headers: BTreeMap<String, Template>,
        format: OutputFormat,
        /// With `expectStatus`, these statuses are read as `{status, headers, body}`.
        expect_status: Option<StatusSet>,
    },
    Expr(Expression),
}

/// Whose log a `logs` fact reads.
#[derive(Clone, Debug)]
pub enum LogTarget {
    Pod(Template),
    /// One pod of the Deployment, picked as `kubectl logs deployment/NAME` picks it.
    Deployment(Template),
}

/// A precondition.
#[derive(Clone, Debug)]
pub struct Check {
    pub expr: Expression,
    pub message: Option<String>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct StepSpec {
    /// Position in `steps:` (0-based).
    pub index: usize,
    pub id: String,
    pub name: Option<String>,
    /// Ids of the steps this one waits for.
    pub needs: Vec<String>,
    /// Of those, the ones that must have succeeded (`{step, status: succeeded}`): when one was
    /// skipped, this step is skipped too.
    pub must_succeed: Vec<String>,
    pub when: Option<Expression>,
    pub timeout: Duration,
    pub retries: RetrySpec,
    /// The question a gate asks, when the step has one (params may be interpolated).
    pub confirm: Option<Template>,
    pub undo: UndoSpec,
    pub readonly: bool,
    pub action: Action,
    /// `forEach`: the step runs once per item of a list.
    pub for_each: Option<ForEach>,
    pub span: Span,
}

/// The default of `maxItems`: a `forEach` over a longer list refuses to start.
pub const DEFAULT_MAX_ITEMS: usize = 50;

/// A step that runs once per item of a list (`forEach`).
#[derive(Clone, Debug)]
pub struct ForEach {
    /// Gives the list, evaluated once when the step starts.
    pub list: Expression,
    /// The name each item is read by (`item`, or `as:`).
    pub name: String,
    /// Names an instance (`<id>[<key>]`); `None`: the item's `metadata.name`, its `name`, or
    /// the item itself when it is a string or a number.
    pub key: Option<Expression>,
    /// Instances at once, at least 1.
    pub parallelism: usize,
    pub max_items: usize,
}

impl StepSpec {
    /// Every expression this step evaluates (when, verify, templates).
    pub fn expressions(&self) -> Vec<&Expression> {
        let mut all: Vec<&Expression> = self.when.iter().collect();
        if let Some(for_each) = &self.for_each {
            all.push(&for_each.list);
            all.extend(for_each.key.iter());
        }
        all.extend(self.confirm.iter().flat_map(Template::expressions));
        all.extend(self.action.expressions());
        if let UndoSpec::Declared(action) = &self.undo {
            all.extend(action.expressions());
        }
        all
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct RetrySpec {
    /// Attempts after the first.
    pub retries: u32,
    #[serde(serialize_with = "serialize_duration")]
    pub backoff: Duration,
    #[serde(serialize_with = "serialize_duration")]
    pub max_backoff: Duration,
}

impl Default for RetrySpec {
    fn default() -> Self {
        Self {
            retries: 0,
            backoff: DEFAULT_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
        }
    }
}

/// How a step is compensated when a later one fails.
#[derive(Clone, Debug)]
pub enum UndoSpec {
    /// The step changes nothing (verify, wait, gate, notify, a readonly run).
    NotNeeded,
    /// A native action's own inverse, computed from state captured before it acted.
    Native(NativeUndo),
    /// The author's undo.
    Declared(Box<Action>),
    /// Marked `irreversible`, with the reason if given.
    Irreversible(Option<String>),
    /// A mutating step with no undo: the linter warns.
    Missing,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NativeUndo {
    /// Scale back to the replica count seen before.
    RestoreReplicas,
    /// Put back the previous values of the fields the patch changed.
    RestorePatchedFields,
    /// Put back the previous object, or delete it if the apply created it.
    RestoreApplied,
    /// Put back or remove the annotations/labels that were changed.
    RestoreMetadata,
    /// Uncordon after cordon or drain.
    Uncordon,
    /// Cordon again after uncordon.
    Cordon,
}

impl NativeUndo {
    pub fn describe(self) -> &'static str {
        match self {
            Self::RestoreReplicas => "scale back to the replica count seen before",
            Self::RestorePatchedFields => "restore the previous values of the patched fields",
            Self::RestoreApplied => "restore the previous object, or delete it if it was created",
            Self::RestoreMetadata => "restore the previous values of the changed keys",
            Self::Uncordon => "uncordon the node",
            Self::Cordon => "cordon the node again",
        }
    }
}

/// A Kubernetes object an action targets.
#[derive(Clone, Debug)]
pub struct Target {
    pub api_version: String,
    pub kind: String,
    pub name: Template,
    /// `None`: the namespace of the current context (or `--namespace`).
    pub namespace: Option<Template>,
}

/// An integer or a template that must evaluate to one.
#[derive(Clone, Debug)]
pub enum IntValue {
    Literal(i64),
    Template(Template),
}

/// A JSON value whose strings may hold `${...}` templates.
#[derive(Clone, Debug)]
pub enum JsonTemplate {
    Literal(serde_json::Value),
    String(Template),
    Array(Vec<JsonTemplate>),
    Object(Vec<(String, JsonTemplate)>),
}

impl JsonTemplate {
    pub fn expressions(&self) -> Vec<&Expression> {
        match self {
            Self::Literal(_) => Vec::new(),
            Self::String(template) => template.expressions().collect(),
            Self::Array(items) => items.iter().flat_map(JsonTemplate::expressions).collect(),
            Self::Object(entries) => entries
                .iter()
                .flat_map(|(_, value)| value.expressions())
                .collect(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct MessageSpec {
    pub text: Template,
    pub channel: Option<String>,
    pub severity: Option<String>,
}

/// What a step does.
#[derive(Clone, Debug)]
pub enum Action {
    Run {
        argv: Vec<Template>,
        /// Environment variables for the process (`env:`), in name order.
        env: BTreeMap<String, Template>,
        /// `allowExitCodes`: the exit codes that mean success (without it, only 0).
        allow_exit_codes: Option<ExitCodes>,
    },
    Scale {
        target: Target,
        replicas: IntValue,
    },
    Restart {
        target: Target,
    },
    Patch {
        target: Target,
        patch_type: PatchType,
        body: JsonTemplate,
    },
    Apply {
        manifest: JsonTemplate,
    },
    Annotate {
        target: Target,
        set: BTreeMap<String, Option<Template>>,
    },
    Label {
        target: Target,
        set: BTreeMap<String, Option<Template>>,
    },
    Delete {
        target: Target,
        propagation: Option<Propagation>,
        grace_period_seconds: Option<u32>,
    },
    Cordon {
        node: Template,
    },
    Uncordon {
        node: Template,
    },
    Drain {
        node: Template,
        delete_empty_dir_data: bool,
        eviction_timeout: Duration,
    },
    Exec {
        namespace: Template,
        pod: Template,
        container: Option<Template>,
        argv: Vec<Template>,
        /// `allowExitCodes`: the exit codes that mean success (without it, only 0).
        allow_exit_codes: Option<ExitCodes>,
    },
    Wait {
        target: Target,
        condition: Option<String>,
        until: Option<Expression>,
    },
    Verify {
        expr: Expression,
        interval: Duration,
        /// Fails the verify at once when it holds.
        fail_when: Option<Expression>,
    },
    /// A confirmation gate with no other action.
    Gate,
    Notify(MessageSpec),
    Page(MessageSpec),
    Call {
        runbook: String,
        params: BTreeMap<String, JsonTemplate>,
    },
    /// Evaluates expressions once and keeps their values as `vars.NAME`.
    Capture(Vec<(String, Expression)>),
}

impl Action {
    /// The word a user writes for this action.
    pub fn keyword(&self) -> &'static str {
        match self {
            Self::Run { .. } => "run",
            Self::Scale { .. } => "scale",
            Self::Restart { .. } => "restart",
            Self::Patch { .. } => "patch",
            Self::Apply { .. } => "apply",
            Self::Annotate { .. } => "annotate",
            Self::Label { .. } => "label",
            Self::Delete { .. } => "delete",
            Self::Cordon { .. } => "cordon",
            Self::Uncordon { .. } => "uncordon",
            Self::Drain { .. } => "drain",
            Self::Exec { .. } => "exec",
            Self::Wait { .. } => "wait",
            Self::Verify { .. } => "verify",
            Self::Gate => "confirm",
            Self::Notify(_) => "notify",
            Self::Page(_) => "page",
            Self::Call { .. } => "runbook",
            Self::Capture(_) => "capture",
        }
    }

    /// Whether the action changes the world (and so needs an undo or `irreversible`).
    pub fn mutates(&self, readonly: bool) -> bool {
        match self {
            Self::Run { .. } | Self::Exec { .. } => !readonly,
            Self::Scale { .. }
            | Self::Restart { .. }
            | Self::Patch { .. }
            | Self::Apply { .. }
            | Self::Annotate { .. }
            | Self::Label { .. }
            | Self::Delete { .. }
            | Self::Cordon { .. }
            | Self::Uncordon { .. }
            | Self::Drain { .. } => true,
            // A called runbook undoes its own steps and runs its own rollback.
            Self::Wait { .. }
            | Self::Verify { .. }
            | Self::Gate
            | Self::Notify(_)
            | Self::Page(_)
            | Self::Call { .. }
            | Self::Capture(_) => false,
        }
    }

    /// The inverse a native action knows for itself, if any.
    pub fn native_undo(&self) -> Option<NativeUndo> {
        match self {
            Self::Scale { .. } => Some(NativeUndo::RestoreReplicas),
            Self::Patch { patch_type, .. } if *patch_type != PatchType::Json => {
                Some(NativeUndo::RestorePatchedFields)
            }
            Self::Apply { .. } => Some(NativeUndo::RestoreApplied),
            Self::Annotate { .. } | Self::Label { .. } => Some(NativeUndo::RestoreMetadata),
            Self::Cordon { .. } | Self::Drain { .. } => Some(NativeUndo::Uncordon),
            Self::Uncordon { .. } => Some(NativeUndo::Cordon),
            _ => None,
        }
    }

    /// Every expression the action evaluates.
    pub fn expressions(&self) -> Vec<&Expression> {
        fn templates<'a>(
            all: &mut Vec<&'a Expression>,
            items: impl IntoIterator<Item = &'a Template>,
        ) {
            for template in items {
                all.extend(template.expressions());
            }
        }
        fn target<'a>(all: &mut Vec<&'a Expression>, target: &'a Target) {
            templates(
                all,
                std::iter::once(&target.name).chain(target.namespace.iter()),
            );
        }
        let mut all = Vec::new();
        match self {
            Self::Run { argv, env, .. } => templates(&mut all, argv.iter().chain(env.values())),
            Self::Scale {
                target: t,
                replicas,
            } => {
                target(&mut all, t);
                if let IntValue::Template(template) = replicas {
                    templates(&mut all, [template]);
                }
            }
            Self::Restart { target: t } | Self::Delete { target: t, .. } => target(&mut all, t),
            Self::Wait {
                target: t, until, ..
            } => {
                target(&mut all, t);
                all.extend(until.iter());
            }
            Self::Patch {
                target: t, body, ..
            } => {
                target(&mut all, t);
                all.extend(body.expressions());
            }
            Self::Apply { manifest } => all.extend(manifest.expressions()),
            Self::Annotate { target: t, set } | Self::Label { target: t, set } => {
                target(&mut all, t);
                templates(&mut all, set.values().flatten());
            }
            Self::Cordon { node } | Self::Uncordon { node } | Self::Drain { node, .. } => {
                templates(&mut all, [node])
            }
            Self::Exec {
                namespace,
                pod,
                container,
                argv,
                ..
            } => templates(
                &mut all,
                [namespace, pod]
                    .into_iter()
                    .chain(container.iter())
                    .chain(argv.iter()),
            ),
            Self::Verify {
                expr, fail_when, ..
            } => {
                all.push(expr);
                all.extend(fail_when.iter());
            }
            Self::Gate => {}
            Self::Notify(message) | Self::Page(message) => templates(&mut all, [&message.text]),
            Self::Call { params, .. } => {
                for value in params.values() {
                    all.extend(value.expressions());
                }
            }
            Self::Capture(values) => all.extend(values.iter().map(|(_, value)| value)),
        }
        all
    }
}

/// What runs after the undos of a failed run.
#[derive(Clone, Debug)]
pub enum RollbackSpec {
    Named(NamedRollback),
    Runbook {
        name: String,
        params: BTreeMap<String, JsonTemplate>,
    },
    Steps(Vec<StepSpec>),
}

/// Built-in rollback actions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NamedRollback {
    /// Page the on-call engineer with the run's summary.
    PageOncall,
    /// Post the run's summary to the notification channel, without paging.
    NotifyOncall,
}

impl NamedRollback {
    pub const ALL: [(&'static str, NamedRollback); 2] = [
        ("page-oncall", Self::PageOncall),
        ("notify-oncall", Self::NotifyOncall),
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::PageOncall => "page-oncall",
            Self::NotifyOncall => "notify-oncall",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Self::PageOncall => "page the on-call engineer with the run's summary",
            Self::NotifyOncall => "notify the on-call channel with the run's summary",
        }
    }
}

pub use crate::kinds::default_api_version;
