//! The checker: typed documents in, a [`Catalog`] of checked runbooks out, with every semantic
//! problem reported at its position.
//!
//! It resolves names (facts from the runbook and from fact libraries, params, step ids,
//! called runbooks), compiles every expression once, parses durations, matchers and JSONPath,
//! finds dependency cycles, and lints mutating steps that have no way back. Like every stage it
//! keeps going after a problem, so one `validate` shows them all.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use petgraph::graph::DiGraph;

use crate::diagnostic::{did_you_mean, Diagnostic, Diagnostics};
use crate::document::{self, Command, Confirm, PatchType, Retries};
use crate::expr::{Expression, Template, TemplateError};
use crate::loader::{Loaded, Workspace};
use crate::matcher::Matcher;
use crate::runbook::*;
use crate::source::{Position, Source, Span};
use crate::yaml::Node;

mod actions;
mod calls;
mod expressions;
mod facts;
mod graph;
mod names;
mod params;
mod positions;
mod steps;
#[cfg(test)]
mod tests;
mod undo;

use actions::action_keywords;
use calls::Call;
pub use facts::facts_read;
use facts::resolve_fact;
use graph::cycles;
use names::{escape_pointer, is_builtin_group, is_dns_label, is_identifier, is_step_id};
pub use params::validate_param;
use positions::At;

/// A comment that silences one lint for the step that follows it (or that it ends):
/// `# runbook:allow missing-undo <reason>`.
const ALLOW_PRAGMA: &str = "runbook:allow";

/// Checks everything in `workspace`.
pub fn check(workspace: &Workspace, diagnostics: &mut Diagnostics) -> Catalog {
    let mut checker = Checker {
        diagnostics,
        fact_sites: BTreeMap::new(),
    };
    let library_facts = checker.check_libraries(&workspace.libraries);
    // Names first (cheap, and file order decides which duplicate is reported), then each
    // runbook on its own: they are independent, so they are checked on every core and merged
    // in file order, which keeps the output identical to a sequential check.
    let mut names: HashMap<String, (Source, Span)> = HashMap::new();
    let mut unique = Vec::new();
    for loaded in &workspace.runbooks {
        let at = At::of(loaded);
        let name = &loaded.document.metadata.name;
        if let Some((source, span)) = names.get(name) {
            checker.diagnostics.push(
                Diagnostic::error(
                    "duplicate-runbook",
                    &loaded.source,
                    at.span("/metadata/name"),
                    format!(
                        "runbook `{name}` is already defined at {}:{}:{}",
                        source.path().display(),
                        span.start.line,
                        span.start.column
                    ),
                )
                .with_help("runbook names must be unique across the runbooks folder"),
            );
            continue;
        }
        names.insert(
            name.clone(),
            (loaded.source.clone(), at.span("/metadata/name")),
        );
        unique.push(loaded);
    }
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, unique.len().max(1));
    let chunk = unique.len().div_ceil(workers).max(1);
    let library = &library_facts;
    let parts: Vec<CheckedPart> = std::thread::scope(|scope| {
        let handles: Vec<_> = unique
            .chunks(chunk)
            .map(|part| scope.spawn(move || check_runbooks(part, library)))
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    let mut runbooks = Vec::new();
    let mut calls = Vec::new();
    for (part_runbooks, part_diagnostics, part_calls) in parts {
        runbooks.extend(part_runbooks);
        checker.diagnostics.extend(part_diagnostics);
        calls.extend(part_calls);
    }
    let mut catalog = Catalog {
        runbooks,
        library_facts: library_facts
            .into_iter()
            .map(|(name, fact)| (name, fact.spec))
            .collect(),
    };
    checker.check_calls(&catalog, &calls);
    // A file with any error (a duplicate key, a bad apiVersion, a call to a runbook that does
    // not exist) yields no runbook to plan or run.
    let broken: BTreeSet<std::path::PathBuf> = checker
        .diagnostics
        .iter()
        .filter(|d| d.severity == crate::diagnostic::Severity::Error)
        .map(|d| d.path().to_path_buf())
        .collect();
    catalog
        .runbooks
        .retain(|runbook| !broken.contains(runbook.source.path()));
    catalog
}

/// What one worker of [`check`] found.
type CheckedPart = (Vec<Arc<Runbook>>, Diagnostics, Vec<Call>);

fn check_runbooks(
    part: &[&Loaded<document::RunbookDocument>],
    library: &BTreeMap<String, KnownFact>,
) -> CheckedPart {
    let mut diagnostics = Diagnostics::new();
    let mut calls = Vec::new();
    let mut runbooks = Vec::new();
    let mut checker = Checker {
        diagnostics: &mut diagnostics,
        fact_sites: BTreeMap::new(),
    };
    for loaded in part {
        let before = checker.diagnostics.len();
        let runbook = checker.check_runbook(loaded, library, &mut calls);
        checker.drop_cascades(before, loaded);
        // A document whose structure was damaged is checked for meaning, but never compiled.
        if let Some(runbook) = runbook.filter(|_| loaded.damaged.is_empty()) {
            runbooks.push(Arc::new(runbook));
        }
    }
    (runbooks, diagnostics, calls)
}

/// A fact as the checker knows it while checking: its spec and where it was defined.
#[derive(Clone)]
struct KnownFact {
    spec: Arc<FactSpec>,
}

/// What an expression may read.
struct Scope<'a> {
    facts: &'a BTreeSet<String>,
    /// Declared params; `None` in fact libraries, where any `params.x` is allowed and recorded.
    params: Option<&'a [String]>,
    /// Names that are bound by the action itself, such as `object` in `wait.until`.
    locals: &'a [&'a str],
}

