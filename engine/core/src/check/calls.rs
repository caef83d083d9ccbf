//! The calls pass, run once every runbook is known: a `runbook:` step or rollback must name a
//! runbook that exists, pass only params it declares, and not lead back to itself.

use super::*;

/// A `runbook:` call or runbook rollback, checked once every runbook is known.
pub(super) struct Call {
    pub(super) from: String,
    pub(super) to: String,
    pub(super) params: Vec<String>,
    pub(super) source: Source,
    pub(super) span: Span,
}

impl Checker<'_> {
    /// Calls to other runbooks must name runbooks that exist, pass params they declare, and not
    /// go round in a circle.
    pub(super) fn check_calls(&mut self, catalog: &Catalog, calls: &[Call]) {
        let names: Vec<&str> = catalog.runbooks.iter().map(|r| r.name.as_str()).collect();
        for call in calls {
            match catalog.get(&call.to) {
                None => {
                    if names.contains(&call.from.as_str()) {
                        self.diagnostics.push(
                            Diagnostic::error(
                                Code::UnknownRunbook,
                                &call.source,
                                call.span,
                                format!("unknown runbook `{}`", call.to),
                            )
                            .with_help_opt(did_you_mean(&call.to, names.iter().copied())),
                        );
                    }
                }
                Some(target) => {
                    for param in &call.params {
                        if target.param(param).is_none() {
                            self.diagnostics.push(
                                Diagnostic::error(
                                    Code::UndefinedParam,
                                    &call.source,
                                    call.span,
                                    format!("runbook `{}` has no param `{param}`", call.to),
                                )
                                .with_help_opt(did_you_mean(
                                    param,
                                    target.params.iter().map(|p| p.name.as_str()),
                                )),
                            );
                        }
                    }
                }
            }
        }
        let mut graph = DiGraph::<&str, ()>::new();
        let nodes: BTreeMap<&str, _> = names
            .iter()
            .map(|name| (*name, graph.add_node(*name)))
            .collect();
        for call in calls {
            if let (Some(from), Some(to)) =
                (nodes.get(call.from.as_str()), nodes.get(call.to.as_str()))
            {
                graph.add_edge(*from, *to, ());
            }
        }
        for cycle in cycles(&graph) {
            let path = cycle
                .iter()
                .chain(std::iter::once(&cycle[0]))
                .copied()
                .collect::<Vec<_>>()
                .join(" -> ");
            if let Some(call) = calls.iter().find(|call| call.from == cycle[0]) {
                self.diagnostics.push(Diagnostic::error(
                    Code::CallCycle,
                    &call.source,
                    call.span,
                    format!("runbooks call each other in a cycle: {path}"),
                ));
            }
        }
    }
}
