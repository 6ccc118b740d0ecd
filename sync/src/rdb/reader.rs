//! The byte layer of the RDB parser: a buffered reader that knows its offset,
//! feeds the CRC64 in bulk, can capture a key's raw object bytes, and decodes
//! the RDB primitives (lengths, strings with their int and LZF encodings,
//! doubles, millisecond times).
//!
//! Bytes are checksummed and captured lazily: everything before `pos` that has
//! not been accounted yet (`mark..pos`) is fed to the CRC and the capture only
//! when the buffer is refilled, when a direct read bypasses it, or when someone
//! asks for the checksum or the capture. That keeps the per-byte cost of
//! `read_u8` to a bounds check and the CRC on large slices.
//!
//! Allocation is bounded by bytes actually present: a string's buffer grows as
//! its bytes arrive (in steps of at most [`GROW_STEP`]), so a corrupt length of
//! 500 MB in a 1 KB file fails with `UnexpectedEof`, not with a 500 MB allocation.
//!
//! How it fits: only the parser uses it (private to `rdb`). It must never reserve
//! memory for a length before the bytes are there, and never let a byte escape the
//! CRC or the raw capture.

use std::io::{self, Read};

use super::crc64::Crc64;
use super::error::RdbError;

/// Size of the read buffer.
const BUF_SIZE: usize = 64 * 1024;
/// A direct read into a string grows its buffer by at most this much at a time.
const GROW_STEP: usize = 1024 * 1024;

/// A raw-bytes capture (for RESTORE passthrough): bounded by `max`.
struct Capture {
    bytes: Vec<u8>,
    max: usize,
    overflowed: bool,
}

impl Capture {
    fn push(&mut self, data: &[u8]) {
        if self.overflowed {
            return;
        }
        if self.bytes.len() + data.len() > self.max {
            self.overflowed = true;
            self.bytes = Vec::new();
            return;
        }
        self.bytes.extend_from_slice(data);
    }
}

/// How an RDB string is stored, as its header says.
#[derive(Debug, Clone, Copy)]
pub(crate) enum StringBody {
    /// An integer encoded in 1, 2 or 4 bytes (already read).
    Int(i64),
    /// `len` bytes as they are.
    Plain(usize),
    /// LZF: `clen` compressed bytes that give `rlen` bytes.
    Lzf { clen: usize, rlen: usize },
}

/// A string's header: where it starts and how its body is stored.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StringHead {
    pub(crate) start: u64,
    pub(crate) body: StringBody,
}

impl StringHead {
    /// The length of a plain or LZF string (what its body will give); 0 for an
    /// integer, whose few digits are made, not read.
    pub(crate) fn body_len(&self) -> usize {
        match self.body {
            StringBody::Int(_) => 0,
            StringBody::Plain(len) => len,
            StringBody::Lzf { rlen, .. } => rlen,
        }
    }

    /// Reads the body piece by piece from here on (see `Input::read_string_piece`);
    /// for plain and LZF strings.
    pub(crate) fn into_pieces(self, what: &'static str) -> StringPieces {
        debug_assert!(!matches!(self.body, StringBody::Int(_)));
        let lzf = match self.body {
            StringBody::Lzf { clen, .. } => Some(LzfPieces {
                compressed_left: clen,
                window: Vec::new(),
            }),
            _ => None,
        };
        let raw_left = self.body_len();
        StringPieces {
            start: self.start,
            what,
            raw_left,
            lzf,
        }
    }
}

/// A string being read piece by piece.
#[derive(Debug)]
pub(crate) struct StringPieces {
    start: u64,
    what: &'static str,
    /// Bytes of the string not yet returned.
    pub(crate) raw_left: usize,
    lzf: Option<LzfPieces>,
}

/// LZF decoding state between pieces.
#[derive(Debug)]
struct LzfPieces {
    compressed_left: usize,
    /// The last output bytes (at most 8 KiB), which back references reach into.
    window: Vec<u8>,
}

