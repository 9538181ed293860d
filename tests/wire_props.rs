//! Property tests: the parser never panics, and nothing but an intact datagram passes.

use std::io::Cursor;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use udpft::engine::{ClientSession, Codec, Config, Job, Receiver, Sender, ServerSession, Udpft};
use udpft::rto::RtoEstimator;
use udpft::wire::{self, Accept, Datagram, ErrorCode, Message, Op, Request};

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        Just(Op::Get),
        Just(Op::Put),
        Just(Op::List),
        Just(Op::Delete),
        Just(Op::Exit)
    ]
}

/// Sequence numbers, with the edges (where `+ 1` overflows) well represented.
fn arb_seq() -> impl Strategy<Value = u64> {
    prop_oneof![any::<u64>(), 0u64..4, (u64::MAX - 3)..=u64::MAX]
}

/// Any valid datagram, encoded.
fn arb_datagram() -> impl Strategy<Value = Vec<u8>> {
    let name = "[a-z/._-]{0,40}";
    let payload = proptest::collection::vec(any::<u8>(), 1..600);
    (
        1..=u64::MAX,
        arb_seq(),
        0u8..6,
        arb_op(),
        name,
        payload,
        any::<u32>(),
        8u32..=wire::MAX_BLOCK_SIZE,
    )
        .prop_map(|(session, seq, kind, op, name, payload, crc, block)| {
            let seq1 = seq.max(1);
            // Windows 1 (not on the wire) to the largest, and a canonical selective
            // acknowledgement made from the payload.
            let window = 1 + (crc % wire::MAX_WINDOW as u32) as u16;
            let mut bits = payload[..payload.len().min(wire::MAX_SACK_LEN)].to_vec();
            bits[0] &= 0x7f;
            *bits.last_mut().unwrap() |= 1;
            let (seq, message) = match kind {
                0 => (
                    0,
                    Message::Request(Request {
                        token: None,
                        op,
                        block_size: block,
                        size: seq,
                        name: &name,
                        window,
                    }),
                ),
                1 => (
                    0,
                    Message::Accept(Accept {
                        nonce: seq,
                        op,
                        block_size: block,
                        size: seq,
                        window,
                    }),
                ),
                2 => (seq1, Message::Data(&payload)),
                3 if crc & 1 == 0 => (seq, Message::Ack),
                3 => (seq, Message::Sack(&bits)),
                4 => (seq1, Message::Done { length: seq, crc }),
                _ => (
                    seq,
                    Message::Error {
                        code: ErrorCode::from_u16(crc as u16),
                        message: &name,
                    },
                ),
            };
            let d = Datagram {
                session,
                seq,
                message,
            };
            let mut buf = vec![0; d.wire_len()];
            d.emit(&mut buf).unwrap();
            buf
        })
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(Vec<usize>),
    Truncate(usize),
    Extend(Vec<u8>),
    Set(usize, u8),
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        proptest::collection::vec(any::<usize>(), 1..=3).prop_map(Mutation::Flip),
        any::<usize>().prop_map(Mutation::Truncate),
        proptest::collection::vec(any::<u8>(), 1..8).prop_map(Mutation::Extend),
        (any::<usize>(), 1u8..=255).prop_map(|(i, x)| Mutation::Set(i, x)),
    ]
}

fn mutate(mut b: Vec<u8>, m: &Mutation) -> Vec<u8> {
    match m {
        Mutation::Flip(bits) => {
            let n = b.len() * 8;
            let mut seen = Vec::new();
            for &bit in bits {
                let bit = bit % n;
                if !seen.contains(&bit) {
                    seen.push(bit);
                    b[bit / 8] ^= 1 << (bit % 8);
                }
            }
        }
        Mutation::Truncate(k) => {
            let k = k % b.len();
            b.truncate(k);
        }
        Mutation::Extend(x) => b.extend_from_slice(x),
        Mutation::Set(i, x) => {
            let i = i % b.len();
            b[i] ^= x;
        }
    }
    b
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_and_never_parse(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        prop_assert!(Datagram::parse(&bytes).is_err());
    }

    #[test]
    fn valid_datagrams_roundtrip(b in arb_datagram()) {
        let d = Datagram::parse(&b).unwrap();
        let mut again = vec![0; d.wire_len()];
        d.emit(&mut again).unwrap();
        prop_assert_eq!(again, b);
    }

    #[test]
    fn mutated_datagrams_never_pass(b in arb_datagram(), m in arb_mutation()) {
        let bad = mutate(b.clone(), &m);
        prop_assume!(bad != b);
        prop_assert!(Datagram::parse(&bad).is_err(), "{:?} passed", m);
    }

    /// Whatever valid datagrams arrive, in whatever order, no state machine panics.
    #[test]
    fn engines_survive_arbitrary_valid_datagrams(ds in proptest::collection::vec(arb_datagram(), 1..40)) {
        let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let cfg = Config { block_size: 64, ..Config::default() };
        let mut now = Instant::now();
        let rto = || RtoEstimator::new(cfg.rto);
        let mut s = Sender::new(7, peer, Box::new(Cursor::new(vec![1u8; 500])), cfg, rto(), None);
        let mut r = Receiver::new(7, peer, Box::new(Vec::new()), cfg, rto(), None, now);
        let mut c = ClientSession::new(peer, 5, "x", Job::Get(Box::new(Vec::new())), cfg).unwrap();
        let mut v = ServerSession::receive(7, peer, 5, 256, 500, Box::new(Vec::new()), cfg, now);
        for b in &ds {
            now += Duration::from_millis(3);
            s.handle_datagram(now, b);
            r.handle_datagram(now, b);
            c.handle_datagram(now, b);
            let (key, f) = Udpft.decode(b, 0).unwrap();
            v.handle(now, peer, key, &f, b.len());
            s.handle_timeout(now);
            r.handle_timeout(now);
            c.handle_timeout(now);
            v.handle_timeout(now);
            while s.poll_transmit(now).is_some() {}
            while r.poll_transmit(now).is_some() {}
            while c.poll_transmit(now).is_some() {}
            while v.poll_transmit(now).is_some() {}
        }
    }
}
