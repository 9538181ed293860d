//! The one unacknowledged packet of a stop-and-wait sender, and its timer.
//!
//! Shared by every side that sends something and waits for an answer: the client's
//! REQUEST, the server's ACCEPT of a get, DATA and DONE. It implements the rules of
//! PROTOCOL.md §5: resend only when the timer expires, back off exponentially, take
//! round-trip samples only from packets sent once (Karn), give up after the give-up time without progress.

use std::time::{Duration, Instant};

use crate::rto::RtoEstimator;
use crate::wire::{Kind, Seq};

/// What happened when the timer of the outstanding packet was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// The deadline has not come yet (a spurious call): nothing to do.
    NotYet,
    /// Resend now; the packet had been waiting `after`.
    Resend { after: Duration },
    /// The give-up time passed without progress: `tries` sends of this packet over
    /// `over` went unanswered.
    GiveUp { tries: u32, over: Duration },
}

#[derive(Debug, Clone)]
pub(crate) struct Outstanding {
    pub kind: Kind,
    pub seq: Seq,
    /// Encoded length, for traces and budgets.
    pub len: usize,
    /// Set when the packet must be handed to the driver.
    pub need_send: bool,
    tries: u32,
    first_sent: Option<Instant>,
    sent_at: Option<Instant>,
    deadline: Option<Instant>,
}

impl Outstanding {
    pub fn new(kind: Kind, seq: Seq, len: usize) -> Self {
        Outstanding {
            kind,
            seq,
            len,
            need_send: true,
            tries: 0,
            first_sent: None,
            sent_at: None,
            deadline: None,
        }
    }

    /// How many times the packet was handed out.
    pub fn tries(&self) -> u32 {
        self.tries
    }

    /// Records that the packet was handed out at `now`, and arms the timer.
    pub fn on_transmit(&mut self, now: Instant, rto: &RtoEstimator) {
        self.need_send = false;
        self.tries += 1;
        self.first_sent.get_or_insert(now);
        self.sent_at = Some(now);
        self.deadline = Some(now + rto.rto());
    }

    /// Whether this packet has been handed out at least once.
    pub fn transmitted(&self) -> bool {
        self.tries > 0
    }

    pub fn deadline(&self) -> Option<Instant> {
        if self.need_send { None } else { self.deadline }
    }

    /// The round trip of an answer arriving at `now`, if the packet was sent exactly
    /// once (Karn's rule), and feeds it to the estimator; for a resent packet, tells the
    /// estimator how soon after the last copy the answer came (see
    /// [`RtoEstimator::acknowledged_after_resend`]).
    pub fn acknowledged(&mut self, now: Instant, rto: &mut RtoEstimator) -> Option<Duration> {
        self.deadline = None;
        let since = now.saturating_duration_since(self.sent_at?);
        if self.tries == 1 {
            rto.sample(since);
            Some(since)
        } else {
            rto.acknowledged_after_resend(since);
            None
        }
    }

    /// When the first copy of this packet went out.
    pub fn first_sent(&self) -> Option<Instant> {
        self.first_sent
    }

    /// Checks the timer at `now`. On expiry the estimator backs off and the packet is
    /// marked for resending, unless `give_up_at` (the last progress plus the give-up
    /// time) has passed.
    pub fn expire(&mut self, now: Instant, rto: &mut RtoEstimator, give_up_at: Instant) -> Expiry {
        let Some(deadline) = self.deadline else {
            return Expiry::NotYet;
        };
        if self.need_send || now < deadline {
            return Expiry::NotYet;
        }
        let first = self.first_sent.unwrap_or(now);
        if now >= give_up_at {
            self.deadline = None;
            return Expiry::GiveUp {
                tries: self.tries,
                over: now.saturating_duration_since(first),
            };
        }
        rto.back_off();
        self.need_send = true;
        Expiry::Resend {
            after: now.saturating_duration_since(self.sent_at.unwrap_or(first)),
        }
    }
}
