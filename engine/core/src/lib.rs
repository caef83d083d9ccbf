//! `runbook-core`: the runbook language, its compiler and its executor.
//!
//! ```text
//!  YAML files ──Loader──▶ Workspace (typed documents + YAML trees with positions)
//!             ──check/──▶ Catalog of checked Runbooks (names resolved, Rhai compiled once;
//!                         one file per pass, diagnostics named by diagnostic::Code)
//!             ──Compiler▶ Plan: petgraph DAG of facts, preconditions, steps, undos, rollback
//!             ──render──▶ text / markdown / JSON plans, DOT / Mermaid graphs
//!  Plan       ──exec/───▶ RunReport + journal: the schedule walks Plan.graph; each step
//!                         (exec/step.rs) runs one action family (exec/actions/), journaling
//!                         its intent first; on failure exec/undo.rs, then exec/rollback.rs
//!             ◀─Effects─▶ the world: Cluster, Processes, Http, Notifier, Prompter, Clock
//!                         (sim/ is a whole simulated cluster; runbook-kube the live one)
//! ```
//!
//! Every stage reports problems as [`diagnostic::Diagnostic`]s with `file:line:col` and keeps
//! going, so one pass shows them all. This crate has no Kubernetes client and no terminal
//! code, and never builds an async runtime (it uses tokio's timers and tasks inside the one the
//! CLI starts): the CLI wires the real world in. Kinds it knows without asking a cluster are in
//! one table, [`kinds`].

pub mod admission;
pub mod alert;
pub mod alloc;
pub mod api_rules;
pub mod bind;
pub mod check;
pub mod compile;
pub mod diagnostic;
pub mod document;
pub mod drain;
pub mod effects;
pub mod exec;
pub mod expr;
pub mod files;
pub mod journal;
pub mod kinds;
pub mod ledger;
pub mod loader;
pub mod lock;
pub mod log_pod;
pub mod matcher;
pub mod pattern;
pub mod rbac;
pub mod redact;
pub mod render;
pub mod resume;
pub mod runbook;
pub mod sim;
pub mod source;
pub mod state_files;
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
