//! Whether two values of the same type are equal, from what each way of reading them
//! answered: string bytes (whole, or long and to be read in windows), element
//! counts, DUMP payloads (byte-equal is equal; anything else is read again as
//! digests), chunked digests, and reply errors during a read.
//!
//! Pure: it must never read a side, never decode a DUMP payload (only its 2-byte RDB
//! version is looked at), and never call equal what it could not compare.

use redis::Value as Reply;

use crate::read::digest::Digest;

/// Two strings as read on both sides (None: gone or retyped since TYPE, which a
/// later round reads again).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Strings {
    /// Either is longer than the limit: to be compared in windows.
    Long,
    Equal,
    /// Different, with a hint.
    Differ(String),
}

/// Two strings' bytes as read; `limit`: the first read's GETRANGE bound (a reply
/// longer than it is a long string), None when strings are read whole.
pub(crate) fn strings(a: Option<&[u8]>, b: Option<&[u8]>, limit: Option<usize>) -> Strings {
    let long = |v: Option<&[u8]>| limit.is_some_and(|limit| v.is_some_and(|v| v.len() > limit));
    if long(a) || long(b) {
        Strings::Long
    } else if a.is_some() && a == b {
        Strings::Equal
    } else {
        Strings::Differ(string_hint(a.unwrap_or_default(), b.unwrap_or_default()))
    }
}

/// Two different strings in words: their lengths.
pub(crate) fn string_hint(a: &[u8], b: &[u8]) -> String {
    if a.len() == b.len() {
        format!("{} bytes on both sides, different bytes", a.len())
    } else {
        format!("source {} bytes, target {}", a.len(), b.len())
    }
}

/// A string read again (GETRANGE or GET, then EXISTS): its bytes when the key exists
/// and holds a string; None otherwise (deleted or retyped since the first read).
pub(crate) fn reread_string(value: Reply, exists: Option<Reply>) -> Option<Vec<u8>> {
    match (value, exists) {
        (Reply::BulkString(bytes), Some(Reply::Int(1))) => Some(bytes),
        _ => None,
    }
}

/// What two collections' lengths say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Lengths {
    /// Different counts: the values differ.
    Differ(String),
    /// Small enough for DUMP (at most `dump_elements_max` elements).
    Dump,
    /// Larger (or unreadable): chunked digests.
    Digest,
}

/// Two element counts (-1: not an integer reply).
pub(crate) fn lengths(source: i64, target: i64, dump_elements_max: u64) -> Lengths {
    if source != target {
        Lengths::Differ(format!("source {source} elements, target {target}"))
    } else if source as u64 <= dump_elements_max {
        Lengths::Dump
    } else {
        Lengths::Digest
    }
}

/// What two DUMP replies say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dumps {
    /// Byte-equal payloads: equal values.
    Equal,
    /// Anything else: read the values as digests. `versions_differ`: both are
    /// payloads of different RDB versions, so DUMP will never be byte-equal between
    /// these sides (the run stops asking for it).
    Differ { versions_differ: bool },
}

pub(crate) fn dumps(a: &Reply, b: &Reply) -> Dumps {
    match (a, b) {
        (Reply::BulkString(a), Reply::BulkString(b)) if a == b => Dumps::Equal,
        (Reply::BulkString(a), Reply::BulkString(b)) => Dumps::Differ {
            versions_differ: rdb_version(a) != rdb_version(b),
        },
        _ => Dumps::Differ {
            versions_differ: false,
        },
    }
}

/// The RDB version in a DUMP payload's trailer (2 bytes LE, then an 8-byte CRC64).
pub(crate) fn rdb_version(payload: &[u8]) -> Option<u16> {
    let n = payload.len();
    (n >= 10).then(|| u16::from_le_bytes([payload[n - 10], payload[n - 9]]))
}

