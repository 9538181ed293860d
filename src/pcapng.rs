//! A pcapng writer for UDP datagrams, so Wireshark and tshark can show what udpft's
//! drivers sent, received and did to each datagram.
//!
//! Pure: it writes to any [`io::Write`] and never looks at a clock (the caller passes
//! each packet's time). Each datagram is written as one Enhanced Packet Block with
//! synthesized IPv4 or IPv6 and UDP headers carrying the real addresses and ports
//! (checksums computed, so Wireshark flags none), and an `opt_comment` saying what
//! happened to it. Format: the pcapng specification (IETF draft-ietf-opsawg-pcapng):
//! a Section Header Block, one Interface Description Block, then the packets;
//! little-endian throughout, timestamps in microseconds (the default `if_tsresol`).
//!
//! Hand-written rather than a crate: three block types, about a hundred lines, and the
//! IP/UDP synthesis would be needed anyway.

use std::io::{self, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// The link type of the one interface, and so the framing of every packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkType {
    /// LINKTYPE_RAW (101): packets start with the IPv4 or IPv6 header.
    RawIp,
    /// LINKTYPE_ETHERNET (1): an Ethernet header with zero addresses first.
    Ethernet,
}

impl LinkType {
    fn code(self) -> u16 {
        match self {
            LinkType::RawIp => 101,
            LinkType::Ethernet => 1,
        }
    }
}

const SHB: u32 = 0x0A0D_0D0A;
const IDB: u32 = 1;
const EPB: u32 = 6;
const OPT_END: u16 = 0;
const OPT_COMMENT: u16 = 1;
const IF_NAME: u16 = 2;
const SHB_USERAPPL: u16 = 4;

/// Writes a pcapng capture of UDP datagrams.
pub struct PcapWriter<W: Write> {
    out: W,
    link: LinkType,
    buf: Vec<u8>,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the section header and one interface named `interface`.
    pub fn new(mut out: W, link: LinkType, interface: &str) -> io::Result<Self> {
        let mut b = Vec::new();
        // Section Header Block: byte-order magic, version 1.0, section length unknown.
        let mut body = Vec::new();
        body.extend_from_slice(&0x1A2B_3C4Du32.to_le_bytes());
        body.extend_from_slice(&1u16.to_le_bytes());
        body.extend_from_slice(&0u16.to_le_bytes());
        body.extend_from_slice(&(-1i64).to_le_bytes());
        option(&mut body, SHB_USERAPPL, b"udpft");
        option(&mut body, OPT_END, b"");
        block(&mut b, SHB, &body);
        // Interface Description Block: link type, reserved, snap length 0 (no limit).
        let mut body = Vec::new();
        body.extend_from_slice(&link.code().to_le_bytes());
        body.extend_from_slice(&0u16.to_le_bytes());
        body.extend_from_slice(&0u32.to_le_bytes());
        option(&mut body, IF_NAME, interface.as_bytes());
        option(&mut body, OPT_END, b"");
        block(&mut b, IDB, &body);
        out.write_all(&b)?;
        Ok(PcapWriter {
            out,
            link,
            buf: Vec::new(),
        })
    }

