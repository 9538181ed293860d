//! The server's front door, sans-IO (PROTOCOL.md §4.3, §5.5, §6.2): one
//! [`ServerEndpoint`] takes every datagram that reaches the server's port and decides
//! what happens — routing, the address check, admission, caps, refusals, the exit and
//! stop modes — and hands every file operation to its driver as an [`IoRequest`].
//!
//! The same endpoint runs under `udpftd`'s socket loop (IO on worker threads) and under
//! the simulator (IO answered at once from memory), so routing and the limits are tested
//! on the virtual clock. It never touches a socket, a file or the clock:
//!
//! ```text
//!   loop {
//!       while let Some((to, n)) = ep.poll_transmit(now, &mut buf) { send(to, &buf[..n]) }
//!       while let Some(io) = ep.poll_io() { start io (a worker), later ep.io_done(now, ticket, outcome) }
//!       wait for a datagram, an IO completion or ep.poll_timeout()
//!       ep.handle(now, from, bytes) | ep.handle_timeout(now)
//!   }
//! ```
//!
//! Guarantees:
//! - **Nothing for an unproven address.** A REQUEST without a valid token from this
//!   endpoint is answered with a RETRY carrying one, bound to the client's address and
//!   port, nonce and operation, and nothing is kept: no slot, no file, no thread. Only a
//!   REQUEST that echoes a valid token (proof that the client receives at its address)
//!   gets a session, and only then is any file opened. So a blind, spoofed REQUEST can
//!   neither hold a slot nor delete a file nor stop the server.
//! - **Once per request.** A resent REQUEST (same address and nonce) reaches the session
//!   it opened and changes nothing there but its answer; a delete or exit is carried out
//!   once, and its answer is kept for longer than its token is valid, so a replay is
//!   answered, never acted on again.
//! - **Bounded.** At most `max_sessions` transfers (and IO operations under way), at most
//!   `max_per_address` of them from one IP address, and at most
//!   [`LINGER_FACTOR`] × `max_sessions` sessions in all; when full, sessions that only
//!   linger give way first, then a transfer that has made no progress (moved fewer
//!   than [`PROGRESS_QUANTUM`] bytes) for [`STALLED`]. A session without progress for the give-up time ends by itself
//!   (PROTOCOL.md §5.3).

use std::collections::{HashMap, VecDeque};
use std::hash::Hasher;
use std::io::Read;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::{RngExt, SeedableRng};

use super::codec::{Codec, Udpft};
use super::frame::{ErrorCode, Frame, Op, Request, SessionId, Token};
use super::tftp::{Limits, PortRequest, TftpConfig, TftpServer, TftpStats, Via};
use super::{Config, Event, ServerSession, Sink, Status, TransferError, reject};
use crate::text::{escape, sanitize};
use crate::wire::{self, TOKEN_LEN};

/// How long a RETRY's token is good for. Shorter than [`super::server::ANSWER_LINGER`],
/// so that a replayed delete or exit always finds its answered session (which is not
/// made to give way to new sessions until its token has expired).
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(3);

/// All sessions together, lingering ones included, are capped at this many times
/// `max_sessions`.
pub const LINGER_FACTOR: usize = 4;

/// A transfer without progress this long gives way to a new client when the server is
/// full (whatever it sends meanwhile).
pub const STALLED: Duration = Duration::from_secs(2);

/// What counts as progress for [`STALLED`]: this many more bytes moved (or the end of
/// the stream). A client that acknowledges a tiny block now and then (8 bytes every
/// 1.5 s held every slot) is stalled; one slower than 8 KiB/s gives way only while the
/// server is full.
pub const PROGRESS_QUANTUM: u64 = 16 * 1024;

/// After an exit was answered or a stop began, once no transfer runs any more, how long
/// the endpoint stays up for sessions that only linger.
pub const EXIT_LINGER: Duration = Duration::from_secs(1);

/// What the endpoint may do and for how many.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Transfers (and file operations under way) at once.
    pub max_sessions: usize,
    /// Of those, from one IP address.
    pub max_per_address: usize,
    /// The settings of every session: `block_size` is the largest granted.
    pub session: Config,
    /// Whether a put may replace an existing file (passed on to storage).
    pub overwrite: bool,
    pub read_only: bool,
    pub allow_delete: bool,
    pub allow_exit: bool,
    /// Seeds the session ids and the token key (the simulator's runs are reproducible);
    /// `None`: from the operating system.
    pub seed: Option<u64>,
    /// Put the smoothed round trip in each session's log line.
    pub log_rtt: bool,
    /// Keep a record of every session that ended, for [`ServerEndpoint::poll_ended`]
    /// (tests and the simulator; a server would only grow it).
    pub keep_outcomes: bool,
    /// Answer TFTP on the same port (TFTP.md): requests are told from udpft's by their
    /// first two bytes.
    pub tftp: bool,
    /// Serve every TFTP transfer from the listening port instead of one port each.
    pub tftp_single_port: bool,
    /// The largest TFTP `windowsize` granted to a write (a read is granted 1: TFTP.md
    /// "Not yet").
    pub tftp_max_window: u32,
}

