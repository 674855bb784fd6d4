//! One run of a piece of work inside a worker: made when the work is loaded (a fresh HPKE key
//! for the shares and a fresh Ed25519 key for the result, both bound in the worker's evidence
//! through [`Job::context`]), then consumed by [`Job::run`]: open the nodes' releases, check
//! every share against its owner-signed manifest (naming a node whose share is wrong), rebuild
//! each image from `k`, run the function, seal the output to each recipient and sign the
//! result. The keys go with the job: a second run needs a new job, new evidence and new
//! releases.

use std::collections::BTreeMap;
use std::time::Instant;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use obscura_attest::seal::{PartyKey, Sealed};
use obscura_proto::{room_purpose, room_result_statement, room_shares_digest};
use obscura_sharing::bytes::ByteShare;
use obscura_sharing::manifest::{SignedManifest, VerifiedManifest};
use rand_core::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};

use crate::result::{
    blamed_encoding, commitment, seal_outputs, Blame, Payload, Phases, Release, ReleaseProof,
    RunResult,
};
use crate::sandbox::{Function, Input, RunError, Sandbox};
use crate::work::Work;

/// The cluster as a worker knows it.
#[derive(Clone, Debug)]
pub struct Cluster {
    /// Each node's audit key, node 1 first.
    pub nodes: Vec<VerifyingKey>,
    /// Shares that rebuild an image.
    pub k: usize,
    /// The data owner's key, which signs every manifest.
    pub owner: VerifyingKey,
}

impl Cluster {
    /// Its digest, which the worker's evidence binds (`obscura_proto::room_cluster_digest`).
    pub fn digest(&self) -> [u8; 32] {
        let nodes: Vec<[u8; 32]> = self.nodes.iter().map(VerifyingKey::to_bytes).collect();
        obscura_proto::room_cluster_digest(&self.owner.to_bytes(), &nodes)
    }

    /// The role and attestation context the evidence for a job of work `work` with result key
    /// `signing_key` binds: `work:<Work-ID>`, and the Work-ID, the result key and this cluster.
    pub fn job_binding(
        &self,
        work: &[u8; 32],
        signing_key: &[u8; 32],
    ) -> (obscura_attest::Role, [u8; 32]) {
        (
            obscura_attest::Role::Work(hex::encode(work)),
            obscura_proto::room_context(work, signing_key, &self.digest()),
        )
    }
}

/// Why a run did not give a result.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    /// An input could not be rebuilt from the shares that checked.
    #[error("image {image}: {why}")]
    Input {
        /// The image (hex).
        image: String,
        /// Why, naming the nodes at fault.
        why: String,
    },
    /// Input number `0` does not decode within the limits.
    #[error("input {0} does not decode to an image within the limits")]
    Decode(usize),
    /// The inputs together hold more pixels than a run may.
    #[error("the inputs hold more than {} pixels together", MAX_TOTAL_PIXELS)]
    TooLarge,
    /// Recipient number `0`'s key is not an X25519 key.
    #[error("recipient {0}'s key is not an X25519 public key")]
    Recipient(usize),
    /// The function did not give an output.
    #[error(transparent)]
    Run(#[from] RunError),
}

impl JobError {
    /// What the controller may be told: everything but the details a function chooses (its
    /// own error code, the memory it asked for, what is wrong with its output), which would
    /// let an approved function send the controller data instead of its recipients.
    pub fn public(&self) -> String {
        match self {
            JobError::Run(e) => e.public(),
            JobError::Input { .. }
            | JobError::Decode(_)
            | JobError::TooLarge
            | JobError::Recipient(_) => self.to_string(),
        }
    }
}

/// Per input image, what each node gave: `(node, signed manifest, share)`.
type Given = BTreeMap<[u8; 16], Vec<(u8, Vec<u8>, Vec<u8>)>>;

/// Why a release was not taken: its signature does not verify (listed in the result), or it
/// names no node of the cluster or one already taken (left out silently: the controller could
/// name any number, and listing it would be a claim about a node it never heard from).
enum Unchecked {
    Unsigned,
    Ignored,
}

/// Most pixels all of a run's inputs may hold decoded (192 MiB of RGB).
const MAX_TOTAL_PIXELS: u64 = 64 << 20;

/// One opened share: `(image, signed manifest, share)`.
type Opened = ([u8; 16], Vec<u8>, Vec<u8>);

/// A loaded work in a worker, waiting for its releases.
pub struct Job {
    work: Work,
    function: Function,
    key: PartyKey,
    signer: SigningKey,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Job({})", self.work.id())
    }
}

impl Job {
    /// Compile the work's function and make the job's keys.
    ///
    /// # Errors
    /// [`RunError`] if the module is not a clean-room function (a forbidden import, say).
    pub fn new<R: RngCore + CryptoRng>(
        sandbox: &Sandbox,
        work: Work,
        rng: &mut R,
    ) -> Result<Job, RunError> {
        let function = sandbox.compile(&work)?;
        Ok(Job {
            work,
            function,
            key: PartyKey::generate(rng),
            signer: SigningKey::generate(rng),
        })
    }

