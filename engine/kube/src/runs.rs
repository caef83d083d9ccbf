//! Runs as cluster objects (`runbook serve --cluster-state`): one `RunbookRun`
//! (`runbook.dev/v1alpha1`, `schemas/runbookrun.crd.yaml`) per run, and one admission ledger
//! (a ConfigMap) per runbook, both in the server's namespace.
//!
//! Why objects: replicas of the server share nothing but the API server, which already is a
//! consistent store with optimistic concurrency. A run's object is named after its incident
//! ([`run_name`]), so when every replica of a pair or trio takes the same notification, the
//! API server creates the object once and answers every other create with 409 AlreadyExists:
//! that answer is the deduplication. The ledger ([`runbook_core::ledger`]) holds cooldowns and
//! caps, and is written with the resourceVersion it was read at, so two replicas deciding at
//! once never both admit.

use std::time::Duration;

use http::Method;
use runbook_core::effects::{EffectError, EffectResult};
use runbook_core::ledger::Ledger;
use serde_json::{json, Value as Json};
use sha2::Digest as _;

use crate::transport::{Call, Retry, Transport};

pub const GROUP: &str = "runbook.dev";
pub const API_VERSION: &str = "runbook.dev/v1alpha1";
pub const KIND: &str = "RunbookRun";
/// The label naming a run's runbook (as [`label_value`] spells it).
pub const RUNBOOK_LABEL: &str = "runbook.dev/runbook";
/// The label holding a hash of a run's key (runbook and bound params).
pub const KEY_LABEL: &str = "runbook.dev/key";
/// The annotation naming the replica that created a run's object.
pub const ADMITTED_BY: &str = "runbook.dev/admitted-by";
const LEDGER_KEY: &str = "ledger.json";
const MERGE: &str = "application/merge-patch+json";
const JSON: &str = "application/json";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A DNS-1123 label's worth of `text`: lower case, `[a-z0-9-]`, at most `max` characters,
/// starting and ending alphanumeric.
fn dns_part(text: &str, max: usize) -> String {
    let mut part: String = text
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(max)
        .collect();
    while part.ends_with('-') {
        part.pop();
    }
    part.trim_start_matches('-').to_owned()
}

/// The object name of the run of `key` for `incident`: the same on every replica, so the
/// second create of one incident's run is refused. `<runbook>-<hash>`, at most 53 characters
/// (a valid name for every object and label value we derive from it).
pub fn run_name(runbook: &str, key: &str, incident: &str) -> String {
    let digest = sha2::Sha256::digest(format!("{runbook}\0{key}\0{incident}").as_bytes());
    let prefix = dns_part(runbook, 36);
    let hash = hex(&digest[..8]);
    if prefix.is_empty() {
        format!("run-{hash}")
    } else {
        format!("{prefix}-{hash}")
    }
}

/// A label value for `text`: itself when it is one, else a readable prefix and a hash.
pub fn label_value(text: &str) -> String {
    let valid = text.len() <= 63
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && text.starts_with(|c: char| c.is_ascii_alphanumeric())
        && text.ends_with(|c: char| c.is_ascii_alphanumeric());
    if valid {
        return text.to_owned();
    }
    let digest = sha2::Sha256::digest(text.as_bytes());
    let prefix = dns_part(text, 46);
    format!("{prefix}-{}", hex(&digest[..8]))
        .trim_start_matches('-')
        .to_owned()
}

/// The hash of a run's key, as its label holds it.
pub fn key_hash(key: &str) -> String {
    hex(&sha2::Sha256::digest(key.as_bytes())[..8])
}

/// The name of `runbook`'s admission ledger.
pub fn ledger_name(runbook: &str) -> String {
    format!("runbook-admission-{}", label_value(runbook).to_lowercase())
        .trim_end_matches(['-', '_', '.'])
        .replace(['_', '.'], "-")
}

/// What a new run's object says at creation.
#[derive(Clone, Debug)]
pub struct NewRun {
    pub name: String,
    pub runbook: String,
    pub key: String,
    /// The replica that creates it.
    pub replica: String,
    /// The object's `spec` (runbook, digest, target, params without secrets, incident,
    /// trigger).
    pub spec: Json,
}

/// How a create ended.
#[derive(Clone, Debug)]
pub enum Created {
    /// The object is new: this replica admits it.
    New(Json),
    /// It exists already (another replica, or an earlier notification, created it).
    Exists(Json),
}

/// The run objects and ledgers in one namespace.
#[derive(Clone)]
pub struct RunObjects {
    transport: Transport,
    namespace: String,
}

