//! Renames by regex with captures (`--rename-regex FROM TO`), re-implemented for
//! verify: the rule's check, its forward map (source name -> target name) and its
//! derived inverse (target name -> the source name written as it).
//!
//! FROM is anchored at both ends; its top level is a sequence of literals and
//! capture groups only (an optional `^` first and `$` last), no capture nested in a
//! group. TO is literals and `$N` / `${N}` (`$$` is a literal `$`), every group of
//! FROM referenced exactly once. So the key is the concatenation of FROM's literals
//! and the groups' texts, and TO keeps every group: the inverse regex is TO with its
//! literals escaped and `$N` replaced by `(group N's pattern)`, and the inverse
//! template is FROM's literals with references to those groups. Anything else is
//! refused with the reason: a key part that TO drops would let two keys meet. Pure.

use regex::bytes::{Captures, Regex};
use regex_syntax::ast::{self, Ast, GroupKind};

/// A piece of a template: literal bytes, or the text of a capture group.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Literal(Vec<u8>),
    Group(usize),
}

/// One checked rule, both ways.
#[derive(Clone, Debug)]
pub struct RegexRename {
    from: String,
    to: String,
    forward: Regex,
    template: Vec<Part>,
    inverse: Regex,
    back: Vec<Part>,
}

impl PartialEq for RegexRename {
    fn eq(&self, other: &RegexRename) -> bool {
        (&self.from, &self.to) == (&other.from, &other.to)
    }
}

impl Eq for RegexRename {}

impl RegexRename {
    /// Checks and compiles the rule `FROM TO`; the error gives the reason.
    pub fn new(from: &str, to: &str) -> Result<RegexRename, String> {
        let fail = |e: String| format!("--rename-regex {from:?} {to:?}: {e}");
        let items = top_level(from).map_err(fail)?;
        let groups = items.iter().filter(|i| matches!(i, Item::Group(_))).count();
        let template = parse_template(to, groups).map_err(fail)?;
        let forward =
            super::byte_regex(&format!(r"\A(?:{from})\z")).map_err(|e| fail(e.to_string()))?;
        // Group N of FROM is group `position in TO + 1` of the inverse regex.
        let mut order = vec![0usize; groups + 1];
        let mut inverse = String::from(r"\A");
        let mut position = 0;
        for part in &template {
            match part {
                Part::Literal(bytes) => {
                    inverse.push_str(&regex::escape(&String::from_utf8_lossy(bytes)))
                }
                Part::Group(n) => {
                    position += 1;
                    order[*n] = position;
                    let Some(Item::Group(pattern)) = items
                        .iter()
                        .filter(|i| matches!(i, Item::Group(_)))
                        .nth(n - 1)
                    else {
                        return Err(fail(format!("no group {n}")));
                    };
                    inverse.push_str(&format!("({pattern})"));
                }
            }
        }
        inverse.push_str(r"\z");
        let inverse = super::byte_regex(&inverse).map_err(|e| fail(format!("its inverse: {e}")))?;
        let mut group = 0;
        let back = items
            .into_iter()
            .map(|item| match item {
                Item::Literal(bytes) => Part::Literal(bytes),
                Item::Group(_) => {
                    group += 1;
                    Part::Group(order[group])
                }
            })
            .collect();
        Ok(RegexRename {
            from: from.to_owned(),
            to: to.to_owned(),
            forward,
            template,
            inverse,
            back,
        })
    }

    /// The target name of source key `key`, when this rule renames it.
    pub fn rename(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.forward
            .captures(key)
            .map(|caps| expand(&caps, &self.template))
    }

    /// The source name this rule would write as target key `key` (not checked to
    /// round-trip: [`crate::keymap::KeyMap::source_key`] does that).
    pub fn invert(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.inverse
            .captures(key)
            .map(|caps| expand(&caps, &self.back))
    }

    /// The rule as given.
    pub fn text(&self) -> (&str, &str) {
        (&self.from, &self.to)
    }
}

/// A template filled in from `caps`.
fn expand(caps: &Captures, template: &[Part]) -> Vec<u8> {
    let mut out = Vec::new();
    for part in template {
        match part {
            Part::Literal(bytes) => out.extend_from_slice(bytes),
            Part::Group(n) => out.extend_from_slice(caps.get(*n).map_or(&[][..], |m| m.as_bytes())),
        }
    }
    out
}

/// An item of FROM's top level: literal bytes, or a capture group's pattern.
enum Item {
    Literal(Vec<u8>),
    Group(String),
}

