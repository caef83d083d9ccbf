//! Rhai expressions and `${...}` templates.
//!
//! One function builds the engine ([`sandboxed_engine`]): no modules, no `eval`, no file or
//! network access (Rhai has none without packages that we do not load), and limits on
//! operations, call depth, expression depth and string/array/map sizes, so a runbook can never
//! hang or exhaust the engine. Expressions are compiled once into an AST when a runbook is
//! compiled; the names they read (`openbao.status.sealed`, `params.namespace`) are pulled out
//! of the AST so the checker can tell the author about facts and params that do not exist.
//!
//! What an expression prints (`print`, `debug`) goes to the log through the redactor of the run
//! that evaluates it, so `print(params.password)` logs `<redacted>`.
//!
//! Nothing an expression calls may block the thread or read the world outside the run:
//! Rhai's `sleep` and `timestamp` are refused when an expression is compiled (so `validate`
//! names them) and fail if called anyway. [`evaluate`] stops an evaluation at its deadline or
//! when its caller gives up (a step's timeout), through Rhai's progress callback; the executor
//! runs it on a blocking thread, so a slow expression never holds up the async runtime that
//! serves HTTP.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rhai::{ASTNode, Dynamic, Engine, EvalAltResult, Expr, OptimizationLevel, Scope, AST};

use crate::redact::Redactor;

/// Operations one evaluation may take before it is stopped.
pub const MAX_OPERATIONS: u64 = 200_000;

/// How long one evaluation may take at most, whatever the step around it allows.
pub const MAX_EVALUATION_TIME: Duration = Duration::from_secs(10);

/// Functions of Rhai's standard library that expressions may not call: `sleep` blocks the
/// thread (and ignored the step's timeout), `timestamp` reads the machine's clock, which a
/// simulated run's clock does not control.
pub const FORBIDDEN_FUNCTIONS: &[&str] = &["sleep", "timestamp"];

/// Methods of Rhai's standard library that change their value in place and give back nothing:
/// in an expression (`verify: p.events.sort() == ...`) the result is always `()`, so they are
/// refused when the expression is compiled, with what to use instead.
pub const IN_PLACE_METHODS: &[(&str, &str)] = &[
    ("sort", "use `sorted()`, or `order_by(|a, b| ...)`"),
    ("reverse", "use `reversed()`"),
    ("replace", "use `replaced(FROM, TO)`"),
    ("trim", "use `trimmed()`"),
    ("make_upper", "use `to_upper()`"),
    ("make_lower", "use `to_lower()`"),
    ("push", "use `+` (`list + [item]`)"),
    ("append", "use `+`"),
    ("insert", "build the value with `+`"),
    ("clear", "use `[]` or `\"\"`"),
    ("truncate", "use `extract(0, N)` or `sub_string(0, N)`"),
    ("pad", "build the value with `+`"),
    ("dedup", "use `filter(...)`"),
    ("retain", "use `filter(...)`"),
    ("crop", "use `extract(...)` or `sub_string(...)`"),
    ("chop", "use `extract(...)` or `sub_string(...)`"),
    ("splice", "use `extract(...)` and `+`"),
];

/// Memory one evaluation may hold at once, all its values together (enforced where the
/// binary installs [`crate::alloc::CountingAllocator`]).
pub const MAX_EVALUATION_MEMORY: isize = 64 << 20;

/// How often (in operations) an evaluation checks its deadline.
const CHECK_EVERY: u64 = 256;

/// When an evaluation must stop: at `deadline`, or once `cancelled` is raised.
#[derive(Clone, Debug)]
pub struct Budget {
    pub deadline: Instant,
    pub cancelled: Arc<AtomicBool>,
    /// What `now()` answers: the run's clock (the simulator's paused clock in `runbook test`);
    /// `None` reads this machine's clock.
    pub now: Option<std::time::SystemTime>,
}

impl Budget {
    /// A budget of [`MAX_EVALUATION_TIME`] from now, cancelled by nobody.
    pub fn standard() -> Self {
        Self {
            deadline: Instant::now() + MAX_EVALUATION_TIME,
            cancelled: Arc::new(AtomicBool::new(false)),
            now: None,
        }
    }

    fn exhausted(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed) || Instant::now() >= self.deadline
    }
}

thread_local! {
    /// The budget of the evaluation running on this thread, read by the progress callback.
    static BUDGET: RefCell<Option<Budget>> = const { RefCell::new(None) };
    /// The variables of the evaluation running on this thread (facts, `params`, `object`), as
    /// closures read them: see [`read_outer`].
    static OUTER: RefCell<Vec<(String, Dynamic)>> = const { RefCell::new(Vec::new()) };
    /// What this thread held when the running evaluation started (`None`: no evaluation).
    static HELD_AT_START: std::cell::Cell<Option<isize>> = const { std::cell::Cell::new(None) };
    /// The redactor of the run whose evaluation runs on this thread, read by the `print` and
    /// `debug` callbacks: the engine is one for every run, so the run is found here.
    static REDACTOR: RefCell<Option<Arc<Redactor>>> = const { RefCell::new(None) };
    /// The `now()` of the evaluation running on this thread (see [`Budget::now`]).
    static NOW: std::cell::Cell<Option<std::time::SystemTime>> = const { std::cell::Cell::new(None) };
}

/// Whether the running evaluation holds more than [`MAX_EVALUATION_MEMORY`].
fn over_memory() -> bool {
    HELD_AT_START.with(|start| {
        start.get().is_some_and(|start| {
            crate::alloc::held_by_this_thread().wrapping_sub(start) > MAX_EVALUATION_MEMORY
        })
    })
}

/// What a closure reads of the expression's variables (`p.events.filter(|e| e.at >
/// p.deployed)`): a copy, handed out by the engine's variable resolver. Rhai's own closures
/// capture by sharing the variable, and a method of `p.events` running while its closure reads
/// `p` was a "Data race detected" at run time; the engine is built without them
/// (`no_closure`), so an anonymous function reads its outer variables here. Only names the
/// parser could not place (index 0) inside a function call (call level > 0) come here: the
/// closure's own parameters are locals, and the expression itself reads its scope.
fn read_outer(name: &str, index: usize, call_level: usize) -> Option<Dynamic> {
    if index > 0 || call_level == 0 {
        return None;
    }
    OUTER.with(|outer| {
        outer
            .borrow()
            .iter()
            .find(|(variable, _)| variable == name)
            .map(|(_, value)| value.clone())
    })
}

