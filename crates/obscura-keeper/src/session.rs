//! Password logins at a keeper (OPAQUE, RFC 9807) and the encrypted session they open.
//!
//! A user registers with every keeper separately and logs in to each it needs, so no keeper
//! ever sees the password or anything that lets it test guesses offline (the pairwise interim
//! design; a threshold OPAQUE would also stop one keeper from testing guesses online without
//! the others seeing them). The suite is ristretto255 for the OPRF and 3DH with SHA-512, and
//! Argon2id stretches the password.
//!
//! A login ends in a 64-byte session key known to the client and that keeper only. [`Channel`]
//! turns it into one AES-256-GCM key per direction (HKDF-SHA512, salted with the session id),
//! and every message carries its sequence number; the associated data binds the session id,
//! the direction and that number.
//!
//! A request's number is a **lane** (high 32 bits) and a counter within it (low 32 bits). Each
//! process using a session takes a lane of its own ([`Channel::resume`]; the caller makes sure
//! no two processes share one), so numbers never repeat, and the keeper accepts a request only
//! above the last one it accepted in that lane, among the [`LANES`] highest lanes it has seen
//! (a lane below them is closed for good). So a replayed or older message, or one reflected
//! back to its sender or moved to another session, fails to open, while a request that was
//! lost, timed out or cut short does not stop the next one, and two commands at once do not
//! break each other's session. An answer carries its request's number, and the client opens
//! only the answer to the request it just sent. A channel refuses everything once it expired.
//! A keeper that keeps its sessions across a restart records the highest lane it has taken
//! before it answers in it, and reopens the channel above that lane ([`Channel::reopen`]), so
//! no request it opened before the restart opens again after it.
//!
//! ```
//! use obscura_keeper::session::{self, Channel, Role};
//! use rand_core::OsRng;
//!
//! let keeper = session::ServerKeys::random(&mut OsRng);
//! let user = b"alice";
//! // Registration: three messages, then the keeper stores the password file.
//! let (reg, request) = session::ClientRegistration::start(b"correct horse", &mut OsRng)?;
//! let response = keeper.registration_response(&request, user)?;
//! let upload = reg.finish(b"correct horse", &response, &mut OsRng)?;
//! let file = session::ServerKeys::password_file(&upload)?;
//! // Login: three messages, and both ends hold the same session key.
//! let (login, ke1) = session::ClientLogin::start(b"correct horse", &mut OsRng)?;
//! let (pending, ke2) = keeper.login_response(Some(&file), &ke1, user, b"keeper 1", &mut OsRng)?;
//! let (ke3, client_key) = login.finish(b"correct horse", &ke2, b"keeper 1", &mut OsRng)?;
//! let server_key = pending.finish(&ke3, b"keeper 1")?;
//! let id = [7; 16];
//! let mut client = Channel::new(&client_key, id, Role::Client, u64::MAX);
//! let mut server = Channel::new(&server_key, id, Role::Server, u64::MAX);
//! let sealed = client.seal(b"evaluate these", 0)?;
//! assert_eq!(server.open(&sealed, 0)?, b"evaluate these");
//! assert!(server.open(&sealed, 0).is_err()); // a replay
//! # Ok::<(), obscura_keeper::session::SessionError>(())
//! ```

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use std::marker::PhantomData;

use opaque_ke::argon2::Argon2;
use opaque_ke::ksf::Ksf;
use opaque_ke::{
    ClientLoginFinishParameters, ClientRegistrationFinishParameters, CredentialFinalization,
    CredentialRequest, CredentialResponse, Identifiers, RegistrationRequest, RegistrationResponse,
    RegistrationUpload, ServerLoginParameters, ServerRegistration, ServerSetup,
};
use rand_core::{CryptoRng, RngCore};
use zeroize::{Zeroize, Zeroizing};

