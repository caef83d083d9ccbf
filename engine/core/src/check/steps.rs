//! The steps pass: ids (explicit or defaulted), `needs` and the cycles they make, then each
//! step's `when`, timeout, retries and confirmation around its action.

use super::*;

impl Checker<'_> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn check_steps(
        &mut self,
        at: At<'_>,
        base: &str,
        documents: &[document::Step],
        scope: &Scope<'_>,
        reads: &mut Reads,
        calls: &mut Vec<Call>,
        runbook: &str,
        rollback: bool,
    ) -> Vec<StepSpec> {
        // Ids first, so `needs` can be resolved against all of them.
        let ids = self.step_ids(at, base, documents, rollback);
        let needs = self.step_needs(at, base, documents, &ids, rollback);
        self.check_step_cycles(at, base, documents, &ids, &needs);
        // Steps read what the run made before them: captured values and step results.
        let mut step_names = self.main_step_ids.clone();
        step_names.extend(ids.iter().cloned());
        if !rollback {
            self.main_step_ids = ids.clone();
        }
        // A step reads `vars.NAME` once the step that captures it surely ran: one it waits
        // for. Rollback steps run after the steps, and read any.
        let before = waits_for(&ids, &needs);
        let outer = *scope;

        let mut steps = Vec::new();
        for (index, step) in documents.iter().enumerate() {
            let mut names = RunNames {
                vars: BTreeSet::new(),
                steps: step_names.clone(),
                unsure: BTreeMap::new(),
            };
            for (name, (_, capturing)) in &self.captured_vars {
                if rollback || before[index].contains(capturing) {
                    names.vars.insert(name.clone());
                } else if *capturing == index {
                    names.unsure.insert(
                        name.clone(),
                        (
                            format!("`vars.{name}` is captured by this step itself"),
                            "read it in a step that runs after this one".to_owned(),
                        ),
                    );
                } else {
                    let by = &ids[*capturing];
                    names.unsure.insert(
                        name.clone(),
                        (
                            format!("`vars.{name}` is captured by step `{by}`, which does not run before this step"),
                            format!("add `{by}` to this step's `needs`, or to the `needs` of a step it waits for"),
                        ),
                    );
                }
            }
            let scope = &Scope {
                run: Some(&names),
                ..outer
            };
            let pointer = format!("{base}/{index}");
            if rollback && step.for_each.is_some() {
                self.error_help(
                    Code::ForEach,
                    at,
                    at.key_span(&format!("{pointer}/forEach")),
                    "rollback steps run one by one, in order; `forEach` is not allowed there",
                    Some(
                        "call a runbook that has the `forEach` step: `rollback: {runbook: NAME}`"
                            .to_owned(),
                    ),
                );
            }
            if rollback && step.undo.is_some() {
                self.error(
                    Code::RollbackUndo,
                    at,
                    at.key_span(&format!("{pointer}/undo")),
                    "rollback steps are not undone; `undo` is not allowed there",
                );
            }
            if let Some(checked) = self.check_step(
                at,
                &pointer,
                step,
                index,
                &ids[index],
                &needs[index],
                scope,
                reads,
                calls,
                runbook,
            ) {
                steps.push(checked);
            }
        }
        steps
    }

    /// Each step's id, written or defaulted from its action and position (`scale-1`).
    fn step_ids(
        &mut self,
        at: At<'_>,
        base: &str,
        documents: &[document::Step],
        rollback: bool,
    ) -> Vec<String> {
        let mut ids: Vec<String> = Vec::new();
        let mut first_use: HashMap<String, Span> = HashMap::new();
        for (index, step) in documents.iter().enumerate() {
            let pointer = format!("{base}/{index}");
            let id = match &step.id {
                Some(id) => {
                    if !is_step_id(id) {
                        self.error_help(
                            Code::StepId,
                            at,
                            at.span(&format!("{pointer}/id")),
                            format!("invalid step id `{id}`"),
                            Some("use lowercase letters, digits, `-` and `_`, starting with a letter or digit".to_owned()),
                        );
                    }
                    id.clone()
                }
                None => {
                    let keyword = action_keywords(step).first().copied().unwrap_or("step");
                    if rollback {
                        format!("rollback-{keyword}-{}", index + 1)
                    } else {
                        format!("{keyword}-{}", index + 1)
                    }
                }
            };
            let span = if step.id.is_some() {
                at.span(&format!("{pointer}/id"))
            } else {
                at.span(&pointer)
            };
            if let Some(first) = first_use.get(&id) {
                let message = if step.id.is_some() {
                    format!(
                        "duplicate step id `{id}` (first used at line {})",
                        first.start.line
                    )
                } else {
                    format!(
                        "this step's default id `{id}` is already used at line {}",
                        first.start.line
                    )
                };
                self.error_help(
                    Code::DuplicateStepId,
                    at,
                    span,
                    message,
                    Some("give every step a unique `id`".to_owned()),
                );
            } else {
                first_use.insert(id.clone(), span);
            }
            ids.push(id);
        }
        ids
    }

    /// Each step's dependencies: its `needs`, or else the step before it.
    fn step_needs(
        &mut self,
        at: At<'_>,
        base: &str,
        documents: &[document::Step],
        ids: &[String],
        rollback: bool,
    ) -> Vec<Vec<String>> {
        let mut needs: Vec<Vec<String>> = Vec::new();
        for (index, step) in documents.iter().enumerate() {
            let pointer = format!("{base}/{index}");
            let list = match &step.needs {
                Some(list) => {
                    if rollback {
                        self.error(
                            Code::RollbackNeeds,
                            at,
                            at.key_span(&format!("{pointer}/needs")),
                            "rollback steps run in order; `needs` is not allowed there",
                        );
                    }
                    let mut valid = Vec::new();
                    for (n, need) in list.iter().enumerate() {
                        let need = &need.step().to_owned();
                        if ids.contains(need) {
                            if !valid.contains(need) {
                                valid.push(need.clone());
                            }
                        } else {
                            self.error_help(
                                Code::UnknownStep,
                                at,
                                at.span(&format!("{pointer}/needs/{n}")),
                                format!("`needs` names unknown step `{need}`"),
                                did_you_mean(need, ids.iter().map(String::as_str)).or_else(|| {
                                    let mut known: Vec<&str> =
                                        ids.iter().map(String::as_str).collect();
                                    known.dedup();
                                    Some(format!("steps are: {}", known.join(", ")))
                                }),
                            );
                        }
                    }
                    valid
                }
                None if index > 0 => vec![ids[index - 1].clone()],
                None => Vec::new(),
            };
            needs.push(list);
        }
        needs
    }

    /// Dependencies that go round in a circle, each reported once.
    fn check_step_cycles(
        &mut self,
        at: At<'_>,
        base: &str,
        documents: &[document::Step],
        ids: &[String],
        needs: &[Vec<String>],
    ) {
        let mut graph = DiGraph::<&str, ()>::new();
        let nodes: Vec<_> = ids.iter().map(|id| graph.add_node(id.as_str())).collect();
        for (index, list) in needs.iter().enumerate() {
            for need in list {
                if let Some(target) = ids.iter().position(|id| id == need) {
                    graph.add_edge(nodes[index], nodes[target], ());
                }
            }
        }
        let mut in_cycle = BTreeSet::new();
        for cycle in cycles(&graph) {
            let first = cycle[0];
            let index = ids.iter().position(|id| id == first).unwrap_or(0);
            in_cycle.extend(cycle.iter().map(|id| id.to_string()));
            let path = cycle
                .iter()
                .chain(std::iter::once(&first))
                .copied()
                .collect::<Vec<_>>()
                .join(" -> ");
            let pointer = format!("{base}/{index}");
            let span = if documents[index].needs.is_some() {
                at.key_span(&format!("{pointer}/needs"))
            } else {
                at.span(&pointer)
            };
            let (message, help) = if cycle.len() == 1 {
                (
                    format!("step `{first}` needs itself"),
                    "remove it from its own `needs`".to_owned(),
                )
            } else {
                // Say which links come from file order rather than a written `needs`.
                let implicit: Vec<String> = cycle
                    .iter()
                    .zip(cycle.iter().skip(1).chain(std::iter::once(&first)))
                    .filter(|(step, _)| {
                        ids.iter()
                            .position(|id| id == *step)
                            .is_some_and(|position| documents[position].needs.is_none())
                    })
                    .map(|(step, dependency)| {
                        format!("`{step}` waits for `{dependency}` because it has no `needs`")
                    })
                    .collect();
                let mut message = format!("steps depend on each other in a cycle: {path}");
                if !implicit.is_empty() {
                    message.push_str(&format!(" ({})", implicit.join("; ")));
                }
                (
                    message,
                    "break the cycle by changing one `needs`".to_owned(),
                )
            };
            self.error_help(Code::Cycle, at, span, message, Some(help));
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn check_step(
        &mut self,
        at: At<'_>,
        pointer: &str,
        step: &document::Step,
        index: usize,
        id: &str,
        needs: &[String],
        scope: &Scope<'_>,
        reads: &mut Reads,
        calls: &mut Vec<Call>,
        runbook: &str,
    ) -> Option<StepSpec> {
        let before = self.diagnostics.error_count();
        // A `forEach` step's own expressions read its item, by `item` or the name in `as`.
        let for_each = self.for_each(at, pointer, step, scope, reads);
        // A `forEach` step's gate is asked once, for all its items, before the list is read.
        let outer = *scope;
        let item_name = step.item_name.clone().unwrap_or_else(|| "item".to_owned());
        let mut locals = scope.locals.to_vec();
        if step.for_each.is_some() {
            locals.push(&item_name);
        }
        let scope = &Scope {
            locals: &locals,
            ..*scope
        };
        let when = step
            .when
            .as_ref()
            .and_then(|text| self.expression(at, &format!("{pointer}/when"), text, scope, reads));
        let action = self.action(at, pointer, step, scope, reads, calls, runbook, false);
        let is_verify = matches!(action, Some(Action::Verify { .. }));
        let timeout = match &step.timeout {
            Some(text) => self
                .duration(at, &format!("{pointer}/timeout"), text)
                .unwrap_or(DEFAULT_STEP_TIMEOUT),
            None if is_verify => DEFAULT_VERIFY_TIMEOUT,
            None => DEFAULT_STEP_TIMEOUT,
        };
        for (field, given) in [
            ("interval", step.interval.is_some()),
            ("failWhen", step.fail_when.is_some()),
        ] {
            if given && !is_verify && action.is_some() {
                self.error(
                    Code::Interval,
                    at,
                    at.key_span(&format!("{pointer}/{field}")),
                    format!("`{field}` applies to `verify` steps only"),
                );
            }
        }
        let retries = match &step.retries {
            None => RetrySpec::default(),
            Some(Retries::Count(count)) => RetrySpec {
                retries: *count,
                ..RetrySpec::default()
            },
            Some(Retries::Policy(policy)) => RetrySpec {
                retries: policy.attempts,
                backoff: policy
                    .backoff
                    .as_ref()
                    .and_then(|text| self.duration(at, &format!("{pointer}/retries/backoff"), text))
                    .unwrap_or(DEFAULT_BACKOFF),
                max_backoff: policy
                    .max_backoff
                    .as_ref()
                    .and_then(|text| {
                        self.duration(at, &format!("{pointer}/retries/maxBackoff"), text)
                    })
                    .unwrap_or(DEFAULT_MAX_BACKOFF),
            },
        };
        let confirm = match &step.confirm {
            None | Some(Confirm::Flag(false)) => None,
            Some(Confirm::Flag(true)) => {
                Some(Template::literal(&format!("Proceed with step `{id}`?")))
            }
            Some(Confirm::Text(text)) => {
                Some(self.template(at, &format!("{pointer}/confirm"), text, &outer, reads))
            }
        };
        let action = action?;
        if step.readonly && !matches!(action, Action::Run { .. } | Action::Exec { .. }) {
            self.error(
                Code::ReadOnly,
                at,
                at.key_span(&format!("{pointer}/readonly")),
                "`readonly` applies to `run` and `exec` steps only",
            );
        }
        if step.env.is_some() && !matches!(action, Action::Run { .. }) {
            self.error_help(
                Code::Env,
                at,
                at.key_span(&format!("{pointer}/env")),
                "`env` applies to `run` steps only",
                matches!(action, Action::Exec { .. }).then(|| {
                    "an `exec` runs with its container's environment; it can take a value only as an argument"
                        .to_owned()
                }),
            );
        }
        if step.allow_exit_codes.is_some()
            && !matches!(action, Action::Run { .. } | Action::Exec { .. })
        {
            self.error_help(
                Code::ExitCodes,
                at,
                at.key_span(&format!("{pointer}/allowExitCodes")),
                "`allowExitCodes` applies to `run` and `exec` steps only",
                Some("an action of the cluster has no exit code; a `command` or `exec` fact takes `allowExitCodes` too".to_owned()),
            );
        }
        let declared = match &step.undo {
            Some(undo) if irreversible(step).is_none() => {
                let undo_pointer = format!("{pointer}/undo");
                self.undo(at, &undo_pointer, undo, scope, reads, calls, runbook)
            }
            _ => None,
        };
        let undo = self.step_undo(at, pointer, step, id, &action, declared);
        if self.diagnostics.error_count() > before {
            return None;
        }
        Some(StepSpec {
            index,
            id: id.to_owned(),
            name: step.name.clone(),
            needs: needs.to_vec(),
            must_succeed: step
                .needs
                .iter()
                .flatten()
                .filter(|need| need.strict() && needs.iter().any(|id| id == need.step()))
                .map(|need| need.step().to_owned())
                .collect(),
            when,
            timeout,
            retries,
            confirm,
            undo,
            readonly: step.readonly,
            action,
            for_each,
            span: at.span(pointer),
        })
    }

    /// Every name the runbook's `capture` steps capture, before any step is checked, so that
    /// any step may read `vars.NAME`. A name captured twice is an error at the second.
    pub(super) fn collect_captured_vars(&mut self, at: At<'_>, steps: &[document::Step]) {
        self.captured_vars.clear();
        for (index, step) in steps.iter().enumerate() {
            for name in step.capture.iter().flat_map(BTreeMap::keys) {
                let span = at.key_span(&format!(
                    "/spec/steps/{index}/capture/{}",
                    escape_pointer(name)
                ));
                if let Some((first, _)) = self.captured_vars.get(name) {
                    let line = first.start.line;
                    self.error_help(
                        Code::Capture,
                        at,
                        span,
                        format!("`vars.{name}` is already captured at line {line}"),
                        Some("a captured value is set once; give this one another name".to_owned()),
                    );
                } else {
                    self.captured_vars.insert(name.clone(), (span, index));
                }
            }
        }
    }

    /// A step's `forEach` and the fields that go with it (`as`, `key`, `parallelism`,
    /// `maxItems`), which mean nothing without it.
    fn for_each(
        &mut self,
        at: At<'_>,
        pointer: &str,
        step: &document::Step,
        scope: &Scope<'_>,
        reads: &mut Reads,
    ) -> Option<ForEach> {
        let Some(list) = &step.for_each else {
            for (field, given) in [
                ("as", step.item_name.is_some()),
                ("key", step.key.is_some()),
                ("parallelism", step.parallelism.is_some()),
                ("maxItems", step.max_items.is_some()),
            ] {
                if given {
                    self.error_help(
                        Code::ForEach,
                        at,
                        at.key_span(&format!("{pointer}/{field}")),
                        format!("`{field}` applies to `forEach` steps only"),
                        Some("add `forEach: <a list>` to run the step once per item, or remove the field".to_owned()),
                    );
                }
            }
            return None;
        };
        if step.capture.is_some() {
            self.error_help(
                Code::ForEach,
                at,
                at.key_span(&format!("{pointer}/forEach")),
                "a `capture` is set once, so it cannot run once per item",
                Some("capture the whole list instead: `capture: {NAME: <the list>}`".to_owned()),
            );
        }
        let name = step.item_name.clone().unwrap_or_else(|| "item".to_owned());
        let taken = scope
            .facts
            .iter()
            .any(|fact| fact.split('.').next() == Some(&name))
            || ["params", "vars", "steps", "object"].contains(&name.as_str());
        if !is_identifier(&name) || taken {
            self.error_help(
                Code::ForEach,
                at,
                at.span(&format!("{pointer}/as")),
                if taken {
                    format!("`{name}` already names something expressions read")
                } else {
                    format!("`{name}` cannot name an item")
                },
                Some("give `as` a free name of lowercase letters, digits and `_`, such as `deployment`".to_owned()),
            );
        }
        let list = self.expression(at, &format!("{pointer}/forEach"), list, scope, reads);
        let locals: Vec<&str> = scope
            .locals
            .iter()
            .copied()
            .chain([name.as_str()])
            .collect();
        let with_item = Scope {
            locals: &locals,
            ..*scope
        };
        let key = step.key.as_ref().and_then(|text| {
            self.expression(at, &format!("{pointer}/key"), text, &with_item, reads)
        });
        let mut at_least_one = |field: &str, value: Option<u32>, default: usize| match value {
            Some(0) => {
                self.error_help(
                    Code::ForEach,
                    at,
                    at.span(&format!("{pointer}/{field}")),
                    format!("`{field}` must be at least 1"),
                    Some(format!("leave it out for the default, {default}")),
                );
                default
            }
            Some(value) => usize::try_from(value).unwrap_or(default),
            None => default,
        };
        let parallelism = at_least_one("parallelism", step.parallelism, 1);
        let max_items = at_least_one("maxItems", step.max_items, DEFAULT_MAX_ITEMS);
        Some(ForEach {
            list: list?,
            name,
            key: if step.key.is_some() { Some(key?) } else { None },
            parallelism,
            max_items,
        })
    }
}

/// For each step (by position), the steps it waits for, through its `needs` and theirs.
fn waits_for(ids: &[String], needs: &[Vec<String>]) -> Vec<BTreeSet<usize>> {
    let position = |id: &String| ids.iter().position(|other| other == id);
    (0..ids.len())
        .map(|start| {
            let mut seen = BTreeSet::new();
            let mut todo: Vec<usize> = needs[start].iter().filter_map(position).collect();
            while let Some(step) = todo.pop() {
                if seen.insert(step) {
                    todo.extend(needs[step].iter().filter_map(position));
                }
            }
            seen
        })
        .collect()
}
