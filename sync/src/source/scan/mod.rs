//! A source read key by key, for servers that refuse to replicate (issue 18:
//! managed services that rename or block `PSYNC` and `SYNC`): `--source-mode scan`,
//! also chosen by itself when the source refuses both.
//!
//! # The contract, as the scan source implements it
//! - resume: always `FullResync`, with a replication id of this connection's own
//!   and offset 0: a scan continues nothing, so every session scans again, into a
//!   target the engine clears first (as after any full resync);
//! - snapshot ([`snapshot`]): `SCAN` of each database in scope, each key's `DUMP`
//!   and `PTTL` in one transaction ([`read`]), written as an RDB stream for the
//!   engine's parser; no keepalive is needed (the connection is a client's);
//! - command stream ([`changes`]): keyspace notifications, subscribed to before the
//!   first `SCAN`, mark keys ([`dirty`]); each marked key is read again the same way
//!   and written as `RESTORE ... REPLACE` or `DEL`; offsets are bytes of that
//!   stream;
//! - acknowledgements: none (nothing to tell the source).
//!
//! # Why the target converges
//! Every key the snapshot misses or reads before a change is notified after the
//! subscription began, and read again after its last change
//! ([`dirty`]'s argument). What notifications cannot tell (a dropped subscription,
//! a full dirty set, FLUSHDB, FLUSHALL, SWAPDB) ends the session with the reason,
//! and the next one scans again ([`changes`]). Keyspace notifications must be on:
//! [`ScanSource::connect`] checks the setting and proves it with the heartbeat
//! key's own notification before it scans, and fails with the fix otherwise.
//!
//! A Redis Cluster source is one scan source per shard (the shard tasks of
//! [`super::cluster`]), each on its primary; there a transaction holds one slot's
//! keys (`read::runs_of`).
//!
//! Not built: big keys read in pieces (a key is one `DUMP`, bounded by the reply
//! limits), a persisted dirty set (a restart scans again).

mod changes;
mod dirty;
mod read;
mod snapshot;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::{Acknowledge, PsyncReply, Source};
use crate::conn::{ApplyError, ApplyOptions, Conn};
use crate::endpoint::Endpoint;
use crate::resp::{CommandStream, Frame, FrameReader, Limits};

use changes::{AbortOnDrop, ChangeReader, ChangeStream, Shared};
pub use changes::{ChangedKeys, ScanStats, CHANGED_KEPT_MAX};
pub use snapshot::ScanSnapshot;

/// How long the heartbeat key's notification may take to arrive when
/// [`ScanSource::connect`] proves notifications are on.
const PROBE_WAIT: Duration = Duration::from_secs(5);

/// Why the scan source failed. Each variant names the source.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error(transparent)]
    Conn(#[from] ApplyError),
    #[error("the source {endpoint} refused {command}: {reply} (the account needs SCAN, DUMP, PTTL, MULTI, EXEC, SELECT, INFO and PSUBSCRIBE, e.g. ACL SETUSER <user> +scan +dump +pttl +multi +exec +select +info +psubscribe +ping &__keyspace@*)")]
    Refused {
        endpoint: String,
        command: String,
        reply: String,
    },
    #[error("the source {endpoint} does not publish keyspace notifications ({seen}): a scan would miss every change after it (fix: CONFIG SET notify-keyspace-events {fix}; on a managed service set the parameter notify-keyspace-events to {fix}: ElastiCache and MemoryDB in the parameter group, Azure Cache for Redis in Advanced settings, Memorystore in the instance's configuration)")]
    NotificationsOff {
        endpoint: String,
        seen: String,
        fix: String,
    },
    #[error("the source {endpoint} sent {what}")]
    Protocol { endpoint: String, what: String },
}

impl ScanError {
    /// Whether a new session may succeed (a connection fault) rather than not.
    pub fn is_transient(&self) -> bool {
        matches!(self, ScanError::Conn(e) if e.is_transient())
    }
}

