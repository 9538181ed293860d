//! The TFTP side of the server's front door (`ServerEndpoint` with TFTP datagrams) on a
//! virtual clock: ports per transfer, ERROR 5 for strangers, the amplification limit,
//! the Sorcerer's Apprentice rule, the UEFI size probe, refusals, caps shared with
//! udpft, single-port mode, atomic uploads. No socket, no file: the test plays the
//! network, the driver's ports and the storage (TFTP.md §3).

use std::io::Cursor;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use udpft::engine::tftp::{
    PortRequest, TID_ERROR_BURST, TransferId, UNPROVEN_SENDS_PER_REQUEST, Via,
};
use udpft::engine::{EndpointConfig, IoOutcome, IoRequest, LogLevel, ServerEndpoint};
use udpft::sim::Capture;
use udpft::wire::Op;
use udpft::wire::tftp::{ErrorCode, Mode, OptionsBuf, Packet, Request};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn endpoint(cfg: EndpointConfig, now: Instant) -> ServerEndpoint {
    ServerEndpoint::new(
        EndpointConfig {
            seed: Some(12),
            ..cfg
        },
        now,
    )
}

fn rrq(name: &str, opts: &[(&str, &str)]) -> Vec<u8> {
    request(true, name, Mode::Octet, opts)
}

fn request(read: bool, name: &str, mode: Mode, opts: &[(&str, &str)]) -> Vec<u8> {
    let mut ob = OptionsBuf::new();
    for (n, v) in opts {
        ob.push(n.as_bytes(), v.as_bytes());
    }
    let r = Request {
        filename: name.as_bytes(),
        mode,
        options: ob.options(),
    };
    let p = if read { Packet::Rrq(r) } else { Packet::Wrq(r) };
    let mut b = vec![0u8; p.len()];
    p.emit(&mut b).unwrap();
    b
}

fn ack(block: u16) -> Vec<u8> {
    let mut b = vec![0u8; 4];
    Packet::Ack { block }.emit(&mut b).unwrap();
    b
}

fn data(block: u16, payload: &[u8]) -> Vec<u8> {
    let p = Packet::Data {
        block,
        data: payload,
    };
    let mut b = vec![0u8; p.len()];
    p.emit(&mut b).unwrap();
    b
}

fn error(code: u16, msg: &str) -> Vec<u8> {
    let p = Packet::Error {
        code: ErrorCode(code),
        message: msg.as_bytes(),
    };
    let mut b = vec![0u8; p.len()];
    p.emit(&mut b).unwrap();
    b
}

/// What the endpoint sends now, TFTP only: (socket, destination, bytes).
fn sent(ep: &mut ServerEndpoint, now: Instant) -> Vec<(Via, SocketAddr, Vec<u8>)> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 70_000];
    while let Some((via, to, n)) = ep.poll_transmit_tftp(now, &mut buf) {
        out.push((via, to, buf[..n].to_vec()));
    }
    out
}

/// The ports the endpoint asks for, opened at once (as the driver does).
fn open_ports(ep: &mut ServerEndpoint) -> Vec<PortRequest> {
    let reqs: Vec<PortRequest> = std::iter::from_fn(|| ep.poll_tftp_port()).collect();
    for r in &reqs {
        if let PortRequest::Open(id) = r {
            ep.tftp_port_ready(*id);
        }
    }
    reqs
}

fn ios(ep: &mut ServerEndpoint) -> Vec<IoRequest> {
    std::iter::from_fn(|| ep.poll_io()).collect()
}

fn logs(ep: &mut ServerEndpoint) -> Vec<String> {
    std::iter::from_fn(|| ep.poll_log())
        .filter(|l| l.level == LogLevel::Normal)
        .map(|l| l.text)
        .collect()
}

fn parse(b: &[u8]) -> Packet<'_> {
    Packet::parse(b).unwrap()
}

