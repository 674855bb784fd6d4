//! `obscura serve`: the cluster in a browser, served by this client on this machine.
//!
//! The browser talks only to this process, which does the cryptography exactly as the command
//! line does (each request is one command's work, on the cluster directory and its session
//! file), so nothing a node or keeper sees changes. What is new is a local server holding the
//! user's session, and who may reach it:
//!
//! - It listens on `127.0.0.1` or `::1` only: `--listen` elsewhere is refused. It takes the other
//!   loopback address on the same port too (`::1` beside `127.0.0.1`), so that nobody else
//!   listens where a browser may reach the page's name.
//! - The page's origin is new at every launch, `http://o<random>.localhost:PORT` (browsers send
//!   `*.localhost` to loopback): a service worker, cached script or saved password that another
//!   local user planted for an origin they once served applies to none of its launches.
//! - Every API request carries the **launch token**, 256 random bits made at start and printed
//!   once in the address to open (`…localhost:PORT/#token=…`). The token sits in the URL's
//!   fragment, which browsers never send to a server nor put in a `Referer`; the page keeps it in
//!   `sessionStorage`, which only the same origin can read, and sends it as
//!   `Authorization: Bearer`. No cookie is set: cookies are shared by every port of a host, so
//!   another local user's server on `127.0.0.1:9999` would receive one.
//! - A page of another origin cannot send that header without a CORS preflight, which is never
//!   granted; besides, a request whose `Origin` is not this server's, or whose `Sec-Fetch-Site`
//!   says it came from another site, is refused, and so is one whose `Host` is not this
//!   server's own (its `*.localhost` name, or the address it listens on, for scripts): a
//!   DNS-rebinding page names its own host.
//! - The page, its script and its style carry nothing secret and are served without the token
//!   (a browser fetches them before the script can read it), under a content security policy
//!   that runs no script but its own and is framed by no one.
//! - Limits: [`CONNECTIONS`] connections at once, headers within 10 s, 5 minutes a connection
//!   (then the request in progress has a minute to finish; an index runs on to its end anyway);
//!   a body of at most [`MAX_UPLOAD`] bytes, [`AT_ONCE`] operations at once (more wait, their
//!   bodies unread), and one change at a time (index, login, logout, password), as two command
//!   lines run one after the other would; thumbnails of images of at most [`MAX_PIXELS`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{
    DefaultBodyLimit, FromRequest, FromRequestParts, Path as UrlPath, Query, Request, State,
};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Json;
use obscura_sharing::manifest::ImageId;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::error::Failure;

/// The largest request body: an image to index or search with.
pub(crate) const MAX_UPLOAD: usize = 32 << 20;
/// Operations served at once; more wait their turn, their bodies not yet read.
const AT_ONCE: usize = 4;
/// Connections at once; more are closed at once.
const CONNECTIONS: usize = 64;
/// The most pixels of an image shrunk to a thumbnail (as for hashing it).
const MAX_PIXELS: u64 = 100_000_000;
/// The largest thumbnail side, in pixels.
const MAX_THUMBNAIL: u32 = 512;
/// Errors the cluster page lists, newest first.
const LAST_ERRORS: usize = 50;
/// Of those, the most that name one server: one answering with ever new words cannot push the
/// others' out.
const PER_SERVER: usize = 5;

// `obscura serve`'s arguments (its help is the command's).
#[derive(clap::Args)]
pub(crate) struct Serve {
    /// The cluster directory.
    #[arg(long, env = "OBSCURA_CLUSTER")]
    cluster: PathBuf,
    /// Where to listen: 127.0.0.1 or ::1 only, as the app acts with your
    /// session; the other loopback address is taken on the same port too. Port 0, the default,
    /// takes a free one. To use it from another machine, forward the port over SSH.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Print `{"url", "listen", "also"}` as one JSON line once listening, instead of the
    /// sentence (`also`: the other loopback address taken).
    #[arg(long)]
    json: bool,
}

/// What every request shares.
struct App {
    cluster: PathBuf,
    /// The launch token, in hex.
    token: String,
    /// The `Host` values this server answers to.
    hosts: Vec<String>,
    /// Changes (index, login, logout, password) one at a time.
    changing: tokio::sync::Mutex<()>,
    /// Operations at once.
    busy: tokio::sync::Semaphore,
    /// What went wrong lately.
    trouble: Trouble,
}

/// The errors this app met lately, for the cluster page: a server's fault in an answer's
/// `warnings`, an operation the cluster failed (a 5xx answer), a server the cluster page found
/// down. They are this process's own observations, kept in memory: no server is asked for its
/// errors, as they would tell of other users' requests. They are the account's: logging in or
/// out clears them.
#[derive(Default)]
struct Trouble(std::sync::Mutex<std::collections::VecDeque<Seen>>);

