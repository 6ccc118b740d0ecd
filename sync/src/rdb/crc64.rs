//! CRC64 as Redis computes it over RDB files and DUMP payloads.
//!
//! Jones polynomial 0xad93d23594c935a9, reflected in and out, init 0, no final
//! xor (the catalogue's CRC-64/REDIS). The check value for "123456789" is
//! 0xe9c6d914c4b8d9ca.
//!
//! Two implementations, chosen at run time:
//! - x86_64 with PCLMULQDQ: carry-less multiplication folds the input 16 bytes
//!   at a time into a 128-bit remainder; the remainder and the tail (under 16
//!   bytes) then go through the table code. Folding works because a reflected
//!   CRC with init 0 is linear: a prefix can be replaced by any 128-bit value
//!   congruent to it modulo the polynomial at the same position.
//! - everywhere: slicing-by-8 tables built at compile time.
//!
//! With init 0, a running state `c` is the same as xoring `c` into the next 8
//! message bytes, which is how the folding path continues a running CRC.
//! Measured in `benches/rdb_parse.rs` (docs/benchmarks.md).
//!
//! How it fits: the parser's byte layer (`reader`) feeds it every byte of an RDB
//! before the EOF opcode and compares at the end; the DUMP codec checks and signs
//! payloads with it. It must never give another value than Redis's CRC64 for any
//! input or split of the input (tests: the check value, the `crc` crate at every
//! length, incremental equals one shot).

/// The polynomial, normal (MSB-first) form.
const POLY: u64 = 0xad93_d235_94c9_35a9;
/// The polynomial, reflected.
const POLY_REFLECTED: u64 = POLY.reverse_bits();

