//! Indexing many files with a few in flight at once: each image waits on fsyncs at every node,
//! so overlapping them keeps the nodes and this machine's cores busy.

use std::sync::Arc;

use obscura_client::Client;
use obscura_sharing::manifest::ImageId;

/// Images indexed at once.
pub const IN_FLIGHT: usize = 4;

/// What became of one file.
pub enum Outcome {
    /// Committed at every node.
    Indexed(ImageId),
    /// Unreadable, or not an image: skipped, nothing sent.
    Skipped(String),
    /// The cluster failed it (nodes down, refused); nothing of it remains visible.
    Failed(String),
}

/// What [`index_files`] did.
pub struct Batch {
    /// Each file's id, `None` where it was skipped or failed.
    pub ids: Vec<Option<ImageId>>,
    /// `(file index, reason)` of each file not indexed, in the order they finished.
    pub failures: Vec<(usize, String)>,
    /// Wall time of the whole batch, seconds.
    pub seconds: f64,
}

/// Index files held in memory, advancing `bar` as each finishes.
pub async fn index_files(
    client: &Arc<Client>,
    files: &[&[u8]],
    bar: &indicatif::ProgressBar,
) -> Batch {
    let t0 = std::time::Instant::now();
    let mut ids = vec![None; files.len()];
    let mut failures = Vec::new();
    index_all(
        client,
        files.len(),
        |i| Ok(files[i].to_vec()),
        |i, outcome| {
            match outcome {
                Outcome::Indexed(id) => ids[i] = Some(id),
                Outcome::Skipped(e) | Outcome::Failed(e) => failures.push((i, e)),
            }
            bar.inc(1);
        },
    )
    .await;
    Batch {
        ids,
        failures,
        seconds: t0.elapsed().as_secs_f64(),
    }
}

/// Index items `0..count`, at most [`IN_FLIGHT`] at once. `load(i)` reads item `i` when its
/// turn comes; `done(i, outcome)` is called as each finishes, in the order they finish.
pub async fn index_all(
    client: &Arc<Client>,
    count: usize,
    mut load: impl FnMut(usize) -> Result<Vec<u8>, String>,
    mut done: impl FnMut(usize, Outcome),
) {
    let mut set = tokio::task::JoinSet::new();
    let mut next = 0;
    while next < count || !set.is_empty() {
        while next < count && set.len() < IN_FLIGHT {
            let i = next;
            next += 1;
            match load(i) {
                Ok(bytes) => {
                    let c = client.clone();
                    set.spawn(async move { (i, c.index(&bytes).await) });
                }
                Err(e) => done(i, Outcome::Skipped(e)),
            }
        }
        match set.join_next().await {
            Some(Ok((i, Ok(id)))) => done(i, Outcome::Indexed(id)),
            Some(Ok((i, Err(e @ obscura_client::Error::Image(_))))) => {
                done(i, Outcome::Skipped(e.to_string()))
            }
            Some(Ok((i, Err(e)))) => done(i, Outcome::Failed(e.to_string())),
            // A panicked task: its image was never reported; the journal covers what it sent.
            Some(Err(e)) => eprintln!("error: an indexing task failed: {e}"),
            None => {}
        }
    }
}
