//! The seam between the engine's decisions and a byte encoding.
//!
//! A [`Codec`] turns [`Frame`]s into one encoding's datagrams and back. The
//! [`super::Sender`] and [`super::Receiver`] are generic over it, so a second encoding
//! (TFTP) drives the same sequencing, timers, duplicate handling and close. A codec is a
//! value owned by one stream, so it may carry what that stream negotiated (TFTP: which
//! options its OACK repeats).
//!
//! What differs between encodings, and where the codec says so:
//! - **Packet numbers.** The engine counts in `u64` from 1 and never wraps. An encoding
//!   with narrower numbers widens each received one to the `u64` nearest the `near`
//!   that [`Codec::decode`] is given (the number the state machine expects next), and
//!   narrows (wraps) when it encodes.
//! - **The end of a stream.** [`StreamEnd::Explicit`]: after the last block comes an
//!   [`Frame::End`] carrying the length and CRC32, checked by the receiver (udpft's
//!   DONE). [`StreamEnd::ShortBlock`]: the first block shorter than the block size —
//!   empty if the length is a multiple of it — is the last, and its acknowledgement
//!   closes the stream (TFTP).
//! - **What an encoding cannot say.** [`Codec::encode`] fails for a frame the encoding
//!   has no datagram for (TFTP has no WAIT, no RETRY); the engine then sends nothing,
//!   which the peer's timers treat as a loss. A selective acknowledgement the encoding
//!   cannot carry is simply left out: the ACK stays cumulative.
//! - **Data in place.** The sender reads the source straight into the outgoing
//!   datagram at [`Codec::data_offset`], then [`Codec::seal_data`] writes the header
//!   (and checksum) around it: no copy, no allocation per packet.

use super::frame::{Accept, Frame, Kind, Request, Sack};
use crate::wire::{self, Datagram, Message, Seq, SessionId, WireError};

/// How a stream's end is marked (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// An end frame ([`Frame::End`]) follows the last block, with length and CRC32.
    Explicit,
    /// A block shorter than the block size (possibly empty) is the last one.
    ShortBlock,
}

/// One byte encoding of the protocol's frames. See the module documentation.
pub trait Codec {
    /// Where a DATA payload starts in an encoded datagram.
    fn data_offset(&self) -> usize;
    /// The bytes a DATA datagram carries besides its payload (header and trailer).
    fn overhead(&self) -> usize;
    /// How a stream ends in this encoding.
    fn stream_end(&self) -> StreamEnd;
    /// The longest error message an ERROR can carry, in bytes; longer ones are cut.
    fn max_message_len(&self) -> usize;
    /// Parses one datagram into the session key it carries (udpft's session id; 0 for
    /// an encoding without one) and its frame. `near` is the packet number the caller
    /// expects next: an encoding with narrow numbers widens to the one nearest it.
    ///
    /// # Errors
    /// The datagram is malformed or fails its checksum: drop it and count it.
    fn decode<'a>(&self, bytes: &'a [u8], near: Seq) -> Result<(SessionId, Frame<'a>), WireError>;
    /// Encodes `frame` for `session` into `buf`, returning its length.
    ///
    /// # Errors
    /// `buf` is too small, a field is out of range, or the encoding has no datagram
    /// for this frame: nothing is to be sent.
    fn encode(&self, session: SessionId, frame: &Frame, buf: &mut [u8])
    -> Result<usize, WireError>;
    /// Completes a DATA whose `payload_len` bytes already sit at
    /// `buf[data_offset()..]`, writing its header and trailer; returns its length.
    /// A zero `payload_len` occurs only with [`StreamEnd::ShortBlock`].
    fn seal_data(&self, buf: &mut [u8], session: SessionId, seq: Seq, payload_len: usize) -> usize;
}

