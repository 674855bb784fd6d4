//! The client's protocols apart from their transport: each run is a value consumed step by
//! step by the servers' answers (as rustls's handshake states, opaque-ke's `start`/`finish` and
//! frost's rounds are), taking the time and an rng from its caller and doing no I/O.
//! [`Client`](crate::Client) keeps the transport (HTTPS, timeouts, quorums, concurrency) and
//! drives them.

pub mod get;
pub mod index;
pub mod search;

use obscura_proto::{NodeBody, ResponseBody};

use crate::Fault;

/// Requests for some nodes, and how many good answers the step needs: a transport may stop
/// waiting for the others once that many have come.
#[derive(Debug)]
pub struct Calls {
    /// `(node, request)`.
    pub calls: Vec<(u8, NodeBody)>,
    /// Good answers needed.
    pub quorum: usize,
}

/// One node's answer to a call, or why there is none.
pub type Answer = (u8, Result<ResponseBody, Fault>);
