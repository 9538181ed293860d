//! The `udpftd` event loop: one UDP socket, one thread, many sessions.
//!
//! Sessions live in a map keyed by the server's random 64-bit session id; a second map
//! from (peer address, client nonce) to that id routes resent REQUESTs to the session
//! they opened. The socket waits at most until the earliest session deadline. A
//! datagram that fails [`Datagram::parse`] is counted and dropped, never answered.

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::RngExt;

use super::Waiter;
use super::tap::Tap;
use crate::engine::{Config, RtoConfig, ServerSession, Status, TransferError, reject};
use crate::storage::{AtomicFile, Refusal, Root, listing};
use crate::wire::{self, Datagram, ErrorCode, Message, Op, Request, SessionId};

/// How much the server logs on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    /// Only failures of the server itself.
    Quiet,
    /// One line per session.
    Normal,
    /// Also session starts, dropped datagrams and socket errors.
    Verbose,
}

/// Everything `udpftd` can be told.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub root: PathBuf,
    pub listen: SocketAddr,
    pub max_sessions: usize,
    pub overwrite: bool,
    pub read_only: bool,
    pub allow_delete: bool,
    pub allow_exit: bool,
    /// The largest block size granted.
    pub max_block_size: u32,
    /// The ceiling of the retransmission timeout.
    pub timeout: Duration,
    /// A session without progress this long is dropped (an upload's data discarded).
    pub idle: Duration,
    /// On SIGINT/SIGTERM, how long transfers in flight may still run.
    pub grace: Duration,
    pub verbosity: Verbosity,
    pub trace: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            root: PathBuf::from("."),
            listen: SocketAddr::from(([0, 0, 0, 0], super::DEFAULT_PORT)),
            max_sessions: 64,
            overwrite: false,
            read_only: false,
            allow_delete: false,
            allow_exit: false,
            max_block_size: wire::MAX_BLOCK_SIZE,
            timeout: Duration::from_secs(1),
            idle: Duration::from_secs(10),
            grace: Duration::from_secs(5),
            verbosity: Verbosity::Normal,
            trace: false,
        }
    }
}

/// After an exit was answered or a stop signal came, once no transfer runs any more,
/// how long the server stays up for sessions that only linger: to re-answer a resent
/// exit REQUEST whose ACCEPT was lost, or to re-acknowledge a resent DONE of an upload
/// it has stored.
pub const EXIT_LINGER: Duration = Duration::from_secs(1);

/// Sessions that completed but linger (to re-acknowledge a resent DONE) do not count
/// against `--max-sessions`; all sessions together are capped at this many times it.
const LINGER_FACTOR: usize = 4;

/// Longest wait in the socket, so a stop request is noticed promptly.
const POLL: Duration = Duration::from_millis(200);

/// Counters of a server's whole life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerStats {
    pub sessions: u64,
    pub refused: u64,
    /// Datagrams that failed to parse.
    pub malformed: u64,
    /// Valid datagrams that belonged to no session.
    pub unrouted: u64,
}

/// A bound server, ready to [`Server::run`].
pub struct Server {
    sock: UdpSocket,
    root: Root,
    opts: ServerOptions,
    local: SocketAddr,
    tap: Option<Tap>,
}

struct Entry {
    s: ServerSession,
    path: String,
    started: Instant,
    /// A delete or exit already carried out (re-answers a resent REQUEST only).
    answered: bool,
    /// Its log line is written (when it completed or failed; a completed session may
    /// linger on to re-acknowledge a resent DONE).
    logged: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Accepting,
    /// An exit was answered at this time.
    Exiting(Instant),
    /// Stopped by a signal: transfers in flight run until the deadline.
    Stopping(Instant),
}

