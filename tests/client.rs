//! The client at its edges (issue 10): scp's path rules, failing fast, every address
//! tried, truthful summaries, a hostile server, the shell, the command lines, the trace.
//! One test (or group) per finding, numbered as in the issue.

use std::fs;
use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use udpft::net::client::{Client, ClientError, ClientOptions};
use udpft::wire::{Accept, Datagram, ErrorCode, Message, Op};

mod common;
use common::{Server, UDPFT, UDPFTD, content};

const LOSSY: &str = env!("CARGO_BIN_EXE_udpft-lossy");

fn run(prog: &str, cwd: &Path, args: &[&str]) -> Output {
    Command::new(prog)
        .current_dir(cwd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("the program runs")
}

fn udpft(cwd: &Path, args: &[&str]) -> Output {
    run(UDPFT, cwd, args)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[track_caller]
fn assert_code(o: &Output, code: i32, message: &str) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
    assert!(
        stderr(o).contains(message),
        "stderr should mention {message:?}: {}",
        stderr(o)
    );
}

/// A loopback socket that never answers: the datagrams it got so far, read without
/// waiting (they are queued by the time the client process has exited).
struct Silent(UdpSocket);

impl Silent {
    fn new() -> Silent {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_nonblocking(true).unwrap();
        Silent(s)
    }
    fn addr(&self) -> String {
        self.0.local_addr().unwrap().to_string()
    }
    fn received(&self) -> usize {
        let mut buf = [0u8; 70_000];
        let mut n = 0;
        while self.0.recv_from(&mut buf).is_ok() {
            n += 1;
        }
        n
    }
}

/// A port on which nothing listens (bound, then closed).
fn closed_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn emit(d: &Datagram) -> Vec<u8> {
    let mut buf = vec![0u8; d.wire_len()];
    let n = d.emit(&mut buf).unwrap();
    buf.truncate(n);
    buf
}

/// A fake server for one session: waits for the REQUEST, then lets `script` talk to
/// the client. Everything it does is bounded by a 20 s read timeout.
fn fake_server(
    script: impl FnOnce(&UdpSocket, SocketAddr, u64, Op) + Send + 'static,
) -> (String, JoinHandle<()>) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let addr = s.local_addr().unwrap().to_string();
    let h = std::thread::spawn(move || {
        let mut buf = [0u8; 70_000];
        let (n, from) = s.recv_from(&mut buf).expect("a request within 20 s");
        let d = Datagram::parse(&buf[..n]).expect("a valid request");
        let Message::Request(r) = d.message else {
            panic!("not a request: {d:?}")
        };
        script(&s, from, d.session, r.op);
    });
    (addr, h)
}

const SESSION: u64 = 0x5e55_1011;

fn accept(s: &UdpSocket, to: SocketAddr, nonce: u64, op: Op, size: u64) {
    let d = Datagram {
        session: SESSION,
        seq: 0,
        message: Message::Accept(Accept {
            nonce,
            op,
            block_size: 1024,
            size,
            window: 1,
        }),
    };
    s.send_to(&emit(&d), to).unwrap();
}

fn data(s: &UdpSocket, to: SocketAddr, seq: u64, payload: &[u8]) {
    let d = Datagram {
        session: SESSION,
        seq,
        message: Message::Data(payload),
    };
    s.send_to(&emit(&d), to).unwrap();
}

fn done(s: &UdpSocket, to: SocketAddr, seq: u64, all: &[u8]) {
    let d = Datagram {
        session: SESSION,
        seq,
        message: Message::Done {
            length: all.len() as u64,
            crc: crc32fast::hash(all),
        },
    };
    s.send_to(&emit(&d), to).unwrap();
}

/// Waits (up to 20 s) for the ack of `seq` from the client; false if an ERROR came
/// or nothing did.
fn await_ack(s: &UdpSocket, seq: u64) -> bool {
    let mut buf = [0u8; 70_000];
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(20) {
        let Ok((n, _)) = s.recv_from(&mut buf) else {
            return false;
        };
        match Datagram::parse(&buf[..n]) {
            Ok(d) if d.message == Message::Ack && d.seq == seq => return true,
            Ok(Datagram {
                message: Message::Error { .. },
                ..
            }) => return false,
            _ => {}
        }
    }
    false
}

