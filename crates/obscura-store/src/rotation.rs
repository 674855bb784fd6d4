//! Token-key versions and their rotation at a node.
//!
//! A node serves one token key version. A rotation moves every stored posting to the next one
//! without any hash or key being known here: the node is given `ρ` with `k' = ρ · k`, turns each
//! stored band element `E = k · H(x)` into `ρ · E`, and hashes that into the next version's token
//! (the node crate does the group arithmetic and hands the store the resulting [`TokenMove`]s).
//! The store keeps the old → new token map and moves images in durable steps, in id order, an
//! image's postings and record together; a step that is interrupted is either all there or not at
//! all, and the next step picks up from the last image moved. While the rotation runs, lookups
//! under either version find every image (each token is also looked up as its counterpart), new
//! images are written under the next version, and an image prepared under the old version and
//! committed meanwhile is posted under the next one. Finishing forgets the old tokens, their
//! elements and `ρ`.

use std::collections::HashMap;

use obscura_tokens::{Token, BANDS, TOKEN_LEN};
use redb::{ReadableDatabase, ReadableMultimapTable, ReadableTable, ReadableTableMetadata};
use zeroize::Zeroizing;

use crate::{
    audit, begin_durable, id_of, AuditKind, Error, ImageRecord, ImageState, Store, META, POSTINGS,
    STATE, TOKEN_ELEMENTS, TOKEN_MAP,
};

type Tok = [u8; TOKEN_LEN];
/// A token of the version being retired and its counterpart under the next.
pub(crate) type TokenPair = (Tok, Tok);

/// One stored band element moved to the next key version: its token now, its token and element
/// under the next version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenMove {
    /// The token under the current version.
    pub from: Token,
    /// The token under the next version.
    pub to: Token,
    /// The element under the next version, `ρ · E`.
    pub element: [u8; 32],
}

/// The token key versions a node serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyVersions {
    /// The version served.
    pub current: u32,
    /// The version being moved to, during a rotation.
    pub next: Option<u32>,
}

/// Where a rotation stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RotationStatus {
    /// The versions served now.
    pub versions: KeyVersions,
    /// Images moved so far in this rotation.
    pub moved: u64,
    /// Images stored when it began.
    pub total: u64,
    /// Postings of committed images moved so far.
    pub postings: u64,
    /// Every image has moved (or no rotation is under way).
    pub done: bool,
}

/// The in-memory mirror of the key state.
pub(crate) struct KeyState {
    current: u32,
    rotation: Option<Rotating>,
}

impl Default for KeyState {
    fn default() -> Self {
        KeyState {
            current: 1,
            rotation: None,
        }
    }
}

struct Rotating {
    to: u32,
    factor: Zeroizing<[u8; 32]>,
    forward: HashMap<Tok, Tok>,
    backward: HashMap<Tok, Tok>,
}

impl KeyState {
    /// The state of a store serving `current`, during a rotation described by `record` whose
    /// token map is `forward` (retired → next).
    pub(crate) fn from_parts(current: u32, rotation: Option<(Record, HashMap<Tok, Tok>)>) -> Self {
        KeyState {
            current,
            rotation: rotation.map(|(record, forward)| Rotating {
                to: record.to,
                factor: record.factor,
                backward: forward.iter().map(|(a, b)| (*b, *a)).collect(),
                forward,
            }),
        }
    }

    /// During a rotation, its target version and `ρ`.
    pub(crate) fn factor(&self) -> Option<(u32, Zeroizing<[u8; 32]>)> {
        self.rotation.as_ref().map(|r| (r.to, r.factor.clone()))
    }

    /// Whether a rotation from `from` to `to` with `factor` can begin: `Ok(false)` when it
    /// can, `Ok(true)` when it began (or finished) already with the same values.
    pub(crate) fn check_begin(&self, from: u32, to: u32, factor: &[u8; 32]) -> Result<bool, Error> {
        if let Some(r) = &self.rotation {
            if (self.current, r.to, r.factor.as_slice()) == (from, to, factor.as_slice()) {
                return Ok(true);
            }
            return Err(Error::Invalid(
                "another rotation is under way: finish it first",
            ));
        }
        if self.current == to {
            return Ok(true);
        }
        if self.current != from {
            return Err(self.refuse(from));
        }
        if to <= from {
            return Err(Error::Invalid("the next key version must be newer"));
        }
        Ok(false)
    }

