//! A worker as a member of the cluster's group: on the data owner's challenge it makes a
//! KeyPackage whose evidence binds its signature key ([`obscura_group::binding`]), and it
//! follows the group through ledger entries the owner signed, relayed to it by anyone.
//!
//! Its group state lives in its memory only: a worker that restarts is no longer a member
//! (the owner removes it and adds it again, on fresh evidence).

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use obscura_attest::{binding as attest_binding, Role};
use obscura_client::group::{Entries, KeyPackageAnswer, KeyPackageRequest, WorkerFollowed};
use obscura_group::{GroupError, Member, Received};
use obscura_ledger::entry::{Authors, Transition};

use super::{make_evidence, refuse, Answer, Worker};

/// Entries taken in one request.
const MAX_ENTRIES: usize = 64;

/// The owner's ledger, which group entries must come from.
pub(super) struct GroupSide {
    /// `worker:NAME`.
    identity: String,
    log: [u8; 32],
    authors: Authors,
    member: Mutex<Option<Member>>,
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
            authors: Authors { owner, nodes },
            member: Mutex::new(None),
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

/// Makes a new member (replacing one that has not joined) and its KeyPackage, with evidence
/// for the owner's challenge.
pub(super) async fn key_package(State(w): State<Arc<Worker>>, body: Bytes) -> Answer {
    let g = side(&w)?;
    let request: KeyPackageRequest = serde_json::from_slice(&body)
        .map_err(|e| refuse(StatusCode::BAD_REQUEST, e.to_string()))?;
    let nonce: [u8; 32] = obscura_tokens::keyfile::from_hex(&request.nonce)
        .ok_or_else(|| refuse(StatusCode::BAD_REQUEST, "nonce: 64 hex digits"))?;
    if lock(g).as_ref().is_some_and(|m| m.epoch().is_some()) {
        return Err(refuse(
            StatusCode::CONFLICT,
            "this worker is a member of the group already",
        ));
    }
    let mut member = Member::new(&g.identity)
        .map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let (key, context) = obscura_group::binding(&g.identity, &member.signature_key());
    let data = attest_binding::report_data(&Role::Worker, &key, &context, &nonce);
    let evidence = make_evidence(&w, data).await?;
    let kp = member
        .key_package(Some(evidence.to_json()))
        .map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let mut held = lock(g);
    if held.as_ref().is_some_and(|m| m.epoch().is_some()) {
        return Err(refuse(
            StatusCode::CONFLICT,
            "this worker is a member of the group already",
        ));
    }
    *held = Some(member);
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

/// Follows the group through entries the owner signed for this ledger: anything else is
/// refused before the group sees it.
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
    for (entry, prev) in &request.entries {
        let prev: [u8; 32] = obscura_tokens::keyfile::from_hex(prev)
            .ok_or_else(|| refuse(StatusCode::BAD_REQUEST, "prev: 64 hex digits"))?;
        if entry.author != 0 || !entry.signed(&g.log, &prev, &g.authors) {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                format!(
                    "entry {}: not signed by the data owner for this ledger",
                    entry.seq
                ),
            ));
        }
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
