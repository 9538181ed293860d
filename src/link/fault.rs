//! Scripted faults: "do this to the N-th datagram of that kind in that direction".
//!
//! The classic exercises (lose the first DATA, lose the first ACK, delay an ACK past the
//! timeout) need a chosen packet to misbehave, not a random one. A [`Fault`] names a
//! direction, a packet type (or any datagram), a number counted from 1 and an action;
//! the link model ([`super::Direction::decide`]) applies it. The relay and the simulator
//! share that model, so one script means the same thing to both.

use std::fmt;
use std::time::Duration;

use super::Way;
use crate::wire::Kind;

/// What a scripted fault does to the datagram it targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultAction {
    /// Lose it.
    Drop,
    /// Deliver it twice, unaltered.
    Duplicate,
    /// Flip exactly one bit of it (which one is drawn from the seed).
    Corrupt,
    /// Deliver it this much later than the link's latency.
    Delay(Duration),
}

/// One line of a fault script: `DIRECTION:KIND:N:ACTION`, for example
/// `to-client:data:1:drop` or `to-server:ack:2:delay=5ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// The direction whose datagrams are counted.
    pub way: Way,
    /// The packet type counted, or `None` for every datagram (`any`), those that are not
    /// udpft datagrams included.
    pub kind: Option<Kind>,
    /// Which one, counted from 1 in the order the link sees them.
    pub nth: u64,
    pub action: FaultAction,
}

/// The most faults one direction holds (a fixed array keeps the link settings `Copy`).
pub const MAX_FAULTS: usize = 16;

/// The names of the packet types as a fault script writes them.
pub fn kind_word(kind: Option<Kind>) -> &'static str {
    match kind {
        None => "any",
        Some(Kind::Request) => "request",
        Some(Kind::Accept) => "accept",
        Some(Kind::Data) => "data",
        Some(Kind::Ack) => "ack",
        Some(Kind::Done) => "done",
        Some(Kind::Error) => "error",
        Some(Kind::Retry) => "retry",
        Some(Kind::Wait) => "wait",
    }
}

/// The direction as a fault script writes it.
pub fn way_word(way: Way) -> &'static str {
    match way {
        Way::ClientToServer => "to-server",
        Way::ServerToClient => "to-client",
    }
}

impl Fault {
    /// Parses `DIRECTION:KIND:N:ACTION`. `duration` parses the DURATION of
    /// `delay=DURATION` (the drivers pass their one duration parser).
    pub fn parse(
        text: &str,
        duration: impl Fn(&str) -> Result<Duration, String>,
    ) -> Result<Fault, String> {
        let usage = "write DIRECTION:KIND:N:ACTION, e.g. to-client:data:1:drop \
                     (DIRECTION to-server or to-client; KIND request, retry, accept, data, ack, wait, \
                     done, error or any; N from 1; ACTION drop, duplicate, corrupt or \
                     delay=DURATION)";
        let parts: Vec<&str> = text.trim().splitn(4, ':').collect();
        let [way, kind, nth, action] = parts[..] else {
            return Err(format!("fault '{text}' has not four parts: {usage}"));
        };
        let way = match way {
            "to-server" => Way::ClientToServer,
            "to-client" => Way::ServerToClient,
            w => return Err(format!("fault '{text}': unknown direction '{w}': {usage}")),
        };
        let kind = match kind {
            "any" => None,
            "request" => Some(Kind::Request),
            "accept" => Some(Kind::Accept),
            "data" => Some(Kind::Data),
            "ack" => Some(Kind::Ack),
            "done" => Some(Kind::Done),
            "error" => Some(Kind::Error),
            "retry" => Some(Kind::Retry),
            "wait" => Some(Kind::Wait),
            k => {
                return Err(format!(
                    "fault '{text}': unknown packet type '{k}': {usage}"
                ));
            }
        };
        let nth = match nth.parse::<u64>() {
            Ok(n) if n >= 1 => n,
            _ => {
                return Err(format!(
                    "fault '{text}': '{nth}' is not a number from 1: {usage}"
                ));
            }
        };
        let action = match action {
            "drop" => FaultAction::Drop,
            "duplicate" => FaultAction::Duplicate,
            "corrupt" => FaultAction::Corrupt,
            a => match a.strip_prefix("delay=") {
                Some(d) => {
                    FaultAction::Delay(duration(d).map_err(|e| format!("fault '{text}': {e}"))?)
                }
                None => {
                    return Err(format!("fault '{text}': unknown action '{a}': {usage}"));
                }
            },
        };
        Ok(Fault {
            way,
            kind,
            nth,
            action,
        })
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}:",
            way_word(self.way),
            kind_word(self.kind),
            self.nth
        )?;
        match self.action {
            FaultAction::Drop => f.write_str("drop"),
            FaultAction::Duplicate => f.write_str("duplicate"),
            FaultAction::Corrupt => f.write_str("corrupt"),
            FaultAction::Delay(d) if d.as_micros() % 1000 == 0 => {
                write!(f, "delay={}ms", d.as_millis())
            }
            FaultAction::Delay(d) => write!(f, "delay={}us", d.as_micros()),
        }
    }
}

