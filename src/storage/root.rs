//! The served root: a directory handle, and every name resolved beneath it.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use super::{
    AtomicFile, FileSource, Refusal, TempFiles, errno, io_refusal, is_temp_name, type_name,
};
use crate::text::escape;
use crate::wire::ErrorCode;

/// How names are resolved beneath the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolver {
    /// `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`: the kernel refuses any step
    /// (a `..`, an absolute or escaping symlink) that leaves the root (Linux ≥ 5.6).
    Openat2,
    /// One component at a time from the root's handle, each opened `O_NOFOLLOW`;
    /// symlinks are read and followed by hand, `..` pops a held directory handle and
    /// never climbs above the root. Used where `openat2` is missing.
    Walk,
}

/// The longest chain of symbolic links followed while resolving one name (as Linux).
const MAX_LINKS: usize = 40;

/// The served directory, held open. Every operation on a remote name goes through it.
///
/// Guarantees: a name is resolved once, by the kernel or by [`Resolver::Walk`], from
/// this handle; no step of it leaves the directory (symlinks that stay inside work,
/// symlinks with an absolute target or one that climbs out are refused with access
/// denied); the final operation acts on the handle that the resolution produced.
#[derive(Debug)]
pub struct Root {
    dir: OwnedFd,
    path: PathBuf,
    resolver: Resolver,
    temps: TempFiles,
}

/// Checks a remote name by its components: relative, no `..`, no NUL, not empty, no
/// component that is one of our temporary names. Returns the normalised relative path
/// (`.` components dropped; empty for the root itself).
pub fn check_name(name: &str) -> Result<PathBuf, Refusal> {
    let shown = escape(name);
    if name.is_empty() {
        return Err(Refusal::new(ErrorCode::BadRequest, "empty path"));
    }
    if name.contains('\0') {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            "the path contains a NUL byte",
        ));
    }
    let mut rel = PathBuf::new();
    for c in Path::new(name).components() {
        match c {
            Component::Normal(part) => {
                if is_temp_name(&part.to_string_lossy()) {
                    return Err(Refusal::new(
                        ErrorCode::AccessDenied,
                        format!(
                            "access denied: '{shown}' is a reserved name (an upload in progress)"
                        ),
                    ));
                }
                rel.push(part)
            }
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(Refusal::new(
                    ErrorCode::AccessDenied,
                    format!(
                        "access denied: '{shown}' contains '..'; paths stay inside the served directory"
                    ),
                ));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(Refusal::new(
                    ErrorCode::AccessDenied,
                    format!(
                        "access denied: '{shown}' is absolute; paths are relative to the served directory"
                    ),
                ));
            }
        }
    }
    Ok(rel)
}

/// [`check_name`] for a name that must name a file: one that ends in `/` names a
/// directory (as `ls notes.txt/` fails), so it is refused rather than read as the file.
fn check_file_name(name: &str) -> Result<PathBuf, Refusal> {
    let rel = check_name(name)?;
    if name.ends_with('/') || name.ends_with("/.") {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            format!(
                "'{}' ends in '/', which names a directory; name the file without it",
                escape(name)
            ),
        ));
    }
    Ok(rel)
}

