//! Remote attestation: a party proves what code it runs, on what hardware, before anyone hands
//! it a key or a share.
//!
//! A party (node, keeper, worker) makes an HPKE key pair, asks its platform for evidence whose
//! report data binds that key, its role, the configuration it serves and the verifier's fresh
//! nonce ([`binding::report_data`]), and hands the evidence over. The verifier appraises it:
//!
//! 1. the platform's own checks, with time injected and no network: an Intel SGX or TDX DCAP
//!    quote with its collateral ([`dcap`], through `dcap-qvl`), an AMD SEV-SNP report with its
//!    ARK → ASK/ASVK → VCEK/VLEK chain ([`snp`], through `sev`), or the labelled simulation
//!    backend ([`sim`]) signed by a cluster's own simulation root;
//! 2. the [`Policy`]: measurement allowed for the role, TCB status and advisories, debug,
//!    evidence age, simulation;
//! 3. the report data, recomputed from what the verifier expects.
//!
//! Only a successful appraisal mints an [`Appraisal`], and only an appraisal bound to a party key
//! lets [`seal::seal`] encrypt to that key: a caller cannot release a secret on a bool.
//!
//! ```
//! use obscura_attest::{binding, sim, Policy, Role, Verifier};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut rng = rand_core::OsRng;
//! // `cluster init`: the cluster's simulation root, and a simulated platform per party.
//! let root = sim::SimulationRoot::generate(&mut rng);
//! let platform = root.issue("node 1", &mut rng);
//! let measurement = [7u8; 48];
//! let policy = Policy::from_json(&format!(
//!     r#"{{"version": 1, "name": "demo", "allow_simulation": true,
//!         "simulation_roots": ["{}"],
//!         "measurements": [{{"role": "node", "platform": "simulation",
//!                            "measurement": "{}"}}]}}"#,
//!     hex::encode(root.public()),
//!     hex::encode(measurement),
//! ))?;
//!
//! // The node: a key, and evidence binding it to the verifier's nonce.
//! let key = obscura_attest::seal::PartyKey::generate(&mut rng);
//! let nonce = [9u8; 32];
//! let context = [0u8; 32];
//! let data = binding::report_data(&Role::Node, &key.public(), &context, &nonce);
//! let now = 1_800_000_000;
//! let evidence = platform.evidence(&measurement, &data, false, now);
//!
//! // The verifier: appraise, then seal a secret to the appraised key.
//! let appraisal = Verifier::new().appraise_party(
//!     &evidence, &policy, &Role::Node, &key.public(), &context, &nonce, now,
//! )?;
//! let sealed = obscura_attest::seal::seal(&appraisal, b"share", b"a key share", &mut rng)?;
//! assert_eq!(key.open(b"share", &sealed)?, b"a key share");
//!
//! // Replayed to another nonce, the same evidence is refused.
//! let replay = Verifier::new().appraise_party(
//!     &evidence, &policy, &Role::Node, &key.public(), &context, &[1u8; 32], now,
//! );
//! assert!(matches!(replay, Err(obscura_attest::Refusal::ReportData)));
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod binding;
pub mod dcap;
mod hexser;
mod policy;
pub mod producer;
pub mod seal;
pub mod sim;
pub mod snp;

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

pub use policy::{Allowed, Policy, PolicyError, SnpTcb, TcbPolicy};

/// The kind of trusted execution environment that produced evidence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    /// Intel SGX, an ECDSA DCAP quote (version 3).
    Sgx,
    /// Intel TDX, an ECDSA DCAP quote (version 4 or 5).
    Tdx,
    /// AMD SEV-SNP, an attestation report signed by a VCEK or VLEK.
    Snp,
    /// Obscura's simulation backend: no hardware, a cluster's own root. Refused unless the
    /// policy says `allow_simulation`.
    Simulation,
}

impl Platform {
    /// The name used in policies, evidence files and output.
    pub fn name(self) -> &'static str {
        match self {
            Platform::Sgx => "sgx",
            Platform::Tdx => "tdx",
            Platform::Snp => "snp",
            Platform::Simulation => "simulation",
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What an attested party is for; a policy allows measurements per role.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// A storage node.
    Node,
    /// A token keeper.
    Keeper,
    /// An attested worker taking secrets keepers release to it.
    Worker,
    /// A clean-room worker running one work, its Work-ID in hex: what the worker's evidence
    /// for that work names, so evidence made for anything else (a secret's release, another
    /// work) does not pass as it. A policy entry for `worker` allows it for any work; one for
    /// `work:<hex>` for that work only.
    Work(String),
}

impl Role {
    /// The role as a policy writes it: `node`, `keeper`, `worker` or `work:<hex>`.
    pub fn name(&self) -> String {
        match self {
            Role::Node => "node".into(),
            Role::Keeper => "keeper".into(),
            Role::Worker => "worker".into(),
            Role::Work(id) => format!("work:{id}"),
        }
    }

