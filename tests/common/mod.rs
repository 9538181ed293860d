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
        let logdir = tempfile::tempdir().unwrap();
        let log = logdir.path().join("udpftd.log");
        let mut child = Command::new(UDPFTD)
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

/// Sends `signal` (`"TERM"`, `"INT"`) to process `pid`, as a person would with kill(1).
pub fn signal(pid: u32, signal: &str) {
    let st = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "kill -{signal} {pid}");
}
