//! The receiving half of a stream (PROTOCOL.md §4.2; with a window above 1, §4.5).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::codec::{Codec, StreamEnd, Udpft};
use super::frame::{Accept, Frame, Kind, Sack, Seq, SessionId, UNKNOWN_SIZE};
use super::{Config, Event, Sink, Stats, Status, TransferError};
use crate::rto::RtoEstimator;
use crate::wire::{self, WireError};

/// How a receiver acknowledges packet 0, the opening of the stream, when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpeningAck {
    /// ACK 0: a client that has just received the ACCEPT of its get.
    Ack,
    /// This ACCEPT: a server answering a put.
    Accept(Accept),
    /// Nothing: the stream starts with DATA 1 unasked (TFTP's RRQ without options).
    Nothing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Receiving,
    /// DONE `seq` verified; the driver is storing the data (`poll_commit`, then
    /// `commit_done`). A resent DONE is answered with WAIT.
    Committing {
        seq: Seq,
    },
    /// DONE verified, committed and acknowledged; re-acknowledging a resent DONE until then.
    Lingering {
        until: Instant,
    },
    Over,
}

/// A slot of the reorder buffer that holds nothing.
const EMPTY: u32 = u32::MAX;

/// What became of a block handed to the sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Taken {
    Yes,
    /// The storage would block: not written, to be offered again.
    Deferred,
    /// The transfer failed (and the peer is told).
    Failed,
}

/// Receives one stream, writing each new block exactly once, in order, to a [`Sink`].
///
/// Guarantees: a block is written only once every block before it has been, and never
/// twice; DONE is acknowledged only after its length and CRC32 matched and the driver
/// reported the sink committed ([`Receiver::poll_commit`], [`Receiver::commit_done`]);
/// until then DONE is answered with WAIT if the answer goes out before the commit is
/// done. With a window of 1 every packet is acknowledged at once and nothing is sent on
/// a timer; with a window *W* above 1, blocks up to *W* − 1 ahead of the next expected
/// one are kept (memory: *W* blocks, allocated at the start) and acknowledged
/// selectively, and in-order blocks are acknowledged every ⌈*W*/4⌉, or after
/// [`Config::ack_delay`] at the latest. Acknowledgements are cumulative. With
/// [`Config::ack_per_window`] (RFC 7440 §4) in-order blocks are acknowledged only every
/// *W*, at the first block past a gap, at the end, and when no block came for a
/// retransmission timeout.
pub struct Receiver<C: Codec = Udpft> {
    codec: C,
    session: SessionId,
    peer: SocketAddr,
    /// Where the data goes; handed to the driver to commit once DONE is verified.
    sink: Option<Box<dyn Sink + Send>>,
    cfg: Config,
    block: usize,
    /// The window granted (1: stop-and-wait).
    window: u64,
    /// In-order blocks after which an acknowledgement goes out at once.
    ack_every: u64,
    /// Blocks kept ahead after which one goes out at once (the first always does).
    sack_every: u64,
    /// Blocks kept ahead since the last acknowledgement (0: none yet, so the next one
    /// is acknowledged at once).
    ahead_unacked: u64,
    /// RFC 7440's acknowledgements ([`Config::ack_per_window`]).
    per_window: bool,
    /// What acknowledges packet 0: ack 0 (a client's get) or the ACCEPT (a server's put).
    opening: Option<Accept>,
    expected: Seq,
    /// Blocks that arrived ahead of `expected`: slot `seq % window` holds `block` bytes,
    /// its length in `held` ([`EMPTY`] if none).
    ahead: Vec<u8>,
    held: Vec<u32>,
    /// How many slots of `ahead` hold a block.
    ahead_count: u64,
    /// An end (DONE) that arrived ahead of `expected`: number, length, CRC32.
    end_ahead: Option<(Seq, u64, u32)>,
    /// In-order blocks not acknowledged yet, and when the ack is due at the latest.
    unacked: u64,
    ack_at: Option<Instant>,
    /// When to offer the blocks kept ahead to a storage that would block, again.
    retry_at: Option<Instant>,
    /// The stream's length as announced at its start, or [`UNKNOWN_SIZE`].
    announced: u64,
    length: u64,
    crc: crc32fast::Hasher,
    phase: Phase,
    /// When the last new block (or DONE) came, or the receiver started: duplicates do
    /// not count, so a sender that only repeats itself cannot hold the stream open.
    last_progress: Instant,
    /// The ack of the newest in-order packet and when it went out, while it has been
    /// sent only once: a round-trip sample is the time from it to the next block
    /// (stop-and-wait only: in a window the next block does not wait for the ack).
    newest_ack: Option<(Seq, Instant)>,
    rto: RtoEstimator,
    /// The encoded reply waiting to go out (an ack, the ACCEPT, or an ERROR).
    reply: Vec<u8>,
    reply_len: Option<usize>,
    /// DONE's length and CRC32, once verified (for the trace when it is stored).
    verified: Option<(u64, u32)>,
    status: Status,
    stats: Stats,
    events: VecDeque<Event>,
}

