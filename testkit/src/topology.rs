//! Topologies of real servers: a primary with replicas ([`ReplicaSet`]) and Redis
//! Cluster ([`Cluster`]). A standalone server is a plain [`RedisServer`].
//!
//! Each topology is up only when it has converged, measured on the servers: replicas
//! have `master_link_status:up` and the primary's offset; cluster nodes all report
//! `cluster_state:ok` and agree on who serves which slots. Faults that change the
//! roles (failovers) are methods here because they must leave the topology converged.
//!
//! It must never hand a test a topology that has not converged, nor call a failover
//! done before the servers say so.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use redis::aio::MultiplexedConnection;

use crate::info;
use crate::server::{RedisServer, ServerConfig};

/// How long a topology may take to converge.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);
/// Redis Cluster's number of hash slots.
pub const SLOT_COUNT: u16 = 16384;

/// The shortest hash tag `m<n>` whose keys fall in `slot`: for tests that need
/// keys in one given slot (write `{<tag>}:anything`).
pub fn tag_for_slot(slot: u16) -> String {
    (0u32..)
        .map(|n| format!("m{n}"))
        .find(|tag| key_slot(tag.as_bytes()) == slot)
        .unwrap_or_default()
}

/// The hash slot of `key`, as `CLUSTER KEYSLOT` computes it: CRC16 (XMODEM) modulo
/// 16384 of the key, or of its hash tag when it has one (the bytes between the first
/// `{` and the first `}` after it, when there are any).
pub fn key_slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    crc16_xmodem(hashed) % SLOT_COUNT
}

