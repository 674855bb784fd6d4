//! The group key as its members, a removed member and a would-be worker see it. Each test is
//! an attack or a promise of the crate's documentation, with the cheapest adversary: a member
//! client that keeps every key it may, and skips messages it would rather not process.

use obscura_attest::sim::SimulationRoot;
use obscura_attest::{binding as attest_binding, Policy, Role, Verifier};
use obscura_group::{Admitted, Candidate, GroupError, Member, Received};

const NOW: u64 = 1_800_000_000;

/// A client `name` the owner added and who joined, and the change (for the other members).
fn with_client(owner: &mut Member, name: &str) -> (Member, obscura_group::Change) {
    let mut m = Member::new(&format!("client:{name}")).unwrap();
    let kp = m.key_package(None).unwrap();
    let change = owner
        .add(&Candidate::parse(&kp).unwrap(), &Admitted::vouched())
        .unwrap();
    owner.confirm().unwrap();
    assert_eq!(
        m.receive(&change.commit, change.welcome.as_deref())
            .unwrap(),
        Received::Joined(change.epoch)
    );
    (m, change)
}

fn owner() -> Member {
    let mut owner = Member::new("client:owner").unwrap();
    owner.create().unwrap();
    owner
}

#[test]
fn a_member_opens_what_the_owner_sealed_and_nodes_see_neither_label_nor_identity() {
    let mut owner = owner();
    let mut bob = Member::new("client:bob").unwrap();
    let kp = bob.key_package(None).unwrap();
    let change = owner
        .add(&Candidate::parse(&kp).unwrap(), &Admitted::vouched())
        .unwrap();
    // What a node stores: the commit is ciphertext, so it does not name who joined.
    assert!(!change.commit.windows(10).any(|w| w == b"client:bob"));
    owner.confirm().unwrap();
    bob.receive(&change.commit, change.welcome.as_deref())
        .unwrap();
    let (epoch, sealed) = owner.seal(b"label: harbour at dusk").unwrap();
    assert_eq!(epoch, 1);
    assert!(!sealed.windows(7).any(|w| w == b"harbour"));
    assert_eq!(
        bob.receive(&sealed, None).unwrap(),
        Received::Opened(b"label: harbour at dusk".to_vec())
    );
    // The owner reads the ledger too, and meets its own message.
    assert_eq!(owner.receive(&sealed, None).unwrap(), Received::Own);
    let names: Vec<_> = owner.members().into_iter().map(|(i, _)| i).collect();
    assert_eq!(names, ["client:owner", "client:bob"]);
}

#[test]
fn a_removed_member_cannot_open_later_messages_while_the_others_can() {
    let mut owner = owner();
    let (mut bob, _) = with_client(&mut owner, "bob");
    let (mut carol, joined) = with_client(&mut owner, "carol");
    assert_eq!(
        bob.receive(&joined.commit, joined.welcome.as_deref())
            .unwrap(),
        Received::Epoch(2)
    );
    let (_, before) = owner.seal(b"before").unwrap();
    assert_eq!(
        carol.receive(&before, None).unwrap(),
        Received::Opened(b"before".to_vec())
    );

    let removal = owner.remove("client:bob").unwrap();
    owner.confirm().unwrap();
    let (_, after) = owner.seal(b"after").unwrap();

    // A modified bob skips its own removal and tries the next message with the keys it holds.
    let skipped = bob.receive(&after, None);
    assert!(
        matches!(skipped, Err(GroupError::Undecryptable(_))),
        "{skipped:?}"
    );
    // Processing the removal, it is out.
    assert_eq!(
        bob.receive(&removal.commit, None).unwrap(),
        Received::Removed
    );
    assert!(matches!(
        bob.receive(&after, None),
        Err(GroupError::Undecryptable(_))
    ));
    assert_eq!(bob.epoch(), None);

    assert_eq!(
        carol.receive(&removal.commit, None).unwrap(),
        Received::Epoch(removal.epoch)
    );
    assert_eq!(
        carol.receive(&after, None).unwrap(),
        Received::Opened(b"after".to_vec())
    );
    let names: Vec<_> = owner.members().into_iter().map(|(i, _)| i).collect();
    assert_eq!(names, ["client:owner", "client:carol"]);
}

