//! Windowed transfers (PROTOCOL.md §4.5) through the simulated link, on a virtual clock:
//! every window at every loss rate ends byte-exact or with a clear error; never more
//! than the window in flight; duplicate acknowledgements never cause a resend; a peer
//! that only speaks stop-and-wait is served exactly as before.

use std::io::Cursor;
use std::time::Duration;

use udpft::engine::{Config, Event, Job, Kind, Status};
use udpft::link::{Impairments, LinkConfig, Rate, Way};
use udpft::sim::{self, Capture, ServerPlan, SimConfig, SimOutcome};
use udpft::wire::{Datagram, Message};

fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    let mut p = sim::Pattern::new(len as u64, seed);
    std::io::Read::read_exact(&mut p, &mut v).unwrap();
    v
}

fn lossy(loss: f64) -> LinkConfig {
    LinkConfig::symmetric(Impairments {
        drop: loss,
        duplicate: loss / 3.0,
        reorder: loss / 3.0,
        corrupt: loss / 3.0,
        delay: Duration::from_micros(50),
        jitter: Duration::from_micros(30),
        reorder_by: Duration::from_micros(700),
        ..Impairments::none()
    })
}

/// Client asks for `window`, the server grants up to `window`.
fn cfg(block: u32, window: u16, link: LinkConfig, seed: u64) -> SimConfig {
    let engine = Config {
        block_size: block,
        window,
        give_up: Duration::from_secs(30),
        ..Config::default()
    };
    SimConfig {
        link,
        seed,
        client: engine,
        server: engine,
        ..SimConfig::default()
    }
}

fn get(c: SimConfig, bytes: &[u8]) -> (SimOutcome, Capture) {
    get_scripted(c, bytes, &mut |_, _| true)
}

fn get_scripted(
    c: SimConfig,
    bytes: &[u8],
    f: &mut dyn FnMut(Way, &mut Vec<u8>) -> bool,
) -> (SimOutcome, Capture) {
    let cap = Capture::default();
    let out = sim::run_scripted(
        c,
        "f",
        Job::Get(Box::new(cap.clone())),
        ServerPlan::Serve(Box::new(Cursor::new(bytes.to_vec())), bytes.len() as u64),
        f,
    );
    (out, cap)
}

fn put(c: SimConfig, bytes: &[u8]) -> (SimOutcome, Capture) {
    let cap = Capture::default();
    let out = sim::run(
        c,
        "f",
        Job::Put(Box::new(Cursor::new(bytes.to_vec())), bytes.len() as u64),
        ServerPlan::Store(Box::new(cap.clone())),
    );
    (out, cap)
}

/// The bytes arrived exactly and were committed, or the run failed with an error and
/// nothing was committed. Never a hang.
fn check(o: &SimOutcome, cap: &Capture, bytes: &[u8], what: &str) -> bool {
    assert!(!o.hung, "{what}: hung: {o:?}");
    match &o.client {
        Status::Closed | Status::Complete => {
            assert!(
                cap.contents() == bytes,
                "{what}: silent corruption ({} vs {} bytes)",
                cap.contents().len(),
                bytes.len()
            );
            assert!(cap.is_committed(), "{what}: success without commit");
            true
        }
        Status::Failed(e) => {
            assert!(!cap.is_committed(), "{what}: failed ({e}) but committed");
            assert!(!e.to_string().is_empty());
            false
        }
        Status::Running => panic!("{what}: still running"),
    }
}

const WINDOWS: [u16; 4] = [1, 2, 16, 64];
const LOSSES: [f64; 6] = [0.0, 0.01, 0.05, 0.10, 0.20, 0.30];

/// Every window × loss rate × seed, both directions, sizes around the block and the
/// window edges. With a 30 s give-up a failure at ≤ 30% loss is a bug, not bad luck.
#[test]
fn every_window_at_every_loss_rate_is_byte_exact() {
    let b = 512usize;
    let sizes = [0, 1, b, b + 1, 17 * b + 3, 200 * b];
    let (mut runs, mut ok) = (0, 0);
    for &window in &WINDOWS {
        for &len in &sizes {
            let bytes = data(len, len as u64 + window as u64);
            for &loss in &LOSSES {
                for seed in 0..4 {
                    let c = cfg(b as u32, window, lossy(loss), seed);
                    let what = format!("window {window}, {len} B at {loss} loss, seed {seed}");
                    let (o, cap) = get(c, &bytes);
                    ok += check(&o, &cap, &bytes, &format!("get, {what}")) as u32;
                    let (o, cap) = put(c, &bytes);
                    ok += check(&o, &cap, &bytes, &format!("put, {what}")) as u32;
                    runs += 2;
                }
            }
        }
    }
    assert_eq!(runs, 4 * 6 * 6 * 4 * 2);
    assert_eq!(ok, runs);
}

