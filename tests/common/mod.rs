//! Helpers shared by the end-to-end tests: a running `udpftd`, test content.
#![allow(dead_code)] // each test crate uses a different part of this module

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub const UDPFTD: &str = env!("CARGO_BIN_EXE_udpftd");
pub const UDPFT: &str = env!("CARGO_BIN_EXE_udpft");

/// A running `udpftd`, killed on drop. Its stderr goes to a log file.
pub struct Server {
    pub child: Child,
    pub addr: String,
    log: PathBuf,
    _logdir: TempDir,
}

impl Server {
    pub fn start(root: &Path, args: &[&str]) -> Server {
        Self::start_on("127.0.0.1:0", root, args)
    }

    pub fn start_on(listen: &str, root: &Path, args: &[&str]) -> Server {
        Self::start_with(listen, root, args, &[])
    }

    /// Starts `udpftd` with environment variables `envs` set.
    pub fn start_with(listen: &str, root: &Path, args: &[&str], envs: &[(&str, &str)]) -> Server {
        let logdir = tempfile::tempdir().unwrap();
        let log = logdir.path().join("udpftd.log");
        let mut child = Command::new(UDPFTD)
            .envs(envs.iter().copied())
            .arg("--root")
            .arg(root)
            .args(["--listen", listen])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("udpftd starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        // "udpftd listening on 127.0.0.1:41234, serving /tmp/x"
        let addr = line
            .strip_prefix("udpftd listening on ")
            .and_then(|r| r.split(", serving ").next())
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_string();
        assert!(
            line.contains(&root.canonicalize().unwrap().display().to_string()),
            "{line}"
        );
        Server {
            child,
            addr,
            log,
            _logdir: logdir,
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let t = Instant::now();
        while t.elapsed() < limit {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Deterministic pseudo-random content.
pub fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        })
        .collect()
}

/// How many transfer temporary files process `pid` holds open in `dir`: unnamed ones
/// show in /proc as `dir/#inode (deleted)`, named ones (filesystems without unnamed
/// files, or `UDPFT_NAMED_TEMP=1`) as `dir/.udpft-*.part`.
pub fn uploads_open(pid: u32, dir: &Path) -> usize {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    let dir = dir.canonicalize().unwrap();
    fds.filter_map(|e| fs::read_link(e.ok()?.path()).ok())
        .filter(|t| {
            let n = t.file_name().unwrap_or_default().to_string_lossy();
            t.parent() == Some(dir.as_path())
                && ((n.starts_with('#') && n.ends_with(" (deleted)"))
                    || (n.starts_with(".udpft-") && n.ends_with(".part")))
        })
        .count()
}

/// Waits up to 30 s (a loaded machine is slow, never this slow) for `cond`.
#[track_caller]
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A REQUEST datagram as a client builds it (`token`: the server's RETRY's, if any).
pub fn request_bytes(
    op: udpft::wire::Op,
    name: &str,
    nonce: u64,
    block_size: u32,
    token: Option<udpft::wire::Token>,
) -> Vec<u8> {
    use udpft::wire::{Datagram, Message, Request};
    let d = Datagram {
        session: nonce,
        seq: 0,
        message: Message::Request(Request {
            token,
            op,
            block_size,
            size: 0,
            name,
            window: 1,
        }),
    };
    let mut buf = vec![0u8; d.wire_len()];
    let n = d.emit(&mut buf).unwrap();
    buf.truncate(n);
    buf
}

/// Sends `signal` (`"TERM"`, `"INT"`) to process `pid`, as a person would with kill(1).
pub fn signal(pid: u32, signal: &str) {
    let st = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "kill -{signal} {pid}");
}
