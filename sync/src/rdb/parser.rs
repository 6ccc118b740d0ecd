//! The streaming RDB pull parser.
//!
//! [`RdbParser::next_event`] returns one [`Event`] at a time. A key arrives as
//! `KeyStart(meta)`, zero or more `Elements(batch)`, then `KeyEnd { raw }`.
//! Collections stored element by element (linked lists, hashtable sets,
//! zsets and hashes, quicklists, streams) come out in batches bounded by
//! [`Limits::batch_elements_max`] and [`Limits::batch_bytes_max`] (a
//! quicklist node or stream node is never split, and a single element is
//! bounded by [`Limits::string_bytes_max`]). A string value longer than
//! [`Limits::batch_bytes_max`] comes out in pieces of that size
//! (`Elements::StringPiece`, LZF-compressed ones decompressed as they stream
//! with an 8 KiB window); shorter ones as one `Elements::String`. Other values
//! stored as one blob (ziplists, listpacks, intsets, zipmaps) come out as one
//! batch, bounded by the blob's size. So memory is bounded by the largest
//! batch, never by the key or the file.
//!
//! One exception to the batch bound: a stream's consumer group is one batch
//! with its whole PEL and consumers (about 30 bytes per pending entry).
//!
//! The parser is synchronous over `std::io::Read`; an async source is bridged
//! on a blocking thread (e.g. `tokio_util::io::SyncIoBridge` inside
//! `spawn_blocking`). Wrap a slow `Read` in nothing: the parser buffers 64 KiB
//! itself.
//!
//! For tools (`rdb inspect`): [`RdbParser::next_item`] joins a key's batches
//! into one [`Key`] (metadata, whole [`Value`], raw bytes if captured). A
//! key's serialized size (type byte through value, key included) is
//! `parser.offset() - meta.offset` right after its `KeyEnd`.
//!
//! ```no_run
//! # use lockstep_sync::rdb::{RdbParser, ParseOptions, Event};
//! let file = std::fs::File::open("dump.rdb")?;
//! let mut parser = RdbParser::new(file, ParseOptions::default());
//! while let Some(event) = parser.next_event()? {
//!     if let Event::KeyStart(meta) = event {
//!         println!("{:?} {}", String::from_utf8_lossy(&meta.key), meta.rdb_type.kind());
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! How it fits: the full copy (`load.rs`) pulls events from a replica link's RDB
//! transfer, the DUMP codec pulls one object's events, and `lockstep rdb inspect`
//! pulls items from a file. It only reads and decodes: it never writes anywhere,
//! never holds more than one batch of a key, and never panics on any input
//! (every failure is an [`RdbError`] naming its offset).

use std::io::Read;

use super::elem::Elem;
use super::error::RdbError;
use super::reader::{Input, StringPieces};
use super::value::{
    module_name, Consumer, Elements, HashField, Key, KeyMeta, ModuleValue, PendingEntry, RdbType,
    StreamEntry, StreamGroup, StreamId, StreamMeta, Value,
};
use super::writer::{write_len, write_string};
use super::{compact, listpack, stream, ziplist, RDB_VERSION_MAX};

/// Limits on what one length field or one batch may make the parser hold.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest single string (key, element, blob), bytes. Redis's own
    /// proto-max-bulk-len defaults to 512 MiB.
    pub string_bytes_max: u64,
    /// A batch is cut after this many elements.
    pub batch_elements_max: usize,
    /// A batch is cut after this many element bytes.
    pub batch_bytes_max: usize,
    /// Raw capture of a key's object bytes stops (gives None) past this size.
    pub raw_capture_bytes_max: usize,
    /// Largest module value or module aux payload kept, bytes.
    pub module_bytes_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            string_bytes_max: 512 * 1024 * 1024,
            batch_elements_max: 1024,
            batch_bytes_max: 1024 * 1024,
            raw_capture_bytes_max: 64 * 1024 * 1024,
            module_bytes_max: 64 * 1024 * 1024,
        }
    }
}

/// What to do with a key holding a module value (type 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ModulePolicy {
    /// Keep the opaque payload in [`Elements::Module`] and log a warning.
    #[default]
    Keep,
    /// Fail with [`RdbError::ModuleRejected`] naming the key and the module.
    Reject,
}

/// Parser options.
#[derive(Debug, Clone)]
pub struct ParseOptions {
    /// Verify the CRC64 at the end (a stored 0 means the writer disabled it).
    pub verify_checksum: bool,
    /// Module values: keep or reject.
    pub module_policy: ModulePolicy,
    /// Capture each key's raw object bytes (type byte + body) for RESTORE
    /// passthrough; given in `KeyEnd`.
    pub capture_raw: bool,
    /// Limits.
    pub limits: Limits,
}

impl Default for ParseOptions {
    fn default() -> Self {
        ParseOptions {
            verify_checksum: true,
            module_policy: ModulePolicy::Keep,
            capture_raw: false,
            limits: Limits::default(),
        }
    }
}

