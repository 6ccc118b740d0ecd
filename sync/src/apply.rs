//! The target writer: applies commands to the target Redis over one pipelined
//! connection, checks every reply, and tells how far the target has got.
//!
//! Commands are encoded into a reused buffer and written in batches; replies come back
//! in order on the same connection, so the reply to a command tagged with a replication
//! offset proves that the target has applied everything up to that offset. At most
//! `in_flight_max` commands are unanswered at any time (bounded memory, and a slow
//! target slows the source link instead of filling memory).
//!
//! An error reply stops the writer: [`ApplyError::Rejected`] names the command, its
//! key and the reply, and nothing after it counts as applied. `-OOM` on the target
//! is such an error, so the checkpoint never advances past a write the target refused.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};

use crate::endpoint::{Endpoint, EndpointError, Stream, TlsOptions};
use crate::resp::{encode_command, Frame, FrameReader, Limits, ReadError};

/// Why applying stopped.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    #[error("the {endpoint} refused {command} on key {key:?}: {reply}{hint}")]
    Rejected {
        endpoint: String,
        command: String,
        key: String,
        reply: String,
        hint: &'static str,
    },
    #[error("the {endpoint} closed the connection")]
    Closed { endpoint: String },
    #[error("the {endpoint} did not answer within {timeout:?}")]
    Timeout { endpoint: String, timeout: Duration },
    #[error("reading replies from the {endpoint}: {source}")]
    Read { endpoint: String, source: ReadError },
    #[error("writing to the {endpoint}: {source}")]
    Write {
        endpoint: String,
        source: std::io::Error,
    },
}

impl ApplyError {
    /// Connection faults can be retried; a refused command needs a person.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ApplyError::Closed { .. }
                | ApplyError::Timeout { .. }
                | ApplyError::Read { .. }
                | ApplyError::Write { .. }
        ) || matches!(self, ApplyError::Endpoint(_))
    }
}

/// Options of the target writer.
#[derive(Clone, Debug)]
pub struct ApplyOptions {
    /// Most commands sent and not yet answered.
    pub in_flight_max: usize,
    /// Bytes buffered before they are written even if more commands follow.
    pub batch_bytes_max: usize,
    pub connect_timeout: Duration,
    /// Longest wait for one reply.
    pub reply_timeout: Duration,
    pub tls: TlsOptions,
}

impl Default for ApplyOptions {
    fn default() -> ApplyOptions {
        ApplyOptions {
            in_flight_max: 4096,
            batch_bytes_max: 1 << 20,
            connect_timeout: Duration::from_secs(10),
            reply_timeout: Duration::from_secs(60),
            tls: TlsOptions::default(),
        }
    }
}

/// What the writer remembers about a command until its reply arrives.
struct Pending {
    /// Command name and first key, for an error message.
    name: Bytes,
    key: Option<Bytes>,
    /// The stream position this command completes, if it is the last of a source
    /// command or of a MULTI/EXEC block.
    position: Option<Position>,
    /// For an EXEC: the commands it runs, to name the one that failed.
    queued: Option<Vec<CommandName>>,
}

/// A command's name and (the start of) its first key, for error messages.
type CommandName = (Bytes, Option<Bytes>);

fn command_name<A: AsRef<[u8]>>(argv: &[A]) -> CommandName {
    let name = argv
        .first()
        .map(|a| Bytes::copy_from_slice(a.as_ref()))
        .unwrap_or_default();
    if name.eq_ignore_ascii_case(b"AUTH") {
        // Its arguments are credentials: never in a message.
        return (name, None);
    }
    let key = argv
        .get(1)
        .map(|a| Bytes::copy_from_slice(&a.as_ref()[..a.as_ref().len().min(128)]));
    (name, key)
}

/// A point in the source's replication stream: the offset after a command and the
/// database selected there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub offset: i64,
    pub db: u32,
}

/// A pipelined connection to the target.
pub struct TargetWriter {
    endpoint: String,
    reader: FrameReader<ReadHalf<Box<dyn Stream>>>,
    writer: WriteHalf<Box<dyn Stream>>,
    out: BytesMut,
    pending: VecDeque<Pending>,
    /// Stream position of the last command whose reply arrived.
    applied: Option<Position>,
    /// Commands answered since the start.
    applied_commands: u64,
    /// The commands queued since a MULTI was sent, until its EXEC.
    transaction: Option<Vec<CommandName>>,
    options: ApplyOptions,
}

