//! A run's journal kept through the Kubernetes API, so that another replica of `runbook serve
//! --cluster-state` can read it and resume the run when the replica running it dies.
//!
//! - Storage: ConfigMaps in the run's namespace, `<run>-journal-0000`, `-0001`..., labelled
//!   `runbook.dev/run` (the run's name, or a prefix and a hash of it when it is longer than a
//!   label value may be; the full name is always in the annotation of the same key) and
//!   `runbook.dev/journal-chunk` (the chunk's number), holding whole JSON lines under
//!   `records.jsonl`, at most [`JournalSpec::chunk_bytes`] of them (256 KiB by default, well
//!   below what an object may weigh in etcd). Given the RunbookRun's uid, every chunk is owned
//!   by it, so deleting the run deletes its journal.
//! - Append: the lines go into the last chunk with an update carrying the resourceVersion this
//!   store last saw, and into a new chunk (a create) once the last one is full. A 409 on
//!   either means someone else wrote the journal (another replica took the run over): the
//!   store answers [`JournalStoreError::Taken`] to that append and every later one. The API
//!   server answering is what makes an append durable; 429, 5xx and lost connections are
//!   retried with the transport's policy. A write whose answer never came is found out (read
//!   back) before the next one, so a lost answer is neither a false `Taken` nor a line out of
//!   order.
//! - Open and read: the chunks are listed by label and put in order by number (not by the
//!   list's order); they must be numbered from 0 without a gap. [`JournalStore::open`] goes
//!   on appending in the last one, from its resourceVersion: a replica that takes a run over
//!   continues the same journal.
//!
//! The API is async; [`BlockingJournalStore`] serves a synchronous caller (the journal in
//! core) from a thread of its own.

use std::sync::mpsc as std_mpsc;

use http::Method;
use runbook_core::effects::EffectError;
use serde_json::{json, Value as Json};
use sha2::{Digest as _, Sha256};
use tokio::sync::{mpsc, Mutex};

use crate::transport::{Call, Retry, Transport};

/// How much of the records one chunk holds unless told otherwise.
pub const DEFAULT_CHUNK_BYTES: usize = 256 * 1024;
/// The most a chunk may hold: a ConfigMap's data is at most 1 MiB, its keys included.
pub const MAX_CHUNK_BYTES: usize = 1024 * 1024 - 1024;
/// The label (and annotation) naming the run a chunk belongs to.
pub const RUN_LABEL: &str = "runbook.dev/run";
/// The label holding a chunk's number.
pub const CHUNK_LABEL: &str = "runbook.dev/journal-chunk";
/// The data key of a chunk's records.
pub const RECORDS_KEY: &str = "records.jsonl";

const LABEL_VALUE_LIMIT: usize = 63;
const NAME_LIMIT: usize = 253;
const JSON: &str = "application/json";

/// Where a run's journal lives, and how it is cut into chunks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalSpec {
    /// The run's namespace (the RunbookRun's, when it owns the chunks).
    pub namespace: String,
    /// The run's name: the RunbookRun's `metadata.name`.
    pub run: String,
    /// The RunbookRun's `metadata.uid`: when given, it owns every chunk.
    pub run_uid: Option<String>,
    /// The most bytes of records one chunk holds (at most [`MAX_CHUNK_BYTES`]).
    pub chunk_bytes: usize,
}

impl JournalSpec {
    pub fn new(namespace: impl Into<String>, run: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            run: run.into(),
            run_uid: None,
            chunk_bytes: DEFAULT_CHUNK_BYTES,
        }
    }
}

