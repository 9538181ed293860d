//! The client's side of a TFTP transfer, sans-IO (TFTP.md §4): the request and its
//! resends, the server's first answer (OACK, or plain RFC 1350 when it ignores the
//! options), the transfer ID it comes from, then the engine's [`Sender`] (a write) or
//! [`Receiver`] (a read) over the TFTP encoding.
//!
//! Guarantees: only datagrams from the server's address are looked at; the first
//! answer fixes the transfer ID (its port), and everything from another port is
//! dropped and counted. An OACK is accepted only within what was asked (RFC 2347);
//! otherwise the server is sent ERROR 8 and the transfer fails. The request is resent
//! only on its timer (adaptive, as every udpft packet), and the client gives up after
//! the give-up time without an answer.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use super::codec::{Tftp, sink_for, source_for};
use super::negotiate::{Asked, Granted, OackError, check_oack};
use super::request::{MAX_ERROR_LEN, Patience, emit_error};
use crate::engine::frame::{Kind, Op, Sack};
use crate::engine::window::{Acked, Expiry, Resend, SendWindow};
use crate::engine::{
    Config, Event, Job, OpeningAck, Receiver, Sender, Sink, Stats, Status, TransferError,
};
use crate::rto::RtoEstimator;
use crate::wire::WireError;
use crate::wire::tftp::{self, ErrorCode as TftpCode, Mode, OptionsBuf, Packet, Request};

enum Phase {
    Requesting {
        job: Option<Job>,
        packet: Vec<u8>,
        /// The request as a window of one packet: its timer, its tries.
        out: SendWindow,
    },
    Sending(Sender<Tftp>),
    Receiving(Receiver<Tftp>),
    Over,
}

/// One TFTP transfer from the client's side. See the module documentation.
pub struct TftpClient {
    name: String,
    server: SocketAddr,
    /// The server's transfer ID: its address and the port of its first answer.
    tid: Option<SocketAddr>,
    op: Op,
    mode: Mode,
    asked: Asked,
    cfg: Config,
    rto: RtoEstimator,
    phase: Phase,
    granted: Option<Granted>,
    /// The TFTP error the server sent, as it sent it (code and message).
    server_error: Option<(TftpCode, String)>,
    /// An ERROR of ours to send once (an unacceptable OACK), and where it is kept
    /// while the driver sends it.
    error_out: Option<Vec<u8>>,
    error_sent: Vec<u8>,
    /// Why the server's OACK was refused.
    oack_error: Option<String>,
    /// A put's resends, held back while a server ignoring duplicates times out, and
    /// how many were.
    patience: Patience,
    held_back: u64,
    status: Status,
    stats: Stats,
    events: VecDeque<Event>,
    /// The job of a request that was never answered, for [`TftpClient::into_unstarted_job`].
    unstarted: Option<Job>,
}

