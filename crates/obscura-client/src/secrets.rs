//! The user's side of the keepers as a key server: accounts, secrets held as Shamir shares,
//! the user's audit trail, and threshold Ed25519 signatures.
//!
//! A secret is split by the client into `M` Shamir shares over GF(2^8), any `T` of which
//! rebuild it; each keeper stores one, sealed under a key of its own for that secret. The
//! shared value is the secret followed by a 32-byte digest of it and its id, so a rebuilt
//! secret is checked: when a keeper returns a wrong share, the client tries other sets of `T`
//! answers and names the keeper whose share breaks the check.
//!
//! A signing key never exists in one place: the keepers make it by distributed key generation
//! (FROST, RFC 9591), relaying through this client only public commitments and packages sealed
//! keeper to keeper. To sign, `T` keepers commit to nonces and each returns a signature share;
//! the client aggregates them into a standard Ed25519 signature, names any keeper whose share
//! does not verify, and tries again with the others.

use std::path::Path;

use obscura_auth::capability::{Holder, Offer};
use obscura_keeper::signing;
use obscura_proto::{
    Capability, KeeperBody, KeeperPackage, ResponseBody, SecretInfo, SignedCapability, UserEvent,
};
use obscura_sharing::bytes::{self, ByteShare, Params};
use obscura_tokens::keyfile::to_hex as hex;
use rand_core::{OsRng, RngCore};
use zeroize::Zeroizing;

use crate::session::LoginReport;

/// What [`Client::change_password`] did.
#[derive(Debug)]
pub struct PasswordChange {
    /// Keepers that took the new password now.
    pub changed: Vec<u8>,
    /// Keepers that do not take the new password, with why (down, or the change failed):
    /// run the change again when they are back.
    pub left: Vec<KeeperFailure>,
    /// The login with the new password that ended it.
    pub login: LoginReport,
}
use crate::fault::{keeper_failures as failures, Fault, KeeperFailure, PerKeeper};
use crate::{Client, Error};

/// A signature made by `T` keepers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signed {
    /// The Ed25519 signature (RFC 8032).
    pub signature: [u8; 64],
    /// The key's Ed25519 public key.
    pub public_key: [u8; 32],
    /// The keepers that signed.
    pub signers: Vec<u8>,
    /// Keepers that failed or sent a share that does not verify (named), on the way.
    pub faults: Vec<KeeperFailure>,
}

/// A secret rebuilt from the keepers.
#[derive(Debug)]
pub struct Opened {
    /// Its name.
    pub name: String,
    /// The secret.
    pub secret: Zeroizing<Vec<u8>>,
    /// Keepers that failed or returned a wrong share.
    pub faults: Vec<KeeperFailure>,
}

fn digest(id: &[u8; 16], secret: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key("obscura 2026 user secret check");
    h.update(id);
    h.update(secret);
    *h.finalize().as_bytes()
}

/// A secret rebuilt from keepers' shares ([`rebuild`]).
pub struct Rebuilt {
    /// The secret, its check passed.
    pub secret: Zeroizing<Vec<u8>>,
    /// The keepers whose shares rebuilt it.
    pub from: Vec<u8>,
    /// Keepers whose shares do not lie on it (they lied, or their share was damaged).
    pub liars: Vec<u8>,
}