// 1. Remote paths as scp has them.
#[test]
fn f1_remote_paths_follow_scp() {
    let root = tempfile::tempdir().unwrap();
    let cli = tempfile::tempdir().unwrap();
    fs::create_dir(root.path().join("sub")).unwrap();
    fs::write(cli.path().join("up.txt"), b"up").unwrap();
    fs::write(root.path().join("notes.txt"), b"notes").unwrap();
    let srv = Server::start(root.path(), &[]);
    let s = srv.addr.as_str();

    // A REMOTE ending in '/' that is no directory there: refused, no file made.
    let o = udpft(cli.path(), &["put", s, "up.txt", "newdir/"]);
    assert_code(&o, 3, "no directory 'newdir/' on the server");
    assert!(!root.path().join("newdir").exists());
    // An existing directory, with and without the slash: the file goes inside.
    let o = udpft(cli.path(), &["put", s, "up.txt", "sub/"]);
    assert_code(&o, 0, "'up.txt' -> 'sub/up.txt'");
    assert_eq!(fs::read(root.path().join("sub/up.txt")).unwrap(), b"up");
    fs::create_dir(root.path().join("other")).unwrap();
    let o = udpft(cli.path(), &["put", s, "up.txt", "other"]);
    assert_code(&o, 0, "'up.txt' -> 'other/up.txt'");
    assert_eq!(fs::read(root.path().join("other/up.txt")).unwrap(), b"up");
    // A plain new name is still a file name.
    let o = udpft(cli.path(), &["put", s, "up.txt", "renamed.txt"]);
    assert_code(&o, 0, "-> 'renamed.txt'");
    assert!(root.path().join("renamed.txt").is_file());

    // get with a REMOTE ending in '/': refused before a datagram is sent.
    let quiet = Silent::new();
    let o = udpft(cli.path(), &["get", &quiet.addr(), "notes.txt/", "x"]);
    assert_code(&o, 2, "'notes.txt/' ends in '/'");
    assert_eq!(quiet.received(), 0, "nothing may be sent");
    assert!(!cli.path().join("x").exists());
    // get into a directory, named with or without the slash.
    fs::create_dir(cli.path().join("d")).unwrap();
    assert_code(&udpft(cli.path(), &["get", s, "notes.txt", "d/"]), 0, "");
    assert_eq!(fs::read(cli.path().join("d/notes.txt")).unwrap(), b"notes");
}

// 2. The local destination is checked before anything is sent, and named.
#[test]
fn f2_local_destination_checked_before_sending() {
    let cli = tempfile::tempdir().unwrap();
    let quiet = Silent::new();
    let a = quiet.addr();
    let cases: [(&[&str], i32, &str); 4] = [
        (
            &["get", &a, "big.bin", "nd/"],
            1,
            "no local directory 'nd/'",
        ),
        (
            &["get", &a, "big.bin", "nd/x"],
            1,
            "cannot write 'nd/x': no local directory 'nd'",
        ),
        (&["get", &a, "dir/"], 2, "'dir/' ends in '/'"),
        (
            &["put", &a, "missing.bin"],
            1,
            "local file 'missing.bin' does not exist",
        ),
    ];
    for (args, code, msg) in cases {
        let o = udpft(cli.path(), args);
        assert_code(&o, code, msg);
        assert_eq!(quiet.received(), 0, "{args:?} sent something");
    }
    // A file where a directory is meant.
    fs::write(cli.path().join("f"), b"").unwrap();
    let o = udpft(cli.path(), &["get", &a, "big.bin", "f/"]);
    assert_code(&o, 1, "'f/' is not a directory");
    // A directory nobody can create files in, root included (so the test means the
    // same on CI, which runs as root): the temporary file is made before sending.
    let o = udpft(cli.path(), &["get", &a, "big.bin", "/proc/"]);
    assert_code(&o, 1, "cannot write '/proc/big.bin'");
    assert_eq!(quiet.received(), 0);
}

// 3. "Port unreachable" reported at once; the shell says nothing before checking.
#[test]
fn f3_nothing_listening_is_reported_at_once() {
    let cli = tempfile::tempdir().unwrap();
    let server = format!("127.0.0.1:{}", closed_port());
    // Long retry limits: only the kernel's "port unreachable" can end it quickly.
    let slow = ["--timeout", "2s", "--idle", "60s"];
    let t = Instant::now();
    let o = udpft(cli.path(), &[&slow[..], &["get", &server, "x"]].concat());
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    assert_code(
        &o,
        4,
        &format!("nothing is listening at {server} — is udpftd running there? (default port 6969)"),
    );
    assert!(!cli.path().join("x").exists());
    fs::write(cli.path().join("p"), b"p").unwrap();
    let o = udpft(cli.path(), &[&slow[..], &["put", &server, "p"]].concat());
    assert_code(&o, 4, "nothing is listening");
    let o = run_shell(cli.path(), &server, &[], "ls\n");
    assert_code(&o, 4, "nothing is listening");
    assert!(!stderr(&o).contains("connected"), "{}", stderr(&o));
    // A silent server is still "no answer".
    let quiet = Silent::new();
    let o = udpft(
        cli.path(),
        &[
            "--timeout",
            "100ms",
            "--idle",
            "300ms",
            "list",
            &quiet.addr(),
        ],
    );
    assert_code(&o, 4, "no answer from");
}