/// One step of the RDB stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The header: `REDIS` and the version.
    Header {
        /// RDB version (1-12).
        version: u32,
    },
    /// An AUX field (redis-ver, repl-id, ...).
    Aux {
        /// Name.
        key: Vec<u8>,
        /// Value.
        value: Vec<u8>,
    },
    /// Following keys belong to this database.
    SelectDb {
        /// Database number.
        db: u64,
    },
    /// Size hint for the current database.
    ResizeDb {
        /// Keys.
        db_size: u64,
        /// Keys with an expiry.
        expires_size: u64,
    },
    /// Cluster slot size hint (RDB 12).
    SlotInfo {
        /// Slot.
        slot: u64,
        /// Keys in the slot.
        size: u64,
        /// Keys with an expiry in the slot.
        expires_size: u64,
    },
    /// A function library (FUNCTION2): its source code.
    Function {
        /// The library code, as `FUNCTION LOAD` takes it.
        code: Vec<u8>,
    },
    /// Module data not tied to a key.
    ModuleAux {
        /// Module id.
        module_id: u64,
        /// Type name from the id.
        name: String,
        /// When it was saved (1 before keys, 2 after).
        when: u64,
        /// The annotated payload, re-serialized, through its EOF opcode.
        raw: Vec<u8>,
    },
    /// A key begins.
    KeyStart(KeyMeta),
    /// A batch of the current key's value.
    Elements(Elements),
    /// The current key is complete.
    KeyEnd {
        /// Raw object bytes (type byte + body), when capture was on and fit.
        raw: Option<Vec<u8>>,
    },
    /// Records of vendors' opcodes that carry nothing a copy needs, skipped as
    /// librdb skips them ([`SKIPPABLE_OPCODES`]): one entry per opcode seen, given
    /// once, just before [`Event::End`], so a skip is never silent.
    Skipped(Vec<SkippedRecords>),
    /// The end of the RDB.
    End {
        /// The stored checksum (0: disabled by the writer, or version < 5).
        checksum: u64,
    },
}

/// How many records of one skippable opcode the parser passed over, and where the
/// first one was (its opcode byte's offset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedRecords {
    /// The opcode byte.
    pub opcode: u8,
    /// Whose opcode it is and what it records.
    pub what: &'static str,
    /// Records skipped.
    pub count: u64,
    /// Byte offset of the first one.
    pub first_offset: u64,
}

/// Opcodes of other writers than Redis that the parser skips, each followed by one
/// RDB length and nothing else (so skipping one cannot lose the thread of the file),
/// with what they record. Redis Enterprise writes them before a key, as Redis writes
/// `IDLE`; librdb reads and ignores them (its `RDB_OPCODE_RAM_LRU` and
/// `RDB_OPCODE_SLOT_NUM`). Any other unknown byte stops the parser with
/// [`RdbError::UnknownType`]: its length is unknown, so nothing after it can be trusted.
pub const SKIPPABLE_OPCODES: [(u8, &str); 2] = [
    (
        0x6b,
        "Redis Enterprise RAM_LRU (a key's idle time in its RAM tier)",
    ),
    (
        0x79,
        "Redis Enterprise SLOT_NUM (the cluster slot of the keys that follow)",
    ),
];

/// What `opcode` records, when it is one of [`SKIPPABLE_OPCODES`].
fn skippable(opcode: u8) -> Option<&'static str> {
    SKIPPABLE_OPCODES
        .iter()
        .find(|(op, _)| *op == opcode)
        .map(|(_, what)| *what)
}

/// A whole item: a key with its complete value, or any other event.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// A key with its whole value.
    Key(Key),
    /// Any event other than the key events.
    Event(Event),
}

#[derive(Debug, Clone, Copy)]
enum Step {
    Begin,
    Plain {
        remaining: u64,
    },
    HashTtl {
        remaining: u64,
        min_expire: Option<u64>,
    },
    Quicklist {
        remaining: u64,
        v2: bool,
    },
    StreamNodes {
        remaining: u64,
    },
    StreamMeta,
    StreamGroups {
        remaining: u64,
    },
    /// A string longer than a batch, read piece by piece (state in `pieces`).
    StringPieces {
        offset: u64,
        total_len: u64,
    },
    Finished,
}

#[derive(Debug)]
enum State {
    Header,
    Top,
    Value(Step),
    KeyEnd,
    /// The EOF opcode was read and the skipped records given: the checksum is next.
    Eof,
    Done,
}

/// The streaming RDB parser. See the module documentation.
pub struct RdbParser<R> {
    input: Input<R>,
    opts: ParseOptions,
    version: u32,
    state: State,
    db: u64,
    expire_ms: Option<i64>,
    lru_idle: Option<u64>,
    lfu_freq: Option<u8>,
    /// The current key's type and key (for errors and dispatch).
    cur_type: RdbType,
    cur_key: Vec<u8>,
    cur_offset: u64,
    /// The string being read piece by piece, in `Step::StringPieces`.
    pieces: Option<StringPieces>,
    /// Records of [`SKIPPABLE_OPCODES`] passed over so far, per opcode.
    skipped: Vec<SkippedRecords>,
}

impl<R: Read> RdbParser<R> {
    /// A parser over a whole RDB file or stream.
    pub fn new(reader: R, opts: ParseOptions) -> RdbParser<R> {
        let input = Input::new(reader, opts.verify_checksum, opts.limits.string_bytes_max);
        RdbParser {
            input,
            opts,
            version: 0,
            state: State::Header,
            db: 0,
            expire_ms: None,
            lru_idle: None,
            lfu_freq: None,
            cur_type: RdbType::String,
            cur_key: Vec::new(),
            cur_offset: 0,
            pieces: None,
            skipped: Vec::new(),
        }
    }

