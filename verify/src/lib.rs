//! # lockstep-verify
//!
//! Compares a source and a target Redis key by key, value by value and TTL by TTL,
//! in both directions, independently of the sync crate (so that a decoding bug in
//! the sync cannot hide itself: values are read with ordinary commands; a DUMP
//! payload is only ever compared byte for byte with the other side's, never decoded).
//! Verify never writes to either Redis.
//!
//! # Layout: walk → read → judge → report
//! - [`compare`]: the run end to end (plan, the passes of every database, the rounds,
//!   the report); the only module that knows the order of the stages.
//! - [`options`]: what a comparison is asked to do ([`CompareOptions`]).
//! - [`keymap`]: where a source database and key live on the target (`--map-db`,
//!   `--rename-prefix`), and back; pure, and the sync's rules re-implemented.
//! - [`rules`]: the declarative rules of issue 17 (filters by glob, regex and type,
//!   dropped hash fields, renames by regex), checked and compiled at the start of a
//!   run; verify's own implementation of the sync's contract.
//! - [`script`]: `--script` (issue 17): the source keys a Lua script touches read,
//!   recreated as commands, run through verify's own Lua runner, modelled and
//!   compared with the target; verify's own implementation of the sync's contract.
//! - `walk/`: which keys, in which batches, on which connections, how fast: the plan,
//!   the connection pools, SCAN batches at a bounded rate, the scheduler (`workers`
//!   batches in flight), the source, target and key-list passes, one batch's reads in
//!   order, and the tally.
//! - [`read`]: what one side answers, as plain data: [`side`] (standalone or a Redis
//!   Cluster read through its primaries), the first reads and heads of a batch,
//!   [`long_string`] (`GETRANGE` windows), [`digest`] (chunked xxh3 digests),
//!   [`canonical`] (a whole value, for tests and small values), the quiet states of
//!   the count proof, and which databases a side has.
//! - `judge/`: what the answers mean, pure and unit-tested: presence and type, values
//!   (strings, lengths, DUMP payloads, digests), TTLs within the tolerance, keys that
//!   expired between two reads, and the count proof.
//! - [`report`]: [`Report`] and its [`Verdict`], [`Difference`], the [`coverage`],
//!   [`track`] (roaring-bitmap sets of differing keys and covered slots) and
//!   [`output`] (the CSV of differences, the JSON summary, key lists read back).
//!
//! No module imports a module that imports it back: `compare` → `walk` → `read`,
//! `judge`, `report`; `judge` → `read`'s data and `report`'s types; `read` → `report`'s
//! coverage types only; `report` → `options` only; `rules` → `options` only (and
//! `keymap` and `walk` → `rules`); `script` → `read`, `report`, `rules`, `options`, and
//! `walk`'s scan (`walk` → `script`'s scope).

pub mod compare;
pub(crate) mod judge;
pub mod keymap;
pub mod options;
pub mod read;
pub mod report;
pub mod rules;
pub mod script;
pub(crate) mod walk;

pub use compare::{
    compare, CompareOptions, Difference, DifferenceKind, KeyList, Report, Sample, TargetPass,
    Verdict,
};
pub use options::{RuleSpec, ScriptOptions, TtlRule};
pub use read::{canonical, digest, long_string, side};
pub use report::coverage::Coverage;
pub use report::{output, statement, track};

/// What a comparison covered ([`report::coverage`]) and how each side's databases are
/// learned ([`read::databases`]), under the one path the command line uses.
pub mod coverage {
    pub use crate::read::databases::{keyspace_databases, learn, PROBE_BOUND};
    pub use crate::report::coverage::*;
}
