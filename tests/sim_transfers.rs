//! Whole transfers through the simulated lossy link, on a virtual clock.

use std::io::Cursor;
use std::time::Duration;

use udpft::engine::{Config, Job, Status, TransferError};
use udpft::link::Way;
use udpft::link::{Impairments, LinkConfig};
use udpft::sim::{self, Capture, Digest, Pattern, ServerPlan, SimConfig, SimOutcome};
use udpft::wire::ErrorCode;
use udpft::wire::{Datagram, Kind, Message};

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

fn cfg(block: u32, link: LinkConfig, seed: u64) -> SimConfig {
    let engine = Config {
        block_size: block,
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
    let cap = Capture::default();
    let out = sim::run(
        c,
        "f",
        Job::Get(Box::new(cap.clone())),
        ServerPlan::Serve(Box::new(Cursor::new(bytes.to_vec())), bytes.len() as u64),
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

#[test]
fn lossless_get_and_put_of_edge_sizes() {
    let block = 512;
    for len in [0, 1, block - 1, block, block + 1, 5 * block + 7] {
        let bytes = data(len, len as u64);
        let (o, cap) = get(cfg(block as u32, LinkConfig::default(), 1), &bytes);
        assert_eq!(o.client, Status::Closed, "get {len}: {o:?}");
        assert_eq!(o.server, Some(Status::Closed), "get {len}");
        assert_eq!(cap.contents(), bytes, "get {len}");
        assert!(cap.is_committed());
        assert_eq!(o.client_stats.resent + o.server_stats.resent, 0);
        let (o, cap) = put(cfg(block as u32, LinkConfig::default(), 1), &bytes);
        assert_eq!(o.client, Status::Closed, "put {len}: {o:?}");
        assert_eq!(cap.contents(), bytes, "put {len}");
    }
}

#[test]
fn trace_of_a_small_get() {
    let mut c = cfg(512, LinkConfig::default(), 1);
    c.client.trace = true;
    c.server.trace = true;
    let (o, _) = get(c, &data(1000, 3));
    for l in &o.trace {
        println!("{l}");
    }
    assert!(
        o.trace
            .iter()
            .any(|l| l.contains("done received, length 1000"))
    );
}

/// Checks the one thing every run must show: the bytes arrived exactly and were
/// committed, or the run failed with an error and nothing was committed. Never a hang.
fn check(o: &SimOutcome, cap: &Capture, bytes: &[u8], what: &str) -> bool {
    assert!(!o.hung, "{what}: hung: {o:?}");
    match &o.client {
        Status::Closed | Status::Complete => {
            let got = cap.contents();
            assert!(
                got == bytes,
                "{what}: silent corruption ({} vs {} bytes)",
                got.len(),
                bytes.len()
            );
            assert!(cap.is_committed(), "{what}: success without commit");
            true
        }
        Status::Failed(e) => {
            assert!(!cap.is_committed(), "{what}: failed ({e}) but committed");
            false
        }
        Status::Running => panic!("{what}: still running"),
    }
}

/// The sweep: every size × loss rate × seed, both directions. Returns (runs, successes).
fn sweep(sizes: &[usize], block: u32, losses: &[f64], seeds: std::ops::Range<u64>) -> (u32, u32) {
    let (mut runs, mut ok) = (0, 0);
    for &len in sizes {
        let bytes = data(len, len as u64 + 17);
        for &loss in losses {
            for seed in seeds.clone() {
                let c = cfg(block, lossy(loss), seed);
                let (o, cap) = get(c, &bytes);
                ok += check(
                    &o,
                    &cap,
                    &bytes,
                    &format!("get {len} B at {loss} loss, seed {seed}"),
                ) as u32;
                let (o, cap) = put(c, &bytes);
                ok += check(
                    &o,
                    &cap,
                    &bytes,
                    &format!("put {len} B at {loss} loss, seed {seed}"),
                ) as u32;
                // A put is only done when the server has stored it.
                if matches!(o.client, Status::Closed) {
                    assert!(cap.is_committed());
                }
                runs += 2;
            }
        }
    }
    (runs, ok)
}

const LOSSES: [f64; 6] = [0.0, 0.01, 0.05, 0.10, 0.20, 0.30];

#[test]
fn sweep_small_sizes_over_many_seeds() {
    let b = 512;
    let (runs, ok) = sweep(
        &[0, 1, b - 1, b, b + 1, 7 * b + 3],
        b as u32,
        &LOSSES,
        0..40,
    );
    println!("small sizes: {ok}/{runs} transfers succeeded");
    assert_eq!(runs, 6 * 6 * 40 * 2);
    // With 30 retries per packet a failure at <= 30% loss has probability ~1e-9: any
    // failure here is a bug, not bad luck.
    assert_eq!(ok, runs);
}

#[test]
fn sweep_one_mebibyte() {
    let (runs, ok) = sweep(&[1 << 20], udpft::wire::DEFAULT_BLOCK_SIZE, &LOSSES, 0..3);
    println!("1 MiB: {ok}/{runs} transfers succeeded");
    assert_eq!(ok, runs);
}

/// A link so bad the retry limit must run out: the result is an error naming the
/// silent peer, on both sides, and never a hang or a committed file.
#[test]
fn hopeless_link_fails_cleanly() {
    let bytes = data(50_000, 1);
    for seed in 0..20 {
        let mut c = cfg(512, lossy(0.9), seed);
        c.client.give_up = Duration::from_millis(500);
        c.server.give_up = Duration::from_millis(500);
        let (o, cap) = get(c, &bytes);
        assert!(!check(&o, &cap, &bytes, "hopeless get"));
        let (o, cap) = put(c, &bytes);
        assert!(!check(&o, &cap, &bytes, "hopeless put"));
        let Status::Failed(e) = &o.client else {
            unreachable!()
        };
        let msg = e.to_string();
        assert!(
            msg.contains("192.0.2.2:6969")
                && (msg.contains("no answer") || msg.contains("aborted")),
            "{msg}"
        );
    }
}

fn parse(bytes: &[u8]) -> Option<Datagram<'_>> {
    Datagram::parse(bytes).ok()
}

/// Drops the `nth` datagram (0-based) of `kind` with sequence number `seq` travelling `way`.
fn lose(way: Way, kind: Kind, seq: u64, nth: u32) -> impl FnMut(Way, &mut Vec<u8>) -> bool {
    let mut seen = 0;
    move |w, b| {
        if w == way && parse(b).is_some_and(|d| d.kind() == kind && d.seq == seq) {
            seen += 1;
            return seen != nth + 1;
        }
        true
    }
}

fn get_scripted(
    c: SimConfig,
    bytes: &[u8],
    f: &mut dyn FnMut(Way, &mut Vec<u8>) -> bool,
) -> (SimOutcome, Capture) {
    let cap = Capture::default();
    let o = sim::run_scripted(
        c,
        "f",
        Job::Get(Box::new(cap.clone())),
        ServerPlan::Serve(Box::new(Cursor::new(bytes.to_vec())), bytes.len() as u64),
        f,
    );
    (o, cap)
}

fn traced(block: u32) -> SimConfig {
    let mut c = cfg(
        block,
        LinkConfig::symmetric(Impairments {
            delay: Duration::from_micros(100),
            ..Impairments::none()
        }),
        1,
    );
    c.client.trace = true;
    c.server.trace = true;
    c
}

#[test]
fn lost_data_is_resent_after_a_timeout_and_written_once() {
    let bytes = data(2000, 4);
    let (o, cap) = get_scripted(
        traced(512),
        &bytes,
        &mut lose(Way::ServerToClient, Kind::Data, 2, 0),
    );
    assert!(check(&o, &cap, &bytes, "lost data"));
    assert_eq!(o.server_stats.resent, 1, "{:#?}", o.trace);
    assert_eq!(o.client_stats.duplicates, 0);
    assert!(
        o.trace
            .iter()
            .any(|l| l.contains("server: timeout after") && l.contains("data #2 resent"))
    );
}

#[test]
fn lost_ack_causes_one_resend_and_a_duplicate_acknowledged_again() {
    let bytes = data(2000, 5);
    let (o, cap) = get_scripted(
        traced(512),
        &bytes,
        &mut lose(Way::ClientToServer, Kind::Ack, 2, 0),
    );
    assert!(check(&o, &cap, &bytes, "lost ack"));
    assert_eq!(o.server_stats.resent, 1);
    assert_eq!(o.client_stats.duplicates, 1);
    assert!(
        o.trace
            .iter()
            .any(|l| l.contains("client: duplicate data #2 acknowledged again"))
    );
    // Written once: the content check above would fail on a second write of block 2.
}

#[test]
fn lost_done_is_resent() {
    let bytes = data(1000, 6); // blocks 1, 2; DONE is #3
    let (o, cap) = get_scripted(
        traced(512),
        &bytes,
        &mut lose(Way::ServerToClient, Kind::Done, 3, 0),
    );
    assert!(check(&o, &cap, &bytes, "lost done"));
    assert_eq!(o.server_stats.resent, 1);
    assert_eq!(o.server, Some(Status::Closed));
}

#[test]
fn lost_ack_of_done_is_answered_by_the_lingering_receiver() {
    let bytes = data(1000, 7);
    let (o, cap) = get_scripted(
        traced(512),
        &bytes,
        &mut lose(Way::ClientToServer, Kind::Ack, 3, 0),
    );
    assert!(check(&o, &cap, &bytes, "lost ack of done"));
    assert_eq!(
        o.client_stats.duplicates, 1,
        "the resent DONE was acknowledged again"
    );
    assert_eq!(
        o.server,
        Some(Status::Closed),
        "the sender got its ack: {:#?}",
        o.trace
    );
    assert_eq!(o.client, Status::Closed);
}

#[test]
fn lost_accept_and_lost_ack_zero_are_recovered() {
    let bytes = data(3000, 8);
    let (o, cap) = get_scripted(
        traced(512),
        &bytes,
        &mut lose(Way::ServerToClient, Kind::Accept, 0, 0),
    );
    assert!(check(&o, &cap, &bytes, "lost accept"));
    let (o, cap) = get_scripted(
        traced(512),
        &bytes,
        &mut lose(Way::ClientToServer, Kind::Ack, 0, 0),
    );
    assert!(check(&o, &cap, &bytes, "lost ack 0"));
    assert_eq!(
        o.client_stats.duplicates, 1,
        "the resent ACCEPT was acknowledged again"
    );
    // A put whose ACCEPT is lost: the client resends the REQUEST, the server resends ACCEPT.
    let sink = Capture::default();
    let o = sim::run_scripted(
        traced(512),
        "f",
        Job::Put(Box::new(Cursor::new(bytes.clone())), bytes.len() as u64),
        ServerPlan::Store(Box::new(sink.clone())),
        &mut lose(Way::ServerToClient, Kind::Accept, 0, 0),
    );
    assert!(check(&o, &sink, &bytes, "put with lost accept"));
    assert_eq!(o.client_stats.resent, 1);
}

/// RFC 1123 §4.2.3.1: if duplicate acks caused resends, every block would be sent
/// twice from the first duplicated ack on. Here every ack is delivered twice.
#[test]
fn duplicate_acks_never_cause_a_resend() {
    let bytes = data(20 * 512, 9);
    let mut c = cfg(
        512,
        LinkConfig {
            to_server: Impairments {
                duplicate: 1.0,
                ..Impairments::none()
            },
            to_client: Impairments::none(),
        },
        3,
    );
    c.server.trace = true;
    let (o, cap) = get(c, &bytes);
    assert!(check(&o, &cap, &bytes, "duplicated acks"));
    assert_eq!(o.server_stats.resent, 0);
    // ACCEPT + 20 DATA + DONE, each exactly once.
    assert_eq!(o.server_stats.sent, 22);
    assert!(o.server_stats.stale >= 20, "{:?}", o.server_stats);
}

/// At most one unacknowledged DATA in flight: data n+1 is never sent before ack n
/// has arrived at the sender. Watched on a lossy, reordering, duplicating link.
#[test]
fn stop_and_wait_never_has_two_blocks_outstanding() {
    let bytes = data(100 * 512, 10);
    for seed in 0..10 {
        let mut highest_ack_at_sender = 0u64;
        let mut watch = |w: Way, b: &mut Vec<u8>| {
            if let Some(d) = parse(b) {
                match (w, d.message) {
                    (Way::ClientToServer, Message::Ack) => {
                        highest_ack_at_sender = highest_ack_at_sender.max(d.seq)
                    }
                    (Way::ServerToClient, Message::Data(_)) => {
                        assert!(
                            d.seq <= highest_ack_at_sender + 1,
                            "data #{} before ack #{}",
                            d.seq,
                            d.seq - 1
                        )
                    }
                    _ => {}
                }
            }
            true
        };
        let (o, cap) = get_scripted(cfg(512, lossy(0.2), seed), &bytes, &mut watch);
        assert!(check(&o, &cap, &bytes, "stop-and-wait watch"));
    }
}

/// A change to DONE's (length, CRC32).
type DoneChange = fn(u64, u32) -> (u64, u32);

/// Rewrites every DONE from the server with `change(length, crc)`, as a valid datagram:
/// a buggy sender, or corruption that slipped past the datagram CRC.
fn tamper_done(change: DoneChange) -> impl FnMut(Way, &mut Vec<u8>) -> bool {
    move |w, b| {
        if w == Way::ServerToClient
            && let Some(Datagram {
                session,
                seq,
                message: Message::Done { length, crc },
            }) = parse(b)
        {
            let (length, crc) = change(length, crc);
            let d = Datagram {
                session,
                seq,
                message: Message::Done { length, crc },
            };
            let n = d.emit(b).unwrap();
            b.truncate(n);
        }
        true
    }
}

/// A DONE whose CRC32 or length disagrees with the stream: the receiver must fail,
/// tell the sender, and commit nothing.
#[test]
fn done_with_wrong_crc_or_length_is_an_error_not_a_success() {
    let changes: [DoneChange; 2] = [|l, c| (l, c ^ 1), |l, c| (l + 1, c)];
    for change in changes {
        let bytes = data(3000, 11);
        let (o, cap) = get_scripted(
            cfg(512, LinkConfig::default(), 1),
            &bytes,
            &mut tamper_done(change),
        );
        assert!(!check(&o, &cap, &bytes, "tampered done"));
        assert!(
            // A changed length disagrees with the ACCEPT's announced size first.
            matches!(
                o.client,
                Status::Failed(TransferError::Integrity { .. } | TransferError::Announced { .. })
            ),
            "{:?}",
            o.client
        );
        assert!(
            matches!(
                &o.server,
                Some(Status::Failed(TransferError::Remote {
                    code: ErrorCode::Integrity,
                    ..
                }))
            ),
            "{:?}",
            o.server
        );
    }
}

/// Corrupted datagrams are caught by the CRC32, counted, and the transfer still succeeds.
#[test]
fn corrupted_datagrams_are_counted_and_survived() {
    let bytes = data(200 * 512, 13);
    let c = cfg(
        512,
        LinkConfig::symmetric(Impairments {
            corrupt: 0.3,
            ..Impairments::none()
        }),
        4,
    );
    let (o, cap) = get(c, &bytes);
    assert!(check(&o, &cap, &bytes, "corruption"));
    let caught = o.client_stats.bad_checksum + o.server_stats.bad_checksum;
    assert!(
        caught > 50,
        "{caught} caught; link corrupted {} + {}",
        o.to_client.corrupted,
        o.to_server.corrupted
    );
    assert!(o.client_stats.bad_checksum <= o.to_client.corrupted);
}

/// Until the client proves it receives at its address (it echoes a RETRY's token),
/// the server opens nothing and sends no more bytes than it received. Here every
/// REQUEST that carries a token is lost, as for a blind attacker with a spoofed source
/// address who never sees the RETRY.
#[test]
fn nothing_is_opened_or_amplified_before_the_address_check() {
    let bytes = data(100_000, 14);
    let (mut from_client, mut from_server, mut retries) = (0usize, 0usize, 0usize);
    let mut meter = |w: Way, b: &mut Vec<u8>| match w {
        Way::ClientToServer => {
            let keep = matches!(
                parse(b),
                Some(Datagram { message: Message::Request(r), .. }) if r.token.is_none()
            );
            if keep {
                from_client += b.len();
            }
            keep
        }
        Way::ServerToClient => {
            from_server += b.len();
            retries += usize::from(parse(b).is_some_and(|d| d.kind() == Kind::Retry));
            true
        }
    };
    let mut c = cfg(512, LinkConfig::default(), 1);
    c.client.give_up = Duration::from_secs(2);
    let (o, cap) = get_scripted(c, &bytes, &mut meter);
    assert!(!check(&o, &cap, &bytes, "unvalidated"));
    assert!(o.server.is_none(), "a session was opened: {:?}", o.server);
    assert!(retries > 0, "no address check was asked for");
    assert!(
        from_server <= from_client / 4,
        "server sent {from_server} B for {from_client} B received"
    );
}

/// A refused request reaches the client as its error (after the address check, so
/// the whole message, up to the protocol's limit, may go).
#[test]
fn refusal_reaches_the_client() {
    let cap = Capture::default();
    let long = "x".repeat(2000);
    let o = sim::run(
        cfg(512, LinkConfig::default(), 1),
        "nope",
        Job::Get(Box::new(cap.clone())),
        ServerPlan::Refuse(
            ErrorCode::NotFound,
            format!("server has no file 'nope' {long}"),
        ),
    );
    let Status::Failed(TransferError::Remote { code, message }) = &o.client else {
        panic!("{:?}", o.client)
    };
    assert_eq!(*code, ErrorCode::NotFound);
    assert!(message.starts_with("server has no file 'nope'"));
    assert!(message.len() <= udpft::wire::MAX_MESSAGE_LEN);
    assert!(!cap.is_committed());
}

#[test]
fn delete_and_exit_are_answered_once_even_if_the_answer_is_lost() {
    for job in [Job::Delete, Job::Exit] {
        let o = sim::run_scripted(
            traced(512),
            "f",
            job,
            ServerPlan::Answer,
            &mut lose(Way::ServerToClient, Kind::Accept, 0, 0),
        );
        assert_eq!(o.client, Status::Closed, "{:#?}", o.trace);
        assert_eq!(o.client_stats.resent, 1);
    }
}

/// Crosses the sequence numbers where a 16-bit protocol wraps (65 536 blocks), with
/// the data streamed from a generator into a digest: nothing held in memory.
#[test]
fn sequence_numbers_cross_the_16_bit_range() {
    let blocks: u64 = 70_000;
    let block = 8u64;
    let len = blocks * block + 3;
    let sink = Digest::default();
    let c = cfg(block as u32, lossy(0.01), 21);
    let o = sim::run(
        c,
        "big",
        Job::Get(Box::new(sink.clone())),
        ServerPlan::Serve(Box::new(Pattern::new(len, 99)), len),
    );
    assert_eq!(o.client, Status::Closed, "{:?}", o.client);
    let (got_len, got_crc, committed) = sink.result();
    assert!(committed);
    assert_eq!(got_len, len);
    assert_eq!(got_crc, Pattern::crc(len, 99));
    assert!(o.client_stats.received > 65_536);
}

/// PROTOCOL.md §9 shows this run's trace; the spec and the code must agree on it.
#[test]
fn worked_example_matches_protocol_md() {
    let bytes = data(2500, 4);
    let (o, cap) = get_scripted(
        traced(1024),
        &bytes,
        &mut lose(Way::ServerToClient, Kind::Data, 2, 0),
    );
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
    assert_eq!(documented, o.trace, "PROTOCOL.md §9 is out of date");
}

/// Lengths and sequence numbers beyond 32 bits: a 5 GiB stream, streamed from a
/// generator into a digest through the simulated link (no wall time spent waiting).
#[test]
fn streams_beyond_4_gib() {
    let len: u64 = (5 << 30) + 12_345;
    let sink = Digest::default();
    let c = cfg(udpft::wire::MAX_BLOCK_SIZE, LinkConfig::default(), 1);
    let o = sim::run(
        c,
        "huge",
        Job::Put(
            Box::new(std::io::Read::take(std::io::repeat(0xA5), len)),
            len,
        ),
        ServerPlan::Store(Box::new(sink.clone())),
    );
    assert_eq!(o.client, Status::Closed, "{:?}", o.client);
    let (got_len, got_crc, committed) = sink.result();
    assert!(committed);
    assert_eq!(got_len, len);
    let mut h = crc32fast::Hasher::new();
    let chunk = vec![0xA5u8; 1 << 20];
    for _ in 0..(len >> 20) {
        h.update(&chunk);
    }
    h.update(&chunk[..(len % (1 << 20)) as usize]);
    assert_eq!(got_crc, h.finalize());
}
