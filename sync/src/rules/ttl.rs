//! TTL rules (`--ttl-remove`, `--ttl-cap`, `--ttl-set`): what expiry each key gets on
//! the target, in the full copy ([`TtlRule::copy_expiry`]) and in the stream
//! ([`TtlRule::rewrite`]). Key expiries only; hash field expiries are not touched.
//!
//! - `Remove`: every key is written without an expiry. A key that expires on the
//!   source still leaves the target: the source replicates its expiry as a DEL.
//! - `Cap(c)`: an expiry later than `c` after the moment lockstep writes it is
//!   written as that moment + `c`; keys without one stay without.
//! - `Set(d)`: every key expires `d` after the last command lockstep wrote that
//!   names it; the source's expiries are not used.
//!
//! The rules run after `--extend-ttl` (only `Cap` combines with it, checked by the
//! filter) and before the target transaction, so a restart rewrites each command
//! once. `Cap` and `Set` read the local clock: the same command replayed later would
//! get a later expiry, but the checkpoint is exact, so no command is applied twice.
//!
//! A command the source replicated was applied there, so the NX / XX / GT / LT
//! options of EXPIRE and its kin are dropped under a rule: the target must set what
//! the rule says, not re-decide against its own (already rewritten) expiry.

use std::time::Duration;

use bytes::Bytes;

use crate::keys::key_indices;

/// What expiry the target's keys get.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TtlRule {
    /// The source's expiry (with `--extend-ttl`).
    #[default]
    Keep,
    Remove,
    Cap(Duration),
    Set(Duration),
}

/// What a stream command becomes under a rule.
#[derive(Debug, PartialEq, Eq)]
pub enum TtlRewrite {
    Unchanged,
    Drop,
    Into(Vec<Vec<Bytes>>),
}

impl TtlRule {
    pub fn is_keep(&self) -> bool {
        matches!(self, TtlRule::Keep)
    }

    /// The expiry (unix ms) the full copy writes for a key whose source expiry is
    /// `expiry` (already extended), at `now_ms`.
    pub fn copy_expiry(&self, expiry: Option<i64>, now_ms: i64) -> Option<i64> {
        match *self {
            TtlRule::Keep => expiry,
            TtlRule::Remove => None,
            TtlRule::Cap(cap) => expiry.map(|e| e.min(now_ms.saturating_add(ms(cap)))),
            TtlRule::Set(set) => Some(now_ms.saturating_add(ms(set))),
        }
    }

    /// `argv` (already extended) under the rule, at `now_ms`.
    pub fn rewrite(&self, argv: &[Bytes], now_ms: i64) -> TtlRewrite {
        self.rewrite_at(argv, || now_ms)
    }

    /// [`TtlRule::rewrite`] reading the clock (`now_ms`) only for a command that
    /// sets an expiry: most commands of a stream set none, and the clock cost 3% of
    /// the stream's CPU under `--ttl-cap` (perf, session 10).
    pub fn rewrite_at(&self, argv: &[Bytes], now_ms: impl Fn() -> i64) -> TtlRewrite {
        if self.is_keep() || argv.is_empty() {
            return TtlRewrite::Unchanged;
        }
        let name = &argv[0];
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        let unit_ms = if is("EXPIRE") || is("EXPIREAT") {
            Some(1000)
        } else if is("PEXPIRE") || is("PEXPIREAT") {
            Some(1)
        } else {
            None
        };
        if let Some(unit) = unit_ms {
            let absolute = is("EXPIREAT") || is("PEXPIREAT");
            return self.expire_command(argv, unit, absolute, now_ms());
        }
        if is("SET") {
            if argv.len() <= 3 && !matches!(self, TtlRule::Set(_)) {
                return TtlRewrite::Unchanged; // no expiry option to change
            }
            return changed(argv, self.set_command(argv, now_ms()));
        }
        if is("SETEX") || is("PSETEX") {
            let unit = if is("SETEX") { 1000 } else { 1 };
            return self.setex_command(argv, unit, now_ms());
        }
        if is("RESTORE") {
            return changed(argv, self.restore_command(argv, now_ms()));
        }
        if is("GETEX") {
            return self.getex_command(argv, now_ms());
        }
        if let TtlRule::Set(set) = *self {
            if is("PERSIST") {
                return TtlRewrite::Into(vec![pexpire(&argv[1..2], set)]);
            }
            return self.refresh_named_keys(argv, set);
        }
        TtlRewrite::Unchanged
    }

