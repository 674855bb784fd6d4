//! Hardware producers against a fake filesystem root laid out as the kernel (configfs-tsm) and
//! Gramine (`/dev/attestation`) lay theirs out. No hardware is used or claimed.

use obscura_attest::producer::{ConfigfsTsm, Gramine, ProduceError, Producer, SevGuest};
use obscura_attest::{Evidence, Platform};

fn fake_tsm_entry(provider: &str, outblob: &[u8], auxblob: Option<&[u8]>) -> tempdir::Dir {
    let dir = tempdir::Dir::new();
    let entry = dir.path().join("obscura");
    std::fs::create_dir(&entry).unwrap();
    for (name, bytes) in [
        ("provider", format!("{provider}\n").into_bytes()),
        ("outblob", outblob.to_vec()),
        ("generation", b"1\n".to_vec()),
        ("inblob", Vec::new()),
    ] {
        std::fs::write(entry.join(name), bytes).unwrap();
    }
    if let Some(aux) = auxblob {
        std::fs::write(entry.join("auxblob"), aux).unwrap();
    }
    dir
}

mod tempdir {
    pub struct Dir(std::path::PathBuf);
    impl Dir {
        pub fn new() -> Dir {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let p = std::env::temp_dir().join(format!(
                "obscura-attest-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
        pub fn path(&self) -> &std::path::Path {
            &self.0
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[test]
fn configfs_tsm_writes_the_report_data_and_returns_a_tdx_quote() {
    let dir = fake_tsm_entry("tdx_guest", b"a TDX quote", None);
    let tsm = ConfigfsTsm::at(dir.path(), "obscura");
    assert_eq!(tsm.platform(), Platform::Tdx);
    let evidence = tsm.evidence(&[7; 64], 0).unwrap();
    assert_eq!(
        std::fs::read(dir.path().join("obscura/inblob")).unwrap(),
        [7; 64]
    );
    let Evidence::Tdx { quote, collateral } = evidence else {
        panic!("not TDX")
    };
    assert_eq!(quote, b"a TDX quote");
    assert!(
        collateral.is_none(),
        "collateral comes from a PCCS, not the guest"
    );
}

#[test]
fn configfs_tsm_on_snp_takes_the_vcek_from_the_certificate_table() {
    // One VCEK entry (GUID 63da758d-e664-4564-adc5-f4b93be8accd), then the all-zero terminator.
    let mut table = Vec::new();
    table.extend_from_slice(&[
        0x8d, 0x75, 0xda, 0x63, 0x64, 0xe6, 0x64, 0x45, 0xad, 0xc5, 0xf4, 0xb9, 0x3b, 0xe8, 0xac,
        0xcd,
    ]);
    table.extend_from_slice(&48u32.to_le_bytes());
    table.extend_from_slice(&4u32.to_le_bytes());
    table.extend_from_slice(&[0; 24]);
    table.extend_from_slice(b"VCEK");
    let dir = fake_tsm_entry("sev_guest", b"an SNP report", Some(&table));
    let tsm = ConfigfsTsm::at(dir.path(), "obscura");
    assert_eq!(tsm.platform(), Platform::Snp);
    let Evidence::Snp { report, vek, .. } = tsm.evidence(&[1; 64], 0).unwrap() else {
        panic!("not SNP")
    };
    assert_eq!(report, b"an SNP report");
    assert_eq!(vek.as_deref(), Some(&b"VCEK"[..]));
}

#[test]
fn configfs_tsm_with_an_unknown_provider_or_no_entry_says_so() {
    let dir = fake_tsm_entry("arm_cca_guest", b"x", None);
    let err = ConfigfsTsm::at(dir.path(), "obscura")
        .evidence(&[0; 64], 0)
        .unwrap_err();
    assert!(
        matches!(err, ProduceError::Unexpected(ref m) if m.contains("arm_cca_guest")),
        "{err}"
    );
    let missing = ConfigfsTsm::at(&dir.path().join("no-such-root"), "obscura")
        .evidence(&[0; 64], 0)
        .unwrap_err();
    assert!(
        matches!(missing, ProduceError::Unavailable { .. }),
        "{missing}"
    );
}

#[test]
fn gramine_writes_user_report_data_and_reads_the_quote() {
    let dir = tempdir::Dir::new();
    std::fs::write(dir.path().join("attestation_type"), "dcap").unwrap();
    std::fs::write(dir.path().join("user_report_data"), [0; 64]).unwrap();
    std::fs::write(dir.path().join("quote"), b"an SGX quote").unwrap();
    let gramine = Gramine::at(dir.path());
    let Evidence::Sgx { quote, .. } = gramine.evidence(&[9; 64], 0).unwrap() else {
        panic!("not SGX")
    };
    assert_eq!(quote, b"an SGX quote");
    assert_eq!(
        std::fs::read(dir.path().join("user_report_data")).unwrap(),
        [9; 64]
    );
    std::fs::write(dir.path().join("attestation_type"), "epid").unwrap();
    assert!(gramine.evidence(&[9; 64], 0).is_err());
}

#[test]
fn sev_guest_without_the_device_says_it_is_unavailable() {
    if std::path::Path::new("/dev/sev-guest").exists() {
        eprintln!(
            "SKIPPED: this machine has /dev/sev-guest; the absent-device path is not checked"
        );
        return;
    }
    let err = SevGuest.evidence(&[0; 64], 0).unwrap_err();
    assert!(matches!(err, ProduceError::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains("/dev/sev-guest"));
    let err = SevGuest.sealing_key(b"token shares").unwrap_err();
    assert!(matches!(err, ProduceError::Unavailable { .. }), "{err}");
}

#[test]
fn gramine_sealing_keys_follow_the_enclave_key_and_the_purpose() {
    let dir = tempdir::Dir::new();
    let gramine = Gramine::at(dir.path());
    // No key file: the interface is absent, and said so.
    assert!(matches!(
        gramine.sealing_key(b"token shares"),
        Err(ProduceError::Unavailable { .. })
    ));
    std::fs::create_dir(dir.path().join("keys")).unwrap();
    let key_file = dir.path().join("keys/_sgx_mrenclave");
    std::fs::write(&key_file, [1u8; 16]).unwrap();
    let first = gramine.sealing_key(b"token shares").unwrap();
    assert_eq!(*first, *gramine.sealing_key(b"token shares").unwrap());
    assert_ne!(*first, *gramine.sealing_key(b"another purpose").unwrap());
    // Another enclave build: EGETKEY gives another MRENCLAVE key, and so another sealing key.
    std::fs::write(&key_file, [2u8; 16]).unwrap();
    assert_ne!(*first, *gramine.sealing_key(b"token shares").unwrap());
    std::fs::write(&key_file, [2u8; 15]).unwrap();
    assert!(matches!(
        gramine.sealing_key(b"token shares"),
        Err(ProduceError::Unexpected(_))
    ));
}

#[test]
fn configfs_tsm_gives_no_sealing_key_and_says_so() {
    let dir = fake_tsm_entry("tdx_guest", b"a TDX quote", None);
    let tsm = ConfigfsTsm::at(dir.path(), "obscura");
    assert!(matches!(
        tsm.sealing_key(b"token shares"),
        Err(ProduceError::NoSealing(_))
    ));
}

#[test]
fn a_simulated_sealing_key_changes_with_the_measurement_and_the_platform() {
    use obscura_attest::producer::Simulated;
    use obscura_attest::sim::{SimulatedPlatform, SimulationRoot};
    let mut rng = rand_core::OsRng;
    let root = SimulationRoot::generate(&mut rng);
    let file = root.issue("keeper 1", &mut rng).to_file();
    let other = root.issue("keeper 1", &mut rng).to_file();
    let producer = |file: &[u8], measurement: u8| {
        Simulated::new(
            SimulatedPlatform::from_file(file).unwrap(),
            [measurement; 48],
        )
    };
    let key = producer(&file, 1).sealing_key(b"token shares").unwrap();
    // The same platform and build after a restart derive the same key, for this purpose only.
    assert_eq!(
        *key,
        *producer(&file, 1).sealing_key(b"token shares").unwrap()
    );
    assert_ne!(
        *key,
        *producer(&file, 1).sealing_key(b"another purpose").unwrap()
    );
    // Another build on the same platform, and the same build on another platform.
    assert_ne!(
        *key,
        *producer(&file, 2).sealing_key(b"token shares").unwrap()
    );
    assert_ne!(
        *key,
        *producer(&other, 1).sealing_key(b"token shares").unwrap()
    );
}
