//! The send window: which packets are unacknowledged, which to send next, the one
//! retransmission timer, and how many may be in flight (PROTOCOL.md §4.5, §5).
//!
//! A [`SendWindow`] of capacity 1 is stop-and-wait, packet for packet: the one packet
//! is sent, its timer runs, it is resent only when the timer expires. With a larger
//! capacity *W* the rules are the same per packet, plus:
//!
//! - **At most *W* packets unacknowledged**: packet *n* is never sent before every
//!   packet up to *n* − *W* has been acknowledged. Within that, at most `cwnd` packets
//!   are in flight (sent, and neither acknowledged nor known lost).
//! - **Cumulative and selective acknowledgement**: an ACK of *a* acknowledges every
//!   packet up to *a*; its [`Sack`] names later ones that arrived. A packet that
//!   arrived is never resent.
//! - **Repair without a timeout** (after RACK, RFC 8985): a packet is deemed lost,
//!   and resent at once, when a packet sent at least a reordering allowance *after*
//!   it (a quarter of the smallest round trip seen) has been acknowledged, cumulatively or
//!   selectively. Only new information can do that: an ACK that acknowledges nothing
//!   new (a duplicate, a stale one) is ignored before any of this, so it never causes
//!   a resend (the Sorcerer's Apprentice rule).
//! - **One timer** (RFC 6298 §5): armed when a packet goes out and none is running,
//!   restarted when an ACK acknowledges something new, stopped when nothing is in
//!   flight. When it expires, the oldest packet in flight is resent, the timeout backs
//!   off, and the window halves; if the others were lost too, the acknowledgement of
//!   that resend shows it (they were sent before it) and they are repaired at once.
//! - **Round trips by Karn's rule**: a sample only from the newest packet an ACK newly
//!   acknowledges, and only if that packet was sent exactly once.
//! - **Responding to loss** (RFC 8085 §3.1): `cwnd` starts at
//!   `min(W, INITIAL_CWND)`, grows by one per acknowledged packet up to `ssthresh`
//!   (slow start), then by [`INCREASE`] packets per window's worth of acknowledged
//!   packets; each packet found lost shrinks it by the fraction [`DECREASE`], and a
//!   timeout halves it. Never below 1, never above *W*. Shrinking per lost packet
//!   (rather than once per window, as TCP) is what tells random loss from congestion:
//!   a few random losses per window cost a few percent, while a queue that overflows
//!   loses everything above its capacity and the window falls to what fits.
//! - **A fixed window** ([`SendWindow::set_fixed`], RFC 7440 for TFTP): `cwnd` is *W*
//!   from the start and never changes. Repairs and duplicate ACKs are handled as above;
//!   a timeout resends every unacknowledged packet in order from the first
//!   (go-back-N), not just the oldest, which is what an RFC 7440 receiver expects: it
//!   keeps no block past a gap and acknowledges the last one it has in order.

use std::time::{Duration, Instant};

use super::frame::{Kind, Sack, Seq};
use crate::rto::RtoEstimator;

/// The congestion window a transfer starts with (RFC 6928's ten segments).
pub const INITIAL_CWND: f64 = 10.0;
/// Packets added to the congestion window per window's worth of acknowledged packets,
/// once past slow start.
pub const INCREASE: f64 = 4.0;
/// The fraction of the congestion window given up for each packet found lost.
pub const DECREASE: f64 = 1.0 / 16.0;

/// What happened when the retransmission timer was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// The deadline has not come yet (a spurious call): nothing to do.
    NotYet,
    /// Resend now; the oldest packet had been waiting `after`.
    Resend { after: Duration },
    /// The give-up time passed without progress: `tries` sends of the oldest packet
    /// over `over` went unanswered.
    GiveUp { tries: u32, over: Duration },
}

