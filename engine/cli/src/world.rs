//! The world a run acts on: the simulated cluster of a scenario, or the live cluster with real
//! processes, HTTP and notifications; and the run lock that goes with it (a file in the state
//! dir, or a Lease in the cluster).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use runbook_core::diagnostic::Diagnostics;
use runbook_core::effects::{Cluster, Http, LocalProcesses, Notifier, Processes, StepObserver};

use crate::web::{PrintedNotifier, WebClient};

/// How to reach the live cluster (`run`, `resume`, `serve` without `--simulate`).
#[derive(clap::Args, Debug, Clone)]
pub struct ClusterArgs {
    /// The kubeconfig to use (default: $KUBECONFIG, else ~/.kube/config; in a pod with
    /// neither, its service account).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (default: its current context).
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// The longest one API call may take; failed calls are retried a few times.
    #[arg(long, default_value = "30s", value_parser = crate::cli::parse_duration, value_name = "DURATION")]
    pub request_timeout: Duration,
    /// The run lock: a file in the state dir, or a coordination.k8s.io Lease in the cluster
    /// (auto: a Lease when running in a pod, else a file).
    #[arg(long, value_enum, default_value_t = LockKind::Auto)]
    pub lock: LockKind,
    /// Where the run lock's Lease lives (default: the run's namespace).
    #[arg(long, value_name = "NAMESPACE")]
    pub lock_namespace: Option<String>,
    /// Also POST every notify and page step, as JSON, to this URL (they are always printed
    /// and journaled).
    #[arg(long, value_name = "URL")]
    pub notify_webhook: Option<String>,
    /// How long a run's Lease outlives a process that stopped renewing it (30s unless
    /// `serve --takeover-after` says otherwise).
    #[arg(skip)]
    pub lease_duration: Option<Duration>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockKind {
    Auto,
    File,
    Lease,
}

/// Everything outside the process a run may touch.
pub struct World {
    pub cluster: Arc<dyn Cluster>,
    pub processes: Arc<dyn Processes>,
    pub http: Arc<dyn Http>,
    pub notifier: Arc<dyn Notifier>,
    pub observer: Option<Arc<dyn StepObserver>>,
    /// The namespace for objects a runbook names none for.
    pub namespace: String,
    /// What runs act on, for the journal: `context prod (https://...)`, or
    /// `simulated cluster /abs/path.scenario.yaml`.
    pub description: String,
    pub live: Option<Live>,
}

/// The live side: what the Lease lock needs, and what to tell the user.
pub struct Live {
    pub connection: runbook_kube::Connection,
    pub transport: runbook_kube::transport::Transport,
}

impl World {
    pub fn simulated(
        world: Arc<runbook_core::sim::SimWorld>,
        scenario: &Path,
        namespace: Option<String>,
    ) -> Self {
        let scenario = scenario
            .canonicalize()
            .unwrap_or_else(|_| scenario.to_path_buf());
        Self {
            description: format!("simulated cluster {}", scenario.display()),
            cluster: world.clone(),
            processes: world.clone(),
            http: world.clone(),
            notifier: world.clone(),
            observer: Some(world),
            namespace: namespace.unwrap_or_else(|| "default".to_owned()),
            live: None,
        }
    }

    /// The simulated cluster of the scenario file at `path`, or the scenario's problems.
    pub fn load_simulated(path: &Path, namespace: Option<String>) -> Result<Self, Diagnostics> {
        let scenario = runbook_core::sim::load_scenario(path)?;
        Ok(Self::simulated(
            Arc::new(runbook_core::sim::SimWorld::new(&scenario)),
            path,
            namespace,
        ))
    }

