//! One file per command (as uv's `commands/` does), each a thin layer over `runbook-core`; and
//! what several of them share: finding a runbook and compiling its plan (`build_plan`, the one
//! path from a name to a `Plan` for plan, graph, run and resume), printing diagnostics, and
//! the note about broken files elsewhere in the folder.

pub mod graph;
pub mod list;
pub mod params;
pub mod plan;
pub mod rbac;
pub mod resume;
pub mod run;
pub mod runs;
pub mod schema;
pub mod show;
pub mod test;
pub mod validate;

use std::io::{IsTerminal, Write as _};
use std::path::Path;

use anyhow::Context as _;
use runbook_core::alert::{first_match, WebhookPayload};
use runbook_core::bind::bind_given;
use runbook_core::compile::{Compiler, Plan, TriggeredBy};
use runbook_core::diagnostic::{
    did_you_mean, render_github, render_json, render_text, Diagnostics, Severity,
};
use runbook_core::runbook::{Catalog, Runbook};

use crate::cli::{DiagnosticFormat, ParamArgs, When};
use crate::exit::Exit;

pub fn print_diagnostics(
    diagnostics: Diagnostics,
    format: DiagnosticFormat,
    excerpt: When,
) -> std::io::Result<()> {
    let sorted = diagnostics.sorted();
    let excerpts = match excerpt {
        When::Always => true,
        When::Never => false,
        When::Auto => std::io::stderr().is_terminal(),
    };
    match format {
        DiagnosticFormat::Text => {
            let mut stderr = std::io::stderr().lock();
            for diagnostic in &sorted {
                stderr.write_all(render_text(diagnostic, excerpts).as_bytes())?;
            }
        }
        DiagnosticFormat::Json => {
            println!("{}", render_json(&sorted));
        }
        DiagnosticFormat::Github => {
            let mut stdout = std::io::stdout().lock();
            for diagnostic in &sorted {
                writeln!(stdout, "{}", render_github(diagnostic))?;
            }
        }
    }
    Ok(())
}

pub fn plural(count: usize) -> &'static str {
    if count == 1 {
        ""
    } else {
        "s"
    }
}

pub fn load_dir(
    dir: &Path,
) -> anyhow::Result<(Catalog, Diagnostics, runbook_core::loader::Workspace)> {
    if !dir.is_dir() {
        anyhow::bail!(
            "runbooks folder `{}` not found; pass --dir DIR or set RUNBOOK_DIR",
            dir.display()
        );
    }
    Ok(runbook_core::load_catalog(&[dir.to_path_buf()]))
}

/// Problems elsewhere in the folder should not stop an on-call engineer from planning the
/// runbook they need, but they should hear about them.
pub fn note_broken_files(diagnostics: &Diagnostics) {
    let mut files: Vec<String> = diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| d.path().display().to_string())
        .collect();
    files.sort();
    files.dedup();
    if !files.is_empty() {
        eprintln!(
            "note: {} file{} in the runbooks folder {} problems ({}); run `runbook validate` for details",
            files.len(),
            plural(files.len()),
            if files.len() == 1 { "has" } else { "have" },
            files.join(", ")
        );
    }
}

/// A file the user named (`--alert`, `--token-file`, `--approvers`, `--set-file`), read as the
/// loader reads one: UTF-8, and never more than 4 MiB of it, so a link to `/dev/zero` or a huge
/// file is refused instead of filling memory.
pub fn read_named(path: &Path) -> std::io::Result<String> {
    runbook_core::files::read_text(path, runbook_core::files::Origin::Named)
        .map_err(|diagnostic| std::io::Error::other(diagnostic.message))
}

