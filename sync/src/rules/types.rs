//! Filters by type (`--types`, `--exclude-types`): which kinds of value the task
//! synchronizes. The full copy knows each key's type from the RDB; in the stream the
//! type is the command's (`HSET` writes a hash), from the table below.
//!
//! # Keeping the target honest when a type is dropped
//! The target must hold a key exactly when the source holds it with a kept type.
//! - A command of a dropped type is dropped: the target has no such key, so nothing
//!   of it can be there to change (writes of another type fail with WRONGTYPE on the
//!   source and are never replicated).
//! - A command that *overwrites* its destination whatever it held (SET, MSET,
//!   SETEX, BITOP, SUNIONSTORE, ZUNIONSTORE, SORT ... STORE, RESTORE REPLACE, ...)
//!   with a dropped type becomes a DEL of the destination: a kept value it replaced
//!   on the source must leave the target too.
//! - A command that moves a value of any type (RENAME, RENAMENX, COPY ... REPLACE)
//!   becomes `DEL dst` (RENAME, COPY REPLACE), `COPY src dst`, `DEL src` (RENAME,
//!   RENAMENX): when `src` is of a dropped type it is absent on the target, and the
//!   sequence leaves `dst` absent too, as it must; otherwise it is the move itself.
//! - A command whose inputs may be of a dropped type while its result is kept
//!   (ZUNIONSTORE over sets into a kept zset, SORT ... STORE of a set into a list)
//!   cannot be computed on the target and stops the task, as a script does
//!   (its keys are not known by type).
//! - DEL, UNLINK, EXPIRE and the like, MOVE and COPY without REPLACE apply as they
//!   are: on a key absent from the target they do nothing.

use bytes::Bytes;

use crate::rdb::Kind;

/// The type names of the options, in the order `TYPE` answers them.
pub const TYPE_NAMES: &[(&str, Kind)] = &[
    ("string", Kind::String),
    ("list", Kind::List),
    ("set", Kind::Set),
    ("zset", Kind::ZSet),
    ("hash", Kind::Hash),
    ("stream", Kind::Stream),
    ("module", Kind::Module),
];

/// Which types are kept: `keep` (none: all), minus `exclude`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TypeRules {
    /// Bit i set: the kind `TYPE_NAMES[i]` is dropped (0, the default: none).
    dropped: u8,
}

/// What the type rules make of one stream command.
#[derive(Debug, PartialEq, Eq)]
pub enum TypeVerdict {
    Keep,
    Drop,
    Into(Vec<Vec<Bytes>>),
    Refuse(String),
}

/// Where a command's destination keys are (for the DEL of an overwrite).
#[derive(Clone, Copy, Debug)]
enum Dest {
    First,
    Pairs,
    Second,
    Store,
}

#[derive(Clone, Copy, Debug)]
enum Spec {
    /// Every key is of this kind.
    Of(Kind),
    /// The destination becomes this kind whatever it held.
    Overwrites(Kind, Dest),
    /// ZUNIONSTORE / ZINTERSTORE / ZDIFFSTORE: sets or zsets into a zset.
    ZStore,
    Sort,
    Moves,
    Restore,
    /// No type: DEL, EXPIRE, ..., and commands without keys.
    Any,
    Script,
}

use Kind::{Hash as H, List as L, Set as S, Stream as X, String as T, ZSet as Z};

