//! A client as a member of the cluster's group ([`obscura_group`]): its state on disk, the
//! ledger read in order to follow the group, and the data owner's acts on it (add and remove
//! members, seal image labels into the ledger).
//!
//! A member's state (its keys, the group's epoch secrets, and the labels it opened) is one file
//! readable only by its user: `OBSCURA_GROUP`, else `DIR/client/group.json`. The data owner's
//! client creates the group the first time it seals or adds; every other member starts with a
//! KeyPackage ([`start`]) and joins by the Welcome the owner enters in the ledger.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use obscura_group::{Admitted, Candidate, GroupError, Member, Received};
use obscura_ledger::entry::Transition;
use serde::{Deserialize, Serialize};

use crate::ledger::{self, Appended, LedgerError};
use crate::Client;

/// The data owner's identity in the group.
pub const OWNER: &str = "client:owner";

/// The longest label, in bytes.
pub const MAX_LABEL: usize = 200;

/// Format of the state file.
const VERSION: u8 = 1;

/// How long a command waits for another working on the same member's state.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Why a group operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GroupFault {
    /// The group itself.
    #[error(transparent)]
    Group(#[from] GroupError),
    /// The ledger.
    #[error("ledger: {0}")]
    Ledger(#[from] LedgerError),
    /// The state file.
    #[error(transparent)]
    File(#[from] obscura_cluster::Error),
    /// This client is no member (no state file).
    #[error("{0}: no group state: this client is not a member (`obscura ledger key-package` starts one)")]
    NoState(String),
    /// A state file already there.
    #[error("{0} exists: this client is a member already, as {1}")]
    Exists(String, String),
    /// A label that is too long or not printable.
    #[error("a label is 1 to {MAX_LABEL} bytes of printable text")]
    Label,
}

/// Refuses a state path that is a symbolic link: the lock is taken beside the name, and a
/// replacement renames over it, so a link would leave two states that each seal with the same
/// message keys.
fn not_a_link(path: &Path) -> Result<(), GroupFault> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err(obscura_cluster::Error::File {
            path: path.display().to_string(),
            reason: "a symbolic link: give the group state's own path".into(),
        }
        .into()),
        _ => Ok(()),
    }
}

/// Where this client's group state is.
pub fn state_path(dir: &Path) -> PathBuf {
    std::env::var_os("OBSCURA_GROUP")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join("client").join("group.json"))
}

/// `POST /v1/group/key-package` to a worker: the owner's challenge, signed by the data owner
/// so that nobody else makes a worker spend evidence or replace the KeyPackage it holds.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyPackageRequest {
    /// The worker asked (`worker:NAME`): a request for one worker is refused by any other.
    pub identity: String,
    /// 32 bytes, hex.
    pub nonce: String,
    /// When the owner asked (Unix seconds): a worker takes a request for two minutes, once.
    pub issued_at: u64,
    /// The owner's Ed25519 signature over [`key_package_statement`], hex.
    pub signature: String,
}

/// What the owner signs to ask the worker `identity` of ledger `log` for a KeyPackage.
pub fn key_package_statement(
    log: &[u8; 32],
    identity: &str,
    nonce: &[u8; 32],
    issued_at: u64,
) -> Vec<u8> {
    let mut m = b"obscura group key-package request v2".to_vec();
    m.extend_from_slice(log);
    m.extend_from_slice(&(identity.len() as u16).to_be_bytes());
    m.extend_from_slice(identity.as_bytes());
    m.extend_from_slice(nonce);
    m.extend_from_slice(&issued_at.to_be_bytes());
    m
}

/// A worker's answer to `POST /v1/group/identity`.
#[derive(Serialize, Deserialize)]
pub struct WorkerIdentity {
    /// `worker:NAME`.
    pub identity: String,
}

/// A worker's answer to [`KeyPackageRequest`].
#[derive(Serialize, Deserialize)]
pub struct KeyPackageAnswer {
    /// The KeyPackage (`MLSMessage`), hex.
    pub key_package: String,
}

/// `POST /v1/group/entries` to a worker: ledger entries under a head a majority of nodes
/// cosigned, each with its inclusion proof, so that a worker follows only the history the
/// ledger took (not an owner-signed entry of an append that failed).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entries {
    /// The head.
    pub head: obscura_ledger::head::CosignedHead,
    /// In ledger order.
    pub entries: Vec<RelayedEntry>,
}

