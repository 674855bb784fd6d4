//! A keeper's users: OPAQUE registration and login, sessions, login limits, user secrets, the
//! user's audit trail, threshold signing keys, and capabilities.
//!
//! Outside a session a keeper answers only its status, logins, and the cluster's very first
//! registration, which must present the cluster's bootstrap code (made by `cluster init` for its
//! operator) and makes that account the keeper's admin with every role. Everything else, token
//! evaluation included, is a request sealed in a session ([`obscura_keeper::session::Channel`]):
//! the keeper opens it with the session's keys, checks it is the next message, runs it as that
//! user, and seals the answer.
//!
//! Logins are limited per account name and per source address. An OPAQUE client learns whether
//! its password guess was right from the keeper's second message alone, so every *started*
//! login counts as a failure, durably, before that message is sent. A finished login clears its
//! account's count but takes back only its own one failure from its source's count, so an
//! account holder cannot spray guesses at other accounts and clear its address in between.
//! After [`LoginPolicy::free`] failures each further attempt must wait twice as long as the last
//! (up to [`LoginPolicy::max_delay_s`]); after [`LoginPolicy::lock_after`] the account is locked
//! for [`LoginPolicy::lock_s`], twice as long at each lockout up to
//! [`LoginPolicy::max_lock_s`]: locks expire by themselves, so nobody can lock an account (the
//! only admin's included) for good; an admin, or the keeper's operator at the keeper's own
//! machine, lifts one early. Unknown names are counted and locked exactly like known ones, and
//! their logins run the same steps with a fake password file, so neither the answers nor the
//! limits tell whether an account exists.
//!
//! Registering a name that has an account is refused, except to the account's own user in a
//! session logged in moments before (a password change), and that first step counts as a login
//! attempt: a registration's first message evaluates the account's OPAQUE key on a password
//! guess exactly as a login's does, so it must be limited and audited like one.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Mutex;

use obscura_auth::capability::{self, Offer};
use obscura_keeper::session::{self, Channel, PendingLogin, ServerKeys};
use obscura_keeper::signing::{
    self, DkgState, KeyPackage, PeerKeys, PublicKeyPackage, SigningNonces,
};
use obscura_proto::{
    roles, ErrorCode, KeeperBody, KeeperPackage, Limits, Response, ResponseBody, SecretInfo,
    SecretKind, UserEvent, WireRoles,
};
use obscura_store::keeper::KeeperStore;
use rand_core::RngCore;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use obscura_tokens::keyfile::to_hex as hex;

use crate::vault::{Handle, Kind, Randomness, Vault};
use obscura_cluster::keeper::{
    bootstrap_digest, login_context, CapabilityPolicy, LoginPolicy, Quotas,
};
use obscura_server::error;

/// A request to a keeper: it parses only a keeper's operations.
type Request = obscura_proto::Request<KeeperBody>;

/// Seconds to wait after the last failure before another attempt, after `failures`.
fn delay(failures: u32, free: u32, max: u64) -> u64 {
    if failures < free {
        0
    } else {
        let doubling = failures - free;
        if doubling >= 63 {
            max
        } else {
            (1u64 << doubling).min(max)
        }
    }
}

/// An account as stored (sealed by the vault).
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct Account {
    /// The OPAQUE password file.
    pub password_file: Vec<u8>,
    /// Its roles ([`roles`]).
    pub roles: WireRoles,
    /// When it was registered.
    pub created: u64,
}

/// Failed login attempts of an account name, as stored.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Attempts {
    /// Failures since the last successful login or lockout.
    pub failures: u32,
    /// Time of the last failure.
    pub last: u64,
    /// Locked until then (keeper time).
    pub locked_until: u64,
    /// Lockouts since the last successful login: each lasts twice as long as the one before.
    pub lockouts: u32,
}

impl Attempts {
    /// Seconds still to wait at `now` before the next attempt, after `free` failures allowed.
    fn wait(&self, free: u32, max_delay_s: u64, now: u64) -> u64 {
        (self.last + delay(self.failures, free, max_delay_s)).saturating_sub(now)
    }

    /// Count one more failure at `now`; at `lock_after` the account is locked, for longer at
    /// each lockout.
    fn fail(&mut self, p: &LoginPolicy, now: u64) {
        self.failures = self.failures.saturating_add(1);
        self.last = now;
        if self.failures >= p.lock_after {
            let doublings = self.lockouts.min(32);
            let lock = p.lock_s.saturating_mul(1 << doublings).min(p.max_lock_s);
            self.locked_until = now.saturating_add(lock);
            self.lockouts = self.lockouts.saturating_add(1);
            self.failures = 0;
        }
    }
}

/// A user's secret as stored (sealed by the vault under the secret's own key).
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct StoredSecret {
    /// The owner's name for it.
    pub name: String,
    /// `true` for a FROST signing key, `false` for data.
    pub signing: bool,
    /// When it was stored.
    pub created: u64,
    /// Data: this keeper's Shamir share. Signing: its FROST key package.
    pub share: Vec<u8>,
    /// Signing: the FROST public key package.
    pub public_package: Vec<u8>,
    /// Data released only to attested workers: the release policy (JSON). Records stored
    /// before release policies existed end before this field and read as `None`.
    pub release: Option<Vec<u8>>,
}

/// A secret as stored before release policies ([`StoredSecret`] without `release`).
#[derive(Deserialize)]
struct StoredSecretBefore {
    name: String,
    signing: bool,
    created: u64,
    share: Vec<u8>,
    public_package: Vec<u8>,
}

impl StoredSecret {
    fn decode(bytes: &[u8]) -> Result<StoredSecret, postcard::Error> {
        postcard::from_bytes(bytes).or_else(|_| {
            // Only a record that is exactly an older one, nothing left over.
            let (b, rest) = postcard::take_from_bytes::<StoredSecretBefore>(bytes)?;
            if !rest.is_empty() {
                return Err(postcard::Error::DeserializeBadEncoding);
            }
            Ok(StoredSecret {
                name: b.name,
                signing: b.signing,
                created: b.created,
                share: b.share,
                public_package: b.public_package,
                release: None,
            })
        })
    }
}

/// A release challenge: its user, its nonce and when it expires.
type Challenge = (Handle, [u8; 32], u64);

/// Whose release challenge: (session, secret).
type ChallengeKey = ([u8; 16], [u8; 16]);

/// How long a release challenge holds, seconds, and how many are open at once, in all and per
/// user.
const RELEASE_CHALLENGE_S: u64 = 60;
const MAX_RELEASE_CHALLENGES: usize = 4096;
const MAX_RELEASE_CHALLENGES_PER_USER: usize = 16;

/// Longest refusal reason recorded in the audit log and the user's trail.
const MAX_REASON: usize = 160;

fn bounded(reason: &str) -> String {
    match reason.char_indices().nth(MAX_REASON) {
        Some((at, _)) => format!("{}…", &reason[..at]),
        None => reason.to_owned(),
    }
}

struct Session {
    channel: Mutex<Channel>,
    /// The session key, kept to record the session again when its lane moves up.
    key: zeroize::Zeroizing<[u8; session::SESSION_KEY_LEN]>,
    expires_at: u64,
    /// One above the highest lane recorded in the store (0: none yet); it rises only under
    /// `channel`'s lock.
    floor: std::sync::atomic::AtomicU64,
    /// New lanes opened in the current minute: (minute, count).
    new_lanes: Mutex<(u64, u32)>,
    user: Handle,
    tag: [u8; 32],
    roles: WireRoles,
    opened_at: u64,
    /// This keeper's count of sessions opened when this one was: orders sessions opened in
    /// the same second.
    serial: u64,
}

impl Session {
    /// Whether the session may open one more lane this minute.
    fn may_open_lane(&self, now: u64) -> Result<(), ResponseBody> {
        let opened = self.new_lanes.lock().unwrap_or_else(|e| e.into_inner());
        if opened.0 == now / 60 && opened.1 >= NEW_LANES_PER_MINUTE {
            return Err(error(
                ErrorCode::RateLimited,
                format!(
                    "this session opened {NEW_LANES_PER_MINUTE} new lanes (commands) at this \
                     keeper this minute, each a durable write: wait {} s",
                    60 - now % 60
                ),
            ));
        }
        Ok(())
    }

    /// Count a lane opened (its floor written).
    fn lane_opened(&self, now: u64) {
        let mut opened = self.new_lanes.lock().unwrap_or_else(|e| e.into_inner());
        if opened.0 != now / 60 {
            *opened = (now / 60, 0);
        }
        opened.1 += 1;
    }

    /// The session `id` of `user` as the store keeps it: its channel takes requests in lanes
    /// from the kept floor up (every lane, for a login's new session). `None` for a key of the
    /// wrong length or a floor past the last lane.
    fn from_kept(id: [u8; 16], user: Handle, k: &KeptSession) -> Option<Session> {
        let key = zeroize::Zeroizing::new(
            <[u8; session::SESSION_KEY_LEN]>::try_from(k.key.as_slice()).ok()?,
        );
        let floor = u32::try_from(k.floor).ok()?;
        Some(Session {
            channel: Mutex::new(Channel::reopen(&key, id, k.expires_at, floor)),
            key,
            expires_at: k.expires_at,
            floor: std::sync::atomic::AtomicU64::new(k.floor),
            new_lanes: Mutex::default(),
            user,
            tag: k.tag,
            roles: k.roles,
            opened_at: k.opened_at,
            serial: k.serial,
        })
    }

