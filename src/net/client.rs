//! The client driver: a [`Client`] runs one [`ClientSession`] per command over a
//! connected UDP socket, applies scp's path rules before anything is sent, and guards
//! against a server that floods, stalls or oversends.
//!
//! Nothing here prints: what a person sees (progress bar, trace lines, summaries, exit
//! codes) is the binary's business, fed through an [`Observer`] and [`ClientError`].

use std::fmt;

use std::io::{self, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::RngExt;
use thiserror::Error;

use super::tap::Tap;
use super::{DEFAULT_PORT, Waiter, addr, human_bytes};
use crate::engine::{ClientSession, Config, Event, Job, RtoConfig, Sink, Status, TransferError};
use crate::storage::{AtomicFile, FileSource};
use crate::text;
use crate::wire::{self, ErrorCode, Op};

/// Settings of the client.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub block_size: u32,
    /// The ceiling of the retransmission timeout.
    pub timeout: Duration,
    /// Give up after this long without progress (PROTOCOL.md §5.3).
    pub idle: Duration,
    /// Record protocol events for [`Observer::event`].
    pub trace: bool,
    /// The longest a transfer may go without progress (a new block written or
    /// acknowledged) before it is abandoned, whatever else arrives: duplicates do not
    /// count. `None`: `idle` plus one `timeout`, so that the engine's own give-up
    /// (which reports "no answer") comes first for a server that is merely silent.
    pub stall: Option<Duration>,
    /// Set (by a Ctrl-C handler) to abandon the running transfer.
    pub interrupt: Option<Arc<AtomicBool>>,
    /// The most of a listing kept in memory ([`LISTING_LIMIT`] by default): a server
    /// that sends more (announced or not) fails the list with
    /// [`ClientError::ListingTooLarge`].
    pub max_listing: usize,
    /// With a `tftp://` server: transfer in netascii mode (text, line ends converted,
    /// TFTP.md §2.5) instead of octet.
    pub tftp_netascii: bool,
    /// The send window to ask for (PROTOCOL.md §4.5): 1 is stop-and-wait, which every
    /// server speaks; the server grants at most this, and may grant less.
    pub window: u16,
}

/// The default [`ClientOptions::max_listing`]: 64 MiB, some 700 000 entries.
pub const LISTING_LIMIT: usize = 64 << 20;

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            block_size: wire::DEFAULT_BLOCK_SIZE,
            timeout: Duration::from_secs(1),
            idle: Duration::from_secs(30),
            trace: false,
            stall: None,
            interrupt: None,
            max_listing: LISTING_LIMIT,
            tftp_netascii: false,
            window: 1,
        }
    }
}

impl ClientOptions {
    /// The no-progress deadline in force (see [`ClientOptions::stall`]).
    pub fn stall_limit(&self) -> Duration {
        self.stall
            .unwrap_or_else(|| self.idle.saturating_add(self.timeout))
    }
}

/// Why a command failed. Every message names what it is about (a path, an address) and,
/// where there is one, the fix. Text that came from the server is escaped.
#[derive(Debug, Error)]
pub enum ClientError {
    /// SERVER is not `host[:port]` (a usage error).
    #[error("server '{server}': {reason}")]
    BadServer { server: String, reason: String },
    /// The host name did not resolve.
    #[error("cannot resolve '{host}': {message}")]
    Resolve { host: String, message: String },
    /// A path argument that cannot work as given (a usage error), e.g. a REMOTE
    /// ending in `/` for get.
    #[error("{0}")]
    BadPath(String),
    /// A local file or directory problem, found before anything was sent.
    #[error("{0}")]
    Local(String),
    /// The socket could not be opened or used.
    #[error("{addr}: {message}")]
    Socket { addr: SocketAddr, message: String },
    /// The kernel reported "port unreachable": no process has the port open.
    #[error(
        "nothing is listening at {at} — is udpftd running there? (default port {DEFAULT_PORT})"
    )]
    NothingListening { at: String },
    /// A REMOTE ending in `/` that is not a directory on the server.
    #[error("no directory '{}' on the server", text::escape(.dir))]
    NoRemoteDir { dir: String },
    /// The server answered with an ERROR.
    #[error("{}", server_message(*.code, .message))]
    Server { code: ErrorCode, message: String },
    /// The server kept sending, but nothing new, for the no-progress deadline.
    #[error(
        "{peer} made no progress for {:.1} s ({duplicates} duplicates received meanwhile); transfer abandoned",
        .stalled.as_secs_f64()
    )]
    NoProgress {
        peer: SocketAddr,
        stalled: Duration,
        duplicates: u64,
    },
    /// The server sent more data than the size it announced.
    #[error("{peer} sent more than the {announced} bytes it announced; transfer abandoned")]
    Oversize { peer: SocketAddr, announced: u64 },
    /// A listing longer than [`ClientOptions::max_listing`].
    #[error(
        "{peer} sent a listing of more than {limit} bytes, more than the client keeps in \
         memory; listing abandoned"
    )]
    ListingTooLarge { peer: SocketAddr, limit: usize },
    /// Ctrl-C.
    #[error("interrupted")]
    Interrupted,
    /// A command TFTP does not have, refused before anything is sent (a usage error).
    #[error(
        "TFTP has no {0}: a TFTP server only reads and writes files (list, delete and exit \
         need a udpftd server: write SERVER without tftp://)"
    )]
    NotInTftp(&'static str),
    /// A TFTP server's ERROR: its code and message as it sent them.
    #[error(
        "TFTP error {code} ({}) from the server: {}",
        crate::wire::tftp::ErrorCode(*.code).name(),
        text::sanitize(.message)
    )]
    Tftp { code: u16, message: String },
    /// The transfer failed (no answer, silence, integrity, local I/O, protocol).
    #[error("{0}")]
    Transfer(TransferError),
}

