//! A seeded data set that covers every core Redis type in every encoding the server's
//! version chooses, written fast with pipelines: the source a sync's full copy (RDB
//! transfer) is tested against.
//!
//! [`DataSet::write`] fills a server from a [`DataSpec`] (a seed, `scale` keys per
//! family, the databases to spread keys over, the size of the big keys) and returns a
//! [`DataReport`] listing every key it wrote with its database, type, the encoding the
//! server is expected to give it (per version: `ziplist` on 6.2 where 7.0+ says
//! `listpack`, set `listpack` and list `listpack` only on 7.2+, hash `listpackex` for
//! field TTLs on 7.4+) and how it expires. The same seed writes the same content.
//!
//! Key `index` of every family goes to database `dbs[index % dbs.len()]`, so with
//! `scale >= dbs.len()` every database holds every family. Big keys (a string, hash,
//! list, set and zset of about `big_key_bytes` each) go to the first database.
//!
//! [`DataSet::write_cluster`] writes the same data set into a Redis Cluster (database 0
//! only): keys keep their names, so they fall on hash slots of every shard, and each
//! command goes to the primary serving its key's slot (CRC16 with hash tags,
//! [`crate::topology::key_slot`]), batched in one pipeline per primary. Every command
//! of the data set names a single key, so none crosses slots.
//!
//! The churn workload ([`crate::churn`]) reuses the value generators and the version
//! detection defined here.
//!
//! It is test input, not an oracle: it must never read anything back through lockstep's
//! crates (it depends on none), and a test checks what a sync made of it on the
//! servers themselves.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use redis::aio::MultiplexedConnection;
use redis::{Cmd, Pipeline};

use crate::topology::{key_slot, Cluster, SLOT_COUNT};
use crate::version::RedisVersion;

/// Entries of a small hash/zset/set/list stay below every version's compact-encoding
/// limits (the defaults: 512 hash fields, 128 zset or set members, 64-byte elements);
/// large ones exceed them.
const SMALL_MAX: usize = 60;
const LARGE_MIN: usize = 150;
const LARGE_MAX: usize = 300;
const LARGE_HASH_MIN: usize = 600;
const LARGE_HASH_MAX: usize = 900;
/// The field-count limit of a compact (ziplist/listpack) hash.
const HASH_COMPACT_MAX_ENTRIES: usize = 512;
/// The member-count limit of a compact zset or (7.2+) set.
const COMPACT_MAX_ENTRIES: usize = 128;
/// The element-size limit of a compact hash, zset or set.
const COMPACT_MAX_BYTES: usize = 64;
/// The entry-count limit of an intset.
const INTSET_MAX_ENTRIES: usize = 512;
/// A list longer than this (in bytes) no longer fits one 8 KB listpack node.
const LIST_NODE_BYTES: usize = 8 * 1024;
/// Commands per pipeline and bytes per pipeline before it is sent.
const BATCH_COMMANDS: usize = 1024;
const BATCH_BYTES: usize = 1 << 20;
/// Elements per variadic command (RPUSH, HSET, SADD, ZADD, PFADD) when a key is big.
const CHUNK_ELEMENTS: usize = 1000;
/// 2100-01-01T00:00:00Z: absolute expiry times "far in the future" start here.
pub const FAR_FUTURE_UNIX_SECS: u64 = 4_102_444_800;
/// The first stream ID (milliseconds part) the data set uses.
const STREAM_ID_BASE_MS: u64 = 1_600_000_000_000;

/// What to write.
#[derive(Clone, Debug)]
pub struct DataSpec {
    /// Seeds all content (ChaCha8): the same seed writes the same keys and values.
    pub seed: u64,
    /// Keys per family.
    pub scale: usize,
    /// Databases the keys are spread over (round-robin by key index).
    pub dbs: Vec<i64>,
    /// Approximate size of each of the five big keys; 0 writes no big keys.
    pub big_key_bytes: usize,
    /// TTL of the keys (and hash fields) that are about to expire.
    pub soon_ttl: Duration,
}

impl DataSpec {
    /// `scale` keys per family from `seed`, over databases 0, 1, 5 and 15, no big keys,
    /// and a 2 s TTL for the keys about to expire.
    pub fn new(seed: u64, scale: usize) -> DataSpec {
        DataSpec {
            seed,
            scale,
            dbs: vec![0, 1, 5, 15],
            big_key_bytes: 0,
            soon_ttl: Duration::from_secs(2),
        }
    }

    pub fn dbs(mut self, dbs: &[i64]) -> Self {
        self.dbs = dbs.to_vec();
        self
    }

    /// Adds a big string, hash, list, set and zset of about `bytes` each.
    pub fn big_keys(mut self, bytes: usize) -> Self {
        self.big_key_bytes = bytes;
        self
    }

    pub fn soon_ttl(mut self, ttl: Duration) -> Self {
        self.soon_ttl = ttl;
        self
    }
}

impl Default for DataSpec {
    fn default() -> Self {
        DataSpec::new(1, 100)
    }
}

