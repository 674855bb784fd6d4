//! The node's HTTP API over mutual TLS.
//!
//! Every operation is `POST /v1/<op>` with a [`Request`] body and a [`Response`] body. Before any
//! operation the node admits the request id and time into its replay window; Stage-2 queries also
//! admit their query id, because a zero-sharing context used twice would unmask answers. At
//! prepare, the node checks the owner's signature on the manifest and its own shares against the
//! manifest's digests, so nothing unsigned or mismatched is ever stored.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use ed25519_dalek::{SigningKey, VerifyingKey};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use obscura_mpc::{node, HashShare, NodeRequest};
use obscura_proto::{
    limits, ErrorCode, Request, RequestBody, Response, ResponseBody, RotateOp, WireAuditEntry,
    WireElement, WireId, WireToken,
};
use obscura_sharing::manifest::{ImageId, ShareRole, SignedManifest};
use obscura_sharing::order::Order;
use obscura_sharing::zero::ZeroSharingKeys;
use obscura_store::{NewImage, RotationStatus, Store, TokenMove};
use obscura_tokens::{voprf_token, Token, BANDS};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::config::LoadedNode;

/// Longest a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

struct NodeState {
    node: u8,
    n: usize,
    t: usize,
    window: u64,
    store: Store,
    zero: ZeroSharingKeys,
    owner: VerifyingKey,
    audit_key: SigningKey,
}

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(crate) fn error(code: ErrorCode, message: impl Into<String>) -> ResponseBody {
    ResponseBody::Error {
        code,
        message: message.into(),
    }
}

pub(crate) fn status_of(body: &ResponseBody) -> StatusCode {
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
            ErrorCode::NoSession | ErrorCode::LoginFailed => StatusCode::UNAUTHORIZED,
            ErrorCode::TooManyAttempts => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::RolledBack => StatusCode::SERVICE_UNAVAILABLE,
        },
        ResponseBody::Ok
        | ResponseBody::Lookup { .. }
        | ResponseBody::Evaluate { .. }
        | ResponseBody::Fetch { .. }
        | ResponseBody::Status { .. }
        | ResponseBody::Audit { .. }
        | ResponseBody::KeeperEvaluated { .. }
        | ResponseBody::Rotation { .. }
        | ResponseBody::KeeperRekeyed { .. }
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
        | ResponseBody::SignatureShare { .. } => StatusCode::OK,
    }
}

pub(crate) fn store_error(e: obscura_store::Error) -> ResponseBody {
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
        E::Open { .. } | E::WrongNode { .. } | E::Storage(_) | E::Corrupt(_) => ErrorCode::Internal,
    };
    error(code, e.to_string())
}

pub(crate) fn proto_error(e: obscura_proto::Error) -> ResponseBody {
    use obscura_proto::Error as E;
    let code = match e {
        E::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
        E::BadMagic | E::Malformed(_) | E::BadSize(_) => ErrorCode::BadRequest,
    };
    error(code, e.to_string())
}

/// The zero-sharing context of a query is admitted under its own namespace, so a query id can
/// never collide with a request id.
fn query_admission_id(query_id: &[u8; 16]) -> [u8; 16] {
    let h = blake3::derive_key("obscura 2026 stage-2 query id", query_id);
    h[..16].try_into().expect("16 bytes")
}

/// An audit log as it goes on the wire.
pub(crate) fn wire_audit(entries: Vec<obscura_store::AuditEntry>) -> ResponseBody {
    ResponseBody::Audit {
        entries: entries
            .into_iter()
            .map(|e| WireAuditEntry {
                seq: e.seq,
                prev: e.prev,
                hash: e.hash,
                time: e.time,
                kind: e.kind.tag(),
                subject: e.subject,
                detail: e.detail,
            })
            .collect(),
    }
}

