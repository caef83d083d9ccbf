//! Diagnostics: what is wrong with a runbook, where, and how to fix it.
//!
//! Stages never stop at the first problem: they push into a [`Diagnostics`] collection and go
//! on, so `runbook validate` reports every problem in one pass, sorted by file and position.
//! Rendering lives here too (plain, caret excerpts, JSON, GitHub annotations) because every
//! front end must print the same words.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::source::{Source, Span};

mod code;
pub use code::Code;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warning => "warning",
        }
    }
}

/// One problem at one place.
#[derive(Clone, Debug)]
pub struct Diagnostic {
    pub severity: Severity,
    /// The check that found it, such as `unknown-field` or `missing-undo`.
    pub code: Code,
    pub message: String,
    /// How to fix it, when we know.
    pub help: Option<String>,
    pub source: Source,
    pub span: Span,
}

impl Diagnostic {
    pub fn error(code: Code, source: &Source, span: Span, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            code,
            message: message.into(),
            help: None,
            source: source.clone(),
            span,
        }
    }

    pub fn warning(code: Code, source: &Source, span: Span, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(code, source, span, message)
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn with_help_opt(mut self, help: Option<String>) -> Self {
        self.help = help;
        self
    }

    pub fn path(&self) -> &Path {
        self.source.path()
    }

    fn sort_key(&self) -> (&Path, Span, Severity, &str) {
        (self.path(), self.span, self.severity, &self.message)
    }
}

/// All problems found so far, from any stage.
#[derive(Clone, Debug, Default)]
pub struct Diagnostics {
    items: Vec<Diagnostic>,
    /// How many of `items` are errors. Checkers ask after every node or step whether it added
    /// any; counting the list each time made a file with many errors quadratic.
    errors: usize,
}

impl Diagnostics {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, diagnostic: Diagnostic) {
        if diagnostic.severity == Severity::Error {
            self.errors += 1;
        }
        self.items.push(diagnostic);
    }

    pub fn extend(&mut self, other: Diagnostics) {
        self.errors += other.errors;
        self.items.extend(other.items);
    }

    pub fn has_errors(&self) -> bool {
        self.errors > 0
    }

    pub fn error_count(&self) -> usize {
        self.errors
    }

    pub fn warning_count(&self) -> usize {
        self.items
            .iter()
            .filter(|d| d.severity == Severity::Warning)
            .count()
    }

    fn recount(&mut self) {
        self.errors = self
            .items
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count();
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter()
    }

    /// Sorted by file, then position, with exact repeats removed.
    pub fn sorted(mut self) -> Vec<Diagnostic> {
        self.items.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
        self.items.dedup_by(|a, b| a.sort_key() == b.sort_key());
        self.items
    }

    /// Turns every warning into an error (`--deny-warnings`).
    pub fn deny_warnings(&mut self) {
        for item in &mut self.items {
            item.severity = Severity::Error;
        }
        self.errors = self.items.len();
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Removes and returns the diagnostics pushed after the first `at`.
    pub fn split_off(&mut self, at: usize) -> Vec<Diagnostic> {
        let tail = self.items.split_off(at.min(self.items.len()));
        self.errors -= tail
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count();
        tail
    }

    /// Keeps only the diagnostics for which `keep` holds.
    pub fn retain(&mut self, keep: impl FnMut(&Diagnostic) -> bool) {
        self.items.retain(keep);
        self.recount();
    }
}

impl IntoIterator for Diagnostics {
    type Item = Diagnostic;
    type IntoIter = std::vec::IntoIter<Diagnostic>;

    fn into_iter(self) -> Self::IntoIter {
        self.items.into_iter()
    }
}

/// `path:line:col: error[code]: message`, then, with `excerpt`, the source line and a caret
/// under the offending text, then `= help: ...`. The code is shown so a reader can search for
/// it or waive a lint with `# runbook:allow <code>`.
pub fn render_text(diagnostic: &Diagnostic, excerpt: bool) -> String {
    let mut out = String::new();
    let span = diagnostic.span;
    let _ = writeln!(
        out,
        "{}:{}:{}: {}[{}]: {}",
        diagnostic.path().display(),
        span.start.line,
        span.start.column,
        diagnostic.severity.as_str(),
        diagnostic.code,
        diagnostic.message
    );
    if excerpt {
        if let Some(line) = diagnostic.source.line(span.start.line) {
            let gutter = span.start.line.to_string();
            let pad = " ".repeat(gutter.len());
            let line = line.replace('\t', " ");
            let width = if span.end.line == span.start.line && span.end.column > span.start.column {
                span.end.column - span.start.column
            } else {
                1
            };
            let available = line
                .chars()
                .count()
                .saturating_sub(span.start.column - 1)
                .max(1);
            let _ = writeln!(out, "{pad} |");
            let _ = writeln!(out, "{gutter} | {line}");
            let _ = writeln!(
                out,
                "{pad} | {}{}",
                " ".repeat(span.start.column.saturating_sub(1)),
                "^".repeat(width.min(available))
            );
        }
    }
    if let Some(help) = &diagnostic.help {
        let _ = writeln!(out, "  = help: {help}");
    }
    out
}

