//! The simulated world: a Kubernetes API server held in memory, and scripted answers for pod
//! exec, pod logs, local commands and HTTP, all loaded from a scenario file (`kind: Scenario`).
//!
//! [`SimWorld`] implements the effects traits ([`Cluster`], [`Processes`], [`Http`],
//! [`Notifier`]) and [`StepObserver`], so the executor runs against it exactly as it runs
//! against a live cluster. Writes change state the way the API server would (scale sets
//! `spec.replicas`, cordon sets `spec.unschedulable`, patches merge, drain evicts through
//! PodDisruptionBudgets, every write moves `resourceVersion`, a server dry-run changes nothing),
//! so verify steps observe real consequences. A simple controller model brings workload status
//! to the desired replica count at once (or, with the scenario's `reconcile.delay`, a
//! Deployment's or StatefulSet's that long later on the run's clock), unless the object is
//! annotated `sim.runbook.dev/stuck: "true"`.
//!
//! Scripted answers change as the run goes on: among a script's responses the last one whose
//! `after` holds answers, where `after: {step: ID}` holds once that step finished successfully
//! (the executor says so through [`StepObserver`]) and `after: {calls: N}` once the script has
//! answered N calls. Faults make chosen cluster calls fail.
//!
//! Everything that happened is kept for tests: [`SimWorld::mutations`],
//! [`SimWorld::calls`], [`SimWorld::notifications`] and the objects themselves.

mod boundary;
pub(crate) mod scenario;
mod selector;
mod store;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};

pub use scenario::{
    argv, load_scenario, parse_scenario, scenario_schema, After, Change, ChangeAfter,
    CommandScript, ErrorKind, ExecScript, Fault, FaultVerb, HttpAnswer, HttpScript, LogResponse,
    LogsScript, ProcessResponse, Scenario, ScenarioKind, ScenarioSpec,
};
pub use store::{is_cluster_scoped, STUCK_ANNOTATION};

use crate::document::{PatchType, Propagation};
use crate::effects::{
    Clock, Cluster, CommandOutput, DrainOptions, DrainReport, DryRun, EffectError, EffectResult,
    Effects, Http, HttpResponse, ListQuery, LogOptions, Notification, Notifier, ObjectKey, PodRef,
    Processes, Prompter, Reporter, StepObserver,
};
use store::{group_of, Store, StoreKey};

/// One write the simulated cluster applied (server dry-runs are not recorded).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mutation {
    /// `scale`, `restart`, `patch`, `apply`, `delete`, `cordon`, `uncordon` or `drain`.
    pub verb: String,
    /// `Deployment shop/api`, `Node n1`.
    pub target: String,
    /// What changed, in a few words: `replicas 3 -> 5`, `merge {"spec":{"suspend":true}}`,
    /// `unschedulable true`, `evicted shop/api-0`.
    pub detail: String,
}

impl Mutation {
    fn new(verb: &str, key: &StoreKey, detail: String) -> Self {
        Self {
            verb: verb.to_owned(),
            target: key.display(),
            detail,
        }
    }
}

/// The simulated cluster and everything around it. Thread-safe; share it in an [`Arc`].
pub struct SimWorld {
    state: Mutex<State>,
}

struct Script<M, R> {
    matcher: M,
    responses: Vec<R>,
    answered: u32,
}

struct ExecMatch {
    namespace: String,
    pod: String,
    container: Option<String>,
    argv: Vec<String>,
}

struct LogsMatch {
    namespace: String,
    pod: String,
    container: Option<String>,
}

struct HttpMatch {
    url: String,
    query: Option<BTreeMap<String, String>>,
}

struct FaultState {
    fault: Fault,
    /// Matching calls so far (server dry-runs not counted).
    seen: u32,
    /// Calls failed so far.
    fired: u32,
}

/// What a cluster call is about, for faults.
struct Call<'a> {
    verb: FaultVerb,
    kind: &'a str,
    namespace: Option<&'a str>,
    name: Option<&'a str>,
}

struct State {
    store: Store,
    finished: BTreeSet<String>,
    exec: Vec<Script<ExecMatch, ProcessResponse>>,
    logs: Vec<Script<LogsMatch, LogResponse>>,
    commands: Vec<Script<Vec<String>, ProcessResponse>>,
    http: Vec<Script<HttpMatch, HttpAnswer>>,
    faults: Vec<FaultState>,
    /// The scenario's controller changes, and whether each has happened.
    changes: Vec<(scenario::Change, bool)>,
    mutations: Vec<Mutation>,
    notifications: Vec<Notification>,
    calls: Vec<String>,
}

trait Conditional {
    fn after(&self) -> Option<&After>;
}

impl Conditional for ProcessResponse {
    fn after(&self) -> Option<&After> {
        self.after.as_ref()
    }
}

