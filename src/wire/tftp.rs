//! The TFTP packet format: bytes in, typed values out, nothing else.
//!
//! RFC 1350 (the five packets), RFC 2347 (options and OACK), with the option values of
//! RFC 2348 (`blksize`), RFC 2349 (`timeout`, `tsize`), RFC 7440 (`windowsize`) and the
//! `rollover` option as tftp-hpa accepts it. Like [`crate::wire::udpft`] this module owns no
//! socket, reads no clock and allocates nothing while parsing: [`Packet::parse`] turns a
//! received datagram into borrowed fields, [`Packet::emit`] writes one into a caller's
//! buffer. Netascii (RFC 1350's line-ending conversion) is in [`netascii`].
//!
//! ```text
//!  RRQ/WRQ  | 01/02 | filename | 0 | mode | 0 | opt1 | 0 | value1 | 0 | ... |
//!  DATA     |  03   | block #  | data (0 to blksize bytes)                 |
//!  ACK      |  04   | block #  |
//!  ERROR    |  05   | code     | message | 0 |
//!  OACK     |  06   | opt1 | 0 | value1 | 0 | ... |
//!             2 B      2 B
//! ```
//!
//! Opcodes, block numbers and codes are 16-bit big-endian. A TFTP datagram always starts
//! with a 0 byte (the opcode's high byte); a udpft one never does (its magic is "UF"),
//! which is how one port tells the two apart ([`is_tftp`]).
//!
//! Guarantees: [`Packet::parse`] never panics on any input (property-tested), and on
//! `Ok` every field is within the limits this module documents. Leniency is deliberate
//! and matches what stock servers accept: option names and modes are case-insensitive,
//! unknown options are skipped, a trailing option without a value (or without its
//! terminating NUL) is ignored rather than failing the request.

pub mod netascii;

use thiserror::Error;

/// The opcodes (RFC 1350 §5, RFC 2347 for OACK).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Opcode {
    Rrq = 1,
    Wrq = 2,
    Data = 3,
    Ack = 4,
    Error = 5,
    Oack = 6,
}

impl Opcode {
    pub fn from_u16(v: u16) -> Option<Opcode> {
        Some(match v {
            1 => Opcode::Rrq,
            2 => Opcode::Wrq,
            3 => Opcode::Data,
            4 => Opcode::Ack,
            5 => Opcode::Error,
            6 => Opcode::Oack,
            _ => return None,
        })
    }
}

/// The block size without a `blksize` option (RFC 1350).
pub const DEFAULT_BLKSIZE: u32 = 512;
/// The smallest `blksize` (RFC 2348).
pub const MIN_BLKSIZE: u32 = 8;
/// The largest `blksize` (RFC 2348).
pub const MAX_BLKSIZE: u32 = 65_464;
/// The `timeout` option's range in seconds (RFC 2349).
pub const MIN_TIMEOUT: u64 = 1;
pub const MAX_TIMEOUT: u64 = 255;
/// The `windowsize` option's range in blocks (RFC 7440).
pub const MIN_WINDOWSIZE: u32 = 1;
pub const MAX_WINDOWSIZE: u32 = 65_535;
/// Bytes before a DATA block's payload (opcode, block number).
pub const DATA_HEADER_LEN: usize = 4;
/// The largest TFTP datagram: a DATA of the largest block.
pub const MAX_DATAGRAM: usize = DATA_HEADER_LEN + MAX_BLKSIZE as usize;
/// The longest request this module parses. RFC 2347 caps requests at 512 bytes; some
/// clients (long paths, many options) send more, and stock servers read up to their
/// buffer, so we accept any datagram a request can be while the caller decides.
pub const MAX_REQUEST_LEN: usize = MAX_DATAGRAM;
/// The longest option name or value we look at; longer ones are skipped as unknown
/// (no known option is anywhere near this long).
pub const MAX_OPTION_FIELD: usize = 64;

/// TFTP's error codes (RFC 1350 §5, RFC 2347 for 8). Unknown numbers are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorCode(pub u16);

