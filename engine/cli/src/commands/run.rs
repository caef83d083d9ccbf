//! `runbook run`: a runbook run by hand, against the live cluster or a simulated one. Also the
//! part `resume` shares (`drive`): the world, the session, Ctrl-C, progress and the summary.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use runbook_core::compile::Plan;
use runbook_core::effects::{
    Clock, LocalProcesses, Prompter, Reporter, ScenarioClock, SystemClock,
};
use runbook_core::runbook::Runbook;

use super::{build_plan, print_diagnostics, Wanted};
use crate::cli::{DiagnosticFormat, Execution, OutputFormat, When};
use crate::exit::Exit;
use crate::session::{
    journal_path, lock_target, JournalMode, RunSession, SessionError, SessionRun,
};
use crate::world::{LockError, World};

pub struct RunArgs {
    pub name: String,
    pub alert: Option<PathBuf>,
    pub dry_run: bool,
    pub execution: Execution,
}

pub fn run(dir: &Path, args: RunArgs) -> anyhow::Result<Exit> {
    let plan = match build_plan(
        dir,
        Wanted::NameOrPath(&args.name),
        &args.execution.params,
        &[],
        args.alert.as_deref(),
        false,
    )? {
        Ok(plan) => plan,
        Err(exit) => return Ok(exit),
    };
    let state_dir = crate::state::state_dir(args.execution.state_dir.as_deref());
    let run_id = crate::state::new_run_id(&plan.runbook.name);
    drive(dir, plan, &args, &state_dir, &run_id, None)
}

/// Runs a plan on the world the flags name: the session (lock, journal, Lease watch), Ctrl-C,
/// progress, and the summary. Shared by `run` and `resume`; `acted_on` is the cluster a
/// resumed run acted on.
pub fn drive(
    dir: &Path,
    plan: Plan,
    args: &RunArgs,
    state_dir: &Path,
    run_id: &str,
    resume: Option<(runbook_core::exec::Resume, Option<String>)>,
) -> anyhow::Result<Exit> {
    let (resume, acted_on) = match resume {
        Some((resume, acted_on)) => (Some(resume), acted_on),
        None => (None, None),
    };
    // A simulated run waits on a virtual clock unless told to wait in real time: a paused
    // runtime's clock jumps to the next timer whenever every task only waits (a verify's poll,
    // a retry's back-off), and stands still while a gate's question waits for its answer (a
    // blocking task). A paused clock needs the current-thread runtime.
    let virtual_time = args.execution.simulate.is_some() && !args.execution.real_time;
    let runtime = if virtual_time {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
    }
    .context("cannot start the async runtime")?;
    let world = match open_world(&runtime, &plan.runbook, &args.execution)? {
        Ok(world) => world,
        Err(exit) => return Ok(exit),
    };
    // A half-done run goes on where it started, never on another cluster. (A simulated
    // cluster is a snapshot, not a place: another scenario may stand for the world as the
    // run left it.)
    let simulated = |what: &str| what.starts_with("simulated cluster ");
    if let Some(acted_on) = acted_on.filter(|acted_on| {
        *acted_on != world.description && !(simulated(acted_on) && simulated(&world.description))
    }) {
        eprintln!(
            "error: run `{run_id}` acted on {acted_on}; this resume would act on {}. Resume it against the same cluster (--kubeconfig, --context, or the same --simulate scenario)",
            world.description
        );
        return Ok(Exit::Invalid);
    }
    if let Some(live) = &world.live {
        if args.execution.output == OutputFormat::Text {
            eprintln!(
                "cluster: {}, Kubernetes {}, namespace {}{}",
                live.connection.describe(),
                live.connection.version,
                world.namespace,
                if args.dry_run {
                    " (dry-run: every change is sent with dryRun=All)"
                } else {
                    ""
                }
            );
        }
    }

    let mode = if resume.is_some() {
        JournalMode::Append
    } else {
        JournalMode::Create
    };
    let session = match open_session(&runtime, &world, args, state_dir, run_id, &plan, mode)? {
        Ok(session) => session,
        Err(exit) => return Ok(exit),
    };
    let journal = session.journal_path().to_path_buf();
    if let Some(set_aside) = session.set_aside() {
        eprintln!("warning: {set_aside}");
    }
    let reporter: Arc<dyn Reporter> = match args.execution.output {
        OutputFormat::Json => Arc::new(crate::terminal::JsonLines),
        OutputFormat::Text if std::io::stderr().is_terminal() => {
            Arc::new(crate::terminal::Progress::new())
        }
        OutputFormat::Text => Arc::new(crate::terminal::PlainLines),
    };
    // `--yes` answers the gates (the executor approves them itself); the prompter is left for
    // the question an interrupt asks, which `--yes` does not answer.
    let prompter: Arc<dyn Prompter> = Arc::new(crate::terminal::TerminalPrompter);
    let clock: Arc<dyn Clock> = if virtual_time {
        // Made inside the runtime, so it reads the runtime's paused clock; its times start
        // from now, so the journal reads as a run that started when it did.
        let _inside = runtime.enter();
        Arc::new(ScenarioClock::new(std::time::SystemTime::now()))
    } else {
        Arc::new(SystemClock)
    };
    let catalog = Arc::new(runbook_core::load_catalog(&[dir.to_path_buf()]).0);
    let interrupt = session.interrupt().clone();
    let run = SessionRun {
        prompter,
        reporter,
        catalog,
        parallelism: args.execution.parallelism,
        dry_run: args.dry_run,
        yes: args.execution.yes,
        roll_back_on_interrupt: args.execution.rollback_on_interrupt,
        resume,
        clock,
    };
    let report = runtime.block_on(async {
        let signals = match StopSignals::listen() {
            Ok(signals) => signals,
            Err(error) => {
                eprintln!("error: cannot listen for Ctrl-C and SIGTERM: {error}");
                return None;
            }
        };
        tokio::spawn(signals.stop(interrupt));
        Some(
            session
                .execute(plan, run, || {
                    eprintln!(
                        "\nerror: the run lock (Lease) was lost; stopping after the steps in flight"
                    );
                })
                .await,
        )
    });
    let Some(mut report) = report else {
        return Ok(Exit::Invalid);
    };
    // Deleted after its last record: the record of the run is gone all the same.
    if report.journal_error.is_none() && std::fs::symlink_metadata(&journal).is_err() {
        report.journal_error = Some(format!(
            "the journal {} was deleted during the run",
            journal.display()
        ));
    }
    match (args.execution.output, &report.journal_error) {
        (OutputFormat::Text, _) => eprint!("{}", crate::terminal::summary(&report, &journal)),
        (OutputFormat::Json, Some(error)) => {
            eprintln!("error: the journal of run `{run_id}` is incomplete: {error}");
        }
        (OutputFormat::Json, None) => {}
    }
    Ok(Exit::from_code(report.exit_code()))
}

