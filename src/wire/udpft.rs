//! The udpft datagram format: bytes in, typed values out, nothing else.
//!
//! This module owns no socket, reads no clock and allocates nothing. It turns a
//! received datagram into a [`Datagram`] (checking the CRC32 *before* any field
//! is trusted) and writes a [`Datagram`] into a caller's buffer. The layout is
//! specified normatively in PROTOCOL.md §2 ("Datagram layout"):
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  magic 'U' 0x55 |  magic 'F' 0x46 |   version = 1  |    type     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                     session id (64 bits)                        |
//! +                                                                 +
//! |                                                                 |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                   sequence number (64 bits)                     |
//! +                                                                 +
//! |                                                                 |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |       payload length (16)       |  payload (length bytes) ...   |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+                               +
//! |                              ...                                |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |        CRC32 (IEEE) of every byte before this field             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! All integers are big-endian. A datagram is exactly
//! `HEADER_LEN + payload length + CRC_LEN` bytes long; anything else is malformed.

use thiserror::Error;

/// Sequence numbers are 64 bits wide: at one block per round trip they never wrap.
pub type Seq = u64;
/// A session id: the client's random nonce in a REQUEST, the server's random id otherwise.
pub type SessionId = u64;

/// The protocol version this module speaks.
pub const VERSION: u8 = 1;
/// The two magic bytes "UF". The first byte is never 0, so a udpft datagram can never
/// be mistaken for a TFTP one (whose opcode's first byte is always 0).
pub const MAGIC: [u8; 2] = [0x55, 0x46];
/// Bytes before the payload.
pub const HEADER_LEN: usize = 22;
/// Bytes after the payload.
pub const CRC_LEN: usize = 4;
/// Bytes every datagram carries besides its payload.
pub const OVERHEAD: usize = HEADER_LEN + CRC_LEN;
/// The largest UDP payload over IPv4 (65535 − 20 IP − 8 UDP); also the largest datagram.
pub const MAX_DATAGRAM: usize = 65_507;
/// The largest payload, and so the largest data block.
pub const MAX_PAYLOAD: usize = MAX_DATAGRAM - OVERHEAD;
/// The largest block size a peer may ask for or grant.
pub const MAX_BLOCK_SIZE: u32 = MAX_PAYLOAD as u32;
/// The smallest block size a peer may ask for or grant.
pub const MIN_BLOCK_SIZE: u32 = 8;
/// The default block size: a datagram of 1434 bytes fits a 1500-byte Ethernet MTU
/// without fragmentation over IPv6 (1500 − 40 − 8 = 1452) and IPv4 (1472).
pub const DEFAULT_BLOCK_SIZE: u32 = 1408;
/// The longest file name, in bytes of UTF-8.
pub const MAX_NAME_LEN: usize = 1024;
/// The longest error message, in bytes of UTF-8.
pub const MAX_MESSAGE_LEN: usize = 1024;
/// A REQUEST datagram shorter than this is malformed: padding it makes the
/// anti-amplification budget (PROTOCOL.md §5) large enough for the server's replies.
pub const MIN_REQUEST_LEN: usize = 256;
/// A size field meaning "not known in advance" (a listing).
pub const UNKNOWN_SIZE: u64 = u64::MAX;
/// The length of an address-check token (RETRY, and a REQUEST that carries one).
pub const TOKEN_LEN: usize = 16;
/// An address-check token: opaque to the client, checked only by the server that made it.
pub type Token = [u8; TOKEN_LEN];
/// The REQUEST flag that says a token follows the name.
pub const FLAG_TOKEN: u8 = 0x01;
/// The REQUEST flag that says a 16-bit send window follows the name (and token).
pub const FLAG_WINDOW: u8 = 0x02;
/// The ACCEPT flag that says a 16-bit send window (the one granted) ends the payload.
pub const ACCEPT_FLAG_WINDOW: u8 = 0x01;
/// The largest send window a REQUEST may ask for or an ACCEPT grant.
pub const MAX_WINDOW: u16 = 1024;
/// The longest selective-acknowledgement bitmap an ACK carries: one bit per packet of
/// the largest window.
pub const MAX_SACK_LEN: usize = MAX_WINDOW as usize / 8;