/// Sends `req` from `client` and answers the file operation with `content` (a get)
/// or a sink (a put); returns the transfer id and what was sent once its port opened.
fn open_transfer(
    ep: &mut ServerEndpoint,
    now: Instant,
    client: SocketAddr,
    req: &[u8],
    content: Option<&[u8]>,
    sink: Option<Capture>,
) -> (TransferId, Vec<(Via, SocketAddr, Vec<u8>)>) {
    ep.handle(now, client, req);
    let io = ios(ep);
    let [IoRequest::Open { ticket, .. }] = io[..] else {
        panic!("expected one Open, got {io:?}")
    };
    let outcome = match (content, sink) {
        (Some(c), _) => IoOutcome::Send(Box::new(Cursor::new(c.to_vec())), c.len() as u64),
        (None, Some(s)) => IoOutcome::Store(Box::new(s)),
        _ => unreachable!(),
    };
    ep.io_done(now, ticket, outcome);
    // Nothing goes out before the transfer's port is open.
    assert!(sent(ep, now).is_empty());
    assert_eq!(open_ports(ep), [PortRequest::Open(ticket)]);
    (ticket, sent(ep, now))
}

/// A get from its own port: DATA 1 at once (no options), the client's ACKs move it on,
/// a short block ends it; the port is given back and one log line names the protocol.
#[test]
fn a_get_runs_on_its_own_port_and_logs_one_line() {
    let t0 = Instant::now();
    let mut ep = endpoint(EndpointConfig::default(), t0);
    let client = addr("192.0.2.1:2000");
    let file: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
    let (id, out) = open_transfer(&mut ep, t0, client, &rrq("/boot/f", &[]), Some(&file), None);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].0, out[0].1), (Via::Port(id), client));
    assert_eq!(
        parse(&out[0].2),
        Packet::Data {
            block: 1,
            data: &file[..512]
        }
    );
    ep.handle_tftp(t0, Via::Port(id), client, &ack(1));
    let out = sent(&mut ep, t0);
    assert_eq!(
        parse(&out[0].2),
        Packet::Data {
            block: 2,
            data: &file[512..]
        }
    );
    ep.handle_tftp(t0, Via::Port(id), client, &ack(2));
    assert!(sent(&mut ep, t0).is_empty());
    assert_eq!(open_ports(&mut ep), [PortRequest::Close(id)]);
    let l = logs(&mut ep);
    assert_eq!(l.len(), 1, "{l:?}");
    assert!(
        l[0].contains("192.0.2.1:2000 tftp get 'boot/f' (octet, no options): 1000 B"),
        "{}",
        l[0]
    );
    assert!(l[0].ends_with(": ok"), "{}", l[0]);
    assert!(ep.is_idle());
}

/// Before the client has acknowledged anything, at most the first DATA and one resend
/// go out per request received, however long the timers run; a resent request allows
/// two more. The worst case: the smallest request served, answered by a full block.
#[test]
fn the_amplification_limit_holds_before_any_ack() {
    let t0 = Instant::now();
    let mut ep = endpoint(EndpointConfig::default(), t0);
    let victim = addr("198.51.100.7:69");
    let smallest = rrq("a", &[]);
    assert_eq!(smallest.len(), 10);
    let file = vec![7u8; 5000];
    let (id, mut out) = open_transfer(&mut ep, t0, victim, &smallest, Some(&file), None);
    let mut received = smallest.len();
    let mut now = t0;
    for round in 0..200 {
        now += Duration::from_millis(50);
        if ep.poll_timeout().is_some_and(|t| t <= now) {
            ep.handle_timeout(now);
        }
        out.extend(sent(&mut ep, now));
        if round == 100 {
            // The "client" repeats its request: two more datagrams allowed.
            ep.handle(now, victim, &smallest);
            received += smallest.len();
            out.extend(sent(&mut ep, now));
        }
    }
    let to_victim: Vec<_> = out.iter().filter(|(_, to, _)| *to == victim).collect();
    assert_eq!(
        to_victim.len() as u32,
        2 * UNPROVEN_SENDS_PER_REQUEST,
        "{} datagrams",
        to_victim.len()
    );
    assert!(
        to_victim
            .iter()
            .all(|(v, _, b)| *v == Via::Port(id) && b.len() == 516)
    );
    let bytes_out: usize = to_victim.iter().map(|(_, _, b)| b.len()).sum();
    let ratio = bytes_out as f64 / received as f64;
    assert!(ratio <= 103.2 + 1e-9, "ratio {ratio}");
    assert_eq!(ep.tftp_stats().resent_requests, 1);
    assert!(ep.tftp_stats().held_back > 0);
    // An ACK proves the client: the transfer then runs normally.
    ep.handle_tftp(now, Via::Port(id), victim, &ack(1));
    let out = sent(&mut ep, now);
    assert!(matches!(parse(&out[0].2), Packet::Data { block: 2, .. }));
}