    /// Whether the rotation to `to` can be finished: the retired version's tokens when it can,
    /// `None` when it finished already.
    pub(crate) fn check_finish(&self, to: u32) -> Result<Option<(u32, Vec<Tok>)>, Error> {
        let Some(r) = &self.rotation else {
            if self.current == to {
                return Ok(None);
            }
            return Err(Error::Invalid(
                "no rotation to this key version is under way",
            ));
        };
        if r.to != to {
            return Err(Error::Invalid("another rotation is under way"));
        }
        Ok(Some((self.current, r.forward.keys().copied().collect())))
    }

    pub(crate) fn versions(&self) -> KeyVersions {
        KeyVersions {
            current: self.current,
            next: self.rotation.as_ref().map(|r| r.to),
        }
    }

    pub(crate) fn rotating(&self) -> bool {
        self.rotation.is_some()
    }

    /// Whether a token of the version being retired has its counterpart recorded.
    pub(crate) fn has_counterpart(&self, retired: &Tok) -> bool {
        self.rotation
            .as_ref()
            .is_some_and(|r| r.forward.contains_key(retired))
    }

    /// Record more (retired, next) token pairs, after they were committed.
    pub(crate) fn add_counterparts(&mut self, pairs: &[TokenPair]) {
        if let Some(r) = &mut self.rotation {
            for (old, new) in pairs {
                r.forward.insert(*old, *new);
                r.backward.insert(*new, *old);
            }
        }
    }

    /// The version new tokens must be under.
    pub(crate) fn writing(&self) -> u32 {
        self.rotation.as_ref().map_or(self.current, |r| r.to)
    }

    pub(crate) fn refuse(&self, asked: u32) -> Error {
        let v = self.versions();
        Error::KeyVersion {
            asked,
            current: v.current,
            next: v.next,
        }
    }

    /// A token as a lookup counts it: during a rotation a token of the next version stands for
    /// its counterpart of the version being retired, so that a band sent under both versions
    /// counts once.
    pub(crate) fn canonical(&self, t: &Tok) -> Tok {
        self.rotation
            .as_ref()
            .and_then(|r| r.backward.get(t))
            .copied()
            .unwrap_or(*t)
    }

    /// During a rotation, the retired version's tokens' counterparts under the next one.
    pub(crate) fn forward_map(&self) -> Option<&HashMap<Tok, Tok>> {
        self.rotation.as_ref().map(|r| &r.forward)
    }

    /// For tokens of `version`, the map to their counterparts under the other version served.
    pub(crate) fn counterparts(&self, version: u32) -> Result<Option<&HashMap<Tok, Tok>>, Error> {
        match &self.rotation {
            _ if version == self.current => Ok(self.rotation.as_ref().map(|r| &r.forward)),
            Some(r) if version == r.to => Ok(Some(&r.backward)),
            _ => Err(self.refuse(version)),
        }
    }

    /// An image's tokens under the next version, when they are of the version being retired.
    pub(crate) fn forward(&self, tokens: &[Token; BANDS]) -> Result<Option<[Token; BANDS]>, Error> {
        let Some(r) = &self.rotation else {
            return Ok(None);
        };
        if !r.forward.contains_key(&tokens[0].0) {
            return Ok(None);
        }
        let mut out = *tokens;
        for t in &mut out {
            t.0 = *r
                .forward
                .get(&t.0)
                .ok_or(Error::Corrupt("an image's tokens are of two key versions"))?;
        }
        Ok(Some(out))
    }
}

/// The rotation record kept in the meta table while one is under way.
pub(crate) struct Record {
    pub(crate) to: u32,
    pub(crate) factor: Zeroizing<[u8; 32]>,
    /// The last image moved, in id order.
    pub(crate) cursor: Option<[u8; 16]>,
    pub(crate) moved: u64,
    pub(crate) total: u64,
    pub(crate) postings: u64,
    pub(crate) done: bool,
}

impl Record {
    /// The record of a rotation to `to` under `factor` that begins with `total` images stored.
    pub(crate) fn begun(to: u32, factor: &[u8; 32], total: u64) -> Record {
        Record {
            to,
            factor: Zeroizing::new(*factor),
            cursor: None,
            moved: 0,
            total,
            postings: 0,
            done: false,
        }
    }