/// Byte ranges of the header and payload fields (PROTOCOL.md §2–§3).
mod field {
    pub type Field = core::ops::Range<usize>;
    pub const MAGIC: Field = 0..2;
    pub const VERSION: usize = 2;
    pub const TYPE: usize = 3;
    pub const SESSION: Field = 4..12;
    pub const SEQ: Field = 12..20;
    pub const LENGTH: Field = 20..22;

    // Payload fields, relative to the start of the payload.
    pub const REQ_OP: usize = 0;
    pub const REQ_FLAGS: usize = 1;
    pub const REQ_BLOCK: Field = 2..6;
    pub const REQ_SIZE: Field = 6..14;
    pub const REQ_NAME_LEN: Field = 14..16;
    pub const REQ_NAME: usize = 16;

    pub const ACC_NONCE: Field = 0..8;
    pub const ACC_OP: usize = 8;
    pub const ACC_FLAGS: usize = 9;
    pub const ACC_BLOCK: Field = 10..14;
    pub const ACC_SIZE: Field = 14..22;
    pub const ACC_LEN: usize = 22;
    pub const ACC_WINDOW: Field = 22..24;
    pub const ACC_LEN_WINDOW: usize = 24;

    pub const DONE_LENGTH: Field = 0..8;
    pub const DONE_CRC: Field = 8..12;
    pub const DONE_LEN: usize = 12;

    pub const ERR_CODE: Field = 0..2;
    pub const ERR_MESSAGE: usize = 2;
}

/// The packet type byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Request = 1,
    Accept = 2,
    Data = 3,
    Ack = 4,
    Done = 5,
    Error = 6,
    Retry = 7,
    Wait = 8,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            1 => Kind::Request,
            2 => Kind::Accept,
            3 => Kind::Data,
            4 => Kind::Ack,
            5 => Kind::Done,
            6 => Kind::Error,
            7 => Kind::Retry,
            8 => Kind::Wait,
            _ => return None,
        })
    }
}

/// What a client asks the server to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Op {
    /// Download a file: the server sends, the client receives.
    Get = 1,
    /// Upload a file: the client sends, the server receives.
    Put = 2,
    /// Download a directory listing (PROTOCOL.md §3.9), as a get does.
    List = 3,
    /// Remove a file. Answered by ACCEPT alone.
    Delete = 4,
    /// Ask the server to shut down. Answered by ACCEPT alone.
    Exit = 5,
}

impl Op {
    fn from_u8(v: u8) -> Option<Op> {
        Some(match v {
            1 => Op::Get,
            2 => Op::Put,
            3 => Op::List,
            4 => Op::Delete,
            5 => Op::Exit,
            _ => return None,
        })
    }

    /// The lower-case name used in logs and messages.
    pub fn name(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Put => "put",
            Op::List => "list",
            Op::Delete => "delete",
            Op::Exit => "exit",
        }
    }
}

/// Numbered error codes carried by ERROR (PROTOCOL.md §3.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Anything not covered below.
    Undefined,
    /// The named file or directory does not exist.
    NotFound,
    /// The path leaves the served root, or the operating system refused access.
    AccessDenied,
    /// A put would replace an existing file and the server does not allow overwriting.
    AlreadyExists,
    /// The server is at its session limit, or shutting down.
    Busy,
    /// The server's policy forbids this operation (read-only, delete or exit disabled).
    NotAllowed,
    /// The request is malformed or asks for something unsupported.
    BadRequest,
    /// Reading or writing the file failed on the side that sends this error.
    Io,
    /// The length or CRC32 in DONE does not match the bytes received.
    Integrity,
    /// The sending side gave up or was interrupted.
    Aborted,
    /// A code this version does not know; the number is kept.
    Other(u16),
}

impl ErrorCode {
    /// The number on the wire.
    pub fn to_u16(self) -> u16 {
        match self {
            ErrorCode::Undefined => 0,
            ErrorCode::NotFound => 1,
            ErrorCode::AccessDenied => 2,
            ErrorCode::AlreadyExists => 3,
            ErrorCode::Busy => 4,
            ErrorCode::NotAllowed => 5,
            ErrorCode::BadRequest => 6,
            ErrorCode::Io => 7,
            ErrorCode::Integrity => 8,
            ErrorCode::Aborted => 9,
            ErrorCode::Other(n) => n,
        }
    }

