//! The comparison of two deployments, end to end: the plan (which databases, which
//! keys), then per database a source pass and a target pass ([`crate::walk`]), then
//! the rounds that re-read the differing keys, then the [`Report`].
//!
//! This is the only module that knows the whole order of a run; the stages below it
//! know nothing of each other's order:
//! - [`crate::walk`]: which keys, in which batches, on which connections, how fast;
//! - [`crate::read`]: what each side answers (plain data: replies, heads, digests);
//! - [`crate::judge`]: what the answers mean (pure: a difference, or none);
//! - [`crate::report`]: what the run found and may claim, and its outputs.
//!
//! # How a database is walked
//! - The source pass: SCAN batches of the source's keys. Per batch, on both sides at
//!   once: `GETRANGE key 0 limit` of every key ([`CompareOptions::long_string_bytes`];
//!   0: one `MGET` of the whole batch), then `INFO keyspace` (is any key of the
//!   database carrying a TTL?). A key that GETRANGE returns non-empty on both sides is
//!   a string on both, and its bytes are its value (whatever the encoding); a reply of
//!   `limit + 1` bytes is a long string, compared in windows ([`crate::long_string`]).
//!   Then one pipeline per
//!   side: `TYPE` and `PTTL` of the other keys, and `PTTL` of the strings, only on a
//!   side whose database holds keys with a TTL (a key without one reads -1). Strings
//!   thus cost one GETRANGE per side, plus one PTTL where TTLs exist, instead of
//!   TYPE + PTTL + DUMP (or a Lua call per key): the servers' CPU is the limit, and the
//!   key lookups are what it is spent on. Collections of the same type: their lengths,
//!   then `DUMP` of those of at most `dump_elements_max` elements (byte-equal payloads
//!   are equal values: the *fast path*); any other pair is read again as chunked
//!   digests ([`crate::digest`]). Once one pair of payloads shows two different RDB
//!   versions, DUMP is skipped for the rest of the run. No Lua script is ever run on
//!   a server.
//! - The target pass, after it: SCAN batches of the target's keys, one multi-key
//!   `EXISTS` per batch on the source, per-key EXISTS only for a batch with an absent
//!   key. It is skipped when counts prove there is no extra key: neither side changed
//!   during the source pass (`rdb_changes_since_last_save`, saves, `expired_keys`,
//!   `evicted_keys`, `master_repl_offset` and DBSIZE the same before and after), the
//!   source pass saw exactly DBSIZE keys on the source (so no key twice), and the
//!   target's DBSIZE equals the keys found on both sides plus lockstep's own
//!   checkpoint key. A target with a key outside the source's set cannot meet that.
//! - `workers` batches are in flight at once, each on its own connection per side. No
//!   key set is ever held: memory is bounded by `workers` batches in flight, plus the
//!   differences listed ([`crate::track`]: beyond `max_listed`, a differing key costs a
//!   32-bit fingerprint in a roaring bitmap).
//! - With a key list ([`CompareOptions::keys`]: `--keys-from`, `--recheck`) only those
//!   keys are read, on both sides, and a key present only on the target is extra.
//!
//! # A mapped and renamed sync
//! With [`CompareOptions::db_map`] and [`CompareOptions::renames`] (the sync's
//! `--map-db` and `--rename-prefix`), source database `db` is compared with the
//! target database it is written into, and every source key with its target name
//! ([`crate::keymap`]): every read on the target (first reads, heads, DUMP, digests,
//! windows, PTTL re-checks) names the target key. The target pass looks each target
//! key up on the source by its source name; a target key that no source key is
//! written as is extra. Prefixes, the sample and key lists judge source names. The
//! count proof still holds: one target key per source key. A difference names the
//! source database and the source key, except an extra key, named by its target
//! name; with renames the detail says which name it is and gives the other.
//!
//! # What counts as a difference
//! TTLs are compared as absolute expiry times (`PTTL` read on each side, turned into
//! "now + PTTL" when the reply arrived), with a tolerance (2 s by default: the time
//! between the two reads plus the replication lag of a live sync; the sync writes
//! expiries as absolute times, so a TTL that it copied never drifts further). With a
//! TTL extension (the sync's `--extend-ttl`), the target's expiry is expected to be the
//! source's plus the extension; a persistent key stays persistent. A key that is
//! missing on one side while its TTL on the other is within the tolerance (plus the
//! extension, on the target) is expiring, not missing. A key gone from the source
//! between SCAN and the read is not compared. With `rounds > 1` every difference is read
//! again after a pause; only what still differs in the last round is reported, and the
//! report counts how many vanished (replication lag) and how many persisted. The rules
//! themselves are [`crate::judge`]'s.
//!
//! # A routed sync
//! With `--route-db GLOB=DB` ([`crate::options::RuleSpec::route_db`]; one source
//! database) the source database is spread over several target databases. The run
//! compares one *view* per target database: the source keys routed into it (the
//! first matching route's database, or the source database's own target database
//! when none matches) against that database, and a target key there is the sync's
//! only when its source name is routed into it, so a database shared with another
//! task never reports that task's keys as extra. The count proof is off (a source
//! database's DBSIZE says nothing of one view). The views' reports are merged into
//! one ([`Report::absorb`]): counts added, differences listed together, coverage
//! joined.
//!
//! # A scripted sync
//! With [`CompareOptions::script`], each database's keys the script touches are
//! judged first by [`crate::script`] (read, recreated, run through verify's own Lua
//! runner, modelled, compared), then the ordinary walk compares the other keys; its
//! target pass knows the names the script produced. Scripted differences are read
//! again in later rounds by their source keys; keys NOT VERIFIED are gaps.
//!
//! It must never write to either Redis, run a script on a server, or claim more than
//! was read.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Instant;