/// Two digests: None when equal, else a hint.
pub(crate) fn digests(a: &Digest, b: &Digest) -> Option<String> {
    if a == b {
        None
    } else if a.elements == b.elements {
        Some(format!(
            "{} elements on both sides, different digests",
            a.elements
        ))
    } else {
        Some(format!(
            "source {} elements, target {}",
            a.elements, b.elements
        ))
    }
}

/// What a failed chunked or windowed read means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ReadFailure {
    /// The connection failed: the run ends (exit 2), nothing is claimed.
    Fatal,
    /// A reply error (the key deleted or retyped during the read: XINFO's "no such
    /// key", WRONGTYPE): a difference, which a later round reads again.
    Changed(String),
}

pub(crate) fn read_failure(error: &redis::RedisError) -> ReadFailure {
    if error.is_io_error() || error.is_unrecoverable_error() {
        ReadFailure::Fatal
    } else {
        ReadFailure::Changed(format!("changed during the read: {error}"))
    }
}

/// The same read made on both sides: both answers, or what a failure means.
pub(crate) enum Pair<T> {
    Read(T, T),
    /// The failure that ends the run if either side's connection failed, else the
    /// first side's reply error.
    Failed(ReadFailure, redis::RedisError),
}

pub(crate) fn pair<T>(source: redis::RedisResult<T>, target: redis::RedisResult<T>) -> Pair<T> {
    match (source, target) {
        (Ok(a), Ok(b)) => Pair::Read(a, b),
        (Err(a), Err(b))
            if read_failure(&a) != ReadFailure::Fatal && read_failure(&b) == ReadFailure::Fatal =>
        {
            Pair::Failed(ReadFailure::Fatal, b)
        }
        (Err(e), _) | (_, Err(e)) => Pair::Failed(read_failure(&e), e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_equal_by_their_bytes_and_long_beyond_the_limit() {
        assert_eq!(strings(Some(b"abc"), Some(b"abc"), Some(4)), Strings::Equal);
        assert_eq!(strings(Some(b"abc"), Some(b"abc"), None), Strings::Equal);
        assert_eq!(
            strings(Some(b"abc"), Some(b"abd"), Some(4)),
            Strings::Differ("3 bytes on both sides, different bytes".into())
        );
        assert_eq!(
            strings(Some(b"abc"), Some(b"ab"), None),
            Strings::Differ("source 3 bytes, target 2".into())
        );
        // A reply of limit + 1 bytes on either side is a long string.
        assert_eq!(
            strings(Some(b"abcde"), Some(b"abcd"), Some(4)),
            Strings::Long
        );
        assert_eq!(strings(None, Some(b"abcde"), Some(4)), Strings::Long);
        assert_eq!(
            strings(Some(b"abcde"), Some(b"abcde"), None),
            Strings::Equal
        );
    }

    #[test]
    fn a_string_gone_or_retyped_between_reads_is_never_equal() {
        assert_eq!(
            strings(None, None, Some(4)),
            Strings::Differ("0 bytes on both sides, different bytes".into())
        );
        assert_eq!(
            strings(None, Some(b""), Some(4)),
            Strings::Differ("0 bytes on both sides, different bytes".into())
        );
        let bulk = |b: &[u8]| Reply::BulkString(b.to_vec());
        assert_eq!(
            reread_string(bulk(b""), Some(Reply::Int(1))),
            Some(Vec::new())
        );
        assert_eq!(reread_string(bulk(b"x"), Some(Reply::Int(0))), None);
        assert_eq!(reread_string(Reply::Nil, Some(Reply::Int(1))), None);
        assert_eq!(reread_string(bulk(b"x"), None), None);
    }

    #[test]
    fn lengths_choose_dump_or_digests_and_differ_by_count() {
        assert_eq!(lengths(3, 3, 1024), Lengths::Dump);
        assert_eq!(lengths(1024, 1024, 1024), Lengths::Dump);
        assert_eq!(lengths(1025, 1025, 1024), Lengths::Digest);
        assert_eq!(lengths(-1, -1, 1024), Lengths::Digest, "unreadable");
        assert_eq!(
            lengths(3, 4, 1024),
            Lengths::Differ("source 3 elements, target 4".into())
        );
    }

    /// A DUMP-like payload: the body, the RDB version (LE) and an 8-byte checksum.
    fn payload(body: &[u8], version: u16) -> Reply {
        let mut bytes = body.to_vec();
        bytes.extend_from_slice(&version.to_le_bytes());
        bytes.extend_from_slice(&[0; 8]);
        Reply::BulkString(bytes)
    }

    #[test]
    fn byte_equal_payloads_are_equal_values_and_versions_are_told_apart() {
        assert_eq!(dumps(&payload(b"x", 9), &payload(b"x", 9)), Dumps::Equal);
        assert_eq!(
            dumps(&payload(b"x", 9), &payload(b"y", 9)),
            Dumps::Differ {
                versions_differ: false
            }
        );
        assert_eq!(
            dumps(&payload(b"x", 9), &payload(b"x", 12)),
            Dumps::Differ {
                versions_differ: true
            }
        );
        assert_eq!(
            dumps(&Reply::Nil, &Reply::Nil),
            Dumps::Differ {
                versions_differ: false
            },
            "no payload (a key gone) is never equal"
        );
        assert_eq!(rdb_version(&[1, 2, 3]), None);
        let Reply::BulkString(bytes) = payload(b"", 11) else {
            unreachable!()
        };
        assert_eq!(rdb_version(&bytes), Some(11));
    }

    #[test]
    fn digests_differ_by_hash_or_count() {
        let d = |elements, hash| Digest { elements, hash };
        assert_eq!(digests(&d(3, 7), &d(3, 7)), None);
        assert_eq!(
            digests(&d(3, 7), &d(3, 8)).as_deref(),
            Some("3 elements on both sides, different digests")
        );
        assert_eq!(
            digests(&d(3, 7), &d(4, 7)).as_deref(),
            Some("source 3 elements, target 4")
        );
    }

    #[test]
    fn a_reply_error_during_a_read_is_a_difference_and_a_broken_link_is_fatal() {
        let wrongtype = redis::RedisError::from((
            redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError),
            "WRONGTYPE",
            "Operation against a key holding the wrong kind of value".to_owned(),
        ));
        let ReadFailure::Changed(detail) = read_failure(&wrongtype) else {
            panic!("a reply error is a difference");
        };
        assert!(detail.starts_with("changed during the read: "), "{detail}");
        let broken = redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset",
        ));
        assert_eq!(read_failure(&broken), ReadFailure::Fatal);
    }

    fn wrongtype() -> redis::RedisError {
        redis::RedisError::from((
            redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError),
            "WRONGTYPE",
            "wrong kind".into(),
        ))
    }

    fn reset() -> redis::RedisError {
        redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset",
        ))
    }

    #[test]
    fn either_sides_broken_link_ends_the_run_whatever_the_other_answered() {
        assert!(matches!(pair::<u8>(Ok(1), Ok(2)), Pair::Read(1, 2)));
        let failed = |p: Pair<u8>| match p {
            Pair::Failed(failure, error) => (failure, error.is_io_error()),
            Pair::Read(..) => panic!("both read"),
        };
        assert_eq!(
            failed(pair(Err(wrongtype()), Err(reset()))),
            (ReadFailure::Fatal, true)
        );
        assert_eq!(
            failed(pair(Err(reset()), Err(wrongtype()))),
            (ReadFailure::Fatal, true)
        );
        assert_eq!(
            failed(pair(Ok(1), Err(reset()))),
            (ReadFailure::Fatal, true)
        );
        let (failure, _) = failed(pair(Ok(1), Err(wrongtype())));
        assert!(matches!(failure, ReadFailure::Changed(_)));
    }
}