/// A rotation factor `ρ` from the wire: a canonical non-zero scalar.
pub(crate) fn scalar(bytes: &[u8; 32]) -> Result<obscura_keeper::Scalar, ResponseBody> {
    Option::<obscura_keeper::Scalar>::from(obscura_keeper::Scalar::from_canonical_bytes(*bytes))
        .filter(|s| *s != obscura_keeper::Scalar::ZERO)
        .ok_or_else(|| {
            error(
                ErrorCode::BadRequest,
                "the rotation factor is not a canonical non-zero scalar",
            )
        })
}

/// A stored element `E` under the next key version: `ρ · E` and its token.
fn move_element(
    factor: &obscura_keeper::Scalar,
    element: &WireElement,
) -> Result<(Token, WireElement), ResponseBody> {
    let e = obscura_keeper::oprf::deserialize(element).map_err(|_| {
        error(
            ErrorCode::Internal,
            "a stored element is not a group element",
        )
    })?;
    let next = obscura_keeper::oprf::serialize(&(factor * e));
    Ok((voprf_token(&next), next))
}

/// A prepared image after the checks: its tokens and elements as sent.
type Checked<'a> = (
    &'a obscura_proto::PreparedImage,
    [Token; BANDS],
    Option<[WireElement; BANDS]>,
);

/// What is written of a prepared image: tokens and elements under the version written, and
/// during a rotation its tokens under the retired version.
struct Written {
    tokens: [Token; BANDS],
    elements: Option<[WireElement; BANDS]>,
    retired: Option<[Token; BANDS]>,
}

fn rotation(node: u8, s: RotationStatus) -> ResponseBody {
    ResponseBody::Rotation {
        node,
        current: s.versions.current,
        next: s.versions.next,
        moved: s.moved,
        total: s.total,
        postings: s.postings,
        done: s.done,
    }
}

/// With VOPRF tokens, every element must be a valid group element and its token the hash of it:
/// a node keeps only elements that a rotation can move and that match what it posts.
fn check_elements<'a>(
    image: &WireId,
    tokens: &[WireToken],
    elements: &'a [WireElement],
) -> Result<Option<&'a [WireElement; BANDS]>, ResponseBody> {
    if elements.is_empty() {
        return Ok(None);
    }
    let fixed: &[WireElement; BANDS] = elements
        .try_into()
        .map_err(|_| error(ErrorCode::BadRequest, "elements: one per band"))?;
    for (band, (e, t)) in fixed.iter().zip(tokens).enumerate() {
        if obscura_keeper::oprf::deserialize(e).is_err() || voprf_token(e).0 != *t {
            return Err(error(
                ErrorCode::Rejected,
                format!(
                    "image {}: band {band}: the token is not the hash of a valid element",
                    ImageId(*image)
                ),
            ));
        }
    }
    Ok(Some(fixed))
}

impl NodeState {
    fn process(&self, op: &str, bytes: &[u8]) -> ResponseBody {
        let req = match Request::decode(bytes) {
            Ok(r) => r,
            Err(e) => return proto_error(e),
        };
        if req.body.path().strip_prefix("/v1/") != Some(op) {
            return error(ErrorCode::BadRequest, "operation does not match the path");
        }
        let now = now();
        // Not synced on its own: an operation that changes state syncs it with its own commit,
        // and a read answered twice after a crash reveals nothing new. Stage-2 query ids are
        // admitted durably (see `evaluate`).
        if let Err(e) =
            self.store
                .admit_request_deferred(&req.request_id, req.timestamp, now, self.window)
        {
            return store_error(e);
        }
        match self.dispatch(&req, now) {
            Ok(body) | Err(body) => body,
        }
    }