    /// The code for a number on the wire; unknown numbers are kept as [`ErrorCode::Other`].
    pub fn from_u16(n: u16) -> ErrorCode {
        match n {
            0 => ErrorCode::Undefined,
            1 => ErrorCode::NotFound,
            2 => ErrorCode::AccessDenied,
            3 => ErrorCode::AlreadyExists,
            4 => ErrorCode::Busy,
            5 => ErrorCode::NotAllowed,
            6 => ErrorCode::BadRequest,
            7 => ErrorCode::Io,
            8 => ErrorCode::Integrity,
            9 => ErrorCode::Aborted,
            n => ErrorCode::Other(n),
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            ErrorCode::Undefined => "error",
            ErrorCode::NotFound => "not found",
            ErrorCode::AccessDenied => "access denied",
            ErrorCode::AlreadyExists => "already exists",
            ErrorCode::Busy => "busy",
            ErrorCode::NotAllowed => "not allowed",
            ErrorCode::BadRequest => "bad request",
            ErrorCode::Io => "I/O error",
            ErrorCode::Integrity => "integrity check failed",
            ErrorCode::Aborted => "aborted",
            ErrorCode::Other(n) => return write!(f, "error {n}"),
        };
        f.write_str(s)
    }
}

/// A REQUEST's fields (PROTOCOL.md §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    pub op: Op,
    /// The largest block the client wants; the server may grant less.
    pub block_size: u32,
    /// For put, the file's length; otherwise [`UNKNOWN_SIZE`] or 0, ignored.
    pub size: u64,
    /// The path, relative to the server's root, `/`-separated.
    pub name: &'a str,
    /// The server's address-check token, echoed from its RETRY (PROTOCOL.md §4.3).
    pub token: Option<Token>,
    /// The send window asked for (PROTOCOL.md §4.5); 1 (stop-and-wait) is not written
    /// on the wire, so such a REQUEST is byte for byte what a peer without windows sends.
    pub window: u16,
}

/// An ACCEPT's fields (PROTOCOL.md §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accept {
    /// The session id of the REQUEST this answers (the client's nonce).
    pub nonce: SessionId,
    pub op: Op,
    /// The block size granted: at most what was asked.
    pub block_size: u32,
    /// For get, the file's length; for list, [`UNKNOWN_SIZE`]; otherwise 0.
    pub size: u64,
    /// The send window granted, at most the one asked for; 1 is not written on the wire.
    pub window: u16,
}

/// A datagram's meaning, by packet type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    Request(Request<'a>),
    Accept(Accept),
    /// One block of the stream, 1 to block-size bytes.
    Data(&'a [u8]),
    Ack,
    /// An ACK with a selective acknowledgement (PROTOCOL.md §3.4): bit *k* of the
    /// bitmap (byte *k*/8, most significant bit first) stands for packet seq + 1 + *k*.
    /// Never empty; its first bit is clear and its last byte is not zero.
    Sack(&'a [u8]),
    /// The end of the stream: its total length and the CRC32 of all its bytes.
    Done {
        length: u64,
        crc: u32,
    },
    Error {
        code: ErrorCode,
        message: &'a str,
    },
    /// The server's answer to a REQUEST without a valid token: resend it with this one.
    Retry(Token),
    /// The receiver has verified DONE and is storing the data: do not resend DONE.
    Wait,
}

/// One parsed (or to-be-emitted) datagram: header fields plus the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram<'a> {
    pub session: SessionId,
    pub seq: Seq,
    pub message: Message<'a>,
}

/// Why a datagram was rejected. Every one of these is dropped and counted, never acted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum WireError {
    #[error("datagram too short ({0} bytes)")]
    TooShort(usize),
    #[error("datagram too long ({0} bytes)")]
    TooLong(usize),
    #[error("bad checksum")]
    BadChecksum,
    #[error("not a udpft datagram (bad magic)")]
    BadMagic,
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u8),
    #[error("unknown packet type {0}")]
    UnknownType(u8),
    #[error("length field disagrees with the datagram size")]
    LengthMismatch,
    #[error("malformed {0}")]
    Malformed(&'static str),
    #[error("buffer too small to emit the datagram")]
    BufferTooSmall,
}

fn be_u16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}
fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}
fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// The CRC32 (IEEE 802.3, as in zlib and Ethernet) of `bytes`.
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

