//! The node's side of Stage-2: distances on shares, then the product rounds that hide every
//! distance beyond τ (see the crate's documentation for the protocol).
//!
//! A [`NodeSession`] lives from the query's first answer to its last: [`NodeSession::start`]
//! opens the masked distances of round 0, and each [`NodeSession::step`] takes every node's
//! openings of the last round (relayed by the querier, authenticated by the caller) and opens
//! the next round, until it returns the node's [`NodeAnswer`].

use obscura_sharing::field::{Fp, P};
use obscura_sharing::prime::{lagrange_at, lagrange_at_zero};
use obscura_sharing::zero::ZeroSharingKeys;

use crate::{Error, HashShare, NodeAnswer, NodeRequest, Opened, HASH_BITS};

/// The most τ a node takes: every distance of a 64-bit hash.
pub const MAX_TAU: u32 = HASH_BITS as u32;

/// The widths of the slots of one level: 1 for a value, 2 for the pair `(r₁, r₂)`.
type Kinds = Vec<usize>;

/// How the rounds after round 0 compute `Π_{j=0..τ} (d − j)` for one τ.
///
/// First `powers` rounds raise `d` to `d², …, d^g` with `g = 2^powers` (round `r` multiplies
/// `d^(2^(r−1))` by each power up to it). Then every run of `g` consecutive factors `d − j` is a
/// polynomial of degree ≤ g in `d`, which each node evaluates on its shares of the powers
/// without a round; these group factors and the pair `(r₁, r₂)` are multiplied pairwise, level
/// by level, and the last level is opened as the answer. For τ = 10 that is `d²`, then `d³, d⁴`,
/// then one level: 6 values opened per candidate, where multiplying the 11 factors themselves
/// took 12.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Schedule {
    tau: u32,
    powers: u32,
}

impl Schedule {
    /// The schedule with the fewest rounds for `tau`, and among those the fewest values opened.
    fn for_tau(tau: u32) -> Schedule {
        (0..=6)
            .map(|powers| Schedule { tau, powers })
            .min_by_key(|s| {
                let levels = s.opened_levels();
                let opened: usize = levels.iter().flatten().sum();
                (levels.len(), opened)
            })
            .expect("seven schedules")
    }

    /// `g`: the highest power of `d` computed, and the factors per group.
    fn degree(self) -> usize {
        1 << self.powers
    }

    /// The group factors: `⌈(τ + 1) / g⌉`.
    fn groups(self) -> usize {
        (self.tau as usize + 1).div_ceil(self.degree())
    }

    /// Coefficients (constant first) of each group's `Π_{j in group} (x − j)`.
    fn group_polynomials(self) -> Vec<Vec<Fp>> {
        let g = self.degree();
        (0..self.groups())
            .map(|k| {
                let end = ((k + 1) * g).min(self.tau as usize + 1);
                (k * g..end).fold(vec![Fp::ONE], |poly, j| {
                    // poly · (x − j)
                    let mut next = vec![Fp::ZERO; poly.len() + 1];
                    for (e, &c) in poly.iter().enumerate() {
                        next[e + 1] += c;
                        next[e] -= c * Fp::from(j as u32);
                    }
                    next
                })
            })
            .collect()
    }

    /// The slots the product levels start with: the group factors, then `(r₁, r₂)`.
    fn first_kinds(self) -> Kinds {
        let mut kinds = vec![1; self.groups()];
        kinds.push(2);
        kinds
    }

    /// The widths of the values opened per candidate in each round after round 0: the power
    /// rounds, then the product levels.
    fn opened_levels(self) -> Vec<Kinds> {
        let mut levels: Vec<Kinds> = (0..self.powers).map(|r| vec![1; 1 << r]).collect();
        let mut kinds = self.first_kinds();
        while kinds.len() > 2 {
            let (mut products, carried) = level(&kinds);
            levels.push(products.clone());
            products.extend(carried);
            kinds = products;
        }
        levels
    }
}