impl Root {
    /// Opens the served directory. `openat2` is used if the kernel has it; uploads use
    /// temporary files as [`TempFiles::from_env`] says.
    pub fn new(dir: &Path) -> io::Result<Root> {
        let path = dir.canonicalize()?;
        let dir = rustix::fs::open(
            &path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::NOTDIR => io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is not a directory", path.display()),
            ),
            e => e.into(),
        })?;
        let resolver = match rustix::fs::openat2(
            &dir,
            ".",
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH,
        ) {
            Err(Errno::NOSYS) | Err(Errno::PERM) => Resolver::Walk,
            _ => Resolver::Openat2,
        };
        Ok(Root {
            dir,
            path,
            resolver,
            temps: TempFiles::from_env(),
        })
    }

    /// The same root resolved another way (tests run both).
    pub fn with_resolver(mut self, resolver: Resolver) -> Root {
        self.resolver = resolver;
        self
    }

    /// The same root with uploads written to temporary files of this kind.
    pub fn with_temp_files(mut self, temps: TempFiles) -> Root {
        self.temps = temps;
        self
    }

    pub fn resolver(&self) -> Resolver {
        self.resolver
    }

    /// The served directory's path, canonicalised when it was opened (for messages only:
    /// nothing is ever opened by it again).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The handle of the served directory.
    pub fn handle(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }

    /// Opens `rel` (checked by [`check_name`]; empty for the root) beneath the root.
    pub(crate) fn open_beneath(&self, rel: &Path, flags: OFlags) -> io::Result<OwnedFd> {
        let rel: &Path = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        match self.resolver {
            Resolver::Openat2 => {
                let mut tries = 0;
                loop {
                    match rustix::fs::openat2(
                        &self.dir,
                        rel,
                        flags | OFlags::CLOEXEC,
                        Mode::empty(),
                        ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
                    ) {
                        // The kernel asks for a retry when a rename raced the lookup; a
                        // few, so that a local user renaming in a loop cannot spin us.
                        Err(Errno::AGAIN) if tries < 64 => tries += 1,
                        r => return r.map_err(errno),
                    }
                }
            }
            Resolver::Walk => self.walk(rel, flags),
        }
    }

    fn walk(&self, rel: &Path, flags: OFlags) -> io::Result<OwnedFd> {
        let mut pending: VecDeque<OsString> = rel
            .components()
            .map(|c| c.as_os_str().to_os_string())
            .collect();
        // Directories entered below the root, each held open: `..` pops one.
        let mut stack: Vec<OwnedFd> = Vec::new();
        let mut links = 0;
        while let Some(part) = pending.pop_front() {
            let cur = stack.last().map_or(self.dir.as_fd(), |d| d.as_fd());
            if part == "." {
                if pending.is_empty() {
                    return rustix::fs::openat(cur, ".", flags | OFlags::CLOEXEC, Mode::empty())
                        .map_err(errno);
                }
                continue;
            }
            if part == ".." {
                if stack.pop().is_none() {
                    return Err(errno(Errno::XDEV));
                }
                if pending.is_empty() {
                    pending.push_back(".".into());
                }
                continue;
            }
            let fd = rustix::fs::openat(
                cur,
                &part,
                OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(errno)?;
            let st = rustix::fs::fstat(&fd).map_err(errno)?;
            match FileType::from_raw_mode(st.st_mode) {
                FileType::Symlink => {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(errno(Errno::LOOP));
                    }
                    // Read the link through the handle just opened: no second lookup.
                    let target = rustix::fs::readlinkat(&fd, "", Vec::new()).map_err(errno)?;
                    let target = Path::new(OsStr::from_bytes(target.as_bytes()));
                    if target.has_root() {
                        return Err(errno(Errno::XDEV));
                    }
                    for c in target.components().rev() {
                        pending.push_front(c.as_os_str().to_os_string());
                    }
                }
                t if pending.is_empty() => {
                    // The last component: open it for real, through the parent still held,
                    // refusing a symlink swapped in meanwhile (ELOOP).
                    let _ = t;
                    return rustix::fs::openat(
                        cur,
                        &part,
                        flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(errno);
                }
                FileType::Directory => stack.push(fd),
                _ => return Err(errno(Errno::NOTDIR)),
            }
        }
        rustix::fs::openat(&self.dir, ".", flags | OFlags::CLOEXEC, Mode::empty()).map_err(errno)
    }

    /// Opens the regular file `name` for reading, without ever blocking: a FIFO, socket
    /// or device is refused by its type ("'pipe' is a FIFO, not a regular file"), and a
    /// directory with a hint to list it.
    pub fn open_file(&self, name: &str) -> Result<FileSource, Refusal> {
        let rel = check_file_name(name)?;
        let fd =
            self.open_beneath(&rel, OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY)
                .map_err(|e| match e.raw_os_error() {
                    // Opening a socket file, or a device with nothing behind it, fails with
                    // ENXIO: look at what it is without opening it for reading.
                    Some(n) if n == Errno::NXIO.raw_os_error() => {
                        match self.open_beneath(&rel, OFlags::PATH).and_then(|fd| {
                            Ok(FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode))
                        }) {
                            Ok(t) => not_regular(name, type_name(t)),
                            Err(e) => io_refusal(name, &e),
                        }
                    }
                    _ => io_refusal(name, &e),
                })?;
        let st = rustix::fs::fstat(&fd).map_err(|e| io_refusal(name, &errno(e)))?;
        match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => {}
            FileType::Directory => {
                return Err(Refusal::new(
                    ErrorCode::BadRequest,
                    format!("'{}' is a directory (use list)", escape(name)),
                ));
            }
            t => return Err(not_regular(name, type_name(t))),
        }
        // Reads of a regular file never block anyway; clear the flag all the same.
        rustix::fs::fcntl_setfl(&fd, OFlags::empty()).map_err(|e| io_refusal(name, &errno(e)))?;
        FileSource::new(File::from(fd), name).map_err(|e| io_refusal(name, &e))
    }

    /// Opens the directory `name` (`.` for the root) for listing.
    pub fn open_dir(&self, name: &str) -> Result<OwnedFd, Refusal> {
        let rel = check_name(name)?;
        let fd = self
            .open_beneath(&rel, OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY)
            .map_err(|e| match e.raw_os_error() {
                Some(n) if n == Errno::NXIO.raw_os_error() => not_a_dir(name),
                _ => io_refusal(name, &e),
            })?;
        let st = rustix::fs::fstat(&fd).map_err(|e| io_refusal(name, &errno(e)))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
            return Err(not_a_dir(name));
        }
        Ok(fd)
    }

    /// The directory that holds `name`, open, and the last component of `name`.
    fn parent(&self, name: &str) -> Result<(OwnedFd, OsString), Refusal> {
        let rel = check_file_name(name)?;
        let Some(file_name) = rel.file_name() else {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                format!("'{}' does not name a file", escape(name)),
            ));
        };
        let parent = rel.parent().unwrap_or(Path::new(""));
        let dir = self
            .open_beneath(parent, OFlags::RDONLY | OFlags::DIRECTORY)
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => Refusal::new(
                    ErrorCode::NotFound,
                    format!("server has no directory for '{}'", escape(name)),
                ),
                _ => io_refusal(name, &e),
            })?;
        Ok((dir, file_name.to_os_string()))
    }

    /// What is under `file` in `dir` now, not following a symlink: `None` if nothing.
    fn entry_type(dir: &OwnedFd, file: &OsStr, name: &str) -> Result<Option<FileType>, Refusal> {
        match rustix::fs::statat(dir, file, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(io_refusal(name, &errno(e))),
        }
    }

    /// Refuses a put or delete of a symlink that leads outside the root or nowhere,
    /// as a get of it is refused: what a name means does not depend on the operation.
    /// (Only the link itself would be replaced or removed, inside the root; this is
    /// consistency, not the confinement, which the handles give.)
    fn link_stays_inside(&self, name: &str) -> Result<(), Refusal> {
        let rel = check_name(name)?;
        match self.open_beneath(&rel, OFlags::PATH) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Refusal::new(
                ErrorCode::AccessDenied,
                format!(
                    "access denied: '{}' is a symbolic link that leads nowhere",
                    escape(name)
                ),
            )),
            Err(e) => Err(io_refusal(name, &e)),
        }
    }

    /// Starts an upload to `name`: an [`AtomicFile`] in the directory that will hold it.
    /// Without `overwrite` an existing entry is refused now (and again, atomically, at
    /// commit); with it, only a regular file or a symlink may be replaced, and the
    /// directory entry is what is replaced (a symlink inside the root is replaced by
    /// the new file, its target left alone; a symlink that leads out is refused).
    pub fn create(&self, name: &str, overwrite: bool) -> Result<AtomicFile, Refusal> {
        let (dir, file) = self.parent(name)?;
        let shown = escape(name);
        let existing = Self::entry_type(&dir, &file, name)?;
        if existing == Some(FileType::Symlink) {
            self.link_stays_inside(name)?;
        }
        match existing {
            None => {}
            Some(FileType::Directory) => {
                return Err(Refusal::new(
                    ErrorCode::BadRequest,
                    format!("'{shown}' is a directory on the server"),
                ));
            }
            Some(_) if !overwrite => {
                return Err(Refusal::new(
                    ErrorCode::AlreadyExists,
                    format!(
                        "'{shown}' exists and the server does not overwrite (start udpftd with --overwrite)"
                    ),
                ));
            }
            Some(FileType::RegularFile | FileType::Symlink) => {}
            Some(t) => return Err(not_regular(name, type_name(t))),
        }
        AtomicFile::create_in(dir, &file, overwrite, self.temps).map_err(|e| io_refusal(name, &e))
    }

    /// Removes the file (or symlink: the link itself) `name`.
    pub fn delete(&self, name: &str) -> Result<(), Refusal> {
        let (dir, file) = self.parent(name)?;
        match Self::entry_type(&dir, &file, name)? {
            None => Err(Refusal::new(
                ErrorCode::NotFound,
                format!("server has no file '{}'", escape(name)),
            )),
            Some(FileType::Directory) => Err(Refusal::new(
                ErrorCode::BadRequest,
                format!(
                    "'{}' is a directory; only files can be deleted",
                    escape(name)
                ),
            )),
            Some(t @ (FileType::RegularFile | FileType::Symlink)) => {
                if t == FileType::Symlink {
                    self.link_stays_inside(name)?;
                }
                // A directory swapped in since the check fails here with EISDIR.
                rustix::fs::unlinkat(&dir, &file, AtFlags::empty())
                    .map_err(|e| io_refusal(name, &errno(e)))
            }
            Some(t) => Err(not_regular(name, type_name(t))),
        }
    }
}

fn not_regular(name: &str, what: &str) -> Refusal {
    Refusal::new(
        ErrorCode::BadRequest,
        format!("'{}' is {what}, not a regular file", escape(name)),
    )
}

fn not_a_dir(name: &str) -> Refusal {
    Refusal::new(
        ErrorCode::BadRequest,
        format!("'{}' is not a directory", escape(name)),
    )
}
