//! The `runbook` command line: thin commands over the one compiler in `runbook-core`. This file
//! only parses, dispatches to `commands/` (or `serve/`, `client.rs`) and turns the result into
//! one of the documented exit codes.
//!
//! Layout: `cli.rs` (what can be typed), `commands/` (one file per command), `session.rs` (the
//! lock, journal, digest, effects and Lease watch every run shares), `world.rs` (the live or
//! simulated world and the run lock), `web.rs` (HTTP for facts and notifications),
//! `terminal.rs` (prompts, progress, the summary), `state.rs` (the state dir and run ids),
//! `serve/` (the webhook server) and `client.rs` (`runbook approve`).

mod cli;

/// Counts what each thread holds, so an expression's evaluation is bounded in memory (see
/// `runbook_core::alloc`).
#[global_allocator]
static ALLOCATOR: runbook_core::alloc::CountingAllocator = runbook_core::alloc::CountingAllocator;

mod client;
mod commands;
mod exit;
mod serve;
mod session;
mod state;
mod terminal;
mod web;
mod world;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use cli::{Cli, Command, LogFormat};
use commands::resume::ResumeArgs;
use commands::run::RunArgs;
use exit::Exit;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `serve` sets up its own (structured) logs.
    if !matches!(cli.command, Command::Serve { .. }) {
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("RUNBOOK_LOG")
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,kube_client=off")),
            )
            .with_writer(std::io::stderr)
            .init();
    }
    match dispatch(cli) {
        Ok(exit) => exit.into(),
        Err(error) => {
            eprintln!("error: {error:#}");
            Exit::Invalid.into()
        }
    }
}

/// One arm per command, each handing its flags to the command's own file; kept whole so it
/// reads as the list of commands.
fn dispatch(cli: Cli) -> anyhow::Result<Exit> {
    match cli.command {
        Command::Validate {
            paths,
            format,
            deny_warnings,
            excerpt,
        } => commands::validate::validate(&cli.dir, paths, format, deny_warnings, excerpt),
        Command::List { format } => commands::list::list(&cli.dir, format),
        Command::Plan {
            name,
            params,
            alert,
            format,
        } => commands::plan::plan(&cli.dir, &name, &params, alert.as_deref(), format),
        Command::Graph {
            name,
            params,
            format,
        } => commands::graph::graph(&cli.dir, &name, &params, format),
        Command::Run {
            name,
            alert,
            dry_run,
            execution,
        } => commands::run::run(
            &cli.dir,
            RunArgs {
                name,
                alert,
                dry_run,
                execution,
            },
        ),
        Command::Test { paths } => commands::test::test(&cli.dir, paths),
        Command::Resume {
            run_id,
            rollback,
            assume_done,
            rerun,
            execution,
        } => commands::resume::resume(
            &cli.dir,
            &run_id,
            ResumeArgs {
                rollback,
                assume_done,
                rerun,
            },
            RunArgs {
                name: String::new(),
                alert: None,
                dry_run: false,
                execution,
            },
        ),
        Command::Runs {
            state_dir,
            cluster,
            namespace,
            kubeconfig,
            context,
        } => match cluster {
            true => commands::runs::cluster_runs(kubeconfig, context, namespace),
            false => commands::runs::runs(state_dir.as_deref()),
        },
        Command::Show {
            run_id,
            state_dir,
            output,
            cluster,
            namespace,
            kubeconfig,
            context,
        } => match cluster {
            true => commands::show::show_from_cluster(
                &run_id,
                runbook_kube::ConnectOptions {
                    kubeconfig,
                    context,
                    namespace,
                    policy: runbook_kube::Policy::default(),
                },
                output,
            ),
            false => commands::show::show(&run_id, state_dir.as_deref(), output),
        },
        Command::Serve {
            listen,
            token_file,
            approvers,
            kubernetes_approvers,
            state_dir,
            simulate,
            namespace,
            cluster,
            workers,
            parallelism,
            queue,
            run_cap,
            run_cap_window,
            retry_after,
            shutdown_grace,
            keep_finished,
            log_format,
            header_timeout,
            max_connections,
            max_connections_per_client,
            cluster_state,
            replica,
            takeover_after,
            keep_runs,
        } => serve::serve(
            &cli.dir,
            serve::ServeArgs {
                listen,
                token_file,
                approvers,
                kubernetes_approvers,
                state_dir: state::state_dir(state_dir.as_deref()),
                simulate,
                namespace,
                cluster,
                workers,
                parallelism,
                queue,
                run_cap,
                run_cap_window,
                retry_after,
                shutdown_grace,
                keep_finished,
                json_logs: log_format == LogFormat::Json,
                header_timeout,
                max_connections,
                max_connections_per_client,
                cluster_state,
                replica,
                takeover_after,
                keep_runs,
            },
        ),
        Command::Approve {
            run_id,
            deny,
            step,
            server,
            token_file,
            state_dir,
            cluster,
            namespace,
            kubeconfig,
            context,
            wait,
        } => match cluster {
            true => client::approve_through_cluster(
                &run_id,
                !deny,
                step.as_deref(),
                runbook_kube::ConnectOptions {
                    kubeconfig,
                    context,
                    namespace,
                    policy: runbook_kube::Policy::default(),
                },
                wait,
            ),
            false => client::approve(
                &server,
                &run_id,
                !deny,
                step.as_deref(),
                token_file.as_deref(),
                &state::state_dir(state_dir.as_deref()),
            ),
        },
        Command::Rbac { name } => commands::rbac::rbac(&cli.dir, &name),
        Command::Schema => commands::schema::schema(),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "runbook",
                &mut std::io::stdout(),
            );
            Ok(Exit::Succeeded)
        }
    }
}