#[test]
fn used_message_keys_and_past_epochs_are_gone_forward_secrecy() {
    let mut owner = owner();
    let (mut bob, _) = with_client(&mut owner, "bob");
    let (_, first) = owner.seal(b"first").unwrap();
    assert_eq!(
        bob.receive(&first, None).unwrap(),
        Received::Opened(b"first".to_vec())
    );
    // bob's state, as a thief would copy it now, no longer opens what it read.
    let mut stolen = Member::from_bytes(&bob.to_bytes()).unwrap();
    assert!(matches!(
        stolen.receive(&first, None),
        Err(GroupError::Undecryptable(_))
    ));

    // A message of epoch 1 that bob had not read when the group moved on is gone too: no past
    // epoch's secrets are kept.
    let (_, unread) = owner.seal(b"unread").unwrap();
    let (_, carol_joined) = with_client(&mut owner, "carol");
    assert_eq!(
        bob.receive(&carol_joined.commit, None).unwrap(),
        Received::Epoch(2)
    );
    assert!(matches!(
        bob.receive(&unread, None),
        Err(GroupError::Undecryptable(_))
    ));
}

#[test]
fn a_member_saved_and_loaded_goes_on_where_it_was() {
    let mut owner = owner();
    let mut bob = Member::new("client:bob").unwrap();
    let kp = bob.key_package(None).unwrap();
    // bob's KeyPackage keys live in its saved state until the Welcome comes.
    let mut bob = Member::from_bytes(&bob.to_bytes()).unwrap();
    let change = owner
        .add(&Candidate::parse(&kp).unwrap(), &Admitted::vouched())
        .unwrap();
    owner.confirm().unwrap();
    let mut owner = Member::from_bytes(&owner.to_bytes()).unwrap();
    bob.receive(&change.commit, change.welcome.as_deref())
        .unwrap();
    let mut bob = Member::from_bytes(&bob.to_bytes()).unwrap();
    let (_, sealed) = owner.seal(b"kept").unwrap();
    assert_eq!(
        bob.receive(&sealed, None).unwrap(),
        Received::Opened(b"kept".to_vec())
    );
    assert_eq!(bob.epoch(), Some(1));
    assert!(Member::from_bytes(b"{}").is_err());
}

#[test]
fn an_abandoned_change_leaves_the_group_where_the_ledger_has_it() {
    let mut owner = owner();
    let (mut bob, _) = with_client(&mut owner, "bob");
    let mut carol = Member::new("client:carol").unwrap();
    let kp = carol.key_package(None).unwrap();
    let refused = owner
        .add(&Candidate::parse(&kp).unwrap(), &Admitted::vouched())
        .unwrap();
    // The ledger did not take it.
    owner.abandon();
    assert_eq!(owner.epoch(), Some(1));
    let (_, sealed) = owner.seal(b"still epoch 1").unwrap();
    assert_eq!(
        bob.receive(&sealed, None).unwrap(),
        Received::Opened(b"still epoch 1".to_vec())
    );
    // A Welcome of a change the ledger never took does not let carol read the group.
    assert_eq!(
        carol
            .receive(&refused.commit, refused.welcome.as_deref())
            .ok(),
        Some(Received::Joined(2))
    );
    assert!(matches!(
        carol.receive(&sealed, None),
        Err(GroupError::Undecryptable(_))
    ));
}

/// A cluster's simulation root, a worker's platform, and a policy allowing `allowed` for
/// workers.
fn attestation(allowed: [u8; 48]) -> (obscura_attest::sim::SimulatedPlatform, Policy) {
    let mut rng = rand_core::OsRng;
    let root = SimulationRoot::generate(&mut rng);
    let platform = root.issue("worker w1", &mut rng);
    let policy = Policy::from_json(&format!(
        r#"{{"version": 1, "name": "test", "allow_simulation": true,
            "simulation_roots": ["{}"],
            "measurements": [{{"role": "worker", "platform": "simulation",
                               "measurement": "{}"}}]}}"#,
        hex::encode(root.public()),
        hex::encode(allowed),
    ))
    .unwrap();
    (platform, policy)
}

