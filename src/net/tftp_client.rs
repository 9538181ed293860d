//! The client driver for TFTP servers (`udpft get tftp://…`): one [`TftpClient`] per
//! transfer over an unconnected UDP socket (the server answers from a new port, its
//! transfer ID), with the same guards, progress reports and summary as udpft's
//! transfers (see [`super::client`]). Nothing here prints.

use std::io::{self, Write as _};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Waiter;
use super::client::{ClientError, ClientOptions, Observer, Report};
use super::tap::Tap;
use crate::engine::tftp::TftpClient;
use crate::engine::tftp::negotiate::Asked;
use crate::engine::{Config, Job, RtoConfig, Status, TransferError};
use crate::wire::Op;
use crate::wire::tftp::{self, Mode};

/// How one attempt at one address ended.
pub(crate) enum Attempt {
    /// The server answered: the transfer's outcome.
    Answered(Result<Report, ClientError>),
    /// No answer at all (the job was never started and comes back).
    Unanswered(TransferError, Job),
}

/// What the client asks of a TFTP server: `blksize` from `--block-size` (held to
/// TFTP's 8–65464), `tsize` (0 for a read, the size for a write; octet mode only, and
/// not with blocks under 64 bytes, where atftpd refuses any OACK longer than a block),
/// and `windowsize` (RFC 7440) from `--window` when above 1, for a read and a write.
pub fn asked_for(opts: &ClientOptions, job: &Job) -> Asked {
    let blksize = opts.block_size.clamp(tftp::MIN_BLKSIZE, tftp::MAX_BLKSIZE);
    Asked {
        blksize: Some(blksize),
        windowsize: match job {
            Job::Get(_) | Job::Put(..) if opts.window > 1 => Some(u32::from(opts.window)),
            _ => None,
        },
        tsize: (blksize >= 64 && !opts.tftp_netascii).then_some(match job {
            Job::Put(_, size) => *size,
            _ => 0,
        }),
        ..Asked::default()
    }
}