/// What a scan source is told.
#[derive(Clone, Debug)]
pub struct ScanOptions {
    pub connection: ApplyOptions,
    /// Databases in scope (`None`: every database).
    pub dbs: Option<Vec<u32>>,
    /// Follow changes after the snapshot (not in mode `full`).
    pub follow: bool,
    /// A key lockstep may write on the source to prove notifications arrive (the
    /// heartbeat key); `None` with `--no-heartbeat`.
    pub probe_key: Option<Vec<u8>>,
    /// Most changed keys waiting to be read.
    pub dirty_keys_max: usize,
    /// Silence of the subscription after which it is presumed dead.
    pub read_timeout: Duration,
    pub limits: Limits,
    pub stats: Arc<ScanStats>,
}

/// A source read by SCAN and followed by keyspace notifications.
pub struct ScanSource {
    endpoint: String,
    conn: Conn,
    selected: u32,
    options: ScanOptions,
    rdb_version: u16,
    replid: String,
    shared: Arc<Shared>,
    subscription: Option<AbortOnDrop>,
    silent_before: Option<u64>,
    groups_before: Option<u64>,
    /// A node of a Redis Cluster (`cluster_enabled:1`).
    cluster: bool,
}

impl ScanSource {
    /// Connects, subscribes to keyspace notifications (when following changes) and
    /// proves they arrive; the snapshot's first `SCAN` comes after.
    pub async fn connect(
        endpoint: &Endpoint,
        options: ScanOptions,
    ) -> Result<ScanSource, ScanError> {
        let name = endpoint.to_string();
        let mut conn = Conn::connect_to("source", endpoint, options.connection.clone()).await?;
        let server = info(&mut conn, &name, "server").await?;
        let version = field(&server, "redis_version").unwrap_or_default();
        let rdb_version = crate::engine::rdb_version_of(&version);
        let cluster = info(&mut conn, &name, "cluster")
            .await
            .map(|text| field(&text, "cluster_enabled").as_deref() == Some("1"))
            .unwrap_or(false);
        let shared = Shared::new(options.dirty_keys_max, options.stats.clone());
        let mut source = ScanSource {
            replid: fresh_replid(&name),
            endpoint: name,
            conn,
            selected: 0,
            rdb_version,
            shared,
            subscription: None,
            silent_before: None,
            groups_before: None,
            cluster,
            options,
        };
        if source.options.follow {
            source.follow(endpoint).await?;
        }
        Ok(source)
    }

    /// Checks the notification setting, subscribes, proves a notification
    /// arrives, and notes the silent commands' counts.
    async fn follow(&mut self, endpoint: &Endpoint) -> Result<(), ScanError> {
        let setting = self.notification_setting().await;
        if let Some(flags) = &setting {
            if let Some(fix) = missing_notifications(flags) {
                return Err(
                    self.notifications_off(format!("notify-keyspace-events is {flags:?}"), fix)
                );
            }
        }
        let mut pubsub =
            Conn::connect_to("source", endpoint, self.options.connection.clone()).await?;
        let patterns = changes::patterns(self.options.dbs.as_deref());
        changes::subscribe(
            &mut pubsub,
            &self.endpoint,
            &patterns,
            self.options.read_timeout,
        )
        .await?;
        self.prove_notifications(&mut pubsub, setting.as_deref())
            .await?;
        let commandstats = info(&mut self.conn, &self.endpoint, "commandstats").await;
        let commandstats = commandstats.ok();
        self.silent_before = commandstats.as_deref().and_then(changes::silent_commands);
        self.groups_before = commandstats.as_deref().and_then(changes::group_commands);
        if self.silent_before.is_none() {
            tracing::warn!(source = %self.endpoint, "INFO commandstats is not readable: a FLUSHDB, FLUSHALL or SWAPDB on the source (which notify no key) would go unnoticed until verify");
        }
        let follower =
            changes::follow_subscription(pubsub, self.shared.clone(), self.options.read_timeout);
        self.subscription = Some(AbortOnDrop(tokio::spawn(follower)));
        Ok(())
    }

