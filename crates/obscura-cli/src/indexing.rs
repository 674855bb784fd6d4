//! Indexing many files: in batches, so that each node syncs its disk twice per batch rather than
//! twice per image, with a few batches in flight at once, so that hashing and sharing on this
//! machine's cores overlaps the nodes' work.

use std::sync::Arc;

use obscura_client::Client;
use obscura_sharing::manifest::ImageId;

/// Batches indexed at once.
pub const IN_FLIGHT: usize = 3;
/// Most files in a batch: each batch costs every node two disk syncs, whatever its size.
pub const BATCH_FILES: usize = 8;
/// A batch is closed once its files reach this many bytes.
pub const BATCH_BYTES: usize = 32 << 20;

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

/// Index items `0..count` in batches of at most [`BATCH_FILES`] files (and
/// [`BATCH_BYTES`]), at most [`IN_FLIGHT`] batches at once: one being hashed and shared on each
/// core while another is at the nodes. `load(i)` reads item `i` when its turn comes;
/// `done(i, outcome)` is called for each, batch by batch as they finish.
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
            let mut batch = Vec::new();
            let mut bytes = 0;
            while next < count && batch.len() < BATCH_FILES && bytes < BATCH_BYTES {
                let i = next;
                next += 1;
                match load(i) {
                    Ok(file) => {
                        bytes += file.len();
                        batch.push((i, file));
                    }
                    Err(e) => done(i, Outcome::Skipped(e)),
                }
            }
            if !batch.is_empty() {
                set.spawn(index_batch(client.clone(), batch));
            }
        }
        match set.join_next().await {
            Some(Ok(outcomes)) => {
                for (i, outcome) in outcomes {
                    done(i, outcome);
                }
            }
            // A panicked task: its images were never reported; the journal covers what it sent.
            Some(Err(e)) => eprintln!("error: an indexing task failed: {e}"),
            None => {}
        }
    }
}

/// Hash and share a batch off the async workers, then send it in one prepare and one commit.
async fn index_batch(client: Arc<Client>, batch: Vec<(usize, Vec<u8>)>) -> Vec<(usize, Outcome)> {
    let c = client.clone();
    let prepared = tokio::task::spawn_blocking(move || {
        batch
            .into_iter()
            .map(|(i, file)| (i, c.upload_file(&file)))
            .collect::<Vec<_>>()
    })
    .await
    .expect("hashing and sharing a batch panicked");
    let mut outcomes = Vec::new();
    let (mut sent, mut uploads) = (Vec::new(), Vec::new());
    for (i, upload) in prepared {
        match upload {
            Ok(u) => {
                sent.push(i);
                uploads.push(u);
            }
            Err(e) => outcomes.push((i, outcome(Err(e)))),
        }
    }
    let indexed = client.index_uploads(uploads).await;
    outcomes.extend(sent.into_iter().zip(indexed).map(|(i, r)| (i, outcome(r))));
    outcomes
}

/// A file that is not an image is skipped; anything else failed it.
fn outcome(result: Result<ImageId, obscura_client::Error>) -> Outcome {
    match result {
        Ok(id) => Outcome::Indexed(id),
        Err(e @ obscura_client::Error::Image(_)) => Outcome::Skipped(e.to_string()),
        Err(e) => Outcome::Failed(e.to_string()),
    }
}
