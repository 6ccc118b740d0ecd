//! A source key read with ordinary commands (never a decoded DUMP) and expressed as
//! the commands that recreate it, in the form the sync's full copy passes to the
//! script (docs/transforms.md, "Scripts"), so that the script sees the same input in
//! both places:
//! - a string: `SET key value`; one longer than [`BIG_STRING_BYTES`] (the sync's
//!   default big-key size): `DEL key`, `SETRANGE key len-1 "\0"`, then `SETRANGE`
//!   pieces of [`STRING_PIECE_BYTES`];
//! - a list, set, sorted set or hash: `DEL key`, then `RPUSH` / `SADD` / `ZADD` /
//!   `HSET` of every element (in batches of [`BATCH_ELEMENTS`] when its elements
//!   hold more than [`BIG_STRING_BYTES`], as the sync streams a big key; a script
//!   must not depend on where a batch ends), each hash field's expiry as
//!   `HPEXPIREAT key at FIELDS 1 field`;
//! - a stream or a module value: its one `RESTORE key ttl payload REPLACE [ABSTTL]`
//!   (the payload from DUMP, opaque);
//! - then the key's expiry as `PEXPIREAT key unix-ms` (with `--extend-ttl` added).
//!
//! Memory: a key is read whole, so a key whose value exceeds the limit
//! ([`Limits::value_bytes`]: by [`memory_usage`] before the read when the server
//! answers it, and by the bytes read) is not read on: it is NOT VERIFIED, with the
//! reason.

use anyhow::Context;
use redis::aio::ConnectionLike;

use crate::rules::hash_drops::HashDrops;

/// The sync's default size above which a key is written in pieces.
pub const BIG_STRING_BYTES: usize = 4 << 20;
/// The sync's piece of a big string.
pub const STRING_PIECE_BYTES: usize = 1 << 20;
/// Elements per command of a big collection.
pub const BATCH_ELEMENTS: usize = 1000;

/// How much of a source key verify holds.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Bytes of a scripted key's value held at most (source side; the target's is
    /// read only when its length matches).
    pub value_bytes: usize,
}

/// A source value as read.
#[derive(Clone, Debug, PartialEq)]
pub enum SourceValue {
    String(Vec<u8>),
    List(Vec<Vec<u8>>),
    Set(Vec<Vec<u8>>),
    /// (member, score).
    ZSet(Vec<(Vec<u8>, f64)>),
    /// (field, value, field expiry unix ms).
    Hash(Vec<(Vec<u8>, Vec<u8>, Option<i64>)>),
    /// A stream or module value: its DUMP payload and TYPE.
    Dump {
        payload: Vec<u8>,
        kind: String,
    },
}

/// What reading a source key gave.
#[derive(Clone, Debug, PartialEq)]
pub enum Read {
    /// The value and its expiry (unix ms).
    Value(SourceValue, Option<i64>),
    /// Gone between SCAN and the read: not compared.
    Gone,
    /// Too big to hold (the reason).
    TooBig(String),
}