/// A datagram at a transfer's port from anyone but its client gets ERROR 5 (at most a
/// burst, then one per interval) and leaves the transfer as it was.
#[test]
fn strangers_get_error_5_rate_limited_and_change_nothing() {
    let t0 = Instant::now();
    let mut ep = endpoint(EndpointConfig::default(), t0);
    let client = addr("192.0.2.1:2000");
    let (id, _) = open_transfer(&mut ep, t0, client, &rrq("f", &[]), Some(&[1u8; 700]), None);
    let mut errors = 0;
    for i in 0..100u16 {
        let stranger = addr(&format!("192.0.2.{}:{}", 2 + i % 3, 3000 + i));
        ep.handle_tftp(t0, Via::Port(id), stranger, &ack(1));
        for (via, to, b) in sent(&mut ep, t0) {
            assert_eq!((via, to), (Via::Port(id), stranger));
            let Packet::Error { code, .. } = parse(&b) else {
                panic!("{b:?}")
            };
            assert_eq!(code, ErrorCode::UNKNOWN_TID);
            errors += 1;
        }
    }
    assert_eq!(errors, TID_ERROR_BURST);
    assert_eq!(ep.tftp_stats().wrong_tid, 100);
    // An ERROR from a stranger is never answered, even with the rate to spare.
    let later = t0 + Duration::from_secs(5);
    ep.handle_tftp(later, Via::Port(id), addr("192.0.2.8:8"), &error(0, "x"));
    assert!(sent(&mut ep, later).is_empty());
    // The strangers' ACK 1 moved nothing: the client's does.
    ep.handle_tftp(t0, Via::Port(id), client, &ack(1));
    let out = sent(&mut ep, t0);
    assert_eq!(out.len(), 1);
    assert!(matches!(parse(&out[0].2), Packet::Data { block: 2, data } if data.len() == 188));
    // Later, one more ERROR 5 is allowed.
    let later = t0 + Duration::from_millis(150);
    ep.handle_tftp(later, Via::Port(id), addr("192.0.2.9:9"), &ack(1));
    assert_eq!(sent(&mut ep, later).len(), 1);
}

/// RFC 1123 §4.2.3: a duplicate ACK is never answered with data; only the timer resends.
#[test]
fn a_duplicate_ack_never_causes_a_resend() {
    let t0 = Instant::now();
    let mut ep = endpoint(EndpointConfig::default(), t0);
    let client = addr("192.0.2.1:2000");
    let (id, _) = open_transfer(
        &mut ep,
        t0,
        client,
        &rrq("f", &[]),
        Some(&[1u8; 2000]),
        None,
    );
    let t1 = t0 + Duration::from_micros(200);
    ep.handle_tftp(t1, Via::Port(id), client, &ack(1));
    assert_eq!(sent(&mut ep, t1).len(), 1); // DATA 2
    for _ in 0..5 {
        ep.handle_tftp(t1, Via::Port(id), client, &ack(1));
        assert!(
            sent(&mut ep, t1).is_empty(),
            "a duplicate ACK caused a send"
        );
    }
}

