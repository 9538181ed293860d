//! Time-sequence diagrams of a transfer, as textbooks draw them: a column per
//! endpoint, an arrow per datagram, a cross where one was lost, the timeouts marked
//! with the retransmission timer's arithmetic. Rendered for the terminal
//! ([`Diagram::terminal`]) and as Mermaid `sequenceDiagram` text for documents
//! ([`Diagram::mermaid`]).
//!
//! Pure: it is built from a trace (engine [`Event`]s with their times, from both
//! endpoints, and what the link did to each datagram), never from a clock or a
//! socket. [`Diagram::from_sim`] takes them from a simulated run, where everything is
//! known; [`Diagram::from_trace`] from one endpoint's own trace (`udpft --diagram`),
//! which shows only what that endpoint sent, received and timed out on.

use std::fmt::Write as _;
use std::time::Duration;

use crate::engine::Event;
use crate::engine::Kind;
use crate::link::{Fate, Way, ms};
use crate::rto::{RtoConfig, RtoEstimator};
use crate::sim::SimOutcome;
use crate::wire::Op;

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
    /// A datagram as one endpoint saw it, at `at` on that endpoint's clock: sent by
    /// `side` (when `way` leads away from it) or received. The other end's time is not
    /// known. `lost`: sent, and resent on a timeout before anything answered it (the
    /// datagram was lost, or its answer was: the sender cannot tell which).
    Seen {
        at: Duration,
        side: Side,
        way: Way,
        label: String,
        lost: bool,
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
            Row::Packet { at, .. } | Row::Seen { at, .. } | Row::Note { at, .. } => *at,
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
        Kind::End => "DONE",
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

    /// The diagram of one session as the client saw it, from its trace (`events`, each
    /// with its time since the session started, in order): the datagrams it sent and
    /// received, its timeouts with the timer's arithmetic (`rto`: its settings), and
    /// a cross on each datagram it had to resend. `op` tells whether the client
    /// acknowledged the ACCEPT (get, list), which its trace does not say.
    pub fn from_trace(events: &[(Duration, Event)], op: Op, rto: RtoConfig) -> Diagram {
        let side = Side::Client;
        let mut d = Diagram::default();
        let mut timer = Timer {
            est: RtoEstimator::new(rto),
            backoffs: 0,
            last_sent: Duration::ZERO,
        };
        // The row of the latest copy of the packet waiting for an answer.
        let mut outstanding: Option<(Kind, u64, usize)> = None;
        let mut last_data = 0;
        for (at, e) in events {
            let at = *at;
            let seen = |d: &mut Diagram, sent: bool, label: String, note: &str| {
                let way = match (side, sent) {
                    (Side::Client, true) | (Side::Server, false) => Way::ClientToServer,
                    _ => Way::ServerToClient,
                };
                d.rows.push(Row::Seen {
                    at,
                    side,
                    way,
                    label,
                    lost: false,
                    note: note.to_string(),
                });
                d.rows.len() - 1
            };
            match e {
                Event::Sent { kind, seq, .. } => {
                    let i = seen(&mut d, true, packet_label(*kind, *seq), "");
                    outstanding = Some((*kind, *seq, i));
                    d.event(at, side, e, &mut timer);
                }
                Event::Resent { kind, seq, .. } => {
                    if let Some((k, s, i)) = outstanding
                        && (k, s) == (*kind, *seq)
                        && let Row::Seen { lost, note, .. } = &mut d.rows[i]
                    {
                        *lost = true;
                        *note = match note.as_str() {
                            "" => "no answer before the timeout".into(),
                            n => format!("{n}, no answer before the timeout"),
                        };
                    }
                    d.event(at, side, e, &mut timer);
                    let i = seen(&mut d, true, packet_label(*kind, *seq), "resent");
                    outstanding = Some((*kind, *seq, i));
                }
                Event::Acked { kind, seq, .. } => {
                    let label = match kind {
                        Kind::Request => packet_label(Kind::Accept, 0),
                        _ => packet_label(Kind::Ack, *seq),
                    };
                    seen(&mut d, false, label, "");
                    outstanding = None;
                    d.event(at, side, e, &mut timer);
                    if *kind == Kind::Request && matches!(op, Op::Get | Op::List) {
                        seen(&mut d, true, packet_label(Kind::Ack, 0), "");
                    }
                }
                Event::Received { kind, seq, .. } => {
                    if *kind == Kind::Data {
                        last_data = *seq;
                    }
                    seen(&mut d, false, packet_label(*kind, *seq), "");
                    seen(&mut d, true, packet_label(Kind::Ack, *seq), "");
                }
                // A window above 1: what arrived, without a figure's one-ack-per-block.
                Event::Delivered { seq, .. } => {
                    last_data = *seq;
                    seen(&mut d, false, packet_label(Kind::Data, *seq), "");
                }
                Event::Ahead { seq, .. } => {
                    seen(&mut d, false, packet_label(Kind::Data, *seq), "ahead");
                    d.event(at, side, e, &mut timer);
                }
                Event::Repaired { kind, seq, .. } => {
                    d.event(at, side, e, &mut timer);
                    seen(&mut d, true, packet_label(*kind, *seq), "repaired");
                }
                Event::Duplicate { kind, seq } => {
                    seen(&mut d, false, packet_label(*kind, *seq), "again");
                    d.event(at, side, e, &mut timer);
                    seen(&mut d, true, packet_label(Kind::Ack, *seq), "again");
                }
                Event::Deferred { seq } => {
                    seen(&mut d, false, packet_label(Kind::Data, *seq), "not taken");
                    d.event(at, side, e, &mut timer);
                }
                Event::Stale { kind, seq } => {
                    seen(&mut d, false, packet_label(*kind, *seq), "stale");
                    d.event(at, side, e, &mut timer);
                }
                Event::Dropped(_) | Event::Foreign => {
                    seen(&mut d, false, "datagram".into(), "dropped");
                    d.event(at, side, e, &mut timer);
                }
                Event::Verified { .. } => {
                    let seq = last_data + 1;
                    seen(&mut d, false, packet_label(Kind::End, seq), "");
                    d.event(at, side, e, &mut timer);
                    seen(&mut d, true, packet_label(Kind::Ack, seq), "");
                }
                // TFTP's end (a short block): already drawn as received and acked.
                Event::LastBlock { .. } => d.event(at, side, e, &mut timer),
                Event::Retried { .. } => {
                    seen(&mut d, false, packet_label(Kind::Retry, 0), "address check");
                    outstanding = None;
                    d.event(at, side, e, &mut timer);
                }
                Event::Waiting { seq, .. } => {
                    seen(&mut d, false, packet_label(Kind::Wait, *seq), "storing");
                    outstanding = None;
                    d.event(at, side, e, &mut timer);
                }
                Event::Stored { seq } => {
                    seen(&mut d, false, packet_label(Kind::Ack, *seq), "stored");
                    d.event(at, side, e, &mut timer);
                }
                Event::Storing { seq } => {
                    seen(&mut d, true, packet_label(Kind::Wait, *seq), "");
                    d.event(at, side, e, &mut timer);
                }
                Event::RetrySent | Event::Failed(_) => d.event(at, side, e, &mut timer),
            }
        }
        d
    }

    fn packet(&mut self, at: Duration, way: Way, fate: &Fate) {
        let label = fate
            .packet
            .map_or("datagram".to_string(), |(k, s)| packet_label(k.into(), s));
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
                    let body = arrow(W, *way, label, arrive.is_none());
                    let (left, right) = match way {
                        Way::ClientToServer => (t(*at), arrive.map_or(String::new(), t)),
                        Way::ServerToClient => (arrive.map_or(String::new(), t), t(*at)),
                    };
                    let _ = writeln!(s, "{left:>9}  │{body}│  {right:<9} {note}").map(|_| ());
                }
                Row::Seen {
                    at,
                    side,
                    way,
                    label,
                    lost,
                    note,
                } => {
                    let body = arrow(W, *way, label, *lost);
                    let (left, right) = match side {
                        Side::Client => (t(*at), String::new()),
                        Side::Server => (String::new(), t(*at)),
                    };
                    let _ = writeln!(s, "{left:>9}  │{body}│  {right:<9} {note}");
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
                Row::Seen {
                    at,
                    side,
                    way,
                    label,
                    lost,
                    note,
                } => {
                    let (a, b) = match way {
                        Way::ClientToServer => ("C", "S"),
                        Way::ServerToClient => ("S", "C"),
                    };
                    let arrow = if *lost { "-x" } else { "->>" };
                    let what = match (side, way) {
                        (Side::Client, Way::ClientToServer)
                        | (Side::Server, Way::ServerToClient) => "sent",
                        _ => "received",
                    };
                    let mut text = format!("{} {what} at {}", clean(label), t(*at));
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

/// The middle of a diagram line, `w` wide: an arrow carrying `label` the way `way`,
/// ending in `✕` halfway when `lost`.
fn arrow(w: usize, way: Way, label: &str, lost: bool) -> String {
    let text = format!(" {label} ");
    let n = text.chars().count();
    let run = (w / 2).max(n + 3);
    match (way, lost) {
        (Way::ClientToServer, false) => {
            format!("──{text}{}►", "─".repeat((w - 3).saturating_sub(n)))
        }
        (Way::ClientToServer, true) => {
            format!(
                "──{text}{}✕{}",
                "─".repeat((run - 3).saturating_sub(n)),
                " ".repeat(w.saturating_sub(run))
            )
        }
        (Way::ServerToClient, false) => {
            format!("◄{}{text}──", "─".repeat((w - 3).saturating_sub(n)))
        }
        (Way::ServerToClient, true) => {
            format!(
                "{}✕{}{text}──",
                " ".repeat(w.saturating_sub(run)),
                "─".repeat((run - 3).saturating_sub(n))
            )
        }
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

    #[test]
    fn a_client_trace_shows_its_lost_datagram_and_its_timeout() {
        let ms = Duration::from_millis;
        let ev = vec![
            (
                ms(0),
                Event::Sent {
                    kind: Kind::Request,
                    seq: 0,
                    len: 10,
                },
            ),
            (
                ms(1),
                Event::Acked {
                    kind: Kind::Request,
                    seq: 0,
                    rtt: Some(ms(1)),
                },
            ),
            (
                ms(1),
                Event::Sent {
                    kind: Kind::Data,
                    seq: 1,
                    len: 100,
                },
            ),
            (
                ms(4),
                Event::Resent {
                    kind: Kind::Data,
                    seq: 1,
                    len: 100,
                    after: ms(3),
                },
            ),
            (
                ms(5),
                Event::Acked {
                    kind: Kind::Data,
                    seq: 1,
                    rtt: None,
                },
            ),
        ];
        let d = Diagram::from_trace(&ev, Op::Put, RtoConfig::default());
        let t = d.terminal();
        let lines: Vec<&str> = t.lines().collect();
        assert!(
            lines[1].contains("── REQUEST #0 ─") && lines[1].contains("►│"),
            "{t}"
        );
        assert!(
            lines[2].contains("◄─") && lines[2].contains(" ACCEPT #0 ──│"),
            "{t}"
        );
        assert!(lines[3].contains("round trip 1.00 ms sampled"), "{t}");
        assert!(
            lines[4].contains("── DATA #1 ─")
                && lines[4].contains("✕")
                && lines[4].ends_with("no answer before the timeout"),
            "{t}"
        );
        assert!(
            lines[5].contains("⏱") && lines[5].contains("DATA #1 resent"),
            "{t}"
        );
        assert!(
            lines[6].contains("►│") && lines[6].ends_with("resent"),
            "{t}"
        );
        assert!(lines[7].contains(" ACK #1 ──│"), "{t}");
        // A put's client sends no ACK 0; a get's does.
        assert!(!t.contains("ACK #0"));
        let g = Diagram::from_trace(&ev[..2], Op::Get, RtoConfig::default());
        assert!(g.terminal().contains("── ACK #0 ─"));
        let m = d.mermaid();
        assert!(
            m.contains("    C-xS: DATA 1 sent at 1.000 ms (no answer before the timeout)\n"),
            "{m}"
        );
        assert!(
            m.contains("    C->>S: DATA 1 sent at 4.000 ms (resent)\n"),
            "{m}"
        );
        assert!(m.contains("    S->>C: ACK 1 received at 5.000 ms\n"), "{m}");
    }
}