/// Rebuilds secret `id` from `shares` (keeper, share), any `t` of which should do: tries each
/// set of `t` until one rebuilds a value that passes the secret's check, then names every other
/// keeper whose share does not lie on it. What a client does with the shares it gets back, and
/// what an attested worker does with the shares released to it.
///
/// # Errors
/// The number of sets of `t` that failed, when none passed.
pub fn rebuild(id: &[u8; 16], shares: &[(u8, Vec<u8>)], t: usize) -> Result<Rebuilt, usize> {
    let mut bad_sets = 0;
    for pick in combinations(shares.len(), t) {
        let picked: Vec<ByteShare> = pick
            .iter()
            .map(|&i| ByteShare {
                x: shares[i].0,
                bytes: shares[i].1.clone(),
            })
            .collect();
        let Ok(plain) = bytes::reconstruct(&picked, t) else {
            bad_sets += 1;
            continue;
        };
        let plain = Zeroizing::new(plain);
        if plain.len() < 32 {
            bad_sets += 1;
            continue;
        }
        let (secret, check) = plain.split_at(plain.len() - 32);
        if digest(id, secret) != check {
            bad_sets += 1;
            continue;
        }
        let mut liars = Vec::new();
        for (j, share) in shares {
            if pick.iter().any(|&i| shares[i].0 == *j) {
                continue;
            }
            let mut with: Vec<ByteShare> = picked[..t - 1].to_vec();
            with.push(ByteShare {
                x: *j,
                bytes: share.clone(),
            });
            if bytes::reconstruct(&with, t).ok().as_deref() != Some(&plain[..]) {
                liars.push(*j);
            }
        }
        return Ok(Rebuilt {
            secret: Zeroizing::new(secret.to_vec()),
            from: pick.iter().map(|&i| shares[i].0).collect(),
            liars,
        });
    }
    Err(bad_sets)
}

fn combinations(n: usize, k: usize) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    let mut pick: Vec<usize> = (0..k).collect();
    if k == 0 || k > n {
        return out;
    }
    loop {
        out.push(pick.clone());
        let Some(i) = (0..k).rev().find(|&i| pick[i] != i + n - k) else {
            return out;
        };
        pick[i] += 1;
        for j in i + 1..k {
            pick[j] = pick[j - 1] + 1;
        }
    }
}

impl Client {
    fn keeper_count(&self) -> usize {
        self.keepers.urls.len()
    }

    /// Keepers needed to log in, sign and make tokens (T).
    pub fn keeper_threshold(&self) -> usize {
        self.keeper_threshold
    }

    /// Keep the user's sessions in `path` (mode 0600): loaded now if the file exists, saved
    /// after every keeper request. Returns whether a session was loaded.
    ///
    /// # Errors
    /// [`Error::Session`] for an unreadable file.
    pub fn attach_session(&self, path: &Path) -> Result<bool, Error> {
        self.keepers.sessions.attach(
            path,
            self.keeper_count(),
            &self.capability_key,
            crate::unix_now(),
        )
    }

    /// The user logged in, if any.
    pub fn user(&self) -> Option<String> {
        self.keepers.sessions.user()
    }

    /// As a logged-in admin, register `user` with `roles` ([`obscura_proto::roles`]) at every
    /// keeper (OPAQUE: the password never leaves this process).
    ///
    /// # Errors
    /// [`Error::Keepers`] naming each keeper that refused.
    pub async fn register(&self, user: &str, password: &[u8], roles: u8) -> Result<(), Error> {
        self.keepers.register(user, password, roles, None).await
    }

    /// Register the cluster's first account, its admin with every role, with the bootstrap
    /// code `cluster init` wrote; no session is needed, and no later account can be made so.
    ///
    /// # Errors
    /// [`Error::Keepers`] naming each keeper that refused.
    pub async fn register_first(
        &self,
        user: &str,
        password: &[u8],
        bootstrap: [u8; 32],
    ) -> Result<(), Error> {
        self.keepers
            .register(user, password, obscura_proto::roles::ALL, Some(bootstrap))
            .await
    }

    /// Log in as `user` with every keeper that answers (at least `T` must accept), then have
    /// `T` keepers sign the user's capability.
    ///
    /// # Errors
    /// [`Error::Keepers`] when fewer than `T` accept (each named, with its reason: a wrong
    /// password and an unknown user read the same) or sign.
    pub async fn login(&self, user: &str, password: &[u8]) -> Result<LoginReport, Error> {
        let report = self
            .keepers
            .login(user, password, self.keeper_threshold().max(1))
            .await?;
        self.refresh_capability().await?;
        Ok(report)
    }