    /// Connects to the live cluster; the error is one line, ready to print.
    pub async fn live(args: &ClusterArgs, namespace: Option<String>) -> Result<Self, String> {
        let policy = runbook_kube::Policy {
            call_timeout: args.request_timeout,
            ..runbook_kube::Policy::default()
        };
        let connection = runbook_kube::connect(&runbook_kube::ConnectOptions {
            kubeconfig: args.kubeconfig.clone(),
            context: args.context.clone(),
            namespace,
            policy: policy.clone(),
        })
        .await?;
        let cluster = runbook_kube::KubeCluster::new(
            connection.client.clone(),
            runbook_kube::KubeOptions {
                policy,
                namespace: connection.namespace.clone(),
                ..runbook_kube::KubeOptions::default()
            },
        );
        let transport = cluster.transport().clone();
        let web = WebClient::new();
        Ok(Self {
            cluster: Arc::new(cluster),
            processes: Arc::new(LocalProcesses),
            http: Arc::new(web.clone()),
            notifier: Arc::new(PrintedNotifier::new(args.notify_webhook.clone(), web)),
            observer: None,
            namespace: connection.namespace.clone(),
            description: connection.describe(),
            live: Some(Live {
                connection,
                transport,
            }),
        })
    }
}

pub use runbook_core::lock::LockError;

/// `--lock lease` with `--simulate`: refused before anything runs.
pub const LEASE_NEEDS_CLUSTER: &str =
    "--lock lease needs the live cluster; it cannot be used with --simulate";

/// The run lock, held until dropped (or released).
pub enum Lock {
    /// Held until dropped: the operating system releases the file lock with the handle.
    File {
        _held: runbook_core::lock::RunLock,
    },
    Lease(Box<runbook_kube::lease::LeaseLock>),
}

impl Lock {
    /// Takes the lock for `target`: held elsewhere (the error names the holder), or unusable.
    pub async fn acquire(
        world: &World,
        args: &ClusterArgs,
        state_dir: &Path,
        target: &str,
        run_id: &str,
    ) -> Result<Self, LockError> {
        let lease = match (args.lock, &world.live) {
            (LockKind::File, _) => false,
            (LockKind::Lease, Some(_)) => true,
            (LockKind::Lease, None) => {
                return Err(LockError::Unusable(LEASE_NEEDS_CLUSTER.to_owned()))
            }
            (LockKind::Auto, Some(live)) => live.connection.in_cluster,
            (LockKind::Auto, None) => false,
        };
        let Some(live) = world.live.as_ref().filter(|_| lease) else {
            return runbook_core::lock::RunLock::acquire(state_dir, target, run_id)
                .map(|held| Lock::File { _held: held });
        };
        let host = std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".to_owned());
        let spec = runbook_kube::lease::LeaseSpec {
            namespace: args
                .lock_namespace
                .clone()
                .unwrap_or_else(|| world.namespace.clone()),
            name: runbook_kube::lease::lease_name(target),
            holder: format!("{host}/{}/{run_id}", std::process::id()),
            duration: args.lease_duration.unwrap_or(Duration::from_secs(30)),
            renew_every: args.lease_duration.unwrap_or(Duration::from_secs(30)) / 3,
        };
        match runbook_kube::lease::LeaseLock::acquire(live.transport.clone(), spec).await {
            Ok(lease) => Ok(Lock::Lease(Box::new(lease))),
            Err(held @ runbook_kube::lease::LeaseError::Held { .. }) => {
                Err(LockError::Held(held.to_string()))
            }
            Err(error) => Err(LockError::Unusable(error.to_string())),
        }
    }

    /// When a Lease is lost mid-run (taken over, or not renewable), the run should stop.
    pub fn lost_signal(&self) -> Option<runbook_kube::lease::LostSignal> {
        match self {
            Lock::File { .. } => None,
            Lock::Lease(lease) => Some(lease.lost_signal()),
        }
    }

    pub async fn release(self) {
        if let Lock::Lease(lease) = self {
            if let Err(error) = lease.release().await {
                tracing::warn!(%error, "Cannot release the run lock.");
                eprintln!("warning: {error}; it expires on its own");
            }
        }
    }
}