/// Forgets this thread's evaluation when it ends, however it ends.
struct Evaluating;

impl Drop for Evaluating {
    fn drop(&mut self) {
        BUDGET.with(|slot| *slot.borrow_mut() = None);
        REDACTOR.with(|slot| *slot.borrow_mut() = None);
        HELD_AT_START.with(|start| start.set(None));
        OUTER.with(|slot| slot.borrow_mut().clear());
        NOW.with(|now| now.set(None));
    }
}

/// Evaluates `ast` with `scope` on this thread, within `budget`: past it the evaluation stops
/// with an error saying so. What it prints is redacted by `redactor` (the run's); without one
/// (a plan being rendered), by the credential patterns alone.
pub fn evaluate<T: rhai::Variant + Clone>(
    scope: &mut Scope<'_>,
    ast: &AST,
    budget: &Budget,
    redactor: Option<&Arc<Redactor>>,
) -> Result<T, Box<EvalAltResult>> {
    BUDGET.with(|slot| *slot.borrow_mut() = Some(budget.clone()));
    REDACTOR.with(|slot| *slot.borrow_mut() = redactor.cloned());
    NOW.with(|now| now.set(budget.now));
    // Only an expression with a closure needs its variables where closures can read them.
    if ast.iter_fn_def().next().is_some() {
        let outer: Vec<(String, Dynamic)> = scope
            .iter_raw()
            .map(|(name, _, value)| (name.to_owned(), value.clone()))
            .collect();
        OUTER.with(|slot| *slot.borrow_mut() = outer);
    }
    HELD_AT_START.with(|start| start.set(Some(crate::alloc::held_by_this_thread())));
    let evaluating = Evaluating;
    let result = sandboxed_engine().eval_ast_with_scope::<T>(scope, ast);
    drop(evaluating);
    result.map_err(|error| {
        // A stop raised in a closure comes wrapped in the calls it was in.
        let EvalAltResult::ErrorTerminated(why, position) = error.unwrap_inner() else {
            return error;
        };
        let message = if why.to_string() == "memory" {
            format!(
                "the evaluation was stopped: its values took more than {} MiB",
                MAX_EVALUATION_MEMORY >> 20
            )
        } else if budget.cancelled.load(Ordering::Relaxed) {
            "the evaluation was stopped: its step ran out of time".to_owned()
        } else {
            format!(
                "the evaluation took longer than {} s and was stopped",
                MAX_EVALUATION_TIME.as_secs()
            )
        };
        Box::new(EvalAltResult::ErrorRuntime(
            Dynamic::from(message),
            *position,
        ))
    })
}

/// A value as text, the one form for every place a value becomes text: `${value}` in a
/// template, `"text" + value`, `` `...${value}` ``, `value.to_string()` and `print(value)`. A
/// string is itself; a map, a list and everything else are compact JSON (`{"k":"v"}`,
/// `["a","b"]`), never Rhai's own `#{"k": "v"}`, which nothing outside Rhai reads.
pub fn text_of(value: &Dynamic) -> Result<String, Box<EvalAltResult>> {
    if value.is_string() {
        return Ok(value.to_string());
    }
    Ok(
        match rhai::serde::from_dynamic::<serde_json::Value>(value)? {
            serde_json::Value::String(text) => text,
            other => other.to_string(),
        },
    )
}

/// Maps and lists print as JSON inside expressions too (see [`text_of`]). Rhai's `+` with a
/// string, its interpolation and `print` call `to_string`, which is overridden for the two
/// collection types; `+` is overridden as well, because the optimizer folds `"a" + #{...}` of
/// constants with the packages' `+`, which would not see the `to_string` override.
fn register_json_printing(engine: &mut Engine) {
    type Printed = Result<String, Box<EvalAltResult>>;
    engine.register_fn("to_string", |map: &mut rhai::Map| -> Printed {
        text_of(&Dynamic::from_map(map.clone()))
    });
    engine.register_fn("to_string", |list: &mut rhai::Array| -> Printed {
        text_of(&Dynamic::from_array(list.clone()))
    });
    engine.register_fn("+", |text: &str, map: rhai::Map| -> Printed {
        Ok(format!("{text}{}", text_of(&Dynamic::from_map(map))?))
    });
    engine.register_fn("+", |map: rhai::Map, text: &str| -> Printed {
        Ok(format!("{}{text}", text_of(&Dynamic::from_map(map))?))
    });
    engine.register_fn("+", |text: &str, list: rhai::Array| -> Printed {
        Ok(format!("{text}{}", text_of(&Dynamic::from_array(list))?))
    });
    engine.register_fn("+", |list: rhai::Array, text: &str| -> Printed {
        Ok(format!("{}{text}", text_of(&Dynamic::from_array(list))?))
    });
}

/// What expressions use instead of the [`IN_PLACE_METHODS`]: the same, giving back a new value.
fn register_pure_helpers(engine: &mut Engine) {
    register_json_printing(engine);
    engine.register_fn(
        "sorted",
        |list: rhai::Array| -> Result<rhai::Array, Box<EvalAltResult>> {
            let mut list = list;
            let mut incomparable = false;
            list.sort_by(|a, b| {
                compare(a, b).unwrap_or_else(|| {
                    incomparable = true;
                    std::cmp::Ordering::Equal
                })
            });
            if incomparable {
                return Err("`sorted()` sorts numbers, strings or booleans, all of one kind; use `order_by(|a, b| ...)` for anything else".into());
            }
            Ok(list)
        },
    );
    engine.register_fn("reversed", |list: rhai::Array| -> rhai::Array {
        list.into_iter().rev().collect()
    });
    engine.register_fn("trimmed", |text: &str| -> String { text.trim().to_owned() });
    register_time_and_encoding(engine);
    engine.register_fn("replaced", |text: &str, from: &str, to: &str| -> String {
        text.replace(from, to)
    });
}

