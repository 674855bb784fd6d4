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
use obscura_proto::{room_purpose, room_release_statement, room_result_statement};
use obscura_sharing::bytes::ByteShare;
use obscura_sharing::manifest::SignedManifest;
use rand_core::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};

use crate::result::{result_purpose, Blame, Phases, Release, RunResult, SealedOutput};
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
        /// Nodes whose releases or shares were refused.
        blamed: Vec<Blame>,
    },
    /// The function did not give an output.
    #[error(transparent)]
    Run(#[from] RunError),
    /// An input decoded to no image.
    #[error(transparent)]
    Room(#[from] crate::RoomError),
}

/// Per input image, what each node gave: `(node, signed manifest, share)`.
type Given = BTreeMap<[u8; 16], Vec<(u8, Vec<u8>, Vec<u8>)>>;

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

    /// The attestation context this job's evidence binds: the Work-ID and the signing key.
    pub fn context(&self) -> [u8; 32] {
        obscura_proto::room_context(&self.work.id().0, &self.signing_key())
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
        // Per input image: the (manifest, share) each node gave.
        let mut given = Given::new();
        let mut seen = Vec::new();
        for release in releases {
            if let Err(why) = self.open(cluster, release, &mut seen, &mut given) {
                blamed.push(Blame {
                    node: release.node,
                    why,
                });
            }
        }
        let mut phases = Phases {
            open: ms(started),
            ..Phases::default()
        };
        let mut inputs = Vec::with_capacity(self.work.manifest().inputs.len());
        let mut manifests = Vec::with_capacity(inputs.capacity());
        for spec in &self.work.manifest().inputs {
            let t = Instant::now();
            let shares = given.remove(&spec.image).unwrap_or_default();
            let (bytes, manifest) = rebuild(cluster, &spec.image, shares, &mut blamed)?;
            phases.rebuild += ms(t);
            let t = Instant::now();
            inputs.push(Input::decode(&bytes)?);
            phases.decode += ms(t);
            manifests.push(Sha256::digest(&manifest).into());
        }
        let t = Instant::now();
        let ran = sandbox.run(&self.function, self.work.manifest(), inputs)?;
        phases.function = ms(t);
        let t = Instant::now();
        let output_digest: [u8; 32] = Sha256::digest(&ran.output).into();
        let mut outputs = Vec::new();
        for (i, recipient) in self.work.manifest().recipients.iter().enumerate() {
            let sealed = obscura_attest::seal::seal_to_recipient(
                recipient,
                &result_purpose(&work, i),
                &ran.output,
                rng,
            )
            .map_err(|e| RunError::Kind {
                kind: self.work.manifest().output.kind,
                why: format!("recipient {i}: {e}"),
            })?;
            outputs.push(SealedOutput {
                recipient: *recipient,
                sealed,
            });
        }
        let statement = room_result_statement(&work, &manifests, &output_digest);
        let signature = self.signer.sign(&statement).to_bytes().to_vec();
        phases.seal = ms(t);
        Ok(RunResult {
            work,
            manifests,
            output_digest,
            outputs,
            signing_key: self.signing_key(),
            signature,
            blamed,
            fuel_used: ran.fuel_used,
            phases_ms: phases,
        })
    }

    /// Check one release's signature and open its shares. A release whose signature does not
    /// verify may be anyone's making: it is dropped and the node is reported, not as the
    /// author. Once it verifies, whatever is wrong inside is the node's.
    fn open(
        &self,
        cluster: &Cluster,
        release: &Release,
        seen: &mut Vec<u8>,
        given: &mut Given,
    ) -> Result<(), String> {
        let work = self.work.id().0;
        let node = release.node;
        let key = usize::from(node)
            .checked_sub(1)
            .and_then(|i| cluster.nodes.get(i))
            .ok_or_else(|| format!("no node {node} in this cluster"))?;
        if seen.contains(&node) {
            return Err("a second release from the same node".into());
        }
        seen.push(node);
        let statement = room_release_statement(
            node,
            &work,
            &release.nonce,
            release.run,
            &self.key.public(),
            &release.shares,
        );
        let signature: [u8; 64] = release
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| "its release is not signed (altered on its way?)".to_string())?;
        key.verify_strict(
            &statement,
            &ed25519_dalek::Signature::from_bytes(&signature),
        )
        .map_err(|_| {
            "its release's signature does not verify (altered on its way, or not the node's)"
                .to_string()
        })?;
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
        for (image, manifest, bytes) in opened {
            given
                .entry(image)
                .or_default()
                .push((node, manifest, bytes));
        }
        Ok(())
    }
}

/// Rebuild one image from the shares given, against the owner-signed manifest most nodes
/// gave; every node whose manifest or share does not fit it is blamed.
fn rebuild(
    cluster: &Cluster,
    image: &[u8; 16],
    shares: Vec<(u8, Vec<u8>, Vec<u8>)>,
    blamed: &mut Vec<Blame>,
) -> Result<(Vec<u8>, Vec<u8>), JobError> {
    let hex_id: String = image.iter().map(|b| format!("{b:02x}")).collect();
    let mut verified = None;
    let mut good = Vec::new();
    for (node, manifest, bytes) in shares {
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
                if verified.is_none() {
                    verified = Some((m, manifest));
                }
                good.push(ByteShare { x: node, bytes });
            }
        }
    }
    let Some((manifest, manifest_bytes)) = verified else {
        return Err(JobError::Input {
            image: hex_id,
            why: "no node released a manifest signed by the owner".into(),
            blamed: blamed.clone(),
        });
    };
    match manifest.reconstruct_naming(good) {
        Ok((bytes, culprits)) => {
            for c in culprits {
                blamed.push(Blame {
                    node: c.node,
                    why: format!("image {hex_id}: {c}"),
                });
            }
            Ok((bytes, manifest_bytes))
        }
        Err(e) => Err(JobError::Input {
            image: hex_id,
            why: format!("{e} (need {} shares)", cluster.k),
            blamed: blamed.clone(),
        }),
    }
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}
