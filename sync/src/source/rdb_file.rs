//! An RDB file as a source (issue 18: `lockstep sync --source file:///backups/dump.rdb`):
//! the way off a server that refuses to replicate, from the snapshot it exported.
//!
//! # The contract, as a file implements it
//! - resume: always `FullResync` with a replication id of the file's own (40 hex
//!   digits from its path, size and modification time) and offset 0: a file can
//!   continue nothing, so every run copies it again (over what an interrupted run
//!   left, which the engine clears first, as after any interrupted copy);
//! - snapshot: the file read in pieces of [`CHUNK_BYTES`], through the same parser,
//!   filters, renames, routes and loader as a replica link's RDB; a gzip file
//!   (`.rdb.gz`, as clouds export them; recognized by its magic bytes, not its name)
//!   is decompressed as it is read, never unpacked to disk; `bytes_total` is the
//!   file's size when it is not compressed;
//! - command stream: none (it ends at once), and acknowledgements do nothing. The
//!   task runs in mode `full` only: the CLI refuses another.
//!
//! A file that cannot be opened or read is a [`FileSourceError`] naming the file;
//! the engine does not retry it (reading again would fail again).

use std::path::{Path, PathBuf};
use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};

use super::{Acknowledge, PsyncReply, Snapshot, Source};
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
}

/// An RDB file, plain or gzip-compressed.
#[derive(Debug)]
pub struct RdbFile {
    path: PathBuf,
    replid: String,
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
        })
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
}

impl Snapshot for FileSnapshot {
    fn bytes_total(&self) -> Option<u64> {
        self.total
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

    async fn resume(&mut self, _from: Option<(&str, i64)>) -> Result<PsyncReply, FileSourceError> {
        Ok(PsyncReply::FullResync {
            replid: self.replid.clone(),
            offset: 0,
        })
    }

    async fn snapshot(&mut self) -> Result<FileSnapshot, FileSourceError> {
        let file = tokio::fs::File::open(&self.path)
            .await
            .map_err(|e| self.error("cannot be opened", e))?;
        let size = file.metadata().await.ok().map(|m| m.len());
        let mut buffered = BufReader::with_capacity(CHUNK_BYTES, file);
        let head = buffered
            .fill_buf()
            .await
            .map_err(|e| self.error("cannot be read", e))?;
        if head.starts_with(&GZIP_MAGIC) {
            tracing::info!(file = %self.path.display(), "the RDB file is gzip-compressed: decompressing as it is read");
            let decoder = async_compression::tokio::bufread::GzipDecoder::new(buffered);
            return Ok(FileSnapshot {
                reader: Box::pin(decoder),
                total: None,
            });
        }
        Ok(FileSnapshot {
            reader: Box::pin(buffered),
            total: size,
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
        assert_eq!(file.snapshot().await.expect("opens").bytes_total(), None);
        assert_eq!(read_all(&mut file).await, data);
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
