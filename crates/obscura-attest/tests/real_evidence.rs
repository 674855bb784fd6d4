//! Every real evidence file in `../shared/testdata/evidence` (SGX and TDX DCAP quotes with their
//! collateral, SEV-SNP reports with VCEK and VLEK), accepted under a policy naming its
//! measurement, and refused — each with its own refusal — once altered, replayed, expired,
//! chained to another root, or appraised under a policy that forbids it.
//!
//! The files are public test data kept outside the repository; where they are absent (a user's
//! clone), each test says so on stderr and passes without checking anything.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use obscura_attest::{snp, Evidence, Policy, Refusal, Role, Verifier};

fn evidence_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata/evidence");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "SKIPPED: {} is absent, so no real evidence was checked",
            dir.display()
        );
        None
    }
}

/// One real evidence file and the time its collateral and certificates are valid at.
struct Case {
    name: &'static str,
    evidence: Evidence,
    now: u64,
    /// Where to flip a bit in the signed body, and in the signature.
    body_at: usize,
    signature_at: usize,
    /// The policy's TCB section that accepts it.
    tcb: &'static str,
}

// 2025-06-20, inside the SGX, TDX and SNP samples' validity windows.
const JUNE_2025: u64 = 1_750_400_000;

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn dcap(dir: &Path, quote: &str, collateral: &str, tdx: bool) -> Evidence {
    let quote = read(dir, quote);
    let collateral = Some(Box::new(
        serde_json::from_slice(&read(dir, collateral)).unwrap(),
    ));
    if tdx {
        Evidence::Tdx { quote, collateral }
    } else {
        Evidence::Sgx { quote, collateral }
    }
}

fn snp_evidence(dir: &Path, report: &[u8], vek: &str, chain: Option<&str>) -> Evidence {
    Evidence::Snp {
        report: report.to_vec(),
        vek: Some(read(dir, vek)),
        chain: chain.map(|c| String::from_utf8(read(dir, c)).unwrap()),
    }
}

fn milan_report(dir: &Path) -> Vec<u8> {
    hex::decode(
        String::from_utf8(read(dir, "sev-snp/report_milan.hex"))
            .unwrap()
            .trim(),
    )
    .unwrap()
}

fn cases(dir: &Path) -> Vec<Case> {
    vec![
        Case {
            name: "sgx-dcap/sgx_quote",
            evidence: dcap(
                dir,
                "sgx-dcap/sgx_quote",
                "sgx-dcap/sgx_quote_collateral.json",
                false,
            ),
            now: JUNE_2025,
            // MRENCLAVE (report body at 48, MRENCLAVE at +64); the ECDSA signature at 436.
            body_at: 48 + 64,
            signature_at: 436 + 10,
            tcb: r#"{"accept": ["ConfigurationAndSWHardeningNeeded"],
                     "accept_advisories": ["INTEL-SA-00289", "INTEL-SA-00615"]}"#,
        },
        Case {
            name: "tdx-dcap/tdx_quote",
            evidence: dcap(
                dir,
                "tdx-dcap/tdx_quote",
                "tdx-dcap/tdx_quote_collateral.json",
                true,
            ),
            now: JUNE_2025,
            // MR_SEAM in the TD report; the signature after the 584-byte TD report and length.
            body_at: 48 + 64,
            signature_at: 48 + 584 + 4 + 10,
            tcb: r#"{"accept": ["UpToDate"]}"#,
        },
        Case {
            name: "sev-snp/report_milan.hex (VCEK, chain from the file)",
            evidence: snp_evidence(
                dir,
                &milan_report(dir),
                "sev-snp/vcek_milan.der",
                Some("sev-snp/cert_chain_milan"),
            ),
            now: JUNE_2025,
            // MEASUREMENT at 0x90; the signature at 0x2A0.
            body_at: 0x90,
            signature_at: 0x2A0 + 5,
            tcb: r#"{"snp_minimum": {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115}}"#,
        },
        Case {
            name: "sev-snp-trustee/test-report.bin (VCEK, pinned chain)",
            evidence: snp_evidence(
                dir,
                &read(dir, "sev-snp-trustee/test-report.bin"),
                "sev-snp-trustee/test-vcek.der",
                None,
            ),
            now: JUNE_2025,
            body_at: 0x90,
            signature_at: 0x2A0 + 5,
            tcb: r#"{"snp_minimum": {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115}}"#,
        },
        Case {
            name: "sev-snp-trustee/test-vlek-report.bin (VLEK, pinned ASVK)",
            evidence: snp_evidence(
                dir,
                &read(dir, "sev-snp-trustee/test-vlek-report.bin"),
                "sev-snp-trustee/test-vlek.der",
                None,
            ),
            now: JUNE_2025,
            body_at: 0x90,
            signature_at: 0x2A0 + 5,
            tcb: r#"{"snp_minimum": {"bootloader": 4, "tee": 0, "snp": 24, "microcode": 217}}"#,
        },
    ]
}