impl ErrorCode {
    /// "Not defined, see error message".
    pub const UNDEFINED: ErrorCode = ErrorCode(0);
    pub const FILE_NOT_FOUND: ErrorCode = ErrorCode(1);
    pub const ACCESS_VIOLATION: ErrorCode = ErrorCode(2);
    pub const DISK_FULL: ErrorCode = ErrorCode(3);
    pub const ILLEGAL_OPERATION: ErrorCode = ErrorCode(4);
    pub const UNKNOWN_TID: ErrorCode = ErrorCode(5);
    pub const FILE_EXISTS: ErrorCode = ErrorCode(6);
    pub const NO_SUCH_USER: ErrorCode = ErrorCode(7);
    /// The transfer is ended because of option negotiation (RFC 2347).
    pub const OPTION_REFUSED: ErrorCode = ErrorCode(8);

    /// RFC 1350's name for the code.
    pub fn name(self) -> &'static str {
        match self.0 {
            0 => "not defined",
            1 => "file not found",
            2 => "access violation",
            3 => "disk full or allocation exceeded",
            4 => "illegal TFTP operation",
            5 => "unknown transfer ID",
            6 => "file already exists",
            7 => "no such user",
            8 => "option negotiation refused",
            _ => "unknown error code",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TFTP error {} ({})", self.0, self.name())
    }
}

/// The transfer mode of a request (RFC 1350 §1), compared case-insensitively.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Text with CR LF line ends on the wire ([`netascii`]).
    Netascii,
    /// Bytes as they are.
    Octet,
    /// Obsolete (RFC 1350: "should not be implemented"); parsed so it can be refused.
    Mail,
}

impl Mode {
    pub fn parse(b: &[u8]) -> Option<Mode> {
        if b.eq_ignore_ascii_case(b"octet") {
            Some(Mode::Octet)
        } else if b.eq_ignore_ascii_case(b"netascii") {
            Some(Mode::Netascii)
        } else if b.eq_ignore_ascii_case(b"mail") {
            Some(Mode::Mail)
        } else {
            None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::Netascii => "netascii",
            Mode::Octet => "octet",
            Mode::Mail => "mail",
        }
    }
}

/// The option section of a request or OACK: NUL-terminated name/value pairs (RFC 2347).
///
/// A view over bytes checked by [`Options::new`]; iterating yields each complete pair in
/// order. A trailing name without a value, or a last field without its NUL, is not
/// yielded (and [`Options::as_bytes`] leaves it out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Options<'a> {
    bytes: &'a [u8],
}

impl<'a> Options<'a> {
    /// The complete pairs at the start of `bytes`; an incomplete tail is dropped.
    pub fn new(bytes: &'a [u8]) -> Options<'a> {
        let mut end = 0;
        let mut rest = bytes;
        while let Some(n) = rest.iter().position(|&b| b == 0) {
            let Some(v) = rest[n + 1..].iter().position(|&b| b == 0) else {
                break;
            };
            let pair = n + 1 + v + 1;
            end += pair;
            rest = &rest[pair..];
        }
        Options {
            bytes: &bytes[..end],
        }
    }

    /// No options.
    pub fn empty() -> Options<'static> {
        Options { bytes: &[] }
    }

    /// The pairs' bytes, each field NUL-terminated.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The pairs, in order.
    pub fn iter(&self) -> OptionIter<'a> {
        OptionIter { rest: self.bytes }
    }

    /// The first pair whose name is `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<Opt<'a>> {
        self.iter()
            .find(|o| o.name.eq_ignore_ascii_case(name.as_bytes()))
    }
}

/// One option: its name as sent and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opt<'a> {
    pub name: &'a [u8],
    pub value: &'a [u8],
}

impl Opt<'_> {
    /// The value as a decimal number: ASCII digits only (no sign, no space), at most
    /// 20 of them, fitting in a `u64`. `None` for anything else.
    pub fn number(&self) -> Option<u64> {
        parse_decimal(self.value)
    }
}

/// A decimal number of ASCII digits that fits a `u64`.
pub fn parse_decimal(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 20 {
        return None;
    }
    let mut n: u64 = 0;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(n)
}

