//! Scripted faults (`--fault DIRECTION:KIND:N:ACTION`) do exactly what they name: on the
//! link model directly, in whole transfers on the simulator's virtual clock, and
//! through the real relay.

use std::io::Cursor;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use udpft::engine::{Config, ErrorCode, Job, Status, TransferError};
use udpft::link::{Direction, Fault, FaultAction, Impairments, LinkConfig, Loss};
use udpft::net::parse_duration;
use udpft::net::relay::{Relay, RelayConfig};
use udpft::sim::{self, Capture, ServerPlan, SimConfig, SimOutcome};
use udpft::wire::{Accept, Datagram, Kind, Message, Op, Request};

fn fault(s: &str) -> Fault {
    Fault::parse(s, parse_duration).unwrap()
}

/// One valid datagram of each kind, numbered `seq`.
fn datagram(kind: Kind, seq: u64) -> Vec<u8> {
    let message = match kind {
        Kind::Request => Message::Request(Request {
            token: None,
            op: Op::Get,
            block_size: 512,
            size: 0,
            name: "f",
            window: 1,
        }),
        Kind::Accept => Message::Accept(Accept {
            nonce: 7,
            op: Op::Get,
            block_size: 512,
            size: 10,
            window: 1,
        }),
        Kind::Data => Message::Data(b"some bytes"),
        Kind::Ack => Message::Ack,
        Kind::Done => Message::Done {
            length: 10,
            crc: 0x1234,
        },
        Kind::Error => Message::Error {
            code: ErrorCode::NotFound,
            message: "no",
        },
        Kind::Retry => Message::Retry([9; udpft::wire::TOKEN_LEN]),
        Kind::Wait => Message::Wait,
    };
    let seq = match kind {
        Kind::Request | Kind::Accept | Kind::Retry => 0,
        _ => seq,
    };
    let mut buf = vec![0u8; 2048];
    let n = Datagram {
        session: 42,
        seq,
        message,
    }
    .emit(&mut buf)
    .unwrap();
    buf.truncate(n);
    buf
}

const KINDS: [(Kind, &str); 8] = [
    (Kind::Request, "request"),
    (Kind::Retry, "retry"),
    (Kind::Accept, "accept"),
    (Kind::Data, "data"),
    (Kind::Ack, "ack"),
    (Kind::Wait, "wait"),
    (Kind::Done, "done"),
    (Kind::Error, "error"),
];

/// Datagrams per round of [`traffic`]: one of every kind and one that is not udpft.
const ROUND: usize = KINDS.len() + 1;

/// Two of every kind with something that is not udpft between the rounds.
fn traffic() -> Vec<(Option<Kind>, Vec<u8>)> {
    let mut t = Vec::new();
    for round in 1..=2 {
        for (k, _) in KINDS {
            t.push((Some(k), datagram(k, round)));
        }
        t.push((None, b"not udpft at all".to_vec()));
    }
    t
}

fn bits_differing(a: &[u8], b: &[u8]) -> u32 {
    a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum()
}

/// Runs `traffic()` through one direction with `script` and checks that the datagram
/// at index `target` got exactly `action` and every other one went through untouched.
fn check_one(script: &str, target: usize) {
    let f = fault(script);
    let mut imp = Impairments::none();
    imp.faults.push(f).unwrap();
    let mut dir = Direction::new(imp, 9);
    let now = Instant::now();
    for (i, (kind, bytes)) in traffic().into_iter().enumerate() {
        let fate = dir.decide(now, &bytes);
        assert_eq!(fate.number, i as u64 + 1);
        assert_eq!(fate.packet.map(|(k, _)| k), kind, "{script}: #{i}");
        let copies: Vec<_> = fate.deliveries().collect();
        if i != target {
            assert_eq!(fate.fault, None, "{script} hit #{i}");
            assert_eq!(copies.len(), 1, "{script}: #{i} {fate}");
            assert_eq!(
                (copies[0].after, copies[0].corruption),
                (Duration::ZERO, None)
            );
            assert_eq!(fate.to_string(), "forwarded");
            continue;
        }
        assert_eq!(fate.fault, Some(f), "{script} missed #{i}");
        match f.action {
            FaultAction::Drop => {
                assert!(copies.is_empty());
                assert_eq!(fate.loss, Some(Loss::Fault));
                assert_eq!(fate.to_string(), format!("dropped (fault {f})"));
            }
            FaultAction::Duplicate => {
                assert_eq!(copies.len(), 2);
                assert!(
                    copies
                        .iter()
                        .all(|c| c.after.is_zero() && c.corruption.is_none())
                );
                assert_eq!(fate.to_string(), format!("duplicated (fault {f})"));
            }
            FaultAction::Corrupt => {
                assert_eq!(copies.len(), 1);
                let c = copies[0].corruption.expect("corrupted");
                let mut damaged = bytes.clone();
                c.apply(&mut damaged);
                assert_eq!(bits_differing(&bytes, &damaged), 1, "exactly one bit");
                assert_eq!(c.bits().len(), 1);
                assert!(
                    fate.to_string()
                        .starts_with(&format!("bit {} flipped", c.bits()[0]))
                );
                // A flipped bit in a udpft datagram never passes the CRC32.
                if kind.is_some() {
                    assert!(Datagram::parse(&damaged).is_err());
                }
            }
            FaultAction::Delay(d) => {
                assert_eq!(copies.len(), 1);
                assert_eq!((copies[0].after, copies[0].corruption), (d, None));
            }
        }
    }
    let s = dir.stats();
    assert_eq!(s.faults, 1, "{script}");
    assert_eq!(s.seen, 2 * ROUND as u64);
}

