//! Which arguments of a command are keys, for every write command a replication
//! stream can carry.
//!
//! The table is written by hand from the key specifications Redis documents
//! (`COMMAND INFO`, `COMMAND DOCS`), and checked against the servers themselves:
//! `sync/tests/keys_oracle.rs` asks a real 7.0 and a real 8.2 `COMMAND GETKEYS` for
//! a representative invocation of every command here and compares.
//!
//! It is shared by everything that needs key positions: the stream filter
//! ([`crate::filter`], key prefixes and lockstep's own keys) and cluster routing
//! (issue 7: the CRC16 slot of a command comes from these same positions).
//!
//! Positions are indices into `argv` (0 is the command name). Finding them allocates
//! nothing: [`key_indices`] returns an iterator over at most one extra position and
//! one stepped range.
//!
//! Commands with no key (FLUSHALL, SWAPDB, SELECT, PUBLISH, FUNCTION, SCRIPT, ...)
//! have an entry too, with no positions; a command that has no entry at all is
//! [`KeysError::Unknown`]: the caller decides (the filter refuses to guess).

use bytes::Bytes;

/// Where a command's keys are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySpec {
    /// No key arguments.
    None,
    /// `argv[first]`, `argv[first + step]`, ... up to `argv[last]`, where a negative
    /// `last` counts from the end (`-1` is the last argument, `-2` the one before).
    Range {
        first: usize,
        last: isize,
        step: usize,
    },
    /// A count of keys at `argv[at]`, the keys right after it; plus, when `dest` is
    /// set, the key at `argv[dest]` (ZUNIONSTORE's destination).
    NumKeys { at: usize, dest: Option<usize> },
    /// The key at `argv[1]` and, after the keyword `STORE` (or `STOREDIST` when
    /// `storedist`), another key (SORT, GEORADIUS, GEORADIUSBYMEMBER).
    KeyAndStore { storedist: bool },
}

const fn range(first: usize, last: isize, step: usize) -> KeySpec {
    KeySpec::Range { first, last, step }
}
/// One key at argv[1].
const FIRST: KeySpec = range(1, 1, 1);
/// Keys at argv[1] and argv[2].
const FIRST_TWO: KeySpec = range(1, 2, 1);
/// Every argument is a key.
const ALL: KeySpec = range(1, -1, 1);
/// Every argument but the last (a timeout) is a key.
const ALL_BUT_LAST: KeySpec = range(1, -2, 1);
/// Key-value pairs.
const PAIRS: KeySpec = range(1, -1, 2);
/// One key at argv[2] (after a subcommand).
const SECOND: KeySpec = range(2, 2, 1);
/// Keys from argv[2] to the end (BITOP op dest key...).
const FROM_SECOND: KeySpec = range(2, -1, 1);

