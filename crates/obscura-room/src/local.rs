//! The resident attester and its per-function workers: what passes between them, and local
//! attestation.
//!
//! A worker (`obscura worker run`) is the resident attester: nodes appraise it by remote
//! attestation. For each work it starts a fresh process of its own executable, the job, which
//! compiles the function, makes the job's keys and proves to the attester, by a local report,
//! which build it is and which keys it holds, for the attester's challenge. Only then does the
//! attester vouch for the job: its evidence to a node binds the job's keys and the Work-ID. The
//! job's secret keys, the shares and the output exist only in the job's process, which ends
//! with its run: another address space than the attester's and other jobs', though the same
//! user's (see the threat model for what that leaves).
//!
//! A local report is a MAC, under a key the platform gives the attester as the report's target,
//! over the job's measurement and 64 bytes of report data (as SGX's `EREPORT` is a CMAC under the
//! target enclave's report key). On the simulation backend the attester makes that key and
//! hands it to the job it starts, standing in for the processor: it models the check, catches
//! a job of another build that reports honestly, and proves no more than the rest of the
//! simulation does (an executable made to lie is handed the key too).

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use crate::result::RunResult;

/// The largest frame either side reads: a run's releases, or a result with its sealed outputs.
pub const MAX_FRAME: usize = 400 << 20;

/// A job's local report to its attester.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalReport {
    /// The job's measurement (SHA-384 of its executable).
    pub measurement: Vec<u8>,
    /// What the job binds: `obscura_attest::binding::report_data` over its role, HPKE key,
    /// context and the attester's challenge.
    pub report_data: Vec<u8>,
    /// The MAC under the attester's report key.
    pub mac: [u8; 32],
}

const REPORT_DOMAIN: &str = "obscura 2026 local report v1";

fn mac(key: &[u8; 32], measurement: &[u8], report_data: &[u8]) -> blake3::Hash {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(REPORT_DOMAIN.as_bytes());
    h.update(&(measurement.len() as u64).to_be_bytes());
    h.update(measurement);
    h.update(&(report_data.len() as u64).to_be_bytes());
    h.update(report_data);
    h.finalize()
}

impl LocalReport {
    /// A report of `measurement` binding `report_data`, for the attester whose report key is
    /// `key`.
    pub fn make(key: &[u8; 32], measurement: &[u8], report_data: &[u8]) -> LocalReport {
        LocalReport {
            measurement: measurement.to_vec(),
            report_data: report_data.to_vec(),
            mac: *mac(key, measurement, report_data).as_bytes(),
        }
    }

    /// Check the report as the attester whose report key is `key`: its MAC, then that it is of
    /// the build `measurement` and binds `report_data`.
    ///
    /// # Errors
    /// What does not hold.
    pub fn check(
        &self,
        key: &[u8; 32],
        measurement: &[u8],
        report_data: &[u8],
    ) -> Result<(), String> {
        // blake3::Hash compares in constant time.
        if mac(key, &self.measurement, &self.report_data) != blake3::Hash::from(self.mac) {
            return Err("the job's local report is not under this attester's report key".into());
        }
        if self.measurement != measurement {
            return Err(format!(
                "the job's measurement {} is not this attester's build {}",
                hex::encode(&self.measurement[..self.measurement.len().min(8)]),
                hex::encode(&measurement[..measurement.len().min(8)]),
            ));
        }
        if self.report_data != report_data {
            return Err(
                "the job's local report binds other keys, another work or another challenge".into(),
            );
        }
        Ok(())
    }
}

/// What the attester tells a job.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToJob {
    /// Compile this work (its JSON file, module in binary form) for this cluster, and report
    /// for this challenge under this report key.
    Start {
        /// The work.
        work: String,
        /// Each node's audit key, node 1 first.
        nodes: Vec<[u8; 32]>,
        /// The data owner's key.
        owner: [u8; 32],
        /// Shares that rebuild an image.
        k: u32,
        /// The attester's challenge.
        nonce: [u8; 32],
        /// The attester's report key.
        report_key: [u8; 32],
    },
    /// Run once on the releases that follow, as a raw frame ([`write_raw`]) of their postcard
    /// encoding (`Vec<Release>`), handed on as the controller sent them.
    Run,
}

