//! Producers: how a party asks its platform for evidence carrying given report data. The only
//! module of this crate that does I/O, behind one small trait.
//!
//! - [`ConfigfsTsm`]: TDX and SEV-SNP through the kernel's configfs-tsm
//!   (`/sys/kernel/config/tsm/report`, Linux 6.7 and later);
//! - [`SevGuest`]: SEV-SNP through `/dev/sev-guest`;
//! - [`Gramine`]: SGX inside Gramine, through `/dev/attestation`;
//! - [`Simulated`]: the simulation backend.
//!
//! The hardware producers are tested against a fake filesystem root laid out as the kernel and
//! Gramine lay theirs out; no hardware is claimed. Hardware evidence leaves here without
//! collateral (DCAP collateral comes from a PCCS, the VCEK from AMD's KDS or the host's
//! certificate table): the verifier refuses it until it is attached.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha384};
use zeroize::Zeroizing;

use crate::sim::SimulatedPlatform;
use crate::{Evidence, Platform};

/// A platform's evidence source.
pub trait Producer: Send + Sync {
    /// The platform this producer speaks for.
    fn platform(&self) -> Platform;

    /// Evidence whose report data is exactly `report_data`, issued at `now` where the platform
    /// records a time.
    ///
    /// # Errors
    /// [`ProduceError`] when the platform's interface is absent or answers something else.
    fn evidence(&self, report_data: &[u8; 64], now: u64) -> Result<Evidence, ProduceError>;

    /// A key for `purpose` that only this platform, running the measured code it runs now, can
    /// derive: what a party seals its long-term secrets under, so that another build on the same
    /// machine, or the same files on another machine, cannot open them.
    ///
    /// # Errors
    /// [`ProduceError::NoSealing`] where the platform has no such key (TDX, and SNP through
    /// configfs-tsm); [`ProduceError`] when the interface is absent or refuses.
    fn sealing_key(&self, purpose: &[u8]) -> Result<Zeroizing<[u8; 32]>, ProduceError> {
        let _ = purpose;
        Err(ProduceError::NoSealing(format!(
            "{} through this interface gives no sealing key",
            self.platform()
        )))
    }
}

/// The sealing key for `purpose` from a platform's key material `ikm`.
fn derive_sealing_key(ikm: &[u8], purpose: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut key = Zeroizing::new([0u8; 32]);
    hkdf::Hkdf::<sha2::Sha256>::new(Some(SEALING_SALT), ikm)
        .expand(purpose, &mut *key)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    key
}

const SEALING_SALT: &[u8] = b"obscura sealing key v1";

/// Why a producer could not make evidence.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProduceError {
    /// The platform's interface is not on this machine.
    #[error("{path}: not available on this machine ({source})")]
    Unavailable {
        /// The interface's path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The interface answered in a way the producer does not understand.
    #[error("{0}")]
    Unexpected(String),
    /// The platform derives no sealing key ([`Producer::sealing_key`]).
    #[error("{0}")]
    NoSealing(String),
}

fn unavailable(path: &Path) -> impl FnOnce(std::io::Error) -> ProduceError + '_ {
    move |source| ProduceError::Unavailable {
        path: path.to_owned(),
        source,
    }
}

/// The SHA-384 of the running executable: the simulation backend's measurement.
///
/// # Errors
/// When the executable cannot be read.
pub fn own_measurement() -> std::io::Result<[u8; 48]> {
    let exe = std::env::current_exe()?;
    measure_file(&exe)
}

/// The SHA-384 of a file, as [`own_measurement`] measures the running executable.
///
/// # Errors
/// When the file cannot be read.
pub fn measure_file(path: &Path) -> std::io::Result<[u8; 48]> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha384::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hasher.finalize().into())
}

/// configfs-tsm: make a report entry, write `inblob`, read `provider` and `outblob` (and the
/// SNP certificate table from `auxblob`), and check that `generation` did not move while reading,
/// which would mean another writer changed the entry under us.
#[derive(Clone, Debug)]
pub struct ConfigfsTsm {
    dir: PathBuf,
}

impl ConfigfsTsm {
    /// The kernel's interface, with an entry named for this process.
    pub fn new() -> ConfigfsTsm {
        ConfigfsTsm::at(
            Path::new("/sys/kernel/config/tsm/report"),
            &format!("obscura-{}", std::process::id()),
        )
    }

    /// An entry `entry` under `root` (tests lay out a fake root).
    pub fn at(root: &Path, entry: &str) -> ConfigfsTsm {
        ConfigfsTsm {
            dir: root.join(entry),
        }
    }

    fn read(&self, name: &str) -> Result<Vec<u8>, ProduceError> {
        let path = self.dir.join(name);
        std::fs::read(&path).map_err(unavailable(&path))
    }
}

impl Default for ConfigfsTsm {
    fn default() -> Self {
        ConfigfsTsm::new()
    }
}

