//! What this teaches: the bytes of a udpft datagram, field by field, and why a single
//! flipped bit can never slip through: the CRC32 over every byte is checked before any
//! field is trusted.
//!
//! Run it with:
//!
//! ```text
//! cargo run --example packet_anatomy
//! ```
//!
//! It builds a DATA, an ACK and a REQUEST with `udpft::wire`, prints each as a labelled
//! hex dump, then flips one bit of the DATA and shows `Datagram::parse` reject it.

use udpft::wire::{self, Accept, CRC_LEN, Datagram, ErrorCode, HEADER_LEN, Message, Op, Request};

/// Prints `bytes` (at most 16 of them) as hex, with a label.
fn row(label: &str, range: std::ops::Range<usize>, bytes: &[u8], meaning: &str) {
    let shown = &bytes[range.clone()];
    let mut hex: Vec<String> = shown.iter().take(16).map(|b| format!("{b:02x}")).collect();
    if shown.len() > 16 {
        hex.push(format!("… ({} bytes)", shown.len()));
    }
    println!(
        "  {:>5}..{:<5} {:<16} {:<50} {meaning}",
        range.start,
        range.end,
        label,
        hex.join(" ")
    );
}

/// Printable text of some bytes, dots for the rest.
fn text(b: &[u8]) -> String {
    b.iter()
        .take(48)
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '.'
            }
        })
        .collect()
}

/// The payload's own fields, per packet type (PROTOCOL.md §3).
fn payload_fields(kind: u8, p: &[u8], bytes: &[u8]) {
    let at = |r: std::ops::Range<usize>| HEADER_LEN + r.start..HEADER_LEN + r.end;
    let be = |r: std::ops::Range<usize>| p[r].iter().fold(0u64, |a, &b| a << 8 | b as u64);
    let op = |v: u64| match v {
        1 => "get",
        2 => "put",
        3 => "list",
        4 => "delete",
        5 => "exit",
        _ => "?",
    };
    match kind {
        1 => {
            let name_len = be(14..16) as usize;
            row(
                "  op",
                at(0..1),
                bytes,
                &format!("{} = {}", p[0], op(p[0] as u64)),
            );
            let with_token = p[1] & wire::FLAG_TOKEN != 0;
            row(
                "  flags",
                at(1..2),
                bytes,
                if with_token {
                    "bit 0 set: a token follows the name"
                } else {
                    "0: no token (the first try)"
                },
            );
            row(
                "  block size",
                at(2..6),
                bytes,
                &format!("{} bytes asked for", be(2..6)),
            );
            row(
                "  size",
                at(6..14),
                bytes,
                &format!("{} (the file's length for a put)", be(6..14)),
            );
            row(
                "  name len",
                at(14..16),
                bytes,
                &format!("{name_len} bytes"),
            );
            row(
                "  name",
                at(16..16 + name_len),
                bytes,
                &format!("{:?}", text(&p[16..16 + name_len])),
            );
            let mut rest = 16 + name_len;
            if with_token {
                row(
                    "  token",
                    at(rest..rest + wire::TOKEN_LEN),
                    bytes,
                    "echoed from the server's RETRY: proves this address receives",
                );
                rest += wire::TOKEN_LEN;
            }
            row(
                "  padding",
                at(rest..p.len()),
                bytes,
                "zeros up to 256 bytes in all (anti-amplification)",
            );
        }
        7 => row(
            "  token",
            at(0..p.len()),
            bytes,
            "16 bytes: time issued + a keyed hash of address, port, nonce and op",
        ),
        2 => {
            row(
                "  nonce",
                at(0..8),
                bytes,
                &format!("{:#x}: the REQUEST's session id", be(0..8)),
            );
            row(
                "  op",
                at(8..9),
                bytes,
                &format!("{} = {}", p[8], op(p[8] as u64)),
            );
            row("  flags", at(9..10), bytes, "must be 0");
            row(
                "  block size",
                at(10..14),
                bytes,
                &format!("{} bytes granted", be(10..14)),
            );
            row(
                "  size",
                at(14..22),
                bytes,
                &format!("{} bytes to come", be(14..22)),
            );
        }
        3 => row("  data", at(0..p.len()), bytes, &format!("{:?}", text(p))),
        5 => {
            row(
                "  stream length",
                at(0..8),
                bytes,
                &format!("{} bytes in all", be(0..8)),
            );
            row(
                "  stream CRC32",
                at(8..12),
                bytes,
                &format!("{:08x} of all of them", be(8..12)),
            );
        }
        6 => {
            row(
                "  error code",
                at(0..2),
                bytes,
                &format!("{} = not found", be(0..2)),
            );
            row(
                "  message",
                at(2..p.len()),
                bytes,
                &format!("{:?}", text(&p[2..])),
            );
        }
        _ => println!(
            "  {:>5}..{:<5} {:<16} (none)",
            HEADER_LEN, HEADER_LEN, "payload"
        ),
    }
}

