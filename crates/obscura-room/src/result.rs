//! What passes between the controller, the worker and the recipients of a run: the nodes'
//! releases as relayed, and the signed result with its output sealed to each recipient.
//!
//! Everything in a result but the sealed outputs is seen by the controller, so nothing in the
//! clear depends on the output or on what the function did: no output digest (a low-entropy
//! output could be guessed from it; the result signs a salted commitment instead), no fuel
//! count, no timings. Those travel sealed with the output.

use ed25519_dalek::VerifyingKey;
use obscura_attest::seal::{PartyKey, Sealed};
use obscura_proto::{room_result_statement, RoomShare};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::work::{OutputKind, Work};

/// One node's release as the controller hands it on.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Release {
    /// The node.
    pub node: u8,
    /// The challenge the node gave.
    pub nonce: [u8; 32],
    /// The run the node counted.
    pub run: u32,
    /// Its sealed shares.
    pub shares: Vec<RoomShare>,
    /// Its audit-key signature over the release.
    pub signature: Vec<u8>,
}

/// What a node signed when it released to this job, kept in the result so that a recipient
/// can check, offline, that the nodes appraised the key that signed it.
pub use obscura_proto::RoomReleaseProof as ReleaseProof;

/// A node that did not do its part, and what it did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blame {
    /// The node.
    pub node: u8,
    /// What was wrong.
    pub why: String,
}

/// The output sealed to one recipient.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedOutput {
    /// The recipient's X25519 key, as the manifest names it.
    pub recipient: [u8; 32],
    /// The [`Payload`], sealed under [`result_purpose`].
    pub sealed: Sealed,
}

/// What each recipient's sealed copy holds. It is sealed in a fixed layout padded to the
/// manifest's largest output, so the ciphertext's length, which the controller sees, is the
/// same whatever the output, its fuel or its timings.
#[derive(Clone, Debug, PartialEq)]
pub struct Payload {
    /// The salt of the result's commitment.
    pub salt: [u8; 32],
    /// The output's kind (an image is its raw size and pixels).
    pub kind: OutputKind,
    /// The output.
    pub output: Vec<u8>,
    /// Fuel the function used.
    pub fuel_used: u64,
    /// Where the worker's time went.
    pub phases_ms: Phases,
}

/// Bytes of a sealed payload before its output.
const PAYLOAD_HEAD: usize = 32 + 1 + 8 + 4 * 8 + 4;

impl Payload {
    /// The fixed layout: salt, kind, fuel, the four phase times, the output's length, the
    /// output, zeros up to `max_bytes` of output.
    pub fn to_padded(&self, max_bytes: u32) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(PAYLOAD_HEAD + max_bytes as usize));
        out.extend_from_slice(&self.salt);
        out.push(self.kind.tag());
        out.extend_from_slice(&self.fuel_used.to_be_bytes());
        let p = &self.phases_ms;
        for v in [p.open, p.rebuild, p.decode, p.function] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out.extend_from_slice(&(self.output.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.output);
        out.resize(
            PAYLOAD_HEAD + (max_bytes as usize).max(self.output.len()),
            0,
        );
        out
    }

    /// Read the fixed layout back.
    ///
    /// # Errors
    /// When it is not one.
    pub fn from_padded(bytes: &[u8]) -> Result<Payload, String> {
        let bad = || "the sealed output is malformed".to_string();
        if bytes.len() < PAYLOAD_HEAD {
            return Err(bad());
        }
        let (head, rest) = bytes.split_at(PAYLOAD_HEAD);
        let word = |at: usize| -> [u8; 8] { head[at..at + 8].try_into().expect("8 bytes") };
        let f = |at: usize| f64::from_be_bytes(word(at));
        let len = u32::from_be_bytes(head[73..77].try_into().expect("4 bytes")) as usize;
        let output = rest.get(..len).ok_or_else(bad)?.to_vec();
        Ok(Payload {
            salt: head[..32].try_into().expect("32 bytes"),
            kind: OutputKind::from_tag(head[32]).ok_or_else(bad)?,
            fuel_used: u64::from_be_bytes(word(33)),
            phases_ms: Phases {
                open: f(41),
                rebuild: f(49),
                decode: f(57),
                function: f(65),
            },
            output,
        })
    }
}

/// A run's result: signed by the job's key, which the releasing nodes appraised and signed
/// for; readable only by the recipients.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunResult {
    /// The Work-ID.
    pub work: [u8; 32],
    /// SHA-256 of each input's owner-signed manifest, in order.
    pub manifests: Vec<[u8; 32]>,
    /// SHA-256 of the salt and the output ([`commitment`]).
    pub commitment: [u8; 32],
    /// The output, once per recipient.
    pub outputs: Vec<SealedOutput>,
    /// The job's HPKE key, which the nodes sealed to.
    pub worker_key: [u8; 32],
    /// The job's result key, bound in the evidence the nodes appraised.
    pub signing_key: [u8; 32],
    /// The releases the run used, as their nodes signed them.
    pub releases: Vec<ReleaseProof>,
    /// Nodes whose signed releases or shares were wrong; the run went on without them.
    pub blamed: Vec<Blame>,
    /// Nodes whose releases came without a valid signature (altered on the way, or not
    /// theirs): left out, not blamed.
    pub unsigned: Vec<u8>,
    /// The job's signature over [`room_result_statement`].
    pub signature: Vec<u8>,
}