    fn kept(&self, floor: u64) -> KeptSession {
        KeptSession {
            key: self.key.to_vec(),
            tag: self.tag,
            roles: self.roles,
            opened_at: self.opened_at,
            expires_at: self.expires_at,
            serial: self.serial,
            floor,
        }
    }
}

/// An open session as the keeper's store keeps it (sealed by the vault, like every record), so
/// that a restart logs nobody out.
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct KeptSession {
    key: Vec<u8>,
    tag: [u8; 32],
    roles: WireRoles,
    opened_at: u64,
    expires_at: u64,
    serial: u64,
    /// One above the highest lane the keeper has taken requests in (0: none): after a restart
    /// it takes only lanes from here up, so no request opened before the restart opens again.
    floor: u64,
}

struct Pending {
    login: PendingLogin,
    user: Handle,
    /// The account's roles as read at the start (none for an unknown name, which never
    /// finishes: a fake file never verifies KE3).
    roles: WireRoles,
    /// The account record's version at the start (0: none): a login started before a
    /// password change does not finish after it.
    version: u64,
    tag: [u8; 32],
    source: IpAddr,
    expires_at: u64,
}

/// How long a started login may wait for its last message.
const PENDING_S: u64 = 60;
/// Most logins waiting for their last message.
const MAX_PENDING: usize = 4096;
/// Most open sessions.
const MAX_SESSIONS: usize = 1 << 16;
/// How long a key generation may take between its rounds.
const DKG_S: u64 = 600;
/// Key generations under way per user, and in all.
const DKG_PER_USER: usize = 4;
const DKG_IN_ALL: usize = 1024;
/// Open sessions per user: a user's oldest ends when it opens one more.
const SESSIONS_PER_USER: usize = 16;
/// New lanes a session may open in a minute: each is a durable write (its floor), and a command
/// opens one. Beyond it the session's requests in new lanes are refused until the next minute.
pub const NEW_LANES_PER_MINUTE: u32 = 120;

/// What a keeper's account service is set up with.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Setup {
    pub(crate) keeper: u8,
    pub(crate) m: u8,
    pub(crate) threshold: u8,
    pub(crate) policy: LoginPolicy,
    pub(crate) session_ttl_s: u64,
    pub(crate) capabilities: CapabilityPolicy,
    pub(crate) quotas: Quotas,
    /// The BLAKE3 digest of the cluster's bootstrap code.
    pub(crate) bootstrap: [u8; 32],
    /// Allowed clock skew, seconds.
    pub(crate) window: u64,
    /// The simulation root of this keeper's own simulated platform, when it attests with the
    /// simulation backend: the only root a release policy may trust (`None`: no simulation).
    pub(crate) simulation_root: Option<[u8; 32]>,
}

/// Users, sessions and their in-memory state at one keeper.
pub(crate) struct Accounts {
    pub(crate) keeper: u8,
    pub(crate) m: u8,
    pub(crate) threshold: u8,
    pub(crate) opaque: ServerKeys,
    pub(crate) vault: Vault,
    pub(crate) peers: Option<PeerKeys>,
    pub(crate) policy: LoginPolicy,
    pub(crate) session_ttl_s: u64,
    capabilities: CapabilityPolicy,
    quotas: Quotas,
    bootstrap: [u8; 32],
    window: u64,
    capability_key: (KeyPackage, PublicKeyPackage),
    rng: Mutex<Randomness>,
    sessions: Mutex<HashMap<[u8; 16], std::sync::Arc<Session>>>,
    pending: Mutex<HashMap<[u8; 16], Pending>>,
    sources: Mutex<HashMap<IpAddr, Attempts>>,
    /// Registrations and attempt counts change one at a time.
    writing: Mutex<()>,
    /// Key generations under way: (user, key id) → (state, start, name).
    dkg: Mutex<HashMap<(Handle, [u8; 16]), Generating>>,
    /// Signing nonces committed: (session, key id) → nonces, used once.
    nonces: Mutex<HashMap<SessionKey, SigningNonces>>,
    /// Capability-signing nonces committed, by session, used once.
    capability_nonces: Mutex<HashMap<[u8; 16], SigningNonces>>,
    /// Release challenges given out, by (session, secret), each used once.
    releases: Mutex<HashMap<ChallengeKey, Challenge>>,
    simulation_root: Option<[u8; 32]>,
    /// Pinned roots parsed once, for appraising workers and recovering keepers.
    pub(crate) verifier: obscura_attest::Verifier,
    /// Sessions opened so far.
    opened: std::sync::atomic::AtomicU64,
}

type Generating = (DkgState, u64, String);
type SessionKey = ([u8; 16], [u8; 16]);

/// Who a sealed request runs as.
pub(crate) struct Caller {
    pub(crate) session: [u8; 16],
    pub(crate) user: Handle,
    /// The same for the user at every keeper (unlike `user`, which is keyed per keeper): binds
    /// the user into what keepers exchange with each other.
    pub(crate) tag: [u8; 32],
    pub(crate) roles: WireRoles,
    /// When the session's login happened.
    pub(crate) opened_at: u64,
    /// The session's login is at most [`LoginPolicy::fresh_login_s`] old.
    pub(crate) fresh: bool,
}

impl Caller {
    fn is(&self, role: WireRoles) -> bool {
        self.roles & role != 0
    }
}

/// A user's name as every keeper digests it alike.
fn user_tag(user: &str) -> [u8; 32] {
    blake3::derive_key("obscura 2026 keeper user tag", user.as_bytes())
}

fn internal(e: impl std::fmt::Display) -> ResponseBody {
    error(ErrorCode::Internal, e.to_string())
}

fn vault_error(e: obscura_server::Error) -> ResponseBody {
    match e {
        obscura_server::Error::Store(s) => obscura_server::store_error(s),
        other => internal(other),
    }
}

fn locked(until: u64) -> ResponseBody {
    error(
        ErrorCode::TooManyAttempts,
        format!(
            "too many failed logins: the account is locked until Unix time {until} (an admin \
             can lift it sooner)"
        ),
    )
}

fn login_failed() -> ResponseBody {
    error(ErrorCode::LoginFailed, "login failed")
}

/// The local operator lifts `user`'s lockout at a stopped keeper (see
/// [`crate::unlock_locally`]).
pub(crate) fn unlock_locally(
    store: &KeeperStore,
    vault: &Vault,
    user: &str,
    now: u64,
) -> Result<(), obscura_server::Error> {
    let handle = vault.handle(user);
    let bytes = postcard::to_allocvec(&Attempts::default())
        .map_err(|e| obscura_server::Error::secrets(e.to_string()))?;
    vault.write(
        store,
        &[(Kind::Attempts, handle, Vec::new(), &bytes, 1)],
        &[],
        &handle,
        &format!("unlock user={} by=local operator", hex(&handle)),
        now,
    )
}