/// A group of keys written the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// Strings holding integers: encoding `int`.
    StringInt,
    /// Short strings: `embstr` (at most 44 bytes; on 8.x key and value together at
    /// most 41).
    StringEmbstr,
    /// Longer strings: `raw`.
    StringRaw,
    /// Hashes within the compact limits: `ziplist` (6.2) / `listpack` (7.0+).
    HashSmall,
    /// Hashes beyond them: `hashtable`.
    HashLarge,
    /// Hashes with per-field TTLs (HEXPIRE, 7.4+): `listpackex` or `hashtable`.
    HashFieldTtl,
    /// Sorted sets within the compact limits: `ziplist` / `listpack`.
    ZsetSmall,
    /// Sorted sets beyond them: `skiplist`.
    ZsetLarge,
    /// Lists of one node: `quicklist` before 7.2, `listpack` from 7.2.
    ListShort,
    /// Lists of many quicklist nodes: `quicklist`.
    ListLong,
    /// Sets of integers: `intset`.
    SetInt,
    /// Small sets of text: `listpack` from 7.2, `hashtable` before.
    SetSmall,
    /// Large sets of text: `hashtable`.
    SetLarge,
    /// Streams with deleted entries, two consumer groups, several consumers and
    /// pending (delivered, unacknowledged) entries.
    Stream,
    /// HyperLogLogs in the sparse representation.
    HllSparse,
    /// HyperLogLogs in the dense representation.
    HllDense,
    /// Strings written with SETBIT.
    Bitmap,
    /// Sorted sets written with GEOADD, small and large.
    Geo,
    /// Keys of every type with TTLs: seconds, milliseconds, far future, about to expire.
    Volatile,
    /// Keys of every type whose names and contents hold NUL, CR LF and non-UTF-8 bytes.
    Binary,
    /// A big string, hash, list, set and zset of about `big_key_bytes` each.
    Big,
}

impl Family {
    /// Every family, in the order they are written.
    pub const ALL: [Family; 21] = [
        Family::StringInt,
        Family::StringEmbstr,
        Family::StringRaw,
        Family::HashSmall,
        Family::HashLarge,
        Family::HashFieldTtl,
        Family::ZsetSmall,
        Family::ZsetLarge,
        Family::ListShort,
        Family::ListLong,
        Family::SetInt,
        Family::SetSmall,
        Family::SetLarge,
        Family::Stream,
        Family::HllSparse,
        Family::HllDense,
        Family::Bitmap,
        Family::Geo,
        Family::Volatile,
        Family::Binary,
        Family::Big,
    ];

    /// The key prefix of the family.
    pub fn name(self) -> &'static str {
        match self {
            Family::StringInt => "string-int",
            Family::StringEmbstr => "string-embstr",
            Family::StringRaw => "string-raw",
            Family::HashSmall => "hash-small",
            Family::HashLarge => "hash-large",
            Family::HashFieldTtl => "hash-field-ttl",
            Family::ZsetSmall => "zset-small",
            Family::ZsetLarge => "zset-large",
            Family::ListShort => "list-short",
            Family::ListLong => "list-long",
            Family::SetInt => "set-int",
            Family::SetSmall => "set-small",
            Family::SetLarge => "set-large",
            Family::Stream => "stream",
            Family::HllSparse => "hll-sparse",
            Family::HllDense => "hll-dense",
            Family::Bitmap => "bitmap",
            Family::Geo => "geo",
            Family::Volatile => "volatile",
            Family::Binary => "binary",
            Family::Big => "big",
        }
    }

    /// Whether the server's version has the commands this family needs.
    pub fn available(self, version: RedisVersion) -> bool {
        match self {
            Family::HashFieldTtl => has_hash_field_ttl(version),
            _ => true,
        }
    }
}

/// The Redis type of a key, as `TYPE` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyType {
    String,
    Hash,
    List,
    Set,
    Zset,
    Stream,
}

impl KeyType {
    /// The answer of `TYPE` for such a key.
    pub fn name(self) -> &'static str {
        match self {
            KeyType::String => "string",
            KeyType::Hash => "hash",
            KeyType::List => "list",
            KeyType::Set => "set",
            KeyType::Zset => "zset",
            KeyType::Stream => "stream",
        }
    }

    /// The types that [`Family::Volatile`] and [`Family::Binary`] cycle through.
    const CYCLE: [KeyType; 5] = [
        KeyType::String,
        KeyType::Hash,
        KeyType::Set,
        KeyType::Zset,
        KeyType::List,
    ];
}

/// How a key expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Expiry {
    /// No TTL.
    Never,
    /// EXPIRE with 1 h to 1 day.
    Seconds,
    /// PEXPIRE with 1 h to 1 day, at millisecond precision.
    Millis,
    /// EXPIREAT after 2100-01-01.
    FarFuture,
    /// PEXPIRE with [`DataSpec::soon_ttl`]: gone shortly after the write.
    Soon,
}

/// One key the data set wrote.
#[derive(Clone, Debug)]
pub struct WrittenKey {
    pub db: i64,
    pub key: Vec<u8>,
    pub family: Family,
    pub key_type: KeyType,
    /// What `OBJECT ENCODING` should answer on the server the set was written to.
    pub encoding: &'static str,
    /// For HyperLogLogs, what `PFDEBUG ENCODING` should answer (`sparse`/`dense`).
    pub hll_representation: Option<&'static str>,
    /// Elements (fields, members, entries; 1 for a plain string) the key holds.
    pub elements: usize,
    pub expiry: Expiry,
}

/// What [`DataSet::write`] or [`DataSet::write_cluster`] wrote.
#[derive(Clone, Debug)]
pub struct DataReport {
    pub seed: u64,
    pub scale: usize,
    pub version: RedisVersion,
    pub keys: Vec<WrittenKey>,
    /// Bytes of commands sent.
    pub bytes_sent: u64,
    pub elapsed: Duration,
}

impl DataReport {
    /// Keys written per database (including those about to expire).
    pub fn keys_per_db(&self) -> BTreeMap<i64, usize> {
        let mut out = BTreeMap::new();
        for key in &self.keys {
            *out.entry(key.db).or_default() += 1;
        }
        out
    }

    /// Keys per database that expire [`DataSpec::soon_ttl`] after the write.
    pub fn expiring_soon_per_db(&self) -> BTreeMap<i64, usize> {
        let mut out = BTreeMap::new();
        for key in self.keys.iter().filter(|k| k.expiry == Expiry::Soon) {
            *out.entry(key.db).or_default() += 1;
        }
        out
    }