/// The OPAQUE suite with key-stretching function `K`: ristretto255 for the OPRF, 3DH with
/// SHA-512. The keepers use [`Suite`] (Argon2id); only the RFC 9807 test vectors, which use the
/// identity function, need another `K`. The stretching runs at the client only, so the
/// messages and the keeper's side are the same for every `K`.
pub struct SuiteWith<K>(PhantomData<K>);

impl<K: Ksf> opaque_ke::CipherSuite for SuiteWith<K> {
    type OprfCs = opaque_ke::Ristretto255;
    type KeyExchange = opaque_ke::TripleDh<opaque_ke::Ristretto255, sha2::Sha512>;
    type Ksf = K;
}

/// The keepers' OPAQUE suite: ristretto255, 3DH with SHA-512, Argon2id.
pub type Suite = SuiteWith<Argon2<'static>>;

/// A keeper's OPAQUE keys: its 3DH key pair and OPRF seed. Secret; sealed with the keeper's
/// other secrets.
pub type ServerKeys = ServerKeysWith<Argon2<'static>>;
/// A keeper's side of a login between KE2 and KE3.
pub type PendingLogin = PendingLoginWith<Argon2<'static>>;
/// A client's registration between its two messages.
pub type ClientRegistration = ClientRegistrationWith<Argon2<'static>>;
/// A client's login between KE1 and KE3.
pub type ClientLogin = ClientLoginWith<Argon2<'static>>;

/// Length of a session key.
pub const SESSION_KEY_LEN: usize = 64;

/// Why a registration, login or session message failed. Deliberately coarse: a login that
/// fails says only that, whatever the reason, so it is no oracle.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// A protocol message does not parse.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// The login failed: a wrong password, an unknown user or a changed message.
    #[error("login failed")]
    LoginFailed,
    /// A registration step failed.
    #[error("registration failed")]
    RegistrationFailed,
    /// A session message failed to open: altered, replayed, reordered, reflected or from
    /// another session.
    #[error("session message refused")]
    Refused,
    /// The session expired.
    #[error("session expired")]
    Expired,
}

/// [`ServerKeys`] for the suite with key-stretching function `K`.
pub struct ServerKeysWith<K: Ksf>(ServerSetup<SuiteWith<K>>);

impl<K: Ksf> ServerKeysWith<K> {
    /// Fresh keys.
    pub fn random<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        Self(ServerSetup::new(rng))
    }

    /// The stored form.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.0.serialize().to_vec())
    }

    /// From the stored form: the OPRF seed (64 bytes), the 3DH private key (32) and the
    /// public key that answers for unknown users (32).
    ///
    /// # Errors
    /// [`SessionError::Malformed`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SessionError> {
        exact(ServerSetup::deserialize(bytes), bytes, |m| {
            m.serialize().len()
        })
        .map(Self)
        .map_err(|_| SessionError::Malformed("server keys"))
    }

    /// The password file a keeper stores for a user, from the client's last registration
    /// message.
    ///
    /// # Errors
    /// [`SessionError::Malformed`].
    pub fn password_file(upload: &[u8]) -> Result<Vec<u8>, SessionError> {
        let upload = exact(
            RegistrationUpload::<SuiteWith<K>>::deserialize(upload),
            upload,
            |m| m.serialize().len(),
        )
        .map_err(|_| SessionError::Malformed("registration upload"))?;
        Ok(ServerRegistration::finish(upload).serialize().to_vec())
    }

    /// Registration, second message: evaluate the client's blinded password for `user`.
    ///
    /// # Errors
    /// [`SessionError::Malformed`], [`SessionError::RegistrationFailed`].
    pub fn registration_response(
        &self,
        request: &[u8],
        user: &[u8],
    ) -> Result<Vec<u8>, SessionError> {
        let request = exact(
            RegistrationRequest::<SuiteWith<K>>::deserialize(request),
            request,
            |m| m.serialize().len(),
        )
        .map_err(|_| SessionError::Malformed("registration request"))?;
        let start = ServerRegistration::<SuiteWith<K>>::start(&self.0, request, user)
            .map_err(|_| SessionError::RegistrationFailed)?;
        Ok(start.message.serialize().to_vec())
    }

    /// Login, second message (KE2) for `user`, whose password file is `file` (`None` for a user
    /// this keeper does not know: the answer then looks the same, and the login fails at the
    /// client as for a wrong password). `context` binds the keeper's identity.
    ///
    /// # Errors
    /// [`SessionError::Malformed`] for a bad KE1 or password file.
    pub fn login_response<R: RngCore + CryptoRng>(
        &self,
        file: Option<&[u8]>,
        ke1: &[u8],
        user: &[u8],
        context: &[u8],
        rng: &mut R,
    ) -> Result<(PendingLoginWith<K>, Vec<u8>), SessionError> {
        let file = file
            .map(|f| {
                exact(ServerRegistration::<SuiteWith<K>>::deserialize(f), f, |m| {
                    m.serialize().len()
                })
            })
            .transpose()
            .map_err(|_| SessionError::Malformed("password file"))?;
        let ke1 = exact(
            CredentialRequest::<SuiteWith<K>>::deserialize(ke1),
            ke1,
            |m| m.serialize().len(),
        )
        .map_err(|_| SessionError::Malformed("KE1"))?;
        let params = ServerLoginParameters {
            context: Some(context),
            identifiers: Identifiers::default(),
        };
        let start = opaque_ke::ServerLogin::start(rng, &self.0, file, ke1, user, params)
            .map_err(|_| SessionError::LoginFailed)?;
        Ok((
            PendingLoginWith(start.state),
            start.message.serialize().to_vec(),
        ))
    }
}