/// Time and encoding (issue 15): times are seconds since 1970 (integers), durations seconds, so
/// they add, subtract and compare as numbers; `now()` is the run's clock, so a simulated run on
/// a paused clock gets the simulator's time.
fn register_time_and_encoding(engine: &mut Engine) {
    type Fallible<T> = Result<T, Box<EvalAltResult>>;
    fn seconds(time: std::time::SystemTime) -> rhai::INT {
        match time.duration_since(std::time::UNIX_EPOCH) {
            Ok(after) => rhai::INT::try_from(after.as_secs()).unwrap_or(rhai::INT::MAX),
            Err(before) => {
                -rhai::INT::try_from(before.duration().as_secs()).unwrap_or(rhai::INT::MAX)
            }
        }
    }
    engine.register_fn("now", || -> rhai::INT {
        seconds(
            NOW.with(std::cell::Cell::get)
                .unwrap_or_else(std::time::SystemTime::now),
        )
    });
    engine.register_fn("parse_time", |text: &str| -> Fallible<rhai::INT> {
        text.trim()
            .parse::<jiff::Timestamp>()
            .map(|time| time.as_second())
            .map_err(|e| format!("parse_time(\"{text}\"): not an RFC 3339 time such as 2026-12-04T03:00:00Z: {e}").into())
    });
    engine.register_fn("duration", |text: &str| -> Fallible<rhai::INT> {
        humantime::parse_duration(text.trim())
            .map_err(|e| {
                format!("duration(\"{text}\"): not a duration such as 90m or 2h30m: {e}").into()
            })
            .map(|length| rhai::INT::try_from(length.as_secs()).unwrap_or(rhai::INT::MAX))
    });
    engine.register_fn(
        "format_time",
        |time: rhai::INT, format: &str| -> Fallible<String> {
            let stamp = jiff::Timestamp::from_second(time)
                .map_err(|e| format!("format_time({time}, ...): not a time: {e}"))?;
            jiff::fmt::strtime::format(format, stamp)
                .map_err(|e| format!("format_time(_, \"{format}\"): {e}").into())
        },
    );
    engine.register_fn("base64_encode", |text: &str| -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(text.as_bytes())
    });
    engine.register_fn("base64_decode", |text: &str| -> Fallible<String> {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| format!("base64_decode: not base64: {e}"))?;
        let decoded = String::from_utf8(bytes)
            .map_err(|_| "base64_decode: the decoded bytes are not UTF-8 text".to_owned())?;
        // A secret stays secret decoded: what decodes a known secret is known too.
        REDACTOR.with(|slot| {
            if let Some(redactor) = slot.borrow().as_ref() {
                if redactor.contains_known(text) {
                    redactor.add(&decoded);
                }
            }
        });
        Ok(decoded)
    });
}

/// The natural order of two values of one primitive kind (integers and floats compare as
/// numbers).
fn compare(a: &Dynamic, b: &Dynamic) -> Option<std::cmp::Ordering> {
    if let (Ok(x), Ok(y)) = (a.as_int(), b.as_int()) {
        return Some(x.cmp(&y));
    }
    let number = |value: &Dynamic| {
        value
            .as_float()
            .ok()
            .or_else(|| value.as_int().ok().map(|n| n as f64))
    };
    if let (Some(x), Some(y)) = (number(a), number(b)) {
        return x.partial_cmp(&y);
    }
    if let (Some(x), Some(y)) = (
        a.read_lock::<rhai::ImmutableString>(),
        b.read_lock::<rhai::ImmutableString>(),
    ) {
        return Some(x.as_str().cmp(y.as_str()));
    }
    if let (Ok(x), Ok(y)) = (a.as_bool(), b.as_bool()) {
        return Some(x.cmp(&y));
    }
    None
}

/// The one engine every expression is compiled and evaluated with.
pub fn sandboxed_engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut engine = Engine::new_raw();
        use rhai::packages::Package as _;
        engine.register_global_module(rhai::packages::StandardPackage::new().as_shared_module());
        engine
            .set_optimization_level(OptimizationLevel::Simple)
            .set_max_operations(MAX_OPERATIONS)
            .set_max_call_levels(16)
            .set_max_expr_depths(64, 32)
            .set_max_string_size(1 << 20)
            .set_max_array_size(10_000)
            .set_max_map_size(10_000)
            .set_max_functions(MAX_CLOSURES)
            .set_allow_looping(false)
            .set_allow_shadowing(false);
        engine.disable_symbol("eval");
        // Compiling refuses these already (see `forbidden_call`); this is for an AST that was
        // not compiled by us.
        for name in FORBIDDEN_FUNCTIONS {
            let refuse = move || -> Result<(), Box<EvalAltResult>> {
                Err(format!("`{name}` is not available in runbook expressions").into())
            };
            engine.register_fn(*name, refuse);
            engine.register_fn(*name, move |_: rhai::INT| refuse());
            engine.register_fn(*name, move |_: rhai::FLOAT| refuse());
        }
        register_pure_helpers(&mut engine);
        // Rhai marks `on_var` deprecated only to say its signature may change ("This API is
        // NOT deprecated, but it is considered volatile"); the pinned version is what we test.
        #[expect(deprecated, reason = "rhai's volatile-API marker, not a deprecation")]
        engine.on_var(|name, index, context| Ok(read_outer(name, index, context.call_level())));
        engine.on_progress(|operations| {
            // Every operation: one operation can build a value of up to the size limits, so
            // the memory held is checked before the next one adds more.
            if over_memory() {
                return Some(Dynamic::from("memory"));
            }
            if operations % CHECK_EVERY != 0 {
                return None;
            }
            BUDGET.with(|slot| {
                slot.borrow()
                    .as_ref()
                    .filter(|budget| budget.exhausted())
                    .map(|_| Dynamic::from("deadline"))
            })
        });
        engine.on_print(|text| {
            let text = redacted(text);
            tracing::info!(target: "runbook::expr", text = text.as_str(), "Expression printed.");
        });
        engine.on_debug(|text, _, _| {
            let text = redacted(text);
            tracing::debug!(target: "runbook::expr", text = text.as_str(), "Expression debug.");
        });
        engine
    })
}

