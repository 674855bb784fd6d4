//! The keepers as a key server, against real keeper servers on loopback: registration and
//! login (OPAQUE), wrong passwords and unknown users answered alike, growing delays and a
//! lockout an admin lifts, sessions that refuse replayed, reordered, reflected and moved
//! messages, a store restored from an old copy refused, a deleted secret unreadable from an
//! old copy, secrets rebuilt from any T keepers with a lying keeper named, threshold Ed25519
//! signatures with a keeper down and a lying keeper named, and password changes.

mod common;

use std::time::Duration;

use common::*;
use obscura_client::{Error, Fault};
use obscura_cluster::keeper::keyring_path;
use obscura_cluster::keeper::LoginPolicy;
use obscura_keeper::session::{Channel, ClientLogin, Role};
use obscura_keeper_server::accounts::StoredSecret;
use obscura_keeper_server::vault::{Kind, Vault};
use obscura_keeper_server::LoadedKeeper;
use obscura_proto::{roles, ErrorCode, KeeperBody, Request, Response, ResponseBody, SecretKind};
use obscura_store::keeper::KeeperStore;
use rand_core::{OsRng, RngCore, SeedableRng};

/// Token keys a cluster deals: one, the cluster key (numbered 1 in the keepers' messages).
const KEYS: usize = 1;

fn reasons(e: &Error) -> Vec<String> {
    match e {
        Error::Keepers { failures, .. } => failures.iter().map(|f| f.reason()).collect(),
        other => vec![other.to_string()],
    }
}

/// A login as `user` started by hand at every keeper and never finished: a failed guess the
/// keepers count, without the client's password stretching.
async fn start_logins(c: &Cluster, user: &str) {
    for j in 1..=3 {
        let (_, ke1) = ClientLogin::start(b"a guess", &mut OsRng).unwrap();
        let answer = raw(
            c,
            j,
            KeeperBody::KeeperLoginStart {
                user: user.into(),
                ke1,
            },
        )
        .await;
        assert!(
            matches!(answer, ResponseBody::KeeperLoginStarted { .. }),
            "{user} at keeper {j}: {answer:?}"
        );
    }
}

/// A login at keeper `j` by hand as the administrator: the session's channel.
async fn raw_login(c: &Cluster, j: u8) -> Channel {
    raw_login_as(c, j, ADMIN, PASSWORD).await
}

fn sealed_request(channel: &mut Channel, body: KeeperBody) -> Vec<u8> {
    sealed_request_at(channel, body, now_s())
}

/// A sealed request whose own time is `timestamp`.
fn sealed_request_at(channel: &mut Channel, body: KeeperBody, timestamp: u64) -> Vec<u8> {
    let inner = Request {
        request_id: [0; 16],
        timestamp,
        body,
        auth: None,
    }
    .encode();
    channel.seal(&inner, 0).unwrap()
}

/// Sleep until just after the next whole second of the clock.
async fn next_second() {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    tokio::time::sleep(Duration::from_nanos(
        u64::from(1_000_000_000 - nanos) + 20_000_000,
    ))
    .await;
}

