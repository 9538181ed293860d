//! The client's side of a session: the REQUEST/ACCEPT handshake (PROTOCOL.md §4.3),
//! then a [`Sender`] (put) or a [`Receiver`] (get, list).

use std::collections::VecDeque;
use std::io::Read;
use std::net::SocketAddr;
use std::time::Instant;

use super::codec::{Codec, Udpft};
use super::frame::{Accept, Frame, Kind, Op, Request, Sack, SessionId};
use super::window::{Acked, Expiry, Resend, SendWindow};
use super::{Config, Event, Receiver, Sender, Sink, Stats, Status, TransferError};
use crate::rto::RtoEstimator;
use crate::wire;

/// What the client wants done, with the data source or sink it needs.
pub enum Job {
    /// Download into the sink.
    Get(Box<dyn Sink + Send>),
    /// Download the listing of a directory into the sink.
    List(Box<dyn Sink + Send>),
    /// Upload `size` bytes from the source.
    Put(Box<dyn Read + Send>, u64),
    /// Remove a file on the server.
    Delete,
    /// Ask the server to shut down.
    Exit,
}

impl Job {
    pub fn op(&self) -> Op {
        match self {
            Job::Get(_) => Op::Get,
            Job::List(_) => Op::List,
            Job::Put(..) => Op::Put,
            Job::Delete => Op::Delete,
            Job::Exit => Op::Exit,
        }
    }
}

enum Phase {
    Requesting {
        job: Option<Job>,
        packet: Vec<u8>,
        /// The REQUEST as a window of one packet: its timer, its tries.
        out: SendWindow,
    },
    Sending(Sender),
    Receiving(Receiver),
    /// Delete or exit answered, or the handshake failed.
    Over,
}

/// One client session, from the first REQUEST to the close.
///
/// Guarantees: only an ACCEPT that echoes this session's random nonce, from the
/// server's address, starts the transfer; everything else before it is dropped and
/// counted, except an ERROR carrying the nonce, which fails the session.
pub struct ClientSession {
    nonce: SessionId,
    peer: SocketAddr,
    op: Op,
    cfg: Config,
    rto: RtoEstimator,
    phase: Phase,
    accepted: Option<(SessionId, Accept)>,
    status: Status,
    /// Counters of the handshake; the stream keeps its own.
    stats: Stats,
    events: VecDeque<Event>,
    /// The job of a handshake that failed, kept for [`ClientSession::into_unstarted_job`].
    unstarted: Option<Job>,
}

impl ClientSession {
    /// Starts a session with the server at `peer`. `nonce` must be random and non-zero
    /// (it is what proves the ACCEPT answers this REQUEST); `name` is the remote path.
    ///
    /// # Errors
    /// If `name` is longer than [`wire::MAX_NAME_LEN`] bytes.
    pub fn new(
        peer: SocketAddr,
        nonce: SessionId,
        name: &str,
        job: Job,
        cfg: Config,
    ) -> Result<ClientSession, TransferError> {
        if name.len() > wire::MAX_NAME_LEN {
            return Err(TransferError::Aborted(format!(
                "the remote name is {} bytes long; the limit is {}",
                name.len(),
                wire::MAX_NAME_LEN
            )));
        }
        let op = job.op();
        let size = match &job {
            Job::Put(_, size) => *size,
            _ => 0,
        };
        let request = Frame::Request(Request {
            token: None,
            op,
            block_size: cfg
                .block_size
                .clamp(wire::MIN_BLOCK_SIZE, wire::MAX_BLOCK_SIZE),
            size,
            name,
            window: super::window_for(cfg.window, cfg.block_size),
        });
        let mut packet = vec![0; wire::MAX_DATAGRAM];
        let len = Udpft
            .encode(nonce, &request, &mut packet)
            .expect("a checked request always encodes");
        packet.truncate(len);
        Ok(ClientSession {
            nonce,
            peer,
            op,
            cfg,
            rto: RtoEstimator::new(cfg.rto),
            phase: Phase::Requesting {
                job: Some(job),
                packet,
                out: request_window(len),
            },
            accepted: None,
            status: Status::Running,
            stats: Stats::default(),
            events: VecDeque::new(),
            unstarted: None,
        })
    }

    fn trace(&mut self, e: Event) {
        if self.cfg.trace {
            self.events.push_back(e);
        }
    }

    fn fail(&mut self, e: TransferError) {
        self.trace(Event::Failed(e.clone()));
        self.status = Status::Failed(e);
        if let Phase::Requesting { job, .. } = &mut self.phase {
            self.unstarted = job.take();
        }
        self.phase = Phase::Over;
    }