/// One error, however often it was met: the same words from the same operation, numbers aside
/// (a time waited, a count), are counted, not listed again, so a server that stays down or slow
/// takes one line.
#[derive(Serialize)]
struct Seen {
    /// The operation that met it: `search`, `index`, `images`, `login`, `cluster`, …
    op: String,
    /// What went wrong, naming the node or keeper where one is at fault (the latest words).
    error: String,
    /// The error with each run of digits but the server's number as `#`.
    #[serde(skip)]
    shape: String,
    /// How often it was met.
    times: u32,
    /// When it was first met (Unix seconds).
    #[serde(skip)]
    first_at: u64,
    /// When it was last met (Unix seconds).
    #[serde(skip)]
    last_at: u64,
}

impl Trouble {
    fn seen(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<Seen>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `error`, met by `op` now.
    fn note(&self, op: &str, error: String) {
        let now = obscura_server::now();
        let mut seen = self.seen();
        let shape = shape(&error);
        let mut entry = match seen.iter().position(|s| s.op == op && s.shape == shape) {
            Some(at) => seen.remove(at).expect("found"),
            None => Seen {
                op: op.to_string(),
                error: String::new(),
                shape,
                times: 0,
                first_at: now,
                last_at: now,
            },
        };
        entry.error = error;
        entry.times = entry.times.saturating_add(1);
        entry.last_at = now;
        let server = server(&entry.error).map(str::to_string);
        seen.push_front(entry);
        if let Some(server) = server {
            let of_it: Vec<usize> = (0..seen.len())
                .filter(|&i| self::server(&seen[i].error) == Some(server.as_str()))
                .collect();
            for &i in of_it.iter().skip(PER_SERVER).rev() {
                seen.remove(i);
            }
        }
        seen.truncate(LAST_ERRORS);
    }

    /// Forget them all (another account's errors are not this one's).
    fn clear(&self) {
        self.seen().clear();
    }

    /// Newest first, each with its times as RFC 3339 and as local date and time.
    fn list(&self) -> Vec<Value> {
        self.seen()
            .iter()
            .map(|s| {
                let mut v = json!(s);
                v["first"] = json!(crate::rfc3339(s.first_at));
                v["last"] = json!(crate::rfc3339(s.last_at));
                v["first_local"] = json!(crate::local_time(s.first_at));
                v["last_local"] = json!(crate::local_time(s.last_at));
                v
            })
            .collect()
    }

    /// Note what `response`, the answer to API operation `op`, says went wrong at the cluster,
    /// and give it back unchanged.
    async fn read(&self, op: &str, response: Response) -> Response {
        let status = response.status();
        let json = response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|t| t.as_bytes().starts_with(b"application/json"));
        // A client's own mistake (4xx) is not the cluster's trouble; images are not read.
        if !json || status.is_client_error() {
            return response;
        }
        let (parts, body) = response.into_parts();
        // The app's own answer, already in memory.
        let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
            return Response::from_parts(parts, axum::body::Body::empty());
        };
        if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
            if status.is_server_error() {
                if let Some(e) = v["error"].as_str() {
                    self.note(op, e.to_string());
                }
            }
            for w in v["warnings"].as_array().into_iter().flatten() {
                if let Some(w) = w.as_str() {
                    self.note(op, w.to_string());
                }
            }
        }
        Response::from_parts(parts, axum::body::Body::from(bytes))
    }
}

impl Serve {
    pub(crate) async fn run(self) -> Result<ExitCode, Failure> {
        let Serve {
            cluster,
            listen,
            json,
        } = self;
        // Exactly these two: `o….localhost` reaches 127.0.0.1 or ::1, not 127.0.0.2.
        let loopback = [
            std::net::IpAddr::from(std::net::Ipv4Addr::LOCALHOST),
            std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        ];
        if !loopback.contains(&listen.ip()) {
            return Err(format!(
                "--listen {listen}: the app acts with your session, so it listens on a loopback \
                 address only (127.0.0.1 or ::1); from another machine, forward the same port on \
                 both sides (--listen 127.0.0.1:8080 here, ssh -L 8080:127.0.0.1:8080 THIS-HOST \
                 there) and open the printed address"
            )
            .into());
        }
        // The cluster is read once here, so a wrong directory fails now, not on the first page.
        crate::client(&cluster)?;
        let listeners = bind(listen).await?;
        let port = listeners[0]
            .local_addr()
            .map_err(|e| format!("--listen {listen}: {e}"))?
            .port();
        let mut secret = [0u8; 40];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut secret);
        // The page's origin is new at every launch: nothing another user left in the browser
        // for an origin they could serve before (a service worker, a cached script, a saved
        // password for a fixed `127.0.0.1:8080`) applies to it.
        let site = format!("o{}.localhost:{port}", hex::encode(&secret[32..]));
        let bound: Vec<String> = listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .map(|a| a.to_string())
            .collect();
        let app = Arc::new(App {
            cluster: cluster.clone(),
            token: hex::encode(&secret[..32]),
            hosts: std::iter::once(site.clone())
                .chain(bound.iter().cloned())
                .collect(),
            changing: tokio::sync::Mutex::new(()),
            busy: tokio::sync::Semaphore::new(AT_ONCE),
            trouble: Trouble::default(),
        });
        let url = format!("http://{site}/#token={}", app.token);
        let router = router(app);
        if json {
            println!(
                "{}",
                json!({"url": url, "listen": bound[0], "also": &bound[1..]})
            );
        } else {
            println!(
                "obscura serves {} at\n  {url}\nOpen that address (it holds this launch's token; \
                 keep it to yourself). Ctrl-C stops it.",
                cluster.display()
            );
        }
        let limits = obscura_server::plain::Limits {
            connections: CONNECTIONS,
            header_time: Duration::from_secs(10),
            lifetime: Duration::from_secs(300),
            grace: Duration::from_secs(60),
            header_bytes: 64 << 10,
        };
        let mut serving = tokio::task::JoinSet::new();
        for l in listeners {
            serving.spawn(obscura_server::plain::serve(l, router.clone(), limits));
        }
        let _ = tokio::signal::ctrl_c().await;
        Ok(ExitCode::SUCCESS)
    }
}

