//! The Wireshark dissector (`contrib/wireshark/udpft.lua`) run by `tshark` over a
//! capture made through the real relay (`udpft-lossy --pcap`) while the real client
//! downloads from the real server, with scripted faults so that there is a drop, a
//! duplicate and a flipped bit. What tshark decodes is compared with what the relay
//! (its report and its per-packet comments) and both endpoints (their traces) say.
//!
//! tshark is required: without it this test fails with the command that installs it
//! (`.ci/run` installs it on CI).

mod common;

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};

use common::{Server, UDPFT, content, signal};

const LOSSY: &str = env!("CARGO_BIN_EXE_udpft-lossy");
const LUA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/wireshark/udpft.lua");

const INSTALL: &str = "echo 'wireshark-common wireshark-common/install-setuid boolean false' \
                       | debconf-set-selections; DEBIAN_FRONTEND=noninteractive apt-get install -y tshark";

/// Runs tshark with the dissector over `capture`. As root, some builds refuse to run
/// Lua scripts; then it runs as `nobody` (via setpriv) on a world-readable copy.
fn tshark(capture: &Path, fields: &[&str]) -> String {
    let args = |cap: &Path| {
        let mut a: Vec<String> = vec![
            "-X".into(),
            format!("lua_script:{LUA}"),
            "-o".into(),
            "udp.try_heuristic_first:TRUE".into(),
            "-r".into(),
            cap.display().to_string(),
            "-T".into(),
            "fields".into(),
            "-E".into(),
            "separator=|".into(),
        ];
        for f in fields {
            a.push("-e".into());
            a.push(f.to_string());
        }
        a
    };
    let out = match Command::new("tshark").args(args(capture)).output() {
        Ok(o) => o,
        Err(e) => {
            panic!("tshark cannot be run ({e}); this test needs it. Install it with:\n  {INSTALL}")
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let decoded = stdout.lines().any(|l| l.split('|').nth(1) != Some(""));
    if out.status.success() && decoded {
        return stdout;
    }
    // Lua refused as root? Try as nobody.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("capture.pcapng");
    fs::copy(capture, &copy).unwrap();
    let world = |p: &Path, mode| {
        Command::new("chmod")
            .arg(mode)
            .arg(p)
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    let shared = world(dir.path(), "755") && world(&copy, "644");
    let again = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "tshark"])
        .args(args(&copy))
        .output();
    match again {
        Ok(o) if shared && o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        _ => panic!(
            "tshark did not decode the capture with the dissector (as root: {:?})\n{stderr}\n{stdout}",
            out.status
        ),
    }
}

/// One decoded frame.
#[derive(Debug)]
struct Frame {
    kind: u8,
    session: String,
    seq: u64,
    crc_ok: bool,
    comment: String,
}

/// The value of `"key": N` in the relay's JSON report, within the object after `within`.
fn json_count(json: &str, within: &str, key: &str) -> u64 {
    let part = &json[json.find(&format!("\"{within}\"")).expect(within)..];
    let counts = &part[part.find("\"counts\"").unwrap()..];
    let at = counts.find(&format!("\"{key}\": ")).expect(key) + key.len() + 4;
    counts[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn tshark_decodes_a_relay_capture_as_the_relay_and_the_endpoints_report() {
    let root = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let file = content(5000, 13);
    fs::write(root.path().join("f.bin"), &file).unwrap();
    let server = Server::start(root.path(), &["--trace"]);
    let pcap = work.path().join("capture.pcapng");
    let report = work.path().join("report.json");
    let mut relay = Command::new(LOSSY)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--server",
            &server.addr,
            "--seed",
            "5",
        ])
        .args(["--fault", "to-client:data:1:drop"])
        .args(["--fault", "to-server:ack:2:duplicate"])
        .args(["--fault", "to-client:data:3:corrupt"])
        .arg("--pcap")
        .arg(&pcap)
        .arg("--report")
        .arg(&report)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    // Kept open until the relay has exited: it prints its counters on the way out.
    let mut relay_out = BufReader::new(relay.stdout.take().unwrap());
    relay_out.read_line(&mut first).unwrap();
    let relay_addr = first.split_whitespace().nth(2).unwrap().to_string();
    let local = work.path().join("f.bin");
    let client = Command::new(UDPFT)
        .args([
            "--trace",
            "--block-size",
            "1024",
            "get",
            &relay_addr,
            "f.bin",
        ])
        .arg(&local)
        .output()
        .unwrap();
    let client_trace = String::from_utf8_lossy(&client.stderr).into_owned();
    assert!(client.status.success(), "{client_trace}");
    assert_eq!(fs::read(&local).unwrap(), file);
    signal(relay.id(), "TERM");
    let status = relay.wait().unwrap();
    let mut rest = String::new();
    relay_out.read_to_string(&mut rest).unwrap();
    assert!(status.success(), "{status:?}\n{rest}");
    let report = fs::read_to_string(&report).unwrap();

    let out = tshark(
        &pcap,
        &[
            "frame.number",
            "udpft.type",
            "udpft.session",
            "udpft.seq",
            "udpft.crc_ok",
            "frame.comment",
        ],
    );
    let frames: Vec<Frame> = out
        .lines()
        .map(|l| {
            let c: Vec<&str> = l.split('|').collect();
            assert_eq!(c.len(), 6, "{l}");
            assert!(
                !c[1].is_empty(),
                "frame {} did not decode as udpft: {l}",
                c[0]
            );
            Frame {
                kind: c[1].parse().unwrap(),
                session: c[2].trim_start_matches("0x").to_string(),
                seq: c[3].parse().unwrap(),
                crc_ok: matches!(c[4], "1" | "True" | "TRUE" | "true"),
                comment: c[5].to_string(),
            }
        })
        .collect();

    // Every datagram received and every copy sent is there, as the relay counted them.
    let count = |way: &str, what: &str| {
        frames
            .iter()
            .filter(|f| f.comment.starts_with(way) && f.comment.contains(what))
            .count() as u64
    };
    for (way, key) in [("to-server", "to_server"), ("to-client", "to_client")] {
        assert_eq!(count(way, " received: "), json_count(&report, key, "seen"));
        assert_eq!(count(way, " sent: "), json_count(&report, key, "forwarded"));
        assert_eq!(
            json_count(&report, key, "faults"),
            if way == "to-server" { 1 } else { 2 }
        );
    }
    assert_eq!(
        frames.len() as u64,
        ["seen", "forwarded"]
            .iter()
            .map(|k| json_count(&report, "to_server", k) + json_count(&report, "to_client", k))
            .sum::<u64>()
    );

    // The dissector agrees with the relay's comments about each faulted datagram.
    let one = |needle: &str| {
        let hits: Vec<&Frame> = frames
            .iter()
            .filter(|f| f.comment.contains(needle))
            .collect();
        assert_eq!(hits.len(), 1, "{needle}: {hits:#?}");
        hits[0]
    };
    let dropped = one("dropped (fault to-client:data:1:drop)");
    assert_eq!((dropped.kind, dropped.seq, dropped.crc_ok), (3, 1, true));
    let dup = one("(fault to-server:ack:2:duplicate)");
    // The second ACK: ACK 1, or ACK 0 again if a slow machine made the server resend
    // its ACCEPT.
    assert!(dup.kind == 4 && dup.seq <= 1, "{dup:?}");
    let number = dup.comment.split_whitespace().nth(1).unwrap(); // "#N"
    assert_eq!(count(&format!("to-server {number} sent"), ""), 2);
    // The flipped bit: the dissector's CRC check fails on exactly the corrupted copy.
    let corrupted = one("(fault to-client:data:3:corrupt)");
    assert!(
        corrupted.crc_ok,
        "as received from the server it was intact"
    );
    let bad: Vec<&Frame> = frames.iter().filter(|f| !f.crc_ok).collect();
    assert_eq!(bad.len(), 1, "{bad:#?}");
    assert!(bad[0].comment.contains(" sent: bit "), "{bad:#?}");
    assert!(bad[0].comment.contains("flipped"));

    // The endpoints saw the same: the client dropped one datagram for its checksum and
    // received every block once; the server resent as many DATA as the capture shows.
    assert_eq!(
        client_trace
            .matches("datagram with a bad checksum dropped")
            .count(),
        1,
        "{client_trace}"
    );
    let delivered: BTreeSet<u64> = frames
        .iter()
        .filter(|f| {
            f.kind == 3
                && f.crc_ok
                && f.comment.starts_with("to-client")
                && f.comment.contains(" sent: ")
        })
        .map(|f| f.seq)
        .collect();
    assert_eq!(delivered, (1..=5).collect());
    for seq in 1..=5 {
        assert!(
            client_trace.contains(&format!("data #{seq} received (")),
            "{client_trace}"
        );
    }
    // What the server sent on its timer (ACCEPT, DATA, DONE), each copy after the first
    // a resend.
    let mut from_server: HashMap<(u8, u64), usize> = HashMap::new();
    for f in frames.iter().filter(|f| {
        [2, 3, 5].contains(&f.kind)
            && f.comment.starts_with("to-client")
            && f.comment.contains("received")
    }) {
        *from_server.entry((f.kind, f.seq)).or_default() += 1;
    }
    let resent: usize = from_server.values().map(|n| n - 1).sum();
    let log = server.log();
    assert!(
        resent >= 2,
        "a dropped and a corrupted DATA were both resent: {from_server:?}"
    );
    assert!(
        log.contains("get 'f.bin': 5000 B in ") && log.contains(&format!("{resent} resends: ok")),
        "capture shows {resent} resends; server log:\n{log}"
    );
    // Every session id the dissector decoded after the REQUEST and the address check
    // (RETRY carries the nonce) is the server's, as its trace prints it.
    assert!(frames.iter().any(|f| f.kind == 7), "no RETRY decoded");
    let sessions: BTreeSet<&str> = frames
        .iter()
        .filter(|f| f.kind != 1 && f.kind != 7)
        .map(|f| f.session.as_str())
        .collect();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    let id = sessions.into_iter().next().unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains(&format!(" {id}: ")) && l.ends_with("accept #0 sent")),
        "{id} not in:\n{log}"
    );
}