/// CRC16-CCITT in the XMODEM variant (polynomial 0x1021, initial value 0), the
/// checksum Redis Cluster hashes keys with.
fn crc16_xmodem(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Polls `check` until it returns `Ok(true)`, or fails after `timeout` with the last
/// reason it gave.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Result<(), String>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check().await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(reason)) => reason,
            Err(err) => format!("{err:#}"),
        };
        if Instant::now() > deadline {
            bail!("{what}: not reached within {timeout:?}; last state: {last}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A primary and its replicas. `servers[primary]` is the primary; failovers move it.
#[derive(Debug)]
pub struct ReplicaSet {
    pub servers: Vec<RedisServer>,
    primary: usize,
}

impl ReplicaSet {
    /// Starts a primary from `config` and `replicas` replicas of it (same version,
    /// auth, TLS and extra config), and waits until they are in sync.
    pub async fn start(config: ServerConfig, replicas: usize) -> anyhow::Result<ReplicaSet> {
        let primary = RedisServer::start(config.clone()).await?;
        let primary_addr = primary.addr();
        let mut servers = vec![primary];
        for _ in 0..replicas {
            servers.push(RedisServer::start(config.clone().replica_of(primary_addr)).await?);
        }
        let set = ReplicaSet {
            servers,
            primary: 0,
        };
        set.wait_in_sync().await?;
        Ok(set)
    }

    pub fn primary(&self) -> &RedisServer {
        &self.servers[self.primary]
    }

    pub fn primary_index(&self) -> usize {
        self.primary
    }

    /// The replicas, in server order.
    pub fn replicas(&self) -> impl Iterator<Item = &RedisServer> {
        let primary = self.primary;
        self.servers
            .iter()
            .enumerate()
            .filter(move |(i, _)| *i != primary)
            .map(|(_, s)| s)
    }

    /// Waits until every replica's link is up and it has received everything the
    /// primary had when this was called: a `PUBLISH` is sent once the links are up
    /// (it changes no data; lockstep drops it), and every replica's offset must reach
    /// the primary's offset after it. Comparing offsets alone was not enough: right
    /// after a snapshot both sides stood at the same offset while the primary still
    /// held the stream for the replica's first ACK (up to a second after a diskless
    /// sync), and a replica promoted then came up without the writes that followed.
    pub async fn wait_in_sync(&self) -> anyhow::Result<()> {
        wait_until(
            "replicas linked to the primary",
            CONVERGE_TIMEOUT,
            || async {
                let primary = self.primary().info("replication").await?;
                let connected = primary.int("connected_slaves")?;
                let expected = self.servers.len() as i64 - 1;
                // At least the set's own: a lockstep sync is a replica too.
                if connected < expected {
                    return Ok(Err(format!(
                        "primary has {connected} of {expected} replicas connected"
                    )));
                }
                for replica in self.replicas() {
                    let info = replica.info("replication").await?;
                    if info.get("master_link_status") != Some("up") {
                        return Ok(Err(format!(
                            "replica {} link is {:?}",
                            replica.addr(),
                            info.get("master_link_status")
                        )));
                    }
                }
                Ok(Ok(()))
            },
        )
        .await?;
        let mut primary = self.primary().client().await?;
        redis::cmd("PUBLISH")
            .arg("__testkit:in-sync__")
            .arg("1")
            .query_async::<()>(&mut primary)
            .await?;
        let target = self
            .primary()
            .info("replication")
            .await?
            .int("master_repl_offset")?;
        wait_until(
            "replicas in sync with the primary",
            CONVERGE_TIMEOUT,
            || async {
                for replica in self.replicas() {
                    let info = replica.info("replication").await?;
                    let offset = info.int("slave_repl_offset")?;
                    if info.get("master_link_status") != Some("up") || offset < target {
                        return Ok(Err(format!(
                            "replica {} at offset {offset} (link {:?}), primary at {target}",
                            replica.addr(),
                            info.get("master_link_status")
                        )));
                    }
                }
                Ok(Ok(()))
            },
        )
        .await
    }

    /// Fails over to `servers[new_primary]`: `REPLICAOF NO ONE` on it, then every
    /// other server (the old primary included) replicates from it. Waits until in sync.
    pub async fn failover_to(&mut self, new_primary: usize) -> anyhow::Result<()> {
        if new_primary >= self.servers.len() {
            bail!(
                "failover_to({new_primary}): the set has {} servers",
                self.servers.len()
            );
        }
        let mut conn = self.servers[new_primary].client().await?;
        redis::cmd("REPLICAOF")
            .arg("NO")
            .arg("ONE")
            .query_async::<()>(&mut conn)
            .await?;
        let addr = self.servers[new_primary].addr();
        for (i, server) in self.servers.iter().enumerate() {
            if i == new_primary {
                continue;
            }
            let mut conn = server.client().await?;
            redis::cmd("REPLICAOF")
                .arg(addr.ip().to_string())
                .arg(addr.port())
                .query_async::<()>(&mut conn)
                .await
                .with_context(|| {
                    format!("re-pointing {} to the new primary {addr}", server.addr())
                })?;
        }
        self.primary = new_primary;
        self.wait_in_sync().await
    }
}

/// Shape of a Redis Cluster to start.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// Version, auth, TLS and extra config of every node (cluster mode is switched on).
    pub node: ServerConfig,
    pub primaries: usize,
    pub replicas_per_primary: usize,
}

impl ClusterSpec {
    pub fn new(node: ServerConfig, primaries: usize, replicas_per_primary: usize) -> ClusterSpec {
        ClusterSpec {
            node,
            primaries,
            replicas_per_primary,
        }
    }
}

/// One node as `CLUSTER NODES` describes it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct NodeView {
    pub id: String,
    pub port: u16,
    pub is_primary: bool,
    pub failed: bool,
    /// The primary's id, for a replica.
    pub primary_id: Option<String>,
    /// Slot ranges served, inclusive.
    pub slots: Vec<(u16, u16)>,
}

