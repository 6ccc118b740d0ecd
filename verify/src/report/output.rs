//! Machine-readable output: a CSV of every difference and a JSON summary (with the
//! run's `verdict` and its `coverage`: what was compared and what was not, see
//! [`crate::report::coverage`]), and the key lists read back from a file.
//!
//! Keys are written losslessly: a key that is valid UTF-8 and does not start with
//! `base64:` is written as is; any other key is written as `base64:` followed by the
//! standard base64 (with padding) of its bytes. [`decode_key`] reverses it. The same
//! escaping is used by a key list (`--keys-from`: one key per line) and the CSV read
//! back by `--recheck` (its `db` and `key` columns).

use std::io::{BufRead, Read, Write};

use anyhow::Context;

use base64::Engine;
use serde_json::json;

use crate::options::{CompareOptions, KeyList, Sample};
use crate::report::run::{Report, Verdict};

const BASE64_PREFIX: &str = "base64:";

/// A key as written in reports.
pub fn encode_key(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(text) if !text.starts_with(BASE64_PREFIX) => text.to_owned(),
        _ => format!(
            "{BASE64_PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(key)
        ),
    }
}

/// The key bytes of a key as written by [`encode_key`].
pub fn decode_key(text: &str) -> Option<Vec<u8>> {
    match text.strip_prefix(BASE64_PREFIX) {
        Some(b64) => base64::engine::general_purpose::STANDARD.decode(b64).ok(),
        None => Some(text.as_bytes().to_vec()),
    }
}

/// The CSV header.
pub const CSV_HEADER: [&str; 8] = [
    "db",
    "key",
    "kind",
    "source_type",
    "target_type",
    "source_pttl_ms",
    "target_pttl_ms",
    "hint",
];

/// Writes every listed difference of `report` as CSV (a header, then one row per key;
/// PTTL -1 is persistent, -2 absent). Differences beyond `max_listed` are only counted
/// (in the summary).
pub fn write_csv(report: &Report, out: impl Write) -> csv::Result<()> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record(CSV_HEADER)?;
    for d in &report.differences {
        w.write_record([
            d.db.to_string(),
            encode_key(&d.key),
            d.kind.as_str().to_owned(),
            d.source_type.clone(),
            d.target_type.clone(),
            d.source_pttl.to_string(),
            d.target_pttl.to_string(),
            d.detail.clone(),
        ])?;
    }
    w.flush()?;
    Ok(())
}

/// The JSON summary of a run.
pub fn summary(report: &Report, options: &CompareOptions) -> serde_json::Value {
    let sample = match options.sample {
        Sample::All => json!({"mode": "full"}),
        Sample::Rate(rate) => json!({"mode": "sample", "rate": rate}),
        Sample::Count(count) => json!({"mode": "sample", "count": count}),
    };
    let verdict = match report.verdict() {
        Verdict::Consistent => "consistent",
        Verdict::Differences => "differences",
        Verdict::Incomplete => "incomplete",
    };
    json!({
        // True only when nothing was left out (see `coverage`).
        "consistent": report.verdict() == Verdict::Consistent,
        "verdict": verdict,
        "no_differences_in_what_was_read": report.is_consistent(),
        "coverage": report.coverage.to_json(),
        "keys_compared": report.keys_compared,
        "keys_per_type": report.keys_per_type,
        "target_keys_checked": report.target_keys_checked,
        "equal_by_dump": report.dump_equal,
        "compared_by_digest": report.digests_compared,
        "differences": report.difference_count(),
        "differences_listed": report.differences.len(),
        "differences_unlisted": report.unlisted_differences,
        "differences_by_kind": report.by_kind(),
        "rounds": report.round_differences.len(),
        "differences_per_round": report.round_differences,
        "vanished": report.vanished,
        "persisted": report.difference_count(),
        "target_pass": report
            .target_pass
            .iter()
            .map(|(db, pass)| (db.to_string(), pass.as_str()))
            .collect::<std::collections::BTreeMap<_, _>>(),
        "slots_covered": report.slots_covered.len(),
        "strings_equal_by_bytes": report.strings_equal,
        "elapsed_ms": report.elapsed.as_millis() as u64,
        "keys_per_second": report.keys_per_second().round(),
        "dbs": report.coverage.compared,
        "strings_compared_in_windows": report.strings_windowed,
        "scripted_keys": report.scripted_keys,
        "long_string_bytes": options.long_string_bytes,
        "sample": sample,
        "ttl_tolerance_ms": options.ttl_tolerance.as_millis() as u64,
        "ttl_extension_ms": options.ttl_extension.as_millis() as u64,
        "ttl_rule": options.ttl_rule.flag(),
        "rules": serde_json::to_value(&options.rules).unwrap_or_default(),
        // Sampled runs only: what the sample proves (see `report::statement`).
        "statement": report.statement().map(|s| s.to_json()),
    })
}

/// Keys, one per line, escaped as in the CSV (`base64:` for binary keys); a trailing
/// `\r` is dropped and empty lines are skipped (the empty key is `base64:`).
pub fn read_key_lines(input: impl BufRead) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut keys = Vec::new();
    for (n, line) in input.lines().enumerate() {
        let line = line.with_context(|| format!("line {}: not UTF-8 text", n + 1))?;
        let line = line.strip_suffix('\r').unwrap_or(&line);
        if line.is_empty() {
            continue;
        }
        let key = decode_key(line)
            .with_context(|| format!("line {}: invalid base64 after `base64:`", n + 1))?;
        keys.push(key);
    }
    Ok(keys)
}

/// The keys of a CSV report written by [`write_csv`], per database.
pub fn read_report_keys(input: impl Read) -> anyhow::Result<KeyList> {
    let mut keys = KeyList::new();
    for (db, key, _) in read_report_rows(input)? {
        keys.entry(db).or_default().push(key);
    }
    for list in keys.values_mut() {
        list.sort();
        list.dedup();
    }
    Ok(keys)
}

/// Every row of a CSV report as (db, key, kind): the kind as written (empty when the
/// report has no `kind` column). With renamed prefixes an `extra_on_target` row names
/// the target key, any other row the source key.
pub fn read_report_rows(input: impl Read) -> anyhow::Result<Vec<(u32, Vec<u8>, String)>> {
    let mut reader = csv::Reader::from_reader(input);
    let headers = reader.headers().context("the CSV header")?.clone();
    let column = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .with_context(|| format!("no `{name}` column: not a lockstep verify report"))
    };
    let (db_column, key_column) = (column("db")?, column("key")?);
    let kind_column = column("kind").ok();
    let mut rows = Vec::new();
    for (n, record) in reader.records().enumerate() {
        let row = n + 2;
        let record = record.with_context(|| format!("row {row}"))?;
        let db: u32 = record
            .get(db_column)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("row {row}: the db is not a number"))?;
        let key = record
            .get(key_column)
            .and_then(decode_key)
            .with_context(|| format!("row {row}: invalid key"))?;
        let kind = kind_column
            .and_then(|c| record.get(c))
            .unwrap_or_default()
            .to_owned();
        rows.push((db, key, kind));
    }
    Ok(rows)
}
