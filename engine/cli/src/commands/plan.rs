//! `runbook plan`: the compiled plan in execution order, as text, markdown or JSON.

use std::io::Write as _;
use std::path::Path;

use super::{build_plan, Wanted};
use crate::cli::{ParamArgs, PlanFormat};
use crate::exit::Exit;

pub fn plan(
    dir: &Path,
    name: &str,
    params: &ParamArgs,
    alert: Option<&Path>,
    format: PlanFormat,
) -> anyhow::Result<Exit> {
    let plan = match build_plan(dir, Wanted::NameOrPath(name), params, &[], alert, true)? {
        Ok(plan) => plan,
        Err(exit) => return Ok(exit),
    };
    let text = match format {
        PlanFormat::Text => runbook_core::render::plan_text(&plan),
        PlanFormat::Markdown => runbook_core::render::plan_markdown(&plan),
        PlanFormat::Json => format!(
            "{}\n",
            serde_json::to_string_pretty(&runbook_core::render::plan_json(&plan))?
        ),
    };
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(Exit::Succeeded)
}
