//! Async glue: read frames and commands from any `AsyncRead` through one reused
//! buffer, and write commands to any `AsyncWrite`.
//!
//! The replica link uses one [`FrameReader`] for the whole connection: replies during
//! the handshake ([`read_frame`](FrameReader::read_frame)), then the RDB transfer,
//! which is not RESP and which it reads through [`buffer_mut`](FrameReader::buffer_mut)
//! and [`fill`](FrameReader::fill), then the command stream
//! ([`read_entry`](FrameReader::read_entry), or a [`CommandStream`] that keeps the
//! replication offset).
//!
//! Every reader remembers when its last read brought bytes
//! ([`last_read`](FrameReader::last_read)): the replica link and the target writer
//! tell a silent peer (a frozen host, a black-holed flow) from a busy one by it.
//!
//! How it fits: the replica link and the target connection read and write through
//! these types. They never interpret a command (that is the engine's job) and
//! never drop or reorder bytes between the RESP and the RDB phases of a link.

use std::io;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::command::{CommandDecoder, Entry};
use super::decode::{check_frame, decode_frame, Cursor, Stop};
use super::encode::encode_command;
use super::error::RespError;
use super::frame::{Frame, Status};
use super::Limits;

/// The most room asked for in one read while a value stays incomplete.
const READ_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Why reading stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The socket failed.
    #[error("read failed: {0}")]
    Io(#[from] io::Error),
    /// The bytes are not RESP; the offset counts from the first byte this reader read.
    #[error(transparent)]
    Protocol(#[from] RespError),
    /// The peer closed the connection in the middle of a value.
    #[error("connection closed in the middle of a value ({buffered_bytes} bytes of it read)")]
    UnexpectedEof {
        /// Bytes of the unfinished value that had arrived.
        buffered_bytes: usize,
    },
}

/// Reads RESP values from `R` through a buffer that is reused for the whole connection.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    buf: BytesMut,
    limits: Limits,
    commands: CommandDecoder,
    /// Bytes consumed from the front of the buffer since the start: decoded values plus
    /// whatever the caller consumed by hand.
    consumed_bytes: u64,
    read_chunk_bytes: usize,
    /// When a read last brought bytes (none yet: `None`).
    last_read: Option<Instant>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader with these limits and a 64 KiB initial buffer.
    pub fn new(inner: R, limits: Limits) -> FrameReader<R> {
        FrameReader::with_buffer(inner, limits, BytesMut::with_capacity(64 * 1024))
    }

    /// A reader that starts from `buf`, which may already hold bytes read from `inner`.
    pub fn with_buffer(inner: R, limits: Limits, buf: BytesMut) -> FrameReader<R> {
        FrameReader {
            inner,
            buf,
            commands: CommandDecoder::new(limits.clone()),
            limits,
            consumed_bytes: 0,
            read_chunk_bytes: 64 * 1024,
            last_read: None,
        }
    }

    /// Bytes consumed since the start.
    pub fn consumed_bytes(&self) -> u64 {
        self.consumed_bytes
    }

    /// The bytes read and not yet consumed.
    pub fn buffer(&self) -> &BytesMut {
        &self.buf
    }

    /// The buffer, for reading non-RESP data such as the RDB transfer. After taking or
    /// consuming bytes through it, call [`consumed`](Self::consumed) with their count.
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        self.commands.reset();
        &mut self.buf
    }

    /// Account for `n` bytes taken off the front of the buffer by hand.
    pub fn consumed(&mut self, n: usize) {
        self.consumed_bytes += n as u64;
    }

    /// Drop `n` bytes from the front of the buffer (they must be there) and count them.
    pub fn consume(&mut self, n: usize) {
        self.commands.reset();
        self.buf.advance(n);
        self.consumed_bytes += n as u64;
    }

    /// The reader and the unread bytes.
    pub fn into_parts(self) -> (R, BytesMut) {
        (self.inner, self.buf)
    }

    /// Read more bytes into the buffer (at least `min_bytes` of room); `Ok(0)` at end
    /// of stream.
    pub async fn fill(&mut self, min_bytes: usize) -> io::Result<usize> {
        self.buf.reserve(self.read_chunk_bytes.max(min_bytes));
        let read = self.inner.read_buf(&mut self.buf).await?;
        if read > 0 {
            // One clock read per read(2), not per value.
            self.last_read = Some(Instant::now());
        }
        Ok(read)
    }

    /// When a read last brought bytes from the peer; `None` before the first.
    pub fn last_read(&self) -> Option<Instant> {
        self.last_read
    }

    /// Drops the bare `\n` / `\r\n` keepalives at the front of the buffer, without
    /// reading; stops at the first other byte or at a `\r` that may be the start of
    /// a `\r\n` still on its way.
    pub fn skip_buffered_newlines(&mut self) {
        loop {
            match self.buf.first() {
                Some(b'\n') => self.consume(1),
                Some(b'\r') if self.buf.get(1) == Some(&b'\n') => self.consume(2),
                _ => return,
            }
        }
    }

    /// The `\r\n`-terminated line at the front of the buffer without its `\r\n`, if
    /// it is whole there (no read); see [`read_line`](Self::read_line).
    pub fn buffered_line(&mut self) -> Result<Option<Bytes>, ReadError> {
        self.commands.reset();
        let mut cur = Cursor::new(&self.buf, 0, &self.limits);
        match cur.line() {
            Ok((start, end)) => {
                let taken = cur.pos;
                let line = self.buf.split_to(taken).freeze().slice(start..end);
                self.consumed_bytes += taken as u64;
                Ok(Some(line))
            }
            Err(Stop::Error(e)) => Err(e.shifted(self.consumed_bytes).into()),
            Err(Stop::Incomplete) => Ok(None),
        }
    }

    fn eof(&self) -> Result<(), ReadError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(ReadError::UnexpectedEof {
                buffered_bytes: self.buf.len(),
            })
        }
    }

    /// The next reply; `None` when the peer closed the connection between values.
    pub async fn read_frame(&mut self) -> Result<Option<Frame>, ReadError> {
        // Once `peek_frame_len` has found a whole value, the decode completes at once.
        while self.peek_frame_len().await?.is_some() {
            let base = self.consumed_bytes;
            let decoded = decode_frame(&mut self.buf, &self.limits).map_err(|e| e.shifted(base))?;
            if let Status::Complete(frame, len) = decoded {
                self.consumed_bytes += len as u64;
                return Ok(Some(frame));
            }
        }
        Ok(None)
    }

    /// Waits until a whole value is at the front of the buffer and returns its length,
    /// without decoding or consuming it (a caller that only needs to know "OK or
    /// error" looks at the bytes and then calls [`consume`](Self::consume): no
    /// allocation per reply). `None` when the peer closed the connection between
    /// values.
    pub async fn peek_frame_len(&mut self) -> Result<Option<usize>, ReadError> {
        self.commands.reset();
        // Each incomplete check re-walks the value's headers, so a big aggregate that
        // trickles in would cost a walk per read: ask for geometrically more room per
        // read while the same value stays incomplete, to bound the number of walks.
        let mut want_bytes = 0;
        loop {
            let base = self.consumed_bytes;
            match check_frame(&self.buf, &self.limits).map_err(|e| e.shifted(base))? {
                Status::Complete((), len) => return Ok(Some(len)),
                Status::Incomplete => {
                    want_bytes = (want_bytes * 2).clamp(self.read_chunk_bytes, READ_BYTES_MAX);
                    if self.fill(want_bytes).await? == 0 {
                        self.eof()?;
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Skip bare `\n` / `\r\n` at the front of the buffer (keepalives before a reply
    /// or before the RDB), reading if the buffer is empty; returns how many bytes were
    /// skipped. Stops at the first other byte, which stays in the buffer.
    pub async fn skip_newlines(&mut self) -> Result<usize, ReadError> {
        let start = self.consumed_bytes;
        loop {
            let skipped = (self.consumed_bytes - start) as usize;
            match self.buf.first() {
                Some(b'\n') => self.consume(1),
                Some(b'\r') if self.buf.len() >= 2 => {
                    if self.buf[1] != b'\n' {
                        return Ok(skipped);
                    }
                    self.consume(2);
                }
                Some(b'\r') | None => {
                    if self.fill(0).await? == 0 {
                        return Ok(skipped);
                    }
                }
                Some(_) => return Ok(skipped),
            }
        }
    }

    /// The next `\r\n`-terminated line without its `\r\n`, for the lines of the replica
    /// protocol that are not RESP values (the `$<len>` or `$EOF:<mark>` header of the
    /// RDB transfer). A line over `line_bytes_max` is an error; `None` at end of stream.
    pub async fn read_line(&mut self) -> Result<Option<Bytes>, ReadError> {
        loop {
            if let Some(line) = self.buffered_line()? {
                return Ok(Some(line));
            }
            if self.fill(0).await? == 0 {
                self.eof()?;
                return Ok(None);
            }
        }
    }

    /// Up to `max_bytes` raw bytes (non-RESP data such as the RDB payload): what is
    /// buffered, or else what one read brings. Shares the buffer's memory; `None` at
    /// end of stream.
    pub async fn read_chunk(&mut self, max_bytes: usize) -> Result<Option<Bytes>, ReadError> {
        self.commands.reset();
        if self.buf.is_empty() && self.fill(0).await? == 0 {
            return Ok(None);
        }
        let n = max_bytes.min(self.buf.len());
        self.consumed_bytes += n as u64;
        Ok(Some(self.buf.split_to(n).freeze()))
    }

    /// The next command or blank, with its length on the wire; `None` when the peer
    /// closed the connection between entries.
    pub async fn read_entry(&mut self) -> Result<Option<(Entry, usize)>, ReadError> {
        loop {
            if let Some(entry) = self.buffered_entry()? {
                return Ok(Some(entry));
            }
            // Room for a big argument in steps, never all of an announced length
            // before its bytes arrive.
            let need = self
                .commands
                .bytes_needed_hint(&self.buf)
                .min(READ_BYTES_MAX);
            if self.fill(need).await? == 0 {
                self.eof()?;
                return Ok(None);
            }
        }
    }

    /// The next command or blank if it is whole in the buffer already: no read, no
    /// await (a caller drains what has arrived in a tight loop).
    pub fn buffered_entry(&mut self) -> Result<Option<(Entry, usize)>, ReadError> {
        let base = self.consumed_bytes;
        match self
            .commands
            .decode(&mut self.buf)
            .map_err(|e| e.shifted(base))?
        {
            Status::Complete(entry, len) => {
                self.consumed_bytes += len as u64;
                Ok(Some((entry, len)))
            }
            Status::Incomplete => Ok(None),
        }
    }
}

/// The command stream of a replication link, keeping the replication offset: the
/// offset of the stream's first byte plus every byte decoded since (blanks included,
/// as Redis counts them).
#[derive(Debug)]
pub struct CommandStream<R> {
    reader: FrameReader<R>,
    /// Offset at the reader's `consumed_bytes() == 0`.
    base_offset: i64,
}

impl<R: AsyncRead + Unpin> CommandStream<R> {
    /// A stream whose next byte is at replication offset `offset` (the offset from
    /// `+FULLRESYNC` / `+CONTINUE`, or the RDB's `repl-offset`).
    pub fn new(reader: FrameReader<R>, offset: i64) -> CommandStream<R> {
        let base_offset = offset - reader.consumed_bytes() as i64;
        CommandStream {
            reader,
            base_offset,
        }
    }

    /// The replication offset after the last entry returned.
    pub fn offset(&self) -> i64 {
        self.base_offset + self.reader.consumed_bytes() as i64
    }

    /// The next entry and the replication offset right after it.
    pub async fn next(&mut self) -> Result<Option<(Entry, i64)>, ReadError> {
        match self.reader.read_entry().await? {
            Some((entry, _len)) => Ok(Some((entry, self.offset()))),
            None => Ok(None),
        }
    }

    /// The next entry if it is whole in the buffer already (no read, no await), and
    /// the replication offset right after it.
    pub fn next_buffered(&mut self) -> Result<Option<(Entry, i64)>, ReadError> {
        let entry = self.reader.buffered_entry()?;
        Ok(entry.map(|(entry, _len)| (entry, self.offset())))
    }

    /// The underlying reader.
    pub fn reader(&self) -> &FrameReader<R> {
        &self.reader
    }

    /// The underlying reader (to write ACKs on the same socket, keep it split).
    pub fn reader_mut(&mut self) -> &mut FrameReader<R> {
        &mut self.reader
    }

    /// The reader back.
    pub fn into_reader(self) -> FrameReader<R> {
        self.reader
    }
}

/// Queues commands in a reused buffer and writes them in one go (a pipeline).
#[derive(Debug)]
pub struct CommandWriter<W> {
    inner: W,
    buf: BytesMut,
}

impl<W: AsyncWrite + Unpin> CommandWriter<W> {
    /// A writer with an empty buffer.
    pub fn new(inner: W) -> CommandWriter<W> {
        CommandWriter {
            inner,
            buf: BytesMut::with_capacity(16 * 1024),
        }
    }

    /// Queue one command.
    pub fn push<A: AsRef<[u8]>>(&mut self, argv: &[A]) -> &mut Self {
        encode_command(&mut self.buf, argv);
        self
    }

    /// Queue raw bytes (inline commands, hand-made frames in tests).
    pub fn push_raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(bytes);
        self
    }

    /// Bytes queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Write everything queued and flush; the buffer is kept for reuse.
    pub async fn flush(&mut self) -> io::Result<()> {
        self.inner.write_all(&self.buf).await?;
        self.buf.clear();
        self.inner.flush().await
    }

    /// Queue one command and write it at once.
    pub async fn send<A: AsRef<[u8]>>(&mut self, argv: &[A]) -> io::Result<()> {
        self.push(argv);
        self.flush().await
    }

    /// The writer back.
    pub fn into_inner(self) -> W {
        self.inner
    }
}