/// Why a packet goes out again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resend {
    /// Its timer expired (or a probe of a receiver that is storing): it had waited `after`.
    Timeout { after: Duration },
    /// Later packets arrived and it did not: repaired without waiting for the timer.
    Repair,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Loaded, never sent.
    Queued,
    /// Sent, not acknowledged.
    InFlight,
    /// Deemed lost; to be sent again, for this reason.
    Lost(Resend),
    /// Selectively acknowledged: arrived, never to be resent.
    Sacked,
    /// The receiver is storing the data this packet (the end) closes: no timer.
    Held,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    kind: Kind,
    /// Encoded length.
    len: usize,
    /// Payload bytes (data only), counted when acknowledged.
    payload: usize,
    state: State,
    tries: u32,
    first_sent: Option<Instant>,
    sent_at: Option<Instant>,
    /// Transmissions by this window before this packet's last one: "sent after" is
    /// decided by it, not by the clock (a burst goes out at one instant).
    order: u64,
}

const EMPTY: Slot = Slot {
    kind: Kind::Data,
    len: 0,
    payload: 0,
    state: State::Queued,
    tries: 0,
    first_sent: None,
    sent_at: None,
    order: 0,
};

/// Of two packets, the one sent last.
fn newer(a: Option<Slot>, b: Slot) -> Option<Slot> {
    match a {
        Some(a) if a.order > b.order => Some(a),
        _ => Some(b),
    }
}

/// What an acknowledgement did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Acked {
    /// Older than what is already acknowledged, or nothing new: ignored.
    Stale,
    /// For a packet never sent: dropped (a peer that does not follow the protocol).
    Future,
    /// New information.
    Progress {
        /// Whether the cumulative point advanced (`kind` and `rtt` describe it).
        advanced: bool,
        /// The kind of packet the cumulative number names.
        kind: Kind,
        /// A round-trip sample, if Karn's rule allowed one.
        rtt: Option<Duration>,
        /// Payload bytes newly acknowledged cumulatively.
        bytes: u64,
    },
}

/// The unacknowledged packets of one sender. See the module documentation.
///
/// Guarantees: never more than the capacity unacknowledged, never more than the
/// congestion window in flight; a packet is sent again only after its timer expired
/// or after new selective acknowledgements showed it lost; no allocation after
/// [`SendWindow::new`].
#[derive(Debug, Clone)]
pub(crate) struct SendWindow {
    slots: Vec<Slot>,
    /// The capacity *W* (≤ `slots.len()`).
    cap: u64,
    /// The lowest unacknowledged packet.
    una: Seq,
    /// The next packet to be loaded.
    next: Seq,
    /// Packets below this have been sent at least once.
    next_unsent: Seq,
    in_flight: u64,
    lost: u64,
    /// Transmissions so far.
    sent: u64,
    /// Of the packets acknowledged so far, the one sent last: its `order` and time.
    rack: Option<(u64, Instant)>,
    deadline: Option<Instant>,
    cwnd: f64,
    ssthresh: f64,
    /// `cwnd` is the capacity, always (RFC 7440: no congestion control).
    fixed: bool,
}

impl SendWindow {
    /// A window of capacity `cap` (at least 1) whose first packet will be `first`.
    pub fn new(cap: u16, first: Seq) -> Self {
        let cap = cap.max(1);
        let mut w = SendWindow {
            slots: vec![EMPTY; cap as usize],
            cap: cap as u64,
            una: first,
            next: first,
            next_unsent: first,
            in_flight: 0,
            lost: 0,
            sent: 0,
            rack: None,
            deadline: None,
            cwnd: 1.0,
            ssthresh: 1.0,
            fixed: false,
        };
        w.reset(first);
        w
    }

    /// Empties the window for a stream starting at `first`, keeping its capacity and
    /// its memory (the server's ACCEPT is packet 0 alone; DATA follows from 1).
    pub fn reset(&mut self, first: Seq) {
        self.una = first;
        self.next = first;
        self.next_unsent = first;
        self.in_flight = 0;
        self.lost = 0;
        self.rack = None;
        self.deadline = None;
        self.cwnd = if self.fixed {
            self.cap as f64
        } else {
            (self.cap as f64).min(INITIAL_CWND)
        };
        self.ssthresh = self.cap as f64;
    }

