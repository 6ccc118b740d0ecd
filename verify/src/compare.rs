//! The comparison: both key sets, per database, in both directions; then type, value
//! and TTL of every key found on both sides. The databases are chosen, and what was
//! not covered is reported, by [`crate::coverage`].
//!
//! # How a database is walked
//! - The source pass: SCAN batches of the source's keys. Per batch, on both sides at
//!   once: `GETRANGE key 0 limit` of every key ([`CompareOptions::long_string_bytes`];
//!   0: one `MGET` of the whole batch), then `INFO keyspace` (is any key of the
//!   database carrying a TTL?). A key that GETRANGE returns non-empty on both sides is
//!   a string on both, and its bytes are its value (whatever the encoding); a reply of
//!   `limit + 1` bytes is a long string, compared in windows ([`crate::long_string`]).
//!   Then one pipeline per
//!   side: `TYPE` and `PTTL` of the other keys, and `PTTL` of the strings, only on a
//!   side whose database holds keys with a TTL (a key without one reads -1). Strings
//!   thus cost one GETRANGE per side, plus one PTTL where TTLs exist, instead of
//!   TYPE + PTTL + DUMP (or a Lua call per key): the servers' CPU is the limit, and the
//!   key lookups are what it is spent on. Collections of the same type: their lengths,
//!   then `DUMP` of those of at most `dump_elements_max` elements (byte-equal payloads
//!   are equal values: the *fast path*); any other pair is read again as chunked
//!   digests ([`crate::digest`]). Once one pair of payloads shows two different RDB
//!   versions, DUMP is skipped for the rest of the run. No Lua script is ever run.
//! - The target pass, after it: SCAN batches of the target's keys, one multi-key
//!   `EXISTS` per batch on the source, per-key EXISTS only for a batch with an absent
//!   key. It is skipped when counts prove there is no extra key: neither side changed
//!   during the source pass (`rdb_changes_since_last_save`, saves, `expired_keys`,
//!   `evicted_keys`, `master_repl_offset` and DBSIZE the same before and after), the
//!   source pass saw exactly DBSIZE keys on the source (so no key twice), and the
//!   target's DBSIZE equals the keys found on both sides plus lockstep's own
//!   checkpoint key. A target with a key outside the source's set cannot meet that.
//! - `workers` batches are in flight at once, each on its own connection per side. No
//!   key set is ever held: memory is bounded by `workers` batches in flight, plus the
//!   differences listed ([`crate::track`]: beyond `max_listed`, a differing key costs a
//!   32-bit fingerprint in a roaring bitmap).
//! - With a key list ([`CompareOptions::keys`]: `--keys-from`, `--recheck`) only those
//!   keys are read, on both sides, and a key present only on the target is extra.
//!
//! # What counts as a difference
//! TTLs are compared as absolute expiry times (`PTTL` read on each side, turned into
//! "now + PTTL" when the reply arrived), with a tolerance (2 s by default: the time
//! between the two reads plus the replication lag of a live sync; the sync writes
//! expiries as absolute times, so a TTL that it copied never drifts further). With a
//! TTL extension (the sync's `--extend-ttl`), the target's expiry is expected to be the
//! source's plus the extension; a persistent key stays persistent. A key that is
//! missing on one side while its TTL on the other is within the tolerance (plus the
//! extension, on the target) is expiring, not missing. A key gone from the source
//! between SCAN and the read is not compared. With `rounds > 1` every difference is read
//! again after a pause; only what still differs in the last round is reported, and the
//! report counts how many vanished (replication lag) and how many persisted.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::side::Conn;
use anyhow::Context;
use futures::stream::{self, Stream, StreamExt, TryStreamExt};
use redis::Value as Reply;
use roaring::RoaringBitmap;

use crate::coverage::{Coverage, SampleCoverage};
use crate::track::{fingerprint, key_slot, Differences};
use crate::{digest, long_string};

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

/// Keys to compare, per database.
pub type KeyList = BTreeMap<u32, Vec<Vec<u8>>>;

/// The key lockstep's sync keeps its position in, on the target (db 0); ignored like
/// every `LOCKSTEP_` key, and counted as such when counts prove the target pass.
pub const SYNC_CHECKPOINT_KEY: &str = "LOCKSTEP_CHECKPOINT";

/// What to compare, and how hard to push the servers.
#[derive(Clone, Debug)]
pub struct CompareOptions {
    /// Databases to compare; empty (the default): every database holding keys on
    /// either side, learned from both ([`crate::coverage`]). An explicit list
    /// restricts the scope, and the report names the databases with keys left out.
    pub dbs: Vec<u32>,
    /// Largest difference between the two sides' absolute expiry times that still
    /// counts as equal.
    pub ttl_tolerance: Duration,
    /// The target's expiries are expected this much later than the source's (the
    /// sync's `--extend-ttl`); zero: the same.
    pub ttl_extension: Duration,
    /// Keys starting with any of these are ignored: by default `LOCKSTEP_`, the sync's
    /// own keys (the heartbeat on the source, the checkpoint on the target).
    pub ignore_prefixes: Vec<Vec<u8>>,
    /// When not empty, only keys starting with one of these are compared.
    pub include_prefixes: Vec<Vec<u8>>,
    pub sample: Sample,
    /// Only these keys, instead of walking both key spaces (still filtered by the
    /// prefixes and the sample).
    pub keys: Option<KeyList>,
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
    /// Differences kept with their keys (reported one by one); further differing keys
    /// are kept as fingerprints and only counted.
    pub max_listed: usize,
    /// Strings longer than this many bytes are never read whole: they are compared
    /// in `GETRANGE` windows of this size ([`crate::long_string`]). 0: every string
    /// is read whole by one `MGET` per batch (about 1.6 times faster on small
    /// strings, but a long string is then held whole, on both sides).
    pub long_string_bytes: usize,
}

