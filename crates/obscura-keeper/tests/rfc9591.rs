//! RFC 9591, Appendix E.1: FROST(Ed25519, SHA-512), 2-of-3, signers 1 and 3. The keepers'
//! signing path ([`signing::signing_package`], [`signing::sign_share`], [`signing::aggregate`])
//! must give the RFC's signature shares and signature from its key shares and nonces, and the
//! signature must verify as plain Ed25519.

use std::collections::BTreeMap;

mod common;

use common::{unhex, Dkg};
use frost_ed25519 as frost;
use obscura_keeper::signing;

type Nonce = frost_core::round1::Nonce<frost::Ed25519Sha512>;

const VERIFYING_KEY: &str = "15d21ccd7ee42959562fc8aa63224c8851fb3ec85a3faf66040d380fb9738673";
const MESSAGE: &str = "74657374";
/// (identifier, share) for all three participants.
const SHARES: [(u8, &str); 3] = [
    (
        1,
        "929dcc590407aae7d388761cddb0c0db6f5627aea8e217f4a033f2ec83d93509",
    ),
    (
        2,
        "a91e66e012e4364ac9aaa405fcafd370402d9859f7b6685c07eed76bf409e80d",
    ),
    (
        3,
        "d3cb090a075eb154e82fdb4b3cb507f110040905468bb9c46da8bdea643a9a02",
    ),
];
/// (identifier, hiding nonce, binding nonce, hiding commitment, binding commitment, sig share)
const SIGNERS: [(u8, &str, &str, &str, &str, &str); 2] = [
    (
        1,
        "ef6599dea4010581a72b3018c37c29a4341d7cab0773e8687ca74dcf14009701",
        "2baadfa0c69aa60d517ad4751de372a73f9d89cfc39026601f18458cdec12605",
        "9b116f12589591a7e23fe8048059ab10ab48e67739e7a2fb3890f61a7999478c",
        "c39b66b7dfccb122da24f13587f9a08c4347cae70046ca15169adf90ba65854d",
        "60997f0142e43e8005027fe5ab7447dac00d22c2d7ddd9571a02613ba7d81c08",
    ),
    (
        3,
        "80f8d9a4b8f9366e1a0b618107c907cd3ee29fa9bb40b4691cc1bde696240005",
        "2610b664a5a187b4855e87d2ff485bebdf043dc2f161fcd4854cd01dc0276404",
        "e679a2a971748ccfaabead4dbe8ac1def61275c186c79d471e1e45091ad1e687",
        "b2a942478453fabb6bd3181c56ba657413447b4136e1daea2484d396d1a516b3",
        "79390e78bc59699c7af831f8f5fb478ec871a85f561a8641b5670ac4443f720f",
    ),
];
const SIGNATURE: &str = "154fb694ee7fcb37bf2381d94488c2a84b03b3352ad085feca81ad26d45852b7\
                         ecfe971ce4da95c4a95db93ac376b053897fca212ef85f99cf696bffeb178f07";

fn key_package(j: u8) -> frost::keys::KeyPackage {
    let share = SHARES.iter().find(|s| s.0 == j).unwrap().1;
    let signing = frost::keys::SigningShare::deserialize(&unhex(share)).unwrap();
    frost::keys::KeyPackage::new(
        signing::identifier(j).unwrap(),
        signing,
        frost::keys::VerifyingShare::from(signing),
        frost::VerifyingKey::deserialize(&unhex(VERIFYING_KEY)).unwrap(),
        2,
    )
}

