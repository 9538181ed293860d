//! TFTP's decisions, sans-IO: what a server grants of a request's options, what a
//! client accepts of an OACK ([`negotiate`]). The packet format is in
//! [`crate::tftp_wire`]; TFTP.md is the specification.

pub mod negotiate;
pub mod request;

pub use negotiate::{Asked, Direction, Granted, Limits, OackError, check_oack, negotiate};
