//! Command-line arguments as typed values (parsing only, no I/O).
//!
//! How it fits: `main` parses the command line into these structs and hands each
//! subcommand its own; `config.rs` fills `SyncArgs` from a TOML file through the
//! same definitions, and the help goldens under `cli/tests/golden` pin their text.
//! It must never do I/O nor hold a password in a default or a help text.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Keeps a target Redis in lockstep with a source Redis, and proves that it does.
#[derive(Debug, Parser)]
#[command(name = "lockstep", version, about, long_about = None)]
pub struct Cli {
    /// Log lines as plain text or as one JSON object per line (for machines).
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

// Parsed once per process: the size of the sync variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Make the target a live copy of the source: a full copy, then the command stream,
    /// resuming from the checkpoint after any restart.
    Sync(SyncArgs),
    /// Precheck a source and target before a sync: connectivity and credentials,
    /// replication rights, repl-timeout, backlog size, eviction policy, free memory,
    /// versions, empty target databases. Exit 0 when nothing fails.
    Check(CheckArgs),
    /// Compare source and target key by key, value by value and TTL by TTL, in both
    /// directions, in every database holding keys on either side. Exit code 0:
    /// consistent over everything; 1: differences; 2: the check failed; 3: no
    /// difference in what was read, but not everything was (a sample, databases with
    /// keys outside --dbs, a database not readable, databases that could not be
    /// learned): the summary line and the JSON summary's `coverage` say what.
    Verify(VerifyArgs),
    /// Print the live status of a running `lockstep sync` (its --status-addr).
    Status(StatusArgs),
    /// Read RDB files.
    #[command(subcommand)]
    Rdb(RdbCommand),
    /// Run the main job on an embedded default: start two throwaway Redis servers,
    /// fill the source with every type, sync, verify, and print a report.
    Demo(DemoArgs),
    /// Run the chaos catalog: each consistency behaviour the DTS documentation states,
    /// as a fault on real throwaway servers, checked by verify. Exit 0 when all hold.
    Chaos(crate::chaos::ChaosArgs),
    /// Scheduled consistency audits of the pairs of a TOML file, recorded in an SQLite
    /// history (docs/audit.md): a daemon, or every pair once with --once (verify's
    /// exit codes, the worst of the pairs); `audit history` prints the trend.
    Audit(crate::audit::AuditArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Copy the snapshot and exit 0 when the target has acknowledged all of it.
    Full,
    /// Only the command stream, from the checkpoint or from the source's current offset.
    Incremental,
    /// The snapshot, then the command stream until stopped (Ctrl-C).
    #[value(name = "full+incremental")]
    FullAndIncremental,
}

/// How the source is read (`--source-mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SourceModeArg {
    /// As a replica (PSYNC); key by key, with a log line saying why, when the source
    /// refuses PSYNC and SYNC (a managed service).
    Auto,
    /// As a replica only: a source that refuses to replicate stops the task.
    Replica,
    /// Key by key: SCAN, DUMP and PTTL, then keyspace notifications.
    Scan,
}

/// What an AOF source's truncated last file does (`--truncated-tail`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TruncatedTailArg {
    /// Stop, naming the file and the byte offset, before anything is written.
    Error,
    /// Replay up to the last complete command; the log says how many bytes are ignored.
    Ok,
}

/// `--then-follow-fallback`: when the followed server cannot continue from the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FollowFallbackArg {
    /// Stop with an error naming the file's position (nothing written after the file).
    Stop,
    /// Clear the task's keys and copy the server in full, then follow it.
    FullCopy,
}

