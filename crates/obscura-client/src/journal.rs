//! The indexing journal: a file per batch of images being indexed, written (and synced) before
//! any node is asked to prepare them and removed only once every node committed them or every
//! node has forgotten them. An entry left behind — the client was killed, or a node went down
//! between commit and the clean-up — names images that may sit at some nodes but were never
//! reported as indexed; [`Client::finish_interrupted`](crate::Client::finish_interrupted)
//! deletes them everywhere.
//!
//! An entry is named after the batch's first image id. It holds the writer's process id and a
//! number drawn by the writing client, so a second client sharing the directory leaves an index
//! still in flight alone, then the other ids of the batch, one per line. Within one process (a
//! long-running one, such as `obscura serve` or a Python session, makes a client per call) an
//! entry is abandoned once its writing client is dropped and the time limit of a call has passed
//! since (a call cancelled by its caller may still have requests on the wire until then), not
//! only when the process exits. Clients that share a directory must see each other's processes
//! (one machine, one process namespace): a writer is judged by its process id.
//!
//! An entry appears whole: it is written beside its name and renamed, so a reader never takes a
//! half-written header for a gone writer's.
//!
//! A client that reports its images itself (the `obscura index` command, which prints them)
//! keeps an entry past the commit, marked `committed`, until it says each image reached its user
//! ([`Journal::acknowledge`]): an entry left behind then names images that every node holds but
//! nobody was told of, which the next run reports instead of deleting.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

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
    /// Committed entries waiting for their images to be reported: entry → ids not yet.
    unreported: Mutex<Vec<(ImageId, Vec<ImageId>)>>,
    /// The time limit of one call: how long after this client is dropped its entries stay its.
    linger: Duration,
}

/// An entry nobody is working on.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Abandoned {
    /// The entry's name: the batch's first image.
    pub(crate) entry: ImageId,
    /// Its images (the entry's name first, unless it was committed and that one reported).
    pub(crate) ids: Vec<ImageId>,
    /// Every node committed them; they were not all reported.
    pub(crate) committed: bool,
}

const COMMITTED: &str = "committed";

/// The writers of this process that may still work on their entries: those whose client exists
/// (`None`), and those dropped that may have a call on the wire until the instant they hold.
static LIVE: Mutex<BTreeMap<u64, Option<Instant>>> = Mutex::new(BTreeMap::new());

/// The live writers, those dropped longer than their time limit ago forgotten (so a process
/// that makes a client per call keeps no more than the clients of the last time limit).
fn live() -> std::sync::MutexGuard<'static, BTreeMap<u64, Option<Instant>>> {
    let mut live = LIVE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let now = Instant::now();
    live.retain(|_, until| until.is_none_or(|t| t > now));
    live
}

/// When the file `e` was last written; `None` once it is gone (its writer renamed or removed
/// it after the folder was listed).
fn written(e: &std::fs::DirEntry) -> std::io::Result<Option<SystemTime>> {
    match e.metadata().and_then(|m| m.modified()) {
        Ok(t) => Ok(Some(t)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err),
    }
}

