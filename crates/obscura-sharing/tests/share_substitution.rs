//! A node that returns a wrong share, or a manifest that was not signed by the owner, is caught
//! and named; the image is still rebuilt from the honest nodes when k of them remain.

use ed25519_dalek::SigningKey;
use obscura_sharing::bytes::{split, ByteShare, Params};
use obscura_sharing::manifest::{
    content_digest, share_digest, Culprit, ImageId, Manifest, NodeDigests, ShareFault, ShareRole,
    SignedManifest, Storage,
};
use obscura_sharing::Error;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

struct Fixture {
    image: Vec<u8>,
    shares: Vec<ByteShare>,
    owner: SigningKey,
    signed: SignedManifest,
}

fn manifest_for(id: ImageId, image: &[u8], shares: &[ByteShare]) -> Manifest {
    Manifest {
        image_id: id,
        k: 3,
        n: 5,
        t: 2,
        share_scheme: 1,
        hash_scheme: 1,
        digest_alg: 1,
        content_digest: content_digest(image),
        content_len: image.len() as u64,
        token_key_version: 1,
        created_at: 1_790_000_000,
        nodes: shares
            .iter()
            .map(|s| NodeDigests {
                node: s.x,
                image_share: share_digest(&id, s.x, ShareRole::Image, &s.bytes),
                hash_share: share_digest(&id, s.x, ShareRole::Hash, &[s.x; 256]),
            })
            .collect(),
    }
}

fn fixture() -> Fixture {
    let mut rng = ChaCha20Rng::seed_from_u64(42);
    let image = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/photos/coffee.png"
    ))
    .unwrap();
    let shares = split(&image, Params::new(3, 5).unwrap(), &mut rng).unwrap();
    let owner = SigningKey::generate(&mut rng);
    let id = ImageId::random(&mut rng);
    let signed = manifest_for(id, &image, &shares).sign(&owner).unwrap();
    Fixture {
        image,
        shares,
        owner,
        signed,
    }
}

#[test]
fn substituted_shares_are_named_and_skipped() {
    let f = fixture();
    let verified = f.signed.clone().verify(&f.owner.verifying_key()).unwrap();
    let mut received = f.shares.clone();
    received[1].bytes[1000] ^= 0x40; // node 2 flips a bit
    received[3] = f.shares[4].clone(); // node 4 replays node 5's share under its own name
    received[3].x = 4;
    let (good, culprits) = verified.partition_image_shares(received.clone());
    assert_eq!(good.len(), 3);
    assert_eq!(
        culprits,
        vec![
            Culprit {
                node: 2,
                fault: ShareFault::DigestMismatch
            },
            Culprit {
                node: 4,
                fault: ShareFault::DigestMismatch
            },
        ]
    );
    assert_eq!(verified.reconstruct(received).unwrap(), f.image);
}

#[test]
fn too_few_good_shares_names_every_culprit() {
    let f = fixture();
    let verified = f.signed.clone().verify(&f.owner.verifying_key()).unwrap();
    let mut received = f.shares[..3].to_vec();
    received[0].bytes[0] ^= 1;
    let err = verified.reconstruct(received).unwrap_err();
    assert!(matches!(
        &err,
        Error::NotEnoughVerifiedShares { need: 3, got: 2, culprits, .. } if culprits.len() == 1 && culprits[0].node == 1
    ));
    let msg = err.to_string();
    assert!(
        msg.contains("need 3 shares") && msg.contains("node 1 share failed its digest"),
        "{msg}"
    );
}

#[test]
fn a_share_from_another_image_or_role_does_not_verify() {
    let f = fixture();
    let verified = f.signed.clone().verify(&f.owner.verifying_key()).unwrap();
    let node = f.shares[0].x;
    let checked = verified
        .check_share(node, ShareRole::Image, &f.shares[0].bytes)
        .unwrap();
    // The check's proof names what it checked.
    assert_eq!(
        (checked.node(), checked.role(), checked.image()),
        (node, ShareRole::Image, verified.manifest().image_id)
    );
    assert!(verified
        .check_share(node, ShareRole::Hash, &f.shares[0].bytes)
        .is_err());
    assert!(matches!(
        verified.check_share(9, ShareRole::Image, &f.shares[0].bytes),
        Err(Error::BadShares { culprits, .. }) if culprits[0].fault == ShareFault::UnknownNode
    ));
}