    /// Parses a role as [`Role::name`] writes it.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "node" => Some(Role::Node),
            "keeper" => Some(Role::Keeper),
            "worker" => Some(Role::Worker),
            _ => {
                let id = s.strip_prefix("work:")?;
                (!id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit()))
                    .then(|| Role::Work(id.to_ascii_lowercase()))
            }
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

/// Evidence as a party hands it over: the platform's signed report and the collateral needed to
/// check it offline. Serialised as JSON with hex bytes (`obscura attest verify` reads it).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "platform", rename_all = "snake_case", deny_unknown_fields)]
pub enum Evidence {
    /// An SGX DCAP quote and its collateral (TCB info, QE identity, CRLs, issuer chains).
    Sgx {
        /// The quote, as the quoting enclave wrote it.
        #[serde(with = "hexser")]
        quote: Vec<u8>,
        /// Collateral from a PCCS or Intel's PCS; without it the quote cannot be appraised.
        collateral: Option<Box<dcap_qvl::QuoteCollateralV3>>,
    },
    /// A TDX DCAP quote and its collateral.
    Tdx {
        /// The quote.
        #[serde(with = "hexser")]
        quote: Vec<u8>,
        /// Collateral, as for SGX.
        collateral: Option<Box<dcap_qvl::QuoteCollateralV3>>,
    },
    /// An SEV-SNP attestation report with its endorsement key certificate.
    Snp {
        /// The 1184-byte report.
        #[serde(with = "hexser")]
        report: Vec<u8>,
        /// The VCEK or VLEK certificate (DER); without it the report cannot be appraised.
        #[serde(with = "hexser::option")]
        vek: Option<Vec<u8>>,
        /// The ASK or ASVK (and optionally ARK) in PEM; the verifier falls back to its pinned
        /// copies. An ARK is only ever taken from the verifier's pinned roots.
        chain: Option<String>,
    },
    /// Simulated evidence, signed by a simulated platform key that a cluster's simulation root
    /// endorsed.
    Simulation(sim::SimEvidence),
}

impl Evidence {
    /// The platform this evidence claims to come from.
    pub fn platform(&self) -> Platform {
        match self {
            Evidence::Sgx { .. } => Platform::Sgx,
            Evidence::Tdx { .. } => Platform::Tdx,
            Evidence::Snp { .. } => Platform::Snp,
            Evidence::Simulation(_) => Platform::Simulation,
        }
    }

    /// Parses evidence from its JSON form.
    ///
    /// # Errors
    /// [`Refusal::Malformed`] when the JSON is not evidence.
    pub fn from_json(bytes: &[u8]) -> Result<Evidence, Refusal> {
        serde_json::from_slice(bytes).map_err(|e| Refusal::Malformed(format!("evidence JSON: {e}")))
    }

    /// The JSON form.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("evidence serialises")
    }
}

/// A TCB verdict: the platform's status word and the advisories that apply to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Tcb {
    /// DCAP: Intel's status (`UpToDate`, `SWHardeningNeeded`, `OutOfDate`, …). SNP: `UpToDate`
    /// when the reported TCB meets the policy's minimum, `Unrated` when the policy sets none.
    /// Simulation: `Simulated`.
    pub status: String,
    /// Intel security advisories (`INTEL-SA-…`) that apply to this TCB.
    pub advisories: Vec<String>,
    /// The TCB's security versions, as the platform reports them.
    pub version: String,
}