#[test]
fn rfc9591_ed25519_vectors_pass_through_the_keepers_signing_path() {
    let public = frost::keys::PublicKeyPackage::new(
        SHARES
            .iter()
            .map(|&(j, _)| {
                (
                    signing::identifier(j).unwrap(),
                    *key_package(j).verifying_share(),
                )
            })
            .collect::<BTreeMap<_, _>>(),
        frost::VerifyingKey::deserialize(&unhex(VERIFYING_KEY)).unwrap(),
        Some(2),
    );
    assert_eq!(signing::public_key(&public).to_vec(), unhex(VERIFYING_KEY));
    let message = unhex(MESSAGE);

    // Round one: the RFC's nonces, whose commitments must be the RFC's.
    let mut nonces = Vec::new();
    let mut commitments = Vec::new();
    for &(j, hiding, binding, hiding_c, binding_c, _) in &SIGNERS {
        let n = frost::round1::SigningNonces::from_nonces(
            Nonce::deserialize(&unhex(hiding)).unwrap(),
            Nonce::deserialize(&unhex(binding)).unwrap(),
        );
        let c = n.commitments();
        assert_eq!(
            c.hiding().serialize().unwrap(),
            unhex(hiding_c),
            "signer {j}"
        );
        assert_eq!(
            c.binding().serialize().unwrap(),
            unhex(binding_c),
            "signer {j}"
        );
        commitments.push((j, c.serialize().unwrap()));
        nonces.push(n);
    }
    let package = signing::signing_package(&message, &commitments).unwrap();

    // Round two, at each keeper.
    let mut shares = Vec::new();
    for (&(j, .., sig_share), n) in SIGNERS.iter().zip(nonces) {
        let share = signing::sign_share(&key_package(j), n, &package).unwrap();
        assert_eq!(share, unhex(sig_share), "signer {j}'s share");
        shares.push((j, share));
    }

    // Aggregation at the client.
    let signature = signing::aggregate(&package, &shares, &public).unwrap();
    assert_eq!(signature.to_vec(), unhex(SIGNATURE));
    let vk =
        ed25519_dalek::VerifyingKey::from_bytes(&unhex(VERIFYING_KEY).try_into().unwrap()).unwrap();
    vk.verify_strict(&message, &ed25519_dalek::Signature::from_bytes(&signature))
        .unwrap();

    // A share changed in one bit is refused, naming its signer.
    let mut bad = shares.clone();
    bad[1].1[0] ^= 1;
    assert_eq!(
        signing::aggregate(&package, &bad, &public),
        Err(signing::SigningError::Cheaters(vec![3]))
    );

    // Every message must be exactly its encoding: FROST's decoders ignore bytes after one, so
    // a commitment, package or share with a byte appended was taken as the message before it.
    let longer = |b: &[u8]| [b, &[0][..]].concat();
    let mut padded = commitments.clone();
    padded[0].1.push(0);
    assert!(signing::signing_package(&message, &padded).is_err());
    assert!(signing::package_message(&longer(&package)).is_err());
    assert!(signing::aggregate(&longer(&package), &shares, &public).is_err());
    let (j, hiding, binding, ..) = SIGNERS[0];
    let n = frost::round1::SigningNonces::from_nonces(
        Nonce::deserialize(&unhex(hiding)).unwrap(),
        Nonce::deserialize(&unhex(binding)).unwrap(),
    );
    assert!(signing::sign_share(&key_package(j), n, &longer(&package)).is_err());
    let mut padded = shares.clone();
    padded[0].1.push(0);
    assert_eq!(
        signing::aggregate(&package, &padded, &public),
        Err(signing::SigningError::Cheaters(vec![j]))
    );
    let kp = signing::key_package_bytes(&key_package(j)).unwrap();
    assert!(signing::key_package_from(&kp).is_ok());
    assert!(signing::key_package_from(&longer(&kp)).is_err());
    let pp = signing::public_package_bytes(&public).unwrap();
    assert!(signing::public_package_from(&longer(&pp)).is_err());
}