impl Accounts {
    pub(crate) fn new(
        setup: Setup,
        opaque: ServerKeys,
        vault: Vault,
        peers: Option<PeerKeys>,
        capability_key: (KeyPackage, PublicKeyPackage),
        rng: Randomness,
    ) -> Accounts {
        Accounts {
            keeper: setup.keeper,
            m: setup.m,
            threshold: setup.threshold,
            opaque,
            vault,
            peers,
            policy: setup.policy,
            session_ttl_s: setup.session_ttl_s,
            capabilities: setup.capabilities,
            quotas: setup.quotas,
            bootstrap: setup.bootstrap,
            window: setup.window,
            capability_key,
            rng: Mutex::new(rng),
            sessions: Mutex::default(),
            pending: Mutex::default(),
            sources: Mutex::default(),
            writing: Mutex::default(),
            dkg: Mutex::default(),
            nonces: Mutex::default(),
            capability_nonces: Mutex::default(),
            releases: Mutex::default(),
            simulation_root: setup.simulation_root,
            verifier: obscura_attest::Verifier::new(),
            opened: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn random_id(&self) -> [u8; 16] {
        let mut id = [0u8; 16];
        self.rng
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .fill_bytes(&mut id);
        id
    }

    fn any_account(&self, store: &KeeperStore) -> Result<bool, ResponseBody> {
        store
            .vault_scan(&[Kind::Account as u8])
            .map(|rows| !rows.is_empty())
            .map_err(obscura_server::store_error)
    }

    fn account(
        &self,
        store: &KeeperStore,
        user: &Handle,
    ) -> Result<Option<(u64, Account)>, ResponseBody> {
        self.vault
            .get(store, Kind::Account, user, &[])
            .map_err(vault_error)?
            .map(|(v, bytes)| {
                postcard::from_bytes::<Account>(&bytes)
                    .map(|a| (v, a))
                    .map_err(internal)
            })
            .transpose()
    }

    fn bootstrap_matches(&self, code: Option<&[u8; 32]>) -> bool {
        code.is_some_and(|c| bool::from(bootstrap_digest(c).ct_eq(&self.bootstrap)))
    }

    /// Who may register `user` (with an account already or not, `existing`): the first
    /// account with the bootstrap code, an admin any new name, a user its own name in a
    /// fresh session.
    fn may_register(
        &self,
        store: &KeeperStore,
        caller: Option<&Caller>,
        user: &Handle,
        existing: bool,
        bootstrap: Option<&[u8; 32]>,
    ) -> Result<(), ResponseBody> {
        match caller {
            Some(c) if c.user == *user && !c.fresh => Err(error(
                ErrorCode::Forbidden,
                format!(
                    "a password change needs a login in the last {} s: log in again",
                    self.policy.fresh_login_s
                ),
            )),
            Some(c) if c.user == *user => Ok(()),
            Some(c) if c.is(roles::ADMIN) && existing => Err(error(
                ErrorCode::AlreadyExists,
                format!(
                    "keeper {} already has this account: only its user changes its password",
                    self.keeper
                ),
            )),
            Some(c) if c.is(roles::ADMIN) => Ok(()),
            Some(_) => Err(error(
                ErrorCode::Forbidden,
                "only an admin registers accounts",
            )),
            None if self.any_account(store)? => Err(error(
                ErrorCode::NoSession,
                "this keeper has accounts: an admin registers new ones, logged in",
            )),
            None if self.bootstrap_matches(bootstrap) => Ok(()),
            None => Err(error(
                ErrorCode::Forbidden,
                "the first account needs the cluster's bootstrap code (DIR/bootstrap.code)",
            )),
        }
    }

    /// Registration, first step. Outside a session only for the first account, with the
    /// bootstrap code; in a session, an admin's for a new name, or a user's own for a new
    /// password, which counts as a login attempt.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn register(
        &self,
        store: &KeeperStore,
        caller: Option<&Caller>,
        source: IpAddr,
        user: &str,
        request: &[u8],
        bootstrap: Option<&[u8; 32]>,
        now: u64,
    ) -> Result<ResponseBody, ResponseBody> {
        let handle = self.vault.handle(user);
        let existing = self.account(store, &handle)?.is_some();
        self.may_register(store, caller, &handle, existing, bootstrap)?;
        if existing {
            // The answer evaluates the account's OPAQUE key on the caller's guess, as KE2 does.
            self.count_attempt(store, source, &handle, "registration started", now)?;
        }
        let response = self
            .opaque
            .registration_response(request, user.as_bytes())
            .map_err(|e| error(ErrorCode::BadRequest, e.to_string()))?;
        Ok(ResponseBody::KeeperRegistration { response })
    }

    /// Registration, last step: store the password file. The first account is the admin,
    /// with every role. A user registering its own name in a fresh session changes its
    /// password: the account keeps its roles, and the user's other sessions at this keeper end.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn register_finish(
        &self,
        store: &KeeperStore,
        caller: Option<&Caller>,
        user: &str,
        upload: &[u8],
        wanted: WireRoles,
        bootstrap: Option<&[u8; 32]>,
        now: u64,
    ) -> Result<ResponseBody, ResponseBody> {
        let _one = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        let handle = self.vault.handle(user);
        let existing = self.account(store, &handle)?;
        self.may_register(store, caller, &handle, existing.is_some(), bootstrap)?;
        let own = caller.filter(|c| c.user == handle);
        let (account_roles, created, what) = match (&existing, own) {
            (Some((_, a)), Some(_)) => (a.roles, a.created, "password"),
            (Some(_), None) => unreachable!("may_register refuses an existing name to others"),
            (None, _) if caller.is_none() => (roles::ALL, now, "register"),
            (None, _) => {
                if wanted == 0 || wanted & !roles::ALL != 0 {
                    return Err(error(
                        ErrorCode::BadRequest,
                        "an account needs one or more of the roles admin, owner, querier, \
                         auditor",
                    ));
                }
                (wanted, now, "register")
            }
        };
        let password_file = session::ServerKeys::password_file(upload)
            .map_err(|e| error(ErrorCode::BadRequest, e.to_string()))?;
        let account = Account {
            password_file,
            roles: account_roles,
            created,
        };
        let bytes = postcard::to_allocvec(&account).map_err(internal)?;
        let version = existing.as_ref().map_or(1, |(v, _)| v + 1);
        let event = self.event(what, None, true, now);
        let mut deletes = Vec::new();
        self.trim_events(store, &handle, &mut deletes)?;
        // A password change ends the user's other sessions, in the store too.
        if let Some(c) = own {
            let others = self
                .vault
                .ids(store, Kind::Session, &handle)
                .map_err(vault_error)?
                .into_iter()
                .filter(|id| id.as_slice() != c.session.as_slice());
            deletes.extend(others.map(|id| (Kind::Session, handle, id)));
        }
        self.vault
            .write(
                store,
                &[
                    (Kind::Account, handle, Vec::new(), &bytes, version),
                    (event.0, handle, event.1, &event.2, 1),
                ],
                &deletes,
                &handle,
                &format!(
                    "{what} user={} roles={}",
                    hex(&handle),
                    roles::names(account.roles).join("+")
                ),
                now,
            )
            .map_err(vault_error)?;
        if let Some(c) = own {
            let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            let ended: HashSet<[u8; 16]> = sessions
                .iter()
                .filter(|(id, s)| s.user == handle && **id != c.session)
                .map(|(id, _)| *id)
                .collect();
            sessions.retain(|id, _| !ended.contains(id));
            drop(sessions);
            self.forget(&ended);
        }
        Ok(ResponseBody::Ok)
    }

    fn attempts(&self, store: &KeeperStore, user: &Handle) -> Result<Attempts, ResponseBody> {
        Ok(
            match self
                .vault
                .get(store, Kind::Attempts, user, &[])
                .map_err(vault_error)?
            {
                Some((_, bytes)) => postcard::from_bytes(&bytes).map_err(internal)?,
                None => Attempts::default(),
            },
        )
    }

    fn put_attempts(
        &self,
        store: &KeeperStore,
        user: &Handle,
        a: &Attempts,
        detail: &str,
        now: u64,
    ) -> Result<(), ResponseBody> {
        let bytes = postcard::to_allocvec(a).map_err(internal)?;
        self.vault
            .write(
                store,
                &[(Kind::Attempts, *user, Vec::new(), &bytes, 1)],
                &[],
                user,
                detail,
                now,
            )
            .map_err(vault_error)
    }

    /// Check the limits of `user` and `source`, then count one attempt at both, durably:
    /// for a login's first step and for a registration's first step on an existing name.
    fn count_attempt(
        &self,
        store: &KeeperStore,
        source: IpAddr,
        user: &Handle,
        what: &str,
        now: u64,
    ) -> Result<(), ResponseBody> {
        let p = self.policy;
        {
            let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
            // An address's failures are forgotten after the longest delay without one, so a
            // busy shared address is not slowed for good; a guesser gets `source_free` guesses
            // per such period.
            sources.retain(|_, s| s.last.saturating_add(p.max_delay_s) > now);
            if let Some(s) = sources.get(&source) {
                let wait = s.wait(p.source_free, p.max_delay_s, now);
                if wait > 0 {
                    return Err(error(
                        ErrorCode::TooManyAttempts,
                        format!("too many failed logins from this address: wait {wait} s"),
                    ));
                }
            }
        }
        let _one = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        let mut attempts = self.attempts(store, user)?;
        if attempts.locked_until > now {
            return Err(locked(attempts.locked_until));
        }
        let wait = attempts.wait(p.free, p.max_delay_s, now);
        if wait > 0 {
            return Err(error(
                ErrorCode::TooManyAttempts,
                format!("too many failed logins: wait {wait} s"),
            ));
        }
        attempts.fail(&p, now);
        self.put_attempts(
            store,
            user,
            &attempts,
            &format!(
                "{what} user={} failures={} locked_until={}",
                hex(user),
                attempts.failures,
                attempts.locked_until
            ),
            now,
        )?;
        let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        let s = sources.entry(source).or_default();
        s.failures = s.failures.saturating_add(1);
        s.last = now;
        Ok(())
    }

    /// Login, first step: check the limits, count the attempt, answer KE2.
    pub(crate) fn login_start(
        &self,
        store: &KeeperStore,
        source: IpAddr,
        user: &str,
        ke1: &[u8],
        now: u64,
    ) -> Result<ResponseBody, ResponseBody> {
        let handle = self.vault.handle(user);
        // The same work for a known and an unknown name: one read, one durable count, one
        // OPAQUE answer (with a fake file for an unknown one).
        let (version, file) = match self.account(store, &handle)? {
            Some((version, account)) => (version, Some(account)),
            None => (0, None),
        };
        self.count_attempt(store, source, &handle, "login started", now)?;
        let account_roles = file.as_ref().map_or(0, |a| a.roles);
        let (login, ke2) = {
            let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
            self.opaque
                .login_response(
                    file.as_ref().map(|a| a.password_file.as_slice()),
                    ke1,
                    user.as_bytes(),
                    &login_context(self.keeper),
                    &mut *rng,
                )
                .map_err(|e| error(ErrorCode::BadRequest, e.to_string()))?
        };
        let id = self.random_id();
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.retain(|_, p| p.expires_at > now);
        if pending.len() >= MAX_PENDING {
            return Err(error(
                ErrorCode::TooManyAttempts,
                "too many logins under way",
            ));
        }
        pending.insert(
            id,
            Pending {
                login,
                user: handle,
                roles: account_roles,
                version,
                tag: user_tag(user),
                source,
                expires_at: now + PENDING_S,
            },
        );
        Ok(ResponseBody::KeeperLoginStarted { login: id, ke2 })
    }

