//! The scan source's changes: keyspace notifications mark keys dirty
//! ([`super::dirty`]), and a change reader reads them again and writes what it read
//! as the command stream the engine applies.
//!
//! # The subscription
//! A connection of its own, `PSUBSCRIBE __keyspace@<db>__:*` for each database in
//! scope (`__keyspace@*__:*` for all), opened before the snapshot's first `SCAN`,
//! read by a task of its own from then until the source is dropped (a slow reader
//! of a subscription is disconnected by the server's output buffer limit for
//! pub/sub clients, so it is read even while the snapshot is). Every event of a key
//! marks it: which event does not matter, the read says what the key holds. A
//! `PING` every few seconds checks the connection is alive: no frame for the
//! link's read timeout means it is not, as a cut does.
//!
//! # What can be missed, and how it is noticed
//! A notification is lost when the subscription drops (cut, `CLIENT KILL TYPE
//! pubsub`, a restart of the source), when the dirty set is full, and for the
//! commands that notify no key: `FLUSHDB`, `FLUSHALL`, `SWAPDB` and the `FUNCTION`
//! commands that change libraries. The first two are seen here; the last by their
//! call counts in `INFO commandstats`, read every
//! second and compared with the counts before the snapshot. Any of them makes the
//! command stream end with an error saying which: the engine's retry loop starts a
//! new session, and a scan source's new session always scans the source again
//! (into a target it clears first, as after any full resync). A restart of lockstep
//! does the same: the dirty set is not persisted.
//!
//! # The command stream
//! What the change reader reads, as RESP commands a master would send: `SELECT db`
//! when the database changes, `RESTORE key <unix ms> <payload> REPLACE ABSTTL` (TTL
//! `0` without `ABSTTL` for a key that has none) or `DEL key` for a key gone, `SET
//! key value` for lockstep's heartbeat key (the stream recognizes it by its
//! value), and `PING` every second while nothing changes (the engine's silence
//! check). Offsets are bytes of this stream. The order of the stream is the order
//! of the reads, which ran on the source in that order.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::{mpsc, Notify};

use crate::clock::unix_ms;
use crate::conn::Conn;
use crate::resp::{encode_command, Frame};

use std::collections::HashSet;

use super::dirty::{DbKey, DirtyKeys};
use super::read::{is_heartbeat, read_keys, KeyRead, KeyState};
use super::ScanError;

/// Keys read again per pipeline.
const REREAD_BATCH: usize = 256;
/// How often the subscription is pinged, and the stream pinged while idle.
const PING_EVERY: Duration = Duration::from_secs(3);

/// What the scan source has done, for status and metrics: shared by every session
/// of the task (the counters add up across them).
#[derive(Debug, Default)]
pub struct ScanStats {
    /// Keyspace notifications received.
    pub notifications: AtomicU64,
    /// Keys read again after a change (deleted ones included).
    pub keys_reread: AtomicU64,
    /// Keys found deleted, expired or evicted when read again.
    pub keys_deleted: AtomicU64,
    /// Keys waiting to be read again (a gauge).
    pub keys_pending: AtomicU64,
    /// Times the source was scanned (1 after the first snapshot).
    pub scans: AtomicU64,
    /// Unix ms of the last moment no change was waiting: every change notified
    /// before it had been read and handed to the stream. 0: not yet.
    pub caught_up_unix_ms: AtomicU64,
    /// Keys the last snapshot wrote.
    pub snapshot_keys: AtomicU64,
    /// The keys read again since the convergence proof last took them.
    pub changed: Mutex<ChangedKeys>,
}

/// Keys read again since they were last taken (for the convergence proof: the
/// keys that changed since the snapshot are the ones to verify again), at most
/// [`CHANGED_KEPT_MAX`]; the rest are counted.
#[derive(Debug, Default)]
pub struct ChangedKeys {
    keys: HashSet<DbKey>,
    /// Keys read again past the bound, not kept.
    pub not_kept: u64,
}