impl Receiver<Udpft> {
    /// A receiver for `session` from `peer`, writing into `sink`, accepting blocks of up
    /// to `cfg.block_size` bytes with a window of `cfg.window`, in udpft's encoding. Its
    /// first transmission acknowledges packet 0: with `opening` (a server answering a
    /// put) that is the ACCEPT, otherwise ack 0 (a client that has just received the
    /// ACCEPT of its get).
    pub fn new(
        session: SessionId,
        peer: SocketAddr,
        sink: Box<dyn Sink + Send>,
        cfg: Config,
        rto: RtoEstimator,
        opening: Option<Accept>,
        now: Instant,
    ) -> Self {
        let opening = opening.map_or(OpeningAck::Ack, OpeningAck::Accept);
        Receiver::with_codec(Udpft, session, peer, sink, cfg, rto, opening, now)
    }
}

impl<C: Codec> Receiver<C> {
    /// As [`Receiver::new`], in the encoding `codec`, acknowledging packet 0 as
    /// `opening` says.
    #[allow(clippy::too_many_arguments)]
    pub fn with_codec(
        codec: C,
        session: SessionId,
        peer: SocketAddr,
        sink: Box<dyn Sink + Send>,
        cfg: Config,
        rto: RtoEstimator,
        opening: OpeningAck,
        now: Instant,
    ) -> Self {
        let reply = vec![0; codec.overhead() + 2 + codec.max_message_len()];
        let block = cfg
            .block_size
            .clamp(wire::MIN_BLOCK_SIZE, wire::MAX_BLOCK_SIZE) as usize;
        let window = super::window_for(cfg.window, cfg.block_size) as u64;
        let ahead_slots = if window > 1 { window as usize } else { 0 };
        let mut r = Receiver {
            codec,
            session,
            peer,
            sink: Some(sink),
            cfg,
            block,
            window,
            ack_every: if cfg.ack_per_window {
                window
            } else {
                window.div_ceil(4)
            },
            sack_every: window.div_ceil(16),
            ahead_unacked: 0,
            per_window: cfg.ack_per_window && window > 1,
            opening: match opening {
                OpeningAck::Accept(a) => Some(a),
                _ => None,
            },
            expected: 1,
            ahead: vec![0; ahead_slots * block],
            held: vec![EMPTY; ahead_slots],
            ahead_count: 0,
            end_ahead: None,
            unacked: 0,
            ack_at: None,
            retry_at: None,
            announced: UNKNOWN_SIZE,
            length: 0,
            crc: crc32fast::Hasher::new(),
            phase: Phase::Receiving,
            last_progress: now,
            newest_ack: None,
            rto,
            reply,
            reply_len: None,
            verified: None,
            status: Status::Running,
            stats: Stats::default(),
            events: VecDeque::new(),
        };
        if opening != OpeningAck::Nothing {
            r.queue_ack(now, true);
        }
        r
    }

    /// Holds the stream to the length announced at its start (the ACCEPT of a get, the
    /// REQUEST of a put): a DATA that would take it past that length, or a DONE with
    /// another one, fails the transfer before anything more is written.
    pub fn expect_length(&mut self, announced: u64) {
        self.announced = announced;
    }

    fn trace(&mut self, e: Event) {
        if self.cfg.trace {
            self.events.push_back(e);
        }
    }

    /// The cumulative acknowledgement: the newest packet up to which everything
    /// arrived, not counting an end that is still being stored.
    fn cumulative(&self) -> Seq {
        match self.phase {
            Phase::Committing { seq } => seq - 1,
            _ => self.expected - 1,
        }
    }

