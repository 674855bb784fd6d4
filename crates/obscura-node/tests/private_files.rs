//! What a local user on a shared machine can read of a cluster directory: nothing secret. Every
//! party has its own wrapping key, every secret file is 0600 in a 0700 folder, a server refuses
//! to start when its secret files are open to others, and one party's sealed secrets do not open
//! as another's even beside that party's own wrapping key.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use obscura_cluster::Error as FilesError;
use obscura_keeper_server::LoadedKeeper;
use obscura_node::config::{Error, LoadedNode};

struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

fn made(name: &str) -> (Scratch, PathBuf) {
    let scratch = std::env::temp_dir().join(format!("obscura-files-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&scratch).ok();
    std::fs::create_dir_all(&scratch).unwrap();
    let dir = scratch.join("cluster");
    let opt = obscura_cluster::deal::InitOptions::new(5, 3, "127.0.0.1", 27_401, 27_501);
    obscura_cluster::deal::init(&dir, &opt).unwrap();
    (Scratch(scratch), dir)
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn every_secret_is_owner_only_and_every_party_has_its_own_wrapping_key() {
    let (_s, dir) = made("modes");
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("bootstrap.code")), 0o600);
    let mut keys = Vec::new();
    assert_eq!(mode(&dir.join("owner/provision.sealed")), 0o600);
    for party in ["client", "owner", "node1", "node5", "keeper1", "keeper3"] {
        let d = dir.join(party);
        assert_eq!(mode(&d), 0o700, "{party}");
        let key = d.join("wrapping.key");
        assert_eq!(mode(&key), 0o600, "{party}");
        keys.push(std::fs::read_to_string(&key).unwrap());
        for secret in ["secrets.sealed", "owner.sealed"] {
            if d.join(secret).exists() {
                assert_eq!(mode(&d.join(secret)), 0o600, "{party}/{secret}");
            }
        }
    }
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 6, "parties share a wrapping key");
    // The owner's key is not among the client's secrets: a copy of the directory without
    // `owner/` is a client that cannot act as the owner.
    std::fs::remove_dir_all(dir.join("owner")).unwrap();
    let parts = obscura_client::config::load(&dir).unwrap();
    assert!(parts.owner.is_none());
}

#[test]
fn a_server_refuses_to_start_when_its_secrets_are_open_to_others() {
    let (_s, dir) = made("refuse");
    let node = dir.join("node2");
    for (path, was) in [
        (node.join("secrets.sealed"), 0o600),
        (node.join("wrapping.key"), 0o600),
        (node.clone(), 0o700),
    ] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(was | 0o044)).unwrap();
        let err = LoadedNode::load(&node.join("node.json")).unwrap_err();
        assert!(
            matches!(err, Error::Files(FilesError::NotPrivate { .. })),
            "{err}"
        );
        assert!(err.to_string().contains("chmod"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(was)).unwrap();
    }
    // Restored, it starts, and the store it makes is owner-only from the first byte.
    let loaded = LoadedNode::load(&node.join("node.json")).unwrap();
    drop(loaded);
    assert_eq!(mode(&node.join("store.redb")), 0o600);
    std::fs::set_permissions(
        node.join("store.redb"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    assert!(matches!(
        LoadedNode::load(&node.join("node.json")),
        Err(Error::Files(FilesError::NotPrivate { .. }))
    ));
    // Keepers check theirs too.
    let keeper = dir.join("keeper1");
    std::fs::set_permissions(
        keeper.join("secrets.sealed"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    let err = LoadedKeeper::load(&keeper.join("keeper.json")).unwrap_err();
    assert!(
        matches!(err, Error::Files(FilesError::NotPrivate { .. })),
        "{err}"
    );
    // And their keyring, which holds the key of every user record.
    std::fs::set_permissions(
        keeper.join("secrets.sealed"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    drop(LoadedKeeper::load(&keeper.join("keeper.json")).unwrap());
    let keyring = keeper.join("keyring.sealed");
    assert_eq!(mode(&keyring), 0o600);
    std::fs::set_permissions(&keyring, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = LoadedKeeper::load(&keeper.join("keeper.json")).unwrap_err();
    assert!(
        matches!(err, Error::Files(FilesError::NotPrivate { .. })),
        "{err}"
    );
}

#[test]
fn one_partys_sealed_secrets_do_not_open_as_anothers() {
    let (_s, dir) = made("swap");
    // Node 2's sealed secrets and its wrapping key, both copied over node 3's.
    for file in ["secrets.sealed", "wrapping.key"] {
        std::fs::copy(dir.join("node2").join(file), dir.join("node3").join(file)).unwrap();
    }
    let err = LoadedNode::load(&dir.join("node3/node.json")).unwrap_err();
    assert!(matches!(err, Error::Files(FilesError::Secrets(_))), "{err}");
    // Nor do a keeper's as another keeper's.
    for file in ["secrets.sealed", "wrapping.key"] {
        std::fs::copy(
            dir.join("keeper1").join(file),
            dir.join("keeper2").join(file),
        )
        .unwrap();
    }
    let err = LoadedKeeper::load(&dir.join("keeper2/keeper.json")).unwrap_err();
    assert!(matches!(err, Error::Files(FilesError::Secrets(_))), "{err}");
    // Nor a node's as a keeper's, beside that node's own wrapping key.
    for file in ["secrets.sealed", "wrapping.key"] {
        std::fs::copy(dir.join("node1").join(file), dir.join("keeper3").join(file)).unwrap();
    }
    let err = LoadedKeeper::load(&dir.join("keeper3/keeper.json")).unwrap_err();
    assert!(matches!(err, Error::Files(FilesError::Secrets(_))), "{err}");
}

/// A keeper's files hold no token-key share until it runs and is appraised: a local user who
/// reads them (or a keeper machine's operator with the keeper's wrapping key, running whatever
/// build it likes) finds none. The shares wait at the data owner, under the owner's key only.
#[test]
fn a_new_keepers_files_hold_no_token_key_share_until_it_is_appraised() {
    use obscura_cluster::keeper::{keeper_purpose, KeeperSecrets};
    use obscura_tokens::keyfile::WrappingKey;
    let (_s, dir) = made("unprovisioned");
    for j in 1..=3u8 {
        let kd = dir.join(format!("keeper{j}"));
        let secrets: KeeperSecrets = obscura_cluster::files::open_secrets(
            &std::fs::read(kd.join("secrets.sealed")).unwrap(),
            &keeper_purpose(j),
            &WrappingKey::from_file(&kd.join("wrapping.key")).unwrap(),
        )
        .unwrap();
        assert!(secrets.shares.is_empty(), "keeper {j}");
        assert!(secrets.bound_shares.is_none(), "keeper {j}");
    }
    let owner = WrappingKey::from_file(&dir.join("owner/wrapping.key")).unwrap();
    let pending = obscura_cluster::provision::read(&dir, &owner)
        .unwrap()
        .unwrap();
    let held: Vec<(u8, usize)> = pending
        .keepers
        .iter()
        .map(|a| (a.keeper, a.shares.len()))
        .collect();
    // One share each, of the cluster's token key.
    assert_eq!(held, [(1, 1), (2, 1), (3, 1)]);
    // Not under any other party's key.
    for party in ["client", "keeper1", "node1"] {
        let key = WrappingKey::from_file(&dir.join(party).join("wrapping.key")).unwrap();
        assert!(
            obscura_cluster::provision::read(&dir, &key).is_err(),
            "{party}"
        );
    }
}
