//! Retransmission timeout estimation, after RFC 6298, with Karn's rule and
//! exponential backoff (PROTOCOL.md §5.2).
//!
//! Pure arithmetic on [`Duration`]s: the caller measures round trips with whatever
//! clock it drives the engine with.

use std::time::Duration;

/// Bounds and starting point of the retransmission timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtoConfig {
    /// The timeout before any round trip has been measured.
    pub initial: Duration,
    /// The floor. RFC 6298 says one second for the Internet; on a LAN whose round
    /// trips are tens of microseconds that floor is what makes TFTP crawl under loss,
    /// so it is a setting here.
    pub min: Duration,
    /// The ceiling, which also caps exponential backoff.
    pub max: Duration,
    /// The least margin the timeout keeps above the smoothed round trip (RFC 6298's
    /// *G*): what delays an answer on a busy machine (a process waiting for a CPU), as
    /// QUIC's kGranularity (RFC 9002 §6.2.1). With only 4·RTTVAR over a 30 µs loopback
    /// round trip, half of the lossless 4 MiB gets on a shared 2-core machine resent
    /// something (619 resends in 30 gets at load 3.7; 5–64 with 1 ms).
    pub granularity: Duration,
}

impl Default for RtoConfig {
    fn default() -> Self {
        RtoConfig {
            initial: Duration::from_millis(10),
            min: Duration::from_micros(100),
            max: Duration::from_secs(1),
            granularity: Duration::from_millis(1),
        }
    }
}

/// The smoothed round-trip time, its variation, and the current timeout.
///
/// Guarantees: [`RtoEstimator::rto`] always lies within `[min, max]` of its config.
/// Karn's rule is the caller's half of the contract: feed [`RtoEstimator::sample`] only
/// round trips of packets that were sent exactly once.
#[derive(Debug, Clone)]
pub struct RtoEstimator {
    config: RtoConfig,
    srtt: Option<Duration>,
    rttvar: Duration,
    rto: Duration,
    /// The smallest sample seen: no copy of a packet comes back faster than this.
    min_rtt: Option<Duration>,
}

impl RtoEstimator {
    pub fn new(config: RtoConfig) -> Self {
        let mut e = RtoEstimator {
            config,
            srtt: None,
            rttvar: Duration::ZERO,
            rto: config.initial,
            min_rtt: None,
        };
        e.rto = e.clamp(config.initial);
        e
    }

    fn clamp(&self, d: Duration) -> Duration {
        d.clamp(self.config.min, self.config.max.max(self.config.min))
    }

