//! Dropping hash fields (`--drop-hash-field [KEYGLOB=]FIELDGLOB`): fields that must
//! not leave the source (personal data) are removed from every hash on the way, in
//! the full copy (the loader filters the parser's field batches and re-encodes the
//! hash instead of restoring its raw bytes) and in the stream ([`HashFieldDrops::rewrite`]
//! takes the dropped fields out of every hash command).
//!
//! A rule is a field glob, optionally scoped by a key glob (split at the first `=`),
//! judged on the key's source name. A hash left with no field is not written at all:
//! it does not exist on the target, which is what verify expects of a source hash
//! whose fields are all dropped.
//!
//! A RESTORE in the stream carrying such a hash is decoded, stripped and encoded
//! again in its own RDB version. What cannot be rewritten stops the task with the
//! reason, never applied halfway: a payload that does not decode, and a SORT whose
//! BY or GET pattern reads hash fields (`->`).

use bytes::Bytes;

use super::glob::{Glob, GlobError};

/// The field rules: (key glob or every hash, field glob).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HashFieldDrops {
    rules: Vec<(Option<Glob>, Glob)>,
}

/// What a stream command becomes.
#[derive(Debug, PartialEq, Eq)]
pub enum FieldRewrite {
    Unchanged,
    Drop,
    Into(Vec<Bytes>),
    /// The task stops: the command cannot be applied without the dropped fields.
    Refuse(String),
}

