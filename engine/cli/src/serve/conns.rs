//! The server's connections: the accept loop, hyper serving the router on each connection,
//! and the header-read timeout.
//!
//! `axum::serve` has no header-read timeout, so the loop is written here over hyper 1.x:
//! `hyper::server::conn::http1` with a timer serves each connection, and `hyper_util`'s
//! `GracefulShutdown` lets the requests in flight finish when the server stops.

use std::future::Future;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

/// The connection bounds of `runbook serve`.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// How long a client may take to send a request's head, from the connection's start or
    /// the end of its previous answer: idle keep-alive connections are closed after it too.
    pub header_timeout: Duration,
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
    limits: Limits,
    stop: impl Future<Output = ()>,
) {
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
        let connection =
            graceful.watch(http.serve_connection(TokioIo::new(stream), service.clone()));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                // A header timeout, a malformed request, a client gone: theirs, not the
                // server's.
                tracing::debug!(client = %peer, %error, "connection closed on an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