/// The products of one level (adjacent slots, pairwise) and the slot carried over unopened
/// when their number is odd.
fn level(kinds: &[usize]) -> (Kinds, Option<usize>) {
    let products = kinds
        .chunks_exact(2)
        .map(|pair| pair[0].max(pair[1]))
        .collect();
    (
        products,
        (kinds.len() % 2 == 1).then(|| kinds[kinds.len() - 1]),
    )
}

/// How many rounds follow the opening of the distances for `tau`: the querier relays this
/// many times, and the last relay's answer is the node's [`NodeAnswer`].
pub fn rounds(tau: u32) -> usize {
    1 + Schedule::for_tau(tau).opened_levels().len()
}

/// The most values a node opens per candidate in one round for `tau` (round 0 opens one):
/// what bounds the size of a relayed round.
pub fn widest_opening(tau: u32) -> usize {
    Schedule::for_tau(tau)
        .opened_levels()
        .iter()
        .map(|widths| widths.iter().sum())
        .fold(1, usize::max)
}

/// The values a node opens per candidate in a whole evaluation for `tau`, the answer's two
/// included.
pub fn opened_per_candidate(tau: u32) -> usize {
    1 + Schedule::for_tau(tau)
        .opened_levels()
        .iter()
        .flatten()
        .sum::<usize>()
        + 2
}

/// The pairwise products of one candidate's slots (`values` laid out by `kinds`), degree 2t.
fn multiply(kinds: &[usize], values: &[Fp], out: &mut Vec<Fp>) {
    let mut at = 0;
    for pair in kinds.chunks_exact(2) {
        let (a, b) = (
            &values[at..at + pair[0]],
            &values[at + pair[0]..at + pair[0] + pair[1]],
        );
        match (a, b) {
            ([x], [y]) => out.push(*x * *y),
            ([x], [y, z]) | ([y, z], [x]) => out.extend([*x * *y, *x * *z]),
            _ => unreachable!("the pair (r₁, r₂) is one slot of a level"),
        }
        at += pair[0] + pair[1];
    }
}

fn labelled(context: &[u8; 32], label: &[u8], round: u8) -> Vec<u8> {
    let mut out = b"obscura/stage-2/".to_vec();
    out.extend_from_slice(label);
    out.push(round);
    out.extend_from_slice(context);
    out
}

/// This node's share of the distance between the query and one stored hash, degree 2t:
/// `Σ_j h_j + q_j − 2·q_j·h_j`.
struct Distances {
    q_sum: Fp,
    q2: [u64; HASH_BITS],
}

impl Distances {
    fn new(query: &HashShare) -> Distances {
        let q = &query.bits;
        Distances {
            q_sum: q.iter().copied().sum(),
            q2: std::array::from_fn(|j| 2 * u64::from(q[j].value())),
        }
    }

    fn of(&self, h: &HashShare) -> Fp {
        // Σ_j h_j − Σ_j 2·q_j·h_j, with products folded below 2^33 and summed in u64.
        let mut h_sum: u64 = 0;
        let mut cross: u64 = 0;
        for (hj, &q2j) in h.bits.iter().zip(&self.q2) {
            let hj = u64::from(hj.value());
            h_sum += hj;
            let p = q2j * hj; // < 2^63
            cross += (p & u64::from(P)) + (p >> 31);
        }
        Fp::new(h_sum) - Fp::new(cross) + self.q_sum
    }
}

/// What a [`NodeSession::step`] gives.
#[derive(Clone, Debug)]
pub enum Step {
    /// The next round's openings, for the querier to relay to every node.
    Open(Opened),
    /// The node's answer: the protocol is over.
    Answer(NodeAnswer),
}

