//! The server's front door, `engine::ServerEndpoint`, on a virtual clock: the address
//! check, replays, caps, and the exhaustion patterns that starved udpftd's admission
//! (issue 9). No socket, no file: the test plays the network and the storage.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use udpft::engine::{EndpointConfig, IoOutcome, IoRequest, ServerEndpoint, Status};
use udpft::wire::{self, Datagram, ErrorCode, Message, Op, Token};

mod common;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn request(op: Op, name: &str, nonce: u64, token: Option<Token>) -> Vec<u8> {
    common::request_bytes(op, name, nonce, 512, token)
}

/// Everything the endpoint sends now: (destination, datagram bytes).
fn sent(ep: &mut ServerEndpoint, now: Instant) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; wire::MAX_DATAGRAM];
    while let Some((to, n)) = ep.poll_transmit(now, &mut buf) {
        out.push((to, buf[..n].to_vec()));
    }
    out
}

fn kinds(out: &[(SocketAddr, Vec<u8>)]) -> Vec<(SocketAddr, wire::Kind)> {
    out.iter()
        .map(|(to, b)| (*to, Datagram::parse(b).unwrap().kind()))
        .collect()
}

fn ios(ep: &mut ServerEndpoint) -> Vec<IoRequest> {
    std::iter::from_fn(|| ep.poll_io()).collect()
}

/// Asks from `from` and returns the token of the RETRY that comes back.
fn token(ep: &mut ServerEndpoint, now: Instant, from: SocketAddr, op: Op, nonce: u64) -> Token {
    ep.handle(now, from, &request(op, "f", nonce, None));
    let out = sent(ep, now);
    assert_eq!(out.len(), 1, "{:?}", kinds(&out));
    match Datagram::parse(&out[0].1).unwrap().message {
        Message::Retry(t) => t,
        m => panic!("expected a RETRY, got {m:?}"),
    }
}

fn endpoint(cfg: EndpointConfig, now: Instant) -> ServerEndpoint {
    ServerEndpoint::new(
        EndpointConfig {
            allow_delete: true,
            allow_exit: true,
            seed: Some(7),
            ..cfg
        },
        now,
    )
}

/// One blind, spoofed datagram deleted a file and stopped a server. Now a REQUEST
/// without a token gets a RETRY (sent to the spoofed address, so the attacker never
/// sees it) and nothing else happens; a token made for one address works from no other.
#[test]
fn blind_spoofed_delete_and_exit_do_nothing() {
    let t0 = Instant::now();
    let mut ep = endpoint(EndpointConfig::default(), t0);
    let victim = addr("192.0.2.10:5000");
    for (nonce, op) in [(1, Op::Delete), (2, Op::Exit)] {
        ep.handle(t0, victim, &request(op, "precious", nonce, None));
        let out = sent(&mut ep, t0);
        assert_eq!(kinds(&out), [(victim, wire::Kind::Retry)]);
        // A RETRY is far smaller than the REQUEST that caused it (no amplification).
        assert!(out[0].1.len() * 4 <= request(op, "precious", nonce, None).len());
        assert!(
            ios(&mut ep).is_empty(),
            "a file operation before the address check"
        );
        assert!(!ep.is_finished(t0), "an unproven exit took effect");
    }
    // The attacker guesses a token, or replays one made for someone else.
    let real = token(&mut ep, t0, addr("192.0.2.11:5000"), Op::Delete, 3);
    for (from, t) in [
        (victim, [0u8; 16]),
        (victim, real),
        (addr("192.0.2.11:5001"), real),
    ] {
        ep.handle(t0, from, &request(Op::Delete, "f", 3, Some(t)));
        assert_eq!(kinds(&sent(&mut ep, t0)), [(from, wire::Kind::Retry)]);
        assert!(ios(&mut ep).is_empty());
    }
    assert_eq!(ep.stats().sessions, 0);
    assert!(ep.is_idle());
}

