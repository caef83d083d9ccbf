//! The effects boundary: everything the executor does to the world goes through these traits.
//!
//! The same executor runs against the live cluster (the kube implementation in its own crate),
//! a server-side dry-run, or the simulated cluster (`sim.rs`), and its tests run against the
//! simulator with a paused clock. Implementations must be `Send + Sync`: independent steps run
//! in parallel.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::document::{PatchType, Propagation};

mod process_group;

/// Which object: group/version, kind, namespace (None for cluster-scoped kinds) and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectKey {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(namespace) => write!(f, "{} {namespace}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// A list request: every object of a kind, optionally in one namespace and filtered by
/// label and field selectors (Kubernetes syntax).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListQuery {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_selector: Option<String>,
}

/// A pod and, optionally, one of its containers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRef {
    pub namespace: String,
    pub pod: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

/// Which part of a container's log to read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Only the last this many lines; `None` reads the whole log.
    pub tail_lines: Option<u32>,
    /// The container's previous instance, the one that exited before its last restart.
    pub previous: bool,
}

impl LogOptions {
    /// The `kubectl logs` flags that ask for the same: ` --previous --tail 20`.
    pub fn flags(&self) -> String {
        let mut flags = String::new();
        if self.previous {
            flags.push_str(" --previous");
        }
        if let Some(count) = self.tail_lines {
            flags.push_str(&format!(" --tail {count}"));
        }
        flags
    }
}

/// Whether a write is applied or only validated by the server (`dryRun=All`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DryRun {
    No,
    Server,
}

impl DryRun {
    pub fn is_dry(self) -> bool {
        self == Self::Server
    }
}

/// What a process or pod exec produced.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandOutput {
    pub exit_code: i32,
    #[serde(default)]
    pub stdout: String,
    #[serde(default)]
    pub stderr: String,
}

/// What a drain did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DrainReport {
    /// Pods evicted, as `namespace/name`.
    pub evicted: Vec<String>,
    /// Pods left alone (DaemonSet and mirror pods), as `namespace/name`.
    pub skipped: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainOptions {
    pub delete_empty_dir_data: bool,
    pub eviction_timeout: Duration,
}

/// An HTTP response, whatever its status: the caller decides which statuses are answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names in lowercase; a header sent more than once, its values joined by `, `.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

/// Why a call to the outside failed. Callers match on the kind (the live cluster keeps the
/// HTTP status in the message).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", content = "message", rename_all = "kebab-case")]
pub enum EffectError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    /// A server-side apply that conflicts with another field manager: the same every time,
    /// until someone decides who owns the field.
    #[error("conflict: {0}")]
    FieldManagerConflict(String),
    /// The server refused the request as invalid (422, a patch that does not apply).
    #[error("invalid: {0}")]
    Invalid(String),
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// A PodDisruptionBudget (or similar) does not allow it now (429).
    #[error("blocked: {0}")]
    Blocked(String),
    /// The other side could not be reached, or failed (5xx, network, timeout).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

impl EffectError {
    /// Whether the same request may succeed later. See `exec::StepError::retryable`.
    pub fn retryable(&self) -> bool {
        match self {
            Self::NotFound(_)
            | Self::Invalid(_)
            | Self::Forbidden(_)
            | Self::FieldManagerConflict(_) => false,
            Self::Conflict(_) | Self::Blocked(_) | Self::Unavailable(_) | Self::Other(_) => true,
        }
    }

    /// The kind, as the journal and scenarios name it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "not-found",
            Self::Conflict(_) => "conflict",
            Self::FieldManagerConflict(_) => "field-manager-conflict",
            Self::Invalid(_) => "invalid",
            Self::Forbidden(_) => "forbidden",
            Self::Blocked(_) => "blocked",
            Self::Unavailable(_) => "unavailable",
            Self::Other(_) => "other",
        }
    }
}

pub type EffectResult<T> = Result<T, EffectError>;