/// The UEFI probe: RRQ with tsize 0 (and blksize) → OACK with exactly those two; the
/// client's ERROR 8 ends it quietly (nothing resent, no "failed" line); the second RRQ
/// from the same port is served.
#[test]
fn the_uefi_size_probe_ends_quietly_and_the_real_request_is_served() {
    let t0 = Instant::now();
    let mut ep = endpoint(EndpointConfig::default(), t0);
    let client = addr("192.0.2.50:1024");
    let file = vec![3u8; 3000];
    let probe = rrq("bootx64.efi", &[("tsize", "0"), ("blksize", "1468")]);
    let (id, out) = open_transfer(&mut ep, t0, client, &probe, Some(&file), None);
    let Packet::Oack(o) = parse(&out[0].2) else {
        panic!()
    };
    let pairs: Vec<(&[u8], &[u8])> = o.iter().map(|o| (o.name, o.value)).collect();
    assert_eq!(
        pairs,
        [
            (&b"tsize"[..], &b"3000"[..]),
            (&b"blksize"[..], &b"1468"[..])
        ]
    );
    ep.handle_tftp(t0, Via::Port(id), client, &error(8, "tsize probe"));
    let mut now = t0;
    for _ in 0..50 {
        now += Duration::from_millis(100);
        if ep.poll_timeout().is_some_and(|t| t <= now) {
            ep.handle_timeout(now);
        }
        assert!(
            sent(&mut ep, now).is_empty(),
            "something sent after the probe ended"
        );
    }
    let l = logs(&mut ep);
    assert_eq!(l.len(), 1, "{l:?}");
    assert!(
        l[0].contains("size probe") && !l[0].contains("failed"),
        "{}",
        l[0]
    );
    assert_eq!(open_ports(&mut ep), [PortRequest::Close(id)]);
    // The real request.
    let real = rrq("bootx64.efi", &[("blksize", "1468")]);
    let (id2, out) = open_transfer(&mut ep, now, client, &real, Some(&file), None);
    assert_ne!(id, id2);
    let Packet::Oack(o) = parse(&out[0].2) else {
        panic!()
    };
    assert_eq!(o.as_bytes(), b"blksize\x001468\0", "only what was asked");
    ep.handle_tftp(now, Via::Port(id2), client, &ack(0));
    let out = sent(&mut ep, now);
    assert!(matches!(parse(&out[0].2), Packet::Data { block: 1, data } if data.len() == 1468));
}

/// Options are granted only when asked: an empty file's tsize is left out (curl
/// aborts on "tsize 0"), leaving no OACK at all; then DATA 1 (empty) answers at once.
#[test]
fn no_oack_for_nothing_granted() {
    let t0 = Instant::now();
    let mut ep = endpoint(EndpointConfig::default(), t0);
    let client = addr("192.0.2.1:2000");
    let (id, out) = open_transfer(
        &mut ep,
        t0,
        client,
        &rrq("empty", &[("tsize", "0"), ("multicast", "")]),
        Some(b""),
        None,
    );
    assert_eq!(
        parse(&out[0].2),
        Packet::Data {
            block: 1,
            data: b""
        }
    );
    ep.handle_tftp(t0, Via::Port(id), client, &ack(1));
    assert!(sent(&mut ep, t0).is_empty());
    assert!(logs(&mut ep)[0].ends_with("ok"));
}

/// Refusals from the listening port, each one ERROR with the right code, and no file
/// operation for the ones the policy decides: read-only write (4), mail (4), unknown
/// mode (4), a name that is not UTF-8 (2); storage's not found (1) and exists (6).
#[test]
fn refusals_carry_the_right_codes() {
    let t0 = Instant::now();
    let mut ep = endpoint(
        EndpointConfig {
            read_only: true,
            ..EndpointConfig::default()
        },
        t0,
    );
    let client = addr("192.0.2.1:2000");
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (request(false, "new", Mode::Octet, &[]), 4),
        (request(true, "f", Mode::Mail, &[]), 4),
        (b"\0\x01f\0binary\0".to_vec(), 4),
        (b"\0\x01caf\xe9\0octet\0".to_vec(), 2),
    ];
    for (req, code) in cases {
        ep.handle(t0, client, &req);
        assert!(ios(&mut ep).is_empty());
        let out = sent(&mut ep, t0);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].0, out[0].1), (Via::Listen, client));
        let Packet::Error { code: c, message } = parse(&out[0].2) else {
            panic!()
        };
        assert_eq!(c, ErrorCode(code), "{}", String::from_utf8_lossy(message));
    }
    let mut ep = endpoint(EndpointConfig::default(), t0);
    for (op, code, wire_code) in [
        (Op::Get, udpft::wire::ErrorCode::NotFound, 1),
        (Op::Put, udpft::wire::ErrorCode::AlreadyExists, 6),
        (Op::Get, udpft::wire::ErrorCode::AccessDenied, 2),
    ] {
        ep.handle(t0, client, &request(op == Op::Get, "x", Mode::Octet, &[]));
        let io = ios(&mut ep);
        let [IoRequest::Open { ticket, .. }] = io[..] else {
            panic!()
        };
        ep.io_done(t0, ticket, IoOutcome::Refused(code, "nope".into()));
        let out = sent(&mut ep, t0);
        assert_eq!((out[0].0, out[0].1), (Via::Listen, client));
        assert!(
            matches!(parse(&out[0].2), Packet::Error { code, .. } if code == ErrorCode(wire_code))
        );
        assert!(open_ports(&mut ep).is_empty(), "a refusal opened a port");
    }
}

