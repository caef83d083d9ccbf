//! Label and field selectors, parsed and matched as the API server does, including its
//! refusal of field selectors a resource does not support.

use serde_json::Value as Json;

use crate::reply::{bad_request, Reply};
use crate::requests::Recorded;
use crate::resources::ResourceType;

/// `key=value`, `key==value`, `key!=value`, `key` and `!key`.
#[derive(Clone, Debug)]
pub(crate) enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    Absent(String),
}

impl Requirement {
    pub(crate) fn holds(&self, value: impl Fn(&str) -> Option<String>) -> bool {
        match self {
            Self::Equals(key, wanted) => value(key).unwrap_or_default() == *wanted,
            Self::NotEquals(key, unwanted) => value(key).unwrap_or_default() != *unwanted,
            Self::Exists(key) => value(key).is_some(),
            Self::Absent(key) => value(key).is_none(),
        }
    }
}

pub(crate) fn parse_selector(text: Option<&str>, fields: bool) -> Result<Vec<Requirement>, Reply> {
    let token = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
    };
    let pair = |(key, value): (&str, &str)| (key.trim().to_owned(), value.trim().to_owned());
    let mut requirements = Vec::new();
    for part in text.unwrap_or_default().split(',').map(str::trim) {
        if part.is_empty() {
            continue;
        }
        let unparsable = || bad_request(&format!("unable to parse requirement: {part:?}"));
        let requirement = if let Some((key, value)) = part.split_once("!=").map(pair) {
            Requirement::NotEquals(key, value)
        } else if let Some((key, value)) = part
            .split_once("==")
            .or_else(|| part.split_once('='))
            .map(pair)
        {
            Requirement::Equals(key, value)
        } else if fields {
            return Err(unparsable());
        } else if let Some(key) = part.strip_prefix('!') {
            Requirement::Absent(key.to_owned())
        } else {
            Requirement::Exists(part.to_owned())
        };
        let (key, value) = match &requirement {
            Requirement::Equals(key, value) | Requirement::NotEquals(key, value) => {
                (key.as_str(), value.as_str())
            }
            Requirement::Exists(key) | Requirement::Absent(key) => (key.as_str(), ""),
        };
        if !token(key) || !(value.is_empty() || token(value)) {
            return Err(unparsable());
        }
        requirements.push(requirement);
    }
    Ok(requirements)
}

/// The field selectors the real API server supports for each resource.
pub(crate) fn field_supported(resource: &ResourceType, field: &str) -> bool {
    matches!(field, "metadata.name" | "metadata.namespace")
        || match resource.plural {
            "pods" => matches!(
                field,
                "spec.nodeName"
                    | "spec.restartPolicy"
                    | "spec.schedulerName"
                    | "spec.serviceAccountName"
                    | "status.phase"
                    | "status.podIP"
                    | "status.nominatedNodeName"
            ),
            "nodes" => field == "spec.unschedulable",
            "secrets" => field == "type",
            _ => false,
        }
}

pub(crate) struct Selectors {
    pub(crate) labels: Vec<Requirement>,
    pub(crate) fields: Vec<Requirement>,
}

impl Selectors {
    pub(crate) fn of(resource: &ResourceType, request: &Recorded) -> Result<Self, Reply> {
        let labels = parse_selector(request.param("labelSelector"), false)?;
        let fields = parse_selector(request.param("fieldSelector"), true)?;
        for field in &fields {
            let (Requirement::Equals(name, _) | Requirement::NotEquals(name, _)) = field else {
                continue;
            };
            if !field_supported(resource, name) {
                return Err(bad_request(&format!("field label not supported: {name}")));
            }
        }
        Ok(Self { labels, fields })
    }

    pub(crate) fn select(&self, object: &Json) -> bool {
        let label = |key: &str| {
            object
                .pointer("/metadata/labels")
                .and_then(|labels| labels.get(key))
                .and_then(Json::as_str)
                .map(str::to_owned)
        };
        let field = |path: &str| {
            object
                .pointer(&format!("/{}", path.replace('.', "/")))
                .map(|value| match value {
                    Json::String(text) => text.clone(),
                    other => other.to_string(),
                })
        };
        self.labels.iter().all(|r| r.holds(label)) && self.fields.iter().all(|r| r.holds(field))
    }
}
