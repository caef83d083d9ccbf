//! The run lock held in the cluster: a `coordination.k8s.io/v1` Lease per runbook and bound
//! params, so runs from several machines or `serve` replicas exclude each other.
//!
//! - Acquire: create the Lease; if it exists, take it only when it is free (no holder) or
//!   expired (`renewTime + leaseDurationSeconds` has passed), with an update that carries the
//!   `resourceVersion` read, so two takers cannot both win.
//! - Hold: a task renews `renewTime` every `renew_every` with a merge patch that carries the
//!   version it holds; if the Lease is taken by someone else or deleted, or cannot be renewed
//!   before it would expire, the lock reports itself lost.
//! - Release: delete the Lease, on the precondition that it is still the version we wrote.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::Method;
use runbook_core::effects::EffectError;
use serde_json::{json, Value as Json};
use tokio::sync::{watch, Mutex};

use crate::transport::{Call, Transport};

#[derive(Clone, Debug)]
pub struct LeaseSpec {
    pub namespace: String,
    /// The Lease's name (see [`lease_name`]).
    pub name: String,
    /// Who holds it: `host/pid/run-id`.
    pub holder: String,
    pub duration: Duration,
    pub renew_every: Duration,
}

/// A Lease name for a lock target: `runbook-` and the target, lowercased, with anything a
/// Kubernetes name cannot hold replaced by `-`.
pub fn lease_name(target: &str) -> String {
    let mut name: String = format!("runbook-{target}")
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    name.truncate(253);
    name.trim_end_matches(['-', '.']).to_owned()
}

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error(
        "Lease {namespace}/{name} is held by {holder} (renewed {renewed}, expires in {expires_in})"
    )]
    Held {
        namespace: String,
        name: String,
        holder: String,
        renewed: String,
        expires_in: String,
    },
    #[error("Lease {0}")]
    Api(String),
}

/// A held Lease; renewed until released or dropped.
pub struct LeaseLock {
    transport: Transport,
    spec: LeaseSpec,
    /// The Lease as we last wrote it.
    current: Arc<Mutex<Json>>,
    lost: LostSignal,
    renewal: tokio::task::JoinHandle<()>,
    /// Set by [`LeaseLock::release`]; a lock dropped without it (a run whose task panicked or
    /// was cancelled) is released in the background, so its key is free at once and not only
    /// when the Lease expires.
    released: bool,
}

/// Whether, and when, a held Lease was lost (taken by another holder, deleted, or not
/// renewed in time). Cheap to clone, for a task that stops the run.
#[derive(Clone)]
pub struct LostSignal(watch::Receiver<bool>);

