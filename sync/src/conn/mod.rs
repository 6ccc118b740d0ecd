//! A pipelined, reply-checked connection to one Redis server. It knows nothing
//! about clusters, transactions of the sync or checkpoints: it sends what it is
//! given, checks every reply, and tells how far the server has got. The target
//! ([`crate::target`]) writes through it, one per standalone target or per
//! primary of a cluster; the heartbeat, the precheck, the cluster source's
//! discovery and the cross-slot copier use it as their connection to the *source*.
//!
//! Commands are encoded into a reused buffer and written in batches; replies come back
//! in order on the same connection, so the reply to a command tagged with a replication
//! offset proves that the server has applied everything up to that offset. At most
//! `in_flight_max` commands are unanswered at any time (bounded memory, and a slow
//! target slows the source link instead of filling memory).
//!
//! An error reply stops the connection: [`ApplyError::Rejected`] names the command,
//! its key and the reply, and nothing after it counts as applied. `-OOM` on the
//! target is such an error, so the checkpoint never advances past a write the
//! target refused. (A primary of a cluster target records redirections instead,
//! `Conn::record_redirections`, for its router to send again.)
//!
//! A server that stops answering (a frozen host, a black-holed flow) is bounded by
//! `reply_timeout` (`--target-timeout`): every wait for a reply and every write is,
//! and [`Conn::check_answering`] (the session loop's ACK tick) fails the
//! connection when commands have waited that long with no byte from the server.
//! Nothing unanswered is ever counted applied, so the next session resumes exactly.
//!
//! An abandoned connection may still deliver what it sent (a path that recovers after
//! the session gave up on it): a transaction arriving after the next session read the
//! checkpoint would apply twice. So every connection learns its identity
//! (`CLIENT INFO`: id and address, as the server sees them), and the next session
//! closes the previous session's connections ([`Conn::fence`]) before it
//! reads the checkpoint.
//!
//! The gate's bookkeeping is plain state in `gate.rs` ([`gate::Gate`]: at most one
//! transaction in flight and one held), unit-tested without a server.
//!
//! Never: count a position applied before its reply arrived, send what a gate
//! holds before the gate opens, or put a password in a message (AUTH's arguments
//! never reach a `Label`).

mod gate;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};

use crate::endpoint::{Endpoint, EndpointError, Stream, TlsOptions};
use crate::resp::{
    check_frame, encode_command, first_error_element, Frame, FrameReader, Limits, ReadError, Status,
};
use gate::Gate;

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
    #[error("the {endpoint} did not answer within {timeout:?}: the connection is presumed dead")]
    Timeout { endpoint: String, timeout: Duration },
    #[error("reading replies from the {endpoint}: {source}")]
    Read { endpoint: String, source: ReadError },
    #[error("writing to the {endpoint}: {source}")]
    Write {
        endpoint: String,
        source: std::io::Error,
    },
    /// A cluster target moved a slot or failed over (MOVED, ASK, READONLY): the
    /// session reads the slot map again and resumes from the slots' checkpoints.
    #[error("the {endpoint} answered {reply} to {command}: the target cluster is changing; reading its slot map again")]
    Redirected {
        endpoint: String,
        command: String,
        reply: String,
    },
    /// The target's checkpoint key holds something else than a checkpoint.
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    /// What a cluster target cannot take (see [`crate::cluster`]).
    #[error("cluster target: {0}")]
    Cluster(String),
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
                | ApplyError::Redirected { .. }
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
    /// Longest wait for one reply, for one write, and longest silence while
    /// commands are unanswered (`--target-timeout`).
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

/// What the writer remembers about a command until its reply arrives. Small and
/// allocation-free: one of these exists per command in flight.
struct Pending {
    label: Label,
    /// The stream position this command completes, if it is the last of a source
    /// command or of a MULTI/EXEC block.
    position: Option<Position>,
    role: Role,
}

/// Where a command stands with respect to a target transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Plain,
    /// Queued inside a MULTI: its `+QUEUED` reply moves its label to the labels of
    /// the commands the EXEC will run.
    Queued,
    /// EXEC (or DISCARD) of that many queued commands.
    Ends {
        queued: u32,
        exec: bool,
    },
}

