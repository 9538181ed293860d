//! A whole session over the simulated link, on a virtual clock.
//!
//! [`run`] drives a [`ClientSession`] and a [`ServerSession`] through a [`Link`]:
//! every datagram each side emits is given a fate by the link model and delivered
//! (or not) at its virtual arrival time; timers fire at their deadlines. No wall time
//! passes and no socket is touched, so thousands of transfers run in a test.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::engine::{
    ClientSession, Config, Ended, EndpointConfig, Event, IoOutcome, IoRequest, Job, ServerEndpoint,
    Sink, Stats, Status,
};
use crate::link::{DelayQueue, Fate, Link, LinkConfig, LinkStats, Way};
use crate::wire::{ErrorCode, SessionId};

/// The client's address in the simulation.
pub const CLIENT: &str = "192.0.2.1:40000";
/// The server's address in the simulation.
pub const SERVER: &str = "192.0.2.2:6969";

/// What the simulated server does with the request.
pub enum ServerPlan {
    /// Answer a get or list from this source, announcing `size`.
    Serve(Box<dyn Read + Send>, u64),
    /// Answer a put into this sink.
    Store(Box<dyn Sink + Send>),
    /// Carry out a delete or exit.
    Answer,
    /// Refuse with this error.
    Refuse(ErrorCode, String),
}

/// Settings of one simulated session.
#[derive(Debug, Clone, Copy)]
pub struct SimConfig {
    pub link: LinkConfig,
    pub seed: u64,
    pub client: Config,
    pub server: Config,
    /// Virtual time after which the run is declared hung.
    pub time_limit: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            link: LinkConfig::default(),
            seed: 1,
            client: Config::default(),
            server: Config::default(),
            time_limit: Duration::from_secs(3600),
        }
    }
}

/// What happened in one simulated session.
#[derive(Debug, Clone)]
pub struct SimOutcome {
    pub client: Status,
    /// `None` if no REQUEST ever reached the server.
    pub server: Option<Status>,
    pub client_stats: Stats,
    pub server_stats: Stats,
    pub to_server: LinkStats,
    pub to_client: LinkStats,
    /// Datagrams the server could not parse or route (counted, never acted on).
    pub server_dropped: u64,
    /// Datagrams the server held back for the anti-amplification budget.
    pub held_back: u64,
    /// Virtual time from the first REQUEST until both sides were done (lingering
    /// included).
    pub elapsed: Duration,
    /// Virtual time from the first REQUEST until the client's transfer was complete
    /// (verified, stored, acknowledged), if it completed.
    pub completed: Option<Duration>,
    /// True if the run stopped at the time limit with a side still running.
    pub hung: bool,
    /// Every trace line, prefixed with the virtual time and the side, if tracing was on.
    pub trace: Vec<String>,
    /// What the link did to each datagram, in the order it was sent, if tracing was on.
    pub link_log: Vec<LinkEvent>,
    /// The events behind `trace`: virtual time, side ("client" or "server"), event.
    pub events: Vec<(Duration, &'static str, Event)>,
}

/// What the link did to one datagram: sent at `at` (virtual time since the start) the
/// way `way`, with this fate (its copies arrive `after` later).
#[derive(Debug, Clone, Copy)]
pub struct LinkEvent {
    pub at: Duration,
    pub way: Way,
    pub fate: Fate,
}

/// A sink that keeps what it receives where a test can read it afterwards, and records
/// whether the receiver committed it.
#[derive(Clone, Default)]
pub struct Capture {
    pub bytes: Arc<Mutex<Vec<u8>>>,
    pub committed: Arc<Mutex<bool>>,
}

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bytes.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Sink for Capture {
    fn commit(&mut self) -> io::Result<()> {
        *self.committed.lock().unwrap() = true;
        Ok(())
    }
}

impl Capture {
    pub fn contents(&self) -> Vec<u8> {
        self.bytes.lock().unwrap().clone()
    }
    pub fn is_committed(&self) -> bool {
        *self.committed.lock().unwrap()
    }
}

/// A reader of `len` pseudo-random bytes that never holds them all in memory.
pub struct Pattern {
    left: u64,
    state: u64,
}

impl Pattern {
    pub fn new(len: u64, seed: u64) -> Self {
        Pattern {
            left: len,
            state: seed | 1,
        }
    }

