//! The clean room at a node: a challenge per run, and a release of this node's shares of a
//! work's inputs to a worker the node appraises itself, under the data owner's approval and
//! its run count, sealed to the worker's attested key.

use obscura_attest::Role;
use obscura_auth::capability::Authorized;
use obscura_proto::{
    limits, roles, room_cluster_digest, room_context, room_inputs_digest, room_policy_digest,
    room_purpose, room_release_statement, room_result_statement, room_shares_digest, ErrorCode,
    ResponseBody, RoomResultFiled, RoomShare, WireId,
};
use obscura_sharing::manifest::ImageId;
use obscura_sharing::order::Order;
use rand_core::{OsRng, RngCore};

use super::{auth_error, NodeState, Request};
use obscura_server::{error, store_error};

/// Challenges waiting at once, in all and per user.
const MAX_CHALLENGES: usize = 1024;
const MAX_CHALLENGES_PER_USER: usize = 16;

/// A challenge this node gave: for which work, to whom, until when.
pub(super) struct Challenge {
    work: [u8; 32],
    user: String,
    expires: u64,
}

/// What a release asks, as sent.
pub(super) struct Asked<'a> {
    pub work: &'a [u8; 32],
    pub images: &'a [WireId],
    pub policy: &'a [u8],
    pub expires_at: u64,
    pub max_runs: u32,
    pub approval: &'a [u8],
    pub nonce: &'a [u8; 32],
    pub worker_key: &'a [u8; 32],
    pub signing_key: &'a [u8; 32],
    pub evidence: &'a [u8],
}

fn short(work: &[u8; 32]) -> String {
    work[..8].iter().map(|b| format!("{b:02x}")).collect()
}

impl NodeState {
    /// A fresh challenge for one release of `work`'s inputs, to this user only.
    pub(super) fn room_challenge(
        &self,
        req: &Request,
        who: &Authorized,
        work: &[u8; 32],
        now: u64,
    ) -> Result<ResponseBody, ResponseBody> {
        let acting = who
            .acting_as_any(&[roles::QUERIER, roles::OWNER])
            .map_err(auth_error)?;
        let mut nonce = [0u8; 32];
        OsRng.fill_bytes(&mut nonce);
        {
            let mut open = self.room.lock().unwrap_or_else(|e| e.into_inner());
            open.retain(|_, c| c.expires > now);
            let theirs = open.values().filter(|c| c.user == who.user()).count();
            if open.len() >= MAX_CHALLENGES || theirs >= MAX_CHALLENGES_PER_USER {
                return Err(error(
                    ErrorCode::RateLimited,
                    "too many clean-room challenges waiting; use or let them expire first",
                ));
            }
            open.insert(
                nonce,
                Challenge {
                    work: *work,
                    user: who.user().to_string(),
                    expires: now + limits::ROOM_CHALLENGE_S,
                },
            );
        }
        self.record(req, &acting, format_args!("work={}", short(work)), now)?;
        Ok(ResponseBody::RoomChallenge { nonce })
    }