#[test]
fn every_kind_and_every_action_hits_exactly_its_datagram() {
    for (ki, (_, word)) in KINDS.iter().enumerate() {
        for action in ["drop", "duplicate", "corrupt", "delay=3ms"] {
            // The first of that kind is at index ki, the second one round later.
            check_one(&format!("to-server:{word}:1:{action}"), ki);
            check_one(&format!("to-server:{word}:2:{action}"), ROUND + ki);
        }
    }
    // `any` counts every datagram, those that are not udpft too (the last of a round).
    for action in ["drop", "duplicate", "corrupt", "delay=3ms"] {
        check_one(&format!("to-server:any:{ROUND}:{action}"), ROUND - 1);
        check_one(&format!("to-server:any:{}:{action}", ROUND + 3), ROUND + 2);
    }
}

#[test]
fn a_fault_changes_no_other_decision_and_targets_its_direction_only() {
    // With random impairments on, adding a fault changes the fate of its datagram only.
    let imp = Impairments {
        drop: 0.3,
        duplicate: 0.2,
        corrupt: 0.2,
        jitter: Duration::from_micros(100),
        ..Impairments::none()
    };
    let link = LinkConfig::symmetric(imp);
    let scripted = link
        .with_faults(&[
            fault("to-server:data:2:drop"),
            fault("to-client:ack:1:drop"),
        ])
        .unwrap();
    let now = Instant::now();
    let mut plain = udpft::link::Link::new(link, 5);
    let mut faulty = udpft::link::Link::new(scripted, 5);
    plain.to_server.classify(true);
    for (i, (_, bytes)) in traffic().into_iter().enumerate() {
        let a = plain.to_server.decide(now, &bytes);
        let b = faulty.to_server.decide(now, &bytes);
        // The second DATA: the fault's target.
        let data = KINDS.iter().position(|(k, _)| *k == Kind::Data).unwrap();
        if i == ROUND + data {
            assert!(b.is_lost() && b.fault.is_some());
        } else {
            assert_eq!(a, b, "#{i}");
        }
    }
    // The to-client fault is in the other direction: to-server ACKs are untouched.
    assert_eq!(faulty.to_server.stats().faults, 1);
    assert_eq!(faulty.to_client.stats().faults, 0);
}

// ---- whole transfers on the virtual clock ----

fn traced_cfg(faults: &[&str]) -> SimConfig {
    let engine = Config {
        block_size: 512,
        give_up: Duration::from_secs(2),
        trace: true,
        ..Config::default()
    };
    let link = LinkConfig::symmetric(Impairments {
        delay: Duration::from_micros(100),
        ..Impairments::none()
    });
    let faults: Vec<Fault> = faults.iter().map(|f| fault(f)).collect();
    SimConfig {
        link: link.with_faults(&faults).unwrap(),
        client: engine,
        server: engine,
        ..SimConfig::default()
    }
}

fn file() -> Vec<u8> {
    (0..1500u32).map(|i| (i * 31) as u8).collect()
}

fn get(faults: &[&str]) -> (SimOutcome, Capture) {
    let cap = Capture::default();
    let bytes = file();
    let out = sim::run(
        traced_cfg(faults),
        "f",
        Job::Get(Box::new(cap.clone())),
        ServerPlan::Serve(Box::new(Cursor::new(bytes.clone())), bytes.len() as u64),
    );
    (out, cap)
}

