//! The general decoder: any RESP2 or RESP3 value, as servers send replies.
//!
//! Two passes, as in mini-redis: a cheap [`check_frame`] walks the buffer without
//! allocating and says whether a whole value is there and how long it is; only then
//! does [`decode_frame`] split those bytes off and build the [`Frame`], slicing strings
//! out of them without copying. A value that arrives in many reads therefore costs a
//! re-walk of its headers per read, never a rebuild.
//!
//! Every length is checked against [`Limits`] before anything is reserved, and no
//! vector is pre-sized beyond what the bytes present could fill.
//!
//! How it fits: [`super::FrameReader`] decodes replies with it (the handshake's and
//! the target's replies). It never panics and never reserves memory for a length before
//! checking it against [`Limits`].

use bytes::{Bytes, BytesMut};

use super::error::{RespError, RespErrorKind};
use super::frame::{Frame, Status};
use super::Limits;

/// Internal outcome of a step: out of bytes, or a real error.
#[derive(Debug)]
pub(crate) enum Stop {
    Incomplete,
    Error(RespError),
}

impl From<RespError> for Stop {
    fn from(e: RespError) -> Stop {
        Stop::Error(e)
    }
}

pub(crate) type Step<T> = Result<T, Stop>;

pub(crate) fn fail<T>(offset: usize, kind: RespErrorKind) -> Step<T> {
    Err(Stop::Error(RespError::new(offset, kind)))
}

/// Turn the internal result into the public one.
pub(crate) fn finish<T>(
    step: Step<T>,
    len: impl FnOnce() -> usize,
) -> Result<Status<T>, RespError> {
    match step {
        Ok(value) => Ok(Status::Complete(value, len())),
        Err(Stop::Incomplete) => Ok(Status::Incomplete),
        Err(Stop::Error(e)) => Err(e),
    }
}

/// A read position over a buffer plus the primitives every RESP field is made of.
pub(crate) struct Cursor<'a> {
    pub(crate) buf: &'a [u8],
    pub(crate) pos: usize,
    pub(crate) limits: &'a Limits,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8], pos: usize, limits: &'a Limits) -> Cursor<'a> {
        Cursor { buf, pos, limits }
    }

    /// The next byte, consumed.
    pub(crate) fn byte(&mut self) -> Step<u8> {
        let b = *self.buf.get(self.pos).ok_or(Stop::Incomplete)?;
        self.pos += 1;
        Ok(b)
    }

    /// The bytes up to the next `\r\n`, as a range; the cursor moves past the `\r\n`.
    /// A `\r` not followed by `\n` is an error; so is a line over `line_bytes_max`.
    pub(crate) fn line(&mut self) -> Step<(usize, usize)> {
        let start = self.pos;
        let max = self.limits.line_bytes_max;
        let window_end = self
            .buf
            .len()
            .min(start.saturating_add(max).saturating_add(1));
        let window = &self.buf[start..window_end];
        match memchr::memchr(b'\r', window) {
            Some(i) => {
                let cr = start + i;
                match self.buf.get(cr + 1) {
                    None => Err(Stop::Incomplete),
                    Some(b'\n') => {
                        self.pos = cr + 2;
                        Ok((start, cr))
                    }
                    Some(_) => fail(cr + 1, RespErrorKind::MissingCrlf),
                }
            }
            None if window.len() > max => fail(
                start,
                RespErrorKind::TooLong {
                    limit: "line_bytes_max",
                    len: window.len() as u64,
                    max: max as u64,
                },
            ),
            None => Err(Stop::Incomplete),
        }
    }

    /// A line holding a decimal i64.
    pub(crate) fn integer(&mut self) -> Step<i64> {
        let (start, end) = self.line()?;
        match parse_i64(&self.buf[start..end]) {
            Some(n) => Ok(n),
            None => fail(start, RespErrorKind::BadInteger),
        }
    }

    /// A length line: `None` for -1 (null), an error below -1 or over `max`.
    pub(crate) fn length(&mut self, limit: &'static str, max: usize) -> Step<Option<usize>> {
        let start = self.pos;
        // Fast path: a short run of digits then `\r\n`, parsed in the same pass that
        // finds the line end. Anything else (signs, long or malformed lines, the end of
        // the buffer) goes the general way, which also produces the errors.
        let mut n: u64 = 0;
        let mut i = start;
        while i < self.buf.len() && i - start < 16.min(self.limits.line_bytes_max) {
            let b = self.buf[i];
            if b.is_ascii_digit() {
                n = n * 10 + u64::from(b - b'0');
                i += 1;
                continue;
            }
            if b == b'\r' && i > start && self.buf.get(i + 1) == Some(&b'\n') && n <= max as u64 {
                self.pos = i + 2;
                return Ok(Some(n as usize));
            }
            break;
        }
        let n = self.integer()?;
        if n == -1 {
            return Ok(None);
        }
        if n < 0 {
            return fail(start, RespErrorKind::NegativeLength(n));
        }
        if n as u64 > max as u64 {
            return fail(
                start,
                RespErrorKind::TooLong {
                    limit,
                    len: n as u64,
                    max: max as u64,
                },
            );
        }
        Ok(Some(n as usize))
    }

    /// `len` payload bytes then `\r\n`; returns the payload range.
    pub(crate) fn payload(&mut self, len: usize) -> Step<(usize, usize)> {
        let start = self.pos;
        let end = start.checked_add(len).ok_or(Stop::Incomplete)?;
        if self.buf.len() < end.saturating_add(2) {
            return Err(Stop::Incomplete);
        }
        if &self.buf[end..end + 2] != b"\r\n" {
            return fail(end, RespErrorKind::MissingCrlf);
        }
        self.pos = end + 2;
        Ok((start, end))
    }

    /// How many elements the remaining bytes could hold at most (each takes at least 3
    /// bytes, as `_\r\n`): the cap on any pre-sized vector.
    pub(crate) fn capacity_for(&self, n: usize) -> usize {
        n.min(self.buf.len().saturating_sub(self.pos) / 3)
    }
}

