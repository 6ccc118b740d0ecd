//! The one reading of wall-clock time the sync makes: milliseconds since the Unix
//! epoch, as written into heartbeats, compared with the source's clock for the lag,
//! and used for the full copy's guard expiries. (Durations use `Instant`.)

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch on this machine's clock; 0 for a clock set
/// before 1970.
pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
