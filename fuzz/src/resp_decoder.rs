//! The RESP2/RESP3 reply decoder ([`check_frame`], [`decode_frame`],
//! [`decode_frame_slice`], [`first_error_element`]): what the handshake and the
//! target's replies go through, on any bytes.
//!
//! Asserts: no panic; the check pass and both build passes agree on every frame's
//! length and on the frame, which lies inside the input; a frame respects the
//! limits set here (string lengths, aggregate lengths, nesting depth); decoding
//! the frames one after the other consumes exactly their lengths.

use bytes::BytesMut;
use lockstep_sync::resp::{
    check_frame, decode_frame, decode_frame_slice, first_error_element, Frame, Limits, Status,
};

/// The limits the target sets.
pub fn limits() -> Limits {
    Limits {
        bulk_bytes_max: 1024 * 1024,
        array_len_max: 1024,
        nesting_depth_max: 16,
        line_bytes_max: 1024,
        inline_bytes_max: 4096,
    }
}

pub fn run(data: &[u8]) {
    let limits = limits();
    let mut buf = BytesMut::from(data);
    let mut consumed = 0;
    while !buf.is_empty() {
        let checked = check_frame(&buf, &limits);
        let sliced = decode_frame_slice(&buf, &limits);
        let _ = first_error_element(&buf, &limits);
        let before = buf.len();
        let decoded = decode_frame(&mut buf, &limits);
        match (checked, sliced, decoded) {
            (
                Ok(Status::Complete((), len)),
                Ok(Status::Complete(a, la)),
                Ok(Status::Complete(b, lb)),
            ) => {
                assert!(
                    len == la && len == lb && len > 0 && len <= before,
                    "lengths"
                );
                assert_eq!(before - buf.len(), len, "bytes consumed");
                assert_eq!(format!("{a:?}"), format!("{b:?}"), "the two build passes");
                check_frame_limits(&b, &limits, 1);
                consumed += len;
            }
            (Ok(Status::Incomplete), Ok(Status::Incomplete), Ok(Status::Incomplete))
            | (Err(_), Err(_), Err(_)) => break,
            (c, s, d) => panic!("the passes disagree: {c:?} / {s:?} / {d:?}"),
        }
    }
    assert!(consumed <= data.len());
}

fn check_frame_limits(frame: &Frame, limits: &Limits, depth: usize) {
    let string_ok = |len: usize| len <= limits.bulk_bytes_max.max(limits.line_bytes_max);
    let aggregate = |len: usize| {
        assert!(len <= limits.array_len_max, "aggregate of {len}");
        assert!(depth <= limits.nesting_depth_max, "depth {depth}");
    };
    match frame {
        Frame::Simple(s) | Frame::Error(s) | Frame::Bulk(s) | Frame::BigNumber(s) => {
            assert!(string_ok(s.len()))
        }
        Frame::BlobError(s) | Frame::Verbatim { text: s, .. } => assert!(string_ok(s.len())),
        Frame::Array(v) | Frame::Set(v) | Frame::Push(v) => {
            aggregate(v.len());
            v.iter()
                .for_each(|f| check_frame_limits(f, limits, depth + 1));
        }
        Frame::Map(pairs) => {
            aggregate(pairs.len());
            for (k, v) in pairs {
                check_frame_limits(k, limits, depth + 1);
                check_frame_limits(v, limits, depth + 1);
            }
        }
        Frame::Attribute { attrs, value } => {
            aggregate(attrs.len());
            for (k, v) in attrs {
                check_frame_limits(k, limits, depth + 1);
                check_frame_limits(v, limits, depth + 1);
            }
            check_frame_limits(value, limits, depth);
        }
        _ => {}
    }
}