pub use crate::options::{CompareOptions, KeyList, Sample, SYNC_CHECKPOINT_KEY};
pub use crate::report::difference::{Difference, DifferenceKind};
pub use crate::report::run::{Report, TargetPass, Verdict};

use crate::report::coverage::{Coverage, SampleCoverage};
use crate::report::track::Differences;
use crate::script::pass::{recheck, script_db, ScriptTally};
use crate::walk::context::{Ctx, RouteView};
use crate::walk::passes::{check_keys, check_target_keys, refind, walk_db};
use crate::walk::plan::{plan, threshold};
use crate::walk::pools::Pools;
use crate::walk::tally::Tally;

/// Compares the chosen databases of `source` and `target`.
pub async fn compare(
    source: &redis::Client,
    target: &redis::Client,
    options: &CompareOptions,
) -> anyhow::Result<Report> {
    let started = Instant::now();
    let rules = crate::rules::Rules::check(options).map_err(anyhow::Error::msg)?;
    if rules.routes.is_empty() {
        return compare_view(source, target, options, None).await;
    }
    let (source_db, home) = match options.dbs.as_slice() {
        [db] => (
            *db,
            crate::keymap::KeyMap::new(options.db_map.clone(), Vec::new()).target_db(*db),
        ),
        _ => anyhow::bail!("--route-db needs exactly one source database (fix: add --dbs N)"),
    };
    let mut views = vec![home];
    for (_, db) in &rules.routes {
        if !views.contains(db) {
            views.push(*db);
        }
    }
    let mut merged: Option<Report> = None;
    for db in views {
        let mut view_options = options.clone();
        view_options.db_map.retain(|(from, _)| *from != source_db);
        view_options.db_map.push((source_db, db));
        let view = RouteView { db, home };
        let report = compare_view(source, target, &view_options, Some(view)).await?;
        match merged.as_mut() {
            Some(all) => all.absorb(report, options.max_listed),
            None => merged = Some(report),
        }
    }
    let mut report = merged.unwrap_or_default();
    report.elapsed = started.elapsed();
    Ok(report)
}

