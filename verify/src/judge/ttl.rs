//! TTLs: when two expiries agree, and when a key about to expire excuses its absence
//! or a value difference.
//!
//! Expiries are compared as absolute times ("now + PTTL" at the moment each reply
//! arrived), with a tolerance (the time between the two reads plus a live sync's
//! lag); with a TTL extension (the sync's `--extend-ttl`) the target's expiry is
//! expected that much later; a persistent key stays persistent. A TTL rule of the
//! sync ([`TtlRule`]) changes what agrees: `--ttl-remove`, the target persistent;
//! `--ttl-cap D`, a persistent key persistent, else a target expiry at most the
//! earlier of the source's (extended) and D from the target's read, plus the
//! tolerance; `--ttl-set D`, a target expiry at most D from the read, plus the
//! tolerance, whatever the source's. A difference names the rule. Pure: it must
//! never read a clock or a side (the times come with the replies).

use crate::options::show_duration;
use crate::options::{CompareOptions, TtlRule};

/// The TTL rules of a run, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TtlRules {
    /// Largest difference between the two absolute expiries that still agrees.
    pub(crate) tolerance_ms: i64,
    /// The target's expiry is expected this much later than the source's.
    pub(crate) extension_ms: i64,
    /// The sync's TTL rule.
    pub(crate) rule: TtlRule,
}

impl TtlRules {
    pub(crate) fn of(options: &CompareOptions) -> TtlRules {
        TtlRules {
            tolerance_ms: options.ttl_tolerance.as_millis() as i64,
            extension_ms: options.ttl_extension.as_millis() as i64,
            rule: options.ttl_rule,
        }
    }

    /// A source TTL short enough that the key may expire during the check.
    pub(crate) fn expiring_on_source(&self, pttl: i64) -> bool {
        (0..=self.tolerance_ms).contains(&pttl)
    }

    /// A target key whose source copy may have expired already: within the tolerance
    /// plus the TTL extension.
    pub(crate) fn expiring_on_target(&self, pttl: i64) -> bool {
        (0..=self.tolerance_ms + self.extension_ms).contains(&pttl)
    }

    /// Whether two PTTLs, read at `source_now` and `target_now` (unix ms), agree.
    pub(crate) fn agree(&self, source_now: i64, a: i64, target_now: i64, b: i64) -> bool {
        let tolerance = self.tolerance_ms;
        match self.rule {
            TtlRule::Keep => {}
            TtlRule::Remove => return b == -1,
            TtlRule::Set(d) => return b >= 0 && b <= millis(d) + tolerance,
            TtlRule::Cap(_) if a == -1 => return b == -1,
            TtlRule::Cap(_) => {
                return a >= 0
                    && b >= 0
                    && target_now + b <= self.capped(source_now, a, target_now) + tolerance
            }
        }
        match (a, b) {
            (-1, -1) => true,
            (a, b) if a >= 0 && b >= 0 => {
                ((target_now + b) - (source_now + a) - self.extension_ms).abs() <= self.tolerance_ms
            }
            _ => false,
        }
    }

    /// The TTL difference of a key whose values are equal, in words; None when the
    /// expiries agree.
    pub(crate) fn difference(
        &self,
        source_now: i64,
        a: i64,
        target_now: i64,
        b: i64,
    ) -> Option<String> {
        if self.agree(source_now, a, target_now, b) {
            return None;
        }
        let expiry = |now: i64, pttl: i64| (pttl >= 0).then_some(now + pttl);
        let mut detail = format!(
            "expiry (unix ms) {:?} vs {:?}",
            expiry(source_now, a),
            expiry(target_now, b)
        );
        if self.extension_ms > 0 {
            detail.push_str(&format!(", extension {} ms expected", self.extension_ms));
        }
        match self.rule {
            TtlRule::Keep => {}
            TtlRule::Remove => detail.push_str(", --ttl-remove: no expiry expected"),
            TtlRule::Cap(d) if a == -1 => detail.push_str(&format!(
                ", --ttl-cap {}: no expiry expected (none on the source)",
                show_duration(d)
            )),
            TtlRule::Cap(d) => detail.push_str(&format!(
                ", --ttl-cap {}: an expiry at most {} expected",
                show_duration(d),
                self.capped(source_now, a, target_now)
            )),
            TtlRule::Set(d) => detail.push_str(&format!(
                ", --ttl-set {}: an expiry at most {} expected",
                show_duration(d),
                target_now + millis(d)
            )),
        }
        Some(detail)
    }

