//! Ziplist: the compact encoding of small lists, hashes and zsets before
//! Redis 7.0, and of quicklist nodes (RDB type 14).
//!
//! Layout: u32 LE zlbytes, u32 LE zltail (offset of the last entry), u16 LE
//! zllen (65535: count by walking), entries, 0xFF. An entry is prevlen (1 byte
//! if < 254, else 0xFE and u32 LE), an encoding (strings: 00pppppp,
//! 01pppppp qqqqqqqq big-endian, 0x80 + u32 BE; integers: 0xC0 i16, 0xD0 i32,
//! 0xE0 i64, 0xF0 i24, 0xFE i8, 0xF1-0xFD the values 0-12), then the data.
//!
//! How it fits: `compact` (lists, hashes, zsets before 7.0) and the parser's
//! quicklist nodes decode with it. The decoder reads only the blob it is given,
//! never panics and never allocates; every inconsistency (prevlen, lengths, end
//! marker, header count) is a [`BlobError`] at its byte offset.

use super::elem::{canonical_int, Elem};
use super::error::BlobError;

const WHAT: &str = "ziplist";
const HEADER: usize = 10;
const END: u8 = 0xff;

fn need(blob: &[u8], p: usize, n: usize) -> Result<(), BlobError> {
    if p.checked_add(n).is_none_or(|e| e > blob.len()) {
        return Err(BlobError::new(
            WHAT,
            p,
            format!("entry needs {n} bytes past the end"),
        ));
    }
    Ok(())
}

/// Calls `f` for every entry in order; returns the entry count.
pub fn decode<'a>(
    blob: &'a [u8],
    mut f: impl FnMut(Elem<'a>) -> Result<(), BlobError>,
) -> Result<usize, BlobError> {
    let zllen = check_header(blob)?;
    let mut p = HEADER;
    let mut count = 0usize;
    let mut prev_size = 0usize;
    loop {
        need(blob, p, 1)?;
        if blob[p] == END {
            break;
        }
        let start = p;
        p = check_prevlen(blob, p, prev_size)?;
        let (elem, next) = read_entry(blob, p)?;
        p = next;
        prev_size = p - start;
        count += 1;
        f(elem)?;
    }
    check_end(blob, p, zllen, count)?;
    Ok(count)
}

/// Checks the blob is at least a header and as long as its header says;
/// returns the header's entry count (zllen).
fn check_header(blob: &[u8]) -> Result<u16, BlobError> {
    if blob.len() < HEADER + 1 {
        return Err(BlobError::new(
            WHAT,
            0,
            format!("{} bytes is shorter than a header", blob.len()),
        ));
    }
    let zlbytes = u32::from_le_bytes([blob[0], blob[1], blob[2], blob[3]]) as usize;
    if zlbytes != blob.len() {
        return Err(BlobError::new(
            WHAT,
            0,
            format!("header says {zlbytes} bytes, blob has {}", blob.len()),
        ));
    }
    Ok(u16::from_le_bytes([blob[8], blob[9]]))
}

/// Reads the prevlen of the entry at `p`, checks it against the previous
/// entry's size, and returns the offset of the entry's encoding byte.
#[inline]
fn check_prevlen(blob: &[u8], p: usize, prev_size: usize) -> Result<usize, BlobError> {
    let (prevlen, next) = if blob[p] < 254 {
        (blob[p] as usize, p + 1)
    } else if blob[p] == 254 {
        need(blob, p, 5)?;
        let v = u32::from_le_bytes([blob[p + 1], blob[p + 2], blob[p + 3], blob[p + 4]]);
        (v as usize, p + 5)
    } else {
        return Err(BlobError::new(WHAT, p, "invalid prevlen byte 0xff"));
    };
    if prevlen != prev_size {
        return Err(BlobError::new(
            WHAT,
            p,
            format!("prevlen {prevlen} but previous entry has {prev_size} bytes"),
        ));
    }
    Ok(next)
}

/// Reads the entry whose encoding byte is at `p`: the element and the offset
/// just past it.
#[inline]
fn read_entry(blob: &[u8], p: usize) -> Result<(Elem<'_>, usize), BlobError> {
    need(blob, p, 1)?;
    let e = blob[p];
    let (header, len) = match e >> 6 {
        0 => (1, (e & 0x3f) as usize),
        1 => {
            need(blob, p, 2)?;
            (2, (((e & 0x3f) as usize) << 8) | blob[p + 1] as usize)
        }
        2 if e == 0x80 => {
            need(blob, p, 5)?;
            let len = u32::from_be_bytes([blob[p + 1], blob[p + 2], blob[p + 3], blob[p + 4]]);
            (5, len as usize)
        }
        2 => return Err(invalid_encoding(p, e)),
        _ => {
            let (size, v) = read_int(blob, p, e)?;
            return Ok((Elem::Int(v), p + 1 + size));
        }
    };
    let data = p + header;
    need(blob, data, len)?;
    Ok((Elem::Str(&blob[data..data + len]), data + len))
}

/// Reads the integer of the entry whose encoding byte `e` is at `p`: the
/// integer's size in bytes after the encoding byte, and its value.
#[inline]
fn read_int(blob: &[u8], p: usize, e: u8) -> Result<(usize, i64), BlobError> {
    let size = match e {
        0xc0 => 2,
        0xd0 => 4,
        0xe0 => 8,
        0xf0 => 3,
        0xfe => 1,
        0xf1..=0xfd => return Ok((0, ((e & 0x0f) - 1) as i64)),
        _ => return Err(invalid_encoding(p, e)),
    };
    need(blob, p, 1 + size)?;
    let b = &blob[p + 1..p + 1 + size];
    let v = match size {
        1 => b[0] as i8 as i64,
        2 => i16::from_le_bytes([b[0], b[1]]) as i64,
        3 => (i32::from_le_bytes([0, b[0], b[1], b[2]]) >> 8) as i64,
        4 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64,
        _ => i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
    };
    Ok((size, v))
}

