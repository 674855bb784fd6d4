//! The user's sessions with the keepers: registration, login, logout, and every keeper request
//! sealed in its session.
//!
//! A login runs OPAQUE with each keeper separately (the password never leaves the client, and
//! no keeper can test guesses offline); each one that succeeds gives a session whose key seals
//! every later request to that keeper ([`obscura_keeper::session::Channel`]). A login needs
//! `T` keepers; it opens sessions with every keeper that answers.
//!
//! Between commands the sessions live in a file (`session.json` in the cluster directory by
//! default) that only its owner can read (mode 0600): the session keys and the user's
//! capability with the key it names. Each process sends in a lane of its own
//! ([`Channel::resume`]): it takes the next one from a counter in the sibling `PATH.lock` file,
//! under that file's lock, when it loads the sessions, logs in, or finds its lane closed at a
//! keeper. The counter only rises and the lock file is never removed, so no two processes ever
//! share a lane, whatever logins and logouts happen in between. Two commands at once, a request
//! that timed out or a client killed mid-request never leave a session out of step. The file
//! is for one machine: a copy restored from a backup is fine, but a folder synchronised between
//! machines shares the sessions without the counter's lock.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use obscura_auth::capability::{CapabilityKey, Holder};
use obscura_keeper::session::{self, Channel, ClientLogin, ClientRegistration};
use obscura_proto::{KeeperBody, MatchProof, Response, ResponseBody, SignedCapability, WireRoles};
use obscura_sharing::manifest::ImageId;
use obscura_tokens::keyfile::{from_hex, to_hex as hex};
use rand_core::OsRng;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

pub use crate::fault::KeeperFailure;
use crate::fault::{Fault, PerKeeper};
use crate::{fresh_request, post_keeper, unix_now, Error};

/// One open session with one keeper.
struct Slot {
    channel: Channel,
    key: Zeroizing<[u8; session::SESSION_KEY_LEN]>,
}

impl Slot {
    fn stored(&self, keeper: u8) -> StoredSession {
        StoredSession {
            keeper,
            session: hex(&self.channel.id()),
            key: hex(&*self.key),
            expires_at: self.channel.expires_at(),
        }
    }
}

/// A session in use, held for a whole request: its sequence numbers allow one request at a
/// time, so the next is sealed only once the last answer is opened.
type Held = Arc<tokio::sync::Mutex<Slot>>;

/// The sessions of one user with the keepers.
#[derive(Default)]
pub(crate) struct Sessions {
    user: RwLock<Option<String>>,
    /// Keeper `j`'s session at `j - 1`.
    slots: RwLock<Vec<Option<Held>>>,
    /// What the file holds of each session; its lock also makes this process's writes of the
    /// file one at a time.
    saved: Mutex<Vec<Option<StoredSession>>>,
    file: RwLock<Option<PathBuf>>,
    /// The user's capability and its key.
    capability: RwLock<Option<Arc<Holder>>>,
    /// Proofs of the user's own matches, newest last, for fetching them later.
    matches: Mutex<Vec<(ImageId, MatchProof)>>,
    /// The next lane of a client that keeps its sessions in memory only (no other process
    /// sends in them).
    memory_lane: std::sync::atomic::AtomicU32,
}

/// Match proofs kept per user (the oldest go first).
const KEPT_MATCHES: usize = 256;

#[derive(Clone, Serialize, Deserialize)]
struct StoredSession {
    keeper: u8,
    session: String,
    key: String,
    expires_at: u64,
}

#[derive(Serialize, Deserialize)]
struct SessionFile {
    user: String,
    sessions: Vec<StoredSession>,
    #[serde(default)]
    capability: Option<StoredCapability>,
    /// (image id, postcard of its match proof), hex.
    #[serde(default)]
    matches: Vec<(String, String)>,
}

/// A capability as the session file keeps it (hex).
#[derive(Clone, Serialize, Deserialize)]
struct StoredCapability {
    key: String,
    body: String,
    signature: String,
}

