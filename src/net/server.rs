//! The `udpftd` driver: one UDP socket, a [`ServerEndpoint`] that decides everything,
//! and a small pool of IO workers that do every file operation.
//!
//! The network thread never opens, creates, lists, syncs, links or removes a file: it
//! hands each [`IoRequest`] to a worker and waits, in one `poll(2)`, for the socket and
//! for a worker's (or a stop request's) wake-up byte on a pipe. An idle server sleeps
//! until something happens: no periodic wake-up.
//!
//! Everything it has to say goes through [`tracing`] (target `udpftd`): a session's lines
//! and packet trace inside a span named `session` with the fields `peer` and `id`, so a
//! program that embeds the server captures them with its own subscriber. `udpftd`
//! prints each event's message as one line on stderr.

use std::io::{self, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::tap::Tap;
use super::tftp_ports::TftpPorts;
use crate::engine::tftp::{PortRequest, TransferId, Via};
use crate::engine::{
    Config, EndpointConfig, IoOutcome, IoRequest, LogLevel, LogLine, RtoConfig, ServerEndpoint,
};
use crate::storage::{Listing, ReadAhead, Root, Schedule};
use crate::wire::{self, Op, SessionId};

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
    /// Transfers at once from one IP address.
    pub max_per_address: usize,
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
    /// IO worker threads (file operations off the network thread).
    pub io_workers: usize,
    pub verbosity: Verbosity,
    pub trace: bool,
    /// Answer TFTP on the same port (TFTP.md).
    pub tftp: bool,
    /// Serve every TFTP transfer from the listening port (NAT, containers).
    pub tftp_single_port: bool,
    /// The largest send window granted to a client that asks for one (PROTOCOL.md
    /// §4.5); 1 grants none, as a server that predates windows.
    pub max_window: u16,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            root: PathBuf::from("."),
            listen: SocketAddr::from(([0, 0, 0, 0], super::DEFAULT_PORT)),
            max_sessions: 64,
            max_per_address: 32,
            overwrite: false,
            read_only: false,
            allow_delete: false,
            allow_exit: false,
            max_block_size: wire::MAX_BLOCK_SIZE,
            timeout: Duration::from_secs(1),
            idle: Duration::from_secs(30),
            grace: Duration::from_secs(5),
            io_workers: 4,
            verbosity: Verbosity::Normal,
            trace: false,
            tftp: true,
            tftp_single_port: false,
            max_window: DEFAULT_MAX_WINDOW,
        }
    }
}

/// The largest send window `udpftd` grants unless told otherwise (PROTOCOL.md §4.5).
pub const DEFAULT_MAX_WINDOW: u16 = 64;

/// Counters of a server's whole life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerStats {
    pub sessions: u64,
    pub refused: u64,
    /// Address checks (RETRYs) sent.
    pub retries: u64,
    /// Datagrams that failed to parse.
    pub malformed: u64,
    /// Valid datagrams that belonged to no session.
    pub unrouted: u64,
}

/// Asks a running server to stop (as SIGINT/SIGTERM do): it stops accepting and gives
/// transfers in flight the grace time. Cheap to clone; safe from a signal-handling
/// thread.
#[derive(Clone)]
pub struct Stopper {
    flag: Arc<AtomicBool>,
    wake: Arc<OwnedFd>,
}

impl Stopper {
    pub fn stop(&self) {
        self.flag.store(true, Ordering::Release);
        let _ = rustix::io::write(&*self.wake, &[1]);
    }
}

/// A bound server, ready to [`Server::run`].
pub struct Server {
    sock: UdpSocket,
    root: Arc<Root>,
    opts: ServerOptions,
    local: SocketAddr,
    wake_rx: OwnedFd,
    wake_tx: Arc<OwnedFd>,
    stop: Arc<AtomicBool>,
    tap: Option<Tap>,
}

