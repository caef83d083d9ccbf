//! `notify` and `page`.

use super::*;

impl Run {
    pub(in crate::exec) async fn notify(
        &self,
        message: &MessageSpec,
        page: bool,
    ) -> Result<Finished, StepError> {
        let notification = Notification {
            kind: if page {
                NotificationKind::Page
            } else {
                NotificationKind::Notify
            },
            message: self
                .redactor
                .redact(&self.render(&message.text, None).await?),
            channel: message.channel.clone(),
            severity: message.severity.clone(),
        };
        if self.options.dry_run {
            return Ok(Finished::DryRun(format!(
                "would send: {}",
                notification.message
            )));
        }
        self.effects
            .notifier
            .send(&notification)
            .await
            .map_err(StepError::from)?;
        Ok(done(Some(format!("sent: {}", notification.message)), None))
    }
}
