//! `udpft` speaking TFTP to `udpftd` (both real binaries, loopback): get and put in
//! both modes, the URL forms, the commands TFTP has not refused before anything is
//! sent, a server's error shown with its TFTP code, and a refused download leaving no
//! file. Stock TFTP tools are in tests/tftp_interop.rs.

mod common;

use std::fs;
use std::process::{Command, Output};

use common::{Server, UDPFT, content};

fn udpft(args: &[&str]) -> Output {
    Command::new(UDPFT).args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn udpft_gets_and_puts_through_tftp_against_udpftd() {
    let root = tempfile::tempdir().unwrap();
    let local = tempfile::tempdir().unwrap();
    let srv = Server::start(root.path(), &[]);
    let url = format!("tftp://{}", srv.addr);
    for (i, size) in [0usize, 1, 1407, 1408, 1409, 200_000]
        .into_iter()
        .enumerate()
    {
        let data = content(size, i as u64);
        let name = format!("f{i}");
        fs::write(root.path().join(&name), &data).unwrap();
        let dst = local.path().join(&name);
        let o = udpft(&["get", &url, &name, dst.to_str().unwrap()]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(fs::read(&dst).unwrap(), data, "get of {size} B");
        // The summary line, as for udpft.
        assert!(
            stderr(&o).contains(&format!("({size} B)")),
            "{}",
            stderr(&o)
        );
        let up = format!("up{i}");
        let o = udpft(&[
            "put",
            &url,
            dst.to_str().unwrap(),
            &up,
            "--block-size",
            "512",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(
            fs::read(root.path().join(&up)).unwrap(),
            data,
            "put of {size} B"
        );
    }
    // The REMOTE in the URL; LOCAL after it.
    fs::write(root.path().join("pxelinux.0"), b"boot").unwrap();
    let dst = local.path().join("boot.bin");
    let o = udpft(&[
        "get",
        &format!("{url}/pxelinux.0"),
        dst.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(fs::read(&dst).unwrap(), b"boot");
    // Netascii both ways: the text arrives as it was.
    let text = b"one\ntwo\r\nthree\rfour\n\r".to_vec();
    let src = local.path().join("t.txt");
    fs::write(&src, &text).unwrap();
    let o = udpft(&[
        "put",
        &url,
        src.to_str().unwrap(),
        "t.txt",
        "--tftp-mode",
        "netascii",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(fs::read(root.path().join("t.txt")).unwrap(), text);
    let back = local.path().join("back.txt");
    let o = udpft(&[
        "get",
        &url,
        "t.txt",
        back.to_str().unwrap(),
        "--tftp-mode",
        "netascii",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(fs::read(&back).unwrap(), text);
    let log = srv.log();
    assert!(
        log.contains("tftp put 't.txt' (netascii, blksize 1408)"),
        "{log}"
    );
}

#[test]
fn what_tftp_lacks_is_refused_before_sending_and_errors_name_their_code() {
    let root = tempfile::tempdir().unwrap();
    let local = tempfile::tempdir().unwrap();
    let srv = Server::start(root.path(), &[]);
    let url = format!("tftp://{}", srv.addr);
    for args in [
        vec!["list", url.as_str()],
        vec!["delete", url.as_str(), "x"],
        vec!["exit", url.as_str()],
    ] {
        let o = udpft(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("TFTP has no"), "{}", stderr(&o));
    }
    let dst = local.path().join("x");
    let o = udpft(&["get", &url, "missing", dst.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("TFTP error 1 (file not found)")
            && stderr(&o).contains("server has no file 'missing'"),
        "{}",
        stderr(&o)
    );
    assert!(!dst.exists(), "a refused get left a file");
    fs::write(root.path().join("exists"), b"keep").unwrap();
    let o = udpft(&[
        "put",
        &url,
        dst.with_file_name("y").to_str().unwrap(),
        "exists",
    ]);
    assert_ne!(o.status.code(), Some(0));
    fs::write(local.path().join("y"), b"new").unwrap();
    let o = udpft(&[
        "put",
        &url,
        local.path().join("y").to_str().unwrap(),
        "exists",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("TFTP error 6"), "{}", stderr(&o));
    assert_eq!(fs::read(root.path().join("exists")).unwrap(), b"keep");
    // A malformed URL is a usage error.
    let o = udpft(&["get", "tftp://", "x"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// IPv6: `tftp://[::1]:PORT` against udpftd listening on [::1], both ways, and the
/// transfer's own port on the same address.
#[test]
fn tftp_over_ipv6() {
    let root = tempfile::tempdir().unwrap();
    let local = tempfile::tempdir().unwrap();
    let srv = Server::start_on("[::1]:0", root.path(), &[]);
    assert!(srv.addr.starts_with("[::1]:"), "{}", srv.addr);
    let url = format!("tftp://{}", srv.addr);
    let data = content(70_000, 6);
    fs::write(root.path().join("f"), &data).unwrap();
    let dst = local.path().join("f");
    let o = udpft(&["get", &url, "f", dst.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(fs::read(&dst).unwrap(), data);
    let o = udpft(&["put", &url, dst.to_str().unwrap(), "g"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(fs::read(root.path().join("g")).unwrap(), data);
    assert!(srv.log().contains("[::1]:"), "{}", srv.log());
}