    /// Under `--ttl-cap`, the latest target expiry allowed (before the tolerance):
    /// the source's (extended), or the cap from the target's read, whichever is
    /// earlier.
    fn capped(&self, source_now: i64, a: i64, target_now: i64) -> i64 {
        let cap = match self.rule {
            TtlRule::Cap(d) => millis(d),
            _ => i64::MAX / 4,
        };
        (source_now + a + self.extension_ms).min(target_now + cap)
    }

    /// A value difference on a key with a TTL on either side (as first read) may be
    /// an expiry between the reads: its PTTL is to be read again.
    pub(crate) fn volatile(source_pttl: i64, target_pttl: i64) -> bool {
        source_pttl >= 0 || target_pttl >= 0
    }

    /// Whether the PTTLs read again show the key gone (-2) or expiring on either
    /// side: then its value difference is not an inconsistency.
    pub(crate) fn expired_between_reads(&self, source_pttl: i64, target_pttl: i64) -> bool {
        source_pttl == -2
            || target_pttl == -2
            || self.expiring_on_source(source_pttl)
            || self.expiring_on_target(target_pttl)
    }
}

/// A rule's duration in milliseconds (bounded: a rule is at most years long).
fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: TtlRules = TtlRules {
        tolerance_ms: 2000,
        extension_ms: 0,
        rule: TtlRule::Keep,
    };
    const EXTENDED: TtlRules = TtlRules {
        tolerance_ms: 2000,
        extension_ms: 60_000,
        rule: TtlRule::Keep,
    };
    const MINUTE: std::time::Duration = std::time::Duration::from_secs(60);

    #[test]
    fn ttl_remove_wants_every_target_key_persistent() {
        let rules = TtlRules {
            rule: TtlRule::Remove,
            ..RULES
        };
        assert!(rules.agree(0, 10_000, 0, -1) && rules.agree(0, -1, 0, -1));
        assert!(!rules.agree(0, 10_000, 0, 10_000));
        assert_eq!(
            rules.difference(0, 10_000, 0, 10_000).as_deref(),
            Some("expiry (unix ms) Some(10000) vs Some(10000), --ttl-remove: no expiry expected")
        );
    }

    #[test]
    fn ttl_cap_bounds_the_target_expiry_by_the_source_and_the_cap() {
        let rules = TtlRules {
            rule: TtlRule::Cap(MINUTE),
            ..RULES
        };
        assert!(rules.agree(0, -1, 0, -1), "persistent stays persistent");
        assert!(!rules.agree(0, -1, 0, 30_000));
        assert!(
            rules.agree(0, 10_000, 0, 10_000),
            "under the cap: the source's"
        );
        assert!(rules.agree(0, 10_000, 0, 12_000) && !rules.agree(0, 10_000, 0, 12_001));
        assert!(rules.agree(0, 3_600_000, 0, 60_000), "capped");
        assert!(
            rules.agree(0, 3_600_000, 5_000, 55_000),
            "capped, read later"
        );
        assert!(!rules.agree(0, 3_600_000, 0, 62_001), "over the cap");
        assert!(
            !rules.agree(0, 3_600_000, 0, -1),
            "the cap writes an expiry"
        );
        let detail = rules.difference(0, 3_600_000, 0, 70_000).unwrap();
        assert!(
            detail.contains("--ttl-cap 1m: an expiry at most 60000 expected"),
            "{detail}"
        );
        let extended = TtlRules {
            extension_ms: 5_000,
            ..rules
        };
        assert!(extended.agree(0, 10_000, 0, 17_000) && !extended.agree(0, 10_000, 0, 17_001));
    }

    #[test]
    fn ttl_set_wants_an_expiry_within_its_duration_whatever_the_source() {
        let rules = TtlRules {
            rule: TtlRule::Set(MINUTE),
            ..RULES
        };
        assert!(rules.agree(0, -1, 0, 60_000) && rules.agree(0, 3_600_000, 0, 1_000));
        assert!(rules.agree(0, -1, 0, 62_000) && !rules.agree(0, -1, 0, 62_001));
        assert!(!rules.agree(0, -1, 0, -1), "persistent on the target");
        let detail = rules.difference(0, -1, 1_000, -1).unwrap();
        assert!(
            detail.ends_with("--ttl-set 1m: an expiry at most 61000 expected"),
            "{detail}"
        );
    }

    #[test]
    fn expiries_agree_within_the_tolerance_as_absolute_times() {
        assert!(RULES.agree(1000, -1, 1000, -1), "persistent on both");
        assert!(RULES.agree(1000, 10_000, 1000, 10_000));
        // Read 1.5 s apart: the same absolute expiry.
        assert!(RULES.agree(1000, 10_000, 2500, 8_500));
        assert!(RULES.agree(1000, 10_000, 1000, 12_000), "at the tolerance");
        assert!(!RULES.agree(1000, 10_000, 1000, 12_001), "beyond it");
        assert!(
            !RULES.agree(1000, -1, 1000, 10_000),
            "persistent on one side"
        );
        assert!(!RULES.agree(1000, 10_000, 1000, -1));
        assert!(!RULES.agree(1000, -2, 1000, -2), "no such key is no TTL");
    }

    #[test]
    fn an_extension_moves_the_target_expiry_and_keeps_persistent_keys() {
        assert!(EXTENDED.agree(0, 10_000, 0, 70_000));
        assert!(!EXTENDED.agree(0, 10_000, 0, 10_000));
        assert!(EXTENDED.agree(0, -1, 0, -1));
        assert_eq!(
            EXTENDED.difference(0, 10_000, 0, 10_000).as_deref(),
            Some("expiry (unix ms) Some(10000) vs Some(10000), extension 60000 ms expected")
        );
        assert_eq!(EXTENDED.difference(0, 10_000, 0, 70_500), None);
    }

    #[test]
    fn a_difference_names_both_expiries() {
        assert_eq!(
            RULES.difference(1000, 5_000, 2000, -1).as_deref(),
            Some("expiry (unix ms) Some(6000) vs None")
        );
        assert_eq!(RULES.difference(1000, -1, 2000, -1), None);
    }

    #[test]
    fn expiring_keys_are_within_the_tolerance_plus_the_extension_on_the_target() {
        assert!(RULES.expiring_on_source(0) && RULES.expiring_on_source(2000));
        assert!(!RULES.expiring_on_source(2001));
        assert!(!RULES.expiring_on_source(-1) && !RULES.expiring_on_source(-2));
        assert!(EXTENDED.expiring_on_target(62_000));
        assert!(!EXTENDED.expiring_on_target(62_001));
        assert!(!EXTENDED.expiring_on_source(62_000));
    }

    #[test]
    fn a_key_gone_or_expiring_since_the_first_read_excuses_its_value() {
        assert!(TtlRules::volatile(5000, -1) && TtlRules::volatile(-1, 0));
        assert!(!TtlRules::volatile(-1, -1));
        assert!(RULES.expired_between_reads(-2, 50_000));
        assert!(RULES.expired_between_reads(50_000, -2));
        assert!(RULES.expired_between_reads(1500, 50_000));
        assert!(RULES.expired_between_reads(50_000, 1500));
        assert!(!RULES.expired_between_reads(50_000, 50_000));
        assert!(!RULES.expired_between_reads(-1, -1));
    }
}
