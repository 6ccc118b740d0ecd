//! The comparison: both key sets, per database, in both directions; then type, value
//! and TTL of every key found on both sides.
//!
//! # How a database is walked
//! - The source pass: SCAN batches of the source's keys; per batch, one pipeline per
//!   side (both sides at once) reads `TYPE` and `PTTL` of every key; a second reads
//!   `DUMP` of strings and the length of collections; a third `DUMP`s collections of at
//!   most `dump_elements_max` elements. Byte-equal DUMP payloads are equal values and
//!   nothing more is read (the *fast path*). Only keys whose payloads differ (another
//!   encoding or RDB version, or another value) are read again, as chunked digests
//!   ([`crate::digest`]). Once one pair of payloads shows two different RDB versions,
//!   the fast path is off for the rest of the run and strings are read by GET.
//! - The target pass, at the same time: SCAN batches of the target's keys and one
//!   pipeline of `EXISTS` on the source. No key set is ever held: memory is bounded by
//!   `workers` batches in flight, plus the differences found.
//! - `workers` batches are in flight at once, each on its own connection per side.
//!
//! # What counts as a difference
//! TTLs are compared as absolute expiry times (`PTTL` read on each side, turned into
//! "now + PTTL" when the reply arrived), with a tolerance (2 s by default: the time
//! between the two reads plus the replication lag of a live sync; the sync writes
//! expiries as absolute times, so a TTL that it copied never drifts further). A key
//! that is missing on one side while its TTL on the other is within the tolerance is
//! expiring, not missing. A key gone from the source between SCAN and the read is not
//! compared. With `rounds > 1` every difference is read again after a pause; only what
//! still differs in the last round is reported, and the report counts how many
//! vanished (replication lag) and how many persisted.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use futures::stream::{self, Stream, StreamExt, TryStreamExt};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value as Reply};

use crate::digest;

/// Which keys to compare.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sample {
    /// Every key.
    All,
    /// Keys whose xxh3-64 hash falls below this fraction (0..=1) of the hash space:
    /// the same keys in every run.
    Rate(f64),
    /// About this many keys over all chosen databases (a rate from the source's DBSIZE).
    Count(u64),
}

/// What to compare, and how hard to push the servers.
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
    /// When not empty, only keys starting with one of these are compared.
    pub include_prefixes: Vec<Vec<u8>>,
    pub sample: Sample,
    /// Batches in flight at once (and connections per side).
    pub workers: usize,
    /// Keys per SCAN batch (the SCAN COUNT hint).
    pub batch_keys: usize,
    /// Keys scanned per second on each side, at most; None: as fast as possible.
    pub keys_per_second: Option<u64>,
    /// Rounds: after the first, only differing keys are read again.
    pub rounds: u32,
    pub round_pause: Duration,
    /// Elements per command when a collection is read in chunks.
    pub chunk_elements: usize,
    /// Collections of at most this many elements are compared by DUMP first.
    pub dump_elements_max: u64,
    /// Read TYPE, PTTL and strings by one read-only Lua script per batch (falls back
    /// to pipelined commands when scripting is unavailable).
    pub batch_script: bool,
}

