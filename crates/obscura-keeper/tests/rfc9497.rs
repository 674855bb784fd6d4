//! The test vectors of RFC 9497, Appendix A.1.2 (ristretto255-SHA512, VOPRF mode), through our
//! code path: key derivation, blinding, batched evaluation with its proof, proof verification,
//! unblinding and finalization, each value asserted. All three vectors of the suite's VOPRF mode
//! run; none is skipped. (The OPRF and POPRF modes are other protocols, not used here.)
//!
//! Source: <https://www.rfc-editor.org/rfc/rfc9497#appendix-A.1.2>.

mod common;

use common::unhex as hex;
use obscura_keeper::oprf::{self, Proof};

fn scalar(s: &str) -> curve25519_dalek::Scalar {
    curve25519_dalek::Scalar::from_canonical_bytes(hex(s).try_into().unwrap()).unwrap()
}

const SEED: &str = "a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3";
const KEY_INFO: &str = "74657374206b6579";
const SK: &str = "e6f73f344b79b379f1a0dd37e07ff62e38d9f71345ce62ae3a9bc60b04ccd909";
const PK: &str = "c803e2cc6b05fc15064549b5920659ca4a77b2cca6f04f6b357009335476ad4e";

struct Vector {
    inputs: &'static [&'static str],
    blinds: &'static [&'static str],
    blinded: &'static [&'static str],
    evaluated: &'static [&'static str],
    proof: &'static str,
    proof_random: &'static str,
    outputs: &'static [&'static str],
}

const BLIND_1: &str = "64d37aed22a27f5191de1c1d69fadb899d8862b58eb4220029e036ec4c1f6706";
const BLINDED_1: &str = "863f330cc1a1259ed5a5998a23acfd37fb4351a793a5b3c090b642ddc439b945";
const EVALUATED_1: &str = "aa8fa048764d5623868679402ff6108d2521884fa138cd7f9c7669a9a014267e";
const OUTPUT_1: &str = "b58cfbe118e0cb94d79b5fd6a6dafb98764dff49c14e1770b566e42402da1a7d\
                        a4d8527693914139caee5bd03903af43a491351d23b430948dd50cde10d32b3c";
const INPUT_2: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";
const OUTPUT_2: &str = "8a9a2f3c7f085b65933594309041fc1898d42d0858e59f90814ae90571a6df60\
                        356f4610bf816f27afdd84f47719e480906d27ecd994985890e5f539e7ea74b6";

const VECTORS: [Vector; 3] = [
    // A.1.2.1, batch size 1.
    Vector {
        inputs: &["00"],
        blinds: &[BLIND_1],
        blinded: &[BLINDED_1],
        evaluated: &[EVALUATED_1],
        proof: "ddef93772692e535d1a53903db24367355cc2cc78de93b3be5a8ffcc6985dd06\
                6d4346421d17bf5117a2a1ff0fcb2a759f58a539dfbe857a40bce4cf49ec600d",
        proof_random: "222a5e897cf59db8145db8d16e597e8facb80ae7d4e26d9881aa6f61d645fc0e",
        outputs: &[OUTPUT_1],
    },
    // A.1.2.2, batch size 1.
    Vector {
        inputs: &[INPUT_2],
        blinds: &[BLIND_1],
        blinded: &["cc0b2a350101881d8a4cba4c80241d74fb7dcbfde4a61fde2f91443c2bf9ef0c"],
        evaluated: &["60a59a57208d48aca71e9e850d22674b611f752bed48b36f7a91b372bd7ad468"],
        proof: "401a0da6264f8cf45bb2f5264bc31e109155600babb3cd4e5af7d181a2c9dc0a\
                67154fabf031fd936051dec80b0b6ae29c9503493dde7393b722eafdf5a50b02",
        proof_random: "222a5e897cf59db8145db8d16e597e8facb80ae7d4e26d9881aa6f61d645fc0e",
        outputs: &[OUTPUT_2],
    },
    // A.1.2.3, batch size 2.
    Vector {
        inputs: &["00", INPUT_2],
        blinds: &[
            BLIND_1,
            "222a5e897cf59db8145db8d16e597e8facb80ae7d4e26d9881aa6f61d645fc0e",
        ],
        blinded: &[
            BLINDED_1,
            "90a0145ea9da29254c3a56be4fe185465ebb3bf2a1801f7124bbbadac751e654",
        ],
        evaluated: &[
            EVALUATED_1,
            "cc5ac221950a49ceaa73c8db41b82c20372a4c8d63e5dded2db920b7eee36a2a",
        ],
        proof: "cc203910175d786927eeb44ea847328047892ddf8590e723c37205cb74600b0a\
                5ab5337c8eb4ceae0494c2cf89529dcf94572ed267473d567aeed6ab873dee08",
        proof_random: "419c4f4f5052c53c45f3da494d2b67b220d02118e0857cdbcf037f9ea84bbe0c",
        outputs: &[OUTPUT_1, OUTPUT_2],
    },
];