/// Parses a `CLUSTER NODES` answer (one node per line).
pub fn parse_cluster_nodes(text: &str) -> anyhow::Result<Vec<NodeView>> {
    let mut nodes = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 8 {
            bail!(
                "CLUSTER NODES line has {} fields, expected at least 8: {line}",
                fields.len()
            );
        }
        let addr = fields[1].split(['@', ',']).next().unwrap_or_default();
        let port = addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .with_context(|| format!("no port in CLUSTER NODES address {:?}", fields[1]))?;
        let flags: Vec<&str> = fields[2].split(',').collect();
        let mut slots = Vec::new();
        for item in &fields[8..] {
            if item.starts_with('[') {
                continue; // a slot being imported or migrated
            }
            let (start, end) = item.split_once('-').unwrap_or((item, item));
            slots.push((start.parse()?, end.parse()?));
        }
        nodes.push(NodeView {
            id: fields[0].to_owned(),
            port,
            is_primary: flags.contains(&"master"),
            failed: flags.contains(&"fail") || flags.contains(&"fail?"),
            primary_id: (fields[3] != "-").then(|| fields[3].to_owned()),
            slots,
        });
    }
    nodes.sort();
    Ok(nodes)
}

/// A running Redis Cluster.
#[derive(Debug)]
pub struct Cluster {
    pub nodes: Vec<RedisServer>,
    spec: ClusterSpec,
}

impl Cluster {
    /// Starts `primaries` x (1 + `replicas_per_primary`) nodes, assigns the slots in
    /// even ranges, joins them with CLUSTER MEET, attaches the replicas with CLUSTER
    /// REPLICATE, and waits for `cluster_state:ok` with every node agreeing.
    pub async fn start(spec: ClusterSpec) -> anyhow::Result<Cluster> {
        if spec.primaries == 0 {
            bail!("a cluster needs at least one primary");
        }
        let node_config = spec.node.clone().cluster(true);
        let total = spec.primaries * (1 + spec.replicas_per_primary);
        let mut nodes = Vec::with_capacity(total);
        for _ in 0..total {
            nodes.push(RedisServer::start(node_config.clone()).await?);
        }
        let cluster = Cluster { nodes, spec };
        cluster.assign_slots().await?;
        cluster.meet_all().await?;
        cluster.attach_replicas().await?;
        cluster.wait_converged().await?;
        Ok(cluster)
    }

    /// The slot range primary `i` of `primaries` is given at start.
    pub fn initial_slot_range(i: usize, primaries: usize) -> (u16, u16) {
        let per = SLOT_COUNT as usize / primaries;
        let start = i * per;
        let end = if i + 1 == primaries {
            SLOT_COUNT as usize - 1
        } else {
            (i + 1) * per - 1
        };
        (start as u16, end as u16)
    }

    async fn assign_slots(&self) -> anyhow::Result<()> {
        for i in 0..self.spec.primaries {
            let (start, end) = Self::initial_slot_range(i, self.spec.primaries);
            let node = &self.nodes[i];
            let mut conn = node.client().await?;
            let mut cmd = redis::cmd("CLUSTER");
            if node.version().has_addslotsrange() {
                cmd.arg("ADDSLOTSRANGE").arg(start).arg(end);
            } else {
                cmd.arg("ADDSLOTS");
                for slot in start..=end {
                    cmd.arg(slot);
                }
            }
            cmd.query_async::<()>(&mut conn)
                .await
                .with_context(|| format!("assigning slots {start}-{end} to {}", node.addr()))?;
            // Distinct epochs make the first configuration converge without collisions.
            redis::cmd("CLUSTER")
                .arg("SET-CONFIG-EPOCH")
                .arg(i + 1)
                .query_async::<()>(&mut conn)
                .await
                .context("CLUSTER SET-CONFIG-EPOCH")?;
        }
        Ok(())
    }

    async fn meet_all(&self) -> anyhow::Result<()> {
        let first = self.nodes[0].addr();
        for node in &self.nodes[1..] {
            let mut conn = node.client().await?;
            redis::cmd("CLUSTER")
                .arg("MEET")
                .arg(first.ip().to_string())
                .arg(first.port())
                .query_async::<()>(&mut conn)
                .await
                .with_context(|| format!("CLUSTER MEET from {}", node.addr()))?;
        }
        let total = self.nodes.len();
        wait_until(
            "every cluster node knows every other",
            CONVERGE_TIMEOUT,
            || async {
                for node in &self.nodes {
                    let known = self.node_views(node).await?.len();
                    if known != total {
                        return Ok(Err(format!(
                            "{} knows {known} of {total} nodes",
                            node.addr()
                        )));
                    }
                }
                Ok(Ok(()))
            },
        )
        .await
    }

