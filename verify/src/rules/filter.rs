//! Which keys are in scope: the key filters by glob and regex (`--match`,
//! `--exclude-match`, `--key-regex`, `--exclude-key-regex`) and the type filters
//! (`--types`, `--exclude-types`), judged on source names and source types.
//!
//! The prefixes (`--prefix`, `--exclude-prefix`) stay in
//! [`crate::options::CompareOptions`]; [`crate::walk::context`] joins both: a key is
//! kept when there is no include rule of any kind or it matches one, and it matches
//! no exclude rule of any kind. Pure.

use regex::bytes::{Regex, RegexSet};

use crate::rules::glob::Glob;

/// The key filters by glob and regex: the includes and the excludes each one
/// `RegexSet` (a glob is an anchored byte regex, [`crate::rules::glob`]), so a key
/// is judged in one pass whatever the number of rules. The empty key is judged
/// apart, as [`Glob::matches`] judges it.
#[derive(Clone, Debug, Default)]
pub struct KeyFilter {
    include: Option<RegexSet>,
    exclude: Option<RegexSet>,
    /// Whether the empty key matches an include rule, an exclude rule.
    empty: (bool, bool),
}

impl KeyFilter {
    /// The filter of these rules (each already checked on its own).
    pub fn new(
        include_globs: &[Glob],
        include_regexes: &[Regex],
        exclude_globs: &[Glob],
        exclude_regexes: &[Regex],
    ) -> Result<KeyFilter, String> {
        let set = |globs: &[Glob], regexes: &[Regex]| -> Result<Option<RegexSet>, String> {
            let patterns: Vec<&str> = globs
                .iter()
                .map(|g| g.regex().as_str())
                .chain(regexes.iter().map(Regex::as_str))
                .collect();
            if patterns.is_empty() {
                return Ok(None);
            }
            RegexSet::new(patterns).map(Some).map_err(|e| {
                format!("the key filters together are too large ({e}): use fewer rules")
            })
        };
        let empty = |globs: &[Glob], regexes: &[Regex]| {
            globs.iter().any(|g| g.matches(b"")) || regexes.iter().any(|r| r.is_match(b""))
        };
        Ok(KeyFilter {
            include: set(include_globs, include_regexes)?,
            exclude: set(exclude_globs, exclude_regexes)?,
            empty: (
                empty(include_globs, include_regexes),
                empty(exclude_globs, exclude_regexes),
            ),
        })
    }

    /// Whether any include rule is given (then a key must match one of any kind).
    pub fn has_includes(&self) -> bool {
        self.include.is_some()
    }

    /// Whether `key` matches an include rule of this filter.
    pub fn included(&self, key: &[u8]) -> bool {
        if key.is_empty() {
            return self.empty.0;
        }
        self.include.as_ref().is_some_and(|set| set.is_match(key))
    }

    /// Whether `key` matches an exclude rule of this filter.
    pub fn excluded(&self, key: &[u8]) -> bool {
        if key.is_empty() {
            return self.empty.1;
        }
        self.exclude.as_ref().is_some_and(|set| set.is_match(key))
    }
}

/// The types a filter names: what `TYPE` answers, with `module` for every module
/// value (any answer outside the six core types).
pub const TYPES: [&str; 7] = ["string", "list", "set", "zset", "hash", "stream", "module"];

/// The class of a `TYPE` answer that the type filters name.
pub fn type_class(kind: &str) -> &str {
    match kind {
        "string" | "list" | "set" | "zset" | "hash" | "stream" | "none" => kind,
        _ => "module",
    }
}

/// The type filters: kept = in `types` (when given) and not in `exclude`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TypeFilter {
    pub(crate) types: Vec<String>,
    pub(crate) exclude: Vec<String>,
}

impl TypeFilter {
    /// Checks the names (each one of [`TYPES`]); `flag` names the option in the error.
    pub fn new(types: &[String], exclude: &[String]) -> Result<TypeFilter, String> {
        let check = |names: &[String], flag: &str| -> Result<Vec<String>, String> {
            names
                .iter()
                .flat_map(|n| n.split(','))
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(|n| {
                    let lower = n.to_ascii_lowercase();
                    if TYPES.contains(&lower.as_str()) {
                        Ok(lower)
                    } else {
                        Err(format!(
                            "{flag} {n:?}: not a type; one of {}",
                            TYPES.join(", ")
                        ))
                    }
                })
                .collect()
        };
        Ok(TypeFilter {
            types: check(types, "--types")?,
            exclude: check(exclude, "--exclude-types")?,
        })
    }

    /// Whether every type is kept.
    pub fn keeps_all(&self) -> bool {
        self.types.is_empty() && self.exclude.is_empty()
    }

    /// Whether a key of this `TYPE` answer is in scope ("none" always is: an absent
    /// key is judged by the other side's type).
    pub fn keeps(&self, kind: &str) -> bool {
        let class = type_class(kind);
        if class == "none" {
            return true;
        }
        (self.types.is_empty() || self.types.iter().any(|t| t == class))
            && !self.exclude.iter().any(|t| t == class)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn types_are_kept_when_listed_and_not_excluded() {
        let all = TypeFilter::new(&[], &[]).unwrap();
        assert!(all.keeps_all() && all.keeps("hash") && all.keeps("ReJSON-RL"));
        let only = TypeFilter::new(&strings(&["string,hash"]), &strings(&["hash"])).unwrap();
        assert!(only.keeps("string") && !only.keeps("hash") && !only.keeps("list"));
        assert!(only.keeps("none"));
        let no_modules = TypeFilter::new(&[], &strings(&["module", "Stream"])).unwrap();
        assert!(!no_modules.keeps("ReJSON-RL") && !no_modules.keeps("stream"));
        assert!(no_modules.keeps("zset"));
        let err = TypeFilter::new(&strings(&["strings"]), &[]).unwrap_err();
        assert!(
            err.contains("--types \"strings\"") && err.contains("one of"),
            "{err}"
        );
    }

    #[test]
    fn globs_and_regexes_include_and_exclude() {
        let filter = KeyFilter::new(
            &[Glob::new("user:*").unwrap()],
            &[Regex::new(r"^order:\d+$").unwrap()],
            &[Glob::new("user:tmp:*").unwrap()],
            &[Regex::new("secret").unwrap()],
        )
        .unwrap();
        assert!(filter.has_includes());
        assert!(filter.included(b"user:1") && filter.included(b"order:12"));
        assert!(!filter.included(b"order:x") && !filter.included(b"xuser:1"));
        assert!(!filter.excluded(b"user:1") && !filter.excluded(b"user:tmp"));
        assert!(filter.excluded(b"user:tmp:1") && filter.excluded(b"a-secret-b"));
        assert!(!KeyFilter::default().has_includes());
        let stars = KeyFilter::new(
            &[Glob::new("**").unwrap()],
            &[],
            &[Glob::new("*").unwrap()],
            &[],
        )
        .unwrap();
        assert!(!stars.included(b""), "Redis's ** never meets the empty key");
        assert!(stars.excluded(b""), "SCAN MATCH * takes every key");
    }
}