fn invalid_encoding(p: usize, e: u8) -> BlobError {
    BlobError::new(WHAT, p, format!("invalid encoding byte 0x{e:02x}"))
}

/// Checks the end marker is the blob's last byte and the header's count
/// (unless 65535, "count by walking") matches the entries found.
fn check_end(blob: &[u8], p: usize, zllen: u16, count: usize) -> Result<(), BlobError> {
    if p + 1 != blob.len() {
        return Err(BlobError::new(
            WHAT,
            p,
            "end marker before the end of the blob",
        ));
    }
    if zllen != u16::MAX && zllen as usize != count {
        return Err(BlobError::new(
            WHAT,
            8,
            format!("header counts {zllen} entries, found {count}"),
        ));
    }
    Ok(())
}

/// Decodes all entries into a vector.
pub fn decode_all(blob: &[u8]) -> Result<Vec<Elem<'_>>, BlobError> {
    let mut out = Vec::new();
    decode(blob, |e| {
        out.push(e);
        Ok(())
    })?;
    Ok(out)
}

/// Builds a ziplist entry by entry.
#[derive(Debug)]
pub struct ZiplistWriter {
    buf: Vec<u8>,
    count: usize,
    prev_size: usize,
    last_start: usize,
}

impl Default for ZiplistWriter {
    fn default() -> Self {
        ZiplistWriter::new()
    }
}

impl ZiplistWriter {
    /// An empty ziplist.
    pub fn new() -> ZiplistWriter {
        ZiplistWriter {
            buf: vec![0; HEADER],
            count: 0,
            prev_size: 0,
            last_start: HEADER,
        }
    }

    fn begin(&mut self) -> usize {
        let start = self.buf.len();
        if self.prev_size < 254 {
            self.buf.push(self.prev_size as u8);
        } else {
            self.buf.push(254);
            self.buf
                .extend_from_slice(&(self.prev_size as u32).to_le_bytes());
        }
        start
    }

    fn end(&mut self, start: usize) {
        self.prev_size = self.buf.len() - start;
        self.last_start = start;
        self.count += 1;
    }

    /// Appends an integer in the smallest encoding.
    pub fn push_int(&mut self, v: i64) {
        let start = self.begin();
        if (0..=12).contains(&v) {
            self.buf.push(0xf1 + v as u8);
        } else if i8::try_from(v).is_ok() {
            self.buf.push(0xfe);
            self.buf.push(v as i8 as u8);
        } else if i16::try_from(v).is_ok() {
            self.buf.push(0xc0);
            self.buf.extend_from_slice(&(v as i16).to_le_bytes());
        } else if (-(1 << 23)..(1 << 23)).contains(&v) {
            self.buf.push(0xf0);
            self.buf.extend_from_slice(&(v as i32).to_le_bytes()[..3]);
        } else if i32::try_from(v).is_ok() {
            self.buf.push(0xd0);
            self.buf.extend_from_slice(&(v as i32).to_le_bytes());
        } else {
            self.buf.push(0xe0);
            self.buf.extend_from_slice(&v.to_le_bytes());
        }
        self.end(start);
    }

    /// Appends a string as bytes, never as an integer.
    pub fn push_raw_str(&mut self, s: &[u8]) {
        let start = self.begin();
        let len = s.len();
        if len < 64 {
            self.buf.push(len as u8);
        } else if len < 16384 {
            self.buf.push(0x40 | (len >> 8) as u8);
            self.buf.push(len as u8);
        } else {
            self.buf.push(0x80);
            self.buf.extend_from_slice(&(len as u32).to_be_bytes());
        }
        self.buf.extend_from_slice(s);
        self.end(start);
    }

    /// Appends a string, as an integer when it is a canonical one (as Redis does).
    pub fn push_str(&mut self, s: &[u8]) {
        match canonical_int(s) {
            Some(v) => self.push_int(v),
            None => self.push_raw_str(s),
        }
    }

    /// Appends an element as stored.
    pub fn push(&mut self, e: Elem<'_>) {
        match e {
            Elem::Int(v) => self.push_int(v),
            Elem::Str(s) => self.push_raw_str(s),
        }
    }

    /// Entries so far.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The finished ziplist.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.push(END);
        let total = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&total.to_le_bytes());
        self.buf[4..8].copy_from_slice(&(self.last_start as u32).to_le_bytes());
        let count = u16::try_from(self.count).unwrap_or(u16::MAX);
        self.buf[8..10].copy_from_slice(&count.to_le_bytes());
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_edges() {
        let mut w = ZiplistWriter::new();
        let ints = [
            0i64,
            12,
            13,
            -1,
            127,
            -128,
            128,
            32767,
            -32768,
            1 << 23,
            -(1 << 23),
            i32::MAX as i64,
            i64::MIN,
        ];
        for v in ints {
            w.push_int(v);
        }
        let big = vec![7u8; 20_000];
        w.push_raw_str(&big);
        w.push_raw_str(&[1u8; 300]);
        w.push_raw_str(b"");
        let zl = w.finish();
        let got = decode_all(&zl).expect("decodes");
        for (i, v) in ints.iter().enumerate() {
            assert_eq!(got[i], Elem::Int(*v));
        }
        assert_eq!(got[ints.len()], Elem::Str(&big));
        assert_eq!(got.len(), ints.len() + 3);
    }
}