#[test]
fn tampered_or_foreign_manifests_are_refused() {
    let f = fixture();
    let bytes = f.signed.to_bytes();
    // Flip one bit in each region: signature, header, a digest, the node table.
    for at in [3, 64 + 25, 64 + 60, bytes.len() - 5] {
        let mut t = bytes.clone();
        t[at] ^= 0x01;
        let outcome =
            SignedManifest::from_bytes(&t).and_then(|m| m.verify(&f.owner.verifying_key()));
        assert!(
            matches!(
                outcome,
                Err(Error::BadManifestSignature { .. }) | Err(Error::MalformedManifest(_))
            ),
            "flip at {at}"
        );
    }
    // A valid manifest signed by someone else.
    let mallory = SigningKey::from_bytes(&[7; 32]);
    let forged = f
        .signed
        .clone()
        .verify(&f.owner.verifying_key())
        .unwrap()
        .manifest()
        .clone()
        .sign(&mallory)
        .unwrap();
    assert!(matches!(
        forged.verify(&f.owner.verifying_key()),
        Err(Error::BadManifestSignature { .. })
    ));
    // Truncation and trailing garbage.
    assert!(SignedManifest::from_bytes(&bytes[..bytes.len() - 1]).is_err());
    let mut long = bytes.clone();
    long.push(0);
    assert!(matches!(
        SignedManifest::from_bytes(&long),
        Err(Error::MalformedManifest("trailing bytes"))
    ));
}

/// The storage scheme is the owner's, under its signature: a node that switches a manifest from
/// Shamir to compact or back, to have readers take its share for the other kind, is refused.
#[test]
fn a_node_cannot_switch_the_storage_scheme_under_the_owners_signature() {
    let f = fixture();
    let mut rng = ChaCha20Rng::seed_from_u64(43);
    let compact = Storage::Compact
        .split(&f.image, Params::new(3, 5).unwrap(), &mut rng)
        .unwrap();
    let hashes = vec![[0u8; 256]; 5];
    let signed_compact = Manifest::for_shares(
        f.signed.image_id(),
        Storage::Compact,
        3,
        2,
        &f.image,
        &compact,
        &hashes,
        1,
        1_790_000_000,
    )
    .unwrap()
    .sign(&f.owner)
    .unwrap();
    // The scheme byte: after the signature, the domain, the version, the id and k, n, t.
    let at = 64 + b"obscura/manifest/v1".len() + 1 + 16 + 3;
    for (signed, was, to) in [(&f.signed, 1u8, 2u8), (&signed_compact, 2, 1)] {
        let mut bytes = signed.to_bytes();
        assert_eq!(bytes[at], was);
        assert!(signed.clone().verify(&f.owner.verifying_key()).is_ok());
        bytes[at] = to;
        let switched = SignedManifest::from_bytes(&bytes).expect("a well-formed manifest");
        assert!(matches!(
            switched.verify(&f.owner.verifying_key()),
            Err(Error::BadManifestSignature { .. })
        ));
    }
    // Honestly signed, each rebuilds from its own shares and not from the other kind's.
    let compact_manifest = signed_compact.verify(&f.owner.verifying_key()).unwrap();
    assert_eq!(
        compact_manifest.reconstruct(compact[2..].to_vec()).unwrap(),
        f.image
    );
    assert!(compact_manifest
        .reconstruct(f.shares[..3].to_vec())
        .is_err());
}

/// The manifest encoding is what owners sign and nodes store: changing it must be a decision.
#[test]
fn manifest_encoding_is_frozen() {
    let id = ImageId([0x11; 16]);
    let m = Manifest {
        image_id: id,
        k: 3,
        n: 5,
        t: 2,
        share_scheme: 1,
        hash_scheme: 1,
        digest_alg: 1,
        content_digest: [0xcc; 32],
        content_len: 123_456,
        token_key_version: 7,
        created_at: 1_790_000_000,
        nodes: (1..=5)
            .map(|x| NodeDigests {
                node: x,
                image_share: [x; 32],
                hash_share: [x + 0x10; 32],
            })
            .collect(),
    };
    let enc = m.encode();
    assert_eq!(Manifest::decode(&enc).unwrap(), m);
    assert_eq!(enc.len(), 19 + 1 + 16 + 6 + 32 + 8 + 4 + 8 + 1 + 5 * 65);
    assert_eq!(
        blake3::hash(&enc).to_hex().as_str(),
        "9caebf4ee01422614e211873498377f34ebb94b0d010c25221d5199b421fa09e",
        "manifest encoding changed"
    );
    let sig = m
        .sign(&SigningKey::from_bytes(&[1; 32]))
        .unwrap()
        .to_bytes();
    assert_eq!(&sig[64..], &enc[..]);
}
