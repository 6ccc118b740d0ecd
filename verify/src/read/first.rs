//! The first reads of a batch, on one side: `GETRANGE` (or `MGET`) of every key with
//! its `PTTL` where TTLs exist and `INFO keyspace`, in one pipeline; then the heads
//! (`TYPE`, `PTTL`) of what the first read did not settle.
//!
//! What they return is plain data ([`FirstRead`], [`Head`]) for [`crate::judge`];
//! they must never decide what a reply means beyond its shape.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use redis::Value as Reply;

use crate::read::pipeline::{replies, tolerant_pipe};
use crate::read::side::Conn;

/// TYPE and PTTL of a key as read.
#[derive(Clone, Debug)]
pub(crate) struct Head {
    pub(crate) kind: String,
    pub(crate) pttl: i64,
}

/// How one side's first read of a batch is made.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FirstAsk {
    /// `GETRANGE key 0 limit` of every key; None: one `MGET` (strings read whole).
    pub(crate) limit: Option<usize>,
    /// `PTTL` of every key too (this side's database last held keys with a TTL).
    pub(crate) read_ttls: bool,
    /// `INFO keyspace` too (not known to be refused).
    pub(crate) ask_info: bool,
}

/// One side's first read of a batch: `GETRANGE 0 limit` of every key (Some: a
/// non-empty string, whole when at most `limit` bytes, else its first `limit + 1`
/// bytes: a long string), PTTL of every key when the database was last seen holding
/// TTLs, and whether it holds any key with a TTL right after.
pub(crate) struct FirstRead {
    pub(crate) values: Vec<Option<Vec<u8>>>,
    pub(crate) pttls: Option<Vec<i64>>,
    pub(crate) ttls_exist: bool,
    /// `INFO keyspace` was asked and refused (not permitted): do not ask it again.
    pub(crate) info_refused: bool,
    /// When the reply arrived (unix ms).
    pub(crate) now: i64,
}

/// `GETRANGE key 0 limit` of every key of the batch (no string is read whole beyond
/// `limit`: [`crate::read::long_string`]), then (when `ask.read_ttls`) `PTTL` of every
/// key, then `INFO keyspace`, in one pipeline, so that the common case costs one
/// round trip. An empty reply (no such key, an empty string) or an error (not a
/// string) is None: TYPE tells. When INFO is refused or not asked, TTLs are assumed
/// to exist.
pub(crate) async fn first_read(
    mut conn: Conn,
    db: u32,
    keys: &[Vec<u8>],
    ask: FirstAsk,
) -> anyhow::Result<FirstRead> {
    let pipe = first_pipeline(keys, ask);
    let replies: Vec<redis::RedisResult<Reply>> =
        pipe.query_async(&mut conn).await.context("GETRANGE")?;
    let now = unix_ms();
    let mut replies = replies.into_iter();
    let values = match ask.limit {
        Some(_) => string_prefixes(&mut replies, keys.len())?,
        None => {
            let reply = replies.next().context("MGET: no reply")?;
            redis::from_redis_value(reply.context("MGET")?).context("MGET")?
        }
    };
    let pttls = if ask.read_ttls {
        Some(pttls(&mut replies, keys.len())?)
    } else {
        None
    };
    let (ttls_exist, info_refused) = match replies.next() {
        Some(Ok(text)) => {
            let text: String = redis::from_redis_value(text).unwrap_or_default();
            (keyspace_expires(&text, db) != Some(0), false)
        }
        Some(Err(_)) => (true, true),
        None => (true, false),
    };
    Ok(FirstRead {
        values,
        pttls,
        ttls_exist,
        info_refused,
        now,
    })
}

/// The first read's commands, in the order [`first_read`] takes their replies.
fn first_pipeline(keys: &[Vec<u8>], ask: FirstAsk) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    match ask.limit {
        Some(limit) => {
            for key in keys {
                pipe.cmd("GETRANGE").arg(key).arg(0).arg(limit);
            }
        }
        None => {
            pipe.cmd("MGET").arg(keys);
        }
    }
    if ask.read_ttls {
        for key in keys {
            pipe.cmd("PTTL").arg(key);
        }
    }
    if ask.ask_info {
        pipe.cmd("INFO").arg("keyspace");
    }
    pipe
}

