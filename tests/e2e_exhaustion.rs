//! Admission under the exhaustion patterns of issue 9, end to end on the real `udpftd`
//! (with a small session cap, so that a few attackers could fill it): a legitimate
//! client's list and get keep succeeding.
//!
//! Attackers use many loopback source addresses (127.0.0.2, 127.0.0.3, ...: all of
//! 127/8 is local on Linux), as spoofed sources would look to the server.

use std::fs;
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use udpft::wire::{Datagram, Message, Op};

mod common;
use common::{Server, UDPFT, content, request_bytes};

fn udpft(cwd: &Path, args: &[&str]) -> Output {
    Command::new(UDPFT)
        .current_dir(cwd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("udpft runs")
}

fn emit(d: Datagram) -> Vec<u8> {
    let mut b = vec![0u8; d.wire_len()];
    let n = d.emit(&mut b).unwrap();
    b.truncate(n);
    b
}

/// The legitimate client: a list and a get, each must succeed, `rounds` times.
fn legitimate_client_is_served(cli: &Path, addr: &str, want: &[u8], rounds: usize) {
    for i in 0..rounds {
        let o = udpft(cli, &["list", addr]);
        assert!(
            o.status.success(),
            "list {i}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(String::from_utf8_lossy(&o.stdout).contains("\tf.bin"));
        let o = udpft(cli, &["get", addr, "f.bin", "copy.bin"]);
        assert!(
            o.status.success(),
            "get {i}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(fs::read(cli.join("copy.bin")).unwrap() == want);
    }
}

/// 64 sources keep re-sending the same put REQUEST (the same nonce, no token), as the
/// attack of the issue did to hold all 64 slots: none holds a slot, so with a cap of 8
/// sessions a legitimate client is served every time.
#[test]
fn resent_requests_from_many_sources_hold_no_slot() {
    let root = tempfile::tempdir().unwrap();
    let cli = tempfile::tempdir().unwrap();
    let data = content(300_000, 3);
    fs::write(root.path().join("f.bin"), &data).unwrap();
    let srv = Server::start(root.path(), &["--max-sessions", "8"]);
    let to = srv.addr.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let attacker = thread::spawn(move || {
        let socks: Vec<UdpSocket> = (2..66)
            .map(|i| UdpSocket::bind(format!("127.0.0.{i}:0")).unwrap())
            .collect();
        let start = Instant::now();
        let mut rounds = 0;
        // Bounded: at most 60 s, stopped as soon as the client is done.
        while !flag.load(std::sync::atomic::Ordering::Acquire)
            && start.elapsed() < Duration::from_secs(60)
        {
            for (i, s) in socks.iter().enumerate() {
                let r = request_bytes(Op::Put, &format!("x{i}"), 0xbad0 + i as u64, 1408, None);
                let _ = s.send_to(&r, &to);
            }
            rounds += 1;
            thread::sleep(Duration::from_millis(50));
        }
        rounds
    });
    legitimate_client_is_served(cli.path(), &srv.addr, &data, 10);
    stop.store(true, std::sync::atomic::Ordering::Release);
    let rounds = attacker.join().unwrap();
    assert!(rounds >= 2, "the attack ran alongside ({rounds} rounds)");
    // Nothing was created for the attackers.
    let names: Vec<_> = fs::read_dir(root.path()).unwrap().collect();
    assert_eq!(names.len(), 1);
}

/// Slow clients prove their address, open a get each (filling all 8 slots), take the
/// first block and then go quiet, as the "ack a block every 8 s" clients do:
/// a stalled transfer gives way to a new client, so the legitimate one is served
/// (within a bounded number of tries while the slots are still fresh).
#[test]
fn stalled_transfers_give_way_to_a_legitimate_client() {
    let root = tempfile::tempdir().unwrap();
    let cli = tempfile::tempdir().unwrap();
    let data = content(300_000, 4);
    fs::write(root.path().join("f.bin"), &data).unwrap();
    fs::write(root.path().join("big.bin"), content(4 << 20, 5)).unwrap();
    // --idle far beyond the test's deadline: the slots must come free because the
    // transfers stalled, not because they timed out.
    let srv = Server::start(root.path(), &["--max-sessions", "8", "--idle", "300s"]);
    let mut held = Vec::new();
    for i in 0..8u64 {
        let s = UdpSocket::bind(format!("127.0.0.{}:0", 2 + i)).unwrap();
        s.connect(&srv.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let nonce = 0x51_0000 + i;
        let mut buf = [0u8; 70_000];
        s.send(&request_bytes(Op::Get, "big.bin", nonce, 1408, None))
            .unwrap();
        let n = s.recv(&mut buf).unwrap();
        let Message::Retry(token) = Datagram::parse(&buf[..n]).unwrap().message else {
            panic!("expected a RETRY");
        };
        s.send(&request_bytes(Op::Get, "big.bin", nonce, 1408, Some(token)))
            .unwrap();
        let n = s.recv(&mut buf).unwrap();
        let d = Datagram::parse(&buf[..n]).unwrap();
        assert!(matches!(d.message, Message::Accept(_)), "{d:?}");
        let session = d.session;
        s.send(&emit(Datagram {
            session,
            seq: 0,
            message: Message::Ack,
        }))
        .unwrap();
        let n = s.recv(&mut buf).unwrap();
        let d = Datagram::parse(&buf[..n]).unwrap();
        assert!(matches!(d.message, Message::Data(_)) && d.seq == 1, "{d:?}");
        held.push(s); // and never ack again
    }
    // Every slot is taken by a transfer that has stopped making progress. A client
    // that comes within the first 2 s may be told "busy"; it is served once they
    // count as stalled.
    let t = Instant::now();
    let mut tries = 0;
    let served = loop {
        tries += 1;
        let o = udpft(cli.path(), &["get", &srv.addr, "f.bin", "copy.bin"]);
        if o.status.success() {
            break true;
        }
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("busy"), "only 'busy' may refuse it: {err}");
        if t.elapsed() > Duration::from_secs(60) {
            break false;
        }
        thread::sleep(Duration::from_millis(250));
    };
    assert!(served, "never served in {tries} tries");
    assert!(fs::read(cli.path().join("copy.bin")).unwrap() == data);
    // From now on, it is served at once every time.
    legitimate_client_is_served(cli.path(), &srv.addr, &data, 5);
    drop(held);
}
