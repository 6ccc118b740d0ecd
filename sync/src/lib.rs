//! # lockstep-sync
//!
//! Replication: everything that makes a target Redis a copy of a source Redis.
//!
//! # Layout
//! The modules follow the data flow: source (the replica link) -> parse (RDB, RESP)
//! -> filter -> apply -> checkpoint. Only the formats exist so far; see
//! `docs/architecture.md` for the plan and what is built.
//!
//! This crate knows nothing about the command line; only `cli` prints.

pub mod rdb;
pub mod resp;
