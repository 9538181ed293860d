//! The real `udpftd` and `udpft` binaries through the `udpft-lossy` relay (run in this
//! process through its library API, so its counters can be read) at 10% and 30% loss,
//! with duplication, reordering and corruption on: every file arrives byte-exact, every
//! corrupted datagram is detected and counted, resends are reported in the summaries.

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use udpft::link::{Impairments, LinkConfig};
use udpft::net::relay::{Relay, RelayConfig, RelayHandle};

mod common;
use common::{Server, UDPFT, content};

const SIZES: [usize; 4] = [0, 1, 5000, 300_000];

fn udpft(cwd: &Path, args: &[&str]) -> Output {
    Command::new(UDPFT)
        .current_dir(cwd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("udpft runs")
}

fn count(text: &str, needle: &str) -> u64 {
    text.lines().filter(|l| l.contains(needle)).count() as u64
}

/// The number before " resends" in a summary line.
fn resends(line: &str) -> u64 {
    let (before, _) = line
        .split_once(" resends")
        .unwrap_or_else(|| panic!("no resend count in {line:?}"));
    before
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no resend count in {line:?}"))
}

/// Polls `f` until it holds or `limit` passes; returns whether it held.
fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if f() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    f()
}

fn relay(server: SocketAddr, loss: f64, others: f64, seed: u64) -> RelayHandle {
    let link = LinkConfig::symmetric(Impairments {
        drop: loss,
        duplicate: others,
        reorder: others,
        corrupt: others,
        delay: Duration::from_micros(100),
        jitter: Duration::from_micros(100),
        reorder_by: Duration::from_millis(1),
        ..Impairments::none()
    });
    let cfg = RelayConfig::new("127.0.0.1:0".parse().unwrap(), server, link, seed);
    Relay::bind(cfg).unwrap().spawn().unwrap()
}

