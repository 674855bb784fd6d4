//! The ledger's entries attacked as a node or a stranger would write them: a stranger's
//! signature, a node writing the owner's transitions or another node's records, an entry moved
//! to another position or ledger, a deletion of an image never registered, a key version going
//! back, runs past their approval; and the state rebuilt from the encoded entries equals the
//! state built as they came.

use ed25519_dalek::SigningKey;
use obscura_ledger::entry::*;
use obscura_ledger::merkle::root;
use rand_core::OsRng;

const LOG: [u8; 32] = [9; 32];

struct Parties {
    owner: SigningKey,
    nodes: Vec<SigningKey>,
}

impl Parties {
    fn new() -> Parties {
        Parties {
            owner: SigningKey::generate(&mut OsRng),
            nodes: (0..3).map(|_| SigningKey::generate(&mut OsRng)).collect(),
        }
    }

    fn authors(&self) -> Authors {
        Authors {
            owner: self.owner.verifying_key(),
            nodes: self.nodes.iter().map(SigningKey::verifying_key).collect(),
        }
    }

    fn key(&self, author: u8) -> &SigningKey {
        if author == 0 {
            &self.owner
        } else {
            &self.nodes[usize::from(author) - 1]
        }
    }
}

/// The tree head of `entries`: what the next one is signed after.
fn prev_of(entries: &[Entry]) -> [u8; 32] {
    let leaves: Vec<[u8; 32]> = entries.iter().map(Entry::leaf).collect();
    root(&leaves)
}

/// Apply `transition` as the next entry after `entries`, written by `author`.
fn write(
    state: &mut State,
    entries: &[Entry],
    p: &Parties,
    author: u8,
    transition: Transition,
) -> Result<Entry, Refused> {
    let prev = prev_of(entries);
    let entry = Entry::sign(&LOG, state.size, &prev, author, transition, p.key(author));
    state
        .apply(&LOG, &prev, &p.authors(), &entry)
        .map(|()| entry)
}

