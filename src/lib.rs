//! udpft: reliable file transfer over UDP with stop-and-wait acknowledgements.
//!
//! The crate reads like the architecture (see PROTOCOL.md for the protocol itself):
//!
//! - [`wire`]: the datagram format. Parse and emit, CRC32-checked; no IO, no clock.
//! - [`rto`]: the retransmission-timeout estimator (RFC 6298, Karn, backoff).
//! - [`engine`]: the protocol's decisions as sans-IO state machines: a stop-and-wait
//!   [`engine::Sender`] and [`engine::Receiver`], wrapped by the client's and the
//!   server's session (handshake, anti-amplification). The caller passes `now`.
//! - [`link`]: the lossy-link model (drop, duplicate, reorder, corrupt, delay), seeded.
//! - [`storage`]: files beneath a served root by directory handle, atomic files,
//!   listings, files sent exactly as announced.
//! - [`pcapng`]: a capture writer (pcapng, synthesized IP/UDP headers) for Wireshark.
//! - [`net`]: the drivers that touch the OS: sockets, files, the terminal.
//! - [`text`]: names and messages from elsewhere made safe for logs and terminals.
//! - [`diagram`]: a transfer's trace drawn as a time-sequence diagram (terminal, Mermaid).
//! - [`cli`] (feature `cli`, on by default): man pages and completions for the programs.
//!   Without the feature the library compiles no argument parser, line editor or
//!   progress bar.
//! - [`sim`]: a virtual-clock driver that runs a client and a server session through
//!   the link model, used by tests and examples.

#[cfg(feature = "cli")]
pub mod cli;
pub mod diagram;
pub mod engine;
pub mod link;
pub mod net;
pub mod pcapng;
pub mod rto;
pub mod sim;
pub mod storage;
pub mod text;
pub mod wire;
