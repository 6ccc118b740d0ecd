//! Renames by regex with captures (`--rename-regex FROM TO`): `^user:(\d+)$` with
//! `u:$1` writes `user:42` as `u:42`. Part of [`crate::rename::KeyRenames`], tried after
//! the prefix rules, first match wins.
//!
//! # Why the form is restricted, and how the rule is inverted
//! The clear before a full resync, the TTL guard's settle, the cross-slot copies and
//! the precheck find the task's keys on the target by their source names, so every
//! rename must be invertible. FROM must therefore be a sequence of literals and
//! capture groups only (anchored at both ends; the groups may hold any pattern but no
//! capture of their own), and TO literals and `$N` / `${N}` references that use every
//! group exactly once. Then the inverse is a rule of the same form: TO's literals
//! with each `$N` replaced by group N's pattern, written back as FROM's literals with
//! the captures. A part of the key that TO did not carry over could let two keys
//! meet, which is why a group left out is refused at start.
//!
//! The form alone does not make a rule one-to-one (a group's pattern can match
//! differently once moved), so every key is checked as it is written
//! ([`crate::rename::KeyRenames::collides`]): its target name must lead back to it.
//! Anything else stops the task before the key's command is applied.
//!
//! The parse of FROM uses `regex-syntax` (the regex crate's own parser), so the
//! parts are what the matcher sees, not a guess from the text.

use regex::bytes::{Regex, RegexBuilder};
use regex_syntax::ast::{self, Ast};

/// One rule, compiled both ways.
#[derive(Clone, Debug)]
pub struct RegexRename {
    from_text: String,
    to_text: String,
    forward: Rewrite,
    backward: Rewrite,
}

impl PartialEq for RegexRename {
    fn eq(&self, other: &RegexRename) -> bool {
        (&self.from_text, &self.to_text) == (&other.from_text, &other.to_text)
    }
}
impl Eq for RegexRename {}

/// A whole-key regex and what its match is written as.
#[derive(Clone, Debug)]
struct Rewrite {
    regex: Regex,
    template: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Literal(Vec<u8>),
    /// Capture group N (1-based) of the regex.
    Group(usize),
}

impl RegexRename {
    /// Parses and checks a rule; the error says what is wrong and the fix.
    pub fn new(from: &str, to: &str) -> Result<RegexRename, String> {
        let fail = |reason: String| format!("--rename-regex {from:?} {to:?}: {reason}");
        let (from_parts, group_patterns) = parse_from(from).map_err(fail)?;
        let to_parts = parse_to(to, group_patterns.len()).map_err(fail)?;
        let forward = Rewrite {
            regex: compile(from).map_err(fail)?,
            template: to_parts.clone(),
        };
        // The inverse: TO's shape, each reference matched by its group's pattern
        // (the k-th reference becomes capture k), written back in FROM's order.
        let mut back_pattern = String::new();
        let mut order = Vec::new();
        for part in &to_parts {
            match part {
                Part::Literal(bytes) => back_pattern.push_str(&escape_bytes(bytes)),
                Part::Group(n) => {
                    back_pattern.push('(');
                    back_pattern.push_str(&group_patterns[n - 1]);
                    back_pattern.push(')');
                    order.push(*n);
                }
            }
        }
        let backward_template = from_parts
            .iter()
            .map(|part| match part {
                Part::Group(n) => {
                    Part::Group(order.iter().position(|g| g == n).map_or(0, |i| i + 1))
                }
                literal => literal.clone(),
            })
            .collect();
        let backward = Rewrite {
            regex: compile(&back_pattern)
                .map_err(|e| fail(format!("its inverse does not compile ({e})")))?,
            template: backward_template,
        };
        Ok(RegexRename {
            from_text: from.to_owned(),
            to_text: to.to_owned(),
            forward,
            backward,
        })
    }

    /// `key` renamed, when FROM matches the whole of it.
    pub fn rename(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.forward.apply(key)
    }

    /// The key this rule would have renamed into `target`, if TO's shape matches it
    /// (the caller checks that the key really renames into `target`).
    pub fn invert(&self, target: &[u8]) -> Option<Vec<u8>> {
        self.backward.apply(target)
    }