    async fn attach_replicas(&self) -> anyhow::Result<()> {
        let per = self.spec.replicas_per_primary;
        for p in 0..self.spec.primaries {
            let primary_id = self.node_id(&self.nodes[p]).await?;
            for r in 0..per {
                let replica = &self.nodes[self.spec.primaries + p * per + r];
                let mut conn = replica.client().await?;
                redis::cmd("CLUSTER")
                    .arg("REPLICATE")
                    .arg(&primary_id)
                    .query_async::<()>(&mut conn)
                    .await
                    .with_context(|| format!("CLUSTER REPLICATE on {}", replica.addr()))?;
            }
        }
        Ok(())
    }

    /// Waits until every node says `cluster_state:ok`, all nodes describe the same
    /// roles and slot ranges, every slot is served, and replicas' links are up.
    pub async fn wait_converged(&self) -> anyhow::Result<()> {
        wait_until("cluster converged", CONVERGE_TIMEOUT, || async {
            let mut first_view: Option<Vec<NodeView>> = None;
            for node in &self.nodes {
                let mut conn = node.client().await?;
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query_async(&mut conn)
                    .await?;
                if !info.contains("cluster_state:ok") {
                    return Ok(Err(format!("{} is not cluster_state:ok", node.addr())));
                }
                let view = self.node_views(node).await?;
                if view.iter().any(|n| n.failed) {
                    return Ok(Err(format!(
                        "{} still flags a node as failing",
                        node.addr()
                    )));
                }
                match &first_view {
                    None => first_view = Some(view),
                    Some(first) if *first != view => {
                        return Ok(Err(format!(
                            "{} disagrees on the cluster layout",
                            node.addr()
                        )))
                    }
                    Some(_) => {}
                }
                let replication = info::info(&mut conn, "replication").await?;
                if replication.get("role") == Some("slave")
                    && replication.get("master_link_status") != Some("up")
                {
                    return Ok(Err(format!("replica {} link is not up", node.addr())));
                }
            }
            let view = first_view.unwrap_or_default();
            let served: u32 = view
                .iter()
                .flat_map(|n| &n.slots)
                .map(|(a, b)| u32::from(b - a) + 1)
                .sum();
            if served != u32::from(SLOT_COUNT) {
                return Ok(Err(format!("{served} of {SLOT_COUNT} slots served")));
            }
            let replicas = view.iter().filter(|n| !n.is_primary).count();
            if replicas != self.spec.primaries * self.spec.replicas_per_primary {
                return Ok(Err(format!("{replicas} replicas attached")));
            }
            Ok(Ok(()))
        })
        .await
    }

