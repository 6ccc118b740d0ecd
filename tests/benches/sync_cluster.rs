//! Issue 7, a Redis Cluster target: the same `lockstep` binary syncs the same source
//! into a standalone 7.0 server and into a 7.0 cluster of 3 primaries, in the same
//! run, in alternating order, so the ratio cluster / standalone is what routing by
//! slot costs (one transaction per slot written, each with its slot's checkpoint;
//! the units kept until answered so that a redirection can send them again).
//!
//! Per round, for each target:
//! - **full copy**: `lockstep sync --mode full` of `DEBUG POPULATE $BENCH_KEYS key 100`
//!   (500 000 by default), timed from spawn until it exits 0, with its peak RSS; the
//!   target is then checked by `lockstep_verify::compare` (every key, both sides);
//! - **stream**: `lockstep sync --mode incremental` from the copied state, then
//!   `$BENCH_WRITES` (200 000) `INCR`s over 10 000 keys sent by 20 pipelined clients,
//!   timed from the first write until the target holds the marker written after the
//!   last one (the writes alone take the "source" time on the same machine).
//!
//! `cargo bench -p lockstep-tests --bench sync_cluster`; `$BENCH_RUNS` rounds (3);
//! `$BENCH_RECORD=1` appends the table to docs/benchmarks.md.

mod common;

use std::time::{Duration, Instant};

use anyhow::ensure;
use common::{dbsize, runs, spread, Lockstep};
use lockstep_testkit::topology::{Cluster, ClusterSpec};
use lockstep_testkit::{RedisServer, RedisVersion, Run, ServerConfig};

/// One target of a round: the URL lockstep is given and a reader of its keys.
struct Target {
    url: String,
    _standalone: Option<RedisServer>,
    cluster: Option<Cluster>,
}

impl Target {
    async fn standalone() -> anyhow::Result<Target> {
        let server = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
        Ok(Target {
            url: server.url(),
            _standalone: Some(server),
            cluster: None,
        })
    }

    async fn cluster() -> anyhow::Result<Target> {
        let cluster = Cluster::start(ClusterSpec::new(
            ServerConfig::new(RedisVersion::V7_0),
            3,
            0,
        ))
        .await?;
        Ok(Target {
            url: cluster.nodes[0].url(),
            _standalone: None,
            cluster: Some(cluster),
        })
    }

    /// The marker's value on the target, read through a cluster-aware client.
    async fn marker(&self) -> anyhow::Result<Option<i64>> {
        let value: Option<i64> = match &self.cluster {
            Some(cluster) => {
                let mut conn = cluster.cluster_client().await?;
                conn.run_args(("GET", MARKER)).await?
            }
            None => {
                let client = redis::Client::open(self.url.as_str())?;
                let mut conn = client.get_multiplexed_async_connection().await?;
                conn.run_args(("GET", MARKER)).await?
            }
        };
        Ok(value)
    }
}

const MARKER: &str = "bench:marker";