/// What an expression printed, as the run evaluating it on this thread may show it.
fn redacted(text: &str) -> String {
    static PATTERNS_ONLY: OnceLock<Redactor> = OnceLock::new();
    REDACTOR.with(|slot| match slot.borrow().as_ref() {
        Some(redactor) => redactor.redact(text),
        None => PATTERNS_ONLY.get_or_init(Redactor::new).redact(text),
    })
}

/// A compiled expression and what it reads.
#[derive(Clone, Debug)]
pub struct Expression {
    pub source: String,
    /// The expression, with the library functions it calls (and those they call) merged in.
    pub ast: Arc<AST>,
    pub references: Vec<Reference>,
    /// The library functions it calls, directly or through others, by name.
    pub functions: Vec<String>,
}

/// The most closures (`|x| ...`) one expression may hold: Rhai compiles each into a function,
/// and an engine limit on functions keeps one expression from growing without bound.
pub const MAX_CLOSURES: usize = 16;

/// The functions of the catalog's fact libraries (`functions:`), as expressions call them:
/// each one's arity, the library functions it calls, and its compiled definition, merged into
/// the AST of every expression that calls it (so a library's functions never count against
/// one expression's [`MAX_CLOSURES`]).
#[derive(Clone, Debug, Default)]
pub struct Functions {
    arity: BTreeMap<String, usize>,
    calls: BTreeMap<String, Vec<String>>,
    definitions: BTreeMap<String, Arc<AST>>,
    /// Declared but refused by the checker: a call of one is an error of its own kind.
    broken: BTreeSet<String>,
}

impl Functions {
    /// Functions known by name and arity only, to check bodies that call each other.
    pub fn declared(arity: BTreeMap<String, usize>) -> Self {
        Self {
            arity,
            ..Self::default()
        }
    }

    pub fn arity(&self, name: &str) -> Option<usize> {
        self.arity.get(name).copied()
    }

    pub fn is_empty(&self) -> bool {
        self.arity.is_empty()
    }

    /// Adds a function whose body compiled (with [`Expression::compile_with`]): defines it as a
    /// Rhai function `fn NAME(PARAMS) { BODY }`.
    pub fn define(
        &mut self,
        name: &str,
        params: &[String],
        body: &CompiledBody,
    ) -> Result<(), ExpressionError> {
        let script = format!("fn {name}({}) {{\n{}\n}}", params.join(", "), body.source);
        let ast = sandboxed_engine()
            .compile(&script)
            .map_err(|error| compile_error(&error))?;
        self.arity.insert(name.to_owned(), params.len());
        self.calls
            .insert(name.to_owned(), body.direct_calls.clone());
        self.definitions.insert(name.to_owned(), Arc::new(ast));
        Ok(())
    }

    /// Records functions that were declared but failed their check.
    pub fn mark_broken(&mut self, names: impl IntoIterator<Item = String>) {
        self.broken.extend(names);
    }

    /// `names` and every function they call, through others too.
    fn closure(&self, names: &[String]) -> Vec<String> {
        let mut all = BTreeSet::new();
        let mut pending: Vec<String> = names.to_vec();
        while let Some(name) = pending.pop() {
            if all.insert(name.clone()) {
                pending.extend(self.calls.get(&name).into_iter().flatten().cloned());
            }
        }
        all.into_iter().collect()
    }

    /// The library functions `name` calls, directly.
    pub fn calls_of(&self, name: &str) -> &[String] {
        self.calls.get(name).map_or(&[], Vec::as_slice)
    }
}

fn compile_error(error: &rhai::ParseError) -> ExpressionError {
    let position = error.position();
    let message = if matches!(error.err_type(), rhai::ParseErrorType::TooManyFunctions) {
        format!(
            "this expression holds more than {MAX_CLOSURES} closures (`|x| ...`), the most one expression may hold; move the repeated part into a function of a fact library (`functions:` in a `kind: FactLibrary`) and call it, or split the expression into several `expr` facts"
        )
    } else {
        error.err_type().to_string()
    };
    ExpressionError {
        message,
        line: position.line().unwrap_or(1),
        column: position.position().unwrap_or(1),
    }
}

/// A dotted name read by an expression, such as `openbao.status.sealed`, with its 1-based
/// line and column inside the expression text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    pub path: Vec<String>,
    pub line: usize,
    pub column: usize,
}

impl Reference {
    pub fn dotted(&self) -> String {
        self.path.join(".")
    }
}

/// A compile error inside an expression, at a 1-based line and column of its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpressionError {
    pub message: String,
    pub line: usize,
    pub column: usize,
}

impl Expression {
    /// The params it reads, by name (`params.pod` reads `pod`).
    pub fn params_read(&self) -> impl Iterator<Item = &str> {
        self.references
            .iter()
            .filter_map(|reference| match reference.path.as_slice() {
                [root, name, ..] if root == "params" => Some(name.as_str()),
                _ => None,
            })
    }

    /// Compiles `text`, which may call no library function.
    pub fn compile(text: &str) -> Result<Self, ExpressionError> {
        Self::compile_with(text, &Functions::default()).map(|compiled| compiled.expression)
    }

    /// Compiles `text`, which may call the library's `functions`.
    pub fn compile_with(
        text: &str,
        functions: &Functions,
    ) -> Result<CompiledBody, ExpressionError> {
        let engine = sandboxed_engine();
        let ast = engine
            .compile_expression(text)
            .map_err(|error| compile_error(&error))?;
        if let Some(error) = forbidden_call(&ast, functions) {
            return Err(error);
        }
        let references = references(&ast);
        let direct_calls = library_calls(&ast, functions);
        let called = functions.closure(&direct_calls);
        let mut merged = AST::empty();
        for name in &called {
            if let Some(definition) = functions.definitions.get(name) {
                merged.combine((**definition).clone());
            }
        }
        let ast = if called.is_empty() {
            ast
        } else {
            merged.merge(&ast)
        };
        Ok(CompiledBody {
            expression: Self {
                source: text.to_owned(),
                ast: Arc::new(ast),
                references,
                functions: called,
            },
            direct_calls,
        })
    }
}

