//! Digests of values read in chunks, so that a collection of any size is compared
//! without ever being held whole.
//!
//! - lists and streams: order-sensitive, one streaming xxh3-128 over the elements in
//!   order, each element framed by its length (so `["ab", "c"]` and `["a", "bc"]`
//!   differ);
//! - hashes, sets and zsets: order-independent, the wrapping sum of each element's own
//!   xxh3-128 (a field and its value, a member, a member and its score's exact bits),
//!   so HSCAN/SSCAN may return elements in any order, whatever the encoding;
//! - every digest also carries its element count, which gives a short hint
//!   ("source 12 elements, target 13") when two values differ.
//!
//! Zset scores are compared by the exact bits of the double Redis prints: `-0` and `0`
//! differ, `inf` and `-inf` are themselves; Redis never stores NaN in a zset.
//!
//! HSCAN and SSCAN may return an element twice when the key is resized during the
//! read; that can only happen while the key is written to, and shows as a value
//! difference that a later round re-checks (see `compare`'s rounds).

use redis::aio::ConnectionLike;
use redis::Value as Reply;
use xxhash_rust::xxh3::{xxh3_128, Xxh3};

use crate::read::canonical::{parse_score, stream_groups};

/// A value's digest: its element count and a 128-bit hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Digest {
    pub elements: u64,
    pub hash: u128,
}

/// Order-sensitive accumulator (lists, streams, strings).
pub struct Ordered {
    hasher: Xxh3,
    elements: u64,
}

impl Default for Ordered {
    fn default() -> Ordered {
        Ordered {
            hasher: Xxh3::new(),
            elements: 0,
        }
    }
}

impl Ordered {
    /// Adds one element made of `parts`, each framed by its length.
    pub fn add(&mut self, parts: &[&[u8]]) {
        for part in parts {
            self.hasher.update(&(part.len() as u64).to_le_bytes());
            self.hasher.update(part);
        }
        self.hasher.update(&[0xff]); // element separator, distinct from a length prefix byte run
        self.elements += 1;
    }

    pub fn finish(&self) -> Digest {
        Digest {
            elements: self.elements,
            hash: self.hasher.digest128(),
        }
    }
}

/// Order-independent accumulator (hashes, sets, zsets): the wrapping sum of the
/// elements' own hashes.
#[derive(Default)]
pub struct Unordered {
    sum: u128,
    elements: u64,
}

impl Unordered {
    pub fn add(&mut self, parts: &[&[u8]]) {
        let mut framed = Vec::with_capacity(parts.iter().map(|p| p.len() + 8).sum());
        for part in parts {
            framed.extend_from_slice(&(part.len() as u64).to_le_bytes());
            framed.extend_from_slice(part);
        }
        self.sum = self.sum.wrapping_add(xxh3_128(&framed));
        self.elements += 1;
    }

    pub fn finish(&self) -> Digest {
        Digest {
            elements: self.elements,
            hash: self.sum,
        }
    }
}

/// Digest of a hash given as (field, value) pairs, in any order.
pub fn of_hash<'a>(pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Digest {
    let mut acc = Unordered::default();
    for (f, v) in pairs {
        acc.add(&[f, v]);
    }
    acc.finish()
}

/// Digest of a set given as members, in any order.
pub fn of_set<'a>(members: impl IntoIterator<Item = &'a [u8]>) -> Digest {
    let mut acc = Unordered::default();
    for m in members {
        acc.add(&[m]);
    }
    acc.finish()
}

/// Digest of a zset given as (member, score), in any order.
pub fn of_zset<'a>(pairs: impl IntoIterator<Item = (&'a [u8], f64)>) -> Digest {
    let mut acc = Unordered::default();
    for (m, s) in pairs {
        acc.add(&[m, &s.to_bits().to_le_bytes()]);
    }
    acc.finish()
}

/// Digest of a list given as its elements in order.
pub fn of_list<'a>(elements: impl IntoIterator<Item = &'a [u8]>) -> Digest {
    let mut acc = Ordered::default();
    for e in elements {
        acc.add(&[e]);
    }
    acc.finish()
}