#[test]
fn every_party_refuses_an_entry_its_author_may_not_write_and_rebuilds_the_same_state() {
    let p = Parties::new();
    let authors = p.authors();
    let mut state = State::default();
    let mut entries = Vec::new();
    let image = [1u8; 16];
    let work = [5u8; 32];
    for (author, t) in [
        (
            0,
            Transition::ImageRegistered {
                image,
                manifest: [2; 32],
            },
        ),
        (
            0,
            Transition::ImageRegistered {
                image: [3; 16],
                manifest: [4; 32],
            },
        ),
        (0, Transition::KeyVersion { version: 2 }),
        (
            0,
            Transition::Granted {
                user: "ana".into(),
                role: "querier".into(),
            },
        ),
        (
            0,
            Transition::WorkApproved {
                work,
                expires_at: 4_000_000_000,
                max_runs: 1,
            },
        ),
        (
            2,
            Transition::WorkRun {
                work,
                node: 2,
                run: 1,
            },
        ),
        (
            1,
            Transition::Checkpoint {
                node: 1,
                seq: 10,
                head: [6; 32],
            },
        ),
        (0, Transition::ImageDeleted { image: [3; 16] }),
        (
            0,
            Transition::Revoked {
                user: "ana".into(),
                role: "querier".into(),
            },
        ),
    ] {
        let e = write(&mut state, &entries, &p, author, t).unwrap();
        entries.push(e);
    }
    let before = state.clone();

    // A stranger's signature in the owner's name.
    let stranger = SigningKey::generate(&mut OsRng);
    let prev = prev_of(&entries);
    let forged = Entry::sign(
        &LOG,
        state.size,
        &prev,
        0,
        Transition::ImageDeleted { image },
        &stranger,
    );
    let refused = state.apply(&LOG, &prev, &authors, &forged).unwrap_err();
    assert!(
        refused.why.contains("not signed by its author"),
        "{refused}"
    );
    // A node writing the owner's transitions, or another node's records.
    for t in [
        Transition::ImageDeleted { image },
        Transition::KeyVersion { version: 9 },
        Transition::Granted {
            user: "mallory".into(),
            role: "owner".into(),
        },
        Transition::WorkApproved {
            work: [7; 32],
            expires_at: u64::MAX,
            max_runs: 100,
        },
    ] {
        let refused = write(&mut state, &entries, &p, 3, t).unwrap_err();
        assert!(refused.why.contains("only the owner"), "{refused}");
    }
    let refused = write(
        &mut state,
        &entries,
        &p,
        3,
        Transition::Checkpoint {
            node: 1,
            seq: 11,
            head: [0; 32],
        },
    )
    .unwrap_err();
    assert!(
        refused.why.contains("node 1's record written by node 3"),
        "{refused}"
    );
    let refused = write(
        &mut state,
        &entries,
        &p,
        3,
        Transition::WorkRun {
            work,
            node: 2,
            run: 2,
        },
    )
    .unwrap_err();
    assert!(refused.why.contains("written by node 3"), "{refused}");
    // The owner's genuine entry moved to another position, or to another ledger.
    let genuine = Entry::sign(
        &LOG,
        state.size,
        &prev,
        0,
        Transition::KeyVersion { version: 3 },
        &p.owner,
    );
    let mut moved = genuine.clone();
    moved.seq += 1;
    assert!(state
        .apply(&LOG, &prev, &authors, &moved)
        .unwrap_err()
        .why
        .contains("not the next"));
    assert!(state
        .apply(&[8; 32], &prev, &authors, &genuine)
        .unwrap_err()
        .why
        .contains("not signed by its author"));
    // Signed for a history that did not come to be: it joins no other.
    assert!(state
        .apply(&LOG, &[0x42; 32], &authors, &genuine)
        .unwrap_err()
        .why
        .contains("position and history"));
    let replayed = entries[2].clone();
    assert!(state.apply(&LOG, &prev, &authors, &replayed).is_err());
    // Rules: deleting an image never registered (or already deleted), a key version going
    // back, a run past the approval's count, a run of a work never approved, an older
    // checkpoint, a role never held.
    for (t, why) in [
        (
            Transition::ImageDeleted { image: [3; 16] },
            "not registered",
        ),
        (
            Transition::ImageRegistered {
                image,
                manifest: [0; 32],
            },
            "already registered",
        ),
        (Transition::KeyVersion { version: 2 }, "not above 2"),
        (
            Transition::Revoked {
                user: "ana".into(),
                role: "querier".into(),
            },
            "does not hold",
        ),
    ] {
        let refused = write(&mut state, &entries, &p, 0, t).unwrap_err();
        assert!(refused.why.contains(why), "{refused}");
    }
    let refused = write(
        &mut state,
        &entries,
        &p,
        2,
        Transition::WorkRun {
            work,
            node: 2,
            run: 2,
        },
    )
    .unwrap_err();
    assert!(refused.why.contains("1 counted of 1"), "{refused}");
    let refused = write(
        &mut state,
        &entries,
        &p,
        1,
        Transition::WorkRun {
            work: [7; 32],
            node: 1,
            run: 1,
        },
    )
    .unwrap_err();
    assert!(refused.why.contains("never approved"), "{refused}");
    let refused = write(
        &mut state,
        &entries,
        &p,
        1,
        Transition::Checkpoint {
            node: 1,
            seq: 10,
            head: [0; 32],
        },
    )
    .unwrap_err();
    assert!(refused.why.contains("not after its last"), "{refused}");
    // Nothing refused changed the state.
    assert_eq!(state, before);

    // Anyone starting empty, from the entries as stored, rebuilds the same state and the same
    // tree head.
    let stored: Vec<Vec<u8>> = entries
        .iter()
        .map(|e| postcard::to_allocvec(e).unwrap())
        .collect();
    let read: Vec<Entry> = stored
        .iter()
        .map(|b| postcard::from_bytes(b).unwrap())
        .collect();
    assert_eq!(State::replay(&LOG, &authors, &read).unwrap(), state);
    let leaves: Vec<_> = read.iter().map(Entry::leaf).collect();
    assert_eq!(
        root(&leaves),
        root(&entries.iter().map(Entry::leaf).collect::<Vec<_>>())
    );
    assert_eq!(state.images.len(), 1);
    assert_eq!(state.key_version, 2);
    assert!(state.grants.is_empty());
    // A history with one entry rewritten does not replay past it.
    let mut rewritten = read.clone();
    rewritten[3].transition = Transition::Granted {
        user: "mallory".into(),
        role: "owner".into(),
    };
    let refused = State::replay(&LOG, &authors, &rewritten).unwrap_err();
    assert_eq!(refused.seq, 3);
}

