//! The protocol engine: sans-IO state machines for one transfer.
//!
//! Nothing here owns a socket or reads a clock. The caller (a real-socket driver in
//! [`crate::net`], or the simulated link in [`crate::sim`]) passes the current time
//! into every call, feeds in received datagrams and timer expiries, and polls for
//! datagrams to send and for the next deadline:
//!
//! ```text
//!   loop {
//!       while let Some(d) = session.poll_transmit(now) { send(d) }
//!       wait for a datagram or session.poll_timeout()
//!       session.handle_datagram(now, bytes) | session.handle_timeout(now)
//!   }
//! ```
//!
//! Layers, bottom up:
//! - [`Frame`] and [`Codec`]: the state machines decide on frames; a codec turns them
//!   into one encoding's bytes and back ([`Udpft`] is udpft's own; see [`codec`] for
//!   how a second encoding plugs in).
//! - [`Sender`] and [`Receiver`]: one stream (sequence numbers, timers, duplicates,
//!   the close), generic over the codec. They make the protocol's decisions.
//! - [`ClientSession`] and [`ServerSession`]: the handshake around a stream, and the
//!   server's anti-amplification budget.
//!
//! Data streams from any [`std::io::Read`] and into any [`Sink`]; memory does not grow
//! with the file.

mod client;
pub mod codec;
pub mod endpoint;
mod event;
pub mod frame;
mod receiver;
mod sender;
mod server;
pub mod tftp;
mod window;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use thiserror::Error;

pub use crate::rto::RtoConfig;
pub use crate::wire::ErrorCode;
pub use client::{ClientSession, Job};
pub use codec::{Codec, StreamEnd, Udpft};
pub use endpoint::{
    Ended, EndpointConfig, EndpointStats, IoOutcome, IoRequest, LogLevel, LogLine, ServerEndpoint,
};
pub use event::Event;
pub use frame::{Accept, Frame, Kind, Request, Sack};
pub use receiver::{OpeningAck, Receiver};
pub use sender::Sender;
pub use server::{ServerSession, reject};

/// The longest a receiver holds back an acknowledgement (window above 1).
pub const DEFAULT_ACK_DELAY: Duration = Duration::from_micros(200);

/// The most memory a window may hold on either side (one datagram per packet in the
/// window): it caps the window granted for large blocks.
pub const WINDOW_MEMORY: usize = 8 << 20;

/// The window a stream uses when `asked` for with blocks of `block_size`: at least 1,
/// at most [`frame::MAX_WINDOW`], and at most what fits in [`WINDOW_MEMORY`].
pub fn window_for(asked: u16, block_size: u32) -> u16 {
    let per = block_size.clamp(crate::wire::MIN_BLOCK_SIZE, crate::wire::MAX_BLOCK_SIZE) as usize
        + crate::wire::OVERHEAD;
    let fits = (WINDOW_MEMORY / per).clamp(1, frame::MAX_WINDOW as usize) as u16;
    asked.clamp(1, fits)
}

/// Settings of one transfer, shared by both ends' state machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// The block size asked for (client) or the largest granted (server).
    pub block_size: u32,
    /// Retransmission timeout bounds.
    pub rto: RtoConfig,
    /// The longest either side goes without progress before it gives up: a sender
    /// without a new acknowledgement (however many times it resent meanwhile), a
    /// receiver without a new block (duplicates do not count). PROTOCOL.md §5.3.
    pub give_up: Duration,
    /// The least time a receiver lingers after acknowledging DONE, to acknowledge a
    /// resent DONE. It lingers at least 8 retransmission timeouts in any case.
    pub linger: Duration,
    /// Record an [`Event`] for every protocol event (for `--trace`).
    pub trace: bool,
    /// The send window: asked for (client), the most granted (server), or granted (a
    /// stream's sender and receiver). 1 is stop-and-wait. PROTOCOL.md §4.5.
    pub window: u16,
    /// How long a receiver with a window above 1 may hold back an acknowledgement
    /// while more blocks may follow (PROTOCOL.md §4.5).
    pub ack_delay: Duration,
    /// RFC 7440's sender: the window is always the one granted (no slow start, no
    /// decrease on loss: RFC 7440 has no congestion control), and a timeout resends
    /// everything unacknowledged from the first unacknowledged packet on (go-back-N).
    /// Off for udpft (PROTOCOL.md §4.5); on for a TFTP stream.
    pub fixed_window: bool,
    /// RFC 7440's receiver (§4): in-order blocks are acknowledged only at a window's
    /// end (every `window` blocks), on a gap (the last in-order block, once), at the
    /// end of the stream, and when no block came for a retransmission timeout; never
    /// after [`Config::ack_delay`]. Off for udpft (PROTOCOL.md §4.5); on for a TFTP
    /// stream.
    pub ack_per_window: bool,
}

