//! An append-only file as a source (issue 18, part 3: `lockstep sync --source
//! aof:///var/lib/redis/appendonlydir --until 2026-12-03T18:00:00Z`): a restore to a
//! point in time from a Redis 7 multi-part AOF directory (its manifest, the base
//! file, the incr files in order) or from one AOF file (Redis 6 and earlier, with
//! or without an RDB preamble).
//!
//! # The contract, as an AOF implements it
//! - resume: always `FullResync` with a replication id of the files' own (from
//!   their paths, sizes, modification times and the cut) and offset 0: every run
//!   replays everything again, over what an interrupted run left, which the engine
//!   clears first;
//! - snapshot: the base file's RDB preamble read in pieces, through the full copy's
//!   parser, filters, routes and re-encoding; a base without one (`.base.aof`)
//!   gives an empty RDB, and its commands open the stream;
//! - command stream: the commands after the snapshot, in file order, without their
//!   annotations, each file's after a `SELECT 0` (Redis loads each file with a new
//!   client), read by a blocking thread into a bounded channel
//!   ([`ChannelReader`]) and through the stream path (filters, rules, MULTI/EXEC
//!   whole); offsets count the bytes of commands fed. It ends where the replay
//!   ends ([`Source::STREAM_ENDS`]): in mode `full` the engine applies it to its
//!   end, then the task is done. No acknowledgements.
//!
//! # Before anything is written: the pre-scan
//! [`AofSource::open`] reads every file once to its end (or to the cut), and the
//! engine writes nothing unless it succeeds: the preamble is parsed (CRC included)
//! to find where the commands start; the commands are checked item by item
//! (`scan`); `--until` finds its cut there (before the first `#TS:` annotation later
//! than the instant, before the MULTI block around it); a file that ends inside a
//! command or a MULTI block is an error naming the file and the byte offset unless
//! it is the last file and `--truncated-tail ok` (then the replay stops at the last
//! complete command, as Redis's `aof-load-truncated` keeps it, and the log says how
//! many bytes are ignored). A corrupt record anywhere is always an error. The replay
//! then reads each file only up to the end the pre-scan found.

mod instant;
mod manifest;
mod scan;

pub use instant::parse_instant;

use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::sync::mpsc;

use super::{Acknowledge, PsyncReply, Snapshot, Source};
use crate::rdb::{ParseOptions, RdbParser};
use crate::resp::{CommandStream, FrameReader, Limits};
use scan::{scan_file, FileScan, ScanError};

/// Bytes per snapshot piece and per piece of the command stream.
const CHUNK_BYTES: usize = 256 << 10;
/// Pieces of the command stream read ahead of the engine.
const PIECES_IN_FLIGHT: usize = 8;
/// `SELECT 0`, fed before each file's commands: Redis loads each file with a new
/// client, in database 0.
const SELECT_0: &[u8] = b"*2\r\n$6\r\nSELECT\r\n$1\r\n0\r\n";
/// An empty RDB (version 9, checksum 0: not computed), the snapshot of a base
/// without a preamble.
const EMPTY_RDB: &[u8] = b"REDIS0009\xff\0\0\0\0\0\0\0\0";

/// What the task is told about its AOF source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AofSpec {
    /// A multi-part AOF directory, its manifest, or one AOF file.
    pub path: PathBuf,
    /// `--until`: replay stops before the first `#TS:` annotation later than this
    /// (unix seconds).
    pub until: Option<i64>,
    /// `--truncated-tail ok`: a last file that ends inside a command is replayed to
    /// its last complete command.
    pub truncated_tail_ok: bool,
}

/// Why the AOF cannot be replayed. Never retried: the files read the same again.
#[derive(Debug, thiserror::Error)]
pub enum AofError {
    #[error("the AOF source {path}: {what}")]
    Layout { path: String, what: String },
    #[error("the AOF file {path}: {what}: {source}")]
    Io {
        path: String,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("the AOF file {path}: its RDB preamble is unreadable: {reason}")]
    Preamble { path: String, reason: String },
    #[error("the AOF file {path} is corrupt at byte {at}: {what} (a damaged record in the middle is never skipped; fix: restore the file from a backup, or cut it with redis-check-aof and accept the loss)")]
    Corrupt { path: String, at: u64, what: String },
    #[error("the AOF file {path} ends inside {inside} at byte {end} of {len} (its last complete command ends at byte {end}){fix}")]
    Truncated {
        path: String,
        end: u64,
        len: u64,
        inside: &'static str,
        fix: &'static str,
    },
    #[error("--until: the AOF source {path} has no timestamp annotations (#TS:), so it cannot be cut at an instant (fix: `CONFIG SET aof-timestamp-enabled yes` on the server, then BGREWRITEAOF; only what it writes from then on is stamped)")]
    NoTimestamps { path: String },
    #[error(
        "the AOF file {path}: an RDB preamble in a file other than the first is not supported"
    )]
    PreambleNotFirst { path: String },
}

