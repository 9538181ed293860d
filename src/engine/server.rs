//! The server's side of one session (PROTOCOL.md §4.3, §5.5): the answer to an
//! accepted REQUEST, and the anti-amplification budget.
//!
//! Deciding *whether* to accept (paths, files, policy) is the server driver's job; a
//! [`ServerSession`] starts once it has decided, with the source or sink it opened.

use std::collections::VecDeque;
use std::io::Read;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::codec::{Codec, Udpft};
use super::frame::{Accept, ErrorCode, Frame, Op, SessionId};
use super::{Config, Event, Receiver, Sender, Sink, Stats, Status};
use crate::rto::RtoEstimator;
use crate::wire;

/// How long an answered delete or exit is remembered, to answer a resent REQUEST
/// with the same ACCEPT instead of acting twice.
pub const ANSWER_LINGER: Duration = Duration::from_secs(5);

enum Role {
    /// get or list: the server sends; its ACCEPT is packet 0.
    Send(Sender),
    /// put: the server receives; its ACCEPT acknowledges the REQUEST.
    Receive(Receiver),
    /// delete or exit, already done: the ACCEPT, resent for each resent REQUEST.
    Answered {
        reply: Vec<u8>,
        pending: bool,
        until: Instant,
        status: Status,
    },
}

/// One accepted session on the server.
///
/// Guarantees (anti-amplification): until the client has sent a datagram carrying this
/// session's random id, which only the server's ACCEPT told it, the session hands out
/// no more bytes than it has received from the client's address; whatever exceeds
/// that is held back as if lost, and the timers or the client's resent REQUEST retry.
pub struct ServerSession {
    id: SessionId,
    nonce: SessionId,
    peer: SocketAddr,
    op: Op,
    role: Role,
    validated: bool,
    received_bytes: u64,
    sent_bytes: u64,
    /// Datagrams not sent because of the budget.
    pub held_back: u64,
    foreign: u64,
    events: VecDeque<Event>,
    trace: bool,
}

impl ServerSession {
    fn new(
        id: SessionId,
        peer: SocketAddr,
        nonce: SessionId,
        op: Op,
        request_len: usize,
        role: Role,
        cfg: &Config,
    ) -> Self {
        ServerSession {
            id,
            nonce,
            peer,
            op,
            role,
            validated: false,
            received_bytes: request_len as u64,
            sent_bytes: 0,
            held_back: 0,
            foreign: 0,
            events: VecDeque::new(),
            trace: cfg.trace,
        }
    }

    /// Answers a get or list: sends ACCEPT (with `size`, or [`wire::UNKNOWN_SIZE`]) as
    /// packet 0, then the stream read from `source` in blocks of `cfg.block_size`.
    #[allow(clippy::too_many_arguments)]
    pub fn send(
        id: SessionId,
        peer: SocketAddr,
        nonce: SessionId,
        request_len: usize,
        op: Op,
        size: u64,
        source: Box<dyn Read + Send>,
        cfg: Config,
    ) -> Self {
        let accept = Accept {
            nonce,
            op,
            block_size: cfg.block_size,
            size,
            window: cfg.window,
        };
        let sender = Sender::new(
            id,
            peer,
            source,
            cfg,
            RtoEstimator::new(cfg.rto),
            Some(accept),
        );
        Self::new(id, peer, nonce, op, request_len, Role::Send(sender), &cfg)
    }

    /// Answers a put of `size` bytes (the REQUEST's; [`wire::UNKNOWN_SIZE`] if not
    /// known): sends ACCEPT, then receives the stream into `sink`.
    #[allow(clippy::too_many_arguments)]
    pub fn receive(
        id: SessionId,
        peer: SocketAddr,
        nonce: SessionId,
        request_len: usize,
        size: u64,
        sink: Box<dyn Sink + Send>,
        cfg: Config,
        now: Instant,
    ) -> Self {
        let accept = Accept {
            nonce,
            op: Op::Put,
            block_size: cfg.block_size,
            size: 0,
            window: cfg.window,
        };
        // Linger as long as a client gives up after: if our ack of DONE is lost, its
        // resent DONE must still find us, or a stored file would be reported as failed.
        let cfg = Config {
            linger: cfg.linger.max(cfg.give_up),
            ..cfg
        };
        let mut receiver = Receiver::new(
            id,
            peer,
            sink,
            cfg,
            RtoEstimator::new(cfg.rto),
            Some(accept),
            now,
        );
        receiver.expect_length(size);
        Self::new(
            id,
            peer,
            nonce,
            Op::Put,
            request_len,
            Role::Receive(receiver),
            &cfg,
        )
    }