impl Default for CompareOptions {
    fn default() -> CompareOptions {
        CompareOptions {
            dbs: Vec::new(),
            ttl_tolerance: Duration::from_secs(2),
            ttl_extension: Duration::ZERO,
            ignore_prefixes: vec![b"LOCKSTEP_".to_vec()],
            include_prefixes: Vec::new(),
            sample: Sample::All,
            keys: None,
            workers: 4,
            batch_keys: 1000,
            keys_per_second: None,
            rounds: 1,
            round_pause: Duration::from_secs(1),
            chunk_elements: 1000,
            dump_elements_max: 1024,
            max_listed: 100_000,
            long_string_bytes: 1 << 20,
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

/// What a run may claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No difference, and everything was covered.
    Consistent,
    /// Differences were found.
    Differences,
    /// No difference in what was read, but not everything was (a sample, a database
    /// not read or not asked, databases that could not be learned).
    Incomplete,
}

/// How the extra keys of a database's target were looked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetPass {
    /// Every target key was checked on the source.
    Scanned,
    /// Neither side changed and the counts matched: the target holds no other key.
    ProvenByCounts,
    /// Only the keys of a key list were read (on both sides).
    KeyList,
}

impl TargetPass {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetPass::Scanned => "scanned",
            TargetPass::ProvenByCounts => "proven_by_counts",
            TargetPass::KeyList => "key_list",
        }
    }
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
    /// How each database's extra keys were looked for.
    pub target_pass: BTreeMap<u32, TargetPass>,
    /// Strings proved equal by their bytes (MGET).
    pub strings_equal: u64,
    /// Values proved equal by byte-equal DUMP payloads.
    pub dump_equal: u64,
    /// Values compared by chunked digests.
    pub digests_compared: u64,
    /// Differences still present in the last round, with their keys (at most
    /// `max_listed`, sorted by database and key).
    pub differences: Vec<Difference>,
    /// Further differences of the last round, counted but not listed.
    pub unlisted_differences: u64,
    /// Differences of the last round by kind, listed or not.
    pub differences_by_kind: BTreeMap<&'static str, u64>,
    /// Largest memory held by fingerprints of unlisted differences, in bytes.
    pub fingerprint_bytes: usize,
    /// Differences found in each round.
    pub round_differences: Vec<u64>,
    /// Differences of the first round that were gone in a later round (lag).
    pub vanished: u64,
    /// Cluster hash slots of the keys read (a standalone server's keys map onto them
    /// too): which of the 16384 slots the run covered.
    pub slots_covered: RoaringBitmap,
    /// Long strings compared in windows.
    pub strings_windowed: u64,
    /// Which databases were compared, and everything that was not.
    pub coverage: Coverage,
    pub elapsed: Duration,
}

impl Report {
    /// No difference in what was read. Whether that is everything: [`Report::verdict`]
    /// and [`Report::coverage`].
    pub fn is_consistent(&self) -> bool {
        self.difference_count() == 0
    }

    /// What the run may claim: differences, none in everything, or none in what it
    /// read (a sample, or a coverage with gaps).
    pub fn verdict(&self) -> Verdict {
        if !self.is_consistent() {
            Verdict::Differences
        } else if self.coverage.is_complete() {
            Verdict::Consistent
        } else {
            Verdict::Incomplete
        }
    }

    /// Every difference of the last round, listed or not.
    pub fn difference_count(&self) -> u64 {
        self.differences.len() as u64 + self.unlisted_differences
    }

