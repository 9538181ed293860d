//! The lossy-link model: what a misbehaving network does to each datagram.
//!
//! One model, two drivers. [`crate::sim`] runs it on a virtual clock for tests and
//! examples; the `udpft-lossy` relay runs it between real sockets. Both ask
//! [`Direction::decide`] about every datagram in the order they see them, so the
//! same seed and the same traffic give the same decisions.
//!
//! What is reproducible: every decision but one depends only on the seed and on the
//! order of the datagrams in their direction (their kinds and lengths), never on the
//! time they arrive: random drop, duplicate, reorder, corrupt and jitter; burst loss
//! (the Gilbert state); scripted faults. The exception is the rate limit
//! ([`Impairments::rate`]): how long a datagram waits in its queue, and whether it finds
//! the queue full and is lost, depend on when datagrams arrive. On the simulator's
//! virtual clock that is reproducible too; through the relay it is not. A queue drop
//! draws nothing from the random streams, so it never shifts the other decisions.

mod fault;
mod loss;

pub use fault::{Fault, FaultAction, Faults, MAX_FAULTS, kind_word, way_word};
pub use loss::{DEFAULT_QUEUE, Gilbert, Rate, parse_rate};

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::wire::{Datagram, Kind, Seq};
use loss::Limiter;

/// What one direction of the link does. Probabilities are from 0 to 1 per datagram.
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
    /// Burst loss (Gilbert model), on top of the independent `drop`.
    pub burst: Option<Gilbert>,
    /// A rate limit with a bounded queue, before the latency.
    pub rate: Option<Rate>,
    /// Scripted faults of this direction, applied before any random decision.
    pub faults: Faults,
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
        if let Some(g) = self.burst {
            g.validate()?;
        }
        if let Some(r) = self.rate
            && (r.bits_per_sec == 0 || r.queue == 0)
        {
            return Err("a rate limit needs a rate and a queue of at least 1".into());
        }
        Ok(())
    }
}

/// Counters of one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Datagrams that entered the link.
    pub seen: u64,
    /// Datagrams lost, for any reason (the next three included).
    pub dropped: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub corrupted: u64,
    /// Copies delivered later than at once.
    pub delayed: u64,
    /// Lost in a burst (Gilbert model).
    pub burst_dropped: u64,
    /// Lost because the rate limiter's queue was full.
    pub queue_dropped: u64,
    /// Scripted faults applied.
    pub faults: u64,
    /// Copies delivered (a duplicated datagram counts twice).
    pub forwarded: u64,
}

impl LinkStats {
    /// Every counter with its name, in the order [`fmt::Display`] prints them.
    pub fn fields(&self) -> [(&'static str, u64); 10] {
        [
            ("seen", self.seen),
            ("dropped", self.dropped),
            ("duplicated", self.duplicated),
            ("reordered", self.reordered),
            ("corrupted", self.corrupted),
            ("delayed", self.delayed),
            ("burst_dropped", self.burst_dropped),
            ("queue_dropped", self.queue_dropped),
            ("faults", self.faults),
            ("forwarded", self.forwarded),
        ]
    }
}

impl fmt::Display for LinkStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} seen, {} dropped, {} duplicated, {} reordered, {} corrupted, {} delayed",
            self.seen, self.dropped, self.duplicated, self.reordered, self.corrupted, self.delayed
        )?;
        if self.burst_dropped + self.queue_dropped + self.faults > 0 {
            write!(
                f,
                " ({} lost in bursts, {} to a full queue; {} scripted faults)",
                self.burst_dropped, self.queue_dropped, self.faults
            )?;
        }
        Ok(())
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

    /// The bit positions flipped, counted from the first bit of the datagram (bit 0 is
    /// the lowest bit of byte 0).
    pub fn bits(&self) -> &[usize] {
        &self.bits[..self.count]
    }
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bits: Vec<String> = self.bits().iter().map(|b| b.to_string()).collect();
        let s = if self.count == 1 { "" } else { "s" };
        write!(f, "bit{s} {} flipped", bits.join(", "))
    }
}

/// One copy of a datagram to deliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// How long after it was sent it arrives.
    pub after: Duration,
    /// Bits to flip in this copy, if it is corrupted.
    pub corruption: Option<Corruption>,
    /// Whether it was held back to be overtaken.
    pub reordered: bool,
}

