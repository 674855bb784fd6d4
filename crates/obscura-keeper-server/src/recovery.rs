//! Share recovery at a keeper ([`obscura_keeper::recovery`]): as a helper, its part of another
//! keeper's token-key shares; as the keeper that recovers, its shares from the helpers' parts.
//!
//! Both act only on the data owner's signed plan ([`RecoveryPlan`]), while it is within the
//! replay window. A helper appraises the recovering keeper's evidence itself, under the plan's
//! policy within this keeper's limits (no debug, only the cluster's simulation root), for that
//! keeper's seat in this cluster and the plan's key and nonce. It derives the masks it shares
//! with each other helper from its own attested key and that helper's, as the plan lists them,
//! so no host can unmask a part; seals its part to the appraised key; and tags it with the
//! secret of its key and the recovering keeper's, so nobody who carries it can alter it. The
//! recovering keeper checks every tag, then every part against the helpers' public shares: a
//! helper whose part fails is named in a verdict proven under the owner's receipt key. It seals
//! the result to its platform and build.

use obscura_attest::seal::Sealed;
use obscura_attest::{binding, Evidence, Role};
use obscura_keeper::oprf;
use obscura_keeper::recovery::{self, Part};
use obscura_keeper::threshold::KeyShare;
use obscura_keeper::{RistrettoPoint, Scalar};
use obscura_proto::{
    recovery_digest, recovery_label, recovery_part_tag, recovery_purpose, recovery_receipt_purpose,
    recovery_verdict, ErrorCode, RecoveryPart, RecoveryPlan, ResponseBody, WireElement,
};
use obscura_server::{error, store_error};
use obscura_sharing::order::Order;
use obscura_tokens::keyfile::to_hex as hex;
use zeroize::Zeroizing;

use crate::KeeperState;

fn refuse(m: impl Into<String>) -> ResponseBody {
    error(ErrorCode::Rejected, m)
}

fn point(bytes: &WireElement) -> Result<RistrettoPoint, ResponseBody> {
    oprf::deserialize(bytes).map_err(|_| {
        error(
            ErrorCode::BadRequest,
            "a public share is not a group element",
        )
    })
}

impl KeeperState {
    /// Its attestation: recovery runs only among attested keepers.
    fn recovery_attester(&self) -> Result<&obscura_server::attest::Attester, ResponseBody> {
        self.attester.as_ref().ok_or_else(|| {
            refuse(
                "this keeper does not attest: token-key shares are recovered only among \
                 attested keepers",
            )
        })
    }

    /// The owner's order for `plan`, checked against `signature`, and the plan's digest.
    fn recovery_order(
        &self,
        plan: &RecoveryPlan,
        signature: &[u8],
        now: u64,
    ) -> Result<[u8; 32], ResponseBody> {
        let digest = recovery_digest(plan);
        Order::Recover {
            keeper: plan.keeper,
            party_key: plan.party_key,
            plan: digest,
        }
        .verify(&self.owner, signature)
        .map_err(|_| refuse("a keeper's shares are recovered only on the data owner's order"))?;
        let m = usize::from(self.accounts.m);
        // (The wire format already refuses helpers repeated, zero or the keeper itself.)
        if plan.keeper == 0
            || plan.keeper > self.accounts.m
            || plan.helpers.len() != usize::from(self.threshold)
            || plan.helpers.iter().any(|&h| h == 0 || h > self.accounts.m)
            || plan.helpers.contains(&plan.keeper)
            || plan.public_shares.iter().any(|p| p.len() != m)
        {
            return Err(error(
                ErrorCode::BadRequest,
                format!(
                    "a recovery plan names a keeper of 1..={m}, {} other keepers as helpers, and \
                     every keeper's public share of each token key",
                    self.threshold
                ),
            ));
        }
        // Only while fresh: an old plan, and the evidence it names, cannot be played again.
        if plan.issued_at.abs_diff(now) > self.window {
            return Err(error(
                ErrorCode::Stale,
                "the recovery plan is older than the replay window: make a new one",
            ));
        }
        Ok(digest)
    }