/// Where in `error` the first server it names is (`node 2`, `keeper 1`, as a word), if any:
/// `search failed: node 3: refused (…)` is node 3's.
fn server_at(error: &str) -> Option<std::ops::Range<usize>> {
    let mut first: Option<std::ops::Range<usize>> = None;
    for party in ["node ", "keeper "] {
        let mut from = 0;
        while let Some(i) = error[from..].find(party) {
            let start = from + i;
            let number = start + party.len();
            let digits = error[number..]
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(error.len() - number);
            let word = !error[..start]
                .chars()
                .next_back()
                .is_some_and(char::is_alphanumeric);
            if digits > 0 && word {
                if first.as_ref().is_none_or(|f| start < f.start) {
                    first = Some(start..number + digits);
                }
                break;
            }
            from = number;
        }
    }
    first
}

/// The server an error names first, if any.
fn server(error: &str) -> Option<&str> {
    server_at(error).map(|r| &error[r])
}

/// `error` with each run of digits but the server's number as `#`: the same fault met again
/// (a node slow by another number of milliseconds) has the same shape.
fn shape(error: &str) -> String {
    let keep = server_at(error).unwrap_or(0..0);
    let mut out = String::with_capacity(error.len());
    let mut digits = false;
    for (i, c) in error.char_indices() {
        if keep.contains(&i) || !c.is_ascii_digit() {
            out.push(c);
            digits = false;
        } else {
            if !digits {
                out.push('#');
            }
            digits = true;
        }
    }
    out
}

/// Listeners on `listen` and, on the same port, on the other loopback address (`::1` beside
/// `127.0.0.1`, and the other way round) where this machine has it: a browser may reach
/// `*.localhost` on either, and another user listening on the one left free would be served
/// the page's address, token included. A taken port is refused; with port 0, another is tried.
async fn bind(listen: SocketAddr) -> Result<Vec<tokio::net::TcpListener>, String> {
    let other = |port| -> SocketAddr {
        match listen {
            SocketAddr::V4(_) => (std::net::Ipv6Addr::LOCALHOST, port).into(),
            SocketAddr::V6(_) => (std::net::Ipv4Addr::LOCALHOST, port).into(),
        }
    };
    for _ in 0..20 {
        let first = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| format!("--listen {listen}: {e}"))?;
        let port = first
            .local_addr()
            .map_err(|e| format!("--listen {listen}: {e}"))?
            .port();
        match tokio::net::TcpListener::bind(other(port)).await {
            Ok(second) => return Ok(vec![first, second]),
            // No such address here: nobody can listen on it either.
            Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => return Ok(vec![first]),
            Err(e) if listen.port() == 0 => drop((first, e)),
            Err(e) => {
                return Err(format!(
                    "--listen {listen}: {} is taken ({e}): someone else listens beside it, and \
                     a browser could reach them instead",
                    other(port)
                ))
            }
        }
    }
    Err(format!(
        "--listen {listen}: no port free on both loopback addresses"
    ))
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Obscura app",
        description = "The operations of the `obscura` command line over HTTP, served by \
            `obscura serve` on loopback. Every call needs the launch token as \
            `Authorization: Bearer TOKEN` (the token is in the address `obscura serve` prints, \
            after `#token=`)."
    ),
    modifiers(&LaunchToken),
    security(("launch_token" = []))
)]
struct ApiDoc;

struct LaunchToken;

impl Modify for LaunchToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "launch_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The answers every route may give before its handler runs, added to each operation of `doc`:
/// the guard's 401 and 403, and 413 where a body is taken.
fn with_guard_answers(mut doc: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let answer = |why: &str| {
        ResponseBuilder::new()
            .description(why)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Refusal")))
                    .build(),
            )
            .build()
    };
    for item in doc.paths.paths.values_mut() {
        for op in [&mut item.get, &mut item.post].into_iter().flatten() {
            let r = &mut op.responses.responses;
            r.entry("401".into()).or_insert_with(|| {
                answer("No launch token, or a wrong one (`Authorization: Bearer TOKEN`)").into()
            });
            r.entry("403".into()).or_insert_with(|| {
                answer("Another host, origin or site; or not allowed to this account").into()
            });
            if op.request_body.is_some() {
                r.entry("413".into())
                    .or_insert_with(|| answer("A body over 32 MiB").into());
            }
        }
    }
    doc
}