/// The measurement the platform checks found, under a policy that lists none.
fn measurement_of(case: &Case) -> String {
    let empty = Policy::from_json(r#"{"version": 1, "name": "empty"}"#).unwrap();
    let loose = Policy {
        tcb: serde_json::from_str(case.tcb).unwrap(),
        ..empty
    };
    match Verifier::new().inspect(&case.evidence, &loose, Some(&Role::Node), case.now) {
        Err(Refusal::Measurement { measurement, .. }) => measurement,
        other => panic!(
            "{}: expected a measurement refusal, got {other:?}",
            case.name
        ),
    }
}

fn policy_for(case: &Case, role: &str, measurement: &str) -> Policy {
    let platform = case.evidence.platform();
    Policy::from_json(&format!(
        r#"{{"version": 7, "name": "test", "tcb": {},
            "measurements": [{{"role": "{role}", "platform": "{platform}", "measurement": "{measurement}"}}]}}"#,
        case.tcb
    ))
    .unwrap()
}

fn report_data_of(case: &Case, policy: &Policy) -> [u8; 64] {
    let inspection = Verifier::new()
        .inspect(&case.evidence, policy, Some(&Role::Node), case.now)
        .unwrap_or_else(|e| panic!("{}: {e}", case.name));
    inspection.details().report_data().try_into().unwrap()
}

/// Runs `check` on every case, with an accepting policy and the evidence's own report data.
fn each_case(check: impl Fn(&Case, &Policy, &[u8; 64])) {
    let Some(dir) = evidence_dir() else { return };
    for case in cases(&dir) {
        let policy = policy_for(&case, "node", &measurement_of(&case));
        let data = report_data_of(&case, &policy);
        check(&case, &policy, &data);
    }
}

fn appraise(
    case: &Case,
    evidence: &Evidence,
    policy: &Policy,
    data: &[u8; 64],
) -> Result<(), Refusal> {
    Verifier::new()
        .appraise(evidence, policy, &Role::Node, data, case.now)
        .map(|_| ())
}

fn flip(evidence: &Evidence, at: usize) -> Evidence {
    let mut evidence = evidence.clone();
    match &mut evidence {
        Evidence::Sgx { quote, .. } | Evidence::Tdx { quote, .. } => quote[at] ^= 0x01,
        Evidence::Snp { report, .. } => report[at] ^= 0x01,
        Evidence::Simulation(_) => unreachable!(),
    }
    evidence
}

#[test]
fn each_real_file_is_accepted_under_a_policy_naming_its_measurement() {
    each_case(|case, policy, data| {
        let appraisal = Verifier::new()
            .appraise(&case.evidence, policy, &Role::Node, data, case.now)
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert_eq!(appraisal.platform(), case.evidence.platform());
        assert!(!appraisal.debug(), "{}", case.name);
        assert_eq!(appraisal.policy(), ("test", 7));
        eprintln!("accepted {}: {}", case.name, appraisal.summary());
    });
}

#[test]
fn a_flipped_bit_in_the_body_is_refused_as_a_bad_signature() {
    each_case(|case, policy, data| {
        let refusal =
            appraise(case, &flip(&case.evidence, case.body_at), policy, data).unwrap_err();
        assert!(
            matches!(refusal, Refusal::Signature(_)),
            "{}: {refusal:?}",
            case.name
        );
    });
}

#[test]
fn a_flipped_bit_in_the_signature_is_refused_as_a_bad_signature() {
    each_case(|case, policy, data| {
        let refusal =
            appraise(case, &flip(&case.evidence, case.signature_at), policy, data).unwrap_err();
        assert!(
            matches!(refusal, Refusal::Signature(_)),
            "{}: {refusal:?}",
            case.name
        );
    });
}