    /// `notify-keyspace-events` as `CONFIG GET` answers (None: not readable, as on
    /// most managed services).
    async fn notification_setting(&mut self) -> Option<String> {
        let answer = self
            .conn
            .query(&[b"CONFIG".as_slice(), b"GET", b"notify-keyspace-events"])
            .await
            .ok()?;
        match answer {
            Frame::Array(items) if items.len() == 2 => items[1]
                .as_bytes()
                .map(|b| String::from_utf8_lossy(b).into_owned()),
            Frame::Map(pairs) => pairs
                .first()
                .and_then(|(_, v)| v.as_bytes())
                .map(|b| String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }

    /// Writes the probe key and waits for its notification on `pubsub`.
    async fn prove_notifications(
        &mut self,
        pubsub: &mut Conn,
        setting: Option<&str>,
    ) -> Result<(), ScanError> {
        let Some(key) = self.options.probe_key.clone() else {
            if setting.is_none() {
                tracing::warn!(source = %self.endpoint, "could not check that keyspace notifications are on (CONFIG GET refused, and --no-heartbeat forbids the probe write): if they are off, changes after the snapshot are missed, and only verify will tell");
            }
            return Ok(());
        };
        let now = crate::clock::unix_ms().to_string();
        let written = self
            .conn
            .query(&[b"SETEX".as_slice(), &key, b"60", now.as_bytes()])
            .await?;
        if let Frame::Error(e) = written {
            tracing::warn!(source = %self.endpoint, "could not write the probe key to prove keyspace notifications arrive ({}); going on without the proof", String::from_utf8_lossy(&e));
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + PROBE_WAIT;
        while tokio::time::Instant::now() < deadline {
            match pubsub.next_pushed(Duration::from_millis(250)).await {
                Ok(frame) => {
                    if let Some((db, notified)) = changes::notified_key(&frame) {
                        let ours = notified.as_ref() == key.as_slice();
                        self.shared.mark(db, notified);
                        if ours {
                            return Ok(());
                        }
                    }
                }
                Err(ApplyError::Timeout { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let seen = match setting {
            Some(flags) => format!("notify-keyspace-events is {flags:?}, yet the probe key's notification did not arrive in {PROBE_WAIT:?}"),
            None => format!("the probe key's notification did not arrive in {PROBE_WAIT:?}"),
        };
        let fix = setting
            .and_then(missing_notifications)
            .unwrap_or_else(|| "KA".into());
        Err(self.notifications_off(seen, fix))
    }

    fn notifications_off(&self, seen: String, fix: String) -> ScanError {
        ScanError::NotificationsOff {
            endpoint: self.endpoint.clone(),
            seen,
            fix,
        }
    }

    /// The databases to scan: those in scope, or those `INFO keyspace` lists.
    async fn databases(&mut self) -> Result<Vec<u32>, ScanError> {
        if let Some(dbs) = &self.options.dbs {
            return Ok(dbs.clone());
        }
        let keyspace = info(&mut self.conn, &self.endpoint, "keyspace").await?;
        Ok(keyspace
            .lines()
            .filter_map(|line| line.strip_prefix("db")?.split(':').next()?.parse().ok())
            .collect())
    }
}

/// The value `notify-keyspace-events` needs for a scan to follow every change,
/// when `flags` lack something: `K` and `A`, with the setting's `E`, `m` and `n`
/// kept (what `A` covers is not repeated); `None` when nothing lacks.
pub fn missing_notifications(flags: &str) -> Option<String> {
    let has = |c: char| flags.contains(c);
    let every_class = has('A') || "g$lshzxet".chars().all(has);
    if has('K') && every_class {
        return None;
    }
    let mut fix = String::from("K");
    if has('E') {
        fix.push('E');
    }
    fix.push('A');
    fix.extend(['m', 'n'].into_iter().filter(|&c| has(c)));
    Some(fix)
}

async fn info(conn: &mut Conn, endpoint: &str, section: &str) -> Result<String, ScanError> {
    match conn
        .query(&[b"INFO".as_slice(), section.as_bytes()])
        .await?
    {
        Frame::Error(e) => Err(ScanError::Refused {
            endpoint: endpoint.to_owned(),
            command: format!("INFO {section}"),
            reply: String::from_utf8_lossy(&e).into_owned(),
        }),
        other => Ok(other
            .as_bytes()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()),
    }
}

fn field(info: &str, name: &str) -> Option<String> {
    info.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
}

/// 40 hex digits, new for every connection: a scan's positions mean nothing to
/// another scan.
fn fresh_replid(endpoint: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let seed = format!(
        "scan\0{endpoint}\0{}\0{}\0{n}",
        std::process::id(),
        crate::clock::unix_ms()
    );
    // The file source's derivation of 40 hex digits, from this seed.
    super::rdb_file::replid_of(seed.as_bytes())
}

/// A scan has no one to acknowledge to.
pub struct NoAcks;

impl Acknowledge for NoAcks {
    type Error = ScanError;

    async fn ack(&mut self, _offset: i64) -> Result<(), ScanError> {
        Ok(())
    }
}

impl Source for ScanSource {
    type Error = ScanError;
    type Snapshot = ScanSnapshot;
    type Stream = ChangeStream;
    type Acker = NoAcks;

    async fn resume(&mut self, _from: Option<(&str, i64)>) -> Result<PsyncReply, ScanError> {
        Ok(PsyncReply::FullResync {
            replid: self.replid.clone(),
            offset: 0,
        })
    }

    async fn snapshot(&mut self) -> Result<ScanSnapshot, ScanError> {
        let dbs = self.databases().await?;
        self.options.stats.scans.fetch_add(1, Ordering::Relaxed);
        tracing::info!(source = %self.endpoint, ?dbs, "scanning the source (SCAN, then DUMP and PTTL of each key)");
        Ok(ScanSnapshot::new(dbs, self.rdb_version, self.cluster))
    }

    async fn next_snapshot_chunk(
        &mut self,
        snapshot: &mut ScanSnapshot,
    ) -> Result<Option<Bytes>, ScanError> {
        let piece = snapshot
            .next_piece(
                &mut self.conn,
                &self.endpoint,
                &mut self.selected,
                &self.shared,
            )
            .await?;
        if piece.is_none() {
            self.options
                .stats
                .snapshot_keys
                .store(snapshot.keys, Ordering::Relaxed);
        }
        Ok(piece)
    }

    async fn snapshot_keepalive(
        &mut self,
        _snapshot: &ScanSnapshot,
        _offset: i64,
    ) -> Result<(), ScanError> {
        Ok(())
    }

    /// A scan's snapshot is not sent unasked: skipping it reads nothing.
    async fn skip_snapshot(&mut self) -> Result<(), ScanError> {
        Ok(())
    }

    fn into_stream(self, offset: i64) -> (CommandStream<ChangeStream>, NoAcks) {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let mut tasks: Vec<AbortOnDrop> = self.subscription.into_iter().collect();
        if self.options.follow {
            let reader = ChangeReader {
                conn: self.conn,
                endpoint: self.endpoint,
                selected: self.selected,
                shared: self.shared,
                silent_before: self.silent_before,
                groups_before: self.groups_before,
                stream_db: None,
                cluster: self.cluster,
            };
            tasks.push(AbortOnDrop(tokio::spawn(reader.run(tx))));
        }
        let stream = ChangeStream::new(rx, tasks);
        let reader = FrameReader::new(stream, self.options.limits);
        (CommandStream::new(reader, offset), NoAcks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fix_keeps_the_flags_set_and_adds_what_lacks() {
        assert_eq!(missing_notifications("KA"), None);
        assert_eq!(missing_notifications("AKE"), None);
        assert_eq!(missing_notifications("Kg$lshzxet"), None);
        assert_eq!(missing_notifications("").as_deref(), Some("KA"));
        assert_eq!(missing_notifications("xE").as_deref(), Some("KEA"));
        assert_eq!(missing_notifications("Kx").as_deref(), Some("KA"));
        assert_eq!(missing_notifications("A").as_deref(), Some("KA"));
        assert_eq!(missing_notifications("Egn").as_deref(), Some("KEAn"));
    }

    #[test]
    fn a_fresh_replid_is_40_hex_digits_and_new_each_time() {
        let (a, b) = (fresh_replid("s:1"), fresh_replid("s:1"));
        assert_eq!(a.len(), 40);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
