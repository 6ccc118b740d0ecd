//! Encoders: commands (arrays of bulk strings) into a caller's reused `BytesMut`, and
//! any [`Frame`] (for replies in tests and tools).
//!
//! Appending never allocates once the buffer has grown to the size of the largest
//! pipeline written through it: integers are formatted on the stack.
//!
//! How it fits: the target connection (`conn.rs`), the replica link
//! (`source/replica.rs`) and [`super::io`] write commands through it. It never fails and never writes a length other than the bytes
//! that follow.

use std::fmt::Write as _;

use bytes::{BufMut, BytesMut};

use super::frame::Frame;

/// Decimal digits of `n` in a stack buffer.
fn digits(n: i64, out: &mut [u8; 20]) -> &[u8] {
    let mut i = out.len();
    let neg = n < 0;
    let mut v = n.unsigned_abs();
    loop {
        i -= 1;
        out[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if neg {
        i -= 1;
        out[i] = b'-';
    }
    &out[i..]
}

fn decimal_len(n: usize) -> usize {
    let mut len = 1;
    let mut v = n / 10;
    while v > 0 {
        len += 1;
        v /= 10;
    }
    len
}

/// `<prefix><n>\r\n`
fn header(out: &mut BytesMut, prefix: u8, n: i64) {
    let mut scratch = [0u8; 20];
    out.put_u8(prefix);
    out.extend_from_slice(digits(n, &mut scratch));
    out.extend_from_slice(b"\r\n");
}

fn bulk(out: &mut BytesMut, prefix: u8, data: &[u8]) {
    header(out, prefix, data.len() as i64);
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Exact encoded length of a command with these arguments.
pub fn command_len<A: AsRef<[u8]>>(argv: &[A]) -> usize {
    let args: usize = argv
        .iter()
        .map(|a| {
            let n = a.as_ref().len();
            1 + decimal_len(n) + 2 + n + 2
        })
        .sum();
    1 + decimal_len(argv.len()) + 2 + args
}

/// Append `argv` as an array of bulk strings (the form a primary propagates commands
/// in), reserving the exact length first.
pub fn encode_command<A: AsRef<[u8]>>(out: &mut BytesMut, argv: &[A]) {
    out.reserve(command_len(argv));
    header(out, b'*', argv.len() as i64);
    for arg in argv {
        bulk(out, b'$', arg.as_ref());
    }
}

/// Append any frame. Doubles are written in the shortest form that reads back to the
/// same value (`inf`, `-inf`, `nan` for the special ones).
pub fn encode_frame(out: &mut BytesMut, frame: &Frame) {
    match frame {
        Frame::Simple(s) => line(out, b'+', s),
        Frame::Error(s) => line(out, b'-', s),
        Frame::Integer(n) => header(out, b':', *n),
        Frame::Bulk(b) => bulk(out, b'$', b),
        Frame::NullBulk => out.extend_from_slice(b"$-1\r\n"),
        Frame::NullArray => out.extend_from_slice(b"*-1\r\n"),
        Frame::Null => out.extend_from_slice(b"_\r\n"),
        Frame::Boolean(b) => out.extend_from_slice(if *b { b"#t\r\n" } else { b"#f\r\n" }),
        Frame::Double(d) => {
            out.put_u8(b',');
            if d.is_nan() {
                out.extend_from_slice(b"nan");
            } else if d.is_infinite() {
                out.extend_from_slice(if *d > 0.0 { b"inf" } else { b"-inf" });
            } else {
                // Writing to a BytesMut cannot fail.
                let _ = write!(out, "{d:?}");
            }
            out.extend_from_slice(b"\r\n");
        }
        Frame::BigNumber(s) => line(out, b'(', s),
        Frame::Verbatim { format, text } => {
            header(out, b'=', (text.len() + 4) as i64);
            out.extend_from_slice(format);
            out.put_u8(b':');
            out.extend_from_slice(text);
            out.extend_from_slice(b"\r\n");
        }
        Frame::BlobError(b) => bulk(out, b'!', b),
        Frame::Array(items) => aggregate(out, b'*', items),
        Frame::Set(items) => aggregate(out, b'~', items),
        Frame::Push(items) => aggregate(out, b'>', items),
        Frame::Map(pairs) => pairs_of(out, b'%', pairs),
        Frame::Attribute { attrs, value } => {
            pairs_of(out, b'|', attrs);
            encode_frame(out, value);
        }
    }
}

fn line(out: &mut BytesMut, prefix: u8, text: &[u8]) {
    out.put_u8(prefix);
    out.extend_from_slice(text);
    out.extend_from_slice(b"\r\n");
}

fn aggregate(out: &mut BytesMut, prefix: u8, items: &[Frame]) {
    header(out, prefix, items.len() as i64);
    for item in items {
        encode_frame(out, item);
    }
}

fn pairs_of(out: &mut BytesMut, prefix: u8, pairs: &[(Frame, Frame)]) {
    header(out, prefix, pairs.len() as i64);
    for (k, v) in pairs {
        encode_frame(out, k);
        encode_frame(out, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_cover_extremes() {
        let mut s = [0u8; 20];
        assert_eq!(digits(0, &mut s), b"0");
        assert_eq!(digits(-7, &mut s), b"-7");
        assert_eq!(digits(i64::MIN, &mut s), b"-9223372036854775808");
        assert_eq!(digits(i64::MAX, &mut s), b"9223372036854775807");
    }

    #[test]
    fn command_len_is_exact() {
        for argv in [
            vec![&b"PING"[..]],
            vec![b"SET", b"k", b""],
            vec![&[b'x'; 1000][..], b"0123456789"],
        ] {
            let mut out = BytesMut::new();
            encode_command(&mut out, &argv);
            assert_eq!(out.len(), command_len(&argv));
        }
        let mut out = BytesMut::new();
        encode_command(&mut out, &["SET", "key", "value"]);
        assert_eq!(&out[..], b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n");
    }

    #[test]
    fn encoding_into_a_warm_buffer_does_not_grow_it() {
        let mut out = BytesMut::with_capacity(64);
        let argv = ["HSET", "h", "field", "value"];
        encode_command(&mut out, &argv);
        let cap = out.capacity();
        for _ in 0..1000 {
            out.clear();
            encode_command(&mut out, &argv);
        }
        assert_eq!(out.capacity(), cap);
    }
}
