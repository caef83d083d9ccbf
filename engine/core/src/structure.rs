//! The structure check: the YAML tree against the JSON Schema generated from `document.rs`.
//!
//! serde reports one error and stops; this walk reports every unknown field (with the nearest
//! valid name), wrong type, missing field and bad enum value in the document, each at its
//! position. Only a document that passes is handed to serde, so serde errors are rare (integer
//! overflow and the like) and still get a position through `serde_path_to_error`.
//!
//! It understands the subset of JSON Schema that schemars emits for our types: `$ref`, `type`,
//! `properties`, `additionalProperties`, `required`, `items`, `enum`, `anyOf`/`oneOf`,
//! `minimum`/`maximum`.

use serde_json::Value as Json;

use crate::diagnostic::{did_you_mean, Code, Diagnostic, Diagnostics};
use crate::source::Source;
use crate::yaml::{Node, Value};

/// Checks `node` against the definition `definition` (such as `RunbookDocument`) of `schema`.
/// Returns the JSON pointers of the nodes found wrong, so the caller can set them aside and
/// still check the rest of the document for meaning.
pub fn check(
    schema: &Json,
    definition: &str,
    node: &Node,
    source: &Source,
    diagnostics: &mut Diagnostics,
) -> Vec<String> {
    let mut checker = Checker {
        schema,
        source,
        diagnostics,
        bad: Vec::new(),
    };
    let reference = format!("#/definitions/{definition}");
    let target = serde_json::json!({ "$ref": reference });
    checker.check(node, &target, "document", "");
    checker.bad
}

struct Checker<'a> {
    schema: &'a Json,
    source: &'a Source,
    diagnostics: &'a mut Diagnostics,
    /// JSON pointers of the nodes reported.
    bad: Vec<String>,
}

