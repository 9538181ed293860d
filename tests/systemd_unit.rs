//! contrib/systemd/udpftd.service is a valid unit (systemd-analyze verify finds nothing
//! to say about it, with ExecStart pointed at the built binary), and every option its
//! ExecStart gives udpftd exists. (Running it under systemd needs systemd as PID 1,
//! which the test machines do not have: not tested here.)

use std::process::Command;

const UNIT: &str = include_str!("../contrib/systemd/udpftd.service");

#[test]
fn the_systemd_unit_verifies_and_its_command_line_is_udpftds() {
    let dir = tempfile::tempdir().unwrap();
    let unit = UNIT.replace("/usr/local/bin/udpftd", env!("CARGO_BIN_EXE_udpftd"));
    let path = dir.path().join("udpftd.service");
    std::fs::write(&path, unit).unwrap();
    let o = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze is needed for this test: apt-get install -y systemd");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success() && said.trim().is_empty(), "{said}");

    let exec = UNIT
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart line");
    let help = Command::new(env!("CARGO_BIN_EXE_udpftd"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let flags: Vec<&str> = exec
        .split_whitespace()
        .filter(|w| w.starts_with("--"))
        .collect();
    assert!(flags.contains(&"--user"), "the service drops root: {exec}");
    for f in flags {
        assert!(help.contains(&format!("{f} ")), "udpftd has no {f}");
    }
}
