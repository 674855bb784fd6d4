//! An image is invisible until committed, fully visible after, and gone after delete; repeated
//! steps are idempotent and wrong steps are typed errors.

mod common;

use common::{posted, Parts, TempDir};
use obscura_store::{Error, ImageState, NodeStore};

#[test]
fn pending_is_invisible_and_commit_publishes() {
    let dir = TempDir::new("two-phase");
    for backend in common::backends(&dir, "pending_is_invisible_and_commi") {
        let store = backend.open(1).unwrap();
        let a = Parts::new(10);
        store.prepare(&a.new_image(), 100).unwrap();
        assert_eq!(store.state(&a.id).unwrap(), Some(ImageState::Pending));
        assert!(a.tokens.iter().all(|t| posted(&*store, *t).is_empty()));
        assert_eq!(store.hash_shares(&[a.id]).unwrap(), vec![None]);
        assert_eq!(store.image(&a.id).unwrap(), None);

        store.commit(&a.id, 101).unwrap();
        assert_eq!(store.state(&a.id).unwrap(), Some(ImageState::Committed));
        assert!(a.tokens.iter().all(|t| posted(&*store, *t) == vec![a.id]));
        assert_eq!(store.hash_shares(&[a.id]).unwrap(), vec![Some(a.hash)]);
        let img = store.image(&a.id).unwrap().unwrap();
        assert_eq!(
            (img.manifest, img.image_share),
            (a.manifest.clone(), a.share.clone())
        );

        // Idempotent commit; a second prepare of a committed id is refused.
        store.commit(&a.id, 102).unwrap();
        assert!(matches!(
            store.prepare(&a.new_image(), 103),
            Err(Error::AlreadyExists(id)) if id == a.id
        ));
        let s = store.stats().unwrap();
        assert_eq!((s.committed, s.pending), (1, 0));
    }
}

#[test]
fn lookup_at_least_counts_the_tokens_each_image_matches() {
    let dir = TempDir::new("at-least");
    for backend in common::backends(&dir, "lookup_at_least_counts_the_tok") {
        let store = backend.open(1).unwrap();
        let (a, b) = (Parts::new(10), Parts::new(11));
        for p in [&a, &b] {
            store.prepare(&p.new_image(), 1).unwrap();
            store.commit(&p.id, 2).unwrap();
        }
        // a and b share their band-0 token (see Parts); a's other bands are its own.
        let mut query = a.tokens.to_vec();
        query.push(b.tokens[3]);
        let (ids, matched) = store.lookup_at_least(1, &query, 8).unwrap();
        assert_eq!((ids, matched), (vec![a.id], 2));
        let (ids, _) = store.lookup_at_least(1, &query, 2).unwrap();
        assert_eq!(ids, vec![a.id, b.id]);
        let (ids, _) = store.lookup_at_least(1, &query, 3).unwrap();
        assert_eq!(ids, vec![a.id]);
    }
}

#[test]
fn postings_are_shared_and_delete_removes_only_its_own() {
    let dir = TempDir::new("postings");
    for backend in common::backends(&dir, "postings_are_shared_and_delete") {
        let store = backend.open(2).unwrap();
        let (a, b) = (Parts::new(20), Parts::new(21)); // same band-0 token
        for p in [&a, &b] {
            store.prepare(&p.new_image(), 1).unwrap();
            store.commit(&p.id, 2).unwrap();
        }
        assert_eq!(a.tokens[0], b.tokens[0]);
        assert_eq!(posted(&*store, a.tokens[0]), vec![a.id, b.id]);

        store.delete(&a.id, 3).unwrap();
        assert_eq!(posted(&*store, a.tokens[0]), vec![b.id]);
        assert!(posted(&*store, a.tokens[1]).is_empty());
        assert_eq!(store.state(&a.id).unwrap(), None);
        assert_eq!(store.image(&a.id).unwrap(), None);
        assert!(matches!(
            store.delete(&a.id, 4),
            Err(Error::UnknownImage(_))
        ));
        assert!(matches!(
            store.commit(&a.id, 4),
            Err(Error::UnknownImage(_))
        ));
    }
}

