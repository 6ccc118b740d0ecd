//! What the target must hold after a scripted key's commands: an in-memory model of
//! the keys the commands write, interpreted from the commands themselves (strings,
//! lists, sets, sorted sets, hashes with field expiries, key expiries, and opaque
//! `RESTORE` payloads of streams and module values).
//!
//! Known commands: the ones a recreate produces (`SET`, `SETRANGE`, `DEL`, `RPUSH`,
//! `SADD`, `ZADD`, `HSET`, `HPEXPIREAT ... FIELDS`, `PEXPIREAT`, `RESTORE`) and the
//! common ones a script returns instead (`UNLINK`, `LPUSH`, `HMSET`, `HDEL`, `SREM`,
//! `ZREM`, `EXPIRE`, `PEXPIRE`, `EXPIREAT`, `PERSIST`, `SET` with `EX` / `PX` / `EXAT`
//! / `PXAT` / `KEEPTTL` / `NX` / `XX`). Any other command, or an option the model does
//! not know, makes the model [`Model::unknown`]: the key is then NOT VERIFIED, the
//! reason naming the command. Pure: no connection, no clock (the caller passes
//! "now" for relative expiries).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// A key's expiry as the commands set it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// At this unix time (ms): `PEXPIREAT`, `EXPIREAT`, `SET ... PXAT / EXAT`,
    /// `RESTORE ... ABSTTL`.
    At(i64),
    /// Relative (`EXPIRE`, `PEXPIRE`, `SET EX / PX`, `RESTORE` without ABSTTL): the
    /// sync applied it at a time verify does not know, so the target's expiry must
    /// lie after the read and at most this long after verify's "now" (ms, absolute).
    AtMost(i64),
}

/// A value of the model.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    String(Vec<u8>),
    List(VecDeque<Vec<u8>>),
    Set(BTreeSet<Vec<u8>>),
    /// Member -> score.
    ZSet(BTreeMap<Vec<u8>, f64>),
    /// Field -> (value, field expiry in unix ms).
    Hash(BTreeMap<Vec<u8>, (Vec<u8>, Option<i64>)>),
    /// A `RESTORE` payload (a stream or a module value): compared, never decoded.
    Opaque(Vec<u8>),
}

impl Value {
    /// `TYPE`'s name of the value (an opaque payload: "opaque").
    pub fn kind(&self) -> &'static str {
        match self {
            Value::String(_) => "string",
            Value::List(_) => "list",
            Value::Set(_) => "set",
            Value::ZSet(_) => "zset",
            Value::Hash(_) => "hash",
            Value::Opaque(_) => "opaque",
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Value::List(v) => v.is_empty(),
            Value::Set(v) => v.is_empty(),
            Value::ZSet(v) => v.is_empty(),
            Value::Hash(v) => v.is_empty(),
            Value::String(_) | Value::Opaque(_) => false,
        }
    }
}

/// One key of the model.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub value: Value,
    pub expiry: Option<Expiry>,
}

/// The keys the commands wrote: present (an entry) or deleted (None).
#[derive(Clone, Debug, Default)]
pub struct Model {
    pub keys: BTreeMap<Vec<u8>, Option<Entry>>,
    /// The first command the model does not know, and why: set once, and the model
    /// is then not to be judged.
    pub unknown: Option<String>,
}

type Step = Result<(), String>;

impl Model {
    /// Applies one command; `now_ms` stands for the time relative expiries count
    /// from. A command the model does not know sets [`Model::unknown`].
    pub fn apply(&mut self, argv: &[Vec<u8>], now_ms: i64) {
        if self.unknown.is_some() || argv.is_empty() {
            return;
        }
        if let Err(why) = self.interpret(argv, now_ms) {
            let name = String::from_utf8_lossy(&argv[0]).to_uppercase();
            self.unknown = Some(format!("the script returned {name}: {why}"));
        }
    }