fn refused(answer: &ResponseBody) -> bool {
    matches!(answer, ResponseBody::Error { code: ErrorCode::NoSession, message } if message.contains("refused"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_login_and_no_oracle_for_unknown_users() {
    let c = Cluster::start("accounts").await;
    // Without a session a keeper evaluates nothing.
    let stranger = c.fresh_client();
    let err = stranger
        .search(&testdata("derived/coffee.q75.jpg"), 5, 10)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("log in"), "{err}");
    // Nor does it register a second account outside an admin's session.
    assert!(stranger
        .register("mallory", b"pw", roles::QUERIER)
        .await
        .is_err());

    // The admin registers bob; bob logs in and searches; bob is no admin.
    c.client
        .register("bob", b"bob's password", roles::QUERIER)
        .await
        .unwrap();
    let bob = c.fresh_client();
    let report = bob.login("bob", b"bob's password").await.unwrap();
    assert_eq!(report.keepers, vec![1, 2, 3]);
    assert!(bob
        .search(&testdata("derived/coffee.q75.jpg"), 5, 10)
        .await
        .is_ok());
    let err = bob
        .register("carol", b"x", roles::QUERIER)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("forbidden"), "{err}");
    assert!(c
        .client
        .register("bob", b"again", roles::QUERIER)
        .await
        .is_err());

    // A wrong password and an unknown user get the same answer from every keeper.
    let wrong = c.fresh_client().login("bob", b"not it").await.unwrap_err();
    let unknown = c
        .fresh_client()
        .login("nobody", b"not it")
        .await
        .unwrap_err();
    // (The client sees it first: KE2 does not open with the password, so it sends no KE3.)
    assert_eq!(reasons(&wrong), vec!["login failed"; 3]);
    assert_eq!(reasons(&wrong), reasons(&unknown));
    // And the same KE2 shape: a keeper's second message does not depend on the account.
    let ke2_len = |user: &'static str| {
        let c = &c;
        async move {
            let (_, ke1) = ClientLogin::start(b"guess", &mut OsRng).unwrap();
            match raw(
                c,
                1,
                KeeperBody::KeeperLoginStart {
                    user: user.into(),
                    ke1,
                },
            )
            .await
            {
                ResponseBody::KeeperLoginStarted { ke2, .. } => ke2.len(),
                other => panic!("{other:?}"),
            }
        }
    };
    assert_eq!(ke2_len("bob").await, ke2_len("nobody").await);

    // Logout ends the sessions at the keepers.
    bob.logout().await.unwrap();
    assert!(bob.user().is_none());
    let err = bob
        .search(&testdata("derived/coffee.q75.jpg"), 5, 10)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("log in"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_wait_longer_then_lock_and_unknown_users_fare_the_same() {
    let c = Cluster::start_with(
        "lockout",
        Setup {
            login: LoginPolicy {
                free: 1,
                lock_after: 3,
                source_free: 1000,
                max_delay_s: 60,
                fresh_login_s: 300,
                lock_s: 900,
                max_lock_s: 3600,
            },
            ..VOPRF
        },
    )
    .await;
    c.client
        .register("bob", b"bob's password", roles::QUERIER)
        .await
        .unwrap();
    let attempt = |user: &'static str, pw: &'static [u8]| {
        let client = c.fresh_client();
        async move {
            match client.login(user, pw).await {
                Ok(_) => vec!["ok".to_string()],
                Err(e) => reasons(&e),
            }
        }
    };
    let both = || async {
        let bob = attempt("bob", b"wrong").await;
        let nobody = attempt("nobody", b"wrong").await;
        assert_eq!(bob, nobody, "a known and an unknown account differ");
        bob[0].clone()
    };
    // A failed guess that a keeper counts: a login started at every keeper and never
    // finished. Starting costs no password stretching, so the checks that follow run within
    // the same second even on a loaded machine.
    let guess = || async {
        for user in ["bob", "nobody"] {
            start_logins(&c, user).await;
        }
    };
    // A whole login with a wrong password fails alike for both names.
    assert!(both().await.contains("login failed"));
    c.client.unlock("bob").await.unwrap();
    c.client.unlock("nobody").await.unwrap();
    // Keepers count time in whole seconds: each step starts just after a second begins, so
    // that its attempts fall in one second.
    next_second().await;
    guess().await;
    let wait = both().await;
    assert!(wait.contains("wait 1 s"), "{wait}");
    next_second().await;
    guess().await;
    let wait = both().await;
    assert!(wait.contains("wait 2 s"), "the delay grows: {wait}");
    next_second().await;
    next_second().await;
    guess().await;
    // Locked now: even the right password is refused, until an admin unlocks.
    let locked = attempt("bob", b"bob's password").await;
    assert!(locked[0].contains("locked"), "{locked:?}");
    assert_eq!(locked, attempt("nobody", b"bob's password").await);
    c.client.unlock("bob").await.unwrap();
    assert_eq!(attempt("bob", b"bob's password").await, vec!["ok"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_limited_per_source_too() {
    let c = Cluster::start_with(
        "sources",
        Setup {
            login: LoginPolicy {
                free: 100,
                lock_after: 1000,
                source_free: 2,
                max_delay_s: 60,
                fresh_login_s: 300,
                lock_s: 900,
                max_lock_s: 3600,
            },
            ..VOPRF
        },
    )
    .await;
    // Guessing across many names from one address runs into the address's limit. A keeper
    // counts a login when it starts, so four started by hand at every keeper count as four
    // failures, two past the two free ones: a wait of 4 s (each started once the wait of the
    // ones before ran out). Starting them costs no password stretching, so the client's login
    // below follows well within the wait even on a loaded machine (with two failures the wait
    // was 1 s, and a busy CI machine outran it).
    for (i, user) in ["a", "b", "d", "e"].into_iter().enumerate() {
        if i >= 2 {
            tokio::time::sleep(std::time::Duration::from_millis((1000 << (i - 2)) + 200)).await;
        }
        start_logins(&c, user).await;
    }
    let r = reasons(&c.fresh_client().login("c", b"x").await.unwrap_err());
    assert_eq!(r.len(), 3, "{r:?}");
    assert!(r.iter().all(|r| r.contains("from this address")), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_messages_replayed_reordered_reflected_or_moved_are_refused() {
    let c = Cluster::start("channel").await;
    let mut one = raw_login(&c, 1).await;
    let mut two = raw_login(&c, 1).await;
    let session = one.id();
    let send = |session: [u8; 16], message: Vec<u8>| {
        let c = &c;
        async move { raw(c, 1, KeeperBody::KeeperSealed { session, message }).await }
    };
    let m0 = sealed_request(&mut one, KeeperBody::SecretList);
    let ResponseBody::KeeperSealed { message: r0 } = send(session, m0.clone()).await else {
        panic!("first message refused")
    };
    let opened = Response::decode(&one.open(&r0, 0).unwrap()).unwrap().0;
    assert!(matches!(opened, ResponseBody::Secrets { .. }), "{opened:?}");
    // Replayed.
    assert!(refused(&send(session, m0).await));
    // Reflected: the keeper's own answer sent back to it.
    assert!(refused(&send(session, r0).await));
    let m1 = sealed_request(&mut one, KeeperBody::SecretList);
    let m2 = sealed_request(&mut one, KeeperBody::UserEvents);
    // Moved to another session of the same user.
    assert!(refused(&send(two.id(), m1.clone()).await));
    // Altered.
    let mut altered = m2.clone();
    *altered.last_mut().unwrap() ^= 1;
    assert!(refused(&send(session, altered).await));
    // Refusals leave the session in step. The third before the second (the second lost on the
    // way): the third goes through, and the second, now older than the last, is refused.
    let ResponseBody::KeeperSealed { message } = send(session, m2).await else {
        panic!("a later message refused")
    };
    one.open(&message, 0).unwrap();
    assert!(refused(&send(session, m1).await));
    // Held back for an hour by whoever carried it: its number still opens, but the keeper
    // refuses a request that old.
    let held = sealed_request_at(&mut one, KeeperBody::SecretList, now_s() - 3600);
    let ResponseBody::KeeperSealed { message } = send(session, held).await else {
        panic!("a held-back message did not open")
    };
    let opened = Response::decode(&one.open(&message, 0).unwrap()).unwrap().0;
    assert!(
        matches!(
            opened,
            ResponseBody::Error {
                code: ErrorCode::Stale,
                ..
            }
        ),
        "{opened:?}"
    );
    // The other session is untouched too.
    let m = sealed_request(&mut two, KeeperBody::SecretList);
    assert!(matches!(
        send(two.id(), m).await,
        ResponseBody::KeeperSealed { .. }
    ));
    // A keeper operation sent in clear is refused.
    let clear = raw(&c, 1, KeeperBody::SecretList).await;
    assert!(
        matches!(
            clear,
            ResponseBody::Error {
                code: ErrorCode::NoSession,
                ..
            }
        ),
        "{clear:?}"
    );
}

fn keeper_config(c: &Cluster, j: u8) -> std::path::PathBuf {
    c.keeper_config(j)
}

/// Open keeper `j`'s store and vault while it is down.
fn open_vault(c: &Cluster, j: u8) -> (KeeperStore, Vault) {
    let config: obscura_cluster::keeper::KeeperConfig =
        serde_json::from_slice(&std::fs::read(keeper_config(c, j)).unwrap()).unwrap();
    let store = KeeperStore::open(&c.keeper_store(j), j).unwrap();
    let vault = Vault::open(
        &store,
        &keyring_path(&keeper_config(c, j), &config),
        j,
        c.keeper_wrapping(j),
    )
    .unwrap();
    (store, vault)
}

/// Replace keeper `j`'s record of the admin's secret `id` with `change` applied (the keeper is
/// down): a keeper whose state was tampered with, or that lies.
fn tamper_secret(c: &Cluster, j: u8, id: &[u8; 16], change: impl FnOnce(&mut StoredSecret)) {
    let (store, vault) = open_vault(c, j);
    let user = vault.handle(ADMIN);
    let (version, bytes) = vault.get(&store, Kind::Secret, &user, id).unwrap().unwrap();
    let mut secret: StoredSecret = postcard::from_bytes(&bytes).unwrap();
    change(&mut secret);
    let bytes = postcard::to_allocvec(&secret).unwrap();
    vault
        .write(
            &store,
            &[(Kind::Secret, user, id.to_vec(), &bytes, version + 1)],
            &[],
            id,
            "tampered by the test",
            0,
        )
        .unwrap();
}

/// A keeper that holds another public key for the cluster's capability key (tampered with, or
/// lying) is left out of the signing and the others sign: one keeper cannot stop every login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keeper_with_another_capability_key_cannot_stop_logins() {
    use obscura_cluster::keeper::{keeper_purpose, KeeperSecrets};
    let mut c = Cluster::start("other-capability-key").await;
    c.keeper_down(1).await;
    let path = c.dir.join("keeper1/secrets.sealed");
    let key = c.keeper_wrapping(1);
    let mut secrets: KeeperSecrets = obscura_cluster::files::open_secrets(
        &std::fs::read(&path).unwrap(),
        &keeper_purpose(1),
        &key,
    )
    .unwrap();
    let (_, other) = obscura_keeper::signing::deal(3, 2, &mut OsRng).unwrap();
    secrets.capability_public = obscura_keeper::signing::public_package_bytes(&other).unwrap();
    let sealed =
        obscura_cluster::files::seal_secrets(&secrets, &keeper_purpose(1), &key, &mut OsRng)
            .unwrap();
    obscura_cluster::files::write_private_atomic(&path, &sealed).unwrap();
    c.keeper_up(1).await;
    // Keeper 1 answers first and used to stop the signing ("keepers 1 and 2 hold different
    // public keys"); now it is left out, and keepers 2 and 3 sign the capability.
    let client = c.fresh_client();
    client.login(ADMIN, PASSWORD).await.unwrap();
    assert!(client.holder().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_restored_from_an_old_copy_is_refused_until_an_admin_accepts_it() {
    let mut c = Cluster::start("rollback").await;
    let store = c.keeper_store(1);
    let old = c.scratch.join("keeper1.old.redb");
    let (key, id, expires_at) = raw_session(&c, 1, ADMIN, PASSWORD).await;
    c.keeper_down(1).await;
    std::fs::copy(&store, &old).unwrap();
    // Two secrets change keeper 1's records (a copy one write behind is a crash's).
    c.keeper_up(1).await;
    for name in ["note", "another"] {
        c.client
            .secret_put(name, b"written after the copy", "import")
            .await
            .unwrap();
    }
    c.keeper_down(1).await;
    std::fs::copy(&old, &store).unwrap();
    let err = LoadedKeeper::load(&keeper_config(&c, 1))
        .unwrap_err()
        .to_string();
    assert!(err.contains("restored from an older copy"), "{err}");
    // The admin looks, and accepts.
    obscura_keeper_server::accept_restore(&keeper_config(&c, 1)).unwrap();
    c.keeper_up(1).await;
    // The copy's sessions ended with the restore: their lanes may be behind what was sealed.
    let mut channel = Channel::resume(&key, id, expires_at, 9);
    let answer = in_session(&c, 1, &mut channel, KeeperBody::SecretList).await;
    assert_eq!(
        error_code(&answer),
        Some(ErrorCode::NoSession),
        "{answer:?}"
    );
    c.client.login(ADMIN, PASSWORD).await.unwrap();
    assert!(c.client.secret_list().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_secret_cannot_be_read_from_an_older_copy_of_the_store() {
    let mut c = Cluster::start("deletion").await;
    let plain = b"a secret that must be gone for good".to_vec();
    let id = c
        .client
        .secret_put("doomed", &plain, "import")
        .await
        .unwrap();
    let store = c.keeper_store(1);
    let copy = c.scratch.join("keeper1.copy.redb");
    c.keeper_down(1).await;
    std::fs::copy(&store, &copy).unwrap();
    c.keeper_up(1).await;
    assert!(c.client.secret_delete(&id).await.unwrap().is_empty());
    c.keeper_down(1).await;

    // The old copy still holds the sealed record, and the keeper's current keys cannot open it.
    std::fs::copy(&copy, &store).unwrap();
    obscura_keeper_server::accept_restore(&keeper_config(&c, 1)).unwrap();
    let (old, vault) = open_vault(&c, 1);
    let user = vault.handle(ADMIN);
    let key = obscura_keeper_server::vault::record_key(Kind::Secret, &user, &id);
    let sealed = old
        .vault_get(&key)
        .unwrap()
        .expect("the old copy holds the record");
    assert!(!sealed.windows(8).any(|w| plain.windows(8).any(|p| p == w)));
    let err = vault
        .get(&old, Kind::Secret, &user, &id)
        .unwrap_err()
        .to_string();
    assert!(err.contains("destroyed"), "{err}");
    drop((old, vault));
    // Served again from the old copy, keeper 1 neither lists nor returns it.
    c.keeper_up(1).await;
    assert!(c.client.secret_list().await.unwrap().is_empty());
    assert!(c.client.secret_get(&id, false).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_round_trip_from_any_t_keepers_and_a_lying_keeper_is_named() {
    let mut c = Cluster::start("secrets").await;
    let mut plain = vec![0u8; 100];
    OsRng.fill_bytes(&mut plain);
    let id = c
        .client
        .secret_put("api key", &plain, "import")
        .await
        .unwrap();
    let got = c.client.secret_get(&id, false).await.unwrap();
    assert_eq!(*got.secret, plain);
    assert_eq!(got.name, "api key");
    assert!(got.faults.is_empty());
    let list = c.client.secret_list().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!((list[0].id, list[0].kind), (id, SecretKind::Data));

    // A keeper down: any T of M rebuild it.
    c.keeper_down(3).await;
    let got = c.client.secret_get(&id, true).await.unwrap();
    assert_eq!(*got.secret, plain);
    assert_eq!(got.faults.iter().map(|f| f.keeper).collect::<Vec<_>>(), [3]);
    c.keeper_up(3).await;

    // A keeper returning a wrong share is named, and the others rebuild the secret.
    c.keeper_down(2).await;
    tamper_secret(&c, 2, &id, |s| s.share[7] ^= 0x5a);
    c.keeper_up(2).await;
    let got = c.client.secret_get(&id, false).await.unwrap();
    assert_eq!(*got.secret, plain);
    assert!(
        got.faults
            .iter()
            .any(|f| f.keeper == 2 && f.fault == Fault::BadSecretShare),
        "{:?}",
        got.faults
    );
    // With keeper 3 down too, keepers 1 and 2 disagree and nothing shows which of them lies:
    // the secret is not rebuilt, and no keeper is accused (the one down least of all).
    c.keeper_down(3).await;
    let err = c.client.secret_get(&id, false).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotRebuilt {
                answered: 2,
                failed_sets: 1,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.culprits(), []);
    c.keeper_up(3).await;

    // Every operation is in the user's own trail at each keeper.
    let trails = c.client.user_events().await.unwrap();
    assert_eq!(trails.len(), 3);
    let actions: Vec<&str> = trails[0].1.iter().map(|e| e.action.as_str()).collect();
    for a in [
        "register",
        "login",
        "secret import",
        "secret get",
        "secret export",
    ] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }

    // Deleted: gone at every keeper.
    c.client.secret_delete(&id).await.unwrap();
    assert!(c.client.secret_get(&id, false).await.is_err());
    assert!(c.client.secret_list().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threshold_signatures_verify_with_ed25519_and_a_lying_keeper_is_named() {
    use ed25519_dalek::{Signature, VerifyingKey};
    let mut c = Cluster::start("signing").await;
    let (id, public) = c.client.signing_key_generate("release key").await.unwrap();
    let verifier = VerifyingKey::from_bytes(&public).unwrap();
    let list = c.client.secret_list().await.unwrap();
    assert_eq!((list[0].id, list[0].kind), (id, SecretKind::Signing));
    // A signing key is never rebuilt.
    assert!(c.client.secret_get(&id, true).await.is_err());

    let message = b"obscura release 1.0";
    let signed = c.client.sign(&id, message).await.unwrap();
    assert_eq!(signed.public_key, public);
    assert_eq!(signed.signers.len(), KT);
    verifier
        .verify_strict(message, &Signature::from_bytes(&signed.signature))
        .unwrap();
    assert!(verifier
        .verify_strict(
            b"another message",
            &Signature::from_bytes(&signed.signature)
        )
        .is_err());

    // A keeper down: the other two sign.
    c.keeper_down(1).await;
    let signed = c.client.sign(&id, message).await.unwrap();
    assert_eq!(signed.signers, vec![2, 3]);
    verifier
        .verify_strict(message, &Signature::from_bytes(&signed.signature))
        .unwrap();
    c.keeper_up(1).await;

    // Keeper 2 signs with a wrong share: named, and keepers 1 and 3 sign instead.
    c.keeper_down(2).await;
    tamper_secret(&c, 2, &id, |s| {
        let key = obscura_keeper::signing::key_package_from(&s.share).unwrap();
        let mut wrong = [0u8; 32];
        wrong[0] = 42;
        let share = frost_ed25519::keys::SigningShare::deserialize(&wrong).unwrap();
        let lying = frost_ed25519::keys::KeyPackage::new(
            *key.identifier(),
            share,
            *key.verifying_share(),
            *key.verifying_key(),
            *key.min_signers(),
        );
        s.share = obscura_keeper::signing::key_package_bytes(&lying)
            .unwrap()
            .to_vec();
    });
    c.keeper_up(2).await;
    let signed = c.client.sign(&id, message).await.unwrap();
    assert!(
        signed
            .faults
            .iter()
            .any(|f| f.keeper == 2 && f.fault == Fault::BadSignatureShare),
        "{:?}",
        signed.faults
    );
    assert_eq!(signed.signers, vec![1, 3]);
    verifier
        .verify_strict(message, &Signature::from_bytes(&signed.signature))
        .unwrap();
    // With keeper 1 down as well, the liar and keeper 3 cannot sign: the error names the liar
    // as the one culprit, and keeper 1 only as down.
    c.keeper_down(1).await;
    let err = c.client.sign(&id, message).await.unwrap_err();
    assert_eq!(err.culprits(), [obscura_client::Party::Keeper(2)], "{err}");
    c.keeper_up(1).await;
    let trails = c.client.user_events().await.unwrap();
    assert!(trails
        .iter()
        .all(|(_, events)| events.iter().any(|e| e.action == "signing key generate")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_needs_a_fresh_login_and_finishes_after_a_keeper_was_down() {
    let mut c = Cluster::start_with(
        "passwd",
        Setup {
            // Long enough for a change (a login, then a registration with Argon2id) on a
            // loaded machine; short enough to wait out below.
            login: LoginPolicy {
                fresh_login_s: 3,
                ..VOPRF.login
            },
            ..VOPRF
        },
    )
    .await;
    const OLD: &[u8] = b"bob's password";
    const NEW: &[u8] = b"bob's new password";
    c.client.register("bob", OLD, roles::QUERIER).await.unwrap();
    let bob = c.fresh_client();
    bob.login("bob", OLD).await.unwrap();
    let elsewhere = c.fresh_client();
    elsewhere.login("bob", OLD).await.unwrap();

    // Another account's password is not bob's to change, even in a fresh session.
    let err = bob.register(ADMIN, NEW, roles::QUERIER).await.unwrap_err();
    assert!(
        reasons(&err).iter().all(|r| r.contains("only an admin")),
        "{err}"
    );
    // Nor is his own in a session whose login is older than `fresh_login_s`: a session
    // stolen later cannot change the password and lock him out.
    tokio::time::sleep(Duration::from_millis(4100)).await;
    let err = bob.register("bob", NEW, roles::QUERIER).await.unwrap_err();
    assert!(
        reasons(&err)
            .iter()
            .all(|r| r.contains("a password change needs a login in the last 3 s")),
        "{err}"
    );

    // Keeper 3 is down: the change goes through at 1 and 2 and names 3 as left over.
    c.keeper_down(3).await;
    let change = bob.change_password("bob", OLD, NEW).await.unwrap();
    assert_eq!(change.changed, vec![1, 2]);
    assert_eq!(
        change.left.iter().map(|f| f.keeper).collect::<Vec<_>>(),
        vec![3]
    );
    assert_eq!(change.login.keepers, vec![1, 2]);
    // Bob's other sessions ended where the password changed.
    let err = elsewhere.secret_list().await.unwrap_err();
    let ended = reasons(&err);
    assert_eq!(ended.len(), 3, "{err}");
    assert!(ended[..2].iter().all(|r| r.contains("session")), "{err}");

    // Run again once keeper 3 is back: it finishes there.
    c.keeper_up(3).await;
    let change = bob.change_password("bob", OLD, NEW).await.unwrap();
    assert_eq!(change.changed, vec![3]);
    assert!(change.left.is_empty(), "{:?}", change.left);
    assert!(c.fresh_client().login("bob", OLD).await.is_err());
    let again = c.fresh_client();
    assert_eq!(
        again.login("bob", NEW).await.unwrap().keepers,
        vec![1, 2, 3]
    );
    // The account kept its role: bob still registers nobody.
    assert!(again
        .register("carol", b"carol's password", roles::QUERIER)
        .await
        .is_err());
    let trail = again.user_events().await.unwrap();
    assert!(trail
        .iter()
        .all(|(_, events)| events.iter().any(|e| e.action == "password")));

    // The admin changes its own password and stays the admin.
    let change = c
        .client
        .change_password(ADMIN, PASSWORD, b"the admin's new password")
        .await
        .unwrap();
    assert_eq!(change.changed, vec![1, 2, 3]);
    c.client
        .register("carol", b"carol's password", roles::QUERIER)
        .await
        .unwrap();
}

/// A raw sealed request in `channel`'s session at keeper `j`, opened.
async fn in_session(c: &Cluster, j: u8, channel: &mut Channel, body: KeeperBody) -> ResponseBody {
    let message = sealed_request(channel, body);
    let session = channel.id();
    match raw(c, j, KeeperBody::KeeperSealed { session, message }).await {
        ResponseBody::KeeperSealed { message } => {
            Response::decode(&channel.open(&message, 0).unwrap())
                .unwrap()
                .0
        }
        other => other,
    }
}

/// A login at keeper `j` by hand as `user`: the session's channel.
async fn raw_login_as(c: &Cluster, j: u8, user: &str, password: &[u8]) -> Channel {
    let (key, session, expires_at) = raw_session(c, j, user, password).await;
    Channel::new(&key, session, Role::Client, expires_at)
}

/// A sealed message of `session` to keeper 1, as sent: its answer.
async fn send_sealed(c: &Cluster, session: [u8; 16], message: Vec<u8>) -> ResponseBody {
    raw(c, 1, KeeperBody::KeeperSealed { session, message }).await
}

/// A login at keeper `j` by hand as `user`: the session key, id and expiry.
async fn raw_session(
    c: &Cluster,
    j: u8,
    user: &str,
    password: &[u8],
) -> (zeroize::Zeroizing<[u8; 64]>, [u8; 16], u64) {
    let (login, ke1) = ClientLogin::start(password, &mut OsRng).unwrap();
    let ResponseBody::KeeperLoginStarted { login: id, ke2 } = raw(
        c,
        j,
        KeeperBody::KeeperLoginStart {
            user: user.into(),
            ke1,
        },
    )
    .await
    else {
        panic!("no KE2")
    };
    let (ke3, key) = login
        .finish(
            password,
            &ke2,
            &obscura_cluster::keeper::login_context(j),
            &mut OsRng,
        )
        .unwrap();
    let ResponseBody::KeeperSession {
        session,
        expires_at,
    } = raw(c, j, KeeperBody::KeeperLoginFinish { login: id, ke3 }).await
    else {
        panic!("no session")
    };
    (key, session, expires_at)
}

fn error_code(body: &ResponseBody) -> Option<ErrorCode> {
    match body {
        ResponseBody::Error { code, .. } => Some(*code),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepers_sign_a_capability_only_for_its_caller_and_the_roles_it_holds() {
    use obscura_proto::{Capability, Limits};
    let c = Cluster::start("capabilities").await;
    c.client
        .register("bob", b"bob's password", roles::QUERIER)
        .await
        .unwrap();
    // FROST needs T = 2 commitments: bob commits at keepers 1 and 2, and asks keeper 1 to sign.
    let mut bob = raw_login_as(&c, 1, "bob", b"bob's password").await;
    let mut bob2 = raw_login_as(&c, 2, "bob", b"bob's password").await;
    let ResponseBody::CapabilityOffer {
        commitment,
        roles: offered,
        limits,
        expires_at,
        ..
    } = in_session(&c, 1, &mut bob, KeeperBody::CapabilityCommit).await
    else {
        panic!("no offer")
    };
    let ResponseBody::CapabilityOffer {
        commitment: commitment2,
        ..
    } = in_session(&c, 2, &mut bob2, KeeperBody::CapabilityCommit).await
    else {
        panic!("no offer")
    };
    let commitments = [(1, commitment), (2, commitment2)];
    assert_eq!(offered, roles::QUERIER);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let good = Capability {
        id: [1; 16],
        user: "bob".into(),
        roles: roles::QUERIER,
        holder: [2; 32],
        issued_at: now,
        expires_at,
        limits,
    };
    let package = |cap: &Capability| {
        let message =
            obscura_auth::capability::signing_message(&obscura_auth::capability::encode(cap));
        obscura_keeper::signing::signing_package(&message, &commitments).unwrap()
    };
    // Another user's name, roles bob does not hold, other limits, a longer life: refused.
    let mut wrong = Vec::new();
    let mut cap = good.clone();
    cap.user = ADMIN.into();
    wrong.push(cap);
    let mut cap = good.clone();
    cap.roles = roles::ALL;
    wrong.push(cap);
    let mut cap = good.clone();
    cap.limits = Limits {
        queries_per_hour: u32::MAX,
        fetches_per_hour: u32::MAX,
    };
    wrong.push(cap);
    let mut cap = good.clone();
    cap.expires_at += 3600;
    wrong.push(cap);
    for cap in &wrong {
        let answer = in_session(
            &c,
            1,
            &mut bob,
            KeeperBody::CapabilityShare {
                package: package(cap),
            },
        )
        .await;
        assert_eq!(
            error_code(&answer),
            Some(ErrorCode::Forbidden),
            "{cap:?}: {answer:?}"
        );
    }
    // Any other message is no capability.
    let other = obscura_keeper::signing::signing_package(b"pay mallory", &commitments).unwrap();
    let answer = in_session(
        &c,
        1,
        &mut bob,
        KeeperBody::CapabilityShare { package: other },
    )
    .await;
    assert_eq!(
        error_code(&answer),
        Some(ErrorCode::Forbidden),
        "{answer:?}"
    );
    // The honest one gets a share.
    let answer = in_session(
        &c,
        1,
        &mut bob,
        KeeperBody::CapabilityShare {
            package: package(&good),
        },
    )
    .await;
    assert!(
        matches!(answer, ResponseBody::SignatureShare { .. }),
        "{answer:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keepers_audit_log_needs_a_session_and_an_auditor_and_names_no_user() {
    let c = Cluster::start("keeper-audit").await;
    c.client
        .register("bob", b"bob's password", roles::QUERIER)
        .await
        .unwrap();
    let audit = KeeperBody::Audit { from: 0, max: 4096 };
    assert_eq!(
        error_code(&raw(&c, 1, audit.clone()).await),
        Some(ErrorCode::NoSession)
    );
    let mut bob = raw_login_as(&c, 1, "bob", b"bob's password").await;
    assert_eq!(
        error_code(&in_session(&c, 1, &mut bob, audit.clone()).await),
        Some(ErrorCode::Forbidden)
    );
    let mut admin = raw_login_as(&c, 1, ADMIN, PASSWORD).await;
    let ResponseBody::Audit { entries, total } = in_session(&c, 1, &mut admin, audit).await else {
        panic!("no audit page")
    };
    assert_eq!(entries.len() as u64, total);
    assert!(entries.len() > 5);
    for e in &entries {
        let text = String::from_utf8_lossy(&e.detail);
        assert!(
            !text.contains("bob") && !text.contains(&format!("user={ADMIN}")),
            "entry {} names a user: {text}",
            e.seq
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rekey_needs_the_owners_order_and_zero_shares_that_share_zero() {
    use obscura_keeper::oprf;
    use obscura_keeper::threshold::Rekey;
    use obscura_proto::KeeperRekeyPart;
    use obscura_sharing::order::Order;
    let c = Cluster::start("rekey").await;
    let owner = obscura_client::config::load(&c.dir).unwrap().owner.unwrap();
    let mut admin = raw_login_as(&c, 1, ADMIN, PASSWORD).await;
    let mut rng = rand_chacha::ChaCha20Rng::from_seed([5; 32]);
    let plans: Vec<Rekey> = (0..KEYS)
        .map(|_| Rekey::random(M, KT, &mut rng).unwrap())
        .collect();
    let parts = |plans: &[Rekey], commitments: &dyn Fn(&Rekey) -> Vec<[u8; 32]>| {
        plans
            .iter()
            .enumerate()
            .map(|(x, r)| KeeperRekeyPart {
                node: x as u8 + 1,
                factor: r.factor.to_bytes(),
                zero_share: r.zero_shares[0].to_bytes(),
                zero_commitments: commitments(r),
            })
            .collect::<Vec<_>>()
    };
    let honest = |r: &Rekey| r.zero_commitments().iter().map(oprf::serialize).collect();
    let rekey = |parts: Vec<KeeperRekeyPart>, signer: &ed25519_dalek::SigningKey| {
        let signature = Order::Rekey {
            from: 1,
            to: 2,
            plan: obscura_proto::rekey_digest(1, 2, &parts),
        }
        .sign(signer)
        .to_vec();
        KeeperBody::KeeperRekey {
            from: 1,
            to: 2,
            parts,
            signature,
        }
    };
    let rejected = Some(ErrorCode::Rejected);
    // An admin without the owner's order.
    let stranger = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let answer = in_session(&c, 1, &mut admin, rekey(parts(&plans, &honest), &stranger)).await;
    assert_eq!(error_code(&answer), rejected, "{answer:?}");
    // Zero shares that are not a sharing of zero (g(0) = 1): every keeper would add 1 to its
    // share, the key would change, and retiring the old version would lose it.
    let not_zero = |r: &Rekey| {
        let shifted: Vec<_> = r
            .zero_shares
            .iter()
            .map(|z| oprf::serialize(&oprf::public_key(&(z + obscura_keeper::Scalar::ONE))))
            .collect();
        shifted
    };
    let mut shifted = parts(&plans, &not_zero);
    for (p, r) in shifted.iter_mut().zip(&plans) {
        p.zero_share = (r.zero_shares[0] + obscura_keeper::Scalar::ONE).to_bytes();
    }
    let answer = in_session(&c, 1, &mut admin, rekey(shifted, &owner)).await;
    assert_eq!(error_code(&answer), rejected, "{answer:?}");
    assert!(
        matches!(&answer, ResponseBody::Error { message, .. } if message.contains("do not share zero")),
        "{answer:?}"
    );
    // A share other than the one committed.
    let mut other = parts(&plans, &honest);
    other[0].zero_share = obscura_keeper::Scalar::from(5u64).to_bytes();
    let answer = in_session(&c, 1, &mut admin, rekey(other, &owner)).await;
    assert_eq!(error_code(&answer), rejected, "{answer:?}");
    // The honest plan with the owner's order is taken.
    let answer = in_session(&c, 1, &mut admin, rekey(parts(&plans, &honest), &owner)).await;
    assert!(
        matches!(answer, ResponseBody::KeeperRekeyed { .. }),
        "{answer:?}"
    );
    // Retiring needs the owner's order too.
    let retire = |signer: &ed25519_dalek::SigningKey| KeeperBody::KeeperRetire {
        version: 1,
        signature: Order::Retire { version: 1 }.sign(signer).to_vec(),
    };
    let answer = in_session(&c, 1, &mut admin, retire(&stranger)).await;
    assert_eq!(error_code(&answer), rejected, "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keepers_operator_unlocks_the_only_admin_at_the_keepers_machine() {
    let mut c = Cluster::start_with(
        "local-unlock",
        Setup {
            login: LoginPolicy {
                free: 100,
                lock_after: 3,
                source_free: 1000,
                max_delay_s: 60,
                fresh_login_s: 300,
                lock_s: 3600,
                max_lock_s: 3600,
            },
            ..VOPRF
        },
    )
    .await;
    // Anyone can lock the only admin out by starting logins under its name.
    c.client.logout().await.unwrap();
    for _ in 0..3 {
        start_logins(&c, ADMIN).await;
    }
    let err = c.fresh_client().login(ADMIN, PASSWORD).await.unwrap_err();
    assert!(reasons(&err).iter().all(|r| r.contains("locked")), "{err}");
    // The operator of keeper 1, on its machine with the keeper stopped, lifts it there.
    c.keeper_down(1).await;
    obscura_keeper_server::unlock_locally(&c.keeper_config(1), ADMIN).unwrap();
    c.keeper_up(1).await;
    let err = c.fresh_client().login(ADMIN, PASSWORD).await.unwrap_err();
    let r = reasons(&err);
    assert!(!r.iter().any(|r| r.contains("keeper 1")), "{r:?}");
    assert_eq!(r.len(), 2, "keepers 2 and 3 are still locked: {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_keeps_at_most_its_quota_of_secrets() {
    let c = Cluster::start_with(
        "quota",
        Setup {
            quotas: obscura_cluster::keeper::Quotas {
                max_secrets: 2,
                max_events: 5,
            },
            ..VOPRF
        },
    )
    .await;
    for i in 0..2 {
        c.client
            .secret_put(&format!("s{i}"), b"x", "import")
            .await
            .unwrap();
    }
    let err = c
        .client
        .secret_put("one too many", b"x", "import")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("at most 2 secrets"), "{err}");
    // The trail keeps the newest events only.
    for (keeper, events) in c.client.user_events().await.unwrap() {
        assert!(
            events.len() <= 5,
            "keeper {keeper}: {} events",
            events.len()
        );
        assert!(events.iter().any(|e| e.action == "secret import"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_and_replayed_requests_are_summed_up_in_a_keepers_log_not_logged_one_by_one() {
    let mut c = Cluster::start("keeper-flood").await;
    let entries = |c: &Cluster| {
        KeeperStore::open(&c.keeper_store(1), 1)
            .unwrap()
            .audit_entries()
            .unwrap()
    };
    c.keeper_down(1).await;
    let before = entries(&c).len();
    c.keeper_up(1).await;
    // Anyone who reaches the keeper, before any session: 100 requests from 1970.
    let http = c.http();
    for i in 0..100u8 {
        let req = Request {
            request_id: [i; 16],
            timestamp: 1,
            body: KeeperBody::Status,
            auth: None,
        };
        let answer = http
            .post(format!("{}/v1/status", c.keeper_url(1)))
            .body(req.encode())
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status().as_u16(), 403);
    }
    c.keeper_down(1).await;
    let after = entries(&c);
    let new: Vec<String> = after[before..]
        .iter()
        .filter(|e| e.kind == obscura_store::AuditKind::Refused)
        .map(|e| String::from_utf8_lossy(&e.detail).into_owned())
        .collect();
    assert_eq!(
        new,
        vec!["stale or replayed requests refused=100".to_string()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_account_cannot_fill_a_keepers_sessions_or_key_generations() {
    let c = Cluster::start("keeper-state").await;
    c.client
        .register("bob", b"bob's password", roles::QUERIER)
        .await
        .unwrap();
    // Seventeen logins: the first session has ended, the last ones work.
    let mut first = raw_login_as(&c, 1, "bob", b"bob's password").await;
    let mut last = None;
    for _ in 0..16 {
        last = Some(raw_login_as(&c, 1, "bob", b"bob's password").await);
    }
    assert_eq!(
        error_code(&in_session(&c, 1, &mut first, KeeperBody::SecretList).await),
        Some(ErrorCode::NoSession)
    );
    let mut last = last.unwrap();
    assert!(matches!(
        in_session(&c, 1, &mut last, KeeperBody::SecretList).await,
        ResponseBody::Secrets { .. }
    ));
    // Four key generations under way at once, not a fifth.
    for i in 0..4u8 {
        let answer = in_session(
            &c,
            1,
            &mut last,
            KeeperBody::DkgStart {
                id: [i; 16],
                name: format!("k{i}"),
            },
        )
        .await;
        assert!(
            matches!(answer, ResponseBody::DkgPackages { .. }),
            "{answer:?}"
        );
    }
    let answer = in_session(
        &c,
        1,
        &mut last,
        KeeperBody::DkgStart {
            id: [9; 16],
            name: "one too many".into(),
        },
    )
    .await;
    assert_eq!(
        error_code(&answer),
        Some(ErrorCode::TooManyAttempts),
        "{answer:?}"
    );
}

/// The faults that broke a session for good: two commands at once on one session file
/// (`obscura index … & obscura search …`), and a request cut short (a timeout, a killed
/// client). Before, the keeper accepted only the exact next number, both commands used the same
/// numbers, and a sealed request that never arrived put the client ahead of the keeper: every
/// later command failed until a new login. Now each process takes its own lane of the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_commands_on_one_session_file_and_a_request_cut_short_leave_it_working() {
    let c = Cluster::start("shared-session").await;
    let path = c.scratch.join("session.json");
    let first = c.fresh_client();
    assert!(!first.attach_session(&path).unwrap());
    first.login(ADMIN, PASSWORD).await.unwrap();
    let second = c.fresh_client();
    assert!(second.attach_session(&path).unwrap());
    for _ in 0..3 {
        let (a, b) = tokio::join!(first.user_events(), second.user_events());
        assert_eq!(a.unwrap().len(), M, "every keeper answers the first");
        assert_eq!(b.unwrap().len(), M, "every keeper answers the second");
    }
    // Cut short mid-request, then the same client again, and a later one.
    let third = c.fresh_client();
    assert!(third.attach_session(&path).unwrap());
    let cut = tokio::time::timeout(Duration::from_micros(300), third.user_events()).await;
    assert!(cut.is_err(), "the request finished before it was cut");
    assert_eq!(third.user_events().await.unwrap().len(), M);
    let fourth = c.fresh_client();
    assert!(fourth.attach_session(&path).unwrap());
    assert_eq!(fourth.user_events().await.unwrap().len(), M);
    assert_eq!(first.user_events().await.unwrap().len(), M);
}

/// What other processes do in between: a long command whose lane the keeper stopped taking
/// (64 newer commands since) goes on in a fresh lane; a login by another process is not undone
/// when an older process saves its state; and the lane counter never repeats, so no two
/// processes ever seal under the same number, whatever logins happened in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lanes_stay_apart_across_logins_and_a_closed_lane_moves_on() {
    let c = Cluster::start("lanes").await;
    let path = c.scratch.join("session.json");
    let long = c.fresh_client();
    long.attach_session(&path).unwrap();
    long.login(ADMIN, PASSWORD).await.unwrap();
    let older = c.fresh_client();
    assert!(older.attach_session(&path).unwrap());
    assert_eq!(older.user_events().await.unwrap().len(), M);
    for _ in 0..obscura_keeper::session::LANES {
        let short = c.fresh_client();
        short.attach_session(&path).unwrap();
        assert_eq!(short.user_events().await.unwrap().len(), M);
    }
    // The long command's lane is below every lane the keepers keep now: it moves on.
    assert_eq!(long.user_events().await.unwrap().len(), M);

    // Another process logs in anew; the older one then refreshes its capability (a save).
    let fresh = c.fresh_client();
    fresh.attach_session(&path).unwrap();
    fresh.login(ADMIN, PASSWORD).await.unwrap();
    let sessions = |p: &std::path::Path| {
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
        v["sessions"].clone()
    };
    let after_login = sessions(&path);
    older.refresh_capability().await.unwrap();
    assert_eq!(
        sessions(&path),
        after_login,
        "an older process undid a login"
    );
    let next = c.fresh_client();
    assert!(next.attach_session(&path).unwrap());
    assert_eq!(next.user_events().await.unwrap().len(), M);
    assert_eq!(fresh.user_events().await.unwrap().len(), M);
}

/// Unix seconds now.
fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A lock file beside the session file that others may write (placed there first by another
/// user of a shared folder) is refused: it would let them hold this user's sessions up or move
/// the lane counter back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_lock_file_open_to_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let c = Cluster::start("open-lock").await;
    let path = c.scratch.join("session.json");
    let first = c.fresh_client();
    first.attach_session(&path).unwrap();
    first.login(ADMIN, PASSWORD).await.unwrap();
    let lock = c.scratch.join("session.json.lock");
    std::fs::set_permissions(&lock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let err = c.fresh_client().attach_session(&path).unwrap_err();
    assert!(err.to_string().contains("open to other users"), "{err}");
}

/// A keeper restart logs nobody out: the command that was running goes on (its lane is closed,
/// so it moves to a fresh one), the next command too, and so does a client that keeps its
/// sessions in memory only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keeper_restart_logs_nobody_out() {
    let mut c = Cluster::start("restart-login").await;
    let path = c.scratch.join("session.json");
    let running = c.fresh_client();
    running.attach_session(&path).unwrap();
    running.login(ADMIN, PASSWORD).await.unwrap();
    assert_eq!(running.user_events().await.unwrap().len(), M);
    let tokens = |t: Vec<Vec<obscura_client::IndexTokens>>| -> Vec<Vec<[u8; 16]>> {
        t.iter()
            .flatten()
            .map(|i| i.tokens.iter().map(|t| t.0).collect())
            .collect()
    };
    let before = tokens(
        c.client
            .index_tokens(&[0x0123_4567_89ab_cdef])
            .await
            .unwrap(),
    );
    for j in 1..=M as u8 {
        c.keeper_down(j).await;
        c.keeper_up(j).await;
    }
    assert_eq!(running.user_events().await.unwrap().len(), M);
    let next = c.fresh_client();
    assert!(next.attach_session(&path).unwrap());
    assert_eq!(next.user_events().await.unwrap().len(), M);
    let after = tokens(
        c.client
            .index_tokens(&[0x0123_4567_89ab_cdef])
            .await
            .unwrap(),
    );
    assert_eq!(after, before, "the same tokens, from the same sessions");
}

/// What a keeper keeps of a session across a restart gives nothing to whoever kept a sealed
/// request, or reads the keeper's store: the keeper records a lane before it answers in it and
/// after the restart takes only lanes above, so a request sent before the restart (replayed)
/// or sealed then and held back is refused; a session that ended stays ended; and the store
/// holds no session key in clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_sealed_before_a_keeper_restart_opens_after_it_and_a_logout_holds() {
    let mut c = Cluster::start("restart-replay").await;
    let (key, id, expires_at) = raw_session(&c, 1, ADMIN, PASSWORD).await;
    let mut before = Channel::resume(&key, id, expires_at, 3);
    let sent = sealed_request(&mut before, KeeperBody::SecretList);
    let ResponseBody::KeeperSealed { message } = send_sealed(&c, id, sent.clone()).await else {
        panic!("refused before the restart")
    };
    before.open(&message, 0).unwrap();
    // Sealed in the same lane and held back: it would be the lane's next.
    let held = sealed_request(&mut before, KeeperBody::SecretList);
    let (gone_key, gone, gone_expiry) = raw_session(&c, 1, ADMIN, PASSWORD).await;
    let mut ending = Channel::resume(&gone_key, gone, gone_expiry, 1);
    let out = in_session(&c, 1, &mut ending, KeeperBody::KeeperLogout).await;
    assert!(matches!(out, ResponseBody::Ok), "{out:?}");

    c.keeper_down(1).await;
    let store = std::fs::read(c.keeper_store(1)).unwrap();
    assert!(
        !store.windows(key.len()).any(|w| w == key.as_slice()),
        "a session key in clear in the keeper's store"
    );
    c.keeper_up(1).await;

    assert!(
        refused(&send_sealed(&c, id, sent).await),
        "a replay after the restart"
    );
    assert!(
        refused(&send_sealed(&c, id, held).await),
        "a held-back request after the restart"
    );
    let mut after = Channel::resume(&key, id, expires_at, 4);
    let answer = in_session(&c, 1, &mut after, KeeperBody::SecretList).await;
    assert!(matches!(answer, ResponseBody::Secrets { .. }), "{answer:?}");
    let mut ended = Channel::resume(&gone_key, gone, gone_expiry, 2);
    let answer = in_session(&c, 1, &mut ended, KeeperBody::SecretList).await;
    assert_eq!(
        error_code(&answer),
        Some(ErrorCode::NoSession),
        "{answer:?}"
    );
}

/// Someone who can write the keeper's store puts back an older copy of a session's record (an
/// older lane floor: requests sealed since would open again) or the record of a session that
/// ended: neither opens, because a session's record is sealed under a key of its own that the
/// keyring replaces at every write and drops when the session ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_copy_of_a_session_record_or_an_ended_ones_does_not_open() {
    let mut c = Cluster::start("session-records").await;
    c.keeper_down(1).await;
    let (store, vault) = open_vault(&c, 1);
    let user = vault.handle(ADMIN);
    let (live, ended) = ([1u8; 16], [2u8; 16]);
    let key = |id: &[u8; 16]| obscura_keeper_server::vault::record_key(Kind::Session, &user, id);
    let put = |id: &[u8; 16], body: &[u8]| {
        vault
            .write(
                &store,
                &[(Kind::Session, user, id.to_vec(), body, 1)],
                &[],
                &user,
                "test",
                0,
            )
            .unwrap()
    };
    put(&live, b"floor 4");
    put(&ended, b"floor 1");
    let older = store.vault_get(&key(&live)).unwrap().unwrap();
    let gone = store.vault_get(&key(&ended)).unwrap().unwrap();
    put(&live, b"floor 6");
    vault
        .write(
            &store,
            &[],
            &[(Kind::Session, user, ended.to_vec())],
            &user,
            "end",
            0,
        )
        .unwrap();
    let opened = vault
        .get(&store, Kind::Session, &user, &live)
        .unwrap()
        .unwrap()
        .1;
    assert_eq!(opened.as_slice(), b"floor 6");
    // Put back as they were, bytes for bytes.
    let at = store.vault_state().unwrap();
    store
        .vault_write(
            at,
            &[(key(&live), Some(older)), (key(&ended), Some(gone))],
            &[0; 16],
            "put back",
            0,
        )
        .unwrap();
    assert!(vault.get(&store, Kind::Session, &user, &live).is_err());
    assert!(vault.get(&store, Kind::Session, &user, &ended).is_err());
}

/// A session that opens a new lane with every request would make every request a durable write
/// at the keeper (its floor): past 120 new lanes in a minute they are refused, in clear, while
/// its lanes already open go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_opens_at_most_its_new_lanes_a_minute() {
    let c = Cluster::start("new-lanes").await;
    let (key, id, expires_at) = raw_session(&c, 1, ADMIN, PASSWORD).await;
    // Well inside one minute of the keeper's clock.
    if now_s() % 60 > 40 {
        tokio::time::sleep(Duration::from_secs(61 - now_s() % 60)).await;
    }
    let most = obscura_keeper_server::accounts::NEW_LANES_PER_MINUTE;
    let mut open = Vec::new();
    for lane in 1..=most {
        let mut channel = Channel::resume(&key, id, expires_at, lane);
        let answer = in_session(&c, 1, &mut channel, KeeperBody::SecretList).await;
        assert!(
            matches!(answer, ResponseBody::Secrets { .. }),
            "lane {lane}: {answer:?}"
        );
        open.push(channel);
    }
    // Refused lanes close none of the open ones: lane 60 is among the 64 newest kept.
    for lane in most + 1..most + 11 {
        let mut one_more = Channel::resume(&key, id, expires_at, lane);
        let message = sealed_request(&mut one_more, KeeperBody::SecretList);
        let answer = send_sealed(&c, id, message).await;
        assert_eq!(
            error_code(&answer),
            Some(ErrorCode::RateLimited),
            "{answer:?}"
        );
    }
    for lane in [60, most] {
        let channel = &mut open[lane as usize - 1];
        let answer = in_session(&c, 1, channel, KeeperBody::SecretList).await;
        assert!(
            matches!(answer, ResponseBody::Secrets { .. }),
            "lane {lane}: {answer:?}"
        );
    }
}

/// A password is changed because the old one leaked: whoever holds it starts a login with it
/// just before the change and finishes it after. The keeper refuses the finish, since the
/// account changed since the login started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_started_before_a_password_change_does_not_finish_after_it() {
    let c = Cluster::start("stale-login").await;
    const OLD: &[u8] = b"carol's leaked password";
    const NEW: &[u8] = b"carol's new password";
    c.client
        .register("carol", OLD, roles::QUERIER)
        .await
        .unwrap();
    let (login, ke1) = ClientLogin::start(OLD, &mut OsRng).unwrap();
    let started = raw(
        &c,
        1,
        KeeperBody::KeeperLoginStart {
            user: "carol".into(),
            ke1,
        },
    )
    .await;
    let ResponseBody::KeeperLoginStarted { login: id, ke2 } = started else {
        panic!("no KE2: {started:?}")
    };
    let (ke3, _) = login
        .finish(
            OLD,
            &ke2,
            &obscura_cluster::keeper::login_context(1),
            &mut OsRng,
        )
        .unwrap();
    let carol = c.fresh_client();
    carol.change_password("carol", OLD, NEW).await.unwrap();
    let finished = raw(&c, 1, KeeperBody::KeeperLoginFinish { login: id, ke3 }).await;
    assert_eq!(
        error_code(&finished),
        Some(ErrorCode::LoginFailed),
        "{finished:?}"
    );
}

/// A request in `channel` to keeper 1, and its answer opened.
async fn ask(c: &Cluster, channel: &mut Channel, body: KeeperBody) -> ResponseBody {
    let message = sealed_request(channel, body);
    match send_sealed(c, channel.id(), message).await {
        ResponseBody::KeeperSealed { message } => {
            Response::decode(&channel.open(&message, 0).unwrap())
                .unwrap()
                .0
        }
        other => other,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_share_goes_only_to_the_appraised_worker_key_never_to_a_modified_client() {
    use obscura_attest::{binding, producer, seal::PartyKey, sim::SimulationRoot, Role};
    let c = Cluster::start("release").await;
    // The admin stores a secret that keepers release only to workers of this build.
    let policy = obscura_cluster::attestation::load_policy(&c.dir)
        .unwrap()
        .unwrap();
    let id = c
        .client
        .secret_put_released("api", b"the secret", "import", &policy)
        .await
        .unwrap();
    // A worker of this build: a simulated platform the cluster's root endorsed.
    let root_hex = std::fs::read_to_string(c.dir.join("simulation-root.secret")).unwrap();
    let root = SimulationRoot::from_secret_bytes(
        &obscura_tokens::keyfile::from_hex(root_hex.trim()).unwrap(),
    );
    let platform = root.issue("worker x", &mut OsRng);
    let worker = PartyKey::generate(&mut OsRng);
    let measurement = producer::own_measurement().unwrap();
    let evidence = |key: &[u8; 32], keeper: u8, nonce: &[u8; 32], m: &[u8; 48]| {
        let data = binding::report_data(
            &Role::Worker,
            key,
            &binding::release_context(keeper, &id),
            nonce,
        );
        platform.evidence(m, &data, false, now_s()).to_json()
    };
    let mut ch = raw_login(&c, 1).await;
    let challenge = |answer: ResponseBody| match answer {
        ResponseBody::ReleaseChallenge { nonce } => nonce,
        other => panic!("no challenge: {other:?}"),
    };
    let forbidden = |answer: &ResponseBody, why: &str| matches!(answer, ResponseBody::Error { code: ErrorCode::Forbidden, message } if message.contains(why));

    // The user cannot read it itself.
    let got = ask(&c, &mut ch, KeeperBody::SecretGet { id, export: false }).await;
    assert!(
        forbidden(&got, "released only to attested workers"),
        "{got:?}"
    );

    // A modified client relays a genuine worker's evidence with its own key: refused.
    let nonce = challenge(ask(&c, &mut ch, KeeperBody::ReleaseStart { id }).await);
    let genuine = evidence(&worker.public(), 1, &nonce, &measurement);
    let mine = PartyKey::generate(&mut OsRng);
    let answer = ask(
        &c,
        &mut ch,
        KeeperBody::ReleaseFinish {
            id,
            nonce,
            party_key: mine.public(),
            evidence: genuine.clone(),
        },
    )
    .await;
    assert!(forbidden(&answer, "report data"), "{answer:?}");
    // The challenge is spent: the same evidence cannot be tried again with it.
    let answer = ask(
        &c,
        &mut ch,
        KeeperBody::ReleaseFinish {
            id,
            nonce,
            party_key: worker.public(),
            evidence: genuine,
        },
    )
    .await;
    assert!(
        matches!(
            &answer,
            ResponseBody::Error {
                code: ErrorCode::Rejected,
                ..
            }
        ),
        "{answer:?}"
    );

    // Evidence made for keeper 2's release does not pass at keeper 1.
    let nonce = challenge(ask(&c, &mut ch, KeeperBody::ReleaseStart { id }).await);
    let answer = ask(
        &c,
        &mut ch,
        KeeperBody::ReleaseFinish {
            id,
            nonce,
            party_key: worker.public(),
            evidence: evidence(&worker.public(), 2, &nonce, &measurement),
        },
    )
    .await;
    assert!(forbidden(&answer, "report data"), "{answer:?}");

    // A worker of another build, bound honestly: refused for its measurement.
    let nonce = challenge(ask(&c, &mut ch, KeeperBody::ReleaseStart { id }).await);
    let answer = ask(
        &c,
        &mut ch,
        KeeperBody::ReleaseFinish {
            id,
            nonce,
            party_key: worker.public(),
            evidence: evidence(&worker.public(), 1, &nonce, &[7; 48]),
        },
    )
    .await;
    assert!(
        forbidden(&answer, "is not allowed for role worker"),
        "{answer:?}"
    );

    // The genuine worker gets keeper 1's share, which only its key opens.
    let nonce = challenge(ask(&c, &mut ch, KeeperBody::ReleaseStart { id }).await);
    let answer = ask(
        &c,
        &mut ch,
        KeeperBody::ReleaseFinish {
            id,
            nonce,
            party_key: worker.public(),
            evidence: evidence(&worker.public(), 1, &nonce, &measurement),
        },
    )
    .await;
    let ResponseBody::Released {
        keeper: 1,
        enc,
        ciphertext,
        signature,
    } = answer
    else {
        panic!("not released: {answer:?}")
    };
    // Signed by keeper 1's audit key, for this worker's key and challenge.
    let audit = std::fs::read_to_string(c.dir.join("keeper1/audit-key.pub")).unwrap();
    let audit = obscura_cluster::ed25519_key(audit.trim()).unwrap();
    let statement = binding::release_statement(1, &id, &nonce, &worker.public(), &enc, &ciphertext);
    audit
        .verify_strict(
            &statement,
            &ed25519_dalek::Signature::from_slice(&signature).unwrap(),
        )
        .unwrap();
    let sealed = obscura_attest::seal::Sealed { enc, ciphertext };
    let purpose = binding::release_purpose(1, &id);
    assert!(!worker.open(&purpose, &sealed).unwrap().is_empty());
    assert!(mine.open(&purpose, &sealed).is_err());

    // An older challenge, replaced by a newer one, does not release.
    let old = challenge(ask(&c, &mut ch, KeeperBody::ReleaseStart { id }).await);
    let _newer = challenge(ask(&c, &mut ch, KeeperBody::ReleaseStart { id }).await);
    let answer = ask(
        &c,
        &mut ch,
        KeeperBody::ReleaseFinish {
            id,
            nonce: old,
            party_key: worker.public(),
            evidence: evidence(&worker.public(), 1, &old, &measurement),
        },
    )
    .await;
    assert!(
        matches!(
            &answer,
            ResponseBody::Error {
                code: ErrorCode::Rejected,
                ..
            }
        ),
        "{answer:?}"
    );

    // A policy trusting the user's own simulation root, or debug, is refused when stored.
    let mine_root = SimulationRoot::generate(&mut OsRng);
    let mut own = policy.clone();
    own.simulation_roots = vec![obscura_tokens::keyfile::to_hex(&mine_root.public())];
    let refused = c
        .client
        .secret_put_released("mine", b"x", "import", &own)
        .await
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("a simulation root other than the cluster's"),
        "{refused}"
    );
    let mut debug = policy.clone();
    debug.allow_debug = true;
    let refused = c
        .client
        .secret_put_released("dbg", b"x", "import", &debug)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("debug"), "{refused}");
}

/// A keeper takes token-key shares only on the data owner's order, sealed to the key its
/// appraised evidence binds, and once. A user who seals shares of its own choosing to a
/// keeper's appraised key (with them it would know the token keys, and could test any band
/// value against a node's store), the owner's delivery for one keeper replayed to another, a
/// second set of shares for keys it holds, and a delivery sealed before a restart are all
/// refused, and the keepers go on evaluating with the dealt keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keeper_takes_token_key_shares_only_from_the_owner_sealed_to_its_appraised_key_once() {
    use obscura_attest::Appraisal;
    use obscura_cluster::keeper::SealedShare;
    let mut c = Cluster::start("provision").await;
    let owner = obscura_client::config::load(&c.dir).unwrap().owner.unwrap();
    let policy = obscura_cluster::attestation::load_policy(&c.dir)
        .unwrap()
        .unwrap();
    let ca = std::fs::read(c.dir.join("ca.pem")).unwrap();
    // Every keeper took its shares at the start, and the owner forgot them.
    assert!(!c
        .dir
        .join(obscura_cluster::provision::PROVISION_FILE)
        .exists());
    let chosen: Vec<SealedShare> = (1..=KEYS as u8)
        .map(|node| SealedShare {
            node,
            version: 1,
            secret: obscura_keeper::oprf::random_scalar(&mut OsRng).to_bytes(),
        })
        .collect();
    let delivery = |appraisal: &Appraisal, keeper: u8, signer: &ed25519_dalek::SigningKey| {
        provision_body(appraisal, keeper, &chosen, signer)
    };
    let refused = |answer: &ResponseBody, why: &str| {
        matches!(answer, ResponseBody::Error { code: ErrorCode::Rejected, message }
            if message.contains(why))
    };

    // A user's own shares, sealed to keeper 1's appraised key, signed by the user.
    let one = appraise_keeper(&c, 1, &policy, &ca).await;
    let user = ed25519_dalek::SigningKey::generate(&mut OsRng);
    let answer = raw(&c, 1, delivery(&one, 1, &user)).await;
    assert!(refused(&answer, "data owner's order"), "{answer:?}");
    // The owner's delivery for keeper 1, replayed to keeper 2.
    let for_one = delivery(&one, 1, &owner);
    let answer = raw(&c, 2, for_one.clone()).await;
    assert!(refused(&answer, "data owner's order"), "{answer:?}");
    // The owner's order for other shares than keeper 1 holds: it takes its shares once.
    let answer = raw(&c, 1, for_one).await;
    assert!(refused(&answer, "takes its shares once"), "{answer:?}");
    // Nor shares of a version it does not hold (a recorded delivery replayed after a retire
    // would bring the retired version back).
    let later: Vec<SealedShare> = chosen
        .iter()
        .map(|s| SealedShare {
            node: s.node,
            version: 7,
            secret: s.secret,
        })
        .collect();
    let answer = raw(&c, 1, provision_body(&one, 1, &later, &owner)).await;
    assert!(refused(&answer, "takes its shares once"), "{answer:?}");
    // A delivery sealed to keeper 2 before it restarted: its key is another now.
    let two = appraise_keeper(&c, 2, &policy, &ca).await;
    let before = delivery(&two, 2, &owner);
    c.keeper_down(2).await;
    c.keeper_up(2).await;
    let answer = raw(&c, 2, before).await;
    assert!(refused(&answer, "another key of this keeper"), "{answer:?}");

    // Keeper 2 opened its shares after the restart (the same build), and every keeper still
    // evaluates with the dealt keys: an image indexed and found again, with keeper 3 down so
    // that keepers 1 and 2 make every token.
    c.keeper_down(3).await;
    let photo = testdata("photos/coffee.png");
    let id = c.client.index(&photo).await.unwrap();
    let found = c
        .client
        .search(&testdata("derived/coffee.q75.jpg"), 5, 10)
        .await
        .unwrap();
    assert_eq!(found.matches[0].id, id);
    // And nothing of it is in the keepers' files outside their sealing.
    for j in 1..=M as u8 {
        let secrets: obscura_cluster::keeper::KeeperSecrets = obscura_cluster::files::open_secrets(
            &std::fs::read(c.dir.join(format!("keeper{j}/secrets.sealed"))).unwrap(),
            &obscura_cluster::keeper::keeper_purpose(j),
            &c.keeper_wrapping(j),
        )
        .unwrap();
        assert!(secrets.shares.is_empty(), "keeper {j}");
        assert!(secrets.bound_shares.is_some(), "keeper {j}");
    }
}

/// A relay in front of keeper 2 (its operator keeps the keeper's TLS key and passes every
/// request to the genuine keeper, so evidence requests are answered by it) drops the owner's
/// delivery and answers in keeper 2's name with the public shares `client.json` lists: it cannot
/// make the receipt, which needs the key sealed to the genuine keeper. Keeper 2 is named, its
/// shares stay waiting, and go to the genuine keeper once it answers itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_drops_a_delivery_cannot_fake_the_keepers_receipt() {
    use axum::routing::post;
    use obscura_proto::Request;
    let mut c = Cluster::start_with(
        "relay",
        Setup {
            provision: false,
            register: false,
            ..VOPRF
        },
    )
    .await;
    // The genuine keeper 2 moves to a port of its operator's choosing.
    c.keeper_down(2).await;
    let genuine = LoadedKeeper::load(&c.keeper_config(2)).unwrap();
    let tls = genuine.tls.clone();
    let hidden = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hidden_port = hidden.local_addr().unwrap().port();
    let (stop_genuine, stopped) = tokio::sync::oneshot::channel::<()>();
    let genuine_task = tokio::spawn(obscura_keeper_server::serve(genuine, hidden, async {
        stopped.await.ok();
    }));
    let parts = obscura_client::config::load(&c.dir).unwrap();
    let to_genuine = reqwest::Client::builder()
        .use_preconfigured_tls(parts.tls)
        .resolve("keeper-2.obscura", ([127, 0, 0, 1], hidden_port).into())
        .build()
        .unwrap();
    // What client.json says keeper 2 holds: the relay's forged answer.
    let config = obscura_client::config::read_config(&c.dir).unwrap();
    let public_shares: Vec<(u8, u32, [u8; 32])> = config
        .keeper_public_shares
        .iter()
        .enumerate()
        .map(|(x, per)| {
            let p = obscura_tokens::keyfile::hex32(&per[1]).unwrap();
            (x as u8 + 1, 1, p)
        })
        .collect();
    // The relay, on keeper 2's own port with keeper 2's own certificate. It forges the answer
    // to a delivery, or (once `lose` is set) passes the delivery on and loses the answer.
    let lose = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let losing = lose.clone();
    let relay = async move |axum::extract::Path(op): axum::extract::Path<String>,
                            body: axum::body::Bytes| {
        let req = Request::<KeeperBody>::decode(&body).unwrap();
        let provision = matches!(req.body, KeeperBody::Provision { .. });
        if provision && !losing.load(std::sync::atomic::Ordering::SeqCst) {
            return obscura_server::encode(ResponseBody::Provisioned {
                keeper: 2,
                public_shares: public_shares.clone(),
                receipt: [0; 32],
            });
        }
        let answer = to_genuine
            .post(format!("https://keeper-2.obscura:{hidden_port}/v1/{op}"))
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        let status = answer.status();
        let bytes = answer.bytes().await.unwrap().to_vec();
        if provision {
            return obscura_server::encode(ResponseBody::Error {
                code: ErrorCode::Internal,
                message: "lost".into(),
            });
        }
        (status, bytes)
    };
    let front = c.listen(c.keeper_ports[1]).await;
    let (stop_relay, relay_stopped) = tokio::sync::oneshot::channel::<()>();
    let relay_task = tokio::spawn(obscura_server::accept_loop(
        front,
        tokio_rustls::TlsAcceptor::from(tls),
        obscura_server::Guard::new(Default::default()),
        move |_, _| axum::Router::new().route("/v1/{op}", post(relay.clone())),
        Duration::from_secs(3600),
        || Ok(()),
        async {
            relay_stopped.await.ok();
        },
        || Ok(()),
    ));

    let outcome = obscura_client::config::provision_waiting(&c.dir, &c.client)
        .await
        .unwrap();
    let two = outcome.iter().find(|(j, _)| *j == 2).unwrap();
    assert_eq!(two.1, Err(Fault::OtherShares), "{outcome:?}");
    assert!(two.1.as_ref().unwrap_err().is_misbehaviour());
    for j in [1, 3] {
        assert!(
            outcome.iter().any(|(k, r)| *k == j && r.is_ok()),
            "{outcome:?}"
        );
    }
    let owner_wrapping =
        obscura_tokens::keyfile::WrappingKey::from_file(&c.dir.join("owner/wrapping.key")).unwrap();
    let waiting = obscura_cluster::provision::read(&c.dir, &owner_wrapping)
        .unwrap()
        .unwrap();
    let left: Vec<u8> = waiting.keepers.iter().map(|a| a.keeper).collect();
    assert_eq!(left, [2]);

    // The relay now passes the delivery on and loses the answer: the genuine keeper holds its
    // shares, and the owner, without a receipt, keeps them waiting.
    lose.store(true, std::sync::atomic::Ordering::SeqCst);
    let outcome = obscura_client::config::provision_waiting(&c.dir, &c.client)
        .await
        .unwrap();
    assert!(
        matches!(&outcome[..], [(2, Err(Fault::Refused { message, .. }))] if message == "lost"),
        "{outcome:?}"
    );
    assert!(c
        .dir
        .join(obscura_cluster::provision::PROVISION_FILE)
        .exists());

    // The genuine keeper answers on its own port again: the retry (a new delivery of the same
    // shares, with a new receipt key) is answered, and the owner forgets them.
    stop_relay.send(()).ok();
    relay_task.await.unwrap().unwrap();
    stop_genuine.send(()).ok();
    genuine_task.await.unwrap().unwrap();
    c.keeper_up(2).await;
    let outcome = obscura_client::config::provision_waiting(&c.dir, &c.client)
        .await
        .unwrap();
    assert_eq!(outcome, [(2, Ok(()))]);
    assert!(!c
        .dir
        .join(obscura_cluster::provision::PROVISION_FILE)
        .exists());
}

/// Shares in the owner's folder that are not the ones `client.json` names (another cluster's
/// file, say) are not sent: no honest keeper takes them, is then refused the right ones, and is
/// blamed. Nobody is named a culprit, and the shares stay waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shares_that_are_not_the_clusters_are_not_sent_and_nobody_is_blamed() {
    use obscura_cluster::provision::{Awaiting, Pending};
    let c = Cluster::start_with(
        "foreign",
        Setup {
            provision: false,
            register: false,
            ..VOPRF
        },
    )
    .await;
    let owner =
        obscura_tokens::keyfile::WrappingKey::from_file(&c.dir.join("owner/wrapping.key")).unwrap();
    let foreign = Pending {
        keepers: (1..=M as u8)
            .map(|keeper| Awaiting {
                keeper,
                shares: (1..=KEYS as u8)
                    .map(|node| obscura_cluster::keeper::SealedShare {
                        node,
                        version: 1,
                        secret: obscura_keeper::oprf::random_scalar(&mut OsRng).to_bytes(),
                    })
                    .collect(),
            })
            .collect(),
    };
    obscura_cluster::provision::write(&c.dir, &owner, &foreign).unwrap();
    let outcome = obscura_client::config::provision_waiting(&c.dir, &c.client)
        .await
        .unwrap();
    assert_eq!(outcome.len(), M, "{outcome:?}");
    for (keeper, r) in &outcome {
        let fault = r.as_ref().unwrap_err();
        assert!(
            matches!(fault, Fault::NotSent(m) if m.contains("not this cluster's")),
            "keeper {keeper}: {fault:?}"
        );
        assert!(!fault.is_misbehaviour());
    }
    // Every keeper still holds nothing, and the shares still wait.
    for (keeper, s) in c.client.keeper_status().await {
        assert!(s.unwrap().key_versions.is_empty(), "keeper {keeper}");
    }
    let left = obscura_cluster::provision::read(&c.dir, &owner)
        .unwrap()
        .unwrap();
    assert_eq!(left.keepers.len(), M);
}

/// The parts helpers `from` give for `plan`, each as it answered.
async fn parts_for(
    c: &Cluster,
    plan: &obscura_proto::RecoveryPlan,
    signature: &[u8],
    evidence: &[u8],
    from: &[u8],
) -> Vec<ResponseBody> {
    let mut out = Vec::new();
    for &h in from {
        let body = KeeperBody::RecoverPart {
            plan: plan.clone(),
            evidence: evidence.to_vec(),
            signature: signature.to_vec(),
        };
        out.push(raw(c, h, body).await);
    }
    out
}

/// A recovery of `plan` from `parts`, with the owner's receipt key `receipt` sealed to the key
/// `appraisal` binds.
fn recover_body(
    plan: &obscura_proto::RecoveryPlan,
    signature: &[u8],
    parts: Vec<obscura_proto::RecoveryPart>,
    appraisal: &obscura_attest::Appraisal,
    receipt: &[u8; 32],
) -> KeeperBody {
    let sealed = obscura_attest::seal::seal(
        appraisal,
        &obscura_proto::recovery_receipt_purpose(
            plan.keeper,
            &obscura_proto::recovery_digest(plan),
        ),
        receipt,
        &mut OsRng,
    )
    .unwrap();
    KeeperBody::Recover {
        plan: plan.clone(),
        signature: signature.to_vec(),
        parts,
        receipt_enc: sealed.enc,
        receipt_ciphertext: sealed.ciphertext,
    }
}

fn part_of(answer: ResponseBody) -> obscura_proto::RecoveryPart {
    match answer {
        ResponseBody::RecoveryPart(p) => p,
        other => panic!("no part: {other:?}"),
    }
}

/// Keeper 2's machine loses its sealed shares (or it runs a build they do not open under): it
/// starts holding none. Only the data owner's fresh plan, for the key keeper 2's evidence binds,
/// brings a helper to give its part; the parts open only under that key, carry a tag only the
/// helper's attested key makes, and a plan is only good while fresh. A part altered on its way blames
/// nobody; a helper's own wrong part is named, with keeper 2's proof. Then `Client::recover`
/// gives keeper 2 its shares back, and it evaluates with the dealt keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keeper_that_lost_its_shares_gets_them_back_only_by_the_owners_plan_and_a_liar_is_named()
{
    use obscura_keeper::recovery;
    use obscura_proto::{recovery_digest, recovery_purpose, RecoveryPart, RecoveryPlan};
    use obscura_sharing::order::Order;
    let mut c = Cluster::start("recover").await;
    let owner = obscura_client::config::load(&c.dir).unwrap().owner.unwrap();
    let policy = obscura_cluster::attestation::load_policy(&c.dir)
        .unwrap()
        .unwrap();
    let ca = std::fs::read(c.dir.join("ca.pem")).unwrap();
    let photo = testdata("photos/coffee.png");
    let id = c.client.index(&photo).await.unwrap();

    // Keeper 3's shares, to play a helper that lies.
    c.keeper_down(3).await;
    let three_shares = LoadedKeeper::load(&c.keeper_config(3)).unwrap().shares;
    c.keeper_up(3).await;
    // Keeper 2's sealed shares are lost.
    c.keeper_down(2).await;
    let path = c.dir.join("keeper2/secrets.sealed");
    let mut secrets: obscura_cluster::keeper::KeeperSecrets = obscura_cluster::files::open_secrets(
        &std::fs::read(&path).unwrap(),
        &obscura_cluster::keeper::keeper_purpose(2),
        &c.keeper_wrapping(2),
    )
    .unwrap();
    secrets.bound_shares = None;
    std::fs::write(
        &path,
        secrets.seal(2, &c.keeper_wrapping(2), &mut OsRng).unwrap(),
    )
    .unwrap();
    c.keeper_up(2).await;
    let status = c.client.keeper_status().await;
    assert!(status[1].1.as_ref().unwrap().key_versions.is_empty());

    // Keeper 2's evidence, for a nonce the plans name, and the helpers' keys.
    let mut nonce = [0u8; 32];
    OsRng.fill_bytes(&mut nonce);
    let ResponseBody::Evidence {
        party_key,
        evidence,
    } = raw(&c, 2, KeeperBody::Evidence { nonce }).await
    else {
        panic!("keeper 2 gave no evidence");
    };
    let mut helper_keys = Vec::new();
    for h in [1, 3] {
        let key = appraise_keeper(&c, h, &policy, &ca)
            .await
            .party_key()
            .unwrap()
            .to_vec();
        helper_keys.push(<[u8; 32]>::try_from(key).unwrap());
    }
    let parts = obscura_client::config::load(&c.dir).unwrap();
    let obscura_client::TokenParts::Voprf(keepers) = &parts.tokens else {
        panic!("VOPRF cluster");
    };
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let plan_for = |party_key: [u8; 32], helper_keys: Vec<[u8; 32]>| {
        let mut plan = RecoveryPlan {
            id: [0; 16],
            issued_at: now(),
            keeper: 2,
            party_key,
            nonce,
            version: parts.key_version,
            helpers: vec![1, 3],
            helper_keys,
            public_shares: keepers
                .public_shares
                .iter()
                .map(|per| per.iter().map(obscura_keeper::oprf::serialize).collect())
                .collect(),
            policy: policy.to_json().into_bytes(),
        };
        OsRng.fill_bytes(&mut plan.id);
        plan
    };
    let sign = |plan: &RecoveryPlan, signer: &ed25519_dalek::SigningKey| {
        Order::Recover {
            keeper: plan.keeper,
            party_key: plan.party_key,
            plan: recovery_digest(plan),
        }
        .sign(signer)
        .to_vec()
    };
    let refused = |answer: &ResponseBody, code: ErrorCode, why: &str| {
        matches!(answer, ResponseBody::Error { code: c, message } if *c == code
            && message.contains(why))
    };
    let one = |plan: RecoveryPlan, signature: Vec<u8>| {
        let (c, evidence) = (&c, evidence.clone());
        async move {
            parts_for(c, &plan, &signature, &evidence, &[1])
                .await
                .remove(0)
        }
    };

    // A user's own plan for keeper 2's genuine key: no part.
    let user = ed25519_dalek::SigningKey::generate(&mut OsRng);
    let plan = plan_for(party_key, helper_keys.clone());
    let answer = one(plan.clone(), sign(&plan, &user)).await;
    assert!(
        refused(&answer, ErrorCode::Rejected, "data owner's order"),
        "{answer:?}"
    );
    // The owner's plan, for a key of the attacker's with keeper 2's evidence: the evidence
    // does not bind that key, and the helper gives nothing.
    let thief = obscura_attest::seal::PartyKey::generate(&mut OsRng);
    let plan = plan_for(thief.public(), helper_keys.clone());
    let answer = one(plan.clone(), sign(&plan, &owner)).await;
    assert!(
        refused(&answer, ErrorCode::Forbidden, "keeper 1 refuses keeper 2"),
        "{answer:?}"
    );
    // A plan whose policy would pass a debug environment is refused whoever signed it.
    let mut debug = plan_for(party_key, helper_keys.clone());
    let mut lax = policy.clone();
    lax.allow_debug = true;
    debug.policy = lax.to_json().into_bytes();
    let answer = one(debug.clone(), sign(&debug, &owner)).await;
    assert!(
        refused(&answer, ErrorCode::BadRequest, "recovery policy"),
        "{answer:?}"
    );
    // A plan listing another key for the helper (made before it restarted, or for a key its
    // host made): the helper's masks would not be its build's.
    let plan = plan_for(party_key, vec![thief.public(), helper_keys[1]]);
    let answer = one(plan.clone(), sign(&plan, &owner)).await;
    assert!(
        refused(
            &answer,
            ErrorCode::Rejected,
            "names another key of this keeper"
        ),
        "{answer:?}"
    );
    // A plan recorded an hour ago is not played again.
    let mut old = plan_for(party_key, helper_keys.clone());
    old.issued_at -= 3600;
    let answer = one(old.clone(), sign(&old, &owner)).await;
    assert!(
        refused(&answer, ErrorCode::Stale, "replay window"),
        "{answer:?}"
    );

    // The owner's genuine plan: each helper gives its part, sealed to keeper 2's key only.
    let appraisal = appraise_keeper(&c, 2, &policy, &ca).await;
    assert_eq!(appraisal.party_key(), Some(party_key.as_slice()));
    let mut receipt = [0u8; 32];
    OsRng.fill_bytes(&mut receipt);
    let genuine = || {
        let plan = plan_for(party_key, helper_keys.clone());
        let signature = sign(&plan, &owner);
        (plan, signature)
    };
    let (first_plan, first_signature) = genuine();
    let given: Vec<RecoveryPart> = parts_for(&c, &first_plan, &first_signature, &evidence, &[1, 3])
        .await
        .into_iter()
        .map(part_of)
        .collect();
    // Asked again (an answer lost), a helper gives its part again: whoever relays a plan
    // cannot use it up.
    let again = part_of(
        parts_for(&c, &first_plan, &first_signature, &evidence, &[1])
            .await
            .remove(0),
    );
    assert_eq!(again.masks, given[0].masks);
    let digest = recovery_digest(&first_plan);
    let sealed = |p: &RecoveryPart| obscura_attest::seal::Sealed {
        enc: p.enc.clone(),
        ciphertext: p.ciphertext.clone(),
    };
    assert!(thief
        .open(&recovery_purpose(2, 1, &digest), &sealed(&given[0]))
        .is_err());

    let altered = |answer: &ResponseBody| {
        assert!(
            refused(
                answer,
                ErrorCode::Rejected,
                "helper keeper 1's part was altered on its way"
            ),
            "{answer:?}"
        );
    };
    // Whoever carries the parts shifts a mask commitment: the part's tag fails, nobody is
    // blamed, and keeper 2 takes nothing.
    let mut shifted = given.clone();
    shifted[0].masks[0][0] = obscura_keeper::oprf::serialize(
        &(obscura_keeper::oprf::deserialize(&shifted[0].masks[0][0]).unwrap()
            + obscura_keeper::RistrettoPoint::mul_base(&obscura_keeper::Scalar::ONE)),
    );
    let answer = raw(
        &c,
        2,
        recover_body(&first_plan, &first_signature, shifted, &appraisal, &receipt),
    )
    .await;
    altered(&answer);
    // Or passes helper 3's sealed contributions off as helper 1's: the tag is helper 3's.
    let (plan, signature) = genuine();
    let mut swapped: Vec<RecoveryPart> = parts_for(&c, &plan, &signature, &evidence, &[1, 3])
        .await
        .into_iter()
        .map(part_of)
        .collect();
    let three = swapped[1].clone();
    swapped[0].enc = three.enc;
    swapped[0].ciphertext = three.ciphertext;
    swapped[0].masks = three.masks;
    swapped[0].tag = three.tag;
    let answer = raw(
        &c,
        2,
        recover_body(&plan, &signature, swapped, &appraisal, &receipt),
    )
    .await;
    altered(&answer);

    // Keeper 3 lies (a build of its own that the owner appraised, whose key the plan lists):
    // its part is made from another share, masked and tagged as its key would. Keeper 2 names
    // it, with proof under the receipt key that the verdict is its own.
    let liar = obscura_attest::seal::PartyKey::generate(&mut OsRng);
    let plan = plan_for(party_key, vec![helper_keys[0], liar.public()]);
    let signature = sign(&plan, &owner);
    let honest = part_of(
        parts_for(&c, &plan, &signature, &evidence, &[1])
            .await
            .remove(0),
    );
    let digest = recovery_digest(&plan);
    let shared = liar.agree(&helper_keys[0]).unwrap();
    let mut masks = Vec::new();
    let contributions: Vec<[u8; 32]> = (1..=KEYS as u8)
        .map(|node| {
            let mut wrong = three_shares[&(node, parts.key_version)].clone();
            wrong.secret += obscura_keeper::Scalar::ONE;
            let label = obscura_proto::recovery_label(&digest, node, parts.key_version);
            let part = recovery::part(&wrong, 2, &[1, 3], |m| {
                Ok(recovery::mask(&shared, &label, 3, m))
            })
            .unwrap();
            masks.push(
                part.masks
                    .iter()
                    .map(obscura_keeper::oprf::serialize)
                    .collect(),
            );
            part.contribution.to_bytes()
        })
        .collect::<Vec<_>>();
    let lied = obscura_attest::seal::seal(
        &appraisal,
        &recovery_purpose(2, 3, &digest),
        &postcard::to_allocvec(&contributions).unwrap(),
        &mut OsRng,
    )
    .unwrap();
    let tagged = |masks: Vec<Vec<[u8; 32]>>| {
        let tag = obscura_proto::recovery_part_tag(
            &liar.agree(&party_key).unwrap(),
            &digest,
            3,
            &lied.enc,
            &lied.ciphertext,
            &masks,
        );
        RecoveryPart {
            helper: 3,
            enc: lied.enc.clone(),
            ciphertext: lied.ciphertext.clone(),
            masks,
            tag,
        }
    };
    let named_three = |answer: ResponseBody, why: &str| {
        let ResponseBody::RecoveryRefused {
            keeper,
            blamed,
            reason,
            proof,
        } = answer
        else {
            panic!("no verdict: {answer:?}");
        };
        assert_eq!((keeper, blamed.as_slice()), (2, [3].as_slice()));
        assert!(reason.contains(why), "{reason}");
        assert_eq!(
            proof,
            obscura_proto::recovery_verdict(&receipt, 2, &blamed, &reason)
        );
    };
    let lying = tagged(masks.clone());
    let answer = raw(
        &c,
        2,
        recover_body(
            &plan,
            &signature,
            vec![honest.clone(), lying],
            &appraisal,
            &receipt,
        ),
    )
    .await;
    named_three(
        answer,
        "helper keeper 3's part does not match its public share",
    );
    // Nor can it fail unnamed with a part malformed under a good tag (a mask missing).
    let mut short = masks;
    short[0].clear();
    let answer = raw(
        &c,
        2,
        recover_body(
            &plan,
            &signature,
            vec![honest, tagged(short)],
            &appraisal,
            &receipt,
        ),
    )
    .await;
    named_three(
        answer,
        "helper keeper 3's part is not one mask per other helper",
    );
    let status = c.client.keeper_status().await;
    assert!(
        status[1].1.as_ref().unwrap().key_versions.is_empty(),
        "nothing is taken from a recovery that fails"
    );

    // The genuine parts the relay tampered with first still recover keeper 2 while their plan
    // is fresh, and keeper 2 proves it with the receipt.
    let answer = raw(
        &c,
        2,
        recover_body(&first_plan, &first_signature, given, &appraisal, &receipt),
    )
    .await;
    let ResponseBody::Provisioned {
        keeper: 2,
        public_shares,
        receipt: proof,
    } = answer
    else {
        panic!("not recovered: {answer:?}");
    };
    assert_eq!(public_shares.len(), 1, "the cluster's one token key");
    assert_eq!(
        proof,
        obscura_proto::provision_receipt(&receipt, 2, &public_shares)
    );

    // The owner's client recovers it (again: it holds the same shares); it then evaluates with the dealt keys (keeper 1 down, so
    // keepers 2 and 3 make every token), and holds the shares sealed to its build.
    let recovered = c.client.recover(2, &[]).await.unwrap();
    assert_eq!(recovered.helpers, vec![1, 3]);
    assert_eq!(recovered.nodes, KEYS);
    c.keeper_down(1).await;
    let found = c
        .client
        .search(&testdata("derived/coffee.q75.jpg"), 5, 10)
        .await
        .unwrap();
    assert_eq!(found.matches[0].id, id);
    c.keeper_down(2).await;
    let two = LoadedKeeper::load(&c.keeper_config(2)).unwrap();
    assert!(two.stranded.is_none());
    assert_eq!(two.shares.len(), KEYS);
    // A querier cannot order a recovery.
    assert!(matches!(
        c.querier_client().recover(2, &[]).await,
        Err(Error::NotOwner)
    ));
}

/// A keeper's metrics listener: the band elements it evaluated are counted, and the budget each
/// grant used, and no label or value names the user who asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keepers_metrics_count_evaluations_and_name_no_user() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = Cluster::start("keeper-metrics").await;
    let mut ports = Vec::new();
    for j in 1..=3 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        c.keeper_down(j).await;
        let path = c.keeper_config(j);
        let mut config: obscura_cluster::keeper::KeeperConfig =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        config.metrics = Some(format!("127.0.0.1:{port}"));
        std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        c.keeper_up(j).await;
        ports.push(port);
    }
    let querier = c.user("quinnsearcher", roles::QUERIER).await;
    querier
        .search(&testdata("derived/coffee.q75.jpg"), 5, 10)
        .await
        .unwrap();
    let (mut evaluated, mut grants, mut used) = (0.0, 0.0, 0.0);
    for port in ports {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let value = |name: &str| -> f64 {
            answer
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
                .unwrap_or_else(|| panic!("{name} in\n{answer}"))
        };
        evaluated += value("obscura_tokens_evaluated_total");
        grants += value("obscura_budget_used_ratio_count");
        used += value("obscura_budget_used_ratio_sum");
        assert!(value("obscura_key_shares") >= 1.0, "{answer}");
        assert!(!answer.contains("quinn"), "{answer}");
    }
    // One search: 72 band elements at each keeper asked, two of three at least, each a grant
    // that used part of the querier's budget, and none all of it.
    assert!(evaluated >= 144.0, "{evaluated}");
    assert!(grants >= 2.0, "{grants}");
    assert!(used > 0.0 && used < grants, "{used} of {grants}");
}
