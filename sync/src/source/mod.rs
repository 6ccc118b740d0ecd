//! Where the data comes from. The engine needs four things of a source, whatever it
//! is: a resume point and a way to ask for it, a snapshot, a command stream with
//! positions (offset, database), and acknowledgements of what the target has
//! applied. [`Source`] (in `contract`) is that contract in code; the session and the
//! full copy are generic over it and name no source type.
//!
//! - `contract`: the trait [`Source`] with [`Snapshot`] and [`Acknowledge`], and the
//!   answer to "resume from here" ([`PsyncReply`]);
//! - [`replica`]: the first implementation, lockstep posing as a replica of one
//!   server (PSYNC, the RDB transfer, the command stream, `REPLCONF ACK`);
//! - [`cluster`]: a Redis Cluster source as one replica link per shard, each its
//!   own task scoped to its slots (each task's source is a replica link);
//! - [`rdb_file`]: an RDB file (plain or gzip), a snapshot with no stream after it;
//! - [`aof`]: an append-only file (a Redis 7 multi-part directory or one file), its
//!   RDB preamble as the snapshot and its commands as a stream that ends
//!   ([`Source::STREAM_ENDS`]), cut at an instant with `--until`.
//!
//! # The contract, as the replica link implements it
//! - resume: `(replid, offset)` of the last position the target applied, asked for
//!   with `PSYNC`; the answer is `+CONTINUE`, `+FULLRESYNC <replid> <offset>` (a
//!   snapshot first) or `SYNC` (no positions); the engine's pure `resume` decision
//!   turns it into how the session starts;
//! - snapshot: RDB bytes in pieces as they arrive, turned into key events by the RDB
//!   parser in the engine's full copy; the keepalive is a `REPLCONF ACK` every
//!   second of a disk-based transfer, nothing during a diskless one;
//! - command stream: a [`crate::resp::CommandStream`] over the rest of the socket,
//!   yielding `(entry, offset)`;
//! - acknowledgements: [`replica::Acker`] (`REPLCONF ACK <applied offset>`).
//!
//! # How the next sources implement it (issue 18, not built)
//! - A **scan source** (`SCAN` + `DUMP` + `PTTL` over a normal connection):
//!   `resume` always answers `FullResync` with a replid of its own and the offset 0
//!   (it cannot continue anything); `snapshot` opens the scan, and
//!   `next_snapshot_chunk` writes its keys as an RDB stream the parser already
//!   reads: a header `REDIS00<version>` first, `SELECTDB` per database, then per key
//!   `EXPIRETIME_MS` when it has a TTL, the DUMP payload's type byte, the key as an
//!   RDB string, the payload's body without its 10-byte trailer (RDB version and
//!   CRC), and `EOF` at the end; `snapshot_keepalive` does nothing. `into_stream`
//!   gives a stream that ends at once (or, later, one fed by keyspace
//!   notifications) and an acker that does nothing.
//! - An **RDB file** (built: [`rdb_file`]): `resume` answers `FullResync` with a
//!   replid of the file's own and offset 0 (with `--then-follow`: the file's own
//!   replication position, or `Continue` when the task already holds one); the
//!   snapshot is the file read in pieces (`bytes_total` its size, `bytes_read` the
//!   file's bytes read, compressed ones when gzip, decompressed as read); the stream
//!   is empty; no acks.
//! - An **AOF** (built: [`aof`]): `resume` always answers `FullResync` (a replay
//!   starts over); the snapshot is the base file's RDB preamble (an empty RDB when
//!   the base is commands); `into_stream` is a `CommandStream` over the commands
//!   that follow, annotations removed, read by a blocking thread into a channel;
//!   the stream ends with the replay; acks do nothing.
//!
//! Apply, batching and checkpoints see only positions and events, so none of these
//! touches them; a source whose error type converts into the engine's `SyncError`
//! plugs into the session as it is.
//!
//! A source never writes to the target, never records a checkpoint and never
//! decides whether to copy: it answers what it is asked, and the engine decides.

pub mod aof;
pub mod cluster;
mod contract;
pub mod rdb_file;
pub mod replica;
pub mod scan;

pub use contract::{Acknowledge, PsyncReply, Snapshot, Source};
