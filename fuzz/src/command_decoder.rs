//! The command decoder ([`CommandDecoder`]): the replication stream and client
//! requests, multibulk and inline, on any bytes.
//!
//! The input is decoded twice: whole, and fed in small chunks (as reads deliver
//! it, which exercises the resume-after-`Incomplete` path). Asserts: no panic; both
//! give the same entries with the same byte counts and end the same way (the same
//! error, or incomplete at the end); each command's `wire_bytes` is the bytes it
//! consumed, its argv is not empty and respects the limits set here.

use bytes::BytesMut;
use lockstep_sync::resp::{CommandDecoder, Entry, RespError, Status};

use crate::resp_decoder::limits;

/// Entries and their lengths, then how the input ended (`None`: incomplete or
/// all consumed).
type Outcome = (Vec<(Entry, usize)>, Option<RespError>);

pub fn run(data: &[u8]) {
    let whole = decode_whole(data);
    let chunk = 1 + data.len() % 11;
    let chunked = decode_chunked(data, chunk);
    assert_eq!(
        whole, chunked,
        "decoding in chunks of {chunk} bytes differs"
    );
    let limits = limits();
    let mut total = 0;
    for (entry, len) in &whole.0 {
        total += len;
        if let Entry::Command(c) = entry {
            assert_eq!(c.wire_bytes, *len);
            assert!(!c.argv.is_empty() && c.argv.len() <= limits.array_len_max);
            let max = if c.inline {
                limits.inline_bytes_max
            } else {
                limits.bulk_bytes_max
            };
            assert!(c.argv.iter().all(|a| a.len() <= max));
        }
    }
    assert!(total <= data.len());
}

fn decode_whole(data: &[u8]) -> Outcome {
    let mut decoder = CommandDecoder::new(limits());
    let mut buf = BytesMut::from(data);
    let mut entries = Vec::new();
    loop {
        let before = buf.len();
        match decoder.decode(&mut buf) {
            Ok(Status::Complete(entry, len)) => {
                assert_eq!(before - buf.len(), len, "bytes consumed");
                entries.push((entry, len));
            }
            Ok(Status::Incomplete) => return (entries, None),
            Err(e) => return (entries, Some(e)),
        }
    }
}

fn decode_chunked(data: &[u8], chunk: usize) -> Outcome {
    let mut decoder = CommandDecoder::new(limits());
    let mut buf = BytesMut::new();
    let mut entries = Vec::new();
    let mut rest = data;
    loop {
        match decoder.decode(&mut buf) {
            Ok(Status::Complete(entry, len)) => entries.push((entry, len)),
            Ok(Status::Incomplete) if rest.is_empty() => return (entries, None),
            Ok(Status::Incomplete) => {
                let _ = decoder.bytes_needed_hint(&buf);
                let (now, later) = rest.split_at(chunk.min(rest.len()));
                buf.extend_from_slice(now);
                rest = later;
            }
            Err(e) => return (entries, Some(e)),
        }
    }
}
