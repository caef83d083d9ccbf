//! Label and field selectors, in the syntax `kubectl` and the API server take.

use serde_json::{Map, Value as Json};

/// One requirement of a label selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

impl Requirement {
    pub(super) fn matches(&self, labels: Option<&Map<String, Json>>) -> bool {
        let value = |key: &str| {
            labels
                .and_then(|labels| labels.get(key))
                .and_then(Json::as_str)
        };
        match self {
            Self::Equals(key, expected) => value(key) == Some(expected.as_str()),
            // Like the API server: `!=` and `notin` also match objects without the label.
            Self::NotEquals(key, expected) => value(key) != Some(expected.as_str()),
            Self::In(key, values) => value(key).is_some_and(|v| values.iter().any(|x| x == v)),
            Self::NotIn(key, values) => !value(key).is_some_and(|v| values.iter().any(|x| x == v)),
            Self::Exists(key) => value(key).is_some(),
            Self::NotExists(key) => value(key).is_none(),
        }
    }
}

/// Parses `a=b,c!=d,e,!f,g in (x,y),h notin (z)`. The empty selector selects everything.
pub(super) fn parse_labels(text: &str) -> Result<Vec<Requirement>, String> {
    let mut requirements = Vec::new();
    for part in split_top_level(text)? {
        let part = part.trim();
        if part.is_empty() {
            if text.trim().is_empty() {
                continue;
            }
            return Err(format!("empty requirement in label selector `{text}`"));
        }
        requirements.push(
            parse_requirement(part).map_err(|reason| {
                format!("invalid label selector `{text}`: {reason} in `{part}`")
            })?,
        );
    }
    Ok(requirements)
}

fn split_top_level(text: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (index, character) in text.char_indices() {
        match character {
            '(' => depth += 1,
            ')' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| format!("unbalanced `)` in label selector `{text}`"))?;
            }
            ',' if depth == 0 => {
                parts.push(&text[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("unbalanced `(` in label selector `{text}`"));
    }
    parts.push(&text[start..]);
    Ok(parts)
}

fn parse_requirement(part: &str) -> Result<Requirement, String> {
    if let Some(key) = part.strip_prefix('!') {
        return Ok(Requirement::NotExists(key_of(key)?));
    }
    if let Some(open) = part.find('(') {
        let close = part
            .rfind(')')
            .filter(|close| *close > open && part[close + 1..].trim().is_empty())
            .ok_or("expected `)` at the end")?;
        let head: Vec<&str> = part[..open].split_whitespace().collect();
        let values: Vec<String> = part[open + 1..close]
            .split(',')
            .map(|value| value.trim())
            .map(|value| value_of(value).map(str::to_owned))
            .collect::<Result<_, _>>()?;
        return match head.as_slice() {
            [key, "in"] => Ok(Requirement::In(key_of(key)?, values)),
            [key, "notin"] => Ok(Requirement::NotIn(key_of(key)?, values)),
            _ => Err("expected `KEY in (...)` or `KEY notin (...)`".into()),
        };
    }
    for (operator, not) in [("!=", true), ("==", false), ("=", false)] {
        if let Some((key, value)) = part.split_once(operator) {
            let key = key_of(key)?;
            let value = value_of(value.trim())?.to_owned();
            return Ok(if not {
                Requirement::NotEquals(key, value)
            } else {
                Requirement::Equals(key, value)
            });
        }
    }
    if part.contains(['<', '>']) {
        return Err("`<` and `>` are not supported by the simulator".into());
    }
    Ok(Requirement::Exists(key_of(part)?))
}

fn key_of(text: &str) -> Result<String, String> {
    let key = text.trim();
    let valid = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if valid {
        Ok(key.to_owned())
    } else {
        Err(format!("invalid key `{key}`"))
    }
}

fn value_of(value: &str) -> Result<&str, String> {
    let valid = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(value)
    } else {
        Err(format!("invalid value `{value}`"))
    }
}