/// Sorted by name (a test checks it).
static TABLE: &[(&str, Spec)] = &[
    ("APPEND", Spec::Of(T)),
    ("BITFIELD", Spec::Of(T)),
    ("BITOP", Spec::Overwrites(T, Dest::Second)),
    ("BLMOVE", Spec::Of(L)),
    ("BLMPOP", Spec::Of(L)),
    ("BLPOP", Spec::Of(L)),
    ("BRPOP", Spec::Of(L)),
    ("BRPOPLPUSH", Spec::Of(L)),
    ("BZMPOP", Spec::Of(Z)),
    ("BZPOPMAX", Spec::Of(Z)),
    ("BZPOPMIN", Spec::Of(Z)),
    ("COPY", Spec::Moves),
    ("DECR", Spec::Of(T)),
    ("DECRBY", Spec::Of(T)),
    ("DEL", Spec::Any),
    ("EVAL", Spec::Script),
    ("EVALSHA", Spec::Script),
    ("EVALSHA_RO", Spec::Script),
    ("EVAL_RO", Spec::Script),
    ("EXEC", Spec::Any),
    ("EXPIRE", Spec::Any),
    ("EXPIREAT", Spec::Any),
    ("FCALL", Spec::Script),
    ("FCALL_RO", Spec::Script),
    ("FLUSHALL", Spec::Any),
    ("FLUSHDB", Spec::Any),
    ("FUNCTION", Spec::Any),
    ("GEOADD", Spec::Of(Z)),
    ("GEORADIUS", Spec::Overwrites(Z, Dest::Store)),
    ("GEORADIUSBYMEMBER", Spec::Overwrites(Z, Dest::Store)),
    ("GEOSEARCHSTORE", Spec::Overwrites(Z, Dest::First)),
    ("GETDEL", Spec::Of(T)),
    ("GETEX", Spec::Of(T)),
    ("GETSET", Spec::Of(T)),
    ("HDEL", Spec::Of(H)),
    ("HEXPIRE", Spec::Of(H)),
    ("HEXPIREAT", Spec::Of(H)),
    ("HGETDEL", Spec::Of(H)),
    ("HGETEX", Spec::Of(H)),
    ("HINCRBY", Spec::Of(H)),
    ("HINCRBYFLOAT", Spec::Of(H)),
    ("HMSET", Spec::Of(H)),
    ("HPERSIST", Spec::Of(H)),
    ("HPEXPIRE", Spec::Of(H)),
    ("HPEXPIREAT", Spec::Of(H)),
    ("HSET", Spec::Of(H)),
    ("HSETEX", Spec::Of(H)),
    ("HSETNX", Spec::Of(H)),
    ("INCR", Spec::Of(T)),
    ("INCRBY", Spec::Of(T)),
    ("INCRBYFLOAT", Spec::Of(T)),
    ("LINSERT", Spec::Of(L)),
    ("LMOVE", Spec::Of(L)),
    ("LMPOP", Spec::Of(L)),
    ("LPOP", Spec::Of(L)),
    ("LPUSH", Spec::Of(L)),
    ("LPUSHX", Spec::Of(L)),
    ("LREM", Spec::Of(L)),
    ("LSET", Spec::Of(L)),
    ("LTRIM", Spec::Of(L)),
    ("MOVE", Spec::Any),
    ("MSET", Spec::Overwrites(T, Dest::Pairs)),
    ("MSETNX", Spec::Of(T)),
    ("MULTI", Spec::Any),
    ("PERSIST", Spec::Any),
    ("PEXPIRE", Spec::Any),
    ("PEXPIREAT", Spec::Any),
    ("PFADD", Spec::Of(T)),
    ("PFCOUNT", Spec::Of(T)),
    ("PFMERGE", Spec::Of(T)),
    ("PING", Spec::Any),
    ("PSETEX", Spec::Overwrites(T, Dest::First)),
    ("PUBLISH", Spec::Any),
    ("RENAME", Spec::Moves),
    ("RENAMENX", Spec::Moves),
    ("REPLCONF", Spec::Any),
    ("RESTORE", Spec::Restore),
    ("RESTORE-ASKING", Spec::Restore),
    ("RPOP", Spec::Of(L)),
    ("RPOPLPUSH", Spec::Of(L)),
    ("RPUSH", Spec::Of(L)),
    ("RPUSHX", Spec::Of(L)),
    ("SADD", Spec::Of(S)),
    ("SCRIPT", Spec::Any),
    ("SDIFFSTORE", Spec::Overwrites(S, Dest::First)),
    ("SELECT", Spec::Any),
    ("SET", Spec::Overwrites(T, Dest::First)),
    ("SETBIT", Spec::Of(T)),
    ("SETEX", Spec::Overwrites(T, Dest::First)),
    ("SETNX", Spec::Of(T)),
    ("SETRANGE", Spec::Of(T)),
    ("SINTERSTORE", Spec::Overwrites(S, Dest::First)),
    ("SMOVE", Spec::Of(S)),
    ("SORT", Spec::Sort),
    ("SPOP", Spec::Of(S)),
    ("SPUBLISH", Spec::Any),
    ("SREM", Spec::Of(S)),
    ("SUNIONSTORE", Spec::Overwrites(S, Dest::First)),
    ("SWAPDB", Spec::Any),
    ("TOUCH", Spec::Any),
    ("UNLINK", Spec::Any),
    ("XACK", Spec::Of(X)),
    ("XACKDEL", Spec::Of(X)),
    ("XADD", Spec::Of(X)),
    ("XAUTOCLAIM", Spec::Of(X)),
    ("XCLAIM", Spec::Of(X)),
    ("XDEL", Spec::Of(X)),
    ("XDELEX", Spec::Of(X)),
    ("XGROUP", Spec::Of(X)),
    ("XSETID", Spec::Of(X)),
    ("XTRIM", Spec::Of(X)),
    ("ZADD", Spec::Of(Z)),
    ("ZDIFFSTORE", Spec::ZStore),
    ("ZINCRBY", Spec::Of(Z)),
    ("ZINTERSTORE", Spec::ZStore),
    ("ZMPOP", Spec::Of(Z)),
    ("ZPOPMAX", Spec::Of(Z)),
    ("ZPOPMIN", Spec::Of(Z)),
    ("ZRANGESTORE", Spec::Overwrites(Z, Dest::First)),
    ("ZREM", Spec::Of(Z)),
    ("ZREMRANGEBYLEX", Spec::Of(Z)),
    ("ZREMRANGEBYRANK", Spec::Of(Z)),
    ("ZREMRANGEBYSCORE", Spec::Of(Z)),
    ("ZUNIONSTORE", Spec::ZStore),
];