    fn interpret(&mut self, argv: &[Vec<u8>], now_ms: i64) -> Step {
        let name = String::from_utf8_lossy(&argv[0]).to_uppercase();
        let args = &argv[1..];
        match name.as_str() {
            "DEL" | "UNLINK" => {
                need(args, 1)?;
                for key in args {
                    self.keys.insert(key.clone(), None);
                }
                Ok(())
            }
            "SET" => self.set(args, now_ms),
            "SETRANGE" => self.setrange(args),
            "RPUSH" | "LPUSH" => self.push(args, name == "LPUSH"),
            "SADD" | "SREM" => self.members(args, name == "SADD"),
            "ZADD" => self.zadd(args),
            "ZREM" => self.zrem(args),
            "HSET" | "HMSET" => self.hset(args),
            "HDEL" => self.hdel(args),
            "HPEXPIREAT" => self.field_expiry(args),
            "PEXPIREAT" | "EXPIREAT" | "PEXPIRE" | "EXPIRE" => self.expire(&name, args, now_ms),
            "PERSIST" => {
                need(args, 1)?;
                if let Some(Some(entry)) = self.keys.get_mut(&args[0]) {
                    entry.expiry = None;
                }
                Ok(())
            }
            "RESTORE" => self.restore(args, now_ms),
            _ => Err("verify's model does not know this command".into()),
        }
    }

    /// The live entry of `key`, created empty by `make` when absent; an error when
    /// it holds another type.
    fn entry(&mut self, key: &[u8], make: fn() -> Value) -> Result<&mut Entry, String> {
        let slot = self.keys.entry(key.to_vec()).or_insert(None);
        let want = make();
        match slot {
            Some(entry) if entry.value.kind() == want.kind() => {}
            Some(entry) => {
                return Err(format!(
                    "a {} command on a {} (WRONGTYPE on the target)",
                    want.kind(),
                    entry.value.kind()
                ))
            }
            None => {
                *slot = Some(Entry {
                    value: want,
                    expiry: None,
                })
            }
        }
        slot.as_mut().ok_or_else(|| "unreachable".to_owned())
    }

    /// An emptied collection is no key at all.
    fn drop_if_empty(&mut self, key: &[u8]) {
        if let Some(slot) = self.keys.get_mut(key) {
            if slot.as_ref().is_some_and(|e| e.value.is_empty()) {
                *slot = None;
            }
        }
    }

    fn set(&mut self, args: &[Vec<u8>], now_ms: i64) -> Step {
        need(args, 2)?;
        let (key, value) = (&args[0], &args[1]);
        let mut expiry = None;
        let (mut keep_ttl, mut nx, mut xx) = (false, false, false);
        let mut rest = args[2..].iter();
        while let Some(option) = rest.next() {
            let option = String::from_utf8_lossy(option).to_uppercase();
            let mut number = || -> Result<i64, String> {
                let text = rest.next().ok_or("an option without its number")?;
                integer(text)
            };
            match option.as_str() {
                "EX" => expiry = Some(Expiry::AtMost(now_ms + number()? * 1000)),
                "PX" => expiry = Some(Expiry::AtMost(now_ms + number()?)),
                "EXAT" => expiry = Some(Expiry::At(number()? * 1000)),
                "PXAT" => expiry = Some(Expiry::At(number()?)),
                "KEEPTTL" => keep_ttl = true,
                "NX" => nx = true,
                "XX" => xx = true,
                other => return Err(format!("option {other} is not known to verify's model")),
            }
        }
        let slot = self.keys.entry(key.clone()).or_insert(None);
        if (nx && slot.is_some()) || (xx && slot.is_none()) {
            return Ok(());
        }
        let expiry = match (keep_ttl, slot.as_ref()) {
            (true, Some(old)) => old.expiry,
            _ => expiry,
        };
        *slot = Some(Entry {
            value: Value::String(value.clone()),
            expiry,
        });
        Ok(())
    }

