//! A keeper's users: OPAQUE registration and login, sessions, login limits, user secrets, the
//! user's audit trail, and threshold signing keys.
//!
//! Outside a session a keeper answers only its status and audit log, logins, and the very first
//! registration (which makes that account the keeper's admin). Everything else, token
//! evaluation included, is a request sealed in a session ([`obscura_keeper::session::Channel`]):
//! the keeper opens it with the session's keys, checks it is the next message, runs it as that
//! user, and seals the answer.
//!
//! Logins are limited per account name and per source address. An OPAQUE client learns whether
//! its password guess was right from the keeper's second message alone, so every *started*
//! login counts as a failure, durably, before that message is sent; a finished login clears the
//! count. After [`LoginPolicy::free`] failures each further attempt must wait twice as long as
//! the last (up to [`LoginPolicy::max_delay_s`]); after [`LoginPolicy::lock_after`] the account
//! is locked until an admin unlocks it. Unknown names are counted and locked exactly like known
//! ones, and their logins run the same steps with a fake password file, so neither the answers
//! nor the limits tell whether an account exists.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use obscura_keeper::session::{self, Channel, PendingLogin, Role, ServerKeys};
use obscura_keeper::signing::{self, DkgState, PeerKeys, SigningNonces};
use obscura_proto::{
    ErrorCode, KeeperPackage, Request, RequestBody, Response, ResponseBody, SecretInfo, SecretKind,
    UserEvent,
};
use obscura_store::keeper::KeeperStore;
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use obscura_tokens::keyfile::to_hex as hex;

use crate::server::error;
use crate::vault::{Handle, Kind, Vault};

/// How failed logins are limited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginPolicy {
    /// Failures of an account allowed without delay.
    pub free: u32,
    /// Failures after which the account is locked until an admin unlocks it.
    pub lock_after: u32,
    /// Failures from one source address allowed without delay (sources are never locked).
    pub source_free: u32,
    /// Longest delay between attempts, seconds.
    pub max_delay_s: u64,
    /// How recent a session's login must be for its user to change the password, seconds: a
    /// session stolen later cannot change it and lock its user out.
    #[serde(default = "default_fresh_login")]
    pub fresh_login_s: u64,
}

fn default_fresh_login() -> u64 {
    300
}

impl Default for LoginPolicy {
    fn default() -> Self {
        LoginPolicy {
            free: 5,
            lock_after: 20,
            source_free: 20,
            max_delay_s: 3600,
            fresh_login_s: default_fresh_login(),
        }
    }
}

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
    /// Whether the account may register others, unlock accounts and change key shares.
    pub admin: bool,
    /// When it was registered.
    pub created: u64,
}

/// Failed login attempts of an account name, as stored.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Attempts {
    /// Failures since the last successful login.
    pub failures: u32,
    /// Time of the last failure.
    pub last: u64,
    /// Locked until an admin unlocks it.
    pub locked: bool,
}

impl Attempts {
    /// Seconds still to wait at `now` before the next attempt, after `free` failures allowed.
    fn wait(&self, free: u32, max_delay_s: u64, now: u64) -> u64 {
        (self.last + delay(self.failures, free, max_delay_s)).saturating_sub(now)
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
}

struct Session {
    channel: Mutex<Channel>,
    user: Handle,
    tag: [u8; 32],
    admin: bool,
    opened_at: u64,
}

struct Pending {
    login: PendingLogin,
    user: Handle,
    /// The account's role as read at the start (false for an unknown name, which never
    /// finishes: a fake file never verifies KE3).
    admin: bool,
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
    sessions: Mutex<HashMap<[u8; 16], std::sync::Arc<Session>>>,
    pending: Mutex<HashMap<[u8; 16], Pending>>,
    sources: Mutex<HashMap<IpAddr, Attempts>>,
    /// Registrations and attempt counts change one at a time.
    writing: Mutex<()>,
    /// Key generations under way: (user, key id) → (state, start, name).
    dkg: Mutex<HashMap<(Handle, [u8; 16]), Generating>>,
    /// Signing nonces committed: (session, key id) → nonces, used once.
    nonces: Mutex<HashMap<SessionKey, SigningNonces>>,
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
    pub(crate) admin: bool,
    /// The session's login is at most [`LoginPolicy::fresh_login_s`] old.
    pub(crate) fresh: bool,
}

/// A user's name as every keeper digests it alike.
fn user_tag(user: &str) -> [u8; 32] {
    blake3::derive_key("obscura 2026 keeper user tag", user.as_bytes())
}

/// The OPAQUE context a client uses with keeper `keeper`: binds the keeper's identity into
/// the login.
pub fn login_context(keeper: u8) -> Vec<u8> {
    format!("obscura keeper {keeper}").into_bytes()
}

fn internal(e: impl std::fmt::Display) -> ResponseBody {
    error(ErrorCode::Internal, e.to_string())
}

fn vault_error(e: crate::config::Error) -> ResponseBody {
    match e {
        crate::config::Error::Store(s) => crate::server::store_error(s),
        other => internal(other),
    }
}

fn locked() -> ResponseBody {
    error(
        ErrorCode::TooManyAttempts,
        "too many failed logins: the account is locked until an admin unlocks it",
    )
}

fn login_failed() -> ResponseBody {
    error(ErrorCode::LoginFailed, "login failed")
}

impl Accounts {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        keeper: u8,
        m: u8,
        threshold: u8,
        opaque: ServerKeys,
        vault: Vault,
        peers: Option<PeerKeys>,
        policy: LoginPolicy,
        session_ttl_s: u64,
    ) -> Accounts {
        Accounts {
            keeper,
            m,
            threshold,
            opaque,
            vault,
            peers,
            policy,
            session_ttl_s,
            sessions: Mutex::default(),
            pending: Mutex::default(),
            sources: Mutex::default(),
            writing: Mutex::default(),
            dkg: Mutex::default(),
            nonces: Mutex::default(),
        }
    }

