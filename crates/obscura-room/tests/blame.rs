//! Who a worker blames, tried as the controller would cheat: a forged release placed before a
//! node's own, a release whose signature was spoiled, the blame list edited in the result, a
//! node that holds an older owner-signed manifest of the same image. An honest node is never
//! blamed; a lying one is, and the run completes from the others. The result is then checked
//! offline against the nodes' signatures on their releases.

use ed25519_dalek::{Signer, SigningKey};
use obscura_attest::seal::{seal_to_recipient, PartyKey};
use obscura_proto::{room_purpose, room_release_statement, room_shares_digest, RoomShare};
use obscura_room::job::{Cluster, Job};
use obscura_room::result::{open_output, verify_result, Release, Witnesses};
use obscura_room::sandbox::Sandbox;
use obscura_room::work::{InputSpec, Limits, Manifest, OutputKind, OutputSpec, Work};
use obscura_sharing::bytes::{split, ByteShare, Params};
use obscura_sharing::manifest::{ImageId, Manifest as ImageManifest};
use rand_core::OsRng;

const N: usize = 4;
const K: usize = 2;
const IMAGE: [u8; 16] = [0x11; 16];

/// A 4-node, 2-of-4 cluster holding one small image, stored at `created_at`.
struct Stored {
    owner: SigningKey,
    nodes: Vec<SigningKey>,
    manifest: Vec<u8>,
    shares: Vec<ByteShare>,
}