/// What a job tells its attester.
#[derive(Debug, Serialize, Deserialize)]
pub enum FromJob {
    /// Compiled: the job's public keys and its local report binding them.
    Ready {
        /// The HPKE key nodes seal to.
        party_key: [u8; 32],
        /// The result key.
        signing_key: [u8; 32],
        /// The report.
        report: LocalReport,
    },
    /// The run's result.
    Done(Box<RunResult>),
    /// Refused or failed, with the public reason (nothing the function chose).
    Failed(String),
}

/// Write one frame: its length (4 bytes, big-endian), then its postcard encoding.
///
/// # Errors
/// When the writer fails.
pub fn write_frame<T: Serialize>(to: &mut impl Write, message: &T) -> std::io::Result<()> {
    let bytes = postcard::to_allocvec(message).map_err(std::io::Error::other)?;
    write_raw(to, &bytes)
}

/// Read one frame of at most [`MAX_FRAME`] bytes.
///
/// # Errors
/// When the reader fails or ends, or the frame is too large or not a `T`.
pub fn read_frame<T: for<'a> Deserialize<'a>>(from: &mut impl Read) -> std::io::Result<T> {
    postcard::from_bytes(&read_raw(from)?).map_err(std::io::Error::other)
}

/// Write one raw frame: its length, then the bytes.
///
/// # Errors
/// When the writer fails, or the bytes are more than [`MAX_FRAME`].
pub fn write_raw(to: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(bytes.len()).map_err(std::io::Error::other)?;
    frame_len(len.to_be_bytes())?;
    to.write_all(&len.to_be_bytes())?;
    to.write_all(bytes)?;
    to.flush()
}

/// Read one raw frame of at most [`MAX_FRAME`] bytes.
///
/// # Errors
/// When the reader fails or ends, or the frame is too large.
pub fn read_raw(from: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    from.read_exact(&mut len)?;
    let mut bytes = vec![0u8; frame_len(len)?];
    from.read_exact(&mut bytes)?;
    Ok(bytes)
}

/// A frame's length from its header, refused past [`MAX_FRAME`].
///
/// # Errors
/// When it is too large.
pub fn frame_len(header: [u8; 4]) -> std::io::Result<usize> {
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other(format!(
            "a frame of {len} bytes, more than {MAX_FRAME}"
        )));
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_report_checks_only_under_its_key_for_its_build_and_data() {
        let key = [7u8; 32];
        let build = [1u8; 48];
        let data = [2u8; 64];
        let report = LocalReport::make(&key, &build, &data);
        assert!(report.check(&key, &build, &data).is_ok());
        // Another attester's key, another build, other data.
        assert!(report.check(&[8; 32], &build, &data).is_err());
        assert!(report
            .check(&key, &[3; 48], &data)
            .unwrap_err()
            .contains("measurement"));
        assert!(report.check(&key, &build, &[4; 64]).is_err());
        // A report edited to claim this build, or these data, fails its MAC.
        let mut claimed = LocalReport::make(&key, &[3; 48], &data);
        claimed.measurement = build.to_vec();
        assert!(claimed
            .check(&key, &build, &data)
            .unwrap_err()
            .contains("report key"));
        let mut rebound = report.clone();
        rebound.report_data = vec![4; 64];
        assert!(rebound.check(&key, &build, &[4; 64]).is_err());
    }

    #[test]
    fn a_frame_past_the_limit_is_refused_before_it_is_read() {
        let mut header = ((MAX_FRAME + 1) as u32).to_be_bytes().to_vec();
        header.extend_from_slice(&[0; 16]);
        let read: std::io::Result<FromJob> = read_frame(&mut header.as_slice());
        assert!(read.unwrap_err().to_string().contains("more than"));
        let mut bytes = Vec::new();
        write_frame(&mut bytes, &FromJob::Failed("ran out of fuel".into())).unwrap();
        let back: FromJob = read_frame(&mut bytes.as_slice()).unwrap();
        assert!(matches!(back, FromJob::Failed(why) if why == "ran out of fuel"));
    }
}