    /// `CLUSTER NODES` as seen from `node`, parsed and sorted.
    pub async fn node_views(&self, node: &RedisServer) -> anyhow::Result<Vec<NodeView>> {
        let mut conn = node.client().await?;
        let text: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut conn)
            .await?;
        parse_cluster_nodes(&text)
    }

    /// The node's cluster id (`CLUSTER MYID`).
    pub async fn node_id(&self, node: &RedisServer) -> anyhow::Result<String> {
        let mut conn = node.client().await?;
        Ok(redis::cmd("CLUSTER")
            .arg("MYID")
            .query_async(&mut conn)
            .await?)
    }

    /// The servers that are primaries now (asked of the servers, not remembered).
    pub async fn primaries(&self) -> anyhow::Result<Vec<&RedisServer>> {
        let mut out = Vec::new();
        for node in &self.nodes {
            if node.info("replication").await?.get("role") == Some("master") {
                out.push(node);
            }
        }
        Ok(out)
    }

    /// The servers that are replicas now.
    pub async fn replicas(&self) -> anyhow::Result<Vec<&RedisServer>> {
        let mut out = Vec::new();
        for node in &self.nodes {
            if node.info("replication").await?.get("role") == Some("slave") {
                out.push(node);
            }
        }
        Ok(out)
    }

    /// Seed URLs of every node, for a cluster client.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// A cluster-aware redis-rs connection (follows MOVED/ASK).
    pub async fn cluster_client(&self) -> anyhow::Result<redis::cluster_async::ClusterConnection> {
        let mut builder = redis::cluster::ClusterClientBuilder::new(self.urls())
            .response_timeout(crate::server::CLIENT_RESPONSE_TIMEOUT)
            .connection_timeout(crate::server::CLIENT_RESPONSE_TIMEOUT);
        if let Some(tls) = &self.spec.node.tls {
            builder = builder.certs(redis::TlsCertificates {
                client_tls: Some(redis::ClientTlsConfig {
                    client_cert: tls.client_cert_pem.clone().into_bytes(),
                    client_key: tls.client_key_pem.clone().into_bytes(),
                }),
                root_cert: Some(tls.ca_pem.clone().into_bytes()),
            });
        }
        let client = builder.build().context("building a cluster client")?;
        client
            .get_async_connection()
            .await
            .context("connecting to the cluster")
    }

    /// Asks `nodes[replica]` to take over its primary's slots: `CLUSTER FAILOVER`
    /// with `mode` ("" for the coordinated default, "FORCE" or "TAKEOVER"), then waits
    /// until it is a primary and the cluster has converged again.
    pub async fn failover(&self, replica: usize, mode: FailoverMode) -> anyhow::Result<()> {
        let node = self
            .nodes
            .get(replica)
            .with_context(|| format!("no node {replica}"))?;
        let mut conn = node.client().await?;
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("FAILOVER");
        match mode {
            FailoverMode::Coordinated => {}
            FailoverMode::Force => {
                cmd.arg("FORCE");
            }
            FailoverMode::Takeover => {
                cmd.arg("TAKEOVER");
            }
        }
        cmd.query_async::<()>(&mut conn)
            .await
            .with_context(|| format!("CLUSTER FAILOVER {mode:?} on {}", node.addr()))?;
        wait_until(
            "failed-over replica became a primary",
            CONVERGE_TIMEOUT,
            || async {
                let role = node.info("replication").await?;
                Ok(if role.get("role") == Some("master") {
                    Ok(())
                } else {
                    Err(format!("role is {:?}", role.get("role")))
                })
            },
        )
        .await?;
        self.wait_converged().await
    }

    /// The node that serves `slot` now.
    pub async fn node_for_slot(&self, slot: u16) -> anyhow::Result<&RedisServer> {
        let view = self.node_views(&self.nodes[0]).await?;
        let owner = view
            .iter()
            .find(|n| n.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot)))
            .with_context(|| format!("no node serves slot {slot}"))?;
        self.nodes
            .iter()
            .find(|n| n.port() == owner.port)
            .with_context(|| format!("slot {slot}'s owner port {} is not ours", owner.port))
    }

    /// Counts keys on every primary, keyed by port.
    pub async fn key_counts(&self) -> anyhow::Result<BTreeMap<u16, i64>> {
        let mut out = BTreeMap::new();
        for node in self.primaries().await? {
            let mut conn: MultiplexedConnection = node.client().await?;
            out.insert(
                node.port(),
                redis::cmd("DBSIZE").query_async(&mut conn).await?,
            );
        }
        Ok(out)
    }
}

/// The flavours of `CLUSTER FAILOVER`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailoverMode {
    /// Coordinated with the primary: no write is lost. Needs the primary up.
    Coordinated,
    /// Without the primary's agreement, but with the other primaries' votes.
    Force,
    /// Without any agreement: the replica bumps its epoch and takes the slots.
    Takeover,
}

