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

/// Positions inside one document.
#[derive(Clone, Copy)]
struct At<'a> {
    source: &'a Source,
    root: &'a Node,
}

impl<'a> At<'a> {
    fn of<T>(loaded: &'a Loaded<T>) -> Self {
        Self {
            source: &loaded.source,
            root: &loaded.root,
        }
    }

    fn span(&self, pointer: &str) -> Span {
        let mut pointer = pointer;
        loop {
            if let Some(node) = self.root.pointer(pointer) {
                return node.span;
            }
            match pointer.rsplit_once('/') {
                Some((parent, _)) => pointer = parent,
                None => return self.root.span,
            }
        }
    }

    fn key_span(&self, pointer: &str) -> Span {
        self.root
            .key_span(pointer)
            .unwrap_or_else(|| self.span(pointer))
    }

    /// Maps a 1-based line/column inside `text` (an expression or template written at
    /// `pointer`) to its place in the file, whatever the scalar's quoting or block style.
    fn inside(&self, pointer: &str, text: &str, line: usize, column: usize) -> Span {
        let node_span = self.span(pointer);
        let line_text = text.lines().nth(line.saturating_sub(1)).unwrap_or("");
        let lines = text.lines().count() + 2;
        let characters: Vec<char> = line_text.chars().collect();
        let target = column.saturating_sub(1).min(characters.len());
        // Candidates: the whole line; then short pieces right at and right before the column,
        // which still match when quoting, escapes or folding changed the rest of the line.
        let lead = characters.iter().take_while(|c| c.is_whitespace()).count();
        let mut candidates: Vec<(String, usize)> =
            vec![(line_text.trim().to_owned(), target.saturating_sub(lead))];
        for width in [12, 6, 3] {
            let after: String = characters[target..(target + width).min(characters.len())]
                .iter()
                .collect();
            if !after.trim().is_empty() && after.chars().count() == width {
                candidates.push((after, 0));
            }
            let start = target.saturating_sub(width);
            let before: String = characters[start..target].iter().collect();
            if before.chars().count() == width && !before.trim().is_empty() {
                candidates.push((before, width));
            }
        }
        for (needle, offset) in candidates {
            if let Some(found) = self.source.find_after(&needle, node_span.start, lines) {
                return Span::point(Position::new(found.line, found.column + offset));
            }
        }
        Span::point(node_span.start)
    }

    /// Whether a `# runbook:allow CODE reason` comment on the line of `span` or the line
    /// before waives the lint `code`; `Some(reason)` if so (the reason may be absent).
    fn allowed(&self, span: Span, code: &str) -> Option<Option<String>> {
        [span.start.line.saturating_sub(1), span.start.line]
            .iter()
            .find_map(|line| {
                let text = self.source.line(*line)?;
                let comment = &text[text.find('#')?..];
                let rest = &comment[comment.find(ALLOW_PRAGMA)? + ALLOW_PRAGMA.len()..];
                let rest = rest.trim_start().strip_prefix(code)?;
                let reason = rest.trim().trim_start_matches(['-', '—', ':']).trim();
                Some((!reason.is_empty()).then(|| reason.to_owned()))
            })
    }
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

/// A `runbook:` call or runbook rollback, checked once every runbook is known.
struct Call {
    from: String,
    to: String,
    params: Vec<String>,
    source: Source,
    span: Span,
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

    // ----- fact libraries -------------------------------------------------------------------

    fn check_libraries(
        &mut self,
        libraries: &[Loaded<document::FactLibraryDocument>],
    ) -> BTreeMap<String, KnownFact> {
        let mut names: BTreeMap<String, (Source, Span)> = BTreeMap::new();
        let mut library_names: HashMap<String, (Source, Span)> = HashMap::new();
        for loaded in libraries {
            let at = At::of(loaded);
            let library_name = &loaded.document.metadata.name;
            if let Some((source, span)) = library_names.get(library_name) {
                let message = format!(
                    "fact library `{library_name}` is already defined at {}:{}:{}",
                    source.path().display(),
                    span.start.line,
                    span.start.column
                );
                self.error("duplicate-library", at, at.span("/metadata/name"), message);
            } else {
                library_names.insert(
                    library_name.clone(),
                    (loaded.source.clone(), at.span("/metadata/name")),
                );
            }
            for (index, fact) in loaded.document.spec.facts.iter().enumerate() {
                let pointer = format!("/spec/facts/{index}/name");
                if self.check_fact_name(at, &pointer, &fact.name) {
                    self.claim_fact_name(at, &pointer, &fact.name, &mut names);
                }
            }
        }
        self.check_fact_nesting(&names);
        let visible: BTreeSet<String> = names.keys().cloned().collect();
        let mut facts = BTreeMap::new();
        for loaded in libraries {
            let at = At::of(loaded);
            let before = self.diagnostics.len();
            for (index, fact) in loaded.document.spec.facts.iter().enumerate() {
                if facts.contains_key(&fact.name) || !visible.contains(&fact.name) {
                    continue;
                }
                let scope = Scope {
                    facts: &visible,
                    params: None,
                    locals: &[],
                };
                if let Some(spec) =
                    self.check_fact(at, &format!("/spec/facts/{index}"), fact, &scope)
                {
                    facts.insert(
                        fact.name.clone(),
                        KnownFact {
                            spec: Arc::new(spec),
                        },
                    );
                }
            }
            self.drop_cascades(before, loaded);
        }
        self.check_fact_cycles(&facts);
        facts
    }

    fn check_fact_name(&mut self, at: At<'_>, pointer: &str, name: &str) -> bool {
        let span = at.span(pointer);
        if name.split('.').any(|segment| !is_identifier(segment)) {
            self.error_help(
                "fact-name",
                at,
                span,
                format!("invalid fact name `{name}`"),
                Some("use dotted lowercase words, such as `openbao.status` (letters, digits and `_`)".to_owned()),
            );
            return false;
        }
        let root = name.split('.').next().unwrap_or(name);
        if RESERVED_ROOTS.contains(&root) {
            self.error_help(
                "fact-name",
                at,
                span,
                format!("fact name `{name}` starts with the reserved name `{root}`"),
                Some(format!(
                    "`{root}` is bound by the engine; choose another first word"
                )),
            );
            return false;
        }
        true
    }

    fn claim_fact_name(
        &mut self,
        at: At<'_>,
        pointer: &str,
        name: &str,
        names: &mut BTreeMap<String, (Source, Span)>,
    ) -> bool {
        if let Some((source, span)) = names.get(name) {
            let message = format!(
                "fact `{name}` is already defined at {}:{}:{}",
                source.path().display(),
                span.start.line,
                span.start.column
            );
            self.error_help(
                "duplicate-fact",
                at,
                at.span(pointer),
                message,
                Some(
                    "give each fact one definition; runbooks can read library facts directly"
                        .to_owned(),
                ),
            );
            return false;
        }
        names.insert(name.to_owned(), (at.source.clone(), at.span(pointer)));
        true
    }

