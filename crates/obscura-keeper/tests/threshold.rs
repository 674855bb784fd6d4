//! Threshold evaluation: any T of M keepers give exactly the single-key VOPRF; T − 1 keepers
//! can neither evaluate nor tell one key from another; a lying keeper is named and the others
//! still serve.

use curve25519_dalek::Scalar;
use obscura_keeper::oprf::{self, Evaluation};
use obscura_keeper::threshold::{self, BlindedBatch, KeyShare};
use obscura_keeper::Error;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

fn inputs() -> Vec<Vec<u8>> {
    (0..=255u8)
        .step_by(17)
        .map(|v| [b"obscura/band/v1".as_slice(), &[3, 2, v]].concat())
        .collect()
}

fn answer(share: &KeyShare, batch: &BlindedBatch, rng: &mut ChaCha20Rng) -> Evaluation {
    let blinded = oprf::Elements::from_bytes(batch.to_send().to_vec()).unwrap();
    oprf::evaluate_batch(&share.secret, &blinded, rng).unwrap()
}

/// Every subset of `t` of the `m` keepers.
fn subsets(m: u8, t: usize) -> Vec<Vec<u8>> {
    (0u32..1 << m)
        .filter(|s| s.count_ones() as usize == t)
        .map(|s| (1..=m).filter(|j| s & (1 << (j - 1)) != 0).collect())
        .collect()
}

#[test]
fn any_t_keepers_give_the_single_key_voprf() {
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    for (m, t) in [(3, 2), (5, 3), (4, 4), (3, 1)] {
        let key = oprf::random_scalar(&mut rng);
        let shares = threshold::deal(&key, m, t, &mut rng).unwrap();
        let xs = inputs();
        let refs: Vec<&[u8]> = xs.iter().map(Vec::as_slice).collect();
        // The PRF of the same key on one server, through the `voprf` crate.
        let server =
            voprf::VoprfServer::<voprf::Ristretto255>::new_with_key(key.as_bytes()).unwrap();
        for keepers in subsets(m as u8, t) {
            let batch = BlindedBatch::new(&refs, &mut rng).unwrap();
            let verified: Vec<_> = keepers
                .iter()
                .map(|&j| {
                    let share = &shares[j as usize - 1];
                    let a = answer(share, &batch, &mut rng);
                    batch.verify(j, &share.public(), &a).unwrap()
                })
                .collect();
            let tokens = batch.finish(&verified, t).unwrap();
            for (x, token) in xs.iter().zip(&tokens) {
                assert_eq!(
                    *token,
                    oprf::hash_to_group(x) * key,
                    "m {m} t {t} {keepers:?}"
                );
                assert_eq!(
                    oprf::finalize(x, token).as_slice(),
                    server.evaluate(x).unwrap().as_slice()
                );
            }
        }
    }
}

#[test]
fn fewer_than_t_keepers_cannot_evaluate_nor_tell_keys_apart() {
    let mut rng = ChaCha20Rng::seed_from_u64(6);
    let (m, t) = (5, 3);
    let key = oprf::random_scalar(&mut rng);
    let shares = threshold::deal(&key, m, t, &mut rng).unwrap();
    let x = b"obscura/band/v1 node 1 band 0 value 7";
    let batch = BlindedBatch::new(&[x], &mut rng).unwrap();
    let colluders = [2u8, 5];
    let verified: Vec<_> = colluders
        .iter()
        .map(|&j| {
            let s = &shares[j as usize - 1];
            batch
                .verify(j, &s.public(), &answer(s, &batch, &mut rng))
                .unwrap()
        })
        .collect();
    assert_eq!(
        batch.finish(&verified, t).err(),
        Some(Error::NotEnoughKeepers { need: 3, got: 2 })
    );
    // Interpolating through only their two shares gives some other key's value.
    assert_ne!(
        batch.finish(&verified, 2).unwrap()[0],
        oprf::hash_to_group(x) * key
    );

    // Their shares are consistent with every key: for any other key k', moving the dealer's
    // polynomial by (k' − k)·L, where L is 1 at 0 and 0 at each colluder, gives a valid sharing
    // of k' in which the colluders hold exactly what they hold now. The map between the two
    // dealers' random coefficients is a bijection, so the colluders' view has the same
    // distribution whatever the key.
    for _ in 0..20 {
        let other = oprf::random_scalar(&mut rng);
        let l = |j: u8| {
            colluders.iter().fold(Scalar::ONE, |acc, &c| {
                acc * (Scalar::ONE - Scalar::from(j) * Scalar::from(c).invert())
            })
        };
        let moved: Vec<KeyShare> = shares
            .iter()
            .map(|s| KeyShare {
                index: s.index,
                secret: s.secret + (other - key) * l(s.index),
            })
            .collect();
        for &c in &colluders {
            assert_eq!(moved[c as usize - 1].secret, shares[c as usize - 1].secret);
        }
        for subset in subsets(m as u8, t) {
            let chosen: Vec<KeyShare> = subset
                .iter()
                .map(|&j| moved[j as usize - 1].clone())
                .collect();
            assert_eq!(threshold::recover_key(&chosen).unwrap(), other);
        }
    }
}

