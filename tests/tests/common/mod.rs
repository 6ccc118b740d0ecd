//! What the sync end-to-end tests share: starting an engine task against testkit
//! servers, waiting until the target has caught up, and checking equality with the
//! verify crate (plain reads of both sides, never the sync's own state). [`cluster`]:
//! the same for a cluster source.

#![allow(dead_code)] // each test file uses its own part

pub mod cluster;

use std::path::Path;
use std::time::{Duration, Instant};

use lockstep_sync::endpoint::Endpoint;
use lockstep_sync::engine::{self, Phase, Progress, Summary, SyncError, SyncOptions};
use lockstep_testkit::guard::assert_no_guard_expiry;
use lockstep_testkit::RedisServer;
use lockstep_verify::{compare, CompareOptions};
use tokio::sync::watch;

/// A running engine task.
pub struct SyncTask {
    pub stop: watch::Sender<bool>,
    pub progress: watch::Receiver<Progress>,
    pub handle: tokio::task::JoinHandle<Result<Summary, SyncError>>,
}

impl SyncTask {
    pub fn spawn(options: SyncOptions) -> SyncTask {
        let (stop, stop_rx) = watch::channel(false);
        let (progress_tx, progress) = watch::channel(Progress::default());
        let handle = tokio::spawn(engine::run(options, stop_rx, progress_tx));
        SyncTask {
            stop,
            progress,
            handle,
        }
    }

    /// The progress right now.
    pub fn now(&self) -> Progress {
        self.progress.borrow().clone()
    }

    /// Asks the task to stop and returns how it ended.
    pub async fn finish(self) -> anyhow::Result<Summary> {
        self.stop.send(true)?;
        Ok(self.handle.await??)
    }
}

/// Options for a task from `source` to `target` with a short retry window (20 s).
pub fn options(
    source: &RedisServer,
    target: &RedisServer,
    dir: &Path,
) -> anyhow::Result<SyncOptions> {
    let mut options = SyncOptions::new(
        Endpoint::parse(&source.url())?,
        Endpoint::parse(&target.url())?,
        dir,
    );
    options.retry_window = Duration::from_secs(20);
    Ok(options)
}

/// Waits until the target has applied everything the source has written so far;
/// fails at once with the task's error if the task ends.
pub async fn caught_up(task: &mut SyncTask, source: &RedisServer) -> anyhow::Result<()> {
    let wanted = source
        .info("replication")
        .await?
        .int("master_repl_offset")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if task.handle.is_finished() {
            let ended = (&mut task.handle).await?;
            anyhow::bail!("the sync task ended early: {ended:?}");
        }
        let p = task.now();
        if p.phase == Phase::Incremental && p.applied_offset >= wanted {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("the sync did not catch up within 60 s: {p:?}, wanted {wanted}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Verify finds no difference between `source` and `target`, and no key of the
/// target is left with a TTL guard expiry (the full copy's guards are settled once
/// the stream has passed the copy's end; waited for, as the settle runs on the
/// sync's next checkpoint tick).
pub async fn assert_equal(source: &RedisServer, target: &RedisServer) -> anyhow::Result<()> {
    assert_no_guard_expiry(target, Duration::from_secs(30)).await?;
    let report = compare(
        &source.redis_client()?,
        &target.redis_client()?,
        &CompareOptions::default(),
    )
    .await?;
    assert!(
        report.is_consistent(),
        "{} -> {}: {report}",
        source.version(),
        target.version()
    );
    assert!(report.keys_compared > 0, "nothing was compared");
    Ok(())
}
