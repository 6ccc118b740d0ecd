//! The explorer's independent checker: plain reads of both sides, compared under the
//! task's options. It shares no code with verify or sync (it imports neither): it
//! asks each server how many databases it has (`CONFIG GET databases`) and which hold
//! keys (`INFO keyspace`), SCANs every one of them, and reads each key with TYPE,
//! PTTL and its type's own full read (GET, LRANGE, SMEMBERS, ZRANGE WITHSCORES,
//! HGETALL, XRANGE), normalised (sets and hashes sorted). The prediction of the
//! target applies the options: selected databases and their mapping, prefix rules,
//! lockstep's own `LOCKSTEP_` keys left out, expiries later by the TTL extension,
//! and the declarative rules by their meaning ([`super::rules`]; never by matching a
//! glob or a regex): key patterns and types on source names, dropped hash fields (a
//! hash left without any is absent), renames. A TTL rule is judged by bounds
//! ([`TtlCheck`]): the instant lockstep applied a command is not known here, so the
//! exact capped or set expiry is left to verify, which gets the same rule. The
//! explorer's clock key (`clk:`), which changes all the time, is left out too.
//!
//! It must never import verify or sync, nor read lockstep's state: its agreement with
//! verify is one of the explorer's checks.

use std::collections::BTreeMap;

use anyhow::Context;
use redis::aio::MultiplexedConnection;

use super::rules::TtlRule;
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
        .filter_map(|((db, key), entry)| predict_key(*db, key, entry, options))
        .collect()
}

/// One source key on the target: where (database, name) and what, or `None` when the
/// options leave it out. The expiry is the source's (extended); the TTL rules are
/// judged by [`TtlCheck`].
fn predict_key(
    db: u32,
    key: &[u8],
    entry: &Entry,
    options: &TaskOptions,
) -> Option<((u32, Vec<u8>), Entry)> {
    let rules = &options.rules;
    if !options.keeps_db(db)
        || !options.keeps_key(key)
        || is_instrument(key)
        || !rules.keeps_type(type_name(&entry.value))
    {
        return None;
    }
    let value = match &entry.value {
        Value::Hash(fields) => {
            let kept: Vec<(Vec<u8>, Vec<u8>)> = fields
                .iter()
                .filter(|(field, _)| rules.keeps_field(key, field))
                .cloned()
                .collect();
            if kept.is_empty() {
                // A hash left without fields is not written.
                return None;
            }
            Value::Hash(kept)
        }
        other => other.clone(),
    };
    let expires_at_ms = entry
        .expires_at_ms
        .map(|at| at + options.extend_ttl as i64 * 1000);
    let at = (options.target_db(db), rules.target_key(key));
    Some((
        at,
        Entry {
            value,
            expires_at_ms,
        },
    ))
}

/// The type of a value, as `TYPE` names it.
fn type_name(value: &Value) -> &str {
    match value {
        Value::String(_) => "string",
        Value::List(_) => "list",
        Value::Set(_) => "set",
        Value::ZSet(_) => "zset",
        Value::Hash(_) => "hash",
        Value::Stream(_) => "stream",
        Value::Other(name) => name,
    }
}

/// How a target expiry is judged: by the source's (the TTL rule `Keep`), or by the
/// episode's TTL rule. The rules use lockstep's clock when it applies a command,
/// which the checker does not know, so a capped or set expiry is judged by bounds:
/// not before `since_ms` (the sync's first start) + the duration, not after the
/// read + the duration, and under a cap not after the source's.
#[derive(Clone, Debug)]
pub struct TtlCheck {
    pub rule: TtlRule,
    pub since_ms: i64,
}

impl TtlCheck {
    /// The expiries of the source (no TTL rule).
    #[cfg(test)]
    pub fn keep() -> TtlCheck {
        TtlCheck {
            rule: TtlRule::Keep,
            since_ms: 0,
        }
    }