    /// A parser positioned at one object's body (a DUMP payload): the events
    /// are `Elements...` then `KeyEnd`, then `None`.
    pub(crate) fn for_object(
        reader: R,
        version: u32,
        rdb_type: RdbType,
        opts: ParseOptions,
    ) -> RdbParser<R> {
        let mut p = RdbParser::new(reader, opts);
        p.version = version;
        p.cur_type = rdb_type;
        p.state = State::Value(Step::Begin);
        p
    }

    /// Gives back the reader and the bytes the parser read ahead of what it
    /// consumed (it reads in 64 KiB blocks). After [`Event::End`] these are
    /// the bytes following the RDB: the AOF tail of an RDB-preamble AOF, or
    /// whatever else shares the stream. A replication link should rather give
    /// the parser a reader that ends where the RDB ends.
    pub fn into_parts(self) -> (R, Vec<u8>) {
        self.input.into_parts()
    }

    /// The RDB version from the header (0 before it is read).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Offset of the next byte the parser will read.
    pub fn offset(&self) -> u64 {
        self.input.offset()
    }

    /// True when every input byte has been consumed (reads ahead to know).
    pub fn at_eof(&mut self) -> Result<bool, RdbError> {
        self.input.at_eof()
    }

    /// The next event, or None after [`Event::End`].
    pub fn next_event(&mut self) -> Result<Option<Event>, RdbError> {
        loop {
            match self.state {
                State::Header => return self.read_header().map(Some),
                State::Top => return self.read_top().map(Some),
                State::Value(step) => {
                    if let Some(batch) = self.value_step(step)? {
                        return Ok(Some(Event::Elements(batch)));
                    }
                    self.state = State::KeyEnd;
                }
                State::KeyEnd => {
                    let raw = if self.opts.capture_raw {
                        self.input.finish_capture()
                    } else {
                        None
                    };
                    self.state = State::Top;
                    return Ok(Some(Event::KeyEnd { raw }));
                }
                State::Eof => return self.read_eof().map(Some),
                State::Done => return Ok(None),
            }
        }
    }

    /// The next whole item: a key with its whole value (batches joined: the
    /// caller gives up the memory bound), or another event.
    pub fn next_item(&mut self) -> Result<Option<Item>, RdbError> {
        let Some(event) = self.next_event()? else {
            return Ok(None);
        };
        let Event::KeyStart(meta) = event else {
            return Ok(Some(Item::Event(event)));
        };
        let mut value = Value::empty(meta.rdb_type.kind());
        loop {
            match self.next_event()? {
                Some(Event::Elements(batch)) => {
                    if value.extend(batch).is_err() {
                        return Err(RdbError::Corrupt {
                            offset: meta.offset,
                            what: "value",
                            detail: "a batch of another kind than the key's type".into(),
                        });
                    }
                }
                Some(Event::KeyEnd { raw }) => {
                    return Ok(Some(Item::Key(Key { meta, value, raw })))
                }
                _ => {
                    return Err(RdbError::Corrupt {
                        offset: meta.offset,
                        what: "value",
                        detail: "key events out of order".into(),
                    })
                }
            }
        }
    }

    fn read_header(&mut self) -> Result<Event, RdbError> {
        let magic: [u8; 9] = self
            .input
            .read_array("the RDB header")
            .map_err(|e| match e {
                RdbError::UnexpectedEof { .. } => RdbError::BadMagic {
                    found: "(fewer than 9 bytes)".into(),
                },
                other => other,
            })?;
        if &magic[..5] != b"REDIS" || !magic[5..].iter().all(u8::is_ascii_digit) {
            return Err(RdbError::BadMagic {
                found: String::from_utf8_lossy(&magic).into_owned(),
            });
        }
        let version = magic[5..]
            .iter()
            .fold(0u32, |acc, d| acc * 10 + (d - b'0') as u32);
        if !(1..=RDB_VERSION_MAX).contains(&version) {
            return Err(RdbError::UnsupportedVersion {
                version,
                max: RDB_VERSION_MAX,
            });
        }
        self.version = version;
        self.state = State::Top;
        Ok(Event::Header { version })
    }

    fn read_top(&mut self) -> Result<Event, RdbError> {
        loop {
            let offset = self.input.offset();
            let op = self.input.read_u8("an opcode or object type")?;
            match op {
                0xff if self.skipped.is_empty() => return self.read_eof(),
                0xff => {
                    self.state = State::Eof;
                    return Ok(Event::Skipped(std::mem::take(&mut self.skipped)));
                }
                0xfe => {
                    let db = self.input.read_len("SELECTDB db number")?;
                    self.db = db;
                    return Ok(Event::SelectDb { db });
                }
                0xfd => {
                    let secs = i32::from_le_bytes(self.input.read_array("EXPIRETIME seconds")?);
                    self.expire_ms = Some(secs as i64 * 1000);
                }
                0xfc => {
                    let ms = i64::from_le_bytes(self.input.read_array("EXPIRETIME_MS")?);
                    self.expire_ms = Some(ms);
                }
                0xfb => {
                    let db_size = self.input.read_len("RESIZEDB db size")?;
                    let expires_size = self.input.read_len("RESIZEDB expires size")?;
                    return Ok(Event::ResizeDb {
                        db_size,
                        expires_size,
                    });
                }
                0xfa => {
                    let key = self.input.read_string("AUX field name")?;
                    let value = self.input.read_string("AUX field value")?;
                    return Ok(Event::Aux { key, value });
                }
                0xf9 => self.lfu_freq = Some(self.input.read_u8("FREQ")?),
                0xf8 => self.lru_idle = Some(self.input.read_len("IDLE")?),
                0xf7 => return self.read_module_aux(offset),
                0xf6 => {
                    return Err(RdbError::Unsupported {
                        offset,
                        what: "pre-GA function library (FUNCTION opcode 0xf6, Redis 7.0 RC)",
                    })
                }
                0xf5 => {
                    let code = self.input.read_string("FUNCTION2 library code")?;
                    return Ok(Event::Function { code });
                }
                0xf4 => return self.read_slot_info(),
                t if skippable(t).is_some() => self.skip_record(offset, t)?,
                t => return self.start_key(offset, t),
            }
        }
    }

