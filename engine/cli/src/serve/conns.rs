//! The server's connections: the accept loop, hyper serving the router on each connection,
//! the header-read timeout, and the connection limits (in total and per client IP).
//!
//! `axum::serve` has neither a header-read timeout nor a connection limit, so the loop is
//! written here over hyper 1.x: `hyper::server::conn::http1` with a timer serves each
//! connection, and `hyper_util`'s `GracefulShutdown` lets the requests in flight finish when
//! the server stops.
//!
//! A connection over a limit is accepted, answered `503` with `Retry-After`, `Connection:
//! close` and a JSON `{"error": ...}` naming the limit, and closed; it is counted in
//! `runbook_connections_refused_total`, and warned of at most once a minute per client.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use super::{lock, metrics, Server};

/// How long the answer to a refused connection may take, from its first byte written to the
/// close (the client's request is read and dropped meanwhile, so the close does not reset
/// the connection and lose the answer before the client reads it).
const REFUSAL_TIME: Duration = Duration::from_secs(2);

/// Refused connections being answered at once; past this (a flood), a refused connection is
/// closed without an answer, so refusing costs no more than this many sockets and tasks.
const MAX_REFUSING: usize = 256;

/// What a refused connection may send before it is closed regardless.
const REFUSAL_DRAIN: usize = 64 * 1024;

/// A client is warned of at most once per this.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Clients whose last warning is remembered; past this, refusals of other clients within the
/// minute are warned of once, together.
const WARNED_CLIENTS: usize = 4096;

/// The connection limits of `runbook serve`.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// How long a client may take to send a request's head, from the connection's start or
    /// the end of its previous answer: idle keep-alive connections are closed after it too.
    pub header_timeout: Duration,
    /// Connections open at once.
    pub total: usize,
    /// Connections open at once from one client IP address.
    pub per_client: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    Total,
    PerClient,
}

impl Refusal {
    /// The `reason` label, and the limit's flag.
    fn reason(self) -> &'static str {
        match self {
            Self::Total => "total",
            Self::PerClient => "per-client",
        }
    }

    fn limit(self, limits: &Limits) -> usize {
        match self {
            Self::Total => limits.total,
            Self::PerClient => limits.per_client,
        }
    }

    fn message(self, limits: &Limits) -> String {
        match self {
            Self::Total => format!(
                "the server has {} connections open, its limit (--max-connections); connect again later",
                limits.total
            ),
            Self::PerClient => format!(
                "this client has {} connections open, the limit per client (--max-connections-per-client); close one or connect again later",
                limits.per_client
            ),
        }
    }
}

/// Connections open, in total and by client.
#[derive(Default)]
struct Open {
    total: usize,
    by_client: HashMap<IpAddr, usize>,
}

/// When a client was last warned of, and its refusals since then.
struct Warned {
    at: Instant,
    unlogged: u64,
}

#[derive(Default)]
struct Warnings {
    clients: HashMap<IpAddr, Warned>,
    /// The last warning for the clients past `WARNED_CLIENTS`, and their refusals since.
    overflow: Option<Warned>,
}

struct Connections {
    server: Arc<Server>,
    limits: Limits,
    open: Mutex<Open>,
    warnings: Mutex<Warnings>,
    refusing: Arc<tokio::sync::Semaphore>,
    /// The whole answer to a refused connection, by `Refusal`: total, per-client.
    answers: [Bytes; 2],
}

/// A connection counted in `Open`, until dropped.
struct Admitted {
    connections: Arc<Connections>,
    client: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = lock(&self.connections.open);
        open.total = open.total.saturating_sub(1);
        if let Some(count) = open.by_client.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                open.by_client.remove(&self.client);
            }
        }
        drop(open);
        self.connections.server.metrics.connections_open.dec();
    }
}

impl Connections {
    fn new(server: Arc<Server>, limits: Limits) -> Self {
        let retry_after = server.retry_after.as_secs().max(1);
        let answer = |refusal: Refusal| {
            let body = serde_json::json!({ "error": refusal.message(&limits) }).to_string();
            Bytes::from(format!(
                "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: {retry_after}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            ))
        };
        Self {
            answers: [answer(Refusal::Total), answer(Refusal::PerClient)],
            server,
            limits,
            open: Mutex::new(Open::default()),
            warnings: Mutex::new(Warnings::default()),
            refusing: Arc::new(tokio::sync::Semaphore::new(MAX_REFUSING)),
        }
    }

    /// Counts a new connection of `client` in, unless it is over a limit (the client's own
    /// first, so a client over its limit is told so even when the server is full).
    fn admit(self: &Arc<Self>, client: IpAddr) -> Result<Admitted, Refusal> {
        let mut open = lock(&self.open);
        if open.by_client.get(&client).copied().unwrap_or(0) >= self.limits.per_client {
            return Err(Refusal::PerClient);
        }
        if open.total >= self.limits.total {
            return Err(Refusal::Total);
        }
        open.total += 1;
        *open.by_client.entry(client).or_default() += 1;
        drop(open);
        self.server.metrics.connections_open.inc();
        Ok(Admitted {
            connections: self.clone(),
            client,
        })
    }

    /// Counts and answers a refused connection, and closes it.
    fn refuse(&self, stream: TcpStream, client: IpAddr, refusal: Refusal) {
        self.server
            .metrics
            .connections_refused
            .get_or_create(&metrics::RefusalLabel {
                reason: refusal.reason().to_owned(),
            })
            .inc();
        self.warn(client, refusal);
        let Ok(permit) = self.refusing.clone().try_acquire_owned() else {
            // Too many answers in progress: dropped, the connection closes unanswered.
            return;
        };
        let answer = self.answers[match refusal {
            Refusal::Total => 0,
            Refusal::PerClient => 1,
        }]
        .clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tokio::time::timeout(REFUSAL_TIME, answer_and_close(stream, answer)).await;
        });
    }

