//! Issues 4 and 9, full sync: `lockstep sync --mode full` against a native Redis
//! replica on the same data, in the same run, 7.0 to 7.0 on loopback.
//!
//! `$BENCH_DATASET` chooses the data (issue 9's three sets):
//! - `strings` (default): `DEBUG POPULATE $BENCH_KEYS key 100` (2 000 000 by default);
//! - `mixed`: 500 000 keys (`$BENCH_KEYS`) of every type, written by a server-side
//!   script: strings, hashes, lists, sets, zsets and streams of a few small elements,
//!   one key in ten with a TTL of a day;
//! - `big`: 20 keys of 50 MB each (`$BENCH_BIG_MB`): ten strings and ten lists of
//!   10 KB elements.
//!
//! Per round: a fresh 7.0 source filled with the set; then, in alternating order, (a) a fresh 7.0 server told
//! `REPLICAOF` the source, timed until `master_link_status:up` and its DBSIZE equals
//! the source's, and (b) the release `lockstep` binary, timed from spawn until it exits
//! 0, with its peak RSS, and the target checked afterwards (DBSIZE, sampled values).
//! Both transfers are diskless (7.0's default) with `repl-diskless-sync-delay 0`.
//!
//! The target is checked after lockstep by DBSIZE and sampled values (`strings`) or by
//! a full `lockstep_verify::compare` (`mixed`, `big`). Printed per set: wall time,
//! keys/s and MB/s (the source's `used_memory_dataset` over the wall time), CPU
//! seconds, lockstep's peak RSS, and the ratio lockstep / native; `$BENCH_RECORD=1`
//! appends that table to docs/benchmarks.md (see `common::record`).
//!
//! `$BENCH_SCAN=1` adds, per round, the same copy by the scan source (issue 18:
//! `--source-mode scan`, SCAN + DUMP/PTTL instead of PSYNC) and its ratio to the
//! PSYNC copy of the same round.
//!
//! `cargo bench -p lockstep-tests --bench sync_full`; `$BENCH_RUNS` rounds (3).

mod common;

use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use common::{cpu_seconds, dbsize, info, runs, sample_strings_equal, spread, Lockstep};

use lockstep_testkit::{RedisServer, RedisVersion, Run, ServerConfig};

