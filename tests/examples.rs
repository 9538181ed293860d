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
    has(&out, "towards the server: ");
    has(&out, "What the protocol did about it");
    has(&out, "resends after a timeout");
    has(&out, "identical to the 20000 sent: true");
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
