//! Our VOPRF against the `voprf` crate (Meta's implementation of RFC 9497), both ways: a
//! keeper of ours answers a client of theirs, and a server of theirs answers a client of ours;
//! the outputs agree with their server's direct evaluation of the PRF.

use obscura_keeper::oprf;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use voprf::{BlindedElement, EvaluationElement, Proof, Ristretto255, VoprfClient, VoprfServer};

fn their_server(key: &curve25519_dalek::Scalar) -> VoprfServer<Ristretto255> {
    VoprfServer::new_with_key(key.as_bytes()).unwrap()
}

#[test]
fn our_keeper_answers_their_client() {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let key = oprf::random_scalar(&mut rng);
    let server = their_server(&key);
    let inputs: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 1 + i as usize]).collect();
    let blinds: Vec<_> = inputs
        .iter()
        .map(|x| VoprfClient::<Ristretto255>::blind(x, &mut rng).unwrap())
        .collect();
    let elements = oprf::Elements::from_bytes(
        blinds
            .iter()
            .map(|b| b.message.serialize().into())
            .collect(),
    )
    .unwrap();
    let ours = oprf::evaluate_batch(&key, &elements, &mut rng).unwrap();
    let messages: Vec<_> = ours
        .elements
        .iter()
        .map(|e| EvaluationElement::<Ristretto255>::deserialize(e).unwrap())
        .collect();
    let proof = Proof::<Ristretto255>::deserialize(&ours.proof.to_bytes()).unwrap();
    let states: Vec<_> = blinds.iter().map(|b| b.state.clone()).collect();
    let outputs: Vec<_> =
        VoprfClient::batch_finalize(&inputs, &states, &messages, &proof, server.get_public_key())
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
    for (x, out) in inputs.iter().zip(outputs) {
        assert_eq!(out.as_slice(), server.evaluate(x).unwrap().as_slice());
        let direct = oprf::finalize(x, &(oprf::hash_to_group(x) * key));
        assert_eq!(out.as_slice(), direct.as_slice());
    }
}

#[test]
fn their_server_answers_our_client() {
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let key = oprf::random_scalar(&mut rng);
    let server = their_server(&key);
    let pk = oprf::public_key(&key);
    let inputs: Vec<Vec<u8>> = (0..20u8).map(|i| vec![0x5a ^ i; 3]).collect();
    let blinded: Vec<_> = inputs
        .iter()
        .map(|x| oprf::blind(x, &mut rng).unwrap())
        .collect();
    let messages: Vec<_> = blinded
        .iter()
        .map(|b| BlindedElement::<Ristretto255>::deserialize(&oprf::serialize(&b.element)).unwrap())
        .collect();
    let theirs = server.batch_blind_evaluate(&mut rng, &messages).unwrap();
    let evaluated: Vec<[u8; 32]> = theirs
        .messages
        .iter()
        .map(|m| m.serialize().into())
        .collect();
    let proof = oprf::Proof::from_bytes(&theirs.proof.serialize().into()).unwrap();
    let elements = oprf::Elements::from_points(blinded.iter().map(|b| b.element).collect());
    let ds = oprf::verify_batch(&pk, &elements, &evaluated, &proof).unwrap();
    for ((x, b), d) in inputs.iter().zip(&blinded).zip(&ds) {
        let out = oprf::finalize(x, &oprf::unblind(&b.blind, d));
        assert_eq!(out.as_slice(), server.evaluate(x).unwrap().as_slice());
    }
    // Their proof does not pass for another key.
    let other = oprf::public_key(&oprf::random_scalar(&mut rng));
    assert!(oprf::verify_batch(&other, &elements, &evaluated, &proof).is_err());
}