    pub fn from_text(&self) -> &str {
        &self.from_text
    }

    pub fn to_text(&self) -> &str {
        &self.to_text
    }

    /// Does TO start with `prefix` for every key (its first part is that literal)?
    pub fn writes_under(&self, prefix: &[u8]) -> bool {
        matches!(self.forward.template.first(), Some(Part::Literal(l)) if l.starts_with(prefix))
    }
}

impl Rewrite {
    fn apply(&self, key: &[u8]) -> Option<Vec<u8>> {
        let captures = self.regex.captures(key)?;
        let mut out = Vec::with_capacity(key.len() + 16);
        for part in &self.template {
            match part {
                Part::Literal(bytes) => out.extend_from_slice(bytes),
                Part::Group(n) => {
                    out.extend_from_slice(captures.get(*n).map_or(&[][..], |m| m.as_bytes()))
                }
            }
        }
        Some(out)
    }
}

/// A whole-key byte regex.
fn compile(pattern: &str) -> Result<Regex, String> {
    RegexBuilder::new(&format!("^(?:{pattern})$"))
        .unicode(false)
        .dot_matches_new_line(true)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| e.to_string())
}

/// FROM's top-level parts, and each capture group's pattern text.
fn parse_from(from: &str) -> Result<(Vec<Part>, Vec<String>), String> {
    let ast = ast::parse::Parser::new()
        .parse(from)
        .map_err(|e| format!("FROM is not a regex ({e})"))?;
    let items: Vec<&Ast> = match &ast {
        Ast::Concat(concat) => concat.asts.iter().collect(),
        other => vec![other],
    };
    let (mut parts, mut groups) = (Vec::new(), Vec::new());
    for (i, item) in items.iter().enumerate() {
        match item {
            Ast::Literal(literal) => push_literal(&mut parts, literal.c),
            Ast::Assertion(a)
                if (i == 0 && a.kind == ast::AssertionKind::StartLine)
                    || (i + 1 == items.len() && a.kind == ast::AssertionKind::EndLine) => {}
            Ast::Group(group) if matches!(group.kind, ast::GroupKind::CaptureIndex(_)) => {
                if has_capture(&group.ast) {
                    return Err("a capture group holds another; use (?:...) inside groups".into());
                }
                let span = group.ast.span();
                groups.push(from[span.start.offset..span.end.offset].to_owned());
                parts.push(Part::Group(groups.len()));
            }
            Ast::Group(_) => return Err("named groups are not supported; use (...) and $N".into()),
            Ast::Empty(_) => {}
            _ => {
                return Err("FROM must be literals and capture groups only, as in ^user:(\\d+)$ (put repetitions, classes and alternations inside a group)".into())
            }
        }
    }
    if groups.is_empty() {
        return Err("FROM has no capture group: use --rename-prefix for a fixed rename".into());
    }
    Ok((parts, groups))
}

fn push_literal(parts: &mut Vec<Part>, c: char) {
    let mut buf = [0u8; 4];
    let bytes = c.encode_utf8(&mut buf).as_bytes();
    match parts.last_mut() {
        Some(Part::Literal(l)) => l.extend_from_slice(bytes),
        _ => parts.push(Part::Literal(bytes.to_vec())),
    }
}

fn has_capture(ast: &Ast) -> bool {
    match ast {
        Ast::Group(g) => {
            matches!(
                g.kind,
                ast::GroupKind::CaptureIndex(_) | ast::GroupKind::CaptureName { .. }
            ) || has_capture(&g.ast)
        }
        Ast::Concat(c) => c.asts.iter().any(has_capture),
        Ast::Alternation(a) => a.asts.iter().any(has_capture),
        Ast::Repetition(r) => has_capture(&r.ast),
        _ => false,
    }
}