/// The table, sorted by name (a test checks the order; lookups are binary searches).
static TABLE: &[(&str, KeySpec)] = &[
    ("APPEND", FIRST),
    ("BITFIELD", FIRST),
    ("BITOP", FROM_SECOND),
    ("BLMOVE", FIRST_TWO),
    ("BLMPOP", KeySpec::NumKeys { at: 2, dest: None }),
    ("BLPOP", ALL_BUT_LAST),
    ("BRPOP", ALL_BUT_LAST),
    ("BRPOPLPUSH", FIRST_TWO),
    ("BZMPOP", KeySpec::NumKeys { at: 2, dest: None }),
    ("BZPOPMAX", ALL_BUT_LAST),
    ("BZPOPMIN", ALL_BUT_LAST),
    ("COPY", FIRST_TWO),
    ("DECR", FIRST),
    ("DECRBY", FIRST),
    ("DEL", ALL),
    ("EVAL", KeySpec::NumKeys { at: 2, dest: None }),
    ("EVALSHA", KeySpec::NumKeys { at: 2, dest: None }),
    ("EVALSHA_RO", KeySpec::NumKeys { at: 2, dest: None }),
    ("EVAL_RO", KeySpec::NumKeys { at: 2, dest: None }),
    ("EXEC", KeySpec::None),
    ("EXPIRE", FIRST),
    ("EXPIREAT", FIRST),
    ("FCALL", KeySpec::NumKeys { at: 2, dest: None }),
    ("FCALL_RO", KeySpec::NumKeys { at: 2, dest: None }),
    ("FLUSHALL", KeySpec::None),
    ("FLUSHDB", KeySpec::None),
    ("FUNCTION", KeySpec::None),
    ("GEOADD", FIRST),
    ("GEORADIUS", KeySpec::KeyAndStore { storedist: true }),
    (
        "GEORADIUSBYMEMBER",
        KeySpec::KeyAndStore { storedist: true },
    ),
    ("GEOSEARCHSTORE", FIRST_TWO),
    ("GETDEL", FIRST),
    ("GETEX", FIRST),
    ("GETSET", FIRST),
    ("HDEL", FIRST),
    ("HEXPIRE", FIRST),
    ("HEXPIREAT", FIRST),
    ("HGETDEL", FIRST),
    ("HGETEX", FIRST),
    ("HINCRBY", FIRST),
    ("HINCRBYFLOAT", FIRST),
    ("HMSET", FIRST),
    ("HPERSIST", FIRST),
    ("HPEXPIRE", FIRST),
    ("HPEXPIREAT", FIRST),
    ("HSET", FIRST),
    ("HSETEX", FIRST),
    ("HSETNX", FIRST),
    ("INCR", FIRST),
    ("INCRBY", FIRST),
    ("INCRBYFLOAT", FIRST),
    ("LINSERT", FIRST),
    ("LMOVE", FIRST_TWO),
    ("LMPOP", KeySpec::NumKeys { at: 1, dest: None }),
    ("LPOP", FIRST),
    ("LPUSH", FIRST),
    ("LPUSHX", FIRST),
    ("LREM", FIRST),
    ("LSET", FIRST),
    ("LTRIM", FIRST),
    ("MOVE", FIRST),
    ("MSET", PAIRS),
    ("MSETNX", PAIRS),
    ("MULTI", KeySpec::None),
    ("PERSIST", FIRST),
    ("PEXPIRE", FIRST),
    ("PEXPIREAT", FIRST),
    ("PFADD", FIRST),
    ("PFCOUNT", ALL),
    ("PFMERGE", ALL),
    ("PING", KeySpec::None),
    ("PSETEX", FIRST),
    ("PUBLISH", KeySpec::None),
    ("RENAME", FIRST_TWO),
    ("RENAMENX", FIRST_TWO),
    ("REPLCONF", KeySpec::None),
    ("RESTORE", FIRST),
    ("RESTORE-ASKING", FIRST),
    ("RPOP", FIRST),
    ("RPOPLPUSH", FIRST_TWO),
    ("RPUSH", FIRST),
    ("RPUSHX", FIRST),
    ("SADD", FIRST),
    ("SCRIPT", KeySpec::None),
    ("SDIFFSTORE", ALL),
    ("SELECT", KeySpec::None),
    ("SET", FIRST),
    ("SETBIT", FIRST),
    ("SETEX", FIRST),
    ("SETNX", FIRST),
    ("SETRANGE", FIRST),
    ("SINTERSTORE", ALL),
    ("SMOVE", FIRST_TWO),
    ("SORT", KeySpec::KeyAndStore { storedist: false }),
    ("SPOP", FIRST),
    // SPUBLISH's channel is no key (COMMAND GETKEYS agrees), but a cluster routes it
    // by the slot of argv[1] like one: cluster routing must special-case it.
    ("SPUBLISH", KeySpec::None),
    ("SREM", FIRST),
    ("SUNIONSTORE", ALL),
    ("SWAPDB", KeySpec::None),
    ("TOUCH", ALL),
    ("UNLINK", ALL),
    ("XACK", FIRST),
    ("XACKDEL", FIRST),
    ("XADD", FIRST),
    ("XAUTOCLAIM", FIRST),
    ("XCLAIM", FIRST),
    ("XDEL", FIRST),
    ("XDELEX", FIRST),
    ("XGROUP", SECOND),
    ("XSETID", FIRST),
    ("XTRIM", FIRST),
    ("ZADD", FIRST),
    (
        "ZDIFFSTORE",
        KeySpec::NumKeys {
            at: 2,
            dest: Some(1),
        },
    ),
    ("ZINCRBY", FIRST),
    (
        "ZINTERSTORE",
        KeySpec::NumKeys {
            at: 2,
            dest: Some(1),
        },
    ),
    ("ZMPOP", KeySpec::NumKeys { at: 1, dest: None }),
    ("ZPOPMAX", FIRST),
    ("ZPOPMIN", FIRST),
    ("ZRANGESTORE", FIRST_TWO),
    ("ZREM", FIRST),
    ("ZREMRANGEBYLEX", FIRST),
    ("ZREMRANGEBYRANK", FIRST),
    ("ZREMRANGEBYSCORE", FIRST),
    (
        "ZUNIONSTORE",
        KeySpec::NumKeys {
            at: 2,
            dest: Some(1),
        },
    ),
];

