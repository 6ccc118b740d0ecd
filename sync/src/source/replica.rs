//! The replica link: lockstep's side of a conversation in which it poses as a replica
//! of the source, and the first implementation of the [`super::Source`] contract
//! (at the end of this file). It sends the source nothing but the handshake,
//! PSYNC/SYNC and `REPLCONF ACK`, and it never interprets the stream it hands out.
//!
//! The order is Redis's own (replication.c, `syncWithMaster`):
//! 1. [`ReplicaLink::connect`]: TCP (and TLS), `PING`, then pipelined `AUTH`,
//!    `REPLCONF listening-port`, `REPLCONF capa eof capa psync2`, replies read one by
//!    one. An AUTH failure is fatal; REPLCONF refusals are only logged. No
//!    `REPLCONF version` (see `connect`): a Valkey primary then sends RDB 11.
//! 2. [`ReplicaLink::psync`]: `PSYNC <replid> <offset+1>` to resume or `PSYNC ? -1`,
//!    sent only after every handshake reply is read (a primary refuses SYNC/PSYNC
//!    from a client with pending output). `+FULLRESYNC`, `+CONTINUE [replid]`,
//!    `-LOADING`/`-NOMASTERLINK` (try later), or another error, after which `SYNC`
//!    is tried.
//! 3. For a full resync, [`ReplicaLink::rdb_transfer`] reads the `$<len>` or
//!    `$EOF:<mark>` header (skipping keepalive newlines) and
//!    [`ReplicaLink::next_rdb_chunk`] hands out the RDB as it arrives, never whole.
//! 4. [`ReplicaLink::into_stream`] turns the rest of the connection into a
//!    [`CommandStream`] that counts the replication offset, and an [`Acker`] that
//!    writes `REPLCONF ACK <offset>` on the same socket.

use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};

use crate::endpoint::{Endpoint, EndpointError, Stream, TlsOptions};
use crate::resp::{encode_command, CommandStream, Frame, FrameReader, Limits, ReadError};

/// Length of a replication id and of the diskless end mark.
pub const REPLID_LEN: usize = 40;

/// How the link behaves.
#[derive(Clone, Debug)]
pub struct LinkOptions {
    /// Announced with `REPLCONF listening-port` (shows in the source's INFO).
    pub listening_port: u16,
    pub connect_timeout: Duration,
    /// How long the source may send nothing before the link counts as dead
    /// (`--repl-timeout`, like Redis's own `repl-timeout`). The source pings its
    /// replicas every 10 s (repl-ping-replica-period) and sends keepalive newlines
    /// while it prepares an RDB, so silence beyond this is a fault. It bounds every
    /// read of the handshake and of the RDB transfer here, and the command stream's
    /// silence in the engine's session loop.
    pub read_timeout: Duration,
    pub tls: TlsOptions,
    pub limits: Limits,
}

impl Default for LinkOptions {
    fn default() -> LinkOptions {
        LinkOptions {
            listening_port: 0,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            tls: TlsOptions::default(),
            limits: Limits::default(),
        }
    }
}

/// Why the link failed. Each variant says what the source answered.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    #[error("the source {endpoint} refused the credentials: {reply} (check the user and password in the source URL)")]
    Auth { endpoint: String, reply: String },
    #[error("the source {endpoint} needs a password: {reply} (put it in the source URL: redis://[user]:password@host:port)")]
    NoAuth { endpoint: String, reply: String },
    #[error("the source {endpoint} refused to replicate to us: PSYNC answered {psync}, SYNC answered {sync} (the account needs permission for PSYNC/SYNC, e.g. ACL SETUSER <user> +psync +sync +replconf; or, where replication is not allowed, as on managed services, --source-mode scan reads the source key by key)")]
    Refused {
        endpoint: String,
        psync: String,
        sync: String,
    },
    #[error("the source {endpoint} cannot serve a replica yet ({reply}); retrying")]
    NotReady { endpoint: String, reply: String },
    #[error("the source {endpoint} sent {what} where {expected} was expected")]
    Protocol {
        endpoint: String,
        what: String,
        expected: &'static str,
    },
    #[error("the source {endpoint} closed the connection {during}")]
    Closed {
        endpoint: String,
        during: &'static str,
    },
    /// No byte arrived for the link's `read_timeout` (`--repl-timeout`): a frozen
    /// host or a flow dropped by a firewall keeps a connection open and silent.
    #[error("the source {endpoint} sent nothing for {timeout:?} {during} (not even its PING every repl-ping-replica-period): the link is presumed dead; reconnecting")]
    Timeout {
        endpoint: String,
        timeout: Duration,
        during: &'static str,
    },
    #[error("reading from the source {endpoint} {during}: {source}")]
    Read {
        endpoint: String,
        during: &'static str,
        source: ReadError,
    },
    #[error("writing to the source {endpoint}: {source}")]
    Write {
        endpoint: String,
        source: std::io::Error,
    },
}

