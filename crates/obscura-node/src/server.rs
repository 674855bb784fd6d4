//! The node's HTTP API over mutual TLS.
//!
//! Every operation is `POST /v1/<op>` with a [`Request`] body and a [`Response`] body. A node
//! first authenticates the request ([`obscura_auth::capability::authenticate`]: a capability
//! the keepers signed together, and the holder's signature over this request for this node),
//! then admits its id and time into the replay window, then runs it in the role the operation
//! needs ([`obscura_auth::capability::Acting`]):
//!
//! | operation | role |
//! |---|---|
//! | prepare, commit, delete (with the owner's order) | owner |
//! | lookup, list, check-query, evaluate, resolve | querier, within its hourly limits |
//! | reduce (the rounds of a search its evaluate started) | querier |
//! | fetch | owner; or a querier with a proof of its own match, or with the owner's grant |
//! | audit, checkpoint | auditor or admin |
//! | rotate (each step with the owner's order) | admin |
//! | ledger-append (entries signed by their authors), ledger-commit | owner or admin |
//! | ledger-read, ledger-checkpoint | owner, auditor or admin |
//! | ledger-head, ledger-cosigned (a quorum's signatures) | any |
//! | status | any |
//!
//! The search policy (batch shape, the bands a candidate must match, the distance a match
//! entitles to, candidates per query) is the node's own, never the client's. Stage-1 answers
//! are handles bound to the caller and the query ([`obscura_auth::handle`]); Stage-2 answers are
//! committed and signed ([`obscura_auth::matching`]) so that a querier can prove a match.
//!
//! Every authenticated request, and every refusal after authentication, is an entry in the
//! audit log naming the user; requests that fail authentication are counted and summed up in
//! one entry per checkpoint interval, so garbage cannot grow the log one entry at a time.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use ed25519_dalek::{SigningKey, VerifyingKey};
use obscura_auth::capability::{authenticate, Acting, Authorized, CapabilityKey};
use obscura_auth::handle::HandleKey;
use obscura_auth::matching::{self, MatchPolicy};
use obscura_mpc::check::{self, CheckCoin};
use obscura_mpc::node::{NodeSession, Step};
use obscura_mpc::{HashShare, NodeRequest};
use obscura_proto::{
    limits, roles, Body, ErrorCode, FetchBy, MatchProof, NodeBody, ResponseBody, RotateOp, ScanOf,
    UploadTicket, WireElement, WireId, WireToken, UPLOAD_TICKET_HEADER,
};
use obscura_sharing::manifest::{CheckedShare, ImageId, ShareRole, SignedManifest};
use obscura_sharing::order::{user_digest, Order};
use obscura_sharing::zero::ZeroSharingKeys;
use obscura_store::{NewImage, NodeStore, RotationStatus, TokenMove};
use obscura_tokens::{voprf_token, Token, BANDS};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use obscura_cluster::node::SearchPolicy;
use obscura_server::{error, now, proto_error, scalar, store_error, wire_audit, Guard};

use crate::config::LoadedNode;

mod ledger;
mod room;

/// A request to a node: it parses only a node's operations.
type Request = obscura_proto::Request<NodeBody>;

/// An upload let through the gate: the request its body must carry, under which capability.
#[derive(Clone, Copy, Debug)]
struct Admitted {
    request_id: [u8; 16],
    capability: [u8; 16],
}

/// Stage-2 searches a node keeps between rounds, all users together.
const MAX_LIVE_SEARCHES: usize = 256;
/// Stage-2 searches one user may have in progress at a node.
const MAX_LIVE_SEARCHES_PER_USER: usize = 8;
/// Refused relays after which a search in progress is dropped: each costs the node a check of
/// every opening, and an honest client relays what the nodes gave.
const MAX_REFUSED_RELAYS: u8 = 8;

/// A Stage-2 search between rounds: the node's session and what binds the next round to it.
struct LiveSearch {
    /// Relays refused so far: a search is dropped at [`MAX_REFUSED_RELAYS`].
    refused: u8,
    session: NodeSession,
    context: [u8; 32],
    issued: u64,
    handles: Vec<WireId>,
}

/// Whose search of which query, and which part of it.
type SearchKey = (String, [u8; 16], u32);

/// A place in the table of searches: a search waiting for its next round, or one being started
/// or stepped right now by the holder of `token` (its place is held, so the limits count it).
enum Slot {
    Waiting(Box<LiveSearch>),
    Busy { issued: u64, token: u64 },
}

impl Slot {
    fn issued(&self) -> u64 {
        match self {
            Slot::Waiting(s) => s.issued,
            Slot::Busy { issued, .. } => *issued,
        }
    }
}

/// The searches in progress, by user, query id and part, and the last token handed out. Each
/// lives as long as its query is fresh and ends with its answer; a restart forgets them (the
/// search fails and is run again).
#[derive(Default)]
struct LiveSearches(Mutex<(HashMap<SearchKey, Slot>, u64)>);

impl LiveSearches {
    fn lock(&self) -> std::sync::MutexGuard<'_, (HashMap<SearchKey, Slot>, u64)> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Mark `key` busy under a fresh token.
    fn hold(table: &mut (HashMap<SearchKey, Slot>, u64), key: &SearchKey, issued: u64) -> u64 {
        table.1 += 1;
        let token = table.1;
        table.0.insert(key.clone(), Slot::Busy { issued, token });
        token
    }

    /// Hold a place for `key`'s search, issued at `issued`, if its user and the node have room
    /// now (searches whose query is stale are dropped first): taken before the query's part is
    /// spent, so a part is never spent on a search that could not be kept.
    fn reserve(
        &self,
        key: SearchKey,
        issued: u64,
        now: u64,
        window: u64,
    ) -> Result<Place<'_>, ResponseBody> {
        let mut table = self.lock();
        let live = &mut table.0;
        live.retain(|_, s| s.issued().abs_diff(now) <= window);
        let mine = live.keys().filter(|(u, ..)| *u == key.0).count();
        if mine >= MAX_LIVE_SEARCHES_PER_USER {
            return Err(error(
                ErrorCode::RateLimited,
                format!(
                    "{MAX_LIVE_SEARCHES_PER_USER} searches of this user are in progress at this \
                     node: wait for one to end"
                ),
            ));
        }
        if live.len() >= MAX_LIVE_SEARCHES {
            return Err(error(
                ErrorCode::RateLimited,
                "this node has too many searches in progress: try again shortly",
            ));
        }
        if live.contains_key(&key) {
            return Err(error(
                ErrorCode::Replay,
                "this part of the query is being evaluated already",
            ));
        }
        let token = Self::hold(&mut table, &key, issued);
        Ok(Place {
            live: self,
            key,
            token,
        })
    }

    /// Take a waiting search out for its next round; its place stays held until the round
    /// ends.
    fn take(&self, key: &SearchKey) -> Option<(LiveSearch, Place<'_>)> {
        let mut table = self.lock();
        let issued = match table.0.get(key)? {
            Slot::Waiting(s) => s.issued,
            Slot::Busy { .. } => return None,
        };
        let Some(Slot::Waiting(search)) = table.0.remove(key) else {
            unreachable!("a waiting search was there");
        };
        let token = Self::hold(&mut table, key, issued);
        Some((
            *search,
            Place {
                live: self,
                key: key.clone(),
                token,
            },
        ))
    }
}

/// A held place in [`LiveSearches`]: [`keep`](Place::keep) puts a search there, and dropping
/// it frees the place. Each holds its own token, so it never touches a place another request
/// holds now.
struct Place<'a> {
    live: &'a LiveSearches,
    key: SearchKey,
    token: u64,
}

