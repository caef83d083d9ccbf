//! The functions pass: the `functions:` of fact libraries, before any fact or runbook calls
//! them. Names are unique across the catalog and no built-in's; params are identifiers; a body
//! is checked like any expression and may read its params only (so a function stays pure: what
//! it needs from the world comes in as an argument); functions that call each other in a circle
//! are refused, since Rhai would only stop them at its call-depth limit.

use super::facts::RESERVED_ROOTS;
use super::*;
use crate::expr::{CompiledBody, Functions};

/// The catalog's functions as the checker knows them: compiled for expressions to call, and
/// checked specs for the plan.
#[derive(Clone, Debug, Default)]
pub(super) struct LibraryFunctions {
    pub(super) compiled: Functions,
    pub(super) specs: BTreeMap<String, Arc<FunctionSpec>>,
}

/// A function whose name and params passed, waiting for its body to be checked.
struct Declared<'l> {
    at: At<'l>,
    pointer: String,
    function: &'l document::Function,
}

impl Checker<'_> {
    pub(super) fn check_functions(
        &mut self,
        libraries: &[Loaded<document::FactLibraryDocument>],
    ) -> LibraryFunctions {
        let mut taken: BTreeMap<String, (Source, Span)> = BTreeMap::new();
        let mut declared: Vec<Declared<'_>> = Vec::new();
        for loaded in libraries {
            let at = At::of(loaded);
            for (index, function) in loaded.document.spec.functions.iter().enumerate() {
                let pointer = format!("/spec/functions/{index}");
                if self.check_function_signature(at, &pointer, function, &mut taken) {
                    declared.push(Declared {
                        at,
                        pointer,
                        function,
                    });
                }
            }
        }
        let arity: BTreeMap<String, usize> = declared
            .iter()
            .map(|d| (d.function.name.clone(), d.function.params.len()))
            .collect();
        let known = Functions::declared(arity);
        let mut bodies: BTreeMap<String, (CompiledBody, &Declared<'_>)> = BTreeMap::new();
        for entry in &declared {
            if let Some(body) = self.check_function_body(entry, &known) {
                bodies.insert(entry.function.name.clone(), (body, entry));
            }
        }
        self.drop_recursive_functions(&mut bodies);
        // A function that calls one that failed its check cannot run either: dropped too, and
        // said at the call.
        loop {
            let broken: Vec<(String, String)> = bodies
                .iter()
                .filter_map(|(name, (body, _))| {
                    body.direct_calls
                        .iter()
                        .find(|called| !bodies.contains_key(*called))
                        .map(|called| (name.clone(), called.clone()))
                })
                .collect();
            if broken.is_empty() {
                break;
            }
            for (name, called) in broken {
                if let Some((_, entry)) = bodies.remove(&name) {
                    let pointer = format!("{}/body", entry.pointer);
                    self.error(
                        Code::Function,
                        entry.at,
                        entry.at.span(&pointer),
                        format!("function `{name}` calls `{called}`, which has an error"),
                    );
                }
            }
        }
        let mut library = LibraryFunctions::default();
        for (name, (body, entry)) in &bodies {
            let function = entry.function;
            if let Err(error) = library.compiled.define(name, &function.params, body) {
                let pointer = format!("{}/body", entry.pointer);
                self.error(
                    Code::Function,
                    entry.at,
                    entry.at.span(&pointer),
                    format!("function `{name}` cannot be defined: {}", error.message),
                );
                continue;
            }
            library.specs.insert(
                name.clone(),
                Arc::new(FunctionSpec {
                    name: name.clone(),
                    description: function.description.clone(),
                    params: function.params.clone(),
                    body: function.body.clone(),
                    origin: entry.at.source.clone(),
                    span: entry.at.span(&format!("{}/name", entry.pointer)),
                }),
            );
        }
        library.compiled.mark_broken(
            declared
                .iter()
                .map(|entry| entry.function.name.clone())
                .filter(|name| !library.specs.contains_key(name)),
        );
        library
    }

    /// The name and params of one function; claims its name.
    fn check_function_signature(
        &mut self,
        at: At<'_>,
        pointer: &str,
        function: &document::Function,
        taken: &mut BTreeMap<String, (Source, Span)>,
    ) -> bool {
        let name = &function.name;
        let name_span = at.span(&format!("{pointer}/name"));
        if !is_identifier(name) {
            self.error_help(
                Code::Function,
                at,
                name_span,
                format!("invalid function name `{name}`"),
                Some("use lowercase letters, digits and `_`, such as `days_until`".to_owned()),
            );
            return false;
        }
        if crate::expr::is_builtin_function(name) {
            self.error_help(
                Code::Function,
                at,
                name_span,
                format!("function `{name}` has the name of a built-in function"),
                Some(format!(
                    "choose another name, such as `{name}_of`; every expression already has `{name}`"
                )),
            );
            return false;
        }
        if let Some((source, span)) = taken.get(name) {
            let message = format!(
                "function `{name}` is already defined at {}:{}:{}",
                source.path().display(),
                span.start.line,
                span.start.column
            );
            self.error_help(
                Code::Function,
                at,
                name_span,
                message,
                Some(
                    "functions are shared by the whole catalog; give each one its own name"
                        .to_owned(),
                ),
            );
            return false;
        }
        taken.insert(name.clone(), (at.source.clone(), name_span));
        let mut ok = true;
        let mut seen = BTreeSet::new();
        for (index, param) in function.params.iter().enumerate() {
            let span = at.span(&format!("{pointer}/params/{index}"));
            if !is_identifier(param) || RESERVED_ROOTS.contains(&param.as_str()) {
                ok = false;
                self.error_help(
                    Code::Function,
                    at,
                    span,
                    format!("invalid param name `{param}` of function `{name}`"),
                    Some(
                        "use lowercase letters, digits and `_` (not `params` or `object`)"
                            .to_owned(),
                    ),
                );
            } else if !seen.insert(param.as_str()) {
                ok = false;
                self.error(
                    Code::Function,
                    at,
                    span,
                    format!("function `{name}` has two params named `{param}`"),
                );
            }
        }
        ok
    }

    /// Compiles a body and checks that it reads its params only.
    fn check_function_body(
        &mut self,
        entry: &Declared<'_>,
        known: &Functions,
    ) -> Option<CompiledBody> {
        let at = entry.at;
        let function = entry.function;
        let pointer = format!("{}/body", entry.pointer);
        let text = function.body.as_str();
        let body = match Expression::compile_with(text, known) {
            Ok(body) => body,
            Err(error) => {
                let span = at.inside(&pointer, text, error.line, error.column);
                self.error(
                    Code::ExpressionSyntax,
                    at,
                    span,
                    format!(
                        "in the body of function `{}`: {}",
                        function.name, error.message
                    ),
                );
                return None;
            }
        };
        let mut ok = true;
        let outside = crate::expr::references_outside_closures(&body);
        for reference in &body.references {
            let root = reference.path[0].as_str();
            if function.params.iter().any(|param| param == root) {
                let in_closure = !outside
                    .iter()
                    .any(|seen| (seen.line, seen.column) == (reference.line, reference.column));
                if in_closure {
                    ok = false;
                    let span = at.inside(&pointer, text, reference.line, reference.column);
                    self.error_help(
                        Code::Function,
                        at,
                        Span::on_line(span.start, root.chars().count()),
                        format!(
                            "a closure in function `{}` reads its param `{root}`, which a closure cannot see",
                            function.name
                        ),
                        Some(format!(
                            "closures capture nothing: pass it in as the closure's first param, `(|{root}, x| ...).curry({root})`"
                        )),
                    );
                }
                continue;
            }
            ok = false;
            let span = at.inside(&pointer, text, reference.line, reference.column);
            let span = Span::on_line(span.start, reference.dotted().chars().count());
            let read = reference.dotted();
            let suggested = reference.path.last().cloned().unwrap_or_default();
            let mut params = function.params.clone();
            params.push(suggested);
            let arguments = if function.params.is_empty() {
                read.clone()
            } else {
                format!("..., {read}")
            };
            self.error_help(
                Code::Function,
                at,
                span,
                format!(
                    "function `{}` reads `{read}`, which is not one of its params ({})",
                    function.name,
                    if function.params.is_empty() {
                        "it has none".to_owned()
                    } else {
                        function.params.join(", ")
                    }
                ),
                Some(format!(
                    "a function reads only its arguments, so it gives the same answer for the same arguments: pass it as one (`params: [{}]`, and call `{}({arguments})`)",
                    params.join(", "),
                    function.name
                )),
            );
        }
        ok.then_some(body)
    }

    /// Functions that call themselves, directly or through others: an error at each cycle, and
    /// the functions in it dropped.
    fn drop_recursive_functions(
        &mut self,
        bodies: &mut BTreeMap<String, (CompiledBody, &Declared<'_>)>,
    ) {
        let mut graph = DiGraph::<&str, ()>::new();
        let indices: BTreeMap<&str, _> = bodies
            .keys()
            .map(|name| (name.as_str(), graph.add_node(name.as_str())))
            .collect();
        for (name, (body, _)) in bodies.iter() {
            for called in &body.direct_calls {
                if let Some(target) = indices.get(called.as_str()) {
                    graph.add_edge(indices[name.as_str()], *target, ());
                }
            }
        }
        let found: Vec<Vec<String>> = cycles(&graph)
            .into_iter()
            .map(|cycle| cycle.into_iter().map(str::to_owned).collect())
            .collect();
        for cycle in found {
            let first = &cycle[0];
            let path = cycle
                .iter()
                .chain(std::iter::once(first))
                .cloned()
                .collect::<Vec<_>>()
                .join(" -> ");
            if let Some((_, entry)) = bodies.get(first) {
                let message = if cycle.len() == 1 {
                    format!("function `{first}` calls itself")
                } else {
                    format!("functions call each other in a cycle: {path}")
                };
                self.error_help(
                    Code::Cycle,
                    entry.at,
                    entry.at.span(&format!("{}/name", entry.pointer)),
                    message,
                    Some("expressions have no loops and functions no recursion; work over a list with `map`, `filter` or `reduce`".to_owned()),
                );
            }
            for name in &cycle {
                bodies.remove(name);
            }
        }
    }
}