fn lzf_corrupt(offset: u64, what: &'static str, e: super::lzf::LzfError) -> RdbError {
    RdbError::Corrupt {
        offset,
        what,
        detail: format!("LZF data does not decompress: {}", e.0),
    }
}

/// A buffered reader with offset, CRC and capture. See the module doc.
pub(crate) struct Input<R> {
    inner: R,
    buf: Box<[u8]>,
    /// Next unread byte in `buf`.
    pos: usize,
    /// End of valid data in `buf`.
    end: usize,
    /// Bytes of `buf` before `mark` have been fed to the CRC and capture.
    mark: usize,
    /// File offset of `buf[0]`.
    base: u64,
    crc: Option<Crc64>,
    capture: Option<Capture>,
    /// Largest string accepted (bytes).
    pub(crate) string_bytes_max: u64,
}

impl<R: Read> Input<R> {
    pub(crate) fn new(inner: R, checksum: bool, string_bytes_max: u64) -> Input<R> {
        Input {
            inner,
            buf: vec![0u8; BUF_SIZE].into_boxed_slice(),
            pos: 0,
            end: 0,
            mark: 0,
            base: 0,
            crc: if checksum { Some(Crc64::new()) } else { None },
            capture: None,
            string_bytes_max,
        }
    }

    /// The reader and the bytes read ahead from it but not consumed.
    pub(crate) fn into_parts(self) -> (R, Vec<u8>) {
        let rest = self.buf[self.pos..self.end].to_vec();
        (self.inner, rest)
    }

    /// Offset of the next byte to be read.
    #[inline]
    pub(crate) fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    /// Feeds `buf[mark..pos]` to the CRC and the capture.
    fn account(&mut self) {
        debug_assert!(self.mark <= self.pos);
        if self.mark == self.pos {
            return;
        }
        let data = &self.buf[self.mark..self.pos];
        if let Some(crc) = self.crc.as_mut() {
            crc.update(data);
        }
        if let Some(cap) = self.capture.as_mut() {
            cap.push(data);
        }
        self.mark = self.pos;
    }