/// The routes, their OpenAPI document (served at `/openapi.json`) and the guard before them.
fn router(app: Arc<App>) -> axum::Router {
    let (api, doc) = api_router().split_for_parts();
    let doc = with_guard_answers(doc).to_pretty_json().unwrap_or_default();
    let openapi =
        axum::routing::get(
            move || async move { ([(header::CONTENT_TYPE, "application/json")], doc) },
        );
    api.route("/openapi.json", openapi)
        .route("/", axum::routing::get(page))
        .route("/app.js", axum::routing::get(script))
        .route("/app.css", axum::routing::get(style))
        .layer(DefaultBodyLimit::max(MAX_UPLOAD))
        .layer(middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app)
}

/// Every API route, each with its place in the document.
fn api_router() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(session))
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(password))
        .routes(routes!(search))
        .routes(routes!(index))
        .routes(routes!(image))
        .routes(routes!(cluster))
        .routes(routes!(secrets))
}

/// The OpenAPI document, as `/openapi.json` serves it.
#[cfg(test)]
fn openapi() -> utoipa::openapi::OpenApi {
    with_guard_answers(api_router().split_for_parts().1)
}

/// Before every route: the host, the origin and, for all but the page's own files, the launch
/// token; after: the headers every answer carries.
async fn guard(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let refusal = if !host.is_some_and(|h| app.hosts.iter().any(|a| a == h)) {
        Some("this server answers only to its own address (Host)")
    } else if headers.get(header::ORIGIN).is_some_and(|o| {
        !app.hosts
            .iter()
            .any(|h| o.as_bytes() == format!("http://{h}").as_bytes())
    }) {
        Some("a request from another origin")
    } else if headers
        .get("sec-fetch-site")
        .is_some_and(|s| s != "same-origin" && s != "none")
    {
        Some("a request from another site")
    } else {
        None
    };
    let mut response = if let Some(why) = refusal {
        refuse(StatusCode::FORBIDDEN, why)
    } else if ["/", "/app.js", "/app.css"].contains(&request.uri().path()) {
        next.run(request).await
    } else if !bearer(headers)
        .is_some_and(|t| subtle::ConstantTimeEq::ct_eq(t.as_bytes(), app.token.as_bytes()).into())
    {
        let mut r = refuse(
            StatusCode::UNAUTHORIZED,
            "this launch's token is missing or wrong: open the address `obscura serve` printed",
        );
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        r
    } else {
        // The turn is taken before the body is read: waiting requests hold no body.
        let _turn = app.busy.acquire().await;
        let op = request
            .uri()
            .path()
            .strip_prefix("/api/")
            .map(|p| p.split('/').next().unwrap_or_default().to_string());
        let response = next.run(request).await;
        match op {
            Some(op) => app.trouble.read(&op, response).await,
            None => response,
        }
    };
    let h = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; \
             connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    response
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

/// An error answer: `{"error": why}`.
#[derive(Serialize, ToSchema)]
struct Refusal {
    /// What went wrong, in words.
    error: String,
}

fn refuse(status: StatusCode, why: impl Into<String>) -> Response {
    (status, Json(Refusal { error: why.into() })).into_response()
}

/// A failed operation as an answer, with the status that says whose fault it is.
struct Failed(StatusCode, String);

impl From<Failure> for Failed {
    fn from(f: Failure) -> Failed {
        use obscura_client::Error as E;
        let status = match &f {
            Failure::Client(E::NotEntitled(_) | E::NotOwner, _) => StatusCode::FORBIDDEN,
            Failure::Client(E::UnknownImage(_), _) => StatusCode::NOT_FOUND,
            Failure::Client(E::Image(_), _) => StatusCode::UNPROCESSABLE_ENTITY,
            Failure::Client(E::Session(_), _) => StatusCode::UNAUTHORIZED,
            Failure::Client(..) => StatusCode::BAD_GATEWAY,
            Failure::Said(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Failed(status, f.to_string())
    }
}

impl From<obscura_client::Error> for Failed {
    fn from(e: obscura_client::Error) -> Failed {
        Failure::from(e).into()
    }
}

impl IntoResponse for Failed {
    fn into_response(self) -> Response {
        refuse(self.0, self.1)
    }
}

type Answer<T> = Result<Json<T>, Failed>;

fn no_file() -> Failed {
    Failed(
        StatusCode::BAD_REQUEST,
        "the body is the image file, and it is empty".into(),
    )
}

/// A query string, refused as `{"error"}` like every other failure.
struct Params<T>(T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = Failed;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Failed> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(t)| Params(t))
            .map_err(|e| Failed(e.status(), e.body_text()))
    }
}

/// A JSON body, refused as `{"error"}` like every other failure.
struct Body<T>(T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = Failed;

    async fn from_request(request: Request, state: &S) -> Result<Self, Failed> {
        Json::<T>::from_request(request, state)
            .await
            .map(|Json(t)| Body(t))
            .map_err(|e| Failed(e.status(), e.body_text()))
    }
}

impl App {
    /// A client of the cluster with the session as it is now, as one command line would have.
    fn client(&self) -> Result<obscura_client::Client, Failed> {
        Ok(crate::client(&self.cluster)?)
    }

    /// A logged-in client.
    fn logged_in(&self) -> Result<obscura_client::Client, Failed> {
        let client = self.client()?;
        if client.user().is_none() {
            return Err(Failed(
                StatusCode::UNAUTHORIZED,
                "not logged in: log in on the Account page".into(),
            ));
        }
        Ok(client)
    }
}

const PAGE: &str = include_str!("app/index.html");
const SCRIPT: &str = include_str!("app/app.js");
const STYLE: &str = include_str!("app/app.css");

async fn page() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE)
}

