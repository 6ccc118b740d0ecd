//! The RESP codec against real servers of every version: pipelined commands over a
//! raw socket and the real replies decoded (RESP2, then RESP3 after `HELLO 3`, with
//! maps, sets, doubles, big numbers, verbatim strings, attributes and pushes), and the
//! command stream a primary sends to a replica, whose decoded byte counts must land
//! exactly on the primary's `master_repl_offset`.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use lockstep_sync::resp::{
    decode_frame_slice, encode_frame, CommandStream, CommandWriter, Entry, Frame, FrameReader,
    Limits, Status,
};
use lockstep_testkit::{RedisServer, RedisVersion, ServerConfig};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(20);

fn config(version: RedisVersion) -> ServerConfig {
    let config = ServerConfig::new(version).set("repl-diskless-sync", "no");
    if version >= RedisVersion::V7_0 {
        // DEBUG PROTOCOL answers with every RESP3 type; 7.0+ refuses DEBUG by default.
        config.set("enable-debug-command", "yes")
    } else {
        config
    }
}

async fn connect(
    server: &RedisServer,
) -> anyhow::Result<(
    FrameReader<tokio::net::tcp::OwnedReadHalf>,
    CommandWriter<tokio::net::tcp::OwnedWriteHalf>,
)> {
    let (r, w) = TcpStream::connect(server.addr()).await?.into_split();
    Ok((
        FrameReader::new(r, Limits::default()),
        CommandWriter::new(w),
    ))
}

/// Read raw bytes until `n` whole replies are there; decode them from the raw bytes
/// and check that each one's length is where the next starts and that the whole
/// input is used up. Returns the replies and their raw bytes.
async fn replies(stream: &mut TcpStream, n: usize) -> anyhow::Result<Vec<(Frame, Bytes)>> {
    let mut raw = BytesMut::new();
    let mut out = Vec::new();
    let mut at = 0;
    while out.len() < n {
        match decode_frame_slice(&raw[at..], &Limits::default())? {
            Status::Complete(frame, len) => {
                out.push((frame, Bytes::copy_from_slice(&raw[at..at + len])));
                at += len;
            }
            Status::Incomplete => {
                let read = timeout(WAIT, stream.read_buf(&mut raw)).await??;
                anyhow::ensure!(read > 0, "server closed after {} replies", out.len());
            }
        }
    }
    anyhow::ensure!(
        at == raw.len(),
        "{} bytes after the last reply",
        raw.len() - at
    );
    Ok(out)
}

/// Where Redis writes a double exactly as we do, the frame re-encodes to its bytes.
fn has_double(f: &Frame) -> bool {
    match f {
        Frame::Double(_) => true,
        Frame::Array(v) | Frame::Set(v) | Frame::Push(v) => v.iter().any(has_double),
        Frame::Map(p) => p.iter().any(|(k, v)| has_double(k) || has_double(v)),
        Frame::Attribute { attrs, value } => {
            attrs.iter().any(|(k, v)| has_double(k) || has_double(v)) || has_double(value)
        }
        _ => false,
    }
}

fn assert_reencodes(replies: &[(Frame, Bytes)]) {
    for (frame, raw) in replies {
        if has_double(frame) {
            continue;
        }
        let mut out = BytesMut::new();
        encode_frame(&mut out, frame);
        assert_eq!(&out[..], &raw[..], "{frame:?}");
    }
}

fn bulk(s: &str) -> Frame {
    Frame::bulk(s)
}

fn script() -> Vec<Vec<&'static str>> {
    vec![
        vec!["SET", "s", "hello"],
        vec!["GET", "s"],
        vec!["GET", "missing"],
        vec!["INCR", "n"],
        vec!["INCR", "s"],
        vec!["RPUSH", "l", "a", "b", ""],
        vec!["LRANGE", "l", "0", "-1"],
        vec!["HSET", "h", "f1", "v1", "f2", "v2"],
        vec!["HGETALL", "h"],
        vec!["SADD", "set", "m"],
        vec!["SMEMBERS", "set"],
        vec!["ZADD", "z", "1.5", "a"],
        vec!["ZSCORE", "z", "a"],
        vec!["ZRANGE", "z", "0", "-1", "WITHSCORES"],
        vec!["LPOP", "missing"],
        vec!["NOSUCHCOMMAND"],
    ]
}