    fn dispatch(&self, req: &Request, now: u64) -> Result<ResponseBody, ResponseBody> {
        match &req.body {
            RequestBody::Prepare {
                key_version,
                images,
            } => {
                let mut checked: Vec<Checked<'_>> = Vec::with_capacity(images.len());
                for img in images {
                    self.check_against_manifest(
                        &img.image,
                        &img.manifest,
                        &img.image_share,
                        &img.hash_share,
                    )?;
                    let elements = check_elements(&img.image, &img.tokens, &img.elements)?;
                    let tokens: [Token; BANDS] = std::array::from_fn(|i| Token(img.tokens[i]));
                    checked.push((img, tokens, elements.copied()));
                }
                // During a rotation, images made under the old key version are written under
                // the next one; a rotation that begins meanwhile is met by trying again.
                let mut attempt = 0;
                loop {
                    let (version, moved) = self.to_writing_version(*key_version, &checked)?;
                    let batch: Vec<NewImage<'_>> = checked
                        .iter()
                        .zip(&moved)
                        .map(|((img, _, _), w)| NewImage {
                            id: ImageId(img.image),
                            manifest: &img.manifest,
                            image_share: &img.image_share,
                            hash_share: img.hash_share.as_slice().try_into().expect("size checked"),
                            tokens: w.tokens,
                            key_version: version,
                            elements: w.elements.as_ref(),
                            retired_tokens: w.retired,
                        })
                        .collect();
                    match self.store.prepare_many(&batch, now) {
                        Err(obscura_store::Error::KeyVersion { .. }) if attempt == 0 => {
                            attempt += 1;
                        }
                        r => {
                            r.map_err(store_error)?;
                            return Ok(ResponseBody::Ok);
                        }
                    }
                }
            }
            RequestBody::Commit { images } => {
                let ids: Vec<ImageId> = images.iter().map(|id| ImageId(*id)).collect();
                self.store.commit_many(&ids, now).map_err(store_error)?;
                Ok(ResponseBody::Ok)
            }
            RequestBody::Delete {
                image,
                issued_at,
                signature,
            } => self.delete(ImageId(*image), *issued_at, signature, now),
            RequestBody::Lookup {
                key_version,
                tokens,
                min_bands,
            } => {
                let tokens: Vec<Token> = tokens.iter().map(|t| Token(*t)).collect();
                let (ids, matched) = self
                    .store
                    .lookup_at_least(*key_version, &tokens, usize::from(*min_bands))
                    .map_err(store_error)?;
                self.store
                    .record_query(
                        &req.request_id,
                        format!("lookup tokens={} min_bands={min_bands}", tokens.len()).as_bytes(),
                        now,
                    )
                    .map_err(store_error)?;
                Ok(ResponseBody::Lookup {
                    ids: ids.into_iter().map(|id| id.0).collect(),
                    matched: u32::try_from(matched).unwrap_or(u32::MAX),
                })
            }
            RequestBody::Evaluate {
                query_id,
                query_share,
                candidates,
            } => self.evaluate(req, query_id, query_share, candidates, now),
            RequestBody::Fetch { image } => match self.store.image(&ImageId(*image)) {
                Ok(Some(img)) => Ok(ResponseBody::Fetch {
                    manifest: img.manifest,
                    image_share: img.image_share,
                }),
                Ok(None) => Err(error(
                    ErrorCode::UnknownImage,
                    format!("unknown image {}", ImageId(*image)),
                )),
                Err(e) => Err(store_error(e)),
            },
            RequestBody::Status => {
                let s = self.store.stats().map_err(store_error)?;
                let v = self.store.key_versions();
                Ok(ResponseBody::Status {
                    node: self.node,
                    committed: s.committed,
                    pending: s.pending,
                    audit_entries: s.audit_entries,
                    key_versions: std::iter::once(v.current).chain(v.next).collect(),
                })
            }
            RequestBody::Audit => {
                // Sign the head first, so what the client checks ends in a checkpoint.
                self.store
                    .audit_checkpoint(&self.audit_key, now)
                    .map_err(store_error)?;
                let entries = self.store.audit_entries().map_err(store_error)?;
                Ok(wire_audit(entries))
            }
            RequestBody::Rotate { op } => self.rotate(op, now).map(|s| rotation(self.node, s)),
            RequestBody::KeeperEvaluate { .. }
            | RequestBody::KeeperRekey { .. }
            | RequestBody::KeeperRetire { .. }
            | RequestBody::KeeperRegister { .. }
            | RequestBody::KeeperRegisterFinish { .. }
            | RequestBody::KeeperLoginStart { .. }
            | RequestBody::KeeperLoginFinish { .. }
            | RequestBody::KeeperSealed { .. }
            | RequestBody::KeeperLogout
            | RequestBody::KeeperUnlock { .. }
            | RequestBody::SecretPut { .. }
            | RequestBody::SecretGet { .. }
            | RequestBody::SecretDelete { .. }
            | RequestBody::SecretList
            | RequestBody::UserEvents
            | RequestBody::DkgStart { .. }
            | RequestBody::DkgRound2 { .. }
            | RequestBody::DkgFinish { .. }
            | RequestBody::SignCommit { .. }
            | RequestBody::SignShare { .. } => Err(error(
                ErrorCode::BadRequest,
                "a node holds no key and no account: send this to a keeper",
            )),
        }
    }

