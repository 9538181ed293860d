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

use crate::link::{DelayQueue, Link, LinkConfig, LinkStats, Way};

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
        })
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
        self.publish();
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
        for d in fate.deliveries() {
            let mut bytes = b.clone();
            if let Some(c) = d.corruption {
                c.apply(&mut bytes);
            }
            self.queue.push(
                at + d.after,
                Pending {
                    way,
                    client,
                    from,
                    bytes,
                },
            );
        }
        self.publish();
    }

    fn deliver(&mut self, p: Pending, now: Instant) {
        let r = match p.way {
            Way::ClientToServer => match self.upstream(p.client, now) {
                Ok(u) => u.socket.send_to(&p.bytes, u.server),
                Err(e) => Err(e),
            },
            Way::ServerToClient => {
                // The client now knows the port the server answered from: its later
                // datagrams go there.
                if let Some(u) = self.upstreams.get_mut(&p.client) {
                    u.server = p.from;
                }
                self.listen.send_to(&p.bytes, p.client)
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