/// Commands whose first argument is a subcommand and whose key comes after it.
fn has_subcommand(name: &[u8]) -> bool {
    matches!(name.first(), Some(b'X' | b'x' | b'O' | b'o'))
        && (name.eq_ignore_ascii_case(b"XGROUP")
            || name.eq_ignore_ascii_case(b"XINFO")
            || name.eq_ignore_ascii_case(b"OBJECT"))
}

/// A command's name and the start of its first key, kept inline for the message of
/// an error reply (no allocation on the hot path).
#[derive(Clone, Copy)]
struct Label {
    bytes: [u8; Label::NAME_MAX + Label::KEY_MAX],
    name_len: u8,
    key_len: u8,
}

impl Label {
    const NAME_MAX: usize = 24;
    const KEY_MAX: usize = 64;

    fn of<A: AsRef<[u8]>>(argv: &[A]) -> Label {
        let mut label = Label {
            bytes: [0; Label::NAME_MAX + Label::KEY_MAX],
            name_len: 0,
            key_len: 0,
        };
        let name = argv.first().map_or(&[][..], |a| a.as_ref());
        let name = &name[..name.len().min(Label::NAME_MAX)];
        label.bytes[..name.len()].copy_from_slice(name);
        label.name_len = name.len() as u8;
        // A command with a subcommand (XGROUP CREATECONSUMER key ...): the label is
        // `NAME SUB` and the key its third argument.
        let mut key_at = 1;
        if has_subcommand(name) {
            if let Some(sub) = argv.get(1).map(|a| a.as_ref()) {
                let room = Label::NAME_MAX - name.len();
                if room > 1 {
                    let sub = &sub[..sub.len().min(room - 1)];
                    let at = name.len();
                    label.bytes[at] = b' ';
                    label.bytes[at + 1..at + 1 + sub.len()].copy_from_slice(sub);
                    label.name_len = (at + 1 + sub.len()) as u8;
                }
                key_at = 2;
            }
        }
        // AUTH's arguments are credentials: never in a message.
        if !name.eq_ignore_ascii_case(b"AUTH") {
            if let Some(key) = argv.get(key_at) {
                let key = &key.as_ref()[..key.as_ref().len().min(Label::KEY_MAX)];
                label.bytes[Label::NAME_MAX..Label::NAME_MAX + key.len()].copy_from_slice(key);
                label.key_len = key.len() as u8;
            }
        }
        label
    }

    fn name(&self) -> &[u8] {
        &self.bytes[..self.name_len as usize]
    }

    fn key(&self) -> &[u8] {
        &self.bytes[Label::NAME_MAX..Label::NAME_MAX + self.key_len as usize]
    }
}

/// A point in the source's replication stream: the offset after a command and the
/// database selected there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub offset: i64,
    pub db: u32,
}

/// What a primary of a cluster target answered with a redirection, for the router
/// to send again where the slot now is (see [`crate::cluster`]).
#[derive(Default)]
struct Redirections {
    /// Sequence numbers (in [`Conn::commands_pushed`] terms) of the
    /// redirected commands, with the reply.
    replies: Vec<(u64, String)>,
    /// A queued command of the open transaction was redirected: its EXECABORT is
    /// part of the same redirection.
    in_transaction: bool,
    /// Positions reached while a redirected command waits to be sent again: the
    /// writer does not count them as applied until the router says it is done.
    held: Option<Position>,
    holding: bool,
}

impl Redirections {
    /// The command numbered `sequence` was redirected with `reply`: positions are
    /// held back from now on.
    fn record(&mut self, sequence: u64, reply: String) {
        self.replies.push((sequence, reply));
        self.holding = true;
    }

    /// A reply completed `position`: the position to count as applied now, or
    /// none while a redirected command waits (then it is kept for later).
    fn reached(&mut self, position: Position) -> Option<Position> {
        if !self.holding {
            return Some(position);
        }
        debug_assert!(
            self.held.is_none_or(|held| held.offset <= position.offset),
            "held position moved backwards"
        );
        self.held = Some(position);
        None
    }

    /// The router has applied every redirected command elsewhere: the position
    /// held back, if any, counts now.
    fn resolved(&mut self) -> Option<Position> {
        self.holding = false;
        self.held.take()
    }
}

/// Replies that say a cluster's slot is elsewhere or moving, not that the command
/// is wrong: MOVED, ASK, TRYAGAIN (a multi-key command in a migrating slot),
/// CLUSTERDOWN and READONLY (a primary turned replica).
pub(crate) fn is_redirection(reply: &str) -> bool {
    ["MOVED ", "ASK ", "TRYAGAIN", "CLUSTERDOWN", "READONLY"]
        .iter()
        .any(|p| reply.starts_with(p))
}

