//! What shows that a server's key space did not change during a pass: write and
//! expiry counters, saves, the replication offset and the database's size. Read
//! before and after the source pass; [`crate::judge::counts`] decides what they prove.
//!
//! Plain reads (INFO, DBSIZE, EXISTS); it must never decide anything.

use crate::options::SYNC_CHECKPOINT_KEY;
use crate::read::side::Conn;

/// What shows that a server's key space did not change: write and expiry counters,
/// saves, the replication offset and the database's size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct QuietState {
    pub(crate) counters: Vec<(String, String)>,
    pub(crate) dbsize: u64,
    /// lockstep's checkpoint key, present (1) or not (0).
    pub(crate) own_keys: u64,
}

/// The quiet states of both sides, or None when one cannot be read (INFO not
/// permitted) or a save is in progress.
/// The INFO fields that change with the key space (writes, expiries, evictions,
/// saves, the replication offset).
const FIELDS: [&str; 8] = [
    "rdb_changes_since_last_save",
    "rdb_bgsave_in_progress",
    "rdb_last_save_time",
    "rdb_saves",
    "aof_rewrite_in_progress",
    "expired_keys",
    "evicted_keys",
    "master_repl_offset",
];

/// The [`FIELDS`] of one INFO section's text, in the order they appear.
fn quiet_counters(info: &str) -> Vec<(String, String)> {
    info.lines()
        .filter_map(|line| line.trim().split_once(':'))
        .filter(|(name, _)| FIELDS.contains(name))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
}

/// A background save or AOF rewrite is running (the counters may move on their own).
fn save_in_progress(counters: &[(String, String)]) -> bool {
    let busy = |name: &str| counters.iter().any(|(n, v)| n == name && v != "0");
    busy("rdb_bgsave_in_progress") || busy("aof_rewrite_in_progress")
}

/// `own_checkpoint`: lockstep's checkpoint key is ignored by the comparison, so it is
/// counted apart ([`QuietState::own_keys`]).
pub(crate) async fn quiet_states(
    own_checkpoint: bool,
    src: Conn,
    dst: Conn,
) -> Option<(QuietState, QuietState)> {
    let (s, d) = tokio::join!(
        quiet_state(own_checkpoint, src),
        quiet_state(own_checkpoint, dst)
    );
    Some((s.ok()?, d.ok()?))
}

async fn quiet_state(own_checkpoint: bool, mut conn: Conn) -> anyhow::Result<QuietState> {
    let mut counters = Vec::new();
    // One section per INFO call: Redis 6.2 takes only one.
    for section in ["persistence", "stats", "replication"] {
        let text: String = redis::cmd("INFO")
            .arg(section)
            .query_async(&mut conn)
            .await?;
        counters.extend(quiet_counters(&text));
    }
    if save_in_progress(&counters) {
        anyhow::bail!("a save is in progress");
    }
    let dbsize: u64 = redis::cmd("DBSIZE").query_async(&mut conn).await?;
    let own_keys: u64 = if own_checkpoint {
        redis::cmd("EXISTS")
            .arg(SYNC_CHECKPOINT_KEY)
            .query_async(&mut conn)
            .await?
    } else {
        0
    };
    Ok(QuietState {
        counters,
        dbsize,
        own_keys,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_fields_that_move_with_the_key_space_are_kept() {
        let info = "# Stats\r\ntotal_connections_received:12\r\nexpired_keys:3\r\n\
                    evicted_keys:0\r\ninstantaneous_ops_per_sec:5\r\n";
        assert_eq!(
            quiet_counters(info),
            vec![
                ("expired_keys".to_owned(), "3".to_owned()),
                ("evicted_keys".to_owned(), "0".to_owned())
            ]
        );
        let saving = quiet_counters("rdb_bgsave_in_progress:1\r\naof_rewrite_in_progress:0");
        assert!(save_in_progress(&saving));
        let idle = quiet_counters("rdb_bgsave_in_progress:0\r\naof_rewrite_in_progress:0");
        assert!(!save_in_progress(&idle));
    }
}
