//! The sync engine: drives a replica link, the RDB parser and the target writer so
//! that the target becomes and stays a copy of the source, checkpointing exactly how
//! far the target has got.
//!
//! One *session* is one connection to each side:
//! 1. connect to the source as a replica and PSYNC from the checkpoint (or `? -1`);
//! 2. on `+FULLRESYNC`: stream the RDB from the socket through the parser (on a
//!    blocking thread, fed by bounded channels) into the target, key by key, as
//!    RESTORE payloads: the raw object bytes when the target's RDB version reads
//!    them, re-encoded for the target's version otherwise;
//! 3. then apply the command stream, MULTI/EXEC blocks whole, SELECT tracked, PING and
//!    REPLCONF consumed, the heartbeat key filtered out; a checkpoint is stored every
//!    `checkpoint_interval` at the last position the target has answered;
//! 4. `REPLCONF ACK` with the applied offset every second, also during the full copy.
//!    The same tick ends the session when the source has sent nothing for
//!    `link.read_timeout` (`--repl-timeout`; a flow dropped by a firewall stays open
//!    and silent) or the target has left commands unanswered for
//!    `apply.reply_timeout` (`--target-timeout`); the lag published is measured from
//!    the last heartbeat seen, so it grows while nothing arrives
//!    ([`Progress::lag_ms`]).
//!
//! A transient failure (a cut connection, a restarting server) ends the session; the
//! next one resumes from the checkpoint, within the retry window. A permanent one
//! (a refused password, a command the target rejects) ends the task with an error.

use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use crate::apply::{ApplyError, ApplyOptions, ClientIdentity, Position, TargetWriter};
use crate::checkpoint::{Checkpoint, CheckpointError, CheckpointStore};
use crate::cluster_source::SourceCluster;
use crate::conn::Conn;
use crate::cross_slot::SourceCopier;
use crate::endpoint::Endpoint;
use crate::filter::{Filter, FilterError, Verdict};
use crate::link::{LinkError, LinkOptions, PsyncReply, ReplicaLink};
use crate::load::{KeyLoader, LoadError, LoadOptions};
use crate::rdb::{Event, Limits, ParseOptions, RdbError, RdbParser};
use crate::resp::{Command, Entry, Frame};
use crate::throttle::ThrottleOptions;
use crate::ttl_guard::{PendingSettle, Settled, Settler, TTL_GUARD_KEY};

/// Keys whose name starts with this are lockstep's heartbeat keys on the source;
/// they are never written to the target.
pub const HEARTBEAT_PREFIX: &[u8] = b"LOCKSTEP_HEARTBEAT";

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
    /// Set for one shard of a cluster source (see [`crate::cluster_source`]): before
    /// each session the task asks the cluster which primary serves its slots now.
    pub source_cluster: Option<SourceCluster>,
    /// Where the heartbeat is written when not on `source` (a shard read from its
    /// replica writes it on its primary).
    pub heartbeat_at: Option<Endpoint>,
}

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
            task_name: DEFAULT_TASK_NAME.to_owned(),
            throttle: ThrottleOptions::default(),
            load: LoadOptions::default(),
            heartbeat: true,
            heartbeat_interval: Duration::from_secs(1),
            source_cluster: None,
            heartbeat_at: None,
        }
    }
}

/// Why the task stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("the RDB from the source is unreadable: {0}")]
    Rdb(#[from] RdbError),
    #[error(transparent)]
    Load(LoadError),
    #[error("gave up after retrying for {window:?}; last error: {last}")]
    GaveUp {
        window: Duration,
        last: Box<SyncError>,
    },
    #[error(transparent)]
    Filter(#[from] FilterError),
    #[error("invalid option: {0}")]
    Options(String),
    /// The source cluster's slot map could not be read or is in flux (retried).
    #[error("source cluster: {0}")]
    SourceTopology(String),
    /// This shard's slots moved (a reshard of the source cluster): its task ends, and
    /// the caller expands the task again into the new layout's shards (the `sync`
    /// command does so by itself).
    #[error("{0}")]
    Resharded(String),
    #[error("internal: {0}")]
    Internal(String),
    /// The task was asked to stop (not an error to the caller).
    #[error("stopped")]
    Stopped,
}

impl From<LoadError> for SyncError {
    fn from(err: LoadError) -> SyncError {
        match err {
            // A connection fault while loading is a connection fault.
            LoadError::Apply(apply) => SyncError::Apply(apply),
            other => SyncError::Load(other),
        }
    }
}

impl SyncError {
    /// Whether the task retries after this error (a connection fault, a side that
    /// says "not now") rather than giving up at once.
    pub fn is_retryable(&self) -> bool {
        self.retry_class().is_some()
    }

    /// Which retry window covers this error, if any.
    fn retry_class(&self) -> Option<RetryClass> {
        match self {
            SyncError::Link(e) if e.is_transient() => Some(RetryClass::Connection),
            // A snapshot that ends early was cut short by the source (its snapshot
            // process killed, e.g. by a FLUSHALL during a diskless transfer, or the
            // link dropped): like a cut connection, copy again.
            SyncError::Rdb(RdbError::UnexpectedEof { .. }) => Some(RetryClass::Connection),
            // A failover of the source cluster may leave it without an answer or a
            // primary for a few seconds.
            SyncError::SourceTopology(_) => Some(RetryClass::Connection),
            SyncError::Apply(e) if e.is_transient() => Some(RetryClass::Connection),
            SyncError::Apply(ApplyError::Rejected { reply, .. }) if is_passing_refusal(reply) => {
                Some(RetryClass::Other)
            }
            _ => None,
        }
    }
}

/// The two retry windows of a task, as in DTS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RetryClass {
    /// A connection failed (refused, reset, timed out) on either side.
    Connection,
    /// A side answered that it cannot serve for now (loading, busy script, failover).
    Other,
}

/// Replies that say "not now" rather than "never": the target is loading, runs a
/// busy script, or its cluster is failing over.
fn is_passing_refusal(reply: &str) -> bool {
    ["LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN", "CLUSTERDOWN"]
        .iter()
        .any(|p| reply.starts_with(p))
}

/// Where the task is, for status reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub phase: Phase,
    /// Keys written during the current full copy.
    pub keys_copied: u64,
    /// Offset received from the source / applied on the target.
    pub received_offset: i64,
    pub applied_offset: i64,
    pub full_syncs: u64,
    pub partial_syncs: u64,
    /// Milliseconds between the source writing the last heartbeat and lockstep
    /// receiving it in the stream (clocks of one machine: lockstep's and the
    /// source's; across machines their skew adds in). The transit of that one
    /// heartbeat, frozen while nothing arrives: the lag is [`Progress::lag_ms`].
    pub heartbeat_lag_ms: Option<i64>,
    /// The time (unix ms) the last heartbeat seen in the stream carries: when it
    /// was written on the source. `None` before the first (or with no heartbeat).
    pub heartbeat_sent_unix_ms: Option<i64>,
    /// When lockstep last saw a heartbeat in the stream.
    pub heartbeat_seen_at: Option<Instant>,
    /// When a read last brought bytes from the source (published on the checkpoint
    /// tick in the stream and per event batch in the full copy; `None` before any).
    pub source_byte_at: Option<Instant>,
    /// When a read last brought a reply from the target (published on the
    /// checkpoint tick in the stream).
    pub target_reply_at: Option<Instant>,
    /// Keys of the last full copy whose real TTL was restored after the stream
    /// caught up (the TTL race guard).
    pub ttls_settled: u64,
    /// The source's replication ID the task follows, once known.
    pub replid: Option<String>,
    /// RDB bytes received during the current full copy, and the RDB's size when the
    /// source announced it (disk-based transfers; a diskless one has no size).
    pub bytes_copied: u64,
    pub bytes_total: Option<u64>,
    /// Keys the RDB announced (the sum of its RESIZEDB hints over the databases seen
    /// so far; none when the RDB has no hints).
    pub keys_total: Option<u64>,
    /// Stream commands sent to the target since the task started (published on the
    /// checkpoint tick).
    pub commands_applied: u64,
    /// The error that ended the last session, when the task is retrying.
    pub last_error: Option<String>,
}