/// The options of `lockstep sync`. Every field is also a key of the `--config` TOML file
/// (the field name, which is the flag in snake_case): see `config.rs`. Adding an option
/// is adding one field here (and its line in docs/configuration.md; a test checks).
#[derive(Debug, clap::Args)]
pub struct SyncArgs {
    /// A TOML file of options: each key is a flag's name in snake_case (source, target,
    /// retry_minutes, ...). Flags and environment variables override the file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Source URL: redis[s]://[[user]:password@]host[:port]; any node of a Redis
    /// Cluster for a cluster (one replica link per shard); file:///PATH of an RDB
    /// file, plain or gzip-compressed, copied in mode full; or aof:///PATH of an
    /// append-only file or a Redis 7 appendonlydir, replayed in mode full
    /// (docs/consistency.md).
    #[arg(long, env = "LOCKSTEP_SOURCE", hide_env_values = true)]
    pub source: String,
    /// With an aof:// source: replay what was written up to this instant (unix
    /// seconds, or RFC 3339 such as 2026-12-03T18:00:00Z), stopping before the first
    /// #TS: annotation later than it (written with aof-timestamp-enabled yes).
    #[arg(long, value_name = "TIME", value_parser = lockstep_sync::source::aof::parse_instant)]
    pub until: Option<i64>,
    /// With an aof:// source: what a last file that ends inside a command does:
    /// `error` stops before writing anything; `ok` replays up to its last complete
    /// command, as Redis's aof-load-truncated.
    #[arg(long, value_enum, default_value = "error")]
    pub truncated_tail: TruncatedTailArg,
    /// A file source: keep the keys whose expiry has passed since the file was saved.
    /// The file is restored as of its save: each key alive then is written with the
    /// lifetime it had left then, counted from now (docs/consistency.md).
    #[arg(long)]
    pub keep_expired: bool,
    /// A file source: once the file is loaded, follow this server by PSYNC from the
    /// file's position (its repl-id and repl-offset), if its backlog still holds it.
    /// redis[s]://[[user]:password@]host[:port], with the --source-* credentials.
    #[arg(long, value_name = "URL")]
    pub then_follow: Option<String>,
    /// --then-follow: what to do when the server's backlog no longer holds the
    /// file's position: stop with an error, or copy the server in full.
    #[arg(long, value_enum, default_value = "stop")]
    pub then_follow_fallback: FollowFallbackArg,
    /// Target URL: redis[s]://[[user]:password@]host[:port]; any node of a Redis
    /// Cluster for a cluster (written by hash slot). Repeatable: one task per target,
    /// all running at once.
    #[arg(long, env = "LOCKSTEP_TARGET", hide_env_values = true, required = true)]
    pub target: Vec<String>,
    /// Directory of the checkpoints (where each target stands in the source's stream),
    /// one subdirectory per target.
    #[arg(long)]
    pub checkpoint_dir: PathBuf,
    #[arg(long, value_enum, default_value = "full+incremental")]
    pub mode: ModeArg,
    /// How the source is read: as a replica (PSYNC), or key by key (SCAN, DUMP, PTTL,
    /// then keyspace notifications: for a server that refuses to replicate, see
    /// docs/consistency.md, "Scan mode"); `auto` reads it as a replica unless it
    /// refuses PSYNC and SYNC.
    #[arg(long, value_enum, default_value = "auto")]
    pub source_mode: SourceModeArg,
    /// Seconds between two proofs of convergence of a scanned source: the keys read
    /// again since the last proof plus a sample of the rest verified on both sides
    /// ("converged at T: N keys re-verified, 0 differ" in the log and /status);
    /// 0: never.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub converge_every_secs: u64,
    /// Minutes to keep retrying when a connection fails (10 to 1440).
    #[arg(long, default_value_t = 720, value_parser = clap::value_parser!(u64).range(10..=1440))]
    pub retry_minutes: u64,
    /// Minutes to keep retrying when a side answers "not now" (LOADING, BUSY,
    /// TRYAGAIN, MASTERDOWN); 1 to 1440 and less than --retry-minutes.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1440))]
    pub other_retry_minutes: u64,
    /// For a Redis Cluster source: replicate each shard from one of its replicas
    /// instead of its primary (the primary then takes no snapshot for lockstep); the
    /// heartbeat is still written on the primary.
    #[arg(long)]
    pub read_from_replicas: bool,
    /// Do not write the LOCKSTEP_HEARTBEAT key on the source (for a read-only account;
    /// end-to-end lag is then not measured).
    #[arg(long)]
    pub no_heartbeat: bool,
    /// Seconds between two heartbeats (1 to 3600).
    #[arg(long, default_value_t = 1, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub heartbeat_interval_secs: u64,
    /// Seconds the source may send nothing (not even its PING every
    /// repl-ping-replica-period) before its link is presumed dead and replaced: in the
    /// handshake, while it prepares the snapshot, during the transfer and in the
    /// stream (1 to 3600; like Redis's repl-timeout).
    #[arg(long, default_value_t = 60, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub repl_timeout: u64,
    /// Seconds the target may leave commands unanswered (or a connection, a write
    /// unfinished) before its connection is presumed dead and the session restarts
    /// (1 to 3600).
    #[arg(long, default_value_t = 60, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub target_timeout: u64,
    /// Serve GET /status (JSON) and GET /metrics (Prometheus) on this address
    /// (HOST:PORT, or PORT alone for 127.0.0.1:PORT).
    #[arg(long, value_name = "HOST:PORT")]
    pub status_addr: Option<String>,
    /// Start without running the precheck (`lockstep check`) first.
    #[arg(long)]
    pub skip_precheck: bool,
    /// Conflict handling: `precheck` fails the precheck when a target database holds
    /// keys; `ignore` proceeds and source keys overwrite target keys.
    #[arg(long, value_enum, default_value = "precheck")]
    pub conflict: ConflictArg,
    #[command(flatten)]
    pub connection: ConnectionArgs,
    #[command(flatten)]
    pub task: TaskArgs,
}