/// How a session ended (with [`EndpointConfig::keep_outcomes`]).
#[derive(Debug, Clone)]
pub struct Ended {
    pub id: SessionId,
    pub status: Status,
    pub stats: super::Stats,
    /// Datagrams held back by the anti-amplification budget.
    pub held_back: u64,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            max_sessions: 64,
            max_per_address: 32,
            session: Config {
                block_size: wire::MAX_BLOCK_SIZE,
                ..Config::default()
            },
            overwrite: false,
            read_only: false,
            allow_delete: false,
            allow_exit: false,
            seed: None,
            log_rtt: false,
            keep_outcomes: false,
            tftp: true,
            tftp_single_port: false,
            tftp_max_window: 1,
        }
    }
}

/// A file operation for the driver to carry out, off the network path. The outcome goes
/// back through [`ServerEndpoint::io_done`] with the same ticket.
pub enum IoRequest {
    /// Open what a get or list sends, create a put's file, or delete a file. `size` is a
    /// put's announced size.
    Open {
        ticket: SessionId,
        op: Op,
        name: String,
        overwrite: bool,
        size: u64,
    },
    /// Store an upload whose DONE was verified (sync, then give it its name).
    Commit {
        ticket: SessionId,
        sink: Box<dyn Sink + Send>,
    },
    /// Drop an upload that ended unstored (closing, or removing, its temporary file).
    /// Nothing is reported back.
    Discard { sink: Box<dyn Sink + Send> },
}

impl std::fmt::Debug for IoRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IoRequest::Open {
                ticket, op, name, ..
            } => {
                write!(f, "Open({ticket:016x}, {}, {name:?})", op.name())
            }
            IoRequest::Commit { ticket, .. } => write!(f, "Commit({ticket:016x})"),
            IoRequest::Discard { .. } => write!(f, "Discard"),
        }
    }
}

/// What a file operation came to.
pub enum IoOutcome {
    /// A get or list: the stream and its announced size.
    Send(Box<dyn Read + Send>, u64),
    /// A put: where the data goes.
    Store(Box<dyn Sink + Send>),
    /// A delete was carried out.
    Done,
    /// Refused: the code and a message for the client (already escaped).
    Refused(ErrorCode, String),
    /// A commit's result.
    Committed(std::io::Result<()>),
    /// A session's stream, which said it would block, may be read again (a read-ahead
    /// finished).
    Ready,
}

/// One line for the server's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub level: LogLevel,
    /// The peer and session id the line is about, if it is about one session.
    pub session: Option<(SocketAddr, SessionId)>,
    /// The text, escaped (it may quote what a client sent).
    pub text: String,
}

/// How much a log line matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// One line per session, refusals, exit and stop.
    Normal,
    /// Session starts, dropped datagrams.
    Verbose,
}

/// Counters of an endpoint's whole life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointStats {
    pub sessions: u64,
    pub refused: u64,
    /// RETRYs sent (address checks).
    pub retries: u64,
    /// Datagrams that failed to parse.
    pub malformed: u64,
    /// Valid datagrams that belonged to no session.
    pub unrouted: u64,
    /// Transfers dropped to make room (stalled, or only lingering).
    pub evicted: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Accepting,
    /// An exit was answered.
    Exiting,
    /// Stopped by the driver (a signal): transfers in flight run until the deadline.
    Stopping(Instant),
}

struct Entry {
    s: ServerSession,
    /// The name as log lines show it (escaped).
    path: String,
    started: Instant,
    /// A delete or exit already carried out (re-answers a resent REQUEST only).
    answered: bool,
    logged: bool,
    /// A commit handed to the driver and not yet reported.
    committing: bool,
    /// The bytes moved when progress was last counted ([`PROGRESS_QUANTUM`]), and when.
    last_bytes: u64,
    last_progress: Instant,
}

/// A proven request whose file operation is under way.
struct Pending {
    peer: SocketAddr,
    nonce: SessionId,
    op: Op,
    path: String,
    request_len: usize,
    block_size: u32,
    /// The send window granted: at most the one asked for (PROTOCOL.md §4.5).
    window: u16,
    size: u64,
    started: Instant,
}