/// A type name of the options (`string`, `zset`, ...).
pub fn parse_type(name: &str) -> Result<Kind, String> {
    TYPE_NAMES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name.trim()))
        .map(|(_, k)| *k)
        .ok_or_else(|| {
            let names: Vec<&str> = TYPE_NAMES.iter().map(|(n, _)| *n).collect();
            format!("{name:?} is not a type; use one of {}", names.join(", "))
        })
}

/// The name `TYPE` answers for a kind (and `SCAN ... TYPE` takes).
pub fn type_name(kind: Kind) -> &'static str {
    TYPE_NAMES
        .iter()
        .find(|(_, k)| *k == kind)
        .map_or("none", |(n, _)| n)
}

impl TypeRules {
    /// Keeps the kinds in `keep` (none: all) that are not in `exclude`.
    pub fn new(keep: Vec<Kind>, exclude: Vec<Kind>) -> TypeRules {
        let mut dropped = 0u8;
        for (i, (_, kind)) in TYPE_NAMES.iter().enumerate() {
            if (!keep.is_empty() && !keep.contains(kind)) || exclude.contains(kind) {
                dropped |= 1 << i;
            }
        }
        TypeRules { dropped }
    }

    /// Is some type dropped?
    pub fn is_active(&self) -> bool {
        self.dropped != 0
    }

    pub fn keeps(&self, kind: Kind) -> bool {
        let bit = TYPE_NAMES.iter().position(|(_, k)| *k == kind).unwrap_or(0);
        self.dropped & (1 << bit) == 0
    }

