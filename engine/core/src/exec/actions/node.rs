//! Nodes: `cordon`, `uncordon` and `drain`.

use super::*;

impl Run {
    pub(in crate::exec) async fn set_unschedulable(
        &self,
        step: &StepSpec,
        attempt: u32,
        node: &Template,
        wanted: bool,
    ) -> Result<Finished, StepError> {
        let dry = self.dry();
        let node = self.render(node, None).await?;
        let previous = self.node_unschedulable(&node).await?;
        let undo = self.undo_for(
            step,
            Some(UndoState::Native(UndoRecord::Unschedulable {
                node: node.clone(),
                previous,
            })),
        );
        let verb = if wanted { "cordon" } else { "uncordon" };
        self.intent(
            step,
            attempt,
            format!("{verb} node {node}"),
            undo.as_ref(),
            None,
        )?;
        self.effects
            .cluster
            .set_unschedulable(&node, wanted, dry)
            .await
            .map_err(StepError::from)?;
        Ok(self.native_done(
            format!("node {node}: unschedulable {previous} -> {wanted}"),
            undo,
        ))
    }

    pub(in crate::exec) async fn drain(
        &self,
        step: &StepSpec,
        attempt: u32,
        node: &Template,
        delete_empty_dir_data: &bool,
        eviction_timeout: &Duration,
    ) -> Result<Finished, StepError> {
        let dry = self.dry();
        let node = self.render(node, None).await?;
        let previous = self.node_unschedulable(&node).await?;
        let undo = self.undo_for(
            step,
            Some(UndoState::Native(UndoRecord::Unschedulable {
                node: node.clone(),
                previous,
            })),
        );
        self.intent(
            step,
            attempt,
            format!("drain node {node}"),
            undo.as_ref(),
            None,
        )?;
        let options = DrainOptions {
            delete_empty_dir_data: *delete_empty_dir_data,
            eviction_timeout: *eviction_timeout,
        };
        let drained = self
            .effects
            .cluster
            .drain(&node, &options, dry)
            .await
            .map_err(StepError::from)?;
        Ok(self.native_done(
            format!(
                "node {node}: evicted {} pod(s), skipped {}",
                drained.evicted.len(),
                drained.skipped.len()
            ),
            undo,
        ))
    }

    pub(in crate::exec) async fn node_unschedulable(&self, node: &str) -> Result<bool, StepError> {
        let key = ObjectKey {
            api_version: "v1".to_owned(),
            kind: "Node".to_owned(),
            namespace: None,
            name: node.to_owned(),
        };
        let object = self
            .effects
            .cluster
            .get(&key)
            .await
            .map_err(StepError::from)?;
        Ok(object
            .pointer("/spec/unschedulable")
            .and_then(Json::as_bool)
            .unwrap_or(false))
    }
}