/// Strict decimal: optional `-`, at least one digit, no overflow, nothing else.
pub(crate) fn parse_i64(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        let v = i64::from(d - b'0');
        n = n.checked_mul(10)?;
        n = if neg {
            n.checked_sub(v)?
        } else {
            n.checked_add(v)?
        };
    }
    Some(n)
}

/// One value's header and, for leaf values, its payload.
enum Head {
    Simple(usize, usize),
    Error(usize, usize),
    Integer(i64),
    Bulk(usize, usize),
    BlobError(usize, usize),
    Verbatim(usize, usize),
    BigNumber(usize, usize),
    Double(f64),
    Boolean(bool),
    Null,
    NullBulk,
    NullArray,
    /// An aggregate: its kind and element count (pairs for maps and attributes).
    Aggregate(Agg, usize),
}

#[derive(Clone, Copy)]
enum Agg {
    Array,
    Set,
    Push,
    Map,
    Attribute,
}

const TYPE_BYTES: &str = "a RESP type byte (one of + - : $ * _ # , ( = ! % ~ | >)";

impl Cursor<'_> {
    fn head(&mut self) -> Step<Head> {
        let at = self.pos;
        let bulk_max = self.limits.bulk_bytes_max;
        let agg_max = self.limits.array_len_max;
        Ok(match self.byte()? {
            b'+' => {
                let (s, e) = self.line()?;
                Head::Simple(s, e)
            }
            b'-' => {
                let (s, e) = self.line()?;
                Head::Error(s, e)
            }
            b':' => Head::Integer(self.integer()?),
            b'$' => match self.length("bulk_bytes_max", bulk_max)? {
                None => Head::NullBulk,
                Some(len) => {
                    let (s, e) = self.payload(len)?;
                    Head::Bulk(s, e)
                }
            },
            b'!' => match self.length("bulk_bytes_max", bulk_max)? {
                None => return fail(at + 1, RespErrorKind::UnexpectedNull),
                Some(len) => {
                    let (s, e) = self.payload(len)?;
                    Head::BlobError(s, e)
                }
            },
            b'=' => self.verbatim(at)?,
            b'(' => self.big_number()?,
            b',' => self.double()?,
            b'#' => self.boolean()?,
            b'_' => self.null()?,
            b'*' => match self.length("array_len_max", agg_max)? {
                None => Head::NullArray,
                Some(n) => Head::Aggregate(Agg::Array, n),
            },
            b'~' => self.aggregate(at, Agg::Set, agg_max)?,
            b'>' => self.aggregate(at, Agg::Push, agg_max)?,
            b'%' => self.aggregate(at, Agg::Map, agg_max)?,
            b'|' => self.aggregate(at, Agg::Attribute, agg_max)?,
            found => {
                return fail(
                    at,
                    RespErrorKind::BadPrefix {
                        found,
                        expected: TYPE_BYTES,
                    },
                )
            }
        })
    }

    /// A verbatim string (`=`): a bulk whose first 4 bytes are `xxx:`.
    fn verbatim(&mut self, at: usize) -> Step<Head> {
        match self.length("bulk_bytes_max", self.limits.bulk_bytes_max)? {
            None => fail(at + 1, RespErrorKind::UnexpectedNull),
            Some(len) => {
                let (s, e) = self.payload(len)?;
                if len < 4 || self.buf[s + 3] != b':' {
                    return fail(s, RespErrorKind::BadVerbatim);
                }
                Ok(Head::Verbatim(s, e))
            }
        }
    }

    /// A big number (`(`): an optional minus and at least one digit.
    fn big_number(&mut self) -> Step<Head> {
        let (s, e) = self.line()?;
        let digits = self.buf[s..e].strip_prefix(b"-").unwrap_or(&self.buf[s..e]);
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return fail(s, RespErrorKind::BadInteger);
        }
        Ok(Head::BigNumber(s, e))
    }

    /// A double (`,`).
    fn double(&mut self) -> Step<Head> {
        let (s, e) = self.line()?;
        let parsed = std::str::from_utf8(&self.buf[s..e])
            .ok()
            .and_then(|t| t.parse::<f64>().ok());
        match parsed {
            Some(d) => Ok(Head::Double(d)),
            None => fail(s, RespErrorKind::BadDouble),
        }
    }

    /// A boolean (`#t` or `#f`).
    fn boolean(&mut self) -> Step<Head> {
        let (s, e) = self.line()?;
        match &self.buf[s..e] {
            b"t" => Ok(Head::Boolean(true)),
            b"f" => Ok(Head::Boolean(false)),
            _ => fail(s, RespErrorKind::BadBoolean),
        }
    }

    /// The RESP3 null (`_`), an empty line.
    fn null(&mut self) -> Step<Head> {
        let (s, e) = self.line()?;
        if s != e {
            return fail(s, RespErrorKind::BadNull);
        }
        Ok(Head::Null)
    }

    fn aggregate(&mut self, at: usize, agg: Agg, max: usize) -> Step<Head> {
        match self.length("array_len_max", max)? {
            None => fail(at + 1, RespErrorKind::UnexpectedNull),
            Some(n) => Ok(Head::Aggregate(agg, n)),
        }
    }

    fn enter(&self, at: usize, depth: usize) -> Step<usize> {
        let max = self.limits.nesting_depth_max;
        if depth >= max {
            return fail(at, RespErrorKind::TooDeep { max });
        }
        Ok(depth + 1)
    }

    /// Walk one value without building it.
    fn skip(&mut self, depth: usize) -> Step<()> {
        let at = self.pos;
        if let Head::Aggregate(agg, n) = self.head()? {
            let depth = self.enter(at, depth)?;
            let children = match agg {
                Agg::Array | Agg::Set | Agg::Push => n,
                Agg::Map => n.saturating_mul(2),
                Agg::Attribute => n.saturating_mul(2).saturating_add(1),
            };
            for _ in 0..children {
                self.skip(depth)?;
            }
        }
        Ok(())
    }

    /// Build one value, slicing strings out of `src` (whose bytes are `self.buf`).
    fn build(&mut self, src: &Bytes, depth: usize) -> Step<Frame> {
        let at = self.pos;
        Ok(match self.head()? {
            Head::Simple(s, e) => Frame::Simple(src.slice(s..e)),
            Head::Error(s, e) => Frame::Error(src.slice(s..e)),
            Head::Integer(n) => Frame::Integer(n),
            Head::Bulk(s, e) => Frame::Bulk(src.slice(s..e)),
            Head::BlobError(s, e) => Frame::BlobError(src.slice(s..e)),
            Head::Verbatim(s, e) => Frame::Verbatim {
                format: [self.buf[s], self.buf[s + 1], self.buf[s + 2]],
                text: src.slice(s + 4..e),
            },
            Head::BigNumber(s, e) => Frame::BigNumber(src.slice(s..e)),
            Head::Double(d) => Frame::Double(d),
            Head::Boolean(b) => Frame::Boolean(b),
            Head::Null => Frame::Null,
            Head::NullBulk => Frame::NullBulk,
            Head::NullArray => Frame::NullArray,
            Head::Aggregate(agg, n) => {
                let depth = self.enter(at, depth)?;
                match agg {
                    Agg::Array | Agg::Set | Agg::Push => {
                        let mut items = Vec::with_capacity(self.capacity_for(n));
                        for _ in 0..n {
                            items.push(self.build(src, depth)?);
                        }
                        match agg {
                            Agg::Array => Frame::Array(items),
                            Agg::Set => Frame::Set(items),
                            _ => Frame::Push(items),
                        }
                    }
                    Agg::Map | Agg::Attribute => {
                        let mut pairs = Vec::with_capacity(self.capacity_for(n) / 2);
                        for _ in 0..n {
                            let k = self.build(src, depth)?;
                            let v = self.build(src, depth)?;
                            pairs.push((k, v));
                        }
                        if let Agg::Map = agg {
                            Frame::Map(pairs)
                        } else {
                            let value = Box::new(self.build(src, depth)?);
                            Frame::Attribute {
                                attrs: pairs,
                                value,
                            }
                        }
                    }
                }
            }
        })
    }
}

