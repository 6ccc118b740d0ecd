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
//!
//! # Code map
//! - `options`: what a task is told ([`SyncOptions`], [`Mode`], the task's key names);
//! - `error`: why it stopped ([`SyncError`]) and which failures are retried;
//! - `progress`: what it publishes ([`Progress`], [`Phase`], [`Summary`]);
//! - this file: [`run`], the retry loop that starts one session after another;
//! - `session`: one session, from the target's connection and the resume decision
//!   to the copy (or the continuation), handing over to `stream`;
//! - `stream`: the command stream of a session, its batching, ticks and end;
//! - `context`: what a session holds (shared by `session` and `stream`);
//! - `full_copy`: the snapshot through the parser into the target;
//! - `resume`: the resume decision, pure (from checkpoints and the source's answer);
//! - `retry`: the retry loop's waits and give-up, pure;
//! - `classify`, `heartbeat`, `reshard`, `saver`, `info`: the session's helpers.
//!
//! The session, the stream and the full copy are generic over the
//! [`crate::source::Source`] contract; only [`run`] names the replica link.
//!
//! The engine never judges its own result (verify reads both sides for that), never
//! marks as applied what the target has not answered, and never writes to the
//! source except lockstep's heartbeat key.

mod classify;
mod context;
pub(crate) mod error;
mod full_copy;
mod heartbeat;
mod info;
pub(crate) mod options;
mod progress;
mod reshard;
mod resume;
mod retry;
mod saver;
mod session;
mod stream;

use std::time::Instant;

use tokio::sync::watch;

use crate::apply::ClientIdentity;
use crate::checkpoint::CheckpointStore;
use crate::source::aof::AofSource;
use crate::source::rdb_file::{replication_position, RdbFile};
use crate::source::replica::ReplicaLink;
use crate::source::scan::{ScanOptions, ScanSource};

pub use crate::clock::unix_ms;
pub use error::SyncError;
pub use heartbeat::HEARTBEAT_PREFIX;
pub use info::{rdb_version_of, rdb_version_of_server};
pub use options::{
    validate_task_name, Mode, SourceMode, SyncOptions, ThenFollow, DEFAULT_TASK_NAME,
    SCAN_DIRTY_KEYS_MAX, SKIP_KEY, TARGET_CHECKPOINT_KEY,
};
pub use progress::{Phase, Progress, Summary};

use error::RetryClass;
use retry::{ceiling_after, progressed, Retries};
use session::session;

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
    if options.script.is_some() {
        crate::script::check_filter(&options.filter).map_err(SyncError::Options)?;
    }
    let mut options = options;
    read_file_position(&mut options)?;
    let mut store = CheckpointStore::open(&options.checkpoint_dir)?;
    let mut retries = Retries::default();
    // The target connections of the last session, closed by the next one.
    let mut fence: Vec<ClientIdentity> = Vec::new();
    loop {
        let before = progress.borrow().clone();
        let outcome = one_session(&mut options, &mut store, &mut fence, &stop, &progress).await;
        let err = match outcome {
            Ok(()) if follow_after_file(&mut options) => {
                retries = Retries::default();
                continue;
            }
            Ok(()) => {
                progress.send_modify(|p| p.phase = Phase::Done);
                return Ok(Summary {
                    progress: progress.borrow().clone(),
                    checkpoint: store.last().cloned(),
                });
            }
            Err(err) => err,
        };
        if falls_back_to_scan(&mut options, &err) {
            continue;
        }
        let class = match err.retry_class() {
            Some(class) if !*stop.borrow() => class,
            _ => return Err(err),
        };
        let window = match class {
            RetryClass::Connection => options.retry_window,
            RetryClass::Other => options.other_retry_window,
        };
        let progressed = progressed(&before, &progress.borrow());
        let ceiling = ceiling_after(&err);
        let Some(backoff) = retries.after_failure(Instant::now(), progressed, window, ceiling)
        else {
            return Err(SyncError::GaveUp {
                window,
                last: Box::new(err),
            });
        };
        progress.send_modify(|p| p.last_error = Some(err.to_string()));
        tracing::warn!("sync session ended: {err}; retrying in {backoff:?} (giving up {:?} after the failures began)", window);
        tokio::time::sleep(backoff).await;
    }
}