/// Changed keys kept for the convergence proof.
pub const CHANGED_KEPT_MAX: usize = 100_000;

impl ChangedKeys {
    fn record(&mut self, db: u32, key: &Bytes) {
        if self.keys.len() < CHANGED_KEPT_MAX {
            self.keys.insert((db, key.clone()));
        } else if !self.keys.contains(&(db, key.clone())) {
            self.not_kept += 1;
        }
    }

    /// Keeps `key` again (a proof found it differing: the next one verifies it).
    pub fn record_again(&mut self, db: u32, key: Bytes) {
        self.record(db, &key);
    }

    /// Takes the keys kept (by database) and how many were not kept, and starts
    /// again.
    pub fn take(&mut self) -> (std::collections::BTreeMap<u32, Vec<Vec<u8>>>, u64) {
        let mut by_db: std::collections::BTreeMap<u32, Vec<Vec<u8>>> = Default::default();
        for (db, key) in self.keys.drain() {
            by_db.entry(db).or_default().push(key.to_vec());
        }
        (by_db, std::mem::take(&mut self.not_kept))
    }
}

impl ScanStats {
    /// The changed keys, for the convergence proof.
    pub fn changed(&self) -> MutexGuard<'_, ChangedKeys> {
        self.changed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The state the subscription and the change reader share.
#[derive(Debug)]
pub struct Shared {
    state: Mutex<ChangeState>,
    /// Wakes the change reader when a key is marked or the subscription is lost.
    wake: Notify,
    stats: Arc<ScanStats>,
}

#[derive(Debug)]
struct ChangeState {
    dirty: DirtyKeys,
    /// Why changes may have been missed, once they may have.
    lost: Option<String>,
    /// The streams of the source as last read: their consumer groups change
    /// without a notification (XREADGROUP, XACK, XCLAIM, XAUTOCLAIM), so all of them
    /// are read again when the source counts one of those commands.
    streams: HashSet<DbKey>,
    /// More than [`STREAMS_WATCHED_MAX`] streams: the rest are not watched.
    streams_overflowed: bool,
}

/// Streams watched for changes of their consumer groups.
pub const STREAMS_WATCHED_MAX: usize = 100_000;

impl Shared {
    pub fn new(limit: usize, stats: Arc<ScanStats>) -> Arc<Shared> {
        Arc::new(Shared {
            state: Mutex::new(ChangeState {
                dirty: DirtyKeys::new(limit),
                lost: None,
                streams: HashSet::new(),
                streams_overflowed: false,
            }),
            wake: Notify::new(),
            stats,
        })
    }