/// What one or more expressions read.
#[derive(Default)]
struct Reads {
    facts: BTreeSet<String>,
    params: BTreeSet<String>,
}

struct Checker<'d> {
    diagnostics: &'d mut Diagnostics,
    /// Where each fact is first read in the runbook being checked, for later errors.
    fact_sites: BTreeMap<String, (Source, Span)>,
}

impl Checker<'_> {
    /// Drops what was reported since `before` inside objects the structure check damaged:
    /// those are echoes of a problem already reported, not new ones.
    fn drop_cascades<T>(&mut self, before: usize, loaded: &Loaded<T>) {
        if loaded.damaged.is_empty() {
            return;
        }
        let added = self.diagnostics.split_off(before);
        for diagnostic in added {
            let inside = diagnostic.path() == loaded.source.path()
                && loaded.damaged.iter().any(|span| {
                    span.start <= diagnostic.span.start && diagnostic.span.start < span.end
                });
            if !inside {
                self.diagnostics.push(diagnostic);
            }
        }
    }

    fn error(&mut self, code: &'static str, at: At<'_>, span: Span, message: impl Into<String>) {
        self.diagnostics
            .push(Diagnostic::error(code, at.source, span, message));
    }

    fn error_help(
        &mut self,
        code: &'static str,
        at: At<'_>,
        span: Span,
        message: impl Into<String>,
        help: Option<String>,
    ) {
        self.diagnostics
            .push(Diagnostic::error(code, at.source, span, message).with_help_opt(help));
    }


    fn check_runbook(
        &mut self,
        loaded: &Loaded<document::RunbookDocument>,
        library: &BTreeMap<String, KnownFact>,
        calls: &mut Vec<Call>,
    ) -> Option<Runbook> {
        let at = At::of(loaded);
        let document = &loaded.document;
        let spec = &document.spec;
        let before = self.diagnostics.error_count();
        self.fact_sites.clear();

        let name = &document.metadata.name;
        if !is_dns_label(name) {
            self.error_help(
                "runbook-name",
                at,
                at.span("/metadata/name"),
                format!("invalid runbook name `{name}`"),
                Some("use lowercase letters, digits and `-`, starting and ending with a letter or digit (at most 63)".to_owned()),
            );
        }

        // Params.
        let mut params = Vec::new();
        let mut param_names: Vec<String> = Vec::new();
        for (index, param) in spec.params.iter().enumerate() {
            let pointer = format!("/spec/params/{index}");
            if param_names.contains(&param.name) {
                self.error(
                    "duplicate-param",
                    at,
                    at.span(&format!("{pointer}/name")),
                    format!("param `{}` is declared twice", param.name),
                );
                continue;
            }
            param_names.push(param.name.clone());
            if let Some(checked) = self.check_param(at, &pointer, param) {
                params.push(checked);
            }
        }

        // Facts: the runbook's own, beside the libraries'.
        let mut names: BTreeMap<String, (Source, Span)> = library
            .iter()
            .map(|(name, fact)| (name.clone(), (fact.spec.origin.clone(), fact.spec.span)))
            .collect();
        let mut local_names = Vec::new();
        for (index, fact) in spec.facts.iter().enumerate() {
            let pointer = format!("/spec/facts/{index}/name");
            if self.check_fact_name(at, &pointer, &fact.name)
                && self.claim_fact_name(at, &pointer, &fact.name, &mut names)
            {
                local_names.push(fact.name.clone());
            }
        }
        let local_only: BTreeMap<String, (Source, Span)> = names
            .iter()
            .filter(|(name, _)| {
                local_names.iter().any(|local| {
                    local == *name
                        || local.starts_with(&format!("{name}."))
                        || name.starts_with(&format!("{local}."))
                })
            })
            .map(|(name, site)| (name.clone(), site.clone()))
            .collect();
        self.check_fact_nesting(&local_only);
        let visible: BTreeSet<String> = names.keys().cloned().collect();
        let scope = Scope {
            facts: &visible,
            params: Some(&param_names),
            locals: &[],
        };
        let mut known: BTreeMap<String, KnownFact> = library.clone();
        for (index, fact) in spec.facts.iter().enumerate() {
            if !local_names.contains(&fact.name) {
                continue;
            }
            if let Some(checked) =
                self.check_fact(at, &format!("/spec/facts/{index}"), fact, &scope)
            {
                known.insert(
                    fact.name.clone(),
                    KnownFact {
                        spec: Arc::new(checked),
                    },
                );
            }
        }
        let local_known: BTreeMap<String, KnownFact> = known
            .iter()
            .filter(|(name, _)| local_names.contains(name))
            .map(|(name, fact)| (name.clone(), fact.clone()))
            .collect();
        self.check_fact_cycles(&local_known);

        let mut reads = Reads::default();
        for fact in local_known.values() {
            reads.facts.extend(fact.spec.reads.iter().cloned());
        }

        // Triggers.
        let mut triggers = Vec::new();
        for (index, trigger) in spec.triggers.iter().enumerate() {
            let pointer = format!("/spec/triggers/{index}");
            let mut matchers = Vec::new();
            for (m, text) in trigger.matchers.iter().enumerate() {
                let p = format!("{pointer}/matchers/{m}");
                match Matcher::parse(text) {
                    Ok(matcher) => matchers.push(matcher),
                    Err(error) => {
                        let span = self.offset_span(at, &p, text, error.offset);
                        self.error_help(
                            "matcher",
                            at,
                            span,
                            format!("invalid label matcher `{text}`: {}", error.message),
                            Some("use Alertmanager's syntax: `severity=\"critical\"`, `namespace=~\"team-.*\"`, `env!=\"dev\"`".to_owned()),
                        );
                    }
                }
            }
            if trigger.alert_name.trim().is_empty() {
                self.error(
                    "trigger",
                    at,
                    at.span(&format!("{pointer}/alertName")),
                    "`alertName` is empty",
                );
            }
            let cooldown = trigger
                .cooldown
                .as_ref()
                .and_then(|text| self.duration(at, &format!("{pointer}/cooldown"), text));
            triggers.push(TriggerSpec {
                alert_name: trigger.alert_name.clone(),
                matchers,
                cooldown,
                auto_approve: trigger.auto_approve,
                span: at.span(&pointer),
            });
        }
        for param in &params {
            if param.from.is_some() && triggers.is_empty() {
                self.diagnostics.push(
                    Diagnostic::warning(
                        "unused-from",
                        at.source,
                        param.span,
                        format!(
                            "param `{}` is bound from an alert, but the runbook has no triggers",
                            param.name
                        ),
                    )
                    .with_help("add a trigger under `triggers:`, or drop `from:`"),
                );
            }
        }

        // Preconditions.
        let mut preconditions = Vec::new();
        for (index, precondition) in spec.preconditions.iter().enumerate() {
            let pointer = format!("/spec/preconditions/{index}/check");
            if let Some(expr) =
                self.expression(at, &pointer, &precondition.check, &scope, &mut reads)
            {
                preconditions.push(Check {
                    expr,
                    message: precondition.message.clone(),
                    span: at.span(&pointer),
                });
            }
        }

        // Steps.
        if spec.steps.is_empty() {
            self.error_help(
                "no-steps",
                at,
                at.key_span("/spec/steps"),
                "a runbook needs at least one step",
                Some("add a step under `steps:`".to_owned()),
            );
        }
        let steps = self.check_steps(
            at,
            "/spec/steps",
            &spec.steps,
            &scope,
            &mut reads,
            calls,
            name,
            false,
        );

        // Rollback.
        let rollback = match &spec.rollback {
            None => None,
            Some(document::Rollback::Named(text)) => {
                match NamedRollback::ALL.iter().find(|(n, _)| n == text) {
                    Some((_, named)) => Some(RollbackSpec::Named(*named)),
                    None => {
                        self.error_help(
                        "rollback",
                        at,
                        at.span("/spec/rollback"),
                        format!("unknown rollback action `{text}`, expected `page-oncall`, `notify-oncall`, `{{runbook: NAME}}` or a list of steps"),
                        did_you_mean(text, NamedRollback::ALL.iter().map(|(n, _)| *n)),
                    );
                        None
                    }
                }
            }
            Some(document::Rollback::Runbook(call)) => {
                let params = self.json_params(
                    at,
                    "/spec/rollback/params",
                    &call.params,
                    &scope,
                    &mut reads,
                );
                calls.push(Call {
                    from: name.clone(),
                    to: call.runbook.clone(),
                    params: call.params.keys().cloned().collect(),
                    source: at.source.clone(),
                    span: at.span("/spec/rollback/runbook"),
                });
                Some(RollbackSpec::Runbook {
                    name: call.runbook.clone(),
                    params,
                })
            }
            Some(document::Rollback::Steps(list)) => {
                let steps = self.check_steps(
                    at,
                    "/spec/rollback",
                    list,
                    &scope,
                    &mut reads,
                    calls,
                    name,
                    true,
                );
                Some(RollbackSpec::Steps(steps))
            }
        };

        // Local facts nothing reads are likely a typo or left over.
        for (index, fact) in spec.facts.iter().enumerate() {
            let read_by_others = local_known
                .values()
                .any(|other| other.spec.reads.contains(&fact.name));
            if self.diagnostics.error_count() == before
                && local_names.contains(&fact.name)
                && !reads.facts.contains(&fact.name)
                && !read_by_others
            {
                self.diagnostics.push(
                    Diagnostic::warning("unused-fact", at.source, at.span(&format!("/spec/facts/{index}/name")), format!("fact `{}` is never read", fact.name))
                        .with_help("read it in a precondition, `when`, `verify` or a `${...}` template, or remove it"),
                );
            }
        }

        // Every fact read, through other facts too.
        let mut facts = BTreeMap::new();
        let mut pending: Vec<String> = reads.facts.iter().cloned().collect();
        let mut via: BTreeMap<String, String> = BTreeMap::new();
        while let Some(fact_name) = pending.pop() {
            if facts.contains_key(&fact_name) {
                continue;
            }
            if let Some(fact) = known.get(&fact_name) {
                // A fact read through another is reported where the first one is read.
                if let Some(site) = self.fact_sites.get(&fact_name).cloned() {
                    for read in &fact.spec.reads {
                        self.fact_sites
                            .entry(read.clone())
                            .or_insert_with(|| site.clone());
                        via.entry(read.clone()).or_insert_with(|| fact_name.clone());
                    }
                }
                pending.extend(fact.spec.reads.iter().cloned());
                for param in &fact.spec.params {
                    if !param_names.contains(param) {
                        let (source, span) = self
                            .fact_sites
                            .get(&fact_name)
                            .cloned()
                            .unwrap_or_else(|| (at.source.clone(), at.span("/metadata/name")));
                        self.diagnostics.push(
                            Diagnostic::error(
                                "undefined-param",
                                &source,
                                span,
                                format!(
                                    "fact `{fact_name}` ({}:{}){} reads `params.{param}`, which this runbook does not declare",
                                    fact.spec.origin.path().display(),
                                    fact.spec.span.start.line,
                                    via.get(&fact_name).map(|reader| format!(", read through `{reader}`,")).unwrap_or_default(),
                                ),
                            )
                            .with_help(format!("declare it under `params:`: `- name: {param}`")),
                        );
                    }
                }
                facts.insert(fact_name, fact.spec.clone());
            }
        }

        if self.diagnostics.error_count() > before {
            return None;
        }
        if steps.len() != spec.steps.len() {
            // Every step that fails its check says why; this guards the invariant the
            // compiler relies on (step N of the plan is step N of the file).
            self.error(
                "internal",
                at,
                at.key_span("/spec/steps"),
                "a step could not be checked; please report this runbook",
            );
            return None;
        }
        Some(Runbook {
            name: name.clone(),
            namespace: document.metadata.namespace.clone(),
            api_version: document.api_version.clone(),
            description: spec.description.clone(),
            owner: spec.owner.clone(),
            tags: spec.tags.clone(),
            source: at.source.clone(),
            span: at.span("/metadata/name"),
            params,
            triggers,
            facts,
            preconditions,
            steps,
            rollback,
        })
    }
}
