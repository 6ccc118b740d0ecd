//! Listpack: the compact encoding of small hashes, sets, zsets, list nodes
//! (quicklist2) and stream nodes since Redis 7.0 (streams since 5.0).
//!
//! Layout: u32 LE total bytes, u16 LE element count (65535: unknown), the
//! elements, 0xFF. Each element is an encoding byte (plus length/data) and a
//! 1-5 byte "backlen" holding the element's size for reverse traversal.
//!
//! How it fits: `compact` (hashes, sets, zsets), the parser's quicklist2 nodes and
//! `stream` nodes decode with it; the DUMP and stream encoders build with
//! [`ListpackWriter`]. The decoder reads only the blob it is given, never panics
//! and never allocates; every inconsistency (lengths, backlen, end marker,
//! header count) is a [`BlobError`] at its byte offset.

use super::elem::{canonical_int, Elem};
use super::error::BlobError;

const WHAT: &str = "listpack";
const HEADER: usize = 6;
const EOF: u8 = 0xff;

/// Number of bytes the backlen of an element of `l` bytes takes.
fn backlen_size(l: usize) -> usize {
    match l {
        0..=127 => 1,
        128..=16382 => 2,
        16383..=2097150 => 3,
        2097151..=268435454 => 4,
        _ => 5,
    }
}

fn need(blob: &[u8], p: usize, n: usize) -> Result<(), BlobError> {
    if p.checked_add(n).is_none_or(|e| e > blob.len()) {
        return Err(BlobError::new(
            WHAT,
            p,
            format!("element needs {n} bytes past the end"),
        ));
    }
    Ok(())
}

/// Calls `f` for every element in order; returns the element count.
pub fn decode<'a>(
    blob: &'a [u8],
    mut f: impl FnMut(Elem<'a>) -> Result<(), BlobError>,
) -> Result<usize, BlobError> {
    let count_hdr = check_header(blob)?;
    let mut p = HEADER;
    let mut count = 0usize;
    loop {
        need(blob, p, 1)?;
        if blob[p] == EOF {
            break;
        }
        let start = p;
        let (elem, next) = read_element(blob, p)?;
        p = next;
        let bl = backlen_size(p - start);
        need(blob, p, bl)?;
        p += bl;
        count += 1;
        f(elem)?;
    }
    check_end(blob, p, count_hdr, count)?;
    Ok(count)
}

/// Checks the blob is at least a header and as long as its header says;
/// returns the header's element count.
fn check_header(blob: &[u8]) -> Result<u16, BlobError> {
    if blob.len() < HEADER + 1 {
        return Err(BlobError::new(
            WHAT,
            0,
            format!("{} bytes is shorter than a header", blob.len()),
        ));
    }
    let total = u32::from_le_bytes([blob[0], blob[1], blob[2], blob[3]]) as usize;
    if total != blob.len() {
        return Err(BlobError::new(
            WHAT,
            0,
            format!("header says {total} bytes, blob has {}", blob.len()),
        ));
    }
    Ok(u16::from_le_bytes([blob[4], blob[5]]))
}

/// Reads the element whose encoding byte is at `p` (not its backlen): the
/// element and the offset just past its data.
#[inline]
fn read_element(blob: &[u8], p: usize) -> Result<(Elem<'_>, usize), BlobError> {
    let b = blob[p];
    if b & 0x80 == 0 {
        Ok((Elem::Int((b & 0x7f) as i64), p + 1))
    } else if b & 0xc0 == 0x80 {
        read_str(blob, p, 1, (b & 0x3f) as usize)
    } else if b & 0xe0 == 0xc0 {
        need(blob, p, 2)?;
        let uv = (((b & 0x1f) as u16) << 8) | blob[p + 1] as u16;
        let v = if uv >= 1 << 12 {
            uv as i64 - (1 << 13)
        } else {
            uv as i64
        };
        Ok((Elem::Int(v), p + 2))
    } else if b & 0xf0 == 0xe0 {
        need(blob, p, 2)?;
        let len = (((b & 0x0f) as usize) << 8) | blob[p + 1] as usize;
        read_str(blob, p, 2, len)
    } else if b == 0xf0 {
        need(blob, p, 5)?;
        let len = u32::from_le_bytes([blob[p + 1], blob[p + 2], blob[p + 3], blob[p + 4]]);
        read_str(blob, p, 5, len as usize)
    } else {
        read_wide_int(blob, p, b)
    }
}

