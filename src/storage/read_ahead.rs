//! Reading ahead on IO workers, so that the thread that sends never waits for a disk.
//!
//! A [`ReadAhead`] wraps any source (a file, a directory listing) and keeps up to
//! [`CHUNKS`] chunks of [`CHUNK`] bytes read ahead of the sender. The reads themselves
//! are jobs handed to a scheduler (the server's IO worker pool); `read` only copies
//! from chunks already filled. When none is filled yet it returns
//! [`io::ErrorKind::WouldBlock`], and the `ready` callback runs once the next chunk is
//! in: the engine parks the session until then (PROTOCOL.md is unaffected: the peer
//! just sees a longer round trip).

use std::collections::VecDeque;
use std::io::{self, Read};
use std::sync::{Arc, Mutex, MutexGuard};

/// The size of one read-ahead chunk: a block of the largest size fits.
pub const CHUNK: usize = 64 * 1024;
/// Chunks per source: one being sent from while the next is read.
pub const CHUNKS: usize = 2;

/// Runs a job on some other thread (the IO worker pool).
pub type Schedule = Arc<dyn Fn(Box<dyn FnOnce() + Send>) + Send + Sync>;
/// Tells the network thread that a chunk was filled (or the source failed or ended).
pub type Ready = Arc<dyn Fn() + Send + Sync>;

struct State {
    /// The wrapped source; `None` while a worker reads from it.
    source: Option<Box<dyn Read + Send>>,
    /// Filled chunks, oldest first, and how much of the first was consumed.
    filled: VecDeque<Vec<u8>>,
    consumed: usize,
    /// Empty chunks, ready for the next read.
    free: Vec<Vec<u8>>,
    ended: bool,
    error: Option<io::Error>,
}

/// A source whose reads run elsewhere (see the module docs).
///
/// Guarantees: the bytes come out exactly as the wrapped source produced them, then its
/// end or its error; memory is at most [`CHUNKS`] × [`CHUNK`] bytes; `read` never
/// blocks on the source, and after it returned `WouldBlock` the `ready` callback runs
/// (from a worker) when reading may go on.
pub struct ReadAhead {
    state: Arc<Mutex<State>>,
    schedule: Schedule,
    ready: Ready,
}

impl ReadAhead {
    /// Wraps `source`. Nothing is read until [`ReadAhead::prefetch`] or the first `read`.
    pub fn new(source: Box<dyn Read + Send>, schedule: Schedule, ready: Ready) -> ReadAhead {
        let state = State {
            source: Some(source),
            filled: VecDeque::with_capacity(CHUNKS),
            consumed: 0,
            free: (0..CHUNKS).map(|_| Vec::with_capacity(CHUNK)).collect(),
            ended: false,
            error: None,
        };
        ReadAhead {
            state: Arc::new(Mutex::new(state)),
            schedule,
            ready,
        }
    }

    /// Fills the first chunk on the calling thread (an IO worker opening the file), so
    /// that the first block is ready when the transfer starts.
    pub fn prefetch(&self) {
        let taken = {
            let mut st = lock(&self.state);
            st.source.take().zip(st.free.pop())
        };
        if let Some((source, chunk)) = taken {
            refill(&self.state, source, chunk);
        }
    }

