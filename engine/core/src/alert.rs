//! Alertmanager webhook payloads (version 4) and matching them to runbook triggers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::runbook::Runbook;

/// The body Alertmanager POSTs to a webhook receiver.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookPayload {
    pub version: String,
    #[serde(default)]
    pub group_key: String,
    #[serde(default)]
    pub truncated_alerts: u64,
    pub status: AlertStatus,
    #[serde(default)]
    pub receiver: String,
    #[serde(default)]
    pub group_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub common_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub common_annotations: BTreeMap<String, String>,
    #[serde(default, rename = "externalURL")]
    pub external_url: String,
    pub alerts: Vec<Alert>,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub status: AlertStatus,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub starts_at: String,
    #[serde(default)]
    pub ends_at: String,
    #[serde(default, rename = "generatorURL")]
    pub generator_url: String,
    #[serde(default)]
    pub fingerprint: String,
}

impl Alert {
    pub fn name(&self) -> &str {
        self.labels.get("alertname").map_or("", String::as_str)
    }
}

/// Why a payload could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("not an Alertmanager webhook payload: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unsupported payload version `{0}`; Alertmanager sends version 4")]
    Version(String),
}

impl WebhookPayload {
    pub fn parse(text: &str) -> Result<Self, PayloadError> {
        let payload: Self = serde_json::from_str(text)?;
        if payload.version != "4" {
            return Err(PayloadError::Version(payload.version));
        }
        Ok(payload)
    }
}

/// The first firing alert in `payload` that one of `runbook`'s triggers matches.
pub fn first_match<'p>(
    runbook: &Runbook,
    payload: &'p WebhookPayload,
) -> Option<(usize, &'p Alert)> {
    payload
        .alerts
        .iter()
        .filter(|alert| alert.status == AlertStatus::Firing)
        .find_map(|alert| {
            runbook
                .triggers
                .iter()
                .position(|trigger| trigger.matches(&alert.labels))
                .map(|index| (index, alert))
        })
}
