//! The full copy: the RDB of a full resync read off the replica link, parsed on a
//! blocking thread and written key by key to the target.
//!
//! Socket -> reader task -> parser thread -> this task, through bounded channels and
//! a byte budget, so memory stays bounded whatever the snapshot holds and a slow
//! target slows the source. The copy never decides whether to copy (the session
//! does) and never records a checkpoint: it returns the link positioned at the start
//! of the command stream.

use std::io::Read;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use crate::load::KeyLoader;
use crate::rdb::{Event, Limits, ParseOptions, RdbError, RdbParser};
use crate::source::replica::{LinkError, ReplicaLink};
use crate::target::Target;

use super::error::SyncError;
use super::options::SyncOptions;
use super::progress::{Phase, Progress};

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

/// Reads the RDB of a full resync off the link and writes every key to the target.
/// Returns the link, positioned at the start of the command stream.
pub(super) async fn full_copy(
    mut link: ReplicaLink,
    writer: &mut Target,
    target_rdb_version: u16,
    ack_offset: i64,
    options: &SyncOptions,
    progress: &watch::Sender<Progress>,
) -> Result<(ReplicaLink, KeyLoader), SyncError> {
    let mut transfer = link.rdb_transfer().await?;
    let bytes_total = match &transfer {
        crate::source::replica::RdbTransfer::Sized { remaining } => Some(*remaining),
        crate::source::replica::RdbTransfer::Diskless { .. } => None,
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