/// One entry relayed to a worker.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayedEntry {
    /// The entry (postcard), hex.
    pub entry: String,
    /// The tree head before it, which the author's signature binds, hex.
    pub prev: String,
    /// Its inclusion proof in [`Entries::head`], hex hashes.
    pub proof: Vec<String>,
}

/// A worker's answer to [`Entries`].
#[derive(Debug, Serialize, Deserialize)]
pub struct WorkerFollowed {
    /// The group's epoch, if this worker is in it.
    pub epoch: Option<u64>,
    /// Whether it joined with these entries.
    pub joined: bool,
    /// Whether it was removed.
    pub removed: bool,
    /// Sealed messages opened.
    pub opened: usize,
}

/// What a sealed message carries.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Sealed {
    /// Image id (hex) → label.
    labels: BTreeMap<String, String>,
}

/// The state file's contents, sealed under the client's wrapping key.
#[derive(Serialize, Deserialize)]
pub struct Saved {
    version: u8,
    /// The next ledger entry to read.
    cursor: u64,
    labels: BTreeMap<String, String>,
    /// Entries it could not open (sealed before it joined, or after it was removed).
    unreadable: u64,
    /// The owner's change staged and sent to the ledger, not yet known to be taken.
    pending: Option<Pending>,
    /// Messages the owner sealed in the current epoch (each used a message key), whether or
    /// not the ledger took them: never fewer than the ledger holds, so a state restored from an
    /// old copy shows fewer and is refused before it seals again.
    sealed: u64,
    /// [`Member::to_bytes`].
    member: Vec<u8>,
}

impl Saved {
    /// The epoch of the owner's change sent to the ledger and not yet settled, if any.
    pub fn pending(&self) -> Option<u64> {
        self.pending.as_ref().map(|p| p.epoch)
    }

    /// A member's state as it starts: nothing read yet, nothing pending.
    pub fn new(member: &Member) -> Saved {
        Saved {
            version: VERSION,
            cursor: 0,
            labels: BTreeMap::new(),
            unreadable: 0,
            pending: None,
            sealed: 0,
            member: member.to_bytes(),
        }
    }
}

/// Seals a member's state under the client's wrapping key, as [`open_state`] opens it.
///
/// # Errors
/// [`GroupFault::File`].
pub fn seal_state(
    saved: &Saved,
    key: &obscura_tokens::keyfile::WrappingKey,
) -> Result<Vec<u8>, GroupFault> {
    Ok(obscura_cluster::files::seal_secrets(
        saved,
        STATE_PURPOSE,
        key,
        &mut rand_core::OsRng,
    )?)
}

/// The purpose a member's state is sealed for.
const STATE_PURPOSE: &str = "group-state";

/// Opens a member's state file: AES-256-GCM under the client's wrapping key, so that a damaged
/// or altered file is refused before any of it is parsed (the MLS library's own store trusts
/// what it is given), then the member within.
///
/// # Errors
/// [`GroupFault::File`] for a file that does not open, [`GroupError::State`] for a state that
/// does not load.
pub fn open_state(
    bytes: &[u8],
    key: &obscura_tokens::keyfile::WrappingKey,
) -> Result<(Saved, Member), GroupFault> {
    let saved: Saved = obscura_cluster::files::open_secrets(bytes, STATE_PURPOSE, key)?;
    if saved.version != VERSION {
        return Err(GroupError::State(format!("format {}", saved.version)).into());
    }
    let member = Member::from_bytes(&saved.member)?;
    Ok((saved, member))
}

/// The client's wrapping key, which seals its group state.
fn state_key(dir: &Path) -> Result<obscura_tokens::keyfile::WrappingKey, GroupFault> {
    let fail = |e: crate::config::LoadError| {
        GroupFault::File(obscura_cluster::Error::Secrets(e.to_string()))
    };
    let config = crate::config::read_config(dir).map_err(fail)?;
    crate::config::wrapping_key(dir, &config).map_err(fail)
}

/// A change the owner sent to the ledger: its epoch and Commit (hex).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Pending {
    epoch: u64,
    commit: String,
}

