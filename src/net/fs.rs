//! Files: confinement of remote paths to the served root, atomic (all-or-nothing)
//! files, and directory listings.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};

use rand::RngExt;

use super::write_behind::WriteBehind;
use crate::engine::Sink;
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

/// The prefix and suffix of temporary files; listings hide names of that shape.
pub const TEMP_PREFIX: &str = ".udpft-";
pub const TEMP_SUFFIX: &str = ".part";

/// Whether `name` is one of our temporary files.
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with(TEMP_PREFIX) && name.ends_with(TEMP_SUFFIX)
}

/// The served directory. Every remote path is resolved inside it or refused.
#[derive(Debug, Clone)]
pub struct Root {
    root: PathBuf,
}

/// Checks a remote name by its components: relative, no `..`, no NUL, not empty.
/// Returns the normalised relative path (`.` components dropped).
pub fn check_name(name: &str) -> Result<PathBuf, Refusal> {
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
                            "access denied: '{name}' is a reserved name (an upload in progress)"
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
                        "access denied: '{name}' contains '..'; paths stay inside the served directory"
                    ),
                ));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(Refusal::new(
                    ErrorCode::AccessDenied,
                    format!(
                        "access denied: '{name}' is absolute; paths are relative to the served directory"
                    ),
                ));
            }
        }
    }
    Ok(rel)
}

fn outside(name: &str) -> Refusal {
    Refusal::new(
        ErrorCode::AccessDenied,
        format!("access denied: '{name}' leads outside the served directory"),
    )
}

/// The refusal for an OS error met while serving `name`.
pub(crate) fn io_refusal(name: &str, e: &io::Error) -> Refusal {
    match e.kind() {
        io::ErrorKind::NotFound => {
            Refusal::new(ErrorCode::NotFound, format!("server has no file '{name}'"))
        }
        io::ErrorKind::PermissionDenied => Refusal::new(
            ErrorCode::AccessDenied,
            format!("access denied: '{name}': {e}"),
        ),
        _ => Refusal::new(ErrorCode::Io, format!("'{name}': {e}")),
    }
}

impl Root {
    /// Opens the served directory (canonicalised once, here).
    pub fn new(dir: &Path) -> io::Result<Root> {
        let root = dir.canonicalize()?;
        if !root.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is not a directory", root.display()),
            ));
        }
        Ok(Root { root })
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    pub(crate) fn inside(&self, p: &Path) -> bool {
        p.starts_with(&self.root)
    }

    /// An existing file or directory named by `name`, resolved (symlinks followed) and
    /// checked to lie inside the root.
    pub fn existing(&self, name: &str) -> Result<PathBuf, Refusal> {
        let rel = check_name(name)?;
        let target = self
            .root
            .join(&rel)
            .canonicalize()
            .map_err(|e| io_refusal(name, &e))?;
        if !self.inside(&target) {
            return Err(outside(name));
        }
        Ok(target)
    }

    /// Where a new file named `name` goes: its parent directory is resolved and checked
    /// to lie inside the root; if something already exists under the name (a symlink
    /// included) it must resolve inside the root too. Returns the path (the parent
    /// resolved, the last component as given) and whether it exists.
    pub fn new_file(&self, name: &str) -> Result<(PathBuf, bool), Refusal> {
        let rel = check_name(name)?;
        let Some(file_name) = rel.file_name() else {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                format!("'{name}' does not name a file"),
            ));
        };
        let parent = self.root.join(&rel);
        let parent = parent.parent().unwrap_or(&self.root);
        let parent = parent.canonicalize().map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Refusal::new(
                ErrorCode::NotFound,
                format!("server has no directory for '{name}'"),
            ),
            _ => io_refusal(name, &e),
        })?;
        if !self.inside(&parent) {
            return Err(outside(name));
        }
        if !parent.is_dir() {
            return Err(Refusal::new(
                ErrorCode::NotFound,
                format!("server has no directory for '{name}'"),
            ));
        }
        let target = parent.join(file_name);
        let exists = match fs::symlink_metadata(&target) {
            Ok(_) => {
                // Something is there; if it is a symlink it must not lead outside.
                match target.canonicalize() {
                    Ok(t) if !self.inside(&t) => return Err(outside(name)),
                    Ok(_) => {}
                    // A dangling symlink: where it points is unknown, so refuse it.
                    Err(_) => return Err(outside(name)),
                }
                true
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(io_refusal(name, &e)),
        };
        Ok((target, exists))
    }
}