/// Ctrl-C (SIGINT) and SIGTERM, listened for from before the run starts, so that neither kills
/// it unjournaled.
struct StopSignals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

/// Which of the two arrived.
#[derive(Clone, Copy)]
enum StopSignal {
    CtrlC,
    Terminate,
}

impl StopSignals {
    fn listen() -> std::io::Result<Self> {
        Ok(Self {
            #[cfg(unix)]
            terminate: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?,
        })
    }

    async fn next(&mut self) -> StopSignal {
        #[cfg(unix)]
        {
            tokio::select! {
                result = tokio::signal::ctrl_c() => {
                    if result.is_err() {
                        std::future::pending::<()>().await;
                    }
                    StopSignal::CtrlC
                }
                _ = self.terminate.recv() => StopSignal::Terminate,
            }
        }
        #[cfg(not(unix))]
        {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
            StopSignal::CtrlC
        }
    }

    /// The first signal stops scheduling and cancels the steps in flight (killing their
    /// processes). Ctrl-C then asks at a terminal whether to roll back; SIGTERM, like a Ctrl-C
    /// with no terminal, stops resumable (unless --rollback-on-interrupt). A second signal ends
    /// the process at once, with its processes (the journal says where it stood; `runbook
    /// show` reads it).
    async fn stop(mut self, interrupt: Arc<runbook_core::exec::Interrupt>) {
        match self.next().await {
            StopSignal::CtrlC => {
                eprintln!(
                    "\ninterrupted: letting running steps stop; press Ctrl-C again to quit at once"
                );
                interrupt.raise();
            }
            StopSignal::Terminate => {
                eprintln!(
                    "\nterminated (SIGTERM): stopping the running steps; a second signal quits at once"
                );
                interrupt.terminate("SIGTERM");
            }
        }
        let code = match self.next().await {
            StopSignal::CtrlC => 130,
            StopSignal::Terminate => 143,
        };
        LocalProcesses::kill_all();
        std::process::exit(code);
    }
}

