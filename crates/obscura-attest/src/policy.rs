//! The appraisal policy: a JSON file an operator can read, versioned, and shown by
//! `obscura status`.

use serde::{Deserialize, Serialize};

use crate::{Claims, Platform, Refusal, Role};

/// What evidence must show to be accepted.
///
/// ```json
/// {
///   "version": 3,
///   "name": "production",
///   "allow_debug": false,
///   "allow_simulation": false,
///   "max_evidence_age_secs": 2592000,
///   "tcb": {
///     "accept": ["UpToDate", "SWHardeningNeeded"],
///     "accept_advisories": ["INTEL-SA-00615"],
///     "snp_minimum": {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115}
///   },
///   "measurements": [
///     {"role": "node", "platform": "tdx", "measurement": "…96 hex digits…"}
///   ]
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// The policy's revision; raise it with every change, so parties can say which one they
    /// applied.
    pub version: u64,
    /// A name for people.
    pub name: String,
    /// Accept the simulation backend. Never in production: simulated evidence proves only that a
    /// holder of the cluster's simulation root signed it.
    #[serde(default)]
    pub allow_simulation: bool,
    /// Accept environments that allow debugging (whose memory the host can read).
    #[serde(default)]
    pub allow_debug: bool,
    /// Refuse evidence, or DCAP collateral, issued longer ago than this.
    #[serde(default)]
    pub max_evidence_age_secs: Option<u64>,
    /// TCB requirements.
    #[serde(default)]
    pub tcb: TcbPolicy,
    /// Measurements allowed, per role and platform.
    #[serde(default)]
    pub measurements: Vec<Allowed>,
    /// Simulation roots (Ed25519 public keys, hex) whose platforms are trusted, when simulation
    /// is allowed.
    #[serde(default)]
    pub simulation_roots: Vec<String>,
}

/// TCB requirements.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcbPolicy {
    /// DCAP TCB statuses accepted (Intel's words: `UpToDate`, `SWHardeningNeeded`,
    /// `ConfigurationNeeded`, `ConfigurationAndSWHardeningNeeded`, `OutOfDate`, …). `Revoked`
    /// is refused whatever this says.
    #[serde(default = "up_to_date")]
    pub accept: Vec<String>,
    /// Intel advisories accepted; an advisory not listed refuses the evidence.
    #[serde(default)]
    pub accept_advisories: Vec<String>,
    /// The lowest SNP TCB accepted, component by component.
    #[serde(default)]
    pub snp_minimum: Option<SnpTcb>,
}

impl Default for TcbPolicy {
    fn default() -> Self {
        TcbPolicy {
            accept: up_to_date(),
            accept_advisories: Vec::new(),
            snp_minimum: None,
        }
    }
}

fn up_to_date() -> Vec<String> {
    vec!["UpToDate".into()]
}

/// An SEV-SNP TCB: the security versions of the firmware components.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnpTcb {
    /// PSP bootloader SVN.
    pub bootloader: u8,
    /// PSP OS SVN.
    pub tee: u8,
    /// SNP firmware SVN.
    pub snp: u8,
    /// Microcode patch level.
    pub microcode: u8,
}

impl SnpTcb {
    fn meets(&self, minimum: &SnpTcb) -> bool {
        self.bootloader >= minimum.bootloader
            && self.tee >= minimum.tee
            && self.snp >= minimum.snp
            && self.microcode >= minimum.microcode
    }
}

impl std::fmt::Display for SnpTcb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "bootloader {} tee {} snp {} microcode {}",
            self.bootloader, self.tee, self.snp, self.microcode
        )
    }
}

/// One allowed measurement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allowed {
    /// `node`, `keeper`, `worker`, `work:<Work-ID hex>`, or `*` for any role.
    pub role: String,
    /// The platform the measurement is for.
    pub platform: Platform,
    /// The measurement, hex.
    pub measurement: String,
    /// Other signed fields that must hold these values with this measurement: a TD's
    /// `rtmr0`–`rtmr3` (firmware, kernel, command line, application: MRTD alone covers only
    /// the TD firmware), `mr_config_id`, `mr_owner`, `mr_owner_config`; an SNP guest's
    /// `host_data`, `vmpl` (decimal), `guest_policy` (`0x…`); an enclave's `isv_prod_id`,
    /// `isv_svn` (decimal).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub require: std::collections::BTreeMap<String, String>,
}

