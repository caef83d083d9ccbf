//! Local processes (`run:` steps and `command` facts) on this machine: a process that is let go
//! before it finished (a timeout, a cancelled step) is killed with everything it started, so a
//! step's `sh -c '...'` leaves nothing running behind it (issue 13, processes and signals).

#![cfg(unix)]

use std::path::Path;
use std::time::{Duration, Instant};

use runbook_core::effects::{EffectError, LocalProcesses, Processes};

/// A shell that starts `sleep 30` in the background, writes the pids of both to `pids`, and
/// waits: the sleep is not the process the engine spawned, only in its group.
fn shell_with_a_background_sleep(pids: &Path) -> Vec<String> {
    vec![
        "sh".to_owned(),
        "-c".to_owned(),
        format!(
            "sleep 30 & echo $$ $! > {}.tmp && mv {0}.tmp {0}; wait",
            pids.display()
        ),
    ]
}

/// The pids the shell wrote, once it has.
fn written_pids(pids: &Path) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(text) = std::fs::read_to_string(pids) {
            return text
                .split_whitespace()
                .map(|pid| pid.parse().expect("a pid"))
                .collect();
        }
        assert!(Instant::now() < deadline, "the shell never wrote its pids");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `pid` has ended: no such process, or a zombie nobody reaped yet.
fn ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the command name in parentheses: `1234 (sleep) S ...`.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

fn assert_ended_soon(pids: &[u32]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !pids.iter().all(|pid| ended(*pid)) {
        assert!(
            Instant::now() < deadline,
            "still running: {:?}",
            pids.iter().filter(|pid| !ended(**pid)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn a_process_that_times_out_is_killed_with_what_it_started() {
    let dir = tempfile_dir();
    let pids = dir.join("pids");
    let argv = shell_with_a_background_sleep(&pids);
    let result = runtime().block_on(LocalProcesses.run(
        &argv,
        &std::collections::BTreeMap::new(),
        Duration::from_secs(1),
    ));
    assert!(
        matches!(&result, Err(EffectError::Unavailable(message)) if message.contains("did not finish within 1s")),
        "{result:?}"
    );
    let pids = written_pids(&pids);
    assert_eq!(pids.len(), 2, "the shell and its sleep");
    assert_ended_soon(&pids);
}

#[test]
fn a_cancelled_process_is_killed_with_what_it_started() {
    let dir = tempfile_dir();
    let pids = dir.join("pids");
    let argv = shell_with_a_background_sleep(&pids);
    let runtime = runtime();
    let running = runtime.spawn(async move {
        LocalProcesses
            .run(
                &argv,
                &std::collections::BTreeMap::new(),
                Duration::from_secs(60),
            )
            .await
    });
    let written = written_pids(&pids);
    // What an interrupted step does to the process it is waiting for.
    running.abort();
    let _ = runtime.block_on(running);
    assert_ended_soon(&written);
}

#[test]
fn a_process_that_finishes_gives_its_status_and_output() {
    let argv: Vec<String> = ["sh", "-c", "echo out; echo err >&2; exit 3"]
        .map(str::to_owned)
        .to_vec();
    let output = runtime()
        .block_on(LocalProcesses.run(
            &argv,
            &std::collections::BTreeMap::new(),
            Duration::from_secs(10),
        ))
        .expect("runs");
    assert_eq!(output.exit_code, 3);
    assert_eq!(output.stdout, "out\n");
    assert_eq!(output.stderr, "err\n");
}

/// A fresh directory under the target folder (the core crate has no tempfile dependency).
fn tempfile_dir() -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "processes-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
