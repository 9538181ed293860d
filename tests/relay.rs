//! The `udpft-lossy` relay between plain UDP sockets on 127.0.0.1: no udpft binaries
//! needed. Wall-clock assertions are lower bounds only.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use udpft::link::{Impairments, Link, LinkConfig};
use udpft::net::relay::{Relay, RelayConfig, RelayHandle, RelayStats};

const QUIET: Duration = Duration::from_millis(300);

fn socket() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// A relay in this process in front of a fresh server socket.
fn relay_with(link: LinkConfig, seed: u64, idle: Option<Duration>) -> (RelayHandle, UdpSocket) {
    let server = socket();
    let mut cfg = RelayConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        server.local_addr().unwrap(),
        link,
        seed,
    );
    if let Some(idle) = idle {
        cfg.idle_timeout = idle;
    }
    let relay = Relay::bind(cfg).unwrap().spawn().unwrap();
    (relay, server)
}

fn relay(imp: Impairments) -> (RelayHandle, UdpSocket) {
    relay_with(LinkConfig::symmetric(imp), 7, None)
}

fn recv(s: &UdpSocket) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = [0u8; 65536];
    match s.recv_from(&mut buf) {
        Ok((n, from)) => Some((buf[..n].to_vec(), from)),
        Err(_) => None,
    }
}

/// Everything that arrives until the socket has been quiet for a while.
fn drain(s: &UdpSocket) -> Vec<Vec<u8>> {
    s.set_read_timeout(Some(QUIET)).unwrap();
    let mut got = Vec::new();
    while let Some((b, _)) = recv(s) {
        got.push(b);
    }
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    got
}

