//! Storage: the files a server serves and a client downloads into, touched only through
//! directory handles.
//!
//! The guarantees, each the reason for one piece:
//! - **No path is resolved twice.** [`Root`] holds a handle on the served directory and
//!   resolves every name relative to it in the kernel, in one step (`openat2` with
//!   `RESOLVE_BENEATH`, or a component-by-component `O_NOFOLLOW` walk where the kernel
//!   lacks it). Creating, linking, renaming and removing then happen with the `*at` calls
//!   relative to the parent directory's handle, so a directory swapped for a symlink
//!   between a check and a use leads nowhere outside the root.
//! - **Regular files only.** What was opened is checked by type ([`Root::open_file`]): a
//!   FIFO, socket or device is refused by name and type, never read, and never blocks.
//! - **All or nothing.** An upload or download goes to an [`AtomicFile`]: an unnamed
//!   temporary file (`O_TMPFILE`) that gets its name only when committed, so a crash
//!   leaves nothing behind; where the filesystem has no `O_TMPFILE`, a hidden named one,
//!   locked while in use and swept by [`sweep_tree`] and [`sweep_dir`].
//! - **Sent as announced.** A [`FileSource`] fails the read when the file's size or
//!   modification time changes under it, so a torn file is never delivered as verified.

mod atomic;
mod listing;
mod read_ahead;
mod root;
mod source;
mod sweep;
pub mod write_behind;

use std::io;

pub use atomic::{AtomicFile, TempFiles};
pub use listing::{Listing, listing};
pub use read_ahead::{CHUNK, CHUNKS, ReadAhead, Ready, Schedule};
pub use root::{Resolver, Root, check_name};
pub use source::FileSource;
pub use sweep::{sweep_dir, sweep_tree};

use crate::wire::ErrorCode;

/// Why a path or an operation on it was refused: the code and the message for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

impl Refusal {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The prefix and suffix of named temporary files; listings hide names of that shape
/// and requests may not name them.
pub const TEMP_PREFIX: &str = ".udpft-";
pub const TEMP_SUFFIX: &str = ".part";

/// Whether `name` is one of our named temporary files: exactly `.udpft-`, 16 lower-case
/// hex digits, `.part`. (Requests may name nothing of that shape, listings hide it, and
/// only such names, owned by the sweeping user and unlocked, are ever swept.)
pub fn is_temp_name(name: &str) -> bool {
    name.strip_prefix(TEMP_PREFIX)
        .and_then(|r| r.strip_suffix(TEMP_SUFFIX))
        .is_some_and(|hex| {
            hex.len() == 16
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

/// The refusal for an OS error met while serving `name`. `name` is shown escaped.
pub fn io_refusal(name: &str, e: &io::Error) -> Refusal {
    let shown = crate::text::escape(name);
    if e.raw_os_error() == Some(rustix::io::Errno::XDEV.raw_os_error()) {
        return Refusal::new(
            ErrorCode::AccessDenied,
            format!("access denied: '{shown}' leads outside the served directory"),
        );
    }
    if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
        return Refusal::new(
            ErrorCode::AccessDenied,
            format!("access denied: '{shown}' goes through too many symbolic links"),
        );
    }
    match e.kind() {
        io::ErrorKind::NotFound => {
            Refusal::new(ErrorCode::NotFound, format!("server has no file '{shown}'"))
        }
        io::ErrorKind::NotADirectory => Refusal::new(
            ErrorCode::NotFound,
            format!("server has no file '{shown}': a part of the path is not a directory"),
        ),
        io::ErrorKind::PermissionDenied => Refusal::new(
            ErrorCode::AccessDenied,
            format!("access denied: '{shown}': {e}"),
        ),
        _ => Refusal::new(ErrorCode::Io, format!("'{shown}': {e}")),
    }
}

/// A system call's error as an `io::Error` (its kind and text come from the errno).
pub(crate) fn errno(e: rustix::io::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

/// What a file's type is called in a refusal: "a FIFO", "a socket", …
pub(crate) fn type_name(t: rustix::fs::FileType) -> &'static str {
    use rustix::fs::FileType::*;
    match t {
        RegularFile => "a regular file",
        Directory => "a directory",
        Symlink => "a symbolic link",
        Fifo => "a FIFO",
        Socket => "a socket",
        CharacterDevice => "a character device",
        BlockDevice => "a block device",
        _ => "a special file",
    }
}
