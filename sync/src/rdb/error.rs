//! The closed set of errors the RDB parser and the DUMP codec return.
//!
//! Every variant that comes from the input names the byte offset where the
//! problem was found (offsets count from the first byte of the file, or of the
//! DUMP payload), so a corrupt file can be inspected with `xxd -s OFFSET`.
//!
//! How it fits: the parser, the byte layer, the compact decoders (through
//! [`BlobError`], placed at the blob's offset by the parser) and the DUMP codec
//! return these; the engine's retry classes decide what a sync does with them.
//! An error never carries a value's bytes (it may name a key or quote the
//! header), and a fault of the input is never a panic.

use std::io;

/// Why parsing or encoding an RDB stream or DUMP payload failed.
#[derive(Debug, thiserror::Error)]
pub enum RdbError {
    /// The underlying reader failed.
    #[error("I/O error at byte offset {offset}: {source}")]
    Io {
        /// Offset of the first byte that could not be read.
        offset: u64,
        /// The reader's error.
        #[source]
        source: io::Error,
    },
    /// The input ended in the middle of a structure.
    #[error("unexpected end of input at byte offset {offset} while reading {what}")]
    UnexpectedEof {
        /// Offset where more bytes were needed.
        offset: u64,
        /// What was being read.
        what: &'static str,
    },
    /// The first bytes are not `REDIS` followed by four digits.
    #[error("not an RDB file: the header is {found:?}, expected \"REDIS\" and a 4-digit version")]
    BadMagic {
        /// The header bytes, lossily decoded.
        found: String,
    },
    /// A version this parser does not know.
    #[error("unsupported RDB version {version} (this parser reads versions 1 to {max})")]
    UnsupportedVersion {
        /// The version in the header or the DUMP trailer.
        version: u32,
        /// The newest version this parser reads.
        max: u32,
    },
    /// A byte where an opcode or an object type was expected is neither.
    #[error("unknown opcode or object type 0x{byte:02x} at byte offset {offset}: neither a Redis record nor a vendor's record known to be safe to skip (its length is unknown, so nothing after it can be read; inspect it with `xxd -s {offset} -l 64`)")]
    UnknownType {
        /// Offset of the byte.
        offset: u64,
        /// The byte.
        byte: u8,
    },
    /// A length field is larger than the configured limit.
    #[error("{what} of {len} at byte offset {offset} exceeds the limit of {limit}")]
    LimitExceeded {
        /// Offset of the length field.
        offset: u64,
        /// What the length counts.
        what: &'static str,
        /// The length read.
        len: u64,
        /// The configured limit.
        limit: u64,
    },
    /// The bytes are not a valid encoding of the structure being read.
    #[error("corrupt {what} at byte offset {offset}: {detail}")]
    Corrupt {
        /// Offset of the structure (for an encoded blob: of the blob's length field).
        offset: u64,
        /// The structure.
        what: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// The checksum at the end does not match the bytes.
    #[error("CRC64 mismatch: the input says 0x{expected:016x}, the bytes give 0x{computed:016x}")]
    ChecksumMismatch {
        /// The checksum stored in the input.
        expected: u64,
        /// The checksum computed over the input.
        computed: u64,
    },
    /// A key holds a module value and the options say to reject those.
    #[error(
        "key {key:?} at byte offset {offset} holds a value of module type '{module_name}' \
         (module id 0x{module_id:016x}); load the module or parse with ModulePolicy::Keep"
    )]
    ModuleRejected {
        /// Offset of the object type byte.
        offset: u64,
        /// The key, lossily decoded.
        key: String,
        /// The 9-character module type name.
        module_name: String,
        /// The 64-bit module id (name and encoding version).
        module_id: u64,
    },
    /// A construct that exists but is deliberately not supported.
    #[error("unsupported {what} at byte offset {offset}")]
    Unsupported {
        /// Offset of the construct.
        offset: u64,
        /// The construct.
        what: &'static str,
    },
    /// A value cannot be encoded for the requested target.
    #[error("cannot encode {what}: {detail}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// Why it cannot be.
        detail: String,
    },
}

impl RdbError {
    /// The byte offset the error points at, when it has one.
    pub fn offset(&self) -> Option<u64> {
        match self {
            RdbError::Io { offset, .. }
            | RdbError::UnexpectedEof { offset, .. }
            | RdbError::UnknownType { offset, .. }
            | RdbError::LimitExceeded { offset, .. }
            | RdbError::Corrupt { offset, .. }
            | RdbError::ModuleRejected { offset, .. }
            | RdbError::Unsupported { offset, .. } => Some(*offset),
            RdbError::BadMagic { .. } => Some(0),
            RdbError::UnsupportedVersion { .. }
            | RdbError::ChecksumMismatch { .. }
            | RdbError::Encode { .. } => None,
        }
    }
}

/// An error inside an encoded blob (ziplist, listpack, intset, zipmap, stream
/// listpack): the position is relative to the blob, and the parser turns it
/// into [`RdbError::Corrupt`] with the blob's file offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobError {
    /// The blob kind, e.g. "listpack".
    pub what: &'static str,
    /// Position inside the (decompressed) blob.
    pub at: usize,
    /// What is wrong.
    pub detail: String,
}

impl std::fmt::Display for BlobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "corrupt {} at byte {} of the blob: {}",
            self.what, self.at, self.detail
        )
    }
}

impl std::error::Error for BlobError {}

impl BlobError {
    pub(crate) fn new(what: &'static str, at: usize, detail: impl Into<String>) -> BlobError {
        BlobError {
            what,
            at,
            detail: detail.into(),
        }
    }

    pub(crate) fn into_rdb(self, blob_offset: u64) -> RdbError {
        RdbError::Corrupt {
            offset: blob_offset,
            what: self.what,
            detail: format!("{} (at byte {} of the blob)", self.detail, self.at),
        }
    }
}