/// The task's name, its objects (databases, keys, commands, TTL extension) and its
/// throttles: the engine's `SyncOptions::{task_name, filter, throttle}`.
#[derive(Debug, Default, clap::Args)]
pub struct TaskArgs {
    /// Name of the task: in the target's checkpoint key (LOCKSTEP_CHECKPOINT:<name>;
    /// "default" keeps LOCKSTEP_CHECKPOINT), the heartbeat key, logs and metrics.
    /// Tasks writing into one target need different names. 1 to 64 of A-Z a-z 0-9 _ . -
    #[arg(long, default_value = "default", value_parser = parse_task_name)]
    pub task_name: String,
    /// Source databases to synchronize (comma-separated, 0 to 255); all by default.
    #[arg(long, value_delimiter = ',', value_name = "DB,...", value_parser = clap::value_parser!(u32).range(0..=255))]
    pub dbs: Vec<u32>,
    /// Write source database SRC into target database DST (repeatable; 0 to 255
    /// each). Databases not mapped keep their number.
    #[arg(long, value_name = "SRC:DST", value_parser = parse_db_mapping)]
    pub map_db: Vec<(u32, u32)>,
    /// Write kept keys whose source name matches GLOB into target database DB
    /// instead (repeatable; the first matching route wins; split at the last `=`).
    /// Needs exactly one source database (--dbs N); not with a cluster target or
    /// --script (docs/transforms.md, "Database routes").
    #[arg(long, value_name = "GLOB=DB", value_parser = parse_route_db)]
    pub route_db: Vec<(String, u32)>,
    /// Synchronize only keys starting with this prefix (repeatable: any of them).
    #[arg(long, value_name = "PREFIX")]
    pub prefix: Vec<String>,
    /// Do not synchronize keys starting with this prefix (repeatable). Keys starting
    /// with LOCKSTEP_ are never written to the target.
    #[arg(long, value_name = "PREFIX")]
    pub exclude_prefix: Vec<String>,
    /// Write a key starting with OLD under NEW instead (repeatable; docs/transforms.md):
    /// `user:=u:` writes `user:42` as `u:42`; `=app1:` puts every key under `app1:`.
    /// Prefix rules (--prefix, --exclude-prefix) apply to the source's names. The
    /// rules must be one-to-one, or the task refuses to start and says why.
    #[arg(long, value_name = "OLD=NEW", value_parser = parse_rename_prefix)]
    pub rename_prefix: Vec<(String, String)>,
    /// Write a key the whole of which regex FROM matches as TO, with $N or ${N} for
    /// FROM's groups (repeatable; after --rename-prefix, first match wins):
    /// `--rename-regex '^user:(\d+)$' 'u:$1'`. FROM must be literals and groups only,
    /// and TO must use every group once (docs/transforms.md), so that the rule can
    /// be inverted; in a config file, an array of [FROM, TO] pairs.
    #[arg(long, num_args = 2, value_names = ["FROM", "TO"])]
    pub rename_regex: Vec<String>,
    /// Synchronize only keys matching this glob (Redis syntax: * ? [a-z] [^a] \x;
    /// repeatable). With --prefix and --key-regex: a key matching any of them.
    #[arg(long = "match", id = "match", value_name = "GLOB", value_parser = parse_glob)]
    pub key_match: Vec<String>,
    /// Do not synchronize keys matching this glob (repeatable).
    #[arg(long, value_name = "GLOB", value_parser = parse_glob)]
    pub exclude_match: Vec<String>,
    /// Synchronize only keys this regex finds a match in (Rust regex syntax on the
    /// key's bytes, not anchored: use ^...$ for the whole key; repeatable).
    #[arg(long, value_name = "REGEX", value_parser = parse_key_regex)]
    pub key_regex: Vec<String>,
    /// Do not synchronize keys this regex finds a match in (repeatable).
    #[arg(long, value_name = "REGEX", value_parser = parse_key_regex)]
    pub exclude_key_regex: Vec<String>,
    /// Synchronize only keys of these types (comma-separated: string, list, set,
    /// zset, hash, stream, module).
    #[arg(long, value_delimiter = ',', value_name = "TYPE,...", value_parser = parse_type_name)]
    pub types: Vec<String>,
    /// Do not synchronize keys of these types (comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "TYPE,...", value_parser = parse_type_name)]
    pub exclude_types: Vec<String>,
    /// Write every key without an expiry (a key that expires on the source still
    /// leaves the target: the source sends its DEL).
    #[arg(long)]
    pub ttl_remove: bool,
    /// No key expires later than this after lockstep writes it (e.g. 7d, 12h, 90s,
    /// 500ms; a number alone is seconds). Keys without an expiry keep none.
    #[arg(long, value_name = "DURATION", value_parser = parse_rule_duration)]
    pub ttl_cap: Option<String>,
    /// Every key expires this long after lockstep last wrote it, whatever its
    /// expiry on the source (e.g. 1h).
    #[arg(long, value_name = "DURATION", value_parser = parse_rule_duration)]
    pub ttl_set: Option<String>,
    /// Do not write hash fields matching FIELDGLOB, of hashes whose source name
    /// matches KEYGLOB (every hash without it); split at the first `=`; repeatable.
    #[arg(long, value_name = "[KEYGLOB=]FIELDGLOB", value_parser = parse_hash_field_rule)]
    pub drop_hash_field: Vec<String>,
    /// Transform what is written with this Lua script (docs/transforms.md, "Scripts"):
    /// it defines `function transform(db, argv)` and may set `keys = {"glob", ...}`.
    /// Sandboxed; an error stops the task. Not with the by-key rules (prefixes,
    /// globs, regexes, types, renames) or a cluster source or target (the task owns
    /// its target databases whole).
    #[arg(long, value_name = "FILE.lua")]
    pub script: Option<std::path::PathBuf>,
    /// Milliseconds one call of the script's transform may take (1 to 60000).
    #[arg(long, default_value_t = 100, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub script_timeout: u64,
    /// MiB the script's Lua state may use (1 to 4096).
    #[arg(long, default_value_t = 64, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub script_memory: u64,
    /// Apply PUBLISH and SPUBLISH to the target; by default they are dropped (they
    /// cannot be synchronized: subscribers of the source are not the target's).
    #[arg(long)]
    pub keep_publish: bool,
    /// Drop this command from the stream (repeatable; e.g. FLUSHALL).
    #[arg(long, value_name = "NAME")]
    pub drop_command: Vec<String>,
    /// Make every key expire this many seconds later on the target than on the
    /// source (full copy and stream: EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT, SET EX/PX,
    /// SETEX, GETEX, RESTORE). 0 to 315360000 (10 years).
    #[arg(long, default_value_t = 0, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(0..=315_360_000))]
    pub extend_ttl: u64,
    /// Full copy: at most this many keys per second written to the target.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub full_keys_per_sec: Option<u64>,
    /// Full copy: at most this many MB (10^6 bytes) per second read from the source
    /// and written to the target (decimals allowed).
    #[arg(long, value_name = "MB", value_parser = parse_mb_per_sec)]
    pub full_mb_per_sec: Option<f64>,
    /// Incremental phase: at most this many stream commands per second.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub incremental_commands_per_sec: Option<u64>,
    /// Incremental phase: at most this many MB (10^6 bytes) of commands per second.
    #[arg(long, value_name = "MB", value_parser = parse_mb_per_sec)]
    pub incremental_mb_per_sec: Option<f64>,
}