    /// EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT key time [NX|XX|GT|LT].
    fn expire_command(&self, argv: &[Bytes], unit: i64, absolute: bool, now: i64) -> TtlRewrite {
        let (Some(key), Some(time)) = (argv.get(1), argv.get(2).and_then(|t| number(t))) else {
            return TtlRewrite::Unchanged; // malformed: the target refuses it as the source would
        };
        let out = match *self {
            TtlRule::Keep => return TtlRewrite::Unchanged,
            TtlRule::Remove => return TtlRewrite::Drop,
            TtlRule::Set(set) => pexpire(std::slice::from_ref(key), set),
            TtlRule::Cap(cap) => {
                let capped = cap_time(time, unit, absolute, cap, now);
                vec![argv[0].clone(), key.clone(), text(capped)]
            }
        };
        TtlRewrite::Into(vec![out])
    }

    /// SET key value [EX|PX|EXAT|PXAT t | KEEPTTL] [NX|XX] [GET].
    fn set_command(&self, argv: &[Bytes], now: i64) -> Vec<Bytes> {
        let mut out: Vec<Bytes> = argv[..argv.len().min(3)].to_vec();
        let mut i = 3;
        while i < argv.len() {
            let word = &argv[i];
            let option = time_option(word);
            let keepttl = word.eq_ignore_ascii_case(b"KEEPTTL");
            match (option, argv.get(i + 1)) {
                (Some((unit, absolute)), Some(value)) => {
                    if let (TtlRule::Cap(cap), Some(t)) = (*self, number(value)) {
                        out.push(word.clone());
                        out.push(text(cap_time(t, unit, absolute, cap, now)));
                    }
                    i += 2;
                    continue;
                }
                _ if keepttl && matches!(self, TtlRule::Set(_)) => {}
                _ => out.push(word.clone()),
            }
            i += 1;
        }
        if let TtlRule::Set(set) = *self {
            out.push(Bytes::from_static(b"PX"));
            out.push(text(ms(set)));
        }
        out
    }

    /// SETEX / PSETEX key time value.
    fn setex_command(&self, argv: &[Bytes], unit: i64, now: i64) -> TtlRewrite {
        let (Some(key), Some(time), Some(value)) = (
            argv.get(1),
            argv.get(2).and_then(|t| number(t)),
            argv.get(3),
        ) else {
            return TtlRewrite::Unchanged;
        };
        let out = match *self {
            TtlRule::Keep => return TtlRewrite::Unchanged,
            TtlRule::Remove => vec![Bytes::from_static(b"SET"), key.clone(), value.clone()],
            TtlRule::Set(set) => vec![
                Bytes::from_static(b"PSETEX"),
                key.clone(),
                text(ms(set)),
                value.clone(),
            ],
            TtlRule::Cap(cap) => vec![
                argv[0].clone(),
                key.clone(),
                text(cap_time(time, unit, false, cap, now)),
                value.clone(),
            ],
        };
        TtlRewrite::Into(vec![out])
    }

    /// RESTORE key ttl payload [REPLACE] [ABSTTL] [IDLETIME s] [FREQ f].
    fn restore_command(&self, argv: &[Bytes], now: i64) -> Vec<Bytes> {
        let mut out = argv.to_vec();
        let absolute = argv
            .iter()
            .skip(4)
            .any(|a| a.eq_ignore_ascii_case(b"ABSTTL"));
        let Some(ttl) = argv.get(2).and_then(|t| number(t)) else {
            return out;
        };
        let new_ttl = match *self {
            TtlRule::Keep => return out,
            TtlRule::Remove => 0,
            TtlRule::Set(set) => ms(set),
            TtlRule::Cap(_) if ttl == 0 => 0,
            TtlRule::Cap(cap) => cap_time(ttl, 1, absolute, cap, now),
        };
        out[2] = text(new_ttl);
        if !matches!(self, TtlRule::Cap(_)) {
            // A relative ttl (or none) from here on.
            let mut at = 4;
            while at < out.len() {
                if out[at].eq_ignore_ascii_case(b"ABSTTL") {
                    out.remove(at);
                } else {
                    at += 1;
                }
            }
        }
        out
    }