/// Why the keys of a command are not known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeysError {
    #[error("{0} is not in lockstep's table of commands and their keys")]
    Unknown(String),
    #[error("{command}: {reason}")]
    Malformed {
        command: String,
        reason: &'static str,
    },
}

/// Every command of the table, with where its keys are (for tests and docs).
pub fn table() -> &'static [(&'static str, KeySpec)] {
    TABLE
}

/// Where the keys of the command `name` are (ASCII case-insensitive).
pub fn key_spec(name: &[u8]) -> Option<KeySpec> {
    static INDEX: crate::command_names::LazyIndex = crate::command_names::LazyIndex::new();
    INDEX
        .get(|| Box::new(TABLE.iter().map(|(n, _)| *n)))
        .find(name, |i| TABLE[i].0)
        .map(|i| TABLE[i].1)
}

/// The positions in `argv` of the command's keys, in argument order.
pub fn key_indices(argv: &[Bytes]) -> Result<KeyIndices, KeysError> {
    let name = argv.first().map(|b| &b[..]).unwrap_or(b"");
    let spec =
        key_spec(name).ok_or_else(|| KeysError::Unknown(String::from_utf8_lossy(name).into()))?;
    let len = argv.len();
    let malformed = |reason| KeysError::Malformed {
        command: String::from_utf8_lossy(name).to_uppercase(),
        reason,
    };
    let empty = KeyIndices {
        extra: None,
        next: 0,
        end: 0,
        step: 1,
        extra_last: false,
    };
    Ok(match spec {
        KeySpec::None => empty,
        KeySpec::Range { first, last, step } => {
            let last = if last < 0 {
                len as isize + last
            } else {
                last.min(len as isize - 1)
            };
            if last < first as isize {
                return Ok(empty);
            }
            KeyIndices {
                next: first,
                end: last as usize + 1,
                step,
                ..empty
            }
        }
        KeySpec::NumKeys { at, dest } => {
            let count: usize = argv
                .get(at)
                .and_then(|a| std::str::from_utf8(a).ok())
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| malformed("the number of keys is not a number"))?;
            // The count comes from the stream: checked, so that a huge one is this
            // error, never an overflow (a panic, or a wrapped sum passing the check).
            let end = at
                .checked_add(1)
                .and_then(|first| first.checked_add(count))
                .filter(|&end| end <= len)
                .ok_or_else(|| malformed("more keys announced than arguments given"))?;
            KeyIndices {
                extra: dest.filter(|d| *d < len),
                next: at + 1,
                end,
                ..empty
            }
        }
        KeySpec::KeyAndStore { storedist } => {
            // The last STORE/STOREDIST wins, as in Redis.
            let store = (2..len).rev().find(|&i| {
                i + 1 < len
                    && (argv[i].eq_ignore_ascii_case(b"STORE")
                        || (storedist && argv[i].eq_ignore_ascii_case(b"STOREDIST")))
            });
            KeyIndices {
                extra: store.map(|i| i + 1),
                next: 1,
                end: 2.min(len),
                extra_last: true,
                ..empty
            }
        }
    })
}