impl Producer for ConfigfsTsm {
    fn platform(&self) -> Platform {
        match self.read("provider").as_deref().map(|p| p.trim_ascii()) {
            Ok(b"sev_guest") => Platform::Snp,
            _ => Platform::Tdx,
        }
    }

    fn evidence(&self, report_data: &[u8; 64], _now: u64) -> Result<Evidence, ProduceError> {
        // configfs makes the attribute files when the entry is made; an existing entry is reused.
        if !self.dir.is_dir() {
            std::fs::create_dir(&self.dir).map_err(unavailable(&self.dir))?;
        }
        let generation = |this: &Self| -> Result<String, ProduceError> {
            Ok(String::from_utf8_lossy(&this.read("generation")?)
                .trim()
                .to_owned())
        };
        let inblob = self.dir.join("inblob");
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .create(false)
            .open(&inblob)
            .and_then(|mut f| f.write_all(report_data))
            .map_err(unavailable(&inblob))?;
        let before = generation(self)?;
        let provider = String::from_utf8_lossy(&self.read("provider")?)
            .trim()
            .to_owned();
        let outblob = self.read("outblob")?;
        let after = generation(self)?;
        if after != before {
            return Err(ProduceError::Unexpected(format!(
                "configfs-tsm generation went from {before} to {after} while reading: another writer raced this report"
            )));
        }
        match provider.as_str() {
            "tdx_guest" => Ok(Evidence::Tdx {
                quote: outblob,
                collateral: None,
            }),
            "sev_guest" => Ok(Evidence::Snp {
                report: outblob,
                vek: snp_vek_from_cert_table(&self.read("auxblob").unwrap_or_default()),
                chain: None,
            }),
            other => Err(ProduceError::Unexpected(format!(
                "configfs-tsm provider {other:?} is neither tdx_guest nor sev_guest"
            ))),
        }
    }
}

/// The VCEK or VLEK from an SNP certificate table (GHCB specification: entries of a 16-byte
/// GUID, a 4-byte offset and a 4-byte length, ending with an all-zero entry).
fn snp_vek_from_cert_table(table: &[u8]) -> Option<Vec<u8>> {
    const VCEK: [u8; 16] = guid("63da758d-e664-4564-adc5-f4b93be8accd");
    const VLEK: [u8; 16] = guid("a8074bc2-a25a-483e-aae6-39c045a0b8a1");
    for entry in table.chunks_exact(24) {
        let (id, rest) = entry.split_at(16);
        if id == [0; 16] {
            break;
        }
        let offset = u32::from_le_bytes(rest[..4].try_into().ok()?) as usize;
        let len = u32::from_le_bytes(rest[4..].try_into().ok()?) as usize;
        if id == VCEK || id == VLEK {
            return table
                .get(offset..offset.checked_add(len)?)
                .map(<[u8]>::to_vec);
        }
    }
    None
}

/// A GUID in its byte order within the certificate table (the first three fields little-endian).
const fn guid(text: &str) -> [u8; 16] {
    let t = text.as_bytes();
    let mut hex = [0u8; 16];
    let (mut i, mut n) = (0, 0);
    while i < t.len() {
        if t[i] != b'-' {
            let nibble = match t[i] {
                b'0'..=b'9' => t[i] - b'0',
                b'a'..=b'f' => t[i] - b'a' + 10,
                _ => panic!("not a GUID"),
            };
            hex[n / 2] |= if n % 2 == 0 { nibble << 4 } else { nibble };
            n += 1;
        }
        i += 1;
    }
    let mut out = hex;
    out[0] = hex[3];
    out[1] = hex[2];
    out[2] = hex[1];
    out[3] = hex[0];
    out[4] = hex[5];
    out[5] = hex[4];
    out[6] = hex[7];
    out[7] = hex[6];
    out
}

/// SEV-SNP through `/dev/sev-guest` (the `SNP_GET_EXT_REPORT` ioctl, through `sev`), which also
/// returns the host's certificate table with the VCEK or VLEK.
#[derive(Clone, Debug, Default)]
pub struct SevGuest;

impl Producer for SevGuest {
    fn platform(&self) -> Platform {
        Platform::Snp
    }

    fn evidence(&self, report_data: &[u8; 64], _now: u64) -> Result<Evidence, ProduceError> {
        let path = Path::new("/dev/sev-guest");
        let mut firmware = sev::firmware::guest::Firmware::open().map_err(unavailable(path))?;
        let (report, certificates) = firmware
            .get_ext_report(None, Some(*report_data), Some(0))
            .map_err(|e| ProduceError::Unexpected(format!("SNP_GET_EXT_REPORT: {e}")))?;
        let vek = certificates.into_iter().flatten().find_map(|entry| {
            use sev::firmware::host::CertType;
            matches!(entry.cert_type, CertType::VCEK | CertType::VLEK)
                .then(|| entry.data().to_vec())
        });
        Ok(Evidence::Snp {
            report,
            vek,
            chain: None,
        })
    }

