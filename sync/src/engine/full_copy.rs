//! The full copy: the snapshot of a full resync read off the source (any
//! [`Source`]; the replica link's RDB transfer today), parsed on a blocking thread
//! and written key by key to the target.
//!
//! Socket -> reader task -> parser thread -> this task, through bounded channels and
//! a byte budget, so memory stays bounded whatever the snapshot holds and a slow
//! target slows the source. The copy never decides whether to copy (the session
//! does) and never records a checkpoint: it returns the source positioned at the
//! start of the command stream.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, watch, Semaphore};

use crate::load::KeyLoader;
use crate::rdb::{Event, Limits, ParseOptions, RdbError, RdbParser};
use crate::source::{Snapshot, Source};
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
    budget: &Arc<Semaphore>,
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

/// Reads the snapshot of a full resync off `source` and writes every key to the
/// target. Returns the source, positioned at the start of the command stream.
pub(super) async fn full_copy<S: Source>(
    mut source: S,
    writer: &mut Target,
    target_rdb_version: u16,
    ack_offset: i64,
    options: &SyncOptions,
    progress: &watch::Sender<Progress>,
) -> Result<(S, KeyLoader), SyncError>
where
    SyncError: From<S::Error>,
{
    let snapshot = source.snapshot().await?;
    publish_copy_start(progress, snapshot.bytes_total());
    tracing::info!(
        bytes = ?snapshot.bytes_total(),
        "full resync: receiving the snapshot"
    );
    // Socket -> parser thread -> this task, through bounded channels: memory stays
    // bounded by the channel capacities (chunks are at most one read buffer, events at
    // most one parser batch of 1 MiB), and a slow target slows the source.
    let (chunk_tx, chunk_rx) = mpsc::channel::<Bytes>(CHUNKS_IN_FLIGHT);
    let (event_tx, mut event_rx) =
        mpsc::channel::<Result<EventBatch, RdbError>>(EVENT_BATCHES_IN_FLIGHT);
    let bytes_received = Arc::new(AtomicU64::new(0));
    let reader_task = spawn_reader(
        source,
        snapshot,
        chunk_tx,
        bytes_received.clone(),
        ack_offset,
    );
    let parser_thread = spawn_parser(chunk_rx, event_tx, options.load.big_key_bytes);
    let mut loader = KeyLoader::new(
        target_rdb_version,
        options.load.clone(),
        options.filter.clone(),
    )
    .with_script(options.script.clone());
    let applied = write_events(
        &mut event_rx,
        writer,
        &mut loader,
        options,
        progress,
        &bytes_received,
    )
    .await;
    drop(event_rx);
    let _ = parser_thread.await;
    let source = reader_task
        .join()
        .await
        .map_err(|e| SyncError::Internal(format!("RDB reader task: {e}")))?;
    // A source that failed (silent, cut, refused a read) ends the parser's input
    // early: its error is the cause, the parser's ("unexpected end", or no header
    // at all when it failed before its first byte) only the consequence. (When the
    // parser fails first, the reader stops without an error: it is the parser's.)
    let source = match (applied, source) {
        (Err(SyncError::Rdb(_)), Err(cause)) => return Err(cause.into()),
        (Err(err), _) => return Err(err),
        (Ok(()), source) => source?,
    };
    tracing::info!(
        keys = loader.keys,
        big_keys = loader.big_keys,
        "full copy written to the target"
    );
    Ok((source, loader))
}

/// A new copy's figures: nothing copied yet, of `bytes_total` when announced.
fn publish_copy_start(progress: &watch::Sender<Progress>, bytes_total: Option<u64>) {
    progress.send_modify(|p| {
        p.phase = Phase::FullCopy;
        p.keys_copied = 0;
        p.keys_total = None;
        p.bytes_copied = 0;
        p.bytes_total = bytes_total;
    });
}

