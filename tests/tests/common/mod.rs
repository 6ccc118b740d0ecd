//! What the sync end-to-end tests share: the testkit's sync harness ([`SyncTask`],
//! an engine task against testkit servers, waiting until the target has caught up)
//! with these tests' 20 s retry window, and equality checked with the verify crate
//! (plain reads of both sides, never the sync's own state). [`cluster`]: the same
//! for a cluster on either side.

#![allow(dead_code)] // each test file uses its own part

pub mod cluster;

use std::path::Path;
use std::time::Duration;

use lockstep_sync::engine::SyncOptions;
use lockstep_testkit::harness;
use lockstep_testkit::RedisServer;

pub use lockstep_testkit::harness::SyncTask;

/// Options for a task from `source` to `target` with a short retry window (20 s).
pub fn options(
    source: &RedisServer,
    target: &RedisServer,
    dir: &Path,
) -> anyhow::Result<SyncOptions> {
    harness::options(&source.url(), &target.url(), dir, Duration::from_secs(20))
}

/// Waits until the target has applied everything the source has written so far;
/// fails at once with the task's error if the task ends.
pub async fn caught_up(task: &mut SyncTask, source: &RedisServer) -> anyhow::Result<()> {
    task.caught_up(source).await
}

/// Verify finds no difference between `source` and `target`, and no key of the
/// target is left with a TTL guard expiry (the full copy's guards are settled once
/// the stream has passed the copy's end; waited for, as the settle runs on the
/// sync's next checkpoint tick).
pub async fn assert_equal(source: &RedisServer, target: &RedisServer) -> anyhow::Result<()> {
    let report = harness::verify_settled(source, target).await?;
    assert!(
        report.is_consistent(),
        "{} -> {}: {report}",
        source.version(),
        target.version()
    );
    assert!(report.keys_compared > 0, "nothing was compared");
    Ok(())
}

/// Deletes the DataSet's keys with hash field TTLs (7.4+) in databases `0..dbs` of
/// `source`: they have no form on an older target (that refusal has its own test).
pub async fn drop_hash_field_ttls(source: &RedisServer, dbs: u32) -> anyhow::Result<()> {
    use lockstep_testkit::Run;
    let mut conn = source.client().await?;
    for db in 0..dbs {
        conn.run_args::<()>(("SELECT", db)).await?;
        let keys: Vec<String> = conn.run("KEYS hash-field-ttl*").await?;
        for key in keys {
            conn.run_args::<()>(("DEL", key)).await?;
        }
    }
    Ok(())
}
