//! Protocol events, recorded when tracing is on, in words a student can follow.
//! PROTOCOL.md §9 (worked example) uses the same wording.

use std::fmt;
use std::time::Duration;

use super::TransferError;
use super::frame::{Kind, Seq};
use crate::wire::WireError;

/// One thing that happened in a session. [`fmt::Display`] gives the trace line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A packet went out for the first time; `len` is its payload's size.
    Sent { kind: Kind, seq: Seq, len: usize },
    /// A retransmission timer expired and the packet went out again.
    Resent {
        kind: Kind,
        seq: Seq,
        len: usize,
        after: Duration,
    },
    /// Later packets were acknowledged and this one was not: it went out again at once,
    /// without waiting for its timer (a window above 1).
    Repaired { kind: Kind, seq: Seq, len: usize },
    /// The packet numbered `seq` was acknowledged; `rtt` is absent if it had been resent
    /// (Karn's rule: no round-trip sample from a resent packet).
    Acked {
        kind: Kind,
        seq: Seq,
        rtt: Option<Duration>,
    },
    /// New, in-order data (or DONE, or ACCEPT) arrived and was acknowledged.
    Received { kind: Kind, seq: Seq, len: usize },
    /// New, in-order data arrived (a window above 1: acknowledged with the next ACK).
    Delivered { seq: Seq, len: usize },
    /// Data arrived ahead of the block expected next (a window above 1): kept, and
    /// acknowledged selectively at once.
    Ahead { seq: Seq, len: usize, expected: Seq },
    /// Something already received arrived again: acknowledged again, and (data) not
    /// written again.
    Duplicate { kind: Kind, seq: Seq },
    /// An acknowledgement for something already acknowledged: ignored, nothing resent.
    Stale { kind: Kind, seq: Seq },
    /// DATA that could not be stored yet (the storage's buffers were all being
    /// written): neither taken nor acknowledged; the sender's timer resends it.
    Deferred { seq: Seq },
    /// A datagram that failed the checks of PROTOCOL.md §6 was dropped unread.
    Dropped(WireError),
    /// A datagram for another session, or from the wrong address, was dropped.
    Foreign,
    /// DONE arrived and its length and CRC32 match what was received; the data is
    /// stored and DONE acknowledged.
    Verified { length: u64, crc: u32 },
    /// A stream that ends with a short block (TFTP: no DONE, no CRC) ended with block
    /// `seq`; its `length` bytes are stored and the block acknowledged.
    LastBlock { seq: Seq, length: u64 },
    /// DONE was verified but storing the data takes a while: WAIT went out, so the
    /// sender does not resend DONE meanwhile (PROTOCOL.md §4.4).
    Storing { seq: Seq },
    /// The receiver said it is storing the data (WAIT): DONE is not resent while it does,
    /// only probed now and then.
    Waiting { seq: Seq, rtt: Option<Duration> },
    /// The ack of DONE came after a WAIT: the receiver has stored the data.
    Stored { seq: Seq },
    /// The server asked for an address check (RETRY): the request goes again with its
    /// token.
    Retried { rtt: Option<Duration> },
    /// The server sent a RETRY to an unproven address instead of opening a session.
    RetrySent,
    /// The transfer failed.
    Failed(TransferError),
}

pub(crate) fn kind_name(kind: Kind) -> &'static str {
    kind.word()
}

/// The payload size of a DATA, in parentheses; other packets' sizes say nothing useful.
fn size(kind: Kind, len: usize) -> String {
    if kind == Kind::Data {
        format!(" ({len} B)")
    } else {
        String::new()
    }
}

