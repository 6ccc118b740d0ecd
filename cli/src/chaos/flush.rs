//! FLUSHALL and FLUSHDB on the source while the full copy runs and while the stream
//! is applied. DTS says not to run them; lockstep replicates them (a FLUSHALL that
//! kills the source's snapshot child makes the copy start again, on a cleared target).
//!
//! Like every scenario, it must never judge by the sync's state: verify is the oracle.

use lockstep_testkit::faults;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::harness::{self, Engine};
use super::{Outcome, Pair, Scenario, ScenarioFuture};

const DOCUMENTED: &str = "Do not run these commands during synchronization — they cause data inconsistency between source and destination.";

pub fn scenarios() -> Vec<Scenario> {
    let promise = "the flush is replicated in order: the target ends equal to the source (verify: no difference)";
    vec![
        Scenario {
            name: "flushall-during-full-copy",
            documented: DOCUMENTED,
            documented_short: "FLUSHALL: inconsistency",
            promise,
            run: |pair, seed| Box::pin(flush_during(pair, seed, true, true)) as ScenarioFuture,
        },
        Scenario {
            name: "flushdb-during-full-copy",
            documented: DOCUMENTED,
            documented_short: "FLUSHDB: inconsistency",
            promise,
            run: |pair, seed| Box::pin(flush_during(pair, seed, true, false)),
        },
        Scenario {
            name: "flushall-during-incremental",
            documented: DOCUMENTED,
            documented_short: "FLUSHALL: inconsistency",
            promise,
            run: |pair, seed| Box::pin(flush_during(pair, seed, false, true)),
        },
        Scenario {
            name: "flushdb-during-incremental",
            documented: DOCUMENTED,
            documented_short: "FLUSHDB: inconsistency",
            promise,
            run: |pair, seed| Box::pin(flush_during(pair, seed, false, false)),
        },
    ]
}

/// Keys in db 0 and db 1, a sync, FLUSHALL (or FLUSHDB of db 0) during the full copy
/// or the stream, new writes after it; the target must end equal to the source.
async fn flush_during(
    pair: Pair,
    seed: u64,
    during_full_copy: bool,
    all: bool,
) -> anyhow::Result<Outcome> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let before = rng.random_range(2000..3000);
    let after = rng.random_range(100..300);
    let (source, target) = harness::start_pair(pair, |c| c, |c| c).await?;
    harness::fill(&source, 0, "before:", before).await?;
    harness::fill(&source, 1, "kept:", 300).await?;
    if during_full_copy {
        // About 1 s of snapshot: the flush lands while keys are being copied.
        harness::slow_snapshot(&source, 400).await?;
    }
    let dir = tempfile::tempdir()?;
    let mut engine = Engine::spawn(harness::options(&source.url(), &target.url(), dir.path())?);
    if during_full_copy {
        engine.copying().await?;
    } else {
        engine.caught_up(&source).await?;
    }
    if all {
        faults::flushall(&source).await?;
    } else {
        faults::flushdb(&source, 0).await?;
    }
    harness::slow_snapshot(&source, 0).await?;
    harness::fill(&source, 0, "after:", after).await?;
    engine.caught_up(&source).await?;
    // A flushed key must not survive on the target: verify's target pass finds extras.
    let report = harness::consistent(&source, &target, after).await?;
    let p = engine.now();
    engine.finish().await?;
    let stale = harness::keys(&target, 0, "before:*").await?.len();
    if stale > 0 {
        anyhow::bail!("{stale} flushed keys survived on the target");
    }
    Ok(Outcome::new(format!(
        "{} flushed mid-{}; {} keys equal, 0 stale ({} full syncs)",
        if all { "FLUSHALL" } else { "FLUSHDB 0" },
        if during_full_copy { "copy" } else { "stream" },
        report.keys_compared,
        p.full_syncs
    )))
}