/// One node's state of one query between rounds. It holds shares only; dropping it ends the
/// query at this node.
pub struct NodeSession {
    node: u8,
    n: usize,
    t: usize,
    schedule: Schedule,
    context: [u8; 32],
    count: usize,
    /// The round whose openings this node gave and now waits for.
    round: u8,
    /// Candidates this node and every node whose openings it used hold.
    alive: Vec<bool>,
    /// `powers[e − 1][c]`: degree-t share of `d^e` for candidate `c`, from round 1 on (`d`
    /// itself first).
    powers: Vec<Vec<Fp>>,
    /// Widths of the values opened this round, per candidate.
    opened: Kinds,
    /// Width of the slot carried over unopened, per candidate.
    carried_kind: Option<usize>,
    /// `count × carried width` degree-t shares.
    carried: Vec<Fp>,
    /// `count × opened width` shares of the masks `ρ` of this round's openings.
    rho: Vec<Fp>,
}

impl std::fmt::Debug for NodeSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeSession")
            .field("node", &self.node)
            .field("tau", &self.schedule.tau)
            .field("count", &self.count)
            .field("round", &self.round)
            .finish_non_exhaustive()
    }
}

impl NodeSession {
    /// Start the query of `request`: `stored[m]` is this node's hash share of
    /// `request.candidates[m]`, or `None` if it holds no such image. Returns the session and
    /// round 0's openings, the masked distances `d − ρ`.
    ///
    /// The caller must start each `request.context` at most once (the masks must never
    /// repeat): the node server derives it from a query id it admits once.
    ///
    /// # Errors
    /// [`Error::MalformedRequest`] when the request is for another node, `stored` does not
    /// match the candidate list or τ is above [`MAX_TAU`].
    pub fn start(
        keys: &ZeroSharingKeys,
        request: &NodeRequest,
        stored: &[Option<&HashShare>],
    ) -> Result<(NodeSession, Opened), Error> {
        if request.node != keys.node() || request.query.node != keys.node() {
            return Err(Error::MalformedRequest("request is for another node"));
        }
        if stored.len() != request.candidates.len() {
            return Err(Error::MalformedRequest(
                "stored shares do not match the candidate list",
            ));
        }
        if request.max_distance > MAX_TAU {
            return Err(Error::MalformedRequest("τ is above 64"));
        }
        let mut session = NodeSession {
            node: keys.node(),
            n: keys.n(),
            t: keys.t(),
            schedule: Schedule::for_tau(request.max_distance),
            context: request.context,
            count: stored.len(),
            round: 0,
            alive: stored.iter().map(Option::is_some).collect(),
            powers: Vec::new(),
            opened: vec![1],
            carried_kind: None,
            carried: Vec::new(),
            rho: Vec::with_capacity(stored.len()),
        };
        let distances = Distances::new(&request.query);
        let values: Vec<Option<Fp>> = stored.iter().map(|h| h.map(|h| distances.of(h))).collect();
        let opened = session.open(keys, |c, out| {
            if let Some(v) = values[c] {
                out.push(v);
            }
        });
        Ok((session, opened))
    }

    /// The round this node waits for the openings of.
    pub fn round(&self) -> u8 {
        self.round
    }

    /// Open this round's values: for each candidate, `fill` pushes the degree-2t products (or
    /// nothing for a dead candidate); each goes out as `v − ρ + Z` with fresh `ρ` of degree t and
    /// `Z` a sharing of zero of degree 2t. Masks are drawn for every position, dead or not, so
    /// they stay aligned across nodes.
    fn open(
        &mut self,
        keys: &ZeroSharingKeys,
        mut fill: impl FnMut(usize, &mut Vec<Fp>),
    ) -> Opened {
        let width: usize = self.opened.iter().sum();
        self.rho.clear();
        self.rho.resize(self.count * width, Fp::ZERO);
        keys.random_stream(&labelled(&self.context, b"rho", self.round))
            .fill(&mut self.rho);
        let mut zero = vec![Fp::ZERO; self.count * width];
        keys.stream(&labelled(&self.context, b"zero", self.round))
            .fill(&mut zero);
        let mut values = Vec::with_capacity(self.count * width);
        let mut products = Vec::with_capacity(width);
        for c in 0..self.count {
            products.clear();
            if self.alive[c] {
                fill(c, &mut products);
            }
            let alive = products.len() == width;
            let at = c * width..(c + 1) * width;
            for (k, (&r, &z)) in self.rho[at.clone()].iter().zip(&zero[at]).enumerate() {
                values.push(products.get(k).filter(|_| alive).map(|&v| v - r + z));
            }
            self.alive[c] &= alive;
        }
        Opened {
            node: self.node,
            round: self.round,
            values,
        }
    }