impl Server {
    /// Checks the root and binds the socket. Starts no thread (so that privileges can
    /// be dropped after it: [`super::privileges`]).
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
        sock.set_nonblocking(true)?;
        let local = sock.local_addr()?;
        let (wake_rx, wake_tx) = rustix::pipe::pipe_with(
            rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK,
        )?;
        Ok(Server {
            sock,
            root: Arc::new(root),
            opts,
            local,
            wake_rx,
            wake_tx: Arc::new(wake_tx),
            stop: Arc::new(AtomicBool::new(false)),
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

    /// A handle that stops the server (for a signal handler or a test).
    pub fn stopper(&self) -> Stopper {
        Stopper {
            flag: self.stop.clone(),
            wake: self.wake_tx.clone(),
        }
    }

    /// Serves until an exit was answered and nothing runs any more, or until stopped
    /// ([`Server::stopper`]) and transfers in flight finished (or the grace time ran
    /// out).
    pub fn run(mut self) -> io::Result<ServerStats> {
        let mut tap = self.tap.take();
        let o = &self.opts;
        // Leftovers of uploads killed with an earlier server (on filesystems without
        // unnamed temporary files) are swept in the background.
        let handle = self.root.handle().try_clone_to_owned()?;
        let verbosity = o.verbosity;
        std::thread::Builder::new()
            .name("udpft-sweep".into())
            .spawn(move || {
                let n = crate::storage::sweep_tree(handle.as_fd()).unwrap_or(0);
                if n > 0 && verbosity >= Verbosity::Normal {
                    tracing::info!(
                        target: "udpftd",
                        "removed {n} temporary file(s) left by interrupted uploads"
                    );
                }
            })?;
        let now = Instant::now();
        let mut ep = ServerEndpoint::new(
            EndpointConfig {
                max_sessions: o.max_sessions,
                max_per_address: o.max_per_address,
                session: Config {
                    block_size: o.max_block_size,
                    rto: RtoConfig {
                        max: o.timeout,
                        ..RtoConfig::default()
                    },
                    give_up: o.idle,
                    linger: Duration::ZERO,
                    trace: o.trace,
                    window: o.max_window,
                    ..Config::default()
                },
                overwrite: o.overwrite,
                read_only: o.read_only,
                allow_delete: o.allow_delete,
                allow_exit: o.allow_exit,
                seed: None,
                log_rtt: o.verbosity >= Verbosity::Verbose,
                // Drained every turn of the loop: it tells which sessions' spans to drop.
                keep_outcomes: true,
                tftp: o.tftp,
                tftp_single_port: o.tftp_single_port,
                // TFTP writes get the same window limit (reads: 1, TFTP.md "Not yet").
                tftp_max_window: u32::from(o.max_window),
            },
            now,
        );
        let (done_tx, done_rx) = channel::<(SessionId, IoOutcome)>();
        let done = Done {
            tx: done_tx,
            wake: self.wake_tx.clone(),
        };
        let jobs = IoPool::start(o.io_workers.max(1), self.root.clone(), done)?;
        let mut buf = vec![0u8; wire::MAX_DATAGRAM];
        let mut out = vec![0u8; wire::MAX_DATAGRAM];
        let mut ports = TftpPorts::new(self.local.ip());
        let mut stopping = false;
        let verbosity = o.verbosity;
        // Each session's span, and when it was first seen (for the times on its trace
        // lines); forgotten whenever the server is idle.
        let mut spans = Spans::default();
        loop {
            let now = Instant::now();
            while let Ok((ticket, outcome)) = done_rx.try_recv() {
                ep.io_done(now, ticket, outcome);
            }
            if !stopping && self.stop.load(Ordering::Acquire) {
                stopping = true;
                ep.stop(now, o.grace);
            }
            if ep.poll_timeout().is_some_and(|t| t <= now) {
                ep.handle_timeout(now);
            }
            open_and_close_ports(&mut ep, &mut ports, now, verbosity);
            while let Some((via, to, n)) = ep.poll_transmit_tftp(now, &mut out) {
                let (sock, local) = match via {
                    Via::Listen => (&self.sock, self.local),
                    Via::Port(id) => match ports.get(id) {
                        Some((s, a)) => (s, *a),
                        None => continue,
                    },
                };
                match sock.send_to(&out[..n], to) {
                    Ok(_) if let Some(t) = &mut tap => t.sent(now, local, to, &out[..n]),
                    Ok(_) => {}
                    Err(e) if verbosity >= Verbosity::Verbose => {
                        tracing::debug!(target: "udpftd", "sending to {to}: {e}");
                    }
                    Err(_) => {}
                }
            }
            // Transfers that ended while sending give their ports back.
            open_and_close_ports(&mut ep, &mut ports, now, verbosity);
            while let Some((to, n)) = ep.poll_transmit(now, &mut out) {
                match self.sock.send_to(&out[..n], to) {
                    Ok(_) if let Some(t) = &mut tap => t.sent(now, self.local, to, &out[..n]),
                    Ok(_) => {}
                    Err(e) if verbosity >= Verbosity::Verbose => {
                        tracing::debug!(target: "udpftd", "sending to {to}: {e}");
                    }
                    Err(_) => {}
                }
            }
            while let Some(io) = ep.poll_io() {
                jobs.send(io);
            }
            while let Some((peer, id, ev)) = ep.poll_event() {
                // Timed from the session's first event, as the client's lines are from
                // its request (PROTOCOL.md §9); escaped, for an ERROR carries the
                // client's text.
                // A RETRY belongs to no session (its id is the client's nonce, and
                // nothing is kept for it): its span is not kept either.
                let (t0, span) = match ev {
                    crate::engine::Event::RetrySent => (now, Spans::make(peer, id)),
                    _ => spans.get(now, peer, id),
                };
                let t = now.saturating_duration_since(t0).as_secs_f64() * 1e3;
                let ev = crate::text::sanitize(&ev.to_string()).into_owned();
                span.in_scope(|| {
                    tracing::trace!(target: "udpftd", "{t:>9.3} ms  {peer} {id:016x}: {ev}");
                });
            }
            while let Some(line) = ep.poll_log() {
                emit(&line, &mut spans, now, verbosity, o.trace);
            }
            // A session that ended says nothing more: its span goes now, not when the
            // server is next idle (a busy server may never be).
            while let Some(ended) = ep.poll_ended() {
                spans.remove(ended.id);
            }
            if ep.is_idle() {
                spans.clear();
            }
            if ep.is_finished(now) {
                break;
            }
            let deadline = ep.poll_timeout();
            if deadline.is_none() {
                // About to sleep until something happens: make the capture current.
                tap.iter_mut().for_each(Tap::flush);
            }
            self.wait(deadline, &mut buf, &mut ep, &mut tap, &ports)?;
        }
        if let Some(Err(e)) = tap.take().map(Tap::finish) {
            tracing::error!(target: "udpftd", "writing the capture failed: {e}");
        }
        let now = Instant::now();
        ep.close(now);
        while let Some(line) = ep.poll_log() {
            if line.level == LogLevel::Normal {
                emit(&line, &mut spans, now, verbosity, false);
            }
        }
        let s = ep.stats();
        if verbosity >= Verbosity::Verbose {
            tracing::debug!(
                target: "udpftd",
                "served {} session(s), refused {}, {} address check(s), dropped {} malformed and {} unroutable datagram(s)",
                s.sessions, s.refused, s.retries, s.malformed, s.unrouted
            );
        }
        Ok(ServerStats {
            sessions: s.sessions,
            refused: s.refused,
            retries: s.retries,
            malformed: s.malformed,
            unrouted: s.unrouted,
        })
    }

    /// Waits for datagrams, a worker's completion or a stop, until `deadline`; feeds
    /// every datagram that is waiting to the endpoint.
    fn wait(
        &self,
        deadline: Option<Instant>,
        buf: &mut [u8],
        ep: &mut ServerEndpoint,
        tap: &mut Option<Tap>,
        ports: &TftpPorts,
    ) -> io::Result<()> {
        let timeout = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                Some(rustix::event::Timespec::try_from(left).map_err(io::Error::other)?)
            }
            None => None,
        };
        // The listening socket, the wake-up pipe, then every TFTP transfer's socket.
        let ids: Vec<(TransferId, SocketAddr)> = ports.iter().map(|(id, _, a)| (id, a)).collect();
        let mut fds = Vec::with_capacity(2 + ids.len());
        fds.push(rustix::event::PollFd::new(
            &self.sock,
            rustix::event::PollFlags::IN,
        ));
        fds.push(rustix::event::PollFd::new(
            &self.wake_rx,
            rustix::event::PollFlags::IN,
        ));
        for (id, _) in &ids {
            let (s, _) = ports.get(*id).expect("listed just now");
            fds.push(rustix::event::PollFd::new(s, rustix::event::PollFlags::IN));
        }
        match rustix::event::poll(&mut fds, timeout.as_ref()) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        let ready: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
        drop(fds);
        for (i, (id, local)) in ids.iter().enumerate() {
            if !ready[2 + i] {
                continue;
            }
            let Some((s, _)) = ports.get(*id) else {
                continue;
            };
            // A transfer's client sends one window at most: a few reads drain it.
            for _ in 0..64 {
                match s.recv_from(buf) {
                    Ok((n, from)) => {
                        let now = Instant::now();
                        if let Some(t) = tap {
                            t.received(now, from, *local, &buf[..n]);
                        }
                        ep.handle_tftp(now, Via::Port(*id), from, &buf[..n]);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    // Drained, or an ICMP error for an earlier send: keep serving.
                    Err(_) => break,
                }
            }
        }
        let woken = ready[1];
        if woken {
            let mut sink = [0u8; 64];
            while matches!(rustix::io::read(&self.wake_rx, &mut sink), Ok(n) if n > 0) {}
        }
        // Everything that is waiting, in one go (bounded: others wait for a turn).
        for _ in 0..256 {
            match self.sock.recv_from(buf) {
                Ok((n, from)) => {
                    let now = Instant::now();
                    if let Some(t) = tap {
                        t.received(now, from, self.local, &buf[..n]);
                    }
                    ep.handle(now, from, &buf[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // An ICMP error for an earlier send, or the like: keep serving.
                Err(e) => {
                    if self.opts.verbosity >= Verbosity::Verbose {
                        tracing::debug!(target: "udpftd", "socket: {e}");
                    }
                }
            }
        }
        Ok(())
    }
}

/// Opens and closes the TFTP transfer sockets the endpoint asks for.
fn open_and_close_ports(
    ep: &mut ServerEndpoint,
    ports: &mut TftpPorts,
    now: Instant,
    verbosity: Verbosity,
) {
    while let Some(p) = ep.poll_tftp_port() {
        match p {
            PortRequest::Open(id) => match ports.open(id) {
                Ok(()) => ep.tftp_port_ready(id),
                Err(e) => {
                    if verbosity >= Verbosity::Verbose {
                        tracing::debug!(target: "udpftd", "cannot open a TFTP transfer port: {e}");
                    }
                    ep.tftp_port_failed(now, id, &e.to_string());
                }
            },
            PortRequest::Close(id) => ports.close(id),
        }
    }
}

/// The `session` span of each session that has not ended yet, and when it was first
/// seen. Bounded by the sessions the endpoint holds at once.
#[derive(Default)]
struct Spans(std::collections::HashMap<SessionId, (Instant, tracing::Span)>);

impl Spans {
    fn make(peer: SocketAddr, id: SessionId) -> tracing::Span {
        tracing::info_span!(
            target: "udpftd",
            "session",
            %peer,
            id = %format_args!("{id:016x}")
        )
    }

    fn get(&mut self, now: Instant, peer: SocketAddr, id: SessionId) -> (Instant, tracing::Span) {
        self.0
            .entry(id)
            .or_insert_with(|| (now, Self::make(peer, id)))
            .clone()
    }

    fn remove(&mut self, id: SessionId) {
        self.0.remove(&id);
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

/// Emits one of the endpoint's log lines, if `verbosity` (or `trace`, which shows
/// everything that happens, dropped datagrams included) asks for it: one-session lines
/// inside that session's span.
fn emit(line: &LogLine, spans: &mut Spans, now: Instant, verbosity: Verbosity, trace: bool) {
    let shown = match line.level {
        LogLevel::Normal => Verbosity::Normal,
        LogLevel::Verbose => Verbosity::Verbose,
    };
    if verbosity < shown && !(trace && verbosity > Verbosity::Quiet) {
        return;
    }
    let text = &line.text;
    let log = || match line.level {
        LogLevel::Normal => tracing::info!(target: "udpftd", "{text}"),
        LogLevel::Verbose => tracing::debug!(target: "udpftd", "{text}"),
    };
    match line.session {
        Some((peer, id)) => spans.get(now, peer, id).1.in_scope(log),
        None => log(),
    }
}

/// A job for an IO worker: a request of the endpoint, or a read-ahead's refill.
enum Job {
    Request(IoRequest),
    Run(Box<dyn FnOnce() + Send>),
}

/// Reports a completion to the network thread: a channel message and a wake-up byte.
#[derive(Clone)]
struct Done {
    tx: Sender<(SessionId, IoOutcome)>,
    wake: Arc<OwnedFd>,
}

impl Done {
    fn send(&self, ticket: SessionId, outcome: IoOutcome) -> bool {
        if self.tx.send((ticket, outcome)).is_err() {
            return false;
        }
        let _ = rustix::io::write(&*self.wake, &[1]);
        true
    }
}

/// The IO workers: each takes a file operation, carries it out on the served root and
/// reports back through a channel, waking the network thread with a byte on a pipe.
struct IoPool {
    jobs: Sender<Job>,
}

impl IoPool {
    fn start(n: usize, root: Arc<Root>, done: Done) -> io::Result<IoPool> {
        let (jobs, rx) = channel::<Job>();
        let rx: Arc<Mutex<Receiver<Job>>> = Arc::new(Mutex::new(rx));
        // Read-aheads schedule their refills on the same workers.
        let schedule: Schedule = {
            let jobs = Mutex::new(jobs.clone());
            Arc::new(move |run| {
                if let Ok(j) = jobs.lock() {
                    let _ = j.send(Job::Run(run));
                }
            })
        };
        for i in 0..n {
            let (rx, root, done, schedule) =
                (rx.clone(), root.clone(), done.clone(), schedule.clone());
            std::thread::Builder::new()
                .name(format!("udpft-io-{i}"))
                .spawn(move || {
                    loop {
                        let job = match rx.lock() {
                            Ok(r) => r.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Err(_) => return,
                            Ok(Job::Run(run)) => run(),
                            Ok(Job::Request(req)) => {
                                let Some((ticket, outcome)) =
                                    carry_out(&root, req, &schedule, &done)
                                else {
                                    continue;
                                };
                                if !done.send(ticket, outcome) {
                                    return;
                                }
                            }
                        }
                    }
                })?;
        }
        Ok(IoPool { jobs })
    }

    fn send(&self, job: IoRequest) {
        // The workers live as long as the pool: a send cannot fail while it runs.
        let _ = self.jobs.send(Job::Request(job));
    }
}

/// `source` behind a read-ahead on the workers, its first chunk read already; the
/// session `ticket` is told when a refill lands.
fn read_ahead(
    source: Box<dyn io::Read + Send>,
    ticket: SessionId,
    schedule: &Schedule,
    done: &Done,
) -> Box<dyn io::Read + Send> {
    let done = done.clone();
    let ready = Arc::new(move || {
        done.send(ticket, IoOutcome::Ready);
    });
    let ra = ReadAhead::new(source, schedule.clone(), ready);
    ra.prefetch();
    Box::new(ra)
}

/// One file operation on the served root, and what to report (a discard reports
/// nothing).
fn carry_out(
    root: &Arc<Root>,
    job: IoRequest,
    schedule: &Schedule,
    done: &Done,
) -> Option<(SessionId, IoOutcome)> {
    Some(match job {
        IoRequest::Open {
            ticket,
            op,
            name,
            overwrite,
            size: _,
        } => {
            let outcome = match op {
                Op::Get => match root.open_file(&name) {
                    Ok(src) => {
                        let size = src.size();
                        let src = read_ahead(Box::new(src.unbuffered()), ticket, schedule, done);
                        IoOutcome::Send(src, size)
                    }
                    Err(r) => IoOutcome::Refused(r.code, r.message),
                },
                // Streamed, so its length is not known in advance (PROTOCOL.md §3.2).
                Op::List => match Listing::open(root.clone(), &name) {
                    Ok(list) => IoOutcome::Send(
                        read_ahead(Box::new(list), ticket, schedule, done),
                        wire::UNKNOWN_SIZE,
                    ),
                    Err(r) => IoOutcome::Refused(r.code, r.message),
                },
                // Writes that would wait for the disk are refused instead, and the
                // receiver leaves that block unacknowledged for now.
                Op::Put => match root.create(&name, overwrite) {
                    Ok(f) => IoOutcome::Store(Box::new(f.nonblocking())),
                    Err(r) => IoOutcome::Refused(r.code, r.message),
                },
                Op::Delete => match root.delete(&name) {
                    Ok(()) => IoOutcome::Done,
                    Err(r) => IoOutcome::Refused(r.code, r.message),
                },
                Op::Exit => IoOutcome::Done,
            };
            (ticket, outcome)
        }
        IoRequest::Commit { ticket, mut sink } => {
            let stored = sink.flush().and_then(|_| sink.commit());
            drop(sink);
            (ticket, IoOutcome::Committed(stored))
        }
        // Closes (or removes) the temporary file here, off the network thread.
        IoRequest::Discard { sink } => {
            drop(sink);
            return None;
        }
    })
}
