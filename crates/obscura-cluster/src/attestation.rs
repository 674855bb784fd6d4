//! Attestation in a cluster: how each server makes its evidence, and the policy, in the cluster
//! directory, that clients and `obscura status` appraise every node and keeper under before
//! sending them anything.

use std::path::Path;

use obscura_attest::{Allowed, Platform, Policy};
use serde::{Deserialize, Serialize};

use crate::files::read;
use crate::Error;

/// The policy file in a cluster directory (public: it names measurements and roots, no secret).
pub const POLICY_FILE: &str = "attestation-policy.json";

/// The simulation root's secret in a cluster directory, written private at `cluster init`; it
/// endorses the simulated platform of every server, and of any server added later.
pub const SIMULATION_ROOT_FILE: &str = "simulation-root.secret";

/// Where a server's evidence comes from (`"attestation": {"producer": …}` in its
/// configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "producer", rename_all = "kebab-case", deny_unknown_fields)]
pub enum AttestationSource {
    /// The labelled simulation backend: the server's simulated platform, endorsed by the
    /// cluster's simulation root, is in its sealed secrets; its measurement is the SHA-384 of
    /// the server's executable.
    Simulation,
    /// TDX or SEV-SNP through the kernel's configfs-tsm.
    ConfigfsTsm,
    /// SEV-SNP through `/dev/sev-guest`.
    SevGuest,
    /// SGX inside Gramine, through `/dev/attestation`.
    Gramine,
}

/// The policy a new cluster starts with: the simulation backend allowed (this project's
/// machines have no TEE; a production cluster replaces this file), under the cluster's own
/// simulation root, for servers running the executable measured as `measurement`.
pub fn simulation_policy(root: &[u8; 32], measurement: &[u8; 48]) -> Policy {
    let allowed = |role: &str| Allowed {
        role: role.into(),
        platform: Platform::Simulation,
        measurement: hex(measurement),
        require: Default::default(),
    };
    Policy {
        version: 1,
        name: "simulation (no TEE: proves only the cluster's own root signed it)".into(),
        allow_simulation: true,
        allow_debug: false,
        max_evidence_age_secs: Some(300),
        tcb: Default::default(),
        measurements: vec![allowed("node"), allowed("keeper"), allowed("worker")],
        simulation_roots: vec![hex(root)],
    }
}

fn hex(bytes: &[u8]) -> String {
    obscura_tokens::keyfile::to_hex(bytes)
}

/// The cluster's attestation policy, if its directory has one (clusters made before attestation
/// have none, and their servers are not appraised).
///
/// # Errors
/// [`Error::Config`] for a policy file that does not parse.
pub fn load_policy(dir: &Path) -> Result<Option<Policy>, Error> {
    let path = dir.join(POLICY_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let text = String::from_utf8(read(&path)?).map_err(|_| Error::Config {
        path: path.display().to_string(),
        reason: "not UTF-8".into(),
    })?;
    Policy::from_json(&text)
        .map(Some)
        .map_err(|e| Error::Config {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
}
