//! The command stream of a session: from the start position the session settled on
//! until stop or failure, every entry classified and applied to the target in
//! transactions that record their position (`TargetBatch`), closed when what has
//! arrived is used up, when one is long enough, or at the throttle's pause, never
//! inside a source MULTI/EXEC block.
//!
//! Around the entries: every second the ACK tick (the source's silence, the
//! target's answers, `REPLCONF ACK` of the applied offset, the heartbeat); every
//! checkpoint interval the checkpoint tick (the file written in the background, the
//! progress published, the TTL guards settled once due). When the session ends, for
//! whatever reason, [`Streaming::end`] keeps what the target has applied: it drops a
//! half-received source transaction, drains and stores the position. A source
//! whose stream ends ([`Source::STREAM_ENDS`], an AOF) ends it with
//! [`SyncError::StreamEnded`], kept like a stop: the task is done.
//!
//! It never decides where to resume or whether to copy (the session does), and it
//! never marks as applied what the target has not answered.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::watch;
use tokio::time::Interval;

use crate::apply::Position;
use crate::clock::unix_ms;
use crate::endpoint::Endpoint;
use crate::resp::{Command, CommandStream, Entry, ReadError};
use crate::source::replica::LinkError;
use crate::source::{Acknowledge, Source};
use crate::target::batch::{TargetBatch, BATCH_COMMANDS_MAX};
use crate::throttle::Throttle;

use super::classify::{classify, Action};
use super::context::{Session, StreamStart};
use super::error::SyncError;
use super::heartbeat::Heartbeat;
use super::progress::Phase;
use super::reshard::ReshardWatch;
use super::saver::{save, BackgroundSaver};

/// Stream entries handled in one go from what has arrived before the loop looks at
/// its timers and the stop signal again.
const DRAIN_ENTRIES_MAX: usize = 4096;

/// Applies the command stream of `link` from `start` until `stop` or a failure.
pub(super) async fn stream<S: Source>(
    session: Session<'_>,
    link: S,
    start: StreamStart,
    mut stop: watch::Receiver<bool>,
) -> Result<(), SyncError>
where
    SyncError: From<S::Error>,
{
    let options = session.options;
    session
        .progress
        .send_modify(|p| p.phase = Phase::Incremental);
    let heartbeat = match options.heartbeat {
        true => Heartbeat::connect(options).await,
        false => None,
    };
    let mut streaming = Streaming::new(session, link, start, heartbeat);
    // The target stands at the start offset: from now on every tick ACKs at least
    // that. (After a diskless copy the source starts the stream only on an ACK that
    // arrives after it has seen the transfer end; an early first ACK is ignored, so
    // the ticks must not wait for the first applied command, or both sides wait.)
    streaming.acker.ack(streaming.here.offset).await?;
    let mut timers = Timers {
        ack: tokio::time::interval(Duration::from_secs(1)),
        checkpoint: tokio::time::interval(options.checkpoint_interval),
        // A shard of a cluster source watches its slots while it streams: a reshard
        // ends the task with the watcher's message.
        reshard: ReshardWatch::start(options),
    };
    loop {
        if let Err(err) = streaming.step(&mut stop, &mut timers).await {
            return streaming.end(err).await;
        }
    }
}

/// What wakes the loop besides the stream and the target.
struct Timers {
    ack: Interval,
    checkpoint: Interval,
    reshard: ReshardWatch,
}

/// The stream loop's state.
struct Streaming<'a, S: Source> {
    session: Session<'a>,
    stream: CommandStream<S::Stream>,
    acker: S::Acker,
    heartbeat: Option<Heartbeat>,
    replid: Option<String>,
    batch: TargetBatch,
    /// The position of the last entry read, in the source's database there.
    here: Position,
    /// Inside a MULTI/EXEC block of the source: its commands go into the same target
    /// transaction, which is not closed before the block ends.
    in_multi: bool,
    commands_applied: u64,
    /// The stream is not read until `resume_at` when the throttle asks for a pause;
    /// ACKs and checkpoints go on meanwhile.
    throttle: Option<Throttle>,
    resume_at: Instant,
    saver: BackgroundSaver,
    /// The source's silence counts from here at the earliest: the last byte of a
    /// full copy may have arrived long before the target had written it all.
    stream_started: Instant,
}