    /// The kept types' names, for SCAN ... TYPE (`None`: every type is kept).
    pub fn kept_names(&self) -> Option<Vec<&'static str>> {
        self.is_active().then(|| {
            TYPE_NAMES
                .iter()
                .filter(|(_, k)| self.keeps(*k))
                .map(|(n, _)| *n)
                .collect()
        })
    }

    /// What becomes of stream command `argv` (see the module doc).
    pub fn judge(&self, argv: &[Bytes]) -> TypeVerdict {
        if !self.is_active() || argv.is_empty() {
            return TypeVerdict::Keep;
        }
        let Some(spec) = spec_of(&argv[0]) else {
            return TypeVerdict::Refuse("lockstep does not know which type this command writes, so a type filter cannot judge it (fix: drop it with --drop-command if it writes nothing the task keeps, or drop --types)".into());
        };
        match spec {
            Spec::Any => TypeVerdict::Keep,
            Spec::Of(kind) => self.keep_or(kind, TypeVerdict::Drop),
            Spec::Overwrites(kind, dest) => self.keep_or(kind, delete(dest_keys(argv, dest))),
            Spec::ZStore => self.zstore(argv),
            Spec::Sort => self.sort(argv),
            Spec::Moves => moves(argv),
            Spec::Restore => self.restore(argv),
            Spec::Script => TypeVerdict::Refuse("a script may write keys of any type, which a type filter cannot judge (fix: let the source replicate scripts as their effects, the default since Redis 5, or drop --types)".into()),
        }
    }

    fn keep_or(&self, kind: Kind, otherwise: TypeVerdict) -> TypeVerdict {
        if self.keeps(kind) {
            TypeVerdict::Keep
        } else {
            otherwise
        }
    }

    fn zstore(&self, argv: &[Bytes]) -> TypeVerdict {
        if !self.keeps(Z) {
            return delete(dest_keys(argv, Dest::First));
        }
        if !self.keeps(S) {
            return TypeVerdict::Refuse("it may read sets, which this task drops, into a zset it keeps; the target cannot compute it (fix: keep sets too, or drop zsets)".into());
        }
        TypeVerdict::Keep
    }

    fn sort(&self, argv: &[Bytes]) -> TypeVerdict {
        let dest = dest_keys(argv, Dest::Store);
        if dest.is_empty() {
            return TypeVerdict::Keep; // a plain SORT writes nothing
        }
        if !self.keeps(L) {
            return delete(dest);
        }
        if !(self.keeps(S) && self.keeps(Z)) {
            return TypeVerdict::Refuse("SORT ... STORE may read a set or zset, which this task drops, into a list it keeps; the target cannot compute it (fix: keep sets and zsets too, or drop lists)".into());
        }
        TypeVerdict::Keep
    }

    fn restore(&self, argv: &[Bytes]) -> TypeVerdict {
        let kind = argv.get(3).and_then(|p| crate::rdb::dump::payload_kind(p));
        let Some(kind) = kind else {
            return TypeVerdict::Refuse(
                "its payload's type is unknown, so a type filter cannot judge it".into(),
            );
        };
        let replace = argv
            .iter()
            .skip(4)
            .any(|a| a.eq_ignore_ascii_case(b"REPLACE"));
        let otherwise = if replace {
            delete(dest_keys(argv, Dest::First))
        } else {
            TypeVerdict::Drop
        };
        self.keep_or(kind, otherwise)
    }
}

fn spec_of(name: &[u8]) -> Option<Spec> {
    static INDEX: crate::command_names::LazyIndex = crate::command_names::LazyIndex::new();
    INDEX
        .get(|| Box::new(TABLE.iter().map(|(n, _)| *n)))
        .find(name, |i| TABLE[i].0)
        .map(|i| TABLE[i].1)
}

