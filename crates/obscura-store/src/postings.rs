//! The committed postings in memory, token → images, so that Stage-1 reads no B-tree and no
//! table: at most 8 × 256 tokens per key version, 16 bytes per image and band, and the set of
//! committed images beside them (16 bytes and the set's overhead per image).
//!
//! Each backend keeps its copy current with what is committed: the redb store right after each
//! of its own commits, a PostgreSQL store from the log of posting changes that every process of
//! the node writes in the transactions that make them.

use std::collections::{HashMap, HashSet};

use obscura_sharing::manifest::ImageId;
use obscura_tokens::{Token, TOKEN_LEN};

use crate::rotation::KeyState;

/// Token → images.
pub(crate) type PostingMap = HashMap<[u8; TOKEN_LEN], Vec<ImageId>>;

/// The committed postings and images.
#[derive(Default)]
pub(crate) struct Postings {
    // Keyed SipHash (the standard library's) in both maps: image ids are chosen by their
    // owners, and ids made to collide must not make every insert a long probe, nor counting
    // quadratic.
    by_token: PostingMap,
    committed: HashSet<ImageId>,
}

impl Postings {
    /// The postings of `map`, as read from a table, with the committed images they name.
    pub(crate) fn from_map(map: PostingMap) -> Self {
        let committed = map.values().flatten().copied().collect();
        Postings {
            by_token: map,
            committed,
        }
    }

    /// One image's postings change from `removed` to `added`: committed (nothing removed),
    /// deleted (nothing added) or moved to another key version (both).
    pub(crate) fn change(
        &mut self,
        id: ImageId,
        removed: Option<&[Token]>,
        added: Option<&[Token]>,
    ) {
        for t in removed.into_iter().flatten() {
            if let Some(list) = self.by_token.get_mut(&t.0) {
                list.retain(|x| *x != id);
                if list.is_empty() {
                    self.by_token.remove(&t.0);
                }
            }
        }
        for t in added.into_iter().flatten() {
            self.by_token.entry(t.0).or_default().push(id);
        }
        match (removed, added) {
            (_, Some(_)) => {
                self.committed.insert(id);
            }
            (Some(_), None) => {
                self.committed.remove(&id);
            }
            (None, None) => {}
        }
    }

    /// For each token, the images posted under it.
    pub(crate) fn lookup(&self, tokens: &[Token]) -> Vec<Vec<ImageId>> {
        tokens
            .iter()
            .map(|t| self.by_token.get(&t.0).cloned().unwrap_or_default())
            .collect()
    }

    /// The images posted under at least `min_tokens` of `tokens`, sorted, and how many images
    /// matched at least one.
    ///
    /// Each band counts once: tokens sent twice, or under both key versions during a rotation,
    /// are one token; each is also looked up as its counterpart under the next version, so an
    /// image counts the same whether its postings moved yet or not (they move all at once).
    pub(crate) fn count(
        &self,
        keys: &KeyState,
        tokens: &[Token],
        min_tokens: usize,
    ) -> (Vec<ImageId>, usize) {
        let mut canonical: Vec<_> = tokens.iter().map(|t| keys.canonical(&t.0)).collect();
        canonical.sort_unstable();
        canonical.dedup();
        let forward = keys.forward_map();
        let mut counts: HashMap<ImageId, usize> = HashMap::new();
        for t in &canonical {
            let twin = forward.and_then(|o| o.get(t));
            for list in [
                self.by_token.get(t),
                twin.and_then(|t| self.by_token.get(t)),
            ] {
                for id in list.into_iter().flatten() {
                    *counts.entry(*id).or_default() += 1;
                }
            }
        }
        let matched = counts.len();
        let mut ids: Vec<ImageId> = counts
            .into_iter()
            .filter(|&(_, c)| c >= min_tokens)
            .map(|(id, _)| id)
            .collect();
        ids.sort_unstable();
        (ids, matched)
    }

    /// Every committed image, in no particular order; `None` when there are more than `max`.
    pub(crate) fn committed(&self, max: u64) -> Option<Vec<ImageId>> {
        (self.committed.len() as u64 <= max).then(|| self.committed.iter().copied().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(b: u8) -> Token {
        Token([b; TOKEN_LEN])
    }

    #[test]
    fn a_change_moves_deletes_and_counts_each_band_once() {
        let (a, b) = (ImageId([1; 16]), ImageId([2; 16]));
        let mut p = Postings::default();
        p.change(a, None, Some(&[t(1), t(2)]));
        p.change(b, None, Some(&[t(2), t(3)]));
        let keys = KeyState::default();
        assert_eq!(p.count(&keys, &[t(2), t(2), t(1)], 2), (vec![a], 2));
        p.change(a, Some(&[t(1), t(2)]), Some(&[t(4), t(5)]));
        assert_eq!(p.count(&keys, &[t(1), t(2)], 1), (vec![b], 1));
        assert_eq!(p.count(&keys, &[t(4), t(5)], 2), (vec![a], 1));
        assert_eq!(p.committed(2).map(|v| v.len()), Some(2));
        p.change(b, Some(&[t(2), t(3)]), None);
        assert_eq!(p.lookup(&[t(2), t(3)]), vec![vec![], vec![]]);
        assert_eq!(p.committed(1), Some(vec![a]));
        assert_eq!(p.committed(0), None);
    }
}