/// `n` GETRANGE replies: Some for a non-empty string, None for anything else.
fn string_prefixes(
    replies: &mut impl Iterator<Item = redis::RedisResult<Reply>>,
    n: usize,
) -> anyhow::Result<Vec<Option<Vec<u8>>>> {
    let mut values = Vec::with_capacity(n);
    for _ in 0..n {
        values.push(match replies.next().context("GETRANGE: missing reply")? {
            Ok(Reply::BulkString(bytes)) if !bytes.is_empty() => Some(bytes),
            _ => None,
        });
    }
    Ok(values)
}

/// `n` PTTL replies; an error reply fails the read (PTTL answers any key).
fn pttls(
    replies: &mut impl Iterator<Item = redis::RedisResult<Reply>>,
    n: usize,
) -> anyhow::Result<Vec<i64>> {
    let mut pttls = Vec::with_capacity(n);
    for _ in 0..n {
        let reply = replies.next().context("PTTL: missing reply")?;
        pttls.push(redis::from_redis_value(reply.context("PTTL")?).context("PTTL")?);
    }
    Ok(pttls)
}

/// The `expires=` count of database `db` in an `INFO keyspace` reply: 0 when the
/// database is empty (absent), None when the reply cannot be read.
pub(crate) fn keyspace_expires(info: &str, db: u32) -> Option<u64> {
    let prefix = format!("db{db}:");
    let Some(line) = info.lines().find(|l| l.starts_with(&prefix)) else {
        return info.contains("# Keyspace").then_some(0);
    };
    line[prefix.len()..]
        .split(',')
        .find_map(|f| f.trim().strip_prefix("expires="))
        .and_then(|n| n.parse().ok())
}

/// The heads of every key after the first read: TYPE (and PTTL, unless read already)
/// of keys that are not a string on both sides; PTTL of those strings, unless read
/// already, only when this side holds TTLs (else -1). Returns the heads and the time
/// the PTTLs were read (unix ms).
pub(crate) async fn heads_after(
    conn: Conn,
    keys: &[Vec<u8>],
    strings: &[bool],
    first: &FirstRead,
) -> anyhow::Result<(Vec<Head>, i64)> {
    let known = first.pttls.as_deref();
    let read_pttl = |string: bool| known.is_none() && (!string || first.ttls_exist);
    let mut pipe = tolerant_pipe();
    for (key, &string) in keys.iter().zip(strings) {
        if !string {
            pipe.cmd("TYPE").arg(key);
        }
        if read_pttl(string) {
            pipe.cmd("PTTL").arg(key);
        }
    }
    let replies = replies(conn, &pipe).await.context("TYPE/PTTL")?;
    let now = if known.is_some() || pipe.is_empty() {
        first.now
    } else {
        unix_ms()
    };
    let mut replies = replies.into_iter();
    let mut heads = Vec::with_capacity(keys.len());
    for (i, &string) in strings.iter().enumerate() {
        let kind = if string {
            "string".to_owned()
        } else {
            let reply = replies.next().context("TYPE: missing reply")?;
            redis::from_redis_value(reply).context("TYPE")?
        };
        let pttl = match known {
            Some(pttls) => pttls[i],
            None if read_pttl(string) => {
                let reply = replies.next().context("PTTL: missing reply")?;
                redis::from_redis_value(reply).context("PTTL")?
            }
            None => -1,
        };
        heads.push(Head { kind, pttl });
    }
    Ok((heads, now))
}

/// TYPE and PTTL of every key, pipelined.
pub(crate) async fn heads(mut conn: Conn, keys: &[Vec<u8>]) -> anyhow::Result<(Vec<Head>, i64)> {
    let mut pipe = redis::pipe();
    for k in keys {
        pipe.cmd("TYPE").arg(k).cmd("PTTL").arg(k);
    }
    let pairs: Vec<(String, i64)> = pipe.query_async(&mut conn).await.context("TYPE/PTTL")?;
    let now = unix_ms();
    Ok((
        pairs
            .into_iter()
            .map(|(kind, pttl)| Head { kind, pttl })
            .collect(),
        now,
    ))
}

pub(crate) fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyspace_expires_reads_the_databases_line() {
        let info =
            "# Keyspace\r\ndb0:keys=10,expires=0,avg_ttl=0\r\ndb3:keys=5,expires=2,avg_ttl=9\r\n";
        assert_eq!(keyspace_expires(info, 0), Some(0));
        assert_eq!(keyspace_expires(info, 3), Some(2));
        assert_eq!(
            keyspace_expires(info, 5),
            Some(0),
            "an empty database is absent"
        );
        assert_eq!(keyspace_expires("", 0), None, "not a keyspace reply");
        assert_eq!(keyspace_expires("# Keyspace\r\ndb0:keys=1\r\n", 0), None);
    }
}