#[test]
fn a_lying_keeper_is_named_and_the_others_still_serve() {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let key = oprf::random_scalar(&mut rng);
    let shares = threshold::deal(&key, 3, 2, &mut rng).unwrap();
    let xs = inputs();
    let refs: Vec<&[u8]> = xs.iter().map(Vec::as_slice).collect();
    let batch = BlindedBatch::new(&refs, &mut rng).unwrap();
    let publics: Vec<_> = shares.iter().map(KeyShare::public).collect();

    // Keeper 2 evaluates with a key other than its share, proving that key honestly.
    let liar = KeyShare {
        index: 2,
        secret: shares[1].secret + Scalar::ONE,
    };
    let lie = answer(&liar, &batch, &mut rng);
    // Keeper 2 swaps two correct elements, keeping the proof.
    let mut swapped = answer(&shares[1], &batch, &mut rng);
    swapped.elements.swap(0, 1);
    // Keeper 2 answers a different batch.
    let other_batch = BlindedBatch::new(&refs, &mut rng).unwrap();
    let replayed = answer(&shares[1], &other_batch, &mut rng);
    // Keeper 2 answers one element short.
    let mut short = answer(&shares[1], &batch, &mut rng);
    short.elements.pop();
    for bad in [lie, swapped, replayed, short] {
        match batch.verify(2, &publics[1], &bad) {
            Err(Error::Keeper { keeper: 2, .. }) => {}
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("a bad answer from keeper 2 was accepted"),
        }
    }
    let verified: Vec<_> = [1u8, 3]
        .iter()
        .map(|&j| {
            let s = &shares[j as usize - 1];
            batch
                .verify(j, &publics[j as usize - 1], &answer(s, &batch, &mut rng))
                .unwrap()
        })
        .collect();
    let tokens = batch.finish(&verified, 2).unwrap();
    for (x, token) in xs.iter().zip(&tokens) {
        assert_eq!(*token, oprf::hash_to_group(x) * key);
    }
    // The same keeper twice is refused.
    let again: Vec<_> = (0..2)
        .map(|_| {
            batch
                .verify(1, &publics[0], &answer(&shares[0], &batch, &mut rng))
                .unwrap()
        })
        .collect();
    assert!(matches!(batch.finish(&again, 2), Err(Error::Keepers(_))));
}

#[test]
fn parameters_are_checked() {
    let mut rng = ChaCha20Rng::seed_from_u64(8);
    let key = oprf::random_scalar(&mut rng);
    for (m, t) in [(3, 0), (3, 4), (256, 2)] {
        assert_eq!(
            threshold::deal(&key, m, t, &mut rng).err(),
            Some(Error::Params { m, t })
        );
    }
    assert!(BlindedBatch::new(&[], &mut rng).is_err());
    assert_eq!(
        oprf::deserialize(&[0; 32]).err(),
        Some(Error::Element),
        "the identity is refused"
    );
}

