//! An endpoint's capture (`udpft --pcap`, `udpftd --pcap`): every datagram the
//! endpoint sent or received, from its own point of view, written as pcapng by
//! [`crate::pcapng`] with the real addresses and ports and a comment per packet.
//!
//! The drivers call [`Tap::sent`] after each datagram the socket accepted and
//! [`Tap::received`] for each datagram read, and nothing else: what a datagram was
//! (first copy, resend, duplicate, dropped) the tap works out from its bytes:
//!
//! - received: `received`; `received again` when a packet of that session, type and
//!   number (or an older number) came before, which is what the engine counts as a
//!   duplicate or a stale acknowledgement; `received, dropped: bad checksum` (or the
//!   other reason of PROTOCOL.md §6) when it fails the checks.
//! - sent: `sent`; a packet sent again is `resent (timeout)` when it is one only a
//!   retransmission timer repeats (REQUEST, DATA, DONE, and the ACCEPT of a get or
//!   list, which waits for ACK 0), and `sent again (answers a duplicate)` otherwise
//!   (an ACK, the ACCEPT of a put, delete or exit, an ERROR), as the engine's rules
//!   (PROTOCOL.md §5) have it.
//!
//! Only the highest number per (peer, session, packet type) is remembered, so memory
//! stays small whatever the transfer's length; past [`MAX_FLOWS`] flows the memory
//! is cleared (the first repeat after that is then written as a first copy).

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use crate::pcapng::{LinkType, PcapWriter};
use crate::wire::{Datagram, Kind, Message, Op, WireError};

/// How many (peer, session, type) flows a tap remembers before it starts afresh.
pub const MAX_FLOWS: usize = 65_536;

/// What a tap wrote, by comment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TapCounts {
    /// First copies sent.
    pub sent: u64,
    /// Packets resent on a timeout.
    pub resent: u64,
    /// Packets sent again to answer a duplicate.
    pub sent_again: u64,
    /// New packets received.
    pub received: u64,
    /// Packets received again (duplicates, stale acknowledgements).
    pub received_again: u64,
    /// Received datagrams that failed the checks and were dropped unread.
    pub dropped: u64,
}

type Flow = (SocketAddr, u64, u8);

/// Writes an endpoint's capture. See the module documentation.
pub struct Tap {
    out: PcapWriter<Box<dyn Write + Send>>,
    /// A wall-clock time and the monotonic instant it was read at, for timestamps.
    epoch: (Instant, Duration),
    /// For a wildcard local address: the address the OS sends from towards each peer.
    routes: HashMap<IpAddr, IpAddr>,
    sent: HashMap<Flow, u64>,
    received: HashMap<Flow, u64>,
    counts: TapCounts,
    error: Option<io::Error>,
}

impl Tap {
    /// A capture into `out`; `name` names the capture's interface (`udpft`,
    /// `udpftd 0.0.0.0:6969`).
    pub fn new(out: Box<dyn Write + Send>, name: &str) -> io::Result<Tap> {
        Ok(Tap {
            out: PcapWriter::new(out, LinkType::RawIp, name)?,
            epoch: (
                Instant::now(),
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default(),
            ),
            routes: HashMap::new(),
            sent: HashMap::new(),
            received: HashMap::new(),
            counts: TapCounts::default(),
            error: None,
        })
    }

    /// A capture into a new file at `path` (replacing one that exists), buffered. The
    /// error names the path.
    pub fn create(path: &std::path::Path, name: &str) -> io::Result<Tap> {
        let err = |e: io::Error| {
            io::Error::new(
                e.kind(),
                format!("cannot write the capture '{}': {e}", path.display()),
            )
        };
        let file = std::fs::File::create(path).map_err(err)?;
        Tap::new(Box::new(io::BufWriter::new(file)), name).map_err(err)
    }

