//! A Redis Cluster as the target: commands routed by hash slot to one pipelined
//! connection per primary, with an exact checkpoint per slot.
//!
//! A cluster is recognised from the URL of any of its nodes (`INFO cluster` says
//! `cluster_enabled:1`); no option is needed. [`crate::target::Target::connect`] then reads the slot
//! map (`CLUSTER SLOTS`, which 6.2, 7.0 and 8.2 all answer) and opens a plain
//! [`Conn`] to every primary. The engine and the full copy hold a
//! [`crate::target::Target`] and call its explicit operations (begin, select,
//! write, commit, discard, record and read the checkpoint); [`ClusterTarget`] is
//! what they become here. It routes the units it is told about and never reads
//! the caller's intent back out of the commands.
//!
//! # Exactness: one checkpoint per slot
//! A standalone target records the stream position in the same MULTI/EXEC as the
//! commands it accounts for. In a cluster a transaction may only touch one slot, so
//! the engine's target transaction becomes one transaction **per slot** it wrote,
//! each ending with that slot's checkpoint key `LOCKSTEP_CHECKPOINT[:<task>]:{<n>}`
//! (the number `n` is the smallest whose hash tag falls in that slot). Commands of
//! different slots touch different keys, so sending each slot's commands together
//! (in stream order within the slot) changes no outcome. A new session resumes from
//! the **lowest** slot checkpoint, and a slot skips every stream command at or below
//! its own checkpoint (the engine tells the router each command's offset,
//! [`crate::target::Target::set_stream_position`]): nothing is applied twice (INCR stays exact)
//! and nothing is skipped, whatever is killed when. The checkpoint key lives in its
//! slot, so it moves with the slot's keys when the slot migrates, and it replicates
//! in the same transaction as the data, so a promoted replica that missed the last
//! transactions also misses their checkpoints.
//!
//! A slot written rarely would hold the resume point far back: every
//! [`REFRESH_INTERVAL`] the slots whose checkpoint is behind the position every
//! primary has answered get that position (plain SETs: it is exact, everything up to
//! it is applied). That costs 16384 SETs over the primaries per interval at most.
//! After a full copy every slot gets the start position.
//!
//! The cost: a target transaction that wrote N slots sends N MULTI/SET/EXEC
//! wrappers. Measured on one machine (debug build, 7.0, 3 primaries, temporary
//! test): the full copy of 220k keys 2.3 s against 1.2 s into a standalone target;
//! 100k INCR over 5000 keys applied in 1.2-2.0 s against 0.4-0.6 s.
//!
//! A source MULTI/EXEC whose keys span slots is applied as one transaction per slot:
//! each is atomic, the whole is not (as in any cluster).
//!
//! # Routing
//! Key positions come from [`crate::keys`], slots from [`crate::slots`]. A command
//! whose keys share a slot goes to that slot's primary. DEL, UNLINK, TOUCH, MSET and
//! MSETNX over several slots are split into one command per slot
//! ([`crate::keys::split_into`], shared with the filter); the full copy's MSET of
//! strings likewise. Any other command over several slots (RENAME, SMOVE,
//! SUNIONSTORE, ... without a common hash tag) is applied by copying its keys from
//! the source, with a skip window for the stream's commands on them
//! ([`crate::cross_slot`]). FLUSHALL, FLUSHDB, FUNCTION and SCRIPT go to every
//! primary, after the slot transactions before them, and every slot's checkpoint is
//! set right after them. Other keyless commands go to the first primary. A command
//! that is not in the key table stops the task (its slot is unknown): drop it with
//! `--drop-command` if it writes nothing the target needs.
//!
//! # Databases
//! A cluster has database 0 only. A keyed command while the stream is in another
//! target database stops the task; [`check_source_dbs`] refuses at start a source
//! with keys in a synchronized database not mapped to 0 (`--map-db N:0`, `--dbs 0`).
//!
//! # A changing target cluster
//! The router sends **units**: one command, or one slot's transaction (MULTI ...
//! its checkpoint ... EXEC). Each is kept until its primary has answered it
//! ([`UNANSWERED_BYTES_MAX`] bounds the copies; past it the router waits for
//! replies). A primary's writer does not fail on a redirection
//! (MOVED, ASK, TRYAGAIN, CLUSTERDOWN, READONLY): it records it, and holds back the positions
//! it reaches until the router has sent the redirected unit again, so nothing
//! counts as applied, and no checkpoint is written, past a unit not yet applied.
//! What is sent again, in the order first sent, at the next drain (before the
//! next target transaction, or at the engine's next reply poll):
//! - **ASK** (a slot migrating, the key already on the importing node): the unit
//!   goes to that node after `ASKING` (the flag lasts through a MULTI ... EXEC).
//! - **TRYAGAIN** (a multi-key unit whose keys are split between the two nodes,
//!   which a slot transaction is while its keys move): after a pause (5 ms, doubling
//!   to 100 ms) and a new slot map. A single multi-key command outside a
//!   transaction (the full copy's MSET) is split into one command per key instead:
//!   nothing asks for it to be atomic.
//! - **MOVED** (a migration ended): to the slot's owner in a slot map read again.
//!
//! Units of different slots are independent; within one slot a drain happens
//! around every broadcast (FLUSHALL...), so a slot has at most one transaction
//! between drains and no later one can pass a redirected one. Why this is exact:
//! a slot transaction runs whole or not at all (Redis checks every key of the
//! EXEC on one node; keys split between two nodes give TRYAGAIN), ASK is only
//! given for keys the migrating node does not have, and MIGRATE moves what that
//! node applied. The waiting lasts [`MIGRATION_WAIT_MAX`] at most; then the session
//! ends and the next one resumes from the slots' checkpoints (a checkpoint key
//! that has already moved is read after ASKING).
//!
//! A **failover** is different: a primary that answered may have lost those
//! writes to the replica that took over. When a new slot map shows a slot's old
//! owner is no longer a primary (`ROLE`), or a primary closes the connection, the
//! session ends with [`ApplyError::Redirected`], a connection-class error: the next
//! session reads the slot map again and resumes from the checkpoints the new
//! primaries hold, so each command is applied exactly once where it now belongs.
//! A slot without its checkpoint while others have theirs (a crash between a
//! FLUSHALL and the checkpoints written after it, or keys removed by hand) stops
//! the task at the next start, saying so: the exact position is unknown and it
//! never guesses.
//!
//! # Code map
//! - `mod.rs` (here): [`ClusterTarget`] and the operations [`crate::target::Target`]
//!   calls.
//! - `discovery.rs`: recognising a cluster, the slot map, connecting to primaries
//!   (at start, after ASK, after MOVED), telling a failover from a migration.
//! - `routing.rs`: a command to its slot: split, copied from the source, broadcast.
//! - `delivery.rs`: units onto the primaries' connections, redirected ones again.
//! - `checkpoints.rs`: the checkpoint keys per slot: written, refreshed, read back.
//! - `databases.rs`: the one-database rule checked against a source's keyspace.
//! - `primary.rs`: one primary's connection and what it has not answered.
//! - Pure state, without I/O, each unit-tested and driven by the seeded
//!   simulation (`sim.rs`): `slot_state.rs` (positions, the open transaction, one
//!   transaction per slot between drains), `units.rs` (what each primary has not
//!   answered), `replay.rs` (where a redirected unit goes), `skips.rs` (cross-slot
//!   skip windows and entries).
//!
//! No module here imports a module that imports it back: the I/O files add
//! methods to [`ClusterTarget`]; the pure files import nothing of the router.
//!
//! # Removing only some keys
//! A full resync over stale data with key prefix rules, and the FLUSHALL of one shard
//! of a cluster source, remove only the task's keys: every primary is scanned
//! and its owned keys unlinked one per command (see [`crate::target::Target::clear`]).

