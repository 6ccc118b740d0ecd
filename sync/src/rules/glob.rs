//! Redis glob patterns (`SCAN MATCH`, `KEYS`) as byte regexes.
//!
//! The rules (`--match`, `--drop-hash-field`) take key and field patterns in the
//! syntax Redis users already write: `*` any bytes, `?` one byte, `[abc]`, `[a-z]`,
//! `[^a]` a class, `\x` the byte x. Patterns are translated once, at start, into an
//! anchored [`regex::bytes::Regex`] in byte mode (`(?s-u)`: `.` is any byte, keys are
//! not UTF-8), so one matcher serves globs and `--key-regex` alike and no matcher is
//! written by hand. Incomplete patterns (an unclosed `[`, a trailing `\`) are refused
//! with the position, rather than guessed at as Redis's own matcher does.

use regex::bytes::Regex;

/// A pattern that is not a glob.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("glob {pattern:?}: {reason}")]
pub struct GlobError {
    pub pattern: String,
    pub reason: String,
}

/// A compiled glob, matching whole byte strings.
#[derive(Clone, Debug)]
pub struct Glob {
    source: String,
    matcher: Matcher,
}

/// How a glob is matched: the common shapes without the regex engine (measured by
/// `cargo bench -p lockstep-sync --bench filter_rules`: `*:tmp` cost 107 ns per
/// command through the regex, a suffix compare costs a few).
#[derive(Clone, Debug)]
enum Matcher {
    /// No wildcard: the key is this.
    Exact(Vec<u8>),
    /// `lit*`.
    Prefix(Vec<u8>),
    /// `*lit`.
    Suffix(Vec<u8>),
    /// `*lit*`.
    Contains(Box<memchr::memmem::Finder<'static>>),
    /// Anything else.
    Regex(Box<Regex>),
}

impl PartialEq for Glob {
    fn eq(&self, other: &Glob) -> bool {
        self.source == other.source
    }
}
impl Eq for Glob {}

impl Glob {
    pub fn new(pattern: &str) -> Result<Glob, GlobError> {
        let regex = Regex::new(&translate(pattern)?).map_err(|e| GlobError {
            pattern: pattern.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Glob {
            source: pattern.to_owned(),
            matcher: shape(pattern).unwrap_or(Matcher::Regex(Box::new(regex))),
        })
    }

    /// Whether the whole of `bytes` matches. The empty key is matched as `SCAN MATCH`
    /// matches it: by `*` (SCAN's shortcut for every key) and the empty pattern only
    /// (Redis's own matcher lets no other pattern, `**` included, meet an empty key;
    /// verify judges it the same way).
    pub fn matches(&self, bytes: &[u8]) -> bool {
        if bytes.is_empty() {
            return self.source.is_empty() || self.source == "*";
        }
        match &self.matcher {
            Matcher::Exact(lit) => bytes == lit.as_slice(),
            Matcher::Prefix(lit) => bytes.starts_with(lit),
            Matcher::Suffix(lit) => bytes.ends_with(lit),
            Matcher::Contains(finder) => finder.find(bytes).is_some(),
            Matcher::Regex(regex) => regex.is_match(bytes),
        }
    }

    /// The pattern as given (also a valid `SCAN MATCH` pattern).
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

/// The fast matcher of a glob made of one literal (no `?`, class or escape) with
/// `*` at neither, either or both ends; `None` for any other glob.
fn shape(pattern: &str) -> Option<Matcher> {
    let bytes = pattern.as_bytes();
    let lead = bytes.first() == Some(&b'*');
    let trail = bytes.len() > usize::from(lead) && bytes.last() == Some(&b'*');
    let lit = &bytes[usize::from(lead)..bytes.len() - usize::from(trail)];
    if lit.iter().any(|c| matches!(c, b'*' | b'?' | b'[' | b'\\')) {
        return None;
    }
    let lit = lit.to_vec();
    Some(match (lead, trail) {
        (false, false) => Matcher::Exact(lit),
        (false, true) => Matcher::Prefix(lit),
        (true, false) => Matcher::Suffix(lit),
        (true, true) => Matcher::Contains(Box::new(memchr::memmem::Finder::new(&lit).into_owned())),
    })
}

/// The anchored byte regex of a glob.
fn translate(pattern: &str) -> Result<String, GlobError> {
    let fail = |reason: String| GlobError {
        pattern: pattern.to_owned(),
        reason,
    };
    let bytes = pattern.as_bytes();
    let mut out = String::from("(?s-u)^");
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'*' => out.push_str(".*"),
            b'?' => out.push('.'),
            b'\\' => {
                let Some(&next) = bytes.get(i + 1) else {
                    return Err(fail("it ends with a lone \\ (escape it as \\\\)".into()));
                };
                push_byte(&mut out, next);
                i += 1;
            }
            b'[' => i = class(bytes, i, &mut out).map_err(fail)?,
            other => push_byte(&mut out, other),
        }
        i += 1;
    }
    out.push('$');
    Ok(out)
}

/// Translates the class opening at `start`; returns the index of its `]`.
fn class(bytes: &[u8], start: usize, out: &mut String) -> Result<usize, String> {
    let mut i = start + 1;
    out.push('[');
    if bytes.get(i) == Some(&b'^') {
        out.push('^');
        i += 1;
    }
    let mut members = 0;
    loop {
        let Some(&c) = bytes.get(i) else {
            return Err(format!("the [ at byte {start} is never closed"));
        };
        match c {
            b']' if members > 0 => break,
            b']' => {
                // `[]` and `[^]` match nothing in Redis; `[]a]` is not Redis syntax.
                return Err(format!("the class at byte {start} is empty"));
            }
            b'\\' => {
                let Some(&next) = bytes.get(i + 1) else {
                    return Err(format!("the class at byte {start} ends with a lone \\"));
                };
                push_class_byte(out, next);
                i += 1;
            }
            b'-' if members > 0 && bytes.get(i + 1).is_some_and(|n| *n != b']') => out.push('-'),
            other => push_class_byte(out, other),
        }
        members += 1;
        i += 1;
    }
    out.push(']');
    Ok(i)
}

fn push_byte(out: &mut String, byte: u8) {
    out.push_str(&format!("\\x{byte:02x}"));
}

fn push_class_byte(out: &mut String, byte: u8) {
    push_byte(out, byte);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, key: &[u8]) -> bool {
        Glob::new(pattern).expect("valid").matches(key)
    }