    /// Differences by kind.
    pub fn by_kind(&self) -> BTreeMap<&'static str, u64> {
        self.differences_by_kind.clone()
    }

    /// Source keys compared per second.
    pub fn keys_per_second(&self) -> f64 {
        self.keys_compared as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} keys compared, {} differences",
            self.keys_compared,
            self.difference_count()
        )?;
        let passes: Vec<String> = self
            .target_pass
            .iter()
            .map(|(db, pass)| format!("db {db}: {}", pass.as_str()))
            .collect();
        write!(
            f,
            " ({:.2?}, {:.0} keys/s; by type {:?}; {} target keys checked [{}]; {} strings equal by bytes, {} values by DUMP, {} by digest; {} of 16384 slots covered",
            self.elapsed,
            self.keys_per_second(),
            self.keys_per_type,
            self.target_keys_checked,
            passes.join(", "),
            self.strings_equal,
            self.dump_equal,
            self.digests_compared,
            self.slots_covered.len(),
        )?;
        if self.round_differences.len() > 1 {
            write!(
                f,
                "; differences per round {:?}: {} vanished (lag), {} persisted",
                self.round_differences,
                self.vanished,
                self.difference_count()
            )?;
        }
        write!(f, "; compared {}", self.coverage.scope())?;
        if self.strings_windowed > 0 {
            write!(f, "; {} long strings in windows", self.strings_windowed)?;
        }
        write!(f, ")")?;
        for gap in self.coverage.gaps() {
            write!(f, "\n  not covered: {gap}")?;
        }
        if let Some(sample) = self.coverage.sample {
            write!(
                f,
                "\n  a sample (rate {:.6}): the rest was not compared",
                sample.rate
            )?;
        }
        if !self.is_consistent() {
            write!(f, "\n  by kind {:?}", self.by_kind())?;
        }
        if self.unlisted_differences > 0 {
            write!(
                f,
                "\n  {} differences listed, {} more counted only (fingerprints, {} bytes)",
                self.differences.len(),
                self.unlisted_differences,
                self.fingerprint_bytes
            )?;
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
    let mut coverage = plan(source, target, options).await?;
    let threshold = threshold(source, options, &coverage.compared).await?;
    if let Some(rate) = threshold.map(|(rate, _)| rate) {
        coverage.sample = Some(SampleCoverage { rate });
    }
    let ctx = Arc::new(Ctx {
        options: options.clone(),
        threshold: threshold.map(|(_, t)| t),
        dump_ok: AtomicBool::new(true),
        info_ok: AtomicBool::new(true),
        source_ttls: AtomicBool::new(false),
        target_ttls: AtomicBool::new(false),
    });
    let mut report = Report::default();
    let mut tally = Tally::new(options.max_listed);
    for db in std::mem::take(&mut coverage.compared) {
        let pools = match Pools::connect(&ctx, source, target, db).await? {
            Ok(pools) => pools,
            Err(why) => {
                coverage.not_read.insert(db, why);
                continue;
            }
        };
        coverage.compared.push(db);
        match &options.keys {
            Some(list) => {
                let keys = list.get(&db).cloned().unwrap_or_default();
                check_keys(&ctx, &pools, db, keys, &mut tally).await?;
                report.target_pass.insert(db, TargetPass::KeyList);
            }
            None => {
                let pass = walk_db(&ctx, &pools, db, &mut tally).await?;
                report.target_pass.insert(db, pass);
            }
        }
    }
    report.fingerprint_bytes = tally.diffs.fingerprint_bytes();
    report.round_differences.push(tally.diffs.len());
    let first = tally.diffs.len();
    for _ in 1..options.rounds.max(1) {
        if tally.diffs.is_empty() {
            break;
        }
        tokio::time::sleep(options.round_pause).await;
        let previous = std::mem::replace(&mut tally.diffs, Differences::new(0));
        let mut round = Tally::new(options.max_listed);
        let mut listed: BTreeMap<u32, Vec<Vec<u8>>> = BTreeMap::new();
        for d in previous.listed() {
            listed.entry(d.db).or_default().push(d.key.clone());
        }
        let unlisted = previous.unlisted_fingerprints();
        let dbs: std::collections::BTreeSet<u32> =
            listed.keys().chain(unlisted.keys()).copied().collect();
        for db in dbs {
            let pools = Pools::connect(&ctx, source, target, db)
                .await?
                .map_err(|why| anyhow::anyhow!("re-reading database {db}: {why}"))?;
            let keys = listed.remove(&db).unwrap_or_default();
            if let Some(fingerprints) = unlisted.get(&db) {
                let known: HashSet<&[u8]> = keys.iter().map(Vec::as_slice).collect();
                refind(&ctx, &pools, db, fingerprints, &known, &mut round).await?;
            }
            check_keys(&ctx, &pools, db, keys, &mut round).await?;
        }
        tally.diffs = round.diffs;
        report.fingerprint_bytes = report
            .fingerprint_bytes
            .max(tally.diffs.fingerprint_bytes());
        report.round_differences.push(tally.diffs.len());
    }
    report.vanished = first.saturating_sub(tally.diffs.len());
    tally.diffs.sort();
    report.keys_compared = tally.counts.compared;
    report.keys_per_type = tally.counts.per_type;
    report.target_keys_checked = tally.counts.target_checked;
    report.strings_equal = tally.counts.strings_equal;
    report.dump_equal = tally.counts.dump_equal;
    report.digests_compared = tally.counts.digests;
    report.slots_covered = tally.counts.slots;
    report.strings_windowed = tally.counts.windowed;
    report.coverage = coverage;
    report.differences_by_kind = tally.diffs.by_kind();
    report.unlisted_differences = tally.diffs.unlisted_count();
    report.differences = tally.diffs.into_listed();
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
    /// False once `INFO keyspace` failed (not permitted): TTLs are then always read.
    info_ok: AtomicBool,
    /// Whether each side's database held keys with a TTL at the last batch read: then
    /// PTTLs are read in the batch's first pipeline.
    source_ttls: AtomicBool,
    target_ttls: AtomicBool,
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

    /// The length beyond which strings are read in windows; None (0 in the
    /// options): strings are read whole by MGET.
    fn long_string_limit(&self) -> Option<usize> {
        (self.options.long_string_bytes > 0).then_some(self.options.long_string_bytes)
    }

    fn tolerance_ms(&self) -> i64 {
        self.options.ttl_tolerance.as_millis() as i64
    }

    fn extension_ms(&self) -> i64 {
        self.options.ttl_extension.as_millis() as i64
    }

    /// A source TTL short enough that the key may expire during the check.
    fn expiring_on_source(&self, pttl: i64) -> bool {
        (0..=self.tolerance_ms()).contains(&pttl)
    }

    /// A target key whose source copy may have expired already: within the tolerance
    /// plus the TTL extension.
    fn expiring_on_target(&self, pttl: i64) -> bool {
        (0..=self.tolerance_ms() + self.extension_ms()).contains(&pttl)
    }

    /// Whether two TTLs, read at `snow` and `dnow` (unix ms), agree.
    fn ttls_agree(&self, snow: i64, a: i64, dnow: i64, b: i64) -> bool {
        match (a, b) {
            (-1, -1) => true,
            (a, b) if a >= 0 && b >= 0 => {
                ((dnow + b) - (snow + a) - self.extension_ms()).abs() <= self.tolerance_ms()
            }
            _ => false,
        }
    }

    /// Whether counts may prove that the target has no extra key (every source key is
    /// read, so the keys found on both sides are all the target's wanted keys).
    fn counts_may_prove(&self) -> bool {
        self.options.sample == Sample::All && self.options.include_prefixes.is_empty()
    }
}

/// The sample's rate and hash threshold, if any (a rate of 1 or more: every key).
async fn threshold(
    source: &redis::Client,
    options: &CompareOptions,
    dbs: &[u32],
) -> anyhow::Result<Option<(f64, u64)>> {
    let rate = match options.sample {
        Sample::All => return Ok(None),
        Sample::Rate(rate) => rate,
        Sample::Count(count) => {
            let mut total = 0u64;
            for &db in dbs {
                let Ok(mut conns) = connect_db(source, db, 1).await? else {
                    continue; // not readable: reported as such by the walk
                };
                let size: u64 = redis::cmd("DBSIZE")
                    .query_async(&mut conns[0])
                    .await
                    .with_context(|| format!("DBSIZE of the source's database {db}"))?;
                total += size;
            }
            count as f64 / total.max(1) as f64
        }
    };
    Ok((rate < 1.0).then(|| (rate, (rate.max(0.0) * u64::MAX as f64) as u64)))
}