    /// The key version a prepared batch is written under, and its images' tokens and elements
    /// under it: as sent, or moved by `ρ` when made under the version a rotation retires.
    /// During a rotation each image also gets its tokens under the retired version, so that
    /// lookups under either version find it.
    fn to_writing_version(
        &self,
        key_version: u32,
        images: &[Checked<'_>],
    ) -> Result<(u32, Vec<Written>), ResponseBody> {
        let as_sent = || {
            images
                .iter()
                .map(|(_, t, e)| Written {
                    tokens: *t,
                    elements: *e,
                    retired: None,
                })
                .collect()
        };
        let Some((to, factor)) = self.store.rotation_factor() else {
            return Ok((key_version, as_sent()));
        };
        let current = self.store.key_versions().current;
        if key_version != current && key_version != to {
            return Ok((key_version, as_sent())); // the store refuses it
        }
        let rho = scalar(&factor)?;
        let rho = if key_version == current {
            rho
        } else {
            rho.invert()
        };
        let mut out = Vec::with_capacity(images.len());
        for (img, tokens, elements) in images {
            let Some(elements) = elements else {
                return Err(error(
                    ErrorCode::UnknownKey,
                    format!(
                        "image {}: during a rotation to key version {to}, images need their \
                         band elements",
                        ImageId(img.image)
                    ),
                ));
            };
            let mut other = [Token([0; 16]); BANDS];
            let mut other_elements = [[0; 32]; BANDS];
            for (band, e) in elements.iter().enumerate() {
                (other[band], other_elements[band]) = move_element(&rho, e)?;
            }
            out.push(if key_version == current {
                Written {
                    tokens: other,
                    elements: Some(other_elements),
                    retired: Some(*tokens),
                }
            } else {
                Written {
                    tokens: *tokens,
                    elements: Some(*elements),
                    retired: Some(other),
                }
            });
        }
        Ok((to, out))
    }

    /// Remove an image on the owner's order, unless the stored copy is newer than the order
    /// (an old order replayed against the image indexed again under its id).
    fn delete(
        &self,
        image: ImageId,
        issued_at: u64,
        signature: &[u8],
        now: u64,
    ) -> Result<ResponseBody, ResponseBody> {
        Order::Delete { image, issued_at }
            .verify(&self.owner, signature)
            .map_err(|e| error(ErrorCode::Rejected, format!("delete {image} refused: {e}")))?;
        let mut newer = None;
        let result = self.store.delete_if(&image, now, |manifest| {
            let created_at = SignedManifest::from_bytes(manifest)
                .map_err(|_| obscura_store::Error::Corrupt("a stored manifest does not parse"))?
                .created_at();
            if created_at > issued_at {
                newer = Some(created_at);
                return Err(obscura_store::Error::Invalid("order older than the image"));
            }
            Ok(())
        });
        match (result, newer) {
            (Ok(()), _) => Ok(ResponseBody::Ok),
            (Err(_), Some(created_at)) => Err(error(
                ErrorCode::Rejected,
                format!(
                    "delete {image} refused: the order was made at {issued_at}, before this copy \
                     of the image ({created_at}); make a new order"
                ),
            )),
            (Err(e), None) => Err(store_error(e)),
        }
    }

    /// A step of a key rotation.
    fn rotate(&self, op: &RotateOp, now: u64) -> Result<RotationStatus, ResponseBody> {
        match op {
            RotateOp::Begin {
                from,
                to,
                factor,
                signature,
            } => {
                Order::Rotate {
                    node: self.node,
                    from: *from,
                    to: *to,
                    factor: *factor,
                }
                .verify(&self.owner, signature)
                .map_err(|e| error(ErrorCode::Rejected, format!("key rotation refused: {e}")))?;
                let rho = scalar(factor)?;
                // Elements stored while the moves are computed make the store refuse them;
                // compute again then.
                for _ in 0..3 {
                    let moves = if self.store.key_versions().next.is_some() {
                        Vec::new() // under way: the store checks the values and reports
                    } else {
                        self.store
                            .token_elements()
                            .map_err(store_error)?
                            .iter()
                            .map(|(from, e)| {
                                move_element(&rho, e).map(|(to, element)| TokenMove {
                                    from: *from,
                                    to,
                                    element,
                                })
                            })
                            .collect::<Result<Vec<_>, _>>()?
                    };
                    match self.store.begin_rotation(*from, *to, factor, &moves, now) {
                        Err(obscura_store::Error::ElementsChanged) => continue,
                        r => return r.map_err(store_error),
                    }
                }
                Err(error(
                    ErrorCode::Internal,
                    "elements kept changing while the rotation was set up; try again",
                ))
            }
            RotateOp::Move { max_images } => self
                .store
                .rotate_step((*max_images).min(1 << 16) as usize, now)
                .map_err(store_error),
            RotateOp::Finish { to } => self.store.finish_rotation(*to, now).map_err(store_error),
        }
    }

    /// Refuse anything not signed by the owner, or whose shares do not match their digests.
    fn check_against_manifest(
        &self,
        image: &[u8; 16],
        manifest: &[u8],
        image_share: &[u8],
        hash_share: &[u8],
    ) -> Result<(), ResponseBody> {
        let reject = |m: String| {
            error(
                ErrorCode::Rejected,
                format!("image {}: {m}", ImageId(*image)),
            )
        };
        let verified = SignedManifest::from_bytes(manifest)
            .and_then(|m| m.verify(&self.owner))
            .map_err(|e| reject(e.to_string()))?;
        let m = verified.manifest();
        if m.image_id.0 != *image {
            return Err(reject("the manifest is for another image".into()));
        }
        if (m.n as usize, m.t as usize) != (self.n, self.t) {
            return Err(reject(format!(
                "the manifest is for n = {}, t = {}; this cluster has n = {}, t = {}",
                m.n, m.t, self.n, self.t
            )));
        }
        verified
            .check_share(self.node, ShareRole::Image, image_share)
            .and_then(|()| verified.check_share(self.node, ShareRole::Hash, hash_share))
            .map_err(|e| reject(e.to_string()))
    }

    fn evaluate(
        &self,
        req: &Request,
        query_id: &[u8; 16],
        query_share: &[u8],
        candidates: &[[u8; 16]],
        now: u64,
    ) -> Result<ResponseBody, ResponseBody> {
        self.store
            .admit_request(
                &query_admission_id(query_id),
                req.timestamp,
                now,
                self.window,
            )
            .map_err(store_error)?;
        let bad = |e: obscura_mpc::Error| error(ErrorCode::BadRequest, e.to_string());
        let query = HashShare::from_bytes(self.node, query_share).map_err(bad)?;
        let ids: Vec<ImageId> = candidates.iter().map(|c| ImageId(*c)).collect();
        let stored = self
            .store
            .hash_shares(&ids)
            .map_err(store_error)?
            .into_iter()
            .map(|s| s.map(|b| HashShare::from_bytes(self.node, &b)).transpose())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| error(ErrorCode::Internal, e.to_string()))?;
        let request = NodeRequest {
            node: self.node,
            query_id: *query_id,
            query,
            candidates: ids,
        };
        let refs: Vec<Option<&HashShare>> = stored.iter().map(Option::as_ref).collect();
        let answer = node::answer(&self.zero, &request, &refs).map_err(bad)?;
        self.store
            .record_query(
                &req.request_id,
                format!("evaluate candidates={}", candidates.len()).as_bytes(),
                now,
            )
            .map_err(store_error)?;
        Ok(ResponseBody::Evaluate {
            node: self.node,
            values: answer
                .values
                .into_iter()
                .map(|v| v.map(|f| f.value()))
                .collect(),
        })
    }
}