/// A labelled hex dump of one encoded datagram.
fn anatomy(title: &str, bytes: &[u8]) {
    println!("{title}: {} bytes on the wire", bytes.len());
    let n = bytes.len();
    let be64 = |r: std::ops::Range<usize>| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&bytes[r]);
        u64::from_be_bytes(a)
    };
    let len = u16::from_be_bytes([bytes[20], bytes[21]]) as usize;
    row("magic", 0..2, bytes, "\"UF\": this is udpft");
    row(
        "version",
        2..3,
        bytes,
        &format!("protocol version {}", bytes[2]),
    );
    let kind = match bytes[3] {
        1 => "REQUEST",
        2 => "ACCEPT",
        3 => "DATA",
        4 => "ACK",
        5 => "DONE",
        6 => "ERROR",
        7 => "RETRY",
        8 => "WAIT",
        _ => "?",
    };
    row("type", 3..4, bytes, &format!("{} = {kind}", bytes[3]));
    row("session id", 4..12, bytes, &format!("{:#x}", be64(4..12)));
    row(
        "sequence number",
        12..20,
        bytes,
        &format!("{}", be64(12..20)),
    );
    row("payload length", 20..22, bytes, &format!("{len} bytes"));
    payload_fields(bytes[3], &bytes[HEADER_LEN..HEADER_LEN + len], bytes);
    let crc = u32::from_be_bytes(bytes[n - CRC_LEN..].try_into().unwrap());
    row(
        "CRC32",
        n - CRC_LEN..n,
        bytes,
        &format!("{crc:08x} = crc32 of bytes 0..{}", n - CRC_LEN),
    );
    println!();
}