/// An expression as [`Expression::compile_with`] compiles it, with the library functions it
/// calls itself (not through others), which a function's body needs to find recursion.
#[derive(Clone, Debug)]
pub struct CompiledBody {
    pub expression: Expression,
    pub direct_calls: Vec<String>,
}

impl std::ops::Deref for CompiledBody {
    type Target = Expression;

    fn deref(&self) -> &Expression {
        &self.expression
    }
}

/// The library functions `ast` calls itself, in name order.
fn library_calls(ast: &AST, functions: &Functions) -> Vec<String> {
    let mut found = BTreeSet::new();
    ast.walk(&mut |path: &[ASTNode]| {
        let call = match path.last() {
            Some(ASTNode::Expr(Expr::FnCall(call, _))) => Some(call),
            Some(ASTNode::Stmt(rhai::Stmt::FnCall(call, _))) => Some(call),
            _ => None,
        };
        if let Some(call) = call {
            if functions.arity(call.name.as_str()).is_some() {
                found.insert(call.name.to_string());
            }
        }
        true
    });
    found.into_iter().collect()
}

/// The functions and methods expressions may call: every one the engine has (its packages and
/// our helpers), and Rhai's keywords that are called like functions. A call of anything else
/// (`now()`, a typo) passed `validate` and failed at run time.
fn known_functions() -> &'static BTreeSet<String> {
    static KNOWN: OnceLock<BTreeSet<String>> = OnceLock::new();
    KNOWN.get_or_init(|| {
        let mut names: BTreeSet<String> = sandboxed_engine()
            .gen_fn_signatures(true)
            .iter()
            .filter_map(|signature| signature.split('(').next())
            .map(str::to_owned)
            .collect();
        for keyword in [
            "Fn",
            "call",
            "curry",
            "type_of",
            "print",
            "debug",
            "is_def_var",
            "is_def_fn",
            "is_shared",
        ] {
            names.insert(keyword.to_owned());
        }
        for name in FORBIDDEN_FUNCTIONS {
            names.remove(*name);
        }
        names
    })
}

/// Whether `name` is a function every expression has (Rhai's and ours): a library function may
/// not take its name.
pub fn is_builtin_function(name: &str) -> bool {
    known_functions().contains(name) || FORBIDDEN_FUNCTIONS.contains(&name)
}

/// The first call of a [`FORBIDDEN_FUNCTIONS`] function, an [`IN_PLACE_METHODS`] method, a
/// function that does not exist, or a library function with the wrong number of arguments or
/// called as a method, as a compile error at its position.
fn forbidden_call(ast: &AST, functions: &Functions) -> Option<ExpressionError> {
    let mut found = None;
    ast.walk(&mut |path: &[ASTNode]| {
        let call = match path.last() {
            Some(ASTNode::Expr(Expr::FnCall(call, position))) => Some((call, *position)),
            Some(ASTNode::Stmt(rhai::Stmt::FnCall(call, position))) => Some((call, *position)),
            _ => None,
        };
        if let Some(ASTNode::Expr(Expr::MethodCall(call, position))) = path.last() {
            let name = call.name.as_str();
            if let Some((_, instead)) = IN_PLACE_METHODS.iter().find(|(method, _)| *method == name) {
                found = Some(ExpressionError {
                    message: format!(
                        "`{name}` changes its value in place and gives back nothing, so an expression cannot use its result; {instead}"
                    ),
                    line: position.line().unwrap_or(1),
                    column: position.position().unwrap_or(1),
                });
                return false;
            }
        }
        if let Some(ASTNode::Expr(Expr::MethodCall(method, position))) = path.last() {
            let name = method.name.as_str();
            if let Some(arity) = functions.arity(name) {
                if !known_functions().contains(name) {
                    let params = (0..arity).map(|i| format!("x{}", i + 1)).collect::<Vec<_>>().join(", ");
                    found = Some(ExpressionError {
                        message: format!(
                            "`{name}` is a library function: call it as `{name}({params})`, not as a method"
                        ),
                        line: position.line().unwrap_or(1),
                        column: position.position().unwrap_or(1),
                    });
                    return false;
                }
            }
        }
        if let Some((call, position)) = call {
            let name = call.name.as_str();
            if functions.broken.contains(name) {
                found = Some(ExpressionError {
                    message: format!(
                        "library function `{name}` has an error, reported where it is defined"
                    ),
                    line: position.line().unwrap_or(1),
                    column: position.position().unwrap_or(1),
                });
                return false;
            }
            if let Some(arity) = functions.arity(name) {
                if call.args.len() != arity {
                    found = Some(ExpressionError {
                        message: format!(
                            "library function `{name}` takes {arity} argument{}, not {}",
                            if arity == 1 { "" } else { "s" },
                            call.args.len()
                        ),
                        line: position.line().unwrap_or(1),
                        column: position.position().unwrap_or(1),
                    });
                    return false;
                }
                return true;
            }
        }
        let named = match path.last() {
            Some(ASTNode::Expr(Expr::MethodCall(call, position))) => Some((call, *position)),
            _ => call,
        };
        if let Some((call, position)) = named {
            let name = call.name.as_str();
            let identifier = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if identifier
                && !FORBIDDEN_FUNCTIONS.contains(&name)
                && !known_functions().contains(name)
            {
                let hint = crate::diagnostic::did_you_mean(
                    name,
                    known_functions()
                        .iter()
                        .chain(functions.arity.keys())
                        .map(String::as_str),
                )
                .map(|hint| format!("; {hint}"))
                .unwrap_or_default();
                found = Some(ExpressionError {
                    message: format!("there is no function `{name}` in runbook expressions{hint}"),
                    line: position.line().unwrap_or(1),
                    column: position.position().unwrap_or(1),
                });
                return false;
            }
        }
        if let Some((call, position)) = call {
            let name = call.name.as_str();
            if FORBIDDEN_FUNCTIONS.contains(&name) {
                found = Some(ExpressionError {
                    message: format!(
                        "`{name}` is not available in runbook expressions: it {}",
                        if name == "sleep" {
                            "would block the run; use a `verify` step with an `interval`, or `wait`"
                        } else {
                            "reads this machine's clock, which a dry-run or a simulated run cannot control"
                        }
                    ),
                    line: position.line().unwrap_or(1),
                    column: position.position().unwrap_or(1),
                });
                return false;
            }
        }
        true
    });
    found
}