/// The numbers of "N resends, M duplicates received, K dropped for a bad checksum" in
/// a client's summary line.
fn summary_counts(summary: &str) -> [u64; 3] {
    let n = |after: &str| -> u64 {
        let end = summary
            .find(after)
            .unwrap_or_else(|| panic!("{after}: {summary}"));
        summary[..end]
            .rsplit(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    [
        n(" resends"),
        n(" duplicates received"),
        n(" dropped for a bad checksum"),
    ]
}

/// A capture decoded by tshark: (source port, destination port, type, comment) per
/// frame, each checked to decode as udpft with an intact checksum unless its comment
/// says it was dropped for one.
fn endpoint_frames(capture: &Path) -> Vec<(u16, u16, u8, String)> {
    let out = tshark(
        capture,
        &[
            "frame.number",
            "udpft.type",
            "udp.srcport",
            "udp.dstport",
            "udpft.crc_ok",
            "frame.comment",
            "ip.src",
            "ip.dst",
        ],
    );
    let frames: Vec<_> = out
        .lines()
        .map(|l| {
            let c: Vec<&str> = l.split('|').collect();
            assert_eq!(c.len(), 8, "{l}");
            assert!(
                !c[1].is_empty(),
                "frame {} did not decode as udpft: {l}",
                c[0]
            );
            assert_eq!((c[6], c[7]), ("127.0.0.1", "127.0.0.1"), "{l}");
            let crc_ok = matches!(c[4], "1" | "True" | "TRUE" | "true");
            assert_eq!(crc_ok, !c[5].contains("bad checksum"), "{l}");
            (
                c[2].parse().unwrap(),
                c[3].parse().unwrap(),
                c[1].parse().unwrap(),
                c[5].to_string(),
            )
        })
        .collect();
    assert!(!frames.is_empty(), "{} is empty", capture.display());
    frames
}

fn with_comment(frames: &[(u16, u16, u8, String)], comment: &str) -> u64 {
    frames.iter().filter(|f| f.3 == comment).count() as u64
}

fn comment_starts(frames: &[(u16, u16, u8, String)], prefix: &str) -> u64 {
    frames.iter().filter(|f| f.3.starts_with(prefix)).count() as u64
}

#[test]
fn tshark_decodes_endpoint_captures_as_the_endpoints_report() {
    let root = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let up = content(3000, 21);
    let down = content(5000, 22);
    fs::write(work.path().join("up.bin"), &up).unwrap();
    fs::write(root.path().join("down.bin"), &down).unwrap();
    let srv_pcap = work.path().join("server.pcapng");
    let mut server = Server::start(root.path(), &["--pcap", srv_pcap.to_str().unwrap()]);
    let server_port: u16 = server.addr.rsplit(':').next().unwrap().parse().unwrap();
    let report = work.path().join("report.json");
    // The put's first DATA is lost (the client resends it), the get's first DATA is
    // lost (the server resends it) and the third DATA towards the client has a bit
    // flipped (the client drops it for its checksum, the server resends it).
    let mut relay = Command::new(LOSSY)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--server",
            &server.addr,
            "--seed",
            "5",
        ])
        .args(["--fault", "to-server:data:1:drop"])
        .args(["--fault", "to-client:data:1:drop"])
        .args(["--fault", "to-client:data:3:corrupt"])
        .arg("--report")
        .arg(&report)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut relay_out = BufReader::new(relay.stdout.take().unwrap());
    let mut first = String::new();
    relay_out.read_line(&mut first).unwrap();
    let relay_addr = first.split_whitespace().nth(2).unwrap().to_string();
    let relay_port: u16 = relay_addr.rsplit(':').next().unwrap().parse().unwrap();

    let run = |pcap: &Path, args: &[&str]| {
        let o = Command::new(UDPFT)
            .current_dir(work.path())
            .args(["--block-size", "1024", "--pcap"])
            .arg(pcap)
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{args:?}: {err}");
        err
    };
    let put_pcap = work.path().join("put.pcapng");
    let get_pcap = work.path().join("get.pcapng");
    let put_summary = run(&put_pcap, &["put", &relay_addr, "up.bin"]);
    let get_summary = run(&get_pcap, &["get", &relay_addr, "down.bin", "copy.bin"]);
    assert_eq!(fs::read(root.path().join("up.bin")).unwrap(), up);
    assert_eq!(fs::read(work.path().join("copy.bin")).unwrap(), down);
    // The server first (its capture is complete once it has exited), then the relay,
    // which so has seen everything the server sent.
    signal(server.child.id(), "TERM");
    assert!(
        server
            .wait_exit(std::time::Duration::from_secs(20))
            .is_some_and(|s| s.success()),
        "udpftd did not stop"
    );
    signal(relay.id(), "TERM");
    assert!(relay.wait().unwrap().success());
    let mut rest = String::new();
    relay_out.read_to_string(&mut rest).unwrap();
    let report = fs::read_to_string(&report).unwrap();

    // Each client: every packet decodes, between its own port and the relay's, and
    // what the capture calls resent, received again and dropped for a bad checksum
    // is what the client's summary counts.
    let mut client_sent = 0;
    for (pcap, summary, op) in [
        (&put_pcap, &put_summary, "put"),
        (&get_pcap, &get_summary, "get"),
    ] {
        let frames = endpoint_frames(pcap);
        let port = frames[0].0;
        assert_ne!(port, relay_port);
        for f in &frames {
            let sent = f.3.starts_with("sent") || f.3.starts_with("resent");
            let want = if sent {
                (port, relay_port)
            } else {
                (relay_port, port)
            };
            assert_eq!((f.0, f.1), want, "{f:?}");
        }
        let [resends, duplicates, bad] = summary_counts(summary);
        assert_eq!(
            with_comment(&frames, "resent (timeout)"),
            resends,
            "{op}: {summary}"
        );
        assert_eq!(
            with_comment(&frames, "received again"),
            duplicates,
            "{op}: {summary}"
        );
        assert_eq!(
            with_comment(&frames, "received, dropped: bad checksum"),
            bad,
            "{op}: {summary}"
        );
        if op == "put" {
            assert!(resends >= 1, "the lost DATA was resent: {summary}");
        } else {
            assert_eq!(bad, 1, "the flipped bit: {summary}");
        }
        client_sent += comment_starts(&frames, "sent") + comment_starts(&frames, "resent");
    }
    // Every datagram the clients sent reached the relay.
    assert_eq!(client_sent, json_count(&report, "to_server", "seen"));

    // The server: every packet decodes, on its own port; its resends are what its log
    // lines count; it received what the relay forwarded and sent what the relay saw.
    let frames = endpoint_frames(&srv_pcap);
    for f in &frames {
        let sent = f.3.starts_with("sent") || f.3.starts_with("resent");
        assert_eq!(if sent { f.0 } else { f.1 }, server_port, "{f:?}");
    }
    let log = server.log();
    let resends: u64 = ["put 'up.bin': 3000 B in ", "get 'down.bin': 5000 B in "]
        .iter()
        .map(|line| {
            let at = log.find(line).unwrap_or_else(|| panic!("{line}: {log}"));
            let l = log[at..].lines().next().unwrap();
            let end = l.find(" resends").unwrap();
            l[..end].rsplit(' ').next().unwrap().parse::<u64>().unwrap()
        })
        .sum();
    assert!(
        resends >= 2,
        "the lost and the corrupted DATA were resent: {log}"
    );
    assert_eq!(with_comment(&frames, "resent (timeout)"), resends, "{log}");
    let received = comment_starts(&frames, "received");
    let sent = comment_starts(&frames, "sent") + comment_starts(&frames, "resent");
    assert_eq!(
        received,
        json_count(&report, "to_server", "forwarded"),
        "{report}"
    );
    assert_eq!(sent, json_count(&report, "to_client", "seen"), "{report}");
}
