//! Time-sequence diagrams of a transfer, as textbooks draw them: a column per
//! endpoint, an arrow per datagram, a cross where one was lost, the timeouts marked
//! with the retransmission timer's arithmetic. Rendered for the terminal
//! ([`Diagram::terminal`]) and as Mermaid `sequenceDiagram` text for documents
//! ([`Diagram::mermaid`]).
//!
//! Pure: it is built from a trace (engine [`Event`]s with their times, from both
//! endpoints, and what the link did to each datagram), never from a clock or a
//! socket. [`Diagram::from_sim`] takes them from a simulated run.

use std::fmt::Write as _;
use std::time::Duration;

use crate::engine::Event;
use crate::link::{Fate, Way, ms};
use crate::rto::{RtoConfig, RtoEstimator};
use crate::sim::SimOutcome;
use crate::wire::Kind;

/// The two columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Server => "server",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One line of the diagram.
#[derive(Debug, Clone, PartialEq)]
pub enum Row {
    /// A datagram: sent at `at` the way `way`, arriving at `arrive` (`None`: lost).
    Packet {
        at: Duration,
        way: Way,
        label: String,
        arrive: Option<Duration>,
        /// What the link did to it, if anything worth saying.
        note: String,
    },
    /// Something an endpoint did or noticed; `timeout` marks a retransmission timeout.
    Note {
        at: Duration,
        side: Side,
        text: String,
        timeout: bool,
    },
}

impl Row {
    fn at(&self) -> Duration {
        match self {
            Row::Packet { at, .. } | Row::Note { at, .. } => *at,
        }
    }
}

/// A transfer drawn as a time-sequence diagram.
#[derive(Debug, Clone, Default)]
pub struct Diagram {
    pub rows: Vec<Row>,
    /// Timeouts whose length the replayed estimator did not predict (0 when the
    /// arithmetic shown is the engine's own).
    pub unexplained_timeouts: usize,
}

/// The upper-case packet name of a textbook figure: `DATA #3`.
pub fn packet_label(kind: Kind, seq: u64) -> String {
    let name = match kind {
        Kind::Request => "REQUEST",
        Kind::Accept => "ACCEPT",
        Kind::Data => "DATA",
        Kind::Ack => "ACK",
        Kind::Done => "DONE",
        Kind::Error => "ERROR",
        Kind::Retry => "RETRY",
        Kind::Wait => "WAIT",
    };
    format!("{name} #{seq}")
}

