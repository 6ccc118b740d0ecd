//! Strings read in bounded pieces, so that a string of any length is compared without
//! being held whole on either side.
//!
//! The first read of a batch ([`crate::read::first`]) asks each key for
//! `GETRANGE key 0 limit` (`limit` = [`crate::options::CompareOptions::long_string_bytes`]): in
//! the same pipeline, at the price of one command per key instead of one MGET element,
//! it yields the whole value of every string up to `limit` bytes and tells a longer
//! one by its reply of `limit + 1` bytes, without a round trip more (a STRLEN first
//! would cost one per batch, and a key lookup more per key). A long string is then
//! compared by [`compare_windows`]: `STRLEN` on both sides, then `GETRANGE` windows of
//! `limit` bytes, side by side, up to the first window that differs. Memory stays at
//! two windows per long string being compared, plus a batch's first reads
//! (`batch_keys` × (`limit` + 1) bytes per side at worst).
//!
//! A string that changes during a windowed read reads as a difference, which a later
//! round reads again (as for collections).

use redis::aio::ConnectionLike;

/// How a long string compares (`key` on the source, `target_key` on the target, the
/// same name unless renamed): None when equal, else a short hint.
pub async fn compare_windows(
    src: &mut (impl ConnectionLike + Send),
    dst: &mut (impl ConnectionLike + Send),
    key: &[u8],
    target_key: &[u8],
    window: usize,
) -> redis::RedisResult<Option<String>> {
    let window = window.max(1);
    let strlen = redis::cmd("STRLEN").arg(key).clone();
    let target_strlen = redis::cmd("STRLEN").arg(target_key).clone();
    let (a, b): (u64, u64) =
        futures::try_join!(strlen.query_async(src), target_strlen.query_async(dst))?;
    if a != b {
        return Ok(Some(format!("source {a} bytes, target {b}")));
    }
    let mut start = 0u64;
    while start < a {
        let end = start.saturating_add(window as u64 - 1);
        let range = redis::cmd("GETRANGE").arg(key).arg(start).arg(end).clone();
        let target_range = redis::cmd("GETRANGE")
            .arg(target_key)
            .arg(start)
            .arg(end)
            .clone();
        let (x, y): (Vec<u8>, Vec<u8>) =
            futures::try_join!(range.query_async(src), target_range.query_async(dst))?;
        if x != y {
            return Ok(Some(format!(
                "{a} bytes on both sides, different bytes in {start}..={end}"
            )));
        }
        if x.is_empty() {
            // Shorter than STRLEN said: changed during the read.
            return Ok(Some(format!(
                "{a} bytes on both sides, changed during the read at byte {start}"
            )));
        }
        start += x.len() as u64;
    }
    Ok(None)
}
