//! The value model: what a key holds, losslessly, and the batches in which the
//! parser hands large values out.
//!
//! Keys, members, fields and values are bytes (Redis strings are binary). An
//! integer-encoded element (intset, ziplist/listpack integers, int-encoded RDB
//! strings) is given as its decimal string, which is what a client sees; the
//! storage encoding is still known from [`RdbType`]. Scores are `f64`
//! including the infinities (and NaN, which only old type-3 zsets can spell).
//!
//! How it fits: the parser produces it, the DUMP codec reads and writes it, the
//! full copy (`load.rs`) turns batches into commands, and `lockstep rdb inspect`
//! prints it. It holds data only: no I/O, and it must never lose a byte, an
//! encoding or a TTL that the file held.

use std::fmt;

/// An RDB object type byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum RdbType {
    /// 0: a string (raw, int-encoded or LZF).
    String = 0,
    /// 1: a linked list.
    List = 1,
    /// 2: a hashtable set.
    Set = 2,
    /// 3: a skiplist zset with string-encoded scores.
    ZSet = 3,
    /// 4: a hashtable hash.
    Hash = 4,
    /// 5: a skiplist zset with binary scores (RDB 8+).
    ZSet2 = 5,
    /// 6: a module value from a 4.0 release candidate (rejected).
    ModulePreGa = 6,
    /// 7: a module value with annotated payload.
    Module2 = 7,
    /// 9: a hash as zipmap (Redis < 2.6).
    HashZipmap = 9,
    /// 10: a list as ziplist (Redis < 3.2).
    ListZiplist = 10,
    /// 11: a set of integers as intset.
    SetIntset = 11,
    /// 12: a zset as ziplist (Redis < 7.0).
    ZSetZiplist = 12,
    /// 13: a hash as ziplist (Redis < 7.0).
    HashZiplist = 13,
    /// 14: a list as quicklist of ziplists (Redis 3.2-6.2).
    ListQuicklist = 14,
    /// 15: a stream (Redis 5.0-6.2).
    StreamListpacks = 15,
    /// 16: a hash as listpack (7.0+).
    HashListpack = 16,
    /// 17: a zset as listpack (7.0+).
    ZSetListpack = 17,
    /// 18: a list as quicklist of listpacks or plain nodes (7.0+).
    ListQuicklist2 = 18,
    /// 19: a stream with first id, max deleted id, entries added (7.0).
    StreamListpacks2 = 19,
    /// 20: a set as listpack (7.2+).
    SetListpack = 20,
    /// 21: a stream whose consumers have an active time (7.2+).
    StreamListpacks3 = 21,
    /// 22: a hash with field TTLs, absolute (7.4 RC).
    HashMetadataPreGa = 22,
    /// 23: a listpack hash with field TTLs, no min expire prefix (7.4 RC).
    HashListpackExPreGa = 23,
    /// 24: a hash with field TTLs relative to a min expire (7.4+).
    HashMetadata = 24,
    /// 25: a listpack hash with field TTLs (7.4+).
    HashListpackEx = 25,
}

/// The data type a client sees (`TYPE key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// string
    String,
    /// list
    List,
    /// set
    Set,
    /// zset
    ZSet,
    /// hash
    Hash,
    /// stream
    Stream,
    /// a module type
    Module,
}