    /// The CRC32 and length the pattern produces, computed by streaming it.
    pub fn crc(len: u64, seed: u64) -> u32 {
        let mut p = Pattern::new(len, seed);
        let mut h = crc32fast::Hasher::new();
        let mut buf = [0u8; 8192];
        loop {
            let n = p.read(&mut buf).unwrap();
            if n == 0 {
                return h.finalize();
            }
            h.update(&buf[..n]);
        }
    }
}

impl Read for Pattern {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize;
        for b in &mut buf[..n] {
            // xorshift64: cheap, deterministic.
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            *b = self.state as u8;
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// A sink that keeps only the length and CRC32 of what it receives.
#[derive(Clone, Default)]
pub struct Digest {
    inner: Arc<Mutex<(u64, crc32fast::Hasher, bool)>>,
}

impl Write for Digest {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut g = self.inner.lock().unwrap();
        g.0 += buf.len() as u64;
        g.1.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Sink for Digest {
    fn commit(&mut self) -> io::Result<()> {
        self.inner.lock().unwrap().2 = true;
        Ok(())
    }
}

impl Digest {
    /// Length, CRC32 and whether it was committed.
    pub fn result(&self) -> (u64, u32, bool) {
        let g = self.inner.lock().unwrap();
        (g.0, g.1.clone().finalize(), g.2)
    }
}

/// The link plus the datagrams travelling on it.
struct Wire {
    link: Link,
    queue: DelayQueue<(Way, Vec<u8>)>,
    /// `Some(start)` when the link's decisions are recorded.
    log: Option<(Instant, Vec<LinkEvent>)>,
}

impl Wire {
    fn send(&mut self, now: Instant, way: Way, bytes: &[u8]) {
        let fate = self.link.direction(way).decide(now, bytes);
        if let Some((start, log)) = self.log.as_mut() {
            log.push(LinkEvent {
                at: now - *start,
                way,
                fate,
            });
        }
        for d in fate.deliveries() {
            let mut copy = bytes.to_vec();
            if let Some(c) = d.corruption {
                c.apply(&mut copy);
            }
            self.queue.push(now + d.after, (way, copy));
        }
    }
}

fn terminal(s: &Status) -> bool {
    matches!(s, Status::Closed | Status::Failed(_))
}

/// Runs one session: the client does `job` on `name`; the server answers per `plan`.
pub fn run(cfg: SimConfig, name: &str, job: Job, plan: ServerPlan) -> SimOutcome {
    run_scripted(cfg, name, job, plan, &mut |_, _| true)
}

/// The simulated server's storage: answers the endpoint's file operations at once
/// from the plan (a refusal may be given again; anything else once).
fn answer_io(plan: &mut Option<ServerPlan>, io: IoRequest) -> Option<(SessionId, IoOutcome)> {
    Some(match io {
        IoRequest::Open { ticket, .. } => {
            let outcome = match plan.take() {
                Some(ServerPlan::Serve(src, size)) => IoOutcome::Send(src, size),
                Some(ServerPlan::Store(sink)) => IoOutcome::Store(sink),
                Some(ServerPlan::Answer) => IoOutcome::Done,
                Some(ServerPlan::Refuse(code, msg)) => {
                    *plan = Some(ServerPlan::Refuse(code, msg.clone()));
                    IoOutcome::Refused(code, msg)
                }
                None => IoOutcome::Refused(ErrorCode::Busy, "already answered".into()),
            };
            (ticket, outcome)
        }
        IoRequest::Commit { ticket, mut sink } => {
            let stored = sink.flush().and_then(|_| sink.commit());
            (ticket, IoOutcome::Committed(stored))
        }
        // Nothing to report.
        IoRequest::Discard { sink } => {
            drop(sink);
            return None;
        }
    })
}

/// Like [`run`], but every datagram that survives the link is first shown to `arrive`
/// at its arrival time, which may rewrite it and returns whether to deliver it. Tests
/// use it to lose one chosen packet, or to watch what is in flight.
///
/// The server is the real front door, [`ServerEndpoint`] (address check, routing,
/// admission), with its file operations answered at once from `plan`.
pub fn run_scripted(
    cfg: SimConfig,
    name: &str,
    job: Job,
    plan: ServerPlan,
    arrive: &mut dyn FnMut(Way, &mut Vec<u8>) -> bool,
) -> SimOutcome {
    let client_addr: SocketAddr = CLIENT.parse().unwrap();
    let server_addr: SocketAddr = SERVER.parse().unwrap();
    let start = Instant::now();
    let mut now = start;
    let nonce: SessionId = 0x1000 + cfg.seed;
    let mut client =
        ClientSession::new(server_addr, nonce, name, job, cfg.client).expect("name fits");
    let mut plan = Some(plan);
    let mut server = ServerEndpoint::new(
        EndpointConfig {
            session: cfg.server,
            overwrite: true,
            allow_delete: true,
            allow_exit: true,
            seed: Some(cfg.seed),
            keep_outcomes: true,
            ..EndpointConfig::default()
        },
        start,
    );
    let mut ended: Option<Ended> = None;
    let tracing = cfg.client.trace || cfg.server.trace;
    let mut wire = Wire {
        link: Link::new(cfg.link, cfg.seed),
        queue: DelayQueue::default(),
        log: tracing.then(|| (start, Vec::new())),
    };
    if tracing {
        wire.link.to_server.classify(true);
        wire.link.to_client.classify(true);
    }
    let mut trace = Vec::new();
    let mut events = Vec::new();
    let mut out = vec![0u8; crate::wire::MAX_DATAGRAM];
    let mut hung = false;
    let mut completed = None;

    loop {
        // A verified DONE is stored at once here (no time passes), so its ACK goes out
        // without a WAIT before it.
        if let Some(mut sink) = client.poll_commit() {
            let stored = sink.flush().and_then(|_| sink.commit());
            client.commit_done(now, stored);
        }
        while let Some(io) = server.poll_io() {
            if let Some((ticket, outcome)) = answer_io(&mut plan, io) {
                server.io_done(now, ticket, outcome);
            }
        }
        while let Some(b) = client.poll_transmit(now) {
            wire.send(now, Way::ClientToServer, b);
        }
        while let Some((_, n)) = server.poll_transmit(now, &mut out) {
            wire.send(now, Way::ServerToClient, &out[..n]);
        }
        // Storage answered synchronously may leave more to do at this same instant.
        if server.poll_io_pending() {
            continue;
        }
        while server.poll_log().is_some() {}
        if tracing {
            let t = now - start;
            while let Some(e) = client.poll_event() {
                trace.push(line(t, "client", &e));
                events.push((t, "client", e));
            }
            while let Some((_, _, e)) = server.poll_event() {
                trace.push(line(t, "server", &e));
                events.push((t, "server", e));
            }
        }
        while let Some(e) = server.poll_ended() {
            ended = Some(e);
        }
        if completed.is_none() && matches!(client.status(), Status::Complete | Status::Closed) {
            completed = Some(now - start);
        }
        if terminal(client.status()) && server.is_idle() && wire.queue.is_empty() {
            break;
        }
        let next = [
            wire.queue.next_due(),
            client.poll_timeout(),
            server.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(next) = next else {
            // Nothing in flight and no timer armed, yet someone is not done: a hang.
            hung = true;
            break;
        };
        if next - start > cfg.time_limit {
            hung = true;
            break;
        }
        now = now.max(next);
        while let Some((way, mut bytes)) = wire.queue.pop_due(now) {
            if !arrive(way, &mut bytes) {
                continue;
            }
            match way {
                Way::ClientToServer => server.handle(now, client_addr, &bytes),
                Way::ServerToClient => client.handle_datagram(now, &bytes),
            }
        }
        if client.poll_timeout().is_some_and(|t| t <= now) {
            client.handle_timeout(now);
        }
        if server.poll_timeout().is_some_and(|t| t <= now) {
            server.handle_timeout(now);
        }
    }
    server.close(now);
    while let Some(e) = server.poll_ended() {
        ended = Some(e);
    }
    let st = server.stats();
    SimOutcome {
        client: client.status().clone(),
        server: ended.as_ref().map(|e| e.status.clone()),
        client_stats: client.stats(),
        server_stats: ended.as_ref().map(|e| e.stats).unwrap_or_default(),
        to_server: wire.link.to_server.stats(),
        to_client: wire.link.to_client.stats(),
        server_dropped: st.malformed + st.unrouted,
        held_back: ended.as_ref().map_or(0, |e| e.held_back),
        elapsed: now - start,
        completed,
        hung,
        trace,
        link_log: wire.log.map(|(_, l)| l).unwrap_or_default(),
        events,
    }
}

fn line(t: Duration, side: &str, e: &Event) -> String {
    format!("{:>9.3} ms  {side}: {e}", t.as_secs_f64() * 1e3)
}