impl LinkError {
    /// Whether retrying later may succeed (connection faults, a loading source) as
    /// opposed to a configuration error that needs a person (bad password, no right).
    pub fn is_transient(&self) -> bool {
        !matches!(
            self,
            LinkError::Auth { .. } | LinkError::NoAuth { .. } | LinkError::Refused { .. }
        )
    }
}

pub use super::contract::PsyncReply;

type Reader = FrameReader<ReadHalf<Box<dyn Stream>>>;
type Writer = WriteHalf<Box<dyn Stream>>;

/// A connected, authenticated replica link before or after PSYNC.
pub struct ReplicaLink {
    endpoint: Endpoint,
    reader: Reader,
    writer: Writer,
    read_timeout: Duration,
}

impl ReplicaLink {
    /// Connects and performs the handshake up to (not including) PSYNC.
    pub async fn connect(
        endpoint: &Endpoint,
        options: &LinkOptions,
    ) -> Result<ReplicaLink, LinkError> {
        let stream = endpoint
            .connect(&options.tls, options.connect_timeout)
            .await?;
        let (read, write) = tokio::io::split(stream);
        let mut link = ReplicaLink {
            endpoint: endpoint.clone(),
            reader: FrameReader::new(read, options.limits.clone()),
            writer: write,
            read_timeout: options.read_timeout,
        };
        link.send(&[&b"PING"[..]]).await?;
        let pong = link.reply("the handshake PING").await?;
        if let Some(err) = pong.as_error() {
            let text = String::from_utf8_lossy(err).into_owned();
            // NOAUTH / NOPERM are expected before AUTH; anything else is not.
            if !(text.starts_with("NOAUTH")
                || text.starts_with("NOPERM")
                || text.contains("operation not permitted"))
            {
                return Err(link.protocol(format!("-{text}"), "+PONG"));
            }
        }
        let mut pipeline = Vec::new();
        let mut expect_auth = false;
        match (&endpoint.user, &endpoint.password) {
            (Some(user), Some(password)) => {
                encode_command_vec(
                    &mut pipeline,
                    &[b"AUTH".as_slice(), user.as_bytes(), password.as_bytes()],
                );
                expect_auth = true;
            }
            (None, Some(password)) => {
                encode_command_vec(&mut pipeline, &[b"AUTH".as_slice(), password.as_bytes()]);
                expect_auth = true;
            }
            _ => {}
        }
        let port = options.listening_port.to_string();
        encode_command_vec(
            &mut pipeline,
            &[b"REPLCONF".as_slice(), b"listening-port", port.as_bytes()],
        );
        encode_command_vec(
            &mut pipeline,
            &[b"REPLCONF".as_slice(), b"capa", b"eof", b"capa", b"psync2"],
        );
        // No `REPLCONF version`, on purpose. A Valkey primary keeps what a replica
        // says there (`replica_version`); 8.x writes RDB 11 whatever it is told (it
        // only counts replicas above 7.2.255 as ones a cluster's SETSLOT waits for),
        // and 9.0 and later choose the RDB they send by it (`replicaRdbVersion`): a
        // replica that says nothing gets 11, one that says 9.0 or later their own 80+
        // with a `VALKEY` magic, which the RDB parser does not read. Redis 6.2, 7.0
        // and 8.2 answer it `-ERR Unrecognized REPLCONF option`. Saying nothing thus
        // gets the newest format lockstep reads from every Valkey, with no SETSLOT
        // waiting on it and no refusal from Redis.
        link.write_all(&pipeline).await?;
        if expect_auth {
            let reply = link.reply("AUTH").await?;
            if let Some(err) = reply.as_error() {
                return Err(LinkError::Auth {
                    endpoint: endpoint.to_string(),
                    reply: String::from_utf8_lossy(err).into_owned(),
                });
            }
        }
        for what in ["REPLCONF listening-port", "REPLCONF capa"] {
            let reply = link.reply(what).await?;
            if let Some(err) = reply.as_error() {
                let text = String::from_utf8_lossy(err).into_owned();
                if text.starts_with("NOAUTH") {
                    return Err(LinkError::NoAuth {
                        endpoint: endpoint.to_string(),
                        reply: text,
                    });
                }
                tracing::warn!(source = %endpoint, "{what} refused: {text}");
            }
        }
        Ok(link)
    }

