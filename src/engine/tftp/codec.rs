//! TFTP as an encoding of the engine's frames ([`Codec`]): the same [`super::super::Sender`]
//! and [`super::super::Receiver`] as udpft, with TFTP's bytes.
//!
//! | frame | TFTP |
//! |---|---|
//! | `Data { seq }` | DATA, block = `seq` wrapped to 16 bits (per `rollover`) |
//! | `Ack { seq }` | ACK, the same block numbering; 0 acknowledges the OACK or the WRQ |
//! | `Accept` | OACK carrying exactly the negotiated options (packet 0) |
//! | `Error { code }` | ERROR with the TFTP code for udpft's (TFTP.md §2.7) |
//! | `Request` | RRQ or WRQ (decoded only: a resent request reaching a transfer) |
//! | `End`, `Wait`, `Retry` | none: TFTP ends with a short block and has no WAIT or RETRY |
//!
//! Received block numbers are widened to the 64-bit sequence number nearest the one
//! the state machine expects ([`Rollover::seq_of`]). There is no session key on the
//! wire (the transfer ID is the client's address and port): every datagram decodes
//! with key 0, and the driver routes by address.

use std::io::{self, Write as _};

use crate::engine::codec::{Codec, StreamEnd};
use crate::engine::frame::{Accept, Frame, Op, Request, Sack, Seq, SessionId, UNKNOWN_SIZE};
use crate::engine::{ErrorCode, Sink};
use crate::wire::WireError;
use crate::wire::tftp::{
    self, DATA_HEADER_LEN, ErrorCode as TftpCode, KnownOptions, Mode, OptionsBuf, Packet, Rollover,
    netascii,
};

use super::request::{MAX_ERROR_LEN, tftp_code, udpft_code};

/// The longest ERROR message: an ERROR datagram stays within [`MAX_ERROR_LEN`].
pub const MAX_MESSAGE: usize = MAX_ERROR_LEN - 5;

/// TFTP's encoding for one transfer: the block-number rollover and the OACK negotiated
/// for it. Allocates once (the OACK's bytes), never per packet.
#[derive(Debug, Clone, Default)]
pub struct Tftp {
    rollover: Rollover,
    /// The options the OACK carries (empty: this transfer has no OACK).
    oack: OptionsBuf,
    /// What a request decoded here is taken for (a resent RRQ or WRQ).
    op: Option<Op>,
}

impl Tftp {
    /// The encoding of a transfer with this rollover rule whose packet 0 (if any) is an
    /// OACK carrying `oack`.
    pub fn new(rollover: Rollover, oack: OptionsBuf) -> Tftp {
        Tftp {
            rollover,
            oack,
            op: None,
        }
    }

    pub fn rollover(&self) -> Rollover {
        self.rollover
    }
}

/// TFTP's error code for an ERROR frame: udpft's mapping, plus the two "disk full"
/// cases (an upload past its `tsize`; ENOSPC, which only the message names).
fn code_for(code: ErrorCode, message: &str) -> TftpCode {
    match code {
        ErrorCode::Integrity => TftpCode::DISK_FULL,
        ErrorCode::Io if message.contains("(os error 28)") => TftpCode::DISK_FULL,
        c => tftp_code(c),
    }
}

/// The longest prefix of `b` that is UTF-8 (a peer's message may not be).
fn utf8_prefix(b: &[u8]) -> &str {
    match std::str::from_utf8(b) {
        Ok(s) => s,
        Err(e) => std::str::from_utf8(&b[..e.valid_up_to()]).unwrap_or_default(),
    }
}

fn to_wire_error(e: tftp::WireError) -> WireError {
    match e {
        tftp::WireError::TooShort(n) => WireError::TooShort(n),
        tftp::WireError::TooLong(n) => WireError::TooLong(n),
        tftp::WireError::UnknownOpcode(_) => WireError::Malformed("unknown TFTP opcode"),
        tftp::WireError::BufferTooSmall => WireError::BufferTooSmall,
        _ => WireError::Malformed("TFTP request"),
    }
}

impl Codec for Tftp {
    fn data_offset(&self) -> usize {
        DATA_HEADER_LEN
    }

    fn overhead(&self) -> usize {
        DATA_HEADER_LEN
    }

    fn stream_end(&self) -> StreamEnd {
        StreamEnd::ShortBlock
    }

    fn max_message_len(&self) -> usize {
        MAX_MESSAGE
    }