    /// Answers a delete or exit that the server has already carried out.
    pub fn answered(
        id: SessionId,
        peer: SocketAddr,
        nonce: SessionId,
        request_len: usize,
        op: Op,
        cfg: Config,
        now: Instant,
    ) -> Self {
        let accept = Frame::Accept(Accept {
            nonce,
            op,
            block_size: cfg.block_size,
            size: 0,
            window: 1,
        });
        let mut reply = vec![0; wire::MAX_DATAGRAM];
        let n = Udpft
            .encode(id, &accept, &mut reply)
            .expect("an ACCEPT always encodes");
        reply.truncate(n);
        let role = Role::Answered {
            reply,
            pending: true,
            until: now + cfg.linger.max(ANSWER_LINGER),
            status: Status::Complete,
        };
        Self::new(id, peer, nonce, op, request_len, role, &cfg)
    }

    /// Feeds in a frame that the driver routed here: a REQUEST carrying this session's
    /// nonce, or anything carrying its id; `session` is the key its datagram carried,
    /// `wire_len` the datagram's size.
    pub fn handle(
        &mut self,
        now: Instant,
        from: SocketAddr,
        session: SessionId,
        f: &Frame,
        wire_len: usize,
    ) {
        if from != self.peer {
            // Someone else using our id (or nonce): not proof of anything; drop it.
            self.foreign += 1;
            if self.trace {
                self.events.push_back(Event::Foreign);
            }
            return;
        }
        match f {
            Frame::Request(_) if session == self.nonce => {}
            // Only the ACCEPT, sent to the client's address, told it our id: using it
            // proves the client receives there (PROTOCOL.md §5.5).
            Frame::Request(_) => {
                self.foreign += 1;
                return;
            }
            _ if session == self.id => self.validated = true,
            _ => {
                self.foreign += 1;
                return;
            }
        }
        self.received_bytes += wire_len as u64;
        match &mut self.role {
            Role::Send(s) => s.handle(now, f),
            Role::Receive(r) => r.handle(now, f),
            Role::Answered { pending, .. } => {
                if matches!(f, Frame::Request(_)) {
                    *pending = true;
                }
            }
        }
    }

    /// Checks timers. Calling it early is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        match &mut self.role {
            Role::Send(s) => s.handle_timeout(now),
            Role::Receive(r) => r.handle_timeout(now),
            Role::Answered { until, status, .. } => {
                if now >= *until {
                    *status = Status::Closed;
                }
            }
        }
    }

    /// The next datagram to send to [`ServerSession::peer`], within the budget.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<&[u8]> {
        let budget = self.received_bytes.saturating_sub(self.sent_bytes);
        let bytes: &[u8] = match &mut self.role {
            Role::Send(s) => s.poll_transmit(now),
            Role::Receive(r) => r.poll_transmit(now),
            Role::Answered { reply, pending, .. } => std::mem::take(pending).then_some(&reply[..]),
        }?;
        let len = bytes.len() as u64;
        if self.validated || len <= budget {
            self.sent_bytes += len;
            Some(bytes)
        } else {
            // Over budget: dropped as if lost. Each role sends one packet at a time,
            // so nothing else is waiting behind it.
            self.held_back += 1;
            None
        }
    }

    /// When [`ServerSession::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.role {
            Role::Send(s) => s.poll_timeout(),
            Role::Receive(r) => r.poll_timeout(),
            Role::Answered { until, status, .. } => (*status != Status::Closed).then_some(*until),
        }
    }

    /// The next trace event (only recorded with [`Config::trace`]).
    pub fn poll_event(&mut self) -> Option<Event> {
        if let Some(e) = self.events.pop_front() {
            return Some(e);
        }
        match &mut self.role {
            Role::Send(s) => s.poll_event(),
            Role::Receive(r) => r.poll_event(),
            Role::Answered { .. } => None,
        }
    }

    pub fn status(&self) -> &Status {
        match &self.role {
            Role::Send(s) => s.status(),
            Role::Receive(r) => r.status(),
            Role::Answered { status, .. } => status,
        }
    }

    /// For a get or list, whether every block was acknowledged (see
    /// [`Sender::data_acknowledged`]).
    pub fn data_acknowledged(&self) -> bool {
        matches!(&self.role, Role::Send(s) if s.data_acknowledged())
    }

    /// Counters of this session.
    pub fn stats(&self) -> Stats {
        let mut s = match &self.role {
            Role::Send(s) => *s.stats(),
            Role::Receive(r) => *r.stats(),
            Role::Answered { .. } => Stats::default(),
        };
        s.dropped += self.foreign;
        s
    }

    /// The smoothed round trip, if measured.
    pub fn srtt(&self) -> Option<Duration> {
        match &self.role {
            Role::Send(s) => s.rto().srtt(),
            Role::Receive(r) => r.rto().srtt(),
            Role::Answered { .. } => None,
        }
    }

    /// The sink to store once an upload's DONE is verified (see
    /// [`Receiver::poll_commit`]); report with [`ServerSession::commit_done`].
    pub fn poll_commit(&mut self) -> Option<Box<dyn Sink + Send>> {
        match &mut self.role {
            Role::Receive(r) => r.poll_commit(),
            _ => None,
        }
    }

    /// The sink of an upload that ended unstored, to be discarded off the network
    /// thread (see [`Receiver::take_sink`]).
    pub fn take_sink(&mut self) -> Option<Box<dyn Sink + Send>> {
        match &mut self.role {
            Role::Receive(r) => r.take_sink(),
            _ => None,
        }
    }

    /// The outcome of storing what [`ServerSession::poll_commit`] handed out.
    pub fn commit_done(&mut self, now: Instant, result: std::io::Result<()>) {
        if let Role::Receive(r) = &mut self.role {
            r.commit_done(now, result);
        }
    }

    /// The driver's storage may be used again after it said it would block (see
    /// [`Sender::source_ready`]); harmless at any other time.
    pub fn io_ready(&mut self) {
        if let Role::Send(s) = &mut self.role {
            s.source_ready();
        }
    }

    /// Abandons the session (server shutdown); the client is sent an ERROR.
    pub fn abort(&mut self, reason: &str) {
        match &mut self.role {
            Role::Send(s) => s.abort(reason),
            Role::Receive(r) => r.abort(reason),
            Role::Answered { .. } => {}
        }
    }

    /// Counts a datagram that could not be parsed but was routed here by address.
    pub fn note_dropped(&mut self, e: wire::WireError) {
        match &mut self.role {
            Role::Send(s) => s.note_dropped(e),
            Role::Receive(r) => r.note_dropped(e),
            Role::Answered { .. } => self.foreign += 1,
        }
    }

    pub fn id(&self) -> SessionId {
        self.id
    }
    pub fn nonce(&self) -> SessionId {
        self.nonce
    }
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }
    pub fn op(&self) -> Op {
        self.op
    }
    /// Records that the client proved its address before the session began (it echoed
    /// a RETRY's token): the anti-amplification budget no longer applies.
    pub fn mark_validated(&mut self) {
        self.validated = true;
    }

    /// Whether the client has proven it receives at its address.
    pub fn validated(&self) -> bool {
        self.validated
    }
}