/// FROM's top level, checked: literals and capture groups (no capture nested in
/// them), `^` only first and `$` only last.
fn top_level(from: &str) -> Result<Vec<Item>, String> {
    let parsed = ast::parse::Parser::new()
        .parse(from)
        .map_err(|e| format!("FROM is not a regex: {e}"))?;
    let asts: &[Ast] = match &parsed {
        Ast::Concat(concat) => &concat.asts,
        Ast::Empty(_) => &[],
        one => std::slice::from_ref(one),
    };
    let last = asts.len().saturating_sub(1);
    let mut items = Vec::new();
    for (i, item) in asts.iter().enumerate() {
        match item {
            Ast::Literal(literal) => {
                let mut buf = [0u8; 4];
                items.push(Item::Literal(
                    literal.c.encode_utf8(&mut buf).as_bytes().to_vec(),
                ));
            }
            Ast::Group(group) if matches!(group.kind, GroupKind::CaptureIndex(_)) => {
                if has_capture(&group.ast) {
                    return Err("a capture group holds another capture group (use (?:...) inside)".into());
                }
                let span = group.ast.span();
                items.push(Item::Group(from[span.start.offset..span.end.offset].to_owned()));
            }
            Ast::Group(_) => {
                return Err("only numbered capture groups may stand at the top level of FROM (not (?:...) nor named groups)".into())
            }
            Ast::Assertion(a) if i == 0 && a.kind == ast::AssertionKind::StartLine => {}
            Ast::Assertion(a) if i == last && a.kind == ast::AssertionKind::EndLine => {}
            other => {
                let span = other.span();
                return Err(format!(
                    "{:?} stands outside a capture group: FROM's top level must be literals and capture groups only, or the key part it matches would be lost (put it in a group and reference it in TO)",
                    &from[span.start.offset..span.end.offset]
                ));
            }
        }
    }
    Ok(items)
}

/// Whether `ast` holds a capture group.
fn has_capture(ast: &Ast) -> bool {
    match ast {
        Ast::Group(g) => !matches!(g.kind, GroupKind::NonCapturing(_)) || has_capture(&g.ast),
        Ast::Repetition(r) => has_capture(&r.ast),
        Ast::Alternation(a) => a.asts.iter().any(has_capture),
        Ast::Concat(c) => c.asts.iter().any(has_capture),
        _ => false,
    }
}