fn parse_task_name(text: &str) -> Result<String, String> {
    lockstep_sync::engine::validate_task_name(text)?;
    Ok(text.to_owned())
}

/// `SRC:DST`, both 0 to 255.
pub fn parse_db_mapping(text: &str) -> Result<(u32, u32), String> {
    let parsed = text
        .split_once(':')
        .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)));
    match parsed {
        Some((from, to)) if from <= 255 && to <= 255 => Ok((from, to)),
        _ => Err(format!(
            "{text:?}: use SRC:DST with database numbers 0 to 255, e.g. 0:5"
        )),
    }
}

/// `GLOB=DB`, split at the last `=` (the glob may hold one), DB 0 to 255.
pub fn parse_route_db(text: &str) -> Result<(String, u32), String> {
    let usage = || format!("{text:?}: use GLOB=DB with a database 0 to 255, e.g. 'session:*=1'");
    let (glob, db) = text.rsplit_once('=').ok_or_else(usage)?;
    let db: u32 = db
        .trim()
        .parse()
        .ok()
        .filter(|d| *d <= 255)
        .ok_or_else(usage)?;
    Ok((parse_glob(glob)?, db))
}

/// `OLD=NEW`, split at the first `=` (so OLD cannot hold one; NEW can).
pub fn parse_rename_prefix(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((old, new)) => Ok((old.to_string(), new.to_string())),
        None => Err(format!(
            "{text:?}: use OLD=NEW, e.g. user:=u: (an empty OLD renames every key)"
        )),
    }
}

