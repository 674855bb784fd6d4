//! A token-key rotation at one store: every image stays findable under both versions while its
//! postings move, a rotation interrupted by closing the store resumes where it stopped, writes
//! during the rotation land under the next version, and finishing leaves only the next one.
//!
//! The store does no group arithmetic: the "next" tokens and elements here are stand-ins
//! derived from the old ones, as the node would hand over `ρ · E` and its hash.

mod common;

use std::collections::BTreeSet;

use common::{Parts, TempDir};
use obscura_sharing::manifest::ImageId;
use obscura_store::{Error, NewImage, NodeStore, TokenMove};
use obscura_tokens::Token;

fn next(t: &Token) -> Token {
    let mut n = t.0;
    n[15] ^= 0xa5;
    Token(n)
}

fn element(t: &Token) -> [u8; 32] {
    let mut e = [0u8; 32];
    e[..16].copy_from_slice(&t.0);
    e
}

fn prepare(
    store: &dyn NodeStore,
    p: &Parts,
    version: u32,
    tokens: [Token; 8],
) -> Result<(), Error> {
    let elements: [[u8; 32]; 8] = std::array::from_fn(|b| element(&tokens[b]));
    store.prepare(
        &NewImage {
            tokens,
            key_version: version,
            elements: Some(&elements),
            ..p.new_image()
        },
        10,
    )
}

/// Images matching `query` in every band, under `version`.
fn found(store: &dyn NodeStore, version: u32, query: &[Token; 8]) -> BTreeSet<ImageId> {
    store
        .lookup_at_least(version, query, 8)
        .unwrap()
        .0
        .into_iter()
        .collect()
}

fn moves(store: &dyn NodeStore) -> Vec<TokenMove> {
    store
        .token_elements()
        .unwrap()
        .into_iter()
        .map(|(from, _)| TokenMove {
            from,
            to: next(&from),
            element: element(&next(&from)),
        })
        .collect()
}

#[test]
fn a_rotation_interrupted_half_way_resumes_with_nothing_lost() {
    let dir = TempDir::new("rotation");
    let images: Vec<Parts> = (0..40).map(Parts::new).collect();
    let factor = [7u8; 32];
    for backend in common::backends(&dir, "rotation_resumes") {
        {
            let store = backend.open(1).unwrap();
            for p in &images {
                prepare(&*store, p, 1, p.tokens).unwrap();
            }
            // Image 39 stays pending across the start of the rotation.
            for p in &images[..39] {
                store.commit(&p.id, 11).unwrap();
            }
            assert!(matches!(
                store.begin_rotation(2, 3, &factor, &moves(&*store), 12),
                Err(Error::KeyVersion { asked: 2, .. })
            ));
            // A set of moves that misses an element is refused whole.
            let mut short = moves(&*store);
            short.pop();
            assert!(matches!(
                store.begin_rotation(1, 2, &factor, &short, 12),
                Err(Error::ElementsChanged)
            ));
            let s = store
                .begin_rotation(1, 2, &factor, &moves(&*store), 12)
                .unwrap();
            assert_eq!((s.versions.current, s.versions.next), (1, Some(2)));
            assert_eq!((s.moved, s.total, s.done), (0, 40, false));
            // Beginning again with the same values is a no-op; with another factor it is refused.
            assert_eq!(
                store.begin_rotation(1, 2, &factor, &[], 12).unwrap().moved,
                0
            );
            assert!(store.begin_rotation(1, 2, &[8; 32], &[], 12).is_err());
            assert!(store.finish_rotation(2, 12).is_err());

            let s = store.rotate_step(15, 13).unwrap();
            assert_eq!((s.moved, s.postings, s.done), (15, 15 * 8, false));
            for p in &images[..39] {
                let want = BTreeSet::from([p.id]);
                assert_eq!(found(&*store, 1, &p.tokens), want, "old version");
                let moved: [Token; 8] = std::array::from_fn(|b| next(&p.tokens[b]));
                assert_eq!(found(&*store, 2, &moved), want, "next version");
            }
            // A write under the old version is refused: the node moves it first.
            let late = Parts::new(100);
            assert!(matches!(
                prepare(&*store, &late, 1, late.tokens),
                Err(Error::KeyVersion {
                    asked: 1,
                    current: 1,
                    next: Some(2)
                })
            ));
            let late_next: [Token; 8] = std::array::from_fn(|b| next(&late.tokens[b]));
            let elements: [[u8; 32]; 8] = std::array::from_fn(|b| element(&late_next[b]));
            store
                .prepare(
                    &NewImage {
                        tokens: late_next,
                        key_version: 2,
                        elements: Some(&elements),
                        retired_tokens: Some(late.tokens),
                        ..late.new_image()
                    },
                    14,
                )
                .unwrap();
            store.commit(&late.id, 14).unwrap();
            // Written under version 2 with its version-1 tokens: found under either.
            assert_eq!(found(&*store, 1, &late.tokens), BTreeSet::from([late.id]));
            assert_eq!(found(&*store, 2, &late_next), BTreeSet::from([late.id]));
            // Image 5 has moved, image 30 not yet: both can be deleted cleanly.
            store.delete(&images[5].id, 14).unwrap();
            store.delete(&images[30].id, 14).unwrap();
        } // the store closes half-way: as a crash between steps
        {
            let store = backend.open(1).unwrap();
            let s = store.rotation_status().unwrap();
            assert_eq!((s.versions.next, s.moved, s.done), (Some(2), 15, false));
            // The pending image prepared under version 1 is committed under version 2.
            store.commit(&images[39].id, 15).unwrap();
            loop {
                let s = store.rotate_step(7, 16).unwrap();
                if s.done {
                    break;
                }
            }
            let s = store.finish_rotation(2, 17).unwrap();
            assert_eq!((s.versions.current, s.versions.next), (2, None));
            assert_eq!(store.finish_rotation(2, 17).unwrap().versions.current, 2);

            for p in &images {
                let moved: [Token; 8] = std::array::from_fn(|b| next(&p.tokens[b]));
                let want: BTreeSet<ImageId> = if p.id == images[5].id || p.id == images[30].id {
                    BTreeSet::new()
                } else {
                    BTreeSet::from([p.id])
                };
                assert_eq!(found(&*store, 2, &moved), want);
                // No posting remains under an old token.
                assert!(store.lookup_at_least(2, &p.tokens, 1).unwrap().0.is_empty());
            }
            let late = Parts::new(100);
            let late_next: [Token; 8] = std::array::from_fn(|b| next(&late.tokens[b]));
            assert_eq!(found(&*store, 2, &late_next), BTreeSet::from([late.id]));
            assert!(matches!(
                store.lookup_at_least(1, &late.tokens, 1),
                Err(Error::KeyVersion { asked: 1, .. })
            ));
            // Only the next version's elements are kept, ready for the next rotation.
            let elements = store.token_elements().unwrap();
            assert!(elements
                .iter()
                .all(|(t, e)| *e == element(t) && images.iter().all(|p| !p.tokens.contains(t))));
            // The same after a restart.
            drop(store);
            let store = backend.open(1).unwrap();
            assert_eq!(store.key_versions().unwrap().current, 2);
            assert_eq!(found(&*store, 2, &late_next), BTreeSet::from([late.id]));
        }
    }
}