impl Server {
    /// Checks the root and binds the socket.
    pub fn bind(opts: ServerOptions) -> io::Result<Server> {
        let root = Root::new(&opts.root).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot serve '{}': {e}", opts.root.display()),
            )
        })?;
        let sock = UdpSocket::bind(opts.listen).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot listen on {}: {e}", opts.listen))
        })?;
        let local = sock.local_addr()?;
        // Leftovers of uploads killed with an earlier server (on filesystems without
        // unnamed temporary files) go, off the network thread.
        let handle = root.handle().try_clone_to_owned()?;
        let verbosity = opts.verbosity;
        std::thread::Builder::new()
            .name("udpft-sweep".into())
            .spawn(move || {
                let n = crate::storage::sweep_tree(std::os::fd::AsFd::as_fd(&handle)).unwrap_or(0);
                if n > 0 && verbosity >= Verbosity::Normal {
                    eprintln!("udpftd: removed {n} temporary file(s) left by interrupted uploads");
                }
            })?;
        Ok(Server {
            sock,
            root,
            opts,
            local,
            tap: None,
        })
    }

    /// The address actually bound (the port chosen, if 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Records every datagram sent and received (`udpftd --pcap`); the capture is
    /// flushed whenever the server waits idle, and when it stops.
    pub fn capture(&mut self, tap: Tap) {
        self.tap = Some(tap);
    }

    /// The served directory, canonicalised.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// Serves until an exit was answered and nothing runs any more, or until `stop` is
    /// set and transfers in flight finished (or the grace time ran out).
    pub fn run(self, stop: &AtomicBool) -> io::Result<ServerStats> {
        let mut buf = vec![0u8; wire::MAX_DATAGRAM];
        let mut waiter = Waiter::from_env();
        let mut st = State {
            sock: self.sock,
            root: self.root,
            opts: self.opts,
            sessions: HashMap::new(),
            by_nonce: HashMap::new(),
            finished: Vec::new(),
            scratch: vec![0u8; wire::MAX_DATAGRAM],
            mode: Mode::Accepting,
            stats: ServerStats::default(),
            tap: self.tap,
            local: self.local,
        };
        let mut idle_since: Option<Instant> = None;
        loop {
            let now = Instant::now();
            if stop.load(Ordering::Relaxed) && !matches!(st.mode, Mode::Stopping(_)) {
                let running = st.running();
                st.log(
                    Verbosity::Normal,
                    format_args!(
                        "stopping: no new sessions; {running} transfer(s) in flight get {:.1} s to finish",
                        st.opts.grace.as_secs_f64()
                    ),
                );
                st.mode = Mode::Stopping(now + st.opts.grace);
            }
            st.expire(now);
            // Once nothing runs, sessions that only linger (an answered exit, a stored
            // upload waiting to re-acknowledge a resent DONE) get EXIT_LINGER more.
            let lingered_enough = if st.running() == 0 {
                st.sessions.is_empty() || now >= *idle_since.get_or_insert(now) + EXIT_LINGER
            } else {
                idle_since = None;
                false
            };
            match st.mode {
                Mode::Accepting => {}
                Mode::Exiting(_) => {
                    if lingered_enough {
                        st.log(
                            Verbosity::Normal,
                            format_args!("exiting as asked by a client"),
                        );
                        break;
                    }
                }
                Mode::Stopping(until) => {
                    if lingered_enough {
                        break;
                    }
                    if now >= until {
                        st.abort_all(now, "the server is shutting down");
                        break;
                    }
                }
            }
            let mut deadline = now + POLL;
            for e in st.sessions.values() {
                if let Some(t) = e.s.poll_timeout() {
                    deadline = deadline.min(t);
                }
            }
            if let Mode::Stopping(until) = st.mode {
                deadline = deadline.min(until);
            }
            match waiter.recv_until(&st.sock, &mut buf, deadline) {
                Ok(Some((n, from))) => {
                    let now = Instant::now();
                    if let Some(t) = &mut st.tap {
                        t.received(now, from, st.local, &buf[..n]);
                    }
                    st.datagram(now, from, &buf[..n]);
                }
                Ok(None) => st.tap.iter_mut().for_each(Tap::flush),
                Err(e) => {
                    // An ICMP error for an earlier send, or the like: keep serving.
                    st.log(Verbosity::Verbose, format_args!("socket: {e}"));
                }
            }
        }
        // Whatever is left (answered deletes or exits still lingering) ends here.
        let now = Instant::now();
        let left: Vec<SessionId> = st.sessions.keys().copied().collect();
        for id in left {
            st.remove(id, now);
        }
        st.log(
            Verbosity::Verbose,
            format_args!(
                "served {} session(s), refused {}, dropped {} malformed and {} unroutable datagram(s)",
                st.stats.sessions, st.stats.refused, st.stats.malformed, st.stats.unrouted
            ),
        );
        if let Some(Err(e)) = st.tap.take().map(Tap::finish) {
            eprintln!("udpftd: writing the capture failed: {e}");
        }
        Ok(st.stats)
    }
}