/// Whether the writer of `entry` (a file written at `written`) is gone: a client of this
/// process that was dropped a call's time limit ago (or of an earlier process that had this
/// one's id), or a process that is no longer running. A header that names no process (a file
/// being written) is some writer's until [`ABANDONED_AFTER`].
fn writer_is_gone(entry: &EntryText, written: SystemTime) -> bool {
    let Some(pid) = entry.pid else {
        return written.elapsed().is_ok_and(|age| age > ABANDONED_AFTER);
    };
    if pid == std::process::id() {
        return !entry.writer.is_some_and(|w| live().contains_key(&w));
    }
    process_gone(pid, written)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Whether another process, which wrote an entry, can no longer be running.
fn process_gone(pid: u32, written: SystemTime) -> bool {
    if cfg!(target_os = "linux") {
        return !Path::new(&format!("/proc/{pid}")).exists();
    }
    written.elapsed().is_ok_and(|age| age > ABANDONED_AFTER)
}

impl Journal {
    /// The journal in `dir`, for a client whose calls end within `linger`.
    pub(crate) fn new(dir: PathBuf, linger: Duration) -> Journal {
        let writer = rand_core::RngCore::next_u64(&mut rand_core::OsRng);
        live().insert(writer, None);
        Journal {
            dir,
            writer,
            in_flight: Mutex::new(HashSet::new()),
            unreported: Mutex::new(Vec::new()),
            linger,
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
        self.replace(first, &text)
    }

    /// The batch of the entry `first` is committed everywhere and `ids` (not empty) wait to be
    /// reported: the entry is rewritten as committed, naming them, durable when this returns.
    pub(crate) fn committed(&self, first: &ImageId, ids: &[ImageId]) -> std::io::Result<()> {
        self.rewrite_committed(first, ids)?;
        self.unreported().push((*first, ids.to_vec()));
        Ok(())
    }

    /// Image `id` reached its user: it leaves its committed entry, and the entry goes with its
    /// last image. An id of no waiting entry is ignored.
    pub(crate) fn acknowledge(&self, id: &ImageId) -> std::io::Result<()> {
        // Held across the rewrite: two acknowledgements of one entry write it one after the
        // other, the later with fewer ids.
        let mut unreported = self.unreported();
        let Some(at) = unreported.iter().position(|(_, ids)| ids.contains(id)) else {
            return Ok(());
        };
        let (first, ids) = &mut unreported[at];
        ids.retain(|x| x != id);
        let first = *first;
        if ids.is_empty() {
            unreported.remove(at);
            self.end(&first)
        } else {
            self.rewrite_committed(&first, ids)
        }
    }

    /// Whether the writer of the file `e` (an entry's header) is another process that is gone.
    fn writer_gone(&self, e: &std::fs::DirEntry) -> std::io::Result<bool> {
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        let entry = EntryText::parse(&text);
        if entry.writer == Some(self.writer) {
            return Ok(false);
        }
        Ok(written(e)?.is_some_and(|at| writer_is_gone(&entry, at)))
    }

    fn unreported(&self) -> std::sync::MutexGuard<'_, Vec<(ImageId, Vec<ImageId>)>> {
        self.unreported
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Replace the entry `first` by a committed one naming `ids`.
    fn rewrite_committed(&self, first: &ImageId, ids: &[ImageId]) -> std::io::Result<()> {
        let mut text = format!("{} {} {COMMITTED}\n", std::process::id(), self.writer);
        for id in ids {
            text.push_str(&format!("{id}\n"));
        }
        self.replace(first, &text)
    }

    /// Make `text` the entry `first`, whole: written beside it, synced, renamed over it.
    fn replace(&self, first: &ImageId, text: &str) -> std::io::Result<()> {
        let partial = self.dir.join(format!("{first}.partial"));
        let mut f = std::fs::File::create(&partial)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&partial, self.path(first))?;
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

    /// Entries nobody is working on: interrupted indexing.
    pub(crate) fn abandoned(&self) -> std::io::Result<Vec<Abandoned>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for e in entries {
            let e = e?;
            let name = e.file_name();
            let name = name.to_str().unwrap_or_default();
            if let Some(stem) = name.strip_suffix(".partial") {
                // A write its writer did not finish: the entry it was to replace stands (or, for a
                // new entry, none was made, and no node was asked).
                if stem.parse::<ImageId>().is_ok() && self.writer_gone(&e)? {
                    match std::fs::remove_file(e.path()) {
                        // Another cleaner of the folder was first.
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                        _ => {}
                    }
                }
                continue;
            }
            let Ok(id) = name.parse() else {
                continue; // not ours
            };
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            let entry = EntryText::parse(&text);
            let Some(at) = written(&e)? else {
                continue; // settled since the folder was listed
            };
            let abandoned = if entry.writer == Some(self.writer) {
                !self.in_flight().contains(&id)
            } else {
                writer_is_gone(&entry, at)
            };
            if abandoned {
                let ids = match entry.committed {
                    true => entry.ids,
                    false => std::iter::once(id).chain(entry.ids).collect(),
                };
                out.push(Abandoned {
                    entry: id,
                    ids,
                    committed: entry.committed,
                });
            }
        }
        out.sort();
        Ok(out)
    }
}

impl Drop for Journal {
    /// Its entries left unsettled are abandoned once a call's time limit has passed, for the
    /// other clients of this process too.
    fn drop(&mut self) {
        live().insert(self.writer, Some(Instant::now() + self.linger));
    }
}

/// A journal entry's text as it is read back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EntryText {
    /// The writing process's id.
    pub pid: Option<u32>,
    /// The writer's number within that process.
    pub writer: Option<u64>,
    /// Whether every node committed the batch (the entry was rewritten whole and renamed).
    pub committed: bool,
    /// The image ids of its lines: of a committed entry, every line's (each an image nobody
    /// was told of); of another, those before the first line that does not parse (a crash tore
    /// the entry there while it was written, before any node was asked).
    pub ids: Vec<ImageId>,
}

