//! Where the command line's param values come from, for `plan`, `graph`, `run` and `resume`:
//! `--set NAME=VALUE`, `--set-file NAME=PATH` (the file's contents, without the final newline)
//! and the environment's `RUNBOOK_PARAM_<NAME>`. A value on the command line is in the process
//! list and the shell's history; the other two keep a secret out of both.

use runbook_core::bind::{parse_set, Given, Origin};
use runbook_core::runbook::Runbook;

use crate::cli::ParamArgs;

/// The prefix of the environment variables that give params.
pub const ENV_PREFIX: &str = "RUNBOOK_PARAM_";

/// The environment variable that gives `param`: `RUNBOOK_PARAM_` and its name in upper case
/// (`db_password` is `RUNBOOK_PARAM_DB_PASSWORD`).
pub fn env_name(param: &str) -> String {
    format!("{ENV_PREFIX}{}", param.to_ascii_uppercase())
}

/// The values given for `runbook`'s params, lowest precedence first, so that the last given for
/// a param wins: `RUNBOOK_PARAM_<NAME>`, then `journaled` (what a resumed run's journal kept),
/// then `--set-file`, then `--set`. A variable that names no param of the runbook is left alone
/// (it may be meant for another runbook); a bad flag or an unreadable file is an error.
pub fn given(
    runbook: &Runbook,
    args: &ParamArgs,
    journaled: &[(String, String)],
) -> anyhow::Result<Vec<Given>> {
    let mut given = Vec::new();
    for param in &runbook.params {
        let variable = env_name(&param.name);
        if let Some(value) = std::env::var_os(&variable) {
            let value = value.into_string().map_err(|_| {
                anyhow::anyhow!("environment variable {variable} is not UTF-8 text")
            })?;
            given.push(Given {
                origin: Origin::Environment,
                ..Given::set(&param.name, &value)
            });
        }
    }
    given.extend(
        journaled
            .iter()
            .map(|(name, value)| Given::set(name, value)),
    );
    for text in &args.set_files {
        let Some((name, path)) = text
            .split_once('=')
            .filter(|(name, path)| !name.trim().is_empty() && !path.is_empty())
        else {
            anyhow::bail!("`--set-file {text}` is not `name=path`");
        };
        let name = name.trim();
        let contents = super::read_named(std::path::Path::new(path)).map_err(|error| {
            anyhow::anyhow!("`--set-file {name}={path}`: cannot read {path}: {error}")
        })?;
        let value = contents
            .strip_suffix('\n')
            .map_or(contents.as_str(), |line| {
                line.strip_suffix('\r').unwrap_or(line)
            });
        given.push(Given {
            origin: Origin::File,
            ..Given::set(name, value)
        });
    }
    for text in &args.sets {
        let (name, value) = parse_set(text).map_err(anyhow::Error::msg)?;
        if runbook.param(&name).is_some_and(|param| param.secret) {
            eprintln!(
                "note: param `{name}` is secret, and `--set` puts its value in the process list and the shell's history; give it with `--set-file {name}=PATH` or {} instead",
                env_name(&name)
            );
        }
        given.push(Given::set(&name, &value));
    }
    Ok(given)
}

/// Whether the command line or the environment gives a value for the param `name`.
pub fn is_given(args: &ParamArgs, name: &str) -> bool {
    let named = |text: &String| {
        text.split_once('=')
            .is_some_and(|(given, _)| given.trim() == name)
    };
    args.sets.iter().any(named)
        || args.set_files.iter().any(named)
        || std::env::var_os(env_name(name)).is_some()
}