/// One file's part of the replay: its commands from `start` to `end`.
#[derive(Clone, Debug)]
struct Part {
    path: PathBuf,
    start: u64,
    end: u64,
}

/// An AOF, pre-scanned: where its snapshot is and which bytes of which files the
/// command stream replays.
#[derive(Debug)]
pub struct AofSource {
    /// The file with the RDB preamble and the preamble's length; None: an empty RDB.
    preamble: Option<(PathBuf, u64)>,
    parts: Vec<Part>,
    replid: String,
}

impl AofSource {
    /// Finds the files of `spec.path` and pre-scans them (on a blocking thread):
    /// every error is found here, before the engine writes anything.
    pub async fn open(spec: &AofSpec) -> Result<AofSource, AofError> {
        let spec = spec.clone();
        let named = spec.path.display().to_string();
        tokio::task::spawn_blocking(move || pre_scan(&spec))
            .await
            .unwrap_or_else(|e| {
                Err(AofError::Layout {
                    path: named,
                    what: format!("the pre-scan failed: {e}"),
                })
            })
    }

    /// The replication id this replay's copies are recorded under.
    pub fn replid(&self) -> &str {
        &self.replid
    }
}

/// Reads the layout, then every file to its end or the cut.
fn pre_scan(spec: &AofSpec) -> Result<AofSource, AofError> {
    let named = spec.path.display().to_string();
    let layout = manifest::layout(&spec.path).map_err(|what| AofError::Layout {
        path: named.clone(),
        what,
    })?;
    let mut preamble = None;
    let mut parts = Vec::new();
    let mut identity = format!("{}\0{:?}", named, spec.until);
    let mut scans = Vec::new();
    for (index, path) in layout.files.iter().enumerate() {
        let last = index + 1 == layout.files.len();
        identity.push_str(&file_identity(path)?);
        let start = match preamble_length(path)? {
            Some(_) if index > 0 => {
                return Err(AofError::PreambleNotFirst {
                    path: path.display().to_string(),
                })
            }
            Some(len) => {
                preamble = Some((path.clone(), len));
                len
            }
            None => 0,
        };
        let scan = scan_one(path, start, last, spec)?;
        parts.push(Part {
            path: path.clone(),
            start,
            end: scan.end,
        });
        let cut = scan.cut_by_until;
        scans.push(scan);
        if cut {
            break;
        }
    }
    let stamps: u64 = scans.iter().map(|s| s.stamps).sum();
    if spec.until.is_some() && stamps == 0 {
        return Err(AofError::NoTimestamps { path: named });
    }
    log_plan(&layout.files, &preamble, &scans, spec.until);
    Ok(AofSource {
        preamble,
        parts,
        replid: super::rdb_file::replid_of(identity.as_bytes()),
    })
}

/// The path, size and modification time of `path`, for the replication id.
fn file_identity(path: &Path) -> Result<String, AofError> {
    let meta = std::fs::metadata(path).map_err(|e| io_error(path, "cannot be read", e))?;
    if !meta.is_file() {
        let not_file = std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file");
        return Err(io_error(path, "is not a file", not_file));
    }
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    Ok(format!("\0{}\0{}\0{modified}", path.display(), meta.len()))
}

fn io_error(path: &Path, what: &'static str, source: std::io::Error) -> AofError {
    AofError::Io {
        path: path.display().to_string(),
        what,
        source,
    }
}

/// The length of the file's RDB preamble (it starts with `REDIS`), parsed to its
/// end and checksum; None when the file starts with commands.
fn preamble_length(path: &Path) -> Result<Option<u64>, AofError> {
    let mut file = std::fs::File::open(path).map_err(|e| io_error(path, "cannot be opened", e))?;
    let mut head = Vec::with_capacity(5);
    (&mut file)
        .take(5)
        .read_to_end(&mut head)
        .and_then(|_| file.seek(SeekFrom::Start(0)))
        .map_err(|e| io_error(path, "cannot be read", e))?;
    if head != b"REDIS" {
        return Ok(None);
    }
    let options = ParseOptions::default();
    let mut parser = RdbParser::new(BufReader::with_capacity(CHUNK_BYTES, file), options);
    loop {
        match parser.next_event() {
            Ok(Some(_)) => {}
            Ok(None) => return Ok(Some(parser.offset())),
            Err(e) => {
                return Err(AofError::Preamble {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })
            }
        }
    }
}