#[test]
fn a_replica_takes_entries_all_or_none_passes_over_those_it_holds_and_names_conflicts() {
    use obscura_ledger::merkle::{verify_consistency, Frontier};
    use obscura_ledger::replica::{log_id, AppendError, Replica};

    let p = Parties::new();
    let mut replica = Replica::new(p.authors());
    let log = log_id(&p.owner.verifying_key(), &p.authors().nodes);
    assert_eq!(replica.log(), log);
    // Entries signed one after another from the tree `after`, each after the ones before.
    let chain = |after: &Frontier, ts: Vec<Transition>| -> Vec<Entry> {
        let mut tree = after.clone();
        ts.into_iter()
            .map(|t| {
                let e = Entry::sign(&log, tree.size(), &tree.root(), 0, t, &p.owner);
                tree.push(&e.leaf());
                e
            })
            .collect()
    };
    let image = |i: u8| Transition::ImageRegistered {
        image: [i; 16],
        manifest: [i; 32],
    };
    let first = chain(&Frontier::default(), (0..3).map(image).collect());
    assert_eq!(replica.append(&first), Ok(3));
    let at3 = replica.head();

    // Held entries again, then new ones: only the new count.
    let mut more = first.clone();
    more.extend(chain(replica.frontier(), vec![image(3)]));
    assert_eq!(replica.append(&more), Ok(1));
    assert!(replica.holds(&more[3]));

    // Another entry in a held place, a gap, one twice in a batch, one signed after another
    // history, a rule broken at the end of a batch: refused, and nothing of the batch is taken.
    let before = replica.head();
    let state_before = replica.state().clone();
    let other = chain(&Frontier::of(&[first[0].leaf()]), vec![image(9)]);
    assert_eq!(
        replica.append(&other),
        Err(AppendError::Conflict { seq: 1 })
    );
    let mut gap = chain(replica.frontier(), vec![image(9), image(8), image(7)]);
    assert_eq!(
        replica.append(&gap.split_off(2)),
        Err(AppendError::Gap { seq: 6, size: 4 })
    );
    let once = chain(replica.frontier(), vec![image(9)]);
    assert_eq!(
        replica.append(&[once[0].clone(), once[0].clone()]),
        Err(AppendError::Conflict { seq: 4 })
    );
    let elsewhere = chain(&Frontier::of(&[[1; 32]; 4]), vec![image(9)]);
    assert!(matches!(
        replica.append(&elsewhere),
        Err(AppendError::Refused(r)) if r.why.contains("history")
    ));
    let broken = chain(
        replica.frontier(),
        vec![image(9), Transition::ImageDeleted { image: [7; 16] }],
    );
    assert!(matches!(
        replica.append(&broken),
        Err(AppendError::Refused(r)) if r.seq == 5
    ));
    assert_eq!(replica.head(), before);
    assert_eq!(replica.state(), &state_before);
    assert_eq!(replica.state().images.len(), 4);

    // Its proofs tie its earlier heads to its head now.
    let proof = replica.proof_from(3).unwrap();
    assert!(verify_consistency(
        3,
        4,
        &at3.root,
        &replica.head().root,
        &proof
    ));
    assert_eq!(replica.root_at(3), Some(at3.root));
    assert_eq!(replica.root_at(5), None);
}

#[test]
fn group_entries_are_the_owners_in_epoch_order_and_of_bounded_size() {
    let p = Parties::new();
    let mut state = State::default();
    let mut entries = Vec::new();
    let commit = |epoch, len| Transition::GroupCommit {
        epoch,
        commit: vec![7; len],
        welcome: Some(vec![8; 10]),
    };
    let sealed = |epoch, len| Transition::Sealed {
        epoch,
        message: vec![9; len],
    };
    // Sealed at epoch 0 (the owner alone), then a commit into epoch 1.
    entries.push(write(&mut state, &entries, &p, 0, sealed(0, 10)).unwrap());
    entries.push(write(&mut state, &entries, &p, 0, commit(1, 10)).unwrap());
    let at = state.clone();
    // A node cannot change the group or seal in it.
    let e = write(&mut state, &entries, &p, 1, commit(2, 10)).unwrap_err();
    assert!(e.why.contains("only the owner"), "{}", e.why);
    let e = write(&mut state, &entries, &p, 2, sealed(1, 10)).unwrap_err();
    assert!(e.why.contains("only the owner"), "{}", e.why);
    // A commit that skips or repeats an epoch, a message sealed in a past epoch.
    for t in [commit(3, 10), commit(1, 10), sealed(0, 10)] {
        let e = write(&mut state, &entries, &p, 0, t).unwrap_err();
        assert!(e.why.contains("epoch"), "{}", e.why);
    }
    // Past the size limit.
    for t in [
        commit(2, MAX_GROUP_MESSAGE + 1),
        sealed(1, MAX_GROUP_MESSAGE + 1),
    ] {
        let e = write(&mut state, &entries, &p, 0, t).unwrap_err();
        assert!(e.why.contains("over"), "{}", e.why);
    }
    assert_eq!(state, at);
    entries.push(write(&mut state, &entries, &p, 0, sealed(1, MAX_GROUP_MESSAGE)).unwrap());
    assert_eq!(State::replay(&LOG, &p.authors(), &entries).unwrap(), state);
}

