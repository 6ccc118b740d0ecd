//! The servers themselves fail: the source restarted with and without persistence,
//! the target restarted with and without persistence, the target failed over to a
//! replica that missed its last writes, and the source failed over to its replica
//! with the sync pointed at the new primary. lockstep promises the target ends equal
//! to the source, with counters exact wherever the source kept its history.
//!
//! Like every scenario, it must never judge by the sync's state: verify and plain
//! reads of the target are the oracle.

use std::time::Duration;

use anyhow::bail;
use lockstep_testkit::server::Persistence;
use lockstep_testkit::{FaultProxy, RedisServer, ReplicaSet, ServerConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::harness::{self, Engine};
use super::network::FULL_RESYNC_DOCUMENTED;
use super::restart::{counted_writer, counters_exact};
use super::{Outcome, Pair, Scenario};
use lockstep_testkit::Run;

const TARGET_FAILOVER_DOCUMENTED: &str = "If a failover occurs on the destination, data might be written only to memory without being persisted to the secondary database, which can cause data loss.";

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "source-restart-persistent",
            documented: FULL_RESYNC_DOCUMENTED,
            documented_short: "resync: inconsistency",
            promise: "the sync retries until the source is back and continues; counters exact, target equal",
            run: |pair, seed| Box::pin(source_restart(pair, seed, true)),
        },
        Scenario {
            name: "source-restart-empty",
            documented: FULL_RESYNC_DOCUMENTED,
            documented_short: "resync: inconsistency",
            promise: "a source back empty (new history) is copied again onto a cleared target: the target ends equal, no stale key",
            run: |pair, seed| Box::pin(source_restart(pair, seed, false)),
        },
        Scenario {
            name: "target-restart-persistent",
            documented: TARGET_FAILOVER_DOCUMENTED,
            documented_short: "target failover: data loss",
            promise: "the target's data and checkpoint persist together: the sync resumes exactly, counters exact",
            run: |pair, seed| Box::pin(target_restart(pair, seed, true)),
        },
        Scenario {
            name: "target-restart-empty",
            documented: TARGET_FAILOVER_DOCUMENTED,
            documented_short: "target failover: data loss",
            promise: "a target back empty has lost its checkpoint key with its data: the sync copies everything again, the target ends equal",
            run: |pair, seed| Box::pin(target_restart(pair, seed, false)),
        },
        Scenario {
            name: "target-failover",
            documented: TARGET_FAILOVER_DOCUMENTED,
            documented_short: "target failover: data loss",
            promise: "the promoted replica lost the old primary's last writes, and their checkpoint with them (one MULTI/EXEC): the sync resumes from the replica's own checkpoint and writes them again; counters exact, target equal",
            run: |pair, seed| Box::pin(target_failover(pair, seed)),
        },
        Scenario {
            name: "source-failover",
            documented: FULL_RESYNC_DOCUMENTED,
            documented_short: "source failover: full resync",
            promise: "pointed at the promoted replica, the sync continues partially (no full copy): counters exact, target equal",
            run: |pair, seed| Box::pin(source_failover(pair, seed)),
        },
    ]
}

fn persistence(on: bool) -> Persistence {
    if on {
        Persistence::Aof
    } else {
        Persistence::None
    }
}

async fn source_restart(pair: Pair, seed: u64, persistent: bool) -> anyhow::Result<Outcome> {
    let keys = 500 + seed % 500;
    let (mut source, target) =
        harness::start_pair(pair, |c| c.persistence(persistence(persistent)), |c| c).await?;
    harness::fill(&source, 0, "before:", keys).await?;
    let dir = tempfile::tempdir()?;
    let mut engine = Engine::spawn(harness::options(&source.url(), &target.url(), dir.path())?);
    engine.caught_up(&source).await?;
    harness::incr(&source, "counter", 100).await?;
    source.restart().await?;
    // A new session (partial or full) follows the restarted source.
    engine
        .wait_for(
            "a session after the restart",
            Duration::from_secs(30),
            |p| {
                p.full_syncs + p.partial_syncs >= 2
                    && p.phase == lockstep_sync::engine::Phase::Incremental
            },
        )
        .await?;
    harness::incr(&source, "counter", 100).await?;
    harness::fill(&source, 0, "after:", 100).await?;
    if let Err(err) = engine.caught_up(&source).await {
        let info = source.info("replication").await?;
        let mut t = target.client().await?;
        let checkpoint: Option<String> = t.run("GET LOCKSTEP_CHECKPOINT").await?;
        bail!(
            "{err:#}; the source is at {:?}:{:?}, the target's checkpoint {checkpoint:?}",
            info.get("master_replid"),
            info.get("master_repl_offset")
        );
    }
    let kept_history = persistent || harness::read_int(&source, "counter").await? == 200;
    let expected = if kept_history { 200 } else { 100 };
    let counter = harness::read_int(&target, "counter").await?;
    if counter != expected {
        bail!("counter {counter} on the target, {expected} expected");
    }
    // Keys of the source's previous life are on the target only if the source still
    // has them (a 6.2 source reloads the RDB its disk-based replication left behind).
    let stale_on_source = harness::keys(&source, 0, "before:*").await?;
    let stale_on_target = harness::keys(&target, 0, "before:*").await?;
    if stale_on_target != stale_on_source {
        bail!(
            "{} keys of the source's previous life on the target, {} on the source",
            stale_on_target.len(),
            stale_on_source.len()
        );
    }
    let report = harness::consistent(&source, &target, 101).await?;
    let p = engine.now();
    engine.finish().await?;
    Ok(Outcome::new(format!(
        "source restarted {} ({} old keys back): {} full / {} partial syncs, counter {counter} exact, {} keys equal",
        if persistent { "with AOF" } else { "without persistence" },
        stale_on_source.len(),
        p.full_syncs,
        p.partial_syncs,
        report.keys_compared
    )))
}

