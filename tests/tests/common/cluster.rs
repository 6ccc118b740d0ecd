//! What end-to-end tests with a cluster on either side share: one sync task per source
//! shard, verify between any two deployments (either side a cluster), waiting until
//! verify finds them equal, a cluster's primaries by slot, and a churn on every shard.
//!
//! It must never judge a result by the sync's own state: equality is verify's or plain
//! reads of the primaries.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use lockstep_sync::engine::SyncOptions;
use lockstep_testkit::churn::{Churn, ChurnSpec};
use lockstep_testkit::harness;
use lockstep_testkit::topology::{key_slot, Cluster};
use lockstep_testkit::RedisServer;
use redis::aio::MultiplexedConnection;

use super::SyncTask;
use lockstep_testkit::Run;

pub use lockstep_testkit::harness::seed_url;

/// A task from a standalone `source` into `cluster`, given by the URL of its last
/// node (any node's address is enough): full copy then stream, 30 s retry window.
pub fn into_cluster(
    source: &RedisServer,
    cluster: &Cluster,
    dir: &Path,
) -> anyhow::Result<SyncOptions> {
    let retry_window = Duration::from_secs(30);
    let mut options = harness::options(&source.url(), &seed_url(cluster), dir, retry_window)?;
    options.mode = lockstep_sync::engine::Mode::FullAndIncremental;
    Ok(options)
}

/// One task per shard of `source` into `target_url`, spawned, with checkpoints under
/// `dir`; each reads its shard's replica when `from_replica`.
pub async fn spawn_shard_tasks(
    source: &Cluster,
    target_url: &str,
    dir: &Path,
    from_replica: bool,
) -> anyhow::Result<Vec<SyncTask>> {
    let retry_window = Duration::from_secs(30);
    let base = harness::options(&seed_url(source), target_url, dir, retry_window)?;
    harness::spawn_shard_tasks(base, from_replica).await
}

/// `lockstep verify` of databases `dbs` between any node of the source and of the
/// target (either may be a cluster): its report.
pub async fn verify(
    source_url: &str,
    target_url: &str,
    dbs: &[u32],
) -> anyhow::Result<lockstep_verify::Report> {
    let options = lockstep_verify::CompareOptions {
        dbs: dbs.to_vec(),
        ..Default::default()
    };
    harness::verify_urls(source_url, target_url, &options).await
}

/// Waits (up to `timeout`) until verify finds the target equal to the source in
/// database 0 (both directions: values, types, TTLs, no extra key) and no TTL guard
/// is left; returns that report, or fails with the last one, if it is equal with
/// nothing compared, or at once with a task's error if one ends.
pub async fn wait_consistent(
    source_url: &str,
    target_url: &str,
    tasks: &mut [SyncTask],
    timeout: Duration,
) -> anyhow::Result<lockstep_verify::Report> {
    let options = lockstep_verify::CompareOptions {
        dbs: vec![0],
        ..Default::default()
    };
    let report = harness::wait_consistent(source_url, target_url, tasks, &options, timeout).await?;
    anyhow::ensure!(report.keys_compared > 0, "nothing was compared: {report}");
    Ok(report)
}

/// Connections to every primary of a cluster and which one serves each slot.
pub struct Primaries {
    pub by_port: BTreeMap<u16, MultiplexedConnection>,
    pub clients: BTreeMap<u16, redis::Client>,
    pub owner: Vec<u16>,
}

impl Primaries {
    pub async fn of(cluster: &Cluster) -> anyhow::Result<Primaries> {
        let mut by_port = BTreeMap::new();
        let mut clients = BTreeMap::new();
        let mut owner = vec![0u16; 16384];
        // Asked of the last node: the tests kill and fail over node 0's shard.
        let seed = cluster
            .nodes
            .last()
            .ok_or_else(|| anyhow::anyhow!("the cluster has no nodes"))?;
        for view in cluster.node_views(seed).await? {
            if !view.is_primary || view.slots.is_empty() {
                continue;
            }
            for &(first, last) in &view.slots {
                for slot in first..=last {
                    owner[usize::from(slot)] = view.port;
                }
            }
            let node = cluster
                .nodes
                .iter()
                .find(|n| n.port() == view.port)
                .ok_or_else(|| anyhow::anyhow!("primary {} is not ours", view.port))?;
            by_port.insert(view.port, node.client().await?);
            clients.insert(view.port, node.redis_client()?);
        }
        Ok(Primaries {
            by_port,
            clients,
            owner,
        })
    }

    /// The port of the primary serving `key`'s slot.
    /// The integer at `key`, read on the primary serving its slot (an error when
    /// the key is missing or not an integer).
    pub async fn int(&mut self, key: &str) -> anyhow::Result<i64> {
        let value: Option<i64> = self.conn(key.as_bytes()).run_args(("GET", key)).await?;
        value.ok_or_else(|| anyhow::anyhow!("{key} is missing on the cluster"))
    }

    pub fn owner_of(&self, key: &[u8]) -> u16 {
        self.owner[usize::from(key_slot(key))]
    }

    /// The connection to the primary serving `key`'s slot.
    pub fn conn(&mut self, key: &[u8]) -> &mut MultiplexedConnection {
        let port = self.owner_of(key);
        self.by_port.get_mut(&port).expect("every slot is served")
    }
}

/// Keys in the cluster's database 0 other than lockstep's own, summed over its
/// primaries.
pub async fn user_keys(cluster: &Cluster) -> anyhow::Result<u64> {
    let mut total = 0;
    for conn in Primaries::of(cluster).await?.by_port.values_mut() {
        let keys: Vec<Vec<u8>> = conn.run("KEYS *").await?;
        total += keys.iter().filter(|k| !k.starts_with(b"LOCKSTEP_")).count() as u64;
    }
    Ok(total)
}

/// One churn per primary of `cluster`, at the same time, each with a hash tag that
/// primary serves (a churn's keys share one tag, so its multi-key commands stay in
/// one slot), the tags chosen so that every primary gets one. The churns write into
/// `source` when given (a standalone source synced into `cluster`), else each into
/// the primary serving its tag. Returns the ops sent.
pub async fn churn_every_shard(
    cluster: &Cluster,
    source: Option<&RedisServer>,
    seed: u64,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<u64> {
    let primaries = Primaries::of(cluster).await?;
    let mut tags: BTreeMap<u16, String> = BTreeMap::new();
    for n in 0..10_000 {
        let tag = format!("t{n}");
        tags.entry(primaries.owner_of(tag.as_bytes()))
            .or_insert(tag);
        if tags.len() == primaries.clients.len() {
            break;
        }
    }
    anyhow::ensure!(
        tags.len() == primaries.clients.len(),
        "no hash tag for some primary"
    );
    let source = source.map(RedisServer::redis_client).transpose()?;
    let mut runs = tokio::task::JoinSet::new();
    for (i, (port, tag)) in tags.into_iter().enumerate() {
        let spec = ChurnSpec::new(seed + i as u64)
            .rate(rate)
            .duration(Some(duration))
            .cluster_tag(&tag);
        let client = source.as_ref().unwrap_or(&primaries.clients[&port]).clone();
        runs.spawn(async move { Churn::run(&client, &spec).await });
    }
    let mut ops = 0;
    while let Some(report) = runs.join_next().await {
        ops += report??.ops;
    }
    Ok(ops)
}