    /// The work.
    pub fn work(&self) -> &Work {
        &self.work
    }

    /// The HPKE key nodes seal shares to.
    pub fn party_key(&self) -> [u8; 32] {
        self.key.public()
    }

    /// The key the result is signed with.
    pub fn signing_key(&self) -> [u8; 32] {
        self.signer.verifying_key().to_bytes()
    }

    /// The role and attestation context this job's evidence binds ([`Cluster::job_binding`]).
    pub fn binding(&self, cluster: &Cluster) -> (obscura_attest::Role, [u8; 32]) {
        cluster.job_binding(&self.work.id().0, &self.signing_key())
    }

    /// Run once on the nodes' releases.
    ///
    /// # Errors
    /// [`JobError`] naming the image and the nodes at fault, or the function's own failure.
    pub fn run<R: RngCore + CryptoRng>(
        self,
        sandbox: &Sandbox,
        cluster: &Cluster,
        releases: &[Release],
        rng: &mut R,
    ) -> Result<RunResult, JobError> {
        let work = self.work.id().0;
        let started = Instant::now();
        let mut blamed = Vec::new();
        let mut unsigned = Vec::new();
        let mut proofs: Vec<ReleaseProof> = Vec::new();
        // Per input image: the (manifest, share) each node gave.
        let mut given = Given::new();
        for release in releases {
            match self.check(cluster, release, &proofs) {
                Err(Unchecked::Unsigned) => {
                    if !unsigned.contains(&release.node) {
                        unsigned.push(release.node);
                    }
                }
                Err(Unchecked::Ignored) => {}
                Ok(proof) => match self.open(release) {
                    Ok(opened) => {
                        proofs.push(proof);
                        for (image, manifest, bytes) in opened {
                            given
                                .entry(image)
                                .or_default()
                                .push((release.node, manifest, bytes));
                        }
                    }
                    Err(why) => {
                        proofs.push(proof);
                        blamed.push(Blame {
                            node: release.node,
                            why,
                        });
                    }
                },
            }
        }
        let mut phases = Phases {
            open: ms(started),
            ..Phases::default()
        };
        let mut inputs = Vec::with_capacity(self.work.manifest().inputs.len());
        let mut pixels = 0u64;
        let mut manifests = Vec::with_capacity(inputs.capacity());
        for (i, spec) in self.work.manifest().inputs.iter().enumerate() {
            let t = Instant::now();
            let shares = given.remove(&spec.image).unwrap_or_default();
            let (bytes, manifest) = rebuild(cluster, &spec.image, shares, &mut blamed)?;
            phases.rebuild += ms(t);
            let t = Instant::now();
            let input = Input::decode(&bytes).map_err(|_| JobError::Decode(i))?;
            pixels += u64::from(input.width()) * u64::from(input.height());
            if pixels > MAX_TOTAL_PIXELS {
                return Err(JobError::TooLarge);
            }
            inputs.push(input);
            phases.decode += ms(t);
            manifests.push(Sha256::digest(&manifest).into());
        }
        let t = Instant::now();
        let ran = sandbox.run(&self.function, self.work.manifest(), inputs)?;
        phases.function = ms(t);
        let mut salt = [0u8; 32];
        rng.fill_bytes(&mut salt);
        let committed = commitment(&salt, &ran.output);
        let payload = Payload {
            salt,
            kind: self.work.manifest().output.kind,
            output: ran.output,
            fuel_used: ran.fuel_used,
            phases_ms: phases,
        };
        let outputs = seal_outputs(&self.work, &payload, rng).map_err(JobError::Recipient)?;
        let statement = room_result_statement(
            &work,
            &manifests,
            &committed,
            &blamed_encoding(&blamed, &unsigned),
        );
        let signature = self.signer.sign(&statement).to_bytes().to_vec();
        Ok(RunResult {
            work,
            manifests,
            commitment: committed,
            outputs,
            worker_key: self.key.public(),
            signing_key: self.signing_key(),
            releases: proofs,
            blamed,
            unsigned,
            signature,
        })
    }

    /// Check one release's signature, for a node not taken yet. A release whose signature
    /// does not verify may be anyone's making (the controller relays it): it is left out, and
    /// its node is not blamed, nor does it keep the node's genuine release out.
    fn check(
        &self,
        cluster: &Cluster,
        release: &Release,
        taken: &[ReleaseProof],
    ) -> Result<ReleaseProof, Unchecked> {
        let node = release.node;
        let key = usize::from(node)
            .checked_sub(1)
            .and_then(|i| cluster.nodes.get(i))
            .ok_or(Unchecked::Ignored)?;
        if taken.iter().any(|p| p.node == node) {
            return Err(Unchecked::Ignored);
        }
        let proof = ReleaseProof {
            node,
            nonce: release.nonce,
            run: release.run,
            shares: room_shares_digest(&release.shares),
            signature: release.signature.clone(),
        };
        if !proof.signed_by(
            key,
            &self.work.id().0,
            &self.key.public(),
            &self.signing_key(),
        ) {
            return Err(Unchecked::Unsigned);
        }
        Ok(proof)
    }