impl Progress {
    /// How far behind the source the stream may be, in milliseconds: `now` (unix
    /// ms) minus the time the last heartbeat seen carries. Everything the source
    /// wrote before that heartbeat has arrived, so the figure is an upper bound,
    /// within one heartbeat interval of the truth while heartbeats flow, and it grows
    /// while nothing arrives. `None` when no heartbeat has been seen (`--no-heartbeat`,
    /// or not yet): unknown, not zero.
    pub fn lag_ms(&self, now_unix_ms: i64) -> Option<i64> {
        self.heartbeat_sent_unix_ms
            .map(|sent| now_unix_ms.saturating_sub(sent).max(0))
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Phase {
    #[default]
    Connecting,
    FullCopy,
    Incremental,
    Done,
}

/// What a finished task did.
#[derive(Clone, Debug)]
pub struct Summary {
    pub progress: Progress,
    pub checkpoint: Option<Checkpoint>,
}

/// Runs the task until it is done (mode `Full`), `stop` becomes true, or it fails.
pub async fn run(
    options: SyncOptions,
    stop: watch::Receiver<bool>,
    progress: watch::Sender<Progress>,
) -> Result<Summary, SyncError> {
    validate_task_name(&options.task_name).map_err(SyncError::Options)?;
    options
        .filter
        .validate()
        .map_err(|e| SyncError::Options(e.to_string()))?;
    let mut store = CheckpointStore::open(&options.checkpoint_dir)?;
    // When the current run of failures began, per window; reset by any progress.
    let mut failing_since: Option<Instant> = None;
    let mut backoff = Duration::from_millis(100);
    let mut options = options;
    // The target connections of the last session, closed by the next one.
    let mut fence: Vec<ClientIdentity> = Vec::new();
    loop {
        let before = progress.borrow().clone();
        let outcome = match options.source_cluster.clone() {
            // A shard of a cluster source: its primary may have changed (failover).
            Some(cluster) => match cluster.current_nodes(&options).await {
                Ok(nodes) => {
                    if nodes.read != options.source {
                        tracing::info!(from = %options.source, to = %nodes.read, "the shard's node changed: following it");
                    }
                    options.source = nodes.read;
                    options.heartbeat_at = Some(nodes.primary);
                    session(&options, &mut store, &mut fence, stop.clone(), &progress).await
                }
                Err(err) => Err(err),
            },
            None => session(&options, &mut store, &mut fence, stop.clone(), &progress).await,
        };
        let err = match outcome {
            Ok(()) => {
                progress.send_modify(|p| p.phase = Phase::Done);
                return Ok(Summary {
                    progress: progress.borrow().clone(),
                    checkpoint: store.last().cloned(),
                });
            }
            Err(err) => err,
        };
        let class = match err.retry_class() {
            Some(class) if !*stop.borrow() => class,
            _ => return Err(err),
        };
        let now = progress.borrow().clone();
        let progressed = (now.full_syncs, now.partial_syncs, now.applied_offset)
            != (
                before.full_syncs,
                before.partial_syncs,
                before.applied_offset,
            );
        if progressed {
            failing_since = None;
            backoff = Duration::from_millis(100);
        }
        let window = match class {
            RetryClass::Connection => options.retry_window,
            RetryClass::Other => options.other_retry_window,
        };
        let since = *failing_since.get_or_insert_with(Instant::now);
        if since.elapsed() > window {
            return Err(SyncError::GaveUp {
                window,
                last: Box::new(err),
            });
        }
        progress.send_modify(|p| p.last_error = Some(err.to_string()));
        tracing::warn!("sync session ended: {err}; retrying in {backoff:?} (giving up {:?} after the failures began)", window);
        tokio::time::sleep(backoff).await;
        // A cluster that is moving (a slot migration on the target, a failover on the
        // source) is asked again at least every second: it settles in seconds, and a
        // 10 s back-off would hold the sync that long after it has.
        let ceiling = match &err {
            SyncError::Apply(ApplyError::Redirected { .. }) | SyncError::SourceTopology(_) => {
                Duration::from_secs(1)
            }
            _ => Duration::from_secs(10),
        };
        backoff = (backoff * 2).min(ceiling);
    }
}

/// One connection to each side, from PSYNC until stop or failure.
async fn session(
    options: &SyncOptions,
    store: &mut CheckpointStore,
    fence: &mut Vec<ClientIdentity>,
    mut stop: watch::Receiver<bool>,
    progress: &watch::Sender<Progress>,
) -> Result<(), SyncError> {
    progress.send_modify(|p| p.phase = Phase::Connecting);
    let mut writer = crate::target::Target::connect(
        &options.target,
        options.apply.clone(),
        &options.checkpoint_key(),
    )
    .await?;
    // What the last session's connections sent must not land after the checkpoint
    // is read below: close them first.
    writer.fence(fence).await?;
    *fence = writer.identities();
    let target_rdb_version = target_rdb_version(&mut writer).await?;
    if writer.is_cluster() {
        let mut source =
            Conn::connect_to("source", &options.source, options.source_connection()).await?;
        let keyspace = info_text(source.query(&[b"INFO".as_slice(), b"keyspace"]).await?);
        crate::cluster::check_source_dbs(&keyspace, &options.filter).map_err(SyncError::Options)?;
        // Cross-slot commands are applied by copying their keys from this source.
        let copier = SourceCopier::new(source, target_rdb_version, options.filter.extend_ttl_ms());
        writer.copy_cross_slot_from(copier, &options.task_key(SKIP_KEY));
    }
    let mut link = ReplicaLink::connect(&options.source, &options.link).await?;

    // The target's own checkpoint key is exact (written with the data); the file may
    // lag it by up to one checkpoint interval.
    let on_target = target_checkpoint(&mut writer, &options.checkpoint_key()).await?;
    if let Some(exact) = &on_target {
        if store.last() != Some(exact) {
            // The file may hold a later offset of entries that applied nothing (PING):
            // the target's position is the one to resume from and to count up from.
            store.clear()?;
            store.store(exact.clone())?;
        }
    }
    // The file says a checkpoint was written, yet the target has no checkpoint key:
    // the target lost what was written with it (restarted without persistence, or
    // flushed). Resuming from the file would leave all of that missing, silently; so
    // the task copies again, after clearing its keys. (Not in incremental-only mode,
    // which never copies: there the file is the resume point.)
    let target_lost_data =
        on_target.is_none() && store.last().is_some() && options.mode != Mode::Incremental;
    // The TTL guards of a full copy that were not settled yet (lockstep stopped or
    // killed in between): settled once the stream passes the copy's end, whatever
    // this session does (see crate::ttl_guard).
    let settler = Settler {
        filter: &options.filter,
        marker_key: options.task_key(TTL_GUARD_KEY),
        pexpiretime: target_rdb_version >= 10,
    };
    let mut settle = settler
        .read_marker(&mut writer, options.load.ttl_guard)
        .await?;
    if target_lost_data {
        store.clear()?;
    }
    let resume = on_target
        .as_ref()
        .or(store.last())
        .map(|cp| (cp.replid.clone(), cp.offset, cp.db));
    // An incremental-only task with nowhere to resume from asks for a full resync
    // (a source with no replica yet has no backlog to PSYNC into) and drops the
    // snapshot: only what is written from then on is applied.
    let skip_snapshot = resume.is_none() && options.mode == Mode::Incremental;
    let reply = link
        .psync(
            resume
                .as_ref()
                .map(|(id, offset, _)| (id.as_str(), *offset)),
        )
        .await?;
    let (replid, start_offset, db) = match reply {
        PsyncReply::Continue { replid } => {
            let (old_id, offset, db) = resume
                .ok_or_else(|| SyncError::Internal("+CONTINUE without a resume point".into()))?;
            let id = replid.unwrap_or(old_id);
            tracing::info!(
                offset,
                db,
                "partial resync: the source continues from the checkpoint"
            );
            progress.send_modify(|p| {
                p.partial_syncs += 1;
                p.replid = Some(id.clone());
            });
            let target_db = options.filter.selectable_db(db);
            writer
                .push(
                    &[b"SELECT".as_slice(), target_db.to_string().as_bytes()],
                    None,
                )
                .await?;
            (Some(id), offset, db)
        }
        PsyncReply::FullResync { replid, offset } if skip_snapshot => {
            let mut transfer = link.rdb_transfer().await?;
            while link.next_rdb_chunk(&mut transfer).await?.is_some() {}
            record_start(
                &mut writer,
                store,
                &options.checkpoint_key(),
                &replid,
                offset,
            )
            .await?;
            tracing::info!(
                offset,
                "incremental only: the snapshot was skipped; applying the stream from here"
            );
            (Some(replid), offset, 0)
        }
        PsyncReply::FullResync { replid, offset } => {
            // The target may hold keys the source no longer has: from a checkpoint
            // the source can no longer continue, or from a copy cut short.
            let stale = match &resume {
                Some((old_id, old_offset, _)) => Some(format!("the source could not continue from {old_id}:{old_offset} (backlog overrun or new history)")),
                None if target_lost_data => Some("the target no longer holds lockstep's checkpoint key, which the checkpoint file says was written: it lost data (restarted without persistence, or flushed)".to_owned()),
                None if store.full_copy_interrupted() => Some("an earlier full copy was cut short".to_owned()),
                None => None,
            };
            if let Some(why) = stale {
                tracing::warn!("full resync: {why}; removing the task's keys from the target first so it ends equal to the source, not a superset");
                writer
                    .clear(&options.filter.clear_scope(), |k| {
                        options.filter.owns_key(k)
                    })
                    .await?;
                store.clear()?;
            }
            store.set_full_copy_in_progress(true)?;
            let (returned, loader) = unless_stopped(
                &mut stop,
                full_copy(
                    link,
                    &mut writer,
                    target_rdb_version,
                    offset,
                    options,
                    progress,
                ),
            )
            .await?;
            link = returned;
            writer.drain().await?;
            // The TTL guards' marker goes to the target before the checkpoint that
            // says the copy is done: a session that ends in between (the source
            // position below is one more connection to the source) copies again
            // rather than resume with guards nobody will settle (found by the
            // explorer: seed 20789 episode 0).
            if loader.guarded_ttls() > 0 {
                let (_, after_copy, _) = source_position(options).await?;
                let pending = PendingSettle::after_copy(after_copy, options.load.ttl_guard);
                settler.write_marker(&mut writer, &pending).await?;
                settle = Some(pending);
            } else if let Some(older) = settle.as_mut() {
                // An older copy's marker: its offset may be of another history.
                older.after_offset = offset;
            }
            record_start(
                &mut writer,
                store,
                &options.checkpoint_key(),
                &replid,
                offset,
            )
            .await?;
            progress.send_modify(|p| {
                p.full_syncs += 1;
                p.applied_offset = offset;
                p.received_offset = offset;
                p.replid = Some(replid.clone());
            });
            (Some(replid), offset, 0)
        }
        PsyncReply::Sync => {
            let (returned, loader) = unless_stopped(
                &mut stop,
                full_copy(link, &mut writer, target_rdb_version, 0, options, progress),
            )
            .await?;
            link = returned;
            writer.drain().await?;
            if loader.guarded_ttls() > 0 {
                // SYNC has no offsets: settled at the first checkpoint tick.
                let pending = PendingSettle::after_copy(0, options.load.ttl_guard);
                settler.write_marker(&mut writer, &pending).await?;
                settle = Some(pending);
            }
            (None, 0, 0)
        }
    };
    if options.mode == Mode::Full {
        if let Some(mut pending) = settle {
            // Nothing more will be applied: give every key its real TTL now.
            let settled = settle_when_trusted(&settler, &mut writer, &mut pending).await?;
            progress.send_modify(|p| p.ttls_settled += settled.keys);
        }
        return Ok(());
    }

    progress.send_modify(|p| p.phase = Phase::Incremental);
    let mut heartbeat = match options.heartbeat {
        true => Heartbeat::connect(options).await,
        false => None,
    };
    let (mut stream, mut acker) = link.into_stream(start_offset);
    // The target stands at the start offset: from now on every tick ACKs at least
    // that. (After a diskless copy the source starts the stream only on an ACK that
    // arrives after it has seen the transfer end; an early first ACK is ignored, so
    // the ticks must not wait for the first applied command, or both sides wait.)
    writer.mark_position(Position {
        offset: start_offset,
        db,
    });
    acker.ack(start_offset).await?;
    let mut ack_timer = tokio::time::interval(Duration::from_secs(1));
    // The source's silence counts from here at the earliest: the last byte of a full
    // copy may have arrived long before the target had written it all.
    let stream_started = Instant::now();
    let mut checkpoint_timer = tokio::time::interval(options.checkpoint_interval);
    // Inside a MULTI/EXEC block of the source: its commands go into the same target
    // transaction, which is not closed before the block ends.
    let mut in_multi = false;
    let mut batch = TargetBatch::new(replid.clone(), options);
    let mut here = Position {
        offset: start_offset,
        db,
    };
    let mut commands_applied = progress.borrow().commands_applied;
    // The stream is not read until `resume_at` when the throttle asks for a pause;
    // ACKs and checkpoints go on meanwhile.
    let mut throttle = options.throttle.incremental();
    let mut resume_at = Instant::now();
    let mut saver = BackgroundSaver::default();
    // A shard of a cluster source watches its slots while it streams: a reshard ends
    // the task with the watcher's message.
    let mut reshard = ReshardWatch::start(options);
    loop {
        let paused = throttle.is_some() && resume_at > Instant::now();
        let step: Result<(), SyncError> = async {
            tokio::select! {
                biased;
                _ = stop.changed() => {
                    if *stop.borrow() {
                        return Err(SyncError::Stopped);
                    }
                }
                moved = reshard.moved() => return Err(SyncError::Resharded(moved)),
                _ = ack_timer.tick() => {
                    check_source_alive(&mut stream, &options.source, options.link.read_timeout, stream_started).await?;
                    writer.flush().await?;
                    writer.poll_replies().await?;
                    writer.check_answering()?;
                    if let Some(applied) = writer.applied() {
                        acker.ack(applied.offset).await?;
                    }
                    if let Some(beat) = heartbeat.as_mut() {
                        if !beat.beat().await {
                            heartbeat = None;
                        }
                    }
                }
                _ = checkpoint_timer.tick() => {
                    writer.flush().await?;
                    writer.poll_replies().await?;
                    saver.save_in_background(store, &replid, &writer).await?;
                    // Progress is published here, not per command: a watch send per
                    // stream entry woke every status reader on the hot path.
                    let received = here.offset;
                    let source_byte_at = stream.reader().last_read();
                    let target_reply_at = writer.last_reply_at();
                    progress.send_modify(|p| {
                        p.received_offset = received;
                        p.commands_applied = commands_applied;
                        p.source_byte_at = source_byte_at.or(p.source_byte_at);
                        p.target_reply_at = target_reply_at.or(p.target_reply_at);
                    });
                    if let Some(applied) = writer.applied() {
                        progress.send_modify(|p| p.applied_offset = applied.offset);
                        let due = settle.as_ref().is_some_and(|pending| pending.is_due(applied.offset));
                        if due && !batch.open {
                            if let Some(pending) = settle.as_mut() {
                                if let Some(settled) = settler.settle(&mut writer, pending, options.filter.selectable_db(here.db)).await? {
                                    tracing::info!(settled = settled.keys, scanned = settled.scanned, "TTL guards of the full copy settled");
                                    progress.send_modify(|p| p.ttls_settled += settled.keys);
                                    settle = None;
                                }
                            }
                        }
                    }
                }
                _ = tokio::time::sleep_until(resume_at.into()), if paused => {}
                // A transaction is held until the last one's EXEC is answered: send it
                // as soon as that reply arrives, not at the next stream data or tick.
                arrived = writer.replies_arrived(), if writer.is_holding() => {
                    arrived?;
                    writer.poll_replies().await?;
                }
                next = stream.next(), if !paused => {
                    // Everything that has arrived is handled here, not one select!
                    // round per command (polling the stop channel and the timers per
                    // command was ~10% of lockstep's CPU under load); the timers get
                    // their turn at least every DRAIN_ENTRIES_MAX entries.
                    let mut next = next;
                    let mut drained = 0;
                    loop {
                        let (entry, offset) = match next {
                            Ok(Some(next)) => next,
                            Ok(None) => return Err(LinkError::Closed { endpoint: options.source.to_string(), during: "during the command stream" }.into()),
                            Err(source) => return Err(LinkError::Read { endpoint: options.source.to_string(), during: "the command stream", source }.into()),
                        };
                        writer.set_stream_position(offset, here.db);
                        let mut pause = false;
                        if let Entry::Command(command) = entry {
                            if let Some(throttle) = throttle.as_mut() {
                                let wait = throttle.take(1, command.wire_bytes as u64);
                                if !wait.is_zero() {
                                    resume_at = Instant::now() + wait;
                                    pause = true;
                                }
                            }
                            match classify(&command, options, here.db)? {
                                Action::Select(new_db) => {
                                    here.db = new_db;
                                    let target_db = options.filter.selectable_db(new_db);
                                    if target_db == new_db {
                                        batch.add(&mut writer, &command.argv).await?;
                                    } else {
                                        let mapped = [Bytes::from_static(b"SELECT"), Bytes::from(target_db.to_string())];
                                        batch.add(&mut writer, &mapped).await?;
                                    }
                                }
                                Action::Multi => in_multi = true,
                                Action::Exec => in_multi = false,
                                Action::GetAck => {
                                    writer.flush().await?;
                                    writer.poll_replies().await?;
                                    if let Some(applied) = writer.applied() {
                                        acker.ack(applied.offset).await?;
                                    }
                                }
                                Action::Heartbeat => {
                                    if let Some(sent_ms) = Heartbeat::sent_ms(&command) {
                                        progress.send_modify(|p| {
                                            p.heartbeat_lag_ms = Some(unix_ms() - sent_ms);
                                            p.heartbeat_sent_unix_ms = Some(sent_ms);
                                            p.heartbeat_seen_at = Some(Instant::now());
                                        });
                                    }
                                }
                                Action::Skip => {}
                                Action::Rewrite(commands) => {
                                    commands_applied += 1;
                                    for argv in &commands {
                                        batch.add(&mut writer, argv).await?;
                                    }
                                }
                                Action::Apply => {
                                    commands_applied += 1;
                                    batch.add(&mut writer, &command.argv).await?
                                }
                                Action::ClearOwnKeys => {
                                    // Everything before it applied first; a kill
                                    // during the clear repeats it (it is idempotent).
                                    commands_applied += 1;
                                    batch.close(&mut writer, here).await?;
                                    writer.drain().await?;
                                    let removed = writer.clear(&options.filter.clear_scope(), |k| options.filter.owns_key(k)).await?;
                                    tracing::info!(removed, "the source shard flushed: its keys removed from the target");
                                    let target_db = options.filter.selectable_db(here.db);
                                    writer.push(&[b"SELECT".as_slice(), target_db.to_string().as_bytes()], None).await?;
                                }
                            }
                        }
                        here.offset = offset;
                        // Close the transaction when what has arrived is used up (low
                        // latency) or it is long enough, never inside a source MULTI.
                        let arrived_all = stream.reader_mut().buffer().is_empty();
                        if !in_multi && (arrived_all || pause || batch.commands >= BATCH_COMMANDS_MAX) {
                            batch.close(&mut writer, here).await?;
                        }
                        if arrived_all || pause {
                            // Nothing more to batch with: send now (latency), and take
                            // the replies that are already there (keeps the window open).
                            writer.flush().await?;
                            writer.poll_replies().await?;
                        }
                        drained += 1;
                        if arrived_all || pause || drained >= DRAIN_ENTRIES_MAX {
                            break;
                        }
                        next = match stream.next_buffered() {
                            // The rest of a command is still on its way.
                            Ok(None) => break,
                            other => other,
                        };
                    }
                }
            }
            Ok(())
        }
        .await;
        if let Err(err) = step {
            // Whatever ended the session, keep what the target has applied: drop a
            // half-received source transaction, drain, store the position. If the
            // target itself failed, this fails too and the target's own checkpoint
            // key (written with the data) is what the next session trusts.
            // The file write in flight ends first: never two writers of one file.
            let finished = saver.finish().await;
            let kept = async {
                if matches!(err, SyncError::Apply(_)) {
                    // The target refused or failed: mark nothing more as applied.
                    return Ok(());
                }
                batch.abandon_or_close(&mut writer, here, in_multi).await?;
                writer.drain().await?;
                save(store, &replid, &writer)?;
                // Asked to stop after the stream passed the copy's end: settle now
                // rather than leave the guards to the next run.
                let due = settle
                    .as_ref()
                    .zip(writer.applied())
                    .is_some_and(|(p, a)| p.is_due(a.offset));
                match settle.as_mut() {
                    Some(pending) if due && matches!(err, SyncError::Stopped) => {
                        let db = options.filter.selectable_db(here.db);
                        settler
                            .settle(&mut writer, pending, db)
                            .await
                            .map(|_| ())
                            .map_err(SyncError::from)
                    }
                    _ => Ok(()),
                }
            }
            .await;
            if let Err(lost) = finished.and(kept) {
                tracing::debug!("could not drain the target at the end of the session: {lost}");
            }
            return match err {
                SyncError::Stopped => Ok(()),
                other => Err(other),
            };
        }
    }
}

/// Ends the session when the source has sent nothing for `timeout` (a frozen host,
/// a flow dropped by a firewall: the connection stays open and silent) since the
/// later of its last byte and `since`. A live source PINGs every
/// repl-ping-replica-period, and lockstep's heartbeat writes every second. Bytes
/// that wait unread in the socket (the loop was busy with the target, or paused by
/// the throttle) count: a non-blocking read looks for them before the verdict.
/// Called on the ACK tick (every second), so the session ends within a second
/// after `timeout`; nothing per command.
async fn check_source_alive<R: tokio::io::AsyncRead + Unpin>(
    stream: &mut crate::resp::CommandStream<R>,
    source: &Endpoint,
    timeout: Duration,
    since: Instant,
) -> Result<(), SyncError> {
    let last = stream
        .reader()
        .last_read()
        .map_or(since, |at| at.max(since));
    if last.elapsed() < timeout {
        return Ok(());
    }
    let during = "in the command stream";
    let probe = tokio::time::timeout(Duration::ZERO, stream.reader_mut().fill(0)).await;
    let endpoint = source.to_string();
    match probe {
        Ok(Ok(0)) => Err(LinkError::Closed { endpoint, during }.into()),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(LinkError::Read {
            endpoint,
            during,
            source: crate::resp::ReadError::Io(e),
        }
        .into()),
        Err(_) => Err(LinkError::Timeout {
            endpoint,
            timeout,
            during,
        }
        .into()),
    }
}

/// Settles `pending` (a copy in mode `Full`, nothing follows): a pass the target
/// cluster's slot migrations make untrusted is tried again, for a minute at most;
/// after that the marker stays and the next run settles.
async fn settle_when_trusted(
    settler: &Settler<'_>,
    writer: &mut TargetWriter,
    pending: &mut PendingSettle,
) -> Result<Settled, SyncError> {
    for _ in 0..12 {
        if let Some(settled) = settler.settle(writer, pending, 0).await? {
            return Ok(settled);
        }
        tokio::time::sleep(crate::ttl_guard::RETRY_AFTER).await;
    }
    tracing::warn!("the TTL guards of the full copy are not settled: the target cluster kept migrating slots; the next run settles them");
    Ok(Settled::default())
}

/// Stream entries handled in one go from what has arrived before the loop looks at
/// its timers and the stop signal again.
const DRAIN_ENTRIES_MAX: usize = 4096;

/// RDB pieces read off the socket and not yet parsed.
const CHUNKS_IN_FLIGHT: usize = 8;
/// Batches of parser events not yet written; with the two limits below, at most
/// 4 x 4 MiB of element data waits between parser and writer.
const EVENT_BATCHES_IN_FLIGHT: usize = 4;
const EVENT_BATCH_EVENTS: usize = 512;
const EVENT_BATCH_BYTES: usize = 4 << 20;

/// Element bytes of all event batches between parser and writer, at most (a bigger
/// single value takes the whole budget).
const EVENT_BYTES_IN_FLIGHT: usize = 16 << 20;

/// Parser events on their way to the writer, with their share of the byte budget.
struct EventBatch {
    events: Vec<Event>,
    permits: tokio::sync::OwnedSemaphorePermit,
}

/// Waits (on the parser's blocking thread) for `bytes` of the budget, capped at the
/// whole budget; `None` when the budget is closed (the writer has gone).
fn budgeted(
    runtime: &tokio::runtime::Handle,
    budget: &std::sync::Arc<tokio::sync::Semaphore>,
    events: Vec<Event>,
    bytes: usize,
) -> Option<EventBatch> {
    let wanted = bytes.clamp(1, EVENT_BYTES_IN_FLIGHT) as u32;
    let permits = runtime
        .block_on(budget.clone().acquire_many_owned(wanted))
        .ok()?;
    Some(EventBatch { events, permits })
}

/// Rough bytes an event holds (to cut event batches by size).
fn event_bytes(event: &Event) -> usize {
    match event {
        Event::KeyStart(meta) => meta.key.len() + 64,
        Event::Elements(elements) => crate::load::batch_bytes(elements),
        Event::KeyEnd { raw } => raw.as_ref().map_or(16, Vec::len),
        Event::Function { code } => code.len(),
        _ => 64,
    }
}

/// Most source commands in one target transaction.
const BATCH_COMMANDS_MAX: usize = 1000;

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

/// Groups the stream's commands into target transactions that end by recording the
/// position they bring the target to.
struct TargetBatch {
    replid: Option<String>,
    /// For the target database to select back after the checkpoint.
    filter: Filter,
    checkpoint_key: Vec<u8>,
    open: bool,
    commands: usize,
}

impl TargetBatch {
    fn new(replid: Option<String>, options: &SyncOptions) -> TargetBatch {
        TargetBatch {
            replid,
            filter: options.filter.clone(),
            checkpoint_key: options.checkpoint_key(),
            open: false,
            commands: 0,
        }
    }

    async fn add(&mut self, writer: &mut TargetWriter, argv: &[Bytes]) -> Result<(), ApplyError> {
        if !self.open {
            // The previous transaction must have succeeded before this one is sent:
            // if the target refused it (say -OOM at queue time, then EXECABORT) and
            // this one, pipelined behind it, went through, the target would hold this
            // one's data and checkpoint without the other's (found by the chaos
            // catalog: 86 keys missing after an OOM stop). This one is built while
            // the last executes and held back until its EXEC is answered (waiting
            // before building cost a round trip per transaction). A cluster target
            // drains instead: its transactions are per shard.
            if writer.is_cluster() {
                writer.drain().await?;
            } else {
                writer.hold_until_answered().await?;
            }
            writer.push(&[b"MULTI".as_slice()], None).await?;
            self.open = true;
        }
        writer.push(argv, None).await?;
        self.commands += 1;
        Ok(())
    }

    /// EXEC, with the position recorded inside; or, with nothing open, just mark the
    /// position (entries that apply nothing: PING, heartbeats, blanks).
    async fn close(&mut self, writer: &mut TargetWriter, here: Position) -> Result<(), ApplyError> {
        if !self.open {
            writer.mark_position(here);
            return Ok(());
        }
        if let Some(replid) = &self.replid {
            let value = format!("{replid} {} {}", here.offset, here.db);
            writer.push(&[b"SELECT".as_slice(), b"0"], None).await?;
            writer
                .push(
                    &[b"SET".as_slice(), &self.checkpoint_key, value.as_bytes()],
                    None,
                )
                .await?;
            let target_db = self.filter.selectable_db(here.db);
            writer
                .push(
                    &[b"SELECT".as_slice(), target_db.to_string().as_bytes()],
                    None,
                )
                .await?;
        }
        writer.push(&[b"EXEC".as_slice()], Some(here)).await?;
        self.open = false;
        self.commands = 0;
        Ok(())
    }

    /// At the end of a session: EXEC what is complete, DISCARD a source transaction
    /// that did not arrive whole (its commands must not run without the rest).
    async fn abandon_or_close(
        &mut self,
        writer: &mut TargetWriter,
        here: Position,
        in_multi: bool,
    ) -> Result<(), ApplyError> {
        if self.open && in_multi {
            writer.push(&[b"DISCARD".as_slice()], None).await?;
            self.open = false;
            self.commands = 0;
            return Ok(());
        }
        self.close(writer, here).await
    }
}

/// Reads the target's own checkpoint key, if any.
async fn target_checkpoint(
    writer: &mut TargetWriter,
    key: &[u8],
) -> Result<Option<Checkpoint>, SyncError> {
    writer.query(&[b"SELECT".as_slice(), b"0"]).await?;
    let value = writer.query(&[b"GET".as_slice(), key]).await?;
    if let Frame::Error(reply) = &value {
        // Not "no checkpoint": taken for one, it would clear the target and copy
        // everything again (a LOADING target, for one, answers so for a while).
        return Err(ApplyError::Rejected {
            endpoint: "target".into(),
            command: "GET".into(),
            key: String::from_utf8_lossy(key).into_owned(),
            reply: String::from_utf8_lossy(reply).into_owned(),
            hint: " (reading lockstep's checkpoint key)",
        }
        .into());
    }
    match value.as_bytes() {
        None => Ok(None),
        Some(bytes) => Ok(Some(Checkpoint::parse_target_value(key, bytes)?)),
    }
}

/// Records where the stream starts after a full resync (copied or skipped), on the
/// target and in the file.
async fn record_start(
    writer: &mut TargetWriter,
    store: &mut CheckpointStore,
    key: &[u8],
    replid: &str,
    offset: i64,
) -> Result<(), SyncError> {
    let start = Checkpoint {
        replid: replid.to_owned(),
        offset,
        db: 0,
    };
    store_target_checkpoint(writer, key, &start).await?;
    store.store(start)?;
    Ok(())
}

/// Records `checkpoint` in the target's checkpoint key (outside the stream, after a
/// full copy).
async fn store_target_checkpoint(
    writer: &mut TargetWriter,
    key: &[u8],
    checkpoint: &Checkpoint,
) -> Result<(), ApplyError> {
    let value = format!(
        "{} {} {}",
        checkpoint.replid, checkpoint.offset, checkpoint.db
    );
    writer.push(&[b"SELECT".as_slice(), b"0"], None).await?;
    writer
        .push(&[b"SET".as_slice(), key, value.as_bytes()], None)
        .await?;
    writer.drain().await
}

/// The heartbeat: a key on the source, rewritten every second with the time, whose
/// arrival in the stream measures end-to-end latency. Never written to the target.
struct Heartbeat {
    connection: Conn,
    key: Vec<u8>,
    interval: Duration,
    /// Seconds the key lives (SETEX).
    ttl: String,
    last: Option<Instant>,
}

impl Heartbeat {
    async fn connect(options: &SyncOptions) -> Option<Heartbeat> {
        let mut key = options.task_key(HEARTBEAT_PREFIX);
        key.extend_from_slice(format!(":{}", options.link.listening_port).as_bytes());
        if let Some(&(first, _)) = options.filter.source_slots.first() {
            // A shard's primary accepts only keys of its own slots.
            let tag = crate::slots::hash_tag_of_slot(first);
            key.extend_from_slice(format!(":{{{tag}}}").as_bytes());
        }
        let at = options.heartbeat_at.as_ref().unwrap_or(&options.source);
        match Conn::connect_to("source", at, options.source_connection()).await {
            Ok(connection) => Some(Heartbeat {
                connection,
                key,
                interval: options.heartbeat_interval,
                ttl: (options.heartbeat_interval.as_secs() * 3)
                    .max(60)
                    .to_string(),
                last: None,
            }),
            Err(err) => {
                tracing::warn!(
                    "heartbeat off: cannot open a second connection to the source: {err}"
                );
                None
            }
        }
    }

    /// Writes the heartbeat; false when the source refuses it (a read-only account):
    /// the heartbeat is then switched off with a warning, the sync goes on.
    async fn beat(&mut self) -> bool {
        // The ACK tick calls every second; half a tick of slack keeps a 1 s interval
        // from skipping ticks that arrive a little early.
        let slack = Duration::from_millis(500);
        if self
            .last
            .is_some_and(|last| last.elapsed() + slack < self.interval)
        {
            return true;
        }
        self.last = Some(Instant::now());
        let now = unix_ms().to_string();
        let sent = async {
            self.connection.poll_replies().await?;
            self.connection
                .push(
                    &[
                        b"SETEX".as_slice(),
                        &self.key,
                        self.ttl.as_bytes(),
                        now.as_bytes(),
                    ],
                    None,
                )
                .await?;
            self.connection.flush().await
        };
        match sent.await {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!("heartbeat off: the source refused it ({err}); use --no-heartbeat for a read-only account");
                false
            }
        }
    }

    /// The send time in a heartbeat command as the stream carries it (SETEX key s v,
    /// or SET key v PXAT t after the source's rewrite).
    fn sent_ms(command: &Command) -> Option<i64> {
        let value = if command.is("SETEX") {
            command.args().get(2)
        } else {
            command.args().get(1)
        };
        std::str::from_utf8(value?).ok()?.parse().ok()
    }
}

pub use crate::clock::unix_ms;

/// What the engine does with one command of the stream.
enum Action {
    Apply,
    Select(u32),
    Multi,
    Exec,
    GetAck,
    /// lockstep's own heartbeat key: measured, not sent.
    Heartbeat,
    /// Counted in the offset, not sent: PING, REPLCONF, filtered commands.
    Skip,
    /// The filter's replacement (split keys, mapped databases, extended TTLs).
    Rewrite(Vec<Vec<Bytes>>),
    /// FLUSHALL / FLUSHDB of one shard of a cluster source: remove that shard's keys
    /// from the target, and only those.
    ClearOwnKeys,
}

/// What to do with `command`, applied in source database `db`.
fn classify(command: &Command, options: &SyncOptions, db: u32) -> Result<Action, FilterError> {
    let name = command.name();
    let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
    if is("SELECT") {
        let db = command
            .args()
            .first()
            .and_then(|a| std::str::from_utf8(a).ok())
            .and_then(|s| s.parse().ok());
        return Ok(db.map_or(Action::Apply, Action::Select));
    }
    if is("MULTI") {
        return Ok(Action::Multi);
    }
    if is("EXEC") {
        return Ok(Action::Exec);
    }
    if is("PING") {
        return Ok(Action::Skip);
    }
    if is("REPLCONF") {
        let getack = command
            .args()
            .first()
            .is_some_and(|a| a.eq_ignore_ascii_case(b"GETACK"));
        return Ok(if getack { Action::GetAck } else { Action::Skip });
    }
    if command
        .args()
        .first()
        .is_some_and(|key| key.starts_with(HEARTBEAT_PREFIX))
    {
        return Ok(Action::Heartbeat);
    }
    Ok(match options.filter.command(&command.argv, db)? {
        Verdict::Keep => Action::Apply,
        Verdict::Drop => Action::Skip,
        Verdict::Rewrite(commands) => Action::Rewrite(commands),
        Verdict::ClearOwnKeys => Action::ClearOwnKeys,
    })
}

fn save(
    store: &mut CheckpointStore,
    replid: &Option<String>,
    writer: &TargetWriter,
) -> Result<(), SyncError> {
    if let (Some(replid), Some(applied)) = (replid, writer.applied()) {
        store.store(Checkpoint {
            replid: replid.clone(),
            offset: applied.offset,
            db: applied.db,
        })?;
    }
    Ok(())
}

/// For a shard of a cluster source: a task that asks the cluster every
/// [`RESHARD_POLL`] whether the shard still serves exactly its slots, so that a
/// reshard while the stream runs stops the task with the message of
/// [`SourceCluster::current_nodes`] instead of applying moved keys out of order.
/// Stopped when dropped (the session ends).
struct ReshardWatch {
    moved: Option<tokio::sync::oneshot::Receiver<String>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// How often a shard of a cluster source checks its slots while streaming.
const RESHARD_POLL: Duration = Duration::from_secs(5);

impl ReshardWatch {
    fn start(options: &SyncOptions) -> ReshardWatch {
        let Some(cluster) = options.source_cluster.clone() else {
            return ReshardWatch {
                moved: None,
                task: None,
            };
        };
        let options = options.clone();
        let (tell, moved) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(RESHARD_POLL).await;
                // A failover or an unreachable seed is the link's business; only a
                // changed slot layout is this watcher's.
                if let Err(SyncError::Resharded(message)) = cluster.current_nodes(&options).await {
                    let _ = tell.send(message);
                    return;
                }
            }
        });
        ReshardWatch {
            moved: Some(moved),
            task: Some(task),
        }
    }

    /// Completes (with the message) when the shard's slots have changed; never for a
    /// task that is not a shard of a cluster source.
    async fn moved(&mut self) -> String {
        if let Some(moved) = self.moved.as_mut() {
            let told = moved.await;
            // A completed receiver is never polled again.
            self.moved = None;
            if let Ok(message) = told {
                return message;
            }
        }
        std::future::pending().await
    }
}

