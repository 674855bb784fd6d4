//! A server's metrics in the Prometheus (OpenMetrics) text format, on an admin listener of its
//! own: plain HTTP, `GET /metrics`, for a scraper on the same host or a private network.
//!
//! What they carry is what an operator watches, never what a request says: answers counted by
//! operation and outcome, time to answer by operation, and gauges the server reads from its
//! store every [`REFRESH`] (store sizes, audit height, key versions), never for a scrape. No
//! label holds a user's name, a token, an image id or anything else a client chose; an
//! operation's label is one of the server's own (a request the server could not read is
//! `invalid`), so no client can add label values without end. Per request, though, a scraper
//! that reads often learns what TLS hides from the network: bind it where only the operator
//! reaches it ([`check_address`] refuses public addresses).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use obscura_proto::{ErrorCode, ResponseBody};
use prometheus_client::encoding::EncodeLabelSet;
pub use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
pub use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::exponential_buckets;
pub use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// Scrapes served at once; further connections are closed at once.
const CONNECTIONS: usize = 4;

/// How long one connection may stay open.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// The content type of the OpenMetrics text format.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Answer {
    op: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Op {
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

/// Connections closed before their TLS session was set up, by why: `limit` (the server holds as many as
/// it allows), `per_source` (so does that address) or `handshake` (TLS failed or took too long).
/// One that set up TLS and then sent no request in time is not counted.
#[derive(Clone, Debug, Default)]
pub struct ConnectionRefusals(Family<Reason, Counter>);

impl ConnectionRefusals {
    /// Count one, for `reason` (one of the three above).
    pub(crate) fn count(&self, reason: &'static str) {
        self.0.get_or_create(&Reason { reason }).inc();
    }
}

/// Time to answer: 0.5 ms to 16 s, doubling.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// One server's metrics.
pub struct Metrics {
    registry: Registry,
    answers: Family<Answer, Counter>,
    seconds: Family<Op, Histogram, fn() -> Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Answers and times, under the prefix `obscura`.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("obscura");
        let answers = Family::<Answer, Counter>::default();
        registry.register(
            "answers",
            "Requests answered, by operation and outcome (ok, or the refusal's code)",
            answers.clone(),
        );
        let seconds = Family::<Op, Histogram, fn() -> Histogram>::new_with_constructor(latency);
        registry.register(
            "answer_seconds",
            "Time from a request's arrival to its answer, by operation (lookup is Stage 1; \
             check-query, evaluate and reduce are Stage 2)",
            seconds.clone(),
        );
        Metrics {
            registry,
            answers,
            seconds,
        }
    }

    /// A gauge named `obscura_<name>`, for the server to set (every [`REFRESH`], or as it
    /// changes).
    pub fn gauge(&mut self, name: &str, help: &str) -> Gauge {
        let g = Gauge::default();
        self.registry.register(name, help, g.clone());
        g
    }

    /// A counter named `obscura_<name>_total`.
    pub fn counter(&mut self, name: &str, help: &str) -> Counter {
        let c = Counter::default();
        self.registry.register(name, help, c.clone());
        c
    }

    /// A histogram named `obscura_<name>` with these bucket bounds, for the server to observe.
    pub fn histogram(
        &mut self,
        name: &str,
        help: &str,
        buckets: impl Iterator<Item = f64>,
    ) -> Histogram {
        let h = Histogram::new(buckets);
        self.registry.register(name, help, h.clone());
        h
    }

    /// The count of connections refused before TLS, for the server's
    /// [`Guard`](crate::Guard) to keep.
    pub fn connection_refusals(&mut self) -> ConnectionRefusals {
        let refusals = ConnectionRefusals::default();
        self.registry.register(
            "connections_refused",
            "Connections closed before TLS was set up, by reason: limit (the server's \
             connection limit), per_source (one address's), handshake (TLS failed or timed out)",
            refusals.0.clone(),
        );
        refusals
    }

    /// Count `answer` to a request for `op` (one of the server's operation names, or
    /// `invalid`), which took `took`; a refusal is also logged ([`crate::log::refused`]).
    pub fn answered(&self, op: &'static str, answer: &ResponseBody, took: Duration) {
        let outcome = match answer {
            ResponseBody::Error { code, .. } => code_name(*code),
            _ => "ok",
        };
        self.answers.get_or_create(&Answer { op, outcome }).inc();
        if outcome != "ok" {
            crate::log::refused(op, outcome, took);
        }
        self.seconds
            .get_or_create(&Op { op })
            .observe(took.as_secs_f64());
    }

    /// Every metric, in the OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// A refusal's code as a label value.
fn code_name(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::BadRequest => "bad_request",
        ErrorCode::UnsupportedVersion => "unsupported_version",
        ErrorCode::Replay => "replay",
        ErrorCode::Stale => "stale",
        ErrorCode::UnknownImage => "unknown_image",
        ErrorCode::AlreadyExists => "already_exists",
        ErrorCode::Rejected => "rejected",
        ErrorCode::Internal => "internal",
        ErrorCode::OverBudget => "over_budget",
        ErrorCode::UnknownKey => "unknown_key",
        ErrorCode::NoSession => "no_session",
        ErrorCode::LoginFailed => "login_failed",
        ErrorCode::TooManyAttempts => "too_many_attempts",
        ErrorCode::Forbidden => "forbidden",
        ErrorCode::RolledBack => "rolled_back",
        ErrorCode::Unauthorized => "unauthorized",
        ErrorCode::RateLimited => "rate_limited",
        ErrorCode::TooLarge => "too_large",
        ErrorCode::StorageFull => "storage_full",
    }
}

