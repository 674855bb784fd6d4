//! The simulation backend, for machines without a TEE (every machine this project is built and
//! tested on). Labelled as what it is: evidence of the same shape as a hardware report, carrying
//! the running executable's SHA-384 as its measurement, signed by a simulated platform key that
//! the cluster's simulation root endorsed at `cluster init` — as a VCEK is endorsed by AMD.
//!
//! It goes through the same appraisal path as hardware evidence, and a policy refuses it unless
//! it says `allow_simulation`. What it proves is only that a holder of a key the cluster's root
//! endorsed signed this measurement: a party that holds its own platform key can claim any
//! measurement. It exercises every check and every refusal; it protects nothing.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier as _, VerifyingKey};
use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::{hexser, Claims, Evidence, Platform, Refusal, Tcb};

const ENDORSEMENT_DOMAIN: &[u8] = b"obscura simulated platform endorsement v1";
const REPORT_DOMAIN: &[u8] = b"obscura simulated report v1";
const REPORT_MAGIC: &[u8; 16] = b"obscura-sim-v1\0\0";
/// magic ‖ measurement (48) ‖ report data (64) ‖ debug (1) ‖ issued at (8, big-endian).
const REPORT_LEN: usize = 16 + 48 + 64 + 1 + 8;

/// A cluster's simulation root: endorses the simulated platform of each party. Its secret stays
/// with whoever runs `cluster init`; its public key goes in the policy.
pub struct SimulationRoot {
    key: SigningKey,
}

impl std::fmt::Debug for SimulationRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SimulationRoot({}, <redacted>)",
            hex::encode(self.public())
        )
    }
}

impl SimulationRoot {
    /// A fresh root.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> SimulationRoot {
        SimulationRoot {
            key: SigningKey::generate(rng),
        }
    }

    /// The root's public key, which a policy lists under `simulation_roots`.
    pub fn public(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// The secret, for the root's file (written private by the caller).
    pub fn to_secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.key.to_bytes())
    }

    /// A root read back from [`SimulationRoot::to_secret_bytes`].
    pub fn from_secret_bytes(bytes: &[u8; 32]) -> SimulationRoot {
        SimulationRoot {
            key: SigningKey::from_bytes(bytes),
        }
    }

    /// Makes and endorses a simulated platform for the party `name`.
    pub fn issue<R: RngCore + CryptoRng>(&self, name: &str, rng: &mut R) -> SimulatedPlatform {
        let key = SigningKey::generate(rng);
        let endorsement = self
            .key
            .sign(&endorsement_message(name, &key.verifying_key().to_bytes()))
            .to_bytes();
        SimulatedPlatform {
            name: name.to_owned(),
            key,
            endorsement,
            root: self.public(),
        }
    }
}

fn endorsement_message(name: &str, platform_key: &[u8; 32]) -> Vec<u8> {
    let mut m = ENDORSEMENT_DOMAIN.to_vec();
    m.extend_from_slice(&(name.len() as u16).to_be_bytes());
    m.extend_from_slice(name.as_bytes());
    m.extend_from_slice(platform_key);
    m
}

/// A party's simulated platform: its signing key and the root's endorsement of it.
pub struct SimulatedPlatform {
    name: String,
    key: SigningKey,
    endorsement: [u8; 64],
    root: [u8; 32],
}

impl std::fmt::Debug for SimulatedPlatform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SimulatedPlatform({:?}, <redacted>)", self.name)
    }
}

/// The file form of a [`SimulatedPlatform`] (it holds a secret: write it private).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlatformFile {
    name: String,
    #[serde(with = "hexser::array")]
    key: [u8; 32],
    #[serde(with = "hexser::array")]
    endorsement: [u8; 64],
    #[serde(with = "hexser::array")]
    root: [u8; 32],
}

impl SimulatedPlatform {
    /// The party name the root endorsed.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The simulation root that endorsed it.
    pub fn root(&self) -> [u8; 32] {
        self.root
    }

