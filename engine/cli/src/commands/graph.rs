//! `runbook graph`: the plan's DAG for Graphviz or Mermaid, from the same compiler as `plan`.

use std::io::Write as _;
use std::path::Path;

use super::{build_plan, Wanted};
use crate::cli::{GraphFormat, ParamArgs};
use crate::exit::Exit;

pub fn graph(
    dir: &Path,
    name: &str,
    params: &ParamArgs,
    format: GraphFormat,
) -> anyhow::Result<Exit> {
    let plan = match build_plan(dir, Wanted::NameOrPath(name), params, &[], None, true)? {
        Ok(plan) => plan,
        Err(exit) => return Ok(exit),
    };
    let text = match format {
        GraphFormat::Dot => runbook_core::render::graph_dot(&plan),
        GraphFormat::Mermaid => runbook_core::render::graph_mermaid(&plan),
    };
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(Exit::Succeeded)
}