/// The packet number nearest `near` whose low `bits` bits are `wire`: how an encoding
/// with narrow numbers (TFTP: 16 bits) widens what it received. Numbers below 1 (the
/// first block) are never returned for a `near` of 1 or more: the window around `near`
/// is `[near - 2^(bits-1), near + 2^(bits-1))`, clamped at 0.
pub fn widen(wire: u64, bits: u32, near: Seq) -> Seq {
    debug_assert!((1..64).contains(&bits));
    let span = 1u64 << bits;
    let mask = span - 1;
    let half = span / 2;
    let base = near.saturating_sub(half);
    // The first number at or above `base` with the right low bits.
    let delta = (wire & mask).wrapping_sub(base & mask) & mask;
    base.saturating_add(delta)
}

/// udpft's own encoding (PROTOCOL.md §2–§3), over [`crate::wire::udpft`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Udpft;

impl Codec for Udpft {
    fn data_offset(&self) -> usize {
        wire::HEADER_LEN
    }

    fn overhead(&self) -> usize {
        wire::OVERHEAD
    }

    fn stream_end(&self) -> StreamEnd {
        StreamEnd::Explicit
    }

    fn max_message_len(&self) -> usize {
        wire::MAX_MESSAGE_LEN
    }

    fn decode<'a>(&self, bytes: &'a [u8], _near: Seq) -> Result<(SessionId, Frame<'a>), WireError> {
        let d = Datagram::parse(bytes)?;
        Ok((d.session, from_datagram(&d)))
    }

    fn encode(
        &self,
        session: SessionId,
        frame: &Frame,
        buf: &mut [u8],
    ) -> Result<usize, WireError> {
        if let Frame::Ack { seq, sack } = frame
            && !sack.is_empty()
        {
            let mut bits = [0u8; wire::MAX_SACK_LEN];
            let n = sack_bitmap(sack, &mut bits);
            let d = Datagram {
                session,
                seq: *seq,
                message: Message::Sack(&bits[..n]),
            };
            return d.emit(buf);
        }
        to_datagram(session, frame).emit(buf)
    }

    fn seal_data(&self, buf: &mut [u8], session: SessionId, seq: Seq, payload_len: usize) -> usize {
        wire::emit_data_in_place(buf, session, seq, payload_len)
    }
}

impl From<wire::Kind> for Kind {
    /// The frame kind a udpft packet type carries.
    fn from(k: wire::Kind) -> Kind {
        match k {
            wire::Kind::Request => Kind::Request,
            wire::Kind::Accept => Kind::Accept,
            wire::Kind::Data => Kind::Data,
            wire::Kind::Ack => Kind::Ack,
            wire::Kind::Done => Kind::End,
            wire::Kind::Error => Kind::Error,
            wire::Kind::Retry => Kind::Retry,
            wire::Kind::Wait => Kind::Wait,
        }
    }
}

/// Writes `sack` as udpft's bitmap (bit *k* in byte *k*/8, most significant first);
/// returns its length in bytes.
fn sack_bitmap(sack: &Sack, bits: &mut [u8; wire::MAX_SACK_LEN]) -> usize {
    for k in sack.iter() {
        bits[(k / 8) as usize] |= 0x80 >> (k % 8);
    }
    sack.span().div_ceil(8) as usize
}

/// The selective acknowledgement a udpft bitmap carries.
fn sack_of(bits: &[u8]) -> Sack {
    let mut sack = Sack::NONE;
    for (i, &b) in bits.iter().enumerate() {
        for j in 0..8 {
            if b & (0x80 >> j) != 0 {
                sack.set(i as u64 * 8 + j);
            }
        }
    }
    sack
}

/// The frame a parsed udpft datagram carries.
pub(crate) fn from_datagram<'a>(d: &Datagram<'a>) -> Frame<'a> {
    let seq = d.seq;
    match d.message {
        Message::Request(r) => Frame::Request(Request {
            op: r.op,
            block_size: r.block_size,
            size: r.size,
            name: r.name,
            token: r.token,
            window: r.window,
        }),
        Message::Accept(a) => Frame::Accept(Accept {
            nonce: a.nonce,
            op: a.op,
            block_size: a.block_size,
            size: a.size,
            window: a.window,
        }),
        Message::Data(payload) => Frame::Data { seq, payload },
        Message::Ack => Frame::Ack {
            seq,
            sack: Sack::NONE,
        },
        Message::Sack(bits) => Frame::Ack {
            seq,
            sack: sack_of(bits),
        },
        Message::Done { length, crc } => Frame::End { seq, length, crc },
        Message::Error { code, message } => Frame::Error { seq, code, message },
        Message::Retry(t) => Frame::Retry(t),
        Message::Wait => Frame::Wait { seq },
    }
}

