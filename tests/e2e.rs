//! End-to-end tests: the real `udpftd` and `udpft` binaries over loopback sockets.

use std::fs;
use std::io::{Read, Write};
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use udpft::wire::{Datagram, Message, Op};

mod common;
use common::{Server, UDPFT, content, signal, uploads_open};

/// Runs `udpft` with `args` in `cwd`.
fn udpft(cwd: &Path, args: &[&str]) -> Output {
    Command::new(UDPFT)
        .current_dir(cwd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("udpft runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[track_caller]
fn assert_ok(o: &Output) {
    assert!(
        o.status.success(),
        "expected success, got {:?}\nstdout: {}\nstderr: {}",
        o.status,
        stdout(o),
        stderr(o)
    );
}

#[track_caller]
fn assert_fails(o: &Output, code: i32, message: &str) {
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

/// Names of our temporary files in `dir`.
fn temp_files(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".udpft-") && n.ends_with(".part"))
        .collect()
}

/// Starts `udpft put` of `cli/big` to `server` with small blocks, and returns once the
/// server (process `pid`) holds the upload's temporary file in the served `root` open.
fn start_upload(cli: &Path, server: &str, root: &Path, pid: u32) -> Child {
    let child = Command::new(UDPFT)
        .current_dir(cli)
        .args(["--block-size", "512", "put", server, "big"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while uploads_open(pid, root) == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "upload never started"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child
}

#[test]
fn every_operation_works() {
    let root = tempfile::tempdir().unwrap();
    let cli = tempfile::tempdir().unwrap();
    fs::create_dir(root.path().join("sub")).unwrap();
    let data = content(300_000, 1);
    fs::write(cli.path().join("a.bin"), &data).unwrap();
    let srv = Server::start(root.path(), &["--allow-delete"]);
    let s = srv.addr.as_str();

    // put, REMOTE defaulting to the local name; and into a subdirectory.
    assert_ok(&udpft(cli.path(), &["put", s, "a.bin"]));
    assert_eq!(fs::read(root.path().join("a.bin")).unwrap(), data);
    let o = udpft(cli.path(), &["put", s, "a.bin", "sub/b.bin"]);
    assert_ok(&o);
    assert!(stderr(&o).contains("resends"), "summary: {}", stderr(&o));
    assert_eq!(fs::read(root.path().join("sub/b.bin")).unwrap(), data);

    // get: LOCAL defaults to the remote file name; LOCAL may be a directory or a name.
    let o = udpft(cli.path(), &["-q", "get", s, "sub/b.bin"]);
    assert_ok(&o);
    assert!(o.stderr.is_empty() && o.stdout.is_empty(), "-q is quiet");
    assert_eq!(fs::read(cli.path().join("b.bin")).unwrap(), data);
    fs::create_dir(cli.path().join("d")).unwrap();
    assert_ok(&udpft(cli.path(), &["get", s, "a.bin", "d"]));
    assert_eq!(fs::read(cli.path().join("d/a.bin")).unwrap(), data);
    assert_ok(&udpft(cli.path(), &["get", s, "a.bin", "c.bin"]));
    assert_eq!(fs::read(cli.path().join("c.bin")).unwrap(), data);
    // A successful get replaces an existing local file.
    fs::write(cli.path().join("c.bin"), b"old").unwrap();
    assert_ok(&udpft(cli.path(), &["get", s, "a.bin", "c.bin"]));
    assert_eq!(fs::read(cli.path().join("c.bin")).unwrap(), data);
    // An empty file.
    fs::write(root.path().join("empty"), b"").unwrap();
    assert_ok(&udpft(cli.path(), &["get", s, "empty"]));
    assert_eq!(fs::read(cli.path().join("empty")).unwrap(), b"");

    // list: sorted, sizes, directories marked; the root and a subdirectory.
    let o = udpft(cli.path(), &["list", s]);
    assert_ok(&o);
    assert_eq!(stdout(&o), "300000\ta.bin\n0\tempty\n-\tsub/\n");
    let o = udpft(cli.path(), &["list", s, "sub"]);
    assert_ok(&o);
    assert_eq!(stdout(&o), "300000\tb.bin\n");

    // A listing with many entries (more than one block).
    for i in 0..300 {
        fs::write(root.path().join(format!("sub/f{i:03}")), b"x").unwrap();
    }
    let o = udpft(cli.path(), &["list", s, "sub"]);
    assert_ok(&o);
    assert_eq!(stdout(&o).lines().count(), 301);
    assert!(stdout(&o).contains("1\tf299\n"));

    // delete.
    assert_ok(&udpft(cli.path(), &["delete", s, "sub/b.bin"]));
    assert!(!root.path().join("sub/b.bin").exists());
    let o = udpft(cli.path(), &["get", s, "sub/b.bin", "gone"]);
    assert_fails(&o, 3, "server has no file 'sub/b.bin'");
    assert!(!cli.path().join("gone").exists());
    assert!(temp_files(cli.path()).is_empty());

    let log = srv.log();
    assert!(log.contains("put 'a.bin': 300000 B"), "log: {log}");
    assert!(log.contains("delete 'sub/b.bin'"), "log: {log}");
}

#[test]
fn refusals_reach_the_client_and_the_server_keeps_running() {
    let root = tempfile::tempdir().unwrap();
    let cli = tempfile::tempdir().unwrap();
    fs::write(root.path().join("x"), b"server copy").unwrap();
    fs::write(cli.path().join("x"), b"client copy").unwrap();
    let mut srv = Server::start(root.path(), &[]);
    let addr = srv.addr.clone();
    let s = addr.as_str();

    // Missing remote file: no local file created, an existing one untouched.
    let o = udpft(cli.path(), &["get", s, "a.txt"]);
    assert_fails(&o, 3, "server has no file 'a.txt'");
    assert!(!cli.path().join("a.txt").exists());
    let o = udpft(cli.path(), &["get", s, "a.txt", "x"]);
    assert_fails(&o, 3, "server has no file 'a.txt'");
    assert_eq!(fs::read(cli.path().join("x")).unwrap(), b"client copy");
    assert!(temp_files(cli.path()).is_empty());

    // Missing local file.
    let o = udpft(cli.path(), &["put", s, "nope.txt"]);
    assert_fails(&o, 1, "local file 'nope.txt' does not exist");

    // Overwrite refused by default.
    let o = udpft(cli.path(), &["put", s, "x"]);
    assert_fails(
        &o,
        3,
        "'x' exists and the server does not overwrite (start udpftd with --overwrite)",
    );
    assert_eq!(fs::read(root.path().join("x")).unwrap(), b"server copy");

    // Delete and exit disabled by default.
    let o = udpft(cli.path(), &["delete", s, "x"]);
    assert_fails(
        &o,
        3,
        "delete is disabled on this server (start udpftd with --allow-delete)",
    );
    assert!(root.path().join("x").exists());
    let o = udpft(cli.path(), &["exit", s]);
    assert_fails(
        &o,
        3,
        "exit is disabled on this server (start udpftd with --allow-exit)",
    );

    // A directory is not a file.
    fs::create_dir(root.path().join("dir")).unwrap();
    let o = udpft(cli.path(), &["get", s, "dir", "out"]);
    assert_fails(&o, 3, "is a directory");
    let o = udpft(cli.path(), &["list", s, "x"]);
    assert_fails(&o, 3, "not a directory");

    // Usage errors exit 2.
    let o = udpft(cli.path(), &["get", s]);
    assert_eq!(o.status.code(), Some(2));
    let o = udpft(cli.path(), &["frobnicate", s]);
    assert_eq!(o.status.code(), Some(2));
    let o = udpft(cli.path(), &["--timeout", "soon", "list", s]);
    assert_eq!(o.status.code(), Some(2));

    // Still serving.
    assert!(srv.alive());
    let o = udpft(cli.path(), &["list", s]);
    assert_ok(&o);
    assert_eq!(stdout(&o), "-\tdir/\n11\tx\n");
    let log = srv.log();
    assert!(log.contains("refused (not found)"), "log: {log}");

    // Overwrite allowed.
    let srv2 = Server::start(root.path(), &["--overwrite"]);
    assert_ok(&udpft(cli.path(), &["put", &srv2.addr, "x"]));
    assert_eq!(fs::read(root.path().join("x")).unwrap(), b"client copy");

    // Read-only refuses put and delete (--overwrite and --allow-delete contradict it:
    // tests/client.rs shows they are refused).
    let srv3 = Server::start(root.path(), &["--read-only"]);
    fs::write(cli.path().join("new"), b"n").unwrap();
    let o = udpft(cli.path(), &["put", &srv3.addr, "new"]);
    assert_fails(&o, 3, "read-only");
    assert!(!root.path().join("new").exists());
    let o = udpft(cli.path(), &["delete", &srv3.addr, "x"]);
    assert_fails(&o, 3, "read-only");
    assert!(root.path().join("x").exists());
    // ... but serves gets.
    assert_ok(&udpft(cli.path(), &["get", &srv3.addr, "x", "y"]));
    assert!(temp_files(root.path()).is_empty());
}

#[test]
fn exit_stops_the_server_with_status_zero() {
    let root = tempfile::tempdir().unwrap();
    let cli = tempfile::tempdir().unwrap();
    let mut srv = Server::start(root.path(), &["--allow-exit"]);
    let o = udpft(cli.path(), &["exit", &srv.addr]);
    assert_ok(&o);
    let status = srv
        .wait_exit(Duration::from_secs(10))
        .expect("udpftd exits");
    assert!(status.success(), "{status:?}");

    // From the shell: `exit` asks the server to exit, then leaves the shell.
    let mut srv = Server::start(root.path(), &["--allow-exit"]);
    let o = shell(cli.path(), &srv.addr, "exit\nls\n");
    assert_ok(&o);
    assert!(
        stdout(&o).is_empty(),
        "the shell left at exit: {}",
        stdout(&o)
    );
    let status = srv
        .wait_exit(Duration::from_secs(10))
        .expect("udpftd exits");
    assert!(status.success(), "{status:?}");
}

#[test]
fn sigterm_stops_the_server_with_status_zero() {
    let root = tempfile::tempdir().unwrap();
    let mut srv = Server::start(root.path(), &[]);
    signal(srv.child.id(), "TERM");
    let status = srv
        .wait_exit(Duration::from_secs(10))
        .expect("udpftd exits");
    assert!(status.success(), "{status:?}");
}

#[test]
fn paths_outside_the_root_are_denied() {
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("secret"), b"secret").unwrap();
    let root = tempfile::tempdir().unwrap();
    let cli = tempfile::tempdir().unwrap();
    fs::write(cli.path().join("f"), b"payload").unwrap();
    std::os::unix::fs::symlink(outside.path(), root.path().join("out")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret"), root.path().join("s")).unwrap();
    let srv = Server::start(root.path(), &["--allow-delete", "--overwrite"]);
    let s = srv.addr.as_str();
    let secret = outside.path().join("secret");
    let secret = secret.to_str().unwrap();
    let dotdot = format!(
        "../{}/secret",
        outside.path().file_name().unwrap().to_str().unwrap()
    );

    for name in [dotdot.as_str(), secret, "out/secret", "s", "sub/../../x"] {
        let o = udpft(cli.path(), &["get", s, name, "got"]);
        assert_fails(&o, 3, "access denied");
        assert!(!cli.path().join("got").exists());
        let o = udpft(cli.path(), &["put", s, "f", name]);
        assert_fails(&o, 3, "access denied");
        let o = udpft(cli.path(), &["delete", s, name]);
        assert_fails(&o, 3, "access denied");
    }
    for dir in ["..", "/", "out", "out/", "/etc"] {
        let o = udpft(cli.path(), &["list", s, dir]);
        assert_fails(&o, 3, "access denied");
        assert!(o.stdout.is_empty());
    }
    let o = udpft(cli.path(), &["put", s, "f", "out/new"]);
    assert_fails(&o, 3, "access denied");
    assert_eq!(fs::read(outside.path().join("secret")).unwrap(), b"secret");
    assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 1);
    // Inside the root still works.
    assert_ok(&udpft(cli.path(), &["put", s, "f", "ok"]));
}

/// A valid REQUEST datagram, as a client would send it.
fn request_bytes(op: Op, name: &str, nonce: u64) -> Vec<u8> {
    common::request_bytes(op, name, nonce, 1408, None)
}

/// A REQUEST carrying the token of the server's RETRY.
fn request_with(op: Op, name: &str, nonce: u64, token: Option<udpft::wire::Token>) -> Vec<u8> {
    common::request_bytes(op, name, nonce, 1408, token)
}

#[test]
fn garbage_never_stops_the_server() {
    let root = tempfile::tempdir().unwrap();
    let cli = tempfile::tempdir().unwrap();
    let data = content(100_000, 7);
    fs::write(root.path().join("a"), &data).unwrap();
    let mut srv = Server::start(root.path(), &[]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(&srv.addr).unwrap();
    let valid = request_bytes(Op::Get, "a", 0x1234_5678);
    let mut seed = 99u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..3000 {
        let packet: Vec<u8> = match i % 4 {
            // Random bytes of random length.
            0 => (0..(next() % 1500) as usize)
                .map(|_| next() as u8)
                .collect(),
            // Truncated valid datagram.
            1 => valid[..(next() as usize % valid.len())].to_vec(),
            // One bit flipped.
            2 => {
                let mut p = valid.clone();
                let bit = next() as usize % (p.len() * 8);
                p[bit / 8] ^= 1 << (bit % 8);
                p
            }
            // Random bytes after a valid-looking magic and version.
            _ => {
                let mut p: Vec<u8> = (0..64).map(|_| next() as u8).collect();
                p[0] = 0x55;
                p[1] = 0x46;
                p[2] = 1;
                p
            }
        };
        let _ = sock.send(&packet);
    }
    // Nothing answers garbage.
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 2048];
    assert!(sock.recv(&mut buf).is_err(), "garbage was answered");
    assert!(srv.alive());
    let o = udpft(cli.path(), &["get", &srv.addr, "a"]);
    assert_ok(&o);
    assert_eq!(fs::read(cli.path().join("a")).unwrap(), data);
}

#[test]
fn many_clients_at_once() {
    let root = tempfile::tempdir().unwrap();
    let cli = tempfile::tempdir().unwrap();
    let srv = Server::start(root.path(), &[]);
    let n = 20;
    let mut expected = Vec::new();
    for i in 0..n {
        let data = content(200_000 + i * 7919, i as u64 + 100);
        if i % 2 == 0 {
            fs::write(root.path().join(format!("g{i}")), &data).unwrap();
        } else {
            fs::write(cli.path().join(format!("p{i}")), &data).unwrap();
        }
        expected.push(data);
    }
    let children: Vec<Child> = (0..n)
        .map(|i| {
            let mut c = Command::new(UDPFT);
            c.current_dir(cli.path()).arg("-q");
            if i % 2 == 0 {
                c.args(["get", &srv.addr, &format!("g{i}")]);
            } else {
                c.args(["put", &srv.addr, &format!("p{i}")]);
            }
            c.stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert_ok(&o);
    }
    for (i, data) in expected.iter().enumerate() {
        let got = if i % 2 == 0 {
            fs::read(cli.path().join(format!("g{i}"))).unwrap()
        } else {
            fs::read(root.path().join(format!("p{i}"))).unwrap()
        };
        assert!(got == *data, "file {i} differs");
    }
}

#[test]
fn killed_upload_leaves_no_file() {
    let root = tempfile::tempdir().unwrap();
    let cli = tempfile::tempdir().unwrap();
    let big = cli.path().join("big");
    {
        let mut f = std::io::BufWriter::new(fs::File::create(&big).unwrap());
        for i in 0..64 {
            f.write_all(&content(1 << 20, i)).unwrap();
        }
    }
    let srv = Server::start(
        root.path(),
        &["--idle", "1s", "--timeout", "200ms", "--max-sessions", "1"],
    );
    let mut child = start_upload(cli.path(), &srv.addr, root.path(), srv.child.id());
    std::thread::sleep(Duration::from_millis(300));
    // With --max-sessions 1, another client is told the server is busy.
    let o = udpft(cli.path(), &["list", &srv.addr]);
    assert_fails(&o, 3, "busy");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!root.path().join("big").exists());
    assert_eq!(uploads_open(srv.child.id(), root.path()), 1);
    assert!(temp_files(root.path()).is_empty());
    // After the server's idle timeout, the temporary file is gone too.
    let t = Instant::now();
    while uploads_open(srv.child.id(), root.path()) > 0 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "temporary file still open"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!root.path().join("big").exists());
    assert_eq!(fs::read_dir(root.path()).unwrap().count(), 0);
    // The log line follows the file's removal by a moment.
    let t = Instant::now();
    while !(srv.log().contains("put 'big'") && srv.log().contains("failed")) {
        assert!(t.elapsed() < Duration::from_secs(20), "log: {}", srv.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ipv6_loopback() {
    let root = tempfile::tempdir().unwrap();
    let cli = tempfile::tempdir().unwrap();
    let srv = Server::start_on("[::1]:0", root.path(), &[]);
    assert!(srv.addr.starts_with("[::1]:"), "{}", srv.addr);
    let data = content(50_000, 3);
    fs::write(cli.path().join("v6"), &data).unwrap();
    assert_ok(&udpft(cli.path(), &["put", &srv.addr, "v6"]));
    assert_ok(&udpft(cli.path(), &["get", &srv.addr, "v6", "back"]));
    assert_eq!(fs::read(cli.path().join("back")).unwrap(), data);
    let o = udpft(cli.path(), &["list", &srv.addr]);
    assert_eq!(stdout(&o), "50000\tv6\n");
}

fn shell(cwd: &Path, server: &str, input: &str) -> Output {
    let mut c = Command::new(UDPFT)
        .current_dir(cwd)
        .args(["shell", server])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    c.wait_with_output().unwrap()
}

#[test]
fn shell_from_stdin() {
    let root = tempfile::tempdir().unwrap();
    let cli = tempfile::tempdir().unwrap();
    let data = content(70_000, 5);
    fs::write(cli.path().join("s.bin"), &data).unwrap();
    let srv = Server::start(root.path(), &[]);
    // A leading '-' lets a command fail without ending the script.
    let input = "ls\n\
                 put s.bin\n\
                 -frobnicate now\n\
                 -get\n\
                 -get missing\n\
                 get s.bin back.bin\n\
                 help\n\
                 ls\n\
                 quit\n\
                 ls\n";
    let o = shell(cli.path(), &srv.addr, input);
    assert_ok(&o);
    let out = stdout(&o);
    let err = stderr(&o);
    assert!(err.contains("unknown command 'frobnicate'"), "{err}");
    assert!(err.contains("usage: get REMOTE [LOCAL]"), "{err}");
    assert!(err.contains("server has no file 'missing'"), "{err}");
    assert!(out.contains("put LOCAL [REMOTE]"), "help: {out}");
    // One listing line from the second ls; the first was empty, the third never ran.
    assert_eq!(out.matches("70000\ts.bin\n").count(), 1, "{out}");
    assert_eq!(fs::read(root.path().join("s.bin")).unwrap(), data);
    assert_eq!(fs::read(cli.path().join("back.bin")).unwrap(), data);

    // End of input leaves too.
    let o = shell(cli.path(), &srv.addr, "ls\n");
    assert_ok(&o);
    assert_eq!(stdout(&o), "70000\ts.bin\n");
}

#[test]
fn no_answer_is_reported() {
    let cli = tempfile::tempdir().unwrap();
    // A socket that never answers (nothing listening is tests/client.rs's business).
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let server = silent.local_addr().unwrap().to_string();
    let t = Instant::now();
    let o = udpft(
        cli.path(),
        &["--timeout", "200ms", "--idle", "1s", "get", &server, "x"],
    );
    assert!(t.elapsed() < Duration::from_secs(10));
    assert_fails(&o, 4, &format!("no answer from {server} for "));
    assert!(!cli.path().join("x").exists());
    assert!(temp_files(cli.path()).is_empty());
    // And a put of a missing server, too.
    fs::write(cli.path().join("p"), b"p").unwrap();
    let o = udpft(
        cli.path(),
        &["--timeout", "100ms", "--idle", "500ms", "put", &server, "p"],
    );
    assert_fails(&o, 4, &format!("no answer from {server} for "));
}

/// Length and CRC32 of a file, read in chunks.
fn digest(path: &Path) -> (u64, u32) {
    let mut f = fs::File::open(path).unwrap();
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf).unwrap();
        if k == 0 {
            return (n, h.finalize());
        }
        n += k as u64;
        h.update(&buf[..k]);
    }
}

fn vm_hwm_kib(pid: u32) -> u64 {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = s.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn large_file_streams_in_bounded_memory() {
    const SIZE: u64 = 256 << 20;
    let root = tempfile::tempdir().unwrap();
    let cli = tempfile::tempdir().unwrap();
    let src = cli.path().join("large");
    {
        let mut f = std::io::BufWriter::new(fs::File::create(&src).unwrap());
        let block = content(1 << 20, 11);
        for i in 0..(SIZE >> 20) {
            f.write_all(&(i as u32).to_le_bytes()).unwrap();
            f.write_all(&block[4..]).unwrap();
        }
    }
    let want = digest(&src);
    assert_eq!(want.0, SIZE);
    let srv = Server::start(root.path(), &[]);
    let t = Instant::now();
    let o = udpft(
        cli.path(),
        &["--block-size", "65000", "put", &srv.addr, "large"],
    );
    assert_ok(&o);
    eprintln!("put: {}", stderr(&o).trim());
    assert_eq!(digest(&root.path().join("large")), want);
    let o = udpft(
        cli.path(),
        &["--block-size", "65000", "get", &srv.addr, "large", "back"],
    );
    assert_ok(&o);
    eprintln!("get: {}", stderr(&o).trim());
    assert_eq!(digest(&cli.path().join("back")), want);
    let hwm = vm_hwm_kib(srv.child.id());
    eprintln!(
        "256 MiB put + get in {:.1} s; udpftd peak memory (VmHWM): {hwm} KiB",
        t.elapsed().as_secs_f64()
    );
    assert!(hwm < 64 * 1024, "udpftd used {hwm} KiB");
}

#[test]
fn sigterm_aborts_transfers_after_the_grace_time() {
    let root = tempfile::tempdir().unwrap();
    let cli = tempfile::tempdir().unwrap();
    {
        let mut f = std::io::BufWriter::new(fs::File::create(cli.path().join("big")).unwrap());
        for i in 0..64 {
            f.write_all(&content(1 << 20, i)).unwrap();
        }
    }
    let mut srv = Server::start(root.path(), &["--grace", "300ms"]);
    let child = start_upload(cli.path(), &srv.addr, root.path(), srv.child.id());
    signal(srv.child.id(), "TERM");
    let status = srv
        .wait_exit(Duration::from_secs(10))
        .expect("udpftd exits");
    assert!(status.success(), "{status:?}");
    // The client was told (an ERROR 9), rather than left to time out; a server that
    // abandons a transfer is exit 4, as no answer is (README, exit codes).
    let o = child.wait_with_output().unwrap();
    assert_fails(&o, 4, "shutting down");
    assert!(!root.path().join("big").exists());
    assert!(temp_files(root.path()).is_empty());
    let log = srv.log();
    assert!(log.contains("stopping"), "log: {log}");
}

#[test]
fn hostile_requests_get_small_errors() {
    let root = tempfile::tempdir().unwrap();
    let cli = tempfile::tempdir().unwrap();
    fs::write(root.path().join("a"), b"aaa").unwrap();
    let mut srv = Server::start(root.path(), &[]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(&srv.addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = vec![0u8; 70_000];
    let long = format!("{}x", "x/".repeat(399));
    let cases: [(Op, &str, udpft::wire::ErrorCode); 6] = [
        (Op::Get, "", udpft::wire::ErrorCode::BadRequest),
        (Op::Get, "a\0b", udpft::wire::ErrorCode::BadRequest),
        (
            Op::Put,
            "../../etc/passwd",
            udpft::wire::ErrorCode::AccessDenied,
        ),
        (Op::List, "/", udpft::wire::ErrorCode::AccessDenied),
        (Op::Delete, "a", udpft::wire::ErrorCode::NotAllowed),
        (Op::Get, long.as_str(), udpft::wire::ErrorCode::NotFound),
    ];
    for (i, (op, name, code)) in cases.iter().enumerate() {
        let nonce = 0xABC0 + i as u64;
        let req = request_bytes(*op, name, nonce);
        sock.send(&req).unwrap();
        let n = sock
            .recv(&mut buf)
            .expect("an answer to a well-formed request");
        // Anti-amplification: never more bytes back than the request had.
        assert!(n <= req.len(), "{n} > {}", req.len());
        let mut d = Datagram::parse(&buf[..n]).unwrap();
        // The address check first (a refusal by policy needs none), then the answer.
        if let Message::Retry(token) = d.message {
            assert_eq!(d.session, nonce);
            sock.send(&request_with(*op, name, nonce, Some(token)))
                .unwrap();
            let n = sock
                .recv(&mut buf)
                .expect("an answer once the address is proven");
            d = Datagram::parse(&buf[..n]).unwrap();
        }
        assert_eq!(d.session, nonce);
        match d.message {
            Message::Error { code: got, .. } => assert_eq!(got, *code, "case {i}"),
            m => panic!("case {i}: expected an ERROR, got {m:?}"),
        }
    }
    // A valid but unrouted ACK, and a DATA for a session that does not exist: silence.
    for message in [Message::Ack, Message::Data(b"zzz")] {
        let d = Datagram {
            session: 77,
            seq: 1,
            message,
        };
        let mut out = vec![0u8; d.wire_len()];
        let n = d.emit(&mut out).unwrap();
        sock.send(&out[..n]).unwrap();
    }
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(
        sock.recv(&mut buf).is_err(),
        "an unrouted datagram was answered"
    );
    assert!(srv.alive());
    assert_ok(&udpft(cli.path(), &["get", &srv.addr, "a"]));
    assert_eq!(fs::read(cli.path().join("a")).unwrap(), b"aaa");
}

#[test]
fn ctrl_c_abandons_an_upload_and_tells_the_server() {
    let root = tempfile::tempdir().unwrap();
    let cli = tempfile::tempdir().unwrap();
    {
        let mut f = std::io::BufWriter::new(fs::File::create(cli.path().join("big")).unwrap());
        for i in 0..64 {
            f.write_all(&content(1 << 20, i)).unwrap();
        }
    }
    // A long idle timeout: the temporary file must go because the client said so.
    let srv = Server::start(root.path(), &["--idle", "60s"]);
    let child = start_upload(cli.path(), &srv.addr, root.path(), srv.child.id());
    signal(child.id(), "INT");
    let o = child.wait_with_output().unwrap();
    assert_fails(&o, 130, "interrupted");
    let t = Instant::now();
    while uploads_open(srv.child.id(), root.path()) > 0 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the server was not told"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!root.path().join("big").exists());
    // The log line follows the file's removal by a moment.
    let t = Instant::now();
    while !srv.log().contains("interrupted by the user") {
        assert!(t.elapsed() < Duration::from_secs(20), "log: {}", srv.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A 200,000-entry directory is listed by four clients at once while a fifth client
/// fetches a file: every listing is complete and sorted, the get succeeds, and the
/// server's peak memory stays under 20 MiB (listings stream from the IO workers in
/// bounded memory; PROTOCOL.md §3.9).
#[test]
fn a_200000_entry_listing_streams_in_bounded_memory_beside_other_transfers() {
    const ENTRIES: usize = 200_000;
    let root = tempfile::tempdir().unwrap();
    let cli = tempfile::tempdir().unwrap();
    let big = root.path().join("big");
    fs::create_dir(&big).unwrap();
    for i in 0..ENTRIES {
        fs::File::create(big.join(format!("entry-{i:06}"))).unwrap();
    }
    let data = content(4 << 20, 5);
    fs::write(root.path().join("other.bin"), &data).unwrap();
    let srv = Server::start(root.path(), &[]);
    let lists: Vec<_> = (0..4)
        .map(|_| {
            let (c, a) = (cli.path().to_path_buf(), srv.addr.clone());
            std::thread::spawn(move || udpft(&c, &["list", &a, "big"]))
        })
        .collect();
    let o = udpft(cli.path(), &["get", &srv.addr, "other.bin", "other.bin"]);
    assert_ok(&o);
    assert!(fs::read(cli.path().join("other.bin")).unwrap() == data);
    for l in lists {
        let o = l.join().unwrap();
        assert_ok(&o);
        let out = String::from_utf8(o.stdout).unwrap();
        let names: Vec<&str> = out
            .lines()
            .map(|l| l.strip_prefix("0\t").expect("an empty file's line"))
            .collect();
        assert_eq!(names.len(), ENTRIES);
        assert!(
            names.windows(2).all(|w| w[0] < w[1]),
            "sorted by the client"
        );
        assert_eq!(names[0], "entry-000000");
        assert_eq!(names[ENTRIES - 1], format!("entry-{:06}", ENTRIES - 1));
    }
    let hwm = vm_hwm_kib(srv.child.id());
    eprintln!("udpftd peak memory (VmHWM) over four 200,000-entry listings and a get: {hwm} KiB");
    assert!(hwm < 20 * 1024, "udpftd used {hwm} KiB");
}