/// Every variable read and the chain of properties after it (`a.b.c` -> `[a, b, c]`), in the
/// expression and in the closures it holds.
///
/// A closure is compiled into a function whose parameters are the variables it captures
/// followed by the ones it declares (`|pod| pod.ready == want.ready` becomes
/// `fn anon(want, pod)`, created by `curry(Fn("anon"), want)`). Inside a closure, only the
/// declared parameters are locals: a captured `want.ready` is a read of the fact. Outside
/// every closure, nothing is local, so a closure parameter named like a fact root does not
/// hide that fact elsewhere in the expression.
fn references(ast: &AST) -> Vec<Reference> {
    references_in(ast, true)
}

/// The names `expression` reads outside its closures: what is left out of
/// [`Expression::references`] here is read inside a closure, where a function's own params
/// cannot be seen (closures capture nothing; see [`read_outer`]).
pub fn references_outside_closures(expression: &Expression) -> Vec<Reference> {
    references_in(&expression.ast, false)
}

fn references_in(ast: &AST, closures: bool) -> Vec<Reference> {
    // How many leading parameters of each closure are captured variables.
    let mut captured: BTreeMap<String, usize> = BTreeMap::new();
    ast.walk(&mut |path: &[ASTNode]| {
        let call = match path.last() {
            Some(ASTNode::Expr(Expr::FnCall(call, _))) => Some(call),
            Some(ASTNode::Stmt(rhai::Stmt::FnCall(call, _))) => Some(call),
            _ => None,
        };
        if let Some(call) = call {
            if call.name.as_str() == "curry" {
                if let Some(Expr::DynamicConstant(value, _)) = call.args.first() {
                    if let Some(pointer) = value.read_lock::<rhai::FnPtr>() {
                        captured.insert(pointer.fn_name().to_owned(), call.args.len() - 1);
                    }
                }
            }
        }
        true
    });
    let declared: BTreeSet<String> = ast
        .iter_fn_def()
        .flat_map(|function| {
            let skip = captured.get(function.name.as_str()).copied().unwrap_or(0);
            function
                .params
                .iter()
                .skip(skip)
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    let mut found: BTreeMap<(usize, usize), Vec<String>> = BTreeMap::new();
    let mut record = |path: &[ASTNode], locals: &BTreeSet<String>| {
        let Some(ASTNode::Expr(expr)) = path.last() else {
            return true;
        };
        let (root, chain) = match expr {
            Expr::Variable(variable, _, position) => {
                ((variable.1.to_string(), *position), Vec::new())
            }
            Expr::Dot(binary, _, _) | Expr::Index(binary, _, _) => {
                let Expr::Variable(variable, _, position) = &binary.lhs else {
                    return true;
                };
                let mut chain = Vec::new();
                if matches!(expr, Expr::Dot(..)) {
                    property_chain(&binary.rhs, &mut chain);
                }
                ((variable.1.to_string(), *position), chain)
            }
            _ => return true,
        };
        let (name, position) = root;
        if locals.contains(&name) {
            return true;
        }
        let key = (
            position.line().unwrap_or(1),
            position.position().unwrap_or(1),
        );
        let mut full = vec![name];
        full.extend(chain);
        let entry = found.entry(key).or_default();
        if full.len() > entry.len() {
            *entry = full;
        }
        true
    };
    // The expression itself, where nothing is local; then every node again, closure bodies
    // included, where the closures' declared params are locals. (rhai names no type for a
    // function body outside the crate, so the second walk is over the whole AST; it can only
    // add references.) A captured variable is passed to `curry` at the position where the
    // closure reads it, so its longest chain (`want.name`) is the one kept.
    let outside = BTreeSet::new();
    for statement in ast.statements() {
        statement.walk(&mut Vec::new(), &mut |path: &[ASTNode]| {
            record(path, &outside)
        });
    }
    if closures {
        ast.walk(&mut |path: &[ASTNode]| record(path, &declared));
    }
    found
        .into_iter()
        .map(|((line, column), path)| Reference { path, line, column })
        .collect()
}

fn property_chain(expr: &Expr, chain: &mut Vec<String>) {
    match expr {
        Expr::Property(property, _) => chain.push(property.2.to_string()),
        Expr::Dot(binary, _, _) => {
            if let Expr::Property(property, _) = &binary.lhs {
                chain.push(property.2.to_string());
                property_chain(&binary.rhs, chain);
            } else if let Expr::Index(inner, _, _) = &binary.lhs {
                if let Expr::Property(property, _) = &inner.lhs {
                    chain.push(property.2.to_string());
                }
            }
        }
        Expr::Index(binary, _, _) => {
            if let Expr::Property(property, _) = &binary.lhs {
                chain.push(property.2.to_string());
            }
        }
        _ => {}
    }
}

/// A string with `${expression}` holes. `$${` writes a literal `${`.
#[derive(Clone, Debug)]
pub struct Template {
    pub source: String,
    pub parts: Vec<TemplatePart>,
}

#[derive(Clone, Debug)]
pub enum TemplatePart {
    Text(String),
    /// The expression and the character offset of its text inside the template.
    Expr(Expression, usize),
}

/// A template that failed to parse or compile: the message and the character offset in the
/// template where the problem is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateError {
    pub message: String,
    pub offset: usize,
    /// For errors inside a hole: the expression text and the error within it.
    pub inner: Option<(String, ExpressionError)>,
}

impl Template {
    pub fn literal(text: &str) -> Self {
        Self {
            source: text.to_owned(),
            parts: vec![TemplatePart::Text(text.to_owned())],
        }
    }

    pub fn is_literal(&self) -> bool {
        self.parts
            .iter()
            .all(|part| matches!(part, TemplatePart::Text(_)))
    }

    /// The expression of a template that is exactly one `${...}`, nothing before or after it
    /// (not even a space). Rendered into a JSON value, such a template keeps its value's type
    /// (a number, a boolean, a list, a map); any other template is text (issue 15, item 7).
    pub fn whole_expression(&self) -> Option<&Expression> {
        match self.parts.as_slice() {
            [TemplatePart::Expr(expression, _)]
                if self.source.starts_with("${") && self.source.ends_with('}') =>
            {
                Some(expression)
            }
            _ => None,
        }
    }

    pub fn expressions(&self) -> impl Iterator<Item = &Expression> {
        self.parts.iter().filter_map(|part| match part {
            TemplatePart::Expr(expression, _) => Some(expression),
            TemplatePart::Text(_) => None,
        })
    }

    /// The params its holes read (`params.NAME`), each with the character offset of the
    /// expression that reads it, in order.
    pub fn params_read(&self) -> Vec<(&str, usize)> {
        let mut read = Vec::new();
        for part in &self.parts {
            if let TemplatePart::Expr(expression, offset) = part {
                for name in expression.params_read() {
                    if !read.contains(&(name, *offset)) {
                        read.push((name, *offset));
                    }
                }
            }
        }
        read
    }

    /// The params whose value opens the text this template renders: those read by a hole at
    /// its very start (`${params.pod}`, `${params.pod}-0`), not after text (`--pod=${...}`).
    /// As a command's argument, such a value decides whether the argument is an option.
    pub fn leading_params(&self) -> BTreeSet<&str> {
        match self.parts.first() {
            Some(TemplatePart::Expr(expression, _)) => expression.params_read().collect(),
            _ => BTreeSet::new(),
        }
    }

    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        Self::parse_with(text, &Functions::default())
    }

    /// Parses `text`, whose holes may call the library's `functions`.
    pub fn parse_with(text: &str, functions: &Functions) -> Result<Self, TemplateError> {
        let characters: Vec<char> = text.chars().collect();
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut index = 0;
        while index < characters.len() {
            let rest = &characters[index..];
            if rest.starts_with(&['$', '$', '{']) {
                literal.push_str("${");
                index += 3;
            } else if rest.starts_with(&['$', '{']) {
                let start = index + 2;
                let end = closing_brace(&characters, start).ok_or_else(|| TemplateError {
                    message: "`${` is never closed with `}`".to_owned(),
                    offset: index,
                    inner: None,
                })?;
                let inner: String = characters[start..end].iter().collect();
                if inner.trim().is_empty() {
                    return Err(TemplateError {
                        message: "empty `${}`".to_owned(),
                        offset: index,
                        inner: None,
                    });
                }
                let expression = Expression::compile_with(&inner, functions)
                    .map(|compiled| compiled.expression)
                    .map_err(|error| TemplateError {
                        message: error.message.clone(),
                        offset: start,
                        inner: Some((inner.clone(), error)),
                    })?;
                if !literal.is_empty() {
                    parts.push(TemplatePart::Text(std::mem::take(&mut literal)));
                }
                parts.push(TemplatePart::Expr(expression, start));
                index = end + 1;
            } else {
                literal.push(characters[index]);
                index += 1;
            }
        }
        if !literal.is_empty() || parts.is_empty() {
            parts.push(TemplatePart::Text(literal));
        }
        Ok(Self {
            source: text.to_owned(),
            parts,
        })
    }
}

