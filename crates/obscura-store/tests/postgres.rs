//! What the PostgreSQL store adds to the suite every backend runs: several processes of one node
//! on one database (each open here stands for a process), and a database edited behind the
//! node's back.

mod common;

use common::{posted, Parts};
use ed25519_dalek::SigningKey;
use obscura_store::{audit, Error, NodeStore, PgStore};

fn database(test: &str) -> Option<String> {
    let server = common::postgres_server()?;
    let name = format!("obscura_pg_{test}_{}", std::process::id());
    Some(obscura_store::pg::fresh_database(&server, &name).unwrap())
}

/// What one process commits the others serve at once, and a request id one admitted the others
/// refuse: a replay sent to a second process of the node gets nowhere.
#[test]
fn processes_of_one_node_share_images_and_the_replay_window() {
    let Some(url) = database("shared") else {
        return;
    };
    let (a, b) = (
        PgStore::open(&url, 1).unwrap(),
        PgStore::open(&url, 1).unwrap(),
    );
    let p = Parts::new(7);
    a.prepare(&p.new_image(), 10).unwrap();
    assert!(posted(&b, p.tokens[0]).is_empty(), "pending is invisible");
    b.commit(&p.id, 11).unwrap();
    assert_eq!(posted(&a, p.tokens[0]), vec![p.id]);
    assert_eq!(
        a.image(&p.id).unwrap().unwrap().image_share,
        b.image(&p.id).unwrap().unwrap().image_share
    );

    a.admit_request(&[9; 16], 100, 100, 60).unwrap();
    assert!(matches!(
        b.admit_request_deferred(&[9; 16], 100, 101, 60),
        Err(Error::Replay)
    ));
    assert!(matches!(
        PgStore::open(&url, 2),
        Err(Error::WrongNode {
            expected: 2,
            found: 1
        })
    ));
}

/// Audit entries appended by several processes at once form one chain: the writer lock keeps
/// two of them from both taking the same head.
#[test]
fn processes_appending_at_once_keep_one_audit_chain() {
    let Some(url) = database("chain") else {
        return;
    };
    let stores: Vec<PgStore> = (0..3).map(|_| PgStore::open(&url, 1).unwrap()).collect();
    std::thread::scope(|s| {
        for (n, store) in stores.iter().enumerate() {
            s.spawn(move || {
                for i in 0..100u8 {
                    store.record_query(&[i; 16], &[n as u8], 50).unwrap();
                }
            });
        }
    });
    let key = SigningKey::from_bytes(&[3; 32]);
    stores[0].audit_checkpoint(&key, 51).unwrap();
    let entries = stores[1].audit_entries().unwrap();
    assert_eq!(entries.len(), 301);
    let report = audit::verify(&entries, &key.verifying_key()).unwrap();
    assert_eq!(report.unsigned_tail, 0);
}

/// Whoever can write to the database can change a row of the audit log; the chain and the signed
/// checkpoint name the entry, as they do for an edited redb file.
#[test]
fn an_audit_row_edited_in_the_database_is_named() {
    let Some(url) = database("tamper") else {
        return;
    };
    let store = PgStore::open(&url, 1).unwrap();
    for i in 0..5u8 {
        store.record_query(&[i; 16], b"who=alice", 60).unwrap();
    }
    let key = SigningKey::from_bytes(&[4; 32]);
    store.audit_checkpoint(&key, 61).unwrap();
    assert!(audit::verify(&store.audit_entries().unwrap(), &key.verifying_key()).is_ok());

    let mut sql = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let mut entry: Vec<u8> = sql
        .query_one("SELECT entry FROM audit WHERE seq = 2", &[])
        .unwrap()
        .get(0);
    *entry.last_mut().unwrap() ^= 1; // "who=alicd"
    sql.execute("UPDATE audit SET entry = $1 WHERE seq = 2", &[&entry])
        .unwrap();
    let err = audit::verify(&store.audit_entries().unwrap(), &key.verifying_key()).unwrap_err();
    assert!(
        matches!(err, audit::AuditError::Altered { seq: 2 }),
        "{err}"
    );
}