impl TargetWriter {
    /// Connects and authenticates (from the URL's user and password).
    pub async fn connect(
        endpoint: &Endpoint,
        options: ApplyOptions,
    ) -> Result<TargetWriter, ApplyError> {
        TargetWriter::connect_to("target", endpoint, options).await
    }

    /// Connects to a Redis in another `role` ("source" for the heartbeat and the
    /// precheck); errors name the role.
    pub async fn connect_to(
        role: &str,
        endpoint: &Endpoint,
        options: ApplyOptions,
    ) -> Result<TargetWriter, ApplyError> {
        let stream = endpoint
            .connect(&options.tls, options.connect_timeout)
            .await?;
        let (read, write) = tokio::io::split(stream);
        let mut writer = TargetWriter {
            endpoint: format!("{role} {endpoint}"),
            reader: FrameReader::new(read, Limits::default()),
            writer: write,
            out: BytesMut::with_capacity(options.batch_bytes_max + 64 * 1024),
            pending: VecDeque::with_capacity(options.in_flight_max),
            applied: None,
            applied_commands: 0,
            transaction: None,
            options,
        };
        match (&endpoint.user, &endpoint.password) {
            (Some(user), Some(password)) => {
                writer
                    .push(
                        &[b"AUTH".as_slice(), user.as_bytes(), password.as_bytes()],
                        None,
                    )
                    .await?
            }
            (None, Some(password)) => {
                writer
                    .push(&[b"AUTH".as_slice(), password.as_bytes()], None)
                    .await?
            }
            _ => {}
        }
        writer.drain().await?;
        Ok(writer)
    }

    /// Queues one command; `position` marks it as completing that stream position.
    /// Waits for replies when `in_flight_max` commands are unanswered.
    pub async fn push<A: AsRef<[u8]>>(
        &mut self,
        argv: &[A],
        position: Option<Position>,
    ) -> Result<(), ApplyError> {
        if self.pending.len() >= self.options.in_flight_max {
            // Refill only once half the window is answered: waiting for one reply
            // per new command made every command its own write(2) (measured: 2 M
            // sendto calls for 2 M keys).
            self.flush().await?;
            while self.pending.len() > self.options.in_flight_max / 2 {
                self.read_one().await?;
            }
        }
        encode_command(&mut self.out, argv);
        let (name, key) = command_name(argv);
        let mut queued = None;
        if name.eq_ignore_ascii_case(b"MULTI") {
            self.transaction = Some(Vec::new());
        } else if name.eq_ignore_ascii_case(b"EXEC") {
            queued = self.transaction.take();
        } else if let Some(transaction) = self.transaction.as_mut() {
            transaction.push((name.clone(), key.clone()));
        }
        self.pending.push_back(Pending {
            name,
            key,
            position,
            queued,
        });
        if self.out.len() >= self.options.batch_bytes_max {
            self.flush().await?;
        }
        Ok(())
    }

    /// Marks `position` as reached once every command queued so far is answered (for
    /// entries that send nothing to the target: PING, filtered keys, blanks).
    pub fn mark_position(&mut self, position: Position) {
        match self.pending.back_mut() {
            Some(last) => last.position = Some(position),
            None => self.advance(position),
        }
    }

    /// Writes what is buffered.
    pub async fn flush(&mut self) -> Result<(), ApplyError> {
        if self.out.is_empty() {
            return Ok(());
        }
        let endpoint = &self.endpoint;
        self.writer
            .write_all(&self.out)
            .await
            .map_err(|source| ApplyError::Write {
                endpoint: endpoint.clone(),
                source,
            })?;
        self.out.clear();
        Ok(())
    }

