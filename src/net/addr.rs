//! Server addresses: `host[:port]`, with the default port 6969.
//!
//! Accepted forms: `example.org`, `example.org:7000`, `192.0.2.1`, `192.0.2.1:7000`,
//! `[::1]`, `[::1]:7000`, and a bare IPv6 address such as `::1` (no port possible).

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use super::DEFAULT_PORT;

/// Splits `s` into host and port, without resolving. The host loses its brackets.
pub fn split_host_port(s: &str) -> Result<(String, u16), String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty server address".into());
    }
    if let Some(rest) = s.strip_prefix('[') {
        let Some(end) = rest.find(']') else {
            return Err(format!("'{s}': missing ']' after the IPv6 address"));
        };
        let host = &rest[..end];
        let tail = &rest[end + 1..];
        let port = match tail {
            "" => DEFAULT_PORT,
            t => match t.strip_prefix(':') {
                Some(p) => parse_port(s, p)?,
                None => return Err(format!("'{s}': expected ':PORT' after ']'")),
            },
        };
        return Ok((host.to_string(), port));
    }
    if s.parse::<IpAddr>().is_ok() {
        // A bare address, IPv6 included (`::1`): there is no port to split off.
        return Ok((s.to_string(), DEFAULT_PORT));
    }
    match s.rsplit_once(':') {
        Some((host, _)) if host.contains(':') => Err(format!(
            "'{s}': write an IPv6 address with a port in brackets, like [::1]:6969"
        )),
        Some((host, port)) if !host.is_empty() => Ok((host.to_string(), parse_port(s, port)?)),
        Some(_) => Err(format!("'{s}': missing host")),
        None => Ok((s.to_string(), DEFAULT_PORT)),
    }
}

fn parse_port(whole: &str, p: &str) -> Result<u16, String> {
    p.parse::<u16>()
        .map_err(|_| format!("'{whole}': '{p}' is not a port number (0-65535)"))
}

/// A server address as a client names it: `host[:port]` as [`split_host_port`] reads
/// it, and a port a server can listen on (not 0).
pub fn parse_server(s: &str) -> Result<(String, u16), String> {
    let (host, port) = split_host_port(s)?;
    if port == 0 {
        return Err(format!(
            "'{}': port 0 is no server's port (the default is {DEFAULT_PORT})",
            s.trim()
        ));
    }
    Ok((host, port))
}

/// Resolves `host[:port]` to one socket address (the first the resolver gives).
pub fn resolve(s: &str) -> io::Result<SocketAddr> {
    let (host, port) =
        split_host_port(s).map_err(|m| io::Error::new(io::ErrorKind::InvalidInput, m))?;
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let mut addrs = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot resolve '{host}': {e}")))?;
    addrs
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("'{host}' has no address")))
}

/// The TFTP port (RFC 1350), the default of a `tftp://` address.
pub const TFTP_PORT: u16 = 69;

/// A server written as a TFTP URL: `tftp://HOST[:PORT][/PATH]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TftpUrl {
    /// The host, without brackets.
    pub host: String,
    /// The port: 69 unless given.
    pub port: u16,
    /// The path after the host, percent-decoded, without its leading `/`; `None` if
    /// there is none (or it is empty).
    pub path: Option<String>,
}

/// Reads `s` as a TFTP URL: `None` if it does not start with `tftp://` (any case),
/// otherwise the address or why it is not one. The host is a name, an IPv4 address or
/// an IPv6 address in brackets (`tftp://[::1]:6969`); `%XX` in the path is decoded.
pub fn parse_tftp_url(s: &str) -> Option<Result<TftpUrl, String>> {
    let t = s.trim();
    let rest = t
        .get(..7)
        .filter(|p| p.eq_ignore_ascii_case("tftp://"))
        .map(|_| &t[7..])?;
    Some(tftp_url(t, rest))
}