    /// Fixes the congestion window at the capacity for good: no slow start, no
    /// decrease (RFC 7440's window, which has no congestion control).
    pub fn set_fixed(&mut self) {
        self.fixed = true;
        self.cwnd = self.cap as f64;
    }

    fn idx(&self, seq: Seq) -> usize {
        (seq % self.cap) as usize
    }

    fn slot(&self, seq: Seq) -> &Slot {
        &self.slots[self.idx(seq)]
    }

    fn slot_mut(&mut self, seq: Seq) -> &mut Slot {
        let i = self.idx(seq);
        &mut self.slots[i]
    }

    /// The slot index of `seq`, for the caller's buffers (`seq` mod capacity).
    pub fn index(&self, seq: Seq) -> usize {
        self.idx(seq)
    }

    pub fn capacity(&self) -> u64 {
        self.cap
    }

    /// Whether another packet may be loaded.
    pub fn has_room(&self) -> bool {
        self.next - self.una < self.cap
    }

    /// The lowest unacknowledged packet.
    pub fn una(&self) -> Seq {
        self.una
    }

    /// The next packet to be loaded.
    pub fn next_seq(&self) -> Seq {
        self.next
    }

    /// The congestion window, in packets.
    pub fn cwnd(&self) -> f64 {
        self.cwnd
    }

    /// The kind and encoded length of a loaded packet.
    pub fn packet(&self, seq: Seq) -> (Kind, usize) {
        let s = self.slot(seq);
        (s.kind, s.len)
    }

    /// Loads the next packet (its bytes are the caller's, at [`SendWindow::index`]).
    pub fn push(&mut self, kind: Kind, len: usize, payload: usize) -> Seq {
        debug_assert!(self.has_room());
        let seq = self.next;
        *self.slot_mut(seq) = Slot {
            kind,
            len,
            payload,
            ..EMPTY
        };
        self.next += 1;
        seq
    }

    /// The packet to send now, if the window allows one: a lost packet first (oldest
    /// first), then the next new one, each only while fewer than `cwnd` are in flight
    /// (except the resend of a timeout, which goes at once).
    pub fn next_to_send(&self) -> Option<(Seq, Option<Resend>)> {
        let room = (self.in_flight as f64) < self.cwnd.floor().max(1.0);
        if self.lost > 0 {
            for seq in self.una..self.next_unsent {
                match self.slot(seq).state {
                    // The one resend a timeout asks for goes whatever is in flight: the
                    // timer is re-armed by it.
                    State::Lost(why @ Resend::Timeout { .. }) => return Some((seq, Some(why))),
                    State::Lost(why) if room => return Some((seq, Some(why))),
                    _ => {}
                }
            }
        }
        (room && self.next_unsent < self.next).then_some((self.next_unsent, None))
    }

    /// Records that `seq` went out at `now`, and arms the timer if none runs.
    pub fn on_transmit(&mut self, seq: Seq, now: Instant, rto: &RtoEstimator) {
        let order = self.sent;
        self.sent += 1;
        let s = self.slot_mut(seq);
        if matches!(s.state, State::Lost(_)) {
            self.lost -= 1;
        }
        let s = self.slot_mut(seq);
        s.state = State::InFlight;
        s.tries += 1;
        s.first_sent.get_or_insert(now);
        s.sent_at = Some(now);
        s.order = order;
        self.in_flight += 1;
        if seq == self.next_unsent {
            self.next_unsent += 1;
        }
        if self.deadline.is_none() {
            self.deadline = Some(now + rto.rto());
        }
    }

    /// When the timer expires, if it runs.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The number of times `seq` was sent.
    pub fn tries(&self, seq: Seq) -> u32 {
        self.slot(seq).tries
    }

    /// When the oldest unacknowledged packet first went out.
    pub fn first_sent(&self) -> Option<Instant> {
        (self.una < self.next)
            .then(|| self.slot(self.una).first_sent)
            .flatten()
    }