    /// A fact cannot sit inside another: `a.b` holds a value, so `a.b.c` has nowhere to go.
    fn check_fact_nesting(&mut self, names: &BTreeMap<String, (Source, Span)>) {
        let all: Vec<&String> = names.keys().collect();
        for name in &all {
            let prefix = format!("{name}.");
            for inner in all.iter().filter(|other| other.starts_with(&prefix)) {
                let (source, span) = &names[*inner];
                self.diagnostics.push(
                    Diagnostic::error(
                        "fact-name",
                        source,
                        *span,
                        format!("fact `{inner}` is inside fact `{name}`, which already holds a value"),
                    )
                    .with_help(format!("read `{name}` and select the field in the expression instead, or rename one of them")),
                );
            }
        }
    }

    fn check_fact_cycles(&mut self, facts: &BTreeMap<String, KnownFact>) {
        let mut graph = DiGraph::<&str, ()>::new();
        let indices: BTreeMap<&str, _> = facts
            .keys()
            .map(|name| (name.as_str(), graph.add_node(name.as_str())))
            .collect();
        for (name, fact) in facts {
            for read in &fact.spec.reads {
                if let Some(target) = indices.get(read.as_str()) {
                    graph.add_edge(indices[name.as_str()], *target, ());
                }
            }
        }
        for cycle in cycles(&graph) {
            let first = cycle[0];
            let fact = &facts[first];
            let path = cycle
                .iter()
                .chain(std::iter::once(&first))
                .copied()
                .collect::<Vec<_>>()
                .join(" -> ");
            self.diagnostics.push(Diagnostic::error(
                "cycle",
                &fact.spec.origin,
                fact.spec.span,
                format!("facts read each other in a cycle: {path}"),
            ));
        }
    }

