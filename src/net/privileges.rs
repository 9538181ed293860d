//! Dropping root after binding (`udpftd --user NAME`): a server can bind a low port
//! (TFTP's 69) and still never move data as root.

use std::io;

use rustix::process::{Gid, Uid};

/// A user to become: its ids, as `/etc/passwd` gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
}

/// Finds `name` in `passwd` text (`/etc/passwd` format), or reads `UID[:GID]`.
pub fn lookup_in(passwd: &str, name: &str) -> Option<User> {
    if let Some((u, g)) = name.split_once(':')
        && let (Ok(uid), Ok(gid)) = (u.parse(), g.parse())
    {
        return Some(User { uid, gid });
    }
    if let Ok(uid) = name.parse::<u32>() {
        return Some(User { uid, gid: uid });
    }
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        match f[..] {
            [n, _, uid, gid, ..] if n == name => Some(User {
                uid: uid.parse().ok()?,
                gid: gid.parse().ok()?,
            }),
            _ => None,
        }
    })
}

/// How many threads this process has (from /proc).
fn threads() -> Option<usize> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
}

/// Becomes `name` (a user in /etc/passwd, or `UID[:GID]`) for good: no supplementary
/// groups, then the group, then the user, real, effective and saved alike; checks
/// that root cannot be regained.
///
/// Must run while the process has one thread: Linux changes ids per thread (the
/// system calls used here are the kernel's, not libc's process-wide wrappers), so a
/// thread started before would keep root. It refuses otherwise.
pub fn become_user(name: &str) -> io::Result<User> {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let user = lookup_in(&passwd, name).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("--user: no user '{name}' in /etc/passwd (give a name, or UID[:GID])"),
        )
    })?;
    if threads() != Some(1) {
        return Err(io::Error::other(
            "--user: the server already runs threads; privileges must be dropped before",
        ));
    }
    let (uid, gid) = (Uid::from_raw(user.uid), Gid::from_raw(user.gid));
    let denied = |what: &str, e: rustix::io::Errno| {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "--user {name}: cannot {what}: {e} (only root can change user; run udpftd as root, or leave out --user)"
            ),
        )
    };
    rustix::thread::set_thread_groups(&[])
        .map_err(|e| denied("drop the supplementary groups", e))?;
    rustix::thread::set_thread_res_gid(gid, gid, gid).map_err(|e| denied("change group", e))?;
    rustix::thread::set_thread_res_uid(uid, uid, uid).map_err(|e| denied("change user", e))?;
    if user.uid != 0 && rustix::thread::set_thread_res_uid(Uid::ROOT, Uid::ROOT, Uid::ROOT).is_ok()
    {
        return Err(io::Error::other(
            "--user: root could be regained; refusing to serve",
        ));
    }
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_looked_up_by_name_or_number() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
        assert_eq!(
            lookup_in(passwd, "nobody"),
            Some(User {
                uid: 65534,
                gid: 65534
            })
        );
        assert_eq!(
            lookup_in(passwd, "1000:100"),
            Some(User {
                uid: 1000,
                gid: 100
            })
        );
        assert_eq!(
            lookup_in(passwd, "1000"),
            Some(User {
                uid: 1000,
                gid: 1000
            })
        );
        assert_eq!(lookup_in(passwd, "nosuch"), None);
    }
}