impl Place<'_> {
    /// Keep `search` in this place until its next round, if the place is still this one's: a
    /// search whose query went stale while it was worked on lost its place, and is dropped
    /// rather than put back past the limits.
    fn keep(self, search: LiveSearch) {
        let mut table = self.live.lock();
        if matches!(table.0.get(&self.key), Some(Slot::Busy { token, .. }) if *token == self.token)
        {
            table
                .0
                .insert(self.key.clone(), Slot::Waiting(Box::new(search)));
        }
    }
}

impl Drop for Place<'_> {
    /// Frees the place if it is still this one's and busy (not kept).
    fn drop(&mut self) {
        let mut table = self.live.lock();
        if matches!(table.0.get(&self.key), Some(Slot::Busy { token, .. }) if *token == self.token)
        {
            table.0.remove(&self.key);
        }
    }
}

/// One hour: the window of the per-user rate limits.
const RATE_WINDOW_S: u64 = 3600;

/// Which of a capability's limits a request counts against.
#[derive(Clone, Copy, Debug)]
enum Charge {
    Queries,
    Fetches,
}

struct NodeState {
    node: u8,
    n: usize,
    t: usize,
    window: u64,
    store: Box<dyn NodeStore>,
    zero: ZeroSharingKeys,
    owner: VerifyingKey,
    audit_key: SigningKey,
    capability_key: CapabilityKey,
    handles: HandleKey,
    /// The key of queries' check coefficients, derived from the handle key.
    coin_key: zeroize::Zeroizing<[u8; 32]>,
    policy: SearchPolicy,
    matches: MatchPolicy,
    live: LiveSearches,
    /// Requests refused before anyone was authenticated, since the last summary entry.
    unauthenticated: AtomicU64,
    /// Its attestation, answered to anyone before authentication.
    attester: Option<obscura_server::attest::Attester>,
    /// Appraises clean-room workers.
    verifier: obscura_attest::Verifier,
    /// Clean-room challenges given and not yet used, by nonce.
    room: Mutex<HashMap<[u8; 32], room::Challenge>>,
    /// Its copy of the cluster ledger.
    ledger: Mutex<crate::ledger::NodeLedger>,
    metrics: Arc<obscura_server::metrics::Metrics>,
}

/// An authentication or authorisation failure as the caller sees it.
pub(crate) fn auth_error(e: obscura_auth::Error) -> ResponseBody {
    use obscura_auth::Error as E;
    let code = match &e {
        E::NoCapability | E::BadCapability | E::Expired { .. } | E::BadRequestSignature => {
            ErrorCode::Unauthorized
        }
        E::MissingRole { .. } | E::Refused(_) | E::Proof(_) => ErrorCode::Forbidden,
        E::QueryCheck(_) => ErrorCode::Rejected,
    };
    error(code, e.to_string())
}

/// Each part of a query is admitted under its own namespace, so a query id can never collide
/// with a request id, and each part is evaluated once.
fn part_admission_id(query_id: &[u8; 16], part: u32) -> [u8; 16] {
    let mut h = blake3::Hasher::new_derive_key("obscura 2026 stage-2 query part");
    h.update(query_id);
    h.update(&part.to_be_bytes());
    h.finalize().as_bytes()[..16].try_into().expect("16 bytes")
}

/// A query's check is admitted once per node under its own namespace.
fn check_admission_id(query_id: &[u8; 16]) -> [u8; 16] {
    let h = blake3::derive_key("obscura 2026 stage-2 query check", query_id);
    h[..16].try_into().expect("16 bytes")
}

/// Whether `candidates` are part `part` of the list `scan` names: the handles from position
/// `part × MAX_CANDIDATES`, as many as there are up to the next part. A list of one part must
/// be exactly the one named; the parts of a longer list are each bound to their own masks
/// (their context holds their handles), and each handle opens only under this query.
fn part_fits(scan: &ScanOf, part: u32, candidates: &[WireId]) -> Result<(), ResponseBody> {
    let per = limits::MAX_CANDIDATES as u64;
    let start = u64::from(part) * per;
    let len = (u64::from(scan.count).saturating_sub(start)).min(per);
    if len == 0 || candidates.len() as u64 != len {
        return Err(error(
            ErrorCode::BadRequest,
            format!(
                "part {part} of a list of {} candidates holds {len}, not {}",
                scan.count,
                candidates.len()
            ),
        ));
    }
    if u64::from(scan.count) <= per && matching::scan_digest(candidates) != scan.digest {
        return Err(error(
            ErrorCode::BadRequest,
            "the candidates are not the list the query was checked with",
        ));
    }
    Ok(())
}

/// What a Stage-2 request asks about: the query and the candidate list it scans.
#[derive(Clone, Copy, Debug)]
struct Asked<'a> {
    query_id: &'a [u8; 16],
    issued: u64,
    query_share: &'a [u8],
    scan: &'a ScanOf,
    share_digests: &'a [[u8; 32]],
}

impl Asked<'_> {
    fn context(&self) -> [u8; 32] {
        matching::query_context(self.query_id, self.issued, self.scan)
    }

    /// The check's context (over the query's `context`), once this node's share is the one the
    /// querier committed to among all `n`.
    fn check_context(
        &self,
        context: &[u8; 32],
        node: u8,
        n: usize,
    ) -> Result<[u8; 32], ResponseBody> {
        let own = usize::from(node)
            .checked_sub(1)
            .and_then(|i| self.share_digests.get(i));
        if self.share_digests.len() != n || own != Some(&matching::share_digest(self.query_share)) {
            return Err(error(
                ErrorCode::Rejected,
                "the query share is not the one the querier committed to for this node",
            ));
        }
        Ok(matching::check_context(context, self.share_digests))
    }

    fn answered<'a>(&'a self, node: u8, user: &'a str) -> matching::Answered<'a> {
        matching::Answered {
            node,
            user,
            query_id: self.query_id,
            issued: self.issued,
        }
    }
}

/// A query's Stage-1 lookup is admitted once per node under its own namespace: handles made
/// under one query id cannot be linked across lookups with other tokens.
fn lookup_admission_id(query_id: &[u8; 16]) -> [u8; 16] {
    let h = blake3::derive_key("obscura 2026 stage-1 query id", query_id);
    h[..16].try_into().expect("16 bytes")
}

/// A stored element `E` under the next key version: `ρ · E` and node `node`'s token of it.
fn move_element(
    node: u8,
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
    Ok((voprf_token(node, &next), next))
}

/// A prepared image whose manifest is the owner's, whose shares match it and whose elements
/// match its tokens: only [`NodeState::check_upload`] makes one, and only these are written.
struct CheckedUpload<'a> {
    img: &'a obscura_proto::PreparedImage,
    tokens: [Token; BANDS],
    elements: Option<[WireElement; BANDS]>,
    /// The share checks this upload passed.
    _shares: (CheckedShare, CheckedShare),
}

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

/// With VOPRF tokens, every element must be a valid group element and its token node `node`'s
/// hash of it: a node keeps only elements that a rotation can move and that match what it
/// posts.
fn check_elements<'a>(
    node: u8,
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
        if obscura_keeper::oprf::deserialize(e).is_err() || voprf_token(node, e).0 != *t {
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

/// A short name of an operation for audit entries.
/// The metrics' operation for a request the node could not read.
const INVALID: &str = "invalid";

fn op_name(body: &NodeBody) -> &'static str {
    body.path().strip_prefix("/v1/").unwrap_or("?")
}