impl<'a, S: Source> Streaming<'a, S>
where
    SyncError: From<S::Error>,
{
    fn new(
        mut session: Session<'a>,
        link: S,
        start: StreamStart,
        heartbeat: Option<Heartbeat>,
    ) -> Streaming<'a, S> {
        let (stream, acker) = link.into_stream(start.offset);
        let here = Position {
            offset: start.offset,
            db: start.db,
        };
        session.writer.mark_position(here);
        let commands_applied = session.progress.borrow().commands_applied;
        let throttle = session.options.throttle.incremental();
        Streaming {
            session,
            stream,
            acker,
            heartbeat,
            batch: TargetBatch::new(start.replid.clone()),
            replid: start.replid,
            here,
            in_multi: false,
            commands_applied,
            throttle,
            resume_at: Instant::now(),
            saver: BackgroundSaver::default(),
            stream_started: Instant::now(),
        }
    }

    /// Waits for the next thing to do and does it.
    async fn step(
        &mut self,
        stop: &mut watch::Receiver<bool>,
        timers: &mut Timers,
    ) -> Result<(), SyncError> {
        let paused = self.throttle.is_some() && self.resume_at > Instant::now();
        let holding = self.session.writer.is_holding();
        tokio::select! {
            biased;
            _ = stop.changed() => {
                if *stop.borrow() {
                    return Err(SyncError::Stopped);
                }
            }
            moved = timers.reshard.moved() => return Err(SyncError::Resharded(moved)),
            _ = timers.ack.tick() => self.on_ack_tick().await?,
            _ = timers.checkpoint.tick() => self.on_checkpoint_tick().await?,
            _ = tokio::time::sleep_until(self.resume_at.into()), if paused => {}
            // A transaction is held until the last one's EXEC is answered: send it
            // as soon as that reply arrives, not at the next stream data or tick.
            arrived = self.session.writer.replies_arrived(), if holding => {
                arrived?;
                self.session.writer.poll_replies().await?;
            }
            next = self.stream.next(), if !paused => self.on_arrived(next).await?,
        }
        Ok(())
    }

    /// Every second: the source's silence, the target's answers, the ACK of what is
    /// applied, the heartbeat.
    async fn on_ack_tick(&mut self) -> Result<(), SyncError> {
        let options = self.session.options;
        let timeout = options.link.read_timeout;
        check_source_alive(
            &mut self.stream,
            &options.source,
            timeout,
            self.stream_started,
        )
        .await?;
        let writer = &mut self.session.writer;
        writer.flush().await?;
        writer.poll_replies().await?;
        writer.check_answering()?;
        self.ack_applied().await?;
        if let Some(beat) = self.heartbeat.as_mut() {
            if !beat.beat().await {
                self.heartbeat = None;
            }
        }
        Ok(())
    }

    /// `REPLCONF ACK` (or the source's equivalent) of the offset the target applied.
    async fn ack_applied(&mut self) -> Result<(), SyncError> {
        if let Some(applied) = self.session.writer.applied() {
            self.acker.ack(applied.offset).await?;
        }
        Ok(())
    }

    /// Every checkpoint interval: the checkpoint file (in the background), the
    /// progress, and the TTL guards once the stream has passed the copy's end.
    async fn on_checkpoint_tick(&mut self) -> Result<(), SyncError> {
        let session = &mut self.session;
        session.writer.flush().await?;
        session.writer.poll_replies().await?;
        self.saver
            .save_in_background(session.store, &self.replid, &session.writer)
            .await?;
        self.publish_progress();
        if let Some(applied) = self.session.writer.applied() {
            self.session
                .progress
                .send_modify(|p| p.applied_offset = applied.offset);
            self.settle_if_due(applied.offset).await?;
        }
        Ok(())
    }

    /// Progress is published on the tick, not per command: a watch send per stream
    /// entry woke every status reader on the hot path.
    fn publish_progress(&self) {
        let received = self.here.offset;
        let commands_applied = self.commands_applied;
        let source_byte_at = self.stream.reader().last_read();
        let target_reply_at = self.session.writer.last_reply_at();
        self.session.progress.send_modify(|p| {
            p.received_offset = received;
            p.commands_applied = commands_applied;
            p.source_byte_at = source_byte_at.or(p.source_byte_at);
            p.target_reply_at = target_reply_at.or(p.target_reply_at);
        });
    }

    /// Settles the full copy's TTL guards once `applied` has passed the copy's end,
    /// between transactions.
    async fn settle_if_due(&mut self, applied: i64) -> Result<(), SyncError> {
        let session = &mut self.session;
        let due = session
            .settle
            .as_ref()
            .is_some_and(|pending| pending.is_due(applied));
        let Some(pending) = session.settle.as_mut() else {
            return Ok(());
        };
        if !due || self.batch.open {
            return Ok(());
        }
        let db = session.options.filter.selectable_db(self.here.db);
        let settled = session
            .settler
            .settle(&mut session.writer, pending, db)
            .await?;
        if let Some(settled) = settled {
            tracing::info!(
                settled = settled.keys,
                scanned = settled.scanned,
                "TTL guards of the full copy settled"
            );
            session
                .progress
                .send_modify(|p| p.ttls_settled += settled.keys);
            session.settle = None;
        }
        Ok(())
    }

    /// Everything that has arrived is handled here, not one select! round per
    /// command (polling the stop channel and the timers per command was ~10% of
    /// lockstep's CPU under load); the timers get their turn at least every
    /// [`DRAIN_ENTRIES_MAX`] entries.
    async fn on_arrived(
        &mut self,
        mut next: Result<Option<(Entry, i64)>, ReadError>,
    ) -> Result<(), SyncError> {
        let mut drained = 0;
        loop {
            let (entry, offset) = self.entry_or_end(next)?;
            let pause = self.on_entry(entry, offset).await?;
            let arrived_all = self.stream.reader_mut().buffer().is_empty();
            self.close_if_due(arrived_all, pause).await?;
            drained += 1;
            if arrived_all || pause || drained >= DRAIN_ENTRIES_MAX {
                return Ok(());
            }
            next = match self.stream.next_buffered() {
                // The rest of a command is still on its way.
                Ok(None) => return Ok(()),
                other => other,
            };
        }
    }

    /// The entry read, or the error that ends the stream.
    fn entry_or_end(
        &self,
        next: Result<Option<(Entry, i64)>, ReadError>,
    ) -> Result<(Entry, i64), SyncError> {
        let endpoint = || self.session.options.source.to_string();
        match next {
            Ok(Some(next)) => Ok(next),
            Ok(None) if S::STREAM_ENDS => Err(SyncError::StreamEnded),
            Ok(None) => Err(LinkError::Closed {
                endpoint: endpoint(),
                during: "during the command stream",
            }
            .into()),
            Err(source) => Err(LinkError::Read {
                endpoint: endpoint(),
                during: "the command stream",
                source,
            }
            .into()),
        }
    }

    /// Applies one entry at `offset`; true when the throttle asks for a pause.
    async fn on_entry(&mut self, entry: Entry, offset: i64) -> Result<bool, SyncError> {
        self.session
            .writer
            .set_stream_position(offset, self.here.db);
        let mut pause = false;
        if let Entry::Command(mut command) = entry {
            pause = self.take_throttle(&command);
            let action = classify(&mut command, self.session.options, self.here.db)?;
            self.apply(action, &command).await?;
        }
        self.here.offset = offset;
        Ok(pause)
    }

    /// Takes `command` from the throttle; true (and the pause's end set) when it
    /// asks to wait.
    fn take_throttle(&mut self, command: &Command) -> bool {
        let Some(throttle) = self.throttle.as_mut() else {
            return false;
        };
        let wait = throttle.take(1, command.wire_bytes as u64);
        if wait.is_zero() {
            return false;
        }
        self.resume_at = Instant::now() + wait;
        true
    }

    /// Does what `classify` decided for `command`.
    async fn apply(&mut self, action: Action, command: &Command) -> Result<(), SyncError> {
        let writer = &mut self.session.writer;
        match action {
            Action::Select(new_db) => {
                self.here.db = new_db;
                let target_db = self.session.options.filter.selectable_db(new_db);
                self.batch.select(writer, target_db).await?;
            }
            Action::Multi => self.in_multi = true,
            Action::Exec => self.in_multi = false,
            Action::GetAck => {
                writer.flush().await?;
                writer.poll_replies().await?;
                self.ack_applied().await?;
            }
            Action::Heartbeat => self.saw_heartbeat(command),
            Action::Skip => {}
            Action::Rewrite(commands) => {
                self.commands_applied += 1;
                let version = self.session.target_rdb_version;
                for argv in &commands {
                    match readable_restore(argv, version)? {
                        Some(readable) => self.batch.add(writer, &readable).await?,
                        None => self.batch.add(writer, argv).await?,
                    }
                }
            }
            Action::Apply => {
                self.commands_applied += 1;
                match readable_restore(&command.argv, self.session.target_rdb_version)? {
                    Some(readable) => self.batch.add(writer, &readable).await?,
                    None => self.batch.add(writer, &command.argv).await?,
                }
            }
            Action::ClearOwnKeys { db } => {
                self.commands_applied += 1;
                self.clear_own_keys(db).await?;
            }
        }
        Ok(())
    }

    /// lockstep's heartbeat seen in the stream: the lag it measures.
    fn saw_heartbeat(&self, command: &Command) {
        if let Some(sent_ms) = Heartbeat::sent_ms(command) {
            self.session.progress.send_modify(|p| {
                p.heartbeat_lag_ms = Some(unix_ms() - sent_ms);
                p.heartbeat_sent_unix_ms = Some(sent_ms);
                p.heartbeat_seen_at = Some(Instant::now());
            });
        }
    }

    /// A FLUSHALL / FLUSHDB of this shard of a cluster source, or of a source whose
    /// keys are renamed: everything before it applied first, then the task's keys
    /// removed from the target (of target database `db`; None: of every database
    /// the task writes). A kill during the clear repeats it (it is idempotent).
    async fn clear_own_keys(&mut self, db: Option<u32>) -> Result<(), SyncError> {
        let writer = &mut self.session.writer;
        let filter = &self.session.options.filter;
        self.batch.close(writer, self.here).await?;
        writer.drain().await?;
        let scope = match db {
            Some(db) => filter.clear_scope_in(db),
            None => filter.clear_scope(),
        };
        let removed = writer
            .clear(&scope, |db, k| filter.owns_key_in(db, k))
            .await?;
        tracing::info!(
            removed,
            "the source flushed: the task's keys removed from the target"
        );
        writer.select(filter.selectable_db(self.here.db)).await?;
        Ok(())
    }

    /// Closes the transaction when what has arrived is used up (low latency), at a
    /// pause, or when it is long enough, never inside a source MULTI; and with
    /// nothing more to batch with, sends now and takes the replies already there
    /// (keeps the window open).
    async fn close_if_due(&mut self, arrived_all: bool, pause: bool) -> Result<(), SyncError> {
        let writer = &mut self.session.writer;
        let long_enough = self.batch.commands >= BATCH_COMMANDS_MAX;
        if !self.in_multi && (arrived_all || pause || long_enough) {
            self.batch.close(writer, self.here).await?;
        }
        if arrived_all || pause {
            writer.flush().await?;
            writer.poll_replies().await?;
        }
        Ok(())
    }

    /// Whatever ended the session (`err`), keeps what the target has applied; a stop
    /// is a clean end. If the target itself failed, keeping fails too and the
    /// target's own checkpoint key (written with the data) is what the next session
    /// trusts. The file write in flight ends first: never two writers of one file.
    async fn end(mut self, err: SyncError) -> Result<(), SyncError> {
        let finished = self.saver.finish().await;
        let kept = self.keep_applied(&err).await;
        if let Err(lost) = finished.and(kept) {
            tracing::debug!("could not drain the target at the end of the session: {lost}");
        }
        match err {
            SyncError::Stopped | SyncError::StreamEnded => Ok(()),
            other => Err(other),
        }
    }

    /// Drops a half-received source transaction, drains, stores the position; after
    /// a stop with the stream past the copy's end, settles the TTL guards rather
    /// than leave them to the next run.
    async fn keep_applied(&mut self, err: &SyncError) -> Result<(), SyncError> {
        if matches!(err, SyncError::Apply(_)) {
            // The target refused or failed: mark nothing more as applied.
            return Ok(());
        }
        let session = &mut self.session;
        self.batch
            .abandon_or_close(&mut session.writer, self.here, self.in_multi)
            .await?;
        session.writer.drain().await?;
        save(session.store, &self.replid, &session.writer)?;
        let due = session
            .settle
            .as_ref()
            .zip(session.writer.applied())
            .is_some_and(|(p, a)| p.is_due(a.offset));
        match session.settle.as_mut() {
            Some(pending) if due && matches!(err, SyncError::Stopped | SyncError::StreamEnded) => {
                let db = session.options.filter.selectable_db(self.here.db);
                session
                    .settler
                    .settle(&mut session.writer, pending, db)
                    .await?;
                Ok(())
            }
            _ => Ok(()),
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
    stream: &mut CommandStream<R>,
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
            source: ReadError::Io(e),
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

/// A `RESTORE` whose payload is of a newer RDB version than the target's (a
/// source of a newer Redis; the scan source writes every change so), with the
/// payload encoded for the target; `None` when `argv` is fine as it is.
fn readable_restore(argv: &[Bytes], target_version: u16) -> Result<Option<Vec<Bytes>>, SyncError> {
    let is_restore = argv
        .first()
        .is_some_and(|name| name.eq_ignore_ascii_case(b"RESTORE"));
    let (true, Some(payload)) = (is_restore, argv.get(3)) else {
        return Ok(None);
    };
    let encoded = crate::rdb::dump::readable_by(payload, target_version).map_err(|e| {
        let key = argv
            .get(1)
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default();
        crate::rdb::RdbError::Encode {
            what: "a RESTORE of the stream",
            detail: format!("RESTORE {key:?} for the target's RDB version {target_version}: {e}"),
        }
    })?;
    Ok(encoded.map(|payload| {
        let mut readable = argv.to_vec();
        readable[3] = Bytes::from(payload);
        readable
    }))
}