impl fmt::Display for Delivery {
    /// What the link did to this copy: "forwarded", or e.g. "delayed 1.20 ms, bit 197
    /// flipped".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.reordered {
            parts.push(format!("held back {}", ms(self.after)));
        } else if !self.after.is_zero() {
            parts.push(format!("delayed {}", ms(self.after)));
        }
        if let Some(c) = self.corruption {
            parts.push(c.to_string());
        }
        if parts.is_empty() {
            f.write_str("forwarded")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// Why a datagram was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// The independent random drop.
    Random,
    /// The Gilbert model's losing state.
    Burst,
    /// A scripted fault.
    Fault,
    /// The rate limiter's queue was full.
    QueueFull,
}

/// The fate of one datagram: none, one or two copies delivered, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fate {
    copies: [Option<Delivery>; 2],
    /// Its number in its direction, from 1.
    pub number: u64,
    /// Its packet type and sequence number, if it was classified (a fault script or
    /// [`Direction::classify`] asks for that) and parsed as a udpft datagram.
    pub packet: Option<(Kind, Seq)>,
    /// Why it was lost, if it was.
    pub loss: Option<Loss>,
    /// The scripted fault that decided its fate, if one did.
    pub fault: Option<Fault>,
}

impl Fate {
    /// The copies to deliver, in the order decided.
    pub fn deliveries(&self) -> impl Iterator<Item = Delivery> + '_ {
        self.copies.iter().flatten().copied()
    }

    /// Whether no copy is delivered.
    pub fn is_lost(&self) -> bool {
        self.copies[0].is_none() && self.copies[1].is_none()
    }
}

impl fmt::Display for Fate {
    /// What the link did to the datagram as a whole: "dropped", "dropped (burst)",
    /// "duplicated", "delayed 1.20 ms", "bit 197 flipped", "forwarded"; a scripted fault
    /// names itself ("dropped (fault to-client:data:1:drop)").
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.loss {
            Some(Loss::Random) | Some(Loss::Fault) => "dropped".to_string(),
            Some(Loss::Burst) => "dropped (burst)".to_string(),
            Some(Loss::QueueFull) => "dropped (queue full)".to_string(),
            None => {
                let copies: Vec<Delivery> = self.deliveries().collect();
                if copies.len() == 2 {
                    let a = copies[0].to_string();
                    let b = copies[1].to_string();
                    if a == "forwarded" && b == "forwarded" {
                        "duplicated".to_string()
                    } else if a == b {
                        format!("duplicated, both {a}")
                    } else {
                        format!("duplicated, {a} and {b}")
                    }
                } else {
                    copies.first().map_or(String::new(), |c| c.to_string())
                }
            }
        };
        f.write_str(&what)?;
        if let Some(fault) = self.fault {
            write!(f, " (fault {fault})")?;
        }
        Ok(())
    }
}

/// Milliseconds as the trace writes them: `1.20 ms`, `12.5 ms`.
pub fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

/// One direction of the link: its impairments, its own seeded random streams, its
/// counters.
#[derive(Debug)]
pub struct Direction {
    imp: Impairments,
    rng: StdRng,
    /// The Gilbert model's own stream, so turning bursts on shifts no other decision.
    burst_rng: StdRng,
    /// Which bit a scripted corruption flips.
    fault_rng: StdRng,
    in_burst: bool,
    classify: bool,
    /// Datagrams seen of each packet type (indexed by type byte - 1).
    seen_kind: [u64; 8],
    limiter: Limiter,
    stats: LinkStats,
}

impl Direction {
    /// A direction whose decisions are fixed by `seed`.
    pub fn new(imp: Impairments, seed: u64) -> Self {
        Direction {
            imp,
            rng: StdRng::seed_from_u64(seed),
            burst_rng: StdRng::seed_from_u64(seed ^ 0xb025_7b02_57b0_257b),
            fault_rng: StdRng::seed_from_u64(seed ^ 0xfa17_fa17_fa17_fa17),
            in_burst: false,
            classify: !imp.faults.is_empty(),
            seen_kind: [0; 8],
            limiter: Limiter::default(),
            stats: LinkStats::default(),
        }
    }

