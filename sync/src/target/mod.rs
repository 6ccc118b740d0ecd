//! The target: where the sync writes, standalone or a Redis Cluster, behind one
//! type the engine holds.
//!
//! [`Target`] is an enum, not a trait: there are exactly two kinds of target, the
//! engine holds one for a whole session, and its calls are on the hot path (one
//! per command) where a `match` costs nothing while `dyn` async methods would box
//! every future. A third kind of target adds a variant here and nothing elsewhere.
//!
//! Underneath, [`Conn`] is a pipelined connection that knows nothing about
//! clusters: a standalone target is one, a cluster target one per primary behind
//! its router ([`cluster`]).
//!
//! Code map: `standalone.rs` (one connection, the checkpoint key in database 0),
//! `batch.rs` (the stream's commands grouped into target transactions, the
//! checkpoint-key protocol), `clear.rs` (removing what the filter's scope says),
//! `cluster/` (the router; its exactness bookkeeping is pure state there,
//! unit-tested and driven by a seeded simulation).
//!
//! Never: write anything the caller did not ask for except the target's own
//! bookkeeping (checkpoint keys, skip entries); count a position applied before
//! the target answered everything up to it.

pub mod batch;
mod clear;
pub mod cluster;
mod standalone;

pub use standalone::Standalone;

use std::time::Instant;

use crate::checkpoint::Checkpoint;
use crate::conn::{ApplyError, ApplyOptions, ClientIdentity, Conn, Position};
use crate::endpoint::Endpoint;
use crate::resp::Frame;
use cluster::cross_slot::SourceCopier;
use cluster::ClusterTarget;

/// A standalone target or a Redis Cluster target (see the module doc).
// One per session: the standalone connection stays inline (no pointer to follow
// per command); the router is boxed.
#[allow(clippy::large_enum_variant)]
pub enum Target {
    Standalone(Standalone),
    Cluster(Box<ClusterTarget>),
}

impl Target {
    /// Connects to the target; when it is a cluster node, to every primary of its
    /// cluster, routing by slot. `checkpoint_key` is the task's checkpoint key name,
    /// which a cluster target gives a hash tag per slot.
    pub async fn connect(
        endpoint: &Endpoint,
        options: ApplyOptions,
        checkpoint_key: &[u8],
    ) -> Result<Target, ApplyError> {
        let mut conn = Conn::connect(endpoint, options.clone()).await?;
        if !cluster::is_cluster_node(&mut conn).await? {
            return Ok(Target::Standalone(Standalone::new(conn, checkpoint_key)));
        }
        let router = ClusterTarget::connect(conn, endpoint, options, checkpoint_key).await?;
        Ok(Target::Cluster(Box::new(router)))
    }