    /// Change `user`'s password at every keeper. Each keeper takes the new password only in a
    /// session opened moments before with the old one, so the change logs in with the old
    /// password wherever it still holds, registers the new one there (the account keeps its
    /// role; the user's other sessions at that keeper end), then logs in with the new password
    /// everywhere. Run again after a partial change, it finishes the keepers left: a keeper
    /// that already has the new password refuses the old one (counted as a failed login) and
    /// is skipped.
    ///
    /// # Errors
    /// [`Error::Keepers`] when fewer than `T` keepers take the new password at the end.
    pub async fn change_password(
        &self,
        user: &str,
        old: &[u8],
        new: &[u8],
    ) -> Result<PasswordChange, Error> {
        let changing = match self.keepers.login(user, old, 1).await {
            Ok(report) => report.keepers,
            Err(_) => Vec::new(),
        };
        let failed = self
            .keepers
            .register_at(user, new, &changing, 0, None, false)
            .await;
        let login = self.login(user, new).await?;
        let m = self.keepers.urls.len() as u8;
        Ok(PasswordChange {
            changed: changing
                .iter()
                .copied()
                .filter(|j| failed.iter().all(|f| f.keeper != *j))
                .collect(),
            left: (1..=m)
                .filter(|j| !login.keepers.contains(j))
                .map(|j| KeeperFailure {
                    keeper: j,
                    fault: failed
                        .iter()
                        .chain(&login.failures)
                        .find(|f| f.keeper == j)
                        .map_or(Fault::NoAnswer, |f| f.fault.clone()),
                })
                .collect(),
            login,
        })
    }

    /// End the sessions.
    ///
    /// # Errors
    /// [`Error::Session`] if the session file cannot be removed.
    pub async fn logout(&self) -> Result<Vec<KeeperFailure>, Error> {
        self.keepers.logout().await
    }

    /// As an admin: lift `user`'s login lockout at every keeper.
    ///
    /// # Errors
    /// [`Error::Keepers`].
    pub async fn unlock(&self, user: &str) -> Result<(), Error> {
        let answers = self
            .keepers
            .post_all(|_| KeeperBody::KeeperUnlock { user: user.into() })
            .await;
        let f = failures(&answers);
        if f.is_empty() {
            Ok(())
        } else {
            Err(Error::Keepers {
                what: "unlock",
                failures: f,
            })
        }
    }

    /// Store `secret` at the keepers as `M` Shamir shares (any `T` rebuild it); `origin` is
    /// "generate" or "import" (for the audit trail). Every keeper must take its share.
    ///
    /// # Errors
    /// [`Error::Secret`] for `T < 2`, [`Error::Keepers`].
    pub async fn secret_put(
        &self,
        name: &str,
        secret: &[u8],
        origin: &str,
    ) -> Result<[u8; 16], Error> {
        self.put_secret(name, secret, origin, None).await
    }

    /// [`Client::secret_put`] for a secret the keepers give out only to attested workers whose
    /// appraisal satisfies `policy` (sealed to the worker's key: [`Client::secret_release`]),
    /// never to its user, this one included.
    ///
    /// # Errors
    /// As [`Client::secret_put`]; a keeper refuses a policy that does not parse.
    pub async fn secret_put_released(
        &self,
        name: &str,
        secret: &[u8],
        origin: &str,
        policy: &obscura_attest::Policy,
    ) -> Result<[u8; 16], Error> {
        self.put_secret(name, secret, origin, Some(policy.to_json().into_bytes()))
            .await
    }

    async fn put_secret(
        &self,
        name: &str,
        secret: &[u8],
        origin: &str,
        policy: Option<Vec<u8>>,
    ) -> Result<[u8; 16], Error> {
        let (m, t) = (self.keeper_count(), self.keeper_threshold());
        let params = Params::new(t, m).map_err(|_| {
            Error::Secret(format!(
                "secrets need at least 2 of the keepers to rebuild them; this cluster has T = {t} of {m}"
            ))
        })?;
        let mut id = [0u8; 16];
        OsRng.fill_bytes(&mut id);
        let mut plain = Zeroizing::new(secret.to_vec());
        plain.extend_from_slice(&digest(&id, secret));
        let shares =
            bytes::split(&plain, params, &mut OsRng).map_err(|e| Error::Secret(e.to_string()))?;
        let shares = std::sync::Arc::new(shares);
        let answers = self
            .keepers
            .post_all(|j| {
                let share = shares[usize::from(j) - 1].bytes.clone();
                match &policy {
                    None => KeeperBody::SecretPut {
                        id,
                        name: name.into(),
                        origin: origin.into(),
                        share,
                    },
                    Some(policy) => KeeperBody::SecretPutReleased {
                        id,
                        name: name.into(),
                        origin: origin.into(),
                        share,
                        policy: policy.clone(),
                    },
                }
            })
            .await;
        let f = failures(&answers);
        if f.is_empty() {
            Ok(id)
        } else {
            Err(Error::Keepers {
                what: "storing the secret",
                failures: f,
            })
        }
    }

