//! What the PostgreSQL store adds to the suite every backend runs: several processes of one node
//! on one database (each open here stands for a process), and a database edited behind the
//! node's back.

mod common;

use common::{posted, Parts};
use ed25519_dalek::SigningKey;
use obscura_sharing::manifest::ImageId;
use obscura_store::{audit, Error, NodeStore, PgStore, TokenMove};
use obscura_tokens::Token;

fn database(test: &str) -> Option<common::Database> {
    let server = common::postgres_server()?;
    let name = format!("obscura_pg_{test}_{}", std::process::id());
    Some(common::Database::new(&server, &name))
}

/// What one process commits the others serve at once, and a request id one admitted the others
/// refuse: a replay sent to a second process of the node gets nowhere.
#[test]
fn processes_of_one_node_share_images_and_the_replay_window() {
    let Some(db) = database("shared") else {
        return;
    };
    let url = db.url.clone();
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
    // The database's size, for the metrics; the free room is the database server's to tell.
    let size = b.size().unwrap();
    assert!(size.bytes > 0 && size.free_bytes.is_none(), "{size:?}");

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
    let Some(db) = database("chain") else {
        return;
    };
    let url = db.url.clone();
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
    let Some(db) = database("tamper") else {
        return;
    };
    let url = db.url.clone();
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
    let Some(db) = database("limits") else {
        return;
    };
    let url = db.url.clone();
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
    let Some(db) = database("counting") else {
        return;
    };
    let url = db.url.clone();
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
    let Some(db) = database("objects") else {
        return;
    };
    let url = db.url.clone();
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
    let Some(db) = database("connections") else {
        return;
    };
    let url = db.url.clone();
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

/// Image `p` with a band element for each token, so that it can move to the next key version.
fn prepare_movable(store: &PgStore, p: &Parts, now: u64) {
    let elements: [[u8; 32]; 8] = std::array::from_fn(|b| {
        let mut e = [0u8; 32];
        e[..16].copy_from_slice(&p.tokens[b].0);
        e
    });
    store
        .prepare(
            &obscura_store::NewImage {
                elements: Some(&elements),
                ..p.new_image()
            },
            now,
        )
        .unwrap();
}

fn next_version(t: &Token) -> Token {
    let mut n = t.0;
    n[15] ^= 0xa5;
    Token(n)
}

/// Images found in all 8 bands of `query` under `version`.
fn found(store: &PgStore, version: u32, query: &[Token; 8]) -> Vec<ImageId> {
    store.lookup_at_least(version, query, 8).unwrap().0
}

/// Each process keeps the committed postings in memory and brings them up to date from the
/// posting log before every lookup: what another process commits, deletes or moves to the next
/// key version it serves at once, and an image deleted through one process is found through
/// none (a copy that missed the delete would go on handing it out).
#[test]
fn a_process_serves_what_another_commits_deletes_and_moves_at_once() {
    let Some(db) = database("mirror") else {
        return;
    };
    let url = db.url.clone();
    let (a, b) = (
        PgStore::open(&url, 1).unwrap(),
        PgStore::open(&url, 1).unwrap(),
    );
    let images: Vec<Parts> = (0..6).map(Parts::new).collect();
    // b's copy is taken before anything is committed.
    assert!(posted(&b, images[0].tokens[0]).is_empty());
    for p in &images {
        prepare_movable(&a, p, 10);
        assert!(found(&b, 1, &p.tokens).is_empty(), "pending is invisible");
        a.commit(&p.id, 11).unwrap();
        assert_eq!(found(&b, 1, &p.tokens), vec![p.id]);
    }
    a.delete(&images[2].id, 12).unwrap();
    // Images 2 and 3 share their band-0 token.
    assert_eq!(
        b.lookup_at_least(1, &images[2].tokens, 1).unwrap().0,
        vec![images[3].id]
    );
    assert_eq!(b.committed_ids(10).unwrap().unwrap().len(), 5);
    let live: Vec<&Parts> = images.iter().filter(|p| p.id != images[2].id).collect();

    let moves: Vec<TokenMove> = a
        .token_elements()
        .unwrap()
        .into_iter()
        .map(|(from, _)| {
            let to = next_version(&from);
            let mut element = [0u8; 32];
            element[..16].copy_from_slice(&to.0);
            TokenMove { from, to, element }
        })
        .collect();
    a.begin_rotation(1, 2, &[7; 32], &moves, 13).unwrap();
    a.rotate_step(3, 14).unwrap();
    for p in &live {
        let moved: [Token; 8] = std::array::from_fn(|i| next_version(&p.tokens[i]));
        assert_eq!(
            found(&b, 1, &p.tokens),
            vec![p.id],
            "half moved, old version"
        );
        assert_eq!(found(&b, 2, &moved), vec![p.id], "half moved, next version");
    }
    // Moved, not posted twice: each image counts once per band, as in a copy read whole.
    let old: Vec<Token> = live.iter().flat_map(|p| p.tokens).collect();
    let whole = PgStore::open(&url, 1).unwrap();
    assert_eq!(
        b.lookup_at_least(1, &old, 1).unwrap(),
        whole.lookup_at_least(1, &old, 1).unwrap()
    );
    assert!(b.lookup_at_least(1, &old, 9).unwrap().0.is_empty());
    while !a.rotate_step(3, 15).unwrap().done {}
    a.finish_rotation(2, 16).unwrap();
    let new: Vec<Token> = old.iter().map(next_version).collect();
    for p in &live {
        let moved: [Token; 8] = std::array::from_fn(|i| next_version(&p.tokens[i]));
        assert_eq!(found(&b, 2, &moved), vec![p.id], "moved");
    }
    assert!(b.lookup_at_least(2, &new, 9).unwrap().0.is_empty());
    assert!(matches!(
        b.lookup_at_least(1, &live[0].tokens, 8),
        Err(Error::KeyVersion { asked: 1, .. })
    ));
}

/// A process whose copy is older than what the posting log keeps (an hour) reads the postings
/// again whole: it misses neither a delete nor a commit that the pruned part of the log held.
#[test]
fn a_copy_older_than_the_posting_log_is_read_again_whole() {
    let Some(db) = database("floor") else {
        return;
    };
    let url = db.url.clone();
    let (a, b) = (
        PgStore::open(&url, 1).unwrap(),
        PgStore::open(&url, 1).unwrap(),
    );
    let images: Vec<Parts> = (0..4).map(Parts::new).collect();
    for p in &images {
        a.prepare(&p.new_image(), 10).unwrap();
        a.commit(&p.id, 11).unwrap();
    }
    assert_eq!(b.committed_ids(10).unwrap().unwrap().len(), 4);
    a.delete(&images[0].id, 20).unwrap();
    let late = Parts::new(40);
    a.prepare(&late.new_image(), 20).unwrap();
    a.commit(&late.id, 20).unwrap();
    // The log is pruned of every change above (as it is an hour on).
    a.prune_posting_log(0).unwrap();
    assert!(found(&b, 1, &images[0].tokens).is_empty(), "deleted");
    assert_eq!(found(&b, 1, &late.tokens), vec![late.id], "committed");
    assert_eq!(b.committed_ids(10).unwrap().unwrap().len(), 4);
    // And from there on it follows the log again.
    a.delete(&images[1].id, 4000).unwrap();
    assert!(found(&b, 1, &images[1].tokens).is_empty(), "deleted after");
}

/// Writers in several processes at once while another process searches: the copy that followed
/// the log through all of it holds what a copy read whole holds.
#[test]
fn a_copy_that_followed_concurrent_writers_equals_one_read_whole() {
    let Some(db) = database("follow") else {
        return;
    };
    let url = db.url.clone();
    let writers: Vec<PgStore> = (0..3).map(|_| PgStore::open(&url, 1).unwrap()).collect();
    let reader = PgStore::open(&url, 1).unwrap();
    let all: Vec<Parts> = (0..150).map(Parts::new).collect();
    let query: Vec<Token> = all.iter().flat_map(|p| p.tokens).collect();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let writing: Vec<_> = writers
            .iter()
            .enumerate()
            .map(|(n, w)| {
                let mine: Vec<&Parts> = all.iter().skip(n).step_by(3).collect();
                s.spawn(move || {
                    for (i, p) in mine.iter().enumerate() {
                        w.prepare(&p.new_image(), 10).unwrap();
                        w.commit(&p.id, 11).unwrap();
                        if i % 4 == 0 {
                            w.delete(&p.id, 12).unwrap();
                        }
                    }
                })
            })
            .collect();
        let reading = s.spawn(|| {
            let mut lookups = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                reader.lookup_at_least(1, &query, 1).unwrap();
                lookups += 1;
            }
            lookups
        });
        for w in writing {
            w.join().unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(reading.join().unwrap() > 1);
    });
    let whole = PgStore::open(&url, 1).unwrap();
    let followed = reader.lookup_at_least(1, &query, 1).unwrap();
    assert_eq!(followed, whole.lookup_at_least(1, &query, 1).unwrap());
    // 150 committed, every fourth of each writer's deleted.
    let deleted: usize = (0..3)
        .map(|n| all.iter().skip(n).step_by(3).step_by(4).count())
        .sum();
    assert_eq!(followed.1, 150 - deleted);
}

