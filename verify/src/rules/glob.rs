//! Redis glob patterns (`SCAN MATCH`, `KEYS`) on bytes, re-implemented for verify:
//! `*` any run of bytes, `?` one byte, `[abc]`, `[a-z]` (a reversed range is read
//! in order, as Redis does), `[^a]`, and `\x` for a literal `x` (in a class too).
//! The whole key must match (the empty key only by `*` and the empty pattern, as
//! `SCAN MATCH` has it).
//!
//! A pattern is translated once into an anchored `regex::bytes` expression with
//! Unicode off (so `?` is one byte and a class holds bytes), every byte written as
//! `\xNN`: no character of the pattern can be read as regex syntax. A pattern Redis
//! would read oddly (an unclosed `[`, an empty class, a trailing lone `\`) is
//! refused with the reason.

use regex::bytes::Regex;

/// A compiled glob.
#[derive(Clone, Debug)]
pub struct Glob {
    text: String,
    regex: Regex,
}

impl Glob {
    /// Compiles `pattern`; the error says what is wrong with it.
    pub fn new(pattern: &str) -> Result<Glob, String> {
        let translated = translate(pattern.as_bytes())?;
        let regex = Regex::new(&translated)
            .map_err(|e| format!("cannot be compiled ({e}); escape special bytes with \\"))?;
        Ok(Glob {
            text: pattern.to_owned(),
            regex,
        })
    }

    /// Whether the whole of `bytes` matches. The empty key is matched as `SCAN
    /// MATCH` matches it: by `*` (SCAN's shortcut for every key) and by the empty
    /// pattern only (Redis's matcher never lets `**` meet an empty key).
    pub fn matches(&self, bytes: &[u8]) -> bool {
        if bytes.is_empty() {
            return self.text.is_empty() || self.text == "*";
        }
        self.regex.is_match(bytes)
    }

    /// The anchored byte regex the glob is translated into.
    pub(crate) fn regex(&self) -> &Regex {
        &self.regex
    }

    /// The pattern as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// One byte as a regex atom that stands for it alone.
fn byte(b: u8) -> String {
    format!("\\x{b:02X}")
}

/// The anchored regex of a glob.
fn translate(pattern: &[u8]) -> Result<String, String> {
    let mut out = String::from("(?s-u)\\A");
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            b'*' => out.push_str(".*"),
            b'?' => out.push('.'),
            b'\\' => {
                let Some(&next) = pattern.get(i + 1) else {
                    return Err("it ends with a lone \\ (escape it as \\\\)".into());
                };
                out.push_str(&byte(next));
                i += 1;
            }
            b'[' => {
                let (class, end) = class(pattern, i)?;
                out.push_str(&class);
                i = end;
            }
            b => out.push_str(&byte(b)),
        }
        i += 1;
    }
    out.push_str("\\z");
    Ok(out)
}

