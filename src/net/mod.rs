//! The IO drivers: the protocol engine over real `std::net::UdpSocket`s, files and
//! terminals. Everything that touches the operating system lives below here.
//!
//! - [`addr`]: `host[:port]` parsing and resolution (default port 6969, IPv6 in brackets).
//! - [`fs`]: confinement of remote paths to the served root, atomic files, listings.
//! - [`server`]: the `udpftd` event loop (one socket, many sessions).
//! - [`client`]: one client session over a connected socket, progress and summary.
//! - [`shell`]: the interactive `ftp>` shell.

pub mod addr;
pub mod client;
pub mod fs;
pub mod server;
pub mod shell;

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// The port used when an address names none.
pub const DEFAULT_PORT: u16 = 6969;

/// Waits for the next datagram on `sock`, until `deadline` at the latest.
///
/// Returns `Ok(None)` when the deadline passed (or the wait was interrupted) without a
/// datagram. This is the one place every driver waits for the network, so a different
/// waiting strategy (spin, then block) can be put in here alone.
pub fn recv_until(
    sock: &UdpSocket,
    buf: &mut [u8],
    deadline: Instant,
) -> io::Result<Option<(usize, SocketAddr)>> {
    let now = Instant::now();
    if deadline <= now {
        return Ok(None);
    }
    // A zero read timeout is an error in std: wait at least a microsecond.
    let wait = (deadline - now).max(Duration::from_micros(1));
    sock.set_read_timeout(Some(wait))?;
    match sock.recv_from(buf) {
        Ok((n, from)) => Ok(Some((n, from))),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Parses a duration: `500ms`, `2s`, `1.5s`, `250us`, `1m`, or plain seconds (`2`, `0.5`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration (try 500ms, 2s or 1.5)"))?;
    let secs = match unit.trim() {
        "s" | "sec" | "secs" => n,
        "ms" => n / 1e3,
        "us" | "µs" => n / 1e6,
        "m" | "min" => n * 60.0,
        u => return Err(format!("unknown unit '{u}' in '{s}' (use us, ms, s or m)")),
    };
    if !secs.is_finite() || secs <= 0.0 || secs > 86_400.0 {
        return Err(format!(
            "'{s}' is out of range (must be > 0 and at most a day)"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A byte count for people: `1.5 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("0.25"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("3 parsecs").is_err());
    }

    #[test]
    fn bytes() {
        assert_eq!(human_bytes(10), "10 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }
}
