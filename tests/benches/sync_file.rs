//! Issue 18, RDB file load: `lockstep sync --source file:///dump.rdb` against
//! `lockstep sync --mode full` from the server that saved the file (a PSYNC full
//! copy), on the same data, in the same run, 7.0 to 7.0 on loopback. Target: the file
//! load at least as fast as the PSYNC full copy, at the same peak RSS.
//!
//! The data: `DEBUG POPULATE $BENCH_KEYS key 100` (1 000 000 by default) plus
//! `$BENCH_BIG` (4) big keys: hashes of 200 000 fields and a 20 MB string, each
//! written by lockstep in pieces. The source SAVEs it once; the file is copied out
//! and gzip-compressed too (`flate2`, default level).
//!
//! Per round, in alternating order, each into a fresh 7.0 target, the release binary
//! timed from spawn until it exits 0, with its peak RSS (`/usr/bin/time`): (a) the
//! PSYNC full copy (`--mode full`), (b) the plain file, (c) the gzip file. Each target
//! is checked afterwards (DBSIZE equal to the source's, sampled values). Printed: the
//! wall times, peak RSS and the ratios file / PSYNC; `$BENCH_RECORD=1` appends the
//! table to docs/benchmarks.md (see `common::record`).
//!
//! `cargo bench -p lockstep-tests --bench sync_file`; `$BENCH_RUNS` rounds (3).

mod common;

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::ensure;
use common::{dbsize, runs, spread, Finished, Lockstep};
use lockstep_testkit::{RedisServer, RedisVersion, Run, ServerConfig};

const BIG_HASH_FIELDS: usize = 200_000;
const BIG_STRING_BYTES: usize = 20 << 20;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// How a round's copy reads the data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Way {
    Psync,
    File,
    Gzip,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let keys = env_usize("BENCH_KEYS", 1_000_000);
    let big = env_usize("BENCH_BIG", 4);
    let bin = common::lockstep_binary()?;
    println!(
        "sync_file: {keys} strings of 100 bytes + {big} big keys, 7.0 -> 7.0, lockstep {}",
        bin.display()
    );
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let mut src = common::patient(&source).await?;
    src.run_args::<()>(("DEBUG", "POPULATE", keys, "key", 100))
        .await?;
    fill_big(&mut src, big).await?;
    let total = dbsize(&mut src).await?;
    let _: () = src.run("SAVE").await?;
    let dir = tempfile::tempdir()?;
    let plain = dir.path().join("dump.rdb");
    std::fs::copy(source.rdb_path(), &plain)?;
    let gz = dir.path().join("dump.rdb.gz");
    gzip(&plain, &gz)?;
    println!(
        "the file: {:.1} MB, gzip {:.1} MB",
        std::fs::metadata(&plain)?.len() as f64 / 1e6,
        std::fs::metadata(&gz)?.len() as f64 / 1e6
    );
    let ways = [Way::Psync, Way::File, Way::Gzip];
    let mut results: Vec<[Finished; 3]> = vec![];
    for round in 0..runs() {
        let mut order = ways;
        order.rotate_left(round % ways.len());
        let mut done: Vec<(Way, Finished)> = vec![];
        for way in order {
            let copy = match way {
                Way::Psync => None,
                Way::File => Some(plain.as_path()),
                Way::Gzip => Some(gz.as_path()),
            };
            done.push((way, copy_once(&bin, &source, copy, total).await?));
        }
        done.sort_by_key(|(way, _)| ways.iter().position(|w| w == way));
        let [(_, p), (_, f), (_, g)] = <[(Way, Finished); 3]>::try_from(done)
            .map_err(|_| anyhow::anyhow!("three copies per round"))?;
        println!(
            "round {round}: PSYNC {:.3} s ({:.1} MiB), file {:.3} s ({:.1} MiB), gzip {:.3} s ({:.1} MiB)",
            p.wall.as_secs_f64(),
            mib(&p),
            f.wall.as_secs_f64(),
            mib(&f),
            g.wall.as_secs_f64(),
            mib(&g)
        );
        results.push([p, f, g]);
    }
    let col =
        |i: usize, f: fn(&Finished) -> f64| results.iter().map(|r| f(&r[i])).collect::<Vec<_>>();
    let ratio = |i: usize, f: fn(&Finished) -> f64| {
        results
            .iter()
            .map(|r| f(&r[i]) / f(&r[0]))
            .collect::<Vec<_>>()
    };
    let wall = |f: &Finished| f.wall.as_secs_f64();
    let rows = vec![
        ("PSYNC full copy wall", spread(&col(0, wall), " s")),
        ("file load wall", spread(&col(1, wall), " s")),
        ("gzip file load wall", spread(&col(2, wall), " s")),
        ("ratio file / PSYNC wall", spread(&ratio(1, wall), "x")),
        ("ratio gzip / PSYNC wall", spread(&ratio(2, wall), "x")),
        ("PSYNC peak RSS", spread(&col(0, mib), " MiB")),
        ("file peak RSS", spread(&col(1, mib), " MiB")),
        ("gzip file peak RSS", spread(&col(2, mib), " MiB")),
        ("ratio file / PSYNC RSS", spread(&ratio(1, mib), "x")),
    ];
    for (name, value) in &rows {
        println!("{name:<24} {value}");
    }
    common::record(
        &format!("RDB file load: {keys} strings of 100 bytes and {big} big keys"),
        "file wall ratio <= 1.0, peak RSS ratio about 1.0",
        &rows,
    )?;
    Ok(())
}

