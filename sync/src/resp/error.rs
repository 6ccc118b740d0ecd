//! The closed set of ways a RESP byte stream can be malformed, each with the byte offset
//! where it was found.
//!
//! Running out of bytes is not here: that is [`Status::Incomplete`](super::Status).
//!
//! How it fits: the decoders return it and [`super::io`] passes it on to the
//! link or connection that read the bytes. A message never holds more of the
//! input than the byte at fault.

use std::fmt;

/// A protocol error: what was expected, and where.
///
/// `offset` counts from the first byte of the buffer handed to the decoder (the start
/// of the value being decoded); readers that know their position in the stream shift it
/// so that it counts from the start of the stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("RESP protocol error at byte {offset}: {kind}")]
pub struct RespError {
    /// Byte offset of the offending byte or field.
    pub offset: u64,
    /// What was wrong.
    pub kind: RespErrorKind,
}

impl RespError {
    pub(crate) fn new(offset: usize, kind: RespErrorKind) -> RespError {
        RespError {
            offset: offset as u64,
            kind,
        }
    }

    /// The same error with `base` added to its offset.
    pub fn shifted(mut self, base: u64) -> RespError {
        self.offset = self.offset.saturating_add(base);
        self
    }
}

/// What was expected and not found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RespErrorKind {
    /// A value must start with a type byte (`+ - : $ * _ # , ( = ! % ~ | >`), or a
    /// command with `*` or inline text; a command argument with `$`.
    BadPrefix {
        /// The byte found.
        found: u8,
        /// What was expected, such as "'$' (bulk string in a command)".
        expected: &'static str,
    },
    /// A length or integer field that is not a decimal 64-bit integer.
    BadInteger,
    /// A length below -1 (-1 alone means null).
    NegativeLength(i64),
    /// A null (-1) where none is allowed, such as a command argument.
    UnexpectedNull,
    /// A length over the configured limit; nothing was allocated for it.
    TooLong {
        /// Which limit, named as in [`Limits`](super::Limits).
        limit: &'static str,
        /// The length announced (or found).
        len: u64,
        /// The limit in force.
        max: u64,
    },
    /// Aggregates nested deeper than `nesting_depth_max`.
    TooDeep {
        /// The limit in force.
        max: usize,
    },
    /// `\r\n` expected (after a line or after the payload of a bulk string).
    MissingCrlf,
    /// A double that does not parse.
    BadDouble,
    /// A boolean other than `t` or `f`.
    BadBoolean,
    /// A verbatim string shorter than `xxx:` or without the `:`.
    BadVerbatim,
    /// A null (`_`) with something before its `\r\n`.
    BadNull,
    /// An inline command with unbalanced quotes, or a closing quote not followed by a space.
    UnbalancedQuotes,
}

impl fmt::Display for RespErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RespErrorKind::BadPrefix { found, expected } => write!(
                f,
                "expected {expected}, found byte 0x{found:02x} ({:?})",
                char::from(*found)
            ),
            RespErrorKind::BadInteger => f.write_str("expected a decimal 64-bit integer"),
            RespErrorKind::NegativeLength(len) => {
                write!(f, "expected a length >= -1, found {len}")
            }
            RespErrorKind::UnexpectedNull => f.write_str("expected a bulk string, found a null"),
            RespErrorKind::TooLong { limit, len, max } => {
                write!(f, "length {len} is over {limit} = {max}")
            }
            RespErrorKind::TooDeep { max } => {
                write!(f, "aggregates nested deeper than nesting_depth_max = {max}")
            }
            RespErrorKind::MissingCrlf => f.write_str("expected \\r\\n"),
            RespErrorKind::BadDouble => f.write_str("expected a double"),
            RespErrorKind::BadBoolean => f.write_str("expected 't' or 'f'"),
            RespErrorKind::BadVerbatim => {
                f.write_str("expected a verbatim string starting with a 3-byte format and ':'")
            }
            RespErrorKind::BadNull => f.write_str("expected \\r\\n right after '_'"),
            RespErrorKind::UnbalancedQuotes => {
                f.write_str("expected balanced quotes, each closing quote followed by a space")
            }
        }
    }
}