/// Why the journal could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum JournalStoreError {
    /// Someone else wrote the journal since this store last did: another replica took the run
    /// over. Stop the run; appending again is refused.
    #[error("the journal of run {namespace}/{run} was taken over: {detail}")]
    Taken {
        namespace: String,
        run: String,
        detail: String,
    },
    /// A chunk's name would not be a Kubernetes object name.
    #[error("journal chunk name `{name}` is not a valid object name: {reason}")]
    Name { name: String, reason: String },
    /// The run's name cannot go into a label, or the namespace into a path.
    #[error("{0}")]
    Spec(String),
    /// One line is larger than a whole chunk.
    #[error("a journal line of {bytes} bytes does not fit in a chunk of {chunk_bytes} bytes")]
    LineTooLong { bytes: usize, chunk_bytes: usize },
    /// What was given to append is not whole UTF-8 lines.
    #[error("journal records must be whole UTF-8 lines, each ending in a newline: {0}")]
    NotLines(String),
    /// A chunk is missing between others.
    #[error("the journal of run {namespace}/{run} has no chunk {missing} (the chunks found are {found:?})")]
    Gap {
        namespace: String,
        run: String,
        missing: u32,
        found: Vec<u32>,
    },
    /// A chunk that does not hold what a chunk holds.
    #[error("journal chunk {name} is damaged: {reason}")]
    Damaged { name: String, reason: String },
    /// The API server refused, or did not answer after the transport's retries.
    #[error("{0}")]
    Api(#[source] EffectError),
    /// The thread of a [`BlockingJournalStore`] could not start, or has stopped.
    #[error("the journal store's thread: {0}")]
    Thread(String),
}

/// One chunk as listed: its number and the stored ConfigMap.
struct Chunk {
    number: u32,
    object: Json,
}

/// A write of one chunk: its records as they will be once written.
#[derive(Clone, Debug)]
struct Write {
    number: u32,
    records: Vec<u8>,
    create: bool,
}

/// The last lines given to `append` that it did not see through.
struct Pending {
    lines: Vec<u8>,
    /// How many of their bytes are known to be stored.
    written: usize,
    /// The write whose answer never came, and how many bytes of `lines` it carried.
    unsure: Option<(Write, usize)>,
}

/// The chunk appends go to.
struct Tail {
    number: u32,
    records: Vec<u8>,
    /// The chunk as the server last answered; `None` until it is created.
    stored: Option<Json>,
    pending: Option<Pending>,
    taken: Option<String>,
}

/// A run's journal in the cluster, open for appending.
pub struct JournalStore {
    transport: Transport,
    spec: JournalSpec,
    label: String,
    tail: Mutex<Tail>,
}

impl JournalStore {
    /// Opens the journal of `spec.run` for appending after what it holds, and returns that.
    /// A journal with no chunk yet starts at chunk 0, created by the first append.
    pub async fn open(
        transport: Transport,
        spec: JournalSpec,
    ) -> Result<(Self, Vec<u8>), JournalStoreError> {
        if spec.chunk_bytes == 0 || spec.chunk_bytes > MAX_CHUNK_BYTES {
            return Err(JournalStoreError::Spec(format!(
                "a journal chunk holds between 1 and {MAX_CHUNK_BYTES} bytes, not {}",
                spec.chunk_bytes
            )));
        }
        let label = run_label(&spec.run)?;
        let chunks = list(&transport, &spec.namespace, &spec.run, &label).await?;
        let mut journal = Vec::new();
        for chunk in &chunks {
            journal.extend_from_slice(&records(&chunk.object)?);
        }
        let tail = match chunks.last() {
            Some(last) => Tail {
                number: last.number,
                records: records(&last.object)?,
                stored: Some(last.object.clone()),
                pending: None,
                taken: None,
            },
            None => {
                chunk_name(&spec.run, 0)?;
                Tail {
                    number: 0,
                    records: Vec::new(),
                    stored: None,
                    pending: None,
                    taken: None,
                }
            }
        };
        let store = Self {
            transport,
            spec,
            label,
            tail: Mutex::new(tail),
        };
        Ok((store, journal))
    }

    /// The whole journal of `run`, chunk after chunk.
    pub async fn read(
        transport: &Transport,
        namespace: &str,
        run: &str,
    ) -> Result<Vec<u8>, JournalStoreError> {
        let label = run_label(run)?;
        let mut journal = Vec::new();
        for chunk in list(transport, namespace, run, &label).await? {
            journal.extend_from_slice(&records(&chunk.object)?);
        }
        Ok(journal)
    }

    pub fn spec(&self) -> &JournalSpec {
        &self.spec
    }