#[test]
fn key_generation_among_three_keepers_gives_shares_that_sign_and_that_the_relay_cannot_read() {
    let mut rng = rand_core::OsRng;
    let context = b"user tag and key id";
    let dkg = Dkg::through_round2(3, 2, context, &mut rng);
    // What the relay sees does not parse as a round-2 package: it is sealed.
    for (_, sealed) in dkg.to.iter().flatten() {
        assert!(frost::keys::dkg::round2::Package::deserialize(sealed).is_err());
    }
    // A package opened with another context (another user or key) fails.
    let wrong = signing::dkg_finish(
        &dkg.after[0],
        &dkg.peers[0],
        b"another",
        &dkg.others(1),
        &dkg.to[0],
    );
    assert!(matches!(wrong, Err(signing::SigningError::Sealed(_))));
    let (packages, public) = dkg.finish(context);
    // Keepers 2 and 3 sign.
    let mut nonces = Vec::new();
    let mut commitments = Vec::new();
    for j in [2u8, 3] {
        let (n, c) = signing::commit(&packages[j as usize - 1], &mut rng).unwrap();
        nonces.push(n);
        commitments.push((j, c));
    }
    let package = signing::signing_package(b"hello", &commitments).unwrap();
    let shares: Vec<_> = [2u8, 3]
        .iter()
        .zip(nonces)
        .map(|(&j, n)| {
            (
                j,
                signing::sign_share(&packages[j as usize - 1], n, &package).unwrap(),
            )
        })
        .collect();
    let signature = signing::aggregate(&package, &shares, &public).unwrap();
    ed25519_dalek::VerifyingKey::from_bytes(&signing::public_key(&public))
        .unwrap()
        .verify_strict(b"hello", &ed25519_dalek::Signature::from_bytes(&signature))
        .unwrap();
}

/// The relay starts keeper 1's key generation twice and shows keeper 2 the first round-1
/// package, keeper 3 the second (a broadcast split in two). FROST alone would fail only at the
/// keeper whose share does not match the commitment it saw, and let the others finish with a
/// key not every keeper holds. Each keeper binds the round-1 transcript it saw into its sealed
/// round-2 packages, so no keeper finishes.
#[test]
fn a_relay_that_splits_the_round1_broadcast_makes_every_keeper_fail() {
    let mut rng = rand_core::OsRng;
    let context = b"user tag and key id";
    let keys: Vec<_> = (0..3).map(|_| signing::peer_key(&mut rng)).collect();
    let publics: Vec<[u8; 32]> = keys.iter().map(|k| k.1).collect();
    let peers: Vec<_> = (1..=3u8)
        .map(|j| signing::PeerKeys::new(j, &keys[j as usize - 1].0, &publics).unwrap())
        .collect();
    let (_, first) = signing::dkg_start(1, 3, 2, &mut rng).unwrap();
    let (s1, second) = signing::dkg_start(1, 3, 2, &mut rng).unwrap();
    let (s2, p2) = signing::dkg_start(2, 3, 2, &mut rng).unwrap();
    let (s3, p3) = signing::dkg_start(3, 3, 2, &mut rng).unwrap();
    let seen: [Vec<(u8, Vec<u8>)>; 3] = [
        vec![(2, p2.clone()), (3, p3.clone())],
        vec![(1, first), (3, p3)],
        vec![(1, second), (2, p2)],
    ];
    let mut after = Vec::new();
    let mut to: Vec<Vec<(u8, Vec<u8>)>> = vec![Vec::new(); 3];
    for (i, s) in [s1, s2, s3].into_iter().enumerate() {
        let j = i as u8 + 1;
        let (s, out) = signing::dkg_round2(s, &peers[i], context, &seen[i], &mut rng).unwrap();
        for (r, sealed) in out {
            to[r as usize - 1].push((j, sealed));
        }
        after.push(s);
    }
    for i in 0..3 {
        let r = signing::dkg_finish(&after[i], &peers[i], context, &seen[i], &to[i]);
        assert!(
            matches!(r, Err(signing::SigningError::Sealed(_))),
            "keeper {} finished: {:?}",
            i + 1,
            r.map(|_| ())
        );
    }
}
