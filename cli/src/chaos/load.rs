//! Load on the sync: a slow target (FaultProxy latency and a bandwidth cap), a burst
//! of big keys while the stream is applied, and lists copied into a target that
//! already holds lists under the same names (DTS documents duplicates there).
//!
//! Like every scenario, it must never judge by the sync's state: verify and plain
//! reads of the target are the oracle.

use std::time::Duration;

use anyhow::bail;
use lockstep_testkit::churn::{Churn, ChurnSpec};
use lockstep_testkit::{FaultProxy, RedisServer};

use super::harness::{self, Engine};
use super::restart::counted_writer;
use super::{Outcome, Pair, Scenario};
use lockstep_testkit::Run;

const LOAD_DOCUMENTED: &str = "DTS uses resources from both source and destination during full synchronization, increasing server load.";
const LIST_DOCUMENTED: &str = "When SYNC or PSYNC transfers LIST data, DTS does not clear existing data in the destination, which can cause duplicate records.";

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "slow-target",
            documented: LOAD_DOCUMENTED,
            documented_short: "full sync: server load",
            promise: "a target behind 20 ms latency and 1 MiB/s only slows the sync: it catches up and ends equal",
            run: |pair, seed| Box::pin(slow_target(pair, seed)),
        },
        Scenario {
            name: "big-key-burst",
            documented: LOAD_DOCUMENTED,
            documented_short: "full sync: server load",
            promise: "big collections written in a burst, in both phases, end equal element for element",
            run: |pair, seed| Box::pin(big_key_burst(pair, seed)),
        },
        Scenario {
            name: "list-into-non-empty-target",
            documented: LIST_DOCUMENTED,
            documented_short: "lists: duplicates",
            promise: "each copied key replaces the target's (small and batched big lists alike): no duplicate element",
            run: |pair, seed| Box::pin(list_into_non_empty(pair, seed)),
        },
    ]
}

async fn slow_target(pair: Pair, seed: u64) -> anyhow::Result<Outcome> {
    let (source, target) = harness::start_pair(pair, |c| c, |c| c).await?;
    harness::fill(&source, 0, "key:", 2000).await?;
    let proxy = FaultProxy::start(target.addr()).await?;
    let handle = proxy.handle();
    handle.set_latency(Duration::from_millis(20));
    handle.set_bandwidth(Some(1 << 20));
    let dir = tempfile::tempdir()?;
    let mut engine = Engine::spawn(harness::options(
        &source.url(),
        &proxy.url_for(&target),
        dir.path(),
    )?);
    // The churn speaks the source's commands; an older target lacks some of them
    // (FUNCTION into 6.2), so a downgrade gets the counted INCR + RPUSH writer instead.
    let writes = if pair.source <= pair.target {
        let spec = ChurnSpec::new(seed)
            .rate(300.0)
            .duration(Some(Duration::from_secs(3)));
        Churn::run(&source.redis_client()?, &spec).await?.ops as i64
    } else {
        let (stop, writer) = counted_writer(&source)?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let _ = stop.send(true);
        writer.await??
    };
    engine.caught_up(&source).await?;
    let report = harness::consistent(&source, &target, 2000).await?;
    engine.finish().await?;
    Ok(Outcome::new(format!(
        "{writes} writes through 20 ms + 1 MiB/s: caught up, {} keys equal",
        report.keys_compared
    )))
}

/// A list, hash, set and zset of `elements` elements each, named `<prefix>:<type>`.
async fn write_big_keys(source: &RedisServer, prefix: &str, elements: u64) -> anyhow::Result<()> {
    let mut conn = source.client().await?;
    for start in (0..elements).step_by(1000) {
        let mut pipe = redis::pipe();
        for i in start..(start + 1000).min(elements) {
            pipe.cmd("RPUSH")
                .arg(format!("{prefix}:list"))
                .arg(format!("element-{i}"))
                .ignore();
            pipe.cmd("HSET")
                .arg(format!("{prefix}:hash"))
                .arg(format!("f{i}"))
                .arg(format!("value-{i}"))
                .ignore();
            pipe.cmd("SADD")
                .arg(format!("{prefix}:set"))
                .arg(format!("m{i}"))
                .ignore();
            pipe.cmd("ZADD")
                .arg(format!("{prefix}:zset"))
                .arg(i as f64 / 7.0)
                .arg(format!("z{i}"))
                .ignore();
        }
        pipe.query_async::<()>(&mut conn).await?;
    }
    let big = vec![b's'; 2 << 20];
    conn.run_args::<()>(("SET", format!("{prefix}:string"), &big))
        .await?;
    Ok(())
}

async fn big_key_burst(pair: Pair, seed: u64) -> anyhow::Result<Outcome> {
    let elements = 20_000 + seed % 5000;
    let (source, target) = harness::start_pair(pair, |c| c, |c| c).await?;
    write_big_keys(&source, "copied", elements).await?;
    let dir = tempfile::tempdir()?;
    let mut options = harness::options(&source.url(), &target.url(), dir.path())?;
    // Collections over 64 KiB go in batches during the copy.
    options.load.big_key_bytes = 64 << 10;
    let mut engine = Engine::spawn(options);
    engine.caught_up(&source).await?;
    write_big_keys(&source, "streamed", elements).await?;
    engine.caught_up(&source).await?;
    let report = harness::consistent(&source, &target, 10).await?;
    engine.finish().await?;
    Ok(Outcome::new(format!(
        "8 collections of {elements} elements + 2 strings of 2 MiB (copy and stream): {} keys equal, {} by digest",
        report.keys_compared, report.digests_compared
    )))
}

async fn list_into_non_empty(pair: Pair, seed: u64) -> anyhow::Result<Outcome> {
    let big = 5000 + seed % 1000;
    let (source, target) = harness::start_pair(pair, |c| c, |c| c).await?;
    let mut s = source.client().await?;
    let mut t = target.client().await?;
    let mut pipe = redis::pipe();
    for i in 0..100 {
        pipe.cmd("RPUSH")
            .arg(format!("list:{i}"))
            .arg("a")
            .arg("b")
            .arg("c")
            .ignore();
    }
    for i in 0..big {
        pipe.cmd("RPUSH")
            .arg("list:big")
            .arg(format!("element-{i}"))
            .ignore();
    }
    pipe.query_async::<()>(&mut s).await?;
    // The target already holds the same lists (an earlier, partial copy).
    pipe.query_async::<()>(&mut t).await?;
    let dir = tempfile::tempdir()?;
    let mut options = harness::options(&source.url(), &target.url(), dir.path())?;
    options.load.big_key_bytes = 16 << 10;
    let mut engine = Engine::spawn(options);
    engine.caught_up(&source).await?;
    let small: i64 = t.run("LLEN list:7").await?;
    let long: u64 = t.run("LLEN list:big").await?;
    if small != 3 || long != big {
        bail!("duplicates: list:7 has {small} elements (3 expected), list:big {long} ({big} expected)");
    }
    let report = harness::consistent(&source, &target, 101).await?;
    engine.finish().await?;
    Ok(Outcome::new(format!(
        "101 lists already on the target: replaced, no duplicate ({big}-element list batched); {} keys equal",
        report.keys_compared
    )))
}