    /// GETEX key [EX|PX|EXAT|PXAT t | PERSIST] (replicated by Redis as PEXPIREAT or
    /// PERSIST; handled in case a source sends it as given).
    fn getex_command(&self, argv: &[Bytes], now: i64) -> TtlRewrite {
        let option = argv.get(2).and_then(|w| time_option(w));
        let value = argv.get(3).and_then(|v| number(v));
        match (*self, option, value) {
            (TtlRule::Set(set), _, _) => TtlRewrite::Into(vec![pexpire(&argv[1..2], set)]),
            (TtlRule::Remove, Some(_), _) => TtlRewrite::Drop,
            (TtlRule::Cap(cap), Some((unit, absolute)), Some(t)) => {
                let mut out = argv.to_vec();
                out[3] = text(cap_time(t, unit, absolute, cap, now));
                TtlRewrite::Into(vec![out])
            }
            _ => TtlRewrite::Unchanged,
        }
    }

    /// Under `Set`: the command, then `PEXPIRE key d` for each key it names in the
    /// current database.
    fn refresh_named_keys(&self, argv: &[Bytes], set: Duration) -> TtlRewrite {
        let name = &argv[0];
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        if is("DEL") || is("UNLINK") || is("MOVE") {
            return TtlRewrite::Unchanged; // the keys leave this database
        }
        let Ok(indices) = key_indices(argv) else {
            return TtlRewrite::Unchanged; // no keys known: nothing to refresh
        };
        // COPY ... DB n writes its destination in another database.
        let copy_elsewhere =
            is("COPY") && argv.iter().skip(3).any(|a| a.eq_ignore_ascii_case(b"DB"));
        let mut out = vec![argv.to_vec()];
        for i in indices {
            if copy_elsewhere && i == 2 {
                continue;
            }
            let key = std::slice::from_ref(&argv[i]);
            if !out[1..].iter().any(|c| c[1] == key[0]) {
                out.push(pexpire(key, set));
            }
        }
        if out.len() == 1 {
            return TtlRewrite::Unchanged;
        }
        TtlRewrite::Into(out)
    }
}

/// `out`, unless it is `argv` again.
fn changed(argv: &[Bytes], out: Vec<Bytes>) -> TtlRewrite {
    if out.as_slice() == argv {
        TtlRewrite::Unchanged
    } else {
        TtlRewrite::Into(vec![out])
    }
}

/// `time` in `unit` ms (relative, or absolute unix time), capped at `now + cap`.
fn cap_time(time: i64, unit: i64, absolute: bool, cap: Duration, now: i64) -> i64 {
    let cap_ms = ms(cap);
    if absolute {
        let limit = now.saturating_add(cap_ms) / unit;
        time.min(limit)
    } else {
        time.min(cap_ms / unit)
    }
}

/// `EX`, `PX`, `EXAT`, `PXAT`: (unit in ms, absolute).
fn time_option(word: &[u8]) -> Option<(i64, bool)> {
    [
        (&b"EX"[..], 1000, false),
        (b"PX", 1, false),
        (b"EXAT", 1000, true),
        (b"PXAT", 1, true),
    ]
    .iter()
    .find(|(w, _, _)| word.eq_ignore_ascii_case(w))
    .map(|&(_, unit, absolute)| (unit, absolute))
}

