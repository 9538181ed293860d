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

use udpft::wire::{self, CRC_LEN, Datagram, HEADER_LEN, Message, Op, Request};

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
    if len > 0 {
        let text: String = bytes[HEADER_LEN..HEADER_LEN + len]
            .iter()
            .take(24)
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    b as char
                } else {
                    '.'
                }
            })
            .collect();
        row(
            "payload",
            HEADER_LEN..HEADER_LEN + len,
            bytes,
            &format!("{text:?}"),
        );
    } else {
        println!(
            "  {:>5}..{:<5} {:<16} (none)",
            HEADER_LEN, HEADER_LEN, "payload"
        );
    }
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
            op: Op::Get,
            block_size: wire::DEFAULT_BLOCK_SIZE,
            size: 0,
            name: "notes.txt",
        }),
    };
    let n = request.emit(&mut buf).unwrap();
    anatomy(
        "REQUEST (get notes.txt; session id = the client's random nonce)",
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