/// The server's front door. See the module documentation.
pub struct ServerEndpoint {
    cfg: EndpointConfig,
    epoch: Instant,
    key: (u64, u64),
    rng: rand::rngs::StdRng,
    sessions: HashMap<SessionId, Entry>,
    pending: HashMap<SessionId, Pending>,
    by_nonce: HashMap<(SocketAddr, SessionId), SessionId>,
    /// Sessions that may have something to send.
    dirty: VecDeque<SessionId>,
    /// Datagrams that belong to no session (RETRYs, refusals).
    stateless: VecDeque<(SocketAddr, Vec<u8>)>,
    io: VecDeque<IoRequest>,
    logs: VecDeque<LogLine>,
    ended: VecDeque<Ended>,
    events: VecDeque<(SocketAddr, SessionId, Event)>,
    mode: Mode,
    idle_since: Option<Instant>,
    stats: EndpointStats,
    scratch: Vec<u8>,
    /// The TFTP side of the front door (TFTP.md §3); admission stays here.
    tftp: TftpServer,
}

impl ServerEndpoint {
    pub fn new(cfg: EndpointConfig, now: Instant) -> ServerEndpoint {
        let mut rng = match cfg.seed {
            Some(s) => rand::rngs::StdRng::seed_from_u64(s),
            None => rand::rngs::StdRng::from_rng(&mut rand::rng()),
        };
        let key = (rng.random(), rng.random());
        let tftp = TftpServer::new(TftpConfig {
            single_port: cfg.tftp_single_port,
            limits: Limits {
                max_blksize: cfg.session.block_size,
                max_window: cfg.tftp_max_window,
            },
            read_only: cfg.read_only,
            overwrite: cfg.overwrite,
            session: cfg.session,
        });
        ServerEndpoint {
            tftp,
            cfg,
            epoch: now,
            key,
            rng,
            sessions: HashMap::new(),
            pending: HashMap::new(),
            by_nonce: HashMap::new(),
            dirty: VecDeque::new(),
            stateless: VecDeque::new(),
            io: VecDeque::new(),
            logs: VecDeque::new(),
            ended: VecDeque::new(),
            events: VecDeque::new(),
            mode: Mode::Accepting,
            idle_since: None,
            stats: EndpointStats::default(),
            scratch: vec![0u8; wire::MAX_DATAGRAM],
        }
    }

    pub fn stats(&self) -> EndpointStats {
        self.stats
    }

    pub fn config(&self) -> &EndpointConfig {
        &self.cfg
    }

    fn log(&mut self, level: LogLevel, text: String) {
        self.logs.push_back(LogLine {
            level,
            session: None,
            text,
        });
    }

    /// A log line about session `id` with `peer`.
    fn log_session(&mut self, level: LogLevel, peer: SocketAddr, id: SessionId, text: String) {
        self.logs.push_back(LogLine {
            level,
            session: Some((peer, id)),
            text,
        });
    }

    fn trace(&mut self, peer: SocketAddr, id: SessionId, e: Event) {
        if self.cfg.session.trace {
            self.events.push_back((peer, id, e));
        }
    }

    /// The token that proves `peer` receives at its address, for this nonce and op,
    /// issued at `issued` (milliseconds since the endpoint started).
    fn token(&self, peer: SocketAddr, nonce: SessionId, op: Op, issued: u64) -> Token {
        let mut h = siphasher::sip::SipHasher24::new_with_keys(self.key.0, self.key.1);
        match peer {
            SocketAddr::V4(a) => h.write(&a.ip().to_ipv6_mapped().octets()),
            SocketAddr::V6(a) => h.write(&a.ip().octets()),
        }
        h.write_u16(peer.port());
        h.write_u64(nonce);
        h.write_u8(op as u8);
        h.write_u64(issued);
        let mut t = [0u8; TOKEN_LEN];
        t[..8].copy_from_slice(&issued.to_be_bytes());
        t[8..].copy_from_slice(&h.finish().to_be_bytes());
        t
    }

    fn token_valid(
        &self,
        now: Instant,
        peer: SocketAddr,
        nonce: SessionId,
        op: Op,
        t: &Token,
    ) -> bool {
        let issued = u64::from_be_bytes(t[..8].try_into().expect("8 bytes"));
        let age =
            (now.saturating_duration_since(self.epoch).as_millis() as u64).checked_sub(issued);
        matches!(age, Some(a) if a <= TOKEN_LIFETIME.as_millis() as u64)
            && self.token(peer, nonce, op, issued) == *t
    }

    /// Transfers under way: running sessions (not answered, not lingering) and file
    /// operations not yet finished.
    pub fn running(&self) -> usize {
        self.tftp.running()
            + self.pending.len()
            + self
                .sessions
                .values()
                .filter(|e| !e.answered && *e.s.status() == Status::Running)
                .count()
    }

    fn running_from(&self, ip: std::net::IpAddr) -> usize {
        self.tftp.running_from(ip)
            + self.pending.values().filter(|p| p.peer.ip() == ip).count()
            + self
                .sessions
                .values()
                .filter(|e| {
                    e.s.peer().ip() == ip && !e.answered && *e.s.status() == Status::Running
                })
                .count()
    }

