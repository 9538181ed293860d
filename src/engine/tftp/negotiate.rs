//! Option negotiation (RFC 2347) as pure functions: no socket, no file, no clock.
//!
//! - [`negotiate`] (server): given a request's options, its mode and direction, and
//!   the server's [`Limits`], what is granted. Only options the client asked for are
//!   ever granted, each at most once, under the name as the client spelled it, in the
//!   client's order: an unrequested option (a `tsize` above all) breaks EFI clients.
//!   An option whose value is out of its range is ignored (not granted), as RFC 2347
//!   allows; nothing here refuses a whole request.
//! - [`check_oack`] (client): whether a server's OACK is acceptable for what was asked
//!   (RFC 2347: an option not asked for, or a value the client cannot take, ends the
//!   transfer with ERROR 8), and what is then in force.

use std::time::Duration;

use crate::wire::tftp::{
    DEFAULT_BLKSIZE, KnownOptions, MAX_BLKSIZE, MAX_TIMEOUT, MAX_WINDOWSIZE, MIN_BLKSIZE,
    MIN_TIMEOUT, MIN_WINDOWSIZE, Mode, Opt, Options, OptionsBuf, Rollover,
};

/// What the server allows, whatever a client asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest block granted (`udpftd --max-block-size`); held to 8–65464.
    pub max_blksize: u32,
    /// The largest window granted (`udpftd --max-window`); held to 1–65535.
    pub max_window: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_blksize: MAX_BLKSIZE,
            max_window: 1,
        }
    }
}

/// Which way the file moves, and what the server knows of its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// RRQ: the server sends. `size` is the file's length where known (a regular file
    /// opened for sending), for `tsize`.
    Read { size: Option<u64> },
    /// WRQ: the client sends.
    Write,
}

/// What is in force for a transfer after negotiation (the defaults of RFC 1350 for
/// whatever was not granted), and the OACK that says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Granted {
    /// Bytes per DATA block: 512 unless `blksize` was granted.
    pub blksize: u32,
    /// Blocks per window: 1 unless `windowsize` was granted.
    pub windowsize: u32,
    /// The client's `timeout`, when granted: its retransmission interval. udpft keeps
    /// its adaptive timeout and never waits longer than this between resends.
    pub timeout: Option<Duration>,
    /// The transfer size: for a read, the size announced in the OACK (a non-empty
    /// file, octet mode); for a write, the size the client announced (octet mode,
    /// where it is the byte count).
    pub tsize: Option<u64>,
    pub rollover: Rollover,
    /// The OACK's options, exactly the granted ones. Empty: send no OACK (RFC 1350
    /// answer: DATA 1 for a read, ACK 0 for a write).
    pub oack: OptionsBuf,
}

impl Granted {
    /// RFC 1350 with no options.
    pub fn plain() -> Granted {
        Granted {
            blksize: DEFAULT_BLKSIZE,
            windowsize: 1,
            timeout: None,
            tsize: None,
            rollover: Rollover::ToZero,
            oack: OptionsBuf::new(),
        }
    }

    /// The granted options for a log line, as sent (`blksize 1428, tsize 0`), or
    /// `no options`.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .oack
            .options()
            .iter()
            .map(|o| {
                format!(
                    "{} {}",
                    String::from_utf8_lossy(o.name).to_ascii_lowercase(),
                    String::from_utf8_lossy(o.value)
                )
            })
            .collect();
        if parts.is_empty() {
            "no options".to_string()
        } else {
            parts.join(", ")
        }
    }
}

/// A number within `lo..=hi`; above `hi` it is lowered to `hi` when `clamp_high`.
fn in_range(o: &Opt<'_>, lo: u64, hi: u64, clamp_high: bool) -> Option<u64> {
    let v = o.number()?;
    if v < lo {
        None
    } else if v > hi {
        clamp_high.then_some(hi)
    } else {
        Some(v)
    }
}

