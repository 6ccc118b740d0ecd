//! End to end: `lockstep_sync::engine` between real servers of every version pair,
//! checked by the verify crate (plain reads of both sides), never by the sync's state.

mod common;

use std::time::Duration;

use common::{assert_equal, caught_up, SyncTask};
use lockstep_sync::engine::{Mode, Phase};
use lockstep_testkit::churn::{Churn, ChurnSpec};
use lockstep_testkit::data::{DataSet, DataSpec};
use lockstep_testkit::Run;
use lockstep_testkit::{RedisServer, RedisVersion, ServerConfig};
use lockstep_verify::{compare, CompareOptions};

fn start_sync(
    source: &RedisServer,
    target: &RedisServer,
    dir: &std::path::Path,
    mode: Mode,
) -> anyhow::Result<SyncTask> {
    let mut options = common::options(source, target, dir)?;
    options.mode = mode;
    Ok(SyncTask::spawn(options))
}

async fn full_and_incremental(
    from: RedisVersion,
    to: RedisVersion,
    churn: bool,
) -> anyhow::Result<()> {
    let source = RedisServer::start(ServerConfig::new(from)).await?;
    let target = RedisServer::start(ServerConfig::new(to)).await?;
    DataSet::write(&source.redis_client()?, &DataSpec::new(7, 30)).await?;
    if to < RedisVersion::V8_2 {
        // Hash field TTLs (7.4+) have no form on an older target; that case has its
        // own test (the task stops naming the key).
        common::drop_hash_field_ttls(&source, 16).await?;
    }
    let dir = tempfile::tempdir()?;
    let mut task = start_sync(&source, &target, dir.path(), Mode::FullAndIncremental)?;
    if churn {
        let spec = ChurnSpec::new(11)
            .rate(400.0)
            .duration(Some(Duration::from_secs(2)));
        let report = Churn::run(&source.redis_client()?, &spec).await?;
        assert!(report.ops > 100, "{report:?}");
    }
    caught_up(&mut task, &source).await?;
    assert_equal(&source, &target).await?;
    task.stop.send(true)?;
    let summary = task.handle.await??;
    assert_eq!(summary.progress.full_syncs, 1);
    Ok(())
}

/// Every pair of 6.2, 7.0 and 8.2 as source and target: older to newer and same
/// version with the churn workload writing during the full copy (RESTORE of raw
/// payloads), newer to older by re-encoded payloads (without churn: a newer source's
/// stream carries commands an older target does not have).
#[tokio::test]
async fn every_version_pair_ends_equal() -> anyhow::Result<()> {
    for from in RedisVersion::ALL {
        for to in RedisVersion::ALL {
            full_and_incremental(from, to, from <= to).await?;
        }
    }
    Ok(())
}

/// Valkey 8.1 (RDB 11, between Redis 7.0 and 8.2) both ways with Redis 7.0 and 8.2,
/// and into itself: full copy then the stream, with the churn workload writing during
/// the copy in every pair but 8.2 -> Valkey (8.2's stream carries hash field TTL
/// commands, which Valkey 8.1 does not have). Valkey -> 7.0 re-encodes its RDB 11
/// payloads for the RDB 10 target.
#[tokio::test]
async fn valkey_pairs_with_redis_end_equal() -> anyhow::Result<()> {
    let valkey = RedisVersion::Valkey8_1;
    for (from, to) in [
        (valkey, RedisVersion::V7_0),
        (RedisVersion::V7_0, valkey),
        (valkey, RedisVersion::V8_2),
        (RedisVersion::V8_2, valkey),
        (valkey, valkey),
    ] {
        full_and_incremental(from, to, from != RedisVersion::V8_2).await?;
    }
    Ok(())
}

#[tokio::test]
async fn a_value_the_older_target_cannot_hold_stops_the_task_naming_the_key() -> anyhow::Result<()>
{
    // Hash field TTLs (Redis 7.4+) have no form in RDB 9: refusing beats dropping them.
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V8_2)).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V6_2)).await?;
    let mut conn = source.client().await?;
    conn.run::<()>("HSET h f v").await?;
    conn.run::<()>("HEXPIRE h 3600 FIELDS 1 f").await?;
    let dir = tempfile::tempdir()?;
    let task = start_sync(&source, &target, dir.path(), Mode::Full)?;
    let ended = tokio::time::timeout(Duration::from_secs(60), task.handle).await??;
    let err = ended.expect_err("a hash with field TTLs cannot go to 6.2");
    let text = err.to_string();
    assert!(
        text.contains("\"h\"") && text.contains("field TTLs"),
        "{text}"
    );
    Ok(())
}

