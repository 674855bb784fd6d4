//! The HTTP layer both servers (node and keeper) stand on: the TLS accept loop, what a
//! connection may make a server spend, how answers map to HTTP statuses, and the errors of
//! loading a server.
//!
//! Limits: connections at once (in all and per address), time to send headers and bodies, body
//! sizes per operation, and requests worked on at once. Every limit comes from
//! [`ServerLimits`] in the server's configuration.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod attest;
pub mod log;
pub mod metrics;
pub mod plain;

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use obscura_proto::{limits, ErrorCode, Response, ResponseBody};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use obscura_cluster::server::ServerLimits;

/// Errors loading a server: its files, or its store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Its files: configuration, sealed secrets, TLS material, permissions, locks.
    #[error(transparent)]
    Files(#[from] obscura_cluster::Error),
    /// The store does not open.
    #[error(transparent)]
    Store(#[from] obscura_store::Error),
}

impl Error {
    /// Sealed secrets that do not open or hold what they should.
    pub fn secrets(reason: impl Into<String>) -> Error {
        Error::Files(obscura_cluster::Error::Secrets(reason.into()))
    }

    /// A configuration file `path` that is malformed or out of range.
    pub fn config(path: &std::path::Path, reason: impl Into<String>) -> Error {
        Error::Files(obscura_cluster::server::config_error(path, reason))
    }
}

/// The environment variable that names, to a server a local cluster started (`obscura cluster
/// up`, the laboratory), the process that started it: the server stops when its parent is no
/// longer that process (it died, however it was killed), so no server outlives its cluster.
pub const STOP_WITH_PARENT: &str = "OBSCURA_STOP_WITH_PARENT";

/// Longest a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The limits of one server, shared by its connections.
#[derive(Debug)]
pub struct Guard {
    limits: ServerLimits,
    connections: Arc<Semaphore>,
    per_source: Mutex<HashMap<IpAddr, usize>>,
    in_flight: Arc<Semaphore>,
    uploads: Arc<Semaphore>,
    refusals: metrics::ConnectionRefusals,
}

/// A connection's place, given back when it closes.
struct Admitted {
    guard: Arc<Guard>,
    source: IpAddr,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut per = self
            .guard
            .per_source
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = per.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                per.remove(&self.source);
            }
        }
    }
}

impl Guard {
    /// The limits `limits`, for one server's connections to share.
    pub fn new(limits: ServerLimits) -> Arc<Guard> {
        Self::counted(limits, metrics::ConnectionRefusals::default())
    }

    /// [`new`](Self::new), counting the connections it refuses, and those whose TLS handshake
    /// fails, in `refusals`.
    pub fn counted(limits: ServerLimits, refusals: metrics::ConnectionRefusals) -> Arc<Guard> {
        Arc::new(Guard {
            connections: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            per_source: Mutex::default(),
            in_flight: Arc::new(Semaphore::new(limits.max_in_flight.max(1))),
            uploads: Arc::new(Semaphore::new(limits.max_uploads.max(1))),
            limits,
            refusals,
        })
    }

    /// A place for a new connection from `source`, or `None` when the server or that address
    /// has as many as it allows (the connection is then closed at once).
    fn admit(self: &Arc<Self>, source: IpAddr) -> Option<Admitted> {
        let Ok(permit) = self.connections.clone().try_acquire_owned() else {
            self.refusals.count("limit");
            return None;
        };
        let mut per = self.per_source.lock().unwrap_or_else(|e| e.into_inner());
        let n = per.entry(source).or_default();
        if *n >= self.limits.max_connections_per_source {
            self.refusals.count("per_source");
            return None;
        }
        *n += 1;
        Some(Admitted {
            guard: self.clone(),
            source,
            _permit: permit,
        })
    }

    /// Read a request body of at most `limit` bytes within the body timeout. A large upload
    /// (`upload`) first waits, within the same time, for one of the few places for uploads, so
    /// that concurrent large bodies cannot exhaust memory.
    pub async fn body(
        &self,
        body: Body,
        limit: usize,
        upload: bool,
    ) -> Result<(Bytes, Option<OwnedSemaphorePermit>), ResponseBody> {
        let too_large = || {
            error(
                ErrorCode::TooLarge,
                format!("the request body is over {limit} bytes, or broke off"),
            )
        };
        // A body announced larger than the limit is refused before a byte of it is read.
        if axum::body::HttpBody::size_hint(&body).lower() > limit as u64 {
            return Err(too_large());
        }
        let timeout = Duration::from_secs(self.limits.body_timeout_s.max(1));
        let read = async {
            let permit = if upload {
                Some(
                    self.uploads
                        .clone()
                        .acquire_owned()
                        .await
                        .map_err(|_| error(ErrorCode::Internal, "shutting down"))?,
                )
            } else {
                None
            };
            axum::body::to_bytes(body, limit)
                .await
                .map(|b| (b, permit))
                .map_err(|_| too_large())
        };
        tokio::time::timeout(timeout, read)
            .await
            .unwrap_or_else(|_| {
                Err(error(
                    ErrorCode::BadRequest,
                    format!("the request body took longer than {} s", timeout.as_secs()),
                ))
            })
    }