/// Images stored without band elements (HMAC tokens) cannot move: the first step says so, and
/// the rotation cannot finish, so no image is left behind under the retired version.
#[test]
fn images_without_elements_stop_a_rotation() {
    let dir = TempDir::new("rotation-hmac");
    for backend in common::backends(&dir, "images_without_elements_stop_a") {
        let store = backend.open(1).unwrap();
        let p = Parts::new(1);
        store.prepare(&p.new_image(), 10).unwrap();
        store.commit(&p.id, 10).unwrap();
        store.begin_rotation(1, 2, &[7; 32], &[], 11).unwrap();
        assert!(matches!(store.rotate_step(10, 12), Err(Error::Invalid(_))));
        assert!(store.finish_rotation(2, 13).is_err());
        assert_eq!(
            found(&*store, 1, &p.tokens),
            BTreeSet::from([p.id]),
            "still served under version 1"
        );
    }
}

/// A band counts once however it is sent: the same token twice, or a token beside its
/// counterpart under the other version during a rotation. Otherwise four bands of an image,
/// each sent under both versions, would pass for the eight a lookup asks.
#[test]
fn a_band_sent_under_both_versions_during_a_rotation_counts_once() {
    let dir = TempDir::new("rotation-twice");
    let images: Vec<Parts> = (0..4).map(Parts::new).collect();
    for backend in common::backends(&dir, "a_band_sent_under_both_version") {
        let store = backend.open(1).unwrap();
        for p in &images {
            prepare(&*store, p, 1, p.tokens).unwrap();
            store.commit(&p.id, 11).unwrap();
        }
        store
            .begin_rotation(1, 2, &[7; 32], &moves(&*store), 12)
            .unwrap();
        // Images 0 and 1 have moved, 2 and 3 not yet.
        store.rotate_step(2, 13).unwrap();
        for p in &images {
            let half: Vec<Token> = p.tokens[..4].iter().flat_map(|t| [*t, next(t)]).collect();
            for version in [1, 2] {
                let (ids, _) = store.lookup_at_least(version, &half, 8).unwrap();
                assert!(ids.is_empty(), "version {version}: {ids:?}");
                let (ids, _) = store.lookup_at_least(version, &half, 4).unwrap();
                assert_eq!(ids, vec![p.id], "version {version}");
            }
            let repeated = vec![p.tokens[0]; 8];
            assert!(store.lookup_at_least(1, &repeated, 2).unwrap().0.is_empty());
            // The whole image, sent under either version, is found as before.
            assert_eq!(found(&*store, 1, &p.tokens), BTreeSet::from([p.id]));
            let moved: [Token; 8] = std::array::from_fn(|b| next(&p.tokens[b]));
            assert_eq!(found(&*store, 2, &moved), BTreeSet::from([p.id]));
        }
    }
}