#[tokio::test]
async fn a_restarted_task_resumes_with_a_partial_resync_and_exact_counters() -> anyhow::Result<()> {
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let mut conn = source.client().await?;
    let dir = tempfile::tempdir()?;
    let mut task = start_sync(&source, &target, dir.path(), Mode::FullAndIncremental)?;
    for _ in 0..500 {
        conn.run::<()>("INCR counter").await?;
        conn.run::<()>("RPUSH list x").await?;
    }
    caught_up(&mut task, &source).await?;
    // Abort without a goodbye (like a kill), write more, start again.
    task.handle.abort();
    for _ in 0..500 {
        conn.run::<()>("INCR counter").await?;
        conn.run::<()>("RPUSH list x").await?;
    }
    let mut task = start_sync(&source, &target, dir.path(), Mode::FullAndIncremental)?;
    caught_up(&mut task, &source).await?;
    let progress = task.progress.borrow().clone();
    assert_eq!(
        (progress.full_syncs, progress.partial_syncs),
        (0, 1),
        "{progress:?}"
    );
    let mut t = target.client().await?;
    let counter: i64 = t.run("GET counter").await?;
    let len: i64 = t.run("LLEN list").await?;
    assert_eq!((counter, len), (1000, 1000), "replayed or skipped commands");
    assert_equal(&source, &target).await?;
    Ok(())
}

#[tokio::test]
async fn mode_full_exits_when_the_copy_is_acknowledged() -> anyhow::Result<()> {
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V8_2)).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V8_2)).await?;
    DataSet::write(&source.redis_client()?, &DataSpec::new(3, 20)).await?;
    let dir = tempfile::tempdir()?;
    let task = start_sync(&source, &target, dir.path(), Mode::Full)?;
    let summary = tokio::time::timeout(Duration::from_secs(60), task.handle).await???;
    assert_eq!(summary.progress.phase, Phase::Done);
    assert_equal(&source, &target).await
}

/// The oracle's own baseline: a native replica under the same churn is consistent by
/// verify's rules. (It differs in idle stream consumers, which Redis does not always
/// propagate; verify leaves those out.)
#[tokio::test]
async fn native_replica_baseline_under_the_same_churn() -> anyhow::Result<()> {
    let set = lockstep_testkit::ReplicaSet::start(ServerConfig::new(RedisVersion::V8_2), 1).await?;
    let spec = ChurnSpec::new(11)
        .rate(400.0)
        .duration(Some(Duration::from_secs(2)));
    Churn::run(&set.primary().redis_client()?, &spec).await?;
    set.wait_in_sync().await?;
    let replica = set.replicas().next().expect("replica");
    let report = compare(
        &set.primary().redis_client()?,
        &replica.redis_client()?,
        &CompareOptions::default(),
    )
    .await?;
    assert!(report.is_consistent(), "native replication: {report}");
    Ok(())
}

/// The full copy replaces what the target held under a source key's name, whatever
/// its type (lists are not appended to; strings without expiry go by MSET, which must
/// land in their own database and replace too), and leaves the target's other keys
/// alone (the precheck, not the engine, decides whether a non-empty target is fine).
#[tokio::test]
async fn the_full_copy_replaces_existing_target_keys_of_any_type() -> anyhow::Result<()> {
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let mut s = source.client().await?;
    let mut t = target.client().await?;
    // 1200 plain strings per db in dbs 0 and 3 (more than one MSET each), one string
    // with a TTL, one list.
    for db in [0, 3] {
        s.run_args::<()>(("SELECT", db)).await?;
        t.run_args::<()>(("SELECT", db)).await?;
        let mut pipe = redis::pipe();
        for i in 0..1200 {
            pipe.cmd("SET")
                .arg(format!("s:{i}"))
                .arg(format!("source {db} {i}"));
        }
        pipe.cmd("SET").arg("ttl").arg("v").arg("EX").arg(5000);
        pipe.cmd("RPUSH").arg("list").arg("a").arg("b");
        pipe.query_async::<()>(&mut s).await?;
        // The target holds the same names with other types and values, and more.
        let mut pipe = redis::pipe();
        pipe.cmd("RPUSH").arg("s:0").arg("old");
        pipe.cmd("HSET").arg("s:1199").arg("f").arg("old");
        pipe.cmd("SET").arg("s:7").arg("old");
        pipe.cmd("RPUSH").arg("list").arg("old");
        pipe.cmd("SADD").arg("ttl").arg("old");
        pipe.cmd("SET").arg("target-only").arg("kept");
        pipe.query_async::<()>(&mut t).await?;
    }
    let dir = tempfile::tempdir()?;
    let task = start_sync(&source, &target, dir.path(), Mode::Full)?;
    tokio::time::timeout(Duration::from_secs(60), task.handle).await???;
    for db in [0, 3] {
        t.run_args::<()>(("SELECT", db)).await?;
        for i in [0, 7, 600, 1199] {
            let value: String = t.run_args(("GET", format!("s:{i}"))).await?;
            assert_eq!(value, format!("source {db} {i}"), "db {db} key s:{i}");
        }
        let list: Vec<String> = t.run("LRANGE list 0 -1").await?;
        assert_eq!(
            list,
            ["a", "b"],
            "db {db}: the list was replaced, not appended to"
        );
        let ttl: i64 = t.run("TTL ttl").await?;
        assert!((4990..=5000).contains(&ttl), "db {db}: TTL {ttl}");
        let kept: String = t.run("GET target-only").await?;
        assert_eq!(kept, "kept");
        let keys: Vec<String> = t.run("KEYS *").await?;
        let data = keys.iter().filter(|k| !k.starts_with("LOCKSTEP_")).count();
        assert_eq!(data, 1203, "db {db}: 1202 source keys and the target's own");
    }
    Ok(())
}