impl Drop for ReshardWatch {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Writes the checkpoint file off the command stream's task: a tick hands the write
/// to a blocking thread and goes on; the next tick takes its result (a failure ends the
/// session) and starts the next write, or skips a turn while one is still running. The
/// target's own checkpoint key, written with the data, is the exact position; the file
/// may lag it by a tick or two.
#[derive(Default)]
struct BackgroundSaver {
    in_flight: Option<tokio::task::JoinHandle<Result<(), CheckpointError>>>,
}

impl BackgroundSaver {
    async fn save_in_background(
        &mut self,
        store: &mut CheckpointStore,
        replid: &Option<String>,
        writer: &TargetWriter,
    ) -> Result<(), SyncError> {
        if self.in_flight.as_ref().is_some_and(|h| !h.is_finished()) {
            return Ok(()); // the disk is slow: this tick's position waits for the next
        }
        self.finish().await?;
        if let (Some(replid), Some(applied)) = (replid, writer.applied()) {
            let accepted = store.accept(Checkpoint {
                replid: replid.clone(),
                offset: applied.offset,
                db: applied.db,
            })?;
            if let Some(write) = accepted {
                self.in_flight = Some(tokio::task::spawn_blocking(move || write.write()));
            }
        }
        Ok(())
    }

    /// Waits for the write in flight, if any, and returns its result.
    async fn finish(&mut self) -> Result<(), SyncError> {
        if let Some(handle) = self.in_flight.take() {
            handle.await.map_err(|e| {
                SyncError::Internal(format!("the checkpoint writer thread failed: {e}"))
            })??;
        }
        Ok(())
    }
}

/// The source's current replication id and offset (for an incremental-only task with
/// no checkpoint: it starts from now).
async fn source_position(options: &SyncOptions) -> Result<(String, i64, u32), SyncError> {
    let mut client =
        Conn::connect_to("source", &options.source, options.source_connection()).await?;
    let info = info_text(client.query(&[b"INFO".as_slice(), b"replication"]).await?);
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name).map(str::trim).map(str::to_owned))
    };
    match (
        field("master_replid:"),
        field("master_repl_offset:").and_then(|o| o.parse().ok()),
    ) {
        (Some(id), Some(offset)) => Ok((id, offset, 0)),
        _ => Err(SyncError::Internal(format!(
            "the source's INFO replication has no master_replid/master_repl_offset: {info}"
        ))),
    }
}

