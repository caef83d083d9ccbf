//! Cycles in a dependency graph (steps' `needs`, facts reading facts, runbooks calling
//! runbooks), found one per strongly connected component so each is reported once.

use super::*;

/// Every elementary cycle's nodes, one per strongly connected component, in a stable order.
pub(super) fn cycles<'a>(graph: &DiGraph<&'a str, ()>) -> Vec<Vec<&'a str>> {
    let mut found = Vec::new();
    for component in petgraph::algo::tarjan_scc(graph) {
        let self_loop = component.len() == 1 && graph.contains_edge(component[0], component[0]);
        if component.len() < 2 && !self_loop {
            continue;
        }
        let start = *component
            .iter()
            .min_by_key(|index| index.index())
            .unwrap_or(&component[0]);
        // Walk from `start` along edges inside the component until we come back.
        let mut path = vec![start];
        let mut seen = BTreeSet::from([start]);
        let mut current = start;
        loop {
            let mut next = None;
            let mut neighbours: Vec<_> = graph
                .neighbors(current)
                .filter(|n| component.contains(n))
                .collect();
            neighbours.sort_by_key(|n| n.index());
            for neighbour in neighbours {
                if neighbour == start {
                    next = Some(start);
                    break;
                }
                if !seen.contains(&neighbour) && next.is_none() {
                    next = Some(neighbour);
                }
            }
            match next {
                Some(node) if node == start => break,
                Some(node) => {
                    seen.insert(node);
                    path.push(node);
                    current = node;
                }
                None => break,
            }
        }
        found.push(path.iter().map(|index| graph[*index]).collect());
    }
    found.sort();
    found
}