    /// Where the rotation this record describes stands, serving `versions`.
    pub(crate) fn status(&self, versions: KeyVersions) -> RotationStatus {
        RotationStatus {
            versions,
            moved: self.moved,
            total: self.total,
            postings: self.postings,
            done: self.done,
        }
    }
}

impl RotationStatus {
    /// No rotation under way.
    pub(crate) fn idle(versions: KeyVersions) -> Self {
        RotationStatus {
            versions,
            moved: 0,
            total: 0,
            postings: 0,
            done: true,
        }
    }
}

impl Record {
    const LEN: usize = 4 + 32 + 1 + 16 + 8 * 3 + 1;

    pub(crate) fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(Self::LEN));
        out.extend_from_slice(&self.to.to_be_bytes());
        out.extend_from_slice(self.factor.as_slice());
        out.push(u8::from(self.cursor.is_some()));
        out.extend_from_slice(&self.cursor.unwrap_or_default());
        for v in [self.moved, self.total, self.postings] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out.push(u8::from(self.done));
        out
    }

    pub(crate) fn decode(b: &[u8]) -> Result<Record, Error> {
        if b.len() != Self::LEN {
            return Err(Error::Corrupt("rotation record length"));
        }
        let u64_at = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        // Only what `encode` writes is read: a flag is 0 or 1 and an absent cursor is zeros, so
        // a damaged record is refused instead of read as some other rotation's state.
        let flag = |i: usize| match b[i] {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(Error::Corrupt("rotation record flag")),
        };
        let cursor: [u8; 16] = b[37..53].try_into().expect("16 bytes");
        let cursor = match flag(36)? {
            true => Some(cursor),
            false if cursor == [0; 16] => None,
            false => return Err(Error::Corrupt("rotation record cursor")),
        };
        Ok(Record {
            to: u32::from_be_bytes(b[..4].try_into().expect("4 bytes")),
            factor: Zeroizing::new(b[4..36].try_into().expect("32 bytes")),
            cursor,
            moved: u64_at(53),
            total: u64_at(61),
            postings: u64_at(69),
            done: flag(77)?,
        })
    }
}

pub(crate) const KEY_VERSION: &str = "key_version";
pub(crate) const ROTATION: &str = "rotation";

/// Whether `moves` (retired → next) hold every stored band element (`stored`, as tokens) and
/// nothing else: a rotation begins only then, so that no image is left under the retired
/// version.
pub(crate) fn moves_cover(
    forward: &HashMap<Tok, Tok>,
    stored: impl IntoIterator<Item = Result<Tok, Error>>,
) -> Result<(), Error> {
    let mut count = 0usize;
    for t in stored {
        if !forward.contains_key(&t?) {
            return Err(Error::ElementsChanged);
        }
        count += 1;
    }
    if count != forward.len() {
        return Err(Error::ElementsChanged);
    }
    Ok(())
}

pub(crate) fn tok(bytes: &[u8]) -> Result<Tok, Error> {
    bytes.try_into().map_err(|_| Error::Corrupt("token"))
}

impl Store {
    pub(crate) fn keys(&self) -> std::sync::RwLockReadGuard<'_, KeyState> {
        // Every change replaces whole values after its transaction committed: a poisoned lock
        // still holds a consistent state.
        self.keys.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn keys_mut(&self) -> std::sync::RwLockWriteGuard<'_, KeyState> {
        self.keys.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// The key state recorded in `db`.
pub(crate) fn read_keys(db: &redb::Database) -> Result<KeyState, Error> {
    let txn = db.begin_read()?;
    let meta = txn.open_table(META)?;
    let current = match meta.get(KEY_VERSION)? {
        None => 1,
        Some(v) => u32::from_be_bytes(
            v.value()
                .try_into()
                .map_err(|_| Error::Corrupt("key version"))?,
        ),
    };
    let rotation = match meta.get(ROTATION)? {
        None => None,
        Some(r) => {
            let record = Record::decode(r.value())?;
            let mut forward = HashMap::new();
            for e in txn.open_table(TOKEN_MAP)?.iter()? {
                let (k, v) = e?;
                forward.insert(tok(k.value())?, tok(v.value())?);
            }
            Some((record, forward))
        }
    };
    Ok(KeyState::from_parts(current, rotation))
}

impl Store {
    /// The token key versions this node serves.
    pub fn key_versions(&self) -> KeyVersions {
        self.keys().versions()
    }