/// One connection as the target knows it, to close it from another
/// ([`Conn::fence`]): the node's name, `CLIENT INFO`'s `id` and `addr`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientIdentity {
    node: String,
    id: String,
    addr: String,
}

/// The `id` and `addr` fields of a `CLIENT INFO` line.
fn parse_client_info(node: &str, line: &str) -> Option<ClientIdentity> {
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .map(str::to_owned)
    };
    let id = field("id").filter(|id| id.bytes().all(|b| b.is_ascii_digit()))?;
    Some(ClientIdentity {
        node: node.to_owned(),
        id,
        addr: field("addr")?,
    })
}

/// A pipelined connection to the target.
pub struct Conn {
    endpoint: String,
    reader: FrameReader<ReadHalf<Box<dyn Stream>>>,
    writer: WriteHalf<Box<dyn Stream>>,
    out: BytesMut,
    pending: VecDeque<Pending>,
    /// Labels of the commands the target has queued in transactions whose EXEC has
    /// not been answered yet, in order (to name the one an EXEC reply says failed).
    queued: VecDeque<Label>,
    /// Stream position of the last command whose reply arrived.
    applied: Option<Position>,
    /// Commands answered since the start.
    applied_commands: u64,
    /// Commands queued since a MULTI was sent, until its EXEC or DISCARD.
    transaction: Option<u32>,
    /// When a command was pushed onto an empty queue: the target's silence counts
    /// from the later of this and its last byte (see [`Conn::check_answering`]).
    waiting_since: Option<Instant>,
    /// While it holds, `out` is held back: the commands already sent must be
    /// answered first (see [`Conn::hold_until_answered`]).
    gate: Gate,
    /// Commands pushed and replies read since the start (a cluster router maps
    /// redirections back to what it sent by these sequence numbers).
    pushed: u64,
    answered: u64,
    /// Set on a primary of a cluster target: redirections are recorded for the
    /// router instead of failing the writer (see [`Redirections`]).
    redirections: Option<Redirections>,
    options: ApplyOptions,
    /// This connection as the target knows it (none before Redis 6.2, which has
    /// no `CLIENT INFO`, or when the account may not run it).
    identity: Option<ClientIdentity>,
}

impl Conn {
    /// Connects and authenticates (from the URL's user and password).
    pub async fn connect(endpoint: &Endpoint, options: ApplyOptions) -> Result<Conn, ApplyError> {
        let mut writer = Conn::connect_to("target", endpoint, options).await?;
        let info = writer.query(&[b"CLIENT".as_slice(), b"INFO"]).await?;
        let line = info
            .as_bytes()
            .map(|b| String::from_utf8_lossy(b).into_owned());
        writer.identity = line.and_then(|line| parse_client_info(&writer.endpoint, &line));
        if writer.identity.is_none() {
            tracing::debug!(target = %writer.endpoint, "CLIENT INFO gave no identity ({info:?}): this connection cannot be fenced by the next session");
        }
        Ok(writer)
    }

    /// This connection as the server knows it, if `CLIENT INFO` told.
    pub fn identity(&self) -> Option<&ClientIdentity> {
        self.identity.as_ref()
    }

