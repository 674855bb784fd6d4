//! An image is invisible until committed, fully visible after, and gone after delete; repeated
//! steps are idempotent and wrong steps are typed errors.

mod common;

use common::{Parts, TempDir};
use obscura_store::{Error, ImageState, Store};

#[test]
fn pending_is_invisible_and_commit_publishes() {
    let dir = TempDir::new("two-phase");
    let store = Store::open(&dir.db(), 1).unwrap();
    let a = Parts::new(10);
    store.prepare(&a.new_image(), 100).unwrap();
    assert_eq!(store.state(&a.id).unwrap(), Some(ImageState::Pending));
    assert!(store
        .lookup(&a.tokens)
        .unwrap()
        .iter()
        .all(|v| v.is_empty()));
    assert_eq!(store.hash_shares(&[a.id]).unwrap(), vec![None]);
    assert_eq!(store.image(&a.id).unwrap(), None);

    store.commit(&a.id, 101).unwrap();
    assert_eq!(store.state(&a.id).unwrap(), Some(ImageState::Committed));
    assert!(store
        .lookup(&a.tokens)
        .unwrap()
        .iter()
        .all(|v| v == &vec![a.id]));
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

#[test]
fn postings_are_shared_and_delete_removes_only_its_own() {
    let dir = TempDir::new("postings");
    let store = Store::open(&dir.db(), 2).unwrap();
    let (a, b) = (Parts::new(20), Parts::new(21)); // same band-0 token
    for p in [&a, &b] {
        store.prepare(&p.new_image(), 1).unwrap();
        store.commit(&p.id, 2).unwrap();
    }
    assert_eq!(a.tokens[0], b.tokens[0]);
    let mut both = store.lookup(&[a.tokens[0]]).unwrap().remove(0);
    both.sort();
    assert_eq!(both, vec![a.id, b.id]);

    store.delete(&a.id, 3).unwrap();
    assert_eq!(store.lookup(&[a.tokens[0]]).unwrap()[0], vec![b.id]);
    assert!(store.lookup(&[a.tokens[1]]).unwrap()[0].is_empty());
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

#[test]
fn prepare_again_replaces_pending_parts() {
    let dir = TempDir::new("re-prepare");
    let store = Store::open(&dir.db(), 1).unwrap();
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

#[test]
fn purge_removes_only_stale_pending_images() {
    let dir = TempDir::new("purge");
    let store = Store::open(&dir.db(), 1).unwrap();
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

#[test]
fn empty_parts_are_refused_and_nothing_is_written() {
    let dir = TempDir::new("empty");
    let store = Store::open(&dir.db(), 1).unwrap();
    let mut a = Parts::new(50);
    a.share.clear();
    assert!(matches!(
        store.prepare(&a.new_image(), 1),
        Err(Error::Invalid(_))
    ));
    assert_eq!(store.state(&a.id).unwrap(), None);
    assert_eq!(store.stats().unwrap().audit_entries, 0);
}

#[test]
fn a_store_belongs_to_one_node_and_one_process() {
    let dir = TempDir::new("owner");
    let store = Store::open(&dir.db(), 3).unwrap();
    // A second open while the first holds the file is refused, not corrupting.
    assert!(matches!(Store::open(&dir.db(), 3), Err(Error::Open { .. })));
    drop(store);
    assert!(matches!(
        Store::open(&dir.db(), 4),
        Err(Error::WrongNode {
            expected: 4,
            found: 3
        })
    ));
    assert!(Store::open(&dir.db(), 3).is_ok());
}