    /// Reads the replies that have already arrived, without waiting.
    pub async fn poll_replies(&mut self) -> Result<(), ApplyError> {
        while !self.pending.is_empty() {
            let has_reply = crate::resp::check_frame(self.reader.buffer(), &Limits::default())
                .map(|status| status.is_complete())
                .unwrap_or(true);
            if !has_reply {
                // Pull whatever the socket holds without blocking.
                let ready = tokio::time::timeout(Duration::ZERO, self.reader.fill(0)).await;
                match ready {
                    Ok(Ok(0)) => {
                        return Err(ApplyError::Closed {
                            endpoint: self.endpoint.clone(),
                        })
                    }
                    Ok(Ok(_)) => continue,
                    Ok(Err(e)) => {
                        return Err(ApplyError::Read {
                            endpoint: self.endpoint.clone(),
                            source: ReadError::Io(e),
                        })
                    }
                    Err(_) => return Ok(()),
                }
            }
            self.read_one().await?;
        }
        Ok(())
    }

    /// Flushes and waits until every queued command is answered.
    pub async fn drain(&mut self) -> Result<(), ApplyError> {
        self.flush().await?;
        while !self.pending.is_empty() {
            self.read_one().await?;
        }
        Ok(())
    }

    /// Position of the last command (or marked entry) the target has answered.
    pub fn applied(&self) -> Option<Position> {
        self.applied
    }

    pub fn applied_commands(&self) -> u64 {
        self.applied_commands
    }

    /// Commands sent (or queued) and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Sends one command and returns its reply (for queries: INFO, SCAN, TYPE...),
    /// after everything queued before it.
    pub async fn query<A: AsRef<[u8]>>(&mut self, argv: &[A]) -> Result<Frame, ApplyError> {
        self.drain().await?;
        encode_command(&mut self.out, argv);
        self.flush().await?;
        self.next_frame().await
    }

    async fn read_one(&mut self) -> Result<(), ApplyError> {
        let frame = self.next_frame().await?;
        let Some(pending) = self.pending.pop_front() else {
            return Ok(());
        };
        if let Some(err) = frame.as_error() {
            return Err(self.rejected((pending.name, pending.key), err));
        }
        // EXEC answers with one reply per queued command; any error there is a
        // command the target refused.
        if let (Some(queued), Frame::Array(replies)) = (pending.queued, &frame) {
            for (command, reply) in queued.into_iter().zip(replies) {
                if let Some(err) = reply.as_error() {
                    return Err(self.rejected(command, err));
                }
            }
        }
        self.applied_commands += 1;
        if let Some(position) = pending.position {
            self.advance(position);
        }
        Ok(())
    }

    fn rejected(&self, (name, key): CommandName, reply: &[u8]) -> ApplyError {
        let reply = String::from_utf8_lossy(reply).into_owned();
        let hint = if reply.starts_with("OOM") {
            " (the target is out of memory: raise its maxmemory; nothing after this command was counted as applied)"
        } else if reply.starts_with("READONLY") {
            " (the target is a replica: point --target at its primary)"
        } else if reply.starts_with("NOAUTH") || reply.starts_with("WRONGPASS") {
            " (check the user and password in the URL)"
        } else {
            ""
        };
        ApplyError::Rejected {
            endpoint: self.endpoint.clone(),
            command: String::from_utf8_lossy(&name).into_owned(),
            key: key
                .map(|k| String::from_utf8_lossy(&k).into_owned())
                .unwrap_or_default(),
            reply,
            hint,
        }
    }

    fn advance(&mut self, position: Position) {
        // Invariant: the applied offset never moves backwards.
        assert!(
            self.applied.is_none_or(|old| old.offset <= position.offset),
            "applied offset moved backwards: {:?} -> {position:?}",
            self.applied
        );
        self.applied = Some(position);
    }

    async fn next_frame(&mut self) -> Result<Frame, ApplyError> {
        let timeout = self.options.reply_timeout;
        match tokio::time::timeout(timeout, self.reader.read_frame()).await {
            Err(_) => Err(ApplyError::Timeout {
                endpoint: self.endpoint.clone(),
                timeout,
            }),
            Ok(Err(source)) => Err(ApplyError::Read {
                endpoint: self.endpoint.clone(),
                source,
            }),
            Ok(Ok(None)) => Err(ApplyError::Closed {
                endpoint: self.endpoint.clone(),
            }),
            Ok(Ok(Some(frame))) => Ok(frame),
        }
    }
}
