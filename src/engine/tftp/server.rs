//! The TFTP half of the server's front door, sans-IO (TFTP.md §3): requests at the
//! listening port, transfers each on their own port (RFC 1350 transfer IDs) or all on
//! the listening one (`--tftp-single-port`), the UEFI size probe, the amplification
//! limit, and one log line per transfer.
//!
//! [`super::super::ServerEndpoint`] owns one [`TftpServer`] and hands it every TFTP
//! datagram; admission (shutting down, session caps) stays with the endpoint, which
//! counts TFTP and udpft transfers together. File operations go out as the same
//! [`IoRequest`]s as udpft's, so storage's rules (confinement, atomic uploads, no
//! overwrite) apply unchanged.
//!
//! Guarantees:
//! - **Amplification.** Until the client has sent an ACK or DATA to a transfer, the
//!   transfer sends it at most two datagrams (the OACK or the first DATA, and one
//!   resend) per request received from it; anything more is held back as if lost. A
//!   refusal's ERROR is at most 516 bytes. ERROR 5 to strangers is rate-limited.
//! - **One transfer per client address and port.** A repeated request is a resend of
//!   the transfer it opened, never a second transfer; a different one supersedes it.
//! - **Never resent on a duplicate ACK**: the engine's Sender only resends on a timer.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::codec::{Tftp, sink_for, source_for};
use super::negotiate::{Direction, Granted, Limits, negotiate};
use super::request::{MAX_ERROR_LEN, Patience, RateLimit, emit_error, served_name, tftp_code};
use crate::engine::endpoint::{IoOutcome, IoRequest, LogLevel, LogLine};
use crate::engine::frame::{Accept, ErrorCode, Frame, Op, SessionId, UNKNOWN_SIZE};
use crate::engine::{Config, Event, OpeningAck, Receiver, Sender, Stats, Status};
use crate::rto::RtoEstimator;
use crate::text::{escape, sanitize};
use crate::wire::tftp::{self, ErrorCode as TftpCode, KnownOptions, Mode, Options, Packet};

/// A TFTP transfer's handle (and its port's, in the driver).
pub type TransferId = SessionId;

/// Which socket a TFTP datagram came in on or goes out of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Via {
    /// The server's listening port (shared with udpft).
    Listen,
    /// The transfer's own port.
    Port(TransferId),
}

/// A socket for the driver to open or close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortRequest {
    /// Open a UDP socket for transfer `id` on the listening address, any port; report
    /// failure with [`TftpServer::port_failed`].
    Open(TransferId),
    /// The transfer is over: close its socket.
    Close(TransferId),
}

/// What the TFTP side of a server may do.
#[derive(Debug, Clone)]
pub struct TftpConfig {
    /// Serve every transfer from the listening port.
    pub single_port: bool,
    pub limits: Limits,
    pub read_only: bool,
    pub overwrite: bool,
    /// Timers and trace of every transfer (its block size is negotiated).
    pub session: Config,
}

/// How many ERROR 5 ("unknown transfer ID") may go out in a burst, and then one per
/// [`TID_ERROR_INTERVAL`].
pub const TID_ERROR_BURST: u32 = 10;
pub const TID_ERROR_INTERVAL: Duration = Duration::from_millis(100);

/// Datagrams a transfer may send its client before the client has acknowledged
/// anything, per request received: the OACK or first DATA, and one resend.
pub const UNPROVEN_SENDS_PER_REQUEST: u32 = 2;

/// Counters of the TFTP side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TftpStats {
    pub transfers: u64,
    pub refused: u64,
    /// Datagrams that were not TFTP packets, or not expected at the listening port.
    pub dropped: u64,
    /// Datagrams at a transfer's port from someone else.
    pub wrong_tid: u64,
    /// Datagrams held back by the amplification limit.
    pub held_back: u64,
    /// Requests that repeated one being answered.
    pub resent_requests: u64,
}

/// A request the endpoint is asked to admit (session caps, shutting down).
#[derive(Debug)]
pub struct NewRequest {
    pub from: SocketAddr,
    pub op: Op,
    mode: Mode,
    /// The name for storage (leading `/` removed).
    name: String,
    bytes: Vec<u8>,
    /// The option section, owned.
    options: Vec<u8>,
    tsize: Option<u64>,
}

impl NewRequest {
    /// The name as log lines show it.
    pub fn shown(&self) -> String {
        escape(&self.name).into_owned()
    }
}

