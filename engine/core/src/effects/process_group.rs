//! A local process in a process group of its own, so that everything it starts goes with it.
//!
//! A step's `sh -c '...'` or `kubectl` may start processes of its own. Killing only the process
//! the engine spawned would leave those running, orphaned, after the step was cancelled or
//! timed out, or the run interrupted. So each process leads a new group, and the whole group
//! is killed when the step lets go of it before it finished. A process in its own group no
//! longer hears the terminal's Ctrl-C either: the run decides what happens to it.
//!
//! The groups running now are kept in one list for the whole process, so that a run that
//! quits at once (a second Ctrl-C or SIGTERM) can end them first: [`kill_all`].

use std::collections::BTreeSet;
use std::sync::Mutex;

use tokio::io::AsyncReadExt as _;

/// The groups of the processes running now, by their leader's pid.
static RUNNING: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

/// A spawned process that leads its own group: dropped before it finished (a cancelled step, a
/// timeout), it kills the group.
pub(super) struct ProcessGroup {
    child: tokio::process::Child,
    /// The leader's pid, which is the group's id; `None` once the group was let go.
    leader: Option<u32>,
}

/// What a finished process left: its status and everything it printed.
pub(super) struct Finished {
    pub(super) status: std::process::ExitStatus,
    pub(super) stdout: Vec<u8>,
    pub(super) stderr: Vec<u8>,
}

impl ProcessGroup {
    /// Spawns `command` (with its stdout and stderr piped) as the leader of a new group.
    pub(super) fn spawn(mut command: tokio::process::Command) -> std::io::Result<Self> {
        command
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        #[cfg(unix)]
        command.process_group(0);
        let child = command.spawn()?;
        let leader = child.id();
        if let Some(leader) = leader {
            lock().insert(leader);
        }
        Ok(Self { child, leader })
    }

    /// Waits for the process to exit and its output to close. Cancel-safe in the one way that
    /// matters: dropping the future leaves `self` to kill the group.
    pub(super) async fn finish(&mut self) -> std::io::Result<Finished> {
        let mut stdout = self.child.stdout.take();
        let mut stderr = self.child.stderr.take();
        let (status, out, err) = tokio::join!(
            self.child.wait(),
            read_all(stdout.as_mut()),
            read_all(stderr.as_mut())
        );
        let finished = Finished {
            status: status?,
            stdout: out?,
            stderr: err?,
        };
        // The leader was reaped, so its pid may be reused: the group is no longer ours to kill.
        self.let_go();
        Ok(finished)
    }

    fn let_go(&mut self) {
        if let Some(leader) = self.leader.take() {
            lock().remove(&leader);
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // Until `finish` returns, the group is ours: its leader is unreaped, or, once reaped,
        // members of the group still hold its output open, and a group's id is not reused
        // while it has members.
        if let Some(leader) = self.leader {
            kill_group(leader);
            self.let_go();
        }
    }
}

async fn read_all<R: tokio::io::AsyncRead + Unpin>(
    pipe: Option<&mut R>,
) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    if let Some(pipe) = pipe {
        pipe.read_to_end(&mut bytes).await?;
    }
    Ok(bytes)
}

/// Kills every process group started here that is still running, for a run that quits at once.
pub fn kill_all() {
    let leaders: Vec<u32> = lock().iter().copied().collect();
    for leader in leaders {
        kill_group(leader);
    }
}

fn kill_group(leader: u32) {
    #[cfg(unix)]
    if let Ok(group) = libc::pid_t::try_from(leader) {
        // SAFETY: kill(2) takes plain integers and touches no memory of ours; a negative pid
        // names the group.
        unsafe {
            libc::kill(-group, libc::SIGKILL);
        }
    }
    #[cfg(not(unix))]
    let _ = leader;
}

fn lock() -> std::sync::MutexGuard<'static, BTreeSet<u32>> {
    RUNNING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
