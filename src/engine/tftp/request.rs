//! Pure pieces of a TFTP server's front door: the name a request names, the TFTP
//! error for a udpft refusal, ERROR datagrams held to a size, and the rate limit on
//! ERROR 5 ("unknown transfer ID").

use std::time::{Duration, Instant};

use crate::storage::Refusal;
use crate::wire::ErrorCode;
use crate::wire::tftp::{ErrorCode as TftpCode, Packet};

/// The longest ERROR udpftd sends: the size of a default DATA (4 + 512 bytes), so an
/// ERROR never outweighs the DATA the worst-case amplification ratio is made of
/// (TFTP.md §3.3).
pub const MAX_ERROR_LEN: usize = 516;

/// The name a request's file name stands for under the served root: leading `/`s
/// removed (`/pxelinux.0` is `pxelinux.0` under the root, as tftp-hpa's `--secure` and
/// dnsmasq take it); it must be UTF-8. Everything else (no `..`, no way out of the
/// root) is storage's check, exactly as for udpft.
pub fn served_name(filename: &[u8]) -> Result<&str, Refusal> {
    let name = std::str::from_utf8(filename).map_err(|_| {
        Refusal::new(
            ErrorCode::AccessDenied,
            format!(
                "access denied: the file name '{}' is not UTF-8",
                escape_bytes(filename)
            ),
        )
    })?;
    let name = name.trim_start_matches('/');
    if name.is_empty() {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            "the request names no file",
        ));
    }
    Ok(name)
}

/// Bytes from the network shown as [`crate::text::escape`] shows a name, with every
/// byte that is not part of valid UTF-8 as `\xHH`.
pub fn escape_bytes(b: &[u8]) -> String {
    let mut out = String::new();
    for chunk in b.utf8_chunks() {
        out.push_str(&crate::text::escape(chunk.valid()));
        for x in chunk.invalid() {
            out.push_str(&format!("\\x{x:02x}"));
        }
    }
    out
}

/// The TFTP error code for a udpft refusal or failure (TFTP.md §2.7).
pub fn tftp_code(code: ErrorCode) -> TftpCode {
    match code {
        ErrorCode::NotFound => TftpCode::FILE_NOT_FOUND,
        // Out of the root, or not a regular file, or a name storage will not take.
        ErrorCode::AccessDenied | ErrorCode::BadRequest => TftpCode::ACCESS_VIOLATION,
        ErrorCode::AlreadyExists => TftpCode::FILE_EXISTS,
        // A write to a read-only server (the choice: illegal operation).
        ErrorCode::NotAllowed => TftpCode::ILLEGAL_OPERATION,
        // TFTP has no code for busy, I/O errors, integrity or giving up.
        _ => TftpCode::UNDEFINED,
    }
}

/// The udpft code a TFTP server's error stands for, for exit codes and messages on
/// the client.
pub fn udpft_code(code: TftpCode) -> ErrorCode {
    match code {
        TftpCode::FILE_NOT_FOUND => ErrorCode::NotFound,
        TftpCode::ACCESS_VIOLATION | TftpCode::NO_SUCH_USER => ErrorCode::AccessDenied,
        TftpCode::FILE_EXISTS => ErrorCode::AlreadyExists,
        TftpCode::ILLEGAL_OPERATION | TftpCode::UNKNOWN_TID | TftpCode::OPTION_REFUSED => {
            ErrorCode::BadRequest
        }
        TftpCode::DISK_FULL => ErrorCode::Io,
        _ => ErrorCode::Undefined,
    }
}

/// Writes an ERROR with `code` and `message` into `buf`, cut (at a character
/// boundary) so that the datagram is at most `limit` bytes (and at least the 5 bytes of
/// an empty message). NUL bytes in the message are replaced (they would end it early).
/// Returns the length, 0 if `buf` is smaller than 5 bytes.
pub fn emit_error(code: TftpCode, message: &str, limit: usize, buf: &mut [u8]) -> usize {
    let room = limit.min(buf.len()).saturating_sub(5);
    let cut = crate::engine::truncate_utf8(message, room);
    let clean;
    let text: &[u8] = if cut.contains('\0') {
        clean = cut.replace('\0', " ");
        clean.as_bytes()
    } else {
        cut.as_bytes()
    };
    Packet::Error {
        code,
        message: text,
    }
    .emit(buf)
    .unwrap_or(0)
}

