//! The declarative rules an episode may run with (issue 17, docs/transforms.md): key
//! globs and regexes (include and exclude), type include or exclude, one TTL rule
//! (remove, cap, set), hash field drops with and without a key glob, prefix renames
//! and regex renames; or, now and then, a combination the sync must refuse at start,
//! with the words its refusal must contain.
//!
//! Each rule is held twice: as the text given to `lockstep sync` and `lockstep verify`
//! (a glob, a regex, a duration) and as its *meaning* over the workload's key names
//! (the key prefixes a pattern selects, the field names a field glob drops, the
//! target name a rename writes). The checker predicts from the meaning only, so it
//! never matches a glob or a regex itself: the sync's and verify's matchers are
//! judged against what the explorer meant. The schedule draws both halves together
//! from one table; a unit test of the schedule checks, with the sync's own matchers,
//! that the text says what the meaning says over every key the workload writes.
//!
//! The TTL rules are not predicted as one expiry (the sync's clock at the moment it
//! applied a command is unknown to the explorer): the checker bounds the target's
//! expiry between the start of the sync and the read, and verify judges the same
//! rule with its own code.
//!
//! Pure: no I/O, no clock, no randomness (the schedule draws). It imports nothing of
//! the explorer, and must never grow a glob or regex matcher.

/// A key pattern of `--match`, `--exclude-match`, `--key-regex` or
/// `--exclude-key-regex`, and the workload keys it selects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPattern {
    /// The flag without its kind: `match` (a glob) or `key-regex`.
    pub kind: PatternKind,
    pub text: String,
    /// The meaning: exactly the workload keys starting with one of these.
    pub prefixes: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatternKind {
    Glob,
    Regex,
}

impl KeyPattern {
    pub fn selects(&self, key: &[u8]) -> bool {
        self.prefixes.iter().any(|p| key.starts_with(p.as_bytes()))
    }

    fn flag(&self, exclude: bool) -> String {
        let name = match (self.kind, exclude) {
            (PatternKind::Glob, false) => "--match",
            (PatternKind::Glob, true) => "--exclude-match",
            (PatternKind::Regex, false) => "--key-regex",
            (PatternKind::Regex, true) => "--exclude-key-regex",
        };
        format!("{name}={}", self.text)
    }
}

/// `--types` or `--exclude-types`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TypeRule {
    Only(Vec<&'static str>),
    Except(Vec<&'static str>),
}

/// The TTL rule; durations in seconds, written as `text`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum TtlRule {
    #[default]
    Keep,
    Remove,
    Cap {
        secs: u64,
        text: String,
    },
    Set {
        secs: u64,
        text: String,
    },
}

/// The field names of the workload's hashes a field glob drops.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FieldSet {
    /// Every field (`*`).
    Any,
    Named(Vec<String>),
}

/// `--drop-hash-field [KEYGLOB=]FIELDGLOB`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldDrop {
    /// The key glob and the key prefixes it selects; `None`: every hash.
    pub scope: Option<(String, Vec<String>)>,
    pub field_glob: String,
    pub fields: FieldSet,
}

impl FieldDrop {
    fn applies_to(&self, key: &[u8]) -> bool {
        self.scope
            .as_ref()
            .is_none_or(|(_, prefixes)| prefixes.iter().any(|p| key.starts_with(p.as_bytes())))
    }

    fn drops(&self, key: &[u8], field: &[u8]) -> bool {
        self.applies_to(key)
            && match &self.fields {
                FieldSet::Any => true,
                FieldSet::Named(names) => names.iter().any(|n| n.as_bytes() == field),
            }
    }

    fn flag(&self) -> String {
        match &self.scope {
            Some((glob, _)) => format!("--drop-hash-field={glob}={}", self.field_glob),
            None => format!("--drop-hash-field={}", self.field_glob),
        }
    }
}

/// A `--rename-regex FROM TO` of one of two shapes, each one to one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegexRename {
    /// `^<family>(\d+)$` (or `(.*)` for `bin:`) -> `<before>$1<after>`.
    Suffix {
        family: String,
        before: String,
        after: String,
    },
    /// `^(<a>|<b>):(\d+)$` -> `<before>$2-$1`: the number first, the family's name
    /// (without its colon) last.
    Swap { names: Vec<String>, before: String },
}

