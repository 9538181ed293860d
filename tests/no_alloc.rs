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

/// Drives a sender and a receiver with window `window` through 3000 blocks, `lose`
/// deciding which DATA (by number, first copy only) never arrives; returns the
/// allocations made while blocks 100 to 2100 went through.
fn allocations_in_steady_state(window: u16, lose: fn(u64) -> bool) -> u64 {
    let peer = "127.0.0.1:9".parse().unwrap();
    let cfg = Config {
        window,
        ..Config::default()
    };
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
    // Packets already lost once: a resend gets through. A fixed array, not a set: the
    // test's own bookkeeping must not allocate either.
    let mut lost_once = vec![false; blocks as usize + 2];
    // One exchange: sender → receiver → sender, then the timers.
    let mut step = |now: Instant, s: &mut Sender, r: &mut Receiver| {
        while let Some(b) = s.poll_transmit(now) {
            let n = b.len();
            wire[..n].copy_from_slice(b);
            let seq = u64::from_be_bytes(wire[12..20].try_into().unwrap());
            if wire[3] == 3 && lose(seq) && !lost_once[seq as usize] {
                lost_once[seq as usize] = true;
                continue;
            }
            r.handle_datagram(now, &wire[..n]);
        }
        // DONE verified: store at once (as the simulator does), then acknowledge.
        if let Some(mut sink) = r.poll_commit() {
            let stored = sink.commit();
            r.commit_done(now, stored);
        }
        if r.poll_timeout().is_some_and(|t| t <= now) {
            r.handle_timeout(now);
        }
        while let Some(b) = r.poll_transmit(now) {
            let n = b.len();
            wire[..n].copy_from_slice(b);
            s.handle_datagram(now, &wire[..n]);
        }
        if s.poll_timeout().is_some_and(|t| t <= now) {
            s.handle_timeout(now);
        }
    };
    r.poll_transmit(now); // the receiver's ack 0, which a client sends after ACCEPT
    let mut before = 0;
    let mut during = None;
    for _ in 0..200_000 {
        now += Duration::from_micros(20);
        step(now, &mut s, &mut r);
        let at = r.stats().bytes / cfg.block_size as u64;
        if at >= 100 && before == 0 {
            before = allocations();
        }
        if at >= 2100 && during.is_none() {
            during = Some(allocations() - before);
        }
        if *s.status() != Status::Running {
            break;
        }
    }
    assert_eq!(*s.status(), Status::Closed, "window {window}");
    assert_eq!(r.stats().bytes, len, "window {window}");
    during.expect("blocks 100 to 2100 went through")
}

#[test]
fn no_allocation_per_packet_at_any_window_even_with_repairs() {
    for window in [1, 2, 16, 64] {
        let clean = allocations_in_steady_state(window, |_| false);
        assert_eq!(clean, 0, "window {window}: {clean} allocations, lossless");
        let lossy = allocations_in_steady_state(window, |seq| seq % 37 == 5);
        assert_eq!(
            lossy, 0,
            "window {window}: {lossy} allocations, one block in 37 lost"
        );
    }
}

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