    /// Asks for the stream from `resume` (replid and the last offset applied), or for
    /// a full copy when `None`. Falls back to SYNC when PSYNC is refused.
    pub async fn psync(&mut self, resume: Option<(&str, i64)>) -> Result<PsyncReply, LinkError> {
        let (replid, offset) = match resume {
            Some((replid, offset)) => (replid.to_owned(), (offset + 1).to_string()),
            None => ("?".to_owned(), "-1".to_owned()),
        };
        self.send(&[b"PSYNC".as_slice(), replid.as_bytes(), offset.as_bytes()])
            .await?;
        let reply = self.status_line("waiting for the PSYNC reply").await?;
        if let Some(rest) = reply.strip_prefix("+FULLRESYNC ") {
            let mut words = rest.split_whitespace();
            let replid = words.next().filter(|id| id.len() == REPLID_LEN);
            let offset = words.next().and_then(|o| o.parse::<i64>().ok());
            return match (replid, offset) {
                (Some(replid), Some(offset)) => Ok(PsyncReply::FullResync {
                    replid: replid.to_owned(),
                    offset,
                }),
                _ => Err(self.protocol(reply.clone(), "+FULLRESYNC <40-char replid> <offset>")),
            };
        }
        if let Some(rest) = reply.strip_prefix("+CONTINUE") {
            let replid = rest.trim();
            return Ok(PsyncReply::Continue {
                replid: (replid.len() == REPLID_LEN).then(|| replid.to_owned()),
            });
        }
        if reply.starts_with("-NOMASTERLINK") || reply.starts_with("-LOADING") {
            return Err(LinkError::NotReady {
                endpoint: self.endpoint.to_string(),
                reply,
            });
        }
        if reply.starts_with("-NOAUTH") {
            return Err(LinkError::NoAuth {
                endpoint: self.endpoint.to_string(),
                reply,
            });
        }
        if !reply.starts_with('-') {
            return Err(self.protocol(reply, "+FULLRESYNC or +CONTINUE"));
        }
        // PSYNC refused or unknown: the old SYNC answers with the RDB directly.
        tracing::warn!(source = %self.endpoint, "PSYNC refused ({reply}); falling back to SYNC, which cannot resume later");
        self.send(&[b"SYNC".as_slice()]).await?;
        // Keepalive newlines until the first byte of the reply; each read is bounded.
        loop {
            self.reader.skip_buffered_newlines();
            if !self.reader.buffer().is_empty() {
                break;
            }
            self.fill("waiting for the SYNC reply").await?;
        }
        if self.reader.buffer().first() == Some(&b'-') {
            let sync = self.status_line("reading the SYNC reply").await?;
            return Err(LinkError::Refused {
                endpoint: self.endpoint.to_string(),
                psync: reply,
                sync,
            });
        }
        Ok(PsyncReply::Sync)
    }

    /// Reads the header of the RDB transfer that follows a full resync.
    pub async fn rdb_transfer(&mut self) -> Result<RdbTransfer, LinkError> {
        let line = self
            .status_line("waiting for the RDB transfer header (the source prepares its snapshot)")
            .await?;
        if let Some(mark) = line.strip_prefix("$EOF:") {
            if mark.len() != REPLID_LEN {
                return Err(self.protocol(line.clone(), "$EOF:<40-byte mark>"));
            }
            return Ok(RdbTransfer::Diskless {
                mark: mark.as_bytes().to_vec(),
                finished: false,
            });
        }
        if let Some(len) = line.strip_prefix('$').and_then(|l| l.parse::<u64>().ok()) {
            return Ok(RdbTransfer::Sized { remaining: len });
        }
        if line.starts_with('-') {
            return Err(LinkError::NotReady {
                endpoint: self.endpoint.to_string(),
                reply: line,
            });
        }
        Err(self.protocol(line, "$<length> or $EOF:<mark>"))
    }

