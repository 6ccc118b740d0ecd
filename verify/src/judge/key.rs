//! Whether a key is on both sides, and with the same type: the first judgement of
//! every key of a batch, from the heads (TYPE and PTTL) read on both sides.
//!
//! Pure: it must never read a side. A key absent from one side with a TTL within the
//! tolerance on the other is expiring, not missing (nor extra).

use crate::judge::ttl::TtlRules;
use crate::read::first::Head;

/// How a key stands on the two sides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Presence {
    /// Not on the source (gone since SCAN, or a listed key): not compared. `extra`:
    /// a re-check or key list finds it on the target, not about to expire.
    NotOnSource { extra: bool },
    /// On the source only. `missing`: false when it is about to expire there.
    NotOnTarget { missing: bool },
    /// On both, with these different types.
    TypesDiffer { detail: String },
    /// On both, with the same type: the values are to be compared.
    SameType,
}

impl Presence {
    /// Whether the key counts as compared (it was on the source when read).
    pub(crate) fn compared(&self) -> bool {
        !matches!(self, Presence::NotOnSource { .. })
    }

    /// Whether the key was on both sides.
    pub(crate) fn on_both(&self) -> bool {
        matches!(self, Presence::TypesDiffer { .. } | Presence::SameType)
    }
}

/// How a key stands, given its heads on both sides. `recheck`: the key was not
/// found by a SCAN of the source (a key list, a later round), so a key only on the
/// target is extra.
pub(crate) fn presence(source: &Head, target: &Head, recheck: bool, ttl: &TtlRules) -> Presence {
    if source.kind == "none" {
        let extra = recheck && extra_on_target(target, ttl);
        return Presence::NotOnSource { extra };
    }
    if target.kind == "none" {
        return Presence::NotOnTarget {
            missing: !ttl.expiring_on_source(source.pttl),
        };
    }
    if source.kind != target.kind {
        return Presence::TypesDiffer {
            detail: format!("{} vs {}", source.kind, target.kind),
        };
    }
    Presence::SameType
}

/// Whether a key absent from the source is extra on the target: there, and not
/// about to expire (its source copy may have expired already).
pub(crate) fn extra_on_target(target: &Head, ttl: &TtlRules) -> bool {
    target.kind != "none" && !ttl.expiring_on_target(target.pttl)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: TtlRules = TtlRules {
        tolerance_ms: 2000,
        extension_ms: 0,
        rule: crate::options::TtlRule::Keep,
    };

    fn head(kind: &str, pttl: i64) -> Head {
        Head {
            kind: kind.to_owned(),
            pttl,
        }
    }

    #[test]
    fn a_key_only_on_the_source_is_missing_unless_it_is_expiring() {
        let none = head("none", -2);
        assert_eq!(
            presence(&head("hash", -1), &none, false, &RULES),
            Presence::NotOnTarget { missing: true }
        );
        assert_eq!(
            presence(&head("hash", 60_000), &none, false, &RULES),
            Presence::NotOnTarget { missing: true }
        );
        assert_eq!(
            presence(&head("hash", 1500), &none, false, &RULES),
            Presence::NotOnTarget { missing: false }
        );
        assert!(presence(&head("hash", 1500), &none, false, &RULES).compared());
        assert!(!presence(&head("hash", 1500), &none, false, &RULES).on_both());
    }

    #[test]
    fn a_key_only_on_the_target_is_extra_only_when_rechecked() {
        let none = head("none", -2);
        let target = head("string", -1);
        assert_eq!(
            presence(&none, &target, false, &RULES),
            Presence::NotOnSource { extra: false },
            "gone from the source since SCAN: not compared"
        );
        assert_eq!(
            presence(&none, &target, true, &RULES),
            Presence::NotOnSource { extra: true }
        );
        assert_eq!(
            presence(&none, &head("string", 900), true, &RULES),
            Presence::NotOnSource { extra: false },
            "expiring on the target"
        );
        assert_eq!(
            presence(&none, &none, true, &RULES),
            Presence::NotOnSource { extra: false }
        );
        assert!(!presence(&none, &target, true, &RULES).compared());
    }

    #[test]
    fn the_extension_widens_what_counts_as_expiring_on_the_target() {
        let extended = TtlRules {
            tolerance_ms: 2000,
            extension_ms: 10_000,
            rule: crate::options::TtlRule::Keep,
        };
        assert!(extra_on_target(&head("set", 11_000), &RULES));
        assert!(!extra_on_target(&head("set", 11_000), &extended));
        assert!(extra_on_target(&head("set", -1), &extended));
        assert!(!extra_on_target(&head("none", -2), &extended));
    }

    #[test]
    fn types_are_compared_before_values() {
        let judged = presence(&head("list", -1), &head("zset", -1), false, &RULES);
        assert_eq!(
            judged,
            Presence::TypesDiffer {
                detail: "list vs zset".into()
            }
        );
        assert!(judged.compared() && judged.on_both());
        let same = presence(&head("list", -1), &head("list", 5), false, &RULES);
        assert_eq!(same, Presence::SameType);
        assert!(same.compared() && same.on_both());
    }
}
