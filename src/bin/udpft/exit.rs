//! Exit codes of `udpft` (documented in README.md), from the library's typed errors.

use udpft::engine::{ErrorCode, TransferError};
use udpft::net::client::ClientError;

pub const OK: u8 = 0;
/// A local problem (missing local file, cannot write) or anything else.
pub const OTHER: u8 = 1;
/// Bad usage (clap's code): a malformed command line, SERVER or path argument.
pub const USAGE: u8 = 2;
/// The server refused: not found, access denied, exists, not allowed, busy, bad request.
pub const REFUSED: u8 = 3;
/// Nothing listening, no answer, no progress, the peer went silent, or the server
/// abandoned the transfer (ERROR 9: it gave up or is shutting down): all worth trying
/// again later, none a refusal of the request itself.
pub const NO_ANSWER: u8 = 4;
/// The integrity check (length or CRC32) failed, or the server sent more than announced
/// or than the client keeps (a listing over its limit).
pub const INTEGRITY: u8 = 5;
/// Interrupted by Ctrl-C.
pub const INTERRUPTED: u8 = 130;

/// The exit code of a failed command.
pub fn code(e: &ClientError) -> u8 {
    match e {
        ClientError::BadServer { .. } | ClientError::BadPath(_) => USAGE,
        ClientError::Resolve { .. } | ClientError::Local(_) | ClientError::Socket { .. } => OTHER,
        ClientError::NothingListening { .. } | ClientError::NoProgress { .. } => NO_ANSWER,
        ClientError::NoRemoteDir { .. } => REFUSED,
        ClientError::Server { code, .. } => match code {
            ErrorCode::NotFound
            | ErrorCode::AccessDenied
            | ErrorCode::AlreadyExists
            | ErrorCode::Busy
            | ErrorCode::NotAllowed
            | ErrorCode::BadRequest => REFUSED,
            ErrorCode::Integrity => INTEGRITY,
            ErrorCode::Aborted => NO_ANSWER,
            _ => OTHER,
        },
        ClientError::Oversize { .. } | ClientError::ListingTooLarge { .. } => INTEGRITY,
        ClientError::Interrupted => INTERRUPTED,
        ClientError::NotInTftp(_) => USAGE,
        // A TFTP server's ERROR is its refusal of the request, whatever its code.
        ClientError::Tftp { .. } => REFUSED,
        ClientError::Transfer(t) => match t {
            TransferError::NoAnswer { .. } | TransferError::Silent { .. } => NO_ANSWER,
            TransferError::Integrity { .. } | TransferError::Announced { .. } => INTEGRITY,
            TransferError::Aborted(_) => INTERRUPTED,
            _ => OTHER,
        },
    }
}