struct State {
    sock: UdpSocket,
    root: Root,
    opts: ServerOptions,
    sessions: HashMap<SessionId, Entry>,
    by_nonce: HashMap<(SocketAddr, SessionId), SessionId>,
    finished: Vec<SessionId>,
    scratch: Vec<u8>,
    mode: Mode,
    stats: ServerStats,
    tap: Option<Tap>,
    local: SocketAddr,
}

/// The one log line of a session: peer, operation, path, bytes, duration, resends,
/// outcome.
fn log_session(e: &Entry, now: Instant, verbosity: Verbosity) {
    let st = e.s.stats();
    let outcome = match e.s.status() {
        // The client verified and stored the file unless every ack of DONE was lost;
        // it only lingers briefly, so say what is known rather than "failed".
        Status::Failed(err @ TransferError::NoAnswer { .. }) if e.s.data_acknowledged() => {
            format!("unconfirmed: every block was acknowledged, but not DONE ({err})")
        }
        Status::Failed(err) => format!("failed: {err}"),
        Status::Running => "unfinished".to_string(),
        _ => "ok".to_string(),
    };
    let srtt = match (verbosity, e.s.srtt()) {
        (Verbosity::Verbose, Some(r)) => format!(", rtt {:.3} ms", r.as_secs_f64() * 1e3),
        _ => String::new(),
    };
    eprintln!(
        "udpftd: {} {} '{}': {} B in {:.3} s, {} resends{srtt}: {outcome}",
        e.s.peer(),
        e.s.op().name(),
        e.path,
        st.bytes,
        now.saturating_duration_since(e.started).as_secs_f64(),
        st.resent,
    );
}

fn terminal(s: &Status) -> bool {
    matches!(s, Status::Closed | Status::Failed(_))
}

/// What an accepted REQUEST turns into.
enum Plan {
    Send(Box<dyn io::Read + Send>, u64),
    Store(AtomicFile),
    Answered,
}

impl State {
    fn log(&self, level: Verbosity, args: std::fmt::Arguments) {
        if self.opts.verbosity >= level {
            let mut err = io::stderr().lock();
            let _ = writeln!(err, "udpftd: {args}");
        }
    }

    /// Transfers still under way: not answered deletes or exits, and not sessions that
    /// completed and only linger to re-acknowledge.
    fn running(&self) -> usize {
        self.sessions
            .values()
            .filter(|e| !e.answered && *e.s.status() == Status::Running)
            .count()
    }

    /// Sends what the session has to send, prints its trace, and removes it if it ended.
    fn drive(&mut self, id: SessionId, now: Instant) {
        let Some(e) = self.sessions.get_mut(&id) else {
            return;
        };
        let peer = e.s.peer();
        while let Some(b) = e.s.poll_transmit(now) {
            match self.sock.send_to(b, peer) {
                Ok(_) if let Some(t) = &mut self.tap => t.sent(now, self.local, peer, b),
                Ok(_) => {}
                Err(err) if self.opts.verbosity >= Verbosity::Verbose => {
                    eprintln!("udpftd: sending to {peer}: {err}");
                }
                Err(_) => {}
            }
        }
        if self.opts.trace {
            // Timed from the session's REQUEST, as the client's lines are from its own
            // (PROTOCOL.md §9); escaped, for an ERROR carries the client's text.
            let t = now.saturating_duration_since(e.started).as_secs_f64() * 1e3;
            while let Some(ev) = e.s.poll_event() {
                let ev = crate::text::sanitize(&ev.to_string()).into_owned();
                eprintln!("udpftd: {t:>9.3} ms  {peer} {id:016x}: {ev}");
            }
        }
        if !e.logged && *e.s.status() != Status::Running {
            e.logged = true;
            if self.opts.verbosity >= Verbosity::Normal {
                log_session(e, now, self.opts.verbosity);
            }
        }
        if terminal(e.s.status()) {
            self.remove(id, now);
        }
    }