impl Conditional for LogResponse {
    fn after(&self) -> Option<&After> {
        self.after.as_ref()
    }
}

impl Conditional for HttpAnswer {
    fn after(&self) -> Option<&After> {
        self.after.as_ref()
    }
}

fn holds(after: Option<&After>, finished: &BTreeSet<String>, calls: u32) -> bool {
    after.is_none_or(|after| {
        after
            .step
            .as_ref()
            .is_none_or(|step| finished.contains(step))
            && after.calls.is_none_or(|count| calls >= count)
    })
}

impl<M, R: Conditional + Clone> Script<M, R> {
    /// The answer in effect: the last response whose `after` holds. Counts the call.
    fn answer(&mut self, finished: &BTreeSet<String>) -> Option<R> {
        let answered = self.answered;
        let response = self
            .responses
            .iter()
            .rev()
            .find(|response| holds(response.after(), finished, answered))
            .cloned()?;
        self.answered += 1;
        Some(response)
    }
}

/// A script's `namespace/name` (checked when the scenario was parsed).
fn script_pod(pod: &str) -> (String, String) {
    let (namespace, name) = pod.split_once('/').unwrap_or(("default", pod));
    (namespace.to_owned(), name.to_owned())
}

/// Whether a script for `expected` (none: any) answers a call for `given` (none: the pod's
/// only or default container).
fn container_matches(expected: Option<&String>, given: Option<&String>) -> bool {
    match (expected, given) {
        (Some(expected), Some(given)) => expected == given,
        _ => true,
    }
}

/// The last `count` lines of a log, as `kubectl logs --tail` gives them.
fn tail(log: &str, count: Option<u32>) -> String {
    let Some(count) = count else {
        return log.to_owned();
    };
    let lines: Vec<&str> = log.split_inclusive('\n').collect();
    let first = lines
        .len()
        .saturating_sub(usize::try_from(count).unwrap_or(usize::MAX));
    lines[first..].concat()
}

fn script_argv(command: &crate::document::Command) -> Vec<String> {
    argv(command).unwrap_or_else(|_| match command {
        crate::document::Command::Line(line) => vec![line.clone()],
        crate::document::Command::Argv(argv) => argv.clone(),
    })
}

fn process_output(response: ProcessResponse, what: &str) -> EffectResult<CommandOutput> {
    match response.error {
        Some(kind) => Err(kind.error(
            response
                .message
                .unwrap_or_else(|| format!("scripted failure for {what}")),
        )),
        None => Ok(CommandOutput {
            exit_code: response.exit_code,
            stdout: response.stdout,
            stderr: response.stderr,
        }),
    }
}

fn none_in_effect(what: &str) -> EffectError {
    EffectError::NotFound(format!(
        "the scripted answers for {what} have none in effect yet (each has an `after` that does not hold); add a response without `after`"
    ))
}

