//! The loader: files and folders in, typed documents (with their YAML trees) out.
//!
//! It reads every `*.yaml`/`*.yml` under the paths it is given (skipping scenario and test
//! files, which are not runbooks), parses them, picks the document kind, runs the structure
//! check, and only then lets serde build the typed document. Problems become diagnostics; a
//! file that cannot be read is a diagnostic too, never a panic. How folders are walked and
//! files read (each real folder once, regular files only, at most 4 MiB) is `files.rs`.
//!
//! Two layouts are read, because users have both: a flat folder (`NAME.yaml` beside
//! `NAME.test.yaml` and `NAME*.scenario.yaml`), and one folder per runbook
//! (`NAME/runbook.yaml` with `tests.yaml`, `scenarios/*.yaml`, `alerts/*.json`). The names
//! that mark the second only mean something inside a folder holding a `runbook.yaml`, so a
//! flat folder's runbook that happens to be called `tests.yaml` still loads.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::diagnostic::{did_you_mean, Code, Diagnostic, Diagnostics};
use crate::document::{FactLibraryDocument, RunbookDocument, API_VERSION};
use crate::files::{self, Kind, Origin};
use crate::source::{Source, SourceFile, Span};
use crate::yaml::{self, Node, Value};

/// A typed document with the YAML tree it came from, for positions.
#[derive(Clone, Debug)]
pub struct Loaded<T> {
    pub document: T,
    pub root: Node,
    pub source: Source,
    /// Objects that held fields the structure check refused (set aside so the rest could
    /// still be checked). A document with any is never compiled.
    pub damaged: Vec<Span>,
}

impl<T> Loaded<T> {
    /// The span of the value at `pointer`, or of the nearest ancestor that exists.
    pub fn span(&self, pointer: &str) -> Span {
        let mut pointer = pointer;
        loop {
            if let Some(node) = self.root.pointer(pointer) {
                return node.span;
            }
            match pointer.rsplit_once('/') {
                Some((parent, _)) => pointer = parent,
                None => return self.root.span,
            }
        }
    }

    /// The span of the key holding `pointer`, falling back to the value's span.
    pub fn key_span(&self, pointer: &str) -> Span {
        self.root
            .key_span(pointer)
            .unwrap_or_else(|| self.span(pointer))
    }

    pub fn node(&self, pointer: &str) -> Option<&Node> {
        self.root.pointer(pointer)
    }
}

/// Everything found under the given paths.
#[derive(Clone, Debug, Default)]
pub struct Workspace {
    pub runbooks: Vec<Loaded<RunbookDocument>>,
    pub libraries: Vec<Loaded<FactLibraryDocument>>,
    pub files: Vec<PathBuf>,
}

/// Names that mark files in the runbooks folder that are not runbooks.
fn is_skipped(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.starts_with('.')
        || [
            ".scenario.yaml",
            ".scenario.yml",
            ".test.yaml",
            ".test.yml",
            ".alert.json",
        ]
        .iter()
        .any(|suffix| name.ends_with(suffix))
}

/// The file that makes a folder one runbook's folder (`runbooks/NAME/runbook.yaml`).
const RUNBOOK_FILES: [&str; 2] = ["runbook.yaml", "runbook.yml"];
/// A runbook folder's scenario tests.
const TEST_FILES: [&str; 2] = ["tests.yaml", "tests.yml"];
/// A runbook folder's subfolders that hold scenarios and sample alerts, never runbooks.
const NOT_RUNBOOK_FOLDERS: [&str; 2] = ["scenarios", "alerts"];

/// Whether `dir` is one runbook's folder: it holds a `runbook.yaml`.
pub fn is_runbook_folder(dir: &Path) -> bool {
    RUNBOOK_FILES.iter().any(|name| dir.join(name).is_file())
}

/// Whether `path` is a scenario test file: `*.test.yaml` in any folder, or `tests.yaml` in a
/// runbook's folder.
pub fn is_test_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.ends_with(".test.yaml")
        || name.ends_with(".test.yml")
        || (TEST_FILES.contains(&name) && path.parent().is_some_and(is_runbook_folder))
}

/// Whether `path`, found in the folder `dir`, is a runbook folder's test file or its
/// scenarios or alerts folder.
fn is_runbook_folder_companion(dir: &Path, path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let companion =
        TEST_FILES.contains(&name) || (NOT_RUNBOOK_FOLDERS.contains(&name) && path.is_dir());
    companion && is_runbook_folder(dir)
}

