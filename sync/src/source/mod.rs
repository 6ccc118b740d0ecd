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
//! A source never writes to the target, never records a checkpoint and never
//! decides whether to copy: it answers what it is asked, and the engine decides.

pub mod cluster;
pub mod replica;