/// A policy file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// Not JSON, an unknown field, or a field of the wrong type.
    #[error("attestation policy: {0}")]
    Json(#[from] serde_json::Error),
    /// A field that parses but makes no sense.
    #[error("attestation policy: {0}")]
    Invalid(String),
}

/// Whether a policy entry for `entry` (a role's name, or `*`) allows `role`: its own name, `*`,
/// and `worker` for a worker of any one work (`work:<hex>`), which an entry naming that work
/// allows alone.
fn role_allows(entry: &str, role: &Role) -> bool {
    entry == "*" || entry == role.name() || (entry == "worker" && matches!(role, Role::Work(_)))
}

impl Policy {
    /// Parses and checks a policy.
    ///
    /// # Errors
    /// [`PolicyError`] naming the field at fault.
    pub fn from_json(text: &str) -> Result<Policy, PolicyError> {
        let mut policy: Policy = serde_json::from_str(text)?;
        for allowed in &mut policy.measurements {
            // A Work-ID is hex in either case; roles are compared as `Role::name` writes them.
            if allowed.role.starts_with("work:") {
                allowed.role = allowed.role.to_ascii_lowercase();
            }
            if allowed.role != "*" && Role::parse(&allowed.role).is_none() {
                return Err(PolicyError::Invalid(format!(
                    "role {:?} is not node, keeper, worker, work:<hex> or *",
                    allowed.role
                )));
            }
            if hex::decode(&allowed.measurement).map_or(true, |m| m.is_empty()) {
                return Err(PolicyError::Invalid(format!(
                    "measurement {:?} is not hex",
                    allowed.measurement
                )));
            }
        }
        for root in &policy.simulation_roots {
            if hex::decode(root).map_or(true, |r| r.len() != 32) {
                return Err(PolicyError::Invalid(format!(
                    "simulation root {root:?} is not 32 bytes of hex"
                )));
            }
        }
        Ok(policy)
    }

    /// A policy a server appraises a party under on someone else's say (a secret's release
    /// policy, a recovery plan's, a clean-room approval's): JSON that parses, and stays within
    /// what every server allows any such policy: no debug, and simulation only where the server
    /// attests with it itself, under its own simulation root `own_root` (someone else's root
    /// would let them make evidence for any worker they like, themselves included).
    ///
    /// # Errors
    /// What is wrong, to go after the policy's name in a refusal.
    pub fn vet(bytes: &[u8], own_root: Option<&[u8; 32]>) -> Result<Policy, String> {
        let policy = std::str::from_utf8(bytes)
            .ok()
            .and_then(|text| Policy::from_json(text).ok())
            .ok_or("not a valid attestation policy")?;
        if policy.allow_debug {
            return Err("it allows debug environments, whose memory their host reads".into());
        }
        if policy.allow_simulation || !policy.simulation_roots.is_empty() {
            let Some(own) = own_root else {
                return Err("this cluster does not attest with the simulation backend".into());
            };
            let own = hex::encode(own);
            if policy
                .simulation_roots
                .iter()
                .any(|r| !r.eq_ignore_ascii_case(&own))
            {
                return Err("it trusts a simulation root other than the cluster's".into());
            }
        }
        Ok(policy)
    }