impl<'a> Datagram<'a> {
    /// Parses and fully validates one received datagram.
    ///
    /// The order of checks is normative (PROTOCOL.md §6): size bounds, then the CRC32
    /// over the whole datagram, then magic, version, type, length, and the payload's
    /// own structure. Nothing in the datagram is read before the checksum has passed.
    /// On `Ok` every field is in range for its type.
    pub fn parse(bytes: &'a [u8]) -> Result<Datagram<'a>, WireError> {
        if bytes.len() < OVERHEAD {
            return Err(WireError::TooShort(bytes.len()));
        }
        if bytes.len() > MAX_DATAGRAM {
            return Err(WireError::TooLong(bytes.len()));
        }
        let (body, crc) = bytes.split_at(bytes.len() - CRC_LEN);
        if crc32(body) != be_u32(crc) {
            return Err(WireError::BadChecksum);
        }
        if body[field::MAGIC] != MAGIC {
            return Err(WireError::BadMagic);
        }
        if body[field::VERSION] != VERSION {
            return Err(WireError::UnsupportedVersion(body[field::VERSION]));
        }
        let kind =
            Kind::from_u8(body[field::TYPE]).ok_or(WireError::UnknownType(body[field::TYPE]))?;
        let len = be_u16(&body[field::LENGTH]) as usize;
        if HEADER_LEN + len != body.len() {
            return Err(WireError::LengthMismatch);
        }
        let session = be_u64(&body[field::SESSION]);
        let seq = be_u64(&body[field::SEQ]);
        let p = &body[HEADER_LEN..];
        let message = match kind {
            Kind::Request => Message::Request(parse_request(bytes.len(), session, seq, p)?),
            Kind::Accept if session == 0 => return Err(WireError::Malformed("accept")),
            Kind::Accept => Message::Accept(parse_accept(seq, p)?),
            Kind::Data => {
                if p.is_empty() || seq == 0 {
                    return Err(WireError::Malformed("data"));
                }
                Message::Data(p)
            }
            Kind::Ack if p.is_empty() => Message::Ack,
            Kind::Ack => {
                if p.len() > MAX_SACK_LEN || p[0] & 0x80 != 0 || p[p.len() - 1] == 0 {
                    return Err(WireError::Malformed("ack"));
                }
                Message::Sack(p)
            }
            Kind::Done => {
                if p.len() != field::DONE_LEN || seq == 0 {
                    return Err(WireError::Malformed("done"));
                }
                Message::Done {
                    length: be_u64(&p[field::DONE_LENGTH]),
                    crc: be_u32(&p[field::DONE_CRC]),
                }
            }
            Kind::Retry => {
                if p.len() != TOKEN_LEN || seq != 0 || session == 0 {
                    return Err(WireError::Malformed("retry"));
                }
                let mut t = [0u8; TOKEN_LEN];
                t.copy_from_slice(p);
                Message::Retry(t)
            }
            Kind::Wait => {
                if !p.is_empty() || seq == 0 {
                    return Err(WireError::Malformed("wait"));
                }
                Message::Wait
            }
            Kind::Error => {
                if p.len() < field::ERR_MESSAGE || p.len() - field::ERR_MESSAGE > MAX_MESSAGE_LEN {
                    return Err(WireError::Malformed("error"));
                }
                let message = std::str::from_utf8(&p[field::ERR_MESSAGE..])
                    .map_err(|_| WireError::Malformed("error message (not UTF-8)"))?;
                Message::Error {
                    code: ErrorCode::from_u16(be_u16(&p[field::ERR_CODE])),
                    message,
                }
            }
        };
        Ok(Datagram {
            session,
            seq,
            message,
        })
    }

    /// The packet type of this datagram.
    pub fn kind(&self) -> Kind {
        match self.message {
            Message::Request(_) => Kind::Request,
            Message::Accept(_) => Kind::Accept,
            Message::Data(_) => Kind::Data,
            Message::Ack | Message::Sack(_) => Kind::Ack,
            Message::Done { .. } => Kind::Done,
            Message::Error { .. } => Kind::Error,
            Message::Retry(_) => Kind::Retry,
            Message::Wait => Kind::Wait,
        }
    }

    /// The payload length this datagram will have on the wire.
    pub fn payload_len(&self) -> usize {
        match self.message {
            Message::Request(r) => {
                let token = if r.token.is_some() { TOKEN_LEN } else { 0 };
                let window = if r.window > 1 { 2 } else { 0 };
                let natural = field::REQ_NAME + r.name.len() + token + window;
                natural.max(MIN_REQUEST_LEN - OVERHEAD)
            }
            Message::Accept(a) if a.window > 1 => field::ACC_LEN_WINDOW,
            Message::Accept(_) => field::ACC_LEN,
            Message::Data(d) => d.len(),
            Message::Ack => 0,
            Message::Sack(b) => b.len(),
            Message::Done { .. } => field::DONE_LEN,
            Message::Error { message, .. } => field::ERR_MESSAGE + message.len(),
            Message::Retry(_) => TOKEN_LEN,
            Message::Wait => 0,
        }
    }

    /// The total number of bytes [`Datagram::emit`] writes.
    pub fn wire_len(&self) -> usize {
        OVERHEAD + self.payload_len()
    }

    /// Writes this datagram into `buf` and returns its length.
    ///
    /// REQUESTs are zero-padded to [`MIN_REQUEST_LEN`]. Fails, writing nothing useful,
    /// if `buf` is too small or a field is out of range (a name or message too long,
    /// a data block empty or larger than [`MAX_PAYLOAD`]).
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let payload_len = self.payload_len();
        let total = OVERHEAD + payload_len;
        if total > MAX_DATAGRAM {
            return Err(WireError::TooLong(total));
        }
        if buf.len() < total {
            return Err(WireError::BufferTooSmall);
        }
        let p = &mut buf[HEADER_LEN..HEADER_LEN + payload_len];
        match self.message {
            Message::Request(r) => {
                if r.name.len() > MAX_NAME_LEN {
                    return Err(WireError::Malformed("request (name too long)"));
                }
                if r.window == 0 || r.window > MAX_WINDOW {
                    return Err(WireError::Malformed("request (window out of range)"));
                }
                p.fill(0);
                p[field::REQ_OP] = r.op as u8;
                p[field::REQ_FLAGS] = if r.token.is_some() { FLAG_TOKEN } else { 0 }
                    | if r.window > 1 { FLAG_WINDOW } else { 0 };
                p[field::REQ_BLOCK].copy_from_slice(&r.block_size.to_be_bytes());
                p[field::REQ_SIZE].copy_from_slice(&r.size.to_be_bytes());
                p[field::REQ_NAME_LEN].copy_from_slice(&(r.name.len() as u16).to_be_bytes());
                let end = field::REQ_NAME + r.name.len();
                p[field::REQ_NAME..end].copy_from_slice(r.name.as_bytes());
                let mut end = end;
                if let Some(t) = r.token {
                    p[end..end + TOKEN_LEN].copy_from_slice(&t);
                    end += TOKEN_LEN;
                }
                if r.window > 1 {
                    p[end..end + 2].copy_from_slice(&r.window.to_be_bytes());
                }
            }
            Message::Accept(a) => {
                if a.window == 0 || a.window > MAX_WINDOW {
                    return Err(WireError::Malformed("accept (window out of range)"));
                }
                p[field::ACC_NONCE].copy_from_slice(&a.nonce.to_be_bytes());
                p[field::ACC_OP] = a.op as u8;
                p[field::ACC_FLAGS] = 0;
                p[field::ACC_BLOCK].copy_from_slice(&a.block_size.to_be_bytes());
                p[field::ACC_SIZE].copy_from_slice(&a.size.to_be_bytes());
                if a.window > 1 {
                    p[field::ACC_FLAGS] = ACCEPT_FLAG_WINDOW;
                    p[field::ACC_WINDOW].copy_from_slice(&a.window.to_be_bytes());
                }
            }
            Message::Data(d) => {
                if d.is_empty() {
                    return Err(WireError::Malformed("data (empty)"));
                }
                p.copy_from_slice(d);
            }
            Message::Ack => {}
            Message::Sack(b) => {
                if b.is_empty() || b.len() > MAX_SACK_LEN || b[0] & 0x80 != 0 || b[b.len() - 1] == 0
                {
                    return Err(WireError::Malformed("ack (selective bitmap)"));
                }
                p.copy_from_slice(b);
            }
            Message::Done { length, crc } => {
                p[field::DONE_LENGTH].copy_from_slice(&length.to_be_bytes());
                p[field::DONE_CRC].copy_from_slice(&crc.to_be_bytes());
            }
            Message::Error { code, message } => {
                if message.len() > MAX_MESSAGE_LEN {
                    return Err(WireError::Malformed("error (message too long)"));
                }
                p[field::ERR_CODE].copy_from_slice(&code.to_u16().to_be_bytes());
                p[field::ERR_MESSAGE..].copy_from_slice(message.as_bytes());
            }
            Message::Retry(t) => p.copy_from_slice(&t),
            Message::Wait => {}
        }
        write_header(buf, self.kind(), self.session, self.seq, payload_len);
        seal(buf, total);
        Ok(total)
    }
}

