//! Intel SGX and TDX: ECDSA DCAP quotes (v3, v4, v5) checked with their collateral by `dcap-qvl`
//! — the quote's signature under the attestation key, the QE report under the PCK, the PCK chain
//! and CRLs up to the pinned Intel root, the signed TCB info and QE identity, their validity at
//! the injected time, and the TCB level. What this module adds is the typed refusal, the
//! measurement and the claims the policy reads.

use dcap_qvl::quote::{Quote, Report};
use dcap_qvl::QuoteCollateralV3;

use crate::{Claims, Platform, Refusal, Tcb};

/// The root a DCAP chain must end at.
#[derive(Clone, Debug)]
pub enum IntelRoot {
    /// Intel's SGX Root CA, as `dcap-qvl` pins it.
    Production,
    /// Another root (DER): a private PKI, or a test's.
    Other(Vec<u8>),
}

/// Passes every claim through, so that this crate's [`crate::Policy`] decides, with typed
/// refusals. The cryptographic checks run before any policy in `dcap-qvl`.
struct PolicyDecidesLater;

impl dcap_qvl::Policy for PolicyDecidesLater {
    fn validate(&self, _: &dcap_qvl::QuoteClaims) -> anyhow::Result<()> {
        Ok(())
    }
}

pub(crate) fn verify(
    root: &IntelRoot,
    platform: Platform,
    quote: &[u8],
    collateral: Option<&QuoteCollateralV3>,
    now: u64,
) -> Result<Claims, Refusal> {
    let parsed = Quote::parse(quote).map_err(|e| Refusal::Malformed(format!("quote: {e:#}")))?;
    let is_sgx = matches!(parsed.report, Report::SgxEnclave(_));
    if is_sgx != (platform == Platform::Sgx) {
        return Err(Refusal::Malformed(format!(
            "the evidence says {platform}, the quote is {}",
            if is_sgx { "SGX" } else { "TDX" }
        )));
    }
    let collateral = collateral.ok_or(Refusal::MissingCollateral("DCAP collateral"))?;
    // Debug is the policy's decision (with its own refusal), not the library's.
    let verifier = match root {
        IntelRoot::Production => dcap_qvl::verify::QuoteVerifier::new_prod(),
        IntelRoot::Other(der) => dcap_qvl::verify::QuoteVerifier::new(der.clone()),
    };
    let claims = verifier
        .allow_debug(true)
        .verify_with_policy(quote, collateral.clone(), now, &PolicyDecidesLater)
        .map_err(|e| classify(&e, now))?;
    let tcb = Tcb {
        status: format!("{:?}", claims.tcb.status),
        advisories: claims.tcb.advisory_ids.clone(),
        version: format!(
            "cpusvn {} pcesvn {}",
            hex::encode(claims.platform.pck.cpu_svn),
            claims.platform.pck.pce_svn
        ),
    };
    let issued_at = Some(claims.earliest_issue_date);
    Ok(match &claims.report {
        Report::SgxEnclave(report) => Claims {
            platform,
            measurement: report.mr_enclave.to_vec(),
            signer: Some(report.mr_signer.to_vec()),
            // SGX ATTRIBUTES.DEBUG is bit 1 of the flags.
            debug: report.attributes[0] & 0x02 != 0,
            tcb,
            report_data: report.report_data,
            issued_at,
            snp_tcb: None,
            fields: vec![
                ("isv_prod_id", report.isv_prod_id.to_string()),
                ("isv_svn", report.isv_svn.to_string()),
            ],
        },
        report => {
            let td = report
                .as_td10()
                .ok_or_else(|| Refusal::Malformed("a TDX quote without a TD report".into()))?;
            Claims {
                platform,
                measurement: td.mr_td.to_vec(),
                signer: None,
                // TD_ATTRIBUTES.TUD (the first byte): DEBUG is bit 0, and bits 4–6 enable
                // profiling; any bit of it puts the TD outside the TCB.
                debug: td.td_attributes[0] != 0,
                tcb,
                report_data: td.report_data,
                issued_at,
                snp_tcb: None,
                fields: vec![
                    ("rtmr0", hex::encode(td.rt_mr0)),
                    ("rtmr1", hex::encode(td.rt_mr1)),
                    ("rtmr2", hex::encode(td.rt_mr2)),
                    ("rtmr3", hex::encode(td.rt_mr3)),
                    ("mr_config_id", hex::encode(td.mr_config_id)),
                    ("mr_owner", hex::encode(td.mr_owner)),
                    ("mr_owner_config", hex::encode(td.mr_owner_config)),
                ],
            }
        }
    })
}

/// Maps `dcap-qvl`'s error chain to a refusal. The library's errors are text; each phrase matched
/// here is pinned by a test on real evidence (`tests/real_evidence.rs`), so an upgrade that
/// rewords one fails there rather than here.
fn classify(error: &anyhow::Error, now: u64) -> Refusal {
    let text = format!("{error:#}");
    let has = |s: &str| text.contains(s);
    if has("report signature is invalid")
        || has("Signature is invalid for qe_report")
        || has("QE report hash mismatch")
    {
        Refusal::Signature(text)
    } else if has("UnknownIssuer") || (has("root CA CRL") && has("Signature")) {
        Refusal::UntrustedRoot(text)
    } else if has("expired") || has("Expired") || has("in the future") || has("NotValidYet") {
        Refusal::Expired {
            at: now,
            detail: text,
        }
    } else if has("Failed to verify certificate chain") || has("certificate") && has("parse") {
        Refusal::Certificate(text)
    } else if has("Signature is invalid for tcb_info")
        || has("Signature is invalid for qe_identity")
    {
        Refusal::Collateral(text)
    } else if has("Revoked") {
        Refusal::Revoked
    } else if has("No matching TCB level") {
        Refusal::TcbUnknown(text)
    } else {
        Refusal::Invalid(text)
    }
}
