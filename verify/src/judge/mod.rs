//! What the answers of both sides mean: a difference, or none.
//!
//! Pure functions of plain data (heads, values, lengths, digests, TTLs as read, the
//! quiet states): no I/O, so every rule is unit-tested. It must never read either
//! side, and never call "equal" what it could not compare.
//! - [`key`]: on both sides, and of the same type? (missing, extra, type)
//! - [`value`]: are two values equal? (strings, long strings, lengths, DUMP payloads,
//!   digests, reply errors during a read)
//! - [`ttl`]: do two expiries agree, and does an expiry excuse a difference?
//! - [`counts`]: do counts prove the target holds no extra key?

pub(crate) mod counts;
pub(crate) mod key;
pub(crate) mod ttl;
pub(crate) mod value;
