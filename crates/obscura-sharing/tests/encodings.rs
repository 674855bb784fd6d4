//! Every encode/decode pair round-trips, and decoding arbitrary bytes never panics.

use ed25519_dalek::SigningKey;
use obscura_sharing::manifest::{ImageId, Manifest, NodeDigests, SignedManifest};
use proptest::prelude::*;

fn manifest() -> impl Strategy<Value = Manifest> {
    (
        any::<[u8; 16]>(),
        (2u8..=20).prop_flat_map(|n| (2..=n, Just(n), 1..n)),
        any::<[u8; 32]>(),
        any::<u64>(),
        any::<u32>(),
        any::<u64>(),
        any::<u8>(),
    )
        .prop_map(
            |(id, (k, n, t), digest, len, version, created, fill)| Manifest {
                image_id: ImageId(id),
                k,
                n,
                t,
                share_scheme: 1,
                hash_scheme: 1,
                digest_alg: 1,
                content_digest: digest,
                content_len: len,
                token_key_version: version,
                created_at: created,
                nodes: (1..=n)
                    .map(|x| NodeDigests {
                        node: x,
                        image_share: [fill ^ x; 32],
                        hash_share: [fill.wrapping_add(x); 32],
                    })
                    .collect(),
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn manifest_round_trips(m in manifest(), seed in any::<[u8; 32]>()) {
        prop_assert_eq!(&Manifest::decode(&m.encode()).unwrap(), &m);
        let owner = SigningKey::from_bytes(&seed);
        let signed = m.clone().sign(&owner).unwrap();
        let back = SignedManifest::from_bytes(&signed.to_bytes()).unwrap();
        let verified = back.verify(&owner.verifying_key()).unwrap();
        prop_assert_eq!(verified.manifest(), &m);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = SignedManifest::from_bytes(&bytes);
        let _ = Manifest::decode(&bytes);
    }

    #[test]
    fn image_id_text_round_trips(id in any::<[u8; 16]>()) {
        let id = ImageId(id);
        prop_assert_eq!(id.to_string().parse::<ImageId>().unwrap(), id);
    }
}

#[test]
fn image_id_parsing_rejects_garbage() {
    for bad in [
        "",
        "00",
        &"g".repeat(32),
        &"0".repeat(33),
        "é".repeat(16).as_str(),
        // A sign before a byte: `u8::from_str_radix` takes it (found by fuzzing the journal).
        &"+a".repeat(16),
        &format!("+{}", "0".repeat(31)),
    ] {
        assert!(bad.parse::<ImageId>().is_err(), "{bad:?}");
    }
}
