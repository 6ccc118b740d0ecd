//! The scan source (issue 18, part 1) between real servers: a source that refuses
//! to replicate (PSYNC and SYNC renamed away, as managed services do) is read key
//! by key and followed by keyspace notifications. Equality is verify's (plain reads
//! of both sides), never the sync's own state.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::SyncTask;
use lockstep_sync::engine::{SourceMode, SyncError};
use lockstep_testkit::churn::{Churn, ChurnSpec};
use lockstep_testkit::data::{DataSet, DataSpec};
use lockstep_testkit::harness::wait_consistent;
use lockstep_testkit::topology::{Cluster, ClusterSpec};
use lockstep_testkit::Run;
use lockstep_testkit::{RedisServer, RedisVersion, ServerConfig};
use lockstep_verify::CompareOptions;

/// A server as a managed service leaves it: no PSYNC, no SYNC, keyspace
/// notifications on.
fn no_replication(version: RedisVersion) -> ServerConfig {
    ServerConfig::new(version)
        .set("rename-command", "PSYNC \"\"")
        .set("rename-command", "SYNC \"\"")
        .set("notify-keyspace-events", "KA")
        .set("databases", "32")
}

const CONVERGE: Duration = Duration::from_secs(60);

fn churn(seed: u64, secs: u64) -> ChurnSpec {
    ChurnSpec::new(seed)
        .rate(300.0)
        .duration(Some(Duration::from_secs(secs)))
}

/// Every pair of 6.2, 7.0 and 8.2: the source refuses to replicate, `auto` falls
/// back to a scan by itself, a churn writes during the scan and after it, and
/// verify finds the target equal; the stream carried re-read keys and the
/// heartbeat (a lag figure).
#[tokio::test]
async fn a_source_that_refuses_to_replicate_is_scanned_and_followed() -> anyhow::Result<()> {
    for from in RedisVersion::ALL {
        for to in RedisVersion::ALL {
            scanned_and_followed(from, to).await?;
        }
    }
    Ok(())
}

/// The same between Valkey 8.1 and Redis 7.0 and 8.2, both ways.
#[tokio::test]
async fn a_valkey_source_or_target_is_scanned_and_followed() -> anyhow::Result<()> {
    let valkey = RedisVersion::Valkey8_1;
    for (from, to) in [
        (valkey, RedisVersion::V7_0),
        (RedisVersion::V7_0, valkey),
        (valkey, RedisVersion::V8_2),
        (RedisVersion::V8_2, valkey),
    ] {
        scanned_and_followed(from, to).await?;
    }
    Ok(())
}

async fn scanned_and_followed(from: RedisVersion, to: RedisVersion) -> anyhow::Result<()> {
    let source = RedisServer::start(no_replication(from)).await?;
    let target = RedisServer::start(ServerConfig::new(to).set("databases", "32")).await?;
    DataSet::write(
        &source.redis_client()?,
        &DataSpec::new(5, 20).dbs(&[0, 3, 17]),
    )
    .await?;
    if to < from {
        common::drop_hash_field_ttls(&source, 32).await?;
    }
    let dir = tempfile::tempdir()?;
    let options = common::options(&source, &target, dir.path())?;
    assert_eq!(options.source_mode, SourceMode::Auto);
    let stats = options.scan_stats.clone();
    let mut task = SyncTask::spawn(options);
    // Writes during the scan and after it; a newer source's churn may use what an
    // older target cannot hold (hash field TTLs): only older to newer churns.
    if from <= to {
        Churn::run(&source.redis_client()?, &churn(from as u64 + 3, 3)).await?;
    }
    let verify = CompareOptions::default();
    let report = wait_consistent(
        &source.url(),
        &target.url(),
        std::slice::from_mut(&mut task),
        &verify,
        CONVERGE,
    )
    .await?;
    assert!(report.keys_compared > 100, "{from:?} -> {to:?}: {report}");
    // A FUNCTION LOAD of the churn (7.0+) notifies no key: it makes the task scan
    // again, so a 7.0+ source may scan more than once.
    let scans = stats.scans.load(Ordering::Relaxed);
    assert!(scans >= 1, "{from:?} -> {to:?}: scanned");
    if from == RedisVersion::V6_2 {
        assert_eq!(scans, 1, "6.2 -> {to:?}: one scan");
    }
    if from <= to {
        assert!(
            stats.keys_reread.load(Ordering::Relaxed) > 0,
            "changes were read again"
        );
    }
    task.wait_for(
        "a heartbeat through the change stream",
        Duration::from_secs(20),
        |p| p.heartbeat_sent_unix_ms.is_some(),
    )
    .await?;
    task.stop.send(true)?;
    task.handle.await??;
    Ok(())
}