/// One TFTP transfer with the server at `server`.
pub(crate) fn attempt(
    server: SocketAddr,
    name: &str,
    job: Job,
    opts: &ClientOptions,
    observer: &mut (dyn Observer + Send),
    tap: Option<&mut Tap>,
    what: &str,
) -> Attempt {
    let op = job.op();
    let mode = if opts.tftp_netascii {
        Mode::Netascii
    } else {
        Mode::Octet
    };
    let mut total = match &job {
        Job::Put(_, n) if mode == Mode::Octet => Some(*n),
        _ => None,
    };
    let bind: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = match UdpSocket::bind(bind).and_then(|s| s.set_nonblocking(true).map(|_| s)) {
        Ok(s) => s,
        Err(e) => {
            return Attempt::Answered(Err(ClientError::Socket {
                addr: server,
                message: format!("cannot open a socket: {e}"),
            }));
        }
    };
    let cfg = Config {
        block_size: opts.block_size.clamp(tftp::MIN_BLKSIZE, tftp::MAX_BLKSIZE),
        rto: RtoConfig {
            max: opts.timeout,
            ..RtoConfig::default()
        },
        give_up: opts.idle,
        linger: Duration::ZERO,
        trace: opts.trace,
        // What the server grants goes in when it answers (engine::tftp::TftpClient).
        window: 1,
        ..Config::default()
    };
    let asked = asked_for(opts, &job);
    let mut s = match TftpClient::new(server, name, mode, job, asked, cfg) {
        Ok(s) => s,
        Err(e) => return Attempt::Answered(Err(ClientError::BadPath(e.to_string()))),
    };
    let local = sock.local_addr().unwrap_or(bind);
    let mut tap = tap.map(|t| (t, local));
    let stall = opts.stall_limit();
    let mut buf = vec![0u8; tftp::MAX_DATAGRAM + 1];
    let mut waiter = Waiter::from_env();
    let start = Instant::now();
    let mut done_at = None;
    let mut answered = false;
    let mut last_bytes = 0;
    let mut last_progress = start;
    let poll = Duration::from_millis(100);
    observer.start(op, total);
    let outcome: Result<(), ClientError> = 'run: loop {
        let now = Instant::now();
        while let Some((to, b)) = s.poll_transmit(now) {
            match sock.send_to(b, to) {
                Ok(_) => {
                    if let Some((t, local)) = &mut tap {
                        t.sent(now, *local, to, b);
                    }
                }
                // A full send buffer: as good as lost. While lingering: already done.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) if done_at.is_some() => {}
                Err(e) => {
                    break 'run Err(ClientError::Socket {
                        addr: to,
                        message: format!("sending: {e}"),
                    });
                }
            }
        }
        // The last block arrived: store the file now; its ACK goes out next round.
        if let Some(mut sink) = s.poll_commit() {
            let stored = sink.flush().and_then(|_| sink.commit());
            drop(sink);
            s.commit_done(Instant::now(), stored);
            continue 'run;
        }
        if opts.trace {
            while let Some(ev) = s.poll_event() {
                observer.event(now.saturating_duration_since(start), &ev);
            }
        }
        if !answered && let Some(g) = s.granted() {
            answered = true;
            last_progress = now;
            if total.is_none()
                && let Some(n) = g.tsize
                && mode == Mode::Octet
            {
                total = Some(n);
            }
        }
        let bytes = s.stats().bytes;
        if bytes != last_bytes {
            last_bytes = bytes;
            last_progress = now;
            observer.progress(bytes, total);
        }
        match s.status() {
            Status::Running => {}
            Status::Complete => {
                done_at.get_or_insert(now);
            }
            Status::Closed | Status::Failed(_) => break Ok(()),
        }
        let complete = done_at.is_some();
        if opts
            .interrupt
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Relaxed))
        {
            if complete {
                break Ok(());
            }
            s.abort("interrupted by the user");
            break Err(ClientError::Interrupted);
        }
        if answered && !complete && now.saturating_duration_since(last_progress) >= stall {
            let st = s.stats();
            s.abort("no progress");
            break Err(ClientError::NoProgress {
                peer: s.tid().unwrap_or(server),
                stalled: now.saturating_duration_since(last_progress),
                duplicates: st.duplicates + st.stale,
            });
        }
        let mut deadline = s.poll_timeout().map_or(now + poll, |t| t.min(now + poll));
        if answered {
            deadline = deadline.min(last_progress + stall);
        }
        match waiter.recv_until(&sock, &mut buf, deadline) {
            Ok(Some((n, from))) => {
                let now = Instant::now();
                if let Some((t, local)) = &mut tap {
                    t.received(now, from, *local, &buf[..n]);
                }
                s.handle_datagram(now, from, &buf[..n]);
            }
            Ok(None) => {}
            Err(_) if complete => break Ok(()),
            // An ICMP error for an earlier datagram (the unconnected socket may still
            // see some): the timers deal with it.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
            Err(e) => {
                break Err(ClientError::Socket {
                    addr: server,
                    message: format!("receiving: {e}"),
                });
            }
        }
        let now = Instant::now();
        if s.poll_timeout().is_some_and(|t| t <= now) {
            s.handle_timeout(now);
        }
    };
    // An abort or a refused OACK queues an ERROR for the server: send it (best effort).
    let now = Instant::now();
    while let Some((to, b)) = s.poll_transmit(now) {
        if sock.send_to(b, to).is_ok()
            && let Some((t, local)) = &mut tap
        {
            t.sent(now, *local, to, b);
        }
    }
    if let Some((t, _)) = tap {
        t.flush();
    }
    if opts.trace {
        while let Some(ev) = s.poll_event() {
            observer.event(now.saturating_duration_since(start), &ev);
        }
    }
    observer.finish();
    if let Err(e) = outcome {
        return Attempt::Answered(Err(e));
    }
    let elapsed = done_at.unwrap_or_else(Instant::now) - start;
    let stats = s.stats();
    let srtt = s.rto().srtt();
    let peer = s.tid().unwrap_or(server);
    let status = s.status().clone();
    match status {
        Status::Failed(e @ TransferError::NoAnswer { .. }) if s.tid().is_none() => {
            match s.into_unstarted_job() {
                Some(job) => Attempt::Unanswered(e, job),
                None => Attempt::Answered(Err(e.into())),
            }
        }
        Status::Failed(e) => {
            let err = if let Some((code, message)) = s.server_error() {
                ClientError::Tftp {
                    code: code.0,
                    message: message.clone(),
                }
            } else if let Some(why) = s.oack_error() {
                ClientError::Transfer(TransferError::Aborted(format!(
                    "refused the server's options ({why}); it was sent TFTP error 8"
                )))
            } else {
                e.into()
            };
            Attempt::Answered(Err(err))
        }
        _ => Attempt::Answered(Ok(Report {
            op,
            what: what.to_string(),
            peer,
            bytes: stats.bytes,
            block_size: s.granted().map_or(tftp::DEFAULT_BLKSIZE, |g| g.blksize),
            // A put reports 0, not 1: the summary's "--window would be faster" does not
            // apply while a TFTP write cannot ask for a window (TFTP.md "Not yet").
            window: match op {
                Op::Get => s
                    .granted()
                    .map_or(1, |g| g.windowsize.min(u32::from(u16::MAX)) as u16),
                _ => 0,
            },
            elapsed,
            resent: stats.resent,
            duplicates: stats.duplicates + stats.stale,
            bad_checksum: stats.bad_checksum,
            srtt,
        })),
    }
}
