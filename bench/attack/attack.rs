//! A hostile udpft client for measuring udpftd under the exhaustion patterns of issue 9
//! (`bench/attack/run` drives it; see bench/attack/README.md).
//!
//! It opens one UDP socket per source address (`--sources 127.0.0.2-127.0.0.65`: any
//! address of 127.0.0.0/8 can be bound on Linux, so on loopback these are real,
//! distinct "spoofed" sources) and runs `--sessions` sessions on each, every one a
//! small state machine:
//!
//! - REQUEST (`--op`, `--name`, one nonce per session, kept for its resends), sent again
//!   every `--request-every`;
//! - with `--prove`, a RETRY's token is echoed at once (an attacker who receives at its
//!   address); without it the RETRY is ignored (blind, spoofed);
//! - after the ACCEPT, a get or list is acknowledged by `--ack`: `never`, `fast` (each
//!   packet at once, as a real client), `every=DUR` (the newest packet once per DUR),
//!   `ooo` (acks from the future and the past, then the right one, each packet);
//!   a put sends DATA (`--block-size` bytes of zeros) one block per ack (`fast`) or one
//!   per DUR (`every=DUR`), announcing an unknown size, and never sends DONE (after
//!   `--max-blocks` it stalls);
//! - with `--restart`, a session that ended (refused, evicted, done) is replaced by a
//!   new one (new nonce) after 100 ms, so the pressure never lets up.
//!
//! `--garbage` instead sends random bytes and well-formed ACK/DATA/DONE for random
//! session ids as fast as it can (bounded by `--duration`).
//!
//! Runs for `--duration` at most, then prints one line of counters.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use rand::RngExt;
use udpft::wire::{self, Datagram, ErrorCode, Message, Op, Request, Token};

#[derive(Parser, Debug, Clone)]
struct Args {
    /// The server, ADDR:PORT.
    #[arg(long)]
    server: SocketAddr,
    /// Source addresses: one IPv4 address or a range of the last octet, A.B.C.D-A.B.C.E.
    #[arg(long, default_value = "127.0.0.2")]
    sources: String,
    /// Sessions per source address.
    #[arg(long, default_value_t = 1)]
    sessions: usize,
    #[arg(long, default_value = "get")]
    op: String,
    #[arg(long, default_value = "big.bin")]
    name: String,
    #[arg(long, default_value_t = 8)]
    block_size: u32,
    /// Resend a REQUEST that is not yet answered this often.
    #[arg(long, value_parser = dur, default_value = "3s")]
    request_every: Duration,
    /// Echo the RETRY's token (the attacker receives at its address).
    #[arg(long)]
    prove: bool,
    /// never | fast | every=DUR | ooo
    #[arg(long, default_value = "never")]
    ack: String,
    /// Replace a session that ended by a new one.
    #[arg(long)]
    restart: bool,
    /// A put sends at most this many blocks, then stalls (bounds the disk it fills).
    #[arg(long, default_value_t = u64::MAX)]
    max_blocks: u64,
    /// Send garbage instead of sessions.
    #[arg(long)]
    garbage: bool,
    /// With --garbage: datagrams per second from all sources together (0: as fast as
    /// possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    #[arg(long, value_parser = dur, default_value = "60s")]
    duration: Duration,
}