fn main() {
    let mut buf = vec![0u8; wire::MAX_DATAGRAM];

    let data = Datagram {
        session: 0x5eed_0000_0000_002a,
        seq: 3,
        message: Message::Data(b"hello, lossy world"),
    };
    let n = data.emit(&mut buf).unwrap();
    let data_bytes = buf[..n].to_vec();
    anatomy("DATA #3", &data_bytes);

    let ack = Datagram {
        session: 0x5eed_0000_0000_002a,
        seq: 3,
        message: Message::Ack,
    };
    let n = ack.emit(&mut buf).unwrap();
    anatomy(
        "ACK #3 (the receiver's answer: same number, no payload)",
        &buf[..n],
    );

    let request = Datagram {
        session: 0x1234_5678_9abc_def0,
        seq: 0,
        message: Message::Request(Request {
            token: None,
            op: Op::Get,
            block_size: wire::DEFAULT_BLOCK_SIZE,
            size: 0,
            name: "notes.txt",
            window: 1,
        }),
    };
    let n = request.emit(&mut buf).unwrap();
    anatomy(
        "REQUEST (get notes.txt; session id = the client's random nonce)",
        &buf[..n],
    );
    let retry = Datagram {
        session: 0x1234_5678_9abc_def0,
        seq: 0,
        message: Message::Retry([0x5a; wire::TOKEN_LEN]),
    };
    let n = retry.emit(&mut buf).unwrap();
    anatomy(
        "RETRY (the address check: the server opens nothing until this token comes back)",
        &buf[..n],
    );
    let again = Datagram {
        session: 0x1234_5678_9abc_def0,
        seq: 0,
        message: Message::Request(Request {
            token: Some([0x5a; wire::TOKEN_LEN]),
            op: Op::Get,
            block_size: wire::DEFAULT_BLOCK_SIZE,
            size: 0,
            name: "notes.txt",
            window: 1,
        }),
    };
    let n = again.emit(&mut buf).unwrap();
    anatomy(
        "REQUEST again, with the RETRY's token (same nonce)",
        &buf[..n],
    );
    let accept = Datagram {
        session: 0x5eed_0000_0000_002a,
        seq: 0,
        message: Message::Accept(Accept {
            nonce: 0x1234_5678_9abc_def0,
            op: Op::Get,
            block_size: wire::DEFAULT_BLOCK_SIZE,
            size: 18,
            window: 1,
        }),
    };
    let n = accept.emit(&mut buf).unwrap();
    anatomy(
        "ACCEPT (the server's answer: its own session id, your nonce echoed)",
        &buf[..n],
    );
    let done = Datagram {
        session: 0x5eed_0000_0000_002a,
        seq: 2,
        message: Message::Done {
            length: 18,
            crc: wire::crc32(b"hello, lossy world"),
        },
    };
    let n = done.emit(&mut buf).unwrap();
    anatomy("DONE #2 (the end of a one-block stream)", &buf[..n]);
    let wait = Datagram {
        session: 0x5eed_0000_0000_002a,
        seq: 2,
        message: Message::Wait,
    };
    let n = wait.emit(&mut buf).unwrap();
    anatomy(
        "WAIT #2 (DONE verified, the file is being stored: do not resend DONE)",
        &buf[..n],
    );
    let error = Datagram {
        session: 0x1234_5678_9abc_def0,
        seq: 0,
        message: Message::Error {
            code: ErrorCode::NotFound,
            message: "server has no file 'notes.txt'",
        },
    };
    let n = error.emit(&mut buf).unwrap();
    anatomy(
        "ERROR (a refusal: it carries the REQUEST's nonce)",
        &buf[..n],
    );
    println!(
        "The REQUEST payload is op (1 = get), flags, block size ({}), size, name length \
         and name,\nzero-padded so the whole datagram is at least {} bytes: the server may \
         answer at most\na few times what it received before the client proves its address.\n",
        wire::DEFAULT_BLOCK_SIZE,
        wire::MIN_REQUEST_LEN
    );

    match Datagram::parse(&data_bytes) {
        Ok(Datagram {
            seq,
            message: Message::Data(p),
            ..
        }) => println!(
            "parse(DATA as sent)      -> accepted: DATA #{seq} carrying {:?}",
            String::from_utf8_lossy(p)
        ),
        other => println!("parse(DATA as sent)      -> unexpected: {other:?}"),
    }
    let mut damaged = data_bytes.clone();
    let bit = (HEADER_LEN + 4) * 8 + 1; // one bit of the payload: 'o' becomes 'm'
    damaged[bit / 8] ^= 1 << (bit % 8);
    println!("flipping bit {bit} (byte {}, in the payload)", bit / 8);
    match Datagram::parse(&damaged) {
        Ok(d) => println!("parse(damaged DATA)      -> accepted?! {d:?}"),
        Err(e) => println!("parse(damaged DATA)      -> rejected: {e}"),
    }
    let mut damaged = data_bytes.clone();
    damaged[13] ^= 0x80; // the sequence number
    match Datagram::parse(&damaged) {
        Ok(d) => println!("parse(damaged seq)       -> accepted?! {d:?}"),
        Err(e) => println!("parse(damaged seq)       -> rejected: {e}"),
    }
    println!(
        "\nThe receiver drops a datagram with a bad checksum unread and counts it. It sends no\n\
         reply: the sender's timer fires and it sends the packet again."
    );
}