/// A database URL that does not parse, or a server that is not there, is a clear error, with no
/// password in it.
#[test]
fn a_bad_database_url_or_an_absent_server_says_so() {
    let e = PgStore::open("postgres://user:hunter2@127.0.0.1:1/db", 1).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("cannot reach the database 127.0.0.1:1/db"),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
    let e = PgStore::open("postgres://[", 1).unwrap_err();
    assert!(e.to_string().contains("does not parse"), "{e}");
}

/// A user's hourly limit at a node is one limit however many processes serve the node: asking
/// each process in turn buys nothing.
#[test]
fn processes_of_one_node_count_against_one_limit() {
    let Some(url) = database("limits") else {
        return;
    };
    let (a, b) = (
        PgStore::open(&url, 1).unwrap(),
        PgStore::open(&url, 1).unwrap(),
    );
    a.charge("mallory", "queries", 2, 3, 3600, 1000)
        .unwrap()
        .unwrap();
    b.charge("mallory", "queries", 1, 3, 3600, 1001)
        .unwrap()
        .unwrap();
    let over = a
        .charge("mallory", "queries", 1, 3, 3600, 1002)
        .unwrap()
        .unwrap_err();
    assert_eq!((over.used, over.since), (3, 1000));
    assert!(b
        .charge("mallory", "queries", 1, 3, 3600, 1003)
        .unwrap()
        .is_err());
    // Other users and other kinds have limits of their own; the window starts again.
    b.charge("alice", "queries", 3, 3, 3600, 1004)
        .unwrap()
        .unwrap();
    b.charge("mallory", "fetches", 3, 3, 3600, 1004)
        .unwrap()
        .unwrap();
    a.charge("mallory", "queries", 3, 3, 3600, 4600)
        .unwrap()
        .unwrap();
}