/// The RDB version the target reads, from its `redis_version`.
async fn target_rdb_version(writer: &mut TargetWriter) -> Result<u16, SyncError> {
    let info = info_text(writer.query(&[b"INFO".as_slice(), b"server"]).await?);
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("0")
        .trim()
        .to_owned();
    Ok(rdb_version_of(&version))
}

/// RDB version written by a Redis version (`major.minor.patch`).
pub fn rdb_version_of(redis_version: &str) -> u16 {
    let mut parts = redis_version
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    match (major, minor) {
        (0..=1, _) | (2, 0..=5) => 5,
        (2, _) | (3, 0..=1) => 6,
        (3, _) => 7,
        (4, _) => 8,
        (5..=6, _) => 9,
        (7, 0..=1) => 10,
        (7, 2..=3) => 11,
        _ => 12,
    }
}

fn info_text(frame: Frame) -> String {
    frame
        .as_bytes()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default()
}

/// Runs `work` until it ends, or fails it with [`SyncError::Stopped`] once `stop` is
/// true: a stop during a full copy drops the copy (its marker file makes the next
/// start flush the target and copy again).
async fn unless_stopped<T>(
    stop: &mut watch::Receiver<bool>,
    work: impl std::future::Future<Output = Result<T, SyncError>>,
) -> Result<T, SyncError> {
    let stopped = async {
        if stop.wait_for(|stop| *stop).await.is_err() {
            std::future::pending::<()>().await; // no one can ask any more
        }
    };
    tokio::select! {
        result = work => result,
        () = stopped => Err(SyncError::Stopped),
    }
}

