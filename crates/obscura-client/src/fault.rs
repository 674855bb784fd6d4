//! Why a server failed one call, typed from the wire to the user, and which servers misbehaved.
//!
//! Every call to a node or a keeper ends in an answer or a [`Fault`]. A fault is either the
//! server's unavailability (down, slow, refusing) or evidence against it: an answer that the
//! protocol proves wrong (a share that fails the owner-signed manifest, a VOPRF proof or a
//! signature share that does not verify, an answer in another party's name). Only the second
//! kind makes a server a culprit ([`Fault::is_misbehaviour`], [`crate::Error::culprits`]), as in
//! frost's identifiable aborts: a keeper that is merely down is never named as one.

use std::time::Duration;

use obscura_cluster::tls::Party;
use obscura_keeper::session::SessionError;
use obscura_proto::ErrorCode;

/// Why a server failed one call, typed so that callers match on it instead of parsing text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Fault {
    /// No connection could be made (refused, reset, a handshake that failed: a certificate
    /// that is not the party's, say).
    #[error("unreachable")]
    Unreachable,
    /// No answer within the call's time limit (how long it waited).
    #[error("timed out after {:.1} s", .0.as_secs_f64())]
    TimedOut(Duration),
    /// No answer yet when enough other nodes had answered and a grace had passed (how long it
    /// was given): left behind, not waited for.
    #[error("did not answer within {:.1} s, while enough other nodes had", .0.as_secs_f64())]
    Slow(Duration),
    /// The server refused the request, saying why.
    #[error("{} ({message})", code_name(*code))]
    Refused {
        /// Its error code.
        code: ErrorCode,
        /// Its explanation.
        message: String,
    },
    /// The answer could not be read: broken off, too large, not a message of this protocol.
    #[error("{0}")]
    Unreadable(String),
    /// The answer was a valid message, but not the one asked for.
    #[error("answered something other than {0}")]
    Unexpected(&'static str),
    /// Its share or its manifest did not pass the owner-signed manifest's check.
    #[error("{0}")]
    BadShare(obscura_sharing::manifest::Culprit),
    /// It returned a manifest that is not the owner's.
    #[error("returned a manifest that is not the owner's")]
    ForeignManifest,
    /// This client could not make the request (no capability, say).
    #[error("{0}")]
    NotSent(String),
    /// The session with a keeper failed: a request that could not be sealed in it, or an
    /// answer that does not open.
    #[error("session: {0}; log in again")]
    Session(SessionError),
    /// A login or registration step failed here: a wrong password, an unknown user and a
    /// changed message all read the same, as OPAQUE means them to.
    #[error("{0}")]
    Opaque(SessionError),
    /// It answered in another keeper's name.
    #[error("answered as keeper {0}")]
    AnsweredAs(u8),
    /// Its VOPRF evaluation does not verify against its public share of the cluster's token key.
    #[error("token evaluation: {error}")]
    BadEvaluation {
        /// What the check found.
        error: obscura_keeper::Error,
    },
    /// Its share of a user secret does not rebuild the secret the other keepers' shares do.
    #[error("its share does not rebuild the secret")]
    BadSecretShare,
    /// Its FROST signature share does not verify.
    #[error("its signature share does not verify")]
    BadSignatureShare,
    /// Its public shares of the next token-key version are not those the rotation plan makes.
    #[error("its public shares of the next version are not those the plan makes")]
    WrongPublicShares,
    /// It did not prove that it took the token-key shares sealed to its appraised key: its
    /// receipt, or the public shares it says it holds, are not those of the delivery.
    #[error("did not prove it took the token-key shares sealed to its appraised key")]
    OtherShares,
    /// It holds another public key for a signing key than the one this client knows (the
    /// cluster's capability key, in `client.json`).
    #[error("holds another public key for it than the cluster's")]
    OtherKey,
    /// It offered to sign a capability other than the other signers offered (which of them is
    /// right is not known: none is named a culprit).
    #[error("offers another capability than the other signers ({0})")]
    OtherOffer(String),
    /// It holds the account under another password: the first step said it holds the account
    /// (`.0`), and this password does not log in there.
    #[error("{0}, and this password does not log in there")]
    OtherPassword(Box<Fault>),
    /// It was not asked to store a registration because another keeper could not take it:
    /// an account is stored everywhere or nowhere.
    #[error("not registered: {0}")]
    Withheld(&'static str),
    /// It answered out of step with the other nodes: its signed answer while others sent
    /// another round's openings, or the reverse. One side is off the protocol, and which is not
    /// known (a lying node could answer early to have the honest ones blamed), so no node is
    /// named a culprit for it.
    #[error(
        "answered out of step with the other nodes (some answered, some opened another round)"
    )]
    OutOfStep,
    /// Its answer failed a check that no server's answer passed and at least one other's
    /// failed, so the check itself may be what is wrong (this client configured for another
    /// cluster, a plan of another rotation): `.0` is what the check found, and nobody is named a
    /// culprit for it.
    #[error("{0} (as every other answer did: is this client configured for this cluster?)")]
    Unconfirmed(Box<Fault>),
    /// Nothing was heard from it.
    #[error("no answer")]
    NoAnswer,
    /// This client's task for the call ended without an answer (a fault of this client).
    #[error("this client's task for it failed")]
    Panicked,
    /// Its attestation evidence was refused under the cluster's policy (or it gave none), so
    /// it was sent nothing else.
    #[error("refused by the attestation policy: {0}")]
    NotAttested(obscura_attest::Refusal),
    /// Its part of a share recovery, authenticated as its own, does not fit its public share:
    /// the recovering keeper's verdict, proven under the key sealed to it (`.0`).
    #[error("its part of the share recovery does not check ({0})")]
    BadRecoveryPart(String),
    /// It and keeper `.0` gave mask commitments that disagree in a share recovery: one of the
    /// two lied, and which is not known, so neither is named a culprit.
    #[error("it and keeper {0} disagree on the mask they share: one of the two lied")]
    MaskDispute(u8),
}