impl NodeState {
    /// Answer a request that arrived at `started`, counted in the metrics under its operation.
    fn process(
        &self,
        op: &str,
        bytes: &[u8],
        admitted: Option<Admitted>,
        started: std::time::Instant,
    ) -> ResponseBody {
        let mut label = INVALID;
        let answer = self.answer(op, bytes, admitted, &mut label);
        self.metrics.answered(label, &answer, started.elapsed());
        answer
    }

    /// Answer a request; `label` becomes its operation once it is read.
    fn answer(
        &self,
        op: &str,
        bytes: &[u8],
        admitted: Option<Admitted>,
        label: &mut &'static str,
    ) -> ResponseBody {
        let req = match Request::decode(bytes) {
            Ok(r) => r,
            Err(e) => {
                self.unauthenticated.fetch_add(1, Ordering::Relaxed);
                return proto_error(e);
            }
        };
        if req.body.path().strip_prefix("/v1/") != Some(op) {
            self.unauthenticated.fetch_add(1, Ordering::Relaxed);
            return error(ErrorCode::BadRequest, "operation does not match the path");
        }
        *label = op_name(&req.body);
        let now = now();
        // Evidence is what a client checks before it sends anything else: it is given to
        // whoever asks, as a TLS certificate is, and carries no secret.
        if let NodeBody::Evidence { nonce } = &req.body {
            return obscura_server::attest::Attester::answer(self.attester.as_ref(), nonce, now);
        }
        let who = match authenticate(&req, self.node, &self.capability_key, now, self.window) {
            Ok(who) => who,
            Err(e) => {
                self.unauthenticated.fetch_add(1, Ordering::Relaxed);
                return auth_error(e);
            }
        };
        // An upload's body is the request its ticket was signed for, under the same capability.
        if let Some(a) = admitted {
            if a.request_id != req.request_id || a.capability != who.capability_id() {
                self.unauthenticated.fetch_add(1, Ordering::Relaxed);
                return error(
                    ErrorCode::Unauthorized,
                    "the upload is not the request its ticket was signed for",
                );
            }
        }
        // Every authenticated request counts against its user's hourly limit, refused ones too
        // (a replayed or stale one as well): each writes an audit entry.
        // A Stage-2 round after the first is part of the query its Evaluate was charged for,
        // unless it is refused: then it counts like any request, and past the user's limit it
        // is refused unaudited, so refused relays cannot grow the audit log without end.
        let relay = matches!(req.body, NodeBody::Reduce { .. });
        let kind = match &req.body {
            NodeBody::Fetch { .. } | NodeBody::Resolve { .. } => Charge::Fetches,
            _ => Charge::Queries,
        };
        if !relay {
            if let Err(refused) = self.charge(&who, kind, 1, now) {
                return refused;
            }
        }
        // Not synced on its own: an operation that changes state syncs it with its own commit,
        // and a read answered twice after a crash reveals nothing new. Query ids are admitted
        // durably (see `lookup` and `evaluate`).
        // A relay's admission is not audited by the store: its refusal is charged first, below.
        let admitted = if relay {
            self.store
                .admit_request_unaudited(&req.request_id, req.timestamp, now, self.window)
        } else {
            self.store
                .admit_request_deferred(&req.request_id, req.timestamp, now, self.window)
        };
        let answer = match admitted {
            Ok(()) => self.dispatch(&req, &who, now),
            Err(e) if relay => Err(store_error(e)),
            Err(e) => return store_error(e),
        };
        match answer {
            Ok(body) => body,
            Err(refusal) => {
                if relay {
                    if let Err(over) = self.charge(&who, kind, 1, now) {
                        return over;
                    }
                }
                if let ResponseBody::Error { code, message } = &refusal {
                    // Best effort: the refusal stands even if its entry cannot be written.
                    let _ = self.store.record_refusal(
                        &req.request_id,
                        format!(
                            "user={} op={} refused={code:?}: {message}",
                            who.user(),
                            op_name(&req.body)
                        )
                        .as_bytes(),
                        now,
                    );
                }
                refusal
            }
        }
    }

    /// Audit an authenticated request: who asked what (never query content).
    fn record(
        &self,
        req: &Request,
        who: &Acting<'_>,
        detail: std::fmt::Arguments<'_>,
        now: u64,
    ) -> Result<(), ResponseBody> {
        self.store
            .record_query(
                &req.request_id,
                format!(
                    "user={} role={} op={} {detail}",
                    who.user(),
                    roles::names(who.role()).join("+"),
                    op_name(&req.body)
                )
                .as_bytes(),
                now,
            )
            .map_err(store_error)
    }

    /// Count `n` requests against `who`'s hourly limit of `kind` at this node (in its store:
    /// on PostgreSQL every process of the node counts against the one limit).
    fn charge(&self, who: &Authorized, kind: Charge, n: u32, now: u64) -> Result<(), ResponseBody> {
        let limits = who.limits();
        let (limit, what) = match kind {
            Charge::Queries => (limits.queries_per_hour, "queries"),
            Charge::Fetches => (limits.fetches_per_hour, "fetches"),
        };
        let over = self
            .store
            .charge(who.user(), what, n, limit, RATE_WINDOW_S, now)
            .map_err(store_error)?;
        over.map_err(|u| {
            error(
                ErrorCode::RateLimited,
                format!(
                    "user {:?} has made {} {what} at node {} this hour, its limit is \
                     {limit}: wait {} s",
                    who.user(),
                    u.used,
                    self.node,
                    (u.since + RATE_WINDOW_S).saturating_sub(now)
                ),
            )
        })
    }