// 4. Every resolved address is tried, the first that answers used.
#[test]
fn f4_every_address_is_tried() {
    let root = tempfile::tempdir().unwrap();
    fs::write(root.path().join("a"), b"abc").unwrap();
    let srv = Server::start(root.path(), &[]);
    let good: SocketAddr = srv.addr.parse().unwrap();
    let refused: SocketAddr = format!("[::1]:{}", good.port()).parse().unwrap();
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let opts = ClientOptions {
        timeout: Duration::from_millis(100),
        idle: Duration::from_millis(300),
        ..ClientOptions::default()
    };
    // IPv6 first (nothing there), then IPv4.
    let mut c = Client::with_addresses("localhost", vec![refused, good], opts.clone());
    let (listing, report) = c.list(None).unwrap();
    assert_eq!(listing, "3\ta\n");
    assert_eq!((report.peer, c.peer()), (good, Some(good)));
    // A silent address first, then the server.
    let mut c = Client::with_addresses("x", vec![silent.local_addr().unwrap(), good], opts.clone());
    assert_eq!(c.check().unwrap(), good);
    // None answering: every address named.
    let port = closed_port();
    let a: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let b: SocketAddr = format!("[::1]:{port}").parse().unwrap();
    let mut c = Client::with_addresses("both", vec![b, a], opts);
    match c.list(None) {
        Err(e @ ClientError::NothingListening { .. }) => {
            let m = e.to_string();
            assert!(
                m.contains(&a.to_string()) && m.contains(&b.to_string()),
                "{m}"
            );
        }
        other => panic!("{other:?}"),
    }
    // By name: whatever localhost resolves to, the server on 127.0.0.1 is found.
    let mut c = Client::new(
        &format!("localhost:{}", good.port()),
        ClientOptions::default(),
    )
    .unwrap();
    assert!(c.addresses().contains(&good), "{:?}", c.addresses());
    assert_eq!(c.check().unwrap(), good);
}

// 5. Summaries tell the truth both ways: the peer's resends are counted.
#[test]
fn f5_summary_counts_what_the_peer_resent() {
    let cli = tempfile::tempdir().unwrap();
    let body = content(1500, 3);
    let b = body.clone();
    let (addr, h) = fake_server(move |s, to, nonce, op| {
        accept(s, to, nonce, op, b.len() as u64);
        assert!(await_ack(s, 0));
        // Every block twice, as a server whose timer fired would.
        for (i, chunk) in b.chunks(1024).enumerate() {
            data(s, to, i as u64 + 1, chunk);
            data(s, to, i as u64 + 1, chunk);
            assert!(await_ack(s, i as u64 + 1));
        }
        done(s, to, 3, &b);
        assert!(await_ack(s, 3));
    });
    let o = udpft(cli.path(), &["get", &addr, "f", "f"]);
    h.join().unwrap();
    assert_code(
        &o,
        0,
        "0 resends, 2 duplicates received, 0 dropped for a bad checksum",
    );
    assert!(stderr(&o).contains("rtt "), "{}", stderr(&o));
    assert_eq!(fs::read(cli.path().join("f")).unwrap(), body);
}

// 6a. A server that floods duplicates of DATA 1 cannot hold the client.
#[test]
fn f6_duplicates_do_not_reset_the_deadline() {
    let cli = tempfile::tempdir().unwrap();
    let (addr, h) = fake_server(move |s, to, nonce, op| {
        accept(s, to, nonce, op, 5000);
        assert!(await_ack(s, 0));
        s.set_nonblocking(true).unwrap();
        let t = Instant::now();
        let mut buf = [0u8; 100];
        // Flood until the client gives up and says so (an ERROR), at most 20 s.
        while t.elapsed() < Duration::from_secs(20) {
            data(s, to, 1, &[7u8; 1024]);
            std::thread::sleep(Duration::from_millis(2));
            if let Ok((n, _)) = s.recv_from(&mut buf)
                && matches!(
                    Datagram::parse(&buf[..n]).map(|d| d.message),
                    Ok(Message::Error { .. })
                )
            {
                return;
            }
        }
        panic!("the client never gave up");
    });
    let t = Instant::now();
    let o = udpft(
        cli.path(),
        &["--timeout", "100ms", "--idle", "400ms", "get", &addr, "f"],
    );
    assert!(t.elapsed() < Duration::from_secs(20));
    h.join().unwrap();
    // The engine's receiver gives up: duplicates are not progress (PROTOCOL.md §5.4).
    assert_code(&o, 4, "stopped sending: nothing new for");
    assert!(!cli.path().join("f").exists());
    assert!(
        fs::read_dir(cli.path()).unwrap().next().is_none(),
        "a temp file was left"
    );
}