    /// The encodings the keys are expected to have.
    pub fn encodings(&self) -> BTreeSet<&'static str> {
        self.keys.iter().map(|k| k.encoding).collect()
    }

    /// Elements written over all keys.
    pub fn elements(&self) -> u64 {
        self.keys.iter().map(|k| k.elements as u64).sum()
    }
}

impl std::fmt::Display for DataReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "data set seed={} scale={} on Redis {}: {} keys, {} elements, {} MB in {:.2?}; keys per db {:?}; encodings {:?}",
            self.seed,
            self.scale,
            self.version,
            self.keys.len(),
            self.elements(),
            self.bytes_sent / 1_000_000,
            self.elapsed,
            self.keys_per_db(),
            self.encodings()
        )
    }
}

/// Every encoding the data set produces on `version`: what a test should find on the
/// server after [`DataSet::write`] with `scale >= 3` (and big keys or not).
pub fn expected_encodings(version: RedisVersion) -> BTreeSet<&'static str> {
    let mut out: BTreeSet<&'static str> = [
        "int",
        "embstr",
        "raw",
        compact_encoding(version),
        "hashtable",
        "skiplist",
        "quicklist",
        "intset",
        "stream",
    ]
    .into_iter()
    .collect();
    if has_listpack_sets_and_lists(version) {
        out.insert("listpack");
    }
    if has_hash_field_ttl(version) {
        out.insert("listpackex");
    }
    out
}

/// Writes data sets.
pub struct DataSet;

impl DataSet {
    /// Writes the data set `spec` describes through its own connection from `client`
    /// (it SELECTs databases, so it does not touch the caller's connections).
    pub async fn write(client: &redis::Client, spec: &DataSpec) -> crate::Result<DataReport> {
        anyhow::ensure!(!spec.dbs.is_empty(), "DataSpec.dbs is empty");
        let started = Instant::now();
        let conn = connect(client).await?;
        let writer = Writer::new(vec![("the server".to_owned(), conn)], None);
        Self::fill(writer, spec, started).await
    }

    /// Writes the data set `spec` describes into a Redis Cluster: each command goes to
    /// the primary serving its key's hash slot (as the cluster's layout stands when the
    /// write starts; no MOVED is followed), one connection and one pipeline per
    /// primary. Keys keep their standalone names, so they spread over the slots of
    /// every shard; every command of the data set names a single key, so none crosses
    /// slots. A cluster has database 0 only: `spec.dbs` must be `[0]`. The report and
    /// the content are the same as [`DataSet::write`] gives a standalone server for
    /// the same spec.
    pub async fn write_cluster(cluster: &Cluster, spec: &DataSpec) -> crate::Result<DataReport> {
        anyhow::ensure!(
            spec.dbs == [0],
            "a cluster has database 0 only, DataSpec.dbs is {:?}",
            spec.dbs
        );
        let started = Instant::now();
        // The layout as the first node that answers sees it (a test may have killed one).
        let mut views = Err(anyhow::anyhow!("the cluster has no nodes"));
        for node in &cluster.nodes {
            views = cluster.node_views(node).await;
            if views.is_ok() {
                break;
            }
        }
        let mut owner = vec![usize::MAX; usize::from(SLOT_COUNT)];
        let mut conns = Vec::new();
        for view in views.context("reading the cluster's layout")? {
            if !view.is_primary || view.slots.is_empty() {
                continue;
            }
            let node = cluster
                .nodes
                .iter()
                .find(|n| n.port() == view.port)
                .with_context(|| format!("primary on port {} is not ours", view.port))?;
            for &(first, last) in &view.slots {
                for slot in first..=last {
                    owner[usize::from(slot)] = conns.len();
                }
            }
            let conn = connect(&node.redis_client()?).await?;
            conns.push((format!("primary {}", node.addr()), conn));
        }
        if let Some(slot) = owner.iter().position(|&o| o == usize::MAX) {
            anyhow::bail!("slot {slot} is not served by any primary");
        }
        Self::fill(Writer::new(conns, Some(owner)), spec, started).await
    }

    /// Generates every family through `writer` and waits until all is answered.
    async fn fill(
        mut writer: Writer,
        spec: &DataSpec,
        started: Instant,
    ) -> crate::Result<DataReport> {
        let version = server_version(&mut writer.conns[0].1).await?;
        let mut loader = Loader {
            writer,
            spec,
            version,
            keys: Vec::new(),
        };
        for family in Family::ALL {
            if family.available(version) {
                loader.write_family(family).await?;
            }
        }
        loader.writer.flush_all().await?;
        Ok(DataReport {
            seed: spec.seed,
            scale: spec.scale,
            version,
            keys: loader.keys,
            bytes_sent: loader.writer.bytes_sent,
            elapsed: started.elapsed(),
        })
    }
}

/// A connection without a response timeout: a pipeline of big keys may take a while.
async fn connect(client: &redis::Client) -> crate::Result<MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .context("connecting the data set writer")
}

/// The version of the server behind `conn`, from `INFO server` (`valkey_version`
/// first: a Valkey says `redis_version:7.2.4` whatever its own version).
pub(crate) async fn server_version(
    conn: &mut MultiplexedConnection,
) -> crate::Result<RedisVersion> {
    let info = crate::info::info(conn, "server").await?;
    RedisVersion::from_info(|name| info.get(name).map(str::to_owned))
}

/// Hash field TTLs (HEXPIRE and friends) exist from 7.4.
pub(crate) fn has_hash_field_ttl(version: RedisVersion) -> bool {
    version >= RedisVersion::V8_2
}