    /// Passes over one record of a [`SKIPPABLE_OPCODES`] opcode (its one length),
    /// counting it.
    fn skip_record(&mut self, offset: u64, opcode: u8) -> Result<(), RdbError> {
        let what = skippable(opcode).unwrap_or("a skippable opcode");
        self.input.read_len(what)?;
        match self.skipped.iter_mut().find(|s| s.opcode == opcode) {
            Some(seen) => seen.count += 1,
            None => self.skipped.push(SkippedRecords {
                opcode,
                what,
                count: 1,
                first_offset: offset,
            }),
        }
        Ok(())
    }

    fn read_slot_info(&mut self) -> Result<Event, RdbError> {
        let slot = self.input.read_len("SLOT_INFO slot")?;
        let size = self.input.read_len("SLOT_INFO size")?;
        let expires_size = self.input.read_len("SLOT_INFO expires size")?;
        Ok(Event::SlotInfo {
            slot,
            size,
            expires_size,
        })
    }

    /// Reads the key of an object whose type byte `t` is at `offset`, takes
    /// the pending expiry, LRU and LFU, and enters its value.
    fn start_key(&mut self, offset: u64, t: u8) -> Result<Event, RdbError> {
        let rdb_type = RdbType::from_u8(t).ok_or(RdbError::UnknownType { offset, byte: t })?;
        if rdb_type == RdbType::ModulePreGa {
            return Err(RdbError::Unsupported {
                offset,
                what: "pre-GA module value (type 6, Redis 4.0 RC)",
            });
        }
        let key = self.input.read_string("key")?;
        if self.opts.capture_raw {
            self.input
                .start_capture(&[t], self.opts.limits.raw_capture_bytes_max);
        }
        self.cur_type = rdb_type;
        self.cur_key.clear();
        self.cur_key.extend_from_slice(&key);
        self.cur_offset = offset;
        self.state = State::Value(Step::Begin);
        Ok(Event::KeyStart(KeyMeta {
            db: self.db,
            key,
            rdb_type,
            expire_ms: self.expire_ms.take(),
            lru_idle_secs: self.lru_idle.take(),
            lfu_freq: self.lfu_freq.take(),
            offset,
        }))
    }

    fn read_eof(&mut self) -> Result<Event, RdbError> {
        let computed = self.input.crc_value();
        self.input.stop_crc();
        self.state = State::Done;
        if self.version < 5 {
            return Ok(Event::End { checksum: 0 });
        }
        let checksum = self.input.read_u64_le("the CRC64 after EOF")?;
        if let Some(computed) = computed {
            if checksum != 0 && checksum != computed {
                return Err(RdbError::ChecksumMismatch {
                    expected: checksum,
                    computed,
                });
            }
        }
        Ok(Event::End { checksum })
    }

    fn read_module_aux(&mut self, offset: u64) -> Result<Event, RdbError> {
        let module_id = self.input.read_len("MODULE_AUX module id")?;
        let when_opcode = self.input.read_len("MODULE_AUX when opcode")?;
        if when_opcode != 2 {
            return Err(RdbError::Corrupt {
                offset,
                what: "MODULE_AUX",
                detail: format!("when opcode is {when_opcode}, expected 2 (uint)"),
            });
        }
        let when = self.input.read_len("MODULE_AUX when")?;
        let mut raw = Vec::new();
        self.read_module_payload(&mut raw)?;
        Ok(Event::ModuleAux {
            module_id,
            name: module_name(module_id),
            when,
            raw,
        })
    }

    /// Reads an annotated module payload through its EOF opcode, re-serializing it.
    fn read_module_payload(&mut self, raw: &mut Vec<u8>) -> Result<(), RdbError> {
        let limit = self.opts.limits.module_bytes_max;
        loop {
            let at = self.input.offset();
            let op = self.input.read_len("module value opcode")?;
            write_len(raw, op);
            match op {
                0 => return Ok(()),
                1 | 2 => {
                    let v = self.input.read_len("module integer")?;
                    write_len(raw, v);
                }
                3 => raw.extend_from_slice(&self.input.read_array::<4>("module float")?),
                4 => raw.extend_from_slice(&self.input.read_array::<8>("module double")?),
                5 => {
                    let s = self.input.read_string("module string")?;
                    write_string(raw, &s);
                }
                other => {
                    return Err(RdbError::Corrupt {
                        offset: at,
                        what: "module value",
                        detail: format!("unknown module opcode {other}"),
                    })
                }
            }
            if raw.len() > limit {
                return Err(RdbError::LimitExceeded {
                    offset: at,
                    what: "module payload bytes",
                    len: raw.len() as u64,
                    limit: limit as u64,
                });
            }
        }
    }

