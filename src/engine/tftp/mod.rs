//! TFTP's decisions, sans-IO: what a server grants of a request's options, what a
//! client accepts of an OACK ([`negotiate`]). The packet format is in
//! [`crate::wire::tftp`]; TFTP.md is the specification.

pub mod client;
pub mod codec;
pub mod negotiate;
pub mod request;
pub mod server;

pub use client::TftpClient;
pub use codec::{NetasciiSink, Tftp};
pub use negotiate::{Asked, Direction, Granted, Limits, OackError, check_oack, negotiate};
pub use server::{
    NewRequest, PortRequest, TID_ERROR_BURST, TID_ERROR_INTERVAL, TftpConfig, TftpServer,
    TftpStats, TransferId, UNPROVEN_SENDS_PER_REQUEST, Via,
};

/// The retransmission timeout of a TFTP transfer's first packet (a request, an OACK,
/// the first DATA or ACK 0), before any round trip is measured: stock TFTP programs
/// run their timers in seconds and take a repeated request for a new transfer
/// (atftpd then writes the same file twice) or abort on a duplicate OACK (atftp), so
/// the first packet is not resent sooner. After the first sample the timeout adapts
/// as udpft's does (PROTOCOL.md §5.2).
pub const FIRST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// `rto` with its initial timeout raised to [`FIRST_TIMEOUT`] (but never above its
/// ceiling).
pub fn first_timeout(rto: crate::rto::RtoConfig) -> crate::rto::RtoConfig {
    crate::rto::RtoConfig {
        initial: rto.initial.max(FIRST_TIMEOUT.min(rto.max)),
        ..rto
    }
}
