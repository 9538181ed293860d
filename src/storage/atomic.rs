//! A file that appears under its name whole, or not at all.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

use rand::RngExt;
use rustix::fs::{AtFlags, FlockOperation, Mode, OFlags};
use rustix::io::Errno;

use super::write_behind::WriteBehind;
use super::{TEMP_PREFIX, TEMP_SUFFIX, errno};
use crate::engine::Sink;

/// A new file that gets its name in its directory only when [`Sink::commit`] is called.
///
/// Guarantees:
/// - Until the commit, nothing is visible under the final name, and an existing file
///   under it is untouched. Dropped without a commit (a failed transfer), nothing is
///   left behind.
/// - Killed at any moment, it leaves nothing behind where the filesystem has
///   `O_TMPFILE` (the data lives in an unnamed file until the commit links it). Where it
///   has not, the data goes to a hidden `.udpft-<random>.part` file that is locked
///   (`flock`) for as long as its owner lives; [`super::sweep_dir`] removes such files
///   whose owner is gone. A commit with overwrite also names the file so for an instant
///   before the rename.
/// - The commit is durable: the data is synced before it gets its name, the directory
///   after.
/// - All operations act on the directory's handle taken at creation: the file lands in
///   that directory even if a path to it is changed meanwhile.
pub struct AtomicFile {
    dir: OwnedFd,
    name: OsString,
    /// The hidden temporary name, if the data lives in a named file.
    temp: Option<OsString>,
    out: Option<WriteBehind>,
    overwrite: bool,
    committed: bool,
    /// The permission bits of the file this one replaces (see [`AtomicFile::create`]).
    keep_mode: Option<u32>,
}

fn temp_name() -> OsString {
    format!(
        "{TEMP_PREFIX}{:016x}{TEMP_SUFFIX}",
        rand::rng().random::<u64>()
    )
    .into()
}

/// Which temporary files an [`AtomicFile`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TempFiles {
    /// Unnamed (`O_TMPFILE`) where the filesystem has them, named where not.
    Unnamed,
    /// Always named, locked and swept: the fallback, chosen on purpose (to test it, or
    /// on a filesystem whose `O_TMPFILE` misbehaves).
    Named,
}

impl TempFiles {
    /// [`TempFiles::Named`] if the environment variable `UDPFT_NAMED_TEMP` is `1`.
    pub fn from_env() -> TempFiles {
        match std::env::var_os("UDPFT_NAMED_TEMP") {
            Some(v) if v == "1" => TempFiles::Named,
            _ => TempFiles::Unnamed,
        }
    }
}

/// Whether `e` from `open(O_TMPFILE)` means "this filesystem has no unnamed files".
fn no_tmpfile(e: Errno) -> bool {
    matches!(
        e,
        Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL | Errno::NOENT
    )
}

