//! A file writer that does the writing on a thread of its own.
//!
//! Stop-and-wait leaves the network idle while the receiver stores a block, so on large
//! blocks the receiver's `write` into the page cache was the biggest single cost of a
//! transfer (37 % of the client's CPU samples at 65 481-byte blocks, BENCHMARKS.md).
//! [`WriteBehind`] hands full buffers to a writer thread, so storing block *n* overlaps
//! with the round trip of block *n*+1. Memory stays fixed: [`BUFFERS`] buffers of
//! [`BUFFER`] bytes, recycled; a writer that falls behind makes `write` wait for a free
//! buffer, never grow.

use std::fs::File;
use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::thread::JoinHandle;

/// The size of each buffer handed to the writer thread: a block of the largest size
/// fits. Three buffers make 192 KiB per upload, 12 MiB for udpftd's default 64 at once,
/// so that it stays under the 20 MiB the project allows itself (with 128 KiB buffers,
/// 64 uploads took it to 30 MiB; 256 MiB gets and puts at 65 481-byte blocks on
/// loopback were as fast with either size).
pub const BUFFER: usize = 64 * 1024;
/// How many buffers exist: one being filled, the others queued or being written.
pub const BUFFERS: usize = 3;

enum Job {
    Write(Vec<u8>),
    /// Reply once everything before it is written: the first error so far, if any.
    Flush,
}

/// Writes a [`File`] from a background thread. Errors of the thread are reported by the
/// next `write` (as soon as it knows of one) and always by `flush` and
/// [`WriteBehind::finish`], so nothing is lost silently.
pub struct WriteBehind {
    current: Vec<u8>,
    jobs: Option<SyncSender<Job>>,
    free: Receiver<Vec<u8>>,
    flushed: Receiver<io::Result<()>>,
    failed: Arc<AtomicBool>,
    thread: Option<JoinHandle<File>>,
    /// See [`WriteBehind::set_nonblocking`].
    nonblocking: bool,
}

impl WriteBehind {
    /// Starts the writer thread for `file`.
    pub fn new(file: File) -> io::Result<WriteBehind> {
        let (jobs, job_rx) = sync_channel::<Job>(BUFFERS);
        let (free_tx, free) = sync_channel::<Vec<u8>>(BUFFERS);
        let (flush_tx, flushed) = sync_channel::<io::Result<()>>(1);
        for _ in 1..BUFFERS {
            free_tx
                .send(Vec::with_capacity(BUFFER))
                .expect("the channel has room for every buffer");
        }
        let failed = Arc::new(AtomicBool::new(false));
        let flag = failed.clone();
        let thread = std::thread::Builder::new()
            .name("udpft-writer".into())
            .spawn(move || {
                let mut file = file;
                let mut error: Option<io::Error> = None;
                for job in job_rx {
                    match job {
                        Job::Write(mut buf) => {
                            if error.is_none()
                                && let Err(e) = file.write_all(&buf)
                            {
                                flag.store(true, Ordering::Release);
                                error = Some(e);
                            }
                            buf.clear();
                            // The owner may be gone (dropped mid-transfer): fine.
                            let _ = free_tx.send(buf);
                        }
                        Job::Flush => {
                            let reply = match &error {
                                Some(e) => Err(io::Error::new(e.kind(), e.to_string())),
                                None => Ok(()),
                            };
                            let _ = flush_tx.send(reply);
                        }
                    }
                }
                file
            })?;
        Ok(WriteBehind {
            current: Vec::with_capacity(BUFFER),
            jobs: Some(jobs),
            free,
            flushed,
            failed,
            thread: Some(thread),
            nonblocking: false,
        })
    }

    /// In non-blocking mode a `write` never waits for the writer thread: one that does
    /// not fit in the current buffer while every other buffer is still being written
    /// takes nothing and fails with [`io::ErrorKind::WouldBlock`] (a write of at most
    /// [`BUFFER`] bytes is taken whole or not at all). `flush` still waits.
    pub fn set_nonblocking(&mut self, on: bool) {
        self.nonblocking = on;
    }

    fn gone() -> io::Error {
        io::Error::other("the file writer thread stopped")
    }

    fn send(&mut self, job: Job) -> io::Result<()> {
        self.jobs
            .as_ref()
            .ok_or_else(Self::gone)?
            .send(job)
            .map_err(|_| Self::gone())
    }

    /// Hands the current buffer to the writer and takes a free one.
    fn hand_off(&mut self) -> io::Result<()> {
        let next = self.free.recv().map_err(|_| Self::gone())?;
        let full = std::mem::replace(&mut self.current, next);
        self.send(Job::Write(full))
    }

