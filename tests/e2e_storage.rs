//! The attacks on udpftd's files, end to end with the real binaries: special files,
//! crashes of either side mid-transfer, files changed while served, and names that try
//! to forge log lines. (Confinement races are in tests/storage.rs, on the same code.)

use std::fs;
use std::io::Write;
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use udpft::wire::{Datagram, Message, Op};

mod common;
use common::{Server, UDPFT, content, signal, uploads_open, wait_for};

fn udpft_env(cwd: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
    Command::new(UDPFT)
        .current_dir(cwd)
        .envs(envs.iter().copied())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("udpft runs")
}

fn udpft(cwd: &Path, args: &[&str]) -> Output {
    udpft_env(cwd, args, &[])
}

fn spawn_udpft(cwd: &Path, args: &[&str], envs: &[(&str, &str)]) -> Child {
    Command::new(UDPFT)
        .current_dir(cwd)
        .envs(envs.iter().copied())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Sends a REQUEST as a client does, through the server's address check (RETRY, then
/// the same REQUEST with the token), and returns the server's answer to it.
fn ask(sock: &UdpSocket, to: &str, nonce: u64, op: Op, name: &str, block_size: u32) -> Vec<u8> {
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut token = None;
    loop {
        let req = common::request_bytes(op, name, nonce, block_size, token);
        sock.send_to(&req, to).unwrap();
        let mut reply = vec![0u8; 70_000];
        let (n, _) = sock.recv_from(&mut reply).unwrap();
        reply.truncate(n);
        match Datagram::parse(&reply).unwrap().message {
            Message::Retry(t) if token.is_none() => token = Some(t),
            _ => return reply,
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A file big enough that a transfer of it in 512-byte blocks is still running when
/// the test acts on it (hundreds of thousands of round trips).
fn big_file(path: &Path, mib: usize) {
    let mut f = std::io::BufWriter::new(fs::File::create(path).unwrap());
    for i in 0..mib {
        f.write_all(&content(1 << 20, i as u64)).unwrap();
    }
}

/// `mkfifo root/pipe` and one `get pipe` froze the whole server; now it is refused at
/// once by its type, others keep being served, and SIGTERM still stops the server.
#[test]
fn special_files_never_freeze_the_server() {
    let root = tempfile::tempdir().unwrap();
    let cli = tempfile::tempdir().unwrap();
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        root.path().join("pipe"),
        rustix::fs::Mode::from_raw_mode(0o644),
    )
    .unwrap();
    let _sock = std::os::unix::net::UnixListener::bind(root.path().join("sock")).unwrap();
    fs::write(root.path().join("ok.txt"), b"fine").unwrap();
    let mut srv = Server::start(root.path(), &[]);
    for (name, what) in [("pipe", "a FIFO"), ("sock", "a socket")] {
        let o = udpft(cli.path(), &["get", &srv.addr, name, "x"]);
        assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
        let want = format!("'{name}' is {what}, not a regular file");
        assert!(text(&o.stderr).contains(&want), "{}", text(&o.stderr));
        assert!(!cli.path().join("x").exists());
    }
    let o = udpft(cli.path(), &["get", &srv.addr, "ok.txt"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(fs::read(cli.path().join("ok.txt")).unwrap(), b"fine");
    let o = udpft(cli.path(), &["list", &srv.addr]);
    assert_eq!(text(&o.stdout), "4\tok.txt\n");
    signal(srv.child.id(), "TERM");
    let st = srv
        .wait_exit(Duration::from_secs(20))
        .expect("udpftd stops");
    assert!(st.success());
}

/// SIGKILL of the server during a put leaves nothing under any name, and nothing that
/// outlives the next start: unnamed temporary files vanish with the process; named ones
/// (the fallback) are swept when the server starts again.
#[test]
fn a_killed_server_leaves_no_upload_behind() {
    let cli = tempfile::tempdir().unwrap();
    big_file(&cli.path().join("big"), 32);
    for named in [false, true] {
        let root = tempfile::tempdir().unwrap();
        let envs: &[(&str, &str)] = if named {
            &[("UDPFT_NAMED_TEMP", "1")]
        } else {
            &[]
        };
        let mut srv = Server::start_with("127.0.0.1:0", root.path(), &[], envs);
        let pid = srv.child.id();
        let mut up = spawn_udpft(
            cli.path(),
            &["--block-size", "512", "put", &srv.addr, "big"],
            &[],
        );
        wait_for("the upload to start", || uploads_open(pid, root.path()) > 0);
        srv.child.kill().unwrap();
        srv.child.wait().unwrap();
        let _ = up.kill();
        let _ = up.wait();
        let left = names(root.path());
        if !named {
            assert!(left.is_empty(), "left behind: {left:?}");
            continue;
        }
        assert_eq!(left.len(), 1, "{left:?}");
        assert!(left[0].starts_with(".udpft-") && left[0].ends_with(".part"));
        // Clients can neither see nor name it; the next start removes it.
        let _srv = Server::start_with("127.0.0.1:0", root.path(), &[], envs);
        wait_for("the leftover to be swept", || names(root.path()).is_empty());
    }
}

/// SIGKILL of the client during a get leaves nothing next to the target; in the named
/// fallback, the next download to that directory removes the leftover.
#[test]
fn a_killed_client_leaves_no_download_behind() {
    let root = tempfile::tempdir().unwrap();
    big_file(&root.path().join("big"), 32);
    fs::write(root.path().join("small"), b"s").unwrap();
    let srv = Server::start(root.path(), &[]);
    for named in [false, true] {
        let cli = tempfile::tempdir().unwrap();
        let envs: &[(&str, &str)] = if named {
            &[("UDPFT_NAMED_TEMP", "1")]
        } else {
            &[]
        };
        let mut down = spawn_udpft(
            cli.path(),
            &["--block-size", "512", "get", &srv.addr, "big"],
            envs,
        );
        wait_for("the download to start", || {
            uploads_open(down.id(), cli.path()) > 0
        });
        down.kill().unwrap();
        down.wait().unwrap();
        let left = names(cli.path());
        if !named {
            assert!(left.is_empty(), "left behind: {left:?}");
            continue;
        }
        assert_eq!(left.len(), 1, "{left:?}");
        let o = udpft_env(cli.path(), &["get", &srv.addr, "small"], envs);
        assert!(o.status.success(), "{}", text(&o.stderr));
        assert_eq!(names(cli.path()), ["small"]);
    }
}

/// A file truncated or extended while it is served reached the client as "verified";
/// now the transfer fails on both sides with a message that says why, and the client
/// keeps no file.
#[test]
fn a_file_changed_while_served_fails_on_both_sides() {
    let root = tempfile::tempdir().unwrap();
    let srv = Server::start(root.path(), &[]);
    for (i, change) in ["truncate", "extend"].into_iter().enumerate() {
        let cli = tempfile::tempdir().unwrap();
        let name = format!("f{i}");
        let path = root.path().join(&name);
        big_file(&path, 16);
        let down = spawn_udpft(
            cli.path(),
            &["--block-size", "128", "get", &srv.addr, &name],
            &[],
        );
        let canon = path.canonicalize().unwrap();
        wait_for("the server to open the file", || {
            fs::read_dir(format!("/proc/{}/fd", srv.child.id()))
                .unwrap()
                .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
                .any(|t| t == canon)
        });
        let f = fs::File::options().write(true).open(&path).unwrap();
        match change {
            "truncate" => f.set_len(1 << 20).unwrap(),
            _ => {
                f.set_len(17 << 20).unwrap();
                f.set_modified(std::time::SystemTime::now()).unwrap();
            }
        }
        let o = down.wait_with_output().unwrap();
        let err = text(&o.stderr);
        assert!(!o.status.success(), "{change}: {err}");
        assert!(
            err.contains("changed while it was being sent") || err.contains("size mismatch"),
            "{change}: {err}"
        );
        assert!(names(cli.path()).is_empty(), "{change}");
        wait_for("the server's log line", || {
            srv.log()
                .lines()
                .any(|l| l.contains(&format!("get '{name}'")) && l.contains("failed"))
        });
    }
}

/// A requested name with a newline and escape sequences forged a second server log
/// line and wrote raw ESC bytes into the log; now every name and message is escaped.
#[test]
fn names_cannot_forge_log_lines() {
    let root = tempfile::tempdir().unwrap();
    let srv = Server::start(root.path(), &[]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let evil = "x\nudpftd: 6.6.6.6:1 get 'forged': 1 B in 0.001 s, 0 resends: ok\u{1b}[2J\u{9b}31m";
    let in_no_dir = format!("nodir/{evil}");
    for (nonce, op, name) in [
        (11u64, Op::Get, evil),
        (12, Op::Put, in_no_dir.as_str()),
        (13, Op::List, evil),
    ] {
        // Each is answered (refused): the log line is written by then.
        let reply = ask(&sock, &srv.addr, nonce, op, name, 1408);
        let answer = Datagram::parse(&reply).unwrap();
        let Message::Error { message, .. } = answer.message else {
            panic!("expected a refusal, got {answer:?}");
        };
        assert!(!message.contains('\u{1b}'), "{message:?}");
    }
    let t = Instant::now();
    let log = loop {
        let log = srv.log();
        if log.lines().filter(|l| l.contains("refused")).count() >= 3
            || t.elapsed() > Duration::from_secs(20)
        {
            break log;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(
        !log.contains('\u{1b}') && !log.contains('\u{9b}'),
        "{log:?}"
    );
    assert!(
        !log.lines().any(|l| l.starts_with("udpftd: 6.6.6.6")),
        "{log}"
    );
    assert_eq!(
        log.lines().filter(|l| l.contains("refused")).count(),
        3,
        "{log}"
    );
    assert!(log.contains("x\\nudpftd: 6.6.6.6:1"), "{log}");
}

/// Found by the attacker: an ERROR message from a client went into the server's log
/// line raw (a forged line, escape sequences). Now a peer's message is escaped too.
#[test]
fn a_peers_error_message_cannot_forge_log_lines() {
    let root = tempfile::tempdir().unwrap();
    fs::write(root.path().join("f"), vec![7u8; 100_000]).unwrap();
    let srv = Server::start(root.path(), &[]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let send = |d: Datagram| {
        let mut buf = vec![0u8; d.wire_len()];
        let n = d.emit(&mut buf).unwrap();
        sock.send_to(&buf[..n], &srv.addr).unwrap();
    };
    let first = ask(&sock, &srv.addr, 21, Op::Get, "f", 512);
    let mut reply = first.clone();
    let id = loop {
        if let Ok(d) = Datagram::parse(&reply)
            && let Message::Accept(_) = d.message
        {
            break d.session;
        }
        let mut b = vec![0u8; 70_000];
        let (n, _) = sock.recv_from(&mut b).unwrap();
        b.truncate(n);
        reply = b;
    };
    let evil =
        "bye\nudpftd: 10.0.0.1:53 delete '/etc/passwd': ok\u{1b}]0;PWNED\u{7}\u{9b}2J\u{202e}";
    send(Datagram {
        session: id,
        seq: 0,
        message: Message::Error {
            code: udpft::wire::ErrorCode::Aborted,
            message: evil,
        },
    });
    wait_for("the session's log line", || srv.log().contains("get 'f'"));
    let log = srv.log();
    assert_eq!(
        log.lines().filter(|l| l.contains("get 'f'")).count(),
        1,
        "{log}"
    );
    assert!(
        !log.lines().any(|l| l.starts_with("udpftd: 10.0.0.1")),
        "{log}"
    );
    for bad in ['\u{1b}', '\u{7}', '\u{9b}', '\u{202e}'] {
        assert!(!log.contains(bad), "{bad:?} in {log:?}");
    }
    assert!(log.contains("bye\\nudpftd: 10.0.0.1:53"), "{log}");
}

/// Found by the attacker: each completed upload lingers (to re-acknowledge a resent
/// DONE), and lingering sessions filled the table: one client's stream of small puts
/// locked everyone out ("server busy: 0 transfers in progress"). Now the longest-
/// lingering session gives way to a new one.
#[test]
fn a_stream_of_small_puts_does_not_lock_others_out() {
    let root = tempfile::tempdir().unwrap();
    let cli = tempfile::tempdir().unwrap();
    fs::write(cli.path().join("small"), b"tiny").unwrap();
    // At most 2 transfers, so 8 sessions in all, lingering ones included.
    let srv = Server::start(root.path(), &["--max-sessions", "2", "--overwrite"]);
    for i in 0..30 {
        let o = udpft(cli.path(), &["put", &srv.addr, "small"]);
        assert!(o.status.success(), "put {i}: {}", text(&o.stderr));
    }
    let o = udpft(cli.path(), &["list", &srv.addr]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "4\tsmall\n");
}

/// `udpftd --user`: bound as root, it serves as the user, so the kernel refuses it
/// what that user may not do. Without root, it says why it cannot and exits 1.
#[test]
fn the_server_drops_root_after_binding() {
    let root = tempfile::tempdir().unwrap();
    fs::write(root.path().join("pub.txt"), b"public").unwrap();
    if !rustix::process::geteuid().is_root() {
        let o = Command::new(common::UDPFTD)
            .args([
                "--root",
                root.path().to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
            ])
            .args(["--user", "65534:65534"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1));
        assert!(
            text(&o.stderr).contains("only root can change user"),
            "{}",
            text(&o.stderr)
        );
        return;
    }
    // The served directory: readable by all, writable by root only.
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(root.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(
        root.path().join("pub.txt"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let srv = Server::start(root.path(), &["--user", "65534:65534"]);
    let status = fs::read_to_string(format!("/proc/{}/status", srv.child.id())).unwrap();
    for field in ["Uid:", "Gid:"] {
        let line = status.lines().find(|l| l.starts_with(field)).unwrap();
        let ids: Vec<&str> = line.split_whitespace().skip(1).collect();
        assert_eq!(ids, ["65534"; 4], "{line}");
    }
    let cli = tempfile::tempdir().unwrap();
    let o = udpft(cli.path(), &["get", &srv.addr, "pub.txt"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    fs::write(cli.path().join("up.txt"), b"x").unwrap();
    let o = udpft(cli.path(), &["put", &srv.addr, "up.txt"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("access denied"),
        "{}",
        text(&o.stderr)
    );
    assert!(!root.path().join("up.txt").exists());
}