/// TO as literals and group references, each of FROM's `groups` referenced once.
fn parse_template(to: &str, groups: usize) -> Result<Vec<Part>, String> {
    let bytes = to.as_bytes();
    let mut parts: Vec<Part> = Vec::new();
    let mut literal = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'$' {
            literal.push(bytes[i]);
            i += 1;
            continue;
        }
        let (digits, end) = match bytes.get(i + 1) {
            Some(b'$') => {
                literal.push(b'$');
                i += 2;
                continue;
            }
            Some(b'{') => {
                let close = bytes[i..].iter().position(|&b| b == b'}').map(|p| p + i);
                let close = close.ok_or("a ${ in TO is never closed")?;
                (&to[i + 2..close], close + 1)
            }
            _ => {
                let len = bytes[i + 1..]
                    .iter()
                    .take_while(|b| b.is_ascii_digit())
                    .count();
                (&to[i + 1..i + 1 + len], i + 1 + len)
            }
        };
        let n: usize = digits.parse().map_err(|_| {
            format!("{:?} in TO: a $ must be followed by a group number ($1, ${{1}}) or by $ ($$ is a literal $)", &to[i..end.max(i + 1).min(to.len())])
        })?;
        if n == 0 || n > groups {
            return Err(format!("TO references group {n}, and FROM has {groups} group(s) ($0, the whole key, is not allowed)"));
        }
        if parts.contains(&Part::Group(n)) {
            return Err(format!("TO references group {n} twice"));
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(std::mem::take(&mut literal)));
        }
        parts.push(Part::Group(n));
        i = end;
    }
    if !literal.is_empty() {
        parts.push(Part::Literal(literal));
    }
    if let Some(n) = (1..=groups).find(|n| !parts.contains(&Part::Group(*n))) {
        return Err(format!("TO never references group {n}: the key part it matches would be dropped, and two keys could meet"));
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The pieces a FROM is made of: a literal, or a group with the text it matches
    /// in a key.
    const GROUPS: [(&str, &str); 3] = [(r"(\d+)", "42"), (r"([a-z]+)", "ab"), (r"(x?)", "")];

    proptest! {
        /// Any rule of the accepted form, its groups rotated in TO: a renamed
        /// key's image inverts to a key the rule writes as that very image, and with
        /// a separator between every two groups of TO, to the key itself.
        #[test]
        fn accepted_rules_invert_their_images(
            pieces in proptest::collection::vec((0usize..4, "[:/]{1,2}"), 1..5),
            order in 0usize..8,
            separated in proptest::bool::ANY,
        ) {
            let (mut from, mut key, mut groups) = (String::new(), String::new(), 0);
            for (piece, literal) in &pieces {
                from.push_str(literal);
                key.push_str(literal);
                if let Some((pattern, text)) = GROUPS.get(*piece) {
                    from.push_str(pattern);
                    key.push_str(text);
                    groups += 1;
                }
            }
            let mut refs: Vec<usize> = (1..=groups).collect();
            let n = refs.len().max(1);
            refs.rotate_left(order % n);
            let sep = if separated { "|" } else { "" };
            let to: String = refs.iter().map(|g| format!("{sep}${{{g}}}")).collect();
            let rule = RegexRename::new(&from, &format!("t{to}")).expect("an accepted form");
            let image = rule.rename(key.as_bytes()).expect("the key matches");
            let back = rule.invert(&image).expect("the image inverts");
            let again = rule.rename(&back);
            prop_assert_eq!(again.as_deref(), Some(image.as_slice()));
            if separated {
                prop_assert_eq!(back, key.into_bytes());
            }
        }
    }

    fn rule(from: &str, to: &str) -> RegexRename {
        RegexRename::new(from, to).expect(from)
    }

    /// Keys are bytes: `.` matches any byte, a newline and non-UTF-8 bytes too, as in
    /// the sync (found by the explorer: seed 20 episode 17, binary `bin:` keys left
    /// unrenamed by verify).
    #[test]
    fn binary_keys_are_renamed_byte_for_byte() {
        let r = rule("^bin:(.*)$", "S$1");
        let key = b"bin:\xff\n\x00x".to_vec();
        assert_eq!(r.rename(&key), Some(b"S\xff\n\x00x".to_vec()));
        assert_eq!(r.invert(b"S\xff\n\x00x"), Some(key));
        let any = super::super::byte_regex("^a.b$").expect("valid");
        assert!(any.is_match(b"a\nb") && any.is_match(b"a\xffb"));
    }

    #[test]
    fn a_rule_renames_whole_keys_and_inverts() {
        let r = rule(r"^user:(\d+)$", "u:$1");
        assert_eq!(r.rename(b"user:42").as_deref(), Some(&b"u:42"[..]));
        assert_eq!(r.rename(b"user:42x"), None, "anchored at the end");
        assert_eq!(r.rename(b"xuser:42"), None);
        assert_eq!(r.invert(b"u:42").as_deref(), Some(&b"user:42"[..]));
        assert_eq!(r.invert(b"u:x"), None);
        let swap = rule(r"(\w+):(\d+):(.*)", "${3}/$2-$1$$");
        assert_eq!(
            swap.rename(b"cart:7:a:b").as_deref(),
            Some(&b"a:b/7-cart$"[..])
        );
        assert_eq!(
            swap.invert(b"a:b/7-cart$").as_deref(),
            Some(&b"cart:7:a:b"[..])
        );
        let binary = rule(r"k:((?s-u:.)+)", "bin:$1");
        assert_eq!(
            binary.rename(b"k:\xff\x00").as_deref(),
            Some(&b"bin:\xff\x00"[..])
        );
        assert_eq!(
            binary.invert(b"bin:\xff\x00").as_deref(),
            Some(&b"k:\xff\x00"[..])
        );
    }

    #[test]
    fn rules_that_could_let_two_keys_meet_are_refused_with_the_reason() {
        let refused = |from: &str, to: &str, why: &str| {
            let err = RegexRename::new(from, to).unwrap_err();
            assert!(err.contains(why), "{from} {to}: {err}");
        };
        refused(r"user:\d+", "u", "outside a capture group");
        refused(r"user:(\d+)|order:(\d+)", "$1$2", "outside a capture group");
        refused(r"a.(\d)", "$1", "outside a capture group");
        refused(r"(a)(b)", "$1", "never references group 2");
        refused(r"(a)", "$1$1", "twice");
        refused(r"(a)", "$2", "FROM has 1 group");
        refused(r"(a)", "$0", "not allowed");
        refused(r"(a(b))", "$1", "another capture group");
        refused(r"(?:a)(b)", "$1", "top level");
        refused(r"(?P<x>a)", "$1", "top level");
        refused(r"(a)", "$x", "group number");
        refused(r"(a)", "${1", "never closed");
        refused(r"(a", "$1", "not a regex");
        assert!(
            RegexRename::new(r"(a(?:b|c)+)", "x$1").is_ok(),
            "inside a group"
        );
    }
}
