//! The scan source's proof of convergence (issue 18): a scan cannot show, as a
//! replica's offsets do, that the target has everything; so, while a scanned task
//! runs, this re-verifies with the verify crate (plain reads of both sides, never
//! the sync's state) the keys read again since the last proof plus a sample of the
//! rest, and reports "converged at T: N keys re-verified, 0 differ", or which keys
//! differ. The figures go to the log, `/status` and `/metrics`.
//!
//! When it runs: every `--converge-every-secs` (0: never), once the task has
//! scanned and no change is waiting to be read. Verify reads each key up to three
//! rounds apart (a key written between the two sides' reads differs in one round,
//! not in three). Differing keys are kept for the next proof. A task with
//! transforms (renames, patterns, types, TTL rules, field drops, routes, a script)
//! is not proven here: the log says so, and `lockstep verify` with the same rules
//! is the proof.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lockstep_sync::engine::{unix_ms, Phase, Progress, SyncOptions};
use lockstep_sync::filter::Filter;
use lockstep_verify::{compare, CompareOptions, KeyList, Report, Sample};
use tokio::sync::watch;

use crate::connection::{redis_client, Side};

/// Keys of the sample verified beside the changed keys.
const SAMPLE_KEYS: u64 = 1_000;

/// The last proof.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Convergence {
    /// When the proof ended (unix ms).
    pub at_unix_ms: i64,
    /// Keys compared: the changed ones and the sample.
    pub keys_reverified: u64,
    /// Changed keys among them.
    pub changed: u64,
    /// Changed keys not kept for the proof (past the bound): only the sample saw them.
    pub changed_not_kept: u64,
    pub differences: u64,
}

/// The last proof, shared with the status endpoint (None: no proof yet).
pub type ConvergenceCell = Arc<Mutex<Option<Convergence>>>;

/// The verify options of a task's plain filter (databases, mapping, prefixes), or
/// `None` with the reason when the task transforms keys.
pub fn compare_options(options: &SyncOptions) -> Result<CompareOptions, &'static str> {
    let filter = &options.filter;
    let plain = Filter {
        dbs: Vec::new(),
        db_map: Vec::new(),
        include_prefixes: Vec::new(),
        exclude_prefixes: Vec::new(),
        extend_ttl: Duration::ZERO,
        keep_publish: false,
        drop_commands: Vec::new(),
        source_slots: Vec::new(),
        ..filter.clone()
    };
    if plain != Filter::default() || options.script.is_some() {
        return Err("the task transforms keys (rules, renames, routes, TTL rules or a script)");
    }
    let defaults = CompareOptions::default();
    let mut ignore = defaults.ignore_prefixes.clone();
    ignore.extend(filter.exclude_prefixes.iter().cloned());
    Ok(CompareOptions {
        dbs: filter.dbs.clone(),
        db_map: filter.db_map.clone(),
        include_prefixes: filter.include_prefixes.clone(),
        ignore_prefixes: ignore,
        ttl_extension: filter.extend_ttl,
        rounds: 3,
        round_pause: Duration::from_millis(500),
        ..defaults
    })
}

