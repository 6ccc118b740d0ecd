//! A Redis Cluster as the source: one replica link per shard, each its own task.
//!
//! A cluster is recognised from the URL of any of its nodes (`INFO cluster` says
//! `cluster_enabled:1`); no option is needed. [`expand`] turns the task's options
//! into one [`SyncOptions`] per shard of the source (its primaries, from `CLUSTER
//! SLOTS`, which 6.2, 7.0 and 8.2 all answer), and the caller runs them side by side
//! exactly like standalone tasks: each shard has its own replica link, its own
//! checkpoint directory (`<checkpoint dir>/shard<first slot>`), its own checkpoint
//! key on the target (task `<task>-shard<first slot>`) and its own heartbeat key,
//! which carries a hash tag of one of the shard's slots so that the shard's primary
//! accepts it. A shard is named by the first slot it serves: the name survives a
//! failover, which changes the primary but not the slots.
//!
//! # What the shards share: the target
//! Every shard writes to the same target, so nothing a shard does may touch another
//! shard's keys. The shard's [`Filter::source_slots`] scopes the two places where a
//! task removes keys it did not write itself: clearing the target before a full
//! resync over stale data, and FLUSHALL / FLUSHDB from the stream (a node of a
//! cluster flushes only itself; `redis-cli --cluster call ... FLUSHALL` flushes each
//! node, and each shard then removes its own slots' keys). Both scan the target and
//! unlink only the keys hashing into the shard's slots. FUNCTION and SCRIPT commands
//! are applied from the shard serving slot 0 only (they reach every node, so every
//! shard's stream carries them; applying them once keeps `FUNCTION LOAD` without
//! REPLACE from failing on the second copy). PUBLISH is not in a cluster's
//! replication stream at all (cluster bus), so it is never synchronized.
//!
//! # Failover and resharding
//! Before every session (the first, and each retry after a cut link) a shard task
//! asks the cluster, through any node it knows ([`SourceCluster::seeds`]: every
//! primary and replica seen at discovery, and the URL given), which primary now
//! serves its first slot, and connects there. A promoted replica keeps its old
//! primary's replication history (PSYNC2), so the shard resumes by PSYNC from its
//! checkpoint: `+CONTINUE`, no full copy. If the shard's slots are no longer served
//! by one primary exactly as at discovery (slots moved between shards), the task
//! stops with an error naming the slots and saying to start it again, which
//! discovers the new layout: keys moving between two streams that are applied
//! independently could otherwise arrive on the target in the wrong order.
//!
//! Not built: noticing a reshard while a session runs (it is noticed at the next
//! session); replicating from each shard's replica instead of its primary.

use std::path::PathBuf;

use crate::apply::{ApplyOptions, TargetWriter};
use crate::endpoint::Endpoint;
use crate::engine::{SyncError, SyncOptions};
use crate::resp::Frame;
use crate::slots::{parse_cluster_slots, Shard};

/// Where a shard task finds its cluster and which slots are its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceCluster {
    /// Nodes to ask for the slot map (any one that answers will do).
    pub seeds: Vec<Endpoint>,
    /// The shard's slot ranges at discovery (inclusive).
    pub slots: Vec<(u16, u16)>,
}

/// Whether `endpoint` is a node of a Redis Cluster (`INFO cluster`).
async fn is_cluster(node: &mut TargetWriter) -> Result<bool, SyncError> {
    let info = node.query(&[b"INFO".as_slice(), b"cluster"]).await?;
    Ok(info.as_bytes().is_some_and(|text| {
        text.split(|&b| b == b'\n')
            .any(|l| l.trim_ascii() == b"cluster_enabled:1")
    }))
}

/// A source cluster as found at start: its primaries and every node to ask later.
#[derive(Clone, Debug)]
pub struct Discovery {
    /// One per primary, with its slot ranges.
    pub shards: Vec<Shard>,
    /// Every node (primaries and replicas), the given one first.
    pub seeds: Vec<Endpoint>,
}

impl Discovery {
    /// The primaries, as endpoints with the given one's credentials and TLS.
    pub fn primaries(&self, given: &Endpoint) -> Vec<Endpoint> {
        self.shards
            .iter()
            .map(|shard| at(given, &shard.host, shard.port))
            .collect()
    }
}

/// The cluster `source` belongs to; None when it is a standalone server.
pub async fn discover(
    source: &Endpoint,
    connection: ApplyOptions,
) -> Result<Option<Discovery>, SyncError> {
    let mut node = TargetWriter::connect_to("source", source, connection).await?;
    if !is_cluster(&mut node).await? {
        return Ok(None);
    }
    let reply = node.query(&[b"CLUSTER".as_slice(), b"SLOTS"]).await?;
    let shards = parse_cluster_slots(&reply, &source.host).map_err(cluster_error)?;
    if shards.is_empty() {
        return Err(cluster_error(
            "the source cluster serves no slot yet (fix: assign the slots, e.g. redis-cli --cluster fix)".into(),
        ));
    }
    let mut seeds = vec![source.clone()];
    for (host, port) in node_addresses(&reply, &source.host) {
        let node = at(source, &host, port);
        if !seeds.contains(&node) {
            seeds.push(node);
        }
    }
    Ok(Some(Discovery { shards, seeds }))
}

