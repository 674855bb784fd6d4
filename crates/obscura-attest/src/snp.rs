//! AMD SEV-SNP: an attestation report signed (ECDSA P-384) by the chip's VCEK or a cloud's
//! VLEK, whose certificate is signed (RSA-PSS) by the ASK or ASVK, itself signed by AMD's root
//! key (ARK) for the processor generation.
//!
//! `sev` checks the signatures. This module adds what a verifier must not forget: the ARK is one
//! we pin (a self-signed ARK proves nothing), every certificate is valid at the injected time,
//! and the VCEK is the one for this chip at this TCB (its hwID and SPL extensions equal the
//! report's CHIP_ID and REPORTED_TCB), so a report from one machine cannot borrow another's key.

use der::Decode;
use sev::certs::snp::{Certificate, Verifiable};
use sev::firmware::guest::AttestationReport;
use sev::parser::ByteParser;
use x509_cert::der::asn1::ObjectIdentifier;

use crate::{Claims, Platform, Refusal, SnpTcb, Tcb};

/// The AMD roots a verifier pins: ARKs, and the intermediates (ASK, ASVK) they signed.
#[derive(Clone)]
pub struct Roots {
    arks: Vec<x509_cert::Certificate>,
    intermediates: Vec<x509_cert::Certificate>,
}

// AMD's ASVK certificates (the VLEK issuers), from AMD's key distribution service. Each is checked
// against `sev`'s pinned ARK of its generation by a test before it can be used.
const ASVK_MILAN: &[u8] = include_bytes!("roots/milan-asvk.pem");
const ASVK_GENOA: &[u8] = include_bytes!("roots/genoa-asvk.pem");
const ASVK_TURIN: &[u8] = include_bytes!("roots/turin-asvk.pem");

impl Roots {
    /// Milan, Genoa and Turin: the ARKs and ASKs `sev` pins, and AMD's ASVKs.
    pub fn production() -> Roots {
        use sev::certs::snp::builtin::{genoa, milan, turin};
        let pem = |bytes: &[u8]| -> x509_cert::Certificate {
            Certificate::from_pem(bytes)
                .expect("a pinned AMD certificate parses")
                .into()
        };
        Roots {
            arks: vec![pem(milan::ARK), pem(genoa::ARK), pem(turin::ARK)],
            intermediates: vec![
                pem(milan::ASK),
                pem(genoa::ASK),
                pem(turin::ASK),
                pem(ASVK_MILAN),
                pem(ASVK_GENOA),
                pem(ASVK_TURIN),
            ],
        }
    }

    /// One processor generation's roots only (`milan`, `genoa` or `turin`).
    pub fn generation(name: &str) -> Option<Roots> {
        let all = Roots::production();
        let index = ["milan", "genoa", "turin"]
            .iter()
            .position(|g| *g == name)?;
        Some(Roots {
            arks: vec![all.arks[index].clone()],
            intermediates: vec![
                all.intermediates[index].clone(),
                all.intermediates[index + 3].clone(),
            ],
        })
    }

    /// Pins exactly these roots (PEM or DER certificates): ARKs, then intermediates.
    ///
    /// # Errors
    /// [`Refusal::Certificate`] when one does not parse.
    pub fn pinned(arks: &[&[u8]], intermediates: &[&[u8]]) -> Result<Roots, Refusal> {
        let parse = |b: &&[u8]| parse_certificate(b);
        Ok(Roots {
            arks: arks.iter().map(parse).collect::<Result<_, _>>()?,
            intermediates: intermediates.iter().map(parse).collect::<Result<_, _>>()?,
        })
    }
}

fn parse_certificate(bytes: &[u8]) -> Result<x509_cert::Certificate, Refusal> {
    let parsed = if bytes.starts_with(b"-----BEGIN") {
        Certificate::from_pem(bytes)
    } else {
        Certificate::from_der(bytes)
    };
    parsed
        .map(Into::into)
        .map_err(|e| Refusal::Certificate(format!("does not parse: {e}")))
}

fn pem_certificates(text: &str) -> Result<Vec<x509_cert::Certificate>, Refusal> {
    text.split_inclusive("-----END CERTIFICATE-----")
        .filter(|part| part.contains("-----BEGIN CERTIFICATE-----"))
        .map(|part| parse_certificate(part.trim().as_bytes()))
        .collect()
}

