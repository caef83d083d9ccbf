//! Processes: `run:` on this machine and `exec:` in a pod; their exit status and last line.

use super::*;

impl Run {
    pub(in crate::exec) async fn run_process(
        &self,
        step: &StepSpec,
        attempt: u32,
        argv: &[Template],
        env: &BTreeMap<String, Template>,
    ) -> Result<Finished, StepError> {
        let argv = self.render_all(argv).await?;
        let mut environment = BTreeMap::new();
        for (name, value) in env {
            environment.insert(name.clone(), self.render(value, None).await?);
        }
        // The command as journaled and shown: argv only; the environment's values stay out
        // of the journal, as they stay out of the process list.
        let shown = shell_words::join(&argv);
        if self.options.dry_run && !step.readonly {
            return Ok(Finished::DryRun(format!("would run: {shown}")));
        }
        if !step.readonly {
            self.intent(
                step,
                attempt,
                format!("run {shown}"),
                self.undo_for(step, None).as_ref(),
                None,
            )?;
        }
        let output = self
            .effects
            .processes
            .run(&argv, &environment, step.timeout)
            .await
            .map_err(StepError::from)?;
        let output = CommandOutput {
            stdout: self.redactor.redact(&output.stdout),
            stderr: self.redactor.redact(&output.stderr),
            ..output
        };
        self.keep_output(step, &output);
        command_result(&output).map(|out| {
            if self.options.dry_run {
                Finished::DryRun(out.unwrap_or_else(|| "ran (readonly)".to_owned()))
            } else {
                done(out, self.undo_for(step, None))
            }
        })
    }

    pub(in crate::exec) async fn exec_in_pod(
        &self,
        step: &StepSpec,
        attempt: u32,
        namespace: &Template,
        pod: &Template,
        container: Option<&Template>,
        argv: &[Template],
    ) -> Result<Finished, StepError> {
        let pod = self.pod_ref(namespace, pod, container).await?;
        let argv = self.render_all(argv).await?;
        let shown = format!(
            "exec in pod {}/{}: {}",
            pod.namespace,
            pod.pod,
            shell_words::join(&argv)
        );
        if self.options.dry_run && !step.readonly {
            return Ok(Finished::DryRun(format!("would {shown}")));
        }
        if !step.readonly {
            self.intent(
                step,
                attempt,
                shown,
                self.undo_for(step, None).as_ref(),
                None,
            )?;
        }
        let output = self
            .effects
            .cluster
            .exec(&pod, &argv, step.timeout)
            .await
            .map_err(StepError::from)?;
        let output = CommandOutput {
            stdout: self.redactor.redact(&output.stdout),
            stderr: self.redactor.redact(&output.stderr),
            ..output
        };
        self.keep_output(step, &output);
        command_result(&output).map(|out| {
            if self.options.dry_run {
                Finished::DryRun(out.unwrap_or_else(|| "ran (readonly)".to_owned()))
            } else {
                done(out, self.undo_for(step, None))
            }
        })
    }
}

/// A process result: success with its last line of output, or a failure saying why.
pub(in crate::exec) fn command_result(output: &CommandOutput) -> Result<Option<String>, StepError> {
    if output.exit_code != 0 {
        return Err(command_failure(output));
    }
    Ok(last_line(&output.stdout))
}

/// Why a process that exited non-zero failed: its status and the last line it printed.
pub(in crate::exec) fn command_failure(output: &CommandOutput) -> StepError {
    let detail = last_line(&output.stderr)
        .or_else(|| last_line(&output.stdout))
        .unwrap_or_default();
    StepError::Command(format!(
        "exited with status {}{}",
        output.exit_code,
        if detail.is_empty() {
            String::new()
        } else {
            format!(": {detail}")
        }
    ))
}

pub(in crate::exec) fn last_line(text: &str) -> Option<String> {
    let line = text
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())?
        .trim();
    Some(if line.chars().count() > 200 {
        format!("{}…", line.chars().take(199).collect::<String>())
    } else {
        line.to_owned()
    })
}