/// Iterates over an [`Options`] section's pairs.
#[derive(Debug, Clone)]
pub struct OptionIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for OptionIter<'a> {
    type Item = Opt<'a>;
    fn next(&mut self) -> Option<Opt<'a>> {
        // Options::new left only complete pairs.
        let n = self.rest.iter().position(|&b| b == 0)?;
        let name = &self.rest[..n];
        let after = &self.rest[n + 1..];
        let v = after.iter().position(|&b| b == 0)?;
        let value = &after[..v];
        self.rest = &after[v + 1..];
        Some(Opt { name, value })
    }
}

/// The options udpft knows, picked out of a request's or OACK's section (RFC 2347:
/// names compared case-insensitively; the first of a repeated option counts, later ones
/// are ignored; unknown ones are counted and otherwise ignored). Values are not judged
/// here: see `engine::tftp_negotiate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KnownOptions<'a> {
    pub blksize: Option<Opt<'a>>,
    pub timeout: Option<Opt<'a>>,
    pub tsize: Option<Opt<'a>>,
    pub windowsize: Option<Opt<'a>>,
    pub rollover: Option<Opt<'a>>,
    /// Pairs with other names (or repeated known names), skipped.
    pub unknown: usize,
}

impl<'a> KnownOptions<'a> {
    pub fn of(opts: &Options<'a>) -> KnownOptions<'a> {
        let mut k = KnownOptions::default();
        for o in opts.iter() {
            let slot = if o.name.eq_ignore_ascii_case(b"blksize") {
                &mut k.blksize
            } else if o.name.eq_ignore_ascii_case(b"timeout") {
                &mut k.timeout
            } else if o.name.eq_ignore_ascii_case(b"tsize") {
                &mut k.tsize
            } else if o.name.eq_ignore_ascii_case(b"windowsize") {
                &mut k.windowsize
            } else if o.name.eq_ignore_ascii_case(b"rollover") {
                &mut k.rollover
            } else {
                k.unknown += 1;
                continue;
            };
            if slot.is_none() {
                *slot = Some(o);
            } else {
                k.unknown += 1;
            }
        }
        k
    }

    /// Whether any known option was asked for.
    pub fn any(&self) -> bool {
        self.blksize.is_some()
            || self.timeout.is_some()
            || self.tsize.is_some()
            || self.windowsize.is_some()
            || self.rollover.is_some()
    }
}

/// A read or write request's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// The file name as sent: bytes, not necessarily UTF-8, never containing NUL.
    pub filename: &'a [u8],
    pub mode: Mode,
    pub options: Options<'a>,
}

