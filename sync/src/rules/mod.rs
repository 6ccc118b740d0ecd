//! Declarative transforms (issue 17, docs/transforms.md): the rules a task applies on
//! the way, beside the filter's databases and prefixes. Each is a pure decision used
//! by [`crate::filter::Filter`] for the stream and by [`crate::load`] for the full
//! copy, so both phases apply them identically, before the target transaction that
//! records the position (a restart never applies a rule twice or skips one).
//!
//! - [`glob`]: Redis glob patterns as byte regexes (one matcher for every rule).
//! - [`key_match`]: keep or drop keys by glob or regex.
//! - [`types`]: keep or drop keys by type; what a dropped type does to the commands
//!   that overwrite or move values.
//! - [`ttl`]: remove, cap or set key expiries.
//! - [`hash_fields`]: drop hash fields by name.
//! - [`routes`]: send keys into other target databases by name.
//!
//! Renames live in [`crate::rename`]. verify implements the same rules with its own
//! code (verify/src/keymap.rs and beside it), so a transformed sync is still checked
//! by an independent reader.

pub mod glob;
pub mod hash_fields;
pub mod key_match;
pub mod rename_regex;
pub mod routes;
pub mod ttl;
pub mod types;
