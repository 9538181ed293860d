//! The client: one [`ClientSession`] over a connected UDP socket, with a progress bar
//! on a terminal and a one-line summary afterwards.

use std::fmt;
use std::io::{self, IsTerminal, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use rand::RngExt;

use super::{Waiter, human_bytes};
use crate::engine::{ClientSession, Config, Job, RtoConfig, Sink, Status, TransferError};
use crate::storage::{AtomicFile, FileSource};
use crate::wire::{self, ErrorCode, Op};

/// Exit codes of `udpft` (documented in README.md).
pub mod exit_code {
    pub const OK: u8 = 0;
    /// A local problem (missing local file, cannot write) or anything else.
    pub const OTHER: u8 = 1;
    /// Bad usage (clap's code).
    pub const USAGE: u8 = 2;
    /// The server refused: not found, access denied, exists, not allowed, busy, bad request.
    pub const REFUSED: u8 = 3;
    /// No answer, or the peer went silent.
    pub const NO_ANSWER: u8 = 4;
    /// The integrity check (length or CRC32) failed.
    pub const INTEGRITY: u8 = 5;
    /// Interrupted by Ctrl-C.
    pub const INTERRUPTED: u8 = 130;
}

/// Settings of the client.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub block_size: u32,
    /// The ceiling of the retransmission timeout.
    pub timeout: Duration,
    /// Give up after this long without progress.
    pub idle: Duration,
    /// No summary.
    pub quiet: bool,
    /// One line per packet event on stderr.
    pub trace: bool,
    /// Show a progress bar (only if stderr is a terminal).
    pub progress: bool,
    /// Set (by a Ctrl-C handler) to abandon the running transfer.
    pub interrupt: Option<Arc<AtomicBool>>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            block_size: wire::DEFAULT_BLOCK_SIZE,
            timeout: Duration::from_secs(1),
            idle: Duration::from_secs(10),
            quiet: false,
            trace: false,
            progress: true,
            interrupt: None,
        }
    }
}

/// A failed command: the one message for the user, and the process exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError {
    pub message: String,
    pub code: u8,
}

impl ClientError {
    pub fn local(message: impl Into<String>) -> Self {
        ClientError {
            message: message.into(),
            code: exit_code::OTHER,
        }
    }

    fn transfer(e: &TransferError) -> Self {
        let code = match e {
            TransferError::NoAnswer { .. } | TransferError::Silent { .. } => exit_code::NO_ANSWER,
            TransferError::Integrity { .. } => exit_code::INTEGRITY,
            TransferError::Remote { code, .. } => match code {
                ErrorCode::NotFound
                | ErrorCode::AccessDenied
                | ErrorCode::AlreadyExists
                | ErrorCode::Busy
                | ErrorCode::NotAllowed
                | ErrorCode::BadRequest => exit_code::REFUSED,
                ErrorCode::Integrity => exit_code::INTEGRITY,
                _ => exit_code::OTHER,
            },
            TransferError::Aborted(_) => exit_code::INTERRUPTED,
            _ => exit_code::OTHER,
        };
        let message = match e {
            TransferError::Remote { code, message } => match code {
                ErrorCode::NotFound
                | ErrorCode::AccessDenied
                | ErrorCode::AlreadyExists
                | ErrorCode::NotAllowed
                | ErrorCode::BadRequest => message.clone(),
                _ => format!("server: {message}"),
            },
            e => e.to_string(),
        };
        ClientError { message, code }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ClientError {}

/// What a finished command did, for the summary line.
#[derive(Debug, Clone)]
pub struct Report {
    pub op: Op,
    /// `'remote' -> 'local'`, or the path.
    pub what: String,
    pub bytes: u64,
    pub elapsed: Duration,
    pub resent: u64,
    /// Datagrams that failed their CRC32 and were dropped.
    pub bad_checksum: u64,
    pub srtt: Option<Duration>,
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
                    "{} {}: {} ({} B) in {secs:.3} s ({rate}/s), {} resends, rtt {rtt}",
                    op.name(),
                    self.what,
                    human_bytes(self.bytes),
                    self.bytes,
                    self.resent
                )?;
                // Only worth a word when the link damaged something.
                match self.bad_checksum {
                    0 => Ok(()),
                    n => write!(f, ", {n} datagrams with a bad checksum dropped"),
                }
            }
        }
    }
}