    /// Login, last step: check KE3, clear the account's count, take this login's own failure
    /// back from its source's count, open a session.
    pub(crate) fn login_finish(
        &self,
        store: &KeeperStore,
        login: &[u8; 16],
        ke3: &[u8],
        now: u64,
    ) -> Result<ResponseBody, ResponseBody> {
        let pending = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(login)
            .filter(|p| p.expires_at > now)
            .ok_or_else(login_failed)?;
        let key = pending
            .login
            .finish(ke3, &login_context(self.keeper))
            .map_err(|_| login_failed())?;
        let id = self.random_id();
        let expires_at = now + self.session_ttl_s;
        let kept = KeptSession {
            key: key.to_vec(),
            tag: pending.tag,
            roles: pending.roles,
            opened_at: now,
            expires_at,
            serial: self
                .opened
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            floor: 0,
        };
        let opened = Session::from_kept(id, pending.user, &kept)
            .ok_or_else(|| internal("a session key of the wrong length"))?;
        // One login at a time, from its checks to its session recorded (with the account's count
        // cleared and the sessions it ends removed, in one write) before anyone can use it: a
        // password change cannot slip in between, and two of one user's logins cannot both slip
        // under its limit.
        let _one = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        // The password (or roles) changed since this login started: the password it proved may
        // be the one the change was made to shut out.
        if self.account(store, &pending.user)?.map_or(0, |(v, _)| v) != pending.version {
            return Err(login_failed());
        }
        let attempts = self.attempts(store, &pending.user)?;
        if attempts.locked_until > now {
            return Err(locked(attempts.locked_until));
        }
        let ended: Vec<([u8; 16], Handle)> = {
            let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            let mut ended: Vec<([u8; 16], Handle)> = sessions
                .iter()
                .filter(|(_, s)| s.expires_at <= now)
                .map(|(id, s)| (*id, s.user))
                .collect();
            // One user cannot fill the table: its oldest session ends when it opens one too
            // many.
            let mut own: Vec<([u8; 16], u64)> = sessions
                .iter()
                .filter(|(_, s)| s.user == pending.user && s.expires_at > now)
                .map(|(id, s)| (*id, s.serial))
                .collect();
            own.sort_unstable_by_key(|&(_, serial)| serial);
            ended.extend(
                own.iter()
                    .take((own.len() + 1).saturating_sub(SESSIONS_PER_USER))
                    .map(|(id, _)| (*id, pending.user)),
            );
            if sessions.len() - ended.len() >= MAX_SESSIONS {
                return Err(error(ErrorCode::Internal, "too many open sessions"));
            }
            ended
        };
        let cleared = postcard::to_allocvec(&Attempts::default()).map_err(internal)?;
        let record = zeroize::Zeroizing::new(postcard::to_allocvec(&kept).map_err(internal)?);
        let event = self.event("login", None, true, now);
        let mut deletes = Vec::new();
        self.trim_events(store, &pending.user, &mut deletes)?;
        deletes.extend(
            ended
                .iter()
                .map(|(id, user)| (Kind::Session, *user, id.to_vec())),
        );
        self.vault
            .write(
                store,
                &[
                    (Kind::Attempts, pending.user, Vec::new(), &cleared, 1),
                    (event.0, pending.user, event.1, &event.2, 1),
                    (Kind::Session, pending.user, id.to_vec(), &record, 1),
                ],
                &deletes,
                &pending.user,
                &format!("login user={}", hex(&pending.user)),
                now,
            )
            .map_err(vault_error)?;
        if let Some(s) = self
            .sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&pending.source)
        {
            s.failures = s.failures.saturating_sub(1);
        }
        let ended: HashSet<[u8; 16]> = ended.into_iter().map(|(id, _)| id).collect();
        {
            let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            sessions.retain(|id, _| !ended.contains(id));
            sessions.insert(id, std::sync::Arc::new(opened));
        }
        self.forget(&ended);
        Ok(ResponseBody::KeeperSession {
            session: id,
            expires_at,
        })
    }

    /// Open a sealed request, run it with `run` as its caller, seal the answer. A message that
    /// does not open (replayed, older than its lane's last, in a closed lane, altered,
    /// reflected, expired session) is refused in clear, without touching the session.
    pub(crate) fn sealed(
        &self,
        store: &KeeperStore,
        session: &[u8; 16],
        message: &[u8],
        now: u64,
        run: impl FnOnce(&Caller, Request) -> ResponseBody,
    ) -> ResponseBody {
        let Some(s) = self
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(session)
            .cloned()
        else {
            return error(ErrorCode::NoSession, "no such session: log in again");
        };
        let mut channel = s.channel.lock().unwrap_or_else(|e| e.into_inner());
        // A new lane past the session's allowance is refused before the channel takes it in,
        // so it closes none of the lanes open now.
        let new_lane = Channel::lane_of(message).is_some_and(|lane| {
            u64::from(lane) >= s.floor.load(std::sync::atomic::Ordering::Acquire)
        });
        if new_lane {
            if let Err(refused) = s.may_open_lane(now) {
                return refused;
            }
        }
        let plain = match channel.open(message, now) {
            Ok(p) => p,
            Err(session::SessionError::Expired) => {
                drop(channel);
                // An expired session's record is dropped at the next start if not here.
                let _ = self.end(store, session, now);
                return error(ErrorCode::NoSession, "the session expired: log in again");
            }
            Err(e) => return error(ErrorCode::NoSession, e.to_string()),
        };
        // A lane the store could not record is refused in clear: nothing is sealed under its
        // number, which a keeper restarted without the record would take again.
        if let Some(lane) = channel.answering_lane() {
            if let Err(refused) = self.record_lane(store, session, &s, lane, now) {
                return refused;
            }
        }
        let answer = match Request::decode(&plain) {
            Ok(req) => run(
                &Caller {
                    session: *session,
                    user: s.user,
                    tag: s.tag,
                    roles: s.roles,
                    opened_at: s.opened_at,
                    fresh: now <= s.opened_at.saturating_add(self.policy.fresh_login_s),
                },
                req,
            ),
            Err(e) => obscura_server::proto_error(e),
        };
        match channel.seal(&Response(answer).encode(), now) {
            Ok(message) => ResponseBody::KeeperSealed { message },
            Err(e) => error(ErrorCode::NoSession, e.to_string()),
        }
    }

    /// Record in the store that session `id` took a request in `lane`, before the request
    /// runs, if it is above every lane recorded so far: a keeper restarted later takes only
    /// lanes above it. A lane already recorded costs nothing.
    fn record_lane(
        &self,
        store: &KeeperStore,
        id: &[u8; 16],
        s: &Session,
        lane: u32,
        now: u64,
    ) -> Result<(), ResponseBody> {
        let floor = u64::from(lane) + 1;
        if floor <= s.floor.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(());
        }
        let _one = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        // A session ended meanwhile (a logout, a login past the user's limit) stays ended.
        if !self
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(id)
        {
            return Err(error(
                ErrorCode::NoSession,
                "the session ended: log in again",
            ));
        }
        let record =
            zeroize::Zeroizing::new(postcard::to_allocvec(&s.kept(floor)).map_err(internal)?);
        self.vault
            .write(
                store,
                &[(Kind::Session, s.user, id.to_vec(), &record, 1)],
                &[],
                &s.user,
                &format!("session lane={lane} user={}", hex(&s.user)),
                now,
            )
            .map_err(vault_error)?;
        s.floor.store(floor, std::sync::atomic::Ordering::Release);
        s.lane_opened(now);
        Ok(())
    }

    /// End a session, in the store first: a logout holds across a restart.
    ///
    /// # Errors
    /// When the store does not take the change (the session stays open then).
    pub(crate) fn end(
        &self,
        store: &KeeperStore,
        session: &[u8; 16],
        now: u64,
    ) -> Result<(), ResponseBody> {
        let _one = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        let user = self
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(session)
            .map(|s| s.user);
        if let Some(user) = user {
            self.vault
                .write(
                    store,
                    &[],
                    &[(Kind::Session, user, session.to_vec())],
                    &user,
                    &format!("logout user={}", hex(&user)),
                    now,
                )
                .map_err(vault_error)?;
        }
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(session);
        self.forget(&HashSet::from([*session]));
        Ok(())
    }

    /// Take back the sessions the store keeps, at a keeper's start: each one takes requests only
    /// in lanes above those it took before. Expired records, and any that no longer open, are
    /// removed. Returns how many sessions were reopened.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub(crate) fn reopen_sessions(
        &self,
        store: &KeeperStore,
        now: u64,
    ) -> Result<usize, obscura_store::Error> {
        let rows = store.vault_scan(&[Kind::Session as u8])?;
        let mut gone: Vec<(Kind, Handle, Vec<u8>)> = Vec::new();
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        for (key, _) in rows {
            let (Some(user), Some(id)) = (
                key.get(1..17).and_then(|b| Handle::try_from(b).ok()),
                key.get(17..).and_then(|b| <[u8; 16]>::try_from(b).ok()),
            ) else {
                continue;
            };
            let kept = match self.vault.get(store, Kind::Session, &user, &id) {
                Ok(Some((_, bytes))) => postcard::from_bytes::<KeptSession>(&bytes).ok(),
                _ => None,
            };
            let Some(session) = kept
                .filter(|k| k.expires_at > now)
                .and_then(|k| Session::from_kept(id, user, &k))
            else {
                gone.push((Kind::Session, user, id.to_vec()));
                continue;
            };
            self.opened
                .fetch_max(session.serial + 1, std::sync::atomic::Ordering::Relaxed);
            sessions.insert(id, std::sync::Arc::new(session));
        }
        let reopened = sessions.len();
        drop(sessions);
        if !gone.is_empty() {
            let detail = format!("sessions ended while stopped: {}", gone.len());
            // Left for the next start if the store does not take it now: none is reopened.
            let _ = self.vault.write(store, &[], &gone, &[0; 16], &detail, now);
        }
        Ok(reopened)
    }

    /// Drop the signing nonces of sessions that have ended, however they ended.
    fn forget(&self, ended: &HashSet<[u8; 16]>) {
        if ended.is_empty() {
            return;
        }
        self.nonces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(s, _), _| !ended.contains(s));
        self.capability_nonces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|s, _| !ended.contains(s));
    }

    /// An admin lifts `user`'s lockout and clears its failures.
    pub(crate) fn unlock(
        &self,
        store: &KeeperStore,
        caller: &Caller,
        user: &str,
        now: u64,
    ) -> Result<ResponseBody, ResponseBody> {
        if !caller.is(roles::ADMIN) {
            return Err(error(
                ErrorCode::Forbidden,
                "only an admin unlocks accounts",
            ));
        }
        let _one = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        let handle = self.vault.handle(user);
        self.put_attempts(
            store,
            &handle,
            &Attempts::default(),
            &format!("unlock user={} by={}", hex(&handle), hex(&caller.user)),
            now,
        )?;
        Ok(ResponseBody::Ok)
    }

    /// The randomness, held for one use.
    fn rng(&self) -> std::sync::MutexGuard<'_, Randomness> {
        self.rng.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What this keeper signs for `caller` now.
    fn offer(&self, caller: &Caller, now: u64) -> Offer {
        let p = self.capabilities;
        Offer {
            roles: caller.roles,
            limits: Limits {
                queries_per_hour: p.queries_per_hour,
                fetches_per_hour: p.fetches_per_hour,
            },
            expires_at: now
                .saturating_add(p.ttl_s)
                .min(caller.opened_at.saturating_add(self.session_ttl_s)),
        }
    }

    /// Capability signing, round 1: a commitment under the capability key and the offer.
    fn capability_commit(&self, caller: &Caller, now: u64) -> Result<ResponseBody, ResponseBody> {
        if caller.roles == 0 {
            return Err(error(ErrorCode::Forbidden, "the account holds no role"));
        }
        let (nonces, commitment) = signing::commit(&self.capability_key.0, &mut *self.rng())
            .map_err(|e| internal(e.to_string()))?;
        self.capability_nonces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(caller.session, nonces);
        let offer = self.offer(caller, now);
        Ok(ResponseBody::CapabilityOffer {
            keeper: self.keeper,
            commitment,
            roles: offer.roles,
            limits: offer.limits,
            expires_at: offer.expires_at,
            public_package: signing::public_package_bytes(&self.capability_key.1)
                .map_err(|e| internal(e.to_string()))?,
        })
    }

    /// Capability signing, round 2: check that the package's message is a capability this
    /// keeper offers the caller, then sign with the nonces of its commitment (used once).
    fn capability_share(
        &self,
        store: &KeeperStore,
        caller: &Caller,
        package: &[u8],
        now: u64,
    ) -> Result<ResponseBody, ResponseBody> {
        let refuse = |e: obscura_auth::Error| error(ErrorCode::Forbidden, e.to_string());
        let message = signing::package_message(package)
            .map_err(|e| error(ErrorCode::BadRequest, e.to_string()))?;
        let cap = capability::parse_signing_message(&message).map_err(refuse)?;
        if self.vault.handle(&cap.user) != caller.user {
            return Err(refuse(obscura_auth::Error::Refused(
                "it names another user",
            )));
        }
        capability::check_for_signing(&cap, &cap.user, &self.offer(caller, now), now, self.window)
            .map_err(refuse)?;
        let nonces = self
            .capability_nonces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&caller.session)
            .ok_or_else(|| {
                error(
                    ErrorCode::BadRequest,
                    "no capability commitment: commit first",
                )
            })?;
        let share = signing::sign_share(&self.capability_key.0, nonces, package)
            .map_err(|e| error(ErrorCode::BadRequest, e.to_string()))?;
        self.record(store, caller, "capability", None, now)?;
        Ok(ResponseBody::SignatureShare {
            keeper: self.keeper,
            share,
        })
    }

    /// An event record: (kind, id, contents).
    fn event(
        &self,
        action: &str,
        secret: Option<[u8; 16]>,
        ok: bool,
        now: u64,
    ) -> (Kind, Vec<u8>, Vec<u8>) {
        let mut id = now.to_be_bytes().to_vec();
        id.extend_from_slice(&self.random_id()[..8]);
        let e = UserEvent {
            time: now,
            action: action.into(),
            secret,
            ok,
        };
        (
            Kind::Event,
            id,
            postcard::to_allocvec(&e).expect("an event encodes"),
        )
    }

    /// The oldest events of `user` to delete so that one more keeps the trail within its quota.
    fn trim_events(
        &self,
        store: &KeeperStore,
        user: &Handle,
        deletes: &mut Vec<(Kind, Handle, Vec<u8>)>,
    ) -> Result<(), ResponseBody> {
        let ids = self
            .vault
            .ids(store, Kind::Event, user)
            .map_err(vault_error)?;
        let keep = self.quotas.max_events.max(1) as usize - 1;
        let over = ids.len().saturating_sub(keep);
        deletes.extend(
            ids.into_iter()
                .take(over)
                .map(|id| (Kind::Event, *user, id)),
        );
        Ok(())
    }

    fn secret(
        &self,
        store: &KeeperStore,
        user: &Handle,
        id: &[u8; 16],
    ) -> Result<StoredSecret, ResponseBody> {
        match self
            .vault
            .get(store, Kind::Secret, user, id)
            .map_err(vault_error)?
        {
            Some((_, bytes)) => StoredSecret::decode(&bytes).map_err(internal),
            None => Err(error(
                ErrorCode::UnknownKey,
                format!(
                    "keeper {} holds no secret {} of this user",
                    self.keeper,
                    hex(id)
                ),
            )),
        }
    }

    fn store_secret(
        &self,
        store: &KeeperStore,
        caller: &Caller,
        id: &[u8; 16],
        secret: &StoredSecret,
        action: &str,
        now: u64,
    ) -> Result<(), ResponseBody> {
        let _one = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        if self
            .vault
            .get(store, Kind::Secret, &caller.user, id)
            .map_err(vault_error)?
            .is_some()
        {
            return Err(error(
                ErrorCode::AlreadyExists,
                format!("a secret {} exists already", hex(id)),
            ));
        }
        let held = self
            .vault
            .ids(store, Kind::Secret, &caller.user)
            .map_err(vault_error)?
            .len();
        if held >= self.quotas.max_secrets as usize {
            return Err(error(
                ErrorCode::Forbidden,
                format!(
                    "keeper {} keeps at most {} secrets per user: delete one first",
                    self.keeper, self.quotas.max_secrets
                ),
            ));
        }
        let bytes = zeroize::Zeroizing::new(postcard::to_allocvec(secret).map_err(internal)?);
        let event = self.event(action, Some(*id), true, now);
        let mut deletes = Vec::new();
        self.trim_events(store, &caller.user, &mut deletes)?;
        self.vault
            .write(
                store,
                &[
                    (Kind::Secret, caller.user, id.to_vec(), &bytes, 1),
                    (event.0, caller.user, event.1, &event.2, 1),
                ],
                &deletes,
                id,
                &format!("{action} user={} secret={}", hex(&caller.user), hex(id)),
                now,
            )
            .map_err(vault_error)
    }

    fn record(
        &self,
        store: &KeeperStore,
        caller: &Caller,
        action: &str,
        secret: Option<[u8; 16]>,
        now: u64,
    ) -> Result<(), ResponseBody> {
        self.record_as(store, caller, action, secret, true, now)
    }

    /// [`Accounts::record`], for an event that succeeded (`ok`) or was refused.
    fn record_as(
        &self,
        store: &KeeperStore,
        caller: &Caller,
        action: &str,
        secret: Option<[u8; 16]>,
        ok: bool,
        now: u64,
    ) -> Result<(), ResponseBody> {
        let _one = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        let event = self.event(action, secret, ok, now);
        let mut deletes = Vec::new();
        self.trim_events(store, &caller.user, &mut deletes)?;
        self.vault
            .write(
                store,
                &[(event.0, caller.user, event.1, &event.2, 1)],
                &deletes,
                &secret.unwrap_or_default(),
                &format!("{action} user={}", hex(&caller.user)),
                now,
            )
            .map_err(vault_error)
    }

    /// Release this keeper's share of `id` to the worker whose evidence binds `party_key`
    /// and the challenge this keeper gave for it, if the secret's release policy accepts the
    /// worker: the share sealed to that key. Releases and refusals are recorded.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn release(
        &self,
        store: &KeeperStore,
        caller: &Caller,
        id: &[u8; 16],
        nonce: &[u8; 32],
        party_key: &[u8; 32],
        evidence: &[u8],
        signer: &ed25519_dalek::SigningKey,
        now: u64,
    ) -> Result<ResponseBody, ResponseBody> {
        let given = self
            .releases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(caller.session, *id));
        match given {
            Some((user, n, expires))
                if user == caller.user && bool::from(n.ct_eq(nonce)) && expires > now => {}
            _ => {
                return Err(error(
                    ErrorCode::Rejected,
                    "no such release challenge (expired, used, or for another secret): start again",
                ))
            }
        }
        let secret = self.secret(store, &caller.user, id)?;
        let Some(policy) = secret.release.as_deref() else {
            return Err(error(
                ErrorCode::Forbidden,
                "this secret has no release policy",
            ));
        };
        let policy = self.vet_policy(policy, "release policy")?;
        let appraised = obscura_attest::Evidence::from_json(evidence).and_then(|evidence| {
            self.verifier.appraise_party(
                &evidence,
                &policy,
                &obscura_attest::Role::Worker,
                party_key,
                &obscura_attest::binding::release_context(self.keeper, id),
                nonce,
                now,
            )
        });
        let appraisal = match appraised {
            Ok(a) => a,
            Err(refusal) => {
                self.record_as(
                    store,
                    caller,
                    &bounded(&format!("secret release refused: {refusal}")),
                    Some(*id),
                    false,
                    now,
                )?;
                return Err(error(
                    ErrorCode::Forbidden,
                    format!("keeper {} refuses the worker: {refusal}", self.keeper),
                ));
            }
        };
        let sealed = obscura_attest::seal::seal(
            &appraisal,
            &obscura_attest::binding::release_purpose(self.keeper, id),
            &secret.share,
            &mut *self.rng.lock().unwrap_or_else(|e| e.into_inner()),
        )
        .map_err(|e| error(ErrorCode::BadRequest, e.to_string()))?;
        self.record(
            store,
            caller,
            &format!(
                "secret release to worker {} measurement {}",
                appraisal.platform(),
                hex(&appraisal.measurement()[..appraisal.measurement().len().min(8)])
            ),
            Some(*id),
            now,
        )?;
        let statement = obscura_attest::binding::release_statement(
            self.keeper,
            id,
            nonce,
            party_key,
            &sealed.enc,
            &sealed.ciphertext,
        );
        Ok(ResponseBody::Released {
            keeper: self.keeper,
            signature: ed25519_dalek::Signer::sign(signer, &statement)
                .to_bytes()
                .to_vec(),
            enc: sealed.enc,
            ciphertext: sealed.ciphertext,
        })
    }

    /// A policy this keeper appraises under (a secret's release policy, a recovery's): JSON
    /// that parses as an attestation policy and stays within what this keeper allows any
    /// policy: no debug, and simulation only in a cluster that attests with it, under its own
    /// simulation root (a user's own root would let the user make evidence for any worker it
    /// likes, itself included). `what` names it in errors.
    pub(crate) fn vet_policy(
        &self,
        bytes: &[u8],
        what: &str,
    ) -> Result<obscura_attest::Policy, ResponseBody> {
        obscura_attest::Policy::vet(bytes, self.simulation_root.as_ref())
            .map_err(|why| error(ErrorCode::BadRequest, format!("{what}: {why}")))
    }

    /// The user-secret and signing operations of a session.
    pub(crate) fn user_op(
        &self,
        store: &KeeperStore,
        caller: &Caller,
        body: &KeeperBody,
        now: u64,
    ) -> Result<ResponseBody, ResponseBody> {
        match body {
            KeeperBody::SecretPut {
                id,
                name,
                origin,
                share,
            } => {
                let action = match origin.as_str() {
                    "generate" => "secret generate",
                    "import" => "secret import",
                    _ => return Err(error(ErrorCode::BadRequest, "origin: generate or import")),
                };
                let secret = StoredSecret {
                    name: name.clone(),
                    signing: false,
                    created: now,
                    share: share.clone(),
                    public_package: Vec::new(),
                    release: None,
                };
                self.store_secret(store, caller, id, &secret, action, now)?;
                Ok(ResponseBody::Ok)
            }
            KeeperBody::SecretPutReleased {
                id,
                name,
                origin,
                share,
                policy,
            } => {
                let action = match origin.as_str() {
                    "generate" => "secret generate (released to attested workers only)",
                    "import" => "secret import (released to attested workers only)",
                    _ => return Err(error(ErrorCode::BadRequest, "origin: generate or import")),
                };
                self.vet_policy(policy, "release policy")?;
                let secret = StoredSecret {
                    name: name.clone(),
                    signing: false,
                    created: now,
                    share: share.clone(),
                    public_package: Vec::new(),
                    release: Some(policy.clone()),
                };
                self.store_secret(store, caller, id, &secret, action, now)?;
                Ok(ResponseBody::Ok)
            }
            KeeperBody::ReleaseStart { id } => {
                let secret = self.secret(store, &caller.user, id)?;
                if secret.release.is_none() {
                    return Err(error(
                        ErrorCode::Forbidden,
                        "this secret has no release policy: it is rebuilt by its user (secret get)",
                    ));
                }
                let mut nonce = [0u8; 32];
                self.rng
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .fill_bytes(&mut nonce);
                let mut open = self.releases.lock().unwrap_or_else(|e| e.into_inner());
                open.retain(|_, (_, _, expires)| *expires > now);
                let mine = open.values().filter(|(u, _, _)| *u == caller.user).count();
                if open.len() >= MAX_RELEASE_CHALLENGES || mine >= MAX_RELEASE_CHALLENGES_PER_USER {
                    return Err(error(
                        ErrorCode::RateLimited,
                        "too many releases under way; try again in a minute",
                    ));
                }
                open.insert(
                    (caller.session, *id),
                    (caller.user, nonce, now + RELEASE_CHALLENGE_S),
                );
                Ok(ResponseBody::ReleaseChallenge { nonce })
            }
            KeeperBody::ReleaseFinish { .. } => Err(error(
                ErrorCode::Internal,
                "a release is finished by the keeper itself (it signs it)",
            )),
            KeeperBody::SecretGet { id, export } => {
                let secret = self.secret(store, &caller.user, id)?;
                if secret.signing {
                    return Err(error(
                        ErrorCode::Forbidden,
                        "a signing key is never rebuilt; use it to sign",
                    ));
                }
                if secret.release.is_some() {
                    self.record_as(
                        store,
                        caller,
                        "secret get refused: release policy",
                        Some(*id),
                        false,
                        now,
                    )?;
                    return Err(error(
                        ErrorCode::Forbidden,
                        "this secret is released only to attested workers that its release \
                         policy allows (obscura secret release), never to its user",
                    ));
                }
                let action = if *export {
                    "secret export"
                } else {
                    "secret get"
                };
                self.record(store, caller, action, Some(*id), now)?;
                Ok(ResponseBody::Secret {
                    keeper: self.keeper,
                    name: secret.name.clone(),
                    share: secret.share.clone(),
                })
            }
            KeeperBody::SecretDelete { id } => {
                self.secret(store, &caller.user, id)?;
                let _one = self.writing.lock().unwrap_or_else(|e| e.into_inner());
                let event = self.event("secret delete", Some(*id), true, now);
                self.vault
                    .write(
                        store,
                        &[(event.0, caller.user, event.1, &event.2, 1)],
                        &[(Kind::Secret, caller.user, id.to_vec())],
                        id,
                        &format!(
                            "secret delete user={} secret={}",
                            hex(&caller.user),
                            hex(id)
                        ),
                        now,
                    )
                    .map_err(vault_error)?;
                Ok(ResponseBody::Ok)
            }
            KeeperBody::SecretList => {
                let mut items = Vec::new();
                for (id, bytes) in self
                    .vault
                    .list(store, Kind::Secret, &caller.user)
                    .map_err(vault_error)?
                {
                    let s = StoredSecret::decode(&bytes).map_err(internal)?;
                    items.push(SecretInfo {
                        id: id.as_slice().try_into().map_err(internal)?,
                        name: s.name.clone(),
                        kind: if s.signing {
                            SecretKind::Signing
                        } else {
                            SecretKind::Data
                        },
                        created: s.created,
                    });
                }
                items.sort_by_key(|i| (i.created, i.id));
                Ok(ResponseBody::Secrets { items })
            }
            KeeperBody::UserEvents => {
                let events = self
                    .vault
                    .list(store, Kind::Event, &caller.user)
                    .map_err(vault_error)?
                    .iter()
                    .map(|(_, bytes)| postcard::from_bytes::<UserEvent>(bytes))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(internal)?;
                Ok(ResponseBody::Events { events })
            }
            KeeperBody::DkgStart { id, .. }
            | KeeperBody::DkgRound2 { id, .. }
            | KeeperBody::DkgFinish { id, .. } => self.dkg(store, caller, id, body, now),
            KeeperBody::CapabilityCommit => self.capability_commit(caller, now),
            KeeperBody::CapabilityShare { package } => {
                self.capability_share(store, caller, package, now)
            }
            KeeperBody::SignCommit { id } => {
                let secret = self.signing_key(store, &caller.user, id)?;
                let key = signing::key_package_from(&secret.share)
                    .map_err(|e| internal(e.to_string()))?;
                let (nonces, commitment) =
                    signing::commit(&key, &mut *self.rng()).map_err(|e| internal(e.to_string()))?;
                self.nonces
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert((caller.session, *id), nonces);
                Ok(ResponseBody::SignCommitment {
                    keeper: self.keeper,
                    commitment,
                    public_package: secret.public_package.clone(),
                })
            }
            KeeperBody::SignShare { id, package } => {
                let secret = self.signing_key(store, &caller.user, id)?;
                let nonces = self
                    .nonces
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&(caller.session, *id))
                    .ok_or_else(|| {
                        error(
                            ErrorCode::BadRequest,
                            "no commitment for this key: commit first",
                        )
                    })?;
                let key = signing::key_package_from(&secret.share)
                    .map_err(|e| internal(e.to_string()))?;
                let share = signing::sign_share(&key, nonces, package)
                    .map_err(|e| error(ErrorCode::BadRequest, e.to_string()))?;
                self.record(store, caller, "sign", Some(*id), now)?;
                Ok(ResponseBody::SignatureShare {
                    keeper: self.keeper,
                    share,
                })
            }
            _ => Err(error(ErrorCode::BadRequest, "not a user operation")),
        }
    }

    fn signing_key(
        &self,
        store: &KeeperStore,
        user: &Handle,
        id: &[u8; 16],
    ) -> Result<StoredSecret, ResponseBody> {
        let s = self.secret(store, user, id)?;
        if !s.signing {
            return Err(error(
                ErrorCode::BadRequest,
                "that secret is not a signing key",
            ));
        }
        Ok(s)
    }

    fn dkg(
        &self,
        store: &KeeperStore,
        caller: &Caller,
        id: &[u8; 16],
        body: &KeeperBody,
        now: u64,
    ) -> Result<ResponseBody, ResponseBody> {
        let peers = self.peers.as_ref().ok_or_else(|| {
            error(
                ErrorCode::BadRequest,
                "this keeper has no peer keys (a cluster made before signing keys existed)",
            )
        })?;
        let frost = |e: signing::SigningError| error(ErrorCode::BadRequest, e.to_string());
        let ctx = [caller.tag.as_slice(), id].concat();
        let pairs = |p: &[KeeperPackage]| -> Vec<(u8, Vec<u8>)> {
            p.iter().map(|p| (p.keeper, p.bytes.clone())).collect()
        };
        let mut states = self.dkg.lock().unwrap_or_else(|e| e.into_inner());
        states.retain(|_, (_, at, _)| *at + DKG_S > now);
        let slot = (caller.user, *id);
        match body {
            KeeperBody::DkgStart { name, .. } => {
                let own = states.keys().filter(|(u, _)| *u == caller.user).count();
                if !states.contains_key(&slot)
                    && (own >= DKG_PER_USER || states.len() >= DKG_IN_ALL)
                {
                    return Err(error(
                        ErrorCode::TooManyAttempts,
                        format!(
                            "keeper {} has {own} key generations of this user under way (at \
                             most {DKG_PER_USER}) or too many in all: finish one, or wait {DKG_S} s",
                            self.keeper
                        ),
                    ));
                }
                if self
                    .vault
                    .get(store, Kind::Secret, &caller.user, id)
                    .map_err(vault_error)?
                    .is_some()
                {
                    return Err(error(ErrorCode::AlreadyExists, "that key id is taken"));
                }
                let (state, package) =
                    signing::dkg_start(self.keeper, self.m, self.threshold, &mut *self.rng())
                        .map_err(frost)?;
                states.insert(slot, (state, now, name.clone()));
                Ok(ResponseBody::DkgPackages {
                    keeper: self.keeper,
                    packages: vec![KeeperPackage {
                        keeper: self.keeper,
                        bytes: package,
                    }],
                })
            }
            KeeperBody::DkgRound2 { round1, .. } => {
                let (state, _, name) = states
                    .remove(&slot)
                    .ok_or_else(|| error(ErrorCode::BadRequest, "no key generation under way"))?;
                let (state, out) =
                    signing::dkg_round2(state, peers, &ctx, &pairs(round1), &mut *self.rng())
                        .map_err(frost)?;
                states.insert(slot, (state, now, name));
                Ok(ResponseBody::DkgPackages {
                    keeper: self.keeper,
                    packages: out
                        .into_iter()
                        .map(|(keeper, bytes)| KeeperPackage { keeper, bytes })
                        .collect(),
                })
            }
            KeeperBody::DkgFinish { round1, round2, .. } => {
                let (state, _, name) = states
                    .remove(&slot)
                    .ok_or_else(|| error(ErrorCode::BadRequest, "no key generation under way"))?;
                drop(states);
                let (key, public) =
                    signing::dkg_finish(&state, peers, &ctx, &pairs(round1), &pairs(round2))
                        .map_err(frost)?;
                let public_package =
                    signing::public_package_bytes(&public).map_err(|e| internal(e.to_string()))?;
                let secret = StoredSecret {
                    name,
                    signing: true,
                    created: now,
                    share: signing::key_package_bytes(&key)
                        .map_err(|e| internal(e.to_string()))?
                        .to_vec(),
                    public_package: public_package.clone(),
                    release: None,
                };
                self.store_secret(store, caller, id, &secret, "signing key generate", now)?;
                Ok(ResponseBody::DkgDone {
                    keeper: self.keeper,
                    public_key: signing::public_key(&public),
                    public_package,
                })
            }
            _ => unreachable!("only key generation steps come here"),
        }
    }
}

