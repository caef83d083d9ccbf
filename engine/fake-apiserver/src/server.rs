//! The HTTP side: `FakeApi` listens on a local port (plain or TLS), hands each request to the
//! store, and turns the store's `Reply` into a response, a watch stream or a WebSocket exec
//! session.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, request::Parts, Response, StatusCode};
use futures::SinkExt as _;
use serde_json::{json, Value as Json};
use tokio_tungstenite::tungstenite::{self as websocket, protocol::Role};

use crate::reply::{status, Reply};
use crate::requests::{ExecReply, Fault, Recorded};
use crate::resources::by_kind;
use crate::store::{Key, State};

/// The fake API server, listening on 127.0.0.1 until dropped.
pub struct FakeApi {
    pub(crate) address: SocketAddr,
    pub(crate) state: Arc<Mutex<State>>,
    pub(crate) server: tokio::task::JoinHandle<()>,
    /// `http`, or `https` when started with [`FakeApi::start_tls`].
    pub(crate) scheme: &'static str,
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

pub(crate) fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl FakeApi {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a local port");
        let address = listener.local_addr().expect("the local address");
        let state = Arc::new(Mutex::new(State {
            version: 100,
            ..State::default()
        }));
        let shared = state.clone();
        let app = axum::Router::new()
            .fallback(move |request: axum::extract::Request| handle(shared.clone(), request));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            address,
            state,
            server,
            scheme: "http",
        }
    }

    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.address)
    }

    /// The same server behind TLS, as real API servers are: `tls` holds its certificate and
    /// whether (and how) it checks client certificates. A failed handshake closes the
    /// connection before any request, as a real server does.
    pub async fn start_tls(tls: Arc<tokio_rustls::rustls::ServerConfig>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a local port");
        let address = listener.local_addr().expect("the local address");
        let state = Arc::new(Mutex::new(State {
            version: 100,
            ..State::default()
        }));
        let shared = state.clone();
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let server = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let shared = shared.clone();
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(
                        move |request: hyper::Request<hyper::body::Incoming>| {
                            let shared = shared.clone();
                            async move {
                                Ok::<_, Infallible>(
                                    handle(shared, request.map(axum::body::Body::new)).await,
                                )
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Self {
            address,
            state,
            server,
            scheme: "https",
        }
    }

    /// A client for this server whose default namespace is `namespace`, with `kube`'s
    /// defaults (its own retry layer included). To test what the CLI runs, connect through
    /// [`FakeApi::write_kubeconfig`] and `runbook_kube::connect` instead.
    pub fn client(&self, namespace: &str) -> kube::Client {
        let mut config = kube::Config::new(self.url().parse().expect("the server's URL"));
        config.default_namespace = namespace.to_owned();
        kube::Client::try_from(config).expect("a client")
    }

    /// Writes a kubeconfig whose one context, `fake`, points at this server with the bearer
    /// token `fake-token` and the namespace `namespace`; returns its path.
    pub fn write_kubeconfig(&self, dir: &std::path::Path, namespace: &str) -> std::path::PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1
kind: Config
current-context: fake
clusters:
- name: fake
  cluster: {{server: '{}'}}
users:
- name: fake
  user: {{token: fake-token}}
contexts:
- name: fake
  context: {{cluster: fake, user: fake, namespace: {namespace}}}
",
            self.url()
        );
        std::fs::write(&path, text).expect("write the kubeconfig");
        path
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Stores an object as if it had been created (uid, creationTimestamp, resourceVersion).
    pub fn insert(&self, object: Json) -> Json {
        let (resource, key) = Key::of(&object);
        let mut state = self.lock();
        let object = state.fill_new(resource, &key, object);
        state.store(key, object, "ADDED")
    }

    pub fn object(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Json> {
        let resource = by_kind(api_version, kind)?;
        self.lock()
            .objects
            .get(&Key::new(resource, namespace, name))
            .cloned()
    }

    /// Changes a stored object as another client would: a new resourceVersion and a
    /// MODIFIED event for watchers.
    pub fn modify(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        change: impl FnOnce(&mut Json),
    ) -> Json {
        let resource = by_kind(api_version, kind).expect("a kind the fake serves");
        let key = Key::new(resource, namespace, name);
        let mut state = self.lock();
        let mut object = state.objects.get(&key).cloned().expect("a stored object");
        change(&mut object);
        state.store(key, object, "MODIFIED")
    }

    /// Every stored object, in a fixed order.
    pub fn objects(&self) -> Vec<Json> {
        self.lock().objects.values().cloned().collect()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// A bearer token a TokenReview authenticates as `username` in `groups` (with
    /// `system:authenticated` added, as the API server adds it).
    pub fn add_token(&self, token: &str, username: &str, groups: &[&str]) {
        let mut groups: Vec<&str> = groups.to_vec();
        groups.push("system:authenticated");
        let user = serde_json::json!({
            "username": username,
            "uid": format!("uid-{username}"),
            "groups": groups,
        });
        self.lock().tokens.insert(token.to_owned(), user);
    }

    /// What SubjectAccessReviews allow from now on.
    pub fn grant(&self, grant: crate::Grant) {
        self.lock().grants.push(grant);
    }

    /// Delays every answer by `latency`, as a real API server's own time would.
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    pub fn fault(&self, fault: Fault) {
        self.lock().faults.push(fault);
    }

    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    pub fn set_logs(&self, namespace: &str, pod: &str, container: &str, log: &str) {
        let key = (namespace.to_owned(), pod.to_owned(), container.to_owned());
        self.lock().logs.insert(key, log.to_owned());
    }

    /// The log of the container's previous instance, as if it had restarted: what a read
    /// with `previous=true` answers (without it, that read is refused with 400).
    pub fn set_previous_logs(&self, namespace: &str, pod: &str, container: &str, log: &str) {
        let key = (namespace.to_owned(), pod.to_owned(), container.to_owned());
        self.lock().previous_logs.insert(key, log.to_owned());
    }

    pub fn script_exec(&self, namespace: &str, pod: &str, argv: &[&str], reply: ExecReply) {
        let argv = argv.iter().map(|a| (*a).to_owned()).collect();
        self.lock()
            .execs
            .insert((namespace.to_owned(), pod.to_owned(), argv), reply);
    }

    /// Sends an event to the open watches that want `object` (an `ERROR` event's object is a
    /// Status and goes to every watch).
    pub fn push_watch_event(&self, event_type: &str, object: &Json) {
        let state = self.lock();
        for watcher in &state.watchers {
            let wanted = event_type == "ERROR" || {
                let (_, key) = Key::of(object);
                watcher.wants(&key, object)
            };
            if wanted {
                watcher.send(event_type, object);
            }
        }
    }

    /// Ends every open watch, as the server does at its timeout.
    pub fn end_watches(&self) {
        self.lock().watchers.clear();
    }

    /// Forgets the history, as the API server's watch cache does as it moves on: a watch
    /// from a version older than the current one gets 410 Gone.
    pub fn compact(&self) {
        let mut state = self.lock();
        state.compacted = state.version;
        state.history.clear();
    }

    /// Waits (up to 5 s) until the recorded requests satisfy `done`.
    pub async fn wait_until(&self, what: &str, done: impl Fn(&[Recorded]) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !done(&self.lock().requests) {
            if tokio::time::Instant::now() > deadline {
                let seen: Vec<String> = self.requests().iter().map(Recorded::line).collect();
                panic!("timed out waiting for {what}; requests so far: {seen:#?}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

pub(crate) async fn handle(
    state: Arc<Mutex<State>>,
    request: axum::extract::Request,
) -> Response<Body> {
    let (mut parts, body) = request.into_parts();
    let upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
    let body = axum::body::to_bytes(body, 64 << 20)
        .await
        .unwrap_or_default();
    let (reply, latency) = {
        let mut state = lock(&state);
        (state.answer(Recorded::new(&parts, &body)), state.latency)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let response = Response::builder();
    match reply {
        Reply::Json {
            code,
            body,
            retry_after,
        } => {
            let mut response = response
                .status(code)
                .header(header::CONTENT_TYPE, "application/json");
            if let Some(seconds) = retry_after {
                response = response.header(header::RETRY_AFTER, seconds.to_string());
            }
            response.body(Body::from(body.to_string()))
        }
        Reply::Text(text) => response
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Body::from(text)),
        Reply::Watch { events, timeout } => {
            let deadline = tokio::time::Instant::now() + timeout;
            let stream = futures::stream::unfold(events, move |mut events| async move {
                match tokio::time::timeout_at(deadline, events.recv()).await {
                    Ok(Some(line)) => Some((Ok::<_, Infallible>(line), events)),
                    _ => None,
                }
            });
            response
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from_stream(stream))
        }
        Reply::Exec(frames) => return exec_upgrade(&parts, upgrade, frames),
        Reply::Hang => std::future::pending().await,
    }
    .expect("a response")
}

/// Answers the WebSocket upgrade with the v4 channel protocol (or v5, if only that is
/// offered), then sends the frames and closes.
pub(crate) fn exec_upgrade(
    parts: &Parts,
    upgrade: Option<hyper::upgrade::OnUpgrade>,
    frames: Vec<Vec<u8>>,
) -> Response<Body> {
    let header = |name: header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let offered: Vec<&str> = header(header::SEC_WEBSOCKET_PROTOCOL)
        .split(',')
        .map(str::trim)
        .collect();
    let protocol = ["v4.channel.k8s.io", "v5.channel.k8s.io"]
        .into_iter()
        .find(|p| offered.contains(p));
    let key = header(header::SEC_WEBSOCKET_KEY);
    let (Some(upgrade), Some(protocol), false, true) = (
        upgrade,
        protocol,
        key.is_empty(),
        header(header::UPGRADE).eq_ignore_ascii_case("websocket"),
    ) else {
        let body = status(400, "BadRequest", "Upgrade request required", json!({}));
        return Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .expect("a response");
    };
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else {
            return;
        };
        let mut socket = tokio_tungstenite::WebSocketStream::from_raw_socket(
            hyper_util::rt::TokioIo::new(upgraded),
            Role::Server,
            None,
        )
        .await;
        for frame in frames {
            if socket
                .send(websocket::Message::binary(frame))
                .await
                .is_err()
            {
                return;
            }
        }
        let _ = socket.close(None).await;
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(
            header::SEC_WEBSOCKET_ACCEPT,
            websocket::handshake::derive_accept_key(key.as_bytes()),
        )
        .header(header::SEC_WEBSOCKET_PROTOCOL, protocol)
        .body(Body::empty())
        .expect("a response")
}