/// Runs one session against `server` to the end. `total` is the known size, for the
/// progress bar (a get learns it from the ACCEPT).
pub fn run_session(
    server: SocketAddr,
    name: &str,
    job: Job,
    opts: &ClientOptions,
    what: String,
) -> Result<Report, ClientError> {
    let op = job.op();
    let total = match &job {
        Job::Put(_, n) => Some(*n),
        _ => None,
    };
    let bind: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(bind)
        .and_then(|s| s.connect(server).map(|_| s))
        .map_err(|e| ClientError::local(format!("cannot open a socket to {server}: {e}")))?;
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
    };
    let mut s = ClientSession::new(server, nonce, name, job, cfg)
        .map_err(|e| ClientError::local(e.to_string()))?;
    let bar = (opts.progress
        && !opts.quiet
        && matches!(op, Op::Get | Op::Put)
        && io::stderr().is_terminal())
    .then(|| {
        let b = ProgressBar::new(total.unwrap_or(0));
        b.set_style(
            ProgressStyle::with_template(
                "{bar:40.cyan/blue} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    });
    let mut sized = total.is_some();
    let mut buf = vec![0u8; wire::MAX_DATAGRAM];
    let mut waiter = Waiter::from_env();
    let start = Instant::now();
    let mut done_at = None;
    let poll = Duration::from_millis(100);
    loop {
        let now = Instant::now();
        while let Some(b) = s.poll_transmit(now) {
            match sock.send(b) {
                Ok(_) => {}
                // ICMP port unreachable from an earlier send, or a full send buffer
                // on the non-blocking socket: as good as lost; the retry limit decides.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionRefused | io::ErrorKind::WouldBlock
                    ) => {}
                // While lingering the transfer is already a success.
                Err(_) if done_at.is_some() => {}
                Err(e) => {
                    return Err(ClientError::local(format!("sending to {server}: {e}")));
                }
            }
        }
        if opts.trace {
            let mut err = io::stderr().lock();
            while let Some(ev) = s.poll_event() {
                let _ = writeln!(err, "udpft: {server}: {ev}");
            }
        }
        if let Some(b) = &bar {
            if !sized && let Some((_, a)) = s.accepted() {
                if a.size != wire::UNKNOWN_SIZE {
                    b.set_length(a.size);
                }
                sized = true;
            }
            b.set_position(s.stats().bytes);
        }
        match s.status() {
            Status::Running => {}
            Status::Complete => {
                done_at.get_or_insert(now);
            }
            Status::Closed | Status::Failed(_) => break,
        }
        let complete = done_at.is_some();
        if opts
            .interrupt
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Relaxed))
        {
            // Already verified and stored: Ctrl-C only cuts the linger short.
            if complete {
                break;
            }
            s.abort("interrupted by the user");
            let now = Instant::now();
            while let Some(b) = s.poll_transmit(now) {
                let _ = sock.send(b);
            }
            if let Some(b) = &bar {
                b.finish_and_clear();
            }
            return Err(ClientError {
                message: "interrupted".into(),
                code: exit_code::INTERRUPTED,
            });
        }
        let deadline = s.poll_timeout().map_or(now + poll, |t| t.min(now + poll));
        match waiter.recv_until(&sock, &mut buf, deadline) {
            Ok(Some((n, _))) => s.handle_datagram(Instant::now(), &buf[..n]),
            Ok(None) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
            // While lingering the transfer is already a success.
            Err(_) if complete => break,
            Err(e) => return Err(ClientError::local(format!("receiving from {server}: {e}"))),
        }
        // Timers are checked after every wait, not only a silent one: a stream of
        // datagrams (junk, or a broken server) must not hold back resends or the
        // retry limit.
        let now = Instant::now();
        if s.poll_timeout().is_some_and(|t| t <= now) {
            s.handle_timeout(now);
        }
    }
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let elapsed = done_at.unwrap_or_else(Instant::now) - start;
    let stats = s.stats();
    match s.status() {
        Status::Failed(e) => Err(ClientError::transfer(e)),
        _ => Ok(Report {
            op,
            what,
            bytes: stats.bytes,
            elapsed,
            resent: stats.resent,
            bad_checksum: stats.bad_checksum,
            srtt: s.rto().srtt(),
        }),
    }
}

