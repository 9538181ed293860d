//! Every teaching example runs to completion and says what it promises.
//!
//! `cargo test` builds the examples next to this test's binary:
//! `target/debug/deps/examples-xxxx` runs `target/debug/examples/NAME`.

use std::path::PathBuf;
use std::process::Command;

fn example(name: &str) -> String {
    let exe = std::env::current_exe().unwrap();
    let dir = exe
        .parent() // deps
        .and_then(|d| d.parent()) // debug (or release)
        .unwrap()
        .join("examples");
    let path: PathBuf = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} not built (run through `cargo test`)",
        path.display()
    );
    let out = Command::new(&path).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{name} failed: {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn has(out: &str, needle: &str) {
    assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
}

#[test]
fn packet_anatomy() {
    let out = example("packet_anatomy");
    for field in [
        "magic",
        "version",
        "type",
        "session id",
        "sequence number",
        "payload length",
        "payload",
        "CRC32",
    ] {
        has(&out, field);
    }
    has(&out, "3 = DATA");
    has(&out, "4 = ACK");
    has(&out, "1 = REQUEST");
    has(&out, "2 = ACCEPT");
    has(&out, "5 = DONE");
    has(&out, "6 = ERROR");
    has(&out, "7 = RETRY");
    has(&out, "8 = WAIT");
    has(&out, "  token ");
    for field in [
        "op",
        "flags",
        "block size",
        "name len",
        "padding",
        "nonce",
        "data",
        "stream length",
        "stream CRC32",
        "error code",
        "message",
    ] {
        has(&out, &format!("  {field} "));
    }
    has(&out, "parse(damaged DATA)      -> rejected: bad checksum");
}

#[test]
fn stop_and_wait() {
    let out = example("stop_and_wait");
    has(&out, "data #2 resent");
    has(&out, "duplicate data #3 acknowledged again");
    has(&out, "verified");
    has(&out, "2 of them resent after a timeout");
    has(&out, "received bytes == sent bytes: true");
}

#[test]
fn lossy_link() {
    let out = example("lossy_link");
    has(&out, "What the link did");
    // The link's decisions interleaved with the protocol's events.
    has(&out, "link:   to-client DATA #1: ");
    has(&out, "link:   to-server ACK #");
    has(&out, ": dropped\n");
    has(&out, "towards the server: ");
    has(&out, "What the protocol did about it");
    has(&out, "resends after a timeout");
    has(&out, "identical to the 20000 sent: true");
}

#[test]
fn sequence_diagrams() {
    let out = example("sequence_diagrams");
    has(&out, "== 1. The first DATA packet is lost");
    has(&out, "│── DATA #1 ────────✕");
    has(&out, "dropped (fault to-server:data:1:drop)");
    has(&out, "⏱");
    has(
        &out,
        "client: timeout: RTO 2.00 ms = SRTT 0.80 + 4 × RTTVAR 0.30; DATA #1 resent, next RTO 4.00 ms",
    );
    has(&out, "== 2. The first ACK is lost");
    has(&out, "✕───────── ACK #1 ──│");
    has(
        &out,
        "server: duplicate data #1 acknowledged again (not written twice)",
    );
    has(&out, "== 3. An ACK is delayed past the timeout");
    has(&out, "client: stale ack #1 ignored");
    has(
        &out,
        "stale acks ignored by the client: 1; file stored intact: true",
    );
    has(&out, "sequenceDiagram\n    participant C as client");
    has(&out, "    S->>C: ACK 1 at 2.000 ms (delayed 3.40 ms");
}

#[test]
fn demo() {
    let out = example("demo");
    has(&out, "server: listening on 127.0.0.1:");
    has(&out, "client: put ");
    has(&out, "client: get ");
    has(&out, "hello.bin");
    has(&out, "identical: yes");
}
