//! The clean room as the demo and the benchmark run it: the colour statistics example
//! (`examples/room/colour_stats.wat`, compiled by the worker from the repository's text) over
//! stored images, approved by the data owner for one run, in a worker of this build, with the
//! output sealed to a key made here and opened with it.

use obscura_attest::seal::PartyKey;
use obscura_client::room::RoomReport;
use obscura_client::Client;
use obscura_room::work::{InputSpec, Limits, Manifest, OutputKind, OutputSpec, Work};
use obscura_sharing::manifest::ImageId;

use crate::harness::Photo;
use crate::Error;

/// The example function, from the repository.
pub const COLOUR_STATS: &str = include_str!("../../../examples/room/colour_stats.wat");

/// One run and what it gave.
pub struct RoomRun {
    /// The controller's report, with the worker's signed result.
    pub report: RoomReport,
    /// The output, opened with the recipient's key.
    pub output: serde_json::Value,
    /// Where the worker's time went, from the sealed payload.
    pub phases_ms: obscura_room::result::Phases,
    /// The work that ran.
    pub work: Work,
    /// The payload as the recipient opened it.
    pub payload: obscura_room::result::Payload,
}

/// Run the colour statistics of `ids` in the worker at `worker`, approved for one run under
/// the cluster's own attestation policy.
///
/// # Errors
/// Why the run failed, or its output did not open.
pub async fn colour_stats(
    client: &Client,
    policy: &str,
    ids: &[ImageId],
    worker: &str,
) -> Result<RoomRun, Error> {
    let recipient = PartyKey::generate(&mut rand_core::OsRng);
    let manifest = Manifest {
        inputs: ids
            .iter()
            .map(|id| InputSpec {
                image: id.0,
                label: None,
            })
            .collect(),
        labels: Vec::new(),
        parameters: Vec::new(),
        output: OutputSpec {
            kind: OutputKind::Json,
            max_bytes: 64 << 10,
        },
        limits: Limits {
            fuel: 2_000_000_000,
            memory_bytes: 256 << 20,
        },
        recipients: vec![recipient.public()],
    };
    let work = Work::new(COLOUR_STATS.as_bytes(), manifest).map_err(|e| e.to_string())?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let approval = client.approve(&work, policy, now + 600, 1)?;
    let report = client.room_run(&work, &approval, worker).await?;
    let payload = obscura_room::result::open_output(&report.result, &recipient)?;
    let output = serde_json::from_slice(&payload.output).map_err(|e| format!("the output: {e}"))?;
    Ok(RoomRun {
        report,
        output,
        phases_ms: payload.phases_ms,
        work,
        payload,
    })
}

/// Whether `output` holds each photo's size and mean colour, as computed here from the files.
pub fn stats_match(output: &serde_json::Value, photos: &[&Photo]) -> bool {
    photos.iter().enumerate().all(|(i, p)| {
        let rgb = p.decoded.to_rgb8();
        let n = u64::from(rgb.width()) * u64::from(rgb.height());
        let mean: Vec<u64> = (0..3)
            .map(|c| rgb.pixels().map(|px| u64::from(px.0[c])).sum::<u64>() / n.max(1))
            .collect();
        output[i] == serde_json::json!({"width": rgb.width(), "height": rgb.height(), "mean": mean})
    })
}