    fn check_fact(
        &mut self,
        at: At<'_>,
        pointer: &str,
        fact: &document::Fact,
        scope: &Scope<'_>,
    ) -> Option<FactSpec> {
        let mut reads = Reads::default();
        let sources: Vec<&str> = [
            ("kubernetes", fact.kubernetes.is_some()),
            ("exec", fact.exec.is_some()),
            ("logs", fact.logs.is_some()),
            ("command", fact.command.is_some()),
            ("http", fact.http.is_some()),
            ("expr", fact.expr.is_some()),
        ]
        .iter()
        .filter(|(_, present)| *present)
        .map(|(name, _)| *name)
        .collect();
        let span = at.span(pointer);
        let source = match sources.as_slice() {
            [] => {
                self.error_help(
                    "fact-source",
                    at,
                    span,
                    format!("fact `{}` has no source", fact.name),
                    Some(
                        "give it one of `kubernetes`, `exec`, `logs`, `command`, `http` or `expr`"
                            .to_owned(),
                    ),
                );
                return None;
            }
            [_] => {
                if let Some(read) = &fact.kubernetes {
                    let p = format!("{pointer}/kubernetes");
                    let api_version =
                        self.api_version(at, &p, read.api_version.as_deref(), &read.kind)?;
                    FactSource::Kubernetes {
                        api_version,
                        kind: read.kind.clone(),
                        name: read
                            .name
                            .as_ref()
                            .map(|t| self.template(at, &format!("{p}/name"), t, scope, &mut reads)),
                        namespace: read.namespace.as_ref().map(|t| {
                            self.template(at, &format!("{p}/namespace"), t, scope, &mut reads)
                        }),
                        label_selector: read.label_selector.as_ref().map(|t| {
                            self.template(at, &format!("{p}/labelSelector"), t, scope, &mut reads)
                        }),
                        field_selector: read.field_selector.as_ref().map(|t| {
                            self.template(at, &format!("{p}/fieldSelector"), t, scope, &mut reads)
                        }),
                    }
                } else if let Some(read) = &fact.exec {
                    let p = format!("{pointer}/exec");
                    FactSource::Exec {
                        namespace: self.template(
                            at,
                            &format!("{p}/namespace"),
                            &read.namespace,
                            scope,
                            &mut reads,
                        ),
                        pod: self.template(at, &format!("{p}/pod"), &read.pod, scope, &mut reads),
                        container: read.container.as_ref().map(|t| {
                            self.template(at, &format!("{p}/container"), t, scope, &mut reads)
                        }),
                        argv: self.argv(
                            at,
                            &format!("{p}/command"),
                            &read.command,
                            scope,
                            &mut reads,
                        ),
                        format: read.format,
                    }
                } else if let Some(read) = &fact.logs {
                    let p = format!("{pointer}/logs");
                    FactSource::Logs {
                        namespace: self.template(
                            at,
                            &format!("{p}/namespace"),
                            &read.namespace,
                            scope,
                            &mut reads,
                        ),
                        pod: self.template(at, &format!("{p}/pod"), &read.pod, scope, &mut reads),
                        container: read.container.as_ref().map(|t| {
                            self.template(at, &format!("{p}/container"), t, scope, &mut reads)
                        }),
                        tail: read.tail.map(std::num::NonZeroU32::get),
                        format: read.format,
                    }
                } else if let Some(read) = &fact.command {
                    FactSource::Command {
                        argv: self.argv(
                            at,
                            &format!("{pointer}/command/argv"),
                            &read.argv,
                            scope,
                            &mut reads,
                        ),
                        format: read.format,
                    }
                } else if let Some(read) = &fact.http {
                    let p = format!("{pointer}/http");
                    let url = self.template(at, &format!("{p}/url"), &read.url, scope, &mut reads);
                    if url.is_literal()
                        && !(read.url.starts_with("http://") || read.url.starts_with("https://"))
                    {
                        self.error_help(
                            "http-url",
                            at,
                            at.span(&format!("{p}/url")),
                            format!("`{}` is not an http:// or https:// URL", read.url),
                            None,
                        );
                    }
                    FactSource::Http {
                        url,
                        query: read
                            .query
                            .iter()
                            .map(|(k, v)| {
                                (
                                    k.clone(),
                                    self.template(
                                        at,
                                        &format!("{p}/query/{k}"),
                                        v,
                                        scope,
                                        &mut reads,
                                    ),
                                )
                            })
                            .collect(),
                        headers: read
                            .headers
                            .iter()
                            .map(|(k, v)| {
                                (
                                    k.clone(),
                                    self.template(
                                        at,
                                        &format!("{p}/headers/{k}"),
                                        v,
                                        scope,
                                        &mut reads,
                                    ),
                                )
                            })
                            .collect(),
                        format: read.format,
                    }
                } else {
                    let text = fact.expr.as_deref().unwrap_or_default();
                    let expr =
                        self.expression(at, &format!("{pointer}/expr"), text, scope, &mut reads)?;
                    if fact.jsonpath.is_some() {
                        self.error("fact-source", at, at.key_span(&format!("{pointer}/jsonpath")), "`jsonpath` selects from what a probe read; an `expr` fact has nothing to select from");
                    }
                    FactSource::Expr(expr)
                }
            }
            several => {
                self.error_help(
                    "fact-source",
                    at,
                    span,
                    format!(
                        "fact `{}` has more than one source ({})",
                        fact.name,
                        several
                            .iter()
                            .map(|s| format!("`{s}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    Some("a fact reads one thing; split it into several facts".to_owned()),
                );
                return None;
            }
        };
        let jsonpath = fact
            .jsonpath
            .as_ref()
            .and_then(|written| self.jsonpath(at, &format!("{pointer}/jsonpath"), written));
        reads.facts.remove(&fact.name);
        Some(FactSpec {
            name: fact.name.clone(),
            description: fact.description.clone(),
            source,
            jsonpath,
            secret: fact.secret,
            reads: reads.facts.into_iter().collect(),
            params: reads.params.into_iter().collect(),
            origin: at.source.clone(),
            span: at.span(&format!("{pointer}/name")),
        })
    }

    /// Accepts kubectl's form (`{.status.replicas}`, `.items[*].metadata.name`) and JSONPath's
    /// (`$.status.replicas`), and checks it parses.
    fn jsonpath(&mut self, at: At<'_>, pointer: &str, written: &str) -> Option<JsonPathSelection> {
        let trimmed = written.trim();
        let inner = trimmed
            .strip_prefix('{')
            .and_then(|rest| rest.strip_suffix('}'))
            .unwrap_or(trimmed)
            .trim();
        let query = if inner.starts_with('$') {
            inner.to_owned()
        } else if inner.starts_with('.') || inner.starts_with('[') {
            format!("${inner}")
        } else {
            format!("$.{inner}")
        };
        match jsonpath_rust::parser::parse_json_path(&query) {
            Ok(_) => Some(JsonPathSelection {
                written: written.to_owned(),
                query,
            }),
            Err(error) => {
                let reason = error.to_string();
                let reason = reason.lines().last().unwrap_or(&reason).trim().to_owned();
                self.error_help(
                    "jsonpath",
                    at,
                    at.span(pointer),
                    format!("invalid JSONPath `{written}`: {reason}"),
                    Some("write it as kubectl takes it, such as `{.status.readyReplicas}` or `{.items[*].metadata.name}`".to_owned()),
                );
                None
            }
        }
    }

    // ----- runbooks -------------------------------------------------------------------------

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

    fn check_param(
        &mut self,
        at: At<'_>,
        pointer: &str,
        param: &document::Param,
    ) -> Option<ParamSpec> {
        let before = self.diagnostics.error_count();
        if !is_identifier(&param.name) {
            self.error_help(
                "param-name",
                at,
                at.span(&format!("{pointer}/name")),
                format!("invalid param name `{}`", param.name),
                Some("use lowercase letters, digits and `_`, starting with a letter, so expressions can read `params.NAME`".to_owned()),
            );
        }
        let from = param.from.as_ref().and_then(|text| {
            let parsed = if let Some(label) = text.strip_prefix("alert.labels.") {
                Some(AlertField::Labels(label.to_owned()))
            } else {
                text.strip_prefix("alert.annotations.")
                    .map(|name| AlertField::Annotations(name.to_owned()))
            };
            match parsed {
                Some(AlertField::Labels(name) | AlertField::Annotations(name))
                    if name.is_empty() =>
                {
                    None
                }
                other => other,
            }
            .or_else(|| {
                self.error_help(
                    "param-from",
                    at,
                    at.span(&format!("{pointer}/from")),
                    format!("`from: {text}` does not name an alert field"),
                    Some("use `alert.labels.NAME` or `alert.annotations.NAME`".to_owned()),
                );
                None
            })
        });
        let pattern = param.pattern.as_ref().and_then(|text| {
            if param.kind != document::ParamType::String {
                self.error(
                    "param-pattern",
                    at,
                    at.key_span(&format!("{pointer}/pattern")),
                    "`pattern` applies to string params only",
                );
                return None;
            }
            match crate::pattern::Pattern::anchored(text) {
                Ok(pattern) => Some(pattern),
                Err(reason) => {
                    self.error(
                        "param-pattern",
                        at,
                        at.span(&format!("{pointer}/pattern")),
                        format!("invalid regex in `pattern`: {reason}"),
                    );
                    None
                }
            }
        });
        let mut allowed = Vec::new();
        for (index, value) in param.allowed.iter().flatten().enumerate() {
            match ParamValue::from_json(param.kind, value) {
                Ok(value) => allowed.push(value),
                Err(message) => self.error(
                    "param-default",
                    at,
                    at.span(&format!("{pointer}/enum/{index}")),
                    format!("`enum` value of param `{}`: {message}", param.name),
                ),
            }
        }
        let default = param.default.as_ref().and_then(|value| {
            match ParamValue::from_json(param.kind, value) {
                Ok(value) => Some(value),
                Err(message) => {
                    self.error(
                        "param-default",
                        at,
                        at.span(&format!("{pointer}/default")),
                        format!("default of param `{}`: {message}", param.name),
                    );
                    None
                }
            }
        });
        if let Some(default) = &default {
            if let Err(message) = validate_param(default, pattern.as_ref(), &allowed) {
                self.error(
                    "param-default",
                    at,
                    at.span(&format!("{pointer}/default")),
                    format!("default of param `{}`: {message}", param.name),
                );
            }
        }
        if self.diagnostics.error_count() > before {
            return None;
        }
        Some(ParamSpec {
            name: param.name.clone(),
            kind: param.kind,
            description: param.description.clone(),
            required: param.required.unwrap_or(param.default.is_none()),
            default,
            from,
            secret: param.secret,
            pattern,
            allowed,
            span: at.span(&format!("{pointer}/name")),
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn check_steps(
        &mut self,
        at: At<'_>,
        base: &str,
        documents: &[document::Step],
        scope: &Scope<'_>,
        reads: &mut Reads,
        calls: &mut Vec<Call>,
        runbook: &str,
        rollback: bool,
    ) -> Vec<StepSpec> {
        // Ids first, so `needs` can be resolved against all of them.
        let mut ids: Vec<String> = Vec::new();
        let mut first_use: HashMap<String, Span> = HashMap::new();
        for (index, step) in documents.iter().enumerate() {
            let pointer = format!("{base}/{index}");
            let id = match &step.id {
                Some(id) => {
                    if !is_step_id(id) {
                        self.error_help(
                            "step-id",
                            at,
                            at.span(&format!("{pointer}/id")),
                            format!("invalid step id `{id}`"),
                            Some("use lowercase letters, digits, `-` and `_`, starting with a letter or digit".to_owned()),
                        );
                    }
                    id.clone()
                }
                None => {
                    let keyword = action_keywords(step).first().copied().unwrap_or("step");
                    if rollback {
                        format!("rollback-{keyword}-{}", index + 1)
                    } else {
                        format!("{keyword}-{}", index + 1)
                    }
                }
            };
            let span = if step.id.is_some() {
                at.span(&format!("{pointer}/id"))
            } else {
                at.span(&pointer)
            };
            if let Some(first) = first_use.get(&id) {
                let message = if step.id.is_some() {
                    format!(
                        "duplicate step id `{id}` (first used at line {})",
                        first.start.line
                    )
                } else {
                    format!(
                        "this step's default id `{id}` is already used at line {}",
                        first.start.line
                    )
                };
                self.error_help(
                    "duplicate-step-id",
                    at,
                    span,
                    message,
                    Some("give every step a unique `id`".to_owned()),
                );
            } else {
                first_use.insert(id.clone(), span);
            }
            ids.push(id);
        }

        // Dependencies, and the cycles they may make.
        let mut needs: Vec<Vec<String>> = Vec::new();
        for (index, step) in documents.iter().enumerate() {
            let pointer = format!("{base}/{index}");
            let list = match &step.needs {
                Some(list) => {
                    if rollback {
                        self.error(
                            "rollback-needs",
                            at,
                            at.key_span(&format!("{pointer}/needs")),
                            "rollback steps run in order; `needs` is not allowed there",
                        );
                    }
                    let mut valid = Vec::new();
                    for (n, need) in list.iter().enumerate() {
                        if ids.contains(need) {
                            if !valid.contains(need) {
                                valid.push(need.clone());
                            }
                        } else {
                            self.error_help(
                                "unknown-step",
                                at,
                                at.span(&format!("{pointer}/needs/{n}")),
                                format!("`needs` names unknown step `{need}`"),
                                did_you_mean(need, ids.iter().map(String::as_str)).or_else(|| {
                                    let mut known: Vec<&str> =
                                        ids.iter().map(String::as_str).collect();
                                    known.dedup();
                                    Some(format!("steps are: {}", known.join(", ")))
                                }),
                            );
                        }
                    }
                    valid
                }
                None if index > 0 => vec![ids[index - 1].clone()],
                None => Vec::new(),
            };
            needs.push(list);
        }
        let mut graph = DiGraph::<&str, ()>::new();
        let nodes: Vec<_> = ids.iter().map(|id| graph.add_node(id.as_str())).collect();
        for (index, list) in needs.iter().enumerate() {
            for need in list {
                if let Some(target) = ids.iter().position(|id| id == need) {
                    graph.add_edge(nodes[index], nodes[target], ());
                }
            }
        }
        let mut in_cycle = BTreeSet::new();
        for cycle in cycles(&graph) {
            let first = cycle[0];
            let index = ids.iter().position(|id| id == first).unwrap_or(0);
            in_cycle.extend(cycle.iter().map(|id| id.to_string()));
            let path = cycle
                .iter()
                .chain(std::iter::once(&first))
                .copied()
                .collect::<Vec<_>>()
                .join(" -> ");
            let pointer = format!("{base}/{index}");
            let span = if documents[index].needs.is_some() {
                at.key_span(&format!("{pointer}/needs"))
            } else {
                at.span(&pointer)
            };
            let (message, help) = if cycle.len() == 1 {
                (
                    format!("step `{first}` needs itself"),
                    "remove it from its own `needs`".to_owned(),
                )
            } else {
                // Say which links come from file order rather than a written `needs`.
                let implicit: Vec<String> = cycle
                    .iter()
                    .zip(cycle.iter().skip(1).chain(std::iter::once(&first)))
                    .filter(|(step, _)| {
                        ids.iter()
                            .position(|id| id == *step)
                            .is_some_and(|position| documents[position].needs.is_none())
                    })
                    .map(|(step, dependency)| {
                        format!("`{step}` waits for `{dependency}` because it has no `needs`")
                    })
                    .collect();
                let mut message = format!("steps depend on each other in a cycle: {path}");
                if !implicit.is_empty() {
                    message.push_str(&format!(" ({})", implicit.join("; ")));
                }
                (
                    message,
                    "break the cycle by changing one `needs`".to_owned(),
                )
            };
            self.error_help("cycle", at, span, message, Some(help));
        }

        let mut steps = Vec::new();
        for (index, step) in documents.iter().enumerate() {
            let pointer = format!("{base}/{index}");
            if rollback && step.undo.is_some() {
                self.error(
                    "rollback-undo",
                    at,
                    at.key_span(&format!("{pointer}/undo")),
                    "rollback steps are not undone; `undo` is not allowed there",
                );
            }
            if let Some(checked) = self.check_step(
                at,
                &pointer,
                step,
                index,
                &ids[index],
                &needs[index],
                scope,
                reads,
                calls,
                runbook,
            ) {
                steps.push(checked);
            }
        }
        steps
    }

    #[allow(clippy::too_many_arguments)]
    fn check_step(
        &mut self,
        at: At<'_>,
        pointer: &str,
        step: &document::Step,
        index: usize,
        id: &str,
        needs: &[String],
        scope: &Scope<'_>,
        reads: &mut Reads,
        calls: &mut Vec<Call>,
        runbook: &str,
    ) -> Option<StepSpec> {
        let before = self.diagnostics.error_count();
        let when = step
            .when
            .as_ref()
            .and_then(|text| self.expression(at, &format!("{pointer}/when"), text, scope, reads));
        let action = self.action(at, pointer, step, scope, reads, calls, runbook, false);
        let is_verify = matches!(action, Some(Action::Verify { .. }));
        let timeout = match &step.timeout {
            Some(text) => self
                .duration(at, &format!("{pointer}/timeout"), text)
                .unwrap_or(DEFAULT_STEP_TIMEOUT),
            None if is_verify => DEFAULT_VERIFY_TIMEOUT,
            None => DEFAULT_STEP_TIMEOUT,
        };
        if step.interval.is_some() && !is_verify && action.is_some() {
            self.error(
                "interval",
                at,
                at.key_span(&format!("{pointer}/interval")),
                "`interval` applies to `verify` steps only",
            );
        }
        let retries = match &step.retries {
            None => RetrySpec::default(),
            Some(Retries::Count(count)) => RetrySpec {
                retries: *count,
                ..RetrySpec::default()
            },
            Some(Retries::Policy(policy)) => RetrySpec {
                retries: policy.attempts,
                backoff: policy
                    .backoff
                    .as_ref()
                    .and_then(|text| self.duration(at, &format!("{pointer}/retries/backoff"), text))
                    .unwrap_or(DEFAULT_BACKOFF),
                max_backoff: policy
                    .max_backoff
                    .as_ref()
                    .and_then(|text| {
                        self.duration(at, &format!("{pointer}/retries/maxBackoff"), text)
                    })
                    .unwrap_or(DEFAULT_MAX_BACKOFF),
            },
        };
        let confirm = match &step.confirm {
            None | Some(Confirm::Flag(false)) => None,
            Some(Confirm::Flag(true)) => {
                Some(Template::literal(&format!("Proceed with step `{id}`?")))
            }
            Some(Confirm::Text(text)) => {
                Some(self.template(at, &format!("{pointer}/confirm"), text, scope, reads))
            }
        };
        let action = action?;
        if step.readonly && !matches!(action, Action::Run { .. } | Action::Exec { .. }) {
            self.error(
                "readonly",
                at,
                at.key_span(&format!("{pointer}/readonly")),
                "`readonly` applies to `run` and `exec` steps only",
            );
        }
        let irreversible = match &step.irreversible {
            None | Some(Confirm::Flag(false)) => None,
            Some(Confirm::Flag(true)) => Some(None),
            Some(Confirm::Text(reason)) => Some(Some(reason.clone())),
        };
        let undo = match (&step.undo, irreversible) {
            (Some(_), Some(_)) => {
                self.error(
                    "undo",
                    at,
                    at.key_span(&format!("{pointer}/irreversible")),
                    "a step cannot have an `undo` and be `irreversible`",
                );
                UndoSpec::Missing
            }
            (Some(undo), None) => match self.undo(
                at,
                &format!("{pointer}/undo"),
                undo,
                scope,
                reads,
                calls,
                runbook,
            ) {
                Some(action) => UndoSpec::Declared(Box::new(action)),
                None => UndoSpec::Missing,
            },
            (None, Some(reason)) => UndoSpec::Irreversible(reason),
            (None, None) if !action.mutates(step.readonly) => UndoSpec::NotNeeded,
            (None, None) => match action.native_undo() {
                Some(native) => UndoSpec::Native(native),
                None => {
                    let span = at.span(pointer);
                    if let Some(reason) = at.allowed(span, "missing-undo") {
                        UndoSpec::Irreversible(reason)
                    } else {
                        self.diagnostics.push(
                            Diagnostic::warning(
                                "missing-undo",
                                at.source,
                                span,
                                format!("step `{id}` changes the system (`{}`) but has no `undo` and is not marked `irreversible`", action.keyword()),
                            )
                            .with_help("add `undo:` with the action that reverses it, or `irreversible: <reason>`; to keep the step as written, put `# runbook:allow missing-undo <reason>` on the line above it"),
                        );
                        UndoSpec::Missing
                    }
                }
            },
        };
        if self.diagnostics.error_count() > before {
            return None;
        }
        Some(StepSpec {
            index,
            id: id.to_owned(),
            name: step.name.clone(),
            needs: needs.to_vec(),
            when,
            timeout,
            retries,
            confirm,
            undo,
            readonly: step.readonly,
            action,
            span: at.span(pointer),
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn undo(
        &mut self,
        at: At<'_>,
        pointer: &str,
        undo: &document::Step,
        scope: &Scope<'_>,
        reads: &mut Reads,
        calls: &mut Vec<Call>,
        runbook: &str,
    ) -> Option<Action> {
        let extras = [
            ("id", undo.id.is_some()),
            ("needs", undo.needs.is_some()),
            ("when", undo.when.is_some()),
            ("timeout", undo.timeout.is_some()),
            ("retries", undo.retries.is_some()),
            ("confirm", undo.confirm.is_some()),
            ("undo", undo.undo.is_some()),
            ("irreversible", undo.irreversible.is_some()),
        ];
        for (field, present) in extras {
            if present {
                self.error_help(
                    "undo",
                    at,
                    at.key_span(&format!("{pointer}/{field}")),
                    format!("`{field}` has no meaning in an `undo`"),
                    Some(
                        "an undo is a single action, such as `run: [...]` or `scale: {...}`"
                            .to_owned(),
                    ),
                );
            }
        }
        let action = self.action(at, pointer, undo, scope, reads, calls, runbook, true)?;
        if matches!(
            action,
            Action::Gate | Action::Verify { .. } | Action::Wait { .. }
        ) {
            self.error(
                "undo",
                at,
                at.span(pointer),
                format!(
                    "`{}` cannot undo anything; give the action that reverses the step",
                    action.keyword()
                ),
            );
        }
        Some(action)
    }

    #[allow(clippy::too_many_arguments)]
    fn action(
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
    fn target(
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

    fn api_version(
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

    fn json_params(
        &mut self,
        at: At<'_>,
        pointer: &str,
        params: &BTreeMap<String, serde_json::Value>,
        scope: &Scope<'_>,
        reads: &mut Reads,
    ) -> BTreeMap<String, JsonTemplate> {
        params
            .iter()
            .map(|(key, value)| {
                (
                    key.clone(),
                    self.json_template(
                        at,
                        &format!("{pointer}/{}", escape_pointer(key)),
                        value,
                        scope,
                        reads,
                    ),
                )
            })
            .collect()
    }

    fn json_template(
        &mut self,
        at: At<'_>,
        pointer: &str,
        value: &serde_json::Value,
        scope: &Scope<'_>,
        reads: &mut Reads,
    ) -> JsonTemplate {
        match value {
            serde_json::Value::String(text) if text.contains("${") => {
                JsonTemplate::String(self.template(at, pointer, text, scope, reads))
            }
            serde_json::Value::Array(items) => JsonTemplate::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(index, item)| {
                        self.json_template(at, &format!("{pointer}/{index}"), item, scope, reads)
                    })
                    .collect(),
            ),
            serde_json::Value::Object(entries) => JsonTemplate::Object(
                entries
                    .iter()
                    .map(|(key, item)| {
                        (
                            key.clone(),
                            self.json_template(
                                at,
                                &format!("{pointer}/{}", escape_pointer(key)),
                                item,
                                scope,
                                reads,
                            ),
                        )
                    })
                    .collect(),
            ),
            other => JsonTemplate::Literal(other.clone()),
        }
    }

    fn argv(
        &mut self,
        at: At<'_>,
        pointer: &str,
        command: &Command,
        scope: &Scope<'_>,
        reads: &mut Reads,
    ) -> Vec<Template> {
        let words: Vec<(String, String)> = match command {
            Command::Argv(words) => words
                .iter()
                .enumerate()
                .map(|(i, w)| (w.clone(), format!("{pointer}/{i}")))
                .collect(),
            Command::Line(line) => match crate::expr::split_command(line) {
                Ok(words) => words.into_iter().map(|w| (w, pointer.to_owned())).collect(),
                Err(_) => {
                    self.error_help(
                        "command",
                        at,
                        at.span(pointer),
                        "cannot split the command into arguments: a quote is never closed",
                        Some("close the quote, or write the command as a list: `[program, arg1, arg2]`".to_owned()),
                    );
                    return Vec::new();
                }
            },
        };
        if words.is_empty() {
            self.error("command", at, at.span(pointer), "the command is empty");
        }
        words
            .iter()
            .map(|(word, p)| self.template(at, p, word, scope, reads))
            .collect()
    }

    fn duration(&mut self, at: At<'_>, pointer: &str, text: &str) -> Option<Duration> {
        match parse_duration(text) {
            Ok(duration) => Some(duration),
            Err(message) => {
                self.error("duration", at, at.span(pointer), message);
                None
            }
        }
    }

    /// The span of character `offset` inside the string at `pointer`.
    fn offset_span(&self, at: At<'_>, pointer: &str, text: &str, offset: usize) -> Span {
        let prefix: String = text.chars().take(offset).collect();
        let line = prefix.matches('\n').count() + 1;
        let column = prefix.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        at.inside(pointer, text, line, column)
    }

    fn template(
        &mut self,
        at: At<'_>,
        pointer: &str,
        text: &str,
        scope: &Scope<'_>,
        reads: &mut Reads,
    ) -> Template {
        match Template::parse(text) {
            Ok(template) => {
                for part in &template.parts {
                    if let crate::expr::TemplatePart::Expr(expression, offset) = part {
                        let base = self.offset_span(at, pointer, text, *offset);
                        self.resolve(at, pointer, expression, scope, reads, Some(base.start));
                    }
                }
                template
            }
            Err(TemplateError {
                message,
                offset,
                inner,
            }) => {
                let (span, message) = match inner {
                    Some((expression, error)) => {
                        let base = self.offset_span(at, pointer, text, offset);
                        let position = if error.line == 1 {
                            Position::new(base.start.line, base.start.column + error.column - 1)
                        } else {
                            at.inside(pointer, &expression, error.line, error.column)
                                .start
                        };
                        (
                            Span::point(position),
                            format!("syntax error in `${{{expression}}}`: {}", error.message),
                        )
                    }
                    None => (
                        self.offset_span(at, pointer, text, offset),
                        format!("invalid template: {message}"),
                    ),
                };
                self.error_help(
                    "expression-syntax",
                    at,
                    span,
                    message,
                    Some(
                        "write `${expression}`; to write a literal `${`, double the dollar: `$${`"
                            .to_owned(),
                    ),
                );
                Template::literal(text)
            }
        }
    }

    fn expression(
        &mut self,
        at: At<'_>,
        pointer: &str,
        text: &str,
        scope: &Scope<'_>,
        reads: &mut Reads,
    ) -> Option<Expression> {
        match Expression::compile(text) {
            Ok(expression) => {
                if self.resolve(at, pointer, &expression, scope, reads, None) {
                    Some(expression)
                } else {
                    None
                }
            }
            Err(error) => {
                let span = at.inside(pointer, text, error.line, error.column);
                self.error(
                    "expression-syntax",
                    at,
                    span,
                    format!("syntax error in expression: {}", error.message),
                );
                None
            }
        }
    }

    /// Checks that every name `expression` reads exists; records the facts and params it reads.
    /// `base`: where the expression's first character is, for templates.
    fn resolve(
        &mut self,
        at: At<'_>,
        pointer: &str,
        expression: &Expression,
        scope: &Scope<'_>,
        reads: &mut Reads,
        base: Option<Position>,
    ) -> bool {
        let mut ok = true;
        for reference in &expression.references {
            let span = match base {
                Some(base) if reference.line == 1 => {
                    Span::point(Position::new(base.line, base.column + reference.column - 1))
                }
                _ => at.inside(
                    pointer,
                    &expression.source,
                    reference.line,
                    reference.column,
                ),
            };
            let span = Span::on_line(span.start, reference.dotted().chars().count());
            let root = reference.path[0].as_str();
            if scope.locals.contains(&root) {
                continue;
            }
            if root == "params" {
                let Some(param) = reference.path.get(1) else {
                    continue;
                };
                match scope.params {
                    None => {
                        reads.params.insert(param.clone());
                    }
                    Some(declared) if declared.contains(param) => {
                        reads.params.insert(param.clone());
                    }
                    Some(declared) => {
                        ok = false;
                        self.error_help(
                            "undefined-param",
                            at,
                            span,
                            format!("unknown param `{param}`"),
                            did_you_mean(param, declared.iter().map(String::as_str)).or_else(
                                || Some(format!("declare it under `params:`: `- name: {param}`")),
                            ),
                        );
                    }
                }
                continue;
            }
            match resolve_fact(scope.facts, &reference.path) {
                Ok(facts) => {
                    for fact in facts {
                        self.fact_sites
                            .entry(fact.clone())
                            .or_insert_with(|| (at.source.clone(), span));
                        reads.facts.insert(fact);
                    }
                }
                Err(unknown) => {
                    ok = false;
                    let depth = unknown.split('.').count();
                    let candidates: BTreeSet<String> = scope
                        .facts
                        .iter()
                        .map(|name| name.split('.').take(depth).collect::<Vec<_>>().join("."))
                        .collect();
                    let mut help = did_you_mean(&unknown, candidates.iter().map(String::as_str));
                    if help.is_none()
                        && depth == 1
                        && scope
                            .params
                            .is_some_and(|declared| declared.iter().any(|p| p == root))
                    {
                        help = Some(format!("params are read as `params.{root}`"));
                    }
                    if root == "alert" && depth == 1 {
                        help = Some("alert labels reach expressions through params: declare a param with `from: alert.labels.NAME` and read `params.NAME`".to_owned());
                    }
                    let help = help.or_else(|| {
                        Some(
                            "define it under `facts:` in the runbook or in a fact library"
                                .to_owned(),
                        )
                    });
                    // Underline just the part that names nothing.
                    let span = Span::on_line(span.start, unknown.chars().count());
                    let message = if depth == 1 {
                        format!("unknown name `{unknown}`: not a fact or `params`")
                    } else {
                        format!("unknown fact `{unknown}`")
                    };
                    self.error_help("undefined-fact", at, span, message, help);
                }
            }
        }
        ok
    }

    /// Calls to other runbooks must name runbooks that exist, pass params they declare, and not
    /// go round in a circle.
    fn check_calls(&mut self, catalog: &Catalog, calls: &[Call]) {
        let names: Vec<&str> = catalog.runbooks.iter().map(|r| r.name.as_str()).collect();
        for call in calls {
            match catalog.get(&call.to) {
                None => {
                    if names.contains(&call.from.as_str()) {
                        self.diagnostics.push(
                            Diagnostic::error(
                                "unknown-runbook",
                                &call.source,
                                call.span,
                                format!("unknown runbook `{}`", call.to),
                            )
                            .with_help_opt(did_you_mean(&call.to, names.iter().copied())),
                        );
                    }
                }
                Some(target) => {
                    for param in &call.params {
                        if target.param(param).is_none() {
                            self.diagnostics.push(
                                Diagnostic::error(
                                    "undefined-param",
                                    &call.source,
                                    call.span,
                                    format!("runbook `{}` has no param `{param}`", call.to),
                                )
                                .with_help_opt(did_you_mean(
                                    param,
                                    target.params.iter().map(|p| p.name.as_str()),
                                )),
                            );
                        }
                    }
                }
            }
        }
        let mut graph = DiGraph::<&str, ()>::new();
        let nodes: BTreeMap<&str, _> = names
            .iter()
            .map(|name| (*name, graph.add_node(*name)))
            .collect();
        for call in calls {
            if let (Some(from), Some(to)) =
                (nodes.get(call.from.as_str()), nodes.get(call.to.as_str()))
            {
                graph.add_edge(*from, *to, ());
            }
        }
        for cycle in cycles(&graph) {
            let path = cycle
                .iter()
                .chain(std::iter::once(&cycle[0]))
                .copied()
                .collect::<Vec<_>>()
                .join(" -> ");
            if let Some(call) = calls.iter().find(|call| call.from == cycle[0]) {
                self.diagnostics.push(Diagnostic::error(
                    "call-cycle",
                    &call.source,
                    call.span,
                    format!("runbooks call each other in a cycle: {path}"),
                ));
            }
        }
    }
}

/// Names the engine binds in every expression.
const RESERVED_ROOTS: [&str; 2] = ["params", "object"];

const ACTIONS: [&str; 18] = [
    "run", "scale", "restart", "patch", "apply", "annotate", "label", "delete", "cordon",
    "uncordon", "drain", "exec", "wait", "verify", "notify", "page", "runbook", "confirm",
];

fn action_keywords(step: &document::Step) -> Vec<&'static str> {
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

/// The facts `expression` reads, among `facts`.
pub fn facts_read(facts: &BTreeSet<String>, expression: &Expression) -> BTreeSet<String> {
    expression
        .references
        .iter()
        .filter_map(|reference| resolve_fact(facts, &reference.path).ok())
        .flatten()
        .collect()
}

/// The facts a dotted path reads, or the part of the path that names nothing.
fn resolve_fact(facts: &BTreeSet<String>, path: &[String]) -> Result<Vec<String>, String> {
    let mut prefix = String::new();
    for segment in path {
        if !prefix.is_empty() {
            prefix.push('.');
        }
        prefix.push_str(segment);
        if facts.contains(&prefix) {
            return Ok(vec![prefix]);
        }
        let inner = format!("{prefix}.");
        if !facts
            .range(inner.clone()..)
            .next()
            .is_some_and(|name| name.starts_with(&inner))
        {
            return Err(prefix);
        }
    }
    // A group such as `openbao` reads every fact under it.
    let inner = format!("{prefix}.");
    Ok(facts
        .range(inner.clone()..)
        .take_while(|name| name.starts_with(&inner))
        .cloned()
        .collect())
}

/// Every elementary cycle's nodes, one per strongly connected component, in a stable order.
fn cycles<'a>(graph: &DiGraph<&'a str, ()>) -> Vec<Vec<&'a str>> {
    let mut found = Vec::new();
    for component in petgraph::algo::tarjan_scc(graph) {
        let self_loop = component.len() == 1 && graph.contains_edge(component[0], component[0]);
        if component.len() < 2 && !self_loop {
            continue;
        }
        let start = *component
            .iter()
            .min_by_key(|index| index.index())
            .unwrap_or(&component[0]);
        // Walk from `start` along edges inside the component until we come back.
        let mut path = vec![start];
        let mut seen = BTreeSet::from([start]);
        let mut current = start;
        loop {
            let mut next = None;
            let mut neighbours: Vec<_> = graph
                .neighbors(current)
                .filter(|n| component.contains(n))
                .collect();
            neighbours.sort_by_key(|n| n.index());
            for neighbour in neighbours {
                if neighbour == start {
                    next = Some(start);
                    break;
                }
                if !seen.contains(&neighbour) && next.is_none() {
                    next = Some(neighbour);
                }
            }
            match next {
                Some(node) if node == start => break,
                Some(node) => {
                    seen.insert(node);
                    path.push(node);
                    current = node;
                }
                None => break,
            }
        }
        found.push(path.iter().map(|index| graph[*index]).collect());
    }
    found.sort();
    found
}

fn is_identifier(text: &str) -> bool {
    let mut characters = text.chars();
    characters
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && characters.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !RHAI_KEYWORDS.contains(&text)
}

const RHAI_KEYWORDS: [&str; 24] = [
    "true", "false", "let", "const", "if", "else", "switch", "do", "while", "loop", "until", "for",
    "in", "break", "continue", "return", "throw", "try", "catch", "fn", "private", "import",
    "export", "as",
];

fn is_dns_label(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 63
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !text.starts_with('-')
        && !text.ends_with('-')
}

fn is_step_id(text: &str) -> bool {
    text.chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn is_builtin_group(api_version: &str) -> bool {
    match api_version.split_once('/') {
        None => true,
        Some((group, _)) => !group.contains('.') || group.ends_with(".k8s.io"),
    }
}

fn escape_pointer(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Checks a bound value against a param's pattern and allowed values.
pub fn validate_param(
    value: &ParamValue,
    pattern: Option<&crate::pattern::Pattern>,
    allowed: &[ParamValue],
) -> Result<(), String> {
    if let (Some(pattern), ParamValue::String(text)) = (pattern, value) {
        if !pattern.is_match(text) {
            return Err(format!(
                "`{text}` does not match the pattern `{}`",
                pattern
                    .as_str()
                    .trim_start_matches("^(?:")
                    .trim_end_matches(")$")
            ));
        }
    }
    if !allowed.is_empty() && !allowed.contains(value) {
        let shown = allowed
            .iter()
            .map(|v| format!("`{v}`"))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(format!("`{value}` is not one of {shown}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::loader::Loader;

    fn check_text(files: &[(&str, &str)]) -> (Catalog, Vec<String>) {
        let mut diagnostics = Diagnostics::new();
        let mut workspace = Workspace::default();
        let loader = Loader::new();
        for (path, text) in files {
            loader.load_text(
                Path::new(path),
                (*text).to_owned(),
                &mut workspace,
                &mut diagnostics,
            );
        }
        let catalog = check(&workspace, &mut diagnostics);
        let messages = diagnostics
            .sorted()
            .iter()
            .map(|d| {
                format!(
                    "{}:{}:{}: {}",
                    d.path().display(),
                    d.span.start.line,
                    d.span.start.column,
                    d.message
                )
            })
            .collect();
        (catalog, messages)
    }

    const LIBRARY: &str = "apiVersion: runbook.dev/v1alpha1
kind: FactLibrary
metadata: {name: lib}
spec:
  facts:
    - {name: spire.server.sts, kubernetes: {kind: StatefulSet, name: spire-server, namespace: spire}}
    - {name: spire.server.healthy, expr: spire.server.sts.status.readyReplicas >= 1}
";

    #[test]
    fn library_facts_resolve_with_everything_they_read() {
        let runbook = "apiVersion: catalyst.openova.io/v1alpha1
kind: Runbook
metadata: {name: r}
spec:
  preconditions:
    - check: spire.server.healthy
  steps:
    - {verify: 'true'}
";
        let (catalog, messages) = check_text(&[("lib.yaml", LIBRARY), ("r.yaml", runbook)]);
        assert!(messages.is_empty(), "{messages:?}");
        let runbook = catalog.get("r").expect("checked");
        assert_eq!(
            runbook.facts.keys().collect::<Vec<_>>(),
            ["spire.server.healthy", "spire.server.sts"]
        );
    }

    #[test]
    fn default_ids_and_native_undos() {
        let runbook = "apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata: {name: r}
spec:
  steps:
    - scale: {name: a, replicas: 1}
    - cordon: {node: n}
    - {run: ['true'], irreversible: nothing to undo}
    - {confirm: Go on?}
";
        let (catalog, messages) = check_text(&[("r.yaml", runbook)]);
        assert!(messages.is_empty(), "{messages:?}");
        let runbook = catalog.get("r").expect("checked");
        let ids: Vec<&str> = runbook.steps.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["scale-1", "cordon-2", "run-3", "step-4"]);
        assert!(matches!(
            runbook.steps[0].undo,
            UndoSpec::Native(NativeUndo::RestoreReplicas)
        ));
        assert!(matches!(
            runbook.steps[1].undo,
            UndoSpec::Native(NativeUndo::Uncordon)
        ));
        assert!(
            matches!(&runbook.steps[2].undo, UndoSpec::Irreversible(Some(reason)) if reason == "nothing to undo")
        );
        assert!(matches!(runbook.steps[3].action, Action::Gate));
        assert_eq!(runbook.steps[1].needs, ["scale-1"]);
    }

    #[test]
    fn errors_in_one_runbook_keep_it_out_of_the_catalog_but_not_others() {
        let good = "apiVersion: runbook.dev/v1alpha1\nkind: Runbook\nmetadata: {name: good}\nspec:\n  steps:\n    - {verify: 'true'}\n";
        let bad = "apiVersion: runbook.dev/v1alpha1\nkind: Runbook\nmetadata: {name: bad}\nspec:\n  steps:\n    - {verify: nope.x}\n";
        let (catalog, messages) = check_text(&[("good.yaml", good), ("bad.yaml", bad)]);
        assert_eq!(
            messages,
            ["bad.yaml:6:16: unknown name `nope`: not a fact or `params`"]
        );
        assert!(catalog.get("good").is_some());
        assert!(catalog.get("bad").is_none());
    }

    #[test]
    fn logs_facts_read_templates_a_tail_and_a_format() {
        let runbook = "apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata: {name: r}
spec:
  params:
    - {name: namespace, default: shop}
  facts:
    - {name: api.pod, kubernetes: {kind: Pod, name: api-0, namespace: shop}}
    - name: api.log
      logs:
        namespace: ${params.namespace}
        pod: ${api.pod.metadata.name}
        container: server
        tail: 200
        format: lines
  preconditions:
    - check: '!api.log.contains(\"panic: \")'
  steps:
    - {verify: 'true'}
";
        let (catalog, messages) = check_text(&[("r.yaml", runbook)]);
        assert!(messages.is_empty(), "{messages:?}");
        let runbook = catalog.get("r").expect("checked");
        let fact = &runbook.facts["api.log"];
        assert!(
            matches!(
                &fact.source,
                FactSource::Logs {
                    container: Some(_),
                    tail: Some(200),
                    format: crate::document::LogFormat::Lines,
                    ..
                }
            ),
            "{:?}",
            fact.source
        );
        assert_eq!(fact.reads, ["api.pod"]);
        assert_eq!(fact.params, ["namespace"]);
    }

    #[test]
    fn logs_facts_with_a_bad_tail_or_no_pod_are_pointed_at() {
        let runbook = "apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata: {name: r}
spec:
  facts:
    - {name: a, logs: {namespace: shop, pod: api-0, tail: -1}}
    - {name: b, logs: {namespace: shop, pod: api-0, tail: many}}
    - {name: c, logs: {namespace: shop, pod: api-0, tail: 0}}
    - {name: d, logs: {namespace: shop, container: server}}
    - {name: e, logs: {namespace: shop, pod: api-0, format: line}}
    - {name: f, logs: {namespace: shop, pod: api-0}, exec: {namespace: shop, pod: api-0, command: [ls]}}
  steps:
    - {verify: 'true'}
";
        let (_, messages) = check_text(&[("r.yaml", runbook)]);
        assert_eq!(
            messages,
            [
                "r.yaml:6:59: must be at least 1, found -1",
                "r.yaml:7:59: expected an integer, found a string `many`",
                "r.yaml:8:59: must be at least 1, found 0",
                "r.yaml:9:23: missing required field `pod` in logs read",
                "r.yaml:10:61: unknown value `line` for log format, expected one of `text`, `lines`, `json`",
                "r.yaml:11:7: fact `f` has more than one source (`exec`, `logs`)",
            ]
        );
    }

    #[test]
    fn sandboxed_expressions_cannot_loop() {
        let runbook = "apiVersion: runbook.dev/v1alpha1\nkind: Runbook\nmetadata: {name: r}\nspec:\n  steps:\n    - {verify: 'loop { }'}\n";
        let (_, messages) = check_text(&[("r.yaml", runbook)]);
        assert_eq!(messages.len(), 1, "{messages:?}");
        assert!(messages[0].starts_with("r.yaml:6:"), "{messages:?}");
    }
}