#[test]
fn prepare_again_replaces_pending_parts() {
    let dir = TempDir::new("re-prepare");
    for backend in common::backends(&dir, "prepare_again_replaces_pending") {
        let store = backend.open(1).unwrap();
        let mut a = Parts::new(30);
        store.prepare(&a.new_image(), 1).unwrap();
        a.share = vec![9; 50];
        store.prepare(&a.new_image(), 2).unwrap();
        store.commit(&a.id, 3).unwrap();
        assert_eq!(
            store.image(&a.id).unwrap().unwrap().image_share,
            vec![9; 50]
        );
    }
}

#[test]
fn purge_removes_only_stale_pending_images() {
    let dir = TempDir::new("purge");
    for backend in common::backends(&dir, "purge_removes_only_stale_pendi") {
        let store = backend.open(1).unwrap();
        let (old, fresh, done) = (Parts::new(40), Parts::new(41), Parts::new(42));
        store.prepare(&old.new_image(), 100).unwrap();
        store.prepare(&fresh.new_image(), 500).unwrap();
        store.prepare(&done.new_image(), 100).unwrap();
        store.commit(&done.id, 100).unwrap();
        assert_eq!(store.purge_pending(300, 600).unwrap(), 1);
        assert_eq!(store.state(&old.id).unwrap(), None);
        assert_eq!(store.state(&fresh.id).unwrap(), Some(ImageState::Pending));
        assert_eq!(store.state(&done.id).unwrap(), Some(ImageState::Committed));
    }
}

#[test]
fn empty_parts_are_refused_and_nothing_is_written() {
    let dir = TempDir::new("empty");
    for backend in common::backends(&dir, "empty_parts_are_refused_and_no") {
        let store = backend.open(1).unwrap();
        let mut a = Parts::new(50);
        a.share.clear();
        assert!(matches!(
            store.prepare(&a.new_image(), 1),
            Err(Error::Invalid(_))
        ));
        assert_eq!(store.state(&a.id).unwrap(), None);
        assert_eq!(store.stats().unwrap().audit_entries, 0);
    }
}

#[test]
fn a_store_belongs_to_one_node_and_one_process() {
    let dir = TempDir::new("owner");
    for backend in common::backends(&dir, "a_store_belongs_to_one_node_an") {
        let store = backend.open(3).unwrap();
        // A second open while the first holds the file is refused, not corrupting; on
        // PostgreSQL a second process of the same node is what the backend is for.
        match &backend {
            common::Backend::Redb(_) => {
                assert!(matches!(backend.open(3), Err(Error::Open { .. })))
            }
            _ => assert!(backend.open(3).is_ok()),
        }
        drop(store);
        assert!(matches!(
            backend.open(4),
            Err(Error::WrongNode {
                expected: 4,
                found: 3
            })
        ));
        assert!(backend.open(3).is_ok());
    }
}

#[test]
fn batches_are_all_or_none_and_audited_per_image() {
    let dir = TempDir::new("batch");
    for backend in common::backends(&dir, "batches_are_all_or_none_and_au") {
        let store = backend.open(1).unwrap();
        let parts: Vec<Parts> = (0..5).map(Parts::new).collect();
        let images: Vec<_> = parts.iter().map(Parts::new_image).collect();
        store.prepare_many(&images[..3], 100).unwrap();
        store.commit_many(&[parts[0].id], 101).unwrap();

        // A batch holding a committed image stores nothing of the others.
        let again = [images[3], images[0], images[4]];
        assert!(matches!(
            store.prepare_many(&again, 102),
            Err(Error::AlreadyExists(id)) if id == parts[0].id
        ));
        assert_eq!(store.state(&parts[3].id).unwrap(), None);
        assert_eq!(store.state(&parts[4].id).unwrap(), None);
        store.prepare_many(&images[3..], 102).unwrap();

        // A commit batch naming an unknown image changes nothing.
        let stranger = Parts::new(99).id;
        assert!(matches!(
            store.commit_many(&[parts[1].id, stranger], 103),
            Err(Error::UnknownImage(id)) if id == stranger
        ));
        assert_eq!(
            store.state(&parts[1].id).unwrap(),
            Some(ImageState::Pending)
        );

        let ids: Vec<_> = parts.iter().map(|p| p.id).collect();
        store.commit_many(&ids, 104).unwrap();
        let s = store.stats().unwrap();
        assert_eq!((s.committed, s.pending), (5, 0));
        for p in &parts {
            assert_eq!(store.hash_shares(&[p.id]).unwrap(), vec![Some(p.hash)]);
        }
        let kinds: Vec<_> = store
            .audit_entries()
            .unwrap()
            .iter()
            .map(|e| (e.kind, e.subject))
            .collect();
        let prepared = kinds
            .iter()
            .filter(|k| k.0 == obscura_store::AuditKind::Prepare)
            .count();
        let committed = kinds
            .iter()
            .filter(|k| k.0 == obscura_store::AuditKind::Commit)
            .count();
        assert_eq!((prepared, committed), (5, 5), "{kinds:?}");
    }
}