/// Scans one file's commands from `start`; a truncated tail is accepted only in
/// the last file and with `--truncated-tail ok`.
fn scan_one(path: &Path, start: u64, last: bool, spec: &AofSpec) -> Result<FileScan, AofError> {
    let input = open_at(path, start, None)?;
    let named = || path.display().to_string();
    match scan_file(
        input,
        start,
        spec.until,
        &Limits::default(),
        &mut std::io::sink(),
    ) {
        Ok(scan) => Ok(scan),
        Err(ScanError::Io(e)) => Err(io_error(path, "cannot be read", e)),
        Err(ScanError::Corrupt { at, what }) => Err(AofError::Corrupt {
            path: named(),
            at,
            what,
        }),
        Err(ScanError::Truncated {
            end,
            len,
            inside_multi,
        }) => {
            let inside = if inside_multi {
                "a MULTI block"
            } else {
                "a command"
            };
            if last && spec.truncated_tail_ok {
                tracing::warn!(file = %path.display(), end, ignored_bytes = len - end, "the last AOF file ends inside {inside}: replaying it to its last complete command (--truncated-tail ok), {} bytes ignored", len - end);
                let mut rescan = scan_file(
                    open_at(path, start, Some(end))?,
                    start,
                    spec.until,
                    &Limits::default(),
                    &mut std::io::sink(),
                )
                .map_err(|_| AofError::Corrupt {
                    path: named(),
                    at: end,
                    what: "changed while it was read".into(),
                })?;
                rescan.end = end;
                return Ok(rescan);
            }
            let fix = match last {
                true => " (fix: --truncated-tail ok replays it to its last complete command, as Redis's aof-load-truncated does)",
                false => " (it is not the last file, so no tail can be cut off: restore it from a backup)",
            };
            Err(AofError::Truncated {
                path: named(),
                end,
                len,
                inside,
                fix,
            })
        }
    }
}

/// `path` read from byte `start`, up to byte `end` when given.
fn open_at(
    path: &Path,
    start: u64,
    end: Option<u64>,
) -> Result<BufReader<Box<dyn Read>>, AofError> {
    let mut file = std::fs::File::open(path).map_err(|e| io_error(path, "cannot be opened", e))?;
    file.seek(SeekFrom::Start(start))
        .map_err(|e| io_error(path, "cannot be read", e))?;
    let input: Box<dyn Read> = match end {
        Some(end) => Box::new(file.take(end.saturating_sub(start))),
        None => Box::new(file),
    };
    Ok(BufReader::with_capacity(CHUNK_BYTES, input))
}

/// One log line saying what will be replayed.
fn log_plan(
    files: &[PathBuf],
    preamble: &Option<(PathBuf, u64)>,
    scans: &[FileScan],
    until: Option<i64>,
) {
    let commands: u64 = scans.iter().map(|s| s.commands).sum();
    let last_stamp = scans.iter().rev().find_map(|s| s.last_stamp);
    let cut = scans.last().is_some_and(|s| s.cut_by_until);
    tracing::info!(
        files = files.len(),
        files_replayed = scans.len(),
        preamble_bytes = preamble.as_ref().map_or(0, |(_, len)| *len),
        commands,
        last_stamp,
        until,
        cut,
        "AOF source pre-scanned: the snapshot, then {commands} commands to replay"
    );
    if let (Some(until), false) = (until, cut) {
        tracing::warn!(until, last_stamp, "--until is at or after the files' last stamp: they are replayed to their end (nothing later was written to them)");
    }
}

/// The snapshot being read: the preamble's bytes, or the empty RDB.
pub struct AofSnapshot {
    reader: Pin<Box<dyn AsyncRead + Send + Sync>>,
    total: u64,
}

impl Snapshot for AofSnapshot {
    fn bytes_total(&self) -> Option<u64> {
        Some(self.total)
    }
}

/// An AOF has no one to acknowledge to.
pub struct NoAcks;

impl Acknowledge for NoAcks {
    type Error = AofError;

    async fn ack(&mut self, _offset: i64) -> Result<(), AofError> {
        Ok(())
    }
}

impl Source for AofSource {
    type Error = AofError;
    type Snapshot = AofSnapshot;
    type Stream = ChannelReader;
    type Acker = NoAcks;
    const STREAM_ENDS: bool = true;