    /// Rebuild secret `id` from the keepers' shares (recorded as an export when `export`).
    ///
    /// # Errors
    /// [`Error::NotRebuilt`] when no `T` of the answers rebuild a secret that passes its check.
    pub async fn secret_get(&self, id: &[u8; 16], export: bool) -> Result<Opened, Error> {
        let t = self.keeper_threshold();
        let answers = self
            .keepers
            .post_all(|_| KeeperBody::SecretGet { id: *id, export })
            .await;
        let mut faults = failures(&answers);
        let mut got: Vec<(u8, String, Vec<u8>)> = Vec::new();
        for (j, r) in answers {
            if let Ok(ResponseBody::Secret {
                keeper,
                name,
                share,
            }) = r
            {
                if keeper == j {
                    got.push((j, name, share));
                } else {
                    faults.push(KeeperFailure {
                        keeper: j,
                        fault: Fault::AnsweredAs(keeper),
                    });
                }
            }
        }
        let shares: Vec<(u8, Vec<u8>)> = got.iter().map(|(j, _, s)| (*j, s.clone())).collect();
        let bad_sets = match rebuild(id, &shares, t) {
            Ok(rebuilt) => {
                faults.extend(rebuilt.liars.iter().map(|&keeper| KeeperFailure {
                    keeper,
                    fault: Fault::BadSecretShare,
                }));
                faults.sort_by_key(|f| f.keeper);
                let name = got
                    .iter()
                    .find(|(j, _, _)| *j == rebuilt.from[0])
                    .map(|(_, n, _)| n.clone())
                    .unwrap_or_default();
                return Ok(Opened {
                    name,
                    secret: rebuilt.secret,
                    faults,
                });
            }
            Err(bad_sets) => bad_sets,
        };
        faults.sort_by_key(|f| f.keeper);
        Err(Error::NotRebuilt {
            id: *id,
            need: t,
            answered: got.len(),
            failed_sets: bad_sets,
            failures: faults,
        })
    }

    /// Delete secret `id` at every keeper that answers (each destroys the key that seals its
    /// share). Keepers that failed are returned; run it again to finish there.
    ///
    /// # Errors
    /// [`Error::Keepers`] when no keeper deleted it.
    pub async fn secret_delete(&self, id: &[u8; 16]) -> Result<Vec<KeeperFailure>, Error> {
        let answers = self
            .keepers
            .post_all(|_| KeeperBody::SecretDelete { id: *id })
            .await;
        let f = failures(&answers);
        if f.len() == answers.len() {
            return Err(Error::Keepers {
                what: "deleting the secret",
                failures: f,
            });
        }
        Ok(f)
    }

    /// The user's secrets, as the first keeper that answers lists them.
    ///
    /// # Errors
    /// [`Error::Keepers`] when none answers.
    pub async fn secret_list(&self) -> Result<Vec<SecretInfo>, Error> {
        let answers = self.keepers.post_all(|_| KeeperBody::SecretList).await;
        let f = failures(&answers);
        for (_, r) in answers {
            if let Ok(ResponseBody::Secrets { items }) = r {
                return Ok(items);
            }
        }
        Err(Error::Keepers {
            what: "listing secrets",
            failures: f,
        })
    }

    /// The user's audit trail at each keeper that answers.
    ///
    /// # Errors
    /// [`Error::Keepers`] when none answers.
    pub async fn user_events(&self) -> Result<Vec<(u8, Vec<UserEvent>)>, Error> {
        let answers = self.keepers.post_all(|_| KeeperBody::UserEvents).await;
        let f = failures(&answers);
        let out: Vec<(u8, Vec<UserEvent>)> = answers
            .into_iter()
            .filter_map(|(j, r)| match r {
                Ok(ResponseBody::Events { events }) => Some((j, events)),
                _ => None,
            })
            .collect();
        if out.is_empty() {
            return Err(Error::Keepers {
                what: "reading the audit trail",
                failures: f,
            });
        }
        Ok(out)
    }