async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
}

async fn style() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE)
}

/// Who is logged in.
#[derive(Serialize, ToSchema)]
struct SessionState {
    /// The account logged in, if any.
    user: Option<String>,
    /// Whether this client holds the data owner's key (index, delete, labels).
    owner: bool,
    /// The cluster directory served.
    cluster: String,
}

/// Who is logged in here.
#[utoipa::path(get, path = "/api/session", tag = "account",
    responses((status = 200, body = SessionState), (status = 401, body = Refusal)))]
async fn session(State(app): State<Arc<App>>) -> Answer<SessionState> {
    let client = app.client()?;
    Ok(Json(SessionState {
        user: client.user(),
        owner: client.is_owner(),
        cluster: app.cluster.display().to_string(),
    }))
}

/// An account and its password.
#[derive(Deserialize, ToSchema)]
struct Credentials {
    /// The account.
    user: String,
    /// Its password (OPAQUE: it never leaves this process).
    password: String,
}

/// A login that went through.
#[derive(Serialize, ToSchema)]
struct LoggedIn {
    user: String,
    /// Keepers with an open session.
    keepers: Vec<u8>,
    /// When the first session ends (RFC 3339).
    expires: Option<String>,
    /// The same, as local date and time.
    expires_local: String,
    /// Keepers that refused or did not answer (at least T accepted).
    warnings: Vec<String>,
}

/// Log in with every keeper that answers (at least T must accept).
#[utoipa::path(post, path = "/api/login", tag = "account", request_body = Credentials,
    responses((status = 200, body = LoggedIn), (status = 502, body = Refusal)))]
async fn login(State(app): State<Arc<App>>, Body(c): Body<Credentials>) -> Answer<LoggedIn> {
    let _turn = app.changing.lock().await;
    let password = zeroize::Zeroizing::new(c.password);
    let report = app.client()?.login(&c.user, password.as_bytes()).await?;
    app.trouble.clear();
    Ok(Json(LoggedIn {
        user: report.user,
        keepers: report.keepers,
        expires: crate::rfc3339(report.expires_at),
        expires_local: crate::local_time(report.expires_at),
        warnings: report
            .failures
            .iter()
            .map(crate::error::keeper_fault)
            .collect(),
    }))
}

/// A logout.
#[derive(Serialize, ToSchema)]
struct LoggedOut {
    /// Who was logged out (none: nobody was logged in).
    user: Option<String>,
    /// Keepers whose session could not be ended (it expires on its own).
    warnings: Vec<String>,
}

/// End the sessions at the keepers and delete the session file.
#[utoipa::path(post, path = "/api/logout", tag = "account",
    responses((status = 200, body = LoggedOut), (status = 502, body = Refusal)))]
async fn logout(State(app): State<Arc<App>>) -> Answer<LoggedOut> {
    let _turn = app.changing.lock().await;
    let client = app.client()?;
    let Some(user) = client.user() else {
        return Ok(Json(LoggedOut {
            user: None,
            warnings: Vec::new(),
        }));
    };
    let warnings = client
        .logout()
        .await?
        .iter()
        .map(|f| format!("keeper {}: {}", f.keeper, f.fault))
        .collect();
    app.trouble.clear();
    Ok(Json(LoggedOut {
        user: Some(user),
        warnings,
    }))
}

/// A password change.
#[derive(Deserialize, ToSchema)]
struct NewPassword {
    user: String,
    current: String,
    new: String,
}

/// Where a password change went through.
#[derive(Serialize, ToSchema)]
struct PasswordChanged {
    /// Keepers that took the new password.
    changed: Vec<u8>,
    /// Keepers that still take the old one, with why: change it again when they answer.
    left: Vec<String>,
}

/// Change the password at every keeper (then logged in with the new one).
#[utoipa::path(post, path = "/api/password", tag = "account", request_body = NewPassword,
    responses((status = 200, body = PasswordChanged), (status = 400, body = Refusal),
        (status = 502, body = Refusal)))]
async fn password(
    State(app): State<Arc<App>>,
    Body(p): Body<NewPassword>,
) -> Answer<PasswordChanged> {
    let (current, new) = (
        zeroize::Zeroizing::new(p.current),
        zeroize::Zeroizing::new(p.new),
    );
    if new.is_empty() || *current == *new {
        return Err(Failed(
            StatusCode::BAD_REQUEST,
            "the new password is empty or the current one; nothing changed".into(),
        ));
    }
    let _turn = app.changing.lock().await;
    let change = app
        .client()?
        .change_password(&p.user, current.as_bytes(), new.as_bytes())
        .await?;
    Ok(Json(PasswordChanged {
        changed: change.changed,
        left: change.left.iter().map(crate::error::keeper_fault).collect(),
    }))
}