    /// Take every node's openings of this round (at least `2t + 1`, this node's among them or
    /// not) and give the next round's openings, or the answer after the last round. The first
    /// `2t + 1` by node fix each value; every further opening must agree with them.
    ///
    /// # Errors
    /// [`Error::MalformedAnswer`] for openings of another round or length, a node that is not
    /// one or is there twice; [`Error::NotEnoughAnswers`] for fewer than `2t + 1`;
    /// [`Error::InconsistentOpenings`] when the openings lie on no polynomial of degree 2t.
    pub fn step(&mut self, keys: &ZeroSharingKeys, openings: &[Opened]) -> Result<Step, Error> {
        let width: usize = self.opened.iter().sum();
        let (chosen, extra) = choose(self.n, self.t, self.count * width, self.round, openings)?;
        let xs: Vec<u8> = chosen.iter().map(|o| o.node).collect();
        let lambda = lagrange_at_zero(&xs)?;
        // Openings beyond 2t + 1 must lie on the polynomial the first ones fix: with all n
        // nodes' openings relayed, one node that shifts its own is caught here.
        for e in &extra {
            let mu = lagrange_at(&xs, e.node)?;
            for (k, v) in e.values.iter().enumerate() {
                let on = chosen
                    .iter()
                    .zip(&mu)
                    .try_fold(Fp::ZERO, |acc, (o, &m)| o.values[k].map(|b| acc + m * b));
                if let (Some(v), Some(on)) = (v, on) {
                    if *v != on {
                        return Err(Error::InconsistentOpenings { round: self.round });
                    }
                }
            }
        }
        // Each opened value plus its mask: the products, now of degree t.
        let mut reduced = Vec::with_capacity(self.count * width);
        for (k, &rho) in self.rho.iter().enumerate() {
            let mut z = Fp::ZERO;
            for (o, &l) in chosen.iter().zip(&lambda) {
                match o.values[k] {
                    Some(v) => z += l * v,
                    None => self.alive[k / width] = false,
                }
            }
            reduced.push(z + rho);
        }
        let round = u32::from(self.round);
        self.round += 1;
        // Round 0 gave d, each power round the powers up to the next power of two.
        if round <= self.schedule.powers {
            // `reduced` holds each candidate's `width` new powers in a row.
            for e in 0..width {
                let column = reduced.iter().skip(e).step_by(width).copied().collect();
                self.powers.push(column);
            }
            if round < self.schedule.powers {
                return Ok(Step::Open(self.open_powers(keys)));
            }
        }
        // The slots of the next level, per candidate.
        let (kinds, slots) = if round == self.schedule.powers {
            self.first_slots(keys)
        } else {
            let mut kinds = self.opened.clone();
            kinds.extend(self.carried_kind);
            let cw = self.carried_kind.unwrap_or(0);
            let mut slots = Vec::with_capacity(self.count * (width + cw));
            for c in 0..self.count {
                slots.extend_from_slice(&reduced[c * width..(c + 1) * width]);
                slots.extend_from_slice(&self.carried[c * cw..(c + 1) * cw]);
            }
            (kinds, slots)
        };
        let per: usize = kinds.iter().sum();
        if kinds.len() == 2 {
            return Ok(Step::Answer(self.answer(keys, &slots, per)));
        }
        let (products, carried_kind) = level(&kinds);
        let cw = carried_kind.unwrap_or(0);
        self.carried = slots
            .chunks_exact(per)
            .flat_map(|s| s[per - cw..].iter().copied())
            .collect();
        self.opened = products;
        self.carried_kind = carried_kind;
        let opened = self.open(keys, |c, out| {
            multiply(&kinds, &slots[c * per..(c + 1) * per], out);
        });
        Ok(Step::Open(opened))
    }

