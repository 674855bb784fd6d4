//! What passes between the controller, the worker and the recipients of a run: the nodes'
//! releases as relayed, and the signed result with its output sealed to each recipient.

use ed25519_dalek::VerifyingKey;
use obscura_attest::seal::{PartyKey, Sealed};
use obscura_proto::{room_result_statement, RoomShare};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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
    /// The output, sealed under [`result_purpose`].
    pub sealed: Sealed,
}

/// A run's result: verifiable offline by anyone holding the worker's key from its evidence,
/// readable only by the recipients.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// The Work-ID.
    pub work: [u8; 32],
    /// SHA-256 of each input's owner-signed manifest, in order.
    pub manifests: Vec<[u8; 32]>,
    /// SHA-256 of the output.
    pub output_digest: [u8; 32],
    /// The output, once per recipient.
    pub outputs: Vec<SealedOutput>,
    /// The worker's key for this job (bound in the evidence the nodes appraised).
    pub signing_key: [u8; 32],
    /// Its signature over [`room_result_statement`].
    pub signature: Vec<u8>,
    /// Nodes whose releases or shares were refused; the run went on without them.
    pub blamed: Vec<Blame>,
    /// Fuel the function used.
    pub fuel_used: u64,
    /// Milliseconds spent opening and checking releases, rebuilding images, decoding them,
    /// running the function and sealing the output.
    pub phases_ms: Phases,
}

/// Where a run's time went, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Phases {
    /// Opening the releases and checking the shares.
    pub open: f64,
    /// Rebuilding the images from shares.
    pub rebuild: f64,
    /// Decoding them to pixels.
    pub decode: f64,
    /// The function.
    pub function: f64,
    /// Sealing and signing the output.
    pub seal: f64,
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

/// Check a result's signature under the worker's key it names, offline.
///
/// # Errors
/// When the signature does not verify.
pub fn verify_result(result: &RunResult) -> Result<(), String> {
    let key = VerifyingKey::from_bytes(&result.signing_key)
        .map_err(|_| "the result's signing key is not an Ed25519 key".to_string())?;
    let signature: [u8; 64] = result
        .signature
        .as_slice()
        .try_into()
        .map_err(|_| "the result's signature is not 64 bytes".to_string())?;
    let statement = room_result_statement(&result.work, &result.manifests, &result.output_digest);
    key.verify_strict(
        &statement,
        &ed25519_dalek::Signature::from_bytes(&signature),
    )
    .map_err(|_| "the result's signature does not verify".to_string())
}

/// Open the output sealed to `key` in a result, and check it against the signed digest.
///
/// # Errors
/// When no output is sealed to this key, it does not open, or it is not the signed one.
pub fn open_output(result: &RunResult, key: &PartyKey) -> Result<Vec<u8>, String> {
    verify_result(result)?;
    let (index, sealed) = result
        .outputs
        .iter()
        .enumerate()
        .find(|(_, o)| o.recipient == key.public())
        .ok_or("no output in this result is sealed to this key")?;
    let output = key
        .open(&result_purpose(&result.work, index), &sealed.sealed)
        .map_err(|e| e.to_string())?;
    let digest: [u8; 32] = Sha256::digest(&output).into();
    if digest != result.output_digest {
        return Err("the output is not the one the worker signed".into());
    }
    Ok(output)
}
