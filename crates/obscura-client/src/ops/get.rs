//! Rebuilding an image from the nodes' shares, apart from its transport.
//!
//! [`Fetch`] asks every node for its share and the owner-signed manifest; `k` good answers are
//! enough. When they do not rebuild the image and some nodes were left behind as slow, the
//! fetch goes on as [`Again`], which asks those nodes once more, waiting for them. Every share
//! is checked against the manifest that verifies under the owner's key, and the nodes whose
//! share or manifest fails are named.

use ed25519_dalek::VerifyingKey;
use obscura_proto::{FetchBy, NodeBody, ResponseBody};
use obscura_sharing::bytes::ByteShare;
use obscura_sharing::manifest::{ImageId, SignedManifest};

use super::{Answer, Calls};
use crate::fault::{self, Fault, NodeFailure};
use crate::{Error, Rebuilt};

/// A fetch of one image from every node.
pub struct Fetch {
    id: ImageId,
    by: FetchBy,
    owner: VerifyingKey,
}

/// What a fetch's answers lead to.
pub enum Fetched {
    /// The image, or why it could not be rebuilt.
    Done(Result<Rebuilt, Error>),
    /// Too few good shares, and some nodes were left behind: ask them again, waiting.
    Again(Box<Again>, Calls),
}

/// A fetch that asks the nodes it left behind once more.
pub struct Again {
    fetch: Fetch,
    kept: Vec<Answer>,
}

impl Fetch {
    /// Fetch image `id` from nodes `1..=n`, entitled `by`; `k` good answers are enough. Shares
    /// are checked against the manifest that verifies under `owner`.
    pub fn start(
        id: ImageId,
        by: FetchBy,
        n: usize,
        k: usize,
        owner: VerifyingKey,
    ) -> (Fetch, Calls) {
        let fetch = Fetch { id, by, owner };
        let all: Vec<u8> = (1..=n as u8).collect();
        let calls = fetch.calls(&all, k);
        (fetch, calls)
    }

    fn calls(&self, nodes: &[u8], quorum: usize) -> Calls {
        let calls = nodes
            .iter()
            .map(|&x| {
                (
                    x,
                    NodeBody::Fetch {
                        by: self.by.clone(),
                    },
                )
            })
            .collect();
        Calls { calls, quorum }
    }

    /// The nodes' answers.
    pub fn answered(self, answers: Vec<Answer>) -> Fetched {
        let slow: Vec<u8> = answers
            .iter()
            .filter(|(_, r)| matches!(r, Err(Fault::Slow(_))))
            .map(|(x, _)| *x)
            .collect();
        match rebuild(self.id, &answers, &self.owner) {
            Err(Error::NotEnoughShares { .. }) | Err(Error::Nodes { .. }) if !slow.is_empty() => {
                let calls = self.calls(&slow, usize::MAX);
                let kept = answers
                    .into_iter()
                    .filter(|(x, _)| !slow.contains(x))
                    .collect();
                Fetched::Again(Box::new(Again { fetch: self, kept }), calls)
            }
            other => Fetched::Done(other),
        }
    }
}

impl Again {
    /// The answers of the nodes asked again, with those kept from the first time.
    ///
    /// # Errors
    /// As [`Client::get`](crate::Client::get).
    pub fn answered(self, answers: Vec<Answer>) -> Result<Rebuilt, Error> {
        let mut all = self.kept;
        all.extend(answers);
        all.sort_by_key(|(x, _)| *x);
        rebuild(self.fetch.id, &all, &self.fetch.owner)
    }
}