/// [`compare`] of one view (module doc, "A routed sync"), or of the whole run.
async fn compare_view(
    source: &redis::Client,
    target: &redis::Client,
    options: &CompareOptions,
    view: Option<RouteView>,
) -> anyhow::Result<Report> {
    let started = Instant::now();
    let mut coverage = plan(source, target, options).await?;
    let threshold = threshold(source, options, &coverage.compared).await?;
    if let Some(rate) = threshold.map(|(rate, _)| rate) {
        coverage.sample = Some(SampleCoverage { rate });
    }
    let ctx = Arc::new(Ctx::new(options, threshold.map(|(_, t)| t))?.in_view(view));
    let mut report = Report::default();
    let mut tally = Tally::new(options.max_listed);
    let mut scripted = ScriptTally::new(options.max_listed);
    first_round(
        &ctx,
        source,
        target,
        &mut coverage,
        &mut report,
        &mut tally,
        &mut scripted,
    )
    .await?;
    report.fingerprint_bytes = tally.diffs.fingerprint_bytes();
    let count = |t: &Tally, s: &ScriptTally| t.diffs.len() + s.tally.diffs.len();
    report.round_differences.push(count(&tally, &scripted));
    let first = count(&tally, &scripted);
    for _ in 1..options.rounds.max(1) {
        let script_pending = scripted.differing.as_ref().is_some_and(|d| !d.is_empty());
        if tally.diffs.is_empty() && !script_pending {
            break;
        }
        tokio::time::sleep(options.round_pause).await;
        if !tally.diffs.is_empty() {
            let previous = std::mem::replace(&mut tally.diffs, Differences::new(0));
            tally.diffs = next_round(&ctx, source, target, previous).await?;
        }
        if script_pending {
            scripted = script_round(&ctx, source, target, scripted).await?;
        }
        report.fingerprint_bytes = report
            .fingerprint_bytes
            .max(tally.diffs.fingerprint_bytes());
        report.round_differences.push(count(&tally, &scripted));
    }
    report.vanished = first.saturating_sub(count(&tally, &scripted));
    fold_scripted(&mut tally, &mut coverage, &mut report, scripted);
    fill(&mut report, tally, coverage);
    report.elapsed = started.elapsed();
    Ok(report)
}

/// The first round: every planned database walked (or its listed keys read), or
/// noted as not read when a side refuses it.
async fn first_round(
    ctx: &Arc<Ctx>,
    source: &redis::Client,
    target: &redis::Client,
    coverage: &mut Coverage,
    report: &mut Report,
    tally: &mut Tally,
    scripted: &mut ScriptTally,
) -> anyhow::Result<()> {
    for db in std::mem::take(&mut coverage.compared) {
        let pools = match Pools::connect(ctx, source, target, db).await? {
            Ok(pools) => pools,
            Err(why) => {
                coverage.not_read.insert(db, why);
                continue;
            }
        };
        coverage.compared.push(db);
        if let Some(scope) = &ctx.script {
            script_db(ctx, scope, &pools, db, scripted).await?;
        }
        let pass = match &ctx.options.keys {
            Some(list) => {
                let keys = list.get(&db).cloned().unwrap_or_default();
                check_keys(ctx, &pools, db, keys, tally).await?;
                let target_only = ctx.options.target_only_keys.as_ref();
                if let Some(keys) = target_only.and_then(|t| t.get(&db)) {
                    check_target_keys(ctx, &pools, db, keys.clone(), tally).await?;
                }
                TargetPass::KeyList
            }
            None => walk_db(ctx, &pools, db, tally).await?,
        };
        let unchecked = ctx.script.as_ref().and_then(|s| s.extras_unchecked(db));
        if let (Some(why), TargetPass::Scanned) = (unchecked, pass) {
            coverage.extras_unchecked.insert(db, why);
        }
        report.target_pass.insert(db, pass);
    }
    Ok(())
}