    /// Queues the acknowledgement of everything received so far (with the blocks held
    /// ahead, selectively); `fresh` if it acknowledges a packet just received in order
    /// for the first time.
    fn queue_ack(&mut self, now: Instant, fresh: bool) {
        let seq = self.cumulative();
        let mut sack = Sack::NONE;
        if self.ahead_count > 0 || self.end_ahead.is_some() {
            for k in 1..self.window {
                let s = self.expected + k;
                let held = self.held[(s % self.window) as usize] != EMPTY;
                if held || self.end_ahead.is_some_and(|(e, ..)| e == s) {
                    sack.set(s - seq - 1);
                }
            }
        }
        // Packet 0 of a put is acknowledged by the ACCEPT, unless there is more to say.
        let frame = match (seq, self.opening) {
            (0, Some(accept)) if sack.is_empty() => Frame::Accept(accept),
            _ => Frame::Ack { seq, sack },
        };
        self.reply_len = self
            .codec
            .encode(self.session, &frame, &mut self.reply)
            .ok();
        let window_end = self.unacked >= self.ack_every;
        self.unacked = 0;
        // Blocks already kept count as past the gap: the next one waits its turn.
        self.ahead_unacked = u64::from(self.ahead_count > 0);
        self.ack_at = None;
        // In a sliding window the next block does not wait for this ack: no round trip
        // to time. An RFC 7440 sender waits for a window's last ack: the next block's
        // arrival times it (for the timer that acknowledges a window cut short).
        if self.window > 1 && !(self.per_window && window_end) {
            self.newest_ack = None;
            return;
        }
        if fresh {
            self.newest_ack = Some((seq, now));
        } else if matches!(self.newest_ack, Some((s, _)) if s == seq) {
            // Sent again: by Karn's rule the next block's arrival is no sample.
            self.newest_ack = None;
        }
    }

    /// Queues a WAIT for `seq`. An encoding without one sends nothing: the sender's
    /// timer resends, and the resend is answered once the data is stored.
    fn queue_wait(&mut self, seq: Seq) {
        let wait = Frame::Wait { seq };
        self.reply_len = self.codec.encode(self.session, &wait, &mut self.reply).ok();
    }

    /// The sink to store, once DONE is verified: the driver commits it (synchronously,
    /// or on an IO worker) and reports with [`Receiver::commit_done`]. Returned once.
    pub fn poll_commit(&mut self) -> Option<Box<dyn Sink + Send>> {
        match self.phase {
            Phase::Committing { .. } => self.sink.take(),
            _ => None,
        }
    }

    /// The sink, if the receiver still holds it (an upload that ended without being
    /// stored): the driver discards it where file operations belong, not on the
    /// network thread.
    pub fn take_sink(&mut self) -> Option<Box<dyn Sink + Send>> {
        self.sink.take()
    }

    /// The outcome of storing the sink handed out by [`Receiver::poll_commit`]: on
    /// success DONE is acknowledged (and the receiver lingers), on failure the sender
    /// is told. Ignored unless committing.
    pub fn commit_done(&mut self, now: Instant, result: std::io::Result<()>) {
        let Phase::Committing { seq } = self.phase else {
            return;
        };
        if let Err(e) = result {
            return self.fail(TransferError::io("storing the received file", &e), true);
        }
        if let Some((length, crc)) = self.verified {
            // A short block carries no length or CRC to verify (TFTP): say what it did.
            self.trace(match self.codec.stream_end() {
                StreamEnd::Explicit => Event::Verified { length, crc },
                StreamEnd::ShortBlock => Event::LastBlock { seq, length },
            });
        }
        self.status = Status::Complete;
        self.phase = Phase::Lingering {
            until: now + self.linger_time(),
        };
        self.queue_ack(now, true);
    }

    fn fail(&mut self, e: TransferError, tell_peer: bool) {
        self.reply_len = match tell_peer {
            true => super::encode_error(
                &self.codec,
                self.session,
                self.expected,
                &e,
                &mut self.reply,
            ),
            false => None,
        };
        self.trace(Event::Failed(e.clone()));
        self.status = Status::Failed(e);
        self.phase = Phase::Over;
    }

    fn linger_time(&self) -> Duration {
        self.cfg.linger.max(self.rto.rto() * 8)
    }

    /// Feeds in one datagram: decodes it with this stream's codec, drops (and counts)
    /// one that is malformed or carries another session's key, and handles the rest.
    pub fn handle_datagram(&mut self, now: Instant, bytes: &[u8]) {
        match self.codec.decode(bytes, self.expected) {
            Ok((key, frame)) if key == self.session => self.handle(now, &frame),
            Ok(_) => {
                self.stats.dropped += 1;
                self.trace(Event::Foreign);
            }
            Err(e) => self.note_dropped(e),
        }
    }

    /// How far ahead of the next expected block `seq` is, if it is ahead but within
    /// the window (so that it may be kept).
    fn ahead_of_expected(&self, seq: Seq) -> Option<u64> {
        let k = seq.checked_sub(self.expected)?;
        (k > 0 && k < self.window).then_some(k)
    }