    fn lock(&self) -> MutexGuard<'_, ChangeState> {
        // A panic elsewhere while holding the lock leaves a set that is still a set.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn mark(&self, db: u32, key: Bytes) {
        let mut state = self.lock();
        state.dirty.mark(db, key);
        if state.dirty.overflowed() && state.lost.is_none() {
            state.lost = Some(format!(
                "more than {} changed keys waited to be read (a busy source during a long snapshot)",
                state.dirty.len()
            ));
        }
        self.stats
            .keys_pending
            .store(state.dirty.len() as u64, Ordering::Relaxed);
        drop(state);
        self.stats.notifications.fetch_add(1, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// Records that changes may have been missed (the first reason is kept).
    pub fn lose(&self, why: String) {
        let mut state = self.lock();
        if state.lost.is_none() {
            state.lost = Some(why);
        }
        drop(state);
        self.wake.notify_one();
    }

    /// Records what a read found: a stream is watched, anything else is not.
    pub fn saw(&self, read: &KeyRead) {
        let is_stream =
            matches!(&read.state, KeyState::Present { payload, .. } if is_stream_payload(payload));
        let entry = (read.db, read.key.clone());
        let mut state = self.lock();
        if !is_stream {
            state.streams.remove(&entry);
            return;
        }
        if state.streams.len() < STREAMS_WATCHED_MAX {
            state.streams.insert(entry);
        } else if !state.streams_overflowed {
            state.streams_overflowed = true;
            tracing::warn!("more than {STREAMS_WATCHED_MAX} streams: changes of consumer groups (XREADGROUP, XACK, XCLAIM) are followed for the first {STREAMS_WATCHED_MAX} only; verify compares the rest");
        }
    }

    /// Marks every watched stream as changed (a consumer group command ran).
    fn mark_streams(&self) {
        let mut state = self.lock();
        let streams: Vec<DbKey> = state.streams.iter().cloned().collect();
        for (db, key) in streams {
            state.dirty.mark(db, key);
        }
        self.stats
            .keys_pending
            .store(state.dirty.len() as u64, Ordering::Relaxed);
        drop(state);
        self.wake.notify_one();
    }

    fn lost(&self) -> Option<String> {
        self.lock().lost.clone()
    }

    fn take(&self, most: usize) -> Vec<(u32, Bytes)> {
        let mut state = self.lock();
        if state.dirty.is_empty() {
            return Vec::new();
        }
        let taken = state.dirty.take(most);
        self.stats
            .keys_pending
            .store(state.dirty.len() as u64, Ordering::Relaxed);
        taken
    }
}

/// The patterns that subscribe to every key event of `dbs` (all databases: `None`).
pub fn patterns(dbs: Option<&[u32]>) -> Vec<Vec<u8>> {
    match dbs {
        None => vec![b"__keyspace@*__:*".to_vec()],
        Some(dbs) => dbs
            .iter()
            .map(|db| format!("__keyspace@{db}__:*").into_bytes())
            .collect(),
    }
}

/// Subscribes `conn` to `patterns` and waits for the source to confirm each.
pub async fn subscribe(
    conn: &mut Conn,
    endpoint: &str,
    patterns: &[Vec<u8>],
    timeout: Duration,
) -> Result<(), ScanError> {
    let mut argv: Vec<&[u8]> = vec![b"PSUBSCRIBE"];
    argv.extend(patterns.iter().map(Vec::as_slice));
    conn.send_unanswered(&argv).await?;
    for _ in patterns {
        match conn.next_pushed(timeout).await? {
            Frame::Array(items)
                if items.first().and_then(Frame::as_bytes) == Some(b"psubscribe") => {}
            Frame::Error(e) => {
                return Err(ScanError::Refused {
                    endpoint: endpoint.to_owned(),
                    command: "PSUBSCRIBE __keyspace@...".into(),
                    reply: String::from_utf8_lossy(&e).into_owned(),
                })
            }
            other => {
                return Err(ScanError::Protocol {
                    endpoint: endpoint.to_owned(),
                    what: format!("{other:?} as the answer to PSUBSCRIBE"),
                })
            }
        }
    }
    Ok(())
}

/// Reads the subscription until it fails or the task is aborted, marking the key
/// of every notification.
pub async fn follow_subscription(mut conn: Conn, shared: Arc<Shared>, silence_max: Duration) {
    let mut last_frame = Instant::now();
    let mut last_ping = Instant::now();
    loop {
        match conn.next_pushed(Duration::from_secs(1)).await {
            Ok(frame) => {
                last_frame = Instant::now();
                if let Some((db, key)) = notified_key(&frame) {
                    shared.mark(db, key);
                }
            }
            Err(crate::conn::ApplyError::Timeout { .. }) => {
                if last_frame.elapsed() > silence_max {
                    shared.lose(format!(
                        "the keyspace notification subscription sent nothing for {silence_max:?}, not even an answer to PING"
                    ));
                    return;
                }
                if last_ping.elapsed() >= PING_EVERY {
                    last_ping = Instant::now();
                    if let Err(e) = conn.send_unanswered(&[b"PING".as_slice()]).await {
                        shared.lose(format!(
                            "the keyspace notification subscription failed: {e}"
                        ));
                        return;
                    }
                }
            }
            Err(e) => {
                shared.lose(format!("the keyspace notification subscription ended: {e}"));
                return;
            }
        }
    }
}

/// The database and key a `pmessage` notifies, if it is one:
/// `[pmessage, pattern, __keyspace@<db>__:<key>, event]`.
pub fn notified_key(frame: &Frame) -> Option<(u32, Bytes)> {
    let Frame::Array(items) = frame else {
        return None;
    };
    if items.len() != 4 || items[0].as_bytes() != Some(b"pmessage") {
        return None;
    }
    let Frame::Bulk(channel) = &items[2] else {
        return None;
    };
    let rest = channel.strip_prefix(b"__keyspace@")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let db = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    let key_at = b"__keyspace@".len() + digits;
    channel[key_at..]
        .starts_with(b"__:")
        .then(|| channel.slice(key_at + 3..))
        .map(|key| (db, key))
}

/// Commands that change keys or libraries without notifying a key: any call
/// means the source must be scanned again.
const SILENT_COMMANDS: &[&str] = &[
    "flushdb",
    "flushall",
    "swapdb",
    "function|load",
    "function|delete",
    "function|flush",
    "function|restore",
];

/// Commands that change a stream's consumer groups without notifying it: any call
/// means the watched streams are read again.
const GROUP_COMMANDS: &[&str] = &[
    "xreadgroup",
    "xack",
    "xclaim",
    "xautoclaim",
    "xackdel",
    "xnack",
];

/// Calls of the commands that change keys without notifying them, from `INFO
/// commandstats` (`None` when the source does not tell).
pub fn silent_commands(info: &str) -> Option<u64> {
    calls_of(info, SILENT_COMMANDS)
}

/// Calls of the consumer group commands, from `INFO commandstats`.
pub fn group_commands(info: &str) -> Option<u64> {
    calls_of(info, GROUP_COMMANDS)
}

/// The sum of the `calls=` of `commands` in `INFO commandstats` (a command never
/// run is not listed: zero calls); `None` when a listed one has no count.
fn calls_of(info: &str, commands: &[&str]) -> Option<u64> {
    let mut total = 0;
    for line in info.lines() {
        let Some((name, stats)) = line.split_once(':') else {
            continue;
        };
        let Some(command) = name.trim().strip_prefix("cmdstat_") else {
            continue;
        };
        if !commands.iter().any(|c| command.eq_ignore_ascii_case(c)) {
            continue;
        }
        let calls = stats
            .split(',')
            .find_map(|kv| kv.strip_prefix("calls="))?
            .trim()
            .parse::<u64>()
            .ok()?;
        total += calls;
    }
    Some(total)
}

/// Is a DUMP payload a stream (its type byte: RDB types 15, 19, 21)?
pub fn is_stream_payload(payload: &[u8]) -> bool {
    matches!(payload.first(), Some(15 | 19 | 21))
}

/// The change reader: reads marked keys again until the stream is dropped or
/// changes are lost, and sends what it read, as commands, to the stream.
pub struct ChangeReader {
    pub conn: Conn,
    pub endpoint: String,
    pub selected: u32,
    pub shared: Arc<Shared>,
    /// Calls of FLUSHDB/FLUSHALL/SWAPDB before the snapshot (None: not known).
    pub silent_before: Option<u64>,
    /// Calls of the consumer group commands when last read.
    pub groups_before: Option<u64>,
    pub stream_db: Option<u32>,
    /// The source is a cluster node (a transaction holds one slot's keys).
    pub cluster: bool,
}

impl ChangeReader {
    pub async fn run(mut self, out: mpsc::Sender<io::Result<Bytes>>) {
        if let Err(why) = self.read_until_lost(&out).await {
            tracing::warn!(source = %self.endpoint, "changes may have been missed: {why}; the source will be scanned again");
            let _ = out
                .send(Err(io::Error::other(format!(
                    "changes may have been missed ({why}): scanning the source again"
                ))))
                .await;
        }
    }

