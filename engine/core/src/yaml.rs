//! YAML to a tree of [`Node`]s that remember where they came from.
//!
//! We read the event stream of `saphyr-parser` ourselves instead of going through a serde
//! deserializer: serde stops at the first error and forgets positions, while a runbook author
//! needs every problem at once, each with `file:line:col`. The tree keeps the span and quoting
//! style of every node and the span of every mapping key; later stages look nodes up by JSON
//! pointer (`/spec/steps/2/needs/0`) to place their diagnostics.

use std::borrow::Cow;
use std::collections::HashMap;

use saphyr::Scalar;
use saphyr_parser::{
    Event, Marker, Parser, ScalarStyle, Span as YamlSpan, SpannedEventReceiver, Tag,
};

use crate::diagnostic::{Code, Diagnostic, Diagnostics};
use crate::source::{Position, Source, Span};

/// How many nodes a file may hold, counting those that aliases expand to. Bounds the memory an
/// "alias bomb" can take.
const MAX_NODES: usize = 200_000;
/// How deeply collections may nest, counting those an alias brings in. The deepest real runbook
/// nests about 15 levels (a Deployment manifest under `apply`: document, spec, steps, step,
/// apply, manifest, spec, template, spec, containers, container, env, item, valueFrom, ...),
/// so 64 leaves room for any manifest while keeping every later pass that walks the tree
/// recursively (the structure check, the conversion to JSON, serde, the checker, dropping the
/// tree) a few kilobytes of stack per level deep, far inside the 2 MiB of a worker thread.
const MAX_DEPTH: usize = 64;
/// A mapping's keys are looked up in its list of entries while it is this small, and in a hash
/// map after: loading and looking up stay linear in the keys without an allocation for every
/// small mapping (nearly all of them).
const SMALL_MAPPING: usize = 16;

/// A YAML value with its place in the file.
#[derive(Clone, Debug)]
pub struct Node {
    pub value: Value,
    pub span: Span,
    pub style: Style,
}

#[derive(Clone, Debug)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
    Seq(Vec<Node>),
    Map(Mapping),
}

/// A mapping's entries in file order, each key once.
#[derive(Clone, Debug, Default)]
pub struct Mapping {
    entries: Vec<Entry>,
    /// Key to entry, once the mapping holds more than [`SMALL_MAPPING`] entries.
    index: Option<HashMap<String, usize>>,
}

impl Mapping {
    /// The entry holding `key`.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        match &self.index {
            Some(index) => index.get(key).and_then(|&at| self.entries.get(at)),
            None => self.entries.iter().find(|entry| entry.key == key),
        }
    }

    /// Adds an entry whose key the mapping does not hold yet.
    fn push(&mut self, entry: Entry) {
        match &mut self.index {
            Some(index) => {
                index.insert(entry.key.clone(), self.entries.len());
            }
            None if self.entries.len() >= SMALL_MAPPING => {
                let index = self
                    .entries
                    .iter()
                    .chain(std::iter::once(&entry))
                    .enumerate()
                    .map(|(at, entry)| (entry.key.clone(), at))
                    .collect();
                self.index = Some(index);
            }
            None => {}
        }
        self.entries.push(entry);
    }
}

impl std::ops::Deref for Mapping {
    type Target = [Entry];

    fn deref(&self) -> &[Entry] {
        &self.entries
    }
}

#[derive(Clone, Debug)]
pub struct Entry {
    pub key: String,
    pub key_span: Span,
    pub value: Node,
}

/// How a scalar was written; quoted scalars are always strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    Plain,
    Quoted,
    Block,
    Collection,
}

impl Node {
    /// What kind of value this is, for messages: "a string", "a list".
    pub fn describe(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::String(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::String(text) => Some(text),
            _ => None,
        }
    }