impl Fault {
    /// Whether the server said it holds no such image.
    pub fn is_unknown_image(&self) -> bool {
        self.is_refusal(ErrorCode::UnknownImage)
    }

    /// Whether the server refused the request with `code`.
    pub fn is_refusal(&self, code: ErrorCode) -> bool {
        matches!(self, Fault::Refused { code: c, .. } if *c == code)
    }

    /// Whether the answer proves the server misbehaved, rather than being unavailable or
    /// refusing: a share, proof or signature share that fails its check, a manifest not the
    /// owner's, an answer in another party's name, or a valid message other than the one
    /// asked for. An unreadable answer is not counted (a connection broken mid-answer reads
    /// the same), nor is a session that does not open (a lost session reads the same).
    pub fn is_misbehaviour(&self) -> bool {
        matches!(
            self,
            Fault::Unexpected(_)
                | Fault::BadShare(_)
                | Fault::ForeignManifest
                | Fault::AnsweredAs(_)
                | Fault::BadEvaluation { .. }
                | Fault::BadSecretShare
                | Fault::BadSignatureShare
                | Fault::WrongPublicShares
                | Fault::OtherShares
                | Fault::OtherKey
                | Fault::NotAttested(_)
                | Fault::BadRecoveryPart(_)
        )
    }
}

/// Why one node failed a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeFailure {
    /// The node.
    pub node: u8,
    /// What went wrong.
    pub fault: Fault,
}

impl NodeFailure {
    /// What went wrong, for people.
    pub fn reason(&self) -> String {
        self.fault.to_string()
    }
}

/// Why one keeper failed a call, or why its answer was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeeperFailure {
    /// The keeper, 1..=m.
    pub keeper: u8,
    /// What went wrong.
    pub fault: Fault,
}

impl KeeperFailure {
    /// What went wrong, for people.
    pub fn reason(&self) -> String {
        self.fault.to_string()
    }
}

/// The faults of a check that no server passed: when more than one server failed it, the
/// check itself is in doubt (this client's configuration may be another cluster's), and each
/// such fault becomes [`Fault::Unconfirmed`]. Only faults that a wrong configuration of this
/// client could cause are doubted (a proof or public share that does not verify against the
/// shares it holds, a manifest that does not verify under the owner key it holds); an answer
/// of the wrong kind, or in another's name, stays evidence. One server alone failing a check
/// is still named: a lying server cannot hide behind another that is only down.
pub(crate) fn doubt<'a>(faults: impl IntoIterator<Item = &'a mut Fault>) {
    let mut failed: Vec<&mut Fault> = faults
        .into_iter()
        .filter(|f| {
            matches!(
                f,
                Fault::BadEvaluation { .. }
                    | Fault::WrongPublicShares
                    | Fault::ForeignManifest
                    | Fault::OtherKey
            )
        })
        .collect();
    if failed.len() < 2 {
        return;
    }
    for f in &mut failed {
        let found = std::mem::replace(&mut **f, Fault::NoAnswer);
        **f = Fault::Unconfirmed(Box::new(found));
    }
}