/// The task that reads the snapshot off the source into `chunks`, counting the
/// bytes, with the source's keepalive every second. Aborted when the copy is
/// dropped (a stop, a failed session): it would otherwise go on reading the
/// snapshot and hold the source's connection open until the snapshot ends.
fn spawn_reader<S: Source>(
    mut source: S,
    mut snapshot: S::Snapshot,
    chunks: mpsc::Sender<Bytes>,
    bytes_received: Arc<AtomicU64>,
    ack_offset: i64,
) -> AbortOnDrop<Result<S, S::Error>> {
    AbortOnDrop::spawn(async move {
        let mut last_keepalive = Instant::now();
        while let Some(chunk) = source.next_snapshot_chunk(&mut snapshot).await? {
            // Bytes of the snapshot as the source counts them (a gzip file's
            // compressed bytes), else the pieces' bytes.
            match snapshot.bytes_read() {
                Some(read) => bytes_received.store(read, Ordering::Relaxed),
                None => _ = bytes_received.fetch_add(chunk.len() as u64, Ordering::Relaxed),
            }
            if chunks.send(chunk).await.is_err() {
                break; // the parser stopped; its error tells why
            }
            if last_keepalive.elapsed() >= Duration::from_secs(1) {
                source.snapshot_keepalive(&snapshot, ack_offset).await?;
                last_keepalive = Instant::now();
            }
        }
        Ok(source)
    })
}

/// The blocking thread that parses the RDB arriving on `chunks` and sends its
/// events in budgeted batches. Raw capture (for RESTORE without re-encoding) stops
/// at `big_key_bytes`, where big keys start being written in batches, so no key is
/// ever held twice over.
fn spawn_parser(
    chunks: mpsc::Receiver<Bytes>,
    events: mpsc::Sender<Result<EventBatch, RdbError>>,
    big_key_bytes: usize,
) -> tokio::task::JoinHandle<()> {
    let parse_options = ParseOptions {
        capture_raw: true,
        limits: Limits {
            raw_capture_bytes_max: big_key_bytes,
            ..Limits::default()
        },
        ..ParseOptions::default()
    };
    // Batches are also bounded by bytes: each holds permits for its element bytes
    // (at most the whole budget) until it is written, so a batch carrying a 50 MB
    // string does not have three more of its kind queued behind it (measured: 228 MiB
    // peak RSS for 20 keys of 50 MB with a count-only bound).
    let budget = Arc::new(Semaphore::new(EVENT_BYTES_IN_FLIGHT));
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let reader = ChannelReader {
            rx: chunks,
            current: Bytes::new(),
        };
        let mut parser = RdbParser::new(reader, parse_options);
        let mut batcher = Batcher::default();
        loop {
            if events.is_closed() {
                return; // the copy was dropped: stop parsing (the reader is aborted)
            }
            // One match per event, the event moved once into its batch: this loop
            // runs per key (a tuple of options built per event cost 2% of the copy's
            // instructions, measured with callgrind).
            match parser.next_event() {
                Ok(Some(event)) => {
                    if let Some((batch, bytes)) = batcher.push(event) {
                        if !send_batch(&runtime, &budget, &events, batch, bytes) {
                            return;
                        }
                    }
                }
                Ok(None) => {
                    let (batch, bytes) = batcher.take();
                    send_batch(&runtime, &budget, &events, batch, bytes);
                    return;
                }
                Err(err) => {
                    let (batch, bytes) = batcher.take();
                    if send_batch(&runtime, &budget, &events, batch, bytes) {
                        let _ = events.blocking_send(Err(err));
                    }
                    return;
                }
            }
        }
    })
}

/// Hands one batch to the writer once the byte budget has room for it; false when
/// the copy was dropped (the budget or the channel closed).
#[inline]
fn send_batch(
    runtime: &tokio::runtime::Handle,
    budget: &Arc<Semaphore>,
    events: &mpsc::Sender<Result<EventBatch, RdbError>>,
    batch: Vec<Event>,
    bytes: usize,
) -> bool {
    let Some(budgeted) = budgeted(runtime, budget, batch, bytes) else {
        return false;
    };
    events.blocking_send(Ok(budgeted)).is_ok()
}