    /// Open a signed release's shares: whatever is wrong with them is its node's.
    fn open(&self, release: &Release) -> Result<Vec<Opened>, String> {
        let work = self.work.id().0;
        let node = release.node;
        let inputs = &self.work.manifest().inputs;
        if release.shares.len() != inputs.len()
            || release
                .shares
                .iter()
                .zip(inputs)
                .any(|(s, i)| s.image != i.image)
        {
            return Err("it released other images than the work's inputs".into());
        }
        let mut opened = Vec::with_capacity(release.shares.len());
        for share in &release.shares {
            let sealed = Sealed {
                enc: share.enc.clone(),
                ciphertext: share.ciphertext.clone(),
            };
            let plain = self
                .key
                .open(
                    &room_purpose(node, &work, &release.nonce, &share.image),
                    &sealed,
                )
                .map_err(|_| "its signed share does not open under this job's key".to_string())?;
            let (manifest, bytes): (Vec<u8>, Vec<u8>) = postcard::from_bytes(&plain)
                .map_err(|_| "its signed share is malformed".to_string())?;
            opened.push((share.image, manifest, bytes));
        }
        Ok(opened)
    }
}

/// Rebuild one image from the shares given, against the owner-signed manifest that the most
/// nodes gave (the newest of those equally many): a node holding an old manifest of the same
/// image cannot have the honest nodes' shares fail against it. Every node whose manifest or
/// share does not fit is blamed, except on a tie, where nobody can tell which side is right.
/// (If `k` nodes hold an older manifest, the controller can have the run use it; the approval
/// does not name each input's manifest.)
/// A manifest that verified, its bytes, and the nodes that gave it.
type Candidate = (Vec<u8>, VerifiedManifest, Vec<u8>);

fn rebuild(
    cluster: &Cluster,
    image: &[u8; 16],
    shares: Vec<(u8, Vec<u8>, Vec<u8>)>,
    blamed: &mut Vec<Blame>,
) -> Result<(Vec<u8>, Vec<u8>), JobError> {
    let hex_id: String = image.iter().map(|b| format!("{b:02x}")).collect();
    // Each distinct manifest that verifies, with the nodes that gave it.
    let mut manifests: Vec<Candidate> = Vec::new();
    let mut good = Vec::new();
    for (node, manifest, bytes) in shares {
        if let Some(m) = manifests.iter_mut().find(|(b, _, _)| *b == manifest) {
            m.2.push(node);
            good.push((node, manifest, bytes));
            continue;
        }
        let checked = SignedManifest::from_bytes(&manifest)
            .ok()
            .and_then(|m| m.verify(&cluster.owner).ok())
            .filter(|m| m.manifest().image_id.0 == *image);
        match checked {
            None => blamed.push(Blame {
                node,
                why: format!("image {hex_id}: its manifest is not the owner's for this image"),
            }),
            Some(m) => {
                manifests.push((manifest.clone(), m, vec![node]));
                good.push((node, manifest, bytes));
            }
        }
    }
    // The most nodes, then the newest, then (a tie, which blames nobody) the smallest bytes:
    // the choice does not depend on the order the controller relayed the releases in.
    let rank = |(bytes, m, nodes): &Candidate| {
        (
            nodes.len(),
            m.manifest().created_at,
            std::cmp::Reverse(bytes.clone()),
        )
    };
    manifests.sort_by_key(|m| std::cmp::Reverse(rank(m)));
    let tied = manifests.len() > 1 && {
        let (a, b) = (rank(&manifests[0]), rank(&manifests[1]));
        (a.0, a.1) == (b.0, b.1)
    };
    let Some((chosen, manifest, _)) = manifests.into_iter().next() else {
        return Err(JobError::Input {
            image: hex_id,
            why: "no node released a manifest signed by the owner".into(),
        });
    };
    let mut shares = Vec::new();
    for (node, m, bytes) in good {
        if m == chosen {
            shares.push(ByteShare { x: node, bytes });
        } else if !tied {
            blamed.push(Blame {
                node,
                why: format!("image {hex_id}: it gave another manifest than the other nodes"),
            });
        }
    }
    match manifest.reconstruct_naming(shares) {
        Ok((bytes, culprits)) => {
            for c in culprits {
                blamed.push(Blame {
                    node: c.node,
                    why: format!("image {hex_id}: {c}"),
                });
            }
            Ok((bytes, chosen))
        }
        Err(e) => Err(JobError::Input {
            image: hex_id,
            why: format!("{e} (need {} shares)", cluster.k),
        }),
    }
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}