impl HashFieldDrops {
    /// Parses `--drop-hash-field` values.
    pub fn parse(specs: &[String]) -> Result<HashFieldDrops, GlobError> {
        let mut rules = Vec::with_capacity(specs.len());
        for spec in specs {
            let (key, field) = match spec.split_once('=') {
                Some((key, field)) => (Some(Glob::new(key)?), field),
                None => (None, spec.as_str()),
            };
            rules.push((key, Glob::new(field)?));
        }
        Ok(HashFieldDrops { rules })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// May a field of hash `key` be dropped (some rule's key glob matches)?
    pub fn applies_to(&self, key: &[u8]) -> bool {
        self.rules
            .iter()
            .any(|(k, _)| k.as_ref().is_none_or(|k| k.matches(key)))
    }

    /// Is `argv` a RENAME, RENAMENX or COPY of a key these rules apply to? Its hash
    /// may be absent on the target (every field dropped, or every kept one deleted),
    /// where the source's RENAME would fail and COPY REPLACE leave the destination:
    /// the filter applies it as DEL / COPY / DEL instead (`types::moves`), which
    /// does the same when the key exists and empties the destination when not.
    pub fn moves_a_scoped_hash(&self, argv: &[Bytes]) -> bool {
        let (Some(name), Some(src)) = (argv.first(), argv.get(1)) else {
            return false;
        };
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        (is("RENAME") || is("RENAMENX") || is("COPY")) && self.applies_to(src)
    }

    /// Is `field` of hash `key` dropped?
    pub fn drops(&self, key: &[u8], field: &[u8]) -> bool {
        self.rules
            .iter()
            .any(|(k, f)| k.as_ref().is_none_or(|k| k.matches(key)) && f.matches(field))
    }

    /// `argv` without the dropped fields of its hash.
    pub fn rewrite(&self, argv: &[Bytes]) -> FieldRewrite {
        if self.rules.is_empty() {
            return FieldRewrite::Unchanged;
        }
        let (Some(name), Some(key)) = (argv.first(), argv.get(1)) else {
            return FieldRewrite::Unchanged;
        };
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        if (is("SORT") || is("SORT_RO")) && sort_reads_fields(argv) {
            return FieldRewrite::Refuse("its BY or GET pattern reads hash fields, some of which this task drops (fix: drop --drop-hash-field, or let the source sort without ->)".into());
        }
        if !self.applies_to(key) {
            return FieldRewrite::Unchanged;
        }
        if is("HSET") || is("HMSET") {
            return self.keep_fields(argv, 2, 2, None);
        }
        if is("HSETNX") || is("HINCRBY") || is("HINCRBYFLOAT") {
            return self.keep_fields(argv, 2, argv.len().saturating_sub(2).max(1), None);
        }
        if is("HDEL") {
            return self.keep_fields(argv, 2, 1, None);
        }
        if [
            "HEXPIRE",
            "HPEXPIRE",
            "HEXPIREAT",
            "HPEXPIREAT",
            "HPERSIST",
            "HGETEX",
            "HGETDEL",
            "HSETEX",
        ]
        .iter()
        .any(|n| is(n))
        {
            return self.fields_block(argv, if is("HSETEX") { 2 } else { 1 });
        }
        if (is("RESTORE") || is("RESTORE-ASKING")) && restores_a_hash(argv) {
            return self.restore(argv);
        }
        FieldRewrite::Unchanged
    }

    /// RESTORE of a hash: the payload decoded, its dropped fields removed, encoded
    /// again in the payload's own RDB version (the target read that version before
    /// any rule existed, so it still does). A hash left empty: DEL of the key with
    /// REPLACE (the source replaced whatever it held), nothing without.
    fn restore(&self, argv: &[Bytes]) -> FieldRewrite {
        let key = &argv[1];
        let Some(payload) = argv.get(3) else {
            return FieldRewrite::Unchanged;
        };
        let mut dump = match crate::rdb::decode_dump(payload, &crate::rdb::DumpOptions::default()) {
            Ok(dump) => dump,
            Err(e) => {
                return FieldRewrite::Refuse(format!(
                "its hash payload does not decode ({e}), so its dropped fields cannot be removed"
            ))
            }
        };
        let crate::rdb::Value::Hash(fields) = &mut dump.value else {
            return FieldRewrite::Unchanged;
        };
        let before = fields.len();
        fields.retain(|f| !self.drops(key, &f.field));
        if fields.len() == before {
            return FieldRewrite::Unchanged;
        }
        if fields.is_empty() {
            let replace = argv
                .iter()
                .skip(4)
                .any(|a| a.eq_ignore_ascii_case(b"REPLACE"));
            return if replace {
                FieldRewrite::Into(vec![Bytes::from_static(b"DEL"), key.clone()])
            } else {
                FieldRewrite::Drop
            };
        }
        match crate::rdb::encode_dump(&dump.value, dump.version) {
            Ok(encoded) => {
                let mut out = argv.to_vec();
                out[3] = Bytes::from(encoded);
                FieldRewrite::Into(out)
            }
            Err(e) => FieldRewrite::Refuse(format!(
                "its hash cannot be encoded again without the dropped fields: {e}"
            )),
        }
    }

    /// Keeps the kept fields of `argv[start..]`, read as groups of `stride` (field
    /// first). `count_at`: the index of a field-count argument to rewrite.
    fn keep_fields(
        &self,
        argv: &[Bytes],
        start: usize,
        stride: usize,
        count_at: Option<usize>,
    ) -> FieldRewrite {
        let key = &argv[1];
        let groups = argv.get(start..).unwrap_or_default().chunks(stride);
        let dropped = groups.clone().filter(|g| self.drops(key, &g[0])).count();
        if dropped == 0 {
            return FieldRewrite::Unchanged;
        }
        let kept: Vec<&[Bytes]> = groups.filter(|g| !self.drops(key, &g[0])).collect();
        if kept.is_empty() {
            return FieldRewrite::Drop;
        }
        let mut out = argv[..start].to_vec();
        if let Some(at) = count_at {
            out[at] = Bytes::from(kept.len().to_string());
        }
        out.extend(kept.into_iter().flatten().cloned());
        FieldRewrite::Into(out)
    }

    /// Commands with a `FIELDS numfields field ...` block (pairs of field and value
    /// for HSETEX), which ends the command.
    fn fields_block(&self, argv: &[Bytes], stride: usize) -> FieldRewrite {
        let Some(at) = argv
            .iter()
            .skip(2)
            .position(|a| a.eq_ignore_ascii_case(b"FIELDS"))
        else {
            return FieldRewrite::Unchanged; // malformed: refused by the target as by the source
        };
        let count_at = at + 3;
        let start = count_at + 1;
        let declared = argv
            .get(count_at)
            .and_then(|n| std::str::from_utf8(n).ok())
            .and_then(|n| n.parse::<usize>().ok());
        if declared.map(|n| n * stride) != Some(argv.len().saturating_sub(start)) {
            return FieldRewrite::Unchanged;
        }
        self.keep_fields(argv, start, stride, Some(count_at))
    }
}

/// Does a SORT read hash fields through a BY or GET pattern (`...->field`)?
fn sort_reads_fields(argv: &[Bytes]) -> bool {
    argv.windows(2).skip(1).any(|pair| {
        (pair[0].eq_ignore_ascii_case(b"BY") || pair[0].eq_ignore_ascii_case(b"GET"))
            && pair[1].windows(2).any(|w| w == b"->")
    })
}

/// Is the payload of `RESTORE key ttl payload` a hash (its first byte: the RDB type)?
fn restores_a_hash(argv: &[Bytes]) -> bool {
    argv.get(3).and_then(|p| crate::rdb::dump::payload_kind(p)) == Some(crate::rdb::Kind::Hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<Bytes> {
        words
            .iter()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    fn drops(specs: &[&str]) -> HashFieldDrops {
        HashFieldDrops::parse(&specs.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("valid")
    }

    fn into(d: &HashFieldDrops, words: &[&str]) -> FieldRewrite {
        d.rewrite(&argv(words))
    }

    #[test]
    fn rules_scope_by_key_and_field() {
        let d = drops(&["ssn", "user:*=email*"]);
        assert!(d.drops(b"any", b"ssn"));
        assert!(d.drops(b"user:1", b"email_work"));
        assert!(!d.drops(b"order:1", b"email_work"));
        assert!(!d.drops(b"user:1", b"name"));
    }

    #[test]
    fn stream_commands_lose_the_dropped_fields() {
        let d = drops(&["user:*=ssn"]);
        assert_eq!(
            into(&d, &["HSET", "user:1", "ssn", "1", "name", "a"]),
            FieldRewrite::Into(argv(&["HSET", "user:1", "name", "a"]))
        );
        assert_eq!(
            into(&d, &["HSET", "user:1", "ssn", "1"]),
            FieldRewrite::Drop
        );
        assert_eq!(
            into(&d, &["HSET", "order:1", "ssn", "1"]),
            FieldRewrite::Unchanged
        );
        assert_eq!(
            into(&d, &["HINCRBY", "user:1", "ssn", "1"]),
            FieldRewrite::Drop
        );
        assert_eq!(
            into(&d, &["HSETNX", "user:1", "name", "1"]),
            FieldRewrite::Unchanged
        );
        assert_eq!(
            into(&d, &["HDEL", "user:1", "ssn", "x"]),
            FieldRewrite::Into(argv(&["HDEL", "user:1", "x"]))
        );
        assert_eq!(into(&d, &["HDEL", "user:1", "ssn"]), FieldRewrite::Drop);
        assert_eq!(
            into(
                &d,
                &["HPEXPIREAT", "user:1", "9", "FIELDS", "2", "ssn", "x"]
            ),
            FieldRewrite::Into(argv(&["HPEXPIREAT", "user:1", "9", "FIELDS", "1", "x"]))
        );
        assert_eq!(
            into(
                &d,
                &["HSETEX", "user:1", "PX", "9", "FIELDS", "2", "ssn", "1", "x", "2"]
            ),
            FieldRewrite::Into(argv(&[
                "HSETEX", "user:1", "PX", "9", "FIELDS", "1", "x", "2"
            ]))
        );
        assert_eq!(
            into(&d, &["HPERSIST", "user:1", "FIELDS", "1", "ssn"]),
            FieldRewrite::Drop
        );
        assert_eq!(into(&d, &["DEL", "user:1"]), FieldRewrite::Unchanged);
    }

    #[test]
    fn what_cannot_be_rewritten_is_refused() {
        let d = drops(&["ssn"]);
        assert!(matches!(
            into(&d, &["SORT", "l", "BY", "h*->ssn", "STORE", "d"]),
            FieldRewrite::Refuse(_)
        ));
        assert_eq!(
            into(&d, &["SORT", "l", "BY", "w*", "STORE", "d"]),
            FieldRewrite::Unchanged
        );
        let hash_payload = "\x10rest";
        assert!(matches!(
            into(&d, &["RESTORE", "h", "0", hash_payload]),
            FieldRewrite::Refuse(_)
        ));
        assert_eq!(
            into(&d, &["RESTORE", "s", "0", "\x00rest"]),
            FieldRewrite::Unchanged
        );
    }

    #[test]
    fn restores_lose_the_dropped_fields() {
        use crate::rdb::{decode_dump, encode_dump, DumpOptions, HashField, Value};
        let field = |f: &str| HashField {
            field: f.as_bytes().to_vec(),
            value: b"v".to_vec(),
            expire_ms: None,
        };
        let payload =
            encode_dump(&Value::Hash(vec![field("ssn"), field("name")]), 9).expect("encodes");
        let d = drops(&["ssn"]);
        let restore = |payload: &[u8], replace: bool| {
            let mut argv = vec![
                Bytes::from_static(b"RESTORE"),
                Bytes::from_static(b"h"),
                Bytes::from_static(b"0"),
                Bytes::copy_from_slice(payload),
            ];
            if replace {
                argv.push(Bytes::from_static(b"REPLACE"));
            }
            d.rewrite(&argv)
        };
        let FieldRewrite::Into(out) = restore(&payload, true) else {
            panic!("rewritten")
        };
        let dump = decode_dump(&out[3], &DumpOptions::default()).expect("decodes");
        assert_eq!(dump.version, 9);
        assert_eq!(dump.value, Value::Hash(vec![field("name")]));
        let only_ssn = encode_dump(&Value::Hash(vec![field("ssn")]), 9).expect("encodes");
        assert_eq!(
            restore(&only_ssn, true),
            FieldRewrite::Into(argv(&["DEL", "h"]))
        );
        assert_eq!(restore(&only_ssn, false), FieldRewrite::Drop);
        let kept = encode_dump(&Value::Hash(vec![field("name")]), 9).expect("encodes");
        assert_eq!(restore(&kept, true), FieldRewrite::Unchanged);
    }

    #[test]
    fn bad_globs_are_refused() {
        assert!(HashFieldDrops::parse(&["user:[=x".into()]).is_err());
    }
}