/// A larger stream at every window: the windowed ones finish in less virtual time
/// than stop-and-wait on the same link (the point of a window), lossless and lossy.
#[test]
fn a_window_beats_stop_and_wait_on_the_same_link() {
    let bytes = data(1 << 20, 5);
    for loss in [0.0, 0.01, 0.05] {
        let mut took = vec![];
        for &window in &WINDOWS {
            let (o, cap) = get(cfg(1408, window, lossy(loss), 7), &bytes);
            assert!(
                check(&o, &cap, &bytes, "1 MiB"),
                "window {window}: {:?}",
                o.client
            );
            took.push(o.completed.expect("completed"));
        }
        // Window 16 and 64 at least 3× faster than window 1 on a 100 µs round trip
        // (the handshake, which no window speeds up, is included).
        assert!(took[2] * 3 < took[0], "loss {loss}: {took:?}");
        assert!(took[3] * 3 < took[0], "loss {loss}: {took:?}");
    }
}

/// Never more than N unacknowledged: the sender sends packet n only once everything
/// up to n − N has been cumulatively acknowledged. Read from the server's own trace
/// (events in the order it handled and sent them), on a lossy, reordering link.
#[test]
fn never_more_than_the_window_in_flight() {
    let bytes = data(300 * 512, 11);
    for &window in &WINDOWS {
        for seed in 0..4 {
            let mut c = cfg(512, window, lossy(0.1), seed);
            c.server.trace = true;
            let (o, cap) = get(c, &bytes);
            assert!(check(&o, &cap, &bytes, "in-flight watch"));
            let mut acked = 0u64;
            let mut highest = 0u64;
            for (_, side, e) in &o.events {
                if *side != "server" {
                    continue;
                }
                match e {
                    Event::Acked { seq, .. } => acked = acked.max(*seq),
                    Event::Sent { kind, seq, .. }
                    | Event::Resent { kind, seq, .. }
                    | Event::Repaired { kind, seq, .. }
                        if *kind != Kind::Accept =>
                    {
                        highest = highest.max(*seq);
                        assert!(
                            *seq <= acked + window as u64,
                            "window {window}, seed {seed}: #{seq} sent with only #{acked} acknowledged"
                        );
                    }
                    _ => {}
                }
            }
            assert!(highest > 300, "the trace saw the whole stream ({highest})");
        }
    }
}

/// The Sorcerer's Apprentice rule with windows: every ACK is delivered twice, and
/// nothing is ever resent (a duplicate acknowledgement says nothing new).
#[test]
fn duplicate_acks_never_cause_a_resend_at_any_window() {
    let blocks = 200;
    let bytes = data(blocks * 512, 9);
    for &window in &WINDOWS {
        let mut c = cfg(
            512,
            window,
            LinkConfig {
                to_server: Impairments {
                    duplicate: 1.0,
                    delay: Duration::from_micros(50),
                    ..Impairments::none()
                },
                to_client: Impairments {
                    delay: Duration::from_micros(50),
                    ..Impairments::none()
                },
            },
            3,
        );
        c.server.trace = true;
        let (o, cap) = get(c, &bytes);
        assert!(check(&o, &cap, &bytes, "duplicated acks"));
        assert_eq!(o.server_stats.resent, 0, "window {window}");
        // ACCEPT + the blocks + DONE, each exactly once.
        assert_eq!(o.server_stats.sent, blocks as u64 + 2, "window {window}");
        assert!(
            o.server_stats.stale > 0,
            "window {window}: {:?}",
            o.server_stats
        );
    }
}