    /// Ok when the stream was dropped; Err(why) when changes may have been missed.
    async fn read_until_lost(
        &mut self,
        out: &mpsc::Sender<io::Result<Bytes>>,
    ) -> Result<(), String> {
        let mut last_sent = Instant::now();
        let mut last_check = Instant::now();
        loop {
            if let Some(why) = self.shared.lost() {
                return Err(why);
            }
            if last_check.elapsed() >= Duration::from_secs(1) {
                last_check = Instant::now();
                self.check_silent_commands().await?;
            }
            let keys = self.shared.take(REREAD_BATCH);
            if keys.is_empty() {
                self.shared
                    .stats
                    .caught_up_unix_ms
                    .store(unix_ms().max(0) as u64, Ordering::Relaxed);
                if last_sent.elapsed() >= Duration::from_secs(1) {
                    let mut ping = BytesMut::new();
                    encode_command(&mut ping, &[b"PING".as_slice()]);
                    if out.send(Ok(ping.freeze())).await.is_err() {
                        return Ok(());
                    }
                    last_sent = Instant::now();
                }
                let _ =
                    tokio::time::timeout(Duration::from_millis(200), self.shared.wake.notified())
                        .await;
                continue;
            }
            let reads = read_keys(
                &mut self.conn,
                &self.endpoint,
                &mut self.selected,
                &keys,
                self.cluster,
            )
            .await
            .map_err(|e| format!("reading changed keys failed: {e}"))?;
            let bytes = self.commands_of(&reads);
            if out.send(Ok(bytes)).await.is_err() {
                return Ok(());
            }
            last_sent = Instant::now();
        }
    }