async fn handle(
    State(state): State<Arc<NodeState>>,
    Path(op): Path<String>,
    body: Bytes,
) -> (StatusCode, Vec<u8>) {
    // The store is synchronous and waits for fsync: keep it off the async workers.
    respond(move || state.process(&op, &body)).await
}

/// Run `process` off the async workers and encode what it answers, with its HTTP status.
pub(crate) async fn respond(
    process: impl FnOnce() -> ResponseBody + Send + 'static,
) -> (StatusCode, Vec<u8>) {
    let outcome = tokio::task::spawn_blocking(process).await;
    let body = outcome.unwrap_or_else(|e| error(ErrorCode::Internal, e.to_string()));
    (status_of(&body), Response(body).encode())
}

/// Serve `node` on `listener` until `shutdown` completes; then sign the audit log's head.
///
/// # Errors
/// Only if the final audit checkpoint cannot be written; connection errors are per connection.
pub async fn serve(
    node: LoadedNode,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), obscura_store::Error> {
    let state = Arc::new(NodeState {
        node: node.config.node,
        n: node.config.n as usize,
        t: node.config.t as usize,
        window: node.config.replay_window_s,
        store: node.store,
        zero: node.zero,
        owner: node.owner,
        audit_key: node.audit_key,
    });
    let app = Router::new()
        .route("/v1/{op}", post(handle))
        .layer(DefaultBodyLimit::max(
            limits::MAX_IMAGE_SHARE + limits::MAX_MANIFEST + (1 << 20),
        ))
        .with_state(state.clone());
    let pending_timeout = node.config.pending_timeout_s;
    let s = state.clone();
    let tick = move || {
        let now = now();
        s.store
            .purge_pending(now.saturating_sub(pending_timeout), now)?;
        s.store.audit_checkpoint(&s.audit_key, now).map(drop)
    };
    let last = move || {
        state
            .store
            .audit_checkpoint(&state.audit_key, now())
            .map(drop)
    };
    accept_loop(
        listener,
        TlsAcceptor::from(node.tls),
        move |_, _| app.clone(),
        Duration::from_secs(node.config.checkpoint_interval_s.max(1)),
        tick,
        shutdown,
        last,
    )
    .await
}

/// Accept TLS connections on `listener` and serve each with the router `app_for` makes from
/// its TLS session, running `tick` (off the async workers) every `every`, until `shutdown`
/// completes; then close every connection and run `last` (off the async workers too), whose
/// result this returns.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
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
                // Small TLS records must not wait for delayed ACKs (40 ms per round on Linux).
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let app_for = app_for.clone();
                connections.spawn(async move {
                    let Ok(Ok(tls)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await else {
                        return; // refused or timed out handshake
                    };
                    let service = TowerToHyperService::new(app_for(tls.get_ref().1, peer));
                    let _ = hyper::server::conn::http1::Builder::new()
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
