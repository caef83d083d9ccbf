//! Which URL serves a kind: the API server's discovery documents (`/api/v1`,
//! `/apis/GROUP/VERSION`), read once per group version and kept, so built-in kinds and custom
//! resources are reached alike.

use std::collections::HashMap;

use http::Method;
use runbook_core::effects::{EffectError, EffectResult};
use serde_json::Value as Json;
use tokio::sync::Mutex;

use crate::transport::{Call, Transport};

/// One kind's place in the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    pub api_version: String,
    pub kind: String,
    /// The plural: `deployments`.
    pub plural: String,
    pub namespaced: bool,
    /// Subresources the server lists for it: `scale`, `status`, `eviction`...
    pub subresources: Vec<String>,
}

impl Resource {
    /// `/api/v1` or `/apis/apps/v1`.
    pub fn group_path(&self) -> String {
        group_path(&self.api_version)
    }

    /// The collection: `/apis/apps/v1/namespaces/shop/deployments`, or across namespaces (and
    /// for cluster-scoped kinds) `/apis/apps/v1/deployments`.
    pub fn collection(&self, namespace: Option<&str>) -> String {
        match (self.namespaced, namespace) {
            (true, Some(namespace)) => format!(
                "{}/namespaces/{namespace}/{}",
                self.group_path(),
                self.plural
            ),
            _ => format!("{}/{}", self.group_path(), self.plural),
        }
    }
}

pub fn group_path(api_version: &str) -> String {
    if api_version.contains('/') {
        format!("/apis/{api_version}")
    } else {
        format!("/api/{api_version}")
    }
}

/// Discovery documents, by group version.
#[derive(Default)]
pub struct Discovery {
    groups: Mutex<HashMap<String, Vec<Resource>>>,
}

impl Discovery {
    pub async fn resolve(
        &self,
        transport: &Transport,
        api_version: &str,
        kind: &str,
    ) -> EffectResult<Resource> {
        let mut groups = self.groups.lock().await;
        if !groups.contains_key(api_version) {
            let resources = read_group(transport, api_version).await?;
            groups.insert(api_version.to_owned(), resources);
        }
        let resources = &groups[api_version];
        resources
            .iter()
            .find(|r| r.kind == kind)
            .cloned()
            .ok_or_else(|| {
                let known: Vec<&str> = resources.iter().map(|r| r.kind.as_str()).collect();
                EffectError::NotFound(format!(
                    "the API server has no kind {kind} in {api_version} (it serves: {}); check apiVersion and kind, or whether the CRD is installed",
                    if known.is_empty() { "nothing".to_owned() } else { known.join(", ") }
                ))
            })
    }
}

async fn read_group(transport: &Transport, api_version: &str) -> EffectResult<Vec<Resource>> {
    let call = Call::new(
        Method::GET,
        group_path(api_version),
        format!("discover {api_version}"),
    );
    let list = match transport.json(&call).await {
        Ok(list) => list,
        Err(EffectError::NotFound(_)) => {
            return Err(EffectError::NotFound(format!(
                "the API server does not serve {api_version}; check the apiVersion, or whether the CRD that defines it is installed"
            )))
        }
        Err(error) => return Err(error),
    };
    let entries = list
        .get("resources")
        .and_then(Json::as_array)
        .cloned()
        .unwrap_or_default();
    let mut resources: Vec<Resource> = Vec::new();
    let named = |entry: &Json| {
        let name = entry.get("name").and_then(Json::as_str).unwrap_or_default();
        let kind = entry.get("kind").and_then(Json::as_str).unwrap_or_default();
        (!name.is_empty() && !kind.is_empty()).then(|| (name.to_owned(), kind.to_owned()))
    };
    for entry in &entries {
        let Some((name, kind)) = named(entry) else {
            continue;
        };
        if !name.contains('/') {
            resources.push(Resource {
                api_version: api_version.to_owned(),
                kind,
                plural: name,
                namespaced: entry
                    .get("namespaced")
                    .and_then(Json::as_bool)
                    .unwrap_or(true),
                subresources: Vec::new(),
            });
        }
    }
    for (name, _) in entries.iter().filter_map(named) {
        if let Some((plural, sub)) = name.split_once('/') {
            if let Some(resource) = resources.iter_mut().find(|r| r.plural == plural) {
                resource.subresources.push(sub.to_owned());
            }
        }
    }
    Ok(resources)
}