/// Reads source key `key` (TYPE, its value, PTTL; field expiries with
/// `HPEXPIRETIME` when `field_ttls` says the server has it); a value of more than
/// `limits.value_bytes` is [`Read::TooBig`] (the caller asks [`memory_usage`] first).
pub async fn read(
    conn: &mut (impl ConnectionLike + Send),
    key: &[u8],
    limits: Limits,
    field_ttls: bool,
) -> anyhow::Result<Read> {
    let kind: String = query(conn, redis::cmd("TYPE").arg(key), "TYPE").await?;
    if kind == "none" {
        return Ok(Read::Gone);
    }
    let value = match kind.as_str() {
        "string" => {
            let v: Option<Vec<u8>> = query(conn, redis::cmd("GET").arg(key), "GET").await?;
            v.map(SourceValue::String)
        }
        "list" => Some(SourceValue::List(
            query(conn, redis::cmd("LRANGE").arg(key).arg(0).arg(-1), "LRANGE").await?,
        )),
        "set" => Some(SourceValue::Set(
            query(conn, redis::cmd("SMEMBERS").arg(key), "SMEMBERS").await?,
        )),
        "zset" => {
            let pairs: Vec<(Vec<u8>, Vec<u8>)> = query(
                conn,
                redis::cmd("ZRANGE")
                    .arg(key)
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES"),
                "ZRANGE",
            )
            .await?;
            let mut zset = Vec::with_capacity(pairs.len());
            for (member, text) in pairs {
                let score = crate::script::model::score(&text).map_err(|e| {
                    anyhow::anyhow!("ZRANGE of {:?}: {e}", String::from_utf8_lossy(key))
                })?;
                zset.push((member, score));
            }
            Some(SourceValue::ZSet(zset))
        }
        "hash" => Some(SourceValue::Hash(read_hash(conn, key, field_ttls).await?)),
        other => {
            let payload: Option<Vec<u8>> = query(conn, redis::cmd("DUMP").arg(key), "DUMP").await?;
            payload.map(|payload| SourceValue::Dump {
                payload,
                kind: other.to_owned(),
            })
        }
    };
    let pttl: i64 = query(conn, redis::cmd("PTTL").arg(key), "PTTL").await?;
    let Some(value) = value else {
        return Ok(Read::Gone);
    };
    if pttl == -2 {
        return Ok(Read::Gone);
    }
    let held = value_bytes(&value);
    if held > limits.value_bytes {
        return Ok(Read::TooBig(format!(
            "its value holds {held} bytes, above verify's limit for a scripted key ({} bytes)",
            limits.value_bytes
        )));
    }
    Ok(Read::Value(value, (pttl >= 0).then(|| unix_ms() + pttl)))
}

/// `MEMORY USAGE key`: the server's estimate of the key's bytes (None: it does not
/// answer, e.g. an ACL without MEMORY; the bytes read are checked after).
pub async fn memory_usage(
    conn: &mut (impl ConnectionLike + Send),
    key: &[u8],
) -> anyhow::Result<Option<u64>> {
    let usage: redis::RedisResult<Option<u64>> = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(key)
        .query_async(conn)
        .await;
    match usage {
        Ok(bytes) => Ok(bytes),
        Err(e) if e.is_io_error() => Err(e).context("MEMORY USAGE"),
        Err(_) => Ok(None),
    }
}

/// A hash's fields, values and field expiries.
async fn read_hash(
    conn: &mut (impl ConnectionLike + Send),
    key: &[u8],
    field_ttls: bool,
) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>, Option<i64>)>> {
    let pairs: Vec<(Vec<u8>, Vec<u8>)> =
        query(conn, redis::cmd("HGETALL").arg(key), "HGETALL").await?;
    let expiries = if field_ttls && !pairs.is_empty() {
        field_expiries(conn, key, pairs.iter().map(|(f, _)| f.as_slice())).await?
    } else {
        vec![None; pairs.len()]
    };
    Ok(pairs
        .into_iter()
        .zip(expiries)
        .map(|((f, v), at)| (f, v, at))
        .collect())
}

/// `HPEXPIRETIME key FIELDS n f...`: each field's expiry (None: none, or gone).
pub async fn field_expiries<'f>(
    conn: &mut (impl ConnectionLike + Send),
    key: &[u8],
    fields: impl ExactSizeIterator<Item = &'f [u8]>,
) -> anyhow::Result<Vec<Option<i64>>> {
    let mut cmd = redis::cmd("HPEXPIRETIME");
    cmd.arg(key).arg("FIELDS").arg(fields.len());
    for field in fields {
        cmd.arg(field);
    }
    let times: Vec<i64> = query(conn, &cmd, "HPEXPIRETIME").await?;
    Ok(times.into_iter().map(|t| (t >= 0).then_some(t)).collect())
}

/// Whether the server answers `HPEXPIRETIME` (Redis 7.4 and later).
pub async fn has_field_ttls(conn: &mut (impl ConnectionLike + Send)) -> bool {
    let reply: redis::RedisResult<redis::Value> = redis::cmd("COMMAND")
        .arg("INFO")
        .arg("HPEXPIRETIME")
        .query_async(conn)
        .await;
    matches!(reply, Ok(redis::Value::Array(items)) if items.first().is_some_and(|i| *i != redis::Value::Nil))
}