    /// Open the next power round: `d^h · d^a` for `a = 1..=h`, `h` the highest power held.
    fn open_powers(&mut self, keys: &ZeroSharingKeys) -> Opened {
        let h = self.powers.len();
        self.opened = vec![1; h];
        self.carried_kind = None;
        self.carried.clear();
        let powers = std::mem::take(&mut self.powers);
        let opened = self.open(keys, |c, out| {
            let top = powers[h - 1][c];
            out.extend(powers.iter().map(|p| top * p[c]));
        });
        self.powers = powers;
        opened
    }

    /// The slots the product levels start with, per candidate: each group factor evaluated on
    /// this node's shares of the powers (a linear combination, so still degree t), then the
    /// pair `(r₁, r₂)`.
    fn first_slots(&self, keys: &ZeroSharingKeys) -> (Kinds, Vec<Fp>) {
        let polynomials = self.schedule.group_polynomials();
        let mut pairs = vec![Fp::ZERO; 2 * self.count];
        keys.random_stream(&labelled(&self.context, b"pair", 0))
            .fill(&mut pairs);
        let kinds = self.schedule.first_kinds();
        let mut slots = Vec::with_capacity(self.count * kinds.iter().sum::<usize>());
        for (c, pair) in pairs.chunks_exact(2).enumerate() {
            slots.extend(polynomials.iter().map(|poly| {
                poly[1..]
                    .iter()
                    .zip(&self.powers)
                    .fold(poly[0], |acc, (&coef, power)| acc + coef * power[c])
            }));
            slots.extend_from_slice(pair);
        }
        (kinds, slots)
    }

    /// The last level: `X · (r₁, r₂)`, opened as `h = d + X·r₁` and `g = X·r₂` under fresh zero
    /// masks of degree 2t.
    fn answer(&self, keys: &ZeroSharingKeys, slots: &[Fp], per: usize) -> NodeAnswer {
        let mut zero = vec![Fp::ZERO; 2 * self.count];
        keys.stream(&labelled(&self.context, b"answer", self.round))
            .fill(&mut zero);
        let values = slots
            .chunks_exact(per)
            .zip(zero.chunks_exact(2))
            .enumerate()
            .map(|(c, (s, z))| {
                let [z1, z2] = [z[0], z[1]];
                let [x, r1, r2] = s else {
                    unreachable!("the last level is a value and the pair");
                };
                self.alive[c].then(|| [self.powers[0][c] + *x * *r1 + z1, *x * *r2 + z2])
            })
            .collect();
        NodeAnswer {
            node: self.node,
            values,
        }
    }
}

/// The first `2t + 1` openings by node and the rest, after checking that every one is of this
/// `round`, of `len` values and from a distinct node of `1..=n`.
#[allow(clippy::type_complexity)]
fn choose(
    n: usize,
    t: usize,
    len: usize,
    round: u8,
    openings: &[Opened],
) -> Result<(Vec<&Opened>, Vec<&Opened>), Error> {
    let mut seen = vec![false; n + 1];
    for o in openings {
        let bad = |reason| Error::MalformedAnswer {
            node: o.node,
            reason,
        };
        if o.node == 0 || o.node as usize > n {
            return Err(bad("not a node of this cluster"));
        }
        if std::mem::replace(&mut seen[o.node as usize], true) {
            return Err(bad("answered twice"));
        }
        if o.round != round {
            return Err(bad("an opening of another round"));
        }
        if o.values.len() != len {
            return Err(bad("wrong number of values"));
        }
    }
    let need = 2 * t + 1;
    if openings.len() < need {
        return Err(Error::NotEnoughAnswers {
            need,
            got: openings.len(),
            n,
            t,
            missing: (1..=n as u8).filter(|&x| !seen[x as usize]).collect(),
        });
    }
    let mut chosen: Vec<&Opened> = openings.iter().collect();
    chosen.sort_by_key(|o| o.node);
    let extra = chosen.split_off(need);
    Ok((chosen, extra))
}