/// A delete is carried out once per request: a replay of the proven REQUEST (same
/// address, nonce and token) is answered, never acted on again, and once its token has
/// expired it only gets a RETRY.
#[test]
fn a_replayed_delete_acts_once() {
    let t0 = Instant::now();
    let mut ep = endpoint(EndpointConfig::default(), t0);
    let client = addr("192.0.2.20:4000");
    let t = token(&mut ep, t0, client, Op::Delete, 9);
    let proven = request(Op::Delete, "f", 9, Some(t));
    ep.handle(t0, client, &proven);
    let io = ios(&mut ep);
    assert!(
        matches!(io[..], [IoRequest::Open { op: Op::Delete, .. }]),
        "{io:?}"
    );
    let IoRequest::Open { ticket, .. } = io.into_iter().next().unwrap() else {
        unreachable!()
    };
    ep.io_done(t0, ticket, IoOutcome::Done);
    assert_eq!(kinds(&sent(&mut ep, t0)), [(client, wire::Kind::Accept)]);
    for later in [1, 2, 4, 6, 10] {
        let now = t0 + Duration::from_secs(later);
        // As the driver does: due timers first, then what arrived.
        if now.poll_due(&ep) {
            ep.handle_timeout(now);
        }
        sent(&mut ep, now);
        ep.handle(now, client, &proven);
        let out = kinds(&sent(&mut ep, now));
        assert!(
            ios(&mut ep).is_empty(),
            "the replay at {later} s acted again"
        );
        let want = if later < 5 {
            wire::Kind::Accept
        } else {
            wire::Kind::Retry
        };
        assert!(out.contains(&(client, want)), "at {later} s: {out:?}");
    }
    assert_eq!(ep.stats().sessions, 1);
}

/// Checks whether an endpoint timer is due (a small helper trait for readability).
trait Due {
    fn poll_due(&self, ep: &ServerEndpoint) -> bool;
}
impl Due for Instant {
    fn poll_due(&self, ep: &ServerEndpoint) -> bool {
        ep.poll_timeout().is_some_and(|t| t <= *self)
    }
}

/// 64 put REQUESTs re-sent every 8 s held all 64 slots for as long as the attacker
/// liked (a duplicate REQUEST refreshed the idle timer). Now: blind, they hold nothing;
/// proven but never sending a block, each ends after the give-up time whatever it
/// resends, and a legitimate client is served throughout.
#[test]
fn resent_requests_hold_nothing_and_refresh_nothing() {
    let t0 = Instant::now();
    let give_up = Duration::from_secs(30);
    let mut ep = endpoint(
        EndpointConfig {
            max_sessions: 64,
            max_per_address: 64,
            ..EndpointConfig::default()
        },
        t0,
    );
    // Blind: spoofed sources, never a token.
    for round in 0..10u64 {
        let now = t0 + Duration::from_secs(8 * round);
        for i in 0..64u64 {
            let from = addr(&format!("198.51.100.{}:{}", 1 + i, 1000 + i));
            ep.handle(now, from, &request(Op::Put, "x", 100 + i, None));
        }
        sent(&mut ep, now);
        assert!(ios(&mut ep).is_empty());
        assert_eq!(ep.running(), 0);
    }
    // Proven (the attacker's own address), then only resent REQUESTs every 8 s.
    let now = t0;
    let attacker = addr("203.0.113.5:7000");
    let mut puts = Vec::new();
    for i in 0..64u64 {
        let t = token(&mut ep, now, attacker, Op::Put, 500 + i);
        let r = request(Op::Put, &format!("p{i}"), 500 + i, Some(t));
        ep.handle(now, attacker, &r);
        for io in ios(&mut ep) {
            if let IoRequest::Open { ticket, .. } = io {
                ep.io_done(now, ticket, IoOutcome::Store(Box::new(Vec::new())));
            }
        }
        sent(&mut ep, now);
        puts.push(r);
    }
    sent(&mut ep, now);
    assert_eq!(ep.running(), 64);
    let mut now = t0;
    while now < t0 + give_up + Duration::from_secs(10) {
        now += Duration::from_secs(8);
        for r in &puts {
            ep.handle(now, attacker, r);
        }
        if now.poll_due(&ep) {
            ep.handle_timeout(now);
        }
        sent(&mut ep, now);
    }
    ep.handle_timeout(now);
    sent(&mut ep, now);
    assert_eq!(ep.running(), 0, "resent REQUESTs kept sessions alive");
    // Each abandoned upload's temporary file is dropped on an IO worker.
    let discarded = ios(&mut ep)
        .iter()
        .filter(|i| matches!(i, IoRequest::Discard { .. }))
        .count();
    assert_eq!(discarded, 64);
    // And a legitimate client is admitted at once.
    let good = addr("192.0.2.99:4444");
    let t = token(&mut ep, now, good, Op::Get, 42);
    ep.handle(now, good, &request(Op::Get, "f", 42, Some(t)));
    assert!(matches!(
        ios(&mut ep)[..],
        [IoRequest::Open { op: Op::Get, .. }]
    ));
}

