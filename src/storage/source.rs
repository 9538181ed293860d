//! A file to send, read exactly as announced.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

/// A regular file opened for sending, with the size and modification time it had when
/// opened (the size is what the transfer announces).
///
/// Guarantees: reads return exactly [`FileSource::size`] bytes and then end; if the file
/// turns out shorter or longer, or its size or modification time differ from the ones
/// seen at open when the end is reached, the read fails with an error that says so,
/// so that a file changed under a transfer is never delivered as verified.
#[derive(Debug)]
pub struct FileSource {
    file: BufReader<File>,
    name: String,
    size: u64,
    mtime: (i64, i64),
    read: u64,
}

/// The read-ahead buffer: a few large reads per round trip rather than one per block.
const READ_AHEAD: usize = 256 * 1024;

fn mtime(st: &rustix::fs::Stat) -> (i64, i64) {
    (st.st_mtime, st.st_mtime_nsec as i64)
}

impl FileSource {
    /// Wraps an open file; `name` is used in error messages (shown escaped).
    pub fn new(file: File, name: &str) -> io::Result<FileSource> {
        let st = rustix::fs::fstat(&file)?;
        Ok(FileSource {
            file: BufReader::with_capacity(READ_AHEAD, file),
            name: crate::text::escape(name).into_owned(),
            size: st.st_size as u64,
            mtime: mtime(&st),
            read: 0,
        })
    }

    /// The same source without its own read-ahead buffer, for a reader that reads in
    /// large chunks itself (a [`super::ReadAhead`]). Call before the first read.
    pub fn unbuffered(self) -> FileSource {
        debug_assert_eq!(self.read, 0, "nothing may be buffered yet");
        FileSource {
            file: BufReader::with_capacity(0, self.file.into_inner()),
            ..self
        }
    }

    /// Opens a local file (the client's put) and checks that it is a regular file.
    pub fn open(path: &Path) -> io::Result<FileSource> {
        let file = File::options()
            .read(true)
            .custom_flags((rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::NOCTTY).bits() as i32)
            .open(path)?;
        let st = rustix::fs::fstat(&file)?;
        let t = rustix::fs::FileType::from_raw_mode(st.st_mode);
        if t != rustix::fs::FileType::RegularFile {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "'{}' is {}, not a regular file",
                    path.display(),
                    super::type_name(t)
                ),
            ));
        }
        rustix::fs::fcntl_setfl(&file, rustix::fs::OFlags::empty())?;
        FileSource::new(file, &path.display().to_string())
    }

    /// The size the file had when opened: what the transfer announces.
    pub fn size(&self) -> u64 {
        self.size
    }

    fn changed(&self, what: String) -> io::Error {
        io::Error::other(format!(
            "'{}' changed while it was being sent ({what}); send it again once it is stable",
            self.name
        ))
    }
}

use std::os::unix::fs::OpenOptionsExt;

impl Read for FileSource {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        self.read += n as u64;
        if self.read > self.size {
            return Err(self.changed(format!(
                "it grew past the {} bytes it had when opened",
                self.size
            )));
        }
        if n == 0 && !buf.is_empty() {
            if self.read < self.size {
                return Err(self.changed(format!(
                    "it ended after {} of the {} bytes it had when opened",
                    self.read, self.size
                )));
            }
            let st = rustix::fs::fstat(self.file.get_ref())?;
            if st.st_size as u64 != self.size {
                return Err(self.changed(format!(
                    "its size went from {} to {} bytes",
                    self.size, st.st_size
                )));
            }
            if mtime(&st) != self.mtime {
                return Err(self.changed("it was modified".to_string()));
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn read_all(s: &mut FileSource) -> io::Result<Vec<u8>> {
        let mut v = Vec::new();
        s.read_to_end(&mut v).map(|_| v)
    }

    #[test]
    fn a_stable_file_reads_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, vec![5u8; 300_000]).unwrap();
        let mut s = FileSource::open(&p).unwrap();
        assert_eq!(s.size(), 300_000);
        assert_eq!(read_all(&mut s).unwrap().len(), 300_000);
    }

    #[test]
    fn truncated_extended_or_modified_files_fail() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        // Shrinks before the end is read.
        std::fs::write(&p, vec![1u8; 10_000]).unwrap();
        let mut s = FileSource::open(&p).unwrap();
        File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(10)
            .unwrap();
        let e = read_all(&mut s).unwrap_err().to_string();
        assert!(e.contains("changed while it was being sent"), "{e}");
        // Grows.
        std::fs::write(&p, vec![1u8; 10]).unwrap();
        let mut s = FileSource::open(&p).unwrap();
        File::options()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(&[2u8; 100])
            .unwrap();
        let e = read_all(&mut s).unwrap_err().to_string();
        assert!(e.contains("grew"), "{e}");
        // Same size, rewritten in place (a different modification time).
        std::fs::write(&p, b"abcdef").unwrap();
        let mut s = FileSource::open(&p).unwrap();
        let mut head = [0u8; 3];
        s.read_exact(&mut head).unwrap();
        let f = File::options().write(true).open(&p).unwrap();
        f.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
        let e = read_all(&mut s).unwrap_err().to_string();
        assert!(e.contains("modified"), "{e}");
    }

    #[test]
    fn special_files_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pipe");
        rustix::fs::mkfifoat(rustix::fs::CWD, &p, rustix::fs::Mode::from_raw_mode(0o600)).unwrap();
        let e = FileSource::open(&p).unwrap_err().to_string();
        assert!(e.contains("is a FIFO, not a regular file"), "{e}");
    }
}