fn dur(s: &str) -> Result<Duration, String> {
    let (n, unit) = s
        .find(|c: char| c.is_ascii_alphabetic())
        .map_or((s, "s"), |i| (&s[..i], &s[i..]));
    let n: f64 = n.parse().map_err(|_| format!("bad duration {s}"))?;
    let secs = match unit {
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("bad unit in {s}")),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// A fast put resends an unacknowledged block after this long.
const PUT_RESEND: Duration = Duration::from_millis(20);

#[derive(Clone, Copy, Debug)]
enum Ack {
    Never,
    Fast,
    Every(Duration),
    OutOfOrder,
}

/// Set by SIGINT/SIGTERM: the counters are printed and the program ends.
static STOP: AtomicBool = AtomicBool::new(false);

fn over(until: Instant) -> bool {
    STOP.load(Ordering::Relaxed) || Instant::now() >= until
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    retries: AtomicU64,
    accepted: AtomicU64,
    busy: AtomicU64,
    refused_other: AtomicU64,
    aborted: AtomicU64,
    completed: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

#[derive(Debug)]
enum Phase {
    Requesting { next: Instant },
    Running { sid: u64, next_ack: Instant },
    Over { restart_at: Instant },
}

struct Session {
    nonce: u64,
    token: Option<Token>,
    phase: Phase,
    /// Receiver: the newest in-order packet (0: the ACCEPT). Sender (put): the newest
    /// DATA sent.
    newest: u64,
    /// Sender (put): the newest DATA acknowledged.
    acked: u64,
}

fn op_of(s: &str) -> Op {
    match s {
        "get" => Op::Get,
        "put" => Op::Put,
        "list" => Op::List,
        "delete" => Op::Delete,
        "exit" => Op::Exit,
        _ => panic!("unknown op {s}"),
    }
}

fn sources(spec: &str) -> Vec<Ipv4Addr> {
    match spec.split_once('-') {
        None => vec![spec.parse().expect("an IPv4 address")],
        Some((a, b)) => {
            let a: Ipv4Addr = a.parse().expect("an IPv4 address");
            let b: Ipv4Addr = b.parse().expect("an IPv4 address");
            let (o, lo, hi) = (a.octets(), a.octets()[3], b.octets()[3]);
            (lo..=hi)
                .map(|x| Ipv4Addr::new(o[0], o[1], o[2], x))
                .collect()
        }
    }
}

struct Worker {
    sock: UdpSocket,
    args: Args,
    op: Op,
    ack: Ack,
    c: Arc<Counters>,
    out: Vec<u8>,
}

impl Worker {
    fn send(&mut self, d: &Datagram) {
        let n = d.emit(&mut self.out).expect("encodes");
        if self.sock.send_to(&self.out[..n], self.args.server).is_ok() {
            bump(&self.c.sent);
        }
    }

    fn request(&mut self, s: &Session) {
        let size = if self.op == Op::Put {
            wire::UNKNOWN_SIZE
        } else {
            0
        };
        let name = self.args.name.clone();
        self.send(&Datagram {
            session: s.nonce,
            seq: 0,
            message: Message::Request(Request {
                op: self.op,
                block_size: self.args.block_size,
                size,
                name: &name,
                token: s.token,
                window: 1,
            }),
        });
        bump(&self.c.requests);
    }

    fn ack(&mut self, sid: u64, seq: u64) {
        self.send(&Datagram {
            session: sid,
            seq,
            message: Message::Ack,
        });
    }

    fn data(&mut self, sid: u64, seq: u64) {
        let block = vec![0u8; self.args.block_size as usize];
        self.send(&Datagram {
            session: sid,
            seq,
            message: Message::Data(&block),
        });
    }

    /// What a session does when its turn comes (its timers).
    fn tick(&mut self, s: &mut Session, now: Instant) {
        match s.phase {
            Phase::Requesting { next } if now >= next => {
                self.request(s);
                s.phase = Phase::Requesting {
                    next: now + self.args.request_every,
                };
            }
            Phase::Running { sid, next_ack } if now >= next_ack => {
                if let (Op::Put, Ack::Fast) = (self.op, self.ack) {
                    // The server left it unacknowledged (its write buffers were full):
                    // resend, as a real sender's timer would.
                    self.data(sid, s.newest);
                    s.phase = Phase::Running {
                        sid,
                        next_ack: now + PUT_RESEND,
                    };
                }
                if let Ack::Every(d) = self.ack {
                    if self.op == Op::Put {
                        if s.acked == s.newest && s.newest < self.args.max_blocks {
                            s.newest += 1;
                        }
                        self.data(sid, s.newest);
                    } else {
                        self.ack(sid, s.newest);
                    }
                    s.phase = Phase::Running {
                        sid,
                        next_ack: now + d,
                    };
                }
            }
            Phase::Over { restart_at } if self.args.restart && now >= restart_at => {
                *s = new_session(now);
                self.tick(s, now);
            }
            _ => {}
        }
    }

    /// A datagram for session `s`.
    fn receive(&mut self, s: &mut Session, d: &Datagram, now: Instant) {
        let restart_at = now + Duration::from_millis(100);
        match (&s.phase, d.message) {
            (Phase::Requesting { .. }, Message::Retry(t)) if d.session == s.nonce => {
                bump(&self.c.retries);
                if self.args.prove {
                    s.token = Some(t);
                    self.request(s);
                }
            }
            (Phase::Requesting { .. }, Message::Accept(a)) if a.nonce == s.nonce => {
                bump(&self.c.accepted);
                let sid = d.session;
                s.newest = 0;
                let far = now + Duration::from_secs(3600);
                let next_ack = match self.ack {
                    Ack::Every(p) => now + p,
                    _ => far,
                };
                s.phase = Phase::Running { sid, next_ack };
                match (self.op, self.ack) {
                    (Op::Put, Ack::Fast) => {
                        s.newest = 1;
                        self.data(sid, 1);
                        s.phase = Phase::Running {
                            sid,
                            next_ack: now + PUT_RESEND,
                        };
                    }
                    (Op::Get | Op::List, Ack::Fast) => self.ack(sid, 0),
                    (Op::Get | Op::List, Ack::OutOfOrder) => {
                        self.ack(sid, 5);
                        self.ack(sid, 0);
                    }
                    (Op::Delete | Op::Exit, _) => {
                        bump(&self.c.completed);
                        s.phase = Phase::Over { restart_at };
                    }
                    _ => {}
                }
            }
            (Phase::Requesting { .. }, Message::Error { code, .. }) if d.session == s.nonce => {
                if code == ErrorCode::Busy {
                    bump(&self.c.busy);
                } else {
                    bump(&self.c.refused_other);
                }
                s.phase = Phase::Over { restart_at };
            }
            (&Phase::Running { sid, .. }, m) if d.session == sid => match m {
                Message::Data(_) | Message::Done { .. } => {
                    let done = matches!(m, Message::Done { .. });
                    if d.seq == s.newest + 1 {
                        s.newest = d.seq;
                    }
                    match self.ack {
                        Ack::Fast => self.ack(sid, d.seq.min(s.newest)),
                        Ack::OutOfOrder => {
                            self.ack(sid, s.newest + 3);
                            self.ack(sid, s.newest.saturating_sub(2));
                            self.ack(sid, s.newest);
                        }
                        _ => {}
                    }
                    if done && matches!(self.ack, Ack::Fast | Ack::OutOfOrder) {
                        bump(&self.c.completed);
                        s.phase = Phase::Over { restart_at };
                    }
                }
                Message::Ack if self.op == Op::Put => {
                    s.acked = s.acked.max(d.seq.min(s.newest));
                    if d.seq == s.newest
                        && matches!(self.ack, Ack::Fast)
                        && s.newest < self.args.max_blocks
                    {
                        s.newest += 1;
                        self.data(sid, s.newest);
                        s.phase = Phase::Running {
                            sid,
                            next_ack: now + PUT_RESEND,
                        };
                    }
                }
                Message::Error { .. } => {
                    bump(&self.c.aborted);
                    s.phase = Phase::Over { restart_at };
                }
                _ => {}
            },
            _ => {}
        }
    }

    fn run(mut self, n: usize, until: Instant) {
        let now = Instant::now();
        let mut sessions: Vec<Session> = (0..n).map(|_| new_session(now)).collect();
        let mut buf = vec![0u8; wire::MAX_DATAGRAM];
        self.sock
            .set_read_timeout(Some(Duration::from_millis(5)))
            .unwrap();
        loop {
            let now = Instant::now();
            if over(until) {
                return;
            }
            for s in sessions.iter_mut() {
                self.tick(s, now);
            }
            // Everything waiting, then the timers again.
            while let Ok((n, _)) = self.sock.recv_from(&mut buf) {
                bump(&self.c.received);
                let Ok(d) = Datagram::parse(&buf[..n]) else {
                    continue;
                };
                let now = Instant::now();
                let by_id: HashMap<u64, usize> = sessions
                    .iter()
                    .enumerate()
                    .flat_map(|(i, s)| {
                        let sid = match s.phase {
                            Phase::Running { sid, .. } => sid,
                            _ => 0,
                        };
                        [(s.nonce, i), (sid, i)]
                    })
                    .collect();
                // An ACCEPT carries the server's id; the nonce is in its payload.
                let key = match d.message {
                    Message::Accept(a) => a.nonce,
                    _ => d.session,
                };
                if let Some(&i) = by_id.get(&key) {
                    self.receive(&mut sessions[i], &d, now);
                }
                if self.sock.read_timeout().ok().flatten() != Some(Duration::from_millis(1)) {
                    let _ = self.sock.set_read_timeout(Some(Duration::from_millis(1)));
                }
            }
            let _ = self.sock.set_read_timeout(Some(Duration::from_millis(5)));
        }
    }
}

fn new_session(now: Instant) -> Session {
    let mut nonce = 0;
    while nonce == 0 {
        nonce = rand::rng().random();
    }
    Session {
        nonce,
        token: None,
        phase: Phase::Requesting { next: now },
        newest: 0,
        acked: 0,
    }
}

/// Sends `per_second` datagrams a second (0: no limit) of garbage to `server`.
fn garbage(sock: UdpSocket, server: SocketAddr, per_second: u64, until: Instant, c: Arc<Counters>) {
    let mut rng = rand::rng();
    let mut out = vec![0u8; 2048];
    let start = Instant::now();
    let mut sent = 0u64;
    while !over(until) {
        if per_second > 0 {
            let due = (start.elapsed().as_secs_f64() * per_second as f64) as u64;
            if sent >= due {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
        }
        for _ in 0..if per_second > 0 { 1 } else { 256 } {
            sent += 1;
            let n = match rng.random_range(0..4u8) {
                0 => {
                    let n = rng.random_range(0..1500usize);
                    rng.fill(&mut out[..n]);
                    n
                }
                k => {
                    let block = [7u8; 64];
                    let message = match k {
                        1 => Message::Ack,
                        2 => Message::Data(&block),
                        _ => Message::Done { length: 64, crc: 1 },
                    };
                    Datagram {
                        session: rng.random(),
                        seq: rng.random_range(1..1000),
                        message,
                    }
                    .emit(&mut out)
                    .unwrap()
                }
            };
            if sock.send_to(&out[..n], server).is_ok() {
                bump(&c.sent);
            }
        }
        std::thread::yield_now();
    }
}

fn main() {
    let args = Args::parse();
    let op = op_of(&args.op);
    let ack = match args.ack.as_str() {
        "never" => Ack::Never,
        "fast" => Ack::Fast,
        "ooo" => Ack::OutOfOrder,
        s => match s.strip_prefix("every=") {
            Some(d) => Ack::Every(dur(d).expect("every=DUR")),
            None => panic!("--ack never|fast|every=DUR|ooo"),
        },
    };
    let until = Instant::now() + args.duration;
    ctrlc::set_handler(|| STOP.store(true, Ordering::Relaxed)).expect("a signal handler");
    let c = Arc::new(Counters::default());
    let mut threads = Vec::new();
    let ips = sources(&args.sources);
    let per_source = args.rate.div_ceil(ips.len() as u64);
    for ip in ips {
        let sock = UdpSocket::bind((ip, 0)).expect("bind a source address");
        let c = c.clone();
        if args.garbage {
            let server = args.server;
            threads.push(std::thread::spawn(move || {
                garbage(sock, server, per_source, until, c)
            }));
            continue;
        }
        let w = Worker {
            sock,
            args: args.clone(),
            op,
            ack,
            c,
            out: vec![0u8; wire::MAX_DATAGRAM],
        };
        let n = args.sessions;
        threads.push(std::thread::spawn(move || w.run(n, until)));
    }
    for t in threads {
        let _ = t.join();
    }
    let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
    println!(
        "attack: requests {} retries {} accepted {} busy {} refused {} aborted {} completed {} sent {} received {}",
        g(&c.requests),
        g(&c.retries),
        g(&c.accepted),
        g(&c.busy),
        g(&c.refused_other),
        g(&c.aborted),
        g(&c.completed),
        g(&c.sent),
        g(&c.received)
    );
}
