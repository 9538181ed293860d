//! The sending half of a stream (PROTOCOL.md §4.1): stop-and-wait with a window of 1,
//! a sliding window with selective repair above that (§4.5).

use std::collections::VecDeque;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::time::Instant;

use super::codec::{Codec, StreamEnd, Udpft};
use super::frame::{Accept, Frame, Kind, Seq, SessionId, UNKNOWN_SIZE};
use super::window::{Acked, Expiry, Resend, SendWindow};
use super::{Config, Event, Stats, Status, TransferError};
use crate::rto::RtoEstimator;
use crate::wire::{self, WireError};

/// A receiver that keeps answering WAIT is given up on after this many give-up times.
const MAX_WAIT_FACTOR: u32 = 6;

/// The smallest room for a packet that is not DATA (ACCEPT, DONE; TFTP's OACK).
const MIN_PACKET_ROOM: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Sending the server's ACCEPT of a get as packet 0, waiting for ack 0.
    Opening,
    /// Sending DATA (and the end), as the window allows.
    Streaming,
    /// The receiver answered DONE with WAIT (it is storing the data): DONE is not
    /// resent, only probed at `probe_at`; the wait is abandoned at `until`.
    Waiting { probe_at: Instant, until: Instant },
    /// DONE acknowledged, or failed: nothing more to do once the last ERROR is out.
    Over,
}

/// Sends one stream: DATA 1, 2, … then DONE (or, in an encoding whose stream ends with
/// a short block, that block), through a [`SendWindow`].
///
/// Guarantees: at most the granted window of packets unacknowledged (one, by default:
/// stop-and-wait); a packet is resent only when the retransmission timer expires or
/// when new selective acknowledgements show it lost, so an acknowledgement that says
/// nothing new never causes a send; memory is one datagram buffer per window slot,
/// allocated at the start, whatever the stream's length; DATA is read straight into
/// the datagram that carries it.
pub struct Sender<C: Codec = Udpft> {
    codec: C,
    session: SessionId,
    peer: SocketAddr,
    source: Box<dyn Read + Send>,
    cfg: Config,
    block: usize,
    /// One encoded datagram per window slot, `stride` bytes apart; DATA is read
    /// straight into its payload.
    bufs: Vec<u8>,
    stride: usize,
    window: SendWindow,
    /// The packet that ends the stream, once loaded.
    end: Option<Seq>,
    phase: Phase,
    rto: RtoEstimator,
    /// The stream's length as announced (ACCEPT or REQUEST), or [`UNKNOWN_SIZE`].
    announced: u64,
    length: u64,
    /// Bytes of the next block already in its slot, read before the source would block.
    pending: usize,
    /// The source said it would block (a read-ahead on an IO worker is under way): no
    /// block is loaded until [`Sender::source_ready`]; what is in the window still goes.
    starved: bool,
    crc: crc32fast::Hasher,
    /// When the last new acknowledgement came (or the sender started): the give-up
    /// time counts from here.
    last_progress: Option<Instant>,
    /// When waiting for a receiver that answered WAIT ends, set by its first WAIT: the
    /// probes and the WAITs that answer them do not move it.
    wait_until: Option<Instant>,
    /// A probe of DONE is due while waiting (sent once by `poll_transmit`).
    probing: bool,
    /// An ERROR to send once, telling the peer why this side stopped.
    error: Vec<u8>,
    error_out: Option<usize>,
    status: Status,
    stats: Stats,
    events: VecDeque<Event>,
}

impl Sender<Udpft> {
    /// A sender for session `session` towards `peer`, reading from `source`, with
    /// `cfg.block_size` bytes per DATA and a window of `cfg.window`, in udpft's
    /// encoding. With `opening`, the first packet is that ACCEPT (the server's answer to
    /// a get or list), sent as packet 0 and acknowledged by ack 0; without, DATA 1 goes
    /// first (a put, after the client's handshake).
    pub fn new(
        session: SessionId,
        peer: SocketAddr,
        source: Box<dyn Read + Send>,
        cfg: Config,
        rto: RtoEstimator,
        opening: Option<Accept>,
    ) -> Self {
        Sender::with_codec(Udpft, session, peer, source, cfg, rto, opening)
    }
}

