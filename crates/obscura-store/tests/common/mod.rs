//! Helpers shared by the store tests (included with `mod common;`).
#![allow(dead_code)]

use std::path::PathBuf;

use obscura_sharing::manifest::ImageId;
use obscura_store::NewImage;
use obscura_tokens::Token;

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "obscura-store-{name}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
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