impl Kind {
    /// The name `TYPE` returns (modules: "module").
    pub fn name(self) -> &'static str {
        match self {
            Kind::String => "string",
            Kind::List => "list",
            Kind::Set => "set",
            Kind::ZSet => "zset",
            Kind::Hash => "hash",
            Kind::Stream => "stream",
            Kind::Module => "module",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl RdbType {
    /// The type for a byte, or None for an opcode or unknown byte.
    pub fn from_u8(b: u8) -> Option<RdbType> {
        use RdbType::*;
        Some(match b {
            0 => String,
            1 => List,
            2 => Set,
            3 => ZSet,
            4 => Hash,
            5 => ZSet2,
            6 => ModulePreGa,
            7 => Module2,
            9 => HashZipmap,
            10 => ListZiplist,
            11 => SetIntset,
            12 => ZSetZiplist,
            13 => HashZiplist,
            14 => ListQuicklist,
            15 => StreamListpacks,
            16 => HashListpack,
            17 => ZSetListpack,
            18 => ListQuicklist2,
            19 => StreamListpacks2,
            20 => SetListpack,
            21 => StreamListpacks3,
            22 => HashMetadataPreGa,
            23 => HashListpackExPreGa,
            24 => HashMetadata,
            25 => HashListpackEx,
            _ => return None,
        })
    }

    /// The byte.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// The client-visible data type.
    pub fn kind(self) -> Kind {
        use RdbType::*;
        match self {
            String => Kind::String,
            List | ListZiplist | ListQuicklist | ListQuicklist2 => Kind::List,
            Set | SetIntset | SetListpack => Kind::Set,
            ZSet | ZSet2 | ZSetZiplist | ZSetListpack => Kind::ZSet,
            Hash | HashZipmap | HashZiplist | HashListpack | HashMetadataPreGa
            | HashListpackExPreGa | HashMetadata | HashListpackEx => Kind::Hash,
            StreamListpacks | StreamListpacks2 | StreamListpacks3 => Kind::Stream,
            ModulePreGa | Module2 => Kind::Module,
        }
    }

    /// The storage encoding, in the words `OBJECT ENCODING` uses where it can.
    pub fn encoding_name(self) -> &'static str {
        use RdbType::*;
        match self {
            String => "string",
            List => "linkedlist",
            Set => "hashtable",
            ZSet | ZSet2 => "skiplist",
            Hash => "hashtable",
            ModulePreGa | Module2 => "module",
            HashZipmap => "zipmap",
            ListZiplist | ZSetZiplist | HashZiplist => "ziplist",
            SetIntset => "intset",
            ListQuicklist | ListQuicklist2 => "quicklist",
            StreamListpacks | StreamListpacks2 | StreamListpacks3 => "stream",
            HashListpack | ZSetListpack | SetListpack => "listpack",
            HashMetadataPreGa | HashMetadata => "hashtable-ttl",
            HashListpackExPreGa | HashListpackEx => "listpackex",
        }
    }

    /// The first RDB version that can hold this type (what RESTORE of a raw
    /// payload needs).
    pub fn min_rdb_version(self) -> u16 {
        use RdbType::*;
        match self {
            String | List | Set | ZSet | Hash => 1,
            HashZipmap | ListZiplist | SetIntset | ZSetZiplist | HashZiplist => 4,
            ListQuicklist => 7,
            ZSet2 | ModulePreGa | Module2 => 8,
            StreamListpacks => 9,
            HashListpack | ZSetListpack | ListQuicklist2 | StreamListpacks2 => 10,
            SetListpack | StreamListpacks3 => 11,
            HashMetadataPreGa | HashListpackExPreGa | HashMetadata | HashListpackEx => 12,
        }
    }
}

/// A stream entry ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct StreamId {
    /// Milliseconds part.
    pub ms: u64,
    /// Sequence part.
    pub seq: u64,
}

impl StreamId {
    /// From the 16-byte big-endian form used in rax keys and PELs.
    pub fn from_be_bytes(b: [u8; 16]) -> StreamId {
        let mut ms = [0u8; 8];
        let mut seq = [0u8; 8];
        ms.copy_from_slice(&b[..8]);
        seq.copy_from_slice(&b[8..]);
        StreamId {
            ms: u64::from_be_bytes(ms),
            seq: u64::from_be_bytes(seq),
        }
    }

    /// The 16-byte big-endian form.
    pub fn to_be_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.ms.to_be_bytes());
        b[8..].copy_from_slice(&self.seq.to_be_bytes());
        b
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// One stream entry (deleted entries are not reported).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEntry {
    /// The entry ID.
    pub id: StreamId,
    /// Field-value pairs in order.
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Stream-wide metadata, stored after the entries.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamMeta {
    /// Number of live entries (XLEN).
    pub length: u64,
    /// The last ID ever generated.
    pub last_id: StreamId,
    /// First entry ID (RDB type 19+; None in type 15).
    pub first_id: Option<StreamId>,
    /// Largest deleted ID (type 19+).
    pub max_deleted_id: Option<StreamId>,
    /// Entries ever added (type 19+).
    pub entries_added: Option<u64>,
}

/// A pending entry of a consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingEntry {
    /// The entry.
    pub id: StreamId,
    /// Last delivery, Unix ms.
    pub delivery_time_ms: u64,
    /// Number of deliveries.
    pub delivery_count: u64,
}

/// A consumer of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumer {
    /// Name.
    pub name: Vec<u8>,
    /// Last time seen, Unix ms.
    pub seen_time_ms: u64,
    /// Last successful interaction, Unix ms (type 21+).
    pub active_time_ms: Option<u64>,
    /// IDs this consumer owns in the group PEL.
    pub pending: Vec<StreamId>,
}