/// How long a TFTP sender goes quiet after two unanswered resends of one packet: longer
/// than the 5 s a stock client waits before it acknowledges again.
///
/// (The third copy still goes at once: a client that answers every copy is stuck only
/// if three answers in a row are lost.)
pub const QUIET: Duration = Duration::from_secs(6);

/// Lets a packet (a DATA or OACK resent on the timer) go out three times, then holds
/// back further copies until [`QUIET`] has passed since the last one went out.
///
/// Why: atftp acknowledges a duplicate block once ("extra ACK") and ignores the next
/// copies, and every packet it receives restarts its own 5 s timer. If that extra ACK is
/// lost, a sender resending every RTO keeps the client silent for ever (measured: a 1 MiB
/// get at 5% loss never finished; with this it does). Going quiet longer than the
/// client's timer makes it acknowledge again. A client that answers every copy never
/// gets here unless two answers in a row are lost.
#[derive(Debug, Clone, Default)]
pub struct Patience {
    quiet: Duration,
    last: Option<(u16, u16)>,
    copies: u32,
    last_sent: Option<Instant>,
}

impl Patience {
    /// Quiet for `quiet` after the second resend (at least [`QUIET`]).
    pub fn new(quiet: Duration) -> Patience {
        Patience {
            quiet: quiet.max(QUIET),
            ..Patience::default()
        }
    }

    /// Forgets the copies counted so far: the peer showed it is waiting (a TFTP client
    /// that repeats its request has not seen the answer, it is not ignoring it).
    pub fn reset(&mut self) {
        self.copies = 0;
        self.last = None;
    }

    /// Whether `packet`, about to go out at `now`, may: every packet does except a fourth
    /// or later copy of the same one within the quiet time. ERRORs always go.
    pub fn allow(&mut self, now: Instant, packet: &[u8]) -> bool {
        if packet.len() < 2 || packet[1] == 5 {
            return true;
        }
        let block = if packet.len() >= 4 && packet[1] != 6 {
            u16::from_be_bytes([packet[2], packet[3]])
        } else {
            0
        };
        let key = (u16::from(packet[1]), block);
        if self.last == Some(key) {
            self.copies += 1;
        } else {
            self.last = Some(key);
            self.copies = 1;
        }
        let hold = self.copies >= 4
            && self
                .last_sent
                .is_some_and(|t| now.saturating_duration_since(t) < self.quiet);
        if !hold {
            self.last_sent = Some(now);
        }
        !hold
    }
}

/// A token bucket: at most `burst` events at once, refilled at one per `interval`.
#[derive(Debug, Clone)]
pub struct RateLimit {
    interval: Duration,
    burst: u32,
    tokens: u32,
    refilled: Option<Instant>,
}

impl RateLimit {
    pub fn new(interval: Duration, burst: u32) -> RateLimit {
        RateLimit {
            interval,
            burst,
            tokens: burst,
            refilled: None,
        }
    }