/// [`PendingLogin`] for the suite with key-stretching function `K`.
pub struct PendingLoginWith<K: Ksf>(opaque_ke::ServerLogin<SuiteWith<K>>);

impl<K: Ksf> PendingLoginWith<K> {
    /// Login, last message (KE3): the client proved it knows the password; returns the
    /// session key.
    ///
    /// # Errors
    /// [`SessionError::LoginFailed`].
    pub fn finish(
        self,
        ke3: &[u8],
        context: &[u8],
    ) -> Result<Zeroizing<[u8; SESSION_KEY_LEN]>, SessionError> {
        let ke3 = exact(
            CredentialFinalization::<SuiteWith<K>>::deserialize(ke3),
            ke3,
            |m| m.serialize().len(),
        )
        .map_err(|_| SessionError::LoginFailed)?;
        let params = ServerLoginParameters {
            context: Some(context),
            identifiers: Identifiers::default(),
        };
        let done = self
            .0
            .finish(ke3, params)
            .map_err(|_| SessionError::LoginFailed)?;
        Ok(key_of(&done.session_key))
    }
}

/// `parsed` only if it is all of `bytes`: opaque-ke's deserializers read the fields a message
/// has and ignore whatever follows, so every message would have endless encodings (a genuine
/// KE3 with bytes appended finished a login; found by fuzzing).
fn exact<T, E>(
    parsed: Result<T, E>,
    bytes: &[u8],
    encoded_len: impl FnOnce(&T) -> usize,
) -> Result<T, ()> {
    match parsed {
        Ok(message) if encoded_len(&message) == bytes.len() => Ok(message),
        _ => Err(()),
    }
}

fn key_of(bytes: &[u8]) -> Zeroizing<[u8; SESSION_KEY_LEN]> {
    let mut key = Zeroizing::new([0u8; SESSION_KEY_LEN]);
    key.copy_from_slice(bytes);
    key
}

/// [`ClientRegistration`] for the suite with key-stretching function `K`.
pub struct ClientRegistrationWith<K: Ksf>(opaque_ke::ClientRegistration<SuiteWith<K>>);

impl<K: Ksf> ClientRegistrationWith<K> {
    /// Registration, first message: the blinded password.
    ///
    /// # Errors
    /// [`SessionError::RegistrationFailed`].
    pub fn start<R: RngCore + CryptoRng>(
        password: &[u8],
        rng: &mut R,
    ) -> Result<(Self, Vec<u8>), SessionError> {
        let start = opaque_ke::ClientRegistration::<SuiteWith<K>>::start(rng, password)
            .map_err(|_| SessionError::RegistrationFailed)?;
        Ok((Self(start.state), start.message.serialize().to_vec()))
    }