/// TO's parts: literals, `$N`, `${N}`, `$$` for a `$`. Every group 1..=groups once.
fn parse_to(to: &str, groups: usize) -> Result<Vec<Part>, String> {
    let bytes = to.as_bytes();
    let mut parts: Vec<Part> = Vec::new();
    let mut used = vec![0usize; groups + 1];
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'$' {
            match parts.last_mut() {
                Some(Part::Literal(l)) => l.push(bytes[i]),
                _ => parts.push(Part::Literal(vec![bytes[i]])),
            }
            i += 1;
            continue;
        }
        let rest = &to[i + 1..];
        let (digits, consumed) = if let Some(inner) = rest.strip_prefix('{') {
            let end = inner.find('}').ok_or("an unclosed ${ in TO")?;
            (&inner[..end], end + 2)
        } else if rest.starts_with('$') {
            match parts.last_mut() {
                Some(Part::Literal(l)) => l.push(b'$'),
                _ => parts.push(Part::Literal(vec![b'$'])),
            }
            i += 2;
            continue;
        } else {
            let end = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            (&rest[..end], end)
        };
        let n: usize = digits.parse().map_err(|_| {
            format!("TO's ${digits:?}: use $N or ${{N}} with a group number (a $ alone is $$)")
        })?;
        if n == 0 || n > groups {
            return Err(format!("TO uses ${n}, but FROM has groups 1 to {groups}"));
        }
        used[n] += 1;
        parts.push(Part::Group(n));
        i += 1 + consumed;
    }
    if let Some(n) = (1..=groups).find(|n| used[*n] != 1) {
        let times = used[n];
        return Err(format!("TO uses group {n} {times} times; every group must be used exactly once, or two keys differing there would meet (or could not be found back)"));
    }
    if parts
        .windows(2)
        .any(|w| matches!(w, [Part::Group(_), Part::Group(_)]))
    {
        return Err("two groups are next to each other in TO: put a literal between them, or the key could not be split back".into());
    }
    Ok(parts)
}

fn escape_bytes(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("\\x{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(from: &str, to: &str) -> RegexRename {
        RegexRename::new(from, to).expect("valid")
    }

    #[test]
    fn renames_and_inverts() {
        let r = rule(r"^user:(\d+):profile$", "p:$1");
        assert_eq!(r.rename(b"user:42:profile").as_deref(), Some(&b"p:42"[..]));
        assert_eq!(r.rename(b"user:x:profile"), None);
        assert_eq!(r.rename(b"xuser:42:profile"), None, "anchored");
        assert_eq!(r.invert(b"p:42").as_deref(), Some(&b"user:42:profile"[..]));
        assert_eq!(r.invert(b"p:x"), None);
        let swap = rule(r"(\w+)\.(\w+)", "${2}-$1");
        assert_eq!(swap.rename(b"a.b").as_deref(), Some(&b"b-a"[..]));
        assert_eq!(swap.invert(b"b-a").as_deref(), Some(&b"a.b"[..]));
    }

    #[test]
    fn binary_keys() {
        let r = rule(r"k:(.*)", "n:$1");
        assert_eq!(
            r.rename(b"k:\xff\n\x00").as_deref(),
            Some(&b"n:\xff\n\x00"[..])
        );
        assert_eq!(
            r.invert(b"n:\xff\n\x00").as_deref(),
            Some(&b"k:\xff\n\x00"[..])
        );
    }

    #[test]
    fn forms_that_lose_information_are_refused() {
        let refused = |from: &str, to: &str| RegexRename::new(from, to).expect_err("refused");
        assert!(refused(r"(a|b)x(\d+)", "$2").contains("exactly once"));
        assert!(refused(r"a|b(\d)", "$1").contains("literals and capture groups"));
        assert!(refused(r"user:x", "u").contains("no capture group"));
        assert!(refused(r"user:\d+", "u").contains("literals and capture groups"));
        assert!(refused(r"((a)b)", "$1").contains("holds another"));
        assert!(refused(r"(a)(b)", "$1$2").contains("next to each other"));
        assert!(refused(r"(a)", "$1$1").contains("exactly once"));
        assert!(refused(r"(a)", "$2").contains("groups 1 to 1"));
        assert!(refused(r"(", "$1").contains("not a regex"));
        assert!(refused(r"(?P<id>a)", "$1").contains("named"));
    }

    #[test]
    fn dollars_and_braces_in_to() {
        let r = rule(r"a:(.+)", "$$:${1}x");
        assert_eq!(r.rename(b"a:q").as_deref(), Some(&b"$:qx"[..]));
        assert_eq!(r.invert(b"$:qx").as_deref(), Some(&b"a:q"[..]));
    }
}