// 6b. A server that sends more than it announced is cut off, and nothing is kept.
#[test]
fn f6_never_more_than_the_announced_size() {
    let cli = tempfile::tempdir().unwrap();
    let (addr, h) = fake_server(move |s, to, nonce, op| {
        accept(s, to, nonce, op, 100);
        assert!(await_ack(s, 0));
        // Block 1 alone is ten times the announced size.
        for seq in 1..=5u64 {
            data(s, to, seq, &[1u8; 1000]);
            if !await_ack(s, seq) {
                return;
            }
        }
        panic!("the client acknowledged data past the announced size");
    });
    let o = udpft(cli.path(), &["get", &addr, "f"]);
    h.join().unwrap();
    assert_code(&o, 5, "size mismatch: 100 bytes were announced");
    assert!(
        fs::read_dir(cli.path()).unwrap().next().is_none(),
        "a file was left"
    );
}

// 6c. Text from the server reaches the terminal escaped: ERROR messages, listings.
#[test]
fn f6_server_text_is_escaped() {
    let cli = tempfile::tempdir().unwrap();
    let (addr, h) = fake_server(|s, to, nonce, _| {
        let d = Datagram {
            session: nonce,
            seq: 0,
            message: Message::Error {
                code: ErrorCode::NotFound,
                message: "no\n\u{1b}[2J\u{1b}]0;pwned\u{7}",
            },
        };
        s.send_to(&emit(&d), to).unwrap();
    });
    let o = udpft(cli.path(), &["get", &addr, "f"]);
    h.join().unwrap();
    assert_code(&o, 3, "no\\n\\x1b[2J\\x1b]0;pwned\\x07");
    assert!(!o.stderr.contains(&0x1b), "raw ESC on the terminal");

    let listing = b"5\tevil\x1b]0;pwned\x07\n-\tdir\r/\n".to_vec();
    let l = listing.clone();
    let (addr, h) = fake_server(move |s, to, nonce, op| {
        accept(s, to, nonce, op, l.len() as u64);
        assert!(await_ack(s, 0));
        data(s, to, 1, &l);
        assert!(await_ack(s, 1));
        done(s, to, 2, &l);
        assert!(await_ack(s, 2));
    });
    let o = udpft(cli.path(), &["list", &addr]);
    h.join().unwrap();
    assert_code(&o, 0, "");
    // Sorted by name by the client, escaped for the terminal.
    assert_eq!(stdout(&o), "-\tdir\\r/\n5\tevil\\x1b]0;pwned\\x07\n");
}

fn run_shell(cwd: &Path, server: &str, args: &[&str], input: &str) -> Output {
    let mut c = Command::new(UDPFT)
        .current_dir(cwd)
        .arg("shell")
        .args(args)
        .arg(server)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    c.wait_with_output().unwrap()
}

// 7. The shell: sftp's local commands, mget/mput, scripts that stop at a failure.
#[test]
fn f7_shell_commands_and_scripts() {
    let root = tempfile::tempdir().unwrap();
    let cli = tempfile::tempdir().unwrap();
    fs::create_dir(root.path().join("logs")).unwrap();
    for (n, body) in [("a.txt", "A"), ("b.txt", "B"), ("c.bin", "C")] {
        fs::write(root.path().join("logs").join(n), body).unwrap();
    }
    fs::create_dir(cli.path().join("work")).unwrap();
    for n in ["u1.dat", "u2.dat", "skip.txt"] {
        fs::write(cli.path().join("work").join(n), n).unwrap();
    }
    let srv = Server::start(root.path(), &["--allow-exit"]);
    let s = srv.addr.as_str();
    let input = "lcd work\n\
                 lpwd\n\
                 lls\n\
                 !echo bang > bang.out\n\
                 mget 'logs/*.txt'\n\
                 mput '*.dat'\n\
                 -get missing\n\
                 ls\n\
                 get also-missing\n\
                 ls logs\n";
    let o = run_shell(cli.path(), s, &[], input);
    let (out, err) = (stdout(&o), stderr(&o));
    assert_eq!(o.status.code(), Some(3), "stdout: {out}\nstderr: {err}");
    assert!(err.contains("connected to"), "{err}");
    let work = cli.path().join("work");
    assert!(
        out.contains(&format!("{}\n", work.canonicalize().unwrap().display())),
        "{out}"
    );
    assert!(out.contains("u1.dat"), "lls: {out}");
    assert_eq!(fs::read_to_string(work.join("bang.out")).unwrap(), "bang\n");
    assert_eq!(fs::read(work.join("a.txt")).unwrap(), b"A");
    assert_eq!(fs::read(work.join("b.txt")).unwrap(), b"B");
    assert!(!work.join("c.bin").exists());
    assert_eq!(fs::read(root.path().join("u1.dat")).unwrap(), b"u1.dat");
    assert_eq!(fs::read(root.path().join("u2.dat")).unwrap(), b"u2.dat");
    assert!(!root.path().join("skip.txt").exists());
    // '-get missing' failed without stopping; 'ls' ran; 'get also-missing' stopped it.
    assert!(err.contains("server has no file 'missing'"), "{err}");
    assert!(out.contains("6\tu1.dat\n"), "{out}");
    assert!(
        err.contains("stopped at line 9 (get also-missing)"),
        "{err}"
    );
    assert!(!out.contains("1\ta.txt"), "the last ls must not run: {out}");

    // The same with -b FILE; and a script that ends well exits 0.
    let batch = cli.path().join("batch");
    fs::write(&batch, "ls logs\nfrobnicate\nls\n").unwrap();
    let o = run_shell(cli.path(), s, &["-b", batch.to_str().unwrap()], "");
    assert_code(&o, 2, "unknown command 'frobnicate'");
    assert_eq!(stdout(&o), "1\ta.txt\n1\tb.txt\n1\tc.bin\n");
    fs::write(&batch, "ls logs\n").unwrap();
    let o = run_shell(cli.path(), s, &["-b", batch.to_str().unwrap()], "");
    assert_code(&o, 0, "");

    // exit from a script is not asked about (nobody to ask), and stops the server.
    let mut srv = srv;
    let o = run_shell(cli.path(), &srv.addr.clone(), &[], "exit\n");
    assert_code(&o, 0, "the server is exiting");
    assert!(srv.wait_exit(Duration::from_secs(20)).is_some());
}