fn write_header(buf: &mut [u8], kind: Kind, session: SessionId, seq: Seq, payload_len: usize) {
    buf[field::MAGIC].copy_from_slice(&MAGIC);
    buf[field::VERSION] = VERSION;
    buf[field::TYPE] = kind as u8;
    buf[field::SESSION].copy_from_slice(&session.to_be_bytes());
    buf[field::SEQ].copy_from_slice(&seq.to_be_bytes());
    buf[field::LENGTH].copy_from_slice(&(payload_len as u16).to_be_bytes());
}

/// Writes the CRC32 of `buf[..total - CRC_LEN]` into the last four bytes of `buf[..total]`.
fn seal(buf: &mut [u8], total: usize) {
    let crc = crc32(&buf[..total - CRC_LEN]);
    buf[total - CRC_LEN..total].copy_from_slice(&crc.to_be_bytes());
}

/// Completes a DATA datagram whose payload the caller already placed at
/// `buf[HEADER_LEN..HEADER_LEN + payload_len]` (for instance by reading a file straight
/// into it), writing the header and the CRC32. Returns the datagram's length.
///
/// # Panics
/// If `payload_len` is 0 or more than [`MAX_PAYLOAD`], or `buf` cannot hold the datagram.
pub fn emit_data_in_place(
    buf: &mut [u8],
    session: SessionId,
    seq: Seq,
    payload_len: usize,
) -> usize {
    assert!(
        payload_len > 0 && payload_len <= MAX_PAYLOAD,
        "data payload length out of range"
    );
    let total = OVERHEAD + payload_len;
    write_header(buf, Kind::Data, session, seq, payload_len);
    seal(buf, total);
    total
}