impl<C: Codec> Sender<C> {
    /// As [`Sender::new`], in the encoding `codec`.
    pub fn with_codec(
        codec: C,
        session: SessionId,
        peer: SocketAddr,
        source: Box<dyn Read + Send>,
        cfg: Config,
        rto: RtoEstimator,
        opening: Option<Accept>,
    ) -> Self {
        let block = cfg
            .block_size
            .clamp(wire::MIN_BLOCK_SIZE, wire::MAX_BLOCK_SIZE) as usize;
        let window = super::window_for(cfg.window, cfg.block_size);
        let stride = codec.overhead() + block.max(MIN_PACKET_ROOM);
        let error = vec![0; codec.overhead() + 2 + codec.max_message_len()];
        let first = if opening.is_some() { 0 } else { 1 };
        let slots = window as usize;
        let mut window = SendWindow::new(window, first);
        if cfg.fixed_window {
            window.set_fixed();
        }
        let mut s = Sender {
            codec,
            session,
            peer,
            source,
            cfg,
            block,
            bufs: vec![0; stride * slots],
            stride,
            window,
            end: None,
            phase: Phase::Streaming,
            rto,
            announced: opening.map_or(UNKNOWN_SIZE, |a| a.size),
            length: 0,
            pending: 0,
            starved: false,
            crc: crc32fast::Hasher::new(),
            last_progress: None,
            wait_until: None,
            probing: false,
            error,
            error_out: None,
            status: Status::Running,
            stats: Stats::default(),
            events: VecDeque::new(),
        };
        match opening {
            Some(accept) => {
                let at = s.window.index(0) * s.stride;
                let len = s
                    .codec
                    .encode(
                        session,
                        &Frame::Accept(accept),
                        &mut s.bufs[at..at + stride],
                    )
                    .expect("an ACCEPT fits any packet buffer");
                s.window.push(Kind::Accept, len, 0);
                s.phase = Phase::Opening;
            }
            None => s.refill(),
        }
        s
    }

    /// Holds the stream to `announced` bytes (what a put's REQUEST said): a source that
    /// turns out longer or shorter fails the transfer instead of sending another length.
    /// A get's or list's length is the one its ACCEPT announces.
    pub fn announce_length(&mut self, announced: u64) {
        self.announced = announced;
    }

    /// Loads blocks while the window has room, the stream has not ended and the source
    /// has not said it would block.
    fn refill(&mut self) {
        while self.phase == Phase::Streaming
            && !self.starved
            && self.end.is_none()
            && self.window.has_room()
        {
            self.load();
        }
    }

