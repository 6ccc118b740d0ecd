//! # lockstep-verify
//!
//! Compares a source and a target Redis key by key, value by value and TTL by TTL,
//! in both directions, independently of the sync crate (so that a decoding bug in
//! the sync cannot hide itself: values are read with ordinary commands, never from
//! an RDB or a DUMP payload). Verify never writes to either Redis.
//!
//! # Layout
//! - [`canonical`]: reads one key's value as an encoding-independent canonical form.
//! - [`compare`]: walks both sides' key sets (SCAN per database) and reports keys
//!   missing on the target, extra on the target, and keys whose type, value or TTL
//!   differ.
//!
//! What exists is the exact, full comparison; sampling, rounds for keys in flight,
//! digests of big collections and the CLI come with issue 5.

pub mod canonical;
pub mod compare;

pub use compare::{compare, CompareOptions, Difference, DifferenceKind, Report};
