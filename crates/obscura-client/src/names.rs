//! The file each image was indexed from, as this client recorded it: `names.jsonl` in the
//! cluster directory, one JSON line per image (`{"id": …, "path": …}`), appended as images are
//! indexed and read by `obscura search`, the app and the Python package to name matches. It stays on this machine (owner-only,
//! 0600): no node or keeper ever sees a file name. A client that did not index an image has no
//! name for it (labels, in the ledger, are for that).

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::Path;

use obscura_sharing::manifest::ImageId;

const FILE: &str = "names.jsonl";

/// A file's name as recorded: absolute where the path resolves.
pub fn of_path(path: &Path) -> String {
    std::fs::canonicalize(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

/// Record that `indexed` came from their files (a path, or the name an upload gave).
///
/// # Errors
/// The file cannot be opened (a link, or readable by others) or written.
pub fn record(cluster: &Path, indexed: &[(ImageId, String)]) -> Result<(), String> {
    if indexed.is_empty() {
        return Ok(());
    }
    let mut lines = Vec::new();
    for (id, path) in indexed {
        let line = serde_json::json!({"id": id.to_string(), "path": path});
        lines.extend_from_slice(line.to_string().as_bytes());
        lines.push(b'\n');
    }
    let at = cluster.join(FILE);
    let mut file = obscura_cluster::files::open_private(&at, true).map_err(|e| e.to_string())?;
    // One write of whole lines: runs appending at once do not interleave within a line.
    file.write_all(&lines)
        .map_err(|e| format!("{}: {e}", at.display()))
}

/// The recorded file of each of `ids` that has one (the last recorded, for an id recorded
/// twice). No file yet is no names; a line that does not parse is skipped.
///
/// # Errors
/// The file cannot be opened (a link, or readable by others) or read.
pub fn of(cluster: &Path, ids: &[ImageId]) -> Result<BTreeMap<ImageId, String>, String> {
    let at = cluster.join(FILE);
    if ids.is_empty() || !at.exists() {
        return Ok(BTreeMap::new());
    }
    let wanted: std::collections::BTreeSet<String> = ids.iter().map(|i| i.to_string()).collect();
    let file = obscura_cluster::files::open_private(&at, false).map_err(|e| e.to_string())?;
    let mut found = BTreeMap::new();
    for line in std::io::BufReader::new(file).lines() {
        let line = line.map_err(|e| format!("{}: {e}", at.display()))?;
        let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let (Some(id), Some(path)) = (entry["id"].as_str(), entry["path"].as_str()) else {
            continue;
        };
        if !wanted.contains(id) {
            continue;
        }
        if let Some(image) = ids.iter().find(|i| i.to_string() == id) {
            found.insert(*image, path.to_string());
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn names_survive_odd_paths_and_a_link_is_refused() {
        let dir = std::env::temp_dir().join(format!("obscura-names-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (ImageId([1; 16]), ImageId([2; 16]));
        let odd = PathBuf::from("/no/such/dir/a \"name\"\twith\nnewline.png");
        let odd_name = of_path(&odd);
        record(&dir, &[(a, odd_name.clone()), (b, "/x/b.png".into())]).unwrap();
        record(&dir, &[(b, "/x/b-again.png".into())]).unwrap();
        let found = of(&dir, &[a, b, ImageId([3; 16])]).unwrap();
        assert_eq!(found.get(&a).map(String::as_str), odd.to_str());
        assert_eq!(found.get(&b).map(String::as_str), Some("/x/b-again.png"));
        assert_eq!(found.len(), 2);
        // Someone who can write the folder points the file elsewhere: refused, not followed.
        std::fs::remove_file(dir.join(FILE)).unwrap();
        std::os::unix::fs::symlink(dir.join("elsewhere"), dir.join(FILE)).unwrap();
        assert!(record(&dir, &[(a, odd_name)]).is_err());
        assert!(!dir.join("elsewhere").exists());
        std::fs::remove_dir_all(&dir).ok();
    }
}