/// Hazard tests of the account service alone: no TLS, no sockets, no sleeping. The clock is the
/// `now` each call takes and the randomness a seeded generator, so every step is exact.
#[cfg(test)]
mod tests {
    use super::*;
    use obscura_keeper::session::{ClientLogin, ClientRegistration};
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    const CODE: [u8; 32] = [7; 32];

    struct Service {
        _dir: TempDir,
        store: KeeperStore,
        accounts: Accounts,
        rng: ChaCha20Rng,
    }

    struct TempDir(std::path::PathBuf);

    impl Drop for TempDir {
        fn drop(&mut self) {
            std::fs::remove_dir_all(&self.0).ok();
        }
    }

    fn service(name: &str, policy: LoginPolicy) -> Service {
        let dir =
            std::env::temp_dir().join(format!("obscura-accounts-{name}-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        std::fs::create_dir_all(&dir).unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let store = KeeperStore::open(&dir.join("store.redb"), 1).unwrap();
        let vault = Vault::open_with_rng(
            &store,
            &dir.join("keyring.sealed"),
            1,
            obscura_tokens::keyfile::WrappingKey::random(&mut rng),
            Box::new(ChaCha20Rng::seed_from_u64(2)),
        )
        .unwrap();
        let (keys, public) = signing::deal(3, 2, &mut rng).unwrap();
        let accounts = Accounts::new(
            Setup {
                keeper: 1,
                m: 3,
                threshold: 2,
                policy,
                session_ttl_s: 3600,
                capabilities: CapabilityPolicy::default(),
                quotas: Quotas::default(),
                bootstrap: bootstrap_digest(&CODE),
                window: 120,
                simulation_root: None,
            },
            ServerKeys::random(&mut rng),
            vault,
            None,
            (signing::key_package_from(&keys[0]).unwrap(), public),
            Box::new(ChaCha20Rng::seed_from_u64(3)),
        );
        Service {
            _dir: TempDir(dir),
            store,
            accounts,
            rng,
        }
    }

    fn addr(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    fn code_of(r: &Result<ResponseBody, ResponseBody>) -> Option<ErrorCode> {
        match r {
            Ok(ResponseBody::Error { code, .. }) | Err(ResponseBody::Error { code, .. }) => {
                Some(*code)
            }
            _ => None,
        }
    }

    fn message_of(r: &Result<ResponseBody, ResponseBody>) -> String {
        match r {
            Err(ResponseBody::Error { message, .. }) => message.clone(),
            other => format!("{other:?}"),
        }
    }

    impl Service {
        /// A login of `user` started from `source` at `now` (a counted attempt).
        fn start(
            &mut self,
            user: &str,
            source: IpAddr,
            now: u64,
        ) -> Result<ResponseBody, ResponseBody> {
            let (_, ke1) = ClientLogin::start(b"a guess", &mut self.rng).unwrap();
            self.accounts
                .login_start(&self.store, source, user, &ke1, now)
        }

        /// Register `user` with `password`, as `caller` (the first account: none, with the
        /// bootstrap code).
        fn register(
            &mut self,
            caller: Option<&Caller>,
            user: &str,
            password: &[u8],
            now: u64,
        ) -> Result<ResponseBody, ResponseBody> {
            let code = caller.is_none().then_some(CODE);
            let (reg, request) = ClientRegistration::start(password, &mut self.rng).unwrap();
            let response = match self.accounts.register(
                &self.store,
                caller,
                addr(200),
                user,
                &request,
                code.as_ref(),
                now,
            )? {
                ResponseBody::KeeperRegistration { response } => response,
                other => return Err(other),
            };
            let upload = reg.finish(password, &response, &mut self.rng).unwrap();
            self.accounts.register_finish(
                &self.store,
                caller,
                user,
                &upload,
                roles::QUERIER,
                code.as_ref(),
                now,
            )
        }

        /// A whole login of `user` from `source` at `now`.
        fn login(
            &mut self,
            user: &str,
            password: &[u8],
            source: IpAddr,
            now: u64,
        ) -> Result<ResponseBody, ResponseBody> {
            let (login, ke1) = ClientLogin::start(password, &mut self.rng).unwrap();
            let (id, ke2) = match self
                .accounts
                .login_start(&self.store, source, user, &ke1, now)?
            {
                ResponseBody::KeeperLoginStarted { login, ke2 } => (login, ke2),
                other => return Err(other),
            };
            let (ke3, _) = login
                .finish(password, &ke2, &login_context(1), &mut self.rng)
                .map_err(|_| login_failed())?;
            self.accounts.login_finish(&self.store, &id, &ke3, now)
        }

        fn caller(&self, user: &str, roles: WireRoles, opened_at: u64, now: u64) -> Caller {
            Caller {
                session: [0; 16],
                user: self.accounts.vault.handle(user),
                tag: user_tag(user),
                roles,
                opened_at,
                fresh: now <= opened_at + self.accounts.policy.fresh_login_s,
            }
        }
    }

    #[test]
    fn lockouts_expire_by_themselves_and_last_longer_each_time() {
        let policy = LoginPolicy {
            free: 1,
            lock_after: 3,
            source_free: 1000,
            max_delay_s: 60,
            fresh_login_s: 300,
            lock_s: 10,
            max_lock_s: 25,
        };
        let mut s = service("lockout", policy);
        let ok = |r: &Result<ResponseBody, ResponseBody>| {
            matches!(r, Ok(ResponseBody::KeeperLoginStarted { .. }))
        };
        // Three counted attempts (with the doubling wait between) lock the name for 10 s.
        assert!(ok(&s.start("nobody", addr(1), 1000)));
        assert!(message_of(&s.start("nobody", addr(2), 1000)).contains("wait 1 s"));
        assert!(ok(&s.start("nobody", addr(3), 1001)));
        assert!(ok(&s.start("nobody", addr(4), 1003)));
        let locked = s.start("nobody", addr(5), 1012);
        assert_eq!(code_of(&locked), Some(ErrorCode::TooManyAttempts));
        assert!(message_of(&locked).contains("locked until Unix time 1013"));
        // It expires without anyone's help; the next lock lasts twice as long.
        assert!(ok(&s.start("nobody", addr(6), 1013)));
        assert!(ok(&s.start("nobody", addr(7), 1014)));
        assert!(ok(&s.start("nobody", addr(8), 1016)));
        assert!(message_of(&s.start("nobody", addr(9), 1035)).contains("until Unix time 1036"));
        assert!(ok(&s.start("nobody", addr(10), 1036)));
        assert!(ok(&s.start("nobody", addr(11), 1037)));
        assert!(ok(&s.start("nobody", addr(12), 1039)));
        // The third would last 40 s; the policy caps it at 25.
        assert!(message_of(&s.start("nobody", addr(13), 1040)).contains("until Unix time 1064"));
        assert!(ok(&s.start("nobody", addr(14), 1064)));
    }

    #[test]
    fn a_successful_login_takes_back_only_its_own_failure_at_its_address() {
        let policy = LoginPolicy {
            free: 100,
            lock_after: 1000,
            source_free: 3,
            max_delay_s: 600,
            fresh_login_s: 300,
            lock_s: 900,
            max_lock_s: 3600,
        };
        let mut s = service("spray", policy);
        s.register(None, "eve", b"eve's password", 1000).unwrap();
        let eve = addr(66);
        // Eve guesses at bob twice, then logs in as herself, then guesses again.
        assert!(s.start("bob", eve, 1000).is_ok());
        assert!(s.start("bob", eve, 1000).is_ok());
        assert!(matches!(
            s.login("eve", b"eve's password", eve, 1000),
            Ok(ResponseBody::KeeperSession { .. })
        ));
        assert!(s.start("carol", eve, 1000).is_ok());
        // Her own login did not clear her address: three failures, and the fourth waits.
        let refused = s.start("dave", eve, 1000);
        assert!(
            message_of(&refused).contains("from this address"),
            "{refused:?}"
        );
        // The address's count is forgotten only after the longest delay without a failure.
        assert!(s.start("dave", eve, 1000 + 600).is_ok());
    }

    #[test]
    fn the_signing_nonces_of_an_expired_session_are_forgotten() {
        let mut s = service("nonces", LoginPolicy::default());
        s.register(None, "bob", b"pw", 1_000).unwrap();
        let session = match s.login("bob", b"pw", addr(1), 1_000).unwrap() {
            ResponseBody::KeeperSession { session, .. } => session,
            other => panic!("{other:?}"),
        };
        let mut caller = s.caller("bob", roles::QUERIER, 1_000, 1_000);
        caller.session = session;
        s.accounts.capability_commit(&caller, 1_000).unwrap();
        let held = |s: &Service| {
            s.accounts
                .capability_nonces
                .lock()
                .unwrap()
                .contains_key(&session)
        };
        assert!(held(&s));
        // The session expires unused; the next login anywhere sweeps it, nonces and all.
        s.login("bob", b"pw", addr(1), 1_000 + 3_601).unwrap();
        assert!(!held(&s));
    }

    #[test]
    fn registering_a_taken_name_is_refused_to_the_admin_and_counted_for_its_own_user() {
        let policy = LoginPolicy {
            free: 1,
            ..LoginPolicy::default()
        };
        let mut s = service("reregister", policy);
        // The first account needs the bootstrap code: none, or a wrong one, is refused.
        let (_, request) = ClientRegistration::start(b"pw", &mut s.rng).unwrap();
        for code in [None, Some([8; 32])] {
            let r = s.accounts.register(
                &s.store,
                None,
                addr(1),
                "root",
                &request,
                code.as_ref(),
                1000,
            );
            assert_eq!(code_of(&r), Some(ErrorCode::Forbidden), "{r:?}");
        }
        s.register(None, "root", b"root's password", 1000).unwrap();
        // Outside a session, no second account, code or not.
        assert_eq!(
            code_of(&s.register(None, "mallory", b"pw", 1000)),
            Some(ErrorCode::NoSession)
        );
        let admin = s.caller("root", roles::ALL, 1000, 1000);
        s.register(Some(&admin), "bob", b"bob's password", 1000)
            .unwrap();
        // The admin cannot register bob again: its first step would evaluate bob's OPAQUE key
        // on the admin's guess, an unlimited and unaudited password oracle.
        let (_, guess) = ClientRegistration::start(b"bob's password?", &mut s.rng).unwrap();
        let r = s
            .accounts
            .register(&s.store, Some(&admin), addr(1), "bob", &guess, None, 1000);
        assert_eq!(code_of(&r), Some(ErrorCode::AlreadyExists), "{r:?}");
        // Bob's own fresh session may, and each first step counts as a login attempt.
        let bob = s.caller("bob", roles::QUERIER, 1000, 1000);
        let first = s
            .accounts
            .register(&s.store, Some(&bob), addr(2), "bob", &guess, None, 1000);
        assert!(matches!(first, Ok(ResponseBody::KeeperRegistration { .. })));
        let second = s
            .accounts
            .register(&s.store, Some(&bob), addr(3), "bob", &guess, None, 1000);
        assert!(message_of(&second).contains("wait 1 s"), "{second:?}");
        // A stale session may not change the password at all.
        let stale = s.caller("bob", roles::QUERIER, 1000, 2000);
        let r = s
            .accounts
            .register(&s.store, Some(&stale), addr(4), "bob", &guess, None, 2000);
        assert_eq!(code_of(&r), Some(ErrorCode::Forbidden));
    }
}