impl Default for CompareOptions {
    fn default() -> CompareOptions {
        CompareOptions {
            dbs: (0..16).collect(),
            ttl_tolerance: Duration::from_secs(2),
            ignore_prefixes: vec![b"LOCKSTEP_".to_vec()],
            include_prefixes: Vec::new(),
            sample: Sample::All,
            workers: 4,
            batch_keys: 1000,
            keys_per_second: None,
            rounds: 1,
            round_pause: Duration::from_secs(1),
            chunk_elements: 1000,
            dump_elements_max: 1024,
            batch_script: true,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DifferenceKind {
    MissingOnTarget,
    ExtraOnTarget,
    Type,
    Value,
    Ttl,
}

impl DifferenceKind {
    /// The name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            DifferenceKind::MissingOnTarget => "missing_on_target",
            DifferenceKind::ExtraOnTarget => "extra_on_target",
            DifferenceKind::Type => "type",
            DifferenceKind::Value => "value",
            DifferenceKind::Ttl => "ttl",
        }
    }
}

/// One key that differs. TTLs are PTTL as read: -1 persistent, -2 no such key.
#[derive(Clone, Debug)]
pub struct Difference {
    pub db: u32,
    pub key: Vec<u8>,
    pub kind: DifferenceKind,
    /// A short hint (element counts, lengths, expiry times).
    pub detail: String,
    /// TYPE on each side ("none" when absent).
    pub source_type: String,
    pub target_type: String,
    pub source_pttl: i64,
    pub target_pttl: i64,
}

/// The outcome: keys compared and every difference.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Source keys read on both sides (present on the source when read).
    pub keys_compared: u64,
    /// Keys compared, by type.
    pub keys_per_type: BTreeMap<String, u64>,
    /// Target keys checked for existence on the source.
    pub target_keys_checked: u64,
    /// Values proved equal by byte-equal DUMP payloads.
    pub dump_equal: u64,
    /// Values compared by chunked digests.
    pub digests_compared: u64,
    /// Differences still present in the last round.
    pub differences: Vec<Difference>,
    /// Differences found in each round.
    pub round_differences: Vec<u64>,
    /// Differences of the first round that were gone in a later round (lag).
    pub vanished: u64,
    pub elapsed: Duration,
}

impl Report {
    pub fn is_consistent(&self) -> bool {
        self.differences.is_empty()
    }

    /// Differences by kind.
    pub fn by_kind(&self) -> BTreeMap<&'static str, u64> {
        let mut out = BTreeMap::new();
        for d in &self.differences {
            *out.entry(d.kind.as_str()).or_insert(0) += 1;
        }
        out
    }

    /// Source keys compared per second.
    pub fn keys_per_second(&self) -> f64 {
        self.keys_compared as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn absorb(&mut self, o: Outcome) {
        self.keys_compared += o.compared;
        for (k, n) in o.per_type {
            *self.keys_per_type.entry(k).or_insert(0) += n;
        }
        self.target_keys_checked += o.target_checked;
        self.dump_equal += o.dump_equal;
        self.digests_compared += o.digests;
        self.differences.extend(o.diffs);
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
        write!(
            f,
            " ({:.2?}, {:.0} keys/s; by type {:?}; {} target keys checked; {} equal by DUMP, {} by digest",
            self.elapsed,
            self.keys_per_second(),
            self.keys_per_type,
            self.target_keys_checked,
            self.dump_equal,
            self.digests_compared
        )?;
        if self.round_differences.len() > 1 {
            write!(
                f,
                "; differences per round {:?}: {} vanished (lag), {} persisted",
                self.round_differences,
                self.vanished,
                self.differences.len()
            )?;
        }
        write!(f, ")")?;
        if !self.differences.is_empty() {
            write!(f, "\n  by kind {:?}", self.by_kind())?;
        }
        for d in self.differences.iter().take(20) {
            write!(
                f,
                "\n  db {} key {:?}: {} ({} vs {}) {}",
                d.db,
                String::from_utf8_lossy(&d.key),
                d.kind.as_str(),
                d.source_type,
                d.target_type,
                d.detail
            )?;
        }
        Ok(())
    }
}

/// Compares the chosen databases of `source` and `target`.
pub async fn compare(
    source: &redis::Client,
    target: &redis::Client,
    options: &CompareOptions,
) -> anyhow::Result<Report> {
    let started = Instant::now();
    let ctx = Arc::new(Ctx {
        options: options.clone(),
        threshold: threshold(source, options).await?,
        dump_ok: AtomicBool::new(true),
        script_ok: AtomicBool::new(options.batch_script),
    });
    let mut report = Report::default();
    for &db in &options.dbs {
        let outcome = walk_db(&ctx, source, target, db).await?;
        report.absorb(outcome);
    }
    report
        .round_differences
        .push(report.differences.len() as u64);
    let first = report.differences.len() as u64;
    for _ in 1..options.rounds.max(1) {
        if report.differences.is_empty() {
            break;
        }
        tokio::time::sleep(options.round_pause).await;
        let previous = std::mem::take(&mut report.differences);
        let mut per_db: BTreeMap<u32, Vec<Vec<u8>>> = BTreeMap::new();
        for d in previous {
            per_db.entry(d.db).or_default().push(d.key);
        }
        for (db, keys) in per_db {
            let diffs = recheck(&ctx, source, target, db, keys).await?;
            report.differences.extend(diffs);
        }
        report
            .round_differences
            .push(report.differences.len() as u64);
    }
    report.vanished = first.saturating_sub(report.differences.len() as u64);
    report
        .differences
        .sort_by(|a, b| (a.db, &a.key).cmp(&(b.db, &b.key)));
    report.elapsed = started.elapsed();
    Ok(report)
}

