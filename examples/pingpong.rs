//! Raw UDP ping-pong: the stop-and-wait bound on this host.
//!
//! A client sends one datagram of `--size` bytes, the server echoes it, the client
//! waits for the echo before sending the next: exactly the pattern of a stop-and-wait
//! transfer with nothing else in the way (no file IO, no CRC, no protocol state). The
//! median round trip gives the best a one-block-per-round-trip protocol can do with a
//! block of `size - wire::OVERHEAD` payload bytes: `payload / rtt`.
//!
//! ```text
//! cargo run --release --example pingpong -- --mode spin --size 1434 --count 20000
//! ```
//!
//! Roles: `--role both` (default) runs server and client as two threads of this process
//! on `--addr` (default 127.0.0.1:0, any free port); `--role server --addr A` only
//! echoes on A (until the client's STOP or `--idle-ms` of silence); `--role client
//! --addr A` only pings A, then sends STOP. Run under `ip netns exec NS` to measure
//! inside a namespace.
//!
//! Two processes are what a real transfer looks like, and the numbers differ: on a VM,
//! the scheduler tends to keep two communicating processes on one CPU (a wake-up is a
//! context switch, ~10 µs here), while the two threads of `--role both` tend to land
//! on different CPUs (a wake-up is an inter-processor interrupt into an idle vCPU,
//! ~70 µs here). `bench/run` measures the bound with two processes.
//!
//! Modes: `blocking` is a plain blocking `recv`; `spin` polls a nonblocking socket for
//! up to `--spin-us` µs (default 20) and then falls back to a blocking `recv`. Both
//! sides use the same mode.
//!
//! Lost datagrams (for instance under an nftables drop rule) do not hang the client:
//! a receive waits at most `--loss-timeout-ms` (default 200) and the ping is counted as
//! lost and sent again with a new sequence number. The last line of output is
//! machine-readable: `RESULT key=value ...`.
//!
//! `--probe-timeout-us N` measures something else: how long a `recv` with a read
//! timeout of N µs (SO_RCVTIMEO) really waits with nothing to receive. Linux rounds
//! that timeout up to scheduler ticks (4 ms at HZ=250), which is what a
//! retransmission timer built on it gets.

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use udpft::wire;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Blocking,
    Spin,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Role {
    Both,
    Server,
    Client,
}

#[derive(Clone, Debug)]
struct Opts {
    mode: Mode,
    role: Role,
    size: usize,
    count: u64,
    warmup: u64,
    spin_us: u64,
    addr: String,
    loss_timeout: Duration,
    idle: Duration,
    probe_timeout_us: Option<u64>,
}

fn usage() -> &'static str {
    "usage: pingpong [--mode blocking|spin] [--size BYTES] [--count N] [--warmup N] \
     [--spin-us N] [--addr HOST:PORT] [--role both|server|client] [--loss-timeout-ms N] \
     [--idle-ms N] [--probe-timeout-us N]"
}

fn parse_args() -> Result<Opts, String> {
    let mut o = Opts {
        mode: Mode::Blocking,
        role: Role::Both,
        size: wire::DEFAULT_BLOCK_SIZE as usize + wire::OVERHEAD,
        count: 20_000,
        warmup: 500,
        spin_us: 20,
        addr: "127.0.0.1:0".into(),
        loss_timeout: Duration::from_millis(200),
        idle: Duration::from_secs(5),
        probe_timeout_us: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        let num = |s: String, name: &str| -> Result<u64, String> {
            s.parse::<u64>().map_err(|e| format!("{name} {s}: {e}"))
        };
        match a.as_str() {
            "--mode" => {
                o.mode = match val("--mode")?.as_str() {
                    "blocking" => Mode::Blocking,
                    "spin" => Mode::Spin,
                    m => return Err(format!("unknown mode {m}")),
                }
            }
            "--role" => {
                o.role = match val("--role")?.as_str() {
                    "both" => Role::Both,
                    "server" => Role::Server,
                    "client" => Role::Client,
                    r => return Err(format!("unknown role {r}")),
                }
            }
            "--size" => o.size = num(val("--size")?, "--size")? as usize,
            "--count" => o.count = num(val("--count")?, "--count")?,
            "--warmup" => o.warmup = num(val("--warmup")?, "--warmup")?,
            "--spin-us" => o.spin_us = num(val("--spin-us")?, "--spin-us")?,
            "--addr" => o.addr = val("--addr")?,
            "--loss-timeout-ms" => {
                o.loss_timeout = Duration::from_millis(num(val("--loss-timeout-ms")?, "ms")?.max(1))
            }
            "--probe-timeout-us" => {
                o.probe_timeout_us =
                    Some(num(val("--probe-timeout-us")?, "--probe-timeout-us")?.max(1))
            }
            "--idle-ms" => o.idle = Duration::from_millis(num(val("--idle-ms")?, "ms")?.max(1)),
            "-h" | "--help" => {
                println!("{}", usage());
                std::process::exit(0);
            }
            x => return Err(format!("unknown argument {x}\n{}", usage())),
        }
    }
    if o.size < 8 || o.size > wire::MAX_DATAGRAM {
        return Err(format!("--size must be 8..={}", wire::MAX_DATAGRAM));
    }
    if o.count == 0 {
        return Err("--count must be at least 1".into());
    }
    Ok(o)
}