    /// Makes at least `need` bytes available in the buffer (`need <= BUF_SIZE`).
    /// Returns false at end of input before `need` bytes.
    #[cold]
    fn fill(&mut self, need: usize) -> Result<bool, RdbError> {
        assert!(need <= self.buf.len());
        self.account();
        // Compact: move the unread tail to the front.
        let tail = self.end - self.pos;
        self.buf.copy_within(self.pos..self.end, 0);
        self.base += self.pos as u64;
        self.pos = 0;
        self.mark = 0;
        self.end = tail;
        while self.end < need {
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(0) => return Ok(false),
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(RdbError::Io {
                        offset: self.base + self.end as u64,
                        source: e,
                    })
                }
            }
        }
        Ok(true)
    }

    /// True when no byte is left (reads more to find out).
    pub(crate) fn at_eof(&mut self) -> Result<bool, RdbError> {
        if self.pos < self.end {
            return Ok(false);
        }
        Ok(!self.fill(1)?)
    }

    #[inline]
    pub(crate) fn read_u8(&mut self, what: &'static str) -> Result<u8, RdbError> {
        if self.pos == self.end && !self.fill(1)? {
            return Err(self.eof(what));
        }
        let b = self.buf[self.pos];
        self.pos += 1;
        Ok(b)
    }

    /// Reads exactly N bytes (N small).
    #[inline]
    pub(crate) fn read_array<const N: usize>(
        &mut self,
        what: &'static str,
    ) -> Result<[u8; N], RdbError> {
        if self.end - self.pos < N && !self.fill(N)? {
            return Err(self.eof(what));
        }
        let mut out = [0u8; N];
        out.copy_from_slice(&self.buf[self.pos..self.pos + N]);
        self.pos += N;
        Ok(out)
    }

    fn eof(&self, what: &'static str) -> RdbError {
        RdbError::UnexpectedEof {
            offset: self.base + self.end as u64,
            what,
        }
    }

    /// Appends exactly `n` bytes to `out`. The caller has checked `n` against
    /// its limit; `out` grows only as bytes arrive.
    pub(crate) fn read_into(
        &mut self,
        n: usize,
        out: &mut Vec<u8>,
        what: &'static str,
    ) -> Result<(), RdbError> {
        let avail = self.end - self.pos;
        if n <= avail {
            out.extend_from_slice(&self.buf[self.pos..self.pos + n]);
            self.pos += n;
            return Ok(());
        }
        out.reserve(n.min(avail + GROW_STEP));
        out.extend_from_slice(&self.buf[self.pos..self.end]);
        self.pos = self.end;
        let mut left = n - avail;
        if left < self.buf.len() / 2 {
            if !self.fill(left)? {
                return Err(self.eof(what));
            }
            out.extend_from_slice(&self.buf[..left]);
            self.pos = left;
            return Ok(());
        }
        // Large: read straight into `out`, bypassing the buffer.
        self.account();
        self.base += self.pos as u64;
        self.pos = 0;
        self.end = 0;
        self.mark = 0;
        while left > 0 {
            let step = left.min(GROW_STEP);
            let start = out.len();
            out.resize(start + step, 0);
            let mut got = 0;
            while got < step {
                match self.inner.read(&mut out[start + got..start + step]) {
                    Ok(0) => {
                        out.truncate(start + got);
                        return Err(RdbError::UnexpectedEof {
                            offset: self.base + got as u64,
                            what,
                        });
                    }
                    Ok(k) => got += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        return Err(RdbError::Io {
                            offset: self.base + got as u64,
                            source: e,
                        })
                    }
                }
            }
            // Feed the chunk to CRC/capture without holding two borrows of self.
            if let Some(crc) = self.crc.as_mut() {
                crc.update(&out[start..]);
            }
            if let Some(cap) = self.capture.as_mut() {
                cap.push(&out[start..]);
            }
            self.base += step as u64;
            left -= step;
        }
        Ok(())
    }

    /// The CRC of everything consumed so far (None when checksums are off).
    pub(crate) fn crc_value(&mut self) -> Option<u64> {
        self.account();
        self.crc.as_ref().map(Crc64::value)
    }

    /// Stops checksumming (after the EOF opcode: the checksum itself is not covered).
    pub(crate) fn stop_crc(&mut self) {
        self.account();
        self.crc = None;
    }

    /// Starts capturing raw bytes from the next byte on, with `prefix` first.
    pub(crate) fn start_capture(&mut self, prefix: &[u8], max: usize) {
        self.account();
        let mut cap = Capture {
            bytes: Vec::new(),
            max,
            overflowed: false,
        };
        cap.push(prefix);
        self.capture = Some(cap);
    }

    /// Ends the capture: the bytes, or None if it grew past its limit.
    pub(crate) fn finish_capture(&mut self) -> Option<Vec<u8>> {
        self.account();
        let cap = self.capture.take()?;
        if cap.overflowed {
            None
        } else {
            Some(cap.bytes)
        }
    }

    // ---- RDB primitives -------------------------------------------------

    /// Reads an RDB length. Returns (value, is_encoded): when `is_encoded`,
    /// the value is a special string encoding (0 int8, 1 int16, 2 int32, 3 LZF).
    pub(crate) fn read_len_raw(&mut self, what: &'static str) -> Result<(u64, bool), RdbError> {
        let start = self.offset();
        let b = self.read_u8(what)?;
        match b >> 6 {
            0 => Ok(((b & 0x3f) as u64, false)),
            1 => {
                let b2 = self.read_u8(what)?;
                Ok(((((b & 0x3f) as u64) << 8) | b2 as u64, false))
            }
            3 => Ok(((b & 0x3f) as u64, true)),
            _ => match b {
                0x80 => Ok((u32::from_be_bytes(self.read_array(what)?) as u64, false)),
                0x81 => Ok((u64::from_be_bytes(self.read_array(what)?), false)),
                _ => Err(RdbError::Corrupt {
                    offset: start,
                    what,
                    detail: format!("invalid length prefix byte 0x{b:02x}"),
                }),
            },
        }
    }

    /// Reads a plain length (an encoded-string marker here is corruption).
    #[inline]
    pub(crate) fn read_len(&mut self, what: &'static str) -> Result<u64, RdbError> {
        let start = self.offset();
        let (v, enc) = self.read_len_raw(what)?;
        if enc {
            return Err(RdbError::Corrupt {
                offset: start,
                what,
                detail: "a string encoding marker where a length was expected".into(),
            });
        }
        Ok(v)
    }

    fn check_string_len(
        &self,
        len: u64,
        offset: u64,
        what: &'static str,
    ) -> Result<usize, RdbError> {
        if len > self.string_bytes_max {
            return Err(RdbError::LimitExceeded {
                offset,
                what,
                len,
                limit: self.string_bytes_max,
            });
        }
        usize::try_from(len).map_err(|_| RdbError::LimitExceeded {
            offset,
            what,
            len,
            limit: usize::MAX as u64,
        })
    }

    /// Reads an RDB string's header: how it is stored and how long it is.
    pub(crate) fn read_string_head(&mut self, what: &'static str) -> Result<StringHead, RdbError> {
        let start = self.offset();
        let (len, enc) = self.read_len_raw(what)?;
        if !enc {
            let len = self.check_string_len(len, start, what)?;
            return Ok(StringHead {
                start,
                body: StringBody::Plain(len),
            });
        }
        let body = match len {
            0 => StringBody::Int(self.read_u8(what)? as i8 as i64),
            1 => StringBody::Int(i16::from_le_bytes(self.read_array(what)?) as i64),
            2 => StringBody::Int(i32::from_le_bytes(self.read_array(what)?) as i64),
            3 => {
                let clen = self.read_len(what)?;
                let rlen = self.read_len(what)?;
                let clen = self.check_string_len(clen, start, what)?;
                let rlen = self.check_string_len(rlen, start, what)?;
                // LZF expands at most ~ 264 bytes per 3 input bytes; a claim beyond
                // that is corrupt, and checking it bounds the output allocation by the
                // compressed bytes actually present.
                if clen == 0 || rlen > clen.saturating_mul(90).saturating_add(64) {
                    return Err(RdbError::Corrupt {
                        offset: start,
                        what,
                        detail: format!("LZF lengths compressed {clen}, raw {rlen} are impossible"),
                    });
                }
                StringBody::Lzf { clen, rlen }
            }
            other => {
                return Err(RdbError::Corrupt {
                    offset: start,
                    what,
                    detail: format!("unknown string encoding {other}"),
                })
            }
        };
        Ok(StringHead { start, body })
    }

    /// Reads an RDB string (plain, int-encoded or LZF) into `out` (appended).
    pub(crate) fn read_string_into(
        &mut self,
        out: &mut Vec<u8>,
        what: &'static str,
    ) -> Result<(), RdbError> {
        let head = self.read_string_head(what)?;
        self.read_string_body(head, out, what)
    }

    /// Reads the rest of a string whose head has been read, whole, into `out`.
    pub(crate) fn read_string_body(
        &mut self,
        head: StringHead,
        out: &mut Vec<u8>,
        what: &'static str,
    ) -> Result<(), RdbError> {
        match head.body {
            StringBody::Plain(len) => self.read_into(len, out, what),
            StringBody::Int(v) => {
                push_int(out, v);
                Ok(())
            }
            StringBody::Lzf { clen, rlen } => self.read_lzf_into(head.start, clen, rlen, out, what),
        }
    }

    fn read_lzf_into(
        &mut self,
        start: u64,
        clen: usize,
        rlen: usize,
        out: &mut Vec<u8>,
        what: &'static str,
    ) -> Result<(), RdbError> {
        let res = if clen <= self.buf.len() {
            // Decompress straight from the read buffer: no copy of the input.
            if self.end - self.pos < clen && !self.fill(clen)? {
                return Err(self.eof(what));
            }
            let r = super::lzf::decompress_into(&self.buf[self.pos..self.pos + clen], rlen, out);
            self.pos += clen;
            r
        } else {
            let mut compressed = Vec::new();
            self.read_into(clen, &mut compressed, what)?;
            super::lzf::decompress_into(&compressed, rlen, out)
        };
        res.map_err(|e| lzf_corrupt(start, what, e))
    }

    /// The next piece of a string read piece by piece: at most `piece_bytes` (an
    /// LZF piece may end up to one instruction, 264 bytes, longer). Memory held is
    /// the piece and, for LZF, the last 8 KiB of output (what back references
    /// reach), whatever the string's length.
    pub(crate) fn read_string_piece(
        &mut self,
        pieces: &mut StringPieces,
        piece_bytes: usize,
    ) -> Result<Vec<u8>, RdbError> {
        let what = pieces.what;
        let want = pieces.raw_left.min(piece_bytes);
        let piece = match pieces.lzf.as_mut() {
            None => {
                let mut piece = Vec::new();
                self.read_into(want, &mut piece, what)?;
                piece
            }
            Some(lzf) => {
                let mut out = std::mem::take(&mut lzf.window);
                let hist = out.len();
                let stop = hist + want;
                let end = hist + pieces.raw_left;
                out.reserve(want + 264);
                while out.len() < stop {
                    let need = lzf.compressed_left.min(super::lzf::INSTRUCTION_BYTES_MAX);
                    if need == 0 {
                        return Err(lzf_corrupt(
                            pieces.start,
                            what,
                            super::lzf::LzfError("output shorter than the stated length"),
                        ));
                    }
                    if self.end - self.pos < need && !self.fill(need)? {
                        return Err(self.eof(what));
                    }
                    let avail = (self.end - self.pos).min(lzf.compressed_left);
                    let used = super::lzf::decode_some(
                        &self.buf[self.pos..self.pos + avail],
                        &mut out,
                        0,
                        stop,
                        end,
                    )
                    .map_err(|e| lzf_corrupt(pieces.start, what, e))?;
                    if used == 0 {
                        return Err(lzf_corrupt(
                            pieces.start,
                            what,
                            super::lzf::LzfError("an instruction runs past the end of the input"),
                        ));
                    }
                    self.pos += used;
                    lzf.compressed_left -= used;
                }
                let piece = out.split_off(hist);
                // Keep what the next back references may reach.
                out.extend_from_slice(
                    &piece[piece.len().saturating_sub(super::lzf::WINDOW_BYTES)..],
                );
                out.drain(..out.len().saturating_sub(super::lzf::WINDOW_BYTES));
                lzf.window = out;
                piece
            }
        };
        debug_assert!(piece.len() <= pieces.raw_left);
        pieces.raw_left -= piece.len();
        if pieces.raw_left == 0 && pieces.lzf.as_ref().is_some_and(|l| l.compressed_left > 0) {
            return Err(lzf_corrupt(
                pieces.start,
                what,
                super::lzf::LzfError("compressed bytes left after the stated length"),
            ));
        }
        Ok(piece)
    }

    /// Reads an RDB string into a new vector.
    #[inline]
    pub(crate) fn read_string(&mut self, what: &'static str) -> Result<Vec<u8>, RdbError> {
        let mut v = Vec::new();
        self.read_string_into(&mut v, what)?;
        Ok(v)
    }

    /// An 8-byte little-endian millisecond time (or other u64).
    #[inline]
    pub(crate) fn read_u64_le(&mut self, what: &'static str) -> Result<u64, RdbError> {
        Ok(u64::from_le_bytes(self.read_array(what)?))
    }

    /// An 8-byte little-endian binary double (zset2 scores, module doubles).
    pub(crate) fn read_f64_le(&mut self, what: &'static str) -> Result<f64, RdbError> {
        Ok(f64::from_le_bytes(self.read_array(what)?))
    }

    /// A string-encoded double (type 3 zsets): length byte, 253 NaN, 254 +inf, 255 -inf.
    pub(crate) fn read_string_double(&mut self, what: &'static str) -> Result<f64, RdbError> {
        let start = self.offset();
        let len = self.read_u8(what)?;
        match len {
            253 => Ok(f64::NAN),
            254 => Ok(f64::INFINITY),
            255 => Ok(f64::NEG_INFINITY),
            n => {
                let mut buf = [0u8; 252];
                let n = n as usize;
                if self.end - self.pos < n && !self.fill(n)? {
                    return Err(self.eof(what));
                }
                buf[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
                self.pos += n;
                parse_f64(&buf[..n]).ok_or_else(|| RdbError::Corrupt {
                    offset: start,
                    what,
                    detail: format!("{:?} is not a number", String::from_utf8_lossy(&buf[..n])),
                })
            }
        }
    }
}

