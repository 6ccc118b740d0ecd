//! The full copy's apply step: turns the RDB parser's per-key events into writes to
//! the target. It is handed events by `engine::full_copy` and writes through the
//! [`crate::target::Target`]; it never reads the source, never records a checkpoint
//! and never holds a big key whole.
//!
//! A key is written as one `RESTORE ... REPLACE`: with the raw object bytes from the
//! RDB when the target reads that RDB version (no decode, no re-encode), or with a
//! payload re-encoded for the target's older version. A key whose elements exceed
//! `big_key_bytes` (4 MiB by default) is written instead as it streams in: `DEL`, then `RPUSH` / `SADD` /
//! `ZADD` / `HSET` per parser batch, then its TTL, so neither lockstep nor the target
//! ever handles it whole. A big string comes from the parser in pieces (1 MiB) and is
//! written as `DEL`, one `SETRANGE` that makes it its full length, and a `SETRANGE`
//! per piece at its offset. Streams and module values cannot be split and are
//! restored whole.
//!
//! Strings without an expiry are the exception: they are collected and written as
//! one `MSET` per [`STRINGS_PER_MSET`] keys (or [`MSET_BYTES_MAX`] bytes). For the
//! target that is one command instead of a hundred RESTOREs, each with its payload
//! check and object load, and MSET replaces whatever the key held, as RESTORE REPLACE
//! does (measured: the target's CPU was the largest cost of a full copy of small
//! strings, 5.2 s against 3.1 s for a native replica loading the same RDB). The
//! pending MSET is sent before the next SELECT and at the RDB's end, so every key
//! still lands in its database; keys are unique within an RDB, so the order against
//! other keys' writes does not matter.
//!
//! # The TTL race
//! A key whose TTL runs out while the full copy is still being applied must not be
//! lost when the source extended it in the meantime (the extension arrives later, in
//! the command stream). A real replica never expires keys itself; a target does. So a
//! key that expires within `ttl_guard` is written with a *guard expiry*:
//! `GUARD_BASE_MS + t`, far in the future and unique to lockstep. Any TTL command
//! from the source replaces it. Once the target has applied the stream up to a point
//! taken after the copy, [`crate::ttl_guard`] sets every key that still has a guard
//! expiry back to its real expiry `t`. A key the source did not extend has expired on
//! the source by then, or will: the target then drops it too, and the source's DEL
//! finds nothing.
//!
//! The settle does not use a list of the names written here: the stream moves
//! expiries between keys and databases (RENAME, RENAMENX, MOVE, COPY with and without
//! DB, SWAPDB; a slot migration of a cluster target), a restart forgets what memory
//! held, and a list of names missed all of these (issue 14: renamed keys kept an
//! expiry in the year 3000 for ever). The guard encodes `t` itself, so the settle
//! finds the guards by scanning the task's scope on the target and reads `t` off
//! each key's own expiry; the loader only counts how many keys it guarded (none: no
//! settle). How the scan is scoped, kept atomic with the stream, persisted across
//! restarts and what it costs: see [`crate::ttl_guard`].
//!
//! # The filter
//! Keys the task's [`Filter`] does not keep (unselected databases, key prefixes,
//! lockstep's own `LOCKSTEP_` keys) are skipped, elements and all; kept keys go to
//! their mapped database, under their renamed name ([`crate::rename`]), with their
//! expiry extended by the filter's TTL extension (the guard above then works on the
//! extended expiry).
//!
//! # The script
//! A key the script (`--script`, [`crate::script`]) touches is not RESTOREd nor put
//! in an MSET: it is written as the commands that recreate it, each passed through
//! the script's `transform` (source database, argv) and replaced by what it returns.
//! A string is `SET` (a big one `DEL`, `SETRANGE` pieces); a list, set, sorted set
//! or hash is `DEL`, then `RPUSH` / `SADD` / `ZADD` / `HSET` per batch (one batch
//! for a key held whole; a big key batch by batch as it streams, so memory stays
//! bounded as without a script), hash field TTLs as `HPEXPIREAT`; then its expiry
//! as `PEXPIREAT` (the guard expiry above when it is due soon). A stream or a module
//! value is passed as the one command that recreates it, its `RESTORE ... REPLACE`:
//! the script can rename, route or drop it, not read its value (a DUMP payload);
//! lockstep does not write streams as XADD commands.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::unix_ms;