/// What a login did: who is logged in at which keepers, and which keepers failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginReport {
    /// The user.
    pub user: String,
    /// Keepers with an open session.
    pub keepers: Vec<u8>,
    /// When the first of the sessions expires (Unix seconds).
    pub expires_at: u64,
    /// Keepers that refused or did not answer.
    pub failures: Vec<KeeperFailure>,
}

impl Sessions {
    /// The logged-in user, if any.
    pub(crate) fn user(&self) -> Option<String> {
        self.user.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The user's capability, if it holds one.
    pub(crate) fn capability(&self) -> Option<Arc<Holder>> {
        self.capability
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Remember the proofs of new matches (and save).
    pub(crate) fn remember(&self, found: Vec<(ImageId, MatchProof)>) -> Result<(), Error> {
        if found.is_empty() {
            return Ok(());
        }
        {
            let mut m = self.matches.lock().unwrap_or_else(|e| e.into_inner());
            for (id, proof) in found {
                m.retain(|(i, _)| *i != id);
                m.push((id, proof));
            }
            let over = m.len().saturating_sub(KEPT_MATCHES);
            m.drain(..over);
        }
        self.save(false)
    }

    /// The proof of the user's match of `id`, if kept.
    pub(crate) fn proof(&self, id: &ImageId) -> Option<MatchProof> {
        self.matches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .rev()
            .find(|(i, _)| i == id)
            .map(|(_, p)| p.clone())
    }

    /// Keep `holder` as the user's capability, and save.
    pub(crate) fn set_capability(&self, holder: Holder) -> Result<Arc<Holder>, Error> {
        let held = Arc::new(holder);
        *self.capability.write().unwrap_or_else(|e| e.into_inner()) = Some(held.clone());
        self.save(false)?;
        Ok(held)
    }

    fn slot(&self, j: u8) -> Option<Held> {
        self.slots
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(usize::from(j).wrapping_sub(1))
            .cloned()
            .flatten()
    }

    fn set(&self, user: &str, m: usize, opened: Vec<(u8, Slot)>) {
        let mut slots: Vec<Option<Held>> = (0..m).map(|_| None).collect();
        let mut saved: Vec<Option<StoredSession>> = (0..m).map(|_| None).collect();
        for (j, s) in opened {
            if let Some(place) = slots.get_mut(usize::from(j) - 1) {
                saved[usize::from(j) - 1] = Some(s.stored(j));
                *place = Some(Arc::new(tokio::sync::Mutex::new(s)));
            }
        }
        *self.slots.write().unwrap_or_else(|e| e.into_inner()) = slots;
        *self.saved.lock().unwrap_or_else(|e| e.into_inner()) = saved;
        *self.user.write().unwrap_or_else(|e| e.into_inner()) = Some(user.to_string());
    }

    fn clear(&self) {
        self.slots
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        *self.user.write().unwrap_or_else(|e| e.into_inner()) = None;
        *self.capability.write().unwrap_or_else(|e| e.into_inner()) = None;
        self.matches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Load the sessions in `path` (if the file exists), taking a lane of them for this process,
    /// and save them there after a login, a logout, a new capability or a new match. A kept
    /// capability is kept only if it holds at `now`. Returns whether a session was loaded.
    pub(crate) fn attach(
        &self,
        path: &Path,
        m: usize,
        group: &CapabilityKey,
        now: u64,
    ) -> Result<bool, Error> {
        *self.file.write().unwrap_or_else(|e| e.into_inner()) = Some(path.to_path_buf());
        let bytes = match std::fs::read(path) {
            Ok(b) => Zeroizing::new(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(Error::Session(format!("{}: {e}", path.display()))),
        };
        let bad = |why: &str| Error::Session(format!("{}: {why}", path.display()));
        let file: SessionFile = serde_json::from_slice(&bytes).map_err(|e| bad(&e.to_string()))?;
        // This process's own lane, taken (and recorded) before anything is sealed in it.
        let lane = take_lane(path)?;
        let mut opened = Vec::new();
        for s in &file.sessions {
            let id: [u8; 16] = from_hex(&s.session).ok_or_else(|| bad("a session id"))?;
            let key = Zeroizing::new(
                from_hex::<{ session::SESSION_KEY_LEN }>(&s.key)
                    .ok_or_else(|| bad("a session key"))?,
            );
            if s.keeper == 0 || usize::from(s.keeper) > m {
                return Err(bad("a keeper number outside the cluster"));
            }
            let channel = Channel::resume(&key, id, s.expires_at, lane);
            opened.push((s.keeper, Slot { channel, key }));
        }
        self.set(&file.user, m, opened);
        // A capability that no longer verifies (expired, or of another cluster) is dropped: the
        // next node request asks the keepers for a new one.
        let holder = file.capability.as_ref().and_then(|c| {
            let key = Zeroizing::new(from_hex::<32>(&c.key)?);
            let signed = SignedCapability {
                body: obscura_tokens::keyfile::bytes_from_hex(&c.body)?,
                signature: obscura_tokens::keyfile::bytes_from_hex(&c.signature)?,
            };
            Holder::new(
                ed25519_dalek::SigningKey::from_bytes(&key),
                signed,
                group,
                now,
            )
            .ok()
        });
        *self.capability.write().unwrap_or_else(|e| e.into_inner()) = holder.map(Arc::new);
        *self.matches.lock().unwrap_or_else(|e| e.into_inner()) = file
            .matches
            .iter()
            .filter_map(|(id, proof)| {
                let id = ImageId(from_hex::<16>(id)?);
                let bytes = obscura_tokens::keyfile::bytes_from_hex(proof)?;
                Some((id, postcard::from_bytes(&bytes).ok()?))
            })
            .collect();
        Ok(true)
    }

    /// A fresh lane for this process: from the attached file's counter, or from this
    /// client's own for sessions kept in memory only (lane 0 first).
    fn new_lane(&self) -> Result<u32, Error> {
        match self
            .file
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_deref()
        {
            Some(path) => take_lane(path),
            None => Ok(self
                .memory_lane
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)),
        }
    }

    /// Write the sessions to the attached file (owner-only), or remove it when logged out;
    /// after a login or logout, whatever the file holds (`replace`). Otherwise (a new
    /// capability, a new match) the file is left alone when another process logged in or out
    /// since this one read it: its sessions are no longer this process's to write back.
    pub(crate) fn save(&self, replace: bool) -> Result<(), Error> {
        let Some(path) = self.file.read().unwrap_or_else(|e| e.into_inner()).clone() else {
            return Ok(());
        };
        locked(&path, |_| self.write_file(&path, replace))
    }

    fn write_file(&self, path: &Path, replace: bool) -> Result<(), Error> {
        let on_disk: Option<Vec<String>> = std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice::<SessionFile>(&Zeroizing::new(b)).ok())
            .map(|f| f.sessions.into_iter().map(|s| s.session).collect());
        let ours: Vec<String> = self
            .saved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .flatten()
            .map(|s| s.session.clone())
            .collect();
        if !replace && on_disk.as_ref() != Some(&ours) {
            return Ok(());
        }
        let Some(user) = self.user() else {
            return match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(Error::Session(format!("{}: {e}", path.display())))
                }
                _ => Ok(()),
            };
        };
        let saved = self.saved.lock().unwrap_or_else(|e| e.into_inner());
        let sessions: Vec<StoredSession> = saved.iter().flatten().cloned().collect();
        let capability = self.capability().map(|h| StoredCapability {
            key: hex(h.key().as_bytes()),
            body: hex(&h.signed().body),
            signature: hex(&h.signed().signature),
        });
        let matches = self
            .matches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(id, p)| {
                (
                    hex(&id.0),
                    hex(&postcard::to_allocvec(p).expect("a proof encodes")),
                )
            })
            .collect();
        let text = Zeroizing::new(
            serde_json::to_vec_pretty(&SessionFile {
                user,
                sessions,
                capability,
                matches,
            })
            .map_err(|e| Error::Session(e.to_string()))?,
        );
        obscura_cluster::files::write_private_atomic(path, &text)
            .map_err(|e| Error::Session(e.to_string()))
    }
}