#[tokio::test]
async fn pipelined_resp2_replies_of_every_version() -> anyhow::Result<()> {
    for version in RedisVersion::ALL {
        let server = RedisServer::start(config(version)).await?;
        let mut stream = TcpStream::connect(server.addr()).await?;
        let mut wire = BytesMut::new();
        for argv in script() {
            lockstep_sync::resp::encode_command(&mut wire, &argv);
        }
        wire.extend_from_slice(b"PING\r\nECHO \"a b\"\r\n");
        tokio::io::AsyncWriteExt::write_all(&mut stream, &wire).await?;
        let got = replies(&mut stream, script().len() + 2).await?;
        assert_reencodes(&got);
        let frames: Vec<&Frame> = got.iter().map(|(f, _)| f).collect();
        assert_eq!(frames[0], &Frame::simple("OK"), "{version:?}");
        assert_eq!(frames[1], &bulk("hello"));
        assert_eq!(frames[2], &Frame::NullBulk);
        assert_eq!(frames[3], &Frame::Integer(1));
        assert!(frames[4].as_error().is_some_and(|e| e.starts_with(b"ERR")));
        assert_eq!(frames[5], &Frame::Integer(3));
        assert_eq!(
            frames[6],
            &Frame::Array(vec![bulk("a"), bulk("b"), bulk("")])
        );
        assert_eq!(
            frames[8],
            &Frame::Array(vec![bulk("f1"), bulk("v1"), bulk("f2"), bulk("v2")])
        );
        assert_eq!(frames[10], &Frame::Array(vec![bulk("m")]));
        assert_eq!(frames[12], &bulk("1.5"));
        assert_eq!(frames[13], &Frame::Array(vec![bulk("a"), bulk("1.5")]));
        assert_eq!(frames[14], &Frame::NullBulk);
        assert!(frames[15]
            .as_error()
            .is_some_and(|e| e.starts_with(b"ERR unknown command")));
        assert_eq!(frames[16], &Frame::simple("PONG"));
        assert_eq!(frames[17], &bulk("a b"));
    }
    Ok(())
}