    /// Parse every datagram to fill [`Fate::packet`] even without a fault script (the
    /// drivers turn it on when they record what the link did). It changes no decision.
    pub fn classify(&mut self, on: bool) {
        self.classify = on || !self.imp.faults.is_empty();
    }

    /// Decides what happens to the next datagram, arriving at `now`. Only the rate
    /// limit looks at `now` (see the module's notes on what is reproducible).
    pub fn decide(&mut self, now: Instant, datagram: &[u8]) -> Fate {
        let len = datagram.len();
        self.stats.seen += 1;
        let mut fate = Fate {
            number: self.stats.seen,
            ..Fate::default()
        };
        if self.classify
            && let Ok(d) = Datagram::parse(datagram)
        {
            let kind = d.kind();
            fate.packet = Some((kind, d.seq));
            self.seen_kind[kind as usize - 1] += 1;
        }
        let kind = fate.packet.map(|(k, _)| k);
        let nth_of_kind = kind.map_or(0, |k| self.seen_kind[k as usize - 1]);
        let imp = self.imp;

        // The random decisions are drawn for every datagram, whatever then decides its
        // fate, so a fault or a burst changes the fate of its datagram and of no other.
        let random = self.random(len);
        let burst = match imp.burst {
            Some(g) => {
                let flip = if self.in_burst { g.r } else { g.p };
                if self.burst_rng.random_bool(flip) {
                    self.in_burst = !self.in_burst;
                }
                self.in_burst
            }
            None => false,
        };
        let fault = imp.faults.matching(kind, nth_of_kind, fate.number);
        let copies: [Option<Delivery>; 2] = if let Some(fault) = fault {
            self.stats.faults += 1;
            fate.fault = Some(fault);
            let plain = Delivery {
                after: imp.delay,
                corruption: None,
                reordered: false,
            };
            match fault.action {
                FaultAction::Drop => {
                    fate.loss = Some(Loss::Fault);
                    [None, None]
                }
                FaultAction::Duplicate => [Some(plain), Some(plain)],
                FaultAction::Corrupt => {
                    let bit = if len > 0 {
                        self.fault_rng.random_range(0..len * 8)
                    } else {
                        0
                    };
                    let corruption = (len > 0).then_some(Corruption {
                        bits: [bit, 0, 0],
                        count: 1,
                    });
                    [
                        Some(Delivery {
                            corruption,
                            ..plain
                        }),
                        None,
                    ]
                }
                FaultAction::Delay(d) => [
                    Some(Delivery {
                        after: imp.delay + d,
                        ..plain
                    }),
                    None,
                ],
            }
        } else if burst {
            self.stats.burst_dropped += 1;
            fate.loss = Some(Loss::Burst);
            [None, None]
        } else {
            if random.is_none() {
                fate.loss = Some(Loss::Random);
            }
            random.unwrap_or_default()
        };

        for (slot, copy) in fate.copies.iter_mut().zip(copies) {
            let Some(mut copy) = copy else { continue };
            if let Some(rate) = imp.rate {
                match self.limiter.admit(rate, now, len) {
                    Some(wait) => copy.after += wait,
                    None => continue,
                }
            }
            *slot = Some(copy);
        }
        if fate.loss.is_none() && fate.is_lost() {
            self.stats.queue_dropped += 1;
            fate.loss = Some(Loss::QueueFull);
        }
        let delivered: Vec<Delivery> = fate.deliveries().collect();
        if fate.loss.is_some() {
            self.stats.dropped += 1;
        }
        if copies.iter().flatten().count() == 2 {
            self.stats.duplicated += 1;
        }
        for c in &delivered {
            self.stats.forwarded += 1;
            self.stats.reordered += c.reordered as u64;
            self.stats.corrupted += c.corruption.is_some() as u64;
            self.stats.delayed += !c.after.is_zero() as u64;
        }
        fate
    }