/// Milliseconds with two decimals and no unit, for the arithmetic.
fn num(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

/// How a retransmission timeout came about, in the words of RFC 6298.
pub fn rto_arithmetic(e: &RtoEstimator, backoffs: u32) -> String {
    let rto = e.rto();
    let Some(srtt) = e.srtt() else {
        return if backoffs == 0 {
            format!(
                "RTO {} (the initial value: no round trip measured yet)",
                ms(rto)
            )
        } else {
            format!("RTO {} (the initial value doubled {backoffs}×)", ms(rto))
        };
    };
    let raw = srtt + e.rttvar() * 4;
    let formula = format!("SRTT {} + 4 × RTTVAR {}", num(srtt), num(e.rttvar()));
    if backoffs > 0 {
        format!(
            "RTO {} = ({formula}) doubled {backoffs}×, after a timeout",
            ms(rto)
        )
    } else if raw == rto {
        format!("RTO {} = {formula}", ms(rto))
    } else {
        format!("RTO {} ({formula} = {}, clamped)", ms(rto), num(raw))
    }
}

/// Replays one side's retransmission timer from its events, to show its arithmetic.
struct Timer {
    est: RtoEstimator,
    backoffs: u32,
    last_sent: Duration,
}

impl Diagram {
    /// The diagram of a simulated run (which must have been traced: `trace: true` in
    /// the client's or server's config). `client` and `server` are the RTO settings of
    /// each side, for the arithmetic.
    pub fn from_sim(out: &SimOutcome, client: RtoConfig, server: RtoConfig) -> Diagram {
        let mut d = Diagram::default();
        for e in &out.link_log {
            d.packet(e.at, e.way, &e.fate);
        }
        let mut timers = [client, server].map(|c| Timer {
            est: RtoEstimator::new(c),
            backoffs: 0,
            last_sent: Duration::ZERO,
        });
        for (at, side, event) in &out.events {
            let side = if *side == "client" {
                Side::Client
            } else {
                Side::Server
            };
            d.event(*at, side, event, &mut timers[side.index()]);
        }
        // At equal times, what an endpoint noticed (a timeout, a sample) comes before
        // the datagram it then sent.
        d.rows
            .sort_by_key(|r| (r.at(), matches!(r, Row::Packet { .. })));
        d
    }

    fn packet(&mut self, at: Duration, way: Way, fate: &Fate) {
        let label = fate
            .packet
            .map_or("datagram".to_string(), |(k, s)| packet_label(k, s));
        if fate.is_lost() {
            self.rows.push(Row::Packet {
                at,
                way,
                label,
                arrive: None,
                note: fate.to_string(),
            });
            return;
        }
        let copies: Vec<_> = fate.deliveries().collect();
        for (i, c) in copies.iter().enumerate() {
            let note = if fate.fault.is_some() && i == 0 {
                fate.to_string()
            } else if let Some(bits) = c.corruption {
                bits.to_string()
            } else if c.reordered {
                "held back: later datagrams overtake it".to_string()
            } else if copies.len() == 2 {
                format!("duplicated (copy {})", i + 1)
            } else {
                String::new()
            };
            self.rows.push(Row::Packet {
                at,
                way,
                label: label.clone(),
                arrive: Some(at + c.after),
                note,
            });
        }
    }

    fn event(&mut self, at: Duration, side: Side, e: &Event, t: &mut Timer) {
        let note = |text: String, timeout: bool| Row::Note {
            at,
            side,
            text,
            timeout,
        };
        match e {
            Event::Sent { .. } => t.last_sent = at,
            Event::Resent {
                kind, seq, after, ..
            } => {
                if *after != t.est.rto() {
                    self.unexplained_timeouts += 1;
                }
                let why = rto_arithmetic(&t.est, t.backoffs);
                t.est.back_off();
                t.backoffs += 1;
                t.last_sent = at;
                self.rows.push(note(
                    format!(
                        "timeout: {why}; {} resent, next RTO {}",
                        packet_label(*kind, *seq),
                        ms(t.est.rto())
                    ),
                    true,
                ));
            }
            Event::Acked { rtt: Some(r), .. }
            | Event::Retried { rtt: Some(r) }
            | Event::Waiting { rtt: Some(r), .. } => {
                t.est.sample(*r);
                t.backoffs = 0;
                self.rows.push(note(
                    format!(
                        "round trip {} sampled: {}",
                        ms(*r),
                        rto_arithmetic(&t.est, 0)
                    ),
                    false,
                ));
            }
            Event::Acked { rtt: None, .. } | Event::Retried { rtt: None } => {
                let before = t.est.rto();
                t.est
                    .acknowledged_after_resend(at.saturating_sub(t.last_sent));
                let text = if t.est.rto() != before {
                    t.backoffs = 0;
                    format!(
                        "answer to a resent packet: no sample (Karn); back to {}",
                        rto_arithmetic(&t.est, 0)
                    )
                } else {
                    format!(
                        "answer to a resent packet: no sample (Karn); RTO stays {}",
                        ms(t.est.rto())
                    )
                };
                self.rows.push(note(text, false));
            }
            Event::Received { .. } => {}
            other => self.rows.push(note(other.to_string(), false)),
        }
    }

    /// The diagram for a terminal: two columns, time running down, an arrow per
    /// datagram (`✕` where it was lost), `⏱` at a timeout.
    pub fn terminal(&self) -> String {
        const W: usize = 40;
        let mut s = String::new();
        let _ = writeln!(s, "{:>9}   client{}server   ms", "ms", " ".repeat(W - 12));
        let t = |d: Duration| format!("{:.3}", d.as_secs_f64() * 1e3);
        for row in &self.rows {
            match row {
                Row::Packet {
                    at,
                    way,
                    label,
                    arrive,
                    note,
                } => {
                    let text = format!(" {label} ");
                    let body = match (way, arrive) {
                        (Way::ClientToServer, Some(_)) => {
                            format!("──{text}{}►", "─".repeat(W - 3 - text.chars().count()))
                        }
                        (Way::ClientToServer, None) => {
                            let run = (W / 2).max(text.chars().count() + 3);
                            format!(
                                "──{text}{}✕{}",
                                "─".repeat(run - 3 - text.chars().count()),
                                " ".repeat(W - run)
                            )
                        }
                        (Way::ServerToClient, Some(_)) => {
                            format!("◄{}{text}──", "─".repeat(W - 3 - text.chars().count()))
                        }
                        (Way::ServerToClient, None) => {
                            let run = (W / 2).max(text.chars().count() + 3);
                            format!(
                                "{}✕{}{text}──",
                                " ".repeat(W - run),
                                "─".repeat(run - 3 - text.chars().count())
                            )
                        }
                    };
                    let (left, right) = match way {
                        Way::ClientToServer => (t(*at), arrive.map_or(String::new(), t)),
                        Way::ServerToClient => (arrive.map_or(String::new(), t), t(*at)),
                    };
                    let _ = writeln!(s, "{left:>9}  │{body}│  {right:<9} {note}").map(|_| ());
                }
                Row::Note {
                    at,
                    side,
                    text,
                    timeout,
                } => {
                    let mark = if *timeout { "⏱" } else { "·" };
                    let lane = match side {
                        Side::Client => format!("{mark}{}", " ".repeat(W - 1)),
                        Side::Server => format!("{}{mark}", " ".repeat(W - 1)),
                    };
                    let (left, right) = match side {
                        Side::Client => (t(*at), String::new()),
                        Side::Server => (String::new(), t(*at)),
                    };
                    let _ = writeln!(s, "{left:>9}  │{lane}│  {right:<9} {}: {text}", side.name());
                }
            }
        }
        // Trailing spaces carry no meaning; strip them so the text diffs cleanly.
        s.lines().map(|l| l.trim_end().to_string() + "\n").collect()
    }

    /// The diagram as Mermaid `sequenceDiagram` text.
    pub fn mermaid(&self) -> String {
        // Mermaid reads `;` as a statement end and `#` as an entity: keep them out.
        let clean = |s: &str| s.replace(';', ",").replace('#', "");
        let t = |d: Duration| format!("{:.3} ms", d.as_secs_f64() * 1e3);
        let mut s = String::from(
            "sequenceDiagram\n    participant C as client\n    participant S as server\n",
        );
        for row in &self.rows {
            match row {
                Row::Packet {
                    at,
                    way,
                    label,
                    arrive,
                    note,
                } => {
                    let (a, b) = match way {
                        Way::ClientToServer => ("C", "S"),
                        Way::ServerToClient => ("S", "C"),
                    };
                    let arrow = if arrive.is_some() { "->>" } else { "-x" };
                    let mut text = format!("{} at {}", clean(label), t(*at));
                    if !note.is_empty() {
                        text += &format!(" ({})", clean(note));
                    }
                    let _ = writeln!(s, "    {a}{arrow}{b}: {text}");
                }
                Row::Note { at, side, text, .. } => {
                    let who = match side {
                        Side::Client => "C",
                        Side::Server => "S",
                    };
                    let _ = writeln!(s, "    Note over {who}: {} {}", t(*at), clean(text));
                }
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_follows_rfc_6298() {
        let mut e = RtoEstimator::new(RtoConfig::default());
        assert_eq!(
            rto_arithmetic(&e, 0),
            "RTO 10.0 ms (the initial value: no round trip measured yet)"
        );
        e.sample(Duration::from_micros(600));
        assert_eq!(
            rto_arithmetic(&e, 0),
            "RTO 1.80 ms = SRTT 0.60 + 4 × RTTVAR 0.30"
        );
        e.back_off();
        assert_eq!(
            rto_arithmetic(&e, 1),
            "RTO 3.60 ms = (SRTT 0.60 + 4 × RTTVAR 0.30) doubled 1×, after a timeout"
        );
    }

    #[test]
    fn lost_and_delivered_arrows_point_the_right_way() {
        let d = Diagram {
            rows: vec![
                Row::Packet {
                    at: Duration::ZERO,
                    way: Way::ClientToServer,
                    label: "REQUEST #0".into(),
                    arrive: Some(Duration::from_micros(100)),
                    note: String::new(),
                },
                Row::Packet {
                    at: Duration::from_micros(100),
                    way: Way::ServerToClient,
                    label: "DATA #1".into(),
                    arrive: None,
                    note: "dropped".into(),
                },
                Row::Note {
                    at: Duration::from_micros(600),
                    side: Side::Server,
                    text: "timeout".into(),
                    timeout: true,
                },
            ],
            unexplained_timeouts: 0,
        };
        let t = d.terminal();
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[1].contains("── REQUEST #0 ─") && lines[1].contains("►│  0.100"));
        assert!(lines[2].contains("✕") && lines[2].contains(" DATA #1 ──│  0.100     dropped"));
        assert!(lines[3].ends_with("⏱│  0.600     server: timeout"));
        let m = d.mermaid();
        assert!(m.contains("    C->>S: REQUEST 0 at 0.000 ms\n"));
        assert!(m.contains("    S-xC: DATA 1 at 0.100 ms (dropped)\n"));
        assert!(m.contains("    Note over S: 0.600 ms timeout\n"));
    }
}