/// An argv as a short line: words quoted only when they need it to read back.
fn shown(argv: &[String]) -> String {
    argv.iter()
        .map(|word| {
            let plain = !word.is_empty()
                && word
                    .chars()
                    .all(|c| !c.is_whitespace() && !matches!(c, '\'' | '"' | '\\'));
            if plain {
                word.clone()
            } else {
                shell_words::quote(word).into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn flow_list(items: &[String]) -> String {
    serde_json::to_string(items).unwrap_or_default()
}

impl State {
    /// The first active fault matching `call`, as its error. Server dry-runs fail too while a
    /// fault is active, but only real calls count towards `times` and `after: {calls}`.
    fn check_fault(&mut self, call: &Call<'_>, count: bool) -> EffectResult<()> {
        let mut failure = None;
        for state in &mut self.faults {
            let fault = &state.fault;
            let matches = fault.verb == call.verb
                && fault.kind.as_deref().is_none_or(|kind| kind == call.kind)
                && fault
                    .namespace
                    .as_deref()
                    .is_none_or(|ns| Some(ns) == call.namespace)
                && fault
                    .name
                    .as_deref()
                    .is_none_or(|name| Some(name) == call.name);
            if !matches {
                continue;
            }
            let seen = state.seen;
            if count {
                state.seen += 1;
            }
            let active = holds(fault.after.as_ref(), &self.finished, seen)
                && fault.times.is_none_or(|times| state.fired < times);
            if active && failure.is_none() {
                if count {
                    state.fired += 1;
                }
                let target = match (call.namespace, call.name) {
                    (Some(ns), Some(name)) => format!("{} {ns}/{name}", call.kind),
                    (None, Some(name)) => format!("{} {name}", call.kind),
                    (Some(ns), None) => format!("{} in {ns}", call.kind),
                    (None, None) => call.kind.to_owned(),
                };
                let message = fault
                    .message
                    .clone()
                    .unwrap_or_else(|| format!("injected fault: {} {target}", call.verb.as_str()));
                failure = Some(fault.error.error(message));
            }
        }
        failure.map_or(Ok(()), Err)
    }
}

impl SimWorld {
    pub fn new(scenario: &Scenario) -> Self {
        let spec = &scenario.spec;
        let mut store = Store::default();
        store.reconcile_delay = spec.reconcile.as_ref().and_then(|reconcile| {
            // The scenario check refused a delay that does not parse.
            crate::runbook::parse_duration(&reconcile.delay).ok()
        });
        for object in &spec.objects {
            store.load(Json::Object(object.clone()));
        }
        let exec = spec
            .exec
            .iter()
            .map(|script| {
                let (namespace, pod) = script_pod(&script.pod);
                Script {
                    matcher: ExecMatch {
                        namespace,
                        pod,
                        container: script.container.clone(),
                        argv: script_argv(&script.command),
                    },
                    responses: script.responses.clone(),
                    answered: 0,
                }
            })
            .collect();
        let logs = spec
            .logs
            .iter()
            .map(|script| {
                let (namespace, pod) = script_pod(&script.pod);
                Script {
                    matcher: LogsMatch {
                        namespace,
                        pod,
                        container: script.container.clone(),
                    },
                    responses: script.responses.clone(),
                    answered: 0,
                }
            })
            .collect();
        let commands = spec
            .commands
            .iter()
            .map(|script| Script {
                matcher: script_argv(&script.argv),
                responses: script.responses.clone(),
                answered: 0,
            })
            .collect();
        let http = spec
            .http
            .iter()
            .map(|script| Script {
                matcher: HttpMatch {
                    url: script.url.clone(),
                    query: script.query.clone(),
                },
                responses: script.responses.clone(),
                answered: 0,
            })
            .collect();
        let faults = spec
            .faults
            .iter()
            .map(|fault| FaultState {
                fault: fault.clone(),
                seen: 0,
                fired: 0,
            })
            .collect();
        Self {
            state: Mutex::new(State {
                store,
                finished: BTreeSet::new(),
                exec,
                logs,
                commands,
                http,
                faults,
                changes: spec.changes.iter().map(|c| (c.clone(), false)).collect(),
                mutations: Vec::new(),
                notifications: Vec::new(),
                calls: Vec::new(),
            }),
        }
    }

    /// The executor's effects, with this world as cluster, processes, HTTP, notifier and step
    /// observer.
    pub fn effects(
        self: &Arc<Self>,
        prompter: Arc<dyn Prompter>,
        clock: Arc<dyn Clock>,
        reporter: Arc<dyn Reporter>,
    ) -> Effects {
        Effects {
            cluster: self.clone(),
            processes: self.clone(),
            http: self.clone(),
            notifier: self.clone(),
            prompter,
            clock,
            reporter,
            observer: Some(self.clone()),
        }
    }

    /// The state, with every workload whose reconcile delay is over caught up: whatever the
    /// caller reads or writes next sees the cluster as of now.
    fn lock(&self) -> MutexGuard<'_, State> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.store.settle(tokio::time::Instant::now());
        state
    }

    /// Every applied write, in order.
    pub fn mutations(&self) -> Vec<Mutation> {
        self.lock().mutations.clone()
    }

    pub fn notifications(&self) -> Vec<Notification> {
        self.lock().notifications.clone()
    }

    /// The object as stored (apiVersion as loaded or created), if it exists.
    pub fn object(&self, key: &ObjectKey) -> Option<Json> {
        self.lock().store.objects.get(&StoreKey::of(key)).cloned()
    }

    /// Every object, sorted by group, kind, namespace and name.
    pub fn objects(&self) -> Vec<Json> {
        self.lock().store.objects.values().cloned().collect()
    }

    /// Every exec, log, command and HTTP call, in order: `exec ns/pod -c container -- argv`,
    /// `logs ns/pod -c container --tail N`, `run argv`, `http GET url?query`.
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    /// The steps the executor reported as finished successfully.
    pub fn finished_steps(&self) -> Vec<String> {
        self.lock().finished.iter().cloned().collect()
    }

    /// The last resourceVersion handed out.
    pub fn resource_version(&self) -> u64 {
        self.lock().store.revision()
    }

    /// Runs a write on the store, or, for a server dry-run, on a copy of it.
    fn write<T>(
        &self,
        call: Call<'_>,
        dry_run: DryRun,
        op: impl FnOnce(&mut Store, &mut Vec<Mutation>, bool) -> EffectResult<T>,
    ) -> EffectResult<T> {
        let mut state = self.lock();
        let dry = dry_run.is_dry();
        state.check_fault(&call, !dry)?;
        if dry {
            let mut scratch = state.store.clone();
            op(&mut scratch, &mut Vec::new(), true)
        } else {
            let State {
                store, mutations, ..
            } = &mut *state;
            op(store, mutations, false)
        }
    }
}
