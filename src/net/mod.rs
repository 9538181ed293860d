//! The IO drivers: the protocol engine over real `std::net::UdpSocket`s, files and
//! terminals. Everything that touches the operating system lives below here.
//!
//! - [`addr`]: `host[:port]` parsing and resolution (default port 6969, IPv6 in brackets).
//! - [`privileges`]: dropping root after binding (`udpftd --user`).
//! - [`server`]: the `udpftd` event loop (one socket, many sessions).
//! - [`client`]: the client driver: one session per command over a connected socket,
//!   scp's path rules, every resolved address tried, typed errors. It prints nothing.
//! - [`relay`]: the `udpft-lossy` relay: the link model between real sockets.
//! - [`tap`]: an endpoint's pcapng capture (`udpft --pcap`, `udpftd --pcap`): what each
//!   datagram sent or received was.

pub mod addr;
pub mod client;
pub mod privileges;
pub mod relay;
pub mod server;
pub mod tap;
pub mod tftp_client;
pub mod tftp_ports;

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// The port used when an address names none.
pub const DEFAULT_PORT: u16 = 6969;

/// The longest a [`Waiter`] spins before it blocks.
pub const MAX_SPIN: Duration = Duration::from_micros(50);
/// Below this a spin budget is not worth its syscalls: the waiter just blocks.
const MIN_SPIN: Duration = Duration::from_micros(4);

/// Waits for the next datagram on a socket: first by spinning briefly, then by blocking.
///
/// Stop-and-wait moves one block per round trip, so the round trip is the whole game,
/// and on a LAN much of it can be the wake-up of a thread blocked in `recv`. So the
/// waiter first polls the socket without blocking, yielding the CPU between polls so
/// that other runnable threads (16 sessions on 2 cores) are not starved, for a spin
/// budget of at most [`MAX_SPIN`]; then it blocks in `poll(2)` until the deadline.
///
/// Why `poll` and not a read timeout: the kernel rounds `SO_RCVTIMEO` up to whole
/// scheduler ticks (4 ms at HZ=250), so a 100 µs retransmission timeout fired after
/// about 8 ms (measured through `udpft-lossy` at 30% loss: every resend waited
/// 7.4–8 ms against a 0.13 ms round trip). `poll` with a nanosecond timeout
/// (ppoll, high-resolution timers) wakes within tens of microseconds of the deadline.
///
/// The budget adapts: a blocking wait that ended with a datagram soon after the spin
/// gave up doubles it (a longer spin would have caught it); a datagram that came later
/// than [`MAX_SPIN`] (a slow peer or link) halves it, down to none, so a slow link costs
/// no spinning. A wait that runs into its deadline leaves it alone; an idle server
/// wakes a few times a second and spins at most [`MAX_SPIN`] each time.
///
/// The waiter puts the socket in non-blocking mode; a send on it that would block is
/// then reported as `WouldBlock`, which the drivers treat as a lost datagram.
/// This is the one place every driver waits for the network.
#[derive(Debug)]
pub struct Waiter {
    spin: Duration,
    /// Whether the socket was put in non-blocking mode (once: a waiter serves one socket).
    nonblocking: bool,
}

impl Default for Waiter {
    fn default() -> Self {
        Waiter::new()
    }
}

impl Waiter {
    pub fn new() -> Self {
        Waiter {
            spin: Duration::from_micros(20),
            nonblocking: false,
        }
    }

    /// A waiter that never spins: it blocks in `poll(2)` at once.
    pub fn blocking() -> Self {
        Waiter {
            spin: Duration::ZERO,
            nonblocking: false,
        }
    }

    /// The waiter the drivers use: blocking, unless the environment variable
    /// `UDPFT_SPIN` is `1`.
    ///
    /// Why blocking by default: measured by `bench/run` on this project's 2-vCPU
    /// machines, the spinning waiter was no faster, and mostly slower (32 MiB get at
    /// the default block: 0.26 s and 0.35 s spinning against 0.22 s and 0.24 s
    /// blocking, in two runs), because the scheduler keeps client and server on one
    /// CPU, where a blocked peer wakes in ~11 µs and a spinning one only competes for
    /// the CPU. Where the peer is on another CPU or another machine, a wake-up costs
    /// ~70 µs here and spinning (~7 µs) pays: hence the switch.
    pub fn from_env() -> Self {
        match std::env::var("UDPFT_SPIN").as_deref() {
            Ok("1") => Waiter::new(),
            _ => Waiter::blocking(),
        }
    }

    /// The current spin budget.
    pub fn spin(&self) -> Duration {
        self.spin
    }