/// What a platform's checks established, before the policy. Internal: only an [`Appraisal`]
/// leaves the crate.
#[derive(Clone, Debug)]
pub(crate) struct Claims {
    pub platform: Platform,
    pub measurement: Vec<u8>,
    pub signer: Option<Vec<u8>>,
    pub debug: bool,
    pub tcb: Tcb,
    pub report_data: [u8; 64],
    /// When the evidence or its collateral was issued, where the platform says.
    pub issued_at: Option<u64>,
    /// Whether the platform's TCB needs the policy's SNP minimum checked.
    pub snp_tcb: Option<SnpTcb>,
    /// Other signed fields a policy entry may require (`rtmr0`, `mr_config_id`, `host_data`,
    /// `vmpl`, …), hex or decimal as [`Allowed::require`] writes them.
    pub fields: Vec<(&'static str, String)>,
}

/// Proof that evidence passed its platform's checks, the policy and the report-data binding at
/// a given time. Only [`Verifier`] can make one; keys are released against it, never a bool.
#[derive(Clone, Debug, Serialize)]
pub struct Appraisal {
    platform: Platform,
    role: String,
    #[serde(serialize_with = "hexser::serialize")]
    measurement: Vec<u8>,
    #[serde(serialize_with = "hexser::serialize_option")]
    signer: Option<Vec<u8>>,
    debug: bool,
    tcb: Tcb,
    #[serde(serialize_with = "hexser::serialize")]
    report_data: Vec<u8>,
    #[serde(serialize_with = "hexser::serialize_option")]
    party_key: Option<Vec<u8>>,
    fields: std::collections::BTreeMap<&'static str, String>,
    appraised_at: u64,
    policy: String,
    policy_version: u64,
}

impl Appraisal {
    /// The platform that produced the evidence.
    pub fn platform(&self) -> Platform {
        self.platform
    }
    /// The role the evidence was appraised for.
    pub fn role(&self) -> &str {
        &self.role
    }
    /// The measurement: MRENCLAVE (SGX), MRTD (TDX), MEASUREMENT (SNP) or the SHA-384 of the
    /// executable (simulation).
    pub fn measurement(&self) -> &[u8] {
        &self.measurement
    }
    /// Who signed the measured code, where the platform says: MRSIGNER (SGX), the author key
    /// digest (SNP), the simulation root.
    pub fn signer(&self) -> Option<&[u8]> {
        self.signer.as_deref()
    }
    /// Whether the environment allows debugging (always false unless the policy allowed it).
    pub fn debug(&self) -> bool {
        self.debug
    }
    /// The TCB verdict.
    pub fn tcb(&self) -> &Tcb {
        &self.tcb
    }
    /// The report data the evidence carried, equal to what the verifier expected.
    pub fn report_data(&self) -> &[u8] {
        &self.report_data
    }
    /// The HPKE public key the report data binds, for appraisals made by
    /// [`Verifier::appraise_party`].
    pub fn party_key(&self) -> Option<&[u8]> {
        self.party_key.as_deref()
    }
    /// The other signed fields of the report (`rtmr0`…`rtmr3`, `mr_config_id`, `mr_owner`,
    /// `mr_owner_config` for TDX; `host_data`, `vmpl`, `guest_policy` for SNP; `isv_prod_id`,
    /// `isv_svn` for SGX), as a policy's `require` names them.
    pub fn fields(&self) -> &std::collections::BTreeMap<&'static str, String> {
        &self.fields
    }
    /// The (injected) time of the appraisal, Unix seconds.
    pub fn appraised_at(&self) -> u64 {
        self.appraised_at
    }
    /// The policy's name and version.
    pub fn policy(&self) -> (&str, u64) {
        (&self.policy, self.policy_version)
    }
    /// A one-line summary for people: platform, measurement prefix, TCB.
    pub fn summary(&self) -> String {
        format!(
            "{} measurement {}… tcb {}{}",
            self.platform,
            hex::encode(&self.measurement[..self.measurement.len().min(8)]),
            self.tcb.status,
            if self.tcb.advisories.is_empty() {
                String::new()
            } else {
                format!(" ({})", self.tcb.advisories.join(", "))
            }
        )
    }
}