#[tokio::test]
async fn resp3_replies_of_every_version() -> anyhow::Result<()> {
    for version in RedisVersion::ALL {
        let server = RedisServer::start(config(version)).await?;
        let mut stream = TcpStream::connect(server.addr()).await?;
        let mut wire = BytesMut::new();
        let mut commands = vec![vec!["HELLO", "3"]];
        commands.extend(script());
        for kind in [
            "string", "integer", "double", "bignum", "null", "array", "set", "map", "attrib",
            "push", "true", "false", "verbatim",
        ] {
            commands.push(vec!["DEBUG", "PROTOCOL", kind]);
        }
        for argv in &commands {
            lockstep_sync::resp::encode_command(&mut wire, argv);
        }
        tokio::io::AsyncWriteExt::write_all(&mut stream, &wire).await?;
        // DEBUG PROTOCOL push sends the push and then a reply: one extra frame.
        let got = replies(&mut stream, commands.len() + 1).await?;
        assert_reencodes(&got);
        let frames: Vec<&Frame> = got.iter().map(|(f, _)| f).collect();
        let Frame::Map(hello) = frames[0] else {
            panic!("{version:?}: HELLO 3 gave {:?}", frames[0])
        };
        assert!(hello.contains(&(bulk("proto"), Frame::Integer(3))));
        let s = &frames[1..];
        assert_eq!(s[2], &Frame::Null, "{version:?}: GET missing");
        assert_eq!(
            s[8],
            &Frame::Map(vec![(bulk("f1"), bulk("v1")), (bulk("f2"), bulk("v2"))])
        );
        assert_eq!(s[10], &Frame::Set(vec![bulk("m")]));
        assert_eq!(s[12], &Frame::Double(1.5));
        assert_eq!(
            s[13],
            &Frame::Array(vec![Frame::Array(vec![bulk("a"), Frame::Double(1.5)])])
        );
        let d = &frames[1 + script().len()..];
        assert!(matches!(d[0], Frame::Bulk(_)), "{:?}", d[0]);
        assert!(matches!(d[1], Frame::Integer(_)), "{:?}", d[1]);
        assert!(
            matches!(d[2], Frame::Double(x) if (3.0..3.2).contains(x)),
            "{:?}",
            d[2]
        );
        assert!(matches!(d[3], Frame::BigNumber(_)), "{:?}", d[3]);
        assert_eq!(d[4], &Frame::Null);
        assert!(
            matches!(d[5], Frame::Array(v) if v.len() == 3),
            "{:?}",
            d[5]
        );
        assert!(matches!(d[6], Frame::Set(v) if v.len() == 3), "{:?}", d[6]);
        assert!(
            matches!(d[7], Frame::Map(p) if p.len() == 3 && matches!(p[0].1, Frame::Boolean(_))),
            "{:?}",
            d[7]
        );
        assert!(matches!(d[8], Frame::Attribute { .. }), "{:?}", d[8]);
        // The push and the reply that follows it: 7.2+ sends the push after the reply.
        let (push, reply) = if matches!(d[9], Frame::Push(_)) {
            (d[9], d[10])
        } else {
            (d[10], d[9])
        };
        assert!(matches!(push, Frame::Push(v) if v.len() == 2), "{push:?}");
        assert!(
            matches!(reply, Frame::Simple(_) | Frame::Bulk(_)),
            "{reply:?}"
        );
        assert_eq!(d[11], &Frame::Boolean(true));
        assert_eq!(d[12], &Frame::Boolean(false));
        assert!(
            matches!(d[13], Frame::Verbatim { format, .. } if format == b"txt"),
            "{:?}",
            d[13]
        );
    }
    Ok(())
}

#[tokio::test]
async fn pubsub_pushes_through_the_frame_reader() -> anyhow::Result<()> {
    let server = RedisServer::start(config(RedisVersion::V7_0)).await?;
    let (mut sub_r, mut sub_w) = connect(&server).await?;
    sub_w
        .push(&["HELLO", "3"])
        .push(&["SUBSCRIBE", "ch"])
        .flush()
        .await?;
    assert!(matches!(sub_r.read_frame().await?, Some(Frame::Map(_))));
    let subscribed = sub_r.read_frame().await?;
    assert_eq!(
        subscribed,
        Some(Frame::Push(vec![
            bulk("subscribe"),
            bulk("ch"),
            Frame::Integer(1)
        ]))
    );
    let (mut pub_r, mut pub_w) = connect(&server).await?;
    pub_w.send(&["PUBLISH", "ch", "hi\r\nthere"]).await?;
    assert_eq!(pub_r.read_frame().await?, Some(Frame::Integer(1)));
    let message = timeout(WAIT, sub_r.read_frame()).await??;
    assert_eq!(
        message,
        Some(Frame::Push(vec![
            bulk("message"),
            bulk("ch"),
            bulk("hi\r\nthere")
        ]))
    );
    assert!(sub_r.buffer().is_empty());
    Ok(())
}

