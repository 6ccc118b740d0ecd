//! The retry loop's bookkeeping, as pure state ([`Retries`]): how long to wait
//! before the next session, and when to give up. A run of failures starts at the
//! first failure after progress; its window (per [`RetryClass`]) bounds it; the wait
//! doubles from 100 ms up to a ceiling, 1 s while a cluster is moving (it settles in
//! seconds, and a 10 s back-off would hold the sync that long after it has), 10 s
//! otherwise. Any progress (a copy, a partial resync, an applied offset) starts over.
//!
//! It never sleeps, retries or classifies errors itself: `super::run` asks it and
//! sleeps, and `super::error` says which window covers a failure.

use std::time::{Duration, Instant};

use crate::apply::ApplyError;

use super::error::SyncError;
use super::progress::Progress;

/// The first wait after a failure (and after every progress).
pub(super) const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait while a cluster on either side is moving.
pub(super) const MOVING_CLUSTER_CEILING: Duration = Duration::from_secs(1);
/// The longest wait otherwise.
pub(super) const CEILING: Duration = Duration::from_secs(10);

/// When the current run of failures began, and the next wait.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Retries {
    failing_since: Option<Instant>,
    backoff: Duration,
}

impl Default for Retries {
    fn default() -> Retries {
        Retries {
            failing_since: None,
            backoff: FIRST_BACKOFF,
        }
    }
}

impl Retries {
    /// After a failure at `now` covered by `window`, with `progressed` telling
    /// whether the session got anywhere: how long to wait before the next one, or
    /// `None` when the failures have lasted longer than `window` (give up).
    pub fn after_failure(
        &mut self,
        now: Instant,
        progressed: bool,
        window: Duration,
        ceiling: Duration,
    ) -> Option<Duration> {
        if progressed {
            *self = Retries::default();
        }
        let since = *self.failing_since.get_or_insert(now);
        if now.saturating_duration_since(since) > window {
            return None;
        }
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(ceiling);
        Some(wait)
    }
}

/// The longest wait after `err`: short while a cluster is moving (a slot migration
/// on the target, a failover on the source).
pub(super) fn ceiling_after(err: &SyncError) -> Duration {
    match err {
        SyncError::Apply(ApplyError::Redirected { .. }) | SyncError::SourceTopology(_) => {
            MOVING_CLUSTER_CEILING
        }
        _ => CEILING,
    }
}

/// Whether a session moved the task on, from the progress `before` it to `after`.
pub(super) fn progressed(before: &Progress, after: &Progress) -> bool {
    (after.full_syncs, after.partial_syncs, after.applied_offset)
        != (
            before.full_syncs,
            before.partial_syncs,
            before.applied_offset,
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(20);

    fn waits(retries: &mut Retries, start: Instant, n: usize, ceiling: Duration) -> Vec<u64> {
        (0..n)
            .map(|_| retries.after_failure(start, false, WINDOW, ceiling))
            .map(|wait| wait.expect("within the window").as_millis() as u64)
            .collect()
    }

    #[test]
    fn the_wait_doubles_from_100_ms_up_to_the_ceiling() {
        let now = Instant::now();
        let mut retries = Retries::default();
        assert_eq!(
            waits(&mut retries, now, 10, CEILING),
            [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000, 10_000]
        );
        let mut moving = Retries::default();
        assert_eq!(
            waits(&mut moving, now, 6, MOVING_CLUSTER_CEILING),
            [100, 200, 400, 800, 1000, 1000]
        );
    }

    #[test]
    fn failures_beyond_the_window_give_up_and_progress_starts_over() {
        let start = Instant::now();
        let mut retries = Retries::default();
        assert!(retries
            .after_failure(start, false, WINDOW, CEILING)
            .is_some());
        let within = start + WINDOW;
        assert!(retries
            .after_failure(within, false, WINDOW, CEILING)
            .is_some());
        let beyond = start + WINDOW + Duration::from_millis(1);
        assert_eq!(retries.after_failure(beyond, false, WINDOW, CEILING), None);
        // A session that got somewhere begins a new run: the window counts from it.
        assert_eq!(
            retries.after_failure(beyond, true, WINDOW, CEILING),
            Some(FIRST_BACKOFF)
        );
        assert_eq!(
            retries.after_failure(beyond + WINDOW, false, WINDOW, CEILING),
            Some(FIRST_BACKOFF * 2)
        );
    }

    #[test]
    fn a_moving_cluster_is_asked_again_within_a_second() {
        let redirected = SyncError::Apply(ApplyError::Redirected {
            endpoint: "target".into(),
            command: "SET".into(),
            reply: "MOVED 1 a:1".into(),
        });
        assert_eq!(ceiling_after(&redirected), MOVING_CLUSTER_CEILING);
        let topology = SyncError::SourceTopology("no primary".into());
        assert_eq!(ceiling_after(&topology), MOVING_CLUSTER_CEILING);
        assert_eq!(ceiling_after(&SyncError::Internal("x".into())), CEILING);
    }

    #[test]
    fn only_a_copy_a_partial_resync_or_an_applied_offset_is_progress() {
        let before = Progress::default();
        let mut after = before.clone();
        after.received_offset = 500;
        after.keys_copied = 10;
        after.last_error = Some("x".into());
        assert!(!progressed(&before, &after));
        for change in [
            |p: &mut Progress| p.full_syncs += 1,
            |p: &mut Progress| p.partial_syncs += 1,
            |p: &mut Progress| p.applied_offset += 1,
        ] {
            let mut after = before.clone();
            change(&mut after);
            assert!(progressed(&before, &after));
        }
    }
}
