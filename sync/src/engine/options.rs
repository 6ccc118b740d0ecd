//! What a sync task is told: [`SyncOptions`] (both endpoints, the mode, the
//! checkpoint directory, every knob of link, writer, filter, throttle and load), the
//! task's name and the names of the keys it owns on either side.
//!
//! Plain data and pure helpers: the engine, the cluster-source expansion and the CLI
//! read these options; this module must never do I/O nor import the modules that
//! consume it (the engine's session, the cluster source).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::apply::ApplyOptions;
use crate::endpoint::Endpoint;
use crate::filter::Filter;
use crate::load::LoadOptions;
use crate::script::Script;
use crate::source::aof::AofSpec;
use crate::source::replica::LinkOptions;
use crate::source::scan::ScanStats;
use crate::throttle::ThrottleOptions;

/// What the task does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Copy the snapshot, then exit when the target has acknowledged all of it.
    Full,
    /// Only the command stream, from the checkpoint or from the source's current offset.
    Incremental,
    /// The snapshot, then the command stream until stopped.
    FullAndIncremental,
}

/// Everything a sync task needs.
#[derive(Clone, Debug)]
pub struct SyncOptions {
    pub source: Endpoint,
    pub target: Endpoint,
    pub checkpoint_dir: PathBuf,
    pub mode: Mode,
    pub link: LinkOptions,
    pub apply: ApplyOptions,
    /// How often the applied position is persisted.
    pub checkpoint_interval: Duration,
    /// How long connection failures are retried before the task gives up.
    pub retry_window: Duration,
    /// How long other passing failures (a loading or busy target) are retried.
    pub other_retry_window: Duration,
    /// Which databases, keys and commands are written, where, and TTL extension
    /// (see [`crate::filter`]).
    pub filter: Filter,
    /// The Lua transform (`--script`, [`crate::script`]), run after the filter on
    /// the stream and on the full copy's keys it touches; loaded (and refused) before
    /// the task starts.
    pub script: Option<Arc<Script>>,
    /// The task's name: the target's checkpoint key and the source's heartbeat key
    /// carry it, so tasks writing into one target (fan-in from several sources into
    /// different databases) keep separate positions. `default` keeps the key names of
    /// lockstep before task names (`LOCKSTEP_CHECKPOINT`), so existing targets resume.
    /// 1 to 64 characters of `A-Z a-z 0-9 _ . -` ([`validate_task_name`]).
    pub task_name: String,
    /// Keys/s and bytes/s of the full copy, commands/s and bytes/s of the stream
    /// (see [`crate::throttle`]).
    pub throttle: ThrottleOptions,
    /// How the full copy writes keys (big keys in batches, the TTL guard).
    pub load: LoadOptions,
    /// Write a heartbeat key (`LOCKSTEP_HEARTBEAT:<port>`, SETEX) on the source every
    /// `heartbeat_interval` to measure end-to-end latency. Off for a read-only account.
    pub heartbeat: bool,
    /// How often the heartbeat is written (whole seconds: it rides the ACK tick);
    /// its key lives three intervals, at least 60 s.
    pub heartbeat_interval: Duration,
    /// Set for one shard of a cluster source (see [`crate::source::cluster`]): before
    /// each session the task asks the cluster which primary serves its slots now.
    pub source_cluster: Option<SourceCluster>,
    /// Where the heartbeat is written when not on `source` (a shard read from its
    /// replica writes it on its primary).
    pub heartbeat_at: Option<Endpoint>,
    /// Read the snapshot from this RDB file (plain or gzip) instead of `source`
    /// ([`crate::source::rdb_file`]): mode `Full`, no TTL guard (no stream can
    /// extend an expiry), keys already expired dropped as a server drops them on
    /// load. `source` is then only a name, unless `then_follow` is set: then it is
    /// the server followed after the file, and the load is a replica's (guard on,
    /// expired keys kept for the stream to delete).
    pub source_file: Option<PathBuf>,
    /// How the source is read: as a replica (PSYNC), key by key
    /// ([`crate::source::scan`]), or as a replica unless it refuses to replicate.
    pub source_mode: SourceMode,
    /// What the scan source counts (shared by every session of the task, read by
    /// status and metrics) and its limit on changed keys waiting.
    pub scan_stats: Arc<ScanStats>,
    pub scan_dirty_keys_max: usize,
    /// Replay this AOF instead of reading `source` ([`crate::source::aof`]): mode
    /// `Full`, its stream applied to its end; like a file, no TTL guard and no
    /// heartbeat. `source` is then only a name.
    pub source_aof: Option<AofSpec>,
    /// With `source_file`: once the file is loaded, follow `source` by PSYNC from the
    /// file's position (`--then-follow`; see [`ThenFollow`]).
    pub then_follow: Option<ThenFollow>,
}

