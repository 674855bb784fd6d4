//! The protocol cores end to end, in one process: share every test photo among five simulated
//! nodes, search with every derived variant through Stage-1 tokens and Stage-2 MPC, and rebuild a
//! match from three nodes, checking it byte for byte.
//!
//! The nodes here are in-memory values, not servers: the network, storage and the `obscura`
//! command come with the node and client crates. Everything each node computes is exactly what
//! the protocol cores compute for a real node.
//!
//! `cargo run --release -p obscura-mpc --example local_search [PHOTOS_DIR [DERIVED_DIR]]`

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use obscura_mpc::{node, share_hash, HashShare, Querier, SearchParams};
use obscura_phash::phash64;
use obscura_sharing::bytes::{split, ByteShare, Params};
use obscura_sharing::manifest::{ImageId, Manifest, SignedManifest};
use obscura_sharing::rng::AesCtrRng;
use obscura_sharing::zero::{deal, ZeroSharingKeys};
use obscura_tokens::{BatchPlan, NodeTokenKeys, Token, TokenRoot};
use rand_core::SeedableRng;

const N: usize = 5;
const K: usize = 3;
const T: usize = 2;
const KEY_VERSION: u32 = 1;

/// What one node holds: shares, hash shares, manifests and token postings. Never a hash or image.
struct Node {
    images: HashMap<ImageId, (ByteShare, HashShare, Vec<u8>)>,
    postings: HashMap<Token, Vec<ImageId>>,
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    v.sort();
    Ok(v)
}

