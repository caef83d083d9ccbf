//! Connecting as kubectl users expect: `--kubeconfig`, else `KUBECONFIG`, else
//! `~/.kube/config`; `--context`, else the current context; `--namespace`, else the context's
//! namespace; and inside a pod with no kubeconfig, the service account. The connection is
//! checked at once (`GET /version`), so an unreachable server or refused credentials is one
//! clear line naming the context and the server, before anything runs.

use std::path::PathBuf;

use http::Method;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::transport::{root_cause, Call, Policy, Transport};

#[derive(Clone, Debug, Default)]
pub struct ConnectOptions {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    pub namespace: Option<String>,
    pub policy: Policy,
}

/// A checked connection.
#[derive(Clone)]
pub struct Connection {
    pub client: kube::Client,
    /// The API server's URL.
    pub server: String,
    /// The kubeconfig context, or `None` in a pod using its service account.
    pub context: Option<String>,
    /// `--namespace`, else the context's, else the pod's, else `default`.
    pub namespace: String,
    pub in_cluster: bool,
    /// The server's version, e.g. `v1.33.1`.
    pub version: String,
}

impl Connection {
    /// `context kind-dev (https://127.0.0.1:6443)`, for messages.
    pub fn describe(&self) -> String {
        match &self.context {
            Some(context) => format!("context {context} ({})", self.server),
            None => format!("in-cluster service account ({})", self.server),
        }
    }
}

fn default_kubeconfig() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".kube").join("config"))
}

/// Builds the client from the first source that exists and checks that the server answers
/// and accepts the credentials. Errors are one line, meant to be printed as they are.
pub async fn connect(options: &ConnectOptions) -> Result<Connection, String> {
    let from_env = std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty());
    let default = default_kubeconfig().filter(|path| path.is_file());
    let (config, context, in_cluster) = if options.kubeconfig.is_some()
        || from_env.is_some()
        || default.is_some()
        || options.context.is_some()
    {
        let (kubeconfig, source) = match &options.kubeconfig {
            Some(path) => (
                Kubeconfig::read_from(path),
                format!("kubeconfig {}", path.display()),
            ),
            None => (
                Kubeconfig::read(),
                match &from_env {
                    Some(value) => format!("kubeconfig {} (KUBECONFIG)", value.to_string_lossy()),
                    None => "kubeconfig ~/.kube/config".to_owned(),
                },
            ),
        };
        let kubeconfig =
            kubeconfig.map_err(|e| format!("cannot read the {source}: {}", root_cause(&e)))?;
        let context = match options
            .context
            .clone()
            .or_else(|| kubeconfig.current_context.clone())
        {
            Some(context) => context,
            None => {
                return Err(format!(
                    "the {source} has no current context; pick one with --context ({})",
                    context_names(&kubeconfig)
                ))
            }
        };
        if !kubeconfig.contexts.iter().any(|c| c.name == context) {
            return Err(format!(
                "the {source} has no context `{context}` (it has: {})",
                context_names(&kubeconfig)
            ));
        }
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &KubeConfigOptions {
                context: Some(context.clone()),
                cluster: None,
                user: None,
            },
        )
        .await
        .map_err(|e| format!("context `{context}` in the {source}: {}", root_cause(&e)))?;
        (config, Some(context), false)
    } else if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        let config = kube::Config::incluster().map_err(|e| {
            format!(
                "running in a pod, but its service account cannot be used: {}",
                root_cause(&e)
            )
        })?;
        (config, None, true)
    } else {
        return Err("no cluster to connect to: KUBECONFIG is unset, ~/.kube/config does not exist, and this is not a pod; point KUBECONFIG at a kubeconfig, or run against a simulated cluster with --simulate SCENARIO".to_owned());
    };
    let mut config = config;
    let server = config
        .cluster_url
        .to_string()
        .trim_end_matches('/')
        .to_owned();
    let namespace = options
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    config.default_namespace = namespace.clone();
    config.connect_timeout = Some(
        options
            .policy
            .call_timeout
            .min(std::time::Duration::from_secs(10)),
    );
    let whom = match &context {
        Some(context) => format!("context {context}, server {server}"),
        None => format!("in-cluster service account, server {server}"),
    };
    // Our transport retries, within a bound and only what is safe to repeat; kube's own
    // retry layer (up to 15 tries of 429/503/504, whatever the request) would hide inside
    // each of our attempts and repeat JSON patches and evictions.
    config.default_retry = false;
    let client = kube::Client::try_from(config)
        .map_err(|e| format!("cannot set up a client for {whom}: {}", root_cause(&e)))?;
    // One attempt, short: a wrong server should say so in seconds, not after retries.
    let probe = Transport::new(
        client.clone(),
        Policy {
            attempts: 1,
            ..options.policy.clone()
        },
    );
    let version = match probe
        .attempt(&Call::new(Method::GET, "/version".to_owned(), "get /version"))
        .await
    {
        Ok(body) => serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("gitVersion").and_then(|v| v.as_str()).map(str::to_owned))
            .unwrap_or_else(|| "unknown".to_owned()),
        Err(failure) => match failure.status {
            None => {
                return Err(format!(
                    "cannot reach the Kubernetes API server ({whom}): {}",
                    failure.message
                ))
            }
            Some(401) => {
                return Err(format!(
                    "the Kubernetes API server refused the credentials ({whom}): {} (HTTP 401); log in again or check the user in the kubeconfig",
                    failure.message
                ))
            }
            // Authenticated, just not allowed to read the version: that is fine.
            Some(403) => "unknown".to_owned(),
            Some(status) => {
                return Err(format!(
                    "the Kubernetes API server answered HTTP {status} ({whom}): {}",
                    failure.message
                ))
            }
        },
    };
    Ok(Connection {
        client,
        server,
        context,
        namespace,
        in_cluster,
        version,
    })
}

fn context_names(kubeconfig: &Kubeconfig) -> String {
    let names: Vec<&str> = kubeconfig
        .contexts
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    if names.is_empty() {
        "no contexts".to_owned()
    } else {
        names.join(", ")
    }
}