fn tftp_url(whole: &str, rest: &str) -> Result<TftpUrl, String> {
    // The authority ends at the first '/' (an IPv6 address has none).
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    if authority.is_empty() {
        return Err(format!("'{whole}': missing host after tftp://"));
    }
    let explicit_port = if authority.starts_with('[') {
        authority.contains("]:")
    } else {
        authority.parse::<IpAddr>().is_err() && authority.contains(':')
    };
    let (host, port) = split_host_port(authority).map_err(|e| format!("'{whole}': {e}"))?;
    let port = if explicit_port { port } else { TFTP_PORT };
    if port == 0 {
        return Err(format!(
            "'{whole}': port 0 is no server's port (TFTP's is 69)"
        ));
    }
    let path = match path.filter(|p| !p.is_empty()) {
        None => None,
        Some(p) => Some(percent_decode(p).ok_or_else(|| {
            format!("'{whole}': the path has a bad %-escape or is not UTF-8 once decoded")
        })?),
    };
    Ok(TftpUrl { host, port, path })
}

/// `%XX` decoded; `None` for a bad escape or a result that is not UTF-8.
fn percent_decode(p: &str) -> Option<String> {
    let b = p.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = p.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let ok = |s: &str| split_host_port(s).unwrap();
        assert_eq!(ok("host"), ("host".into(), 6969));
        assert_eq!(ok("host:7000"), ("host".into(), 7000));
        assert_eq!(ok("10.0.0.1"), ("10.0.0.1".into(), 6969));
        assert_eq!(ok("10.0.0.1:1"), ("10.0.0.1".into(), 1));
        assert_eq!(ok("[::1]"), ("::1".into(), 6969));
        assert_eq!(ok("[::1]:7000"), ("::1".into(), 7000));
        assert_eq!(ok("::1"), ("::1".into(), 6969));
        assert!(split_host_port("host:x").is_err());
        assert!(split_host_port("host:70000").is_err());
        assert!(split_host_port("[::1").is_err());
        assert!(split_host_port("fe80::1:zz").is_err());
        assert!(split_host_port("").is_err());
        assert_eq!(parse_server("[::1]:7").unwrap(), ("::1".into(), 7));
        assert!(parse_server("127.0.0.1:0").unwrap_err().contains("port 0"));
        assert!(
            parse_server("127.0.0.1:70800")
                .unwrap_err()
                .contains("70800")
        );
    }

    #[test]
    fn tftp_urls() {
        let ok = |s: &str| parse_tftp_url(s).unwrap().unwrap();
        let url = |h: &str, p: u16, path: Option<&str>| TftpUrl {
            host: h.into(),
            port: p,
            path: path.map(String::from),
        };
        assert_eq!(ok("tftp://10.0.0.5"), url("10.0.0.5", 69, None));
        assert_eq!(ok("TFTP://10.0.0.5/"), url("10.0.0.5", 69, None));
        assert_eq!(
            ok("tftp://10.0.0.5/pxelinux.0"),
            url("10.0.0.5", 69, Some("pxelinux.0"))
        );
        assert_eq!(ok("tftp://[::1]:6969"), url("::1", 6969, None));
        assert_eq!(ok("tftp://[::1]/a/b"), url("::1", 69, Some("a/b")));
        assert_eq!(ok("tftp://::1"), url("::1", 69, None));
        assert_eq!(
            ok("tftp://router:1069/a%20b"),
            url("router", 1069, Some("a b"))
        );
        assert_eq!(parse_tftp_url("10.0.0.5"), None);
        assert_eq!(parse_tftp_url("tftp:/x"), None);
        for bad in [
            "tftp://",
            "tftp:///x",
            "tftp://h:x",
            "tftp://h:0",
            "tftp://h/%zz",
            "tftp://h/%ff",
        ] {
            assert!(parse_tftp_url(bad).unwrap().is_err(), "{bad}");
        }
    }

    #[test]
    fn resolves() {
        assert_eq!(
            resolve("127.0.0.1").unwrap(),
            "127.0.0.1:6969".parse().unwrap()
        );
        assert_eq!(resolve("[::1]:5").unwrap(), "[::1]:5".parse().unwrap());
        assert_eq!(resolve("localhost:9").unwrap().port(), 9);
    }
}