/// Processes counting one user at once: exactly the limit is let through in a window, and a
/// window ending meanwhile (one process's clock past it, deleting the row) fails no count.
#[test]
fn processes_counting_at_once_let_the_limit_through_and_fail_none() {
    let Some(url) = database("counting") else {
        return;
    };
    let stores: Vec<PgStore> = (0..3).map(|_| PgStore::open(&url, 1).unwrap()).collect();
    let counted = |at: &(dyn Fn(usize) -> u64 + Sync)| -> usize {
        std::thread::scope(|s| {
            let threads: Vec<_> = stores
                .iter()
                .map(|store| {
                    s.spawn(move || {
                        (0..60)
                            .filter(|&i| {
                                store
                                    .charge("eve", "queries", 1, 100, 3600, at(i))
                                    .unwrap()
                                    .is_ok()
                            })
                            .count()
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).sum()
        })
    };
    assert_eq!(counted(&|_| 1000), 100);
    // Clocks on both sides of the window's end: every count answers, none fails.
    counted(&|i| if i % 2 == 0 { 4599 } else { 4600 });
    // Users and kinds whose windows all ended, counted at once: each request deletes the
    // others' old rows, and none may wait on another's row while holding its own (that was a
    // deadlock PostgreSQL broke by failing one of them).
    std::thread::scope(|s| {
        for (n, store) in stores.iter().enumerate() {
            s.spawn(move || {
                for round in 0..30u64 {
                    for user in ["ann", "ben", "cat"] {
                        for kind in ["queries", "fetches"] {
                            let at = 10_000 + round * 3600 + n as u64;
                            store.charge(user, kind, 1, 100, 3600, at).unwrap().unwrap();
                        }
                    }
                }
            });
        }
    });
}

/// Image shares kept as objects: the database holds only each share's digest, every process
/// naming the folder reads them, an object altered behind the node's back is refused, and
/// objects no row names any more (a pending share prepared again, a deleted image) are removed.
#[test]
fn shares_kept_as_objects_are_checked_and_removed_with_their_image() {
    let Some(url) = database("objects") else {
        return;
    };
    let dir = common::TempDir::new("objects");
    let folder = dir.0.join("shares");
    let store = PgStore::open_with_shares(&url, 1, folder.to_str()).unwrap();
    let files = || -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![folder.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                } else {
                    out.push(e.path());
                }
            }
        }
        out
    };

    let mut p = Parts::new(5);
    store.prepare(&p.new_image(), 1).unwrap();
    p.share = vec![6; 3000];
    store.prepare(&p.new_image(), 2).unwrap();
    store.commit(&p.id, 3).unwrap();
    let kept = files();
    assert_eq!(
        kept.len(),
        1,
        "the first share's object was removed: {kept:?}"
    );
    assert_eq!(std::fs::read(&kept[0]).unwrap(), p.share);

    let mut sql = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let row: Vec<u8> = sql
        .query_one("SELECT share FROM images", &[])
        .unwrap()
        .get(0);
    // The digest, then the nonce that makes every write an object of its own.
    assert_eq!(row.len(), 48);
    assert_eq!(&row[..32], blake3::hash(&p.share).as_bytes());

    let other = PgStore::open_with_shares(&url, 1, folder.to_str()).unwrap();
    assert_eq!(other.image(&p.id).unwrap().unwrap().image_share, p.share);
    let blind = PgStore::open(&url, 1).unwrap();
    let e = blind.image(&p.id).unwrap_err();
    assert!(e.to_string().contains("names none"), "{e}");

    let mut altered = p.share.clone();
    altered[10] ^= 1;
    std::fs::write(&kept[0], &altered).unwrap();
    assert!(matches!(store.image(&p.id), Err(Error::Corrupt(_))));

    store.delete(&p.id, 4).unwrap();
    assert!(files().is_empty(), "{:?}", files());

    // The same bytes prepared again are another object: removing the object of a row that
    // went (here, by a purge) never removes the one a later row names.
    let q = Parts::new(6);
    store.prepare(&q.new_image(), 10).unwrap();
    let first = files();
    store.prepare(&q.new_image(), 11).unwrap();
    assert_eq!(files().len(), 1);
    assert_ne!(
        files(),
        first,
        "prepared again: a new object, the old one removed"
    );
    assert_eq!(store.purge_pending(12, 13).unwrap(), 1);
    assert!(files().is_empty());
    store.prepare(&q.new_image(), 14).unwrap();
    store.commit(&q.id, 15).unwrap();
    assert_eq!(store.image(&q.id).unwrap().unwrap().image_share, q.share);
    assert!(PgStore::open_with_shares(&url, 1, Some("s3://bucket/x")).is_err());
}

/// A process opens at most 40 connections, however many requests wait at once (here 60, each
/// holding one while it waits for the ledger lock): two processes stay within PostgreSQL's
/// default of 100 connections instead of failing every request with "too many clients".
#[test]
fn a_process_opens_a_bounded_number_of_connections() {
    let Some(url) = database("connections") else {
        return;
    };
    let store = PgStore::open(&url, 1).unwrap();
    let name = url.rsplit('/').next().unwrap().to_string();
    let mut watch = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    let started = std::time::Instant::now();
    let most = std::thread::scope(|s| {
        for _ in 0..60 {
            s.spawn(|| {
                let held = store.ledger_lock().unwrap();
                std::thread::sleep(std::time::Duration::from_millis(20));
                drop(held);
            });
        }
        let watcher = s.spawn(|| {
            let mut most = 0i64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let n: i64 = watch
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity \
                         WHERE datname = $1 AND backend_type = 'client backend'",
                        &[&name],
                    )
                    .unwrap()
                    .get(0);
                most = most.max(n);
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            most
        });
        std::thread::sleep(std::time::Duration::from_secs(3));
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        watcher.join().unwrap()
    });
    // The watcher's own connection is one of them.
    assert!(most <= 41, "{most} connections");
    // 60 holds of 20 ms one after another, and 3 s of watching: a request waiting for a
    // connection is woken when one is returned, not at its 30 s deadline.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(most > 20, "the requests did not overlap: {most}");
}