/// Commands whose keys stand alone, so that one can be split into several commands
/// of the same kind over parts of its keys (by the filter's key rules, by cluster
/// hash slot): the arguments per key (DEL, UNLINK, TOUCH: 1; MSET, MSETNX: 2, key
/// and value) and the name of the parts when it changes (MSETNX's parts are MSETs:
/// a stream carries an MSETNX only when it set every key).
pub fn splittable(name: &[u8]) -> Option<(usize, Option<&'static [u8]>)> {
    let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
    if is("DEL") || is("UNLINK") || is("TOUCH") {
        Some((1, None))
    } else if is("MSET") || is("MSETNX") {
        Some((2, Some(b"MSET")))
    } else {
        None
    }
}

/// A [`splittable`] command cut into one command per group of its keys (`group`
/// of each key; a cluster target groups by hash slot), the groups in the order
/// their first key comes; `None` when it is not splittable. One pass over the keys.
pub fn split_into<G: PartialEq + Copy>(
    argv: &[Bytes],
    group: impl Fn(&[u8]) -> G,
) -> Option<Vec<(G, Vec<Bytes>)>> {
    let name = argv.first()?;
    let (width, rename) = splittable(name)?;
    let indices = key_indices(argv).ok()?;
    let head = rename.map_or_else(|| name.clone(), Bytes::from_static);
    let mut parts: Vec<(G, Vec<Bytes>)> = Vec::new();
    for i in indices {
        let key_group = group(&argv[i]);
        let at = match parts.iter().position(|(g, _)| *g == key_group) {
            Some(at) => at,
            None => {
                parts.push((key_group, vec![head.clone()]));
                parts.len() - 1
            }
        };
        parts[at]
            .1
            .extend(argv[i..(i + width).min(argv.len())].iter().cloned());
    }
    Some(parts)
}

/// The part of a [`splittable`] command made of the keys `keep` says yes to (with
/// their values), or `None` when it is not splittable.
pub fn split_part(argv: &[Bytes], keep: impl Fn(&[u8]) -> bool) -> Option<Vec<Bytes>> {
    let parts = split_into(argv, keep)?;
    Some(match parts.into_iter().find(|(kept, _)| *kept) {
        Some((_, part)) => part,
        None => {
            let (_, rename) = splittable(&argv[0])?;
            vec![rename.map_or_else(|| argv[0].clone(), Bytes::from_static)]
        }
    })
}

/// The positions of a command's keys: at most one extra position and one stepped range.
#[derive(Clone, Debug)]
pub struct KeyIndices {
    extra: Option<usize>,
    /// The extra position comes after the range (SORT's STORE key) rather than before
    /// it (ZUNIONSTORE's destination).
    extra_last: bool,
    next: usize,
    end: usize,
    step: usize,
}

impl Iterator for KeyIndices {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        if !self.extra_last {
            if let Some(extra) = self.extra.take() {
                return Some(extra);
            }
        }
        if self.next < self.end {
            let at = self.next;
            self.next += self.step;
            return Some(at);
        }
        self.extra.take()
    }
}