fn parse_request<'a>(
    total_len: usize,
    session: SessionId,
    seq: Seq,
    p: &'a [u8],
) -> Result<Request<'a>, WireError> {
    const E: WireError = WireError::Malformed("request");
    if total_len < MIN_REQUEST_LEN || session == 0 || seq != 0 || p.len() < field::REQ_NAME {
        return Err(E);
    }
    let op = Op::from_u8(p[field::REQ_OP]).ok_or(E)?;
    let flags = p[field::REQ_FLAGS];
    if flags & !(FLAG_TOKEN | FLAG_WINDOW) != 0 {
        return Err(E);
    }
    let block_size = be_u32(&p[field::REQ_BLOCK]);
    if !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size) {
        return Err(E);
    }
    let name_len = be_u16(&p[field::REQ_NAME_LEN]) as usize;
    if name_len > MAX_NAME_LEN || field::REQ_NAME + name_len > p.len() {
        return Err(E);
    }
    let name =
        std::str::from_utf8(&p[field::REQ_NAME..field::REQ_NAME + name_len]).map_err(|_| E)?;
    let mut rest = field::REQ_NAME + name_len;
    let token = if flags & FLAG_TOKEN != 0 {
        let t: Token = p
            .get(rest..rest + TOKEN_LEN)
            .ok_or(E)?
            .try_into()
            .map_err(|_| E)?;
        rest += TOKEN_LEN;
        Some(t)
    } else {
        None
    };
    let window = if flags & FLAG_WINDOW != 0 {
        let w = p.get(rest..rest + 2).ok_or(E)?;
        rest += 2;
        match u16::from_be_bytes([w[0], w[1]]) {
            w @ 2..=MAX_WINDOW => w,
            _ => return Err(E),
        }
    } else {
        1
    };
    // Padding must be zeros: it keeps the format strict and leaves room for later versions.
    if p[rest..].iter().any(|&b| b != 0) {
        return Err(E);
    }
    Ok(Request {
        op,
        block_size,
        size: be_u64(&p[field::REQ_SIZE]),
        name,
        token,
        window,
    })
}