/// Caps per address and in total; when full, a transfer that made no progress for 2 s
/// gives way to a new client (and is told so), a live one never does.
#[test]
fn caps_per_address_and_stalled_sessions_give_way() {
    let t0 = Instant::now();
    let mut ep = endpoint(
        EndpointConfig {
            max_sessions: 2,
            max_per_address: 1,
            ..EndpointConfig::default()
        },
        t0,
    );
    let open = |ep: &mut ServerEndpoint, now: Instant, from: SocketAddr, nonce: u64| {
        let t = token(ep, now, from, Op::Get, nonce);
        ep.handle(now, from, &request(Op::Get, "f", nonce, Some(t)));
        let io = ios(ep);
        for i in &io {
            if let IoRequest::Open { ticket, .. } = i {
                let src = std::io::Cursor::new(vec![1u8; 100_000]);
                ep.io_done(now, *ticket, IoOutcome::Send(Box::new(src), 100_000));
            }
        }
        let out = sent(ep, now);
        (io.len(), out)
    };
    let a = addr("192.0.2.1:1");
    let (n, _) = open(&mut ep, t0, a, 1);
    assert_eq!(n, 1);
    // A second transfer from the same IP: over the per-address cap.
    let (n, out) = open(&mut ep, t0, addr("192.0.2.1:2"), 2);
    assert_eq!(n, 0);
    let err = Datagram::parse(&out[0].1).unwrap();
    assert!(matches!(
        err.message,
        Message::Error {
            code: ErrorCode::Busy,
            ..
        }
    ));
    let (n, _) = open(&mut ep, t0, addr("192.0.2.2:1"), 3);
    assert_eq!(n, 1, "another address is admitted");
    assert_eq!(ep.running(), 2);
    // Full. A third client within 2 s: busy (both transfers are young).
    let (n, _) = open(&mut ep, t0 + Duration::from_secs(1), addr("192.0.2.3:1"), 4);
    assert_eq!(n, 0);
    // Three seconds on, neither client has acknowledged anything: one of them (both
    // stalled as long) gives way, and is told why.
    let later = t0 + Duration::from_secs(3);
    let (n, out) = open(&mut ep, later, addr("192.0.2.3:1"), 5);
    assert_eq!(n, 1, "a stalled session did not give way");
    let stalled = [a, addr("192.0.2.2:1")];
    assert!(
        out.iter().any(|(to, b)| stalled.contains(to)
            && matches!(
                Datagram::parse(b).unwrap().message,
                Message::Error {
                    code: ErrorCode::Aborted,
                    ..
                }
            )),
        "the evicted client was not told: {:?}",
        kinds(&out)
    );
    assert_eq!(ep.stats().evicted, 1);
}

/// Progress means moving data, not just answering: with the server full, a client
/// that acknowledges one block every 1.5 s (the attack that held every slot under the
/// 2 s mark) gives way to a newcomer; one that keeps data flowing does not.
#[test]
fn a_trickling_client_counts_as_stalled_a_flowing_one_does_not() {
    let t0 = Instant::now();
    let mut ep = endpoint(
        EndpointConfig {
            max_sessions: 2,
            max_per_address: 1,
            ..EndpointConfig::default()
        },
        t0,
    );
    let (trickle, flow, newcomer) = (
        addr("192.0.2.1:1"),
        addr("192.0.2.2:1"),
        addr("192.0.2.3:1"),
    );
    let mut pending: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
    for (from, nonce) in [(trickle, 1), (flow, 2)] {
        let t = token(&mut ep, t0, from, Op::Get, nonce);
        ep.handle(t0, from, &request(Op::Get, "f", nonce, Some(t)));
        for i in ios(&mut ep) {
            if let IoRequest::Open { ticket, .. } = i {
                let src = std::io::Cursor::new(vec![1u8; 50_000_000]);
                ep.io_done(t0, ticket, IoOutcome::Send(Box::new(src), 50_000_000));
            }
        }
        pending.extend(sent(&mut ep, t0));
    }
    // Acknowledge what each was sent: the flowing client at once, every 100 ms; the
    // trickling one only every 1.5 s (its latest packet).
    let ack = |b: &[u8]| {
        let d = Datagram::parse(b).unwrap();
        let mut out = vec![0u8; 64];
        let n = Datagram {
            session: d.session,
            seq: d.seq,
            message: Message::Ack,
        }
        .emit(&mut out)
        .unwrap();
        out.truncate(n);
        out
    };
    let mut last_trickle: Option<Vec<u8>> = None;
    let mut now = t0;
    for step in 1..=60 {
        now = t0 + Duration::from_millis(100 * step);
        for (to, b) in std::mem::take(&mut pending) {
            if to == flow {
                ep.handle(now, flow, &ack(&b));
            } else {
                last_trickle = Some(b);
            }
        }
        if step % 15 == 0
            && let Some(b) = last_trickle.take()
        {
            ep.handle(now, trickle, &ack(&b));
        }
        if ep.poll_timeout().is_some_and(|t| t <= now) {
            ep.handle_timeout(now);
        }
        pending.extend(sent(&mut ep, now));
    }
    assert_eq!(ep.running(), 2, "both still running after 6 s");
    let t = token(&mut ep, now, newcomer, Op::Get, 3);
    ep.handle(now, newcomer, &request(Op::Get, "f", 3, Some(t)));
    assert!(
        matches!(ios(&mut ep)[..], [IoRequest::Open { .. }]),
        "the newcomer was not admitted"
    );
    let out = sent(&mut ep, now);
    let told = |who: SocketAddr| {
        out.iter().any(|(to, b)| {
            *to == who
                && matches!(
                    Datagram::parse(b).unwrap().message,
                    Message::Error {
                        code: ErrorCode::Aborted,
                        ..
                    }
                )
        })
    };
    assert!(told(trickle), "the trickling client did not give way");
    assert!(!told(flow), "the flowing client was dropped");
    assert_eq!(ep.stats().evicted, 1);
}