/// Splits a command line into argv the way a shell would split words (quotes respected), but
/// keeps every `${...}` hole whole, so `--replicas=${params.replicas + 1}` stays one argument.
/// Nothing is ever run by a shell.
pub fn split_command(line: &str) -> Result<Vec<String>, String> {
    // Swap each hole for a placeholder without spaces or quotes, split, then put them back.
    let characters: Vec<char> = line.chars().collect();
    let mut protected = String::new();
    let mut holes: Vec<String> = Vec::new();
    let mut index = 0;
    while index < characters.len() {
        if characters[index..].starts_with(&['$', '$', '{']) {
            protected.push_str("$${");
            index += 3;
        } else if characters[index..].starts_with(&['$', '{']) {
            match closing_brace(&characters, index + 2) {
                Some(end) => {
                    holes.push(characters[index..=end].iter().collect());
                    protected.push_str(&format!("\u{e000}{}\u{e001}", holes.len() - 1));
                    index = end + 1;
                }
                None => {
                    protected.extend(&characters[index..]);
                    break;
                }
            }
        } else {
            protected.push(characters[index]);
            index += 1;
        }
    }
    let words = shell_words::split(&protected).map_err(|_| "a quote is never closed".to_owned())?;
    Ok(words
        .into_iter()
        .map(|word| {
            let mut restored = String::new();
            let mut rest = word.as_str();
            while let Some(start) = rest.find('\u{e000}') {
                restored.push_str(&rest[..start]);
                let after = &rest[start + '\u{e000}'.len_utf8()..];
                match after
                    .find('\u{e001}')
                    .and_then(|end| Some((after[..end].parse::<usize>().ok()?, end)))
                {
                    Some((hole, end)) if hole < holes.len() => {
                        restored.push_str(&holes[hole]);
                        rest = &after[end + '\u{e001}'.len_utf8()..];
                    }
                    _ => {
                        restored.push('\u{e000}');
                        rest = after;
                    }
                }
            }
            restored.push_str(rest);
            restored
        })
        .collect())
}

