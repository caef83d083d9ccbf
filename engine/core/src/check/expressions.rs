//! Expressions and templates: compiled once here, with every name they read resolved against
//! the facts, params and locals in scope, and every error mapped back into the YAML.

use super::*;

impl Checker<'_> {
    pub(super) fn json_params(
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

    pub(super) fn json_template(
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

    pub(super) fn argv(
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
                        Code::Command,
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
            self.error(Code::Command, at, at.span(pointer), "the command is empty");
        }
        words
            .iter()
            .map(|(word, p)| {
                let template = self.template(at, p, word, scope, reads);
                self.note_command_params(at, p, word, &template);
                template
            })
            .collect()
    }

    /// Records where `template`, one argument of a command, reads params.
    fn note_command_params(&mut self, at: At<'_>, pointer: &str, text: &str, template: &Template) {
        for part in &template.parts {
            let crate::expr::TemplatePart::Expr(expression, offset) = part else {
                continue;
            };
            let base = self.offset_span(at, pointer, text, *offset).start;
            for reference in &expression.references {
                let name = match reference.path.as_slice() {
                    [root, name, ..] if root == "params" => name,
                    _ => continue,
                };
                let start = if reference.line == 1 {
                    Position::new(base.line, base.column + reference.column - 1)
                } else {
                    at.inside(
                        pointer,
                        &expression.source,
                        reference.line,
                        reference.column,
                    )
                    .start
                };
                let span = Span::on_line(start, reference.dotted().chars().count());
                self.command_params.push((name.clone(), span));
            }
        }
    }

    pub(super) fn duration(&mut self, at: At<'_>, pointer: &str, text: &str) -> Option<Duration> {
        match parse_duration(text) {
            Ok(duration) => Some(duration),
            Err(message) => {
                self.error(Code::Duration, at, at.span(pointer), message);
                None
            }
        }
    }

    /// The span of character `offset` inside the string at `pointer`.
    pub(super) fn offset_span(&self, at: At<'_>, pointer: &str, text: &str, offset: usize) -> Span {
        at.locator(pointer, text).offset(offset)
    }

    pub(super) fn template(
        &mut self,
        at: At<'_>,
        pointer: &str,
        text: &str,
        scope: &Scope<'_>,
        reads: &mut Reads,
    ) -> Template {
        match Template::parse_with(text, &self.functions.compiled) {
            Ok(template) => {
                let mut locator = at.locator(pointer, text);
                for part in &template.parts {
                    if let crate::expr::TemplatePart::Expr(expression, offset) = part {
                        reads.functions.extend(expression.functions.iter().cloned());
                        let base = locator.offset(*offset);
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
                    Code::ExpressionSyntax,
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

    pub(super) fn expression(
        &mut self,
        at: At<'_>,
        pointer: &str,
        text: &str,
        scope: &Scope<'_>,
        reads: &mut Reads,
    ) -> Option<Expression> {
        match Expression::compile_with(text, &self.functions.compiled) {
            Ok(compiled) => {
                let expression = compiled.expression;
                reads.functions.extend(expression.functions.iter().cloned());
                if self.resolve(at, pointer, &expression, scope, reads, None) {
                    Some(expression)
                } else {
                    None
                }
            }
            // Already said once, at the fact named with the word.
            Err(error)
                if self
                    .reserved_in_fact_names
                    .iter()
                    .any(|word| error.message == format!("'{word}' is a reserved keyword")) =>
            {
                None
            }
            Err(error) => {
                let span = at.inside(pointer, text, error.line, error.column);
                let mut diagnostic = Diagnostic::error(
                    Code::ExpressionSyntax,
                    at.source,
                    span,
                    format!("syntax error in expression: {}", error.message),
                );
                if let Some(cut) = cut_by_a_comment(at, pointer) {
                    diagnostic = diagnostic.with_help(format!(
                        "` #` in a plain YAML value starts a comment, so the expression ends before `{cut}`; quote the whole expression"
                    ));
                }
                self.diagnostics.push(diagnostic);
                None
            }
        }
    }

    /// Checks that every name `expression` reads exists; records the facts and params it reads.
    /// `base`: where the expression's first character is, for templates.
    pub(super) fn resolve(
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
            if root == "vars" || root == "steps" {
                ok &= self.resolve_run_name(at, span, &reference.path, scope);
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
                            Code::UndefinedParam,
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
                    self.error_help(Code::UndefinedFact, at, span, message, help);
                }
            }
        }
        ok
    }
}

impl Checker<'_> {
    /// `vars.NAME` and `steps.<id>.<field>`: what earlier steps made. Steps read them; facts
    /// and preconditions, read before any step ran, cannot.
    fn resolve_run_name(
        &mut self,
        at: At<'_>,
        span: Span,
        path: &[String],
        scope: &Scope<'_>,
    ) -> bool {
        let root = path[0].as_str();
        let Some(names) = scope.run else {
            self.error_help(
                Code::UnknownVar,
                at,
                Span::on_line(span.start, root.chars().count()),
                format!("`{root}` cannot be read here"),
                Some(format!(
                    "facts and preconditions are read before any step runs; read `{root}` in a step's expression"
                )),
            );
            return false;
        };
        let Some(name) = path.get(1) else {
            return true;
        };
        let named = Span::on_line(span.start, root.chars().count() + 1 + name.chars().count());
        if root == "vars" {
            if names.vars.contains(name) {
                return true;
            }
            if let Some((message, help)) = names.unsure.get(name) {
                self.error_help(
                    Code::UnknownVar,
                    at,
                    named,
                    message.clone(),
                    Some(help.clone()),
                );
                return false;
            }
            let help = did_you_mean(name, names.vars.iter().map(String::as_str)).or_else(|| {
                Some(format!(
                    "capture it in an earlier step: `capture: {{{name}: EXPRESSION}}`"
                ))
            });
            self.error_help(
                Code::UnknownVar,
                at,
                named,
                format!("no step captures `vars.{name}`"),
                help,
            );
            return false;
        }
        // `steps.restart_api` reads step `restart-api`: a `-` would be a minus.
        if !names
            .steps
            .iter()
            .any(|id| id == name || id.replace('-', "_") == *name)
        {
            let written: Vec<String> = names.steps.iter().map(|id| id.replace('-', "_")).collect();
            self.error_help(
                Code::UnknownStep,
                at,
                named,
                format!("`steps.{name}` names no step"),
                did_you_mean(name, written.iter().map(String::as_str)).or_else(|| {
                    Some(
                        "write a step's id with `_` for `-`: `steps.restart_api.status`".to_owned(),
                    )
                }),
            );
            return false;
        }
        match path.get(2).map(String::as_str) {
            None | Some("output" | "exitCode" | "status") => true,
            Some(field) => {
                self.error_help(
                    Code::StepResult,
                    at,
                    Span::on_line(span.start, path[..3].join(".").chars().count()),
                    format!("a step result has no `{field}`"),
                    Some("a step result has `status`, `output` and `exitCode`".to_owned()),
                );
                false
            }
        }
    }
}

/// What a ` #` comment cut off the plain (unquoted) YAML scalar at `pointer`, if it did: the
/// rest of its line. `check: status == #{a: 1}` is the expression `status ==`.
fn cut_by_a_comment(at: At<'_>, pointer: &str) -> Option<String> {
    let span = at.span(pointer);
    let text = at.source.text();
    // Positions are 1-based lines and columns (in characters).
    let line = |number: usize| text.lines().nth(number.checked_sub(1)?);
    let first = line(span.start.line)?
        .chars()
        .nth(span.start.column.checked_sub(1)?)?;
    if matches!(first, '"' | '\'' | '|' | '>') {
        return None;
    }
    let rest: String = line(span.end.line)?
        .chars()
        .skip(span.end.column.checked_sub(1)?)
        .collect();
    (rest.starts_with([' ', '\t']) && rest.trim_start().starts_with('#'))
        .then(|| rest.trim().to_owned())
}