    async fn resume(&mut self, _from: Option<(&str, i64)>) -> Result<PsyncReply, AofError> {
        Ok(PsyncReply::FullResync {
            replid: self.replid.clone(),
            offset: 0,
        })
    }

    async fn snapshot(&mut self) -> Result<AofSnapshot, AofError> {
        let Some((path, len)) = &self.preamble else {
            return Ok(AofSnapshot {
                reader: Box::pin(EMPTY_RDB),
                total: EMPTY_RDB.len() as u64,
            });
        };
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| io_error(path, "cannot be opened", e))?;
        Ok(AofSnapshot {
            reader: Box::pin(file.take(*len)),
            total: *len,
        })
    }

    async fn next_snapshot_chunk(
        &mut self,
        snapshot: &mut AofSnapshot,
    ) -> Result<Option<Bytes>, AofError> {
        let mut piece = BytesMut::with_capacity(CHUNK_BYTES);
        while piece.len() < CHUNK_BYTES {
            let read = snapshot.reader.read_buf(&mut piece).await.map_err(|e| {
                let path = self.preamble.as_ref().map_or(Path::new("?"), |(p, _)| p);
                io_error(path, "cannot be read", e)
            })?;
            if read == 0 {
                break;
            }
        }
        Ok((!piece.is_empty()).then(|| piece.freeze()))
    }

    async fn snapshot_keepalive(
        &mut self,
        _snapshot: &AofSnapshot,
        _offset: i64,
    ) -> Result<(), AofError> {
        Ok(())
    }

    fn into_stream(self, offset: i64) -> (CommandStream<ChannelReader>, NoAcks) {
        let (tx, rx) = mpsc::channel(PIECES_IN_FLIGHT);
        let parts = self.parts;
        tokio::task::spawn_blocking(move || replay(&parts, tx));
        let reader = ChannelReader {
            rx,
            current: Bytes::new(),
        };
        let frames = FrameReader::new(reader, Limits::default());
        (CommandStream::new(frames, offset), NoAcks)
    }
}

/// The blocking thread of the command stream: each part's commands, without their
/// annotations, into `tx`; a failure as the stream's last item. Ends early, quietly,
/// when the stream is dropped.
fn replay(parts: &[Part], tx: mpsc::Sender<std::io::Result<Bytes>>) {
    let mut sink = ChannelWriter {
        tx,
        piece: BytesMut::with_capacity(CHUNK_BYTES),
    };
    for part in parts {
        if let Err(e) = replay_part(part, &mut sink) {
            let _ = sink.tx.blocking_send(Err(e));
            return;
        }
    }
    let _ = sink.flush();
}

/// One part's commands into `sink`, after a `SELECT 0` (each file starts in
/// database 0, as Redis loads it); nothing for a part cut at its start.
fn replay_part(part: &Part, sink: &mut ChannelWriter) -> std::io::Result<()> {
    if part.end <= part.start {
        return Ok(());
    }
    sink.write_all(SELECT_0)?;
    let changed = |what: String| {
        std::io::Error::other(format!(
            "the AOF file {} {what} since it was pre-scanned",
            part.path.display()
        ))
    };
    let input = open_at(&part.path, part.start, Some(part.end))
        .map_err(|e| changed(format!("cannot be read any more ({e})")))?;
    let scan =
        scan_file(input, part.start, None, &Limits::default(), sink).map_err(|e| match e {
            ScanError::Io(e) => e,
            other => changed(format!("changed ({other:?})")),
        })?;
    if scan.end != part.end {
        return Err(changed(format!(
            "is shorter ({} bytes, not {})",
            scan.end, part.end
        )));
    }
    Ok(())
}

/// Writes into the command stream's channel in pieces of [`CHUNK_BYTES`].
struct ChannelWriter {
    tx: mpsc::Sender<std::io::Result<Bytes>>,
    piece: BytesMut,
}

impl Write for ChannelWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.piece.extend_from_slice(bytes);
        if self.piece.len() >= CHUNK_BYTES {
            self.flush()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.piece.is_empty() {
            return Ok(());
        }
        let piece = self.piece.split().freeze();
        self.tx
            .blocking_send(Ok(piece))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
    }
}

/// The command stream's bytes, as the replay thread sends them.
pub struct ChannelReader {
    rx: mpsc::Receiver<std::io::Result<Bytes>>,
    current: Bytes,
}

impl AsyncRead for ChannelReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        while self.current.is_empty() {
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(Ok(piece))) => self.current = piece,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
        let n = self.current.len().min(buf.remaining());
        buf.put_slice(&self.current.split_to(n));
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests;