    /// This node's shares of the work's inputs, sealed to the worker, if: the challenge is
    /// this node's, for this work and caller, unused and fresh; the owner approved this work
    /// for these inputs and this policy, and the approval has not expired; the policy is one
    /// this node appraises under; the worker's evidence passes it, binding its keys, the work
    /// and the challenge; and the approval's runs are not spent here. The run is counted and
    /// audited before any share leaves.
    pub(super) fn room_release(
        &self,
        req: &Request,
        who: &Authorized,
        asked: &Asked<'_>,
        now: u64,
    ) -> Result<ResponseBody, ResponseBody> {
        who.acting_as_any(&[roles::QUERIER, roles::OWNER])
            .map_err(auth_error)?;
        let work = asked.work;
        let given = self
            .room
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(asked.nonce);
        match given {
            Some(c) if c.work == *work && c.user == who.user() && c.expires > now => {}
            _ => {
                return Err(error(
                    ErrorCode::Rejected,
                    format!(
                        "no clean-room challenge of node {} for work {} and this user \
                         (expired, used, or never given): ask again",
                        self.node,
                        short(work)
                    ),
                ))
            }
        }
        Order::Approve {
            work: *work,
            inputs: room_inputs_digest(asked.images),
            policy: room_policy_digest(asked.policy),
            expires_at: asked.expires_at,
            max_runs: asked.max_runs,
        }
        .verify(&self.owner, asked.approval)
        .map_err(|_| {
            error(
                ErrorCode::Forbidden,
                format!(
                    "work {}: no approval of the data owner's for these inputs, this policy, \
                     expiry and run count",
                    short(work)
                ),
            )
        })?;
        if asked.expires_at < now {
            return Err(error(
                ErrorCode::Forbidden,
                format!(
                    "work {}: the owner's approval expired at {}",
                    short(work),
                    asked.expires_at
                ),
            ));
        }
        let own_root = self
            .attester
            .as_ref()
            .and_then(obscura_server::attest::Attester::simulation_root);
        let policy = obscura_attest::Policy::vet(asked.policy, own_root.as_ref())
            .map_err(|why| error(ErrorCode::BadRequest, format!("the approved policy: {why}")))?;
        // The worker's evidence names this work as its role, and binds its result key and the
        // cluster it trusts (this node's owner and nodes), so evidence made for a secret's
        // release, another work or another cluster's keys does not pass.
        let nodes: Vec<[u8; 32]> = self
            .matches
            .node_keys
            .iter()
            .map(|k| k.to_bytes())
            .collect();
        let cluster = room_cluster_digest(&self.owner.to_bytes(), &nodes);
        let appraisal = obscura_attest::Evidence::from_json(asked.evidence)
            .and_then(|evidence| {
                self.verifier.appraise_party(
                    &evidence,
                    &policy,
                    &Role::Work(hex(work)),
                    asked.worker_key,
                    &room_context(work, asked.signing_key, &cluster),
                    asked.nonce,
                    now,
                )
            })
            .map_err(|refusal| {
                error(
                    ErrorCode::Forbidden,
                    format!(
                        "node {} refuses the worker for work {}: {refusal}",
                        self.node,
                        short(work)
                    ),
                )
            })?;
        let mut stored = Vec::with_capacity(asked.images.len());
        let mut total = 0usize;
        for image in asked.images {
            let id = ImageId(*image);
            let img = self
                .store
                .image(&id)
                .map_err(store_error)?
                .ok_or_else(|| error(ErrorCode::UnknownImage, format!("unknown image {id}")))?;
            total = total.saturating_add(img.image_share.len() + img.manifest.len());
            if total > limits::MAX_IMAGE_SHARE {
                return Err(error(
                    ErrorCode::TooLarge,
                    format!(
                        "the work's inputs hold more than {} bytes of shares at node {}",
                        limits::MAX_IMAGE_SHARE,
                        self.node
                    ),
                ));
            }
            stored.push((image, img));
        }
        let detail = format!(
            "user={} op=room-release work={} signing={} worker={} measurement={} images={} \
             approved-until={} max-runs={}",
            who.user(),
            hex(work),
            hex(asked.signing_key),
            appraisal.platform(),
            hex(&appraisal.measurement()[..appraisal.measurement().len().min(8)]),
            asked.images.len(),
            asked.expires_at,
            asked.max_runs
        );
        let run = self
            .store
            .count_room_run(
                work,
                asked.max_runs,
                &req.request_id,
                detail.as_bytes(),
                now,
            )
            .map_err(store_error)?
            .ok_or_else(|| {
                error(
                    ErrorCode::Forbidden,
                    format!(
                        "work {} has had the {} runs its approval allows at node {}",
                        short(work),
                        asked.max_runs,
                        self.node
                    ),
                )
            })?;
        let mut shares = Vec::with_capacity(stored.len());
        for (image, img) in stored {
            let plain = zeroize::Zeroizing::new(
                postcard::to_allocvec(&(img.manifest, img.image_share)).expect("a share encodes"),
            );
            let sealed = obscura_attest::seal::seal(
                &appraisal,
                &room_purpose(self.node, work, asked.nonce, image),
                &plain,
                &mut OsRng,
            )
            .map_err(|e| error(ErrorCode::BadRequest, e.to_string()))?;
            shares.push(RoomShare {
                image: *image,
                enc: sealed.enc,
                ciphertext: sealed.ciphertext,
            });
        }
        let statement = room_release_statement(
            self.node,
            work,
            asked.nonce,
            run,
            asked.worker_key,
            asked.signing_key,
            &room_shares_digest(&shares),
        );
        Ok(ResponseBody::RoomReleased {
            node: self.node,
            run,
            signature: ed25519_dalek::Signer::sign(&self.audit_key, &statement)
                .to_bytes()
                .to_vec(),
            shares,
        })
    }
}

impl NodeState {
    /// Enter a run's result in this node's audit log, if this node released to the run (its
    /// own signature over the release, to the result's keys) and the result is signed by the
    /// key it released to. The node learns the commitment to the output, never the output.
    pub(super) fn room_result(
        &self,
        req: &Request,
        who: &Authorized,
        filed: &RoomResultFiled,
        now: u64,
    ) -> Result<ResponseBody, ResponseBody> {
        let acting = who
            .acting_as_any(&[roles::QUERIER, roles::OWNER])
            .map_err(auth_error)?;
        let (work, release) = (&filed.work, &filed.release);
        let released = release.node == self.node
            && release.signed_by(
                &self.audit_key.verifying_key(),
                work,
                &filed.worker_key,
                &filed.signing_key,
            );
        if !released {
            return Err(error(
                ErrorCode::Forbidden,
                format!(
                    "node {} released nothing to this result's keys for work {}: it files only \
                     results of runs it released to",
                    self.node,
                    short(work)
                ),
            ));
        }
        let statement =
            room_result_statement(work, &filed.manifests, &filed.commitment, &filed.blamed);
        let signed = ed25519_dalek::VerifyingKey::from_bytes(&filed.signing_key)
            .ok()
            .zip(ed25519_dalek::Signature::from_slice(&filed.signature).ok())
            .is_some_and(|(key, s)| key.verify_strict(&statement, &s).is_ok());
        if !signed {
            return Err(error(
                ErrorCode::Forbidden,
                format!(
                    "work {}: the result is not signed by the key node {} released to",
                    short(work),
                    self.node
                ),
            ));
        }
        // The worker signed the blamed nodes as (node, reason) pairs and the unsigned ones;
        // the log names the nodes.
        let blamed = postcard::from_bytes::<(Vec<(u8, String)>, Vec<u8>)>(&filed.blamed)
            .map(|(blamed, unsigned)| {
                let nodes = |v: Vec<u8>| v.iter().map(u8::to_string).collect::<Vec<_>>().join(",");
                format!(
                    "blamed={} unsigned={}",
                    nodes(blamed.into_iter().map(|b| b.0).collect()),
                    nodes(unsigned)
                )
            })
            .unwrap_or_else(|_| "blamed=(not a list)".into());
        self.record(
            req,
            &acting,
            format_args!(
                "work={} signing={} run={} inputs={} commitment={} {blamed}",
                hex(work),
                hex(&filed.signing_key),
                release.run,
                filed.manifests.len(),
                hex(&filed.commitment),
            ),
            now,
        )?;
        Ok(ResponseBody::Ok)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
