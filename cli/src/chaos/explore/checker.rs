//! The explorer's independent checker: plain reads of both sides, compared under the
//! task's options. It shares no code with verify or sync (it imports neither): it
//! asks each server how many databases it has (`CONFIG GET databases`) and which hold
//! keys (`INFO keyspace`), SCANs every one of them, and reads each key with TYPE,
//! PTTL and its type's own full read (GET, LRANGE, SMEMBERS, ZRANGE WITHSCORES,
//! HGETALL, XRANGE), normalised (sets and hashes sorted). The prediction of the
//! target applies the options: selected databases and their mapping, prefix rules,
//! lockstep's own `LOCKSTEP_` keys left out, expiries later by the TTL extension. The
//! explorer's clock key (`clk:`), which changes all the time, is left out too.
//!
//! It must never import verify or sync, nor read lockstep's state: its agreement with
//! verify is one of the explorer's checks.

use std::collections::BTreeMap;

use anyhow::Context;
use redis::aio::MultiplexedConnection;

use super::shared::{unix_ms, TaskOptions, CLOCK_FAMILY};
use lockstep_testkit::Run;

/// A value, normalised so equal data compares equal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    String(Vec<u8>),
    List(Vec<Vec<u8>>),
    Set(Vec<Vec<u8>>),
    ZSet(Vec<(Vec<u8>, Vec<u8>)>),
    Hash(Vec<(Vec<u8>, Vec<u8>)>),
    Stream(String),
    Other(String),
}

/// One key as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub value: Value,
    /// Absolute expiry in unix ms (read time + PTTL), `None` when persistent.
    pub expires_at_ms: Option<i64>,
}

/// Every key of a server: (db, key) -> entry.
pub type Snapshot = BTreeMap<(u32, Vec<u8>), Entry>;

/// How many databases the server has.
async fn databases(conn: &mut MultiplexedConnection) -> anyhow::Result<u32> {
    let reply: Vec<String> = conn.run("CONFIG GET databases").await?;
    reply
        .get(1)
        .and_then(|n| n.parse().ok())
        .context("CONFIG GET databases gave no number")
}

/// The databases `INFO keyspace` lists as holding keys (`db<N>:keys=...`).
async fn databases_with_keys(conn: &mut MultiplexedConnection) -> anyhow::Result<Vec<u32>> {
    let info: String = conn.run("INFO keyspace").await?;
    Ok(info
        .lines()
        .filter_map(|line| line.strip_prefix("db")?.split_once(':')?.0.parse().ok())
        .collect())
}

/// Reads every key of every database of `client`.
pub async fn snapshot(client: &redis::Client) -> anyhow::Result<Snapshot> {
    let mut conn = client.get_multiplexed_async_connection().await?;
    let count = databases(&mut conn).await?;
    let mut out = Snapshot::new();
    for db in databases_with_keys(&mut conn).await? {
        anyhow::ensure!(db < count, "INFO keyspace names db {db} of {count}");
        read_db(&mut conn, db, &mut out)
            .await
            .with_context(|| format!("reading db {db}"))?;
    }
    Ok(out)
}