/// A consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamGroup {
    /// Name.
    pub name: Vec<u8>,
    /// Last delivered ID.
    pub last_id: StreamId,
    /// Entries read (type 19+), raw: u64::MAX is Redis's "invalid" (-1).
    pub entries_read: Option<u64>,
    /// The group's pending entries list.
    pub pel: Vec<PendingEntry>,
    /// The consumers.
    pub consumers: Vec<Consumer>,
}

/// A whole stream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Stream {
    /// Live entries in ID order.
    pub entries: Vec<StreamEntry>,
    /// Metadata.
    pub meta: StreamMeta,
    /// Consumer groups.
    pub groups: Vec<StreamGroup>,
}

/// A hash field, with its TTL when it has one (Redis 7.4+).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashField {
    /// Field.
    pub field: Vec<u8>,
    /// Value.
    pub value: Vec<u8>,
    /// Absolute expiry, Unix ms.
    pub expire_ms: Option<u64>,
}

/// A module value, kept opaque.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleValue {
    /// The 64-bit id: 9 characters of 6 bits, then a 10-bit encoding version.
    pub module_id: u64,
    /// The 9-character type name from the id.
    pub name: String,
    /// The encoding version from the id.
    pub encver: u16,
    /// The annotated payload after the id, through its EOF opcode (0),
    /// re-serialized canonically (what `RESTORE` would need after the id).
    pub raw: Vec<u8>,
}

const MODULE_CHARSET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// The 9-character type name in a module id.
pub fn module_name(module_id: u64) -> String {
    let mut id = module_id >> 10;
    let mut name = [0u8; 9];
    for slot in name.iter_mut().rev() {
        *slot = MODULE_CHARSET[(id & 63) as usize];
        id >>= 6;
    }
    String::from_utf8_lossy(&name).into_owned()
}

/// A batch of a key's elements. A key's value arrives as zero or more batches
/// of its kind; concatenated (see [`Value::extend`]) they are the value.
#[derive(Debug, Clone, PartialEq)]
pub enum Elements {
    /// A whole string.
    String(Vec<u8>),
    /// A piece of a string longer than a batch: `bytes` at `offset` of a string
    /// of `total_len` bytes. The pieces of a value come in order, without gaps.
    StringPiece {
        /// Where in the string the piece starts.
        offset: u64,
        /// The whole string's length.
        total_len: u64,
        /// The piece.
        bytes: Vec<u8>,
    },
    /// List elements, head to tail.
    List(Vec<Vec<u8>>),
    /// Set members.
    Set(Vec<Vec<u8>>),
    /// Zset members and scores (in storage order).
    ZSet(Vec<(Vec<u8>, f64)>),
    /// Hash fields.
    Hash(Vec<HashField>),
    /// Stream entries (one node's worth).
    StreamEntries(Vec<StreamEntry>),
    /// Stream metadata (exactly once per stream, after the entries). Boxed,
    /// as are the other rare large variants, to keep `Elements` (and every
    /// event moved per key) small.
    StreamMeta(Box<StreamMeta>),
    /// One consumer group (after the metadata).
    StreamGroup(Box<StreamGroup>),
    /// A whole module value.
    Module(Box<ModuleValue>),
}

impl Elements {
    /// Number of elements in the batch (pairs count once).
    pub fn len(&self) -> usize {
        match self {
            Elements::String(_)
            | Elements::StringPiece { .. }
            | Elements::StreamMeta(_)
            | Elements::StreamGroup(_)
            | Elements::Module(_) => 1,
            Elements::List(v) | Elements::Set(v) => v.len(),
            Elements::ZSet(v) => v.len(),
            Elements::Hash(v) => v.len(),
            Elements::StreamEntries(v) => v.len(),
        }
    }

    /// True when the batch has no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A whole value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// string
    String(Vec<u8>),
    /// list, head to tail
    List(Vec<Vec<u8>>),
    /// set
    Set(Vec<Vec<u8>>),
    /// zset as stored (order not guaranteed sorted for hashtable-era files)
    ZSet(Vec<(Vec<u8>, f64)>),
    /// hash
    Hash(Vec<HashField>),
    /// stream
    Stream(Box<Stream>),
    /// module value
    Module(ModuleValue),
}