fn stem(p: &Path) -> String {
    let name = p.file_name().unwrap_or_default().to_string_lossy();
    name.split('.').next().unwrap_or_default().to_string()
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<bool> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata");
    let mut args = std::env::args().skip(1).map(PathBuf::from);
    let photos_dir = args.next().unwrap_or_else(|| root.join("photos"));
    let derived_dir = args.next().unwrap_or_else(|| root.join("derived"));
    let mut rng = AesCtrRng::from_os();

    // Cluster creation: zero-sharing keys for the nodes, token root and owner key for clients.
    let zero_keys: Vec<ZeroSharingKeys> = deal(N, T, &mut rng)?;
    let mut nodes: Vec<Node> = (0..N)
        .map(|_| Node {
            images: HashMap::new(),
            postings: HashMap::new(),
        })
        .collect();
    let token_root = TokenRoot::random(&mut rng);
    let token_keys: Vec<NodeTokenKeys> = (1..=N as u8)
        .map(|x| NodeTokenKeys::derive(&token_root, x, KEY_VERSION))
        .collect();
    let owner = SigningKey::generate(&mut rand_chacha::ChaCha20Rng::from_entropy());
    let params = Params::new(K, N)?;

    // Indexing.
    let started = Instant::now();
    let mut names: HashMap<ImageId, String> = HashMap::new();
    let mut originals: HashMap<ImageId, Vec<u8>> = HashMap::new();
    for path in files(&photos_dir)? {
        let bytes = std::fs::read(&path)?;
        let hash = phash64(&bytes)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .0;
        let id = ImageId::random(&mut rng);
        let shares = split(&bytes, params, &mut rng)?;
        let hash_shares = share_hash(hash, T, N, &mut rng)?;
        let hash_bytes: Vec<_> = hash_shares.iter().map(HashShare::to_bytes).collect();
        let created_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        let manifest = Manifest::for_shares(
            id,
            obscura_sharing::manifest::Storage::Shamir,
            K as u8,
            T as u8,
            &bytes,
            &shares,
            &hash_bytes,
            KEY_VERSION,
            created_at,
        )?
        .sign(&owner)?
        .to_bytes();
        for (((node, share), hs), keys) in nodes
            .iter_mut()
            .zip(shares)
            .zip(hash_shares)
            .zip(&token_keys)
        {
            for token in keys.index_tokens(hash) {
                node.postings.entry(token).or_default().push(id);
            }
            node.images.insert(id, (share, hs, manifest.clone()));
        }
        names.insert(id, stem(&path));
        originals.insert(id, bytes);
    }
    let index_time = started.elapsed();
    println!(
        "indexed {} photos into {N} nodes ({K}-of-{N}, t = {T}) in {:.0} ms",
        names.len(),
        index_time.as_secs_f64() * 1e3
    );

    // Searching with every derived variant.
    let plan = BatchPlan::new(1, 12)?;
    let search = SearchParams {
        n: N,
        t: T,
        max_distance: 10,
        top: 10,
    };
    println!(
        "\n{:<28} {:<18} {:>4} {:>6} {:>5}",
        "query", "best match", "dist", "cands", "ok"
    );
    let (mut at1, mut at10, mut total) = (0, 0, 0);
    let (mut stage1, mut stage2) = (Duration::ZERO, Duration::ZERO);
    let mut first_top = None;
    for path in files(&derived_dir)? {
        let bytes = std::fs::read(&path)?;
        let q = phash64(&bytes)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .0;
        let t0 = Instant::now();
        // Stage-1: the same batch shape at every node; each node answers with its postings.
        let mut candidates = BTreeSet::new();
        for (node, keys) in nodes.iter().zip(&token_keys) {
            for token in plan.query_tokens(keys, q, &mut rng) {
                if let Some(ids) = node.postings.get(&token) {
                    candidates.extend(ids.iter().copied());
                }
            }
        }
        let t1 = Instant::now();
        // Stage-2: distances on shares.
        let (querier, requests) =
            Querier::start(q, candidates.iter().copied().collect(), search, &mut rng)?;
        let stored: Vec<Vec<Option<&HashShare>>> = requests
            .iter()
            .zip(&nodes)
            .map(|(req, node)| {
                req.candidates
                    .iter()
                    .map(|id| node.images.get(id).map(|e| &e.1))
                    .collect()
            })
            .collect();
        let answers = node::run_all(&zero_keys, &requests, &stored)?.answers;
        let ranked = querier.finish(answers)?;
        stage1 += t1 - t0;
        stage2 += t1.elapsed();

        let want = stem(&path);
        let best = ranked.matches.first();
        let ok1 = best.is_some_and(|m| names[&m.id] == want);
        let ok10 = ranked.matches.iter().any(|m| names[&m.id] == want);
        at1 += usize::from(ok1);
        at10 += usize::from(ok10);
        total += 1;
        if first_top.is_none() {
            first_top = best.map(|m| m.id);
        }
        println!(
            "{:<28} {:<18} {:>4} {:>6} {:>5}",
            path.file_name().unwrap_or_default().to_string_lossy(),
            best.map_or("-".into(), |m| names[&m.id].clone()),
            best.map_or("-".into(), |m| m.distance.to_string()),
            ranked.candidates,
            if ok1 { "yes" } else { "NO" }
        );
    }
    let recall1 = at1 as f64 / total.max(1) as f64;
    let recall10 = at10 as f64 / total.max(1) as f64;
    println!(
        "\nrecall@1 {recall1:.3}  recall@10 {recall10:.3}  ({total} queries)\n\
         mean latency: stage-1 {:.2} ms, stage-2 {:.2} ms (in process, no network)",
        stage1.as_secs_f64() * 1e3 / total.max(1) as f64,
        stage2.as_secs_f64() * 1e3 / total.max(1) as f64
    );

    // Rebuild the first query's top match from nodes 2, 4 and 5, node 4 lying.
    let Some(id) = first_top else {
        eprintln!("no match to rebuild");
        return Ok(false);
    };
    let manifest =
        SignedManifest::from_bytes(&nodes[0].images[&id].2)?.verify(&owner.verifying_key())?;
    let mut received: Vec<ByteShare> = [1, 3, 4]
        .iter()
        .map(|&i| nodes[i].images[&id].0.clone())
        .collect();
    received[1].bytes[0] ^= 0xff;
    let (_, culprits) = manifest.partition_image_shares(received.clone());
    received.push(nodes[0].images[&id].0.clone());
    let rebuilt = manifest.reconstruct(received)?;
    let identical = rebuilt == originals[&id];
    println!(
        "rebuilt {} ({} bytes) from the shares of nodes 2, 4 (corrupted on purpose), 5 and 1: {}; refused: {}",
        names[&id],
        rebuilt.len(),
        if identical { "byte-identical" } else { "MISMATCH" },
        culprits
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(identical && recall10 >= 0.9)
}