    /// This keeper's part of keeper `plan.keeper`'s shares, sealed to its appraised key.
    pub(crate) fn recover_part(
        &self,
        request_id: &[u8; 16],
        plan: &RecoveryPlan,
        evidence: &[u8],
        signature: &[u8],
        now: u64,
    ) -> Result<ResponseBody, ResponseBody> {
        let attester = self.recovery_attester()?;
        let digest = self.recovery_order(plan, signature, now)?;
        let Some(at) = plan.helpers.iter().position(|&h| h == self.keeper) else {
            return Err(error(
                ErrorCode::BadRequest,
                format!("the plan does not name keeper {} as a helper", self.keeper),
            ));
        };
        if plan.helper_keys[at] != attester.key().public() {
            return Err(refuse(
                "the plan names another key of this keeper (it restarted since it was \
                 appraised): recover again",
            ));
        }
        // A plan may be asked again while fresh (an answer lost): the part is the same, and
        // opens only under the appraised key. Not recorded as used, so that whoever relays the
        // plan cannot use it up at the other helpers first.
        let policy = self.accounts.vet_policy(&plan.policy, "recovery policy")?;
        let appraised = Evidence::from_json(evidence).and_then(|evidence| {
            self.accounts.verifier.appraise_party(
                &evidence,
                &policy,
                &Role::Keeper,
                &plan.party_key,
                &binding::context(&self.cluster, &Role::Keeper, plan.keeper),
                &plan.nonce,
                now,
            )
        });
        let appraisal = match appraised {
            Ok(a) => a,
            Err(refusal) => {
                self.store
                    .record_refusal(
                        request_id,
                        &format!(
                            "token-key share recovery for keeper {} refused: {refusal}",
                            plan.keeper
                        ),
                        now,
                    )
                    .map_err(store_error)?;
                return Err(error(
                    ErrorCode::Forbidden,
                    format!(
                        "keeper {} refuses keeper {}: {refusal}",
                        self.keeper, plan.keeper
                    ),
                ));
            }
        };
        // The secret this build's key shares with each other helper's, as the owner appraised
        // them (neither host can derive it), and with the recovering keeper's key, for the tag.
        let agree = |key: &[u8; 32], whose: String| {
            attester
                .key()
                .agree(key)
                .ok_or_else(|| refuse(format!("{whose} key is unusable")))
        };
        let with_helpers = plan
            .helpers
            .iter()
            .zip(&plan.helper_keys)
            .filter(|(&h, _)| h != self.keeper)
            .map(|(&h, key)| Ok((h, agree(key, format!("helper keeper {h}'s"))?)))
            .collect::<Result<std::collections::HashMap<_, _>, ResponseBody>>()?;
        let with_keeper = agree(&plan.party_key, "the recovering keeper's".into())?;
        let shares = self.shares.read().unwrap_or_else(|e| e.into_inner());
        let mut contributions = Zeroizing::new(Vec::with_capacity(plan.public_shares.len()));
        let mut masks = Vec::with_capacity(plan.public_shares.len());
        for (i, publics) in plan.public_shares.iter().enumerate() {
            let node = i as u8 + 1;
            let share = shares.get(&(node, plan.version)).ok_or_else(|| {
                error(
                    ErrorCode::UnknownKey,
                    format!(
                        "keeper {} holds no share of token key {node} version {}",
                        self.keeper, plan.version
                    ),
                )
            })?;
            if oprf::serialize(&share.public()) != publics[usize::from(self.keeper) - 1] {
                return Err(refuse(format!(
                    "the plan's public share of keeper {} for token key {node} is not the one it \
                     holds: the plan is not this cluster's",
                    self.keeper
                )));
            }
            let label = recovery_label(&digest, node, plan.version);
            let part = recovery::part(share, plan.keeper, &plan.helpers, |m| {
                with_helpers
                    .get(&m)
                    .map(|shared| recovery::mask(shared, &label, self.keeper, m))
                    .ok_or(obscura_keeper::Error::Keepers("unknown helper".into()))
            })
            .map_err(|e| error(ErrorCode::BadRequest, e.to_string()))?;
            contributions.push(part.contribution.to_bytes());
            masks.push(part.masks.iter().map(oprf::serialize).collect());
        }
        if shares.keys().any(|&(node, version)| {
            version == plan.version && usize::from(node) > plan.public_shares.len()
        }) {
            return Err(error(
                ErrorCode::BadRequest,
                "the plan leaves out token keys of that version",
            ));
        }
        drop(shares);
        let plain = Zeroizing::new(postcard::to_allocvec(&*contributions).expect("encodes"));
        let sealed = obscura_attest::seal::seal(
            &appraisal,
            &recovery_purpose(plan.keeper, self.keeper, &digest),
            &plain,
            &mut rand_core::OsRng,
        )
        .map_err(|e| error(ErrorCode::BadRequest, e.to_string()))?;
        let measurement = appraisal.measurement();
        self.store
            .record_key_change(
                request_id,
                &format!(
                    "token-key share recovery: part of key version {} given to keeper {} \
                     ({} measurement {}), helpers {:?}",
                    plan.version,
                    plan.keeper,
                    appraisal.platform(),
                    hex(&measurement[..measurement.len().min(8)]),
                    plan.helpers
                ),
                now,
            )
            .map_err(store_error)?;
        let tag = recovery_part_tag(
            &with_keeper,
            &digest,
            self.keeper,
            &sealed.enc,
            &sealed.ciphertext,
            &masks,
        );
        Ok(ResponseBody::RecoveryPart(RecoveryPart {
            helper: self.keeper,
            enc: sealed.enc,
            ciphertext: sealed.ciphertext,
            masks,
            tag,
        }))
    }