    /// Appends whole JSON lines; durable once it returns `Ok`. After an error other than
    /// [`JournalStoreError::Taken`], the same lines may be given again: what of them was
    /// stored is found out first, and not stored twice.
    pub async fn append(&self, lines: &[u8]) -> Result<(), JournalStoreError> {
        let bound = self.spec.chunk_bytes;
        let split = whole_lines(lines)?;
        if let Some(line) = split.iter().find(|line| line.len() > bound) {
            return Err(JournalStoreError::LineTooLong {
                bytes: line.len(),
                chunk_bytes: bound,
            });
        }
        let mut tail = self.tail.lock().await;
        if let Some(detail) = &tail.taken {
            return Err(self.taken(detail.clone()));
        }
        let mut skip = 0;
        if let Some(mut pending) = tail.pending.take() {
            if let Some((write, bytes)) = pending.unsure.take() {
                match self.settle(&tail, &write).await {
                    Ok(Some(stored)) => {
                        pending.written += bytes;
                        Self::stored(&mut tail, write, stored);
                    }
                    Ok(None) => {}
                    Err(error) => {
                        pending.unsure = Some((write, bytes));
                        tail.pending = Some(pending);
                        return Err(self.note_taken(&mut tail, error));
                    }
                }
            }
            if pending.lines == lines {
                skip = pending.written;
            }
        }
        // Lines fill the last chunk in order; the first that does not fit starts the next.
        let mut offset = 0;
        let mut written = skip;
        let mut group: Vec<u8> = Vec::new();
        for line in split {
            let start = offset;
            offset += line.len();
            if start < skip {
                continue;
            }
            if tail.records.len() + group.len() + line.len() > bound {
                if !group.is_empty() {
                    let bytes = group.len();
                    self.write(&mut tail, std::mem::take(&mut group), lines, written)
                        .await?;
                    written += bytes;
                }
                if let Err(error) = chunk_name(&self.spec.run, tail.number + 1) {
                    tail.pending = Some(Pending {
                        lines: lines.to_vec(),
                        written,
                        unsure: None,
                    });
                    return Err(error);
                }
                tail.number += 1;
                tail.records.clear();
                tail.stored = None;
            }
            group.extend_from_slice(line);
        }
        if !group.is_empty() {
            self.write(&mut tail, group, lines, written).await?;
        }
        Ok(())
    }

    /// Writes `group` after the tail's records; on failure, remembers what of `lines` is
    /// stored (`written` bytes) and the write whose outcome is unknown.
    async fn write(
        &self,
        tail: &mut Tail,
        group: Vec<u8>,
        lines: &[u8],
        written: usize,
    ) -> Result<(), JournalStoreError> {
        let mut records = tail.records.clone();
        records.extend_from_slice(&group);
        let write = Write {
            number: tail.number,
            records,
            create: tail.stored.is_none(),
        };
        let outcome = match self.send(tail, &write).await {
            Ok(stored) => Ok(stored),
            // Someone else's write, or ours whose answer was lost and was sent again.
            Err(EffectError::Conflict(message)) => match self.settle(tail, &write).await {
                Ok(Some(stored)) => Ok(stored),
                Ok(None) => Err(JournalStoreError::Taken {
                    namespace: self.spec.namespace.clone(),
                    run: self.spec.run.clone(),
                    detail: message,
                }),
                Err(error) => Err(error),
            },
            Err(error) => Err(JournalStoreError::Api(error)),
        };
        match outcome {
            Ok(stored) => {
                Self::stored(tail, write, stored);
                Ok(())
            }
            Err(error) => {
                let unsure = !matches!(error, JournalStoreError::Taken { .. });
                tail.pending = Some(Pending {
                    lines: lines.to_vec(),
                    written,
                    unsure: unsure.then_some((write, group.len())),
                });
                Err(self.note_taken(tail, error))
            }
        }
    }

    fn stored(tail: &mut Tail, write: Write, stored: Json) {
        tail.number = write.number;
        tail.records = write.records;
        tail.stored = Some(stored);
    }

    /// Remembers a takeover, so that every later append is refused at once.
    fn note_taken(&self, tail: &mut Tail, error: JournalStoreError) -> JournalStoreError {
        if let JournalStoreError::Taken { detail, .. } = &error {
            tail.taken = Some(detail.clone());
            tail.pending = None;
        }
        error
    }

    fn taken(&self, detail: String) -> JournalStoreError {
        JournalStoreError::Taken {
            namespace: self.spec.namespace.clone(),
            run: self.spec.run.clone(),
            detail,
        }
    }

    fn collection(&self) -> String {
        format!("/api/v1/namespaces/{}/configmaps", self.spec.namespace)
    }

