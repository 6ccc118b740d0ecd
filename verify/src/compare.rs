//! The comparison: both key sets, per database, in both directions; then type, value
//! and TTL of every key found on both sides.
//!
//! TTLs are compared as absolute expiry times (`PTTL` read on each side, turned into
//! "now + PTTL" at the moment of reading), with a tolerance that absorbs the time
//! between the two reads and replication lag.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use redis::aio::MultiplexedConnection;

use crate::canonical::{self, Canonical};

/// What to compare.
#[derive(Clone, Debug)]
pub struct CompareOptions {
    /// Databases to compare.
    pub dbs: Vec<u32>,
    /// Largest difference between the two sides' absolute expiry times that still
    /// counts as equal.
    pub ttl_tolerance: Duration,
    /// Keys starting with any of these are ignored: by default `LOCKSTEP_`, the sync's
    /// own keys (the heartbeat on the source, the checkpoint on the target).
    pub ignore_prefixes: Vec<Vec<u8>>,
}

impl Default for CompareOptions {
    fn default() -> CompareOptions {
        CompareOptions {
            dbs: (0..16).collect(),
            ttl_tolerance: Duration::from_secs(2),
            ignore_prefixes: vec![b"LOCKSTEP_".to_vec()],
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DifferenceKind {
    MissingOnTarget,
    ExtraOnTarget,
    Type,
    Value,
    Ttl,
}

/// One key that differs.
#[derive(Clone, Debug)]
pub struct Difference {
    pub db: u32,
    pub key: Vec<u8>,
    pub kind: DifferenceKind,
    pub detail: String,
}

/// The outcome: keys compared and every difference.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub keys_compared: u64,
    pub differences: Vec<Difference>,
}

impl Report {
    pub fn is_consistent(&self) -> bool {
        self.differences.is_empty()
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} keys compared, {} differences",
            self.keys_compared,
            self.differences.len()
        )?;
        for d in self.differences.iter().take(20) {
            write!(
                f,
                "\n  db {} key {:?}: {:?} {}",
                d.db,
                String::from_utf8_lossy(&d.key),
                d.kind,
                d.detail
            )?;
        }
        Ok(())
    }
}

/// Compares every key of the chosen databases of `source` and `target`.
pub async fn compare(
    source: &redis::Client,
    target: &redis::Client,
    options: &CompareOptions,
) -> anyhow::Result<Report> {
    let mut src = source
        .get_multiplexed_async_connection()
        .await
        .context("connecting to the source")?;
    let mut dst = target
        .get_multiplexed_async_connection()
        .await
        .context("connecting to the target")?;
    let mut report = Report::default();
    for &db in &options.dbs {
        select(&mut src, db).await?;
        select(&mut dst, db).await?;
        let src_keys = keys(&mut src, options).await?;
        let dst_keys = keys(&mut dst, options).await?;
        for key in dst_keys.difference(&src_keys) {
            // Re-check: a key may have been written to the source since the scan.
            if !exists(&mut src, key).await? {
                report.differences.push(Difference {
                    db,
                    key: key.clone(),
                    kind: DifferenceKind::ExtraOnTarget,
                    detail: String::new(),
                });
            }
        }
        for key in &src_keys {
            report.keys_compared += 1;
            let left = canonical::read(&mut src, key).await?;
            if left == Canonical::Gone {
                continue; // expired or deleted on the source during the check
            }
            let right = canonical::read(&mut dst, key).await?;
            if right == Canonical::Gone {
                report.differences.push(Difference {
                    db,
                    key: key.clone(),
                    kind: DifferenceKind::MissingOnTarget,
                    detail: String::new(),
                });
                continue;
            }
            if std::mem::discriminant(&left) != std::mem::discriminant(&right) {
                report.differences.push(Difference {
                    db,
                    key: key.clone(),
                    kind: DifferenceKind::Type,
                    detail: format!("{} vs {}", kind(&left), kind(&right)),
                });
                continue;
            }
            if left != right {
                report.differences.push(Difference {
                    db,
                    key: key.clone(),
                    kind: DifferenceKind::Value,
                    detail: first_difference(&left, &right),
                });
                continue;
            }
            let (a, b) = (expiry(&mut src, key).await?, expiry(&mut dst, key).await?);
            let same = match (a, b) {
                (None, None) => true,
                (Some(a), Some(b)) => a.abs_diff(b) <= options.ttl_tolerance.as_millis() as u64,
                _ => false,
            };
            if !same {
                report.differences.push(Difference {
                    db,
                    key: key.clone(),
                    kind: DifferenceKind::Ttl,
                    detail: format!("expiry (unix ms) {a:?} vs {b:?}"),
                });
            }
        }
    }
    Ok(report)
}

/// A short description of where two values of the same type first differ.
fn first_difference(left: &Canonical, right: &Canonical) -> String {
    let (l, r) = (format!("{left:?}"), format!("{right:?}"));
    let at = l
        .bytes()
        .zip(r.bytes())
        .position(|(a, b)| a != b)
        .unwrap_or(l.len().min(r.len()));
    let start = at.saturating_sub(60);
    let cut = |s: &str| {
        s.get(start..(at + 120).min(s.len()))
            .unwrap_or_default()
            .to_owned()
    };
    format!("source ...{}... target ...{}...", cut(&l), cut(&r))
}

fn kind(c: &Canonical) -> &'static str {
    match c {
        Canonical::String(_) => "string",
        Canonical::List(_) => "list",
        Canonical::Set(_) => "set",
        Canonical::ZSet(_) => "zset",
        Canonical::Hash(_) => "hash",
        Canonical::Stream { .. } => "stream",
        Canonical::Other(_) => "other",
        Canonical::Gone => "none",
    }
}

async fn select(conn: &mut MultiplexedConnection, db: u32) -> anyhow::Result<()> {
    redis::cmd("SELECT")
        .arg(db)
        .query_async::<()>(conn)
        .await
        .with_context(|| format!("SELECT {db}"))
}

async fn keys(
    conn: &mut MultiplexedConnection,
    options: &CompareOptions,
) -> anyhow::Result<BTreeSet<Vec<u8>>> {
    let mut cursor = 0u64;
    let mut out = BTreeSet::new();
    loop {
        let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
            .context("SCAN")?;
        out.extend(
            batch
                .into_iter()
                .filter(|k| !options.ignore_prefixes.iter().any(|p| k.starts_with(p))),
        );
        if next == 0 {
            return Ok(out);
        }
        cursor = next;
    }
}

async fn exists(conn: &mut MultiplexedConnection, key: &[u8]) -> anyhow::Result<bool> {
    Ok(redis::cmd("EXISTS")
        .arg(key)
        .query_async::<i64>(conn)
        .await?
        == 1)
}

/// Absolute expiry in unix ms, or None for a persistent key.
async fn expiry(conn: &mut MultiplexedConnection, key: &[u8]) -> anyhow::Result<Option<u64>> {
    let pttl: i64 = redis::cmd("PTTL").arg(key).query_async(conn).await?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Ok((pttl >= 0).then(|| now + pttl as u64))
}