    /// Records `bytes`, sent at `at` from the socket bound to `local` (a wildcard
    /// address is replaced by the one the OS sends from towards `peer`) to `peer`.
    pub fn sent(&mut self, at: Instant, local: SocketAddr, peer: SocketAddr, bytes: &[u8]) {
        let comment = match Datagram::parse(bytes) {
            Ok(d) => {
                // Only a retransmission timer repeats these (PROTOCOL.md §5).
                let timer_only = match d.message {
                    Message::Request(_) | Message::Data(_) | Message::Done { .. } => true,
                    Message::Accept(a) => matches!(a.op, Op::Get | Op::List),
                    _ => false,
                };
                if !remember(&mut self.sent, peer, &d) {
                    self.counts.sent += 1;
                    "sent"
                } else if timer_only {
                    self.counts.resent += 1;
                    "resent (timeout)"
                } else {
                    self.counts.sent_again += 1;
                    "sent again (answers a duplicate)"
                }
            }
            // Never from udpft's own engine; written as it went.
            Err(_) => {
                self.counts.sent += 1;
                "sent (not a valid udpft datagram)"
            }
        };
        let local = self.local_towards(local, peer);
        self.write(at, local, peer, bytes, comment);
    }

    /// Records `bytes`, received at `at` from `peer` on the socket bound to `local`.
    pub fn received(&mut self, at: Instant, peer: SocketAddr, local: SocketAddr, bytes: &[u8]) {
        let comment = match Datagram::parse(bytes) {
            Ok(d) => {
                if remember(&mut self.received, peer, &d) {
                    self.counts.received_again += 1;
                    "received again".to_string()
                } else {
                    self.counts.received += 1;
                    "received".to_string()
                }
            }
            Err(e) => {
                self.counts.dropped += 1;
                match e {
                    WireError::BadChecksum => "received, dropped: bad checksum".to_string(),
                    e => format!("received, dropped: {e}"),
                }
            }
        };
        let local = self.local_towards(local, peer);
        self.write(at, peer, local, bytes, &comment);
    }

    /// What was written so far, by comment.
    pub fn counts(&self) -> TapCounts {
        self.counts
    }

    /// Writes out what is buffered. A write error is kept for [`Tap::finish`].
    pub fn flush(&mut self) {
        if let Err(e) = self.out.flush() {
            self.error.get_or_insert(e);
        }
    }

    /// Flushes, and reports the first write error the capture met, if any.
    pub fn finish(mut self) -> io::Result<TapCounts> {
        self.flush();
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.counts),
        }
    }

    fn local_towards(&mut self, local: SocketAddr, peer: SocketAddr) -> SocketAddr {
        if !local.ip().is_unspecified() {
            return local;
        }
        let fallback = local.ip();
        let ip = *self
            .routes
            .entry(peer.ip())
            .or_insert_with(|| super::relay::route_from(peer.ip(), fallback));
        SocketAddr::new(ip, local.port())
    }

    fn write(&mut self, at: Instant, src: SocketAddr, dst: SocketAddr, b: &[u8], what: &str) {
        if self.error.is_some() {
            return;
        }
        let t = self.epoch.1 + at.saturating_duration_since(self.epoch.0);
        if let Err(e) = self.out.udp(t, src, dst, b, what) {
            self.error = Some(e);
        }
    }
}