impl LostSignal {
    pub fn is_lost(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves when the lock is lost; never, once it has been released.
    pub async fn wait(mut self) {
        if self.0.wait_for(|lost| *lost).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

fn micro_time(at: SystemTime) -> String {
    humantime::format_rfc3339_micros(at).to_string()
}

fn lease_path(spec: &LeaseSpec) -> String {
    format!(
        "/apis/coordination.k8s.io/v1/namespaces/{}/leases",
        spec.namespace
    )
}

impl LeaseLock {
    pub async fn acquire(transport: Transport, spec: LeaseSpec) -> Result<Self, LeaseError> {
        let collection = lease_path(&spec);
        let path = format!("{collection}/{}", spec.name);
        let what = format!("{}/{}", spec.namespace, spec.name);
        let api = |e: EffectError| LeaseError::Api(format!("{what}: {e}"));
        let seconds = spec.duration.as_secs().max(1);
        let mut taken = None;
        for _ in 0..3 {
            let now = SystemTime::now();
            let existing = match transport
                .json(&Call::new(
                    Method::GET,
                    path.clone(),
                    format!("get Lease {what}"),
                ))
                .await
            {
                Ok(lease) => Some(lease),
                Err(EffectError::NotFound(_)) => None,
                Err(error) => return Err(api(error)),
            };
            let Some(mut lease) = existing else {
                let lease = json!({
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {
                        "name": spec.name,
                        "namespace": spec.namespace,
                        "labels": {"app.kubernetes.io/managed-by": "runbook"},
                    },
                    "spec": {
                        "holderIdentity": spec.holder,
                        "leaseDurationSeconds": seconds,
                        "acquireTime": micro_time(now),
                        "renewTime": micro_time(now),
                        "leaseTransitions": 0,
                    },
                });
                let call = Call::new(
                    Method::POST,
                    collection.clone(),
                    format!("create Lease {what}"),
                )
                .json("application/json", &lease);
                match transport.json(&call).await {
                    Ok(created) => {
                        taken = Some(created);
                        break;
                    }
                    // Someone created it between our read and our create: read again.
                    Err(EffectError::Conflict(_)) => continue,
                    Err(error) => return Err(api(error)),
                }
            };
            let field = |name: &str| lease.pointer(&format!("/spec/{name}")).cloned();
            let holder = field("holderIdentity")
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let renewed = field("renewTime").and_then(|v| {
                v.as_str()
                    .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
            });
            let duration = field("leaseDurationSeconds")
                .and_then(|v| v.as_u64())
                .map_or(spec.duration, Duration::from_secs);
            let expires = renewed.map(|renewed| renewed + duration);
            let free = holder.is_empty()
                || holder == spec.holder
                || expires.is_none_or(|expires| expires <= now);
            if !free {
                let expires_in = expires
                    .and_then(|e| e.duration_since(now).ok())
                    .map(|d| {
                        humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
                    })
                    .unwrap_or_default();
                return Err(LeaseError::Held {
                    namespace: spec.namespace.clone(),
                    name: spec.name.clone(),
                    holder,
                    renewed: field("renewTime")
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    expires_in,
                });
            }
            // Take it over: the update carries the resourceVersion we read, so if another
            // taker got there first the server answers 409 and we read again.
            let transitions = field("leaseTransitions")
                .and_then(|v| v.as_i64())
                .unwrap_or(0);
            lease["spec"] = json!({
                "holderIdentity": spec.holder,
                "leaseDurationSeconds": seconds,
                "acquireTime": micro_time(now),
                "renewTime": micro_time(now),
                "leaseTransitions": if holder == spec.holder || holder.is_empty() { transitions } else { transitions + 1 },
            });
            if !holder.is_empty() && holder != spec.holder {
                tracing::warn!(lease = %what, previous = %holder, "Taking over an expired Lease.");
            }
            let call = Call::new(Method::PUT, path.clone(), format!("take over Lease {what}"))
                .json("application/json", &lease)
                .retry(crate::transport::Retry::Never);
            match transport.json(&call).await {
                Ok(updated) => {
                    taken = Some(updated);
                    break;
                }
                Err(EffectError::Conflict(_)) => continue,
                Err(error) => return Err(api(error)),
            }
        }
        let Some(lease) = taken else {
            return Err(LeaseError::Api(format!(
                "{what}: others kept changing it; try again"
            )));
        };
        let current = Arc::new(Mutex::new(lease));
        let (lost, signal) = watch::channel(false);
        let renewal = tokio::spawn(renew(
            transport.clone(),
            spec.clone(),
            current.clone(),
            lost,
        ));
        Ok(Self {
            transport,
            spec,
            current,
            lost: LostSignal(signal),
            renewal,
            released: false,
        })
    }

    pub fn is_lost(&self) -> bool {
        self.lost.is_lost()
    }

    /// Resolves when the lock is lost.
    pub async fn lost(&self) {
        self.lost.clone().wait().await;
    }

    pub fn lost_signal(&self) -> LostSignal {
        self.lost.clone()
    }

    pub fn spec(&self) -> &LeaseSpec {
        &self.spec
    }

    /// Stops renewing and deletes the Lease if it is still ours: the delete carries the
    /// version we last saw, and if that moved (a renewal whose answer we never took in, or
    /// another holder), the Lease is read again and deleted only if we still hold it.
    pub async fn release(mut self) -> Result<(), String> {
        self.released = true;
        self.renewal.abort();
        if self.is_lost() {
            return Ok(());
        }
        release(&self.transport, &self.spec, &self.current).await
    }
}

/// Deletes the Lease if it is still ours (see [`LeaseLock::release`]).
async fn release(
    transport: &Transport,
    spec: &LeaseSpec,
    current: &Mutex<Json>,
) -> Result<(), String> {
    let what = format!("{}/{}", spec.namespace, spec.name);
    let path = format!("{}/{}", lease_path(spec), spec.name);
    let mut version = current
        .lock()
        .await
        .pointer("/metadata/resourceVersion")
        .and_then(Json::as_str)
        .map(str::to_owned);
    for _ in 0..3 {
        let mut options = json!({"apiVersion": "v1", "kind": "DeleteOptions"});
        if let Some(version) = &version {
            options["preconditions"] = json!({"resourceVersion": version});
        }
        let call = Call::new(
            Method::DELETE,
            path.clone(),
            format!("release Lease {what}"),
        )
        .json("application/json", &options)
        .retry(crate::transport::Retry::NoConflict);
        match transport.send(&call).await {
            Ok(_) | Err(EffectError::NotFound(_)) => return Ok(()),
            Err(EffectError::Conflict(_)) => {}
            Err(error) => return Err(format!("cannot release Lease {what}: {error}")),
        }
        let fresh = match transport
            .json(&Call::new(
                Method::GET,
                path.clone(),
                format!("get Lease {what}"),
            ))
            .await
        {
            Ok(fresh) => fresh,
            Err(EffectError::NotFound(_)) => return Ok(()),
            Err(error) => return Err(format!("cannot release Lease {what}: {error}")),
        };
        if fresh.pointer("/spec/holderIdentity").and_then(Json::as_str)
            != Some(spec.holder.as_str())
        {
            // Taken over since our last renewal: it is not ours to delete.
            return Ok(());
        }
        version = fresh
            .pointer("/metadata/resourceVersion")
            .and_then(Json::as_str)
            .map(str::to_owned);
    }
    Err(format!(
        "cannot release Lease {what}: it kept changing; it expires on its own"
    ))
}

impl Drop for LeaseLock {
    fn drop(&mut self) {
        self.renewal.abort();
        if self.released || self.is_lost() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (transport, spec, current) = (
            self.transport.clone(),
            self.spec.clone(),
            self.current.clone(),
        );
        runtime.spawn(async move {
            match release(&transport, &spec, &current).await {
                Ok(()) => tracing::warn!(
                    lease = %format!("{}/{}", spec.namespace, spec.name),
                    "released the run lock of a run that ended without releasing it"
                ),
                Err(error) => {
                    tracing::warn!(%error, "cannot release the run lock; it expires on its own")
                }
            }
        });
    }
}

async fn renew(
    transport: Transport,
    spec: LeaseSpec,
    current: Arc<Mutex<Json>>,
    lost: watch::Sender<bool>,
) {
    let path = format!("{}/{}", lease_path(&spec), spec.name);
    let what = format!("{}/{}", spec.namespace, spec.name);
    let mut last_renewed = tokio::time::Instant::now();
    let give_up = |reason: String| {
        tracing::error!(lease = %what, %reason, "Run lock lost.");
        lost.send_replace(true);
    };
    loop {
        tokio::time::sleep(spec.renew_every).await;
        // A merge patch carrying the version we hold: 409 if anyone changed the Lease since,
        // 404 if it was deleted (a PUT would quietly create it again, and we would never
        // learn the lock was lost).
        let version = current
            .lock()
            .await
            .pointer("/metadata/resourceVersion")
            .cloned()
            .unwrap_or(Json::Null);
        let patch = json!({
            "metadata": {"resourceVersion": version},
            "spec": {"holderIdentity": spec.holder, "renewTime": micro_time(SystemTime::now())},
        });
        let call = Call::new(Method::PATCH, path.clone(), format!("renew Lease {what}"))
            .json("application/merge-patch+json", &patch)
            .retry(crate::transport::Retry::NoConflict);
        match transport.json(&call).await {
            Ok(updated) => {
                *current.lock().await = updated;
                last_renewed = tokio::time::Instant::now();
                continue;
            }
            Err(EffectError::Conflict(_)) => {
                // Changed under us: still ours? Then renew from the new version.
                match transport
                    .json(&Call::new(
                        Method::GET,
                        path.clone(),
                        format!("get Lease {what}"),
                    ))
                    .await
                {
                    Ok(fresh)
                        if fresh.pointer("/spec/holderIdentity").and_then(Json::as_str)
                            == Some(spec.holder.as_str()) =>
                    {
                        *current.lock().await = fresh;
                        continue;
                    }
                    Ok(fresh) => {
                        let holder = fresh
                            .pointer("/spec/holderIdentity")
                            .and_then(Json::as_str)
                            .unwrap_or("nobody");
                        give_up(format!("taken over by {holder}"));
                        return;
                    }
                    Err(EffectError::NotFound(_)) => {
                        give_up("deleted by someone else".to_owned());
                        return;
                    }
                    Err(error) => {
                        tracing::warn!(lease = %what, %error, "Cannot renew the run lock.")
                    }
                }
            }
            Err(EffectError::NotFound(_)) => {
                give_up("deleted by someone else".to_owned());
                return;
            }
            Err(error) => tracing::warn!(lease = %what, %error, "Cannot renew the run lock."),
        }
        if last_renewed.elapsed() >= spec.duration {
            give_up(format!(
                "not renewed for {}",
                humantime::format_duration(spec.duration)
            ));
            return;
        }
    }
}

/// The Lease `namespace/name`, if there is one.
async fn get(
    transport: &Transport,
    namespace: &str,
    name: &str,
) -> Result<Option<Json>, EffectError> {
    let call = Call::new(
        Method::GET,
        format!("/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"),
        format!("get Lease {namespace}/{name}"),
    );
    match transport.json(&call).await {
        Ok(lease) => Ok(Some(lease)),
        Err(EffectError::NotFound(_)) => Ok(None),
        Err(error) => Err(error),
    }
}

fn text(lease: &Json, pointer: &str) -> String {
    lease
        .pointer(pointer)
        .and_then(Json::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn duration_of(lease: &Json) -> Option<Duration> {
    lease
        .pointer("/spec/leaseDurationSeconds")
        .and_then(Json::as_u64)
        .map(Duration::from_secs)
}

/// Who holds the Lease `namespace/name` now: its holder, if it has one and it has not expired
/// by this machine's clock (`None`: free, expired, released or never taken).
pub async fn holder(
    transport: &Transport,
    namespace: &str,
    name: &str,
) -> Result<Option<String>, EffectError> {
    let Some(lease) = get(transport, namespace, name).await? else {
        return Ok(None);
    };
    let holder = text(&lease, "/spec/holderIdentity");
    let renewed = humantime::parse_rfc3339_weak(&text(&lease, "/spec/renewTime")).ok();
    let live = match (renewed, duration_of(&lease)) {
        (Some(renewed), Some(duration)) => renewed + duration > SystemTime::now(),
        _ => false,
    };
    Ok((live && !holder.is_empty()).then_some(holder))
}

/// A Lease as read: its holder, resourceVersion and duration (`None`: there is none), for a
/// caller that judges it alive by watching it change rather than by its clock.
pub async fn read(
    transport: &Transport,
    namespace: &str,
    name: &str,
) -> Result<Option<(String, String, Duration)>, EffectError> {
    Ok(get(transport, namespace, name).await?.map(|lease| {
        (
            text(&lease, "/spec/holderIdentity"),
            text(&lease, "/metadata/resourceVersion"),
            duration_of(&lease).unwrap_or(Duration::from_secs(30)),
        )
    }))
}
