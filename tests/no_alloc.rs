//! The per-packet path allocates nothing: a sender and a receiver in steady state,
//! driven by hand, under a global allocator that counts allocations.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, Instant};

use udpft::engine::{Config, NullSink, Receiver, Sender, Status};
use udpft::rto::RtoEstimator;

struct Counting;

thread_local! {
    /// Allocations made by this thread: the test harness's own threads allocate too,
    /// and must not be counted.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: forwards the caller's contract to the system allocator unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

// `unsafe` only in this test: counting allocations needs a global allocator.
#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn steady_state_transfer_allocates_nothing_per_packet() {
    let peer = "127.0.0.1:9".parse().unwrap();
    let cfg = Config::default();
    let blocks = 3000u64;
    let len = blocks * cfg.block_size as u64;
    let source = std::io::Read::take(std::io::repeat(7), len);
    let mut now = Instant::now();
    let mut s = Sender::new(
        1,
        peer,
        Box::new(source),
        cfg,
        RtoEstimator::new(cfg.rto),
        None,
    );
    let mut r = Receiver::new(
        1,
        peer,
        Box::new(NullSink::default()),
        cfg,
        RtoEstimator::new(cfg.rto),
        None,
        now,
    );
    let mut wire = vec![0u8; udpft::wire::MAX_DATAGRAM];
    // One exchange: sender → receiver → sender.
    let mut step = |now: Instant, s: &mut Sender, r: &mut Receiver| {
        while let Some(b) = s.poll_transmit(now) {
            let n = b.len();
            wire[..n].copy_from_slice(b);
            r.handle_datagram(now, &wire[..n]);
        }
        // DONE verified: store at once (as the simulator does), then acknowledge.
        if let Some(mut sink) = r.poll_commit() {
            let stored = sink.commit();
            r.commit_done(now, stored);
        }
        while let Some(b) = r.poll_transmit(now) {
            let n = b.len();
            wire[..n].copy_from_slice(b);
            s.handle_datagram(now, &wire[..n]);
        }
    };
    r.poll_transmit(now); // the receiver's ack 0, which a client sends after ACCEPT
    for _ in 0..100 {
        now += Duration::from_micros(20);
        step(now, &mut s, &mut r);
    }
    let before = allocations();
    for _ in 0..2000 {
        now += Duration::from_micros(20);
        step(now, &mut s, &mut r);
    }
    let during = allocations() - before;
    assert_eq!(during, 0, "{during} allocations in 2000 round trips");
    for _ in 0..1000 {
        now += Duration::from_micros(20);
        step(now, &mut s, &mut r);
    }
    assert_eq!(*s.status(), Status::Closed);
    assert_eq!(r.stats().bytes, len);
}