enum Role {
    Send(Sender<Tftp>),
    Receive(Receiver<Tftp>),
}

struct Transfer {
    role: Role,
    client: SocketAddr,
    request: Vec<u8>,
    op: Op,
    path: String,
    granted: String,
    started: Instant,
    port_ready: bool,
    /// The client has sent an ACK or DATA here.
    validated: bool,
    allowed: u32,
    unproven_sent: u32,
    /// An OACK went out for a read and ACK 0 has not come: an ERROR now is the UEFI
    /// size probe's end.
    awaiting_ack0: bool,
    probe: bool,
    /// A sender's resends, held back while a client that ignores duplicates times out.
    patience: Patience,
    committing: bool,
    logged: bool,
    last_bytes: u64,
    last_progress: Instant,
}

impl Transfer {
    fn status(&self) -> &Status {
        match &self.role {
            Role::Send(s) => s.status(),
            Role::Receive(r) => r.status(),
        }
    }
    fn stats(&self) -> Stats {
        match &self.role {
            Role::Send(s) => *s.stats(),
            Role::Receive(r) => *r.stats(),
        }
    }
    fn running(&self) -> bool {
        !self.probe && *self.status() == Status::Running
    }
    fn poll_timeout(&self) -> Option<Instant> {
        if !self.port_ready {
            return None;
        }
        match &self.role {
            Role::Send(s) => s.poll_timeout(),
            Role::Receive(r) => r.poll_timeout(),
        }
    }
}

struct Pending {
    req: NewRequest,
    started: Instant,
}

/// The TFTP side of a server. See the module documentation.
pub struct TftpServer {
    cfg: TftpConfig,
    transfers: HashMap<TransferId, Transfer>,
    pending: HashMap<TransferId, Pending>,
    by_client: HashMap<SocketAddr, TransferId>,
    dirty: VecDeque<TransferId>,
    stateless: VecDeque<(Via, SocketAddr, Vec<u8>)>,
    io: VecDeque<IoRequest>,
    ports: VecDeque<PortRequest>,
    logs: VecDeque<LogLine>,
    events: VecDeque<(SocketAddr, SessionId, Event)>,
    tid_errors: RateLimit,
    stats: TftpStats,
    scratch: Vec<u8>,
}

fn op_name(op: Op) -> &'static str {
    match op {
        Op::Put => "put",
        _ => "get",
    }
}

impl TftpServer {
    pub fn new(cfg: TftpConfig) -> TftpServer {
        TftpServer {
            cfg,
            transfers: HashMap::new(),
            pending: HashMap::new(),
            by_client: HashMap::new(),
            dirty: VecDeque::new(),
            stateless: VecDeque::new(),
            io: VecDeque::new(),
            ports: VecDeque::new(),
            logs: VecDeque::new(),
            events: VecDeque::new(),
            tid_errors: RateLimit::new(TID_ERROR_INTERVAL, TID_ERROR_BURST),
            stats: TftpStats::default(),
            scratch: vec![0u8; MAX_ERROR_LEN],
        }
    }

    pub fn config(&self) -> &TftpConfig {
        &self.cfg
    }

    pub fn stats(&self) -> TftpStats {
        self.stats
    }

    fn log(&mut self, level: LogLevel, text: String) {
        self.logs.push_back(LogLine {
            level,
            session: None,
            text,
        });
    }

    /// A line about transfer `id` of `client` (the driver puts it in that session's span).
    fn log_transfer(&mut self, client: SocketAddr, id: TransferId, text: String) {
        self.logs.push_back(LogLine {
            level: LogLevel::Normal,
            session: Some((client, id)),
            text,
        });
    }

    fn via(&self, id: TransferId) -> Via {
        if self.cfg.single_port {
            Via::Listen
        } else {
            Via::Port(id)
        }
    }

    /// Queues an ERROR to `to` (at most [`MAX_ERROR_LEN`] bytes), sent once.
    fn send_error(&mut self, via: Via, to: SocketAddr, code: TftpCode, message: &str) {
        let n = emit_error(code, message, MAX_ERROR_LEN, &mut self.scratch);
        if n > 0 {
            self.stateless
                .push_back((via, to, self.scratch[..n].to_vec()));
        }
    }

