//! A worker as a member of the cluster's group: on the data owner's signed challenge it makes a
//! KeyPackage whose evidence binds its signature key ([`obscura_group::binding`]), and it
//! follows the group through ledger entries the owner signed, under a head a majority of nodes
//! cosigned, relayed to it by anyone.
//!
//! Its group state lives in its memory only: a worker that restarts is no longer a member
//! (the owner removes it and adds it again, on fresh evidence).

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use obscura_attest::{binding as attest_binding, Role};
use obscura_client::group::{
    key_package_statement, Entries, KeyPackageAnswer, KeyPackageRequest, WorkerFollowed,
    WorkerIdentity,
};
use obscura_group::{GroupError, Member, Received};
use obscura_ledger::entry::Entry;
use obscura_ledger::entry::{Authors, Transition};
use obscura_ledger::head::Cosigners;

use super::{make_evidence, refuse, Answer, Worker};

/// The largest request of entries taken (the owner's client sends at most 3 MiB of entries).
pub(super) const MAX_ENTRIES_BODY: usize = 4 << 20;

/// Entries taken in one request.
const MAX_ENTRIES: usize = 256;

/// How long an owner's request for a KeyPackage holds (either way of this worker's clock), and
/// how many used ones it remembers meanwhile.
const REQUEST_S: u64 = 120;
const MAX_REQUESTS: usize = 1024;

/// The owner's ledger, which group entries must come from.
pub(super) struct GroupSide {
    /// `worker:NAME`.
    identity: String,
    log: [u8; 32],
    authors: Authors,
    cosigners: Cosigners,
    member: Mutex<Option<Member>>,
    /// The owner's requests taken, until they lapse: each once.
    used: Mutex<std::collections::HashMap<[u8; 32], u64>>,
}

impl GroupSide {
    /// The group side of a worker whose configuration names the owner and the nodes; `None`
    /// for one made before the ledger.
    pub(super) fn load(name: &str, nodes: &[String], owner: &str) -> Option<GroupSide> {
        let nodes = nodes
            .iter()
            .map(|n| obscura_cluster::ed25519_key(n))
            .collect::<Option<Vec<_>>>()
            .filter(|n| !n.is_empty())?;
        let owner = obscura_cluster::ed25519_key(owner)?;
        let identity = format!("worker:{name}");
        obscura_group::check_identity(&identity).ok()?;
        Some(GroupSide {
            identity,
            log: obscura_ledger::replica::log_id(&owner, &nodes),
            cosigners: obscura_ledger::replica::majority(&nodes),
            authors: Authors { owner, nodes },
            member: Mutex::new(None),
            used: Mutex::default(),
        })
    }
}

fn side(w: &Worker) -> Result<&GroupSide, (StatusCode, String)> {
    w.group.as_ref().ok_or_else(|| {
        refuse(
            StatusCode::NOT_FOUND,
            "this worker's configuration names no ledger (made before it)",
        )
    })
}

/// Makes a new member (replacing the one it held: the owner asks again only to add it again)
/// and its KeyPackage, with evidence for the owner's challenge. Only the owner asks, each
/// request once, within two minutes.
pub(super) async fn key_package(State(w): State<Arc<Worker>>, body: Bytes) -> Answer {
    let g = side(&w)?;
    let request: KeyPackageRequest = serde_json::from_slice(&body)
        .map_err(|e| refuse(StatusCode::BAD_REQUEST, e.to_string()))?;
    let nonce: [u8; 32] = obscura_tokens::keyfile::from_hex(&request.nonce)
        .ok_or_else(|| refuse(StatusCode::BAD_REQUEST, "nonce: 64 hex digits"))?;
    let signature = hex::decode(&request.signature)
        .ok()
        .and_then(|s| ed25519_dalek::Signature::from_slice(&s).ok())
        .ok_or_else(|| refuse(StatusCode::BAD_REQUEST, "signature: 128 hex digits"))?;
    if request.identity != g.identity {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            format!("a request for {}; this is {}", request.identity, g.identity),
        ));
    }
    let statement = key_package_statement(&g.log, &g.identity, &nonce, request.issued_at);
    if g.authors
        .owner
        .verify_strict(&statement, &signature)
        .is_err()
    {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "not asked by the data owner of this ledger",
        ));
    }
    let now = super::now();
    if request.issued_at.abs_diff(now) > REQUEST_S {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "a request older than two minutes (or this worker's clock is off)",
        ));
    }
    {
        let mut used = g.used.lock().unwrap_or_else(|e| e.into_inner());
        used.retain(|_, lapses| *lapses > now);
        if used.len() >= MAX_REQUESTS {
            return Err(refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many requests; ask again later",
            ));
        }
        // Remembered until the request lapses by its own time.
        if used
            .insert(nonce, request.issued_at + REQUEST_S + 1)
            .is_some()
        {
            return Err(refuse(StatusCode::FORBIDDEN, "a request taken already"));
        }
    }
    let mut member = Member::new(&g.identity)
        .map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let (key, context) = obscura_group::binding(&g.identity, &member.signature_key());
    let data = attest_binding::report_data(&Role::Worker, &key, &context, &nonce);
    let evidence = make_evidence(&w, data).await?;
    let kp = member
        .key_package(Some(evidence.to_json()))
        .map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    *lock(g) = Some(member);
    let answer = KeyPackageAnswer {
        key_package: hex::encode(kp),
    };
    Ok((
        StatusCode::OK,
        serde_json::to_string(&answer).expect("an answer serialises"),
    ))
}