/// A writer that knows neither the posting log nor the writer lock (an operator's SQL, a
/// process of an older release): triggers on the images table log its changes, and take the
/// writer lock, so a node's commit made while the operator's delete is open waits for it and
/// logs after it. Without the lock the commit took the later position, a process caught up past
/// it, and the delete, logged before, was never applied: the image stayed findable.
#[test]
fn an_image_deleted_by_a_writer_that_knows_no_log_is_not_found() {
    let Some(db) = database("nolog") else {
        return;
    };
    let url = db.url.clone();
    let (a, b) = (
        PgStore::open(&url, 1).unwrap(),
        PgStore::open(&url, 1).unwrap(),
    );
    let (p, q, late) = (Parts::new(4), Parts::new(6), Parts::new(8));
    for i in [&p, &q] {
        a.prepare(&i.new_image(), 10).unwrap();
        a.commit(&i.id, 11).unwrap();
    }
    a.prepare(&late.new_image(), 12).unwrap();
    assert_eq!(found(&b, 1, &p.tokens), vec![p.id]);
    let hex: String = p.id.0.iter().map(|b| format!("{b:02x}")).collect();
    let mut sql = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    sql.batch_execute(&format!(
        "BEGIN; DELETE FROM postings WHERE image = '\\x{hex}'; \
         DELETE FROM images WHERE id = '\\x{hex}'"
    ))
    .unwrap();
    std::thread::scope(|s| {
        let committing = s.spawn(|| a.commit(&late.id, 13).unwrap());
        std::thread::sleep(std::time::Duration::from_millis(300));
        // While the operator's transaction is open, b catches up on what is committed.
        assert_eq!(found(&b, 1, &p.tokens), vec![p.id]);
        sql.batch_execute("COMMIT").unwrap();
        committing.join().unwrap();
    });
    assert_eq!(found(&b, 1, &late.tokens), vec![late.id]);
    assert!(
        found(&b, 1, &p.tokens).is_empty(),
        "deleted by the operator"
    );
    assert_eq!(found(&b, 1, &q.tokens), vec![q.id]);
    let mut ids = b.committed_ids(10).unwrap().unwrap();
    ids.sort();
    assert_eq!(ids, vec![q.id, late.id]);
}

