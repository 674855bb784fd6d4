//! Rotating the band-token keys to a new version, driven by the cluster's operator.
//!
//! A rotation from version `v` to `v + 1` draws, for the cluster's token key, a factor `ρ` and a
//! fresh sharing of zero ([`RotationPlan`]); nobody, the operator included, learns the key. Then:
//!
//! 1. every keeper takes `ρ · k_j + z_j` as its share of `v + 1` and answers its new public
//!    shares, which must equal `ρ · P_j + z_j · G` ([`Client::rekey_keepers`]);
//! 2. every node is given `ρ`, moves its stored elements and from then on serves lookups
//!    under both versions ([`Client::begin_rotation`]);
//! 3. the nodes move their postings in durable steps ([`Client::rotation_step`]);
//! 4. the operator switches the clients' configuration to `v + 1` and its public shares;
//! 5. the nodes forget `v` and `ρ`, and the keepers erase their shares of `v`
//!    ([`Client::finish_rotation`]).
//!
//! Every step can be repeated: a rotation that stopped anywhere resumes by running the same plan
//! again, which is why the plan is kept (sealed) until the rotation finishes. Searches keep
//! working throughout, under either version, until step 5.
//!
//! The phases are types ([`Phase`]): the phase a rotation is in is read once from its plan and
//! the clients' key version, and each phase offers only its own next step, consuming itself:
//! [`Planned`] → [`KeepersRekeyed`] → [`Moving`] (step by step) → [`Moved`] → [`Switched`]. Finishing, which
//! refuses every client still on the old version, can only follow the switch of the clients'
//! configuration:
//!
//! ```compile_fail
//! # async fn too_soon(moving: obscura_client::rotation::Moving, client: &obscura_client::Client) {
//! // No such step: the clients still use the old version.
//! moving.finish(client).await;
//! # }
//! ```
//!
//! ```no_run
//! use obscura_client::rotation::{Moves, Phase, RotationPlan};
//!
//! # async fn rotate(client: &obscura_client::Client, dir: &std::path::Path,
//! #     plan: RotationPlan, key_version: u32) -> Result<(), Box<dyn std::error::Error>> {
//! let switched = match Phase::of(plan, key_version)? {
//!     Phase::Planned(planned) => {
//!         let mut moving = planned.rekey_keepers(client).await?.begin(client).await?;
//!         let moved = loop {
//!             match moving.all_moved() {
//!                 Moves::Done(moved) => break moved,
//!                 Moves::Left(still) => moving = still.step(client, 1000).await?,
//!             }
//!         };
//!         moved.switch(dir)?
//!     }
//!     Phase::Switched(switched) => switched,
//! };
//! switched.finish(client).await?;
//! # Ok(())
//! # }
//! ```
//!
//! Every step is an order signed with the data owner's key, and is sent in an admin's session
//! or with an admin's capability: keepers take shares only of a plan whose digest the owner
//! signed (every node's `ρ` and the commitments `z_j · G` to its zero sharing, which each
//! keeper checks against its own share and for sharing zero), and nodes move and finish only
//! on the owner's order for them.

use obscura_cluster::files::{open_secrets, seal_secrets};
use obscura_keeper::threshold::Rekey;
use obscura_keeper::{oprf, RistrettoPoint, Scalar};
use obscura_proto::{KeeperBody, KeeperRekeyPart, NodeBody, ResponseBody, RotateOp};
use obscura_sharing::order::Order;
use obscura_tokens::keyfile::WrappingKey;
use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::fault::{keeper_failures, Fault, PerKeeper};
use crate::{Client, Error, KeeperFailure, NodeFailure};

/// Purpose label of a sealed rotation plan.
pub const PLAN_PURPOSE: &str = "rotation-plan";

/// A rotation's secret parts, drawn once: whoever holds them and `T` keeper shares of the old
/// version can compute the new keys, so the plan is sealed while it is kept and erased when the
/// rotation finishes.
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct RotationPlan {
    /// The version served now.
    pub from: u32,
    /// The next version.
    pub to: u32,
    /// `ρ` of each token key, canonical scalars: one, the cluster key's.
    pub factors: Vec<[u8; 32]>,
    /// `zero_shares[0][j - 1]`: keeper `j`'s share of zero for the cluster key.
    pub zero_shares: Vec<Vec<[u8; 32]>>,
}

impl std::fmt::Debug for RotationPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RotationPlan {{ {} -> {}, .. }}", self.from, self.to)
    }
}