    fn dispatch(
        &self,
        req: &Request,
        who: &Authorized,
        now: u64,
    ) -> Result<ResponseBody, ResponseBody> {
        let role = |r: u8| who.acting(r).map_err(auth_error);
        match &req.body {
            // Answered before authentication (see `process`).
            NodeBody::Evidence { nonce } => Ok(obscura_server::attest::Attester::answer(
                self.attester.as_ref(),
                nonce,
                now,
            )),
            NodeBody::Prepare {
                key_version,
                images,
            } => {
                let owner = role(roles::OWNER)?;
                self.record(req, &owner, format_args!("images={}", images.len()), now)?;
                self.prepare(*key_version, images, now)
            }
            NodeBody::Commit { images } => {
                let owner = role(roles::OWNER)?;
                self.record(req, &owner, format_args!("images={}", images.len()), now)?;
                let ids: Vec<ImageId> = images.iter().map(|id| ImageId(*id)).collect();
                self.store.commit_many(&ids, now).map_err(store_error)?;
                Ok(ResponseBody::Ok)
            }
            NodeBody::Delete {
                image,
                issued_at,
                signature,
            } => {
                let owner = role(roles::OWNER)?;
                let image = ImageId(*image);
                self.record(req, &owner, format_args!("image={image}"), now)?;
                self.delete(image, *issued_at, signature, now)
            }
            NodeBody::Lookup {
                key_version,
                query,
                issued,
                tokens,
            } => {
                let querier = role(roles::QUERIER)?;
                self.lookup(req, &querier, *key_version, query, *issued, tokens, now)
            }
            NodeBody::CheckQuery {
                query_id,
                issued,
                query_share,
                scan,
                share_digests,
            } => {
                let querier = role(roles::QUERIER)?;
                let asked = Asked {
                    query_id,
                    issued: *issued,
                    query_share,
                    scan,
                    share_digests,
                };
                self.check_query(req, &querier, &asked, now)
            }
            NodeBody::Evaluate {
                query_id,
                issued,
                query_share,
                scan,
                part,
                candidates,
                share_digests,
                checks,
            } => {
                let querier = role(roles::QUERIER)?;
                let asked = Asked {
                    query_id,
                    issued: *issued,
                    query_share,
                    scan,
                    share_digests,
                };
                self.evaluate(req, who, &querier, &asked, (*part, candidates), checks, now)
            }
            NodeBody::List { query, issued } => {
                let querier = role(roles::QUERIER)?;
                self.list(req, who, &querier, query, *issued, now)
            }
            NodeBody::Reduce {
                query_id,
                issued,
                part,
                round,
                openings,
            } => {
                let querier = role(roles::QUERIER)?;
                self.reduce(&querier, query_id, *issued, *part, *round, openings, now)
            }
            NodeBody::Fetch { by } => self.fetch(req, who, by, now),
            NodeBody::RoomChallenge { work } => self.room_challenge(req, who, work, now),
            NodeBody::RoomRelease {
                work,
                images,
                policy,
                expires_at,
                max_runs,
                approval,
                nonce,
                worker_key,
                signing_key,
                evidence,
            } => {
                let asked = room::Asked {
                    work,
                    images,
                    policy,
                    expires_at: *expires_at,
                    max_runs: *max_runs,
                    approval,
                    nonce,
                    worker_key,
                    signing_key,
                    evidence,
                };
                self.room_release(req, who, &asked, now)
            }
            NodeBody::RoomResult(filed) => self.room_result(req, who, filed, now),
            NodeBody::LedgerAppend { entries, since } => {
                self.ledger_append(req, who, entries, *since, now)
            }
            NodeBody::LedgerHead { since } => self.ledger_head(req, who, *since, now),
            NodeBody::LedgerRead { from, max } => self.ledger_read(req, who, *from, *max, now),
            NodeBody::LedgerCosigned { head } => self.ledger_cosigned(req, who, head, now),
            NodeBody::LedgerCommit { head, stored } => {
                self.ledger_commit(req, who, head, stored, now)
            }
            NodeBody::LedgerCheckpoint { seq, prev } => {
                self.ledger_checkpoint(req, who, *seq, prev, now)
            }
            NodeBody::Resolve { proofs } => {
                let querier = role(roles::QUERIER)?;
                self.resolve(req, &querier, proofs, now)
            }
            NodeBody::Status => {
                let any = who
                    .acting_as_any(&[roles::QUERIER, roles::OWNER, roles::AUDITOR, roles::ADMIN])
                    .map_err(auth_error)?;
                self.record(req, &any, format_args!(""), now)?;
                let s = self.store.stats().map_err(store_error)?;
                let v = self.store.key_versions().map_err(store_error)?;
                Ok(ResponseBody::Status {
                    node: self.node,
                    committed: s.committed,
                    pending: s.pending,
                    audit_entries: s.audit_entries,
                    key_versions: std::iter::once(v.current).chain(v.next).collect(),
                })
            }
            NodeBody::Audit { from, max } => {
                let auditor = who
                    .acting_as_any(&[roles::AUDITOR, roles::ADMIN])
                    .map_err(auth_error)?;
                self.record(req, &auditor, format_args!("from={from} max={max}"), now)?;
                let (entries, total) = self
                    .store
                    .audit_page(*from, (*max).min(limits::MAX_AUDIT_PAGE))
                    .map_err(store_error)?;
                Ok(wire_audit(entries, total))
            }
            NodeBody::Checkpoint => {
                let auditor = who
                    .acting_as_any(&[roles::AUDITOR, roles::ADMIN])
                    .map_err(auth_error)?;
                self.record(req, &auditor, format_args!(""), now)?;
                // The request's own entry comes first, so each checkpoint request writes that
                // entry and a checkpoint with one sync; it counts against the auditor's hourly
                // limit like any request.
                let seq = self
                    .store
                    .audit_checkpoint(&self.audit_key, now)
                    .map_err(store_error)?;
                Ok(ResponseBody::Checkpointed { seq })
            }
            NodeBody::Rotate { op } => {
                let admin = role(roles::ADMIN)?;
                self.record(req, &admin, format_args!("{}", rotate_name(op)), now)?;
                self.rotate(op, now).map(|s| rotation(self.node, s))
            }
        }
    }