    /// Take this keeper's shares back from the helpers' parts, each checked; answered with
    /// the public shares it now holds and a receipt under the owner's receipt key.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn recover(
        &self,
        request_id: &[u8; 16],
        plan: &RecoveryPlan,
        signature: &[u8],
        parts: &[RecoveryPart],
        receipt: &Sealed,
        now: u64,
    ) -> Result<ResponseBody, ResponseBody> {
        let attester = self.recovery_attester()?;
        let digest = self.recovery_order(plan, signature, now)?;
        if plan.keeper != self.keeper {
            return Err(error(
                ErrorCode::BadRequest,
                format!("the plan recovers keeper {}, not this one", plan.keeper),
            ));
        }
        if plan.party_key != attester.key().public() {
            return Err(refuse(
                "the parts are sealed to another key of this keeper (it restarted since it was \
                 appraised): recover again",
            ));
        }
        // Not recorded as used (whoever carries the plan could use it up first): a plan taken
        // twice gives the same shares, which a keeper holding them answers again. A recovery
        // held back cannot bring an erased version back: the plan is fresh only within the
        // replay window, and no rotation moves on while a keeper holds nothing.
        let key = attester.key();
        let receipt_key: [u8; 32] = key
            .open(&recovery_receipt_purpose(self.keeper, &digest), receipt)
            .ok()
            .and_then(|k| <[u8; 32]>::try_from(Zeroizing::new(k).as_slice()).ok())
            .ok_or_else(|| refuse("the receipt key does not open"))?;
        let mut sealing = self.sealing_for_shares()?;
        let n = plan.public_shares.len();
        let t = plan.helpers.len();
        // This keeper's verdict on the helpers `blamed`, proven under the receipt key.
        let verdict = |blamed: Vec<u8>, reason: String| ResponseBody::RecoveryRefused {
            keeper: self.keeper,
            proof: recovery_verdict(&receipt_key, self.keeper, &blamed, &reason),
            blamed,
            reason,
        };
        // Each helper's contributions, one per token key.
        let mut opened = Vec::with_capacity(parts.len());
        for (at, (part, &helper)) in parts.iter().zip(&plan.helpers).enumerate() {
            // Once its tag checks, the part is the helper's own: whatever is wrong with it
            // then is the helper's, and the verdict names it.
            let named =
                |why: &str| verdict(vec![helper], format!("helper keeper {helper}'s part {why}"));
            let unusable = || {
                refuse(format!(
                    "helper keeper {helper}'s key in the plan is unusable: make a new plan"
                ))
            };
            let shared = key.agree(&plan.helper_keys[at]).ok_or_else(unusable)?;
            let tag = recovery_part_tag(
                &shared,
                &digest,
                helper,
                &part.enc,
                &part.ciphertext,
                &part.masks,
            );
            // Made by the helper's attested key, as the plan lists it: a part altered or made
            // by whoever carried it is refused, and blames nobody.
            if part.helper != helper
                || !bool::from(subtle::ConstantTimeEq::ct_eq(&tag[..], &part.tag[..]))
            {
                return Err(refuse(format!(
                    "helper keeper {helper}'s part was altered on its way, or made by another \
                     than the helper: nobody is blamed; recover again"
                )));
            }
            if part.masks.len() != n || part.masks.iter().any(|m| m.len() != t - 1) {
                return Err(named("is not one mask per other helper for each token key"));
            }
            let plain = Zeroizing::new(
                key.open(
                    &recovery_purpose(self.keeper, helper, &digest),
                    &Sealed {
                        enc: part.enc.clone(),
                        ciphertext: part.ciphertext.clone(),
                    },
                )
                .map_err(|_| named("does not open"))?,
            );
            let scalars: Zeroizing<Vec<[u8; 32]>> = Zeroizing::new(
                postcard::from_bytes(&plain).map_err(|_| named("holds no contributions"))?,
            );
            if scalars.len() != n {
                return Err(named("is not one contribution per token key"));
            }
            opened.push(scalars);
        }
        if opened.len() != plan.helpers.len() {
            return Err(error(ErrorCode::BadRequest, "one part per helper"));
        }
        let me = usize::from(self.keeper) - 1;
        let mut recovered = Vec::with_capacity(n);
        for (i, publics) in plan.public_shares.iter().enumerate() {
            let node = i as u8 + 1;
            let mut rebuilt = Vec::with_capacity(parts.len());
            let mut helper_publics = Vec::with_capacity(parts.len());
            for ((part, scalars), &helper) in parts.iter().zip(&opened).zip(&plan.helpers) {
                let named = |why: &str| {
                    verdict(vec![helper], format!("helper keeper {helper}'s part {why}"))
                };
                let contribution = Option::<Scalar>::from(Scalar::from_canonical_bytes(scalars[i]))
                    .ok_or_else(|| named("holds a contribution that is not a scalar"))?;
                let masks = part.masks[i]
                    .iter()
                    .map(|m| oprf::deserialize(m).map_err(|_| named("has a bad mask")))
                    .collect::<Result<Vec<_>, _>>()?;
                rebuilt.push(Part {
                    contribution,
                    masks,
                });
                helper_publics.push(point(&publics[usize::from(helper) - 1])?);
            }
            let expected = point(&publics[me])?;
            let share: KeyShare = recovery::combine(
                self.keeper,
                &plan.helpers,
                &helper_publics,
                &rebuilt,
                &expected,
            )
            .map_err(|blame| {
                // Every part is the helper's own (its tag checked): the verdict names it, with
                // proof under the receipt key that this keeper made it.
                let blamed = match blame {
                    recovery::Blame::Part(h) => vec![h],
                    recovery::Blame::Masks(a, b) => vec![a, b],
                    recovery::Blame::Malformed(_) | recovery::Blame::Sum => Vec::new(),
                };
                verdict(
                    blamed,
                    format!(
                        "keeper {} refuses the recovery of token key {node}: {blame}",
                        self.keeper
                    ),
                )
            })?;
            recovered.push((node, plan.version, share));
        }
        self.take_shares(
            &mut sealing,
            request_id,
            &recovered,
            "a keeper recovers only what it lost",
            &format!("recovered from keepers {:?}", plan.helpers),
            &receipt_key,
            now,
        )
    }
}
