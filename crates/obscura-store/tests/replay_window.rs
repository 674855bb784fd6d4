//! Request ids are accepted once inside the window, refused on replay (also after a restart) and
//! refused when their time is too far from the node's clock; every refusal is audited.

mod common;

use common::TempDir;
use obscura_store::{AuditKind, Error};

const WINDOW: u64 = 120;

#[test]
fn replay_and_stale_requests_are_refused() {
    let dir = TempDir::new("replay");
    for backend in common::backends(&dir, "replay_and_stale_requests_are_") {
        let store = backend.open(1).unwrap();
        store.admit_request(&[1; 16], 1000, 1000, WINDOW).unwrap();
        assert!(matches!(
            store.admit_request(&[1; 16], 1000, 1001, WINDOW),
            Err(Error::Replay)
        ));
        assert!(matches!(
            store.admit_request(&[2; 16], 800, 1000, WINDOW),
            Err(Error::Stale { at: 800, .. })
        ));
        assert!(matches!(
            store.admit_request(&[3; 16], 1200, 1000, WINDOW),
            Err(Error::Stale { .. })
        ));
        store.admit_request(&[2; 16], 950, 1000, WINDOW).unwrap();

        // The window survives a restart.
        drop(store);
        let store = backend.open(1).unwrap();
        assert!(matches!(
            store.admit_request(&[1; 16], 1000, 1010, WINDOW),
            Err(Error::Replay)
        ));
        let refusals = store
            .audit_entries()
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == AuditKind::Refused)
            .count();
        assert_eq!(refusals, 4);
    }
}

#[test]
fn old_ids_are_forgotten_but_still_refused_by_time() {
    let dir = TempDir::new("expire");
    for backend in common::backends(&dir, "old_ids_are_forgotten_but_stil") {
        let store = backend.open(1).unwrap();
        store.admit_request(&[7; 16], 1000, 1000, WINDOW).unwrap();
        // Much later, another request expires the first id from the table...
        store.admit_request(&[8; 16], 2000, 2000, WINDOW).unwrap();
        // ...and a replay of it is still refused, by its time.
        assert!(matches!(
            store.admit_request(&[7; 16], 1000, 2000, WINDOW),
            Err(Error::Stale { .. })
        ));
    }
}

#[test]
fn deferred_admission_refuses_replays_and_lasts_once_a_durable_commit_follows() {
    let dir = TempDir::new("deferred");
    for backend in common::backends(&dir, "deferred_admission_refuses_rep") {
        let store = backend.open(1).unwrap();
        store
            .admit_request_deferred(&[5; 16], 1000, 1000, WINDOW)
            .unwrap();
        assert!(matches!(
            store.admit_request_deferred(&[5; 16], 1000, 1001, WINDOW),
            Err(Error::Replay)
        ));
        assert!(matches!(
            store.admit_request_deferred(&[6; 16], 1000, 1000 + WINDOW + 1, WINDOW),
            Err(Error::Stale { .. })
        ));
        // A durable commit after it carries it to disk.
        store.admit_request(&[6; 16], 1000, 1000, WINDOW).unwrap();
        drop(store);
        let store = backend.open(1).unwrap();
        assert!(matches!(
            store.admit_request(&[5; 16], 1000, 1002, WINDOW),
            Err(Error::Replay)
        ));
    }
}

/// A user's uses are counted against its limit per window, by kind, and nothing is counted for
/// a request over it; the window starts again once it has passed.
#[test]
fn uses_over_a_limit_are_refused_until_the_window_passes() {
    let dir = TempDir::new("limits");
    for backend in common::backends(&dir, "limits") {
        let store = backend.open(1).unwrap();
        store
            .charge("bob", "queries", 4, 5, 60, 100)
            .unwrap()
            .unwrap();
        let over = store
            .charge("bob", "queries", 2, 5, 60, 110)
            .unwrap()
            .unwrap_err();
        assert_eq!((over.used, over.since), (4, 100), "{}", backend.name());
        store
            .charge("bob", "queries", 1, 5, 60, 111)
            .unwrap()
            .unwrap();
        assert!(store
            .charge("bob", "queries", 1, 5, 60, 159)
            .unwrap()
            .is_err());
        store
            .charge("bob", "fetches", 5, 5, 60, 159)
            .unwrap()
            .unwrap();
        store
            .charge("bob", "queries", 5, 5, 60, 160)
            .unwrap()
            .unwrap();
    }
}