use crate::apply::ApplyError;
use crate::filter::Filter;
use crate::rdb::{self, Elements, Event, HashField, KeyMeta, Kind, Value};
use crate::script::{Script, ScriptError, Transformed};
use crate::target::Target;

/// Guard expiries are `GUARD_BASE_MS + t`: 3000-01-01T00:00:00Z plus the real expiry.
pub const GUARD_BASE_MS: i64 = 32_503_680_000_000;

/// Plain strings (no expiry) per MSET.
pub const STRINGS_PER_MSET: usize = 512;
/// Key and value bytes per MSET, at most (a bigger string is restored alone).
pub const MSET_BYTES_MAX: usize = 1 << 20;

/// Pieces a big string is appended in.
pub const STRING_PIECE_BYTES: usize = 1 << 20;

/// Options of the full copy's writes.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Keys with more element bytes than this are written in batches of commands.
    pub big_key_bytes: usize,
    /// Keys that expire sooner than this get a guard expiry (see the module doc).
    pub ttl_guard: Duration,
    /// Keys whose expiry has passed are not written (an RDB file: a server loading
    /// it as a primary drops them; a replica link's snapshot keeps them, the source
    /// sends their DEL).
    pub drop_expired: bool,
    /// Restore the file as of the moment it was saved (`--keep-expired`): each key
    /// alive then is written with the lifetime it had left then, counted from now
    /// (`now + expiry - ctime`, the file's `ctime` aux field), whether its expiry has
    /// passed since or not; a key already expired when the file was saved is dropped.
    pub expiries_from_save: bool,
}

impl Default for LoadOptions {
    fn default() -> LoadOptions {
        LoadOptions {
            big_key_bytes: 4 << 20,
            ttl_guard: Duration::from_secs(3600),
            drop_expired: false,
            expiries_from_save: false,
        }
    }
}

