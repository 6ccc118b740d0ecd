//! A key's value in canonical form: equal forms mean equal values, whatever the
//! encoding, the Redis version or the order a server returns elements in.
//!
//! - string: its bytes; list: elements in order; set: members sorted;
//! - zset: (member, score) sorted by member, scores compared by their exact bits
//!   after reading them as text (`-0` and `0` differ; `inf`/`-inf` are themselves);
//! - hash: (field, value) sorted by field;
//! - stream: entries in order, plus each group's name, last-delivered ID, and its
//!   pending entries (ID, consumer, delivery count). Consumers that own no pending
//!   entry are not compared: Redis itself does not always propagate their creation
//!   (a native 8.2 replica under the churn workload lacks some of them; see the
//!   `native_replica_baseline` test), so comparing them would report Redis's own
//!   replication as inconsistent.

use redis::aio::ConnectionLike;
use redis::Value as Reply;

/// A value in canonical form.
#[derive(Clone, Debug, PartialEq)]
pub enum Canonical {
    String(Vec<u8>),
    List(Vec<Vec<u8>>),
    Set(Vec<Vec<u8>>),
    ZSet(Vec<(Vec<u8>, u64)>),
    Hash(Vec<(Vec<u8>, Vec<u8>)>),
    Stream {
        entries: Vec<Reply>,
        groups: Vec<Reply>,
    },
    /// A type this reader does not know (a module type): compared by TYPE only.
    Other(String),
    /// The key vanished between SCAN and the read (expired or deleted).
    Gone,
}

/// Reads `key` from the current database of `conn`.
pub async fn read(
    conn: &mut (impl ConnectionLike + Send),
    key: &[u8],
) -> redis::RedisResult<Canonical> {
    let kind: String = redis::cmd("TYPE").arg(key).query_async(conn).await?;
    Ok(match kind.as_str() {
        "none" => Canonical::Gone,
        "string" => {
            let v: Option<Vec<u8>> = redis::cmd("GET").arg(key).query_async(conn).await?;
            v.map_or(Canonical::Gone, Canonical::String)
        }
        "list" => Canonical::List(
            redis::cmd("LRANGE")
                .arg(key)
                .arg(0)
                .arg(-1)
                .query_async(conn)
                .await?,
        ),
        "set" => {
            let mut members: Vec<Vec<u8>> =
                redis::cmd("SMEMBERS").arg(key).query_async(conn).await?;
            members.sort();
            Canonical::Set(members)
        }
        "zset" => {
            let pairs: Vec<(Vec<u8>, String)> = redis::cmd("ZRANGE")
                .arg(key)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .query_async(conn)
                .await?;
            let mut out: Vec<(Vec<u8>, u64)> = pairs
                .into_iter()
                .map(|(m, s)| (m, parse_score(&s).to_bits()))
                .collect();
            out.sort();
            Canonical::ZSet(out)
        }
        "hash" => {
            let mut pairs: Vec<(Vec<u8>, Vec<u8>)> =
                redis::cmd("HGETALL").arg(key).query_async(conn).await?;
            pairs.sort();
            Canonical::Hash(pairs)
        }
        "stream" => {
            let entries: Vec<Reply> = redis::cmd("XRANGE")
                .arg(key)
                .arg("-")
                .arg("+")
                .query_async(conn)
                .await?;
            let groups = stream_groups(conn, key)
                .await?
                .into_iter()
                .map(|g| Reply::Array(vec![g.name, g.last_delivered, g.pending]))
                .collect();
            Canonical::Stream { entries, groups }
        }
        other => Canonical::Other(other.to_owned()),
    })
}

/// A stream consumer group as verify compares it.
pub(crate) struct GroupState {
    pub name: Reply,
    pub name_bytes: Vec<u8>,
    pub last_delivered: Reply,
    /// XPENDING's entries without their idle time (ID, consumer, delivery count).
    pub pending: Reply,
}

/// The consumer groups of stream `key`: name, last-delivered ID and PEL. Idle
/// consumers are left out (see the module doc).
pub(crate) async fn stream_groups(
    conn: &mut (impl ConnectionLike + Send),
    key: &[u8],
) -> redis::RedisResult<Vec<GroupState>> {
    let infos: Vec<Reply> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(key)
        .query_async(conn)
        .await?;
    let mut groups = Vec::with_capacity(infos.len());
    for info in infos {
        let name = field(&info, "name");
        let name_bytes: Vec<u8> = redis::from_redis_value(name.clone()).unwrap_or_default();
        let pending: Reply = redis::cmd("XPENDING")
            .arg(key)
            .arg(&name_bytes)
            .arg("-")
            .arg("+")
            .arg(1_000_000)
            .query_async(conn)
            .await?;
        // XPENDING's idle time (field 3) changes by itself: keep ID, consumer, count.
        groups.push(GroupState {
            last_delivered: field(&info, "last-delivered-id"),
            pending: strip_idle(pending),
            name,
            name_bytes,
        });
    }
    Ok(groups)
}

/// A score as Redis prints it, to the exact double.
pub(crate) fn parse_score(text: &str) -> f64 {
    match text {
        "inf" | "+inf" => f64::INFINITY,
        "-inf" => f64::NEG_INFINITY,
        other => other.parse().unwrap_or(f64::NAN),
    }
}

/// A field of an XINFO reply (a flat array of name, value pairs, or a RESP3 map).
pub(crate) fn field(reply: &Reply, name: &str) -> Reply {
    let items: Vec<(Reply, Reply)> = match reply {
        Reply::Array(items) => items
            .chunks(2)
            .filter_map(|c| Some((c.first()?.clone(), c.get(1)?.clone())))
            .collect(),
        Reply::Map(pairs) => pairs.clone(),
        _ => Vec::new(),
    };
    items
        .into_iter()
        .find(|(k, _)| {
            matches!(k, Reply::BulkString(b) if b == name.as_bytes())
                || matches!(k, Reply::SimpleString(s) if s == name)
        })
        .map(|(_, v)| v)
        .unwrap_or(Reply::Nil)
}

pub(crate) fn strip_idle(pending: Reply) -> Reply {
    match pending {
        Reply::Array(items) => Reply::Array(
            items
                .into_iter()
                .map(|item| match item {
                    Reply::Array(mut fields) if fields.len() == 4 => {
                        fields.remove(2);
                        Reply::Array(fields)
                    }
                    other => other,
                })
                .collect(),
        ),
        other => other,
    }
}