/// Flips a bit near the end (in the signature) of the first PEM certificate in `bytes`.
fn flip_in_first_pem_certificate(bytes: &[u8]) -> Vec<u8> {
    let (begin, end) = (b"-----BEGIN CERTIFICATE-----", b"-----END CERTIFICATE-----");
    let start = bytes.windows(begin.len()).position(|w| w == begin).unwrap();
    let stop = start
        + bytes[start..]
            .windows(end.len())
            .position(|w| w == end)
            .unwrap()
        + end.len();
    let pem = std::str::from_utf8(&bytes[start..stop]).unwrap();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut der = b64.decode(body).unwrap();
    let n = der.len();
    der[n - 5] ^= 0x01;
    let encoded = b64.encode(der);
    let mut replaced = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in encoded.as_bytes().chunks(64) {
        replaced.push_str(std::str::from_utf8(line).unwrap());
        replaced.push('\n');
    }
    replaced.push_str("-----END CERTIFICATE-----");
    assert_eq!(
        replaced.len(),
        stop - start,
        "the re-encoding keeps the quote's layout"
    );
    [&bytes[..start], replaced.as_bytes(), &bytes[stop..]].concat()
}

#[test]
fn a_flipped_bit_in_a_certificate_is_refused_as_a_bad_certificate() {
    each_case(|case, policy, data| {
        let mut evidence = case.evidence.clone();
        match &mut evidence {
            // The PCK certificate, first in the quote's certification data.
            Evidence::Sgx { quote, .. } | Evidence::Tdx { quote, .. } => {
                *quote = flip_in_first_pem_certificate(quote)
            }
            // The VCEK's or VLEK's signature.
            Evidence::Snp { vek, .. } => {
                let vek = vek.as_mut().unwrap();
                let n = vek.len();
                vek[n - 5] ^= 0x01;
            }
            Evidence::Simulation(_) => unreachable!(),
        }
        let refusal = appraise(case, &evidence, policy, data).unwrap_err();
        assert!(
            matches!(refusal, Refusal::Certificate(_)),
            "{}: {refusal:?}",
            case.name
        );
    });
}

#[test]
fn a_chain_to_another_root_is_refused() {
    let other_intel_root = {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().der().to_vec()
    };
    // A verifier that pins only Genoa: every sample is Milan.
    let genoa_only = snp::Roots::generation("genoa").unwrap();
    each_case(|case, policy, data| {
        let verifier = Verifier::new()
            .with_intel_root(other_intel_root.clone())
            .with_amd_roots(genoa_only.clone());
        let refusal = verifier
            .appraise(&case.evidence, policy, &Role::Node, data, case.now)
            .unwrap_err();
        assert!(
            matches!(refusal, Refusal::UntrustedRoot(_)),
            "{}: {refusal:?}",
            case.name
        );
    });
}

#[test]
fn collateral_or_certificates_expired_at_the_injected_time_are_refused() {
    each_case(|case, policy, data| {
        // DCAP collateral lives a month; the VCEKs seven years, the VLEK one.
        let later = case.now + 8 * 365 * 24 * 3600;
        let refusal = Verifier::new()
            .appraise(&case.evidence, policy, &Role::Node, data, later)
            .unwrap_err();
        assert!(
            matches!(refusal, Refusal::Expired { .. }),
            "{}: {refusal:?}",
            case.name
        );
        // Before the collateral was issued, too.
        let refusal = Verifier::new()
            .appraise(&case.evidence, policy, &Role::Node, data, 1_600_000_000)
            .unwrap_err();
        assert!(
            matches!(refusal, Refusal::Expired { .. }),
            "{}: {refusal:?}",
            case.name
        );
    });
}

#[test]
fn the_real_vlek_is_expired_today_and_valid_at_its_time() {
    let Some(dir) = evidence_dir() else { return };
    let case = cases(&dir).remove(4);
    let policy = policy_for(&case, "node", &measurement_of(&case));
    let data = report_data_of(&case, &policy);
    // 2026-12-01: the VLEK's year ran out on 2025-12-10.
    let refusal = Verifier::new()
        .appraise(&case.evidence, &policy, &Role::Node, &data, 1_796_083_200)
        .unwrap_err();
    assert!(matches!(refusal, Refusal::Expired { .. }), "{refusal:?}");
}