    /// The versions served and a rotation's target and `ρ`, read under one lock.
    pub fn key_state(&self) -> (KeyVersions, Option<crate::RotationFactor>) {
        let keys = self.keys();
        (keys.versions(), keys.factor())
    }

    /// During a rotation, its target version and `ρ`, to move the tokens of an image uploaded
    /// under the old version.
    pub fn rotation_factor(&self) -> Option<(u32, Zeroizing<[u8; 32]>)> {
        self.keys().factor()
    }

    /// Begin moving from key version `from` to `to`: `moves` must hold every stored element of
    /// `from` (see [`token_elements`](Self::token_elements)), moved with the same `factor`.
    /// Repeating a begun (or finished) rotation with the same values reports where it stands.
    ///
    /// # Errors
    /// [`Error::KeyVersion`] when `from` is not the version served, [`Error::Invalid`] when
    /// another rotation is under way or `to` is not newer, [`Error::ElementsChanged`] when an
    /// element was stored since `moves` was computed (compute again).
    pub fn begin_rotation(
        &self,
        from: u32,
        to: u32,
        factor: &[u8; 32],
        moves: &[TokenMove],
        now: u64,
    ) -> Result<RotationStatus, Error> {
        let mut keys = self.keys_mut();
        if keys.check_begin(from, to, factor)? {
            drop(keys);
            return self.rotation_status();
        }
        let forward: HashMap<Tok, Tok> = moves.iter().map(|m| (m.from.0, m.to.0)).collect();
        let db = self.db()?;
        let txn = begin_durable(&db)?;
        let total;
        {
            let mut elements = txn.open_table(TOKEN_ELEMENTS)?;
            moves_cover(&forward, elements.iter()?.map(|e| tok(e?.0.value())))?;
            let mut map = txn.open_table(TOKEN_MAP)?;
            for m in moves {
                elements.insert(m.to.0.as_slice(), m.element.as_slice())?;
                map.insert(m.from.0.as_slice(), m.to.0.as_slice())?;
            }
            total = txn.open_table(STATE)?.len()?;
            let record = Record::begun(to, factor, total);
            txn.open_table(META)?
                .insert(ROTATION, record.encode().as_slice())?;
        }
        let detail = format!(
            "key version {from} -> {to}: begin, {} elements, {total} images",
            moves.len()
        );
        audit::append(&txn, now, AuditKind::KeyChange, &[0; 16], detail.as_bytes())?;
        txn.commit()?;
        keys.rotation = Some(Rotating {
            to,
            factor: Zeroizing::new(*factor),
            backward: forward.iter().map(|(a, b)| (*b, *a)).collect(),
            forward,
        });
        drop(keys);
        drop(db);
        self.rotation_status()
    }