/// A repeated request is a resend (no second file operation); a different one from the
/// same port supersedes the first.
#[test]
fn a_repeated_request_is_a_resend_and_a_new_one_supersedes() {
    let t0 = Instant::now();
    let mut ep = endpoint(EndpointConfig::default(), t0);
    let client = addr("192.0.2.1:2000");
    let req = rrq("f", &[]);
    ep.handle(t0, client, &req);
    ep.handle(t0, client, &req);
    let io = ios(&mut ep);
    assert_eq!(io.len(), 1, "{io:?}");
    let IoRequest::Open { ticket, .. } = io[0] else {
        panic!()
    };
    ep.io_done(
        t0,
        ticket,
        IoOutcome::Send(Box::new(Cursor::new(vec![1u8; 600])), 600),
    );
    open_ports(&mut ep);
    assert_eq!(sent(&mut ep, t0).len(), 1);
    ep.handle(t0, client, &req);
    assert!(ios(&mut ep).is_empty());
    assert!(
        sent(&mut ep, t0).is_empty(),
        "a resent request is answered by the timer"
    );
    ep.handle(t0, client, &rrq("g", &[]));
    assert_eq!(ios(&mut ep).len(), 1);
    assert_eq!(open_ports(&mut ep), [PortRequest::Close(ticket)]);
    assert!(logs(&mut ep).iter().any(|l| l.contains("superseded")));
}

/// An upload: ACK 0 from its port, every block acknowledged, the short block handed to
/// storage, and its ACK only once the file is stored (atomic: a name only when
/// complete); tsize binds the length.
#[test]
fn an_upload_is_acknowledged_only_once_stored() {
    let t0 = Instant::now();
    let mut ep = endpoint(EndpointConfig::default(), t0);
    let client = addr("192.0.2.1:2000");
    let sink = Capture::default();
    let (id, out) = open_transfer(
        &mut ep,
        t0,
        client,
        &request(false, "up", Mode::Octet, &[("tsize", "600")]),
        None,
        Some(sink.clone()),
    );
    let Packet::Oack(o) = parse(&out[0].2) else {
        panic!()
    };
    assert_eq!(o.as_bytes(), b"tsize\x00600\0");
    ep.handle_tftp(t0, Via::Port(id), client, &data(1, &[5u8; 512]));
    assert_eq!(parse(&sent(&mut ep, t0)[0].2), Packet::Ack { block: 1 });
    ep.handle_tftp(t0, Via::Port(id), client, &data(2, &[6u8; 88]));
    assert!(
        sent(&mut ep, t0).is_empty(),
        "the last ACK before the file is stored"
    );
    let io = ios(&mut ep);
    let [IoRequest::Commit { ticket, .. }] = io[..] else {
        panic!("{io:?}")
    };
    assert_eq!(ticket, id);
    // A resent last block meanwhile: still no ACK.
    ep.handle_tftp(t0, Via::Port(id), client, &data(2, &[6u8; 88]));
    assert!(sent(&mut ep, t0).is_empty());
    drop(io);
    ep.io_done(t0, id, IoOutcome::Committed(Ok(())));
    assert_eq!(parse(&sent(&mut ep, t0)[0].2), Packet::Ack { block: 2 });
    assert_eq!(sink.contents().len(), 600);
    assert!(logs(&mut ep)[0].contains("tftp put 'up' (octet, tsize 600): 600 B"));
    // More than tsize: refused as disk full, nothing stored.
    let sink = Capture::default();
    let client = addr("192.0.2.1:2001");
    let (id, _) = open_transfer(
        &mut ep,
        t0,
        client,
        &request(false, "up2", Mode::Octet, &[("tsize", "10")]),
        None,
        Some(sink.clone()),
    );
    ep.handle_tftp(t0, Via::Port(id), client, &data(1, &[5u8; 20]));
    let out = sent(&mut ep, t0);
    assert!(matches!(parse(&out[0].2), Packet::Error { code, .. } if code == ErrorCode::DISK_FULL));
    assert!(!sink.is_committed());
}