    /// Writes one UDP datagram from `src` to `dst`, captured at `at` (since the Unix
    /// epoch), with `comment` (empty: none).
    pub fn udp(
        &mut self,
        at: Duration,
        src: SocketAddr,
        dst: SocketAddr,
        payload: &[u8],
        comment: &str,
    ) -> io::Result<()> {
        let mut packet = Vec::with_capacity(payload.len() + 62);
        if self.link == LinkType::Ethernet {
            packet.extend_from_slice(&[0; 12]);
            let v6 = matches!(same_family(src.ip(), dst.ip()), (IpAddr::V6(_), _));
            packet.extend_from_slice(if v6 { &[0x86, 0xDD] } else { &[0x08, 0x00] });
        }
        ip_udp(&mut packet, src, dst, payload);
        let us = at.as_micros() as u64;
        let body = &mut self.buf;
        body.clear();
        body.extend_from_slice(&0u32.to_le_bytes()); // interface 0
        body.extend_from_slice(&((us >> 32) as u32).to_le_bytes());
        body.extend_from_slice(&(us as u32).to_le_bytes());
        body.extend_from_slice(&(packet.len() as u32).to_le_bytes());
        body.extend_from_slice(&(packet.len() as u32).to_le_bytes());
        body.extend_from_slice(&packet);
        pad(body);
        if !comment.is_empty() {
            option(body, OPT_COMMENT, comment.as_bytes());
            option(body, OPT_END, b"");
        }
        let mut b = Vec::with_capacity(body.len() + 12);
        block(&mut b, EPB, body);
        self.out.write_all(&b)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

fn pad(b: &mut Vec<u8>) {
    while !b.len().is_multiple_of(4) {
        b.push(0);
    }
}

fn option(b: &mut Vec<u8>, code: u16, value: &[u8]) {
    // An option value longer than 65535 bytes cannot be written: cut it.
    let value = &value[..value.len().min(u16::MAX as usize)];
    b.extend_from_slice(&code.to_le_bytes());
    b.extend_from_slice(&(value.len() as u16).to_le_bytes());
    b.extend_from_slice(value);
    pad(b);
}

fn block(b: &mut Vec<u8>, kind: u32, body: &[u8]) {
    let total = (body.len() + 12) as u32;
    b.extend_from_slice(&kind.to_le_bytes());
    b.extend_from_slice(&total.to_le_bytes());
    b.extend_from_slice(body);
    b.extend_from_slice(&total.to_le_bytes());
}

/// Both addresses in one family: IPv4 when both are IPv4 (or IPv4-mapped), otherwise
/// IPv6 with IPv4 addresses mapped.
fn same_family(a: IpAddr, b: IpAddr) -> (IpAddr, IpAddr) {
    let v4 = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    let v6 = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
        v6 => v6,
    };
    match (v4(a), v4(b)) {
        (a @ IpAddr::V4(_), b @ IpAddr::V4(_)) => (a, b),
        (a, b) => (v6(a), v6(b)),
    }
}

/// The one's-complement sum of big-endian 16-bit words (an odd last byte padded).
fn sum16(mut acc: u32, bytes: &[u8]) -> u32 {
    let mut chunks = bytes.chunks_exact(2);
    for c in &mut chunks {
        acc += u16::from_be_bytes([c[0], c[1]]) as u32;
    }
    if let [last] = chunks.remainder() {
        acc += (*last as u32) << 8;
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xFFFF {
        acc = (acc & 0xFFFF) + (acc >> 16);
    }
    !(acc as u16)
}

/// Appends an IPv4 or IPv6 header, a UDP header and `payload` to `out`, checksums
/// filled in (a UDP checksum that computes to 0 is sent as 0xFFFF, RFC 768).
pub fn ip_udp(out: &mut Vec<u8>, src: SocketAddr, dst: SocketAddr, payload: &[u8]) {
    let udp_len = (payload.len() + 8).min(u16::MAX as usize) as u16;
    let mut udp = Vec::with_capacity(8);
    udp.extend_from_slice(&src.port().to_be_bytes());
    udp.extend_from_slice(&dst.port().to_be_bytes());
    udp.extend_from_slice(&udp_len.to_be_bytes());
    let (s, d) = same_family(src.ip(), dst.ip());
    let pseudo = match (s, d) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = (udp_len as usize + 20).min(u16::MAX as usize) as u16;
            let mut h = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
            h[2..4].copy_from_slice(&total.to_be_bytes());
            h.extend_from_slice(&s.octets());
            h.extend_from_slice(&d.octets());
            let c = fold(sum16(0, &h));
            h[10..12].copy_from_slice(&c.to_be_bytes());
            out.extend_from_slice(&h);
            sum16(sum16(sum16(0, &s.octets()), &d.octets()), &[0, 17]) + udp_len as u32
        }
        (s, d) => {
            let (s, d) = (v6(s), v6(d));
            out.extend_from_slice(&[0x60, 0, 0, 0]);
            out.extend_from_slice(&udp_len.to_be_bytes());
            out.extend_from_slice(&[17, 64]);
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
            sum16(sum16(0, &s.octets()), &d.octets()) + udp_len as u32 + 17
        }
    };
    let mut c = fold(sum16(sum16(pseudo, &udp), payload));
    if c == 0 {
        c = 0xFFFF;
    }
    out.extend_from_slice(&udp);
    out.extend_from_slice(&c.to_be_bytes());
    out.extend_from_slice(payload);
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V6(v6) => v6,
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn le32(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    /// Walks the blocks: (type, body) each, checking both length fields agree.
    fn blocks(b: &[u8]) -> Vec<(u32, Vec<u8>)> {
        let mut at = 0;
        let mut out = Vec::new();
        while at < b.len() {
            let len = le32(b, at + 4) as usize;
            assert_eq!(len % 4, 0);
            assert_eq!(le32(b, at + len - 4) as usize, len, "trailing length");
            out.push((le32(b, at), b[at + 8..at + len - 4].to_vec()));
            at += len;
        }
        out
    }

    #[test]
    fn blocks_are_well_formed_and_carry_the_comment() {
        let mut w = PcapWriter::new(Vec::new(), LinkType::RawIp, "relay").unwrap();
        let a: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:6969".parse().unwrap();
        w.udp(Duration::from_micros(1_500_000), a, b, b"hello", "dropped")
            .unwrap();
        let bytes = w.into_inner();
        let bl = blocks(&bytes);
        assert_eq!(bl.iter().map(|b| b.0).collect::<Vec<_>>(), [SHB, IDB, EPB]);
        assert_eq!(le32(&bl[0].1, 0), 0x1A2B_3C4D);
        assert_eq!(u16::from_le_bytes([bl[1].1[0], bl[1].1[1]]), 101);
        let epb = &bl[2].1;
        assert_eq!((le32(epb, 4), le32(epb, 8)), (0, 1_500_000));
        let caplen = le32(epb, 12) as usize;
        assert_eq!(caplen, 20 + 8 + 5);
        let packet = &epb[20..20 + caplen];
        // Header checksums verify: summing a header with its checksum gives 0xFFFF.
        assert_eq!(fold(sum16(0, &packet[..20])), 0);
        let pseudo = sum16(0, &packet[12..20]) + 17 + 13;
        assert_eq!(fold(sum16(pseudo, &packet[20..])), 0);
        assert_eq!(&packet[28..], b"hello");
        let opts = &epb[(20 + caplen).div_ceil(4) * 4..];
        assert_eq!(u16::from_le_bytes([opts[0], opts[1]]), OPT_COMMENT);
        assert_eq!(&opts[4..11], b"dropped");
    }

    #[test]
    fn ipv6_and_mixed_families() {
        let mut p = Vec::new();
        let a: SocketAddr = "[::1]:5".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:6".parse().unwrap();
        ip_udp(&mut p, a, b, b"xyz");
        assert_eq!(p[0] >> 4, 6);
        assert_eq!(&p[24..40], &Ipv4Addr::LOCALHOST.to_ipv6_mapped().octets());
        let pseudo = sum16(0, &p[8..40]) + 11 + 17;
        assert_eq!(fold(sum16(pseudo, &p[40..])), 0);
        let mut q = Vec::new();
        let m: SocketAddr = "[::ffff:10.0.0.1]:5".parse().unwrap();
        let n: SocketAddr = "10.0.0.2:6".parse().unwrap();
        ip_udp(&mut q, m, n, b"");
        assert_eq!(q[0], 0x45, "mapped and plain IPv4 are written as IPv4");
    }
}