/// A session's log line names what happened, and the simulator's transfers use this
/// same endpoint (tests/sim_transfers.rs): here, one whole get through it, lossless,
/// shows no resend at all (DONE is answered by WAIT while the client stores).
#[test]
fn a_lossless_get_through_the_endpoint_resends_nothing() {
    use udpft::engine::{ClientSession, Config, Job};
    let t0 = Instant::now();
    let mut ep = endpoint(
        EndpointConfig {
            keep_outcomes: true,
            ..EndpointConfig::default()
        },
        t0,
    );
    let server = addr("192.0.2.200:6969");
    let client_addr = addr("192.0.2.100:5555");
    let sink = udpft::sim::Capture::default();
    let mut c = ClientSession::new(
        server,
        77,
        "f",
        Job::Get(Box::new(sink.clone())),
        Config::default(),
    )
    .unwrap();
    let data = vec![3u8; 50_000];
    let mut now = t0;
    let mut buf = vec![0u8; wire::MAX_DATAGRAM];
    for _ in 0..10_000 {
        now += Duration::from_micros(50);
        while let Some(b) = c.poll_transmit(now) {
            let b = b.to_vec();
            ep.handle(now, client_addr, &b);
        }
        for io in ios(&mut ep) {
            match io {
                IoRequest::Open { ticket, .. } => ep.io_done(
                    now,
                    ticket,
                    IoOutcome::Send(Box::new(std::io::Cursor::new(data.clone())), 50_000),
                ),
                IoRequest::Commit { ticket, .. } => {
                    ep.io_done(now, ticket, IoOutcome::Committed(Ok(())))
                }
                IoRequest::Discard { .. } => {}
            }
        }
        while let Some((_, n)) = ep.poll_transmit(now, &mut buf) {
            c.handle_datagram(now, &buf[..n]);
        }
        // The client stores what it verified a little later (a real disk): its WAIT
        // keeps the server from resending DONE meanwhile.
        if let Some(mut s) = c.poll_commit() {
            while let Some(b) = c.poll_transmit(now) {
                let b = b.to_vec();
                ep.handle(now, client_addr, &b);
            }
            while let Some((_, n)) = ep.poll_transmit(now, &mut buf) {
                c.handle_datagram(now, &buf[..n]);
            }
            now += Duration::from_millis(50);
            let r = s.commit();
            c.commit_done(now, r);
        }
        if ep.poll_timeout().is_some_and(|t| t <= now) {
            ep.handle_timeout(now);
        }
        if c.poll_timeout().is_some_and(|t| t <= now) {
            c.handle_timeout(now);
        }
        if matches!(c.status(), Status::Closed) && ep.is_idle() {
            break;
        }
    }
    assert_eq!(sink.contents(), data);
    let ended = ep.poll_ended().expect("the session ended");
    assert_eq!(ended.status, Status::Closed);
    assert_eq!(ended.stats.resent, 0, "a lossless get resent something");
    assert_eq!(c.stats().resent, 0);
}