#[test]
fn names_past_the_limit_are_refused() {
    let p = Parties::new();
    let mut state = State::default();
    let long = "x".repeat(MAX_NAME + 1);
    let refused = write(
        &mut state,
        &[],
        &p,
        0,
        Transition::Granted {
            user: long,
            role: "querier".into(),
        },
    );
    assert!(refused.unwrap_err().why.contains("over 64 bytes"));
    assert_eq!(state, State::default());
}

#[test]
fn a_refused_batch_undoes_every_kind_of_transition_exactly() {
    use obscura_ledger::merkle::Frontier;
    use obscura_ledger::replica::Replica;

    let p = Parties::new();
    let mut replica = Replica::new(p.authors());
    let log = replica.log();
    let work = [5u8; 32];
    let chain = |after: &Frontier, ts: Vec<(u8, Transition)>| -> Vec<Entry> {
        let mut tree = after.clone();
        ts.into_iter()
            .map(|(author, t)| {
                let e = Entry::sign(&log, tree.size(), &tree.root(), author, t, p.key(author));
                tree.push(&e.leaf());
                e
            })
            .collect()
    };
    let grant = |user: &str, role: &str| Transition::Granted {
        user: user.into(),
        role: role.into(),
    };
    let before = chain(
        &Frontier::default(),
        vec![
            (
                0,
                Transition::ImageRegistered {
                    image: [1; 16],
                    manifest: [1; 32],
                },
            ),
            (0, Transition::KeyVersion { version: 2 }),
            (0, grant("ana", "querier")),
            (0, grant("bob", "auditor")),
            (
                0,
                Transition::WorkApproved {
                    work,
                    expires_at: 10,
                    max_runs: 3,
                },
            ),
            (
                1,
                Transition::WorkRun {
                    work,
                    node: 1,
                    run: 1,
                },
            ),
            (
                2,
                Transition::Checkpoint {
                    node: 2,
                    seq: 4,
                    head: [4; 32],
                },
            ),
        ],
    );
    replica.append(&before).unwrap();
    let state = replica.state().clone();
    let head = replica.head();

    // Every kind changed, a role granted again, a user's last role revoked, then a rule
    // broken: all of it undone.
    let batch = chain(
        replica.frontier(),
        vec![
            (0, Transition::ImageDeleted { image: [1; 16] }),
            (
                0,
                Transition::ImageRegistered {
                    image: [2; 16],
                    manifest: [2; 32],
                },
            ),
            (0, Transition::KeyVersion { version: 3 }),
            (0, grant("ana", "querier")),
            (0, grant("ana", "owner")),
            (
                0,
                Transition::Revoked {
                    user: "bob".into(),
                    role: "auditor".into(),
                },
            ),
            (
                0,
                Transition::WorkApproved {
                    work,
                    expires_at: 20,
                    max_runs: 5,
                },
            ),
            (
                1,
                Transition::WorkRun {
                    work,
                    node: 1,
                    run: 2,
                },
            ),
            (
                2,
                Transition::Checkpoint {
                    node: 2,
                    seq: 8,
                    head: [8; 32],
                },
            ),
            (0, Transition::Synced { at: 1 }),
            (
                0,
                Transition::GroupCommit {
                    epoch: 1,
                    commit: vec![1],
                    welcome: None,
                },
            ),
            (0, Transition::KeyVersion { version: 1 }),
        ],
    );
    assert!(replica.append(&batch).is_err());
    assert_eq!(replica.state(), &state);
    assert_eq!(replica.head(), head);
    // Without the broken one, it is taken whole.
    assert_eq!(replica.append(&batch[..11]), Ok(11));
    assert_eq!(replica.state().group_epoch, 1);
    assert_ne!(replica.state(), &state);
}