    /// The value under `key`, if this is a mapping that has it.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|entry| &entry.value)
    }

    pub fn entry(&self, key: &str) -> Option<&Entry> {
        match &self.value {
            Value::Map(mapping) => mapping.get(key),
            _ => None,
        }
    }

    /// The node at a JSON pointer such as `/spec/steps/0/run`.
    pub fn pointer(&self, pointer: &str) -> Option<&Node> {
        let mut node = self;
        for token in pointer.split('/').skip(1) {
            let token = token.replace("~1", "/").replace("~0", "~");
            node = match &node.value {
                Value::Map(_) => node.get(&token)?,
                Value::Seq(items) => items.get(token.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(node)
    }

    /// The span of the key that holds the value at `pointer`, or of the value itself when it is
    /// a list item or the root. Unknown-field errors point at keys.
    pub fn key_span(&self, pointer: &str) -> Option<Span> {
        let (parent, last) = pointer.rsplit_once('/')?;
        let parent = self.pointer(parent)?;
        let last = last.replace("~1", "/").replace("~0", "~");
        match &parent.value {
            Value::Map(_) => parent.entry(&last).map(|entry| entry.key_span),
            Value::Seq(items) => items.get(last.parse::<usize>().ok()?).map(|n| n.span),
            _ => None,
        }
    }

    /// Converts to JSON for serde. Non-finite floats become null; the structure check has
    /// already reported them.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as Json;
        match &self.value {
            Value::Null => Json::Null,
            Value::Bool(value) => Json::Bool(*value),
            Value::Int(value) => Json::from(*value),
            Value::Float(value) => {
                serde_json::Number::from_f64(*value).map_or(Json::Null, Json::Number)
            }
            Value::String(value) => Json::String(value.clone()),
            Value::Seq(items) => Json::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => Json::Object(
                entries
                    .iter()
                    .map(|entry| (entry.key.clone(), entry.value.to_json()))
                    .collect(),
            ),
        }
    }
}

/// One YAML document of a file (files may hold several, separated by `---`).
#[derive(Clone, Debug)]
pub struct YamlDocument {
    pub source: Source,
    pub root: Node,
}

/// Parses every document in `source`. Syntax errors, duplicate keys, and over-large or
/// over-deep input become diagnostics; what could be read is returned.
pub fn parse(source: &Source, diagnostics: &mut Diagnostics) -> Vec<YamlDocument> {
    let mut builder = Builder {
        source: source.clone(),
        stack: Vec::new(),
        documents: Vec::new(),
        anchors: HashMap::new(),
        nodes: 0,
        diagnostics: Diagnostics::new(),
        failed: false,
    };
    // `Parser::load` recurses once per nesting level and overflows the stack on input such as
    // `- - - - ...` long before the receiver could refuse it, so read the events one by one
    // (the parser itself keeps its state on the heap) and stop at the first fatal problem.
    let mut parser = Parser::new_from_str(source.text());
    let mut outcome = Ok(());
    while !builder.failed {
        match parser.next_event() {
            None => break,
            Some(Ok((event, yaml_span))) => builder.on_event(event, yaml_span),
            Some(Err(error)) => {
                outcome = Err(error);
                break;
            }
        }
    }
    if let Err(error) = outcome {
        let position = position(error.marker());
        // The parser often trips a line away from a tab used for indentation; point at the tab.
        let tab = (position.line.saturating_sub(1)..=position.line + 1).find_map(|line| {
            let text = source.line(line)?;
            let indent: String = text.chars().take_while(|c| c.is_whitespace()).collect();
            indent
                .find('\t')
                .map(|column| Position::new(line, indent[..column].chars().count() + 1))
        });
        let message = format!("invalid YAML: {}", error.info());
        let diagnostic = match tab {
            Some(at) => Diagnostic::error(Code::YamlSyntax, source, Span::point(at), message)
                .with_help("YAML does not allow tabs for indentation; indent with spaces"),
            None => Diagnostic::error(Code::YamlSyntax, source, Span::point(position), message),
        };
        builder.diagnostics.push(diagnostic);
        builder.failed = true;
    }
    let failed = builder.failed;
    diagnostics.extend(builder.diagnostics);
    if failed {
        return Vec::new();
    }
    builder
        .documents
        .into_iter()
        .map(|root| YamlDocument {
            source: source.clone(),
            root,
        })
        .collect()
}

fn position(marker: &Marker) -> Position {
    Position::new(marker.line().max(1), marker.col() + 1)
}

fn span(yaml_span: &YamlSpan) -> Span {
    Span::new(position(&yaml_span.start), position(&yaml_span.end))
}

enum Frame {
    Seq {
        start: Position,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        start: Position,
        anchor: usize,
        entries: Mapping,
        /// The key waiting for its value, and whether it repeats an earlier key.
        pending_key: Option<(String, Span, bool)>,
    },
}

/// A node an anchor names, with what an alias to it adds to the document.
struct Anchored {
    node: Node,
    /// How many nodes it holds, itself included.
    nodes: usize,
    /// How many collections deep it nests (0 for a scalar).
    depth: usize,
}

struct Builder {
    source: Source,
    stack: Vec<Frame>,
    documents: Vec<Node>,
    /// The anchored nodes of the current document. Anchors end with their document.
    anchors: HashMap<usize, Anchored>,
    nodes: usize,
    diagnostics: Diagnostics,
    failed: bool,
}

impl Builder {
    fn fail(&mut self, at: Span, code: Code, message: String) {
        if !self.failed {
            self.diagnostics
                .push(Diagnostic::error(code, &self.source, at, message));
        }
        self.failed = true;
    }

    fn count(&mut self, nodes: usize, at: Span) -> bool {
        self.nodes += nodes;
        if self.nodes > MAX_NODES {
            self.fail(
                at,
                Code::YamlTooLarge,
                format!("the document expands to more than {MAX_NODES} nodes (check its aliases)"),
            );
            return false;
        }
        true
    }

    fn scalar(
        &mut self,
        text: Cow<'_, str>,
        style: ScalarStyle,
        tag: Option<Cow<'_, Tag>>,
        at: Span,
    ) -> Option<Node> {
        let node_style = match style {
            ScalarStyle::Plain => Style::Plain,
            ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted => Style::Quoted,
            _ => Style::Block,
        };
        let Some(scalar) = Scalar::parse_from_cow_and_metadata(text.clone(), style, tag.as_ref())
        else {
            self.fail(at, Code::YamlTag, format!("`{text}` does not fit its tag"));
            return None;
        };
        let value = match scalar {
            Scalar::Null => Value::Null,
            Scalar::Boolean(value) => Value::Bool(value),
            Scalar::Integer(value) => Value::Int(value),
            Scalar::FloatingPoint(value) => {
                if !value.is_finite() {
                    self.fail(
                        at,
                        Code::YamlNumber,
                        format!("`{text}` is not a finite number"),
                    );
                    return None;
                }
                Value::Float(value.into_inner())
            }
            Scalar::String(value) => Value::String(value.into_owned()),
        };
        Some(Node {
            value,
            span: at,
            style: node_style,
        })
    }

    fn insert(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            let (nodes, depth) = measure(&node);
            let anchored = Anchored {
                node: node.clone(),
                nodes,
                depth,
            };
            self.anchors.insert(anchor, anchored);
        }
        match self.stack.last_mut() {
            None => self.documents.push(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map {
                entries,
                pending_key,
                ..
            }) => match pending_key.take() {
                None => {
                    let key = match &node.value {
                        Value::String(text) => text.clone(),
                        Value::Int(value) => value.to_string(),
                        Value::Bool(value) => value.to_string(),
                        Value::Float(value) => value.to_string(),
                        Value::Null => "null".to_owned(),
                        Value::Seq(_) | Value::Map(_) => {
                            let at = node.span;
                            self.fail(
                                at,
                                Code::YamlKey,
                                "mapping keys must be plain strings".to_owned(),
                            );
                            return;
                        }
                    };
                    let first = entries.get(&key).map(|first| first.key_span);
                    if let Some(first) = first {
                        let message = format!(
                            "duplicate key `{key}` (first given at line {})",
                            first.start.line
                        );
                        self.diagnostics.push(Diagnostic::error(
                            Code::DuplicateKey,
                            &self.source,
                            node.span,
                            message,
                        ));
                    }
                    *pending_key = Some((key, node.span, first.is_some()));
                }
                // A duplicate key was reported above; keep the first value so later
                // diagnostics point at what the reader sees first.
                Some((_, _, true)) => {}
                Some((key, key_span, false)) => {
                    entries.push(Entry {
                        key,
                        key_span,
                        value: node,
                    });
                }
            },
        }
    }

    /// An alias: a copy of the node its anchor names, placed at the alias.
    fn alias(&mut self, anchor: usize, at: Span) {
        let Some((nodes, depth)) = self
            .anchors
            .get(&anchor)
            .map(|anchored| (anchored.nodes, anchored.depth))
        else {
            let open = self.stack.iter().any(|frame| match frame {
                Frame::Seq { anchor: open, .. } | Frame::Map { anchor: open, .. } => {
                    *open == anchor
                }
            });
            if open {
                self.fail(
                    at,
                    Code::YamlAlias,
                    "alias to the collection that holds it: a node cannot contain itself"
                        .to_owned(),
                );
            } else {
                // The parser knows the anchor from an earlier document; within one document it
                // refuses an unknown name itself, with this message.
                self.fail(
                    at,
                    Code::YamlSyntax,
                    "invalid YAML: while parsing node, found unknown anchor".to_owned(),
                );
            }
            return;
        };
        if self.stack.len() + depth > MAX_DEPTH {
            self.fail(
                at,
                Code::YamlTooDeep,
                format!("collections nest deeper than {MAX_DEPTH} levels (through this alias)"),
            );
            return;
        }
        if !self.count(nodes, at) {
            return;
        }
        if let Some(anchored) = self.anchors.get(&anchor) {
            let mut node = anchored.node.clone();
            node.span = at;
            self.insert(node, 0);
        }
    }
}