    /// Make a FROST signing key by distributed key generation among all `M` keepers; returns
    /// its id and Ed25519 public key. Every keeper must take part.
    ///
    /// # Errors
    /// [`Error::Keepers`], or [`Error::Secret`] when keepers disagree on the public key.
    pub async fn signing_key_generate(&self, name: &str) -> Result<([u8; 16], [u8; 32]), Error> {
        let mut id = [0u8; 16];
        OsRng.fill_bytes(&mut id);
        let all = |answers: &[(u8, Result<ResponseBody, Fault>)], what| {
            let f = failures(answers);
            if f.is_empty() && answers.len() == self.keeper_count() {
                Ok(())
            } else {
                Err(Error::Keepers { what, failures: f })
            }
        };
        let r1 = self
            .keepers
            .post_all(|_| KeeperBody::DkgStart {
                id,
                name: name.into(),
            })
            .await;
        all(&r1, "key generation (round 1)")?;
        let round1: Vec<KeeperPackage> = r1
            .into_iter()
            .filter_map(|(_, r)| match r {
                Ok(ResponseBody::DkgPackages { packages, .. }) => packages.into_iter().next(),
                _ => None,
            })
            .collect();
        let others = |j: u8| -> Vec<KeeperPackage> {
            round1.iter().filter(|p| p.keeper != j).cloned().collect()
        };
        let r2 = self
            .keepers
            .post_all(|j| KeeperBody::DkgRound2 {
                id,
                round1: others(j),
            })
            .await;
        all(&r2, "key generation (round 2)")?;
        // Regroup: to[j] holds the packages addressed to keeper j, by sender.
        let mut to: Vec<Vec<KeeperPackage>> =
            (0..self.keeper_count()).map(|_| Vec::new()).collect();
        for (from, r) in r2 {
            if let Ok(ResponseBody::DkgPackages { packages, .. }) = r {
                for p in packages {
                    if let Some(slot) = to.get_mut(usize::from(p.keeper).wrapping_sub(1)) {
                        slot.push(KeeperPackage {
                            keeper: from,
                            bytes: p.bytes,
                        });
                    }
                }
            }
        }
        let r3 = self
            .keepers
            .post_all(|j| KeeperBody::DkgFinish {
                id,
                round1: others(j),
                round2: to[usize::from(j) - 1].clone(),
            })
            .await;
        all(&r3, "key generation (finish)")?;
        let mut keys = r3.into_iter().filter_map(|(j, r)| match r {
            Ok(ResponseBody::DkgDone { public_key, .. }) => Some((j, public_key)),
            _ => None,
        });
        let (_, first) = keys
            .next()
            .ok_or_else(|| Error::Secret("no keeper finished the key generation".into()))?;
        if let Some((j, _)) = keys.find(|(_, k)| *k != first) {
            return Err(Error::Secret(format!(
                "keeper {j} ended the key generation with another public key than keeper 1"
            )));
        }
        Ok((id, first))
    }

    /// Sign `message` with signing key `id`: `T` keepers commit and sign; a keeper whose share
    /// does not verify is named and replaced by another while keepers remain.
    ///
    /// # Errors
    /// [`Error::Keepers`] when fewer than `T` keepers sign correctly (see [`Error::culprits`]).
    pub async fn sign(&self, id: &[u8; 16], message: &[u8]) -> Result<Signed, Error> {
        let what = format!("key {}", hex(id));
        self.threshold_sign(
            &what,
            None,
            || KeeperBody::SignCommit { id: *id },
            |package| KeeperBody::SignShare { id: *id, package },
            |_| Ok(message.to_vec()),
        )
        .await
        .map(|(signed, _)| signed)
    }

