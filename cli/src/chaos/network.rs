//! The link to the source cut (through the testkit's FaultProxy) for less and for
//! more than the source's replication backlog holds. A short cut resumes partially
//! (PSYNC +CONTINUE) with counters exact; a long one forces a full resync, which first
//! clears the target so keys deleted during the cut do not survive.
//!
//! Like every scenario, it must never judge by the sync's state beyond its reported
//! resync counts: verify and the target's counters are the oracle.

use std::time::Duration;

use anyhow::bail;
use lockstep_sync::endpoint::Endpoint;
use lockstep_testkit::faults::set_backlog_size;
use lockstep_testkit::FaultProxy;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::harness::{self, Engine};
use super::restart::{counted_writer, counters_exact};
use super::{Outcome, Pair, Scenario};

pub const FULL_RESYNC_DOCUMENTED: &str = "A full re-synchronization may occur in these situations, which can cause data inconsistency: a transient connection failure prevents breakpoint resumption; a failover occurs on the source or destination; the source or destination endpoint changes; or the synchronization objects are modified.";

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "network-cut-within-backlog",
            documented: FULL_RESYNC_DOCUMENTED,
            documented_short: "transient cut: full resync",
            promise: "a cut the backlog covers resumes partially (no full resync), counters exact",
            run: |pair, seed| Box::pin(short_cuts(pair, seed)),
        },
        Scenario {
            name: "network-cut-beyond-backlog",
            documented: FULL_RESYNC_DOCUMENTED,
            documented_short: "resync: inconsistency",
            promise: "the full resync first clears the target: keys deleted during the cut are gone, the target ends equal",
            run: |pair, seed| Box::pin(long_cut(pair, seed)),
        },
    ]
}

async fn short_cuts(pair: Pair, seed: u64) -> anyhow::Result<Outcome> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (source, target) = harness::start_pair(pair, |c| c, |c| c).await?;
    let proxy = FaultProxy::start(source.addr()).await?;
    let dir = tempfile::tempdir()?;
    let mut options = harness::options(&source.url(), &target.url(), dir.path())?;
    options.source = Endpoint::parse(&proxy.url_for(&source))?;
    let mut engine = Engine::spawn(options);
    engine.caught_up(&source).await?;
    let (stop, writer) = counted_writer(&source)?;
    let cuts = 3;
    for round in 1..=cuts {
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..500))).await;
        proxy.handle().cut_all();
        engine
            .wait_for(
                "a partial resync after the cut",
                Duration::from_secs(20),
                |p| p.partial_syncs >= round,
            )
            .await?;
    }
    let _ = stop.send(true);
    let done = writer.await??;
    engine.caught_up(&source).await?;
    let p = engine.now();
    if (p.full_syncs, p.partial_syncs) != (1, cuts) {
        bail!(
            "{} full and {} partial syncs; expected 1 full and {cuts} partial",
            p.full_syncs,
            p.partial_syncs
        );
    }
    counters_exact(&target, done).await?;
    harness::consistent(&source, &target, 2).await?;
    engine.finish().await?;
    Ok(Outcome::new(format!(
        "{cuts} cuts: {cuts} partial resyncs, 0 extra full; counter {done} exact"
    )))
}

async fn long_cut(pair: Pair, seed: u64) -> anyhow::Result<Outcome> {
    let doomed = 100 + seed % 100;
    let (source, target) = harness::start_pair(pair, |c| c, |c| c).await?;
    set_backlog_size(&source, 16 << 10).await?;
    harness::fill(&source, 0, "doomed:", doomed).await?;
    let proxy = FaultProxy::start(source.addr()).await?;
    let dir = tempfile::tempdir()?;
    let mut options = harness::options(&source.url(), &target.url(), dir.path())?;
    options.source = Endpoint::parse(&proxy.url_for(&source))?;
    options.heartbeat = false;
    let mut engine = Engine::spawn(options);
    engine.caught_up(&source).await?;
    // Down while the source deletes keys and writes more than its backlog holds.
    let handle = proxy.handle();
    handle.refuse_new(true);
    handle.cut_all();
    let mut conn = source.client().await?;
    let mut pipe = redis::pipe();
    for i in 0..doomed {
        pipe.cmd("DEL").arg(format!("doomed:{i}")).ignore();
    }
    let filler = vec![b'x'; 1024];
    for i in 0..200 {
        pipe.cmd("SET")
            .arg(format!("after:{i}"))
            .arg(&filler)
            .ignore();
    }
    pipe.query_async::<()>(&mut conn).await?;
    handle.refuse_new(false);
    engine
        .wait_for("a second full sync", Duration::from_secs(60), |p| {
            p.full_syncs >= 2
        })
        .await?;
    engine.caught_up(&source).await?;
    let survivors = harness::keys(&target, 0, "doomed:*").await?.len();
    if survivors > 0 {
        bail!("{survivors} keys deleted on the source survived the full resync");
    }
    let report = harness::consistent(&source, &target, 200).await?;
    let p = engine.now();
    engine.finish().await?;
    Ok(Outcome::new(format!(
        "backlog overrun: full resync #{}, {doomed} deleted keys gone, {} keys equal",
        p.full_syncs, report.keys_compared
    )))
}