#[test]
fn an_out_of_date_tcb_is_refused_where_the_policy_forbids_it() {
    each_case(|case, _, data| {
        let strict = Policy::from_json(&format!(
            r#"{{"version": 1, "name": "strict",
                "tcb": {{"snp_minimum": {{"bootloader": 9, "tee": 0, "snp": 30, "microcode": 220}}}},
                "measurements": [{{"role": "*", "platform": "{}", "measurement": "{}"}}]}}"#,
            case.evidence.platform(),
            measurement_of(case)
        ))
        .unwrap();
        let refusal = appraise(case, &case.evidence, &strict, data);
        match case.evidence.platform() {
            // The SGX sample needs configuration and software hardening, with two advisories:
            // refused under a policy that accepts only UpToDate.
            obscura_attest::Platform::Sgx => assert!(
                matches!(&refusal, Err(Refusal::Tcb { status, advisories })
                    if status == "ConfigurationAndSWHardeningNeeded" && advisories.len() == 2),
                "{refusal:?}"
            ),
            // The TDX sample is up to date: accepted even by the strict policy.
            obscura_attest::Platform::Tdx => assert!(refusal.is_ok(), "{refusal:?}"),
            _ => assert!(
                matches!(refusal, Err(Refusal::TcbBelowMinimum { .. })),
                "{refusal:?}"
            ),
        }
    });
}

#[test]
fn the_out_of_date_tdx_sample_is_refused_whatever_the_policy_accepts() {
    let Some(dir) = evidence_dir() else { return };
    let evidence = dcap(
        &dir,
        "tdx-dcap/tdx_quote_outdated",
        "tdx-dcap/tdx_quote_outdated_collateral.json",
        true,
    );
    let everything = Policy::from_json(
        r#"{"version": 1, "name": "everything", "allow_debug": true,
            "tcb": {"accept": ["UpToDate", "OutOfDate", "OutOfDateConfigurationNeeded",
                               "SWHardeningNeeded", "ConfigurationNeeded",
                               "ConfigurationAndSWHardeningNeeded"]}}"#,
    )
    .unwrap();
    // 2026-02-19, inside its collateral's window: its TDX module is older than every level
    // Intel's TCB info lists, so there is no status to accept.
    let refusal = Verifier::new()
        .inspect(&evidence, &everything, None, 1_771_500_000)
        .unwrap_err();
    assert!(matches!(refusal, Refusal::TcbUnknown(_)), "{refusal:?}");
}

#[test]
fn a_debug_bit_set_after_signing_is_a_forgery_not_a_debug_guest() {
    // No real sample is a debug guest. Setting SNP's POLICY.DEBUG (bit 19, byte 0x0A bit 3)
    // in a signed report must fail the signature, not be read as debug.
    each_case(|case, policy, data| {
        let Evidence::Snp { report, vek, chain } = &case.evidence else {
            return;
        };
        let mut report = report.clone();
        report[0x0A] |= 0x08;
        let forged = Evidence::Snp {
            report,
            vek: vek.clone(),
            chain: chain.clone(),
        };
        let refusal = appraise(case, &forged, policy, data).unwrap_err();
        assert!(
            matches!(refusal, Refusal::Signature(_)),
            "{}: {refusal:?}",
            case.name
        );
    });
}

#[test]
fn a_wrong_measurement_is_refused() {
    each_case(|case, _, data| {
        let other = "ab".repeat(measurement_of(case).len() / 2);
        let refusal = appraise(
            case,
            &case.evidence,
            &policy_for(case, "node", &other),
            data,
        )
        .unwrap_err();
        assert!(
            matches!(refusal, Refusal::Measurement { .. }),
            "{}: {refusal:?}",
            case.name
        );
    });
}

#[test]
fn a_measurement_allowed_for_another_role_is_refused() {
    each_case(|case, _, data| {
        let keeper_only = policy_for(case, "keeper", &measurement_of(case));
        let refusal = appraise(case, &case.evidence, &keeper_only, data).unwrap_err();
        assert!(
            matches!(refusal, Refusal::Measurement { .. }),
            "{}: {refusal:?}",
            case.name
        );
    });
}

#[test]
fn wrong_report_data_is_refused() {
    each_case(|case, policy, data| {
        let mut other = *data;
        other[63] ^= 0x01;
        let refusal = appraise(case, &case.evidence, policy, &other).unwrap_err();
        assert_eq!(refusal, Refusal::ReportData, "{}", case.name);
    });
}