/// The database goes back under a running process (restored from a backup, failed over to a
/// standby that lacks the last commits, or made again): the log's positions start again below
/// the copy's, and a copy that only read past its own position would go on serving images the
/// database no longer has and miss what it now holds. It is read whole instead.
#[test]
fn a_database_made_again_under_a_running_process_is_read_whole() {
    let Some(server) = common::postgres_server() else {
        return;
    };
    let name = format!("obscura_pg_again_{}", std::process::id());
    let db = common::Database::new(&server, &name);
    let b = PgStore::open(&db.url, 1).unwrap();
    let before: Vec<Parts> = (0..4).map(Parts::new).collect();
    {
        let a = PgStore::open(&db.url, 1).unwrap();
        for p in &before {
            a.prepare(&p.new_image(), 10).unwrap();
            a.commit(&p.id, 11).unwrap();
        }
    }
    assert_eq!(b.committed_ids(10).unwrap().unwrap().len(), 4);
    obscura_store::pg::fresh_database(&server, &name).unwrap();
    let again = PgStore::open(&db.url, 1).unwrap();
    let after = Parts::new(40);
    again.prepare(&after.new_image(), 20).unwrap();
    again.commit(&after.id, 21).unwrap();
    assert!(
        found(&b, 1, &before[0].tokens).is_empty(),
        "gone with the database"
    );
    assert_eq!(found(&b, 1, &after.tokens), vec![after.id]);
    assert_eq!(b.committed_ids(10).unwrap(), Some(vec![after.id]));
}