    /// Registration, last message: the envelope the keeper stores.
    ///
    /// # Errors
    /// [`SessionError::Malformed`], [`SessionError::RegistrationFailed`].
    pub fn finish<R: RngCore + CryptoRng>(
        self,
        password: &[u8],
        response: &[u8],
        rng: &mut R,
    ) -> Result<Vec<u8>, SessionError> {
        let response = exact(
            RegistrationResponse::<SuiteWith<K>>::deserialize(response),
            response,
            |m| m.serialize().len(),
        )
        .map_err(|_| SessionError::Malformed("registration response"))?;
        let done = self
            .0
            .finish(
                rng,
                password,
                response,
                ClientRegistrationFinishParameters::default(),
            )
            .map_err(|_| SessionError::RegistrationFailed)?;
        Ok(done.message.serialize().to_vec())
    }
}

/// [`ClientLogin`] for the suite with key-stretching function `K`.
pub struct ClientLoginWith<K: Ksf>(opaque_ke::ClientLogin<SuiteWith<K>>);

impl<K: Ksf> ClientLoginWith<K> {
    /// Login, first message (KE1).
    ///
    /// # Errors
    /// [`SessionError::LoginFailed`].
    pub fn start<R: RngCore + CryptoRng>(
        password: &[u8],
        rng: &mut R,
    ) -> Result<(Self, Vec<u8>), SessionError> {
        let start = opaque_ke::ClientLogin::<SuiteWith<K>>::start(rng, password)
            .map_err(|_| SessionError::LoginFailed)?;
        Ok((Self(start.state), start.message.serialize().to_vec()))
    }

    /// Login, last message (KE3) and the session key, if the password opens the envelope and
    /// the keeper proved it holds the key the envelope names.
    ///
    /// # Errors
    /// [`SessionError::LoginFailed`] for a wrong password, an unknown user or an altered KE2.
    pub fn finish<R: RngCore + CryptoRng>(
        self,
        password: &[u8],
        ke2: &[u8],
        context: &[u8],
        rng: &mut R,
    ) -> Result<(Vec<u8>, Zeroizing<[u8; SESSION_KEY_LEN]>), SessionError> {
        let ke2 = exact(
            CredentialResponse::<SuiteWith<K>>::deserialize(ke2),
            ke2,
            |m| m.serialize().len(),
        )
        .map_err(|_| SessionError::LoginFailed)?;
        let params = ClientLoginFinishParameters::new(Some(context), Identifiers::default(), None);
        let done = self
            .0
            .finish(rng, password, ke2, params)
            .map_err(|_| SessionError::LoginFailed)?;
        Ok((done.message.serialize().to_vec(), key_of(&done.session_key)))
    }
}

/// Which end of a session this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The user's end.
    Client,
    /// The keeper's end.
    Server,
}

const TO_SERVER: u8 = 1;
const TO_CLIENT: u8 = 2;

/// Lanes a keeper tracks per session: the highest ones seen; a request in a lower lane is
/// refused (its process moves to a fresh lane).
pub const LANES: usize = 64;

/// One end of an encrypted session: a key per direction, and where the sequence numbers stand.
pub struct Channel {
    id: [u8; 16],
    send: Aes256Gcm,
    recv: Aes256Gcm,
    send_dir: u8,
    recv_dir: u8,
    state: Numbers,
    expires_at: u64,
}

/// Sequence numbers: a client's next request and the one awaiting its answer; a keeper's next
/// counter per lane, the lowest lane it still takes, and the request it has to answer.
enum Numbers {
    Client {
        next: u64,
        awaiting: Option<u64>,
    },
    Server {
        lanes: std::collections::BTreeMap<u32, u32>,
        floor: u32,
        answering: Option<u64>,
    },
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Channel");
        match &self.state {
            Numbers::Client { next, .. } => d.field("lane", &(next >> 32)),
            Numbers::Server { lanes, .. } => d.field("lanes", &lanes.len()),
        };
        d.finish_non_exhaustive()
    }
}

