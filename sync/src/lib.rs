//! # lockstep-sync
//!
//! Replication: everything that makes a target Redis a copy of a source Redis.
//!
//! # Layout
//! The modules follow the data flow:
//! - [`endpoint`]: `redis[s]://` URLs and connected byte streams (TCP or TLS).
//! - [`source`] (source): where data comes from, behind one contract; its first
//!   implementation is [`source::replica`], lockstep posing as a replica: handshake,
//!   PSYNC/SYNC, the RDB transfer in pieces, then the command stream and
//!   `REPLCONF ACK` ([`link`] is its old path).
//! - [`rdb`] and [`resp`] (parse): the streaming RDB parser and DUMP codec; the RESP
//!   codec with exact byte counts (the replication offset counts bytes).
//! - [`engine`] (filter, orchestration): sessions, full copy, the incremental loop,
//!   retries; drops PING/REPLCONF and the heartbeat key.
//! - [`load`] (apply, full copy): parser events to RESTORE, big keys in batches, the
//!   TTL-race guard; [`ttl_guard`] settles it by scanning the target.
//! - [`apply`] (apply): the pipelined, reply-checked writer to the target.
//! - [`throttle`]: keys/s, commands/s and bytes/s limits of the two phases.
//! - [`checkpoint`]: the exact (replid, offset, db) the target has reached, stored
//!   atomically.
//! - [`filter`]: the task's objects options: databases, key prefixes, commands, TTL
//!   extension, lockstep's own keys; for both the full copy and the stream.
//! - [`script`]: the Lua transform (`--script`), after the filter, before the target.
//! - [`keys`]: which arguments of a command are keys (the filter, cluster routing).
//! - [`slots`] and [`cluster`]: a Redis Cluster target: CRC16 hash slots, the slot
//!   map, routing per primary with one exact checkpoint per slot.
//! - [`cross_slot`]: what a cluster target cannot split by slot (RENAME, SMOVE...
//!   across slots), copied from the source with exact skip windows.
//! - [`source::cluster`] ([`cluster_source`]): a Redis Cluster source: one task per shard, each scoped to
//!   its slots on the shared target, following failovers.
//! - [`precheck`]: what must hold on both sides before a sync, item by item (reads only).
//!
//! This crate knows nothing about the command line; only `cli` prints.

pub mod apply;
pub mod checkpoint;
pub mod clock;
mod command_names;
/// The old path of [`source::cluster`], kept for callers.
pub mod cluster_source {
    pub use crate::source::cluster::*;
}
pub mod conn;
pub mod endpoint;
pub mod engine;
pub mod filter;
pub mod keys;
/// The old path of [`source::replica`], kept for callers.
pub mod link {
    pub use crate::source::replica::*;
}
pub mod load;
pub mod precheck;
pub mod rdb;
pub mod rename;
pub mod resp;
pub mod rules;
pub mod script;
pub mod slots;
pub mod source;
pub mod target;
pub mod throttle;
pub mod ttl_guard;

// The old paths of the target's modules.
pub use target::cluster;
pub use target::cluster::cross_slot;
