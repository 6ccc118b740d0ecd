//! Key filters by pattern (`--match`, `--exclude-match`, `--key-regex`,
//! `--exclude-key-regex`): the pattern half of [`crate::filter::Filter::keeps_key`].
//!
//! A key is kept when there is no include rule of any kind (prefix, glob, regex) or it
//! matches one of them, and it matches no exclude rule of any kind. The prefixes stay
//! on the filter (they have their fast paths: a SCAN MATCH per prefix, `LOCKSTEP_`);
//! this type holds the compiled globs ([`super::glob`]) and regexes, judged on source
//! names like every other filter rule.

use regex::bytes::Regex;

use super::glob::{Glob, GlobError};

/// A regex on key bytes, compared by its source text.
#[derive(Clone, Debug)]
pub struct KeyRegex {
    source: String,
    regex: Regex,
}

impl PartialEq for KeyRegex {
    fn eq(&self, other: &KeyRegex) -> bool {
        self.source == other.source
    }
}
impl Eq for KeyRegex {}

impl KeyRegex {
    /// `pattern` in Rust regex syntax, searched (not anchored) in the key's bytes.
    pub fn new(pattern: &str) -> Result<KeyRegex, String> {
        let regex = regex::bytes::RegexBuilder::new(pattern)
            .unicode(false)
            .dot_matches_new_line(true)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| format!("regex {pattern:?}: {e}"))?;
        Ok(KeyRegex {
            source: pattern.to_owned(),
            regex,
        })
    }

    pub fn is_match(&self, key: &[u8]) -> bool {
        self.regex.is_match(key)
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }
}

/// The glob and regex key rules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyPatterns {
    pub include_globs: Vec<Glob>,
    pub exclude_globs: Vec<Glob>,
    pub include_regexes: Vec<KeyRegex>,
    pub exclude_regexes: Vec<KeyRegex>,
}

impl KeyPatterns {
    /// Compiles the four lists; the error names the flag and the pattern.
    pub fn new(
        include_globs: &[String],
        exclude_globs: &[String],
        include_regexes: &[String],
        exclude_regexes: &[String],
    ) -> Result<KeyPatterns, String> {
        let globs = |list: &[String], flag: &str| -> Result<Vec<Glob>, String> {
            list.iter()
                .map(|p| Glob::new(p).map_err(|e: GlobError| format!("{flag}: {e}")))
                .collect()
        };
        let regexes = |list: &[String], flag: &str| -> Result<Vec<KeyRegex>, String> {
            list.iter()
                .map(|p| KeyRegex::new(p).map_err(|e| format!("{flag}: {e}")))
                .collect()
        };
        Ok(KeyPatterns {
            include_globs: globs(include_globs, "--match")?,
            exclude_globs: globs(exclude_globs, "--exclude-match")?,
            include_regexes: regexes(include_regexes, "--key-regex")?,
            exclude_regexes: regexes(exclude_regexes, "--exclude-key-regex")?,
        })
    }

    pub fn is_empty(&self) -> bool {
        !self.has_includes() && self.exclude_globs.is_empty() && self.exclude_regexes.is_empty()
    }

    pub fn has_includes(&self) -> bool {
        !self.include_globs.is_empty() || !self.include_regexes.is_empty()
    }

    /// Does `key` match an include pattern?
    pub fn included(&self, key: &[u8]) -> bool {
        self.include_globs.iter().any(|g| g.matches(key))
            || self.include_regexes.iter().any(|r| r.is_match(key))
    }

    /// Does `key` match an exclude pattern?
    pub fn excluded(&self, key: &[u8]) -> bool {
        self.exclude_globs.iter().any(|g| g.matches(key))
            || self.exclude_regexes.iter().any(|r| r.is_match(key))
    }

    /// SCAN MATCH patterns covering every key the includes keep, when the includes
    /// are globs only (`None`: a regex include, scan everything).
    pub fn scan_globs(&self) -> Option<Vec<Vec<u8>>> {
        if !self.include_regexes.is_empty() {
            return None;
        }
        Some(
            self.include_globs
                .iter()
                .map(|g| g.as_str().as_bytes().to_vec())
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patterns(i: &[&str], e: &[&str], ri: &[&str], re: &[&str]) -> KeyPatterns {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        KeyPatterns::new(&s(i), &s(e), &s(ri), &s(re)).expect("valid")
    }

    #[test]
    fn includes_are_a_union_and_excludes_win() {
        let p = patterns(&["user:*"], &["*:tmp"], &[r"^order:\d+$"], &["secret"]);
        assert!(p.included(b"user:1") && !p.excluded(b"user:1"));
        assert!(p.included(b"order:12"));
        assert!(!p.included(b"order:x"));
        assert!(p.excluded(b"user:1:tmp"));
        assert!(p.excluded(b"a-secret-key"));
        assert_eq!(p.scan_globs(), None);
    }

    #[test]
    fn regexes_read_bytes() {
        let p = patterns(&[], &[], &[r"^\xff.\x00$"], &[]);
        assert!(p.included(b"\xff\n\x00"));
    }

    #[test]
    fn errors_name_the_flag() {
        let err = KeyPatterns::new(&["a[".into()], &[], &[], &[]).unwrap_err();
        assert!(err.starts_with("--match: "), "{err}");
        let err = KeyPatterns::new(&[], &[], &["(".into()], &[]).unwrap_err();
        assert!(err.starts_with("--key-regex: "), "{err}");
    }
}