fn has(o: &SimOutcome, needle: &str) {
    assert!(
        o.trace.iter().any(|l| l.contains(needle)),
        "no {needle:?} in\n{}",
        o.trace.join("\n")
    );
}

/// The link log's record of the datagram the fault hit: exactly one, of that kind.
fn hit(o: &SimOutcome, kind: Kind) -> udpft::link::Fate {
    let hits: Vec<_> = o
        .link_log
        .iter()
        .filter(|e| e.fate.fault.is_some())
        .collect();
    assert_eq!(hits.len(), 1, "{:#?}", o.link_log);
    assert_eq!(hits[0].fate.packet.map(|(k, _)| k), Some(kind));
    hits[0].fate
}

fn ok(o: &SimOutcome, cap: &Capture) {
    assert!(!o.hung);
    assert_eq!(o.client, Status::Closed, "{}", o.trace.join("\n"));
    assert_eq!(cap.contents(), file());
}

#[test]
fn sim_drop_of_each_kind_is_recovered_by_a_timeout() {
    let (o, cap) = get(&["to-server:request:1:drop"]);
    ok(&o, &cap);
    hit(&o, Kind::Request);
    has(&o, "client: timeout after 10.0 ms, request #0 resent");

    let (o, cap) = get(&["to-client:accept:1:drop"]);
    ok(&o, &cap);
    hit(&o, Kind::Accept);
    has(&o, "server: timeout after 10.0 ms, accept #0 resent");

    let (o, cap) = get(&["to-client:data:1:drop"]);
    ok(&o, &cap);
    assert_eq!(hit(&o, Kind::Data).packet, Some((Kind::Data, 1)));
    has(&o, "data #1 resent (512 B)");
    assert_eq!(o.server_stats.resent, 1);

    let (o, cap) = get(&["to-server:ack:2:drop"]);
    ok(&o, &cap);
    // ACK 0 is the first ACK, so the second is ACK 1.
    assert_eq!(hit(&o, Kind::Ack).packet, Some((Kind::Ack, 1)));
    has(&o, "client: duplicate data #1 acknowledged again");

    let (o, cap) = get(&["to-client:done:1:drop"]);
    ok(&o, &cap);
    hit(&o, Kind::Done);
    has(&o, "done #4 resent");
}

#[test]
fn sim_duplicate_corrupt_and_delay() {
    let (o, cap) = get(&["to-server:ack:2:duplicate"]);
    ok(&o, &cap);
    assert_eq!(hit(&o, Kind::Ack).deliveries().count(), 2);
    has(&o, "server: stale ack #1 ignored");
    assert_eq!(
        o.server_stats.resent, 0,
        "a duplicate ACK never causes a resend"
    );

    let (o, cap) = get(&["to-client:data:2:corrupt"]);
    ok(&o, &cap);
    hit(&o, Kind::Data);
    has(&o, "client: datagram with a bad checksum dropped");
    assert_eq!(o.client_stats.bad_checksum, 1);
    has(&o, "data #2 resent");

    // An ACK held 1.5 ms more: past the server's timeout (1.2 ms), so DATA 1 is resent
    // too early; the client acknowledges the copy again, and the late ACK 1 is ignored
    // as stale.
    let (o, cap) = get(&["to-server:ack:2:delay=1500us"]);
    ok(&o, &cap);
    let f = hit(&o, Kind::Ack);
    assert_eq!(
        f.deliveries().next().unwrap().after,
        Duration::from_micros(1_600)
    );
    has(&o, "server: timeout after");
    has(&o, "data #1 resent");
    has(&o, "client: duplicate data #1 acknowledged again");
    has(&o, "server: stale ack #1 ignored");
}

#[test]
fn sim_error_can_be_duplicated_and_dropped() {
    let run = |faults: &[&str]| {
        sim::run(
            traced_cfg(faults),
            "nope",
            Job::Get(Box::new(Capture::default())),
            ServerPlan::Refuse(ErrorCode::NotFound, "server has no file 'nope'".into()),
        )
    };
    let o = run(&["to-client:error:1:duplicate"]);
    assert_eq!(hit(&o, Kind::Error).deliveries().count(), 2);
    assert!(matches!(
        o.client,
        Status::Failed(TransferError::Remote { .. })
    ));
    // Dropped: the client resends its REQUEST and hears the refusal again.
    let o = run(&["to-client:error:1:drop"]);
    hit(&o, Kind::Error);
    assert!(matches!(
        o.client,
        Status::Failed(TransferError::Remote { .. })
    ));
    has(&o, "request #0 resent");
}