/// One TFTP datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    /// Read request: the server sends the file.
    Rrq(Request<'a>),
    /// Write request: the client sends the file.
    Wrq(Request<'a>),
    /// One block: 0 to blksize bytes; a block shorter than blksize ends the transfer.
    Data {
        block: u16,
        data: &'a [u8],
    },
    Ack {
        block: u16,
    },
    /// The message as sent, without its NUL (any bytes: show it escaped).
    Error {
        code: ErrorCode,
        message: &'a [u8],
    },
    /// The options the server accepted.
    Oack(Options<'a>),
}

/// Why a datagram is not a usable TFTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum WireError {
    #[error("datagram too short ({0} bytes)")]
    TooShort(usize),
    #[error("datagram too long ({0} bytes)")]
    TooLong(usize),
    #[error("unknown TFTP opcode {0}")]
    UnknownOpcode(u16),
    #[error("request without a NUL-terminated file name")]
    NoFilename,
    #[error("request without a NUL-terminated mode")]
    NoMode,
    /// A mode other than netascii, octet or mail (an illegal operation, code 4).
    #[error("unknown transfer mode")]
    UnknownMode,
    #[error("malformed {0}")]
    Malformed(&'static str),
    #[error("buffer too small to emit the packet")]
    BufferTooSmall,
}

/// Whether `bytes` looks like TFTP rather than udpft: a first byte of 0 and an opcode
/// of 1 to 6. Only a request (1 or 2) can open a session.
pub fn is_tftp(bytes: &[u8]) -> bool {
    bytes.len() >= 2 && bytes[0] == 0 && (1..=6).contains(&bytes[1])
}

/// Whether `bytes` is a TFTP read or write request (opcode 1 or 2).
pub fn is_request(bytes: &[u8]) -> bool {
    bytes.len() >= 2 && bytes[0] == 0 && (bytes[1] == 1 || bytes[1] == 2)
}

fn be_u16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

impl<'a> Packet<'a> {
    /// Parses one received datagram. Never panics; on `Ok` a DATA's payload is at most
    /// [`MAX_BLKSIZE`] bytes, an ERROR's message holds no NUL, a request's file name and
    /// mode hold no NUL.
    pub fn parse(bytes: &'a [u8]) -> Result<Packet<'a>, WireError> {
        if bytes.len() < 4 {
            // The shortest packets (ACK, DATA of 0 bytes, empty OACK and ERROR without
            // its message's NUL aside) are 4 bytes.
            if bytes.len() >= 2 && be_u16(bytes) == Opcode::Oack as u16 {
                return Ok(Packet::Oack(Options::new(&bytes[2..])));
            }
            return Err(WireError::TooShort(bytes.len()));
        }
        if bytes.len() > MAX_DATAGRAM {
            return Err(WireError::TooLong(bytes.len()));
        }
        let op = be_u16(bytes);
        let op = Opcode::from_u16(op).ok_or(WireError::UnknownOpcode(op))?;
        let body = &bytes[2..];
        Ok(match op {
            Opcode::Rrq => Packet::Rrq(parse_request(body)?),
            Opcode::Wrq => Packet::Wrq(parse_request(body)?),
            Opcode::Data => Packet::Data {
                block: be_u16(body),
                data: &body[2..],
            },
            Opcode::Ack => {
                // Some stacks pad short frames: trailing bytes after the block number
                // are ignored, as stock servers do.
                Packet::Ack {
                    block: be_u16(body),
                }
            }
            Opcode::Error => {
                let code = ErrorCode(be_u16(body));
                let rest = &body[2..];
                // The message ends at its NUL; a missing NUL is tolerated (the message
                // is everything that is there).
                let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
                Packet::Error {
                    code,
                    message: &rest[..end],
                }
            }
            Opcode::Oack => Packet::Oack(Options::new(body)),
        })
    }

    /// The opcode of this packet.
    pub fn opcode(&self) -> Opcode {
        match self {
            Packet::Rrq(_) => Opcode::Rrq,
            Packet::Wrq(_) => Opcode::Wrq,
            Packet::Data { .. } => Opcode::Data,
            Packet::Ack { .. } => Opcode::Ack,
            Packet::Error { .. } => Opcode::Error,
            Packet::Oack(_) => Opcode::Oack,
        }
    }

    /// The encoded length.
    pub fn len(&self) -> usize {
        2 + match self {
            Packet::Rrq(r) | Packet::Wrq(r) => {
                r.filename.len() + 1 + r.mode.name().len() + 1 + r.options.as_bytes().len()
            }
            Packet::Data { data, .. } => 2 + data.len(),
            Packet::Ack { .. } => 2,
            Packet::Error { message, .. } => 2 + message.len() + 1,
            Packet::Oack(o) => o.as_bytes().len(),
        }
    }

    /// Never true: every packet has at least its opcode.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Writes the packet into `buf`, returning its length. A file name or error message
    /// containing a NUL is malformed (it would end early on the wire).
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let n = self.len();
        if n > buf.len() {
            return Err(WireError::BufferTooSmall);
        }
        buf[..2].copy_from_slice(&(self.opcode() as u16).to_be_bytes());
        let mut w = Writer { buf, at: 2 };
        match self {
            Packet::Rrq(r) | Packet::Wrq(r) => {
                if r.filename.contains(&0) {
                    return Err(WireError::Malformed("file name with a NUL"));
                }
                w.put(r.filename);
                w.put(&[0]);
                w.put(r.mode.name().as_bytes());
                w.put(&[0]);
                w.put(r.options.as_bytes());
            }
            Packet::Data { block, data } => {
                w.put(&block.to_be_bytes());
                w.put(data);
            }
            Packet::Ack { block } => w.put(&block.to_be_bytes()),
            Packet::Error { code, message } => {
                if message.contains(&0) {
                    return Err(WireError::Malformed("error message with a NUL"));
                }
                w.put(&code.0.to_be_bytes());
                w.put(message);
                w.put(&[0]);
            }
            Packet::Oack(o) => w.put(o.as_bytes()),
        }
        debug_assert_eq!(w.at, n);
        Ok(n)
    }
}

struct Writer<'b> {
    buf: &'b mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn put(&mut self, b: &[u8]) {
        self.buf[self.at..self.at + b.len()].copy_from_slice(b);
        self.at += b.len();
    }
}