/// Why evidence was refused. Each check has its own variant, so a test (and an operator) can
/// tell a forged report from expired collateral from a wrong build.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The evidence does not parse, or claims one platform and holds another's report.
    #[error("the evidence cannot be read: {0}")]
    Malformed(String),
    /// The evidence lacks the collateral or certificate needed to check it offline.
    #[error("the evidence lacks its {0}; fetch it (PCCS for DCAP, AMD KDS for SNP) and attach it")]
    MissingCollateral(&'static str),
    /// The report's signature does not verify: its body or its signature was altered.
    #[error("the report's signature does not verify: {0}")]
    Signature(String),
    /// A certificate in the chain does not verify under its issuer, or does not parse.
    #[error("a certificate in the chain does not verify: {0}")]
    Certificate(String),
    /// The chain does not end at a root this verifier pins.
    #[error("the chain does not end at a pinned root: {0}")]
    UntrustedRoot(String),
    /// Collateral, a CRL or a certificate is not valid at the appraisal time.
    #[error("not valid at {at} (Unix time): {detail}")]
    Expired {
        /// The appraisal time.
        at: u64,
        /// What expired, or is not yet valid.
        detail: String,
    },
    /// A collateral document's signature does not verify.
    #[error("the collateral's signature does not verify: {0}")]
    Collateral(String),
    /// The platform's TCB is revoked.
    #[error("the platform's TCB is revoked")]
    Revoked,
    /// The platform's TCB is below every level its collateral lists, so it cannot be appraised.
    #[error(
        "the platform's TCB matches no level in its TCB info (older than every listed level): {0}"
    )]
    TcbUnknown(String),
    /// The TCB status or an advisory is not accepted by the policy.
    #[error("TCB status {status}{} is not accepted by the policy", advisories_text(.advisories))]
    Tcb {
        /// The platform's status.
        status: String,
        /// The advisories the policy does not accept.
        advisories: Vec<String>,
    },
    /// The SNP reported TCB is below the policy's minimum.
    #[error("reported TCB {reported} is below the policy's minimum {minimum}")]
    TcbBelowMinimum {
        /// The report's TCB.
        reported: String,
        /// The policy's minimum.
        minimum: String,
    },
    /// The endorsement key certifies another chip or another TCB than the report's.
    #[error("the endorsement key is for another chip or TCB: {0}")]
    WrongChip(String),
    /// The environment allows debugging, and the policy does not.
    #[error("the environment is in debug mode, which the policy refuses")]
    Debug,
    /// The measurement is allowed, but a field the policy's entry requires differs.
    #[error("{field} is {found}, and the policy requires {required} for this measurement")]
    Field {
        /// The field's name.
        field: String,
        /// Its value in the evidence.
        found: String,
        /// The value the policy requires.
        required: String,
    },
    /// The measurement is not one the policy allows for this role and platform.
    #[error("measurement {measurement} is not allowed for role {role} on {platform}")]
    Measurement {
        /// The role asked for.
        role: String,
        /// The evidence's platform.
        platform: Platform,
        /// The measurement (hex).
        measurement: String,
    },
    /// The report data is not what the verifier expected: another key, nonce, role or context.
    #[error("the report data binds another key, nonce, role or configuration (a replay?)")]
    ReportData,
    /// Simulated evidence, and the policy does not allow simulation.
    #[error("simulated evidence, and the policy does not allow simulation")]
    Simulation,
    /// The evidence (or its collateral) is older than the policy allows.
    #[error("the evidence is {age} s old, more than the policy's {max} s")]
    TooOld {
        /// Its age at the appraisal time.
        age: u64,
        /// The policy's maximum.
        max: u64,
    },
    /// The party gave no evidence: it does not attest, or answered something else.
    #[error("the party gave no evidence: {0}")]
    NoEvidence(String),
    /// Another verification failure from the platform library, kept verbatim.
    #[error("the evidence does not verify: {0}")]
    Invalid(String),
}

fn advisories_text(advisories: &[String]) -> String {
    if advisories.is_empty() {
        String::new()
    } else {
        format!(" with advisories {}", advisories.join(", "))
    }
}

/// Checks evidence. Holds the pinned roots: Intel's SGX root CA and AMD's ARKs (with the ASKs
/// and ASVKs they signed).
#[derive(Clone)]
pub struct Verifier {
    intel_root: dcap::IntelRoot,
    amd: snp::Roots,
}

impl Default for Verifier {
    fn default() -> Self {
        Verifier::new()
    }
}

impl Verifier {
    /// A verifier with the production roots: Intel SGX Root CA, AMD Milan, Genoa and Turin.
    pub fn new() -> Self {
        Verifier {
            intel_root: dcap::IntelRoot::Production,
            amd: snp::Roots::production(),
        }
    }

    /// Pins another Intel root (DER) instead of Intel's, for tests and private PKIs.
    pub fn with_intel_root(mut self, der: Vec<u8>) -> Self {
        self.intel_root = dcap::IntelRoot::Other(der);
        self
    }

    /// Pins other AMD roots instead of the production ones.
    pub fn with_amd_roots(mut self, roots: snp::Roots) -> Self {
        self.amd = roots;
        self
    }