impl Value {
    /// An empty value of a kind (what batches are appended to).
    pub fn empty(kind: Kind) -> Value {
        match kind {
            Kind::String => Value::String(Vec::new()),
            Kind::List => Value::List(Vec::new()),
            Kind::Set => Value::Set(Vec::new()),
            Kind::ZSet => Value::ZSet(Vec::new()),
            Kind::Hash => Value::Hash(Vec::new()),
            Kind::Stream => Value::Stream(Box::default()),
            Kind::Module => Value::Module(ModuleValue {
                module_id: 0,
                name: String::new(),
                encver: 0,
                raw: Vec::new(),
            }),
        }
    }

    /// The kind.
    pub fn kind(&self) -> Kind {
        match self {
            Value::String(_) => Kind::String,
            Value::List(_) => Kind::List,
            Value::Set(_) => Kind::Set,
            Value::ZSet(_) => Kind::ZSet,
            Value::Hash(_) => Kind::Hash,
            Value::Stream(_) => Kind::Stream,
            Value::Module(_) => Kind::Module,
        }
    }

    /// Appends a batch. Returns the batch back if it is of another kind.
    pub fn extend(&mut self, batch: Elements) -> Result<(), Elements> {
        match (self, batch) {
            (Value::String(s), Elements::String(b))
            | (Value::String(s), Elements::StringPiece { bytes: b, .. }) => {
                if s.is_empty() {
                    *s = b;
                } else {
                    s.extend_from_slice(&b);
                }
            }
            (Value::List(v), Elements::List(b)) | (Value::Set(v), Elements::Set(b)) => {
                if v.is_empty() {
                    *v = b;
                } else {
                    v.extend(b);
                }
            }
            (Value::ZSet(v), Elements::ZSet(b)) => v.extend(b),
            (Value::Hash(v), Elements::Hash(b)) => v.extend(b),
            (Value::Stream(s), Elements::StreamEntries(b)) => s.entries.extend(b),
            (Value::Stream(s), Elements::StreamMeta(m)) => s.meta = *m,
            (Value::Stream(s), Elements::StreamGroup(g)) => s.groups.push(*g),
            (Value::Module(m), Elements::Module(b)) => *m = *b,
            (_, b) => return Err(b),
        }
        Ok(())
    }

    /// Number of top-level elements (string: 1; stream: entries).
    pub fn len(&self) -> usize {
        match self {
            Value::String(_) | Value::Module(_) => 1,
            Value::List(v) | Value::Set(v) => v.len(),
            Value::ZSet(v) => v.len(),
            Value::Hash(v) => v.len(),
            Value::Stream(s) => s.entries.len(),
        }
    }

    /// True when a collection has no element (Redis drops such keys).
    pub fn is_empty(&self) -> bool {
        match self {
            Value::String(_) | Value::Module(_) | Value::Stream(_) => false,
            _ => self.len() == 0,
        }
    }
}

/// Everything known about a key before its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMeta {
    /// Database number (from the last SELECTDB; 0 before any).
    pub db: u64,
    /// The key.
    pub key: Vec<u8>,
    /// Object type byte, hence kind and encoding.
    pub rdb_type: RdbType,
    /// Absolute expiry, Unix ms (EXPIRETIME seconds are converted).
    pub expire_ms: Option<i64>,
    /// LRU idle time, seconds (RDB 9+, with an LRU maxmemory policy).
    pub lru_idle_secs: Option<u64>,
    /// LFU frequency counter (RDB 9+, with an LFU maxmemory policy).
    pub lfu_freq: Option<u8>,
    /// Byte offset of the object type byte.
    pub offset: u64,
}

/// A key with its whole value.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    /// Metadata.
    pub meta: KeyMeta,
    /// The value.
    pub value: Value,
    /// Raw object bytes (type byte + body) when capture was on and fit its limit.
    pub raw: Option<Vec<u8>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_bytes_round_trip() {
        for b in 0..=255u8 {
            if let Some(t) = RdbType::from_u8(b) {
                assert_eq!(t.as_u8(), b);
            }
        }
    }

    #[test]
    fn module_names() {
        // "ReJSON-RL" encver 3, as a module would register it.
        let name = b"ReJSON-RL";
        let mut id = 0u64;
        for c in name {
            let pos = MODULE_CHARSET
                .iter()
                .position(|x| x == c)
                .expect("in charset") as u64;
            id = (id << 6) | pos;
        }
        id = (id << 10) | 3;
        assert_eq!(module_name(id), "ReJSON-RL");
    }
}