fn signs(issuer: &x509_cert::Certificate, subject: &x509_cert::Certificate) -> Result<(), Refusal> {
    let issuer = Certificate::from(issuer.clone());
    let subject = Certificate::from(subject.clone());
    (&issuer, &subject).verify().map_err(|e| {
        Refusal::Certificate(format!(
            "{} is not signed by {}: {e}",
            common_name(subject_of(&subject)),
            common_name(subject_of(&issuer))
        ))
    })
}

fn subject_of(c: &Certificate) -> String {
    let c: x509_cert::Certificate = c.clone().into();
    c.tbs_certificate.subject.to_string()
}

fn common_name(name: String) -> String {
    name.split(',')
        .find_map(|part| part.trim().strip_prefix("CN=").map(str::to_owned))
        .unwrap_or(name)
}

fn valid_at(c: &x509_cert::Certificate, now: u64) -> Result<(), Refusal> {
    let v = &c.tbs_certificate.validity;
    let (from, to) = (
        v.not_before.to_unix_duration().as_secs(),
        v.not_after.to_unix_duration().as_secs(),
    );
    if now < from || now > to {
        return Err(Refusal::Expired {
            at: now,
            detail: format!(
                "certificate {} is valid from {from} to {to}",
                common_name(c.tbs_certificate.subject.to_string())
            ),
        });
    }
    Ok(())
}

pub(crate) fn verify(
    roots: &Roots,
    report: &[u8],
    vek: Option<&[u8]>,
    chain: Option<&str>,
    now: u64,
) -> Result<Claims, Refusal> {
    let parsed = AttestationReport::from_bytes(report)
        .map_err(|e| Refusal::Malformed(format!("SEV-SNP report: {e}")))?;
    let vek =
        parse_certificate(vek.ok_or(Refusal::MissingCollateral("VCEK or VLEK certificate"))?)?;
    let offered = match chain {
        Some(text) => pem_certificates(text)?,
        None => Vec::new(),
    };

    // ARK → ASK/ASVK → VEK, with the ARK only ever one of ours. An intermediate offered with the
    // evidence is used only if a pinned ARK signed it.
    let issuer = &vek.tbs_certificate.issuer;
    let mut candidates = offered
        .iter()
        .chain(&roots.intermediates)
        .filter(|c| &c.tbs_certificate.subject == issuer)
        .peekable();
    if candidates.peek().is_none() {
        return Err(Refusal::UntrustedRoot(format!(
            "no pinned or offered certificate for the VEK's issuer {}",
            common_name(issuer.to_string())
        )));
    }
    let mut last = None;
    let mut chain = None;
    for intermediate in candidates {
        let arks: Vec<_> = roots
            .arks
            .iter()
            .filter(|ark| ark.tbs_certificate.subject == intermediate.tbs_certificate.issuer)
            .collect();
        if arks.is_empty() {
            last = Some(Refusal::UntrustedRoot(format!(
                "{} is issued by {}, which is not a pinned ARK",
                common_name(intermediate.tbs_certificate.subject.to_string()),
                common_name(intermediate.tbs_certificate.issuer.to_string())
            )));
            continue;
        }
        for ark in arks {
            match signs(ark, ark).and_then(|()| signs(ark, intermediate)) {
                Ok(()) => {
                    chain = Some((ark, intermediate));
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        if chain.is_some() {
            break;
        }
    }
    let (ark, intermediate) = chain.ok_or_else(|| last.expect("a candidate was tried"))?;
    signs(intermediate, &vek)?;
    for c in [ark, intermediate, &vek] {
        valid_at(c, now)?;
    }

    let vek_for_sev = Certificate::from(vek.clone());
    (&vek_for_sev, &parsed)
        .verify()
        .map_err(|e| Refusal::Signature(e.to_string()))?;

    check_vek_matches(&vek, &parsed)?;

    let tcb = SnpTcb {
        bootloader: parsed.reported_tcb.bootloader,
        tee: parsed.reported_tcb.tee,
        snp: parsed.reported_tcb.snp,
        microcode: parsed.reported_tcb.microcode,
    };
    Ok(Claims {
        platform: Platform::Snp,
        measurement: parsed.measurement.to_vec(),
        signer: (parsed.author_key_digest != [0; 48]).then(|| parsed.author_key_digest.to_vec()),
        debug: parsed.policy.debug_allowed(),
        // Rated against the policy's minimum there (`UpToDate` or refused); `Unrated` without one.
        tcb: Tcb {
            status: "Unrated".into(),
            advisories: Vec::new(),
            version: format!("{tcb}, vmpl {}", parsed.vmpl),
        },
        report_data: parsed.report_data,
        issued_at: None,
        snp_tcb: Some(tcb),
        fields: vec![
            ("host_data", hex::encode(parsed.host_data)),
            ("vmpl", parsed.vmpl.to_string()),
            ("guest_policy", format!("{:#x}", parsed.policy.0)),
        ],
    })
}

// AMD's VCEK certificate extensions (VCEK specification, table "VCEK certificate extensions").
const BL_SPL: &str = "1.3.6.1.4.1.3704.1.3.1";
const TEE_SPL: &str = "1.3.6.1.4.1.3704.1.3.2";
const SNP_SPL: &str = "1.3.6.1.4.1.3704.1.3.3";
const UCODE_SPL: &str = "1.3.6.1.4.1.3704.1.3.8";
const HW_ID: &str = "1.3.6.1.4.1.3704.1.4";

fn extension<'a>(c: &'a x509_cert::Certificate, oid: &str) -> Option<&'a [u8]> {
    let oid = ObjectIdentifier::new_unwrap(oid);
    c.tbs_certificate
        .extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id == oid)
        .map(|e| e.extn_value.as_bytes())
}

