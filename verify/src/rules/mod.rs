//! The declarative rules of issue 17 on the verify side (docs/transforms.md): key
//! filters by glob and regex, type filters, dropped hash fields and renames by
//! regex, checked and compiled from [`crate::options::RuleSpec`] (plain text, as
//! the command line and audit pairs give them). The TTL rule is plain data
//! ([`crate::options::TtlRule`]) judged in [`crate::judge::ttl`].
//!
//! Verify's own implementation of the contract the sync implements too: it shares no
//! code with the sync, so that it stays the independent oracle of what was written.
//! An invalid rule is refused before any read, naming the flag and the pattern.

pub mod filter;
pub mod glob;
pub mod hash_drops;
pub mod rename;

use std::time::Duration;

use regex::bytes::Regex;

pub use crate::options::show_duration;
use crate::options::{CompareOptions, RuleSpec, TtlRule};
use filter::{KeyFilter, TypeFilter};
use glob::Glob;
use hash_drops::HashDrops;
use rename::RegexRename;

/// A regex on key bytes, as the sync compiles it: any byte (not only UTF-8), and
/// `.` matching every byte, newline included (`(?s-u)`): keys are bytes.
pub fn byte_regex(pattern: &str) -> Result<Regex, regex::Error> {
    Regex::new(&format!("(?s-u){pattern}"))
}

/// The compiled rules of a run.
#[derive(Clone, Debug, Default)]
pub struct Rules {
    pub keys: KeyFilter,
    pub types: TypeFilter,
    pub drops: HashDrops,
    pub renames: Vec<RegexRename>,
    /// `--route-db GLOB=DB`, in the order given (first match wins).
    pub routes: Vec<(Glob, u32)>,
}

impl Rules {
    /// Checks and compiles `spec`; the error names the flag and the pattern.
    pub fn compile(spec: &RuleSpec) -> Result<Rules, String> {
        let globs = |patterns: &[String], flag: &str| -> Result<Vec<Glob>, String> {
            patterns
                .iter()
                .map(|p| Glob::new(p).map_err(|e| format!("{flag} {p:?}: {e}")))
                .collect()
        };
        let regexes = |patterns: &[String], flag: &str| -> Result<Vec<Regex>, String> {
            patterns
                .iter()
                .map(|p| byte_regex(p).map_err(|e| format!("{flag} {p:?}: {e}")))
                .collect()
        };
        Ok(Rules {
            keys: KeyFilter::new(
                &globs(&spec.match_globs, "--match")?,
                &regexes(&spec.key_regex, "--key-regex")?,
                &globs(&spec.exclude_match, "--exclude-match")?,
                &regexes(&spec.exclude_key_regex, "--exclude-key-regex")?,
            )?,
            types: TypeFilter::new(&spec.types, &spec.exclude_types)?,
            drops: HashDrops::new(&spec.drop_hash_field)?,
            renames: spec
                .rename_regex
                .iter()
                .map(|(from, to)| RegexRename::new(from, to))
                .collect::<Result<_, _>>()?,
            routes: spec
                .route_db
                .iter()
                .map(|(glob, db)| {
                    Glob::new(glob)
                        .map(|g| (g, *db))
                        .map_err(|e| format!("--route-db {glob:?}: {e}"))
                })
                .collect::<Result<_, _>>()?,
        })
    }

    /// The target database a `--route-db` rule sends source key `key` into (None:
    /// no rule matches; the key goes where its database goes).
    pub fn route(&self, key: &[u8]) -> Option<u32> {
        self.routes
            .iter()
            .find(|(glob, _)| glob.matches(key))
            .map(|(_, db)| *db)
    }

    /// Checks a whole run's rules: [`Rules::compile`], and the TTL rule against the
    /// TTL extension (`--extend-ttl` combines with `--ttl-cap` only).
    pub fn check(options: &CompareOptions) -> Result<Rules, String> {
        let extended = !options.ttl_extension.is_zero();
        match options.ttl_rule {
            TtlRule::Remove if extended => {
                return Err("--extend-ttl with --ttl-remove: keys are written without an expiry, there is nothing to extend (drop one)".into())
            }
            TtlRule::Set(_) if extended => {
                return Err("--extend-ttl with --ttl-set: every expiry is set, source expiries are ignored (drop one)".into())
            }
            TtlRule::Cap(d) | TtlRule::Set(d) if d.is_zero() => {
                return Err("a TTL rule's duration must be above 0".into())
            }
            _ => {}
        }
        let routes = &options.rules.route_db;
        if let Some((_, db)) = routes.iter().find(|(_, db)| *db > 255) {
            return Err(format!("--route-db: database {db} is out of range 0..255"));
        }
        if !routes.is_empty() && options.script.is_some() {
            return Err("--script with --route-db: the sync refuses the pair (a task with a script owns its target databases whole), so no sync wrote such a target".into());
        }
        if !routes.is_empty() && options.dbs.len() != 1 {
            return Err(
                "--route-db needs exactly one source database, as the sync does (fix: add --dbs N)"
                    .into(),
            );
        }
        Rules::compile(&options.rules)
    }
}

/// A duration as the TTL rules take it: integer seconds, or with a unit `ms`, `s`,
/// `m`, `h`, `d` (`90s`, `7d`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let digits = text.chars().take_while(char::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    let n: u64 = number.parse().map_err(|_| {
        format!("{text:?}: not a duration (integer seconds, or 500ms, 90s, 5m, 2h, 7d)")
    })?;
    let ms = match unit {
        "ms" => Some(n),
        "" | "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        "d" => n.checked_mul(86_400_000),
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (ms, s, m, h or d)"
            ))
        }
    };
    ms.map(Duration::from_millis)
        .ok_or_else(|| format!("{text:?}: too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_seconds_or_a_unit() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert!(parse_duration("7w").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("d").is_err() && parse_duration("-1s").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
        assert_eq!(show_duration(Duration::from_secs(7 * 86_400)), "7d");
        assert_eq!(show_duration(Duration::from_secs(90)), "90s");
        assert_eq!(show_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn invalid_rules_are_refused_naming_the_flag_and_pattern() {
        let spec = |f: fn(&mut RuleSpec)| {
            let mut spec = RuleSpec::default();
            f(&mut spec);
            Rules::compile(&spec).map(|_| ()).unwrap_err()
        };
        assert!(spec(|s| s.match_globs = vec!["a[".into()]).starts_with("--match \"a[\":"));
        assert!(spec(|s| s.exclude_key_regex = vec!["(".into()])
            .starts_with("--exclude-key-regex \"(\":"));
        assert!(spec(|s| s.types = vec!["blob".into()]).contains("--types"));
        assert!(
            spec(|s| s.rename_regex = vec![("a".into(), "b$1".into())]).contains("--rename-regex")
        );
        let extended = CompareOptions {
            ttl_extension: Duration::from_secs(5),
            ttl_rule: TtlRule::Remove,
            ..CompareOptions::default()
        };
        assert!(Rules::check(&extended)
            .unwrap_err()
            .contains("--extend-ttl with --ttl-remove"));
        let capped = CompareOptions {
            ttl_rule: TtlRule::Cap(Duration::from_secs(5)),
            ..extended
        };
        assert!(Rules::check(&capped).is_ok());
    }
}
