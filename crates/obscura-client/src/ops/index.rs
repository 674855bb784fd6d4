//! Indexing a batch of images, apart from its transport and its journal.
//!
//! Every node must take every image, so the batch is written in two steps, each to every node
//! and waited for: [`Preparing`] sends each node its shares, tokens and the owner-signed
//! manifests, which the node keeps aside; [`Committing`] makes them searchable at once. A node
//! that fails either step fails the batch, and what was written must be deleted ([`Undo`]):
//! an image is never searchable at some nodes only. The client keeps the journal around these
//! steps, so that a client killed half-way leaves nothing for a later run to miss.

use obscura_proto::{NodeBody, PreparedImage, ResponseBody};
use obscura_sharing::manifest::ImageId;

use super::{Answer, Calls};
use crate::fault::{Fault, NodeFailure};
use crate::{IndexTokens, Upload};

/// A batch at the nodes' first step.
pub struct Preparing {
    ids: Vec<ImageId>,
    n: usize,
}

/// A batch prepared at every node, to be committed.
pub struct Committing {
    ids: Vec<ImageId>,
}

/// A batch that failed at some node: its images are to be deleted from every node.
#[derive(Debug)]
pub struct Undo {
    /// The step that failed.
    pub what: &'static str,
    /// Each node that failed it, and why.
    pub failures: Vec<NodeFailure>,
    /// The batch's images.
    pub ids: Vec<ImageId>,
}

impl Preparing {
    /// Prepare `uploads` with their `tokens` (`tokens[i][x - 1]`: image `i`'s at node `x`)
    /// under `key_version` at nodes `1..=n`.
    pub fn start(
        uploads: Vec<Upload>,
        tokens: Vec<Vec<IndexTokens>>,
        key_version: u32,
        n: usize,
    ) -> (Preparing, Calls) {
        let ids: Vec<ImageId> = uploads.iter().map(|u| u.id).collect();
        // Each node's request owns its shares: move them, clone only the small manifests.
        let mut per_node: Vec<Vec<PreparedImage>> = vec![Vec::with_capacity(ids.len()); n];
        for (upload, tokens) in uploads.into_iter().zip(tokens) {
            for ((images, part), t) in per_node.iter_mut().zip(upload.parts).zip(tokens) {
                images.push(PreparedImage {
                    image: upload.id.0,
                    manifest: upload.manifest.clone(),
                    image_share: part.image_share,
                    hash_share: part.hash_share.to_vec(),
                    tokens: t.tokens.iter().map(|t| t.0).collect(),
                    elements: t.elements.map(|e| e.to_vec()).unwrap_or_default(),
                });
            }
        }
        let calls = (1..=n as u8)
            .zip(per_node)
            .map(|(x, images)| {
                let body = NodeBody::Prepare {
                    key_version,
                    images,
                };
                (x, body)
            })
            .collect();
        (Preparing { ids, n }, every_answer(calls))
    }

    /// Every node's answer to the first step.
    ///
    /// # Errors
    /// [`Undo`] when any node failed it.
    pub fn answered(self, answers: Vec<Answer>) -> Result<(Committing, Calls), Undo> {
        let failures = failed(answers);
        if !failures.is_empty() {
            return Err(Undo {
                what: "indexing (prepare)",
                failures,
                ids: self.ids,
            });
        }
        let images: Vec<[u8; 16]> = self.ids.iter().map(|id| id.0).collect();
        let calls = (1..=self.n as u8)
            .map(|x| {
                let body = NodeBody::Commit {
                    images: images.clone(),
                };
                (x, body)
            })
            .collect();
        Ok((Committing { ids: self.ids }, every_answer(calls)))
    }
}

impl Committing {
    /// Every node's answer to the second step: the images are searchable at every node.
    ///
    /// # Errors
    /// [`Undo`] when any node failed it.
    pub fn answered(self, answers: Vec<Answer>) -> Result<Vec<ImageId>, Undo> {
        let failures = failed(answers);
        if failures.is_empty() {
            Ok(self.ids)
        } else {
            Err(Undo {
                what: "indexing (commit)",
                failures,
                ids: self.ids,
            })
        }
    }
}

/// Calls that wait for every node.
fn every_answer(calls: Vec<(u8, NodeBody)>) -> Calls {
    Calls {
        calls,
        quorum: usize::MAX,
    }
}

/// Each node that did not acknowledge the step.
fn failed(answers: Vec<Answer>) -> Vec<NodeFailure> {
    answers
        .into_iter()
        .filter_map(|(node, r)| match r {
            Ok(ResponseBody::Ok) => None,
            Ok(_) => Some(NodeFailure {
                node,
                fault: Fault::Unexpected("an acknowledgement"),
            }),
            Err(fault) => Some(NodeFailure { node, fault }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acknowledged(x: u8) -> Answer {
        (x, Ok(ResponseBody::Ok))
    }

    #[test]
    fn a_batch_is_committed_only_when_every_node_prepared_it() {
        let (preparing, calls) = Preparing::start(Vec::new(), Vec::new(), 1, 3);
        assert_eq!(calls.calls.len(), 3);
        assert_eq!(calls.quorum, usize::MAX);
        // A node answering a write with anything but its acknowledgement fails the batch, and
        // nothing is committed anywhere.
        let other = (
            3,
            Ok(ResponseBody::Listed {
                handles: Vec::new(),
            }),
        );
        let undo = match preparing.answered(vec![acknowledged(1), acknowledged(2), other]) {
            Err(undo) => undo,
            Ok(_) => panic!("node 3 did not prepare"),
        };
        assert_eq!(undo.what, "indexing (prepare)");
        assert_eq!(undo.failures.len(), 1);
        assert!(undo.failures[0].fault.is_misbehaviour());

        let (preparing, _) = Preparing::start(Vec::new(), Vec::new(), 1, 3);
        let Ok((committing, calls)) = preparing.answered((1..=3).map(acknowledged).collect())
        else {
            panic!("every node prepared")
        };
        assert!(calls
            .calls
            .iter()
            .all(|(_, body)| matches!(body, NodeBody::Commit { .. })));
        let undo = committing
            .answered(vec![
                acknowledged(1),
                (2, Err(Fault::Unreachable)),
                acknowledged(3),
            ])
            .unwrap_err();
        assert_eq!((undo.what, undo.failures[0].node), ("indexing (commit)", 2));
    }
}