fn server_message(code: ErrorCode, message: &str) -> String {
    let m = text::sanitize(message);
    match code {
        ErrorCode::NotFound
        | ErrorCode::AccessDenied
        | ErrorCode::AlreadyExists
        | ErrorCode::NotAllowed
        | ErrorCode::BadRequest => m.into_owned(),
        _ => format!("server: {m}"),
    }
}

impl From<TransferError> for ClientError {
    fn from(e: TransferError) -> Self {
        match e {
            TransferError::Remote { code, message } => ClientError::Server { code, message },
            TransferError::Aborted(_) => ClientError::Interrupted,
            e => ClientError::Transfer(e),
        }
    }
}

/// What a finished command did, for the summary line.
#[derive(Debug, Clone)]
pub struct Report {
    pub op: Op,
    /// `'remote' -> 'local'`, or the path, escaped.
    pub what: String,
    /// The server address that answered.
    pub peer: SocketAddr,
    pub bytes: u64,
    pub elapsed: Duration,
    /// Packets this side resent after a timeout.
    pub resent: u64,
    /// Datagrams received again (data or DONE, or an ack already had): what the peer
    /// resent, or the link duplicated.
    pub duplicates: u64,
    /// Datagrams that failed their CRC32 and were dropped.
    pub bad_checksum: u64,
    pub srtt: Option<Duration>,
    /// The block size and send window the server granted (0 and 1 for delete, exit).
    pub block_size: u32,
    pub window: u16,
}

/// The window a stop-and-wait summary suggests.
pub const SUGGESTED_WINDOW: u16 = 16;

impl Report {
    /// How much faster a window would likely have made this transfer, if it ran
    /// stop-and-wait and its round trip left the link idle most of the time: each block
    /// took `elapsed / blocks`, while a 1 Gbit/s link carries one in
    /// (block + 54 bytes of headers) × 8 ns. A window of [`SUGGESTED_WINDOW`] carries up
    /// to that many per round trip, so the likely speed-up is the smaller of the two
    /// ratios, rounded down. `None` below 2×, for windowed transfers, and for transfers
    /// of fewer than 32 blocks (too short to say).
    pub fn window_speedup(&self) -> Option<u32> {
        if self.window != 1 || self.block_size == 0 || self.srtt.is_none() {
            return None;
        }
        let blocks = self.bytes / self.block_size as u64;
        if blocks < 32 {
            return None;
        }
        let per_block = self.elapsed.as_secs_f64() / blocks as f64;
        // UDP + IPv4 + Ethernet headers, preamble and gap: 8 + 20 + 26 bytes.
        let on_the_wire = (self.block_size as f64 + wire::OVERHEAD as f64 + 54.0) * 8e-9;
        let factor = (per_block / on_the_wire)
            .min(SUGGESTED_WINDOW as f64)
            .floor() as u32;
        (factor >= 2).then_some(factor)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        let rtt = match self.srtt {
            Some(r) => format!("{:.3} ms", r.as_secs_f64() * 1e3),
            None => "not measured".into(),
        };
        match self.op {
            Op::Delete => write!(f, "deleted {} ({:.1} ms)", self.what, secs * 1e3),
            Op::Exit => write!(f, "the server is exiting ({:.1} ms)", secs * 1e3),
            op => {
                let rate = if secs > 0.0 {
                    human_bytes((self.bytes as f64 / secs) as u64)
                } else {
                    "-".into()
                };
                write!(
                    f,
                    "{} {}: {} ({} B) in {secs:.3} s ({rate}/s), {} resends, \
                     {} duplicates received, {} dropped for a bad checksum, rtt {rtt}",
                    op.name(),
                    self.what,
                    human_bytes(self.bytes),
                    self.bytes,
                    self.resent,
                    self.duplicates,
                    self.bad_checksum,
                )?;
                if let Some(x) = self.window_speedup() {
                    write!(
                        f,
                        "; stop-and-wait left the link idle most of each round trip: \
                         --window {SUGGESTED_WINDOW} would likely be about {x}× faster \
                         (on a 1 Gbit/s path)"
                    )?;
                }
                Ok(())
            }
        }
    }
}

/// What a running command reports as it goes (a progress bar, a trace). Every method
/// has a default that ignores it.
pub trait Observer {
    /// A transfer of `op` started; `total` is the size, once known.
    fn start(&mut self, _op: Op, _total: Option<u64>) {}
    /// `bytes` delivered so far (written, or acknowledged by the server).
    fn progress(&mut self, _bytes: u64, _total: Option<u64>) {}
    /// A protocol event (only with [`ClientOptions::trace`]), `elapsed` since the
    /// session started. Its text may hold what the server sent: escape it to print it.
    fn event(&mut self, _elapsed: Duration, _event: &Event) {}
    /// The transfer ended, well or not.
    fn finish(&mut self) {}
}

/// An observer that ignores everything.
struct Silent;
impl Observer for Silent {}

/// How one attempt at one address ended, when it ended before the server answered.
enum Unanswered {
    Refused,
    NoAnswer(TransferError),
}

/// A client of one server, named as `host[:port]`. It resolves the name once; the
/// first command tries every address in turn (as the resolver orders them, IPv6 and
/// IPv4) until one answers, and later commands use that one.
pub struct Client {
    /// The server speaks TFTP (SERVER was written `tftp://…`).
    tftp: bool,
    label: String,
    addrs: Vec<SocketAddr>,
    chosen: Option<SocketAddr>,
    opts: ClientOptions,
    observer: Box<dyn Observer + Send>,
    tap: Option<Tap>,
}