/// Take the next lane of the session file at `path` from the counter in `PATH.lock`: lane 1
/// first (lane 0 stays with clients that keep no file, and with files written before lanes).
fn take_lane(path: &Path) -> Result<u32, Error> {
    use std::io::{Read, Seek, Write};
    locked(path, |file| {
        let fail = |e: std::io::Error| Error::Session(format!("{}.lock: {e}", path.display()));
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(fail)?;
        let lane: u32 = text.trim().parse().unwrap_or(0).max(1);
        let next = lane
            .checked_add(1)
            .ok_or_else(|| Error::Session("the session file's lanes are spent".into()))?;
        file.set_len(0).map_err(fail)?;
        file.rewind().map_err(fail)?;
        file.write_all(next.to_string().as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(fail)?;
        Ok(lane)
    })
}

/// Run `f` holding the lock on `path`'s sibling `PATH.lock` (it holds the lane counter), so
/// that processes sharing a session file read, change and write it one at a time. It is held
/// only for a read and a write: a process that keeps it over 10 s is stuck.
fn locked<T>(
    path: &Path,
    f: impl FnOnce(&mut std::fs::File) -> Result<T, Error>,
) -> Result<T, Error> {
    let mut lock = obscura_cluster::files::lock_beside(path, std::time::Duration::from_secs(10))
        .map_err(|e| Error::Session(e.to_string()))?;
    f(lock.file())
}

/// How the client reaches keepers: HTTP, their URLs, and the user's sessions.
#[derive(Clone)]
pub(crate) struct KeeperLink {
    pub(crate) http: crate::Http,
    pub(crate) urls: Vec<String>,
    pub(crate) sessions: Arc<Sessions>,
}

impl KeeperLink {
    /// Send `body` to keeper `j`: sealed in its session if there is one, else in clear (which a
    /// keeper accepts only for status, audit, login and the first registration). Returns the
    /// answer and the bytes moved.
    pub(crate) async fn post(
        &self,
        j: u8,
        body: KeeperBody,
    ) -> (Result<ResponseBody, Fault>, u64, u64) {
        let Some(url) = self.urls.get(usize::from(j).wrapping_sub(1)) else {
            return (Err(Fault::NotSent(format!("no keeper {j}"))), 0, 0);
        };
        let Some(slot) = self.sessions.slot(j) else {
            return post_keeper(&self.http, url, body).await;
        };
        let inner = inner_request(body);
        // The session's sequence numbers allow one request at a time: the lock is held until
        // the answer is opened.
        let mut s = slot.lock().await;
        let session = s.channel.id();
        let (mut sent, mut received) = (0, 0);
        let mut moved = false;
        let answer = loop {
            let message = match s.channel.seal(&inner, unix_now()) {
                Ok(m) => m,
                Err(e) => return (Err(Fault::Session(e)), sent, received),
            };
            let (answer, out, back) = post_keeper(
                &self.http,
                url,
                KeeperBody::KeeperSealed { session, message },
            )
            .await;
            (sent, received) = (sent + out, received + back);
            // A lane the keeper no longer takes (many newer processes used the session since
            // this one started, or the keeper restarted since it took this lane): the request
            // was refused unopened, so it goes again, once, in a fresh lane.
            let closed = matches!(
                &answer,
                Err(crate::Fault::Refused { code: obscura_proto::ErrorCode::NoSession, message })
                    if message == &session::SessionError::Refused.to_string()
            );
            if closed && !moved {
                if let Ok(lane @ 1..) = self.sessions.new_lane() {
                    let (key, expires_at) = (s.key.clone(), s.channel.expires_at());
                    s.channel = Channel::resume(&key, session, expires_at, lane);
                    moved = true;
                    continue;
                }
            }
            break answer;
        };
        let opened = match answer {
            Ok(ResponseBody::KeeperSealed { message }) => s
                .channel
                .open(&message, unix_now())
                .map_err(Fault::Session)
                .and_then(|plain| {
                    // An answer that opens came from the keeper: one that does not decode is
                    // its fault, not the network's.
                    Response::decode(&plain)
                        .map_err(|_| Fault::Unexpected("a message of this protocol"))
                })
                .and_then(|r| match r.0 {
                    ResponseBody::Error { code, message } => Err(Fault::Refused { code, message }),
                    other => Ok(other),
                }),
            Ok(_) => Err(Fault::Unexpected("a sealed answer")),
            Err(e) => Err(e),
        };
        drop(s);
        (opened, sent, received)
    }

    /// Send to every keeper at once; answers in keeper order.
    pub(crate) async fn post_all(
        &self,
        body: impl Fn(u8) -> KeeperBody,
    ) -> Vec<(u8, Result<ResponseBody, Fault>)> {
        let mut set = PerKeeper::new();
        for j in 1..=self.urls.len() as u8 {
            let (link, b) = (self.clone(), body(j));
            set.spawn(j, async move { link.post(j, b).await.0 });
        }
        set.all().await
    }

    /// Register `user` with `roles` at every keeper. Outside a session this works only for the
    /// first account of a keeper (which becomes its admin, with every role), with the
    /// cluster's bootstrap code; later accounts are registered by a logged-in admin.
    pub(crate) async fn register(
        &self,
        user: &str,
        password: &[u8],
        roles: WireRoles,
        bootstrap: Option<[u8; 32]>,
    ) -> Result<(), Error> {
        let all: Vec<u8> = (1..=self.urls.len() as u8).collect();
        let failures = self
            .register_at(user, password, &all, roles, bootstrap, true)
            .await;
        if failures.is_empty() {
            Ok(())
        } else {
            Err(Error::Keepers {
                what: "registration",
                failures,
            })
        }
    }

    /// Register `user` with `keepers` (in this link's sessions, where it holds them); the
    /// keepers that failed, with why.
    ///
    /// A keeper that already holds the account (an earlier run registered it there, and failed
    /// at another keeper between the steps) counts as done when this password logs in there.
    /// Every first step is taken before any second one, and only the second stores: `together`
    /// (a registration), when a keeper holds the account under another password or a keeper
    /// does not answer, no keeper is asked to store anything. A password change (not
    /// `together`) goes on wherever its first step passed: each of those keepers has just
    /// taken the old password, and a rerun finishes the others.
    pub(crate) async fn register_at(
        &self,
        user: &str,
        password: &[u8],
        keepers: &[u8],
        roles: WireRoles,
        bootstrap: Option<[u8; 32]>,
        together: bool,
    ) -> Vec<KeeperFailure> {
        let mut set = PerKeeper::new();
        for &j in keepers {
            let (link, user, password) = (
                self.clone(),
                user.to_string(),
                Zeroizing::new(password.to_vec()),
            );
            set.spawn(j, async move {
                let (reg, request) =
                    ClientRegistration::start(&password, &mut OsRng).map_err(Fault::Opaque)?;
                let body = KeeperBody::KeeperRegister {
                    user,
                    request,
                    bootstrap,
                };
                match link.post(j, body).await.0? {
                    ResponseBody::KeeperRegistration { response } => Ok((reg, response)),
                    _ => Err(Fault::Unexpected("a registration response")),
                }
            });
        }
        let (mut ready, mut held, mut failures) = (Vec::new(), Vec::new(), Vec::new());
        while let Some((j, done)) = set.next().await {
            match done {
                Ok(started) => ready.push((j, started)),
                Err(fault) if holds_account(&fault, bootstrap.is_some()) => held.push((j, fault)),
                Err(fault) => failures.push(KeeperFailure { keeper: j, fault }),
            }
        }
        let mut other_password = Vec::new();
        for (keeper, fault) in held {
            match self.confirm_password(keeper, user, password).await {
                Ok(()) => {}
                // The password does not log in there: the account is another's, or this user's
                // under another password.
                Err(login)
                    if login == Fault::Opaque(session::SessionError::LoginFailed)
                        || login.is_refusal(obscura_proto::ErrorCode::LoginFailed) =>
                {
                    other_password.push(KeeperFailure {
                        keeper,
                        fault: Fault::OtherPassword(Box::new(fault)),
                    })
                }
                // Down, locked out, slow: not known, so as a keeper that did not answer.
                Err(login) => failures.push(KeeperFailure {
                    keeper,
                    fault: login,
                }),
            }
        }
        // Stored everywhere or nowhere: a keeper that holds the account under another password,
        // or one that did not answer (it may hold one), stops every second step, so no run can
        // leave one account with two passwords.
        if together && (!other_password.is_empty() || !failures.is_empty()) {
            let why = match other_password.is_empty() {
                true => {
                    "every keeper must answer, so that no run can leave this account with two \
                     passwords (run it again when they do)"
                }
                false => "another keeper holds this account under another password (use that one)",
            };
            failures.extend(other_password);
            failures.extend(ready.iter().map(|(keeper, _)| KeeperFailure {
                keeper: *keeper,
                fault: Fault::Withheld(why),
            }));
            failures.sort_by_key(|f| f.keeper);
            return failures;
        }
        let mut set = PerKeeper::new();
        for (j, (reg, response)) in ready {
            let (link, user, password) = (
                self.clone(),
                user.to_string(),
                Zeroizing::new(password.to_vec()),
            );
            set.spawn(j, async move {
                // Argon2id runs here: off the async workers.
                let upload = tokio::task::spawn_blocking(move || {
                    reg.finish(&password, &response, &mut OsRng)
                })
                .await
                .map_err(|_| Fault::Panicked)?
                .map_err(Fault::Opaque)?;
                let body = KeeperBody::KeeperRegisterFinish {
                    user,
                    upload,
                    roles,
                    bootstrap,
                };
                match link.post(j, body).await.0? {
                    ResponseBody::Ok => Ok(()),
                    _ => Err(Fault::Unexpected("an acknowledgement")),
                }
            });
        }
        failures.extend(crate::fault::keeper_failures(&set.all().await));
        failures.sort_by_key(|f| f.keeper);
        failures
    }

    /// Whether `password` logs `user` in at keeper `j`. The session this opens is ended at once.
    async fn confirm_password(&self, j: u8, user: &str, password: &[u8]) -> Result<(), Fault> {
        let mut slot = self.login_at(j, user, password, 0).await?;
        let url = &self.urls[usize::from(j) - 1];
        if let Ok(message) = slot
            .channel
            .seal(&inner_request(KeeperBody::KeeperLogout), unix_now())
        {
            let session = slot.channel.id();
            // Ending it is a courtesy: the keeper drops it on expiry anyway.
            let _ = post_keeper(
                &self.http,
                url,
                KeeperBody::KeeperSealed { session, message },
            )
            .await;
        }
        Ok(())
    }

    /// Log in as `user` at keeper `j` alone; the session's channel sends in `lane`.
    async fn login_at(&self, j: u8, user: &str, password: &[u8], lane: u32) -> Result<Slot, Fault> {
        let url = self
            .urls
            .get(usize::from(j).wrapping_sub(1))
            .ok_or_else(|| Fault::NotSent(format!("no keeper {j}")))?;
        let (login, ke1) = ClientLogin::start(password, &mut OsRng).map_err(Fault::Opaque)?;
        let user = user.to_string();
        let (id, ke2) =
            match post_keeper(&self.http, url, KeeperBody::KeeperLoginStart { user, ke1 })
                .await
                .0?
            {
                ResponseBody::KeeperLoginStarted { login, ke2 } => (login, ke2),
                _ => return Err(Fault::Unexpected("a login response")),
            };
        let context = obscura_cluster::keeper::login_context(j);
        let password = Zeroizing::new(password.to_vec());
        // Argon2id runs here: off the async workers.
        let (ke3, key) = tokio::task::spawn_blocking(move || {
            login.finish(&password, &ke2, &context, &mut OsRng)
        })
        .await
        .map_err(|_| Fault::Panicked)?
        .map_err(Fault::Opaque)?;
        match post_keeper(
            &self.http,
            url,
            KeeperBody::KeeperLoginFinish { login: id, ke3 },
        )
        .await
        .0?
        {
            ResponseBody::KeeperSession {
                session,
                expires_at,
            } => Ok(Slot {
                channel: Channel::resume(&key, session, expires_at, lane),
                key,
            }),
            _ => Err(Fault::Unexpected("a session")),
        }
    }

    /// Log in as `user` with every keeper; at least `need` must succeed. Sessions replace any
    /// held before.
    pub(crate) async fn login(
        &self,
        user: &str,
        password: &[u8],
        need: usize,
    ) -> Result<LoginReport, Error> {
        let m = self.urls.len();
        // The new sessions' lane for this process, taken before anything is sealed in it.
        let lane = self.sessions.new_lane()?;
        let mut set = PerKeeper::new();
        for j in 1..=m as u8 {
            let (link, user, password) = (
                self.clone(),
                user.to_string(),
                Zeroizing::new(password.to_vec()),
            );
            set.spawn(
                j,
                async move { link.login_at(j, &user, &password, lane).await },
            );
        }
        let mut opened = Vec::new();
        let mut failures = Vec::new();
        while let Some((j, done)) = set.next().await {
            match done {
                Ok(slot) => opened.push((j, slot)),
                Err(fault) => failures.push(KeeperFailure { keeper: j, fault }),
            }
        }
        failures.sort_by_key(|f| f.keeper);
        opened.sort_by_key(|(j, _)| *j);
        if opened.len() < need {
            return Err(Error::Keepers {
                what: "login",
                failures,
            });
        }
        let report = LoginReport {
            user: user.to_string(),
            keepers: opened.iter().map(|(j, _)| *j).collect(),
            expires_at: opened
                .iter()
                .map(|(_, s)| s.channel.expires_at())
                .min()
                .unwrap_or(0),
            failures,
        };
        self.sessions.set(user, m, opened);
        self.sessions.save(true)?;
        Ok(report)
    }

    /// End every session (at the keepers that answer) and forget them here.
    pub(crate) async fn logout(&self) -> Result<Vec<KeeperFailure>, Error> {
        let answers = self.post_all(|_| KeeperBody::KeeperLogout).await;
        let failures = answers
            .into_iter()
            .filter(|(j, _)| self.sessions.slot(*j).is_some())
            .filter_map(|(j, r)| r.err().map(|fault| KeeperFailure { keeper: j, fault }))
            .collect();
        self.sessions.clear();
        self.sessions.save(true)?;
        Ok(failures)
    }
}

/// `body` as a request to seal in a session: a fresh id, the time now, no capability.
fn inner_request(body: KeeperBody) -> Vec<u8> {
    fresh_request(body).encode()
}

/// Whether a keeper's refusal of a registration's first step says it holds the account already:
/// an admin's registration of an existing name, or a first account's where the keeper has one.
fn holds_account(fault: &Fault, first_account: bool) -> bool {
    fault.is_refusal(obscura_proto::ErrorCode::AlreadyExists)
        || (first_account && fault.is_refusal(obscura_proto::ErrorCode::NoSession))
}