/// One node's progress in a rotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeRotation {
    /// The node.
    pub node: u8,
    /// The version it serves.
    pub current: u32,
    /// The version it is moving to.
    pub next: Option<u32>,
    /// Images moved so far.
    pub moved: u64,
    /// Images stored when it began.
    pub total: u64,
    /// Postings moved so far.
    pub postings: u64,
    /// Every image has moved.
    pub done: bool,
}

/// Why a rotation plan cannot be drawn, sealed, opened or applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The key version is at its largest.
    #[error("the key version cannot grow further")]
    VersionExhausted,
    /// The keepers' parameters do not make a rekey, or the shares do not fit the plan.
    #[error(transparent)]
    Keys(#[from] obscura_keeper::Error),
    /// Sealing or opening the plan failed: a wrong key, another file, an altered one.
    #[error(transparent)]
    File(#[from] obscura_cluster::Error),
    /// A plan value that is not a canonical scalar (an altered or foreign plan).
    #[error("the rotation plan holds a value that is not a scalar")]
    NotAScalar,
    /// The plan is for fewer keys than asked of it.
    #[error("the plan has too few token keys")]
    TooFewNodes,
    /// The plan moves between versions of which the clients use neither: it belongs to another
    /// state of the cluster.
    #[error(
        "the plan is a rotation from key version {from} to {to}, but the clients use version \
         {clients}: it belongs to another state of the cluster"
    )]
    OtherState {
        /// The plan's version served before.
        from: u32,
        /// The plan's next version.
        to: u32,
        /// The version the clients use.
        clients: u32,
    },
}

/// The phase of a rotation, as its plan and the clients' key version show it.
pub enum Phase {
    /// The clients use the old version: the keepers, then the nodes are to take the next one
    /// (any of which may be done already: each step is repeated safely).
    Planned(Planned),
    /// The clients use the next version: the old one is to be erased.
    Switched(Switched),
}

impl Phase {
    /// The phase of `plan` for clients on key version `clients`: the version the cluster
    /// directory's `client.json` names (as [`crate::config::read_config`] reads it), never one
    /// assumed, since a rotation is switched exactly when that file says so.
    ///
    /// # Errors
    /// [`PlanError::OtherState`] when the clients use neither of the plan's versions.
    pub fn of(plan: RotationPlan, clients: u32) -> Result<Phase, PlanError> {
        if clients == plan.from {
            Ok(Phase::Planned(Planned { plan }))
        } else if clients == plan.to {
            Ok(Phase::Switched(Switched { plan }))
        } else {
            Err(PlanError::OtherState {
                from: plan.from,
                to: plan.to,
                clients,
            })
        }
    }

    /// The plan.
    pub fn plan(&self) -> &RotationPlan {
        match self {
            Phase::Planned(p) => &p.plan,
            Phase::Switched(s) => &s.plan,
        }
    }
}

/// Step 1 is next: the keepers take shares of the next version.
pub struct Planned {
    plan: RotationPlan,
}

impl Planned {
    /// Step 1 ([`Client::rekey_keepers`]).
    ///
    /// # Errors
    /// As [`Client::rekey_keepers`]: run the rotation again from its plan to resume.
    pub async fn rekey_keepers(self, client: &Client) -> Result<KeepersRekeyed, Error> {
        let next = client.rekey_keepers(&self.plan).await?;
        Ok(KeepersRekeyed {
            plan: self.plan,
            next,
        })
    }
}

/// Step 2 is next: the nodes begin moving.
pub struct KeepersRekeyed {
    plan: RotationPlan,
    next: Vec<Vec<RistrettoPoint>>,
}

impl KeepersRekeyed {
    /// The keepers' public shares of the next version, checked against the plan.
    pub fn next_public_shares(&self) -> &[Vec<RistrettoPoint>] {
        &self.next
    }

    /// Step 2 ([`Client::begin_rotation`]).
    ///
    /// # Errors
    /// As [`Client::begin_rotation`].
    pub async fn begin(self, client: &Client) -> Result<Moving, Error> {
        let state = client.begin_rotation(&self.plan).await?;
        Ok(Moving {
            plan: self.plan,
            next: self.next,
            began: state.clone(),
            state,
        })
    }
}

/// Step 3, until every node has moved every image.
pub struct Moving {
    plan: RotationPlan,
    next: Vec<Vec<RistrettoPoint>>,
    began: Vec<NodeRotation>,
    state: Vec<NodeRotation>,
}

impl Moving {
    /// Each node's progress when the nodes began (or resumed).
    pub fn began(&self) -> &[NodeRotation] {
        &self.began
    }

