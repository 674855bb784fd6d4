//! Obscura's laboratory: what shows and measures the system rather than runs it.
//!
//! - [`demo`]: a cluster of local processes indexes the test photos, searches with edited
//!   variants, rebuilds a match, checks roles, audit logs and a node down, and says whether each
//!   check held;
//! - [`eval`]: recall and latency over a profile of photo variants, with plots;
//! - [`bench`]: speed of every stage against its plaintext baseline, and query latency at
//!   several stored sizes;
//! - [`load`]: searchers and an indexer against a cluster for a while, with memory over time;
//! - [`local`]: the node and keeper processes of a cluster directory on this machine (`obscura
//!   cluster up`).
//!
//! It runs inside the `obscura` binary (the CLI's default feature `lab`): the processes it
//! starts are that binary's `node run` and `keeper run`. A production build
//! (`cargo build --release -p obscura-cli --no-default-features`) leaves it out, and with it the
//! image encoders the variants need.
#![forbid(unsafe_code)]

pub use error::Error;

pub mod bench;
pub mod demo;
mod error;
pub mod eval;
mod harness;
pub mod load;
pub mod local;
mod plot;
mod profile;
pub mod room;
mod variants;