/// The class opened at `start` as a regex class, and the index of its `]`. As Redis
/// reads a class: `\x` is the byte x (never the start of a range), `a-z` a range
/// (reversed, read in order); a range ending in `]` or `\` (which Redis reads as
/// that byte, not as the class's end or an escape) is refused, so a pattern never
/// means one thing here and another to Redis.
fn class(pattern: &[u8], start: usize) -> Result<(String, usize), String> {
    let mut i = start + 1;
    let mut out = String::from("[");
    if pattern.get(i) == Some(&b'^') {
        out.push('^');
        i += 1;
    }
    let mut members = 0;
    loop {
        let Some(&b) = pattern.get(i) else {
            return Err(format!("the [ at byte {start} is never closed"));
        };
        if b == b']' {
            if members == 0 {
                return Err(format!("the class at byte {start} is empty"));
            }
            out.push(']');
            return Ok((out, i));
        }
        members += 1;
        if b == b'\\' {
            let escaped = pattern
                .get(i + 1)
                .ok_or_else(|| format!("the class at byte {start} ends with a lone \\"))?;
            out.push_str(&byte(*escaped));
            i += 2;
            continue;
        }
        match (pattern.get(i + 1), pattern.get(i + 2)) {
            (Some(b'-'), Some(b']' | b'\\')) => {
                return Err(format!(
                    "the range at byte {i} ends in ] or \\, which Redis reads as a byte of the range, not as the end of the class or an escape (put a literal - first or last as \\-)"
                ))
            }
            (Some(b'-'), Some(&high)) if !b.is_ascii() || !high.is_ascii() => {
                return Err(format!(
                    "the range at byte {i} has a non-ASCII bound, which Redis compares as a signed byte (list the bytes instead)"
                ))
            }
            (Some(b'-'), Some(&high)) => {
                let (a, z) = (b.min(high), b.max(high));
                out.push_str(&format!("{}-{}", byte(a), byte(z)));
                i += 3;
            }
            _ => {
                out.push_str(&byte(b));
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Redis's `stringmatchlen` (src/util.c, case-sensitive), ported as it is
    /// written, as the reference the translation must agree with.
    fn redis_match(p: &[u8], s: &[u8]) -> bool {
        fn at(p: &[u8], i: usize) -> u8 {
            p.get(i).copied().unwrap_or(0)
        }
        fn go(p: &[u8], mut pi: usize, s: &[u8], mut si: usize, skip: &mut bool) -> bool {
            while pi < p.len() && si < s.len() {
                match p[pi] {
                    b'*' => {
                        while pi + 1 < p.len() && p[pi + 1] == b'*' {
                            pi += 1;
                        }
                        if pi + 1 == p.len() {
                            return true;
                        }
                        while si < s.len() {
                            if go(p, pi + 1, s, si, skip) {
                                return true;
                            }
                            if *skip {
                                return false;
                            }
                            si += 1;
                        }
                        *skip = true;
                        return false;
                    }
                    b'?' => si += 1,
                    b'[' => {
                        pi += 1;
                        let not = at(p, pi) == b'^';
                        if not {
                            pi += 1;
                        }
                        let mut matched = false;
                        loop {
                            let left = p.len().saturating_sub(pi);
                            if at(p, pi) == b'\\' && left >= 2 {
                                pi += 1;
                                matched |= p[pi] == s[si];
                            } else if at(p, pi) == b']' {
                                break;
                            } else if left == 0 {
                                pi -= 1;
                                break;
                            } else if left >= 3 && p[pi + 1] == b'-' {
                                let (a, z) = (p[pi].min(p[pi + 2]), p[pi].max(p[pi + 2]));
                                pi += 2;
                                matched |= (a..=z).contains(&s[si]);
                            } else {
                                matched |= p[pi] == s[si];
                            }
                            pi += 1;
                        }
                        if matched == not {
                            return false;
                        }
                        si += 1;
                    }
                    c => {
                        let c = if c == b'\\' && p.len() - pi >= 2 {
                            pi += 1;
                            p[pi]
                        } else {
                            c
                        };
                        if c != s[si] {
                            return false;
                        }
                        si += 1;
                    }
                }
                pi += 1;
                if si == s.len() {
                    while at(p, pi) == b'*' {
                        pi += 1;
                    }
                    break;
                }
            }
            pi >= p.len() && si == s.len()
        }
        go(p, 0, s, 0, &mut false)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Every pattern the translation accepts matches exactly the keys Redis's own
        /// matcher matches.
        #[test]
        fn accepted_globs_match_as_redis_matches(
            pattern in "[ab*?\\[\\]^\\\\-]{0,8}",
            keys in proptest::collection::vec("[ab\\]^\\\\-]{0,6}", 1..20),
        ) {
            if let Ok(glob) = Glob::new(&pattern) {
                for key in &keys {
                    // SCAN MATCH takes `*` for every key without matching it.
                    let redis = pattern == "*" || redis_match(pattern.as_bytes(), key.as_bytes());
                    prop_assert_eq!(
                        glob.matches(key.as_bytes()),
                        redis,
                        "pattern {:?}, key {:?}", pattern, key
                    );
                }
            }
        }
    }

    fn m(pattern: &str, key: &[u8]) -> bool {
        Glob::new(pattern).expect(pattern).matches(key)
    }

    #[test]
    fn wildcards_match_whole_keys_byte_by_byte() {
        assert!(m("user:*", b"user:1") && m("user:*", b"user:"));
        assert!(!m("user:*", b"xuser:1"), "anchored at the start");
        assert!(!m("*:1", b"user:10"), "anchored at the end");
        assert!(m("a?c", b"abc") && m("a?c", b"a\xffc") && !m("a?c", b"ac"));
        assert!(m("?", b"\n"), "? is any byte, a newline too");
        assert!(m("*", b"") && m("*", b"\x00\xff"));
    }

    #[test]
    fn classes_ranges_negations_and_escapes() {
        assert!(m("[abc]x", b"bx") && !m("[abc]x", b"dx"));
        assert!(m("k[0-9]", b"k7") && !m("k[0-9]", b"ka"));
        assert!(m("k[9-0]", b"k7"), "a reversed range, as Redis reads it");
        assert!(m("k[^a]", b"kb") && !m("k[^a]", b"ka"));
        assert!(m("k[a\\-]", b"k-") && m("k[a\\-]", b"ka"));
        assert!(
            m("k[\\a-z]", b"k-") && !m("k[\\a-z]", b"kb"),
            "an escape starts no range"
        );
        assert!(m("\\*", b"*") && !m("\\*", b"x"));
        assert!(m("[\\]]", b"]"));
        assert!(
            m("a.b", b"a.b") && !m("a.b", b"axb"),
            "regex syntax is literal"
        );
        assert!(m("(x)+", b"(x)+"));
        assert!(m("é*", "é!".as_bytes()));
    }

    #[test]
    fn malformed_patterns_are_refused_with_the_reason() {
        assert!(Glob::new("a[bc").unwrap_err().contains("never closed"));
        assert!(Glob::new("a[]").unwrap_err().contains("empty"));
        assert!(Glob::new("a\\").unwrap_err().contains("lone \\"));
        assert!(Glob::new("[a\\").is_err());
        assert!(Glob::new("k[a-]").unwrap_err().contains("Redis reads"));
        assert!(Glob::new("k[a-\\z]").unwrap_err().contains("Redis reads"));
        assert!(Glob::new("k[a-é]").unwrap_err().contains("signed"));
        assert!(Glob::new("k[aé]").is_ok(), "non-ASCII members are bytes");
    }
}