    /// Sends one write: a create of a new chunk, or an update carrying the version we hold.
    async fn send(&self, tail: &Tail, write: &Write) -> Result<Json, EffectError> {
        let name = chunk_name(&self.spec.run, write.number)
            .map_err(|error| EffectError::Invalid(error.to_string()))?;
        let text = String::from_utf8_lossy(&write.records).into_owned();
        let call = match (&tail.stored, write.create) {
            (Some(stored), false) => {
                let mut object = stored.clone();
                if let Some(metadata) = object["metadata"].as_object_mut() {
                    // Left out, the server keeps them as they are.
                    metadata.remove("managedFields");
                }
                object["data"] = json!({RECORDS_KEY: text});
                Call::new(
                    Method::PUT,
                    format!("{}/{name}", self.collection()),
                    format!("append to journal chunk {}/{name}", self.spec.namespace),
                )
                .json(JSON, &object)
            }
            _ => {
                let mut metadata = json!({
                    "name": name,
                    "namespace": self.spec.namespace,
                    "labels": {RUN_LABEL: self.label, CHUNK_LABEL: write.number.to_string()},
                    "annotations": {RUN_LABEL: self.spec.run},
                });
                if let Some(uid) = &self.spec.run_uid {
                    metadata["ownerReferences"] = json!([{
                        "apiVersion": "runbook.dev/v1alpha1",
                        "kind": "RunbookRun",
                        "name": self.spec.run,
                        "uid": uid,
                    }]);
                }
                let object = json!({
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": metadata,
                    "data": {RECORDS_KEY: text},
                });
                Call::new(
                    Method::POST,
                    self.collection(),
                    format!("create journal chunk {}/{name}", self.spec.namespace),
                )
                .json(JSON, &object)
            }
        };
        // A 409 is never retried blindly: `write` finds out whose write it was.
        self.transport.json(&call.retry(Retry::NoConflict)).await
    }

    /// Reads back the chunk of a write whose answer never came (or was a 409): `Some` with
    /// the chunk if the write is stored, `None` if it is not and nobody else wrote; `Taken` if
    /// someone else did.
    async fn settle(&self, tail: &Tail, write: &Write) -> Result<Option<Json>, JournalStoreError> {
        let name = chunk_name(&self.spec.run, write.number)?;
        let call = Call::new(
            Method::GET,
            format!("{}/{name}", self.collection()),
            format!("read journal chunk {}/{name}", self.spec.namespace),
        );
        let found = match self.transport.json(&call).await {
            Ok(found) => Some(found),
            Err(EffectError::NotFound(_)) => None,
            Err(error) => return Err(JournalStoreError::Api(error)),
        };
        let taken = |detail: String| Err(self.taken(detail));
        match (found, write.create) {
            (None, true) => Ok(None),
            (None, false) => taken(format!("journal chunk {name} was deleted")),
            (Some(found), _) if records(&found)? == write.records => Ok(Some(found)),
            (Some(found), false)
                if records(&found)? == tail.records
                    && version(&found) == tail.stored.as_ref().and_then(version) =>
            {
                Ok(None)
            }
            (Some(found), _) => taken(format!(
                "journal chunk {name} was written by someone else (resourceVersion {})",
                version(&found).unwrap_or_default()
            )),
        }
    }
}

fn version(object: &Json) -> Option<&str> {
    object
        .pointer("/metadata/resourceVersion")
        .and_then(Json::as_str)
}

/// The chunk's records.
fn records(object: &Json) -> Result<Vec<u8>, JournalStoreError> {
    let name = object
        .pointer("/metadata/name")
        .and_then(Json::as_str)
        .unwrap_or_default();
    let damaged = |reason: &str| JournalStoreError::Damaged {
        name: name.to_owned(),
        reason: reason.to_owned(),
    };
    let text = object
        .pointer(&format!("/data/{RECORDS_KEY}"))
        .and_then(Json::as_str)
        .ok_or_else(|| damaged(&format!("it has no `{RECORDS_KEY}`")))?;
    if !text.is_empty() && !text.ends_with('\n') {
        return Err(damaged("its last line is not whole"));
    }
    Ok(text.as_bytes().to_vec())
}

/// The lines of `lines`, each with its newline.
fn whole_lines(lines: &[u8]) -> Result<Vec<&[u8]>, JournalStoreError> {
    if std::str::from_utf8(lines).is_err() {
        return Err(JournalStoreError::NotLines("they are not UTF-8".to_owned()));
    }
    if !lines.is_empty() && !lines.ends_with(b"\n") {
        return Err(JournalStoreError::NotLines(
            "the last one has no newline".to_owned(),
        ));
    }
    Ok(lines.split_inclusive(|byte| *byte == b'\n').collect())
}

