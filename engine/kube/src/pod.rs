//! A pod's exec (over the API's WebSocket) and logs.

use super::*;

impl KubeCluster {
    pub(crate) async fn exec_in_pod(
        &self,
        pod: &PodRef,
        argv: &[String],
        timeout: Duration,
    ) -> EffectResult<CommandOutput> {
        use k8s_openapi::api::core::v1::Pod;
        use kube::api::AttachParams;
        use tokio::io::AsyncReadExt as _;

        let namespace = segment(&pod.namespace, "namespace")?;
        let name = segment(&pod.pod, "pod")?;
        let what = format!("exec in pod {namespace}/{name}");
        let api: kube::Api<Pod> = kube::Api::namespaced(self.transport.client().clone(), namespace);
        let mut params = AttachParams::default()
            .stdout(true)
            .stderr(true)
            .stdin(false);
        if let Some(container) = &pod.container {
            params = params.container(container.clone());
        }
        let run = async {
            let mut process = api
                .exec(name, argv.to_vec(), &params)
                .await
                .map_err(|e| kube_error(&what, e))?;
            let status = process.take_status();
            let mut stdout = process.stdout();
            let mut stderr = process.stderr();
            let read_out = async {
                let mut text = Vec::new();
                if let Some(out) = stdout.as_mut() {
                    let _ = out.read_to_end(&mut text).await;
                }
                text
            };
            let read_err = async {
                let mut text = Vec::new();
                if let Some(err) = stderr.as_mut() {
                    let _ = err.read_to_end(&mut text).await;
                }
                text
            };
            let (out, err) = tokio::join!(read_out, read_err);
            let status = match status {
                Some(status) => status.await,
                None => None,
            };
            let _ = process.join().await;
            Ok::<_, EffectError>(CommandOutput {
                exit_code: exit_code(status.as_ref(), &what)?,
                stdout: String::from_utf8_lossy(&out).into_owned(),
                stderr: String::from_utf8_lossy(&err).into_owned(),
            })
        };
        tokio::time::timeout(timeout, run).await.map_err(|_| {
            EffectError::Unavailable(format!(
                "{what}: no exit within {}",
                humantime::format_duration(timeout)
            ))
        })?
    }

    pub(crate) async fn pod_logs(&self, pod: &PodRef, options: LogOptions) -> EffectResult<String> {
        let path = format!(
            "/api/v1/namespaces/{}/pods/{}/log",
            segment(&pod.namespace, "namespace")?,
            segment(&pod.pod, "pod")?
        );
        let mut query = Vec::new();
        if let Some(container) = &pod.container {
            query.push(("container", container.clone()));
        }
        if options.previous {
            query.push(("previous", "true".to_owned()));
        }
        if let Some(lines) = options.tail_lines {
            query.push(("tailLines", lines.to_string()));
        }
        let body = self
            .transport
            .send(&Call::new(
                Method::GET,
                with_query(&path, &query),
                format!("logs of pod {}/{}", pod.namespace, pod.pod),
            ))
            .await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }
}

/// The exit status in the exec protocol's last message: `Success`, or a failure whose cause
/// `ExitCode` carries the number.
fn exit_code(
    status: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>,
    what: &str,
) -> EffectResult<i32> {
    let Some(status) = status else {
        return Err(EffectError::Unavailable(format!(
            "{what}: the connection ended without an exit status"
        )));
    };
    if status.status.as_deref() == Some("Success") {
        return Ok(0);
    }
    let code = status
        .details
        .as_ref()
        .and_then(|d| d.causes.as_ref())
        .and_then(|causes| {
            causes
                .iter()
                .find(|c| c.reason.as_deref() == Some("ExitCode"))
                .and_then(|c| c.message.as_deref())
                .and_then(|m| m.parse::<i32>().ok())
        });
    match code {
        Some(code) => Ok(code),
        None => Err(EffectError::Other(format!(
            "{what}: {}",
            status.message.as_deref().unwrap_or("failed")
        ))),
    }
}