    /// Takes one round-trip measurement (RFC 6298 §2.2–2.3, alpha 1/8, beta 1/4).
    /// A new sample also undoes any backoff (RFC 6298 §5.7).
    pub fn sample(&mut self, rtt: Duration) {
        self.min_rtt = Some(self.min_rtt.map_or(rtt, |m| m.min(rtt)));
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                let diff = srtt.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + diff) / 4;
                self.srtt = Some((srtt * 7 + rtt) / 8);
            }
        }
        self.rto = self.estimate();
    }

    /// SRTT + max(4·RTTVAR, granularity) within the bounds, or the initial timeout
    /// before any sample.
    fn estimate(&self) -> Duration {
        match self.srtt {
            Some(srtt) => self.clamp(srtt + (self.rttvar * 4).max(self.config.granularity)),
            None => self.clamp(self.config.initial),
        }
    }

    /// A packet that had been resent was acknowledged `since_last_send` after its last
    /// copy went out. Karn's rule: no sample, since it is unknown which copy came back.
    ///
    /// What to do with the backoff is decided here (PROTOCOL.md §5.2). If the last copy
    /// plausibly made the round trip — the answer came no sooner than half the smallest
    /// round trip ever seen, and sooner than the estimate's timeout — the packets were
    /// lost, not slow: the estimate still describes the path and the backoff is undone.
    /// Otherwise (an answer too quick to be for the last copy, so an earlier copy was
    /// merely slow; or an answer slower than the estimate) the round trip may have grown,
    /// and the backed-off timeout is kept for the next packet, as RFC 6298 and Karn
    /// prescribe, so that it can be sent once and measured.
    ///
    /// Why not always keep it: at heavy loss every loss doubles the timeout and only a
    /// packet that got through at the first try undoes it, so the timeout climbs to the
    /// ceiling and stays there (measured: 30% loss, a 300 KB get took 90 s with resends
    /// waiting about 1 s against a 0.13 ms round trip).
    pub fn acknowledged_after_resend(&mut self, since_last_send: Duration) {
        let estimate = self.estimate();
        let plausible = self.min_rtt.is_none_or(|m| since_last_send >= m / 2);
        if plausible && since_last_send < estimate {
            self.rto = estimate;
        }
    }

    /// Doubles the timeout after an expiry (RFC 6298 §5.5), up to the ceiling.
    pub fn back_off(&mut self) {
        self.rto = self.clamp(self.rto.saturating_mul(2));
    }

    /// The current retransmission timeout.
    pub fn rto(&self) -> Duration {
        self.rto
    }

    /// The smoothed round-trip time, once there is a sample.
    pub fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// The smallest round trip sampled so far.
    pub fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt
    }

    /// The round-trip variation (RTTVAR): zero before the first sample.
    pub fn rttvar(&self) -> Duration {
        self.rttvar
    }

    /// The configuration this estimator was built with.
    pub fn config(&self) -> RtoConfig {
        self.config
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn backoff_is_undone_when_the_last_copy_made_a_normal_round_trip() {
        let mut e = RtoEstimator::new(cfg());
        for _ in 0..10 {
            e.sample(Duration::from_micros(150));
        }
        let base = e.rto();
        e.back_off();
        e.back_off();
        // Lost twice, the third copy answered after a normal round trip: loss, not delay.
        e.acknowledged_after_resend(Duration::from_micros(160));
        assert_eq!(e.rto(), base);
    }

    #[test]
    fn backoff_is_kept_when_the_round_trip_may_have_grown() {
        let mut e = RtoEstimator::new(cfg());
        for _ in 0..10 {
            e.sample(Duration::from_micros(150));
        }
        e.back_off();
        let backed = e.rto();
        // An answer 10 µs after the resend cannot be for the resend: the first copy was slow.
        e.acknowledged_after_resend(Duration::from_micros(10));
        assert_eq!(e.rto(), backed);
        // An answer later than the estimate's timeout: the path is slower than estimated.
        e.acknowledged_after_resend(Duration::from_millis(5));
        assert_eq!(e.rto(), backed);
    }

    use super::*;

    fn cfg() -> RtoConfig {
        RtoConfig {
            initial: Duration::from_millis(50),
            min: Duration::from_micros(200),
            max: Duration::from_secs(1),
            granularity: Duration::ZERO,
        }
    }

    #[test]
    fn first_sample_sets_srtt_and_three_times_rtt() {
        let mut e = RtoEstimator::new(cfg());
        assert_eq!(e.rto(), Duration::from_millis(50));
        e.sample(Duration::from_millis(10));
        assert_eq!(e.srtt(), Some(Duration::from_millis(10)));
        // RTO = SRTT + 4 * (RTT/2) = 3 * RTT
        assert_eq!(e.rto(), Duration::from_millis(30));
    }

    /// With the default granularity, a steady 40 µs round trip keeps the timeout 1 ms
    /// above it: a process that waits a moment for a CPU is not taken for a loss.
    #[test]
    fn the_granularity_keeps_a_margin_over_a_steady_round_trip() {
        let mut e = RtoEstimator::new(RtoConfig::default());
        for _ in 0..50 {
            e.sample(Duration::from_micros(40));
        }
        assert_eq!(e.rto(), Duration::from_micros(1040));
        // A path whose variation is larger than the granularity keeps 4·RTTVAR.
        let mut v = RtoEstimator::new(RtoConfig::default());
        v.sample(Duration::from_millis(10));
        assert_eq!(v.rto(), Duration::from_millis(30));
    }

    #[test]
    fn tracks_sub_millisecond_round_trips_down_to_the_floor() {
        let mut e = RtoEstimator::new(cfg());
        for _ in 0..50 {
            e.sample(Duration::from_micros(40));
        }
        assert_eq!(e.rto(), Duration::from_micros(200));
        let mut low = RtoEstimator::new(RtoConfig {
            min: Duration::from_micros(10),
            ..cfg()
        });
        for _ in 0..50 {
            low.sample(Duration::from_micros(40));
        }
        assert!(low.rto() < Duration::from_micros(60), "{:?}", low.rto());
    }

    #[test]
    fn backoff_doubles_to_the_ceiling_and_a_sample_undoes_it() {
        let mut e = RtoEstimator::new(cfg());
        e.sample(Duration::from_millis(100));
        assert_eq!(e.rto(), Duration::from_millis(300));
        e.back_off();
        assert_eq!(e.rto(), Duration::from_millis(600));
        e.back_off();
        assert_eq!(e.rto(), Duration::from_secs(1));
        e.back_off();
        assert_eq!(e.rto(), Duration::from_secs(1));
        e.sample(Duration::from_millis(100));
        assert!(e.rto() < Duration::from_millis(300));
    }
}