    /// Move up to `max_images` more images to the next key version, in one durable
    /// transaction, and report progress.
    ///
    /// # Errors
    /// [`Error::Invalid`] when no rotation is under way, [`Error::Corrupt`] for an image whose
    /// tokens are of neither version.
    pub fn rotate_step(&self, max_images: usize, now: u64) -> Result<RotationStatus, Error> {
        let keys = self.keys();
        if keys.rotation.is_none() {
            return Err(Error::Invalid("no rotation is under way"));
        }
        if max_images == 0 {
            drop(keys);
            return self.rotation_status();
        }
        let db = self.db()?;
        let txn = begin_durable(&db)?;
        let mut moved: Vec<(crate::ImageId, [Token; BANDS], [Token; BANDS])> = Vec::new();
        let mut scanned = 0usize;
        {
            let mut meta = txn.open_table(META)?;
            let mut record = match meta.get(ROTATION)? {
                Some(r) => Record::decode(r.value())?,
                None => return Err(Error::Corrupt("rotation without its record")),
            };
            let mut state = txn.open_table(STATE)?;
            let mut postings = txn.open_multimap_table(POSTINGS)?;
            let elements = txn.open_table(TOKEN_ELEMENTS)?;
            let batch: Vec<([u8; 16], ImageRecord)> = {
                let range = match &record.cursor {
                    Some(c) => state.range::<&[u8]>((
                        std::ops::Bound::Excluded(c.as_slice()),
                        std::ops::Bound::Unbounded,
                    ))?,
                    None => state.range::<&[u8]>(..)?,
                };
                range
                    .take(max_images)
                    .map(|e| {
                        let (k, v) = e?;
                        Ok((id_of(k.value())?.0, ImageRecord::decode(v.value())?))
                    })
                    .collect::<Result<_, Error>>()?
            };
            for (id, mut r) in batch {
                scanned += 1;
                record.cursor = Some(id);
                let Some(next) = keys.forward(&r.tokens)? else {
                    // Written under the next version already, and so with its elements; an
                    // image without elements (HMAC tokens) cannot move, and must not be left.
                    if elements.get(r.tokens[0].0.as_slice())?.is_none() {
                        return Err(Error::Invalid(
                            "an image has no stored band elements (HMAC tokens?) and cannot move",
                        ));
                    }
                    continue;
                };
                if r.state == ImageState::Committed {
                    for (old, new) in r.tokens.iter().zip(&next) {
                        postings.remove(old.0.as_slice(), id.as_slice())?;
                        postings.insert(new.0.as_slice(), id.as_slice())?;
                    }
                    record.postings += BANDS as u64;
                    moved.push((crate::ImageId(id), r.tokens, next));
                }
                r.tokens = next;
                state.insert(id.as_slice(), r.encode().as_slice())?;
                record.moved += 1;
            }
            record.done = scanned < max_images;
            meta.insert(ROTATION, record.encode().as_slice())?;
        }
        let detail = format!("key version move: {scanned} images scanned");
        audit::append(&txn, now, AuditKind::KeyChange, &[0; 16], detail.as_bytes())?;
        // Hold the posting mirror across the commit, so no delete or commit slips between the
        // table and the mirror.
        let mut map = self.postings_mut();
        txn.commit()?;
        for (id, old, new) in &moved {
            map.change(*id, Some(old.as_slice()), Some(new.as_slice()));
        }
        drop(map);
        drop(keys);
        drop(db);
        self.rotation_status()
    }

    /// Finish the rotation to `to` once every image moved: the old version's tokens and
    /// elements and `ρ` are erased, and only `to` is served. Finishing a finished rotation
    /// changes nothing.
    ///
    /// # Errors
    /// [`Error::Invalid`] when images remain to be moved or no such rotation is under way.
    pub fn finish_rotation(&self, to: u32, now: u64) -> Result<RotationStatus, Error> {
        let mut keys = self.keys_mut();
        let Some((from, retired)) = keys.check_finish(to)? else {
            drop(keys);
            return self.rotation_status();
        };
        let db = self.db()?;
        let txn = begin_durable(&db)?;
        {
            let mut meta = txn.open_table(META)?;
            let record = match meta.get(ROTATION)? {
                Some(v) => Record::decode(v.value())?,
                None => return Err(Error::Corrupt("rotation without its record")),
            };
            if !record.done {
                return Err(Error::Invalid("images remain to be moved: move them first"));
            }
            let postings = txn.open_multimap_table(POSTINGS)?;
            let mut elements = txn.open_table(TOKEN_ELEMENTS)?;
            for old in &retired {
                if !postings.get(old.as_slice())?.is_empty() {
                    return Err(Error::Corrupt("a posting of the old key version remains"));
                }
                elements.remove(old.as_slice())?;
            }
            drop(postings);
            txn.open_table(TOKEN_MAP)?.retain(|_, _| false)?;
            meta.remove(ROTATION)?;
            meta.insert(KEY_VERSION, to.to_be_bytes().as_slice())?;
        }
        let detail = format!("key version {from} -> {to}: finished");
        audit::append(&txn, now, AuditKind::KeyChange, &[0; 16], detail.as_bytes())?;
        txn.commit()?;
        *keys = KeyState {
            current: to,
            rotation: None,
        };
        drop(keys);
        drop(db);
        self.rotation_status()
    }

    /// Where the rotation stands (`done` with no `next` when none is under way).
    ///
    /// # Errors
    /// [`Error::Storage`] on a read failure.
    pub fn rotation_status(&self) -> Result<RotationStatus, Error> {
        let versions = self.key_versions();
        let db = self.db()?;
        let txn = db.begin_read()?;
        let record = match txn.open_table(META)?.get(ROTATION)? {
            Some(v) => Some(Record::decode(v.value())?),
            None => None,
        };
        Ok(match record {
            Some(r) => r.status(versions),
            None => RotationStatus::idle(versions),
        })
    }
}
