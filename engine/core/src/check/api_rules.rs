//! What the API server would refuse in a patch or a manifest, seen before anything runs
//! (issue 15, items 7 and 8), from the one table in [`crate::api_rules`]:
//!
//! - `field-type`: a value of a type the server refuses for a field it knows (`replicas:
//!   "3"`, an annotation written `3`), including a template: one that is exactly `${...}`
//!   keeps its value's type, so `"${params.n}"` with an integer param sends a number, which an
//!   annotation refuses; any other template is text, which `replicas` refuses.
//! - `undo-refused`: a patch or apply whose native undo puts back a field the server will not
//!   let go back (a claim's size, an immutable field), on a step with neither `undo:` nor
//!   `irreversible:`.

use super::*;

use crate::api_rules::{field_type, guarded_field, FieldType, GuardedField};

/// A template that is exactly `${params.NAME}` in a field of a known type: checked against the
/// param's type once the params are known ([`Checker::lint_typed_params`]).
pub(super) struct TypedUse {
    param: String,
    field_type: FieldType,
    field: String,
    kind: String,
    span: Span,
}

/// Where a body's values sit: in an object of `kind`, starting at `path` inside it.
struct Walk<'a> {
    at: At<'a>,
    kind: &'a str,
}

impl Checker<'_> {
    /// Checks the types of a patch body (`patch_type` given) or of a manifest (`None`) whose
    /// object is a `kind`, written at `pointer`.
    pub(super) fn check_field_types(
        &mut self,
        at: At<'_>,
        pointer: &str,
        kind: &str,
        body: &serde_json::Value,
        patch_type: Option<PatchType>,
    ) {
        let walk = Walk { at, kind };
        if patch_type == Some(PatchType::Json) {
            for (index, operation) in body.as_array().into_iter().flatten().enumerate() {
                let Some(path) = operation.get("path").and_then(serde_json::Value::as_str) else {
                    continue;
                };
                let Some(value) = operation.get("value") else {
                    continue;
                };
                let path = json_pointer_segments(path);
                self.walk_types(
                    &walk,
                    &format!("{pointer}/{index}/value"),
                    &mut path.clone(),
                    value,
                );
            }
            return;
        }
        self.walk_types(&walk, pointer, &mut Vec::new(), body);
    }

    fn walk_types(
        &mut self,
        walk: &Walk<'_>,
        pointer: &str,
        path: &mut Vec<String>,
        value: &serde_json::Value,
    ) {
        if let Some(wanted) = field_type(walk.kind, path) {
            self.check_typed_value(walk, pointer, path, wanted, value);
            return;
        }
        match value {
            serde_json::Value::Object(entries) => {
                for (key, item) in entries {
                    path.push(key.clone());
                    self.walk_types(
                        walk,
                        &format!("{pointer}/{}", escape_pointer(key)),
                        path,
                        item,
                    );
                    path.pop();
                }
            }
            serde_json::Value::Array(items) => {
                for (index, item) in items.iter().enumerate() {
                    path.push(index.to_string());
                    self.walk_types(walk, &format!("{pointer}/{index}"), path, item);
                    path.pop();
                }
            }
            _ => {}
        }
    }

    fn check_typed_value(
        &mut self,
        walk: &Walk<'_>,
        pointer: &str,
        path: &[String],
        wanted: FieldType,
        value: &serde_json::Value,
    ) {
        let at = walk.at;
        let field = dotted(path);
        let kind = walk.kind;
        let span = at.span(pointer);
        if at.allowed(span, Code::FieldType).is_some() {
            return;
        }
        let warn = |message: String, help: String| {
            Diagnostic::warning(Code::FieldType, at.source, span, message).with_help(help)
        };
        let text = match value {
            serde_json::Value::String(text) if text.contains("${") => text,
            other => {
                if wanted.accepts(other) {
                    return;
                }
                let help = match (wanted, other) {
                    (FieldType::String, _) => {
                        format!("quote it: `\"{}\"`", crate::render::json_scalar(other))
                    }
                    (FieldType::Int32, serde_json::Value::String(text)) => {
                        format!("write the number without quotes: `{text}`")
                    }
                    (FieldType::Bool, serde_json::Value::String(text)) => {
                        format!("write `true` or `false` without quotes, not `\"{text}\"`")
                    }
                    _ => format!("write {}", wanted.plain()),
                };
                self.diagnostics.push(warn(
                    format!(
                        "`{field}` of a {kind} takes {}, but this is {}: the API server refuses it",
                        wanted.plain(),
                        crate::render::json_kind(other)
                    ),
                    help,
                ));
                return;
            }
        };
        let Ok(template) = Template::parse(text) else {
            return; // Reported where the template is checked.
        };
        match template.whole_expression() {
            None if wanted != FieldType::String => {
                self.diagnostics.push(warn(
                    format!(
                        "`{field}` of a {kind} takes {}, but this template has text around its `${{...}}`, so it renders as a string, which the API server refuses",
                        wanted.plain()
                    ),
                    "write the `${...}` alone, with nothing around it, not even a space: then it keeps its value's type".to_owned(),
                ));
            }
            None => {}
            Some(expression) => {
                let source = expression.source.trim();
                if let Some(param) = source
                    .strip_prefix("params.")
                    .filter(|name| name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
                {
                    self.typed_uses.push(TypedUse {
                        param: param.to_owned(),
                        field_type: wanted,
                        field,
                        kind: kind.to_owned(),
                        span,
                    });
                } else if source.ends_with(".to_string()") && wanted != FieldType::String {
                    self.diagnostics.push(warn(
                        format!(
                            "`{field}` of a {kind} takes {}, but `{source}` is a string, which the API server refuses",
                            wanted.plain()
                        ),
                        "drop `.to_string()`: a `${...}` alone keeps its value's type".to_owned(),
                    ));
                }
            }
        }
    }

    /// The whole-param templates in typed fields, against their params' types.
    pub(super) fn lint_typed_params(&mut self, at: At<'_>, params: &[ParamSpec]) {
        for used in std::mem::take(&mut self.typed_uses) {
            let Some(param) = params.iter().find(|param| param.name == used.param) else {
                continue;
            };
            let sends = match param.kind {
                document::ParamType::String => FieldType::String,
                document::ParamType::Integer => FieldType::Int32,
                document::ParamType::Boolean => FieldType::Bool,
                // A number may be fractional; a duration is a number of seconds or text.
                document::ParamType::Number | document::ParamType::Duration => continue,
            };
            if sends == used.field_type {
                continue;
            }
            let name = &used.param;
            let (what, help) = match used.field_type {
                FieldType::String => (
                    match sends {
                        FieldType::Bool => "true or false",
                        _ => "a number",
                    },
                    format!("write `\"${{params.{name}.to_string()}}\"` to send it as text"),
                ),
                FieldType::Int32 => (
                    "a string",
                    format!(
                        "declare param `{name}` (line {}) with `type: integer`",
                        param.span.start.line
                    ),
                ),
                FieldType::Bool => (
                    "a string",
                    format!(
                        "declare param `{name}` (line {}) with `type: boolean`",
                        param.span.start.line
                    ),
                ),
            };
            self.diagnostics.push(
                Diagnostic::warning(
                    Code::FieldType,
                    at.source,
                    used.span,
                    format!(
                        "`\"${{params.{name}}}\"` keeps the type of param `{name}` and sends {what}, but `{}` of a {} takes {}: the API server refuses it",
                        used.field, used.kind, used.field_type.plain()
                    ),
                )
                .with_help(help),
            );
        }
    }

    /// Warns (`undo-refused`) when the native undo of a patch or apply would put back a field
    /// the API server will not let go back. The step has neither `undo:` nor `irreversible:`.
    pub(super) fn lint_undo_refused(
        &mut self,
        at: At<'_>,
        pointer: &str,
        step: &document::Step,
        id: &str,
        action: &Action,
    ) {
        // A JSON patch has no native undo (it needs `undo:` already), so only merge and
        // strategic patches and applies are looked at.
        let (kind, body_pointer, body, applied) = match (action, &step.patch, &step.apply) {
            (Action::Patch { target, .. }, Some(patch), _) => (
                target.kind.as_str(),
                format!("{pointer}/patch/patch"),
                &patch.patch,
                false,
            ),
            (Action::Apply { .. }, _, Some(apply)) => {
                let Some(kind) = apply
                    .manifest
                    .get("kind")
                    .and_then(serde_json::Value::as_str)
                else {
                    return;
                };
                (
                    kind,
                    format!("{pointer}/apply/manifest"),
                    &apply.manifest,
                    true,
                )
            }
            _ => return,
        };
        let Some((field, field_pointer)) = find_guarded(kind, body, &mut Vec::new(), &body_pointer)
        else {
            return;
        };
        let span = at.span(&field_pointer);
        if at.allowed(span, Code::UndoRefused).is_some() {
            return;
        }
        self.diagnostics.push(
            Diagnostic::warning(
                Code::UndoRefused,
                at.source,
                span,
                format!(
                    "step `{id}` changes `{}` of a {kind}, but undoing it would put the old value back{}: {}",
                    field.dotted(),
                    if applied { " (when the object exists already)" } else { "" },
                    field.why()
                ),
            )
            .with_help(undo_refused_help(field)),
        );
    }
}