/// Reads the digest of `key` (of type `kind`, as TYPE names it) from the current
/// database of `conn`, `chunk` elements per command. Strings are read whole.
pub async fn read(
    conn: &mut (impl ConnectionLike + Send),
    key: &[u8],
    kind: &str,
    chunk: usize,
) -> redis::RedisResult<Digest> {
    let chunk = chunk.max(1);
    Ok(match kind {
        "string" => {
            let v: Option<Vec<u8>> = redis::cmd("GET").arg(key).query_async(conn).await?;
            let mut acc = Ordered::default();
            if let Some(v) = v {
                acc.add(&[&v]);
            }
            acc.finish()
        }
        "list" => list(conn, key, chunk).await?,
        "set" => {
            let mut acc = Unordered::default();
            scan_each(conn, "SSCAN", key, chunk, |items| {
                for m in items {
                    acc.add(&[&m]);
                }
            })
            .await?;
            acc.finish()
        }
        "hash" => {
            let mut acc = Unordered::default();
            scan_each(conn, "HSCAN", key, chunk, |items| {
                for pair in items.chunks(2) {
                    if let [f, v] = pair {
                        acc.add(&[f, v]);
                    }
                }
            })
            .await?;
            acc.finish()
        }
        "zset" => zset(conn, key, chunk).await?,
        "stream" => stream(conn, key, chunk).await?,
        other => {
            // A module type: compared by TYPE only.
            let mut acc = Ordered::default();
            acc.add(&[other.as_bytes()]);
            acc.finish()
        }
    })
}

/// The digest of hash `key` without the fields `dropped` holds for (the sync's
/// `--drop-hash-field`: on the source side; the target's is read with nothing
/// dropped), HSCAN `chunk` fields at a time, each kept field with its own expiry
/// (`HPEXPIRETIME`, Redis 7.4 and later; a server without the command has no field
/// expiries), so field TTLs are compared as DUMP compares them for other hashes. A
/// field without an expiry hashes as [`read`] hashes it.
pub async fn read_hash_without(
    conn: &mut (impl ConnectionLike + Send),
    key: &[u8],
    chunk: usize,
    dropped: impl Fn(&[u8]) -> bool,
) -> redis::RedisResult<Digest> {
    let mut acc = Unordered::default();
    let mut cursor = 0u64;
    let mut field_ttls = true;
    loop {
        let (next, items): (u64, Vec<Vec<u8>>) = redis::cmd("HSCAN")
            .arg(key)
            .arg(cursor)
            .arg("COUNT")
            .arg(chunk.max(1))
            .query_async(conn)
            .await?;
        let kept: Vec<(&[u8], &[u8])> = items
            .chunks(2)
            .filter_map(|pair| match pair {
                [f, v] if !dropped(f) => Some((f.as_slice(), v.as_slice())),
                _ => None,
            })
            .collect();
        let expiries = if field_ttls && !kept.is_empty() {
            let fields = kept.iter().map(|(f, _)| *f);
            match field_expiries(conn, key, fields, kept.len()).await {
                Ok(expiries) => expiries,
                Err(e) if e.to_string().contains("unknown command") => {
                    field_ttls = false;
                    Vec::new()
                }
                Err(e) => return Err(e),
            }
        } else {
            Vec::new()
        };
        for (n, (f, v)) in kept.iter().enumerate() {
            match expiries.get(n).copied().filter(|at| *at >= 0) {
                Some(at) => acc.add(&[f, v, &at.to_le_bytes()]),
                None => acc.add(&[f, v]),
            }
        }
        if next == 0 {
            return Ok(acc.finish());
        }
        cursor = next;
    }
}

