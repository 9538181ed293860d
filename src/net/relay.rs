//! The lossy-link relay behind `udpft-lossy`: a UDP relay that puts the
//! [`crate::link`] model between real clients and a real server.
//!
//! ```text
//!   client A ─┐                   ┌─ upstream socket for A ─┐
//!             ├─> listen socket ──┤                         ├──> server
//!   client B ─┘                   └─ upstream socket for B ─┘
//! ```
//!
//! Clients send to the relay's listen socket instead of the server. For each client
//! address seen, the relay opens its own upstream socket towards the server (bound to
//! the unspecified address, port 0), so the server's replies on that socket can be
//! mapped back to that client, like a NAT. Replies are accepted from any port of the
//! server's IP address, and once one has been delivered the client's later datagrams
//! go to that port (a server that answers from a per-session port, TFTP-style).
//!
//! Threads: one per socket, each blocked in `recv_from` (with a read timeout of
//! [`POLL`] so it notices when it is no longer wanted), pushing what it receives into
//! one channel; and one scheduler thread that owns the [`Link`], asks
//! [`Direction::decide`](crate::link::Direction::decide) about each datagram in the
//! order they reach the channel, and keeps the copies to deliver in a timer queue
//! (a heap by due time) until they are due. The relay makes no decision of its own:
//! the same seed and the same datagrams per direction give the same fates as
//! [`crate::sim`]. When idle it sleeps in blocking calls (the socket threads wake
//! [`POLL`]-often to check a flag, nothing more).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use std::io::Write;
use std::time::SystemTime;

use crate::link::{DelayQueue, Delivery, Fate, Link, LinkConfig, LinkStats, Way, way_word};
use crate::pcapng::{LinkType, PcapWriter};

/// How often a socket thread wakes from `recv_from` to see whether it should stop.
pub const POLL: Duration = Duration::from_millis(250);

/// The default for [`RelayConfig::idle_timeout`].
pub const DEFAULT_IDLE: Duration = Duration::from_secs(60);

/// The largest datagram the relay receives (anything longer is truncated by the OS).
const MAX_DATAGRAM: usize = 65_536;

/// Settings of one relay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RelayConfig {
    /// Where clients send to.
    pub listen: SocketAddr,
    /// The real server.
    pub server: SocketAddr,
    /// What the link does in each direction.
    pub link: LinkConfig,
    /// Seeds the link's decisions.
    pub seed: u64,
    /// An upstream socket whose client has been silent this long (and whose server
    /// too) is closed.
    pub idle_timeout: Duration,
}

impl RelayConfig {
    /// A relay from `listen` to `server` through `link`, seeded with `seed`.
    pub fn new(listen: SocketAddr, server: SocketAddr, link: LinkConfig, seed: u64) -> Self {
        RelayConfig {
            listen,
            server,
            link,
            seed,
            idle_timeout: DEFAULT_IDLE,
        }
    }
}

/// Counters of a relay: the link's, per direction, and the relay's own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Datagrams from clients towards the server.
    pub to_server: LinkStats,
    /// Datagrams from the server towards clients.
    pub to_client: LinkStats,
    /// Client addresses that have an upstream socket now.
    pub clients: usize,
    /// Upstream sockets opened so far (one per client address, again after an idle close).
    pub opened: u64,
    /// Upstream sockets closed after [`RelayConfig::idle_timeout`].
    pub idle_closed: u64,
    /// Datagrams that reached an upstream socket from an address other than the
    /// server's IP: not relayed.
    pub ignored: u64,
}

impl fmt::Display for RelayStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "to server: {}", self.to_server)?;
        writeln!(f, "to client: {}", self.to_client)?;
        write!(
            f,
            "clients: {} active, {} closed when idle; {} datagrams from strangers ignored",
            self.clients, self.idle_closed, self.ignored
        )
    }
}