    #[test]
    fn matches_as_redis_does() {
        assert!(m("user:*", b"user:1"));
        assert!(m("user:*", b"user:"));
        assert!(!m("user:*", b"xuser:1"));
        assert!(m("*:tmp", b"a:b:tmp"));
        assert!(m("h?llo", b"hello"));
        assert!(!m("h?llo", b"hllo"));
        assert!(m("h[ae]llo", b"hallo"));
        assert!(!m("h[ae]llo", b"hillo"));
        assert!(m("h[^e]llo", b"hallo"));
        assert!(!m("h[^e]llo", b"hello"));
        assert!(m("h[a-c]llo", b"hbllo"));
        assert!(!m("h[a-c]llo", b"hdllo"));
        assert!(m("a\\*b", b"a*b"));
        assert!(!m("a\\*b", b"axb"));
        assert!(m("[a-]", b"-"));
        assert!(m("x.y", b"x.y"));
        assert!(!m("x.y", b"xzy"));
        assert!(m("(a)+", b"(a)+"));
    }

    #[test]
    fn the_fast_shapes_match_as_the_regex_does() {
        let keys: [&[u8]; 8] = [
            b"",
            b"a",
            b"user:1",
            b"x:tmp",
            b"user:tmp",
            b"*",
            b"a*b",
            b"tmp",
        ];
        for pattern in [
            "user:*", "*:tmp", "*tmp*", "tmp", "*", "**", "", "a\\*b", "user:?",
        ] {
            let glob = Glob::new(pattern).expect("valid");
            let regex = Regex::new(&translate(pattern).expect("valid")).expect("compiles");
            // The empty key has its own rule (the next test).
            for key in keys.into_iter().filter(|k| !k.is_empty()) {
                assert_eq!(
                    glob.matches(key),
                    regex.is_match(key),
                    "{pattern:?} on {key:?}"
                );
            }
        }
    }

    #[test]
    fn the_empty_key_is_matched_as_scan_match_does() {
        assert!(m("*", b"") && m("", b""));
        assert!(!m("**", b"") && !m("*a*", b"") && !m("?", b"") && !m("a*", b""));
    }

    #[test]
    fn binary_and_newlines() {
        assert!(m("k*", b"k\xff\x00\n"));
        assert!(m("?", b"\xff"));
        assert!(m("?", b"\n"));
    }

    #[test]
    fn refuses_incomplete_patterns() {
        for bad in ["a[bc", "a\\", "[]", "[^]", "[a\\"] {
            assert!(Glob::new(bad).is_err(), "{bad}");
        }
    }
}
