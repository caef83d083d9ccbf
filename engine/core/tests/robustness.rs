//! A runbook file must never make the engine panic. These tests feed the whole pipeline
//! (parse, structure check, check, compile, every renderer) thousands of damaged variants of
//! real runbooks: truncated, with lines dropped, and with characters that mean something in
//! YAML, Rhai or templates put in random places.

use std::path::{Path, PathBuf};

use runbook_core::compile::Compiler;
use runbook_core::diagnostic::Diagnostics;
use runbook_core::loader::{Loader, Workspace};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs every stage on `text`; returns whether it produced diagnostics or a plan.
fn pipeline(loader: &Loader, library: &str, text: &str) {
    let mut diagnostics = Diagnostics::new();
    let mut workspace = Workspace::default();
    loader.load_text(
        Path::new("lib.yaml"),
        library.to_owned(),
        &mut workspace,
        &mut diagnostics,
    );
    loader.load_text(
        Path::new("mutant.yaml"),
        text.to_owned(),
        &mut workspace,
        &mut diagnostics,
    );
    let catalog = runbook_core::check::check(&workspace, &mut diagnostics);
    for diagnostic in diagnostics.sorted() {
        let _ = runbook_core::diagnostic::render_text(&diagnostic, true);
        let _ = runbook_core::diagnostic::render_github(&diagnostic);
    }
    for runbook in &catalog.runbooks {
        let (bindings, _) = runbook_core::bind::bind(runbook, &[], None);
        let plan = Compiler::compile(runbook.clone(), bindings, None);
        let _ = runbook_core::render::plan_text(&plan);
        let _ = runbook_core::render::plan_markdown(&plan);
        let _ = runbook_core::render::plan_json(&plan);
        let _ = runbook_core::render::graph_dot(&plan);
        let _ = runbook_core::render::graph_mermaid(&plan);
    }
}

/// A small deterministic generator, so failures reproduce.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % bound.max(1)
    }
}

const NASTY: [&str; 24] = [
    ":", "[", "]", "{", "}", "\"", "'", "\t", "*a", "&a ", "!", "%", "@", "`", "$", "${", "#", "|",
    ">", "- ", "\n", "?", "\u{feff}", "é",
];

fn inputs() -> Vec<(String, String)> {
    let seed =
        std::fs::read_to_string(root().join("runbooks/openbao-sealed/runbook.yaml")).expect("seed");
    let library =
        std::fs::read_to_string(root().join("runbooks/lib/openbao.yaml")).expect("library");
    let fixture = std::fs::read_to_string(root().join("tests/golden/fixtures/every-action.yaml"))
        .expect("fixture");
    vec![(seed, library.clone()), (fixture, library)]
}

#[test]
fn truncated_files_never_panic() {
    let loader = Loader::new();
    for (text, library) in inputs() {
        let boundaries: Vec<usize> = text
            .char_indices()
            .map(|(index, _)| index)
            .step_by(7)
            .collect();
        for end in boundaries {
            let cut = &text[..end];
            let outcome = std::panic::catch_unwind(|| pipeline(&loader, &library, cut));
            assert!(outcome.is_ok(), "panicked on the first {end} bytes:\n{cut}");
        }
    }
}

#[test]
fn dropped_lines_never_panic() {
    let loader = Loader::new();
    for (text, library) in inputs() {
        let lines: Vec<&str> = text.lines().collect();
        for skip in 0..lines.len() {
            let mutant: String = lines
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != skip)
                .map(|(_, l)| format!("{l}\n"))
                .collect();
            let outcome = std::panic::catch_unwind(|| pipeline(&loader, &library, &mutant));
            assert!(
                outcome.is_ok(),
                "panicked without line {}:\n{mutant}",
                skip + 1
            );
        }
    }
}

#[test]
fn random_special_characters_never_panic() {
    let loader = Loader::new();
    let mut random = Lcg(0x5eed);
    for (text, library) in inputs() {
        let boundaries: Vec<usize> = text.char_indices().map(|(index, _)| index).collect();
        for _ in 0..1500 {
            let mut mutant = text.clone();
            for _ in 0..1 + random.next(3) {
                let at = boundaries[random.next(boundaries.len())].min(mutant.len());
                if !mutant.is_char_boundary(at) {
                    continue;
                }
                mutant.insert_str(at, NASTY[random.next(NASTY.len())]);
            }
            let outcome = std::panic::catch_unwind(|| pipeline(&loader, &library, &mutant));
            assert!(outcome.is_ok(), "panicked on:\n{mutant}");
        }
    }
}

#[test]
fn hostile_yaml_is_refused_not_obeyed() {
    let loader = Loader::new();
    let library = String::new();
    let cases = [
        "a: &a [*a]\n".to_owned(),
        "[".repeat(10_000),
        format!("key: {}\n", "x".repeat(2_000_000)),
        "!!binary aGVsbG8=\n".to_owned(),
        "\u{0}\u{1}\u{2}".to_owned(),
        "---\n---\n---\n".to_owned(),
        format!("apiVersion: runbook.dev/v1alpha1\nkind: Runbook\nmetadata: {{name: x}}\nspec:\n  steps:\n    - verify: \"{}\"\n", "(".repeat(5000)),
    ];
    for case in &cases {
        let outcome = std::panic::catch_unwind(|| pipeline(&loader, &library, case));
        assert!(
            outcome.is_ok(),
            "panicked on a hostile input of {} bytes",
            case.len()
        );
    }
}