/// The server's side: what to grant of a request's `options` (see the module
/// documentation for the rules).
pub fn negotiate(
    options: &Options<'_>,
    mode: Mode,
    direction: Direction,
    limits: Limits,
) -> Granted {
    let k = KnownOptions::of(options);
    let mut g = Granted::plain();
    let max_blk = u64::from(limits.max_blksize.clamp(MIN_BLKSIZE, MAX_BLKSIZE));
    let max_win = u64::from(limits.max_window.clamp(MIN_WINDOWSIZE, MAX_WINDOWSIZE));
    // Walk the request's options in its order, granting each known one at most once
    // (KnownOptions kept the first of a repeated one: compare by address).
    for o in options.iter() {
        let first = |slot: Option<Opt<'_>>| slot.is_some_and(|s| std::ptr::eq(s.name, o.name));
        let value: Option<u64> = if first(k.blksize) {
            // RFC 2348: 8 to 65464; a larger request gets what the server allows (as
            // tftp-hpa does); a smaller one is not granted.
            in_range(&o, u64::from(MIN_BLKSIZE), u64::MAX, false)
                .map(|v| v.min(max_blk))
                .inspect(|&v| g.blksize = v as u32)
        } else if first(k.windowsize) {
            // Also held to what the engine keeps in memory for a window of blocks of
            // the size granted (engine::window_for).
            let blk = k
                .blksize
                .and_then(|o| in_range(&o, u64::from(MIN_BLKSIZE), u64::MAX, false))
                .map_or(DEFAULT_BLKSIZE, |v| v.min(max_blk) as u32);
            in_range(&o, u64::from(MIN_WINDOWSIZE), u64::MAX, false)
                .map(|v| v.min(max_win))
                .map(|v| u64::from(crate::engine::window_for(v as u16, blk)))
                .inspect(|&v| g.windowsize = v as u32)
        } else if first(k.timeout) {
            // RFC 2349: 1 to 255 s, echoed as asked or not granted at all.
            in_range(&o, MIN_TIMEOUT, MAX_TIMEOUT, false)
                .inspect(|&v| g.timeout = Some(Duration::from_secs(v)))
        } else if first(k.tsize) {
            // Netascii's size on the wire is not the file's: no tsize in that mode.
            // An empty file's tsize is left out: curl (7.88) takes "tsize 0" in an
            // OACK for invalid and aborts (TFTP.md §2.4).
            match (mode, direction, o.number()) {
                (Mode::Octet, Direction::Read { size: Some(s) }, Some(_)) if s > 0 => {
                    g.tsize = Some(s);
                    Some(s)
                }
                (Mode::Octet, Direction::Write, Some(v)) => {
                    g.tsize = Some(v);
                    Some(v)
                }
                _ => None,
            }
        } else if first(k.rollover) {
            // As tftp-hpa: "0" or "1", nothing else.
            match o.value {
                b"0" => {
                    g.rollover = Rollover::ToZero;
                    Some(0)
                }
                b"1" => {
                    g.rollover = Rollover::ToOne;
                    Some(1)
                }
                _ => None,
            }
        } else {
            None
        };
        if let Some(v) = value {
            g.oack.push_number(o.name, v);
        }
    }
    g
}

/// What a client asked for in its request (the options it put there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Asked {
    pub blksize: Option<u32>,
    pub windowsize: Option<u32>,
    pub timeout: Option<u8>,
    /// For a read, normally 0; for a write, the file's size.
    pub tsize: Option<u64>,
    pub rollover: Option<u8>,
}

impl Asked {
    /// The request's option section, in a fixed order (blksize, tsize, timeout,
    /// windowsize, rollover), lower-case names.
    pub fn options(&self) -> OptionsBuf {
        let mut b = OptionsBuf::new();
        if let Some(v) = self.blksize {
            b.push_number(b"blksize", u64::from(v));
        }
        if let Some(v) = self.tsize {
            b.push_number(b"tsize", v);
        }
        if let Some(v) = self.timeout {
            b.push_number(b"timeout", u64::from(v));
        }
        if let Some(v) = self.windowsize {
            b.push_number(b"windowsize", u64::from(v));
        }
        if let Some(v) = self.rollover {
            b.push_number(b"rollover", u64::from(v));
        }
        b
    }
}