    /// The earliest instant the target may lose a key of source expiry `want`.
    fn earliest_gone(&self, want: Option<i64>) -> Option<i64> {
        let by_rule = |secs: u64| self.since_ms + secs as i64 * 1000;
        match (&self.rule, want) {
            (TtlRule::Keep | TtlRule::Remove, want) => want,
            // A cap leaves a persistent key persistent.
            (TtlRule::Cap { secs, .. }, want) => want.map(|a| a.min(by_rule(*secs))),
            (TtlRule::Set { secs, .. }, Some(a)) => Some(a.min(by_rule(*secs))),
            (TtlRule::Set { secs, .. }, None) => Some(by_rule(*secs)),
        }
    }

    /// What is wrong with target expiry `got` for source expiry `want`, if anything.
    fn difference(&self, want: Option<i64>, got: Option<i64>, now: i64) -> Option<String> {
        let tol = TTL_TOLERANCE_MS;
        let fine = match (&self.rule, want, got) {
            (TtlRule::Keep, _, _) => return ttl_difference(want, got),
            (TtlRule::Remove, _, got) => got.is_none(),
            (TtlRule::Cap { .. }, None, got) => got.is_none(),
            (TtlRule::Cap { secs, .. }, Some(a), Some(b)) => {
                let d = *secs as i64 * 1000;
                b <= a + tol && b <= now + d + tol && b >= a.min(self.since_ms + d) - tol
            }
            (TtlRule::Set { secs, .. }, _, Some(b)) => {
                let d = *secs as i64 * 1000;
                b >= self.since_ms + d - tol && b <= now + d + tol
            }
            (_, _, None) => false,
        };
        (!fine).then(|| {
            format!(
                "expiry {} on the target, source {} ({})",
                show_expiry(got),
                show_expiry(want),
                self.rule_text()
            )
        })
    }

    fn rule_text(&self) -> String {
        match &self.rule {
            TtlRule::Keep => "no TTL rule".to_owned(),
            TtlRule::Remove => "--ttl-remove: none expected".to_owned(),
            TtlRule::Cap { text, .. } => format!(
                "--ttl-cap {text}: at most the source's and {text} after the read, at least {text} after the sync's start {}",
                self.since_ms
            ),
            TtlRule::Set { text, .. } => format!(
                "--ttl-set {text}: between {text} after the sync's start {} and {text} after the read",
                self.since_ms
            ),
        }
    }
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
pub fn compare(expected: &Snapshot, target: &Snapshot, ttl: &TtlCheck) -> Vec<String> {
    let now = unix_ms();
    let soon = |e: &Entry| {
        ttl.earliest_gone(e.expires_at_ms)
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
                let line = ttl.difference(want.expires_at_ms, got.expires_at_ms, now);
                if let Some(line) = line {
                    out.push(format!("db {db} key {name}: {line}"));
                }
            }
        }
    }
    let soon = |e: &Entry| {
        e.expires_at_ms
            .is_some_and(|at| at < now + EXPIRING_SOON_MS)
    };
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