/// `node 1: why; node 3: why`.
pub(crate) fn list_nodes(failures: &[NodeFailure]) -> String {
    failures
        .iter()
        .map(|f| format!("node {}: {}", f.node, f.fault))
        .collect::<Vec<_>>()
        .join("; ")
}

/// `keeper 1: why; keeper 3: why`.
pub(crate) fn list_keepers(failures: &[KeeperFailure]) -> String {
    failures
        .iter()
        .map(|f| format!("keeper {}: {}", f.keeper, f.fault))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The parties among `failures` whose answers prove they misbehaved, each once, in order.
pub(crate) fn culprit_nodes(failures: &[NodeFailure]) -> Vec<Party> {
    culprits(failures.iter().map(|f| (f.node, &f.fault)), Party::Node)
}

/// As [`culprit_nodes`], for keepers.
pub(crate) fn culprit_keepers(failures: &[KeeperFailure]) -> Vec<Party> {
    culprits(failures.iter().map(|f| (f.keeper, &f.fault)), Party::Keeper)
}

fn culprits<'a>(
    failures: impl Iterator<Item = (u8, &'a Fault)>,
    party: fn(u8) -> Party,
) -> Vec<Party> {
    let mut out: Vec<u8> = failures
        .filter(|(_, fault)| fault.is_misbehaviour())
        .map(|(x, _)| x)
        .collect();
    out.sort_unstable();
    out.dedup();
    out.into_iter().map(party).collect()
}

/// Tasks, one per keeper, joined with the keeper each ran for, a task that panicked included
/// (it fails as [`Fault::Panicked`], named, instead of vanishing).
pub(crate) struct PerKeeper<T> {
    set: tokio::task::JoinSet<Result<T, Fault>>,
    keeper_of: std::collections::HashMap<tokio::task::Id, u8>,
}

impl<T: Send + 'static> PerKeeper<T> {
    pub(crate) fn new() -> Self {
        PerKeeper {
            set: tokio::task::JoinSet::new(),
            keeper_of: std::collections::HashMap::new(),
        }
    }

    /// Run `task` for keeper `j`.
    pub(crate) fn spawn(
        &mut self,
        j: u8,
        task: impl std::future::Future<Output = Result<T, Fault>> + Send + 'static,
    ) {
        let id = self.set.spawn(task).id();
        self.keeper_of.insert(id, j);
    }

    /// The next task to finish, with its keeper.
    pub(crate) async fn next(&mut self) -> Option<(u8, Result<T, Fault>)> {
        let done = self.set.join_next_with_id().await?;
        Some(match done {
            Ok((id, r)) => (self.keeper_of.remove(&id).unwrap_or(0), r),
            Err(e) => (
                self.keeper_of.remove(&e.id()).unwrap_or(0),
                Err(Fault::Panicked),
            ),
        })
    }

    /// Every task's result, in keeper order.
    pub(crate) async fn all(mut self) -> Vec<(u8, Result<T, Fault>)> {
        let mut out = Vec::with_capacity(self.keeper_of.len());
        while let Some(r) = self.next().await {
            out.push(r);
        }
        out.sort_by_key(|(j, _)| *j);
        out
    }
}

/// The failures among `results`, in keeper order.
pub(crate) fn keeper_failures<T>(results: &[(u8, Result<T, Fault>)]) -> Vec<KeeperFailure> {
    results
        .iter()
        .filter_map(|(j, r)| {
            r.as_ref().err().map(|fault| KeeperFailure {
                keeper: *j,
                fault: fault.clone(),
            })
        })
        .collect()
}

pub(crate) fn code_name(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::BadRequest => "bad request",
        ErrorCode::UnsupportedVersion => "unsupported protocol version",
        ErrorCode::Replay => "replayed request",
        ErrorCode::Stale => "clock skew too large",
        ErrorCode::UnknownImage => "unknown image",
        ErrorCode::AlreadyExists => "image already exists",
        ErrorCode::Rejected => "rejected",
        ErrorCode::Internal => "server failure",
        ErrorCode::OverBudget => "evaluation budget spent",
        ErrorCode::UnknownKey => "unknown token key",
        ErrorCode::NoSession => "no session (log in)",
        ErrorCode::LoginFailed => "login failed",
        ErrorCode::TooManyAttempts => "too many login attempts",
        ErrorCode::Forbidden => "forbidden",
        ErrorCode::RolledBack => "keeper store rolled back",
        ErrorCode::Unauthorized => "not authenticated (log in again)",
        ErrorCode::RateLimited => "rate limited",
        ErrorCode::TooLarge => "request too large",
        ErrorCode::StorageFull => "disk full",
    }
}
