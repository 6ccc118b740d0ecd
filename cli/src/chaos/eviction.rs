//! A target that runs out of memory. Under `volatile-lru` the target evicts keys the
//! sync wrote: an unavoidable loss, which verify must report key for key (checked
//! against the target's own `evicted` keyspace notifications). Under `noeviction`
//! the write fails: the task stops naming OOM, its checkpoint stays before the refused
//! write, and a restart with room resumes with nothing lost.
//!
//! Like every scenario, it must never judge by the sync's state: verify, the servers'
//! own notifications and plain reads are the oracle.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use futures_util::StreamExt;
use lockstep_testkit::info::config_set;
use lockstep_testkit::RedisServer;
use lockstep_verify::DifferenceKind;

use super::harness::{self, Engine};
use super::{Outcome, Pair, Scenario};

const DOCUMENTED: &str = "If the destination runs out of memory, eviction causes data inconsistency without stopping the task. Set the policy to noeviction to prevent silent data loss: if the destination runs out of memory, writes fail and the task stops, but no data is lost through eviction.";

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "target-eviction-volatile-lru",
            documented: DOCUMENTED,
            documented_short: "eviction: silent inconsistency",
            promise: "the loss is not silent: verify reports exactly the keys the target evicted, as missing on the target",
            run: |pair, seed| Box::pin(volatile_lru(pair, seed)),
        },
        Scenario {
            name: "target-oom-noeviction",
            documented: DOCUMENTED,
            documented_short: "noeviction: task stops, no loss",
            promise: "the task stops naming OOM and maxmemory, the checkpoint stays before the refused write; with room again it resumes and the target ends equal",
            run: |pair, seed| Box::pin(noeviction(pair, seed)),
        },
    ]
}

/// Caps the target's memory at its current use plus `room` bytes.
async fn cap_memory(target: &RedisServer, room: i64) -> anyhow::Result<()> {
    let used = target.info("memory").await?.int("used_memory")?;
    config_set(
        &mut target.client().await?,
        "maxmemory",
        &(used + room).to_string(),
    )
    .await
}

/// `count` keys of 1 KiB with a one-hour TTL, pipelined.
async fn write_volatile(source: &RedisServer, prefix: &str, count: u64) -> anyhow::Result<()> {
    let mut conn = source.client().await?;
    let value = vec![b'e'; 1024];
    for start in (0..count).step_by(200) {
        let mut pipe = redis::pipe();
        for i in start..(start + 200).min(count) {
            pipe.cmd("SET")
                .arg(format!("{prefix}{i}"))
                .arg(&value)
                .arg("EX")
                .arg(3600)
                .ignore();
        }
        pipe.query_async::<()>(&mut conn).await?;
    }
    Ok(())
}

async fn volatile_lru(pair: Pair, seed: u64) -> anyhow::Result<Outcome> {
    let count = 3000 + seed % 1000;
    let (source, target) = harness::start_pair(
        pair,
        |c| c,
        |c| {
            c.set("maxmemory-policy", "volatile-lru")
                .set("notify-keyspace-events", "Ee")
        },
    )
    .await?;
    let dir = tempfile::tempdir()?;
    let mut engine = Engine::spawn(harness::options(&source.url(), &target.url(), dir.path())?);
    engine.caught_up(&source).await?;
    // The target's own account of what it evicted.
    let mut pubsub = target.redis_client()?.get_async_pubsub().await?;
    pubsub.subscribe("__keyevent@0__:evicted").await?;
    let mut notifications = pubsub.into_on_message();
    let notified = Arc::new(Mutex::new(BTreeSet::new()));
    let sink = notified.clone();
    let collector = tokio::spawn(async move {
        while let Some(msg) = notifications.next().await {
            if let Ok(mut set) = sink.lock() {
                set.insert(msg.get_payload_bytes().to_vec());
            }
        }
    });
    let evicted_before = target.info("stats").await?.int("evicted_keys")?;
    cap_memory(&target, 2 << 20).await?;
    write_volatile(&source, "volatile:", count).await?;
    engine.caught_up(&source).await?;
    // No eviction past this point (verify's own buffers would cause some): the loss
    // to report is the one the sync suffered.
    config_set(&mut target.client().await?, "maxmemory", "0").await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    collector.abort();
    let evicted: BTreeSet<Vec<u8>> = match notified.lock() {
        Ok(set) => set.clone(),
        Err(_) => bail!("the notification collector panicked"),
    };
    let evicted_count = target.info("stats").await?.int("evicted_keys")? - evicted_before;
    if evicted_count == 0 {
        bail!("the target evicted nothing: the fault did not happen");
    }
    if engine.handle.is_finished() {
        bail!("the task stopped; under volatile-lru the writes succeed");
    }
    let report = harness::verify(&source, &target).await?;
    let reported: BTreeSet<Vec<u8>> = report.differences.iter().map(|d| d.key.clone()).collect();
    if let Some(d) = report
        .differences
        .iter()
        .find(|d| d.kind != DifferenceKind::MissingOnTarget)
    {
        bail!(
            "verify reported {} for {:?}; only missing keys were expected: {report}",
            d.kind.as_str(),
            String::from_utf8_lossy(&d.key)
        );
    }
    if reported != evicted || reported.len() as i64 != evicted_count {
        bail!(
            "verify reported {} missing keys, the target evicted {evicted_count} ({} notified); {} notified but not reported, {} reported but not notified",
            reported.len(),
            evicted.len(),
            evicted.difference(&reported).count(),
            reported.difference(&evicted).count()
        );
    }
    engine.finish().await?;
    Ok(Outcome::new(format!(
        "target evicted {evicted_count} of {count} keys; verify listed exactly those {} as missing; task kept running",
        reported.len()
    )))
}