    /// Feeds in one frame of this session.
    pub fn handle(&mut self, now: Instant, f: &Frame) {
        if self.phase == Phase::Over {
            return;
        }
        let receiving = self.phase == Phase::Receiving;
        let committing = match self.phase {
            Phase::Committing { seq } => Some(seq),
            _ => None,
        };
        match *f {
            Frame::Data { payload, .. } if payload.len() > self.block => {
                return self.unexpected("data larger than the granted block size");
            }
            Frame::Data { seq, payload } if receiving && seq == self.expected => {
                let filled_gap = self.ahead_count > 0;
                if self.window > 1 && self.held[(seq % self.window) as usize] != EMPTY {
                    // Kept already (the storage was busy when it came in order): this
                    // is a copy; the kept one is offered again.
                    self.stats.duplicates += 1;
                    self.trace(Event::Duplicate {
                        kind: Kind::Data,
                        seq,
                    });
                } else if self.deliver(now, seq, payload) != Taken::Yes {
                    return;
                }
                self.drain(now);
                if self.phase == Phase::Receiving {
                    // Stop-and-wait acknowledges every block; a window, a quarter of
                    // it at a time, or at once when there was a gap.
                    if self.window == 1
                        || filled_gap
                        || self.ahead_count > 0
                        || self.unacked >= self.ack_every
                    {
                        self.queue_ack(now, true);
                    } else if self.per_window {
                        // RFC 7440: the rest of the window is expected; only a silence
                        // of a retransmission timeout says it was lost.
                        self.ack_at = Some(now + self.rto.rto());
                    } else if self.ack_at.is_none() {
                        self.ack_at = Some(now + self.cfg.ack_delay);
                    }
                }
            }
            // The short block that ended the stream, again, while it is being stored.
            Frame::Data { seq, .. } if committing == Some(seq) => {
                self.stats.duplicates += 1;
                self.queue_wait(seq);
            }
            Frame::Data { seq, .. } if seq < self.expected => self.duplicate(Kind::Data, seq, now),
            Frame::Data { seq, payload } if receiving && self.ahead_of_expected(seq).is_some() => {
                let i = (seq % self.window) as usize;
                if self.held[i] != EMPTY {
                    return self.duplicate(Kind::Data, seq, now);
                }
                self.ahead[i * self.block..][..payload.len()].copy_from_slice(payload);
                self.held[i] = payload.len() as u32;
                self.ahead_count += 1;
                self.last_progress = now;
                self.trace(Event::Ahead {
                    seq,
                    len: payload.len(),
                    expected: self.expected,
                });
                if self.per_window {
                    // RFC 7440: the last in-order block, once per gap (each copy would
                    // be one more go-back for the sender).
                    if self.ahead_count == 1 {
                        self.queue_ack(now, false);
                    }
                } else if self.ahead_unacked == 0 || self.ahead_unacked + 1 >= self.sack_every {
                    // A gap: say what arrived, so the sender repairs only the hole — at
                    // once for the first block past it since the last ack, then every
                    // few (each ACK costs both sides a packet's work), or after the ack
                    // delay.
                    self.queue_ack(now, false);
                } else {
                    self.ahead_unacked += 1;
                    self.ack_at.get_or_insert(now + self.cfg.ack_delay);
                }
            }
            Frame::End {
                seq, length, crc, ..
            } if receiving && seq == self.expected => self.end(now, seq, length, crc),
            Frame::End {
                seq, length, crc, ..
            } if receiving && self.ahead_of_expected(seq).is_some() => {
                if self.end_ahead.is_some_and(|(e, ..)| e == seq) {
                    return self.duplicate(Kind::End, seq, now);
                }
                self.end_ahead = Some((seq, length, crc));
                self.last_progress = now;
                self.queue_ack(now, false);
            }
            Frame::End { seq, .. } if committing == Some(seq) => {
                self.stats.duplicates += 1;
                self.queue_wait(seq);
            }
            Frame::End { seq, .. }
                if matches!(self.phase, Phase::Lingering { .. }) && seq == self.expected - 1 =>
            {
                self.phase = Phase::Lingering {
                    until: now + self.linger_time(),
                };
                self.duplicate(Kind::End, seq, now);
            }
            // Packet 0 again (the ACCEPT of our get, or the REQUEST of the put we
            // accepted): our acknowledgement of it was lost, so send it again.
            Frame::Accept(_) | Frame::Request(_) if self.expected == 1 => {
                self.duplicate(f.kind(), 0, now)
            }
            Frame::Accept(_) | Frame::Request(_) => {
                self.stats.stale += 1;
                self.trace(Event::Stale {
                    kind: f.kind(),
                    seq: 0,
                });
            }
            // Storing goes on whatever the sender says now: the data is verified.
            Frame::Error { .. } if matches!(self.phase, Phase::Committing { .. }) => {}
            // The data is verified and stored: a sender that gave up on the ack of DONE
            // changes nothing of that, it only ends the linger.
            Frame::Error { .. } if !receiving => {
                self.phase = Phase::Over;
                self.status = Status::Closed;
            }
            Frame::Error { code, message, .. } => {
                let message = message.to_string();
                self.fail(TransferError::Remote { code, message }, false);
            }
            _ => return self.unexpected("packet out of sequence"),
        }
        self.stats.received += 1;
    }

