//! The sync test harness shared by the chaos catalog (`lockstep chaos`) and the
//! end-to-end tests (`tests/`): an engine task run in-process ([`SyncTask`]: spawned,
//! watched, stopped cleanly or dropped abruptly), waiting for it to catch up, and the
//! verdicts judged by verify after the TTL guard check.
//!
//! It fits between the testkit's servers and the callers' scenarios: the callers
//! start servers and inject faults, this module runs the sync and judges. Built only
//! with the testkit's `harness` feature, so the sync and verify crates, which use
//! the testkit as a dev-dependency, do not depend on themselves through it.
//!
//! It must never take the sync's own state as the oracle: progress is only used to
//! wait (a phase, an offset reached), while equality is always verify's reading of
//! both servers, and the guard check is a plain read of the target.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use lockstep_sync::endpoint::Endpoint;
use lockstep_sync::engine::{self, Phase, Progress, Summary, SyncError, SyncOptions};
use lockstep_verify::{compare, CompareOptions, Report};
use tokio::sync::watch;

use crate::guard::assert_no_guard_expiry_at;
use crate::topology::Cluster;
use crate::RedisServer;

/// How long [`SyncTask::caught_up`] waits for the target to reach the source.
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the TTL guard check waits for the guards to be settled: the sync settles
/// them on its next checkpoint tick after the stream passed the copy's end.
pub const GUARD_SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A running engine task: `engine::run` spawned on the current runtime.
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

    /// Asks the task to stop and returns how it ended; fails when the task had
    /// already ended before it was asked (its outcome is in the error).
    pub async fn finish(self) -> anyhow::Result<Summary> {
        if self.stop.send(true).is_err() {
            let ended = self.handle.await;
            bail!("the sync task had ended before it was asked to stop: {ended:?}");
        }
        Ok(self.handle.await.context("the sync task")??)
    }

    /// Ends the task abruptly, as a kill would: its future is dropped wherever it is.
    pub async fn kill(self) {
        self.handle.abort();
        let _ = self.handle.await;
    }

    /// Fails with the task's outcome when it has ended (`what`: what was awaited).
    pub async fn fail_if_ended(&mut self, what: &str) -> anyhow::Result<()> {
        if self.handle.is_finished() {
            let ended = (&mut self.handle).await;
            bail!("the sync task ended while waiting for {what}: {ended:?}");
        }
        Ok(())
    }

    /// Waits until `ready` holds for the progress; fails with the task's outcome if
    /// the task ends first, or with the last progress after `timeout`.
    pub async fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        ready: impl Fn(&Progress) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.fail_if_ended(what).await?;
            let p = self.now();
            if ready(&p) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{what}: not within {timeout:?}; progress {p:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the target has applied everything `source` has written so far
    /// (offsets of the source's current history: after a restart or a failover, wait
    /// for the new session first).
    pub async fn caught_up(&mut self, source: &RedisServer) -> anyhow::Result<()> {
        let wanted = source
            .info("replication")
            .await?
            .int("master_repl_offset")?;
        let what = format!("the target caught up to the source's offset {wanted}");
        self.wait_for(&what, CATCH_UP_TIMEOUT, |p| {
            p.phase == Phase::Incremental && p.applied_offset >= wanted
        })
        .await
    }

    /// Waits until the full copy has written at least one key.
    pub async fn copying(&mut self) -> anyhow::Result<()> {
        self.wait_for("the full copy under way", Duration::from_secs(20), |p| {
            p.phase == Phase::FullCopy && p.keys_copied > 0
        })
        .await
    }
}

/// Options of a task from `source` to `target` (URLs), with `retry_window`.
pub fn options(
    source: &str,
    target: &str,
    dir: &Path,
    retry_window: Duration,
) -> anyhow::Result<SyncOptions> {
    let mut options = SyncOptions::new(Endpoint::parse(source)?, Endpoint::parse(target)?, dir);
    options.retry_window = retry_window;
    Ok(options)
}

/// The URL of the cluster's last node (a replica when the cluster has replicas): any
/// node's address is enough for lockstep and verify.
pub fn seed_url(cluster: &Cluster) -> String {
    cluster
        .nodes
        .last()
        .map(RedisServer::url)
        .unwrap_or_default()
}

/// One task per shard of the cluster source `base` names, spawned; each reads its
/// shard's replica when `from_replica`.
pub async fn spawn_shard_tasks(
    base: SyncOptions,
    from_replica: bool,
) -> anyhow::Result<Vec<SyncTask>> {
    let shards = lockstep_sync::cluster_source::expand(base, from_replica).await?;
    Ok(shards.into_iter().map(SyncTask::spawn).collect())
}

/// The TTL guard invariant, judged before every verdict: once the stream has passed
/// the end of a full copy, no key of the target (a server or a cluster, by URL)
/// keeps a guard expiry (the year 3000). Waits up to `timeout` for the settle.
pub async fn no_guard_left(target_url: &str, timeout: Duration) -> anyhow::Result<()> {
    assert_no_guard_expiry_at(target_url, timeout)
        .await
        .context("a key keeps the full copy's TTL guard expiry (it would never expire)")
}

/// Verify between any node of the source and of the target (either may be a
/// cluster), with `options`: its report.
pub async fn verify_urls(
    source_url: &str,
    target_url: &str,
    options: &CompareOptions,
) -> anyhow::Result<Report> {
    compare(
        &redis::Client::open(source_url)?,
        &redis::Client::open(target_url)?,
        options,
    )
    .await
    .context("verify")
}

/// Verify (default options) between two servers, after [`no_guard_left`] on the
/// target with [`GUARD_SETTLE_TIMEOUT`].
pub async fn verify_settled(source: &RedisServer, target: &RedisServer) -> anyhow::Result<Report> {
    no_guard_left(&target.url(), GUARD_SETTLE_TIMEOUT).await?;
    compare(
        &source.redis_client()?,
        &target.redis_client()?,
        &CompareOptions::default(),
    )
    .await
    .context("verify")
}

/// Waits (up to `timeout`, verify every 200 ms) until verify with `options` finds
/// the target equal to the source (either may be a cluster, named by any node);
/// then checks that no TTL guard is left (waiting up to `timeout` too). Returns that
/// report, or fails with the last one, or at once with a task's outcome if one ends.
pub async fn wait_consistent(
    source_url: &str,
    target_url: &str,
    tasks: &mut [SyncTask],
    options: &CompareOptions,
    timeout: Duration,
) -> anyhow::Result<Report> {
    let deadline = Instant::now() + timeout;
    loop {
        for task in tasks.iter_mut() {
            task.fail_if_ended("verify to find the target equal")
                .await?;
        }
        let report = verify_urls(source_url, target_url, options).await?;
        if report.is_consistent() {
            no_guard_left(target_url, timeout).await?;
            return Ok(report);
        }
        if Instant::now() > deadline {
            bail!("{target_url} never equalled {source_url} within {timeout:?}: {report}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
