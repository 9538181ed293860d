//! The real `udpftd` and `udpft` binaries with a send window (PROTOCOL.md §4.5): over
//! loopback, through the lossy relay, and against a server that grants no window.

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use udpft::link::{Impairments, LinkConfig};
use udpft::net::relay::{Relay, RelayConfig};

mod common;
use common::{Server, UDPFT, content};

fn udpft(cwd: &Path, args: &[&str]) -> Output {
    Command::new(UDPFT)
        .current_dir(cwd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("udpft runs")
}

#[track_caller]
fn assert_ok(o: &Output) {
    assert!(
        o.status.success(),
        "expected success, got {:?}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
}

/// get and put at --window 16: byte-exact, and the server granted 16 (its log says so).
#[test]
fn window_16_over_loopback() {
    let root = tempfile::tempdir().unwrap();
    let cli = tempfile::tempdir().unwrap();
    let data = content(3_000_000, 21);
    fs::write(root.path().join("big"), &data).unwrap();
    fs::write(cli.path().join("up"), &data).unwrap();
    let srv = Server::start(root.path(), &["--verbose"]);
    let s = srv.addr.as_str();
    assert_ok(&udpft(
        cli.path(),
        &["--window", "16", "get", s, "big", "got"],
    ));
    assert_eq!(fs::read(cli.path().join("got")).unwrap(), data);
    assert_ok(&udpft(cli.path(), &["--window", "16", "put", s, "up"]));
    assert_eq!(fs::read(root.path().join("up")).unwrap(), data);
    common::wait_for("both sessions logged", || {
        srv.log().matches("window 16").count() >= 2
    });
}

/// --window 16 through the lossy relay (10% loss each way, duplication, reordering,
/// corruption): every byte arrives.
#[test]
fn window_16_through_a_lossy_link() {
    let root = tempfile::tempdir().unwrap();
    let cli = tempfile::tempdir().unwrap();
    let data = content(1_000_000, 22);
    fs::write(root.path().join("f"), &data).unwrap();
    fs::write(cli.path().join("u"), &data).unwrap();
    let srv = Server::start(root.path(), &[]);
    let link = LinkConfig::symmetric(Impairments {
        drop: 0.1,
        duplicate: 0.03,
        reorder: 0.03,
        corrupt: 0.03,
        delay: Duration::from_micros(100),
        jitter: Duration::from_micros(100),
        reorder_by: Duration::from_millis(1),
        ..Impairments::none()
    });
    let cfg = RelayConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        srv.addr.parse().unwrap(),
        link,
        5,
    );
    let relay = Relay::bind(cfg).unwrap().spawn().unwrap();
    let via = relay.local_addr().to_string();
    assert_ok(&udpft(
        cli.path(),
        &["--window", "16", "get", &via, "f", "g"],
    ));
    assert_eq!(fs::read(cli.path().join("g")).unwrap(), data);
    assert_ok(&udpft(cli.path(), &["--window", "16", "put", &via, "u"]));
    assert_eq!(fs::read(root.path().join("u")).unwrap(), data);
}

/// A server started with --max-window 1 (as one that predates windows behaves) serves
/// a client asking for 16 with stop-and-wait.
#[test]
fn a_server_granting_no_window_still_serves() {
    let root = tempfile::tempdir().unwrap();
    let cli = tempfile::tempdir().unwrap();
    let data = content(200_000, 23);
    fs::write(root.path().join("f"), &data).unwrap();
    let srv = Server::start(root.path(), &["--max-window", "1", "--verbose"]);
    assert_ok(&udpft(
        cli.path(),
        &["--window", "16", "get", &srv.addr, "f"],
    ));
    assert_eq!(fs::read(cli.path().join("f")).unwrap(), data);
    common::wait_for("the session logged", || srv.log().contains("window 1\n"));
}
