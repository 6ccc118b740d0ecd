//! SCAN as a stream of batches of wanted keys, at most `keys_per_second` a second.
//!
//! It only reads key names; it must never read a value.

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::stream::{self, Stream};

use crate::read::side::Conn;
use crate::walk::context::Ctx;

/// A batch of wanted keys and how many keys SCAN returned for it.
pub(crate) struct Batch {
    pub(crate) scanned: u64,
    pub(crate) keys: Vec<Vec<u8>>,
}

/// Batches of wanted keys for which `chosen` holds, SCAN by SCAN; on the target
/// (`on_target`), keys are judged by their source names ([`Ctx::target_wanted`]).
/// When one glob is the only include rule, SCAN names only keys it matches
/// ([`Ctx::scan_match`]); when the type filters keep one type, only keys of it
/// ([`Ctx::scan_type`]; a target key of another type under a kept source key's name
/// is still found, as a type difference, by the source pass).
pub(crate) fn scan<'a>(
    ctx: &'a Ctx,
    conn: Conn,
    on_target: bool,
    limiter: Limiter,
    chosen: &'a (dyn Fn(&[u8]) -> bool + Sync),
) -> impl Stream<Item = anyhow::Result<Batch>> + 'a {
    let state = (conn, limiter, Some(0u64));
    stream::try_unfold(state, move |(mut conn, mut limiter, cursor)| async move {
        let Some(cursor) = cursor else {
            return Ok(None);
        };
        let mut command = redis::cmd("SCAN");
        command
            .arg(cursor)
            .arg("COUNT")
            .arg(ctx.options.batch_keys.max(1));
        if let Some(glob) = ctx.scan_match(on_target) {
            command.arg("MATCH").arg(glob);
        }
        if let Some(kind) = ctx.scan_type() {
            command.arg("TYPE").arg(kind);
        }
        let (next, keys): (u64, Vec<Vec<u8>>) =
            command.query_async(&mut conn).await.context("SCAN")?;
        let scanned = keys.len() as u64;
        let keys: Vec<Vec<u8>> = keys
            .into_iter()
            .filter(|k| {
                let wanted = if on_target {
                    ctx.target_wanted(k)
                } else {
                    ctx.wanted(k)
                };
                wanted && chosen(k)
            })
            .collect();
        limiter.take(keys.len()).await;
        let cursor = (next != 0).then_some(next);
        Ok(Some((Batch { scanned, keys }, (conn, limiter, cursor))))
    })
}

/// At most `per_second` keys a second, in reservations of one batch.
pub(crate) struct Limiter {
    pub(crate) per_second: Option<u64>,
    pub(crate) next: Instant,
}

impl Limiter {
    pub(crate) fn new(per_second: Option<u64>) -> Limiter {
        Limiter {
            per_second: per_second.filter(|r| *r > 0),
            next: Instant::now(),
        }
    }

    pub(crate) async fn take(&mut self, keys: usize) {
        let Some(rate) = self.per_second else {
            return;
        };
        let at = self.next.max(Instant::now());
        self.next = at + Duration::from_secs_f64(keys as f64 / rate as f64);
        tokio::time::sleep_until(at.into()).await;
    }
}