/// A member's state, held under a lock beside its file: two commands of one member never
/// work on it at once (each would seal with the same message key).
pub struct Group {
    path: PathBuf,
    key: obscura_tokens::keyfile::WrappingKey,
    _held: obscura_cluster::files::FileLock,
    /// The member.
    pub member: Member,
    /// The next ledger entry to read.
    pub cursor: u64,
    /// The labels it opened (or, for the owner, sealed), by image id (hex).
    pub labels: BTreeMap<String, String>,
    /// Sealed entries it could not open.
    pub unreadable: u64,
    pending: Option<Pending>,
    sealed: u64,
}

impl Group {
    /// Loads this client's state, if it has one.
    ///
    /// # Errors
    /// [`GroupFault::File`] or a state that does not load.
    pub fn load(dir: &Path) -> Result<Option<Group>, GroupFault> {
        Group::load_from(dir, &state_path(dir))
    }

    /// Loads the state in `path` of a client of the cluster in `dir`, if there is one.
    ///
    /// # Errors
    /// As [`Group::load`].
    pub fn load_from(dir: &Path, path: &Path) -> Result<Option<Group>, GroupFault> {
        let path = path.to_path_buf();
        not_a_link(&path)?;
        if !path.exists() {
            return Ok(None);
        }
        let held = obscura_cluster::files::lock_beside(&path, LOCK_WAIT)?;
        obscura_cluster::files::check_private(&path)?;
        let bytes = obscura_cluster::files::read(&path)?;
        let key = state_key(dir)?;
        let (saved, member) = open_state(&bytes, &key)
            .map_err(|e| GroupError::State(format!("{}: {e}", path.display())))?;
        Ok(Some(Group {
            key,
            member,
            cursor: saved.cursor,
            labels: saved.labels,
            unreadable: saved.unreadable,
            pending: saved.pending,
            sealed: saved.sealed,
            path,
            _held: held,
        }))
    }

    /// Writes it (readable only by this user), replacing the file whole.
    ///
    /// # Errors
    /// [`GroupFault::File`].
    pub fn save(&self) -> Result<(), GroupFault> {
        let saved = Saved {
            version: VERSION,
            cursor: self.cursor,
            labels: self.labels.clone(),
            unreadable: self.unreadable,
            pending: self.pending.clone(),
            sealed: self.sealed,
            member: self.member.to_bytes(),
        };
        obscura_cluster::files::write_private_atomic(&self.path, &seal_state(&saved, &self.key)?)?;
        Ok(())
    }

    /// The data owner's group: loaded, or created (alone in it, epoch 0) the first time.
    ///
    /// # Errors
    /// As [`Group::load`]; a state of another identity.
    pub fn owner(dir: &Path) -> Result<Group, GroupFault> {
        if let Some(g) = Group::load(dir)? {
            if g.member.identity() != OWNER {
                return Err(GroupFault::Exists(
                    g.path.display().to_string(),
                    g.member.identity().into(),
                ));
            }
            return Ok(g);
        }
        let path = state_path(dir);
        not_a_link(&path)?;
        let held = obscura_cluster::files::lock_beside(&path, LOCK_WAIT)?;
        if path.exists() {
            // Made meanwhile by another command.
            drop(held);
            return Group::owner(dir);
        }
        let mut member = Member::new(OWNER)?;
        member.create()?;
        let g = Group::fresh(path, state_key(dir)?, held, member);
        g.save()?;
        Ok(g)
    }

    /// A member's state as it starts: nothing read yet.
    fn fresh(
        path: PathBuf,
        key: obscura_tokens::keyfile::WrappingKey,
        held: obscura_cluster::files::FileLock,
        member: Member,
    ) -> Group {
        Group {
            path,
            key,
            _held: held,
            member,
            cursor: 0,
            labels: BTreeMap::new(),
            unreadable: 0,
            pending: None,
            sealed: 0,
        }
    }
}

/// Starts a member `identity` (`client:NAME`): its state file, and the KeyPackage the data
/// owner adds it by (`obscura ledger add-member`).
///
/// # Errors
/// [`GroupFault::Exists`] when this client has a state already.
pub fn start(dir: &Path, identity: &str) -> Result<Vec<u8>, GroupFault> {
    start_at(dir, &state_path(dir), identity)
}