/// Takes the run lock and opens the journal; `Err(exit)` once the reason has been printed.
fn open_session<'w>(
    runtime: &tokio::runtime::Runtime,
    world: &'w World,
    args: &RunArgs,
    state_dir: &Path,
    run_id: &str,
    plan: &Plan,
    mode: JournalMode,
) -> anyhow::Result<Result<RunSession<'w>, Exit>> {
    let target = lock_target(&plan.runbook, &plan.bindings);
    // A dry-run changes nothing, so it needs no lock and never blocks a real run.
    let lock = (!args.dry_run).then_some(target.as_str());
    Ok(
        match runtime.block_on(RunSession::open(
            world,
            &args.execution.cluster,
            state_dir,
            run_id,
            lock,
            mode,
        )) {
            Ok(session) => Ok(session),
            Err(SessionError::Lock(LockError::Held(holder))) => {
                eprintln!(
                    "error: runbook `{}` with these params is already running: {holder}",
                    plan.runbook.name
                );
                Err(Exit::Stopped)
            }
            Err(SessionError::Lock(LockError::Unusable(why))) => {
                eprintln!("error: cannot take the run lock: {why}");
                Err(if world.live.is_some() {
                    Exit::Unreachable
                } else {
                    Exit::Invalid
                })
            }
            Err(SessionError::Journal(error)) => {
                let context = match mode {
                    JournalMode::Append => format!(
                        "cannot append to the journal {}",
                        journal_path(state_dir, run_id).display()
                    ),
                    JournalMode::Create => {
                        format!("cannot create the journal in {}", state_dir.display())
                    }
                };
                return Err(anyhow::Error::new(error).context(context));
            }
        },
    )
}

/// The world of `--simulate` (a scenario, by default the runbook's own) or the live cluster;
/// `Err(exit)` once the reason has been printed.
pub(super) fn open_world(
    runtime: &tokio::runtime::Runtime,
    runbook: &Runbook,
    execution: &Execution,
) -> anyhow::Result<Result<World, Exit>> {
    let scenario_path = match &execution.simulate {
        None => None,
        Some(Some(path)) => Some(path.clone()),
        Some(None) => match default_scenario(runbook) {
            Ok(path) => Some(path),
            Err(message) => {
                eprintln!("error: {message}");
                return Ok(Err(Exit::Invalid));
            }
        },
    };
    if let Some(scenario_path) = scenario_path {
        return Ok(
            match World::load_simulated(&scenario_path, execution.namespace.clone()) {
                Ok(world) => Ok(world),
                Err(diagnostics) => {
                    print_diagnostics(diagnostics, DiagnosticFormat::Text, When::Auto)?;
                    eprintln!("error: scenario {} is invalid", scenario_path.display());
                    Err(Exit::Invalid)
                }
            },
        );
    }
    Ok(
        match runtime.block_on(World::live(&execution.cluster, execution.namespace.clone())) {
            Ok(world) => Ok(world),
            Err(error) => {
                eprintln!("error: {error}");
                Err(Exit::Unreachable)
            }
        },
    )
}

/// `--simulate` with no file: the `scenarios/default.yaml` beside a folder runbook's
/// `runbook.yaml`. A flat runbook file has no folder of its own, so no default.
fn default_scenario(runbook: &Runbook) -> Result<PathBuf, String> {
    let source = runbook.source.path();
    let folder = source.parent().unwrap_or(Path::new(""));
    let path = folder.join("scenarios").join("default.yaml");
    let in_own_folder = source
        .file_name()
        .is_some_and(|name| name == "runbook.yaml" || name == "runbook.yml");
    if !in_own_folder {
        return Err(format!(
            "runbook `{}` is a flat file ({}), not a folder with scenarios/default.yaml; give a scenario with --simulate SCENARIO",
            runbook.name,
            source.display()
        ));
    }
    if !path.is_file() {
        return Err(format!(
            "runbook `{}` has no default scenario: {} does not exist; add it, or give a scenario with --simulate SCENARIO",
            runbook.name,
            path.display()
        ));
    }
    Ok(path)
}