    /// Have `T` keepers sign a fresh capability for the logged-in user, with a key made here
    /// for it, and keep it (in the session file too). Each keeper offers what it will sign (the
    /// account's roles, the limits, the latest expiry); the capability takes the offers of the
    /// keepers that sign, which must agree.
    ///
    /// # Errors
    /// [`Error::Session`] when not logged in; [`Error::Keepers`] when fewer than `T` keepers
    /// sign or their offers disagree.
    pub async fn refresh_capability(&self) -> Result<std::sync::Arc<Holder>, Error> {
        let user = self
            .user()
            .ok_or_else(|| Error::Session("not logged in: run `obscura login` first".into()))?;
        let key = ed25519_dalek::SigningKey::generate(&mut OsRng);
        let mut id = [0u8; 16];
        OsRng.fill_bytes(&mut id);
        let issued_at = crate::unix_now();
        let holder = key.verifying_key().to_bytes();
        let group = self.capability_key;
        let (signed, body) = self
            .threshold_sign(
                "the capability key",
                Some(group.to_bytes()),
                || KeeperBody::CapabilityCommit,
                |package| KeeperBody::CapabilityShare { package },
                |offers| {
                    let first = offers
                        .first()
                        .and_then(|c| c.offer)
                        .ok_or_else(|| Error::Secret("a keeper made no offer".into()))?;
                    if offers.iter().any(|c| {
                        c.offer
                            .is_none_or(|o| o.roles != first.roles || o.limits != first.limits)
                    }) {
                        return Err(Error::Keepers {
                            what: "capability",
                            failures: offers
                                .iter()
                                .map(|c| KeeperFailure {
                                    keeper: c.keeper,
                                    fault: Fault::OtherOffer(format!("{:?}", c.offer)),
                                })
                                .collect(),
                        });
                    }
                    let expires_at = offers
                        .iter()
                        .filter_map(|c| c.offer.map(|o| o.expires_at))
                        .min()
                        .unwrap_or(issued_at);
                    Ok(obscura_auth::capability::signing_message(
                        &obscura_auth::capability::encode(&Capability {
                            id,
                            user: user.clone(),
                            roles: first.roles,
                            holder,
                            issued_at,
                            expires_at,
                            limits: first.limits,
                        }),
                    ))
                },
            )
            .await?;
        if signed.public_key != group.to_bytes() {
            return Err(Error::Secret(
                "the keepers' capability key is not the one in client.json".into(),
            ));
        }
        let body = obscura_auth::capability::body_of(&body)
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        let holder = Holder::new(
            key,
            SignedCapability {
                body,
                signature: signed.signature.to_vec(),
            },
            &group,
            crate::unix_now(),
        )
        .map_err(|e| Error::Secret(e.to_string()))?;
        self.keepers.sessions.set_capability(holder)
    }