fn undo_refused_help(field: &GuardedField) -> String {
    match field.guard {
        crate::api_rules::Guard::NoShrink => "mark the step `irreversible: <reason>` (the claim keeps its new size), or give an `undo:` that does what can be done, such as a `notify`".to_owned(),
        _ => "mark the step `irreversible: <reason>`, or give an `undo:` that does what can be done (for an immutable field, the object is deleted and created again)".to_owned(),
    }
}

/// The first guarded field a merge body or a manifest sets, and the pointer of its value.
fn find_guarded(
    kind: &str,
    value: &serde_json::Value,
    path: &mut Vec<String>,
    pointer: &str,
) -> Option<(&'static GuardedField, String)> {
    if let Some(field) = guarded_field(kind, path) {
        return Some((field, pointer.to_owned()));
    }
    let entries = value.as_object()?;
    for (key, item) in entries {
        path.push(key.clone());
        let found = find_guarded(
            kind,
            item,
            path,
            &format!("{pointer}/{}", escape_pointer(key)),
        );
        path.pop();
        if found.is_some() {
            return found;
        }
    }
    None
}

/// `/spec/template/spec` -> `[spec, template, spec]`, `~1` and `~0` unescaped.
fn json_pointer_segments(pointer: &str) -> Vec<String> {
    pointer
        .split('/')
        .skip(1)
        .map(|part| part.replace("~1", "/").replace("~0", "~"))
        .collect()
}

/// A path as a user reads it: `spec.template.spec.containers.0.env.1.value`.
fn dotted(path: &[String]) -> String {
    path.join(".")
}