#[tokio::test]
async fn replication_stream_offsets_match_the_primary_on_every_version() -> anyhow::Result<()> {
    for version in RedisVersion::ALL {
        let primary = RedisServer::start(config(version)).await?;
        let (mut reader, mut writer) = connect(&primary).await?;
        writer
            .push(&["REPLCONF", "capa", "eof", "capa", "psync2"])
            .flush()
            .await?;
        assert_eq!(reader.read_frame().await?, Some(Frame::simple("OK")));
        writer.send(&["PSYNC", "?", "-1"]).await?;
        reader.skip_newlines().await?;
        let Some(Frame::Simple(reply)) = timeout(WAIT, reader.read_frame()).await?? else {
            panic!("{version:?}: no FULLRESYNC")
        };
        let reply = String::from_utf8(reply.to_vec())?;
        let mut words = reply.split(' ');
        assert_eq!(words.next(), Some("FULLRESYNC"));
        let replid = words.next().unwrap_or_default().to_owned();
        assert_eq!(replid.len(), 40);
        let start: i64 = words.next().unwrap_or_default().parse()?;

        // Disk-based transfer: keepalive newlines, then `$<len>\r\n` and the RDB.
        timeout(WAIT, reader.skip_newlines()).await??;
        let header = timeout(WAIT, reader.read_line())
            .await??
            .ok_or_else(|| anyhow::anyhow!("closed before the RDB"))?;
        assert_eq!(header.first(), Some(&b'$'), "{version:?}");
        let mut rdb_bytes: usize = std::str::from_utf8(&header[1..])?.parse()?;
        let mut first = true;
        while rdb_bytes > 0 {
            let chunk = timeout(WAIT, reader.read_chunk(rdb_bytes))
                .await??
                .ok_or_else(|| anyhow::anyhow!("closed in the RDB"))?;
            if first {
                assert!(chunk.starts_with(b"REDIS"), "{version:?}: {chunk:?}");
                first = false;
            }
            rdb_bytes -= chunk.len();
        }
        writer
            .send(&["REPLCONF", "ACK", &start.to_string()])
            .await?;

        // Writes that get propagated, some rewritten, some wrapped in MULTI/EXEC.
        let mut conn = primary.client().await?;
        redis::pipe()
            .cmd("SET")
            .arg("k")
            .arg("v")
            .ignore()
            .cmd("SET")
            .arg("bin")
            .arg(&b"a\r\n\x00b"[..])
            .ignore()
            .cmd("HSET")
            .arg("h")
            .arg("f")
            .arg("v")
            .ignore()
            .cmd("ZADD")
            .arg("z")
            .arg(1.5)
            .arg("m")
            .ignore()
            .cmd("SET")
            .arg("ex")
            .arg("v")
            .arg("EX")
            .arg(100)
            .ignore()
            .cmd("INCRBYFLOAT")
            .arg("f")
            .arg(0.5)
            .ignore()
            .cmd("SELECT")
            .arg(3)
            .ignore()
            .cmd("SET")
            .arg("db3")
            .arg("x")
            .ignore()
            .exec_async(&mut conn)
            .await?;
        redis::pipe()
            .atomic()
            .cmd("SET")
            .arg("m1")
            .arg("1")
            .ignore()
            .cmd("SET")
            .arg("m2")
            .arg(&vec![b'x'; 100_000][..])
            .ignore()
            .exec_async(&mut conn)
            .await?;
        let info = primary.info("replication").await?;
        let end = info.int("master_repl_offset")?;
        assert!(end > start, "{version:?}: nothing propagated");

        let mut stream = CommandStream::new(reader, start);
        let mut names = Vec::new();
        while stream.offset() < end {
            let Some((entry, offset)) = timeout(WAIT, stream.next()).await?? else {
                panic!("{version:?}: stream closed at {}", stream.offset())
            };
            if let Entry::Command(c) = entry {
                assert!(!c.inline);
                names.push(String::from_utf8_lossy(c.name()).to_uppercase());
                if c.is("SET") && c.args()[0] == "bin" {
                    assert_eq!(&c.args()[1][..], b"a\r\n\x00b");
                }
                if c.is("SET") && c.args()[0] == "m2" {
                    assert_eq!(c.args()[1].len(), 100_000);
                }
            }
            assert_eq!(offset, stream.offset());
        }
        assert_eq!(
            stream.offset(),
            end,
            "{version:?}: offset overshot the primary's"
        );
        // The primary's periodic PING to its replicas may come first (it did once, on
        // 6.2, in CI): the first command that is not a PING must be the SELECT.
        assert_eq!(
            names.iter().map(String::as_str).find(|n| *n != "PING"),
            Some("SELECT"),
            "{version:?}: {names:?}"
        );
        for want in ["SET", "HSET", "ZADD", "MULTI", "EXEC"] {
            assert!(
                names.iter().any(|n| n == want),
                "{version:?}: no {want} in {names:?}"
            );
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_big_reply_and_a_big_command_through_the_reader() -> anyhow::Result<()> {
    let server = RedisServer::start(config(RedisVersion::V7_0)).await?;
    let (mut reader, mut writer) = connect(&server).await?;
    // 200,000 members: a reply of several MB that arrives over many reads.
    let members: Vec<String> = (0..200_000).map(|i| format!("member:{i:08}")).collect();
    let mut argv = vec!["RPUSH".to_owned(), "big".to_owned()];
    argv.extend(members.iter().cloned());
    writer.send(&argv).await?;
    assert_eq!(
        timeout(WAIT, reader.read_frame()).await??,
        Some(Frame::Integer(200_000))
    );
    writer
        .push(&["LRANGE", "big", "0", "-1"])
        .push(&["PING"])
        .flush()
        .await?;
    let Some(Frame::Array(items)) = timeout(WAIT, reader.read_frame()).await?? else {
        panic!("LRANGE gave no array")
    };
    assert_eq!(items.len(), 200_000);
    assert_eq!(items[123_456], bulk(&members[123_456]));
    assert_eq!(
        timeout(WAIT, reader.read_frame()).await??,
        Some(Frame::simple("PONG"))
    );
    Ok(())
}

/// Inline commands split the way redis-server splits them: each line pushes its
/// arguments to a list, and the list Redis built must equal our argv.
#[tokio::test]
async fn inline_commands_split_like_redis_server() -> anyhow::Result<()> {
    use lockstep_sync::resp::CommandDecoder;
    let lines: &[&[u8]] = &[
        b"RPUSH l0 a b   c\r\n",
        b"RPUSH l1 \"a b\" 'c d'\n",
        b"RPUSH l2 \"tab\\there\" \"nl\\n\" \"hex\\x41\\x7a\" \"q\\\"q\"\r\n",
        b"RPUSH l3 'it\\'s' 'back\\slash'\r\n",
        b"  RPUSH   l4\tx\r\n",
        b"RPUSH l5 \"\" ''\r\n",
    ];
    for version in RedisVersion::ALL {
        let server = RedisServer::start(config(version)).await?;
        let (mut reader, mut writer) = connect(&server).await?;
        for (i, line) in lines.iter().enumerate() {
            let mut buf = BytesMut::from(*line);
            let Status::Complete(Entry::Command(ours), len) =
                CommandDecoder::new(Limits::default()).decode(&mut buf)?
            else {
                panic!("{line:?} did not decode to a command")
            };
            assert_eq!(len, line.len());
            assert!(ours.inline);
            writer.push_raw(line).flush().await?;
            let pushed = timeout(WAIT, reader.read_frame()).await??;
            assert_eq!(pushed, Some(Frame::Integer(ours.argv.len() as i64 - 2)));
            let key = format!("l{i}");
            writer.send(&["LRANGE", key.as_str(), "0", "-1"]).await?;
            let want: Vec<Frame> = ours.argv[2..]
                .iter()
                .map(|a| Frame::Bulk(a.clone()))
                .collect();
            assert_eq!(
                timeout(WAIT, reader.read_frame()).await??,
                Some(Frame::Array(want)),
                "{version:?}: {line:?}"
            );
        }
    }
    Ok(())
}
