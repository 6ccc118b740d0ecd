//! One session of a task: one connection to each side, from PSYNC until stop or
//! failure. It decides where to resume from (the target's checkpoint key, the
//! checkpoint file, the source's PSYNC answer), runs the full copy when the source
//! asks for one, then applies the command stream in target transactions that record
//! their position, ACKs the source and stores checkpoints.
//!
//! The retry loop in [`super::run`] starts sessions; a session never retries by
//! itself and never leaves a half-received source transaction applied. It is
//! generic over the [`Source`] and names no source type: the retry loop hands it
//! the source's connection to await.

use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::apply::{ClientIdentity, Position};
use crate::checkpoint::CheckpointStore;
use crate::conn::Conn;
use crate::cross_slot::SourceCopier;
use crate::endpoint::Endpoint;
use crate::resp::Entry;
use crate::source::replica::LinkError;
use crate::source::{Acknowledge, Source};
use crate::target::Target;
use crate::ttl_guard::{PendingSettle, Settled, Settler, TTL_GUARD_KEY};

use super::classify::{classify, Action};
use super::error::SyncError;
use super::full_copy::full_copy;
use super::heartbeat::Heartbeat;
use super::info::{info_text, source_position, target_rdb_version};
use super::options::{Mode, SyncOptions, SKIP_KEY};
use super::progress::{Phase, Progress};
use super::reshard::ReshardWatch;
use super::resume::{FileFix, Known, ResumePlan, Start};
use super::saver::{save, BackgroundSaver};
use crate::clock::unix_ms;
use crate::target::{record_start, TargetBatch, BATCH_COMMANDS_MAX};

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
    let mut writer = Target::connect(
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
    let mut link = connect_source.await?;

    // The target's own checkpoint key is exact (written with the data); the file may
    // lag it by up to one checkpoint interval (see super::resume for the decision).
    let plan = ResumePlan::new(
        Known {
            on_target: writer.read_checkpoint(&options.checkpoint_key()).await?,
            in_file: store.last().cloned(),
            full_copy_interrupted: store.full_copy_interrupted(),
        },
        options.mode,
    );
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
    // Only a replacement is written now; a lost target's position is cleared with
    // the target (see FileFix::ClearAfterTargetClear).
    if let Some(exact) = plan.file.before_psync() {
        store.clear()?;
        store.store(exact.clone())?;
    }
    let reply = link.resume(plan.psync_from()).await?;
    let (replid, start_offset, db) = match plan.start(reply)? {
        Start::Continue {
            replid: id,
            offset,
            db,
        } => {
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
            writer.select(target_db).await?;
            (Some(id), offset, db)
        }
        Start::SkipSnapshot { replid, offset } => {
            link.skip_snapshot().await?;
            record_start(&mut writer, store, &replid, offset).await?;
            tracing::info!(
                offset,
                "incremental only: the snapshot was skipped; applying the stream from here"
            );
            (Some(replid), offset, 0)
        }
        Start::FullCopy {
            replid,
            offset,
            stale,
        } => {
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
            record_start(&mut writer, store, &replid, offset).await?;
            // The copy is done and its position stored on both sides: the marker no
            // longer says anything true.
            store.set_full_copy_in_progress(false)?;
            progress.send_modify(|p| {
                p.full_syncs += 1;
                p.applied_offset = offset;
                p.received_offset = offset;
                p.replid = Some(replid.clone());
            });
            (Some(replid), offset, 0)
        }
        Start::CopyWithoutPositions => {
            // SYNC never resumes: the lost target's position is of no further use
            // (and SYNC's copy does not clear; as before).
            if plan.file == FileFix::ClearAfterTargetClear {
                store.clear()?;
            }
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
    let mut batch = TargetBatch::new(replid.clone());
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
                                    batch.select(&mut writer, target_db).await?;
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
                                    writer.select(target_db).await?;
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
                            .map_err(SyncError::Apply)
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

/// Stream entries handled in one go from what has arrived before the loop looks at
/// its timers and the stop signal again.
const DRAIN_ENTRIES_MAX: usize = 4096;

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
