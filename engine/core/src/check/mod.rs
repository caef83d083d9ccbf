//! The checker: typed documents in, a [`Catalog`] of checked runbooks out, with every semantic
//! problem reported at its position.
//!
//! It resolves names (facts from the runbook and from fact libraries, params, step ids,
//! called runbooks), compiles every expression once, parses durations, matchers and JSONPath,
//! finds dependency cycles, and lints mutating steps that have no way back. Like every stage it
//! keeps going after a problem, so one `validate` shows them all.
//!
//! [`check`] and `Checker::check_runbook` are written as the list of passes they run, each in
//! its file, in the order later passes need them:
//!
//! ```text
//!  functions     functions.rs    library functions, before any expression calls them
//!  libraries     facts.rs        fact libraries, before any runbook reads them
//!  names         mod.rs          unique runbook names; lints.rs: folder-name
//!  params        params.rs       names, `from:`, patterns, defaults
//!  facts         facts.rs        names, one source each, cycles (also self-reads)
//!  triggers      triggers.rs     matchers, cooldowns; preconditions
//!  steps, needs  steps.rs        ids, `needs`, cycles; when, timeout, retries, confirm
//!  actions       actions/        one file per action family, listed in actions::REGISTRY
//!  undo, lints   undo.rs         how each step is undone, missing-undo; rollback.rs;
//!                api_rules.rs    field-type (a value the API server refuses by type),
//!                                undo-refused (an undo it will not let happen);
//!                lints.rs        unused facts, unused `from:`, unknown `runbook:allow` codes,
//!                                params that reach a command's arguments unconstrained
//!  calls         calls.rs        once every runbook is known: targets, params, call cycles
//! ```
//!
//! Shared by the passes: positions.rs (pointers to file:line:col), expressions.rs (templates,
//! expressions and the names they read), graph.rs (cycles), names.rs (what a name looks like).
//! Every diagnostic names its [`Code`] from the registry in `diagnostic::code`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use petgraph::graph::DiGraph;

use crate::diagnostic::{did_you_mean, Code, Diagnostic, Diagnostics};
use crate::document::{self, Command, Confirm, PatchType, Retries};
use crate::expr::{Expression, Template, TemplateError};
use crate::loader::{Loaded, Workspace};
use crate::matcher::Matcher;
use crate::runbook::*;
use crate::source::{Position, Source, Span};
use crate::yaml::Node;

mod actions;
mod api_rules;
mod calls;
mod expressions;
mod facts;
mod functions;
mod graph;
mod lints;
mod names;
mod params;
mod positions;
mod rollback;
mod steps;
#[cfg(test)]
mod tests;
mod triggers;
mod undo;

use actions::action_keywords;
use calls::Call;
pub use facts::facts_read;
use facts::resolve_fact;
use functions::LibraryFunctions;
use graph::cycles;
use names::{escape_pointer, is_builtin_group, is_dns_label, is_identifier, is_step_id};
pub use params::validate_param;
use positions::At;
use undo::irreversible;

/// A comment that silences one lint for the step that follows it (or that it ends):
/// `# runbook:allow missing-undo <reason>`.
const ALLOW_PRAGMA: &str = "runbook:allow";

/// Whether `name` is one a runbook may have (`metadata.name`: a DNS label), for names that come
/// from elsewhere, such as a journal's.
pub fn is_runbook_name(name: &str) -> bool {
    is_dns_label(name)
}