    /// The next piece of the RDB, `None` after its last byte. Pieces are whatever
    /// arrived, at most one read buffer long: the RDB is never held whole.
    pub async fn next_rdb_chunk(
        &mut self,
        transfer: &mut RdbTransfer,
    ) -> Result<Option<Bytes>, LinkError> {
        match transfer {
            RdbTransfer::Sized { remaining } => {
                if *remaining == 0 {
                    return Ok(None);
                }
                let during = "during the RDB transfer";
                let timeout = self.read_timeout;
                let want = (*remaining).min(usize::MAX as u64) as usize;
                let chunk = match tokio::time::timeout(timeout, self.reader.read_chunk(want)).await
                {
                    Err(_) => {
                        return Err(LinkError::Timeout {
                            endpoint: self.endpoint.to_string(),
                            timeout,
                            during,
                        })
                    }
                    Ok(Err(e)) => return Err(self.read_error(during, e)),
                    Ok(Ok(None)) => {
                        return Err(LinkError::Closed {
                            endpoint: self.endpoint.to_string(),
                            during,
                        })
                    }
                    Ok(Ok(Some(chunk))) => chunk,
                };
                *remaining -= chunk.len() as u64;
                Ok(Some(chunk))
            }
            RdbTransfer::Diskless { mark, finished } => {
                if *finished {
                    return Ok(None);
                }
                // Hold back the last 40 bytes: they may be the end mark. The source
                // sends nothing after the mark until we ACK, so the mark is at the end
                // of what has arrived when it has arrived.
                loop {
                    let buffered = self.reader.buffer().len();
                    if buffered >= REPLID_LEN
                        && self.reader.buffer()[buffered - REPLID_LEN..] == mark[..]
                    {
                        *finished = true;
                        let body = self.take(buffered - REPLID_LEN);
                        self.take(REPLID_LEN);
                        return Ok(Some(body));
                    }
                    if buffered > 2 * REPLID_LEN {
                        return Ok(Some(self.take(buffered - REPLID_LEN)));
                    }
                    self.fill("during the diskless RDB transfer").await?;
                }
            }
        }
    }

    /// The rest of the connection: the command stream (whose next byte is at
    /// replication offset `offset`) and the ACK writer.
    pub fn into_stream(self, offset: i64) -> (CommandStream<ReadHalf<Box<dyn Stream>>>, Acker) {
        let acker = Acker {
            endpoint: self.endpoint.to_string(),
            writer: self.writer,
        };
        (CommandStream::new(self.reader, offset), acker)
    }

