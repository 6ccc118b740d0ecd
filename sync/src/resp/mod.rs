//! RESP, the Redis wire protocol: an incremental decoder for RESP2 and RESP3, a fast
//! path for commands that reports each one's exact length (the replication offset
//! counts every byte), encoders, and async readers and writers.
//!
//! # Layout
//! - [`frame`]: the value model ([`Frame`]) and the decode outcome ([`Status`]:
//!   `Complete(value, bytes)` or `Incomplete`, which is not an error).
//! - [`decode`]: any reply, RESP2 or RESP3: a cheap check pass, then a build pass that
//!   slices strings out of the buffer without copying.
//! - [`command`]: the replication stream and client requests: arrays of bulk strings
//!   and inline commands, resumable across reads, as [`Command`]s of `Bytes` slices.
//! - [`encode`]: commands into a reused `BytesMut`, and any frame.
//! - [`io`]: [`FrameReader`] over an `AsyncRead`, [`CommandStream`] that keeps the
//!   replication offset, [`CommandWriter`] for pipelines.
//! - [`error`]: the closed set of protocol errors, each with its byte offset.
//!
//! # How the sync engine drives it
//! One [`FrameReader`] per replica link: `read_frame` for handshake replies (after
//! `skip_newlines`, since keepalive newlines may precede them), `read_line` for the
//! `$<len>` / `$EOF:<mark>` header of the RDB transfer and `read_chunk` for its bytes,
//! then a [`CommandStream`] started at the offset from `+FULLRESYNC` (or `+CONTINUE`),
//! whose `next()` gives each [`Entry`] with the replication offset right after it.
//! [`Entry::Blank`] (a stray newline, `*0`) carries no command but its bytes count, as
//! in Redis; an inline [`Command`] from a primary means the stream is out of step.
//! Replies to our own writes on the target go through another `FrameReader`;
//! commands are written with [`encode_command`] into a reused buffer or a
//! [`CommandWriter`].
//!
//! # Limits
//! Every length field is checked against [`Limits`] before any memory is reserved,
//! and vectors are never pre-sized beyond what the bytes already read could fill, so a
//! hostile length costs nothing. Nothing on a decode path panics.

pub mod command;
pub mod decode;
pub mod encode;
pub mod error;
pub mod frame;
pub mod io;

pub use command::{Command, CommandDecoder, Entry};
pub use decode::{check_frame, decode_frame, decode_frame_slice, first_error_element};
pub use encode::{command_len, encode_command, encode_frame};
pub use error::{RespError, RespErrorKind};
pub use frame::{Frame, Status};
pub use io::{CommandStream, CommandWriter, FrameReader, ReadError};

/// Caller-chosen bounds on what a peer may make the decoder hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Longest bulk string (also blob error and verbatim string). Redis's
    /// `proto-max-bulk-len` defaults to 512 MiB.
    pub bulk_bytes_max: usize,
    /// Most elements in one aggregate (pairs for maps and attributes), and most
    /// arguments in one command. Redis allows up to `INT_MAX` arguments.
    pub array_len_max: usize,
    /// Deepest nesting of aggregates in one reply. Commands are never nested.
    pub nesting_depth_max: usize,
    /// Longest simple line (simple string, error, integer, double, length header).
    pub line_bytes_max: usize,
    /// Longest inline command line. Redis's `PROTO_INLINE_MAX_SIZE` is 64 KiB.
    pub inline_bytes_max: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            bulk_bytes_max: 512 * 1024 * 1024,
            array_len_max: i32::MAX as usize,
            nesting_depth_max: 64,
            line_bytes_max: 64 * 1024,
            inline_bytes_max: 64 * 1024,
        }
    }
}

#[cfg(test)]
mod tests;
