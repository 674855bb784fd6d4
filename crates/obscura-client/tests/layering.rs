//! The client stands beside the servers, not on them: nothing it is built on, directly or through
//! the workspace's crates (with the features it asks them for), is a server, a store, a server
//! framework or the dealer's certificate maker. A library user who only searches a cluster builds
//! neither axum nor redb, and a change that makes the client reach into a server again fails here.
//!
//! The manifests are read as written: `[dependencies]` and `[target.*.dependencies]` sections,
//! `[dependencies.NAME]` tables, renamed packages, optional dependencies and the features that
//! turn them on. Crates from outside the workspace are checked by name; their own dependencies
//! are theirs (reqwest's TLS stack, say).

use std::collections::{BTreeMap, BTreeSet};
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
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// One dependency as a manifest declares it.
#[derive(Debug, Default, Clone)]
struct Dependency {
    /// The package's name (after any `package = "..."` rename).
    package: String,
    optional: bool,
    default_features: bool,
    features: Vec<String>,
}

/// A manifest's dependencies (by the name the manifest uses) and its features.
#[derive(Debug, Default)]
struct Manifest {
    dependencies: BTreeMap<String, Dependency>,
    features: BTreeMap<String, Vec<String>>,
}

/// The quoted strings of `text`, in order.
fn strings(text: &str) -> Vec<String> {
    text.split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// Apply one `key = value` of a dependency's inline table or table section.
fn apply(dep: &mut Dependency, key: &str, value: &str) {
    match key.trim() {
        "optional" => dep.optional = value.trim() == "true",
        "default-features" => dep.default_features = value.trim() != "false",
        "features" => dep.features = strings(value),
        "package" => dep.package = strings(value).remove(0),
        _ => {}
    }
}

fn read(path: &Path) -> Manifest {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut manifest = Manifest::default();
    // Where the lines go: a dependency list, one dependency's table, the features, or elsewhere.
    enum Into {
        List,
        Table(String),
        Features,
        Other,
    }
    let mut into = Into::Other;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let parts: Vec<&str> = header.split('.').collect();
            let deps_at = parts.iter().position(|p| *p == "dependencies");
            let normal = deps_at.is_some_and(|i| i == 0 || parts[0] == "target");
            into = match (header, normal, deps_at) {
                ("features", _, _) => Into::Features,
                (_, true, Some(i)) if i + 1 == parts.len() => Into::List,
                (_, true, Some(i)) => {
                    let name = parts[i + 1].to_string();
                    manifest.dependencies.insert(
                        name.clone(),
                        Dependency {
                            package: name.clone(),
                            default_features: true,
                            ..Dependency::default()
                        },
                    );
                    Into::Table(name)
                }
                _ => Into::Other,
            };
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        match &into {
            Into::Features => {
                manifest
                    .features
                    .insert(key.trim().to_string(), strings(value));
            }
            Into::Table(name) => {
                let dep = manifest.dependencies.get_mut(name).expect("inserted");
                apply(dep, key, value);
            }
            Into::List => {
                let name = key.trim().split('.').next().expect("a name").to_string();
                let mut dep = Dependency {
                    package: name.clone(),
                    default_features: true,
                    ..Dependency::default()
                };
                let inline = value.trim();
                if let Some(fields) = inline.strip_prefix('{').and_then(|v| v.strip_suffix('}')) {
                    // Split on commas outside brackets.
                    let (mut depth, mut start) = (0, 0);
                    for (i, c) in fields.char_indices() {
                        match c {
                            '[' => depth += 1,
                            ']' => depth -= 1,
                            ',' if depth == 0 => {
                                if let Some((k, v)) = fields[start..i].split_once('=') {
                                    apply(&mut dep, k, v);
                                }
                                start = i + 1;
                            }
                            _ => {}
                        }
                    }
                    if let Some((k, v)) = fields[start..].split_once('=') {
                        apply(&mut dep, k, v);
                    }
                }
                manifest.dependencies.insert(name, dep);
            }
            Into::Other => {}
        }
    }
    manifest
}