async fn read_db(
    conn: &mut MultiplexedConnection,
    db: u32,
    out: &mut Snapshot,
) -> anyhow::Result<()> {
    conn.run_args::<()>(("SELECT", db)).await?;
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) =
            conn.run_args(("SCAN", cursor, "COUNT", 500)).await?;
        for key in keys {
            if let Some(entry) = read_key(conn, &key).await? {
                out.insert((db, key), entry);
            }
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// TYPE, PTTL and the full value of one key; `None` when it vanished meanwhile.
async fn read_key(conn: &mut MultiplexedConnection, key: &[u8]) -> anyhow::Result<Option<Entry>> {
    let (kind, pttl): (String, i64) = redis::pipe()
        .cmd("TYPE")
        .arg(key)
        .cmd("PTTL")
        .arg(key)
        .query_async(conn)
        .await?;
    let read_at = unix_ms();
    let value = match kind.as_str() {
        "none" => return Ok(None),
        "string" => Value::String(conn.run_args(("GET", key)).await?),
        "list" => Value::List(conn.run_args(("LRANGE", key, 0, -1)).await?),
        "set" => {
            let mut members: Vec<Vec<u8>> = conn.run_args(("SMEMBERS", key)).await?;
            members.sort();
            Value::Set(members)
        }
        "zset" => Value::ZSet(conn.run_args(("ZRANGE", key, 0, -1, "WITHSCORES")).await?),
        "hash" => {
            let mut fields: Vec<(Vec<u8>, Vec<u8>)> = conn.run_args(("HGETALL", key)).await?;
            fields.sort();
            Value::Hash(fields)
        }
        "stream" => {
            let entries: redis::Value = conn.run_args(("XRANGE", key, "-", "+")).await?;
            Value::Stream(format!("{entries:?}"))
        }
        other => Value::Other(other.to_owned()),
    };
    let expires_at_ms = (pttl >= 0).then_some(read_at + pttl);
    Ok(Some(Entry {
        value,
        expires_at_ms,
    }))
}

/// What the target should hold for this source snapshot under `options`.
pub fn predict(source: &Snapshot, options: &TaskOptions) -> Snapshot {
    source
        .iter()
        .filter(|((db, key), _)| {
            options.keeps_db(*db) && options.keeps_key(key) && !is_instrument(key)
        })
        .map(|((db, key), entry)| {
            let mut entry = entry.clone();
            entry.expires_at_ms = entry
                .expires_at_ms
                .map(|at| at + options.extend_ttl as i64 * 1000);
            ((options.target_db(*db), key.clone()), entry)
        })
        .collect()
}

/// The explorer's clock key changes every 100 ms while the checker runs: it is
/// measured by the lag check, not compared.
fn is_instrument(key: &[u8]) -> bool {
    key.starts_with(CLOCK_FAMILY.as_bytes())
}

/// Expiries this close to each other count as equal (reads of the two sides are
/// seconds apart under load).
const TTL_TOLERANCE_MS: i64 = 3000;
/// Keys that expire this soon after the read may be gone on one side only.
const EXPIRING_SOON_MS: i64 = 5000;

/// Differences between the predicted and the actual target, one line each.
pub fn compare(expected: &Snapshot, target: &Snapshot) -> Vec<String> {
    let now = unix_ms();
    let soon = |e: &Entry| {
        e.expires_at_ms
            .is_some_and(|at| at < now + EXPIRING_SOON_MS)
    };
    let mut out = Vec::new();
    for (at @ (db, key), want) in expected {
        let name = show_key(key);
        match target.get(at) {
            None if soon(want) => {}
            None => out.push(format!("db {db} key {name}: missing on the target")),
            Some(got) if got.value != want.value && !soon(want) => out.push(format!(
                "db {db} key {name}: {} on the source, {} on the target",
                show_value(&want.value),
                show_value(&got.value)
            )),
            Some(got) => {
                if let Some(line) = ttl_difference(want, got) {
                    out.push(format!("db {db} key {name}: {line}"));
                }
            }
        }
    }
    for (at @ (db, key), got) in target {
        if key.starts_with(b"LOCKSTEP_")
            || is_instrument(key)
            || expected.contains_key(at)
            || soon(got)
        {
            continue;
        }
        out.push(format!("db {db} key {}: only on the target", show_key(key)));
    }
    out
}

fn ttl_difference(want: &Entry, got: &Entry) -> Option<String> {
    match (want.expires_at_ms, got.expires_at_ms) {
        (None, None) => None,
        (Some(a), Some(b)) if (a - b).abs() <= TTL_TOLERANCE_MS => None,
        (a, b) => Some(format!(
            "expiry {} expected, {} on the target",
            show_expiry(a),
            show_expiry(b)
        )),
    }
}

fn show_expiry(at: Option<i64>) -> String {
    at.map_or("none".to_owned(), |ms| format!("at unix ms {ms}"))
}

/// A key for a message: text as is, binary bytes escaped.
pub fn show_key(key: &[u8]) -> String {
    key.escape_ascii().to_string()
}

fn show_value(value: &Value) -> String {
    let text = match value {
        Value::String(bytes) => format!("\"{}\"", bytes.escape_ascii()),
        other => format!("{other:?}"),
    };
    if text.len() > 80 {
        let head: String = text.chars().take(80).collect();
        format!("{head}... ({} chars)", text.len())
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(value: &str, expires_at_ms: Option<i64>) -> Entry {
        Entry {
            value: Value::String(value.as_bytes().to_vec()),
            expires_at_ms,
        }
    }

    #[test]
    fn the_prediction_maps_filters_and_extends() {
        let far = unix_ms() + 600_000;
        let mut source = Snapshot::new();
        source.insert((5, b"str:1".to_vec()), entry("a", Some(far)));
        source.insert((6, b"str:2".to_vec()), entry("b", None));
        source.insert((5, b"lst:1".to_vec()), entry("c", None));
        source.insert((0, b"LOCKSTEP_HEARTBEAT".to_vec()), entry("d", None));
        let options = TaskOptions {
            dbs: vec![0, 5],
            map_db: vec![(5, 40)],
            prefix: vec!["str:".into()],
            extend_ttl: 60,
            ..TaskOptions::default()
        };
        let predicted = predict(&source, &options);
        assert_eq!(predicted.len(), 1);
        assert_eq!(
            predicted[&(40, b"str:1".to_vec())].expires_at_ms,
            Some(far + 60_000)
        );
        let mut target = predicted.clone();
        assert!(compare(&predicted, &target).is_empty());
        target.insert((20, b"str:9".to_vec()), entry("x", None));
        target.insert(
            (40, b"str:1".to_vec()),
            entry("a", Some(32_503_680_000_000)),
        );
        let found = compare(&predicted, &target);
        assert_eq!(found.len(), 2, "{found:?}");
    }

    #[test]
    fn binary_keys_are_shown_escaped() {
        assert_eq!(show_key(b"bin:\x00\r\n\xff"), "bin:\\x00\\r\\n\\xff");
    }
}