    /// Whether one more event is allowed at `now` (and counts it if so).
    pub fn allow(&mut self, now: Instant) -> bool {
        match self.refilled {
            None => self.refilled = Some(now),
            Some(t) if !self.interval.is_zero() => {
                let gained = now.saturating_duration_since(t).as_nanos() / self.interval.as_nanos();
                if gained > 0 {
                    let gained = gained.min(u128::from(self.burst)) as u32;
                    self.tokens = (self.tokens + gained).min(self.burst);
                    // Keep the remainder: refill from the last whole interval.
                    self.refilled = Some(if self.tokens == self.burst {
                        now
                    } else {
                        t + self.interval * gained
                    });
                }
            }
            Some(_) => self.tokens = self.burst,
        }
        if self.tokens > 0 {
            self.tokens -= 1;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_lose_leading_slashes_and_must_be_utf8() {
        assert_eq!(served_name(b"/pxelinux.0").unwrap(), "pxelinux.0");
        assert_eq!(served_name(b"//boot/x").unwrap(), "boot/x");
        assert_eq!(served_name(b"a/../b").unwrap(), "a/../b"); // storage refuses it
        assert_eq!(served_name(b"/").unwrap_err().code, ErrorCode::BadRequest);
        assert_eq!(served_name(b"").unwrap_err().code, ErrorCode::BadRequest);
        let e = served_name(b"caf\xe9").unwrap_err();
        assert_eq!(e.code, ErrorCode::AccessDenied);
        assert!(e.message.contains("caf\\xe9"), "{}", e.message);
        assert_eq!(tftp_code(e.code), TftpCode::ACCESS_VIOLATION);
    }

    #[test]
    fn codes_map_both_ways() {
        for (u, t) in [
            (ErrorCode::NotFound, 1),
            (ErrorCode::AccessDenied, 2),
            (ErrorCode::AlreadyExists, 6),
            (ErrorCode::NotAllowed, 4),
            (ErrorCode::Busy, 0),
            (ErrorCode::Io, 0),
        ] {
            assert_eq!(tftp_code(u), TftpCode(t), "{u:?}");
        }
        assert_eq!(udpft_code(TftpCode(1)), ErrorCode::NotFound);
        assert_eq!(udpft_code(TftpCode(6)), ErrorCode::AlreadyExists);
        assert_eq!(udpft_code(TftpCode(99)), ErrorCode::Undefined);
    }

    #[test]
    fn errors_are_held_to_their_limit() {
        let mut buf = [0u8; 2000];
        let long = "é".repeat(600);
        let n = emit_error(TftpCode(1), &long, MAX_ERROR_LEN, &mut buf);
        assert!(n <= MAX_ERROR_LEN && n > MAX_ERROR_LEN - 2, "{n}");
        let Ok(Packet::Error { code, message }) = Packet::parse(&buf[..n]) else {
            panic!()
        };
        assert_eq!(code, TftpCode(1));
        assert!(std::str::from_utf8(message).is_ok());
        let n = emit_error(TftpCode(0), "a\0b", 100, &mut buf);
        assert_eq!(&buf[..n], b"\0\x05\0\0a b\0");
        assert_eq!(emit_error(TftpCode(0), "abc", 5, &mut buf), 5);
        assert_eq!(emit_error(TftpCode(0), "abc", 100, &mut buf[..4]), 0);
    }

    #[test]
    fn patience_holds_back_a_third_copy_until_the_client_timed_out() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut p = Patience::new(Duration::ZERO);
        let d5 = b"\0\x03\0\x05data";
        let d6 = b"\0\x03\0\x06data";
        assert!(p.allow(t0, d5)); // first copy
        assert!(p.allow(t0 + ms(1), d5)); // resend 1
        assert!(p.allow(t0 + ms(3), d5)); // resend 2
        assert!(
            !p.allow(t0 + ms(7), d5),
            "a third resend within the quiet time"
        );
        assert!(!p.allow(t0 + ms(3000), d5));
        assert!(p.allow(t0 + ms(3) + QUIET, d5), "after the quiet time");
        assert!(!p.allow(t0 + ms(4) + QUIET, d5));
        // A new packet starts afresh; ERRORs always go.
        assert!(p.allow(t0 + ms(5) + QUIET, d6));
        assert!(p.allow(t0 + ms(5) + QUIET, b"\0\x05\0\0x\0"));
    }

    #[test]
    fn the_rate_limit_allows_a_burst_then_one_per_interval() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut r = RateLimit::new(ms(100), 3);
        assert!((0..3).all(|_| r.allow(t0)));
        assert!(!r.allow(t0));
        assert!(!r.allow(t0 + ms(99)));
        assert!(r.allow(t0 + ms(100)));
        assert!(!r.allow(t0 + ms(150)));
        assert!(r.allow(t0 + ms(200)));
        // A long quiet spell refills the burst, no more.
        let later = t0 + Duration::from_secs(60);
        assert!((0..3).all(|_| r.allow(later)));
        assert!(!r.allow(later));
    }
}