/// Without keyspace notifications a scan would miss every change after it: the
/// task stops before it scans, naming the setting and the exact fix.
#[tokio::test]
async fn a_source_without_notifications_is_refused_with_the_fix() -> anyhow::Result<()> {
    let source = RedisServer::start(
        ServerConfig::new(RedisVersion::V7_0).set("notify-keyspace-events", "Ex"),
    )
    .await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let dir = tempfile::tempdir()?;
    let mut options = common::options(&source, &target, dir.path())?;
    options.source_mode = SourceMode::Scan;
    let task = SyncTask::spawn(options);
    let err = match tokio::time::timeout(Duration::from_secs(30), task.handle).await?? {
        Err(err) => err,
        Ok(summary) => anyhow::bail!("the task must stop, it ended {summary:?}"),
    };
    let text = err.to_string();
    assert!(matches!(err, SyncError::Scan(_)), "{text}");
    assert!(text.contains("notify-keyspace-events is \"xE\""), "{text}");
    assert!(
        text.contains("CONFIG SET notify-keyspace-events KEA"),
        "{text}"
    );
    Ok(())
}

/// What notifications cannot tell: the subscription killed mid-churn (CLIENT KILL
/// TYPE pubsub) and a FLUSHDB (which notifies no key). Each makes the task scan
/// again, and verify finds the target equal after each.
#[tokio::test]
async fn a_lost_subscription_and_a_flush_make_the_task_scan_again() -> anyhow::Result<()> {
    // 6.2 has no functions, whose loads notify no key and would scan again too.
    let source = RedisServer::start(no_replication(RedisVersion::V6_2)).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V8_2)).await?;
    DataSet::write(&source.redis_client()?, &DataSpec::new(9, 10)).await?;
    let dir = tempfile::tempdir()?;
    let mut options = common::options(&source, &target, dir.path())?;
    options.source_mode = SourceMode::Scan;
    let stats = options.scan_stats.clone();
    let mut task = SyncTask::spawn(options);
    let verify = CompareOptions::default();
    let tasks = std::slice::from_mut(&mut task);
    wait_consistent(&source.url(), &target.url(), tasks, &verify, CONVERGE).await?;
    let client = source.redis_client()?;
    let churning = tokio::spawn(async move { Churn::run(&client, &churn(21, 4)).await });
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut conn = source.client().await?;
    let killed: i64 = conn.run("CLIENT KILL TYPE pubsub").await?;
    assert_eq!(killed, 1, "the task's one subscription");
    churning.await??;
    let tasks = std::slice::from_mut(&mut task);
    wait_consistent(&source.url(), &target.url(), tasks, &verify, CONVERGE).await?;
    assert_eq!(
        stats.scans.load(Ordering::Relaxed),
        2,
        "scanned again after the kill"
    );
    // A FLUSHDB notifies no key; the target must lose the keys all the same.
    conn.run::<()>("FLUSHDB").await?;
    conn.run::<()>("SET after-flush 1").await?;
    let tasks = std::slice::from_mut(&mut task);
    let report = wait_consistent(&source.url(), &target.url(), tasks, &verify, CONVERGE).await?;
    assert!(report.keys_compared >= 1, "{report}");
    assert_eq!(
        stats.scans.load(Ordering::Relaxed),
        3,
        "scanned again after the flush"
    );
    let mut on_target = target.client().await?;
    let size: i64 = on_target.run("DBSIZE").await?;
    assert!(
        size <= 3,
        "the flushed keys are gone from the target ({size} keys)"
    );
    task.stop.send(true)?;
    task.handle.await??;
    Ok(())
}