    /// Reads the next block straight into its slot's datagram, or prepares the end. A
    /// source that would block parks the loading (`starved`) with what it gave so far
    /// kept in the slot; what is already in the window goes on being sent and resent.
    fn load(&mut self) {
        let seq = self.window.next_seq();
        let at = self.window.index(seq) * self.stride;
        let buf = &mut self.bufs[at..at + self.stride];
        let off = self.codec.data_offset();
        let from = off + self.pending;
        let n = match fill(&mut self.source, &mut buf[from..off + self.block]) {
            (n, Ok(())) => self.pending + n,
            (n, Err(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                self.pending += n;
                self.starved = true;
                return;
            }
            (_, Err(e)) => {
                return self.fail(TransferError::io("reading the file to send", &e), true);
            }
        };
        self.pending = 0;
        let short_ends = self.codec.stream_end() == StreamEnd::ShortBlock;
        let ended = if short_ends { n < self.block } else { n == 0 };
        let known = self.announced != UNKNOWN_SIZE;
        let got = self.length + n as u64;
        if known && (got > self.announced || (ended && got != self.announced)) {
            let announced = self.announced;
            return self.fail(TransferError::Announced { announced, got }, true);
        }
        if n > 0 || short_ends {
            self.crc.update(&buf[off..off + n]);
            self.length += n as u64;
            let len = self.codec.seal_data(buf, self.session, seq, n);
            self.window.push(Kind::Data, len, n);
            if ended {
                self.end = Some(seq);
            }
        } else {
            let end = Frame::End {
                seq,
                length: self.length,
                crc: self.crc.clone().finalize(),
            };
            let len = self
                .codec
                .encode(self.session, &end, buf)
                .expect("DONE fits any packet buffer");
            self.window.push(Kind::End, len, 0);
            self.end = Some(seq);
        }
    }

    fn fail(&mut self, e: TransferError, tell_peer: bool) {
        if matches!(self.status, Status::Failed(_)) {
            return;
        }
        if tell_peer {
            // The number of the newest packet loaded (informational).
            let seq = self.window.next_seq().saturating_sub(1);
            self.error_out =
                super::encode_error(&self.codec, self.session, seq, &e, &mut self.error);
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

    /// Feeds in one datagram: decodes it with this stream's codec, drops (and counts)
    /// one that is malformed or carries another session's key, and handles the rest.
    pub fn handle_datagram(&mut self, now: Instant, bytes: &[u8]) {
        match self.codec.decode(bytes, self.window.una()) {
            Ok((key, frame)) if key == self.session => self.handle(now, &frame),
            Ok(_) => {
                self.stats.dropped += 1;
                self.trace(Event::Foreign);
            }
            Err(e) => self.note_dropped(e),
        }
    }

    /// Feeds in one frame of this session.
    pub fn handle(&mut self, now: Instant, f: &Frame) {
        if self.phase == Phase::Over {
            return;
        }
        self.stats.received += 1;
        match *f {
            // The ack of DONE after a WAIT: stored. No round-trip sample (it includes
            // the time the receiver took to store).
            Frame::Ack { seq, .. }
                if Some(seq) == self.end && matches!(self.phase, Phase::Waiting { .. }) =>
            {
                self.last_progress = Some(now);
                self.trace(Event::Stored { seq });
                self.phase = Phase::Over;
                self.status = Status::Closed;
            }
            Frame::Ack { seq, .. } if matches!(self.phase, Phase::Waiting { .. }) => {
                match self.end {
                    Some(end) if seq < end => self.stale(Kind::Ack, seq),
                    _ => self.unexpected(),
                }
            }
            Frame::Ack { seq, ref sack } => {
                match self.window.on_ack(now, seq, sack, &mut self.rto) {
                    Acked::Stale => self.stale(Kind::Ack, seq),
                    Acked::Future => self.unexpected(),
                    Acked::Progress {
                        advanced,
                        kind,
                        rtt,
                        bytes,
                    } => {
                        self.last_progress = Some(now);
                        if advanced {
                            self.trace(Event::Acked { kind, seq, rtt });
                        }
                        self.stats.bytes += bytes;
                        if self.phase == Phase::Opening {
                            // Ack 0: the data starts, in a fresh window.
                            self.window.reset(1);
                            self.phase = Phase::Streaming;
                        } else if self.end.is_some_and(|end| seq >= end) {
                            self.phase = Phase::Over;
                            self.status = Status::Closed;
                            return;
                        }
                        self.refill();
                    }
                }
            }
            Frame::Wait { seq }
                if Some(seq) == self.end
                    && self.phase != Phase::Opening
                    && self.window.packet(seq).0 == Kind::End
                    && self.window.tries(seq) > 0 =>
            {
                let rtt = match self.phase {
                    Phase::Streaming => {
                        let (bytes, rtt) = self.window.hold(now, seq, &mut self.rto);
                        self.stats.bytes += bytes;
                        rtt
                    }
                    _ => None,
                };
                if !matches!(self.phase, Phase::Waiting { .. }) {
                    self.trace(Event::Waiting { seq, rtt });
                }
                // Counted from the first WAIT: a WAIT that answers a probe must not
                // start the count again, or a receiver that always answers WAIT would
                // be waited for without end.
                let until = *self
                    .wait_until
                    .get_or_insert(now + self.cfg.give_up.saturating_mul(MAX_WAIT_FACTOR));
                self.last_progress = Some(now);
                self.phase = Phase::Waiting {
                    probe_at: now + self.cfg.rto.max,
                    until,
                };
            }
            Frame::Accept(_) => self.stale(Kind::Accept, 0),
            Frame::Error { code, message, .. } => self.fail(
                TransferError::Remote {
                    code,
                    message: message.to_string(),
                },
                false,
            ),
            // A duplicate REQUEST while the ACCEPT is outstanding: the timer resends it.
            Frame::Request(_) => {}
            // Data sent to a sender, a WAIT for nothing we sent: never acted on.
            _ => self.unexpected(),
        }
    }

    /// Ack of something already acknowledged: the Sorcerer's Apprentice rule says
    /// ignore it.
    fn stale(&mut self, kind: Kind, seq: Seq) {
        self.stats.stale += 1;
        self.trace(Event::Stale { kind, seq });
    }

    fn unexpected(&mut self) {
        self.stats.received -= 1;
        self.stats.dropped += 1;
        self.trace(Event::Dropped(WireError::Malformed(
            "unexpected packet for a sender",
        )));
    }

    /// Counts a datagram that failed to decode.
    pub fn note_dropped(&mut self, e: WireError) {
        super::count_drop(&mut self.stats, e);
        self.trace(Event::Dropped(e));
    }

    /// The source that made this sender wait (a read that would block) may be read
    /// again: loading resumes where it stopped. Harmless at any other time.
    pub fn source_ready(&mut self) {
        if self.starved {
            self.starved = false;
            self.refill();
        }
    }

    /// Checks the retransmission timer. Calling it early is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.phase == Phase::Over {
            return;
        }
        if let Phase::Waiting { probe_at, until } = self.phase {
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
            let silent_since = self.last_progress.unwrap_or(now);
            if now >= silent_since + self.cfg.give_up {
                let tries = self.end.map_or(0, |e| self.window.tries(e));
                return self.fail(
                    TransferError::NoAnswer {
                        peer: self.peer,
                        tries,
                        over: now.saturating_duration_since(silent_since),
                    },
                    true,
                );
            }
            if now >= probe_at
                && let Some(end) = self.end
            {
                // Ask again whether it is stored: DONE once, and again only a ceiling
                // later. A receiver busy storing may not answer at once (a client
                // syncs on the thread that answers); resending on the ordinary timer
                // would be the very resends WAIT exists to stop.
                self.window.probe(end, self.cfg.rto.max);
                self.probing = true;
                self.phase = Phase::Waiting {
                    probe_at: now + self.cfg.rto.max,
                    until,
                };
            }
            return;
        }
        let since = self
            .last_progress
            .or(self.window.first_sent())
            .unwrap_or(now);
        match self
            .window
            .expire(now, &mut self.rto, since + self.cfg.give_up)
        {
            Expiry::NotYet | Expiry::Resend { .. } => {}
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
            return Some(&self.error[..len]);
        }
        match self.phase {
            Phase::Over => return None,
            // Waiting: only the probe goes out (the window's own timer is not run).
            Phase::Waiting { .. } if !std::mem::take(&mut self.probing) => return None,
            _ => {}
        }
        let (seq, why) = self.window.next_to_send()?;
        self.window.on_transmit(seq, now, &self.rto);
        self.stats.sent += 1;
        let (kind, len) = self.window.packet(seq);
        let payload = len - self.codec.overhead();
        match why {
            None => self.trace(Event::Sent {
                kind,
                seq,
                len: payload,
            }),
            Some(Resend::Timeout { after }) => {
                self.stats.resent += 1;
                self.trace(Event::Resent {
                    kind,
                    seq,
                    len: payload,
                    after,
                });
            }
            Some(Resend::Repair) => {
                self.stats.resent += 1;
                self.trace(Event::Repaired {
                    kind,
                    seq,
                    len: payload,
                });
            }
        }
        let at = self.window.index(seq) * self.stride;
        Some(&self.bufs[at..at + len])
    }

    /// When [`Sender::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Over => None,
            Phase::Waiting { probe_at, until } => {
                let silent = self.last_progress.map_or(until, |t| t + self.cfg.give_up);
                Some(probe_at.min(until).min(silent))
            }
            _ => self.window.deadline(),
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
        match self.codec.stream_end() {
            StreamEnd::Explicit => self
                .end
                .is_some_and(|end| self.window.una() >= end && self.phase != Phase::Opening),
            StreamEnd::ShortBlock => self.status == Status::Closed,
        }
    }
    /// The send window granted (1: stop-and-wait).
    pub fn window(&self) -> u64 {
        self.window.capacity()
    }
    /// The congestion window now, in packets (at most [`Sender::window`]).
    pub fn cwnd(&self) -> f64 {
        self.window.cwnd()
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

    /// A sender of the two bytes "ab" in blocks of 4 (DATA 1, then DONE 2).
    fn two_bytes_in_blocks_of_4() -> (Config, Sender) {
        let cfg = Config {
            block_size: 4,
            ..Config::default()
        };
        let s = Sender::new(
            7,
            "127.0.0.1:9".parse().unwrap(),
            Box::new(std::io::Cursor::new(b"ab".to_vec())),
            cfg,
            RtoEstimator::new(cfg.rto),
            None,
        );
        (cfg, s)
    }

    /// Feeds `f`, encoded as udpft's bytes for session 7, to `s`.
    fn answer(s: &mut Sender, at: Instant, f: Frame) {
        let mut b = [0u8; 64];
        let n = Udpft.encode(7, &f, &mut b).unwrap();
        s.handle_datagram(at, &b[..n]);
    }

    fn ack(seq: Seq) -> Frame<'static> {
        Frame::Ack {
            seq,
            sack: crate::engine::frame::Sack::NONE,
        }
    }
    use std::time::Duration;