/// Is a whole value at the front of `buf`? `Complete((), len)` gives its length.
/// Allocates nothing.
pub fn check_frame(buf: &[u8], limits: &Limits) -> Result<Status<()>, RespError> {
    let mut cur = Cursor::new(buf, 0, limits);
    let step = cur.skip(0);
    finish(step, || cur.pos)
}

/// Decode one value from the front of `buf`, consuming its bytes only when it is whole.
/// Strings in the frame share `buf`'s memory.
pub fn decode_frame(buf: &mut BytesMut, limits: &Limits) -> Result<Status<Frame>, RespError> {
    let len = match check_frame(buf, limits)? {
        Status::Complete((), len) => len,
        Status::Incomplete => return Ok(Status::Incomplete),
    };
    let src = buf.split_to(len).freeze();
    let mut cur = Cursor::new(&src, 0, limits);
    let step = cur.build(&src, 0);
    finish(step, || len)
}

/// The first error among the top-level elements of the array at the front of `buf`
/// (an EXEC reply): its index and message. `buf` must hold the whole array, as
/// [`check_frame`] found it; nothing is allocated. `None` when no element is an error
/// or the value is not an array.
pub fn first_error_element<'a>(
    buf: &'a [u8],
    limits: &Limits,
) -> Result<Option<(usize, &'a [u8])>, RespError> {
    let mut cur = Cursor::new(buf, 0, limits);
    let step: Step<Option<(usize, &'a [u8])>> = (|| {
        let n = match cur.head()? {
            Head::Aggregate(Agg::Array, n) => n,
            _ => return Ok(None),
        };
        for index in 0..n {
            let at = cur.pos;
            if let Head::Error(s, e) = cur.head()? {
                return Ok(Some((index, &buf[s..e])));
            }
            cur.pos = at;
            cur.skip(1)?;
        }
        Ok(None)
    })();
    finish(step, || 0).map(|status| status.complete().and_then(|(found, _)| found))
}

/// Decode one value from the front of a borrowed slice (copies the value's bytes once).
pub fn decode_frame_slice(buf: &[u8], limits: &Limits) -> Result<Status<Frame>, RespError> {
    let len = match check_frame(buf, limits)? {
        Status::Complete((), len) => len,
        Status::Incomplete => return Ok(Status::Incomplete),
    };
    let src = Bytes::copy_from_slice(&buf[..len]);
    let mut cur = Cursor::new(&src, 0, limits);
    let step = cur.build(&src, 0);
    finish(step, || len)
}