/// Reads the RDB of a full resync off the link and writes every key to the target.
/// Returns the link, positioned at the start of the command stream.
async fn full_copy(
    mut link: ReplicaLink,
    writer: &mut TargetWriter,
    target_rdb_version: u16,
    ack_offset: i64,
    options: &SyncOptions,
    progress: &watch::Sender<Progress>,
) -> Result<(ReplicaLink, KeyLoader), SyncError> {
    let mut transfer = link.rdb_transfer().await?;
    let bytes_total = match &transfer {
        crate::link::RdbTransfer::Sized { remaining } => Some(*remaining),
        crate::link::RdbTransfer::Diskless { .. } => None,
    };
    progress.send_modify(|p| {
        p.phase = Phase::FullCopy;
        p.keys_copied = 0;
        p.keys_total = None;
        p.bytes_copied = 0;
        p.bytes_total = bytes_total;
    });
    let bytes_received = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let bytes_counter = bytes_received.clone();
    tracing::info!(
        diskless = transfer.is_diskless(),
        "full resync: receiving the snapshot"
    );
    // Socket -> parser thread -> this task, through bounded channels: memory stays
    // bounded by the channel capacities (chunks are at most one read buffer, events at
    // most one parser batch of 1 MiB), and a slow target slows the source.
    let (chunk_tx, chunk_rx) = mpsc::channel::<Bytes>(CHUNKS_IN_FLIGHT);
    let (event_tx, mut event_rx) =
        mpsc::channel::<Result<EventBatch, RdbError>>(EVENT_BATCHES_IN_FLIGHT);
    // Batches are also bounded by bytes: each holds permits for its element bytes
    // (at most the whole budget) until it is written, so a batch carrying a 50 MB
    // string does not have three more of its kind queued behind it (measured: 228 MiB
    // peak RSS for 20 keys of 50 MB with a count-only bound).
    let budget = std::sync::Arc::new(tokio::sync::Semaphore::new(EVENT_BYTES_IN_FLIGHT));
    let runtime = tokio::runtime::Handle::current();
    // ACKs during a disk-based transfer keep a slow copy from timing out (the source
    // counts the replica online once the file is sent). Never during a diskless one:
    // an ACK that lands just after the source has sent the end mark starts the
    // command stream right behind the mark, and the mark is then no longer the last
    // thing received (measured: ~25 s stalls until the next PINGs, with stream bytes
    // taken for RDB bytes). The source waits for our first ACK after the mark.
    let ack_during_transfer = !transfer.is_diskless();
    // Aborted when the copy is dropped (a stop, a failed session): it would otherwise
    // go on reading the snapshot and hold the replica link open until the RDB ends.
    let reader_task = AbortOnDrop::spawn(async move {
        let mut last_ack = Instant::now();
        while let Some(chunk) = link.next_rdb_chunk(&mut transfer).await? {
            bytes_counter.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
            if chunk_tx.send(chunk).await.is_err() {
                break; // the parser stopped; its error tells why
            }
            if ack_during_transfer && last_ack.elapsed() >= Duration::from_secs(1) {
                link.ack(ack_offset).await?;
                last_ack = Instant::now();
            }
        }
        Ok::<_, LinkError>(link)
    });
    // Raw capture (for RESTORE without re-encoding) stops where big keys start being
    // written in batches, so no key is ever held twice over.
    let parse_options = ParseOptions {
        capture_raw: true,
        limits: Limits {
            raw_capture_bytes_max: options.load.big_key_bytes,
            ..Limits::default()
        },
        ..ParseOptions::default()
    };
    let parser_thread = tokio::task::spawn_blocking(move || {
        let options = parse_options;
        let mut parser = RdbParser::new(
            ChannelReader {
                rx: chunk_rx,
                current: Bytes::new(),
            },
            options,
        );
        // Events go over in batches (one wake-up of the writer per batch, not per
        // key: the per-event hand-over was 28% of a full sync's time), each batch cut
        // at EVENT_BATCH_EVENTS events or EVENT_BATCH_BYTES of element data.
        let mut batch = Vec::with_capacity(EVENT_BATCH_EVENTS);
        let mut batch_bytes = 0usize;
        loop {
            if event_tx.is_closed() {
                return; // the copy was dropped: stop parsing (the reader is aborted)
            }
            match parser.next_event() {
                Ok(Some(event)) => {
                    batch_bytes += event_bytes(&event);
                    batch.push(event);
                    if batch.len() >= EVENT_BATCH_EVENTS || batch_bytes >= EVENT_BATCH_BYTES {
                        let full =
                            std::mem::replace(&mut batch, Vec::with_capacity(EVENT_BATCH_EVENTS));
                        let Some(full) = budgeted(&runtime, &budget, full, batch_bytes) else {
                            return;
                        };
                        batch_bytes = 0;
                        if event_tx.blocking_send(Ok(full)).is_err() {
                            return;
                        }
                    }
                }
                Ok(None) => {
                    if let Some(last) = budgeted(&runtime, &budget, batch, batch_bytes) {
                        let _ = event_tx.blocking_send(Ok(last));
                    }
                    return;
                }
                Err(err) => {
                    if let Some(last) = budgeted(&runtime, &budget, batch, batch_bytes) {
                        let _ = event_tx.blocking_send(Ok(last));
                    }
                    let _ = event_tx.blocking_send(Err(err));
                    return;
                }
            }
        }
    });

    let mut loader = KeyLoader::new(
        target_rdb_version,
        options.load.clone(),
        options.filter.clone(),
    );
    let mut keys_total: Option<u64> = None;
    let mut throttle = options.throttle.full();
    let mut applied: Result<(), SyncError> = Ok(());
    'batches: while let Some(batch) = event_rx.recv().await {
        // The permits go back when this batch is written (end of the loop body).
        let (events, _permits) = match batch {
            Ok(batch) => (batch.events, batch.permits),
            Err(err) => {
                applied = Err(SyncError::from(err));
                break;
            }
        };
        for event in events {
            if let Event::ResizeDb { db_size, .. } = &event {
                keys_total = Some(keys_total.unwrap_or(0) + db_size);
            }
            let (keys_before, bytes_before) = (loader.keys, loader.bytes);
            if let Err(err) = loader.on_event(event, writer).await {
                applied = Err(SyncError::from(err));
                break 'batches;
            }
            if let Some(throttle) = throttle.as_mut() {
                let wait = throttle.take(loader.keys - keys_before, loader.bytes - bytes_before);
                if !wait.is_zero() {
                    // Send what is buffered first: the target sees a steady rate.
                    if let Err(err) = writer.flush().await {
                        applied = Err(SyncError::from(err));
                        break 'batches;
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
        let bytes = bytes_received.load(std::sync::atomic::Ordering::Relaxed);
        progress.send_if_modified(|p| {
            let changed =
                (p.keys_copied, p.bytes_copied, p.keys_total) != (loader.keys, bytes, keys_total);
            if bytes != p.bytes_copied {
                // To the batch: the reader task reads, this task publishes.
                p.source_byte_at = Some(Instant::now());
            }
            p.keys_copied = loader.keys;
            p.bytes_copied = bytes;
            p.keys_total = keys_total;
            changed
        });
    }
    drop(event_rx);
    let _ = parser_thread.await;
    let link = reader_task
        .join()
        .await
        .map_err(|e| SyncError::Internal(format!("RDB reader task: {e}")))?;
    // A link that failed (silent, cut) ends the parser's input early: its error is
    // the cause, the parser's "unexpected end" only the consequence.
    let link = match (applied, link) {
        (Err(SyncError::Rdb(RdbError::UnexpectedEof { .. })), Err(cause)) => {
            return Err(cause.into())
        }
        (Err(err), _) => return Err(err),
        (Ok(_), link) => link?,
    };
    tracing::info!(
        keys = loader.keys,
        big_keys = loader.big_keys,
        "full copy written to the target"
    );
    Ok((link, loader))
}

/// A spawned task that is aborted when this handle is dropped before it is joined.
struct AbortOnDrop<T>(Option<tokio::task::JoinHandle<T>>);

impl<T: Send + 'static> AbortOnDrop<T> {
    fn spawn(work: impl std::future::Future<Output = T> + Send + 'static) -> AbortOnDrop<T> {
        AbortOnDrop(Some(tokio::spawn(work)))
    }

    /// Waits for the task's result.
    async fn join(mut self) -> Result<T, tokio::task::JoinError> {
        match self.0.take() {
            Some(handle) => handle.await,
            None => unreachable!("joined once: join takes self"),
        }
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            handle.abort();
        }
    }
}

/// `Read` over chunks arriving on a channel (the parser's side of the bridge).
struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lag_is_unknown_without_a_heartbeat_and_grows_from_the_last_one() {
        let mut progress = Progress {
            heartbeat_lag_ms: Some(1),
            ..Progress::default()
        };
        assert_eq!(progress.lag_ms(1_000_000), None, "unknown, not zero");
        progress.heartbeat_sent_unix_ms = Some(1_000_000);
        assert_eq!(progress.lag_ms(1_000_001), Some(1));
        // Nothing more arrives: the transit stays at 1 ms, the lag grows.
        assert_eq!(progress.lag_ms(1_150_000), Some(150_000));
        // A source clock ahead of lockstep's does not make a negative lag.
        assert_eq!(progress.lag_ms(999_000), Some(0));
    }
}