    /// Run `process` off the async workers, at most `max_in_flight` at once, and encode what it
    /// answers with its HTTP status.
    pub async fn respond(
        &self,
        process: impl FnOnce() -> ResponseBody + Send + 'static,
    ) -> (StatusCode, Vec<u8>) {
        let body = match self.in_flight.clone().acquire_owned().await {
            Ok(permit) => tokio::task::spawn_blocking(move || {
                let _permit = permit;
                process()
            })
            .await
            .unwrap_or_else(|e| error(ErrorCode::Internal, e.to_string())),
            Err(_) => error(ErrorCode::Internal, "shutting down"),
        };
        encode(body)
    }
}

/// A response body with its HTTP status.
pub fn encode(body: ResponseBody) -> (StatusCode, Vec<u8>) {
    (status_of(&body), Response(body).encode())
}

/// The body limit of operation `op`: prepares carry image shares, nothing else is large.
pub fn body_limit(op: &str) -> (usize, bool) {
    if op == "prepare" {
        (limits::MAX_PREPARE_BODY, true)
    } else if op == "reduce" {
        (limits::MAX_REDUCE_BODY, false)
    } else {
        (limits::MAX_BODY, false)
    }
}

/// Accept TLS connections on `listener` within `guard`'s limits and serve each with the router
/// `app_for` makes from its TLS session, running `tick` (off the async workers) every `every`,
/// until `shutdown` completes; then close every connection and run `last` (off the async
/// workers too), whose result this returns.
#[allow(clippy::too_many_arguments)]
pub async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    guard: Arc<Guard>,
    app_for: impl Fn(&rustls::ServerConnection, std::net::SocketAddr) -> Router + Send + Sync + 'static,
    every: Duration,
    tick: impl Fn() -> Result<(), obscura_store::Error> + Clone + Send + 'static,
    shutdown: impl Future<Output = ()>,
    last: impl FnOnce() -> Result<(), obscura_store::Error> + Send + 'static,
) -> Result<(), obscura_store::Error> {
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    tokio::pin!(shutdown);
    // Connections are tracked so that stopping the server closes them too (a kept-alive
    // connection must not outlive it and keep answering from its store).
    let mut connections = tokio::task::JoinSet::new();
    let app_for = Arc::new(app_for);
    let header_timeout = Duration::from_secs(guard.limits.header_timeout_s.max(1));
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = ticker.tick() => {
                // Failures are retried at the next tick.
                let _ = tokio::task::spawn_blocking(tick.clone()).await;
            }
            accepted = listener.accept() => {
                let Ok((tcp, peer)) = accepted else { continue };
                let Some(place) = guard.admit(peer.ip()) else {
                    continue; // over the connection limits: closed at once
                };
                // Small TLS records must not wait for delayed ACKs (40 ms per round on Linux).
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let app_for = app_for.clone();
                let refusals = guard.refusals.clone();
                connections.spawn(async move {
                    let _place = place;
                    let Ok(Ok(tls)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await else {
                        refusals.count("handshake");
                        return; // refused or timed out handshake
                    };
                    let service = TowerToHyperService::new(app_for(tls.get_ref().1, peer));
                    // The header timeout also closes a kept-alive connection that sends nothing.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(header_timeout)
                        .max_buf_size(64 << 10)
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        }
    }
    drop(listener);
    connections.abort_all();
    while connections.join_next().await.is_some() {}
    tokio::task::spawn_blocking(last)
        .await
        .map_err(|e| obscura_store::Error::Storage(e.to_string()))?
}

/// `Body` for handlers, re-exported so servers share one type.
pub type HttpBody = Body;

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// An error answer.
pub fn error(code: ErrorCode, message: impl Into<String>) -> ResponseBody {
    ResponseBody::Error {
        code,
        message: message.into(),
    }
}

/// The HTTP status an answer goes with.
pub fn status_of(body: &ResponseBody) -> StatusCode {
    match body {
        ResponseBody::Error { code, .. } => match code {
            ErrorCode::BadRequest | ErrorCode::UnsupportedVersion => StatusCode::BAD_REQUEST,
            ErrorCode::Replay | ErrorCode::AlreadyExists => StatusCode::CONFLICT,
            ErrorCode::Stale => StatusCode::FORBIDDEN,
            ErrorCode::UnknownImage => StatusCode::NOT_FOUND,
            ErrorCode::Rejected => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::OverBudget => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::UnknownKey => StatusCode::NOT_FOUND,
            ErrorCode::NoSession | ErrorCode::LoginFailed | ErrorCode::Unauthorized => {
                StatusCode::UNAUTHORIZED
            }
            ErrorCode::TooManyAttempts | ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::RolledBack => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::StorageFull => StatusCode::INSUFFICIENT_STORAGE,
        },
        ResponseBody::Ok
        | ResponseBody::Lookup { .. }
        | ResponseBody::Evaluate { .. }
        | ResponseBody::QueryChecked { .. }
        | ResponseBody::Opened { .. }
        | ResponseBody::Listed { .. }
        | ResponseBody::Evidence { .. }
        | ResponseBody::ReleaseChallenge { .. }
        | ResponseBody::Released { .. }
        | ResponseBody::RoomChallenge { .. }
        | ResponseBody::RoomReleased { .. }
        | ResponseBody::Resolved { .. }
        | ResponseBody::Checkpointed { .. }
        | ResponseBody::LedgerAppended(_)
        | ResponseBody::LedgerHead(_)
        | ResponseBody::LedgerCommitted { .. }
        | ResponseBody::LedgerEntries { .. }
        | ResponseBody::Fetch { .. }
        | ResponseBody::Status { .. }
        | ResponseBody::Audit { .. }
        | ResponseBody::KeeperEvaluated { .. }
        | ResponseBody::Rotation { .. }
        | ResponseBody::KeeperRekeyed { .. }
        | ResponseBody::Provisioned { .. }
        | ResponseBody::RecoveryPart(_)
        | ResponseBody::RecoveryRefused { .. }
        | ResponseBody::KeeperRegistration { .. }
        | ResponseBody::KeeperLoginStarted { .. }
        | ResponseBody::KeeperSession { .. }
        | ResponseBody::KeeperSealed { .. }
        | ResponseBody::Secret { .. }
        | ResponseBody::Secrets { .. }
        | ResponseBody::Events { .. }
        | ResponseBody::DkgPackages { .. }
        | ResponseBody::DkgDone { .. }
        | ResponseBody::SignCommitment { .. }
        | ResponseBody::CapabilityOffer { .. }
        | ResponseBody::SignatureShare { .. } => StatusCode::OK,
    }
}

/// A store failure as the caller sees it.
pub fn store_error(e: obscura_store::Error) -> ResponseBody {
    use obscura_store::Error as E;
    let code = match &e {
        E::Replay => ErrorCode::Replay,
        E::Stale { .. } => ErrorCode::Stale,
        E::UnknownImage(_) => ErrorCode::UnknownImage,
        E::AlreadyExists(_) => ErrorCode::AlreadyExists,
        E::Invalid(_) => ErrorCode::BadRequest,
        E::OverBudget { .. } => ErrorCode::OverBudget,
        E::KeyVersion { .. } => ErrorCode::UnknownKey,
        E::ElementsChanged => ErrorCode::Internal,
        E::RolledBack { .. } => ErrorCode::RolledBack,
        E::DiskFull { .. } => ErrorCode::StorageFull,
        E::Open { .. } | E::WrongNode { .. } | E::Storage(_) | E::Corrupt(_) => ErrorCode::Internal,
    };
    error(code, e.to_string())
}

/// A request that does not decode, as the caller sees it.
pub fn proto_error(e: obscura_proto::Error) -> ResponseBody {
    use obscura_proto::Error as E;
    let code = match e {
        E::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
        E::BadMagic | E::Malformed(_) | E::BadSize(_) | E::OtherServer(_) => ErrorCode::BadRequest,
    };
    error(code, e.to_string())
}

/// An audit log page as it goes on the wire.
pub fn wire_audit(entries: Vec<obscura_store::AuditEntry>, total: u64) -> ResponseBody {
    ResponseBody::Audit {
        entries: entries.into_iter().map(Into::into).collect(),
        total,
    }
}

/// A rotation factor `ρ` from the wire: a canonical non-zero scalar.
pub fn scalar(bytes: &[u8; 32]) -> Result<obscura_keeper::Scalar, ResponseBody> {
    Option::<obscura_keeper::Scalar>::from(obscura_keeper::Scalar::from_canonical_bytes(*bytes))
        .filter(|s| *s != obscura_keeper::Scalar::ZERO)
        .ok_or_else(|| {
            error(
                ErrorCode::BadRequest,
                "the rotation factor is not a canonical non-zero scalar",
            )
        })
}