/// The offset of the checkpoint file the engine keeps in `dir`.
fn checkpoint_offset(dir: &std::path::Path) -> anyhow::Result<i64> {
    let text =
        std::fs::read_to_string(dir.join("checkpoint.json")).context("the checkpoint file")?;
    let value: serde_json::Value = serde_json::from_str(&text)?;
    value["offset"]
        .as_i64()
        .with_context(|| format!("no offset in the checkpoint {text}"))
}

async fn noeviction(pair: Pair, seed: u64) -> anyhow::Result<Outcome> {
    // A backlog that holds every refused write: the resume is a partial one.
    let (source, target) = harness::start_pair(
        pair,
        |c| c.set("repl-backlog-size", "16mb"),
        |c| c.set("maxmemory-policy", "noeviction"),
    )
    .await?;
    let dir = tempfile::tempdir()?;
    let mut engine = Engine::spawn(harness::options(&source.url(), &target.url(), dir.path())?);
    harness::fill(&source, 0, "before:", 1000).await?;
    engine.caught_up(&source).await?;
    // The checkpoint file is written every 200 ms.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let before = checkpoint_offset(dir.path())?;
    cap_memory(&target, 512 << 10).await?;
    let count = 1500 + seed % 500;
    write_volatile(&source, "oom:", count).await?;
    let ended = tokio::time::timeout(Duration::from_secs(30), &mut engine.handle)
        .await
        .context("the task did not stop within 30 s of the target's OOM")?
        .context("the sync task")?;
    let err = match ended {
        Ok(summary) => bail!("the task ended without an error: {:?}", summary.progress),
        Err(err) => err.to_string(),
    };
    if !(err.contains("OOM") && err.contains("maxmemory")) {
        bail!("the task's error does not name OOM and maxmemory: {err}");
    }
    let stopped_at = checkpoint_offset(dir.path())?;
    let source_offset = source
        .info("replication")
        .await?
        .int("master_repl_offset")?;
    if stopped_at >= source_offset || stopped_at < before {
        bail!("checkpoint {stopped_at} (was {before}) passed the refused writes (source at {source_offset})");
    }
    // Room again: the task resumes from its checkpoint and nothing is lost.
    config_set(&mut target.client().await?, "maxmemory", "0").await?;
    let mut engine = Engine::spawn(harness::options(&source.url(), &target.url(), dir.path())?);
    engine.caught_up(&source).await?;
    let report = harness::consistent(&source, &target, count).await?;
    let p = engine.now();
    engine.finish().await?;
    if p.full_syncs > 0 {
        bail!("the resumed task copied everything again: its checkpoint was not used");
    }
    Ok(Outcome::new(format!(
        "task stopped with OOM at offset {stopped_at} < {source_offset}; resumed partially, {} keys equal",
        report.keys_compared
    )))
}