/// The Kubernetes API, as the executor needs it. Every write takes a [`DryRun`]; with
/// `DryRun::Server` the write is validated as the API server would and nothing changes.
#[async_trait]
pub trait Cluster: Send + Sync {
    async fn get(&self, key: &ObjectKey) -> EffectResult<Json>;
    /// A `...List` object with `items`.
    async fn list(&self, query: &ListQuery) -> EffectResult<Json>;
    /// Sets `spec.replicas` through the scale subresource; returns the object after.
    async fn scale(&self, key: &ObjectKey, replicas: i64, dry_run: DryRun) -> EffectResult<Json>;
    /// Rollout restart: stamps `kubectl.kubernetes.io/restartedAt` on the pod template.
    async fn restart(&self, key: &ObjectKey, at: SystemTime, dry_run: DryRun)
        -> EffectResult<Json>;
    async fn patch(
        &self,
        key: &ObjectKey,
        patch_type: PatchType,
        body: &Json,
        dry_run: DryRun,
    ) -> EffectResult<Json>;
    /// Server-side apply of a whole object, with our field manager.
    async fn apply(&self, manifest: &Json, dry_run: DryRun) -> EffectResult<Json>;
    async fn delete(
        &self,
        key: &ObjectKey,
        propagation: Option<Propagation>,
        grace_period_seconds: Option<u32>,
        dry_run: DryRun,
    ) -> EffectResult<()>;
    /// Cordon (`true`) or uncordon (`false`) a node; returns the node after.
    async fn set_unschedulable(
        &self,
        node: &str,
        unschedulable: bool,
        dry_run: DryRun,
    ) -> EffectResult<Json>;
    /// Cordon, then evict every pod on the node through the Eviction API (honouring
    /// PodDisruptionBudgets), skipping DaemonSet and mirror pods, as `kubectl drain` does.
    async fn drain(
        &self,
        node: &str,
        options: &DrainOptions,
        dry_run: DryRun,
    ) -> EffectResult<DrainReport>;
    async fn exec(
        &self,
        pod: &PodRef,
        argv: &[String],
        timeout: Duration,
    ) -> EffectResult<CommandOutput>;

    /// A container's log, as `kubectl logs [--previous] [--tail N] [-c CONTAINER]` prints
    /// it. Asking for the previous instance of a container that never restarted is
    /// [`EffectError::Invalid`], as the API server's 400 is.
    async fn logs(&self, pod: &PodRef, options: LogOptions) -> EffectResult<String> {
        let _ = options;
        Err(EffectError::Other(format!(
            "this cluster cannot read the logs of pod {}/{}",
            pod.namespace, pod.pod
        )))
    }

    /// Sets (or, with `None`, removes) annotations: a merge patch of `metadata.annotations`.
    async fn annotate(
        &self,
        key: &ObjectKey,
        set: &BTreeMap<String, Option<String>>,
        dry_run: DryRun,
    ) -> EffectResult<Json> {
        self.patch(
            key,
            PatchType::Merge,
            &metadata_patch("annotations", set),
            dry_run,
        )
        .await
    }

    /// Sets (or, with `None`, removes) labels: a merge patch of `metadata.labels`.
    async fn label(
        &self,
        key: &ObjectKey,
        set: &BTreeMap<String, Option<String>>,
        dry_run: DryRun,
    ) -> EffectResult<Json> {
        self.patch(
            key,
            PatchType::Merge,
            &metadata_patch("labels", set),
            dry_run,
        )
        .await
    }

    /// Waits until `ready` holds for the object, re-reading it every `interval`; returns the
    /// object that satisfied it. The caller bounds it with the step's timeout. The live
    /// cluster overrides this with a watch instead of polling.
    async fn wait(
        &self,
        key: &ObjectKey,
        ready: &WaitCondition,
        interval: Duration,
    ) -> EffectResult<Json> {
        loop {
            let object = self.get(key).await?;
            if ready(&object).map_err(EffectError::Invalid)? {
                return Ok(object);
            }
            tokio::time::sleep(interval).await;
        }
    }
}

/// What `Cluster::wait` waits for: true when the object is ready; an error stops the wait.
pub type WaitCondition = dyn Fn(&Json) -> Result<bool, String> + Send + Sync;

fn metadata_patch(field: &str, set: &BTreeMap<String, Option<String>>) -> Json {
    let values: serde_json::Map<String, Json> = set
        .iter()
        .map(|(key, value)| (key.clone(), value.clone().map_or(Json::Null, Json::String)))
        .collect();
    serde_json::json!({"metadata": {field: values}})
}

/// Local processes: argv only, never a shell.
#[async_trait]
pub trait Processes: Send + Sync {
    /// Runs `argv` (never through a shell) with `env` added to this process's environment.
    async fn run(
        &self,
        argv: &[String],
        env: &BTreeMap<String, String>,
        timeout: Duration,
    ) -> EffectResult<CommandOutput>;
}

/// HTTP reads (facts such as a Prometheus query).
#[async_trait]
pub trait Http: Send + Sync {
    async fn get(
        &self,
        url: &str,
        query: &BTreeMap<String, String>,
        headers: &BTreeMap<String, String>,
    ) -> EffectResult<HttpResponse>;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotificationKind {
    Notify,
    Page,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub kind: NotificationKind,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
}

/// Notifications and pages (already redacted when they get here).
#[async_trait]
pub trait Notifier: Send + Sync {
    async fn send(&self, notification: &Notification) -> EffectResult<()>;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Answer {
    Yes,
    No,
    /// Nobody can be asked (no terminal).
    NoTerminal,
    /// Left unanswered: the run is draining (a server shutting down) and stops at this gate,
    /// to be asked again when it is resumed.
    Paused,
}

/// Asks a human at a confirmation gate.
#[async_trait]
pub trait Prompter: Send + Sync {
    /// `step` is the step's id, `question` the gate's question, and `detail` what will happen
    /// if approved.
    async fn confirm(&self, step: &str, question: &str, detail: &str) -> Answer;