/// Encodes into `buf` the ERROR that refuses a REQUEST whose nonce was `nonce`, no
/// longer than `budget` bytes (the REQUEST's size: anti-amplification), shortening the
/// message if it must. Returns the datagram's length.
pub fn reject(
    nonce: SessionId,
    code: ErrorCode,
    message: &str,
    budget: usize,
    buf: &mut [u8],
) -> usize {
    let room = budget
        .saturating_sub(wire::OVERHEAD + 2)
        .min(wire::MAX_MESSAGE_LEN);
    let e = Frame::Error {
        seq: 0,
        code,
        message: super::truncate_utf8(message, room),
    };
    Udpft.encode(nonce, &e, buf).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Datagram, Message, Request};

    fn feed(s: &mut ServerSession, now: Instant, from: SocketAddr, b: &[u8]) {
        let (key, f) = Udpft.decode(b, 0).unwrap();
        s.handle(now, from, key, &f, b.len());
    }

    fn request(session: SessionId) -> Vec<u8> {
        let d = Datagram {
            session,
            seq: 0,
            message: Message::Request(Request {
                token: None,
                op: Op::Get,
                block_size: 512,
                size: 0,
                name: "f",
                window: 1,
            }),
        };
        let mut b = vec![0; d.wire_len()];
        d.emit(&mut b).unwrap();
        b
    }

    #[test]
    fn only_a_non_request_carrying_the_id_from_the_peer_validates() {
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let now = Instant::now();
        let src = Box::new(std::io::Cursor::new(vec![1u8; 10]));
        let mut s = ServerSession::send(77, peer, 5, 256, Op::Get, 10, src, Config::default());
        let ack0 = {
            let d = Datagram {
                session: 77,
                seq: 0,
                message: Message::Ack,
            };
            let mut b = vec![0; d.wire_len()];
            d.emit(&mut b).unwrap();
            b
        };
        // A REQUEST that carries the id instead of the nonce: not proof of anything.
        let r = request(77);
        feed(&mut s, now, peer, &r);
        assert!(!s.validated());
        // The right id from another address: not proof either.
        let other: SocketAddr = "127.0.0.1:5001".parse().unwrap();
        feed(&mut s, now, other, &ack0);
        assert!(!s.validated());
        feed(&mut s, now, peer, &ack0);
        assert!(s.validated());
    }
}