    /// `SNP_GET_DERIVED_KEY` from the VCEK root, mixing in the launch measurement and the guest
    /// policy (message version 1, which takes no launch mitigation vector). Written to AMD's
    /// interface through `sev`; not run here, for want of the hardware.
    fn sealing_key(&self, purpose: &[u8]) -> Result<Zeroizing<[u8; 32]>, ProduceError> {
        use sev::firmware::guest::{DerivedKey, GuestFieldSelect};
        let path = Path::new("/dev/sev-guest");
        let mut firmware = sev::firmware::guest::Firmware::open().map_err(unavailable(path))?;
        let mut fields = GuestFieldSelect::default();
        fields.set_measurement(true);
        fields.set_guest_policy(true);
        let root = Zeroizing::new(
            firmware
                .get_derived_key(Some(1), DerivedKey::new(false, fields, 0, 0, 0, None))
                .map_err(|e| ProduceError::Unexpected(format!("SNP_GET_DERIVED_KEY: {e}")))?,
        );
        Ok(derive_sealing_key(&*root, purpose))
    }
}

/// SGX inside Gramine: write `user_report_data`, read `quote` from `/dev/attestation`.
#[derive(Clone, Debug)]
pub struct Gramine {
    dir: PathBuf,
}

impl Gramine {
    /// Gramine's `/dev/attestation`.
    pub fn new() -> Gramine {
        Gramine::at(Path::new("/dev/attestation"))
    }

    /// Another directory laid out as `/dev/attestation` (tests).
    pub fn at(dir: &Path) -> Gramine {
        Gramine {
            dir: dir.to_owned(),
        }
    }
}

impl Default for Gramine {
    fn default() -> Self {
        Gramine::new()
    }
}

impl Producer for Gramine {
    fn platform(&self) -> Platform {
        Platform::Sgx
    }

    fn evidence(&self, report_data: &[u8; 64], _now: u64) -> Result<Evidence, ProduceError> {
        let kind_path = self.dir.join("attestation_type");
        let kind = std::fs::read_to_string(&kind_path).map_err(unavailable(&kind_path))?;
        if kind.trim() != "dcap" {
            return Err(ProduceError::Unexpected(format!(
                "Gramine attestation type {:?}, not dcap",
                kind.trim()
            )));
        }
        let data_path = self.dir.join("user_report_data");
        std::fs::write(&data_path, report_data).map_err(unavailable(&data_path))?;
        let quote_path = self.dir.join("quote");
        let quote = std::fs::read(&quote_path).map_err(unavailable(&quote_path))?;
        Ok(Evidence::Sgx {
            quote,
            collateral: None,
        })
    }

    /// Gramine's MRENCLAVE-bound sealing key, `/dev/attestation/keys/_sgx_mrenclave` (EGETKEY
    /// with the enclave's measurement: another enclave build derives another key).
    fn sealing_key(&self, purpose: &[u8]) -> Result<Zeroizing<[u8; 32]>, ProduceError> {
        let path = self.dir.join("keys").join("_sgx_mrenclave");
        let root = Zeroizing::new(std::fs::read(&path).map_err(unavailable(&path))?);
        if root.len() != 16 {
            return Err(ProduceError::Unexpected(format!(
                "{}: {} bytes, not a 128-bit SGX key",
                path.display(),
                root.len()
            )));
        }
        Ok(derive_sealing_key(&root, purpose))
    }
}

/// The simulation backend: evidence for a fixed measurement, normally [`own_measurement`].
pub struct Simulated {
    platform: SimulatedPlatform,
    measurement: [u8; 48],
}

impl Simulated {
    /// Simulated evidence from `platform` for `measurement`.
    pub fn new(platform: SimulatedPlatform, measurement: [u8; 48]) -> Simulated {
        Simulated {
            platform,
            measurement,
        }
    }

    /// The measurement this producer reports.
    pub fn measurement(&self) -> [u8; 48] {
        self.measurement
    }
}

impl Producer for Simulated {
    fn platform(&self) -> Platform {
        Platform::Simulation
    }

    fn evidence(&self, report_data: &[u8; 64], now: u64) -> Result<Evidence, ProduceError> {
        Ok(self
            .platform
            .evidence(&self.measurement, report_data, false, now))
    }

    /// Derived from the simulated platform's key and the measurement, as hardware derives its
    /// from a fused secret and the measurement. Anyone holding the platform file can derive it
    /// for any measurement: like all of the simulation, it protects nothing.
    fn sealing_key(&self, purpose: &[u8]) -> Result<Zeroizing<[u8; 32]>, ProduceError> {
        let ikm = Zeroizing::new(
            [
                self.platform.sealing_secret().as_slice(),
                self.measurement.as_slice(),
            ]
            .concat(),
        );
        Ok(derive_sealing_key(&ikm, purpose))
    }
}