    fn read_blob(&mut self, what: &'static str) -> Result<(u64, Vec<u8>), RdbError> {
        let at = self.input.offset();
        let blob = self.input.read_string(what)?;
        Ok((at, blob))
    }

    fn batch_full(&self, elements: usize, bytes: usize) -> bool {
        elements >= self.opts.limits.batch_elements_max || bytes >= self.opts.limits.batch_bytes_max
    }

    /// Advances the current value; Some(batch) or None when the value is complete.
    fn value_step(&mut self, step: Step) -> Result<Option<Elements>, RdbError> {
        match step {
            Step::Finished => Ok(None),
            Step::Begin => self.begin_value(),
            Step::Plain { remaining } => self.next_plain_batch(remaining),
            Step::HashTtl {
                remaining,
                min_expire,
            } => self.next_hash_ttl_batch(remaining, min_expire),
            Step::Quicklist { remaining, v2 } => self.next_quicklist_batch(remaining, v2),
            Step::StreamNodes { remaining } => self.next_stream_nodes(remaining),
            Step::StreamMeta => self.stream_meta_batch(),
            Step::StringPieces { offset, total_len } => self.next_string_piece(offset, total_len),
            Step::StreamGroups { remaining } => self.next_stream_group(remaining),
        }
    }

    /// Reads the head of the current value: a whole small value (one blob,
    /// a short string, a module value), or the length that starts its batches.
    fn begin_value(&mut self) -> Result<Option<Elements>, RdbError> {
        use RdbType as T;
        let ty = self.cur_type;
        let next = match ty {
            T::String => return self.begin_string(),
            T::List | T::Set | T::ZSet | T::ZSet2 | T::Hash => Step::Plain {
                remaining: self.input.read_len("collection length")?,
            },
            T::HashMetadata | T::HashMetadataPreGa => self.begin_hash_ttl(ty)?,
            T::ListQuicklist | T::ListQuicklist2 => Step::Quicklist {
                remaining: self.input.read_len("quicklist node count")?,
                v2: ty == T::ListQuicklist2,
            },
            T::StreamListpacks | T::StreamListpacks2 | T::StreamListpacks3 => Step::StreamNodes {
                remaining: self.input.read_len("stream node count")?,
            },
            T::Module2 => {
                let m = self.read_module_value()?;
                self.state = State::Value(Step::Finished);
                return Ok(Some(Elements::Module(Box::new(m))));
            }
            T::ModulePreGa => {
                return Err(RdbError::Unsupported {
                    offset: self.cur_offset,
                    what: "pre-GA module value (type 6)",
                })
            }
            _ => {
                let batch = self.read_compact()?;
                self.state = State::Value(Step::Finished);
                return Ok(batch);
            }
        };
        self.state = State::Value(next);
        self.value_step(next)
    }

    /// A string value: whole when it fits a batch, else the first piece.
    fn begin_string(&mut self) -> Result<Option<Elements>, RdbError> {
        const WHAT: &str = "string value";
        let head = self.input.read_string_head(WHAT)?;
        let total_len = head.body_len();
        if total_len <= self.opts.limits.batch_bytes_max {
            let mut s = Vec::new();
            self.input.read_string_body(head, &mut s, WHAT)?;
            self.state = State::Value(Step::Finished);
            return Ok(Some(Elements::String(s)));
        }
        // Longer than a batch: pieces, never the whole string at once.
        self.pieces = Some(head.into_pieces(WHAT));
        let next = Step::StringPieces {
            offset: 0,
            total_len: total_len as u64,
        };
        self.state = State::Value(next);
        self.value_step(next)
    }

    /// The head of a hash with field TTLs: its min expire (type 24 only) and length.
    fn begin_hash_ttl(&mut self, ty: RdbType) -> Result<Step, RdbError> {
        let min_expire = if ty == RdbType::HashMetadata {
            Some(self.input.read_u64_le("hash min expire")?)
        } else {
            None
        };
        Ok(Step::HashTtl {
            remaining: self.input.read_len("hash length")?,
            min_expire,
        })
    }

    #[inline]
    fn next_plain_batch(&mut self, remaining: u64) -> Result<Option<Elements>, RdbError> {
        if remaining == 0 {
            return Ok(None);
        }
        let (batch, left) = self.read_plain_batch(remaining)?;
        self.state = State::Value(Step::Plain { remaining: left });
        Ok(Some(batch))
    }

    fn next_hash_ttl_batch(
        &mut self,
        remaining: u64,
        min_expire: Option<u64>,
    ) -> Result<Option<Elements>, RdbError> {
        if remaining == 0 {
            return Ok(None);
        }
        let (batch, left) = self.read_hash_ttl_batch(remaining, min_expire)?;
        self.state = State::Value(Step::HashTtl {
            remaining: left,
            min_expire,
        });
        Ok(Some(batch))
    }

    #[inline]
    fn next_quicklist_batch(
        &mut self,
        remaining: u64,
        v2: bool,
    ) -> Result<Option<Elements>, RdbError> {
        if remaining == 0 {
            return Ok(None);
        }
        let (batch, left) = self.read_quicklist_batch(remaining, v2)?;
        self.state = State::Value(Step::Quicklist {
            remaining: left,
            v2,
        });
        Ok(Some(batch))
    }