/// What every batch shares.
struct Ctx {
    options: CompareOptions,
    /// Keys hashing below this are sampled; None: every key.
    threshold: Option<u64>,
    /// False once two DUMP payloads showed different RDB versions.
    dump_ok: AtomicBool,
    /// False once the batch script failed (scripting disabled or not permitted).
    script_ok: AtomicBool,
}

impl Ctx {
    fn wanted(&self, key: &[u8]) -> bool {
        let o = &self.options;
        if o.ignore_prefixes.iter().any(|p| key.starts_with(p)) {
            return false;
        }
        if !o.include_prefixes.is_empty() && !o.include_prefixes.iter().any(|p| key.starts_with(p))
        {
            return false;
        }
        self.threshold
            .is_none_or(|t| xxhash_rust::xxh3::xxh3_64(key) < t)
    }

    fn tolerance_ms(&self) -> i64 {
        self.options.ttl_tolerance.as_millis() as i64
    }

    /// A TTL short enough that the key may expire during the check.
    fn expiring(&self, pttl: i64) -> bool {
        (0..=self.tolerance_ms()).contains(&pttl)
    }
}

/// The hash threshold of the sample, if any.
async fn threshold(
    source: &redis::Client,
    options: &CompareOptions,
) -> anyhow::Result<Option<u64>> {
    let rate = match options.sample {
        Sample::All => return Ok(None),
        Sample::Rate(rate) => rate,
        Sample::Count(count) => {
            let mut total = 0u64;
            for &db in &options.dbs {
                let mut conn = connect(source, db, 1).await?.remove(0);
                let size: u64 = redis::cmd("DBSIZE").query_async(&mut conn).await?;
                total += size;
            }
            count as f64 / total.max(1) as f64
        }
    };
    Ok((rate < 1.0).then(|| (rate.max(0.0) * u64::MAX as f64) as u64))
}

/// What one batch found.
#[derive(Default)]
struct Outcome {
    compared: u64,
    per_type: BTreeMap<String, u64>,
    target_checked: u64,
    dump_equal: u64,
    digests: u64,
    diffs: Vec<Difference>,
}

impl Outcome {
    fn merge(mut self, other: Outcome) -> Outcome {
        self.compared += other.compared;
        for (k, n) in other.per_type {
            *self.per_type.entry(k).or_insert(0) += n;
        }
        self.target_checked += other.target_checked;
        self.dump_equal += other.dump_equal;
        self.digests += other.digests;
        self.diffs.extend(other.diffs);
        self
    }
}

/// Both passes over one database, at the same time.
async fn walk_db(
    ctx: &Arc<Ctx>,
    source: &redis::Client,
    target: &redis::Client,
    db: u32,
) -> anyhow::Result<Outcome> {
    let workers = ctx.options.workers.max(1);
    let srcs = connect(source, db, workers)
        .await
        .context("connecting to the source")?;
    let dsts = connect(target, db, workers)
        .await
        .context("connecting to the target")?;
    let source_pass = scan(
        ctx.clone(),
        srcs[0].clone(),
        Limiter::new(ctx.options.keys_per_second),
    )
    .enumerate()
    .map(|(i, batch)| {
        let (s, d, ctx) = (
            srcs[i % workers].clone(),
            dsts[i % workers].clone(),
            ctx.clone(),
        );
        async move { compare_batch(&ctx, s, d, db, batch?, false).await }
    })
    .buffer_unordered(workers)
    .try_fold(Outcome::default(), |acc, o| async move { Ok(acc.merge(o)) });
    let target_pass = scan(
        ctx.clone(),
        dsts[0].clone(),
        Limiter::new(ctx.options.keys_per_second),
    )
    .enumerate()
    .map(|(i, batch)| {
        let (s, d, ctx) = (
            srcs[i % workers].clone(),
            dsts[i % workers].clone(),
            ctx.clone(),
        );
        async move { extra_batch(&ctx, s, d, db, batch?).await }
    })
    .buffer_unordered(workers)
    .try_fold(Outcome::default(), |acc, o| async move { Ok(acc.merge(o)) });
    let (a, b) = tokio::try_join!(source_pass, target_pass)?;
    Ok(a.merge(b))
}