    /// Whether `confirm` for this step will wait for an approval from elsewhere (an unattended
    /// run): the executor journals the pause before it asks.
    fn pauses(&self, _step: &str) -> bool {
        false
    }

    /// Who answered the last `confirm` for this step, for the journal.
    fn answered_by(&self, _step: &str) -> String {
        "terminal".to_owned()
    }
}

/// Wall time for the journal, and sleeping (retries, verify polls). Tests use tokio's paused
/// clock, so nothing really sleeps.
#[async_trait]
pub trait Clock: Send + Sync {
    fn now(&self) -> SystemTime;
    async fn sleep(&self, duration: Duration);
}

/// Told about every event of a run as it happens (progress bars, plain lines, JSON output),
/// after redaction, exactly as the journal records it.
pub trait Reporter: Send + Sync {
    fn record(&self, record: &crate::journal::Record);
}

/// Told when a step finishes, so a simulated world can change its scripted answers.
pub trait StepObserver: Send + Sync {
    fn step_finished(&self, step: &str, succeeded: bool);
}

/// Everything the executor may touch.
#[derive(Clone)]
pub struct Effects {
    pub cluster: Arc<dyn Cluster>,
    pub processes: Arc<dyn Processes>,
    pub http: Arc<dyn Http>,
    pub notifier: Arc<dyn Notifier>,
    pub prompter: Arc<dyn Prompter>,
    pub clock: Arc<dyn Clock>,
    pub reporter: Arc<dyn Reporter>,
    pub observer: Option<Arc<dyn StepObserver>>,
}

/// The real clock.
pub struct SystemClock;

#[async_trait]
impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }
}

/// A clock whose `now` follows tokio's clock from a fixed start, for tests and scenarios: with
/// a paused tokio runtime, sleeps complete at once and timestamps stay reproducible.
pub struct ScenarioClock {
    start_wall: SystemTime,
    start: tokio::time::Instant,
}

impl ScenarioClock {
    pub fn new(start_wall: SystemTime) -> Self {
        Self {
            start_wall,
            start: tokio::time::Instant::now(),
        }
    }
}

#[async_trait]
impl Clock for ScenarioClock {
    fn now(&self) -> SystemTime {
        self.start_wall + self.start.elapsed()
    }

    async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }
}

/// A prompter that answers the same every time (`--yes`, scenario tests, no terminal).
pub struct FixedAnswer(pub Answer);

#[async_trait]
impl Prompter for FixedAnswer {
    async fn confirm(&self, _step: &str, _question: &str, _detail: &str) -> Answer {
        self.0
    }
}

/// A reporter that drops everything.
pub struct Silent;

impl Reporter for Silent {
    fn record(&self, _record: &crate::journal::Record) {}
}

/// Local processes: argv, never a shell. Each leads a process group of its own, killed whole
/// when it times out or its step is cancelled (see [`process_group`]).
pub struct LocalProcesses;

impl LocalProcesses {
    /// Kills every local process still running, with whatever it started: for a run that
    /// quits at once, before its steps could be cancelled.
    pub fn kill_all() {
        process_group::kill_all();
    }
}

#[async_trait]
impl Processes for LocalProcesses {
    async fn run(
        &self,
        argv: &[String],
        env: &BTreeMap<String, String>,
        timeout: Duration,
    ) -> EffectResult<CommandOutput> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| EffectError::Invalid("empty command".to_owned()))?;
        let mut command = tokio::process::Command::new(program);
        command
            .args(args)
            .envs(env)
            .stdin(std::process::Stdio::null());
        let cannot_run = |error: std::io::Error| match error.kind() {
            std::io::ErrorKind::NotFound => {
                EffectError::NotFound(format!("program `{program}` not found"))
            }
            _ => EffectError::Other(format!("cannot run `{program}`: {error}")),
        };
        let mut group = process_group::ProcessGroup::spawn(command).map_err(cannot_run)?;
        let output = tokio::time::timeout(timeout, group.finish())
            .await
            .map_err(|_| {
                EffectError::Unavailable(format!(
                    "`{program}` did not finish within {}",
                    humantime::format_duration(timeout)
                ))
            })?
            .map_err(cannot_run)?;
        Ok(CommandOutput {
            exit_code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_process_gets_the_environment_it_is_given_and_keeps_its_own() {
        let env = BTreeMap::from([("RUNBOOK_TEST_GREETING".to_owned(), "hello there".to_owned())]);
        let argv: Vec<String> = [
            "sh",
            "-c",
            r#"printf '%s|%s' "$RUNBOOK_TEST_GREETING" "$PATH""#,
        ]
        .map(str::to_owned)
        .to_vec();
        let output = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(LocalProcesses.run(&argv, &env, Duration::from_secs(10)))
            .expect("sh runs");
        let (greeting, path) = output.stdout.split_once('|').expect("two values");
        assert_eq!(greeting, "hello there");
        assert!(!path.is_empty(), "the engine's own environment is kept");
    }
}