    fn remove(&mut self, id: SessionId, now: Instant) {
        let Some(e) = self.sessions.remove(&id) else {
            return;
        };
        self.by_nonce.remove(&(e.s.peer(), e.s.nonce()));
        if !e.logged && self.opts.verbosity >= Verbosity::Normal {
            log_session(&e, now, self.opts.verbosity);
        }
        // Dropping the session drops its sink: an uncommitted upload's temp file goes.
        drop(e);
    }

    /// Fires due timers, and removes sessions that ended.
    fn expire(&mut self, now: Instant) {
        let mut finished = std::mem::take(&mut self.finished);
        finished.clear();
        for (id, e) in self.sessions.iter_mut() {
            if e.s.poll_timeout().is_some_and(|t| t <= now) {
                e.s.handle_timeout(now);
                finished.push(*id);
            } else if terminal(e.s.status()) {
                finished.push(*id);
            }
        }
        for id in &finished {
            self.drive(*id, now);
        }
        self.finished = finished;
    }

    fn abort_all(&mut self, now: Instant, reason: &str) {
        let ids: Vec<SessionId> = self.sessions.keys().copied().collect();
        for id in ids {
            if let Some(e) = self.sessions.get_mut(&id) {
                e.s.abort(reason);
            }
            self.drive(id, now);
            self.remove(id, now);
        }
    }