/// Receives one datagram into `buf`, waiting at most `limit`. `None` on timeout.
fn recv(
    sock: &UdpSocket,
    buf: &mut [u8],
    mode: Mode,
    spin: Duration,
    limit: Duration,
) -> Option<(usize, SocketAddr)> {
    if mode == Mode::Spin {
        let start = Instant::now();
        loop {
            match sock.recv_from(buf) {
                Ok(r) => return Some(r),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if start.elapsed() >= spin {
                        break;
                    }
                    std::hint::spin_loop();
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("recv: {e}"),
            }
        }
        // Spun long enough: sleep in the kernel like the blocking mode.
        sock.set_nonblocking(false).expect("set_nonblocking");
        sock.set_read_timeout(Some(limit))
            .expect("set_read_timeout");
        let r = recv_blocking(sock, buf);
        sock.set_nonblocking(true).expect("set_nonblocking");
        r
    } else {
        recv_blocking(sock, buf)
    }
}

fn recv_blocking(sock: &UdpSocket, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
    loop {
        match sock.recv_from(buf) {
            Ok(r) => return Some(r),
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                return None;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("recv: {e}"),
        }
    }
}

fn prepare(sock: &UdpSocket, mode: Mode, limit: Duration) {
    sock.set_read_timeout(Some(limit))
        .expect("set_read_timeout");
    if mode == Mode::Spin {
        sock.set_nonblocking(true).expect("set_nonblocking");
    }
}

/// Echoes datagrams back to their sender until `idle` passes without one.
fn serve(sock: UdpSocket, o: &Opts) -> u64 {
    let spin = Duration::from_micros(o.spin_us);
    prepare(&sock, o.mode, o.idle);
    let mut buf = vec![0u8; wire::MAX_DATAGRAM + 1];
    let mut echoed = 0u64;
    while let Some((n, from)) = recv(&sock, &mut buf, o.mode, spin, o.idle) {
        if n == 4 && &buf[..4] == b"STOP" {
            break;
        }
        let _ = sock.send_to(&buf[..n], from);
        echoed += 1;
    }
    echoed
}

struct Stats {
    rtts_ns: Vec<u64>,
    lost: u64,
    elapsed: Duration,
}

fn ping(sock: &UdpSocket, server: SocketAddr, o: &Opts) -> Stats {
    let spin = Duration::from_micros(o.spin_us);
    prepare(sock, o.mode, o.loss_timeout);
    let mut out = vec![0xA5u8; o.size];
    let mut buf = vec![0u8; wire::MAX_DATAGRAM + 1];
    let mut rtts = Vec::with_capacity(o.count as usize);
    let mut lost = 0u64;
    let mut seq = 0u64;
    let total = o.warmup + o.count;
    let mut done = 0u64;
    let mut measured_start = Instant::now();
    // Every ping is bounded by loss_timeout and losses are bounded too: at most
    // 10 × total sends.
    let max_sends = total.saturating_mul(10).max(100);
    let mut sends = 0u64;
    while done < total && sends < max_sends {
        if done == o.warmup && rtts.is_empty() {
            measured_start = Instant::now();
        }
        seq += 1;
        sends += 1;
        out[..8].copy_from_slice(&seq.to_le_bytes());
        let t0 = Instant::now();
        sock.send_to(&out, server).expect("send");
        let deadline = t0 + o.loss_timeout;
        let got = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break false;
            }
            match recv(sock, &mut buf, o.mode, spin, left) {
                Some((n, _)) if n == o.size && buf[..8] == seq.to_le_bytes() => break true,
                Some(_) => continue, // a late echo of an earlier ping
                None => break false,
            }
        };
        if !got {
            if done >= o.warmup {
                lost += 1;
            }
            continue;
        }
        let rtt = t0.elapsed();
        if done >= o.warmup {
            rtts.push(rtt.as_nanos() as u64);
        }
        done += 1;
    }
    Stats {
        rtts_ns: rtts,
        lost,
        elapsed: measured_start.elapsed(),
    }
}

