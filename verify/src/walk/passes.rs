//! The passes over one database: the source pass (every source key compared), the
//! target pass (every target key looked for on the source), skipped when the count
//! proof holds ([`crate::judge::counts`]), the key-list pass, and the re-finding of
//! fingerprinted differences in a later round.
//!
//! It must never skip the target pass on anything but a proof.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::stream;
use roaring::RoaringBitmap;

use crate::judge::counts::{self, QuietStates, SourcePass};
use crate::read::quiet::quiet_states;
use crate::report::run::TargetPass;
use crate::report::track::fingerprint;
use crate::walk::batch::{compare_batch, extra_batch};
use crate::walk::context::Ctx;
use crate::walk::pools::Pools;
use crate::walk::scan::{scan, Batch, Limiter};
use crate::walk::schedule::run_batches;
use crate::walk::tally::Tally;

/// Both passes over one database; how the target's extra keys were looked for.
///
/// The target pass waits while counts may still prove it unneeded: the quiet states of
/// both sides are read every `QUIET_POLL`, and as soon as one changes (a live sync,
/// any write) the target pass starts, alongside the rest of the source pass.
pub(crate) async fn walk_db(
    ctx: &Arc<Ctx>,
    pools: &Pools,
    db: u32,
    tally: &mut Tally,
) -> anyhow::Result<TargetPass> {
    const QUIET_POLL: Duration = Duration::from_millis(500);
    let before = if counts::may_prove(&ctx.options) && ctx.view.is_none() {
        quiet(ctx, pools).await
    } else {
        None
    };
    let (scanned, on_both) = (tally.counts.scanned, tally.counts.on_both);
    let mut target_tally = Tally::new(ctx.options.max_listed);
    let source_done = tokio::sync::Notify::new();
    let source_pass = async {
        let limiter = Limiter::new(ctx.options.keys_per_second);
        let unscripted = |k: &[u8]| !ctx.scripted(k);
        let source_keys = scan(ctx, pools.src[0].clone(), false, limiter, &unscripted);
        let result = run_batches(pools, source_keys, tally, |s, d, keys| {
            compare_batch(ctx, s, d, db, keys, false)
        })
        .await;
        source_done.notify_one();
        result
    };
    let early_target_pass = async {
        if let Some(before) = &before {
            loop {
                tokio::select! {
                    _ = source_done.notified() => return Ok(false),
                    _ = tokio::time::sleep(QUIET_POLL) => {}
                }
                if quiet(ctx, pools).await.as_ref() != Some(before) {
                    break;
                }
            }
        }
        target_pass(ctx, pools, db, &mut target_tally).await?;
        Ok::<_, anyhow::Error>(true)
    };
    let ((), target_done) = tokio::try_join!(source_pass, early_target_pass)?;
    if !target_done {
        let pass = SourcePass {
            scanned: tally.counts.scanned - scanned,
            on_both: tally.counts.on_both - on_both,
        };
        let proven = match before {
            Some(before) => {
                let after = quiet(ctx, pools).await;
                counts::proves_no_extra_key(&before, after.as_ref(), pass)
            }
            None => false,
        };
        if proven {
            return Ok(TargetPass::ProvenByCounts);
        }
        target_pass(ctx, pools, db, &mut target_tally).await?;
    }
    tally.merge(target_tally);
    Ok(TargetPass::Scanned)
}

/// Every target key of `db` (on the target: the database `db` is written into)
/// checked on the source, by its source name.
pub(crate) async fn target_pass(
    ctx: &Arc<Ctx>,
    pools: &Pools,
    db: u32,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    let limiter = Limiter::new(ctx.options.keys_per_second);
    let target_keys = scan(ctx, pools.dst[0].clone(), true, limiter, &|_| true);
    run_batches(pools, target_keys, tally, |s, d, keys| {
        extra_batch(ctx, s, d, db, keys)
    })
    .await
}

/// Compares `keys` of `db` (source names) on both sides (a key list, or re-checked
/// differences): a key present only on the target is extra.
pub(crate) async fn check_keys(
    ctx: &Arc<Ctx>,
    pools: &Pools,
    db: u32,
    keys: Vec<Vec<u8>>,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    let keys: Vec<Vec<u8>> = keys
        .into_iter()
        .filter(|k| ctx.wanted(k) && !ctx.scripted(k))
        .collect();
    let batches = listed_batches(ctx, keys);
    run_batches(pools, stream::iter(batches), tally, |s, d, keys| {
        compare_batch(ctx, s, d, db, keys, true)
    })
    .await
}

/// Finds again, by walking both sides, the keys of `db` whose fingerprints are in
/// `fingerprints` (differences that were counted, not listed), except `known` ones,
/// and compares them.
pub(crate) async fn refind(
    ctx: &Arc<Ctx>,
    pools: &Pools,
    db: u32,
    fingerprints: &RoaringBitmap,
    known: &HashSet<&[u8]>,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    let chosen = |key: &[u8]| fingerprints.contains(fingerprint(key)) && !known.contains(key);
    let unscripted = |key: &[u8]| chosen(key) && !ctx.scripted(key);
    let limiter = Limiter::new(ctx.options.keys_per_second);
    let source_keys = scan(ctx, pools.src[0].clone(), false, limiter, &unscripted);
    run_batches(pools, source_keys, tally, |s, d, keys| {
        compare_batch(ctx, s, d, db, keys, false)
    })
    .await?;
    let limiter = Limiter::new(ctx.options.keys_per_second);
    let target_keys = scan(ctx, pools.dst[0].clone(), true, limiter, &chosen);
    run_batches(pools, target_keys, tally, |s, d, keys| {
        extra_batch(ctx, s, d, db, keys)
    })
    .await
}

/// Checks again target keys of `db` that no source key is written as (renamed
/// prefixes: [`crate::keymap`]): each still on the target is extra.
pub(crate) async fn check_target_keys(
    ctx: &Arc<Ctx>,
    pools: &Pools,
    db: u32,
    keys: Vec<Vec<u8>>,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    let batches = listed_batches(ctx, keys);
    run_batches(pools, stream::iter(batches), tally, |s, d, keys| {
        extra_batch(ctx, s, d, db, keys)
    })
    .await
}

/// A list of keys as batches of `batch_keys`; a key listed twice (a line repeated,
/// SCAN returning a key twice) is read once.
fn listed_batches(ctx: &Ctx, mut keys: Vec<Vec<u8>>) -> Vec<anyhow::Result<Batch>> {
    keys.sort_unstable();
    keys.dedup();
    keys.chunks(ctx.options.batch_keys.max(1))
        .map(|chunk| {
            Ok(Batch {
                scanned: 0,
                keys: chunk.to_vec(),
            })
        })
        .collect()
}

/// The quiet states of both sides ([`quiet_states`]), read on each side's first
/// connection.
async fn quiet(ctx: &Ctx, pools: &Pools) -> Option<QuietStates> {
    quiet_states(
        ctx.own_checkpoint(),
        pools.src[0].clone(),
        pools.dst[0].clone(),
    )
    .await
}
