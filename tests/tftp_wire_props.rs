//! Property tests of the TFTP wire format: the parser never panics on any input, what
//! is emitted parses back to itself, netascii round-trips however the stream is cut,
//! and block numbers unwrap to the sequence numbers they came from.

use proptest::prelude::*;
use udpft::wire::tftp::netascii::{Decoder, Encoder};
use udpft::wire::tftp::{
    ErrorCode, KnownOptions, Mode, Options, OptionsBuf, Packet, Request, Rollover,
};

fn arb_mode() -> impl Strategy<Value = Mode> {
    prop_oneof![Just(Mode::Octet), Just(Mode::Netascii), Just(Mode::Mail)]
}

/// A valid packet's fields: opcode selector, block, bytes, name, option pairs.
fn arb_packet_bytes() -> impl Strategy<Value = Vec<u8>> {
    let field = proptest::collection::vec(1u8..=255, 0..20);
    let opts = proptest::collection::vec((field.clone(), field.clone()), 0..6);
    (
        0u8..6,
        any::<u16>(),
        proptest::collection::vec(any::<u8>(), 0..600),
        proptest::collection::vec(1u8..=255, 0..40),
        arb_mode(),
        opts,
    )
        .prop_map(|(kind, block, data, name, mode, opts)| {
            let mut ob = OptionsBuf::new();
            for (n, v) in &opts {
                if !n.is_empty() {
                    ob.push(n, v);
                }
            }
            let req = Request {
                filename: &name,
                mode,
                options: ob.options(),
            };
            let message: Vec<u8> = data.iter().copied().filter(|&b| b != 0).collect();
            let p = match kind {
                0 => Packet::Rrq(req),
                1 => Packet::Wrq(req),
                2 => Packet::Data { block, data: &data },
                3 => Packet::Ack { block },
                4 => Packet::Error {
                    code: ErrorCode(block),
                    message: &message,
                },
                _ => Packet::Oack(ob.options()),
            };
            let mut buf = vec![0u8; 2048];
            let n = p.emit(&mut buf).expect("a valid packet encodes");
            buf.truncate(n);
            buf
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Any bytes at all: parsing never panics, and whatever parses is within limits.
    #[test]
    fn parsing_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
        if let Ok(p) = Packet::parse(&bytes) {
            match p {
                Packet::Rrq(r) | Packet::Wrq(r) => {
                    prop_assert!(!r.filename.contains(&0));
                    let k = KnownOptions::of(&r.options);
                    let _ = k.blksize.and_then(|o| o.number());
                    prop_assert!(r.options.iter().all(|o| !o.name.contains(&0) && !o.value.contains(&0)));
                }
                Packet::Error { message, .. } => prop_assert!(!message.contains(&0)),
                Packet::Data { data, .. } => prop_assert!(data.len() + 4 == bytes.len()),
                _ => {}
            }
        }
    }

    /// A request prefix followed by arbitrary bytes: the option parser sees everything.
    #[test]
    fn requests_with_arbitrary_option_bytes_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut b = b"\0\x01file\0octet\0".to_vec();
        b.extend_from_slice(&tail);
        let p = Packet::parse(&b).expect("the prefix is a valid request");
        let Packet::Rrq(r) = p else { panic!() };
        let k = KnownOptions::of(&r.options);
        for o in [k.blksize, k.timeout, k.tsize, k.windowsize, k.rollover].into_iter().flatten() {
            let _ = o.number();
        }
        prop_assert!(r.options.as_bytes().len() <= tail.len());
    }

    /// Valid packets with a byte flipped or the end cut off: never a panic.
    #[test]
    fn damaged_packets_never_panic(b in arb_packet_bytes(), at in any::<usize>(), x in any::<u8>(), cut in any::<usize>()) {
        let mut d = b.clone();
        if !d.is_empty() {
            let i = at % d.len();
            d[i] ^= x;
        }
        let _ = Packet::parse(&d);
        let _ = Packet::parse(&b[..cut % (b.len() + 1)]);
    }

    /// Emit, parse, emit again: the same bytes (the mode in its canonical spelling).
    #[test]
    fn valid_packets_round_trip(b in arb_packet_bytes()) {
        let p = Packet::parse(&b).expect("an emitted packet parses");
        let mut again = vec![0u8; 2048];
        let n = p.emit(&mut again).unwrap();
        prop_assert_eq!(&again[..n], &b[..]);
    }

    /// Netascii: decode(encode(x)) == x however the stream is cut into blocks.
    #[test]
    fn netascii_round_trips(text in proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(0u8), any::<u8>()], 0..2000),
                            enc_chunk in 1usize..600, dec_chunk in 1usize..600) {
        let mut e = Encoder::new();
        let mut wire = Vec::new();
        let mut buf = vec![0u8; enc_chunk];
        let mut rest = &text[..];
        while !rest.is_empty() || e.has_pending() {
            let (r, w) = e.encode(rest, &mut buf);
            prop_assert!(w > 0);
            wire.extend_from_slice(&buf[..w]);
            rest = &rest[r..];
        }
        // A CR on the wire is always followed by LF or NUL.
        for (i, &b) in wire.iter().enumerate() {
            if b == b'\r' {
                prop_assert!(matches!(wire.get(i + 1), Some(b'\n') | Some(0)));
            }
        }
        let mut d = Decoder::new();
        let mut back = Vec::new();
        let mut out = vec![0u8; dec_chunk + 1];
        for c in wire.chunks(dec_chunk) {
            let n = d.decode(c, &mut out);
            back.extend_from_slice(&out[..n]);
        }
        back.extend(d.finish());
        prop_assert_eq!(back, text);
    }

    /// Decoding arbitrary (not necessarily valid) netascii never panics and never
    /// writes more than the promised room.
    #[test]
    fn netascii_decodes_anything(wire in proptest::collection::vec(any::<u8>(), 0..2000), chunk in 1usize..300) {
        let mut d = Decoder::new();
        let mut out = vec![0u8; chunk + 1];
        for c in wire.chunks(chunk) {
            let n = d.decode(c, &mut out);
            prop_assert!(n <= c.len() + 1);
        }
    }

    /// A block number unwraps to its sequence number from anywhere within half a period.
    #[test]
    fn block_numbers_unwrap(seq in 0u64..(1u64 << 40), off in -32_000i64..32_000, one in any::<bool>()) {
        let r = if one { Rollover::ToOne } else { Rollover::ToZero };
        let near = seq.saturating_add_signed(off);
        prop_assert_eq!(r.seq_of(r.block_of(seq), near), seq);
        // Never a panic at the edges.
        let _ = r.seq_of(r.block_of(u64::MAX), u64::MAX);
        let _ = r.seq_of(0, u64::MAX);
    }

    /// Options built from pairs come back as those pairs.
    #[test]
    fn options_round_trip(pairs in proptest::collection::vec((proptest::collection::vec(1u8..=255, 1..10), proptest::collection::vec(1u8..=255, 0..10)), 0..8)) {
        let mut ob = OptionsBuf::new();
        for (n, v) in &pairs {
            ob.push(n, v);
        }
        let back: Vec<(Vec<u8>, Vec<u8>)> = Options::new(ob.options().as_bytes())
            .iter()
            .map(|o| (o.name.to_vec(), o.value.to_vec()))
            .collect();
        prop_assert_eq!(back, pairs);
    }
}