/// [`start`], with the state in `path`.
///
/// # Errors
/// As [`start`].
pub fn start_at(dir: &Path, path: &Path, identity: &str) -> Result<Vec<u8>, GroupFault> {
    if let Some(g) = Group::load_from(dir, path)? {
        return Err(GroupFault::Exists(
            g.path.display().to_string(),
            g.member.identity().into(),
        ));
    }
    not_a_link(path)?;
    let held = obscura_cluster::files::lock_beside(path, LOCK_WAIT)?;
    if path.exists() {
        return Err(GroupFault::Exists(path.display().to_string(), "?".into()));
    }
    let mut member = Member::new(identity)?;
    let key_package = member.key_package(None)?;
    Group::fresh(path.to_path_buf(), state_key(dir)?, held, member).save()?;
    Ok(key_package)
}

/// What following the ledger did.
#[derive(Debug, Default)]
pub struct Followed {
    /// Group entries read.
    pub read: u64,
    /// Labels opened.
    pub opened: usize,
    /// Sealed entries not opened.
    pub unreadable: u64,
}

/// Reads the ledger from where this member stopped (verified: every signature, rule and the
/// nodes' cosigned heads) and follows the group: joins on its Welcome, moves on each commit,
/// opens each sealed message it can.
///
/// # Errors
/// [`GroupFault`]; what it read up to a failure is kept.
pub async fn follow(
    dir: &Path,
    client: &Client,
    group: &mut Group,
) -> Result<Followed, GroupFault> {
    // The owner's change of unclear outcome first: its own commit is not to be met unmerged.
    settle(dir, client, group).await?;
    let verified = ledger::verify(dir, client, &[]).await?;
    let mut followed = Followed::default();
    let from = usize::try_from(group.cursor).unwrap_or(usize::MAX);
    for entry in verified.entries.iter().skip(from) {
        let outcome = match &entry.transition {
            Transition::GroupCommit {
                epoch,
                commit,
                welcome,
            } => {
                followed.read += 1;
                // The owner merged its own commits when the ledger took them.
                if group.member.epoch().is_some_and(|e| e >= *epoch) {
                    None
                } else {
                    Some(group.member.receive(commit, welcome.as_deref()))
                }
            }
            Transition::Sealed { message, .. } => {
                followed.read += 1;
                // The owner sealed them, and kept what it sealed.
                (group.member.identity() != OWNER).then(|| group.member.receive(message, None))
            }
            _ => None,
        };
        match outcome {
            Some(Ok(Received::Opened(bytes))) => match serde_json::from_slice::<Sealed>(&bytes) {
                Ok(sealed) => {
                    // Checked here too: what a member shows is what the rule allows.
                    let good: BTreeMap<String, String> = sealed
                        .labels
                        .into_iter()
                        .filter(|(id, l)| id.len() == 32 && check_label(l).is_ok())
                        .collect();
                    followed.opened += good.len();
                    group.labels.extend(good);
                }
                Err(_) => followed.unreadable += 1,
            },
            Some(Ok(Received::Removed)) => {}
            // One of its own commits it never merged: its state is behind the ledger.
            Some(Ok(Received::Own))
                if matches!(entry.transition, Transition::GroupCommit { .. }) =>
            {
                group.cursor = entry.seq;
                group.save()?;
                return Err(GroupError::State(format!(
                    "entry {} is this member's own commit into an epoch past its state's {}: \
                     the state is behind the ledger (restored from an old copy?) and cannot \
                     go on",
                    entry.seq,
                    group.member.epoch().unwrap_or_default()
                ))
                .into());
            }
            Some(Ok(_)) | None => {}
            // Sealed before it joined, after it was removed, or an owner's message of an
            // epoch past: not for it. A sealed message that does not parse is the owner's
            // fault, and only that entry is lost.
            Some(Err(GroupError::Undecryptable(_))) => followed.unreadable += 1,
            Some(Err(GroupError::Malformed(_)))
                if matches!(entry.transition, Transition::Sealed { .. }) =>
            {
                followed.unreadable += 1
            }
            Some(Err(e)) => {
                group.cursor = entry.seq;
                group.save()?;
                return Err(e.into());
            }
        }
        group.cursor = entry.seq + 1;
    }
    group.unreadable += followed.unreadable;
    group.save()?;
    Ok(followed)
}