impl RegexRename {
    /// FROM and TO.
    pub fn text(&self) -> (String, String) {
        match self {
            RegexRename::Suffix {
                family,
                before,
                after,
            } => {
                let group = if family == "bin:" { "(.*)" } else { "(\\d+)" };
                (format!("^{family}{group}$"), format!("{before}$1{after}"))
            }
            RegexRename::Swap { names, before } => (
                format!("^({}):(\\d+)$", names.join("|")),
                format!("{before}$2-$1"),
            ),
        }
    }

    /// The target name of `key`, when this rule renames it.
    pub fn rename(&self, key: &[u8]) -> Option<Vec<u8>> {
        match self {
            RegexRename::Suffix {
                family,
                before,
                after,
            } => {
                let rest = key.strip_prefix(family.as_bytes())?;
                if family != "bin:" && !is_number(rest) {
                    return None;
                }
                Some([before.as_bytes(), rest, after.as_bytes()].concat())
            }
            RegexRename::Swap { names, before } => {
                let (name, number) = names.iter().find_map(|n| {
                    let rest = key.strip_prefix(n.as_bytes())?.strip_prefix(b":")?;
                    Some((n, rest))
                })?;
                is_number(number)
                    .then(|| [before.as_bytes(), number, b"-", name.as_bytes()].concat())
            }
        }
    }
}

fn is_number(bytes: &[u8]) -> bool {
    !bytes.is_empty() && bytes.iter().all(u8::is_ascii_digit)
}

/// A combination the sync refuses at start, and the words each side must say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// What is refused, for the episode's header.
    pub what: &'static str,
    pub flags: Vec<String>,
    /// A part of `lockstep sync`'s error line.
    pub sync_says: &'static str,
    /// A part of `lockstep verify`'s error line (its words differ from the sync's).
    pub verify_says: &'static str,
}

/// A kind of rule, as `--without-rules` names it (no doc comment on the variants:
/// clap would print the long help form).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RuleKind {
    // Key globs and regexes.
    Patterns,
    // --types and --exclude-types.
    Types,
    // --ttl-remove, --ttl-cap, --ttl-set.
    Ttl,
    // --drop-hash-field.
    FieldDrops,
    // Prefix and regex renames.
    Renames,
    // The combinations the sync must refuse.
    Refusals,
}

impl RuleKind {
    pub fn name(self) -> &'static str {
        match self {
            RuleKind::Patterns => "patterns",
            RuleKind::Types => "types",
            RuleKind::Ttl => "ttl",
            RuleKind::FieldDrops => "field-drops",
            RuleKind::Renames => "renames",
            RuleKind::Refusals => "refusals",
        }
    }
}

/// Every declarative rule of one episode (empty: none).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rules {
    pub include: Vec<KeyPattern>,
    pub exclude: Vec<KeyPattern>,
    pub types: Option<TypeRule>,
    pub ttl: TtlRule,
    pub drops: Vec<FieldDrop>,
    /// `--rename-prefix OLD=NEW`.
    pub prefix_renames: Vec<(String, String)>,
    pub regex_renames: Vec<RegexRename>,
    /// Set: the episode expects the sync to refuse to start.
    pub refusal: Option<Refusal>,
}

impl Rules {
    pub fn is_empty(&self) -> bool {
        *self == Rules::default()
    }

    /// These rules without those of `kind`.
    pub fn without(mut self, kind: RuleKind) -> Rules {
        match kind {
            RuleKind::Patterns => {
                self.include.clear();
                self.exclude.clear();
            }
            RuleKind::Types => self.types = None,
            RuleKind::Ttl => self.ttl = TtlRule::Keep,
            RuleKind::FieldDrops => self.drops.clear(),
            RuleKind::Renames => {
                self.prefix_renames.clear();
                self.regex_renames.clear();
            }
            RuleKind::Refusals => self.refusal = None,
        }
        self
    }

    /// Whether an include pattern selects `key` (`None`: there is none).
    pub fn included(&self, key: &[u8]) -> Option<bool> {
        (!self.include.is_empty()).then(|| self.include.iter().any(|p| p.selects(key)))
    }

    pub fn excluded(&self, key: &[u8]) -> bool {
        self.exclude.iter().any(|p| p.selects(key))
    }

    /// Whether keys of type `name` (as TYPE answers) are synchronized.
    pub fn keeps_type(&self, name: &str) -> bool {
        match &self.types {
            None => true,
            Some(TypeRule::Only(kept)) => kept.contains(&name),
            Some(TypeRule::Except(dropped)) => !dropped.contains(&name),
        }
    }

