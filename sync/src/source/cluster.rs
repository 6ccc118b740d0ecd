//! A Redis Cluster as the source: one replica link per shard, each its own task.
//! It discovers and re-checks the shards' nodes; it never writes to the source or
//! the target, and each shard's data comes through its own replica link (the
//! [`crate::source::Source`] the session uses), never through this module.
//!
//! A cluster is recognised from the URL of any of its nodes (`INFO cluster` says
//! `cluster_enabled:1`); no option is needed. [`expand`] turns the task's options
//! into one [`SyncOptions`] per shard of the source (its primaries, from `CLUSTER
//! SLOTS`, which 6.2, 7.0 and 8.2 all answer), and the caller runs them side by side
//! exactly like standalone tasks: each shard has its own replica link, its own
//! checkpoint directory (`<checkpoint dir>/shard<slot ranges>`, e.g. `shard0-5460`),
//! its own checkpoint key on the target (task `<task>-shard<slot ranges>`) and its own
//! heartbeat key, which carries a hash tag of one of the shard's slots so that the
//! shard's primary accepts it. A shard is named by the slots it serves: the name
//! survives a failover, which changes the primary but not the slots, and changes
//! with a reshard (see below).
//!
//! # What the shards share: the target
//! Every shard writes to the same target, so nothing a shard does may touch another
//! shard's keys. The shard's [`crate::filter::Filter::source_slots`] scopes the two places where a
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
//! While a shard streams, a watcher asks the same question every 5 s (the engine's
//! `ReshardWatch`), so a reshard during the stream stops the shards it concerns too.
//! Until it does, a moved key's RESTORE in the new owner's stream is outside that
//! shard's slots and dropped, and the DEL that MIGRATE writes in the old owner's
//! stream is applied: the key is missing from the target. So a shard whose slots
//! changed is a new shard (its name is its slots): started again, it copies its
//! slots afresh (removing their keys from the target first), while the shards
//! whose slots did not change resume by PSYNC. The task ends with
//! [`SyncError::Resharded`]; `lockstep sync` then expands the task again and starts
//! the new shards once the replaced ones have ended (two tasks writing the same
//! slots could apply an older value over a newer copy).
//!
//! # Reading from replicas
//! With [`SourceCluster::from_replica`] (the DTS "use slave node" option) a shard
//! task reads the replication stream of one of the shard's replicas that its primary
//! reports in sync (`INFO replication`, state online; `CLUSTER SLOTS` lists a
//! replica only once the node asked has heard it holds data, and nodes disagree on
//! that for a while). A replica serves PSYNC to its own replicas, and its
//! replication id and offsets are its primary's, so a checkpoint is valid on either.
//! The heartbeat is written on the primary. The full copy's snapshot is then taken
//! by the replica, not the primary.

use std::path::PathBuf;

use crate::conn::{ApplyOptions, Conn};
use crate::endpoint::Endpoint;
use crate::engine::error::SyncError;
pub use crate::engine::options::SourceCluster;
use crate::engine::options::SyncOptions;
use crate::resp::Frame;
use crate::slots::{node_address, parse_cluster_slots, Shard};