/// `HPEXPIRETIME key FIELDS n field...`: each field's absolute expiry in unix ms
/// (-1 none, -2 no such field).
async fn field_expiries<'f>(
    conn: &mut (impl ConnectionLike + Send),
    key: &[u8],
    fields: impl Iterator<Item = &'f [u8]>,
    count: usize,
) -> redis::RedisResult<Vec<i64>> {
    let mut cmd = redis::cmd("HPEXPIRETIME");
    cmd.arg(key).arg("FIELDS").arg(count);
    for field in fields {
        cmd.arg(field);
    }
    cmd.query_async(conn).await
}

/// A list by LRANGE windows of `chunk` elements, in order.
async fn list(
    conn: &mut (impl ConnectionLike + Send),
    key: &[u8],
    chunk: usize,
) -> redis::RedisResult<Digest> {
    let mut acc = Ordered::default();
    let mut start = 0usize;
    loop {
        let window: Vec<Vec<u8>> = redis::cmd("LRANGE")
            .arg(key)
            .arg(start)
            .arg(start + chunk - 1)
            .query_async(conn)
            .await?;
        for e in &window {
            acc.add(&[e]);
        }
        if window.len() < chunk {
            return Ok(acc.finish());
        }
        start += chunk;
    }
}

/// A sorted set by ZRANGE rank windows, members with their exact score bits.
async fn zset(
    conn: &mut (impl ConnectionLike + Send),
    key: &[u8],
    chunk: usize,
) -> redis::RedisResult<Digest> {
    // By rank windows: ZRANGE has no duplicates while the key is unchanged.
    let mut acc = Unordered::default();
    let mut start = 0usize;
    loop {
        let window: Vec<(Vec<u8>, String)> = redis::cmd("ZRANGE")
            .arg(key)
            .arg(start)
            .arg(start + chunk - 1)
            .arg("WITHSCORES")
            .query_async(conn)
            .await?;
        for (m, s) in &window {
            acc.add(&[m, &parse_score(s).to_bits().to_le_bytes()]);
        }
        if window.len() < chunk {
            return Ok(acc.finish());
        }
        start += chunk;
    }
}

/// Runs an SSCAN/HSCAN to its end, handing each batch of items to `each`.
async fn scan_each(
    conn: &mut (impl ConnectionLike + Send),
    command: &str,
    key: &[u8],
    chunk: usize,
    mut each: impl FnMut(Vec<Vec<u8>>),
) -> redis::RedisResult<()> {
    let mut cursor = 0u64;
    loop {
        let (next, items): (u64, Vec<Vec<u8>>) = redis::cmd(command)
            .arg(key)
            .arg(cursor)
            .arg("COUNT")
            .arg(chunk)
            .query_async(conn)
            .await?;
        each(items);
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// A stream: its entries in order (XRANGE windows), then each group's name,
/// last-delivered ID and pending entries (ID, consumer, delivery count), as
/// `canonical` compares them.
async fn stream(
    conn: &mut (impl ConnectionLike + Send),
    key: &[u8],
    chunk: usize,
) -> redis::RedisResult<Digest> {
    let mut acc = Ordered::default();
    let mut start = b"-".to_vec();
    loop {
        let window: Vec<Reply> = redis::cmd("XRANGE")
            .arg(key)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(chunk)
            .query_async(conn)
            .await?;
        let mut last_id = None;
        for entry in &window {
            let (id, fields): (Vec<u8>, Vec<Vec<u8>>) =
                redis::from_redis_value(entry.clone()).unwrap_or_default();
            let mut parts: Vec<&[u8]> = vec![&id];
            parts.extend(fields.iter().map(Vec::as_slice));
            acc.add(&parts);
            last_id = Some(id);
        }
        match last_id {
            Some(id) if window.len() >= chunk => {
                start = b"(".to_vec();
                start.extend_from_slice(&id);
            }
            _ => break,
        }
    }
    for group in stream_groups(conn, key).await? {
        let last: Vec<u8> = redis::from_redis_value(group.last_delivered).unwrap_or_default();
        let pending = format!("{:?}", group.pending);
        acc.add(&[b"group", &group.name_bytes, &last, pending.as_bytes()]);
    }
    Ok(acc.finish())
}
