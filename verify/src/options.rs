//! What a comparison is asked to do: the databases, the keys (prefixes, a sample, a
//! key list), the TTL rules, and how hard to push the servers.
//!
//! Plain data read by every stage (walk, read, judge, report); it imports nothing of
//! the crate, and must never hold a connection or any state of a run.

use std::collections::BTreeMap;
use std::time::Duration;

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
    /// Which window of the hash space a sample takes: window `w` keeps the keys whose
    /// xxh3-64 hash minus `w` times the sample's threshold (modulo 2^64) is below the
    /// threshold. Window 0 is the classic sample; consecutive windows tile the hash
    /// space, so `ceil(1 / rate)` of them cover every key once (a rotating audit).
    /// With [`Sample::Count`] the rate follows DBSIZE, so the tiling is approximate.
    pub sample_window: u64,
    /// Only these keys, instead of walking both key spaces (still filtered by the
    /// prefixes and the sample).
    pub keys: Option<KeyList>,
    /// With a key list: target keys (target names) that no source key is written as
    /// (renamed prefixes, [`CompareOptions::renames`]; a re-checked report's extra
    /// keys): each still on the target is extra.
    pub target_only_keys: Option<KeyList>,
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
    /// Source database -> target database (the sync's `--map-db`): source database
    /// `SRC` is compared with the target's `DST`; unmapped databases keep their
    /// number. Databases in [`CompareOptions::dbs`], in a key list and in the report
    /// are the source's numbers.
    pub db_map: Vec<(u32, u32)>,
    /// OLD prefix -> NEW prefix (the sync's `--rename-prefix`): a source key
    /// `OLD rest` is compared with the target's `NEW rest`; keys matching no rule
    /// keep their name. Must be one-to-one (no OLD, and no NEW, the start of
    /// another). The prefixes, the sample and key lists judge source names.
    pub renames: Vec<(Vec<u8>, Vec<u8>)>,
    /// The sync's TTL rule (`--ttl-remove`, `--ttl-cap`, `--ttl-set`): how a target
    /// expiry is judged ([`crate::judge::ttl`]).
    pub ttl_rule: TtlRule,
    /// The sync's declarative rules as given (filters by glob, regex and type,
    /// dropped hash fields, renames by regex): checked and compiled at the start of
    /// a run by [`crate::rules::Rules::check`].
    pub rules: RuleSpec,
    /// The sync's `--script` (docs/transforms.md, "Verifying a scripted sync"):
    /// the keys it touches are judged by running it ([`crate::script`]).
    pub script: Option<ScriptOptions>,
}

/// What `--script` asks (the sync's flags of the same names, and verify's bounds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptOptions {
    /// The file's name, for messages.
    pub file: String,
    /// The file's text (read by the caller).
    pub code: Vec<u8>,
    /// `--script-timeout`: one call of `transform` at most.
    pub timeout: Duration,
    /// `--script-memory`: bytes the Lua state may hold.
    pub memory: usize,
    /// Bytes of scripted source values verify holds at most, all keys in flight
    /// together; a key bigger than this is NOT VERIFIED.
    pub value_bytes: usize,
    /// Bytes of target names the script produced that one database keeps for the
    /// extra-key check; beyond, extra keys of the database are not checked.
    pub names_bytes: usize,
}

impl ScriptOptions {
    /// The options for this file, with the sync's default limits (100 ms, 64 MiB)
    /// and verify's bounds (256 MiB per value, 256 MiB of names per database).
    pub fn new(file: &str, code: Vec<u8>) -> ScriptOptions {
        ScriptOptions {
            file: file.to_owned(),
            code,
            timeout: Duration::from_millis(100),
            memory: 64 << 20,
            value_bytes: 256 << 20,
            names_bytes: 256 << 20,
        }
    }
}

/// How the sync writes key expiries (hash field expiries are not touched).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TtlRule {
    /// As on the source (plus [`CompareOptions::ttl_extension`]).
    #[default]
    Keep,
    /// Every key without an expiry: a kept key must be persistent on the target.
    Remove,
    /// An expiry later than this after the write is written as write time + this;
    /// a persistent key stays persistent.
    Cap(Duration),
    /// Every key expires this long after the sync last wrote it, whatever the
    /// source's expiry.
    Set(Duration),
}

impl TtlRule {
    /// The rule as the flag that asks for it (`keep` without one).
    pub fn flag(&self) -> String {
        match self {
            TtlRule::Keep => "keep".into(),
            TtlRule::Remove => "--ttl-remove".into(),
            TtlRule::Cap(d) => format!("--ttl-cap {}", show_duration(*d)),
            TtlRule::Set(d) => format!("--ttl-set {}", show_duration(*d)),
        }
    }
}

/// A duration in the shortest unit that writes it exactly (`7d`, `90s`, `1500ms`).
pub fn show_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms > 0 && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// The declarative rules of issue 17 as given (docs/transforms.md), plain text: the
/// flags of the same names (`--match`, ...) and the audit pairs' keys. Judged on
/// source names and source types.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RuleSpec {
    /// `--match`: Redis globs, whole-key; an include rule.
    pub match_globs: Vec<String>,
    /// `--exclude-match`: Redis globs; an exclude rule.
    pub exclude_match: Vec<String>,
    /// `--key-regex`: Rust regexes on bytes, unanchored; an include rule.
    pub key_regex: Vec<String>,
    /// `--exclude-key-regex`: an exclude rule.
    pub exclude_key_regex: Vec<String>,
    /// `--types`: keep only these (string, list, set, zset, hash, stream, module).
    pub types: Vec<String>,
    /// `--exclude-types`.
    pub exclude_types: Vec<String>,
    /// `--drop-hash-field [KEYGLOB=]FIELDGLOB`.
    pub drop_hash_field: Vec<String>,
    /// `--rename-regex FROM TO`, tried after the prefix renames.
    pub rename_regex: Vec<(String, String)>,
    /// `--route-db GLOB=DB`: source keys matching GLOB are read in target database
    /// DB (first match wins; one source database). [`crate::compare`] runs one view
    /// per target database and merges them.
    pub route_db: Vec<(String, u32)>,
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
            sample_window: 0,
            keys: None,
            target_only_keys: None,
            workers: 4,
            batch_keys: 1000,
            keys_per_second: None,
            rounds: 1,
            round_pause: Duration::from_secs(1),
            chunk_elements: 1000,
            dump_elements_max: 1024,
            max_listed: 100_000,
            long_string_bytes: 1 << 20,
            db_map: Vec::new(),
            renames: Vec::new(),
            ttl_rule: TtlRule::Keep,
            rules: RuleSpec::default(),
            script: None,
        }
    }
}