/// Parser events gathered for one hand-over: one wake-up of the writer per batch,
/// not per key (the per-event hand-over was 28% of a full sync's time), each batch
/// cut at [`EVENT_BATCH_EVENTS`] events or [`EVENT_BATCH_BYTES`] of element data.
#[derive(Default)]
struct Batcher {
    events: Vec<Event>,
    bytes: usize,
}

impl Batcher {
    /// Adds `event`; the batch and its bytes when it is full.
    #[inline]
    fn push(&mut self, event: Event) -> Option<(Vec<Event>, usize)> {
        self.bytes += event_bytes(&event);
        self.events.push(event);
        let full = self.events.len() >= EVENT_BATCH_EVENTS || self.bytes >= EVENT_BATCH_BYTES;
        full.then(|| self.take())
    }

    /// What is gathered (maybe nothing) and its bytes, leaving the batcher empty.
    fn take(&mut self) -> (Vec<Event>, usize) {
        let events = std::mem::replace(&mut self.events, Vec::with_capacity(EVENT_BATCH_EVENTS));
        (events, std::mem::take(&mut self.bytes))
    }
}

/// Writes the parser's batches to the target until they end or one fails, with the
/// full copy's throttle, publishing progress per batch.
async fn write_events(
    batches: &mut mpsc::Receiver<Result<EventBatch, RdbError>>,
    writer: &mut Target,
    loader: &mut KeyLoader,
    options: &SyncOptions,
    progress: &watch::Sender<Progress>,
    bytes_received: &AtomicU64,
) -> Result<(), SyncError> {
    let mut keys_total: Option<u64> = None;
    let mut throttle = options.throttle.full();
    while let Some(batch) = batches.recv().await {
        // The permits go back when this batch is written (end of the loop body).
        let EventBatch {
            events,
            permits: _permits,
        } = batch?;
        for event in events {
            if let Event::ResizeDb { db_size, .. } = &event {
                keys_total = Some(keys_total.unwrap_or(0) + db_size);
            }
            let (keys_before, bytes_before) = (loader.keys, loader.bytes);
            loader.on_event(event, writer).await?;
            if let Some(throttle) = throttle.as_mut() {
                let wait = throttle.take(loader.keys - keys_before, loader.bytes - bytes_before);
                if !wait.is_zero() {
                    // Send what is buffered first: the target sees a steady rate.
                    writer.flush().await?;
                    tokio::time::sleep(wait).await;
                }
            }
        }
        let bytes = bytes_received.load(Ordering::Relaxed);
        publish_copied(progress, loader.keys, bytes, keys_total);
    }
    Ok(())
}