/// Small sets of text and small lists are listpacks from 7.2 (Valkey 8.1 too).
fn has_listpack_sets_and_lists(version: RedisVersion) -> bool {
    version >= RedisVersion::Valkey8_1
}

/// The compact encoding of small hashes and zsets.
fn compact_encoding(version: RedisVersion) -> &'static str {
    if version >= RedisVersion::V7_0 {
        "listpack"
    } else {
        "ziplist"
    }
}

/// Whether `count` elements of at most `max_len` bytes fit a compact zset or set.
fn fits_compact(count: usize, max_len: usize) -> bool {
    count <= COMPACT_MAX_ENTRIES && max_len <= COMPACT_MAX_BYTES
}

fn hash_encoding(
    version: RedisVersion,
    count: usize,
    max_len: usize,
    field_ttls: bool,
) -> &'static str {
    let compact = count <= HASH_COMPACT_MAX_ENTRIES && max_len <= COMPACT_MAX_BYTES;
    match (compact, field_ttls) {
        (false, _) => "hashtable",
        (true, true) => "listpackex",
        (true, false) => compact_encoding(version),
    }
}

fn zset_encoding(version: RedisVersion, count: usize, max_len: usize) -> &'static str {
    if fits_compact(count, max_len) {
        compact_encoding(version)
    } else {
        "skiplist"
    }
}

fn set_encoding(version: RedisVersion, members: &[Vec<u8>]) -> &'static str {
    let all_ints = members.iter().all(|m| is_redis_integer(m));
    let max_len = members.iter().map(Vec::len).max().unwrap_or(0);
    if all_ints && members.len() <= INTSET_MAX_ENTRIES {
        "intset"
    } else if has_listpack_sets_and_lists(version) && fits_compact(members.len(), max_len) {
        "listpack"
    } else {
        "hashtable"
    }
}

fn list_encoding(version: RedisVersion, total_bytes: usize) -> &'static str {
    if has_listpack_sets_and_lists(version) && total_bytes < LIST_NODE_BYTES {
        "listpack"
    } else {
        "quicklist"
    }
}

/// Up to 7.x a string of at most 44 bytes is `embstr`. From Redis 8.0 (and in Valkey
/// 8.1, measured) the key is embedded in the same allocation as the value (and the
/// expire time when there is one), so the limit is on key + value: 41 bytes, 8 fewer
/// with a TTL.
fn string_encoding(version: RedisVersion, target: &Target, value: &[u8]) -> &'static str {
    let embeds = if version >= RedisVersion::Valkey8_1 {
        let ttl_bytes = if target.with_ttl { 8 } else { 0 };
        target.key.len() + value.len() + ttl_bytes <= 41
    } else {
        value.len() <= 44
    };
    if is_redis_integer(value) {
        "int"
    } else if embeds {
        "embstr"
    } else {
        "raw"
    }
}

/// Whether Redis stores `bytes` as an integer (canonical decimal of an i64).
fn is_redis_integer(bytes: &[u8]) -> bool {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse::<i64>().ok().map(|n| n.to_string() == s))
        .unwrap_or(false)
}

/// Random letters and digits of a length in `len`, never a number (the first byte is
/// a letter).
pub(crate) fn text(rng: &mut ChaCha8Rng, len: RangeInclusive<usize>) -> Vec<u8> {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let len = rng.random_range(len).max(1);
    // One random byte per character (a slight bias towards the first letters is fine
    // for test data, and makes big keys cheap to generate).
    let mut out = vec![0; len];
    rng.fill_bytes(&mut out);
    for (i, byte) in out.iter_mut().enumerate() {
        let alphabet = if i == 0 { LETTERS } else { ALNUM };
        *byte = alphabet[*byte as usize % alphabet.len()];
    }
    out
}

/// Random bytes of a length in `len` (at least 4) that hold NUL, CR LF and a
/// non-UTF-8 byte.
pub(crate) fn binary(rng: &mut ChaCha8Rng, len: RangeInclusive<usize>) -> Vec<u8> {
    const MARKER: &[u8] = b"\x00\r\n\xff";
    let len = rng.random_range(len).max(MARKER.len());
    let mut out = vec![0; len];
    rng.fill_bytes(&mut out);
    let at = rng.random_range(0..=len - MARKER.len());
    out[at..at + MARKER.len()].copy_from_slice(MARKER);
    out
}

/// A per-family random stream, so that adding a family does not change the others.
fn family_rng(seed: u64, family: Family) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(family as u64 + 1);
    rng
}

/// Pipelines per (connection, database), each opening with SELECT, sent when full.
///
/// A standalone server has one connection; a cluster has one per primary and a
/// slot table that says which connection serves each key. Per connection, one
/// pipeline is in flight while the next is built (the server executes one batch
/// while this side generates the next), and pipelines are answered in the order
/// they were sent, so each key's commands apply in order.
struct Writer {
    /// A name for messages and the connection, per server written to.
    conns: Vec<(String, MultiplexedConnection)>,
    /// For a cluster: the index in `conns` of the primary serving each hash slot.
    slot_owner: Option<Vec<usize>>,
    batches: BTreeMap<(usize, i64), Batch>,
    bytes_sent: u64,
    /// Per connection, the pipeline sent last, until it is answered.
    in_flight: Vec<Option<tokio::task::JoinHandle<crate::Result<()>>>>,
}

struct Batch {
    pipe: Pipeline,
    commands: usize,
    bytes: usize,
}

impl Writer {
    fn new(conns: Vec<(String, MultiplexedConnection)>, slot_owner: Option<Vec<usize>>) -> Writer {
        let in_flight = conns.iter().map(|_| None).collect();
        Writer {
            conns,
            slot_owner,
            batches: BTreeMap::new(),
            bytes_sent: 0,
            in_flight,
        }
    }