// ---- through the real relay ----

#[test]
fn relay_applies_the_same_script() {
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let link = LinkConfig::default()
        .with_faults(&[
            fault("to-server:data:2:drop"),
            fault("to-server:data:3:duplicate"),
            fault("to-server:ack:1:corrupt"),
            fault("to-server:any:5:delay=200ms"),
        ])
        .unwrap();
    let cfg = RelayConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        server.local_addr().unwrap(),
        link,
        3,
    );
    let mut relay = Relay::bind(cfg).unwrap();
    // A writer whose bytes the test reads after the relay is done with it.
    let pcap = udpft::sim::Capture::default();
    relay.capture(Box::new(pcap.clone())).unwrap();
    let relay = relay.spawn().unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sent = [
        datagram(Kind::Data, 1),
        datagram(Kind::Data, 2),
        datagram(Kind::Data, 3),
        datagram(Kind::Ack, 1),
        b"fifth, not udpft".to_vec(),
        datagram(Kind::Data, 4),
    ];
    let start = Instant::now();
    for d in &sent {
        client.send_to(d, relay.local_addr()).unwrap();
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let mut fifth_after = Duration::ZERO;
    for _ in 0..6 {
        let (n, _) = server.recv_from(&mut buf).expect("a datagram");
        if buf[..n] == sent[4][..] {
            fifth_after = start.elapsed();
        }
        got.push(buf[..n].to_vec());
    }
    // In any order (the test does not race the delay): DATA 2 lost, DATA 3 twice, ACK 1
    // with one bit flipped, the fifth datagram (not udpft: `any` only) 200 ms late.
    let count = |d: &[u8]| got.iter().filter(|g| g[..] == d[..]).count();
    assert_eq!(
        [sent[0].as_slice(), &sent[1], &sent[2], &sent[4], &sent[5]].map(count),
        [1, 0, 2, 1, 1]
    );
    assert_eq!(
        got.iter()
            .filter(|g| g.len() == sent[3].len() && bits_differing(g, &sent[3]) == 1)
            .count(),
        1
    );
    assert!(fifth_after >= Duration::from_millis(200), "{fifth_after:?}");
    let s = relay.stop();
    assert_eq!(
        (
            s.to_server.seen,
            s.to_server.faults,
            s.to_server.dropped,
            s.to_server.forwarded
        ),
        (6, 4, 1, 6)
    );
    // The capture has every datagram received (6) and sent (6), each with what the
    // relay did to it.
    let cap = pcap.contents();
    let comments = comments(&cap);
    assert_eq!(comments.len(), 12, "{comments:#?}");
    for needle in [
        "to-server #1 received: forwarded",
        "to-server #1 sent: forwarded",
        "to-server #2 received: dropped (fault to-server:data:2:drop)",
        "to-server #3 received: duplicated (fault to-server:data:3:duplicate)",
        "to-server #4 sent: bit ",
        "to-server #5 received: delayed 200.0 ms (fault to-server:any:5:delay=200ms)",
    ] {
        assert!(
            comments.iter().any(|c| c.starts_with(needle)),
            "no {needle:?} in {comments:#?}"
        );
    }
    assert!(!comments.iter().any(|c| c.starts_with("to-server #2 sent")));
}

/// The opt_comment of every Enhanced Packet Block of a little-endian pcapng capture.
fn comments(b: &[u8]) -> Vec<String> {
    let le32 = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
    let mut out = Vec::new();
    let mut at = 0;
    while at < b.len() {
        let (kind, len) = (le32(at), le32(at + 4));
        if kind == 6 {
            let caplen = le32(at + 20);
            let mut o = at + 28 + caplen.div_ceil(4) * 4;
            while o < at + len - 4 {
                let code = u16::from_le_bytes([b[o], b[o + 1]]);
                let l = u16::from_le_bytes([b[o + 2], b[o + 3]]) as usize;
                if code == 1 {
                    out.push(String::from_utf8_lossy(&b[o + 4..o + 4 + l]).into_owned());
                }
                if code == 0 {
                    break;
                }
                o += 4 + l.div_ceil(4) * 4;
            }
        }
        at += len;
    }
    out
}
