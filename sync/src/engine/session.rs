//! One session of a task: one connection to each side, from PSYNC until stop or
//! failure. It decides where to resume from (the target's checkpoint key, the
//! checkpoint file, the source's answer), runs the full copy when the source asks
//! for one, then hands over to the command stream (`super::stream`), which applies
//! it in target transactions that record their position, ACKs the source and
//! stores checkpoints.
//!
//! In order: [`open_target`] (connect, fence the last session's connections, the
//! cluster's cross-slot copier), the source's connection, [`Session::plan_resume`]
//! (the pure `super::resume` decision and the file's fix before PSYNC), the answer,
//! [`Session::start`] (continue, skip the snapshot, or copy), then the stream, or,
//! in mode `Full`, the TTL guards settled at once.
//!
//! The retry loop in [`super::run`] starts sessions; a session never retries by
//! itself and never leaves a half-received source transaction applied. It is
//! generic over the [`Source`] and names no source type: the retry loop hands it
//! the source's connection to await.

use tokio::sync::watch;

use crate::apply::ClientIdentity;
use crate::checkpoint::CheckpointStore;
use crate::conn::Conn;
use crate::cross_slot::SourceCopier;
use crate::load::KeyLoader;
use crate::source::Source;
use crate::target::batch::record_start;
use crate::target::Target;
use crate::ttl_guard::{PendingSettle, Settled, Settler, TTL_GUARD_KEY};

use super::context::{Session, StreamStart};
use super::error::SyncError;
use super::full_copy::full_copy;
use super::info::{info_text, source_position, target_rdb_version};
use super::options::{Mode, SyncOptions, SKIP_KEY};
use super::progress::{Phase, Progress};
use super::resume::{Known, ResumePlan, Start};

/// One connection to each side, from PSYNC until stop or failure. The source is
/// connected by awaiting `connect_source`, once the target is ready.
pub(super) async fn session<S: Source>(
    options: &SyncOptions,
    store: &mut CheckpointStore,
    fence: &mut Vec<ClientIdentity>,
    mut stop: watch::Receiver<bool>,
    progress: &watch::Sender<Progress>,
    connect_source: impl std::future::Future<Output = Result<S, S::Error>>,
) -> Result<(), SyncError>
where
    SyncError: From<S::Error>,
{
    progress.send_modify(|p| p.phase = Phase::Connecting);
    let (writer, target_rdb_version) = open_target(options, fence).await?;
    let mut link = connect_source.await?;
    let mut session = Session {
        options,
        store,
        progress,
        writer,
        // The TTL guards of a full copy that were not settled yet (lockstep stopped
        // or killed in between): settled once the stream passes the copy's end,
        // whatever this session does (see crate::ttl_guard).
        settler: Settler {
            filter: &options.filter,
            marker_key: options.task_key(TTL_GUARD_KEY),
            pexpiretime: target_rdb_version >= 10,
        },
        settle: None,
        target_rdb_version,
    };
    let plan = session.plan_resume().await?;
    let reply = link.resume(plan.psync_from()).await?;
    let start = plan.start(reply)?;
    if let Some(why) = follow_lost(options, &plan, &start) {
        return Err(SyncError::Options(why));
    }
    let (link, from) = session.start(start, link, &mut stop).await?;
    // A stream that ends (an AOF's commands) is part of the copy, even in mode Full.
    if options.mode == Mode::Full && !S::STREAM_ENDS {
        if options.then_follow.is_some() && options.source_file.is_some() {
            // A file to follow: its guards are settled once the stream passes them.
            return Ok(());
        }
        return session.settle_now().await;
    }
    super::stream::stream(session, link, from, stop).await
}