/// Notes `d`'s number for its flow; true if that number, or a later one, was seen.
fn remember(seen: &mut HashMap<Flow, u64>, peer: SocketAddr, d: &Datagram) -> bool {
    if seen.len() >= MAX_FLOWS {
        seen.clear();
    }
    let kind: Kind = d.kind();
    // A REQUEST that echoes a RETRY's token is the next step of the handshake, not a
    // repeat of the one without: count it as a flow of its own.
    let class = match d.message {
        Message::Request(r) if r.token.is_some() => 0x80 | kind as u8,
        _ => kind as u8,
    };
    match seen.entry((peer, d.session, class)) {
        std::collections::hash_map::Entry::Occupied(mut e) => {
            let repeat = d.seq <= *e.get();
            if !repeat {
                e.insert(d.seq);
            }
            repeat
        }
        std::collections::hash_map::Entry::Vacant(v) => {
            v.insert(d.seq);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Accept;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn encode(session: u64, seq: u64, message: Message) -> Vec<u8> {
        let d = Datagram {
            session,
            seq,
            message,
        };
        let mut b = vec![0; d.wire_len()];
        d.emit(&mut b).unwrap();
        b
    }

    /// The comments of the packets in a capture, in order.
    fn comments(bytes: &[u8]) -> Vec<String> {
        let le32 = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        let mut at = 0;
        let mut out = Vec::new();
        while at < bytes.len() {
            let (kind, len) = (le32(at), le32(at + 4) as usize);
            if kind == 6 {
                let caplen = le32(at + 20) as usize;
                let opt = at + 28 + caplen.div_ceil(4) * 4;
                let n = u16::from_le_bytes([bytes[opt + 2], bytes[opt + 3]]) as usize;
                out.push(String::from_utf8(bytes[opt + 4..opt + 4 + n].to_vec()).unwrap());
            }
            at += len;
        }
        out
    }

    #[test]
    fn each_datagram_is_told_for_what_it_was() {
        let buf = Shared::default();
        let local: SocketAddr = "127.0.0.1:6969".parse().unwrap();
        let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let mut t = Tap::new(Box::new(buf.clone()), "udpftd").unwrap();
        let now = Instant::now();
        let accept = |op| {
            Message::Accept(Accept {
                nonce: 9,
                op,
                block_size: 512,
                size: 3,
                window: 1,
            })
        };
        let data = encode(7, 1, Message::Data(b"abc"));
        let ack = encode(7, 1, Message::Ack);
        t.sent(now, local, peer, &encode(7, 0, accept(Op::Get)));
        t.sent(now, local, peer, &encode(7, 0, accept(Op::Get)));
        t.received(now, peer, local, &encode(7, 0, Message::Ack));
        t.sent(now, local, peer, &data);
        t.sent(now, local, peer, &data);
        t.received(now, peer, local, &ack);
        t.received(now, peer, local, &ack);
        t.received(now, peer, local, &encode(7, 0, Message::Ack));
        let mut bad = ack.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        t.received(now, peer, local, &bad);
        t.received(now, peer, local, b"junk");
        // A put's ACCEPT and an ACK repeat because a duplicate came, not a timer.
        t.sent(now, local, peer, &encode(8, 0, accept(Op::Put)));
        t.sent(now, local, peer, &encode(8, 0, accept(Op::Put)));
        t.sent(now, local, peer, &encode(8, 1, Message::Ack));
        t.sent(now, local, peer, &encode(8, 1, Message::Ack));
        let counts = t.finish().unwrap();
        assert_eq!(
            counts,
            TapCounts {
                sent: 4,
                resent: 2,
                sent_again: 2,
                received: 2,
                received_again: 2,
                dropped: 2,
            }
        );
        let c = comments(&buf.0.lock().unwrap());
        assert_eq!(
            c,
            [
                "sent",
                "resent (timeout)",
                "received",
                "sent",
                "resent (timeout)",
                "received",
                "received again",
                "received again",
                "received, dropped: bad checksum",
                "received, dropped: datagram too short (4 bytes)",
                "sent",
                "sent again (answers a duplicate)",
                "sent",
                "sent again (answers a duplicate)",
            ]
        );
    }

    #[test]
    fn a_wildcard_address_becomes_the_one_the_os_sends_from() {
        let buf = Shared::default();
        let local: SocketAddr = "0.0.0.0:6969".parse().unwrap();
        let mut t = Tap::new(Box::new(buf), "udpftd").unwrap();
        let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        assert_eq!(
            t.local_towards(local, peer),
            "127.0.0.1:6969".parse().unwrap()
        );
    }
}