    /// Queues `cmd`, whose only key is `key`, for database `db`.
    async fn push(&mut self, db: i64, key: &[u8], cmd: Cmd) -> crate::Result<()> {
        let conn = match &self.slot_owner {
            Some(owner) => owner[usize::from(key_slot(key))],
            None => 0,
        };
        let bytes: usize = cmd
            .args_iter()
            .map(|arg| match arg {
                redis::Arg::Simple(data) => data.len(),
                _ => 0,
            })
            .sum();
        let batch = self.batches.entry((conn, db)).or_insert_with(|| {
            let mut pipe = redis::pipe();
            pipe.cmd("SELECT").arg(db).ignore();
            Batch {
                pipe,
                commands: 0,
                bytes: 0,
            }
        });
        batch.pipe.add_command(cmd).ignore();
        batch.commands += 1;
        batch.bytes += bytes;
        if batch.commands >= BATCH_COMMANDS || batch.bytes >= BATCH_BYTES {
            self.flush((conn, db)).await?;
        }
        Ok(())
    }

    async fn flush(&mut self, (index, db): (usize, i64)) -> crate::Result<()> {
        let Some(batch) = self.batches.remove(&(index, db)) else {
            return Ok(());
        };
        // Order between pipelines is kept: the next one starts after the last answered.
        self.wait_in_flight(index).await?;
        self.bytes_sent += batch.bytes as u64;
        let (name, conn) = &self.conns[index];
        let (name, mut conn) = (name.clone(), conn.clone());
        self.in_flight[index] = Some(tokio::spawn(async move {
            batch
                .pipe
                .query_async::<()>(&mut conn)
                .await
                .with_context(|| {
                    format!("writing {} commands to db {db} of {name}", batch.commands)
                })
        }));
        // Let the request reach the socket before this task goes back to generating
        // (on a current-thread runtime nothing else runs until it yields).
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        Ok(())
    }

    async fn wait_in_flight(&mut self, index: usize) -> crate::Result<()> {
        if let Some(sending) = self.in_flight[index].take() {
            sending.await.context("the data set's pipeline task")??;
        }
        Ok(())
    }

    async fn flush_all(&mut self) -> crate::Result<()> {
        let batches: Vec<(usize, i64)> = self.batches.keys().copied().collect();
        for batch in batches {
            self.flush(batch).await?;
        }
        for index in 0..self.in_flight.len() {
            self.wait_in_flight(index).await?;
        }
        Ok(())
    }
}

/// Writes the families of one data set.
struct Loader<'a> {
    writer: Writer,
    spec: &'a DataSpec,
    version: RedisVersion,
    keys: Vec<WrittenKey>,
}

/// The shape of one key while it is being written.
struct Target {
    db: i64,
    key: Vec<u8>,
    family: Family,
    /// The key gets a TTL after it is written (on 8.x that shrinks the embstr limit).
    with_ttl: bool,
}

impl Target {
    fn written(self, key_type: KeyType, encoding: &'static str, elements: usize) -> WrittenKey {
        WrittenKey {
            db: self.db,
            key: self.key,
            family: self.family,
            key_type,
            encoding,
            hll_representation: None,
            elements,
            expiry: Expiry::Never,
        }
    }
}