/// Checks everything in `workspace`, pass by pass. Each pass reports what it finds and goes on,
/// so one `validate` shows every problem.
pub fn check(workspace: &Workspace, diagnostics: &mut Diagnostics) -> Catalog {
    let mut checker = Checker {
        diagnostics,
        fact_sites: BTreeMap::new(),
        reserved_in_fact_names: BTreeSet::new(),
        command_params: Vec::new(),
        captured_vars: BTreeMap::new(),
        main_step_ids: Vec::new(),
        typed_uses: Vec::new(),
        functions: Arc::new(LibraryFunctions::default()),
    };
    // 0. Library functions, which every expression may call.
    checker.functions = Arc::new(checker.check_functions(&workspace.libraries));
    // 1. Fact libraries, which every runbook may read.
    let library_facts = checker.check_libraries(&workspace.libraries);
    // 2. Runbook names, which must be unique; the first in file order wins.
    let unique = checker.unique_runbooks(&workspace.runbooks);
    // 3. Each runbook on its own (params, facts, triggers, steps and needs, actions, undo and
    //    lints; see `check_runbook`).
    let (runbooks, calls) = checker.check_each_runbook(&unique, &library_facts);
    let mut catalog = Catalog {
        runbooks,
        library_facts: library_facts
            .into_iter()
            .map(|(name, fact)| (name, fact.spec))
            .collect(),
        functions: checker.functions.specs.clone(),
    };
    // 4. Calls between runbooks, once every runbook is known.
    checker.check_calls(&catalog, &calls);
    // 5. A file with any error (a duplicate key, a bad apiVersion, a call to a runbook that does
    //    not exist) yields no runbook to plan or run.
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

impl Checker<'_> {
    /// The runbooks whose names are not taken by an earlier one.
    fn unique_runbooks<'w>(
        &mut self,
        runbooks: &'w [Loaded<document::RunbookDocument>],
    ) -> Vec<&'w Loaded<document::RunbookDocument>> {
        let mut names: HashMap<String, (Source, Span)> = HashMap::new();
        let mut unique = Vec::new();
        for loaded in runbooks {
            let at = At::of(loaded);
            let name = &loaded.document.metadata.name;
            if let Some((source, span)) = names.get(name) {
                self.diagnostics.push(
                    Diagnostic::error(
                        Code::DuplicateRunbook,
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
        unique
    }

    /// Runbooks are independent, so they are checked on every core and merged in file order,
    /// which keeps the output identical to a sequential check.
    fn check_each_runbook(
        &mut self,
        unique: &[&Loaded<document::RunbookDocument>],
        library: &BTreeMap<String, KnownFact>,
    ) -> (Vec<Arc<Runbook>>, Vec<Call>) {
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, unique.len().max(1));
        let chunk = unique.len().div_ceil(workers).max(1);
        let functions = &self.functions;
        let parts: Vec<CheckedPart> = std::thread::scope(|scope| {
            let handles: Vec<_> = unique
                .chunks(chunk)
                .map(|part| scope.spawn(move || check_runbooks(part, library, functions)))
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
            self.diagnostics.extend(part_diagnostics);
            calls.extend(part_calls);
        }
        (runbooks, calls)
    }
}

/// What one worker of [`check`] found.
type CheckedPart = (Vec<Arc<Runbook>>, Diagnostics, Vec<Call>);

fn check_runbooks(
    part: &[&Loaded<document::RunbookDocument>],
    library: &BTreeMap<String, KnownFact>,
    functions: &Arc<LibraryFunctions>,
) -> CheckedPart {
    let mut diagnostics = Diagnostics::new();
    let mut calls = Vec::new();
    let mut runbooks = Vec::new();
    let mut checker = Checker {
        diagnostics: &mut diagnostics,
        fact_sites: BTreeMap::new(),
        reserved_in_fact_names: BTreeSet::new(),
        command_params: Vec::new(),
        captured_vars: BTreeMap::new(),
        main_step_ids: Vec::new(),
        typed_uses: Vec::new(),
        functions: functions.clone(),
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
    /// Where its definition first reads each fact it reads, to point at a cycle's link.
    reads_at: Arc<BTreeMap<String, (Source, Span)>>,
}

/// What an expression may read.
#[derive(Clone, Copy)]
struct Scope<'a> {
    facts: &'a BTreeSet<String>,
    /// Declared params; `None` in fact libraries, where any `params.x` is allowed and recorded.
    params: Option<&'a [String]>,
    /// Names that are bound by the action itself, such as `object` in `wait.until`, or by the
    /// step (`item` in a `forEach`).
    locals: &'a [&'a str],
    /// What the run has made so far (`vars`, `steps`), readable in steps only: facts and
    /// preconditions are read before any step ran.
    run: Option<&'a RunNames>,
}

/// The names `vars.NAME` and `steps.<id>` may take in a runbook's steps.
struct RunNames {
    /// Every name a `capture` step of the runbook captures.
    vars: BTreeSet<String>,
    /// The runbook's step ids (and, in rollback steps, theirs).
    steps: Vec<String>,
    /// Names captured where the step cannot count on them (by a step it does not wait for,
    /// or later in its own capture): why, and the fix.
    unsure: BTreeMap<String, (String, String)>,
}

/// What one or more expressions read.
#[derive(Default)]
struct Reads {
    facts: BTreeSet<String>,
    params: BTreeSet<String>,
    /// Library functions called, through others too.
    functions: BTreeSet<String>,
}

struct Checker<'d> {
    diagnostics: &'d mut Diagnostics,
    /// Where each fact is first read in the runbook being checked, for later errors.
    fact_sites: BTreeMap<String, (Source, Span)>,
    /// Where params are read inside a command's arguments (`run`, `exec`, `command` facts) in
    /// the runbook being checked, in file order, for the lint on unconstrained params.
    command_params: Vec<(String, Span)>,
    /// Reserved words of the expression language that facts are named with (`sync` in
    /// `sync.status`): reported once at the fact, not again at every expression that reads it.
    reserved_in_fact_names: BTreeSet<String>,
    /// The names the runbook being checked captures, each with where it first is and the
    /// position of the step that captures it.
    captured_vars: BTreeMap<String, (Span, usize)>,
    /// The ids of the runbook's steps, once checked, for the rollback's `steps.<id>`.
    main_step_ids: Vec<String>,
    /// Templates that are exactly `${params.NAME}` in fields of a known type, in the runbook
    /// being checked, for the lint that compares them with their params' types.
    typed_uses: Vec<api_rules::TypedUse>,
    /// The catalog's library functions, which every expression may call.
    functions: Arc<LibraryFunctions>,
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

    fn error(&mut self, code: Code, at: At<'_>, span: Span, message: impl Into<String>) {
        self.diagnostics
            .push(Diagnostic::error(code, at.source, span, message));
    }

    fn error_help(
        &mut self,
        code: Code,
        at: At<'_>,
        span: Span,
        message: impl Into<String>,
        help: Option<String>,
    ) {
        self.diagnostics
            .push(Diagnostic::error(code, at.source, span, message).with_help_opt(help));
    }

    /// One runbook, pass by pass, in the order later passes need: params before the facts and
    /// expressions that read them, facts before steps, step ids before `needs`, every read
    /// known before the unused-fact lint.
    fn check_runbook(
        &mut self,
        loaded: &Loaded<document::RunbookDocument>,
        library: &BTreeMap<String, KnownFact>,
        calls: &mut Vec<Call>,
    ) -> Option<Runbook> {
        let at = At::of(loaded);
        let document = &loaded.document;
        let spec = &document.spec;
        let name = &document.metadata.name;
        let before = self.diagnostics.error_count();
        self.fact_sites.clear();
        self.command_params.clear();
        self.main_step_ids.clear();
        self.collect_captured_vars(at, &spec.steps);
        self.typed_uses.clear();

        self.check_runbook_name(at, name);
        self.lint_folder_name(at, name);
        self.lint_allow_comments(at);
        let (params, param_names) = self.check_params(at, &spec.params);
        let local = self.check_runbook_facts(at, &spec.facts, library, &param_names);
        let scope = Scope {
            facts: &local.visible,
            params: Some(&param_names),
            locals: &[],
            run: None,
        };
        let mut reads = Reads::default();
        for fact in local.checked.values() {
            reads.facts.extend(fact.spec.reads.iter().cloned());
        }
        let triggers = self.check_triggers(at, &spec.triggers);
        self.lint_unused_from(at, &params, &triggers);
        let preconditions = self.check_preconditions(at, &spec.preconditions, &scope, &mut reads);
        if spec.steps.is_empty() {
            self.error_help(
                Code::NoSteps,
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
        let rollback =
            self.check_rollback(at, spec.rollback.as_ref(), &scope, &mut reads, calls, name);
        self.lint_params_in_commands(at, &params);
        self.lint_typed_params(at, &params);
        if self.diagnostics.error_count() == before {
            self.lint_unused_facts(at, &spec.facts, &local, &reads);
        }
        let facts = self.facts_read_through(at, &reads, &local.known, &param_names);
        let functions = reads
            .functions
            .iter()
            .chain(facts.values().flat_map(|fact| fact.functions.iter()))
            .filter_map(|name| {
                let spec = self.functions.specs.get(name)?;
                Some((name.clone(), spec.clone()))
            })
            .collect();

        if self.diagnostics.error_count() > before {
            return None;
        }
        if steps.len() != spec.steps.len() {
            // Every step that fails its check says why; this guards the invariant the
            // compiler relies on (step N of the plan is step N of the file).
            self.error(
                Code::Internal,
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
            annotations: document.metadata.annotations.clone(),
            source: at.source.clone(),
            span: at.span("/metadata/name"),
            params,
            triggers,
            facts,
            functions,
            preconditions,
            steps,
            rollback,
        })
    }

    fn check_runbook_name(&mut self, at: At<'_>, name: &str) {
        if !is_dns_label(name) {
            self.error_help(
                Code::RunbookName,
                at,
                at.span("/metadata/name"),
                format!("invalid runbook name `{name}`"),
                Some("use lowercase letters, digits and `-`, starting and ending with a letter or digit (at most 63)".to_owned()),
            );
        }
    }
}