/// Reads `keys` of `db` again on both sides; what still differs.
async fn recheck(
    ctx: &Arc<Ctx>,
    source: &redis::Client,
    target: &redis::Client,
    db: u32,
    keys: Vec<Vec<u8>>,
) -> anyhow::Result<Vec<Difference>> {
    let workers = ctx.options.workers.max(1);
    let srcs = connect(source, db, workers).await?;
    let dsts = connect(target, db, workers).await?;
    let batch = ctx.options.batch_keys.max(1);
    let batches: Vec<Vec<Vec<u8>>> = keys.chunks(batch).map(<[_]>::to_vec).collect();
    let outcome = stream::iter(batches.into_iter().enumerate())
        .map(|(i, keys)| {
            let (s, d, ctx) = (
                srcs[i % workers].clone(),
                dsts[i % workers].clone(),
                ctx.clone(),
            );
            async move { compare_batch(&ctx, s, d, db, keys, true).await }
        })
        .buffer_unordered(workers)
        .try_fold(Outcome::default(), |acc, o| async move { Ok(acc.merge(o)) })
        .await?;
    Ok(outcome.diffs)
}

/// `n` connections to database `db` of `client`, without a response timeout (a big
/// pipeline may take longer than the client's default of 500 ms).
async fn connect(
    client: &redis::Client,
    db: u32,
    n: usize,
) -> anyhow::Result<Vec<MultiplexedConnection>> {
    let info = client.get_connection_info().clone();
    let settings = info.redis_settings().clone().set_db(i64::from(db));
    let client = redis::Client::open(info.set_redis_settings(settings))?;
    let config = AsyncConnectionConfig::new().set_response_timeout(None);
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(
            client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .with_context(|| format!("database {db}"))?,
        );
    }
    Ok(out)
}

/// Batches of wanted keys, SCAN by SCAN.
fn scan(
    ctx: Arc<Ctx>,
    conn: MultiplexedConnection,
    limiter: Limiter,
) -> impl Stream<Item = anyhow::Result<Vec<Vec<u8>>>> {
    let state = (ctx, conn, limiter, Some(0u64));
    stream::try_unfold(state, |(ctx, mut conn, mut limiter, cursor)| async move {
        let Some(cursor) = cursor else {
            return Ok(None);
        };
        let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(ctx.options.batch_keys.max(1))
            .query_async(&mut conn)
            .await
            .context("SCAN")?;
        let keys: Vec<Vec<u8>> = keys.into_iter().filter(|k| ctx.wanted(k)).collect();
        limiter.take(keys.len()).await;
        let cursor = (next != 0).then_some(next);
        Ok(Some((keys, (ctx, conn, limiter, cursor))))
    })
}

/// At most `per_second` keys a second, in reservations of one batch.
struct Limiter {
    per_second: Option<u64>,
    next: Instant,
}

impl Limiter {
    fn new(per_second: Option<u64>) -> Limiter {
        Limiter {
            per_second: per_second.filter(|r| *r > 0),
            next: Instant::now(),
        }
    }

    async fn take(&mut self, keys: usize) {
        let Some(rate) = self.per_second else {
            return;
        };
        let at = self.next.max(Instant::now());
        self.next = at + Duration::from_secs_f64(keys as f64 / rate as f64);
        tokio::time::sleep_until(at.into()).await;
    }
}

/// TYPE and PTTL of a key as read, with the time the reply arrived (unix ms).
#[derive(Clone, Debug)]
struct Head {
    kind: String,
    pttl: i64,
}