    fn prepare(
        &self,
        key_version: u32,
        images: &[obscura_proto::PreparedImage],
        now: u64,
    ) -> Result<ResponseBody, ResponseBody> {
        let checked = images
            .iter()
            .map(|img| self.check_upload(img))
            .collect::<Result<Vec<_>, _>>()?;
        // During a rotation, images made under the old key version are written under the next
        // one; a rotation that begins meanwhile is met by trying again.
        let mut attempt = 0;
        loop {
            let (version, moved) = self.to_writing_version(key_version, &checked)?;
            let batch: Vec<NewImage<'_>> = checked
                .iter()
                .zip(&moved)
                .map(|(CheckedUpload { img, .. }, w)| NewImage {
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

    /// Stage-1 under the node's own policy: the batch holds at most the policy's shape (honest
    /// clients send exactly it), a token counts once however often it is sent, and an image
    /// must match in as many bands as the policy's radius and distance limit require, whatever
    /// the batch. The candidates go back as this query's
    /// handles.
    #[allow(clippy::too_many_arguments)]
    fn lookup(
        &self,
        req: &Request,
        querier: &Acting<'_>,
        key_version: u32,
        query: &[u8; 16],
        issued: u64,
        tokens: &[WireToken],
        now: u64,
    ) -> Result<ResponseBody, ResponseBody> {
        let p = self.policy;
        let shape = BANDS * p.lookups_per_band;
        if tokens.len() > shape {
            return Err(error(
                ErrorCode::BadRequest,
                format!(
                    "a lookup has at most {shape} tokens ({BANDS} bands of {}), not {}",
                    p.lookups_per_band,
                    tokens.len()
                ),
            ));
        }
        self.fresh(issued, now)?;
        self.admit_lookup(query, issued, now)?;
        let mut distinct: Vec<Token> = tokens.iter().map(|t| Token(*t)).collect();
        distinct.sort_unstable_by_key(|t| t.0);
        distinct.dedup();
        let need = obscura_tokens::min_bands(p.probe_radius, p.max_distance);
        let (ids, matched) = self
            .store
            .lookup_at_least(key_version, &distinct, need)
            .map_err(store_error)?;
        let keys = self.handles.for_query(querier.user(), query, issued);
        let mut handles: Vec<WireId> = ids.iter().map(|id| keys.seal(&id.0)).collect();
        // Every node holds the same images and gives them the same handles, so cutting the
        // sorted handles keeps the nodes' answers alike.
        handles.sort_unstable();
        handles.truncate(p.max_candidates as usize);
        self.record(
            req,
            querier,
            format_args!(
                "tokens={} bands={need} candidates={} matched={matched}",
                distinct.len(),
                handles.len()
            ),
            now,
        )?;
        Ok(ResponseBody::Lookup {
            handles,
            matched: u32::try_from(matched).unwrap_or(u32::MAX),
        })
    }

    /// A query id's lookup (or exhaustive list), admitted at its issue time, durably: it stays
    /// known for as long as a lookup under it is fresh, a restart included, so a second lookup
    /// never links to the first's handles.
    fn admit_lookup(&self, query: &[u8; 16], issued: u64, now: u64) -> Result<(), ResponseBody> {
        self.store
            .admit_request(&lookup_admission_id(query), issued, now, self.window)
            .map_err(|e| match e {
                obscura_store::Error::Replay => error(
                    ErrorCode::Replay,
                    "this query id was looked up already: a new query needs a new id",
                ),
                other => store_error(other),
            })
    }

    /// A query's issue time must be within the replay window of now: its handles live that
    /// long.
    fn fresh(&self, issued: u64, now: u64) -> Result<(), ResponseBody> {
        if issued.abs_diff(now) > self.window {
            return Err(error(
                ErrorCode::Stale,
                format!(
                    "the query was issued at {issued}, more than {} s from this node's clock \
                     ({now})",
                    self.window
                ),
            ));
        }
        Ok(())
    }

    /// The candidates a Stage-2 query scans, if this node's policy allows so many (an
    /// exhaustive search's are every image, up to `max_exhaustive`). Not capped at the images
    /// this node holds: the querier scans the union of every node's list, and an image one node
    /// holds and another does not (an orphan of an interrupted index, an image deleted since
    /// the list) must not stop the search. Each part is charged as a query.
    fn candidates_allowed(&self, scan: &ScanOf) -> Result<(), ResponseBody> {
        let p = self.policy;
        let most = p.exhaustive().max(p.max_candidates);
        if scan.count > most {
            return Err(error(
                ErrorCode::BadRequest,
                format!("at most {most} candidates per query at this cluster"),
            ));
        }
        Ok(())
    }

    /// An exhaustive search's candidates: every committed image, sealed as handles of this
    /// query and sorted, so that Stage-2 scans them all and no lookup shows which bands the
    /// query has. The query id is spent as a lookup's is.
    ///
    /// A list costs one query for every part it makes (16,384 handles), as their evaluations
    /// will, and its query id is spent before the images are read.
    fn list(
        &self,
        req: &Request,
        who: &Authorized,
        querier: &Acting<'_>,
        query: &[u8; 16],
        issued: u64,
        now: u64,
    ) -> Result<ResponseBody, ResponseBody> {
        self.fresh(issued, now)?;
        let most = self.policy.exhaustive();
        let too_many = || {
            error(
                ErrorCode::BadRequest,
                format!(
                    "this node holds more than {most} images, the most an exhaustive search \
                     scans here: search without --exhaustive"
                ),
            )
        };
        let held = self.store.stats().map_err(store_error)?.committed;
        if held > u64::from(most) {
            return Err(too_many());
        }
        let parts = held.div_ceil(limits::MAX_CANDIDATES as u64).max(1);
        // The request itself was charged one.
        self.charge(who, Charge::Queries, (parts - 1) as u32, now)?;
        self.admit_lookup(query, issued, now)?;
        let ids = self
            .store
            .committed_ids(u64::from(most))
            .map_err(store_error)?
            .ok_or_else(too_many)?;
        let keys = self.handles.for_query(querier.user(), query, issued);
        let mut handles: Vec<WireId> = ids.iter().map(|id| keys.seal(&id.0)).collect();
        handles.sort_unstable();
        self.record(
            req,
            querier,
            format_args!("exhaustive candidates={}", handles.len()),
            now,
        )?;
        Ok(ResponseBody::Listed { handles })
    }

    /// Stage-2, first round: this node's signed values of the check that the query is a
    /// degree-t sharing of bits (see `obscura_mpc::check`).
    fn check_query(
        &self,
        req: &Request,
        querier: &Acting<'_>,
        asked: &Asked<'_>,
        now: u64,
    ) -> Result<ResponseBody, ResponseBody> {
        self.candidates_allowed(asked.scan)?;
        self.fresh(asked.issued, now)?;
        // A malformed share or commitment is refused before the query id is spent.
        let bad = |e: obscura_mpc::Error| error(ErrorCode::BadRequest, e.to_string());
        let query = HashShare::from_bytes(self.node, asked.query_share).map_err(bad)?;
        let context = asked.check_context(&asked.context(), self.node, self.n)?;
        // Once per query id, durably: two checks of one query under other shares would show
        // the querier how the check's coefficients act on its shares.
        self.store
            .admit_request(
                &check_admission_id(asked.query_id),
                asked.issued,
                now,
                self.window,
            )
            .map_err(|e| match e {
                obscura_store::Error::Replay => error(
                    ErrorCode::Replay,
                    "this query was checked already: a new query needs a new id",
                ),
                other => store_error(other),
            })?;
        let coin = CheckCoin::derive(&self.coin_key, &context);
        let check = check::check_share(&self.zero, &coin, &context, &query).map_err(bad)?;
        let signed = matching::sign_check(
            &self.audit_key,
            &asked.answered(self.node, querier.user()),
            &context,
            &check,
        );
        self.record(
            req,
            querier,
            format_args!("candidates={}", asked.scan.count),
            now,
        )?;
        Ok(ResponseBody::QueryChecked { check: signed })
    }

    /// Stage-2, second round, for one part of the query's candidates: once every node's check
    /// of the query passed, this node's masked values, signed. A part costs a query for every
    /// `max_candidates` candidates it holds (a lookup's worth), charged before it is spent.
    #[allow(clippy::too_many_arguments)]
    fn evaluate(
        &self,
        req: &Request,
        who: &Authorized,
        querier: &Acting<'_>,
        asked: &Asked<'_>,
        (part, candidates): (u32, &[WireId]),
        checks: &[obscura_proto::WireCheck],
        now: u64,
    ) -> Result<ResponseBody, ResponseBody> {
        let Asked {
            query_id,
            issued,
            query_share,
            scan,
            ..
        } = *asked;
        self.candidates_allowed(scan)?;
        part_fits(scan, part, candidates)?;
        self.fresh(issued, now)?;
        let query_context = asked.context();
        let context = matching::part_context(&query_context, part, candidates);
        let answered = asked.answered(self.node, querier.user());
        // Nothing is answered for a query that is not a degree-t sharing of bits: its values
        // would open whatever linear function of the stored bits the querier chose.
        let check_context = asked.check_context(&query_context, self.node, self.n)?;
        matching::verify_checks(
            checks,
            &answered,
            &check_context,
            &self.matches.node_keys,
            self.t,
        )
        .map_err(auth_error)?;
        let bad = |e: obscura_mpc::Error| error(ErrorCode::BadRequest, e.to_string());
        let query = HashShare::from_bytes(self.node, query_share).map_err(bad)?;
        // The request itself was charged one.
        let units = candidates
            .len()
            .div_ceil(self.policy.max_candidates.max(1) as usize)
            .max(1);
        self.charge(who, Charge::Queries, (units - 1) as u32, now)?;
        // A search that could not be kept between rounds must not spend its query id: its
        // place is held first.
        let place = self.live.reserve(
            (querier.user().to_string(), *query_id, part),
            issued,
            now,
            self.window,
        )?;
        // Admitted at the query's issue time, not the request's: a query id is known for as
        // long as its handles are fresh, so a part's zero-sharing context never serves twice.
        self.store
            .admit_request(&part_admission_id(query_id, part), issued, now, self.window)
            .map_err(store_error)?;
        let keys = self.handles.for_query(querier.user(), query_id, issued);
        let ids: Vec<ImageId> = candidates.iter().map(|h| ImageId(keys.open(h))).collect();
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
            context,
            query,
            candidates: ids,
            max_distance: self.matches.max_distance,
        };
        let refs: Vec<Option<&HashShare>> = stored.iter().map(Option::as_ref).collect();
        let (session, opened) = NodeSession::start(&self.zero, &request, &refs).map_err(bad)?;
        let tau = self.matches.max_distance;
        let opened = matching::sign_opened(&self.audit_key, &answered, &context, tau, &opened);
        place.keep(LiveSearch {
            refused: 0,
            session,
            context,
            issued,
            handles: candidates.to_vec(),
        });
        self.record(
            req,
            querier,
            format_args!("candidates={}", candidates.len()),
            now,
        )?;
        Ok(ResponseBody::Opened { opened })
    }

    /// Stage-2, the rounds after the first: every node's openings of the last round, relayed by
    /// the querier, each checked against its node's signature; then this node's openings of the
    /// next round, signed, or after the last its answer, committed and signed.
    #[allow(clippy::too_many_arguments)]
    fn reduce(
        &self,
        querier: &Acting<'_>,
        query_id: &[u8; 16],
        issued: u64,
        part: u32,
        round: u8,
        openings: &[obscura_proto::WireOpened],
        now: u64,
    ) -> Result<ResponseBody, ResponseBody> {
        self.fresh(issued, now)?;
        let user = querier.user();
        let key = (user.to_string(), *query_id, part);
        let (mut live, place) = self.live.take(&key).ok_or_else(|| {
            error(
                ErrorCode::Rejected,
                "no search of this query is in progress at this node (it ended, expired, or \
                 the node restarted): search again",
            )
        })?;
        let tau = self.matches.max_distance;
        let answered = matching::Answered {
            node: self.node,
            user,
            query_id,
            issued,
        };
        let stepped = (|| {
            if live.issued != issued || live.session.round() != round {
                return Err(error(
                    ErrorCode::Rejected,
                    format!(
                        "this node waits for round {} of this query",
                        live.session.round()
                    ),
                ));
            }
            let opened = matching::verify_openings(
                openings,
                &answered,
                &live.context,
                tau,
                &self.matches.node_keys,
            )
            .map_err(auth_error)?;
            live.session
                .step(&self.zero, &opened)
                .map_err(|e| error(ErrorCode::BadRequest, e.to_string()))
        })();
        match stepped {
            Err(refused) => {
                // A bad relay changes nothing: the search waits for a good one, a few times.
                live.refused += 1;
                if live.refused < MAX_REFUSED_RELAYS {
                    place.keep(live);
                }
                Err(refused)
            }
            Ok(Step::Open(next)) => {
                let opened =
                    matching::sign_opened(&self.audit_key, &answered, &live.context, tau, &next);
                place.keep(live);
                Ok(ResponseBody::Opened { opened })
            }
            Ok(Step::Answer(answer)) => {
                let values: Vec<Option<[u32; 2]>> = answer
                    .values
                    .into_iter()
                    .map(|v| v.map(|[h, g]| [h.value(), g.value()]))
                    .collect();
                let signed = matching::sign_answer(
                    &self.audit_key,
                    &answered,
                    part,
                    &live.handles,
                    &values,
                    &mut rand_core::OsRng,
                );
                Ok(ResponseBody::Evaluate {
                    node: self.node,
                    values,
                    answer_key: signed.answer_key,
                    signature: signed.signature.to_vec(),
                })
            }
        }
    }

    /// The image a match proof of `user`'s opens, with its distance.
    fn proven(
        &self,
        proof: &MatchProof,
        user: &str,
        now: u64,
    ) -> Result<(ImageId, u32), ResponseBody> {
        let m = matching::verify(proof, user, &self.matches, now).map_err(auth_error)?;
        let id = self
            .handles
            .for_query(user, &proof.query_id, proof.issued)
            .open(&m.handle);
        Ok((ImageId(id), m.distance))
    }

    fn fetch(
        &self,
        req: &Request,
        who: &Authorized,
        by: &FetchBy,
        now: u64,
    ) -> Result<ResponseBody, ResponseBody> {
        let (image, acting, how) = match by {
            FetchBy::Owner { image } => (
                ImageId(*image),
                who.acting(roles::OWNER).map_err(auth_error)?,
                "owner".to_string(),
            ),
            FetchBy::Grant {
                image,
                expires_at,
                signature,
            } => {
                let acting = who
                    .acting_as_any(&[roles::QUERIER, roles::OWNER, roles::AUDITOR, roles::ADMIN])
                    .map_err(auth_error)?;
                let image = ImageId(*image);
                Order::Grant {
                    image,
                    user: user_digest(who.user()),
                    expires_at: *expires_at,
                }
                .verify(&self.owner, signature)
                .map_err(|_| {
                    error(
                        ErrorCode::Forbidden,
                        format!(
                            "the grant of image {image} is not the owner's for user {:?}",
                            who.user()
                        ),
                    )
                })?;
                if *expires_at < now {
                    return Err(error(
                        ErrorCode::Forbidden,
                        format!("the grant of image {image} expired at {expires_at}"),
                    ));
                }
                (image, acting, "grant".to_string())
            }
            FetchBy::Match(proof) => {
                let acting = who.acting(roles::QUERIER).map_err(auth_error)?;
                // The distance stays out of the log: it would tell an auditor how close the
                // user's query was to this image.
                let (image, _) = self.proven(proof, who.user(), now)?;
                (image, acting, "match".to_string())
            }
        };
        self.record(req, &acting, format_args!("image={image} by={how}"), now)?;
        match self.store.image(&image) {
            Ok(Some(img)) => Ok(ResponseBody::Fetch {
                manifest: img.manifest,
                image_share: img.image_share,
            }),
            Ok(None) => Err(error(
                ErrorCode::UnknownImage,
                format!("unknown image {image}"),
            )),
            Err(e) => Err(store_error(e)),
        }
    }

    fn resolve(
        &self,
        req: &Request,
        querier: &Acting<'_>,
        proofs: &[MatchProof],
        now: u64,
    ) -> Result<ResponseBody, ResponseBody> {
        // The request itself was counted once already.
        self.charge(
            querier.who(),
            Charge::Fetches,
            (proofs.len() as u32).saturating_sub(1),
            now,
        )?;
        let mut manifests = Vec::with_capacity(proofs.len());
        let mut opened = 0;
        for proof in proofs {
            let manifest = match self.proven(proof, querier.user(), now) {
                Ok((image, _)) => self
                    .store
                    .image(&image)
                    .map_err(store_error)?
                    .map(|img| img.manifest),
                Err(_) => None,
            };
            opened += usize::from(manifest.is_some());
            manifests.push(manifest);
        }
        self.record(
            req,
            querier,
            format_args!("proofs={} opened={opened}", proofs.len()),
            now,
        )?;
        Ok(ResponseBody::Resolved { manifests })
    }

    /// The key version a prepared batch is written under, and its images' tokens and elements
    /// under it: as sent, or moved by `ρ` when made under the version a rotation retires.
    /// During a rotation each image also gets its tokens under the retired version, so that
    /// lookups under either version find it.
    fn to_writing_version(
        &self,
        key_version: u32,
        images: &[CheckedUpload<'_>],
    ) -> Result<(u32, Vec<Written>), ResponseBody> {
        let as_sent = || {
            images
                .iter()
                .map(|u| Written {
                    tokens: u.tokens,
                    elements: u.elements,
                    retired: None,
                })
                .collect()
        };
        // One read of both: a rotation that finished between two would pair the old factor
        // with the new version.
        let (versions, factor) = self.store.key_state().map_err(store_error)?;
        let Some((to, factor)) = factor else {
            return Ok((key_version, as_sent()));
        };
        let current = versions.current;
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
        for CheckedUpload {
            img,
            tokens,
            elements,
            ..
        } in images
        {
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
                (other[band], other_elements[band]) = move_element(self.node, &rho, e)?;
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
        let result = self.store.delete_if(&image, now, &mut |manifest| {
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

    /// A step of a key rotation, each on the owner's order for this node.
    fn rotate(&self, op: &RotateOp, now: u64) -> Result<RotationStatus, ResponseBody> {
        let refused =
            |e: obscura_sharing::Error| error(ErrorCode::Rejected, format!("key rotation: {e}"));
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
                .map_err(refused)?;
                let rho = scalar(factor)?;
                // Elements stored while the moves are computed make the store refuse them;
                // compute again then.
                for _ in 0..3 {
                    let moves = if self
                        .store
                        .key_versions()
                        .map_err(store_error)?
                        .next
                        .is_some()
                    {
                        Vec::new() // under way: the store checks the values and reports
                    } else {
                        self.store
                            .token_elements()
                            .map_err(store_error)?
                            .iter()
                            .map(|(from, e)| {
                                move_element(self.node, &rho, e).map(|(to, element)| TokenMove {
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
            RotateOp::Move {
                to,
                max_images,
                signature,
            } => {
                Order::RotateMove {
                    node: self.node,
                    to: *to,
                }
                .verify(&self.owner, signature)
                .map_err(refused)?;
                let next = self.store.key_versions().map_err(store_error)?.next;
                if next.is_some_and(|n| n != *to) {
                    return Err(error(
                        ErrorCode::BadRequest,
                        format!("node {} is moving to another key version", self.node),
                    ));
                }
                self.store
                    .rotate_step((*max_images).min(1 << 16) as usize, now)
                    .map_err(store_error)
            }
            RotateOp::Finish { to, signature } => {
                Order::RotateFinish {
                    node: self.node,
                    to: *to,
                }
                .verify(&self.owner, signature)
                .map_err(refused)?;
                self.store.finish_rotation(*to, now).map_err(store_error)
            }
        }
    }

    /// Refuse anything not signed by the owner, whose shares do not match their digests, or
    /// whose elements are not its tokens'.
    fn check_upload<'a>(
        &self,
        img: &'a obscura_proto::PreparedImage,
    ) -> Result<CheckedUpload<'a>, ResponseBody> {
        let shares = self.check_against_manifest(
            &img.image,
            &img.manifest,
            &img.image_share,
            &img.hash_share,
        )?;
        let elements = check_elements(self.node, &img.image, &img.tokens, &img.elements)?;
        // Each band's token carries its band, so two equal tokens are no honest upload; taken,
        // they would make one band count twice.
        let mut distinct = img.tokens.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() != img.tokens.len() {
            return Err(error(
                ErrorCode::Rejected,
                format!(
                    "image {}: two bands have the same token",
                    ImageId(img.image)
                ),
            ));
        }
        Ok(CheckedUpload {
            img,
            tokens: std::array::from_fn(|i| Token(img.tokens[i])),
            elements: elements.copied(),
            _shares: shares,
        })
    }

    /// Refuse anything not signed by the owner, or whose shares do not match their digests.
    fn check_against_manifest(
        &self,
        image: &[u8; 16],
        manifest: &[u8],
        image_share: &[u8],
        hash_share: &[u8],
    ) -> Result<(CheckedShare, CheckedShare), ResponseBody> {
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
        let image_checked = verified
            .check_share(self.node, ShareRole::Image, image_share)
            .map_err(|e| reject(e.to_string()))?;
        let hash_checked = verified
            .check_share(self.node, ShareRole::Hash, hash_share)
            .map_err(|e| reject(e.to_string()))?;
        Ok((image_checked, hash_checked))
    }

    /// The upload ticket in `headers`, checked: the keepers' capability, valid now, an
    /// owner's, signed by its holder for this node within the window.
    fn may_upload(&self, headers: &axum::http::HeaderMap) -> Result<Admitted, ResponseBody> {
        let refuse = || {
            error(
                ErrorCode::Unauthorized,
                format!("an upload needs an owner's ticket in the {UPLOAD_TICKET_HEADER} header"),
            )
        };
        let ticket: UploadTicket = headers
            .get(UPLOAD_TICKET_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.len() <= 2 * (limits::MAX_CAPABILITY + 256))
            .and_then(obscura_tokens::keyfile::bytes_from_hex)
            .and_then(|b| postcard::from_bytes(&b).ok())
            .ok_or_else(refuse)?;
        let who = obscura_auth::capability::check_upload_ticket(
            &ticket,
            self.node,
            &self.capability_key,
            now(),
            self.window,
        )
        .map_err(auth_error)?;
        if who.roles() & roles::OWNER == 0 {
            return Err(error(
                ErrorCode::Forbidden,
                "an upload needs the owner role",
            ));
        }
        Ok(Admitted {
            request_id: ticket.request_id,
            capability: who.capability_id(),
        })
    }

    /// At each tick: one audit entry for the requests refused before authentication since the
    /// last, if any.
    fn summarize_unauthenticated(&self, now: u64) -> Result<(), obscura_store::Error> {
        let refused = self.unauthenticated.swap(0, Ordering::Relaxed);
        if refused > 0 {
            self.store.record_refusal(
                &[0; 16],
                format!("unauthenticated requests refused={refused}").as_bytes(),
                now,
            )?;
        }
        Ok(())
    }
}

fn rotate_name(op: &RotateOp) -> String {
    match op {
        RotateOp::Begin { from, to, .. } => format!("begin from={from} to={to}"),
        RotateOp::Move { to, max_images, .. } => format!("move to={to} max={max_images}"),
        RotateOp::Finish { to, .. } => format!("finish to={to}"),
    }
}

#[derive(Clone)]
struct Served {
    state: Arc<NodeState>,
    guard: Arc<Guard>,
}

async fn handle(
    State(served): State<Served>,
    Path(op): Path<String>,
    headers: axum::http::HeaderMap,
    body: obscura_server::HttpBody,
) -> (StatusCode, Vec<u8>) {
    let started = std::time::Instant::now();
    let (limit, upload) = obscura_server::body_limit(&op);
    // A large upload is received only from an owner: its ticket travels in a header and is
    // checked before a place for the upload is taken or a byte of it read.
    let admitted = if upload {
        match served.state.may_upload(&headers) {
            Ok(admitted) => Some(admitted),
            Err(refused) => {
                served.state.unauthenticated.fetch_add(1, Ordering::Relaxed);
                served
                    .state
                    .metrics
                    .answered(INVALID, &refused, started.elapsed());
                return obscura_server::encode(refused);
            }
        }
    } else {
        None
    };
    let (bytes, permit) = match served.guard.body(body, limit, upload).await {
        Ok(b) => b,
        Err(refused) => {
            served.state.unauthenticated.fetch_add(1, Ordering::Relaxed);
            served
                .state
                .metrics
                .answered(INVALID, &refused, started.elapsed());
            return obscura_server::encode(refused);
        }
    };
    let state = served.state.clone();
    // The store is synchronous and waits for fsync: keep it off the async workers.
    served
        .guard
        .respond(move || {
            let _upload = permit;
            state.process(&op, &bytes, admitted, started)
        })
        .await
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
    let c = &node.config;
    let mut metrics = obscura_server::metrics::Metrics::new();
    let gauges = NodeGauges {
        committed: metrics.gauge("images_committed", "Images committed (searchable)"),
        pending: metrics.gauge("images_pending", "Images prepared, not yet committed"),
        audit: metrics.gauge("audit_entries", "Entries in the node's audit log"),
        bytes: metrics.gauge(
            "store_bytes",
            "Bytes the node's store takes: its redb file, or its PostgreSQL database (share \
             objects kept outside it not counted)",
        ),
        // Only where the store can tell (not on PostgreSQL): a gauge never set would say 0.
        // Asked of the backend, not read from the store: this runs on the async runtime, where
        // PostgreSQL's blocking client cannot.
        free: node.store.tells_free_room().then(|| {
            metrics.gauge(
                "store_free_bytes",
                "Bytes free on the store's file system; writes are refused below the \
                     configured reserve",
            )
        }),
        key_version: metrics.gauge("key_version", "The token key version served"),
        next_key_version: metrics.gauge(
            "key_version_next",
            "During a rotation, the version it moves to (0 otherwise)",
        ),
    };
    let guard = Guard::counted(node.config.limits, metrics.connection_refusals());
    let metrics = Arc::new(metrics);
    let state = Arc::new(NodeState {
        metrics: metrics.clone(),
        node: c.node,
        n: c.n as usize,
        t: c.t as usize,
        window: c.replay_window_s,
        policy: c.policy,
        matches: MatchPolicy {
            node_keys: node.node_keys.clone(),
            t: c.t as usize,
            max_distance: c.policy.max_distance,
            window_s: c.policy.match_window_s,
        },
        store: node.store,
        zero: node.zero,
        owner: node.owner,
        audit_key: node.audit_key,
        capability_key: node.capability_key,
        coin_key: node.handle_key.check_coin_key(),
        handles: node.handle_key,
        live: LiveSearches::default(),
        unauthenticated: AtomicU64::new(0),
        attester: node.attester,
        verifier: obscura_attest::Verifier::new(),
        room: Mutex::default(),
        ledger: Mutex::new(node.ledger),
    });
    let s = state.clone();
    let scraping = obscura_server::metrics::Running::start(node.metrics, metrics, move || {
        gauges.set(&*s.store)
    })
    .map_err(|e| obscura_store::Error::Storage(format!("metrics listener: {e}")))?;
    let app = Router::new()
        .route("/v1/{op}", post(handle))
        .with_state(Served {
            state: state.clone(),
            guard: guard.clone(),
        });
    let pending_timeout = node.config.pending_timeout_s;
    let s = state.clone();
    let tick = move || {
        let now = now();
        s.summarize_unauthenticated(now)?;
        s.store
            .purge_pending(now.saturating_sub(pending_timeout), now)?;
        s.store.audit_checkpoint(&s.audit_key, now).map(drop)
    };
    let last = move || {
        let now = now();
        state.summarize_unauthenticated(now)?;
        state
            .store
            .audit_checkpoint(&state.audit_key, now)
            .map(drop)
    };
    let served = obscura_server::accept_loop(
        listener,
        TlsAcceptor::from(node.tls),
        guard,
        move |_, _| app.clone(),
        Duration::from_secs(node.config.checkpoint_interval_s.max(1)),
        tick,
        shutdown,
        last,
    )
    .await;
    if let Some(scraping) = scraping {
        scraping.stop().await;
    }
    served
}

/// The gauges a scrape reads from the store.
struct NodeGauges {
    committed: obscura_server::metrics::Gauge,
    pending: obscura_server::metrics::Gauge,
    audit: obscura_server::metrics::Gauge,
    bytes: obscura_server::metrics::Gauge,
    /// Where the store can tell.
    free: Option<obscura_server::metrics::Gauge>,
    key_version: obscura_server::metrics::Gauge,
    next_key_version: obscura_server::metrics::Gauge,
}

impl NodeGauges {
    /// Read them from `store` (left as they were where it cannot be read).
    fn set(&self, store: &dyn NodeStore) {
        let gauge = |g: &obscura_server::metrics::Gauge, v: u64| {
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
        };
        if let Ok(s) = store.stats() {
            gauge(&self.committed, s.committed);
            gauge(&self.pending, s.pending);
            gauge(&self.audit, s.audit_entries);
        }
        if let Ok(s) = store.size() {
            gauge(&self.bytes, s.bytes);
            if let (Some(g), Some(free)) = (&self.free, s.free_bytes) {
                gauge(g, free);
            }
        }
        if let Ok(v) = store.key_versions() {
            gauge(&self.key_version, u64::from(v.current));
            gauge(&self.next_key_version, v.next.map_or(0, u64::from));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use obscura_mpc::{share_hash, NodeRequest};
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn search(issued: u64) -> LiveSearch {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let keys = obscura_sharing::zero::deal(6, 2, &mut rng).unwrap();
        let query = share_hash(0, 2, 6, &mut rng).unwrap().remove(0);
        let request = NodeRequest {
            node: 1,
            context: [0; 32],
            query: query.clone(),
            candidates: vec![ImageId([1; 16])],
            max_distance: 10,
        };
        let (session, _) = NodeSession::start(&keys[0], &request, &[Some(&query)]).unwrap();
        LiveSearch {
            refused: 0,
            session,
            context: [0; 32],
            issued,
            handles: vec![[1; 16]],
        }
    }

    fn key(user: &str, part: u32) -> SearchKey {
        (user.to_string(), [7; 16], part)
    }

    /// A place is held from its reservation until its search is kept or dropped; a place taken
    /// back by the stale purge, and given to another, is neither overwritten by the first
    /// holder's keep nor freed by its drop, so the table never holds more than its limits.
    #[test]
    fn a_place_holds_until_kept_and_a_purged_one_is_not_put_back() {
        let live = LiveSearches::default();
        let window = 120;
        let place = live.reserve(key("ana", 0), 1000, 1000, window).unwrap();
        // A second reservation of the same part, while the first is worked on.
        assert!(live.reserve(key("ana", 0), 1000, 1000, window).is_err());
        // Dropped without a search: the place is free again.
        drop(place);
        let place = live.reserve(key("ana", 0), 1000, 1000, window).unwrap();
        place.keep(search(1000));
        let (s, place) = live.take(&key("ana", 0)).expect("kept");
        // Stepped, and kept again.
        place.keep(s);
        assert!(live.take(&key("ana", 0)).is_some_and(|(_, p)| {
            drop(p);
            true
        }));
        assert!(live.lock().0.is_empty(), "a dropped place is freed");

        // Ana's search goes stale while it is worked on; the purge gives its place to another.
        let stale = live.reserve(key("ana", 1), 1000, 1000, window).unwrap();
        let later = 1000 + window + 1;
        let other = live.reserve(key("ana", 1), later, later, window).unwrap();
        stale.keep(search(1000));
        assert!(
            matches!(live.lock().0.get(&key("ana", 1)), Some(Slot::Busy { .. })),
            "the stale holder's keep does not overwrite the new holder's place"
        );
        other.keep(search(later));
        assert!(matches!(
            live.lock().0.get(&key("ana", 1)),
            Some(Slot::Waiting(_))
        ));

        // Eight places per user at most, busy ones counted.
        let held: Vec<_> = (10..17)
            .map(|p| live.reserve(key("ana", p), later, later, window).unwrap())
            .collect();
        assert!(live.reserve(key("ana", 99), later, later, window).is_err());
        assert!(live.reserve(key("bob", 0), later, later, window).is_ok());
        drop(held);
    }
}