    fn decode<'a>(&self, bytes: &'a [u8], near: Seq) -> Result<(SessionId, Frame<'a>), WireError> {
        let p = Packet::parse(bytes).map_err(to_wire_error)?;
        let f = match p {
            Packet::Data { block, data } => Frame::Data {
                seq: self.rollover.seq_of(block, near),
                payload: data,
            },
            Packet::Ack { block } => Frame::Ack {
                seq: self.rollover.seq_of(block, near),
                sack: Sack::NONE,
            },
            Packet::Error { code, message } => Frame::Error {
                seq: 0,
                code: udpft_code(code),
                message: utf8_prefix(message),
            },
            Packet::Oack(o) => {
                let k = KnownOptions::of(&o);
                let num = |o: Option<tftp::Opt>| o.and_then(|o| o.number());
                Frame::Accept(Accept {
                    nonce: 0,
                    op: self.op.unwrap_or(Op::Get),
                    block_size: num(k.blksize).map_or(tftp::DEFAULT_BLKSIZE, |v| {
                        v.clamp(1, u64::from(tftp::MAX_BLKSIZE)) as u32
                    }),
                    size: num(k.tsize).unwrap_or(UNKNOWN_SIZE),
                    window: num(k.windowsize).map_or(1, |v| v.clamp(1, u64::from(u16::MAX)) as u16),
                })
            }
            Packet::Rrq(r) | Packet::Wrq(r) => Frame::Request(Request {
                op: if matches!(p, Packet::Rrq(_)) {
                    Op::Get
                } else {
                    Op::Put
                },
                block_size: tftp::DEFAULT_BLKSIZE,
                size: UNKNOWN_SIZE,
                name: utf8_prefix(r.filename),
                token: None,
                window: 1,
            }),
        };
        Ok((0, f))
    }

    fn encode(&self, _session: SessionId, f: &Frame, buf: &mut [u8]) -> Result<usize, WireError> {
        let p = match *f {
            Frame::Data { seq, payload } => Packet::Data {
                block: self.rollover.block_of(seq),
                data: payload,
            },
            Frame::Ack { seq, .. } => Packet::Ack {
                block: self.rollover.block_of(seq),
            },
            Frame::Accept(_) if !self.oack.is_empty() => Packet::Oack(self.oack.options()),
            Frame::Error { code, message, .. } => {
                let n = super::request::emit_error(
                    code_for(code, message),
                    message,
                    MAX_ERROR_LEN,
                    buf,
                );
                return if n == 0 {
                    Err(WireError::BufferTooSmall)
                } else {
                    Ok(n)
                };
            }
            Frame::Accept(_) => return Err(WireError::Malformed("no options to acknowledge")),
            Frame::Request(_) | Frame::End { .. } | Frame::Wait { .. } | Frame::Retry(_) => {
                return Err(WireError::Malformed("TFTP has no such packet"));
            }
        };
        p.emit(buf).map_err(to_wire_error)
    }

    fn seal_data(
        &self,
        buf: &mut [u8],
        _session: SessionId,
        seq: Seq,
        payload_len: usize,
    ) -> usize {
        tftp::emit_data_header(self.rollover.block_of(seq), buf);
        DATA_HEADER_LEN + payload_len
    }
}

/// A [`Sink`] that stores the local form of netascii written to it (TFTP.md §2.5):
/// committing writes a CR held back at the end, then commits the inner sink.
pub struct NetasciiSink<S: Sink> {
    inner: netascii::DecodingWriter<S>,
}

impl<S: Sink> NetasciiSink<S> {
    pub fn new(inner: S) -> NetasciiSink<S> {
        NetasciiSink {
            inner: netascii::DecodingWriter::new(inner),
        }
    }
}

impl<S: Sink> io::Write for NetasciiSink<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<S: Sink> Sink for NetasciiSink<S> {
    fn commit(&mut self) -> io::Result<()> {
        // Flushed first: a write-behind that refuses writes when full then has room
        // for the CR held back.
        self.inner.flush()?;
        self.inner.finish()?;
        self.inner.flush()?;
        self.inner.get_mut().commit()
    }
}

/// The source a transfer in `mode` sends: netascii converts as it reads.
pub fn source_for(mode: Mode, src: Box<dyn io::Read + Send>) -> Box<dyn io::Read + Send> {
    match mode {
        Mode::Netascii => Box::new(netascii::EncodingReader::new(src)),
        _ => src,
    }
}

