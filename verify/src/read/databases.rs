//! Learning one side's databases (the I/O half of the coverage, whose report half is
//! [`crate::report::coverage`]).
//!
//! Which databases one side has and which hold keys, asked before walking ([`learn`]):
//! - a Redis Cluster side (`INFO cluster`) has database 0 only;
//! - a standalone side (Redis or Valkey alike) answers `INFO keyspace`: the databases
//!   holding keys (only existing ones are listed, so `CONFIG GET databases`, an admin
//!   command a read-only account lacks, is not asked). When INFO is refused (an
//!   account without `+info`), the databases are *probed*: one pipeline of
//!   `SELECT n` + `DBSIZE` for every n below `CONFIG GET databases`, or, when that is
//!   refused too, up to [`PROBE_BOUND`] (a `SELECT` answering "out of range" ends the
//!   count). A database whose DBSIZE is refused is compared anyway. What could not
//!   be learned (SELECT refused, databases beyond the bound) is a gap of the coverage.
//!
//! It only asks (INFO, CONFIG GET, SELECT, DBSIZE); it must never read a key.

use std::collections::BTreeSet;

use redis::aio::MultiplexedConnection;

use crate::report::coverage::{Learned, SideDatabases};

/// How far databases are probed when neither INFO nor CONFIG may be read.
pub const PROBE_BOUND: u32 = 256;

/// Asks one side (any node's URL) which databases it has and which hold keys.
pub async fn learn(client: &redis::Client) -> anyhow::Result<SideDatabases> {
    let mut conn = crate::read::side::open(client, 0).await?;
    let info: Option<String> = redis::cmd("INFO")
        .arg("cluster")
        .query_async(&mut conn)
        .await
        .ok();
    if info
        .as_deref()
        .is_some_and(|i| i.lines().any(|l| l.trim() == "cluster_enabled:1"))
    {
        return Ok(SideDatabases {
            learned: Learned::Cluster,
            configured: Some(1),
            with_keys: BTreeSet::from([0]),
            unknown: None,
        });
    }
    let keyspace: Option<String> = redis::cmd("INFO")
        .arg("keyspace")
        .query_async(&mut conn)
        .await
        .ok();
    if let Some(text) = keyspace.filter(|t| t.contains("# Keyspace")) {
        // INFO lists only databases that exist: CONFIG (an admin command a read-only
        // account lacks) is not needed to bound them.
        return Ok(SideDatabases {
            learned: Learned::InfoKeyspace,
            configured: None,
            with_keys: keyspace_databases(&text),
            unknown: None,
        });
    }
    let configured = configured_databases(&mut conn).await;
    probe(&mut conn, configured).await
}

/// `CONFIG GET databases`, None when refused or unreadable.
async fn configured_databases(conn: &mut MultiplexedConnection) -> Option<u32> {
    let pairs: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("databases")
        .query_async(conn)
        .await
        .ok()?;
    pairs.get(1)?.parse().ok()
}

/// The databases an `INFO keyspace` reply lists (`db3:keys=1,...`).
pub fn keyspace_databases(info: &str) -> BTreeSet<u32> {
    info.lines()
        .filter_map(|l| l.strip_prefix("db")?.split_once(':')?.0.parse().ok())
        .collect()
}

/// INFO refused: `SELECT n` + `DBSIZE` for every n up to the configured count (or
/// [`PROBE_BOUND`]), in one pipeline on a connection of its own.
async fn probe(
    conn: &mut MultiplexedConnection,
    configured: Option<u32>,
) -> anyhow::Result<SideDatabases> {
    let bound = configured.unwrap_or(PROBE_BOUND);
    let mut pipe = redis::pipe();
    // The connection starts on database 0 (no SELECT needed: an account may not have
    // it); one past the bound: does a database exist beyond it?
    pipe.cmd("DBSIZE");
    for db in 1..=bound {
        pipe.cmd("SELECT").arg(db).cmd("DBSIZE");
    }
    let replies: Vec<redis::RedisResult<redis::Value>> = pipe
        .ignore_errors()
        .query_async(conn)
        .await
        .map_err(|e| anyhow::anyhow!("probing the databases with SELECT and DBSIZE: {e}"))?;
    let mut replies = replies.into_iter();
    let mut with_keys = BTreeSet::new();
    let mut unknown = None;
    let mut below = bound;
    for db in 0..=bound {
        let select = if db == 0 {
            Ok(redis::Value::Okay)
        } else {
            replies.next().unwrap_or(Ok(redis::Value::Nil))
        };
        let size = replies.next();
        if let Err(e) = &select {
            if e.to_string().contains("out of range") {
                below = db;
            } else {
                below = db;
                unknown = Some(format!(
                    "databases from {db} up could not be learned: SELECT {db} refused ({})",
                    first_line(&e.to_string())
                ));
            }
            break;
        }
        if db == bound {
            if configured.is_none() {
                unknown = Some(format!(
                    "databases from {bound} up were not probed (INFO and CONFIG refused)"
                ));
            }
            break;
        }
        match &size {
            Some(Ok(redis::Value::Int(0))) => {}
            _ => {
                with_keys.insert(db);
            }
        }
    }
    Ok(SideDatabases {
        learned: Learned::Probed { below },
        configured,
        with_keys,
        unknown,
    })
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyspace_lines_name_their_databases() {
        let info = "# Keyspace\r\ndb0:keys=1,expires=0,avg_ttl=0\r\ndb20:keys=3,expires=1\r\n";
        assert_eq!(keyspace_databases(info), BTreeSet::from([0, 20]));
        assert!(keyspace_databases("# Keyspace\r\n").is_empty());
    }
}
