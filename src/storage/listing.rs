//! Directory listings (PROTOCOL.md §3.9).

use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{AtFlags, Dir, FileType, OFlags};

use super::{Refusal, Root, check_name, io_refusal, is_temp_name};
use crate::text::escape;

/// The listing of the directory `name` beneath `root`, whole and sorted by name: the
/// lines of [`Listing`], for small directories and tests. A server streams instead.
pub fn listing(root: &Root, name: &str) -> Result<Vec<u8>, Refusal> {
    let rel = check_name(name)?;
    let dir = root.open_dir(name)?;
    let mut it = Dir::read_from(&dir).map_err(|e| io_refusal(name, &e.into()))?;
    let mut lines = Vec::new();
    let mut line = Vec::new();
    while let Some(e) = it.read() {
        let e = e.map_err(|e| io_refusal(name, &e.into()))?;
        line.clear();
        if entry_line(root, &rel, &dir, e.file_name().to_bytes(), &mut line) {
            lines.push(line.clone());
        }
    }
    // Sorted by name: the part after the tab.
    lines.sort_by(|a, b| after_tab(a).cmp(after_tab(b)));
    Ok(lines.concat())
}

fn after_tab(line: &[u8]) -> &[u8] {
    line.iter()
        .position(|&b| b == b'\t')
        .map_or(line, |i| &line[i + 1..])
}

/// Writes the listing line of the entry `raw` of directory `dir` (at `rel` beneath the
/// root) into `out`; false if the entry is not listed (see [`Listing`]).
fn entry_line(root: &Root, rel: &Path, dir: &OwnedFd, raw: &[u8], out: &mut Vec<u8>) -> bool {
    let raw = OsStr::from_bytes(raw);
    if raw == "." || raw == ".." {
        return false;
    }
    let shown = raw.to_string_lossy();
    if is_temp_name(&shown) {
        return false;
    }
    let Ok(st) = rustix::fs::statat(dir, raw, AtFlags::SYMLINK_NOFOLLOW) else {
        return false;
    };
    let st = match FileType::from_raw_mode(st.st_mode) {
        // Resolved beneath the root like any request: one that leads out is not shown.
        FileType::Symlink => match root
            .open_beneath(&rel.join(raw), OFlags::PATH)
            .and_then(|fd| rustix::fs::fstat(&fd).map_err(Into::into))
        {
            Ok(target) => target,
            Err(_) => return false,
        },
        _ => st,
    };
    let name = escape(&shown);
    let _ = match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => writeln!(out, "{}\t{name}", st.st_size as u64),
        FileType::Directory => writeln!(out, "-\t{name}/"),
        _ => return false,
    };
    true
}

/// The listing of one directory as a stream (PROTOCOL.md §3.9): one entry per line, in
/// the order the directory yields them; `<size>\t<name>` for a regular file,
/// `-\t<name>/` for a directory, names escaped by [`escape`].
///
/// Left out: our temporary files; FIFOs, sockets and devices (they cannot be fetched);
/// symlinks that lead outside the root, dangle, or lead to anything but a regular file or
/// a directory. A symlink that stays inside is listed as what it points to.
///
/// Guarantees: memory is one directory-read buffer and one line, whatever the size of
/// the directory; every read blocks on the filesystem (run it on an IO worker, behind a
/// [`super::ReadAhead`]).
pub struct Listing {
    root: Arc<Root>,
    rel: PathBuf,
    name: String,
    dir: OwnedFd,
    entries: Dir,
    /// The current line, and how much of it was read.
    line: Vec<u8>,
    at: usize,
}

impl Listing {
    /// Opens the directory `name` beneath `root`.
    pub fn open(root: Arc<Root>, name: &str) -> Result<Listing, Refusal> {
        let rel = check_name(name)?;
        let dir = root.open_dir(name)?;
        let entries = Dir::read_from(&dir).map_err(|e| io_refusal(name, &e.into()))?;
        Ok(Listing {
            root,
            rel,
            name: name.to_string(),
            dir,
            entries,
            line: Vec::with_capacity(256),
            at: 0,
        })
    }
}

impl Read for Listing {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.line.len() {
            self.line.clear();
            self.at = 0;
            let Some(e) = self.entries.read() else {
                return Ok(0);
            };
            let e = e.map_err(|e| io::Error::other(io_refusal(&self.name, &e.into()).message))?;
            entry_line(
                &self.root,
                &self.rel,
                &self.dir,
                e.file_name().to_bytes(),
                &mut self.line,
            );
        }
        let n = buf.len().min(self.line.len() - self.at);
        buf[..n].copy_from_slice(&self.line[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