impl Config {
    /// These settings with RFC 7440's window rules for both halves of a stream
    /// ([`Config::fixed_window`], [`Config::ack_per_window`]): what a TFTP stream runs.
    pub fn rfc7440(self) -> Self {
        Config {
            fixed_window: true,
            ack_per_window: true,
            ..self
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            block_size: crate::wire::DEFAULT_BLOCK_SIZE,
            rto: RtoConfig::default(),
            give_up: Duration::from_secs(30),
            linger: Duration::ZERO,
            trace: false,
            window: 1,
            ack_delay: DEFAULT_ACK_DELAY,
            fixed_window: false,
            ack_per_window: false,
        }
    }
}

/// Counters kept by every session, for summaries, logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams handed out for sending, first transmissions and resends.
    pub sent: u64,
    /// Of those, resends after a timeout.
    pub resent: u64,
    /// Valid datagrams received for this session.
    pub received: u64,
    /// Data (or DONE) received again and acknowledged again, never written twice.
    pub duplicates: u64,
    /// Acknowledgements for something already acknowledged: ignored, never answered.
    pub stale: u64,
    /// Datagrams dropped unread: bad checksum, malformed, or another session's.
    pub dropped: u64,
    /// Of those, the ones whose CRC32 did not match.
    pub bad_checksum: u64,
    /// Payload bytes delivered in order (sent and acknowledged, or received and written).
    pub bytes: u64,
    /// DATA left unacknowledged because the storage was behind (its sender resends).
    pub deferred: u64,
}

impl Stats {
    /// Adds `other`'s counters to these.
    pub fn add(&mut self, other: &Stats) {
        self.sent += other.sent;
        self.resent += other.resent;
        self.received += other.received;
        self.duplicates += other.duplicates;
        self.stale += other.stale;
        self.dropped += other.dropped;
        self.bad_checksum += other.bad_checksum;
        self.bytes += other.bytes;
        self.deferred += other.deferred;
    }
}

/// Why a transfer failed. Each message names its cause so a person can act on it.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum TransferError {
    /// No progress for the give-up time: the peer stopped answering.
    #[error("no answer from {peer} for {:.1} s ({tries} tries of the last packet)", .over.as_secs_f64())]
    NoAnswer {
        peer: SocketAddr,
        tries: u32,
        over: Duration,
    },
    /// A receiver got nothing new from its sender for the give-up time.
    #[error("{peer} stopped sending: nothing new for {:.1} s", .silent.as_secs_f64())]
    Silent { peer: SocketAddr, silent: Duration },
    /// The peer sent an ERROR. Displayed with control characters escaped: the text is
    /// the peer's, and ends up in logs and on terminals.
    #[error("{}", crate::text::sanitize(.message))]
    Remote { code: ErrorCode, message: String },
    /// DONE's length or CRC32 disagrees with what was received.
    #[error(
        "integrity check failed: received {got_length} bytes with CRC32 {got_crc:08x}, \
         but the sender sent {length} bytes with CRC32 {crc:08x}"
    )]
    Integrity {
        length: u64,
        crc: u32,
        got_length: u64,
        got_crc: u32,
    },
    /// The stream is longer than the size announced at its start, or its DONE says
    /// another length: the file changed while it was sent, or the peer is broken.
    #[error(
        "size mismatch: {announced} bytes were announced, but the stream {}",
        if .got > .announced { format!("went past them (at least {got} bytes)") }
        else { format!("ended after {got}") }
    )]
    Announced { announced: u64, got: u64 },
    /// Reading the source or writing the sink failed on this side.
    #[error("{context}: {message}")]
    Io {
        context: &'static str,
        kind: io::ErrorKind,
        message: String,
    },
    /// The peer sent something the protocol does not allow at this point.
    #[error("protocol violation by {peer}: {what}")]
    Protocol {
        peer: SocketAddr,
        what: &'static str,
    },
    /// This side abandoned the transfer (interrupted, or shutting down).
    #[error("aborted: {0}")]
    Aborted(String),
}

