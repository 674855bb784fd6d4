//! The data owner's side of share recovery ([`obscura_keeper::recovery`]): a keeper that lost
//! its token-key shares (replaced, or upgraded to a build its sealed shares do not open under)
//! gets them back from `T` other keepers, each part sealed to the key its evidence binds, with
//! no key rebuilt anywhere.
//!
//! The owner's client appraises the keeper now, picks `T` keepers that hold the key version it
//! uses, and signs a plan naming the keeper's key and nonce, the helpers, every keeper's public
//! shares from `client.json` and the cluster's policy. Each helper appraises the same evidence
//! itself before it gives its part; the keeper checks every part and answers a receipt that
//! only the holder of the appraised key can make.

use obscura_attest::seal;
use obscura_proto::{
    recovery_digest, recovery_receipt_purpose, KeeperBody, RecoveryPart, RecoveryPlan, ResponseBody,
};
use obscura_sharing::order::Order;
use rand_core::RngCore;

use crate::{post_keeper, unix_now, Client, Error, Fault, KeeperFailure};

/// What a recovery did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovered {
    /// The keeper that holds its shares again.
    pub keeper: u8,
    /// The keepers that gave their parts.
    pub helpers: Vec<u8>,
    /// The key version recovered.
    pub version: u32,
    /// The token keys whose shares it holds (one: the cluster key).
    pub nodes: usize,
}

