//! One run's session with the world, the same for `run`, `resume` and `serve`: take the run
//! lock (a file or a Lease), open the journal, journal the digest of the runbook text that was
//! loaded, build the `Effects` from the `World`, watch the Lease (lost: drain), and release
//! the lock when the executor is done. Kept in one place so the three ways to start a run
//! cannot drift apart on any of these.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use runbook_core::bind::Bindings;
use runbook_core::compile::Plan;
use runbook_core::effects::{Clock, Effects, Prompter, Reporter};
use runbook_core::exec::{Interrupt, Resume, RunOptions, RunReport};
use runbook_core::journal::{Journal, SetAside};
use runbook_core::runbook::{Catalog, Runbook};

use crate::world::{ClusterArgs, Lock, LockError, World};

/// Why a session could not start; nothing ran.
pub enum SessionError {
    /// The run lock is held by another run, or cannot be taken at all.
    Lock(LockError),
    /// The journal cannot be created (or, for a resume, appended to).
    Journal(std::io::Error),
}

/// A new run gets a new journal; a resumed one goes on in its own.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum JournalMode {
    Create,
    Append,
}

/// What differs between the ways a run is started: who answers gates, who hears the events,
/// and how the executor is asked to run.
pub struct SessionRun {
    pub prompter: Arc<dyn Prompter>,
    pub reporter: Arc<dyn Reporter>,
    /// For `call` steps: the runbooks they may call.
    pub catalog: Arc<Catalog>,
    pub parallelism: usize,
    pub dry_run: bool,
    pub yes: bool,
    pub roll_back_on_interrupt: bool,
    pub resume: Option<Resume>,
    /// The run's clock: the system's, or a simulated run's virtual one.
    pub clock: Arc<dyn Clock>,
}

/// A run holding its lock and its journal, ready to execute.
pub struct RunSession<'w> {
    world: &'w World,
    run_id: String,
    lock: Option<Lock>,
    journal: Arc<Journal>,
    /// A torn last line that reopening the journal (a resume) moved out of it.
    set_aside: Option<SetAside>,
    interrupt: Arc<Interrupt>,
}

impl<'w> RunSession<'w> {
    /// Takes the lock for `lock` (none for a dry-run, which changes nothing and so never
    /// blocks a real run) and opens the journal.
    pub async fn open(
        world: &'w World,
        cluster: &ClusterArgs,
        state_dir: &Path,
        run_id: &str,
        lock: Option<&str>,
        journal: JournalMode,
    ) -> Result<RunSession<'w>, SessionError> {
        let lock = match lock {
            Some(target) => Some(
                Lock::acquire(world, cluster, state_dir, target, run_id)
                    .await
                    .map_err(SessionError::Lock)?,
            ),
            None => None,
        };
        let (journal, set_aside) = match journal {
            JournalMode::Create => {
                Journal::create(state_dir, run_id).map(|journal| (journal, None))
            }
            JournalMode::Append => Journal::reopen(&journal_path(state_dir, run_id)),
        }
        .map_err(SessionError::Journal)?;
        Ok(Self {
            world,
            run_id: run_id.to_owned(),
            lock,
            journal: Arc::new(journal),
            set_aside,
            interrupt: Arc::new(Interrupt::default()),
        })
    }

    pub fn journal_path(&self) -> &Path {
        self.journal.path()
    }

    pub fn journal(&self) -> &Arc<Journal> {
        &self.journal
    }

    /// The torn last line a resumed run's journal ended in, set aside before anything was
    /// appended; the caller must say so.
    pub fn set_aside(&self) -> Option<&SetAside> {
        self.set_aside.as_ref()
    }

    /// How the run is stopped from outside (Ctrl-C, SIGTERM, a server's shutdown, a lost
    /// Lease).
    pub fn interrupt(&self) -> &Arc<Interrupt> {
        &self.interrupt
    }

    /// Executes `plan`, then releases the lock. `on_lost` says, in the caller's voice, that
    /// the Lease was lost; the run then drains: the steps in flight finish, none start, and it
    /// stops resumable, since another run may now start.
    pub async fn execute(
        self,
        plan: Plan,
        run: SessionRun,
        on_lost: impl FnOnce() + Send + 'static,
    ) -> RunReport {
        let world = self.world;
        let effects = Effects {
            cluster: world.cluster.clone(),
            processes: world.processes.clone(),
            http: world.http.clone(),
            notifier: world.notifier.clone(),
            prompter: run.prompter,
            clock: run.clock,
            reporter: run.reporter,
            observer: world.observer.clone(),
        };
        let options = RunOptions {
            run_id: self.run_id,
            dry_run: run.dry_run,
            yes: run.yes,
            parallelism: run.parallelism,
            namespace: world.namespace.clone(),
            journal: Some(self.journal),
            catalog: Some(run.catalog),
            digest: runbook_digest(&plan.runbook),
            interrupt: Some(self.interrupt.clone()),
            roll_back_on_interrupt: run.roll_back_on_interrupt,
            resume: run.resume,
            cluster: Some(world.description.clone()),
        };
        let watcher = self.lock.as_ref().and_then(Lock::lost_signal).map(|lost| {
            let interrupt = self.interrupt.clone();
            tokio::spawn(async move {
                lost.wait().await;
                on_lost();
                interrupt.drain("run lock lost");
            })
        });
        let report = runbook_core::exec::execute(Arc::new(plan), effects, options).await;
        if let Some(watcher) = watcher {
            watcher.abort();
        }
        if let Some(lock) = self.lock {
            lock.release().await;
        }
        report
    }
}

/// Where a run's journal is.
pub fn journal_path(state_dir: &Path, run_id: &str) -> PathBuf {
    state_dir.join("runs").join(format!("{run_id}.jsonl"))
}

/// What the run lock (and `serve`'s de-duplication) is keyed on: the runbook and its params,
/// secret params left out. The key is a file's name and a Lease's name, which anyone who can
/// list them reads, and a short hash of a secret with few possible values (a PIN) is undone by
/// trying them all. So two runs that differ only in a secret param are the same run for
/// locking: one at a time, as on-call expects of "the same runbook on the same thing".
pub fn lock_target(runbook: &Runbook, bindings: &Bindings) -> String {
    use sha2::Digest as _;
    let keyed: std::collections::BTreeMap<&String, _> = bindings
        .values
        .iter()
        .filter(|(name, _)| {
            !runbook
                .param(name)
                .is_some_and(|param| bindings.is_secret(param))
        })
        .collect();
    let params = serde_json::to_string(&keyed).unwrap_or_default();
    format!(
        "{}-{}",
        runbook.name,
        hex(&sha2::Sha256::digest(params.as_bytes())[..6])
    )
}

/// What the journal records of the runbook, for `resume` to refuse a changed one: the digest
/// of the text the loader read and compiled, never a second read of the file, which may have
/// been edited since.
pub fn runbook_digest(runbook: &Runbook) -> String {
    use sha2::Digest as _;
    hex(&sha2::Sha256::digest(runbook.source.text().as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