/// TYPE and PTTL of every key and, for strings, DUMP (`fast`) or GET, by one
/// read-only Lua script per batch: one command instead of three per key, which is
/// what the servers' CPU is spent on. Values are empty when the script could not run
/// (scripting disabled or not permitted): then the pipeline of plain commands is used
/// from then on.
async fn heads_and_strings(
    ctx: &Ctx,
    conn: MultiplexedConnection,
    keys: &[Vec<u8>],
    fast: bool,
) -> anyhow::Result<(Vec<Head>, i64, Vec<Reply>)> {
    if ctx.script_ok.load(Ordering::Relaxed) {
        let mut script = HEADS_SCRIPT.prepare_invoke();
        for k in keys {
            script.key(k);
        }
        script.arg(if fast { "DUMP" } else { "GET" });
        let mut c = conn.clone();
        match script.invoke_async::<Vec<Reply>>(&mut c).await {
            Ok(flat) if flat.len() == keys.len() * 3 => {
                let now = unix_ms();
                let mut heads = Vec::with_capacity(keys.len());
                let mut values = Vec::with_capacity(keys.len());
                let mut it = flat.into_iter();
                while let (Some(t), Some(p), Some(v)) = (it.next(), it.next(), it.next()) {
                    heads.push(Head {
                        kind: redis::from_redis_value(t).context("TYPE in the script")?,
                        pttl: redis::from_redis_value(p).context("PTTL in the script")?,
                    });
                    values.push(v);
                }
                return Ok((heads, now, values));
            }
            Ok(_) | Err(_) => ctx.script_ok.store(false, Ordering::Relaxed),
        }
    }
    let (heads, now) = heads(conn, keys).await?;
    Ok((heads, now, Vec::new()))
}

static HEADS_SCRIPT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"local out = {}
for _, k in ipairs(KEYS) do
  local t = redis.call('TYPE', k)['ok']
  out[#out + 1] = t
  out[#out + 1] = redis.call('PTTL', k)
  if t == 'string' then
    out[#out + 1] = redis.call(ARGV[1], k)
  else
    out[#out + 1] = false
  end
end
return out",
    )
});

async fn heads(
    mut conn: MultiplexedConnection,
    keys: &[Vec<u8>],
) -> anyhow::Result<(Vec<Head>, i64)> {
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

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Replies of one pipeline, one per command.
async fn replies(
    mut conn: MultiplexedConnection,
    pipe: &redis::Pipeline,
) -> anyhow::Result<Vec<Reply>> {
    if pipe.is_empty() {
        return Ok(Vec::new());
    }
    Ok(pipe.query_async(&mut conn).await?)
}

fn length_command(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "list" => "LLEN",
        "set" => "SCARD",
        "zset" => "ZCARD",
        "hash" => "HLEN",
        "stream" => "XLEN",
        _ => return None,
    })
}

/// The RDB version in a DUMP payload's trailer (2 bytes LE, then an 8-byte CRC64).
fn rdb_version(payload: &[u8]) -> Option<u16> {
    let n = payload.len();
    (n >= 10).then(|| u16::from_le_bytes([payload[n - 10], payload[n - 9]]))
}

/// How two DUMP replies relate.
enum Dumped {
    Equal,
    /// Different bytes: read the values.
    Differ,
}

fn dumped(ctx: &Ctx, a: &Reply, b: &Reply) -> Dumped {
    match (a, b) {
        (Reply::BulkString(a), Reply::BulkString(b)) if a == b => Dumped::Equal,
        (Reply::BulkString(a), Reply::BulkString(b)) => {
            if rdb_version(a) != rdb_version(b) {
                ctx.dump_ok.store(false, Ordering::Relaxed);
            }
            Dumped::Differ
        }
        _ => Dumped::Differ,
    }
}