/// The databases to compare and what is known of both sides' databases: a key
/// list's databases, the asked ones, or every database holding keys on either side.
async fn plan(
    source: &redis::Client,
    target: &redis::Client,
    options: &CompareOptions,
) -> anyhow::Result<Coverage> {
    if let Some(list) = &options.keys {
        let dbs = if options.dbs.is_empty() {
            list.keys().copied().collect()
        } else {
            options.dbs.clone()
        };
        return Ok(Coverage {
            compared: dbs,
            key_list: true,
            ..Coverage::default()
        });
    }
    let (s, t) = tokio::try_join!(
        async {
            crate::coverage::learn(source)
                .await
                .context("learning the source's databases")
        },
        async {
            crate::coverage::learn(target)
                .await
                .context("learning the target's databases")
        }
    )?;
    let with_keys: std::collections::BTreeSet<u32> =
        s.with_keys.union(&t.with_keys).copied().collect();
    let (asked, compared, not_asked) = if options.dbs.is_empty() {
        (None, with_keys.into_iter().collect(), Vec::new())
    } else {
        let mut asked = options.dbs.clone();
        asked.sort_unstable();
        asked.dedup();
        let left_out = with_keys
            .into_iter()
            .filter(|db| !asked.contains(db))
            .collect();
        (Some(asked.clone()), asked, left_out)
    };
    Ok(Coverage {
        asked,
        source: Some(s),
        target: Some(t),
        compared,
        not_asked,
        ..Coverage::default()
    })
}

/// What batches found, besides differences.
#[derive(Default)]
struct Counts {
    /// Keys SCAN returned, before filtering.
    scanned: u64,
    compared: u64,
    /// Keys present on both sides.
    on_both: u64,
    per_type: BTreeMap<String, u64>,
    target_checked: u64,
    strings_equal: u64,
    dump_equal: u64,
    digests: u64,
    windowed: u64,
    slots: RoaringBitmap,
}

impl Counts {
    fn add(&mut self, other: Counts) {
        self.scanned += other.scanned;
        self.compared += other.compared;
        self.on_both += other.on_both;
        for (k, n) in other.per_type {
            *self.per_type.entry(k).or_insert(0) += n;
        }
        self.target_checked += other.target_checked;
        self.strings_equal += other.strings_equal;
        self.dump_equal += other.dump_equal;
        self.digests += other.digests;
        self.windowed += other.windowed;
        self.slots |= other.slots;
    }
}

/// What one batch found.
#[derive(Default)]
struct Outcome {
    counts: Counts,
    diffs: Vec<Difference>,
}

/// Everything found so far.
struct Tally {
    counts: Counts,
    diffs: Differences,
}

impl Tally {
    fn new(max_listed: usize) -> Tally {
        Tally {
            counts: Counts::default(),
            diffs: Differences::new(max_listed),
        }
    }

    fn absorb(&mut self, o: Outcome) {
        self.counts.add(o.counts);
        for d in o.diffs {
            self.diffs.push(d);
        }
    }

    /// Adds another tally's counts and differences.
    fn merge(&mut self, other: Tally) {
        self.counts.add(other.counts);
        self.diffs.absorb(other.diffs);
    }
}

/// `workers` connections to one database on each side.
struct Pools {
    src: Vec<Conn>,
    dst: Vec<Conn>,
}

impl Pools {
    /// The connections, or why a side refused the database (then it is not read).
    async fn connect(
        ctx: &Ctx,
        source: &redis::Client,
        target: &redis::Client,
        db: u32,
    ) -> anyhow::Result<Result<Pools, String>> {
        let workers = ctx.options.workers.max(1);
        let src = connect_db(source, db, workers)
            .await
            .context("connecting to the source")?;
        let dst = connect_db(target, db, workers)
            .await
            .context("connecting to the target")?;
        Ok(match (src, dst) {
            (Ok(src), Ok(dst)) => Ok(Pools { src, dst }),
            (Err(why), _) => Err(format!("the source refused it: {why}")),
            (_, Err(why)) => Err(format!("the target refused it: {why}")),
        })
    }
}

/// A batch of wanted keys and how many keys SCAN returned for it.
struct Batch {
    scanned: u64,
    keys: Vec<Vec<u8>>,
}

/// Runs `each` on every batch, `workers` at a time, batch `i` on connection pair
/// `i % workers`, and adds what they found to `tally`. The batches are read up to
/// `workers` ahead (SCAN runs while batches are being compared), so that neither
/// server waits for the other's reply to get its next command.
async fn run_batches<F, Fut>(
    pools: &Pools,
    batches: impl Stream<Item = anyhow::Result<Batch>>,
    tally: &mut Tally,
    each: F,
) -> anyhow::Result<()>
where
    F: Fn(Conn, Conn, Vec<Vec<u8>>) -> Fut,
    Fut: Future<Output = anyhow::Result<Outcome>>,
{
    let workers = pools.src.len().max(1);
    let (ahead, behind) = tokio::sync::mpsc::channel(workers);
    let read_ahead = async move {
        let mut batches = std::pin::pin!(batches);
        while let Some(batch) = batches.next().await {
            if ahead.send(batch).await.is_err() {
                break;
            }
        }
        Ok::<_, anyhow::Error>(())
    };
    let each = &each;
    let compare_all = async move {
        let batches = stream::unfold(behind, |mut behind| async move {
            behind.recv().await.map(|batch| (batch, behind))
        });
        let outcomes = batches
            .enumerate()
            .map(|(i, batch)| {
                let (s, d) = (
                    pools.src[i % workers].clone(),
                    pools.dst[i % workers].clone(),
                );
                async move {
                    let batch = batch?;
                    let mut outcome = each(s, d, batch.keys).await?;
                    outcome.counts.scanned = batch.scanned;
                    Ok::<_, anyhow::Error>(outcome)
                }
            })
            .buffer_unordered(workers);
        let mut outcomes = std::pin::pin!(outcomes);
        while let Some(outcome) = outcomes.try_next().await? {
            tally.absorb(outcome);
        }
        Ok(())
    };
    tokio::try_join!(read_ahead, compare_all)?;
    Ok(())
}

