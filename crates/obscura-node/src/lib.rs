//! The Obscura node server.
//!
//! A node is a real process with its own embedded store ([`obscura_store`]). It serves the API of
//! [`obscura_proto`] as `POST /v1/<op>` over TLS ([`obscura_server`]), accepting only clients
//! that present a certificate from the cluster CA ([`obscura_cluster::tls`]). Configuration and
//! sealed secrets are read by [`config::LoadedNode::load`]; [`server::serve`] runs until told to
//! stop.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod server;
