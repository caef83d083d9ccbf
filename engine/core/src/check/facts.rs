//! The facts pass: fact names (valid, unique, not nested), one source each, and no fact that
//! reads itself through others. Fact libraries go through it before any runbook.

use super::*;

/// A runbook's own facts, beside the libraries'.
pub(super) struct RunbookFacts {
    /// Every fact name an expression in the runbook may read.
    pub(super) visible: BTreeSet<String>,
    /// The runbook's own facts whose names are valid and not taken.
    pub(super) names: Vec<String>,
    /// The library's facts and the runbook's own that passed their check.
    pub(super) known: BTreeMap<String, KnownFact>,
    /// The runbook's own facts that passed their check.
    pub(super) checked: BTreeMap<String, KnownFact>,
}

impl Checker<'_> {
    pub(super) fn check_runbook_facts(
        &mut self,
        at: At<'_>,
        declared: &[document::Fact],
        library: &BTreeMap<String, KnownFact>,
        param_names: &[String],
    ) -> RunbookFacts {
        let mut names: BTreeMap<String, (Source, Span)> = library
            .iter()
            .map(|(name, fact)| (name.clone(), (fact.spec.origin.clone(), fact.spec.span)))
            .collect();
        let mut local_names = Vec::new();
        for (index, fact) in declared.iter().enumerate() {
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
            params: Some(param_names),
            locals: &[],
            run: None,
        };
        let mut known: BTreeMap<String, KnownFact> = library.clone();
        for (index, fact) in declared.iter().enumerate() {
            if !local_names.contains(&fact.name) {
                continue;
            }
            if let Some(checked) =
                self.check_fact(at, &format!("/spec/facts/{index}"), fact, &scope)
            {
                known.insert(fact.name.clone(), checked);
            }
        }
        let checked: BTreeMap<String, KnownFact> = known
            .iter()
            .filter(|(name, _)| local_names.contains(name))
            .map(|(name, fact)| (name.clone(), fact.clone()))
            .collect();
        self.check_fact_cycles(&checked);
        RunbookFacts {
            visible,
            names: local_names,
            known,
            checked,
        }
    }

    /// Every fact the runbook reads, through other facts too; a library fact that reads a param
    /// the runbook does not declare is reported where the runbook first reads it.
    pub(super) fn facts_read_through(
        &mut self,
        at: At<'_>,
        reads: &Reads,
        known: &BTreeMap<String, KnownFact>,
        param_names: &[String],
    ) -> BTreeMap<String, Arc<FactSpec>> {
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
                                Code::UndefinedParam,
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
        facts
    }

    pub(super) fn check_libraries(
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
                self.error(
                    Code::DuplicateLibrary,
                    at,
                    at.span("/metadata/name"),
                    message,
                );
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
                    run: None,
                };
                if let Some(checked) =
                    self.check_fact(at, &format!("/spec/facts/{index}"), fact, &scope)
                {
                    facts.insert(fact.name.clone(), checked);
                }
            }
            self.drop_cascades(before, loaded);
        }
        self.check_fact_cycles(&facts);
        facts
    }

    pub(super) fn check_fact_name(&mut self, at: At<'_>, pointer: &str, name: &str) -> bool {
        let span = at.span(pointer);
        if name.split('.').any(|segment| !is_identifier(segment)) {
            self.error_help(
                Code::FactName,
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
                Code::FactName,
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

    pub(super) fn claim_fact_name(
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
                Code::DuplicateFact,
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
    pub(super) fn check_fact_nesting(&mut self, names: &BTreeMap<String, (Source, Span)>) {
        // A part of the name that is a reserved word (`sync`, `async`, `match`...) cannot be
        // written in an expression, so the fact can never be read: said once, here.
        for (name, (source, span)) in names {
            for part in name.split('.') {
                let reserved = Expression::compile(&format!("x.{part}"))
                    .err()
                    .is_some_and(|error| error.message.contains("is a reserved keyword"));
                if reserved {
                    self.reserved_in_fact_names.insert(part.to_owned());
                    self.diagnostics.push(
                        Diagnostic::error(
                            Code::FactName,
                            source,
                            *span,
                            format!("fact `{name}`: `{part}` is a reserved word of the expression language, so no expression can read this fact"),
                        )
                        .with_help(format!("rename it (`{}`); a field of a value named `{part}` is read as `value?[\"{part}\"]`", name.replace(part, &format!("{part}_state")))),
                    );
                    break;
                }
            }
        }
        let all: Vec<&String> = names.keys().collect();
        for name in &all {
            let prefix = format!("{name}.");
            for inner in all.iter().filter(|other| other.starts_with(&prefix)) {
                let (source, span) = &names[*inner];
                self.diagnostics.push(
                    Diagnostic::error(
                        Code::FactName,
                        source,
                        *span,
                        format!("fact `{inner}` is inside fact `{name}`, which already holds a value"),
                    )
                    .with_help(format!("read `{name}` and select the field in the expression instead, or rename one of them")),
                );
            }
        }
    }

    pub(super) fn check_fact_cycles(&mut self, facts: &BTreeMap<String, KnownFact>) {
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
            // Every link, each where its fact reads the next one, so each position to change
            // is named: `a` reads `b` at X; `b` reads `a` at Y.
            let links: Vec<String> = cycle
                .iter()
                .enumerate()
                .filter_map(|(index, from)| {
                    let to = cycle.get(index + 1).copied().unwrap_or(first);
                    facts[*from].reads_at.get(to).map(|(source, span)| {
                        format!("`{from}` reads `{to}` at {}", site(source, *span))
                    })
                })
                .collect();
            let read = if links.is_empty() {
                String::new()
            } else {
                format!(" ({})", links.join("; "))
            };
            self.diagnostics.push(Diagnostic::error(
                Code::Cycle,
                &fact.spec.origin,
                fact.spec.span,
                format!("facts read each other in a cycle: {path}{read}"),
            ));
        }
    }

    /// Checks one fact, and records where it reads each other fact. A fact that reads itself
    /// (directly, or through a group such as `openbao` that holds it) could never be evaluated:
    /// it is an error, at its name, saying where it reads itself.
    pub(super) fn check_fact(
        &mut self,
        at: At<'_>,
        pointer: &str,
        fact: &document::Fact,
        scope: &Scope<'_>,
    ) -> Option<KnownFact> {
        let outer = std::mem::take(&mut self.fact_sites);
        let spec = self.check_fact_source(at, pointer, fact, scope);
        let reads_at = std::mem::replace(&mut self.fact_sites, outer);
        for (name, site) in &reads_at {
            self.fact_sites
                .entry(name.clone())
                .or_insert_with(|| site.clone());
        }
        let mut spec = spec?;
        if let Some(position) = spec.reads.iter().position(|read| *read == fact.name) {
            spec.reads.remove(position);
            let read = reads_at
                .get(&fact.name)
                .map(|(source, span)| format!(" at {}", site(source, *span)))
                .unwrap_or_default();
            self.error_help(
                Code::Cycle,
                at,
                spec.span,
                format!("fact `{}` reads itself{read}", fact.name),
                Some("a fact cannot be computed from its own value; read another fact, or split it in two".to_owned()),
            );
        }
        Some(KnownFact {
            spec: Arc::new(spec),
            reads_at: Arc::new(reads_at),
        })
    }

    fn check_fact_source(
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
                    Code::FactSource,
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
            [_] => self.single_source(at, pointer, fact, scope, &mut reads)?,
            several => {
                self.error_help(
                    Code::FactSource,
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
        Some(FactSpec {
            name: fact.name.clone(),
            description: fact.description.clone(),
            source,
            jsonpath,
            secret: fact.secret,
            reads: reads.facts.into_iter().collect(),
            params: reads.params.into_iter().collect(),
            functions: reads.functions.into_iter().collect(),
            origin: at.source.clone(),
            span: at.span(&format!("{pointer}/name")),
        })
    }

    /// The one source of a fact, checked.
    fn single_source(
        &mut self,
        at: At<'_>,
        pointer: &str,
        fact: &document::Fact,
        scope: &Scope<'_>,
        reads: &mut Reads,
    ) -> Option<FactSource> {
        Some(if let Some(read) = &fact.kubernetes {
            let p = format!("{pointer}/kubernetes");
            let api_version = self.api_version(at, &p, read.api_version.as_deref(), &read.kind)?;
            FactSource::Kubernetes {
                api_version,
                kind: read.kind.clone(),
                name: read
                    .name
                    .as_ref()
                    .map(|t| self.template(at, &format!("{p}/name"), t, scope, reads)),
                namespace: read
                    .namespace
                    .as_ref()
                    .map(|t| self.template(at, &format!("{p}/namespace"), t, scope, reads)),
                label_selector: read
                    .label_selector
                    .as_ref()
                    .map(|t| self.template(at, &format!("{p}/labelSelector"), t, scope, reads)),
                field_selector: read
                    .field_selector
                    .as_ref()
                    .map(|t| self.template(at, &format!("{p}/fieldSelector"), t, scope, reads)),
            }
        } else if let Some(read) = &fact.exec {
            let p = format!("{pointer}/exec");
            FactSource::Exec {
                namespace: self.template(
                    at,
                    &format!("{p}/namespace"),
                    &read.namespace,
                    scope,
                    reads,
                ),
                pod: self.template(at, &format!("{p}/pod"), &read.pod, scope, reads),
                container: read
                    .container
                    .as_ref()
                    .map(|t| self.template(at, &format!("{p}/container"), t, scope, reads)),
                argv: self.argv(at, &format!("{p}/command"), &read.command, scope, reads),
                format: read.format,
                allow_exit_codes: read
                    .allow_exit_codes
                    .as_deref()
                    .and_then(|codes| self.exit_codes(at, &format!("{p}/allowExitCodes"), codes)),
            }
        } else if let Some(read) = &fact.logs {
            self.logs_source(at, pointer, read, scope, reads)?
        } else if let Some(read) = &fact.command {
            FactSource::Command {
                argv: self.argv(
                    at,
                    &format!("{pointer}/command/argv"),
                    &read.argv,
                    scope,
                    reads,
                ),
                format: read.format,
                allow_exit_codes: read.allow_exit_codes.as_deref().and_then(|codes| {
                    self.exit_codes(at, &format!("{pointer}/command/allowExitCodes"), codes)
                }),
            }
        } else if let Some(read) = &fact.http {
            self.http_source(at, pointer, read, scope, reads)
        } else {
            let text = fact.expr.as_deref().unwrap_or_default();
            let expr = self.expression(at, &format!("{pointer}/expr"), text, scope, reads)?;
            if fact.jsonpath.is_some() {
                self.error(Code::FactSource, at, at.key_span(&format!("{pointer}/jsonpath")), "`jsonpath` selects from what a probe read; an `expr` fact has nothing to select from");
            }
            FactSource::Expr(expr)
        })
    }

    /// A `logs` read names its pod, or the Deployment whose pod `kubectl logs` would pick.
    fn logs_source(
        &mut self,
        at: At<'_>,
        pointer: &str,
        read: &document::LogsRead,
        scope: &Scope<'_>,
        reads: &mut Reads,
    ) -> Option<FactSource> {
        let p = format!("{pointer}/logs");
        let namespace = self.template(at, &format!("{p}/namespace"), &read.namespace, scope, reads);
        let target = match (&read.pod, &read.deployment) {
            (Some(pod), None) => {
                let pointer = format!("{p}/pod");
                if let Some((kind, name)) = pod.split_once('/') {
                    if matches!(kind, "deployment" | "deploy" | "deployments.apps") {
                        self.error_help(
                            Code::FactSource,
                            at,
                            at.span(&pointer),
                            format!("`pod` names a pod, and `{pod}` is a Deployment"),
                            Some(format!(
                                "write `deployment: {name}` instead of `pod: {pod}`"
                            )),
                        );
                        return None;
                    }
                }
                LogTarget::Pod(self.template(at, &pointer, pod, scope, reads))
            }
            (None, Some(deployment)) => LogTarget::Deployment(self.template(
                at,
                &format!("{p}/deployment"),
                deployment,
                scope,
                reads,
            )),
            (None, None) => {
                self.error_help(
                    Code::MissingField,
                    at,
                    at.span(&p),
                    "missing `pod` (or `deployment`) in logs read",
                    Some(
                        "name the pod, or `deployment: NAME` to read one of its pods as `kubectl logs deployment/NAME` does"
                            .to_owned(),
                    ),
                );
                return None;
            }
            (Some(_), Some(_)) => {
                self.error_help(
                    Code::FactSource,
                    at,
                    at.key_span(&format!("{p}/deployment")),
                    "a logs read names a `pod` or a `deployment`, not both",
                    Some("keep the one whose log you mean".to_owned()),
                );
                return None;
            }
        };
        Some(FactSource::Logs {
            namespace,
            target,
            container: read
                .container
                .as_ref()
                .map(|t| self.template(at, &format!("{p}/container"), t, scope, reads)),
            previous: read.previous,
            tail: read.tail.map(std::num::NonZeroU32::get),
            format: read.format,
        })
    }

    fn http_source(
        &mut self,
        at: At<'_>,
        pointer: &str,
        read: &document::HttpRead,
        scope: &Scope<'_>,
        reads: &mut Reads,
    ) -> FactSource {
        let p = format!("{pointer}/http");
        let url = self.template(at, &format!("{p}/url"), &read.url, scope, reads);
        if url.is_literal()
            && !(read.url.starts_with("http://") || read.url.starts_with("https://"))
        {
            self.error_help(
                Code::HttpUrl,
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
                        self.template(at, &format!("{p}/query/{k}"), v, scope, reads),
                    )
                })
                .collect(),
            headers: read
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        self.template(at, &format!("{p}/headers/{k}"), v, scope, reads),
                    )
                })
                .collect(),
            format: read.format,
            expect_status: read.expect_status.as_ref().and_then(|expected| {
                self.expect_status(at, &format!("{p}/expectStatus"), expected)
            }),
        }
    }

    /// `expectStatus`: codes and `LOW-HIGH` or `Nxx` ranges of them, each an HTTP status.
    fn expect_status(
        &mut self,
        at: At<'_>,
        pointer: &str,
        expected: &document::ExpectStatus,
    ) -> Option<StatusSet> {
        let entries = expected.entries();
        if entries.is_empty() {
            self.error_help(
                Code::ExpectStatus,
                at,
                at.span(pointer),
                "`expectStatus` is empty, so every answer would fail the read",
                Some("list the statuses that are answers, such as `[200, 503]` or `[\"200-299\", 404]`; without `expectStatus`, only 2xx is".to_owned()),
            );
            return None;
        }
        let one = matches!(expected, document::ExpectStatus::One(_));
        let mut ranges = Vec::new();
        let mut ok = true;
        for (index, entry) in entries.iter().enumerate() {
            let entry_pointer = if one {
                pointer.to_owned()
            } else {
                format!("{pointer}/{index}")
            };
            match parse_status_entry(entry) {
                Ok(range) => ranges.push(range),
                Err(message) => {
                    ok = false;
                    self.error_help(
                        Code::ExpectStatus,
                        at,
                        at.span(&entry_pointer),
                        message,
                        Some("write a status (`503`), a range `\"LOW-HIGH\"` (`\"200-299\"`) or a class `\"5xx\"`; statuses are 100 to 599".to_owned()),
                    );
                }
            }
        }
        ok.then_some(StatusSet(ranges))
    }

    /// `allowExitCodes`: exit codes 0 to 255; without 0, a warning.
    pub(super) fn exit_codes(
        &mut self,
        at: At<'_>,
        pointer: &str,
        codes: &[i64],
    ) -> Option<ExitCodes> {
        if codes.is_empty() {
            self.error_help(
                Code::ExitCodes,
                at,
                at.span(pointer),
                "`allowExitCodes` is empty, so every exit would be a failure",
                Some("list every exit code that is an answer, such as `[0, 1]`".to_owned()),
            );
            return None;
        }
        let mut accepted = Vec::new();
        let mut ok = true;
        for (index, code) in codes.iter().enumerate() {
            match i32::try_from(*code) {
                Ok(code) if (0..=255).contains(&code) => {
                    if !accepted.contains(&code) {
                        accepted.push(code);
                    }
                }
                _ => {
                    ok = false;
                    self.error_help(
                        Code::ExitCodes,
                        at,
                        at.span(&format!("{pointer}/{index}")),
                        format!("`{code}` is not an exit code"),
                        Some("a process exits with a code from 0 to 255".to_owned()),
                    );
                }
            }
        }
        if !ok {
            return None;
        }
        let span = at.key_span(pointer);
        if !accepted.contains(&0) && at.allowed(span, Code::ExitCodesWithoutZero).is_none() {
            self.diagnostics.push(
                Diagnostic::warning(
                    Code::ExitCodesWithoutZero,
                    at.source,
                    span,
                    "`allowExitCodes` does not hold 0, so the command fails when it succeeds",
                )
                .with_help(format!(
                    "list every accepted code, 0 too: `[0, {}]`; if exit 0 is a failure here, say so with `# runbook:allow exit-codes-without-zero <reason>`",
                    accepted.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
                )),
            );
        }
        Some(ExitCodes(accepted))
    }

    /// Accepts kubectl's form (`{.status.replicas}`, `.items[*].metadata.name`) and JSONPath's
    /// (`$.status.replicas`), and checks it parses.
    pub(super) fn jsonpath(
        &mut self,
        at: At<'_>,
        pointer: &str,
        written: &str,
    ) -> Option<JsonPathSelection> {
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
                    Code::JsonPath,
                    at,
                    at.span(pointer),
                    format!("invalid JSONPath `{written}`: {reason}"),
                    Some("write it as kubectl takes it, such as `{.status.readyReplicas}` or `{.items[*].metadata.name}`".to_owned()),
                );
                None
            }
        }
    }
}