/// The sink a transfer in `mode` writes: netascii converts as it writes.
pub fn sink_for(mode: Mode, sink: Box<dyn Sink + Send>) -> Box<dyn Sink + Send> {
    match mode {
        Mode::Netascii => Box::new(NetasciiSink::new(sink)),
        _ => sink,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Config, OpeningAck, Receiver, Sender, Status};
    use crate::rto::RtoEstimator;
    use crate::sim::Capture;
    use std::time::{Duration, Instant};

    fn oack(pairs: &[(&str, u64)]) -> OptionsBuf {
        let mut b = OptionsBuf::new();
        for (n, v) in pairs {
            b.push_number(n.as_bytes(), *v);
        }
        b
    }

    #[test]
    fn frames_become_tftp_packets() {
        let c = Tftp::new(Rollover::ToZero, oack(&[("blksize", 1024)]));
        let mut buf = [0u8; 600];
        let enc = |f: Frame, buf: &mut [u8]| {
            let n = c.encode(0, &f, buf).unwrap();
            buf[..n].to_vec()
        };
        assert_eq!(
            enc(
                Frame::Ack {
                    seq: 65_536 + 2,
                    sack: Sack::NONE
                },
                &mut buf
            ),
            b"\0\x04\0\x02"
        );
        let accept = Frame::Accept(Accept {
            nonce: 0,
            op: Op::Get,
            block_size: 1024,
            size: 5,
            window: 1,
        });
        assert_eq!(enc(accept, &mut buf), b"\0\x06blksize\x001024\0");
        let e = Frame::Error {
            seq: 3,
            code: ErrorCode::NotFound,
            message: "server has no file 'x'",
        };
        assert_eq!(enc(e, &mut buf), b"\0\x05\0\x01server has no file 'x'\0");
        let full = Frame::Error {
            seq: 3,
            code: ErrorCode::Io,
            message: "storing: No space left on device (os error 28)",
        };
        assert_eq!(&enc(full, &mut buf)[..4], b"\0\x05\0\x03");
        // TFTP has no DONE, WAIT or RETRY, and no OACK without options.
        for f in [
            Frame::Wait { seq: 1 },
            Frame::End {
                seq: 1,
                length: 0,
                crc: 0,
            },
            Frame::Retry([0; 16]),
        ] {
            assert!(c.encode(0, &f, &mut buf).is_err());
        }
        let plain = Tftp::default();
        assert!(plain.encode(0, &accept, &mut buf).is_err());
        // Data in place.
        buf[4..7].copy_from_slice(b"abc");
        let n = c.seal_data(&mut buf, 0, 65_535, 3);
        assert_eq!(&buf[..n], b"\0\x03\xff\xffabc");
    }

    #[test]
    fn tftp_packets_become_frames() {
        let c = Tftp::default();
        assert_eq!(
            c.decode(b"\0\x03\0\x00xy", 65_535).unwrap(),
            (
                0,
                Frame::Data {
                    seq: 65_536,
                    payload: b"xy"
                }
            )
        );
        assert_eq!(
            c.decode(b"\0\x04\0\x00", 1).unwrap().1,
            Frame::Ack {
                seq: 0,
                sack: Sack::NONE
            }
        );
        let (_, e) = c.decode(b"\0\x05\0\x08tsize probe\xff\0", 0).unwrap();
        assert_eq!(
            e,
            Frame::Error {
                seq: 0,
                code: ErrorCode::BadRequest,
                message: "tsize probe"
            }
        );
        let (_, a) = c
            .decode(b"\0\x06tsize\x00999\0blksize\x001428\0", 0)
            .unwrap();
        let Frame::Accept(a) = a else { panic!() };
        assert_eq!((a.block_size, a.size, a.window), (1428, 999, 1));
        assert!(c.decode(b"\0\x09\0\0", 0).is_err());
        assert!(c.decode(b"\0", 0).is_err());
    }

    /// The engine's sender and receiver over TFTP's encoding: past the 16-bit wrap both
    /// ways (rollover 0 and 1), lengths that are and are not multiples of the block.
    #[test]
    fn the_engine_runs_over_tftp_past_the_wrap() {
        let peer = "127.0.0.1:9".parse().unwrap();
        let cfg = Config {
            block_size: 8,
            ..Config::default()
        };
        for rollover in [Rollover::ToZero, Rollover::ToOne] {
            for len in [66_000 * 8, 66_000 * 8 + 3, 0, 7, 8] {
                let now = Instant::now();
                let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
                let codec = Tftp::new(rollover, OptionsBuf::new());
                let rto = || RtoEstimator::new(cfg.rto);
                let mut s = Sender::with_codec(
                    codec.clone(),
                    0,
                    peer,
                    Box::new(io::Cursor::new(data.clone())),
                    cfg,
                    rto(),
                    None,
                );
                let sink = Capture::default();
                let mut r = Receiver::with_codec(
                    codec,
                    0,
                    peer,
                    Box::new(sink.clone()),
                    cfg,
                    rto(),
                    OpeningAck::Nothing,
                    now,
                );
                let mut buf = [0u8; 64];
                let mut blocks = 0u64;
                while *s.status() == Status::Running {
                    blocks += 1;
                    assert!(blocks < 70_000, "no progress");
                    while let Some(b) = s.poll_transmit(now) {
                        let n = b.len();
                        buf[..n].copy_from_slice(b);
                        if blocks == 65_536 {
                            // The block after 65535: 0, or 1 with rollover 1.
                            let want = if rollover == Rollover::ToZero { 0 } else { 1 };
                            assert_eq!(u16::from_be_bytes([buf[2], buf[3]]), want);
                        }
                        r.handle_datagram(now, &buf[..n]);
                    }
                    if let Some(mut sink) = r.poll_commit() {
                        let stored = sink.commit();
                        r.commit_done(now, stored);
                    }
                    while let Some(b) = r.poll_transmit(now) {
                        let n = b.len();
                        buf[..n].copy_from_slice(b);
                        s.handle_datagram(now, &buf[..n]);
                    }
                }
                assert_eq!(*s.status(), Status::Closed, "{rollover:?} {len}");
                assert_eq!(*r.status(), Status::Complete);
                assert!(sink.contents() == data, "{rollover:?} {len}");
                assert_eq!(blocks, len / 8 + 1);
            }
        }
    }

    /// A server's first packet for an RRQ with options is the OACK; ACK 0 answers it;
    /// the client's ERROR 8 instead (the UEFI probe) ends the sender without a resend.
    #[test]
    fn oack_then_data_or_a_quiet_end() {
        let peer = "127.0.0.1:9".parse().unwrap();
        let cfg = Config {
            block_size: 512,
            ..Config::default()
        };
        let t0 = Instant::now();
        let accept = Accept {
            nonce: 0,
            op: Op::Get,
            block_size: 512,
            size: 3,
            window: 1,
        };
        let codec = Tftp::new(Rollover::ToZero, oack(&[("tsize", 3)]));
        let mut s = Sender::with_codec(
            codec.clone(),
            0,
            peer,
            Box::new(io::Cursor::new(b"abc".to_vec())),
            cfg,
            RtoEstimator::new(cfg.rto),
            Some(accept),
        );
        assert_eq!(s.poll_transmit(t0).unwrap(), b"\0\x06tsize\x003\0");
        s.handle_datagram(t0, b"\0\x04\0\0");
        assert_eq!(s.poll_transmit(t0).unwrap(), b"\0\x03\0\x01abc");
        let mut p = Sender::with_codec(
            codec,
            0,
            peer,
            Box::new(io::Cursor::new(b"abc".to_vec())),
            cfg,
            RtoEstimator::new(cfg.rto),
            Some(accept),
        );
        assert!(p.poll_transmit(t0).is_some());
        p.handle_datagram(t0, b"\0\x05\0\x08\0");
        assert!(matches!(p.status(), Status::Failed(_)));
        let later = t0 + Duration::from_secs(5);
        p.handle_timeout(later);
        assert!(
            p.poll_transmit(later).is_none(),
            "nothing resent, nothing answered"
        );
    }

    #[test]
    fn netascii_adapters_convert_both_ways() {
        let text = b"one\ntwo\r\nthree\r".to_vec();
        let mut wire = Vec::new();
        io::Read::read_to_end(
            &mut source_for(Mode::Netascii, Box::new(io::Cursor::new(text.clone()))),
            &mut wire,
        )
        .unwrap();
        assert_eq!(wire, b"one\r\ntwo\r\0\r\nthree\r\0");
        let cap = Capture::default();
        let mut sink = sink_for(Mode::Netascii, Box::new(cap.clone()));
        for c in wire.chunks(3) {
            io::Write::write_all(&mut sink, c).unwrap();
        }
        sink.commit().unwrap();
        assert_eq!(cap.contents(), text);
        // Octet: as it is.
        let cap = Capture::default();
        let mut sink = sink_for(Mode::Octet, Box::new(cap.clone()));
        io::Write::write_all(&mut sink, b"a\r\n").unwrap();
        assert_eq!(cap.contents(), b"a\r\n");
    }
}
