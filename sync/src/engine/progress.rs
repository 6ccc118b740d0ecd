//! What a running task publishes about itself ([`Progress`], [`Phase`]) and what a
//! finished one returns ([`Summary`]).
//!
//! Plain data read by status reports, the CLI and the tests; the session writes it
//! through a `watch` channel. A figure here is a claim: when the task has not looked
//! (no heartbeat seen, no size announced), the field is `None`, never a guess.

use std::time::Instant;

use crate::checkpoint::Checkpoint;

/// Where the task is, for status reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub phase: Phase,
    /// Keys written during the current full copy.
    pub keys_copied: u64,
    /// Offset received from the source / applied on the target.
    pub received_offset: i64,
    pub applied_offset: i64,
    pub full_syncs: u64,
    pub partial_syncs: u64,
    /// Milliseconds between the source writing the last heartbeat and lockstep
    /// receiving it in the stream (clocks of one machine: lockstep's and the
    /// source's; across machines their skew adds in). The transit of that one
    /// heartbeat, frozen while nothing arrives: the lag is [`Progress::lag_ms`].
    pub heartbeat_lag_ms: Option<i64>,
    /// The time (unix ms) the last heartbeat seen in the stream carries: when it
    /// was written on the source. `None` before the first (or with no heartbeat).
    pub heartbeat_sent_unix_ms: Option<i64>,
    /// When lockstep last saw a heartbeat in the stream.
    pub heartbeat_seen_at: Option<Instant>,
    /// When a read last brought bytes from the source (published on the checkpoint
    /// tick in the stream and per event batch in the full copy; `None` before any).
    pub source_byte_at: Option<Instant>,
    /// When a read last brought a reply from the target (published on the
    /// checkpoint tick in the stream).
    pub target_reply_at: Option<Instant>,
    /// Keys of the last full copy whose real TTL was restored after the stream
    /// caught up (the TTL race guard).
    pub ttls_settled: u64,
    /// The source's replication ID the task follows, once known.
    pub replid: Option<String>,
    /// RDB bytes received during the current full copy, and the RDB's size when the
    /// source announced it (disk-based transfers; a diskless one has no size).
    pub bytes_copied: u64,
    pub bytes_total: Option<u64>,
    /// Keys the RDB announced (the sum of its RESIZEDB hints over the databases seen
    /// so far; none when the RDB has no hints).
    pub keys_total: Option<u64>,
    /// Stream commands sent to the target since the task started (published on the
    /// checkpoint tick).
    pub commands_applied: u64,
    /// The error that ended the last session, when the task is retrying.
    pub last_error: Option<String>,
}

impl Progress {
    /// How far behind the source the stream may be, in milliseconds: `now` (unix
    /// ms) minus the time the last heartbeat seen carries. Everything the source
    /// wrote before that heartbeat has arrived, so the figure is an upper bound,
    /// within one heartbeat interval of the truth while heartbeats flow, and it grows
    /// while nothing arrives. `None` when no heartbeat has been seen (`--no-heartbeat`,
    /// or not yet): unknown, not zero.
    pub fn lag_ms(&self, now_unix_ms: i64) -> Option<i64> {
        self.heartbeat_sent_unix_ms
            .map(|sent| now_unix_ms.saturating_sub(sent).max(0))
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Phase {
    #[default]
    Connecting,
    FullCopy,
    Incremental,
    Done,
}

/// What a finished task did.
#[derive(Clone, Debug)]
pub struct Summary {
    pub progress: Progress,
    pub checkpoint: Option<Checkpoint>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lag_is_unknown_without_a_heartbeat_and_grows_from_the_last_one() {
        let mut progress = Progress {
            heartbeat_lag_ms: Some(1),
            ..Progress::default()
        };
        assert_eq!(progress.lag_ms(1_000_000), None, "unknown, not zero");
        progress.heartbeat_sent_unix_ms = Some(1_000_000);
        assert_eq!(progress.lag_ms(1_000_001), Some(1));
        // Nothing more arrives: the transit stays at 1 ms, the lag grows.
        assert_eq!(progress.lag_ms(1_150_000), Some(150_000));
        // A source clock ahead of lockstep's does not make a negative lag.
        assert_eq!(progress.lag_ms(999_000), Some(0));
    }
}