/// Compares `keys` (of database `db`) on both sides. In the source pass a key gone
/// from the source is skipped; in a re-check it is extra if the target has it.
async fn compare_batch(
    ctx: &Ctx,
    src: MultiplexedConnection,
    dst: MultiplexedConnection,
    db: u32,
    keys: Vec<Vec<u8>>,
    recheck: bool,
) -> anyhow::Result<Outcome> {
    let mut out = Outcome::default();
    if keys.is_empty() {
        return Ok(out);
    }
    let fast = ctx.dump_ok.load(Ordering::Relaxed);
    let ((sh, snow, mut sv), (dh, dnow, mut dv)) = tokio::try_join!(
        heads_and_strings(ctx, src.clone(), &keys, fast),
        heads_and_strings(ctx, dst.clone(), &keys, fast)
    )?;
    let prefetched = !sv.is_empty() && !dv.is_empty();
    let diff = |i: usize, kind: DifferenceKind, detail: String| Difference {
        db,
        key: keys[i].clone(),
        kind,
        detail,
        source_type: sh[i].kind.clone(),
        target_type: dh[i].kind.clone(),
        source_pttl: sh[i].pttl,
        target_pttl: dh[i].pttl,
    };
    // Keys of the same type on both sides, whose values are to be compared.
    let mut same = Vec::new();
    for i in 0..keys.len() {
        let (s, d) = (&sh[i], &dh[i]);
        if s.kind == "none" {
            if recheck && d.kind != "none" && !ctx.expiring(d.pttl) {
                out.diffs
                    .push(diff(i, DifferenceKind::ExtraOnTarget, String::new()));
            }
            continue;
        }
        out.compared += 1;
        *out.per_type.entry(s.kind.clone()).or_insert(0) += 1;
        if d.kind == "none" {
            if !ctx.expiring(s.pttl) {
                out.diffs
                    .push(diff(i, DifferenceKind::MissingOnTarget, String::new()));
            }
        } else if s.kind != d.kind {
            let detail = format!("{} vs {}", s.kind, d.kind);
            out.diffs.push(diff(i, DifferenceKind::Type, detail));
        } else {
            same.push(i);
        }
    }

    // Second pipeline: DUMP (or GET) of strings the script did not read, lengths of
    // collections.
    let mut pipe = redis::pipe();
    let mut second = Vec::new();
    let mut slow = Vec::new();
    let mut read: Vec<(usize, Reply, Reply)> = Vec::new();
    for &i in &same {
        let key = &keys[i];
        match (sh[i].kind.as_str(), length_command(&sh[i].kind)) {
            ("string", _) if prefetched => {
                let (a, b) = (std::mem::take(&mut sv[i]), std::mem::take(&mut dv[i]));
                read.push((i, a, b));
            }
            ("string", _) => {
                pipe.cmd(if fast { "DUMP" } else { "GET" }).arg(key);
                second.push(i);
            }
            (_, Some(len)) if fast => {
                pipe.cmd(len).arg(key);
                second.push(i);
            }
            _ => slow.push(i),
        }
    }
    let (sr, dr) = tokio::try_join!(replies(src.clone(), &pipe), replies(dst.clone(), &pipe))?;
    let mut equal = Vec::new();
    let mut third = Vec::new();
    read.extend(
        second
            .iter()
            .zip(sr.into_iter().zip(dr))
            .map(|(&i, (a, b))| (i, a, b)),
    );
    for (i, a, b) in &read {
        let (i, a, b) = (*i, a, b);
        if sh[i].kind == "string" {
            if fast {
                match dumped(ctx, a, b) {
                    Dumped::Equal => {
                        out.dump_equal += 1;
                        equal.push(i);
                    }
                    Dumped::Differ => slow.push(i),
                }
            } else if a == b {
                equal.push(i);
            } else {
                out.diffs
                    .push(diff(i, DifferenceKind::Value, string_hint(a, b)));
            }
        } else {
            let (x, y) = (as_int(a), as_int(b));
            if x != y {
                let detail = format!("source {x} elements, target {y}");
                out.diffs.push(diff(i, DifferenceKind::Value, detail));
            } else if x as u64 <= ctx.options.dump_elements_max {
                third.push(i);
            } else {
                slow.push(i);
            }
        }
    }

    // Third pipeline: DUMP of small collections.
    let mut pipe = redis::pipe();
    for &i in &third {
        pipe.cmd("DUMP").arg(&keys[i]);
    }
    let (sr, dr) = tokio::try_join!(replies(src.clone(), &pipe), replies(dst.clone(), &pipe))?;
    for (n, &i) in third.iter().enumerate() {
        match dumped(ctx, &sr[n], &dr[n]) {
            Dumped::Equal => {
                out.dump_equal += 1;
                equal.push(i);
            }
            Dumped::Differ => slow.push(i),
        }
    }

    // The rest: chunked digests, key by key.
    let chunk = ctx.options.chunk_elements;
    for &i in &slow {
        let (key, kind) = (&keys[i], sh[i].kind.as_str());
        let (mut s, mut d) = (src.clone(), dst.clone());
        let (a, b) = tokio::try_join!(
            digest::read(&mut s, key, kind, chunk),
            digest::read(&mut d, key, kind, chunk)
        )?;
        out.digests += 1;
        if a == b {
            equal.push(i);
        } else {
            let detail = if a.elements == b.elements {
                format!("{} elements on both sides, different digests", a.elements)
            } else {
                format!("source {} elements, target {}", a.elements, b.elements)
            };
            out.diffs.push(diff(i, DifferenceKind::Value, detail));
        }
    }

    // TTLs of equal values.
    let tolerance = ctx.tolerance_ms();
    for i in equal {
        let (a, b) = (sh[i].pttl, dh[i].pttl);
        let same = match (a, b) {
            (-1, -1) => true,
            (a, b) if a >= 0 && b >= 0 => ((snow + a) - (dnow + b)).abs() <= tolerance,
            _ => false,
        };
        if !same {
            let expiry = |now: i64, pttl: i64| (pttl >= 0).then_some(now + pttl);
            let detail = format!(
                "expiry (unix ms) {:?} vs {:?}",
                expiry(snow, a),
                expiry(dnow, b)
            );
            out.diffs.push(diff(i, DifferenceKind::Ttl, detail));
        }
    }
    Ok(out)
}

