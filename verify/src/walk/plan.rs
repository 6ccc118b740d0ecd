//! The plan of a run: which databases are compared (a key list's, the asked ones, or
//! every database holding keys on either side, learned from both) and the sample's
//! hash threshold.
//!
//! It reads only what it needs to decide (INFO, DBSIZE) and must never read a key.

use anyhow::Context;

use crate::options::{CompareOptions, Sample};
use crate::report::coverage::Coverage;
use crate::walk::pools::connect_db;

/// The sample's rate and hash threshold, if any (a rate of 1 or more: every key).
pub(crate) async fn threshold(
    source: &redis::Client,
    options: &CompareOptions,
    dbs: &[u32],
) -> anyhow::Result<Option<(f64, u64)>> {
    let rate = match options.sample {
        Sample::All => return Ok(None),
        Sample::Rate(rate) => rate,
        Sample::Count(count) => {
            let mut total = 0u64;
            for &db in dbs {
                let Ok(mut conns) = connect_db(source, db, 1).await? else {
                    continue; // not readable: reported as such by the walk
                };
                let size: u64 = redis::cmd("DBSIZE")
                    .query_async(&mut conns[0])
                    .await
                    .with_context(|| format!("DBSIZE of the source's database {db}"))?;
                total += size;
            }
            count as f64 / total.max(1) as f64
        }
    };
    Ok((rate < 1.0).then(|| (rate, (rate.max(0.0) * u64::MAX as f64) as u64)))
}

/// The databases to compare and what is known of both sides' databases: a key
/// list's databases, the asked ones, or every database holding keys on either side
/// (the target's by the source database written into each, [`crate::keymap`]; a
/// target database that none is written into is out of scope, and named).
pub(crate) async fn plan(
    source: &redis::Client,
    target: &redis::Client,
    options: &CompareOptions,
) -> anyhow::Result<Coverage> {
    if let Some(list) = &options.keys {
        let dbs = if options.dbs.is_empty() {
            let target_only = options.target_only_keys.iter().flat_map(|t| t.keys());
            let dbs: std::collections::BTreeSet<u32> =
                list.keys().chain(target_only).copied().collect();
            dbs.into_iter().collect()
        } else {
            options.dbs.clone()
        };
        return Ok(Coverage {
            compared: dbs,
            key_list: true,
            ..Coverage::default()
        });
    }
    let (s, t) = tokio::try_join!(
        async {
            crate::coverage::learn(source)
                .await
                .context("learning the source's databases")
        },
        async {
            crate::coverage::learn(target)
                .await
                .context("learning the target's databases")
        }
    )?;
    let map = crate::keymap::KeyMap::new(options.db_map.clone(), Vec::new());
    let mut with_keys: std::collections::BTreeSet<u32> = s.with_keys.clone();
    let mut unmapped_target = Vec::new();
    for &db in &t.with_keys {
        match map.source_db(db) {
            Some(source) => {
                with_keys.insert(source);
            }
            None => unmapped_target.push(db),
        }
    }
    let (asked, compared, not_asked) = if options.dbs.is_empty() {
        (None, with_keys.into_iter().collect(), Vec::new())
    } else {
        let mut asked = options.dbs.clone();
        asked.sort_unstable();
        asked.dedup();
        let left_out = with_keys
            .into_iter()
            .filter(|db| !asked.contains(db))
            .collect();
        (Some(asked.clone()), asked, left_out)
    };
    Ok(Coverage {
        asked,
        source: Some(s),
        target: Some(t),
        compared,
        not_asked,
        unmapped_target,
        ..Coverage::default()
    })
}