impl<'input> SpannedEventReceiver<'input> for Builder {
    fn on_event(&mut self, event: Event<'input>, yaml_span: YamlSpan) {
        if self.failed {
            return;
        }
        let at = span(&yaml_span);
        match event {
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentStart(_) => {}
            Event::DocumentEnd => {
                self.anchors.clear();
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if self.stack.len() >= MAX_DEPTH {
                    self.fail(
                        at,
                        Code::YamlTooDeep,
                        format!("collections nest deeper than {MAX_DEPTH} levels"),
                    );
                    return;
                }
                if !self.count(1, at) {
                    return;
                }
                self.stack
                    .push(if matches!(event, Event::SequenceStart(..)) {
                        Frame::Seq {
                            start: at.start,
                            anchor,
                            items: Vec::new(),
                        }
                    } else {
                        Frame::Map {
                            start: at.start,
                            anchor,
                            entries: Mapping::default(),
                            pending_key: None,
                        }
                    });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(frame) = self.stack.pop() else {
                    return;
                };
                let (node, anchor) = match frame {
                    Frame::Seq {
                        start,
                        anchor,
                        items,
                    } => (
                        Node {
                            value: Value::Seq(items),
                            span: Span::new(start, at.end),
                            style: Style::Collection,
                        },
                        anchor,
                    ),
                    Frame::Map {
                        start,
                        anchor,
                        entries,
                        ..
                    } => (
                        Node {
                            value: Value::Map(entries),
                            span: Span::new(start, at.end),
                            style: Style::Collection,
                        },
                        anchor,
                    ),
                };
                self.insert(node, anchor);
            }
            Event::Scalar(text, style, anchor, tag) => {
                if !self.count(1, at) {
                    return;
                }
                if let Some(node) = self.scalar(text, style, tag, at) {
                    self.insert(node, anchor);
                }
            }
            Event::Alias(anchor) => self.alias(anchor, at),
        }
    }
}

