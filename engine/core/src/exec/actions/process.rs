//! Processes: `run:` on this machine and `exec:` in a pod; their exit status and last line.

use super::*;

impl Run {
    pub(in crate::exec) async fn run_process(
        &self,
        step: &StepSpec,
        attempt: u32,
        argv: &[Template],
        env: &BTreeMap<String, Template>,
        allow_exit_codes: Option<&ExitCodes>,
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
        command_result(&output, allow_exit_codes).map(|out| {
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
        (namespace, pod, container): (&Template, &Template, Option<&Template>),
        argv: &[Template],
        allow_exit_codes: Option<&ExitCodes>,
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
        command_result(&output, allow_exit_codes).map(|out| {
            if self.options.dry_run {
                Finished::DryRun(out.unwrap_or_else(|| "ran (readonly)".to_owned()))
            } else {
                done(out, self.undo_for(step, None))
            }
        })
    }
}

/// A process result: success with its last line of output, or a failure saying why. With
/// `allowExitCodes`, every code it lists is a success (a non-zero one said beside the line).
pub(in crate::exec) fn command_result(
    output: &CommandOutput,
    allow_exit_codes: Option<&ExitCodes>,
) -> Result<Option<String>, StepError> {
    match allow_exit_codes {
        None if output.exit_code != 0 => Err(command_failure(output)),
        None => Ok(last_line(&output.stdout)),
        Some(allowed) if !allowed.allows(output.exit_code) => Err(outside_allowed(output, allowed)),
        Some(_) if output.exit_code == 0 => Ok(last_line(&output.stdout)),
        Some(_) => {
            let line = last_line(&output.stdout).or_else(|| last_line(&output.stderr));
            Ok(Some(match line {
                Some(line) => format!("exited with status {} (allowed): {line}", output.exit_code),
                None => format!("exited with status {} (allowed)", output.exit_code),
            }))
        }
    }
}

/// Why a process failed whose exit code is not one of its `allowExitCodes`.
pub(in crate::exec) fn outside_allowed(output: &CommandOutput, allowed: &ExitCodes) -> StepError {
    match command_failure(output) {
        StepError::Command(why) => StepError::Command(format!("{why} (allowExitCodes: {allowed})")),
        other => other,
    }
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