async fn query<T: redis::FromRedisValue>(
    conn: &mut (impl ConnectionLike + Send),
    cmd: &redis::Cmd,
    what: &str,
) -> anyhow::Result<T> {
    cmd.query_async(conn).await.with_context(|| what.to_owned())
}

/// Bytes of element data held.
fn value_bytes(value: &SourceValue) -> usize {
    match value {
        SourceValue::String(s) => s.len(),
        SourceValue::List(v) | SourceValue::Set(v) => v.iter().map(|e| e.len() + 8).sum(),
        SourceValue::ZSet(v) => v.iter().map(|(m, _)| m.len() + 16).sum(),
        SourceValue::Hash(v) => v.iter().map(|(f, x, _)| f.len() + x.len() + 16).sum(),
        SourceValue::Dump { payload, .. } => payload.len(),
    }
}

/// The commands that recreate `key` holding `value` with expiry `expiry` (unix ms),
/// the hash fields `drops` names left out (the sync drops them before the script).
pub fn commands(
    key: &[u8],
    value: &SourceValue,
    expiry: Option<i64>,
    drops: &HashDrops,
) -> Vec<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let command = |name: &str, rest: Vec<Vec<u8>>| -> Vec<Vec<u8>> {
        let mut argv = vec![name.as_bytes().to_vec(), key.to_vec()];
        argv.extend(rest);
        argv
    };
    let big = value_bytes(value) > BIG_STRING_BYTES;
    match value {
        SourceValue::String(bytes) if bytes.len() > BIG_STRING_BYTES => {
            out.push(command("DEL", Vec::new()));
            let last = (bytes.len() - 1).to_string().into_bytes();
            out.push(command("SETRANGE", vec![last, b"\0".to_vec()]));
            for (i, piece) in bytes.chunks(STRING_PIECE_BYTES).enumerate() {
                let at = (i * STRING_PIECE_BYTES).to_string().into_bytes();
                out.push(command("SETRANGE", vec![at, piece.to_vec()]));
            }
        }
        SourceValue::String(bytes) => out.push(command("SET", vec![bytes.clone()])),
        SourceValue::List(items) => batches(
            &mut out,
            "RPUSH",
            items.iter().map(|i| vec![i.clone()]),
            big,
            &command,
        ),
        SourceValue::Set(items) => batches(
            &mut out,
            "SADD",
            items.iter().map(|i| vec![i.clone()]),
            big,
            &command,
        ),
        SourceValue::ZSet(items) => batches(
            &mut out,
            "ZADD",
            items.iter().map(|(m, s)| vec![score_text(*s), m.clone()]),
            big,
            &command,
        ),
        SourceValue::Hash(fields) => {
            let kept: Vec<_> = fields
                .iter()
                .filter(|(f, _, _)| !drops.drops(key, f))
                .collect();
            batches(
                &mut out,
                "HSET",
                kept.iter().map(|(f, v, _)| vec![f.clone(), v.clone()]),
                big,
                &command,
            );
            for (field, _, at) in &kept {
                if let Some(at) = at {
                    out.push(command(
                        "HPEXPIREAT",
                        vec![
                            at.to_string().into_bytes(),
                            b"FIELDS".to_vec(),
                            b"1".to_vec(),
                            field.clone(),
                        ],
                    ));
                }
            }
        }
        SourceValue::Dump { payload, .. } => {
            let ttl = expiry.unwrap_or(0).to_string().into_bytes();
            let mut rest = vec![ttl, payload.clone(), b"REPLACE".to_vec()];
            if expiry.is_some() {
                rest.push(b"ABSTTL".to_vec());
            }
            out.push(command("RESTORE", rest));
            return out;
        }
    }
    if let Some(at) = expiry {
        out.push(command("PEXPIREAT", vec![at.to_string().into_bytes()]));
    }
    out
}