/// How to search.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct SearchParams {
    /// Most results (1 to 100).
    #[param(minimum = 1, maximum = 100)]
    top: Option<usize>,
    /// Largest Hamming distance reported (0 to 64; the nodes reveal nothing beyond the
    /// cluster's own limit).
    #[param(minimum = 0, maximum = 64)]
    max_distance: Option<u32>,
    /// Scan every stored image instead of Stage-1's candidates.
    exhaustive: Option<bool>,
}

/// One match.
#[derive(Serialize, ToSchema)]
struct Match {
    /// The image id (32 hex digits).
    id: String,
    /// Hamming distance of the perceptual hashes.
    distance: u32,
    /// Its label in the ledger, for the group's members.
    label: Option<String>,
    /// The file it was indexed from, as this client recorded it.
    file: Option<String>,
}

/// A search's answer.
#[derive(Serialize, ToSchema)]
struct Found {
    results: Vec<Match>,
    /// Stage-1 candidates.
    candidates: usize,
    /// Milliseconds, all stages.
    total_ms: f64,
    /// Servers that failed while others answered.
    warnings: Vec<String>,
}

/// Find the stored images closest to the image in the body, privately.
#[utoipa::path(post, path = "/api/search", tag = "images", params(SearchParams),
    request_body(content = Vec<u8>, content_type = "application/octet-stream",
        description = "The query image (JPEG, PNG, WebP or GIF)"),
    responses((status = 200, body = Found), (status = 400, body = Refusal),
        (status = 422, body = Refusal), (status = 502, body = Refusal)))]
async fn search(
    State(app): State<Arc<App>>,
    Params(p): Params<SearchParams>,
    body: Bytes,
) -> Answer<Found> {
    if body.is_empty() {
        return Err(no_file());
    }
    let top = p.top.unwrap_or(10);
    let max_distance = p.max_distance.unwrap_or(10);
    if !(1..=100).contains(&top) || max_distance > 64 {
        return Err(Failed(
            StatusCode::BAD_REQUEST,
            "top is 1 to 100 and max_distance 0 to 64".into(),
        ));
    }
    let client = app.logged_in()?;
    let out = if p.exhaustive.unwrap_or(false) {
        client.search_exhaustive(&body, top, max_distance).await
    } else {
        client.search(&body, top, max_distance).await
    }?;
    let labels = crate::images::labels(&app.cluster, &client).await;
    let ids: Vec<ImageId> = out.matches.iter().map(|m| m.id).collect();
    let files = obscura_client::names::of(&app.cluster, &ids).unwrap_or_default();
    let warnings = out
        .keeper_faults
        .iter()
        .map(crate::error::keeper_fault)
        .chain(out.node_faults.iter().map(crate::error::node_fault))
        .collect();
    Ok(Json(Found {
        results: out
            .matches
            .iter()
            .map(|m| Match {
                id: m.id.to_string(),
                distance: m.distance,
                label: labels.get(&m.id.to_string()).cloned(),
                file: files.get(&m.id).cloned(),
            })
            .collect(),
        candidates: out.candidates,
        total_ms: out.total.as_secs_f64() * 1e3,
        warnings,
    }))
}

/// The file's name, as the page gives it.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct IndexParams {
    /// The file's name (recorded on this machine only, to name matches): 1 to 1024 bytes, no
    /// control characters.
    #[param(
        min_length = 1,
        max_length = 1024,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]+$"
    )]
    name: String,
}

/// One file indexed, or why not.
#[derive(Serialize, ToSchema)]
struct IndexedFile {
    /// Its image id, when indexed.
    id: Option<String>,
    /// Why it was skipped, when not.
    skipped: Option<String>,
    /// Images an interrupted run had committed and never reported.
    recovered: Vec<String>,
    /// Whether the ledger took the registration.
    ledger: bool,
    /// What went wrong after the image was committed (the ledger's refusal, say).
    warnings: Vec<String>,
}

/// Share the image in the body among the nodes (data owner only).
#[utoipa::path(post, path = "/api/index", tag = "images", params(IndexParams),
    request_body(content = Vec<u8>, content_type = "application/octet-stream",
        description = "The image file"),
    responses((status = 200, body = IndexedFile), (status = 400, body = Refusal),
        (status = 403, body = Refusal), (status = 502, body = Refusal)))]
