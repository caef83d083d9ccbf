//! In-process compile time per runbook: load (parse + structure check) and check every file
//! of the generated corpus, then compile each runbook into its plan; reports the time per
//! runbook. Not a timed test: a benchmark whose figures go in BENCHMARKS.md.
//!
//! cargo run --release -p runbook-core --example generate_corpus -- target/bench-corpus 1000
//! cargo bench -p runbook-core --bench compile -- target/bench-corpus

use std::path::PathBuf;
use std::time::Instant;

use runbook_core::compile::Compiler;

fn main() {
    let dir = std::env::args()
        .skip(1)
        .find(|arg| !arg.starts_with('-'))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../../target/bench-corpus"));
    assert!(dir.is_dir(), "generate the corpus first: cargo run --release -p runbook-core --example generate_corpus -- {}", dir.display());
    let mut samples = Vec::new();
    for _ in 0..7 {
        let started = Instant::now();
        let (catalog, diagnostics, _) = runbook_core::load_catalog(std::slice::from_ref(&dir));
        let checked = started.elapsed();
        assert!(!diagnostics.has_errors(), "the corpus must be valid");
        let compile_started = Instant::now();
        let mut nodes = 0;
        for runbook in &catalog.runbooks {
            let (bindings, _) = runbook_core::bind::bind(
                runbook,
                &[("namespace".to_owned(), "team-a".to_owned())],
                None,
            );
            nodes += Compiler::compile(runbook.clone(), bindings, None)
                .graph
                .node_count();
        }
        let compiled = compile_started.elapsed();
        samples.push((catalog.runbooks.len(), checked, compiled, nodes));
    }
    samples.sort_by_key(|(_, checked, compiled, _)| *checked + *compiled);
    let (count, checked, compiled, nodes) = samples[samples.len() / 2];
    let total = checked + compiled;
    println!("runbooks: {count}, plan nodes: {nodes}");
    println!("load + check (all): {:.1} ms", checked.as_secs_f64() * 1e3);
    println!(
        "compile plans (all): {:.1} ms",
        compiled.as_secs_f64() * 1e3
    );
    println!(
        "per runbook, load + check + compile: {:.1} µs (median of 7 runs)",
        total.as_secs_f64() * 1e6 / count as f64
    );
}