/// How many nodes `node` holds (itself included) and how many collections deep it nests.
/// Recursion is safe here: the tree is never deeper than [`MAX_DEPTH`].
fn measure(node: &Node) -> (usize, usize) {
    let children: Box<dyn Iterator<Item = &Node>> = match &node.value {
        Value::Seq(items) => Box::new(items.iter()),
        Value::Map(entries) => Box::new(entries.iter().map(|entry| &entry.value)),
        _ => return (1, 0),
    };
    let (nodes, depth) = children
        .map(measure)
        .fold((0, 0), |(nodes, depth), (n, d)| (nodes + n, depth.max(d)));
    (1 + nodes, 1 + depth)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SourceFile;

    fn parse_one(text: &str) -> (Vec<YamlDocument>, Vec<String>) {
        let source = SourceFile::new("t.yaml", text);
        let mut diagnostics = Diagnostics::new();
        let documents = parse(&source, &mut diagnostics);
        let messages = diagnostics
            .sorted()
            .iter()
            .map(|d| {
                format!(
                    "{}:{}: {}",
                    d.span.start.line, d.span.start.column, d.message
                )
            })
            .collect();
        (documents, messages)
    }

    #[test]
    fn keeps_positions_of_keys_and_values() {
        let (documents, messages) = parse_one("a:\n  b: [1, 'x']\n");
        assert!(messages.is_empty());
        let root = &documents[0].root;
        assert_eq!(
            root.key_span("/a/b").map(|s| s.start),
            Some(Position::new(2, 3))
        );
        let item = root.pointer("/a/b/1").expect("item");
        assert_eq!(item.span.start, Position::new(2, 10));
        assert_eq!(item.style, Style::Quoted);
        assert_eq!(root.to_json(), serde_json::json!({"a": {"b": [1, "x"]}}));
    }

    #[test]
    fn quoted_numbers_stay_strings_and_yaml_1_2_booleans() {
        let (documents, _) = parse_one("a: '1'\nb: yes\nc: true\nd:\n");
        assert_eq!(
            documents[0].root.to_json(),
            serde_json::json!({"a": "1", "b": "yes", "c": true, "d": null})
        );
    }

    #[test]
    fn syntax_error_has_a_position() {
        let (documents, messages) = parse_one("a: [1, 2\nb: c\n");
        assert!(documents.is_empty());
        assert_eq!(messages.len(), 1);
        assert!(messages[0].contains("invalid YAML"), "{messages:?}");
    }

    #[test]
    fn duplicate_keys_are_reported_and_the_first_kept() {
        let (documents, messages) = parse_one("a: 1\nb: 2\na: 3\n");
        assert_eq!(messages, ["3:1: duplicate key `a` (first given at line 1)"]);
        assert_eq!(
            documents[0].root.to_json(),
            serde_json::json!({"a": 1, "b": 2})
        );
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for level in 1..8 {
            let previous = level - 1;
            text.push_str(&format!(
                "a{level}: &a{level} [*a{previous}, *a{previous}, *a{previous}, *a{previous}, *a{previous}, *a{previous}, *a{previous}, *a{previous}, *a{previous}, *a{previous}]\n"
            ));
        }
        let (documents, messages) = parse_one(&text);
        assert!(documents.is_empty());
        assert!(messages[0].contains("more than"), "{messages:?}");
    }

    #[test]
    fn several_documents_in_one_file() {
        let (documents, _) = parse_one("a: 1\n---\nb: 2\n");
        assert_eq!(documents.len(), 2);
    }
}