/// Both passes over one database; how the target's extra keys were looked for.
///
/// The target pass waits while counts may still prove it unneeded: the quiet states of
/// both sides are read every `QUIET_POLL`, and as soon as one changes (a live sync,
/// any write) the target pass starts, alongside the rest of the source pass.
async fn walk_db(
    ctx: &Arc<Ctx>,
    pools: &Pools,
    db: u32,
    tally: &mut Tally,
) -> anyhow::Result<TargetPass> {
    const QUIET_POLL: Duration = Duration::from_millis(500);
    let before = if ctx.counts_may_prove() {
        quiet_states(ctx, pools).await
    } else {
        None
    };
    let (scanned, on_both) = (tally.counts.scanned, tally.counts.on_both);
    let mut target_tally = Tally::new(ctx.options.max_listed);
    let source_done = tokio::sync::Notify::new();
    let source_pass = async {
        let limiter = Limiter::new(ctx.options.keys_per_second);
        let source_keys = scan(ctx, pools.src[0].clone(), limiter, &|_| true);
        let result = run_batches(pools, source_keys, tally, |s, d, keys| {
            compare_batch(ctx, s, d, db, keys, false)
        })
        .await;
        source_done.notify_one();
        result
    };
    let early_target_pass = async {
        if let Some(before) = &before {
            loop {
                tokio::select! {
                    _ = source_done.notified() => return Ok(false),
                    _ = tokio::time::sleep(QUIET_POLL) => {}
                }
                if quiet_states(ctx, pools).await.as_ref() != Some(before) {
                    break;
                }
            }
        }
        target_pass(ctx, pools, db, &mut target_tally).await?;
        Ok::<_, anyhow::Error>(true)
    };
    let ((), target_done) = tokio::try_join!(source_pass, early_target_pass)?;
    if !target_done {
        let proven = match before {
            Some(before) => {
                let after = quiet_states(ctx, pools).await;
                let (source, target) = &before;
                after.as_ref() == Some(&before)
                    && source.dbsize == tally.counts.scanned - scanned
                    && target.dbsize == tally.counts.on_both - on_both + target.own_keys
            }
            None => false,
        };
        if proven {
            return Ok(TargetPass::ProvenByCounts);
        }
        target_pass(ctx, pools, db, &mut target_tally).await?;
    }
    tally.merge(target_tally);
    Ok(TargetPass::Scanned)
}

/// Every target key of `db` checked on the source.
async fn target_pass(
    ctx: &Arc<Ctx>,
    pools: &Pools,
    db: u32,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    let limiter = Limiter::new(ctx.options.keys_per_second);
    let target_keys = scan(ctx, pools.dst[0].clone(), limiter, &|_| true);
    run_batches(pools, target_keys, tally, |s, d, keys| {
        extra_batch(ctx, s, d, db, keys)
    })
    .await
}

/// Compares `keys` of `db` on both sides (a key list, or re-checked differences): a
/// key present only on the target is extra.
async fn check_keys(
    ctx: &Arc<Ctx>,
    pools: &Pools,
    db: u32,
    keys: Vec<Vec<u8>>,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    let mut keys: Vec<Vec<u8>> = keys.into_iter().filter(|k| ctx.wanted(k)).collect();
    // A key listed twice (a line repeated, SCAN returning a key twice) is read once.
    keys.sort_unstable();
    keys.dedup();
    let batches: Vec<anyhow::Result<Batch>> = keys
        .chunks(ctx.options.batch_keys.max(1))
        .map(|chunk| {
            Ok(Batch {
                scanned: 0,
                keys: chunk.to_vec(),
            })
        })
        .collect();
    run_batches(pools, stream::iter(batches), tally, |s, d, keys| {
        compare_batch(ctx, s, d, db, keys, true)
    })
    .await
}

/// Finds again, by walking both sides, the keys of `db` whose fingerprints are in
/// `fingerprints` (differences that were counted, not listed), except `known` ones,
/// and compares them.
async fn refind(
    ctx: &Arc<Ctx>,
    pools: &Pools,
    db: u32,
    fingerprints: &RoaringBitmap,
    known: &HashSet<&[u8]>,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    let chosen = |key: &[u8]| fingerprints.contains(fingerprint(key)) && !known.contains(key);
    let limiter = Limiter::new(ctx.options.keys_per_second);
    let source_keys = scan(ctx, pools.src[0].clone(), limiter, &chosen);
    run_batches(pools, source_keys, tally, |s, d, keys| {
        compare_batch(ctx, s, d, db, keys, false)
    })
    .await?;
    let limiter = Limiter::new(ctx.options.keys_per_second);
    let target_keys = scan(ctx, pools.dst[0].clone(), limiter, &chosen);
    run_batches(pools, target_keys, tally, |s, d, keys| {
        extra_batch(ctx, s, d, db, keys)
    })
    .await
}

/// What shows that a server's key space did not change: write and expiry counters,
/// saves, the replication offset and the database's size.
#[derive(Clone, Debug, PartialEq, Eq)]
struct QuietState {
    counters: Vec<(String, String)>,
    dbsize: u64,
    /// lockstep's checkpoint key, present (1) or not (0).
    own_keys: u64,
}

/// The quiet states of both sides, or None when one cannot be read (INFO not
/// permitted) or a save is in progress.
async fn quiet_states(ctx: &Ctx, pools: &Pools) -> Option<(QuietState, QuietState)> {
    let (s, d) = tokio::join!(
        quiet_state(ctx, pools.src[0].clone()),
        quiet_state(ctx, pools.dst[0].clone())
    );
    Some((s.ok()?, d.ok()?))
}