impl<'a> Checker<'a> {
    /// Follows `$ref`s, returning the target schema and the noun for messages.
    fn resolve<'s>(&self, mut schema: &'s Json, mut noun: String) -> (&'s Json, String)
    where
        'a: 's,
    {
        for _ in 0..16 {
            let Some(reference) = schema.get("$ref").and_then(Json::as_str) else {
                break;
            };
            let name = reference.rsplit('/').next().unwrap_or(reference);
            match self
                .schema
                .get("definitions")
                .or_else(|| self.schema.get("$defs"))
                .and_then(|definitions| definitions.get(name))
            {
                Some(target) => {
                    schema = target;
                    noun = humanize(name);
                }
                None => break,
            }
        }
        (schema, noun)
    }

    fn error(
        &mut self,
        code: Code,
        pointer: &str,
        node_span: crate::source::Span,
        message: String,
        help: Option<String>,
    ) {
        self.bad.push(pointer.to_owned());
        self.diagnostics
            .push(Diagnostic::error(code, self.source, node_span, message).with_help_opt(help));
    }

    /// Checks and returns how many errors it pushed.
    fn check(&mut self, node: &Node, schema: &Json, noun: &str, pointer: &str) -> usize {
        let before = self.diagnostics.error_count();
        self.check_inner(node, schema, noun, pointer);
        self.diagnostics.error_count() - before
    }

    fn check_inner(&mut self, node: &Node, schema: &Json, noun: &str, pointer: &str) {
        if schema == &Json::Bool(true) {
            return;
        }
        let (schema, noun) = self.resolve(schema, noun.to_owned());
        if let Some(all) = schema.get("allOf").and_then(Json::as_array) {
            for part in all {
                self.check_inner(node, part, &noun, pointer);
            }
            return;
        }
        let branches = schema
            .get("anyOf")
            .or_else(|| schema.get("oneOf"))
            .and_then(Json::as_array);
        if let Some(branches) = branches {
            self.check_branches(node, branches, &noun, pointer);
            return;
        }
        if let Some(types) = types_of(schema) {
            if !types.iter().any(|kind| accepts(kind, node)) {
                // `null` is how optional fields are typed; "or null" would only distract.
                let shown: Vec<&str> = types
                    .iter()
                    .copied()
                    .filter(|kind| *kind != "null" || types.len() == 1)
                    .collect();
                let expected = join_or(
                    &shown
                        .iter()
                        .map(|kind| describe_type(kind))
                        .collect::<Vec<_>>(),
                );
                let help = if types.contains(&"string") && is_scalar(node) {
                    Some("quote the value to make it a string".to_owned())
                } else {
                    None
                };
                self.error(
                    Code::WrongType,
                    pointer,
                    node.span,
                    format!("expected {expected}, found {}", describe_node(node)),
                    help,
                );
                return;
            }
        }
        let single = schema.get("const").map(|value| vec![value.clone()]);
        if let Some(allowed) = schema
            .get("enum")
            .and_then(Json::as_array)
            .or(single.as_ref())
        {
            let value = node.to_json();
            if !allowed.contains(&value) {
                let names: Vec<&str> = allowed.iter().filter_map(Json::as_str).collect();
                let shown = names
                    .iter()
                    .map(|name| format!("`{name}`"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let found = node
                    .as_str()
                    .map_or_else(|| value.to_string(), str::to_owned);
                self.error(
                    Code::UnknownValue,
                    pointer,
                    node.span,
                    format!("unknown value `{found}` for {noun}, expected one of {shown}"),
                    node.as_str()
                        .and_then(|text| did_you_mean(text, names.iter().copied())),
                );
                return;
            }
        }
        match &node.value {
            Value::Int(value) => self.check_range(node, *value as f64, schema, pointer),
            Value::Float(value) => self.check_range(node, *value, schema, pointer),
            Value::Seq(items) => {
                if let Some(item_schema) = schema.get("items") {
                    let item_noun = singular(&noun);
                    for (index, item) in items.iter().enumerate() {
                        self.check(item, item_schema, &item_noun, &format!("{pointer}/{index}"));
                    }
                }
            }
            Value::Map(entries) => self.check_object(node, entries, schema, &noun, pointer),
            _ => {}
        }
    }

    fn check_range(&mut self, node: &Node, value: f64, schema: &Json, pointer: &str) {
        let minimum = schema.get("minimum").and_then(Json::as_f64);
        let maximum = schema.get("maximum").and_then(Json::as_f64).or_else(|| {
            match schema.get("format").and_then(Json::as_str) {
                Some("uint32") => Some(f64::from(u32::MAX)),
                Some("uint8") => Some(f64::from(u8::MAX)),
                Some("uint16") => Some(f64::from(u16::MAX)),
                _ => None,
            }
        });
        if let Some(minimum) = minimum.filter(|minimum| value < *minimum) {
            self.error(
                Code::OutOfRange,
                pointer,
                node.span,
                format!("must be at least {minimum}, found {value}"),
                None,
            );
        } else if let Some(maximum) = maximum.filter(|maximum| value > *maximum) {
            self.error(
                Code::OutOfRange,
                pointer,
                node.span,
                format!("must be at most {maximum}, found {value}"),
                None,
            );
        }
    }

    fn check_object(
        &mut self,
        node: &Node,
        entries: &[crate::yaml::Entry],
        schema: &Json,
        noun: &str,
        pointer: &str,
    ) {
        let properties = schema.get("properties").and_then(Json::as_object);
        let additional = schema.get("additionalProperties");
        // Required fields an unknown field was already said to be a misspelling of.
        let mut suggested: Vec<String> = Vec::new();
        for entry in entries {
            let entry_pointer = format!(
                "{pointer}/{}",
                entry.key.replace('~', "~0").replace('/', "~1")
            );
            match properties.and_then(|properties| properties.get(&entry.key)) {
                Some(property) => {
                    let field_noun = format!("`{}`", entry.key);
                    self.check(&entry.value, property, &field_noun, &entry_pointer);
                }
                None => match additional {
                    Some(Json::Bool(false)) => {
                        let names: Vec<&str> = properties
                            .map(|properties| properties.keys().map(String::as_str).collect())
                            .unwrap_or_default();
                        if let Some(near) =
                            crate::diagnostic::suggest(&entry.key, names.iter().copied())
                        {
                            suggested.push(near.to_owned());
                        }
                        let help = did_you_mean(&entry.key, names.iter().copied()).or_else(|| {
                            Some(format!(
                                "valid fields are {}",
                                names
                                    .iter()
                                    .map(|n| format!("`{n}`"))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ))
                        });
                        self.error(
                            Code::UnknownField,
                            &entry_pointer,
                            entry.key_span,
                            format!("unknown field `{}` in {noun}", entry.key),
                            help,
                        );
                    }
                    Some(value_schema) if value_schema.is_object() => {
                        let value_noun = format!("`{}`", entry.key);
                        self.check(&entry.value, value_schema, &value_noun, &entry_pointer);
                    }
                    _ => {}
                },
            }
        }
        if let Some(required) = schema.get("required").and_then(Json::as_array) {
            for name in required.iter().filter_map(Json::as_str) {
                if !entries.iter().any(|entry| entry.key == name)
                    && !suggested.iter().any(|near| near == name)
                {
                    self.error(
                        Code::MissingField,
                        pointer,
                        crate::source::Span::point(node.span.start),
                        format!("missing required field `{name}` in {noun}"),
                        None,
                    );
                }
            }
        }
    }

    /// `anyOf`: pick the branches whose type fits the node; if one fits, its errors are the
    /// node's errors; if several fit, the node is fine when any accepts it, and otherwise the
    /// branch with the fewest errors speaks.
    fn check_branches(&mut self, node: &Node, branches: &[Json], noun: &str, pointer: &str) {
        let resolved: Vec<(&Json, String)> = branches
            .iter()
            .map(|branch| self.resolve(branch, noun.to_owned()))
            .collect();
        // An enum whose variants are documented comes as `oneOf` of `const`s: treat it as the
        // enum it is, so the message lists the values and suggests the nearest.
        let constants: Option<Vec<Json>> = resolved
            .iter()
            .map(|(branch, _)| branch.get("const").cloned())
            .collect();
        if let Some(constants) = constants.filter(|c| !c.is_empty()) {
            let as_enum = serde_json::json!({ "enum": constants });
            self.check_inner(node, &as_enum, noun, pointer);
            return;
        }
        let fitting: Vec<&(&Json, String)> = resolved
            .iter()
            .filter(|(branch, _)| match types_of(branch) {
                Some(types) => types.iter().any(|kind| accepts(kind, node)),
                None => true,
            })
            .collect();
        match fitting.as_slice() {
            [] => {
                let mut expected: Vec<String> = Vec::new();
                for (branch, branch_noun) in &resolved {
                    for kind in types_of(branch).unwrap_or_default() {
                        if kind == "null" {
                            continue;
                        }
                        let text = if kind == "object"
                            && !branch_noun.starts_with('`')
                            && branch_noun != noun
                        {
                            format!("a mapping ({branch_noun})")
                        } else {
                            describe_type(kind).to_owned()
                        };
                        if !expected.contains(&text) {
                            expected.push(text);
                        }
                    }
                }
                self.error(
                    Code::WrongType,
                    pointer,
                    node.span,
                    format!(
                        "expected {}, found {}",
                        join_or(&expected),
                        describe_node(node)
                    ),
                    None,
                );
            }
            [(branch, branch_noun)] => {
                self.check_inner(node, branch, branch_noun, pointer);
            }
            several => {
                let mut best: Option<(Diagnostics, Vec<String>)> = None;
                for (branch, branch_noun) in several {
                    let mut scratch = Diagnostics::new();
                    let mut trial = Checker {
                        schema: self.schema,
                        source: self.source,
                        diagnostics: &mut scratch,
                        bad: Vec::new(),
                    };
                    trial.check_inner(node, branch, branch_noun, pointer);
                    let bad = trial.bad;
                    if !scratch.has_errors() {
                        return;
                    }
                    if best
                        .as_ref()
                        .is_none_or(|(best, _)| scratch.error_count() < best.error_count())
                    {
                        best = Some((scratch, bad));
                    }
                }
                if let Some((best, bad)) = best {
                    self.diagnostics.extend(best);
                    self.bad.extend(bad);
                }
            }
        }
    }
}

fn types_of(schema: &Json) -> Option<Vec<&str>> {
    match schema.get("type") {
        Some(Json::String(kind)) => Some(vec![kind.as_str()]),
        Some(Json::Array(kinds)) => Some(kinds.iter().filter_map(Json::as_str).collect()),
        _ if schema.get("properties").is_some() => Some(vec!["object"]),
        _ => None,
    }
}

fn accepts(kind: &str, node: &Node) -> bool {
    matches!(
        (kind, &node.value),
        ("null", Value::Null)
            | ("boolean", Value::Bool(_))
            | ("integer", Value::Int(_))
            | ("number", Value::Int(_) | Value::Float(_))
            | ("string", Value::String(_))
            | ("array", Value::Seq(_))
            | ("object", Value::Map(_))
    )
}

fn is_scalar(node: &Node) -> bool {
    matches!(node.value, Value::Bool(_) | Value::Int(_) | Value::Float(_))
}

fn describe_type(kind: &str) -> &'static str {
    match kind {
        "null" => "null",
        "boolean" => "a boolean",
        "integer" => "an integer",
        "number" => "a number",
        "string" => "a string",
        "array" => "a list",
        "object" => "a mapping",
        _ => "a value",
    }
}

fn describe_node(node: &Node) -> String {
    match &node.value {
        Value::Bool(value) => format!("a boolean `{value}`"),
        Value::Int(value) => format!("an integer `{value}`"),
        Value::Float(value) => format!("a number `{value}`"),
        Value::String(text) if text.chars().count() <= 40 && !text.contains('\n') => {
            format!("a string `{text}`")
        }
        _ => node.describe().to_owned(),
    }
}

fn join_or(items: &[impl AsRef<str>]) -> String {
    match items {
        [] => "a value".to_owned(),
        [one] => one.as_ref().to_owned(),
        [rest @ .., last] => format!(
            "{} or {}",
            rest.iter()
                .map(AsRef::as_ref)
                .collect::<Vec<_>>()
                .join(", "),
            last.as_ref()
        ),
    }
}

/// `RunbookSpec` -> `runbook spec`.
fn humanize(name: &str) -> String {
    let mut out = String::new();
    for (index, character) in name.chars().enumerate() {
        if character.is_uppercase() && index > 0 {
            out.push(' ');
        }
        out.extend(character.to_lowercase());
    }
    out
}

/// The noun for an item of a list field: `` `steps` `` -> `step`.
fn singular(noun: &str) -> String {
    let bare = noun.trim_matches('`');
    match bare {
        "preconditions" => "precondition".to_owned(),
        _ => bare
            .strip_suffix('s')
            .map_or_else(|| noun.to_owned(), str::to_owned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SourceFile;

    fn problems(text: &str) -> Vec<String> {
        let source = SourceFile::new("t.yaml", text);
        let mut diagnostics = Diagnostics::new();
        let documents = crate::yaml::parse(&source, &mut diagnostics);
        let schema = crate::document::json_schema();
        check(
            &schema,
            "RunbookDocument",
            &documents[0].root,
            &source,
            &mut diagnostics,
        );
        diagnostics
            .sorted()
            .iter()
            .map(|d| {
                format!(
                    "{}:{}: {}{}",
                    d.span.start.line,
                    d.span.start.column,
                    d.message,
                    d.help
                        .as_deref()
                        .map(|h| format!(" ({h})"))
                        .unwrap_or_default()
                )
            })
            .collect()
    }

    const HEAD: &str = "apiVersion: runbook.dev/v1alpha1\nkind: Runbook\nmetadata: {name: x}\n";

    #[test]
    fn reports_every_problem_in_one_pass() {
        let text = format!(
            "{HEAD}spec:\n  steps:\n    - run: [a]\n      neds: [b]\n    - scale: {{name: d, replicas: [1]}}\n      retries: -1\n"
        );
        assert_eq!(
            problems(&text),
            [
                "7:7: unknown field `neds` in step (did you mean `needs`?)",
                "8:34: expected an integer or a string, found a list",
                "9:16: must be at least 0, found -1",
            ]
        );
    }

    #[test]
    fn unknown_field_suggests_nearest_name() {
        let text = format!("{HEAD}spec:\n  steps:\n    - run: [a]\n      neds: [b]\n");
        assert_eq!(
            problems(&text),
            ["7:7: unknown field `neds` in step (did you mean `needs`?)"]
        );
    }

    #[test]
    fn missing_required_field() {
        let text = "apiVersion: runbook.dev/v1alpha1\nkind: Runbook\nmetadata: {namespace: x}\nspec:\n  steps: []\n";
        assert_eq!(
            problems(text),
            ["3:11: missing required field `name` in metadata"]
        );
    }

    #[test]
    fn wrong_type_and_negative_retries() {
        let text =
            format!("{HEAD}spec:\n  tags: tag\n  steps:\n    - run: [a]\n      retries: -1\n");
        assert_eq!(
            problems(&text),
            [
                "5:9: expected a list, found a string `tag`",
                "8:16: must be at least 0, found -1",
            ]
        );
    }

    #[test]
    fn enum_values_suggest() {
        let text =
            format!("{HEAD}spec:\n  params:\n    - name: a\n      type: strng\n  steps: []\n");
        assert_eq!(
            problems(&text),
            ["7:13: unknown value `strng` for param type, expected one of `string`, `integer`, `number`, `boolean`, `duration` (did you mean `string`?)"]
        );
    }

    #[test]
    fn untagged_alternatives_name_what_fits() {
        let text = format!("{HEAD}spec:\n  steps:\n    - run: 3\n");
        assert_eq!(
            problems(&text),
            ["6:12: expected a string or a list, found an integer `3`"]
        );
        let text = format!("{HEAD}spec:\n  steps:\n    - run: [a]\n      needs: a\n");
        assert_eq!(
            problems(&text),
            ["7:14: expected a list, found a string `a`"]
        );
    }
}
