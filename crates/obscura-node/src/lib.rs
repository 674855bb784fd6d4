//! The Obscura node server. This first part holds the cluster's TLS material: every node and
//! client authenticates with a certificate from the cluster CA made at `cluster init`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod tls;