/// Header of a sealed message: the sequence number.
const HEADER: usize = 8;

impl Channel {
    /// The channel of session `id` from its key, for `role`, usable until Unix time
    /// `expires_at`.
    pub fn new(
        session_key: &[u8; SESSION_KEY_LEN],
        id: [u8; 16],
        role: Role,
        expires_at: u64,
    ) -> Channel {
        let hk = hkdf::Hkdf::<sha2::Sha512>::new(Some(&id), session_key);
        let key = |dir: u8| {
            let mut k = Zeroizing::new([0u8; 32]);
            hk.expand(
                &[b"obscura session v1 key ".as_slice(), &[dir]].concat(),
                &mut *k,
            )
            .expect("32 bytes is a valid HKDF-SHA512 length");
            Aes256Gcm::new_from_slice(&*k).expect("32-byte key")
        };
        let (send_dir, recv_dir) = match role {
            Role::Client => (TO_SERVER, TO_CLIENT),
            Role::Server => (TO_CLIENT, TO_SERVER),
        };
        let state = match role {
            Role::Client => Numbers::Client {
                next: 0,
                awaiting: None,
            },
            Role::Server => Numbers::Server {
                lanes: std::collections::BTreeMap::new(),
                floor: 0,
                answering: None,
            },
        };
        Channel {
            id,
            send: key(send_dir),
            recv: key(recv_dir),
            send_dir,
            recv_dir,
            state,
            expires_at,
        }
    }

    /// A client's channel of a session already in use, sending in `lane`, for a client that
    /// keeps its session in a file between commands. The caller makes sure no other process
    /// ever sends in that lane: a number sealed twice under one key would repeat an AES-GCM
    /// nonce.
    pub fn resume(
        session_key: &[u8; SESSION_KEY_LEN],
        id: [u8; 16],
        expires_at: u64,
        lane: u32,
    ) -> Channel {
        let mut c = Channel::new(session_key, id, Role::Client, expires_at);
        c.state = Numbers::Client {
            next: u64::from(lane) << 32,
            awaiting: None,
        };
        c
    }

    /// A keeper's channel of a session it kept across a restart, taking requests only in lanes
    /// from `floor` up. The keeper recorded the highest lane it had taken before answering in
    /// it, and passes the lane above: a request it opened before the restart is then refused,
    /// like any older lane's (the client moves on to a fresh lane).
    pub fn reopen(
        session_key: &[u8; SESSION_KEY_LEN],
        id: [u8; 16],
        expires_at: u64,
        floor: u32,
    ) -> Channel {
        let mut c = Channel::new(session_key, id, Role::Server, expires_at);
        c.state = Numbers::Server {
            lanes: std::collections::BTreeMap::new(),
            floor,
            answering: None,
        };
        c
    }

    /// The lane a sealed message claims, read from its header before anything is checked.
    pub fn lane_of(sealed: &[u8]) -> Option<u32> {
        let seq = u64::from_be_bytes(sealed.get(..HEADER)?.try_into().ok()?);
        Some((seq >> 32) as u32)
    }

    /// At a keeper, the lane of the request it opened and has yet to answer.
    pub fn answering_lane(&self) -> Option<u32> {
        match self.state {
            Numbers::Server { answering, .. } => answering.map(|seq| (seq >> 32) as u32),
            Numbers::Client { .. } => None,
        }
    }

    /// The lane a client's channel sends in (a keeper's: `None`).
    pub fn lane(&self) -> Option<u32> {
        match self.state {
            Numbers::Client { next, .. } => Some((next >> 32) as u32),
            Numbers::Server { .. } => None,
        }
    }

    /// The session id.
    pub fn id(&self) -> [u8; 16] {
        self.id
    }