/// Checks a label.
///
/// # Errors
/// [`GroupFault::Label`].
pub fn check_label(label: &str) -> Result<(), GroupFault> {
    // Control characters, and the invisible ones that reorder or hide text on a terminal.
    let hidden = |c: char| {
        c.is_control()
            || matches!(
                c,
                '\u{ad}'
                    | '\u{61c}'
                    | '\u{180e}'
                    | '\u{200b}'..='\u{200f}'
                    | '\u{2028}'..='\u{202e}'
                    | '\u{2060}'..='\u{206f}'
                    | '\u{fe00}'..='\u{fe0f}'
                    | '\u{feff}'
                    | '\u{fff9}'..='\u{fffb}'
                    | '\u{e0000}'..='\u{e0fff}'
            )
    };
    if label.is_empty() || label.len() > MAX_LABEL || label.chars().any(hidden) {
        return Err(GroupFault::Label);
    }
    Ok(())
}

/// Labels sealed in one message: 512 of 200 bytes stay well under the ledger's bound on a
/// group message.
const LABELS_PER_MESSAGE: usize = 512;

/// Seals `labels` (image id hex → label) under the owner's group's current epoch, as the
/// transitions to enter in the ledger (one per [`LABELS_PER_MESSAGE`] labels). The member state
/// is saved before it returns, so that no message key is ever used twice, whatever becomes of
/// the entries; [`keep`] records the labels once the ledger took them.
///
/// # Errors
/// [`GroupFault`].
pub fn seal_labels(
    group: &mut Group,
    labels: &BTreeMap<String, String>,
) -> Result<Vec<Transition>, GroupFault> {
    for label in labels.values() {
        check_label(label)?;
    }
    let all: Vec<(&String, &String)> = labels.iter().collect();
    let mut out = Vec::new();
    for part in all.chunks(LABELS_PER_MESSAGE) {
        let plaintext = serde_json::to_vec(&Sealed {
            labels: part
                .iter()
                .map(|(id, l)| ((*id).clone(), (*l).clone()))
                .collect(),
        })
        .expect("labels serialise");
        let sealed = group.member.seal(&plaintext);
        if sealed.is_ok() {
            group.sealed += 1;
        }
        // Saved whether or not sealing failed midway: a key used is a key used.
        group.save()?;
        let (epoch, message) = sealed?;
        out.push(Transition::Sealed { epoch, message });
    }
    Ok(out)
}

/// Records labels the ledger took.
///
/// # Errors
/// [`GroupFault::File`].
pub fn keep(group: &mut Group, labels: BTreeMap<String, String>) -> Result<(), GroupFault> {
    group.labels.extend(labels);
    group.save()
}

/// A membership change done.
#[derive(Debug)]
pub struct Changed {
    /// The epoch the group is in now.
    pub epoch: u64,
    /// The ledger's append; none when its answer was unclear and the ledger was found to hold
    /// the change after all.
    pub appended: Option<Appended>,
}

/// Enters `change` (staged in the owner's member) in the ledger, then merges it. The staged
/// change is saved first: an append whose outcome is unclear (a node that took it and did not
/// say so, a crash) is settled against the ledger next time ([`owner_ready`]), never guessed.
async fn enter_change(
    dir: &Path,
    client: &Client,
    group: &mut Group,
    change: obscura_group::Change,
) -> Result<Changed, GroupFault> {
    group.pending = Some(Pending {
        epoch: change.epoch,
        commit: hex::encode(&change.commit),
    });
    group.save()?;
    let transition = Transition::GroupCommit {
        epoch: change.epoch,
        commit: change.commit,
        welcome: change.welcome,
    };
    match ledger::append(dir, client, vec![transition]).await {
        Ok(appended) => {
            let epoch = group.member.confirm()?;
            group.pending = None;
            group.sealed = 0;
            group.save()?;
            Ok(Changed {
                epoch,
                appended: Some(appended),
            })
        }
        Err(e) => {
            // Taken after all, or not: a history the nodes cosigned says which, if it can be
            // read now; else the next command asks again.
            let before = group.member.epoch();
            if settle(dir, client, group).await.is_ok() && group.member.epoch() != before {
                return Ok(Changed {
                    epoch: group.member.epoch().unwrap_or_default(),
                    appended: None,
                });
            }
            Err(e.into())
        }
    }
}

