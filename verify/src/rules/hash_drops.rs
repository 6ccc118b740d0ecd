//! Dropped hash fields (`--drop-hash-field [KEYGLOB=]FIELDGLOB`): which fields of
//! which source hashes the sync never writes, so verify leaves them out of the
//! source side of a hash comparison.
//!
//! A rule is split at its first `=`; without one its field glob applies to every
//! hash. A field is dropped when some rule's key glob matches the key's source name
//! and its field glob matches the field. Pure.

use crate::rules::glob::Glob;

/// One rule: the hashes it applies to (None: every hash) and the fields it drops.
#[derive(Clone, Debug)]
struct Rule {
    keys: Option<Glob>,
    fields: Glob,
}

/// The field drop rules, in the order given.
#[derive(Clone, Debug, Default)]
pub struct HashDrops {
    rules: Vec<Rule>,
}

impl HashDrops {
    /// Parses the rules; the error names the rule and what is wrong with it.
    pub fn new(specs: &[String]) -> Result<HashDrops, String> {
        let rules = specs
            .iter()
            .map(|spec| {
                let fail = |e: String| format!("--drop-hash-field {spec:?}: {e}");
                let (keys, fields) = match spec.split_once('=') {
                    Some((keys, fields)) => (Some(keys), fields),
                    None => (None, spec.as_str()),
                };
                if fields.is_empty() {
                    return Err(fail("the field glob is empty".into()));
                }
                Ok(Rule {
                    keys: keys.map(Glob::new).transpose().map_err(fail)?,
                    fields: Glob::new(fields).map_err(fail)?,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(HashDrops { rules })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether some rule applies to hash `key` (its source name): then its fields
    /// are filtered before they are compared.
    pub fn applies_to(&self, key: &[u8]) -> bool {
        self.rules
            .iter()
            .any(|r| r.keys.as_ref().is_none_or(|g| g.matches(key)))
    }

    /// Whether `field` of hash `key` (its source name) is dropped.
    pub fn drops(&self, key: &[u8], field: &[u8]) -> bool {
        self.rules
            .iter()
            .any(|r| r.keys.as_ref().is_none_or(|g| g.matches(key)) && r.fields.matches(field))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_split_at_the_first_equals_sign() {
        let drops =
            HashDrops::new(&["ssn".into(), "user:*=email*".into(), "k=a=b".into()]).unwrap();
        assert!(drops.applies_to(b"anything"), "ssn applies to every hash");
        assert!(drops.drops(b"order:1", b"ssn") && !drops.drops(b"order:1", b"email"));
        assert!(drops.drops(b"user:1", b"email2") && !drops.drops(b"user:1", b"name"));
        assert!(drops.drops(b"k", b"a=b"), "split at the first =");
        let keyed = HashDrops::new(&["user:*=email".into()]).unwrap();
        assert!(keyed.applies_to(b"user:1") && !keyed.applies_to(b"order:1"));
        assert!(HashDrops::default().is_empty());
    }

    #[test]
    fn malformed_rules_are_refused_naming_the_rule() {
        let err = HashDrops::new(&["user:*=".into()]).unwrap_err();
        assert!(
            err.contains("\"user:*=\"") && err.contains("empty"),
            "{err}"
        );
        let err = HashDrops::new(&["user:[=x".into()]).unwrap_err();
        assert!(err.contains("never closed"), "{err}");
    }
}