    /// Whether the target is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Target::Cluster(_))
    }

    /// The identities of the target's connections (a cluster target's primaries).
    pub fn identities(&self) -> Vec<ClientIdentity> {
        match self {
            Target::Standalone(s) => s.conn.identity().cloned().into_iter().collect(),
            Target::Cluster(cluster) => cluster.identities(),
        }
    }

    /// Closes the connections of an earlier session (see [`Conn::fence`]) on every
    /// node this target writes to.
    pub async fn fence(&mut self, old: &[ClientIdentity]) -> Result<(), ApplyError> {
        for node in self.nodes_mut() {
            node.fence(old).await?;
        }
        Ok(())
    }

    /// Every connection that writes: the standalone one, or each primary's.
    pub(crate) fn nodes_mut(&mut self) -> Vec<&mut Conn> {
        match self {
            Target::Standalone(s) => vec![&mut s.conn],
            Target::Cluster(cluster) => cluster.primaries_mut(),
        }
    }

    /// Tells a cluster target the stream offset after the command about to be
    /// written and the source database it runs in (it skips, per slot, what that
    /// slot's checkpoint already holds, and copies keys from that database).
    /// Nothing for a standalone target.
    pub fn set_stream_position(&mut self, offset: i64, source_db: u32) {
        if let Target::Cluster(cluster) = self {
            cluster.set_stream_position(offset, source_db);
        }
    }

    /// Lets a cluster target apply cross-slot commands by copying their keys from
    /// the source (see [`cluster::cross_slot`]); skip entries go to `skip_key`'s
    /// per-slot hashes. Nothing for a standalone target.
    pub fn copy_cross_slot_from(&mut self, copier: SourceCopier, skip_key: &[u8]) {
        if let Target::Cluster(cluster) = self {
            cluster.copy_cross_slot_from(copier, skip_key);
        }
    }

    /// Opens a target transaction. The policy is the target's own: a standalone
    /// target holds the new transaction back until the last one is answered (a
    /// refused transaction is never followed by one that went through); a cluster
    /// target drains first (its transactions are per slot, one per slot between
    /// drains).
    pub async fn begin(&mut self) -> Result<(), ApplyError> {
        match self {
            Target::Standalone(s) => s.begin().await,
            Target::Cluster(cluster) => {
                cluster.drain().await?;
                cluster.begin();
                Ok(())
            }
        }
    }

    /// Selects target database `db` for the commands that follow.
    pub async fn select(&mut self, db: u32) -> Result<(), ApplyError> {
        match self {
            Target::Standalone(s) => s.select(db).await,
            Target::Cluster(cluster) => {
                cluster.select(db);
                Ok(())
            }
        }
    }

    /// Writes one command (inside the open transaction, if any). Waits for replies
    /// when too many commands are unanswered.
    pub async fn write<A: AsRef<[u8]>>(&mut self, argv: &[A]) -> Result<(), ApplyError> {
        match self {
            Target::Standalone(s) => s.conn.push(argv, None).await,
            Target::Cluster(cluster) => cluster.write(argv).await,
        }
    }

    /// Commits the open transaction at stream position `at`, with `checkpoint`
    /// recorded inside it (none when the stream has no replication id: SYNC).
    pub async fn commit(
        &mut self,
        checkpoint: Option<&Checkpoint>,
        at: Position,
    ) -> Result<(), ApplyError> {
        match self {
            Target::Standalone(s) => s.commit(checkpoint, at).await,
            Target::Cluster(cluster) => cluster.commit(checkpoint, at).await,
        }
    }

    /// Drops the open transaction.
    pub async fn discard(&mut self) -> Result<(), ApplyError> {
        match self {
            Target::Standalone(s) => s.discard().await,
            Target::Cluster(cluster) => {
                cluster.discard();
                Ok(())
            }
        }
    }

    /// Records `checkpoint` outside the stream (after a full copy: every slot of a
    /// cluster starts from it) and waits until it is written. Leaves database 0
    /// selected.
    pub async fn record_checkpoint(&mut self, checkpoint: &Checkpoint) -> Result<(), ApplyError> {
        match self {
            Target::Standalone(s) => s.record_checkpoint(checkpoint).await,
            Target::Cluster(cluster) => cluster.record_checkpoint(checkpoint).await,
        }
    }

    /// The checkpoint the target holds (a cluster's lowest slot checkpoint), if
    /// any. A value that is not a checkpoint, or an error reply, is an error,
    /// never "no checkpoint". Leaves database 0 selected.
    pub async fn read_checkpoint(&mut self, key: &[u8]) -> Result<Option<Checkpoint>, ApplyError> {
        let value = match self {
            Target::Standalone(s) => s.read_checkpoint().await?,
            Target::Cluster(cluster) => cluster.read_checkpoint().await?,
        };
        match value {
            None => Ok(None),
            Some(bytes) => Ok(Some(Checkpoint::parse_target_value(key, &bytes)?)),
        }
    }

    /// Whether commands are held back waiting for replies.
    pub fn is_holding(&self) -> bool {
        match self {
            Target::Standalone(s) => s.conn.is_holding(),
            Target::Cluster(_) => false,
        }
    }

    /// Completes when replies have arrived for [`Target::poll_replies`] to read
    /// (cancel-safe, for `select!`); never for a target that holds nothing back.
    pub async fn replies_arrived(&mut self) -> Result<(), ApplyError> {
        match self {
            Target::Standalone(s) => s.conn.replies_arrived().await,
            Target::Cluster(_) => std::future::pending().await,
        }
    }

    /// Marks `position` as reached once everything queued so far is answered.
    pub fn mark_position(&mut self, position: Position) {
        match self {
            Target::Standalone(s) => s.conn.mark_position(position),
            Target::Cluster(cluster) => cluster.mark_position(position),
        }
    }

    /// Writes what is buffered.
    pub async fn flush(&mut self) -> Result<(), ApplyError> {
        match self {
            Target::Standalone(s) => s.conn.flush().await,
            Target::Cluster(cluster) => cluster.flush().await,
        }
    }

    /// Fails when commands have waited `reply_timeout` with no byte from the target.
    pub fn check_answering(&self) -> Result<(), ApplyError> {
        match self {
            Target::Standalone(s) => s.conn.check_answering(),
            Target::Cluster(cluster) => cluster.check_answering(),
        }
    }

    /// When a read last brought bytes from the target (the latest over a cluster's
    /// primaries); `None` before any.
    pub fn last_reply_at(&self) -> Option<Instant> {
        match self {
            Target::Standalone(s) => s.conn.last_reply_at(),
            Target::Cluster(cluster) => cluster.last_reply_at(),
        }
    }

    /// Reads the replies that have already arrived, without waiting.
    pub async fn poll_replies(&mut self) -> Result<(), ApplyError> {
        match self {
            Target::Standalone(s) => s.conn.poll_replies().await,
            Target::Cluster(cluster) => cluster.poll_replies().await,
        }
    }

    /// Flushes and waits until everything queued is answered.
    pub async fn drain(&mut self) -> Result<(), ApplyError> {
        match self {
            Target::Standalone(s) => s.conn.drain().await,
            Target::Cluster(cluster) => cluster.drain().await,
        }
    }

    /// Position of the last command (or marked entry) the target has answered.
    pub fn applied(&self) -> Option<Position> {
        match self {
            Target::Standalone(s) => s.conn.applied(),
            Target::Cluster(cluster) => cluster.applied(),
        }
    }

    /// Commands answered since the start.
    pub fn applied_commands(&self) -> u64 {
        match self {
            Target::Standalone(s) => s.conn.applied_commands(),
            Target::Cluster(cluster) => cluster.applied_commands(),
        }
    }

    /// Commands sent (or queued) and not yet answered.
    pub fn in_flight(&self) -> usize {
        match self {
            Target::Standalone(s) => s.conn.in_flight(),
            Target::Cluster(cluster) => cluster.in_flight(),
        }
    }

    /// Sends one command and returns its reply (INFO, TYPE...), after everything
    /// queued before it.
    pub async fn query<A: AsRef<[u8]>>(&mut self, argv: &[A]) -> Result<Frame, ApplyError> {
        match self {
            Target::Standalone(s) => s.conn.query(argv).await,
            Target::Cluster(cluster) => cluster.query(argv).await,
        }
    }
}