    /// Writes the blocks kept ahead that are now in order, and acts on an end kept
    /// ahead once everything before it is in. Storage that would block leaves the rest
    /// kept, to be tried again after the ack delay.
    fn drain(&mut self, now: Instant) {
        self.retry_at = None;
        while self.phase == Phase::Receiving {
            let i = (self.expected % self.window) as usize;
            if self.window > 1 && self.held[i] != EMPTY {
                let len = self.held[i] as usize;
                let block = std::mem::take(&mut self.ahead);
                let taken = self.deliver(now, self.expected, &block[i * self.block..][..len]);
                self.ahead = block;
                match taken {
                    Taken::Yes => {
                        self.held[i] = EMPTY;
                        self.ahead_count -= 1;
                    }
                    Taken::Deferred => {
                        self.retry_at = Some(now + self.cfg.ack_delay);
                        return;
                    }
                    Taken::Failed => return,
                }
            } else if let Some((e, length, crc)) = self.end_ahead
                && e == self.expected
            {
                self.end_ahead = None;
                self.end(now, e, length, crc);
                return;
            } else {
                return;
            }
        }
    }

    /// Writes block `seq`, the next expected one. A short block that ends the stream
    /// (in an encoding that ends so) starts the commit. Storage that would block (its
    /// buffers are all being written) leaves the block untaken: not written, not
    /// acknowledged (PROTOCOL.md §4.2), so the sender resends it (or, kept ahead, it is
    /// tried again).
    fn deliver(&mut self, now: Instant, seq: Seq, payload: &[u8]) -> Taken {
        let got = self.length + payload.len() as u64;
        if self.announced != UNKNOWN_SIZE && got > self.announced {
            let announced = self.announced;
            self.fail(TransferError::Announced { announced, got }, true);
            return Taken::Failed;
        }
        let Some(sink) = self.sink.as_mut() else {
            self.unexpected("data after the sink was handed over");
            return Taken::Failed;
        };
        match sink.write(payload) {
            Ok(n) if n == payload.len() => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                self.stats.deferred += 1;
                self.trace(Event::Deferred { seq });
                return Taken::Deferred;
            }
            Ok(n) => {
                // A sink that takes part of a block takes the rest in turn.
                if let Err(e) = sink.write_all(&payload[n..]) {
                    self.fail(TransferError::io("writing the received file", &e), true);
                    return Taken::Failed;
                }
            }
            Err(e) => {
                self.fail(TransferError::io("writing the received file", &e), true);
                return Taken::Failed;
            }
        }
        if let Some((s, at)) = self.newest_ack
            && s == seq - 1
        {
            self.rto.sample(now.saturating_duration_since(at));
        }
        self.crc.update(payload);
        self.length += payload.len() as u64;
        self.stats.bytes += payload.len() as u64;
        self.expected += 1;
        self.unacked += 1;
        self.last_progress = now;
        if self.window == 1 {
            self.trace(Event::Received {
                kind: Kind::Data,
                seq,
                len: payload.len(),
            });
        } else {
            self.trace(Event::Delivered {
                seq,
                len: payload.len(),
            });
        }
        let short_ends = self.codec.stream_end() == StreamEnd::ShortBlock;
        if short_ends && payload.len() < self.block {
            // The short block ends the stream: only its length can be checked.
            if self.announced != UNKNOWN_SIZE && self.length != self.announced {
                let (announced, got) = (self.announced, self.length);
                self.fail(TransferError::Announced { announced, got }, true);
                return Taken::Failed;
            }
            self.commit(seq);
        }
        Taken::Yes
    }

    /// The end `seq` arrived and everything before it: verify it, then commit.
    fn end(&mut self, now: Instant, seq: Seq, length: u64, crc: u32) {
        if self.announced != UNKNOWN_SIZE && length != self.announced {
            let (announced, got) = (self.announced, length);
            return self.fail(TransferError::Announced { announced, got }, true);
        }
        let got_crc = self.crc.clone().finalize();
        if length != self.length || crc != got_crc {
            return self.fail(
                TransferError::Integrity {
                    length,
                    crc,
                    got_length: self.length,
                    got_crc,
                },
                true,
            );
        }
        self.expected += 1;
        self.last_progress = now;
        self.commit(seq);
    }

    /// The stream is complete and verified as far as the encoding allows: the driver
    /// stores it now; until it says it is stored, the end is answered with WAIT (which
    /// an ACK queued first supersedes).
    fn commit(&mut self, seq: Seq) {
        self.verified = Some((self.length, self.crc.clone().finalize()));
        self.phase = Phase::Committing { seq };
        self.ack_at = None;
        self.queue_wait(seq);
    }

    fn duplicate(&mut self, kind: Kind, seq: Seq, now: Instant) {
        self.stats.duplicates += 1;
        self.trace(Event::Duplicate { kind, seq });
        self.queue_ack(now, false);
    }

    fn unexpected(&mut self, what: &'static str) {
        self.stats.dropped += 1;
        self.trace(Event::Dropped(WireError::Malformed(what)));
    }

    /// Counts a datagram that failed to decode.
    pub fn note_dropped(&mut self, e: WireError) {
        super::count_drop(&mut self.stats, e);
        self.trace(Event::Dropped(e));
    }

    /// Sends a held-back acknowledgement, ends the linger, or fails the transfer if
    /// the sender has been silent too long.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.phase == Phase::Receiving && self.retry_at.is_some_and(|t| now >= t) {
            self.retry_at = None;
            let before = self.expected;
            self.drain(now);
            if self.expected != before && self.phase == Phase::Receiving {
                self.queue_ack(now, true);
            }
        }
        if self.phase == Phase::Receiving && self.ack_at.is_some_and(|t| now >= t) {
            self.queue_ack(now, true);
        }
        match self.phase {
            Phase::Receiving if now >= self.last_progress + self.cfg.give_up => {
                let silent = now.saturating_duration_since(self.last_progress);
                self.fail(
                    TransferError::Silent {
                        peer: self.peer,
                        silent,
                    },
                    true,
                );
            }
            Phase::Lingering { until } if now >= until => {
                self.phase = Phase::Over;
                self.status = Status::Closed;
            }
            _ => {}
        }
    }

    /// The next datagram to send, if any.
    pub fn poll_transmit(&mut self, _now: Instant) -> Option<&[u8]> {
        let len = self.reply_len.take()?;
        self.stats.sent += 1;
        if let Phase::Committing { seq } = self.phase {
            self.trace(Event::Storing { seq });
        }
        Some(&self.reply[..len])
    }

    /// When [`Receiver::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Receiving => [
                Some(self.last_progress + self.cfg.give_up),
                self.ack_at,
                self.retry_at,
            ]
            .into_iter()
            .flatten()
            .min(),
            Phase::Lingering { until } => Some(until),
            Phase::Committing { .. } | Phase::Over => None,
        }
    }

    /// The next trace event (only recorded with [`Config::trace`]).
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Gives up on this side's initiative; the peer is sent an ERROR (aborted).
    pub fn abort(&mut self, reason: &str) {
        if self.phase == Phase::Receiving {
            self.fail(TransferError::Aborted(reason.to_string()), true);
        }
    }

    pub fn status(&self) -> &Status {
        &self.status
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
    /// The window granted (1: stop-and-wait).
    pub fn window(&self) -> u64 {
        self.window
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::NullSink;
    use crate::wire::{Datagram, Message};
    use std::io;

    fn encode(d: Datagram) -> Vec<u8> {
        let mut b = vec![0; d.wire_len()];
        d.emit(&mut b).unwrap();
        b
    }

    fn receiver(now: Instant) -> Receiver {
        let cfg = Config::default();
        let peer = "127.0.0.1:9".parse().unwrap();
        Receiver::new(
            7,
            peer,
            Box::new(NullSink::default()),
            cfg,
            RtoEstimator::new(cfg.rto),
            None,
            now,
        )
    }

    fn feed(r: &mut Receiver, now: Instant, seq: Seq, message: Message) {
        let b = encode(Datagram {
            session: 7,
            seq,
            message,
        });
        r.handle_datagram(now, &b);
    }

    /// Stores what a verified DONE handed out, as a driver does.
    fn store(r: &mut Receiver, now: Instant) {
        let mut sink = r.poll_commit().expect("DONE was verified");
        let stored = sink.commit();
        r.commit_done(now, stored);
    }

    /// A sink that would block (the storage is behind) leaves the block untaken and
    /// unacknowledged; the sender's resend is then taken as new, once.
    #[test]
    fn a_sink_that_would_block_defers_the_block_unacknowledged() {
        struct Busy(u32, Vec<u8>);
        impl io::Write for Busy {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                if self.0 > 0 {
                    self.0 -= 1;
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                self.1.extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        impl Sink for Busy {
            fn commit(&mut self) -> io::Result<()> {
                assert_eq!(self.1, b"xy");
                Ok(())
            }
        }
        let now = Instant::now();
        let cfg = Config::default();
        let mut r = Receiver::new(
            7,
            "127.0.0.1:9".parse().unwrap(),
            Box::new(Busy(1, Vec::new())),
            cfg,
            RtoEstimator::new(cfg.rto),
            None,
            now,
        );
        while r.poll_transmit(now).is_some() {}
        feed(&mut r, now, 1, Message::Data(b"xy"));
        assert!(r.poll_transmit(now).is_none(), "not acknowledged");
        assert_eq!(r.stats().deferred, 1);
        feed(&mut r, now, 1, Message::Data(b"xy"));
        let ack = r.poll_transmit(now).expect("acknowledged now");
        assert_eq!(Datagram::parse(ack).unwrap().seq, 1);
        assert_eq!(r.stats().duplicates, 0, "taken as new, once");
        feed(
            &mut r,
            now,
            2,
            Message::Done {
                length: 2,
                crc: crc32fast::hash(b"xy"),
            },
        );
        store(&mut r, now);
        assert_eq!(*r.status(), Status::Complete);
    }

    /// With a window, a block kept ahead is never dropped when the storage would block:
    /// it stays kept, is offered again after the ack delay, and a copy the sender
    /// resends meanwhile is taken for what it is (never written twice, never mistaken
    /// for a later block that lands in the same slot).
    #[test]
    fn a_kept_block_waits_for_a_busy_storage_and_is_not_lost() {
        /// Blocks its second write only.
        struct Busy(u32, Vec<u8>);
        impl io::Write for Busy {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0 += 1;
                if self.0 == 2 {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                self.1.extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        impl Sink for Busy {
            fn commit(&mut self) -> io::Result<()> {
                assert_eq!(self.1, b"aabbcc");
                Ok(())
            }
        }
        let now = Instant::now();
        let cfg = Config {
            window: 4,
            ..Config::default()
        };
        let mut r = Receiver::new(
            7,
            "127.0.0.1:9".parse().unwrap(),
            Box::new(Busy(0, Vec::new())),
            cfg,
            RtoEstimator::new(cfg.rto),
            None,
            now,
        );
        while r.poll_transmit(now).is_some() {}
        // The acknowledgement queued: its number and its bitmap (empty: none).
        let ack = |r: &mut Receiver| {
            let d = Datagram::parse(r.poll_transmit(now).unwrap()).unwrap();
            match d.message {
                Message::Sack(b) => (d.seq, b.to_vec()),
                Message::Ack => (d.seq, vec![]),
                m => panic!("{m:?}"),
            }
        };
        feed(&mut r, now, 2, Message::Data(b"bb"));
        assert_eq!(ack(&mut r), (0, vec![0x40]));
        // 1 is written, 2 (kept) finds the storage busy: still kept, still acknowledged.
        feed(&mut r, now, 1, Message::Data(b"aa"));
        // (Block 2 is what the cumulative number waits for: no bit can say it is kept.)
        assert_eq!(ack(&mut r), (1, vec![]));
        assert_eq!(r.stats().deferred, 1);
        // The sender resends 2 meanwhile: a copy of the kept one; the storage takes it.
        feed(&mut r, now, 2, Message::Data(b"bb"));
        assert_eq!(ack(&mut r), (2, vec![]));
        assert_eq!(r.stats().duplicates, 1);
        assert_eq!(
            r.poll_timeout(),
            Some(now + cfg.give_up),
            "nothing left to retry"
        );
        // Blocks 3 to 6 use the same slots again: nothing stale is left in them.
        let retry = now + cfg.ack_delay;
        r.handle_timeout(retry);
        feed(&mut r, retry, 3, Message::Data(b"cc"));
        let crc = crc32fast::hash(b"aabbcc");
        feed(&mut r, retry, 4, Message::Done { length: 6, crc });
        store(&mut r, retry);
        assert_eq!(*r.status(), Status::Complete);
    }

    /// Found in review: `seq + 1` on a DONE numbered u64::MAX overflowed (a panic in
    /// debug builds, reachable by any peer that knows the session id).
    #[test]
    fn extreme_sequence_numbers_are_dropped_not_a_panic() {
        let now = Instant::now();
        let mut r = receiver(now);
        for seq in [u64::MAX, u64::MAX - 1] {
            feed(&mut r, now, seq, Message::Done { length: 0, crc: 0 });
            feed(&mut r, now, seq, Message::Data(b"x"));
        }
        feed(&mut r, now, 1, Message::Done { length: 0, crc: 0 });
        store(&mut r, now);
        assert_eq!(*r.status(), Status::Complete);
        feed(&mut r, now, u64::MAX, Message::Done { length: 0, crc: 0 });
        assert_eq!(r.stats().dropped, 5);
    }

    /// Found in review: an ERROR while lingering after a verified, committed DONE (the
    /// sender gave up on our lost acks) turned a stored file into a reported failure.
    #[test]
    fn an_error_while_lingering_does_not_undo_a_success() {
        let now = Instant::now();
        let mut r = receiver(now);
        feed(&mut r, now, 1, Message::Data(b"abc"));
        let crc = crate::wire::crc32(b"abc");
        feed(&mut r, now, 2, Message::Done { length: 3, crc });
        store(&mut r, now);
        assert_eq!(*r.status(), Status::Complete);
        feed(
            &mut r,
            now,
            2,
            Message::Error {
                code: crate::wire::ErrorCode::Aborted,
                message: "gave up",
            },
        );
        assert_eq!(*r.status(), Status::Closed);
    }

    /// A hostile or broken sender cannot make a receiver write past the announced
    /// size, nor close the stream at another length.
    #[test]
    fn nothing_is_written_past_the_announced_size() {
        let now = Instant::now();
        let cfg = Config::default();
        let peer = "127.0.0.1:9".parse().unwrap();
        let sink = crate::sim::Capture::default();
        let mut r = Receiver::new(
            7,
            peer,
            Box::new(sink.clone()),
            cfg,
            RtoEstimator::new(cfg.rto),
            None,
            now,
        );
        r.expect_length(6);
        let _ = r.poll_transmit(now);
        feed(&mut r, now, 1, Message::Data(b"abcd"));
        feed(&mut r, now, 2, Message::Data(b"efgh"));
        assert!(
            matches!(
                r.status(),
                Status::Failed(TransferError::Announced {
                    announced: 6,
                    got: 8
                })
            ),
            "{:?}",
            r.status()
        );
        assert_eq!(sink.contents(), b"abcd");
        let e = Datagram::parse(r.poll_transmit(now).unwrap()).unwrap();
        assert!(matches!(
            e.message,
            Message::Error {
                code: crate::wire::ErrorCode::Integrity,
                ..
            }
        ));
        // A DONE at another length than announced fails too, even if it matches the data.
        let mut r = receiver(now);
        r.expect_length(6);
        feed(&mut r, now, 1, Message::Data(b"abc"));
        let crc = crate::wire::crc32(b"abc");
        feed(&mut r, now, 2, Message::Done { length: 3, crc });
        assert!(matches!(
            r.status(),
            Status::Failed(TransferError::Announced { .. })
        ));
    }

    /// While the data is being stored, DONE is answered with WAIT, never ACK; the ACK
    /// comes once the driver reports it stored; a store that fails tells the sender.
    #[test]
    fn done_is_answered_with_wait_while_storing() {
        let now = Instant::now();
        for ok in [true, false] {
            let mut r = receiver(now);
            let _ = r.poll_transmit(now);
            feed(&mut r, now, 1, Message::Data(b"abc"));
            let _ = r.poll_transmit(now);
            let crc = crate::wire::crc32(b"abc");
            feed(&mut r, now, 2, Message::Done { length: 3, crc });
            let sink = r.poll_commit().expect("handed out once DONE is verified");
            assert!(r.poll_commit().is_none(), "handed out twice");
            let reply = Datagram::parse(r.poll_transmit(now).unwrap()).unwrap();
            assert_eq!((reply.message, reply.seq), (Message::Wait, 2));
            feed(&mut r, now, 2, Message::Done { length: 3, crc });
            let reply = Datagram::parse(r.poll_transmit(now).unwrap()).unwrap();
            assert_eq!(reply.message, Message::Wait);
            assert_eq!(*r.status(), Status::Running);
            drop(sink);
            let result = if ok {
                Ok(())
            } else {
                Err(std::io::Error::other("disk full"))
            };
            r.commit_done(now, result);
            let reply = Datagram::parse(r.poll_transmit(now).unwrap()).unwrap();
            if ok {
                assert_eq!((reply.message, reply.seq), (Message::Ack, 2));
                assert_eq!(*r.status(), Status::Complete);
            } else {
                assert!(matches!(
                    reply.message,
                    Message::Error {
                        code: crate::wire::ErrorCode::Io,
                        ..
                    }
                ));
                assert!(matches!(r.status(), Status::Failed(_)));
            }
        }
    }

    /// Karn's rule on the receiver's side: no sample from an ack that was sent more
    /// than once, however the duplicates interleave.
    #[test]
    fn no_round_trip_sample_from_an_ack_sent_twice() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut r = receiver(t0);
        feed(&mut r, ms(1), 1, Message::Data(b"a"));
        feed(&mut r, ms(2), 2, Message::Data(b"b"));
        feed(&mut r, ms(3), 2, Message::Data(b"b"));
        feed(&mut r, ms(4), 1, Message::Data(b"a"));
        feed(&mut r, ms(5), 2, Message::Data(b"b"));
        let before = r.rto().srtt();
        feed(&mut r, ms(505), 3, Message::Data(b"c"));
        assert_eq!(r.rto().srtt(), before);
    }
}