impl Client {
    /// Have `T` keepers give keeper `keeper` back its shares of the key version this client
    /// uses, as described in [the module](self); the keepers in `exclude` are not asked (one
    /// that made the last try fail, say).
    ///
    /// # Errors
    /// [`Error::NotOwner`] without the data owner's key; [`Error::NoAttestation`] without an
    /// attestation policy; [`Error::Keepers`] naming the keeper refused at appraisal, helpers
    /// that were down or refused (fewer than `T` usable), or the keeper's refusal of the parts
    /// (which names a helper whose part does not check).
    pub async fn recover(&self, keeper: u8, exclude: &[u8]) -> Result<Recovered, Error> {
        let owner = self.owner.as_ref().ok_or(Error::NotOwner)?;
        let Some(gate) = self.http.gate.as_deref() else {
            return Err(Error::NoAttestation);
        };
        let Some(keepers) = self.tokens.keepers() else {
            return Err(Error::Rotation(
                "this cluster makes tokens without keepers: there is nothing to recover".into(),
            ));
        };
        let what = "share recovery";
        let fail = |keeper: u8, fault: Fault| Error::Keepers {
            what,
            failures: vec![KeeperFailure { keeper, fault }],
        };
        let urls = self.tokens.keeper_urls();
        let base = urls
            .get(usize::from(keeper).wrapping_sub(1))
            .ok_or_else(|| {
                fail(
                    keeper,
                    Fault::NotSent(format!("this cluster has no keeper {keeper}")),
                )
            })?
            .clone();
        let (appraisal, presented) = gate
            .appraisal_with_evidence(&self.http.client, &base)
            .await
            .map_err(|f| fail(keeper, f))?
            .map_err(|r| fail(keeper, Fault::NotAttested(r)))?;

        // T helpers that hold the version this client uses, the others' faults kept to say
        // why, should there be too few.
        let mut helpers = Vec::new();
        let mut failures = Vec::new();
        for (j, status) in self.keeper_status().await {
            match status {
                // A keeper holding another version too is mid-rotation: recovering the old
                // version now would leave the keeper outside the rotation's next step.
                Ok(s) if s.key_versions.len() > 1 => {
                    return Err(Error::Rotation(format!(
                        "keeper {j} holds key versions {:?}: finish the rotation (obscura keys \
                         rotate) before recovering a keeper's shares",
                        s.key_versions
                    )))
                }
                _ if j == keeper || exclude.contains(&j) || helpers.len() == keepers.threshold => {}
                Ok(s) if s.key_versions.contains(&self.key_version) => helpers.push(j),
                Ok(_) => failures.push(KeeperFailure {
                    keeper: j,
                    fault: Fault::NotSent(format!(
                        "it holds no shares of key version {}",
                        self.key_version
                    )),
                }),
                Err(fault) => failures.push(KeeperFailure { keeper: j, fault }),
            }
        }
        if helpers.len() < keepers.threshold {
            return Err(Error::Keepers { what, failures });
        }
        // The key each helper's evidence binds now: their masks derive from these.
        let mut helper_keys = Vec::with_capacity(helpers.len());
        for &h in &helpers {
            let key = match gate
                .fresh_appraisal(&self.http.client, &urls[usize::from(h) - 1])
                .await
            {
                Ok(Ok(a)) => crate::attested::party_key(&a),
                Ok(Err(refusal)) => Err(Fault::NotAttested(refusal)),
                Err(fault) => Err(fault),
            };
            helper_keys.push(key.map_err(|f| fail(h, f))?);
        }

        let mut plan = RecoveryPlan {
            id: [0; 16],
            issued_at: unix_now(),
            keeper,
            party_key: presented.party_key,
            nonce: presented.nonce,
            version: self.key_version,
            helpers: helpers.clone(),
            helper_keys,
            public_shares: keepers
                .public_shares
                .iter()
                .map(|per| per.iter().map(obscura_keeper::oprf::serialize).collect())
                .collect(),
            policy: gate.policy().to_json().into_bytes(),
        };
        rand_core::OsRng.fill_bytes(&mut plan.id);
        let digest = recovery_digest(&plan);
        let signature = Order::Recover {
            keeper,
            party_key: plan.party_key,
            plan: digest,
        }
        .sign(owner)
        .to_vec();

        let mut parts: Vec<RecoveryPart> = Vec::with_capacity(helpers.len());
        for &h in &helpers {
            let body = KeeperBody::RecoverPart {
                plan: plan.clone(),
                evidence: presented.evidence.clone(),
                signature: signature.clone(),
            };
            let helper_base = &urls[usize::from(h) - 1];
            match post_keeper(&self.http, helper_base, body).await.0 {
                Ok(ResponseBody::RecoveryPart(part)) if part.helper == h => parts.push(part),
                Ok(ResponseBody::RecoveryPart(part)) => failures.push(KeeperFailure {
                    keeper: h,
                    fault: Fault::AnsweredAs(part.helper),
                }),
                Ok(_) => failures.push(KeeperFailure {
                    keeper: h,
                    fault: Fault::Unexpected("a recovery part"),
                }),
                Err(fault) => failures.push(KeeperFailure { keeper: h, fault }),
            }
        }
        if parts.len() < helpers.len() {
            return Err(Error::Keepers { what, failures });
        }

        let mut receipt = [0u8; 32];
        rand_core::OsRng.fill_bytes(&mut receipt);
        let sealed = seal::seal(
            &appraisal,
            &recovery_receipt_purpose(keeper, &digest),
            &receipt,
            &mut rand_core::OsRng,
        )
        .map_err(|e| fail(keeper, Fault::NotSent(e.to_string())))?;
        let body = KeeperBody::Recover {
            plan: plan.clone(),
            signature,
            parts,
            receipt_enc: sealed.enc,
            receipt_ciphertext: sealed.ciphertext,
        };
        let expected: Vec<_> = plan
            .public_shares
            .iter()
            .enumerate()
            .map(|(i, per)| (i as u8 + 1, plan.version, per[usize::from(keeper) - 1]))
            .collect();
        match post_keeper(&self.http, &base, body).await.0 {
            Ok(ResponseBody::Provisioned {
                keeper: answered,
                public_shares,
                receipt: proof,
            }) => {
                if answered != keeper {
                    return Err(fail(keeper, Fault::AnsweredAs(answered)));
                }
                // Only the holder of the appraised key opened the receipt key, and it vouches
                // for exactly the public shares of this keeper in client.json.
                if public_shares != expected
                    || proof != obscura_proto::provision_receipt(&receipt, keeper, &expected)
                {
                    return Err(fail(keeper, Fault::OtherShares));
                }
                Ok(Recovered {
                    keeper,
                    helpers,
                    version: plan.version,
                    nodes: expected.len(),
                })
            }
            // Its verdict on the parts counts only with proof that the appraised keeper made it.
            Ok(ResponseBody::RecoveryRefused {
                keeper: answered,
                blamed,
                reason,
                proof,
            }) if answered == keeper
                && proof == obscura_proto::recovery_verdict(&receipt, keeper, &blamed, &reason) =>
            {
                let failures = match blamed[..] {
                    _ if blamed.iter().any(|h| !helpers.contains(h)) => {
                        return Err(fail(keeper, Fault::OtherShares))
                    }
                    [h] => vec![KeeperFailure {
                        keeper: h,
                        fault: Fault::BadRecoveryPart(reason),
                    }],
                    [a, b] => vec![
                        KeeperFailure {
                            keeper: a,
                            fault: Fault::MaskDispute(b),
                        },
                        KeeperFailure {
                            keeper: b,
                            fault: Fault::MaskDispute(a),
                        },
                    ],
                    _ => vec![KeeperFailure {
                        keeper,
                        fault: Fault::NotSent(reason),
                    }],
                };
                Err(Error::Keepers { what, failures })
            }
            Ok(ResponseBody::RecoveryRefused { .. }) => Err(fail(keeper, Fault::OtherShares)),
            Ok(_) => Err(fail(keeper, Fault::Unexpected("recovered public shares"))),
            Err(fault) => Err(fail(keeper, fault)),
        }
    }
}