/// Milliseconds with enough digits for sub-millisecond LAN round trips.
pub(crate) fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Sent { kind, seq, len } => {
                write!(f, "{} #{seq} sent{}", kind_name(*kind), size(*kind, *len))
            }
            Event::Resent {
                kind,
                seq,
                len,
                after,
            } => write!(
                f,
                "timeout after {}, {} #{seq} resent{}",
                ms(*after),
                kind_name(*kind),
                size(*kind, *len)
            ),
            Event::Repaired { kind, seq, len } => write!(
                f,
                "later packets arrived, {} #{seq} did not: resent{}",
                kind_name(*kind),
                size(*kind, *len)
            ),
            Event::Acked {
                kind: Kind::Request,
                rtt,
                ..
            } => match rtt {
                Some(rtt) => write!(f, "accept received, round trip {}", ms(*rtt)),
                None => {
                    f.write_str("accept received (the request was resent: no round-trip sample)")
                }
            },
            Event::Acked { kind, seq, rtt } => {
                let what = match kind {
                    Kind::End => " (done acknowledged: transfer complete)",
                    _ => "",
                };
                match rtt {
                    Some(rtt) => write!(f, "ack #{seq} received, round trip {}{what}", ms(*rtt)),
                    None => write!(
                        f,
                        "ack #{seq} received (after a resend: no round-trip sample){what}"
                    ),
                }
            }
            Event::Received { kind, seq, len } => {
                write!(
                    f,
                    "{} #{seq} received ({len} B), ack #{seq} sent",
                    kind_name(*kind)
                )
            }
            Event::Delivered { seq, len } => write!(f, "data #{seq} received ({len} B)"),
            Event::Ahead { seq, len, expected } => write!(
                f,
                "data #{seq} received ({len} B) ahead of #{expected}: kept, gap acknowledged"
            ),
            Event::Duplicate { kind, seq } => {
                // Only data is ever written: the other packets say what was kept instead.
                let why = match kind {
                    Kind::Data => " (not written twice)",
                    Kind::End => " (already verified and stored)",
                    Kind::Accept | Kind::Request => " (our acknowledgement was lost)",
                    _ => "",
                };
                write!(
                    f,
                    "duplicate {} #{seq} acknowledged again{why}",
                    kind_name(*kind)
                )
            }
            Event::Deferred { seq } => write!(
                f,
                "data #{seq} not taken: storage busy (not acknowledged; the sender resends it)"
            ),
            Event::Stale { kind, seq } => write!(
                f,
                "stale {} #{seq} ignored (only a timeout causes a resend)",
                kind_name(*kind)
            ),
            Event::Dropped(WireError::BadChecksum) => {
                f.write_str("datagram with a bad checksum dropped")
            }
            Event::Dropped(e) => write!(f, "datagram dropped: {e}"),
            Event::Foreign => f.write_str("datagram for another session dropped"),
            Event::Storing { seq } => {
                write!(
                    f,
                    "storing the file: wait #{seq} sent (done is not to be resent)"
                )
            }
            Event::Waiting { seq, rtt } => match rtt {
                Some(rtt) => write!(
                    f,
                    "wait #{seq} received, round trip {}: the receiver is storing the file",
                    ms(*rtt)
                ),
                None => write!(f, "wait #{seq} received: the receiver is storing the file"),
            },
            Event::Stored { seq } => write!(
                f,
                "ack #{seq} received: the receiver has stored the file (transfer complete)"
            ),
            Event::Retried { rtt } => match rtt {
                Some(rtt) => write!(
                    f,
                    "retry received (address check), round trip {}: the request goes again with its token",
                    ms(*rtt)
                ),
                None => f.write_str(
                    "retry received (address check): the request goes again with its token",
                ),
            },
            Event::RetrySent => {
                f.write_str("retry sent (address check: no session until the client answers)")
            }
            Event::Verified { length, crc } => {
                write!(
                    f,
                    "done received, length {length} and CRC32 {crc:08x} verified, ack sent"
                )
            }
            Event::LastBlock { seq, length } => write!(
                f,
                "last block #{seq} received (short block): {length} B stored, ack #{seq} sent (transfer complete)"
            ),
            Event::Failed(e) => write!(f, "transfer failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_wording_fits_each_packet() {
        let dup = |kind| Event::Duplicate { kind, seq: 4 }.to_string();
        assert_eq!(
            dup(Kind::Data),
            "duplicate data #4 acknowledged again (not written twice)"
        );
        assert_eq!(
            dup(Kind::End),
            "duplicate done #4 acknowledged again (already verified and stored)"
        );
        assert!(!dup(Kind::End).contains("written"));
        assert!(!dup(Kind::Accept).contains("written"));
        assert!(!dup(Kind::Request).contains("written"));
    }
}