/// The postings, and the list of committed images an exhaustive search reads (both mirrored in
/// memory by the redb store), are the same after reopening as before: pending and deleted
/// images in neither. On PostgreSQL the second opening is what another process of the node sees.
#[test]
fn postings_read_after_reopening_are_those_before() {
    let dir = TempDir::new("reopen");
    let parts: Vec<Parts> = (0..6).map(Parts::new).collect();
    let tokens: Vec<_> = parts.iter().flat_map(|p| p.tokens).collect();
    let listed = |store: &dyn NodeStore| {
        let mut ids = store
            .committed_ids(4)
            .unwrap()
            .expect("4 images, at most 4");
        ids.sort();
        assert_eq!(store.committed_ids(3).unwrap(), None, "more than 3");
        ids
    };
    let lists = |store: &dyn NodeStore| -> Vec<Vec<_>> {
        tokens.iter().map(|t| posted(store, *t)).collect()
    };
    let committed: Vec<_> = [0, 2, 3, 4].iter().map(|&i| parts[i].id).collect();
    for backend in common::backends(&dir, "reopen") {
        let before = {
            let store = backend.open(1).unwrap();
            for p in &parts {
                store.prepare(&p.new_image(), 1).unwrap();
            }
            for p in &parts[..5] {
                store.commit(&p.id, 2).unwrap();
            }
            store.delete(&parts[1].id, 3).unwrap();
            store.delete(&parts[5].id, 3).unwrap();
            assert_eq!(listed(&*store), committed);
            lists(&*store)
        };
        let store = backend.open(1).unwrap();
        assert_eq!(listed(&*store), committed);
        assert_eq!(lists(&*store), before);
        let found: std::collections::BTreeSet<_> = before.into_iter().flatten().collect();
        let want: std::collections::BTreeSet<_> =
            [0, 2, 3, 4].iter().map(|&i| parts[i].id).collect();
        assert_eq!(found, want);
    }
}

/// A commit and a delete of one image at once, many times: whichever commits last, the mirrors
/// in memory (the committed list an exhaustive search hands out, and the postings) agree with
/// the tables. Before, each updated the mirror after its commit without holding it, so a delete
/// could update it first and the image stayed listed after it was gone.
#[test]
fn racing_commits_and_deletes_leave_the_mirrors_equal_to_the_tables() {
    let dir = TempDir::new("race");
    for backend in common::backends(&dir, "racing_commits_and_deletes_lea") {
        let store = backend.open(1).unwrap();
        for round in 0..100u32 {
            let p = Parts::new(1000 + round);
            store.prepare(&p.new_image(), 1).unwrap();
            std::thread::scope(|s| {
                s.spawn(|| store.commit(&p.id, 2).ok());
                s.spawn(|| store.delete(&p.id, 2).ok());
            });
            let listed = store
                .committed_ids(u64::MAX)
                .unwrap()
                .unwrap()
                .contains(&p.id);
            let committed = store.state(&p.id).unwrap() == Some(ImageState::Committed);
            assert_eq!(listed, committed, "round {round}");
            let posted = !posted(&*store, p.tokens[1]).is_empty();
            assert_eq!(posted, committed, "round {round}");
        }
    }
}