fn is_yaml(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

pub struct Loader {
    schema: serde_json::Value,
}

impl Default for Loader {
    fn default() -> Self {
        Self::new()
    }
}

impl Loader {
    pub fn new() -> Self {
        Self {
            schema: crate::document::json_schema(),
        }
    }

    /// Loads files and (recursively) folders. A path named explicitly is loaded even if its
    /// name would be skipped in a folder, and whatever it is (a pipe too).
    pub fn load_paths(&self, paths: &[PathBuf], diagnostics: &mut Diagnostics) -> Workspace {
        let mut files = Vec::new();
        for path in paths {
            if path.is_dir() {
                let found = files::walk(path, wanted, diagnostics);
                files.extend(found.into_iter().map(|file| (file, Origin::Found)));
            } else {
                files.push((path.clone(), Origin::Named));
            }
        }
        files.sort_by(|a, b| a.0.cmp(&b.0));
        files.dedup_by(|later, first| later.0 == first.0);
        // Files are independent: load them on every core, then merge in file order so the
        // result is the same as a sequential load.
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, files.len().max(1));
        let chunk = files.len().div_ceil(workers).max(1);
        let parts: Vec<(Workspace, Diagnostics)> = std::thread::scope(|scope| {
            let handles: Vec<_> = files
                .chunks(chunk)
                .map(|part| scope.spawn(move || self.load_files(part)))
                .collect();
            handles
                .into_iter()
                .map(|handle| {
                    handle
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .collect()
        });
        let mut workspace = Workspace::default();
        for (part, part_diagnostics) in parts {
            workspace.runbooks.extend(part.runbooks);
            workspace.libraries.extend(part.libraries);
            diagnostics.extend(part_diagnostics);
        }
        workspace.files = files.into_iter().map(|(file, _)| file).collect();
        workspace
    }

    fn load_files(&self, files: &[(PathBuf, Origin)]) -> (Workspace, Diagnostics) {
        let mut workspace = Workspace::default();
        let mut diagnostics = Diagnostics::new();
        for (file, origin) in files {
            match files::read_text(file, *origin) {
                Ok(text) => self.load_text(file, text, &mut workspace, &mut diagnostics),
                Err(diagnostic) => diagnostics.push(diagnostic),
            }
        }
        (workspace, diagnostics)
    }

    /// Loads one file's text (also used by tests and by `--alert`-free in-memory callers).
    pub fn load_text(
        &self,
        path: &Path,
        text: String,
        workspace: &mut Workspace,
        diagnostics: &mut Diagnostics,
    ) {
        let source = SourceFile::new(path, text);
        for document in yaml::parse(&source, diagnostics) {
            self.load_document(document.root, &source, workspace, diagnostics);
        }
    }

    fn load_document(
        &self,
        root: Node,
        source: &Source,
        workspace: &mut Workspace,
        diagnostics: &mut Diagnostics,
    ) {
        if matches!(root.value, Value::Null) {
            return; // An empty document, such as a trailing `---`.
        }
        if !matches!(root.value, Value::Map(_)) {
            diagnostics.push(Diagnostic::error(
                Code::WrongType,
                source,
                root.span,
                format!(
                    "expected a mapping with `apiVersion`, `kind`, `metadata` and `spec`, found {}",
                    root.describe()
                ),
            ));
            return;
        }
        let kind_node = root.get("kind");
        let kind = kind_node.and_then(Node::as_str);
        let definition = match kind {
            Some("Runbook") => "RunbookDocument",
            Some("FactLibrary") => "FactLibraryDocument",
            Some(other) => {
                let at = kind_node.map_or(root.span, |n| n.span);
                diagnostics.push(
                    Diagnostic::error(
                        Code::UnknownKind,
                        source,
                        at,
                        format!("unknown kind `{other}`, expected `Runbook` or `FactLibrary`"),
                    )
                    .with_help_opt(did_you_mean(other, ["Runbook", "FactLibrary"])),
                );
                return;
            }
            None => {
                let at = kind_node.map_or(Span::point(root.span.start), |n| n.span);
                diagnostics.push(Diagnostic::error(
                    Code::MissingField,
                    source,
                    at,
                    "missing required field `kind` (a string: `Runbook` or `FactLibrary`)",
                ));
                return;
            }
        };
        if let Some(node) = root.get("apiVersion") {
            if let Some(text) = node.as_str() {
                let valid = text.split_once('/').is_some_and(|(group, version)| {
                    version == API_VERSION && group.contains('.') && !group.contains(' ')
                });
                if !valid {
                    diagnostics.push(
                        Diagnostic::error(
                            Code::ApiVersion,
                            source,
                            node.span,
                            format!("unsupported apiVersion `{text}`"),
                        )
                        .with_help(format!(
                            "use `<group>/{API_VERSION}`, for example `{}/{API_VERSION}`",
                            crate::document::API_GROUP
                        )),
                    );
                }
            }
        }
        let bad = crate::structure::check(&self.schema, definition, &root, source, diagnostics);
        let mut json = root.to_json();
        let Some(damaged) = prune(&mut json, &root, &bad) else {
            return;
        };
        // With fields set aside, serde may still refuse the rest (a required field was bad);
        // the structure check has already said why, so stay quiet then.
        let quiet = !bad.is_empty();
        match definition {
            "RunbookDocument" => {
                if let Some(document) =
                    deserialize::<RunbookDocument>(json, &root, source, diagnostics, quiet)
                {
                    workspace.runbooks.push(Loaded {
                        document,
                        root,
                        source: source.clone(),
                        damaged,
                    });
                }
            }
            _ => {
                if let Some(document) =
                    deserialize::<FactLibraryDocument>(json, &root, source, diagnostics, quiet)
                {
                    workspace.libraries.push(Loaded {
                        document,
                        root,
                        source: source.clone(),
                        damaged,
                    });
                }
            }
        }
    }
}

/// Removes from `json` the field holding each of the `bad` pointers (or, inside a list, the
/// field holding the list), returning the spans of the objects they were removed from; `None`
/// if a pointer lies inside a field an earlier one removed, or is the document itself.
///
/// The fields are only marked while the pointers are walked, and each object then drops its
/// marked fields in one pass: removing them one at a time from an order-keeping map costs the
/// length of the map each time, quadratic in the fields of a mapping full of unknown ones.
fn prune(json: &mut serde_json::Value, root: &Node, bad: &[String]) -> Option<Vec<Span>> {
    let mut removed: HashSet<String> = HashSet::new();
    let mut fields: HashMap<String, HashSet<String>> = HashMap::new();
    let mut damaged = Vec::new();
    for pointer in bad {
        let mut pointer = pointer.as_str();
        loop {
            let (parent, key) = pointer.rsplit_once('/')?;
            let gone =
                std::iter::successors(Some(parent), |at| at.rsplit_once('/').map(|(up, _)| up))
                    .any(|at| removed.contains(at));
            if gone {
                return None;
            }
            match json.pointer(parent)? {
                serde_json::Value::Object(_) => {
                    removed.insert(pointer.to_owned());
                    fields
                        .entry(parent.to_owned())
                        .or_default()
                        .insert(key.replace("~1", "/").replace("~0", "~"));
                    damaged.extend(root.pointer(parent).map(|node| node.span));
                    break;
                }
                serde_json::Value::Array(_) => pointer = parent,
                _ => return None,
            }
        }
    }
    for (parent, keys) in fields {
        if let Some(serde_json::Value::Object(map)) = json.pointer_mut(&parent) {
            map.retain(|key, _| !keys.contains(key));
        }
    }
    Some(damaged)
}

fn deserialize<T: serde::de::DeserializeOwned>(
    json: serde_json::Value,
    root: &Node,
    source: &Source,
    diagnostics: &mut Diagnostics,
    quiet: bool,
) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(json) {
        Ok(document) => Some(document),
        Err(_) if quiet => None,
        Err(error) => {
            let mut pointer = String::new();
            for segment in error.path().iter() {
                pointer.push('/');
                pointer.push_str(&segment.to_string());
            }
            let span = root.pointer(&pointer).map_or(root.span, |node| node.span);
            diagnostics.push(Diagnostic::error(
                Code::InvalidValue,
                source,
                span,
                error.inner().to_string(),
            ));
            None
        }
    }
}

/// What the loader reads in a folder: `*.yaml` files and folders, but not scenario and test
/// files, hidden ones, or a runbook folder's tests, scenarios and alerts.
fn wanted(folder: &Path, path: &Path, kind: Kind) -> bool {
    !is_skipped(path)
        && !is_runbook_folder_companion(folder, path)
        && (kind == Kind::Folder || is_yaml(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUNBOOK: &str = "apiVersion: catalyst.openova.io/v1alpha1
kind: Runbook
metadata:
  name: NAME
spec:
  steps:
    - verify: \"true\"
";
    /// Neither a runbook nor a fact library: loading it as one would be an error.
    const NOT_A_RUNBOOK: &str = "apiVersion: catalyst.openova.io/v1alpha1\nkind: Scenario\n";

    /// A fresh folder under the system's temporary folder, removed when dropped.
    struct Folder(PathBuf);

    impl Folder {
        fn new(test: &str) -> Self {
            let path =
                std::env::temp_dir().join(format!("runbook-loader-{test}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).expect("create the folder");
            Self(path)
        }

        fn write(&self, relative: &str, text: &str) {
            let path = self.0.join(relative);
            std::fs::create_dir_all(path.parent().expect("a parent")).expect("create");
            std::fs::write(path, text).expect("write");
        }
    }

    impl Drop for Folder {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn load(folder: &Folder) -> (Vec<String>, Vec<String>, Diagnostics) {
        let mut diagnostics = Diagnostics::new();
        let workspace = Loader::new().load_paths(std::slice::from_ref(&folder.0), &mut diagnostics);
        let names = workspace
            .runbooks
            .iter()
            .map(|runbook| runbook.document.metadata.name.clone())
            .collect();
        let files = workspace
            .files
            .iter()
            .map(|file| {
                file.strip_prefix(&folder.0)
                    .expect("inside the folder")
                    .to_string_lossy()
                    .replace('\\', "/")
            })
            .collect();
        (names, files, diagnostics)
    }

    #[test]
    fn a_flat_folder_loads_its_runbooks_and_skips_its_tests_and_scenarios() {
        let folder = Folder::new("flat");
        folder.write("scale.yaml", &RUNBOOK.replace("NAME", "scale"));
        folder.write("scale.test.yaml", NOT_A_RUNBOOK);
        folder.write("scale.scenario.yaml", NOT_A_RUNBOOK);
        folder.write("scale-broken.scenario.yaml", NOT_A_RUNBOOK);
        // Without a runbook.yaml beside it, `tests.yaml` is a runbook like any other.
        folder.write("tests.yaml", &RUNBOOK.replace("NAME", "tests"));
        let (names, files, diagnostics) = load(&folder);
        assert!(!diagnostics.has_errors(), "{:?}", diagnostics.sorted());
        assert_eq!(names, ["scale", "tests"]);
        assert_eq!(files, ["scale.yaml", "tests.yaml"]);
        assert!(is_test_file(&folder.0.join("scale.test.yaml")));
        assert!(!is_test_file(&folder.0.join("tests.yaml")));
    }

    #[test]
    fn a_folder_per_runbook_loads_each_runbook_and_skips_its_tests_and_scenarios() {
        let folder = Folder::new("per-runbook");
        for name in ["scale", "restart"] {
            folder.write(
                &format!("{name}/runbook.yaml"),
                &RUNBOOK.replace("NAME", name),
            );
            folder.write(&format!("{name}/tests.yaml"), NOT_A_RUNBOOK);
            folder.write(&format!("{name}/scenarios/default.yaml"), NOT_A_RUNBOOK);
            folder.write(&format!("{name}/scenarios/broken.yaml"), NOT_A_RUNBOOK);
            folder.write(&format!("{name}/alerts/firing.json"), "{}");
        }
        folder.write(
            "lib/facts.yaml",
            "apiVersion: catalyst.openova.io/v1alpha1\nkind: FactLibrary\nmetadata:\n  name: facts\nspec:\n  facts: []\n",
        );
        let (names, files, diagnostics) = load(&folder);
        assert!(!diagnostics.has_errors(), "{:?}", diagnostics.sorted());
        assert_eq!(names, ["restart", "scale"]);
        assert_eq!(
            files,
            [
                "lib/facts.yaml",
                "restart/runbook.yaml",
                "scale/runbook.yaml"
            ]
        );
        assert!(is_test_file(&folder.0.join("scale/tests.yaml")));
        assert!(!is_test_file(
            &folder.0.join("scale/scenarios/default.yaml")
        ));
    }
}