    /// A lost probe is followed by another one RTO ceiling later (found by the lossy
    /// end-to-end test: a put whose only probe was lost went silent until it gave up).
    #[test]
    fn a_lost_probe_is_followed_by_another() {
        let t0 = Instant::now();
        let (cfg, mut s) = two_bytes_in_blocks_of_4();
        assert!(s.poll_transmit(t0).is_some()); // DATA 1
        answer(&mut s, t0, ack(1));
        assert!(s.poll_transmit(t0).is_some()); // DONE 2
        answer(&mut s, t0, Frame::Wait { seq: 2 });
        let mut probes = 0;
        let mut now = t0;
        for _ in 0..3 {
            now = s.poll_timeout().unwrap();
            s.handle_timeout(now);
            while s.poll_transmit(now).is_some() {
                probes += 1;
            }
        }
        assert_eq!(probes, 3, "one probe per ceiling, lost or not");
        assert!(now >= t0 + cfg.rto.max * 3);
        assert_eq!(*s.status(), Status::Running);
    }

    /// WAIT stops DONE's resends: the sender only probes once per RTO ceiling, and
    /// closes on the ACK that follows (no round-trip sample from it).
    #[test]
    fn wait_stops_the_resends_of_done() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let (cfg, mut s) = two_bytes_in_blocks_of_4();
        assert!(s.poll_transmit(ms(0)).is_some()); // DATA 1
        answer(&mut s, ms(1), ack(1));
        assert!(s.poll_transmit(ms(1)).is_some()); // DONE 2
        answer(&mut s, ms(2), Frame::Wait { seq: 2 });
        // Far past any RTO, short of the ceiling (1 s): nothing to resend.
        let next = s.poll_timeout().unwrap();
        assert!(next >= ms(2) + cfg.rto.max, "{:?}", next - t0);
        s.handle_timeout(ms(500));
        assert!(s.poll_transmit(ms(500)).is_none());
        // The probe: DONE once more.
        s.handle_timeout(next);
        assert!(s.poll_transmit(next).is_some());
        answer(&mut s, next, Frame::Wait { seq: 2 });
        answer(&mut s, next + Duration::from_millis(5), ack(2));
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
            op: crate::engine::frame::Op::Get,
            block_size: 4,
            size: 4,
            window: 1,
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
            let f = Frame::Ack {
                seq,
                sack: crate::engine::frame::Sack::NONE,
            };
            let n = Udpft.encode(7, &f, &mut b).unwrap();
            s.handle_datagram(at, &b[..n]);
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
        let d = crate::wire::Datagram::parse(d).unwrap();
        assert_eq!(d.seq, 1);
        assert!(matches!(d.message, crate::wire::Message::Data(p) if p == b"abcd"));
        assert_eq!(s.stats().resent, 0);
    }

    /// With a window, a source that would block only stops the loading: what is in the
    /// window still goes, is acknowledged and resent on its timer; `source_ready`
    /// resumes the loading.
    #[test]
    fn a_windowed_sender_keeps_its_window_going_while_starved() {
        /// Four blocks of 8 bytes, then would block until `open`, then four more.
        struct Gate {
            given: u32,
            open: std::sync::Arc<std::sync::atomic::AtomicBool>,
        }
        impl Read for Gate {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.given == 4 && !self.open.load(std::sync::atomic::Ordering::SeqCst) {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                if self.given == 8 {
                    return Ok(0);
                }
                self.given += 1;
                buf[..8].fill(self.given as u8);
                Ok(8)
            }
        }
        let peer = "127.0.0.1:9".parse().unwrap();
        let cfg = Config {
            block_size: 8,
            window: 8,
            ..Config::default()
        };
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let src = Gate {
            given: 0,
            open: open.clone(),
        };
        let t0 = Instant::now();
        let mut s = Sender::new(
            7,
            peer,
            Box::new(src),
            cfg,
            RtoEstimator::new(cfg.rto),
            None,
        );
        let mut sent = vec![];
        while let Some(b) = s.poll_transmit(t0) {
            sent.push(crate::wire::Datagram::parse(b).unwrap().seq);
        }
        assert_eq!(sent, [1, 2, 3, 4], "four loaded, then starved");
        // Starved, the timer still runs for what is in flight: the oldest, 3, is resent.
        let ack = Frame::Ack {
            seq: 2,
            sack: crate::engine::frame::Sack::NONE,
        };
        s.handle(t0 + Duration::from_millis(1), &ack);
        let due = s.poll_timeout().expect("a timer for 3 and 4");
        s.handle_timeout(due);
        let mut again = vec![];
        while let Some(b) = s.poll_transmit(due) {
            again.push(crate::wire::Datagram::parse(b).unwrap().seq);
        }
        assert_eq!(again, [3]);
        assert_eq!(s.stats().resent, 1);
        open.store(true, std::sync::atomic::Ordering::SeqCst);
        s.source_ready();
        let mut more = vec![];
        while let Some(b) = s.poll_transmit(due) {
            more.push(crate::wire::Datagram::parse(b).unwrap().seq);
        }
        // Blocks 5 to 8 and DONE 9, as far as the congestion window (halved by the
        // timeout) allows: at least one, in order.
        assert!(
            !more.is_empty() && more.windows(2).all(|w| w[1] == w[0] + 1),
            "{more:?}"
        );
        assert_eq!(more[0], 5);
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
                s.handle(
                    now,
                    &Frame::Ack {
                        seq,
                        sack: crate::engine::frame::Sack::NONE,
                    },
                );
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