/// Whether a `LabelSelector` object (`matchLabels`, `matchExpressions`) selects `labels`. An
/// empty selector selects everything; a missing one (`None`) nothing.
pub(super) fn selector_matches(
    selector: Option<&Json>,
    labels: Option<&Map<String, Json>>,
) -> bool {
    let Some(selector) = selector.filter(|s| !s.is_null()) else {
        return false;
    };
    let label = |key: &str| {
        labels
            .and_then(|labels| labels.get(key))
            .and_then(Json::as_str)
    };
    if let Some(match_labels) = selector.get("matchLabels").and_then(Json::as_object) {
        for (key, value) in match_labels {
            if label(key) != value.as_str() {
                return false;
            }
        }
    }
    if let Some(expressions) = selector.get("matchExpressions").and_then(Json::as_array) {
        for expression in expressions {
            let key = expression.get("key").and_then(Json::as_str).unwrap_or("");
            let values: Vec<&str> = expression
                .get("values")
                .and_then(Json::as_array)
                .map(|values| values.iter().filter_map(Json::as_str).collect())
                .unwrap_or_default();
            let found = label(key);
            let holds = match expression.get("operator").and_then(Json::as_str) {
                Some("In") => found.is_some_and(|v| values.contains(&v)),
                Some("NotIn") => !found.is_some_and(|v| values.contains(&v)),
                Some("Exists") => found.is_some(),
                Some("DoesNotExist") => found.is_none(),
                _ => false,
            };
            if !holds {
                return false;
            }
        }
    }
    true
}

/// One requirement of a field selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct FieldRequirement {
    pub path: String,
    pub value: String,
    pub negated: bool,
}

/// The fields the API server lets a field selector use, per kind (`metadata.name` and
/// `metadata.namespace` for every kind).
fn supported_field(kind: &str, path: &str) -> bool {
    matches!(path, "metadata.name" | "metadata.namespace")
        || match kind {
            "Pod" => matches!(
                path,
                "spec.nodeName"
                    | "spec.restartPolicy"
                    | "spec.schedulerName"
                    | "spec.serviceAccountName"
                    | "spec.hostNetwork"
                    | "status.phase"
                    | "status.podIP"
                    | "status.nominatedNodeName"
            ),
            "Node" => path == "spec.unschedulable",
            "Secret" => path == "type",
            "Namespace" => path == "status.phase",
            "ReplicaSet" | "ReplicationController" => path == "status.replicas",
            "Job" => path == "status.successful",
            "Event" => {
                path.starts_with("involvedObject.")
                    || matches!(path, "reason" | "type" | "source" | "reportingComponent")
            }
            _ => false,
        }
}

/// Parses `metadata.name=x,status.phase!=Running` for objects of `kind`.
pub(super) fn parse_fields(kind: &str, text: &str) -> Result<Vec<FieldRequirement>, String> {
    let mut requirements = Vec::new();
    for part in text.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (path, value, negated) = if let Some((path, value)) = part.split_once("!=") {
            (path, value, true)
        } else if let Some((path, value)) = part.split_once("==") {
            (path, value, false)
        } else if let Some((path, value)) = part.split_once('=') {
            (path, value, false)
        } else {
            return Err(format!(
                "invalid field selector `{text}`: expected FIELD=VALUE or FIELD!=VALUE in `{part}`"
            ));
        };
        let path = path.trim();
        if !supported_field(kind, path) {
            return Err(format!(
                "field label not supported: {path} (for {kind}; the API server allows metadata.name, metadata.namespace and a few fields per kind)"
            ));
        }
        requirements.push(FieldRequirement {
            path: path.to_owned(),
            value: value.trim().to_owned(),
            negated,
        });
    }
    Ok(requirements)
}

impl FieldRequirement {
    pub(super) fn matches(&self, object: &Json) -> bool {
        // The API server's field names are not always the object's: a Job's
        // `status.successful` is its `.status.succeeded` (0 when unset).
        let path = match self.path.as_str() {
            "status.successful" => "status.succeeded",
            other => other,
        };
        let mut node = Some(object);
        for segment in path.split('.') {
            node = node.and_then(|n| n.get(segment));
        }
        let found = match node {
            Some(Json::String(text)) => text.clone(),
            Some(Json::Bool(flag)) => flag.to_string(),
            Some(Json::Number(number)) => number.to_string(),
            // Unset booleans read as false, like the API server's field sets.
            None | Some(Json::Null)
                if matches!(
                    self.path.as_str(),
                    "spec.unschedulable" | "spec.hostNetwork"
                ) =>
            {
                "false".to_owned()
            }
            None | Some(Json::Null) if path == "status.succeeded" => "0".to_owned(),
            _ => String::new(),
        };
        (found == self.value) != self.negated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jobs_successful_field_is_its_succeeded_count() {
        let done = serde_json::json!({"kind": "Job", "status": {"succeeded": 1}});
        let running = serde_json::json!({"kind": "Job", "status": {"active": 1}});
        let selector = parse_fields("Job", "status.successful=1").expect("supported");
        assert!(selector[0].matches(&done));
        assert!(!selector[0].matches(&running));
        let none = parse_fields("Job", "status.successful=0").expect("supported");
        assert!(none[0].matches(&running), "unset reads as 0");
    }
}