/// The udpft datagram that carries `frame` for `session` (an ACK without its selective
/// part: [`Udpft::encode`] adds it).
pub(crate) fn to_datagram<'a>(session: SessionId, frame: &Frame<'a>) -> Datagram<'a> {
    let (seq, message) = match *frame {
        Frame::Request(r) => (
            0,
            Message::Request(wire::Request {
                op: r.op,
                block_size: r.block_size,
                size: r.size,
                name: r.name,
                token: r.token,
                window: r.window,
            }),
        ),
        Frame::Accept(a) => (
            0,
            Message::Accept(wire::Accept {
                nonce: a.nonce,
                op: a.op,
                block_size: a.block_size,
                size: a.size,
                window: a.window,
            }),
        ),
        Frame::Data { seq, payload } => (seq, Message::Data(payload)),
        Frame::Ack { seq, .. } => (seq, Message::Ack),
        Frame::End { seq, length, crc } => (seq, Message::Done { length, crc }),
        Frame::Wait { seq } => (seq, Message::Wait),
        Frame::Error { seq, code, message } => (seq, Message::Error { code, message }),
        Frame::Retry(t) => (0, Message::Retry(t)),
    };
    Datagram {
        session,
        seq,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Config, NullSink, OpeningAck, Receiver, Sender, Sink, Status};
    use crate::rto::RtoEstimator;
    use crate::wire::{ErrorCode, Op};

    #[test]
    fn widening_picks_the_nearest_number() {
        assert_eq!(widen(5, 16, 1), 5);
        assert_eq!(widen(65_535, 16, 65_530), 65_535);
        assert_eq!(widen(0, 16, 65_530), 65_536);
        assert_eq!(widen(3, 16, 65_536 + 2), 65_536 + 3);
        assert_eq!(widen(65_534, 16, 65_536 + 2), 65_534);
        assert_eq!(widen(7, 16, 3 * 65_536 + 40_000), 4 * 65_536 + 7);
    }

    /// A second encoding in miniature, as TFTP is: a 1-byte type, a 16-bit block number
    /// that wraps, no checksum, no session key, no DONE (a short block ends the stream),
    /// no WAIT. It drives the very same Sender and Receiver.
    struct Toy;

    impl Codec for Toy {
        fn data_offset(&self) -> usize {
            3
        }
        fn overhead(&self) -> usize {
            3
        }
        fn stream_end(&self) -> StreamEnd {
            StreamEnd::ShortBlock
        }
        fn max_message_len(&self) -> usize {
            100
        }
        fn decode<'a>(&self, b: &'a [u8], near: Seq) -> Result<(SessionId, Frame<'a>), WireError> {
            if b.len() < 3 {
                return Err(WireError::TooShort(b.len()));
            }
            let seq = widen(u16::from_be_bytes([b[1], b[2]]) as u64, 16, near);
            let f = match b[0] {
                1 => Frame::Data {
                    seq,
                    payload: &b[3..],
                },
                2 => Frame::Ack {
                    seq,
                    sack: Sack::NONE,
                },
                3 => Frame::Error {
                    seq: 0,
                    code: ErrorCode::Aborted,
                    message: "",
                },
                t => return Err(WireError::UnknownType(t)),
            };
            Ok((0, f))
        }
        fn encode(&self, _: SessionId, f: &Frame, b: &mut [u8]) -> Result<usize, WireError> {
            let (t, seq) = match *f {
                Frame::Ack { seq, .. } => (2, seq),
                Frame::Error { .. } => (3, 0),
                _ => return Err(WireError::Malformed("not in this encoding")),
            };
            b[0] = t;
            b[1..3].copy_from_slice(&(seq as u16).to_be_bytes());
            Ok(3)
        }
        fn seal_data(&self, b: &mut [u8], _: SessionId, seq: Seq, len: usize) -> usize {
            b[0] = 1;
            b[1..3].copy_from_slice(&(seq as u16).to_be_bytes());
            3 + len
        }
    }

    /// The generic engine over the toy encoding: past the 16-bit wrap, with a length
    /// that is a multiple of the block size (so the last block is empty), and with one
    /// that is not.
    #[test]
    fn a_second_encoding_drives_the_same_engine() {
        let peer = "127.0.0.1:9".parse().unwrap();
        let cfg = Config {
            block_size: 8,
            ..Config::default()
        };
        for len in [70_000 * 8, 70_000 * 8 + 5, 0, 3] {
            let now = std::time::Instant::now();
            let src = std::io::Read::take(std::io::repeat(9), len);
            let rto = || RtoEstimator::new(cfg.rto);
            let mut s = Sender::with_codec(Toy, 0, peer, Box::new(src), cfg, rto(), None);
            let sink = NullSink::default();
            let mut r = Receiver::with_codec(
                Toy,
                0,
                peer,
                Box::new(sink),
                cfg,
                rto(),
                OpeningAck::Nothing,
                now,
            );
            let mut buf = [0u8; 64];
            let mut rounds = 0u64;
            while *s.status() == Status::Running {
                rounds += 1;
                assert!(rounds < 80_000, "no progress");
                while let Some(b) = s.poll_transmit(now) {
                    let n = b.len();
                    buf[..n].copy_from_slice(b);
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
            assert_eq!(*s.status(), Status::Closed, "len {len}");
            assert_eq!(*r.status(), Status::Complete, "len {len}");
            assert_eq!(r.stats().bytes, len);
            assert_eq!(s.stats().resent, 0);
            // Blocks of 8, plus the short (maybe empty) last one.
            assert_eq!(rounds, len / 8 + 1, "len {len}");
        }
    }

    /// Every frame survives encode → decode unchanged, and the bytes are exactly what
    /// the wire module emits for the same datagram.
    #[test]
    fn udpft_frames_roundtrip() {
        let frames = [
            Frame::Request(Request {
                op: Op::Put,
                block_size: 1408,
                size: 12,
                name: "a/b",
                token: Some([7; 16]),
                window: 1,
            }),
            Frame::Accept(Accept {
                nonce: 9,
                op: Op::Get,
                block_size: 512,
                size: 3,
                window: 1,
            }),
            Frame::Data {
                seq: 4,
                payload: b"xyz",
            },
            Frame::Ack {
                seq: 4,
                sack: Sack::NONE,
            },
            Frame::Ack {
                seq: 4,
                sack: {
                    let mut s = Sack::NONE;
                    s.set(1);
                    s.set(9);
                    s.set(1023);
                    s
                },
            },
            Frame::Accept(Accept {
                nonce: 9,
                op: Op::Get,
                block_size: 512,
                size: 3,
                window: 64,
            }),
            Frame::End {
                seq: 5,
                length: 3,
                crc: 0xdead_beef,
            },
            Frame::Wait { seq: 5 },
            Frame::Error {
                seq: 2,
                code: ErrorCode::Io,
                message: "disk full",
            },
            Frame::Retry([1; 16]),
        ];
        let mut buf = [0u8; 512];
        for f in frames {
            let n = Udpft.encode(77, &f, &mut buf).unwrap();
            let (session, back) = Udpft.decode(&buf[..n], 0).unwrap();
            assert_eq!((session, back), (77, f));
            if !matches!(f, Frame::Ack { sack, .. } if !sack.is_empty()) {
                let mut direct = [0u8; 512];
                let m = to_datagram(77, &f).emit(&mut direct).unwrap();
                assert_eq!(&buf[..n], &direct[..m]);
            }
        }
        // In place: the same bytes as an encoded DATA.
        let mut a = [0u8; 64];
        a[Udpft.data_offset()..][..3].copy_from_slice(b"xyz");
        let n = Udpft.seal_data(&mut a, 77, 4, 3);
        let m = Udpft
            .encode(
                77,
                &Frame::Data {
                    seq: 4,
                    payload: b"xyz",
                },
                &mut buf,
            )
            .unwrap();
        assert_eq!(&a[..n], &buf[..m]);
    }
}