/// Which runbook a command is about.
#[derive(Clone, Copy)]
pub enum Wanted<'a> {
    /// What a user typed: a runbook's name, or the path of its file.
    NameOrPath(&'a str),
    /// A name, looked up in the catalog only: what a journal says is never taken as a path.
    Name(&'a str),
}

/// Finds the runbook `wanted` and compiles its plan, with the params the command line gives
/// (and, for `resume`, those its journal kept: `journaled`).
pub fn build_plan(
    dir: &Path,
    wanted: Wanted<'_>,
    params: &ParamArgs,
    journaled: &[(String, String)],
    alert: Option<&Path>,
    lenient: bool,
) -> anyhow::Result<Result<Plan, Exit>> {
    let (name, is_path) = match wanted {
        Wanted::NameOrPath(name) => (
            name,
            Path::new(name).is_file() || name.ends_with(".yaml") || name.ends_with(".yml"),
        ),
        Wanted::Name(name) => (name, false),
    };
    let as_path = Path::new(name);
    let mut paths = Vec::new();
    if dir.is_dir() {
        paths.push(dir.to_path_buf());
    } else if !is_path {
        anyhow::bail!(
            "runbooks folder `{}` not found; pass --dir DIR or set RUNBOOK_DIR",
            dir.display()
        );
    }
    if is_path {
        if !as_path.is_file() {
            anyhow::bail!("{name}: no such file");
        }
        paths.push(as_path.to_path_buf());
    }
    let (catalog, diagnostics, workspace) = runbook_core::load_catalog(&paths);
    // Which runbook, and which files its plan depends on.
    let wanted = if is_path {
        let canonical = std::fs::canonicalize(as_path).ok();
        workspace
            .runbooks
            .iter()
            .find(|loaded| std::fs::canonicalize(loaded.source.path()).ok() == canonical)
            .map(|loaded| loaded.document.metadata.name.clone())
    } else {
        Some(name.to_owned())
    };
    let relevant = |path: &Path| {
        workspace
            .libraries
            .iter()
            .any(|library| library.source.path() == path)
            || (is_path && std::fs::canonicalize(path).ok() == std::fs::canonicalize(as_path).ok())
            || workspace.runbooks.iter().any(|loaded| {
                Some(&loaded.document.metadata.name) == wanted.as_ref()
                    && loaded.source.path() == path
            })
    };
    let mut blocking = diagnostics.clone();
    blocking.retain(|d| d.severity == Severity::Error && relevant(d.path()));
    let runbook = wanted
        .as_deref()
        .and_then(|wanted| catalog.get(wanted))
        .cloned();
    let Some(runbook) = runbook.filter(|_| !blocking.has_errors()) else {
        if blocking.has_errors() {
            print_diagnostics(blocking, DiagnosticFormat::Text, When::Auto)?;
            eprintln!(
                "error: runbook `{}` is invalid; fix the problems above",
                wanted.as_deref().unwrap_or(name)
            );
            return Ok(Err(Exit::Invalid));
        }
        if is_path {
            anyhow::bail!("{name} holds no runbook (kind: Runbook)");
        }
        let help = did_you_mean(name, catalog.runbooks.iter().map(|r| r.name.as_str()))
            .map(|h| format!("; {h}"))
            .unwrap_or_else(|| "; `runbook list` shows the catalog".to_owned());
        anyhow::bail!("no runbook named `{name}` in {}{help}", dir.display());
    };
    note_broken_files(&{
        let mut others = diagnostics;
        others.retain(|d| !relevant(d.path()));
        others
    });

    let given = params::given(&runbook, params, journaled)?;
    let triggered_by = triggered_by(&runbook, alert)?;
    let (bindings, errors) = bind_given(&runbook, &given, triggered_by.as_ref().map(|t| &t.alert));
    let mut fatal = false;
    for error in &errors {
        if error.missing && lenient {
            eprintln!("note: {error}; `${{params...}}` is shown as written");
        } else {
            eprintln!("error: {error}");
            fatal = true;
        }
    }
    if fatal {
        return Ok(Err(Exit::Invalid));
    }
    Ok(Ok(Compiler::compile(runbook, bindings, triggered_by)))
}

/// The trigger and alert of `--alert FILE`: the first firing alert of the payload that
/// matches one of the runbook's triggers.
fn triggered_by(runbook: &Runbook, alert: Option<&Path>) -> anyhow::Result<Option<TriggeredBy>> {
    let Some(path) = alert else {
        return Ok(None);
    };
    let text = read_named(path)
        .with_context(|| format!("cannot read alert payload {}", path.display()))?;
    let payload = WebhookPayload::parse(&text).with_context(|| path.display().to_string())?;
    if let Some((trigger, alert)) = first_match(runbook, &payload) {
        return Ok(Some(TriggeredBy {
            trigger,
            alert: alert.clone(),
            receiver: payload.receiver.clone(),
            group_key: payload.group_key.clone(),
        }));
    }
    let triggers = runbook
        .triggers
        .iter()
        .map(|t| t.alert_name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    anyhow::bail!(
        "no firing alert in {} matches a trigger of runbook `{}` (triggers: {})",
        path.display(),
        runbook.name,
        if triggers.is_empty() {
            "none"
        } else {
            &triggers
        }
    );
}