/// A score as the sync writes it in a ZADD: the shortest text that reads back to
/// the same double, `+inf` / `-inf` for the infinities.
fn score_text(score: f64) -> Vec<u8> {
    if score == f64::INFINITY {
        b"+inf".to_vec()
    } else if score == f64::NEG_INFINITY {
        b"-inf".to_vec()
    } else {
        format!("{score}").into_bytes()
    }
}

/// Builds `name key args...`.
type MakeCommand<'k> = dyn Fn(&str, Vec<Vec<u8>>) -> Vec<Vec<u8>> + 'k;

/// `DEL key`, then `name key elements...`: one command, or batches for a big key.
fn batches(
    out: &mut Vec<Vec<Vec<u8>>>,
    name: &str,
    elements: impl Iterator<Item = Vec<Vec<u8>>>,
    big: bool,
    command: &MakeCommand<'_>,
) {
    out.push(command("DEL", Vec::new()));
    let elements: Vec<Vec<Vec<u8>>> = elements.collect();
    let per = if big {
        BATCH_ELEMENTS
    } else {
        elements.len().max(1)
    };
    for batch in elements.chunks(per) {
        out.push(command(name, batch.iter().flatten().cloned().collect()));
    }
}

/// Now, in unix milliseconds.
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(c: &[Vec<Vec<u8>>]) -> Vec<String> {
        c.iter()
            .map(|argv| {
                argv.iter()
                    .map(|a| String::from_utf8_lossy(a))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    }

    #[test]
    fn each_type_is_recreated_as_the_sync_writes_it() {
        let none = HashDrops::default();
        assert_eq!(
            words(&commands(
                b"s",
                &SourceValue::String(b"v".to_vec()),
                Some(7),
                &none
            )),
            ["SET s v", "PEXPIREAT s 7"]
        );
        let list = SourceValue::List(vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(
            words(&commands(b"l", &list, None, &none)),
            ["DEL l", "RPUSH l a b"]
        );
        let zset = SourceValue::ZSet(vec![(b"m".to_vec(), 1.5)]);
        assert_eq!(
            words(&commands(b"z", &zset, None, &none)),
            ["DEL z", "ZADD z 1.5 m"]
        );
        let hash = SourceValue::Hash(vec![
            (b"f".to_vec(), b"1".to_vec(), Some(9)),
            (b"ssn".to_vec(), b"x".to_vec(), None),
        ]);
        let drops = HashDrops::new(&["ssn".to_owned()]).expect("rule");
        assert_eq!(
            words(&commands(b"h", &hash, Some(5), &drops)),
            [
                "DEL h",
                "HSET h f 1",
                "HPEXPIREAT h 9 FIELDS 1 f",
                "PEXPIREAT h 5"
            ]
        );
        let stream = SourceValue::Dump {
            payload: b"P".to_vec(),
            kind: "stream".into(),
        };
        assert_eq!(
            words(&commands(b"x", &stream, Some(5), &none)),
            ["RESTORE x 5 P REPLACE ABSTTL"]
        );
        assert_eq!(
            words(&commands(b"x", &stream, None, &none)),
            ["RESTORE x 0 P REPLACE"]
        );
        let empty = SourceValue::Hash(vec![(b"ssn".to_vec(), b"x".to_vec(), None)]);
        assert_eq!(words(&commands(b"h", &empty, None, &drops)), ["DEL h"]);
    }

    #[test]
    fn big_values_go_in_pieces_and_batches() {
        let none = HashDrops::default();
        let big = SourceValue::String(vec![b'x'; BIG_STRING_BYTES + 1]);
        let c = commands(b"s", &big, None, &none);
        assert_eq!(c.len(), 2 + 5);
        assert_eq!(c[1][2], (BIG_STRING_BYTES).to_string().into_bytes());
        let items = vec![vec![b'y'; 8192]; 1500];
        let c = commands(b"l", &SourceValue::List(items), None, &none);
        assert_eq!(c.len(), 3, "DEL and two batches");
        assert_eq!(c[1].len(), 2 + BATCH_ELEMENTS);
    }
}
