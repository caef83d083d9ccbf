//! `runbook-core`: the runbook language and its compiler.
//!
//! ```text
//!  YAML files ──Loader──▶ Workspace (typed documents + YAML trees with positions)
//!             ──check───▶ Catalog of checked Runbooks (names resolved, Rhai compiled once)
//!             ──Compiler▶ Plan: petgraph DAG of facts, preconditions, steps, undos, rollback
//!             ──render──▶ text / markdown / JSON plans, DOT / Mermaid graphs
//! ```
//!
//! Every stage reports problems as [`diagnostic::Diagnostic`]s with `file:line:col` and keeps
//! going, so one pass shows them all. This crate has no Kubernetes client, no terminal code
//! and no async runtime: the CLI wires those in.

pub mod admission;
pub mod alert;
pub mod bind;
pub mod check;
pub mod compile;
pub mod diagnostic;
pub mod document;
pub mod drain;
pub mod effects;
pub mod exec;
pub mod expr;
pub mod journal;
pub mod kinds;
pub mod loader;
pub mod lock;
pub mod matcher;
pub mod pattern;
pub mod redact;
pub mod render;
pub mod resume;
pub mod runbook;
pub mod sim;
pub mod source;
pub mod structure;
pub mod testing;
pub mod yaml;

use std::path::PathBuf;

use diagnostic::Diagnostics;
use runbook::Catalog;

/// Loads and checks everything under `paths`: the one pipeline every command uses.
pub fn load_catalog(paths: &[PathBuf]) -> (Catalog, Diagnostics, loader::Workspace) {
    let mut diagnostics = Diagnostics::new();
    let workspace = loader::Loader::new().load_paths(paths, &mut diagnostics);
    let catalog = check::check(&workspace, &mut diagnostics);
    (catalog, diagnostics, workspace)
}
