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
