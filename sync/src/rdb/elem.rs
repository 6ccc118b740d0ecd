//! The element type shared by the compact encodings (ziplist, listpack,
//! intset, zipmap): a borrowed string or an integer, exactly as stored.
//!
//! Redis stores a string that is the canonical decimal form of an `i64` as an
//! integer; to a client it is still that string. [`Elem::to_bytes`] gives the
//! client's view, and [`canonical_int`] is the test Redis applies (string2ll)
//! when deciding to store a string as an integer.
//!
//! How it fits: every compact decoder hands out [`Elem`]s; `compact` and the
//! parser turn them into the bytes of [`super::value::Elements`]. It does no I/O
//! and never changes what a client would read back.

use super::reader::{int_bytes, push_int};

/// One element of a compact encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elem<'a> {
    /// A string stored as bytes.
    Str(&'a [u8]),
    /// A string stored as an integer.
    Int(i64),
}

impl Elem<'_> {
    /// The element as the bytes a client sees.
    #[inline]
    pub fn to_bytes(self) -> Vec<u8> {
        match self {
            Elem::Str(s) => s.to_vec(),
            Elem::Int(v) => int_bytes(v),
        }
    }

    /// Appends the client's view of the element to `out`.
    #[inline]
    pub fn push_to(self, out: &mut Vec<u8>) {
        match self {
            Elem::Str(s) => out.extend_from_slice(s),
            Elem::Int(v) => push_int(out, v),
        }
    }

    /// The element as an integer, when it is one or is a canonical decimal string.
    pub fn as_int(self) -> Option<i64> {
        match self {
            Elem::Int(v) => Some(v),
            Elem::Str(s) => canonical_int(s),
        }
    }

    /// Length of the client's view in bytes.
    pub fn byte_len(self) -> usize {
        match self {
            Elem::Str(s) => s.len(),
            Elem::Int(v) => {
                let mut n = if v < 0 { 2 } else { 1 };
                let mut u = v.unsigned_abs();
                while u >= 10 {
                    u /= 10;
                    n += 1;
                }
                n
            }
        }
    }
}

/// `Some(v)` when `s` is exactly the decimal form Redis would print for `v`
/// (no sign on zero, no leading zeros, no spaces, fits in i64).
pub fn canonical_int(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let (neg, digits) = match s[0] {
        b'-' => (true, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || (digits[0] == b'0' && (digits.len() > 1 || neg)) {
        return None;
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        let digit = (d - b'0') as i64;
        v = v.checked_mul(10)?;
        v = if neg {
            v.checked_sub(digit)?
        } else {
            v.checked_add(digit)?
        };
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical() {
        assert_eq!(canonical_int(b"0"), Some(0));
        assert_eq!(canonical_int(b"-1"), Some(-1));
        assert_eq!(canonical_int(b"-0"), None);
        assert_eq!(canonical_int(b"01"), None);
        assert_eq!(canonical_int(b"+1"), None);
        assert_eq!(canonical_int(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(canonical_int(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(canonical_int(b"9223372036854775808"), None);
        assert_eq!(Elem::Int(-123).byte_len(), 4);
        assert_eq!(Elem::Int(i64::MIN).byte_len(), 20);
    }
}
