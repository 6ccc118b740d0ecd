//! Unit tests of the decoder, the command fast path and the encoders: each type, each
//! error with its offset, and the limits.
//!
//! How it fits: compiled only under `cfg(test)`; the property and real-server tests
//! are in `sync/tests/resp_*.rs`. No test here talks to a server.

use bytes::{Bytes, BytesMut};

use super::*;

fn frame(input: &[u8]) -> (Frame, usize) {
    match decode_frame_slice(input, &Limits::default()) {
        Ok(Status::Complete(f, n)) => (f, n),
        other => panic!("{input:?}: {other:?}"),
    }
}

fn frame_err(input: &[u8], limits: &Limits) -> RespError {
    match decode_frame_slice(input, limits) {
        Err(e) => e,
        other => panic!("{input:?}: expected an error, got {other:?}"),
    }
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

#[test]
fn resp2_types() {
    assert_eq!(frame(b"+OK\r\n"), (Frame::Simple(b("OK")), 5));
    assert_eq!(frame(b"-ERR bad\r\n"), (Frame::Error(b("ERR bad")), 10));
    assert_eq!(frame(b":-42\r\n"), (Frame::Integer(-42), 6));
    assert_eq!(
        frame(b":9223372036854775807\r\n").0,
        Frame::Integer(i64::MAX)
    );
    assert_eq!(
        frame(b":-9223372036854775808\r\n").0,
        Frame::Integer(i64::MIN)
    );
    assert_eq!(frame(b"$3\r\nfoo\r\n"), (Frame::Bulk(b("foo")), 9));
    assert_eq!(frame(b"$0\r\n\r\n"), (Frame::Bulk(b("")), 6));
    assert_eq!(frame(b"$4\r\na\r\nb\r\n").0, Frame::Bulk(b("a\r\nb")));
    assert_eq!(frame(b"$-1\r\n"), (Frame::NullBulk, 5));
    assert_eq!(frame(b"*-1\r\n"), (Frame::NullArray, 5));
    assert_eq!(frame(b"*0\r\n"), (Frame::Array(vec![]), 4));
    assert_eq!(
        frame(b"*2\r\n:1\r\n*1\r\n$1\r\nx\r\nTRAILING"),
        (
            Frame::Array(vec![
                Frame::Integer(1),
                Frame::Array(vec![Frame::bulk("x")])
            ]),
            19
        )
    );
}

#[test]
fn resp3_types() {
    assert_eq!(frame(b"_\r\n"), (Frame::Null, 3));
    assert_eq!(frame(b"#t\r\n").0, Frame::Boolean(true));
    assert_eq!(frame(b"#f\r\n").0, Frame::Boolean(false));
    assert_eq!(frame(b",1.5\r\n").0, Frame::Double(1.5));
    assert_eq!(frame(b",-0.25\r\n").0, Frame::Double(-0.25));
    assert_eq!(frame(b",1e+300\r\n").0, Frame::Double(1e300));
    assert_eq!(frame(b",inf\r\n").0, Frame::Double(f64::INFINITY));
    assert_eq!(frame(b",-inf\r\n").0, Frame::Double(f64::NEG_INFINITY));
    assert!(matches!(frame(b",nan\r\n").0, Frame::Double(d) if d.is_nan()));
    assert_eq!(
        frame(b"(-3492890328409238509324850943850943825024385\r\n").0,
        Frame::BigNumber(b("-3492890328409238509324850943850943825024385"))
    );
    assert_eq!(
        frame(b"=15\r\ntxt:Some string\r\n"),
        (
            Frame::Verbatim {
                format: *b"txt",
                text: b("Some string")
            },
            22
        )
    );
    assert_eq!(
        frame(b"!21\r\nSYNTAX invalid syntax\r\n").0,
        Frame::BlobError(b("SYNTAX invalid syntax"))
    );
    assert_eq!(
        frame(b"%2\r\n+a\r\n:1\r\n+b\r\n:2\r\n").0,
        Frame::Map(vec![
            (Frame::simple("a"), Frame::Integer(1)),
            (Frame::simple("b"), Frame::Integer(2)),
        ])
    );
    assert_eq!(
        frame(b"~2\r\n+a\r\n#t\r\n").0,
        Frame::Set(vec![Frame::simple("a"), Frame::Boolean(true)])
    );
    assert_eq!(
        frame(b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n").0,
        Frame::Push(vec![
            Frame::bulk("message"),
            Frame::bulk("ch"),
            Frame::bulk("hi")
        ])
    );
    let (attr, len) = frame(b"|1\r\n+key-popularity\r\n%1\r\n$1\r\na\r\n,0.1923\r\n*1\r\n:2\r\n");
    assert_eq!(len, 49);
    assert_eq!(
        attr,
        Frame::Attribute {
            attrs: vec![(
                Frame::simple("key-popularity"),
                Frame::Map(vec![(Frame::bulk("a"), Frame::Double(0.1923))])
            )],
            value: Box::new(Frame::Array(vec![Frame::Integer(2)])),
        }
    );
}

#[test]
fn every_prefix_of_a_frame_is_incomplete() {
    let input = b"*3\r\n%1\r\n+a\r\n,2.5\r\n$5\r\nhello\r\n|1\r\n+x\r\n+y\r\n=8\r\ntxt:abcd\r\n";
    for cut in 0..input.len() {
        assert_eq!(
            decode_frame_slice(&input[..cut], &Limits::default()),
            Ok(Status::Incomplete),
            "cut at {cut}"
        );
    }
    assert_eq!(frame(input).1, input.len());
}

#[test]
fn decode_frame_consumes_only_complete_values() {
    let mut buf = BytesMut::from(&b"+OK\r\n:1\r\n$3\r\nfo"[..]);
    let limits = Limits::default();
    assert_eq!(
        decode_frame(&mut buf, &limits),
        Ok(Status::Complete(Frame::simple("OK"), 5))
    );
    assert_eq!(
        decode_frame(&mut buf, &limits),
        Ok(Status::Complete(Frame::Integer(1), 4))
    );
    assert_eq!(decode_frame(&mut buf, &limits), Ok(Status::Incomplete));
    assert_eq!(&buf[..], b"$3\r\nfo");
    buf.extend_from_slice(b"o\r\n");
    assert_eq!(
        decode_frame(&mut buf, &limits),
        Ok(Status::Complete(Frame::bulk("foo"), 9))
    );
    assert!(buf.is_empty());
}

#[test]
fn errors_name_the_offset_and_what_was_expected() {
    let d = Limits::default();
    let cases: Vec<(&[u8], u64, RespErrorKind)> = vec![
        (
            b"@x\r\n",
            0,
            RespErrorKind::BadPrefix {
                found: b'@',
                expected: "a RESP type byte (one of + - : $ * _ # , ( = ! % ~ | >)",
            },
        ),
        (b"$-2\r\n", 1, RespErrorKind::NegativeLength(-2)),
        (b"*-5\r\n", 1, RespErrorKind::NegativeLength(-5)),
        (b"*1\r\n$-7\r\n", 5, RespErrorKind::NegativeLength(-7)),
        (b"$3\r\nfooXY", 7, RespErrorKind::MissingCrlf),
        (b"+OK\rX", 4, RespErrorKind::MissingCrlf),
        (b"$abc\r\n", 1, RespErrorKind::BadInteger),
        (b"$\r\n", 1, RespErrorKind::BadInteger),
        (b":1 \r\n", 1, RespErrorKind::BadInteger),
        (b":99999999999999999999\r\n", 1, RespErrorKind::BadInteger),
        (b"*2\r\n:1\r\n,abc\r\n", 9, RespErrorKind::BadDouble),
        (b"#x\r\n", 1, RespErrorKind::BadBoolean),
        (b"_x\r\n", 1, RespErrorKind::BadNull),
        (b"=3\r\ntxt\r\n", 4, RespErrorKind::BadVerbatim),
        (b"=4\r\ntxt-\r\n", 4, RespErrorKind::BadVerbatim),
        (b"(12a\r\n", 1, RespErrorKind::BadInteger),
        (b"%-1\r\n", 1, RespErrorKind::UnexpectedNull),
        (b"!-1\r\n", 1, RespErrorKind::UnexpectedNull),
        (
            b"$536870913\r\n",
            1,
            RespErrorKind::TooLong {
                limit: "bulk_bytes_max",
                len: 536_870_913,
                max: 536_870_912,
            },
        ),
    ];
    for (input, offset, kind) in cases {
        let e = frame_err(input, &d);
        assert_eq!((e.offset, &e.kind), (offset, &kind), "{input:?}");
    }
    let e = frame_err(b"+OK\rX", &d);
    assert_eq!(
        e.to_string(),
        "RESP protocol error at byte 4: expected \\r\\n"
    );
}

#[test]
fn limits_are_enforced_before_allocation() {
    let tight = Limits {
        bulk_bytes_max: 10,
        array_len_max: 3,
        nesting_depth_max: 2,
        line_bytes_max: 8,
        inline_bytes_max: 8,
    };
    let kind = |input: &[u8]| frame_err(input, &tight).kind;
    assert!(matches!(
        kind(b"$11\r\n"),
        RespErrorKind::TooLong {
            limit: "bulk_bytes_max",
            len: 11,
            ..
        }
    ));
    assert!(matches!(
        kind(b"*4\r\n"),
        RespErrorKind::TooLong {
            limit: "array_len_max",
            ..
        }
    ));
    assert!(matches!(
        kind(b"%4\r\n"),
        RespErrorKind::TooLong {
            limit: "array_len_max",
            ..
        }
    ));
    assert_eq!(
        kind(b"*1\r\n*1\r\n*1\r\n:1\r\n"),
        RespErrorKind::TooDeep { max: 2 }
    );
    assert_eq!(frame_err(b"*1\r\n*1\r\n*1\r\n:1\r\n", &tight).offset, 8);
    // A line with no CRLF in sight is an error once it is longer than the limit, not
    // an ever-growing Incomplete.
    assert!(matches!(
        kind(b"+123456789"),
        RespErrorKind::TooLong {
            limit: "line_bytes_max",
            ..
        }
    ));
    assert_eq!(
        decode_frame_slice(b"+1234567", &tight),
        Ok(Status::Incomplete)
    );
    // A huge announced array with few bytes behind it is merely incomplete.
    assert_eq!(
        decode_frame_slice(b"*2147483647\r\n:1\r\n", &Limits::default()),
        Ok(Status::Incomplete)
    );
}

fn entries(input: &[u8]) -> Vec<(Entry, usize)> {
    let mut buf = BytesMut::from(input);
    let mut dec = CommandDecoder::new(Limits::default());
    let mut out = Vec::new();
    while let Status::Complete(e, n) = dec.decode(&mut buf).expect("valid") {
        out.push((e, n));
    }
    assert!(buf.is_empty(), "left over: {buf:?}");
    out
}

fn cmd(argv: &[&str], wire_bytes: usize, inline: bool) -> Entry {
    Entry::Command(Command {
        argv: argv.iter().map(|a| b(a)).collect(),
        wire_bytes,
        inline,
    })
}

#[test]
fn commands_pipelined_inline_and_blank() {
    let input = b"*1\r\n$6\r\nSELECT\r\n\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\nPING\r\n\r\n*0\r\n*-1\r\n  \r\nset \"a b\" 'c\\'d' \"\\x41\\n\"\n";
    let got = entries(input);
    let want = vec![
        (cmd(&["SELECT"], 16, false), 16),
        (Entry::Blank, 1),
        (cmd(&["SET", "k", ""], 26, false), 26),
        (cmd(&["PING"], 6, true), 6),
        (Entry::Blank, 2),
        (Entry::Blank, 4),
        (Entry::Blank, 5),
        (Entry::Blank, 4),
        (cmd(&["set", "a b", "c'd", "A\n"], 26, true), 26),
    ];
    assert_eq!(got, want);
    assert_eq!(
        got.iter().map(|(_, n)| n).sum::<usize>(),
        input.len(),
        "every byte is accounted for"
    );
}

#[test]
fn command_accessors() {
    let got = entries(b"*3\r\n$4\r\nhset\r\n$1\r\nh\r\n$1\r\nf\r\n");
    let Entry::Command(c) = &got[0].0 else {
        panic!()
    };
    assert!(c.is("HSET"));
    assert_eq!(c.name(), b"hset");
    assert_eq!(c.args(), &[b("h"), b("f")]);
}

#[test]
fn command_errors() {
    let d = Limits::default();
    let err = |input: &[u8], limits: &Limits| {
        let mut buf = BytesMut::from(input);
        CommandDecoder::new(limits.clone())
            .decode(&mut buf)
            .expect_err("must fail")
    };
    let e = err(b"*2\r\n$3\r\nGET\r\n:1\r\n", &d);
    assert_eq!(e.offset, 13);
    assert!(matches!(
        e.kind,
        RespErrorKind::BadPrefix { found: b':', .. }
    ));
    assert_eq!(
        err(b"*1\r\n$-1\r\n", &d).kind,
        RespErrorKind::UnexpectedNull
    );
    assert_eq!(
        err(b"*1\r\n$-3\r\n", &d).kind,
        RespErrorKind::NegativeLength(-3)
    );
    assert_eq!(err(b"*1\r\n$3\r\nGETxx", &d).offset, 11);
    assert_eq!(err(b"*x\r\n", &d).kind, RespErrorKind::BadInteger);
    assert_eq!(err(b"GET \"a\"b\r\n", &d).offset, 7);
    assert_eq!(
        err(b"GET \"ab\r\n", &d).kind,
        RespErrorKind::UnbalancedQuotes
    );
    let tight = Limits {
        inline_bytes_max: 4,
        array_len_max: 2,
        bulk_bytes_max: 3,
        ..Limits::default()
    };
    assert!(matches!(
        err(b"PINGPONG", &tight).kind,
        RespErrorKind::TooLong {
            limit: "inline_bytes_max",
            ..
        }
    ));
    assert!(matches!(
        err(b"*3\r\n", &tight).kind,
        RespErrorKind::TooLong {
            limit: "array_len_max",
            ..
        }
    ));
    let e = err(b"*1\r\n$4\r\n", &tight);
    assert_eq!(e.offset, 5);
    assert!(matches!(
        e.kind,
        RespErrorKind::TooLong {
            limit: "bulk_bytes_max",
            ..
        }
    ));
}

#[test]
fn command_decoder_resumes_after_partial_reads() {
    let mut whole = BytesMut::new();
    encode_command(&mut whole, &["MSET", "k1", "v1", "k2", "a longer value"]);
    let mut dec = CommandDecoder::new(Limits::default());
    let mut buf = BytesMut::new();
    for (i, byte) in whole.iter().enumerate() {
        buf.extend_from_slice(&[*byte]);
        let got = dec.decode(&mut buf).expect("valid");
        if i + 1 < whole.len() {
            assert_eq!(got, Status::Incomplete, "after {} bytes", i + 1);
        } else {
            let (entry, len) = got.complete().expect("complete");
            assert_eq!(len, whole.len());
            assert_eq!(
                entry,
                cmd(&["MSET", "k1", "v1", "k2", "a longer value"], len, false)
            );
        }
    }
}

#[test]
fn bytes_needed_hint_reports_a_big_argument() {
    let mut dec = CommandDecoder::new(Limits::default());
    let mut buf = BytesMut::from(&b"*2\r\n$3\r\nSET\r\n$100000\r\nabc"[..]);
    assert_eq!(dec.decode(&mut buf), Ok(Status::Incomplete));
    assert_eq!(dec.bytes_needed_hint(&buf), 100_000 - 3 + 2);
}

#[test]
fn frames_encode_back_to_the_same_bytes() {
    let inputs: &[&[u8]] = &[
        b"+OK\r\n",
        b"-ERR x\r\n",
        b":-1\r\n",
        b"$3\r\nfoo\r\n",
        b"$-1\r\n",
        b"*-1\r\n",
        b"_\r\n",
        b"#t\r\n",
        b",1.5\r\n",
        b",inf\r\n",
        b",-inf\r\n",
        b",nan\r\n",
        b"(123\r\n",
        b"=8\r\nmkd:abcd\r\n",
        b"!3\r\nERR\r\n",
        b"*2\r\n%1\r\n+a\r\n~1\r\n:1\r\n>1\r\n|1\r\n+k\r\n+v\r\n_\r\n",
    ];
    for input in inputs {
        let (f, n) = frame(input);
        assert_eq!(n, input.len());
        let mut out = BytesMut::new();
        encode_frame(&mut out, &f);
        assert_eq!(&out[..], *input, "{f:?}");
    }
}

#[tokio::test]
async fn reader_counts_offsets_through_tiny_reads() {
    use tokio::io::AsyncWriteExt;
    // A 7-byte pipe: every value arrives split over several reads.
    let (mut tx, rx) = tokio::io::duplex(7);
    let mut wire = BytesMut::new();
    wire.extend_from_slice(b"+FULLRESYNC abc 100\r\n\n\r\n$5\r\nREDIS");
    encode_command(&mut wire, &["SELECT", "0"]);
    wire.extend_from_slice(b"\n");
    encode_command(&mut wire, &["SET", "k", "v"]);
    let total = wire.len();
    let writer = tokio::spawn(async move {
        tx.write_all(&wire).await.expect("write");
    });
    let mut reader = FrameReader::new(rx, Limits::default());
    assert_eq!(
        reader.read_frame().await.expect("read"),
        Some(Frame::simple("FULLRESYNC abc 100"))
    );
    assert_eq!(reader.skip_newlines().await.expect("skip"), 3);
    assert_eq!(reader.read_line().await.expect("line"), Some(b("$5")));
    let mut rdb = Vec::new();
    while rdb.len() < 5 {
        let chunk = reader.read_chunk(5 - rdb.len()).await.expect("chunk");
        rdb.extend_from_slice(&chunk.expect("not eof"));
    }
    assert_eq!(rdb, b"REDIS");
    let mut stream = CommandStream::new(reader, 100);
    let (e, off) = stream.next().await.expect("read").expect("entry");
    assert_eq!(e, cmd(&["SELECT", "0"], 23, false));
    assert_eq!(off, 123);
    assert_eq!(
        stream.next().await.expect("read"),
        Some((Entry::Blank, 124))
    );
    let (e, off) = stream.next().await.expect("read").expect("entry");
    assert!(matches!(e, Entry::Command(c) if c.is("set")));
    assert_eq!(off, 124 + 27);
    writer.await.expect("writer");
    assert_eq!(stream.next().await.expect("eof"), None);
    assert_eq!(stream.into_reader().consumed_bytes(), total as u64);
}

#[tokio::test]
async fn reader_reports_eof_inside_a_value_and_shifts_error_offsets() {
    let mut reader = FrameReader::new(&b"+OK\r\n$5\r\nab"[..], Limits::default());
    assert_eq!(
        reader.read_frame().await.expect("ok"),
        Some(Frame::simple("OK"))
    );
    assert!(matches!(
        reader.read_frame().await,
        Err(ReadError::UnexpectedEof { buffered_bytes: 6 })
    ));
    let mut reader = FrameReader::new(&b"*1\r\n$1\r\nx\r\n*1\r\n$1\r\nyZZ"[..], Limits::default());
    assert!(reader.read_entry().await.expect("first").is_some());
    match reader.read_entry().await {
        Err(ReadError::Protocol(e)) => {
            assert_eq!((e.offset, e.kind), (20, RespErrorKind::MissingCrlf))
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn buffered_newlines_and_lines_never_read_and_last_read_moves_only_on_bytes() {
    use tokio::io::AsyncWriteExt;
    let (mut tx, rx) = tokio::io::duplex(1024);
    let mut reader = FrameReader::new(rx, Limits::default());
    assert_eq!(reader.last_read(), None);
    // A keepalive, a \r whose \n is still on its way, then the rest.
    tx.write_all(b"\n\r\n\r").await.expect("write");
    assert!(reader.fill(0).await.expect("fill") > 0);
    let first = reader.last_read().expect("bytes came");
    reader.skip_buffered_newlines();
    assert_eq!(&reader.buffer()[..], b"\r", "a lone \\r may start a \\r\\n");
    assert_eq!(reader.buffered_line().expect("line"), None);
    tx.write_all(b"\n\n$EOF:x\r\n").await.expect("write");
    assert!(reader.fill(0).await.expect("fill") > 0);
    assert!(reader.last_read().expect("bytes came") >= first);
    reader.skip_buffered_newlines();
    assert_eq!(reader.buffered_line().expect("line"), Some(b("$EOF:x")));
    assert_eq!(reader.consumed_bytes(), 14);
    // Nothing arrives: a read that brings nothing leaves the time alone.
    let before = reader.last_read();
    let idle = tokio::time::timeout(std::time::Duration::ZERO, reader.fill(0)).await;
    assert!(idle.is_err(), "nothing to read");
    assert_eq!(reader.last_read(), before);
}
