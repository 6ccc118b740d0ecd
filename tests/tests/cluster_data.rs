//! The full data set (every type in every encoding, binary keys, TTLs, big keys)
//! written into a cluster source of 3 primaries x 1 replica, synced by lockstep (one
//! task per shard) into a standalone target and into a cluster target at the same
//! time, on 6.2, 7.0 and 8.2. Verify, which reads each side independently of the
//! sync, must find both targets equal to the source with every key of the data set
//! compared; then a churn on every shard exercises the incremental phase and verify
//! must find them equal again.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{churn_every_shard, seed_url, spawn_shard_tasks, user_keys, wait_consistent};
use lockstep_testkit::data::{DataSet, DataSpec};
use lockstep_testkit::topology::{Cluster, ClusterSpec};
use lockstep_testkit::{RedisServer, RedisVersion, ServerConfig};

/// Keys per family: every family, and both sizes of the size-dependent ones.
const SCALE: usize = 8;
/// Big enough for several pipelines per big key, small enough for the time budget.
const BIG_KEY_BYTES: usize = 256 << 10;
/// How long verify may take to find a target equal.
const CONVERGE: Duration = Duration::from_secs(40);

async fn data_set_from_a_cluster_source(version: RedisVersion) -> anyhow::Result<()> {
    let started = Instant::now();
    let node = ServerConfig::new(version);
    let source = Cluster::start(ClusterSpec::new(node.clone(), 3, 1)).await?;
    let cluster_target = Cluster::start(ClusterSpec::new(node.clone(), 3, 0)).await?;
    let standalone_target = RedisServer::start(node).await?;
    // "About to expire" keys still get the TTL race guard (under an hour), but outlive
    // the test, so the key counts are exact.
    let spec = DataSpec::new(17, SCALE)
        .dbs(&[0])
        .big_keys(BIG_KEY_BYTES)
        .soon_ttl(Duration::from_secs(600));
    let data = DataSet::write_cluster(&source, &spec).await?;
    eprintln!("{version}: {data}");
    let expected = data.keys.len() as u64;
    anyhow::ensure!(
        user_keys(&source).await? == expected,
        "{version}: source key count"
    );

    let source_url = seed_url(&source);
    let targets = [
        ("standalone", standalone_target.url()),
        ("cluster", seed_url(&cluster_target)),
    ];
    let dirs = [tempfile::tempdir()?, tempfile::tempdir()?];
    let mut tasks = Vec::new();
    for ((_, url), dir) in targets.iter().zip(&dirs) {
        let shard_tasks = spawn_shard_tasks(&source, url, dir.path(), false).await?;
        assert_eq!(shard_tasks.len(), 3, "{version}: one task per source shard");
        tasks.push(shard_tasks);
    }

    for ((name, url), shard_tasks) in targets.iter().zip(&mut tasks) {
        let report = wait_consistent(&source_url, url, shard_tasks, CONVERGE)
            .await
            .map_err(|e| e.context(format!("{version}: full copy into the {name} target")))?;
        assert_eq!(
            report.keys_compared, expected,
            "{version}: {name} target after the full copy: {report}"
        );
    }
    let full_copy = started.elapsed();

    let ops = churn_every_shard(&source, None, 23, 400.0, Duration::from_millis(1500)).await?;
    let expected = user_keys(&source).await?;
    for ((name, url), shard_tasks) in targets.iter().zip(&mut tasks) {
        let report = wait_consistent(&source_url, url, shard_tasks, CONVERGE)
            .await
            .map_err(|e| e.context(format!("{version}: churn into the {name} target")))?;
        assert_eq!(
            report.keys_compared, expected,
            "{version}: {name} target after the churn: {report}"
        );
    }
    for shard_tasks in tasks {
        for task in shard_tasks {
            task.finish().await?;
        }
    }
    eprintln!(
        "{version}: {} keys copied and checked in {full_copy:.1?}; then {ops} churn ops, {expected} keys, all in {:.1?}",
        data.keys.len(),
        started.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn data_set_from_a_6_2_cluster_into_standalone_and_cluster_targets() -> anyhow::Result<()> {
    data_set_from_a_cluster_source(RedisVersion::V6_2).await
}

#[tokio::test]
async fn data_set_from_a_7_0_cluster_into_standalone_and_cluster_targets() -> anyhow::Result<()> {
    data_set_from_a_cluster_source(RedisVersion::V7_0).await
}

#[tokio::test]
async fn data_set_from_an_8_2_cluster_into_standalone_and_cluster_targets() -> anyhow::Result<()> {
    data_set_from_a_cluster_source(RedisVersion::V8_2).await
}