/// A worker's KeyPackage with evidence its platform made for measurement `runs`, bound to its
/// own key and identity and the owner's `nonce`.
fn worker_key_package(
    worker: &mut Member,
    platform: &obscura_attest::sim::SimulatedPlatform,
    runs: [u8; 48],
    nonce: &[u8; 32],
) -> Vec<u8> {
    let (key, context) = obscura_group::binding(worker.identity(), &worker.signature_key());
    let data = attest_binding::report_data(&Role::Worker, &key, &context, nonce);
    let evidence = platform.evidence(&runs, &data, false, NOW);
    worker.key_package(Some(evidence.to_json())).unwrap()
}

#[test]
fn a_worker_joins_only_on_evidence_of_an_allowed_measurement_for_this_challenge() {
    let good = [7u8; 48];
    let (platform, policy) = attestation(good);
    let verifier = Verifier::new();
    let nonce = [9u8; 32];
    let mut owner = owner();

    // A wrong measurement: refused.
    let mut rogue = Member::new("worker:w1").unwrap();
    let kp = worker_key_package(&mut rogue, &platform, [6u8; 48], &nonce);
    let candidate = Candidate::parse(&kp).unwrap();
    assert!(candidate.is_worker());
    let refused = candidate.appraise(&verifier, &policy, &nonce, NOW);
    assert!(
        matches!(refused, Err(GroupError::NotAdmitted(_))),
        "{:?}",
        refused.err()
    );

    // Without evidence, or on the owner's word alone: refused.
    let mut bare = Member::new("worker:w2").unwrap();
    let bare = Candidate::parse(&bare.key_package(None).unwrap()).unwrap();
    assert!(matches!(
        bare.appraise(&verifier, &policy, &nonce, NOW),
        Err(GroupError::NotAdmitted(_))
    ));
    assert!(matches!(
        owner.add(&bare, &Admitted::vouched()),
        Err(GroupError::NotAdmitted(_))
    ));

    // A good worker's evidence, for another challenge (replayed): refused.
    let mut worker = Member::new("worker:w1").unwrap();
    let kp = worker_key_package(&mut worker, &platform, good, &[1u8; 32]);
    assert!(matches!(
        Candidate::parse(&kp)
            .unwrap()
            .appraise(&verifier, &policy, &nonce, NOW),
        Err(GroupError::NotAdmitted(_))
    ));

    // Good evidence lifted into another key's KeyPackage: refused, since it binds the key.
    let mut worker = Member::new("worker:w1").unwrap();
    let kp = worker_key_package(&mut worker, &platform, good, &nonce);
    let evidence = Candidate::parse(&kp).unwrap().evidence().unwrap().to_vec();
    let mut thief = Member::new("worker:w1").unwrap();
    let stolen = Candidate::parse(&thief.key_package(Some(evidence)).unwrap()).unwrap();
    assert!(matches!(
        stolen.appraise(&verifier, &policy, &nonce, NOW),
        Err(GroupError::NotAdmitted(_))
    ));
    // Nor does the good worker's appraisal admit the thief's KeyPackage.
    let candidate = Candidate::parse(&kp).unwrap();
    let admitted = candidate.appraise(&verifier, &policy, &nonce, NOW).unwrap();
    assert!(matches!(
        owner.add(&stolen, &admitted),
        Err(GroupError::NotAdmitted(_))
    ));

    // The good worker, fresh: in.
    let change = owner.add(&candidate, &admitted).unwrap();
    owner.confirm().unwrap();
    assert_eq!(
        worker
            .receive(&change.commit, change.welcome.as_deref())
            .unwrap(),
        Received::Joined(1)
    );
    let (_, sealed) = owner.seal(b"contract").unwrap();
    assert_eq!(
        worker.receive(&sealed, None).unwrap(),
        Received::Opened(b"contract".to_vec())
    );
}
