//! The one-database rule of a cluster target, checked before a sync starts: a
//! cluster has database 0 only, so a source with keys in a synchronized database
//! that the filter does not map to 0 is refused (the engine at start, the
//! precheck as an item).
//!
//! Never: connect anywhere; it reads the `INFO keyspace` text it is given.

use crate::filter::Filter;

/// Refuses a cluster target for a source that has keys in a synchronized database
/// the filter does not map to 0, or for routes into another database. `keyspace` is the source's `INFO keyspace`.
pub fn check_source_dbs(keyspace: &str, filter: &Filter) -> Result<(), String> {
    if let Some(db) = filter.routes.dbs().into_iter().find(|db| *db != 0) {
        return Err(format!("the target is a Redis Cluster, which has database 0 only, and --route-db sends keys into database {db} (fix: drop that route)"));
    }
    match unmapped_by_filter(keyspace, filter) {
        Some(db) => {
            let (detail, fix) = unmapped_db_refusal(db);
            Err(format!("{detail} (fix: {fix})"))
        }
        None => Ok(()),
    }
}

/// The first source database with keys that `filter` selects and does not map to 0.
pub(crate) fn unmapped_by_filter(keyspace: &str, filter: &Filter) -> Option<u32> {
    unmapped_source_db(keyspace, |db| {
        filter.is_db_selected(db.into()) && filter.target_db(db) != 0
    })
}

/// The first database of a source's `INFO keyspace` (one that holds keys) that
/// `written_elsewhere` says would be written to a database other than 0.
pub(crate) fn unmapped_source_db(
    keyspace: &str,
    written_elsewhere: impl Fn(u32) -> bool,
) -> Option<u32> {
    keyspace
        .lines()
        .filter_map(|l| l.strip_prefix("db")?.split(':').next()?.parse::<u32>().ok())
        .find(|&db| written_elsewhere(db))
}

/// Why a cluster target refuses source database `db`, and the fix.
pub(crate) fn unmapped_db_refusal(db: u32) -> (String, String) {
    (
        format!("the target is a Redis Cluster, which has database 0 only, and the source has keys in database {db}"),
        format!("map it with --map-db {db}:0, or leave it out with --dbs"),
    )
}