    /// Warns of a refusal, at most once a minute per client: a flood of connections must not
    /// flood the log (the counter counts each).
    fn warn(&self, client: IpAddr, refusal: Refusal) {
        let now = Instant::now();
        let mut warnings = lock(&self.warnings);
        let due = |warned: &mut Warned| {
            if now.duration_since(warned.at) < WARN_EVERY {
                warned.unlogged += 1;
                None
            } else {
                let unlogged = warned.unlogged;
                *warned = Warned {
                    at: now,
                    unlogged: 0,
                };
                Some(unlogged)
            }
        };
        let (unlogged, overflow) = if let Some(warned) = warnings.clients.get_mut(&client) {
            (due(warned), false)
        } else {
            if warnings.clients.len() >= WARNED_CLIENTS {
                warnings
                    .clients
                    .retain(|_, warned| now.duration_since(warned.at) < WARN_EVERY);
            }
            if warnings.clients.len() < WARNED_CLIENTS {
                warnings.clients.insert(
                    client,
                    Warned {
                        at: now,
                        unlogged: 0,
                    },
                );
                (Some(0), false)
            } else {
                match &mut warnings.overflow {
                    Some(warned) => (due(warned), true),
                    None => {
                        warnings.overflow = Some(Warned {
                            at: now,
                            unlogged: 0,
                        });
                        (Some(0), true)
                    }
                }
            }
        };
        drop(warnings);
        let Some(unlogged) = unlogged else { return };
        let limit = refusal.limit(&self.limits);
        if overflow {
            tracing::warn!(
                client = %client,
                reason = refusal.reason(),
                limit,
                refused_unlogged = unlogged,
                "refused connections of many clients over a connection limit (warning once a minute for all of them)"
            );
        } else {
            tracing::warn!(
                client = %client,
                reason = refusal.reason(),
                limit,
                refused_unlogged = unlogged,
                "refused a connection over a connection limit (warning once a minute per client)"
            );
        }
    }
}

/// Writes the whole `answer`, closes the writing side, then reads what the client sends until
/// it closes its side too (at most `REFUSAL_DRAIN` bytes; the caller bounds the time).
async fn answer_and_close(mut stream: TcpStream, answer: Bytes) -> std::io::Result<()> {
    stream.write_all(&answer).await?;
    stream.shutdown().await?;
    let mut sink = [0_u8; 4096];
    let mut drained = 0;
    while drained < REFUSAL_DRAIN {
        match stream.read(&mut sink).await? {
            0 => break,
            read => drained += read,
        }
    }
    Ok(())
}

/// Accept errors about one connection (the client gave up before it was accepted): the next
/// accept is tried at once.
fn is_connection_error(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// Serves `router` on the connections of `listener` until `stop`; then accepts no more, lets
/// every connection finish the request it is in (idle ones close at once, a half-sent request
/// head within the header timeout), and returns when all are closed.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    server: Arc<Server>,
    limits: Limits,
    stop: impl Future<Output = ()>,
) {
    let connections = Arc::new(Connections::new(server, limits));
    let mut http = hyper::server::conn::http1::Builder::new();
    // The timer drives the header-read timeout (hyper panics on one without a timer).
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let service = TowerToHyperService::new(router);
    let graceful = GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut stop => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) if is_connection_error(&error) => continue,
            Err(error) => {
                // Out of file descriptors, most likely: wait for some to be closed.
                tracing::error!(%error, "cannot accept a connection; trying again in a second");
                tokio::select! {
                    () = &mut stop => break,
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        let client = peer.ip().to_canonical();
        match connections.admit(client) {
            Ok(admitted) => {
                let connection =
                    graceful.watch(http.serve_connection(TokioIo::new(stream), service.clone()));
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        // A header timeout, a malformed request, a client gone: theirs, not
                        // the server's.
                        tracing::debug!(client = %peer, %error, "connection closed on an error");
                    }
                    drop(admitted);
                });
            }
            Err(refusal) => connections.refuse(stream, client, refusal),
        }
    }
    drop(listener);
    graceful.shutdown().await;
}
