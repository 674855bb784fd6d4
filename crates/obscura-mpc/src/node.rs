//! The node's side of Stage-2: evaluate every candidate on shares and add the zero mask.

use obscura_sharing::field::{Fp, P};
use obscura_sharing::zero::ZeroSharingKeys;

use crate::{Error, HashShare, NodeAnswer, NodeRequest, HASH_BITS};

/// Answer one request. `stored[m]` is this node's hash share of `request.candidates[m]`, or
/// `None` if it holds no such image; a zero share is drawn for every position either way, so the
/// masks stay aligned across nodes.
///
/// The caller must answer each `query_id` at most once (the zero-sharing context must not
/// repeat): the node server refuses replayed request ids.
///
/// # Errors
/// [`Error::MalformedRequest`] when the request is for another node or `stored` does not match
/// the candidate list.
pub fn answer(
    keys: &ZeroSharingKeys,
    request: &NodeRequest,
    stored: &[Option<&HashShare>],
) -> Result<NodeAnswer, Error> {
    if request.node != keys.node() || request.query.node != keys.node() {
        return Err(Error::MalformedRequest("request is for another node"));
    }
    if stored.len() != request.candidates.len() {
        return Err(Error::MalformedRequest(
            "stored shares do not match the candidate list",
        ));
    }
    let q = &request.query.bits;
    // Σ_j q_j(i), and 2·q_j(i) (each < 2^32), computed once per query.
    let q_sum: Fp = q.iter().copied().sum();
    let q2: [u64; HASH_BITS] = std::array::from_fn(|j| 2 * u64::from(q[j].value()));
    let mut zero = keys.stream(&request.context);
    let values = stored
        .iter()
        .map(|h| {
            let z = zero.next_share();
            h.map(|h| {
                // Σ_j h_j − Σ_j 2·q_j·h_j, with products folded below 2^33 and summed in u64.
                let mut h_sum: u64 = 0;
                let mut cross: u64 = 0;
                for (hj, &q2j) in h.bits.iter().zip(&q2) {
                    let hj = u64::from(hj.value());
                    h_sum += hj;
                    let p = q2j * hj; // < 2^63
                    cross += (p & u64::from(P)) + (p >> 31);
                }
                Fp::new(h_sum) - Fp::new(cross) + q_sum + z
            })
        })
        .collect();
    Ok(NodeAnswer {
        node: keys.node(),
        values,
    })
}