async fn index(
    State(app): State<Arc<App>>,
    Params(p): Params<IndexParams>,
    body: Bytes,
) -> Answer<IndexedFile> {
    if body.is_empty() {
        return Err(no_file());
    }
    if p.name.is_empty() || p.name.len() > 1024 || p.name.chars().any(char::is_control) {
        return Err(Failed(
            StatusCode::BAD_REQUEST,
            "name is 1 to 1024 bytes with no control characters".into(),
        ));
    }
    let client = app.logged_in()?;
    if !client.is_owner() {
        return Err(Failed(
            StatusCode::FORBIDDEN,
            "only the data owner indexes (this client holds no owner key)".into(),
        ));
    }
    // On a task of its own, holding the turn for changes: a page that goes away (its connection
    // closed) does not stop an index half-way, between the nodes' commit and the ledger.
    let work = tokio::spawn(async move {
        let _change = app.changing.lock().await;
        let mut file = Some(body.to_vec());
        let run = crate::images::index_items(
            &app.cluster,
            client,
            std::slice::from_ref(&p.name),
            |_| Ok(file.take().unwrap_or_default()),
            None,
            true,
            |_, _, _| {},
            |_| {},
        )
        .await?;
        let answer = IndexedFile {
            id: run.indexed.first().map(|(_, id)| id.to_string()),
            skipped: run.skipped.first().map(|(_, why)| why.clone()),
            recovered: run.recovered.iter().map(ImageId::to_string).collect(),
            ledger: run.ledger.get("error").is_none_or(|e| e.is_null()),
            warnings: run.ledger["error"]
                .as_str()
                .map(|e| format!("the ledger did not take the registration: {e}"))
                .into_iter()
                .collect(),
        };
        // Counted as reported here: the image is in the ledger and this machine's names file
        // even if the page never hears of it.
        run.acknowledge();
        Ok::<_, Failure>(answer)
    });
    let answer = work
        .await
        .map_err(|e| Failed(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok(Json(answer))
}

/// How to return an image.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ImageParams {
    /// A PNG at most this many pixels on a side (16 to 512) instead of the image itself.
    #[param(minimum = 16, maximum = 512)]
    thumbnail: Option<u32>,
}

/// Rebuild an image from any k nodes (for the owner, or a user whose own search matched it).
#[utoipa::path(get, path = "/api/images/{id}", tag = "images",
    params(("id" = String, Path, description = "The image id (32 hex digits)",
        pattern = "^[0-9a-fA-F]{32}$"), ImageParams),
    responses((status = 200, content_type = "application/octet-stream",
            description = "The image, or its PNG thumbnail"),
        (status = 400, body = Refusal), (status = 403, body = Refusal),
        (status = 404, body = Refusal), (status = 502, body = Refusal)))]
async fn image(
    State(app): State<Arc<App>>,
    UrlPath(id): UrlPath<String>,
    Params(p): Params<ImageParams>,
) -> Result<Response, Failed> {
    let id = obscura_tokens::keyfile::from_hex(&id)
        .map(ImageId)
        .ok_or_else(|| {
            Failed(
                StatusCode::BAD_REQUEST,
                format!("{id:?} is not an image id (32 hex digits)"),
            )
        })?;
    if p.thumbnail
        .is_some_and(|px| !(16..=MAX_THUMBNAIL).contains(&px))
    {
        return Err(Failed(
            StatusCode::BAD_REQUEST,
            format!("thumbnail is 16 to {MAX_THUMBNAIL} pixels"),
        ));
    }
    let rebuilt = app.logged_in()?.get(id).await?;
    let Some(px) = p.thumbnail else {
        // Shown by the browser only as the raster image it is; anything else is a download.
        let kind = image::guess_format(&rebuilt.image)
            .ok()
            .map(|f| f.to_mime_type());
        return Ok(match kind {
            Some(mime) => ([(header::CONTENT_TYPE, mime)], rebuilt.image).into_response(),
            None => (
                [
                    (header::CONTENT_TYPE, "application/octet-stream"),
                    (header::CONTENT_DISPOSITION, "attachment"),
                ],
                rebuilt.image,
            )
                .into_response(),
        });
    };
    let png = tokio::task::spawn_blocking(move || thumbnail(&rebuilt.image, px))
        .await
        .map_err(|e| Failed(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| {
            Failed(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("no thumbnail: {e}"),
            )
        })?;
    Ok(([(header::CONTENT_TYPE, "image/png")], png).into_response())
}

/// `file` shrunk to at most `px` on a side, as PNG.
fn thumbnail(file: &[u8], px: u32) -> Result<Vec<u8>, image::ImageError> {
    let mut reader = image::ImageReader::new(std::io::Cursor::new(file)).with_guessed_format()?;
    // Images in the cluster were decoded once to be hashed, within the same bound on pixels;
    // a cluster's content is checked again all the same, before any pixel is decoded.
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(512 << 20);
    reader.limits(limits);
    let decoder = reader.into_decoder()?;
    let (width, height) = image::ImageDecoder::dimensions(&decoder);
    if u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(image::ImageError::Limits(
            image::error::LimitError::from_kind(image::error::LimitErrorKind::DimensionError),
        ));
    }
    let small = image::DynamicImage::from_decoder(decoder)?.thumbnail(px, px);
    let mut png = Vec::new();
    small.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
    Ok(png)
}

