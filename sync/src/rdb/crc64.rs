//! CRC64 as Redis computes it over RDB files and DUMP payloads.
//!
//! Jones polynomial 0xad93d23594c935a9, reflected in and out, init 0, no final
//! xor (the `crc` crate's `CRC_64_REDIS`). The check value for "123456789" is
//! 0xe9c6d914c4b8d9ca. We use the crate's slicing-by-16 tables: measured in
//! `benches/rdb_parse.rs` (see docs/benchmarks.md), it runs at several GB/s,
//! far above what the parser needs.

use crc::{Crc, Digest, Table, CRC_64_REDIS};

static CRC64: Crc<u64, Table<16>> = Crc::<u64, Table<16>>::new(&CRC_64_REDIS);

/// An incremental CRC64 (Redis flavour).
#[derive(Clone)]
pub struct Crc64 {
    digest: Digest<'static, u64, Table<16>>,
}

impl Crc64 {
    /// A fresh checksum (of zero bytes).
    pub fn new() -> Crc64 {
        Crc64 {
            digest: CRC64.digest(),
        }
    }

    /// Feeds `bytes`.
    #[inline]
    pub fn update(&mut self, bytes: &[u8]) {
        self.digest.update(bytes);
    }

    /// The checksum of everything fed so far.
    pub fn value(&self) -> u64 {
        self.digest.clone().finalize()
    }
}

impl Default for Crc64 {
    fn default() -> Self {
        Crc64::new()
    }
}

/// The checksum of `bytes` in one call.
pub fn crc64(bytes: &[u8]) -> u64 {
    CRC64.checksum(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_value() {
        assert_eq!(crc64(b"123456789"), 0xe9c6d914c4b8d9ca);
    }

    #[test]
    fn incremental_equals_one_shot() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        let mut c = Crc64::new();
        for chunk in data.chunks(37) {
            c.update(chunk);
        }
        assert_eq!(c.value(), crc64(&data));
    }
}
