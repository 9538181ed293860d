//! The lossy-link model: what a misbehaving network does to each datagram.
//!
//! One model, two drivers. [`crate::sim`] runs it on a virtual clock for tests and
//! examples; the `udpft-lossy` relay runs it between real sockets. Both ask
//! [`Direction::decide`] about every datagram in the order they see them, so the
//! same seed and the same traffic give the same decisions.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// What one direction of the link does, each a probability from 0 to 1 per datagram.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Impairments {
    /// Lose the datagram.
    pub drop: f64,
    /// Deliver it twice.
    pub duplicate: f64,
    /// Hold it back by [`Impairments::reorder_by`] extra, so later datagrams overtake it.
    pub reorder: f64,
    /// Flip 1 to 3 random bits in it (one flip half the time: the hardest to detect).
    pub corrupt: f64,
    /// One-way latency of every datagram.
    pub delay: Duration,
    /// Up to this much extra latency, uniformly at random.
    pub jitter: Duration,
    /// How long a reordered datagram is held back.
    pub reorder_by: Duration,
}

impl Impairments {
    /// A perfect link: nothing lost, nothing late.
    pub fn none() -> Self {
        Impairments::default()
    }

    /// Checks every probability is within 0 to 1.
    pub fn validate(&self) -> Result<(), String> {
        for (name, p) in [
            ("drop", self.drop),
            ("duplicate", self.duplicate),
            ("reorder", self.reorder),
            ("corrupt", self.corrupt),
        ] {
            if !(0.0..=1.0).contains(&p) || p.is_nan() {
                return Err(format!("{name} probability {p} is not between 0 and 1"));
            }
        }
        Ok(())
    }
}

/// Counters of one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub seen: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub corrupted: u64,
    pub delayed: u64,
}

impl fmt::Display for LinkStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} seen, {} dropped, {} duplicated, {} reordered, {} corrupted, {} delayed",
            self.seen, self.dropped, self.duplicated, self.reordered, self.corrupted, self.delayed
        )
    }
}

/// Up to three bit positions to flip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Corruption {
    bits: [usize; 3],
    count: usize,
}

impl Corruption {
    /// Flips the chosen bits in `datagram` (positions past its end are ignored).
    pub fn apply(&self, datagram: &mut [u8]) {
        for &bit in &self.bits[..self.count] {
            if let Some(b) = datagram.get_mut(bit / 8) {
                *b ^= 1 << (bit % 8);
            }
        }
    }
}

/// One copy of a datagram to deliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// How long after it was sent it arrives.
    pub after: Duration,
    /// Bits to flip in this copy, if it is corrupted.
    pub corruption: Option<Corruption>,
}

/// The fate of one datagram: none, one or two copies delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fate {
    copies: [Option<Delivery>; 2],
}

impl Fate {
    /// The copies to deliver, in the order decided.
    pub fn deliveries(&self) -> impl Iterator<Item = Delivery> + '_ {
        self.copies.iter().flatten().copied()
    }
}

/// One direction of the link: its impairments, its own seeded random stream, its counters.
#[derive(Debug)]
pub struct Direction {
    imp: Impairments,
    rng: StdRng,
    stats: LinkStats,
}

impl Direction {
    /// A direction whose decisions are fixed by `seed`.
    pub fn new(imp: Impairments, seed: u64) -> Self {
        Direction {
            imp,
            rng: StdRng::seed_from_u64(seed),
            stats: LinkStats::default(),
        }
    }

    /// Decides what happens to the next datagram, `len` bytes long.
    pub fn decide(&mut self, len: usize) -> Fate {
        self.stats.seen += 1;
        let imp = self.imp;
        if self.rng.random_bool(imp.drop) {
            self.stats.dropped += 1;
            return Fate::default();
        }
        let copies = if self.rng.random_bool(imp.duplicate) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        let mut fate = Fate::default();
        for slot in fate.copies.iter_mut().take(copies) {
            let mut after = imp.delay;
            if !imp.jitter.is_zero() {
                after += imp.jitter.mul_f64(self.rng.random::<f64>());
            }
            if self.rng.random_bool(imp.reorder) {
                self.stats.reordered += 1;
                after += imp.reorder_by;
            }
            if !after.is_zero() {
                self.stats.delayed += 1;
            }
            let corruption = if len > 0 && self.rng.random_bool(imp.corrupt) {
                self.stats.corrupted += 1;
                let count = if self.rng.random_bool(0.5) {
                    1
                } else {
                    self.rng.random_range(2..=3)
                };
                let mut bits = [0; 3];
                for b in bits.iter_mut().take(count) {
                    *b = self.rng.random_range(0..len * 8);
                }
                Some(Corruption { bits, count })
            } else {
                None
            };
            *slot = Some(Delivery { after, corruption });
        }
        fate
    }