impl EntryText {
    /// Read an entry's text: a header line `PID WRITER [committed]`, then an image id a line.
    pub fn parse(text: &str) -> EntryText {
        let mut lines = text.lines();
        let header: Vec<&str> = lines
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        let field = |i: usize| header.get(i).and_then(|f| f.parse::<u64>().ok());
        let committed = header.get(2) == Some(&COMMITTED);
        EntryText {
            pid: field(0).and_then(|p| u32::try_from(p).ok()),
            writer: field(1),
            committed,
            ids: match committed {
                true => lines.filter_map(|l| l.parse().ok()).collect(),
                false => lines.map_while(|l| l.parse().ok()).collect(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_of_a_live_writer_are_left_alone_and_of_a_dead_one_reported() {
        let dir = std::env::temp_dir().join(format!("obscura-journal-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        let j = Journal::new(dir.clone(), Duration::ZERO);
        let mine = ImageId([1; 16]);
        let also_mine = ImageId([3; 16]);
        j.begin(&[mine, also_mine]).unwrap();
        assert!(j.abandoned().unwrap().is_empty());
        // Another client of this process leaves it alone while its writer lives.
        let other = Journal::new(dir.clone(), Duration::ZERO);
        assert!(other.abandoned().unwrap().is_empty());
        // Released without being settled: abandoned.
        j.release(&mine);
        let batch = |ids: Vec<ImageId>| Abandoned {
            entry: ids[0],
            ids,
            committed: false,
        };
        assert_eq!(j.abandoned().unwrap(), [batch(vec![mine, also_mine])]);
        // An entry written by a process that has exited.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let theirs = ImageId([2; 16]);
        std::fs::write(j.path(&theirs), format!("{dead} 7")).unwrap();
        if cfg!(target_os = "linux") {
            assert_eq!(
                j.abandoned().unwrap(),
                [batch(vec![mine, also_mine]), batch(vec![theirs])]
            );
        }
        j.end(&mine).unwrap();
        j.end(&theirs).unwrap();
        j.end(&theirs).unwrap();
        assert!(std::fs::read_dir(&dir).unwrap().next().is_none());
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A long-running process (the app, a Python session) makes a client per call: an entry one
    /// of them left unsettled is another's to finish once that client is dropped, without
    /// waiting for the process to exit; so is one of an earlier process that had this one's id.
    #[test]
    fn an_entry_of_a_dropped_client_of_this_process_is_abandoned() {
        let dir = std::env::temp_dir().join(format!("obscura-journal-d-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        let linger = Duration::from_millis(300);
        let failed = Journal::new(dir.clone(), linger);
        let ids = [ImageId([4; 16]), ImageId([5; 16])];
        failed.begin(&ids).unwrap();
        failed.release(&ids[0]);
        let next = Journal::new(dir.clone(), Duration::ZERO);
        assert!(next.abandoned().unwrap().is_empty(), "its writer lives");
        // Dropped, as by a caller that cancelled its call: its requests may still be on the
        // wire for a call's time limit, and its entry is its own until then.
        let writer = failed.writer;
        drop(failed);
        assert!(
            next.abandoned().unwrap().is_empty(),
            "a call may be on the wire"
        );
        std::thread::sleep(linger);
        assert!(
            !live().contains_key(&writer),
            "forgotten once its time is up"
        );
        let left = Abandoned {
            entry: ids[0],
            ids: ids.to_vec(),
            committed: false,
        };
        assert_eq!(next.abandoned().unwrap(), std::slice::from_ref(&left));
        // An earlier process with this one's id, or a header that names no writer.
        next.end(&ids[0]).unwrap();
        let own = std::process::id();
        std::fs::write(next.path(&ids[0]), format!("{own} 7\n{}\n", ids[1])).unwrap();
        assert_eq!(next.abandoned().unwrap(), std::slice::from_ref(&left));
        std::fs::write(next.path(&ids[0]), format!("{own}\n{}\n", ids[1])).unwrap();
        assert_eq!(next.abandoned().unwrap(), [left]);
        // A file still being written names no process yet: it is somebody's, left alone.
        std::fs::write(next.path(&ids[0]), "").unwrap();
        let partial = dir.join(format!("{}.partial", ids[1]));
        std::fs::write(&partial, "").unwrap();
        assert!(next.abandoned().unwrap().is_empty());
        assert!(partial.exists());
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A committed entry lives until its last image is acknowledged; left behind by a writer
    /// that is gone, it names the images never acknowledged, as committed.
    #[test]
    fn a_committed_entry_names_its_unreported_images_until_the_last_is_acknowledged() {
        let dir = std::env::temp_dir().join(format!("obscura-journal-c-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        let j = Journal::new(dir.clone(), Duration::ZERO);
        let ids = [ImageId([1; 16]), ImageId([2; 16]), ImageId([3; 16])];
        j.begin(&ids).unwrap();
        j.committed(&ids[0], &ids).unwrap();
        j.acknowledge(&ids[1]).unwrap();
        // Its writer stops working on it (as if gone): the two unreported, as committed.
        j.release(&ids[0]);
        assert_eq!(
            j.abandoned().unwrap(),
            [Abandoned {
                entry: ids[0],
                ids: vec![ids[0], ids[2]],
                committed: true
            }]
        );
        j.acknowledge(&ids[0]).unwrap();
        j.acknowledge(&ids[2]).unwrap();
        j.acknowledge(&ids[2]).unwrap();
        assert!(std::fs::read_dir(&dir).unwrap().next().is_none());
        // A rewrite left half-done by a process that is gone is cleared, the entry untouched.
        if cfg!(target_os = "linux") {
            let mut child = std::process::Command::new("true").spawn().unwrap();
            let dead = child.id();
            child.wait().unwrap();
            let partial = dir.join(format!("{}.partial", ids[1]));
            std::fs::write(&partial, format!("{dead} 7 committed\n")).unwrap();
            assert!(j.abandoned().unwrap().is_empty());
            assert!(!partial.exists());
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
