//! Removing the hidden temporary files of transfers whose owner died.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use rustix::fs::{AtFlags, Dir, FileType, FlockOperation, Mode, OFlags};

use super::is_temp_name;

/// Removes `name` from `dir` if it is one of our named temporary files (by name, owned
/// by this process's user) and no living process holds its lock. Returns whether it was
/// removed.
fn sweep_entry(dir: BorrowedFd<'_>, name: &CStr) -> bool {
    let Ok(fd) = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    ) else {
        return false;
    };
    let Ok(st) = rustix::fs::fstat(&fd) else {
        return false;
    };
    // Only our own files: a user's file that merely looks like one is never touched.
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile
        || st.st_uid != rustix::process::geteuid().as_raw()
    {
        return false;
    }
    // The owner holds an exclusive lock for as long as it lives; a lock we can take
    // means the owner is gone. It rechecks its name after locking, so removing the name
    // while we hold the lock is safe even against a brand-new owner.
    if rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive).is_err() {
        return false;
    }
    // Only the entry we locked: if the name now holds another file, leave it.
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(now) if now.st_ino == st.st_ino && now.st_dev == st.st_dev => {
            rustix::fs::unlinkat(dir, name, AtFlags::empty()).is_ok()
        }
        _ => false,
    }
}

/// Removes the leftovers of killed transfers from one directory. Returns how many.
pub fn sweep_dir(dir: BorrowedFd<'_>) -> io::Result<usize> {
    let mut removed = 0;
    let mut entries = Dir::read_from(dir)?;
    while let Some(e) = entries.read() {
        let e = e?;
        let name = e.file_name();
        if is_temp_name(&name.to_string_lossy()) && sweep_entry(dir, name) {
            removed += 1;
        }
    }
    Ok(removed)
}

/// How deep [`sweep_tree`] goes below the root.
const MAX_DEPTH: usize = 64;

/// Removes the leftovers of killed transfers from `root` and every directory below it
/// (to a depth of 64), never following a symlink and never entering another mount (a
/// bind mount of the same filesystem included). Returns how many. Directories it cannot
/// read are passed over. Holds two descriptors per level, whatever the width of the tree.
pub fn sweep_tree(root: BorrowedFd<'_>) -> io::Result<usize> {
    let mount = mount_id(root)?;
    Ok(sweep_below(root, mount, 0))
}

/// The mount a directory is on (device numbers cannot tell bind mounts apart).
fn mount_id(dir: BorrowedFd<'_>) -> io::Result<u64> {
    let st = rustix::fs::statx(dir, "", AtFlags::EMPTY_PATH, rustix::fs::StatxFlags::MNT_ID)?;
    Ok(st.stx_mnt_id)
}

fn sweep_below(dir: BorrowedFd<'_>, mount: u64, depth: usize) -> usize {
    let mut removed = sweep_dir(dir).unwrap_or(0);
    if depth >= MAX_DEPTH {
        return removed;
    }
    let Ok(mut entries) = Dir::read_from(dir) else {
        return removed;
    };
    while let Some(Ok(e)) = entries.read() {
        let name = e.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        let is_dir = match e.file_type() {
            FileType::Directory => true,
            FileType::Unknown => rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|s| FileType::from_raw_mode(s.st_mode) == FileType::Directory),
            _ => false,
        };
        if !is_dir {
            continue;
        }
        if let Ok(sub) = rustix::fs::openat(
            dir,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) && mount_id(sub.as_fd()).is_ok_and(|m| m == mount)
        {
            removed += sweep_below(sub.as_fd(), mount, depth + 1);
        }
    }
    removed
}
