//! The audit's TOML file: where the history goes, how long it is kept, and the pairs
//! to audit, each with its URLs, credentials, TLS, schedule, mode and the objects
//! options of verify (databases, mapping, prefixes, renames, TTL extension).
//!
//! Parsed by serde (unknown keys refused), then checked value by value; every error
//! names the file, the pair and the key. Messages quote only a key, never a value
//! (a URL may hold a password). Passwords come from the URL, a file
//! (`source_password_file`) or an environment variable named in the file
//! (`source_password_env`), and are filled in by `crate::connection` as for sync.
//! Relative paths (history, password and TLS files) are relative to the file's folder.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use lockstep_verify::rules::parse_duration;
use lockstep_verify::{CompareOptions, RuleSpec, Sample, TtlRule};
use serde::Deserialize;

use crate::args::ConnectionArgs;
use crate::audit::schedule::{Every, Schedule};

/// Keys per second on each side when a pair sets no limit: gentle on production.
pub const DEFAULT_KEYS_PER_SECOND: u64 = 5000;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    history: PathBuf,
    keep_days: Option<u64>,
    keep_runs: Option<u64>,
    status_addr: Option<String>,
    webhook_url: Option<String>,
    #[serde(default)]
    pair: Vec<PairFile>,
}

/// One `[[pair]]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PairFile {
    name: String,
    source: String,
    target: String,
    source_password_file: Option<PathBuf>,
    target_password_file: Option<PathBuf>,
    source_password_env: Option<String>,
    target_password_env: Option<String>,
    source_tls_ca_file: Option<PathBuf>,
    source_tls_cert_file: Option<PathBuf>,
    source_tls_key_file: Option<PathBuf>,
    target_tls_ca_file: Option<PathBuf>,
    target_tls_cert_file: Option<PathBuf>,
    target_tls_key_file: Option<PathBuf>,
    interval_secs: Option<u64>,
    cron: Option<String>,
    #[serde(default)]
    jitter_secs: u64,
    #[serde(default = "full")]
    mode: String,
    sample_rate: Option<f64>,
    sample_count: Option<u64>,
    #[serde(default)]
    rotate_sample: bool,
    #[serde(default = "one")]
    rounds: u32,
    #[serde(default = "thousand")]
    round_pause_ms: u64,
    keys_per_second: Option<u64>,
    #[serde(default)]
    dbs: Vec<u32>,
    #[serde(default)]
    prefix: Vec<String>,
    #[serde(default)]
    exclude_prefix: Vec<String>,
    #[serde(default)]
    map_db: Vec<String>,
    #[serde(default)]
    rename_prefix: Vec<String>,
    #[serde(default)]
    extend_ttl: u64,
    #[serde(default, rename = "match")]
    match_globs: Vec<String>,
    #[serde(default)]
    exclude_match: Vec<String>,
    #[serde(default)]
    key_regex: Vec<String>,
    #[serde(default)]
    exclude_key_regex: Vec<String>,
    #[serde(default)]
    types: Vec<String>,
    #[serde(default)]
    exclude_types: Vec<String>,
    #[serde(default)]
    ttl_remove: bool,
    ttl_cap: Option<String>,
    ttl_set: Option<String>,
    #[serde(default)]
    drop_hash_field: Vec<String>,
    #[serde(default)]
    rename_regex: Vec<(String, String)>,
    /// `route_db = ["session:*=1"]`, as `--route-db`.
    #[serde(default)]
    route_db: Vec<String>,
    /// The sync's `--script` (a path relative to the configuration file).
    script: Option<PathBuf>,
    #[serde(default = "script_timeout")]
    script_timeout: u64,
    #[serde(default = "script_memory")]
    script_memory: u64,
    ttl_tolerance_ms: Option<u64>,
    workers: Option<usize>,
}

fn full() -> String {
    "full".to_owned()
}
fn one() -> u32 {
    1
}
fn thousand() -> u64 {
    1000
}
fn script_timeout() -> u64 {
    100
}
fn script_memory() -> u64 {
    64
}

/// The audit's configuration, checked.
#[derive(Debug)]
pub struct AuditConfig {
    pub history: PathBuf,
    pub retention: Retention,
    /// The daemon serves `/status` and `/metrics` here.
    pub status_addr: Option<std::net::SocketAddr>,
    /// Alerts on every change of a pair's verdict are POSTed here (`http://`).
    pub webhook_url: Option<String>,
    pub pairs: Vec<Pair>,
}