/// The packages `manifest` builds with the features `asked` turned on: its non-optional
/// dependencies and the optional ones those features (and `default`, unless refused) enable,
/// each with the features asked of it.
fn built(
    manifest: &Manifest,
    asked: &[String],
    defaults: bool,
) -> Vec<(String, Vec<String>, bool)> {
    let mut on: BTreeSet<String> = asked.iter().cloned().collect();
    if defaults && manifest.features.contains_key("default") {
        on.insert("default".into());
    }
    let mut enabled_deps = BTreeSet::new();
    let mut dep_features: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut todo: Vec<String> = on.iter().cloned().collect();
    while let Some(feature) = todo.pop() {
        for item in manifest.features.get(&feature).into_iter().flatten() {
            if let Some(dep) = item.strip_prefix("dep:") {
                enabled_deps.insert(dep.to_string());
            } else if let Some((dep, f)) = item.split_once('/') {
                let dep = dep.trim_end_matches('?');
                if !item.contains("?/") {
                    enabled_deps.insert(dep.to_string());
                }
                dep_features
                    .entry(dep.to_string())
                    .or_default()
                    .push(f.to_string());
            } else if manifest.dependencies.contains_key(item) {
                enabled_deps.insert(item.clone());
            } else if on.insert(item.clone()) {
                todo.push(item.clone());
            }
        }
    }
    manifest
        .dependencies
        .iter()
        .filter(|(name, dep)| !dep.optional || enabled_deps.contains(*name))
        .map(|(name, dep)| {
            let mut features = dep.features.clone();
            features.extend(dep_features.get(name).cloned().unwrap_or_default());
            (dep.package.clone(), features, dep.default_features)
        })
        .collect()
}

#[test]
fn the_client_depends_on_no_server_store_or_server_framework() {
    let root = workspace();
    let mut seen = BTreeSet::new();
    let mut todo = vec![(
        "obscura-client".to_string(),
        Vec::new(),
        true,
        vec!["obscura-client".to_string()],
    )];
    while let Some((name, features, defaults, path)) = todo.pop() {
        assert!(
            !SERVER_SIDE.contains(&name.as_str()),
            "the client is built on {name}: {}",
            path.join(" → ")
        );
        let manifest = root.join("crates").join(&name).join("Cargo.toml");
        if !seen.insert((name.clone(), features.clone())) || !manifest.exists() {
            continue; // seen already, or not a workspace crate: only its name is checked
        }
        for (dep, asked, dep_defaults) in built(&read(&manifest), &features, defaults) {
            let mut to = path.clone();
            to.push(if asked.is_empty() {
                dep.clone()
            } else {
                format!("{dep}[{}]", asked.join(","))
            });
            todo.push((dep, asked, dep_defaults, to));
        }
    }
    // The walk went through the crates the client does use.
    let names: BTreeSet<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
    for used in [
        "obscura-cluster",
        "obscura-proto",
        "obscura-keeper",
        "reqwest",
    ] {
        assert!(names.contains(used), "{used} not reached: {names:?}");
    }
}

/// The reader sees what the walk relies on: a feature that turns on an optional dependency, a
/// dependency table, a renamed package and a target section.
#[test]
fn the_manifest_reader_follows_features_tables_renames_and_targets() {
    let dir = std::env::temp_dir().join(format!("obscura-layering-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("Cargo.toml");
    std::fs::write(
        &path,
        r#"
[package]
name = "x"

[features]
default = ["fast"]
fast = ["dep:axum"]
deal = ["dep:rcgen", "tls/extra"]

[dependencies]
rcgen = { workspace = true, optional = true }
axum = { version = "1", optional = true }
tls = { package = "tokio-rustls", version = "1", default-features = false }
plain.workspace = true

[dependencies.store]
package = "redb"
version = "2"

[target.'cfg(unix)'.dependencies]
libc = "0.2"

[dev-dependencies]
obscura-node.workspace = true
"#,
    )
    .unwrap();
    let manifest = read(&path);
    let names = |asked: &[&str], defaults| {
        let asked: Vec<String> = asked.iter().map(|s| s.to_string()).collect();
        built(&manifest, &asked, defaults)
            .into_iter()
            .map(|(n, f, _)| format!("{n}{f:?}"))
            .collect::<BTreeSet<_>>()
    };
    let without = names(&[], false);
    assert_eq!(
        without,
        ["libc[]", "plain[]", "redb[]", "tokio-rustls[]"]
            .map(String::from)
            .into()
    );
    assert!(names(&[], true).contains("axum[]"));
    let deal = names(&["deal"], false);
    assert!(deal.contains("rcgen[]") && deal.contains("tokio-rustls[\"extra\"]"));
    std::fs::remove_dir_all(&dir).ok();
}