    /// Refuses a request at the listening port: one ERROR, one log line.
    fn refuse_request(
        &mut self,
        from: SocketAddr,
        what: &str,
        name: &str,
        code: TftpCode,
        message: &str,
    ) {
        self.stats.refused += 1;
        self.send_error(Via::Listen, from, code, message);
        self.log(
            LogLevel::Normal,
            format!(
                "{from} tftp {what} '{name}': refused ({code}): {}",
                sanitize(message)
            ),
        );
    }

    /// Refuses an admitted-or-not request for a reason the endpoint found (busy,
    /// shutting down): TFTP has no code for those, so 0 with the message.
    pub fn refuse(&mut self, req: NewRequest, code: ErrorCode, message: &str) {
        let shown = req.shown();
        self.refuse_request(req.from, op_name(req.op), &shown, tftp_code(code), message);
    }

    /// One TFTP datagram from `from`, arrived `via` a socket. A new request comes back
    /// for the endpoint to admit ([`TftpServer::start`]) or refuse
    /// ([`TftpServer::refuse`]); everything else is handled here.
    pub fn handle(
        &mut self,
        now: Instant,
        via: Via,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Option<NewRequest> {
        if let Via::Port(id) = via {
            match self.transfers.get(&id) {
                Some(t) if t.client == from => self.deliver(now, id, bytes),
                Some(_) => {
                    // RFC 1350: a stranger at a transfer's port gets ERROR 5; the
                    // transfer goes on untouched. An ERROR is never answered (two
                    // servers must not bounce errors off each other).
                    self.stats.wrong_tid += 1;
                    let is_error = matches!(Packet::parse(bytes), Ok(Packet::Error { .. }));
                    if !is_error && self.tid_errors.allow(now) {
                        self.send_error(
                            via,
                            from,
                            TftpCode::UNKNOWN_TID,
                            "unknown transfer ID: this port belongs to another transfer",
                        );
                    }
                }
                None => self.stats.dropped += 1,
            }
            return None;
        }
        if !tftp::is_request(bytes) {
            // At the listening port only requests are expected, except in single-port
            // mode, where the client's address and port name its transfer.
            match self.by_client.get(&from) {
                Some(&id) if self.cfg.single_port && self.transfers.contains_key(&id) => {
                    self.deliver(now, id, bytes)
                }
                _ => self.stats.dropped += 1,
            }
            return None;
        }
        let (op, r) = match Packet::parse(bytes) {
            Ok(Packet::Rrq(r)) => (Op::Get, r),
            Ok(Packet::Wrq(r)) => (Op::Put, r),
            Err(tftp::WireError::UnknownMode) => {
                self.refuse_request(
                    from,
                    if bytes[1] == 1 { "get" } else { "put" },
                    "",
                    TftpCode::ILLEGAL_OPERATION,
                    "unknown transfer mode: udpftd serves octet and netascii",
                );
                return None;
            }
            _ => {
                self.stats.dropped += 1;
                self.log(
                    LogLevel::Verbose,
                    format!("{from}: malformed TFTP request ({} B) dropped", bytes.len()),
                );
                return None;
            }
        };
        if let Some(&id) = self.by_client.get(&from) {
            let same = match (self.transfers.get(&id), self.pending.get(&id)) {
                (Some(t), _) => t.request == bytes,
                (_, Some(p)) => p.req.bytes == bytes,
                _ => false,
            };
            if same {
                self.request_again(now, id);
                return None;
            }
            // The client has moved on to another request from the same port.
            self.supersede(now, id);
        }
        let shown = escape(&String::from_utf8_lossy(r.filename)).into_owned();
        let what = op_name(op);
        if r.mode == Mode::Mail {
            self.refuse_request(
                from,
                what,
                &shown,
                TftpCode::ILLEGAL_OPERATION,
                "mode mail is not supported (RFC 1350 retired it); use octet or netascii",
            );
            return None;
        }
        if op == Op::Put && self.cfg.read_only {
            self.refuse_request(
                from,
                what,
                &shown,
                TftpCode::ILLEGAL_OPERATION,
                "this server is read-only: writes are disabled (udpftd was started with --read-only)",
            );
            return None;
        }
        let name = match served_name(r.filename) {
            Ok(n) => n.to_string(),
            Err(refusal) => {
                self.refuse_request(
                    from,
                    what,
                    &shown,
                    tftp_code(refusal.code),
                    &refusal.message,
                );
                return None;
            }
        };
        let k = KnownOptions::of(&r.options);
        let tsize = match (op, r.mode) {
            (Op::Put, Mode::Octet) => k.tsize.and_then(|o| o.number()),
            _ => None,
        };
        Some(NewRequest {
            from,
            op,
            mode: r.mode,
            name,
            bytes: bytes.to_vec(),
            options: r.options.as_bytes().to_vec(),
            tsize,
        })
    }

    /// A request repeated while it is being answered: a resend, never a new transfer.
    /// It allows two more datagrams before proof (the client clearly did not hear the
    /// last ones); a receiver answers it again (its ACK 0 or OACK was lost).
    fn request_again(&mut self, now: Instant, id: TransferId) {
        self.stats.resent_requests += 1;
        let Some(t) = self.transfers.get_mut(&id) else {
            return; // still opening the file: the answer is on its way
        };
        t.allowed = t.allowed.saturating_add(UNPROVEN_SENDS_PER_REQUEST);
        t.patience.reset();
        if let Role::Receive(r) = &mut t.role {
            let f = Frame::Request(crate::engine::frame::Request {
                op: Op::Put,
                block_size: tftp::DEFAULT_BLKSIZE,
                size: UNKNOWN_SIZE,
                name: "",
                token: None,
                window: 1,
            });
            r.handle(now, &f);
        }
        self.dirty.push_back(id);
    }

    /// Ends transfer `id` quietly: its client sent a different request from the same
    /// address and port.
    fn supersede(&mut self, now: Instant, id: TransferId) {
        if let Some(p) = self.pending.remove(&id) {
            self.by_client.remove(&p.req.from);
            return;
        }
        if let Some(t) = self.transfers.get_mut(&id) {
            if !t.logged {
                t.logged = true;
                let line = transfer_line(t, now, "superseded by a new request from the same port");
                self.log(LogLevel::Normal, line);
            }
            self.remove(id);
        }
    }

    /// Starts opening the file of an admitted request, as transfer `id`.
    pub fn start(&mut self, now: Instant, id: TransferId, req: NewRequest) {
        self.io.push_back(IoRequest::Open {
            ticket: id,
            op: req.op,
            name: req.name.clone(),
            overwrite: self.cfg.overwrite,
            size: req.tsize.unwrap_or(UNKNOWN_SIZE),
        });
        self.by_client.insert(req.from, id);
        self.pending.insert(id, Pending { req, started: now });
    }

    /// Whether `ticket` is one of this side's file operations.
    pub fn owns(&self, ticket: SessionId) -> bool {
        self.pending.contains_key(&ticket) || self.transfers.contains_key(&ticket)
    }

    /// The outcome of a file operation this side asked for.
    pub fn io_done(&mut self, now: Instant, ticket: SessionId, outcome: IoOutcome) {
        if let IoOutcome::Ready = outcome {
            // A read-ahead refilled: a sender that starved may send again.
            if let Some(Transfer {
                role: Role::Send(s),
                ..
            }) = self.transfers.get_mut(&ticket)
            {
                s.source_ready();
                self.dirty.push_back(ticket);
            }
            return;
        }
        if let IoOutcome::Committed(result) = outcome {
            if let Some(t) = self.transfers.get_mut(&ticket) {
                t.committing = false;
                if let Role::Receive(r) = &mut t.role {
                    r.commit_done(now, result);
                }
                self.dirty.push_back(ticket);
            }
            return;
        }
        let Some(p) = self.pending.remove(&ticket) else {
            return;
        };
        let req = p.req;
        let shown = req.shown();
        let what = op_name(req.op);
        let options = Options::new(&req.options);
        let (role, granted) = match outcome {
            IoOutcome::Send(src, size) => {
                let octet = req.mode == Mode::Octet;
                let g = negotiate(
                    &options,
                    req.mode,
                    Direction::Read {
                        size: octet.then_some(size),
                    },
                    self.cfg.limits,
                );
                let cfg = self.session_config(&g);
                let opening = (!g.oack.is_empty()).then(|| accept(Op::Get, &g));
                let mut s = Sender::with_codec(
                    Tftp::new(g.rollover, g.oack.clone()),
                    0,
                    req.from,
                    source_for(req.mode, src),
                    cfg,
                    RtoEstimator::new(cfg.rto),
                    opening,
                );
                if octet && g.tsize.is_none() {
                    s.announce_length(size);
                }
                (Role::Send(s), g)
            }
            IoOutcome::Store(sink) => {
                let g = negotiate(&options, req.mode, Direction::Write, self.cfg.limits);
                let mut cfg = self.session_config(&g);
                // Linger as a udpft upload does: a resent last DATA (our final ACK
                // lost) must still find us, or a stored file looks failed to the client.
                cfg.linger = cfg.linger.max(cfg.give_up);
                let opening = if g.oack.is_empty() {
                    OpeningAck::Ack
                } else {
                    OpeningAck::Accept(accept(Op::Put, &g))
                };
                let mut r = Receiver::with_codec(
                    Tftp::new(g.rollover, g.oack.clone()),
                    0,
                    req.from,
                    sink_for(req.mode, sink),
                    cfg,
                    RtoEstimator::new(cfg.rto),
                    opening,
                    now,
                );
                if let Some(n) = g.tsize {
                    r.expect_length(n);
                }
                (Role::Receive(r), g)
            }
            IoOutcome::Refused(code, message) => {
                self.by_client.remove(&req.from);
                self.refuse_request(req.from, what, &shown, tftp_code(code), &message);
                return;
            }
            IoOutcome::Done | IoOutcome::Committed(_) | IoOutcome::Ready => {
                self.by_client.remove(&req.from);
                return;
            }
        };
        self.stats.transfers += 1;
        let awaiting_ack0 = req.op == Op::Get && !granted.oack.is_empty();
        let desc = format!("{}, {}", req.mode.name(), granted.describe());
        self.log(
            LogLevel::Verbose,
            format!(
                "{} tftp {what} '{shown}': transfer {ticket:016x} started ({desc})",
                req.from
            ),
        );
        let port_ready = self.cfg.single_port;
        if !port_ready {
            self.ports.push_back(PortRequest::Open(ticket));
        }
        self.transfers.insert(
            ticket,
            Transfer {
                role,
                client: req.from,
                request: req.bytes,
                op: req.op,
                path: shown,
                granted: desc,
                started: p.started,
                port_ready,
                validated: false,
                allowed: UNPROVEN_SENDS_PER_REQUEST,
                unproven_sent: 0,
                awaiting_ack0,
                probe: false,
                patience: Patience::new(
                    granted.timeout.unwrap_or_default() + Duration::from_secs(1),
                ),
                committing: false,
                logged: false,
                last_bytes: 0,
                last_progress: now,
            },
        );
        self.dirty.push_back(ticket);
    }

    fn session_config(&self, g: &Granted) -> Config {
        let mut cfg = self.cfg.session;
        cfg.block_size = g.blksize;
        if let Some(t) = g.timeout {
            // The client's interval is our ceiling (TFTP.md §2.3).
            cfg.rto.max = cfg.rto.max.min(t);
        }
        cfg.rto = super::first_timeout(cfg.rto);
        // The window is what was negotiated (RFC 7440), never the server's udpft limit.
        cfg.window =
            crate::engine::window_for(g.windowsize.min(u32::from(u16::MAX)) as u16, g.blksize);
        // RFC 7440's rules, both ways: a fixed window, acknowledged at its end.
        cfg.rfc7440()
    }

    /// A datagram from transfer `id`'s client.
    fn deliver(&mut self, now: Instant, id: TransferId, bytes: &[u8]) {
        let Some(t) = self.transfers.get_mut(&id) else {
            return;
        };
        match Packet::parse(bytes) {
            Ok(Packet::Ack { block }) => {
                t.validated = true;
                if block == 0 {
                    t.awaiting_ack0 = false;
                }
            }
            Ok(Packet::Data { .. }) => t.validated = true,
            // The UEFI size probe ends here: ERROR (8) in answer to the OACK.
            Ok(Packet::Error { .. }) if t.awaiting_ack0 => t.probe = true,
            _ => {}
        }
        match &mut t.role {
            Role::Send(s) => s.handle_datagram(now, bytes),
            Role::Receive(r) => {
                r.handle_datagram(now, bytes);
                if let Some(sink) = r.poll_commit() {
                    t.committing = true;
                    self.io.push_back(IoRequest::Commit { ticket: id, sink });
                }
            }
        }
        self.dirty.push_back(id);
    }

    /// The driver could not open transfer `id`'s socket: the client is told (from the
    /// listening port) and the transfer ends.
    pub fn port_failed(&mut self, now: Instant, id: TransferId, error: &str) {
        let Some(t) = self.transfers.get_mut(&id) else {
            return;
        };
        let client = t.client;
        t.logged = true;
        let line = transfer_line(
            t,
            now,
            &format!("failed: no port for the transfer: {error}"),
        );
        self.log(LogLevel::Normal, line);
        self.send_error(
            Via::Listen,
            client,
            TftpCode::UNDEFINED,
            "the server could not open a port for this transfer; try again later",
        );
        self.transfers.remove(&id);
        self.by_client.remove(&client);
    }

    /// The driver opened transfer `id`'s socket: it may send now.
    pub fn port_ready(&mut self, id: TransferId) {
        if let Some(t) = self.transfers.get_mut(&id) {
            t.port_ready = true;
            self.dirty.push_back(id);
        }
    }

    /// The next socket to open or close.
    pub fn poll_port(&mut self) -> Option<PortRequest> {
        self.ports.pop_front()
    }

    /// The next datagram to send: which socket, to whom, its length in `buf`.
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        buf: &mut [u8],
    ) -> Option<(Via, SocketAddr, usize)> {
        if let Some((via, to, bytes)) = self.stateless.pop_front() {
            let n = bytes.len().min(buf.len());
            buf[..n].copy_from_slice(&bytes[..n]);
            return Some((via, to, n));
        }
        while let Some(&id) = self.dirty.front() {
            let via = self.via(id);
            let Some(t) = self.transfers.get_mut(&id) else {
                self.dirty.pop_front();
                continue;
            };
            if t.port_ready {
                let sending = matches!(t.role, Role::Send(_));
                let out = match &mut t.role {
                    Role::Send(s) => s.poll_transmit(now),
                    Role::Receive(r) => r.poll_transmit(now),
                };
                if let Some(b) = out {
                    if sending && !t.patience.allow(now, b) {
                        // Quiet, so that a client ignoring duplicates times out (see
                        // request::Patience): as if lost.
                        self.stats.held_back += 1;
                        continue;
                    }
                    if !t.validated {
                        if t.unproven_sent >= t.allowed {
                            // Over the amplification limit: as if lost.
                            self.stats.held_back += 1;
                            continue;
                        }
                        t.unproven_sent += 1;
                    }
                    let n = b.len().min(buf.len());
                    buf[..n].copy_from_slice(&b[..n]);
                    return Some((via, t.client, n));
                }
            }
            self.dirty.pop_front();
            self.drive(id, now);
        }
        None
    }