fn ttl_difference(want: Option<i64>, got: Option<i64>) -> Option<String> {
    match (want, got) {
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
        assert!(compare(&predicted, &target, &TtlCheck::keep()).is_empty());
        target.insert((20, b"str:9".to_vec()), entry("x", None));
        target.insert(
            (40, b"str:1".to_vec()),
            entry("a", Some(32_503_680_000_000)),
        );
        let found = compare(&predicted, &target, &TtlCheck::keep());
        assert_eq!(found.len(), 2, "{found:?}");
    }

    fn hash(fields: &[(&str, &str)]) -> Entry {
        let fields = fields
            .iter()
            .map(|(f, v)| (f.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect();
        Entry {
            value: Value::Hash(fields),
            expires_at_ms: None,
        }
    }

    #[test]
    fn the_prediction_applies_each_rule_by_its_meaning() {
        use super::super::rules::{FieldDrop, FieldSet, KeyPattern, PatternKind, Rules};
        use super::super::rules::{RegexRename, TypeRule};
        let mut source = Snapshot::new();
        source.insert((0, b"str:1".to_vec()), entry("a", None));
        source.insert((0, b"str:2".to_vec()), entry("b", None));
        source.insert((0, b"cnt:1".to_vec()), entry("3", None));
        source.insert((0, b"hsh:1".to_vec()), hash(&[("count", "1"), ("3", "x")]));
        source.insert((0, b"hsh:2".to_vec()), hash(&[("count", "1")]));
        source.insert((0, b"lst:1".to_vec()), entry("list", None));
        let rules = Rules {
            exclude: vec![KeyPattern {
                kind: PatternKind::Glob,
                text: "str:2*".into(),
                prefixes: vec!["str:2".into()],
            }],
            types: Some(TypeRule::Except(vec!["set"])),
            drops: vec![FieldDrop {
                scope: None,
                field_glob: "c*".into(),
                fields: FieldSet::Named(vec!["count".into()]),
            }],
            prefix_renames: vec![("str:".into(), "P:".into())],
            regex_renames: vec![RegexRename::Suffix {
                family: "cnt:".into(),
                before: "C".into(),
                after: ":c".into(),
            }],
            ..Rules::default()
        };
        let options = TaskOptions {
            rules,
            ..TaskOptions::default()
        };
        let predicted = predict(&source, &options);
        let names: Vec<&[u8]> = predicted.keys().map(|(_, k)| k.as_slice()).collect();
        // str:2 excluded, hsh:2 left without fields, the others renamed or kept.
        assert_eq!(names, [&b"C1:c"[..], b"P:1", b"hsh:1", b"lst:1"]);
        assert_eq!(predicted[&(0, b"hsh:1".to_vec())], hash(&[("3", "x")]));
        let mut types = options.clone();
        types.rules.types = Some(TypeRule::Only(vec!["hash"]));
        assert_eq!(predict(&source, &types).len(), 1, "only hsh:1");
    }

    #[test]
    fn a_ttl_rule_bounds_the_target_expiry() {
        let now = unix_ms();
        let since = now - 60_000;
        let cap = TtlCheck {
            rule: TtlRule::Cap {
                secs: 300,
                text: "5m".into(),
            },
            since_ms: since,
        };
        let far = now + 3_600_000;
        assert!(
            cap.difference(None, None, now).is_none(),
            "persistent stays"
        );
        assert!(cap.difference(None, Some(far), now).is_some());
        assert!(cap
            .difference(Some(far), Some(now + 290_000), now)
            .is_none());
        assert!(
            cap.difference(Some(far), Some(far), now).is_some(),
            "not capped"
        );
        assert!(
            cap.difference(Some(far), Some(now + 100_000), now)
                .is_some(),
            "before start + 5m"
        );
        let short = now + 20_000;
        assert!(
            cap.difference(Some(short), Some(short), now).is_none(),
            "under the cap"
        );
        let set = TtlCheck {
            rule: TtlRule::Set {
                secs: 300,
                text: "300s".into(),
            },
            since_ms: since,
        };
        assert!(set.difference(None, Some(now + 280_000), now).is_none());
        assert!(set.difference(Some(short), Some(short), now).is_some());
        assert!(set.difference(None, None, now).is_some());
        let remove = TtlCheck {
            rule: TtlRule::Remove,
            since_ms: since,
        };
        assert!(remove.difference(Some(far), None, now).is_none());
        assert!(remove.difference(Some(far), Some(far), now).is_some());
        assert_eq!(cap.earliest_gone(Some(far)), Some(since + 300_000));
        assert_eq!(cap.earliest_gone(None), None);
        assert_eq!(set.earliest_gone(None), Some(since + 300_000));
        assert_eq!(TtlCheck::keep().earliest_gone(None), None);
    }

    #[test]
    fn binary_keys_are_shown_escaped() {
        assert_eq!(show_key(b"bin:\x00\r\n\xff"), "bin:\\x00\\r\\n\\xff");
    }
}