fn png() -> Vec<u8> {
    let img = image::RgbImage::from_fn(8, 4, |x, y| image::Rgb([x as u8 * 30, y as u8 * 60, 9]));
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

fn stored(owner: &SigningKey, nodes: &[SigningKey], bytes: &[u8], created_at: u64) -> Stored {
    let shares = split(bytes, Params::new(K, N).unwrap(), &mut OsRng).unwrap();
    let hashes = vec![vec![0u8; 256]; N];
    let manifest = ImageManifest::for_shares(
        ImageId(IMAGE),
        obscura_sharing::manifest::Storage::Shamir,
        K as u8,
        1,
        bytes,
        &shares,
        &hashes,
        1,
        created_at,
    )
    .unwrap()
    .sign(owner)
    .unwrap()
    .to_bytes();
    Stored {
        owner: owner.clone(),
        nodes: nodes.to_vec(),
        manifest,
        shares,
    }
}

fn work(recipient: &PartyKey) -> Work {
    let manifest = Manifest {
        inputs: vec![InputSpec {
            image: IMAGE,
            label: None,
        }],
        labels: vec![],
        parameters: vec![],
        output: OutputSpec {
            kind: OutputKind::Json,
            max_bytes: 4096,
        },
        limits: Limits {
            fuel: 10_000_000,
            memory_bytes: 4 << 20,
        },
        recipients: vec![recipient.public()],
    };
    let module = std::fs::read(format!(
        "{}/../../examples/room/colour_stats.wat",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    Work::new(&module, manifest).unwrap()
}

/// Node `x`'s release of `(manifest, share)` to `job`, as a node makes it.
fn release(job: &Job, node: &SigningKey, x: u8, manifest: &[u8], share: &[u8]) -> Release {
    let work = job.work().id().0;
    let nonce = [x; 32];
    let plain = postcard::to_allocvec(&(manifest.to_vec(), share.to_vec())).unwrap();
    let sealed = seal_to_recipient(
        &job.party_key(),
        &room_purpose(x, &work, &nonce, &IMAGE),
        &plain,
        &mut OsRng,
    )
    .unwrap();
    let shares = vec![RoomShare {
        image: IMAGE,
        enc: sealed.enc,
        ciphertext: sealed.ciphertext,
    }];
    let statement = room_release_statement(
        x,
        &work,
        &nonce,
        1,
        &job.party_key(),
        &job.signing_key(),
        &room_shares_digest(&shares),
    );
    Release {
        node: x,
        nonce,
        run: 1,
        shares,
        signature: node.sign(&statement).to_bytes().to_vec(),
    }
}

fn setup() -> (Stored, Cluster, PartyKey) {
    let owner = SigningKey::generate(&mut OsRng);
    let nodes: Vec<SigningKey> = (0..N).map(|_| SigningKey::generate(&mut OsRng)).collect();
    let s = stored(&owner, &nodes, &png(), 2_000);
    let cluster = Cluster {
        nodes: nodes.iter().map(SigningKey::verifying_key).collect(),
        k: K,
        owner: owner.verifying_key(),
    };
    (s, cluster, PartyKey::generate(&mut OsRng))
}

#[test]
fn a_forged_release_ahead_of_a_nodes_own_blames_nobody_and_keeps_nothing_out() {
    let (s, cluster, recipient) = setup();
    let sandbox = Sandbox::new().unwrap();
    let job = Job::new(&sandbox, work(&recipient), &mut OsRng).unwrap();
    let mut releases = Vec::new();
    // The controller puts a release in node 1's name first: garbage, unsigned.
    let mut forged = release(&job, &s.nodes[1], 1, &s.manifest, &s.shares[0].bytes);
    forged.signature = vec![0; 64];
    releases.push(forged);
    releases.push(release(
        &job,
        &s.nodes[0],
        1,
        &s.manifest,
        &s.shares[0].bytes,
    ));
    releases.push(release(
        &job,
        &s.nodes[1],
        2,
        &s.manifest,
        &s.shares[1].bytes,
    ));
    let result = job.run(&sandbox, &cluster, &releases, &mut OsRng).unwrap();
    assert!(result.blamed.is_empty(), "{:?}", result.blamed);
    assert_eq!(result.unsigned, vec![1]);
    let witnesses = Witnesses {
        nodes: &cluster.nodes,
        k: K,
    };
    assert_eq!(
        verify_result(&result, Some(&witnesses)).unwrap(),
        vec![1, 2]
    );
    let payload = open_output(&result, &recipient).unwrap();
    let stats: serde_json::Value = serde_json::from_slice(&payload.output).unwrap();
    assert_eq!(stats[0]["width"], 8);

    // The blame list is signed: a controller that adds or drops a culprit breaks the result.
    let mut edited = result.clone();
    edited.blamed.push(obscura_room::result::Blame {
        node: 2,
        why: "made up".into(),
    });
    assert!(verify_result(&edited, None).is_err());
    let mut edited = result.clone();
    edited.unsigned.clear();
    assert!(verify_result(&edited, None).is_err());
    // Its result key must be the one the nodes signed releases to.
    let mut other = result.clone();
    other.signing_key = SigningKey::generate(&mut OsRng).verifying_key().to_bytes();
    assert!(verify_result(&other, Some(&witnesses)).is_err());
    // No plain digest of the output in the result: the commitment is salted.
    assert_ne!(
        result.commitment,
        <sha2::Sha256 as sha2::Digest>::digest(&payload.output).as_slice()
    );
}

#[test]
fn a_node_with_an_older_manifest_is_blamed_and_the_honest_ones_are_not() {
    let (s, cluster, recipient) = setup();
    // Node 1 kept the image as it was stored before (another file, an older manifest, both the
    // owner's), and answers first.
    let older = stored(&s.owner, &s.nodes, b"an older file", 1_000);
    let sandbox = Sandbox::new().unwrap();
    let job = Job::new(&sandbox, work(&recipient), &mut OsRng).unwrap();
    let releases = vec![
        release(
            &job,
            &s.nodes[0],
            1,
            &older.manifest,
            &older.shares[0].bytes,
        ),
        release(&job, &s.nodes[1], 2, &s.manifest, &s.shares[1].bytes),
        release(&job, &s.nodes[2], 3, &s.manifest, &s.shares[2].bytes),
    ];
    let result = job.run(&sandbox, &cluster, &releases, &mut OsRng).unwrap();
    let blamed: Vec<u8> = result.blamed.iter().map(|b| b.node).collect();
    assert_eq!(blamed, vec![1], "{:?}", result.blamed);
    assert!(open_output(&result, &recipient).is_ok());
}

#[test]
fn a_node_whose_share_fails_its_manifest_is_named_and_the_run_completes() {
    let (s, cluster, recipient) = setup();
    let sandbox = Sandbox::new().unwrap();
    let job = Job::new(&sandbox, work(&recipient), &mut OsRng).unwrap();
    let mut bad = s.shares[2].bytes.clone();
    bad[0] ^= 1;
    let releases = vec![
        release(&job, &s.nodes[2], 3, &s.manifest, &bad),
        release(&job, &s.nodes[0], 1, &s.manifest, &s.shares[0].bytes),
        release(&job, &s.nodes[3], 4, &s.manifest, &s.shares[3].bytes),
    ];
    let result = job.run(&sandbox, &cluster, &releases, &mut OsRng).unwrap();
    assert_eq!(result.blamed.len(), 1);
    assert_eq!(result.blamed[0].node, 3);
    assert!(
        result.blamed[0].why.contains("failed its digest"),
        "{:?}",
        result.blamed
    );
    assert!(open_output(&result, &recipient).is_ok());
}

/// Run the colour statistics of the stored image over nodes 1 to 3 and return the result.
fn ran(s: &Stored, cluster: &Cluster, recipient: &PartyKey) -> obscura_room::result::RunResult {
    let sandbox = Sandbox::new().unwrap();
    let job = Job::new(&sandbox, work(recipient), &mut OsRng).unwrap();
    let releases: Vec<Release> = (0..3)
        .map(|i| {
            release(
                &job,
                &s.nodes[i],
                i as u8 + 1,
                &s.manifest,
                &s.shares[i].bytes,
            )
        })
        .collect();
    job.run(&sandbox, cluster, &releases, &mut OsRng).unwrap()
}

/// Re-sign `result` with `key` as a forger would, keeping it self-consistent.
fn resigned(
    mut result: obscura_room::result::RunResult,
    key: &SigningKey,
) -> obscura_room::result::RunResult {
    result.signing_key = key.verifying_key().to_bytes();
    let statement = obscura_proto::room_result_statement(
        &result.work,
        &result.manifests,
        &result.commitment,
        &obscura_room::result::blamed_encoding(&result.blamed, &result.unsigned),
    );
    result.signature = key.sign(&statement).to_bytes().to_vec();
    result
}

#[test]
fn a_result_checks_only_with_k_distinct_nodes_releasing_to_its_own_keys() {
    let (s, cluster, recipient) = setup();
    let witnesses = Witnesses {
        nodes: &cluster.nodes,
        k: K,
    };
    let result = ran(&s, &cluster, &recipient);
    assert_eq!(
        verify_result(&result, Some(&witnesses)).unwrap(),
        vec![1, 2, 3]
    );

    // A forger's key: its own signature checks, the nodes' do not name it.
    let forger = SigningKey::generate(&mut OsRng);
    let forged = resigned(result.clone(), &forger);
    assert!(verify_result(&forged, None).is_ok());
    assert!(verify_result(&forged, Some(&witnesses)).is_err());
    let mut bare = forged.clone();
    bare.releases.clear();
    assert!(verify_result(&bare, Some(&witnesses)).is_err());
    // One node's release repeated k times counts once.
    let mut repeated = result.clone();
    repeated.releases = vec![result.releases[0].clone(); K];
    assert!(verify_result(&repeated, Some(&witnesses)).is_err());
    // k − 1 releases are too few.
    let mut few = result.clone();
    few.releases.truncate(K - 1);
    assert!(verify_result(&few, Some(&witnesses)).is_err());
    // Node numbers outside the cluster count for nothing.
    let mut outside = result.clone();
    outside.releases[1].node = 0;
    outside.releases[2].node = 200;
    assert!(verify_result(&outside, Some(&witnesses)).is_err());
    // Releases made to another job's keys: another run's, moved into this result.
    let other = ran(&s, &cluster, &recipient);
    let mut swapped = result.clone();
    swapped.releases = other.releases.clone();
    assert!(verify_result(&swapped, Some(&witnesses)).is_err());
}

#[test]
fn the_sealed_output_is_as_long_whatever_the_output() {
    let (s, cluster, recipient) = setup();
    // A wide grey image and the small colour one: their statistics differ in length.
    let other = stored(&s.owner, &s.nodes, &png_of(1000, [200, 200, 200]), 2_000);
    let a = ran(&s, &cluster, &recipient);
    let b = ran(&other, &cluster, &recipient);
    let (pa, pb) = (
        open_output(&a, &recipient).unwrap(),
        open_output(&b, &recipient).unwrap(),
    );
    assert_ne!(pa.output.len(), pb.output.len());
    assert_ne!(pa.fuel_used, pb.fuel_used);
    assert_eq!(
        a.outputs[0].sealed.ciphertext.len(),
        b.outputs[0].sealed.ciphertext.len()
    );
}

#[test]
fn equally_many_nodes_behind_two_manifests_blame_nobody_whatever_the_order() {
    let (s, cluster, recipient) = setup();
    // Nodes 3 and 4 hold another file under the same id, stored at the same time: a tie.
    let rival = stored(&s.owner, &s.nodes, &png_of(40, [1, 2, 3]), 2_000);
    let sandbox = Sandbox::new().unwrap();
    let mut outputs = Vec::new();
    for order in [[0, 1, 2, 3], [3, 2, 1, 0]] {
        let job = Job::new(&sandbox, work(&recipient), &mut OsRng).unwrap();
        let releases: Vec<Release> = order
            .iter()
            .map(|&i| {
                let held = if i < 2 { &s } else { &rival };
                release(
                    &job,
                    &s.nodes[i],
                    i as u8 + 1,
                    &held.manifest,
                    &held.shares[i].bytes,
                )
            })
            .collect();
        let result = job.run(&sandbox, &cluster, &releases, &mut OsRng).unwrap();
        assert!(result.blamed.is_empty(), "{:?}", result.blamed);
        outputs.push(open_output(&result, &recipient).unwrap().output);
    }
    assert_eq!(outputs[0], outputs[1]);
}

#[test]
fn a_release_naming_no_node_of_the_cluster_or_a_node_taken_is_left_out_unlisted() {
    let (s, cluster, recipient) = setup();
    let sandbox = Sandbox::new().unwrap();
    let job = Job::new(&sandbox, work(&recipient), &mut OsRng).unwrap();
    let mut stray = release(&job, &s.nodes[0], 1, &s.manifest, &s.shares[0].bytes);
    stray.node = 200;
    let releases = vec![
        stray,
        release(&job, &s.nodes[0], 1, &s.manifest, &s.shares[0].bytes),
        release(&job, &s.nodes[0], 1, &s.manifest, &s.shares[0].bytes),
        release(&job, &s.nodes[1], 2, &s.manifest, &s.shares[1].bytes),
    ];
    let result = job.run(&sandbox, &cluster, &releases, &mut OsRng).unwrap();
    assert!(result.unsigned.is_empty(), "{:?}", result.unsigned);
    assert!(result.blamed.is_empty(), "{:?}", result.blamed);
}

/// A small one-colour image, `width` pixels wide.
fn png_of(width: u32, colour: [u8; 3]) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(width, 2, image::Rgb(colour));
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}
