//! Netascii (RFC 1350 §1, RFC 764's NVT ASCII line ends) as streaming converters.
//!
//! On the wire a line ends in CR LF and a bare carriage return is CR NUL; on this side a
//! line ends in LF. Both directions keep their state across calls, so a pair that falls
//! across two blocks (a CR at the end of one DATA, its LF or NUL at the start of the
//! next) converts exactly as if it had arrived whole.
//!
//! - [`Encoder`] (local → wire): LF → CR LF, CR → CR NUL, every other byte unchanged.
//! - [`Decoder`] (wire → local): CR LF → LF, CR NUL → CR; a CR followed by anything
//!   else is kept as it is (stock servers are as lenient), and a CR at the very end of
//!   the stream is kept ([`Decoder::finish`]).
//!
//! Decoding what was encoded gives back the original bytes, for every input
//! (property-tested). [`EncodingReader`] and [`DecodingWriter`] wrap any `Read` or
//! `Write`; neither allocates after it is made.

use std::io::{self, Read, Write};

const CR: u8 = b'\r';
const LF: u8 = b'\n';
const NUL: u8 = 0;

/// Local text to netascii, incrementally.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Encoder {
    /// The second byte of a pair whose CR filled the previous output.
    pending: Option<u8>,
}

impl Encoder {
    pub fn new() -> Encoder {
        Encoder::default()
    }

    /// Converts as much of `input` as fits into `out`: returns (bytes of `input`
    /// consumed, bytes written). A pair that does not fit is split: its CR is written and
    /// the rest comes first in the next call (whose `input` may then be empty).
    pub fn encode(&mut self, input: &[u8], out: &mut [u8]) -> (usize, usize) {
        let mut w = 0;
        if let Some(b) = self.pending {
            if out.is_empty() {
                return (0, 0);
            }
            out[0] = b;
            w = 1;
            self.pending = None;
        }
        let mut r = 0;
        while r < input.len() && w < out.len() {
            let b = input[r];
            r += 1;
            let second = match b {
                LF => LF,
                CR => NUL,
                _ => {
                    out[w] = b;
                    w += 1;
                    continue;
                }
            };
            out[w] = CR;
            w += 1;
            if w < out.len() {
                out[w] = second;
                w += 1;
            } else {
                self.pending = Some(second);
            }
        }
        (r, w)
    }

    /// Whether a split pair's second byte is still to be written.
    pub fn has_pending(&self) -> bool {
        self.pending.is_some()
    }
}

/// Netascii to local text, incrementally.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Decoder {
    /// The last byte seen was a CR, not yet written.
    cr: bool,
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Converts all of `input` into `out`, returning the bytes written. `out` must hold
    /// at least `input.len() + 1` bytes (a CR held from the last call may come out
    /// before this call's bytes); with less, this panics.
    pub fn decode(&mut self, input: &[u8], out: &mut [u8]) -> usize {
        assert!(
            out.len() > input.len(),
            "netascii decode needs input + 1 bytes of room"
        );
        let mut w = 0;
        for &b in input {
            if self.cr {
                self.cr = false;
                match b {
                    LF => {
                        out[w] = LF;
                        w += 1;
                    }
                    NUL => {
                        out[w] = CR;
                        w += 1;
                    }
                    CR => {
                        out[w] = CR;
                        w += 1;
                        self.cr = true;
                    }
                    _ => {
                        out[w] = CR;
                        out[w + 1] = b;
                        w += 2;
                    }
                }
            } else if b == CR {
                self.cr = true;
            } else {
                out[w] = b;
                w += 1;
            }
        }
        w
    }

    /// The end of the stream: a CR still held is the last byte (`Some(b'\r')`).
    pub fn finish(&mut self) -> Option<u8> {
        std::mem::take(&mut self.cr).then_some(CR)
    }
}

/// A reader that yields the netascii form of another reader's bytes.
#[derive(Debug)]
pub struct EncodingReader<R> {
    inner: R,
    enc: Encoder,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    eof: bool,
}

impl<R: Read> EncodingReader<R> {
    pub fn new(inner: R) -> EncodingReader<R> {
        EncodingReader {
            inner,
            enc: Encoder::new(),
            buf: vec![0u8; 16 * 1024].into_boxed_slice(),
            start: 0,
            end: 0,
            eof: false,
        }
    }

    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Read for EncodingReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            if self.start == self.end && !self.eof {
                let n = loop {
                    match self.inner.read(&mut self.buf) {
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        r => break r?,
                    }
                };
                self.start = 0;
                self.end = n;
                self.eof = n == 0;
            }
            let (r, w) = self.enc.encode(&self.buf[self.start..self.end], out);
            self.start += r;
            if w > 0 || (self.eof && !self.enc.has_pending()) {
                return Ok(w);
            }
        }
    }
}

/// A writer that stores the local form of the netascii written to it. Call
/// [`DecodingWriter::finish`] at the end of the stream, or a final lone CR is lost.
#[derive(Debug)]
pub struct DecodingWriter<W> {
    inner: W,
    dec: Decoder,
    buf: Box<[u8]>,
}

impl<W: Write> DecodingWriter<W> {
    pub fn new(inner: W) -> DecodingWriter<W> {
        DecodingWriter {
            inner,
            dec: Decoder::new(),
            buf: vec![0u8; 64 * 1024 + 1].into_boxed_slice(),
        }
    }