/// Runs `cmd` on a pseudo-terminal (script(1)), typing `lines` (paced, so each one
/// meets the prompt it answers; typed ahead they would wait in the terminal anyway).
fn in_a_pty(cmd: &str, lines: &[&str]) -> Output {
    let mut c = Command::new("script")
        .args(["-qec", cmd, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = c.stdin.take().unwrap();
    let out = std::thread::spawn(move || c.wait_with_output().unwrap());
    for line in lines {
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.flush().unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    drop(stdin);
    out.join().unwrap()
}

// 7. exit at a terminal asks first (a pseudo-terminal from script(1)).
#[test]
fn f7_exit_at_a_terminal_asks_first() {
    if Command::new("script").arg("--version").output().is_err() {
        panic!("script(1) (util-linux) is needed for this test");
    }
    let root = tempfile::tempdir().unwrap();
    let mut srv = Server::start(root.path(), &["--allow-exit"]);
    let cmd = format!("{UDPFT} shell {}", srv.addr);
    // "exit", declined, then "quit": the server must still be up.
    let o = in_a_pty(&cmd, &["exit\r", "n\r", "quit\r"]);
    let all = format!("{}{}", stdout(&o), stderr(&o));
    assert!(all.contains("stop the server at"), "{all}");
    assert!(all.contains("not stopped"), "{all}");
    assert!(!all.contains("the server is exiting"), "{all}");
    // The server still accepts requests (after an exit it would refuse them at once).
    let o = udpft(root.path(), &["list", &srv.addr]);
    assert_code(&o, 0, "");
    assert!(srv.alive());

    // Confirmed: the server stops.
    let o = in_a_pty(&cmd, &["exit\r", "y\r"]);
    let all = format!("{}{}", stdout(&o), stderr(&o));
    assert!(all.contains("the server is exiting"), "{all}");
    assert!(srv.wait_exit(Duration::from_secs(20)).is_some());
}

// 8. --help describes every argument; usage errors exit 2; contradictions refused.
#[test]
fn f8_command_lines() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    for sub in ["get", "put", "list", "delete", "exit", "shell"] {
        let o = udpft(p, &[sub, "--help"]);
        assert_code(&o, 0, "");
        let h = stdout(&o);
        assert!(
            h.contains("<SERVER>") && h.contains("host[:port]"),
            "{sub}: {h}"
        );
        assert!(h.contains("6969"), "{sub}: {h}");
    }
    let h = stdout(&udpft(p, &["--help"]));
    assert!(h.contains("host[:port]") && h.contains("Exit codes"), "{h}");
    let h = stdout(&udpft(p, &["get", "--help"]));
    // REMOTE is optional on the command line (a tftp:// SERVER may carry it), and
    // required otherwise: its absence is a usage error.
    assert!(h.contains("[REMOTE]") && h.contains("[LOCAL]") && h.contains("ending in '/'"));
    let o = udpft(p, &["get", "127.0.0.1:9"]);
    assert_code(&o, 2, "get needs REMOTE");
    for bad in ["127.0.0.1:70800", "127.0.0.1:0", "[::1", "::1:x"] {
        let o = udpft(p, &["list", bad]);
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", stderr(&o));
    }
    assert_eq!(udpft(p, &[]).status.code(), Some(2));
    for flags in [
        ["--read-only", "--overwrite"],
        ["--read-only", "--allow-delete"],
    ] {
        let o = run(UDPFTD, p, &flags);
        assert_code(&o, 2, "cannot be used with");
    }
    let h = stdout(&run(UDPFTD, p, &["--help"]));
    assert!(h.contains("--listen <ADDR:PORT>") && h.contains("[default: 0.0.0.0:6969]"));
    let o = run(LOSSY, p, &["--listen", "127.0.0.1:0"]);
    assert_code(&o, 2, "--server");
    // Long help: each option's line, then its help on the next line.
    for prog in [UDPFT, UDPFTD, LOSSY] {
        let h = stdout(&run(prog, p, &["--help"]));
        let lines: Vec<&str> = h.lines().collect();
        let mut options = 0;
        for (i, l) in lines.iter().enumerate() {
            if l.starts_with("  -") || l.starts_with("      --") {
                options += 1;
                let next = lines.get(i + 1).map_or("", |n| n.trim());
                assert!(!next.is_empty(), "{prog}: no help for {l:?}");
            }
        }
        assert!(options >= 5, "{prog}: {h}");
    }
    // Man pages and completions from the same definitions.
    for prog in [UDPFT, UDPFTD, LOSSY] {
        let man = stdout(&run(prog, p, &["--generate", "man"]));
        assert!(
            man.contains(".TH") && man.contains(".SH OPTIONS"),
            "{prog}: {man}"
        );
        let bash = stdout(&run(prog, p, &["--generate", "bash"]));
        assert!(bash.contains("complete -F"), "{prog}: {bash}");
    }
}

// 9. --trace lines carry the time since the request, as PROTOCOL.md §9's do.
#[test]
fn f9_trace_lines_are_timed() {
    let root = tempfile::tempdir().unwrap();
    let cli = tempfile::tempdir().unwrap();
    fs::write(root.path().join("t"), content(3000, 9)).unwrap();
    let srv = Server::start(root.path(), &[]);
    let o = udpft(cli.path(), &["--trace", "get", &srv.addr, "t"]);
    assert_code(&o, 0, "request #0 sent");
    let err = stderr(&o);
    let trace: Vec<&str> = err.lines().filter(|l| l.contains("  client: ")).collect();
    assert!(trace.len() >= 5, "{err}");
    let mut last = 0.0;
    for l in &trace {
        let (t, rest) = l.trim_start().split_once(" ms  client: ").expect(l);
        let t: f64 = t.parse().expect(l);
        assert!(t >= last, "time goes forward: {err}");
        assert!(!rest.is_empty());
        last = t;
    }
    assert!(trace[0].ends_with(" ms  client: request #0 sent"), "{err}");
    assert!(err.contains("done received, length 3000"), "{err}");
}

// Second round (the tester's findings on the merged client), numbered as found.

// R1. A LOCAL that is a device, FIFO or socket is refused before anything is sent,
// naming what it is; a symlink is followed to the file it leads to (replaced in its
// own directory), a dangling one refused; a replaced file keeps its permission bits.
#[test]
fn r1_special_files_refused_symlinks_followed_modes_kept() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt, symlink};
    let cli = tempfile::tempdir().unwrap();
    let c = cli.path();
    let quiet = Silent::new();
    let a = quiet.addr();
    let fifo = c.join("fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let _sock = std::os::unix::net::UnixListener::bind(c.join("sock")).unwrap();
    symlink("/dev/null", c.join("to-null")).unwrap();
    symlink(c.join("nowhere"), c.join("dangling")).unwrap();
    let cases: [(&str, &str); 6] = [
        (
            "/dev/null",
            "'/dev/null' is a character device; get stores only in regular files",
        ),
        ("fifo", "'fifo' is a FIFO (named pipe);"),
        ("sock", "'sock' is a socket;"),
        (
            "to-null",
            "'to-null' is a character device (through a symlink);",
        ),
        // stdout is a pipe here.
        (
            "/dev/stdout",
            "'/dev/stdout' is a FIFO (named pipe) (through a symlink)",
        ),
        (
            "dangling",
            "which does not exist; get follows a symlink only to an existing file",
        ),
    ];
    for (local, msg) in cases {
        let o = udpft(c, &["--idle", "60s", "get", &a, "notes.txt", local]);
        assert_code(&o, 1, msg);
        assert_eq!(quiet.received(), 0, "{local}: something was sent");
    }
    assert!(
        fs::metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device()
    );
    assert!(fs::metadata(&fifo).unwrap().file_type().is_fifo());
    assert!(!c.join("nowhere").exists());

    // Against a real server: a symlink's target is replaced, the link stays a link.
    let root = tempfile::tempdir().unwrap();
    fs::write(root.path().join("notes.txt"), b"new notes").unwrap();
    let srv = Server::start(root.path(), &[]);
    let elsewhere = tempfile::tempdir().unwrap();
    let real = elsewhere.path().join("real.txt");
    fs::write(&real, b"old").unwrap();
    fs::set_permissions(&real, fs::Permissions::from_mode(0o600)).unwrap();
    symlink(&real, c.join("link")).unwrap();
    assert_code(&udpft(c, &["get", &srv.addr, "notes.txt", "link"]), 0, "");
    assert!(
        fs::symlink_metadata(c.join("link"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(fs::read(&real).unwrap(), b"new notes");
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&real), 0o600, "the target's mode");
    // A plain file replaced keeps its mode (both temporary file kinds).
    for (named, m) in [("0", 0o600), ("1", 0o640)] {
        let f = c.join("kept.txt");
        fs::write(&f, b"old").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(m)).unwrap();
        let o = Command::new(UDPFT)
            .current_dir(c)
            .env("UDPFT_NAMED_TEMP", named)
            .args(["get", &srv.addr, "notes.txt", "kept.txt"])
            .output()
            .unwrap();
        assert_code(&o, 0, "");
        assert_eq!(fs::read(&f).unwrap(), b"new notes");
        assert_eq!(mode(&f), m, "UDPFT_NAMED_TEMP={named}");
    }
}

// R2. A server that announces no size and sends a listing for ever cannot make the
// client hold more than its limit (64 MiB by default; 4 KiB here).
#[test]
fn r2_a_listing_is_capped() {
    let (addr, h) = fake_server(move |s, to, nonce, op| {
        accept(s, to, nonce, op, udpft::wire::UNKNOWN_SIZE);
        assert!(await_ack(s, 0));
        for seq in 1..=1000u64 {
            data(s, to, seq, &[b'x'; 1024]);
            if !await_ack(s, seq) {
                // Refused (an ERROR) well before the end.
                assert!(seq <= 5, "block {seq} was acknowledged");
                return;
            }
        }
        panic!("the client took 1000 blocks of a listing");
    });
    let opts = ClientOptions {
        max_listing: 4096,
        ..ClientOptions::default()
    };
    let mut c = Client::to(addr.parse().unwrap(), opts);
    let e = c.list(None).unwrap_err();
    h.join().unwrap();
    assert!(
        matches!(e, ClientError::ListingTooLarge { limit: 4096, .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("more than 4096 bytes"), "{e}");
    assert_eq!(udpft::net::client::LISTING_LIMIT, 64 << 20);
}

/// A fake server for many sessions, one at a time: a list gets `listing`, a get gets
/// `body`. Returns the names of the gets it served, once `stop` is set (or after 30 s).
fn listing_server(
    listing: Vec<u8>,
    body: &'static [u8],
) -> (
    String,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    JoinHandle<Vec<String>>,
) {
    use std::sync::atomic::Ordering;
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let addr = s.local_addr().unwrap().to_string();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let h = std::thread::spawn(move || {
        let mut buf = [0u8; 70_000];
        let mut seen = Vec::new();
        let mut got = Vec::new();
        let t = Instant::now();
        while !flag.load(Ordering::Relaxed) && t.elapsed() < Duration::from_secs(30) {
            let Ok((n, from)) = s.recv_from(&mut buf) else {
                continue;
            };
            let Ok(d) = Datagram::parse(&buf[..n]) else {
                continue;
            };
            let Message::Request(r) = d.message else {
                continue;
            };
            if seen.contains(&d.session) {
                continue; // a resent REQUEST of a session already served
            }
            seen.push(d.session);
            let payload: Vec<u8> = match r.op {
                Op::List => listing.clone(),
                Op::Get => {
                    got.push(r.name.to_string());
                    body.to_vec()
                }
                _ => continue,
            };
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            accept(&s, from, d.session, r.op, payload.len() as u64);
            if await_ack(&s, 0) {
                data(&s, from, 1, &payload);
                if await_ack(&s, 1) {
                    done(&s, from, 2, &payload);
                    await_ack(&s, 2);
                }
            }
            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        }
        got
    });
    (addr, stop, h)
}

// R3 and R4. mget checks every local name the server gave before fetching anything:
// names that cannot be files here (control characters, NUL, too long, '.', '..', a
// '/') are refused, named escaped, and the good ones still fetched; the summary
// shows local names escaped; nothing raw reaches the terminal.
#[test]
fn r3_r4_mget_checks_local_names_first() {
    let cli = tempfile::tempdir().unwrap();
    let long = "l".repeat(300);
    let listing = format!(
        "5\tx\\x1b[31m\n5\tnew\\nline\n5\ta\\x00b\n5\t{long}\n5\t.\n5\t..\n5\tsub/evil\n5\tgood\n"
    );
    let (addr, stop, h) = listing_server(listing.into_bytes(), b"EVIL!");
    let o = run_shell(cli.path(), &addr, &[], "mget *\n");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let fetched = h.join().unwrap();
    let err = stderr(&o);
    // Only the good name was asked for; the script stops after mget, which failed.
    assert_eq!(fetched, ["good"], "{err}");
    assert_code(&o, 1, "stopped at line 1 (mget *)");
    assert_eq!(fs::read(cli.path().join("good")).unwrap(), b"EVIL!");
    for (shown, why) in [
        ("x\\x1b[31m", "control or invisible characters"),
        ("new\\nline", "control or invisible characters"),
        ("a\\x00b", "cannot contain NUL"),
        (long.as_str(), "300 bytes, longer than the 255"),
        ("'.'", "names a directory"),
        ("'..'", "names a directory"),
        ("sub/evil", "cannot contain '/'"),
    ] {
        assert!(
            err.lines()
                .any(|l| l.contains("not fetching") && l.contains(shown) && l.contains(why)),
            "{shown}: {err}"
        );
    }
    assert!(!o.stderr.contains(&0x1b), "raw ESC on the terminal: {err}");
    assert!(!o.stdout.contains(&0x1b));
    // Nothing but 'good' was created.
    let made: Vec<_> = fs::read_dir(cli.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(made, ["good"]);
}

// R3. The summary of a get shows the local name escaped.
#[test]
fn r3_summaries_escape_local_names() {
    let root = tempfile::tempdir().unwrap();
    let cli = tempfile::tempdir().unwrap();
    fs::write(root.path().join("n"), b"n").unwrap();
    let srv = Server::start(root.path(), &[]);
    let o = udpft(cli.path(), &["get", &srv.addr, "n", "esc\u{1b}[2Jname"]);
    assert_code(&o, 0, "'n' -> 'esc\\x1b[2Jname'");
    assert!(!o.stderr.contains(&0x1b), "{}", stderr(&o));
    assert_eq!(fs::read(cli.path().join("esc\u{1b}[2Jname")).unwrap(), b"n");
}

// R5. What --help and the messages say matches what the client does.
#[test]
fn r5_help_and_messages_match_behaviour() {
    let root = tempfile::tempdir().unwrap();
    let cli = tempfile::tempdir().unwrap();
    let c = cli.path();
    fs::write(root.path().join("f.txt"), b"f").unwrap();
    let srv = Server::start(root.path(), &[]);
    let h = stdout(&udpft(c, &["--help"]));
    let range = format!(
        "from {} to {}",
        udpft::wire::MIN_BLOCK_SIZE,
        udpft::wire::MAX_BLOCK_SIZE
    );
    assert!(h.contains(&range), "{h}");
    assert!(h.contains("Given alone, without a command"), "{h}");
    assert!(h.contains("the server abandoned the transfer"), "{h}");
    // A missing batch file is reported before the server is contacted.
    let quiet = Silent::new();
    let o = run_shell(c, &quiet.addr(), &["-b", "/nonexistent/batch"], "");
    assert_code(&o, 1, "cannot read the batch file '/nonexistent/batch'");
    assert_eq!(quiet.received(), 0, "the server was contacted");
    // list of a missing path names a directory.
    let o = udpft(c, &["list", &srv.addr, "missing"]);
    assert_code(&o, 3, "server has no directory 'missing'");
    let o = udpft(c, &["list", &srv.addr, "f.txt"]);
    assert_code(&o, 3, "'f.txt' is not a directory");
    // mput of a directory says what it skipped and how to send its files.
    fs::create_dir(c.join("d")).unwrap();
    fs::write(c.join("d/in.txt"), b"in").unwrap();
    let o = run_shell(c, &srv.addr, &[], "mput d\n");
    assert_code(
        &o,
        1,
        "skipping 'd': a directory (mput sends files; 'mput d/*'",
    );
    let o = run_shell(c, &srv.addr, &[], "mput d/*\n");
    assert_code(&o, 0, "");
    assert_eq!(fs::read(root.path().join("in.txt")).unwrap(), b"in");
}

// R5. ERROR 9 (aborted: the server gave up or is shutting down) is exit 4, as no
// answer is: worth trying again, not a refusal.
#[test]
fn r5_a_server_that_aborts_is_exit_4() {
    let cli = tempfile::tempdir().unwrap();
    let (addr, h) = fake_server(|s, to, nonce, op| {
        accept(s, to, nonce, op, 5000);
        assert!(await_ack(s, 0));
        let d = Datagram {
            session: SESSION,
            seq: 1,
            message: Message::Error {
                code: ErrorCode::Aborted,
                message: "shutting down",
            },
        };
        s.send_to(&emit(&d), to).unwrap();
    });
    let o = udpft(cli.path(), &["get", &addr, "f"]);
    h.join().unwrap();
    assert_code(&o, 4, "server: shutting down");
    assert!(!cli.path().join("f").exists());
}