    /// Each node's progress now.
    pub fn state(&self) -> &[NodeRotation] {
        &self.state
    }

    /// Step 3 once more: every node moves up to `max_images` more images
    /// ([`Client::rotation_step`]).
    ///
    /// # Errors
    /// As [`Client::rotation_step`].
    pub async fn step(self, client: &Client, max_images: u32) -> Result<Moving, Error> {
        let state = client.rotation_step(&self.plan, max_images).await?;
        Ok(Moving { state, ..self })
    }

    /// The rotation with every image moved at every node, or this phase while some remain.
    pub fn all_moved(self) -> Moves {
        if self.state.iter().all(|r| r.done) {
            Moves::Done(Moved {
                plan: self.plan,
                next: self.next,
            })
        } else {
            Moves::Left(self)
        }
    }
}

/// Whether images remain to be moved.
pub enum Moves {
    /// Some node has images to move: step again.
    Left(Moving),
    /// Every image is moved: switch the clients.
    Done(Moved),
}

/// Step 4 is next: the clients switch to the next version.
pub struct Moved {
    plan: RotationPlan,
    next: Vec<Vec<RistrettoPoint>>,
}

impl Moved {
    /// Step 4: `DIR/client.json` names the next version and its public shares
    /// ([`crate::config::switch_key_version`]).
    ///
    /// # Errors
    /// [`Error::Config`] when the configuration cannot be written.
    pub fn switch(self, dir: &std::path::Path) -> Result<Switched, Error> {
        crate::config::switch_key_version(dir, self.plan.to, &self.next)?;
        Ok(Switched { plan: self.plan })
    }
}

/// Step 5 is next: the nodes and keepers erase the old version.
pub struct Switched {
    plan: RotationPlan,
}

impl Switched {
    /// Step 5 ([`Client::finish_rotation`]); the rotation is over, and its plan may go.
    ///
    /// # Errors
    /// As [`Client::finish_rotation`].
    pub async fn finish(self, client: &Client) -> Result<(), Error> {
        client.finish_rotation(&self.plan).await
    }
}

impl RotationPlan {
    /// Draw the plan for moving the cluster's token key, shared among `keepers` with threshold
    /// `threshold`, from version `from` to `from + 1`.
    ///
    /// # Errors
    /// [`PlanError::VersionExhausted`], [`PlanError::Keys`] for impossible keeper parameters.
    pub fn draw<R: RngCore + CryptoRng>(
        from: u32,
        keepers: usize,
        threshold: usize,
        rng: &mut R,
    ) -> Result<RotationPlan, PlanError> {
        let to = from.checked_add(1).ok_or(PlanError::VersionExhausted)?;
        let r = Rekey::random(keepers, threshold, rng)?;
        Ok(RotationPlan {
            from,
            to,
            factors: vec![r.factor.to_bytes()],
            zero_shares: vec![r.zero_shares.iter().map(Scalar::to_bytes).collect()],
        })
    }

    /// Draw the plan that moves the cluster `config` describes from its current version to
    /// the next.
    ///
    /// # Errors
    /// As [`draw`](Self::draw).
    pub fn next_for<R: RngCore + CryptoRng>(
        config: &crate::config::ClientConfig,
        rng: &mut R,
    ) -> Result<RotationPlan, PlanError> {
        Self::draw(
            config.key_version,
            config.keepers.len(),
            usize::from(config.keeper_threshold),
            rng,
        )
    }

    /// Seal for keeping on disk until the rotation finishes.
    ///
    /// # Errors
    /// [`PlanError::File`] if sealing fails.
    pub fn seal<R: RngCore + CryptoRng>(
        &self,
        key: &WrappingKey,
        rng: &mut R,
    ) -> Result<Vec<u8>, PlanError> {
        Ok(seal_secrets(self, PLAN_PURPOSE, key, rng)?)
    }

    /// Open a sealed plan.
    ///
    /// # Errors
    /// [`PlanError::File`] for a wrong key or an altered file.
    pub fn open(sealed: &[u8], key: &WrappingKey) -> Result<RotationPlan, PlanError> {
        Ok(open_secrets(sealed, PLAN_PURPOSE, key)?)
    }

    fn rekey(&self, key: usize) -> Result<Rekey, PlanError> {
        let scalar = |b: &[u8; 32]| {
            Option::<Scalar>::from(Scalar::from_canonical_bytes(*b)).ok_or(PlanError::NotAScalar)
        };
        let factors = self.factors.get(key).ok_or(PlanError::TooFewNodes)?;
        let zeros = self.zero_shares.get(key).ok_or(PlanError::TooFewNodes)?;
        Ok(Rekey {
            factor: scalar(factors)?,
            zero_shares: zeros.iter().map(scalar).collect::<Result<_, _>>()?,
        })
    }