    /// The JSON form.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("policy serialises")
    }

    pub(crate) fn simulation_roots(&self) -> Vec<[u8; 32]> {
        self.simulation_roots
            .iter()
            .filter_map(|r| hex::decode(r).ok()?.try_into().ok())
            .collect()
    }

    /// Applies the policy to verified claims, everything but the measurement.
    pub(crate) fn check_platform(&self, claims: &Claims, now: u64) -> Result<(), Refusal> {
        if claims.platform == Platform::Simulation && !self.allow_simulation {
            return Err(Refusal::Simulation);
        }
        if claims.debug && !self.allow_debug {
            return Err(Refusal::Debug);
        }
        if let (Some(max), Some(issued)) = (self.max_evidence_age_secs, claims.issued_at) {
            let age = now.saturating_sub(issued);
            if age > max {
                return Err(Refusal::TooOld { age, max });
            }
        }
        self.check_tcb(claims)
    }

    /// Rates an SNP TCB that met the policy's minimum (checked by [`Policy::check_platform`]).
    pub(crate) fn rate(&self, claims: &mut Claims) {
        if claims.platform == Platform::Snp && self.tcb.snp_minimum.is_some() {
            claims.tcb.status = "UpToDate".into();
        }
    }

    /// The roles the claims' measurement is allowed for (`*` for any).
    pub(crate) fn allowed_roles(&self, claims: &Claims) -> Vec<String> {
        let measurement = hex::encode(&claims.measurement);
        self.measurements
            .iter()
            .filter(|a| {
                a.platform == claims.platform && a.measurement.eq_ignore_ascii_case(&measurement)
            })
            .map(|a| a.role.clone())
            .collect()
    }

    /// Refuses a measurement not allowed for `role`, or allowed only with fields the evidence
    /// does not hold.
    pub(crate) fn check_measurement(&self, claims: &Claims, role: &Role) -> Result<(), Refusal> {
        let measurement = hex::encode(&claims.measurement);
        let entries: Vec<&Allowed> = self
            .measurements
            .iter()
            .filter(|a| {
                a.platform == claims.platform
                    && a.measurement.eq_ignore_ascii_case(&measurement)
                    && role_allows(&a.role, role)
            })
            .collect();
        let mut refusal = Refusal::Measurement {
            role: role.name(),
            platform: claims.platform,
            measurement,
        };
        for entry in entries {
            match entry.require.iter().find_map(|(field, required)| {
                let found = claims
                    .fields
                    .iter()
                    .find(|(name, _)| name == field)
                    .map(|(_, v)| v.as_str());
                (!found.is_some_and(|f| f.eq_ignore_ascii_case(required))).then(|| Refusal::Field {
                    field: field.clone(),
                    found: found.unwrap_or("absent").to_owned(),
                    required: required.clone(),
                })
            }) {
                None => return Ok(()),
                Some(unmet) => refusal = unmet,
            }
        }
        Err(refusal)
    }

    fn check_tcb(&self, claims: &Claims) -> Result<(), Refusal> {
        match claims.platform {
            Platform::Simulation => Ok(()),
            Platform::Snp => match (claims.snp_tcb, self.tcb.snp_minimum) {
                (Some(reported), Some(minimum)) if !reported.meets(&minimum) => {
                    Err(Refusal::TcbBelowMinimum {
                        reported: reported.to_string(),
                        minimum: minimum.to_string(),
                    })
                }
                _ => Ok(()),
            },
            Platform::Sgx | Platform::Tdx => {
                let status = &claims.tcb.status;
                let refused: Vec<String> = claims
                    .tcb
                    .advisories
                    .iter()
                    .filter(|a| !self.tcb.accept_advisories.contains(a))
                    .cloned()
                    .collect();
                if status == "Revoked" {
                    return Err(Refusal::Revoked);
                }
                if !self.tcb.accept.contains(status) || !refused.is_empty() {
                    return Err(Refusal::Tcb {
                        status: status.clone(),
                        advisories: refused,
                    });
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod role_tests {
    use super::role_allows;
    use crate::Role;

    #[test]
    fn a_worker_entry_allows_any_work_and_a_work_entry_that_work_alone() {
        let work = |id: &str| Role::Work(id.into());
        assert!(role_allows("worker", &Role::Worker));
        assert!(role_allows("worker", &work("ab")));
        assert!(role_allows("work:ab", &work("ab")));
        assert!(!role_allows("work:ab", &work("cd")));
        assert!(!role_allows("work:ab", &Role::Worker));
        assert!(!role_allows("worker", &Role::Keeper));
        assert!(role_allows("*", &work("cd")));
    }
}
