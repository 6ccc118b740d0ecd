//! Decode throughput of a realistic replication stream, against redis-rs's own RESP
//! parser on the same bytes in the same run. Not a timed test: it prints numbers.
//!
//! `CARGO_TARGET_DIR=target/h-resp cargo bench -p lockstep-sync --bench resp_decode`
//! (`RESP_BENCH_COMMANDS` sets the stream length, default 1,000,000.)

use std::hint::black_box;
use std::io::Cursor;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use lockstep_sync::resp::{decode_frame, encode_command, CommandDecoder, Entry, Limits, Status};

/// A deterministic xorshift, so every run decodes the same bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// What a primary propagates: SET ... PXAT, HSET, ZADD, some DEL/INCR, a PING every
/// 10,000 commands and MULTI/EXEC pairs, after the forced SELECT.
fn stream(commands: usize) -> (BytesMut, usize) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut out = BytesMut::new();
    encode_command(&mut out, &["SELECT", "0"]);
    let mut count = 1;
    let value: Vec<u8> = (0..256).map(|i| b'a' + (i % 26) as u8).collect();
    while count < commands {
        let key = format!("key:{:012}", rng.next() % 10_000_000);
        let vlen = 10 + (rng.next() % 90) as usize;
        let v = &value[..vlen];
        match rng.next() % 10 {
            0..=3 => encode_command(&mut out, &[&b"SET"[..], key.as_bytes(), v]),
            4 => encode_command(
                &mut out,
                &[&b"SET"[..], key.as_bytes(), v, b"PXAT", b"1767225600000"],
            ),
            5..=6 => {
                let field = format!("field:{}", rng.next() % 1000);
                encode_command(
                    &mut out,
                    &[&b"HSET"[..], key.as_bytes(), field.as_bytes(), v],
                );
            }
            7..=8 => {
                let score = format!("{}", rng.next() % 100_000);
                let member = format!("member:{}", rng.next() % 100_000);
                encode_command(
                    &mut out,
                    &[
                        &b"ZADD"[..],
                        key.as_bytes(),
                        score.as_bytes(),
                        member.as_bytes(),
                    ],
                );
            }
            _ => encode_command(&mut out, &[&b"DEL"[..], key.as_bytes()]),
        }
        count += 1;
        if count % 10_000 == 0 {
            encode_command(&mut out, &["PING"]);
            count += 1;
        }
    }
    (out, count)
}

const READ_BYTES: usize = 64 * 1024;

/// Our command fast path, fed in 64 KiB reads as a socket would deliver them.
fn lockstep_commands(wire: &[u8]) -> usize {
    let mut dec = CommandDecoder::new(Limits::default());
    let mut buf = BytesMut::with_capacity(2 * READ_BYTES);
    let mut n = 0;
    for chunk in wire.chunks(READ_BYTES) {
        buf.extend_from_slice(chunk);
        while let Ok(Status::Complete(entry, len)) = dec.decode(&mut buf) {
            if let Entry::Command(c) = entry {
                black_box(&c.argv);
            }
            black_box(len);
            n += 1;
        }
    }
    n
}

/// Our general frame decoder on the same reads.
fn lockstep_frames(wire: &[u8]) -> usize {
    let limits = Limits::default();
    let mut buf = BytesMut::with_capacity(2 * READ_BYTES);
    let mut n = 0;
    for chunk in wire.chunks(READ_BYTES) {
        buf.extend_from_slice(chunk);
        while let Ok(Status::Complete(frame, len)) = decode_frame(&mut buf, &limits) {
            black_box((frame, len));
            n += 1;
        }
    }
    n
}

/// redis-rs's parser (`redis::Parser`, the one behind `parse_redis_value`), reading
/// value after value from the same bytes. It cannot tell how many bytes each took.
fn redis_rs(wire: &[u8]) -> usize {
    let mut parser = redis::Parser::new();
    let mut cursor = Cursor::new(wire);
    let mut n = 0;
    // The parser buffers ahead of the cursor: read until it reports the end.
    while let Ok(v) = parser.parse_value(&mut cursor) {
        black_box(v);
        n += 1;
    }
    n
}

/// The `redis-protocol` crate's zero-copy RESP2 decoder (which does report consumed
/// bytes), on the same 64 KiB reads.
fn redis_protocol_crate(wire: &[u8]) -> usize {
    let mut buf = BytesMut::with_capacity(2 * READ_BYTES);
    let mut n = 0;
    for chunk in wire.chunks(READ_BYTES) {
        buf.extend_from_slice(chunk);
        while let Ok(Some((frame, len, _))) =
            redis_protocol::resp2::decode::decode_bytes_mut(&mut buf)
        {
            black_box((frame, len));
            n += 1;
        }
    }
    n
}

type Decoder = (&'static str, fn(&[u8]) -> usize);

/// Best of `ROUNDS` per decoder, the decoders taking turns within each round so that
/// load from other processes falls on all of them alike.
fn measure(wire: &[u8], expect: usize, decoders: &[Decoder]) -> Vec<Duration> {
    const ROUNDS: usize = 5;
    let mut best = vec![Duration::MAX; decoders.len()];
    for _ in 0..ROUNDS {
        for ((name, f), best) in decoders.iter().zip(&mut best) {
            let t = Instant::now();
            let n = f(wire);
            let took = t.elapsed();
            assert_eq!(n, expect, "{name} decoded {n} of {expect}");
            *best = (*best).min(took);
        }
    }
    println!("| decoder | seconds | MB/s | commands/s |");
    println!("|---|---|---|---|");
    for ((name, _), took) in decoders.iter().zip(&best) {
        let secs = took.as_secs_f64();
        println!(
            "| {name} | {secs:.3} | {:.0} | {:.2} M |",
            wire.len() as f64 / secs / 1e6,
            expect as f64 / secs / 1e6
        );
    }
    best
}

fn main() {
    // `cargo bench` passes --bench; ignore arguments.
    let commands = std::env::var("RESP_BENCH_COMMANDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let (wire, count) = stream(commands);
    println!(
        "stream: {count} commands, {} bytes ({:.1} MB); best of 5 rounds, decoders taking turns",
        wire.len(),
        wire.len() as f64 / 1e6
    );
    let best = measure(
        &wire,
        count,
        &[
            ("lockstep CommandDecoder (64 KiB reads)", lockstep_commands),
            ("lockstep decode_frame (64 KiB reads)", lockstep_frames),
            ("redis-rs Parser::parse_value", redis_rs),
            (
                "redis-protocol 6 resp2 decode_bytes_mut (64 KiB reads)",
                redis_protocol_crate,
            ),
        ],
    );
    let [ours, frames, theirs, crate_rp] = [0, 1, 2, 3].map(|i| best[i]);
    println!(
        "CommandDecoder: {:.1}x redis-rs, {:.1}x redis-protocol; decode_frame: {:.1}x redis-rs, {:.1}x redis-protocol",
        theirs.as_secs_f64() / ours.as_secs_f64(),
        crate_rp.as_secs_f64() / ours.as_secs_f64(),
        theirs.as_secs_f64() / frames.as_secs_f64(),
        crate_rp.as_secs_f64() / frames.as_secs_f64()
    );
}