    /// Feeds in one datagram received from the server's address.
    pub fn handle_datagram(&mut self, now: Instant, bytes: &[u8]) {
        let (session, f) = match Udpft.decode(bytes, 0) {
            Ok(d) => d,
            Err(e) => {
                match &mut self.phase {
                    Phase::Sending(s) => s.note_dropped(e),
                    Phase::Receiving(r) => r.note_dropped(e),
                    _ => {
                        super::count_drop(&mut self.stats, e);
                        self.trace(Event::Dropped(e));
                    }
                }
                return;
            }
        };
        match &mut self.phase {
            Phase::Requesting { .. } => self.handle_handshake(now, session, &f),
            Phase::Sending(s) if session == s.session() => s.handle(now, &f),
            Phase::Receiving(r) if session == r.session() => r.handle(now, &f),
            _ => self.foreign(),
        }
    }

    fn foreign(&mut self) {
        self.stats.dropped += 1;
        self.trace(Event::Foreign);
    }

    fn handle_handshake(&mut self, now: Instant, session: SessionId, f: &Frame) {
        match *f {
            // The server checks our address before it opens anything (PROTOCOL.md §4.3):
            // the same request again, now carrying its token. A second RETRY (the
            // server restarted, or our token expired) is answered the same way.
            Frame::Retry(token) if session == self.nonce => {
                self.stats.received += 1;
                let Phase::Requesting { packet, out, .. } = &mut self.phase else {
                    unreachable!()
                };
                let Ok((_, Frame::Request(req))) = Udpft.decode(packet, 0) else {
                    unreachable!("our own request decodes")
                };
                let again = Frame::Request(Request {
                    token: Some(token),
                    ..req
                });
                let mut next = vec![0; wire::MAX_DATAGRAM];
                let len = Udpft
                    .encode(self.nonce, &again, &mut next)
                    .expect("a checked request always encodes");
                next.truncate(len);
                let rtt = answered(out, now, &mut self.rto);
                *packet = next;
                *out = request_window(len);
                self.trace(Event::Retried { rtt });
            }
            Frame::Accept(a) if a.nonce == self.nonce && session != 0 => {
                let asked = super::window_for(self.cfg.window, self.cfg.block_size);
                if a.op != self.op
                    || a.block_size > self.cfg.block_size.max(wire::MIN_BLOCK_SIZE)
                    || a.window > asked
                {
                    return self.fail(TransferError::Protocol {
                        peer: self.peer,
                        what: "the ACCEPT does not match the request",
                    });
                }
                self.stats.received += 1;
                let Phase::Requesting { job, out, .. } = &mut self.phase else {
                    unreachable!()
                };
                let rtt = answered(out, now, &mut self.rto);
                let job = job.take().expect("the job is taken once, at the ACCEPT");
                self.trace(Event::Acked {
                    kind: Kind::Request,
                    seq: 0,
                    rtt,
                });
                self.accepted = Some((session, a));
                let cfg = Config {
                    block_size: a.block_size,
                    window: a.window,
                    ..self.cfg
                };
                let rto = self.rto.clone();
                self.phase = match job {
                    Job::Get(sink) | Job::List(sink) => {
                        let mut r = Receiver::new(session, self.peer, sink, cfg, rto, None, now);
                        r.expect_length(a.size);
                        Phase::Receiving(r)
                    }
                    Job::Put(source, size) => {
                        let mut s = Sender::new(session, self.peer, source, cfg, rto, None);
                        s.announce_length(size);
                        Phase::Sending(s)
                    }
                    Job::Delete | Job::Exit => {
                        self.status = Status::Closed;
                        Phase::Over
                    }
                };
            }
            Frame::Error { code, message, .. } if session == self.nonce => {
                self.stats.received += 1;
                self.fail(TransferError::Remote {
                    code,
                    message: message.to_string(),
                })
            }
            _ => self.foreign(),
        }
    }

