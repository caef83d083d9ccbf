//! The plan's DAG as Graphviz DOT or Mermaid; labels are truncated and escaped for each
//! format's own quoting rules.

use std::fmt::Write as _;

use super::*;

fn truncate(text: &str, limit: usize) -> String {
    shorten(&text.replace('\n', " "), limit)
}

/// A short label for a graph node.
fn node_label(plan: &Plan, node: &PlanNode) -> (String, String) {
    let runbook = &plan.runbook;
    match node {
        PlanNode::Fact(name) => ("fact".to_owned(), name.clone()),
        PlanNode::Precondition(index) => (
            format!("precondition {}", index + 1),
            truncate(runbook.preconditions[*index].expr.source.trim(), 60),
        ),
        PlanNode::Step(index) => {
            let step = &runbook.steps[*index];
            let gate = if step.confirm.is_some() {
                " (gate)"
            } else {
                ""
            };
            // A fan-out shows as its instances' ids.
            let id = match &step.for_each {
                Some(for_each) => format!("{}[each {}]", step.id, for_each.name),
                None => step.id.clone(),
            };
            (
                format!("{id}{gate}"),
                truncate(&action_summary(plan, &step.action), 60),
            )
        }
        PlanNode::Undo(index) => {
            let step = &runbook.steps[*index];
            (
                format!("undo {}", step.id),
                truncate(&undo_summary(plan, &step.undo), 60),
            )
        }
        PlanNode::Rollback => ("rollback".to_owned(), truncate(&rollback_summary(plan), 60)),
    }
}

fn node_id(plan: &Plan, node: &PlanNode) -> String {
    match node {
        PlanNode::Fact(name) => format!("fact:{name}"),
        PlanNode::Precondition(index) => format!("precondition:{}", index + 1),
        PlanNode::Step(index) => format!("step:{}", plan.runbook.steps[*index].id),
        PlanNode::Undo(index) => format!("undo:{}", plan.runbook.steps[*index].id),
        PlanNode::Rollback => "rollback".to_owned(),
    }
}

fn dot_escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The DAG in Graphviz DOT.
pub fn graph_dot(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph \"{}\" {{", dot_escape(&plan.runbook.name));
    let _ = writeln!(out, "  rankdir=TB;");
    let _ = writeln!(out, "  node [fontname=\"Helvetica\", fontsize=10];");
    let _ = writeln!(out, "  edge [fontname=\"Helvetica\", fontsize=9];");
    for index in &plan.order {
        let node = &plan.graph[*index];
        let (title, detail) = node_label(plan, node);
        let shape = match node {
            PlanNode::Fact(_) => "shape=ellipse, style=filled, fillcolor=\"#eef5ff\"",
            PlanNode::Precondition(_) => "shape=diamond",
            PlanNode::Step(position) if plan.runbook.steps[*position].confirm.is_some() => {
                "shape=box, style=\"rounded,bold\""
            }
            PlanNode::Step(_) => "shape=box, style=rounded",
            PlanNode::Undo(_) => "shape=box, style=\"rounded,dashed\"",
            PlanNode::Rollback => "shape=octagon",
        };
        let _ = writeln!(
            out,
            "  \"{}\" [label=\"{}\\n{}\", {shape}];",
            dot_escape(&node_id(plan, node)),
            dot_escape(&title),
            dot_escape(&detail)
        );
    }
    for edge in plan.graph.edge_indices() {
        let Some((source, target)) = plan.graph.edge_endpoints(edge) else {
            continue;
        };
        let style = match plan.graph[edge] {
            Dependency::Data => " [style=dotted]",
            Dependency::Order => "",
            Dependency::Compensation => " [style=dashed, color=\"#b00020\", label=\"on failure\"]",
        };
        let _ = writeln!(
            out,
            "  \"{}\" -> \"{}\"{style};",
            dot_escape(&node_id(plan, &plan.graph[source])),
            dot_escape(&node_id(plan, &plan.graph[target]))
        );
    }
    out.push_str("}\n");
    out
}

fn mermaid_escape(text: &str) -> String {
    let mut out = String::new();
    for character in text.chars() {
        match character {
            '"' => out.push_str("#quot;"),
            '<' => out.push_str("#lt;"),
            '>' => out.push_str("#gt;"),
            '#' => out.push_str("#35;"),
            '`' => out.push_str("#96;"),
            '|' => out.push_str("#124;"),
            other => out.push(other),
        }
    }
    out
}

/// The DAG as a Mermaid flowchart.
pub fn graph_mermaid(plan: &Plan) -> String {
    let mut out = String::from("flowchart TD\n");
    let ids: std::collections::BTreeMap<petgraph::graph::NodeIndex, String> = plan
        .order
        .iter()
        .enumerate()
        .map(|(position, index)| (*index, format!("n{position}")))
        .collect();
    for index in &plan.order {
        let node = &plan.graph[*index];
        let (title, detail) = node_label(plan, node);
        let label = mermaid_escape(&format!("{title}: {detail}"));
        let id = &ids[index];
        let _ = match node {
            PlanNode::Fact(_) => writeln!(out, "  {id}([\"{label}\"])"),
            PlanNode::Precondition(_) => writeln!(out, "  {id}{{\"{label}\"}}"),
            PlanNode::Step(_) => writeln!(out, "  {id}[\"{label}\"]"),
            PlanNode::Undo(_) => writeln!(out, "  {id}[/\"{label}\"/]"),
            PlanNode::Rollback => writeln!(out, "  {id}[[\"{label}\"]]"),
        };
    }
    for edge in plan.graph.edge_indices() {
        let Some((source, target)) = plan.graph.edge_endpoints(edge) else {
            continue;
        };
        let arrow = match plan.graph[edge] {
            Dependency::Data => "-.->",
            Dependency::Order => "-->",
            Dependency::Compensation => "-. on failure .->",
        };
        let _ = writeln!(out, "  {} {arrow} {}", ids[&source], ids[&target]);
    }
    out
}
