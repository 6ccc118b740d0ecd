//! An RDB file as a source (issue 18: `lockstep sync --source file:///backups/dump.rdb`):
//! the way off a server that refuses to replicate, from the snapshot it exported.
//!
//! # The contract, as a file implements it
//! - resume: `FullResync` with a replication id of the file's own (40 hex digits
//!   from its path, size and modification time) and offset 0: a file can continue
//!   nothing, so every run copies it again (over what an interrupted run left, which
//!   the engine clears first, as after any interrupted copy). A file to be followed
//!   (`--then-follow`, [`RdbFile::following`]) answers instead with the position it
//!   was saved at ([`FilePosition`]: its `repl-id`, `repl-offset` and
//!   `repl-stream-db` aux fields, read by [`replication_position`] before anything is
//!   loaded), and `Continue` when the task already holds a position (an earlier run
//!   loaded the file and followed from it: the file is not loaded again);
//! - snapshot: the file read in pieces of [`CHUNK_BYTES`], through the same parser,
//!   filters, renames, routes and loader as a replica link's RDB; a gzip file
//!   (`.rdb.gz`, as clouds export them; recognized by its magic bytes, not its name)
//!   is decompressed as it is read, never unpacked to disk; `bytes_total` is the
//!   file's size, and for a gzip file [`Snapshot::bytes_read`] counts the compressed
//!   bytes read, so progress is in bytes of the file either way;
//! - command stream: none (it ends at once), and acknowledgements do nothing. The
//!   task runs in mode `full` only: the CLI refuses another.
//!
//! A file that cannot be opened or read is a [`FileSourceError`] naming the file;
//! the engine does not retry it (reading again would fail again).

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader, ReadBuf};

use super::{Acknowledge, PsyncReply, Snapshot, Source};
use crate::rdb::{Event, ParseOptions, RdbParser};
use crate::resp::{CommandStream, FrameReader, Limits};

/// Bytes asked of the file per snapshot piece.
pub const CHUNK_BYTES: usize = 256 << 10;

/// The two bytes every gzip stream starts with.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Why the file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FileSourceError {
    #[error(
        "the RDB file {path}: {what}: {source} (fix: check the path and that lockstep may read it)"
    )]
    Io {
        path: String,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("the RDB file {path}: its header cannot be read: {reason}")]
    Header { path: String, reason: String },
}

/// Where in its source's replication stream a file was saved: its `repl-id`,
/// `repl-offset` and `repl-stream-db` aux fields (a primary writes them once it has a
/// replication backlog, i.e. once a replica has connected; a replica writes its
/// primary's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilePosition {
    pub replid: String,
    pub offset: i64,
    /// The database the stream has selected at `offset` (0 when not recorded).
    pub db: u32,
}

