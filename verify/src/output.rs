//! Machine-readable output: a CSV of every difference and a JSON summary.
//!
//! Keys are written losslessly: a key that is valid UTF-8 and does not start with
//! `base64:` is written as is; any other key is written as `base64:` followed by the
//! standard base64 (with padding) of its bytes. [`decode_key`] reverses it.

use std::io::Write;

use base64::Engine;
use serde_json::json;

use crate::compare::{Report, Sample};
use crate::CompareOptions;

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

/// Writes every difference of `report` as CSV (a header, then one row per key;
/// PTTL -1 is persistent, -2 absent).
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
    json!({
        "consistent": report.is_consistent(),
        "keys_compared": report.keys_compared,
        "keys_per_type": report.keys_per_type,
        "target_keys_checked": report.target_keys_checked,
        "equal_by_dump": report.dump_equal,
        "compared_by_digest": report.digests_compared,
        "differences": report.differences.len(),
        "differences_by_kind": report.by_kind(),
        "rounds": report.round_differences.len(),
        "differences_per_round": report.round_differences,
        "vanished": report.vanished,
        "persisted": report.differences.len(),
        "elapsed_ms": report.elapsed.as_millis() as u64,
        "keys_per_second": report.keys_per_second().round(),
        "dbs": options.dbs,
        "sample": sample,
        "ttl_tolerance_ms": options.ttl_tolerance.as_millis() as u64,
    })
}