/// A sink into shared memory (for listings).
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| io::Error::other("poisoned"))?
            .extend_from_slice(buf);
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

/// Where a get of `remote` writes, given the optional LOCAL argument.
pub fn local_target(remote: &str, local: Option<&Path>) -> Result<PathBuf, ClientError> {
    let base = || {
        remote_file_name(remote).ok_or_else(|| {
            ClientError::local(format!(
                "'{remote}' does not end in a file name; give a LOCAL name"
            ))
        })
    };
    Ok(match local {
        None => PathBuf::from(base()?),
        Some(l) if l.is_dir() => l.join(base()?),
        Some(l) => l.to_path_buf(),
    })
}

/// Downloads `remote` into `local` (see [`local_target`]). The file appears only when
/// complete and verified; a failure leaves no file and an existing file untouched.
pub fn get(
    server: SocketAddr,
    remote: &str,
    local: Option<&Path>,
    opts: &ClientOptions,
) -> Result<Report, ClientError> {
    let target = local_target(remote, local)?;
    if target.is_dir() {
        return Err(ClientError::local(format!(
            "'{}' is a directory",
            target.display()
        )));
    }
    let file = AtomicFile::create(&target, true)
        .map_err(|e| ClientError::local(format!("cannot write '{}': {e}", target.display())))?;
    let what = format!("'{remote}' -> '{}'", target.display());
    run_session(server, remote, Job::Get(Box::new(file)), opts, what)
}

/// Uploads `local` as `remote` (default: the local file's name).
pub fn put(
    server: SocketAddr,
    local: &Path,
    remote: Option<&str>,
    opts: &ClientOptions,
) -> Result<Report, ClientError> {
    let shown = local.display();
    if local.is_dir() {
        return Err(ClientError::local(format!(
            "'{shown}' is a directory; put sends one file"
        )));
    }
    // A regular file only, read exactly as announced: one that changes while it is
    // sent fails the transfer rather than arriving torn.
    let src = FileSource::open(local).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => {
            ClientError::local(format!("local file '{shown}' does not exist"))
        }
        io::ErrorKind::InvalidInput => ClientError::local(e.to_string()),
        _ => ClientError::local(format!("cannot read local file '{shown}': {e}")),
    })?;
    let remote = match remote {
        Some(r) => r.to_string(),
        None => local
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| ClientError::local(format!("'{shown}' has no file name")))?,
    };
    let what = format!("'{shown}' -> '{remote}'");
    let size = src.size();
    run_session(server, &remote, Job::Put(Box::new(src), size), opts, what)
}

/// Fetches the listing of `dir` (default: the root) as text.
pub fn list(
    server: SocketAddr,
    dir: Option<&str>,
    opts: &ClientOptions,
) -> Result<(String, Report), ClientError> {
    let dir = dir.unwrap_or(".");
    let sink = Shared::default();
    let report = run_session(
        server,
        dir,
        Job::List(Box::new(sink.clone())),
        opts,
        format!("'{dir}'"),
    )?;
    let bytes = std::mem::take(&mut *sink.0.lock().expect("not poisoned"));
    let text = String::from_utf8_lossy(&bytes).into_owned();
    Ok((text, report))
}

/// Deletes `remote` on the server.
pub fn delete(
    server: SocketAddr,
    remote: &str,
    opts: &ClientOptions,
) -> Result<Report, ClientError> {
    run_session(server, remote, Job::Delete, opts, format!("'{remote}'"))
}

/// Asks the server to exit.
pub fn exit(server: SocketAddr, opts: &ClientOptions) -> Result<Report, ClientError> {
    run_session(server, "", Job::Exit, opts, String::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_names() {
        assert_eq!(
            local_target("a/b.txt", None).unwrap(),
            PathBuf::from("b.txt")
        );
        assert_eq!(
            local_target("b.txt", Some(Path::new("x"))).unwrap(),
            PathBuf::from("x")
        );
        let d = tempfile::tempdir().unwrap();
        assert_eq!(
            local_target("a/b.txt", Some(d.path())).unwrap(),
            d.path().join("b.txt")
        );
        assert!(local_target("dir/", None).is_err());
        assert!(local_target("..", None).is_err());
    }
}