/// The listing of `dir`: one entry per line, sorted by name; `<size>\t<name>` for a file,
/// `-\t<name>/` for a directory, names escaped by [`escape_name`]. Our temporary files
/// are not shown; entries whose metadata cannot be read (a dangling symlink) are skipped,
/// and so are symlinks that lead outside `root`: even their size is not the client's
/// business.
pub fn listing(root: &Root, dir: &Path) -> io::Result<Vec<u8>> {
    let mut entries: Vec<(String, Option<u64>)> = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if is_temp_name(&name) {
            continue;
        }
        // Follows symlinks, so a link shows as what it points to, if that is inside.
        if e.file_type()?.is_symlink() && !e.path().canonicalize().is_ok_and(|t| root.inside(&t)) {
            continue;
        }
        let Ok(md) = fs::metadata(e.path()) else {
            continue;
        };
        entries.push((name, (!md.is_dir()).then_some(md.len())));
    }
    entries.sort();
    let mut out = Vec::new();
    for (name, size) in entries {
        let name = escape_name(&name);
        match size {
            Some(n) => writeln!(out, "{n}\t{name}")?,
            None => writeln!(out, "-\t{name}/")?,
        }
    }
    Ok(out)
}

pub use crate::text::escape as escape_name;

/// A file that appears under its final name only when [`Sink::commit`] is called:
/// data goes to a hidden temporary file in the same directory, which is synced and then
/// moved into place. Dropped without a commit, it removes its temporary file.
pub struct AtomicFile {
    tmp: PathBuf,
    dest: PathBuf,
    out: Option<WriteBehind>,
    overwrite: bool,
}

