//! The indexing journal: a file per batch of images being indexed, written (and synced) before
//! any node is asked to prepare them and removed only once every node committed them or every
//! node has forgotten them. An entry left behind — the client was killed, or a node went down
//! between commit and the clean-up — names images that may sit at some nodes but were never
//! reported as indexed; [`Client::finish_interrupted`](crate::Client::finish_interrupted)
//! deletes them everywhere.
//!
//! An entry is named after the batch's first image id. It holds the writer's process id and a
//! number drawn by the writing client, so a second client sharing the directory leaves an index
//! still in flight alone, then the other ids of the batch, one per line.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use obscura_sharing::manifest::ImageId;

/// An entry whose writer cannot be checked is treated as abandoned after this long (nodes purge
/// uncommitted images after ten minutes by default).
const ABANDONED_AFTER: Duration = Duration::from_secs(15 * 60);

/// The journal folder, and what this client has in flight.
#[derive(Debug)]
pub(crate) struct Journal {
    dir: PathBuf,
    /// Tells this client's entries from those of other clients in the same process.
    writer: u64,
    in_flight: Mutex<HashSet<ImageId>>,
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Whether the process that wrote an entry can no longer be running.
fn process_gone(pid: u32, written: SystemTime) -> bool {
    if pid == std::process::id() {
        return false;
    }
    if cfg!(target_os = "linux") {
        return !Path::new(&format!("/proc/{pid}")).exists();
    }
    written.elapsed().is_ok_and(|age| age > ABANDONED_AFTER)
}

impl Journal {
    pub(crate) fn new(dir: PathBuf) -> Journal {
        Journal {
            dir,
            writer: rand_core::RngCore::next_u64(&mut rand_core::OsRng),
            in_flight: Mutex::new(HashSet::new()),
        }
    }

    fn in_flight(&self) -> std::sync::MutexGuard<'_, HashSet<ImageId>> {
        self.in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn path(&self, id: &ImageId) -> PathBuf {
        self.dir.join(id.to_string())
    }

    /// Record that the batch `ids` (not empty) is about to be indexed; durable when this
    /// returns. The entry is known by `ids[0]` from then on.
    pub(crate) fn begin(&self, ids: &[ImageId]) -> std::io::Result<()> {
        let (first, rest) = ids.split_first().expect("a batch is not empty");
        std::fs::create_dir_all(&self.dir)?;
        self.in_flight().insert(*first);
        let mut text = format!("{} {}\n", std::process::id(), self.writer);
        for id in rest {
            text.push_str(&format!("{id}\n"));
        }
        let mut f = std::fs::File::create(self.path(first))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        sync_dir(&self.dir)
    }

    /// This client stops working on the entry `first` but could not settle it: it stays.
    pub(crate) fn release(&self, first: &ImageId) {
        self.in_flight().remove(first);
    }

    /// The batch of the entry `first` is settled (committed everywhere, or gone everywhere);
    /// durable when this returns, so a reported image can never be taken for an interrupted one.
    pub(crate) fn end(&self, first: &ImageId) -> std::io::Result<()> {
        self.in_flight().remove(first);
        match std::fs::remove_file(self.path(first)) {
            Ok(()) => sync_dir(&self.dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Entries nobody is working on: interrupted indexing, each batch with the entry's name
    /// first.
    pub(crate) fn abandoned(&self) -> std::io::Result<Vec<Vec<ImageId>>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for e in entries {
            let e = e?;
            let Some(id) = e.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue; // not ours
            };
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            let mut lines = text.lines();
            let mut fields = lines
                .next()
                .unwrap_or_default()
                .split_whitespace()
                .map(|f| f.parse::<u64>().ok());
            let (pid, writer) = (fields.next().flatten(), fields.next().flatten());
            let abandoned = if writer == Some(self.writer) {
                !self.in_flight().contains(&id)
            } else {
                let pid = pid.and_then(|p| u32::try_from(p).ok()).unwrap_or(0);
                process_gone(pid, e.metadata()?.modified()?)
            };
            if abandoned {
                // A line that does not parse was torn by a crash while the entry was written,
                // before any node was asked: only the ids before it can have been sent.
                let batch = std::iter::once(id)
                    .chain(lines.map_while(|l| l.parse().ok()))
                    .collect();
                out.push(batch);
            }
        }
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_of_a_live_writer_are_left_alone_and_of_a_dead_one_reported() {
        let dir = std::env::temp_dir().join(format!("obscura-journal-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        let j = Journal::new(dir.clone());
        let mine = ImageId([1; 16]);
        let also_mine = ImageId([3; 16]);
        j.begin(&[mine, also_mine]).unwrap();
        assert!(j.abandoned().unwrap().is_empty());
        // Another client of this process is left alone.
        let other = Journal::new(dir.clone());
        assert!(other.abandoned().unwrap().is_empty());
        // Released without being settled: abandoned.
        j.release(&mine);
        assert_eq!(j.abandoned().unwrap(), [vec![mine, also_mine]]);
        // An entry written by a process that has exited.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let theirs = ImageId([2; 16]);
        std::fs::write(j.path(&theirs), format!("{dead} 7")).unwrap();
        if cfg!(target_os = "linux") {
            assert_eq!(
                j.abandoned().unwrap(),
                [vec![mine, also_mine], vec![theirs]]
            );
        }
        j.end(&mine).unwrap();
        j.end(&theirs).unwrap();
        j.end(&theirs).unwrap();
        assert!(std::fs::read_dir(&dir).unwrap().next().is_none());
        std::fs::remove_dir_all(&dir).ok();
    }
}