    /// The independent random decisions, drawn in the same order for every datagram as
    /// before bursts, faults and rates existed: `None` if dropped.
    fn random(&mut self, len: usize) -> Option<[Option<Delivery>; 2]> {
        let imp = self.imp;
        if self.rng.random_bool(imp.drop) {
            return None;
        }
        let copies = if self.rng.random_bool(imp.duplicate) {
            2
        } else {
            1
        };
        let mut out = [None, None];
        for slot in out.iter_mut().take(copies) {
            let mut after = imp.delay;
            if !imp.jitter.is_zero() {
                after += imp.jitter.mul_f64(self.rng.random::<f64>());
            }
            let reordered = self.rng.random_bool(imp.reorder);
            if reordered {
                after += imp.reorder_by;
            }
            let corruption = if len > 0 && self.rng.random_bool(imp.corrupt) {
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
            *slot = Some(Delivery {
                after,
                corruption,
                reordered,
            });
        }
        Some(out)
    }

    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// The impairments this direction was built with.
    pub fn impairments(&self) -> &Impairments {
        &self.imp
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

    /// Adds a scripted fault to the direction it names.
    pub fn fault(&mut self, fault: Fault) -> Result<(), String> {
        match fault.way {
            Way::ClientToServer => self.to_server.faults.push(fault),
            Way::ServerToClient => self.to_client.faults.push(fault),
        }
    }

    /// The same settings with these faults added, each to the direction it names.
    pub fn with_faults(mut self, faults: &[Fault]) -> Result<Self, String> {
        for f in faults {
            self.fault(*f)?;
        }
        Ok(self)
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
        let now = Instant::now();
        for _ in 0..10_000 {
            assert_eq!(a.decide(now, &[0; 100]), b.decide(now, &[0; 100]));
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
        let fate = d.decide(Instant::now(), &[0; 10]);
        let c = fate.deliveries().next().unwrap().corruption.unwrap();
        let mut bytes = [0u8; 10];
        c.apply(&mut bytes);
        assert!(bytes.iter().any(|&b| b != 0));
    }

    #[test]
    fn bursts_have_the_gilbert_rate_and_length_and_shift_nothing_else() {
        let g = Gilbert { p: 0.1, r: 0.3 };
        let imp = Impairments {
            drop: 0.1,
            ..Impairments::none()
        };
        let mut plain = Direction::new(imp, 3);
        let mut bursty = Direction::new(
            Impairments {
                burst: Some(g),
                ..imp
            },
            3,
        );
        let now = Instant::now();
        let (mut runs, mut in_run) = (0, false);
        for _ in 0..20_000 {
            let a = plain.decide(now, &[0; 50]);
            let b = bursty.decide(now, &[0; 50]);
            let burst = b.loss == Some(Loss::Burst);
            if burst && !in_run {
                runs += 1;
            }
            in_run = burst;
            if !burst {
                assert_eq!(a, b, "a burst shifted another decision");
            }
        }
        let s = bursty.stats();
        // Loss rate p/(p+r) = 0.25, mean burst 1/r = 3.3 datagrams.
        assert!((4500..5500).contains(&s.burst_dropped), "{s:?}");
        let mean = s.burst_dropped as f64 / runs as f64;
        assert!((2.8..3.9).contains(&mean), "mean burst {mean}");
    }

    #[test]
    fn a_full_queue_loses_datagrams_and_the_rest_wait_their_turn() {
        let mut d = Direction::new(
            Impairments {
                rate: Some(Rate {
                    bits_per_sec: 8_000,
                    queue: 2,
                }),
                delay: Duration::from_millis(5),
                ..Impairments::none()
            },
            1,
        );
        let now = Instant::now();
        let after = |f: Fate| f.deliveries().next().map(|c| c.after);
        // 100 bytes at 8000 bit/s: 100 ms each, then 5 ms of latency.
        assert_eq!(
            after(d.decide(now, &[0; 100])),
            Some(Duration::from_millis(105))
        );
        assert_eq!(
            after(d.decide(now, &[0; 100])),
            Some(Duration::from_millis(205))
        );
        let lost = d.decide(now, &[0; 100]);
        assert_eq!(lost.loss, Some(Loss::QueueFull));
        assert_eq!(lost.to_string(), "dropped (queue full)");
        let s = d.stats();
        assert_eq!(
            (s.seen, s.dropped, s.queue_dropped, s.forwarded),
            (3, 1, 1, 2)
        );
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
