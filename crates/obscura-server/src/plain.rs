//! Plain HTTP/1.1 for listeners that only their own machine or network reaches: a server's
//! metrics, and the client's local web app (`obscura serve`). No TLS, so every connection is
//! bounded here instead: how many at once, how long its headers may take, how long it may
//! stay open.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// What a connection may spend.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections served at once; further ones are closed at once.
    pub connections: usize,
    /// Time for a request's headers to arrive.
    pub header_time: Duration,
    /// Time a connection may stay open; then it takes no new request, and the one in
    /// progress has `grace` more to finish.
    pub lifetime: Duration,
    /// Time the request in progress at the end of `lifetime` has to finish.
    pub grace: Duration,
    /// Bytes of headers buffered.
    pub header_bytes: usize,
}

/// Serve `app` on `listener` within `limits`, until this future is dropped (which ends every
/// connection it opened).
pub async fn serve(listener: TcpListener, app: Router, limits: Limits) {
    let places = Arc::new(Semaphore::new(limits.connections));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            Some(_) = connections.join_next() => {}
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else {
                    // Out of descriptors, say: do not spin on it.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let Ok(place) = places.clone().try_acquire_owned() else {
                    continue; // busy: closed at once
                };
                let service = TowerToHyperService::new(app.clone());
                connections.spawn(async move {
                    let _place = place;
                    // Headers within `header_time`, an idle connection's next request's too.
                    let connection = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(limits.header_time)
                        .max_buf_size(limits.header_bytes.max(8192))
                        .serve_connection(TokioIo::new(tcp), service);
                    tokio::pin!(connection);
                    tokio::select! {
                        _ = connection.as_mut() => {}
                        _ = tokio::time::sleep(limits.lifetime) => {
                            // No new request; the one in progress may finish, within `grace`.
                            connection.as_mut().graceful_shutdown();
                            let _ = tokio::time::timeout(limits.grace, connection).await;
                        }
                    }
                });
            }
        }
    }
}
