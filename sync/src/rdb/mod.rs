//! RDB: the snapshot format a primary sends a replica, and DUMP payloads.
//!
//! # Layout
//! - [`parser`]: the streaming pull parser ([`RdbParser`]): header, aux
//!   fields, databases, functions, module aux, slot info, and per key a
//!   `KeyStart` / `Elements`* / `KeyEnd` sequence with bounded batches.
//! - [`value`]: the lossless value model ([`Value`], [`Elements`], [`KeyMeta`],
//!   [`RdbType`]) shared by the parser and the DUMP codec.
//! - [`dump`]: DUMP/RESTORE payloads: decode one, encode a value for a chosen
//!   target RDB version.
//! - `reader` (private): the byte layer: offsets, lengths, strings, LZF,
//!   CRC feeding, raw capture. [`writer`]: the same primitives, encoding.
//! - `compact` (private): a value stored as one blob turned into one batch.
//! - Compact encodings, each a decoder and an encoder: [`ziplist`],
//!   [`listpack`], [`intset`], [`zipmap`], and [`stream`] nodes.
//! - [`crc64`]: Redis's CRC64. [`lzf`]: LZF decompression.
//!
//! # Invariants
//! - No input can make the parser panic or allocate more than the input
//!   holds plus the configured [`Limits`]; every failure is an [`RdbError`]
//!   naming the byte offset.
//! - The parser never holds a whole key: see [`parser`] for the batch bound.

mod compact;
pub mod crc64;
pub mod dump;
pub mod elem;
pub mod error;
pub mod intset;
pub mod listpack;
pub mod lzf;
pub mod parser;
mod reader;
pub mod stream;
pub mod value;
pub mod writer;
pub mod ziplist;
pub mod zipmap;

pub use dump::{decode_dump, encode_dump, DumpOptions};
pub use error::RdbError;
pub use parser::{
    parse_all, Event, Item, Limits, ModulePolicy, ParseOptions, RdbParser, SkippedRecords,
    SKIPPABLE_OPCODES,
};
pub use value::{
    Consumer, Elements, HashField, Key, KeyMeta, Kind, ModuleValue, PendingEntry, RdbType, Stream,
    StreamEntry, StreamGroup, StreamId, StreamMeta, Value,
};

/// The newest RDB version this parser reads (Redis 7.4 to 8.2 write 12).
pub const RDB_VERSION_MAX: u32 = 12;
