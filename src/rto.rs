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
}

impl Default for RtoConfig {
    fn default() -> Self {
        RtoConfig {
            initial: Duration::from_millis(10),
            min: Duration::from_micros(100),
            max: Duration::from_secs(1),
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
}

impl RtoEstimator {
    pub fn new(config: RtoConfig) -> Self {
        let mut e = RtoEstimator {
            config,
            srtt: None,
            rttvar: Duration::ZERO,
            rto: config.initial,
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
        // RFC 6298's G (clock granularity) is our floor, applied by clamp.
        let srtt = self.srtt.unwrap_or(rtt);
        self.rto = self.clamp(srtt + self.rttvar * 4);
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

    /// The configuration this estimator was built with.
    pub fn config(&self) -> RtoConfig {
        self.config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> RtoConfig {
        RtoConfig {
            initial: Duration::from_millis(50),
            min: Duration::from_micros(200),
            max: Duration::from_secs(1),
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