/// A Redis glob (checked here, so a bad one is refused with the flag's name).
pub fn parse_glob(text: &str) -> Result<String, String> {
    lockstep_sync::rules::glob::Glob::new(text).map_err(|e| e.to_string())?;
    Ok(text.to_owned())
}

/// A Rust regex on key bytes.
pub fn parse_key_regex(text: &str) -> Result<String, String> {
    lockstep_sync::rules::key_match::KeyRegex::new(text)?;
    Ok(text.to_owned())
}

/// A type name (string, list, set, zset, hash, stream, module).
pub fn parse_type_name(text: &str) -> Result<String, String> {
    lockstep_sync::rules::types::parse_type(text)?;
    Ok(text.trim().to_ascii_lowercase())
}

/// `[KEYGLOB=]FIELDGLOB`.
pub fn parse_hash_field_rule(text: &str) -> Result<String, String> {
    lockstep_sync::rules::hash_fields::HashFieldDrops::parse(&[text.to_owned()])
        .map_err(|e| e.to_string())?;
    Ok(text.to_owned())
}

/// A duration for the TTL rules: `7d`, `12h`, `90s`, `500ms`, or seconds (the same
/// syntax for the sync, verify and audit pairs: verify's parser).
pub fn parse_rule_duration(text: &str) -> Result<String, String> {
    rule_duration(text)?;
    Ok(text.to_owned())
}

/// The duration of [`parse_rule_duration`]'s text, above 0 and at most 100 years.
pub fn rule_duration(text: &str) -> Result<std::time::Duration, String> {
    let duration = lockstep_verify::rules::parse_duration(text)?;
    if duration.is_zero() || duration > std::time::Duration::from_secs(100 * 365 * 86_400) {
        return Err(format!(
            "{:?}: a duration above 0 and at most 100 years",
            text.trim()
        ));
    }
    Ok(duration)
}

/// A positive number of MB per second (at most 100000).
fn parse_mb_per_sec(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(mb) if mb > 0.0 && mb <= 100_000.0 => Ok(mb),
        _ => Err(format!(
            "{text:?}: a number of MB per second, above 0 and at most 100000"
        )),
    }
}