    fn setrange(&mut self, args: &[Vec<u8>]) -> Step {
        need(args, 3)?;
        let offset = usize::try_from(integer(&args[1])?).map_err(|_| "a negative offset")?;
        let piece = &args[2];
        let entry = self.entry(&args[0], || Value::String(Vec::new()))?;
        let Value::String(bytes) = &mut entry.value else {
            return Err("not a string".into());
        };
        let end = offset + piece.len();
        if bytes.len() < end {
            bytes.resize(end, 0);
        }
        bytes[offset..end].copy_from_slice(piece);
        Ok(())
    }

    fn push(&mut self, args: &[Vec<u8>], left: bool) -> Step {
        need(args, 2)?;
        let entry = self.entry(&args[0], || Value::List(VecDeque::new()))?;
        let Value::List(list) = &mut entry.value else {
            return Err("not a list".into());
        };
        for item in &args[1..] {
            if left {
                list.push_front(item.clone());
            } else {
                list.push_back(item.clone());
            }
        }
        Ok(())
    }

    fn members(&mut self, args: &[Vec<u8>], add: bool) -> Step {
        need(args, 2)?;
        if !add && !self.holds(&args[0]) {
            return Ok(());
        }
        let entry = self.entry(&args[0], || Value::Set(BTreeSet::new()))?;
        let Value::Set(set) = &mut entry.value else {
            return Err("not a set".into());
        };
        for member in &args[1..] {
            if add {
                set.insert(member.clone());
            } else {
                set.remove(member);
            }
        }
        self.drop_if_empty(&args[0]);
        Ok(())
    }

    fn zadd(&mut self, args: &[Vec<u8>]) -> Step {
        need(args, 3)?;
        let pairs = &args[1..];
        if !pairs.len().is_multiple_of(2) {
            return Err(
                "options or an odd score/member list are not known to verify's model".into(),
            );
        }
        let mut parsed = Vec::with_capacity(pairs.len() / 2);
        for pair in pairs.chunks(2) {
            parsed.push((score(&pair[0])?, pair[1].clone()));
        }
        let entry = self.entry(&args[0], || Value::ZSet(BTreeMap::new()))?;
        let Value::ZSet(zset) = &mut entry.value else {
            return Err("not a sorted set".into());
        };
        for (score, member) in parsed {
            zset.insert(member, score);
        }
        Ok(())
    }

    fn zrem(&mut self, args: &[Vec<u8>]) -> Step {
        need(args, 2)?;
        if !self.holds(&args[0]) {
            return Ok(());
        }
        let entry = self.entry(&args[0], || Value::ZSet(BTreeMap::new()))?;
        if let Value::ZSet(zset) = &mut entry.value {
            for member in &args[1..] {
                zset.remove(member);
            }
        }
        self.drop_if_empty(&args[0]);
        Ok(())
    }

    fn hset(&mut self, args: &[Vec<u8>]) -> Step {
        need(args, 3)?;
        if args.len().is_multiple_of(2) {
            return Err("an odd field/value list".into());
        }
        let entry = self.entry(&args[0], || Value::Hash(BTreeMap::new()))?;
        let Value::Hash(hash) = &mut entry.value else {
            return Err("not a hash".into());
        };
        for pair in args[1..].chunks(2) {
            // HSET of a field clears its expiry, as Redis does.
            hash.insert(pair[0].clone(), (pair[1].clone(), None));
        }
        Ok(())
    }

    fn hdel(&mut self, args: &[Vec<u8>]) -> Step {
        need(args, 2)?;
        if !self.holds(&args[0]) {
            return Ok(());
        }
        let entry = self.entry(&args[0], || Value::Hash(BTreeMap::new()))?;
        if let Value::Hash(hash) = &mut entry.value {
            for field in &args[1..] {
                hash.remove(field);
            }
        }
        self.drop_if_empty(&args[0]);
        Ok(())
    }

