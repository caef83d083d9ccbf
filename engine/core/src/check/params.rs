//! The params pass: names, `from:` alert fields, patterns, allowed values and defaults.

use super::*;

impl Checker<'_> {
    /// Checks every param; returns the checked ones and the names of all declared ones (a param
    /// with a bad default is still declared, so reading it is not a second error).
    pub(super) fn check_params(
        &mut self,
        at: At<'_>,
        declared: &[document::Param],
    ) -> (Vec<ParamSpec>, Vec<String>) {
        let mut params = Vec::new();
        let mut param_names: Vec<String> = Vec::new();
        for (index, param) in declared.iter().enumerate() {
            let pointer = format!("/spec/params/{index}");
            if param_names.contains(&param.name) {
                self.error(
                    Code::DuplicateParam,
                    at,
                    at.span(&format!("{pointer}/name")),
                    format!("param `{}` is declared twice", param.name),
                );
                continue;
            }
            param_names.push(param.name.clone());
            if let Some(checked) = self.check_param(at, &pointer, param) {
                params.push(checked);
            }
        }
        (params, param_names)
    }

    pub(super) fn check_param(
        &mut self,
        at: At<'_>,
        pointer: &str,
        param: &document::Param,
    ) -> Option<ParamSpec> {
        let before = self.diagnostics.error_count();
        if !is_identifier(&param.name) {
            self.error_help(
                Code::ParamName,
                at,
                at.span(&format!("{pointer}/name")),
                format!("invalid param name `{}`", param.name),
                Some("use lowercase letters, digits and `_`, starting with a letter, so expressions can read `params.NAME`".to_owned()),
            );
        }
        let from = param.from.as_ref().and_then(|text| {
            let parsed = if let Some(label) = text.strip_prefix("alert.labels.") {
                Some(AlertField::Labels(label.to_owned()))
            } else {
                text.strip_prefix("alert.annotations.")
                    .map(|name| AlertField::Annotations(name.to_owned()))
            };
            match parsed {
                Some(AlertField::Labels(name) | AlertField::Annotations(name))
                    if name.is_empty() =>
                {
                    None
                }
                other => other,
            }
            .or_else(|| {
                self.error_help(
                    Code::ParamFrom,
                    at,
                    at.span(&format!("{pointer}/from")),
                    format!("`from: {text}` does not name an alert field"),
                    Some("use `alert.labels.NAME` or `alert.annotations.NAME`".to_owned()),
                );
                None
            })
        });
        let pattern = param.pattern.as_ref().and_then(|text| {
            if param.kind != document::ParamType::String {
                self.error(
                    Code::ParamPattern,
                    at,
                    at.key_span(&format!("{pointer}/pattern")),
                    "`pattern` applies to string params only",
                );
                return None;
            }
            match crate::pattern::Pattern::anchored(text) {
                Ok(pattern) => Some(pattern),
                Err(reason) => {
                    self.error(
                        Code::ParamPattern,
                        at,
                        at.span(&format!("{pointer}/pattern")),
                        format!("invalid regex in `pattern`: {reason}"),
                    );
                    None
                }
            }
        });
        let mut allowed = Vec::new();
        for (index, value) in param.allowed.iter().flatten().enumerate() {
            match ParamValue::from_json(param.kind, value) {
                Ok(value) => allowed.push(value),
                Err(message) => self.error(
                    Code::ParamDefault,
                    at,
                    at.span(&format!("{pointer}/enum/{index}")),
                    format!("`enum` value of param `{}`: {message}", param.name),
                ),
            }
        }
        let default = param.default.as_ref().and_then(|value| {
            match ParamValue::from_json(param.kind, value) {
                Ok(value) => Some(value),
                Err(message) => {
                    self.error(
                        Code::ParamDefault,
                        at,
                        at.span(&format!("{pointer}/default")),
                        format!("default of param `{}`: {message}", param.name),
                    );
                    None
                }
            }
        });
        if let Some(default) = &default {
            if let Err(message) = validate_param(default, pattern.as_ref(), &allowed) {
                self.error(
                    Code::ParamDefault,
                    at,
                    at.span(&format!("{pointer}/default")),
                    format!("default of param `{}`: {message}", param.name),
                );
            }
        }
        if self.diagnostics.error_count() > before {
            return None;
        }
        Some(ParamSpec {
            name: param.name.clone(),
            kind: param.kind,
            description: param.description.clone(),
            required: param.required.unwrap_or(param.default.is_none()),
            default,
            from,
            secret: param.secret,
            pattern,
            allowed,
            allow_option_like: param.allow_option_like,
            span: at.span(&format!("{pointer}/name")),
        })
    }
}

/// Checks a bound value against a param's pattern and allowed values.
pub fn validate_param(
    value: &ParamValue,
    pattern: Option<&crate::pattern::Pattern>,
    allowed: &[ParamValue],
) -> Result<(), String> {
    if let (Some(pattern), ParamValue::String(text)) = (pattern, value) {
        if !pattern.is_match(text) {
            return Err(format!(
                "`{text}` does not match the pattern `{}`",
                pattern
                    .as_str()
                    .trim_start_matches("^(?:")
                    .trim_end_matches(")$")
            ));
        }
    }
    if !allowed.is_empty() && !allowed.contains(value) {
        let shown = allowed
            .iter()
            .map(|v| format!("`{v}`"))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(format!("`{value}` is not one of {shown}"));
    }
    Ok(())
}