    /// Trace events, progress, the log line, removal once over.
    fn drive(&mut self, id: TransferId, now: Instant) {
        let Some(t) = self.transfers.get_mut(&id) else {
            return;
        };
        let bytes = t.stats().bytes;
        if bytes != t.last_bytes {
            t.last_bytes = bytes;
            t.last_progress = now;
        }
        if self.cfg.session.trace {
            let client = t.client;
            loop {
                let ev = match &mut t.role {
                    Role::Send(s) => s.poll_event(),
                    Role::Receive(r) => r.poll_event(),
                };
                let Some(ev) = ev else { break };
                self.events.push_back((client, id, ev));
            }
        }
        let Some(t) = self.transfers.get_mut(&id) else {
            return;
        };
        let status = t.status().clone();
        if !t.logged && status != Status::Running {
            t.logged = true;
            let outcome = match &status {
                _ if t.probe => {
                    "size probe: the client ended after the OACK, as UEFI firmware does".to_string()
                }
                Status::Failed(e) => format!("failed: {}", sanitize(&e.to_string())),
                _ => "ok".to_string(),
            };
            let line = transfer_line(t, now, &outcome);
            let client = t.client;
            self.log_transfer(client, id, line);
        }
        let Some(t) = self.transfers.get(&id) else {
            return;
        };
        if matches!(t.status(), Status::Closed | Status::Failed(_)) && !t.committing {
            self.remove(id);
        }
    }

