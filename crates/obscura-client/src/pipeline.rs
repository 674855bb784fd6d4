//! Indexing many files: in batches, so that each node syncs its disk twice per batch rather than
//! twice per image, with a few batches in flight at once, so that hashing and sharing on this
//! machine's cores overlaps the nodes' work. [`Client::index_uploads`] keeps each batch within
//! the protocol's limits; this decides how many files make one for speed.
//!
//! ```no_run
//! # async fn example(client: std::sync::Arc<obscura_client::Client>) {
//! use obscura_client::pipeline::{index_all, Outcome};
//!
//! let files = ["a.jpg", "b.png", "notes.txt"];
//! index_all(
//!     &client,
//!     files.len(),
//!     |i| std::fs::read(files[i]),
//!     |i, outcome| match outcome {
//!         Outcome::Indexed(id) => println!("{id}  {}", files[i]),
//!         Outcome::Skipped(why) => println!("skipped {}: {why}", files[i]),
//!         Outcome::Failed(why) => println!("failed {}: {why}", files[i]),
//!     },
//! )
//! .await;
//! # }
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use obscura_sharing::manifest::ImageId;

use crate::{Client, Error};

/// Batches indexed at once.
pub const IN_FLIGHT: usize = 3;
/// Most files in a batch: each batch costs every node two disk syncs, whatever its size.
pub const BATCH_FILES: usize = 8;
/// A batch is closed once its files reach this many bytes.
pub const BATCH_BYTES: usize = 32 << 20;

/// What became of one file.
#[derive(Debug, thiserror::Error)]
pub enum Outcome {
    /// Committed at every node.
    #[error("indexed as {0}")]
    Indexed(ImageId),
    /// Unreadable, or not an image: skipped, nothing sent.
    #[error(transparent)]
    Skipped(Skip),
    /// The cluster failed it (nodes down, refused); nothing of it remains visible.
    #[error(transparent)]
    Failed(Error),
}

/// Why a file was skipped before anything of it was sent.
#[derive(Debug, thiserror::Error)]
pub enum Skip {
    /// It could not be read.
    #[error("unreadable: {0}")]
    Unreadable(std::io::Error),
    /// It is not an image this client can hash.
    #[error(transparent)]
    NotImage(obscura_phash::Error),
}

/// What [`index_files`] did.
#[derive(Debug)]
pub struct Indexed {
    /// Each file's id, `None` where it was skipped or failed.
    pub ids: Vec<Option<ImageId>>,
    /// `(file index, what became of it)` of each file not indexed, in the order they finished.
    pub failures: Vec<(usize, Outcome)>,
    /// Wall time of the whole batch, seconds.
    pub seconds: f64,
}

/// Index files held in memory, calling `progress` as each finishes.
pub async fn index_files(
    client: &Arc<Client>,
    files: &[&[u8]],
    mut progress: impl FnMut(),
) -> Indexed {
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
                not => failures.push((i, not)),
            }
            progress();
        },
    )
    .await;
    Indexed {
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
    mut load: impl FnMut(usize) -> std::io::Result<Vec<u8>>,
    mut done: impl FnMut(usize, Outcome),
) {
    let mut set = tokio::task::JoinSet::new();
    // Which items each task holds, to report them should it panic.
    let mut held: HashMap<tokio::task::Id, Vec<usize>> = HashMap::new();
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
                    Err(e) => done(i, Outcome::Skipped(Skip::Unreadable(e))),
                }
            }
            if !batch.is_empty() {
                let items = batch.iter().map(|(i, _)| *i).collect();
                held.insert(set.spawn(index_batch(client.clone(), batch)).id(), items);
            }
        }
        match set.join_next_with_id().await {
            Some(Ok((id, outcomes))) => {
                held.remove(&id);
                for (i, outcome) in outcomes {
                    done(i, outcome);
                }
            }
            // A panicked task: its items fail; the journal covers what it had sent.
            Some(Err(e)) => {
                for i in held.remove(&e.id()).unwrap_or_default() {
                    done(
                        i,
                        Outcome::Failed(Error::Internal("the indexing task failed")),
                    );
                }
            }
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
fn outcome(result: Result<ImageId, Error>) -> Outcome {
    match result {
        Ok(id) => Outcome::Indexed(id),
        Err(Error::Image(e)) => Outcome::Skipped(Skip::NotImage(e)),
        Err(e) => Outcome::Failed(e),
    }
}