/// How often the gauges are read from the store: once per period whatever the scrapes, so no
/// scraper can make the server read its store more often.
pub const REFRESH: Duration = Duration::from_secs(10);

async fn scrape(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        metrics.render(),
    )
}

/// Serve `metrics` on `listener` until the returned future is dropped: `GET /metrics`, from
/// memory only. `refresh` (which may block: it reads the store) sets the gauges at once and then
/// every [`REFRESH`], one run at a time. At most [`CONNECTIONS`] at once, each for at most
/// [`CONNECTION_TIMEOUT`].
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    refresh: impl Fn() + Send + Sync + 'static,
) {
    let app = Router::new()
        .route("/metrics", get(scrape))
        .with_state(metrics);
    // Owned by this future: dropping it (the server stopping) ends the refreshing and every
    // connection.
    let mut tasks = tokio::task::JoinSet::new();
    let refresh = Arc::new(refresh);
    tasks.spawn(async move {
        loop {
            let r = refresh.clone();
            let _ = tokio::task::spawn_blocking(move || r()).await;
            tokio::time::sleep(REFRESH).await;
        }
    });
    let limits = crate::plain::Limits {
        connections: CONNECTIONS,
        header_time: Duration::from_secs(5),
        lifetime: CONNECTION_TIMEOUT,
        grace: Duration::from_secs(1),
        header_bytes: 16 << 10,
    };
    crate::plain::serve(listener, app, limits).await;
}

/// Whether the metrics may listen on `addr`: a loopback or private address, since they have
/// no TLS and no login.
///
/// # Errors
/// Why not, for an address that does not parse, is unspecified (`0.0.0.0`) or public.
pub fn check_address(addr: &str) -> Result<std::net::SocketAddr, String> {
    let parsed: std::net::SocketAddr = addr
        .parse()
        .map_err(|e| format!("metrics: {addr:?} is not an IP address and port: {e}"))?;
    let private = match parsed.ip() {
        std::net::IpAddr::V4(ip) => ip.is_loopback() || ip.is_private() || ip.is_link_local(),
        std::net::IpAddr::V6(ip) => ip.is_loopback() || (ip.segments()[0] & 0xfe00) == 0xfc00,
    };
    if !private {
        return Err(format!(
            "metrics: {addr} is not a loopback or private address; the metrics have no TLS and \
             no login"
        ));
    }
    Ok(parsed)
}

/// Bind the metrics listener at `addr`, when a server's configuration names one (checked by
/// [`check_address`]): first thing as the server loads, so a taken or public address is said
/// before its store opens.
///
/// # Errors
/// Why not.
pub fn bind(addr: Option<&str>) -> Result<Option<std::net::TcpListener>, String> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let at = check_address(addr)?;
    let l = std::net::TcpListener::bind(at)
        .map_err(|e| format!("metrics: cannot listen on {addr}: {e}"))?;
    l.set_nonblocking(true)
        .map_err(|e| format!("metrics: {addr}: {e}"))?;
    Ok(Some(l))
}

/// The metrics listener running beside a server.
pub struct Running(tokio::task::JoinHandle<()>);

impl Running {
    /// Serve `metrics` on `listener`, when there is one (see [`serve`]).
    ///
    /// # Errors
    /// When the listener cannot join the runtime.
    pub fn start(
        listener: Option<std::net::TcpListener>,
        metrics: Arc<Metrics>,
        refresh: impl Fn() + Send + Sync + 'static,
    ) -> std::io::Result<Option<Running>> {
        let Some(listener) = listener else {
            return Ok(None);
        };
        let listener = TcpListener::from_std(listener)?;
        Ok(Some(Running(tokio::spawn(serve(
            listener, metrics, refresh,
        )))))
    }

    /// Stop it: when this returns the port is free, and so is what `refresh` held.
    pub async fn stop(self) {
        self.0.abort();
        let _ = self.0.await;
    }
}