    /// The keepers' public shares of the next version, `next[0][j - 1] = ρ · P_j + z_j · G`,
    /// from those of the current version.
    ///
    /// # Errors
    /// [`PlanError`] when the plan and the shares disagree in shape.
    pub fn next_public_shares(
        &self,
        current: &[Vec<RistrettoPoint>],
    ) -> Result<Vec<Vec<RistrettoPoint>>, PlanError> {
        current
            .iter()
            .enumerate()
            .map(|(x, shares)| {
                let r = self.rekey(x)?;
                shares
                    .iter()
                    .enumerate()
                    .map(|(j, p)| Ok(r.public_share(j as u8 + 1, p)?))
                    .collect()
            })
            .collect()
    }
}

/// The steps one by one, for tools that must take them out of order (to check that servers
/// refuse that); [`Phase`] allows them only in order.
impl Client {
    /// Step 1: every keeper takes its share of the plan's next version, and its public shares
    /// are checked against those the plan predicts. Returns the next public shares (for the
    /// clients' configuration). Every keeper is needed.
    ///
    /// # Errors
    /// [`Error::Keepers`] naming each keeper that failed or answered shares that are not the
    /// predicted ones; [`Error::Rotation`] when this client uses no keepers or the plan does
    /// not fit the cluster; [`Error::NotOwner`] before anything changes when this client
    /// cannot sign the nodes' orders of step 2.
    pub async fn rekey_keepers(
        &self,
        plan: &RotationPlan,
    ) -> Result<Vec<Vec<RistrettoPoint>>, Error> {
        let owner = self.owner.as_ref().ok_or(Error::NotOwner)?;
        let keepers = self.tokens.keepers().ok_or_else(no_keepers)?;
        let next = plan.next_public_shares(&keepers.public_shares)?;
        if plan.factors.len() != 1 || next.len() != 1 {
            return Err(Error::Rotation(format!(
                "the plan is for {} token keys, the cluster has one (a plan made by an older \
                 version: erase it and rotate again)",
                plan.factors.len(),
            )));
        }
        let commitments: Vec<[u8; 32]> = plan
            .rekey(0)
            .map_err(Error::Plan)?
            .zero_commitments()
            .iter()
            .map(oprf::serialize)
            .collect();
        // The cluster key's one part, for keeper `j` (0-based).
        let parts_for = |j: usize| -> Vec<KeeperRekeyPart> {
            vec![KeeperRekeyPart {
                node: crate::tokens::CLUSTER_KEY,
                factor: plan.factors[0],
                zero_share: plan.zero_shares[0].get(j).copied().unwrap_or_default(),
                zero_commitments: commitments.clone(),
            }]
        };
        // Every keeper's parts differ only in its own zero share, which the digest leaves out.
        let order = Order::Rekey {
            from: plan.from,
            to: plan.to,
            plan: obscura_proto::rekey_digest(plan.from, plan.to, &parts_for(0)),
        }
        .sign(owner)
        .to_vec();
        let mut set = PerKeeper::new();
        for j in 0..keepers.urls.len() {
            let body = KeeperBody::KeeperRekey {
                from: plan.from,
                to: plan.to,
                parts: parts_for(j),
                signature: order.clone(),
            };
            let expected: Vec<[u8; 32]> = next.iter().map(|n| oprf::serialize(&n[j])).collect();
            let (link, j) = (self.keepers.clone(), j as u8 + 1);
            set.spawn(j, async move {
                match link.post(j, body).await.0? {
                    ResponseBody::KeeperRekeyed { public_shares, .. }
                        if public_shares == expected =>
                    {
                        Ok(())
                    }
                    ResponseBody::KeeperRekeyed { .. } => Err(Fault::WrongPublicShares),
                    _ => Err(Fault::Unexpected("a rekeying acknowledgement")),
                }
            });
        }
        let answers = set.all().await;
        let mut failures = keeper_failures(&answers);
        // Shares that no keeper's match may say more of this plan (another run's, made from an
        // old copy of the cluster directory) than of the keepers.
        if answers.iter().all(|(_, r)| r.is_err()) {
            crate::fault::doubt(failures.iter_mut().map(|f| &mut f.fault));
        }
        if failures.is_empty() {
            Ok(next)
        } else {
            failures.sort_by_key(|f| f.keeper);
            Err(Error::Keepers {
                what: "key rotation at the keepers",
                failures,
            })
        }
    }