/// A slot moving from its primary to another one, step by step the way redis-cli
/// does it: IMPORTING/MIGRATING ([`SlotMigration::begin`]), MIGRATE of its keys
/// ([`SlotMigration::migrate`], or all that are left by [`SlotMigration::finish`]),
/// SETSLOT NODE on every primary. Between the steps the slot is half-moved: its
/// old owner answers ASK for keys it no longer has, TRYAGAIN for multi-key
/// commands over both.
pub struct SlotMigration<'a> {
    cluster: &'a Cluster,
    slot: u16,
    from: MultiplexedConnection,
    to: &'a RedisServer,
    to_id: String,
}

impl<'a> SlotMigration<'a> {
    /// Marks `slot` as leaving its primary for another one.
    pub async fn begin(cluster: &'a Cluster, slot: u16) -> anyhow::Result<SlotMigration<'a>> {
        let from = cluster.node_for_slot(slot).await?;
        let primaries = cluster.primaries().await?;
        let to = *primaries
            .iter()
            .find(|n| n.port() != from.port())
            .ok_or_else(|| anyhow::anyhow!("no other primary"))?;
        let (from_id, to_id) = (cluster.node_id(from).await?, cluster.node_id(to).await?);
        let (a, mut b) = (from.client().await?, to.client().await?);
        let moving = SlotMigration {
            cluster,
            slot,
            from: a,
            to,
            to_id,
        };
        moving
            .setslot("IMPORTING", &from_id)
            .query_async::<()>(&mut b)
            .await?;
        let mut a = moving.from.clone();
        let to_id = moving.to_id.clone();
        moving
            .setslot("MIGRATING", &to_id)
            .query_async::<()>(&mut a)
            .await?;
        Ok(moving)
    }

    fn setslot(&self, state: &str, id: &str) -> redis::Cmd {
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("SETSLOT").arg(self.slot).arg(state).arg(id);
        cmd
    }

    /// The keys of the slot still on the old primary, at most `count`.
    pub async fn keys_left(&mut self, count: usize) -> anyhow::Result<Vec<Vec<u8>>> {
        Ok(redis::cmd("CLUSTER")
            .arg("GETKEYSINSLOT")
            .arg(self.slot)
            .arg(count)
            .query_async(&mut self.from)
            .await?)
    }

    pub async fn migrate(&mut self, keys: &[Vec<u8>]) -> anyhow::Result<()> {
        redis::cmd("MIGRATE")
            .arg("127.0.0.1")
            .arg(self.to.port())
            .arg("")
            .arg(0)
            .arg(5000)
            .arg("REPLACE")
            .arg("KEYS")
            .arg(keys)
            .query_async::<()>(&mut self.from)
            .await?;
        Ok(())
    }

    /// Migrates every key left, 10 at a time with `pause` between batches, then
    /// gives the slot to the new primary and waits until the cluster agrees.
    /// Returns how many keys moved.
    pub async fn finish(mut self, pause: Duration) -> anyhow::Result<usize> {
        let mut moved = 0;
        loop {
            let keys = self.keys_left(10).await?;
            if keys.is_empty() {
                break;
            }
            moved += keys.len();
            self.migrate(&keys).await?;
            tokio::time::sleep(pause).await;
        }
        for node in self.cluster.primaries().await? {
            let mut conn = node.client().await?;
            self.setslot("NODE", &self.to_id)
                .query_async::<()>(&mut conn)
                .await?;
        }
        self.cluster.wait_converged().await?;
        Ok(moved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_is_the_xmodem_variant() {
        // The check value of CRC-16/XMODEM, and the example of the cluster spec.
        assert_eq!(crc16_xmodem(b"123456789"), 0x31C3);
    }

    #[test]
    fn hash_tags_follow_the_cluster_spec() {
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(
            key_slot(b"foo{}{bar}"),
            crc16_xmodem(b"foo{}{bar}") % SLOT_COUNT
        );
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
        assert_eq!(key_slot(b"{"), crc16_xmodem(b"{") % SLOT_COUNT);
    }
}