/// RENAME, RENAMENX, COPY under a type filter (see the module doc); also under
/// hash field drops, whose emptied hashes are absent on the target
/// ([`crate::rules::hash_fields`]).
pub(crate) fn moves(argv: &[Bytes]) -> TypeVerdict {
    let (Some(name), Some(src), Some(dst)) = (argv.first(), argv.get(1), argv.get(2)) else {
        return TypeVerdict::Keep;
    };
    if src == dst {
        return TypeVerdict::Keep;
    }
    let word = |w: &'static [u8]| Bytes::from_static(w);
    let del = |k: &Bytes| vec![word(b"DEL"), k.clone()];
    let copy = vec![word(b"COPY"), src.clone(), dst.clone()];
    if name.eq_ignore_ascii_case(b"COPY") {
        let options = &argv[3..];
        if !options.iter().any(|a| a.eq_ignore_ascii_case(b"REPLACE")) {
            return TypeVerdict::Keep;
        }
        if options.iter().any(|a| a.eq_ignore_ascii_case(b"DB")) {
            return TypeVerdict::Refuse("COPY ... DB ... REPLACE of a value whose type may be dropped: the target cannot tell whether to clear the destination in the other database (fix: drop --types, or synchronize the other database by its own task)".into());
        }
        return TypeVerdict::Into(vec![del(dst), copy]);
    }
    if name.eq_ignore_ascii_case(b"RENAME") {
        return TypeVerdict::Into(vec![del(dst), copy, del(src)]);
    }
    TypeVerdict::Into(vec![copy, del(src)])
}

fn dest_keys(argv: &[Bytes], dest: Dest) -> Vec<Bytes> {
    match dest {
        Dest::First => argv.get(1).cloned().into_iter().collect(),
        Dest::Second => argv.get(2).cloned().into_iter().collect(),
        Dest::Pairs => argv.iter().skip(1).step_by(2).cloned().collect(),
        Dest::Store => argv
            .windows(2)
            .skip(2)
            .filter(|w| {
                w[0].eq_ignore_ascii_case(b"STORE") || w[0].eq_ignore_ascii_case(b"STOREDIST")
            })
            .map(|w| w[1].clone())
            .collect(),
    }
}

