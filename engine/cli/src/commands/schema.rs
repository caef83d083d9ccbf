//! `runbook schema`: the JSON Schema editors use to check runbooks and fact libraries.

use crate::exit::Exit;

pub fn schema() -> anyhow::Result<Exit> {
    println!(
        "{}",
        serde_json::to_string_pretty(&runbook_core::document::json_schema())?
    );
    Ok(Exit::Succeeded)
}