    /// Compares the calls of FLUSHDB/FLUSHALL/SWAPDB with those before the snapshot.
    async fn check_silent_commands(&mut self) -> Result<(), String> {
        let Some(before) = self.silent_before else {
            return Ok(());
        };
        let info = self
            .conn
            .query(&[b"INFO".as_slice(), b"commandstats"])
            .await
            .map_err(|e| format!("reading INFO commandstats failed: {e}"))?;
        let text = info
            .as_bytes()
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        let groups = group_commands(&text);
        if groups != self.groups_before {
            self.groups_before = groups;
            self.shared.mark_streams();
        }
        match silent_commands(&text) {
            Some(now) if now == before => Ok(()),
            Some(now) if now > before => Err(format!(
                "the source ran FLUSHDB, FLUSHALL, SWAPDB or a FUNCTION LOAD/DELETE/FLUSH/RESTORE ({} call(s) since the snapshot began), which keyspace notifications do not report",
                now - before
            )),
            _ => Err("the source's command statistics were reset (CONFIG RESETSTAT): a FLUSHDB, FLUSHALL or SWAPDB since the snapshot began cannot be ruled out".into()),
        }
    }

    /// The stream commands that bring the target to `reads`.
    fn commands_of(&mut self, reads: &[KeyRead]) -> Bytes {
        let mut out = BytesMut::new();
        let stats = &self.shared.stats;
        let mut changed = stats.changed();
        for read in reads {
            self.shared.saw(read);
            if !is_heartbeat(&read.key) {
                changed.record(read.db, &read.key);
            }
            if self.stream_db != Some(read.db) {
                encode_command(
                    &mut out,
                    &[b"SELECT".as_slice(), read.db.to_string().as_bytes()],
                );
                self.stream_db = Some(read.db);
            }
            stats.keys_reread.fetch_add(1, Ordering::Relaxed);
            match &read.state {
                KeyState::Gone => {
                    stats.keys_deleted.fetch_add(1, Ordering::Relaxed);
                    encode_command(&mut out, &[b"DEL".as_slice(), &read.key]);
                }
                KeyState::Present { payload, .. } if is_heartbeat(&read.key) => {
                    encode_command(&mut out, &[b"SET".as_slice(), &read.key, payload]);
                }
                KeyState::Present {
                    payload,
                    expire_at_ms: Some(at),
                } => {
                    let at = at.to_string();
                    let argv: [&[u8]; 6] = [
                        b"RESTORE",
                        &read.key,
                        at.as_bytes(),
                        payload,
                        b"REPLACE",
                        b"ABSTTL",
                    ];
                    encode_command(&mut out, &argv);
                }
                KeyState::Present {
                    payload,
                    expire_at_ms: None,
                } => {
                    let argv: [&[u8]; 5] = [b"RESTORE", &read.key, b"0", payload, b"REPLACE"];
                    encode_command(&mut out, &argv);
                }
            }
        }
        out.freeze()
    }
}

/// Aborts a task when dropped (the subscription and the change reader end with
/// the source or its stream).
#[derive(Debug)]
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The command stream's bytes as the change reader sends them; an error it sends
/// is this reader's error (the engine then ends the session).
pub struct ChangeStream {
    from: mpsc::Receiver<io::Result<Bytes>>,
    piece: Bytes,
    _tasks: Vec<AbortOnDrop>,
}

impl ChangeStream {
    pub fn new(from: mpsc::Receiver<io::Result<Bytes>>, tasks: Vec<AbortOnDrop>) -> ChangeStream {
        ChangeStream {
            from,
            piece: Bytes::new(),
            _tasks: tasks,
        }
    }
}

impl AsyncRead for ChangeStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while self.piece.is_empty() {
            match self.from.poll_recv(cx) {
                Poll::Ready(Some(Ok(piece))) => self.piece = piece,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                // The change reader ended without saying why: the stream ends.
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
        let n = self.piece.len().min(buf.remaining());
        let piece = self.piece.split_to(n);
        buf.put_slice(&piece);
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pmessage(channel: &[u8]) -> Frame {
        Frame::Array(vec![
            Frame::bulk("pmessage"),
            Frame::bulk("__keyspace@*__:*"),
            Frame::bulk(channel),
            Frame::bulk("set"),
        ])
    }

    #[test]
    fn a_notification_names_its_database_and_binary_key() {
        assert_eq!(
            notified_key(&pmessage(b"__keyspace@17__:a:b")),
            Some((17, Bytes::from("a:b")))
        );
        assert_eq!(
            notified_key(&pmessage(b"__keyspace@0__:\x00\xff__:x")),
            Some((0, Bytes::from_static(b"\x00\xff__:x")))
        );
        assert_eq!(notified_key(&pmessage(b"__keyspace@x__:k")), None);
        assert_eq!(notified_key(&pmessage(b"__keyevent@0__:set")), None);
        assert_eq!(notified_key(&Frame::bulk("pong")), None);
    }

    #[test]
    fn silent_commands_are_counted_from_commandstats() {
        let info = "# Commandstats\r\ncmdstat_set:calls=10,usec=1\r\ncmdstat_flushdb:calls=2,usec=5,rejected_calls=0\r\ncmdstat_swapdb:calls=1,usec=1\r\n";
        assert_eq!(silent_commands(info), Some(3));
        assert_eq!(silent_commands("# Commandstats\r\n"), Some(0));
        assert_eq!(silent_commands("cmdstat_flushall:usec=1"), None);
        let groups = "cmdstat_xack:calls=4,usec=1\r\ncmdstat_xreadgroup:calls=6,usec=2\r\ncmdstat_xadd:calls=9\r\n";
        assert_eq!(group_commands(groups), Some(10));
        assert_eq!(silent_commands(groups), Some(0));
        assert_eq!(
            silent_commands("cmdstat_function|load:calls=2,usec=1"),
            Some(2)
        );
    }

    #[test]
    fn patterns_cover_the_databases_in_scope() {
        assert_eq!(patterns(None), [b"__keyspace@*__:*".to_vec()]);
        assert_eq!(
            patterns(Some(&[0, 20])),
            [b"__keyspace@0__:*".to_vec(), b"__keyspace@20__:*".to_vec()]
        );
    }
}