fn as_int(reply: &Reply) -> i64 {
    match reply {
        Reply::Int(n) => *n,
        _ => -1,
    }
}

fn string_hint(a: &Reply, b: &Reply) -> String {
    let len = |r: &Reply| match r {
        Reply::BulkString(v) => v.len() as i64,
        _ => -1,
    };
    let (x, y) = (len(a), len(b));
    if x == y {
        format!("{x} bytes on both sides, different bytes")
    } else {
        format!("source {x} bytes, target {y}")
    }
}

/// Target keys absent from the source (EXISTS pipelined on the source); those still
/// on the target, and not about to expire, are extra.
async fn extra_batch(
    ctx: &Ctx,
    src: MultiplexedConnection,
    dst: MultiplexedConnection,
    db: u32,
    keys: Vec<Vec<u8>>,
) -> anyhow::Result<Outcome> {
    let mut out = Outcome {
        target_checked: keys.len() as u64,
        ..Outcome::default()
    };
    if keys.is_empty() {
        return Ok(out);
    }
    // One multi-key EXISTS answers for the whole batch when every key exists (the
    // common case); only otherwise is each key asked about.
    let mut src = src;
    let all: i64 = redis::cmd("EXISTS")
        .arg(&keys)
        .query_async(&mut src)
        .await
        .context("EXISTS")?;
    if all == keys.len() as i64 {
        return Ok(out);
    }
    let mut pipe = redis::pipe();
    for k in &keys {
        pipe.cmd("EXISTS").arg(k);
    }
    let exists: Vec<i64> = pipe.query_async(&mut src).await.context("EXISTS")?;
    let absent: Vec<Vec<u8>> = keys
        .into_iter()
        .zip(exists)
        .filter(|(_, e)| *e == 0)
        .map(|(k, _)| k)
        .collect();
    if absent.is_empty() {
        return Ok(out);
    }
    let (dh, _) = heads(dst, &absent).await?;
    for (key, d) in absent.into_iter().zip(dh) {
        if d.kind != "none" && !ctx.expiring(d.pttl) {
            out.diffs.push(Difference {
                db,
                key,
                kind: DifferenceKind::ExtraOnTarget,
                detail: String::new(),
                source_type: "none".into(),
                target_type: d.kind,
                source_pttl: -2,
                target_pttl: d.pttl,
            });
        }
    }
    Ok(out)
}