/// Single-port mode: everything from the listening port, routed by the client's
/// address and port; a stray ACK from an unknown client is dropped, never answered.
#[test]
fn single_port_mode_routes_by_client_address() {
    let t0 = Instant::now();
    let mut ep = endpoint(
        EndpointConfig {
            tftp_single_port: true,
            ..EndpointConfig::default()
        },
        t0,
    );
    let a = addr("192.0.2.1:2000");
    let b = addr("192.0.2.1:2001");
    for (c, name) in [(a, "fa"), (b, "fb")] {
        ep.handle(t0, c, &rrq(name, &[]));
        let io = ios(&mut ep);
        let [IoRequest::Open { ticket, .. }] = io[..] else {
            panic!()
        };
        let content = vec![if c == a { 1u8 } else { 2 }; 700];
        ep.io_done(
            t0,
            ticket,
            IoOutcome::Send(Box::new(Cursor::new(content)), 700),
        );
        assert!(open_ports(&mut ep).is_empty());
        let out = sent(&mut ep, t0);
        assert_eq!((out[0].0, out[0].1), (Via::Listen, c));
    }
    ep.handle(t0, b, &ack(1));
    let out = sent(&mut ep, t0);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].1, b);
    assert!(matches!(parse(&out[0].2), Packet::Data { block: 2, data } if data[0] == 2));
    ep.handle(t0, addr("192.0.2.99:7"), &ack(1));
    assert!(sent(&mut ep, t0).is_empty());
}

/// TFTP and udpft transfers share the session caps: with room for two, a third TFTP
/// request is refused "busy" (ERROR 0), and so is one over the per-address limit.
#[test]
fn caps_count_tftp_transfers() {
    let t0 = Instant::now();
    let mut ep = endpoint(
        EndpointConfig {
            max_sessions: 2,
            max_per_address: 1,
            ..EndpointConfig::default()
        },
        t0,
    );
    ep.handle(t0, addr("192.0.2.1:1"), &rrq("a", &[]));
    ep.handle(t0, addr("192.0.2.1:2"), &rrq("b", &[]));
    ep.handle(t0, addr("192.0.2.2:1"), &rrq("c", &[]));
    ep.handle(t0, addr("192.0.2.3:1"), &rrq("d", &[]));
    assert_eq!(ios(&mut ep).len(), 2);
    let out = sent(&mut ep, t0);
    let refused: Vec<SocketAddr> = out
        .iter()
        .filter(|(_, _, b)| {
            matches!(parse(b), Packet::Error { code, message } if code == ErrorCode::UNDEFINED
                && String::from_utf8_lossy(message).contains("busy"))
        })
        .map(|(_, to, _)| *to)
        .collect();
    assert_eq!(refused, [addr("192.0.2.1:2"), addr("192.0.2.3:1")]);
    assert_eq!(ep.running(), 2);
}

/// With TFTP off, TFTP datagrams are dropped like any malformed one.
#[test]
fn tftp_can_be_turned_off() {
    let t0 = Instant::now();
    let mut ep = endpoint(
        EndpointConfig {
            tftp: false,
            ..EndpointConfig::default()
        },
        t0,
    );
    ep.handle(t0, addr("192.0.2.1:1"), &rrq("a", &[]));
    assert!(ios(&mut ep).is_empty() && sent(&mut ep, t0).is_empty());
    assert_eq!(ep.stats().malformed, 1);
}

