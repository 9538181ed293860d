//! A userspace link emulator for the LAN benchmark (`bench/run`): two TUN devices
//! joined by a link with a rate, a one-way delay and jitter, the same in both
//! directions. This kernel has no `sch_netem`, so `bench/run` creates the devices here,
//! moves one into each of two network namespaces, and everything between them —
//! udpft, atftp, iperf3's TCP — crosses this link. Loss is not made here: the
//! benchmark adds it with nftables in the namespaces, outside any program it measures.
//!
//! ```text
//! linkemu --a ue0 --b ue1 --rate 1000000000 --delay-us 50 [--jitter-us 0] [--queue 1000]
//! ```
//!
//! prints `linkemu ready` once both devices exist, then forwards until killed.
//!
//! The model, per direction: a datagram waits for the link to finish the ones before it
//! (a tail-drop queue of `--queue` datagrams' worth of bytes; beyond it, dropped as a
//! router would), takes `len × 8 / rate` to go out, then arrives `delay ± jitter` later
//! (uniformly at random), never before the one sent ahead of it: jitter does not
//! reorder, as on a real switched path. One thread serves both directions and sleeps
//! with a 1 µs timer slack until the next delivery or the next datagram.
//!
//! Linux only; needs CAP_NET_ADMIN (root) for the TUN devices.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// One direction of the link.
struct Direction {
    rate_bps: f64,
    delay: Duration,
    jitter: Duration,
    queue_bytes: usize,
    /// When the link finishes sending what it has.
    busy_until: Instant,
    /// Datagrams on their way: when each arrives, and its bytes.
    flight: VecDeque<(Instant, Vec<u8>)>,
    last_arrival: Instant,
    rng: u64,
    dropped: u64,
    forwarded: u64,
}

impl Direction {
    fn random(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A datagram arrives at the link's entrance at `now`.
    fn offer(&mut self, now: Instant, bytes: Vec<u8>) -> Option<Vec<u8>> {
        let start = self.busy_until.max(now);
        let backlog = start.saturating_duration_since(now).as_secs_f64() * self.rate_bps / 8.0;
        if backlog as usize > self.queue_bytes {
            self.dropped += 1;
            return Some(bytes);
        }
        let tx = Duration::from_secs_f64(bytes.len() as f64 * 8.0 / self.rate_bps);
        self.busy_until = start + tx;
        let spread = self.jitter.as_secs_f64() * (2.0 * self.random() - 1.0);
        let delay = Duration::from_secs_f64((self.delay.as_secs_f64() + spread).max(0.0));
        let at = (self.busy_until + delay).max(self.last_arrival);
        self.last_arrival = at;
        self.flight.push_back((at, bytes));
        None
    }
}

/// Opens a TUN device (layer 3, no packet information header) named `name`.
fn tun(name: &str) -> io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/net/tun")?;
    if name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::other("device name too long"));
    }
    // SAFETY: `ifreq` is plain old data, zero is a valid value for every field.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one `ifreq`, which lives for the call; there
    // is no safe wrapper for it in the crates this project uses.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), libc::TUNSETIFF, &mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(f)
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: Option<T>) -> Result<T, String> {
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .ok_or(format!("{name} needs a value")),
        None => default.ok_or(format!("{name} is required")),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let parsed = (|| -> Result<_, String> {
        Ok((
            arg::<String>(&args, "--a", None)?,
            arg::<String>(&args, "--b", None)?,
            arg::<f64>(&args, "--rate", None)?,
            arg::<u64>(&args, "--delay-us", None)?,
            arg::<u64>(&args, "--jitter-us", Some(0))?,
            arg::<usize>(&args, "--queue", Some(1000))?,
        ))
    })();
    let (a, b, rate, delay, jitter, queue) = match parsed {
        Ok(p) => p,
        Err(e) => {
            eprintln!("linkemu: {e}");
            eprintln!(
                "usage: linkemu --a DEV --b DEV --rate BITS_PER_S --delay-us N [--jitter-us N] [--queue DATAGRAMS]"
            );
            return ExitCode::from(2);
        }
    };
    let (mut fa, mut fb) = match (tun(&a), tun(&b)) {
        (Ok(x), Ok(y)) => (x, y),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("linkemu: cannot create TUN devices {a}, {b}: {e} (run as root)");
            return ExitCode::from(1);
        }
    };
    // Sleep to the microsecond: the default 50 µs timer slack is as long as the LAN's
    // one-way delay.
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and touches no memory.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong) };
    let now = Instant::now();
    let dir = |seed| Direction {
        rate_bps: rate,
        delay: Duration::from_micros(delay),
        jitter: Duration::from_micros(jitter),
        queue_bytes: queue * 1500,
        busy_until: now,
        flight: VecDeque::new(),
        last_arrival: now,
        rng: seed,
        dropped: 0,
        forwarded: 0,
    };
    // [a → b, b → a]
    let mut dirs = [dir(0x9e37_79b9_7f4a_7c15), dir(0xd1b5_4a32_d192_ed03)];
    let mut spare: Vec<Vec<u8>> = Vec::new();
    println!("linkemu ready");
    let _ = io::stdout().flush();
    let mut buf = vec![0u8; 65_536];
    loop {
        let now = Instant::now();
        // Deliver what is due.
        for (i, d) in dirs.iter_mut().enumerate() {
            while d.flight.front().is_some_and(|(at, _)| *at <= now) {
                let (_, bytes) = d.flight.pop_front().expect("checked");
                let out = if i == 0 { &mut fb } else { &mut fa };
                // A full device queue drops, as a NIC would.
                if out.write(&bytes).is_ok() {
                    d.forwarded += 1;
                }
                spare.push(bytes);
            }
        }
        let next = dirs
            .iter()
            .filter_map(|d| d.flight.front().map(|f| f.0))
            .min();
        let timeout = next.map(|t| t.saturating_duration_since(Instant::now()));
        let mut fds = [
            libc::pollfd {
                fd: fa.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: fb.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let ts = timeout.map(|t| libc::timespec {
            tv_sec: t.as_secs() as libc::time_t,
            tv_nsec: t.subsec_nanos() as libc::c_long,
        });
        let tsp = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: `fds` and `ts` outlive the call; ppoll writes only `revents`.
        let rc = unsafe { libc::ppoll(fds.as_mut_ptr(), 2, tsp, std::ptr::null()) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            eprintln!("linkemu: poll: {e}");
            return ExitCode::from(1);
        }
        let now = Instant::now();
        for (i, fd) in fds.iter().enumerate() {
            if fd.revents & libc::POLLIN == 0 {
                continue;
            }
            let src = if i == 0 { &mut fa } else { &mut fb };
            // Take what is queued, a bounded number at a time so deliveries stay timely.
            for _ in 0..64 {
                match src.read(&mut buf) {
                    Ok(n) if n > 0 => {
                        let mut v = spare.pop().unwrap_or_default();
                        v.clear();
                        v.extend_from_slice(&buf[..n]);
                        if let Some(v) = dirs[i].offer(now, v) {
                            spare.push(v);
                        }
                    }
                    _ => break,
                }
            }
        }
    }
}
