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

/// The RDB version the target reads, from its `redis_version`.
pub(super) async fn target_rdb_version(writer: &mut Target) -> Result<u16, SyncError> {
    let info = info_text(writer.query(&[b"INFO".as_slice(), b"server"]).await?);
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("0")
        .trim()
        .to_owned();
    Ok(rdb_version_of(&version))
}

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
}