    fn any_account(&self, store: &KeeperStore) -> Result<bool, ResponseBody> {
        store
            .vault_scan(&[Kind::Account as u8])
            .map(|rows| !rows.is_empty())
            .map_err(crate::server::store_error)
    }

    /// Registration, first step. Outside a session only while the keeper has no account; in
    /// a session, an admin's for any new account, or a user's own for a new password.
    pub(crate) fn register(
        &self,
        store: &KeeperStore,
        caller: Option<&Caller>,
        user: &str,
        request: &[u8],
    ) -> Result<ResponseBody, ResponseBody> {
        self.may_register(store, caller, &self.vault.handle(user))?;
        let response = self
            .opaque
            .registration_response(request, user.as_bytes())
            .map_err(|e| error(ErrorCode::BadRequest, e.to_string()))?;
        Ok(ResponseBody::KeeperRegistration { response })
    }

    fn may_register(
        &self,
        store: &KeeperStore,
        caller: Option<&Caller>,
        user: &Handle,
    ) -> Result<(), ResponseBody> {
        match caller {
            Some(c) if c.user == *user && !c.fresh => Err(error(
                ErrorCode::Forbidden,
                format!(
                    "a password change needs a login in the last {} s: log in again",
                    self.policy.fresh_login_s
                ),
            )),
            Some(c) if c.admin || c.user == *user => Ok(()),
            Some(_) => Err(error(
                ErrorCode::Forbidden,
                "only an admin registers accounts",
            )),
            None if !self.any_account(store)? => Ok(()),
            None => Err(error(
                ErrorCode::NoSession,
                "this keeper has accounts: an admin registers new ones, logged in",
            )),
        }
    }