    fn datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        let d = match Datagram::parse(bytes) {
            Ok(d) => d,
            Err(e) => {
                self.stats.malformed += 1;
                if self.opts.trace {
                    eprintln!("udpftd: {from}: {} B dropped: {e}", bytes.len());
                }
                return;
            }
        };
        // PROTOCOL.md §6.2: a REQUEST is routed by (address, nonce), anything else by id.
        let is_request = matches!(d.message, Message::Request(_));
        if !is_request && let Some(e) = self.sessions.get_mut(&d.session) {
            e.s.handle(now, from, &d, bytes.len());
            return self.drive(d.session, now);
        }
        let Message::Request(req) = d.message else {
            self.stats.unrouted += 1;
            if self.opts.trace {
                eprintln!("udpftd: {from}: datagram for no session dropped");
            }
            return;
        };
        if let Some(&id) = self.by_nonce.get(&(from, d.session)) {
            if let Some(e) = self.sessions.get_mut(&id) {
                e.s.handle(now, from, &d, bytes.len());
            }
            return self.drive(id, now);
        }
        self.request(now, from, d.session, &req, bytes.len());
    }

    fn refuse(
        &mut self,
        from: SocketAddr,
        nonce: SessionId,
        req: &Request,
        len: usize,
        r: &Refusal,
    ) {
        self.stats.refused += 1;
        let n = reject(nonce, r.code, &r.message, len, &mut self.scratch);
        if n > 0
            && self.sock.send_to(&self.scratch[..n], from).is_ok()
            && let Some(t) = &mut self.tap
        {
            t.sent(Instant::now(), self.local, from, &self.scratch[..n]);
        }
        self.log(
            Verbosity::Normal,
            format_args!(
                "{from} {} '{}': refused ({}): {}",
                req.op.name(),
                crate::text::escape(req.name),
                r.code,
                crate::text::sanitize(&r.message)
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
        if self.mode != Mode::Accepting {
            let r = Refusal::new(ErrorCode::Busy, "server is shutting down");
            return self.refuse(from, nonce, req, len, &r);
        }
        let running = self.running();
        // Sessions that only linger (answered, or completed and waiting to re-acknowledge
        // a resent DONE) give way to new ones: the one that has lingered longest goes.
        // Without this, one client's stream of small puts filled the table for everyone.
        if running < self.opts.max_sessions
            && self.sessions.len() >= self.opts.max_sessions.saturating_mul(LINGER_FACTOR)
            && let Some(oldest) = self
                .sessions
                .iter()
                .filter(|(_, e)| e.answered || *e.s.status() != Status::Running)
                .min_by_key(|(_, e)| e.started)
                .map(|(id, _)| *id)
        {
            self.remove(oldest, now);
        }
        if running >= self.opts.max_sessions
            || self.sessions.len() >= self.opts.max_sessions.saturating_mul(LINGER_FACTOR)
        {
            let r = Refusal::new(
                ErrorCode::Busy,
                format!("server busy: {running} transfers in progress, try again later"),
            );
            return self.refuse(from, nonce, req, len, &r);
        }
        let plan = match self.plan(req) {
            Ok(p) => p,
            Err(r) => return self.refuse(from, nonce, req, len, &r),
        };
        let id = loop {
            let id = rand::rng().random::<u64>();
            if id != 0 && !self.sessions.contains_key(&id) {
                break id;
            }
        };
        let cfg = Config {
            block_size: req
                .block_size
                .min(self.opts.max_block_size)
                .clamp(wire::MIN_BLOCK_SIZE, wire::MAX_BLOCK_SIZE),
            rto: RtoConfig {
                max: self.opts.timeout,
                ..RtoConfig::default()
            },
            give_up: self.opts.idle,
            linger: Duration::ZERO,
            trace: self.opts.trace,
        };
        let (s, answered) = match plan {
            Plan::Send(src, size) => (
                ServerSession::send(id, from, nonce, len, req.op, size, src, cfg),
                false,
            ),
            Plan::Store(f) => (
                ServerSession::receive(id, from, nonce, len, req.size, Box::new(f), cfg, now),
                false,
            ),
            Plan::Answered => (
                ServerSession::answered(id, from, nonce, len, req.op, cfg, now),
                true,
            ),
        };
        if req.op == Op::Exit {
            self.mode = Mode::Exiting(now);
            self.log(
                Verbosity::Normal,
                format_args!(
                    "{from} asked the server to exit: no new sessions; finishing {} transfer(s)",
                    self.running()
                ),
            );
        }
        self.stats.sessions += 1;
        if answered {
            self.log(
                Verbosity::Normal,
                format_args!(
                    "{from} {} '{}': ok",
                    req.op.name(),
                    crate::text::escape(req.name)
                ),
            );
        }
        self.log(
            Verbosity::Verbose,
            format_args!(
                "{from} {} '{}': session {id:016x} started, block size {}",
                req.op.name(),
                crate::text::escape(req.name),
                cfg.block_size
            ),
        );
        self.sessions.insert(
            id,
            Entry {
                s,
                path: crate::text::escape(req.name).to_string(),
                started: now,
                answered,
                logged: answered,
            },
        );
        self.by_nonce.insert((from, nonce), id);
        self.drive(id, now);
    }

    /// Decides whether to accept `req`, and opens what it needs.
    fn plan(&mut self, req: &Request) -> Result<Plan, Refusal> {
        let name = req.name;
        match req.op {
            Op::Get => {
                let src = self.root.open_file(name)?;
                let size = src.size();
                Ok(Plan::Send(Box::new(src), size))
            }
            Op::List => {
                let text = listing(&self.root, name)?;
                let size = text.len() as u64;
                Ok(Plan::Send(Box::new(io::Cursor::new(text)), size))
            }
            Op::Put => {
                if self.opts.read_only {
                    return Err(Refusal::new(
                        ErrorCode::NotAllowed,
                        "this server is read-only: put is disabled (udpftd was started with --read-only)",
                    ));
                }
                Ok(Plan::Store(self.root.create(name, self.opts.overwrite)?))
            }
            Op::Delete => {
                if self.opts.read_only {
                    return Err(Refusal::new(
                        ErrorCode::NotAllowed,
                        "this server is read-only: delete is disabled (udpftd was started with --read-only)",
                    ));
                }
                if !self.opts.allow_delete {
                    return Err(Refusal::new(
                        ErrorCode::NotAllowed,
                        "delete is disabled on this server (start udpftd with --allow-delete)",
                    ));
                }
                self.root.delete(name)?;
                Ok(Plan::Answered)
            }
            Op::Exit => {
                if !self.opts.allow_exit {
                    return Err(Refusal::new(
                        ErrorCode::NotAllowed,
                        "exit is disabled on this server (start udpftd with --allow-exit)",
                    ));
                }
                Ok(Plan::Answered)
            }
        }
    }
}