    /// Writes a CR held back at the end of the stream; the inner writer is then
    /// complete (and still needs its own flush or commit).
    pub fn finish(&mut self) -> io::Result<()> {
        if let Some(b) = self.dec.finish() {
            match self.inner.write(&[b]) {
                Ok(1) => {}
                // A sink that would not take it now takes it once flushed.
                Ok(_) => self.inner.write_all(&[b])?,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.inner.flush()?;
                    self.inner.write_all(&[b])?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: Write> Write for DecodingWriter<W> {
    /// Takes up to 64 KiB (a whole TFTP block) at once. All or nothing towards a sink
    /// that may refuse with `WouldBlock` (a write-behind that is full): then nothing
    /// was taken and the decoder is as it was, so the same block can come again.
    fn write(&mut self, input: &[u8]) -> io::Result<usize> {
        let take = input.len().min(self.buf.len() - 1);
        let before = self.dec;
        let n = self.dec.decode(&input[..take], &mut self.buf);
        match self.inner.write(&self.buf[..n]) {
            Ok(m) if m == n => Ok(take),
            Ok(m) => {
                self.inner.write_all(&self.buf[m..n])?;
                Ok(take)
            }
            Err(e) => {
                self.dec = before;
                Err(e)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode_all(input: &[u8], chunk: usize) -> Vec<u8> {
        let mut e = Encoder::new();
        let mut out = Vec::new();
        let mut buf = vec![0u8; chunk];
        let mut rest = input;
        loop {
            let (r, w) = e.encode(rest, &mut buf);
            out.extend_from_slice(&buf[..w]);
            rest = &rest[r..];
            if rest.is_empty() && !e.has_pending() {
                return out;
            }
        }
    }

    fn decode_all(input: &[u8], chunk: usize) -> Vec<u8> {
        let mut d = Decoder::new();
        let mut out = Vec::new();
        let mut buf = vec![0u8; chunk + 1];
        for c in input.chunks(chunk) {
            let n = d.decode(c, &mut buf);
            out.extend_from_slice(&buf[..n]);
        }
        out.extend(d.finish());
        out
    }

    #[test]
    fn converts_line_ends_both_ways() {
        assert_eq!(encode_all(b"a\nb\rc\r\n", 100), b"a\r\nb\r\0c\r\0\r\n");
        assert_eq!(decode_all(b"a\r\nb\r\0c\r\0\r\n", 100), b"a\nb\rc\r\n");
        // Lenient decoding: a CR before anything else stays; a bare LF stays; a CR at
        // the end stays.
        assert_eq!(decode_all(b"a\rb\nc\r\r\n\r", 100), b"a\rb\nc\r\n\r");
    }

    #[test]
    fn pairs_split_across_blocks_convert_whole() {
        // Every block size from 1, so every pair falls across a boundary somewhere.
        let text = b"line one\nline two\r\nbare\rcr\n\n\r\r\0end\r";
        let wire = encode_all(text, 4096);
        for chunk in 1..wire.len() + 1 {
            assert_eq!(encode_all(text, chunk), wire, "encode chunk {chunk}");
            assert_eq!(decode_all(&wire, chunk), text, "decode chunk {chunk}");
        }
    }

    #[test]
    fn encoder_split_pair_waits_for_room() {
        let mut e = Encoder::new();
        let mut one = [0u8; 1];
        assert_eq!(e.encode(b"\n", &mut one), (1, 1));
        assert_eq!(one, [CR]);
        assert!(e.has_pending());
        assert_eq!(e.encode(b"", &mut []), (0, 0));
        assert_eq!(e.encode(b"x", &mut one), (0, 1));
        assert_eq!(one, [LF]);
        assert!(!e.has_pending());
    }

    #[test]
    fn round_trips_every_byte_pattern() {
        // Exhaustive over short strings of the interesting bytes.
        let alphabet = [CR, LF, NUL, b'x'];
        for len in 0..=6u32 {
            for mut k in 0..4usize.pow(len) {
                let mut s = Vec::new();
                for _ in 0..len {
                    s.push(alphabet[k % 4]);
                    k /= 4;
                }
                for chunk in [1, 2, 3, 7] {
                    let w = encode_all(&s, chunk);
                    assert_eq!(decode_all(&w, chunk), s, "{s:?} chunk {chunk}");
                }
            }
        }
    }

    /// A sink that refuses every other write with WouldBlock, taking nothing then.
    struct Balky {
        got: Vec<u8>,
        refuse: bool,
    }
    impl Write for Balky {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.refuse = !self.refuse;
            if self.refuse {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.got.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_refused_write_takes_nothing_and_the_block_can_come_again() {
        let wire = b"a\r\nb\r\0c\r";
        let mut w = DecodingWriter::new(Balky {
            got: Vec::new(),
            refuse: false,
        });
        for chunk in wire.chunks(2) {
            // Refused once, then taken whole: as a receiver resending a deferred block.
            loop {
                match w.write(chunk) {
                    Ok(n) => {
                        assert_eq!(n, chunk.len());
                        break;
                    }
                    Err(e) => assert_eq!(e.kind(), io::ErrorKind::WouldBlock),
                }
            }
        }
        w.finish().unwrap();
        assert_eq!(w.into_inner().got, b"a\nb\rc\r");
    }

    #[test]
    fn reader_and_writer_adapters() {
        let text: Vec<u8> = (0..50_000u32)
            .map(|i| [b'a', LF, CR, 0][(i % 7 % 4) as usize])
            .collect();
        let mut r = EncodingReader::new(&text[..]);
        let mut wire = Vec::new();
        let mut small = [0u8; 5];
        loop {
            let n = r.read(&mut small).unwrap();
            if n == 0 {
                break;
            }
            wire.extend_from_slice(&small[..n]);
        }
        assert_eq!(wire, encode_all(&text, 4096));
        let mut w = DecodingWriter::new(Vec::new());
        for c in wire.chunks(513) {
            w.write_all(c).unwrap();
        }
        w.finish().unwrap();
        assert_eq!(w.into_inner(), text);
    }
}