impl Client {
    /// Parses and resolves `server` (`host[:port]`, IPv6 in brackets, default port
    /// 6969). Sends nothing.
    pub fn new(server: &str, opts: ClientOptions) -> Result<Client, ClientError> {
        let bad = |reason| ClientError::BadServer {
            server: server.to_string(),
            reason,
        };
        let (tftp, (host, port)) = match addr::parse_tftp_url(server) {
            Some(url) => {
                let u = url.map_err(bad)?;
                (true, (u.host, u.port))
            }
            None => (false, addr::parse_server(server).map_err(bad)?),
        };
        let addrs: Vec<SocketAddr> = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => {
                let mut v: Vec<SocketAddr> = Vec::new();
                let found =
                    (host.as_str(), port)
                        .to_socket_addrs()
                        .map_err(|e| ClientError::Resolve {
                            host: host.clone(),
                            message: e.to_string(),
                        })?;
                for a in found {
                    if !v.contains(&a) {
                        v.push(a);
                    }
                }
                v
            }
        };
        if addrs.is_empty() {
            return Err(ClientError::Resolve {
                host,
                message: "no address".into(),
            });
        }
        Ok(Client {
            tftp,
            label: server.trim().to_string(),
            addrs,
            chosen: None,
            opts,
            observer: Box::new(Silent),
            tap: None,
        })
    }

    /// A client of the server at `addr`.
    pub fn to(addr: SocketAddr, opts: ClientOptions) -> Client {
        Client::with_addresses(&addr.to_string(), vec![addr], opts)
    }

    /// A client of a server known by `label` at these addresses, tried in this order
    /// (what [`Client::new`] does with a name's addresses). `addrs` must not be empty.
    pub fn with_addresses(label: &str, addrs: Vec<SocketAddr>, opts: ClientOptions) -> Client {
        assert!(!addrs.is_empty(), "a client needs an address");
        Client {
            tftp: false,
            label: label.to_string(),
            addrs,
            chosen: None,
            opts,
            observer: Box::new(Silent),
            tap: None,
        }
    }

    /// Where progress and trace events go.
    pub fn set_observer(&mut self, observer: Box<dyn Observer + Send>) {
        self.observer = observer;
    }

    /// Records every datagram sent and received from now on (`udpft --pcap`).
    pub fn set_capture(&mut self, tap: Tap) {
        self.tap = Some(tap);
    }

    /// The capture, taken back (to [`Tap::finish`] it).
    pub fn take_capture(&mut self) -> Option<Tap> {
        self.tap.take()
    }

    /// Whether the server speaks TFTP (SERVER was written `tftp://HOST[:PORT]`).
    pub fn is_tftp(&self) -> bool {
        self.tftp
    }

    /// Makes this client speak TFTP to its addresses (as a `tftp://` SERVER does).
    pub fn speak_tftp(&mut self) {
        self.tftp = true;
    }

    /// The addresses the name resolved to.
    pub fn addresses(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The address that answered, once one has.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.chosen
    }

    pub fn options(&self) -> &ClientOptions {
        &self.opts
    }

    /// Checks that a udpftd answers, with a listing of its root (the cheapest request
    /// every server grants), and returns its address.
    pub fn check(&mut self) -> Result<SocketAddr, ClientError> {
        self.list(None)?;
        Ok(self.chosen.expect("an answered command chose an address"))
    }

    /// Downloads `remote` to the place [`local_target`] gives. Everything local is
    /// checked, and the temporary file created, before the first datagram; the file
    /// appears only when complete and verified, and a failure leaves no file and an
    /// existing file untouched.
    pub fn get(&mut self, remote: &str, local: Option<&Path>) -> Result<Report, ClientError> {
        let target = local_target(remote, local)?;
        let local_shown = shown(&target);
        if target.is_dir() {
            return Err(ClientError::Local(format!(
                "'{local_shown}' is a directory; give a file name or put a '/' after it"
            )));
        }
        let file = AtomicFile::create(&target, true)
            .map_err(|e| ClientError::Local(format!("cannot write '{local_shown}': {e}")))?;
        let what = format!("'{}' -> '{local_shown}'", text::escape(remote));
        if self.tftp {
            return self.run_tftp(remote, Job::Get(Box::new(file)), what);
        }
        self.run(remote, Job::Get(Box::new(file)), what)
    }

    /// Uploads `local` as `remote`, with scp's rules: no REMOTE means LOCAL's file name
    /// in the root; a REMOTE ending in `/` must be a directory on the server, and the
    /// file goes inside it; a REMOTE that is a directory on the server gets the file
    /// inside it. Whether REMOTE is a directory is asked with a listing of it (a list
    /// succeeds exactly for a directory) before the upload starts.
    pub fn put(&mut self, local: &Path, remote: Option<&str>) -> Result<Report, ClientError> {
        let shown = shown(local);
        if local.is_dir() {
            return Err(ClientError::Local(format!(
                "'{shown}' is a directory; put sends one file"
            )));
        }
        // A regular file only, read exactly as announced: one that changes while it is
        // sent fails the transfer rather than arriving torn.
        let src = FileSource::open(local).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => {
                ClientError::Local(format!("local file '{shown}' does not exist"))
            }
            io::ErrorKind::InvalidInput => ClientError::Local(e.to_string()),
            _ => ClientError::Local(format!("cannot read local file '{shown}': {e}")),
        })?;
        let base = || {
            local
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .ok_or_else(|| ClientError::Local(format!("'{shown}' has no file name")))
        };
        let remote = match remote {
            None => base()?,
            // TFTP cannot ask whether a name is a directory: a trailing '/' says so.
            Some(r) if self.tftp && r.ends_with('/') => format!("{r}{}", base()?),
            Some(r) if self.tftp => r.to_string(),
            Some(r) if r.ends_with('/') => {
                if !self.is_remote_dir(r)? {
                    return Err(ClientError::NoRemoteDir { dir: r.to_string() });
                }
                format!("{r}{}", base()?)
            }
            Some(r) => {
                if self.is_remote_dir(r)? {
                    format!("{r}/{}", base()?)
                } else {
                    r.to_string()
                }
            }
        };
        let what = format!("'{shown}' -> '{}'", text::escape(&remote));
        let size = src.size();
        if self.tftp {
            return self.run_tftp(&remote, Job::Put(Box::new(src), size), what);
        }
        self.run(&remote, Job::Put(Box::new(src), size), what)
    }

    /// Whether `dir` is a directory on the server: a listing of it succeeds. A refusal
    /// (not found, not a directory, denied) means no; no answer is an error.
    fn is_remote_dir(&mut self, dir: &str) -> Result<bool, ClientError> {
        let trimmed = dir.trim_end_matches('/');
        let name = if trimmed.is_empty() { "/" } else { trimmed };
        match self.list(Some(name)) {
            Ok(_) => Ok(true),
            Err(ClientError::Server { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Fetches the listing of `dir` (default: the root) as the server sent it (names
    /// escaped by the server; other text unchecked: sanitize it before printing).
    pub fn list(&mut self, dir: Option<&str>) -> Result<(String, Report), ClientError> {
        if self.tftp {
            return Err(ClientError::NotInTftp("list"));
        }
        let dir = dir.unwrap_or(".");
        let sink = Shared::new(self.opts.max_listing);
        let report = self.run(
            dir,
            Job::List(Box::new(sink.clone())),
            format!("'{}'", text::escape(dir)),
        );
        let mut kept = sink.0.lock().unwrap_or_else(|p| p.into_inner());
        if kept.overflowed {
            return Err(ClientError::ListingTooLarge {
                peer: report.map_or_else(|_| self.chosen_or_first(), |r| r.peer),
                limit: self.opts.max_listing,
            });
        }
        let report = report.map_err(|e| match e {
            // The server's wording ("no file") fits a get; a list asks for a directory.
            ClientError::Server {
                code: ErrorCode::NotFound,
                ..
            } => ClientError::Server {
                code: ErrorCode::NotFound,
                message: format!("server has no directory '{}'", text::escape(dir)),
            },
            e => e,
        })?;
        let bytes = std::mem::take(&mut kept.bytes);
        Ok((sorted_listing(&String::from_utf8_lossy(&bytes)), report))
    }

    /// The address that answered, or else the first one (for a message).
    fn chosen_or_first(&self) -> SocketAddr {
        self.chosen.unwrap_or(self.addrs[0])
    }

    /// Deletes `remote` on the server.
    pub fn delete(&mut self, remote: &str) -> Result<Report, ClientError> {
        if self.tftp {
            return Err(ClientError::NotInTftp("delete"));
        }
        self.run(remote, Job::Delete, format!("'{}'", text::escape(remote)))
    }

    /// Asks the server to exit.
    pub fn exit(&mut self) -> Result<Report, ClientError> {
        if self.tftp {
            return Err(ClientError::NotInTftp("exit"));
        }
        self.run("", Job::Exit, String::new())
    }

    /// As [`Client::run`], in TFTP (TFTP.md §4): each address in turn until one answers.
    fn run_tftp(&mut self, name: &str, job: Job, what: String) -> Result<Report, ClientError> {
        let candidates = match self.chosen {
            Some(a) => vec![a],
            None => self.addrs.clone(),
        };
        let mut job = job;
        let mut no_answer = None;
        for addr in candidates {
            let observer = &mut *self.observer;
            match super::tftp_client::attempt(
                addr,
                name,
                job,
                &self.opts,
                observer,
                self.tap.as_mut(),
                &what,
            ) {
                super::tftp_client::Attempt::Answered(r) => {
                    self.chosen = Some(addr);
                    return r;
                }
                super::tftp_client::Attempt::Unanswered(e, j) => {
                    no_answer = Some(e);
                    job = j;
                }
            }
        }
        drop(job);
        Err(ClientError::Transfer(
            no_answer.expect("at least one address"),
        ))
    }

    /// Runs `job` against the chosen address, or tries each address in turn until one
    /// answers (a refusal is an answer; "port unreachable" and no answer are not).
    fn run(&mut self, name: &str, job: Job, what: String) -> Result<Report, ClientError> {
        let candidates = match self.chosen {
            Some(a) => vec![a],
            None => self.addrs.clone(),
        };
        let mut job = job;
        let mut refused = Vec::new();
        let mut no_answer = None;
        for addr in &candidates {
            match self.attempt(*addr, name, job, &what) {
                Ok(r) => {
                    self.chosen = Some(*addr);
                    return r;
                }
                Err((Unanswered::Refused, j)) => {
                    refused.push(*addr);
                    job = j;
                }
                Err((Unanswered::NoAnswer(e), j)) => {
                    no_answer = Some(e);
                    job = j;
                }
            }
        }
        drop(job);
        if let Some(e) = no_answer {
            return Err(ClientError::Transfer(e));
        }
        let at = match refused.as_slice() {
            [one] => one.to_string(),
            many => format!(
                "{} ({})",
                self.label,
                many.iter()
                    .map(SocketAddr::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        Err(ClientError::NothingListening { at })
    }

    /// One session at `server`. `Err` (with the job back) if the server never answered.
    #[allow(clippy::type_complexity)]
    fn attempt(
        &mut self,
        server: SocketAddr,
        name: &str,
        job: Job,
        what: &str,
    ) -> Result<Result<Report, ClientError>, (Unanswered, Job)> {
        let opts = &self.opts;
        let op = job.op();
        let mut total = match &job {
            Job::Put(_, n) => Some(*n),
            _ => None,
        };
        let bind: SocketAddr = if server.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let sock = match UdpSocket::bind(bind).and_then(|s| s.connect(server).map(|_| s)) {
            Ok(s) => s,
            // An address family this host lacks (no IPv6): as good as no answer.
            Err(e) if self.addrs.len() > 1 && self.chosen.is_none() => {
                return Err((
                    Unanswered::NoAnswer(TransferError::Io {
                        context: "opening a socket",
                        kind: e.kind(),
                        message: format!("{server}: {e}"),
                    }),
                    job,
                ));
            }
            Err(e) => {
                return Ok(Err(ClientError::Socket {
                    addr: server,
                    message: format!("cannot open a socket: {e}"),
                }));
            }
        };
        if let Err(e) = sock.set_nonblocking(true) {
            return Ok(Err(ClientError::Socket {
                addr: server,
                message: format!("cannot open a socket: {e}"),
            }));
        }
        let nonce = loop {
            let n = rand::rng().random::<u64>();
            if n != 0 {
                break n;
            }
        };
        let cfg = Config {
            block_size: opts
                .block_size
                .clamp(wire::MIN_BLOCK_SIZE, wire::MAX_BLOCK_SIZE),
            rto: RtoConfig {
                max: opts.timeout,
                ..RtoConfig::default()
            },
            give_up: opts.idle,
            linger: Duration::ZERO,
            trace: opts.trace,
            window: opts.window,
            ..Config::default()
        };
        let mut s = match ClientSession::new(server, nonce, name, job, cfg) {
            Ok(s) => s,
            Err(e) => return Ok(Err(ClientError::BadPath(e.to_string()))),
        };
        let stall = opts.stall_limit();
        let observer = &mut self.observer;
        let mut tap = self
            .tap
            .as_mut()
            .map(|t| (t, sock.local_addr().unwrap_or(bind)));
        let mut buf = vec![0u8; wire::MAX_DATAGRAM];
        let mut waiter = Waiter::from_env();
        let start = Instant::now();
        let mut done_at = None;
        let mut accepted = false;
        let mut last_bytes = 0;
        let mut last_progress = start;
        let mut refused = false;
        let poll = Duration::from_millis(100);
        observer.start(op, total);
        let outcome: Result<(), ClientError> = 'run: loop {
            let now = Instant::now();
            while let Some(b) = s.poll_transmit(now) {
                match sock.send(b) {
                    Ok(_) if let Some((t, local)) = &mut tap => t.sent(now, *local, server, b),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => refused = true,
                    // A full send buffer on the non-blocking socket: as good as lost.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    // While lingering the transfer is already a success.
                    Err(_) if done_at.is_some() => {}
                    Err(e) => {
                        break 'run Err(ClientError::Socket {
                            addr: server,
                            message: format!("sending: {e}"),
                        });
                    }
                }
            }
            // DONE verified: store the file now. The WAIT that just went out keeps the
            // server from resending DONE while the sync and rename run; the ACK goes
            // out at the top of the next round.
            if let Some(mut sink) = s.poll_commit() {
                let stored = sink.flush().and_then(|_| sink.commit());
                drop(sink);
                s.commit_done(Instant::now(), stored);
                continue 'run;
            }
            if opts.trace {
                while let Some(ev) = s.poll_event() {
                    observer.event(now.saturating_duration_since(start), &ev);
                }
            }
            if !accepted && let Some((_, a)) = s.accepted() {
                accepted = true;
                last_progress = now;
                if total.is_none() && a.size != wire::UNKNOWN_SIZE {
                    total = Some(a.size);
                }
            }
            let bytes = s.stats().bytes;
            if bytes != last_bytes {
                last_bytes = bytes;
                last_progress = now;
                observer.progress(bytes, total);
            }
            match s.status() {
                Status::Running => {}
                Status::Complete => {
                    done_at.get_or_insert(now);
                }
                Status::Closed | Status::Failed(_) => break Ok(()),
            }
            let complete = done_at.is_some();
            if refused && !complete {
                // Port unreachable: no process has the port (any more). What the server
                // said before it went (an ERROR: "shutting down") may still wait unread
                // behind the error; it is the better explanation.
                drain(&sock, &mut buf, &mut s, &mut tap, server);
                if !matches!(s.status(), Status::Running) {
                    refused = false;
                    continue;
                }
                s.abort("nothing is listening");
                break Err(ClientError::NothingListening {
                    at: server.to_string(),
                });
            }
            if opts
                .interrupt
                .as_ref()
                .is_some_and(|f| f.load(Ordering::Relaxed))
            {
                // Already verified and stored: Ctrl-C only cuts the linger short.
                if complete {
                    break Ok(());
                }
                s.abort("interrupted by the user");
                break Err(ClientError::Interrupted);
            }
            if !complete && now.saturating_duration_since(last_progress) >= stall {
                let st = s.stats();
                s.abort("no progress");
                break Err(ClientError::NoProgress {
                    peer: server,
                    stalled: now.saturating_duration_since(last_progress),
                    duplicates: st.duplicates + st.stale,
                });
            }
            let deadline = s
                .poll_timeout()
                .map_or(now + poll, |t| t.min(now + poll))
                .min(last_progress + stall);
            match waiter.recv_until(&sock, &mut buf, deadline) {
                Ok(Some((n, _))) => {
                    let now = Instant::now();
                    if let Some((t, local)) = &mut tap {
                        t.received(now, server, *local, &buf[..n]);
                    }
                    s.handle_datagram(now, &buf[..n]);
                    // Checked before the acknowledgement goes out: a server that sends
                    // past the size it announced is cut off at the first block over.
                    if let (Some((_, a)), Status::Running) = (s.accepted(), s.status())
                        && matches!(op, Op::Get | Op::List)
                        && a.size != wire::UNKNOWN_SIZE
                        && s.stats().bytes > a.size
                    {
                        s.abort("more data than announced");
                        break Err(ClientError::Oversize {
                            peer: server,
                            announced: a.size,
                        });
                    }
                }
                Ok(None) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => refused = true,
                // While lingering the transfer is already a success.
                Err(_) if complete => break Ok(()),
                Err(e) => {
                    break Err(ClientError::Socket {
                        addr: server,
                        message: format!("receiving: {e}"),
                    });
                }
            }
            // Timers are checked after every wait, not only a silent one: a stream of
            // datagrams (junk, or a broken server) must not hold back resends or the
            // retry limit.
            let now = Instant::now();
            if s.poll_timeout().is_some_and(|t| t <= now) {
                s.handle_timeout(now);
            }
        };
        // An abort queues an ERROR for the server: send it (best effort).
        let now = Instant::now();
        while let Some(b) = s.poll_transmit(now) {
            if sock.send(b).is_ok()
                && let Some((t, local)) = &mut tap
            {
                t.sent(now, *local, server, b);
            }
        }
        if let Some((t, _)) = tap {
            t.flush();
        }
        if opts.trace {
            while let Some(ev) = s.poll_event() {
                observer.event(now.saturating_duration_since(start), &ev);
            }
        }
        observer.finish();
        let answered = accepted || s.accepted().is_some();
        if let Err(e) = outcome {
            return match e {
                ClientError::NothingListening { .. } if !answered => {
                    let job = s.into_unstarted_job();
                    match job {
                        Some(j) => Err((Unanswered::Refused, j)),
                        None => Ok(Err(e)),
                    }
                }
                e => Ok(Err(e)),
            };
        }
        let elapsed = done_at.unwrap_or_else(Instant::now) - start;
        let stats = s.stats();
        let srtt = s.rto().srtt();
        match s.status().clone() {
            Status::Failed(e @ TransferError::NoAnswer { .. }) if !answered => {
                match s.into_unstarted_job() {
                    Some(j) => Err((Unanswered::NoAnswer(e), j)),
                    None => Ok(Err(e.into())),
                }
            }
            Status::Failed(e) => Ok(Err(e.into())),
            _ => Ok(Ok(Report {
                op,
                what: what.to_string(),
                peer: server,
                bytes: stats.bytes,
                elapsed,
                resent: stats.resent,
                duplicates: stats.duplicates + stats.stale,
                bad_checksum: stats.bad_checksum,
                srtt,
                block_size: s.accepted().map_or(0, |(_, a)| a.block_size),
                window: s.accepted().map_or(1, |(_, a)| a.window),
            })),
        }
    }
}

/// Feeds every datagram already queued on `sock` to the session, without waiting.
fn drain(
    sock: &UdpSocket,
    buf: &mut [u8],
    s: &mut ClientSession,
    tap: &mut Option<(&mut Tap, SocketAddr)>,
    server: SocketAddr,
) {
    // Bounded: a flood must not keep the client here.
    for _ in 0..1024 {
        match sock.recv(buf) {
            Ok(n) => {
                let now = Instant::now();
                if let Some((t, local)) = tap {
                    t.received(now, server, *local, &buf[..n]);
                }
                s.handle_datagram(now, &buf[..n])
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
            Err(_) => return,
        }
    }
}

/// A sink into shared memory (for listings), holding at most `limit` bytes: a write
/// past it fails (which ends the transfer) and marks it overflowed.
#[derive(Clone)]
struct Shared(Arc<Mutex<Kept>>);

struct Kept {
    bytes: Vec<u8>,
    limit: usize,
    overflowed: bool,
}

impl Shared {
    fn new(limit: usize) -> Shared {
        Shared(Arc::new(Mutex::new(Kept {
            bytes: Vec::new(),
            limit,
            overflowed: false,
        })))
    }
}

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut k = self.0.lock().map_err(|_| io::Error::other("poisoned"))?;
        if buf.len() > k.limit - k.bytes.len() {
            k.overflowed = true;
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                "listing longer than the client keeps",
            ));
        }
        k.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Sink for Shared {
    fn commit(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The last component of a remote path (`dir/a.txt` → `a.txt`).
fn remote_file_name(remote: &str) -> Option<&str> {
    remote
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty() && *n != "." && *n != "..")
}

/// A local path as messages show it: escaped, as it may come from the server (mget).
fn shown(p: &Path) -> String {
    text::escape(&p.to_string_lossy()).into_owned()
}

/// The longest file name most local filesystems take (`NAME_MAX`), in bytes.
pub const NAME_MAX: usize = 255;

/// Whether `name` can be a file name here, made from a name the server gave (get
/// without LOCAL, mget) or shown on a command line (completion): one path component,
/// not `.` or `..`, without NUL, at most [`NAME_MAX`] bytes, and without characters
/// that [`text::escape`] escapes (control characters, line separators, bidirectional
/// and zero-width marks), which would make a name that prints as something else or
/// drives the terminal. A backslash is fine. `Err` says why not.
pub fn check_local_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("an empty name".into());
    }
    if name == "." || name == ".." {
        return Err(format!("'{name}' names a directory"));
    }
    if name.contains('\0') {
        return Err("a file name cannot contain NUL".into());
    }
    if name.contains('/') {
        return Err("a file name cannot contain '/'".into());
    }
    if name.len() > NAME_MAX {
        return Err(format!(
            "{} bytes, longer than the {NAME_MAX} a file name may have",
            name.len()
        ));
    }
    let mut b = [0u8; 4];
    if name
        .chars()
        .any(|c| c != '\\' && text::escape(c.encode_utf8(&mut b)).len() != c.len_utf8())
    {
        return Err("it holds control or invisible characters".into());
    }
    Ok(())
}

fn ends_with_slash(p: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    p.as_os_str().as_bytes().ends_with(b"/")
}

/// Where a get of `remote` writes, given the optional LOCAL argument, by scp's rules:
/// no LOCAL is REMOTE's file name here; a LOCAL ending in `/` must be an existing
/// directory and the file goes inside; an existing directory gets the file inside;
/// anything else is a file name whose directory must exist. A REMOTE ending in `/`
/// names a directory, and get fetches files only. Every error names the path.
pub fn local_target(remote: &str, local: Option<&Path>) -> Result<PathBuf, ClientError> {
    if remote.ends_with('/') {
        return Err(ClientError::BadPath(format!(
            "'{}' ends in '/', which names a directory; get fetches one file",
            text::escape(remote)
        )));
    }
    let base = || {
        let name = remote_file_name(remote).ok_or_else(|| {
            ClientError::BadPath(format!(
                "'{}' does not end in a file name; give a LOCAL name",
                text::escape(remote)
            ))
        })?;
        check_local_name(name).map_err(|why| {
            ClientError::BadPath(format!(
                "'{}' cannot be a local file name ({why}); give a LOCAL name",
                text::escape(name)
            ))
        })?;
        Ok::<_, ClientError>(name)
    };
    let Some(l) = local else {
        return destination(PathBuf::from(base()?));
    };
    let shown = shown(l);
    if ends_with_slash(l) {
        return match std::fs::metadata(l) {
            Ok(md) if md.is_dir() => destination(l.join(base()?)),
            Ok(_) => Err(ClientError::Local(format!("'{shown}' is not a directory"))),
            Err(e) if e.kind() == io::ErrorKind::NotADirectory => {
                Err(ClientError::Local(format!("'{shown}' is not a directory")))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(ClientError::Local(format!(
                "no local directory '{shown}' (a LOCAL ending in '/' must be an existing directory)"
            ))),
            Err(e) => Err(ClientError::Local(format!("'{shown}': {e}"))),
        };
    }
    if l.is_dir() {
        return destination(l.join(base()?));
    }
    let parent = match l.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    match std::fs::metadata(parent) {
        Ok(md) if md.is_dir() => destination(l.to_path_buf()),
        Ok(_) => Err(ClientError::Local(format!(
            "cannot write '{shown}': '{}' is not a directory",
            self::shown(parent)
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(ClientError::Local(format!(
            "cannot write '{shown}': no local directory '{}'",
            self::shown(parent)
        ))),
        Err(e) => Err(ClientError::Local(format!(
            "cannot write '{shown}': '{}': {e}",
            self::shown(parent)
        ))),
    }
}

/// What kind of file `ft` is, in words, for a message.
fn kind_of(ft: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_fifo() {
        "a FIFO (named pipe)"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
}

/// The file a download to `target` creates or replaces, checked before anything is
/// sent: `target` if nothing is there or a regular file is; the file a symlink leads
/// to (resolved fully, so the download replaces it in its own directory) if that is
/// a regular file. Anything else is refused, naming what it is: a device, FIFO or
/// socket would be replaced by a regular file (as root, `/dev/null` itself), and a
/// dangling symlink would create a file where the person never looked (the classic
/// symlink attack on a shared directory).
fn destination(target: PathBuf) -> Result<PathBuf, ClientError> {
    let shown = text::escape(&target.to_string_lossy()).into_owned();
    let link = match std::fs::symlink_metadata(&target) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(target),
        Err(e) => return Err(ClientError::Local(format!("cannot write '{shown}': {e}"))),
        Ok(md) => md.file_type().is_symlink(),
    };
    let through = if link { " (through a symlink)" } else { "" };
    match std::fs::metadata(&target) {
        // A directory is refused by the caller, which knows what was meant.
        Ok(md) if md.is_file() || md.is_dir() => {}
        Ok(md) => {
            return Err(ClientError::Local(format!(
                "'{shown}' is {}{through}; get stores only in regular files (give a file name)",
                kind_of(md.file_type())
            )));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let to = std::fs::read_link(&target)
                .map(|t| text::escape(&t.to_string_lossy()).into_owned())
                .unwrap_or_default();
            return Err(ClientError::Local(format!(
                "'{shown}' is a symlink to '{to}', which does not exist; get follows a \
                 symlink only to an existing file (name the file itself to create it)"
            )));
        }
        Err(e) => return Err(ClientError::Local(format!("cannot write '{shown}': {e}"))),
    }
    if !link {
        return Ok(target);
    }
    std::fs::canonicalize(&target).map_err(|e| {
        ClientError::Local(format!(
            "cannot write '{shown}': resolving the symlink: {e}"
        ))
    })
}

/// One entry of a listing (PROTOCOL.md §3.9), its name unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    /// `None` for a directory.
    pub size: Option<u64>,
}

impl Entry {
    pub fn is_dir(&self) -> bool {
        self.size.is_none()
    }
}

/// Parses a listing: `<size>\t<name>` per file, `-\t<name>/` per directory, names
/// escaped as by [`text::escape`]. Lines that do not fit are skipped.
pub fn parse_listing(listing: &str) -> Vec<Entry> {
    listing
        .lines()
        .filter_map(|line| {
            let (size, name) = line.split_once('\t')?;
            let (size, name) = match size {
                "-" => (None, name.strip_suffix('/')?),
                n => (Some(n.parse().ok()?), name),
            };
            Some(Entry {
                name: unescape(name)?,
                size,
            })
        })
        .collect()
}

/// A listing's lines sorted by name (the part after the tab): a server streams them in
/// the order its directory yields them (PROTOCOL.md §3.9).
pub fn sorted_listing(listing: &str) -> String {
    let mut lines: Vec<&str> = listing.lines().collect();
    lines.sort_by_key(|l| l.split_once('\t').map_or(*l, |(_, name)| name));
    let mut out = String::with_capacity(listing.len());
    for l in lines {
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// The inverse of [`text::escape`]; `None` for a malformed escape.
fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next()? {
            '\\' => out.push('\\'),
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            'x' => {
                let h: String = it.by_ref().take(2).collect();
                out.push(char::from_u32(u32::from_str_radix(&h, 16).ok()?)?);
            }
            'u' => {
                if it.next()? != '{' {
                    return None;
                }
                let h: String = it.by_ref().take_while(|&c| c != '}').collect();
                out.push(char::from_u32(u32::from_str_radix(&h, 16).ok()?)?);
            }
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(bytes: u64, elapsed_ms: u64, window: u16) -> Report {
        Report {
            op: Op::Get,
            what: "'f' -> 'f'".into(),
            peer: "127.0.0.1:6969".parse().unwrap(),
            bytes,
            elapsed: Duration::from_millis(elapsed_ms),
            resent: 0,
            duplicates: 0,
            bad_checksum: 0,
            srtt: Some(Duration::from_micros(150)),
            block_size: 1408,
            window,
        }
    }

    /// The summary teaches: a stop-and-wait transfer that took a round trip per block
    /// says how much faster a window would likely be; a windowed one, a short one or
    /// one that was already near line rate says nothing.
    #[test]
    fn the_summary_suggests_a_window_when_the_link_sat_idle() {
        // 1000 blocks in 150 ms: 150 µs each, against 12 µs on a 1 Gbit/s wire.
        let r = report(1000 * 1408, 150, 1);
        assert_eq!(r.window_speedup(), Some(12));
        assert!(
            r.to_string()
                .ends_with("--window 16 would likely be about 12× faster (on a 1 Gbit/s path)"),
            "{r}"
        );
        // A long round trip: capped at the window suggested.
        assert_eq!(report(1000 * 1408, 2000, 1).window_speedup(), Some(16));
        assert_eq!(report(1000 * 1408, 150, 16).window_speedup(), None);
        assert_eq!(report(10 * 1408, 150, 1).window_speedup(), None);
        // 15 µs a block: the link was busy most of the time.
        assert_eq!(report(10_000 * 1408, 150, 1).window_speedup(), None);
        assert!(
            !report(1000 * 1408, 150, 16)
                .to_string()
                .contains("--window")
        );
    }

    #[test]
    fn local_names_follow_scp() {
        assert_eq!(
            local_target("a/b.txt", None).unwrap(),
            PathBuf::from("b.txt")
        );
        let d = tempfile::tempdir().unwrap();
        let x = d.path().join("x");
        assert_eq!(local_target("b.txt", Some(&x)).unwrap(), x);
        assert_eq!(
            local_target("a/b.txt", Some(d.path())).unwrap(),
            d.path().join("b.txt")
        );
        let slash = PathBuf::from(format!("{}/", d.path().display()));
        assert_eq!(
            local_target("a/b.txt", Some(&slash)).unwrap(),
            d.path().join("b.txt")
        );
        // A trailing slash names a directory, which must exist.
        let nd = PathBuf::from(format!("{}/nd/", d.path().display()));
        let e = local_target("b.txt", Some(&nd)).unwrap_err().to_string();
        assert!(e.contains("no local directory") && e.contains("nd/"), "{e}");
        // A file name in a directory that does not exist: named.
        let e = local_target("b.txt", Some(&d.path().join("nd/x")))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("nd/x") && e.contains("no local directory"),
            "{e}"
        );
        // Remote names that are no file.
        assert!(matches!(
            local_target("notes.txt/", Some(&x)),
            Err(ClientError::BadPath(_))
        ));
        assert!(local_target("dir/", None).is_err());
        // A name from the server that cannot be a file here: refused, named escaped.
        for (remote, why) in [
            ("d/a\u{1b}b", "'a\\x1b"),
            ("a\0b", "NUL"),
            (&*"x".repeat(256), "256 bytes"),
        ] {
            match local_target(remote, None) {
                Err(ClientError::BadPath(m)) => {
                    assert!(m.contains(why) && m.contains("give a LOCAL name"), "{m}")
                }
                other => panic!("{remote:?}: {other:?}"),
            }
        }
        assert!(check_local_name("back\\slash \u{e9}").is_ok());
        assert!(local_target("d/a\u{1b}b", Some(&x)).is_ok());
        assert!(local_target("..", None).is_err());
    }

    #[test]
    fn listings_parse_and_unescape() {
        let l = "12\ta.txt\n-\tsub/\n3\tx\\ny\\\\z\\x1b\n0\tq\\u{202e}\nbogus\n";
        assert_eq!(
            parse_listing(l),
            vec![
                Entry {
                    name: "a.txt".into(),
                    size: Some(12)
                },
                Entry {
                    name: "sub".into(),
                    size: None
                },
                Entry {
                    name: "x\ny\\z\u{1b}".into(),
                    size: Some(3)
                },
                Entry {
                    name: "q\u{202e}".into(),
                    size: Some(0)
                },
            ]
        );
        for name in ["plain", "a\nb\\c\u{7}", "r\u{2066}"] {
            assert_eq!(unescape(&text::escape(name)).unwrap(), name);
        }
    }

    #[test]
    fn server_text_is_escaped() {
        let e = ClientError::Server {
            code: ErrorCode::Io,
            message: "bad\n\u{1b}[2Jthing".into(),
        };
        assert_eq!(e.to_string(), "server: bad\\n\\x1b[2Jthing");
        let e = ClientError::Server {
            code: ErrorCode::NotFound,
            message: "\u{1b}]0;pwned\u{7}".into(),
        };
        assert_eq!(e.to_string(), "\\x1b]0;pwned\\x07");
    }
}