impl TftpClient {
    /// A read (`Job::Get`) or write (`Job::Put`) of `name` on the TFTP server at
    /// `server`, in `mode`, asking for the options in `asked` (a write's `tsize` is its
    /// size). `cfg.block_size` is what the engine will hold the server to if it grants
    /// `blksize`.
    ///
    /// # Errors
    /// A job TFTP cannot do (list, delete, exit), or a name with a NUL or too long for
    /// a request.
    pub fn new(
        server: SocketAddr,
        name: &str,
        mode: Mode,
        job: Job,
        asked: Asked,
        cfg: Config,
    ) -> Result<TftpClient, TransferError> {
        let op = match job {
            Job::Get(_) => Op::Get,
            Job::Put(..) => Op::Put,
            _ => {
                return Err(TransferError::Aborted(
                    "TFTP has only read and write requests".into(),
                ));
            }
        };
        if name.contains('\0') {
            return Err(TransferError::Aborted(
                "a TFTP file name cannot contain a NUL byte".into(),
            ));
        }
        let packet = request_bytes(op, name, mode, &asked)?;
        Ok(TftpClient {
            name: name.to_string(),
            server,
            tid: None,
            op,
            mode,
            asked,
            cfg,
            rto: RtoEstimator::new(super::first_timeout(cfg.rto)),
            phase: Phase::Requesting {
                out: request_window(packet.len()),
                job: Some(job),
                packet,
            },
            granted: None,
            server_error: None,
            error_out: None,
            error_sent: Vec::new(),
            oack_error: None,
            patience: Patience::new(std::time::Duration::ZERO),
            held_back: 0,
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

    fn drop_foreign(&mut self) {
        self.stats.dropped += 1;
        self.trace(Event::Foreign);
    }

    /// Feeds in one datagram from `from`.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        if from.ip() != self.server.ip() {
            return self.drop_foreign();
        }
        if self.tid.is_some_and(|tid| from != tid) {
            // Another port of the server's host: not this transfer (RFC 1350).
            return self.drop_foreign();
        }
        // The server's own ERROR, kept as it was sent: code and message.
        if let Ok(Packet::Error { code, message }) = Packet::parse(bytes) {
            self.server_error = Some((code, String::from_utf8_lossy(message).into_owned()));
        }
        match &mut self.phase {
            Phase::Requesting { .. } => self.first_answer(now, from, bytes),
            Phase::Sending(s) => s.handle_datagram(now, bytes),
            Phase::Receiving(r) => r.handle_datagram(now, bytes),
            Phase::Over => {}
        }
    }

    /// The server's first answer: OACK, DATA 1 (a read without options), ACK 0 (a
    /// write without options), or ERROR.
    fn first_answer(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        let p = match Packet::parse(bytes) {
            Ok(p) => p,
            Err(_) => {
                super::super::count_drop(&mut self.stats, WireError::Malformed("TFTP"));
                return self.trace(Event::Dropped(WireError::Malformed("TFTP packet")));
            }
        };
        let granted = match (p, self.op) {
            // RFC 2347: a server that will not take the options ends with ERROR 8; ask
            // again without any (plain RFC 1350), once.
            (Packet::Error { code, .. }, _)
                if code == TftpCode::OPTION_REFUSED && self.asked != Asked::default() =>
            {
                self.stats.received += 1;
                self.server_error = None;
                self.asked = Asked::default();
                let packet = request_bytes(self.op, &self.name, self.mode, &self.asked)
                    .expect("shorter than the request that was built");
                if let Phase::Requesting { packet: p, out, .. } = &mut self.phase {
                    let _ = answered(out, now, &mut self.rto);
                    *out = request_window(packet.len());
                    *p = packet;
                }
                return;
            }
            (Packet::Error { code, message }, _) => {
                self.stats.received += 1;
                self.tid = Some(from);
                return self.fail(TransferError::Remote {
                    code: super::request::udpft_code(code),
                    message: String::from_utf8_lossy(message).into_owned(),
                });
            }
            (Packet::Oack(o), _) => match check_oack(&self.asked, &o) {
                Ok(g) => g,
                Err(e) => {
                    self.tid = Some(from);
                    return self.refuse_oack(e);
                }
            },
            (Packet::Data { block: 1, .. }, Op::Get) | (Packet::Ack { block: 0 }, Op::Put) => {
                Granted::plain()
            }
            _ => return self.drop_foreign(),
        };
        self.stats.received += 1;
        self.tid = Some(from);
        let oack = !granted.oack.is_empty();
        let Phase::Requesting { job, out, .. } = &mut self.phase else {
            unreachable!()
        };
        let rtt = answered(out, now, &mut self.rto);
        let job = job.take().expect("taken once, at the first answer");
        self.trace(Event::Acked {
            kind: Kind::Request,
            seq: 0,
            rtt,
        });
        // RFC 7440's rules, both ways: a fixed window, acknowledged at its end.
        let mut cfg = self.cfg.rfc7440();
        cfg.block_size = granted.blksize;
        // The window the server granted (RFC 7440), 1 without one.
        cfg.window = crate::engine::window_for(
            granted.windowsize.min(u32::from(u16::MAX)) as u16,
            granted.blksize,
        );
        if let Some(t) = granted.timeout {
            cfg.rto.max = cfg.rto.max.min(t);
        }
        let codec = Tftp::new(granted.rollover, OptionsBuf::new());
        let rto = self.rto.clone();
        let octet = self.mode == Mode::Octet;
        self.phase = match job {
            Job::Get(sink) => {
                let opening = if oack {
                    OpeningAck::Ack
                } else {
                    OpeningAck::Nothing
                };
                let mut r = Receiver::with_codec(
                    codec,
                    0,
                    from,
                    sink_for(self.mode, sink),
                    cfg,
                    rto,
                    opening,
                    now,
                );
                if let (true, Some(n)) = (octet, granted.tsize) {
                    r.expect_length(n);
                }
                if !oack {
                    // That DATA 1 is the stream's first block.
                    r.handle_datagram(now, bytes);
                }
                Phase::Receiving(r)
            }
            Job::Put(src, size) => {
                let mut s =
                    Sender::with_codec(codec, 0, from, source_for(self.mode, src), cfg, rto, None);
                if octet {
                    s.announce_length(size);
                }
                Phase::Sending(s)
            }
            _ => unreachable!("checked in new"),
        };
        self.granted = Some(granted);
    }

    /// Whether the server refused the options and the request went again without them.
    pub fn options_dropped(&self) -> bool {
        self.asked == Asked::default()
    }

    /// An OACK we cannot accept: ERROR 8 to the server, and the transfer fails.
    fn refuse_oack(&mut self, e: OackError) {
        let msg = e.to_string();
        let mut buf = vec![0u8; MAX_ERROR_LEN];
        let n = emit_error(TftpCode::OPTION_REFUSED, &msg, MAX_ERROR_LEN, &mut buf);
        buf.truncate(n);
        self.error_out = Some(buf);
        self.fail(TransferError::Protocol {
            peer: self.server,
            what: "the server's OACK granted options that were not asked for, or values outside what was asked",
        });
        self.oack_error = Some(msg);
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
                Expiry::GiveUp { tries, over } => {
                    let peer = self.server;
                    self.fail(TransferError::NoAnswer { peer, tries, over })
                }
            },
            Phase::Sending(s) => s.handle_timeout(now),
            Phase::Receiving(r) => r.handle_timeout(now),
            Phase::Over => {}
        }
    }

    /// The next datagram to send and where (the server's port until it answers, its
    /// transfer ID after).
    pub fn poll_transmit(&mut self, now: Instant) -> Option<(SocketAddr, &[u8])> {
        let to = self.tid.unwrap_or(self.server);
        if let Some(e) = self.error_out.take() {
            self.error_sent = e;
            return Some((to, &self.error_sent));
        }
        match &mut self.phase {
            Phase::Requesting { packet, out, .. } => {
                let (seq, why) = out.next_to_send()?;
                out.on_transmit(seq, now, &self.rto);
                self.stats.sent += 1;
                let len = packet.len();
                let event = match why {
                    Some(Resend::Timeout { after }) => {
                        self.stats.resent += 1;
                        Event::Resent {
                            kind: Kind::Request,
                            seq: 0,
                            len,
                            after,
                        }
                    }
                    _ => Event::Sent {
                        kind: Kind::Request,
                        seq: 0,
                        len,
                    },
                };
                if self.cfg.trace {
                    self.events.push_back(event);
                }
                Some((to, &packet[..len]))
            }
            Phase::Sending(s) => {
                // A put sends one block at a time: one datagram per call at most. A
                // copy held back is as if lost: the sender's timer carries on.
                let b = s.poll_transmit(now)?;
                if self.patience.allow(now, b) {
                    Some((to, b))
                } else {
                    self.held_back += 1;
                    None
                }
            }
            Phase::Receiving(r) => r.poll_transmit(now).map(|b| (to, b)),
            Phase::Over => None,
        }
    }

    /// When [`TftpClient::handle_timeout`] should next be called.
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

    pub fn status(&self) -> &Status {
        match &self.phase {
            Phase::Sending(s) => s.status(),
            Phase::Receiving(r) => r.status(),
            _ => &self.status,
        }
    }

    /// What is in force once the server answered (its OACK, or RFC 1350's defaults).
    pub fn granted(&self) -> Option<&Granted> {
        self.granted.as_ref()
    }

    /// The server's transfer ID, once it answered.
    pub fn tid(&self) -> Option<SocketAddr> {
        self.tid
    }

    /// The TFTP error the server sent, if it sent one: its code and message as sent.
    pub fn server_error(&self) -> Option<&(TftpCode, String)> {
        self.server_error.as_ref()
    }

    /// Why we refused the server's OACK, if we did.
    pub fn oack_error(&self) -> Option<&str> {
        self.oack_error.as_deref()
    }

    /// Counters of the whole transfer, request included.
    pub fn stats(&self) -> Stats {
        let mut s = self.stats;
        match &self.phase {
            Phase::Sending(x) => s.add(x.stats()),
            Phase::Receiving(x) => s.add(x.stats()),
            _ => {}
        }
        s
    }

    pub fn rto(&self) -> &RtoEstimator {
        match &self.phase {
            Phase::Sending(s) => s.rto(),
            Phase::Receiving(r) => r.rto(),
            _ => &self.rto,
        }
    }

    /// Abandons the transfer; a running one tells the server with an ERROR.
    pub fn abort(&mut self, reason: &str) {
        match &mut self.phase {
            Phase::Sending(s) => s.abort(reason),
            Phase::Receiving(r) => r.abort(reason),
            Phase::Requesting { .. } => self.fail(TransferError::Aborted(reason.to_string())),
            Phase::Over => {}
        }
    }

    /// The sink to store once the last block arrived (see [`Receiver::poll_commit`]).
    pub fn poll_commit(&mut self) -> Option<Box<dyn Sink + Send>> {
        match &mut self.phase {
            Phase::Receiving(r) => r.poll_commit(),
            _ => None,
        }
    }

    /// The outcome of storing what [`TftpClient::poll_commit`] handed out.
    pub fn commit_done(&mut self, now: Instant, result: std::io::Result<()>) {
        if let Phase::Receiving(r) = &mut self.phase {
            r.commit_done(now, result);
        }
    }

    /// The job back, if the server never answered: nothing was read from its source
    /// or written to its sink, so it can be tried at another address.
    pub fn into_unstarted_job(self) -> Option<Job> {
        if self.tid.is_some() {
            return None;
        }
        match self.phase {
            Phase::Requesting { job, .. } => job,
            _ => self.unstarted,
        }
    }

    pub fn op(&self) -> Op {
        self.op
    }

    pub fn server(&self) -> SocketAddr {
        self.server
    }
}

/// The RRQ or WRQ for `name` asking `asked`.
fn request_bytes(op: Op, name: &str, mode: Mode, asked: &Asked) -> Result<Vec<u8>, TransferError> {
    let opts = asked.options();
    let r = Request {
        filename: name.as_bytes(),
        mode,
        options: opts.options(),
    };
    let p = if op == Op::Get {
        Packet::Rrq(r)
    } else {
        Packet::Wrq(r)
    };
    if p.len() > tftp::MAX_REQUEST_LEN {
        return Err(TransferError::Aborted(format!(
            "the file name is too long for a TFTP request ({} bytes)",
            name.len()
        )));
    }
    let mut packet = vec![0u8; p.len()];
    p.emit(&mut packet).expect("a checked request encodes");
    Ok(packet)
}

/// The request as a send window of one packet (its timer and tries).
fn request_window(len: usize) -> SendWindow {
    let mut w = SendWindow::new(1, 0);
    w.push(Kind::Request, len, 0);
    w
}

/// The request was answered at `now`: its round trip, if it was sent once (Karn).
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
