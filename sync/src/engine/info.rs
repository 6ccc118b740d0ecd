//! What the engine asks the servers about themselves with `INFO`: the source's
//! replication position and the RDB version the target reads.
//!
//! Read-only queries; an answer that lacks what is asked for is an error that says
//! so, never a default taken for the truth (except the target's version, whose
//! absence means the oldest encoding).

use crate::conn::Conn;
use crate::resp::Frame;
use crate::target::Target;

use super::error::SyncError;
use super::options::SyncOptions;

/// The source's current replication id and offset (for an incremental-only task with
/// no checkpoint: it starts from now).
pub(super) async fn source_position(
    options: &SyncOptions,
) -> Result<(String, i64, u32), SyncError> {
    let mut client =
        Conn::connect_to("source", &options.source, options.source_connection()).await?;
    let info = info_text(client.query(&[b"INFO".as_slice(), b"replication"]).await?);
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name).map(str::trim).map(str::to_owned))
    };
    match (
        field("master_replid:"),
        field("master_repl_offset:").and_then(|o| o.parse().ok()),
    ) {
        (Some(id), Some(offset)) => Ok((id, offset, 0)),
        _ => Err(SyncError::Internal(format!(
            "the source's INFO replication has no master_replid/master_repl_offset: {info}"
        ))),
    }
}

/// The RDB version the target reads, from its `INFO server`.
pub(super) async fn target_rdb_version(writer: &mut Target) -> Result<u16, SyncError> {
    let info = info_text(writer.query(&[b"INFO".as_slice(), b"server"]).await?);
    Ok(rdb_version_of_server(&info))
}

/// The newest RDB version of Redis's line that a server reads, from its `INFO
/// server` text. A Valkey (`valkey_version:` present) reads RDB 11, Redis 7.2's:
/// Valkey 7.2 and 8.x write it, and Valkey 9.0 and later write versions of their own
/// (80 and up, `VALKEY` magic) but keep reading 11, while Redis's 12 and up fall in
/// their "foreign" range (12..=79), refused. So a Valkey target gets payloads
/// re-encoded down to 11 from a newer Redis. A Valkey's `redis_version` is pinned at
/// 7.2.4 and would say the same, but by accident of that pin, not by rule.
pub fn rdb_version_of_server(info_server: &str) -> u16 {
    let field = |name: &str| {
        info_server
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    if field("valkey_version:").is_some() {
        return VALKEY_READS_RDB;
    }
    rdb_version_of(field("redis_version:").unwrap_or("0"))
}

/// The RDB version every Valkey reads and every Valkey before 9.0 writes.
const VALKEY_READS_RDB: u16 = 11;

/// RDB version written by a Redis version (`major.minor.patch`).
pub fn rdb_version_of(redis_version: &str) -> u16 {
    let mut parts = redis_version
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    match (major, minor) {
        (0..=1, _) | (2, 0..=5) => 5,
        (2, _) | (3, 0..=1) => 6,
        (3, _) => 7,
        (4, _) => 8,
        (5..=6, _) => 9,
        (7, 0..=1) => 10,
        (7, 2..=3) => 11,
        _ => 12,
    }
}

pub(super) fn info_text(frame: Frame) -> String {
    frame
        .as_bytes()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rdb_versions_follow_the_redis_releases_and_garbage_reads_as_the_oldest() {
        let cases = [
            ("2.4.0", 5),
            ("2.8.24", 6),
            ("3.2.1", 7),
            ("4.0.14", 8),
            ("6.2.5", 9),
            ("7.0.15", 10),
            ("7.2.4", 11),
            ("8.2.3", 12),
            ("", 5),
            ("x.y", 5),
        ];
        for (version, rdb) in cases {
            assert_eq!(rdb_version_of(version), rdb, "{version}");
        }
    }

    #[test]
    fn a_valkey_reads_rdb_11_whatever_its_redis_version_field_says() {
        let valkey_8_1 =
            "# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:8.1.8\r\n";
        assert_eq!(rdb_version_of_server(valkey_8_1), 11);
        let later = "redis_version:8.0.0\r\nvalkey_version:9.0.0\r\n";
        assert_eq!(rdb_version_of_server(later), 11);
        assert_eq!(rdb_version_of_server("redis_version:8.2.3\r\n"), 12);
        assert_eq!(rdb_version_of_server("redis_version:7.0.15\r\n"), 10);
        assert_eq!(rdb_version_of_server(""), 5);
    }
}
