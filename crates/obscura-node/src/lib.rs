//! The Obscura node server.
//!
//! A node is a real process with its own embedded store ([`obscura_store`]). It serves the API of
//! [`obscura_proto`] as `POST /v1/<op>` over TLS ([`obscura_server`]), accepting only clients
//! that present a certificate from the cluster CA ([`obscura_cluster::tls`]). Configuration and
//! sealed secrets are read by [`config::LoadedNode::load`]; [`server::serve`] runs until told to
//! stop.
//!
//! Running node 1 of a cluster directory `obscura cluster init` made, as `obscura node run`
//! does (compiled here, not run: it needs the cluster's files):
//!
//! ```no_run
//! use obscura_node::config::LoadedNode;
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! // Refused when its folder, wrapping key, sealed secrets or store are open to other users,
//! // or when the secrets do not open as node 1's.
//! let node = LoadedNode::load(std::path::Path::new("cluster/node1/node.json"))?;
//! let listener = tokio::net::TcpListener::bind(&node.config.listen).await?;
//! // Until ctrl-c; the audit log's head is signed on the way out.
//! let stop = async {
//!     let _ = tokio::signal::ctrl_c().await;
//! };
//! obscura_node::server::serve(node, listener, stop).await?;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod ledger;
pub mod server;