/// The faults of one direction, in script order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Faults {
    list: [Option<Fault>; MAX_FAULTS],
}

impl Faults {
    /// Adds a fault; fails when [`MAX_FAULTS`] are already there.
    pub fn push(&mut self, fault: Fault) -> Result<(), String> {
        match self.list.iter_mut().find(|f| f.is_none()) {
            Some(slot) => {
                *slot = Some(fault);
                Ok(())
            }
            None => Err(format!(
                "more than {MAX_FAULTS} faults in one direction (fault '{fault}')"
            )),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Fault> + '_ {
        self.list.iter().flatten()
    }

    pub fn is_empty(&self) -> bool {
        self.list[0].is_none()
    }

    /// The first fault, in script order, that targets a datagram of `kind` that is the
    /// `nth_of_kind`-th of its kind and the `nth`-th of all.
    pub(super) fn matching(&self, kind: Option<Kind>, nth_of_kind: u64, nth: u64) -> Option<Fault> {
        self.iter()
            .find(|f| match f.kind {
                None => f.nth == nth,
                Some(k) => Some(k) == kind && f.nth == nth_of_kind,
            })
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Result<Duration, String> {
        s.strip_suffix("ms")
            .and_then(|n| n.parse().ok())
            .map(Duration::from_millis)
            .ok_or_else(|| format!("'{s}' is not a duration"))
    }

    #[test]
    fn parses_every_part_and_prints_it_back() {
        let f = Fault::parse("to-client:data:1:drop", d).unwrap();
        assert_eq!(
            f,
            Fault {
                way: Way::ServerToClient,
                kind: Some(Kind::Data),
                nth: 1,
                action: FaultAction::Drop
            }
        );
        assert_eq!(f.to_string(), "to-client:data:1:drop");
        let f = Fault::parse("to-server:ack:3:delay=5ms", d).unwrap();
        assert_eq!(f.action, FaultAction::Delay(Duration::from_millis(5)));
        assert_eq!(f.to_string(), "to-server:ack:3:delay=5ms");
        for (k, kind) in [
            ("request", Kind::Request),
            ("accept", Kind::Accept),
            ("done", Kind::Done),
            ("error", Kind::Error),
            ("retry", Kind::Retry),
            ("wait", Kind::Wait),
        ] {
            let f = Fault::parse(&format!("to-server:{k}:2:duplicate"), d).unwrap();
            assert_eq!(f.kind, Some(kind));
        }
        assert_eq!(
            Fault::parse("to-server:any:9:corrupt", d).unwrap().kind,
            None
        );
    }

    #[test]
    fn bad_faults_say_what_is_wrong() {
        for (text, needle) in [
            ("to-client:data:1", "has not four parts"),
            ("sideways:data:1:drop", "unknown direction 'sideways'"),
            ("to-client:syn:1:drop", "unknown packet type 'syn'"),
            ("to-client:data:0:drop", "'0' is not a number from 1"),
            ("to-client:data:1:explode", "unknown action 'explode'"),
            ("to-client:data:1:delay=soon", "'soon' is not a duration"),
        ] {
            let e = Fault::parse(text, d).unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn at_most_max_faults_per_direction() {
        let mut fs = Faults::default();
        let f = Fault::parse("to-server:any:1:drop", d).unwrap();
        for _ in 0..MAX_FAULTS {
            fs.push(f).unwrap();
        }
        assert!(fs.push(f).unwrap_err().contains("more than 16"));
    }
}
