//! Source files and positions.
//!
//! Every diagnostic names `file:line:col`, so every stage that can complain keeps a [`Span`]
//! pointing back into the [`SourceFile`] it came from. Lines and columns are 1-based and counted
//! in characters, the way editors and `grep -n` count them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A position in a source file: 1-based line and column, counted in characters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl Position {
    pub const fn new(line: usize, column: usize) -> Self {
        Self { line, column }
    }
}

/// A range in one source file. `end` is exclusive; it may equal `start` for a point.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span {
    pub start: Position,
    pub end: Position,
}

impl Span {
    pub const fn point(position: Position) -> Self {
        Self {
            start: position,
            end: position,
        }
    }

    pub const fn new(start: Position, end: Position) -> Self {
        Self { start, end }
    }

    /// The span of `width` characters starting at `start`, on one line.
    pub const fn on_line(start: Position, width: usize) -> Self {
        Self {
            start,
            end: Position::new(start.line, start.column + width),
        }
    }
}

/// A loaded file: its path as the user named it, and its text.
#[derive(Debug)]
pub struct SourceFile {
    path: PathBuf,
    text: String,
    line_starts: Vec<usize>,
}

/// Shared handle to a source file; diagnostics and compiled plans keep one each.
pub type Source = Arc<SourceFile>;

impl SourceFile {
    pub fn new(path: impl Into<PathBuf>, text: impl Into<String>) -> Source {
        let text = text.into();
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(index, _)| index + 1));
        Arc::new(Self {
            path: path.into(),
            text,
            line_starts,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// The text of a 1-based line, without its line ending.
    pub fn line(&self, line: usize) -> Option<&str> {
        let start = *self.line_starts.get(line.checked_sub(1)?)?;
        let end = self
            .line_starts
            .get(line)
            .map_or(self.text.len(), |next| next - 1);
        let text = self.text.get(start..end)?;
        Some(text.strip_suffix('\r').unwrap_or(text))
    }

    pub fn line_count(&self) -> usize {
        self.line_starts.len()
    }

    /// Finds `needle` in the source at or after `from`, looking at most `max_lines` lines ahead.
    /// Used to map positions inside an expression back to where its text sits in the YAML,
    /// whatever the scalar's quoting or block style.
    pub fn find_after(&self, needle: &str, from: Position, max_lines: usize) -> Option<Position> {
        if needle.is_empty() {
            return None;
        }
        let last = (from.line + max_lines).min(self.line_count());
        for line_number in from.line..=last {
            let line = self.line(line_number)?;
            let skip = if line_number == from.line {
                from.column.saturating_sub(1)
            } else {
                0
            };
            let byte_skip = line
                .char_indices()
                .nth(skip)
                .map_or(line.len(), |(index, _)| index);
            if let Some(found) = line[byte_skip..].find(needle) {
                let column = line[..byte_skip + found].chars().count() + 1;
                return Some(Position::new(line_number, column));
            }
        }
        None
    }
}