fn pexpire(key: &[Bytes], set: Duration) -> Vec<Bytes> {
    vec![
        Bytes::from_static(b"PEXPIRE"),
        key[0].clone(),
        text(ms(set)),
    ]
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn number(bytes: &[u8]) -> Option<i64> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

fn text(n: i64) -> Bytes {
    Bytes::from(n.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;
    const HOUR: Duration = Duration::from_secs(3600);

    fn argv(words: &[&str]) -> Vec<Bytes> {
        words
            .iter()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    fn into(rule: TtlRule, words: &[&str]) -> Vec<Vec<String>> {
        match rule.rewrite(&argv(words), NOW) {
            TtlRewrite::Into(commands) => commands
                .iter()
                .map(|c| {
                    c.iter()
                        .map(|a| String::from_utf8_lossy(a).into_owned())
                        .collect()
                })
                .collect(),
            other => panic!("{words:?}: {other:?}"),
        }
    }

    #[test]
    fn remove_drops_every_key_expiry() {
        let r = TtlRule::Remove;
        assert_eq!(
            r.rewrite(&argv(&["PEXPIREAT", "k", "1"]), NOW),
            TtlRewrite::Drop
        );
        assert_eq!(
            r.rewrite(&argv(&["EXPIRE", "k", "9", "GT"]), NOW),
            TtlRewrite::Drop
        );
        assert_eq!(
            into(r, &["SET", "k", "v", "PXAT", "5", "NX"]),
            [["SET", "k", "v", "NX"]]
        );
        assert_eq!(into(r, &["SETEX", "k", "5", "v"]), [["SET", "k", "v"]]);
        assert_eq!(
            into(r, &["RESTORE", "k", "5", "p", "REPLACE", "ABSTTL"]),
            [["RESTORE", "k", "0", "p", "REPLACE"]]
        );
        assert_eq!(
            r.rewrite(&argv(&["HSET", "h", "f", "v"]), NOW),
            TtlRewrite::Unchanged
        );
        assert_eq!(r.copy_expiry(Some(NOW + 5), NOW), None);
    }

    #[test]
    fn cap_shortens_only_what_is_longer() {
        let r = TtlRule::Cap(HOUR);
        let limit = (NOW + 3_600_000).to_string();
        assert_eq!(
            into(r, &["PEXPIREAT", "k", &(NOW + 10).to_string()]),
            [["PEXPIREAT", "k", &(NOW + 10).to_string()]]
        );
        assert_eq!(
            into(r, &["PEXPIREAT", "k", &(NOW + 9_999_999).to_string(), "GT"]),
            [["PEXPIREAT", "k", &limit]]
        );
        assert_eq!(
            into(r, &["EXPIRE", "k", "999999"]),
            [["EXPIRE", "k", "3600"]]
        );
        assert_eq!(
            into(r, &["SET", "k", "v", "EX", "999999"]),
            [["SET", "k", "v", "EX", "3600"]]
        );
        assert_eq!(
            r.rewrite(&argv(&["SET", "k", "v"]), NOW),
            TtlRewrite::Unchanged
        );
        assert_eq!(
            r.rewrite(&argv(&["RESTORE", "k", "0", "p"]), NOW),
            TtlRewrite::Unchanged
        );
        assert_eq!(
            into(
                r,
                &[
                    "RESTORE",
                    "k",
                    &(NOW + 9_999_999).to_string(),
                    "p",
                    "ABSTTL"
                ]
            ),
            [["RESTORE", "k", &limit, "p", "ABSTTL"]]
        );
        assert_eq!(r.copy_expiry(None, NOW), None);
        assert_eq!(r.copy_expiry(Some(NOW + 5), NOW), Some(NOW + 5));
        assert_eq!(
            r.copy_expiry(Some(NOW + 9_999_999), NOW),
            Some(NOW + 3_600_000)
        );
    }

    #[test]
    fn set_gives_every_named_key_the_same_ttl() {
        let r = TtlRule::Set(HOUR);
        assert_eq!(
            into(r, &["PEXPIREAT", "k", "5", "NX"]),
            [["PEXPIRE", "k", "3600000"]]
        );
        assert_eq!(into(r, &["PERSIST", "k"]), [["PEXPIRE", "k", "3600000"]]);
        assert_eq!(
            into(r, &["SET", "k", "v", "KEEPTTL"]),
            [["SET", "k", "v", "PX", "3600000"]]
        );
        assert_eq!(
            into(r, &["SET", "k", "v", "PXAT", "9", "XX"]),
            [["SET", "k", "v", "XX", "PX", "3600000"]]
        );
        assert_eq!(
            into(r, &["SETEX", "k", "5", "v"]),
            [["PSETEX", "k", "3600000", "v"]]
        );
        assert_eq!(
            into(r, &["RPUSH", "l", "a"]),
            [vec!["RPUSH", "l", "a"], vec!["PEXPIRE", "l", "3600000"]]
        );
        assert_eq!(
            into(r, &["RENAME", "a", "b"]),
            [
                vec!["RENAME", "a", "b"],
                vec!["PEXPIRE", "a", "3600000"],
                vec!["PEXPIRE", "b", "3600000"]
            ]
        );
        assert_eq!(
            into(r, &["COPY", "a", "b", "DB", "3"]),
            [
                vec!["COPY", "a", "b", "DB", "3"],
                vec!["PEXPIRE", "a", "3600000"]
            ]
        );
        assert_eq!(r.rewrite(&argv(&["DEL", "a"]), NOW), TtlRewrite::Unchanged);
        assert_eq!(r.rewrite(&argv(&["FLUSHALL"]), NOW), TtlRewrite::Unchanged);
        assert_eq!(r.copy_expiry(None, NOW), Some(NOW + 3_600_000));
    }
}