    /// Feeds in one datagram that reached the server's port from `from`.
    pub fn handle(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        // A TFTP datagram starts with a 0 byte, a udpft one never does (PROTOCOL.md §2).
        if self.cfg.tftp && crate::wire::tftp::is_tftp(bytes) {
            return self.handle_tftp(now, Via::Listen, from, bytes);
        }
        let (session, f) = match Udpft.decode(bytes, 0) {
            Ok(d) => d,
            Err(e) => {
                self.stats.malformed += 1;
                self.log(
                    LogLevel::Verbose,
                    format!("{from}: {} B dropped: {e}", bytes.len()),
                );
                return;
            }
        };
        // PROTOCOL.md §6.2: a REQUEST is routed by (address, nonce), anything else by id.
        let Frame::Request(req) = f else {
            match self.sessions.get_mut(&session) {
                Some(e) => {
                    e.s.handle(now, from, session, &f, bytes.len());
                    // A verified DONE: storing starts now, before anything is sent, so
                    // a driver that stores at once acknowledges without a WAIT.
                    if let Some(sink) = e.s.poll_commit() {
                        e.committing = true;
                        self.io.push_back(IoRequest::Commit {
                            ticket: session,
                            sink,
                        });
                    }
                    self.dirty.push_back(session);
                }
                None => {
                    self.stats.unrouted += 1;
                    self.log(
                        LogLevel::Verbose,
                        format!("{from}: datagram for no session dropped"),
                    );
                }
            }
            return;
        };
        if let Some(&id) = self.by_nonce.get(&(from, session)) {
            // A resent REQUEST: its session answers again; a pending one is still opening.
            if let Some(e) = self.sessions.get_mut(&id) {
                e.s.handle(now, from, session, &f, bytes.len());
                self.dirty.push_back(id);
            }
            return;
        }
        self.request(now, from, session, &req, bytes.len());
    }

    /// Feeds in one TFTP datagram: at the listening port (`Via::Listen`, which
    /// [`ServerEndpoint::handle`] dispatches here by its first bytes) or at a
    /// transfer's own port. A new request is admitted here, by the same rules as
    /// udpft's (shutting down, session caps, per-address limits).
    pub fn handle_tftp(&mut self, now: Instant, via: Via, from: SocketAddr, bytes: &[u8]) {
        let Some(req) = self.tftp.handle(now, via, from, bytes) else {
            return;
        };
        if self.mode != Mode::Accepting {
            self.stats.refused += 1;
            return self
                .tftp
                .refuse(req, ErrorCode::Busy, "server is shutting down");
        }
        if !self.make_room(now, from) {
            self.stats.refused += 1;
            let msg = format!(
                "server busy: at most {} transfers at once ({} from one address); try again later",
                self.cfg.max_sessions, self.cfg.max_per_address
            );
            return self.tftp.refuse(req, ErrorCode::Busy, &msg);
        }
        let id = loop {
            let id: u64 = self.rng.random();
            if id != 0
                && !self.sessions.contains_key(&id)
                && !self.pending.contains_key(&id)
                && !self.tftp.owns(id)
            {
                break id;
            }
        };
        self.stats.sessions += 1;
        self.tftp.start(now, id, req);
    }

    /// The next TFTP datagram to send: which socket, to whom, its length in `buf`.
    pub fn poll_transmit_tftp(
        &mut self,
        now: Instant,
        buf: &mut [u8],
    ) -> Option<(Via, SocketAddr, usize)> {
        self.tftp.poll_transmit(now, buf)
    }

    /// The next TFTP transfer socket to open or close (not in single-port mode).
    pub fn poll_tftp_port(&mut self) -> Option<PortRequest> {
        self.tftp.poll_port()
    }

    /// A TFTP transfer's socket is open.
    pub fn tftp_port_ready(&mut self, id: SessionId) {
        self.tftp.port_ready(id);
    }

    /// A TFTP transfer's socket could not be opened: the transfer ends.
    pub fn tftp_port_failed(&mut self, now: Instant, id: SessionId, error: &str) {
        self.tftp.port_failed(now, id, error);
    }

    /// Counters of the TFTP side.
    pub fn tftp_stats(&self) -> TftpStats {
        self.tftp.stats()
    }

    fn refuse(
        &mut self,
        from: SocketAddr,
        nonce: SessionId,
        req: &Request,
        len: usize,
        code: ErrorCode,
        message: &str,
    ) {
        self.stats.refused += 1;
        let n = reject(nonce, code, message, len, &mut self.scratch);
        if n > 0 {
            self.stateless.push_back((from, self.scratch[..n].to_vec()));
        }
        self.log(
            LogLevel::Normal,
            format!(
                "{from} {} '{}': refused ({code}): {}",
                req.op.name(),
                clip(&escape(req.name), LOG_NAME),
                clip(&sanitize(message), LOG_NAME)
            ),
        );
    }

