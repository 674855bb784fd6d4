//! `obscura attest verify`: appraise a quote or report offline, so the verifier is useful on its
//! own.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use obscura_attest::{Evidence, Policy, Role, Verifier};
use serde_json::json;

use crate::error::Failure;

#[derive(Subcommand)]
pub(crate) enum AttestCommand {
    /// Appraise attestation evidence offline: an SGX or TDX DCAP quote with its collateral, an
    /// SEV-SNP report with its VCEK or VLEK, or an evidence JSON file as nodes and workers hand
    /// it over.
    ///
    /// Exits 0 when the evidence passes its platform's checks and the policy, and its measurement
    /// is allowed for `--role` (or, without one, for some role); 1 otherwise, saying which check
    /// refused it.
    #[command(after_help = "Examples:\n  \
        obscura attest verify quote.bin --collateral collateral.json --at 2025-06-20\n  \
        obscura attest verify report.bin --collateral vcek.der --policy policy.json --role node\n  \
        obscura attest verify evidence.json --policy cluster/attestation-policy.json --json")]
    Verify {
        /// The evidence: a DCAP quote (binary), an SNP report (1184 bytes, or its hex text), or
        /// evidence JSON.
        file: PathBuf,
        /// DCAP collateral (JSON, as a PCCS serves it), or the SNP VCEK/VLEK certificate (DER or
        /// PEM).
        #[arg(long)]
        collateral: Option<PathBuf>,
        /// SNP: the ASK or ASVK (PEM) when it is not one AMD's pinned roots already hold.
        #[arg(long)]
        chain: Option<PathBuf>,
        /// The policy (JSON). Without one: TCB up to date, no advisories, no debug, no
        /// simulation, and no measurement allowed — the platform's checks and the TCB alone.
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Require the measurement to be allowed for this role: node, keeper, worker or
        /// work:<Work-ID>.
        #[arg(long, value_parser = parse_role)]
        role: Option<Role>,
        /// Appraise as of this time, how old evidence is checked with its then-valid
        /// collateral: Unix seconds, YYYY-MM-DD, or YYYY-MM-DDTHH:MM:SSZ. Default: now.
        #[arg(long, value_parser = parse_time)]
        at: Option<u64>,
        /// Print the appraisal as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Allow another build of `obscura` to serve in a cluster that attests with the simulation
    /// backend: add its measurement (SHA-384 of the executable) to the cluster's policy, for
    /// the given roles, and raise the policy's version. Needed after an upgrade: until then the
    /// new build's servers are refused and named.
    #[command(after_help = "Examples:\n  \
        obscura attest allow --cluster /tmp/demo                       # this executable, every role\n  \
        obscura attest allow --cluster /tmp/demo --binary ./obscura-2 --role node")]
    Allow {
        /// The cluster directory.
        #[arg(long, env = "OBSCURA_CLUSTER")]
        cluster: PathBuf,
        /// The executable to allow; default: this one.
        #[arg(long)]
        binary: Option<PathBuf>,
        /// Roles to allow it for (repeat); default: node, keeper and worker.
        #[arg(long, value_parser = parse_role)]
        role: Vec<Role>,
    },
    /// Show the cluster's attestation policy.
    #[command(after_help = "Examples:\n  obscura attest policy --cluster /tmp/demo")]
    Policy {
        /// The cluster directory.
        #[arg(long, env = "OBSCURA_CLUSTER")]
        cluster: PathBuf,
    },
}

impl AttestCommand {
    pub(crate) async fn run(self) -> Result<ExitCode, Failure> {
        match self {
            AttestCommand::Verify {
                file,
                collateral,
                chain,
                policy,
                role,
                at,
                json,
            } => verify(
                &file,
                collateral.as_deref(),
                chain.as_deref(),
                policy.as_deref(),
                role,
                at,
                json,
            ),
            AttestCommand::Allow {
                cluster,
                binary,
                role,
            } => allow(&cluster, binary.as_deref(), role),
            AttestCommand::Policy { cluster } => {
                let policy = obscura_cluster::attestation::load_policy(&cluster)
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("{} has no attestation policy", cluster.display()))?;
                println!("{}", policy.to_json());
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| format!("{s:?} is not node, keeper, worker or work:<hex>"))
}

/// Unix seconds, `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SSZ` (UTC).
pub(crate) fn parse_time(s: &str) -> Result<u64, String> {
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(secs);
    }
    let bad = || format!("{s:?} is not Unix seconds, YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ");
    let (date, time) = match s.split_once('T') {
        Some((d, t)) => (d, t.strip_suffix('Z').ok_or_else(bad)?),
        None => (s, "00:00:00"),
    };
    let numbers = |text: &str, sep: char| -> Option<Vec<u64>> {
        text.split(sep).map(|n| n.parse().ok()).collect()
    };
    let (d, t) = (
        numbers(date, '-').ok_or_else(bad)?,
        numbers(time, ':').ok_or_else(bad)?,
    );
    let (&[y, m, day], &[hh, mm, ss]) = (&d[..], &t[..]) else {
        return Err(bad());
    };
    if !(1970..=9999).contains(&y)
        || !(1..=12).contains(&m)
        || !(1..=31).contains(&day)
        || hh > 23
        || mm > 59
        || ss > 60
    {
        return Err(bad());
    }
    // Days from the civil date (Howard Hinnant's algorithm), proleptic Gregorian.
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

fn read(path: &Path) -> Result<Vec<u8>, Failure> {
    std::fs::read(path).map_err(|e| Failure::Said(format!("{}: {e}", path.display())))
}

/// Evidence from a file and its collateral, whatever form the file is in.
fn load(file: &Path, collateral: Option<&Path>, chain: Option<&Path>) -> Result<Evidence, Failure> {
    let bytes = read(file)?;
    let text = std::str::from_utf8(&bytes).map(str::trim).unwrap_or("");
    let said = |what: String| Failure::Said(format!("{}: {what}", file.display()));
    if text.starts_with('{') {
        if collateral.is_some() || chain.is_some() {
            return Err(said(
                "an evidence JSON file carries its own collateral; drop --collateral and --chain"
                    .into(),
            ));
        }
        return Evidence::from_json(&bytes).map_err(|e| said(e.to_string()));
    }
    let snp_report = if bytes.len() == 1184 {
        Some(bytes.clone())
    } else if text.len() == 2368 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(text).ok()
    } else {
        None
    };
    if let Some(report) = snp_report {
        return Ok(Evidence::Snp {
            report,
            vek: collateral.map(read).transpose()?,
            chain: chain
                .map(|p| {
                    read(p).and_then(|b| {
                        String::from_utf8(b)
                            .map_err(|_| Failure::Said(format!("{}: not PEM text", p.display())))
                    })
                })
                .transpose()?,
        });
    }
    if chain.is_some() {
        return Err(said("--chain is for SEV-SNP reports".into()));
    }
    // A DCAP quote: version (u16) then attestation key type (u16), then the TEE type (u32):
    // 0 for SGX, 0x81 for TDX.
    let collateral = collateral
        .map(|p| {
            serde_json::from_slice(&read(p)?)
                .map(Box::new)
                .map_err(|e| Failure::Said(format!("{}: not DCAP collateral: {e}", p.display())))
        })
        .transpose()?;
    match (bytes.get(..2), bytes.get(4..8)) {
        (Some([3, 0]), Some([0, 0, 0, 0])) => Ok(Evidence::Sgx {
            quote: bytes,
            collateral,
        }),
        (Some([4 | 5, 0]), Some([0x81, 0, 0, 0])) => Ok(Evidence::Tdx {
            quote: bytes,
            collateral,
        }),
        (Some([4 | 5, 0]), Some([0, 0, 0, 0])) => Ok(Evidence::Sgx {
            quote: bytes,
            collateral,
        }),
        _ => Err(said(
            "not a DCAP quote (version 3–5), an SEV-SNP report (1184 bytes) or evidence JSON"
                .into(),
        )),
    }
}

fn load_policy(path: Option<&Path>) -> Result<Policy, Failure> {
    match path {
        Some(path) => {
            let text = String::from_utf8(read(path)?)
                .map_err(|_| Failure::Said(format!("{}: not UTF-8", path.display())))?;
            Policy::from_json(&text).map_err(|e| Failure::Said(format!("{}: {e}", path.display())))
        }
        None => Ok(
            Policy::from_json(r#"{"version": 0, "name": "defaults (no --policy)"}"#)
                .expect("the default policy parses"),
        ),
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn verify(
    file: &Path,
    collateral: Option<&Path>,
    chain: Option<&Path>,
    policy: Option<&Path>,
    role: Option<Role>,
    at: Option<u64>,
    json: bool,
) -> Result<ExitCode, Failure> {
    let evidence = load(file, collateral, chain)?;
    let given = policy.is_some();
    let policy = load_policy(policy)?;
    let at = at.unwrap_or_else(now);
    let outcome = Verifier::new().inspect(&evidence, &policy, role.as_ref(), at);
    let ok = outcome.as_ref().is_ok_and(|i| !i.allowed_for().is_empty());
    if json {
        let value = match &outcome {
            Ok(inspection) => json!({
                "ok": ok,
                "platform": evidence.platform(),
                "at": at,
                "appraisal": inspection.details(),
                "allowed_for": inspection.allowed_for(),
                "refusal": if ok { None } else { Some("the measurement is not allowed by the policy") },
            }),
            Err(refusal) => json!({
                "ok": false,
                "platform": evidence.platform(),
                "at": at,
                "appraisal": null,
                "allowed_for": [],
                "refusal": refusal.to_string(),
            }),
        };
        println!("{value}");
        return Ok(crate::exit(ok));
    }
    let (name, version) = (&policy.name, policy.version);
    match &outcome {
        Err(refusal) => {
            println!(
                "refused: {} evidence from {} under policy {name:?} v{version} at {at}",
                evidence.platform(),
                file.display()
            );
            println!("  {refusal}");
        }
        Ok(inspection) => {
            let a = inspection.details();
            println!(
                "{}: {} evidence from {} under policy {name:?} v{version} at {at}",
                if ok {
                    "accepted"
                } else {
                    "platform checks passed"
                },
                a.platform(),
                file.display()
            );
            println!("  measurement  {}", hex::encode(a.measurement()));
            if let Some(signer) = a.signer() {
                println!("  signer       {}", hex::encode(signer));
            }
            let advisories = if a.tcb().advisories.is_empty() {
                String::new()
            } else {
                format!(" ({})", a.tcb().advisories.join(", "))
            };
            println!(
                "  tcb          {}{advisories}; {}",
                a.tcb().status,
                a.tcb().version
            );
            println!("  debug        {}", if a.debug() { "yes" } else { "no" });
            println!("  report data  {}", hex::encode(a.report_data()));
            if ok {
                println!("  allowed for  {}", inspection.allowed_for().join(", "));
            } else if given {
                println!("  the policy allows this measurement for no role");
            } else {
                println!("  no --policy: the measurement is not checked; name it in a policy");
            }
        }
    }
    Ok(crate::exit(ok))
}

/// `obscura attest allow`.
fn allow(cluster: &Path, binary: Option<&Path>, roles: Vec<Role>) -> Result<ExitCode, Failure> {
    use obscura_attest::{Allowed, Platform};
    let path = cluster.join(obscura_cluster::attestation::POLICY_FILE);
    let mut policy = obscura_cluster::attestation::load_policy(cluster)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{} has no attestation policy", cluster.display()))?;
    let measurement = match binary {
        Some(b) => obscura_attest::producer::measure_file(b)
            .map_err(|e| format!("{}: {e}", b.display()))?,
        None => obscura_attest::producer::own_measurement()
            .map_err(|e| format!("this executable: {e}"))?,
    };
    let measurement = hex::encode(measurement);
    let roles = if roles.is_empty() {
        vec![Role::Node, Role::Keeper, Role::Worker]
    } else {
        roles
    };
    let mut added = Vec::new();
    for role in &roles {
        let entry = Allowed {
            role: role.name(),
            platform: Platform::Simulation,
            measurement: measurement.clone(),
            require: Default::default(),
        };
        if !policy.measurements.contains(&entry) {
            policy.measurements.push(entry);
            added.push(role.name());
        }
    }
    if added.is_empty() {
        println!(
            "measurement {measurement} is already allowed for {}; policy unchanged (version {})",
            roles.iter().map(Role::name).collect::<Vec<_>>().join(", "),
            policy.version
        );
        return Ok(ExitCode::SUCCESS);
    }
    policy.version += 1;
    obscura_cluster::files::write_atomic(&path, policy.to_json().as_bytes())
        .map_err(|e| e.to_string())?;
    println!(
        "policy version {}: measurement {measurement} allowed for {} (simulation); \
         copy {} to every client of the cluster",
        policy.version,
        added.join(", "),
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::parse_time;

    #[test]
    fn times_parse_as_unix_seconds_dates_or_rfc3339() {
        assert_eq!(parse_time("1750400000"), Ok(1_750_400_000));
        assert_eq!(parse_time("1970-01-01"), Ok(0));
        assert_eq!(parse_time("2025-06-20"), Ok(1_750_377_600));
        assert_eq!(parse_time("2024-02-29T12:00:00Z"), Ok(1_709_208_000));
        for bad in ["2025-13-01", "2025-06-20T12:00:00", "yesterday", "2025-06"] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }
}