    /// FROST signing with `T` keepers: `commit` asks each for a commitment (and, for a
    /// capability, its offer), `message_for` makes the message from the commitments of the
    /// keepers that will sign, `share` asks each of them for its share of the package. A keeper
    /// whose share does not verify is named and replaced by another while keepers remain.
    /// Returns the signature and the message signed.
    async fn threshold_sign(
        &self,
        what: &str,
        key: Option<[u8; 32]>,
        commit: impl Fn() -> KeeperBody,
        share: impl Fn(Vec<u8>) -> KeeperBody,
        message_for: impl Fn(&[Committed]) -> Result<Vec<u8>, Error>,
    ) -> Result<(Signed, Vec<u8>), Error> {
        let t = self.keeper_threshold();
        let mut faults: Vec<KeeperFailure> = Vec::new();
        let mut excluded: Vec<u8> = Vec::new();
        loop {
            // Commitments from every keeper not yet excluded; the first T that answer sign.
            let answers = self.keepers.post_all(|_| commit()).await;
            let mut commits: Vec<Committed> = Vec::new();
            for (j, r) in answers {
                if excluded.contains(&j) {
                    continue;
                }
                let committed = match r {
                    Ok(ResponseBody::SignCommitment {
                        keeper,
                        commitment,
                        public_package,
                    }) if keeper == j => Ok(Committed {
                        keeper: j,
                        commitment,
                        public_package,
                        offer: None,
                    }),
                    Ok(ResponseBody::CapabilityOffer {
                        keeper,
                        commitment,
                        roles,
                        limits,
                        expires_at,
                        public_package,
                    }) if keeper == j => Ok(Committed {
                        keeper: j,
                        commitment,
                        public_package,
                        offer: Some(Offer {
                            roles,
                            limits,
                            expires_at,
                        }),
                    }),
                    Ok(_) => Err(Fault::Unexpected("a signing commitment")),
                    Err(fault) => Err(fault),
                };
                // A malformed commitment, or a public key other than the one this client
                // knows, leaves its keeper out, so that one keeper cannot stop the signing.
                match committed.and_then(|c| checked(c, key)) {
                    Ok(c) => commits.push(c),
                    Err(fault) => {
                        excluded.push(j);
                        faults.push(KeeperFailure { keeper: j, fault });
                    }
                }
            }
            if commits.is_empty() {
                crate::fault::doubt(faults.iter_mut().map(|f| &mut f.fault));
            }
            if commits.len() < t {
                faults.sort_by_key(|f| f.keeper);
                return Err(Error::Keepers {
                    what: "signing (too few keepers can sign)",
                    failures: faults,
                });
            }
            commits.truncate(t);
            // The keepers must agree on the key.
            let public_bytes = commits[0].public_package.clone();
            if let Some(j) = commits
                .iter()
                .find(|c| c.public_package != public_bytes)
                .map(|c| c.keeper)
            {
                return Err(Error::Secret(format!(
                    "keepers {} and {j} hold different public keys for {what}",
                    commits[0].keeper
                )));
            }
            let public = signing::public_package_from(&public_bytes)
                .map_err(|e| Error::Secret(e.to_string()))?;
            let message = message_for(&commits)?;
            let pairs: Vec<(u8, Vec<u8>)> = commits
                .iter()
                .map(|c| (c.keeper, c.commitment.clone()))
                .collect();
            let package = signing::signing_package(&message, &pairs)
                .map_err(|e| Error::Secret(e.to_string()))?;
            let mut set = PerKeeper::new();
            for (j, _) in &pairs {
                let (link, j, body) = (self.keepers.clone(), *j, share(package.clone()));
                set.spawn(j, async move { link.post(j, body).await.0 });
            }
            let mut shares = Vec::new();
            let mut failed = false;
            while let Some((j, r)) = set.next().await {
                let fault = match r {
                    Ok(ResponseBody::SignatureShare { keeper, share }) if keeper == j => {
                        shares.push((j, share));
                        continue;
                    }
                    Ok(_) => Fault::Unexpected("a signature share"),
                    Err(fault) => fault,
                };
                failed = true;
                excluded.push(j);
                faults.push(KeeperFailure { keeper: j, fault });
            }
            if failed {
                continue;
            }
            shares.sort_by_key(|(j, _)| *j);
            match signing::aggregate(&package, &shares, &public) {
                Ok(signature) => {
                    faults.sort_by_key(|f| f.keeper);
                    return Ok((
                        Signed {
                            signature,
                            public_key: signing::public_key(&public),
                            signers: shares.iter().map(|(j, _)| *j).collect(),
                            faults,
                        },
                        message,
                    ));
                }
                Err(signing::SigningError::Cheaters(cheaters)) => {
                    for j in cheaters {
                        excluded.push(j);
                        faults.push(KeeperFailure {
                            keeper: j,
                            fault: Fault::BadSignatureShare,
                        });
                    }
                }
                Err(e) => return Err(Error::Secret(e.to_string())),
            }
        }
    }
}

/// `c` when its commitment is one and its public key package parses and, where this client
/// knows the key (`key`), is of that key.
fn checked(c: Committed, key: Option<[u8; 32]>) -> Result<Committed, Fault> {
    signing::check_commitment(&c.commitment)
        .map_err(|_| Fault::Unexpected("a well-formed signing commitment"))?;
    let public = signing::public_package_from(&c.public_package)
        .map_err(|_| Fault::Unexpected("a well-formed public key package"))?;
    if key.is_some_and(|k| signing::public_key(&public) != k) {
        return Err(Fault::OtherKey);
    }
    Ok(c)
}

/// A keeper's round-1 answer: its commitment, the key's public package as it holds it, and
/// (for a capability) what it offers to sign.
pub(crate) struct Committed {
    keeper: u8,
    commitment: Vec<u8>,
    public_package: Vec<u8>,
    offer: Option<Offer>,
}
