//! The explorer's shared vocabulary, at the bottom of its modules: the task's options
//! (as `lockstep sync` flags and as the rules the checker predicts with), the number
//! of databases of every server, the clock key and the wall clock in unix ms. Every
//! other file of the explorer may import it; it imports only [`super::rules`] (the
//! declarative rules, pure like it), does no I/O (the clock is only read) and must
//! never grow into a second home for their logic.

use std::time::{SystemTime, UNIX_EPOCH};

use super::rules::Rules;

/// Databases of every server of an episode (`databases 64`).
pub const DATABASES: u32 = 64;

/// The task's options, as `lockstep sync` flags (and the checker's prediction).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskOptions {
    /// `--dbs`; empty: all.
    pub dbs: Vec<u32>,
    /// `--map-db SRC:DST`.
    pub map_db: Vec<(u32, u32)>,
    /// `--prefix`.
    pub prefix: Vec<String>,
    /// `--exclude-prefix`.
    pub exclude_prefix: Vec<String>,
    /// `--extend-ttl` seconds.
    pub extend_ttl: u64,
    /// The declarative rules (issue 17): key patterns, types, TTL, field drops,
    /// renames; or a combination the sync must refuse.
    pub rules: Rules,
}

impl TaskOptions {
    /// Whether source database `db` is synchronized.
    pub fn keeps_db(&self, db: u32) -> bool {
        self.dbs.is_empty() || self.dbs.contains(&db)
    }

    /// The target database of source database `db`.
    pub fn target_db(&self, db: u32) -> u32 {
        self.map_db
            .iter()
            .find(|(from, _)| *from == db)
            .map_or(db, |(_, to)| *to)
    }

    /// Whether a key is synchronized by the key rules, judged on its source name
    /// (lockstep's own never is): kept when no include rule of any kind exists
    /// (`--prefix`, the patterns) or one selects it, and no exclude rule does.
    pub fn keeps_key(&self, key: &[u8]) -> bool {
        if key.starts_with(b"LOCKSTEP_") {
            return false;
        }
        let by_prefix = self.prefix.iter().any(|p| key.starts_with(p.as_bytes()));
        let included = match self.rules.included(key) {
            None => self.prefix.is_empty() || by_prefix,
            Some(by_pattern) => by_prefix || by_pattern,
        };
        let excluded = self
            .exclude_prefix
            .iter()
            .any(|p| key.starts_with(p.as_bytes()))
            || self.rules.excluded(key);
        included && !excluded
    }

    /// The options as `lockstep sync` and `lockstep verify` flags (the same for both).
    pub fn flags(&self) -> Vec<String> {
        let mut flags = Vec::new();
        if !self.dbs.is_empty() {
            let dbs: Vec<String> = self.dbs.iter().map(u32::to_string).collect();
            flags.push(format!("--dbs={}", dbs.join(",")));
        }
        for (from, to) in &self.map_db {
            flags.push(format!("--map-db={from}:{to}"));
        }
        for p in &self.prefix {
            flags.push(format!("--prefix={p}"));
        }
        for p in &self.exclude_prefix {
            flags.push(format!("--exclude-prefix={p}"));
        }
        if self.extend_ttl > 0 {
            flags.push(format!("--extend-ttl={}", self.extend_ttl));
        }
        flags.extend(self.rules.flags());
        flags
    }

    /// One line for the episode's header.
    pub fn describe(&self) -> String {
        let flags = self.flags();
        let text = if flags.is_empty() {
            "no task options".to_owned()
        } else {
            flags.join(" ")
        };
        match &self.rules.refusal {
            Some(refusal) => format!("{text} (the sync must refuse {})", refusal.what),
            None => text,
        }
    }
}

/// The family of the clock key, always synchronized.
pub const CLOCK_FAMILY: &str = "clk:";
/// The clock key (db 0): the source's unix time in ms, written every 100 ms, so the
/// target's copy tells how old the target's data is.
pub const CLOCK_KEY: &str = "clk:now";

/// The source's unix time in ms.
pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
