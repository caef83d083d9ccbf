//! `kubectl drain` in the simulator: cordon, the emptyDir refusal, and evictions through the
//! PodDisruptionBudgets, as the API server's eviction subresource decides them.

use super::*;

impl Store {
    /// `kubectl drain`: cordon; refuse (before evicting anything) if a pod to evict uses
    /// emptyDir and that was not allowed; then evict pod by pod through the PDBs. A PDB that
    /// allows no disruption stops the drain with [`EffectError::Blocked`]; pods evicted by then
    /// stay evicted.
    pub fn drain(
        &mut self,
        node: &str,
        options: &DrainOptions,
        dry: bool,
        log: &mut Vec<Mutation>,
    ) -> EffectResult<DrainReport> {
        self.set_unschedulable(node, true, dry, log)?;
        let node_key = StoreKey::new("v1", "Node", None, node);
        let mut report = DrainReport::default();
        let mut evict = Vec::new();
        for (key, pod) in &self.objects {
            if key.group.is_empty()
                && key.kind == "Pod"
                && pod.pointer("/spec/nodeName").and_then(Json::as_str) == Some(node)
            {
                if skip_reason(pod).is_some() {
                    report.skipped.push(pod_name(key));
                } else {
                    evict.push(key.clone());
                }
            }
        }
        if !options.delete_empty_dir_data {
            let local: Vec<String> = evict
                .iter()
                .filter(|key| self.objects.get(key).is_some_and(uses_empty_dir))
                .map(pod_name)
                .collect();
            if !local.is_empty() {
                return Err(EffectError::Invalid(format!(
                    "cannot drain node {node}: pods with local storage (use deleteEmptyDirData to evict them anyway, their emptyDir data is lost): {}",
                    local.join(", ")
                )));
            }
        }
        for pod_key in evict {
            let Some(pod) = self.objects.get(&pod_key).cloned() else {
                continue;
            };
            let finished = matches!(
                pod.pointer("/status/phase").and_then(Json::as_str),
                Some("Succeeded" | "Failed")
            );
            if !finished {
                self.check_budget(&pod_key, &pod, dry)?;
            }
            self.objects.remove(&pod_key);
            let name = pod_name(&pod_key);
            log.push(Mutation::new("drain", &node_key, format!("evicted {name}")));
            report.evicted.push(name);
        }
        Ok(report)
    }

    /// The Eviction API's PodDisruptionBudget check; takes one disruption when allowed.
    fn check_budget(&mut self, pod_key: &StoreKey, pod: &Json, dry: bool) -> EffectResult<()> {
        let labels = pod.pointer("/metadata/labels").and_then(Json::as_object);
        let budgets: Vec<StoreKey> = self
            .objects
            .iter()
            .filter(|(key, budget)| {
                key.kind == "PodDisruptionBudget"
                    && key.namespace == pod_key.namespace
                    && selector_matches(budget.pointer("/spec/selector"), labels)
            })
            .map(|(key, _)| key.clone())
            .collect();
        let budget_key = match budgets.as_slice() {
            [] => return Ok(()),
            [one] => one.clone(),
            _ => {
                return Err(EffectError::Other(format!(
                    "cannot evict pod {}: it has more than one PodDisruptionBudget ({}), which the eviction subresource does not support",
                    pod_name(pod_key),
                    budgets.iter().map(|key| key.name.as_str()).collect::<Vec<_>>().join(", ")
                )))
            }
        };
        let budget = self.objects.get(&budget_key).cloned().unwrap_or(Json::Null);
        let stored = budget
            .pointer("/status/disruptionsAllowed")
            .and_then(Json::as_i64);
        let allowed = stored.unwrap_or_else(|| self.computed_disruptions(&budget_key, &budget));
        if allowed <= 0 {
            return Err(EffectError::Blocked(format!(
                "cannot evict pod {} as it would violate the pod's disruption budget: PodDisruptionBudget {} allows {} disruptions",
                pod_name(pod_key),
                pod_name(&budget_key),
                allowed.max(0)
            )));
        }
        if let Some(stored) = stored {
            let mut budget = budget;
            ensure_object(&mut budget, "status")
                .insert("disruptionsAllowed".into(), json!(stored - 1));
            if !dry {
                let revision = self.next_revision();
                metadata_mut(&mut budget).insert("resourceVersion".into(), json!(revision));
            }
            self.objects.insert(budget_key, budget);
        }
        Ok(())
    }

    /// What the disruption controller would compute for a PDB without status: healthy pods
    /// minus `minAvailable`, or `maxUnavailable` minus unhealthy pods.
    fn computed_disruptions(&self, budget_key: &StoreKey, budget: &Json) -> i64 {
        let selector = budget.pointer("/spec/selector");
        let pods: Vec<&Json> = self
            .objects
            .iter()
            .filter(|(key, pod)| {
                key.kind == "Pod"
                    && key.group.is_empty()
                    && key.namespace == budget_key.namespace
                    && selector_matches(
                        selector,
                        pod.pointer("/metadata/labels").and_then(Json::as_object),
                    )
            })
            .map(|(_, pod)| pod)
            .collect();
        let expected = pods.len() as i64;
        let healthy = pods
            .iter()
            .filter(|pod| {
                matches!(
                    pod.pointer("/status/phase").and_then(Json::as_str),
                    None | Some("Running")
                )
            })
            .count() as i64;
        let amount = |value: &Json| -> Option<i64> {
            match value {
                Json::Number(number) => number.as_i64(),
                Json::String(text) => {
                    let percent: i64 = text.strip_suffix('%')?.trim().parse().ok()?;
                    Some((percent * expected + 99) / 100)
                }
                _ => None,
            }
        };
        let allowed = if let Some(minimum) = budget.pointer("/spec/minAvailable").and_then(amount) {
            healthy - minimum
        } else if let Some(maximum) = budget.pointer("/spec/maxUnavailable").and_then(amount) {
            maximum - (expected - healthy)
        } else {
            healthy
        };
        allowed.max(0)
    }
}