fn lock(g: &GroupSide) -> std::sync::MutexGuard<'_, Option<Member>> {
    g.member.lock().unwrap_or_else(|e| e.into_inner())
}

/// `POST /v1/group/identity`: who this worker is in the group, which the owner's request
/// must name.
pub(super) async fn identity(State(w): State<Arc<Worker>>) -> Answer {
    let g = side(&w)?;
    Ok((
        StatusCode::OK,
        serde_json::to_string(&WorkerIdentity {
            identity: g.identity.clone(),
        })
        .expect("an answer serialises"),
    ))
}

/// Follows the group through entries the owner signed for this ledger, each in a head a
/// majority of nodes cosigned: anything else is refused before the group sees it.
pub(super) async fn entries(State(w): State<Arc<Worker>>, body: Bytes) -> Answer {
    let g = side(&w)?;
    let request: Entries = serde_json::from_slice(&body)
        .map_err(|e| refuse(StatusCode::BAD_REQUEST, e.to_string()))?;
    if request.entries.len() > MAX_ENTRIES {
        return Err(refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("at most {MAX_ENTRIES} entries at once"),
        ));
    }
    let head = &request.head;
    // Bounded before any signature is checked: one cosignature per node at most.
    let mut nodes: Vec<u8> = head.cosignatures.iter().map(|c| c.node).collect();
    nodes.sort_unstable();
    nodes.dedup();
    if nodes.len() != head.cosignatures.len() || nodes.len() > g.authors.nodes.len() {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "at most one cosignature per node",
        ));
    }
    if request.entries.iter().any(|e| e.proof.len() > 64) {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "an inclusion proof over 64 hashes",
        ));
    }
    if head.head.log != g.log || g.cosigners.signers(head).len() < g.cosigners.quorum {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "the head is not one a majority of this ledger's nodes cosigned",
        ));
    }
    // Every entry checked before any is used.
    let mut checked = Vec::with_capacity(request.entries.len());
    for relayed in &request.entries {
        let bad = |why: &str| refuse(StatusCode::FORBIDDEN, why.to_owned());
        let entry: Entry = hex::decode(&relayed.entry)
            .ok()
            .and_then(|b| postcard::from_bytes(&b).ok())
            .ok_or_else(|| bad("an entry that does not decode"))?;
        let prev: [u8; 32] = obscura_tokens::keyfile::from_hex(&relayed.prev)
            .ok_or_else(|| bad("prev: 64 hex digits"))?;
        let proof = relayed
            .proof
            .iter()
            .map(|h| obscura_tokens::keyfile::from_hex::<32>(h))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad("proof: hashes of 64 hex digits"))?;
        if entry.author != 0 || !entry.signed(&g.log, &prev, &g.authors) {
            return Err(bad(&format!(
                "entry {}: not signed by the data owner for this ledger",
                entry.seq
            )));
        }
        if !obscura_ledger::merkle::verify_inclusion(
            &entry.leaf(),
            entry.seq,
            head.head.size,
            &proof,
            &head.head.root,
        ) {
            return Err(bad(&format!(
                "entry {}: not in the head the nodes cosigned",
                entry.seq
            )));
        }
        checked.push(entry);
    }
    let mut held = lock(g);
    let member = held.as_mut().ok_or_else(|| {
        refuse(
            StatusCode::CONFLICT,
            "no KeyPackage made yet: the owner asks for one first",
        )
    })?;
    let mut followed = WorkerFollowed {
        epoch: None,
        joined: false,
        removed: false,
        opened: 0,
    };
    for entry in &checked {
        let received = match &entry.transition {
            Transition::GroupCommit {
                epoch,
                commit,
                welcome,
            } if member.epoch().is_none_or(|e| e < *epoch) => {
                member.receive(commit, welcome.as_deref())
            }
            Transition::Sealed { message, .. } => member.receive(message, None),
            _ => continue,
        };
        match received {
            Ok(Received::Joined(_)) => followed.joined = true,
            Ok(Received::Removed) => followed.removed = true,
            Ok(Received::Opened(_)) => followed.opened += 1,
            Ok(_) | Err(GroupError::Undecryptable(_)) => {}
            Err(e) => {
                return Err(refuse(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("entry {}: {e}", entry.seq),
                ))
            }
        }
    }
    followed.epoch = member.epoch();
    Ok((
        StatusCode::OK,
        serde_json::to_string(&followed).expect("an answer serialises"),
    ))
}
