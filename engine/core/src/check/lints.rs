//! Lints: warnings about runbooks that are valid but probably not what their author meant.
//! Each can be waived where it is reported with `# runbook:allow <code> <reason>`.

use super::facts::RunbookFacts;
use super::*;

impl Checker<'_> {
    /// A param bound from an alert in a runbook that no alert starts.
    pub(super) fn lint_unused_from(
        &mut self,
        at: At<'_>,
        params: &[ParamSpec],
        triggers: &[TriggerSpec],
    ) {
        for param in params {
            if param.from.is_some() && triggers.is_empty() {
                self.diagnostics.push(
                    Diagnostic::warning(
                        Code::UnusedFrom,
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
    }

    /// A string param that reaches a command's arguments should say what it may hold: a
    /// value such as `--all` or `-A` would be taken as an option. Bound from an alert, it
    /// must (an error): whoever can send alerts chooses it. Otherwise a warning, waivable.
    /// Reported once per param, at its first use in a command. Typed params (integers,
    /// booleans, durations) are constrained by their type.
    pub(super) fn lint_params_in_commands(&mut self, at: At<'_>, params: &[ParamSpec]) {
        let mut reported = BTreeSet::new();
        for (name, span) in std::mem::take(&mut self.command_params) {
            let Some(param) = params.iter().find(|param| param.name == name) else {
                continue;
            };
            let constrained = param.kind != document::ParamType::String
                || param.pattern.is_some()
                || !param.allowed.is_empty();
            let waived = param.from.is_none() && at.allowed(span, Code::ParamInCommand).is_some();
            if constrained || waived || !reported.insert(name.clone()) {
                continue;
            }
            let help = format!(
                "give param `{name}` (line {}) a `pattern`, such as `pattern: \"[a-z0-9]([-a-z0-9]*[a-z0-9])?\"`, or an `enum` of the values it may take",
                param.span.start.line
            );
            let diagnostic = match &param.from {
                Some(from) => Diagnostic::error(
                    Code::AlertParamInCommand,
                    at.source,
                    span,
                    format!(
                        "param `{name}` is bound from `{from}` and reaches a command's arguments, but has no `pattern` or `enum`: whoever can send an alert chooses its value, such as `--all`"
                    ),
                )
                .with_help(help),
                None => Diagnostic::warning(
                    Code::ParamInCommand,
                    at.source,
                    span,
                    format!(
                        "param `{name}` reaches a command's arguments, but has no `pattern` or `enum` to say what it may hold"
                    ),
                )
                .with_help(help),
            };
            self.diagnostics.push(diagnostic);
        }
    }

    /// Local facts nothing reads are likely a typo or left over.
    pub(super) fn lint_unused_facts(
        &mut self,
        at: At<'_>,
        declared: &[document::Fact],
        local: &RunbookFacts,
        reads: &Reads,
    ) {
        for (index, fact) in declared.iter().enumerate() {
            let read_by_others = local
                .checked
                .values()
                .any(|other| other.spec.reads.contains(&fact.name));
            if local.names.contains(&fact.name)
                && !reads.facts.contains(&fact.name)
                && !read_by_others
            {
                self.diagnostics.push(
                    Diagnostic::warning(Code::UnusedFact, at.source, at.span(&format!("/spec/facts/{index}/name")), format!("fact `{}` is never read", fact.name))
                        .with_help("read it in a precondition, `when`, `verify` or a `${...}` template, or remove it"),
                );
            }
        }
    }

    /// Runbooks live in `runbooks/<name>/runbook.yaml`, so the folder says which runbook it
    /// holds; a folder renamed without its runbook (or the reverse) misleads whoever browses
    /// it. Flat files (`runbooks/<name>.yaml`) are not linted.
    pub(super) fn lint_folder_name(&mut self, at: At<'_>, name: &str) {
        let path = at.source.path();
        let in_folder = path
            .file_name()
            .is_some_and(|file| file == "runbook.yaml" || file == "runbook.yml");
        let Some(folder) = path.parent().and_then(|parent| parent.file_name()) else {
            return;
        };
        let folder = folder.to_string_lossy();
        if !in_folder || folder == name {
            return;
        }
        self.diagnostics.push(
            Diagnostic::warning(
                Code::FolderName,
                at.source,
                at.span("/metadata/name"),
                format!("runbook `{name}` is in the folder `{folder}`"),
            )
            .with_help(format!(
                "a runbook's folder is named after it: rename the folder to `{name}`, or set `metadata.name: {folder}`"
            )),
        );
    }

    /// A `# runbook:allow <code>` comment whose code does not exist waives nothing, which its
    /// author would not notice until the warning they meant to waive shows up.
    pub(super) fn lint_allow_comments(&mut self, at: At<'_>) {
        // Only this document's lines: a file may hold several runbooks.
        let lines = at.root.span.start.line..=at.root.span.end.line.min(at.source.line_count());
        for number in lines {
            let Some(line) = at.source.line(number) else {
                continue;
            };
            let Some(hash) = line.find('#') else {
                continue;
            };
            // Only a comment that is the pragma; prose that mentions it waives nothing either.
            let comment = line[hash + 1..].trim_start();
            if !comment.starts_with(ALLOW_PRAGMA) {
                continue;
            }
            let after = line.len() - comment.len() + ALLOW_PRAGMA.len();
            let rest = &line[after..];
            let word = rest.split_whitespace().next().unwrap_or("");
            if Code::from_name(word).is_some() {
                continue;
            }
            let column = line[..after + rest.len() - rest.trim_start().len()]
                .chars()
                .count()
                + 1;
            let span = Span::on_line(Position::new(number, column), word.chars().count().max(1));
            let message = if word.is_empty() {
                format!("`{ALLOW_PRAGMA}` names no code to waive")
            } else {
                format!("`{ALLOW_PRAGMA} {word}` names no known code, so it waives nothing")
            };
            let help = did_you_mean(word, Code::ALL.iter().map(|code| code.as_str()))
                .unwrap_or_else(|| "write the code shown in the warning to waive, such as `# runbook:allow missing-undo <reason>`".to_owned());
            self.diagnostics.push(
                Diagnostic::warning(Code::UnknownCode, at.source, span, message).with_help(help),
            );
        }
    }
}
