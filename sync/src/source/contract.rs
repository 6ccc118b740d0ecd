//! The Source contract in code: the four operations the engine needs of wherever
//! the data comes from, as the trait [`Source`] (with [`Snapshot`] for one snapshot
//! being read and [`Acknowledge`] for the acknowledgements).
//!
//! A trait, not an enum: each source is its own type, and the session and the full
//! copy are generic over it, so the per-command path (the command stream's reads,
//! the ACKs) is monomorphic, with no `match` or `dyn` call per command, and a new
//! source is a new `impl` rather than a new arm in every function that uses one.
//!
//! It imports nothing of the engine, the target or the filter: a source answers
//! what it is asked and never writes to the target, records a checkpoint or decides
//! whether to copy.

use std::future::Future;

use bytes::Bytes;
use tokio::io::AsyncRead;

use crate::resp::CommandStream;

/// The source's answer to "resume from here" (for the replica link, PSYNC's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PsyncReply {
    /// A full copy follows; the stream after it starts at `offset`.
    FullResync { replid: String, offset: i64 },
    /// The source continues from the requested offset. `replid` is the source's
    /// current id when it changed (after a failover), to be adopted.
    Continue { replid: Option<String> },
    /// The source refused PSYNC and accepted the old `SYNC`: a full copy follows
    /// with no replication id or offset, so this task cannot resume exactly later.
    Sync,
}

/// Where the data comes from, once connected. The engine calls, in this order:
/// [`Source::resume`] once; after a full-resync answer, [`Source::snapshot`] and
/// [`Source::next_snapshot_chunk`] until `None` (with
/// [`Source::snapshot_keepalive`] about every second meanwhile); then
/// [`Source::into_stream`] for the command stream and its acknowledgements.
pub trait Source: Sized + Send + 'static {
    /// Why an operation failed; it names the source and what was being done.
    type Error: std::error::Error + Send + 'static;
    /// One snapshot being read.
    type Snapshot: Snapshot;
    /// What the command stream is read from.
    type Stream: AsyncRead + Unpin + Send;
    /// Tells the source what the target has applied.
    type Acker: Acknowledge<Error = Self::Error>;
    /// True when the command stream ends where the source ends (a file): its end
    /// is then the task's end, after everything read is applied, and in mode
    /// `Full` the stream is applied after the snapshot. False for a link, whose
    /// stream ending is a failure.
    const STREAM_ENDS: bool = false;

    /// Asks to resume after `from` (`(replid, offset)`), or for everything when
    /// `None`; the answer says whether a snapshot follows.
    fn resume(
        &mut self,
        from: Option<(&str, i64)>,
    ) -> impl Future<Output = Result<PsyncReply, Self::Error>> + Send;

    /// Starts reading the snapshot that a full-resync answer announced.
    fn snapshot(&mut self) -> impl Future<Output = Result<Self::Snapshot, Self::Error>> + Send;

    /// The next piece of the snapshot as RDB bytes, `None` after its last byte.
    /// Pieces are whatever arrived: the snapshot is never held whole.
    fn next_snapshot_chunk(
        &mut self,
        snapshot: &mut Self::Snapshot,
    ) -> impl Future<Output = Result<Option<Bytes>, Self::Error>> + Send;

    /// Called about every second while the snapshot is read, with the offset the
    /// stream will start at: whatever keeps the source from giving up on a slow
    /// reader (or nothing, when that would disturb it).
    fn snapshot_keepalive(
        &mut self,
        snapshot: &Self::Snapshot,
        offset: i64,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// The rest of the source: the command stream, whose next byte is at `offset`,
    /// and the acknowledgements.
    fn into_stream(self, offset: i64) -> (CommandStream<Self::Stream>, Self::Acker);

    /// Reads the announced snapshot to its end and drops it (an incremental-only
    /// task starts the stream after it).
    fn skip_snapshot(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        async move {
            let mut snapshot = self.snapshot().await?;
            while self.next_snapshot_chunk(&mut snapshot).await?.is_some() {}
            Ok(())
        }
    }
}

/// One snapshot being read, as far as the engine needs to know it.
pub trait Snapshot: Send + 'static {
    /// Its size in bytes, when the source announced one.
    fn bytes_total(&self) -> Option<u64>;

    /// Bytes of the snapshot read so far, when the source counts them otherwise
    /// than the pieces' bytes (a gzip file: compressed bytes, of `bytes_total`);
    /// `None` to count the pieces.
    fn bytes_read(&self) -> Option<u64> {
        None
    }
}

/// Acknowledgements: tells the source that everything up to an offset is applied.
pub trait Acknowledge: Send {
    type Error: std::error::Error + Send + 'static;

    fn ack(&mut self, offset: i64) -> impl Future<Output = Result<(), Self::Error>> + Send;
}