async fn quiet_state(ctx: &Ctx, mut conn: Conn) -> anyhow::Result<QuietState> {
    const FIELDS: [&str; 8] = [
        "rdb_changes_since_last_save",
        "rdb_bgsave_in_progress",
        "rdb_last_save_time",
        "rdb_saves",
        "aof_rewrite_in_progress",
        "expired_keys",
        "evicted_keys",
        "master_repl_offset",
    ];
    let mut counters = Vec::new();
    // One section per INFO call: Redis 6.2 takes only one.
    for section in ["persistence", "stats", "replication"] {
        let text: String = redis::cmd("INFO")
            .arg(section)
            .query_async(&mut conn)
            .await?;
        for line in text.lines() {
            if let Some((name, value)) = line.trim().split_once(':') {
                if FIELDS.contains(&name) {
                    counters.push((name.to_owned(), value.to_owned()));
                }
            }
        }
    }
    let busy = |name: &str| counters.iter().any(|(n, v)| n == name && v != "0");
    if busy("rdb_bgsave_in_progress") || busy("aof_rewrite_in_progress") {
        anyhow::bail!("a save is in progress");
    }
    let dbsize: u64 = redis::cmd("DBSIZE").query_async(&mut conn).await?;
    let own = ctx
        .options
        .ignore_prefixes
        .iter()
        .any(|p| SYNC_CHECKPOINT_KEY.as_bytes().starts_with(p));
    let own_keys: u64 = if own {
        redis::cmd("EXISTS")
            .arg(SYNC_CHECKPOINT_KEY)
            .query_async(&mut conn)
            .await?
    } else {
        0
    };
    Ok(QuietState {
        counters,
        dbsize,
        own_keys,
    })
}

/// `n` connections to database `db`: an empty database ([`Conn::Absent`]) when the
/// side has no such database ("DB index is out of range": its `databases` is smaller,
/// so the other side's keys there are reported), the reason when the side refuses
/// it (an ACL without SELECT), an error when the side cannot be reached.
async fn connect_db(
    client: &redis::Client,
    db: u32,
    n: usize,
) -> anyhow::Result<Result<Vec<Conn>, String>> {
    match crate::side::connect(client, db, n).await {
        Ok(conns) => Ok(Ok(conns)),
        Err(e) => {
            let Some(refusal) = e
                .chain()
                .find_map(|c| c.downcast_ref::<redis::RedisError>())
                .filter(|r| !r.is_io_error() && !r.is_unrecoverable_error())
                .map(|r| r.to_string())
            else {
                return Err(e);
            };
            if refusal.contains("out of range") {
                Ok(Ok(vec![Conn::Absent; n.max(1)]))
            } else {
                Ok(Err(format!("SELECT {db}: {refusal}")))
            }
        }
    }
}