    fn remove(&mut self, id: TransferId) {
        if let Some(mut t) = self.transfers.remove(&id) {
            // An upload that ended unstored: its temporary file is dropped on an IO
            // worker, never on the network thread.
            if let Role::Receive(r) = &mut t.role
                && let Some(sink) = r.take_sink()
            {
                self.io.push_back(IoRequest::Discard { sink });
            }
            if self.by_client.get(&t.client) == Some(&id) {
                self.by_client.remove(&t.client);
            }
            if !self.cfg.single_port {
                self.ports.push_back(PortRequest::Close(id));
            }
        }
    }

    /// Fires due timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<TransferId> = self
            .transfers
            .iter()
            .filter(|(_, t)| t.poll_timeout().is_some_and(|d| d <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some(t) = self.transfers.get_mut(&id) {
                match &mut t.role {
                    Role::Send(s) => s.handle_timeout(now),
                    Role::Receive(r) => r.handle_timeout(now),
                }
            }
            self.dirty.push_back(id);
        }
    }

    /// When [`TftpServer::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.transfers
            .values()
            .filter_map(Transfer::poll_timeout)
            .min()
    }

    /// Abandons every transfer (the server is stopping); clients get an ERROR.
    pub fn abort_all(&mut self, reason: &str) {
        let ids: Vec<TransferId> = self.transfers.keys().copied().collect();
        for id in ids {
            if let Some(t) = self.transfers.get_mut(&id) {
                match &mut t.role {
                    Role::Send(s) => s.abort(reason),
                    Role::Receive(r) => r.abort(reason),
                }
            }
            self.dirty.push_back(id);
        }
    }

    /// Transfers under way (opening, or running; not lingering, not a finished probe).
    pub fn running(&self) -> usize {
        self.pending.len() + self.transfers.values().filter(|t| t.running()).count()
    }

    /// Of those, from `ip`.
    pub fn running_from(&self, ip: std::net::IpAddr) -> usize {
        self.pending
            .values()
            .filter(|p| p.req.from.ip() == ip)
            .count()
            + self
                .transfers
                .values()
                .filter(|t| t.client.ip() == ip && t.running())
                .count()
    }

    /// Transfers and file operations held, lingering ones included.
    pub fn len(&self) -> usize {
        self.pending.len() + self.transfers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether an upload is being stored.
    pub fn committing(&self) -> bool {
        self.transfers.values().any(|t| t.committing)
    }

    /// Ends the longest-lingering finished upload to make room; whether there was one.
    pub fn evict_lingering(&mut self) -> bool {
        let id = self
            .transfers
            .iter()
            .filter(|(_, t)| !t.committing && *t.status() == Status::Complete)
            .min_by_key(|(_, t)| t.started)
            .map(|(id, _)| *id);
        match id {
            Some(id) => {
                self.remove(id);
                true
            }
            None => false,
        }
    }

    /// Ends every transfer still there (the driver is exiting), logging each.
    pub fn close(&mut self, now: Instant) {
        let ids: Vec<TransferId> = self.transfers.keys().copied().collect();
        for id in ids {
            if let Some(t) = self.transfers.get_mut(&id)
                && !t.logged
            {
                t.logged = true;
                let line = transfer_line(t, now, "unfinished: the server stopped");
                self.log(LogLevel::Normal, line);
            }
            self.remove(id);
        }
        self.pending.clear();
    }

    pub fn poll_io(&mut self) -> Option<IoRequest> {
        self.io.pop_front()
    }

    pub fn poll_log(&mut self) -> Option<LogLine> {
        self.logs.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<(SocketAddr, SessionId, Event)> {
        self.events.pop_front()
    }

    /// How transfer `id` ended so far (tests): its status and counters.
    pub fn transfer_status(&self, id: TransferId) -> Option<(Status, Stats)> {
        self.transfers
            .get(&id)
            .map(|t| (t.status().clone(), t.stats()))
    }
}

/// The OACK as the engine's packet 0.
fn accept(op: Op, g: &Granted) -> Accept {
    Accept {
        nonce: 0,
        op,
        block_size: g.blksize,
        size: g.tsize.unwrap_or(UNKNOWN_SIZE),
        window: g.windowsize.min(u32::from(u16::MAX)) as u16,
    }
}

/// The one log line of a transfer: client, protocol and operation, path, mode and
/// granted options, bytes, duration, resends, outcome.
fn transfer_line(t: &Transfer, now: Instant, outcome: &str) -> String {
    let st = t.stats();
    format!(
        "{} tftp {} '{}' ({}): {} B in {:.3} s, {} resends: {outcome}",
        t.client,
        op_name(t.op),
        t.path,
        t.granted,
        st.bytes,
        now.saturating_duration_since(t.started).as_secs_f64(),
        st.resent,
    )
}