/// The task's options per shard when `base.source` is a cluster node; `base` itself
/// (one element) when it is a standalone server.
pub async fn expand(base: SyncOptions) -> Result<Vec<SyncOptions>, SyncError> {
    let Some(cluster) = discover(&base.source, base.source_connection()).await? else {
        return Ok(vec![base]);
    };
    tracing::info!(
        shards = cluster.shards.len(),
        "the source is a Redis Cluster: one replica link per shard"
    );
    Ok(cluster
        .shards
        .iter()
        .map(|shard| shard_options(&base, shard, cluster.seeds.clone()))
        .collect())
}

/// The options of one shard's task.
fn shard_options(base: &SyncOptions, shard: &Shard, seeds: Vec<Endpoint>) -> SyncOptions {
    let mut slots = shard.ranges.clone();
    slots.sort_unstable();
    let name = format!("shard{}", slots[0].0);
    let mut options = base.clone();
    options.source = at(&base.source, &shard.host, shard.port);
    options.task_name = format!("{}-{name}", base.task_name);
    options.checkpoint_dir = PathBuf::from(&base.checkpoint_dir).join(&name);
    options.filter.source_slots = slots.clone();
    options.source_cluster = Some(SourceCluster { seeds, slots });
    options
}

impl SourceCluster {
    /// The primary serving this shard's slots now, asked of the first seed that
    /// answers. A connection-class error when none answers (a failover may be under
    /// way: the task retries); a permanent one when the slots moved.
    pub async fn current_primary(&self, options: &SyncOptions) -> Result<Endpoint, SyncError> {
        let mut last_error = None;
        for seed in &self.seeds {
            let shards = async {
                let mut node =
                    TargetWriter::connect_to("source", seed, options.source_connection()).await?;
                let reply = node.query(&[b"CLUSTER".as_slice(), b"SLOTS"]).await?;
                parse_cluster_slots(&reply, &seed.host).map_err(cluster_error)
            }
            .await;
            match shards {
                Ok(shards) => return self.primary_in(&shards, options),
                Err(err) => last_error = Some(err),
            }
        }
        Err(last_error.unwrap_or_else(|| cluster_error("no seed node to ask".into())))
    }

    fn primary_in(&self, shards: &[Shard], options: &SyncOptions) -> Result<Endpoint, SyncError> {
        let first = self.slots[0].0;
        let owner = shards
            .iter()
            .find(|s| s.ranges.iter().any(|&(a, b)| a <= first && first <= b));
        let Some(owner) = owner else {
            // Mid-failover a slot can be briefly unserved: retry.
            return Err(SyncError::SourceTopology(format!(
                "no primary of the source cluster serves slot {first} right now"
            )));
        };
        let mut ranges = owner.ranges.clone();
        ranges.sort_unstable();
        if ranges != self.slots {
            return Err(SyncError::Options(format!(
                "the source cluster was resharded: this shard served slots {} and its primary {}:{} now serves {}; start the task again to follow the new layout (each shard resumes from its checkpoint or copies again)",
                ranges_text(&self.slots),
                owner.host,
                owner.port,
                ranges_text(&ranges)
            )));
        }
        Ok(at(&options.source, &owner.host, owner.port))
    }
}

/// Every node (primaries and replicas) a `CLUSTER SLOTS` reply names.
fn node_addresses(reply: &Frame, seed_host: &str) -> Vec<(String, u16)> {
    let mut nodes = Vec::new();
    let Frame::Array(ranges) = reply else {
        return nodes;
    };
    for range in ranges {
        let Frame::Array(fields) = range else {
            continue;
        };
        for node in fields.iter().skip(2) {
            let Frame::Array(node) = node else { continue };
            let host = match node.first().and_then(Frame::as_bytes) {
                Some(h) if !h.is_empty() && h != b"?" => String::from_utf8_lossy(h).into_owned(),
                _ => seed_host.to_owned(),
            };
            if let Some(Frame::Integer(port)) = node.get(1) {
                if let Ok(port) = u16::try_from(*port) {
                    if !nodes.contains(&(host.clone(), port)) {
                        nodes.push((host, port));
                    }
                }
            }
        }
    }
    nodes
}

/// `base` (credentials, TLS) at another address, without a database.
fn at(base: &Endpoint, host: &str, port: u16) -> Endpoint {
    let mut node = base.clone();
    node.host = host.to_owned();
    node.port = port;
    node.db = None;
    node
}

fn ranges_text(ranges: &[(u16, u16)]) -> String {
    ranges
        .iter()
        .map(|(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn cluster_error(message: String) -> SyncError {
    SyncError::SourceTopology(message)
}