/// One `expectStatus` entry as an inclusive range: `503`, `"200-299"`, `"5xx"`.
fn parse_status_entry(entry: &document::StatusEntry) -> Result<(u16, u16), String> {
    let status = |value: i64| {
        u16::try_from(value)
            .ok()
            .filter(|code| (100..=599).contains(code))
    };
    match entry {
        document::StatusEntry::Code(code) => status(*code)
            .map(|code| (code, code))
            .ok_or_else(|| format!("`{code}` is not an HTTP status")),
        document::StatusEntry::Range(text) => {
            let trimmed = text.trim();
            if let Some(class) = trimmed
                .strip_suffix("xx")
                .or_else(|| trimmed.strip_suffix("XX"))
            {
                return match class.parse::<i64>().ok().and_then(|c| status(c * 100)) {
                    Some(low) => Ok((low, low + 99)),
                    None => Err(format!("`{text}` is not a class of HTTP statuses")),
                };
            }
            if let Ok(code) = trimmed.parse::<i64>() {
                return status(code)
                    .map(|code| (code, code))
                    .ok_or_else(|| format!("`{text}` is not an HTTP status"));
            }
            let Some((low, high)) = trimmed.split_once('-') else {
                return Err(format!("`{text}` is not an HTTP status or a range of them"));
            };
            match (
                low.trim().parse::<i64>().ok().and_then(status),
                high.trim().parse::<i64>().ok().and_then(status),
            ) {
                (Some(low), Some(high)) if low <= high => Ok((low, high)),
                (Some(low), Some(high)) => {
                    Err(format!("`{text}` is an empty range: {low} is above {high}"))
                }
                _ => Err(format!("`{text}` is not a range of HTTP statuses")),
            }
        }
    }
}

/// Names the engine binds in every expression.
pub(super) const RESERVED_ROOTS: [&str; 2] = ["params", "object"];

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
pub(super) fn resolve_fact(
    facts: &BTreeSet<String>,
    path: &[String],
) -> Result<Vec<String>, String> {
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

/// `path:line:col`, to name a second position in a message.
fn site(source: &Source, span: Span) -> String {
    format!(
        "{}:{}:{}",
        source.path().display(),
        span.start.line,
        span.start.column
    )
}