fn parse_request(body: &[u8]) -> Result<Request<'_>, WireError> {
    let f = body
        .iter()
        .position(|&b| b == 0)
        .ok_or(WireError::NoFilename)?;
    let filename = &body[..f];
    let rest = &body[f + 1..];
    let m = rest.iter().position(|&b| b == 0).ok_or(WireError::NoMode)?;
    let mode = Mode::parse(&rest[..m]).ok_or(WireError::UnknownMode)?;
    Ok(Request {
        filename,
        mode,
        options: Options::new(&rest[m + 1..]),
    })
}

/// Writes DATA's header for `block` into `buf[..4]`, so the payload can be read straight
/// into `buf[4..]`. `buf` must be at least 4 bytes.
pub fn emit_data_header(block: u16, buf: &mut [u8]) {
    buf[..2].copy_from_slice(&(Opcode::Data as u16).to_be_bytes());
    buf[2..4].copy_from_slice(&block.to_be_bytes());
}

/// Builds an option section (for a request or an OACK). Allocates; used once per
/// request, never per block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OptionsBuf {
    bytes: Vec<u8>,
}

impl OptionsBuf {
    pub fn new() -> OptionsBuf {
        OptionsBuf::default()
    }

    /// Appends a pair. A name or value containing NUL, or an empty name, is a bug in
    /// the caller: it is skipped (debug builds assert).
    pub fn push(&mut self, name: &[u8], value: &[u8]) -> &mut Self {
        let ok = !name.is_empty() && !name.contains(&0) && !value.contains(&0);
        debug_assert!(ok, "option fields must be non-empty and hold no NUL");
        if ok {
            self.bytes.extend_from_slice(name);
            self.bytes.push(0);
            self.bytes.extend_from_slice(value);
            self.bytes.push(0);
        }
        self
    }

    /// Appends a pair with a decimal value.
    pub fn push_number(&mut self, name: &[u8], value: u64) -> &mut Self {
        self.push(name, value.to_string().as_bytes())
    }

    pub fn options(&self) -> Options<'_> {
        Options::new(&self.bytes)
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// How block numbers continue after 65535 (the `rollover` option; tftp-hpa, atftp, curl
/// and busybox all wrap to 0 without it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Rollover {
    /// 65535 is followed by 0 (the common behaviour, and `rollover 0`).
    #[default]
    ToZero,
    /// 65535 is followed by 1 (`rollover 1`): block 0 only ever means the OACK.
    ToOne,
}

impl Rollover {
    /// The 16-bit block number of the 64-bit sequence number `seq` (0 is the OACK or
    /// the WRQ's ACK 0; DATA is 1, 2, …).
    pub fn block_of(self, seq: u64) -> u16 {
        match self {
            Rollover::ToZero => seq as u16,
            Rollover::ToOne if seq == 0 => 0,
            Rollover::ToOne => ((seq - 1) % 65_535 + 1) as u16,
        }
    }

