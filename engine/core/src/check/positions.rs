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
        self.locator(pointer, text).line_column(line, column)
    }

    /// Maps places inside `text`, the string at `pointer`, to the file. Build one per string
    /// and ask it for every place: it looks each line of the text up in the file once.
    pub(super) fn locator<'t>(&self, pointer: &str, text: &'t str) -> Locator<'a, 't> {
        let mut line_starts = vec![0];
        line_starts.extend(
            text.chars()
                .enumerate()
                .filter(|(_, character)| *character == '\n')
                .map(|(offset, _)| offset + 1),
        );
        let lines: Vec<&str> = text.lines().collect();
        Locator {
            source: self.source,
            start: self.span(pointer).start,
            window: lines.len() + 2,
            known: vec![None; lines.len()],
            lines,
            line_starts,
            last_found: None,
        }
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

/// Places inside one string of a document, mapped to the file (see [`At::locator`]).
///
/// The text of a scalar is not the text of the file: quotes, escapes, folding and block
/// indentation change it. So a line of the text is looked for in the file after the scalar's
/// start, whole where it appears as written, else by a few characters around the place.
pub(super) struct Locator<'a, 't> {
    source: &'a Source,
    /// Where the scalar starts in the file.
    start: Position,
    /// How many lines after the start a line of the text is looked for.
    window: usize,
    lines: Vec<&'t str>,
    /// The character offset at which each line of the text starts.
    line_starts: Vec<usize>,
    /// Each line of the text once measured: where it was found whole, if it was.
    known: Vec<Option<Line>>,
    /// The last line of the text found whole: (its index, where it ends in the file).
    last_found: Option<(usize, Position)>,
}

#[derive(Clone, Copy)]
struct Line {
    /// Its length in characters, and how many of them lead with whitespace.
    characters: usize,
    lead: usize,
    /// Where its trimmed text starts in the file.
    found: Option<Position>,
}

impl Locator<'_, '_> {
    /// The place of character `offset` of the text.
    pub(super) fn offset(&mut self, offset: usize) -> Span {
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let column = offset - self.line_starts[line.saturating_sub(1)] + 1;
        self.line_column(line, column)
    }

    /// The place of 1-based `line` and `column` of the text.
    pub(super) fn line_column(&mut self, line: usize, column: usize) -> Span {
        let index = line.saturating_sub(1);
        let measured = self.measure(index);
        let target = column.saturating_sub(1).min(measured.characters);
        if let Some(found) = measured.found {
            let offset = target.saturating_sub(measured.lead);
            return Span::point(Position::new(found.line, found.column + offset));
        }
        // Short pieces right at and right before the column, which still match when quoting,
        // escapes or folding changed the rest of the line.
        let characters: Vec<char> = self
            .lines
            .get(index)
            .copied()
            .unwrap_or("")
            .chars()
            .collect();
        let mut candidates: Vec<(String, usize)> = Vec::new();
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
            if let Some(found) = self.source.find_after(&needle, self.start, self.window) {
                return Span::point(Position::new(found.line, found.column + offset));
            }
        }
        Span::point(self.start)
    }

    /// Measures line `index` of the text, looking it up in the file the first time.
    fn measure(&mut self, index: usize) -> Line {
        if let Some(Some(line)) = self.known.get(index) {
            return *line;
        }
        let text = self.lines.get(index).copied().unwrap_or("");
        let needle = text.trim();
        // The lines of a scalar come in the file in the order of the text, so a line is looked
        // for after the one before it was found (a repeated line then finds its own place, and
        // a block of many lines is read once); failing that, after the scalar's start.
        let after_previous = self
            .last_found
            .filter(|(found, _)| *found < index)
            .and_then(|(_, end)| self.source.find_after(needle, end, self.window));
        let found =
            after_previous.or_else(|| self.source.find_after(needle, self.start, self.window));
        let line = Line {
            characters: text.chars().count(),
            lead: text.chars().take_while(|c| c.is_whitespace()).count(),
            found,
        };
        if let Some(found) = found {
            let end = Position::new(found.line, found.column + needle.chars().count());
            if self.last_found.is_none_or(|(last, _)| last < index) {
                self.last_found = Some((index, end));
            }
        }
        if let Some(slot) = self.known.get_mut(index) {
            *slot = Some(line);
        }
        line
    }
}