fn mib(f: &Finished) -> f64 {
    f.max_rss_kib as f64 / 1024.0
}

/// One copy into a fresh target: from the source by PSYNC (`file` None) or from the
/// file; checked afterwards.
async fn copy_once(
    bin: &Path,
    source: &RedisServer,
    file: Option<&Path>,
    total: i64,
) -> anyhow::Result<Finished> {
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let dir = tempfile::tempdir()?;
    let run = match file {
        None => Lockstep::sync(bin, source, &target, dir.path(), "full")?,
        Some(path) => {
            let url = format!("file://{}", path.display());
            Lockstep::sync_urls(bin, &url, &target.url(), dir.path(), "full")?
        }
    };
    let done = run.wait(Duration::from_secs(1800)).await?;
    ensure!(
        done.status.success(),
        "lockstep sync ({file:?}): {}",
        done.status
    );
    let mut src = common::patient(source).await?;
    let mut dst = common::patient(&target).await?;
    let copied = dbsize(&mut dst).await?;
    ensure!(
        copied == total,
        "DBSIZE: source {total}, target {copied} ({file:?})"
    );
    same_sample(&mut src, &mut dst, total).await?;
    Ok(done)
}

/// Every thousandth `key:N` string, the big hashes' lengths and the big string's
/// length equal on both sides.
async fn same_sample(
    src: &mut redis::aio::MultiplexedConnection,
    dst: &mut redis::aio::MultiplexedConnection,
    total: i64,
) -> anyhow::Result<()> {
    for i in (0..total).step_by(1000) {
        let key = format!("key:{i}");
        let a: Option<Vec<u8>> = src.run_args(("GET", &key)).await?;
        let b: Option<Vec<u8>> = dst.run_args(("GET", &key)).await?;
        ensure!(a == b, "{key} differs");
    }
    let bigs: Vec<String> = src.run_args(("KEYS", "big:*")).await?;
    for key in bigs {
        let kind: String = src.run_args(("TYPE", &key)).await?;
        let len = if kind == "hash" { "HLEN" } else { "STRLEN" };
        let a: i64 = src.run_args((len, &key)).await?;
        let b: i64 = dst.run_args((len, &key)).await?;
        ensure!(a == b, "{key}: {len} source {a}, target {b}");
    }
    Ok(())
}

/// `big` big keys: hashes of [`BIG_HASH_FIELDS`] fields, and one string of
/// [`BIG_STRING_BYTES`] (the last).
async fn fill_big(conn: &mut redis::aio::MultiplexedConnection, big: usize) -> anyhow::Result<()> {
    for b in 0..big.saturating_sub(1) {
        for start in (0..BIG_HASH_FIELDS).step_by(1000) {
            let mut cmd = redis::cmd("HSET");
            cmd.arg(format!("big:hash:{b}"));
            for f in start..(start + 1000).min(BIG_HASH_FIELDS) {
                cmd.arg(f).arg(format!("value-{f}-{b}"));
            }
            cmd.query_async::<()>(conn).await?;
        }
    }
    if big > 0 {
        let value: Vec<u8> = (0..BIG_STRING_BYTES)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        redis::cmd("SET")
            .arg("big:string")
            .arg(value)
            .query_async::<()>(conn)
            .await?;
    }
    Ok(())
}

fn gzip(file: &Path, into: &Path) -> anyhow::Result<()> {
    let mut encoder =
        flate2::write::GzEncoder::new(std::fs::File::create(into)?, flate2::Compression::default());
    encoder.write_all(&std::fs::read(file)?)?;
    encoder.finish()?;
    Ok(())
}