/// A JSON report of a run: the seed, the settings and, per direction, the count of
/// every action (what `udpft-lossy --report` writes at exit). Hand-written: a fixed,
/// flat shape with numbers and a few strings does not need a serializer.
pub fn report_json(cfg: &RelayConfig, stats: &RelayStats) -> String {
    fn num(v: f64) -> String {
        if v.is_finite() {
            format!("{v}")
        } else {
            "null".into()
        }
    }
    fn dur(d: Duration) -> String {
        num(d.as_secs_f64() * 1e3)
    }
    fn string(s: &str) -> String {
        let mut o = String::from("\"");
        for c in s.chars() {
            match c {
                '"' => o.push_str("\\\""),
                '\\' => o.push_str("\\\\"),
                c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
                c => o.push(c),
            }
        }
        o.push('"');
        o
    }
    let direction = |imp: &crate::link::Impairments, st: &LinkStats| {
        let faults: Vec<String> = imp.faults.iter().map(|f| string(&f.to_string())).collect();
        let burst = imp.burst.map_or("null".into(), |g| {
            format!("{{\"p\": {}, \"r\": {}}}", num(g.p), num(g.r))
        });
        let rate = imp.rate.map_or("null".into(), |r| {
            format!(
                "{{\"bits_per_sec\": {}, \"queue\": {}}}",
                r.bits_per_sec, r.queue
            )
        });
        let counts: Vec<String> = st
            .fields()
            .iter()
            .map(|(k, v)| format!("\"{k}\": {v}"))
            .collect();
        format!(
            "{{\n    \"settings\": {{\"drop\": {}, \"duplicate\": {}, \"reorder\": {}, \
             \"corrupt\": {}, \"delay_ms\": {}, \"jitter_ms\": {}, \"reorder_by_ms\": {}, \
             \"burst\": {burst}, \"rate\": {rate}, \"faults\": [{}]}},\n    \"counts\": {{{}}}\n  }}",
            num(imp.drop),
            num(imp.duplicate),
            num(imp.reorder),
            num(imp.corrupt),
            dur(imp.delay),
            dur(imp.jitter),
            dur(imp.reorder_by),
            faults.join(", "),
            counts.join(", ")
        )
    };
    format!(
        "{{\n  \"seed\": {},\n  \"listen\": {},\n  \"server\": {},\n  \"to_server\": {},\n  \
         \"to_client\": {},\n  \"clients_opened\": {},\n  \"idle_closed\": {},\n  \
         \"ignored\": {}\n}}\n",
        cfg.seed,
        string(&cfg.listen.to_string()),
        string(&cfg.server.to_string()),
        direction(&cfg.link.to_server, &stats.to_server),
        direction(&cfg.link.to_client, &stats.to_client),
        stats.opened,
        stats.idle_closed,
        stats.ignored
    )
}

/// One message from a socket thread (or the owner) to the scheduler.
enum Msg {
    /// A datagram arrived: `client` is whose it is (the sender itself on the listen
    /// socket; the upstream's owner on an upstream socket), `from` who sent it.
    Datagram {
        way: Way,
        client: SocketAddr,
        from: SocketAddr,
        at: Instant,
        bytes: Vec<u8>,
    },
    Stop,
}

/// A copy waiting for its delivery time.
struct Pending {
    /// The datagram's number in its direction, from 1.
    number: u64,
    /// What the link decided for this copy.
    delivery: Delivery,
    way: Way,
    /// Whose datagram it is.
    client: SocketAddr,
    /// Who sent it: the client, or the server (from the port it answered from).
    from: SocketAddr,
    bytes: Vec<u8>,
}

/// One client's socket towards the server.
struct Upstream {
    socket: Arc<UdpSocket>,
    /// Where the client's datagrams go: the server's address, or the port it last
    /// answered from.
    server: SocketAddr,
    last_active: Instant,
    stop: Arc<AtomicBool>,
}

/// A relay whose listen socket is bound but which does not run yet.
pub struct Relay {
    cfg: RelayConfig,
    listen: Arc<UdpSocket>,
    capture: Option<Capture>,
}

/// The relay's pcapng recording: every datagram received and every copy sent, with a
/// comment saying what the link did.
struct Capture {
    out: PcapWriter<Box<dyn Write + Send>>,
    /// A wall-clock time and the monotonic instant it was read at, for timestamps.
    epoch: (Instant, Duration),
    /// The highest datagram number delivered so far, per direction (to-server,
    /// to-client), to tell which datagram a late one was reordered behind.
    delivered: [u64; 2],
    /// The local address the OS sends from towards the server, and towards clients
    /// when the listen address is unspecified (a wildcard bind hides it).
    towards_server: IpAddr,
    towards_client: HashMap<IpAddr, IpAddr>,
    failed: bool,
}

impl Capture {
    fn time(&self, at: Instant) -> Duration {
        self.epoch.1 + at.saturating_duration_since(self.epoch.0)
    }

    fn write(&mut self, at: Instant, src: SocketAddr, dst: SocketAddr, b: &[u8], what: &str) {
        let t = self.time(at);
        if let Err(e) = self.out.udp(t, src, dst, b, what)
            && !self.failed
        {
            self.failed = true;
            eprintln!("udpft-lossy: writing the capture failed: {e}");
        }
    }
}