/// How much history is kept, per pair: runs older than `days`, and beyond the
/// newest `runs`, are deleted after each run. None: kept forever.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Retention {
    pub days: Option<u64>,
    pub runs: Option<u64>,
}

/// One pair to audit.
#[derive(Debug)]
pub struct Pair {
    pub name: String,
    pub source: String,
    pub target: String,
    /// Passwords (files, environment) and TLS, as for sync and verify.
    pub connection: ConnectionArgs,
    pub schedule: Schedule,
    /// A different window of the hash space per run ([`CompareOptions::sample_window`]).
    pub rotate_sample: bool,
    pub options: CompareOptions,
}

impl Pair {
    /// The mode as recorded in the history: "full" or "sample".
    pub fn mode(&self) -> &'static str {
        match self.options.sample {
            Sample::All => "full",
            _ => "sample",
        }
    }
}

/// Reads and checks the file at `path`.
pub fn load(path: &Path) -> anyhow::Result<AuditConfig> {
    let file = path.display();
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the audit config file {file}"))?;
    let raw: FileConfig = toml::from_str(&text).map_err(|e| {
        // The message only, never the offending line: it may hold a password.
        let line = e
            .span()
            .map(|span| text[..span.start.min(text.len())].lines().count().max(1));
        let at = line.map(|l| format!(" (line {l})")).unwrap_or_default();
        anyhow::anyhow!(
            "the audit config file {file}{at}: {} (see docs/audit.md)",
            e.message()
        )
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut pairs = Vec::new();
    for pair in raw.pair {
        let name = pair.name.clone();
        let checked = check_pair(pair, base)
            .map_err(|e| anyhow::anyhow!("the audit config file {file}: pair `{name}`: {e}"))?;
        anyhow::ensure!(
            !pairs.iter().any(|p: &Pair| p.name == checked.name),
            "the audit config file {file}: two pairs are named `{name}`"
        );
        pairs.push(checked);
    }
    anyhow::ensure!(
        !pairs.is_empty(),
        "the audit config file {file} has no [[pair]]: nothing to audit"
    );
    let positive = |value: Option<u64>, key: &str| match value {
        Some(0) => anyhow::bail!("the audit config file {file}: key `{key}` must be at least 1"),
        other => Ok(other),
    };
    let retention = Retention {
        days: positive(raw.keep_days, "keep_days")?,
        runs: positive(raw.keep_runs, "keep_runs")?,
    };
    let status_addr = raw
        .status_addr
        .as_deref()
        .map(crate::status::parse_addr)
        .transpose()
        .map_err(|_| {
            anyhow::anyhow!(
                "the audit config file {file}: key `status_addr` must be HOST:PORT or PORT"
            )
        })?;
    if let Some(url) = &raw.webhook_url {
        anyhow::ensure!(
            url.starts_with("http://"),
            "the audit config file {file}: key `webhook_url` must be an http:// URL (https is not supported yet)"
        );
    }
    Ok(AuditConfig {
        history: base.join(raw.history),
        retention,
        status_addr,
        webhook_url: raw.webhook_url,
        pairs,
    })
}

/// A pair's values checked and turned into the comparison's options.
fn check_pair(p: PairFile, base: &Path) -> anyhow::Result<Pair> {
    anyhow::ensure!(
        lockstep_sync::engine::validate_task_name(&p.name).is_ok(),
        "key `name`: 1 to 64 of A-Z a-z 0-9 _ . -"
    );
    let schedule = schedule(&p)?;
    let sample = sample(&p)?;
    anyhow::ensure!(
        (1..=100).contains(&p.rounds),
        "key `rounds` must be 1 to 100"
    );
    anyhow::ensure!(
        p.dbs.iter().all(|&db| db <= 255),
        "key `dbs`: database numbers are 0 to 255"
    );
    anyhow::ensure!(
        p.extend_ttl <= 315_360_000,
        "key `extend_ttl` must be 0 to 315360000 (10 years)"
    );
    let keys_per_second = p.keys_per_second.unwrap_or(DEFAULT_KEYS_PER_SECOND);
    anyhow::ensure!(
        keys_per_second >= 1,
        "key `keys_per_second` must be at least 1"
    );
    let workers = p.workers.unwrap_or(2);
    anyhow::ensure!((1..=64).contains(&workers), "key `workers` must be 1 to 64");
    let defaults = CompareOptions::default();
    let mut ignore = defaults.ignore_prefixes.clone();
    ignore.extend(p.exclude_prefix.iter().map(|s| s.as_bytes().to_vec()));
    let options = CompareOptions {
        dbs: p.dbs.clone(),
        ttl_tolerance: p
            .ttl_tolerance_ms
            .map_or(defaults.ttl_tolerance, Duration::from_millis),
        ttl_extension: Duration::from_secs(p.extend_ttl),
        ignore_prefixes: ignore,
        include_prefixes: p.prefix.iter().map(|s| s.as_bytes().to_vec()).collect(),
        sample,
        workers,
        keys_per_second: Some(keys_per_second),
        rounds: p.rounds,
        round_pause: Duration::from_millis(p.round_pause_ms),
        db_map: db_map(&p.map_db)?,
        renames: renames(&p.rename_prefix)?,
        ttl_rule: ttl_rule(&p)?,
        rules: RuleSpec {
            match_globs: p.match_globs.clone(),
            exclude_match: p.exclude_match.clone(),
            key_regex: p.key_regex.clone(),
            exclude_key_regex: p.exclude_key_regex.clone(),
            types: p.types.clone(),
            exclude_types: p.exclude_types.clone(),
            drop_hash_field: p.drop_hash_field.clone(),
            rename_regex: p.rename_regex.clone(),
            route_db: p
                .route_db
                .iter()
                .map(|r| {
                    crate::args::parse_route_db(r)
                        .map_err(|e| anyhow::anyhow!("key `route_db`: {e}"))
                })
                .collect::<anyhow::Result<_>>()?,
        },
        script: script(&p, base)?,
        ..defaults
    };
    lockstep_verify::rules::Rules::check(&options).map_err(|e| anyhow::anyhow!(as_keys(&e)))?;
    lockstep_verify::script::check_options(&options).map_err(|e| anyhow::anyhow!(as_keys(&e)))?;
    Ok(Pair {
        connection: connection(&p, base)?,
        name: p.name,
        source: p.source,
        target: p.target,
        schedule,
        rotate_sample: p.rotate_sample,
        options,
    })
}

/// `script = "rename.lua"` (relative to the configuration file), with
/// `script_timeout` (ms, 1 to 60000) and `script_memory` (MiB, 1 to 4096) as the
/// sync's flags of those names; the file is loaded now, so a syntax error is refused
/// with its line when the configuration is read.
fn script(p: &PairFile, base: &Path) -> anyhow::Result<Option<lockstep_verify::ScriptOptions>> {
    let Some(path) = &p.script else {
        return Ok(None);
    };
    anyhow::ensure!(
        (1..=60_000).contains(&p.script_timeout),
        "key `script_timeout` must be 1 to 60000 (milliseconds)"
    );
    anyhow::ensure!(
        (1..=4096).contains(&p.script_memory),
        "key `script_memory` must be 1 to 4096 (MiB)"
    );
    crate::verify::script_options(
        &base.join(path),
        p.script_timeout,
        p.script_memory,
        "key `script`",
    )
    .map(Some)
}

/// `ttl_remove = true`, `ttl_cap = "7d"`, `ttl_set = "1h"`: at most one.
fn ttl_rule(p: &PairFile) -> anyhow::Result<TtlRule> {
    let duration = |text: &Option<String>, key: &str| {
        text.as_deref()
            .map(|t| parse_duration(t).map_err(|e| anyhow::anyhow!("key `{key}`: {e}")))
            .transpose()
    };
    let (cap, set) = (
        duration(&p.ttl_cap, "ttl_cap")?,
        duration(&p.ttl_set, "ttl_set")?,
    );
    Ok(match (p.ttl_remove, cap, set) {
        (false, None, None) => TtlRule::Keep,
        (true, None, None) => TtlRule::Remove,
        (false, Some(cap), None) => TtlRule::Cap(cap),
        (false, None, Some(set)) => TtlRule::Set(set),
        _ => anyhow::bail!("keys `ttl_remove`, `ttl_cap` and `ttl_set`: give at most one"),
    })
}

/// A rule's error in a pair's terms: each flag named by its key.
fn as_keys(error: &str) -> String {
    const FLAGS: [&str; 12] = [
        "exclude-key-regex",
        "exclude-match",
        "exclude-types",
        "drop-hash-field",
        "rename-regex",
        "key-regex",
        "extend-ttl",
        "ttl-remove",
        "ttl-cap",
        "ttl-set",
        "match",
        "types",
    ];
    FLAGS.iter().fold(error.to_owned(), |text, flag| {
        text.replace(
            &format!("--{flag}"),
            &format!("key `{}`", flag.replace('-', "_")),
        )
    })
}

/// `map_db = ["3:0"]`: parsed as `--map-db` is, checked as verify checks it. The
/// message names the key, not the value.
fn db_map(entries: &[String]) -> anyhow::Result<Vec<(u32, u32)>> {
    let map = entries
        .iter()
        .map(|entry| {
            crate::args::parse_db_mapping(entry).map_err(|_| {
                anyhow::anyhow!(
                    "key `map_db`: use \"SRC:DST\" entries with database numbers 0 to 255, e.g. [\"3:0\"]"
                )
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    crate::verify::db_map(&map, "key `map_db`")
}

/// `rename_prefix = ["user:=u:"]`: parsed as `--rename-prefix` is, and refused
/// unless one-to-one, as the sync does.
fn renames(entries: &[String]) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let rules = entries
        .iter()
        .map(|entry| {
            crate::args::parse_rename_prefix(entry).map_err(|_| {
                anyhow::anyhow!("key `rename_prefix`: use \"OLD=NEW\" entries, e.g. [\"user:=u:\"]")
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    crate::verify::renames(&rules, "key `rename_prefix`")
}

fn schedule(p: &PairFile) -> anyhow::Result<Schedule> {
    let jitter = Duration::from_secs(p.jitter_secs);
    match (p.interval_secs, &p.cron) {
        (Some(0), None) => anyhow::bail!("key `interval_secs` must be at least 1"),
        (Some(secs), None) => Ok(Schedule::new(
            Every::Interval(Duration::from_secs(secs)),
            jitter,
        )),
        (None, Some(expression)) => {
            let every = Every::cron(expression).map_err(|e| anyhow::anyhow!("key `cron`: {e}"))?;
            Ok(Schedule::new(every, jitter))
        }
        (Some(_), Some(_)) => anyhow::bail!("keys `interval_secs` and `cron`: give one, not both"),
        (None, None) => anyhow::bail!("no schedule: give `interval_secs` or `cron`"),
    }
}

fn sample(p: &PairFile) -> anyhow::Result<Sample> {
    match (p.mode.as_str(), p.sample_rate, p.sample_count) {
        ("full", None, None) => {
            anyhow::ensure!(
                !p.rotate_sample,
                "key `rotate_sample` needs mode = \"sample\""
            );
            Ok(Sample::All)
        }
        ("full", _, _) => {
            anyhow::bail!("keys `sample_rate` and `sample_count` need mode = \"sample\"")
        }
        ("sample", Some(rate), None) if rate > 0.0 && rate <= 1.0 => Ok(Sample::Rate(rate)),
        ("sample", Some(_), None) => {
            anyhow::bail!("key `sample_rate` must be above 0 and at most 1")
        }
        ("sample", None, Some(0)) => anyhow::bail!("key `sample_count` must be at least 1"),
        ("sample", None, Some(count)) => Ok(Sample::Count(count)),
        ("sample", _, _) => {
            anyhow::bail!("mode = \"sample\" needs `sample_rate` or `sample_count` (one)")
        }
        _ => anyhow::bail!("key `mode` must be \"full\" or \"sample\""),
    }
}

/// The pair's credentials and TLS as the shared connection arguments, so its URLs are
/// read by the same parser and its passwords filled by the same rules as sync's.
fn connection(p: &PairFile, base: &Path) -> anyhow::Result<ConnectionArgs> {
    let env = |name: &Option<String>, key: &str| -> anyhow::Result<Option<String>> {
        match name {
            None => Ok(None),
            Some(var) => std::env::var(var).map(Some).map_err(|_| {
                anyhow::anyhow!("key `{key}`: the environment variable {var} is not set")
            }),
        }
    };
    let path = |file: &Option<PathBuf>| file.as_ref().map(|f| base.join(f));
    Ok(ConnectionArgs {
        source_password_file: path(&p.source_password_file),
        target_password_file: path(&p.target_password_file),
        source_password: env(&p.source_password_env, "source_password_env")?,
        target_password: env(&p.target_password_env, "target_password_env")?,
        source_tls_ca_file: path(&p.source_tls_ca_file),
        source_tls_cert_file: path(&p.source_tls_cert_file),
        source_tls_key_file: path(&p.source_tls_key_file),
        source_tls_skip_verify_hostname: false,
        target_tls_ca_file: path(&p.target_tls_ca_file),
        target_tls_cert_file: path(&p.target_tls_cert_file),
        target_tls_key_file: path(&p.target_tls_key_file),
        target_tls_skip_verify_hostname: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> anyhow::Result<AuditConfig> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("audits.toml");
        std::fs::write(&path, text)?;
        load(&path)
    }

    const PAIR: &str = "[[pair]]\nname = \"orders\"\nsource = \"redis://s:1\"\n\
                        target = \"redis://:hunter2@t:1\"\ninterval_secs = 60\n";

    #[test]
    fn a_minimal_file_gets_gentle_defaults() {
        let config =
            load_text(&format!("history = \"h.db\"\nkeep_runs = 5\n{PAIR}")).expect("parses");
        let pair = &config.pairs[0];
        assert_eq!(pair.options.keys_per_second, Some(DEFAULT_KEYS_PER_SECOND));
        assert_eq!(pair.options.sample, Sample::All);
        assert_eq!(pair.mode(), "full");
        assert!(config.history.ends_with("h.db") && config.history.is_absolute());
        assert_eq!(
            config.retention,
            Retention {
                days: None,
                runs: Some(5)
            }
        );
    }

    #[test]
    fn errors_name_the_file_the_pair_and_the_key_never_a_value() {
        let cases = [
            (
                format!("history = \"h\"\n{PAIR}sampel_rate = 0.1\n"),
                "sampel_rate",
            ),
            (
                format!("history = \"h\"\n{PAIR}mode = \"sample\"\nsample_rate = 3.0\n"),
                "`sample_rate`",
            ),
            (
                format!("history = \"h\"\n{PAIR}cron = \"0 * * * *\"\n"),
                "`cron`",
            ),
            (format!("history = \"h\"\n{PAIR}rounds = 0\n"), "`rounds`"),
            (
                format!("history = \"h\"\n{PAIR}mode = \"quick\"\n"),
                "`mode`",
            ),
            (
                format!("history = \"h\"\nkeep_days = 0\n{PAIR}"),
                "`keep_days`",
            ),
            (
                PAIR.replace("interval_secs = 60", "cron = \"61 * * * *\""),
                "history",
            ),
        ];
        for (text, key) in cases {
            let err = format!("{:#}", load_text(&text).expect_err(key));
            assert!(
                err.contains(key) && err.contains("audits.toml"),
                "{key}: {err}"
            );
            assert!(!err.contains("hunter2"), "{err}");
        }
        let cron = format!(
            "history = \"h\"\n{}",
            PAIR.replace("interval_secs = 60", "cron = \"61 * * * *\"")
        );
        let err = format!("{:#}", load_text(&cron).expect_err("bad cron"));
        assert!(
            err.contains("pair `orders`") && err.contains("`cron`"),
            "{err}"
        );
    }

    #[test]
    fn a_mapping_and_renames_are_the_sync_s_and_checked_as_it_does() {
        let config = load_text(&format!(
            "history = \"h\"\n{PAIR}map_db = [\"3:0\"]\nrename_prefix = [\"user:=u:\"]\n"
        ))
        .expect("parses");
        let options = &config.pairs[0].options;
        assert_eq!(options.db_map, vec![(3, 0)]);
        assert_eq!(options.renames, vec![(b"user:".to_vec(), b"u:".to_vec())]);
        for (bad, key, why) in [
            ("map_db = [\"3-0\"]", "`map_db`", "SRC:DST"),
            ("map_db = [\"3:0\", \"4:0\"]", "`map_db`", "both mapped"),
            ("rename_prefix = [\"user:\"]", "`rename_prefix`", "OLD=NEW"),
            (
                "rename_prefix = [\"a:=x:\", \"b:=x:y\"]",
                "`rename_prefix`",
                "overlap",
            ),
        ] {
            let err = format!(
                "{:#}",
                load_text(&format!("history = \"h\"\n{PAIR}{bad}\n")).expect_err(bad)
            );
            assert!(
                err.contains(key) && err.contains(why) && err.contains("pair `orders`"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn the_declarative_rules_are_the_sync_s_keys_checked_at_load() {
        let rules = "match = [\"user:*\"]\nexclude_match = [\"*:tmp\"]\n\
                     key_regex = [\"^o:\\\\d+$\"]\nexclude_key_regex = [\"x\"]\n\
                     types = [\"string\", \"hash\"]\nexclude_types = [\"stream\"]\n\
                     ttl_cap = \"7d\"\ndrop_hash_field = [\"ssn\", \"user:*=email*\"]\n\
                     rename_regex = [[\"^user:(\\\\d+)$\", \"u:$1\"]]\n";
        let config = load_text(&format!("history = \"h\"\n{PAIR}{rules}")).expect("parses");
        let options = &config.pairs[0].options;
        assert_eq!(options.rules.match_globs, vec!["user:*".to_owned()]);
        assert_eq!(options.rules.key_regex, vec![r"^o:\d+$".to_owned()]);
        assert_eq!(
            options.rules.types,
            vec!["string".to_owned(), "hash".to_owned()]
        );
        assert_eq!(
            options.rules.rename_regex,
            vec![(r"^user:(\d+)$".to_owned(), "u:$1".to_owned())]
        );
        assert_eq!(
            options.ttl_rule,
            TtlRule::Cap(Duration::from_secs(7 * 86_400))
        );
        for (bad, key, why) in [
            ("match = [\"a[\"]", "`match`", "never closed"),
            ("key_regex = [\"(\"]", "`key_regex`", "("),
            ("types = [\"blob\"]", "`types`", "not a type"),
            ("ttl_cap = \"7w\"", "`ttl_cap`", "unknown unit"),
            (
                "ttl_remove = true\nttl_set = \"1h\"",
                "`ttl_set`",
                "at most one",
            ),
            (
                "ttl_remove = true\nextend_ttl = 5",
                "`extend_ttl`",
                "nothing to extend",
            ),
            ("drop_hash_field = [\"k=\"]", "`drop_hash_field`", "empty"),
            (
                "rename_regex = [[\"a.\", \"b\"]]",
                "`rename_regex`",
                "outside a capture",
            ),
        ] {
            let err = format!(
                "{:#}",
                load_text(&format!("history = \"h\"\n{PAIR}{bad}\n")).expect_err(bad)
            );
            assert!(
                err.contains(key) && err.contains(why) && err.contains("pair `orders`"),
                "{bad}: {err}"
            );
        }
    }

    /// The ```toml block of docs/audit.md.
    fn documented_example() -> String {
        let doc = include_str!("../../../docs/audit.md");
        let start = doc.find("```toml\n").expect("an example block") + "```toml\n".len();
        let end = doc[start..].find("```").expect("the block ends") + start;
        doc[start..end].to_owned()
    }

    #[test]
    fn the_documented_example_parses_and_every_key_has_a_row() {
        std::env::set_var("SESSIONS_SOURCE_PASSWORD", "x");
        let dir = tempfile::tempdir().expect("dir");
        let example = documented_example().replace("/etc/lockstep/", "");
        std::fs::write(dir.path().join("target.pass"), "p\n").expect("write");
        let path = dir.path().join("audits.toml");
        std::fs::write(&path, &example).expect("write");
        let config = load(&path).expect("the example parses");
        assert_eq!(config.pairs.len(), 2);
        assert!(config.pairs[0].rotate_sample && config.pairs[0].mode() == "sample");
        // serde lists every known key when it meets an unknown one.
        let doc = include_str!("../../../docs/audit.md");
        for (text, table) in [
            ("nope = 1\n".to_owned(), "top level"),
            (format!("history = \"h\"\n{PAIR}nope = 1\n"), "pair"),
        ] {
            let err = format!("{:#}", load_text(&text).expect_err("unknown key"));
            let expected = err.split("expected one of").nth(1).expect(&err);
            for key in expected
                .split(',')
                .map(|k| k.trim().trim_matches(|c| c == '`' || c == ' '))
            {
                let key = key
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .trim_matches('`');
                assert!(
                    doc.contains(&format!("| `{key}` |")),
                    "docs/audit.md has no row for the {table} key `{key}`"
                );
            }
        }
    }
}