/// Where a shard task reads and where it writes its heartbeat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardNodes {
    /// The node whose replication stream the task reads.
    pub read: Endpoint,
    /// The shard's primary (the heartbeat's home).
    pub primary: Endpoint,
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
    let mut node = Conn::connect_to("source", source, connection).await?;
    if !crate::cluster::is_cluster_node(&mut node).await? {
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
pub async fn expand(base: SyncOptions, from_replica: bool) -> Result<Vec<SyncOptions>, SyncError> {
    let Some(cluster) = discover(&base.source, discovery_connection(&base)).await? else {
        return Ok(vec![base]);
    };
    tracing::info!(
        shards = cluster.shards.len(),
        "the source is a Redis Cluster: one replica link per shard"
    );
    Ok(cluster
        .shards
        .iter()
        .map(|shard| shard_options(&base, shard, cluster.seeds.clone(), from_replica))
        .collect())
}

/// [`expand`], retried while the source cannot be reached (a connection fault or a
/// "not now" answer) for up to `window`, backing off from 100 ms to 10 s, as a
/// task's sessions are. A zero window tries once (a precheck that is to fail fast).
pub async fn expand_within(
    base: SyncOptions,
    from_replica: bool,
    window: std::time::Duration,
) -> Result<Vec<SyncOptions>, SyncError> {
    let started = std::time::Instant::now();
    let mut backoff = std::time::Duration::from_millis(100);
    loop {
        match expand(base.clone(), from_replica).await {
            Err(err) if err.is_retryable() && started.elapsed() + backoff <= window => {
                tracing::warn!(
                    "cannot learn whether the source {} is a cluster yet: {err}; retrying in {backoff:?}",
                    base.source
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(10));
            }
            other => return other,
        }
    }
}

/// Longest shard name: it goes into a task name (`<task>-<shard>`, at most 64).
const SHARD_NAME_MAX: usize = 32;

/// A shard's name: its slot ranges (`shard0-5460`, `shard0-99_200-5460`), so a shard
/// whose slots changed is a new task with its own checkpoint, copied again (scoped
/// to its slots), never resumed past the commands its old scope dropped. Past
/// [`SHARD_NAME_MAX`] characters the ranges are abbreviated with a hash of them all.
fn shard_name(ranges: &[(u16, u16)]) -> String {
    // Adjacent ranges listed apart are one range.
    let mut merged: Vec<(u16, u16)> = Vec::with_capacity(ranges.len());
    for &(a, b) in ranges {
        match merged.last_mut() {
            Some(last) if u32::from(last.1) + 1 >= u32::from(a) => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    let ranges = &merged[..];
    let full: Vec<String> = ranges.iter().map(|(a, b)| format!("{a}-{b}")).collect();
    let name = format!("shard{}", full.join("_"));
    if name.len() <= SHARD_NAME_MAX {
        return name;
    }
    let digest = crate::rdb::crc64::crc64(name.as_bytes()) as u32;
    let (first, last) = ranges[0];
    format!("shard{first}-{last}x{}-{digest:08x}", ranges.len())
}

/// The options of one shard's task.
fn shard_options(
    base: &SyncOptions,
    shard: &Shard,
    seeds: Vec<Endpoint>,
    from_replica: bool,
) -> SyncOptions {
    let mut slots = shard.ranges.clone();
    slots.sort_unstable();
    let name = shard_name(&slots);
    let mut options = base.clone();
    // Each shard's scan counts its own (a scanned cluster source: one scan per shard).
    options.scan_stats = Default::default();
    options.source = at(&base.source, &shard.host, shard.port);
    options.task_name = format!("{}-{name}", base.task_name);
    options.checkpoint_dir = PathBuf::from(&base.checkpoint_dir).join(&name);
    options.filter.source_slots = slots.clone();
    options.source_cluster = Some(SourceCluster {
        seeds,
        slots,
        from_replica,
    });
    options
}

impl SourceCluster {
    /// The nodes serving this shard's slots now, asked of the first seed that
    /// answers. A connection-class error when none answers (a failover may be under
    /// way: the task retries); a permanent one when the slots moved.
    pub async fn current_nodes(&self, options: &SyncOptions) -> Result<ShardNodes, SyncError> {
        let mut last_error = None;
        for seed in &self.seeds {
            let reply = async {
                let mut node =
                    Conn::connect_to("source", seed, discovery_connection(options)).await?;
                Ok::<_, SyncError>(node.query(&[b"CLUSTER".as_slice(), b"SLOTS"]).await?)
            }
            .await;
            let reply = match reply {
                Ok(reply) => reply,
                Err(err) => {
                    last_error = Some(err);
                    continue;
                }
            };
            let shards = parse_cluster_slots(&reply, &seed.host).map_err(cluster_error)?;
            let primary = self.primary_in(&shards, options)?;
            if !self.from_replica {
                return Ok(ShardNodes {
                    read: primary.clone(),
                    primary,
                });
            }
            let replica = online_replica_of(&primary, options).await?;
            let read = replica.unwrap_or_else(|| {
                tracing::warn!(%primary, "the shard has no replica to read from: reading its primary");
                primary.clone()
            });
            return Ok(ShardNodes { read, primary });
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
            return Err(SyncError::Resharded(format!(
                "the source cluster was resharded: this shard served slots {} and its primary {}:{} now serves {}; start the task again to follow the new layout (`lockstep sync` does so by itself: the shards whose slots changed are copied again, the others resume)",
                ranges_text(&self.slots),
                owner.host,
                owner.port,
                ranges_text(&ranges)
            )));
        }
        Ok(at(&options.source, &owner.host, owner.port))
    }
}

/// A replica of `primary` that is in sync with it, from the primary's own `INFO
/// replication` (`CLUSTER SLOTS` lists a replica only once the node asked has heard
/// by gossip that it holds data, and nodes disagree on that for a while).
async fn online_replica_of(
    primary: &Endpoint,
    options: &SyncOptions,
) -> Result<Option<Endpoint>, SyncError> {
    let mut node = Conn::connect_to("source", primary, discovery_connection(options)).await?;
    let info = node.query(&[b"INFO".as_slice(), b"replication"]).await?;
    let text = info
        .as_bytes()
        .map(String::from_utf8_lossy)
        .unwrap_or_default();
    // slave0:ip=10.0.0.5,port=6380,state=online,offset=...,lag=0 (port 0: a tool
    // such as lockstep itself, which listens nowhere).
    Ok(text.lines().find_map(|line| {
        let fields = line.strip_prefix("slave")?.split_once(':')?.1;
        let field = |name: &str| {
            fields
                .split(',')
                .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
        };
        let port: u16 = field("port")?.parse().ok().filter(|&p| p != 0)?;
        let ip = field("ip")?;
        (field("state")? == "online").then(|| at(primary, ip, port))
    }))
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
        for node in fields
            .iter()
            .skip(2)
            .filter_map(|n| node_address(n, seed_host))
        {
            if !nodes.contains(&node) {
                nodes.push(node);
            }
        }
    }
    nodes
}

/// The connection options of the slot-map queries: the source's, with short waits
/// (INFO and CLUSTER SLOTS answer at once; a node that does not is asked again, or
/// another node is).
fn discovery_connection(options: &SyncOptions) -> ApplyOptions {
    let wait = std::time::Duration::from_secs(5);
    let mut connection = options.source_connection();
    connection.connect_timeout = connection.connect_timeout.min(wait);
    connection.reply_timeout = connection.reply_timeout.min(wait);
    connection
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

#[cfg(test)]
mod tests {
    use super::{shard_name, SHARD_NAME_MAX};

    #[test]
    fn a_shard_is_named_by_its_slots_merged_and_abbreviated_when_long() {
        assert_eq!(shard_name(&[(0, 5460)]), "shard0-5460");
        assert_eq!(shard_name(&[(0, 99), (100, 5460)]), "shard0-5460");
        assert_eq!(
            shard_name(&[(0, 99), (101, 5460), (16000, 16000)]),
            "shard0-99_101-5460_16000-16000"
        );
        let scattered: Vec<(u16, u16)> = (0..40).map(|i| (i * 10, i * 10 + 1)).collect();
        let name = shard_name(&scattered);
        assert!(
            name.starts_with("shard0-1x40-") && name.len() <= SHARD_NAME_MAX,
            "{name}"
        );
        let mut other = scattered.clone();
        other[39].1 += 1;
        assert_ne!(shard_name(&other), name);
    }
}