struct Measured {
    copy_s: f64,
    copy_rss_mib: f64,
    stream_s: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let keys: i64 = env_or("BENCH_KEYS", 500_000);
    let writes: i64 = env_or("BENCH_WRITES", 200_000);
    let bin = common::lockstep_binary()?;
    println!(
        "sync_cluster: {keys} strings of 100 bytes, then {writes} INCRs, 7.0 -> standalone 7.0 and -> 3-primary 7.0 cluster, lockstep {}",
        bin.display()
    );
    let (mut alone, mut cluster) = (Vec::new(), Vec::new());
    for round in 0..runs() {
        let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
        let mut src = common::patient(&source).await?;
        src.run_args::<()>(("DEBUG", "POPULATE", keys, "key", 100))
            .await?;
        ensure!(dbsize(&mut src).await? == keys, "the source was not filled");
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for into_cluster in order {
            let target = if into_cluster {
                Target::cluster().await?
            } else {
                Target::standalone().await?
            };
            let measured = measure(&bin, &source, &target, writes).await?;
            let name = if into_cluster {
                "cluster"
            } else {
                "standalone"
            };
            println!(
                "  round {round} {name}: full copy {:.2} s ({:.0} MiB peak RSS), {writes} INCRs applied in {:.2} s",
                measured.copy_s, measured.copy_rss_mib, measured.stream_s
            );
            if into_cluster {
                cluster.push(measured);
            } else {
                alone.push(measured);
            }
        }
    }
    let column = |m: &[Measured], f: fn(&Measured) -> f64| m.iter().map(f).collect::<Vec<_>>();
    let ratio = |f: fn(&Measured) -> f64| {
        let r: Vec<f64> = cluster
            .iter()
            .zip(&alone)
            .map(|(c, a)| f(c) / f(a))
            .collect();
        spread(&r, "x")
    };
    let rows = [
        (
            "full copy into standalone",
            spread(&column(&alone, |m| m.copy_s), "s"),
        ),
        (
            "full copy into cluster",
            spread(&column(&cluster, |m| m.copy_s), "s"),
        ),
        ("full copy, cluster / standalone", ratio(|m| m.copy_s)),
        (
            "peak RSS into cluster",
            spread(&column(&cluster, |m| m.copy_rss_mib), "MiB"),
        ),
        (
            "stream into standalone",
            spread(&column(&alone, |m| m.stream_s), "s"),
        ),
        (
            "stream into cluster",
            spread(&column(&cluster, |m| m.stream_s), "s"),
        ),
        ("stream, cluster / standalone", ratio(|m| m.stream_s)),
    ];
    for (name, value) in &rows {
        println!("{name}: {value}");
    }
    common::record(
        &format!("Cluster target: {keys} keys copied, {writes} INCRs streamed"),
        "none (issue 7 names no bar; the ratio shows what routing by slot costs)",
        &rows,
    )
}

fn env_or(name: &str, default: i64) -> i64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn measure(
    bin: &std::path::Path,
    source: &RedisServer,
    target: &Target,
    writes: i64,
) -> anyhow::Result<Measured> {
    let dir = tempfile::tempdir()?;
    let copy = Lockstep::sync_urls(bin, &source.url(), &target.url, dir.path(), "full")?
        .wait(Duration::from_secs(600))
        .await?;
    ensure!(
        copy.status.success(),
        "lockstep sync --mode full: {}",
        copy.status
    );
    assert_equal(source, target, "after the full copy").await?;

    let stream = Lockstep::sync_urls(bin, &source.url(), &target.url, dir.path(), "incremental")?;
    // Connected and streaming: a first marker arrives.
    let mut src = common::patient(source).await?;
    let ready = Instant::now();
    loop {
        src.run_args::<()>(("SET", MARKER, 0)).await?;
        if target.marker().await? == Some(0) {
            break;
        }
        ensure!(
            ready.elapsed() < Duration::from_secs(60),
            "the stream never started"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let started = Instant::now();
    let clients = 20;
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let mut conn = common::patient(source).await?;
        tasks.spawn(async move {
            let mut i = c;
            while i < writes {
                let mut pipe = redis::pipe();
                for _ in 0..100 {
                    if i >= writes {
                        break;
                    }
                    pipe.cmd("INCR")
                        .arg(format!("counter:{}", i % 10_000))
                        .ignore();
                    i += clients;
                }
                pipe.query_async::<()>(&mut conn).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    src.run_args::<()>(("SET", MARKER, 1)).await?;
    while target.marker().await? != Some(1) {
        ensure!(
            started.elapsed() < Duration::from_secs(300),
            "the stream never caught up"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let stream_s = started.elapsed().as_secs_f64();
    let stopped = stream.interrupt(Duration::from_secs(60)).await?;
    ensure!(
        stopped.status.success(),
        "lockstep sync --mode incremental: {}",
        stopped.status
    );
    assert_equal(source, target, "after the stream").await?;
    Ok(Measured {
        copy_s: copy.wall.as_secs_f64(),
        copy_rss_mib: copy.max_rss_kib as f64 / 1024.0,
        stream_s,
    })
}

/// Verify (every key, both sides) finds the target equal to the source.
async fn assert_equal(source: &RedisServer, target: &Target, when: &str) -> anyhow::Result<()> {
    let report = lockstep_verify::compare(
        &source.redis_client()?,
        &redis::Client::open(target.url.as_str())?,
        &lockstep_verify::CompareOptions::default(),
    )
    .await?;
    ensure!(report.is_consistent(), "{when}: {report}");
    Ok(())
}