    /// When it expires (Unix seconds).
    pub fn expires_at(&self) -> u64 {
        self.expires_at
    }

    fn aad(&self, dir: u8, seq: u64) -> Vec<u8> {
        let mut aad = b"obscura/session/v1".to_vec();
        aad.extend_from_slice(&self.id);
        aad.push(dir);
        aad.extend_from_slice(&seq.to_be_bytes());
        aad
    }

    fn nonce(dir: u8, seq: u64) -> [u8; 12] {
        let mut n = [0u8; 12];
        n[3] = dir;
        n[4..].copy_from_slice(&seq.to_be_bytes());
        n
    }

    /// Encrypt a message to the other end: a client's next request (which then awaits its
    /// answer), or a keeper's answer to the request it opened last.
    ///
    /// # Errors
    /// [`SessionError::Expired`] at or after the expiry time, or when the lane's numbers are
    /// spent; [`SessionError::Refused`] for a keeper with no request to answer.
    pub fn seal(&mut self, plaintext: &[u8], now: u64) -> Result<Vec<u8>, SessionError> {
        if now >= self.expires_at {
            return Err(SessionError::Expired);
        }
        let seq = match &mut self.state {
            Numbers::Client { next, awaiting } => {
                if *next & 0xffff_ffff == 0xffff_ffff {
                    return Err(SessionError::Expired);
                }
                let seq = *next;
                *next += 1;
                *awaiting = Some(seq);
                seq
            }
            Numbers::Server { answering, .. } => answering.take().ok_or(SessionError::Refused)?,
        };
        let ct = self
            .send
            .encrypt(
                Nonce::from_slice(&Self::nonce(self.send_dir, seq)),
                Payload {
                    msg: plaintext,
                    aad: &self.aad(self.send_dir, seq),
                },
            )
            .map_err(|_| SessionError::Refused)?;
        let mut out = Vec::with_capacity(HEADER + ct.len());
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Decrypt a message from the other end: at a keeper, a request above the last one its lane
    /// accepted; at a client, the answer to the request it sealed last.
    ///
    /// # Errors
    /// [`SessionError::Refused`] for anything altered, replayed, older than its lane's last
    /// request, in a lane too old, reflected, from another session, or an answer to another
    /// request; [`SessionError::Expired`] at or after the expiry time.
    pub fn open(&mut self, sealed: &[u8], now: u64) -> Result<Vec<u8>, SessionError> {
        if now >= self.expires_at {
            return Err(SessionError::Expired);
        }
        if sealed.len() < HEADER {
            return Err(SessionError::Refused);
        }
        let seq = u64::from_be_bytes(sealed[..HEADER].try_into().expect("8 bytes"));
        let (lane, counter) = ((seq >> 32) as u32, seq as u32);
        let fresh = match &self.state {
            Numbers::Client { awaiting, .. } => *awaiting == Some(seq),
            Numbers::Server { lanes, floor, .. } => {
                lane >= *floor
                    && counter < u32::MAX
                    && lanes.get(&lane).is_none_or(|&next| counter >= next)
            }
        };
        if !fresh {
            return Err(SessionError::Refused);
        }
        let plain = self
            .recv
            .decrypt(
                Nonce::from_slice(&Self::nonce(self.recv_dir, seq)),
                Payload {
                    msg: &sealed[HEADER..],
                    aad: &self.aad(self.recv_dir, seq),
                },
            )
            .map_err(|_| SessionError::Refused)?;
        match &mut self.state {
            Numbers::Client { awaiting, .. } => *awaiting = None,
            Numbers::Server {
                lanes,
                floor,
                answering,
            } => {
                lanes.insert(lane, counter.saturating_add(1));
                // Only the newest lanes are kept; every older one is closed for good.
                while lanes.len() > LANES {
                    if let Some((oldest, _)) = lanes.pop_first() {
                        *floor = (*floor).max(oldest.saturating_add(1));
                    }
                }
                *answering = Some(seq);
            }
        }
        Ok(plain)
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        self.id.zeroize();
    }
}