impl AtomicFile {
    /// Creates the temporary file next to `dest`. With `overwrite`, commit replaces an
    /// existing `dest`; without, commit fails with `AlreadyExists` if `dest` exists.
    pub fn create(dest: &Path, overwrite: bool) -> io::Result<AtomicFile> {
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut rng = rand::rng();
        loop {
            let tmp = dir.join(format!(
                "{TEMP_PREFIX}{:016x}{TEMP_SUFFIX}",
                rng.random::<u64>()
            ));
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
            {
                Ok(f) => {
                    return Ok(AtomicFile {
                        tmp,
                        dest: dest.to_path_buf(),
                        out: Some(WriteBehind::new(f)?),
                        overwrite,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The temporary file's path.
    pub fn temp_path(&self) -> &Path {
        &self.tmp
    }

    fn closed() -> io::Error {
        io::Error::other("the file is already committed")
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
        f.sync_data()?;
        drop(f);
        if self.overwrite {
            fs::rename(&self.tmp, &self.dest)?;
        } else {
            // A hard link fails if the destination exists: an atomic "create, never replace".
            fs::hard_link(&self.tmp, &self.dest)?;
            let _ = fs::remove_file(&self.tmp);
        }
        // Make the new directory entry durable too (best effort).
        if let Some(dir) = self.dest.parent()
            && let Ok(d) = File::open(if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            })
        {
            let _ = d.sync_all();
        }
        self.tmp = PathBuf::new();
        Ok(())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            self.out = None;
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temps(dir: &Path) -> usize {
        fs::read_dir(dir)
            .unwrap()
            .filter(|e| is_temp_name(&e.as_ref().unwrap().file_name().to_string_lossy()))
            .count()
    }

    #[test]
    fn listed_names_stay_on_one_line() {
        assert_eq!(escape_name("plain name.txt"), "plain name.txt");
        assert_eq!(escape_name("a\nb\tc\\d\u{7}"), "a\\nb\\tc\\\\d\\x07");
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("two\nlines"), b"xy").unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        let root = Root::new(dir.path()).unwrap();
        let text = String::from_utf8(listing(&root, dir.path()).unwrap()).unwrap();
        assert_eq!(text, "-\tsub/\n2\ttwo\\nlines\n");
    }

    #[test]
    fn names() {
        assert!(check_name("a/b.txt").is_ok());
        assert_eq!(check_name("./a").unwrap(), PathBuf::from("a"));
        assert_eq!(check_name("").unwrap_err().code, ErrorCode::BadRequest);
        assert_eq!(check_name("a\0b").unwrap_err().code, ErrorCode::BadRequest);
        assert_eq!(
            check_name("../x").unwrap_err().code,
            ErrorCode::AccessDenied
        );
        assert_eq!(
            check_name("a/../../x").unwrap_err().code,
            ErrorCode::AccessDenied
        );
        assert_eq!(
            check_name("/etc/passwd").unwrap_err().code,
            ErrorCode::AccessDenied
        );
        assert_eq!(
            check_name("d/.udpft-0123.part").unwrap_err().code,
            ErrorCode::AccessDenied
        );
        // A name that merely contains dots is fine.
        assert!(check_name("..hidden").is_ok());
    }

    #[test]
    fn atomic_commit_and_drop() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f");
        {
            let mut f = AtomicFile::create(&dest, false).unwrap();
            f.write_all(b"half").unwrap();
            assert_eq!(temps(dir.path()), 1);
        }
        assert!(!dest.exists());
        assert_eq!(temps(dir.path()), 0);

        let mut f = AtomicFile::create(&dest, false).unwrap();
        f.write_all(b"hello").unwrap();
        f.commit().unwrap();
        drop(f);
        assert_eq!(fs::read(&dest).unwrap(), b"hello");

        let mut f = AtomicFile::create(&dest, false).unwrap();
        f.write_all(b"other").unwrap();
        assert_eq!(f.commit().unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        drop(f);
        assert_eq!(fs::read(&dest).unwrap(), b"hello");
        assert_eq!(temps(dir.path()), 0);

        let mut f = AtomicFile::create(&dest, true).unwrap();
        f.write_all(b"new").unwrap();
        f.commit().unwrap();
        drop(f);
        assert_eq!(fs::read(&dest).unwrap(), b"new");
        assert_eq!(temps(dir.path()), 0);
    }

    #[test]
    fn confinement() {
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret"), b"s").unwrap();
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        fs::write(dir.path().join("sub/f"), b"x").unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("out")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("s")).unwrap();
        let root = Root::new(dir.path()).unwrap();
        assert!(root.existing("sub/f").is_ok());
        assert_eq!(root.existing("nope").unwrap_err().code, ErrorCode::NotFound);
        assert_eq!(
            root.existing("out/secret").unwrap_err().code,
            ErrorCode::AccessDenied
        );
        assert_eq!(
            root.existing("s").unwrap_err().code,
            ErrorCode::AccessDenied
        );
        assert_eq!(
            root.existing("out").unwrap_err().code,
            ErrorCode::AccessDenied
        );
        assert_eq!(
            root.new_file("out/x").unwrap_err().code,
            ErrorCode::AccessDenied
        );
        assert_eq!(
            root.new_file("s").unwrap_err().code,
            ErrorCode::AccessDenied
        );
        assert!(root.new_file("sub/f").unwrap().1);
        assert!(!root.new_file("sub/g").unwrap().1);
        assert_eq!(
            root.new_file("nodir/g").unwrap_err().code,
            ErrorCode::NotFound
        );
        // Links out of the root are not listed (not even the size of what they point
        // to); a link that stays inside is listed as what it points to.
        std::os::unix::fs::symlink(dir.path().join("sub/f"), dir.path().join("in")).unwrap();
        let l = String::from_utf8(listing(&root, root.path()).unwrap()).unwrap();
        assert_eq!(l, "1\tin\n-\tsub/\n");
    }
}
