//! The sending half of a stop-and-wait stream (PROTOCOL.md §4.1).

use std::collections::VecDeque;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::retransmit::{Expiry, Outstanding};
use super::{Config, Event, Stats, Status, TransferError};
use crate::rto::RtoEstimator;
use crate::wire::{self, Accept, Datagram, HEADER_LEN, Kind, Message, OVERHEAD, Seq, SessionId};

/// A receiver that keeps answering WAIT is given up on after this many give-up times.
const MAX_WAIT_FACTOR: u32 = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Sending the server's ACCEPT of a get as packet 0, waiting for ack 0.
    Opening,
    /// Sending DATA `out.seq`, waiting for its ack.
    Data,
    /// Sending DONE, waiting for its ack.
    Done,
    /// The receiver answered DONE with WAIT (it is storing the data): DONE is not
    /// resent on the timer, only sent once at each `probe_at` (one RTO ceiling after
    /// the last WAIT or probe); the wait is abandoned at `until`, or once the receiver
    /// has said nothing for the give-up time.
    Waiting { probe_at: Instant, until: Instant },
    /// Block `seq` is not read yet: the source said it would block (a read-ahead on an
    /// IO worker is under way). Nothing is sent until [`Sender::source_ready`].
    Starved { seq: Seq },
    /// DONE acknowledged, or failed: nothing more to do once the last ERROR is out.
    Over,
}

/// Sends one stream: DATA 1, 2, … then DONE, each resent only on timeout until
/// acknowledged.
///
/// Guarantees: at most one unacknowledged packet at any time; an acknowledgement for
/// anything but the outstanding packet is ignored (never causes a send); memory is one
/// datagram buffer, whatever the stream's length.
pub struct Sender {
    session: SessionId,
    peer: SocketAddr,
    source: Box<dyn Read + Send>,
    cfg: Config,
    block: usize,
    /// The outstanding datagram, encoded; DATA is read straight into its payload.
    packet: Vec<u8>,
    out: Outstanding,
    phase: Phase,
    rto: RtoEstimator,
    /// The stream's length as announced (ACCEPT or REQUEST), or [`wire::UNKNOWN_SIZE`].
    announced: u64,
    length: u64,
    /// Bytes of the next block already in the packet buffer, read before the source
    /// would block.
    pending: usize,
    crc: crc32fast::Hasher,
    resend_after: Option<Duration>,
    /// When the last new acknowledgement came (or the sender started): the give-up
    /// time counts from here.
    last_progress: Option<Instant>,
    /// When waiting for a receiver that answered WAIT ends, set by its first WAIT: the
    /// probes and the WAITs that answer them do not move it.
    wait_until: Option<Instant>,
    /// An ERROR to send once, telling the peer why this side stopped.
    error_out: Option<usize>,
    status: Status,
    stats: Stats,
    events: VecDeque<Event>,
}

impl Sender {
    /// A sender for session `session` towards `peer`, reading from `source`, with
    /// `cfg.block_size` bytes per DATA. With `opening`, the first packet is that ACCEPT
    /// (the server's answer to a get or list), sent as packet 0 and acknowledged by ack 0;
    /// without, DATA 1 goes first (a put, after the client's handshake).
    pub fn new(
        session: SessionId,
        peer: SocketAddr,
        source: Box<dyn Read + Send>,
        cfg: Config,
        rto: RtoEstimator,
        opening: Option<Accept>,
    ) -> Sender {
        let block = cfg
            .block_size
            .clamp(wire::MIN_BLOCK_SIZE, wire::MAX_BLOCK_SIZE) as usize;
        let mut s = Sender {
            session,
            peer,
            source,
            cfg,
            block,
            // Room for a full block, and for the longest ERROR when the block is small.
            packet: vec![0; OVERHEAD + block.max(2 + wire::MAX_MESSAGE_LEN)],
            out: Outstanding::new(Kind::Data, 0, 0),
            phase: Phase::Data,
            rto,
            announced: opening.map_or(wire::UNKNOWN_SIZE, |a| a.size),
            length: 0,
            pending: 0,
            crc: crc32fast::Hasher::new(),
            resend_after: None,
            last_progress: None,
            wait_until: None,
            error_out: None,
            status: Status::Running,
            stats: Stats::default(),
            events: VecDeque::new(),
        };
        match opening {
            Some(accept) => {
                let d = Datagram {
                    session,
                    seq: 0,
                    message: Message::Accept(accept),
                };
                let len = d
                    .emit(&mut s.packet)
                    .expect("an ACCEPT fits any block buffer");
                s.out = Outstanding::new(Kind::Accept, 0, len);
                s.phase = Phase::Opening;
            }
            None => s.load(1),
        }
        s
    }