/// `<run>-journal-<NNNN>`, checked to be a DNS subdomain name.
pub fn chunk_name(run: &str, number: u32) -> Result<String, JournalStoreError> {
    let name = format!("{run}-journal-{number:04}");
    let invalid = |reason: String| JournalStoreError::Name {
        name: name.clone(),
        reason,
    };
    if name.len() > NAME_LIMIT {
        return Err(invalid(format!(
            "{} characters, more than {NAME_LIMIT}: the run's name is too long for its journal",
            name.len()
        )));
    }
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    if let Some(c) = name.chars().find(|c| !allowed(*c)) {
        return Err(invalid(format!(
            "`{c}` is not a lowercase letter, digit, `-` or `.`"
        )));
    }
    let alphanumeric = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !alphanumeric(name.chars().next()) {
        return Err(invalid("it must start with a letter or digit".to_owned()));
    }
    if name
        .split('.')
        .any(|part| !alphanumeric(part.chars().next()) || !alphanumeric(part.chars().next_back()))
    {
        return Err(invalid(
            "each `.`-separated part must start and end with a letter or digit".to_owned(),
        ));
    }
    Ok(name)
}

/// The `runbook.dev/run` label value of a run: its name, or (longer than a label value may
/// be) its first 46 characters and 16 hex digits of its SHA-256.
pub fn run_label(run: &str) -> Result<String, JournalStoreError> {
    if run.is_empty()
        || !run
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
    {
        return Err(JournalStoreError::Spec(format!(
            "run `{run}` is not a Kubernetes object name"
        )));
    }
    if run.len() <= LABEL_VALUE_LIMIT {
        return Ok(run.to_owned());
    }
    let digest = Sha256::digest(run.as_bytes());
    let hash: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    let prefix = run[..LABEL_VALUE_LIMIT - 17].trim_end_matches(['-', '.', '_']);
    Ok(format!("{prefix}-{hash}"))
}

/// The run's chunks, in order, checked to be numbered 0, 1, 2... without a gap.
async fn list(
    transport: &Transport,
    namespace: &str,
    run: &str,
    label: &str,
) -> Result<Vec<Chunk>, JournalStoreError> {
    if namespace.is_empty()
        || !namespace
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(JournalStoreError::Spec(format!(
            "namespace `{namespace}` is not a Kubernetes namespace name"
        )));
    }
    // Built before any await: the serializer is not `Send`, and this future must be.
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair(
            "labelSelector",
            &format!("{RUN_LABEL}={label},{CHUNK_LABEL}"),
        )
        .finish();
    let call = Call::new(
        Method::GET,
        format!("/api/v1/namespaces/{namespace}/configmaps?{query}"),
        format!("list the journal chunks of run {namespace}/{run}"),
    );
    let list = transport
        .json(&call)
        .await
        .map_err(JournalStoreError::Api)?;
    let mut chunks = Vec::new();
    for object in list["items"].as_array().into_iter().flatten() {
        // A hashed label can be another run's: the annotation says whose it is.
        if object
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(RUN_LABEL))
            .and_then(Json::as_str)
            != Some(run)
        {
            continue;
        }
        let name = object
            .pointer("/metadata/name")
            .and_then(Json::as_str)
            .unwrap_or_default();
        let number = object
            .pointer("/metadata/labels")
            .and_then(|labels| labels.get(CHUNK_LABEL))
            .and_then(Json::as_str)
            .and_then(|n| n.parse::<u32>().ok())
            .ok_or_else(|| JournalStoreError::Damaged {
                name: name.to_owned(),
                reason: format!("its `{CHUNK_LABEL}` label is not a number"),
            })?;
        if chunk_name(run, number)? != name {
            return Err(JournalStoreError::Damaged {
                name: name.to_owned(),
                reason: format!("it is labelled chunk {number}"),
            });
        }
        chunks.push(Chunk {
            number,
            object: object.clone(),
        });
    }
    chunks.sort_by_key(|chunk| chunk.number);
    let found: Vec<u32> = chunks.iter().map(|chunk| chunk.number).collect();
    if let Some(missing) = (0..).zip(&found).find(|(expected, n)| expected != *n) {
        return Err(JournalStoreError::Gap {
            namespace: namespace.to_owned(),
            run: run.to_owned(),
            missing: missing.0,
            found,
        });
    }
    Ok(chunks)
}