/// A key written as fast as a client can, by INCR, APPEND and DEL, ends at the
/// source's last value whatever the order of notifications and reads.
#[tokio::test]
async fn a_key_changing_quickly_ends_at_its_last_value() -> anyhow::Result<()> {
    let source = RedisServer::start(no_replication(RedisVersion::V7_0)).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let dir = tempfile::tempdir()?;
    let mut options = common::options(&source, &target, dir.path())?;
    options.source_mode = SourceMode::Scan;
    let mut task = SyncTask::spawn(options);
    let mut conn = source.client().await?;
    for round in 0..3_000u32 {
        conn.run_args::<()>(("INCR", "hot")).await?;
        conn.run_args::<()>(("APPEND", "log", round.to_string()))
            .await?;
        if round % 97 == 0 {
            conn.run_args::<()>(("DEL", "log")).await?;
        }
        if round % 7 == 0 {
            conn.run_args::<()>(("PEXPIRE", "hot", 60_000 + u64::from(round)))
                .await?;
        }
    }
    let verify = CompareOptions::default();
    let tasks = std::slice::from_mut(&mut task);
    wait_consistent(&source.url(), &target.url(), tasks, &verify, CONVERGE).await?;
    let hot: i64 = target.client().await?.run("GET hot").await?;
    assert_eq!(hot, 3_000);
    task.stop.send(true)?;
    task.handle.await??;
    Ok(())
}

/// Into a cluster target: every re-read key is written by its slot.
#[tokio::test]
async fn a_scanned_source_into_a_cluster_target() -> anyhow::Result<()> {
    let source = RedisServer::start(no_replication(RedisVersion::V7_0)).await?;
    let cluster = Cluster::start(ClusterSpec::new(
        ServerConfig::new(RedisVersion::V7_0),
        3,
        0,
    ))
    .await?;
    DataSet::write(&source.redis_client()?, &DataSpec::new(13, 10).dbs(&[0])).await?;
    let dir = tempfile::tempdir()?;
    let mut options = common::cluster::into_cluster(&source, &cluster, dir.path())?;
    options.source_mode = SourceMode::Scan;
    let mut task = SyncTask::spawn(options);
    Churn::run(&source.redis_client()?, &churn(31, 3).cluster_tag(""))
        .await
        .ok();
    let target_url = common::cluster::seed_url(&cluster);
    let verify = CompareOptions::default();
    let tasks = std::slice::from_mut(&mut task);
    wait_consistent(&source.url(), &target_url, tasks, &verify, CONVERGE).await?;
    task.stop.send(true)?;
    task.handle.await??;
    Ok(())
}

/// A Redis Cluster source read key by key: one task per shard scans and follows
/// its own primary (its notifications are its keys'), a churn writes on every
/// shard during the scans and after, and verify finds the target equal.
#[tokio::test]
async fn a_cluster_source_is_scanned_shard_by_shard() -> anyhow::Result<()> {
    let node = ServerConfig::new(RedisVersion::V7_0).set("notify-keyspace-events", "KA");
    let source = Cluster::start(ClusterSpec::new(node, 3, 1)).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V8_2)).await?;
    DataSet::write_cluster(&source, &DataSpec::new(41, 10).dbs(&[0])).await?;
    let dir = tempfile::tempdir()?;
    let seed = common::cluster::seed_url(&source);
    let mut base = lockstep_testkit::harness::options(
        &seed,
        &target.url(),
        dir.path(),
        Duration::from_secs(30),
    )?;
    base.source_mode = SourceMode::Scan;
    let mut tasks = lockstep_testkit::harness::spawn_shard_tasks(base, false).await?;
    assert_eq!(tasks.len(), 3, "one task per primary");
    common::cluster::churn_every_shard(&source, None, 51, 200.0, Duration::from_secs(3)).await?;
    common::cluster::wait_consistent(&seed, &target.url(), &mut tasks, CONVERGE).await?;
    for task in tasks {
        task.stop.send(true)?;
        // A shard task asked to stop ends with Stopped (the sync command's own stop).
        match task.handle.await? {
            Ok(_) | Err(SyncError::Stopped) => {}
            Err(err) => anyhow::bail!("a shard task failed: {err}"),
        }
    }
    Ok(())
}
