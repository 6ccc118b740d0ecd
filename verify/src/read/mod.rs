//! Reading one side: connections (standalone or cluster, [`side`]), pipelines whose
//! error replies are values, the first reads and heads of a batch, long strings in
//! windows, chunked digests, canonical values, the quiet states of the count proof,
//! and which databases a side has.
//!
//! What it returns is plain data; what that data means is [`crate::judge`]'s. It must
//! never write to either Redis, run a script, or decode a DUMP payload.

pub mod canonical;
pub(crate) mod databases;
pub mod digest;
pub(crate) mod first;
pub mod long_string;
pub(crate) mod pipeline;
pub(crate) mod quiet;
pub mod side;
pub mod slot;