pub mod cross_slot;

mod checkpoints;
mod databases;
mod delivery;
mod discovery;
mod primary;
mod replay;
mod routing;
#[cfg(test)]
mod sim;
mod skips;
mod slot_state;
mod units;

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::checkpoint::Checkpoint;
use crate::conn::{ApplyError, ApplyOptions, Conn, Position};
use crate::endpoint::Endpoint;
use crate::keys::key_indices;
use crate::resp::Frame;
use crate::slots::{key_slot, slot_tagged_keys};
use cross_slot::{Skips, SourceCopier};
use primary::{redirected, Primary};
use skips::SkipEntries;
use slot_state::{DrainEpoch, OpenTransaction, SlotPositions, StreamCursor};
use units::Failed;

pub use databases::check_source_dbs;
pub(crate) use databases::{unmapped_by_filter, unmapped_db_refusal, unmapped_source_db};
pub(crate) use primary::is_cluster_node;
pub use replay::MIGRATION_WAIT_MAX;

/// How often slots whose checkpoint lags get the position every primary answered.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(5);

/// Most bytes of unanswered units kept per primary; past it the router waits for
/// replies (the copies are what a redirected unit is sent again from).
pub const UNANSWERED_BYTES_MAX: usize = 16 << 20;

/// Failed units kept before the router stops to send them again.
const FAILED_UNITS_MAX: usize = 1024;

