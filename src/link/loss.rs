//! Loss models beyond independent random drops: bursts (the Gilbert model) and a rate
//! limit with a bounded queue.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The Gilbert model of burst loss: a link in a good state loses nothing; per datagram
/// it enters the losing state with probability `p`, and leaves it with probability `r`;
/// every datagram seen in the losing state is lost. The loss rate is p / (p + r) and a
/// burst lasts 1 / r datagrams on average.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Gilbert {
    pub p: f64,
    pub r: f64,
}

impl Gilbert {
    /// Parses `P,R`, each a probability from 0 to 1.
    pub fn parse(text: &str) -> Result<Gilbert, String> {
        let bad = || {
            format!(
                "burst '{text}' is not P,R (two probabilities from 0 to 1, e.g. 0.01,0.3: \
                 P to enter the losing state, R to leave it)"
            )
        };
        let (p, r) = text.split_once(',').ok_or_else(bad)?;
        let p: f64 = p.trim().parse().map_err(|_| bad())?;
        let r: f64 = r.trim().parse().map_err(|_| bad())?;
        let g = Gilbert { p, r };
        g.validate()?;
        Ok(g)
    }

    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [("P", self.p), ("R", self.r)] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!(
                    "burst {name} = {v} is not a probability between 0 and 1"
                ));
            }
        }
        Ok(())
    }
}

/// A rate limit: the link sends `bits_per_sec`, and at most `queue` datagrams wait for
/// it (the one being sent included); a datagram that finds the queue full is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub bits_per_sec: u64,
    pub queue: usize,
}

/// The queue length when only a rate is given (as `tc netem`'s default limit).
pub const DEFAULT_QUEUE: usize = 1000;

/// Parses a rate such as `100mbit`, `1.5gbit`, `64kbit` or `9600bit` (decimal units, as
/// `tc`; a bare number is bits per second).
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let t = text.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let scale = match unit {
        "" | "bit" | "bps" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        _ => {
            return Err(format!(
                "'{text}' is not a rate (write e.g. 100mbit, 1.5gbit, 64kbit or 9600bit)"
            ));
        }
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("'{text}' is not a rate (write e.g. 100mbit)"))?;
    let bits = n * scale;
    if !(1.0..=1e12).contains(&bits) {
        return Err(format!(
            "rate '{text}' is out of range (1 bit/s to 1000 gbit/s)"
        ));
    }
    Ok(bits as u64)
}

/// The state of a rate limiter: when the link is free again, and when each datagram
/// still in its queue finishes being sent.
#[derive(Debug, Default)]
pub(super) struct Limiter {
    busy_until: Option<Instant>,
    finishing: VecDeque<Instant>,
}

impl Limiter {
    /// A datagram of `len` bytes arrives at `now`: how long until it has been sent
    /// (waiting plus sending), or `None` if the queue is full and it is lost.
    pub(super) fn admit(&mut self, rate: Rate, now: Instant, len: usize) -> Option<Duration> {
        while self.finishing.front().is_some_and(|&t| t <= now) {
            self.finishing.pop_front();
        }
        if self.finishing.len() >= rate.queue.max(1) {
            return None;
        }
        let start = self.busy_until.map_or(now, |b| b.max(now));
        let send = Duration::from_secs_f64(len as f64 * 8.0 / rate.bits_per_sec as f64);
        let done = start + send;
        self.busy_until = Some(done);
        self.finishing.push_back(done);
        Some(done - now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_in_decimal_units() {
        assert_eq!(parse_rate("100mbit"), Ok(100_000_000));
        assert_eq!(parse_rate("1.5gbit"), Ok(1_500_000_000));
        assert_eq!(parse_rate("64kbit"), Ok(64_000));
        assert_eq!(parse_rate("9600"), Ok(9600));
        assert!(parse_rate("fast").unwrap_err().contains("not a rate"));
        assert!(parse_rate("0mbit").unwrap_err().contains("out of range"));
    }

    #[test]
    fn burst_parses_two_probabilities() {
        assert_eq!(Gilbert::parse("0.01,0.3"), Ok(Gilbert { p: 0.01, r: 0.3 }));
        assert!(Gilbert::parse("0.5").unwrap_err().contains("not P,R"));
        assert!(Gilbert::parse("0.5,2").unwrap_err().contains("R = 2"));
    }

    #[test]
    fn limiter_spaces_datagrams_and_drops_when_the_queue_is_full() {
        // 8000 bit/s: a 100-byte datagram takes 100 ms to send.
        let rate = Rate {
            bits_per_sec: 8000,
            queue: 2,
        };
        let mut l = Limiter::default();
        let t = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(l.admit(rate, t, 100), Some(ms(100)));
        assert_eq!(l.admit(rate, t, 100), Some(ms(200)));
        assert_eq!(l.admit(rate, t, 100), None, "queue of 2 is full");
        // After the first has gone, there is room again; it waits for the second.
        assert_eq!(l.admit(rate, t + ms(100), 100), Some(ms(200)));
        // An idle link sends at once.
        assert_eq!(l.admit(rate, t + ms(1000), 100), Some(ms(100)));
    }
}