fn transfers_through(loss: f64, others: f64, seed: u64) {
    let root = tempfile::tempdir().unwrap();
    let cli = tempfile::tempdir().unwrap();
    // Default settings on both sides: giving up by silence, not by a count of tries,
    // lets every transfer through (PROTOCOL.md §5.3).
    let srv = Server::start(root.path(), &["--trace"]);
    let r = relay(srv.addr.parse().unwrap(), loss, others, seed);
    let via = r.local_addr().to_string();
    let mut client_detected = 0;
    let mut put_resends = 0;
    for (i, &size) in SIZES.iter().enumerate() {
        let data = content(size, i as u64 + 1);

        // put: the client sends, the server receives.
        let name = format!("put{size}.bin");
        fs::write(cli.path().join(&name), &data).unwrap();
        let o = udpft(cli.path(), &["--trace", "put", &via, &name]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            o.status.success(),
            "put {size} at {loss}: {:?}\n{err}",
            o.status
        );
        assert_eq!(
            fs::read(root.path().join(&name)).unwrap(),
            data,
            "put {size} at {loss}"
        );
        let summary = err.lines().last().unwrap_or_default();
        assert!(summary.starts_with("put "), "{summary}");
        put_resends += resends(summary);

        // get: the server sends, the client receives.
        let name = format!("get{size}.bin");
        fs::write(root.path().join(&name), &data).unwrap();
        let before = r.stats().to_client.corrupted;
        let o = udpft(cli.path(), &["--trace", "get", &via, &name, "copy.bin"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            o.status.success(),
            "get {size} at {loss}: {:?}\n{err}",
            o.status
        );
        assert_eq!(
            fs::read(cli.path().join("copy.bin")).unwrap(),
            data,
            "get {size} at {loss}"
        );
        let summary = err.lines().last().unwrap_or_default();
        assert!(summary.starts_with("get "), "{summary}");
        assert!(summary.contains(" resends"), "{summary}");
        // Every bad checksum the client reports is a datagram the relay corrupted
        // (some corrupted copies may arrive after the client has finished).
        let detected = count(&err, "datagram with a bad checksum dropped");
        let corrupted = r.stats().to_client.corrupted - before;
        // The summary reports the same count.
        let reported = summary
            .split_once(" dropped for a bad checksum")
            .map_or(0, |(head, _)| {
                head.rsplit(' ').next().unwrap().parse().unwrap()
            });
        assert!(
            reported <= detected && (detected == 0 || reported > 0),
            "summary says {reported}, trace says {detected}: {summary}"
        );
        assert!(
            detected <= corrupted,
            "get {size}: {detected} detected, {corrupted} corrupted"
        );
        client_detected += detected;
    }
    assert!(put_resends > 0, "the client resent nothing at {loss} loss");
    assert!(
        client_detected > 0,
        "no corrupted datagram reached a client: {:?}",
        r.stats()
    );

    // The server stays up, so each corrupted datagram towards it arrives there and is
    // dropped unread, with a trace line.
    let corrupted = r.stats().to_server.corrupted;
    assert!(corrupted > 0, "{:?}", r.stats());
    let ok = eventually(Duration::from_secs(30), || {
        count(&srv.log(), "dropped: bad checksum") == r.stats().to_server.corrupted
    });
    assert!(
        ok,
        "server detected {} bad checksums, relay corrupted {}",
        count(&srv.log(), "dropped: bad checksum"),
        r.stats().to_server.corrupted
    );
    // The server reports the resends of the gets it served in its per-session lines.
    // A get whose every ack of DONE was lost (the client has gone) is only logged when
    // the server gives up, after its default --idle of 30 s without an answer: wait
    // well past that.
    let ok = eventually(Duration::from_secs(90), || {
        let log = srv.log();
        let gets: Vec<&str> = log
            .lines()
            // "unconfirmed": every block acknowledged but not the final DONE; the
            // client has the file (it was checked above), only the server can't know.
            .filter(|l| {
                l.contains(" get 'get") && (l.ends_with(": ok") || l.contains(": unconfirmed:"))
            })
            .collect();
        gets.len() == SIZES.len() && gets.iter().map(|l| resends(l)).sum::<u64>() > 0
    });
    assert!(ok, "server log:\n{}", srv.log());
    let stats = r.stop();
    assert!(stats.to_server.dropped > 0 && stats.to_client.dropped > 0);
    assert!(stats.to_server.duplicated + stats.to_client.duplicated > 0);
    assert!(stats.to_server.reordered + stats.to_client.reordered > 0);
}

#[test]
fn ten_percent_loss() {
    transfers_through(0.10, 0.05, 10);
}

#[test]
fn thirty_percent_loss() {
    transfers_through(0.30, 0.10, 30);
}

/// 8 MiB each way through 30% loss in both directions, with every setting at its
/// default: with a give-up count of 13 tries, 3 of 4 such puts failed.
#[test]
fn eight_mib_through_thirty_percent_loss_with_defaults() {
    let root = tempfile::tempdir().unwrap();
    let cli = tempfile::tempdir().unwrap();
    let srv = Server::start(root.path(), &[]);
    let link = LinkConfig::symmetric(Impairments {
        drop: 0.3,
        ..Impairments::default()
    });
    let cfg = RelayConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        srv.addr.parse().unwrap(),
        link,
        8,
    );
    let r = Relay::bind(cfg).unwrap().spawn().unwrap();
    let via = r.local_addr().to_string();
    // The put and the get run at once (each takes tens of seconds at this loss).
    let data = content(8 << 20, 8);
    fs::write(cli.path().join("up.bin"), &data).unwrap();
    fs::write(root.path().join("down.bin"), &data).unwrap();
    let (c, v) = (cli.path().to_path_buf(), via.clone());
    let getter = thread::spawn(move || udpft(&c, &["get", &v, "down.bin", "got.bin"]));
    let o = udpft(cli.path(), &["put", &via, "up.bin"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        fs::read(root.path().join("up.bin")).unwrap() == data,
        "put differs"
    );
    let o = getter.join().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        fs::read(cli.path().join("got.bin")).unwrap() == data,
        "get differs"
    );
    let stats = r.stop();
    assert!(
        stats.to_server.dropped > 1000 && stats.to_client.dropped > 1000,
        "{stats:?}"
    );
}