/// The router of a [`crate::target::Target`] that is a cluster (see the module
/// doc).
pub struct ClusterTarget {
    /// The connection the cluster was found through (its identity is fenced by the
    /// next session with the primaries').
    entry: Conn,
    /// One plain writer per primary.
    shards: Vec<Primary>,
    /// The shard serving each slot.
    owners: Vec<u16>,
    /// The target URL, for connecting to primaries the cluster names later.
    seed: Endpoint,
    options: ApplyOptions,
    /// Each slot's checkpoint key.
    slot_keys: Vec<Bytes>,
    /// Per slot, what its checkpoint held at the start and was last written.
    positions: SlotPositions,
    /// Where the stream is (the command being applied).
    cursor: StreamCursor,
    /// The open target transaction's commands per slot.
    open: OpenTransaction,
    /// The slots that had a transaction since the last drain.
    epoch: DrainEpoch,
    /// The target database the stream has selected.
    db: u32,
    /// The replid and db words of the last checkpoint value seen.
    last_value: Option<(String, String)>,
    last_refresh: Instant,
    /// The id of the next unit.
    next_unit: u64,
    /// Units redirected and not yet sent again.
    failed: Vec<Failed>,
    /// Reads from the source what a cross-slot command wrote (see
    /// [`crate::cross_slot`]); without it such a command stops the task.
    copier: Option<SourceCopier>,
    /// Keys whose copy holds the stream up to an offset.
    skips: Skips,
    /// Each slot's skip hash, `LOCKSTEP_SKIP[:task]:{n}`.
    skip_keys: Vec<Bytes>,
    /// Entries written to (or read from) each slot's skip hash, to remove once the
    /// slot's checkpoint has passed them.
    skip_entries: SkipEntries,
}

impl ClusterTarget {
    /// The plain writer of every primary.
    pub(crate) fn primaries_mut(&mut self) -> Vec<&mut Conn> {
        self.shards.iter_mut().map(|p| &mut p.writer).collect()
    }

    pub(crate) fn set_stream_position(&mut self, offset: i64, source_db: u32) {
        self.cursor.advance(offset, source_db);
    }

    /// Applies cross-slot commands by copying their keys from the source through
    /// `copier`, with skip entries in `skip_key`'s per-slot hashes.
    pub(crate) fn copy_cross_slot_from(&mut self, copier: SourceCopier, skip_key: &[u8]) {
        self.copier = Some(copier);
        self.skip_keys = slot_tagged_keys(skip_key);
    }

    /// The task's own keys were removed from the target (a FLUSHALL / FLUSHDB of a
    /// renamed source or of one shard, [`crate::target::Target::clear`]): the copies
    /// of cross-slot commands are gone with them, so their skip windows must go too,
    /// here and in the skip hashes, or the stream's commands inside a window (the
    /// ones that rebuild a key after the flush) would be dropped as held by a copy
    /// that no longer exists (found in CI: a renamed churn with FLUSHDB into a
    /// cluster, `NOGROUP` on a stream whose XGROUP CREATE had been skipped).
    pub(crate) async fn forget_copies(&mut self) -> Result<(), ApplyError> {
        for slot in self.skip_entries.slots() {
            if let Some(key) = self.skip_keys.get(usize::from(slot)).cloned() {
                self.send_unit(Some(slot), vec![vec![Bytes::from_static(b"DEL"), key]])
                    .await?;
            }
        }
        self.skips.clear();
        self.skip_entries.clear();
        Ok(())
    }

    /// Opens a target transaction: from now on each slot's commands are queued in
    /// that slot's transaction until [`ClusterTarget::commit`]. (The caller drains
    /// first: a slot has at most one transaction between drains.)
    pub(crate) fn begin(&mut self) {
        self.open.begin();
    }

    /// The target database the stream has selected (a keyed command outside
    /// database 0 stops the task: a cluster has no other).
    pub(crate) fn select(&mut self, db: u32) {
        self.db = db;
    }

    /// Routes one command by its keys' slots.
    pub(crate) async fn write<A: AsRef<[u8]>>(&mut self, argv: &[A]) -> Result<(), ApplyError> {
        let argv: Vec<Bytes> = argv
            .iter()
            .map(|a| Bytes::copy_from_slice(a.as_ref()))
            .collect();
        self.route(&argv).await
    }