/// Why a client cannot accept an OACK; it ends the transfer with ERROR 8 and this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OackError {
    #[error("the server acknowledged option '{0}', which was not asked for")]
    NotAsked(String),
    #[error("the server granted {name} {value}, outside what was asked ({asked})")]
    BadValue {
        name: &'static str,
        value: String,
        asked: String,
    },
}

/// The client's side: checks a server's OACK against what was asked and returns what
/// is in force. A read's `tsize` in the OACK is the file's size. Option names are
/// compared case-insensitively; a repeated option is judged by its first copy.
pub fn check_oack(asked: &Asked, oack: &Options<'_>) -> Result<Granted, OackError> {
    let k = KnownOptions::of(oack);
    let mut g = Granted::plain();
    for o in oack.iter() {
        let known = [k.blksize, k.windowsize, k.timeout, k.tsize, k.rollover]
            .iter()
            .flatten()
            .any(|s| std::ptr::eq(s.name, o.name));
        if !known {
            let repeat = [
                b"blksize".as_slice(),
                b"windowsize",
                b"timeout",
                b"tsize",
                b"rollover",
            ]
            .iter()
            .any(|n| o.name.eq_ignore_ascii_case(n));
            if repeat {
                continue;
            }
            return Err(OackError::NotAsked(
                String::from_utf8_lossy(o.name).into_owned(),
            ));
        }
    }
    let bad = |name: &'static str, o: &Opt<'_>, asked: String| OackError::BadValue {
        name,
        value: String::from_utf8_lossy(o.value).into_owned(),
        asked,
    };
    if let Some(o) = k.blksize {
        let a = asked
            .blksize
            .ok_or_else(|| OackError::NotAsked("blksize".into()))?;
        match o.number() {
            Some(v) if v >= u64::from(MIN_BLKSIZE) && v <= u64::from(a) => g.blksize = v as u32,
            _ => return Err(bad("blksize", &o, format!("8 to {a}"))),
        }
    }
    if let Some(o) = k.windowsize {
        let a = asked
            .windowsize
            .ok_or_else(|| OackError::NotAsked("windowsize".into()))?;
        match o.number() {
            Some(v) if v >= 1 && v <= u64::from(a) => g.windowsize = v as u32,
            _ => return Err(bad("windowsize", &o, format!("1 to {a}"))),
        }
    }
    if let Some(o) = k.timeout {
        let a = asked
            .timeout
            .ok_or_else(|| OackError::NotAsked("timeout".into()))?;
        match o.number() {
            Some(v) if v == u64::from(a) => g.timeout = Some(Duration::from_secs(v)),
            _ => return Err(bad("timeout", &o, a.to_string())),
        }
    }
    if let Some(o) = k.tsize {
        if asked.tsize.is_none() {
            return Err(OackError::NotAsked("tsize".into()));
        }
        match o.number() {
            Some(v) => g.tsize = Some(v),
            None => return Err(bad("tsize", &o, "a number".into())),
        }
    }
    if let Some(o) = k.rollover {
        let a = asked
            .rollover
            .ok_or_else(|| OackError::NotAsked("rollover".into()))?;
        g.rollover = match o.value {
            b"0" if a == 0 => Rollover::ToZero,
            b"1" if a == 1 => Rollover::ToOne,
            _ => return Err(bad("rollover", &o, a.to_string())),
        };
    }
    g.oack = OptionsBuf::new();
    for o in oack.iter() {
        g.oack.push(o.name, o.value);
    }
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> OptionsBuf {
        let mut b = OptionsBuf::new();
        for (n, v) in pairs {
            b.push(n.as_bytes(), v.as_bytes());
        }
        b
    }

    fn oack_pairs(g: &Granted) -> Vec<(String, String)> {
        g.oack
            .options()
            .iter()
            .map(|o| {
                (
                    String::from_utf8_lossy(o.name).into_owned(),
                    String::from_utf8_lossy(o.value).into_owned(),
                )
            })
            .collect()
    }

    const LIMITS: Limits = Limits {
        max_blksize: 1468,
        max_window: 16,
    };

    #[test]
    fn grants_only_what_was_asked_in_the_clients_order_and_spelling() {
        let b = opts(&[
            ("WindowSize", "64"),
            ("TSIZE", "0"),
            ("blksize", "65464"),
            ("multicast", ""),
            ("timeout", "3"),
        ]);
        let g = negotiate(
            &b.options(),
            Mode::Octet,
            Direction::Read { size: Some(12_345) },
            LIMITS,
        );
        assert_eq!(
            oack_pairs(&g),
            [
                ("WindowSize".into(), "16".into()),
                ("TSIZE".into(), "12345".into()),
                ("blksize".into(), "1468".into()),
                ("timeout".into(), "3".into()),
            ]
        );
        assert_eq!((g.blksize, g.windowsize, g.tsize), (1468, 16, Some(12_345)));
        assert_eq!(g.timeout, Some(Duration::from_secs(3)));
        assert_eq!(
            g.describe(),
            "windowsize 16, tsize 12345, blksize 1468, timeout 3"
        );
    }

    #[test]
    fn no_options_means_no_oack_and_rfc1350_defaults() {
        for b in [opts(&[]), opts(&[("multicast", "1"), ("utimeout", "5000")])] {
            let g = negotiate(&b.options(), Mode::Octet, Direction::Write, LIMITS);
            assert_eq!(g, Granted::plain());
            assert!(g.oack.is_empty());
            assert_eq!(g.describe(), "no options");
        }
    }

    #[test]
    fn values_out_of_range_are_not_granted() {
        let b = opts(&[
            ("blksize", "7"),
            ("windowsize", "0"),
            ("timeout", "0"),
            ("rollover", "2"),
            ("tsize", "-1"),
        ]);
        let g = negotiate(
            &b.options(),
            Mode::Octet,
            Direction::Read { size: Some(5) },
            LIMITS,
        );
        assert!(g.oack.is_empty(), "{:?}", oack_pairs(&g));
        assert_eq!(g, Granted::plain());
        let b = opts(&[("timeout", "256"), ("blksize", "x"), ("blksize", "1024")]);
        let g = negotiate(&b.options(), Mode::Octet, Direction::Write, LIMITS);
        // The first blksize counts (and is bad); the repeat is not looked at.
        assert!(g.oack.is_empty());
    }

    #[test]
    fn big_values_are_lowered_to_the_limits() {
        let b = opts(&[("blksize", "99999999"), ("windowsize", "70000")]);
        let g = negotiate(
            &b.options(),
            Mode::Octet,
            Direction::Write,
            Limits {
                max_blksize: 100_000,
                max_window: 100_000,
            },
        );
        // The window: 65535 asked, lowered to what the engine holds of 65464-byte blocks.
        let w = crate::engine::window_for(u16::MAX, 65464).to_string();
        assert_eq!(
            oack_pairs(&g),
            [("blksize".into(), "65464".into()), ("windowsize".into(), w)]
        );
    }

    #[test]
    fn the_window_fits_the_engines_memory_for_the_block() {
        let b = opts(&[("windowsize", "1024"), ("blksize", "65464")]);
        let lim = Limits {
            max_blksize: 65464,
            max_window: 1024,
        };
        let g = negotiate(&b.options(), Mode::Octet, Direction::Write, lim);
        assert_eq!(
            g.windowsize,
            u32::from(crate::engine::window_for(1024, 65464))
        );
        assert!(g.windowsize < 1024);
        assert_eq!(
            oack_pairs(&g)[0],
            ("windowsize".into(), g.windowsize.to_string())
        );
    }

    #[test]
    fn tsize_is_the_files_size_on_read_the_clients_on_write_and_never_in_netascii() {
        let b = opts(&[("tsize", "0")]);
        let g = negotiate(
            &b.options(),
            Mode::Octet,
            Direction::Read { size: Some(1) },
            LIMITS,
        );
        assert_eq!(oack_pairs(&g), [("tsize".into(), "1".into())]);
        // Unknown size, or an empty file: not granted.
        for size in [None, Some(0)] {
            let g = negotiate(&b.options(), Mode::Octet, Direction::Read { size }, LIMITS);
            assert!(g.oack.is_empty() && g.tsize.is_none());
        }
        let b = opts(&[("tsize", "4096")]);
        let g = negotiate(&b.options(), Mode::Octet, Direction::Write, LIMITS);
        assert_eq!(g.tsize, Some(4096));
        assert_eq!(oack_pairs(&g), [("tsize".into(), "4096".into())]);
        for d in [Direction::Write, Direction::Read { size: Some(10) }] {
            let g = negotiate(&b.options(), Mode::Netascii, d, LIMITS);
            assert!(g.oack.is_empty() && g.tsize.is_none());
        }
    }

    #[test]
    fn rollover_as_tftp_hpa_takes_it() {
        for (v, r) in [("0", Rollover::ToZero), ("1", Rollover::ToOne)] {
            let b = opts(&[("Rollover", v)]);
            let g = negotiate(&b.options(), Mode::Octet, Direction::Write, LIMITS);
            assert_eq!(g.rollover, r);
            assert_eq!(oack_pairs(&g), [("Rollover".into(), v.into())]);
        }
    }

    #[test]
    fn the_client_accepts_a_fair_oack() {
        let asked = Asked {
            blksize: Some(1428),
            windowsize: Some(16),
            tsize: Some(0),
            ..Asked::default()
        };
        let o = opts(&[("BLKSIZE", "1024"), ("windowsize", "4"), ("tsize", "777")]);
        let g = check_oack(&asked, &o.options()).unwrap();
        assert_eq!((g.blksize, g.windowsize, g.tsize), (1024, 4, Some(777)));
        // An empty OACK: defaults.
        let g = check_oack(&asked, &opts(&[]).options()).unwrap();
        assert_eq!((g.blksize, g.windowsize, g.tsize), (512, 1, None));
    }

    #[test]
    fn the_client_refuses_what_it_did_not_ask_for_or_cannot_take() {
        let asked = Asked {
            blksize: Some(1024),
            timeout: Some(2),
            ..Asked::default()
        };
        let cases = [
            (vec![("tsize", "5")], "tsize"),
            (vec![("windowsize", "4")], "windowsize"),
            (vec![("multicast", ",,1")], "multicast"),
            (vec![("blksize", "2048")], "blksize 2048"),
            (vec![("blksize", "4")], "blksize 4"),
            (vec![("timeout", "5")], "timeout 5"),
        ];
        for (pairs, what) in cases {
            let e = check_oack(&asked, &opts(&pairs).options()).unwrap_err();
            assert!(e.to_string().contains(what), "{e} / {what}");
        }
    }

    #[test]
    fn what_a_server_grants_a_client_accepts() {
        // Every combination the client can ask: the server's answer passes its check.
        for blk in [None, Some(8), Some(512), Some(1428), Some(65464)] {
            for win in [None, Some(1), Some(4), Some(64)] {
                for tsize in [None, Some(0)] {
                    let asked = Asked {
                        blksize: blk,
                        windowsize: win,
                        tsize,
                        timeout: Some(1),
                        rollover: Some(0),
                    };
                    let g = negotiate(
                        &asked.options().options(),
                        Mode::Octet,
                        Direction::Read { size: Some(99) },
                        LIMITS,
                    );
                    let c = check_oack(&asked, &g.oack.options()).unwrap();
                    assert_eq!(
                        (c.blksize, c.windowsize, c.tsize),
                        (g.blksize, g.windowsize, g.tsize)
                    );
                }
            }
        }
    }
}