    /// The sequence number a received `block` means, given that the peer is working
    /// near `near` (the next block expected, or the oldest unacknowledged one): the one
    /// with that block number closest to `near`, never below 0. Unambiguous while the
    /// peer is fewer than 32 767 blocks away, which a window of at most 65 535 blocks
    /// acknowledged cumulatively keeps within bounds in practice.
    pub fn seq_of(self, block: u16, near: u64) -> u64 {
        let period: u64 = match self {
            Rollover::ToZero => 65_536,
            Rollover::ToOne => 65_535,
        };
        if self == Rollover::ToOne && block == 0 {
            return 0;
        }
        // The candidate in the same period as `near`, then the neighbours.
        let base = match self {
            Rollover::ToZero => (near - near % period).saturating_add(u64::from(block)),
            Rollover::ToOne => {
                let n = near.max(1);
                ((n - 1) - (n - 1) % period).saturating_add(u64::from(block))
            }
        };
        let mut best = base;
        for cand in [base.checked_sub(period), base.checked_add(period)]
            .into_iter()
            .flatten()
        {
            if cand.abs_diff(near) < best.abs_diff(near) {
                best = cand;
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_read_request_with_options() {
        let b = b"\0\x01pxelinux.0\0OcTeT\0BLKSIZE\x001428\0tsize\x000\0windowsize\x0016\0";
        let p = Packet::parse(b).unwrap();
        let Packet::Rrq(r) = p else { panic!("{p:?}") };
        assert_eq!(r.filename, b"pxelinux.0");
        assert_eq!(r.mode, Mode::Octet);
        let k = KnownOptions::of(&r.options);
        assert_eq!(k.blksize.unwrap().name, b"BLKSIZE");
        assert_eq!(k.blksize.unwrap().number(), Some(1428));
        assert_eq!(k.tsize.unwrap().number(), Some(0));
        assert_eq!(k.windowsize.unwrap().number(), Some(16));
        assert_eq!(k.unknown, 0);
        let mut out = [0u8; 128];
        let n = p.emit(&mut out).unwrap();
        // The mode comes back in its canonical spelling; everything else as sent.
        assert_eq!(
            &out[..n],
            b"\0\x01pxelinux.0\0octet\0BLKSIZE\x001428\0tsize\x000\0windowsize\x0016\0"
        );
    }

    #[test]
    fn parses_every_other_packet() {
        assert_eq!(
            Packet::parse(b"\0\x03\x01\x02abc").unwrap(),
            Packet::Data {
                block: 0x0102,
                data: b"abc"
            }
        );
        assert_eq!(
            Packet::parse(b"\0\x03\xff\xff").unwrap(),
            Packet::Data {
                block: 65535,
                data: b""
            }
        );
        assert_eq!(
            Packet::parse(b"\0\x04\0\x07").unwrap(),
            Packet::Ack { block: 7 }
        );
        assert_eq!(
            Packet::parse(b"\0\x05\0\x01no such file\0").unwrap(),
            Packet::Error {
                code: ErrorCode::FILE_NOT_FOUND,
                message: b"no such file"
            }
        );
        let Packet::Oack(o) = Packet::parse(b"\0\x06blksize\x00512\0").unwrap() else {
            panic!()
        };
        assert_eq!(o.get("BlkSize").unwrap().value, b"512");
        // An empty OACK (2 bytes) parses; so does an ERROR without its NUL.
        assert_eq!(
            Packet::parse(b"\0\x06").unwrap(),
            Packet::Oack(Options::empty())
        );
        assert_eq!(
            Packet::parse(b"\0\x05\0\x08ab").unwrap(),
            Packet::Error {
                code: ErrorCode::OPTION_REFUSED,
                message: b"ab"
            }
        );
    }

    #[test]
    fn refuses_what_is_not_tftp() {
        assert_eq!(Packet::parse(b""), Err(WireError::TooShort(0)));
        assert_eq!(Packet::parse(b"\0\x04\0"), Err(WireError::TooShort(3)));
        assert_eq!(
            Packet::parse(b"\0\x07\0\0"),
            Err(WireError::UnknownOpcode(7))
        );
        assert_eq!(
            Packet::parse(b"UF\x01\x01"),
            Err(WireError::UnknownOpcode(0x5546))
        );
        assert_eq!(Packet::parse(b"\0\x01abc"), Err(WireError::NoFilename));
        assert_eq!(Packet::parse(b"\0\x01abc\0octet"), Err(WireError::NoMode));
        assert_eq!(
            Packet::parse(b"\0\x02abc\0binary\0"),
            Err(WireError::UnknownMode)
        );
        let long = vec![0u8; MAX_DATAGRAM + 1];
        assert_eq!(
            Packet::parse(&long),
            Err(WireError::TooLong(MAX_DATAGRAM + 1))
        );
        assert!(is_tftp(b"\0\x01") && is_request(b"\0\x02x"));
        assert!(!is_tftp(b"UF") && !is_request(b"\0\x03") && !is_tftp(b"\0"));
    }

    #[test]
    fn options_are_lenient_as_stock_servers_are() {
        // A name without a value, a value without its NUL, padding NULs, a repeated
        // option, an unknown one: the complete known pairs count, the rest is skipped.
        let o = Options::new(b"blksize\x001024\0blksize\x008\0multicast\0\0\0\0tsize");
        let k = KnownOptions::of(&o);
        assert_eq!(k.blksize.unwrap().number(), Some(1024));
        assert_eq!(k.tsize, None);
        assert_eq!(k.unknown, 3); // the repeat, multicast, and the empty pair
        assert_eq!(
            o.as_bytes(),
            b"blksize\x001024\0blksize\x008\0multicast\0\0\0\0"
        );
        assert_eq!(Options::new(b"blksize\x00512").as_bytes(), b"");
        assert_eq!(Options::new(b"\0").iter().count(), 0);
        // Values: digits only, within a u64.
        for bad in [
            &b""[..],
            b"-1",
            b" 8",
            b"8 ",
            b"0x10",
            b"99999999999999999999999",
        ] {
            assert_eq!(parse_decimal(bad), None, "{bad:?}");
        }
        assert_eq!(parse_decimal(b"0512"), Some(512));
        assert_eq!(parse_decimal(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_decimal(b"18446744073709551616"), None);
    }

    #[test]
    fn emits_and_parses_back() {
        let mut ob = OptionsBuf::new();
        ob.push_number(b"blksize", 65464)
            .push_number(b"tsize", 12345);
        let packets = [
            Packet::Wrq(Request {
                filename: b"dir/a b.txt",
                mode: Mode::Netascii,
                options: ob.options(),
            }),
            Packet::Oack(ob.options()),
            Packet::Data {
                block: 0,
                data: &[1, 2, 3],
            },
            Packet::Ack { block: 65535 },
            Packet::Error {
                code: ErrorCode::FILE_EXISTS,
                message: b"exists",
            },
        ];
        let mut buf = [0u8; 256];
        for p in packets {
            let n = p.emit(&mut buf).unwrap();
            assert_eq!(n, p.len());
            assert_eq!(Packet::parse(&buf[..n]).unwrap(), p);
        }
        let bad = Packet::Error {
            code: ErrorCode::UNDEFINED,
            message: b"a\0b",
        };
        assert!(bad.emit(&mut buf).is_err());
        assert_eq!(
            Packet::Ack { block: 1 }.emit(&mut buf[..3]),
            Err(WireError::BufferTooSmall)
        );
        let mut d = [0u8; 6];
        emit_data_header(258, &mut d);
        assert_eq!(&d[..4], b"\0\x03\x01\x02");
    }

    #[test]
    fn block_numbers_wrap_both_ways() {
        let z = Rollover::ToZero;
        assert_eq!(z.block_of(65_535), 65_535);
        assert_eq!(z.block_of(65_536), 0);
        assert_eq!(z.block_of(65_537), 1);
        assert_eq!(z.seq_of(0, 65_535), 65_536);
        assert_eq!(z.seq_of(65_535, 65_536), 65_535);
        assert_eq!(z.seq_of(0, 1), 0); // ACK 0 of the OACK
        assert_eq!(z.seq_of(3, 131_070), 131_075);
        let o = Rollover::ToOne;
        assert_eq!(o.block_of(0), 0);
        assert_eq!(o.block_of(65_535), 65_535);
        assert_eq!(o.block_of(65_536), 1);
        assert_eq!(o.seq_of(1, 65_535), 65_536);
        assert_eq!(o.seq_of(65_535, 65_537), 65_535);
        assert_eq!(o.seq_of(0, 70_000), 0);
        for r in [z, o] {
            for seq in (0..300_000u64).step_by(7) {
                let near = seq.saturating_sub(1000);
                assert_eq!(r.seq_of(r.block_of(seq), near), seq, "{r:?} {seq}");
                assert_eq!(r.seq_of(r.block_of(seq), seq + 1000), seq, "{r:?} {seq}");
            }
        }
    }
}