/// Settles the owner's change sent to the ledger with an unclear outcome, against a head a
/// majority of nodes cosigned: merged if that history holds it at its epoch, dropped if it
/// holds another commit there. If it holds none, an entry of the owner's appended now decides:
/// once a majority cosigned a history past the place the change was signed for without it,
/// the change can never join the ledger (an entry is signed for the history before it, and
/// nothing under a majority's commitment is replaced).
///
/// # Errors
/// [`GroupFault`] when no cosigned history decides; the change stays pending, and the owner's
/// group takes no other change until it is settled.
async fn settle(dir: &Path, client: &Client, group: &mut Group) -> Result<(), GroupFault> {
    let Some(pending) = group.pending.clone() else {
        return Ok(());
    };
    let mut taken = held_at(dir, client, pending.epoch, &pending.commit, 0).await?;
    if taken.is_none() {
        let at = crate::unix_now();
        let appended = ledger::append(dir, client, vec![Transition::Synced { at }]).await?;
        // The change is in the history now cosigned, or it never will be; read back from a
        // head at least that new, or nothing is decided.
        let size = appended.head.head.size;
        taken = Some(
            held_at(dir, client, pending.epoch, &pending.commit, size)
                .await?
                .unwrap_or(false),
        );
    }
    if taken == Some(true) {
        group.member.confirm()?;
        group.sealed = 0;
    } else {
        group.member.abandon();
    }
    group.pending = None;
    group.save()
}

/// Whether the history a majority of nodes cosigned holds `commit` (hex) at `epoch`
/// (`Some(true)`), another commit there (`Some(false)`), or none, or there is no such history
/// yet (`None`).
///
/// # Errors
/// [`GroupFault::Ledger`], also when the newest head read is older than `at_least` entries
/// (a node that gave an older head: nothing is decided on it).
async fn held_at(
    dir: &Path,
    client: &Client,
    epoch: u64,
    commit: &str,
    at_least: u64,
) -> Result<Option<bool>, GroupFault> {
    let verified = ledger::verify(dir, client, &[]).await?;
    // Before any head was cosigned, nothing is known to be held: the caller appends one.
    let Some(head) = &verified.head else {
        return if at_least == 0 {
            Ok(None)
        } else {
            Err(LedgerError::NoHistory("no head a majority cosigned".into()).into())
        };
    };
    if head.head.size < at_least {
        return Err(LedgerError::NoHistory(format!(
            "the newest head read holds {} entries, the ledger {at_least} at least",
            head.head.size
        ))
        .into());
    }
    Ok(verified
        .entries
        .iter()
        .take(usize::try_from(head.head.size).unwrap_or(usize::MAX))
        .find_map(|e| match &e.transition {
            Transition::GroupCommit {
                epoch: at,
                commit: c,
                ..
            } if *at == epoch => Some(hex::encode(c) == commit),
            _ => None,
        }))
}

/// Refuses an owner's state that is not where the ledger is: a group epoch other than the
/// ledger's, or fewer messages sealed in this epoch than the ledger holds (more is a seal the
/// ledger did not take). A state restored from an old copy would seal with message keys
/// already used.
async fn check_current(dir: &Path, client: &Client, group: &Group) -> Result<(), GroupFault> {
    let verified = ledger::verify(dir, client, &[]).await?;
    let epoch = verified.state().group_epoch;
    let sealed = verified
        .entries
        .iter()
        .filter(|e| matches!(e.transition, Transition::Sealed { epoch: at, .. } if at == epoch))
        .count() as u64;
    if group.member.epoch() != Some(epoch) || group.sealed < sealed {
        return Err(GroupError::State(format!(
            "{}: the owner's group state is at epoch {} with {} messages sealed, the ledger at \
             epoch {epoch} with {sealed}: a lost or restored state cannot go on (it would seal \
             with keys already used)",
            group.path.display(),
            group
                .member
                .epoch()
                .map_or_else(|| "none".into(), |e| e.to_string()),
            group.sealed
        ))
        .into());
    }
    Ok(())
}

/// The data owner's group, with any change of unclear outcome settled against the ledger, and
/// checked to be where the ledger is ([`check_current`]).
///
/// # Errors
/// As [`Group::owner`] and [`settle`]; [`GroupError::State`] for a state behind the ledger.
pub async fn owner_ready(dir: &Path, client: &Client) -> Result<Group, GroupFault> {
    let mut group = Group::owner(dir)?;
    settle(dir, client, &mut group).await?;
    check_current(dir, client, &group).await?;
    Ok(group)
}

