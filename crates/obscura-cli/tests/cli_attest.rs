//! `obscura attest verify` on real evidence, as a user runs it: accepted under a policy naming
//! the measurement, refused with the reason when the file is altered or too old. Reads
//! `../shared/testdata/evidence` and says so when it is absent.

mod common;

use common::{obscura, text};

fn evidence() -> Option<std::path::PathBuf> {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata/evidence");
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

#[test]
fn attest_verify_accepts_a_real_tdx_quote_under_its_policy_and_refuses_it_altered() {
    let Some(dir) = evidence() else { return };
    let quote = dir.join("tdx-dcap/tdx_quote");
    let collateral = dir.join("tdx-dcap/tdx_quote_collateral.json");
    let (q, c) = (quote.to_str().unwrap(), collateral.to_str().unwrap());

    // Without a policy: platform checks pass, the measurement is unchecked, exit 1.
    let out = obscura(&[
        "attest",
        "verify",
        q,
        "--collateral",
        c,
        "--at",
        "2025-06-20",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let measurement = v["appraisal"]["measurement"].as_str().unwrap().to_owned();
    assert_eq!(v["appraisal"]["tcb"]["status"], "UpToDate");

    let tmp = std::env::temp_dir().join(format!("obscura-attest-cli-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let policy = tmp.join("policy.json");
    std::fs::write(
        &policy,
        format!(r#"{{"version": 4, "name": "tdx nodes", "measurements": [{{"role": "node", "platform": "tdx", "measurement": "{measurement}"}}]}}"#),
    )
    .unwrap();
    let p = policy.to_str().unwrap();
    let out = obscura(&[
        "attest",
        "verify",
        q,
        "--collateral",
        c,
        "--policy",
        p,
        "--role",
        "node",
        "--at",
        "2025-06-20",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("accepted: tdx evidence"),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("allowed for  node"), "{}", text(&out));

    // As a keeper: refused, naming the measurement.
    let out = obscura(&[
        "attest",
        "verify",
        q,
        "--collateral",
        c,
        "--policy",
        p,
        "--role",
        "keeper",
        "--at",
        "2025-06-20",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("is not allowed for role keeper"),
        "{}",
        text(&out)
    );

    // A month and more later, the collateral has expired.
    let out = obscura(&[
        "attest",
        "verify",
        q,
        "--collateral",
        c,
        "--policy",
        p,
        "--at",
        "2025-09-01",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("not valid at"), "{}", text(&out));

    // One bit of the TD report altered.
    let mut bytes = std::fs::read(&quote).unwrap();
    bytes[200] ^= 1;
    let altered = tmp.join("altered");
    std::fs::write(&altered, bytes).unwrap();
    let out = obscura(&[
        "attest",
        "verify",
        altered.to_str().unwrap(),
        "--collateral",
        c,
        "--policy",
        p,
        "--at",
        "2025-06-20",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("signature does not verify"),
        "{}",
        text(&out)
    );
    std::fs::remove_dir_all(&tmp).ok();
}

#[test]
fn attest_verify_says_what_a_file_is_not() {
    let tmp = std::env::temp_dir().join(format!("obscura-attest-junk-{}", std::process::id()));
    std::fs::write(&tmp, b"not evidence at all").unwrap();
    let out = obscura(&["attest", "verify", tmp.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("not a DCAP quote"), "{}", text(&out));
    std::fs::remove_file(&tmp).ok();
}