/// Every node and keeper, as `obscura status --json` reports them, each node's audit log
/// as `obscura audit verify --json` checks it, and the last errors this app met.
#[utoipa::path(get, path = "/api/cluster", tag = "cluster",
    responses((status = 200, body = Object,
        description = "`status`: as `obscura status --json`; `audit`: as `obscura audit verify --json` \
            (null when logged out), or `audit_error`; `errors`: the last errors this app met, \
            newest first, each `{op, error, times, first, last}` with the times also as local date and time \
            (`first_local`, `last_local`)")))]
async fn cluster(State(app): State<Arc<App>>) -> Answer<Value> {
    let client = app.client()?;
    let (_, mut report) = crate::status::report(&app.cluster, &client, true).await;
    let mut down = Vec::new();
    for (kind, list) in [("node", "nodes"), ("keeper", "keepers")] {
        for s in report[list].as_array().into_iter().flatten() {
            if let (Some(n), Some(e)) = (s[kind].as_u64(), s["error"].as_str()) {
                app.trouble.note("cluster", format!("{kind} {n}: {e}"));
                if kind == "node" {
                    down.push(n);
                }
            }
        }
    }
    let mut answer = json!({"status": report.take(), "audit": null});
    if client.user().is_some() {
        match obscura_client::audit::verify_cluster(&app.cluster, &client).await {
            Ok(v) => {
                // A node found down above is said once, not again for its audit log.
                for n in v.iter().filter(|n| !down.contains(&u64::from(n.node))) {
                    if let Err(e) = &n.outcome {
                        app.trouble
                            .note("audit", format!("node {}: audit log: {e}", n.node));
                    }
                }
                answer["audit"] = json!(crate::audit::verdicts_json(&v));
            }
            Err(e) => {
                app.trouble.note("audit", e.to_string());
                answer["audit_error"] = json!(e.to_string());
            }
        }
    }
    answer["errors"] = json!(app.trouble.list());
    Ok(Json(answer))
}

/// A secret held at the keepers.
#[derive(Serialize, ToSchema)]
struct Secret {
    id: String,
    name: String,
    /// `data` or `signing`.
    kind: String,
    /// When it was stored (RFC 3339).
    created: Option<String>,
}

/// The logged-in user's secrets at the keepers.
#[utoipa::path(get, path = "/api/secrets", tag = "account",
    responses((status = 200, body = Vec<Secret>), (status = 401, body = Refusal),
        (status = 502, body = Refusal)))]
async fn secrets(State(app): State<Arc<App>>) -> Answer<Vec<Secret>> {
    let items = app.logged_in()?.secret_list().await?;
    Ok(Json(
        items
            .iter()
            .map(|i| Secret {
                id: hex::encode(i.id),
                name: i.name.clone(),
                kind: crate::account::kind(i.kind).into(),
                created: crate::rfc3339(i.created),
            })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same fault met again counts, numbers aside; a server that says ever new things keeps
    /// at most a few lines, and the others' stay.
    #[test]
    fn errors_are_counted_by_shape_and_few_per_server() {
        assert_eq!(server("node 12 (misbehaved): x"), Some("node 12"));
        assert_eq!(server("keeper 3: slow"), Some("keeper 3"));
        assert_eq!(
            server("search failed: keeper 2: x; node 3: y"),
            Some("keeper 2")
        );
        assert_eq!(server("node x: y; subnode 4"), None);
        assert_eq!(server("only 2 of 6 nodes answered"), None);
        assert_eq!(server("node é 4"), None);
        assert_eq!(
            shape("search failed: node 12: slow (waited 1500 ms)"),
            "search failed: node 12: slow (waited # ms)"
        );
        let t = Trouble::default();
        t.note("cluster", "node 1: unreachable".into());
        t.note("search", "node 2: slow (waited 1500 ms)".into());
        t.note("search", "node 2: slow (waited 1720 ms)".into());
        let list = t.list();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0]["times"], 2);
        assert_eq!(list[0]["error"], "node 2: slow (waited 1720 ms)");
        // A node that words its refusals anew each time, named inside an operation's failure.
        for i in 0..3 * LAST_ERRORS {
            let words = "x".repeat(i);
            t.note(
                "search",
                format!("search failed: node 3: refused ({words})"),
            );
        }
        let list = t.list();
        let of = |s: &str| {
            list.iter()
                .filter(|e| e["error"].as_str().unwrap().starts_with(s))
                .count()
        };
        assert_eq!(of("search failed: node 3:"), PER_SERVER);
        assert_eq!(of("node 1:") + of("node 2:"), 2, "{list:?}");
        t.clear();
        assert!(t.list().is_empty());
    }

    /// The document is OpenAPI 3.1 and requires the launch token of every operation (that each
    /// route is in it, and answers, is checked against the running app in `tests/cli_app.rs`).
    #[test]
    fn the_openapi_document_is_3_1_with_the_launch_token_required() {
        let doc = serde_json::to_value(openapi()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        assert!(!doc["paths"].as_object().unwrap().is_empty());
        assert_eq!(doc["security"][0]["launch_token"], json!([]));
        assert_eq!(
            doc["components"]["securitySchemes"]["launch_token"]["scheme"],
            "bearer"
        );
    }
}