const fn make_tables() -> [[u64; 256]; 8] {
    let mut t = [[0u64; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u64;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 == 1 {
                (c >> 1) ^ POLY_REFLECTED
            } else {
                c >> 1
            };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut s = 1;
    while s < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = t[s - 1][i];
            t[s][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            i += 1;
        }
        s += 1;
    }
    t
}

static TABLES: [[u64; 256]; 8] = make_tables();

/// Slicing-by-8 update of a running CRC.
fn update_table(mut crc: u64, data: &[u8]) -> u64 {
    let t = &TABLES;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let v = crc ^ u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        crc = t[7][(v & 0xff) as usize]
            ^ t[6][((v >> 8) & 0xff) as usize]
            ^ t[5][((v >> 16) & 0xff) as usize]
            ^ t[4][((v >> 24) & 0xff) as usize]
            ^ t[3][((v >> 32) & 0xff) as usize]
            ^ t[2][((v >> 40) & 0xff) as usize]
            ^ t[1][((v >> 48) & 0xff) as usize]
            ^ t[0][(v >> 56) as usize];
    }
    for &b in chunks.remainder() {
        crc = t[0][((crc ^ b as u64) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

/// x^n mod P, in the reflected form the folding multiplies by.
const fn fold_constant(n: u32) -> u64 {
    let mut r: u64 = 1;
    let mut i = 0;
    while i < n {
        let carry = r >> 63;
        r <<= 1;
        if carry == 1 {
            r ^= POLY;
        }
        i += 1;
    }
    r.reverse_bits()
}

#[cfg(target_arch = "x86_64")]
mod clmul {
    use super::{fold_constant, update_table};
    use std::arch::x86_64::*;

    /// For the first 8 bytes of a 16-byte lane (higher degree): x^(128+64-1).
    const K_HIGH: u64 = fold_constant(191);
    /// For the last 8 bytes: x^(128-1). The -1: a carry-less product of two
    /// reflected 64-bit values lands one bit lower than the polynomial product.
    const K_LOW: u64 = fold_constant(127);

    pub(super) fn available() -> bool {
        std::is_x86_feature_detected!("pclmulqdq") && std::is_x86_feature_detected!("sse2")
    }

    /// Folding by 64 bytes (four independent lanes, to hide the multiply latency).
    const K4_HIGH: u64 = fold_constant(512 + 64 - 1);
    const K4_LOW: u64 = fold_constant(512 - 1);

    /// # Safety
    /// The CPU must support PCLMULQDQ and SSE2 (see [`available`]), and
    /// `data.len() >= 32`.
    #[target_feature(enable = "pclmulqdq,sse2")]
    pub(super) unsafe fn update(crc: u64, data: &[u8]) -> u64 {
        debug_assert!(data.len() >= 32);
        // SAFETY: every caller passes an index whose 16 bytes lie inside `data`.
        let load =
            |i: usize| unsafe { _mm_loadu_si128(data.as_ptr().add(i * 16) as *const __m128i) };
        let fold = |x: __m128i, k: __m128i, next: __m128i| {
            let a = _mm_clmulepi64_si128(x, k, 0x00);
            let b = _mm_clmulepi64_si128(x, k, 0x11);
            _mm_xor_si128(_mm_xor_si128(a, b), next)
        };
        let init = _mm_set_epi64x(0, crc as i64);
        if data.len() >= 128 {
            // Four lanes over 64-byte groups; the lanes, stored in order, are a
            // 64-byte value congruent to the groups folded so far.
            let k4 = _mm_set_epi64x(K4_LOW as i64, K4_HIGH as i64);
            let groups = data.len() / 64;
            let mut x = [_mm_xor_si128(load(0), init), load(1), load(2), load(3)];
            for g in 1..groups {
                for (lane, xl) in x.iter_mut().enumerate() {
                    *xl = fold(*xl, k4, load(g * 4 + lane));
                }
            }
            let mut rem = [0u8; 64];
            for (lane, xl) in x.iter().enumerate() {
                // SAFETY: 16 writable bytes at lane * 16 inside `rem`.
                unsafe { _mm_storeu_si128(rem.as_mut_ptr().add(lane * 16) as *mut __m128i, *xl) };
            }
            // SAFETY: same CPU features; rem is 64 bytes.
            let c = unsafe { update(0, &rem) };
            return update_table(c, &data[groups * 64..]);
        }
        let k = _mm_set_epi64x(K_LOW as i64, K_HIGH as i64);
        let blocks = data.len() / 16;
        let mut x = _mm_xor_si128(load(0), init);
        for i in 1..blocks {
            x = fold(x, k, load(i));
        }
        let mut rem = [0u8; 16];
        // SAFETY: `rem` is 16 writable bytes.
        unsafe { _mm_storeu_si128(rem.as_mut_ptr() as *mut __m128i, x) };
        let c = update_table(0, &rem);
        update_table(c, &data[blocks * 16..])
    }
}

fn update_any(crc: u64, data: &[u8]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static HAS_CLMUL: OnceLock<bool> = OnceLock::new();
        if data.len() >= 64 && *HAS_CLMUL.get_or_init(clmul::available) {
            // SAFETY: the CPU supports the instructions and data.len() >= 32.
            return unsafe { clmul::update(crc, data) };
        }
    }
    update_table(crc, data)
}

/// An incremental CRC64 (Redis flavour).
#[derive(Clone, Debug, Default)]
pub struct Crc64 {
    state: u64,
}

impl Crc64 {
    /// A fresh checksum (of zero bytes).
    pub fn new() -> Crc64 {
        Crc64 { state: 0 }
    }

    /// Feeds `bytes`.
    #[inline]
    pub fn update(&mut self, bytes: &[u8]) {
        self.state = update_any(self.state, bytes);
    }

    /// The checksum of everything fed so far.
    pub fn value(&self) -> u64 {
        self.state
    }
}

/// The checksum of `bytes` in one call.
pub fn crc64(bytes: &[u8]) -> u64 {
    update_any(0, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crc::{Crc, CRC_64_REDIS};

    const REFERENCE: Crc<u64> = Crc::<u64>::new(&CRC_64_REDIS);

    fn data(n: usize) -> Vec<u8> {
        (0..n as u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect()
    }

    #[test]
    fn check_value() {
        assert_eq!(crc64(b"123456789"), 0xe9c6d914c4b8d9ca);
        assert_eq!(update_table(0, b"123456789"), 0xe9c6d914c4b8d9ca);
    }

    #[test]
    fn equals_the_crc_crate_at_every_length() {
        let d = data(5000);
        for n in (0..300).chain([1000, 1023, 1024, 1025, 4096, 4999]) {
            assert_eq!(crc64(&d[..n]), REFERENCE.checksum(&d[..n]), "length {n}");
        }
    }

    #[test]
    fn incremental_equals_one_shot() {
        let d = data(100_000);
        for step in [1, 7, 16, 37, 64, 100, 4096, 65536] {
            let mut c = Crc64::new();
            for chunk in d.chunks(step) {
                c.update(chunk);
            }
            assert_eq!(c.value(), REFERENCE.checksum(&d), "step {step}");
        }
    }
}