fn delete(keys: Vec<Bytes>) -> TypeVerdict {
    if keys.is_empty() {
        return TypeVerdict::Drop;
    }
    let mut del = vec![Bytes::from_static(b"DEL")];
    del.extend(keys);
    TypeVerdict::Into(vec![del])
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

    fn rules(keep: &[&str], exclude: &[&str]) -> TypeRules {
        let kinds = |v: &[&str]| v.iter().map(|n| parse_type(n).expect("type")).collect();
        TypeRules::new(kinds(keep), kinds(exclude))
    }

    fn judge(r: &TypeRules, words: &[&str]) -> TypeVerdict {
        r.judge(&argv(words))
    }

    #[test]
    fn the_table_is_sorted_and_covers_the_key_table() {
        assert!(TABLE.windows(2).all(|w| w[0].0 < w[1].0));
        for (name, _) in crate::keys::table() {
            assert!(spec_of(name.as_bytes()).is_some(), "{name} has no type");
        }
    }

    #[test]
    fn commands_of_dropped_types_are_dropped() {
        let r = rules(&[], &["hash"]);
        assert_eq!(judge(&r, &["HSET", "h", "f", "v"]), TypeVerdict::Drop);
        assert_eq!(judge(&r, &["hset", "h", "f", "v"]), TypeVerdict::Drop);
        assert_eq!(judge(&r, &["SET", "s", "v"]), TypeVerdict::Keep);
        assert_eq!(judge(&r, &["DEL", "h"]), TypeVerdict::Keep);
        assert_eq!(judge(&r, &["FLUSHALL"]), TypeVerdict::Keep);
    }

    #[test]
    fn overwrites_of_a_dropped_type_delete_the_destination() {
        let r = rules(&["hash", "list"], &[]);
        assert_eq!(
            judge(&r, &["SET", "k", "v"]),
            TypeVerdict::Into(vec![argv(&["DEL", "k"])])
        );
        assert_eq!(
            judge(&r, &["MSET", "a", "1", "b", "2"]),
            TypeVerdict::Into(vec![argv(&["DEL", "a", "b"])])
        );
        assert_eq!(
            judge(&r, &["BITOP", "AND", "d", "a", "b"]),
            TypeVerdict::Into(vec![argv(&["DEL", "d"])])
        );
        assert_eq!(
            judge(&r, &["SUNIONSTORE", "d", "a"]),
            TypeVerdict::Into(vec![argv(&["DEL", "d"])])
        );
        assert_eq!(
            judge(&r, &["ZUNIONSTORE", "d", "1", "a"]),
            TypeVerdict::Into(vec![argv(&["DEL", "d"])])
        );
        assert_eq!(judge(&r, &["SORT", "l", "STORE", "d"]), TypeVerdict::Refuse(
            "SORT ... STORE may read a set or zset, which this task drops, into a list it keeps; the target cannot compute it (fix: keep sets and zsets too, or drop lists)".into()));
        assert_eq!(
            judge(&r, &["RESTORE", "k", "0", "\x00x", "REPLACE"]),
            TypeVerdict::Into(vec![argv(&["DEL", "k"])])
        );
        assert_eq!(
            judge(&r, &["RESTORE", "k", "0", "\x00x"]),
            TypeVerdict::Drop
        );
        assert_eq!(
            judge(&r, &["RESTORE", "k", "0", "\x10x"]),
            TypeVerdict::Keep
        );
    }

    #[test]
    fn moves_leave_the_destination_absent_when_the_source_is_dropped() {
        let r = rules(&[], &["stream"]);
        assert_eq!(
            judge(&r, &["RENAME", "a", "b"]),
            TypeVerdict::Into(vec![
                argv(&["DEL", "b"]),
                argv(&["COPY", "a", "b"]),
                argv(&["DEL", "a"])
            ])
        );
        assert_eq!(
            judge(&r, &["RENAMENX", "a", "b"]),
            TypeVerdict::Into(vec![argv(&["COPY", "a", "b"]), argv(&["DEL", "a"])])
        );
        assert_eq!(judge(&r, &["COPY", "a", "b"]), TypeVerdict::Keep);
        assert_eq!(
            judge(&r, &["COPY", "a", "b", "REPLACE"]),
            TypeVerdict::Into(vec![argv(&["DEL", "b"]), argv(&["COPY", "a", "b"])])
        );
        assert!(matches!(
            judge(&r, &["COPY", "a", "b", "DB", "2", "REPLACE"]),
            TypeVerdict::Refuse(_)
        ));
        assert_eq!(judge(&r, &["RENAME", "a", "a"]), TypeVerdict::Keep);
    }

    #[test]
    fn mixed_inputs_and_scripts_are_refused() {
        let r = rules(&[], &["set"]);
        assert!(matches!(
            judge(&r, &["ZUNIONSTORE", "d", "1", "a"]),
            TypeVerdict::Refuse(_)
        ));
        assert!(matches!(
            judge(&r, &["EVAL", "x", "0"]),
            TypeVerdict::Refuse(_)
        ));
        assert!(matches!(
            judge(&r, &["NOSUCHCMD", "k"]),
            TypeVerdict::Refuse(_)
        ));
    }

    #[test]
    fn no_rule_judges_nothing() {
        let r = rules(&[], &[]);
        assert!(!r.is_active());
        assert_eq!(judge(&r, &["NOSUCHCMD", "k"]), TypeVerdict::Keep);
        assert!(!rules(
            &["string", "list", "set", "zset", "hash", "stream", "module"],
            &[]
        )
        .is_active());
    }

    #[test]
    fn type_names_parse() {
        assert_eq!(parse_type("ZSet"), Ok(Kind::ZSet));
        assert!(parse_type("sorted").is_err());
    }
}