impl KeyIndices {
    /// No keys at all.
    pub fn is_empty(&self) -> bool {
        self.extra.is_none() && self.next >= self.end
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A command written as words (for tests here and in the filter).
    pub(crate) fn argv(line: &str) -> Vec<Bytes> {
        line.split_whitespace()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    fn keys(line: &str) -> Vec<String> {
        let argv = argv(line);
        key_indices(&argv)
            .expect("known command")
            .map(|i| String::from_utf8_lossy(&argv[i]).into_owned())
            .collect()
    }

    #[test]
    fn the_table_is_sorted_and_unique() {
        for pair in TABLE.windows(2) {
            assert!(pair[0].0 < pair[1].0, "{} before {}", pair[0].0, pair[1].0);
        }
        assert!(TABLE.iter().all(|(n, _)| n.len() <= 24));
    }

    #[test]
    fn positions_of_each_form() {
        assert_eq!(keys("set a 1"), ["a"]);
        assert_eq!(keys("Del a b c"), ["a", "b", "c"]);
        assert_eq!(keys("mset a 1 b 2"), ["a", "b"]);
        assert_eq!(keys("blpop a b 0"), ["a", "b"]);
        assert_eq!(keys("zunionstore d 2 a b weights 1 2"), ["d", "a", "b"]);
        assert_eq!(keys("eval s 2 a b x"), ["a", "b"]);
        assert_eq!(keys("eval s 0"), Vec::<String>::new());
        assert_eq!(keys("sort k by x store d"), ["k", "d"]);
        assert_eq!(keys("georadius k 1 2 3 m storedist d"), ["k", "d"]);
        assert_eq!(keys("xgroup create s g $"), ["s"]);
        assert_eq!(keys("bitop and d a b"), ["d", "a", "b"]);
        assert_eq!(keys("flushall"), Vec::<String>::new());
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert!(matches!(
            key_indices(&argv("frobnicate a")),
            Err(KeysError::Unknown(_))
        ));
        assert!(key_indices(&argv("eval s 5 a")).is_err());
        assert!(key_indices(&argv("eval s x a")).is_err());
        assert!(key_indices(&[]).is_err());
        assert!(key_indices(&argv("set")).expect("known").is_empty());
        let long = "X".repeat(100);
        assert!(key_indices(&argv(&long)).is_err());
    }

    /// One argument of a random command: counts (small, huge, negative), the
    /// keywords the table looks for, or any bytes.
    fn any_argument() -> impl proptest::strategy::Strategy<Value = Bytes> {
        use proptest::prelude::*;
        prop_oneof![
            3 => (0usize..6).prop_map(|n| n.to_string()),
            3 => prop_oneof![Just(usize::MAX), Just(usize::MAX - 1), any::<usize>()]
                .prop_map(|n| n.to_string()),
            1 => Just("-1".to_owned()),
            1 => Just("STORE".to_owned()),
            1 => Just("storedist".to_owned()),
            2 => "[a-z]{0,3}",
        ]
        .prop_map(Bytes::from)
    }

    /// A command of the table, those with a count of keys as often as the others.
    fn any_name() -> impl proptest::strategy::Strategy<Value = &'static str> {
        use proptest::prelude::*;
        let counted: Vec<&str> = TABLE
            .iter()
            .filter(|(_, spec)| matches!(spec, KeySpec::NumKeys { .. }))
            .map(|(name, _)| *name)
            .collect();
        let all: Vec<&str> = TABLE.iter().map(|(name, _)| *name).collect();
        prop_oneof![
            proptest::sample::select(counted),
            proptest::sample::select(all)
        ]
    }

    proptest::proptest! {
        /// Any command of the table over any arguments: no panic, and every key
        /// position is an argument (never the name, never past the end).
        #[test]
        fn every_position_is_inside_argv(
            name in any_name(),
            args in proptest::collection::vec(any_argument(), 0..8),
        ) {
            let mut argv = vec![Bytes::from_static(name.as_bytes())];
            argv.extend(args);
            if let Ok(indices) = key_indices(&argv) {
                let positions: Vec<usize> = indices.take(argv.len() + 1).collect();
                proptest::prop_assert!(positions.len() < argv.len(), "{:?}", positions);
                proptest::prop_assert!(
                    positions.iter().all(|&i| (1..argv.len()).contains(&i)),
                    "{:?} for {:?}", positions, argv
                );
            }
            let _ = split_into(&argv, |key| key.len());
        }
    }

    /// A numkeys from the stream near `usize::MAX` made `at + count` overflow: a
    /// panic with overflow checks, and without them a wrapped sum that passed the
    /// bounds check. It is the same error as any count beyond the arguments.
    #[test]
    fn a_huge_numkeys_is_an_error_not_an_overflow() {
        for count in [usize::MAX, usize::MAX - 1, usize::MAX - 2] {
            for command in ["eval s", "lmpop", "zunionstore d", "fcall f"] {
                let line = format!("{command} {count} a b");
                assert_eq!(
                    key_indices(&argv(&line)).map(|k| k.collect::<Vec<_>>()),
                    Err(KeysError::Malformed {
                        command: command.split(' ').next().unwrap_or("").to_uppercase(),
                        reason: "more keys announced than arguments given",
                    }),
                    "{line}"
                );
            }
        }
    }
}