    /// `REPLCONF ACK <offset>` during the full copy (the source drops a replica that
    /// stays silent for repl-timeout).
    pub async fn ack(&mut self, offset: i64) -> Result<(), LinkError> {
        let offset = offset.to_string();
        self.send(&[b"REPLCONF".as_slice(), b"ACK", offset.as_bytes()])
            .await
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    async fn send(&mut self, argv: &[&[u8]]) -> Result<(), LinkError> {
        let mut out = Vec::new();
        encode_command_vec(&mut out, argv);
        self.write_all(&out).await
    }

    async fn write_all(&mut self, bytes: &[u8]) -> Result<(), LinkError> {
        let endpoint = self.endpoint.to_string();
        self.writer
            .write_all(bytes)
            .await
            .map_err(|source| LinkError::Write { endpoint, source })
    }

    /// One RESP reply, with the read timeout.
    async fn reply(&mut self, during: &'static str) -> Result<Frame, LinkError> {
        let timeout = self.read_timeout;
        match tokio::time::timeout(timeout, self.reader.read_frame()).await {
            Err(_) => Err(LinkError::Timeout {
                endpoint: self.endpoint.to_string(),
                timeout,
                during: "in the handshake",
            }),
            Ok(Err(source)) => Err(self.read_error(during, source)),
            Ok(Ok(None)) => Err(LinkError::Closed {
                endpoint: self.endpoint.to_string(),
                during,
            }),
            Ok(Ok(Some(frame))) => Ok(frame),
        }
    }

    /// One text line (`+...`, `-...`, `$...`) after any keepalive newlines, without
    /// its CRLF. Used where the next bytes are not a complete RESP value (the `$len`
    /// header of an RDB, whose body is not followed by CRLF). The timeout bounds each
    /// read, not the wait: a source that takes minutes to prepare its snapshot sends
    /// a newline every second meanwhile, and is alive.
    async fn status_line(&mut self, during: &'static str) -> Result<String, LinkError> {
        loop {
            self.reader.skip_buffered_newlines();
            let line = self
                .reader
                .buffered_line()
                .map_err(|e| self.read_error(during, e))?;
            if let Some(line) = line {
                return Ok(String::from_utf8_lossy(&line).into_owned());
            }
            self.fill(during).await?;
        }
    }

    async fn fill(&mut self, during: &'static str) -> Result<(), LinkError> {
        let timeout = self.read_timeout;
        match tokio::time::timeout(timeout, self.reader.fill(0)).await {
            Err(_) => Err(LinkError::Timeout {
                endpoint: self.endpoint.to_string(),
                timeout,
                during,
            }),
            Ok(Err(e)) => Err(self.read_error(during, ReadError::Io(e))),
            Ok(Ok(0)) => Err(LinkError::Closed {
                endpoint: self.endpoint.to_string(),
                during,
            }),
            Ok(Ok(_)) => Ok(()),
        }
    }

    fn take(&mut self, n: usize) -> Bytes {
        let bytes = self.reader.buffer_mut().split_to(n).freeze();
        self.reader.consumed(n);
        bytes
    }

    fn read_error(&self, during: &'static str, source: ReadError) -> LinkError {
        LinkError::Read {
            endpoint: self.endpoint.to_string(),
            during,
            source,
        }
    }

    fn protocol(&self, what: String, expected: &'static str) -> LinkError {
        LinkError::Protocol {
            endpoint: self.endpoint.to_string(),
            what,
            expected,
        }
    }
}

/// How the RDB of a full resync arrives.
#[derive(Debug)]
pub enum RdbTransfer {
    /// Disk-based: exactly this many bytes remain.
    Sized { remaining: u64 },
    /// Diskless: bytes until the 40-byte end mark.
    Diskless { mark: Vec<u8>, finished: bool },
}

impl RdbTransfer {
    /// Diskless transfers need an ACK at once after their end, or the source never
    /// starts the command stream.
    pub fn is_diskless(&self) -> bool {
        matches!(self, RdbTransfer::Diskless { .. })
    }
}

/// Writes `REPLCONF ACK <offset>` to the source on the link's socket.
pub struct Acker {
    endpoint: String,
    writer: Writer,
}

impl Acker {
    /// Tells the source that everything up to `offset` is applied.
    pub async fn ack(&mut self, offset: i64) -> Result<(), LinkError> {
        let offset = offset.to_string();
        let mut out = Vec::with_capacity(48);
        encode_command_vec(
            &mut out,
            &[b"REPLCONF".as_slice(), b"ACK", offset.as_bytes()],
        );
        let endpoint = &self.endpoint;
        self.writer
            .write_all(&out)
            .await
            .map_err(|source| LinkError::Write {
                endpoint: endpoint.clone(),
                source,
            })
    }
}

impl super::Snapshot for RdbTransfer {
    fn bytes_total(&self) -> Option<u64> {
        match self {
            RdbTransfer::Sized { remaining } => Some(*remaining),
            RdbTransfer::Diskless { .. } => None,
        }
    }
}

impl super::Acknowledge for Acker {
    type Error = LinkError;

    async fn ack(&mut self, offset: i64) -> Result<(), LinkError> {
        Acker::ack(self, offset).await
    }
}

/// The Source contract over the PSYNC conversation.
impl super::Source for ReplicaLink {
    type Error = LinkError;
    type Snapshot = RdbTransfer;
    type Stream = ReadHalf<Box<dyn Stream>>;
    type Acker = Acker;

    async fn resume(&mut self, from: Option<(&str, i64)>) -> Result<PsyncReply, LinkError> {
        self.psync(from).await
    }

    async fn snapshot(&mut self) -> Result<RdbTransfer, LinkError> {
        self.rdb_transfer().await
    }

    async fn next_snapshot_chunk(
        &mut self,
        snapshot: &mut RdbTransfer,
    ) -> Result<Option<Bytes>, LinkError> {
        self.next_rdb_chunk(snapshot).await
    }

    /// ACKs during a disk-based transfer keep a slow copy from timing out (the
    /// source counts the replica online once the file is sent). Never during a
    /// diskless one: an ACK that lands just after the source has sent the end mark
    /// starts the command stream right behind the mark, and the mark is then no
    /// longer the last thing received (measured: ~25 s stalls until the next PINGs,
    /// with stream bytes taken for RDB bytes). The source waits for our first ACK
    /// after the mark.
    async fn snapshot_keepalive(
        &mut self,
        snapshot: &RdbTransfer,
        offset: i64,
    ) -> Result<(), LinkError> {
        match snapshot.is_diskless() {
            true => Ok(()),
            false => self.ack(offset).await,
        }
    }

    fn into_stream(self, offset: i64) -> (CommandStream<Self::Stream>, Acker) {
        ReplicaLink::into_stream(self, offset)
    }
}

fn encode_command_vec(out: &mut Vec<u8>, argv: &[&[u8]]) {
    let mut buf = bytes::BytesMut::new();
    encode_command(&mut buf, argv);
    out.extend_from_slice(buf.chunk());
}