    /// Takes in an acknowledgement: every packet up to `cum`, and those `sack` names.
    pub fn on_ack(&mut self, now: Instant, cum: Seq, sack: &Sack, rto: &mut RtoEstimator) -> Acked {
        if cum >= self.next_unsent {
            return Acked::Future;
        }
        if cum.saturating_add(1) < self.una {
            return Acked::Stale;
        }
        // The newest packet this ACK newly acknowledges (Karn: sample only from it).
        let mut newest: Option<Slot> = None;
        let mut newest_once: Option<Slot> = None;
        let mut bytes = 0u64;
        let mut delivered = 0u64;
        let advanced = cum >= self.una;
        let kind = self.slot(cum).kind;
        while self.una <= cum {
            let s = *self.slot(self.una);
            match s.state {
                State::InFlight => self.in_flight -= 1,
                State::Lost(_) => self.lost -= 1,
                _ => {}
            }
            if s.state != State::Sacked {
                delivered += 1;
                newest = newer(newest, s);
                if s.tries == 1 {
                    newest_once = newer(newest_once, s);
                }
            }
            bytes += s.payload as u64;
            self.una += 1;
        }
        let mut newly_sacked = 0u64;
        for k in sack.iter() {
            let seq = cum + 1 + k;
            if seq >= self.next_unsent {
                break;
            }
            let s = *self.slot(seq);
            if matches!(s.state, State::InFlight | State::Lost(_)) {
                match s.state {
                    State::InFlight => self.in_flight -= 1,
                    _ => self.lost -= 1,
                }
                newest = newer(newest, s);
                if s.tries == 1 {
                    newest_once = newer(newest_once, s);
                }
                self.slot_mut(seq).state = State::Sacked;
                newly_sacked += 1;
            }
        }
        delivered += newly_sacked;
        if !advanced && newly_sacked == 0 {
            return Acked::Stale;
        }
        let rtt = match newest {
            Some(Slot {
                sent_at: Some(at),
                tries: 1,
                ..
            }) => {
                let r = now.saturating_duration_since(at);
                rto.sample(r);
                Some(r)
            }
            Some(Slot {
                sent_at: Some(at), ..
            }) => {
                rto.acknowledged_after_resend(now.saturating_duration_since(at));
                None
            }
            _ => None,
        };
        // What was delivered, for repairs: the newest packet sent once, if the ACK
        // acknowledges one. A resent packet is ambiguous (the ACK may be for an earlier
        // copy, after a stall), so it counts only when nothing sent once came with it —
        // as when a whole window was lost and only the timeout's resend got through.
        if let Some(Slot {
            order,
            sent_at: Some(at),
            ..
        }) = newest_once.or(newest)
            && self.rack.is_none_or(|(o, _)| order > o)
        {
            self.rack = Some((order, at));
        }
        // RFC 6298 §5.2–5.3: restart the timer for what is still in flight.
        self.deadline = (self.in_flight > 0).then(|| now + rto.rto());
        self.grow(delivered);
        // RFC 8985's reordering window: a quarter of the smallest round trip.
        let allowance = rto.min_rtt().unwrap_or(rto.config().min) / 4;
        self.detect_losses(allowance);
        Acked::Progress {
            advanced,
            kind,
            rtt,
            bytes,
        }
    }

    /// Opens the congestion window for `delivered` packets newly acknowledged.
    fn grow(&mut self, delivered: u64) {
        if self.fixed {
            return;
        }
        for _ in 0..delivered {
            if self.cwnd < self.ssthresh {
                self.cwnd += 1.0;
            } else {
                self.cwnd += INCREASE / self.cwnd;
            }
        }
        self.cwnd = self.cwnd.min(self.cap as f64);
    }

    /// Packets sent at least `allowance` before a packet that has been acknowledged,
    /// and still unacknowledged themselves, are deemed lost (to be repaired at once);
    /// each shrinks the congestion window.
    fn detect_losses(&mut self, allowance: Duration) {
        let Some((rack_order, rack_at)) = self.rack else {
            return;
        };
        for seq in self.una..self.next_unsent {
            let s = *self.slot(seq);
            if s.state == State::InFlight
                && s.order < rack_order
                && s.sent_at.is_some_and(|at| at + allowance <= rack_at)
            {
                self.slot_mut(seq).state = State::Lost(Resend::Repair);
                self.in_flight -= 1;
                self.lost += 1;
                if !self.fixed {
                    self.cwnd = (self.cwnd * (1.0 - DECREASE)).max(1.0);
                    self.ssthresh = self.cwnd;
                }
            }
        }
    }

