//! Admission against clients that are slow but never quite stalled, on the virtual
//! clock: a finding of the attack pass on issue 9, fixed by counting progress in
//! 16 KiB of data moved (PROTOCOL.md §6.2). The other fixed findings are in
//! tests/attack.rs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use udpft::engine::{EndpointConfig, IoOutcome, IoRequest, ServerEndpoint};
use udpft::wire::{self, Datagram, Message, Op};

mod common;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Everything the endpoint sends now.
fn sent(ep: &mut ServerEndpoint, now: Instant) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; wire::MAX_DATAGRAM];
    while let Some((to, n)) = ep.poll_transmit(now, &mut buf) {
        out.push((to, buf[..n].to_vec()));
    }
    out
}

/// Opens a proven get of a large file from `from` with the smallest block size;
/// returns the session id of its ACCEPT, or None if it was refused.
fn open_get(ep: &mut ServerEndpoint, now: Instant, from: SocketAddr, nonce: u64) -> Option<u64> {
    ep.handle(
        now,
        from,
        &common::request_bytes(Op::Get, "f", nonce, 8, None),
    );
    let out = sent(ep, now);
    let Message::Retry(t) = Datagram::parse(&out[0].1).unwrap().message else {
        panic!("expected a RETRY");
    };
    ep.handle(
        now,
        from,
        &common::request_bytes(Op::Get, "f", nonce, 8, Some(t)),
    );
    while let Some(io) = ep.poll_io() {
        if let IoRequest::Open { ticket, .. } = io {
            let src = std::io::Cursor::new(vec![7u8; 1 << 20]);
            ep.io_done(now, ticket, IoOutcome::Send(Box::new(src), 1 << 20));
        }
    }
    sent(ep, now).iter().find_map(|(to, b)| {
        let d = Datagram::parse(b).unwrap();
        match d.message {
            Message::Accept(a) if *to == from && a.nonce == nonce => Some(d.session),
            _ => None,
        }
    })
}

/// The finding: admission was starved by clients that are slow but not "stalled". When the server is full, only a transfer without progress for 2 s gives
/// way. So 64 clients from two addresses (32 each, the per-address cap) that each
/// acknowledge one 8-byte block every 1.5 s hold every slot for as long as they like
/// (a 64 MB file lasts 8 million acks), for about 2.6 KB/s in all; every other client
/// is refused "server busy". Measured on the real binaries: `bench/attack/run c-fast`
/// gives the legitimate client 0 lists and 0 gets out of 100. On IPv6 one host has a
/// /64 of addresses, so the per-address cap does not even make it take two.
///
/// Here the same on the virtual clock, at a smaller scale (4 slots, 2 per address).
#[test]
fn slow_clients_that_are_never_stalled_starve_admission() {
    let t0 = Instant::now();
    let mut ep = ServerEndpoint::new(
        EndpointConfig {
            max_sessions: 4,
            max_per_address: 2,
            seed: Some(3),
            ..EndpointConfig::default()
        },
        t0,
    );
    // Two attacker addresses, two gets each: the server is full.
    let mut attackers: HashMap<u64, (SocketAddr, u64)> = HashMap::new();
    for (i, from) in [
        "203.0.113.1:1000",
        "203.0.113.1:1001",
        "203.0.113.2:1000",
        "203.0.113.2:1001",
    ]
    .into_iter()
    .enumerate()
    {
        let from = addr(from);
        let id = open_get(&mut ep, t0, from, 10 + i as u64).expect("admitted");
        attackers.insert(id, (from, 0));
    }
    assert_eq!(ep.running(), 4);
    let legit = addr("198.51.100.7:5000");
    let mut now = t0;
    let mut next_ack = t0 + Duration::from_millis(1500);
    let mut admitted_at = None;
    let mut tries = 0;
    while now < t0 + Duration::from_secs(60) {
        now += Duration::from_millis(10);
        if ep.poll_timeout().is_some_and(|t| t <= now) {
            ep.handle_timeout(now);
        }
        for (to, b) in sent(&mut ep, now) {
            let d = Datagram::parse(&b).unwrap();
            if let Some((from, newest)) = attackers.get_mut(&d.session)
                && *from == to
                && matches!(d.message, Message::Data(_))
            {
                *newest = (*newest).max(d.seq);
            }
        }
        // Each attacker acknowledges its newest block once every 1.5 s.
        if now >= next_ack {
            next_ack = now + Duration::from_millis(1500);
            for (&id, &(from, newest)) in &attackers {
                let mut buf = [0u8; 64];
                let n = Datagram {
                    session: id,
                    seq: newest,
                    message: Message::Ack,
                }
                .emit(&mut buf)
                .unwrap();
                ep.handle(now, from, &buf[..n]);
            }
        }
        // The legitimate client asks every 5 s.
        if admitted_at.is_none() && (now - t0).as_millis().is_multiple_of(5000) {
            tries += 1;
            if open_get(&mut ep, now, legit, 1000 + tries).is_some() {
                admitted_at = Some(now - t0);
            }
        }
    }
    assert!(
        admitted_at.is_some(),
        "{tries} requests of a legitimate client in 60 s, every one refused (busy): \
         4 clients acknowledging an 8-byte block every 1.5 s hold every slot"
    );
}