/// The index of the `}` that closes a hole opened just before `start`, skipping braces inside
/// string literals and nested map literals.
fn closing_brace(characters: &[char], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut index = start;
    while index < characters.len() {
        let character = characters[index];
        match quote {
            Some(open) => {
                if character == '\\' {
                    index += 1;
                } else if character == open {
                    quote = None;
                }
            }
            None => match character {
                '"' | '`' | '\'' => quote = Some(character),
                '{' => depth += 1,
                '}' if depth == 0 => return Some(index),
                '}' => depth -= 1,
                _ => {}
            },
        }
        index += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(text: &str) -> Vec<String> {
        Expression::compile(text)
            .expect("compiles")
            .references
            .iter()
            .map(Reference::dotted)
            .collect()
    }

    #[test]
    fn finds_dotted_references() {
        assert_eq!(
            paths("openbao.status.sealed == false"),
            ["openbao.status.sealed"]
        );
        assert_eq!(
            paths("a.b.c > 1 && params.replicas < x.items[0].count"),
            ["a.b.c", "params.replicas", "x.items"]
        );
        assert_eq!(paths("spire.server.healthy"), ["spire.server.healthy"]);
        assert_eq!(paths("flux.list.len() > 0"), ["flux.list"]);
        assert_eq!(paths("x.items.filter(|p| p.ready).len() > 0"), ["x.items"]);
    }

    #[test]
    fn a_closure_reads_the_facts_it_captures_and_hides_only_its_own_params() {
        // `want.name` is captured by the closure: a read of the fact, not a local.
        let mut found = paths("l.items.filter(|x| x.n == want.name).len() > 0");
        found.sort();
        assert_eq!(found, ["l.items", "want.name"]);
        // A closure param named like a fact root hides it inside the closure only.
        let mut found =
            paths("platform.namespaces.filter(|platform| platform.ready).len() == platform.total");
        found.sort();
        assert_eq!(found, ["platform.namespaces", "platform.total"]);
        // Closures in closures: the outer param is local to the inner one too.
        let found =
            paths("a.items.filter(|x| x.pods.some(|p| p.node == x.node && p.zone == z.zone))");
        assert_eq!(found, ["a.items", "z.zone"]);
    }

    #[test]
    fn a_captured_fact_is_in_scope_when_the_closure_runs() {
        let expression =
            Expression::compile("l.filter(|x| x == want.name).len()").expect("compiles");
        let mut scope = rhai::Scope::new();
        scope.push_constant(
            "l",
            rhai::Array::from([rhai::Dynamic::from("a"), rhai::Dynamic::from("b")]),
        );
        let mut want = rhai::Map::new();
        want.insert("name".into(), rhai::Dynamic::from("b"));
        scope.push_constant("want", want);
        let count: i64 =
            evaluate(&mut scope, &expression.ast, &Budget::standard(), None).expect("evaluates");
        assert_eq!(count, 1);
    }

    /// Issue 15, item 9: a map or a list becomes the same text however it is printed.
    #[test]
    fn maps_and_lists_print_as_json_whichever_way_they_become_text() {
        let text = |source: &str| -> String {
            let expression = Expression::compile(source).expect("compiles");
            let mut scope = rhai::Scope::new();
            let mut fact = rhai::Map::new();
            fact.insert("k".into(), Dynamic::from("v"));
            scope.push_constant("fact", fact);
            let value: Dynamic = evaluate(&mut scope, &expression.ast, &Budget::standard(), None)
                .expect("evaluates");
            text_of(&value).expect("prints")
        };
        let map = r#"#{k: "v", n: [1, "two"], m: #{}}"#;
        let json = r#"{"k":"v","m":{},"n":[1,"two"]}"#;
        assert_eq!(text(map), json, "as ${{}} prints it");
        assert_eq!(text(&format!(r#""got " + {map}"#)), format!("got {json}"));
        assert_eq!(text(&format!(r#"{map} + " seen""#)), format!("{json} seen"));
        // Interpolation, as facts (not literals, which Rhai's optimizer folds) reach it.
        assert_eq!(text("`got ${fact}`"), r#"got {"k":"v"}"#);
        assert_eq!(text(r#""got " + fact"#), r#"got {"k":"v"}"#);
        assert_eq!(text("fact.to_string()"), r#"{"k":"v"}"#);
        assert_eq!(text(&format!("{map}.to_string()")), json);
        assert_eq!(text(r#""list " + [1, "a", true]"#), r#"list [1,"a",true]"#);
        assert_eq!(
            text(r#""n=" + 3 + " " + "s""#),
            "n=3 s",
            "scalars are unchanged"
        );
    }

    #[test]
    fn syntax_errors_have_positions() {
        let error = Expression::compile("a.b ==").expect_err("fails");
        assert_eq!((error.line, error.column), (1, 7));
        let error = Expression::compile("a.b == (1").expect_err("fails");
        assert!(error.message.contains(")"), "{error:?}");
    }

    #[test]
    fn statements_and_eval_are_refused() {
        assert!(Expression::compile("let x = 1").is_err());
        assert!(Expression::compile("eval(\"1\")").is_err());
    }

    #[test]
    fn runaway_evaluation_is_stopped() {
        let engine = sandboxed_engine();
        let ast = Expression::compile(
            "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\".split(\"\").reduce(|s, x| s + s, \"y\")",
        )
        .expect("compiles")
        .ast;
        assert!(
            engine.eval_ast::<rhai::Dynamic>(&ast).is_err(),
            "a string of 2^30 bytes"
        );
        let ast = Expression::compile("range(0, 100000000).reduce(|sum, v| sum + v, 0)")
            .expect("compiles")
            .ast;
        assert!(engine.eval_ast::<rhai::Dynamic>(&ast).is_err());
    }

    #[test]
    fn command_lines_split_into_argv_keeping_holes_whole() {
        assert_eq!(
            split_command(
                "kubectl scale deploy/api --replicas=${params.replicas + 1} -n '${params.ns}'"
            )
            .expect("splits"),
            [
                "kubectl",
                "scale",
                "deploy/api",
                "--replicas=${params.replicas + 1}",
                "-n",
                "${params.ns}"
            ]
        );
        assert_eq!(
            split_command("echo \"a b\" ${ #{k: \"x y\"}.k }").expect("splits"),
            ["echo", "a b", "${ #{k: \"x y\"}.k }"]
        );
        assert_eq!(
            split_command("echo 'unclosed").expect_err("fails"),
            "a quote is never closed"
        );
        assert_eq!(
            split_command("echo ${unclosed").expect("splits"),
            ["echo", "${unclosed"]
        );
    }

    #[test]
    fn templates_split_text_and_holes() {
        let template = Template::parse("deploy/${params.name}-x $${literal}").expect("parses");
        assert_eq!(template.parts.len(), 3);
        assert!(
            matches!(&template.parts[1], TemplatePart::Expr(e, 9) if e.source == "params.name")
        );
        assert!(matches!(&template.parts[2], TemplatePart::Text(t) if t == "-x ${literal}"));
        assert!(Template::parse("plain").expect("parses").is_literal());
        assert_eq!(Template::parse("a ${b").expect_err("fails").offset, 2);
        let error = Template::parse("a ${b ==}").expect_err("fails");
        assert_eq!(error.offset, 4);
        assert!(Template::parse("${ #{a: 1}.a }").is_ok());
    }
}