/// What the querier sees of one query run by [`run_all`]: every round's openings, then the
/// answers.
#[derive(Clone, Debug)]
pub struct Transcript {
    /// `rounds[r]` = every node's openings of round `r`.
    pub rounds: Vec<Vec<Opened>>,
    /// Every node's answer.
    pub answers: Vec<NodeAnswer>,
}

/// Every node of `requests` in this process, each with its `keys` (by node, node 1 first) and
/// its `stored` shares of the candidates (by node): for tests and benchmarks.
///
/// # Errors
/// Whatever a node's [`NodeSession::start`] or [`NodeSession::step`] gives.
pub fn run_all(
    keys: &[ZeroSharingKeys],
    requests: &[NodeRequest],
    stored: &[Vec<Option<&HashShare>>],
) -> Result<Transcript, Error> {
    let mut sessions = Vec::with_capacity(requests.len());
    let mut openings = Vec::with_capacity(requests.len());
    for r in requests {
        let i = usize::from(r.node)
            .checked_sub(1)
            .ok_or(Error::MalformedRequest("node 0"))?;
        let (keys, stored) = keys
            .get(i)
            .zip(stored.get(i))
            .ok_or(Error::MalformedRequest("no such node"))?;
        let (s, o) = NodeSession::start(keys, r, stored)?;
        sessions.push((s, keys));
        openings.push(o);
    }
    let mut rounds = Vec::new();
    loop {
        let mut next = Vec::with_capacity(sessions.len());
        let mut answers = Vec::with_capacity(sessions.len());
        for (s, keys) in &mut sessions {
            match s.step(keys, &openings)? {
                Step::Open(o) => next.push(o),
                Step::Answer(a) => answers.push(a),
            }
        }
        rounds.push(std::mem::replace(&mut openings, next));
        if !answers.is_empty() {
            return Ok(Transcript { rounds, answers });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The group factors multiply to `Π_{j=0..τ} (x − j)` at every point: zero exactly at
    /// `0..=τ`, and the product of the factors elsewhere.
    #[test]
    fn group_factors_multiply_to_the_whole_product() {
        for tau in 0..=MAX_TAU {
            let s = Schedule::for_tau(tau);
            let polys = s.group_polynomials();
            assert_eq!(polys.len(), s.groups());
            for x in 0..=70u32 {
                let x = Fp::from(x);
                let grouped = polys.iter().fold(Fp::ONE, |acc, p| {
                    acc * p.iter().rev().fold(Fp::ZERO, |v, &c| v * x + c)
                });
                let whole = (0..=tau).fold(Fp::ONE, |acc, j| acc * (x - Fp::from(j)));
                assert_eq!(grouped, whole, "τ = {tau}, x = {}", x.value());
            }
        }
    }

    /// What the schedule costs: at the default τ = 10, four relays as before the powers, and 9
    /// values opened per candidate instead of 15; never more rounds or values than multiplying
    /// the factors themselves.
    #[test]
    fn powers_cut_the_values_opened_without_adding_rounds() {
        assert_eq!((rounds(10), opened_per_candidate(10)), (4, 9));
        for tau in 0..=MAX_TAU {
            let plain = Schedule { tau, powers: 0 }.opened_levels();
            let chosen = Schedule::for_tau(tau).opened_levels();
            assert!(chosen.len() <= plain.len(), "τ = {tau}");
            let sum = |l: &[Kinds]| l.iter().flatten().sum::<usize>();
            assert!(sum(&chosen) <= sum(&plain), "τ = {tau}");
        }
        assert_eq!(
            Schedule { tau: 10, powers: 0 }
                .opened_levels()
                .iter()
                .flatten()
                .sum::<usize>()
                + 3,
            15
        );
    }
}
