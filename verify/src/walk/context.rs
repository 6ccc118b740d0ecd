//! What every batch of a run shares: the options, the sample's threshold, and what the
//! run learned about the sides (DUMP usable, INFO permitted, TTLs present).
//!
//! The learned flags only ever turn a cheaper read off or a safer read on; they must
//! never change what counts as a difference (that is [`crate::judge`]'s).

use std::sync::atomic::AtomicBool;

use crate::options::{CompareOptions, Sample, SYNC_CHECKPOINT_KEY};

/// What every batch shares.
pub(crate) struct Ctx {
    pub(crate) options: CompareOptions,
    /// Keys hashing below this are sampled; None: every key.
    pub(crate) threshold: Option<u64>,
    /// False once two DUMP payloads showed different RDB versions.
    pub(crate) dump_ok: AtomicBool,
    /// False once `INFO keyspace` failed (not permitted): TTLs are then always read.
    pub(crate) info_ok: AtomicBool,
    /// Whether each side's database held keys with a TTL at the last batch read: then
    /// PTTLs are read in the batch's first pipeline.
    pub(crate) source_ttls: AtomicBool,
    pub(crate) target_ttls: AtomicBool,
}

impl Ctx {
    pub(crate) fn wanted(&self, key: &[u8]) -> bool {
        let o = &self.options;
        if o.ignore_prefixes.iter().any(|p| key.starts_with(p)) {
            return false;
        }
        if !o.include_prefixes.is_empty() && !o.include_prefixes.iter().any(|p| key.starts_with(p))
        {
            return false;
        }
        self.threshold
            .is_none_or(|t| xxhash_rust::xxh3::xxh3_64(key) < t)
    }

    /// The length beyond which strings are read in windows; None (0 in the
    /// options): strings are read whole by MGET.
    pub(crate) fn long_string_limit(&self) -> Option<usize> {
        (self.options.long_string_bytes > 0).then_some(self.options.long_string_bytes)
    }

    pub(crate) fn tolerance_ms(&self) -> i64 {
        self.options.ttl_tolerance.as_millis() as i64
    }

    pub(crate) fn extension_ms(&self) -> i64 {
        self.options.ttl_extension.as_millis() as i64
    }

    /// A source TTL short enough that the key may expire during the check.
    pub(crate) fn expiring_on_source(&self, pttl: i64) -> bool {
        (0..=self.tolerance_ms()).contains(&pttl)
    }

    /// A target key whose source copy may have expired already: within the tolerance
    /// plus the TTL extension.
    pub(crate) fn expiring_on_target(&self, pttl: i64) -> bool {
        (0..=self.tolerance_ms() + self.extension_ms()).contains(&pttl)
    }

    /// Whether two TTLs, read at `snow` and `dnow` (unix ms), agree.
    pub(crate) fn ttls_agree(&self, snow: i64, a: i64, dnow: i64, b: i64) -> bool {
        match (a, b) {
            (-1, -1) => true,
            (a, b) if a >= 0 && b >= 0 => {
                ((dnow + b) - (snow + a) - self.extension_ms()).abs() <= self.tolerance_ms()
            }
            _ => false,
        }
    }

    /// Whether counts may prove that the target has no extra key (every source key is
    /// read, so the keys found on both sides are all the target's wanted keys).
    pub(crate) fn counts_may_prove(&self) -> bool {
        self.options.sample == Sample::All && self.options.include_prefixes.is_empty()
    }

    /// Whether lockstep's checkpoint key is among the ignored keys (then the count
    /// proof counts it apart).
    pub(crate) fn own_checkpoint(&self) -> bool {
        self.options
            .ignore_prefixes
            .iter()
            .any(|p| SYNC_CHECKPOINT_KEY.as_bytes().starts_with(p))
    }
}
