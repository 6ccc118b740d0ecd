//! Walking both sides: the plan (which databases and keys), the connections, SCAN
//! batches at a bounded rate, the scheduler (`workers` batches in flight), the passes
//! over a database and the batches themselves.
//!
//! The walk decides what to read and when; it asks [`crate::read`] for the answers and
//! [`crate::judge`] for their meaning, and adds the outcome up ([`tally`]). It must
//! never write to either Redis, and never hold a whole key set.

pub(crate) mod batch;
pub(crate) mod context;
pub(crate) mod passes;
pub(crate) mod plan;
pub(crate) mod pools;
pub(crate) mod scan;
pub(crate) mod schedule;
pub(crate) mod tally;
