//! What both servers answer to [`NodeBody::Evidence`](obscura_proto::NodeBody::Evidence) and
//! [`KeeperBody::Evidence`](obscura_proto::KeeperBody::Evidence): evidence, fresh for each
//! nonce, binding the HPKE key the server made at start, its seat in the cluster and the nonce.

use std::path::Path;

use obscura_attest::producer::{self, ConfigfsTsm, Gramine, Producer, SevGuest, Simulated};
use obscura_attest::seal::PartyKey;
use obscura_attest::sim::SimulatedPlatform;
use obscura_attest::{binding, Role};
use obscura_cluster::attestation::AttestationSource;
use obscura_proto::{limits, ErrorCode, ResponseBody};

use crate::Error;

/// A server's attestation: its key, its seat and where its evidence comes from.
pub struct Attester {
    role: Role,
    key: PartyKey,
    context: [u8; 32],
    producer: Box<dyn Producer>,
    /// One report at a time: configfs-tsm and Gramine take the report data and give the report
    /// through files, which concurrent requests would mix up.
    making: std::sync::Mutex<()>,
    /// The root that endorsed its simulated platform, with the simulation backend.
    simulation_root: Option<[u8; 32]>,
}

impl std::fmt::Debug for Attester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Attester({} {:?})", self.role, self.producer.platform())
    }
}

impl Attester {
    /// The attester of the server `role` number `seat`, of the cluster whose CA certificate is
    /// `cluster`, with evidence from `source` (`None`: the server does not attest). With the
    /// simulation backend, `platform` is its simulated platform file from its sealed secrets,
    /// and the measurement is the SHA-384 of this executable.
    ///
    /// # Errors
    /// [`Error::Files`] when the simulated platform is missing or malformed, or the executable
    /// cannot be read.
    pub fn load(
        config: &Path,
        source: Option<AttestationSource>,
        platform: Option<&str>,
        role: Role,
        seat: u8,
        cluster: &[u8],
    ) -> Result<Option<Attester>, Error> {
        let mut simulation_root = None;
        let producer: Box<dyn Producer> = match source {
            None => return Ok(None),
            Some(AttestationSource::Simulation) => {
                let platform = platform.ok_or_else(|| {
                    Error::secrets(
                        "the simulation backend needs a simulated platform in the sealed secrets",
                    )
                })?;
                let platform = SimulatedPlatform::from_file(platform.as_bytes())
                    .map_err(|e| Error::secrets(e.to_string()))?;
                let measurement = producer::own_measurement().map_err(|e| {
                    Error::config(config, format!("cannot measure this executable: {e}"))
                })?;
                simulation_root = Some(platform.root());
                Box::new(Simulated::new(platform, measurement))
            }
            Some(AttestationSource::ConfigfsTsm) => Box::new(ConfigfsTsm::new()),
            Some(AttestationSource::SevGuest) => Box::new(SevGuest),
            Some(AttestationSource::Gramine) => Box::new(Gramine::new()),
        };
        Ok(Some(Attester {
            context: binding::context(cluster, &role, seat),
            role,
            key: PartyKey::generate(&mut rand_core::OsRng),
            producer,
            making: std::sync::Mutex::new(()),
            simulation_root,
        }))
    }

    /// The simulation root that endorsed this server's platform, when it attests with the
    /// simulation backend.
    pub fn simulation_root(&self) -> Option<[u8; 32]> {
        self.simulation_root
    }

    /// The server's HPKE key, to open what is sealed to it.
    pub fn key(&self) -> &PartyKey {
        &self.key
    }

    /// The platform's sealing key for `purpose`, bound to the measurement this server runs
    /// ([`Producer::sealing_key`]).
    ///
    /// # Errors
    /// [`producer::ProduceError`] where the platform gives none.
    pub fn sealing_key(
        &self,
        purpose: &[u8],
    ) -> Result<zeroize::Zeroizing<[u8; 32]>, producer::ProduceError> {
        self.producer.sealing_key(purpose)
    }

    /// Evidence for `nonce`, or the reason there is none.
    pub fn answer(attester: Option<&Attester>, nonce: &[u8; 32], now: u64) -> ResponseBody {
        let Some(a) = attester else {
            return ResponseBody::Error {
                code: ErrorCode::Rejected,
                message: "this server does not attest (no \"attestation\" in its configuration)"
                    .into(),
            };
        };
        let data = binding::report_data(&a.role, &a.key.public(), &a.context, nonce);
        // Unauthenticated requests wait a little for the producer, not a worker's whole time:
        // a flood of them is answered "busy" rather than holding every request slot.
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(200);
        let _making = loop {
            match a.making.try_lock() {
                Ok(guard) => break guard,
                Err(std::sync::TryLockError::Poisoned(p)) => break p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock)
                    if std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                Err(std::sync::TryLockError::WouldBlock) => {
                    return ResponseBody::Error {
                        code: ErrorCode::RateLimited,
                        message: "busy making evidence for other requests; ask again".into(),
                    }
                }
            }
        };
        match a.producer.evidence(&data, now) {
            Ok(evidence) => {
                let evidence = evidence.to_json();
                if evidence.len() > limits::MAX_EVIDENCE {
                    return ResponseBody::Error {
                        code: ErrorCode::Internal,
                        message: "the platform's evidence is larger than the protocol allows"
                            .into(),
                    };
                }
                ResponseBody::Evidence {
                    party_key: a.key.public(),
                    evidence,
                }
            }
            Err(e) => ResponseBody::Error {
                code: ErrorCode::Internal,
                message: format!("no evidence: {e}"),
            },
        }
    }
}