/// Additive blinding gives the same `k · HashToGroup(x)` for every subset of T keepers, its
/// blinded elements are what keepers evaluate and prove as usual, and a public share off the
/// dealt polynomial is refused before any evaluation.
#[test]
fn additive_blinding_gives_the_same_tokens() {
    use obscura_keeper::threshold::{AdditiveBatch, PublicKey};
    let mut rng = ChaCha20Rng::seed_from_u64(8);
    for (m, t) in [(3, 2), (5, 3), (4, 4), (3, 1)] {
        let key = oprf::random_scalar(&mut rng);
        let shares = threshold::deal(&key, m, t, &mut rng).unwrap();
        let publics: Vec<_> = shares.iter().map(KeyShare::public).collect();
        let pk = PublicKey::from_shares(&publics, t).unwrap();
        assert_eq!(pk.point(), oprf::public_key(&key));
        let xs = inputs();
        let refs: Vec<&[u8]> = xs.iter().map(Vec::as_slice).collect();
        for keepers in subsets(m as u8, t) {
            let batch = AdditiveBatch::new(&refs, &mut rng).unwrap();
            let blinded = oprf::Elements::from_bytes(batch.to_send().to_vec()).unwrap();
            let verified: Vec<_> = keepers
                .iter()
                .map(|&j| {
                    let share = &shares[j as usize - 1];
                    let a = oprf::evaluate_batch(&share.secret, &blinded, &mut rng).unwrap();
                    batch.verify(j, &share.public(), &a).unwrap()
                })
                .collect();
            let tokens = batch.finish(&verified, t, &pk).unwrap();
            for (x, token) in xs.iter().zip(&tokens) {
                assert_eq!(
                    *token,
                    oprf::hash_to_group(x) * key,
                    "m {m} t {t} {keepers:?}"
                );
            }
            // A keeper answering with another key is caught by its proof, as before.
            let liar = oprf::random_scalar(&mut rng);
            let bad = oprf::evaluate_batch(&liar, &blinded, &mut rng).unwrap();
            assert!(batch
                .verify(keepers[0], &publics[keepers[0] as usize - 1], &bad)
                .is_err());
        }
        if m > t {
            let mut off = publics.clone();
            off[m - 1] += oprf::hash_to_group(b"off");
            assert!(matches!(
                PublicKey::from_shares(&off, t),
                Err(Error::Keepers(_))
            ));
        }
    }
}

/// A rotation: the keepers' next shares evaluate `ρ · k`, so every stored element `k · H(x)`
/// moves to the next key as `ρ · k · H(x)` without anyone holding `k`; the next public shares
/// follow from the current ones; a share of one version does not combine with the other's.
#[test]
fn a_rekeyed_sharing_evaluates_the_factor_times_the_key() {
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    for (m, t) in [(3, 2), (5, 3), (3, 1)] {
        let key = oprf::random_scalar(&mut rng);
        let shares = threshold::deal(&key, m, t, &mut rng).unwrap();
        let rekey = threshold::Rekey::random(m, t, &mut rng).unwrap();
        let next: Vec<KeyShare> = shares.iter().map(|s| rekey.share(s).unwrap()).collect();
        for keepers in subsets(m as u8, t) {
            let chosen: Vec<KeyShare> = keepers
                .iter()
                .map(|&j| next[j as usize - 1].clone())
                .collect();
            assert_eq!(
                threshold::recover_key(&chosen).unwrap(),
                rekey.factor * key,
                "m {m} t {t} {keepers:?}"
            );
        }
        let public: Vec<_> = shares
            .iter()
            .map(|s| rekey.public_share(s.index, &s.public()).unwrap())
            .collect();
        for (p, s) in public.iter().zip(&next) {
            assert_eq!(*p, s.public());
        }
        let pk = threshold::PublicKey::from_shares(&public, t).unwrap();
        assert_eq!(pk.point(), oprf::public_key(&(rekey.factor * key)));
        let h = oprf::hash_to_group(b"obscura/band/v1\x02\x05\x80");
        assert_eq!(rekey.element(&(h * key)), h * (rekey.factor * key));
        if t >= 2 {
            // Keeper 1's old share with the others' new ones: neither key.
            let mut mixed = vec![shares[0].clone()];
            mixed.extend(next[1..t].iter().cloned());
            let got = threshold::recover_key(&mixed).unwrap();
            assert_ne!(got, key);
            assert_ne!(got, rekey.factor * key);
        }
    }
    assert!(threshold::Rekey::random(2, 3, &mut rng).is_err());
    let rekey = threshold::Rekey::random(3, 2, &mut rng).unwrap();
    let stranger = KeyShare::from_bytes(4, &[1; 32]).unwrap();
    assert!(rekey.share(&stranger).is_err());
}
