//! What end-to-end tests with a cluster source share: one sync task per source shard,
//! verify between any two deployments (either side a cluster), waiting until verify
//! finds them equal, and a churn on every shard of a source cluster.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use lockstep_sync::endpoint::Endpoint;
use lockstep_sync::engine::SyncOptions;
use lockstep_testkit::churn::{Churn, ChurnSpec};
use lockstep_testkit::topology::{key_slot, Cluster};
use lockstep_testkit::RedisServer;

use super::SyncTask;

/// The URL of the cluster's last node (a replica when the cluster has replicas): any
/// node's address is enough for lockstep and verify.
pub fn seed_url(cluster: &Cluster) -> String {
    cluster
        .nodes
        .last()
        .map(RedisServer::url)
        .unwrap_or_default()
}

/// One task per shard of `source` into `target_url`, spawned, with checkpoints
/// under `dir`.
pub async fn spawn_shard_tasks(
    source: &Cluster,
    target_url: &str,
    dir: &Path,
) -> anyhow::Result<Vec<SyncTask>> {
    let mut base = SyncOptions::new(
        Endpoint::parse(&seed_url(source))?,
        Endpoint::parse(target_url)?,
        dir,
    );
    base.retry_window = Duration::from_secs(30);
    let shards = lockstep_sync::cluster_source::expand(base, false).await?;
    Ok(shards.into_iter().map(SyncTask::spawn).collect())
}

/// `lockstep verify` of database 0 between any node of the source and of the target
/// (either may be a cluster): its report.
pub async fn verify(source_url: &str, target_url: &str) -> anyhow::Result<lockstep_verify::Report> {
    lockstep_verify::compare(
        &redis::Client::open(source_url)?,
        &redis::Client::open(target_url)?,
        &lockstep_verify::CompareOptions {
            dbs: vec![0],
            ..Default::default()
        },
    )
    .await
}

/// Waits (up to `timeout`) until verify finds the target equal to the source;
/// returns that report, or fails with the last one, or at once with a task's error
/// if one ends.
pub async fn wait_consistent(
    source_url: &str,
    target_url: &str,
    tasks: &mut [SyncTask],
    timeout: Duration,
) -> anyhow::Result<lockstep_verify::Report> {
    let deadline = Instant::now() + timeout;
    loop {
        for task in tasks.iter_mut() {
            if task.handle.is_finished() {
                let ended = (&mut task.handle).await?;
                anyhow::bail!("a shard task ended: {ended:?}");
            }
        }
        let report = verify(source_url, target_url).await?;
        if report.is_consistent() {
            return Ok(report);
        }
        if Instant::now() > deadline {
            anyhow::bail!("{target_url} never equalled {source_url} within {timeout:?}: {report}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Keys in the cluster's database 0 other than lockstep's own, summed over its
/// primaries.
pub async fn user_keys(cluster: &Cluster) -> anyhow::Result<u64> {
    let mut total = 0;
    for node in cluster.primaries().await? {
        let mut conn = node.client().await?;
        let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query_async(&mut conn).await?;
        total += keys.iter().filter(|k| !k.starts_with(b"LOCKSTEP_")).count() as u64;
    }
    Ok(total)
}

/// One churn per primary of `cluster`, at the same time, each on the primary that
/// serves its hash tag (a churn's keys share one tag, so its multi-key commands stay
/// in one slot), the tags chosen so that every primary gets one. Returns the ops sent.
pub async fn churn_every_shard(
    cluster: &Cluster,
    seed: u64,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<u64> {
    let mut owner_port = vec![0u16; 16384];
    let mut clients: BTreeMap<u16, redis::Client> = BTreeMap::new();
    let seed_node = cluster
        .nodes
        .last()
        .ok_or_else(|| anyhow::anyhow!("the cluster has no nodes"))?;
    for view in cluster.node_views(seed_node).await? {
        if !view.is_primary || view.slots.is_empty() {
            continue;
        }
        for &(first, last) in &view.slots {
            for slot in first..=last {
                owner_port[usize::from(slot)] = view.port;
            }
        }
        let node = cluster
            .nodes
            .iter()
            .find(|n| n.port() == view.port)
            .ok_or_else(|| anyhow::anyhow!("primary {} is not ours", view.port))?;
        clients.insert(view.port, node.redis_client()?);
    }
    let mut tags: BTreeMap<u16, String> = BTreeMap::new();
    for n in 0..10_000 {
        let tag = format!("t{n}");
        tags.entry(owner_port[usize::from(key_slot(tag.as_bytes()))])
            .or_insert(tag);
        if tags.len() == clients.len() {
            break;
        }
    }
    anyhow::ensure!(tags.len() == clients.len(), "no hash tag for some primary");
    let mut runs = tokio::task::JoinSet::new();
    for (i, (port, tag)) in tags.into_iter().enumerate() {
        let spec = ChurnSpec::new(seed + i as u64)
            .rate(rate)
            .duration(Some(duration))
            .cluster_tag(&tag);
        let client = clients[&port].clone();
        runs.spawn(async move { Churn::run(&client, &spec).await });
    }
    let mut ops = 0;
    while let Some(report) = runs.join_next().await {
        ops += report??.ops;
    }
    Ok(ops)
}