/// Why a key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("key {key:?} (db {db}) cannot be written to a target of RDB version {target_version}: {reason}")]
    Unwritable {
        key: String,
        db: u64,
        target_version: u16,
        reason: String,
    },
    #[error("--keep-expired counts each key's lifetime from the time the file was saved, and this file gives none (no ctime aux field before its first key with an expiry; Redis writes it since 3.2) (fix: load it without --keep-expired)")]
    NoSaveTime,
    #[error("the RDB parser gave {0} out of order")]
    OutOfOrder(&'static str),
    #[error(transparent)]
    Filter(#[from] crate::filter::FilterError),
    #[error(transparent)]
    Script(#[from] ScriptError),
}

/// The key being loaded.
struct CurrentKey {
    meta: KeyMeta,
    /// Elements held so far (empty once the key is streaming).
    value: Value,
    element_bytes: usize,
    /// Written batch by batch because it is big.
    streaming: bool,
    /// A hash whose fields `--drop-hash-field` may drop: its source name.
    fields_of: Option<Vec<u8>>,
    /// Some field was dropped: the raw RDB bytes no longer describe it.
    fields_dropped: bool,
    /// Goes through the script (written as commands, never RESTOREd).
    scripted: bool,
}

/// Where a key's commands go: straight to the target, or through the script first
/// (with the key's source database) when it touches the key.
struct Sink<'w> {
    writer: &'w mut Target,
    script: Option<(Arc<Script>, u64)>,
}

impl<'w> Sink<'w> {
    fn new(writer: &'w mut Target, script: &Option<Arc<Script>>, key: &CurrentKey) -> Sink<'w> {
        let script = script
            .as_ref()
            .filter(|_| key.scripted)
            .map(|s| (s.clone(), key.meta.db));
        Sink { writer, script }
    }

    fn direct(writer: &'w mut Target) -> Sink<'w> {
        Sink {
            writer,
            script: None,
        }
    }

    /// Writes `argv` (argv[1] is the key), or what the script makes of it.
    async fn write<A: AsRef<[u8]>>(&mut self, argv: &[A]) -> Result<(), LoadError> {
        let Some((script, db)) = &self.script else {
            self.writer.write(argv).await?;
            return Ok(());
        };
        match script.copy_command(*db, argv)? {
            Transformed::Unchanged => self.writer.write(argv).await?,
            Transformed::Commands(commands) => {
                for command in &commands {
                    self.writer.write(command).await?;
                }
            }
        }
        Ok(())
    }
}

/// Writes the keys of one RDB to the target.
pub struct KeyLoader {
    options: LoadOptions,
    filter: Filter,
    /// The task's script: the keys it touches are written as commands through it.
    script: Option<Arc<Script>>,
    /// The current key is filtered out: its elements and end are ignored.
    skipping: bool,
    target_rdb_version: u16,
    source_rdb_version: u16,
    db: Option<u64>,
    current: Option<CurrentKey>,
    /// Keys written with a guard expiry.
    guarded: u64,
    expired_dropped: u64,
    /// When the file was saved (its `ctime` aux field), ms.
    saved_at_ms: Option<i64>,
    /// Vendors' records the parser skipped.
    skipped: Vec<rdb::SkippedRecords>,
    /// Strings without expiry waiting for their MSET, and their key and value bytes.
    strings: Vec<(Vec<u8>, Vec<u8>)>,
    strings_bytes: usize,
    /// Keys written.
    pub keys: u64,
    /// Of which written in batches.
    pub big_keys: u64,
    /// Key and value bytes written (RESTORE payloads, big keys' element batches): what
    /// the full copy's MB/s throttle counts.
    pub bytes: u64,
}

impl KeyLoader {
    pub fn new(target_rdb_version: u16, options: LoadOptions, filter: Filter) -> KeyLoader {
        KeyLoader {
            options,
            filter,
            script: None,
            skipping: false,
            target_rdb_version,
            source_rdb_version: 0,
            db: None,
            current: None,
            guarded: 0,
            expired_dropped: 0,
            saved_at_ms: None,
            skipped: Vec::new(),
            strings: Vec::with_capacity(STRINGS_PER_MSET),
            strings_bytes: 0,
            keys: 0,
            big_keys: 0,
            bytes: 0,
        }
    }

    /// Writes the keys `script` touches as commands through it (see the module doc).
    pub fn with_script(mut self, script: Option<Arc<Script>>) -> KeyLoader {
        self.script = script;
        self
    }

    /// The database the writer has selected (the stream's SELECT follows the copy).
    pub fn selected_db(&self) -> Option<u64> {
        self.db
    }

    /// Keys written with a guard expiry (settled by [`crate::ttl_guard`]).
    pub fn guarded_ttls(&self) -> u64 {
        self.guarded
    }

    /// Keys not written because their expiry had passed ([`LoadOptions::drop_expired`]).
    pub fn expired_dropped(&self) -> u64 {
        self.expired_dropped
    }

    /// Records of vendors' opcodes the parser skipped (see [`rdb::SKIPPABLE_OPCODES`]).
    pub fn skipped(&self) -> &[rdb::SkippedRecords] {
        &self.skipped
    }

    /// Whether the key of `meta` is not written because it has expired: by now (a
    /// server loading the file drops it), or by the time the file was saved
    /// (`--keep-expired`, which first moves its expiry to now plus what it had left).
    fn expired(&mut self, meta: &mut KeyMeta) -> Result<bool, LoadError> {
        let Some(at) = meta.expire_ms else {
            return Ok(false);
        };
        if self.options.expiries_from_save {
            let saved_at = self.saved_at_ms.ok_or(LoadError::NoSaveTime)?;
            meta.expire_ms = Some(unix_ms().saturating_add(at.saturating_sub(saved_at)));
            return Ok(at <= saved_at);
        }
        Ok(self.options.drop_expired && at <= unix_ms())
    }

    /// Logs and keeps the records the parser skipped.
    fn on_skipped(&mut self, skipped: Vec<rdb::SkippedRecords>) {
        for s in &skipped {
            tracing::warn!(
                opcode = format!("0x{:02x}", s.opcode),
                records = s.count,
                first_at_byte = s.first_offset,
                "skipped {} record(s) of {}: nothing a copy needs (as librdb does)",
                s.count,
                s.what
            );
        }
        self.skipped.extend(skipped);
    }

    /// Handles one parser event.
    pub async fn on_event(&mut self, event: Event, writer: &mut Target) -> Result<(), LoadError> {
        match event {
            Event::Header { version } => self.source_rdb_version = version as u16,
            Event::Aux { key, value } if key == b"ctime" => {
                self.saved_at_ms = std::str::from_utf8(&value)
                    .ok()
                    .and_then(|v| v.parse::<i64>().ok())
                    .map(|secs| secs.saturating_mul(1000));
            }
            Event::Skipped(skipped) => self.on_skipped(skipped),
            Event::KeyStart(mut meta) => {
                let expired = self.expired(&mut meta)?;
                if expired {
                    self.expired_dropped += 1;
                }
                if expired
                    || !self
                        .filter
                        .keeps_rdb_key(meta.db, &meta.key, meta.rdb_type.kind())
                {
                    self.skipping = true;
                    self.current = None;
                    return Ok(());
                }
                // Field rules judge the source name (kept only when they apply).
                let fields_of = (meta.rdb_type.kind() == Kind::Hash
                    && self.filter.hash_fields.applies_to(&meta.key))
                .then(|| meta.key.clone());
                // Routes judge the source name too.
                let target_db = self.key_target_db(meta.db, &meta.key);
                // From here on the key has its target name (--rename-prefix).
                if let std::borrow::Cow::Owned(renamed) = self.filter.target_key(&meta.key)? {
                    meta.key = renamed;
                }
                self.skipping = false;
                let scripted = self
                    .script
                    .as_ref()
                    .is_some_and(|s| s.touches_key(&meta.key));
                self.select(target_db, writer).await?;
                let value = Value::empty(meta.rdb_type.kind());
                self.current = Some(CurrentKey {
                    meta,
                    value,
                    element_bytes: 0,
                    streaming: false,
                    fields_of,
                    fields_dropped: false,
                    scripted,
                });
            }
            Event::Elements(_) | Event::KeyEnd { .. } if self.skipping => {}
            Event::Elements(batch) => self.on_batch(batch, writer).await?,
            Event::KeyEnd { raw } => {
                let current = self
                    .current
                    .take()
                    .ok_or(LoadError::OutOfOrder("KeyEnd without KeyStart"))?;
                if current.streaming {
                    self.finish_streamed(current, writer).await?;
                } else {
                    self.restore(current, raw, writer).await?;
                }
                self.keys += 1;
            }
            Event::End { .. } => self.flush_strings(writer).await?,
            Event::Function { code } => {
                writer
                    .write(&[b"FUNCTION".as_slice(), b"LOAD", b"REPLACE", &code])
                    .await?;
            }
            _ => {}
        }
        Ok(())
    }

    /// The target database of source key `key` of source database `db` (its
    /// database's, or its route's: [`Filter::key_target_db`]).
    fn key_target_db(&self, db: u64, key: &[u8]) -> u64 {
        u32::try_from(db).map_or(db, |db| u64::from(self.filter.key_target_db(db, key)))
    }

    async fn select(&mut self, db: u64, writer: &mut Target) -> Result<(), LoadError> {
        if self.db != Some(db) {
            // The pending strings belong to the database selected now.
            self.flush_strings(writer).await?;
            // A number past u32 is refused by the target as by the router.
            writer.select(u32::try_from(db).unwrap_or(u32::MAX)).await?;
            self.db = Some(db);
        }
        Ok(())
    }

    async fn on_batch(&mut self, batch: Elements, writer: &mut Target) -> Result<(), LoadError> {
        let big_key_bytes = self.options.big_key_bytes;
        let current = self
            .current
            .as_mut()
            .ok_or(LoadError::OutOfOrder("elements outside a key"))?;
        let batch = match (batch, &current.fields_of) {
            (Elements::Hash(mut fields), Some(source_key)) => {
                let before = fields.len();
                let drops = &self.filter.hash_fields;
                fields.retain(|f| !drops.drops(source_key, &f.field));
                current.fields_dropped |= fields.len() != before;
                if fields.is_empty() {
                    return Ok(());
                }
                Elements::Hash(fields)
            }
            (batch, _) => batch,
        };
        let added = batch_bytes(&batch);
        current.element_bytes += added;
        let mut out = Sink::new(writer, &self.script, current);
        if current.streaming {
            self.bytes += added as u64;
            return write_batch(&current.meta, batch, self.target_rdb_version, &mut out).await;
        }
        if let Elements::StringPiece {
            offset: 0,
            total_len,
            ..
        } = &batch
        {
            if *total_len > big_key_bytes as u64 {
                // A big string: written piece by piece as the parser reads it, so
                // neither lockstep nor the send buffer ever holds it whole.
                current.streaming = true;
                self.big_keys += 1;
                self.bytes += (current.meta.key.len() + added) as u64;
                begin_big_string(&current.meta.key, *total_len, &mut out).await?;
                return write_batch(&current.meta, batch, self.target_rdb_version, &mut out).await;
            }
        }
        current
            .value
            .extend(batch)
            .map_err(|_| LoadError::OutOfOrder("a batch of another type"))?;
        let splittable = matches!(
            current.value.kind(),
            Kind::List | Kind::Set | Kind::ZSet | Kind::Hash
        );
        if splittable && current.element_bytes > big_key_bytes {
            // Too big to hold: from now on, write as it comes.
            current.streaming = true;
            self.big_keys += 1;
            self.bytes += (current.meta.key.len() + current.element_bytes) as u64;
            let kind = current.value.kind();
            let held = std::mem::replace(&mut current.value, Value::empty(kind));
            out.write(&[b"DEL".as_slice(), &current.meta.key]).await?;
            if let Some(batch) = value_as_batch(held) {
                write_batch(&current.meta, batch, self.target_rdb_version, &mut out).await?;
            }
        }
        Ok(())
    }

    async fn restore(
        &mut self,
        current: CurrentKey,
        raw: Option<Vec<u8>>,
        writer: &mut Target,
    ) -> Result<(), LoadError> {
        if current.scripted && as_commands(current.value.kind()) {
            return self.write_as_commands(current, writer).await;
        }
        let expire = self.expiry_to_write(&current.meta);
        let current = match (expire, current.value) {
            (None, Value::String(value))
                if current.meta.key.len() + value.len() <= MSET_BYTES_MAX =>
            {
                return self.add_string(current.meta.key, value, writer).await;
            }
            (_, Value::String(value)) if value.len() > self.options.big_key_bytes => {
                return self
                    .write_big_string(&current.meta, value, expire, &mut Sink::direct(writer))
                    .await;
            }
            (_, Value::Hash(fields)) if fields.is_empty() && current.fields_dropped => {
                return Ok(()); // every field dropped: the hash does not exist
            }
            (_, value) => CurrentKey { value, ..current },
        };
        let meta = &current.meta;
        let readable = meta.rdb_type.min_rdb_version() <= self.target_rdb_version
            && self.source_rdb_version <= self.target_rdb_version
            && !current.fields_dropped;
        let payload = match raw.filter(|_| readable) {
            Some(raw) => rdb::dump::wrap_raw(&raw, self.target_rdb_version),
            None => rdb::encode_dump(&current.value, self.target_rdb_version)
                .map_err(|e| self.unwritable(meta, e.to_string()))?,
        };
        let ttl = expire.unwrap_or(0).to_string();
        let mut argv: Vec<&[u8]> =
            vec![b"RESTORE", &meta.key, ttl.as_bytes(), &payload, b"REPLACE"];
        if expire.is_some() {
            argv.push(b"ABSTTL");
        }
        self.bytes += (meta.key.len() + payload.len()) as u64;
        // A stream or module key the script touches: the RESTORE goes through it.
        Sink::new(writer, &self.script, &current)
            .write(&argv)
            .await?;
        Ok(())
    }

    /// A string bigger than `big_key_bytes` that arrived whole (when `big_key_bytes`
    /// is below the parser's piece size): written as the streamed ones are, in pieces
    /// of [`STRING_PIECE_BYTES`], then its expiry.
    async fn write_big_string(
        &mut self,
        meta: &KeyMeta,
        value: Vec<u8>,
        expire: Option<i64>,
        out: &mut Sink<'_>,
    ) -> Result<(), LoadError> {
        self.big_keys += 1;
        self.bytes += (meta.key.len() + value.len()) as u64;
        begin_big_string(&meta.key, value.len() as u64, out).await?;
        for (i, piece) in value.chunks(STRING_PIECE_BYTES).enumerate() {
            write_string_piece(&meta.key, (i * STRING_PIECE_BYTES) as u64, piece, out).await?;
        }
        if let Some(at) = expire {
            push_pexpireat(&meta.key, at, out).await?;
        }
        Ok(())
    }

    /// A key the script touches, held whole: written as the commands that recreate it,
    /// each through the script (see the module doc).
    async fn write_as_commands(
        &mut self,
        current: CurrentKey,
        writer: &mut Target,
    ) -> Result<(), LoadError> {
        let expire = self.expiry_to_write(&current.meta);
        let mut out = Sink::new(writer, &self.script, &current);
        let CurrentKey { meta, value, .. } = current;
        match value {
            Value::String(value) if value.len() > self.options.big_key_bytes => {
                return self.write_big_string(&meta, value, expire, &mut out).await;
            }
            Value::String(value) => {
                self.bytes += (meta.key.len() + value.len()) as u64;
                out.write(&[b"SET".as_slice(), &meta.key, &value]).await?;
            }
            value => {
                self.bytes += (meta.key.len() + current.element_bytes) as u64;
                out.write(&[b"DEL".as_slice(), &meta.key]).await?;
                let batch = value_as_batch(value).ok_or(LoadError::OutOfOrder(
                    "a scripted key of a kind not written as commands",
                ))?;
                write_batch(&meta, batch, self.target_rdb_version, &mut out).await?;
            }
        }
        if let Some(at) = expire {
            push_pexpireat(&meta.key, at, &mut out).await?;
        }
        Ok(())
    }

    /// Queues a string without expiry for the next MSET; sends the MSET when full.
    async fn add_string(
        &mut self,
        key: Vec<u8>,
        value: Vec<u8>,
        writer: &mut Target,
    ) -> Result<(), LoadError> {
        let size = key.len() + value.len();
        if self.strings_bytes + size > MSET_BYTES_MAX {
            self.flush_strings(writer).await?;
        }
        self.bytes += size as u64;
        self.strings_bytes += size;
        self.strings.push((key, value));
        if self.strings.len() >= STRINGS_PER_MSET {
            self.flush_strings(writer).await?;
        }
        Ok(())
    }

    /// Sends the pending strings as one MSET.
    async fn flush_strings(&mut self, writer: &mut Target) -> Result<(), LoadError> {
        if self.strings.is_empty() {
            return Ok(());
        }
        let mut argv: Vec<&[u8]> = Vec::with_capacity(1 + 2 * self.strings.len());
        argv.push(b"MSET");
        for (key, value) in &self.strings {
            argv.push(key);
            argv.push(value);
        }
        writer.write(&argv).await?;
        self.strings.clear();
        self.strings_bytes = 0;
        Ok(())
    }

    async fn finish_streamed(
        &mut self,
        current: CurrentKey,
        writer: &mut Target,
    ) -> Result<(), LoadError> {
        if let Some(at) = self.expiry_to_write(&current.meta) {
            let mut out = Sink::new(writer, &self.script, &current);
            push_pexpireat(&current.meta.key, at, &mut out).await?;
        }
        Ok(())
    }

    /// The absolute expiry to write for `meta`: its own, or a guard expiry when it runs
    /// out within `ttl_guard` (counted for settling).
    fn expiry_to_write(&mut self, meta: &KeyMeta) -> Option<i64> {
        let now = unix_ms();
        let (expire_ms, by_rule) = self.filter.copy_expiry(meta.expire_ms, now);
        let expire_ms = expire_ms?;
        if by_rule {
            // The TTL rule's expiry, not the source's: no later command of the
            // source can extend it, so there is no race to guard against.
            return Some(expire_ms);
        }
        let guard_until = now + self.options.ttl_guard.as_millis() as i64;
        // A zero guard is no guard (an RDB file: no stream follows to race with).
        if expire_ms > guard_until || self.options.ttl_guard.is_zero() {
            return Some(expire_ms);
        }
        self.guarded += 1;
        Some(GUARD_BASE_MS + expire_ms.max(0))
    }

    fn unwritable(&self, meta: &KeyMeta, reason: String) -> LoadError {
        LoadError::Unwritable {
            key: String::from_utf8_lossy(&meta.key).into_owned(),
            db: meta.db,
            target_version: self.target_rdb_version,
            reason,
        }
    }
}

/// Writes one batch of a big key as commands.
async fn write_batch(
    meta: &KeyMeta,
    batch: Elements,
    target_rdb_version: u16,
    writer: &mut Sink<'_>,
) -> Result<(), LoadError> {
    let key = meta.key.as_slice();
    match batch {
        Elements::List(items) => {
            push_variadic(writer, b"RPUSH", key, items.iter().map(Vec::as_slice)).await?
        }
        Elements::Set(items) => {
            push_variadic(writer, b"SADD", key, items.iter().map(Vec::as_slice)).await?
        }
        Elements::ZSet(items) => {
            let scores: Vec<String> = items.iter().map(|(_, s)| format_score(*s)).collect();
            let args = items
                .iter()
                .zip(&scores)
                .flat_map(|((m, _), s)| [s.as_bytes(), m.as_slice()]);
            push_variadic(writer, b"ZADD", key, args).await?;
        }
        Elements::Hash(fields) => {
            push_variadic(
                writer,
                b"HSET",
                key,
                fields
                    .iter()
                    .flat_map(|f| [f.field.as_slice(), f.value.as_slice()]),
            )
            .await?;
            write_field_ttls(meta, &fields, target_rdb_version, writer).await?;
        }
        Elements::StringPiece { offset, bytes, .. } => {
            write_string_piece(key, offset, &bytes, writer).await?
        }
        // Only strings, lists, sets, zsets and hashes are ever streamed.
        _ => {
            return Err(LoadError::OutOfOrder(
                "a batch of a kind that is not streamed",
            ))
        }
    }
    Ok(())
}

async fn write_field_ttls(
    meta: &KeyMeta,
    fields: &[HashField],
    target_rdb_version: u16,
    writer: &mut Sink<'_>,
) -> Result<(), LoadError> {
    for field in fields {
        if let Some(at) = field.expire_ms {
            if target_rdb_version < 12 {
                return Err(LoadError::Unwritable {
                    key: String::from_utf8_lossy(&meta.key).into_owned(),
                    db: meta.db,
                    target_version: target_rdb_version,
                    reason: "hash field TTLs need a Redis 7.4+ target".into(),
                });
            }
            let at = at.to_string();
            writer
                .write(&[
                    b"HPEXPIREAT".as_slice(),
                    &meta.key,
                    at.as_bytes(),
                    b"FIELDS",
                    b"1",
                    &field.field,
                ])
                .await?;
        }
    }
    Ok(())
}

async fn push_variadic<'a>(
    writer: &mut Sink<'_>,
    command: &'static [u8],
    key: &'a [u8],
    args: impl Iterator<Item = &'a [u8]>,
) -> Result<(), LoadError> {
    let mut argv: Vec<&[u8]> = vec![command, key];
    argv.extend(args);
    if argv.len() > 2 {
        writer.write(&argv).await?;
    }
    Ok(())
}

/// Starts a big string on the target: `DEL` (whatever the key held), then the string
/// made at its full length at once (`SETRANGE` of its last byte), so the pieces that
/// follow are written in place instead of regrowing it (growing by `APPEND` reallocated
/// and copied the target's string for every piece).
async fn begin_big_string(
    key: &[u8],
    total_len: u64,
    writer: &mut Sink<'_>,
) -> Result<(), LoadError> {
    writer.write(&[b"DEL".as_slice(), key]).await?;
    if let Some(last) = total_len.checked_sub(1) {
        writer
            .write(&[
                b"SETRANGE".as_slice(),
                key,
                last.to_string().as_bytes(),
                b"\0",
            ])
            .await?;
    }
    Ok(())
}

/// Writes `piece` at `offset` of a big string begun by [`begin_big_string`].
async fn write_string_piece(
    key: &[u8],
    offset: u64,
    piece: &[u8],
    writer: &mut Sink<'_>,
) -> Result<(), LoadError> {
    writer
        .write(&[
            b"SETRANGE".as_slice(),
            key,
            offset.to_string().as_bytes(),
            piece,
        ])
        .await?;
    Ok(())
}

async fn push_pexpireat(key: &[u8], at: i64, writer: &mut Sink<'_>) -> Result<(), LoadError> {
    writer
        .write(&[b"PEXPIREAT".as_slice(), key, at.to_string().as_bytes()])
        .await?;
    Ok(())
}

/// Is a key of this kind written as commands (not RESTORE) when the script touches it?
fn as_commands(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::String | Kind::List | Kind::Set | Kind::ZSet | Kind::Hash
    )
}

/// A held value as one batch, to write when a key turns out to be big.
fn value_as_batch(value: Value) -> Option<Elements> {
    match value {
        Value::List(v) => Some(Elements::List(v)),
        Value::Set(v) => Some(Elements::Set(v)),
        Value::ZSet(v) => Some(Elements::ZSet(v)),
        Value::Hash(v) => Some(Elements::Hash(v)),
        _ => None,
    }
}

/// Rough bytes of element data in a batch.
pub(crate) fn batch_bytes(batch: &Elements) -> usize {
    match batch {
        Elements::String(s) | Elements::StringPiece { bytes: s, .. } => s.len(),
        Elements::List(v) | Elements::Set(v) => v.iter().map(|e| e.len() + 8).sum(),
        Elements::ZSet(v) => v.iter().map(|(m, _)| m.len() + 16).sum(),
        Elements::Hash(v) => v.iter().map(|f| f.field.len() + f.value.len() + 16).sum(),
        Elements::StreamEntries(v) => v.len() * 64,
        _ => 64,
    }
}

/// A score as ZADD reads it back to the same double.
fn format_score(score: f64) -> String {
    if score == f64::INFINITY {
        "+inf".into()
    } else if score == f64::NEG_INFINITY {
        "-inf".into()
    } else {
        format!("{score}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expiring_at(at: Option<i64>) -> KeyMeta {
        KeyMeta {
            db: 0,
            key: b"k".to_vec(),
            rdb_type: rdb::RdbType::String,
            expire_ms: at,
            lru_idle_secs: None,
            lfu_freq: None,
            offset: 0,
        }
    }

    fn loader(drop_expired: bool, expiries_from_save: bool) -> KeyLoader {
        let options = LoadOptions {
            drop_expired,
            expiries_from_save,
            ..LoadOptions::default()
        };
        KeyLoader::new(10, options, Filter::default())
    }

    #[test]
    fn keep_expired_counts_each_lifetime_from_the_save_and_drops_what_was_dead_then() {
        let now = unix_ms();
        let saved_at = now - 86_400_000; // yesterday
        let mut keep = loader(false, true);
        keep.saved_at_ms = Some(saved_at);
        // Ten minutes left at the save, expired since: ten minutes from now.
        let mut meta = expiring_at(Some(saved_at + 600_000));
        assert!(!keep.expired(&mut meta).expect("has a save time"));
        let left = meta.expire_ms.expect("an expiry") - unix_ms();
        assert!((599_000..=600_000).contains(&left), "{left}");
        // Two days left at the save: two days from now, not one.
        let mut meta = expiring_at(Some(saved_at + 2 * 86_400_000));
        assert!(!keep.expired(&mut meta).expect("has a save time"));
        assert!(meta.expire_ms.expect("an expiry") - unix_ms() > 86_400_000 * 2 - 1000);
        // Already expired when the file was saved: dropped.
        let mut meta = expiring_at(Some(saved_at - 1));
        assert!(keep.expired(&mut meta).expect("has a save time"));
        // No expiry: kept as it is.
        let mut meta = expiring_at(None);
        assert!(!keep.expired(&mut meta).expect("no expiry"));
        assert_eq!(meta.expire_ms, None);
    }

    #[test]
    fn keep_expired_without_a_save_time_is_an_error_and_the_default_drops_by_now() {
        let mut meta = expiring_at(Some(unix_ms() - 1));
        let err = loader(false, true)
            .expired(&mut meta)
            .expect_err("no ctime");
        assert!(err.to_string().contains("ctime"), "{err}");
        let mut dropping = loader(true, false);
        assert!(dropping.expired(&mut meta).expect("by now"));
        let mut later = expiring_at(Some(unix_ms() + 60_000));
        assert!(!dropping.expired(&mut later).expect("by now"));
        assert!(!loader(false, false).expired(&mut meta).expect("kept"));
    }

    #[test]
    fn scores_print_back_to_the_same_double() {
        for s in [
            0.0,
            -0.0,
            1.5,
            1e21,
            1e-300,
            f64::MAX,
            f64::MIN_POSITIVE,
            std::f64::consts::PI,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ] {
            let text = format_score(s);
            let back: f64 = match text.as_str() {
                "+inf" => f64::INFINITY,
                "-inf" => f64::NEG_INFINITY,
                t => t.parse().expect("parses"),
            };
            assert_eq!(back.to_bits(), s.to_bits(), "{s} printed as {text}");
        }
    }
}
