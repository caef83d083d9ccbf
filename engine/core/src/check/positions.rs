//! Positions inside one document: JSON pointers and offsets inside scalars, mapped back to
//! file:line:col, so every diagnostic points at the text the user wrote.

use super::*;

/// Positions inside one document.
#[derive(Clone, Copy)]
pub(super) struct At<'a> {
    pub(super) source: &'a Source,
    pub(super) root: &'a Node,
}

impl<'a> At<'a> {
    pub(super) fn of<T>(loaded: &'a Loaded<T>) -> Self {
        Self {
            source: &loaded.source,
            root: &loaded.root,
        }
    }

    pub(super) fn span(&self, pointer: &str) -> Span {
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

    pub(super) fn key_span(&self, pointer: &str) -> Span {
        self.root
            .key_span(pointer)
            .unwrap_or_else(|| self.span(pointer))
    }

    /// Maps a 1-based line/column inside `text` (an expression or template written at
    /// `pointer`) to its place in the file, whatever the scalar's quoting or block style.
    pub(super) fn inside(&self, pointer: &str, text: &str, line: usize, column: usize) -> Span {
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
    pub(super) fn allowed(&self, span: Span, code: Code) -> Option<Option<String>> {
        [span.start.line.saturating_sub(1), span.start.line]
            .iter()
            .find_map(|line| {
                let text = self.source.line(*line)?;
                let comment = &text[text.find('#')?..];
                let rest = &comment[comment.find(ALLOW_PRAGMA)? + ALLOW_PRAGMA.len()..];
                let rest = rest.trim_start().strip_prefix(code.as_str())?;
                // The whole code, not a prefix of another word (`missing-undoo` is a typo that
                // `unknown-code` reports, not a waiver).
                if !(rest.is_empty()
                    || rest.starts_with(char::is_whitespace)
                    || rest.starts_with([':', '—']))
                {
                    return None;
                }
                let reason = rest.trim().trim_start_matches(['-', '—', ':']).trim();
                Some((!reason.is_empty()).then(|| reason.to_owned()))
            })
    }
}
