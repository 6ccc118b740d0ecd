//! The task's throttles (the DTS "throttling" options): keys/s and bytes/s written
//! during the full copy, commands/s and bytes/s during the incremental phase.
//!
//! Each limit is a token bucket that may run into debt: taking more tokens than
//! there are (one big key) is allowed and answered with how long to pause before the
//! next write, so a single item bigger than a second's worth never blocks forever.
//! The bucket holds at most 50 ms of tokens, so a burst after an idle spell is short
//! and the rate holds over any window of a second or more.
//!
//! The engine pauses *between* writes and flushes what it has buffered before it
//! pauses (the target sees a steady rate, not buffered bursts). During the pause the
//! link stays alive: in the incremental phase the engine stops reading the stream
//! but keeps answering with `REPLCONF ACK` every second; during the full copy the
//! source's socket simply fills (bytes keep moving at the throttled rate, which is
//! what keeps a replica link alive then). A throttle far below the source's write
//! rate makes the source's replica output buffer grow until its
//! `client-output-buffer-limit replica` drops the link; the next session then
//! resumes from the checkpoint (or copies again).
//! Bytes are counted as received from the source: RDB payload and key bytes in the
//! full copy, the command's wire bytes in the stream.

use std::time::{Duration, Instant};

/// Limits of the two phases; `None` is unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThrottleOptions {
    pub full_keys_per_sec: Option<u64>,
    pub full_bytes_per_sec: Option<u64>,
    pub incremental_commands_per_sec: Option<u64>,
    pub incremental_bytes_per_sec: Option<u64>,
}

impl ThrottleOptions {
    /// The full copy's throttle, if any limit is set.
    pub fn full(&self) -> Option<Throttle> {
        Throttle::new(self.full_keys_per_sec, self.full_bytes_per_sec)
    }

    /// The incremental phase's throttle, if any limit is set.
    pub fn incremental(&self) -> Option<Throttle> {
        Throttle::new(
            self.incremental_commands_per_sec,
            self.incremental_bytes_per_sec,
        )
    }
}

/// A rate limit that may run into debt (see the module doc).
#[derive(Clone, Debug)]
pub struct TokenBucket {
    per_sec: f64,
    capacity: f64,
    available: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A bucket of `per_sec` tokens a second (at least 1), full at `now`.
    pub fn new(per_sec: u64, now: Instant) -> TokenBucket {
        let per_sec = per_sec.max(1) as f64;
        let capacity = (per_sec / 20.0).max(1.0);
        TokenBucket {
            per_sec,
            capacity,
            available: capacity,
            updated: now,
        }
    }

    /// Takes `n` tokens at `now`; returns how long to wait before the next take.
    pub fn take(&mut self, n: u64, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.updated = now;
        self.available = (self.available + elapsed * self.per_sec).min(self.capacity);
        self.available -= n as f64;
        if self.available >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.available / self.per_sec)
        }
    }
}

/// An item rate and a byte rate together.
#[derive(Clone, Debug)]
pub struct Throttle {
    items: Option<TokenBucket>,
    bytes: Option<TokenBucket>,
}

impl Throttle {
    /// `None` when neither limit is set.
    pub fn new(items_per_sec: Option<u64>, bytes_per_sec: Option<u64>) -> Option<Throttle> {
        let now = Instant::now();
        let throttle = Throttle {
            items: items_per_sec.map(|r| TokenBucket::new(r, now)),
            bytes: bytes_per_sec.map(|r| TokenBucket::new(r, now)),
        };
        (throttle.items.is_some() || throttle.bytes.is_some()).then_some(throttle)
    }

    /// Counts `items` and `bytes` written now; returns how long to pause.
    pub fn take(&mut self, items: u64, bytes: u64) -> Duration {
        let now = Instant::now();
        let by_items = self
            .items
            .as_mut()
            .map_or(Duration::ZERO, |b| b.take(items, now));
        let by_bytes = self
            .bytes
            .as_mut()
            .map_or(Duration::ZERO, |b| b.take(bytes, now));
        by_items.max(by_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Simulates a writer that takes `n` tokens per write and pauses as told, for
    /// `seconds`; returns tokens taken per second.
    fn simulated_rate(per_sec: u64, n: u64, seconds: f64) -> f64 {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(per_sec, start);
        let mut now = start;
        let mut taken = 0u64;
        let end = start + Duration::from_secs_f64(seconds);
        while now < end {
            let wait = bucket.take(n, now);
            taken += n;
            // A write takes 10 µs.
            now += wait + Duration::from_micros(10);
        }
        taken as f64 / seconds
    }

    #[test]
    fn the_rate_holds_for_small_and_big_items() {
        for (rate, n) in [(1000, 1), (50, 1), (1_000_000, 700), (1_000_000, 100_000)] {
            let got = simulated_rate(rate, n, 20.0);
            let error = (got - rate as f64).abs() / rate as f64;
            assert!(
                error < 0.06,
                "rate {rate} with items of {n}: got {got:.1}/s"
            );
        }
    }

    #[test]
    fn an_idle_spell_gives_only_a_short_burst() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(1000, start);
        let later = start + Duration::from_secs(60);
        let free = (0..1000)
            .take_while(|_| bucket.take(1, later).is_zero())
            .count();
        assert!(free <= 51, "{free} tokens free after an idle minute");
    }

    #[test]
    fn no_limit_no_throttle() {
        assert!(Throttle::new(None, None).is_none());
        assert!(ThrottleOptions::default().full().is_none());
        let mut t = Throttle::new(Some(10), None).expect("a limit");
        assert!(t.take(1, 1 << 30).is_zero());
    }
}
