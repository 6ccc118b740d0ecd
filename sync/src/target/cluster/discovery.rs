//! Finding the target cluster and following its changes: whether a node is a
//! cluster node, the slot map at start, connecting to primaries the cluster names
//! later (an ASK, a new slot map), and reading the map again after MOVED, where a
//! slot's old owner that is no longer a primary means a failover (the session
//! ends: what that node answered may be lost).
//!
//! Never: send a unit; take a failover for a migration.

use std::time::Instant;

use crate::conn::{ApplyError, ApplyOptions, Conn};
use crate::endpoint::Endpoint;
use crate::resp::Frame;
use crate::slots::{parse_cluster_slots, slot_owners, slot_tagged_keys, SLOTS};

use super::cross_slot::Skips;
use super::primary::Primary;
use super::skips::SkipEntries;
use super::slot_state::{DrainEpoch, OpenTransaction, SlotPositions, StreamCursor};
use super::ClusterTarget;

impl ClusterTarget {
    /// Reads the slot map through `entry` (a connection to any node of the cluster,
    /// kept open as today's sessions keep it) and connects to every primary.
    /// `checkpoint_key` is the task's checkpoint key name, which the router gives a
    /// hash tag per slot.
    pub(crate) async fn connect(
        mut entry: Conn,
        endpoint: &Endpoint,
        options: ApplyOptions,
        checkpoint_key: &[u8],
    ) -> Result<ClusterTarget, ApplyError> {
        let slots = entry.query(&[b"CLUSTER".as_slice(), b"SLOTS"]).await?;
        let shards = parse_cluster_slots(&slots, &endpoint.host).map_err(ApplyError::Cluster)?;
        let owners = slot_owners(&shards).map_err(ApplyError::Cluster)?;
        let mut primaries = Vec::with_capacity(shards.len());
        for shard in &shards {
            primaries.push(Primary::connect(endpoint, &options, &shard.host, shard.port).await?);
        }
        tracing::info!(
            primaries = primaries.len(),
            "the target is a Redis Cluster: routing by hash slot"
        );
        Ok(ClusterTarget {
            entry,
            shards: primaries,
            owners,
            seed: endpoint.clone(),
            options,
            slot_keys: slot_tagged_keys(checkpoint_key),
            positions: SlotPositions::default(),
            cursor: StreamCursor::default(),
            open: OpenTransaction::default(),
            epoch: DrainEpoch::default(),
            db: 0,
            last_value: None,
            last_refresh: Instant::now(),
            next_unit: 0,
            failed: Vec::new(),
            copier: None,
            skips: Skips::default(),
            skip_keys: Vec::new(),
            skip_entries: SkipEntries::default(),
        })
    }

    /// The index of the primary at `host:port`, connected now if it is new.
    pub(super) async fn shard_at(&mut self, host: &str, port: u16) -> Result<usize, ApplyError> {
        let host = if host.is_empty() || host == "?" {
            self.seed.host.clone()
        } else {
            host.to_owned()
        };
        if let Some(index) = self
            .shards
            .iter()
            .position(|p| p.host == host && p.port == port)
        {
            return Ok(index);
        }
        // Boxed: connecting pushes AUTH through a writer, which may route here.
        let primary = Box::pin(Primary::connect(&self.seed, &self.options, &host, port)).await?;
        tracing::info!(node = %format!("{host}:{port}"), "a new primary of the target cluster");
        self.shards.push(primary);
        Ok(self.shards.len() - 1)
    }

    /// Reads the slot map again (after MOVED: a slot finished migrating). A slot
    /// whose old owner is no longer a primary means a failover: what that node
    /// answered may not have reached the node that took over, so the session ends
    /// and the next one resumes from the slots' checkpoints.
    pub(super) async fn reload_slot_map(&mut self, because: &str) -> Result<(), ApplyError> {
        let mut reply = None;
        for primary in &mut self.shards {
            if let Ok(frame) = primary
                .writer
                .query(&[b"CLUSTER".as_slice(), b"SLOTS"])
                .await
            {
                if matches!(frame, Frame::Array(_)) {
                    reply = Some(frame);
                    break;
                }
            }
        }
        let changing = |detail: String| ApplyError::Redirected {
            endpoint: "target cluster".to_owned(),
            command: "CLUSTER SLOTS".to_owned(),
            reply: format!("{because} ({detail})"),
        };
        let reply =
            reply.ok_or_else(|| changing("no primary answered CLUSTER SLOTS".to_owned()))?;
        let map = parse_cluster_slots(&reply, &self.seed.host).map_err(ApplyError::Cluster)?;
        let map_owners = slot_owners(&map).map_err(&changing)?;
        let mut owners = Vec::with_capacity(SLOTS);
        let mut indices = Vec::with_capacity(map.len());
        for shard in &map {
            indices.push(self.shard_at(&shard.host, shard.port).await?);
        }
        for owner in map_owners {
            owners.push(indices[usize::from(owner)] as u16);
        }
        let mut losers: Vec<u16> = self
            .owners
            .iter()
            .zip(&owners)
            .filter(|(old, new)| old != new)
            .map(|(old, _)| *old)
            .collect();
        losers.sort_unstable();
        losers.dedup();
        for loser in losers {
            let primary = &mut self.shards[usize::from(loser)];
            let role = primary.writer.query(&[b"ROLE".as_slice()]).await;
            let still_primary = match &role {
                Ok(Frame::Array(items)) => items
                    .first()
                    .and_then(Frame::as_bytes)
                    .is_some_and(|r| r == b"master"),
                _ => false,
            };
            if !still_primary {
                return Err(changing(format!(
                    "{}:{} is no longer a primary: a failover",
                    primary.host, primary.port
                )));
            }
        }
        self.owners = owners;
        Ok(())
    }
}