/// Which data the source holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dataset {
    Strings,
    Mixed,
    Big,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dataset = match std::env::var("BENCH_DATASET").as_deref() {
        Ok("mixed") => Dataset::Mixed,
        Ok("big") => Dataset::Big,
        Ok("strings") | Err(_) => Dataset::Strings,
        Ok(other) => bail!("BENCH_DATASET={other}: expected strings, mixed or big"),
    };
    let keys: i64 = std::env::var("BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(match dataset {
            Dataset::Strings => 2_000_000,
            Dataset::Mixed => 500_000,
            Dataset::Big => 20,
        });
    let bin = common::lockstep_binary()?;
    let what = match dataset {
        Dataset::Strings => format!("{keys} strings of 100 bytes"),
        Dataset::Mixed => format!("{keys} mixed keys of every type"),
        Dataset::Big => format!("{keys} keys of {} MB", big_mb()),
    };
    println!("sync_full: {what}, 7.0 -> 7.0, lockstep {}", bin.display());
    let mut rounds: Vec<Round> = vec![];
    for round in 0..runs() {
        let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
        let mut src = common::patient(&source).await?;
        fill(&mut src, dataset, keys).await?;
        ensure!(
            dbsize(&mut src).await? == keys,
            "the source holds {} keys, not {keys}",
            dbsize(&mut src).await?
        );
        let data_mb = info(&mut src, "memory").await?.int("used_memory_dataset")? as f64 / 1e6;
        // Alternate which goes first, so neither always gets the warmer machine.
        let (n, l) = if round % 2 == 0 {
            let n = native_replica(&source, keys).await?;
            (n, lockstep_full(&bin, &source, keys, dataset).await?)
        } else {
            let l = lockstep_full(&bin, &source, keys, dataset).await?;
            (native_replica(&source, keys).await?, l)
        };
        let scanned = match scan_too() {
            true => Some(lockstep_scan(&bin, &source, keys, dataset).await?),
            false => None,
        };
        let r = Round {
            scan_s: scanned.as_ref().map(|s| s.wall.as_secs_f64()),
            scan_rss_mib: scanned.as_ref().map(|s| s.max_rss_kib as f64 / 1024.0),
            native_s: n.as_secs_f64(),
            lockstep_s: l.wall.as_secs_f64(),
            rss_mib: l.max_rss_kib as f64 / 1024.0,
            lockstep_cpu_s: l.cpu_s,
            keys_per_s: keys as f64 / l.wall.as_secs_f64(),
            mb_per_s: data_mb / l.wall.as_secs_f64(),
        };
        println!(
            "round {round}: native replica {:.3} s, lockstep {:.3} s (ratio {:.2}x), {:.0} keys/s, {:.1} MB/s, lockstep CPU {:.2} s, peak RSS {:.1} MiB",
            r.native_s,
            r.lockstep_s,
            r.lockstep_s / r.native_s,
            r.keys_per_s,
            r.mb_per_s,
            r.lockstep_cpu_s,
            r.rss_mib
        );
        rounds.push(r);
    }
    let col = |f: fn(&Round) -> f64| rounds.iter().map(f).collect::<Vec<_>>();
    let rows = vec![
        ("native replica wall", spread(&col(|r| r.native_s), " s")),
        ("lockstep wall", spread(&col(|r| r.lockstep_s), " s")),
        (
            "ratio lockstep / native",
            spread(&col(|r| r.lockstep_s / r.native_s), "x"),
        ),
        ("lockstep keys/s", spread(&col(|r| r.keys_per_s), "")),
        ("lockstep MB/s", spread(&col(|r| r.mb_per_s), "")),
        ("lockstep CPU", spread(&col(|r| r.lockstep_cpu_s), " s")),
        ("lockstep peak RSS", spread(&col(|r| r.rss_mib), " MiB")),
    ];
    let mut rows = rows;
    if scan_too() {
        let scans: Vec<f64> = rounds.iter().filter_map(|r| r.scan_s).collect();
        let ratios: Vec<f64> = rounds
            .iter()
            .filter_map(|r| Some(r.scan_s? / r.lockstep_s))
            .collect();
        let rss: Vec<f64> = rounds.iter().filter_map(|r| r.scan_rss_mib).collect();
        rows.push(("lockstep scan wall", spread(&scans, " s")));
        rows.push(("ratio scan / PSYNC copy", spread(&ratios, "x")));
        rows.push(("lockstep scan peak RSS", spread(&rss, " MiB")));
    }
    for (name, value) in &rows {
        println!("{name:<24} {value}");
    }
    let target = match dataset {
        Dataset::Strings => "ratio <= 1.0, peak RSS < 100 MB",
        Dataset::Mixed => "ratio <= 1.2, peak RSS < 100 MB",
        Dataset::Big => "peak RSS < 100 MB",
    };
    common::record(&format!("Full sync: {what}"), target, &rows)?;
    Ok(())
}

/// One round's numbers.
struct Round {
    /// The scan source's copy (`$BENCH_SCAN=1`).
    scan_s: Option<f64>,
    scan_rss_mib: Option<f64>,
    native_s: f64,
    lockstep_s: f64,
    rss_mib: f64,
    lockstep_cpu_s: f64,
    keys_per_s: f64,
    mb_per_s: f64,
}