async fn target_restart(pair: Pair, seed: u64, persistent: bool) -> anyhow::Result<Outcome> {
    let keys = 500 + seed % 500;
    let (source, mut target) =
        harness::start_pair(pair, |c| c, |c| c.persistence(persistence(persistent))).await?;
    harness::fill(&source, 0, "key:", keys).await?;
    let dir = tempfile::tempdir()?;
    let mut engine = Engine::spawn(harness::options(&source.url(), &target.url(), dir.path())?);
    engine.caught_up(&source).await?;
    let (stop, writer) = counted_writer(&source)?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    target.restart().await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = stop.send(true);
    let done = writer.await??;
    engine.caught_up(&source).await?;
    counters_exact(&target, done).await?;
    let report = harness::consistent(&source, &target, keys).await?;
    let p = engine.now();
    engine.finish().await?;
    Ok(Outcome::new(format!(
        "target restarted {}: {} full / {} partial syncs, counter {done} exact, {} keys equal",
        if persistent { "with AOF" } else { "empty" },
        p.full_syncs,
        p.partial_syncs,
        report.keys_compared
    )))
}

async fn source_failover(pair: Pair, seed: u64) -> anyhow::Result<Outcome> {
    let keys = 500 + seed % 500;
    let mut set = ReplicaSet::start(ServerConfig::new(pair.source), 1).await?;
    let target = RedisServer::start(ServerConfig::new(pair.target)).await?;
    harness::fill(set.primary(), 0, "key:", keys).await?;
    let dir = tempfile::tempdir()?;
    let mut engine = Engine::spawn(harness::options(
        &set.primary().url(),
        &target.url(),
        dir.path(),
    )?);
    harness::incr(set.primary(), "counter", 100).await?;
    engine.caught_up(set.primary()).await?;
    set.failover_to(1).await?;
    // The old primary is a replica now: the task following it is stopped and a new
    // one is pointed at the promoted server, from the same checkpoint.
    let _ = engine.finish().await;
    let mut engine = Engine::spawn(harness::options(
        &set.primary().url(),
        &target.url(),
        dir.path(),
    )?);
    harness::incr(set.primary(), "counter", 100).await?;
    engine.caught_up(set.primary()).await?;
    let p = engine.now();
    if p.full_syncs > 0 {
        bail!("the sync copied everything again after the failover ({p:?})");
    }
    let counter = harness::read_int(&target, "counter").await?;
    if counter != 200 {
        bail!("counter {counter} on the target, 200 expected");
    }
    let report = harness::consistent(set.primary(), &target, keys).await?;
    engine.finish().await?;
    Ok(Outcome::new(format!(
        "failover to the replica: resumed with {} partial / 0 full syncs, counter 200 exact, {} keys equal",
        p.partial_syncs, report.keys_compared
    )))
}

/// The target is a primary with a replica behind a fixed address (a virtual IP,
/// here a proxy). The replica is promoted while the sync still writes to the old
/// primary through the address, so the new primary misses those writes, as in an
/// asynchronous failover; then the old primary dies and the address moves.
async fn target_failover(pair: Pair, seed: u64) -> anyhow::Result<Outcome> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let keys = 500 + seed % 500;
    let source = RedisServer::start(ServerConfig::new(pair.source)).await?;
    let mut targets = ReplicaSet::start(ServerConfig::new(pair.target), 1).await?;
    let address = FaultProxy::start(targets.primary().addr()).await?;
    harness::fill(&source, 0, "key:", keys).await?;
    let dir = tempfile::tempdir()?;
    let options = harness::options(
        &source.url(),
        &address.url_for(targets.primary()),
        dir.path(),
    )?;
    let mut engine = Engine::spawn(options);
    engine.caught_up(&source).await?;
    // The replica holds the copy before the writes start (promoting one that is
    // still loading its first sync would only show an empty target copied again).
    targets.wait_in_sync().await?;
    let (stop, writer) = counted_writer(&source)?;
    tokio::time::sleep(Duration::from_millis(rng.random_range(100..400))).await;
    // The replica is promoted: from here on it gets nothing from the old primary,
    // which still takes the sync's writes for a while.
    let mut promoted = targets.servers[1].client().await?;
    promoted.run::<()>("REPLICAOF NO ONE").await?;
    tokio::time::sleep(Duration::from_millis(rng.random_range(200..600))).await;
    let old_counter = harness::read_int(&targets.servers[0], "counter").await?;
    let new_counter = harness::read_int(&targets.servers[1], "counter").await?;
    targets.servers[0].kill9();
    address.move_upstream(targets.servers[1].addr());
    tokio::time::sleep(Duration::from_millis(rng.random_range(100..400))).await;
    let _ = stop.send(true);
    let done = writer.await??;
    engine.caught_up(&source).await?;
    let p = engine.now();
    if old_counter <= new_counter {
        bail!("the promoted replica missed nothing (counter {new_counter} on it, {old_counter} on the old primary): the fault did not happen");
    }
    if p.full_syncs != 1 || p.partial_syncs == 0 {
        bail!("expected a partial resync from the promoted replica's checkpoint, no second copy: {p:?}");
    }
    let target = &targets.servers[1];
    counters_exact(target, done).await?;
    let report = harness::consistent(&source, target, keys).await?;
    engine.finish().await?;
    Ok(Outcome::new(format!(
        "the promoted replica missed {} INCRs the old primary had applied; resumed from its own checkpoint ({} partial / 0 extra full syncs): counter {done} exact, {} keys equal",
        old_counter - new_counter,
        p.partial_syncs,
        report.keys_compared
    )))
}