fn check_vek_matches(
    vek: &x509_cert::Certificate,
    report: &AttestationReport,
) -> Result<(), Refusal> {
    let is_vlek = common_name(vek.tbs_certificate.subject.to_string()) == "SEV-VLEK";
    if !is_vlek {
        // The hwID is the 64-byte CHIP_ID, bare in older certificates and as an OCTET STRING in
        // newer ones.
        let raw = extension(vek, HW_ID)
            .ok_or_else(|| Refusal::WrongChip("the VCEK has no hwID extension".into()))?;
        let hwid = match der::asn1::OctetString::from_der(raw) {
            Ok(octets) if octets.as_bytes().len() == 64 => octets.as_bytes().to_vec(),
            _ => raw.to_vec(),
        };
        if hwid != report.chip_id {
            return Err(Refusal::WrongChip(
                "the VCEK's hwID is not the report's CHIP_ID".into(),
            ));
        }
    }
    let reported = &report.reported_tcb;
    for (oid, name, value) in [
        (BL_SPL, "bootloader", reported.bootloader),
        (TEE_SPL, "tee", reported.tee),
        (SNP_SPL, "snp", reported.snp),
        (UCODE_SPL, "microcode", reported.microcode),
    ] {
        let raw = extension(vek, oid)
            .ok_or_else(|| Refusal::WrongChip(format!("the VEK has no {name} SPL extension")))?;
        let spl = der::asn1::Int::from_der(raw)
            .ok()
            .and_then(|i| {
                let bytes = i.as_bytes();
                (bytes.len() <= 2).then(|| bytes.iter().fold(0u16, |a, b| a << 8 | u16::from(*b)))
            })
            .ok_or_else(|| Refusal::WrongChip(format!("the VEK's {name} SPL does not parse")))?;
        if spl != u16::from(value) {
            return Err(Refusal::WrongChip(format!(
                "the VEK certifies {name} SPL {spl}, the report says {value}"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real Milan VCEK against the trustee sample's report: another chip, another TCB.
    /// (No real report verifies under another chip's VCEK, so this runs the binding check on
    /// its own; the appraisal refuses such a pair at the signature first.)
    #[test]
    fn a_vcek_whose_hwid_is_another_chips_is_refused() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/testdata/evidence");
        if !dir.is_dir() {
            eprintln!("SKIPPED: {} is absent", dir.display());
            return;
        }
        let vcek =
            parse_certificate(&std::fs::read(dir.join("sev-snp/vcek_milan.der")).unwrap()).unwrap();
        let report = AttestationReport::from_bytes(
            &std::fs::read(dir.join("sev-snp-trustee/test-report.bin")).unwrap(),
        )
        .unwrap();
        let refusal = check_vek_matches(&vcek, &report).unwrap_err();
        assert!(
            matches!(&refusal, Refusal::WrongChip(m) if m.contains("hwID")),
            "{refusal:?}"
        );
        let own =
            parse_certificate(&std::fs::read(dir.join("sev-snp-trustee/test-vcek.der")).unwrap())
                .unwrap();
        check_vek_matches(&own, &report).unwrap();
    }

    #[test]
    fn each_pinned_intermediate_is_signed_by_its_generations_ark() {
        let roots = Roots::production();
        for intermediate in &roots.intermediates {
            let ark = roots
                .arks
                .iter()
                .find(|a| a.tbs_certificate.subject == intermediate.tbs_certificate.issuer)
                .expect("an ARK for each intermediate");
            signs(ark, ark).unwrap();
            signs(ark, intermediate).unwrap();
        }
    }
}