    /// Step 2: every node moves its stored elements with `ρ` and serves both versions.
    /// Each node gets its order signed with the data owner's key.
    ///
    /// # Errors
    /// [`Error::NotOwner`] when this client holds no owner key; [`Error::Nodes`] naming each
    /// node that failed.
    pub async fn begin_rotation(&self, plan: &RotationPlan) -> Result<Vec<NodeRotation>, Error> {
        let owner = self.owner.as_ref().ok_or(Error::NotOwner)?;
        // One cluster key: every node moves by the same `ρ`.
        let [factor] = plan.factors[..] else {
            return Err(Error::Rotation(format!(
                "the plan is for {} token keys, the cluster has one",
                plan.factors.len()
            )));
        };
        let results = self
            .call_all(|x| {
                let order = Order::Rotate {
                    node: x,
                    from: plan.from,
                    to: plan.to,
                    factor,
                };
                NodeBody::Rotate {
                    op: RotateOp::Begin {
                        from: plan.from,
                        to: plan.to,
                        factor,
                        signature: order.sign(owner).to_vec(),
                    },
                }
            })
            .await;
        progress("key rotation (begin)", results)
    }

    /// Step 3: every node moves up to `max_images` more images; call until all are `done`.
    ///
    /// # Errors
    /// [`Error::NotOwner`], [`Error::Nodes`] naming each node that failed.
    pub async fn rotation_step(
        &self,
        plan: &RotationPlan,
        max_images: u32,
    ) -> Result<Vec<NodeRotation>, Error> {
        let owner = self.owner.as_ref().ok_or(Error::NotOwner)?;
        let results = self
            .call_all(|x| NodeBody::Rotate {
                op: RotateOp::Move {
                    to: plan.to,
                    max_images,
                    signature: Order::RotateMove {
                        node: x,
                        to: plan.to,
                    }
                    .sign(owner)
                    .to_vec(),
                },
            })
            .await;
        progress("key rotation (move)", results)
    }

    /// Step 5: the nodes forget the old version and `ρ`, then the keepers erase their shares
    /// of it. Call it only once the clients are configured for the next version: clients still
    /// on the old one are refused from then on.
    ///
    /// # Errors
    /// [`Error::Nodes`] naming each node (or keeper) that failed.
    pub async fn finish_rotation(&self, plan: &RotationPlan) -> Result<(), Error> {
        let owner = self.owner.as_ref().ok_or(Error::NotOwner)?;
        let results = self
            .call_all(|x| NodeBody::Rotate {
                op: RotateOp::Finish {
                    to: plan.to,
                    signature: Order::RotateFinish {
                        node: x,
                        to: plan.to,
                    }
                    .sign(owner)
                    .to_vec(),
                },
            })
            .await;
        progress("key rotation (finish)", results)?;
        let keepers = self.tokens.keepers().ok_or_else(no_keepers)?;
        let retire = Order::Retire { version: plan.from }.sign(owner).to_vec();
        let mut failures = Vec::new();
        for j in 0..keepers.urls.len() {
            let body = KeeperBody::KeeperRetire {
                version: plan.from,
                signature: retire.clone(),
            };
            if let (Err(fault), _, _) = self.keepers.post(j as u8 + 1, body).await {
                failures.push(KeeperFailure {
                    keeper: j as u8 + 1,
                    fault,
                });
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(Error::Keepers {
                what: "erasing the old key version at the keepers",
                failures,
            })
        }
    }
}

fn no_keepers() -> Error {
    Error::Rotation(
        "this cluster uses HMAC tokens: there are no keepers and no key versions to rotate".into(),
    )
}

fn progress(
    what: &'static str,
    results: Vec<(u8, Result<ResponseBody, crate::Fault>, u64, u64)>,
) -> Result<Vec<NodeRotation>, Error> {
    let mut failures = Vec::new();
    let mut state = Vec::with_capacity(results.len());
    for (node, r, _, _) in results {
        match r {
            Ok(ResponseBody::Rotation {
                current,
                next,
                moved,
                total,
                postings,
                done,
                ..
            }) => state.push(NodeRotation {
                node,
                current,
                next,
                moved,
                total,
                postings,
                done,
            }),
            Ok(_) => failures.push(NodeFailure {
                node,
                fault: crate::Fault::Unexpected("a rotation's progress"),
            }),
            Err(fault) => failures.push(NodeFailure { node, fault }),
        }
    }
    if failures.is_empty() {
        Ok(state)
    } else {
        Err(Error::Nodes { what, failures })
    }
}