    /// `HPEXPIREAT key ms FIELDS n field...` (no NX / XX / GT / LT).
    fn field_expiry(&mut self, args: &[Vec<u8>]) -> Step {
        need(args, 4)?;
        let at = integer(&args[1])?;
        if !args[2].eq_ignore_ascii_case(b"FIELDS") {
            return Err("options before FIELDS are not known to verify's model".into());
        }
        let n = usize::try_from(integer(&args[3])?).map_err(|_| "a negative count")?;
        let fields = &args[4..];
        if fields.len() != n {
            return Err("FIELDS n does not match the fields given".into());
        }
        if !self.holds(&args[0]) {
            return Ok(());
        }
        let entry = self.entry(&args[0], || Value::Hash(BTreeMap::new()))?;
        if let Value::Hash(hash) = &mut entry.value {
            for field in fields {
                if let Some((_, expiry)) = hash.get_mut(field) {
                    *expiry = Some(at);
                }
            }
        }
        Ok(())
    }

    fn expire(&mut self, name: &str, args: &[Vec<u8>], now_ms: i64) -> Step {
        need(args, 2)?;
        if args.len() > 2 {
            return Err("NX / XX / GT / LT are not known to verify's model".into());
        }
        let n = integer(&args[1])?;
        let expiry = match name {
            "PEXPIREAT" => Expiry::At(n),
            "EXPIREAT" => Expiry::At(n.saturating_mul(1000)),
            "PEXPIRE" => Expiry::AtMost(now_ms.saturating_add(n)),
            _ => Expiry::AtMost(now_ms.saturating_add(n.saturating_mul(1000))),
        };
        if let Some(Some(entry)) = self.keys.get_mut(&args[0]) {
            entry.expiry = Some(expiry);
        }
        Ok(())
    }

    /// `RESTORE key ttl payload [REPLACE] [ABSTTL]`: an opaque value.
    fn restore(&mut self, args: &[Vec<u8>], now_ms: i64) -> Step {
        need(args, 3)?;
        let ttl = integer(&args[1])?;
        let (mut replace, mut absolute) = (false, false);
        for option in &args[3..] {
            match String::from_utf8_lossy(option).to_uppercase().as_str() {
                "REPLACE" => replace = true,
                "ABSTTL" => absolute = true,
                other => return Err(format!("option {other} is not known to verify's model")),
            }
        }
        if !replace && self.holds(&args[0]) {
            return Err("RESTORE without REPLACE onto a key that exists (BUSYKEY)".into());
        }
        let expiry = match (ttl, absolute) {
            (0, _) => None,
            (at, true) => Some(Expiry::At(at)),
            (ms, false) => Some(Expiry::AtMost(now_ms + ms)),
        };
        self.keys.insert(
            args[0].clone(),
            Some(Entry {
                value: Value::Opaque(args[2].clone()),
                expiry,
            }),
        );
        Ok(())
    }

    /// Whether the model holds `key` now. A key the commands never named is taken
    /// as absent: a recreate starts with `DEL` or an overwriting `SET`.
    fn holds(&self, key: &[u8]) -> bool {
        self.keys.get(key).is_some_and(Option::is_some)
    }
}

fn need(args: &[Vec<u8>], n: usize) -> Step {
    if args.len() < n {
        return Err(format!("fewer than {n} arguments"));
    }
    Ok(())
}

fn integer(text: &[u8]) -> Result<i64, String> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| format!("{:?} is not an integer", String::from_utf8_lossy(text)))
}