    /// A batch of stream entries; after the last node, the stream's metadata.
    fn next_stream_nodes(&mut self, remaining: u64) -> Result<Option<Elements>, RdbError> {
        if remaining == 0 {
            self.state = State::Value(Step::StreamMeta);
            return self.value_step(Step::StreamMeta);
        }
        let (batch, left) = self.read_stream_nodes(remaining)?;
        self.state = State::Value(Step::StreamNodes { remaining: left });
        Ok(Some(batch))
    }

    /// The stream's metadata, then its consumer groups.
    fn stream_meta_batch(&mut self) -> Result<Option<Elements>, RdbError> {
        let meta = self.read_stream_meta()?;
        let groups = self.input.read_len("stream group count")?;
        self.state = State::Value(Step::StreamGroups { remaining: groups });
        Ok(Some(Elements::StreamMeta(Box::new(meta))))
    }

    fn next_string_piece(
        &mut self,
        offset: u64,
        total_len: u64,
    ) -> Result<Option<Elements>, RdbError> {
        let Some(pieces) = self.pieces.as_mut() else {
            return Ok(None);
        };
        if pieces.raw_left == 0 {
            self.pieces = None;
            return Ok(None);
        }
        let bytes = self
            .input
            .read_string_piece(pieces, self.opts.limits.batch_bytes_max)?;
        let next = offset + bytes.len() as u64;
        debug_assert!(next <= total_len);
        self.state = State::Value(Step::StringPieces {
            offset: next,
            total_len,
        });
        Ok(Some(Elements::StringPiece {
            offset,
            total_len,
            bytes,
        }))
    }

    fn next_stream_group(&mut self, remaining: u64) -> Result<Option<Elements>, RdbError> {
        if remaining == 0 {
            return Ok(None);
        }
        let group = self.read_stream_group()?;
        self.state = State::Value(Step::StreamGroups {
            remaining: remaining - 1,
        });
        Ok(Some(Elements::StreamGroup(Box::new(group))))
    }

    fn read_plain_batch(&mut self, mut remaining: u64) -> Result<(Elements, u64), RdbError> {
        use RdbType as T;
        let cap = (remaining.min(self.opts.limits.batch_elements_max as u64)) as usize;
        let mut bytes = 0usize;
        let batch = match self.cur_type {
            T::List | T::Set => {
                let mut v = Vec::with_capacity(cap.min(1024));
                while remaining > 0 && !self.batch_full(v.len(), bytes) {
                    let e = self.input.read_string("collection element")?;
                    bytes += e.len();
                    v.push(e);
                    remaining -= 1;
                }
                if self.cur_type == T::List {
                    Elements::List(v)
                } else {
                    Elements::Set(v)
                }
            }
            T::ZSet | T::ZSet2 => {
                let mut v = Vec::with_capacity(cap.min(1024));
                while remaining > 0 && !self.batch_full(v.len(), bytes) {
                    let m = self.input.read_string("zset member")?;
                    let score = if self.cur_type == T::ZSet2 {
                        self.input.read_f64_le("zset score")?
                    } else {
                        self.input.read_string_double("zset score")?
                    };
                    bytes += m.len() + 8;
                    v.push((m, score));
                    remaining -= 1;
                }
                Elements::ZSet(v)
            }
            _ => {
                let mut v = Vec::with_capacity(cap.min(1024));
                while remaining > 0 && !self.batch_full(v.len(), bytes) {
                    let field = self.input.read_string("hash field")?;
                    let value = self.input.read_string("hash value")?;
                    bytes += field.len() + value.len();
                    v.push(HashField {
                        field,
                        value,
                        expire_ms: None,
                    });
                    remaining -= 1;
                }
                Elements::Hash(v)
            }
        };
        Ok((batch, remaining))
    }

    fn read_hash_ttl_batch(
        &mut self,
        mut remaining: u64,
        min_expire: Option<u64>,
    ) -> Result<(Elements, u64), RdbError> {
        let mut v = Vec::with_capacity((remaining.min(1024)) as usize);
        let mut bytes = 0usize;
        while remaining > 0 && !self.batch_full(v.len(), bytes) {
            let at = self.input.offset();
            let ttl = self.input.read_len("hash field TTL")?;
            let expire_ms = match (ttl, min_expire) {
                (0, _) => None,
                (t, Some(min)) => Some(
                    t.checked_add(min)
                        .and_then(|x| x.checked_sub(1))
                        .ok_or_else(|| RdbError::Corrupt {
                            offset: at,
                            what: "hash field TTL",
                            detail: format!("relative TTL {t} overflows with min expire {min}"),
                        })?,
                ),
                (t, None) => Some(t),
            };
            let field = self.input.read_string("hash field")?;
            let value = self.input.read_string("hash value")?;
            bytes += field.len() + value.len();
            v.push(HashField {
                field,
                value,
                expire_ms,
            });
            remaining -= 1;
        }
        Ok((Elements::Hash(v), remaining))
    }

