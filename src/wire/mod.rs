//! Byte encodings: datagrams in, typed values out, nothing else.
//!
//! One file per encoding, each owning no socket, reading no clock and allocating
//! nothing on its parse and emit paths:
//!
//! - [`udpft`]: udpft's own datagram format (PROTOCOL.md §2–§3), CRC32-checked.
//! - [`tftp`]: TFTP's packets (RFC 1350, RFC 2347 options) and netascii (TFTP.md §2);
//!   not re-exported, its names are TFTP's (`wire::tftp::Packet`).
//!
//! The engine does not name these types when it decides: it works on
//! [`crate::engine::Frame`]s, and an [`crate::engine::Codec`] turns frames into one of
//! these encodings and back. udpft's items are re-exported here, so `wire::Datagram`
//! and friends keep their short paths.

pub mod tftp;
pub mod udpft;

pub use udpft::*;
