//! # lockstep-verify
//!
//! Compares a source and a target Redis key by key, value by value and TTL by TTL,
//! in both directions, independently of the sync crate (so that a decoding bug in
//! the sync cannot hide itself: values are read with ordinary commands; a DUMP
//! payload is only ever compared byte for byte with the other side's, never decoded).
//! Verify never writes to either Redis.
//!
//! # Layout
//! - [`compare`]: walks both sides (SCAN batches, pipelined reads on both sides at
//!   once, a DUMP fast path, a configurable number of workers, a rate limit, rounds
//!   that re-check differing keys) and reports keys missing on the target, extra on
//!   the target, and keys whose type, value or TTL differ.
//! - [`coverage`]: which databases each side has and holds keys in (learned from both:
//!   `INFO keyspace`, `CONFIG GET databases`, or probed with `SELECT`), which were
//!   compared, and what was not (a database not read, not asked, a sample): verify
//!   claims CONSISTENT only over what it read.
//! - [`long_string`]: strings beyond a bound compared in `GETRANGE` windows, never
//!   held whole.
//! - [`digest`]: chunked, order-sensitive (lists, streams) or order-independent
//!   (hashes, sets, zsets) xxh3 digests of values, read without holding them whole.
//! - [`canonical`]: reads one key's whole value as an encoding-independent form (for
//!   tests and small values).
//! - [`track`]: compact sets (roaring bitmaps): fingerprints of differing keys beyond
//!   the listed ones, and the cluster hash slots a run covered.
//! - [`side`]: a connection to one side, standalone or a Redis Cluster read through
//!   its primaries (commands routed by slot, SCAN over every primary).
//! - [`output`]: the CSV of differences (keys written losslessly), the JSON summary,
//!   and reading key lists back (`--keys-from`, `--recheck`).

pub mod canonical;
pub mod compare;
pub mod coverage;
pub mod digest;
pub mod long_string;
pub mod output;
pub mod side;
pub mod track;

pub use compare::{
    compare, CompareOptions, Difference, DifferenceKind, KeyList, Report, Sample, TargetPass,
    Verdict,
};
pub use coverage::Coverage;