/// How to authenticate and encrypt the connections, per side; shared by `sync` and
/// `check`. Passwords given here fill the password of a URL that has none, so they
/// never have to be typed on the command line.
#[derive(Debug, Default, clap::Args)]
pub struct ConnectionArgs {
    /// File whose first line is the source password.
    #[arg(long, value_name = "FILE")]
    pub source_password_file: Option<PathBuf>,
    /// File whose first line is the target password (for every target).
    #[arg(long, value_name = "FILE")]
    pub target_password_file: Option<PathBuf>,
    /// The source password (prefer the environment variable or the config file: a
    /// flag's value is visible to other users in the process list).
    #[arg(long, env = "LOCKSTEP_SOURCE_PASSWORD", hide_env_values = true)]
    pub source_password: Option<String>,
    /// The target password (prefer the environment variable or the config file).
    #[arg(long, env = "LOCKSTEP_TARGET_PASSWORD", hide_env_values = true)]
    pub target_password: Option<String>,
    /// rediss:// source: a PEM file of CA certificates to trust (besides the system's).
    #[arg(long, value_name = "FILE")]
    pub source_tls_ca_file: Option<PathBuf>,
    /// rediss:// source: a PEM client certificate (with --source-tls-key-file).
    #[arg(long, value_name = "FILE")]
    pub source_tls_cert_file: Option<PathBuf>,
    /// rediss:// source: the PEM private key of the client certificate.
    #[arg(long, value_name = "FILE")]
    pub source_tls_key_file: Option<PathBuf>,
    /// rediss:// source: accept a certificate for another host name (the chain is
    /// still verified).
    #[arg(long)]
    pub source_tls_skip_verify_hostname: bool,
    /// rediss:// target: a PEM file of CA certificates to trust (besides the system's).
    #[arg(long, value_name = "FILE")]
    pub target_tls_ca_file: Option<PathBuf>,
    /// rediss:// target: a PEM client certificate (with --target-tls-key-file).
    #[arg(long, value_name = "FILE")]
    pub target_tls_cert_file: Option<PathBuf>,
    /// rediss:// target: the PEM private key of the client certificate.
    #[arg(long, value_name = "FILE")]
    pub target_tls_key_file: Option<PathBuf>,
    /// rediss:// target: accept a certificate for another host name (the chain is
    /// still verified).
    #[arg(long)]
    pub target_tls_skip_verify_hostname: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum VerifyModeArg {
    /// Every key of both sides.
    Full,
    /// A deterministic sample chosen by key hash (the same keys in every run); needs
    /// --sample-rate or --sample-count.
    Sample,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Source URL: redis[s]://[[user]:password@]host[:port]; any node of a Redis Cluster
    /// for a cluster (read through its primaries).
    #[arg(long, env = "LOCKSTEP_SOURCE", hide_env_values = true)]
    pub source: String,
    /// Target URL, as for the source.
    #[arg(long, env = "LOCKSTEP_TARGET", hide_env_values = true)]
    pub target: String,
    /// Databases to compare (comma-separated); by default every database holding keys
    /// on either side (INFO keyspace of both, bounded by CONFIG GET databases; probed
    /// with SELECT when INFO is refused). Databases with keys left out of a list
    /// given here are named in the last line (not a gap: this is the asked scope).
    #[arg(long, value_delimiter = ',')]
    pub dbs: Vec<u32>,
    /// Largest difference in absolute expiry time, in milliseconds, that still counts
    /// as equal.
    #[arg(long, default_value_t = 2000)]
    pub ttl_tolerance_ms: u64,
    /// Compare only keys starting with this prefix (repeatable).
    #[arg(long)]
    pub prefix: Vec<String>,
    /// Ignore keys starting with this prefix (repeatable; LOCKSTEP_ is always ignored).
    #[arg(long)]
    pub exclude_prefix: Vec<String>,
    #[arg(long, value_enum, default_value = "full")]
    pub mode: VerifyModeArg,
    /// Fraction of keys to sample (0 < rate <= 1), with --mode sample.
    #[arg(long, conflicts_with = "sample_count")]
    pub sample_rate: Option<f64>,
    /// About this many keys to sample over the chosen databases, with --mode sample.
    #[arg(long)]
    pub sample_count: Option<u64>,
    /// Rounds: after the first, only differing keys are read again, after
    /// --round-pause-ms; only what differs in every round is reported.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rounds: u32,
    #[arg(long, default_value_t = 1000)]
    pub round_pause_ms: u64,
    /// Batches in flight at once (and connections per side).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub workers: u64,
    /// Keys scanned per second on each side, at most (a gentle production audit).
    #[arg(long)]
    pub keys_per_second: Option<u64>,
    /// Write every difference to this CSV file (db, key, kind, types, TTLs, hint).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Write a JSON summary to this file.
    #[arg(long)]
    pub summary: Option<PathBuf>,
    /// The sync ran with --extend-ttl SECONDS: expect every target expiry that much
    /// later than the source's (persistent keys stay persistent).
    #[arg(long, default_value_t = 0, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(0..=315_360_000))]
    pub extend_ttl: u64,
    /// Compare only the keys in this file, one per line, escaped as in the CSV report
    /// (`base64:` + base64 for a binary key), in each database of --dbs (by default
    /// each database holding keys on either side); a key only on the target is extra.
    #[arg(long, value_name = "FILE", conflicts_with = "recheck")]
    pub keys_from: Option<PathBuf>,
    /// Re-check only the keys of an earlier CSV report (--report), each in its
    /// database (restricted to --dbs when given).
    #[arg(long, value_name = "FILE")]
    pub recheck: Option<PathBuf>,
    /// Differences listed one by one in the report and the CSV; beyond, they are
    /// counted (by kind) and re-checked in later rounds, but not listed.
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    pub max_listed: usize,
    /// Strings longer than this are never read whole: they are compared in GETRANGE
    /// windows of this many bytes (memory stays bounded by the batches). 0: read every
    /// string whole with one MGET per batch (faster on small strings; a long string
    /// is then held whole).
    #[arg(long, default_value_t = 1 << 20, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(0..=(1 << 30)))]
    pub long_string_bytes: u64,
    /// The sync ran with --map-db SRC:DST: compare source database SRC with the
    /// target's DST (repeatable). --dbs and the report name source databases.
    #[arg(long, value_name = "SRC:DST", value_parser = parse_db_mapping)]
    pub map_db: Vec<(u32, u32)>,
    /// The sync ran with --rename-prefix OLD=NEW: compare source key `OLD rest` with
    /// the target's `NEW rest` (repeatable; one-to-one, as the sync requires).
    /// --prefix, --exclude-prefix, the sample and --keys-from take source names; an
    /// extra key is reported by its target name (and --recheck reads it so).
    #[arg(long, value_name = "OLD=NEW", value_parser = parse_rename_prefix)]
    pub rename_prefix: Vec<(String, String)>,
    /// The sync ran with --script FILE.lua: each source key the script touches is
    /// recreated as commands, run through the script (verify's own sandboxed Lua) and
    /// the result compared with the target (docs/transforms.md, "Verifying a scripted
    /// sync"). A key whose result verify cannot model is NOT VERIFIED; a script error
    /// stops verify.
    #[arg(long, value_name = "FILE.lua")]
    pub script: Option<PathBuf>,
    /// Milliseconds one call of the script's transform may take (1 to 60000), as for
    /// `sync`.
    #[arg(long, default_value_t = 100, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub script_timeout: u64,
    /// MiB the script's Lua state may use (1 to 4096), as for `sync`.
    #[arg(long, default_value_t = 64, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub script_memory: u64,
    /// The sync's declarative rules (docs/transforms.md), to verify a transformed sync.
    #[command(flatten)]
    pub rules: VerifyRuleArgs,
    /// Passwords from files or the environment, and TLS per side, as for `sync`.
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// The sync's declarative rules, given to `verify` as they were to the sync: which
/// keys are in scope, how their TTLs and hash fields were written, how they were
/// renamed (docs/transforms.md). Every rule judges source names and source types.
#[derive(Debug, Default, clap::Args)]
pub struct VerifyRuleArgs {
    /// The sync ran with --route-db GLOB=DB: compare source keys matching GLOB with
    /// the target's database DB (repeatable, first match wins, as the sync does;
    /// needs one source database, --dbs N).
    #[arg(long, value_name = "GLOB=DB", value_parser = parse_route_db)]
    pub route_db: Vec<(String, u32)>,
    /// Compare only keys matching this Redis glob (whole key; repeatable; an
    /// include rule, like --prefix and --key-regex: a key matching any is kept).
    #[arg(long = "match", value_name = "GLOB")]
    pub match_globs: Vec<String>,
    /// Ignore keys matching this Redis glob (repeatable).
    #[arg(long, value_name = "GLOB")]
    pub exclude_match: Vec<String>,
    /// Compare only keys this Rust regex finds (unanchored: `^user:\d+$` anchors;
    /// repeatable; an include rule).
    #[arg(long, value_name = "RE")]
    pub key_regex: Vec<String>,
    /// Ignore keys this Rust regex finds (repeatable).
    #[arg(long, value_name = "RE")]
    pub exclude_key_regex: Vec<String>,
    /// Compare only keys of these source types (string, list, set, zset, hash,
    /// stream, module; comma-separated, repeatable); a key of another type is neither
    /// missing nor extra.
    #[arg(long, value_delimiter = ',', value_name = "T,...")]
    pub types: Vec<String>,
    /// Ignore keys of these types (comma-separated, repeatable).
    #[arg(long, value_delimiter = ',', value_name = "T,...")]
    pub exclude_types: Vec<String>,
    /// The sync ran with --ttl-remove: every compared key must be persistent on the
    /// target.
    #[arg(long, conflicts_with_all = ["ttl_cap", "ttl_set"])]
    pub ttl_remove: bool,
    /// The sync ran with --ttl-cap DUR (seconds, or 500ms, 90s, 5m, 2h, 7d): a
    /// persistent key stays persistent; else the target expiry is at most the
    /// source's and DUR from now (plus the tolerance).
    #[arg(long, value_name = "DUR", value_parser = rule_duration, conflicts_with = "ttl_set")]
    pub ttl_cap: Option<std::time::Duration>,
    /// The sync ran with --ttl-set DUR: every compared key expires on the target
    /// within DUR from now (plus the tolerance), whatever the source's expiry.
    #[arg(long, value_name = "DUR", value_parser = rule_duration)]
    pub ttl_set: Option<std::time::Duration>,
    /// The sync ran with --drop-hash-field [KEYGLOB=]FIELDGLOB: source hashes are
    /// compared without those fields, and one left with none must be absent on the
    /// target (repeatable; split at the first `=`).
    #[arg(long, value_name = "[KEYGLOB=]FIELDGLOB")]
    pub drop_hash_field: Vec<String>,
    /// The sync ran with --rename-regex FROM TO: a source key the whole of which FROM
    /// matches is compared with the target key TO writes ($1, ${1}); tried after
    /// --rename-prefix, first match wins (repeatable).
    #[arg(long, num_args = 2, value_names = ["FROM", "TO"])]
    pub rename_regex: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Redis version of the throwaway source server (6.2, 7.0 or 8.2).
    #[arg(long, default_value = "7.0")]
    pub source_version: String,
    /// Redis version of the throwaway target server (6.2, 7.0 or 8.2).
    #[arg(long, default_value = "8.2")]
    pub target_version: String,
    /// Keys per type family in the generated data set.
    #[arg(long, default_value_t = 200)]
    pub scale: usize,
    /// Seed of the generated data set and workload (the same seed, the same data).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Seconds of live writes to the source while the sync runs.
    #[arg(long, default_value_t = 3)]
    pub churn_seconds: u64,
}

#[derive(Debug, Subcommand)]
pub enum RdbCommand {
    /// Print an RDB file: one JSON object per key, or a summary per type and database
    /// with the biggest keys.
    Inspect(RdbInspectArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RdbFormat {
    /// One JSON object per key (db, key, type, encoding, expire, value); see docs/rdb-json.md.
    Jsonl,
    /// Keys and bytes per type and database, and the 20 biggest keys.
    Summary,
}

#[derive(Debug, clap::Args)]
pub struct RdbInspectArgs {
    /// The RDB file.
    pub file: PathBuf,
    #[arg(long, value_enum, default_value = "jsonl")]
    pub format: RdbFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ConflictArg {
    /// Fail the precheck when a target database already holds keys.
    Precheck,
    /// Proceed; source keys overwrite target keys of the same name.
    Ignore,
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Source URL.
    #[arg(long, env = "LOCKSTEP_SOURCE", hide_env_values = true)]
    pub source: String,
    /// Target URL.
    #[arg(long, env = "LOCKSTEP_TARGET", hide_env_values = true)]
    pub target: String,
    /// Target databases the sync will write (comma-separated); all 16 by default.
    #[arg(long, value_delimiter = ',')]
    pub dbs: Vec<u32>,
    #[arg(long, value_enum, default_value = "precheck")]
    pub conflict: ConflictArg,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The status address of the sync: http://HOST:PORT, HOST:PORT or PORT (127.0.0.1).
    pub url: String,
    /// Print the JSON document as served instead of a summary for a person.
    #[arg(long)]
    pub json: bool,
}