fn parse_accept(seq: Seq, p: &[u8]) -> Result<Accept, WireError> {
    const E: WireError = WireError::Malformed("accept");
    let window = match (p.get(field::ACC_FLAGS), p.len()) {
        (Some(0), field::ACC_LEN) => 1,
        (Some(&ACCEPT_FLAG_WINDOW), field::ACC_LEN_WINDOW) => match be_u16(&p[field::ACC_WINDOW]) {
            w @ 2..=MAX_WINDOW => w,
            _ => return Err(E),
        },
        _ => return Err(E),
    };
    if seq != 0 {
        return Err(E);
    }
    let block_size = be_u32(&p[field::ACC_BLOCK]);
    if !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size) {
        return Err(E);
    }
    Ok(Accept {
        nonce: be_u64(&p[field::ACC_NONCE]),
        op: Op::from_u8(p[field::ACC_OP]).ok_or(E)?,
        block_size,
        size: be_u64(&p[field::ACC_SIZE]),
        window,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(d: Datagram) {
        let mut buf = [0u8; MAX_DATAGRAM];
        let n = d.emit(&mut buf).unwrap();
        assert_eq!(n, d.wire_len());
        assert_eq!(Datagram::parse(&buf[..n]).unwrap(), d);
    }

    #[test]
    fn ack_has_fixed_bytes() {
        let d = Datagram {
            session: 0x0102030405060708,
            seq: 7,
            message: Message::Ack,
        };
        let mut buf = [0u8; 64];
        let n = d.emit(&mut buf).unwrap();
        let expect_head = [
            0x55, 0x46, 1, 4, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0,
        ];
        assert_eq!(n, 26);
        assert_eq!(&buf[..22], &expect_head);
        assert_eq!(&buf[22..26], &crc32(&expect_head).to_be_bytes());
    }

    #[test]
    fn every_kind_roundtrips() {
        roundtrip(Datagram {
            session: 9,
            seq: 0,
            message: Message::Request(Request {
                token: None,
                window: 1,
                op: Op::Put,
                block_size: 1408,
                size: 5_000_000_000,
                name: "dir/ü.bin",
            }),
        });
        roundtrip(Datagram {
            session: 1,
            seq: 0,
            message: Message::Accept(Accept {
                nonce: 9,
                op: Op::List,
                block_size: 512,
                size: UNKNOWN_SIZE,
                window: 1,
            }),
        });
        roundtrip(Datagram {
            session: 1,
            seq: u64::MAX,
            message: Message::Data(&[1, 2, 3]),
        });
        roundtrip(Datagram {
            session: 1,
            seq: 70_000,
            message: Message::Done {
                length: 1 << 40,
                crc: 0xdeadbeef,
            },
        });
        roundtrip(Datagram {
            session: 1,
            seq: 0,
            message: Message::Error {
                code: ErrorCode::NotFound,
                message: "server has no file 'a.txt'",
            },
        });
    }

    /// A window of 1 is not written: a REQUEST or ACCEPT without a window is byte for
    /// byte what a peer that predates windows sends; a larger one is carried by a flag
    /// and two bytes, and round-trips; out-of-range windows are refused both ways.
    #[test]
    fn windows_and_selective_acks_roundtrip() {
        let req = |window| Datagram {
            session: 9,
            seq: 0,
            message: Message::Request(Request {
                op: Op::Get,
                block_size: 1408,
                size: 0,
                name: "f",
                token: Some([3; TOKEN_LEN]),
                window,
            }),
        };
        let mut buf = [0u8; 512];
        let n = req(1).emit(&mut buf).unwrap();
        assert_eq!(buf[HEADER_LEN + field::REQ_FLAGS], FLAG_TOKEN);
        let end = HEADER_LEN + field::REQ_NAME + 1 + TOKEN_LEN;
        assert!(buf[end..n - CRC_LEN].iter().all(|&b| b == 0));
        roundtrip(req(1));
        roundtrip(req(64));
        roundtrip(req(MAX_WINDOW));
        let n = req(64).emit(&mut buf).unwrap();
        assert_eq!(buf[HEADER_LEN + field::REQ_FLAGS], FLAG_TOKEN | FLAG_WINDOW);
        assert_eq!(&buf[end..end + 2], &64u16.to_be_bytes());
        assert_eq!(n, MIN_REQUEST_LEN);
        assert!(req(0).emit(&mut buf).is_err());
        assert!(req(MAX_WINDOW + 1).emit(&mut buf).is_err());
        let acc = |window| Datagram {
            session: 1,
            seq: 0,
            message: Message::Accept(Accept {
                nonce: 9,
                op: Op::Get,
                block_size: 1408,
                size: 5,
                window,
            }),
        };
        assert_eq!(acc(1).wire_len(), OVERHEAD + 22);
        assert_eq!(acc(16).wire_len(), OVERHEAD + 24);
        roundtrip(acc(1));
        roundtrip(acc(16));
        // A flag with a window of 1, or a window without the flag: malformed.
        let n = acc(16).emit(&mut buf).unwrap();
        let mut b = buf[..n].to_vec();
        b[HEADER_LEN + field::ACC_WINDOW.start..][..2].copy_from_slice(&1u16.to_be_bytes());
        let l = b.len();
        let c = crc32(&b[..l - CRC_LEN]);
        b[l - CRC_LEN..].copy_from_slice(&c.to_be_bytes());
        assert_eq!(Datagram::parse(&b), Err(WireError::Malformed("accept")));
        // Selective acks: canonical bitmaps only.
        let sack = |bits: &'static [u8]| Datagram {
            session: 1,
            seq: 7,
            message: Message::Sack(bits),
        };
        roundtrip(sack(&[0x40]));
        roundtrip(sack(&[0x00, 0x01]));
        for bad in [&[0x80u8][..], &[0x40, 0x00], &[]] {
            assert!(sack(bad).emit(&mut buf).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn request_is_padded_and_short_request_rejected() {
        let d = Datagram {
            session: 5,
            seq: 0,
            message: Message::Request(Request {
                token: None,
                window: 1,
                op: Op::Get,
                block_size: 1408,
                size: 0,
                name: "a",
            }),
        };
        let mut buf = [0u8; 2048];
        let n = d.emit(&mut buf).unwrap();
        assert_eq!(n, MIN_REQUEST_LEN);
        // Rebuild the same request without padding: it must be refused.
        let mut short = buf[..OVERHEAD + 17].to_vec();
        short[20..22].copy_from_slice(&17u16.to_be_bytes());
        let l = short.len();
        let c = crc32(&short[..l - 4]);
        short[l - 4..].copy_from_slice(&c.to_be_bytes());
        assert_eq!(
            Datagram::parse(&short),
            Err(WireError::Malformed("request"))
        );
    }

    #[test]
    fn single_bit_flips_are_rejected() {
        let d = Datagram {
            session: 77,
            seq: 3,
            message: Message::Data(b"hello world"),
        };
        let mut buf = [0u8; 128];
        let n = d.emit(&mut buf).unwrap();
        for bit in 0..n * 8 {
            let mut b = buf[..n].to_vec();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(
                Datagram::parse(&b).is_err(),
                "flip of bit {bit} went unnoticed"
            );
        }
    }

    #[test]
    fn checksum_is_checked_before_anything_else() {
        let mut buf = [0u8; 64];
        buf[0] = 0xff; // bad magic *and* bad checksum: the checksum must be what is reported
        assert_eq!(Datagram::parse(&buf[..30]), Err(WireError::BadChecksum));
        assert_eq!(Datagram::parse(&buf[..3]), Err(WireError::TooShort(3)));
    }

    #[test]
    fn in_place_data_matches_emit() {
        let mut a = [0u8; 64];
        let mut b = [0u8; 64];
        let n = Datagram {
            session: 3,
            seq: 4,
            message: Message::Data(b"xyz"),
        }
        .emit(&mut a)
        .unwrap();
        b[HEADER_LEN..HEADER_LEN + 3].copy_from_slice(b"xyz");
        let m = emit_data_in_place(&mut b, 3, 4, 3);
        assert_eq!(&a[..n], &b[..m]);
    }
}