    /// Sends the open transaction as one transaction per slot it wrote, each with
    /// that slot's checkpoint when given; `at` counts as applied once every
    /// primary has answered it.
    pub(crate) async fn commit(
        &mut self,
        checkpoint: Option<&Checkpoint>,
        at: Position,
    ) -> Result<(), ApplyError> {
        if let Some(checkpoint) = checkpoint {
            self.write_checkpoint(checkpoint).await?;
        }
        self.close_slots(None).await?;
        self.open.end();
        self.mark_position(at);
        Ok(())
    }

    /// Forgets the open transaction's commands (a source transaction that did
    /// not arrive whole).
    pub(crate) fn discard(&mut self) {
        self.open.end();
    }

    /// Records `checkpoint` in every slot outside the stream (after a full copy)
    /// and waits for it.
    pub(crate) async fn record_checkpoint(
        &mut self,
        checkpoint: &Checkpoint,
    ) -> Result<(), ApplyError> {
        self.db = 0;
        self.write_checkpoint(checkpoint).await?;
        self.drain().await
    }

    /// The lowest slot checkpoint's value (where the stream resumes), after reading
    /// every slot's checkpoint and skip entries.
    pub(crate) async fn read_checkpoint(&mut self) -> Result<Option<Vec<u8>>, ApplyError> {
        self.drain().await?;
        self.db = 0;
        let lowest = self.read_checkpoints().await?;
        Ok(lowest.as_bytes().map(<[u8]>::to_vec))
    }

    pub(crate) fn mark_position(&mut self, position: Position) {
        // Before the stream: where it starts (the entry before its first command).
        self.cursor.mark(position.offset);
        for primary in &mut self.shards {
            primary.writer.mark_position(position);
        }
    }

    pub(crate) async fn flush(&mut self) -> Result<(), ApplyError> {
        for primary in &mut self.shards {
            primary.writer.flush().await?;
        }
        Ok(())
    }

    /// The identities of the primaries' connections.
    pub(crate) fn identities(&self) -> Vec<crate::conn::ClientIdentity> {
        let entry = self.entry.identity().cloned();
        let primaries = self
            .shards
            .iter()
            .filter_map(|p| p.writer.identity().cloned());
        entry.into_iter().chain(primaries).collect()
    }

    /// [`Conn::check_answering`] of every primary.
    pub(crate) fn check_answering(&self) -> Result<(), ApplyError> {
        self.shards
            .iter()
            .try_for_each(|p| p.writer.check_answering())
    }

    /// The latest byte from any primary.
    pub(crate) fn last_reply_at(&self) -> Option<std::time::Instant> {
        self.shards
            .iter()
            .filter_map(|p| p.writer.last_reply_at())
            .max()
    }

    /// The position every primary has answered up to.
    pub(crate) fn applied(&self) -> Option<Position> {
        let mut lowest: Option<Position> = None;
        for primary in &self.shards {
            let Some(applied) = primary.writer.applied() else {
                // A primary found later (ASK, a new slot map) may have no position
                // yet: it holds nothing back unless it has units to answer.
                if primary.unanswered.is_empty() && !primary.writer.holds_positions() {
                    continue;
                }
                return None;
            };
            if lowest.is_none_or(|l| applied.offset < l.offset) {
                lowest = Some(applied);
            }
        }
        lowest
    }

    pub(crate) fn applied_commands(&self) -> u64 {
        self.shards
            .iter()
            .map(|p| p.writer.applied_commands())
            .sum()
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.shards.iter().map(|p| p.writer.in_flight()).sum()
    }

    pub(crate) async fn query<A: AsRef<[u8]>>(&mut self, argv: &[A]) -> Result<Frame, ApplyError> {
        self.drain().await?;
        let name = argv.first().map_or(&[][..], |a| a.as_ref());
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        if is("SCAN") || is("KEYS") {
            return Err(ApplyError::Cluster(
                "the target's keys cannot be listed as one keyspace here (a full resync with key prefix rules into a cluster target is not supported: empty the target's task keys by hand)".to_owned(),
            ));
        }
        let argv: Vec<Bytes> = argv
            .iter()
            .map(|a| Bytes::copy_from_slice(a.as_ref()))
            .collect();
        let shard = match key_indices(&argv).ok().and_then(|mut i| i.next()) {
            Some(i) => usize::from(self.owners[usize::from(key_slot(&argv[i]))]),
            None => 0,
        };
        self.shards[shard]
            .writer
            .query(&argv)
            .await
            .map_err(redirected)
    }
}