/// Proves convergence every `every` while the task runs (until `stop`).
pub async fn watch_task(
    options: SyncOptions,
    progress: watch::Receiver<Progress>,
    mut stop: watch::Receiver<bool>,
    cell: ConvergenceCell,
    every: Duration,
) {
    let base = match compare_options(&options) {
        Ok(base) => base,
        Err(why) => {
            tracing::info!("convergence is not proven by the sync: {why}; run lockstep verify with the same rules");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        if !ready(&options, &progress) {
            continue;
        }
        let first = cell
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .is_none();
        match prove(&options, &base, first).await {
            Ok(proof) => publish(&cell, proof),
            Err(e) => tracing::warn!("the convergence proof could not run: {e:#}"),
        }
    }
}

/// The task has scanned and has no change waiting.
fn ready(options: &SyncOptions, progress: &watch::Receiver<Progress>) -> bool {
    let stats = &options.scan_stats;
    stats.scans.load(Ordering::Relaxed) > 0
        && stats.keys_pending.load(Ordering::Relaxed) == 0
        && progress.borrow().phase == Phase::Incremental
}

/// One proof: the changed keys, then a sample.
async fn prove(
    options: &SyncOptions,
    base: &CompareOptions,
    first: bool,
) -> anyhow::Result<Convergence> {
    let source = redis_client(Side::Source, &options.source, &options.link.tls).await?;
    let target = redis_client(Side::Target, &options.target, &options.apply.tls).await?;
    let (changed, not_kept) = options.scan_stats.changed().take();
    let changed_count: u64 = changed.values().map(|keys| keys.len() as u64).sum();
    let mut report = Report::default();
    if changed_count > 0 {
        let keys = CompareOptions {
            keys: Some(changed.clone()),
            ..base.clone()
        };
        report.absorb(compare(&source, &target, &keys).await?, base.max_listed);
    }
    let sample = CompareOptions {
        sample: Sample::Count(SAMPLE_KEYS),
        ..base.clone()
    };
    report.absorb(compare(&source, &target, &sample).await?, base.max_listed);
    let proof = Convergence {
        at_unix_ms: unix_ms(),
        keys_reverified: report.keys_compared,
        changed: changed_count,
        changed_not_kept: not_kept,
        differences: report.difference_count(),
    };
    if proof.differences > 0 {
        keep_for_next(options, changed);
        let first = report
            .differences
            .first()
            .map(|d| {
                format!(
                    "db {} key {:?}: {:?} ({})",
                    d.db,
                    String::from_utf8_lossy(&d.key),
                    d.kind,
                    d.detail
                )
            })
            .unwrap_or_default();
        tracing::warn!(
            "not converged at {}: {} of {} keys re-verified differ (first: {first}); they are verified again next time",
            at_text(proof.at_unix_ms), proof.differences, proof.keys_reverified
        );
    } else {
        let missed = match not_kept {
            0 => String::new(),
            n => format!(
                "; {n} more changed keys were past the bound and only the sample could see them"
            ),
        };
        let message = format!(
            "converged at {}: {} keys re-verified ({} changed since the last proof, the rest a sample), 0 differ{missed}",
            at_text(proof.at_unix_ms), proof.keys_reverified, proof.changed
        );
        // The first proof, and any that re-verified changes, are news; a proof of
        // a quiet source repeats the last one.
        match first || proof.changed > 0 || not_kept > 0 {
            true => tracing::info!("{message}"),
            false => tracing::debug!("{message}"),
        }
    }
    Ok(proof)
}

/// Puts `changed` back, for the next proof to verify again.
fn keep_for_next(options: &SyncOptions, changed: KeyList) {
    let mut kept = options.scan_stats.changed();
    for (db, keys) in changed {
        for key in keys {
            kept.record_again(db, key.into());
        }
    }
}

fn publish(cell: &ConvergenceCell, proof: Convergence) {
    let mut last = cell.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    *last = Some(proof);
}

/// A unix ms time as RFC 3339 (UTC).
fn at_text(unix_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(unix_ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| format!("unix ms {unix_ms}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lockstep_sync::endpoint::Endpoint;

    fn options() -> SyncOptions {
        let source = Endpoint::parse("redis://127.0.0.1:1").expect("url");
        let target = Endpoint::parse("redis://127.0.0.1:2").expect("url");
        SyncOptions::new(source, target, "/tmp/x")
    }

    #[test]
    fn a_plain_filter_maps_to_verify_and_a_transform_is_not_proven_here() {
        let mut plain = options();
        plain.filter.dbs = vec![3];
        plain.filter.db_map = vec![(3, 4)];
        plain.filter.exclude_prefixes = vec![b"tmp:".to_vec()];
        let compare = compare_options(&plain).expect("plain");
        assert_eq!(compare.dbs, [3]);
        assert_eq!(compare.db_map, [(3, 4)]);
        assert!(compare.ignore_prefixes.contains(&b"tmp:".to_vec()));
        assert_eq!(compare.rounds, 3);
        let mut typed = options();
        typed.filter.include_prefixes = vec![b"a:".to_vec()];
        assert!(compare_options(&typed).is_ok());
        typed.filter.extend_ttl = Duration::from_secs(5);
        let extended = compare_options(&typed).expect("an extension verify knows");
        assert_eq!(extended.ttl_extension, Duration::from_secs(5));
        typed.filter.ttl_rule = lockstep_sync::rules::ttl::TtlRule::Remove;
        assert!(
            compare_options(&typed).is_err(),
            "a TTL rule is not proven here"
        );
    }
}