/// The local address the OS would send from to reach `to` (a connected UDP socket
/// reveals it without sending anything); `fallback` when it cannot tell.
pub(crate) fn route_from(to: IpAddr, fallback: IpAddr) -> IpAddr {
    let any: SocketAddr = match to {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    UdpSocket::bind(any)
        .and_then(|s| {
            s.connect((to, 9))?;
            s.local_addr()
        })
        .map_or(fallback, |a| a.ip())
}

impl Relay {
    /// Binds the listen socket. Fails if the probabilities are out of range or the
    /// address cannot be bound.
    pub fn bind(cfg: RelayConfig) -> io::Result<Relay> {
        for (way, imp) in [
            ("to server", cfg.link.to_server),
            ("to client", cfg.link.to_client),
        ] {
            imp.validate()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{way}: {e}")))?;
        }
        let listen = UdpSocket::bind(cfg.listen)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot bind {}: {e}", cfg.listen)))?;
        Ok(Relay {
            cfg,
            listen: Arc::new(listen),
            capture: None,
        })
    }

    /// Records every datagram received and sent, as pcapng, into `out` (flushed when
    /// the relay stops).
    pub fn capture(&mut self, out: Box<dyn Write + Send>) -> io::Result<()> {
        let server = self.cfg.server.ip();
        let listen = self.listen.local_addr()?;
        self.capture = Some(Capture {
            out: PcapWriter::new(out, LinkType::RawIp, &format!("udpft-lossy {listen}"))?,
            epoch: (
                Instant::now(),
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default(),
            ),
            delivered: [0; 2],
            towards_server: route_from(server, listen.ip()),
            towards_client: HashMap::new(),
            failed: false,
        });
        Ok(())
    }

    /// The address clients should send to (with the port the OS chose, if it was 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listen.local_addr()
    }

    /// Starts the relay's threads.
    pub fn spawn(self) -> io::Result<RelayHandle> {
        let addr = self.listen.local_addr()?;
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(Mutex::new(RelayStats::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let listener = spawn_reader(
            self.listen.clone(),
            Way::ClientToServer,
            None,
            tx.clone(),
            stop.clone(),
        )?;
        let sched = Scheduler {
            cfg: self.cfg,
            link: Link::new(self.cfg.link, self.cfg.seed),
            listen: self.listen,
            upstreams: HashMap::new(),
            queue: DelayQueue::default(),
            tx: tx.clone(),
            stats: stats.clone(),
            counters: RelayStats::default(),
            capture: self.capture,
        };

        let scheduler = thread::Builder::new()
            .name("relay-scheduler".into())
            .spawn(move || sched.run(rx))?;
        Ok(RelayHandle {
            addr,
            tx,
            stats,
            stop,
            threads: vec![listener, scheduler],
        })
    }
}

/// A running relay.
pub struct RelayHandle {
    addr: SocketAddr,
    tx: Sender<Msg>,
    stats: Arc<Mutex<RelayStats>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// Asks a running relay to stop; cheap to clone, usable from a signal handler.
#[derive(Clone)]
pub struct Stopper(Sender<Msg>);

impl Stopper {
    pub fn stop(&self) {
        let _ = self.0.send(Msg::Stop);
    }
}

impl RelayHandle {
    /// The address clients send to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The counters so far.
    pub fn stats(&self) -> RelayStats {
        *self.stats.lock().unwrap()
    }

    /// Something that can stop the relay from another thread.
    pub fn stopper(&self) -> Stopper {
        Stopper(self.tx.clone())
    }

    /// Waits until the relay is stopped (by a [`Stopper`]) and returns its counters.
    /// Datagrams still waiting for their delivery time are discarded.
    pub fn join(mut self) -> RelayStats {
        if let Some(s) = self.threads.pop() {
            let _ = s.join();
        }
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.stats()
    }

    /// Stops the relay and returns its counters.
    pub fn stop(self) -> RelayStats {
        self.stopper().stop();
        self.join()
    }
}

impl Drop for RelayHandle {
    /// A relay whose handle is dropped stops (without waiting for its threads).
    fn drop(&mut self) {
        let _ = self.tx.send(Msg::Stop);
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn spawn_reader(
    socket: Arc<UdpSocket>,
    way: Way,
    client: Option<SocketAddr>,
    tx: Sender<Msg>,
    stop: Arc<AtomicBool>,
) -> io::Result<JoinHandle<()>> {
    socket.set_read_timeout(Some(POLL))?;
    let name = match client {
        None => "relay-listen".to_string(),
        Some(c) => format!("relay-up-{c}"),
    };
    thread::Builder::new().name(name).spawn(move || {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        while !stop.load(Ordering::Relaxed) {
            match socket.recv_from(&mut buf) {
                Ok((n, from)) => {
                    let msg = Msg::Datagram {
                        way,
                        client: client.unwrap_or(from),
                        from,
                        at: Instant::now(),
                        bytes: buf[..n].to_vec(),
                    };
                    if tx.send(msg).is_err() {
                        return;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                            | io::ErrorKind::ConnectionRefused
                            | io::ErrorKind::ConnectionReset
                    ) => {}
                Err(e) => {
                    eprintln!("udpft-lossy: receiving failed: {e}");
                    thread::sleep(POLL);
                }
            }
        }
    })
}

struct Scheduler {
    cfg: RelayConfig,
    link: Link,
    listen: Arc<UdpSocket>,
    upstreams: HashMap<SocketAddr, Upstream>,
    queue: DelayQueue<Pending>,
    tx: Sender<Msg>,
    stats: Arc<Mutex<RelayStats>>,
    counters: RelayStats,
    capture: Option<Capture>,
}

impl Scheduler {
    fn run(mut self, rx: Receiver<Msg>) {
        // How often idle upstreams are looked for, while there are any.
        let sweep_every = (self.cfg.idle_timeout / 4).max(Duration::from_millis(10));
        let mut next_sweep = Instant::now() + sweep_every;
        loop {
            let now = Instant::now();
            while let Some(p) = self.queue.pop_due(now) {
                self.deliver(p, now);
                self.publish();
            }
            if now >= next_sweep {
                self.sweep(now);
                next_sweep = now + sweep_every;
            }
            let due = self.queue.next_due();
            let wake = match (due, self.upstreams.is_empty()) {
                (Some(d), true) => Some(d),
                (Some(d), false) => Some(d.min(next_sweep)),
                (None, false) => Some(next_sweep),
                (None, true) => None,
            };
            let msg = match wake {
                Some(at) => match rx.recv_timeout(at.saturating_duration_since(now)) {
                    Ok(m) => m,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => break,
                },
                None => {
                    next_sweep = Instant::now() + sweep_every;
                    match rx.recv() {
                        Ok(m) => m,
                        Err(_) => break,
                    }
                }
            };
            match msg {
                Msg::Stop => break,
                Msg::Datagram {
                    way,
                    client,
                    from,
                    at,
                    bytes,
                } => self.arrive(way, client, from, at, bytes),
            }
        }
        for u in self.upstreams.values() {
            u.stop.store(true, Ordering::Relaxed);
        }
        if let Some(c) = self.capture.as_mut()
            && let Err(e) = c.out.flush()
        {
            eprintln!("udpft-lossy: writing the capture failed: {e}");
        }
        self.publish();
    }

    /// The relay's own address on the side facing `client` (what the client sent to).
    fn client_facing(&mut self, client: SocketAddr) -> SocketAddr {
        let listen = self.listen.local_addr().unwrap_or(self.cfg.listen);
        if !listen.ip().is_unspecified() {
            return listen;
        }
        let ip = match self.capture.as_mut() {
            Some(c) => *c
                .towards_client
                .entry(client.ip())
                .or_insert_with(|| route_from(client.ip(), listen.ip())),
            None => listen.ip(),
        };
        SocketAddr::new(ip, listen.port())
    }

    /// The relay's own address on the side facing the server, for `client`'s upstream.
    fn server_facing(&self, client: SocketAddr) -> Option<SocketAddr> {
        let c = self.capture.as_ref()?;
        let u = self.upstreams.get(&client)?;
        let port = u.socket.local_addr().ok()?.port();
        Some(SocketAddr::new(c.towards_server, port))
    }

    /// Gives one arriving datagram its fate and queues its copies.
    fn arrive(&mut self, way: Way, client: SocketAddr, from: SocketAddr, at: Instant, b: Vec<u8>) {
        match way {
            Way::ClientToServer => {
                if let Some(u) = self.upstreams.get_mut(&client) {
                    u.last_active = at;
                }
            }
            Way::ServerToClient => {
                if !same_ip(from.ip(), self.cfg.server.ip()) {
                    self.counters.ignored += 1;
                    self.publish();
                    return;
                }
                if let Some(u) = self.upstreams.get_mut(&client) {
                    u.last_active = at;
                }
            }
        }
        let fate = self.link.direction(way).decide(at, &b);
        if self.capture.is_some() {
            self.record_arrival(way, client, from, at, &b, &fate);
        }
        for d in fate.deliveries() {
            let mut bytes = b.clone();
            if let Some(c) = d.corruption {
                c.apply(&mut bytes);
            }
            self.queue.push(
                at + d.after,
                Pending {
                    number: fate.number,
                    delivery: d,
                    way,
                    client,
                    from,
                    bytes,
                },
            );
        }
        self.publish();
    }

    fn record_arrival(
        &mut self,
        way: Way,
        client: SocketAddr,
        from: SocketAddr,
        at: Instant,
        b: &[u8],
        fate: &Fate,
    ) {
        let to = match way {
            Way::ClientToServer => self.client_facing(client),
            Way::ServerToClient => match self.server_facing(client) {
                Some(a) => a,
                None => return,
            },
        };
        let what = format!("{} #{} received: {fate}", way_word(way), fate.number);
        if let Some(c) = self.capture.as_mut() {
            c.write(at, from, to, b, &what);
        }
    }

    fn record_sending(&mut self, p: &Pending, to: SocketAddr, now: Instant) {
        let from = match p.way {
            Way::ClientToServer => match self.server_facing(p.client) {
                Some(a) => a,
                None => return,
            },
            Way::ServerToClient => self.client_facing(p.client),
        };
        let Some(c) = self.capture.as_mut() else {
            return;
        };
        let last = &mut c.delivered[(p.way == Way::ServerToClient) as usize];
        let mut what = format!("{} #{} sent: {}", way_word(p.way), p.number, p.delivery);
        if *last > p.number {
            what += &format!(", reordered behind #{last}");
        }
        *last = (*last).max(p.number);
        c.write(now, from, to, &p.bytes, &what);
    }

    fn deliver(&mut self, p: Pending, now: Instant) {
        let r = match p.way {
            Way::ClientToServer => match self.upstream(p.client, now) {
                Ok(u) => {
                    let to = u.server;
                    let r = u.socket.send_to(&p.bytes, to);
                    if self.capture.is_some() {
                        self.record_sending(&p, to, now);
                    }
                    r
                }
                Err(e) => Err(e),
            },
            Way::ServerToClient => {
                // The client now knows the port the server answered from: its later
                // datagrams go there.
                if let Some(u) = self.upstreams.get_mut(&p.client) {
                    u.server = p.from;
                }
                let r = self.listen.send_to(&p.bytes, p.client);
                if self.capture.is_some() {
                    self.record_sending(&p, p.client, now);
                }
                r
            }
        };
        if let Err(e) = r {
            eprintln!("udpft-lossy: sending to {} failed: {e}", p.client);
        }
    }

    /// The client's upstream socket, opened if it has none.
    fn upstream(&mut self, client: SocketAddr, now: Instant) -> io::Result<&mut Upstream> {
        match self.upstreams.entry(client) {
            Entry::Occupied(e) => Ok(e.into_mut()),
            Entry::Vacant(e) => {
                let any = match self.cfg.server.ip() {
                    IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                };
                let socket = Arc::new(UdpSocket::bind(SocketAddr::new(any, 0))?);
                let stop = Arc::new(AtomicBool::new(false));
                self.counters.opened += 1;
                spawn_reader(
                    socket.clone(),
                    Way::ServerToClient,
                    Some(client),
                    self.tx.clone(),
                    stop.clone(),
                )?;
                Ok(e.insert(Upstream {
                    socket,
                    server: self.cfg.server,
                    last_active: now,
                    stop,
                }))
            }
        }
    }

    /// Closes upstream sockets idle longer than the idle timeout.
    fn sweep(&mut self, now: Instant) {
        let idle = self.cfg.idle_timeout;
        let before = self.upstreams.len();
        self.upstreams.retain(|_, u| {
            let keep = now.saturating_duration_since(u.last_active) < idle;
            if !keep {
                u.stop.store(true, Ordering::Relaxed);
            }
            keep
        });
        let closed = before - self.upstreams.len();
        if closed > 0 {
            self.counters.idle_closed += closed as u64;
            self.publish();
        }
    }

    fn publish(&mut self) {
        self.counters.to_server = self.link.to_server.stats();
        self.counters.to_client = self.link.to_client.stats();
        self.counters.clients = self.upstreams.len();
        *self.stats.lock().unwrap() = self.counters;
    }
}

/// Whether two addresses are the same host, an IPv4 address and its IPv6-mapped form
/// included.
fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    let canon = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    canon(a) == canon(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_addresses_are_the_same_host() {
        let v4: IpAddr = "127.0.0.1".parse().unwrap();
        let v6: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert!(same_ip(v4, v6));
        assert!(!same_ip(v4, "127.0.0.2".parse().unwrap()));
    }
}