/// Check the fetched shares against the owner's manifest and rebuild the image.
fn rebuild(id: ImageId, fetched: &[Answer], owner: &VerifyingKey) -> Result<Rebuilt, Error> {
    let mut manifests = Vec::new();
    let mut shares = Vec::new();
    let mut faults = Vec::new();
    for (x, r) in fetched {
        let x = *x;
        match r {
            Ok(ResponseBody::Fetch {
                manifest,
                image_share,
            }) => {
                manifests.push((x, manifest));
                shares.push(ByteShare {
                    x,
                    bytes: image_share.clone(),
                });
            }
            Ok(_) => faults.push(NodeFailure {
                node: x,
                fault: Fault::Unexpected("a share"),
            }),
            Err(fault) => faults.push(NodeFailure {
                node: x,
                fault: fault.clone(),
            }),
        }
    }
    // The first manifest that verifies under the owner's key and names this image is the
    // one every share is checked against; a node that sent a different one is named.
    // One that verifies for another image still shows the owner key this client holds right.
    let mut key_shown_right = false;
    let verified = manifests.iter().find_map(|(_, bytes)| {
        let m = SignedManifest::from_bytes(bytes)
            .and_then(|m| m.verify(owner))
            .ok()?;
        key_shown_right = true;
        (m.manifest().image_id == id).then_some((m, bytes))
    });
    let Some((manifest, good_bytes)) = verified else {
        if !manifests.is_empty() {
            let mut failures: Vec<NodeFailure> = manifests
                .iter()
                .map(|(x, _)| NodeFailure {
                    node: *x,
                    fault: Fault::ForeignManifest,
                })
                .chain(faults)
                .collect();
            // No manifest verifies: the owner key this client holds may be another's, unless
            // one verified under it for another image.
            if !key_shown_right {
                fault::doubt(failures.iter_mut().map(|f| &mut f.fault));
            }
            return Err(Error::Nodes {
                what: "get (no node returned a manifest signed by the owner)",
                failures,
            });
        }
        if faults.iter().all(|f| f.fault.is_unknown_image()) {
            return Err(Error::UnknownImage(id));
        }
        return Err(Error::Nodes {
            what: "get",
            failures: faults,
        });
    };
    faults.extend(
        manifests
            .iter()
            .filter(|(_, bytes)| bytes != good_bytes)
            .map(|(x, _)| NodeFailure {
                node: *x,
                fault: Fault::ForeignManifest,
            }),
    );
    let named = |mut faults: Vec<NodeFailure>, culprits: &[obscura_sharing::manifest::Culprit]| {
        faults.extend(culprits.iter().map(|c| NodeFailure {
            node: c.node,
            fault: Fault::BadShare(*c),
        }));
        faults.sort_by_key(|f| f.node);
        faults
    };
    match manifest.reconstruct_naming(shares) {
        Ok((image, culprits)) => Ok(Rebuilt {
            image,
            faults: named(faults, &culprits),
        }),
        Err(obscura_sharing::Error::NotEnoughVerifiedShares {
            need,
            got,
            culprits,
            ..
        }) => Err(Error::NotEnoughShares {
            image: id,
            need,
            got,
            failures: named(faults, &culprits),
        }),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use obscura_proto::ErrorCode;

    use super::*;

    const ID: ImageId = ImageId([3; 16]);

    fn start() -> (Fetch, Calls) {
        let owner = ed25519_dalek::SigningKey::from_bytes(&[5; 32]).verifying_key();
        Fetch::start(ID, FetchBy::Owner { image: ID.0 }, 5, 3, owner)
    }

    #[test]
    fn k_answers_are_enough_to_wait_for_and_the_slow_are_asked_again_only_when_needed() {
        let (fetch, calls) = start();
        assert_eq!(calls.calls.len(), 5);
        assert_eq!(calls.quorum, 3);
        let slow = || Err(Fault::Slow(Duration::from_millis(250)));
        let answers = vec![
            (1, Err(Fault::Unreachable)),
            (2, Err(Fault::Unreachable)),
            (3, slow()),
            (4, Err(Fault::Unreachable)),
            (5, slow()),
        ];
        let Fetched::Again(again, calls) = fetch.answered(answers) else {
            panic!("the slow nodes are asked again")
        };
        let asked: Vec<u8> = calls.calls.iter().map(|(x, _)| *x).collect();
        assert_eq!((asked, calls.quorum), (vec![3, 5], usize::MAX));
        let err = again
            .answered(vec![
                (3, Err(Fault::Unreachable)),
                (5, Err(Fault::Unreachable)),
            ])
            .unwrap_err();
        let Error::Nodes { failures, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(failures.len(), 5, "{err}");
    }

    #[test]
    fn an_image_no_node_holds_is_unknown_without_asking_again() {
        let (fetch, _) = start();
        let unknown = || {
            Err(Fault::Refused {
                code: ErrorCode::UnknownImage,
                message: "no such image".into(),
            })
        };
        let answers = (1..=5).map(|x| (x, unknown())).collect();
        assert!(matches!(
            fetch.answered(answers),
            Fetched::Done(Err(Error::UnknownImage(ID)))
        ));
    }
}
