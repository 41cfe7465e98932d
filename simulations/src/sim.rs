//! The discrete-event machinery: an event queue ordered by (virtual time, sequence), a seeded
//! RNG, and a network of links with latency, jitter, loss, partitions and one-way cuts.
//! Nothing here knows about sync or alerting; `run.rs` drives the cores with it.

use std::collections::{BTreeMap, BTreeSet};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

use crate::scenario::{LinkSpec, LossModel, Scenario};

/// Virtual milliseconds since the start of the run.
pub type Ms = u64;

/// A time-ordered queue; equal times pop in insertion order, so runs are deterministic.
pub struct Queue<E> {
    items: BTreeMap<(Ms, u64), E>,
    seq: u64,
}

impl<E> Default for Queue<E> {
    fn default() -> Self {
        Queue {
            items: BTreeMap::new(),
            seq: 0,
        }
    }
}

impl<E> Queue<E> {
    pub fn push(&mut self, at: Ms, e: E) {
        self.items.insert((at, self.seq), e);
        self.seq += 1;
    }

    pub fn pop(&mut self) -> Option<(Ms, E)> {
        self.items.pop_first().map(|((at, _), e)| (at, e))
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// The RNG of a run: everything random comes from here, seeded explicitly.
pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// Who can reach whom, and how well.
pub struct Net {
    base: LinkSpec,
    per_node: BTreeMap<usize, LinkSpec>,
    /// Group of each node under a partition (`None`: no partition).
    groups: Option<Vec<usize>>,
    /// Directed cuts `(from, to)`.
    oneway: BTreeSet<(usize, usize)>,
    pub dropped_cut: u64,
    pub dropped_loss: u64,
    model: LossModel,
    /// Packets sent again under [`LossModel::Packet`].
    pub retransmitted: u64,
}

/// QUIC packet payload the packet loss model cuts messages into.
pub const PACKET_BYTES: usize = 1200;

/// quinn's default `max_ack_delay`, part of every probe timeout.
const MAX_ACK_DELAY_MS: Ms = 25;

/// Retransmissions of one packet before the model gives the message up (QUIC would have
/// closed the connection on its idle timeout long before: 2^10 probe timeouts).
const MAX_RETRANSMITS: u32 = 10;

impl Net {
    pub fn new(s: &Scenario) -> Net {
        Net {
            base: s.link,
            per_node: s.node_links.iter().map(|l| (l.node, l.spec)).collect(),
            groups: None,
            oneway: BTreeSet::new(),
            dropped_cut: 0,
            dropped_loss: 0,
            model: s.loss_model,
            retransmitted: 0,
        }
    }

    pub fn partition(&mut self, n: usize, groups: &[Vec<usize>]) {
        let mut of = vec![groups.len(); n];
        for (g, members) in groups.iter().enumerate() {
            for &m in members {
                if let Some(slot) = of.get_mut(m) {
                    *slot = g;
                }
            }
        }
        self.groups = Some(of);
    }

    pub fn cut_oneway(&mut self, from: &[usize], to: &[usize]) {
        for &f in from {
            for &t in to {
                self.oneway.insert((f, t));
            }
        }
    }

    pub fn heal(&mut self) {
        self.groups = None;
        self.oneway.clear();
    }

    pub fn is_split(&self) -> bool {
        self.groups.is_some() || !self.oneway.is_empty()
    }

    /// Whether a message from `a` reaches `b` (ignoring loss).
    pub fn allowed(&self, a: usize, b: usize) -> bool {
        if let Some(g) = &self.groups
            && g.get(a) != g.get(b)
        {
            return false;
        }
        !self.oneway.contains(&(a, b))
    }

    /// Both ways: what gossip needs to call a peer live.
    pub fn connected(&self, a: usize, b: usize) -> bool {
        self.allowed(a, b) && self.allowed(b, a)
    }

    /// The loss probability of messages from `a` to `b`.
    pub fn loss(&self, a: usize, b: usize) -> f64 {
        self.spec(a, b).loss
    }

    fn spec(&self, a: usize, b: usize) -> LinkSpec {
        let mut s = self.base;
        for n in [a, b] {
            if let Some(o) = self.per_node.get(&n) {
                s = s.worse(*o);
            }
        }
        s
    }

    /// The delivery delay of one message of `len` bytes and the bytes its retransmissions
    /// add, or `None` when it is lost.
    pub fn transit(
        &mut self,
        rng: &mut impl Rng,
        a: usize,
        b: usize,
        len: usize,
    ) -> Option<(Ms, u64)> {
        if !self.allowed(a, b) {
            self.dropped_cut += 1;
            return None;
        }
        let s = self.spec(a, b);
        let mut late: Ms = 0;
        let mut resent: u64 = 0;
        if s.loss > 0.0 {
            let loss = s.loss.min(1.0);
            match self.model {
                LossModel::Message => {
                    if rng.random_bool(loss) {
                        self.dropped_loss += 1;
                        return None;
                    }
                }
                LossModel::Packet => {
                    // Each packet is lost independently; QUIC resends it after a probe
                    // timeout (RTT + 4 x variation + max ack delay), doubling each time.
                    // The stream delivers the message when its last packet arrives.
                    let pto = 2 * s.latency_ms + 4 * s.jitter_ms + MAX_ACK_DELAY_MS;
                    for _ in 0..len.div_ceil(PACKET_BYTES).max(1) {
                        let mut wait: Ms = 0;
                        let mut tries = 0;
                        while rng.random_bool(loss) {
                            if tries == MAX_RETRANSMITS {
                                self.dropped_loss += 1;
                                return None;
                            }
                            wait += pto << tries;
                            tries += 1;
                        }
                        resent += u64::from(tries);
                        late = late.max(wait);
                    }
                    self.retransmitted += resent;
                }
            }
        }
        let jitter = if s.jitter_ms > 0 {
            rng.random_range(0..=s.jitter_ms)
        } else {
            0
        };
        Some((
            s.latency_ms + jitter + 1 + late,
            resent * PACKET_BYTES as u64,
        ))
    }
}

/// A hash of every delivered message and its time: equal seeds must give equal traces.
#[derive(Default)]
pub struct Trace {
    hasher: Sha256,
    pub delivered: u64,
}

impl Trace {
    pub fn record(&mut self, at: Ms, from: usize, to: usize, bytes: &[u8]) {
        self.hasher.update(at.to_le_bytes());
        self.hasher.update((from as u64).to_le_bytes());
        self.hasher.update((to as u64).to_le_bytes());
        self.hasher.update((bytes.len() as u64).to_le_bytes());
        self.hasher.update(bytes);
        self.delivered += 1;
    }

    pub fn finish(self) -> String {
        hex::encode(&self.hasher.finalize()[..16])
    }
}

/// Connected components of `live` nodes under the symmetric relation `linked`.
pub fn components(
    n: usize,
    live: impl Fn(usize) -> bool,
    linked: impl Fn(usize, usize) -> bool,
) -> Vec<Vec<usize>> {
    let mut comp = vec![usize::MAX; n];
    let mut out = Vec::new();
    for start in 0..n {
        if comp[start] != usize::MAX || !live(start) {
            continue;
        }
        let id = out.len();
        let mut members = vec![start];
        comp[start] = id;
        let mut i = 0;
        while i < members.len() {
            let a = members[i];
            for (b, slot) in comp.iter_mut().enumerate() {
                if *slot == usize::MAX && live(b) && linked(a, b) {
                    *slot = id;
                    members.push(b);
                }
            }
            i += 1;
        }
        out.push(members);
    }
    out
}

/// The `q` quantile (0..=1) of sorted values.
pub fn quantile(sorted: &[Ms], q: f64) -> Option<Ms> {
    if sorted.is_empty() {
        return None;
    }
    let idx = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted.get(idx.min(sorted.len() - 1)).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep;

    #[test]
    fn equal_times_pop_in_insertion_order() {
        let mut q = Queue::default();
        q.push(5, "b");
        q.push(1, "a");
        q.push(5, "c");
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(order, vec![(1, "a"), (5, "b"), (5, "c")]);
        assert!(q.is_empty());
    }

    #[test]
    fn partitions_and_one_way_cuts() {
        let mut net = Net::new(&sweep::scenario(4, false));
        net.partition(4, &[vec![0, 1]]);
        assert!(net.connected(0, 1) && net.connected(2, 3));
        assert!(!net.allowed(0, 2) && !net.allowed(3, 1));
        net.heal();
        net.cut_oneway(&[0], &[3]);
        assert!(!net.allowed(0, 3) && net.allowed(3, 0) && !net.connected(0, 3));
        let comps = components(4, |_| true, |a, b| net.connected(a, b));
        assert_eq!(comps.len(), 1, "0 and 3 still share neighbours");
    }

    #[test]
    fn packet_loss_delays_by_probe_timeouts_where_message_loss_drops() {
        let mut s = sweep::scenario(2, false);
        s.link = LinkSpec {
            latency_ms: 2,
            jitter_ms: 0,
            loss: 0.3,
        };
        let mut rng = super::rng(3);
        let mut net = Net::new(&s);
        let dropped = (0..1000)
            .filter(|_| net.transit(&mut rng, 0, 1, 100).is_none())
            .count();
        assert!((200..400).contains(&dropped), "{dropped} of 1000 dropped");
        s.loss_model = LossModel::Packet;
        let mut net = Net::new(&s);
        let pto = 2 * 2 + MAX_ACK_DELAY_MS;
        let mut late = 0;
        for _ in 0..1000 {
            let (delay, resent) = net.transit(&mut rng, 0, 1, 100).expect("resent, not lost");
            // On time, or late by a sum of doubling probe timeouts, with one packet per try.
            let extra = delay - 3;
            assert_eq!(extra == 0, resent == 0);
            if extra > 0 {
                late += 1;
                assert_eq!(extra, pto * ((1 << (resent / PACKET_BYTES as u64)) - 1));
            }
        }
        assert!((200..400).contains(&late), "{late} of 1000 late");
        // A message of 10 packets is late when any of them is lost.
        let late10 = (0..1000)
            .filter(|_| {
                net.transit(&mut rng, 0, 1, 10 * PACKET_BYTES)
                    .is_some_and(|(d, _)| d > 3)
            })
            .count();
        assert!(late10 > 900, "{late10} of 1000 ten-packet messages late");
    }

    #[test]
    fn quantiles() {
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&[1, 2, 3, 4, 100], 0.5), Some(3));
        assert_eq!(quantile(&[1, 2, 3, 4, 100], 0.99), Some(100));
    }
}