impl AtomicFile {
    /// A download to the local path `dest` (the client): its directory's leftovers of
    /// earlier, killed downloads are swept first. Temporary files as
    /// [`TempFiles::from_env`] says. With `overwrite`, an existing `dest`
    /// is replaced at commit; without, the commit fails with `AlreadyExists`.
    ///
    /// A regular file already at `dest` (not followed if a symlink) gives the new file
    /// its permission bits (`0o777`; never set-user-ID, set-group-ID or sticky): they
    /// are set on the temporary file at once, so its contents are never more readable
    /// than the file it replaces, and again before it gets its name. Other files get
    /// `0o666` less the umask, as `open` gives them.
    pub fn create(dest: &Path, overwrite: bool) -> io::Result<AtomicFile> {
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let Some(name) = dest.file_name() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("'{}' does not name a file", dest.display()),
            ));
        };
        let dir = rustix::fs::open(
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno)?;
        let _ = super::sweep_dir(dir.as_fd());
        let keep_mode = match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if rustix::fs::FileType::from_raw_mode(st.st_mode).is_file() => {
                Some(st.st_mode & 0o777)
            }
            _ => None,
        };
        let mut f = Self::create_in(dir, name, overwrite, TempFiles::from_env())?;
        if let (Some(mode), Some(t)) = (keep_mode, &f.temp) {
            // A named temporary file is visible in the directory while it fills.
            rustix::fs::chmodat(&f.dir, t, Mode::from_raw_mode(mode), AtFlags::empty())
                .map_err(errno)?;
        }
        f.keep_mode = keep_mode;
        Ok(f)
    }

    /// A new file `name` in the directory `dir`.
    pub(crate) fn create_in(
        dir: OwnedFd,
        name: &OsStr,
        overwrite: bool,
        temps: TempFiles,
    ) -> io::Result<Self> {
        let mode = Mode::from_raw_mode(0o666);
        let unnamed = if temps == TempFiles::Named {
            Err(Errno::OPNOTSUPP)
        } else {
            rustix::fs::openat(
                &dir,
                ".",
                OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC,
                mode,
            )
        };
        let (file, temp) = match unnamed {
            Ok(fd) => {
                // Locked like a named one: for the instant a commit with overwrite links
                // it under a hidden name before the rename, a sweep must leave it alone.
                rustix::fs::flock(&fd, FlockOperation::LockExclusive).map_err(errno)?;
                (File::from(fd), None)
            }
            Err(e) if no_tmpfile(e) => {
                let (f, t) = Self::named_temp(&dir)?;
                (f, Some(t))
            }
            Err(e) => return Err(errno(e)),
        };
        Ok(AtomicFile {
            dir,
            name: name.to_os_string(),
            temp,
            out: Some(WriteBehind::new(file)?),
            overwrite,
            committed: false,
            keep_mode: None,
        })
    }

    /// A hidden named temporary file, created exclusively and locked; checked to still
    /// be under its name once locked (a sweeper may have taken it in between).
    fn named_temp(dir: &OwnedFd) -> io::Result<(File, OsString)> {
        loop {
            let t = temp_name();
            let fd = match rustix::fs::openat(
                dir,
                &t,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o666),
            ) {
                Ok(fd) => fd,
                Err(Errno::EXIST) => continue,
                Err(e) => return Err(errno(e)),
            };
            rustix::fs::flock(&fd, FlockOperation::LockExclusive).map_err(errno)?;
            let ours = rustix::fs::fstat(&fd).map_err(errno)?;
            match rustix::fs::statat(dir, &t, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if st.st_ino == ours.st_ino && st.st_dev == ours.st_dev => {
                    return Ok((File::from(fd), t));
                }
                _ => continue,
            }
        }
    }

    /// The hidden name the data lives under until the commit, if it has one (only where
    /// the filesystem has no unnamed temporary files).
    pub fn temp_name(&self) -> Option<&OsStr> {
        self.temp.as_deref()
    }

    fn closed() -> io::Error {
        io::Error::other("the file is already committed")
    }

    /// Gives the unnamed file `file` the name `to` in our directory (fails if taken).
    fn link_unnamed(&self, file: &File, to: &OsStr) -> io::Result<()> {
        match rustix::fs::linkat(file, "", &self.dir, to, AtFlags::EMPTY_PATH) {
            Ok(()) => Ok(()),
            // AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH on older kernels; the /proc link
            // of the descriptor does the same without it.
            Err(Errno::NOENT | Errno::PERM | Errno::ACCESS) => rustix::fs::linkat(
                rustix::fs::CWD,
                format!("/proc/self/fd/{}", file.as_raw_fd()),
                &self.dir,
                to,
                AtFlags::SYMLINK_FOLLOW,
            )
            .map_err(errno),
            Err(e) => Err(errno(e)),
        }
    }

    fn publish(&mut self, file: &File) -> io::Result<()> {
        match (&self.temp, self.overwrite) {
            (None, false) => self.link_unnamed(file, &self.name),
            (None, true) => {
                // Unnamed files cannot be renamed over a name: link to a hidden name,
                // then rename that over the destination.
                let t = loop {
                    let t = temp_name();
                    match self.link_unnamed(file, &t) {
                        Ok(()) => break t,
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                        Err(e) => return Err(e),
                    }
                };
                let r = rustix::fs::renameat(&self.dir, &t, &self.dir, &self.name).map_err(errno);
                if r.is_err() {
                    let _ = rustix::fs::unlinkat(&self.dir, &t, AtFlags::empty());
                }
                r
            }
            // A hard link fails if the destination exists: an atomic "create, never replace".
            (Some(t), false) => {
                rustix::fs::linkat(&self.dir, t, &self.dir, &self.name, AtFlags::empty())
                    .map_err(errno)?;
                let _ = rustix::fs::unlinkat(&self.dir, t, AtFlags::empty());
                Ok(())
            }
            (Some(t), true) => {
                rustix::fs::renameat(&self.dir, t, &self.dir, &self.name).map_err(errno)
            }
        }
    }
}

impl std::fmt::Debug for AtomicFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AtomicFile")
            .field("name", &self.name)
            .field("temp", &self.temp)
            .field("overwrite", &self.overwrite)
            .field("committed", &self.committed)
            .finish_non_exhaustive()
    }
}

impl AtomicFile {
    /// Writes never wait for the disk (see [`WriteBehind::set_nonblocking`]): for a
    /// server, whose receiver then leaves a block unacknowledged until there is room.
    pub fn nonblocking(mut self) -> AtomicFile {
        if let Some(w) = self.out.as_mut() {
            w.set_nonblocking(true);
        }
        self
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.as_mut().ok_or_else(Self::closed)?.write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.out.as_mut().ok_or_else(Self::closed)?.write_all(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        match self.out.as_mut() {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }
}

impl Sink for AtomicFile {
    fn commit(&mut self) -> io::Result<()> {
        let w = self.out.take().ok_or_else(Self::closed)?;
        let f = w.finish()?;
        if let Some(mode) = self.keep_mode {
            // Before the name: the file never appears with other permissions.
            rustix::fs::fchmod(&f, Mode::from_raw_mode(mode)).map_err(errno)?;
        }
        f.sync_data()?;
        self.publish(&f)?;
        self.committed = true;
        // Make the new directory entry durable too (best effort).
        let _ = rustix::fs::fsync(&self.dir);
        Ok(())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        // Close the file first (the writer thread holds it), then remove its name.
        self.out = None;
        if !self.committed
            && let Some(t) = &self.temp
        {
            let _ = rustix::fs::unlinkat(&self.dir, t, AtFlags::empty());
        }
    }
}