/// The replication position the file at `path` (plain or gzip) was saved at, read
/// from the aux fields before its first database; `None` when it has none.
pub fn replication_position(path: &Path) -> Result<Option<FilePosition>, FileSourceError> {
    let header = |reason: String| FileSourceError::Header {
        path: path.display().to_string(),
        reason,
    };
    let mut file =
        std::io::BufReader::new(std::fs::File::open(path).map_err(|e| FileSourceError::Io {
            path: path.display().to_string(),
            what: "cannot be opened",
            source: e,
        })?);
    let head = std::io::BufRead::fill_buf(&mut file).map_err(|e| header(e.to_string()))?;
    let reader: Box<dyn std::io::Read> = if head.starts_with(&GZIP_MAGIC) {
        Box::new(flate2::bufread::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut parser = RdbParser::new(reader, ParseOptions::default());
    let (mut replid, mut offset, mut db) = (None, None, 0u32);
    loop {
        match parser.next_event().map_err(|e| header(e.to_string()))? {
            Some(Event::Header { .. } | Event::ModuleAux { .. }) => {}
            Some(Event::Aux { key, value }) => {
                let text = String::from_utf8_lossy(&value).into_owned();
                match key.as_slice() {
                    b"repl-id" => replid = Some(text),
                    b"repl-offset" => offset = text.parse::<i64>().ok(),
                    b"repl-stream-db" => db = text.parse::<u32>().unwrap_or(0),
                    _ => {}
                }
            }
            _ => break,
        }
    }
    Ok(match (replid, offset) {
        (Some(replid), Some(offset)) => Some(FilePosition { replid, offset, db }),
        _ => None,
    })
}

/// An RDB file, plain or gzip-compressed.
#[derive(Debug)]
pub struct RdbFile {
    path: PathBuf,
    replid: String,
    /// The position the file was saved at, when it is to be followed.
    follow: Option<FilePosition>,
}

impl RdbFile {
    /// The file at `path`, checked to exist and be a file (its content is read only
    /// when the engine asks for the snapshot).
    pub fn open(path: &Path) -> Result<RdbFile, FileSourceError> {
        let io = |what, source| FileSourceError::Io {
            path: path.display().to_string(),
            what,
            source,
        };
        let meta = std::fs::metadata(path).map_err(|e| io("cannot be read", e))?;
        if !meta.is_file() {
            let not_file = std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file");
            return Err(io("is not a file", not_file));
        }
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let identity = format!("{}\0{}\0{modified}", path.display(), meta.len());
        Ok(RdbFile {
            path: path.to_path_buf(),
            replid: replid_of(identity.as_bytes()),
            follow: None,
        })
    }

    /// The file, to be followed from `at` once loaded: its copy is recorded at that
    /// position (not at the file's own id), and a task that already holds a position
    /// continues from it instead of loading the file again.
    pub fn following(self, at: FilePosition) -> RdbFile {
        RdbFile {
            follow: Some(at),
            ..self
        }
    }

    /// The replication id this file's copies are recorded under.
    pub fn replid(&self) -> &str {
        &self.replid
    }

    fn error(&self, what: &'static str, source: std::io::Error) -> FileSourceError {
        FileSourceError::Io {
            path: self.path.display().to_string(),
            what,
            source,
        }
    }
}

/// 40 hex digits derived from `identity` (two FNV-1a hashes of it, with different
/// bases, and the length): stable across runs, unlike std's randomly keyed hasher.
pub(super) fn replid_of(identity: &[u8]) -> String {
    let fnv = |basis: u64| {
        identity.iter().fold(basis, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    let (a, b) = (fnv(0xcbf2_9ce4_8422_2325), fnv(0x8422_2325_cbf2_9ce4));
    format!("{a:016x}{b:016x}{:08x}", identity.len() as u32)
}

/// The file being read.
pub struct FileSnapshot {
    reader: Pin<Box<dyn AsyncRead + Send + Sync>>,
    total: Option<u64>,
    /// Bytes of the file read (for a gzip file: compressed bytes).
    read: Arc<AtomicU64>,
}

impl Snapshot for FileSnapshot {
    fn bytes_total(&self) -> Option<u64> {
        self.total
    }

    fn bytes_read(&self) -> Option<u64> {
        Some(self.read.load(Ordering::Relaxed))
    }
}

/// A reader that counts the bytes it gives.
struct Counted<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Counted<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let given = buf.filled().len().saturating_sub(before);
        self.read.fetch_add(given as u64, Ordering::Relaxed);
        polled
    }
}

/// A file has no one to acknowledge to.
pub struct NoAcks;

impl Acknowledge for NoAcks {
    type Error = FileSourceError;

    async fn ack(&mut self, _offset: i64) -> Result<(), FileSourceError> {
        Ok(())
    }
}

impl Source for RdbFile {
    type Error = FileSourceError;
    type Snapshot = FileSnapshot;
    type Stream = tokio::io::Empty;
    type Acker = NoAcks;

    async fn resume(&mut self, from: Option<(&str, i64)>) -> Result<PsyncReply, FileSourceError> {
        Ok(match (&self.follow, from) {
            (Some(_), Some((replid, offset))) => {
                tracing::info!(%replid, offset, "--then-follow: the target already holds a position of this task (an earlier run loaded the file): following the source from it, the file is not loaded again");
                PsyncReply::Continue { replid: None }
            }
            (Some(at), None) => PsyncReply::FullResync {
                replid: at.replid.clone(),
                offset: at.offset,
            },
            (None, _) => PsyncReply::FullResync {
                replid: self.replid.clone(),
                offset: 0,
            },
        })
    }

    async fn snapshot(&mut self) -> Result<FileSnapshot, FileSourceError> {
        let file = tokio::fs::File::open(&self.path)
            .await
            .map_err(|e| self.error("cannot be opened", e))?;
        let size = file.metadata().await.ok().map(|m| m.len());
        let read = Arc::new(AtomicU64::new(0));
        let counted = Counted {
            inner: file,
            read: read.clone(),
        };
        let mut buffered = BufReader::with_capacity(CHUNK_BYTES, counted);
        let head = buffered
            .fill_buf()
            .await
            .map_err(|e| self.error("cannot be read", e))?;
        if head.starts_with(&GZIP_MAGIC) {
            tracing::info!(file = %self.path.display(), "the RDB file is gzip-compressed: decompressing as it is read");
            let decoder = async_compression::tokio::bufread::GzipDecoder::new(buffered);
            return Ok(FileSnapshot {
                reader: Box::pin(decoder),
                total: size,
                read,
            });
        }
        Ok(FileSnapshot {
            reader: Box::pin(buffered),
            total: size,
            read,
        })
    }

    async fn next_snapshot_chunk(
        &mut self,
        snapshot: &mut FileSnapshot,
    ) -> Result<Option<Bytes>, FileSourceError> {
        let mut piece = BytesMut::with_capacity(CHUNK_BYTES);
        while piece.len() < CHUNK_BYTES {
            let read = snapshot
                .reader
                .read_buf(&mut piece)
                .await
                .map_err(|e| self.error("cannot be read (or decompressed)", e))?;
            if read == 0 {
                break;
            }
        }
        Ok((!piece.is_empty()).then(|| piece.freeze()))
    }

    async fn snapshot_keepalive(
        &mut self,
        _snapshot: &FileSnapshot,
        _offset: i64,
    ) -> Result<(), FileSourceError> {
        Ok(())
    }

    fn into_stream(self, offset: i64) -> (CommandStream<tokio::io::Empty>, NoAcks) {
        let reader = FrameReader::new(tokio::io::empty(), Limits::default());
        (CommandStream::new(reader, offset), NoAcks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    async fn read_all(file: &mut RdbFile) -> Vec<u8> {
        let mut snapshot = file.snapshot().await.expect("opens");
        let mut all = Vec::new();
        while let Some(piece) = file
            .next_snapshot_chunk(&mut snapshot)
            .await
            .expect("reads")
        {
            assert!(piece.len() <= CHUNK_BYTES);
            all.extend_from_slice(&piece);
        }
        all
    }

    #[tokio::test]
    async fn a_plain_and_a_gzip_file_read_back_the_same_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data: Vec<u8> = (0..700_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let plain = dir.path().join("dump.rdb");
        std::fs::write(&plain, &data).expect("write");
        let gz = dir.path().join("dump.rdb.gz");
        let mut encoder = flate2::write::GzEncoder::new(
            std::fs::File::create(&gz).expect("create"),
            flate2::Compression::fast(),
        );
        encoder.write_all(&data).expect("compress");
        encoder.finish().expect("finish");
        let mut file = RdbFile::open(&plain).expect("opens");
        assert_eq!(
            file.snapshot().await.expect("opens").bytes_total(),
            Some(700_000)
        );
        assert_eq!(read_all(&mut file).await, data);
        let mut file = RdbFile::open(&gz).expect("opens");
        let compressed = std::fs::metadata(&gz).expect("size").len();
        assert_eq!(
            file.snapshot().await.expect("opens").bytes_total(),
            Some(compressed),
            "a gzip file's progress is in compressed bytes"
        );
        assert_eq!(read_all(&mut file).await, data);
    }

    #[tokio::test]
    async fn a_gzip_files_bytes_read_are_its_compressed_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let gz = dir.path().join("dump.rdb.gz");
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(&[42u8; 900_000]).expect("compress");
        std::fs::write(&gz, encoder.finish().expect("finish")).expect("write");
        let compressed = std::fs::metadata(&gz).expect("size").len();
        let mut file = RdbFile::open(&gz).expect("opens");
        let mut snapshot = file.snapshot().await.expect("opens");
        let mut unpacked = 0;
        while let Some(piece) = file
            .next_snapshot_chunk(&mut snapshot)
            .await
            .expect("reads")
        {
            unpacked += piece.len();
            assert!(snapshot.bytes_read() <= Some(compressed));
        }
        assert_eq!(unpacked, 900_000);
        assert_eq!(snapshot.bytes_read(), Some(compressed));
    }

    #[tokio::test]
    async fn a_missing_file_and_a_directory_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = RdbFile::open(&dir.path().join("nope.rdb")).expect_err("missing");
        assert!(missing.to_string().contains("nope.rdb"), "{missing}");
        let directory = RdbFile::open(dir.path()).expect_err("a directory");
        assert!(
            directory.to_string().contains("is not a file"),
            "{directory}"
        );
    }

    #[tokio::test]
    async fn a_truncated_gzip_file_is_an_error_not_a_short_snapshot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let gz = dir.path().join("cut.rdb.gz");
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(&[7u8; 100_000]).expect("compress");
        let bytes = encoder.finish().expect("finish");
        std::fs::write(&gz, &bytes[..bytes.len() / 2]).expect("write");
        let mut file = RdbFile::open(&gz).expect("opens");
        let mut snapshot = file.snapshot().await.expect("opens");
        let mut failed = false;
        for _ in 0..10 {
            match file.next_snapshot_chunk(&mut snapshot).await {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    assert!(e.to_string().contains("cut.rdb.gz"), "{e}");
                    failed = true;
                    break;
                }
            }
        }
        assert!(failed, "a cut gzip stream must fail");
    }

    #[test]
    fn the_replication_id_is_40_hex_digits_and_stable() {
        let a = replid_of(b"/backups/dump.rdb\x00123\x00456");
        assert_eq!(a.len(), 40);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(a, replid_of(b"/backups/dump.rdb\x00123\x00456"));
        assert_ne!(a, replid_of(b"/backups/dump.rdb\x00124\x00456"));
    }
}