fn report(o: &Opts, s: &mut Stats) {
    s.rtts_ns.sort_unstable();
    let n = s.rtts_ns.len();
    let payload = o.size.saturating_sub(wire::OVERHEAD) as f64;
    if n == 0 {
        println!("no round trip completed ({} lost)", s.lost);
        println!(
            "RESULT mode={:?} size={} payload={} count=0 lost={} median_us=nan mean_us=nan p99_us=nan bound_MBps=0 bound_mean_MBps=0",
            o.mode, o.size, payload, s.lost
        );
        return;
    }
    let median = if n % 2 == 1 {
        s.rtts_ns[n / 2] as f64
    } else {
        (s.rtts_ns[n / 2 - 1] + s.rtts_ns[n / 2]) as f64 / 2.0
    } / 1e3;
    let mean = s.rtts_ns.iter().sum::<u64>() as f64 / n as f64 / 1e3;
    let p99 = s.rtts_ns[((n as f64 * 0.99) as usize).min(n - 1)] as f64 / 1e3;
    let bound = payload / median; // bytes per µs = MB/s
    let bound_mean = payload / mean;
    let sent = n as u64 + s.lost;
    println!(
        "{:?} ping-pong, {} B datagrams ({} B payload): {} round trips in {:.3} s, {} lost ({:.1}%)",
        o.mode,
        o.size,
        payload,
        n,
        s.elapsed.as_secs_f64(),
        s.lost,
        100.0 * s.lost as f64 / sent as f64
    );
    println!("rtt median {median:.2} µs, mean {mean:.2} µs, p99 {p99:.2} µs");
    println!("stop-and-wait bound: {bound:.1} MB/s (median rtt), {bound_mean:.1} MB/s (mean rtt)");
    println!(
        "RESULT mode={:?} size={} payload={} count={} lost={} median_us={:.3} mean_us={:.3} p99_us={:.3} bound_MBps={:.2} bound_mean_MBps={:.2}",
        o.mode, o.size, payload, n, s.lost, median, mean, p99, bound, bound_mean
    );
}

/// How long a blocking `recv` with a read timeout (SO_RCVTIMEO) of `us` µs really
/// waits when nothing arrives: the kernel rounds that timeout to scheduler ticks.
fn probe_timeout(us: u64, count: u64) {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_micros(us)))
        .expect("set_read_timeout");
    let mut buf = [0u8; 64];
    let mut waits: Vec<f64> = (0..count.clamp(1, 1000))
        .map(|_| {
            let t0 = Instant::now();
            let _ = sock.recv_from(&mut buf);
            t0.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    waits.sort_by(|a, b| a.total_cmp(b));
    let n = waits.len();
    println!(
        "RESULT probe_timeout_us={us} samples={n} median_wait_us={:.1} min_wait_us={:.1} max_wait_us={:.1}",
        waits[n / 2],
        waits[0],
        waits[n - 1]
    );
}

fn main() -> ExitCode {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("pingpong: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(us) = o.probe_timeout_us {
        probe_timeout(us, o.count.min(50));
        return ExitCode::SUCCESS;
    }
    let addr: SocketAddr = match o.addr.parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("pingpong: --addr {}: {e}", o.addr);
            return ExitCode::from(2);
        }
    };
    // The client's own address: loopback for a loopback server, any address otherwise
    // (bench/lan pings across an emulated link).
    let any: SocketAddr = match (addr.is_ipv4(), addr.ip().is_loopback()) {
        (true, true) => "127.0.0.1:0".parse().unwrap(),
        (true, false) => "0.0.0.0:0".parse().unwrap(),
        (false, true) => "[::1]:0".parse().unwrap(),
        (false, false) => "[::]:0".parse().unwrap(),
    };
    match o.role {
        Role::Server => {
            let sock = UdpSocket::bind(addr).expect("bind");
            println!("pingpong server on {}", sock.local_addr().unwrap());
            let n = serve(sock, &o);
            println!("echoed {n} datagrams");
        }
        Role::Client => {
            let sock = UdpSocket::bind(any).expect("bind");
            let mut s = ping(&sock, addr, &o);
            // Tell the server to leave (a few times, in case a drop rule eats one;
            // otherwise it leaves after --idle-ms of silence).
            for _ in 0..5 {
                let _ = sock.send_to(b"STOP", addr);
                thread::sleep(Duration::from_millis(2));
            }
            report(&o, &mut s);
        }
        Role::Both => {
            let ssock = UdpSocket::bind(addr).expect("bind");
            let server = ssock.local_addr().unwrap();
            let so = o.clone();
            let h = thread::spawn(move || serve(ssock, &so));
            let sock = UdpSocket::bind(any).expect("bind");
            let mut s = ping(&sock, server, &o);
            // Stop the echo thread (resent a few times in case the rule drops it;
            // otherwise it leaves after --idle-ms of silence).
            for _ in 0..20 {
                let _ = sock.send_to(b"STOP", server);
                if h.is_finished() {
                    break;
                }
                thread::sleep(Duration::from_millis(10));
            }
            let _ = h.join();
            report(&o, &mut s);
        }
    }
    ExitCode::SUCCESS
}