impl Loader<'_> {
    async fn write_family(&mut self, family: Family) -> crate::Result<()> {
        let mut rng = family_rng(self.spec.seed, family);
        if family == Family::Big {
            if self.spec.big_key_bytes > 0 {
                self.write_big_keys(&mut rng).await?;
            }
            return Ok(());
        }
        for index in 0..self.spec.scale {
            let db = self.spec.dbs[index % self.spec.dbs.len()];
            let mut key = format!("{}:{index}", family.name()).into_bytes();
            if family == Family::Binary {
                key.push(b':');
                key.extend(binary(&mut rng, 4..=24));
            }
            let target = Target {
                db,
                key,
                family,
                with_ttl: family == Family::Volatile,
            };
            let written = self.write_key(&mut rng, target, index).await?;
            self.keys.push(written);
        }
        Ok(())
    }

    async fn write_key(
        &mut self,
        rng: &mut ChaCha8Rng,
        target: Target,
        index: usize,
    ) -> crate::Result<WrittenKey> {
        let small = rng.random_range(5..=SMALL_MAX);
        let large = rng.random_range(LARGE_MIN..=LARGE_MAX);
        let large_hash = rng.random_range(LARGE_HASH_MIN..=LARGE_HASH_MAX);
        Ok(match target.family {
            Family::StringInt => {
                let value = rng
                    .random_range(-1_000_000_000_i64..1_000_000_000)
                    .to_string();
                self.string(target, value.into_bytes()).await?
            }
            Family::StringEmbstr => {
                // Short enough that most are embstr on 8.x too (see string_encoding).
                let value = text(rng, 1..=30);
                self.string(target, value).await?
            }
            Family::StringRaw => {
                let value = text(rng, 45..=4096);
                self.string(target, value).await?
            }
            Family::HashSmall => self.hash(rng, target, small, false, text).await?,
            Family::HashLarge => self.hash(rng, target, large_hash, false, text).await?,
            Family::HashFieldTtl => {
                let count = if index.is_multiple_of(3) {
                    large_hash
                } else {
                    small
                };
                self.hash(rng, target, count, true, text).await?
            }
            Family::ZsetSmall => self.zset(rng, target, small, text).await?,
            Family::ZsetLarge => self.zset(rng, target, large, text).await?,
            Family::ListShort => self.list(rng, target, small, 1..=40, text).await?,
            Family::ListLong => {
                let count = rng.random_range(1000..=2000);
                self.list(rng, target, count, 20..=100, text).await?
            }
            Family::SetInt => self.int_set(rng, target).await?,
            Family::SetSmall => {
                let members = (0..small).map(|_| text(rng, 1..=40)).collect();
                self.set(target, members).await?
            }
            Family::SetLarge => {
                let members = (0..large).map(|_| text(rng, 1..=40)).collect();
                self.set(target, members).await?
            }
            Family::Stream => self.stream(rng, target, index).await?,
            Family::HllSparse => {
                let count = rng.random_range(10..=200);
                self.hll(rng, target, count, "sparse").await?
            }
            Family::HllDense => {
                let count = rng.random_range(3000..=5000);
                self.hll(rng, target, count, "dense").await?
            }
            Family::Bitmap => self.bitmap(rng, target).await?,
            Family::Geo => {
                let count = if index.is_multiple_of(3) {
                    large
                } else {
                    small
                };
                self.geo(rng, target, count).await?
            }
            Family::Volatile => self.volatile(rng, target, index, small).await?,
            Family::Binary => {
                let key_type = KeyType::CYCLE[index % KeyType::CYCLE.len()];
                self.of_type(rng, target, key_type, small, binary).await?
            }
            Family::Big => anyhow::bail!("big keys are written by write_big_keys, not per index"),
        })
    }

    /// A set of `5..=200` integers (an intset).
    async fn int_set(&mut self, rng: &mut ChaCha8Rng, target: Target) -> crate::Result<WrittenKey> {
        let count = rng.random_range(5..=200);
        let members = (0..count)
            .map(|_| {
                rng.random_range(-1_000_000_i64..1_000_000)
                    .to_string()
                    .into_bytes()
            })
            .collect();
        self.set(target, members).await
    }

    /// A small key of the type `index` picks, with the expiry `index` picks.
    async fn volatile(
        &mut self,
        rng: &mut ChaCha8Rng,
        target: Target,
        index: usize,
        small: usize,
    ) -> crate::Result<WrittenKey> {
        let key_type = KeyType::CYCLE[index % KeyType::CYCLE.len()];
        let written = self.of_type(rng, target, key_type, small, text).await?;
        let expiry = match index % 8 {
            0..=2 => Expiry::Seconds,
            3..=5 => Expiry::Millis,
            6 => Expiry::FarFuture,
            _ => Expiry::Soon,
        };
        self.expire(rng, written, expiry).await
    }

    /// A small key of `key_type` with elements from `element` (text or binary).
    async fn of_type(
        &mut self,
        rng: &mut ChaCha8Rng,
        target: Target,
        key_type: KeyType,
        count: usize,
        element: fn(&mut ChaCha8Rng, RangeInclusive<usize>) -> Vec<u8>,
    ) -> crate::Result<WrittenKey> {
        match key_type {
            KeyType::String => {
                let value = element(rng, 4..=100);
                self.string(target, value).await
            }
            KeyType::Hash => self.hash(rng, target, count, false, element).await,
            KeyType::Set => {
                let members = (0..count).map(|_| element(rng, 4..=40)).collect();
                self.set(target, members).await
            }
            KeyType::Zset => self.zset(rng, target, count, element).await,
            KeyType::List => self.list(rng, target, count, 4..=40, element).await,
            KeyType::Stream => self.stream(rng, target, 0).await,
        }
    }

    async fn string(&mut self, target: Target, value: Vec<u8>) -> crate::Result<WrittenKey> {
        let encoding = string_encoding(self.version, &target, &value);
        let mut cmd = redis::cmd("SET");
        cmd.arg(&target.key).arg(value);
        self.writer.push(target.db, &target.key, cmd).await?;
        Ok(target.written(KeyType::String, encoding, 1))
    }

    async fn hash(
        &mut self,
        rng: &mut ChaCha8Rng,
        target: Target,
        count: usize,
        field_ttls: bool,
        element: fn(&mut ChaCha8Rng, RangeInclusive<usize>) -> Vec<u8>,
    ) -> crate::Result<WrittenKey> {
        let mut max_len = 0;
        let mut fields = Vec::with_capacity(count);
        for position in 0..count {
            // A position prefix keeps fields distinct, so the count is exact.
            let mut field = format!("f{position}:").into_bytes();
            field.extend(element(rng, 4..=20));
            let value = element(rng, 4..=40);
            max_len = max_len.max(field.len()).max(value.len());
            fields.push((field, value));
        }
        for chunk in fields.chunks(CHUNK_ELEMENTS) {
            let mut cmd = redis::cmd("HSET");
            cmd.arg(&target.key);
            for (field, value) in chunk {
                cmd.arg(field).arg(value);
            }
            self.writer.push(target.db, &target.key, cmd).await?;
        }
        if field_ttls {
            self.expire_fields(rng, &target, &fields).await?;
        }
        let encoding = hash_encoding(self.version, count, max_len, field_ttls);
        Ok(target.written(KeyType::Hash, encoding, count))
    }

    /// Gives half the fields a TTL: seconds, milliseconds, and one about to expire.
    async fn expire_fields(
        &mut self,
        rng: &mut ChaCha8Rng,
        target: &Target,
        fields: &[(Vec<u8>, Vec<u8>)],
    ) -> crate::Result<()> {
        let with_ttl: Vec<&Vec<u8>> = fields.iter().step_by(2).map(|(f, _)| f).collect();
        let (soon, rest) = with_ttl.split_at(1.min(with_ttl.len()));
        let (seconds, millis) = rest.split_at(rest.len() / 2);
        let groups: [(&str, u64, &[&Vec<u8>]); 3] = [
            ("HEXPIRE", rng.random_range(3600..86_400), seconds),
            ("HPEXPIRE", rng.random_range(3_600_000..86_400_000), millis),
            ("HPEXPIRE", self.spec.soon_ttl.as_millis() as u64, soon),
        ];
        for (command, ttl, group) in groups {
            if group.is_empty() {
                continue;
            }
            let mut cmd = redis::cmd(command);
            cmd.arg(&target.key).arg(ttl).arg("FIELDS").arg(group.len());
            for field in group {
                cmd.arg(field.as_slice());
            }
            self.writer.push(target.db, &target.key, cmd).await?;
        }
        Ok(())
    }

    async fn zset(
        &mut self,
        rng: &mut ChaCha8Rng,
        target: Target,
        count: usize,
        element: fn(&mut ChaCha8Rng, RangeInclusive<usize>) -> Vec<u8>,
    ) -> crate::Result<WrittenKey> {
        let mut max_len = 0;
        let mut members = Vec::with_capacity(count);
        for position in 0..count {
            let mut member = format!("m{position}:").into_bytes();
            member.extend(element(rng, 4..=30));
            max_len = max_len.max(member.len());
            let score: f64 = rng.random_range(-1e6..1e6);
            members.push((score, member));
        }
        for chunk in members.chunks(CHUNK_ELEMENTS) {
            let mut cmd = redis::cmd("ZADD");
            cmd.arg(&target.key);
            for (score, member) in chunk {
                cmd.arg(*score).arg(member);
            }
            self.writer.push(target.db, &target.key, cmd).await?;
        }
        let encoding = zset_encoding(self.version, count, max_len);
        Ok(target.written(KeyType::Zset, encoding, count))
    }

    async fn list(
        &mut self,
        rng: &mut ChaCha8Rng,
        target: Target,
        count: usize,
        element_len: RangeInclusive<usize>,
        element: fn(&mut ChaCha8Rng, RangeInclusive<usize>) -> Vec<u8>,
    ) -> crate::Result<WrittenKey> {
        let elements: Vec<Vec<u8>> = (0..count)
            .map(|_| element(rng, element_len.clone()))
            .collect();
        let total_bytes = elements.iter().map(|e| e.len() + 2).sum();
        for chunk in elements.chunks(CHUNK_ELEMENTS) {
            let mut cmd = redis::cmd("RPUSH");
            cmd.arg(&target.key).arg(chunk);
            self.writer.push(target.db, &target.key, cmd).await?;
        }
        let encoding = list_encoding(self.version, total_bytes);
        Ok(target.written(KeyType::List, encoding, count))
    }

    async fn set(
        &mut self,
        target: Target,
        mut members: Vec<Vec<u8>>,
    ) -> crate::Result<WrittenKey> {
        members.sort();
        members.dedup();
        for chunk in members.chunks(CHUNK_ELEMENTS) {
            let mut cmd = redis::cmd("SADD");
            cmd.arg(&target.key).arg(chunk);
            self.writer.push(target.db, &target.key, cmd).await?;
        }
        let encoding = set_encoding(self.version, &members);
        Ok(target.written(KeyType::Set, encoding, members.len()))
    }

    /// A stream with explicit IDs; group `readers` (from the start) where `alice` and
    /// `bob` read entries and `alice` acknowledges half of hers, `carol` was created
    /// and read nothing; group `late` starts mid-stream; every 7th entry is deleted.
    async fn stream(
        &mut self,
        rng: &mut ChaCha8Rng,
        target: Target,
        index: usize,
    ) -> crate::Result<WrittenKey> {
        let entries = rng.random_range(20..=300_usize);
        let first_ms = STREAM_ID_BASE_MS + index as u64 * 1_000_000;
        let id = |entry: usize| format!("{}-{}", first_ms + entry as u64 / 3, entry % 3);
        for entry in 0..entries {
            let mut cmd = redis::cmd("XADD");
            cmd.arg(&target.key).arg(id(entry));
            for field in 0..rng.random_range(1..=4) {
                cmd.arg(format!("field{field}")).arg(text(rng, 1..=30));
            }
            self.writer.push(target.db, &target.key, cmd).await?;
        }
        let alice_reads = rng.random_range(1..=entries / 2);
        let bob_reads = rng.random_range(1..=entries / 4);
        let mut commands: Vec<Cmd> = Vec::new();
        let mut xgroup = |args: &[String]| {
            let mut cmd = redis::cmd("XGROUP");
            cmd.arg(args[0].as_str()).arg(&target.key).arg(&args[1..]);
            commands.push(cmd);
        };
        xgroup(&["CREATE".into(), "readers".into(), "0".into()]);
        xgroup(&["CREATE".into(), "late".into(), id(entries / 2)]);
        xgroup(&["CREATECONSUMER".into(), "readers".into(), "carol".into()]);
        for (consumer, count) in [("alice", alice_reads), ("bob", bob_reads)] {
            let mut cmd = redis::cmd("XREADGROUP");
            cmd.arg("GROUP")
                .arg("readers")
                .arg(consumer)
                .arg("COUNT")
                .arg(count);
            cmd.arg("STREAMS").arg(&target.key).arg(">");
            commands.push(cmd);
        }
        let mut ack = redis::cmd("XACK");
        ack.arg(&target.key).arg("readers");
        ack.arg((0..alice_reads / 2 + 1).map(id).collect::<Vec<_>>());
        commands.push(ack);
        let deleted: Vec<String> = (0..entries).step_by(7).map(id).collect();
        let mut xdel = redis::cmd("XDEL");
        xdel.arg(&target.key).arg(&deleted);
        commands.push(xdel);
        for cmd in commands {
            self.writer.push(target.db, &target.key, cmd).await?;
        }
        Ok(target.written(KeyType::Stream, "stream", entries - deleted.len()))
    }

    async fn hll(
        &mut self,
        rng: &mut ChaCha8Rng,
        target: Target,
        count: usize,
        representation: &'static str,
    ) -> crate::Result<WrittenKey> {
        let elements: Vec<Vec<u8>> = (0..count).map(|_| text(rng, 12..=12)).collect();
        for chunk in elements.chunks(CHUNK_ELEMENTS) {
            let mut cmd = redis::cmd("PFADD");
            cmd.arg(&target.key).arg(chunk);
            self.writer.push(target.db, &target.key, cmd).await?;
        }
        let mut written = target.written(KeyType::String, "raw", count);
        written.hll_representation = Some(representation);
        Ok(written)
    }

    async fn bitmap(&mut self, rng: &mut ChaCha8Rng, target: Target) -> crate::Result<WrittenKey> {
        let bits = rng.random_range(20..=100);
        for _ in 0..bits {
            let mut cmd = redis::cmd("SETBIT");
            cmd.arg(&target.key)
                .arg(rng.random_range(400_u32..200_000))
                .arg(1);
            self.writer.push(target.db, &target.key, cmd).await?;
        }
        Ok(target.written(KeyType::String, "raw", bits))
    }

    async fn geo(
        &mut self,
        rng: &mut ChaCha8Rng,
        target: Target,
        count: usize,
    ) -> crate::Result<WrittenKey> {
        let mut cmd = redis::cmd("GEOADD");
        cmd.arg(&target.key);
        for position in 0..count {
            let longitude: f64 = rng.random_range(-179.9..179.9);
            let latitude: f64 = rng.random_range(-85.0..85.0);
            cmd.arg(longitude)
                .arg(latitude)
                .arg(format!("place{position}"));
        }
        self.writer.push(target.db, &target.key, cmd).await?;
        let encoding = zset_encoding(self.version, count, 0);
        Ok(target.written(KeyType::Zset, encoding, count))
    }

    async fn expire(
        &mut self,
        rng: &mut ChaCha8Rng,
        mut written: WrittenKey,
        expiry: Expiry,
    ) -> crate::Result<WrittenKey> {
        let (command, when): (&str, u64) = match expiry {
            Expiry::Never => return Ok(written),
            Expiry::Seconds => ("EXPIRE", rng.random_range(3600..86_400)),
            Expiry::Millis => ("PEXPIRE", rng.random_range(3_600_000..86_400_000)),
            Expiry::FarFuture => (
                "EXPIREAT",
                FAR_FUTURE_UNIX_SECS + rng.random_range(0..100_000_000),
            ),
            Expiry::Soon => ("PEXPIRE", self.spec.soon_ttl.as_millis() as u64),
        };
        let mut cmd = redis::cmd(command);
        cmd.arg(&written.key).arg(when);
        self.writer.push(written.db, &written.key, cmd).await?;
        written.expiry = expiry;
        Ok(written)
    }

    /// A string, hash, list, set and zset of about `big_key_bytes` each, in the first db.
    async fn write_big_keys(&mut self, rng: &mut ChaCha8Rng) -> crate::Result<()> {
        const ELEMENT_BYTES: usize = 100;
        let db = self.spec.dbs[0];
        let bytes = self.spec.big_key_bytes;
        let count = (bytes / ELEMENT_BYTES).max(1);
        let target = |name: &str| Target {
            db,
            key: format!("big:{name}").into_bytes(),
            family: Family::Big,
            with_ttl: false,
        };

        let string = target("string");
        let mut written_bytes = 0;
        while written_bytes < bytes {
            let len = (bytes - written_bytes).min(BATCH_BYTES / 2);
            let chunk = text(rng, len..=len);
            written_bytes += chunk.len();
            let mut cmd = redis::cmd("APPEND");
            cmd.arg(&string.key).arg(chunk);
            self.writer.push(db, &string.key, cmd).await?;
        }
        self.keys.push(string.written(KeyType::String, "raw", 1));

        let element = |rng: &mut ChaCha8Rng, position: usize| {
            let mut out = format!("{position}:").into_bytes();
            out.extend(text(rng, ELEMENT_BYTES..=ELEMENT_BYTES));
            out
        };
        for (name, command, key_type, encoding) in [
            ("hash", "HSET", KeyType::Hash, "hashtable"),
            ("list", "RPUSH", KeyType::List, "quicklist"),
            ("set", "SADD", KeyType::Set, "hashtable"),
            ("zset", "ZADD", KeyType::Zset, "skiplist"),
        ] {
            let big = target(name);
            for start in (0..count).step_by(CHUNK_ELEMENTS) {
                let mut cmd = redis::cmd(command);
                cmd.arg(&big.key);
                for position in start..(start + CHUNK_ELEMENTS).min(count) {
                    match key_type {
                        KeyType::Hash => cmd.arg(format!("field{position}")),
                        KeyType::Zset => cmd.arg(position),
                        _ => &mut cmd,
                    };
                    cmd.arg(element(rng, position));
                }
                self.writer.push(db, &big.key, cmd).await?;
            }
            self.keys.push(big.written(key_type, encoding, count));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_recognised_the_way_redis_does() {
        assert!(is_redis_integer(b"12345"));
        assert!(is_redis_integer(b"-7"));
        assert!(!is_redis_integer(b"007"));
        assert!(!is_redis_integer(b"1.5"));
        assert!(!is_redis_integer(b"abc"));
    }

    #[test]
    fn binary_values_hold_nul_crlf_and_non_utf8() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for len in [0, 4, 10, 100] {
            let value = binary(&mut rng, len..=len);
            assert!(value.windows(4).any(|w| w == b"\x00\r\n\xff"));
            assert!(std::str::from_utf8(&value).is_err());
        }
    }

    #[test]
    fn text_is_never_a_number() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for len in 1..50 {
            assert!(!is_redis_integer(&text(&mut rng, len..=len)));
        }
    }
}