    fn request(
        &mut self,
        now: Instant,
        from: SocketAddr,
        nonce: SessionId,
        req: &Request,
        len: usize,
    ) {
        // Refusals that need no file and no proof: they hold nothing, and an ERROR is
        // never longer than the REQUEST (§5.5).
        if self.mode != Mode::Accepting {
            return self.refuse(
                from,
                nonce,
                req,
                len,
                ErrorCode::Busy,
                "server is shutting down",
            );
        }
        if let Some(why) = self.policy(req.op) {
            return self.refuse(from, nonce, req, len, ErrorCode::NotAllowed, why);
        }
        let proven = req
            .token
            .is_some_and(|t| self.token_valid(now, from, nonce, req.op, &t));
        if !proven {
            let issued = now.saturating_duration_since(self.epoch).as_millis() as u64;
            let t = self.token(from, nonce, req.op, issued);
            let n = Udpft
                .encode(nonce, &Frame::Retry(t), &mut self.scratch)
                .expect("a RETRY always encodes");
            self.stateless.push_back((from, self.scratch[..n].to_vec()));
            self.stats.retries += 1;
            self.trace(from, nonce, Event::RetrySent);
            return;
        }
        if !self.make_room(now, from) {
            let running = self.running();
            let msg = if running >= self.cfg.max_sessions {
                format!("server busy: {running} transfers in progress, try again later")
            } else {
                format!(
                    "server busy: {} transfers from your address already, the most it allows",
                    self.cfg.max_per_address
                )
            };
            return self.refuse(from, nonce, req, len, ErrorCode::Busy, &msg);
        }
        let id = loop {
            let id: u64 = self.rng.random();
            if id != 0 && !self.sessions.contains_key(&id) && !self.pending.contains_key(&id) {
                break id;
            }
        };
        self.stats.sessions += 1;
        self.by_nonce.insert((from, nonce), id);
        let block_size = req
            .block_size
            .min(self.cfg.session.block_size)
            .clamp(wire::MIN_BLOCK_SIZE, wire::MAX_BLOCK_SIZE);
        let p = Pending {
            peer: from,
            nonce,
            op: req.op,
            path: clip(&escape(req.name), LOG_NAME),
            request_len: len,
            block_size,
            window: super::window_for(req.window.min(self.cfg.session.window), block_size),
            size: req.size,
            started: now,
        };
        if req.op == Op::Exit {
            self.mode = Mode::Exiting;
            let running = self.running();
            self.log(
                LogLevel::Normal,
                format!("{from} asked the server to exit: no new sessions; finishing {running} transfer(s)"),
            );
            self.start(now, id, p, IoOutcome::Done);
            return;
        }
        self.io.push_back(IoRequest::Open {
            ticket: id,
            op: req.op,
            name: req.name.to_string(),
            overwrite: self.cfg.overwrite,
            size: req.size,
        });
        self.pending.insert(id, p);
    }

