//! Issue 4, memory: peak RSS of `lockstep sync --mode full` over a data set of
//! `$BENCH_TOTAL_MB` (2000) MB that includes one list of `$BENCH_BIG_MB` (500) MB,
//! 7.0 to 7.0 on loopback. Target: under 100 MB.
//!
//! The big key is a list of 10 000-byte pseudo-random (incompressible) elements, made
//! with pipelined RPUSH; the rest is `DEBUG POPULATE` of 1000-byte strings (which LZF
//! compresses well in the RDB: the transfer is mostly the big list). The target is
//! checked afterwards: DBSIZE, the list's length and some of its elements.
//!
//! `cargo bench -p lockstep-tests --bench sync_memory`; `$BENCH_RUNS` rounds (3).

mod common;

use std::time::Duration;

use anyhow::ensure;
use common::{dbsize, info, runs, spread, Lockstep};
use lockstep_testkit::{RedisServer, RedisVersion, Run, ServerConfig};

const ELEMENT_BYTES: usize = 10_000;
const BIG_KEY: &str = "bench:biglist";

fn env_mb(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let total_mb = env_mb("BENCH_TOTAL_MB", 2000);
    let big_mb = env_mb("BENCH_BIG_MB", 500);
    let bin = common::lockstep_binary()?;
    println!(
        "sync_memory: {total_mb} MB with one {big_mb} MB list, 7.0 -> 7.0, lockstep {}",
        bin.display()
    );
    let (mut rss, mut walls) = (vec![], vec![]);
    for round in 0..runs() {
        let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
        let mut src = common::patient(&source).await?;
        let elements = big_mb * 1_000_000 / ELEMENT_BYTES;
        fill_big_list(&mut src, elements).await?;
        let rest_keys = (total_mb.saturating_sub(big_mb)) * 1000;
        src.run_args::<()>(("DEBUG", "POPULATE", rest_keys, "key", 1000))
            .await?;
        let used = info(&mut src, "memory").await?.int("used_memory")?;

        let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
        let dir = tempfile::tempdir()?;
        let run = Lockstep::sync(&bin, &source, &target, dir.path(), "full")?;
        let done = run.wait(Duration::from_secs(900)).await?;
        ensure!(
            done.status.success(),
            "lockstep sync --mode full: {}",
            done.status
        );

        let mut dst = common::patient(&target).await?;
        let (a, b) = (dbsize(&mut src).await?, dbsize(&mut dst).await?);
        ensure!(a == b, "DBSIZE: source {a}, target {b}");
        let len: usize = dst.run_args(("LLEN", BIG_KEY)).await?;
        ensure!(
            len == elements,
            "LLEN {BIG_KEY}: target {len}, source {elements}"
        );
        for index in [0, elements / 2, elements - 1] {
            let x: Vec<u8> = src.run_args(("LINDEX", BIG_KEY, index)).await?;
            let y: Vec<u8> = dst.run_args(("LINDEX", BIG_KEY, index)).await?;
            ensure!(x == y, "LINDEX {BIG_KEY} {index} differs");
        }
        let mib = done.max_rss_kib as f64 / 1024.0;
        println!(
            "round {round}: source used_memory {:.0} MiB, {a} keys; lockstep {:.3} s, peak RSS {mib:.1} MiB",
            used as f64 / (1 << 20) as f64,
            done.wall.as_secs_f64()
        );
        rss.push(mib);
        walls.push(done.wall.as_secs_f64());
    }
    let rows = vec![
        ("lockstep peak RSS", spread(&rss, " MiB")),
        ("lockstep wall", spread(&walls, " s")),
    ];
    for (name, value) in &rows {
        println!("{name:<18} {value}");
    }
    common::record(
        "Full sync memory: a data set with one big list",
        "peak RSS < 100 MB",
        &rows,
    )?;
    Ok(())
}

/// RPUSH `elements` pseudo-random elements into [`BIG_KEY`], 100 per command, 16
/// commands per pipeline.
async fn fill_big_list(
    conn: &mut redis::aio::MultiplexedConnection,
    elements: usize,
) -> anyhow::Result<()> {
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let mut next = move || {
        // xorshift64*: incompressible enough for LZF, and the same every run.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let mut written = 0;
    while written < elements {
        let mut pipe = redis::pipe();
        for _ in 0..16 {
            let n = (elements - written).min(100);
            if n == 0 {
                break;
            }
            let mut cmd = redis::cmd("RPUSH");
            cmd.arg(BIG_KEY);
            for _ in 0..n {
                let element: Vec<u8> = (0..ELEMENT_BYTES / 8)
                    .flat_map(|_| next().to_le_bytes())
                    .collect();
                cmd.arg(element);
            }
            pipe.add_command(cmd).ignore();
            written += n;
        }
        pipe.query_async::<()>(conn).await?;
    }
    Ok(())
}
