//! The value model: one [`Frame`] per RESP2 or RESP3 value, and [`Status`], the result
//! of an incremental decode.
//!
//! Strings are `Bytes` slices of the buffer they were read from (no copy), so a frame
//! keeps that buffer alive until it is dropped.
//!
//! How it fits: [`super::decode`] builds frames, [`super::encode`] writes them,
//! callers read replies through them. Data only: no I/O.

use bytes::Bytes;

/// The outcome of trying to decode one value from the front of a buffer.
///
/// `Incomplete` is an expected outcome, not an error: read more bytes and try again.
/// Nothing is consumed on `Incomplete`.
#[derive(Debug, Clone, PartialEq)]
pub enum Status<T> {
    /// A whole value, and the exact number of bytes it took on the wire.
    Complete(T, usize),
    /// The buffer ends before the value does.
    Incomplete,
}

impl<T> Status<T> {
    /// `true` for `Complete`.
    pub fn is_complete(&self) -> bool {
        matches!(self, Status::Complete(..))
    }

    /// The value and its length, or `None` when incomplete.
    pub fn complete(self) -> Option<(T, usize)> {
        match self {
            Status::Complete(value, len) => Some((value, len)),
            Status::Incomplete => None,
        }
    }
}

/// One RESP value as a server sends it. RESP2 nulls are kept apart from the RESP3 null
/// so that encoding a decoded frame gives back the same bytes.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// `+OK\r\n`
    Simple(Bytes),
    /// `-ERR message\r\n`
    Error(Bytes),
    /// `:42\r\n`
    Integer(i64),
    /// `$3\r\nfoo\r\n`
    Bulk(Bytes),
    /// RESP2 null bulk string `$-1\r\n`.
    NullBulk,
    /// RESP2 null array `*-1\r\n`.
    NullArray,
    /// `*2\r\n...`
    Array(Vec<Frame>),
    /// RESP3 null `_\r\n`.
    Null,
    /// RESP3 `#t\r\n` / `#f\r\n`.
    Boolean(bool),
    /// RESP3 `,1.5\r\n` (also `inf`, `-inf`, `nan`).
    Double(f64),
    /// RESP3 `(3492890328409238509324850943850943825024385\r\n`, digits kept as text.
    BigNumber(Bytes),
    /// RESP3 `=15\r\ntxt:Some string\r\n`: a three-byte format and the text.
    Verbatim {
        /// The format, such as `txt` or `mkd`.
        format: [u8; 3],
        /// The text after `xxx:`.
        text: Bytes,
    },
    /// RESP3 `!21\r\nSYNTAX invalid syntax\r\n`.
    BlobError(Bytes),
    /// RESP3 `%1\r\n...`: key/value pairs in wire order (keys may repeat).
    Map(Vec<(Frame, Frame)>),
    /// RESP3 `~2\r\n...`, in wire order.
    Set(Vec<Frame>),
    /// RESP3 `|1\r\n...`: attributes, then the value they annotate.
    Attribute {
        /// The attribute pairs.
        attrs: Vec<(Frame, Frame)>,
        /// The value that follows the attributes.
        value: Box<Frame>,
    },
    /// RESP3 `>3\r\n...`: out-of-band data such as pub/sub messages and invalidations.
    Push(Vec<Frame>),
}

impl Frame {
    /// A bulk string frame from anything byte-like (copies).
    pub fn bulk(data: impl AsRef<[u8]>) -> Frame {
        Frame::Bulk(Bytes::copy_from_slice(data.as_ref()))
    }

    /// A simple string frame (copies). The text must not contain `\r` or `\n`.
    pub fn simple(text: impl AsRef<[u8]>) -> Frame {
        Frame::Simple(Bytes::copy_from_slice(text.as_ref()))
    }

    /// The bytes of a string-like frame (simple, bulk, verbatim text, big number),
    /// `None` for anything else.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Frame::Simple(b) | Frame::Bulk(b) | Frame::BigNumber(b) => Some(b),
            Frame::Verbatim { text, .. } => Some(text),
            _ => None,
        }
    }

    /// The message of an error frame (simple or blob error).
    pub fn as_error(&self) -> Option<&[u8]> {
        match self {
            Frame::Error(b) | Frame::BlobError(b) => Some(b),
            _ => None,
        }
    }

    /// `true` for the three kinds of null.
    pub fn is_null(&self) -> bool {
        matches!(self, Frame::Null | Frame::NullBulk | Frame::NullArray)
    }
}