/// Where a run's time went in the worker, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Phases {
    /// Opening the releases and checking the shares.
    pub open: f64,
    /// Rebuilding the images from shares.
    pub rebuild: f64,
    /// Decoding them to pixels.
    pub decode: f64,
    /// The function. (Sealing and signing come after, and are not in the sealed copy: they
    /// are the rest of the run as the controller times it.)
    pub function: f64,
}

/// The HPKE purpose of the output sealed to recipient number `index` of work `work`.
pub fn result_purpose(work: &[u8; 32], index: usize) -> Vec<u8> {
    [
        b"obscura room result v1".as_slice(),
        work,
        &(index as u32).to_be_bytes(),
    ]
    .concat()
}

/// Seal `payload`, padded to the manifest's largest output, to each of `work`'s recipients.
///
/// # Errors
/// The index of a recipient whose key is not an X25519 key.
pub fn seal_outputs<R: rand_core::RngCore + rand_core::CryptoRng>(
    work: &Work,
    payload: &Payload,
    rng: &mut R,
) -> Result<Vec<SealedOutput>, usize> {
    let manifest = work.manifest();
    let padded = payload.to_padded(manifest.output.max_bytes);
    let id = work.id().0;
    manifest
        .recipients
        .iter()
        .enumerate()
        .map(|(i, recipient)| {
            let sealed = obscura_attest::seal::seal_to_recipient(
                recipient,
                &result_purpose(&id, i),
                &padded,
                rng,
            )
            .map_err(|_| i)?;
            Ok(SealedOutput {
                recipient: *recipient,
                sealed,
            })
        })
        .collect()
}

/// The commitment a result signs: SHA-256 over a domain, the salt and the output.
pub fn commitment(salt: &[u8; 32], output: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"obscura room output commitment v1");
    h.update(salt);
    h.update(output);
    h.finalize().into()
}

/// The encoding of the blamed and unsigned nodes that the result's signature covers.
pub fn blamed_encoding(blamed: &[Blame], unsigned: &[u8]) -> Vec<u8> {
    postcard::to_allocvec(&(blamed, unsigned)).expect("a list encodes")
}

/// The cluster a recipient checks a result against: every node's audit key, node 1 first, and
/// how many of them must have released to the result's key.
pub struct Witnesses<'a> {
    /// Node audit keys.
    pub nodes: &'a [VerifyingKey],
    /// Releases needed.
    pub k: usize,
}

/// Check a result offline: the job's signature, and, given the cluster, that at least `k`
/// nodes signed releases to this job's keys for this work. Returns the nodes that did.
///
/// # Errors
/// What does not verify.
pub fn verify_result(
    result: &RunResult,
    cluster: Option<&Witnesses<'_>>,
) -> Result<Vec<u8>, String> {
    let key = VerifyingKey::from_bytes(&result.signing_key)
        .map_err(|_| "the result's signing key is not an Ed25519 key".to_string())?;
    let signature = ed25519_dalek::Signature::from_slice(&result.signature)
        .map_err(|_| "the result's signature is not 64 bytes".to_string())?;
    let statement = room_result_statement(
        &result.work,
        &result.manifests,
        &result.commitment,
        &blamed_encoding(&result.blamed, &result.unsigned),
    );
    key.verify_strict(&statement, &signature)
        .map_err(|_| "the result's signature does not verify".to_string())?;
    let Some(cluster) = cluster else {
        return Ok(Vec::new());
    };
    let mut witnesses: Vec<u8> = Vec::new();
    for r in &result.releases {
        let Some(node_key) = usize::from(r.node)
            .checked_sub(1)
            .and_then(|i| cluster.nodes.get(i))
        else {
            continue;
        };
        let signed = r.signed_by(
            node_key,
            &result.work,
            &result.worker_key,
            &result.signing_key,
        );
        if signed && !witnesses.contains(&r.node) {
            witnesses.push(r.node);
        }
    }
    if witnesses.len() < cluster.k {
        return Err(format!(
            "only {} node(s) signed a release to the key that signed this result; {} are needed \
             to show the nodes appraised it",
            witnesses.len(),
            cluster.k
        ));
    }
    Ok(witnesses)
}

/// Open the payload sealed to `key` in a result, and check its output against the signed
/// commitment. Check the result first ([`verify_result`]).
///
/// # Errors
/// When no output is sealed to this key, it does not open, or it is not the one committed to.
pub fn open_output(result: &RunResult, key: &PartyKey) -> Result<Payload, String> {
    let (index, sealed) = result
        .outputs
        .iter()
        .enumerate()
        .find(|(_, o)| o.recipient == key.public())
        .ok_or("no output in this result is sealed to this key")?;
    let plain = key
        .open(&result_purpose(&result.work, index), &sealed.sealed)
        .map_err(|e| e.to_string())?;
    let payload = Payload::from_padded(&Zeroizing::new(plain))?;
    if commitment(&payload.salt, &payload.output) != result.commitment {
        return Err("the output is not the one the worker signed".into());
    }
    Ok(payload)
}