    /// Registration, last step: store the password file. The first account is the admin. A
    /// user registering its own name in a fresh session changes its password: the account
    /// keeps its role, and the user's other sessions at this keeper end.
    pub(crate) fn register_finish(
        &self,
        store: &KeeperStore,
        caller: Option<&Caller>,
        user: &str,
        upload: &[u8],
        now: u64,
    ) -> Result<ResponseBody, ResponseBody> {
        let _one = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        let handle = self.vault.handle(user);
        self.may_register(store, caller, &handle)?;
        let existing = self
            .vault
            .get(store, Kind::Account, &handle, &[])
            .map_err(vault_error)?
            .map(|(v, bytes)| {
                postcard::from_bytes::<Account>(&bytes)
                    .map(|a| (v, a))
                    .map_err(internal)
            })
            .transpose()?;
        let own = caller.filter(|c| c.user == handle);
        let (admin, created, what) = match (&existing, own) {
            (Some((_, a)), Some(_)) => (a.admin, a.created, "password"),
            (Some(_), None) => {
                return Err(error(
                    ErrorCode::AlreadyExists,
                    format!("keeper {} already has an account {user:?}", self.keeper),
                ))
            }
            (None, _) => (caller.is_none(), now, "register"),
        };
        let password_file = session::ServerKeys::password_file(upload)
            .map_err(|e| error(ErrorCode::BadRequest, e.to_string()))?;
        let account = Account {
            password_file,
            admin,
            created,
        };
        let bytes = postcard::to_allocvec(&account).map_err(internal)?;
        let version = existing.as_ref().map_or(1, |(v, _)| v + 1);
        let event = self.event(what, None, true, now);
        self.vault
            .write(
                store,
                &[
                    (Kind::Account, handle, Vec::new(), &bytes, version),
                    (event.0, handle, event.1, &event.2, 1),
                ],
                &[],
                &handle,
                &format!("{what} user={} admin={}", hex(&handle), account.admin),
                now,
            )
            .map_err(vault_error)?;
        if let Some(c) = own {
            self.sessions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|id, s| s.user != handle || *id == c.session);
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
        let p = self.policy;
        {
            let sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
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
        let mut attempts = self.attempts(store, &handle)?;
        if attempts.locked {
            return Err(locked());
        }
        let wait = attempts.wait(p.free, p.max_delay_s, now);
        if wait > 0 {
            return Err(error(
                ErrorCode::TooManyAttempts,
                format!("too many failed logins: wait {wait} s"),
            ));
        }
        // The same work for a known and an unknown name: one read, one OPAQUE answer (with a
        // fake file for an unknown one), one durable write.
        let file = self
            .vault
            .get(store, Kind::Account, &handle, &[])
            .map_err(vault_error)?
            .map(|(_, bytes)| postcard::from_bytes::<Account>(&bytes))
            .transpose()
            .map_err(internal)?;
        let admin = file.as_ref().is_some_and(|a| a.admin);
        let (login, ke2) = self
            .opaque
            .login_response(
                file.as_ref().map(|a| a.password_file.as_slice()),
                ke1,
                user.as_bytes(),
                &login_context(self.keeper),
                &mut OsRng,
            )
            .map_err(|e| error(ErrorCode::BadRequest, e.to_string()))?;
        attempts.failures = attempts.failures.saturating_add(1);
        attempts.last = now;
        attempts.locked = attempts.failures >= p.lock_after;
        self.put_attempts(
            store,
            &handle,
            &attempts,
            &format!(
                "login started user={} failures={}",
                hex(&handle),
                attempts.failures
            ),
            now,
        )?;
        {
            let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
            let s = sources.entry(source).or_default();
            s.failures = s.failures.saturating_add(1);
            s.last = now;
        }
        let mut id = [0u8; 16];
        OsRng.fill_bytes(&mut id);
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
                admin,
                tag: user_tag(user),
                source,
                expires_at: now + PENDING_S,
            },
        );
        Ok(ResponseBody::KeeperLoginStarted { login: id, ke2 })
    }

    /// Login, last step: check KE3, clear the counts, open a session.
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
        {
            let _one = self.writing.lock().unwrap_or_else(|e| e.into_inner());
            let attempts = self.attempts(store, &pending.user)?;
            if attempts.locked {
                return Err(locked());
            }
            let bytes = postcard::to_allocvec(&Attempts::default()).map_err(internal)?;
            let event = self.event("login", None, true, now);
            self.vault
                .write(
                    store,
                    &[
                        (Kind::Attempts, pending.user, Vec::new(), &bytes, 1),
                        (event.0, pending.user, event.1, &event.2, 1),
                    ],
                    &[],
                    &pending.user,
                    &format!("login user={}", hex(&pending.user)),
                    now,
                )
                .map_err(vault_error)?;
        }
        self.sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&pending.source);
        let mut id = [0u8; 16];
        OsRng.fill_bytes(&mut id);
        let expires_at = now + self.session_ttl_s;
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.retain(|_, s| {
            s.channel
                .lock()
                .map(|c| c.expires_at() > now)
                .unwrap_or(false)
        });
        if sessions.len() >= MAX_SESSIONS {
            return Err(error(ErrorCode::Internal, "too many open sessions"));
        }
        sessions.insert(
            id,
            std::sync::Arc::new(Session {
                channel: Mutex::new(Channel::new(&key, id, Role::Server, expires_at)),
                user: pending.user,
                tag: pending.tag,
                admin: pending.admin,
                opened_at: now,
            }),
        );
        Ok(ResponseBody::KeeperSession {
            session: id,
            expires_at,
        })
    }

    /// Open a sealed request, run it with `run` as its caller, seal the answer. A message that
    /// does not open (replayed, reordered, altered, reflected, expired session) is refused in
    /// clear, without touching the session.
    pub(crate) fn sealed(
        &self,
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
        let plain = match channel.open(message, now) {
            Ok(p) => p,
            Err(session::SessionError::Expired) => {
                drop(channel);
                self.end(session);
                return error(ErrorCode::NoSession, "the session expired: log in again");
            }
            Err(e) => return error(ErrorCode::NoSession, e.to_string()),
        };
        let answer = match Request::decode(&plain) {
            Ok(req) => run(
                &Caller {
                    session: *session,
                    user: s.user,
                    tag: s.tag,
                    admin: s.admin,
                    fresh: now <= s.opened_at.saturating_add(self.policy.fresh_login_s),
                },
                req,
            ),
            Err(e) => crate::server::proto_error(e),
        };
        match channel.seal(&Response(answer).encode(), now) {
            Ok(message) => ResponseBody::KeeperSealed { message },
            Err(e) => error(ErrorCode::NoSession, e.to_string()),
        }
    }

    /// End a session.
    pub(crate) fn end(&self, session: &[u8; 16]) {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(session);
        self.nonces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(s, _), _| s != session);
    }

    /// An admin lifts `user`'s lockout and clears its failures.
    pub(crate) fn unlock(
        &self,
        store: &KeeperStore,
        caller: &Caller,
        user: &str,
        now: u64,
    ) -> Result<ResponseBody, ResponseBody> {
        if !caller.admin {
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

    /// An event record: (kind, id, contents).
    fn event(
        &self,
        action: &str,
        secret: Option<[u8; 16]>,
        ok: bool,
        now: u64,
    ) -> (Kind, Vec<u8>, Vec<u8>) {
        let mut id = now.to_be_bytes().to_vec();
        let mut r = [0u8; 8];
        OsRng.fill_bytes(&mut r);
        id.extend_from_slice(&r);
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
            Some((_, bytes)) => postcard::from_bytes(&bytes).map_err(internal),
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
        let bytes = zeroize::Zeroizing::new(postcard::to_allocvec(secret).map_err(internal)?);
        let event = self.event(action, Some(*id), true, now);
        self.vault
            .write(
                store,
                &[
                    (Kind::Secret, caller.user, id.to_vec(), &bytes, 1),
                    (event.0, caller.user, event.1, &event.2, 1),
                ],
                &[],
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
        let _one = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        let event = self.event(action, secret, true, now);
        self.vault
            .write(
                store,
                &[(event.0, caller.user, event.1, &event.2, 1)],
                &[],
                &secret.unwrap_or_default(),
                &format!("{action} user={}", hex(&caller.user)),
                now,
            )
            .map_err(vault_error)
    }

    /// The user-secret and signing operations of a session.
    pub(crate) fn user_op(
        &self,
        store: &KeeperStore,
        caller: &Caller,
        body: &RequestBody,
        now: u64,
    ) -> Result<ResponseBody, ResponseBody> {
        match body {
            RequestBody::SecretPut {
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
                };
                self.store_secret(store, caller, id, &secret, action, now)?;
                Ok(ResponseBody::Ok)
            }
            RequestBody::SecretGet { id, export } => {
                let secret = self.secret(store, &caller.user, id)?;
                if secret.signing {
                    return Err(error(
                        ErrorCode::Forbidden,
                        "a signing key is never rebuilt; use it to sign",
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
            RequestBody::SecretDelete { id } => {
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
            RequestBody::SecretList => {
                let mut items = Vec::new();
                for (id, bytes) in self
                    .vault
                    .list(store, Kind::Secret, &caller.user)
                    .map_err(vault_error)?
                {
                    let s: StoredSecret = postcard::from_bytes(&bytes).map_err(internal)?;
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
            RequestBody::UserEvents => {
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
            RequestBody::DkgStart { id, .. }
            | RequestBody::DkgRound2 { id, .. }
            | RequestBody::DkgFinish { id, .. } => self.dkg(store, caller, id, body, now),
            RequestBody::SignCommit { id } => {
                let secret = self.signing_key(store, &caller.user, id)?;
                let key = signing::key_package_from(&secret.share)
                    .map_err(|e| internal(e.to_string()))?;
                let (nonces, commitment) =
                    signing::commit(&key, &mut OsRng).map_err(|e| internal(e.to_string()))?;
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
            RequestBody::SignShare { id, package } => {
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
        body: &RequestBody,
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
            RequestBody::DkgStart { name, .. } => {
                if self
                    .vault
                    .get(store, Kind::Secret, &caller.user, id)
                    .map_err(vault_error)?
                    .is_some()
                {
                    return Err(error(ErrorCode::AlreadyExists, "that key id is taken"));
                }
                let (state, package) =
                    signing::dkg_start(self.keeper, self.m, self.threshold, &mut OsRng)
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
            RequestBody::DkgRound2 { round1, .. } => {
                let (state, _, name) = states
                    .remove(&slot)
                    .ok_or_else(|| error(ErrorCode::BadRequest, "no key generation under way"))?;
                let (state, out) =
                    signing::dkg_round2(state, peers, &ctx, &pairs(round1), &mut OsRng)
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
            RequestBody::DkgFinish { round1, round2, .. } => {
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