    /// Checks the timer at `now`. On expiry the estimator backs off, the oldest packet
    /// in flight is resent and the window halves, unless `give_up_at` (the last
    /// progress plus the give-up time) has passed.
    pub fn expire(&mut self, now: Instant, rto: &mut RtoEstimator, give_up_at: Instant) -> Expiry {
        let Some(deadline) = self.deadline else {
            return Expiry::NotYet;
        };
        if now < deadline {
            return Expiry::NotYet;
        }
        self.deadline = None;
        let oldest = *self.slot(self.una);
        let first = oldest.first_sent.unwrap_or(now);
        if now >= give_up_at {
            return Expiry::GiveUp {
                tries: oldest.tries,
                over: now.saturating_duration_since(first),
            };
        }
        rto.back_off();
        // The oldest packet in flight goes again (RFC 6298 §5.4). The others are not
        // presumed lost: a stall (a descheduled peer) loses nothing, and if they were
        // lost, the acknowledgement of this resend shows it and they are repaired then.
        // A fixed window (RFC 7440) goes back to the first unacknowledged block and
        // sends the whole window again, as its receiver expects.
        for seq in self.una..self.next_unsent {
            let s = *self.slot(seq);
            if s.state == State::InFlight {
                let after = now.saturating_duration_since(s.sent_at.unwrap_or(first));
                self.slot_mut(seq).state = State::Lost(Resend::Timeout { after });
                self.in_flight -= 1;
                self.lost += 1;
                if !self.fixed {
                    break;
                }
            }
        }
        if self.cap > 1 && !self.fixed {
            self.cwnd = (self.cwnd / 2.0).max(1.0);
            self.ssthresh = self.cwnd.max(2.0);
        }
        Expiry::Resend {
            after: now.saturating_duration_since(oldest.sent_at.unwrap_or(first)),
        }
    }

    /// The receiver says it is storing what the end packet `seq` closes: everything
    /// before it arrived. Acknowledges those, takes the end's round trip if it was
    /// sent once (Karn), and holds it without a timer.
    pub fn hold(
        &mut self,
        now: Instant,
        seq: Seq,
        rto: &mut RtoEstimator,
    ) -> (u64, Option<Duration>) {
        let mut bytes = 0;
        if seq > self.una
            && let Acked::Progress { bytes: b, .. } = self.on_ack(now, seq - 1, &Sack::NONE, rto)
        {
            bytes = b;
        }
        let s = *self.slot(seq);
        let rtt = match (s.state, s.sent_at) {
            (State::InFlight, Some(at)) => {
                let r = now.saturating_duration_since(at);
                if s.tries == 1 {
                    rto.sample(r);
                    Some(r)
                } else {
                    rto.acknowledged_after_resend(r);
                    None
                }
            }
            _ => None,
        };
        match s.state {
            State::InFlight => self.in_flight -= 1,
            State::Lost(_) => self.lost -= 1,
            _ => {}
        }
        self.slot_mut(seq).state = State::Held;
        self.deadline = (self.in_flight > 0).then_some(self.deadline).flatten();
        (bytes, rtt)
    }