/// The copy's figures after a batch: keys written, bytes received, keys announced.
fn publish_copied(
    progress: &watch::Sender<Progress>,
    keys: u64,
    bytes: u64,
    keys_total: Option<u64>,
) {
    progress.send_if_modified(|p| {
        let changed = (p.keys_copied, p.bytes_copied, p.keys_total) != (keys, bytes, keys_total);
        if bytes != p.bytes_copied {
            // To the batch: the reader task reads, this task publishes.
            p.source_byte_at = Some(Instant::now());
        }
        p.keys_copied = keys;
        p.bytes_copied = bytes;
        p.keys_total = keys_total;
        changed
    });
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
    use crate::rdb::{Elements, KeyMeta, RdbType};

    fn key_start(key: &[u8]) -> Event {
        Event::KeyStart(KeyMeta {
            db: 0,
            key: key.to_vec(),
            rdb_type: RdbType::String,
            expire_ms: None,
            lru_idle_secs: None,
            lfu_freq: None,
            offset: 0,
        })
    }

    #[test]
    fn event_bytes_counts_what_an_event_holds() {
        assert_eq!(event_bytes(&key_start(b"abc")), 3 + 64);
        let value = Event::Elements(Elements::String(vec![0; 1000]));
        assert_eq!(event_bytes(&value), 1000);
        assert_eq!(
            event_bytes(&Event::KeyEnd {
                raw: Some(vec![0; 500])
            }),
            500
        );
        assert_eq!(event_bytes(&Event::KeyEnd { raw: None }), 16);
        let code = Event::Function { code: vec![0; 70] };
        assert_eq!(event_bytes(&code), 70);
        assert_eq!(event_bytes(&Event::SelectDb { db: 3 }), 64);
    }

    #[test]
    fn a_batch_is_cut_at_its_event_count() {
        let mut batcher = Batcher::default();
        for i in 1..EVENT_BATCH_EVENTS {
            assert!(batcher.push(key_start(b"k")).is_none(), "cut early at {i}");
        }
        let (events, bytes) = batcher.push(key_start(b"k")).expect("full");
        assert_eq!(events.len(), EVENT_BATCH_EVENTS);
        assert_eq!(bytes, EVENT_BATCH_EVENTS * 65);
        let (rest, rest_bytes) = batcher.take();
        assert!(
            rest.is_empty() && rest_bytes == 0,
            "the batcher starts over"
        );
    }

    #[test]
    fn a_batch_is_cut_at_its_bytes_and_a_big_value_goes_alone() {
        let mut batcher = Batcher::default();
        assert!(batcher.push(key_start(b"big")).is_none());
        let big = Event::Elements(Elements::String(vec![0; EVENT_BATCH_BYTES]));
        let (events, bytes) = batcher.push(big).expect("cut at the byte bound");
        assert_eq!(events.len(), 2);
        assert_eq!(bytes, 3 + 64 + EVENT_BATCH_BYTES);
        assert!(batcher.push(Event::KeyEnd { raw: None }).is_none());
        assert_eq!(batcher.take().0.len(), 1, "what is left goes at the end");
    }

    /// `budgeted` runs on the parser's blocking thread, as in the copy.
    fn on_blocking_thread<T: Send + 'static>(
        work: impl FnOnce(tokio::runtime::Handle) -> T + Send + 'static,
    ) -> T {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        let handle = runtime.handle().clone();
        runtime
            .block_on(async move { tokio::task::spawn_blocking(move || work(handle)).await })
            .expect("the blocking task")
    }

    #[test]
    fn a_batch_holds_its_bytes_of_the_budget_until_it_is_written() {
        let (left_while_held, left_after) = on_blocking_thread(|runtime| {
            let budget = Arc::new(Semaphore::new(EVENT_BYTES_IN_FLIGHT));
            let batch = budgeted(&runtime, &budget, Vec::new(), 1000).expect("budget");
            let held = budget.available_permits();
            drop(batch);
            (held, budget.available_permits())
        });
        assert_eq!(left_while_held, EVENT_BYTES_IN_FLIGHT - 1000);
        assert_eq!(left_after, EVENT_BYTES_IN_FLIGHT);
    }

    #[test]
    fn a_value_over_the_budget_takes_all_of_it_and_an_empty_batch_one_permit() {
        let (over, empty) = on_blocking_thread(|runtime| {
            let budget = Arc::new(Semaphore::new(EVENT_BYTES_IN_FLIGHT));
            let whole = budgeted(&runtime, &budget, Vec::new(), 3 * EVENT_BYTES_IN_FLIGHT);
            let over = budget.available_permits();
            drop(whole);
            let _one = budgeted(&runtime, &budget, Vec::new(), 0);
            (over, budget.available_permits())
        });
        assert_eq!(
            over, 0,
            "capped at the whole budget, so it never waits forever"
        );
        assert_eq!(empty, EVENT_BYTES_IN_FLIGHT - 1);
    }

    #[test]
    fn a_closed_budget_stops_the_parser() {
        let batch = on_blocking_thread(|runtime| {
            let budget = Arc::new(Semaphore::new(EVENT_BYTES_IN_FLIGHT));
            budget.close();
            budgeted(&runtime, &budget, Vec::new(), 10).is_none()
        });
        assert!(batch);
    }
}