/// windowsize: a write is granted up to the server's limit, and acknowledged as RFC
/// 7440 says (only the window's last block, then the end); a read is granted it too
/// (below, `a_windowed_read_*`); a window of blocks arrives whole and is stored.
#[test]
fn windowsize_is_granted_to_writes_and_reads() {
    let t0 = Instant::now();
    let mut ep = endpoint(
        EndpointConfig {
            tftp_max_window: 16,
            ..EndpointConfig::default()
        },
        t0,
    );
    let client = addr("192.0.2.1:2000");
    let sink = Capture::default();
    let (id, out) = open_transfer(
        &mut ep,
        t0,
        client,
        &request(
            false,
            "w",
            Mode::Octet,
            &[("blksize", "100"), ("windowsize", "8")],
        ),
        None,
        Some(sink.clone()),
    );
    let Packet::Oack(o) = parse(&out[0].2) else {
        panic!()
    };
    assert_eq!(o.as_bytes(), b"blksize\x00100\0windowsize\x008\0");
    // A whole window, then the short last block.
    let mut acks = Vec::new();
    for b in 1..=8u16 {
        ep.handle_tftp(t0, Via::Port(id), client, &data(b, &[b as u8; 100]));
        for (_, _, p) in sent(&mut ep, t0) {
            if let Packet::Ack { block } = parse(&p) {
                acks.push(block);
            }
        }
    }
    assert_eq!(acks, [8], "only the window's last block is acknowledged");
    ep.handle_tftp(t0, Via::Port(id), client, &data(9, b"end"));
    let io = ios(&mut ep);
    assert!(matches!(io[..], [IoRequest::Commit { .. }]), "{io:?}");
    ep.io_done(t0, id, IoOutcome::Committed(Ok(())));
    assert!(
        sent(&mut ep, t0)
            .iter()
            .any(|(_, _, p)| parse(p) == Packet::Ack { block: 9 })
    );
    assert_eq!(sink.contents().len(), 803);
    // A read asking for a window is granted it.
    let (_, out) = open_transfer(
        &mut ep,
        t0,
        addr("192.0.2.1:2001"),
        &rrq("r", &[("windowsize", "8")]),
        Some(&[0u8; 2000]),
        None,
    );
    let Packet::Oack(o) = parse(&out[0].2) else {
        panic!()
    };
    assert_eq!(o.as_bytes(), b"windowsize\x008\0");
}

/// A client that ignores repeated duplicates (atftp acknowledges one "extra" copy, then
/// only its own 5 s timer acknowledges again, and every packet restarts that timer):
/// after two resends of a block the server goes quiet for longer than that timer,
/// instead of resending every RTO for ever; the client's late ACK then moves it on.
#[test]
fn resends_go_quiet_long_enough_for_a_client_timer() {
    let t0 = Instant::now();
    let mut ep = endpoint(EndpointConfig::default(), t0);
    let client = addr("192.0.2.1:2000");
    let (id, _) = open_transfer(
        &mut ep,
        t0,
        client,
        &rrq("f", &[]),
        Some(&[9u8; 1500]),
        None,
    );
    let t1 = t0 + Duration::from_millis(1);
    ep.handle_tftp(t1, Via::Port(id), client, &ack(1));
    let mut copies = Vec::new();
    let mut now = t1;
    while now < t1 + Duration::from_secs(12) {
        if ep.poll_timeout().is_some_and(|t| t <= now) {
            ep.handle_timeout(now);
        }
        for (_, _, p) in sent(&mut ep, now) {
            if matches!(parse(&p), Packet::Data { block: 2, .. }) {
                copies.push(now - t1);
            }
        }
        now += Duration::from_millis(10);
    }
    // Three copies at once (the first and two resends), then none for the quiet time.
    assert!(copies.len() >= 4, "{copies:?}");
    assert!(copies[2] < Duration::from_secs(4), "{copies:?}");
    assert!(
        copies[3] - copies[2] >= udpft::engine::tftp::request::QUIET,
        "{copies:?}"
    );
    let late = t1 + Duration::from_secs(12);
    ep.handle_tftp(late, Via::Port(id), client, &ack(2));
    let out = sent(&mut ep, late);
    assert!(matches!(parse(&out[0].2), Packet::Data { block: 3, .. }));
}

/// A strict RFC 7440 client (§4), as the test plays it: it keeps no block past a gap,
/// acknowledges only a window's last block, the last in-order block once per gap, the
/// short last block, and (its timer) the last in-order block after a silence; it
/// ignores duplicates except of the last block (its final ACK was lost).
struct Rfc7440Client {
    window: u16,
    got: Vec<u8>,
    expected: u16,
    since_ack: u16,
    gap_acked: bool,
    done: bool,
    last_heard: Instant,
}