/// One append sent to the thread of a [`BlockingJournalStore`].
struct Request {
    lines: Vec<u8>,
    answer: std_mpsc::SyncSender<Result<(), JournalStoreError>>,
}

/// A [`JournalStore`] for a synchronous caller: appends are sent to a thread of its own,
/// which runs them on a current-thread tokio runtime, and the caller blocks on a plain channel
/// for the answer. So a caller on a tokio worker thread (or in `spawn_blocking`) can block on
/// it without blocking in a runtime.
///
/// The store's client still does its I/O on the runtime it was built on (kube's client
/// hands requests to a task there): that runtime must keep a thread free to run it, as a
/// multi-thread runtime with another worker does, or a current-thread runtime whose caller
/// is in `spawn_blocking`.
pub struct BlockingJournalStore {
    requests: mpsc::UnboundedSender<Request>,
    spec: JournalSpec,
}

impl BlockingJournalStore {
    /// Starts the thread that serves `store`'s appends.
    pub fn new(store: JournalStore) -> Result<Self, JournalStoreError> {
        let spec = store.spec().clone();
        let (requests, mut received) = mpsc::unbounded_channel::<Request>();
        let (ready, started) = std_mpsc::sync_channel::<Result<(), String>>(1);
        std::thread::Builder::new()
            .name(format!("journal-{}", spec.run))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = ready.send(Err(error.to_string()));
                        return;
                    }
                };
                let _ = ready.send(Ok(()));
                runtime.block_on(async move {
                    while let Some(request) = received.recv().await {
                        let result = store.append(&request.lines).await;
                        let _ = request.answer.send(result);
                    }
                });
            })
            .map_err(|error| JournalStoreError::Thread(error.to_string()))?;
        match started.recv() {
            Ok(Ok(())) => Ok(Self { requests, spec }),
            Ok(Err(error)) => Err(JournalStoreError::Thread(error)),
            Err(_) => Err(JournalStoreError::Thread(
                "it stopped before it started".to_owned(),
            )),
        }
    }

    pub fn spec(&self) -> &JournalSpec {
        &self.spec
    }

    /// [`JournalStore::append`], blocking until the API server has answered.
    pub fn append(&self, lines: &[u8]) -> Result<(), JournalStoreError> {
        let (answer, answered) = std_mpsc::sync_channel(1);
        let stopped = || JournalStoreError::Thread("it has stopped".to_owned());
        self.requests
            .send(Request {
                lines: lines.to_vec(),
                answer,
            })
            .map_err(|_| stopped())?;
        answered.recv().map_err(|_| stopped())?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_names_are_numbered_from_zero_and_checked() {
        assert_eq!(
            chunk_name("run-7", 0).ok().as_deref(),
            Some("run-7-journal-0000")
        );
        assert_eq!(
            chunk_name("run-7", 12_345).ok().as_deref(),
            Some("run-7-journal-12345")
        );
        let long = "r".repeat(241);
        assert!(matches!(
            chunk_name(&long, 0),
            Err(JournalStoreError::Name { reason, .. }) if reason.contains("too long")
        ));
        assert!(chunk_name("Run", 0).is_err());
    }

    #[test]
    fn a_long_run_name_is_a_prefix_and_a_hash_in_its_label() {
        assert_eq!(run_label("run-7").ok().as_deref(), Some("run-7"));
        let long = format!("{}-x", "a".repeat(80));
        let label = run_label(&long).unwrap_or_default();
        assert_eq!(label.len(), 63, "{label}");
        assert!(label.starts_with(&"a".repeat(46)), "{label}");
        assert_ne!(
            run_label(&format!("{}-y", "a".repeat(80))).unwrap_or_default(),
            label
        );
    }

    #[test]
    fn only_whole_utf8_lines_are_appended() {
        assert_eq!(whole_lines(b"{}\n{}\n").map(|l| l.len()).ok(), Some(2));
        assert!(matches!(
            whole_lines(b"{}\n{"),
            Err(JournalStoreError::NotLines(_))
        ));
        assert!(matches!(
            whole_lines(b"\xff\n"),
            Err(JournalStoreError::NotLines(_))
        ));
    }
}