fn big_mb() -> usize {
    std::env::var("BENCH_BIG_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50)
}

/// Writes the data set into the source, on the server (a script per 10 000 keys) so
/// that filling is not the slow part of the bench.
async fn fill(
    src: &mut redis::aio::MultiplexedConnection,
    dataset: Dataset,
    keys: i64,
) -> anyhow::Result<()> {
    match dataset {
        Dataset::Strings => {
            src.run_args::<()>(("DEBUG", "POPULATE", keys, "key", 100))
                .await?
        }
        Dataset::Mixed => common::fill_mixed(src, keys).await?,
        Dataset::Big => {
            let element = vec![b'e'; 10_000];
            let per_key = big_mb() * 1_000_000 / element.len();
            for i in 0..keys {
                if i % 2 == 0 {
                    // A string grown by APPEND in 1 MB steps.
                    let chunk = vec![b's'; 1_000_000];
                    for _ in 0..big_mb() {
                        src.run_args::<()>(("APPEND", format!("big:{i}"), &chunk))
                            .await?;
                    }
                } else {
                    for _ in 0..per_key / 100 {
                        let mut cmd = redis::cmd("RPUSH");
                        cmd.arg(format!("big:{i}"));
                        for _ in 0..100 {
                            cmd.arg(&element);
                        }
                        cmd.query_async::<()>(src).await?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// A fresh 7.0 server replicating `source`: time from REPLICAOF until the link is up
/// and every key is there.
async fn native_replica(source: &RedisServer, keys: i64) -> anyhow::Result<Duration> {
    let replica = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let mut conn = common::patient(&replica).await?;
    let cpu_before = (cpu_seconds(source.pid()), cpu_seconds(replica.pid()));
    let started = Instant::now();
    conn.run_args::<()>(("REPLICAOF", source.addr().ip().to_string(), source.port()))
        .await?;
    loop {
        let up = info(&mut conn, "replication")
            .await?
            .get("master_link_status")
            == Some("up");
        // DBSIZE answers -LOADING while the replica loads: not there yet.
        if up && dbsize(&mut conn).await.ok() == Some(keys) {
            break;
        }
        if started.elapsed() > Duration::from_secs(300) {
            bail!("the native replica did not sync within 300 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = started.elapsed();
    println!(
        "  native:   {:.3} s wall; CPU s: replica {:.2}, source {:.2}",
        took.as_secs_f64(),
        cpu_seconds(replica.pid()) - cpu_before.1,
        cpu_seconds(source.pid()) - cpu_before.0
    );
    conn.run::<()>("REPLICAOF NO ONE").await?;
    Ok(took)
}

fn scan_too() -> bool {
    std::env::var("BENCH_SCAN").is_ok_and(|v| v == "1")
}

/// [`lockstep_full`] with the source read by the scan source.
async fn lockstep_scan(
    bin: &std::path::Path,
    source: &RedisServer,
    keys: i64,
    dataset: Dataset,
) -> anyhow::Result<common::Finished> {
    std::env::set_var("BENCH_SOURCE_MODE", "scan");
    let done = lockstep_full(bin, source, keys, dataset).await;
    std::env::remove_var("BENCH_SOURCE_MODE");
    let done = done?;
    println!("  (that lockstep run read the source by SCAN + DUMP/PTTL)");
    Ok(done)
}

/// `lockstep sync --mode full` into a fresh 7.0 target, after which the target is
/// checked independently of lockstep.
async fn lockstep_full(
    bin: &std::path::Path,
    source: &RedisServer,
    keys: i64,
    dataset: Dataset,
) -> anyhow::Result<common::Finished> {
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let dir = tempfile::tempdir()?;
    let cpu_before = (cpu_seconds(source.pid()), cpu_seconds(target.pid()));
    let run = Lockstep::sync(bin, source, &target, dir.path(), "full")?;
    let done = run.wait(Duration::from_secs(600)).await?;
    ensure!(
        done.status.success(),
        "lockstep sync --mode full: {}",
        done.status
    );
    println!(
        "  lockstep: {:.3} s wall; CPU s: lockstep {:.2}, target {:.2}, source {:.2}",
        done.wall.as_secs_f64(),
        done.cpu_s,
        cpu_seconds(target.pid()) - cpu_before.1,
        cpu_seconds(source.pid()) - cpu_before.0
    );
    let mut dst = common::patient(&target).await?;
    let mut src = common::patient(source).await?;
    let copied = dbsize(&mut dst).await?;
    ensure!(copied == keys, "target has {copied} keys, source {keys}");
    match dataset {
        Dataset::Strings => sample_strings_equal(&mut src, &mut dst, 1000).await?,
        Dataset::Mixed | Dataset::Big => {
            let options = lockstep_verify::CompareOptions {
                dbs: vec![0],
                ..lockstep_verify::CompareOptions::default()
            };
            let report = lockstep_verify::compare(
                &source.redis_client()?,
                &target.redis_client()?,
                &options,
            )
            .await?;
            ensure!(
                report.is_consistent(),
                "verify found differences after the copy: {report}"
            );
        }
    }
    Ok(done)
}