    /// Holds the stream to `announced` bytes (what a put's REQUEST said): a source that
    /// turns out longer or shorter fails the transfer instead of sending another length.
    /// A get's or list's length is the one its ACCEPT announces.
    pub fn announce_length(&mut self, announced: u64) {
        self.announced = announced;
    }

    /// Reads the next block into the packet buffer, or prepares DONE at end of stream.
    /// A source that would block parks the sender ([`Phase::Starved`]) with what it
    /// gave so far kept in the buffer.
    fn load(&mut self, seq: Seq) {
        let from = HEADER_LEN + self.pending;
        let n = match fill(
            &mut self.source,
            &mut self.packet[from..HEADER_LEN + self.block],
        ) {
            (n, Ok(())) => self.pending + n,
            (n, Err(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                self.pending += n;
                self.phase = Phase::Starved { seq };
                return;
            }
            (_, Err(e)) => {
                return self.fail(TransferError::io("reading the file to send", &e), true);
            }
        };
        self.pending = 0;
        let known = self.announced != wire::UNKNOWN_SIZE;
        let got = self.length + n as u64;
        if known && (got > self.announced || (n == 0 && got != self.announced)) {
            let announced = self.announced;
            return self.fail(TransferError::Announced { announced, got }, true);
        }
        if n > 0 {
            self.crc.update(&self.packet[HEADER_LEN..HEADER_LEN + n]);
            self.length += n as u64;
            let len = wire::emit_data_in_place(&mut self.packet, self.session, seq, n);
            self.out = Outstanding::new(Kind::Data, seq, len);
            self.phase = Phase::Data;
        } else {
            let d = Datagram {
                session: self.session,
                seq,
                message: Message::Done {
                    length: self.length,
                    crc: self.crc.clone().finalize(),
                },
            };
            let len = d
                .emit(&mut self.packet)
                .expect("DONE fits any block buffer");
            self.out = Outstanding::new(Kind::Done, seq, len);
            self.phase = Phase::Done;
        }
    }

    fn fail(&mut self, e: TransferError, tell_peer: bool) {
        if matches!(self.status, Status::Failed(_)) {
            return;
        }
        if tell_peer {
            self.error_out = super::encode_error(self.session, self.out.seq, &e, &mut self.packet);
        }
        self.trace(Event::Failed(e.clone()));
        self.status = Status::Failed(e);
        self.phase = Phase::Over;
    }

    fn trace(&mut self, e: Event) {
        if self.cfg.trace {
            self.events.push_back(e);
        }
    }

    /// Feeds in one datagram of this session (already checked by [`Datagram::parse`]).
    pub fn handle(&mut self, now: Instant, d: &Datagram) {
        if self.phase == Phase::Over {
            return;
        }
        self.stats.received += 1;
        match d.message {
            // The ack of DONE after a WAIT: stored. No round-trip sample (it includes
            // the time the receiver took to store).
            Message::Ack
                if d.seq == self.out.seq && matches!(self.phase, Phase::Waiting { .. }) =>
            {
                self.last_progress = Some(now);
                self.trace(Event::Stored { seq: d.seq });
                self.phase = Phase::Over;
                self.status = Status::Closed;
            }
            // (While starved, the outstanding packet was already acknowledged: a copy
            // of that ack is stale, below.)
            Message::Ack
                if d.seq == self.out.seq
                    && self.out.transmitted()
                    && !matches!(self.phase, Phase::Starved { .. }) =>
            {
                self.last_progress = Some(now);
                let rtt = self.out.acknowledged(now, &mut self.rto);
                self.trace(Event::Acked {
                    kind: self.out.kind,
                    seq: d.seq,
                    rtt,
                });
                match self.phase {
                    Phase::Opening => self.load(1),
                    Phase::Data => {
                        self.stats.bytes += (self.out.len - OVERHEAD) as u64;
                        self.load(d.seq + 1);
                    }
                    Phase::Done => {
                        self.phase = Phase::Over;
                        self.status = Status::Closed;
                    }
                    Phase::Waiting { .. } | Phase::Starved { .. } | Phase::Over => {}
                }
            }
            Message::Wait if d.seq == self.out.seq && self.out.kind == Kind::Done => {
                let probe = self.cfg.rto.max;
                let rtt = match self.phase {
                    Phase::Done if self.out.transmitted() => {
                        self.out.acknowledged(now, &mut self.rto)
                    }
                    _ => None,
                };
                if !matches!(self.phase, Phase::Waiting { .. }) {
                    self.trace(Event::Waiting { seq: d.seq, rtt });
                }
                // Counted from the first WAIT: a WAIT that answers a probe must not
                // start the count again, or a receiver that always answers WAIT would
                // be waited for without end.
                let until = *self
                    .wait_until
                    .get_or_insert(now + self.cfg.give_up.saturating_mul(MAX_WAIT_FACTOR));
                self.last_progress = Some(now);
                // A probe resent meanwhile is answered by this WAIT: nothing to resend.
                self.out.need_send = false;
                self.resend_after = None;
                self.phase = Phase::Waiting {
                    probe_at: now + probe,
                    until,
                };
            }
            // Ack of something older: the Sorcerer's Apprentice rule says ignore it.
            Message::Ack | Message::Accept(_) if d.seq <= self.out.seq => {
                self.stats.stale += 1;
                self.trace(Event::Stale {
                    kind: d.kind(),
                    seq: d.seq,
                });
            }
            Message::Error { code, message } => self.fail(
                TransferError::Remote {
                    code,
                    message: message.to_string(),
                },
                false,
            ),
            // A duplicate REQUEST while the ACCEPT is outstanding: the timer resends it.
            Message::Request(_) => {}
            // An ack from the future, or data sent to a sender: never acted on.
            _ => {
                self.stats.received -= 1;
                self.stats.dropped += 1;
                self.trace(Event::Dropped(wire::WireError::Malformed(
                    "unexpected packet for a sender",
                )));
            }
        }
    }

    /// Counts a datagram that failed [`Datagram::parse`].
    pub fn note_dropped(&mut self, e: wire::WireError) {
        super::count_drop(&mut self.stats, e);
        self.trace(Event::Dropped(e));
    }

    /// The source that made this sender wait (a read that would block) may be read
    /// again: the parked block is read and sent. Harmless at any other time.
    pub fn source_ready(&mut self) {
        if let Phase::Starved { seq } = self.phase {
            self.load(seq);
        }
    }

    /// Checks the retransmission timer. Calling it early is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.phase == Phase::Over {
            return;
        }
        if let Phase::Waiting { probe_at, until } = self.phase {
            let silent_since = self.last_progress.unwrap_or(now);
            if now >= until {
                let waited = self.cfg.give_up.saturating_mul(MAX_WAIT_FACTOR);
                return self.fail(
                    TransferError::Aborted(format!(
                        "{} was still storing the file after {:.0} s",
                        self.peer,
                        waited.as_secs_f64()
                    )),
                    true,
                );
            }
            if now >= silent_since + self.cfg.give_up {
                return self.fail(
                    TransferError::NoAnswer {
                        peer: self.peer,
                        tries: self.out.tries(),
                        over: now.saturating_duration_since(silent_since),
                    },
                    true,
                );
            }
            if now >= probe_at {
                // Ask again whether it is stored: DONE once, and again only a ceiling
                // later. A receiver busy storing may not answer at once (a client
                // syncs on the thread that answers); resending on the ordinary timer
                // would be the very resends WAIT exists to stop.
                self.out.need_send = true;
                self.resend_after = Some(self.cfg.rto.max);
                self.phase = Phase::Waiting {
                    probe_at: now + self.cfg.rto.max,
                    until,
                };
            }
            return;
        }
        let since = self.last_progress.or(self.out.first_sent()).unwrap_or(now);
        match self
            .out
            .expire(now, &mut self.rto, since + self.cfg.give_up)
        {
            Expiry::NotYet => {}
            Expiry::Resend { after } => self.resend_after = Some(after),
            Expiry::GiveUp { tries, over } => self.fail(
                TransferError::NoAnswer {
                    peer: self.peer,
                    tries,
                    over,
                },
                true,
            ),
        }
    }

    /// The next datagram to send, if any. Call until it returns `None`.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<&[u8]> {
        if let Some(len) = self.error_out.take() {
            return Some(&self.packet[..len]);
        }
        if self.phase == Phase::Over || !self.out.need_send {
            return None;
        }
        self.out.on_transmit(now, &self.rto);
        self.stats.sent += 1;
        let (kind, seq, len) = (self.out.kind, self.out.seq, self.out.len - OVERHEAD);
        if let Some(after) = self.resend_after.take() {
            self.stats.resent += 1;
            self.trace(Event::Resent {
                kind,
                seq,
                len,
                after,
            });
        } else {
            self.trace(Event::Sent { kind, seq, len });
        }
        Some(&self.packet[..self.out.len])
    }

    /// When [`Sender::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Over => None,
            Phase::Waiting { probe_at, until } => {
                let silent = self.last_progress.map(|t| t + self.cfg.give_up);
                Some(probe_at.min(until).min(silent.unwrap_or(until)))
            }
            _ => self.out.deadline(),
        }
    }

    /// The next trace event (only recorded with [`Config::trace`]).
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Gives up on this side's initiative; the peer is sent an ERROR (aborted).
    pub fn abort(&mut self, reason: &str) {
        if self.phase == Phase::Over {
            return;
        }
        self.fail(TransferError::Aborted(reason.to_string()), true);
    }

    pub fn status(&self) -> &Status {
        &self.status
    }
    /// Whether every DATA was acknowledged (DONE was sent). A sender that then fails
    /// for want of the ack of DONE has delivered everything; only the confirmation that
    /// the receiver verified and stored it is missing (PROTOCOL.md §4.4).
    pub fn data_acknowledged(&self) -> bool {
        self.out.kind == Kind::Done
    }
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
    pub fn rto(&self) -> &RtoEstimator {
        &self.rto
    }
    pub fn session(&self) -> SessionId {
        self.session
    }
}

