//! # lockstep-verify
//!
//! Compares a source and a target Redis key by key, value by value and TTL by TTL,
//! in both directions, independently of the sync crate (so that a decoding bug in
//! the sync cannot hide itself). Verify never writes to either Redis.
//!
//! Not built yet: issue 5.