/// A score as ZADD reads it (`inf`, `+inf`, `-inf` included).
pub fn score(text: &[u8]) -> Result<f64, String> {
    let text = std::str::from_utf8(text).map_err(|_| "a score is not text")?;
    match text.to_ascii_lowercase().as_str() {
        "inf" | "+inf" => Ok(f64::INFINITY),
        "-inf" => Ok(f64::NEG_INFINITY),
        other => other
            .parse::<f64>()
            .ok()
            .filter(|s| !s.is_nan())
            .ok_or_else(|| format!("{text:?} is not a score")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(model: &mut Model, words: &[&str]) {
        let argv: Vec<Vec<u8>> = words.iter().map(|w| w.as_bytes().to_vec()).collect();
        model.apply(&argv, 1_000_000);
    }

    #[test]
    fn recreate_commands_build_each_type() {
        let mut m = Model::default();
        apply(&mut m, &["SET", "s", "v"]);
        apply(&mut m, &["DEL", "l"]);
        apply(&mut m, &["RPUSH", "l", "a", "b"]);
        apply(&mut m, &["LPUSH", "l", "z"]);
        apply(&mut m, &["SADD", "st", "x", "y"]);
        apply(&mut m, &["SREM", "st", "x"]);
        apply(&mut m, &["ZADD", "z", "1.5", "m", "-inf", "n"]);
        apply(&mut m, &["HSET", "h", "f", "1", "g", "2"]);
        apply(&mut m, &["HPEXPIREAT", "h", "5000", "FIELDS", "1", "f"]);
        apply(&mut m, &["HDEL", "h", "g"]);
        apply(&mut m, &["PEXPIREAT", "h", "9000"]);
        apply(&mut m, &["DEL", "big"]);
        apply(&mut m, &["SETRANGE", "big", "4", "\0"]);
        apply(&mut m, &["SETRANGE", "big", "0", "abc"]);
        apply(&mut m, &["SET", "t", "v", "PX", "500"]);
        assert!(m.unknown.is_none(), "{:?}", m.unknown);
        let get = |k: &str| m.keys[k.as_bytes()].clone().expect(k);
        assert_eq!(get("s").value, Value::String(b"v".to_vec()));
        assert_eq!(
            get("l").value,
            Value::List(
                ["z", "a", "b"]
                    .iter()
                    .map(|w| w.as_bytes().to_vec())
                    .collect()
            )
        );
        assert_eq!(get("st").value, Value::Set([b"y".to_vec()].into()));
        assert_eq!(
            get("z").value,
            Value::ZSet([(b"m".to_vec(), 1.5), (b"n".to_vec(), f64::NEG_INFINITY)].into())
        );
        assert_eq!(
            get("h").value,
            Value::Hash([(b"f".to_vec(), (b"1".to_vec(), Some(5000)))].into())
        );
        assert_eq!(get("h").expiry, Some(Expiry::At(9000)));
        assert_eq!(get("big").value, Value::String(b"abc\0\0".to_vec()));
        assert_eq!(get("t").expiry, Some(Expiry::AtMost(1_000_500)));
    }

    #[test]
    fn deletes_empties_and_unknown_commands() {
        let mut m = Model::default();
        apply(&mut m, &["SADD", "s", "x"]);
        apply(&mut m, &["SREM", "s", "x"]);
        assert_eq!(m.keys[&b"s"[..]], None, "an emptied set is no key");
        apply(&mut m, &["PEXPIREAT", "gone", "5"]);
        assert!(!m.keys.contains_key(&b"gone"[..]));
        apply(&mut m, &["SET", "k", "v", "GET"]);
        assert!(m
            .unknown
            .as_deref()
            .is_some_and(|u| u.contains("SET") && u.contains("GET")));
        let mut m = Model::default();
        apply(&mut m, &["LPOP", "l"]);
        assert!(
            m.unknown.as_deref().is_some_and(|u| u.contains("LPOP")),
            "{:?}",
            m.unknown
        );
        let mut m = Model::default();
        apply(&mut m, &["SET", "k", "v"]);
        apply(&mut m, &["RPUSH", "k", "a"]);
        assert!(m
            .unknown
            .as_deref()
            .is_some_and(|u| u.contains("WRONGTYPE")));
        let mut m = Model::default();
        apply(&mut m, &["RESTORE", "x", "0", "payload", "REPLACE"]);
        apply(&mut m, &["RESTORE", "y", "7000", "p", "REPLACE", "ABSTTL"]);
        assert_eq!(
            m.keys[&b"y"[..]].as_ref().map(|e| e.expiry),
            Some(Some(Expiry::At(7000)))
        );
        assert!(m.unknown.is_none());
    }
}
