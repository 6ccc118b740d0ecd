//! Where the data comes from. The engine needs four things of a source, whatever it
//! is: a snapshot as a stream of key events, a command stream with positions
//! (offset, database), acknowledgements of what the target has applied, and a
//! resume point with a way to ask for it.
//!
//! - [`replica`]: the first implementation, lockstep posing as a replica of one
//!   server (PSYNC, the RDB, the command stream, `REPLCONF ACK`);
//! - [`cluster`]: a Redis Cluster source as one replica link per shard, each its
//!   own task scoped to its slots.
//!
//! # The contract, as the replica link implements it
//! - resume point: `(replid, offset)` of the last position the target applied, asked
//!   for with `PSYNC`; the answer ([`replica::PsyncReply`]) is `+CONTINUE`,
//!   `+FULLRESYNC <replid> <offset>` (a snapshot first) or `SYNC` (no positions);
//!   the engine's pure `resume` decision turns it into how the session starts;
//! - snapshot: RDB bytes in pieces ([`replica::ReplicaLink::next_rdb_chunk`]),
//!   turned into key events by the RDB parser in the engine's full copy;
//! - command stream: a [`crate::resp::CommandStream`] yielding `(entry, offset)`;
//! - acknowledgements: [`replica::Acker`] (`REPLCONF ACK <applied offset>`).
//!
//! How the next sources would fit (not built; issue 18): a scan source has no
//! resume point (always a "full resync" at the `INFO` offset), a snapshot of key
//! events from `SCAN` + `DUMP` (`KeyStart` / `KeyEnd { raw }`), no stream or a
//! stream from keyspace notifications, and no acks; an RDB file is a snapshot only
//! (the same parser over a file reader); an AOF file is a command stream only (a
//! `CommandStream` over the file, offsets = bytes read, no acks). Today the session
//! names `ReplicaLink` where it connects and in the full copy's reader task: those
//! two places become a trait over these four operations when the second source
//! arrives; apply, batching and checkpoints already see only positions and events.
//!
//! A source never writes to the target, never records a checkpoint and never
//! decides whether to copy: it answers what it is asked, and the engine decides.

pub mod cluster;
pub mod replica;
