//! `kill -9` in the middle of indexing: every image the store acknowledged is there, committed
//! and intact after restart; nothing is half-written; the audit chain still verifies.
//!
//! The test re-runs its own binary as the writer process (the ignored test `writer`), reads the
//! acknowledgements it prints, and kills it with SIGKILL mid-stream.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{posted, Backend, Parts, TempDir};
use ed25519_dalek::SigningKey;
use obscura_store::{audit, ImageState};

const DB_VAR: &str = "OBSCURA_CRASH_TEST_DB";

/// The writer: indexes images until killed, printing each one once the store acknowledged it.
#[test]
#[ignore = "run only as the child process of acknowledged_writes_survive_kill_9"]
fn writer() {
    let path = std::env::var(DB_VAR).expect("run by acknowledged_writes_survive_kill_9");
    let store = Backend::from_location(&path).open(1).unwrap();
    for i in 0.. {
        let p = Parts::new(i);
        store.prepare(&p.new_image(), 1000 + u64::from(i)).unwrap();
        if i % 3 != 2 {
            store.commit(&p.id, 1000 + u64::from(i)).unwrap();
            println!("acked {i}");
        }
    }
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    let dir = TempDir::new("crash");
    for backend in common::backends(&dir, "crash") {
        eprintln!("on {}", backend.name());
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "writer",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(DB_VAR, backend.location())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut acked = Vec::new();
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            if let Some(i) = line.unwrap().strip_prefix("acked ") {
                acked.push(i.parse::<u32>().unwrap());
                if acked.len() == 40 {
                    break;
                }
            }
        }
        child.kill().unwrap(); // SIGKILL: no destructors, no flush
        child.wait().unwrap();
        assert_eq!(acked.len(), 40, "writer stopped early");

        let store = backend.open(1).unwrap();
        for &i in &acked {
            let p = Parts::new(i);
            assert_eq!(
                store.state(&p.id).unwrap(),
                Some(ImageState::Committed),
                "image {i}"
            );
            let img = store.image(&p.id).unwrap().unwrap();
            assert_eq!(
                (img.manifest, img.image_share),
                (p.manifest.clone(), p.share.clone())
            );
            assert_eq!(store.hash_shares(&[p.id]).unwrap(), vec![Some(p.hash)]);
            for t in &p.tokens {
                assert!(
                    posted(&*store, *t).contains(&p.id),
                    "posting {t:?} of image {i}"
                );
            }
        }
        // Whatever else is there is whole: pending images have every part and can be purged.
        let stats = store.stats().unwrap();
        assert!(stats.committed >= acked.len() as u64);
        let purged = store.purge_pending(u64::MAX, 5000).unwrap();
        assert_eq!(purged as u64, stats.pending);
        // The audit chain survived the crash intact.
        let key = SigningKey::from_bytes(&[1; 32]);
        store.audit_checkpoint(&key, 5001).unwrap();
        let report = audit::verify(&store.audit_entries().unwrap(), &key.verifying_key()).unwrap();
        assert_eq!(report.unsigned_tail, 0);
    }
}