    /// Sends a held end packet again, as a probe of a receiver that is storing (also
    /// when the last probe is still unanswered: probes run on the caller's timer).
    pub fn probe(&mut self, seq: Seq, after: Duration) {
        match self.slot(seq).state {
            State::Held => {}
            State::InFlight => {
                self.in_flight -= 1;
                self.deadline = (self.in_flight > 0).then_some(self.deadline).flatten();
            }
            _ => return,
        }
        self.slot_mut(seq).state = State::Lost(Resend::Timeout { after });
        self.lost += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rto::RtoConfig;

    fn rto() -> RtoEstimator {
        RtoEstimator::new(RtoConfig::default())
    }

    fn sack(offsets: &[u64]) -> Sack {
        let mut s = Sack::NONE;
        for &k in offsets {
            s.set(k);
        }
        s
    }

    /// Fills the window and sends what it allows; returns the packets sent.
    fn send_all(w: &mut SendWindow, now: Instant, r: &RtoEstimator) -> Vec<(Seq, Option<Resend>)> {
        let mut out = vec![];
        while let Some((seq, why)) = w.next_to_send() {
            w.on_transmit(seq, now, r);
            out.push((seq, why));
        }
        out
    }

    #[test]
    fn capacity_one_is_stop_and_wait() {
        let t0 = Instant::now();
        let mut r = rto();
        let mut w = SendWindow::new(1, 1);
        assert!(w.has_room());
        w.push(Kind::Data, 100, 74);
        assert!(!w.has_room());
        assert_eq!(send_all(&mut w, t0, &r), [(1, None)]);
        assert_eq!(w.deadline(), Some(t0 + r.rto()));
        // Expiry: resent once, the timeout backed off.
        let at = t0 + Duration::from_millis(10);
        let e = w.expire(at, &mut r, at + Duration::from_secs(30));
        assert_eq!(
            e,
            Expiry::Resend {
                after: Duration::from_millis(10)
            }
        );
        assert_eq!(send_all(&mut w, at, &r).len(), 1);
        assert_eq!(w.tries(1), 2);
        // A duplicate of an older ack: stale, nothing to send.
        assert_eq!(w.on_ack(at, 0, &Sack::NONE, &mut r), Acked::Stale);
        assert!(send_all(&mut w, at, &r).is_empty());
        let got = w.on_ack(at, 1, &Sack::NONE, &mut r);
        assert!(matches!(
            got,
            Acked::Progress {
                advanced: true,
                rtt: None,
                bytes: 74,
                ..
            }
        ));
        assert!(w.una() == w.next_seq() && w.deadline().is_none());
        // An ack for something never sent.
        assert_eq!(w.on_ack(at, 5, &Sack::NONE, &mut r), Acked::Future);
    }

    #[test]
    fn never_more_than_the_capacity_unacknowledged() {
        let t0 = Instant::now();
        let r = rto();
        let mut w = SendWindow::new(16, 1);
        while w.has_room() {
            w.push(Kind::Data, 10, 10);
        }
        assert_eq!(w.next_seq(), 17);
        // The congestion window starts at 10.
        assert_eq!(send_all(&mut w, t0, &r).len(), 10);
    }

    /// A fixed window (RFC 7440) sends all *W* at once, keeps *W* through a timeout,
    /// and the timeout resends everything unacknowledged from the first on, in order.
    #[test]
    fn a_fixed_window_goes_back_n_on_a_timeout_and_never_shrinks() {
        let t0 = Instant::now();
        let mut r = rto();
        let mut w = SendWindow::new(16, 1);
        w.set_fixed();
        while w.has_room() {
            w.push(Kind::Data, 10, 10);
        }
        assert_eq!(send_all(&mut w, t0, &r).len(), 16, "no slow start");
        // The receiver had 1 to 4 in order (5 lost): it acknowledges 4.
        let t1 = t0 + Duration::from_micros(300);
        assert!(matches!(
            w.on_ack(t1, 4, &Sack::NONE, &mut r),
            Acked::Progress { advanced: true, .. }
        ));
        while w.has_room() {
            w.push(Kind::Data, 10, 10);
        }
        assert_eq!(
            send_all(&mut w, t1, &r),
            (17..=20).map(|s| (s, None)).collect::<Vec<_>>()
        );
        // Copies of ack 4 change nothing (never resend on a duplicate ACK).
        assert_eq!(w.on_ack(t1, 4, &Sack::NONE, &mut r), Acked::Stale);
        assert!(send_all(&mut w, t1, &r).is_empty());
        let at = w.deadline().unwrap();
        assert!(matches!(
            w.expire(at, &mut r, at + Duration::from_secs(30)),
            Expiry::Resend { .. }
        ));
        let again: Vec<Seq> = send_all(&mut w, at, &r).iter().map(|p| p.0).collect();
        assert_eq!(again, (5..=20).collect::<Vec<_>>(), "go-back-N from 5");
        assert_eq!(w.cwnd(), 16.0);
    }

    #[test]
    fn selective_acks_repair_without_a_timeout_and_duplicates_change_nothing() {
        let t0 = Instant::now();
        let us = |n| Duration::from_micros(n);
        let mut r = rto();
        let mut w = SendWindow::new(8, 1);
        while w.has_room() {
            w.push(Kind::Data, 10, 10);
        }
        assert_eq!(send_all(&mut w, t0, &r).len(), 8);
        // 1 arrived, 2 not (yet), 3 and 4 did: all were sent at once, so 2 may merely be
        // overtaken. Nothing is resent; the slot freed by 1 takes packet 9.
        let t1 = t0 + us(200);
        let a = w.on_ack(t1, 1, &sack(&[1, 2]), &mut r);
        assert!(matches!(a, Acked::Progress { advanced: true, .. }));
        w.push(Kind::Data, 10, 10);
        assert_eq!(send_all(&mut w, t1, &r), [(9, None)]);
        // The same ACK again (duplicated by the link): nothing new, nothing resent.
        assert_eq!(w.on_ack(t1, 1, &sack(&[1, 2]), &mut r), Acked::Stale);
        assert_eq!(send_all(&mut w, t1, &r), []);
        // 3 to 9 arrived; 9 was sent 200 µs after 2: 2 is lost, and repaired at once.
        let t2 = t1 + us(200);
        let a = w.on_ack(t2, 1, &sack(&[1, 2, 3, 4, 5, 6, 7]), &mut r);
        assert!(matches!(
            a,
            Acked::Progress {
                advanced: false,
                ..
            }
        ));
        assert_eq!(send_all(&mut w, t2, &r), [(2, Some(Resend::Repair))]);
        // The same information again repairs nothing more.
        assert_eq!(
            w.on_ack(t2, 1, &sack(&[1, 2, 3, 4, 5, 6, 7]), &mut r),
            Acked::Stale
        );
        assert_eq!(send_all(&mut w, t2, &r), []);
        // The repair arrives: everything is acknowledged, the timer stops.
        let a = w.on_ack(t2 + us(200), 9, &Sack::NONE, &mut r);
        assert!(matches!(
            a,
            Acked::Progress {
                advanced: true,
                rtt: None,
                ..
            }
        ));
        assert_eq!(w.deadline(), None);
        assert_eq!(w.tries(2), 2);
    }

    /// After a timeout, an ACK that also acknowledges packets sent once is taken for
    /// what it most likely is — the peer was only slow — and repairs nothing; an ACK of
    /// the timeout's resend alone means the rest were lost too, and repairs them.
    #[test]
    fn a_timeout_resend_is_evidence_only_when_it_came_alone() {
        let t0 = Instant::now();
        let us = |n| Duration::from_micros(n);
        for alone in [false, true] {
            let mut r = rto();
            r.sample(us(200));
            let mut w = SendWindow::new(8, 1);
            for _ in 0..4 {
                w.push(Kind::Data, 10, 10);
            }
            assert_eq!(send_all(&mut w, t0, &r).len(), 4);
            let due = w.deadline().unwrap();
            assert!(matches!(
                w.expire(due, &mut r, due + Duration::from_secs(30)),
                Expiry::Resend { .. }
            ));
            assert_eq!(
                send_all(&mut w, due, &r),
                [(1, Some(Resend::Timeout { after: due - t0 }))]
            );
            let cum = if alone { 1 } else { 3 };
            w.on_ack(due + us(300), cum, &Sack::NONE, &mut r);
            let sent = send_all(&mut w, due + us(300), &r);
            if alone {
                assert_eq!(
                    sent,
                    [
                        (2, Some(Resend::Repair)),
                        (3, Some(Resend::Repair)),
                        (4, Some(Resend::Repair))
                    ]
                );
            } else {
                assert!(sent.is_empty(), "{sent:?}");
            }
        }
    }
}