    /// Checks timers. Calling it early is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        match &mut self.phase {
            Phase::Requesting { out, .. } => match out.expire(
                now,
                &mut self.rto,
                out.first_sent().unwrap_or(now) + self.cfg.give_up,
            ) {
                Expiry::NotYet | Expiry::Resend { .. } => {}
                Expiry::GiveUp { tries, over } => self.fail(TransferError::NoAnswer {
                    peer: self.peer,
                    tries,
                    over,
                }),
            },
            Phase::Sending(s) => s.handle_timeout(now),
            Phase::Receiving(r) => r.handle_timeout(now),
            Phase::Over => {}
        }
    }

    /// The next datagram to send to the server, if any. Call until it returns `None`.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<&[u8]> {
        match &mut self.phase {
            Phase::Requesting { packet, out, .. } => {
                let (seq, why) = out.next_to_send()?;
                out.on_transmit(seq, now, &self.rto);
                self.stats.sent += 1;
                let len = packet.len() - wire::OVERHEAD;
                let event = match why {
                    Some(Resend::Timeout { after }) => {
                        self.stats.resent += 1;
                        Event::Resent {
                            kind: Kind::Request,
                            seq,
                            len,
                            after,
                        }
                    }
                    _ => Event::Sent {
                        kind: Kind::Request,
                        seq,
                        len,
                    },
                };
                if self.cfg.trace {
                    self.events.push_back(event);
                }
                Some(&packet[..])
            }
            Phase::Sending(s) => s.poll_transmit(now),
            Phase::Receiving(r) => r.poll_transmit(now),
            Phase::Over => None,
        }
    }

    /// When [`ClientSession::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Requesting { out, .. } => out.deadline(),
            Phase::Sending(s) => s.poll_timeout(),
            Phase::Receiving(r) => r.poll_timeout(),
            Phase::Over => None,
        }
    }

    /// The next trace event (only recorded with [`Config::trace`]).
    pub fn poll_event(&mut self) -> Option<Event> {
        if let Some(e) = self.events.pop_front() {
            return Some(e);
        }
        match &mut self.phase {
            Phase::Sending(s) => s.poll_event(),
            Phase::Receiving(r) => r.poll_event(),
            _ => None,
        }
    }

    /// Where the session stands.
    pub fn status(&self) -> &Status {
        match &self.phase {
            Phase::Sending(s) => s.status(),
            Phase::Receiving(r) => r.status(),
            _ => &self.status,
        }
    }

    /// The server's session id and ACCEPT, once accepted.
    pub fn accepted(&self) -> Option<(SessionId, Accept)> {
        self.accepted
    }

    /// Counters of the whole session, handshake and stream.
    pub fn stats(&self) -> Stats {
        let mut s = self.stats;
        match &self.phase {
            Phase::Sending(x) => s.add(x.stats()),
            Phase::Receiving(x) => s.add(x.stats()),
            _ => {}
        }
        s
    }

    /// The round-trip estimator currently in use.
    pub fn rto(&self) -> &RtoEstimator {
        match &self.phase {
            Phase::Sending(s) => s.rto(),
            Phase::Receiving(r) => r.rto(),
            _ => &self.rto,
        }
    }

    /// Abandons the session; a running stream tells the server with an ERROR.
    pub fn abort(&mut self, reason: &str) {
        match &mut self.phase {
            Phase::Sending(s) => s.abort(reason),
            Phase::Receiving(r) => r.abort(reason),
            Phase::Requesting { .. } => self.fail(TransferError::Aborted(reason.to_string())),
            Phase::Over => {}
        }
    }

    /// The sink to store once a download's DONE is verified (see
    /// [`Receiver::poll_commit`]); report with [`ClientSession::commit_done`].
    pub fn poll_commit(&mut self) -> Option<Box<dyn Sink + Send>> {
        match &mut self.phase {
            Phase::Receiving(r) => r.poll_commit(),
            _ => None,
        }
    }

    /// The outcome of storing what [`ClientSession::poll_commit`] handed out.
    pub fn commit_done(&mut self, now: Instant, result: std::io::Result<()>) {
        if let Phase::Receiving(r) = &mut self.phase {
            r.commit_done(now, result);
        }
    }

    /// The job back, if the server never accepted it: nothing of its source was read
    /// and nothing was written to its sink, so it can be tried at another address.
    pub fn into_unstarted_job(self) -> Option<Job> {
        match self.phase {
            Phase::Requesting { job, .. } => job,
            _ => self.unstarted,
        }
    }

    pub fn op(&self) -> Op {
        self.op
    }
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }
}

/// The REQUEST of `len` bytes as a window of one packet, numbered 0.
fn request_window(len: usize) -> SendWindow {
    let mut w = SendWindow::new(1, 0);
    w.push(Kind::Request, len, 0);
    w
}

/// The REQUEST was answered (RETRY or ACCEPT) at `now`: its round trip, if it was sent
/// once (Karn).
fn answered(
    out: &mut SendWindow,
    now: Instant,
    rto: &mut RtoEstimator,
) -> Option<std::time::Duration> {
    match out.on_ack(now, 0, &Sack::NONE, rto) {
        Acked::Progress { rtt, .. } => rtt,
        _ => None,
    }
}