/// A later round of the scripted keys: the source keys with a difference read
/// again (a round with more differing keys than are listed stands as found).
async fn script_round(
    ctx: &Arc<Ctx>,
    source: &redis::Client,
    target: &redis::Client,
    mut scripted: ScriptTally,
) -> anyhow::Result<ScriptTally> {
    let (Some(scope), Some(differing)) = (&ctx.script, scripted.differing.take()) else {
        return Ok(scripted);
    };
    let mut round = ScriptTally::new(ctx.options.max_listed);
    round.not_verified = std::mem::take(&mut scripted.not_verified);
    round.not_verified_count = scripted.not_verified_count;
    for (db, keys) in differing {
        let pools = Pools::connect(ctx, source, target, db)
            .await?
            .map_err(|why| anyhow::anyhow!("re-reading database {db}: {why}"))?;
        recheck(ctx, scope, &pools, db, &keys, &mut round).await?;
    }
    round.tally.counts = scripted.tally.counts;
    Ok(round)
}

/// The scripted pass's counts, differences and keys NOT VERIFIED (a gap) into the
/// run's.
fn fold_scripted(
    tally: &mut Tally,
    coverage: &mut Coverage,
    report: &mut Report,
    scripted: ScriptTally,
) {
    report.scripted_keys = scripted.tally.counts.compared;
    coverage.not_verified = scripted.not_verified;
    coverage.not_verified_count = scripted.not_verified_count;
    tally.merge(scripted.tally);
}

/// A later round: only the differing keys of the previous one read again (the
/// listed ones by key, the others found again by their fingerprints); what still
/// differs.
async fn next_round(
    ctx: &Arc<Ctx>,
    source: &redis::Client,
    target: &redis::Client,
    previous: Differences,
) -> anyhow::Result<Differences> {
    let mut round = Tally::new(ctx.options.max_listed);
    let mut listed: BTreeMap<u32, Vec<Vec<u8>>> = BTreeMap::new();
    // An extra key is listed by its target name: read again by its source name, or,
    // when no source key is written as it, only looked for on the target.
    let mut target_only: BTreeMap<u32, Vec<Vec<u8>>> = BTreeMap::new();
    for d in previous.listed() {
        if d.kind != DifferenceKind::ExtraOnTarget {
            listed.entry(d.db).or_default().push(d.key.clone());
            continue;
        }
        // With a script, a key under a touched name has no source key of its name.
        let source = ctx.map.source_key(&d.key).filter(|_| !ctx.scripted(&d.key));
        match source {
            Some(source) => listed.entry(d.db).or_default().push(source.into_owned()),
            None => target_only.entry(d.db).or_default().push(d.key.clone()),
        }
    }
    let unlisted = previous.unlisted_fingerprints();
    let dbs: BTreeSet<u32> = listed
        .keys()
        .chain(unlisted.keys())
        .chain(target_only.keys())
        .copied()
        .collect();
    for db in dbs {
        let pools = Pools::connect(ctx, source, target, db)
            .await?
            .map_err(|why| anyhow::anyhow!("re-reading database {db}: {why}"))?;
        let keys = listed.remove(&db).unwrap_or_default();
        let extra = target_only.remove(&db).unwrap_or_default();
        if let Some(fingerprints) = unlisted.get(&db) {
            let known: HashSet<&[u8]> = keys.iter().chain(&extra).map(Vec::as_slice).collect();
            refind(ctx, &pools, db, fingerprints, &known, &mut round).await?;
        }
        check_keys(ctx, &pools, db, keys, &mut round).await?;
        if !extra.is_empty() {
            check_target_keys(ctx, &pools, db, extra, &mut round).await?;
        }
    }
    Ok(round.diffs)
}

/// The report's counts, coverage and differences (of the last round, sorted).
fn fill(report: &mut Report, tally: Tally, coverage: Coverage) {
    let Tally { counts, mut diffs } = tally;
    diffs.sort();
    report.keys_compared = counts.compared;
    report.keys_per_type = counts.per_type;
    report.target_keys_checked = counts.target_checked;
    report.strings_equal = counts.strings_equal;
    report.dump_equal = counts.dump_equal;
    report.digests_compared = counts.digests;
    report.slots_covered = counts.slots;
    report.strings_windowed = counts.windowed;
    report.coverage = coverage;
    report.differences_by_kind = diffs.by_kind();
    report.unlisted_differences = diffs.unlisted_count();
    report.differences = diffs.into_listed();
}
