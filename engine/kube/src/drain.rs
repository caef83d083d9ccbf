//! `drain` against the API server: cordon, list the node's pods, skip DaemonSet and mirror
//! pods (the rules are `runbook_core::drain`'s, shared with the simulator), evict the rest in
//! parallel through `policy/v1` Eviction, retrying PodDisruptionBudget refusals, then wait
//! for them to be gone.

use super::*;

impl KubeCluster {
    pub(crate) async fn drain_node(
        &self,
        node: &str,
        options: &DrainOptions,
        dry_run: DryRun,
    ) -> EffectResult<DrainReport> {
        let node = segment(node, "node")?.to_owned();
        self.set_unschedulable(&node, true, dry_run).await?;
        let pods = self
            .list(&ListQuery {
                api_version: "v1".to_owned(),
                kind: "Pod".to_owned(),
                namespace: None,
                label_selector: None,
                field_selector: Some(format!("spec.nodeName={node}")),
            })
            .await?;
        let mut report = DrainReport::default();
        let mut evict = Vec::new();
        for pod in pods
            .get("items")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            let text = |pointer: &str| {
                pod.pointer(pointer)
                    .and_then(Json::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            let (namespace, name) = (text("/metadata/namespace"), text("/metadata/name"));
            if runbook_core::drain::skip_reason(pod).is_some() {
                report.skipped.push(format!("{namespace}/{name}"));
            } else {
                evict.push((
                    namespace,
                    name,
                    text("/metadata/uid"),
                    runbook_core::drain::uses_empty_dir(pod),
                ));
            }
        }
        if !options.delete_empty_dir_data {
            let local: Vec<String> = evict
                .iter()
                .filter(|(.., empty_dir)| *empty_dir)
                .map(|(namespace, name, ..)| format!("{namespace}/{name}"))
                .collect();
            if !local.is_empty() {
                return Err(EffectError::Invalid(format!(
                    "cannot drain node {node}: pods with local storage (use deleteEmptyDirData to evict them anyway, their emptyDir data is lost): {}",
                    local.join(", ")
                )));
            }
        }
        let timeout = options.eviction_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        // Evict every pod at once, as kubectl does, each waiting out its own budget.
        let results =
            futures::future::join_all(evict.iter().map(|(namespace, name, uid, _)| async move {
                self.evict(namespace, name, dry_run, deadline, timeout)
                    .await?;
                if !dry_run.is_dry() {
                    self.gone(namespace, name, uid, deadline).await?;
                }
                Ok::<_, EffectError>(format!("{namespace}/{name}"))
            }))
            .await;
        let mut failures = Vec::new();
        for result in results {
            match result {
                Ok(name) => report.evicted.push(name),
                Err(error) => failures.push(error),
            }
        }
        if let Some(first) = failures.first() {
            let evicted = if report.evicted.is_empty() {
                String::new()
            } else {
                format!(" (evicted: {})", report.evicted.join(", "))
            };
            let message = format!(
                "drain node {node}: {} pod(s) not evicted{evicted}: {}",
                failures.len(),
                failures
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            );
            return Err(match first {
                EffectError::Blocked(_) => EffectError::Blocked(message),
                EffectError::Forbidden(_) => EffectError::Forbidden(message),
                _ => EffectError::Unavailable(message),
            });
        }
        Ok(report)
    }

    /// Evicts one pod, retrying while a PodDisruptionBudget refuses (429) until `deadline`.
    async fn evict(
        &self,
        namespace: &str,
        pod: &str,
        dry_run: DryRun,
        deadline: tokio::time::Instant,
        timeout: Duration,
    ) -> EffectResult<()> {
        let path = format!(
            "/api/v1/namespaces/{}/pods/{}/eviction",
            segment(namespace, "namespace")?,
            segment(pod, "pod")?
        );
        let body = json!({
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": pod, "namespace": namespace},
        });
        let call = Call::new(
            Method::POST,
            with_query(&path, &write_query(dry_run, &[])),
            format!("evict pod {namespace}/{pod}"),
        )
        .json(JSON, &body)
        .retry(Retry::Never);
        let mut transient = 0;
        loop {
            match self.transport.attempt(&call).await {
                Ok(_) => return Ok(()),
                // Gone already: nothing left to evict.
                Err(failure) if failure.status == Some(404) => return Ok(()),
                Err(failure) if failure.status == Some(429) => {
                    if tokio::time::Instant::now() + self.options.eviction_retry > deadline {
                        return Err(EffectError::Blocked(format!(
                            "evict pod {namespace}/{pod}: still refused after {}: {}",
                            humantime::format_duration(timeout),
                            failure.message
                        )));
                    }
                    tracing::info!(pod = %format!("{namespace}/{pod}"), message = %failure.message, "Eviction refused for now; retrying.");
                    tokio::time::sleep(self.options.eviction_retry).await;
                }
                Err(failure)
                    if failure.status.is_none_or(|s| s >= 500)
                        && transient + 1 < self.options.policy.attempts =>
                {
                    transient += 1;
                    tokio::time::sleep(self.options.policy.backoff).await;
                }
                Err(failure) => return Err(failure.into_error(&call.what, transient + 1)),
            }
        }
    }

    /// Waits until the evicted pod is gone (or replaced by one with another uid).
    async fn gone(
        &self,
        namespace: &str,
        pod: &str,
        uid: &str,
        deadline: tokio::time::Instant,
    ) -> EffectResult<()> {
        let key = ObjectKey {
            api_version: "v1".to_owned(),
            kind: "Pod".to_owned(),
            namespace: Some(namespace.to_owned()),
            name: pod.to_owned(),
        };
        loop {
            match self.read(&key).await {
                Err(EffectError::NotFound(_)) => return Ok(()),
                Ok(object)
                    if object.pointer("/metadata/uid").and_then(Json::as_str) != Some(uid) =>
                {
                    return Ok(())
                }
                Ok(_) => {}
                Err(error) => return Err(error),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(EffectError::Unavailable(format!(
                    "pod {namespace}/{pod} was evicted but is still terminating"
                )));
            }
            tokio::time::sleep(self.options.eviction_retry.min(Duration::from_secs(1))).await;
        }
    }
}
