//! `runbook resume`: a killed run goes on from its journal, or rolls back. The runbook must be
//! the one that ran (the journal keeps its digest) and the cluster the one it acted on, and
//! every param the journal holds only redacted must be given again.

use std::io::IsTerminal as _;
use std::path::Path;

use super::run::RunArgs;
use super::{build_plan, Wanted};
use crate::exit::Exit;
use crate::session::journal_path;

/// `runbook resume RUN_ID`: goes on with a run that was killed, from its journal. Steps whose
/// intent was journaled but not their result are unknown: the human says whether they took
/// effect (`--assume-done`, `--rerun`, or at the prompt); they are never repeated blindly.
pub fn resume(
    dir: &Path,
    run_id: &str,
    resume_args: ResumeArgs,
    args: RunArgs,
) -> anyhow::Result<Exit> {
    let state_dir = crate::state::state_dir(args.execution.state_dir.as_deref());
    let path = journal_path(&state_dir, run_id);
    if !path.is_file() {
        anyhow::bail!(
            "no run `{run_id}` in {} (see `runbook runs`)",
            state_dir.join("runs").display()
        );
    }
    // A torn last line is set aside when the journal is reopened, and said then.
    let records = runbook_core::journal::read(&path)
        .map_err(anyhow::Error::msg)?
        .records;
    let state = runbook_core::resume::analyze(&records)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if let Some(outcome) = state.finished {
        anyhow::bail!("run `{run_id}` already finished ({outcome:?}); there is nothing to resume");
    }
    if state.dry_run {
        anyhow::bail!("run `{run_id}` was a dry-run, which changes nothing; run it again instead");
    }
    // Without the digest, resume cannot tell whether the runbook changed since.
    if state.digest.is_empty() {
        anyhow::bail!(
            "{}: the journal records no digest of runbook `{}`, so resume cannot tell whether it changed since run `{run_id}` started; resume needs the runbook as it was",
            path.display(),
            state.runbook.escape_debug()
        );
    }
    // The params it ran with. Secret ones were never written down, and a value that looked
    // like a credential (`token=abc123`) was written redacted: binding `<redacted>` would run
    // the remaining steps with the placeholder, so those must be given again.
    let redacted = |value: &serde_json::Value| {
        value
            .as_str()
            .map_or_else(|| value.to_string(), str::to_owned)
            .contains(runbook_core::redact::REDACTED)
    };
    let missing: Vec<&String> = state
        .params
        .iter()
        .filter(|(name, value)| {
            redacted(value) && !super::params::is_given(&args.execution.params, name)
        })
        .map(|(name, _)| name)
        .collect();
    if !missing.is_empty() {
        let listed = missing
            .iter()
            .map(|name| format!("`{name}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let first = missing[0];
        eprintln!(
            "error: the journal of run `{run_id}` holds param{} {listed} only redacted; give {} again to resume, such as `--set-file {first}=PATH`, {} or `--set {first}=VALUE`",
            super::plural(missing.len()),
            if missing.len() == 1 { "it" } else { "them" },
            super::params::env_name(first)
        );
        return Ok(Exit::Invalid);
    }
    let journaled: Vec<(String, String)> = state
        .params
        .iter()
        .filter(|(_, value)| !redacted(value))
        .map(|(name, value)| {
            (
                name.clone(),
                value
                    .as_str()
                    .map_or_else(|| value.to_string(), str::to_owned),
            )
        })
        .collect();
    // The journal is a file like any other: what it names is looked up in the catalog, never
    // opened as a path.
    if !runbook_core::check::is_runbook_name(&state.runbook) {
        anyhow::bail!(
            "{}: the journal names runbook `{}`, which is not a runbook name (lowercase letters, digits and `-`); resume finds runbooks by name in the catalog only",
            path.display(),
            state.runbook.escape_debug()
        );
    }
    let plan = match build_plan(
        dir,
        Wanted::Name(&state.runbook),
        &args.execution.params,
        &journaled,
        None,
        false,
    )? {
        Ok(plan) => plan,
        Err(exit) => return Ok(exit),
    };
    let digest = crate::session::runbook_digest(&plan.runbook);
    if digest != state.digest {
        anyhow::bail!(
            "runbook `{}` changed since run `{run_id}` started ({} then, {} now); resume needs the runbook as it was",
            state.runbook,
            &state.digest[..12.min(state.digest.len())],
            &digest[..12]
        );
    }
    let mut completed = state.completed.clone();
    let observed = observe_live(&plan, &args, &resume_args, &state.unknown)?;
    for unknown in &state.unknown {
        let seen = observed.get(&unknown.step).copied();
        let done = if resume_args.assume_done.contains(&unknown.step) {
            true
        } else if resume_args.rerun.contains(&unknown.step) {
            false
        } else if seen == Some(runbook_core::resume::Observed::Done) {
            eprintln!(
                "note: step {} was about to {} when the run stopped; its object is as the change leaves it, so it is done",
                unknown.step, unknown.mutation
            );
            true
        } else if seen == Some(runbook_core::resume::Observed::NotDone) {
            eprintln!(
                "note: step {} was about to {} when the run stopped; its object is as it was before, so it runs again",
                unknown.step, unknown.mutation
            );
            false
        } else if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
            eprint!(
                "step {} was about to {} when the run stopped; it may or may not have taken effect.\n? Did it take effect? [y = treat as done / N = run it again] ",
                unknown.step, unknown.mutation
            );
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            matches!(line.trim().to_lowercase().as_str(), "y" | "yes")
        } else {
            eprintln!(
                "error: step `{}` was about to {} when the run stopped, and may or may not have taken effect. Check it, then resume with --assume-done {} or --rerun {} (or --rollback)",
                unknown.step, unknown.mutation, unknown.step, unknown.step
            );
            return Ok(Exit::Stopped);
        };
        if done {
            completed.push((unknown.step.clone(), unknown.undo.clone()));
        }
    }
    let mut roll_back = resume_args.rollback;
    if let Some(failure) = &state.failed {
        if !roll_back {
            eprintln!("note: the run was already failing ({failure}); resuming finishes its undo and rollback");
        }
        roll_back = true;
    }
    let resume = runbook_core::exec::Resume::from_journal(&state, completed, roll_back);
    super::run::drive(
        dir,
        plan,
        &args,
        &state_dir,
        run_id,
        Some((resume, state.cluster.clone())),
    )
}

/// What the live cluster says of each unknown step whose intent journaled its effect
/// (native actions: the object as the change leaves it, and as before). Steps the human
/// decides with `--assume-done` or `--rerun` are not looked at; nothing is looked at against
/// a simulated cluster, which starts from its scenario rather than from where the run stopped.
fn observe_live(
    plan: &runbook_core::compile::Plan,
    args: &RunArgs,
    resume_args: &ResumeArgs,
    unknown: &[runbook_core::resume::Unknown],
) -> anyhow::Result<std::collections::HashMap<String, runbook_core::resume::Observed>> {
    let mut observed = std::collections::HashMap::new();
    let wanted: Vec<&runbook_core::resume::Unknown> = unknown
        .iter()
        .filter(|u| u.effect.is_some())
        .filter(|u| {
            !resume_args.assume_done.contains(&u.step) && !resume_args.rerun.contains(&u.step)
        })
        .collect();
    if wanted.is_empty() || args.execution.simulate.is_some() {
        return Ok(observed);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let Ok(world) = super::run::open_world(&runtime, &plan.runbook, &args.execution)? else {
        // The resume itself says why the cluster cannot be reached.
        return Ok(observed);
    };
    for unknown in wanted {
        let Some(effect) = &unknown.effect else {
            continue;
        };
        let current = match runtime.block_on(world.cluster.get(&effect.object)) {
            Ok(object) => Some(object),
            Err(runbook_core::effects::EffectError::NotFound(_)) => None,
            // Not read: the human decides, as without an effect.
            Err(_) => continue,
        };
        observed.insert(
            unknown.step.clone(),
            runbook_core::resume::observe(effect, current.as_ref()),
        );
    }
    Ok(observed)
}

pub struct ResumeArgs {
    pub rollback: bool,
    pub assume_done: Vec<String>,
    pub rerun: Vec<String>,
}