/// `--then-follow`: the file's replication position, read before anything is
/// loaded; a file without one is refused (nothing to follow from).
fn read_file_position(options: &mut SyncOptions) -> Result<(), SyncError> {
    let (Some(path), Some(follow)) = (&options.source_file, options.then_follow.as_mut()) else {
        return Ok(());
    };
    let Some(at) = replication_position(path)? else {
        return Err(SyncError::Options(format!(
            "--then-follow: the RDB file {} has no repl-id and repl-offset aux fields, so there is no position to follow the source from (a primary writes them only once it has a replication backlog, i.e. after a replica connected; fix: save the file after a replica connected, take it from a replica, or load it without --then-follow)",
            path.display()
        )));
    };
    tracing::info!(replid = %at.replid, offset = at.offset, db = at.db, "--then-follow: the RDB file was saved at this replication position");
    follow.from = Some(at);
    Ok(())
}

/// After the file session of a `--then-follow` task: the task becomes a
/// `full+incremental` task of its source, from the checkpoint the file's load
/// recorded: so a target that lost that checkpoint is noticed (not followed as if it
/// held the file), and without the fallback `session::follow_lost` stops every start
/// other than a continuation. False for any other task, which is done.
fn follow_after_file(options: &mut SyncOptions) -> bool {
    if options.then_follow.is_none() || options.source_file.take().is_none() {
        return false;
    }
    options.mode = Mode::FullAndIncremental;
    tracing::info!(source = %options.source, "the RDB file is loaded: following the source by PSYNC from the file's position");
    true
}

/// One session over a replica link. A shard of a cluster source first asks the
/// cluster which node to read: its primary may have changed (failover).
async fn one_session(
    options: &mut SyncOptions,
    store: &mut CheckpointStore,
    fence: &mut Vec<ClientIdentity>,
    stop: &watch::Receiver<bool>,
    progress: &watch::Sender<Progress>,
) -> Result<(), SyncError> {
    if let Some(cluster) = options.source_cluster.clone() {
        let nodes = cluster.current_nodes(options).await?;
        if nodes.read != options.source {
            tracing::info!(from = %options.source, to = %nodes.read, "the shard's node changed: following it");
        }
        options.source = nodes.read;
        options.heartbeat_at = Some(nodes.primary);
    }
    let options = &*options;
    if let Some(path) = &options.source_file {
        let follow = options.then_follow.as_ref().and_then(|f| f.from.clone());
        let file = async {
            let file = RdbFile::open(path)?;
            Ok::<_, crate::source::rdb_file::FileSourceError>(match follow {
                Some(at) => file.following(at),
                None => file,
            })
        };
        return session(options, store, fence, stop.clone(), progress, file)
            .await
            .map_err(|err| match err {
                // The file's bytes: parsing them again fails again (no retry).
                SyncError::Rdb(e) => SyncError::FileUnreadable {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                },
                other => other,
            });
    }
    if let Some(spec) = &options.source_aof {
        let aof = AofSource::open(spec);
        return session(options, store, fence, stop.clone(), progress, aof).await;
    }
    if options.source_mode == SourceMode::Scan {
        let scan = ScanSource::connect(&options.source, scan_options(options));
        return session(options, store, fence, stop.clone(), progress, scan).await;
    }
    let link = ReplicaLink::connect(&options.source, &options.link);
    session(options, store, fence, stop.clone(), progress, link).await
}

/// What the scan source is told, from the task's options.
fn scan_options(options: &SyncOptions) -> ScanOptions {
    ScanOptions {
        connection: options.source_connection(),
        dbs: (!options.filter.dbs.is_empty()).then(|| options.filter.dbs.clone()),
        follow: options.mode != Mode::Full,
        probe_key: options
            .heartbeat
            .then(|| heartbeat::Heartbeat::key(options)),
        dirty_keys_max: options.scan_dirty_keys_max,
        read_timeout: options.link.read_timeout,
        limits: options.link.limits.clone(),
        stats: options.scan_stats.clone(),
    }
}

/// In `--source-mode auto`, a source that refuses PSYNC and SYNC is read key by
/// key: true (and the mode switched, with the reason logged) when `err` is that.
fn falls_back_to_scan(options: &mut SyncOptions, err: &SyncError) -> bool {
    let refused = matches!(
        err,
        SyncError::Link(crate::source::replica::LinkError::Refused { .. })
    );
    let other_source = options.source_file.is_some() || options.source_aof.is_some();
    if !refused || options.source_mode != SourceMode::Auto || other_source {
        return false;
    }
    tracing::warn!("{err}; switching to --source-mode scan: the source is read key by key (SCAN, DUMP, PTTL) and followed by keyspace notifications (docs/consistency.md, \"Scan mode\")");
    options.source_mode = SourceMode::Scan;
    true
}