    fn read_quicklist_batch(
        &mut self,
        mut remaining: u64,
        v2: bool,
    ) -> Result<(Elements, u64), RdbError> {
        let mut v: Vec<Vec<u8>> = Vec::new();
        let mut bytes = 0usize;
        while remaining > 0 && !self.batch_full(v.len(), bytes) {
            let at = self.input.offset();
            let container = if v2 {
                self.input.read_len("quicklist node container")?
            } else {
                2
            };
            let (blob_at, blob) = self.read_blob("quicklist node")?;
            remaining -= 1;
            match container {
                1 => {
                    bytes += blob.len();
                    v.push(blob);
                }
                2 => {
                    bytes += blob.len();
                    let push = |e: Elem<'_>| {
                        v.push(e.to_bytes());
                        Ok(())
                    };
                    let r = if v2 {
                        listpack::decode(&blob, push)
                    } else {
                        ziplist::decode(&blob, push)
                    };
                    // An empty node is skipped, as Redis does (files from before
                    // the #8453 fix have them); a key left empty is reported
                    // empty and a loader drops it.
                    r.map_err(|e| e.into_rdb(blob_at))?;
                }
                other => {
                    return Err(RdbError::Corrupt {
                        offset: at,
                        what: "quicklist node container",
                        detail: format!("container {other}, expected 1 (plain) or 2 (packed)"),
                    })
                }
            }
        }
        Ok((Elements::List(v), remaining))
    }

    /// Values stored as one blob: zipmap, ziplist, intset, listpack (+ex).
    fn read_compact(&mut self) -> Result<Option<Elements>, RdbError> {
        let ty = self.cur_type;
        if ty == RdbType::HashListpackEx {
            // Min expire of the fields: informative, recomputed by the loader.
            self.input.read_u64_le("hash min expire")?;
        }
        let (at, blob) = self.read_blob(ty.encoding_name())?;
        let Some(decoded) = compact::decode(ty, &blob) else {
            return Err(RdbError::UnknownType {
                offset: self.cur_offset,
                byte: ty.as_u8(),
            });
        };
        let batch = decoded.map_err(|e| e.into_rdb(at))?;
        Ok(if batch.is_empty() { None } else { Some(batch) })
    }

    fn read_module_value(&mut self) -> Result<ModuleValue, RdbError> {
        let module_id = self.input.read_len("module id")?;
        let name = module_name(module_id);
        if self.opts.module_policy == ModulePolicy::Reject {
            return Err(RdbError::ModuleRejected {
                offset: self.cur_offset,
                key: String::from_utf8_lossy(&self.cur_key).into_owned(),
                module_name: name,
                module_id,
            });
        }
        tracing::warn!(
            key = %String::from_utf8_lossy(&self.cur_key),
            module = %name,
            offset = self.cur_offset,
            "RDB key holds a module value; kept as an opaque payload"
        );
        let mut raw = Vec::new();
        self.read_module_payload(&mut raw)?;
        Ok(ModuleValue {
            module_id,
            name,
            encver: (module_id & 1023) as u16,
            raw,
        })
    }

    fn read_stream_nodes(&mut self, mut remaining: u64) -> Result<(Elements, u64), RdbError> {
        let mut entries: Vec<StreamEntry> = Vec::new();
        let mut bytes = 0usize;
        while remaining > 0 && !self.batch_full(entries.len(), bytes) {
            let at = self.input.offset();
            let key = self.input.read_string("stream node master ID")?;
            let key: [u8; 16] = key.as_slice().try_into().map_err(|_| RdbError::Corrupt {
                offset: at,
                what: "stream node master ID",
                detail: format!("{} bytes, expected 16", key.len()),
            })?;
            let (blob_at, blob) = self.read_blob("stream node listpack")?;
            bytes += blob.len();
            stream::decode_node(StreamId::from_be_bytes(key), &blob, &mut entries)
                .map_err(|e| e.into_rdb(blob_at))?;
            remaining -= 1;
        }
        Ok((Elements::StreamEntries(entries), remaining))
    }

    fn read_id(&mut self, what: &'static str) -> Result<StreamId, RdbError> {
        Ok(StreamId {
            ms: self.input.read_len(what)?,
            seq: self.input.read_len(what)?,
        })
    }

    fn read_stream_meta(&mut self) -> Result<StreamMeta, RdbError> {
        let length = self.input.read_len("stream length")?;
        let last_id = self.read_id("stream last ID")?;
        let mut meta = StreamMeta {
            length,
            last_id,
            ..StreamMeta::default()
        };
        if self.cur_type >= RdbType::StreamListpacks2 {
            meta.first_id = Some(self.read_id("stream first ID")?);
            meta.max_deleted_id = Some(self.read_id("stream max deleted ID")?);
            meta.entries_added = Some(self.input.read_len("stream entries added")?);
        }
        Ok(meta)
    }

    fn read_stream_group(&mut self) -> Result<StreamGroup, RdbError> {
        let v2 = self.cur_type >= RdbType::StreamListpacks2;
        let v3 = self.cur_type >= RdbType::StreamListpacks3;
        let name = self.input.read_string("stream group name")?;
        let last_id = self.read_id("stream group last ID")?;
        let entries_read = if v2 {
            Some(self.input.read_len("stream group entries read")?)
        } else {
            None
        };
        let pel_len = self.input.read_len("stream group PEL length")?;
        let mut pel = Vec::with_capacity(pel_len.min(1024) as usize);
        for _ in 0..pel_len {
            let id = StreamId::from_be_bytes(self.input.read_array("PEL entry ID")?);
            let delivery_time_ms = self.input.read_u64_le("PEL delivery time")?;
            let delivery_count = self.input.read_len("PEL delivery count")?;
            pel.push(PendingEntry {
                id,
                delivery_time_ms,
                delivery_count,
            });
        }
        let nconsumers = self.input.read_len("stream consumer count")?;
        let mut consumers = Vec::with_capacity(nconsumers.min(1024) as usize);
        for _ in 0..nconsumers {
            let name = self.input.read_string("stream consumer name")?;
            let seen_time_ms = self.input.read_u64_le("consumer seen time")?;
            let active_time_ms = if v3 {
                Some(self.input.read_u64_le("consumer active time")?)
            } else {
                None
            };
            let n = self.input.read_len("consumer PEL length")?;
            let mut pending = Vec::with_capacity(n.min(1024) as usize);
            for _ in 0..n {
                pending.push(StreamId::from_be_bytes(
                    self.input.read_array("consumer PEL ID")?,
                ));
            }
            consumers.push(Consumer {
                name,
                seen_time_ms,
                active_time_ms,
                pending,
            });
        }
        Ok(StreamGroup {
            name,
            last_id,
            entries_read,
            pel,
            consumers,
        })
    }
}