/// The string of `len` bytes after a `header`-byte encoding at `p`.
#[inline]
fn read_str(
    blob: &[u8],
    p: usize,
    header: usize,
    len: usize,
) -> Result<(Elem<'_>, usize), BlobError> {
    let data = p + header;
    need(blob, data, len)?;
    Ok((Elem::Str(&blob[data..data + len]), data + len))
}

/// The 16, 24, 32 or 64-bit integer whose encoding byte `b` (0xf1-0xf4) is at `p`.
#[inline]
fn read_wide_int(blob: &[u8], p: usize, b: u8) -> Result<(Elem<'_>, usize), BlobError> {
    let size = match b {
        0xf1 => 2,
        0xf2 => 3,
        0xf3 => 4,
        0xf4 => 8,
        other => {
            return Err(BlobError::new(
                WHAT,
                p,
                format!("invalid encoding byte 0x{other:02x}"),
            ))
        }
    };
    need(blob, p, 1 + size)?;
    let d = &blob[p + 1..p + 1 + size];
    let v = match size {
        2 => i16::from_le_bytes([d[0], d[1]]) as i64,
        // Sign-extend 24 bits.
        3 => (i32::from_le_bytes([0, d[0], d[1], d[2]]) >> 8) as i64,
        4 => i32::from_le_bytes([d[0], d[1], d[2], d[3]]) as i64,
        _ => i64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]),
    };
    Ok((Elem::Int(v), p + 1 + size))
}

/// Checks the end marker is the blob's last byte and the header's count
/// (unless 65535, "unknown") matches the elements found.
fn check_end(blob: &[u8], p: usize, count_hdr: u16, count: usize) -> Result<(), BlobError> {
    if p + 1 != blob.len() {
        return Err(BlobError::new(
            WHAT,
            p,
            "end marker before the end of the blob",
        ));
    }
    if count_hdr != u16::MAX && count_hdr as usize != count {
        return Err(BlobError::new(
            WHAT,
            4,
            format!("header counts {count_hdr} elements, found {count}"),
        ));
    }
    Ok(())
}

/// Decodes all elements into a vector (for tests and small blobs).
pub fn decode_all(blob: &[u8]) -> Result<Vec<Elem<'_>>, BlobError> {
    let mut out = Vec::new();
    decode(blob, |e| {
        out.push(e);
        Ok(())
    })?;
    Ok(out)
}

/// Builds a listpack element by element.
#[derive(Debug)]
pub struct ListpackWriter {
    buf: Vec<u8>,
    count: usize,
}

impl Default for ListpackWriter {
    fn default() -> Self {
        ListpackWriter::new()
    }
}

impl ListpackWriter {
    /// An empty listpack.
    pub fn new() -> ListpackWriter {
        ListpackWriter {
            buf: vec![0; HEADER],
            count: 0,
        }
    }

    fn finish_elem(&mut self, start: usize) {
        let l = self.buf.len() - start;
        let l64 = l as u64;
        match backlen_size(l) {
            1 => self.buf.push(l as u8),
            2 => self
                .buf
                .extend_from_slice(&[(l64 >> 7) as u8, ((l64 & 127) | 128) as u8]),
            3 => self.buf.extend_from_slice(&[
                (l64 >> 14) as u8,
                (((l64 >> 7) & 127) | 128) as u8,
                ((l64 & 127) | 128) as u8,
            ]),
            4 => self.buf.extend_from_slice(&[
                (l64 >> 21) as u8,
                (((l64 >> 14) & 127) | 128) as u8,
                (((l64 >> 7) & 127) | 128) as u8,
                ((l64 & 127) | 128) as u8,
            ]),
            _ => self.buf.extend_from_slice(&[
                (l64 >> 28) as u8,
                (((l64 >> 21) & 127) | 128) as u8,
                (((l64 >> 14) & 127) | 128) as u8,
                (((l64 >> 7) & 127) | 128) as u8,
                ((l64 & 127) | 128) as u8,
            ]),
        }
        self.count += 1;
    }