/// Batches of wanted keys for which `chosen` holds, SCAN by SCAN.
fn scan<'a>(
    ctx: &'a Ctx,
    conn: Conn,
    limiter: Limiter,
    chosen: &'a (dyn Fn(&[u8]) -> bool + Sync),
) -> impl Stream<Item = anyhow::Result<Batch>> + 'a {
    let state = (conn, limiter, Some(0u64));
    stream::try_unfold(state, move |(mut conn, mut limiter, cursor)| async move {
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
        let scanned = keys.len() as u64;
        let keys: Vec<Vec<u8>> = keys
            .into_iter()
            .filter(|k| ctx.wanted(k) && chosen(k))
            .collect();
        limiter.take(keys.len()).await;
        let cursor = (next != 0).then_some(next);
        Ok(Some((Batch { scanned, keys }, (conn, limiter, cursor))))
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

/// TYPE and PTTL of a key as read.
#[derive(Clone, Debug)]
struct Head {
    kind: String,
    pttl: i64,
}

/// One side's first read of a batch: `GETRANGE 0 limit` of every key (Some: a
/// non-empty string, whole when at most `limit` bytes, else its first `limit + 1`
/// bytes: a long string), PTTL of every key when the database was last seen holding
/// TTLs, and whether it holds any key with a TTL right after.
struct FirstRead {
    values: Vec<Option<Vec<u8>>>,
    pttls: Option<Vec<i64>>,
    ttls_exist: bool,
    /// When the reply arrived (unix ms).
    now: i64,
}

/// `GETRANGE key 0 limit` of every key of the batch (no string is read whole beyond
/// `limit`: [`crate::long_string`]), then (when `ttls` says this side had keys with a
/// TTL at its last batch) `PTTL` of every key, then `INFO keyspace`, in one pipeline,
/// so that the common case costs one round trip. An empty reply (no such key, an
/// empty string) or an error (not a string) is None: TYPE tells. When INFO is not
/// permitted, TTLs are assumed to exist (and INFO is not asked again).
async fn first_read(
    ctx: &Ctx,
    mut conn: Conn,
    db: u32,
    keys: &[Vec<u8>],
    ttls: &AtomicBool,
) -> anyhow::Result<FirstRead> {
    let mut pipe = redis::pipe();
    let limit = ctx.long_string_limit();
    match limit {
        Some(limit) => {
            for key in keys {
                pipe.cmd("GETRANGE").arg(key).arg(0).arg(limit);
            }
        }
        None => {
            pipe.cmd("MGET").arg(keys);
        }
    }
    let read_ttls = ttls.load(Ordering::Relaxed);
    if read_ttls {
        for key in keys {
            pipe.cmd("PTTL").arg(key);
        }
    }
    let ask_info = ctx.info_ok.load(Ordering::Relaxed);
    if ask_info {
        pipe.cmd("INFO").arg("keyspace");
    }
    let replies: Vec<redis::RedisResult<Reply>> = pipe
        .ignore_errors()
        .query_async(&mut conn)
        .await
        .context("GETRANGE")?;
    let now = unix_ms();
    let mut replies = replies.into_iter();
    let values = match limit {
        Some(_) => {
            let mut values = Vec::with_capacity(keys.len());
            for _ in keys {
                values.push(match replies.next().context("GETRANGE: missing reply")? {
                    Ok(Reply::BulkString(bytes)) if !bytes.is_empty() => Some(bytes),
                    _ => None,
                });
            }
            values
        }
        None => {
            let reply = replies.next().context("MGET: no reply")?;
            redis::from_redis_value(reply.context("MGET")?).context("MGET")?
        }
    };
    let pttls = if read_ttls {
        let mut pttls = Vec::with_capacity(keys.len());
        for _ in keys {
            let reply = replies.next().context("PTTL: missing reply")?;
            pttls.push(redis::from_redis_value(reply.context("PTTL")?).context("PTTL")?);
        }
        Some(pttls)
    } else {
        None
    };
    let ttls_exist = match replies.next() {
        Some(Ok(text)) => {
            let text: String = redis::from_redis_value(text).unwrap_or_default();
            keyspace_expires(&text, db) != Some(0)
        }
        Some(Err(_)) => {
            ctx.info_ok.store(false, Ordering::Relaxed);
            true
        }
        None => true,
    };
    ttls.store(ttls_exist, Ordering::Relaxed);
    Ok(FirstRead {
        values,
        pttls,
        ttls_exist,
        now,
    })
}

/// The `expires=` count of database `db` in an `INFO keyspace` reply: 0 when the
/// database is empty (absent), None when the reply cannot be read.
fn keyspace_expires(info: &str, db: u32) -> Option<u64> {
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
async fn heads_after(
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
async fn heads(mut conn: Conn, keys: &[Vec<u8>]) -> anyhow::Result<(Vec<Head>, i64)> {
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
/// A pipeline that [`replies`] runs: error replies come back as values.
fn tolerant_pipe() -> redis::Pipeline {
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    pipe
}

/// Replies of one pipeline made by [`tolerant_pipe`], one per command. An error reply
/// (a key retyped between two reads: WRONGTYPE) becomes Nil, which differs from the
/// other side's reply and is read again in a later round; a failed connection is an
/// error.
async fn replies(mut conn: Conn, pipe: &redis::Pipeline) -> anyhow::Result<Vec<Reply>> {
    if pipe.is_empty() {
        return Ok(Vec::new());
    }
    let results: Vec<redis::RedisResult<Reply>> = pipe.query_async(&mut conn).await?;
    results
        .into_iter()
        .map(|r| match r {
            Ok(reply) => Ok(reply),
            Err(e) if e.is_io_error() || e.is_unrecoverable_error() => Err(e.into()),
            Err(_) => Ok(Reply::Nil),
        })
        .collect()
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
    src: Conn,
    dst: Conn,
    db: u32,
    keys: Vec<Vec<u8>>,
    recheck: bool,
) -> anyhow::Result<Outcome> {
    let mut out = Outcome::default();
    if keys.is_empty() {
        return Ok(out);
    }
    let (mut sf, mut df) = tokio::try_join!(
        first_read(ctx, src.clone(), db, &keys, &ctx.source_ttls),
        first_read(ctx, dst.clone(), db, &keys, &ctx.target_ttls)
    )?;
    let strings: Vec<bool> = sf
        .values
        .iter()
        .zip(&df.values)
        .map(|(a, b)| a.is_some() && b.is_some())
        .collect();
    let ((sh, snow), (dh, dnow)) = tokio::try_join!(
        heads_after(src.clone(), &keys, &strings, &sf),
        heads_after(dst.clone(), &keys, &strings, &df)
    )?;
    let (sv, dv) = (&mut sf.values, &mut df.values);
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
    for (i, key) in keys.iter().enumerate() {
        out.counts.slots.insert(u32::from(key_slot(key)));
        let (s, d) = (&sh[i], &dh[i]);
        if s.kind == "none" {
            if recheck && d.kind != "none" && !ctx.expiring_on_target(d.pttl) {
                out.diffs
                    .push(diff(i, DifferenceKind::ExtraOnTarget, String::new()));
            }
            continue;
        }
        out.counts.compared += 1;
        *out.counts.per_type.entry(s.kind.clone()).or_insert(0) += 1;
        if d.kind == "none" {
            if !ctx.expiring_on_source(s.pttl) {
                out.diffs
                    .push(diff(i, DifferenceKind::MissingOnTarget, String::new()));
            }
            continue;
        }
        out.counts.on_both += 1;
        if s.kind != d.kind {
            let detail = format!("{} vs {}", s.kind, d.kind);
            out.diffs.push(diff(i, DifferenceKind::Type, detail));
        } else {
            same.push(i);
        }
    }

    // Strings read by the first GETRANGE on both sides are compared by their bytes;
    // other keys: GETRANGE + EXISTS of strings (empty, or created after the first
    // read: EXISTS tells an empty string from a key deleted since), lengths of
    // collections.
    let limit = ctx.long_string_limit();
    let fast = ctx.dump_ok.load(Ordering::Relaxed);
    let mut pipe = tolerant_pipe();
    let mut second = Vec::new();
    let mut slow = Vec::new();
    let mut equal = Vec::new();
    // Strings read on both sides (None: gone or retyped since TYPE, a difference that
    // is read again next round).
    let mut string_pairs = Vec::new();
    // Values that differ: (index, hint), reported after the expiry check below.
    let mut value_diffs: Vec<(usize, String)> = Vec::new();
    for &i in &same {
        let key = &keys[i];
        match (sh[i].kind.as_str(), length_command(&sh[i].kind)) {
            ("string", _) if strings[i] => string_pairs.push((i, sv[i].take(), dv[i].take())),
            ("string", _) => {
                match limit {
                    Some(limit) => pipe.cmd("GETRANGE").arg(key).arg(0).arg(limit),
                    None => pipe.cmd("GET").arg(key),
                };
                pipe.cmd("EXISTS").arg(key);
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
    let mut third = Vec::new();
    let (mut sr, mut dr) = (sr.into_iter(), dr.into_iter());
    for &i in &second {
        let (a, b) = (
            sr.next().unwrap_or(Reply::Nil),
            dr.next().unwrap_or(Reply::Nil),
        );
        if sh[i].kind == "string" {
            let (a_exists, b_exists) = (sr.next(), dr.next());
            let bytes = |r: Reply, exists: Option<Reply>| match (r, exists) {
                (Reply::BulkString(bytes), Some(Reply::Int(1))) => Some(bytes),
                _ => None,
            };
            string_pairs.push((i, bytes(a, a_exists), bytes(b, b_exists)));
        } else {
            let (x, y) = (as_int(&a), as_int(&b));
            if x != y {
                value_diffs.push((i, format!("source {x} elements, target {y}")));
            } else if x as u64 <= ctx.options.dump_elements_max {
                third.push(i);
            } else {
                slow.push(i);
            }
        }
    }

    let mut long_strings = Vec::new();
    for (i, a, b) in string_pairs {
        let long = |v: &Option<Vec<u8>>| {
            limit.is_some_and(|limit| v.as_ref().is_some_and(|v| v.len() > limit))
        };
        if long(&a) || long(&b) {
            long_strings.push(i);
        } else if a.is_some() && a == b {
            out.counts.strings_equal += 1;
            equal.push(i);
        } else {
            let (a, b) = (a.unwrap_or_default(), b.unwrap_or_default());
            value_diffs.push((i, string_hint(&a, &b)));
        }
    }

    for &i in &long_strings {
        out.counts.windowed += 1;
        let window = limit.unwrap_or(usize::MAX);
        match compare_long_string(&src, &dst, &keys[i], window).await? {
            None => {
                out.counts.strings_equal += 1;
                equal.push(i);
            }
            Some(detail) => value_diffs.push((i, detail)),
        }
    }

    // Third pipeline: DUMP of small collections.
    let mut pipe = tolerant_pipe();
    for &i in &third {
        pipe.cmd("DUMP").arg(&keys[i]);
    }
    let (sr, dr) = tokio::try_join!(replies(src.clone(), &pipe), replies(dst.clone(), &pipe))?;
    for (n, &i) in third.iter().enumerate() {
        match dumped(ctx, &sr[n], &dr[n]) {
            Dumped::Equal => {
                out.counts.dump_equal += 1;
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
        let (a, b) = tokio::join!(
            digest::read(&mut s, key, kind, chunk),
            digest::read(&mut d, key, kind, chunk)
        );
        // A reply error (the key deleted or retyped during the read: XINFO's "no such
        // key", WRONGTYPE) is a difference that a later round re-reads; a failed
        // connection ends the check.
        let (a, b) = match (a, b) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) if e.is_io_error() || e.is_unrecoverable_error() => {
                return Err(e).with_context(|| {
                    format!("reading {} in chunks", String::from_utf8_lossy(key))
                });
            }
            (Err(e), _) | (_, Err(e)) => {
                value_diffs.push((i, format!("changed during the read: {e}")));
                continue;
            }
        };
        out.counts.digests += 1;
        if a == b {
            equal.push(i);
        } else {
            let detail = if a.elements == b.elements {
                format!("{} elements on both sides, different digests", a.elements)
            } else {
                format!("source {} elements, target {}", a.elements, b.elements)
            };
            value_diffs.push((i, detail));
        }
    }

    // A value that differs on a key with a TTL may have expired on one side during
    // the reads (each side expires on its own clock): its PTTL is read again, and a key
    // now gone or expiring on either side is not an inconsistency.
    let volatile: Vec<usize> = value_diffs
        .iter()
        .map(|(i, _)| *i)
        .filter(|&i| sh[i].pttl >= 0 || dh[i].pttl >= 0)
        .collect();
    let mut pipe = tolerant_pipe();
    for &i in &volatile {
        pipe.cmd("PTTL").arg(&keys[i]);
    }
    let (sr, dr) = tokio::try_join!(replies(src.clone(), &pipe), replies(dst.clone(), &pipe))?;
    let expired: HashSet<usize> = volatile
        .iter()
        .zip(sr.iter().zip(&dr))
        .filter(|(_, (a, b))| {
            let (a, b) = (as_int(a), as_int(b));
            a == -2 || b == -2 || ctx.expiring_on_source(a) || ctx.expiring_on_target(b)
        })
        .map(|(&i, _)| i)
        .collect();
    for (i, detail) in value_diffs {
        if !expired.contains(&i) {
            out.diffs.push(diff(i, DifferenceKind::Value, detail));
        }
    }

    // TTLs of equal values.
    for i in equal {
        let (a, b) = (sh[i].pttl, dh[i].pttl);
        if !ctx.ttls_agree(snow, a, dnow, b) {
            let expiry = |now: i64, pttl: i64| (pttl >= 0).then_some(now + pttl);
            let mut detail = format!(
                "expiry (unix ms) {:?} vs {:?}",
                expiry(snow, a),
                expiry(dnow, b)
            );
            if ctx.extension_ms() > 0 {
                detail.push_str(&format!(", extension {} ms expected", ctx.extension_ms()));
            }
            out.diffs.push(diff(i, DifferenceKind::Ttl, detail));
        }
    }
    Ok(out)
}

/// A long string on both sides compared in windows: None when equal, else a hint. A
/// reply error (the key deleted or retyped during the read) is a difference that a
/// later round re-reads; a failed connection ends the check.
async fn compare_long_string(
    src: &Conn,
    dst: &Conn,
    key: &[u8],
    window: usize,
) -> anyhow::Result<Option<String>> {
    let (mut s, mut d) = (src.clone(), dst.clone());
    match long_string::compare_windows(&mut s, &mut d, key, window).await {
        Ok(outcome) => Ok(outcome),
        Err(e) if e.is_io_error() || e.is_unrecoverable_error() => Err(e).with_context(|| {
            format!(
                "reading the long string {} in windows",
                String::from_utf8_lossy(key)
            )
        }),
        Err(e) => Ok(Some(format!("changed during the read: {e}"))),
    }
}

fn as_int(reply: &Reply) -> i64 {
    match reply {
        Reply::Int(n) => *n,
        _ => -1,
    }
}

fn string_hint(a: &[u8], b: &[u8]) -> String {
    if a.len() == b.len() {
        format!("{} bytes on both sides, different bytes", a.len())
    } else {
        format!("source {} bytes, target {}", a.len(), b.len())
    }
}

/// Target keys absent from the source (one multi-key EXISTS on the source); those
/// still on the target, and not about to expire, are extra.
async fn extra_batch(
    ctx: &Ctx,
    src: Conn,
    dst: Conn,
    db: u32,
    keys: Vec<Vec<u8>>,
) -> anyhow::Result<Outcome> {
    let mut out = Outcome::default();
    out.counts.target_checked = keys.len() as u64;
    if keys.is_empty() {
        return Ok(out);
    }
    for key in &keys {
        out.counts.slots.insert(u32::from(key_slot(key)));
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
        if d.kind != "none" && !ctx.expiring_on_target(d.pttl) {
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