impl<R: Read> Iterator for RdbParser<R> {
    type Item = Result<Event, RdbError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_event() {
            Ok(Some(e)) => Some(Ok(e)),
            Ok(None) => None,
            Err(e) => {
                self.state = State::Done;
                Some(Err(e))
            }
        }
    }
}

/// Parses a whole RDB into items (keys with whole values). For tests and
/// small files: this holds every key in memory.
pub fn parse_all<R: Read>(reader: R, opts: ParseOptions) -> Result<Vec<Item>, RdbError> {
    let mut p = RdbParser::new(reader, opts);
    let mut out = Vec::new();
    while let Some(item) = p.next_item()? {
        out.push(item);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An RDB 11 file, checksum disabled (0), as Redis Enterprise writes one: every
    /// key preceded by a RAM_LRU record (opcode 0x6b and one RDB length), one SLOT_NUM
    /// record (0x79 and one length). `gap` is the byte at offset 19 (0x79 here).
    fn enterprise_file(gap: u8) -> Vec<u8> {
        let mut rdb = b"REDIS0011".to_vec(); // offsets 0..=8
        rdb.extend_from_slice(&[0xfe, 0x00]); // 9: SELECTDB 0
        rdb.extend_from_slice(&[0x6b, 0x40, 0x43]); // 11: RAM_LRU, a 14-bit length (67)
        rdb.extend_from_slice(&[0x00, 1, b'a', 1, b'b']); // 14: string a = b
        rdb.extend_from_slice(&[gap, 0x05]); // 19: SLOT_NUM 5
        rdb.extend_from_slice(&[0x6b, 0x02]); // 21: RAM_LRU, a 6-bit length (2)
        rdb.extend_from_slice(&[0x00, 1, b'c', 1, b'd']); // 23: string c = d
        rdb.push(0xff); // EOF
        rdb.extend_from_slice(&[0; 8]); // checksum 0: not computed by the writer
        rdb
    }

    #[test]
    fn enterprise_records_are_skipped_counted_and_given_before_the_end() {
        let items = parse_all(&enterprise_file(0x79)[..], ParseOptions::default())
            .expect("an Enterprise file parses");
        let keys: Vec<&[u8]> = items
            .iter()
            .filter_map(|i| match i {
                Item::Key(k) => Some(k.meta.key.as_slice()),
                _ => None,
            })
            .collect();
        assert_eq!(keys, [b"a".as_slice(), b"c"]);
        let skipped = items.iter().rev().nth(1);
        let Some(Item::Event(Event::Skipped(skipped))) = skipped else {
            panic!("the skipped records come just before End: {items:?}");
        };
        let seen: Vec<(u8, u64, u64)> = skipped
            .iter()
            .map(|s| (s.opcode, s.count, s.first_offset))
            .collect();
        assert_eq!(seen, [(0x6b, 2, 11), (0x79, 1, 19)]);
        assert!(skipped[0].what.contains("Redis Enterprise"));
    }

    #[test]
    fn a_plain_file_gives_no_skipped_event() {
        let mut rdb = b"REDIS0011".to_vec();
        rdb.extend_from_slice(&[0xfe, 0x00, 0x00, 1, b'a', 1, b'b', 0xff]);
        rdb.extend_from_slice(&[0; 8]);
        let items = parse_all(&rdb[..], ParseOptions::default()).expect("parses");
        assert!(!items
            .iter()
            .any(|i| matches!(i, Item::Event(Event::Skipped(_)))));
    }

    #[test]
    fn an_unknown_opcode_stops_the_parser_naming_its_offset() {
        // 0x65: an old Garantia/Enterprise opcode (GCAS) whose length is not known.
        let err = parse_all(&enterprise_file(0x65)[..], ParseOptions::default())
            .expect_err("an unknown opcode cannot be skipped");
        assert!(
            matches!(
                err,
                RdbError::UnknownType {
                    offset: 19,
                    byte: 0x65
                }
            ),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(text.contains("0x65 at byte offset 19"), "{text}");
        assert!(text.contains("safe to skip"), "{text}");
    }
}
