//! The sync killed and restarted, in both phases: its task is dropped wherever it
//! stands (as a kill -9 would end it; `cli/tests/kill9.rs` does the same to the
//! process), then started again on the same checkpoint directory. A counted writer
//! (INCR + RPUSH) runs meanwhile: a replayed or skipped command shows in the count.
//!
//! Like every scenario, it must never judge by the sync's state: the counted writer's
//! count is read from the target.

use std::time::Duration;

use anyhow::bail;
use lockstep_testkit::RedisServer;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::watch;

use super::harness::{self, Engine};
use super::{Outcome, Pair, Scenario};
use lockstep_testkit::Run;

const DOCUMENTED: &str = "If the synchronization instance includes both full and incremental tasks, restarting may cause both tasks to run again from the beginning.";

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "kill-sync-during-full-copy",
            documented: DOCUMENTED,
            documented_short: "restart: both phases rerun",
            promise: "a copy cut short starts again on a cleared target; the target ends equal, counters exact",
            run: |pair, seed| Box::pin(kill_during_full_copy(pair, seed)),
        },
        Scenario {
            name: "kill-sync-during-incremental",
            documented: DOCUMENTED,
            documented_short: "restart: both phases rerun",
            promise: "each restart resumes from the target's checkpoint with no full copy; counters exact (no command replayed or lost)",
            run: |pair, seed| Box::pin(kill_during_incremental(pair, seed)),
        },
    ]
}

/// A writer that does `INCR counter` and `RPUSH log <n>` until told to stop, and
/// returns how many it did.
pub fn counted_writer(
    source: &RedisServer,
) -> anyhow::Result<(
    watch::Sender<bool>,
    tokio::task::JoinHandle<anyhow::Result<i64>>,
)> {
    let client = source.redis_client()?;
    let (stop, mut stopped) = watch::channel(false);
    let handle = tokio::spawn(async move {
        let mut conn = client.get_multiplexed_async_connection().await?;
        let mut done = 0i64;
        while !*stopped.borrow_and_update() {
            done += 1;
            redis::pipe()
                .cmd("INCR")
                .arg("counter")
                .ignore()
                .cmd("RPUSH")
                .arg("log")
                .arg(done)
                .ignore()
                .query_async::<()>(&mut conn)
                .await?;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        anyhow::Ok(done)
    });
    Ok((stop, handle))
}

/// The counter on the target equals the writes done, and the list has no duplicate.
pub async fn counters_exact(target: &RedisServer, done: i64) -> anyhow::Result<()> {
    let counter = harness::read_int(target, "counter").await?;
    let mut conn = target.client().await?;
    let len: i64 = conn.run("LLEN log").await?;
    if counter != done || len != done {
        bail!(
            "the source did {done} INCR+RPUSH; the target has counter {counter}, list length {len}"
        );
    }
    Ok(())
}

async fn kill_during_full_copy(pair: Pair, seed: u64) -> anyhow::Result<Outcome> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (source, target) = harness::start_pair(pair, |c| c, |c| c).await?;
    harness::fill(&source, 0, "key:", 3000).await?;
    harness::slow_snapshot(&source, 500).await?;
    let (stop, writer) = counted_writer(&source)?;
    let dir = tempfile::tempdir()?;
    let options = harness::options(&source.url(), &target.url(), dir.path())?;
    let mut engine = Engine::spawn(options.clone());
    engine.copying().await?;
    tokio::time::sleep(Duration::from_millis(rng.random_range(0..600))).await;
    let copied = engine.now().keys_copied;
    engine.kill().await;
    harness::slow_snapshot(&source, 0).await?;
    let mut engine = Engine::spawn(options);
    engine.caught_up(&source).await?;
    let _ = stop.send(true);
    let done = writer.await??;
    engine.caught_up(&source).await?;
    counters_exact(&target, done).await?;
    let report = harness::consistent(&source, &target, 3000).await?;
    engine.finish().await?;
    Ok(Outcome::new(format!(
        "killed after {copied} of 3000 keys copied; the copy ran again; {} keys equal, counter {done} exact",
        report.keys_compared
    )))
}

async fn kill_during_incremental(pair: Pair, seed: u64) -> anyhow::Result<Outcome> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (source, target) = harness::start_pair(pair, |c| c, |c| c).await?;
    harness::fill(&source, 0, "key:", 1000).await?;
    let dir = tempfile::tempdir()?;
    let options = harness::options(&source.url(), &target.url(), dir.path())?;
    let mut engine = Engine::spawn(options.clone());
    engine.caught_up(&source).await?;
    let (stop, writer) = counted_writer(&source)?;
    let rounds = 4;
    let mut full_copies_after_restart = 0;
    for _ in 0..rounds {
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..700))).await;
        engine.kill().await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..300))).await;
        engine = Engine::spawn(options.clone());
        engine
            .wait_for("the restarted task streams", Duration::from_secs(20), |p| {
                p.phase == lockstep_sync::engine::Phase::Incremental
            })
            .await?;
        full_copies_after_restart += engine.now().full_syncs;
    }
    let _ = stop.send(true);
    let done = writer.await??;
    engine.caught_up(&source).await?;
    if full_copies_after_restart > 0 {
        bail!(
            "{full_copies_after_restart} full copies after restarts: the checkpoint was not used"
        );
    }
    counters_exact(&target, done).await?;
    let report = harness::consistent(&source, &target, 1000).await?;
    engine.finish().await?;
    Ok(Outcome::new(format!(
        "{rounds} kills mid-stream, each resumed partially (0 full copies); counter {done} exact; {} keys equal",
        report.keys_compared
    )))
}
