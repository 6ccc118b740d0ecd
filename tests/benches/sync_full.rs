//! Issue 4, full sync: `lockstep sync --mode full` against a native Redis replica on
//! the same data, in the same run, 7.0 to 7.0 on loopback.
//!
//! Per round: a fresh 7.0 source filled by `DEBUG POPULATE $BENCH_KEYS key 100`
//! (2 000 000 by default); then, in alternating order, (a) a fresh 7.0 server told
//! `REPLICAOF` the source, timed until `master_link_status:up` and its DBSIZE equals
//! the source's, and (b) the release `lockstep` binary, timed from spawn until it exits
//! 0, with its peak RSS, and the target checked afterwards (DBSIZE, sampled values).
//! Both transfers are diskless (7.0's default) with `repl-diskless-sync-delay 0`.
//!
//! `cargo bench -p lockstep-tests --bench sync_full`; `$BENCH_RUNS` rounds (3).

mod common;

use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use common::{cpu_seconds, dbsize, info, runs, sample_strings_equal, spread, Lockstep};
use lockstep_testkit::{RedisServer, RedisVersion, ServerConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let keys: i64 = std::env::var("BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    let bin = common::lockstep_binary()?;
    println!(
        "sync_full: {keys} keys of 100 bytes, 7.0 -> 7.0, lockstep {}",
        bin.display()
    );
    let (mut native, mut ours, mut rss, mut ratios) = (vec![], vec![], vec![], vec![]);
    for round in 0..runs() {
        let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
        let mut src = common::patient(&source).await?;
        redis::cmd("DEBUG")
            .arg("POPULATE")
            .arg(keys)
            .arg("key")
            .arg(100)
            .query_async::<()>(&mut src)
            .await?;
        ensure!(
            dbsize(&mut src).await? == keys,
            "DEBUG POPULATE made too few keys"
        );
        // Alternate which goes first, so neither always gets the warmer machine.
        let (n, (l, kib)) = if round % 2 == 0 {
            let n = native_replica(&source, keys).await?;
            (n, lockstep_full(&bin, &source, keys).await?)
        } else {
            let l = lockstep_full(&bin, &source, keys).await?;
            (native_replica(&source, keys).await?, l)
        };
        let ratio = l.as_secs_f64() / n.as_secs_f64();
        println!(
            "round {round}: native replica {:.3} s, lockstep {:.3} s (ratio {ratio:.2}x), lockstep peak RSS {:.1} MiB",
            n.as_secs_f64(),
            l.as_secs_f64(),
            kib as f64 / 1024.0
        );
        native.push(n.as_secs_f64());
        ours.push(l.as_secs_f64());
        rss.push(kib as f64 / 1024.0);
        ratios.push(ratio);
    }
    println!("native replica: {}", spread(&native, " s"));
    println!("lockstep:       {}", spread(&ours, " s"));
    println!("ratio:          {}", spread(&ratios, "x"));
    println!("peak RSS:       {}", spread(&rss, " MiB"));
    Ok(())
}

/// A fresh 7.0 server replicating `source`: time from REPLICAOF until the link is up
/// and every key is there.
async fn native_replica(source: &RedisServer, keys: i64) -> anyhow::Result<Duration> {
    let replica = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let mut conn = common::patient(&replica).await?;
    let cpu_before = (cpu_seconds(source.pid()), cpu_seconds(replica.pid()));
    let started = Instant::now();
    redis::cmd("REPLICAOF")
        .arg(source.addr().ip().to_string())
        .arg(source.port())
        .query_async::<()>(&mut conn)
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
    redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query_async::<()>(&mut conn)
        .await?;
    Ok(took)
}

/// `lockstep sync --mode full` into a fresh 7.0 target: wall time and peak RSS (KiB),
/// after checking the target independently.
async fn lockstep_full(
    bin: &std::path::Path,
    source: &RedisServer,
    keys: i64,
) -> anyhow::Result<(Duration, u64)> {
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
    sample_strings_equal(&mut src, &mut dst, 1000).await?;
    Ok((done.wall, done.max_rss_kib))
}