    /// Writes everything out and returns the file, for syncing and renaming.
    pub fn finish(mut self) -> io::Result<File> {
        self.flush()?;
        self.jobs = None; // ends the thread's loop
        self.thread
            .take()
            .ok_or_else(Self::gone)?
            .join()
            .map_err(|_| Self::gone())
    }
}

impl Write for WriteBehind {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.failed.load(Ordering::Acquire) {
            // The thread's own error, with its kind and text, comes from flush.
            return Err(self.flush().err().unwrap_or_else(Self::gone));
        }
        if self.nonblocking && buf.len() <= BUFFER {
            if self.current.len() + buf.len() > BUFFER {
                let next = match self.free.try_recv() {
                    Ok(b) => b,
                    Err(TryRecvError::Empty) => return Err(io::ErrorKind::WouldBlock.into()),
                    Err(TryRecvError::Disconnected) => return Err(Self::gone()),
                };
                let full = std::mem::replace(&mut self.current, next);
                self.send(Job::Write(full))?;
            }
            // A full buffer is handed off by the next write (or flush), which may wait.
            self.current.extend_from_slice(buf);
            return Ok(buf.len());
        }
        let n = buf.len().min(BUFFER - self.current.len());
        self.current.extend_from_slice(&buf[..n]);
        if self.current.len() == BUFFER {
            self.hand_off()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.current.is_empty() {
            self.hand_off()?;
        }
        self.send(Job::Flush)?;
        self.flushed.recv().map_err(|_| Self::gone())?
    }
}

impl Drop for WriteBehind {
    fn drop(&mut self) {
        // Close the queue and wait, so the file is closed when we are gone (the owner
        // may remove it right after).
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn writes_everything_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut w = WriteBehind::new(File::create(&path).unwrap()).unwrap();
        let mut expect = Vec::new();
        for i in 0..5000u32 {
            let chunk: Vec<u8> = (0..(i % 977) as usize)
                .map(|j| (i as usize + j) as u8)
                .collect();
            w.write_all(&chunk).unwrap();
            expect.extend_from_slice(&chunk);
        }
        drop(w.finish().unwrap());
        let mut got = Vec::new();
        File::open(&path).unwrap().read_to_end(&mut got).unwrap();
        assert_eq!(got.len(), expect.len());
        assert!(got == expect);
    }

    /// Non-blocking: while the writer is stuck (a pipe nobody reads), writes fill the
    /// buffers and then take nothing (WouldBlock); once it drains, they go on, and
    /// every byte arrives once, in order.
    #[test]
    fn nonblocking_writes_take_nothing_while_the_writer_is_stuck() {
        let (rx, tx) = rustix::pipe::pipe().unwrap();
        let mut w = WriteBehind::new(File::from(tx)).unwrap();
        w.set_nonblocking(true);
        let block: Vec<u8> = (0..1000).map(|i| i as u8).collect();
        let mut taken = 0usize;
        let mut refused = 0;
        // The pipe holds 64 KiB; the buffers hold 3 × 64 KiB: well before 2 MB the
        // writer is stuck and every buffer full.
        while taken < 2 << 20 {
            match w.write(&block) {
                Ok(n) => {
                    assert_eq!(n, block.len(), "taken whole");
                    taken += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    refused += 1;
                    break;
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(refused, 1, "stuck writer: a write is refused");
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            File::from(rx).read_to_end(&mut got).unwrap();
            got
        });
        // Draining now: the refused block goes through in time.
        let mut more = 0;
        while more < 10 {
            match w.write(&block) {
                Ok(n) => {
                    taken += n;
                    more += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        drop(w.finish().unwrap());
        let got = reader.join().unwrap();
        assert_eq!(got.len(), taken);
        assert!(got.chunks(1000).all(|c| c == &block[..]));
    }

    #[test]
    fn errors_of_the_thread_are_reported() {
        // /dev/full fails every write with "no space left on device".
        let Ok(full) = File::options().write(true).open("/dev/full") else {
            panic!("/dev/full is needed for this test");
        };
        let mut w = WriteBehind::new(full).unwrap();
        let block = vec![7u8; 64 * 1024];
        let mut failed_early = false;
        for _ in 0..64 {
            if w.write_all(&block).is_err() {
                failed_early = true;
                break;
            }
        }
        let e = w.flush().unwrap_err();
        assert_eq!(e.raw_os_error(), None); // rebuilt from the thread's error
        assert!(e.to_string().to_lowercase().contains("space"), "{e}");
        assert!(
            failed_early,
            "16 MiB into /dev/full and write never noticed"
        );
    }
}
