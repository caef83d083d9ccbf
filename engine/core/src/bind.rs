//! Binding params: `--set k=v`, alert labels, and defaults, each checked against the param's
//! declared type, pattern and allowed values, and, where it opens a command's argument, for
//! looking like an option. A value that fails is refused here, before it can reach any
//! command; and params are only ever passed as values (argv elements, JSON strings), never as
//! code.
//!
//! Secrecy follows the value: a value a calling runbook bound from a secret is secret in the
//! runbook it calls, whatever that runbook's param says ([`Bindings::is_secret`]).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::alert::Alert;
use crate::check::validate_param;
use crate::diagnostic::did_you_mean;
use crate::runbook::{AlertField, ParamSpec, ParamValue, Runbook};

/// Where a bound value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    Set,
    /// `--set-file NAME=PATH`.
    File,
    /// The environment's `RUNBOOK_PARAM_<NAME>`.
    Environment,
    /// The runbook that called this one (a `runbook:` step or rollback).
    Caller,
    Alert,
    Default,
}

/// A value given for a param by name, as the command line (`--set`, `--set-file`, the
/// environment) or a calling runbook gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Given {
    pub name: String,
    pub value: String,
    pub origin: Origin,
    /// The value came from a secret (a calling runbook's secret param or fact), so it is
    /// secret here too.
    pub secret: bool,
}

impl Given {
    /// `--set name=value`.
    pub fn set(name: &str, value: &str) -> Self {
        Self {
            name: name.to_owned(),
            value: value.to_owned(),
            origin: Origin::Set,
            secret: false,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Bindings {
    pub values: BTreeMap<String, ParamValue>,
    pub origins: BTreeMap<String, Origin>,
    /// Params whose value is secret though the param is not declared so: a calling runbook
    /// bound them from a secret.
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub secret: BTreeSet<String>,
}

impl Bindings {
    /// Whether the value bound to `param` is secret: the param says so, or the value came
    /// from a secret.
    pub fn is_secret(&self, param: &ParamSpec) -> bool {
        param.secret || self.secret.contains(&param.name)
    }

    /// The params as a Rhai map, for evaluating expressions.
    pub fn to_rhai(&self) -> rhai::Map {
        self.values
            .iter()
            .map(|(name, value)| (name.as_str().into(), value.to_dynamic()))
            .collect()
    }
}

/// Parses `k=v` from the command line.
pub fn parse_set(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!("`--set {text}` is not `name=value`")),
    }
}

/// A param that could not be bound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindError {
    pub message: String,
    /// The param is required and nothing gave it a value (as opposed to a bad value).
    pub missing: bool,
}

impl std::fmt::Display for BindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Binds every param of `runbook`. Precedence: `--set`, then the alert, then the default.
/// Returns what could be bound and every problem, not just the first.
pub fn bind(
    runbook: &Runbook,
    sets: &[(String, String)],
    alert: Option<&Alert>,
) -> (Bindings, Vec<BindError>) {
    let given: Vec<Given> = sets
        .iter()
        .map(|(name, value)| Given::set(name, value))
        .collect();
    bind_given(runbook, &given, alert)
}

/// [`bind`] with values given by name from anywhere: the last one given for a param wins over
/// those before it, and all of them over the alert and the default.
pub fn bind_given(
    runbook: &Runbook,
    given: &[Given],
    alert: Option<&Alert>,
) -> (Bindings, Vec<BindError>) {
    let mut errors = Vec::new();
    let mut bindings = Bindings::default();
    let opening = runbook.params_opening_arguments();
    for Given { name, .. } in given {
        if runbook.param(name).is_none() {
            let help = did_you_mean(name, runbook.params.iter().map(|p| p.name.as_str()))
                .map(|h| format!("; {h}"))
                .unwrap_or_default();
            errors.push(BindError {
                message: format!("runbook `{}` has no param `{name}`{help}", runbook.name),
                missing: false,
            });
        }
    }
    for param in &runbook.params {
        let set = given.iter().rev().find(|given| given.name == param.name);
        let secret = param.secret || set.is_some_and(|given| given.secret);
        let from_alert = alert
            .zip(param.from.as_ref())
            .and_then(|(alert, field)| match field {
                AlertField::Labels(label) => alert.labels.get(label),
                AlertField::Annotations(annotation) => alert.annotations.get(annotation),
            });
        let (value, origin) = match (set, from_alert) {
            (Some(given), _) => (ParamValue::parse(param.kind, &given.value), given.origin),
            (None, Some(text)) => (ParamValue::parse(param.kind, text), Origin::Alert),
            (None, None) => match &param.default {
                Some(value) => (Ok(value.clone()), Origin::Default),
                None => {
                    if param.required {
                        let source = param
                            .from
                            .as_ref()
                            .map(|field| format!(" or an alert with `{field}`"))
                            .unwrap_or_default();
                        errors.push(BindError {
                            message: format!(
                                "param `{}` is required: pass `--set {}=VALUE`{source}",
                                param.name, param.name
                            ),
                            missing: true,
                        });
                    }
                    continue;
                }
            },
        };
        let checked = value.and_then(|value| {
            validate_param(&value, param.pattern.as_ref(), &param.allowed)?;
            match opening.get(&param.name) {
                Some(place) if !param.allow_option_like => refuse_option_like(&value, place)?,
                _ => {}
            }
            Ok(value)
        });
        match checked {
            Ok(value) => {
                bindings.values.insert(param.name.clone(), value);
                bindings.origins.insert(param.name.clone(), origin);
                if secret && !param.secret {
                    bindings.secret.insert(param.name.clone());
                }
            }
            Err(message) => {
                let origin = match origin {
                    Origin::Set => "--set".to_owned(),
                    Origin::File => "--set-file".to_owned(),
                    Origin::Environment => "the environment".to_owned(),
                    Origin::Caller => "the calling runbook".to_owned(),
                    Origin::Alert => param
                        .from
                        .as_ref()
                        .map_or_else(|| "the alert".to_owned(), ToString::to_string),
                    Origin::Default => "its default".to_owned(),
                };
                let message = if secret {
                    "the value was refused (secret, not shown)".to_owned()
                } else {
                    message
                };
                errors.push(BindError {
                    message: format!("param `{}` from {origin}: {message}", param.name),
                    missing: false,
                });
            }
        }
    }
    (bindings, errors)
}

/// A value that opens a command's argument (`run: [kubectl, delete, pod, "${params.pod}"]`)
/// and starts with `-` would be taken as an option (`--all`), so it is refused unless the param
/// says `allowOptionLike: true`. A value inside an argument (`--namespace=${params.namespace}`)
/// is only ever that argument's text: no shell runs a command.
fn refuse_option_like(value: &ParamValue, place: &str) -> Result<(), String> {
    let text = value.to_string();
    if text.starts_with('-') {
        return Err(format!(
            "`{text}` starts with `-` and opens an argument of a command in {place}, where it would be taken as an option; if the param may hold such values, give it `allowOptionLike: true`"
        ));
    }
    Ok(())
}