    /// The platform's secret from which its sealing keys derive (the producer mixes in the
    /// measurement).
    pub(crate) fn sealing_secret(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.key.to_bytes())
    }

    /// The file form, JSON (secret).
    pub fn to_file(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(
            serde_json::to_vec_pretty(&PlatformFile {
                name: self.name.clone(),
                key: self.key.to_bytes(),
                endorsement: self.endorsement,
                root: self.root,
            })
            .expect("platform serialises"),
        )
    }

    /// Reads [`SimulatedPlatform::to_file`].
    ///
    /// # Errors
    /// [`Refusal::Malformed`] when the file is not a simulated platform.
    pub fn from_file(bytes: &[u8]) -> Result<SimulatedPlatform, Refusal> {
        let file: PlatformFile = serde_json::from_slice(bytes)
            .map_err(|e| Refusal::Malformed(format!("simulated platform file: {e}")))?;
        Ok(SimulatedPlatform {
            name: file.name,
            key: SigningKey::from_bytes(&file.key),
            endorsement: file.endorsement,
            root: file.root,
        })
    }

    /// Evidence for `measurement` carrying `report_data`, issued at `now`.
    pub fn evidence(
        &self,
        measurement: &[u8; 48],
        report_data: &[u8; 64],
        debug: bool,
        now: u64,
    ) -> Evidence {
        let mut report = Vec::with_capacity(REPORT_LEN);
        report.extend_from_slice(REPORT_MAGIC);
        report.extend_from_slice(measurement);
        report.extend_from_slice(report_data);
        report.push(u8::from(debug));
        report.extend_from_slice(&now.to_be_bytes());
        let signature = self.key.sign(&[REPORT_DOMAIN, &report].concat()).to_bytes();
        Evidence::Simulation(SimEvidence {
            report,
            signature: signature.to_vec(),
            party: self.name.clone(),
            platform_key: self.key.verifying_key().to_bytes().to_vec(),
            endorsement: self.endorsement.to_vec(),
            root: self.root.to_vec(),
        })
    }
}

/// Simulated evidence as it travels.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimEvidence {
    /// The report: magic, measurement, report data, debug flag, time of issue.
    #[serde(with = "hexser")]
    pub report: Vec<u8>,
    /// The platform key's signature over the report.
    #[serde(with = "hexser")]
    pub signature: Vec<u8>,
    /// The party name the root endorsed.
    pub party: String,
    /// The simulated platform's public key.
    #[serde(with = "hexser")]
    pub platform_key: Vec<u8>,
    /// The root's signature over the platform's name and key.
    #[serde(with = "hexser")]
    pub endorsement: Vec<u8>,
    /// The root's public key; the policy decides whether it is trusted.
    #[serde(with = "hexser")]
    pub root: Vec<u8>,
}

fn array<const N: usize>(bytes: &[u8], what: &str) -> Result<[u8; N], Refusal> {
    bytes
        .try_into()
        .map_err(|_| Refusal::Malformed(format!("{what} is {} bytes, not {N}", bytes.len())))
}

pub(crate) fn verify(evidence: &SimEvidence, trusted: &[[u8; 32]]) -> Result<Claims, Refusal> {
    let root: [u8; 32] = array(&evidence.root, "the simulation root")?;
    if !trusted.contains(&root) {
        return Err(Refusal::UntrustedRoot(format!(
            "simulation root {} is not in the policy",
            hex::encode(root)
        )));
    }
    let root = VerifyingKey::from_bytes(&root)
        .map_err(|_| Refusal::Malformed("the simulation root is not a key".into()))?;
    let platform_key: [u8; 32] = array(&evidence.platform_key, "the platform key")?;
    let endorsement = Signature::from_bytes(&array(&evidence.endorsement, "the endorsement")?);
    root.verify(
        &endorsement_message(&evidence.party, &platform_key),
        &endorsement,
    )
    .map_err(|_| {
        Refusal::Certificate(format!(
            "the root did not endorse platform key {} for {:?}",
            hex::encode(platform_key),
            evidence.party
        ))
    })?;
    let platform_key = VerifyingKey::from_bytes(&platform_key)
        .map_err(|_| Refusal::Malformed("the platform key is not a key".into()))?;
    let signature = Signature::from_bytes(&array(&evidence.signature, "the signature")?);
    platform_key
        .verify_strict(&[REPORT_DOMAIN, &evidence.report].concat(), &signature)
        .map_err(|_| Refusal::Signature("the platform key did not sign this report".into()))?;

    let report = &evidence.report;
    if report.len() != REPORT_LEN || &report[..16] != REPORT_MAGIC {
        return Err(Refusal::Malformed("not a simulated report".into()));
    }
    let debug = match report[128] {
        0 => false,
        1 => true,
        _ => return Err(Refusal::Malformed("debug flag is neither 0 nor 1".into())),
    };
    Ok(Claims {
        platform: Platform::Simulation,
        measurement: report[16..64].to_vec(),
        signer: Some(root.to_bytes().to_vec()),
        debug,
        tcb: Tcb {
            status: "Simulated".into(),
            advisories: Vec::new(),
            version: format!("platform {:?}", evidence.party),
        },
        report_data: array(&report[64..128], "report data")?,
        issued_at: Some(u64::from_be_bytes(array(&report[129..137], "the time")?)),
        snp_tcb: None,
        fields: Vec::new(),
    })
}