    /// Why the server's policy forbids `op`, if it does.
    fn policy(&self, op: Op) -> Option<&'static str> {
        match op {
            Op::Put if self.cfg.read_only => Some(
                "this server is read-only: put is disabled (udpftd was started with --read-only)",
            ),
            Op::Delete if self.cfg.read_only => Some(
                "this server is read-only: delete is disabled (udpftd was started with --read-only)",
            ),
            Op::Delete if !self.cfg.allow_delete => {
                Some("delete is disabled on this server (start udpftd with --allow-delete)")
            }
            Op::Exit if !self.cfg.allow_exit => {
                Some("exit is disabled on this server (start udpftd with --allow-exit)")
            }
            _ => None,
        }
    }

    /// Whether a new transfer from `from` fits, making room if it can: sessions that
    /// only linger go first (the longest lingering), then a transfer without progress
    /// for [`STALLED`] (the longest stalled).
    fn make_room(&mut self, now: Instant, from: SocketAddr) -> bool {
        if self.running_from(from.ip()) >= self.cfg.max_per_address {
            return false;
        }
        let total_cap = self.cfg.max_sessions.saturating_mul(LINGER_FACTOR);
        while self.sessions.len() + self.pending.len() + self.tftp.len() >= total_cap {
            // An answered delete or exit stays while its token may still be valid
            // (issued before the session started; ages counted in whole ms, hence
            // the 1 ms): dropped sooner, a replay of its REQUEST would find no answer
            // and act again.
            let lingering = self
                .sessions
                .iter()
                .filter(|(_, e)| {
                    !e.committing
                        && if e.answered {
                            now.saturating_duration_since(e.started)
                                > TOKEN_LIFETIME + Duration::from_millis(1)
                        } else {
                            *e.s.status() != Status::Running
                        }
                })
                .min_by_key(|(_, e)| e.started)
                .map(|(id, _)| *id);
            match lingering {
                Some(id) => self.remove(id, now),
                None if self.tftp.evict_lingering() => {}
                None => break,
            }
        }
        if self.running() >= self.cfg.max_sessions {
            let stalled = self
                .sessions
                .iter()
                .filter(|(_, e)| {
                    !e.answered
                        && !e.committing
                        && *e.s.status() == Status::Running
                        && now.saturating_duration_since(e.last_progress) >= STALLED
                })
                .min_by_key(|(_, e)| e.last_progress)
                .map(|(id, _)| *id);
            if let Some(id) = stalled {
                let e = self.sessions.get_mut(&id).expect("just found");
                let silent = now.saturating_duration_since(e.last_progress);
                e.s.abort(&format!(
                    "dropped to make room: no progress for {:.1} s while the server was full",
                    silent.as_secs_f64()
                ));
                self.stats.evicted += 1;
                let peer = e.s.peer();
                while let Some(b) = e.s.poll_transmit(now) {
                    self.stateless.push_back((peer, b.to_vec()));
                }
                self.drive(id, now);
                self.remove(id, now);
            }
        }
        self.running() < self.cfg.max_sessions
            && self.sessions.len() + self.pending.len() + self.tftp.len() < total_cap
    }

    /// The outcome of the file operation `ticket` (an [`IoRequest`]).
    pub fn io_done(&mut self, now: Instant, ticket: SessionId, outcome: IoOutcome) {
        if self.tftp.owns(ticket) {
            return self.tftp.io_done(now, ticket, outcome);
        }
        if let IoOutcome::Ready = outcome {
            if let Some(e) = self.sessions.get_mut(&ticket) {
                e.s.io_ready();
                self.dirty.push_back(ticket);
            }
            return;
        }
        if let IoOutcome::Committed(result) = outcome {
            if let Some(e) = self.sessions.get_mut(&ticket) {
                e.committing = false;
                e.s.commit_done(now, result);
                self.dirty.push_back(ticket);
            }
            return;
        }
        let Some(p) = self.pending.remove(&ticket) else {
            return;
        };
        self.start(now, ticket, p, outcome);
    }

    fn start(&mut self, now: Instant, id: SessionId, p: Pending, outcome: IoOutcome) {
        let cfg = Config {
            block_size: p.block_size,
            window: p.window,
            ..self.cfg.session
        };
        let (s, answered) = match outcome {
            IoOutcome::Send(src, size) => (
                ServerSession::send(id, p.peer, p.nonce, p.request_len, p.op, size, src, cfg),
                false,
            ),
            IoOutcome::Store(sink) => (
                ServerSession::receive(id, p.peer, p.nonce, p.request_len, p.size, sink, cfg, now),
                false,
            ),
            // Only for a started session; taken care of in `io_done`.
            IoOutcome::Ready => return,
            IoOutcome::Done | IoOutcome::Committed(_) => (
                ServerSession::answered(id, p.peer, p.nonce, p.request_len, p.op, cfg, now),
                true,
            ),
            IoOutcome::Refused(code, message) => {
                self.by_nonce.remove(&(p.peer, p.nonce));
                self.stats.refused += 1;
                // The address is proven: the whole message may go.
                let n = reject(
                    p.nonce,
                    code,
                    &message,
                    wire::MAX_DATAGRAM,
                    &mut self.scratch,
                );
                if n > 0 {
                    self.stateless
                        .push_back((p.peer, self.scratch[..n].to_vec()));
                }
                self.log(
                    LogLevel::Normal,
                    format!(
                        "{} {} '{}': refused ({code}): {}",
                        p.peer,
                        p.op.name(),
                        p.path,
                        clip(&sanitize(&message), LOG_MESSAGE)
                    ),
                );
                return;
            }
        };
        let mut s = s;
        s.mark_validated();
        if answered {
            self.log_session(
                LogLevel::Normal,
                p.peer,
                id,
                format!("{} {} '{}': ok", p.peer, p.op.name(), p.path),
            );
        }
        self.log_session(
            LogLevel::Verbose,
            p.peer,
            id,
            format!(
                "{} {} '{}': session {id:016x} started, block size {}, window {}",
                p.peer,
                p.op.name(),
                p.path,
                p.block_size,
                p.window
            ),
        );
        self.sessions.insert(
            id,
            Entry {
                s,
                path: p.path,
                started: p.started,
                answered,
                logged: answered,
                committing: false,
                last_bytes: 0,
                last_progress: now,
            },
        );
        self.dirty.push_back(id);
    }

    /// Hands out what session `id` has to do next: trace events, a commit, its log line
    /// when it ends; removes it once over. Sending is left to `poll_transmit`.
    fn drive(&mut self, id: SessionId, now: Instant) {
        let Some(e) = self.sessions.get_mut(&id) else {
            return;
        };
        let bytes = e.s.stats().bytes;
        if bytes >= e.last_bytes + PROGRESS_QUANTUM
            || (bytes != e.last_bytes && *e.s.status() != Status::Running)
        {
            e.last_bytes = bytes;
            e.last_progress = now;
        }
        if let Some(sink) = e.s.poll_commit() {
            e.committing = true;
            self.io.push_back(IoRequest::Commit { ticket: id, sink });
        }
        let peer = e.s.peer();
        let mut evs = Vec::new();
        if self.cfg.session.trace {
            while let Some(ev) = e.s.poll_event() {
                evs.push(ev);
            }
        }
        let line = (!e.logged && *e.s.status() != Status::Running).then(|| {
            e.logged = true;
            session_line(e, now, self.cfg.log_rtt)
        });
        for ev in evs {
            self.events.push_back((peer, id, ev));
        }
        if let Some(l) = line {
            self.log_session(LogLevel::Normal, peer, id, l);
        }
    }

    fn remove(&mut self, id: SessionId, now: Instant) {
        let Some(mut e) = self.sessions.remove(&id) else {
            return;
        };
        self.by_nonce.remove(&(e.s.peer(), e.s.nonce()));
        if self.cfg.session.trace {
            while let Some(ev) = e.s.poll_event() {
                self.events.push_back((e.s.peer(), id, ev));
            }
        }
        if !e.logged {
            let l = session_line(&e, now, self.cfg.log_rtt);
            self.log_session(LogLevel::Normal, e.s.peer(), id, l);
        }
        if self.cfg.keep_outcomes {
            self.ended.push_back(Ended {
                id,
                status: e.s.status().clone(),
                stats: e.s.stats(),
                held_back: e.s.held_back,
            });
        }
        // An unfinished upload leaves nothing: its sink is dropped (the temporary file
        // closed, or unlinked) on an IO worker.
        if let Some(sink) = e.s.take_sink() {
            self.io.push_back(IoRequest::Discard { sink });
        }
    }

    /// Fires due timers and retires sessions that are over.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, e)| e.s.poll_timeout().is_some_and(|t| t <= now) || terminal(e.s.status()))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some(e) = self.sessions.get_mut(&id) {
                e.s.handle_timeout(now);
            }
            self.dirty.push_back(id);
        }
        self.tftp.handle_timeout(now);
        if let Mode::Stopping(until) = self.mode
            && now >= until
        {
            self.tftp.abort_all("the server is shutting down");
            let ids: Vec<SessionId> = self.sessions.keys().copied().collect();
            for id in ids {
                if let Some(e) = self.sessions.get_mut(&id) {
                    e.s.abort("the server is shutting down");
                }
                self.dirty.push_back(id);
            }
        }
    }

    /// The next datagram to send: its destination and length in `buf`.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<(SocketAddr, usize)> {
        if let Some((to, bytes)) = self.stateless.pop_front() {
            let n = bytes.len().min(buf.len());
            buf[..n].copy_from_slice(&bytes[..n]);
            return Some((to, n));
        }
        while let Some(&id) = self.dirty.front() {
            let Some(e) = self.sessions.get_mut(&id) else {
                self.dirty.pop_front();
                continue;
            };
            if let Some(b) = e.s.poll_transmit(now) {
                let n = b.len().min(buf.len());
                buf[..n].copy_from_slice(&b[..n]);
                return Some((e.s.peer(), n));
            }
            self.dirty.pop_front();
            self.drive(id, now);
            // A commit just handed out, or a session that ended: nothing more to send
            // now; a finished one goes.
            if let Some(e) = self.sessions.get(&id)
                && terminal(e.s.status())
            {
                self.remove(id, now);
            }
        }
        None
    }

    /// The next session that ended (with [`EndpointConfig::keep_outcomes`]).
    pub fn poll_ended(&mut self) -> Option<Ended> {
        self.ended.pop_front()
    }

    /// Whether sessions or file operations are still under way (lingering included).
    pub fn is_idle(&self) -> bool {
        self.sessions.is_empty() && self.pending.is_empty() && self.tftp.is_empty()
    }

    /// Whether file operations are waiting for [`ServerEndpoint::poll_io`].
    pub fn poll_io_pending(&self) -> bool {
        !self.io.is_empty()
    }

    /// The next file operation for the driver.
    pub fn poll_io(&mut self) -> Option<IoRequest> {
        self.io.pop_front().or_else(|| self.tftp.poll_io())
    }

    /// The next log line, with its level.
    pub fn poll_log(&mut self) -> Option<LogLine> {
        self.logs.pop_front().or_else(|| self.tftp.poll_log())
    }

    /// The next trace event (with [`Config::trace`] in the session settings).
    pub fn poll_event(&mut self) -> Option<(SocketAddr, SessionId, Event)> {
        self.events.pop_front().or_else(|| self.tftp.poll_event())
    }

    /// When [`ServerEndpoint::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self
            .sessions
            .values()
            .filter_map(|e| e.s.poll_timeout())
            .chain(self.tftp.poll_timeout())
            .min();
        if let Mode::Stopping(until) = self.mode {
            t = Some(t.map_or(until, |t| t.min(until)));
        }
        if self.mode != Mode::Accepting
            && let Some(since) = self.idle_since
        {
            let end = since + EXIT_LINGER;
            t = Some(t.map_or(end, |t| t.min(end)));
        }
        t
    }

    /// Stops accepting (a signal): transfers in flight get `grace`, then are aborted.
    pub fn stop(&mut self, now: Instant, grace: Duration) {
        if matches!(self.mode, Mode::Stopping(_)) {
            return;
        }
        let running = self.running();
        self.log(
            LogLevel::Normal,
            format!(
                "stopping: no new sessions; {running} transfer(s) in flight get {:.1} s to finish",
                grace.as_secs_f64()
            ),
        );
        self.mode = Mode::Stopping(now + grace);
    }

    /// Whether the driver may exit: an exit was answered or a stop began, nothing runs
    /// any more, and lingering sessions had [`EXIT_LINGER`] (or a stop's grace ran out).
    pub fn is_finished(&mut self, now: Instant) -> bool {
        if self.mode == Mode::Accepting {
            return false;
        }
        if self.running() > 0
            || self.sessions.values().any(|e| e.committing)
            || self.tftp.committing()
        {
            self.idle_since = None;
            return matches!(self.mode, Mode::Stopping(until) if now >= until)
                && self.pending.is_empty();
        }
        let since = *self.idle_since.get_or_insert(now);
        let done = (self.sessions.is_empty() && self.tftp.is_empty()) || now >= since + EXIT_LINGER;
        if done && self.mode == Mode::Exiting {
            self.log(LogLevel::Normal, "exiting as asked by a client".to_string());
        }
        done
    }

    /// Ends every session still there (when the driver exits), logging each.
    pub fn close(&mut self, now: Instant) {
        let ids: Vec<SessionId> = self.sessions.keys().copied().collect();
        for id in ids {
            self.remove(id, now);
        }
        self.tftp.close(now);
    }
}