impl Rfc7440Client {
    /// Takes one DATA; returns the ACK to send, if any.
    fn data(&mut self, now: Instant, block: u16, payload: &[u8], blksize: usize) -> Option<u16> {
        self.last_heard = now;
        if self.done {
            return (block == self.expected - 1).then_some(block);
        }
        if block != self.expected {
            let gap = block > self.expected;
            let first = gap && !std::mem::replace(&mut self.gap_acked, true);
            return first.then_some(self.expected - 1);
        }
        self.got.extend_from_slice(payload);
        self.expected += 1;
        self.since_ack += 1;
        self.gap_acked = false;
        if payload.len() < blksize {
            self.done = true;
            return Some(block);
        }
        if self.since_ack == self.window {
            self.since_ack = 0;
            return Some(block);
        }
        None
    }
}

/// A windowed read (windowsize 16 granted) through 10% loss each way, on the virtual
/// clock, against a client that follows RFC 7440 to the letter: the server's fixed
/// window and go-back-N resends bring the file across byte for byte, and the server
/// logs the transfer as complete.
#[test]
fn a_windowed_read_through_10_percent_loss_completes_byte_exact() {
    let t0 = Instant::now();
    let mut ep = endpoint(
        EndpointConfig {
            tftp_max_window: 16,
            ..EndpointConfig::default()
        },
        t0,
    );
    let client = addr("192.0.2.1:2000");
    let file: Vec<u8> = (0..300_000u32).map(|i| (i * 31 % 251) as u8).collect();
    let (id, out) = open_transfer(
        &mut ep,
        t0,
        client,
        &rrq("r", &[("blksize", "512"), ("windowsize", "16")]),
        Some(&file),
        None,
    );
    let Packet::Oack(o) = parse(&out[0].2) else {
        panic!("{:?}", parse(&out[0].2))
    };
    assert_eq!(o.as_bytes(), b"blksize\x00512\0windowsize\x0016\0");
    let mut c = Rfc7440Client {
        window: 16,
        got: Vec::new(),
        expected: 1,
        since_ack: 0,
        gap_acked: false,
        done: false,
        last_heard: t0,
    };
    // A seeded generator: the same losses on every run.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut lost = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed.is_multiple_of(10)
    };
    let (mut dropped, mut datas) = (0u32, 0u32);
    let client_timer = Duration::from_millis(50);
    let mut now = t0;
    let mut to_server = vec![ack(0)];
    let mut line = None;
    // A round trip of 200 µs per step, bounded in steps and in virtual time.
    for _ in 0..2_000_000 {
        for a in std::mem::take(&mut to_server) {
            if lost() {
                dropped += 1;
            } else {
                ep.handle_tftp(now, Via::Port(id), client, &a);
            }
        }
        now += Duration::from_micros(100);
        if ep.poll_timeout().is_some_and(|t| t <= now) {
            ep.handle_timeout(now);
        }
        for (via, to, b) in sent(&mut ep, now) {
            assert_eq!((via, to), (Via::Port(id), client));
            if let Packet::Data { block, data } = parse(&b) {
                datas += 1;
                if lost() {
                    dropped += 1;
                } else if let Some(n) = c.data(now, block, data, 512) {
                    to_server.push(ack(n));
                }
            }
        }
        now += Duration::from_micros(100);
        if !c.done && now >= c.last_heard + client_timer {
            c.last_heard = now;
            to_server.push(ack(c.expected - 1));
        }
        let _ = open_ports(&mut ep);
        if let Some(l) = logs(&mut ep).into_iter().next() {
            line = Some(l);
            break;
        }
        assert!(now < t0 + Duration::from_secs(600), "no end in 600 s");
    }
    let line = line.expect("the server logged the transfer's end");
    assert!(c.done, "the client got the short last block");
    assert!(
        c.got == file,
        "{} of {} bytes, not byte-exact",
        c.got.len(),
        file.len()
    );
    assert!(line.contains("windowsize 16"), "{line}");
    assert!(line.ends_with(": ok"), "{line}");
    assert!(
        dropped > 50,
        "the link lost {dropped}: the test tests nothing"
    );
    let blocks = file.len() as u32 / 512 + 1;
    assert!(
        datas > blocks,
        "{datas} DATA for {blocks} blocks: nothing was resent?"
    );
    eprintln!(
        "{blocks} blocks, {datas} DATA sent, {dropped} lost, {:.1} s virtual",
        (now - t0).as_secs_f64()
    );
}
