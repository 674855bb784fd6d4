//! Helpers shared by the store tests (included with `mod common;`).
#![allow(dead_code)]

use std::path::PathBuf;

use obscura_sharing::manifest::ImageId;
use obscura_store::NewImage;
use obscura_tokens::Token;

/// A fresh directory under the system temp dir, removed on drop with the databases made for
/// the test.
pub struct TempDir(pub PathBuf, std::cell::RefCell<Vec<Database>>);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "obscura-store-{name}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p, Default::default())
    }

    pub fn db(&self) -> PathBuf {
        self.0.join("node.redb")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

/// A database made for one test, dropped when the test ends.
pub struct Database {
    pub url: String,
}

impl Database {
    /// A fresh database on `server`.
    pub fn new(server: &str, name: &str) -> Database {
        Database {
            url: obscura_store::pg::fresh_database(server, name).unwrap(),
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if let Err(e) = obscura_store::pg::drop_database(&self.url) {
            eprintln!("the test database {} stays: {e}", self.url);
        }
    }
}

/// Deterministic parts of image `i`.
pub struct Parts {
    pub id: ImageId,
    pub manifest: Vec<u8>,
    pub share: Vec<u8>,
    pub hash: [u8; 256],
    pub tokens: [Token; 8],
}

impl Parts {
    pub fn new(i: u32) -> Parts {
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&i.to_be_bytes());
        Parts {
            id: ImageId(id),
            manifest: format!("manifest of {i}").into_bytes(),
            share: (0..1000 + i).map(|b| (b * 7 + i) as u8).collect(),
            hash: [i as u8; 256],
            // Band b of image i shares its token with image i + 1 in band 0 only.
            tokens: std::array::from_fn(|b| {
                let mut t = [0u8; 16];
                t[0] = b as u8;
                if b == 0 {
                    t[1..5].copy_from_slice(&(i / 2).to_be_bytes());
                } else {
                    t[1..5].copy_from_slice(&i.to_be_bytes());
                }
                Token(t)
            }),
        }
    }

    pub fn new_image(&self) -> NewImage<'_> {
        NewImage {
            id: self.id,
            manifest: &self.manifest,
            image_share: &self.share,
            hash_share: &self.hash,
            tokens: self.tokens,
            key_version: 1,
            elements: None,
            retired_tokens: None,
        }
    }
}

/// Where a store of the suite lives: every test runs on each backend there is.
pub enum Backend {
    /// A redb file.
    Redb(PathBuf),
    /// A PostgreSQL database of its own.
    Postgres(String),
    /// A PostgreSQL database of its own, with the image shares as objects in a folder.
    PostgresObjects(String, PathBuf),
}

impl Backend {
    pub fn open(
        &self,
        node: u8,
    ) -> Result<Box<dyn obscura_store::NodeStore>, obscura_store::Error> {
        Ok(match self {
            Backend::Redb(path) => Box::new(obscura_store::Store::open(path, node)?),
            Backend::Postgres(url) => Box::new(obscura_store::PgStore::open(url, node)?),
            Backend::PostgresObjects(url, shares) => Box::new(
                obscura_store::PgStore::open_with_shares(url, node, shares.to_str())?,
            ),
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Backend::Redb(_) => "redb",
            Backend::Postgres(_) => "postgres",
            Backend::PostgresObjects(..) => "postgres with shares as objects",
        }
    }

    /// What a child process is told to open.
    pub fn location(&self) -> String {
        match self {
            Backend::Redb(path) => path.display().to_string(),
            Backend::Postgres(url) => url.clone(),
            Backend::PostgresObjects(url, shares) => format!("{url}|{}", shares.display()),
        }
    }

    pub fn from_location(location: &str) -> Backend {
        match location.split_once('|') {
            Some((url, shares)) => Backend::PostgresObjects(url.into(), shares.into()),
            None if location.starts_with("postgres://") => Backend::Postgres(location.into()),
            None => Backend::Redb(location.into()),
        }
    }
}

/// The PostgreSQL server the suite may use, from `OBSCURA_TEST_POSTGRES` (a URL of a role that
/// may create databases). Without it the suite runs on redb alone and says so; under CI it
/// must be there (`.ci/run` starts a server and sets it).
pub fn postgres_server() -> Option<String> {
    match std::env::var("OBSCURA_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => panic!(
            "CI runs the store suite on PostgreSQL as well: OBSCURA_TEST_POSTGRES is not set \
             (.ci/run starts a server and sets it)"
        ),
        _ => {
            eprintln!(
                "PostgreSQL backend SKIPPED: set OBSCURA_TEST_POSTGRES=postgres://user:password@\
                 127.0.0.1:5432/postgres to run the store suite on it too"
            );
            None
        }
    }
}

/// The backends test `test` runs on: a redb file in `dir`, and, when there is a server, a
/// fresh PostgreSQL database, and another with the shares as objects in `dir`.
pub fn backends(dir: &TempDir, test: &str) -> Vec<Backend> {
    let mut out = vec![Backend::Redb(dir.db())];
    if let Some(server) = postgres_server() {
        let name = format!("obscura_{test}_{}", std::process::id());
        let (plain, objects) = (
            Database::new(&server, &name),
            Database::new(&server, &format!("{name}_o")),
        );
        out.push(Backend::Postgres(plain.url.clone()));
        out.push(Backend::PostgresObjects(
            objects.url.clone(),
            dir.0.join("shares"),
        ));
        dir.1.borrow_mut().extend([plain, objects]);
    }
    out
}

/// The committed images posted under `token` (of key version 1), sorted.
pub fn posted(store: &dyn obscura_store::NodeStore, token: Token) -> Vec<ImageId> {
    store.lookup_at_least(1, &[token], 1).unwrap().0
}