/// `--then-follow` without a fallback, once the file is loaded: why the task stops
/// when the source does not continue from the task's position (the file's, or
/// where following it got to). `None` when it continues, or may copy in full.
fn follow_lost(options: &SyncOptions, plan: &ResumePlan, start: &Start) -> Option<String> {
    let follow = options.then_follow.as_ref()?;
    if follow.full_copy_if_lost || options.source_file.is_some() {
        return None;
    }
    let answer = match start {
        Start::Continue { .. } => return None,
        Start::CopyWithoutPositions { .. } => {
            "it refused PSYNC and offered SYNC, which continues from no position"
        }
        Start::FullCopy { .. } | Start::SkipSnapshot { .. } => "it answered +FULLRESYNC",
    };
    let Some((replid, offset)) = plan.psync_from() else {
        return Some(format!(
            "--then-follow: the target no longer holds the task's checkpoint key, which the checkpoint directory says was written: it lost data since the RDB file was loaded (restarted without persistence, or flushed), so the source cannot be followed from the file's position (fix: load the file again with a new --checkpoint-dir, or pass --then-follow-fallback full-copy to copy the source {} in full)",
            options.source
        ));
    };
    let at = format!("{replid}:{offset}");
    Some(format!(
        "--then-follow: the source {} cannot continue from the RDB file's position {at}: {answer}. The position is no longer in its backlog (more than repl-backlog-size was written since the file was saved) or is of another history; nothing after the file was written to the target (fix: load a newer RDB file, raise repl-backlog-size on the source, or pass --then-follow-fallback full-copy to copy the source in full)",
        options.source
    ))
}

/// Connects to the target, closes what the last session's connections sent (it
/// must not land after the checkpoint is read), and for a cluster target sets up
/// the copier of cross-slot commands. Returns the target and its RDB version.
async fn open_target(
    options: &SyncOptions,
    fence: &mut Vec<ClientIdentity>,
) -> Result<(Target, u16), SyncError> {
    let mut writer = Target::connect(
        &options.target,
        options.apply.clone(),
        &options.checkpoint_key(),
    )
    .await?;
    writer.fence(fence).await?;
    *fence = writer.identities();
    let target_rdb_version = target_rdb_version(&mut writer).await?;
    if writer.is_cluster() && options.script.is_some() {
        return Err(SyncError::Options(
            "--script into a cluster target is not supported: a cross-slot command (RENAME, SMOVE, ... across slots) is applied by copying its keys from the source by their source names, and a script's target names cannot be traced back to them (fix: a standalone target, or --rename-prefix for a prefix rename)".into(),
        ));
    }
    if writer.is_cluster() && options.source_aof.is_some() {
        return Err(SyncError::Options(
            "an AOF source into a cluster target is not supported: a cross-slot command (RENAME, SMOVE, ... across slots) is applied by copying its keys from the source server, which an AOF does not have (fix: replay into a standalone server, then sync that into the cluster)".into(),
        ));
    }
    // A file has no stream, so no cross-slot command to copy from it; the loader
    // refuses a key of a database other than 0 by itself.
    if writer.is_cluster() && options.source_file.is_none() {
        let mut source =
            Conn::connect_to("source", &options.source, options.source_connection()).await?;
        let keyspace = info_text(source.query(&[b"INFO".as_slice(), b"keyspace"]).await?);
        crate::cluster::check_source_dbs(&keyspace, &options.filter).map_err(SyncError::Options)?;
        // Cross-slot commands are applied by copying their keys from this source.
        let copier = SourceCopier::new(source, target_rdb_version, options.filter.clone());
        writer.copy_cross_slot_from(copier, &options.task_key(SKIP_KEY));
    }
    Ok((writer, target_rdb_version))
}