    /// Whether field `field` of hash `key` (source name) reaches the target.
    pub fn keeps_field(&self, key: &[u8], field: &[u8]) -> bool {
        !self.drops.iter().any(|d| d.drops(key, field))
    }

    /// The target name of source key `key`: prefix renames first, then the regex
    /// renames in order; the first that applies wins.
    pub fn target_key(&self, key: &[u8]) -> Vec<u8> {
        for (old, new) in &self.prefix_renames {
            if let Some(rest) = key.strip_prefix(old.as_bytes()) {
                return [new.as_bytes(), rest].concat();
            }
        }
        self.regex_renames
            .iter()
            .find_map(|r| r.rename(key))
            .unwrap_or_else(|| key.to_vec())
    }

    /// Whether two keys of one two-key command (RENAME, COPY) fall on different sides
    /// of a key rule: the sync stops on such a command by design (a key filter), or
    /// cannot be exact (a field drop scoped to one of them), so the workload keeps
    /// those commands on one side.
    pub fn separates(&self, a: &[u8], b: &[u8]) -> bool {
        let patterns = self.include.iter().chain(&self.exclude);
        let pattern_split = patterns.clone().any(|p| p.selects(a) != p.selects(b));
        let drop_split = self
            .drops
            .iter()
            .any(|d| d.applies_to(a) != d.applies_to(b));
        pattern_split || drop_split
    }

    /// The rules as flags of `lockstep sync` and `lockstep verify`.
    pub fn flags(&self) -> Vec<String> {
        if let Some(refusal) = &self.refusal {
            return refusal.flags.clone();
        }
        let mut flags: Vec<String> = self.include.iter().map(|p| p.flag(false)).collect();
        flags.extend(self.exclude.iter().map(|p| p.flag(true)));
        match &self.types {
            Some(TypeRule::Only(kept)) => flags.push(format!("--types={}", kept.join(","))),
            Some(TypeRule::Except(dropped)) => {
                flags.push(format!("--exclude-types={}", dropped.join(",")));
            }
            None => {}
        }
        match &self.ttl {
            TtlRule::Keep => {}
            TtlRule::Remove => flags.push("--ttl-remove".to_owned()),
            TtlRule::Cap { text, .. } => flags.push(format!("--ttl-cap={text}")),
            TtlRule::Set { text, .. } => flags.push(format!("--ttl-set={text}")),
        }
        flags.extend(self.drops.iter().map(FieldDrop::flag));
        for (old, new) in &self.prefix_renames {
            flags.push(format!("--rename-prefix={old}={new}"));
        }
        for rule in &self.regex_renames {
            let (from, to) = rule.text();
            flags.extend(["--rename-regex".to_owned(), from, to]);
        }
        flags
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renames_go_prefix_first_then_regex_in_order() {
        let rules = Rules {
            prefix_renames: vec![("str:1".into(), "P:".into())],
            regex_renames: vec![
                RegexRename::Suffix {
                    family: "str:".into(),
                    before: "S".into(),
                    after: ":s".into(),
                },
                RegexRename::Swap {
                    names: vec!["zst".into(), "set".into()],
                    before: "W".into(),
                },
            ],
            ..Rules::default()
        };
        assert_eq!(rules.target_key(b"str:12"), b"P:2");
        assert_eq!(rules.target_key(b"str:5"), b"S5:s");
        assert_eq!(rules.target_key(b"set:7"), b"W7-set");
        assert_eq!(rules.target_key(b"set:x"), b"set:x");
        assert_eq!(rules.target_key(b"lst:7"), b"lst:7");
        let (from, to) = rules.regex_renames[1].text();
        assert_eq!(
            (from.as_str(), to.as_str()),
            ("^(zst|set):(\\d+)$", "W$2-$1")
        );
    }

    #[test]
    fn a_scoped_drop_separates_its_keys_from_the_others() {
        let rules = Rules {
            drops: vec![FieldDrop {
                scope: Some(("hsh:1*".into(), vec!["hsh:1".into()])),
                field_glob: "count".into(),
                fields: FieldSet::Named(vec!["count".into()]),
            }],
            ..Rules::default()
        };
        assert!(rules.separates(b"hsh:1", b"hsh:2"));
        assert!(!rules.separates(b"hsh:1", b"hsh:13"));
        assert!(!rules.keeps_field(b"hsh:12", b"count"));
        assert!(rules.keeps_field(b"hsh:12", b"3"));
        assert!(rules.keeps_field(b"hsh:2", b"count"));
        assert_eq!(rules.flags(), ["--drop-hash-field=hsh:1*=count"]);
    }
}