/// A write refused because the object changed since it was read (409).
#[derive(Debug)]
pub struct Changed;

impl RunObjects {
    pub fn new(transport: Transport, namespace: impl Into<String>) -> Self {
        Self {
            transport,
            namespace: namespace.into(),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    fn collection(&self) -> String {
        format!(
            "/apis/{API_VERSION}/namespaces/{}/runbookruns",
            self.namespace
        )
    }

    fn path(&self, name: &str) -> String {
        format!("{}/{name}", self.collection())
    }

    fn what(&self, verb: &str, name: &str) -> String {
        format!("{verb} RunbookRun {}/{name}", self.namespace)
    }

    /// Creates the run's object; an object of that name that exists already is the answer
    /// too (read back, so the caller sees who admitted it and how it stands).
    pub async fn create(&self, run: &NewRun) -> EffectResult<Created> {
        let body = json!({
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {
                "name": run.name,
                "namespace": self.namespace,
                "labels": {
                    RUNBOOK_LABEL: label_value(&run.runbook),
                    KEY_LABEL: key_hash(&run.key),
                    "app.kubernetes.io/managed-by": "runbook",
                },
                "annotations": {ADMITTED_BY: run.replica},
            },
            "spec": run.spec,
        });
        // A create that timed out may have been carried out: the retry then finds the object,
        // with this replica's name in it, and the caller takes it as its own.
        let call = Call::new(
            Method::POST,
            self.collection(),
            self.what("create", &run.name),
        )
        .json(JSON, &body)
        .retry(Retry::NoConflict);
        match self.transport.json(&call).await {
            Ok(object) => Ok(Created::New(object)),
            Err(EffectError::Conflict(_)) => match self.get(&run.name).await? {
                Some(object) => Ok(Created::Exists(object)),
                // Deleted between the two: the caller may try again.
                None => Err(EffectError::Conflict(format!(
                    "RunbookRun {}/{} was deleted while it was being created",
                    self.namespace, run.name
                ))),
            },
            Err(error) => Err(error),
        }
    }

    pub async fn get(&self, name: &str) -> EffectResult<Option<Json>> {
        let call = Call::new(Method::GET, self.path(name), self.what("get", name));
        match self.transport.json(&call).await {
            Ok(object) => Ok(Some(object)),
            Err(EffectError::NotFound(_)) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Every run object, or those matching `selector` (a label selector).
    pub async fn list(&self, selector: Option<&str>) -> EffectResult<Vec<Json>> {
        let mut uri = self.collection();
        if let Some(selector) = selector {
            uri.push_str("?labelSelector=");
            uri.extend(form_urlencoded::byte_serialize(selector.as_bytes()));
        }
        let call = Call::new(
            Method::GET,
            uri,
            format!("list RunbookRuns in {}", self.namespace),
        );
        let list = self.transport.json(&call).await?;
        Ok(list["items"].as_array().cloned().unwrap_or_default())
    }

    /// Merges `status` into the object's status (the status subresource, so nothing else of
    /// the object can change).
    pub async fn patch_status(&self, name: &str, status: &Json) -> EffectResult<Json> {
        let call = Call::new(
            Method::PATCH,
            format!("{}/status", self.path(name)),
            self.what("update the status of", name),
        )
        .json(MERGE, &json!({ "status": status }));
        self.transport.json(&call).await
    }

    /// Replaces the object's status, only if the object is still as `object` was read (its
    /// resourceVersion): of several replicas claiming one run, one wins and the others get
    /// `Ok(Err(Changed))`.
    pub async fn replace_status(
        &self,
        object: &Json,
        status: Json,
    ) -> EffectResult<Result<Json, Changed>> {
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let mut body = object.clone();
        body["status"] = status;
        let call = Call::new(
            Method::PUT,
            format!("{}/status", self.path(name)),
            self.what("claim", name),
        )
        .json(JSON, &body)
        .retry(Retry::NoConflict);
        match self.transport.json(&call).await {
            Ok(updated) => Ok(Ok(updated)),
            Err(EffectError::Conflict(_)) => Ok(Err(Changed)),
            Err(error) => Err(error),
        }
    }

    /// Deletes the object, only if it is still the one with `uid` (a newer one of the same
    /// name, created since, stays). Gone already is done.
    pub async fn delete(&self, name: &str, uid: &str) -> EffectResult<()> {
        let call = Call::new(Method::DELETE, self.path(name), self.what("delete", name))
            .json(
                JSON,
                &json!({
                    "apiVersion": "v1",
                    "kind": "DeleteOptions",
                    "preconditions": {"uid": uid},
                }),
            )
            .retry(Retry::NoConflict);
        match self.transport.send(&call).await {
            Ok(_) | Err(EffectError::NotFound(_)) => Ok(()),
            Err(error) => Err(error),
        }
    }

    fn approvals(&self) -> String {
        format!(
            "/apis/{API_VERSION}/namespaces/{}/runbookapprovals",
            self.namespace
        )
    }

    /// Creates a RunbookApproval (`runbook approve --cluster`): the API server's admission
    /// policy refuses one whose `spec.by` is not its creator, so the name in it is one the
    /// API server authenticated.
    pub async fn create_approval(&self, approval: &Json) -> EffectResult<Json> {
        let name = approval["metadata"]["name"].as_str().unwrap_or_default();
        let call = Call::new(
            Method::POST,
            self.approvals(),
            format!("create RunbookApproval {}/{name}", self.namespace),
        )
        .json(JSON, approval)
        .retry(Retry::NoConflict);
        self.transport.json(&call).await
    }

    pub async fn get_approval(&self, name: &str) -> EffectResult<Option<Json>> {
        let call = Call::new(
            Method::GET,
            format!("{}/{name}", self.approvals()),
            format!("get RunbookApproval {}/{name}", self.namespace),
        );
        match self.transport.json(&call).await {
            Ok(object) => Ok(Some(object)),
            Err(EffectError::NotFound(_)) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Every RunbookApproval in the namespace.
    pub async fn list_approvals(&self) -> EffectResult<Vec<Json>> {
        let call = Call::new(
            Method::GET,
            self.approvals(),
            format!("list RunbookApprovals in {}", self.namespace),
        );
        let list = self.transport.json(&call).await?;
        Ok(list["items"].as_array().cloned().unwrap_or_default())
    }

    /// Deletes a decided approval (kept for the record an hour).
    pub async fn delete_approval(&self, name: &str) -> EffectResult<()> {
        let call = Call::new(
            Method::DELETE,
            format!("{}/{name}", self.approvals()),
            format!("delete RunbookApproval {}/{name}", self.namespace),
        )
        .retry(Retry::NoConflict);
        match self.transport.send(&call).await {
            Ok(_) | Err(EffectError::NotFound(_)) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Records the decision on an approval, only if nobody decided since it was read.
    pub async fn decide_approval(
        &self,
        approval: &Json,
        status: Json,
    ) -> EffectResult<Result<Json, Changed>> {
        let name = approval["metadata"]["name"].as_str().unwrap_or_default();
        let mut body = approval.clone();
        body["status"] = status;
        let call = Call::new(
            Method::PUT,
            format!("{}/{name}/status", self.approvals()),
            format!("decide RunbookApproval {}/{name}", self.namespace),
        )
        .json(JSON, &body)
        .retry(Retry::NoConflict);
        match self.transport.json(&call).await {
            Ok(updated) => Ok(Ok(updated)),
            Err(EffectError::Conflict(_)) => Ok(Err(Changed)),
            Err(error) => Err(error),
        }
    }

    fn ledger_path(&self, runbook: &str) -> String {
        format!(
            "/api/v1/namespaces/{}/configmaps/{}",
            self.namespace,
            ledger_name(runbook)
        )
    }

    /// The runbook's ledger and the resourceVersion it was read at (none: no ledger yet).
    pub async fn ledger(&self, runbook: &str) -> EffectResult<(Ledger, Option<String>)> {
        let name = ledger_name(runbook);
        let call = Call::new(
            Method::GET,
            self.ledger_path(runbook),
            format!("get ConfigMap {}/{name}", self.namespace),
        );
        let object = match self.transport.json(&call).await {
            Ok(object) => object,
            Err(EffectError::NotFound(_)) => return Ok((Ledger::default(), None)),
            Err(error) => return Err(error),
        };
        let version = object["metadata"]["resourceVersion"]
            .as_str()
            .map(str::to_owned);
        let ledger = match object["data"][LEDGER_KEY].as_str() {
            Some(text) => serde_json::from_str(text).map_err(|e| {
                EffectError::Invalid(format!(
                    "ConfigMap {}/{name} does not hold an admission ledger: {e}; delete it to start afresh",
                    self.namespace
                ))
            })?,
            None => Ledger::default(),
        };
        Ok((ledger, Some(version.unwrap_or_default())))
    }

    /// Writes the ledger, if it is still at `version` (none: if there is none yet).
    /// `Ok(Err(Changed))`: another replica wrote it since; read it again and decide again.
    pub async fn write_ledger(
        &self,
        runbook: &str,
        ledger: &Ledger,
        version: Option<&str>,
    ) -> EffectResult<Result<(), Changed>> {
        let name = ledger_name(runbook);
        let text = serde_json::to_string(ledger)
            .map_err(|e| EffectError::Other(format!("cannot write the ledger: {e}")))?;
        let mut body = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "labels": {
                    RUNBOOK_LABEL: label_value(runbook),
                    "app.kubernetes.io/managed-by": "runbook",
                },
            },
            "data": {LEDGER_KEY: text},
        });
        let call = match version {
            Some(version) => {
                body["metadata"]["resourceVersion"] = json!(version);
                Call::new(
                    Method::PUT,
                    self.ledger_path(runbook),
                    format!("update ConfigMap {}/{name}", self.namespace),
                )
            }
            None => Call::new(
                Method::POST,
                format!("/api/v1/namespaces/{}/configmaps", self.namespace),
                format!("create ConfigMap {}/{name}", self.namespace),
            ),
        }
        .json(JSON, &body)
        .retry(Retry::NoConflict);
        match self.transport.send(&call).await {
            Ok(_) => Ok(Ok(())),
            Err(EffectError::Conflict(_)) => Ok(Err(Changed)),
            // Updated at a version that was deleted since.
            Err(EffectError::NotFound(_)) if version.is_some() => Ok(Err(Changed)),
            Err(error) => Err(error),
        }
    }

    /// Reads the ledger, lets `change` decide, and writes it back if `change` says it changed;
    /// again from the read when another replica wrote it in between. `change`'s answer.
    pub async fn update_ledger<T>(
        &self,
        runbook: &str,
        mut change: impl FnMut(&mut Ledger) -> (T, bool),
    ) -> EffectResult<T> {
        for attempt in 0..LEDGER_ATTEMPTS {
            let (mut ledger, version) = self.ledger(runbook).await?;
            let (answer, changed) = change(&mut ledger);
            if !changed {
                return Ok(answer);
            }
            let written = self
                .write_ledger(runbook, &ledger, version.as_deref())
                .await?;
            if written.is_ok() {
                return Ok(answer);
            }
            // Replicas deciding at once: a random pause, growing, so they fall out of step.
            tokio::time::sleep(backoff(attempt)).await;
        }
        Err(EffectError::Unavailable(format!(
            "the admission ledger of {runbook} kept changing under us; try again"
        )))
    }
}

/// Reads and writes of a ledger before giving up (the caller answers 503: try later).
const LEDGER_ATTEMPTS: u32 = 16;

/// A random pause of up to 5 ms doubled per attempt, at most 160 ms (full jitter).
fn backoff(attempt: u32) -> Duration {
    let ceiling = 5_u64 << attempt.min(5);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    // The clock's low bits, mixed, are random enough to pull replicas apart.
    let mixed = nanos.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 17;
    Duration::from_micros(mixed % (ceiling * 1000).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_name_is_the_same_for_the_same_incident_and_a_valid_object_name() {
        let a = run_name(
            "openbao-sealed",
            "openbao-sealed ns=vault",
            "abc@2026-01-01T00:00:00Z",
        );
        assert_eq!(
            a,
            run_name(
                "openbao-sealed",
                "openbao-sealed ns=vault",
                "abc@2026-01-01T00:00:00Z"
            )
        );
        assert_ne!(
            a,
            run_name(
                "openbao-sealed",
                "openbao-sealed ns=vault",
                "abc@2026-01-01T00:00:01Z"
            )
        );
        assert!(a.starts_with("openbao-sealed-"), "{a}");
        let long = run_name(&"Very_Long.Name".repeat(10), "k", "i");
        assert!(long.len() <= 53, "{long}");
        assert!(long
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
        assert!(run_name("---", "k", "i").starts_with("run-"));
    }

    #[test]
    fn label_values_and_ledger_names_are_valid_whatever_the_runbook_is_called() {
        assert_eq!(label_value("openbao-sealed"), "openbao-sealed");
        let long = label_value(&"x".repeat(100));
        assert!(long.len() <= 63, "{long}");
        assert_ne!(
            label_value("a b"),
            label_value("a-b"),
            "a hash keeps them apart"
        );
        let name = ledger_name("Odd.Name_");
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{name}"
        );
    }
}