impl Session<'_> {
    /// Reads what decides the resume point, reads the TTL guards' marker, and makes
    /// the file's fix that must precede PSYNC. The target's own checkpoint key is
    /// exact (written with the data); the file may lag it by up to one checkpoint
    /// interval (see super::resume for the decision).
    async fn plan_resume(&mut self) -> Result<ResumePlan, SyncError> {
        let known = Known {
            on_target: self
                .writer
                .read_checkpoint(&self.options.checkpoint_key())
                .await?,
            in_file: self.store.last().cloned(),
            full_copy_interrupted: self.store.full_copy_interrupted(),
        };
        let plan = ResumePlan::new(known, self.options.mode);
        self.settle = self
            .settler
            .read_marker(&mut self.writer, self.options.load.ttl_guard)
            .await?;
        // Only a replacement is written now; a lost target's position is cleared
        // with the target (see FileFix::ClearAfterTargetClear).
        if let Some(exact) = plan.file.before_psync() {
            self.store.clear()?;
            self.store.store(exact.clone())?;
        }
        Ok(plan)
    }

    /// Acts on the source's answer: returns the source positioned at the start of
    /// the command stream, and that start.
    async fn start<S: Source>(
        &mut self,
        start: Start,
        mut link: S,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(S, StreamStart), SyncError>
    where
        SyncError: From<S::Error>,
    {
        match start {
            Start::Continue { replid, offset, db } => {
                self.continue_at(&replid, offset, db).await?;
                let replid = Some(replid);
                Ok((link, StreamStart { replid, offset, db }))
            }
            Start::SkipSnapshot { replid, offset } => {
                link.skip_snapshot().await?;
                record_start(&mut self.writer, self.store, &replid, offset).await?;
                tracing::info!(
                    offset,
                    "incremental only: the snapshot was skipped; applying the stream from here"
                );
                let replid = Some(replid);
                Ok((
                    link,
                    StreamStart {
                        replid,
                        offset,
                        db: 0,
                    },
                ))
            }
            Start::FullCopy {
                replid,
                offset,
                stale,
            } => {
                let link = self.copy_at(link, &replid, offset, stale, stop).await?;
                let replid = Some(replid);
                Ok((
                    link,
                    StreamStart {
                        replid,
                        offset,
                        db: 0,
                    },
                ))
            }
            Start::CopyWithoutPositions { stale } => {
                let link = self.copy_without_positions(link, stale, stop).await?;
                let start = StreamStart {
                    replid: None,
                    offset: 0,
                    db: 0,
                };
                Ok((link, start))
            }
        }
    }

    /// A partial resync: the stream continues at `offset`, in source database `db`.
    async fn continue_at(&mut self, replid: &str, offset: i64, db: u32) -> Result<(), SyncError> {
        tracing::info!(
            offset,
            db,
            "partial resync: the source continues from the checkpoint"
        );
        self.progress.send_modify(|p| {
            p.partial_syncs += 1;
            p.replid = Some(replid.to_owned());
        });
        let target_db = self.options.filter.selectable_db(db);
        self.writer.select(target_db).await?;
        Ok(())
    }

    /// A full copy whose stream starts at `offset` of `replid`, clearing the task's
    /// keys first when `stale` says why the target may hold keys the source no
    /// longer has. The copy's marker file is up while it runs.
    async fn copy_at<S: Source>(
        &mut self,
        link: S,
        replid: &str,
        offset: i64,
        stale: Option<String>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<S, SyncError>
    where
        SyncError: From<S::Error>,
    {
        self.before_copy("full resync", stale).await?;
        let (link, loader) = self.copy(link, offset, stop).await?;
        if loader.expired_dropped() > 0 {
            tracing::info!(
                keys = loader.expired_dropped(),
                "keys whose expiry had passed were not written (as a server loading the file drops them)"
            );
        }
        // The TTL guards' marker goes to the target before the checkpoint that says
        // the copy is done: a session that ends in between (the source position
        // below is one more connection to the source) copies again rather than
        // resume with guards nobody will settle (found by the explorer: seed 20789
        // episode 0).
        if loader.guarded_ttls() > 0 {
            let (_, after_copy, _) = source_position(self.options).await?;
            let pending = PendingSettle::after_copy(after_copy, self.options.load.ttl_guard);
            self.settler
                .write_marker(&mut self.writer, &pending)
                .await?;
            self.settle = Some(pending);
        } else if let Some(older) = self.settle.as_mut() {
            // An older copy's marker: its offset may be of another history.
            older.after_offset = offset;
        }
        self.record_copy_position(replid, offset).await?;
        // The copy is done and its position stored on both sides: the marker no
        // longer says anything true.
        self.store.set_full_copy_in_progress(false)?;
        self.progress.send_modify(|p| {
            p.full_syncs += 1;
            p.applied_offset = offset;
            p.received_offset = offset;
            p.replid = Some(replid.to_owned());
        });
        Ok(link)
    }

    /// Records where the stream after a copy starts: at `offset` of `replid` in
    /// database 0 (a new replica's stream starts with a SELECT), or, for a file to
    /// follow, in the database the file says its source's stream had selected there.
    async fn record_copy_position(&mut self, replid: &str, offset: i64) -> Result<(), SyncError> {
        let follow = self.options.then_follow.as_ref();
        let file_db = follow
            .and_then(|f| f.from.as_ref())
            .filter(|_| self.options.source_file.is_some())
            .map(|at| at.db);
        let Some(db) = file_db else {
            record_start(&mut self.writer, self.store, replid, offset).await?;
            return Ok(());
        };
        let start = crate::checkpoint::Checkpoint {
            replid: replid.to_owned(),
            offset,
            db,
        };
        self.writer.record_checkpoint(&start).await?;
        self.store.store(start)?;
        Ok(())
    }

    /// A copy after SYNC: no replication id or offset, so it never ends with a
    /// resume point. Like [`Self::copy_at`], it clears the task's keys first when
    /// `stale` says why; unlike it, its marker stays up after it: the next session
    /// must copy again, over keys the source may have deleted in between, so it
    /// clears first.
    async fn copy_without_positions<S: Source>(
        &mut self,
        link: S,
        stale: Option<String>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<S, SyncError>
    where
        SyncError: From<S::Error>,
    {
        self.before_copy("full copy by SYNC", stale).await?;
        let (link, loader) = self.copy(link, 0, stop).await?;
        if loader.guarded_ttls() > 0 {
            // SYNC has no offsets: settled at the first checkpoint tick.
            let pending = PendingSettle::after_copy(0, self.options.load.ttl_guard);
            self.settler
                .write_marker(&mut self.writer, &pending)
                .await?;
            self.settle = Some(pending);
        }
        // A full copy happened, whatever the source's answer was called: /status
        // and the summary must not say 0 full syncs after one.
        self.progress.send_modify(|p| p.full_syncs += 1);
        Ok(link)
    }

    /// What precedes every full copy (`what`: which, for the log): the task's keys
    /// removed when `stale` says why the target may hold keys the source no longer
    /// has, then the copy's marker up, then the old position forgotten. The
    /// position goes only after the clear and the marker: at no moment does the
    /// directory say less than "this target may hold stale keys".
    async fn before_copy(&mut self, what: &str, stale: Option<String>) -> Result<(), SyncError> {
        let stale_cleared = stale.is_some();
        if let Some(why) = stale {
            tracing::warn!("{what}: {why}; removing the task's keys from the target first so it ends equal to the source, not a superset");
            let filter = &self.options.filter;
            self.writer
                .clear(&filter.clear_scope(), |db, k| filter.owns_key_in(db, k))
                .await?;
        }
        self.store.set_full_copy_in_progress(true)?;
        if stale_cleared {
            self.store.clear()?;
        }
        Ok(())
    }

    /// The snapshot into the target (ACKing `ack_offset` while it lasts), unless
    /// stopped, and drained.
    async fn copy<S: Source>(
        &mut self,
        link: S,
        ack_offset: i64,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(S, KeyLoader), SyncError>
    where
        SyncError: From<S::Error>,
    {
        let copy = full_copy(
            link,
            &mut self.writer,
            self.target_rdb_version,
            ack_offset,
            self.options,
            self.progress,
        );
        let copied = unless_stopped(stop, copy).await?;
        self.writer.drain().await?;
        Ok(copied)
    }

    /// Mode `Full`: nothing more will be applied, so every key gets its real TTL now.
    async fn settle_now(mut self) -> Result<(), SyncError> {
        if let Some(mut pending) = self.settle.take() {
            let settled =
                settle_when_trusted(&self.settler, &mut self.writer, &mut pending).await?;
            self.progress
                .send_modify(|p| p.ttls_settled += settled.keys);
        }
        Ok(())
    }
}

/// Settles `pending` (a copy in mode `Full`, nothing follows): a pass the target
/// cluster's slot migrations make untrusted is tried again, for a minute at most;
/// after that the marker stays and the next run settles.
async fn settle_when_trusted(
    settler: &Settler<'_>,
    writer: &mut Target,
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