    /// Appends an integer in the smallest encoding.
    pub fn push_int(&mut self, v: i64) {
        let start = self.buf.len();
        if (0..=127).contains(&v) {
            self.buf.push(v as u8);
        } else if (-4096..=4095).contains(&v) {
            let u = (v as u16) & 0x1fff;
            self.buf.push(0xc0 | (u >> 8) as u8);
            self.buf.push(u as u8);
        } else if i16::try_from(v).is_ok() {
            self.buf.push(0xf1);
            self.buf.extend_from_slice(&(v as i16).to_le_bytes());
        } else if (-(1 << 23)..(1 << 23)).contains(&v) {
            self.buf.push(0xf2);
            self.buf.extend_from_slice(&(v as i32).to_le_bytes()[..3]);
        } else if i32::try_from(v).is_ok() {
            self.buf.push(0xf3);
            self.buf.extend_from_slice(&(v as i32).to_le_bytes());
        } else {
            self.buf.push(0xf4);
            self.buf.extend_from_slice(&v.to_le_bytes());
        }
        self.finish_elem(start);
    }

    /// Appends a string as bytes, never as an integer.
    pub fn push_raw_str(&mut self, s: &[u8]) {
        let start = self.buf.len();
        let len = s.len();
        if len < 64 {
            self.buf.push(0x80 | len as u8);
        } else if len < 4096 {
            self.buf.push(0xe0 | (len >> 8) as u8);
            self.buf.push(len as u8);
        } else {
            self.buf.push(0xf0);
            self.buf.extend_from_slice(&(len as u32).to_le_bytes());
        }
        self.buf.extend_from_slice(s);
        self.finish_elem(start);
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

    /// Elements so far.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes so far (without the end marker).
    pub fn byte_len(&self) -> usize {
        self.buf.len()
    }

    /// The finished listpack.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.push(EOF);
        let total = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&total.to_le_bytes());
        let count = u16::try_from(self.count).unwrap_or(u16::MAX);
        self.buf[4..6].copy_from_slice(&count.to_le_bytes());
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_edges() {
        let mut w = ListpackWriter::new();
        let ints = [
            0i64,
            127,
            128,
            -1,
            -4096,
            4095,
            4096,
            -4097,
            32767,
            -32768,
            32768,
            (1 << 23) - 1,
            -(1 << 23),
            1 << 23,
            i32::MAX as i64,
            i32::MIN as i64,
            i64::MAX,
            i64::MIN,
        ];
        for v in ints {
            w.push_int(v);
        }
        let long = vec![b'x'; 70_000];
        w.push_raw_str(b"");
        w.push_raw_str(&[b'a'; 63]);
        w.push_raw_str(&[b'b'; 64]);
        w.push_raw_str(&[b'c'; 4095]);
        w.push_raw_str(&long);
        let lp = w.finish();
        let got = decode_all(&lp).expect("decodes");
        for (i, v) in ints.iter().enumerate() {
            assert_eq!(got[i], Elem::Int(*v));
        }
        assert_eq!(got[ints.len()], Elem::Str(b""));
        assert_eq!(got[ints.len() + 4], Elem::Str(&long));
    }

    #[test]
    fn truncated_is_error() {
        let mut w = ListpackWriter::new();
        w.push_raw_str(b"hello");
        let lp = w.finish();
        for cut in 0..lp.len() {
            assert!(decode_all(&lp[..cut]).is_err());
        }
    }
}
