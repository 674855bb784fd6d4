//! Helpers shared by the keeper's tests, and by its benchmarks (included there by path).
#![allow(dead_code)]

use obscura_keeper::signing::{self, Addressed, DkgState, KeyPackage, PeerKeys, PublicKeyPackage};
use rand_core::{CryptoRng, RngCore};

/// Bytes from hex, ignoring white space (long vectors are written over several lines).
pub fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// A FROST key generation among `m` keepers in one process, run through round 2: what each
/// keeper holds then, and the sealed round-2 packages addressed to each, for a test to look
/// at before [`finish`](Self::finish).
pub struct Dkg {
    /// Keeper j's peer keys at `j − 1`.
    pub peers: Vec<PeerKeys>,
    /// Every keeper's round-1 package.
    pub round1: Vec<Addressed>,
    /// Keeper j's state after round 2 at `j − 1`.
    pub after: Vec<DkgState>,
    /// The sealed round-2 packages for keeper j at `j − 1`, with their senders.
    pub to: Vec<Vec<Addressed>>,
}

impl Dkg {
    /// Rounds 1 and 2 among keepers `1..=m`, threshold `t`, bound to `context`.
    pub fn through_round2<R: RngCore + CryptoRng>(
        m: u8,
        t: u8,
        context: &[u8],
        rng: &mut R,
    ) -> Dkg {
        let keys: Vec<_> = (0..m).map(|_| signing::peer_key(rng)).collect();
        let publics: Vec<[u8; 32]> = keys.iter().map(|k| k.1).collect();
        let peers: Vec<_> = (1..=m)
            .map(|j| PeerKeys::new(j, &keys[j as usize - 1].0, &publics).unwrap())
            .collect();
        let mut states = Vec::new();
        let mut round1 = Vec::new();
        for j in 1..=m {
            let (s, p) = signing::dkg_start(j, m, t, rng).unwrap();
            states.push(s);
            round1.push((j, p));
        }
        let mut dkg = Dkg {
            peers,
            round1,
            after: Vec::new(),
            to: vec![Vec::new(); m as usize],
        };
        for (j, s) in (1..=m).zip(states) {
            let (s, out) =
                signing::dkg_round2(s, &dkg.peers[j as usize - 1], context, &dkg.others(j), rng)
                    .unwrap();
            for (r, sealed) in out {
                dkg.to[r as usize - 1].push((j, sealed));
            }
            dkg.after.push(s);
        }
        dkg
    }

    /// The round-1 packages keeper `j` receives: everyone else's.
    pub fn others(&self, j: u8) -> Vec<Addressed> {
        self.round1.iter().filter(|p| p.0 != j).cloned().collect()
    }

    /// Every keeper finishes under `context`: their key packages, keeper 1 first, and the
    /// group's public key package.
    pub fn finish(&self, context: &[u8]) -> (Vec<KeyPackage>, PublicKeyPackage) {
        let mut packages = Vec::new();
        let mut public = None;
        for (i, state) in self.after.iter().enumerate() {
            let j = i as u8 + 1;
            let (k, p) =
                signing::dkg_finish(state, &self.peers[i], context, &self.others(j), &self.to[i])
                    .unwrap();
            packages.push(k);
            public = Some(p);
        }
        (packages, public.expect("at least one keeper"))
    }
}
