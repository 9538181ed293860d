//! Directory listings (PROTOCOL.md §3.9).

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{AtFlags, Dir, FileType, OFlags};

use super::{Refusal, Root, check_name, io_refusal, is_temp_name};
use crate::text::escape;

/// The listing of the directory `name` beneath `root`: one entry per line, sorted by
/// name; `<size>\t<name>` for a regular file, `-\t<name>/` for a directory, names
/// escaped by [`escape`].
///
/// Left out: our temporary files; FIFOs, sockets and devices (they cannot be fetched);
/// symlinks that lead outside the root, dangle, or lead to anything but a regular file or
/// a directory. A symlink that stays inside is listed as what it points to.
pub fn listing(root: &Root, name: &str) -> Result<Vec<u8>, Refusal> {
    let rel = check_name(name)?;
    let dir = root.open_dir(name)?;
    let mut entries: Vec<(String, Option<u64>)> = Vec::new();
    let mut it = Dir::read_from(&dir).map_err(|e| io_refusal(name, &e.into()))?;
    while let Some(e) = it.read() {
        let e = e.map_err(|e| io_refusal(name, &e.into()))?;
        let raw = OsStr::from_bytes(e.file_name().to_bytes());
        if raw == "." || raw == ".." {
            continue;
        }
        let shown = raw.to_string_lossy().into_owned();
        if is_temp_name(&shown) {
            continue;
        }
        let Ok(st) = rustix::fs::statat(&dir, raw, AtFlags::SYMLINK_NOFOLLOW) else {
            continue;
        };
        let st = match FileType::from_raw_mode(st.st_mode) {
            // Resolved beneath the root like any request: one that leads out is not shown.
            FileType::Symlink => match root
                .open_beneath(&rel.join(raw), OFlags::PATH)
                .and_then(|fd| rustix::fs::fstat(&fd).map_err(Into::into))
            {
                Ok(target) => target,
                Err(_) => continue,
            },
            _ => st,
        };
        match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => entries.push((shown, Some(st.st_size as u64))),
            FileType::Directory => entries.push((shown, None)),
            _ => {}
        }
    }
    entries.sort();
    let mut out = Vec::new();
    for (name, size) in entries {
        let name = escape(&name);
        let _ = match size {
            Some(n) => writeln!(out, "{n}\t{name}"),
            None => writeln!(out, "-\t{name}/"),
        };
    }
    Ok(out)
}