/// Waits until the relay has looked at `n` datagrams towards the server.
fn wait_seen(r: &RelayHandle, n: u64) -> RelayStats {
    let start = Instant::now();
    loop {
        let s = r.stats();
        if s.to_server.seen >= n || start.elapsed() > Duration::from_secs(10) {
            return s;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

fn msg(i: usize) -> Vec<u8> {
    format!("datagram number {i}").into_bytes()
}

#[test]
fn drop_all_delivers_nothing() {
    let (r, server) = relay(Impairments {
        drop: 1.0,
        ..Impairments::none()
    });
    let client = socket();
    for i in 0..20 {
        client.send_to(&msg(i), r.local_addr()).unwrap();
    }
    let s = wait_seen(&r, 20);
    assert!(drain(&server).is_empty());
    assert_eq!((s.to_server.seen, s.to_server.dropped), (20, 20));
    // A fully lossy link never opens an upstream socket: nothing was ever sent on.
    assert_eq!(r.stop().clients, 0);
}

#[test]
fn duplicate_all_delivers_everything_twice_both_ways() {
    let (r, server) = relay(Impairments {
        duplicate: 1.0,
        ..Impairments::none()
    });
    let client = socket();
    for i in 0..10 {
        client.send_to(&msg(i), r.local_addr()).unwrap();
    }
    let mut counts: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut upstream = None;
    for _ in 0..20 {
        let (b, from) = recv(&server).expect("a copy");
        upstream = Some(from);
        *counts.entry(b).or_default() += 1;
    }
    // A third copy of anything would arrive before the two copies of a last datagram.
    client.send_to(b"last", r.local_addr()).unwrap();
    for _ in 0..2 {
        assert_eq!(recv(&server).expect("a copy of the last").0, b"last");
    }
    for i in 0..10 {
        assert_eq!(counts.get(&msg(i)), Some(&2), "datagram {i}");
    }
    // Replies, sent to the relay's upstream socket, come back to the client twice.
    server.send_to(b"reply", upstream.unwrap()).unwrap();
    let (b, from) = recv(&client).unwrap();
    assert_eq!((b.as_slice(), from), (&b"reply"[..], r.local_addr()));
    assert_eq!(recv(&client).unwrap().0, b"reply");
    let s = r.stop();
    assert_eq!((s.to_server.seen, s.to_server.duplicated), (11, 11));
    assert_eq!((s.to_client.seen, s.to_client.duplicated), (1, 1));
}

#[test]
fn corrupt_all_changes_the_bytes() {
    let (r, server) = relay(Impairments {
        corrupt: 1.0,
        ..Impairments::none()
    });
    let client = socket();
    let sent = vec![0u8; 100];
    for _ in 0..10 {
        client.send_to(&sent, r.local_addr()).unwrap();
        let (got, _) = recv(&server).unwrap();
        assert_eq!(got.len(), sent.len());
        let flipped: u32 = got.iter().map(|b| b.count_ones()).sum();
        assert!((1..=3).contains(&flipped), "{flipped} bits flipped");
    }
    assert_eq!(r.stop().to_server.corrupted, 10);
}

#[test]
fn delay_is_respected() {
    let delay = Duration::from_millis(150);
    let (r, server) = relay_with(
        LinkConfig {
            to_server: Impairments {
                delay,
                ..Impairments::none()
            },
            to_client: Impairments::none(),
        },
        1,
        None,
    );
    let client = socket();
    let sent_at = Instant::now();
    client.send_to(b"late", r.local_addr()).unwrap();
    let (b, upstream) = recv(&server).unwrap();
    assert!(
        sent_at.elapsed() >= delay,
        "arrived after {:?}",
        sent_at.elapsed()
    );
    assert_eq!(b, b"late");
    // The other direction has no delay configured; it still works.
    server.send_to(b"back", upstream).unwrap();
    assert_eq!(recv(&client).unwrap().0, b"back");
    let s = r.stop();
    assert_eq!((s.to_server.delayed, s.to_client.delayed), (1, 0));
}

#[test]
fn reordered_datagrams_are_overtaken() {
    // The link model holds back the first datagram towards the server and not the
    // second (a seed chosen by asking the model itself), so the second must overtake it.
    // Overtaking needs the second to reach the relay less than HOLD after the first: the
    // test measures the gap between its two sends and retries (with a fresh relay) when
    // a loaded machine stretched it past a tenth of HOLD, so it never races the hold.
    const HOLD: Duration = Duration::from_secs(2);
    let link = LinkConfig {
        to_server: Impairments {
            reorder: 0.5,
            reorder_by: HOLD,
            ..Impairments::none()
        },
        to_client: Impairments::none(),
    };
    let held = |seed: u64| {
        let mut m = Link::new(link, seed);
        let mut f = |b: &[u8]| {
            m.to_server
                .decide(Instant::now(), b)
                .deliveries()
                .next()
                .unwrap()
                .after
        };
        (f(b"first") == HOLD, f(b"second") == HOLD)
    };
    let seed = (0..1000).find(|&s| held(s) == (true, false)).unwrap();
    for attempt in 1..=5 {
        let (r, server) = relay_with(link, seed, None);
        let client = socket();
        let before = Instant::now();
        client.send_to(b"first", r.local_addr()).unwrap();
        client.send_to(b"second", r.local_addr()).unwrap();
        let gap = before.elapsed();
        server
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let a = recv(&server).expect("the second datagram").0;
        let b = recv(&server).expect("the held-back datagram").0;
        let held_for = before.elapsed();
        if gap > HOLD / 10 {
            eprintln!("attempt {attempt}: the two sends were {gap:?} apart; again");
            continue;
        }
        assert_eq!(
            (a.as_slice(), b.as_slice()),
            (&b"second"[..], &b"first"[..])
        );
        assert!(held_for >= HOLD, "held back only {held_for:?}");
        let s = r.stop();
        assert_eq!((s.to_server.seen, s.to_server.reordered), (2, 1));
        return;
    }
    panic!(
        "five attempts in a row could not send two datagrams within {:?}",
        HOLD / 10
    );
}

#[test]
fn two_clients_get_their_own_replies() {
    let (r, server) = relay(Impairments::none());
    // An echo server that answers each datagram with "echo: " and its bytes.
    let echo = thread::spawn(move || {
        for _ in 0..20 {
            let (b, from) = recv(&server).expect("request");
            let mut reply = b"echo: ".to_vec();
            reply.extend_from_slice(&b);
            server.send_to(&reply, from).unwrap();
        }
    });
    let clients: Vec<_> = (0..2)
        .map(|c| {
            let addr = r.local_addr();
            thread::spawn(move || {
                let s = socket();
                for i in 0..10 {
                    let m = format!("client {c} says {i}");
                    s.send_to(m.as_bytes(), addr).unwrap();
                    let (b, from) = recv(&s).expect("reply");
                    assert_eq!(from, addr);
                    assert_eq!(b, format!("echo: {m}").into_bytes());
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    echo.join().unwrap();
    let s = r.stop();
    assert_eq!(s.clients, 2);
    assert_eq!((s.to_server.seen, s.to_client.seen), (20, 20));
}

#[test]
fn follows_a_server_that_answers_from_another_port() {
    let (r, server) = relay(Impairments::none());
    let client = socket();
    client.send_to(b"request", r.local_addr()).unwrap();
    let (_, upstream) = recv(&server).unwrap();
    // TFTP-style: the session continues on a new port of the same host.
    let session = socket();
    session.send_to(b"accept", upstream).unwrap();
    let (b, from) = recv(&client).unwrap();
    assert_eq!((b.as_slice(), from), (&b"accept"[..], r.local_addr()));
    client.send_to(b"ack", r.local_addr()).unwrap();
    let (b, from) = recv(&session).unwrap();
    assert_eq!((b.as_slice(), from), (&b"ack"[..], upstream));
    // A stranger on another host cannot inject into the client's mapping.
    let stranger = UdpSocket::bind("127.0.0.2:0");
    if let Ok(stranger) = stranger {
        stranger.send_to(b"spoof", upstream).unwrap();
        client.set_read_timeout(Some(QUIET)).unwrap();
        assert!(recv(&client).is_none());
        assert_eq!(r.stop().ignored, 1);
    }
}

#[test]
fn decisions_match_the_link_model() {
    // One model, two drivers: the relay's fates are exactly Link::new(cfg, seed)'s.
    let link = LinkConfig::symmetric(Impairments {
        drop: 0.4,
        ..Impairments::none()
    });
    let seed = 2024;
    let (r, server) = relay_with(link, seed, None);
    let client = socket();
    let n = 60;
    for i in 0..n {
        client.send_to(&msg(i), r.local_addr()).unwrap();
    }
    let mut model = Link::new(link, seed);
    let expected: Vec<Vec<u8>> = (0..n)
        .filter(|&i| {
            model
                .to_server
                .decide(Instant::now(), &msg(i))
                .deliveries()
                .count()
                == 1
        })
        .map(msg)
        .collect();
    // No quiet period to wait out: after the expected datagrams, the next one the model
    // lets through must come next (loopback keeps the order of one socket's datagrams).
    let mut next = n;
    while model
        .to_server
        .decide(Instant::now(), &msg(next))
        .deliveries()
        .count()
        == 0
    {
        next += 1;
    }
    for i in n..=next {
        client.send_to(&msg(i), r.local_addr()).unwrap();
    }
    server
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let got: Vec<Vec<u8>> = (0..=expected.len())
        .map(|_| recv(&server).expect("a datagram").0)
        .collect();
    assert_eq!(&got[..expected.len()], &expected[..]);
    assert_eq!(
        got[expected.len()],
        msg(next),
        "an extra datagram came through"
    );
    assert_eq!(r.stop().to_server, model.to_server.stats());
}

#[test]
fn idle_upstreams_are_closed() {
    // Counters only, never a snapshot: on a loaded machine the sweep may close the
    // upstream before this thread looks, so "one client active" cannot be asserted; that
    // one was opened, then closed, and no sooner than the idle timeout, can.
    let idle = Duration::from_millis(100);
    let (r, server) = relay_with(LinkConfig::default(), 1, Some(idle));
    let client = socket();
    let sent = Instant::now();
    client.send_to(b"hi", r.local_addr()).unwrap();
    recv(&server).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while r.stats().idle_closed == 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    let closed_after = sent.elapsed();
    let s = r.stats();
    assert_eq!((s.opened, s.clients, s.idle_closed), (1, 0, 1), "{s}");
    assert!(closed_after >= idle, "closed after {closed_after:?}");
    // The client comes back: a new upstream socket is opened for it.
    client.send_to(b"again", r.local_addr()).unwrap();
    assert_eq!(recv(&server).unwrap().0, b"again");
    assert_eq!(r.stop().opened, 2);
}

// ---- the binary ----

const BIN: &str = env!("CARGO_BIN_EXE_udpft-lossy");

#[test]
fn binary_prints_its_address_and_its_counters_on_sigterm() {
    let server = socket();
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--server"])
        .arg(server.local_addr().unwrap().to_string())
        .args(["--duplicate", "1", "--drop-to-client", "0", "--seed", "42"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert!(
        first.starts_with("udpft-lossy relaying 127.0.0.1:"),
        "{first}"
    );
    assert!(first.contains("(seed 42)"), "{first}");
    let addr: SocketAddr = first
        .split_whitespace()
        .nth(2)
        .unwrap()
        .parse()
        .expect("an address");
    let client = socket();
    for i in 0..5 {
        client.send_to(&msg(i), addr).unwrap();
    }
    let mut upstream = None;
    for _ in 0..10 {
        upstream = Some(recv(&server).expect("a copy").1);
    }
    for _ in 0..3 {
        server.send_to(b"reply", upstream.unwrap()).unwrap();
    }
    for _ in 0..6 {
        assert_eq!(recv(&client).expect("a reply copy").0, b"reply");
    }
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert!(status.success(), "{status:?}\n{rest}");
    assert!(
        rest.contains(
            "to server: 5 seen, 0 dropped, 5 duplicated, 0 reordered, 0 corrupted, 0 delayed"
        ),
        "{rest}"
    );
    assert!(
        rest.contains(
            "to client: 3 seen, 0 dropped, 3 duplicated, 0 reordered, 0 corrupted, 0 delayed"
        ),
        "{rest}"
    );
}

fn run_bin(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn binary_refuses_bad_settings_with_exit_2() {
    let base = ["--listen", "127.0.0.1:0", "--server", "127.0.0.1:9"];
    for (extra, needle) in [
        (&["--drop", "1.5"][..], "drop probability 1.5"),
        (&["--corrupt-to-client", "-0.25"][..], "-0.25"),
        (&["--delay", "soon"][..], "soon"),
        (&["--nonsense"][..], "--nonsense"),
        (
            &["--fault", "to-client:data:0:drop"][..],
            "not a number from 1",
        ),
        (
            &["--fault", "to-client:syn:1:drop"][..],
            "unknown packet type 'syn'",
        ),
        (&["--burst", "0.5"][..], "not P,R"),
        (&["--rate", "fast"][..], "not a rate"),
        (&["--queue", "5"][..], "--queue needs a --rate"),
    ] {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let (code, err) = run_bin(&args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    }
    // An address that cannot be bound (TEST-NET-1 is never local).
    let (code, err) = run_bin(&["--listen", "192.0.2.1:7", "--server", "127.0.0.1:9"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("cannot bind 192.0.2.1:7"), "{err}");
}