    /// Appraises `evidence` for `role` under `policy` at time `now` (Unix seconds), expecting
    /// exactly `expected_report_data`.
    ///
    /// # Errors
    /// A [`Refusal`] naming the first check that failed.
    pub fn appraise(
        &self,
        evidence: &Evidence,
        policy: &Policy,
        role: &Role,
        expected_report_data: &[u8; 64],
        now: u64,
    ) -> Result<Appraisal, Refusal> {
        let mut claims = self.verify(evidence, policy, now)?;
        if !bool::from(claims.report_data.ct_eq(expected_report_data)) {
            return Err(Refusal::ReportData);
        }
        policy.check_platform(&claims, now)?;
        policy.rate(&mut claims);
        policy.check_measurement(&claims, role)?;
        Ok(Appraisal::new(claims, role.name(), None, policy, now))
    }

    /// Appraises a party's evidence whose report data must bind `party_key` (its HPKE public
    /// key), `context` (a configuration digest or a Work-ID) and the verifier's `nonce`. The
    /// appraisal carries the key, so [`seal::seal`] can encrypt to it.
    ///
    /// # Errors
    /// As [`Verifier::appraise`].
    #[allow(clippy::too_many_arguments)]
    pub fn appraise_party(
        &self,
        evidence: &Evidence,
        policy: &Policy,
        role: &Role,
        party_key: &[u8; 32],
        context: &[u8; 32],
        nonce: &[u8; 32],
        now: u64,
    ) -> Result<Appraisal, Refusal> {
        let expected = binding::report_data(role, party_key, context, nonce);
        let mut appraisal = self.appraise(evidence, policy, role, &expected, now)?;
        appraisal.party_key = Some(party_key.to_vec());
        Ok(appraisal)
    }

    /// Checks evidence offline without an expected report data (`obscura attest verify`): the
    /// platform's checks and the policy. With a `role`, a measurement the policy does not allow
    /// for it is refused; without one, the inspection lists the roles it is allowed for (maybe
    /// none). An [`Inspection`] releases nothing.
    ///
    /// # Errors
    /// As [`Verifier::appraise`], without [`Refusal::ReportData`].
    pub fn inspect(
        &self,
        evidence: &Evidence,
        policy: &Policy,
        role: Option<&Role>,
        now: u64,
    ) -> Result<Inspection, Refusal> {
        let mut claims = self.verify(evidence, policy, now)?;
        policy.check_platform(&claims, now)?;
        policy.rate(&mut claims);
        if let Some(role) = role {
            policy.check_measurement(&claims, role)?;
        }
        let allowed_for = policy.allowed_roles(&claims);
        let role = role.map_or_else(|| allowed_for.join(","), Role::name);
        Ok(Inspection {
            appraisal: Appraisal::new(claims, role, None, policy, now),
            allowed_for,
        })
    }

    fn verify(&self, evidence: &Evidence, policy: &Policy, now: u64) -> Result<Claims, Refusal> {
        match evidence {
            Evidence::Sgx { quote, collateral } => dcap::verify(
                &self.intel_root,
                Platform::Sgx,
                quote,
                collateral.as_deref(),
                now,
            ),
            Evidence::Tdx { quote, collateral } => dcap::verify(
                &self.intel_root,
                Platform::Tdx,
                quote,
                collateral.as_deref(),
                now,
            ),
            Evidence::Snp { report, vek, chain } => {
                snp::verify(&self.amd, report, vek.as_deref(), chain.as_deref(), now)
            }
            Evidence::Simulation(evidence) => sim::verify(evidence, &policy.simulation_roots()),
        }
    }
}

impl Appraisal {
    fn new(
        claims: Claims,
        role: String,
        party_key: Option<Vec<u8>>,
        policy: &Policy,
        now: u64,
    ) -> Appraisal {
        Appraisal {
            platform: claims.platform,
            role,
            measurement: claims.measurement,
            signer: claims.signer,
            debug: claims.debug,
            tcb: claims.tcb,
            report_data: claims.report_data.to_vec(),
            party_key,
            fields: claims.fields.into_iter().collect(),
            appraised_at: now,
            policy: policy.name.clone(),
            policy_version: policy.version,
        }
    }
}

/// The result of [`Verifier::inspect`]: what an appraisal would say, minus the report-data
/// binding. It cannot be used to seal anything.
#[derive(Clone, Debug, Serialize)]
pub struct Inspection {
    appraisal: Appraisal,
    allowed_for: Vec<String>,
}

impl Inspection {
    /// The appraisal's fields, for display.
    pub fn details(&self) -> &Appraisal {
        &self.appraisal
    }

    /// The roles the policy allows this measurement for (`*` is any role); empty when none.
    pub fn allowed_for(&self) -> &[String] {
        &self.allowed_for
    }
}
