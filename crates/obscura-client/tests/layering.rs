//! The client stands beside the servers, not on them: nothing it depends on, directly or through
//! the workspace's crates, is a server, a store or a server framework. A library user who only
//! searches a cluster builds neither axum nor redb, and a change that makes the client reach into
//! a server again fails here.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// What a client must not be built on.
const SERVER_SIDE: &[&str] = &[
    "obscura-node",
    "obscura-keeper-server",
    "obscura-server",
    "obscura-store",
    "axum",
    "redb",
    "rcgen",
    "tokio-rustls",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// The names in `[dependencies]` of a manifest that are always built (not optional).
fn dependencies(manifest: &Path) -> Vec<String> {
    let text =
        std::fs::read_to_string(manifest).unwrap_or_else(|e| panic!("{}: {e}", manifest.display()));
    let mut section = String::new();
    let mut names = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.to_string();
            continue;
        }
        if section != "[dependencies]" || line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.contains("optional = true") {
            continue;
        }
        let name = line
            .split(['=', '.', ' '])
            .next()
            .expect("a dependency line names its crate");
        names.push(name.to_string());
    }
    names
}

#[test]
fn the_client_depends_on_no_server_store_or_server_framework() {
    let root = workspace();
    let mut seen = BTreeSet::new();
    let mut todo = vec![(
        "obscura-client".to_string(),
        vec!["obscura-client".to_string()],
    )];
    while let Some((name, path)) = todo.pop() {
        assert!(
            !SERVER_SIDE.contains(&name.as_str()),
            "the client is built on {name}: {}",
            path.join(" → ")
        );
        if !seen.insert(name.clone()) {
            continue;
        }
        let manifest = root.join("crates").join(&name).join("Cargo.toml");
        if !manifest.exists() {
            continue; // not a workspace crate: only its name is checked
        }
        for dep in dependencies(&manifest) {
            let mut to = path.clone();
            to.push(dep.clone());
            todo.push((dep, to));
        }
    }
    // The walk went through the crates the client does use.
    for used in [
        "obscura-cluster",
        "obscura-proto",
        "obscura-keeper",
        "reqwest",
    ] {
        assert!(seen.contains(used), "{used} not reached: {seen:?}");
    }
}