/// The most characters of a name (escaped) that a log line shows, and of a message a
/// refusal before the address check gives: such a line is then shorter than the
/// smallest REQUEST (256 bytes) that can cause it, so a flood of spoofed requests cannot
/// make the log grow faster than the flood does (a name of 1,024 control characters,
/// escaped, is 4 KiB).
const LOG_NAME: usize = 96;

/// The most characters of a message a client's text can reach a log line through
/// (a refusal quoting its name; its ERROR) once its address is proven.
const LOG_MESSAGE: usize = 2 * LOG_NAME;

/// `text` cut to `most` characters, marked with `…` if cut.
fn clip(text: &str, most: usize) -> String {
    match text.char_indices().nth(most) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

fn terminal(s: &Status) -> bool {
    matches!(s, Status::Closed | Status::Failed(_))
}

/// The one log line of a session: peer, operation, path, bytes, duration, resends,
/// outcome.
fn session_line(e: &Entry, now: Instant, log_rtt: bool) -> String {
    let st = e.s.stats();
    let outcome = match e.s.status() {
        // The client verified and stored the file unless every ack of DONE was lost;
        // it only lingers briefly, so say what is known rather than "failed".
        Status::Failed(err @ TransferError::NoAnswer { .. }) if e.s.data_acknowledged() => {
            format!("unconfirmed: every block was acknowledged, but not DONE ({err})")
        }
        // The peer's own words: held to a length, as a refusal's are.
        Status::Failed(err @ TransferError::Remote { .. }) => {
            format!("failed: {}", clip(&err.to_string(), LOG_MESSAGE))
        }
        Status::Failed(err) => format!("failed: {}", sanitize(&err.to_string())),
        Status::Running => "unfinished".to_string(),
        _ => "ok".to_string(),
    };
    let srtt = match e.s.srtt() {
        Some(r) if log_rtt => format!(", rtt {:.3} ms", r.as_secs_f64() * 1e3),
        _ => String::new(),
    };
    format!(
        "{} {} '{}': {} B in {:.3} s, {} resends{srtt}: {outcome}",
        e.s.peer(),
        e.s.op().name(),
        e.path,
        st.bytes,
        now.saturating_duration_since(e.started).as_secs_f64(),
        st.resent,
    )
}