/// `--then-follow`: the file source's load is recorded at the file's replication
/// position (a checkpoint like a full resync's), and the task then runs as a
/// `full+incremental` task of `source` from that checkpoint (which, without
/// `full_copy_if_lost`, stops rather than copy).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ThenFollow {
    /// When `source` cannot continue from the file's position (`+FULLRESYNC`): copy
    /// it in full and follow it (true), or stop with an error (false).
    pub full_copy_if_lost: bool,
    /// The file's position; read from the file by the engine when the task starts.
    pub from: Option<crate::source::rdb_file::FilePosition>,
}

/// How the source is read (`--source-mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceMode {
    /// As a replica, and key by key (with a log line saying why) when the source
    /// refuses PSYNC and SYNC.
    Auto,
    /// As a replica only: a refusal stops the task.
    Replica,
    /// Key by key: SCAN, DUMP and PTTL, then keyspace notifications.
    Scan,
}

/// Changed keys a scan source keeps waiting to be read before it scans again.
pub const SCAN_DIRTY_KEYS_MAX: usize = 1_000_000;

/// The name of a task that was given none.
pub const DEFAULT_TASK_NAME: &str = "default";

/// Checks a task name: 1 to 64 characters of `A-Z a-z 0-9 _ . -` (it becomes part of
/// key names and of a directory name).
pub fn validate_task_name(name: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    if name.is_empty() || name.len() > 64 || !name.chars().all(allowed) {
        return Err(format!(
            "task name {name:?}: use 1 to 64 characters of A-Z, a-z, 0-9, '_', '.', '-'"
        ));
    }
    Ok(())
}

impl SyncOptions {
    /// Options of a plain (non-replica) connection to the source: the writer's
    /// timeouts with the source's TLS settings.
    pub(crate) fn source_connection(&self) -> ApplyOptions {
        ApplyOptions {
            tls: self.link.tls.clone(),
            ..self.apply.clone()
        }
    }

    /// The target key holding this task's exact position (see [`TARGET_CHECKPOINT_KEY`]).
    pub fn checkpoint_key(&self) -> Vec<u8> {
        self.task_key(TARGET_CHECKPOINT_KEY)
    }

    /// `prefix` for the default task, `prefix:<task name>` for a named one.
    pub(crate) fn task_key(&self, prefix: &[u8]) -> Vec<u8> {
        let mut key = prefix.to_vec();
        if self.task_name != DEFAULT_TASK_NAME {
            key.push(b':');
            key.extend_from_slice(self.task_name.as_bytes());
        }
        key
    }

    pub fn new(
        source: Endpoint,
        target: Endpoint,
        checkpoint_dir: impl Into<PathBuf>,
    ) -> SyncOptions {
        SyncOptions {
            source,
            target,
            checkpoint_dir: checkpoint_dir.into(),
            mode: Mode::FullAndIncremental,
            link: LinkOptions::default(),
            apply: ApplyOptions::default(),
            checkpoint_interval: Duration::from_millis(200),
            retry_window: Duration::from_secs(720 * 60),
            other_retry_window: Duration::from_secs(10 * 60),
            filter: Filter::default(),
            script: None,
            task_name: DEFAULT_TASK_NAME.to_owned(),
            throttle: ThrottleOptions::default(),
            load: LoadOptions::default(),
            heartbeat: true,
            heartbeat_interval: Duration::from_secs(1),
            source_cluster: None,
            heartbeat_at: None,
            source_file: None,
            source_mode: SourceMode::Auto,
            scan_stats: Arc::default(),
            scan_dirty_keys_max: SCAN_DIRTY_KEYS_MAX,
            source_aof: None,
            then_follow: None,
        }
    }
}

/// Name of the key (of the default task; a named one appends `:<task name>`), in db
/// 0 of the target, that holds the exact stream position the
/// target has applied: `<replid> <offset> <db>`. It is written in the same MULTI/EXEC
/// as the commands it accounts for, so it can never disagree with the data, whatever
/// is killed when.
pub const TARGET_CHECKPOINT_KEY: &[u8] = b"LOCKSTEP_CHECKPOINT";

/// Name of the per-slot hashes (`<name>[:<task name>]:{<n>}`) of a cluster target
/// that record which keys were copied from the source up to which offset (see
/// [`crate::cross_slot`]).
pub const SKIP_KEY: &[u8] = b"LOCKSTEP_SKIP";

/// Where a shard task finds its cluster and which slots are its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceCluster {
    /// Nodes to ask for the slot map (any one that answers will do).
    pub seeds: Vec<Endpoint>,
    /// The shard's slot ranges at discovery (inclusive).
    pub slots: Vec<(u16, u16)>,
    /// Replicate from one of the shard's replicas instead of its primary (the DTS
    /// "use slave node" option: the primary serves no full-sync snapshot); the
    /// heartbeat is still written on the primary. A shard without a replica is read
    /// from its primary, with a warning.
    pub from_replica: bool,
}
