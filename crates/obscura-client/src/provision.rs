//! The data owner's side of keeper provisioning ([`obscura_cluster::provision`]): each keeper
//! waiting for its token-key shares is appraised now, under the cluster's policy, and receives
//! them sealed to the HPKE key its evidence binds, with the owner's signed order and a receipt key
//! it must use to prove it opened them. A keeper whose appraisal fails is sent nothing.

use obscura_attest::seal;
use obscura_cluster::keeper::SealedShare;
use obscura_cluster::provision::{delivery_purpose, Awaiting, Delivery, Pending};
use obscura_proto::{KeeperBody, ResponseBody};
use obscura_sharing::order::Order;
use rand_core::RngCore;
use zeroize::Zeroizing;

use crate::{post_keeper, Client, Error, Fault};

impl Client {
    /// Deliver each keeper in `pending` its token-key shares, one keeper after another, and
    /// check its receipt. Keepers that took theirs leave `pending`; for each keeper tried,
    /// whether it took them or why not: an appraisal refused is [`Fault::NotAttested`], a keeper
    /// that cannot prove it opened the delivery [`Fault::OtherShares`] (both misbehaviour), and
    /// shares that do not match `client.json` are not sent ([`Fault::NotSent`]: the owner's files
    /// are at fault, not the keeper).
    ///
    /// # Errors
    /// [`Error::NotOwner`] without the data owner's key; [`Error::NoAttestation`] without an
    /// attestation policy.
    pub async fn provision(
        &self,
        pending: &mut Pending,
    ) -> Result<Vec<(u8, Result<(), Fault>)>, Error> {
        let owner = self.owner.as_ref().ok_or(Error::NotOwner)?;
        let Some(gate) = self.http.gate.as_deref() else {
            return Err(Error::NoAttestation);
        };
        let mut out = Vec::new();
        for awaiting in std::mem::take(&mut pending.keepers) {
            let keeper = awaiting.keeper;
            let outcome = match self
                .keepers
                .urls
                .get(usize::from(awaiting.keeper).wrapping_sub(1))
            {
                None => Err(Fault::NotSent(format!(
                    "this cluster has no keeper {}",
                    awaiting.keeper
                ))),
                Some(base) => match self.matches_cluster(&awaiting) {
                    Err(fault) => Err(fault),
                    Ok(()) => deliver(gate, &self.http, base, owner, &awaiting).await,
                },
            };
            if outcome.is_err() {
                pending.keepers.push(awaiting);
            }
            out.push((keeper, outcome));
        }
        Ok(out)
    }

    /// Whether `awaiting`'s shares of the version this client uses are those whose public shares
    /// `client.json` names for that keeper: shares of another cluster are not sent, so that no
    /// honest keeper stores them and is then refused the right ones.
    fn matches_cluster(&self, awaiting: &Awaiting) -> Result<(), Fault> {
        let Some(keepers) = self.tokens.keepers() else {
            return Ok(());
        };
        for s in &awaiting.shares {
            if s.version != self.key_version {
                continue;
            }
            let expected = keepers
                .public_shares
                .get(usize::from(s.node).wrapping_sub(1))
                .and_then(|per| per.get(usize::from(awaiting.keeper).wrapping_sub(1)));
            if expected.map(obscura_keeper::oprf::serialize) != Some(public_of(awaiting.keeper, s)?)
            {
                return Err(Fault::NotSent(format!(
                    "the shares waiting for keeper {} are not those client.json's public shares \
                     name (node {}, version {}): the data owner's files are not this cluster's",
                    awaiting.keeper, s.node, s.version
                )));
            }
        }
        Ok(())
    }
}

/// The public share of `share`, held by keeper `keeper`.
fn public_of(keeper: u8, share: &SealedShare) -> Result<[u8; 32], Fault> {
    obscura_keeper::threshold::KeyShare::from_bytes(keeper, &share.secret)
        .map(|k| obscura_keeper::oprf::serialize(&k.public()))
        .map_err(|_| {
            Fault::NotSent(format!(
                "a share waiting for keeper {keeper} is not a scalar"
            ))
        })
}

async fn deliver(
    gate: &crate::attested::Gate,
    http: &crate::Http,
    base: &str,
    owner: &ed25519_dalek::SigningKey,
    awaiting: &Awaiting,
) -> Result<(), Fault> {
    let appraisal = gate
        .fresh_appraisal(&http.client, base)
        .await?
        .map_err(Fault::NotAttested)?;
    let mut delivery = Delivery {
        receipt: [0; 32],
        shares: awaiting
            .shares
            .iter()
            .map(|s| SealedShare {
                node: s.node,
                version: s.version,
                secret: s.secret,
            })
            .collect(),
    };
    rand_core::OsRng.fill_bytes(&mut delivery.receipt);
    let plain = Zeroizing::new(postcard::to_allocvec(&delivery).expect("a delivery encodes"));
    let sealed = seal::seal(
        &appraisal,
        &delivery_purpose(awaiting.keeper),
        &plain,
        &mut rand_core::OsRng,
    )
    .map_err(|e| Fault::NotSent(e.to_string()))?;
    let party_key = crate::attested::party_key(&appraisal)?;
    let signature = Order::Provision {
        keeper: awaiting.keeper,
        party_key,
        delivery: obscura_proto::provision_digest(&sealed.enc, &sealed.ciphertext),
    }
    .sign(owner);
    let body = KeeperBody::Provision {
        party_key,
        enc: sealed.enc,
        ciphertext: sealed.ciphertext,
        signature: signature.to_vec(),
    };
    match post_keeper(http, base, body).await.0? {
        ResponseBody::Provisioned {
            keeper,
            public_shares,
            receipt,
        } => {
            if keeper != awaiting.keeper {
                return Err(Fault::AnsweredAs(keeper));
            }
            // Only the holder of the appraised key opened the receipt key, and it vouches for
            // exactly the public shares of what was sent.
            let sent = awaiting
                .shares
                .iter()
                .map(|s| Ok((s.node, s.version, public_of(keeper, s)?)))
                .collect::<Result<Vec<_>, Fault>>()?;
            if public_shares != sent
                || receipt != obscura_proto::provision_receipt(&delivery.receipt, keeper, &sent)
            {
                return Err(Fault::OtherShares);
            }
            Ok(())
        }
        _ => Err(Fault::Unexpected("provisioned public shares")),
    }
}
