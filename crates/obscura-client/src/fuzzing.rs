//! Entry points for the `obscura-fuzz` targets, not an API: the reader of the session file,
//! which a damaged disk, an editor or a stray copy can leave holding anything.

use std::path::Path;

use obscura_auth::capability::CapabilityKey;

use crate::session::Sessions;
use crate::Error;

/// Load the session file at `path` as a client of `m` keepers whose capabilities `group`
/// checks does when it starts at time `now`; where it loads, write it back as the client does
/// after a login and return what it wrote. `Ok(None)` when there is no file.
///
/// # Errors
/// What the client reports for a file it cannot read.
pub fn reload_session_file(
    path: &Path,
    m: usize,
    group: &CapabilityKey,
    now: u64,
) -> Result<Option<Vec<u8>>, Error> {
    let sessions = Sessions::default();
    if !sessions.attach(path, m, group, now)? {
        return Ok(None);
    }
    sessions.save(true)?;
    std::fs::read(path)
        .map(Some)
        .map_err(|e| Error::Session(format!("{}: {e}", path.display())))
}