/// Appends the decimal form of `v` (what Redis returns for an int-encoded string).
#[inline]
pub(crate) fn push_int(out: &mut Vec<u8>, v: i64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let neg = v < 0;
    let mut u = v.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (u % 10) as u8;
        u /= 10;
        if u == 0 {
            break;
        }
    }
    if neg {
        out.push(b'-');
    }
    out.extend_from_slice(&buf[i..]);
}

/// The decimal form of `v` as a new vector.
#[inline]
pub(crate) fn int_bytes(v: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(20);
    push_int(&mut out, v);
    out
}

/// Parses a double the way Redis writes them (`%.17g`, "inf", "-inf", "nan").
pub(crate) fn parse_f64(bytes: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(bytes).ok()?;
    let s = s.trim_end_matches('\0');
    match s {
        "inf" | "+inf" | "infinity" => return Some(f64::INFINITY),
        "-inf" | "-infinity" => return Some(f64::NEG_INFINITY),
        _ => {}
    }
    s.parse::<f64>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(bytes: &[u8]) -> Input<&[u8]> {
        Input::new(bytes, true, 1 << 20)
    }

    #[test]
    fn lengths() {
        let mut i = input(&[
            0x05, 0x41, 0x02, 0x80, 0, 1, 0, 0, 0x81, 0, 0, 0, 1, 0, 0, 0, 0,
        ]);
        assert_eq!(i.read_len("t").ok(), Some(5));
        assert_eq!(i.read_len("t").ok(), Some(0x102));
        assert_eq!(i.read_len("t").ok(), Some(0x10000));
        assert_eq!(i.read_len("t").ok(), Some(1u64 << 32));
    }

    #[test]
    fn int_strings() {
        let mut i = input(&[0xc0, 0xfe, 0xc1, 0x00, 0x80, 0xc2, 0xff, 0xff, 0xff, 0x7f]);
        assert_eq!(i.read_string("t").ok(), Some(b"-2".to_vec()));
        assert_eq!(i.read_string("t").ok(), Some(b"-32768".to_vec()));
        assert_eq!(i.read_string("t").ok(), Some(b"2147483647".to_vec()));
    }

    #[test]
    fn huge_length_is_eof_not_allocation() {
        let mut i = Input::new(&[0x80, 0x10, 0, 0, 0, b'a'][..], false, u64::MAX);
        assert!(matches!(
            i.read_string("t"),
            Err(RdbError::UnexpectedEof { .. })
        ));
    }

    #[test]
    fn long_string_direct_read_keeps_crc() {
        let payload: Vec<u8> = (0..200_000u32).map(|x| x as u8).collect();
        let mut data = vec![0x80];
        data.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        data.extend_from_slice(&payload);
        let mut i = Input::new(&data[..], true, u64::MAX);
        assert_eq!(i.read_string("t").ok(), Some(payload));
        assert_eq!(i.crc_value(), Some(crate::rdb::crc64::crc64(&data)));
    }

    #[test]
    fn ints_format() {
        assert_eq!(int_bytes(i64::MIN), i64::MIN.to_string().into_bytes());
        assert_eq!(int_bytes(0), b"0");
        assert_eq!(int_bytes(-7), b"-7");
    }
}