    /// Waits for the next datagram on `sock` until `deadline` at the latest. Returns
    /// `Ok(None)` when the deadline passed (or the wait was interrupted) without one.
    pub fn recv_until(
        &mut self,
        sock: &UdpSocket,
        buf: &mut [u8],
        deadline: Instant,
    ) -> io::Result<Option<(usize, SocketAddr)>> {
        if !self.nonblocking {
            sock.set_nonblocking(true)?;
            self.nonblocking = true;
        }
        let start = Instant::now();
        let spin_end = (start + self.spin).min(deadline);
        loop {
            if let Some(got) = try_recv(sock, buf)? {
                return Ok(Some(got));
            }
            if Instant::now() >= spin_end {
                break;
            }
            std::thread::yield_now();
        }
        let blocked_at = Instant::now();
        loop {
            let now = Instant::now();
            if now >= deadline {
                // A timer ran out (a loss, or an idle server's periodic wake-up): that
                // says nothing about how fast answers come, so the budget stays. Halving
                // it here made the round trips after each loss pay a blocked wake-up.
                return Ok(None);
            }
            let wait =
                rustix::event::Timespec::try_from(deadline - now).map_err(io::Error::other)?;
            let mut fds = [rustix::event::PollFd::new(
                sock,
                rustix::event::PollFlags::IN,
            )];
            match rustix::event::poll(&mut fds, Some(&wait)) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
            if let Some(got) = try_recv(sock, buf)? {
                if blocked_at.elapsed() < MAX_SPIN {
                    self.spin = (self.spin * 2).clamp(MIN_SPIN * 2, MAX_SPIN);
                } else {
                    self.shrink();
                }
                return Ok(Some(got));
            }
        }
    }

    fn shrink(&mut self) {
        self.spin /= 2;
        if self.spin < MIN_SPIN {
            self.spin = Duration::ZERO;
        }
    }
}

/// One non-blocking receive: `None` if nothing is waiting.
fn try_recv(sock: &UdpSocket, buf: &mut [u8]) -> io::Result<Option<(usize, SocketAddr)>> {
    match sock.recv_from(buf) {
        Ok(got) => Ok(Some(got)),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Parses a duration: `500ms`, `2s`, `1.5s`, `250us`, `1m`, plain seconds (`2`, `0.5`),
/// or `0`; at most a day. The messages name the text that was refused.
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
        "ns" => n / 1e9,
        "m" | "min" => n * 60.0,
        u => return Err(format!("unknown unit '{u}' in '{s}' (use us, ms, s or m)")),
    };
    if !secs.is_finite() || secs > 86_400.0 {
        return Err(format!("'{s}' is out of range (at most a day)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A duration that must not be zero (timeouts, grace times), parsed as [`parse_duration`].
pub fn parse_timeout(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err(format!("'{}' is zero; a timeout must be longer", s.trim())),
        d => Ok(d),
    }
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
    fn waiters_receive_and_respect_deadlines() {
        for mut w in [Waiter::new(), Waiter::blocking()] {
            let a = UdpSocket::bind("127.0.0.1:0").unwrap();
            let b = UdpSocket::bind("127.0.0.1:0").unwrap();
            let mut buf = [0u8; 64];
            // Nothing to receive: back no sooner than the deadline, with nothing.
            let start = Instant::now();
            let got = w
                .recv_until(&a, &mut buf, start + Duration::from_millis(3))
                .unwrap();
            assert!(got.is_none());
            assert!(start.elapsed() >= Duration::from_millis(3));
            // A datagram already waiting, and one arriving while the waiter blocks.
            b.send_to(b"one", a.local_addr().unwrap()).unwrap();
            let far = Instant::now() + Duration::from_secs(5);
            let (n, from) = w.recv_until(&a, &mut buf, far).unwrap().unwrap();
            assert_eq!((&buf[..n], from), (&b"one"[..], b.local_addr().unwrap()));
            let to = a.local_addr().unwrap();
            let sender = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(5));
                b.send_to(b"two", to).unwrap();
            });
            let (n, _) = w.recv_until(&a, &mut buf, far).unwrap().unwrap();
            assert_eq!(&buf[..n], b"two");
            sender.join().unwrap();
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("0.25"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_timeout("0").unwrap_err().contains("zero"));
        assert_eq!(parse_timeout("250us"), Ok(Duration::from_micros(250)));
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("3 parsecs").is_err());
    }

    #[test]
    fn bytes() {
        assert_eq!(human_bytes(10), "10 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }
}