impl TransferError {
    pub(crate) fn io(context: &'static str, e: &io::Error) -> Self {
        TransferError::Io {
            context,
            kind: e.kind(),
            message: e.to_string(),
        }
    }

    /// The code to put in the ERROR datagram that tells the peer about this failure.
    pub fn wire_code(&self) -> ErrorCode {
        match self {
            TransferError::Integrity { .. } | TransferError::Announced { .. } => {
                ErrorCode::Integrity
            }
            // Losing the race to a file that appeared meanwhile (a put without overwrite).
            TransferError::Io {
                kind: io::ErrorKind::AlreadyExists,
                ..
            } => ErrorCode::AlreadyExists,
            TransferError::Io { .. } => ErrorCode::Io,
            TransferError::Protocol { .. } => ErrorCode::BadRequest,
            _ => ErrorCode::Aborted,
        }
    }
}

/// Where received data goes: a [`io::Write`] that can also make the result final.
///
/// The receiver calls [`Sink::commit`] once DONE's length and CRC32 have been verified
/// and *before* it acknowledges DONE, so an acknowledged DONE means the data is stored
/// under its final name. A file sink writes to a temporary file and renames it here.
pub trait Sink: io::Write {
    /// Makes the received bytes final. An error fails the transfer, and the peer is told.
    fn commit(&mut self) -> io::Result<()>;
}

impl Sink for Vec<u8> {
    fn commit(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<S: Sink + ?Sized> Sink for Box<S> {
    fn commit(&mut self) -> io::Result<()> {
        (**self).commit()
    }
}

/// A sink that discards data and counts it (for tests and benchmarks).
#[derive(Debug, Default)]
pub struct NullSink(pub u64);

impl io::Write for NullSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Sink for NullSink {
    fn commit(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The state of a transfer as its caller sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Still exchanging datagrams.
    Running,
    /// Verified and acknowledged; a receiver may still be lingering to re-acknowledge
    /// a resent DONE, so keep driving it until [`Status::Closed`] (or drop it if the
    /// linger does not matter to you).
    Complete,
    /// Nothing left to do.
    Closed,
    /// Failed for good.
    Failed(TransferError),
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub(crate) fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Encodes the ERROR that tells the peer why this side failed; `None` if `buf` is too small.
pub(crate) fn encode_error<C: Codec>(
    codec: &C,
    session: frame::SessionId,
    seq: frame::Seq,
    e: &TransferError,
    buf: &mut [u8],
) -> Option<usize> {
    let msg = e.to_string();
    let f = Frame::Error {
        seq,
        code: e.wire_code(),
        message: truncate_utf8(&msg, codec.max_message_len()),
    };
    codec.encode(session, &f, buf).ok()
}

pub(crate) fn count_drop(stats: &mut Stats, e: crate::wire::WireError) {
    stats.dropped += 1;
    if e == crate::wire::WireError::BadChecksum {
        stats.bad_checksum += 1;
    }
}