/// Reads until `buf` is full or the source ends; returns the bytes read, and the
/// error that stopped it early (`WouldBlock` included) if any.
fn fill(src: &mut dyn Read, buf: &mut [u8]) -> (usize, io::Result<()>) {
    let mut n = 0;
    while n < buf.len() {
        match src.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (n, Err(e)),
        }
    }
    (n, Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// WAIT stops DONE's resends: the sender only probes once per RTO ceiling, and
    /// closes on the ACK that follows (no round-trip sample from it).
    #[test]
    fn wait_stops_the_resends_of_done() {
        let peer = "127.0.0.1:9".parse().unwrap();
        let cfg = Config {
            block_size: 4,
            ..Config::default()
        };
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut s = Sender::new(
            7,
            peer,
            Box::new(std::io::Cursor::new(b"ab".to_vec())),
            cfg,
            RtoEstimator::new(cfg.rto),
            None,
        );
        let answer = |s: &mut Sender, at: Instant, seq: Seq, message: Message| {
            let mut b = [0u8; 64];
            let n = Datagram {
                session: 7,
                seq,
                message,
            }
            .emit(&mut b)
            .unwrap();
            s.handle(at, &Datagram::parse(&b[..n]).unwrap());
        };
        assert!(s.poll_transmit(ms(0)).is_some()); // DATA 1
        answer(&mut s, ms(1), 1, Message::Ack);
        assert!(s.poll_transmit(ms(1)).is_some()); // DONE 2
        answer(&mut s, ms(2), 2, Message::Wait);
        // Far past any RTO, short of the ceiling (1 s): nothing to resend.
        let next = s.poll_timeout().unwrap();
        assert!(next >= ms(2) + cfg.rto.max, "{:?}", next - t0);
        s.handle_timeout(ms(500));
        assert!(s.poll_transmit(ms(500)).is_none());
        // The probe: DONE once more.
        s.handle_timeout(next);
        assert!(s.poll_transmit(next).is_some());
        answer(&mut s, next, 2, Message::Wait);
        answer(&mut s, next + Duration::from_millis(5), 2, Message::Ack);
        assert_eq!(*s.status(), Status::Closed);
        assert_eq!(s.stats().resent, 1);
    }

    /// A source that would block parks the sender: nothing is sent (no resend, no
    /// timer), a copy of the last ack is stale, and `source_ready` sends the block with
    /// the bytes read before and after the wait.
    #[test]
    fn a_source_that_would_block_parks_the_sender() {
        /// Yields "ab", then would block until `open`, then "cd", then ends.
        struct Gate {
            step: u32,
            open: std::sync::Arc<std::sync::atomic::AtomicBool>,
        }
        impl Read for Gate {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.step += 1;
                match self.step {
                    1 => {
                        buf[..2].copy_from_slice(b"ab");
                        Ok(2)
                    }
                    2 if !self.open.load(std::sync::atomic::Ordering::SeqCst) => {
                        self.step -= 1;
                        Err(io::ErrorKind::WouldBlock.into())
                    }
                    2 => {
                        buf[..2].copy_from_slice(b"cd");
                        Ok(2)
                    }
                    _ => Ok(0),
                }
            }
        }
        let peer = "127.0.0.1:9".parse().unwrap();
        let cfg = Config {
            block_size: 4,
            ..Config::default()
        };
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let t0 = Instant::now();
        let accept = Accept {
            nonce: 1,
            op: wire::Op::Get,
            block_size: 4,
            size: 4,
        };
        let mut s = Sender::new(
            7,
            peer,
            Box::new(Gate {
                step: 0,
                open: open.clone(),
            }),
            cfg,
            RtoEstimator::new(cfg.rto),
            Some(accept),
        );
        let ack = |s: &mut Sender, at: Instant, seq: Seq| {
            let mut b = [0u8; 64];
            let n = Datagram {
                session: 7,
                seq,
                message: Message::Ack,
            }
            .emit(&mut b)
            .unwrap();
            s.handle(at, &Datagram::parse(&b[..n]).unwrap());
        };
        assert!(s.poll_transmit(t0).is_some()); // ACCEPT
        ack(&mut s, t0 + Duration::from_millis(1), 0);
        assert!(s.poll_transmit(t0).is_none(), "starved: nothing to send");
        assert_eq!(s.poll_timeout(), None, "no timer while starved");
        ack(&mut s, t0 + Duration::from_millis(2), 0);
        assert_eq!(s.stats().stale, 1, "a copy of ack 0 is stale");
        s.source_ready(); // still blocked: harmless
        assert!(s.poll_transmit(t0).is_none());
        open.store(true, std::sync::atomic::Ordering::SeqCst);
        s.source_ready();
        let d = s.poll_transmit(t0 + Duration::from_millis(3)).unwrap();
        let d = Datagram::parse(d).unwrap();
        assert_eq!(d.seq, 1);
        assert!(matches!(d.message, Message::Data(p) if p == b"abcd"));
        assert_eq!(s.stats().resent, 0);
    }

    /// A source longer or shorter than announced fails the transfer (with an ERROR for
    /// the peer) instead of sending a stream of another length.
    #[test]
    fn a_source_of_another_length_than_announced_fails() {
        let peer = "127.0.0.1:9".parse().unwrap();
        let cfg = Config {
            block_size: 4,
            ..Config::default()
        };
        for (data, announced) in [(&b"abcdefgh"[..], 6u64), (&b"abc"[..], 6)] {
            let now = Instant::now();
            let mut s = Sender::new(
                7,
                peer,
                Box::new(std::io::Cursor::new(data.to_vec())),
                cfg,
                RtoEstimator::new(cfg.rto),
                None,
            );
            s.announce_length(announced);
            let mut seq = 1;
            while *s.status() == Status::Running {
                while s.poll_transmit(now).is_some() {}
                let mut b = [0u8; 64];
                let ack = Datagram {
                    session: 7,
                    seq,
                    message: Message::Ack,
                };
                let n = ack.emit(&mut b).unwrap();
                s.handle(now, &Datagram::parse(&b[..n]).unwrap());
                seq += 1;
                assert!(seq < 10, "never ended");
            }
            assert!(
                matches!(
                    s.status(),
                    Status::Failed(TransferError::Announced { announced: 6, .. })
                ),
                "{:?}",
                s.status()
            );
        }
    }
}