/// Adds the member whose KeyPackage is `key_package`, admitted as `admitted` (a worker only on
/// its appraisal, [`Candidate::appraise`]). Data owner only.
///
/// # Errors
/// [`GroupFault`]; the group stays where the ledger has it.
pub async fn add(
    dir: &Path,
    client: &Client,
    candidate: &Candidate,
    admitted: &Admitted,
) -> Result<Changed, GroupFault> {
    if client.owner.is_none() {
        return Err(LedgerError::NotOwner.into());
    }
    let mut group = owner_ready(dir, client).await?;
    let change = group.member.add(candidate, admitted)?;
    enter_change(dir, client, &mut group, change).await
}

/// Removes the member `identity`: from the next epoch on it opens nothing. Data owner only.
///
/// # Errors
/// [`GroupFault`]; the group stays where the ledger has it.
pub async fn remove(dir: &Path, client: &Client, identity: &str) -> Result<Changed, GroupFault> {
    if client.owner.is_none() {
        return Err(LedgerError::NotOwner.into());
    }
    let mut group = owner_ready(dir, client).await?;
    let change = group.member.remove(identity)?;
    enter_change(dir, client, &mut group, change).await
}

/// A worker added: the change, and what the worker made of it.
#[derive(Debug)]
pub struct WorkerAdded {
    /// The change.
    pub changed: Changed,
    /// The worker's identity (`worker:NAME`).
    pub identity: String,
    /// The appraisal its evidence passed, in words.
    pub appraisal: String,
    /// What the worker made of the entry (it joins by its Welcome), or why it could not be
    /// told: it is a member either way, and `obscura ledger relay` tells it again.
    pub told: Result<WorkerFollowed, String>,
}

/// Adds the worker at `worker` (its base URL): challenges it for a KeyPackage, appraises the
/// evidence in it under the cluster's attestation policy (a worker joins on nothing less),
/// enters the change in the ledger, and hands the worker the entry it joins by. Data owner
/// only.
///
/// # Errors
/// [`GroupFault`]: [`GroupError::NotAdmitted`] names the check its evidence failed, and the
/// group and the ledger are left as they were.
pub async fn add_worker(
    dir: &Path,
    client: &Client,
    worker: &str,
) -> Result<WorkerAdded, GroupFault> {
    if !client.is_owner() {
        return Err(LedgerError::NotOwner.into());
    }
    let worker = worker.trim_end_matches('/');
    let policy = client.attestation_policy().ok_or_else(|| {
        GroupError::NotAdmitted("the cluster has no attestation policy to appraise it under".into())
    })?;
    let owner = client.owner.as_ref().ok_or(LedgerError::NotOwner)?;
    let authors = ledger::authors(dir, client)?;
    let log = obscura_ledger::replica::log_id(&authors.owner, &authors.nodes);
    let http = client.http.client.clone();
    let said = |e: String| GroupError::NotAdmitted(format!("worker {worker}: {e}"));
    // Whom the request is for: a worker that names itself otherwise is refused below.
    let asked: WorkerIdentity = crate::release::post_json(
        &http,
        &format!("{worker}/v1/group/identity"),
        &serde_json::json!({}),
    )
    .await
    .map_err(said)?;
    obscura_group::check_identity(&asked.identity)?;
    let mut nonce = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
    let issued_at = crate::unix_now();
    let signature = ed25519_dalek::Signer::sign(
        owner,
        &key_package_statement(&log, &asked.identity, &nonce, issued_at),
    );
    let answer: KeyPackageAnswer = crate::release::post_json(
        &http,
        &format!("{worker}/v1/group/key-package"),
        &KeyPackageRequest {
            identity: asked.identity.clone(),
            nonce: hex::encode(nonce),
            issued_at,
            signature: hex::encode(signature.to_bytes()),
        },
    )
    .await
    .map_err(said)?;
    let kp = hex::decode(&answer.key_package).map_err(|e| said(e.to_string()))?;
    let candidate = Candidate::parse(&kp)?;
    if !candidate.is_worker() || candidate.identity() != asked.identity {
        return Err(said(format!(
            "asked as {}, its KeyPackage names {}",
            asked.identity,
            candidate.identity()
        ))
        .into());
    }
    let admitted = candidate.appraise(
        &obscura_attest::Verifier::new(),
        policy,
        &nonce,
        crate::unix_now(),
    )?;
    let appraisal = admitted
        .appraisal()
        .map_or_else(String::new, |a| a.summary());
    let changed = add(dir, client, &candidate, &admitted).await?;
    let from = changed
        .appended
        .as_ref()
        .map_or(0, |a| a.head.head.size.saturating_sub(1));
    let told = relay(dir, client, worker, from).await;
    Ok(WorkerAdded {
        changed,
        identity: candidate.identity().to_owned(),
        appraisal,
        told,
    })
}