    /// Starts reading the next chunk on a worker if a chunk is free, the source is idle
    /// and has not ended.
    fn start_refill(&self, st: &mut State) {
        if st.ended || st.error.is_some() || st.free.is_empty() {
            return;
        }
        let Some(source) = st.source.take() else {
            return; // a read is already under way
        };
        let chunk = st.free.pop().expect("checked above");
        let (state, ready) = (self.state.clone(), self.ready.clone());
        (self.schedule)(Box::new(move || {
            refill(&state, source, chunk);
            ready();
        }));
    }
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // A worker that panicked mid-read leaves the state consistent (the source is simply
    // gone): go on and report the end.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reads one chunk from `source` (blocking: runs on a worker) and hands both back.
fn refill(state: &Mutex<State>, mut source: Box<dyn Read + Send>, mut chunk: Vec<u8>) {
    chunk.clear();
    chunk.resize(CHUNK, 0);
    let mut n = 0;
    let mut result = Ok(());
    while n < CHUNK {
        match source.read(&mut chunk[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    chunk.truncate(n);
    let mut st = lock(state);
    if n > 0 {
        st.filled.push_back(chunk);
    } else {
        st.free.push(chunk);
    }
    match result {
        Err(e) => st.error = Some(e),
        Ok(()) if n < CHUNK => st.ended = true,
        Ok(()) => {}
    }
    st.source = Some(source);
}

impl Read for ReadAhead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut st = lock(&self.state);
        let mut n = 0;
        while n < buf.len() {
            let consumed = st.consumed;
            let Some(front) = st.filled.front() else {
                break;
            };
            let from = &front[consumed..];
            let k = from.len().min(buf.len() - n);
            buf[n..n + k].copy_from_slice(&from[..k]);
            let whole = consumed + k == front.len();
            n += k;
            st.consumed += k;
            if whole {
                let chunk = st.filled.pop_front().expect("front exists");
                st.free.push(chunk);
                st.consumed = 0;
            }
        }
        self.start_refill(&mut st);
        if n > 0 {
            return Ok(n);
        }
        if let Some(e) = st.error.take() {
            // Reported once; the source is not read again.
            st.ended = true;
            return Err(e);
        }
        if st.ended {
            return Ok(0);
        }
        Err(io::ErrorKind::WouldBlock.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::{Receiver, channel};

    type Job = Box<dyn FnOnce() + Send>;

    /// A scheduler that queues jobs for the test to run by hand, and a ready counter.
    fn manual() -> (Schedule, Receiver<Job>, Ready, Arc<Mutex<u32>>) {
        let (tx, rx) = channel::<Job>();
        let tx = Mutex::new(tx);
        let schedule: Schedule = Arc::new(move |job| {
            let _ = tx.lock().unwrap().send(job);
        });
        let count = Arc::new(Mutex::new(0));
        let c = count.clone();
        let ready: Ready = Arc::new(move || *c.lock().unwrap() += 1);
        (schedule, rx, ready, count)
    }

    #[test]
    fn delivers_every_byte_in_order_without_blocking() {
        let data: Vec<u8> = (0..(CHUNK * 3 + 123)).map(|i| (i * 7) as u8).collect();
        let (schedule, jobs, ready, readies) = manual();
        let mut ra = ReadAhead::new(Box::new(io::Cursor::new(data.clone())), schedule, ready);
        let mut out = Vec::new();
        let mut buf = [0u8; 1000];
        let mut would_block = 0;
        loop {
            match ra.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    would_block += 1;
                    // Nothing is read on this thread: a job must be waiting.
                    let job = jobs.try_recv().expect("a refill was scheduled");
                    job();
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(out, data);
        assert!(would_block >= 1);
        assert!(*readies.lock().unwrap() >= 4, "ready after each refill");
    }

    #[test]
    fn prefetch_fills_the_first_chunk_and_errors_are_reported() {
        struct Failing(u32);
        impl Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::other("disk on fire"));
                }
                self.0 -= 1;
                buf[0] = 9;
                Ok(1)
            }
        }
        let (schedule, jobs, ready, _) = manual();
        let mut ra = ReadAhead::new(Box::new(Failing(3)), schedule, ready);
        ra.prefetch();
        let mut buf = [0u8; 10];
        assert_eq!(ra.read(&mut buf).unwrap(), 3, "prefetched bytes come first");
        assert!(
            jobs.try_recv().is_err(),
            "the source failed: nothing more to read"
        );
        let e = ra.read(&mut buf).unwrap_err();
        assert_eq!(e.to_string(), "disk on fire");
        assert_eq!(ra.read(&mut buf).unwrap(), 0, "reported once, then the end");
    }
}
