//! What the endpoints show of a transfer: `udpft --diagram` (terminal and Mermaid)
//! drawn from the client's own trace, through the real relay with a scripted loss,
//! and `udpftd --trace` lines timed from the session's start.

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use common::{Server, UDPFT, content};

const LOSSY: &str = env!("CARGO_BIN_EXE_udpft-lossy");

/// A relay to `server` with `faults`; killed on drop.
struct Relay(Child, String);

impl Relay {
    fn start(server: &str, faults: &[&str]) -> Relay {
        let mut c = Command::new(LOSSY);
        c.args(["--listen", "127.0.0.1:0", "--server", server, "--seed", "1"]);
        for f in faults {
            c.args(["--fault", f]);
        }
        let mut child = c
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let addr = first.split_whitespace().nth(2).unwrap().to_string();
        Relay(child, addr)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs udpft in `dir`; returns (stdout, stderr), asserting success.
fn udpft(dir: &std::path::Path, args: &[&str]) -> (String, String) {
    let o = Command::new(UDPFT)
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{args:?}\n{out}\n{err}");
    (out, err)
}

#[test]
fn the_diagram_shows_the_lost_data_and_the_timeout() {
    let root = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    fs::write(work.path().join("up.bin"), content(2000, 5)).unwrap();
    let server = Server::start(root.path(), &["--overwrite"]);

    // Terminal: the first DATA #1 ends in a cross, the client's timer fires with its
    // arithmetic, DATA #1 goes again and is acknowledged; every arrow in its column.
    let relay = Relay::start(&server.addr, &["to-server:data:1:drop"]);
    let (out, err) = udpft(
        work.path(),
        &[
            "--diagram",
            "--block-size",
            "1024",
            "put",
            &relay.1,
            "up.bin",
        ],
    );
    // A loaded machine may time out more than once: one cross and one timeout per
    // resend the summary counts, at least the one the relay forced.
    let resends: usize = err
        .split(" resends")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{err}"));
    assert!(resends >= 1, "{err}");
    assert!(
        !err.contains(" ms  client: "),
        "no trace without --trace: {err}"
    );
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].contains("client") && lines[0].contains("server"),
        "{out}"
    );
    let find = |pred: &dyn Fn(&str) -> bool| {
        lines
            .iter()
            .position(|l| pred(l))
            .unwrap_or_else(|| panic!("not found in:\n{out}"))
    };
    let lost = find(&|l| l.contains("── DATA #1 ─") && l.contains("✕"));
    assert!(
        lines[lost].ends_with("no answer before the timeout"),
        "{out}"
    );
    // A loaded machine may also time out on the REQUEST: the DATA's timeout is the one.
    let timeout = find(&|l| l.contains("⏱") && l.contains("DATA #1 resent"));
    assert!(
        lines[timeout].contains("client: timeout: RTO ")
            && lines[timeout].contains("DATA #1 resent, next RTO"),
        "{out}"
    );
    let resent = find(&|l| l.contains("── DATA #1 ─") && l.contains("►│"));
    let acked = find(&|l| l.contains(" ACK #1 ──│"));
    let done = find(&|l| l.contains("── DONE #3 ─") && l.contains("►│"));
    assert!(
        lost < timeout && timeout < resent && resent < acked && acked < done,
        "{out}"
    );
    assert_eq!(out.matches('✕').count(), resends, "{out}");
    assert_eq!(out.matches('⏱').count(), resends, "{out}");
    drop(relay);

    // Mermaid, for documents: the same story in sequenceDiagram syntax.
    let relay = Relay::start(&server.addr, &["to-server:data:1:drop"]);
    let (out, _) = udpft(
        work.path(),
        &[
            "--diagram=mermaid",
            "--block-size",
            "1024",
            "put",
            &relay.1,
            "up.bin",
        ],
    );
    assert!(out.starts_with("sequenceDiagram\n"), "{out}");
    let lost = out.find("    C-xS: DATA 1 sent at ").expect(&out);
    let timeout = out
        .lines()
        .position(|l| l.starts_with("    Note over C: ") && l.contains("DATA 1 resent"))
        .expect(&out);
    let lines: Vec<&str> = out.lines().collect();
    // The timeout is followed by the resend (itself crossed if a loaded machine timed
    // out again before the answer came), and a resent copy got through.
    assert!(
        lines[timeout + 1].starts_with("    C->>S: DATA 1 sent at ")
            || lines[timeout + 1].starts_with("    C-xS: DATA 1 sent at "),
        "{out}"
    );
    assert!(lines[timeout + 1].contains(" ms (resent"), "{out}");
    assert!(
        lines[timeout..]
            .iter()
            .any(|l| l.starts_with("    C->>S: DATA 1 sent at ") && l.ends_with("(resent)")),
        "{out}"
    );
    assert!(
        out[..lost].contains("    S->>C: ACCEPT 0 received at "),
        "{out}"
    );
    assert!(out.contains("    S->>C: ACK 3 received at "), "{out}");
    assert!(!out.contains('#') && !out.contains(';'), "{out}");
}

#[test]
fn server_trace_lines_carry_the_time_since_the_session_started() {
    let root = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    fs::write(root.path().join("f.bin"), content(3000, 9)).unwrap();
    let server = Server::start(root.path(), &["--trace"]);
    udpft(
        work.path(),
        &["--block-size", "1024", "get", &server.addr, "f.bin"],
    );
    // The session's line comes after its last event: wait for it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut log = server.log();
    while !log.contains("get 'f.bin'") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
        log = server.log();
    }
    // "udpftd:     0.412 ms  127.0.0.1:40000 0123456789abcdef: data #1 sent (1024 B)"
    let traced: Vec<(f64, &str)> = log
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("udpftd: ")?;
            let (t, event) = rest.split_once(" ms  ")?;
            assert_eq!(t.len(), 9, "{l}");
            let (who, event) = event.split_once(": ")?;
            let (peer, id) = who.split_once(' ').unwrap();
            assert!(peer.starts_with("127.0.0.1:"), "{l}");
            assert_eq!(id.len(), 16, "{l}");
            Some((t.trim().parse().unwrap(), event))
        })
        .collect();
    let events: Vec<&str> = traced.iter().map(|t| t.1).collect();
    // The address check (a RETRY, which opens nothing), then the session.
    assert!(events[0].starts_with("retry sent"), "{log}");
    assert_eq!(events[1], "accept #0 sent", "{log}");
    assert_eq!(
        traced[1].0, 0.0,
        "the ACCEPT is the session's first event: {log}"
    );
    for seq in 1..=3 {
        assert!(
            events
                .iter()
                .any(|e| e.starts_with(&format!("data #{seq} sent"))),
            "{log}"
        );
    }
    assert!(
        events.last().unwrap().contains("transfer complete"),
        "{log}"
    );
    assert!(
        traced.windows(2).all(|w| w[0].0 <= w[1].0),
        "times never go back: {log}"
    );
    assert!(traced.last().unwrap().0 > 0.0, "{log}");
}