    pub async fn fence(&mut self, old: &[ClientIdentity]) -> Result<(), ApplyError> {
        let node = self.endpoint.clone();
        for gone in old.iter().filter(|gone| gone.node == node) {
            let argv = [
                b"CLIENT".as_slice(),
                b"KILL",
                b"ID",
                gone.id.as_bytes(),
                b"ADDR",
                gone.addr.as_bytes(),
            ];
            match self.query(&argv).await? {
                Frame::Integer(closed) if closed > 0 => {
                    tracing::info!(target = %self.endpoint, "closed the previous session's connection {}, still open on the target", gone.addr);
                }
                Frame::Error(reply) if !reply.starts_with(b"ERR No such client") => {
                    tracing::warn!(target = %self.endpoint, "cannot close the previous session's connection ({}): a transaction it sent may still arrive late", String::from_utf8_lossy(&reply));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Connects to a Redis in another `role` ("source" for the heartbeat and the
    /// precheck); errors name the role.
    pub async fn connect_to(
        role: &str,
        endpoint: &Endpoint,
        options: ApplyOptions,
    ) -> Result<Conn, ApplyError> {
        let stream = endpoint
            .connect(&options.tls, options.connect_timeout)
            .await?;
        let (read, write) = tokio::io::split(stream);
        let mut writer = Conn {
            endpoint: format!("{role} {endpoint}"),
            reader: FrameReader::new(read, Limits::default()),
            writer: write,
            out: BytesMut::with_capacity(options.batch_bytes_max + 64 * 1024),
            pending: VecDeque::with_capacity(options.in_flight_max),
            queued: VecDeque::new(),
            applied: None,
            applied_commands: 0,
            transaction: None,
            waiting_since: None,
            gate: Gate::default(),
            pushed: 0,
            answered: 0,
            redirections: None,
            options,
            identity: None,
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
                self.flush().await?; // what was held, once the gate opens
            }
        }
        if self.pending.is_empty() {
            self.waiting_since = Some(Instant::now());
        }
        encode_command(&mut self.out, argv);
        let label = Label::of(argv);
        let name = label.name();
        let role = if name.eq_ignore_ascii_case(b"MULTI") {
            self.transaction = Some(0);
            Role::Plain
        } else if name.eq_ignore_ascii_case(b"EXEC") || name.eq_ignore_ascii_case(b"DISCARD") {
            Role::Ends {
                queued: self.transaction.take().unwrap_or(0),
                exec: name.eq_ignore_ascii_case(b"EXEC"),
            }
        } else if let Some(count) = self.transaction.as_mut() {
            *count += 1;
            Role::Queued
        } else {
            Role::Plain
        };
        self.pending.push_back(Pending {
            label,
            position,
            role,
        });
        self.pushed += 1;
        // Invariant: the window is bounded (the refill above keeps it so).
        debug_assert!(
            self.pending.len() <= self.options.in_flight_max.max(1),
            "{} commands in flight, at most {}",
            self.pending.len(),
            self.options.in_flight_max
        );
        if self.out.len() >= self.options.batch_bytes_max {
            // Held bytes wait for their gate rather than grow without bound.
            self.open_gate().await?;
            self.flush().await?;
        }
        Ok(())
    }

    /// Holds back every command pushed from now on until every command sent so far
    /// has been answered without error, while the caller goes on building (the next
    /// target transaction is encoded while the last one executes; it is sent only once
    /// the last one's EXEC has succeeded, so a refused transaction is never followed by
    /// one that went through). Waits first for an earlier gate: at most one
    /// transaction in flight and one held. Replies are read by the writer's other
    /// calls, and by [`Conn::poll_replies`] when [`Conn::replies_arrived`]
    /// says they are there; whatever reads the last awaited reply sends what was held.
    pub async fn hold_until_answered(&mut self) -> Result<(), ApplyError> {
        self.open_gate().await?;
        self.flush().await?;
        self.gate.hold(self.pending.len());
        Ok(())
    }

    /// Whether commands are held back waiting for replies.
    pub fn is_holding(&self) -> bool {
        self.gate.is_holding()
    }

    /// Completes when bytes from the target have arrived (or it closed): then
    /// [`Conn::poll_replies`] has replies to read. Cancel-safe (for
    /// `select!`).
    pub async fn replies_arrived(&mut self) -> Result<(), ApplyError> {
        if self.buffered_reply_len().is_some() {
            return Ok(());
        }
        self.reader.fill(0).await.map_err(|e| ApplyError::Read {
            endpoint: self.endpoint.clone(),
            source: ReadError::Io(e),
        })?;
        Ok(())
    }

    /// Reads replies until what is held may be sent.
    async fn open_gate(&mut self) -> Result<(), ApplyError> {
        while self.gate.is_holding() {
            self.read_one().await?;
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

    pub async fn flush(&mut self) -> Result<(), ApplyError> {
        if self.out.is_empty() || self.gate.is_holding() {
            return Ok(());
        }
        let endpoint = &self.endpoint;
        // A frozen target stops reading: its socket buffer fills and the write
        // would wait forever. (The timer costs a clock read when the write is done
        // at once, as it is unless the target is slow.)
        let timeout = self.options.reply_timeout;
        match tokio::time::timeout(timeout, self.writer.write_all(&self.out)).await {
            Ok(written) => written.map_err(|source| ApplyError::Write {
                endpoint: endpoint.clone(),
                source,
            })?,
            Err(_) => {
                return Err(ApplyError::Timeout {
                    endpoint: endpoint.clone(),
                    timeout,
                })
            }
        }
        self.out.clear();
        Ok(())
    }

    pub fn check_answering(&self) -> Result<(), ApplyError> {
        let Some(since) = self.waiting_since.filter(|_| !self.pending.is_empty()) else {
            return Ok(());
        };
        let since = self
            .reader
            .last_read()
            .map_or(since, |read| read.max(since));
        let timeout = self.options.reply_timeout;
        if since.elapsed() < timeout {
            return Ok(());
        }
        Err(ApplyError::Timeout {
            endpoint: self.endpoint.clone(),
            timeout,
        })
    }

    /// When a read last brought bytes from the target (the latest over a cluster's
    /// primaries); `None` before any.
    pub fn last_reply_at(&self) -> Option<Instant> {
        self.reader.last_read()
    }

    pub async fn poll_replies(&mut self) -> Result<(), ApplyError> {
        while !self.pending.is_empty() {
            if self.buffered_reply_len().is_none() {
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
                    Err(_) => break,
                }
            }
            self.read_one().await?;
        }
        // The replies read may have opened the gate: send what was held.
        self.flush().await
    }

    pub async fn drain(&mut self) -> Result<(), ApplyError> {
        self.flush().await?;
        while !self.pending.is_empty() {
            self.read_one().await?;
            self.flush().await?; // what was held, once the gate opens
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

    /// Sends a command whose answers do not come in order as replies (a
    /// subscription's messages): nothing is recorded as waiting for an answer.
    pub(crate) async fn send_unanswered<A: AsRef<[u8]>>(
        &mut self,
        argv: &[A],
    ) -> Result<(), ApplyError> {
        encode_command(&mut self.out, argv);
        self.flush().await
    }

    /// The next frame the server sends by itself (a subscription's message),
    /// waiting at most `timeout` (then [`ApplyError::Timeout`]).
    pub(crate) async fn next_pushed(&mut self, timeout: Duration) -> Result<Frame, ApplyError> {
        let read = tokio::time::timeout(timeout, self.reader.read_frame()).await;
        self.reply_or_error(read)
    }

    /// Sends `commands` in one pipeline after everything queued before them and
    /// returns their replies in order (a cluster target reads its slots'
    /// checkpoints so).
    pub(crate) async fn query_pipelined<A: AsRef<[u8]>>(
        &mut self,
        commands: &[Vec<A>],
    ) -> Result<Vec<Frame>, ApplyError> {
        self.drain().await?;
        for argv in commands {
            encode_command(&mut self.out, argv);
        }
        self.flush().await?;
        let mut replies = Vec::with_capacity(commands.len());
        for _ in commands {
            replies.push(self.next_frame().await?);
        }
        Ok(replies)
    }

    /// Takes the next reply off the connection and checks it against the oldest
    /// pending command. Replies are looked at in the buffer, not decoded: `+OK`,
    /// `+QUEUED` and an EXEC's array cost no allocation.
    async fn read_one(&mut self) -> Result<(), ApplyError> {
        let len = self.next_reply_len().await?;
        let Some(pending) = self.pending.pop_front() else {
            self.reader.consume(len);
            return Ok(());
        };
        let sequence = self.answered;
        self.answered += 1;
        let reply = &self.reader.buffer()[..len];
        let mut refused = match (reply.first(), pending.role) {
            (Some(b'-'), _) => Some((pending.label, line_text(&reply[1..]))),
            (_, Role::Queued) => {
                self.queued.push_back(pending.label);
                None
            }
            (_, Role::Ends { queued, exec }) => {
                // The EXEC answers with one reply per queued command; any error there
                // is a command the target refused. A DISCARD just forgets them.
                let failed = if exec {
                    first_error_element(reply, &Limits::default()).map_err(|e| {
                        ApplyError::Read {
                            endpoint: self.endpoint.clone(),
                            source: ReadError::Protocol(e),
                        }
                    })?
                } else {
                    None
                };
                let failed = failed.map(|(index, message)| (index, line_text(message)));
                if let Some(redirections) = self.redirections.as_mut() {
                    redirections.in_transaction = false;
                }
                refused_in_exec(&mut self.queued, queued, failed)
            }
            _ => None,
        };
        self.reader.consume(len);
        if let Some((label, message)) = &refused {
            if self.is_redirected(sequence, pending.role, *label, message) {
                refused = None;
            }
        }
        if let Some((label, message)) = refused {
            // The gate stays shut: nothing held behind a refusal is ever sent.
            return Err(self.rejected(&label, &message));
        }
        self.gate.answered();
        self.applied_commands += 1;
        let reached = match self.redirections.as_mut() {
            Some(redirections) => pending.position.and_then(|p| redirections.reached(p)),
            None => pending.position,
        };
        if let Some(position) = reached {
            self.advance(position);
        }
        Ok(())
    }

    /// On a primary of a cluster target, whether the refusal `message` of command
    /// `sequence` is a redirection, then recorded for the router instead of
    /// failing the connection.
    fn is_redirected(&mut self, sequence: u64, role: Role, label: Label, message: &str) -> bool {
        let Some(redirections) = self.redirections.as_mut() else {
            return false;
        };
        let redirected = is_redirection(message)
            || (redirections.in_transaction && message.starts_with("EXECABORT"));
        if !redirected {
            return false;
        }
        redirections.record(sequence, message.to_owned());
        match role {
            // Its EXEC pops it with the others of the transaction.
            Role::Queued => {
                self.queued.push_back(label);
                redirections.in_transaction = true;
            }
            Role::Ends { queued, .. } => {
                for _ in 0..queued {
                    self.queued.pop_front();
                }
                redirections.in_transaction = false;
            }
            Role::Plain => {}
        }
        true
    }

    /// Makes this writer a primary of a cluster target: a redirection (see
    /// [`is_redirection`]) no longer fails it but is kept for
    /// [`Conn::take_redirections`], and positions stop advancing until
    /// [`Conn::redirections_resolved`].
    pub(crate) fn record_redirections(&mut self) {
        self.redirections = Some(Redirections::default());
    }

    /// The redirected commands answered since the last call: their sequence numbers
    /// (see [`Conn::commands_pushed`]) and replies.
    pub(crate) fn take_redirections(&mut self) -> Vec<(u64, String)> {
        self.redirections
            .as_mut()
            .map(|r| std::mem::take(&mut r.replies))
            .unwrap_or_default()
    }

    /// The router has applied every redirected command elsewhere: positions held
    /// back count again.
    pub(crate) fn redirections_resolved(&mut self) {
        let held = self.redirections.as_mut().and_then(Redirections::resolved);
        if let Some(position) = held {
            self.advance(position);
        }
    }

    /// Whether positions are held back behind a redirected command.
    pub(crate) fn holds_positions(&self) -> bool {
        self.redirections.as_ref().is_some_and(|r| r.holding)
    }

    /// How many commands were pushed: the next one's sequence number.
    pub(crate) fn commands_pushed(&self) -> u64 {
        self.pushed
    }

    /// How many replies were read: every command with a lower sequence number is
    /// answered.
    pub(crate) fn commands_answered(&self) -> u64 {
        self.answered
    }

    /// Sends what is buffered and reads one reply, if any is awaited.
    pub(crate) async fn answer_one(&mut self) -> Result<(), ApplyError> {
        self.flush().await?;
        if !self.pending.is_empty() {
            self.read_one().await?;
        }
        Ok(())
    }

    fn rejected(&self, label: &Label, reply: &str) -> ApplyError {
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
            command: String::from_utf8_lossy(label.name()).into_owned(),
            key: String::from_utf8_lossy(label.key()).into_owned(),
            reply: reply.to_owned(),
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
        let read = tokio::time::timeout(timeout, self.reader.read_frame()).await;
        self.reply_or_error(read)
    }

    /// Waits for the next whole reply and returns its length (it stays in the buffer).
    async fn next_reply_len(&mut self) -> Result<usize, ApplyError> {
        // Under load the reply is usually there already: no timer, no clock read
        // (a timeout per reply was ~6% of the incremental phase's CPU).
        if let Some(len) = self.buffered_reply_len() {
            return Ok(len);
        }
        let timeout = self.options.reply_timeout;
        let read = tokio::time::timeout(timeout, self.reader.peek_frame_len()).await;
        self.reply_or_error(read)
    }

    /// The length of the whole reply at the front of the buffer, if one is there. A
    /// malformed one gives `None`: the waiting read reports it with its offset.
    fn buffered_reply_len(&self) -> Option<usize> {
        match check_frame(self.reader.buffer(), &Limits::default()) {
            Ok(Status::Complete((), len)) => Some(len),
            Ok(Status::Incomplete) | Err(_) => None,
        }
    }

    fn reply_or_error<T>(
        &self,
        read: Result<Result<Option<T>, ReadError>, tokio::time::error::Elapsed>,
    ) -> Result<T, ApplyError> {
        let endpoint = || self.endpoint.clone();
        match read {
            Ok(Ok(Some(reply))) => Ok(reply),
            Err(_) => Err(ApplyError::Timeout {
                endpoint: endpoint(),
                timeout: self.options.reply_timeout,
            }),
            Ok(Err(source)) => Err(ApplyError::Read {
                endpoint: endpoint(),
                source,
            }),
            Ok(Ok(None)) => Err(ApplyError::Closed {
                endpoint: endpoint(),
            }),
        }
    }
}

/// Pops the labels of the `queued` commands an EXEC (or DISCARD) ends; the one at
/// the `failed` index comes back with its error message.
fn refused_in_exec(
    labels: &mut VecDeque<Label>,
    queued: u32,
    failed: Option<(usize, String)>,
) -> Option<(Label, String)> {
    let mut refused = None;
    for index in 0..queued as usize {
        let label = labels.pop_front();
        if let (Some(label), Some((failed_index, message))) = (label, &failed) {
            if index == *failed_index {
                refused = Some((label, message.clone()));
            }
        }
    }
    refused
}

/// The text of a reply line (`ERR ...` without its `\r\n`), for messages.
fn line_text(line: &[u8]) -> String {
    let end = line.iter().position(|&b| b == b'\r').unwrap_or(line.len());
    String::from_utf8_lossy(&line[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rejected XGROUP named `CREATECONSUMER` as its key (seen in CI).
    #[test]
    fn a_label_names_the_subcommand_and_the_key_after_it() {
        let label = Label::of(&["XGROUP", "CREATECONSUMER", "c2:stream:11", "g", "c"]);
        assert_eq!(label.name(), b"XGROUP CREATECONSUMER");
        assert_eq!(label.key(), b"c2:stream:11");
        let label = Label::of(&["SET", "k", "v"]);
        assert_eq!((label.name(), label.key()), (&b"SET"[..], &b"k"[..]));
        let long = "X".repeat(40);
        let label = Label::of(&["XINFO", long.as_str(), "k"]);
        assert_eq!(label.name().len(), Label::NAME_MAX);
        assert_eq!(label.key(), b"k");
        let label = Label::of(&["AUTH", "user", "secret"]);
        assert_eq!(label.key(), b"");
    }

    #[test]
    fn positions_wait_behind_a_redirection_until_it_is_resolved() {
        let at = |offset| Position { offset, db: 0 };
        let mut redirections = Redirections::default();
        assert_eq!(redirections.reached(at(10)), Some(at(10)));
        redirections.record(4, "ASK 1 h:1".to_owned());
        assert_eq!(redirections.reached(at(20)), None);
        assert_eq!(redirections.reached(at(30)), None);
        assert_eq!(redirections.replies, vec![(4, "ASK 1 h:1".to_owned())]);
        assert_eq!(redirections.resolved(), Some(at(30)));
        assert_eq!(redirections.resolved(), None);
        assert_eq!(redirections.reached(at(40)), Some(at(40)));
    }

    #[test]
    fn client_info_gives_the_id_and_the_address_the_target_sees() {
        let line =
            "id=27 addr=127.0.0.1:51234 laddr=127.0.0.1:6379 fd=9 name= age=0 idle=0 flags=N db=0";
        assert_eq!(
            parse_client_info("target t", line),
            Some(ClientIdentity {
                node: "target t".to_owned(),
                id: "27".to_owned(),
                addr: "127.0.0.1:51234".to_owned(),
            })
        );
        // laddr is not addr; a garbled id or a missing field gives no identity.
        assert_eq!(parse_client_info("t", "id=27 laddr=1.2.3.4:5"), None);
        assert_eq!(parse_client_info("t", "id=2x addr=1.2.3.4:5"), None);
        assert_eq!(parse_client_info("t", "ERR unknown subcommand"), None);
    }
}