#[derive(Serialize)]
struct JsonDiagnostic<'a> {
    file: String,
    line: usize,
    column: usize,
    end_line: usize,
    end_column: usize,
    severity: Severity,
    code: Code,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    help: Option<&'a str>,
}

/// A JSON array of diagnostics, for machines.
pub fn render_json(diagnostics: &[Diagnostic]) -> String {
    let items: Vec<JsonDiagnostic<'_>> = diagnostics
        .iter()
        .map(|d| JsonDiagnostic {
            file: d.path().display().to_string(),
            line: d.span.start.line,
            column: d.span.start.column,
            end_line: d.span.end.line,
            end_column: d.span.end.column,
            severity: d.severity,
            code: d.code,
            message: &d.message,
            help: d.help.as_deref(),
        })
        .collect();
    serde_json::to_string_pretty(&items).unwrap_or_else(|_| "[]".to_owned())
}

/// A GitHub Actions workflow command (`::error file=...,line=...::message`), so problems show
/// up as annotations on the pull request's diff.
pub fn render_github(diagnostic: &Diagnostic) -> String {
    fn escape_data(text: &str) -> String {
        text.replace('%', "%25")
            .replace('\r', "%0D")
            .replace('\n', "%0A")
    }
    fn escape_property(text: &str) -> String {
        escape_data(text).replace(':', "%3A").replace(',', "%2C")
    }
    let span = diagnostic.span;
    let mut message = diagnostic.message.clone();
    if let Some(help) = &diagnostic.help {
        message.push_str("\nhelp: ");
        message.push_str(help);
    }
    let mut properties = format!(
        "file={},line={},col={}",
        escape_property(&diagnostic.path().display().to_string()),
        span.start.line,
        span.start.column
    );
    if span.end.line >= span.start.line && span.end != span.start {
        let _ = write!(
            properties,
            ",endLine={},endColumn={}",
            span.end.line, span.end.column
        );
    }
    let _ = write!(
        properties,
        ",title={}",
        escape_property(diagnostic.code.as_str())
    );
    format!(
        "::{} {}::{}",
        diagnostic.severity.as_str(),
        properties,
        escape_data(&message)
    )
}

/// The nearest of `candidates` to `word`, if one is close enough to be a likely typo.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|candidate| {
            // Short words score low on Jaro-Winkler even for one-letter slips (`rn`/`run`).
            let one_edit =
                word.chars().count() >= 2 && strsim::damerau_levenshtein(word, candidate) <= 1;
            let score = strsim::jaro_winkler(word, candidate);
            (if one_edit { score.max(0.8) } else { score }, candidate)
        })
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| candidate)
}

/// `did you mean `x`?` for a help line, when there is a near candidate.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    suggest(word, candidates).map(|candidate| format!("did you mean `{candidate}`?"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{Position, SourceFile};

    #[test]
    fn renders_caret_under_the_span() {
        let source = SourceFile::new("a.yaml", "kind: Runbok\n");
        let d = Diagnostic::error(
            Code::UnknownKind,
            &source,
            Span::on_line(Position::new(1, 7), 6),
            "unknown kind `Runbok`",
        )
        .with_help("did you mean `Runbook`?");
        assert_eq!(
            render_text(&d, true),
            "a.yaml:1:7: error[unknown-kind]: unknown kind `Runbok`\n  |\n1 | kind: Runbok\n  |       ^^^^^^\n  = help: did you mean `Runbook`?\n"
        );
    }

    #[test]
    fn github_annotation_escapes_properties_and_data() {
        let source = SourceFile::new("dir,x/a.yaml", "x\n");
        let d = Diagnostic::warning(
            Code::MissingUndo,
            &source,
            Span::point(Position::new(1, 1)),
            "50% done\nnext",
        );
        assert_eq!(
            render_github(&d),
            "::warning file=dir%2Cx/a.yaml,line=1,col=1,title=missing-undo::50%25 done%0Anext"
        );
    }

    #[test]
    fn suggests_only_near_names() {
        assert_eq!(suggest("neds", ["needs", "when", "timeout"]), Some("needs"));
        assert_eq!(suggest("zzzz", ["needs", "when"]), None);
        assert_eq!(suggest("rn", ["id", "run", "readonly"]), Some("run"));
        assert_eq!(suggest("rn", ["id", "run", "readonly"]), Some("run"));
    }
}