/// Selective repair: on a link that loses one DATA in five (only the first copy of
/// each), what arrived is never resent: each lost block is resent, the others not.
#[test]
fn what_arrived_is_not_resent() {
    let blocks = 400u64;
    let bytes = data(blocks as usize * 512, 12);
    for window in [16u16, 64] {
        let mut seen = std::collections::HashSet::new();
        let mut lost = 0u64;
        let mut drop_every_fifth_first_copy = |w: Way, b: &mut Vec<u8>| {
            if w == Way::ServerToClient
                && let Ok(Datagram {
                    seq,
                    message: Message::Data(_),
                    ..
                }) = Datagram::parse(b)
                && seen.insert(seq)
                && seq % 5 == 0
            {
                lost += 1;
                return false;
            }
            true
        };
        let (o, cap) = get_scripted(
            cfg(512, window, LinkConfig::default(), 1),
            &bytes,
            &mut drop_every_fifth_first_copy,
        );
        assert!(check(&o, &cap, &bytes, "every fifth lost"));
        assert_eq!(lost, blocks / 5);
        // A block resent that had arrived would show as a duplicate at the client.
        assert_eq!(
            o.client_stats.duplicates, 0,
            "window {window}: {:?}",
            o.client_stats
        );
        assert_eq!(o.server_stats.resent, lost, "window {window}");
    }
}

/// A congested link (a rate limit with a short queue that drops what does not fit):
/// the window backs off and grows back, so a window of 64 neither collapses (it
/// finishes, at a good fraction of the rate) nor keeps flooding the queue.
#[test]
fn a_window_backs_off_on_a_congested_link_and_still_finishes() {
    let bytes = data(2 << 20, 13);
    let rate = |bits_per_s: u64| Impairments {
        delay: Duration::from_micros(500),
        rate: Some(Rate {
            bits_per_sec: bits_per_s,
            queue: 16,
        }),
        ..Impairments::none()
    };
    let link = LinkConfig {
        to_client: rate(100_000_000),
        to_server: rate(100_000_000),
    };
    let (o, cap) = get(cfg(1408, 64, link, 2), &bytes);
    assert!(check(&o, &cap, &bytes, "congested"), "{:?}", o.client);
    let dropped = o.to_client.dropped;
    let sent = o.server_stats.sent;
    // 2 MiB at 100 Mbit/s is 0.17 s; allow for the round trips and the losses.
    let secs = o.completed.expect("completed").as_secs_f64();
    assert!(secs < 0.35, "took {secs} s");
    // It backed off: far fewer drops than a fixed window of 64 against a queue of 16
    // would cause (about one in every few datagrams).
    println!("congested: {secs} s, {dropped} of {sent} dropped");
    assert!(dropped * 10 < sent, "{dropped} of {sent} dropped");
}

/// A client that never heard of windows (asks for 1) is served exactly as before by a
/// server that grants up to 64: PROTOCOL.md §9's worked example, datagram for datagram.
#[test]
fn a_window_one_client_gets_stop_and_wait_from_a_windowed_server() {
    let bytes = data(2500, 4);
    let mut c = cfg(
        1024,
        1,
        LinkConfig::symmetric(Impairments {
            delay: Duration::from_micros(100),
            ..Impairments::none()
        }),
        1,
    );
    c.server.window = 64;
    c.client.trace = true;
    c.server.trace = true;
    let mut first = true;
    let (o, cap) = get_scripted(c, &bytes, &mut |w, b| {
        let drop = w == Way::ServerToClient
            && first
            && matches!(Datagram::parse(b), Ok(d) if d.seq == 2 && matches!(d.message, Message::Data(_)));
        if drop {
            first = false;
        }
        !drop
    });
    assert!(check(&o, &cap, &bytes, "worked example"));
    let spec =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/PROTOCOL.md")).unwrap();
    let start = spec
        .find("<!-- worked-example:start -->\n```\n")
        .expect("start marker")
        + 34;
    let end = spec
        .find("```\n<!-- worked-example:end -->")
        .expect("end marker");
    let documented: Vec<&str> = spec[start..end].lines().collect();
    assert_eq!(documented, o.trace);
}

/// A client asking for 64 from a server that grants at most 4: the stream runs with 4
/// (the server never grants more than it allows, nor the client takes more).
#[test]
fn the_server_caps_the_window() {
    let bytes = data(100 * 512, 15);
    let mut c = cfg(512, 64, LinkConfig::default(), 1);
    c.server.window = 4;
    c.server.trace = true;
    let (o, cap) = get(c, &bytes);
    assert!(check(&o, &cap, &bytes, "capped"));
    let mut acked = 0;
    for (_, side, e) in &o.events {
        match e {
            Event::Acked { seq, .. } if *side == "server" => acked = *seq,
            Event::Sent {
                kind: Kind::Data,
                seq,
                ..
            } if *side == "server" => {
                assert!(*seq <= acked + 4, "#{seq} with #{acked} acknowledged")
            }
            _ => {}
        }
    }
}
