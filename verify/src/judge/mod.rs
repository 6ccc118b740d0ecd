//! What the answers of both sides mean: a difference, or none.
//!
//! Pure functions of plain data (heads, values, lengths, digests, TTLs as read, the
//! quiet states): no I/O, so every rule is unit-tested. It must never read either
//! side, and never call "equal" what it could not compare.
