//! The compiler: a checked [`Runbook`] and bound params in, a [`Plan`] out.
//!
//! The plan is what the executor runs: a petgraph DAG whose nodes are fact reads,
//! preconditions, steps, undos and the rollback, and whose edges say what must happen before
//! what. Steps without `needs` follow the step before them; expressions depend on the facts
//! they read; every step waits for every precondition. Expressions were compiled once by the
//! checker and are shared, not recompiled, here.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;

use crate::alert::Alert;
use crate::bind::Bindings;
use crate::check::facts_read;
use crate::runbook::{Runbook, UndoSpec};

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PlanNode {
    /// Read a fact (lazily, once per run until a mutation invalidates it).
    Fact(String),
    /// The precondition at this index.
    Precondition(usize),
    /// The step at this index of `runbook.steps`.
    Step(usize),
    /// The undo of the step at this index.
    Undo(usize),
    Rollback,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dependency {
    /// The target reads what the source read.
    Data,
    /// The target runs after the source (`needs`, file order, preconditions first).
    Order,
    /// The compensation path, taken only when a run fails.
    Compensation,
}

/// The alert that bound the params, if any.
#[derive(Clone, Debug)]
pub struct TriggeredBy {
    pub trigger: usize,
    pub alert: Alert,
    /// The Alertmanager receiver and group key of the notification (journaled, so a run says
    /// which incident and which notification it serves).
    pub receiver: String,
    pub group_key: String,
}

#[derive(Clone, Debug)]
pub struct Plan {
    pub runbook: Arc<Runbook>,
    pub bindings: Bindings,
    pub triggered_by: Option<TriggeredBy>,
    pub graph: DiGraph<PlanNode, Dependency>,
    /// Step indices grouped into stages: every step of a stage may run in parallel once the
    /// stages before it are done.
    pub stages: Vec<Vec<usize>>,
    /// Every node in a stable topological order.
    pub order: Vec<NodeIndex>,
}

impl Plan {
    pub fn node(&self, node: &PlanNode) -> Option<NodeIndex> {
        self.graph
            .node_indices()
            .find(|index| &self.graph[*index] == node)
    }

    /// The nodes an edge of `kind` leads into `node` from.
    pub fn dependencies(&self, node: NodeIndex, kind: Dependency) -> Vec<NodeIndex> {
        let mut found: Vec<NodeIndex> = self
            .graph
            .edges_directed(node, petgraph::Direction::Incoming)
            .filter(|edge| *edge.weight() == kind)
            .map(|edge| edge.source())
            .collect();
        found.sort();
        found
    }

    /// The facts read before the preconditions can be evaluated.
    pub fn facts_for(&self, node: &PlanNode) -> Vec<String> {
        let Some(index) = self.node(node) else {
            return Vec::new();
        };
        self.dependencies(index, Dependency::Data)
            .into_iter()
            .filter_map(|source| match &self.graph[source] {
                PlanNode::Fact(name) => Some(name.clone()),
                _ => None,
            })
            .collect()
    }
}

pub struct Compiler;

impl Compiler {
    pub fn compile(
        runbook: Arc<Runbook>,
        bindings: Bindings,
        triggered_by: Option<TriggeredBy>,
    ) -> Plan {
        let mut graph = DiGraph::new();
        let fact_names: BTreeSet<String> = runbook.facts.keys().cloned().collect();
        let facts: BTreeMap<&str, NodeIndex> = runbook
            .facts
            .keys()
            .map(|name| (name.as_str(), graph.add_node(PlanNode::Fact(name.clone()))))
            .collect();
        for (name, fact) in &runbook.facts {
            for read in &fact.reads {
                if let Some(source) = facts.get(read.as_str()) {
                    graph.add_edge(*source, facts[name.as_str()], Dependency::Data);
                }
            }
        }
        let data_edges = |graph: &mut DiGraph<PlanNode, Dependency>,
                          target: NodeIndex,
                          read: BTreeSet<String>| {
            for fact in read {
                if let Some(source) = facts.get(fact.as_str()) {
                    graph.add_edge(*source, target, Dependency::Data);
                }
            }
        };

        let preconditions: Vec<NodeIndex> = runbook
            .preconditions
            .iter()
            .enumerate()
            .map(|(index, check)| {
                let node = graph.add_node(PlanNode::Precondition(index));
                data_edges(&mut graph, node, facts_read(&fact_names, &check.expr));
                node
            })
            .collect();

        let steps: Vec<NodeIndex> = runbook
            .steps
            .iter()
            .map(|step| graph.add_node(PlanNode::Step(step.index)))
            .collect();
        for (position, step) in runbook.steps.iter().enumerate() {
            let node = steps[position];
            let read: BTreeSet<String> = step
                .expressions()
                .into_iter()
                .flat_map(|e| facts_read(&fact_names, e))
                .collect();
            data_edges(&mut graph, node, read);
            if step.needs.is_empty() {
                for precondition in &preconditions {
                    graph.add_edge(*precondition, node, Dependency::Order);
                }
            }
            for need in &step.needs {
                if let Some(dependency) = runbook.steps.iter().position(|s| &s.id == need) {
                    graph.add_edge(steps[dependency], node, Dependency::Order);
                }
            }
        }

        let undos: Vec<NodeIndex> = runbook
            .steps
            .iter()
            .enumerate()
            .filter(|(_, step)| matches!(step.undo, UndoSpec::Native(_) | UndoSpec::Declared(_)))
            .map(|(position, step)| {
                let node = graph.add_node(PlanNode::Undo(step.index));
                graph.add_edge(steps[position], node, Dependency::Compensation);
                node
            })
            .collect();
        if runbook.rollback.is_some() {
            let node = graph.add_node(PlanNode::Rollback);
            if undos.is_empty() {
                for step in &steps {
                    graph.add_edge(*step, node, Dependency::Compensation);
                }
            } else {
                for undo in &undos {
                    graph.add_edge(*undo, node, Dependency::Compensation);
                }
            }
        }

        let order = stable_topological_order(&graph);

        // Stages: a step's stage is one more than the latest stage of the steps it needs.
        // Walking in topological order sees every dependency before its dependants.
        let position_of: BTreeMap<&str, usize> = runbook
            .steps
            .iter()
            .enumerate()
            .map(|(position, step)| (step.id.as_str(), position))
            .collect();
        let mut stage_of: Vec<usize> = vec![0; runbook.steps.len()];
        for node in &order {
            if let PlanNode::Step(index) = graph[*node] {
                let Some(position) = runbook.steps.get(index).map(|step| step.index) else {
                    continue;
                };
                stage_of[position] = runbook.steps[position]
                    .needs
                    .iter()
                    .filter_map(|need| position_of.get(need.as_str()))
                    .map(|dependency| stage_of[*dependency] + 1)
                    .max()
                    .unwrap_or(0);
            }
        }
        let mut stages: Vec<Vec<usize>> = Vec::new();
        for (position, stage) in stage_of.iter().enumerate() {
            if stages.len() <= *stage {
                stages.resize(stage + 1, Vec::new());
            }
            stages[*stage].push(position);
        }

        Plan {
            runbook,
            bindings,
            triggered_by,
            graph,
            stages,
            order,
        }
    }
}

/// Kahn's algorithm, taking the ready node that sorts first (facts, then preconditions, then
/// steps in file order, then undos, then rollback), so output is stable across runs.
fn stable_topological_order(graph: &DiGraph<PlanNode, Dependency>) -> Vec<NodeIndex> {
    let mut remaining: BTreeMap<NodeIndex, usize> = graph
        .node_indices()
        .map(|node| {
            (
                node,
                graph
                    .edges_directed(node, petgraph::Direction::Incoming)
                    .count(),
            )
        })
        .collect();
    let mut ready: BTreeSet<(PlanNode, NodeIndex)> = remaining
        .iter()
        .filter(|(_, count)| **count == 0)
        .map(|(node, _)| (graph[*node].clone(), *node))
        .collect();
    let mut order = Vec::with_capacity(graph.node_count());
    while let Some(first) = ready.iter().next().cloned() {
        ready.remove(&first);
        let (_, node) = first;
        order.push(node);
        for edge in graph.edges_directed(node, petgraph::Direction::Outgoing) {
            let target = edge.target();
            if let Some(count) = remaining.get_mut(&target) {
                *count -= 1;
                if *count == 0 {
                    ready.insert((graph[target].clone(), target));
                }
            }
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::diagnostic::Diagnostics;
    use crate::loader::{Loader, Workspace};

    fn plan(text: &str) -> Plan {
        let mut diagnostics = Diagnostics::new();
        let mut workspace = Workspace::default();
        Loader::new().load_text(
            Path::new("t.yaml"),
            text.to_owned(),
            &mut workspace,
            &mut diagnostics,
        );
        let catalog = crate::check::check(&workspace, &mut diagnostics);
        assert!(
            !diagnostics.has_errors(),
            "{:?}",
            diagnostics
                .sorted()
                .iter()
                .map(|d| &d.message)
                .collect::<Vec<_>>()
        );
        let runbook = catalog.runbooks[0].clone();
        let (bindings, _) = crate::bind::bind(&runbook, &[], None);
        Compiler::compile(runbook, bindings, None)
    }

    fn edges(plan: &Plan, kind: Dependency) -> Vec<String> {
        let name = |node: &PlanNode| match node {
            PlanNode::Fact(name) => format!("fact:{name}"),
            PlanNode::Precondition(index) => format!("pre:{index}"),
            PlanNode::Step(index) => format!("step:{}", plan.runbook.steps[*index].id),
            PlanNode::Undo(index) => format!("undo:{}", plan.runbook.steps[*index].id),
            PlanNode::Rollback => "rollback".to_owned(),
        };
        let mut found: Vec<String> = plan
            .graph
            .edge_indices()
            .filter(|edge| plan.graph[*edge] == kind)
            .filter_map(|edge| plan.graph.edge_endpoints(edge))
            .map(|(source, target)| {
                format!(
                    "{} -> {}",
                    name(&plan.graph[source]),
                    name(&plan.graph[target])
                )
            })
            .collect();
        found.sort();
        found
    }

    const RUNBOOK: &str = "apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata: {name: t}
spec:
  facts:
    - {name: app.deploy, kubernetes: {kind: Deployment, name: app, namespace: x}}
    - {name: app.ready, expr: app.deploy.status.readyReplicas > 0}
    - {name: other.thing, kubernetes: {kind: Node}}
  preconditions:
    - check: app.ready
  steps:
    - {id: a, scale: {name: app, namespace: x, replicas: 2}}
    - {id: b, needs: [], run: [echo], readonly: true}
    - {id: c, needs: [a, b], verify: app.deploy.status.replicas == 2}
    - {id: d, when: other.thing.items.len() > 0, cordon: {node: n1}}
  rollback: page-oncall
";

    #[test]
    fn dependencies_follow_needs_file_order_and_preconditions() {
        let plan = plan(RUNBOOK);
        assert_eq!(
            edges(&plan, Dependency::Order),
            [
                "pre:0 -> step:a",
                "pre:0 -> step:b",
                "step:a -> step:c",
                "step:b -> step:c",
                "step:c -> step:d"
            ]
        );
        assert_eq!(plan.stages, [vec![0, 1], vec![2], vec![3]]);
    }

    #[test]
    fn expressions_depend_on_the_facts_they_read() {
        let plan = plan(RUNBOOK);
        assert_eq!(
            edges(&plan, Dependency::Data),
            [
                "fact:app.deploy -> fact:app.ready",
                "fact:app.deploy -> step:c",
                "fact:app.ready -> pre:0",
                "fact:other.thing -> step:d"
            ]
        );
    }

    #[test]
    fn undos_and_rollback_form_the_compensation_path() {
        let plan = plan(RUNBOOK);
        assert_eq!(
            edges(&plan, Dependency::Compensation),
            [
                "step:a -> undo:a",
                "step:d -> undo:d",
                "undo:a -> rollback",
                "undo:d -> rollback"
            ]
        );
    }

    #[test]
    fn a_logs_fact_is_planned_like_any_probe_and_shown_with_its_pod_and_tail() {
        let plan = plan("apiVersion: runbook.dev/v1alpha1
kind: Runbook
metadata: {name: t}
spec:
  params:
    - {name: namespace, default: shop}
  facts:
    - {name: api.pod, kubernetes: {kind: Pod, name: api-0, namespace: shop}}
    - name: api.log
      logs: {namespace: '${params.namespace}', pod: '${api.pod.metadata.name}', container: server, tail: 200}
    - {name: api.last, logs: {namespace: shop, pod: api-0, tail: 1, format: json}}
    - {name: api.whole, logs: {namespace: shop, pod: api-0, format: lines}}
    - {name: api.crash, logs: {namespace: shop, deployment: api, previous: true, tail: 20}}
  preconditions:
    - check: '!api.log.contains(\"panic\") && api.last.len() < 2 && api.whole.len() > 0 && api.crash != \"\"'
  steps:
    - {id: a, verify: 'true'}
");
        assert_eq!(
            edges(&plan, Dependency::Data),
            [
                "fact:api.crash -> pre:0",
                "fact:api.last -> pre:0",
                "fact:api.log -> pre:0",
                "fact:api.pod -> fact:api.log",
                "fact:api.whole -> pre:0"
            ]
        );
        let text = crate::render::plan_text(&plan);
        for line in [
            "api.log: last 200 lines of the log of pod shop/${api.pod.metadata.name} (container server)",
            "api.last: last line of the log of pod shop/api-0",
            "api.whole: log of pod shop/api-0",
            "api.crash: last 20 lines of the log before the last restart of the pod kubectl logs picks of deployment shop/api",
        ] {
            assert!(text.contains(line), "{line}\n{text}");
        }
    }

    #[test]
    fn order_is_topological_and_stable() {
        let plan = plan(RUNBOOK);
        let position = |node: &PlanNode| {
            plan.order
                .iter()
                .position(|index| &plan.graph[*index] == node)
                .expect("in order")
        };
        for edge in plan.graph.edge_indices() {
            let (source, target) = plan.graph.edge_endpoints(edge).expect("edge");
            assert!(position(&plan.graph[source]) < position(&plan.graph[target]));
        }
        assert_eq!(plan.order.len(), plan.graph.node_count());
        let again = super::tests::plan(RUNBOOK);
        assert_eq!(
            plan.order
                .iter()
                .map(|i| plan.graph[*i].clone())
                .collect::<Vec<_>>(),
            again
                .order
                .iter()
                .map(|i| again.graph[*i].clone())
                .collect::<Vec<_>>()
        );
    }
}