#[test]
fn a_vcek_of_another_chip_is_refused() {
    let Some(dir) = evidence_dir() else { return };
    let report = read(&dir, "sev-snp-trustee/test-report.bin");
    let open = Policy::from_json(r#"{"version": 1, "name": "open"}"#).unwrap();
    // The Milan sample's VCEK is AMD's, for another chip: its signature chain holds, the
    // report's signature does not.
    let borrowed = snp_evidence(&dir, &report, "sev-snp/vcek_milan.der", None);
    let refusal = Verifier::new()
        .inspect(&borrowed, &open, None, JUNE_2025)
        .unwrap_err();
    assert!(matches!(refusal, Refusal::Signature(_)), "{refusal:?}");
    // The two test VCEKs that AMD did not sign are refused at the certificate.
    for vek in [
        "sev-snp-trustee/test-vcek-invalid-legacy.der",
        "sev-snp-trustee/test-vcek-invalid-new.der",
    ] {
        let refusal = Verifier::new()
            .inspect(
                &snp_evidence(&dir, &report, vek, None),
                &open,
                None,
                JUNE_2025,
            )
            .unwrap_err();
        assert!(
            matches!(refusal, Refusal::Certificate(_)),
            "{vek}: {refusal:?}"
        );
    }
}

#[test]
fn evidence_without_collateral_is_refused_until_it_is_attached() {
    let Some(dir) = evidence_dir() else { return };
    let open = Policy::from_json(r#"{"version": 1, "name": "open"}"#).unwrap();
    let quote = read(&dir, "tdx-dcap/trustee_tdx_quote_4.dat");
    let refusal = Verifier::new()
        .inspect(
            &Evidence::Tdx {
                quote,
                collateral: None,
            },
            &open,
            None,
            JUNE_2025,
        )
        .unwrap_err();
    assert_eq!(refusal, Refusal::MissingCollateral("DCAP collateral"));
    let refusal = Verifier::new()
        .inspect(
            &Evidence::Snp {
                report: milan_report(&dir),
                vek: None,
                chain: None,
            },
            &open,
            None,
            JUNE_2025,
        )
        .unwrap_err();
    assert!(
        matches!(refusal, Refusal::MissingCollateral(_)),
        "{refusal:?}"
    );
}

#[test]
fn a_quote_presented_as_another_platform_is_refused() {
    let Some(dir) = evidence_dir() else { return };
    let open = Policy::from_json(r#"{"version": 1, "name": "open"}"#).unwrap();
    let Evidence::Sgx { quote, collateral } = dcap(
        &dir,
        "sgx-dcap/sgx_quote",
        "sgx-dcap/sgx_quote_collateral.json",
        false,
    ) else {
        unreachable!()
    };
    let refusal = Verifier::new()
        .inspect(&Evidence::Tdx { quote, collateral }, &open, None, JUNE_2025)
        .unwrap_err();
    assert!(matches!(refusal, Refusal::Malformed(_)), "{refusal:?}");
}

#[test]
fn evidence_survives_its_json_form() {
    each_case(|case, policy, data| {
        let again = Evidence::from_json(&case.evidence.to_json()).unwrap();
        appraise(case, &again, policy, data).unwrap_or_else(|e| panic!("{}: {e}", case.name));
    });
}

#[test]
fn a_field_the_policy_requires_must_hold_its_value() {
    each_case(|case, _, data| {
        let field = match case.evidence.platform() {
            // MRTD covers only the TD firmware: the kernel and application are in the RTMRs.
            obscura_attest::Platform::Tdx => "rtmr0",
            obscura_attest::Platform::Snp => "vmpl",
            obscura_attest::Platform::Sgx => "isv_svn",
            obscura_attest::Platform::Simulation => unreachable!(),
        };
        let measurement = measurement_of(case);
        let require = |value: &str| {
            let mut policy = policy_for(case, "node", &measurement);
            policy.measurements[0]
                .require
                .insert(field.to_owned(), value.to_owned());
            policy
        };
        let appraisal = Verifier::new()
            .appraise(
                &case.evidence,
                &policy_for(case, "node", &measurement),
                &Role::Node,
                data,
                case.now,
            )
            .unwrap();
        let actual = appraisal.fields()[field].clone();
        appraise(case, &case.evidence, &require(&actual), data)
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let refusal = appraise(case, &case.evidence, &require("1234"), data).unwrap_err();
        assert!(
            matches!(&refusal, Refusal::Field { field: f, found, .. } if f == field && *found == actual),
            "{}: {refusal:?}",
            case.name
        );
    });
}

#[test]
fn an_snp_tcb_is_rated_only_against_a_policy_minimum() {
    let Some(dir) = evidence_dir() else { return };
    let case = cases(&dir).remove(2);
    let open = Policy::from_json(r#"{"version": 1, "name": "open"}"#).unwrap();
    let unrated = Verifier::new()
        .inspect(&case.evidence, &open, None, case.now)
        .unwrap();
    assert_eq!(unrated.details().tcb().status, "Unrated");
    let policy = policy_for(&case, "node", &measurement_of(&case));
    let rated = Verifier::new()
        .inspect(&case.evidence, &policy, None, case.now)
        .unwrap();
    assert_eq!(rated.details().tcb().status, "UpToDate");
}