#[test]
fn key_derivation_matches() {
    let seed: [u8; 32] = hex(SEED).try_into().unwrap();
    let sk = oprf::derive_key(&seed, &hex(KEY_INFO)).unwrap();
    assert_eq!(sk, scalar(SK));
    assert_eq!(oprf::serialize(&oprf::public_key(&sk)).to_vec(), hex(PK));
}

#[test]
fn every_voprf_vector_of_the_suite_passes() {
    let sk = scalar(SK);
    let pk = oprf::deserialize(&hex(PK).try_into().unwrap()).unwrap();
    for (n, v) in VECTORS.iter().enumerate() {
        let inputs: Vec<Vec<u8>> = v.inputs.iter().map(|i| hex(i)).collect();
        let blinded: Vec<_> = inputs
            .iter()
            .zip(v.blinds)
            .map(|(x, r)| oprf::blind_with(x, scalar(r)).unwrap())
            .collect();
        for (b, want) in blinded.iter().zip(v.blinded) {
            assert_eq!(
                oprf::serialize(&b.element).to_vec(),
                hex(want),
                "vector {n}"
            );
        }
        let elements = oprf::Elements::from_points(blinded.iter().map(|b| b.element).collect());
        let evaluation = oprf::evaluate_batch_with(&sk, &elements, scalar(v.proof_random)).unwrap();
        for (e, want) in evaluation.elements.iter().zip(v.evaluated) {
            assert_eq!(e.to_vec(), hex(want), "vector {n}");
        }
        assert_eq!(
            evaluation.proof.to_bytes().to_vec(),
            hex(v.proof),
            "vector {n}"
        );

        // The client's side, from the RFC's bytes rather than ours.
        let proof = Proof::from_bytes(&hex(v.proof).try_into().unwrap()).unwrap();
        let evaluated: Vec<[u8; 32]> = v
            .evaluated
            .iter()
            .map(|e| hex(e).try_into().unwrap())
            .collect();
        let ds = oprf::verify_batch(&pk, &elements, &evaluated, &proof).unwrap();
        for ((x, (b, d)), want) in inputs.iter().zip(blinded.iter().zip(&ds)).zip(v.outputs) {
            let out = oprf::finalize(x, &oprf::unblind(&b.blind, d));
            assert_eq!(out.to_vec(), hex(want), "vector {n}");
        }

        // A proof for other elements, or a changed proof, fails.
        let mut bad = evaluated.clone();
        bad.reverse();
        if bad != evaluated {
            assert!(oprf::verify_batch(&pk, &elements, &bad, &proof).is_err());
        }
        let mut wrong = proof;
        wrong.s += curve25519_dalek::Scalar::ONE;
        assert_eq!(
            oprf::verify_batch(&pk, &elements, &evaluated, &wrong),
            Err(obscura_keeper::Error::Proof)
        );
    }
}