    pub fn stats(&self) -> LinkStats {
        self.stats
    }
}

/// Which way a datagram travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Way {
    ClientToServer,
    ServerToClient,
}

/// Impairments of both directions: real links are asymmetric.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LinkConfig {
    pub to_server: Impairments,
    pub to_client: Impairments,
}

impl LinkConfig {
    /// The same impairments both ways.
    pub fn symmetric(imp: Impairments) -> Self {
        LinkConfig {
            to_server: imp,
            to_client: imp,
        }
    }
}

/// Both directions of a link, seeded from one number.
#[derive(Debug)]
pub struct Link {
    pub to_server: Direction,
    pub to_client: Direction,
}

impl Link {
    /// Each direction draws from its own stream derived from `seed`, so traffic one
    /// way does not shift the decisions made the other way.
    pub fn new(cfg: LinkConfig, seed: u64) -> Self {
        Link {
            to_server: Direction::new(cfg.to_server, seed ^ 0x5eed_c11e_47c0_5e4f),
            to_client: Direction::new(cfg.to_client, seed ^ 0x5eed_5e4f_e4c1_1e47),
        }
    }

    pub fn direction(&mut self, way: Way) -> &mut Direction {
        match way {
            Way::ClientToServer => &mut self.to_server,
            Way::ServerToClient => &mut self.to_client,
        }
    }
}

/// Datagrams waiting for their delivery time, as both drivers of the link model keep
/// them: earliest first, and in the order they were queued when due at the same time.
#[derive(Debug)]
pub struct DelayQueue<T> {
    heap: BinaryHeap<Reverse<Due<T>>>,
    order: u64,
}

#[derive(Debug)]
struct Due<T> {
    at: Instant,
    order: u64,
    item: T,
}

impl<T> PartialEq for Due<T> {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.order) == (o.at, o.order)
    }
}
impl<T> Eq for Due<T> {}
impl<T> PartialOrd for Due<T> {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl<T> Ord for Due<T> {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.order).cmp(&(o.at, o.order))
    }
}

impl<T> Default for DelayQueue<T> {
    fn default() -> Self {
        DelayQueue {
            heap: BinaryHeap::new(),
            order: 0,
        }
    }
}

impl<T> DelayQueue<T> {
    /// Queues `item` for delivery at `at`.
    pub fn push(&mut self, at: Instant, item: T) {
        self.order += 1;
        self.heap.push(Reverse(Due {
            at,
            order: self.order,
            item,
        }));
    }

    /// The earliest delivery time, if anything waits.
    pub fn next_due(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(d)| d.at)
    }

    /// The next item due at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<T> {
        if self.next_due()? <= now {
            self.heap.pop().map(|Reverse(d)| d.item)
        } else {
            None
        }
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_decisions_and_rates_roughly_right() {
        let imp = Impairments {
            drop: 0.2,
            duplicate: 0.1,
            reorder: 0.1,
            corrupt: 0.1,
            reorder_by: Duration::from_millis(1),
            ..Impairments::none()
        };
        let mut a = Direction::new(imp, 7);
        let mut b = Direction::new(imp, 7);
        for _ in 0..10_000 {
            assert_eq!(a.decide(100), b.decide(100));
        }
        let s = a.stats();
        assert_eq!(s.seen, 10_000);
        assert!((1700..2300).contains(&s.dropped), "{s}");
        assert!((600..1000).contains(&s.duplicated), "{s}");
        assert!(s.corrupted > 700, "{s}");
    }

    #[test]
    fn corruption_flips_bits() {
        let mut d = Direction::new(
            Impairments {
                corrupt: 1.0,
                ..Impairments::none()
            },
            1,
        );
        let fate = d.decide(10);
        let c = fate.deliveries().next().unwrap().corruption.unwrap();
        let mut bytes = [0u8; 10];
        c.apply(&mut bytes);
        assert!(bytes.iter().any(|&b| b != 0));
    }

    #[test]
    fn bad_probability_is_refused() {
        let imp = Impairments {
            drop: 1.5,
            ..Impairments::none()
        };
        assert!(imp.validate().unwrap_err().contains("drop probability 1.5"));
    }
}
