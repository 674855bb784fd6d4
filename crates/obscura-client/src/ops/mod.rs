//! The client's protocols apart from their transport: each run is a value consumed step by
//! step by the servers' answers (as rustls's handshake states, opaque-ke's `start`/`finish` and
//! frost's rounds are), taking the time and an rng from its caller and doing no I/O.
//! [`Client`](crate::Client) keeps the transport (HTTPS, timeouts, quorums, concurrency) and
//! drives them.

pub mod search;
