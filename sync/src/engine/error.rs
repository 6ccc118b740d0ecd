//! Why a task stopped ([`SyncError`]) and which retry window covers each failure
//! ([`RetryClass`]): a cut connection and a side that says "not now" are retried,
//! each for its own window; anything else ends the task.
//!
//! Pure: this module classifies errors, it never retries nor sleeps itself (the
//! retry loop in [`super::run`] does).

use std::time::Duration;

use crate::apply::ApplyError;
use crate::checkpoint::CheckpointError;
use crate::filter::FilterError;
use crate::load::LoadError;
use crate::rdb::RdbError;
use crate::script::ScriptError;
use crate::source::aof::AofError;
use crate::source::rdb_file::FileSourceError;
use crate::source::replica::LinkError;
use crate::source::scan::ScanError;

/// Why the task stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// The scan source (`--source-mode scan`) failed.
    #[error(transparent)]
    Scan(#[from] ScanError),
    /// An RDB file source could not be read, or its content parsed (never retried:
    /// a file reads the same again).
    #[error(transparent)]
    File(#[from] FileSourceError),
    #[error("the RDB file {path} is unreadable: {reason}")]
    FileUnreadable { path: String, reason: String },
    /// An AOF source could not be replayed (never retried, like a file).
    #[error(transparent)]
    Aof(#[from] AofError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("the RDB from the source is unreadable: {0}")]
    Rdb(#[from] RdbError),
    #[error(transparent)]
    Load(LoadError),
    #[error("gave up after retrying for {window:?}; last error: {last}")]
    GaveUp {
        window: Duration,
        last: Box<SyncError>,
    },
    #[error(transparent)]
    Filter(#[from] FilterError),
    /// The script (`--script`) failed, ran out of time or memory, or returned a
    /// command it may not: the task stops, nothing of that command applied.
    #[error(transparent)]
    Script(#[from] ScriptError),
    #[error("invalid option: {0}")]
    Options(String),
    /// The source cluster's slot map could not be read or is in flux (retried).
    #[error("source cluster: {0}")]
    SourceTopology(String),
    /// This shard's slots moved (a reshard of the source cluster): its task ends, and
    /// the caller expands the task again into the new layout's shards (the `sync`
    /// command does so by itself).
    #[error("{0}")]
    Resharded(String),
    #[error("internal: {0}")]
    Internal(String),
    /// The task was asked to stop (not an error to the caller).
    #[error("stopped")]
    Stopped,
    /// A stream that ends ([`crate::source::Source::STREAM_ENDS`]) has ended: the
    /// task is done once what was read is applied (not an error to the caller).
    #[error("the source's stream ended")]
    StreamEnded,
}

impl From<LoadError> for SyncError {
    fn from(err: LoadError) -> SyncError {
        match err {
            // A connection fault while loading is a connection fault.
            LoadError::Apply(apply) => SyncError::Apply(apply),
            other => SyncError::Load(other),
        }
    }
}

impl SyncError {
    /// Whether the task retries after this error (a connection fault, a side that
    /// says "not now") rather than giving up at once.
    pub fn is_retryable(&self) -> bool {
        self.retry_class().is_some()
    }

    /// Which retry window covers this error, if any.
    pub(super) fn retry_class(&self) -> Option<RetryClass> {
        match self {
            SyncError::Link(e) if e.is_transient() => Some(RetryClass::Connection),
            SyncError::Scan(e) if e.is_transient() => Some(RetryClass::Connection),
            // A snapshot that ends early was cut short by the source (its snapshot
            // process killed, e.g. by a FLUSHALL during a diskless transfer, or the
            // link dropped): like a cut connection, copy again.
            SyncError::Rdb(RdbError::UnexpectedEof { .. }) => Some(RetryClass::Connection),
            // A failover of the source cluster may leave it without an answer or a
            // primary for a few seconds.
            SyncError::SourceTopology(_) => Some(RetryClass::Connection),
            SyncError::Apply(e) if e.is_transient() => Some(RetryClass::Connection),
            SyncError::Apply(ApplyError::Rejected { reply, .. }) if is_passing_refusal(reply) => {
                Some(RetryClass::Other)
            }
            _ => None,
        }
    }
}

/// The two retry windows of a task, as in DTS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RetryClass {
    /// A connection failed (refused, reset, timed out) on either side.
    Connection,
    /// A side answered that it cannot serve for now (loading, busy script, failover).
    Other,
}

/// Replies that say "not now" rather than "never": the target is loading, runs a
/// busy script, or its cluster is failing over.
fn is_passing_refusal(reply: &str) -> bool {
    ["LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN", "CLUSTERDOWN"]
        .iter()
        .any(|p| reply.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(reply: &str) -> SyncError {
        SyncError::Apply(ApplyError::Rejected {
            endpoint: "target".into(),
            command: "SET".into(),
            key: "k".into(),
            reply: reply.into(),
            hint: "",
        })
    }

    #[test]
    fn passing_refusals_are_retried_in_the_other_window_and_the_rest_end_the_task() {
        for reply in [
            "LOADING x",
            "BUSY y",
            "TRYAGAIN",
            "MASTERDOWN",
            "CLUSTERDOWN z",
        ] {
            assert_eq!(
                rejected(reply).retry_class(),
                Some(RetryClass::Other),
                "{reply}"
            );
        }
        for reply in [
            "OOM command not allowed",
            "WRONGTYPE",
            "ERR unknown command",
        ] {
            assert!(!rejected(reply).is_retryable(), "{reply}");
        }
        assert_eq!(
            SyncError::SourceTopology("no primary".into()).retry_class(),
            Some(RetryClass::Connection)
        );
        for fatal in [
            SyncError::Options("x".into()),
            SyncError::Resharded("moved".into()),
            SyncError::Stopped,
        ] {
            assert!(!fatal.is_retryable(), "{fatal}");
        }
    }
}
