//! Frames: the protocol's packets as the engine decides on them, without their bytes.
//!
//! The state machines ([`super::Sender`], [`super::Receiver`], the sessions) take and
//! give frames; a [`super::Codec`] turns a frame into one encoding's datagram and back.
//! Sequence numbers here are always 64 bits and never wrap: an encoding with narrower
//! numbers on the wire (TFTP's 16-bit blocks) widens them when it decodes
//! ([`super::Codec::decode`]'s `near`) and narrows them when it encodes.

pub use crate::wire::{ErrorCode, Op, Seq, SessionId, Token};

/// The largest send window any encoding may grant: it bounds the selective
/// acknowledgement ([`Sack`]) and, with the block size, the memory a window holds.
pub const MAX_WINDOW: u16 = 1024;

/// A size field meaning "not known in advance" (a listing; a put of unknown length).
pub const UNKNOWN_SIZE: u64 = u64::MAX;

/// What a frame is, for traces and counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Request,
    Accept,
    Data,
    Ack,
    /// The explicit end of a stream (udpft's DONE). Encodings whose stream ends with a
    /// short block never send one.
    End,
    Error,
    Retry,
    Wait,
}

impl Kind {
    /// The lower-case word used in traces ("data #3 sent"). The end of a stream is
    /// called "done", as on udpft's wire.
    pub fn word(self) -> &'static str {
        match self {
            Kind::Request => "request",
            Kind::Accept => "accept",
            Kind::Data => "data",
            Kind::Ack => "ack",
            Kind::End => "done",
            Kind::Error => "error",
            Kind::Retry => "retry",
            Kind::Wait => "wait",
        }
    }
}

/// A client's request (udpft's REQUEST; TFTP's RRQ or WRQ with its options).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    pub op: Op,
    /// The largest block the client wants; the server may grant less.
    pub block_size: u32,
    /// For put, the stream's length (or [`UNKNOWN_SIZE`]); otherwise 0, ignored.
    pub size: u64,
    /// The path, relative to the server's root, `/`-separated.
    pub name: &'a str,
    /// The server's address-check token, echoed from its RETRY (udpft only).
    pub token: Option<Token>,
    /// The send window asked for: 1 is stop-and-wait (and what a client that never
    /// heard of windows asks).
    pub window: u16,
}

/// A server's acceptance (udpft's ACCEPT; TFTP's OACK).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accept {
    /// The session id of the REQUEST this answers (the client's nonce; 0 where the
    /// encoding has none).
    pub nonce: SessionId,
    pub op: Op,
    /// The block size granted: at most what was asked.
    pub block_size: u32,
    /// For get, the stream's length; [`UNKNOWN_SIZE`] if not known; otherwise 0.
    pub size: u64,
    /// The send window granted: at least 1, at most what was asked.
    pub window: u16,
}

/// Selective acknowledgement: which packets *above* an ACK's cumulative number have
/// arrived. Bit `k` stands for packet `ack + 1 + k` (so bit 0, the packet the
/// cumulative ack waits for, is never set). Fixed size: building one never allocates.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Sack {
    bits: [u64; MAX_WINDOW as usize / 64],
}

impl Sack {
    /// No packet above the cumulative ack has arrived (every stop-and-wait ACK).
    pub const NONE: Sack = Sack {
        bits: [0; MAX_WINDOW as usize / 64],
    };

    /// Marks packet `ack + 1 + k` as received; offsets of [`MAX_WINDOW`] or more are
    /// ignored (no window reaches them).
    pub fn set(&mut self, k: u64) {
        if k < MAX_WINDOW as u64 {
            self.bits[(k / 64) as usize] |= 1 << (k % 64);
        }
    }

    /// Whether packet `ack + 1 + k` is marked.
    pub fn get(&self, k: u64) -> bool {
        k < MAX_WINDOW as u64 && self.bits[(k / 64) as usize] & (1 << (k % 64)) != 0
    }

    pub fn is_empty(&self) -> bool {
        self.bits.iter().all(|&w| w == 0)
    }

    /// One more than the highest marked offset (0 if none): how many bits an encoding
    /// must carry.
    pub fn span(&self) -> u64 {
        for (i, &w) in self.bits.iter().enumerate().rev() {
            if w != 0 {
                return i as u64 * 64 + 64 - w.leading_zeros() as u64;
            }
        }
        0
    }

    /// The marked offsets, in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.span()).filter(|&k| self.get(k))
    }
}

impl std::fmt::Debug for Sack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// One packet of the protocol, decoded. Borrowed parts point into the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    Request(Request<'a>),
    /// The server's answer to a request; for a get or list it is the sender's packet 0.
    Accept(Accept),
    /// One block of the stream. Packet numbers start at 1.
    Data {
        seq: Seq,
        payload: &'a [u8],
    },
    /// Cumulative: every packet up to and including `seq` arrived (0 acknowledges the
    /// ACCEPT, or the REQUEST of a put); `sack` names later ones that arrived too.
    Ack {
        seq: Seq,
        sack: Sack,
    },
    /// The explicit end of the stream, numbered one past the last block: its total
    /// length and CRC32.
    End {
        seq: Seq,
        length: u64,
        crc: u32,
    },
    /// The receiver verified the end `seq` and is storing the data: do not resend it.
    Wait {
        seq: Seq,
    },
    /// The sender of this frame gave up; `seq` is informational.
    Error {
        seq: Seq,
        code: ErrorCode,
        message: &'a str,
    },
    /// The server's address check: send the request again with this token.
    Retry(Token),
}

impl Frame<'_> {
    pub fn kind(&self) -> Kind {
        match self {
            Frame::Request(_) => Kind::Request,
            Frame::Accept(_) => Kind::Accept,
            Frame::Data { .. } => Kind::Data,
            Frame::Ack { .. } => Kind::Ack,
            Frame::End { .. } => Kind::End,
            Frame::Wait { .. } => Kind::Wait,
            Frame::Error { .. } => Kind::Error,
            Frame::Retry(_) => Kind::Retry,
        }
    }

    /// The packet number this frame carries (0 for the handshake's frames).
    pub fn seq(&self) -> Seq {
        match *self {
            Frame::Data { seq, .. }
            | Frame::Ack { seq, .. }
            | Frame::End { seq, .. }
            | Frame::Wait { seq }
            | Frame::Error { seq, .. } => seq,
            Frame::Request(_) | Frame::Accept(_) | Frame::Retry(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sack_marks_and_spans() {
        let mut s = Sack::NONE;
        assert!(s.is_empty());
        assert_eq!(s.span(), 0);
        s.set(3);
        s.set(64);
        s.set(1023);
        s.set(5000); // beyond any window: ignored
        assert_eq!(s.iter().collect::<Vec<_>>(), [3, 64, 1023]);
        assert_eq!(s.span(), 1024);
        assert!(s.get(64) && !s.get(65));
    }
}