/// The most a request to a worker carries, in bytes of hex entries (a worker takes 4 MiB).
const RELAY_BYTES: usize = 3 << 20;

/// Hands the worker at `worker` the group's entries from `from` on, under the head a majority
/// of nodes cosigned, each with the tree head before it (which the owner's signature binds) and
/// its inclusion proof; in requests of at most [`RELAY_BYTES`].
///
/// # Errors
/// Why the ledger could not be read or the worker refused, in words.
pub async fn relay(
    dir: &Path,
    client: &Client,
    worker: &str,
    from: u64,
) -> Result<WorkerFollowed, String> {
    let verified = ledger::verify(dir, client, &[])
        .await
        .map_err(|e| e.to_string())?;
    let head = verified
        .head
        .clone()
        .ok_or("the ledger has no head a majority cosigned")?;
    let size = head.head.size;
    if verified.replica.size() != size {
        return Err(format!(
            "the ledger rebuilt holds {} entries, its cosigned head {size}",
            verified.replica.size()
        ));
    }
    let mut requests: Vec<Vec<RelayedEntry>> = vec![Vec::new()];
    let mut bytes = 0;
    for e in verified
        .entries
        .iter()
        .take(usize::try_from(size).unwrap_or(usize::MAX))
        .skip(usize::try_from(from).unwrap_or(usize::MAX))
        .filter(|e| {
            matches!(
                e.transition,
                Transition::GroupCommit { .. } | Transition::Sealed { .. }
            )
        })
    {
        let prev = verified
            .replica
            .root_at(e.seq)
            .ok_or("the ledger lost an entry it verified")?;
        let proof = verified
            .replica
            .inclusion(e.seq)
            .ok_or("no inclusion proof for an entry it verified")?;
        let relayed = RelayedEntry {
            entry: hex::encode(postcard::to_allocvec(e).expect("an entry encodes")),
            prev: hex::encode(prev),
            proof: proof.iter().map(hex::encode).collect(),
        };
        let len = relayed.entry.len() + 64 * (proof.len() + 1);
        let full = requests.last().is_some_and(|r| r.len() >= 256);
        if (full || bytes + len > RELAY_BYTES) && !requests.last().is_some_and(Vec::is_empty) {
            requests.push(Vec::new());
            bytes = 0;
        }
        bytes += len;
        requests.last_mut().expect("one at least").push(relayed);
    }
    let http = client.http.client.clone();
    let mut last = None;
    for entries in requests.into_iter().filter(|r| !r.is_empty()) {
        let answer: WorkerFollowed = crate::release::post_json(
            &http,
            &format!("{worker}/v1/group/entries"),
            &Entries {
                head: head.clone(),
                entries,
            },
        )
        .await
        .map_err(|e| format!("worker {worker}: {e}"))?;
        last = Some(answer);
    }
    last.ok_or_else(|| "no group entries to hand it".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_that_hide_or_reorder_text_are_refused() {
        for bad in [
            "",
            "a\nb",
            "invoice\u{202e}fdp.exe",
            "zero\u{200b}width",
            "\u{feff}bom",
        ] {
            assert!(check_label(bad).is_err(), "{bad:?}");
        }
        assert!(check_label(&"x".repeat(MAX_LABEL + 1)).is_err());
        for good in [
            "harbour survey",
            "Hafen – Übersicht",
            &"x".repeat(MAX_LABEL),
        ] {
            assert!(check_label(good).is_ok(), "{good:?}");
        }
    }
}
