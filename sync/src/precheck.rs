//! The precheck: what must hold on both sides before a sync starts, each item
//! passing, warning or failing with its reason and, where there is one, the exact fix.
//! Run by `lockstep check` (and meant to run before `lockstep sync`). Reads only:
//! nothing here writes to either side.

use std::time::Duration;

use crate::conn::{ApplyOptions, Conn};
use crate::endpoint::{Endpoint, TlsOptions};
use crate::engine::{rdb_version_of, SourceMode};
use crate::resp::Frame;

/// What to check.
#[derive(Clone, Debug)]
pub struct PrecheckOptions {
    pub source: Endpoint,
    pub target: Endpoint,
    /// Databases the task will write on the target.
    pub dbs: Vec<u32>,
    /// Conflict handling: with `precheck_conflicts`, a non-empty target database fails;
    /// otherwise it only warns that source keys will overwrite target keys.
    pub precheck_conflicts: bool,
    /// How long to watch the source's replication offset to estimate its write rate.
    pub rate_window: Duration,
    /// Timeouts of both connections (its `tls` is replaced by the side's own below).
    pub connect: ApplyOptions,
    /// TLS settings of each side, for `rediss://` URLs.
    pub source_tls: TlsOptions,
    pub target_tls: TlsOptions,
    /// The task's filter, when there is a task (`lockstep sync`): a cluster target
    /// is then checked against its database selection and mapping exactly;
    /// without it, against `dbs`.
    pub filter: Option<crate::filter::Filter>,
    /// How the sync will read the source: the items of a replica link (the account's
    /// right, repl-timeout, the backlog) or of a scan (keyspace notifications).
    pub source_mode: SourceMode,
    /// The task follows the source's changes after the copy (not mode `full`): a
    /// scan then needs keyspace notifications.
    pub follows_changes: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    Pass,
    Info,
    Warn,
    Fail,
}

/// One checked item.
#[derive(Clone, Debug)]
pub struct CheckItem {
    pub name: &'static str,
    pub outcome: Outcome,
    pub detail: String,
    /// What to do about it, when there is something to do.
    pub fix: Option<String>,
}

impl CheckItem {
    fn new(name: &'static str, outcome: Outcome, detail: impl Into<String>) -> CheckItem {
        CheckItem {
            name,
            outcome,
            detail: detail.into(),
            fix: None,
        }
    }

    fn fix(mut self, fix: impl Into<String>) -> CheckItem {
        self.fix = Some(fix.into());
        self
    }
}

/// Seconds of writes the replication backlog should hold, so a link cut that long
/// resumes without a full resync.
const BACKLOG_SECONDS_MIN: u64 = 60;
/// DTS's minimum for the source's repl-timeout.
const REPL_TIMEOUT_MIN_SECS: u64 = 600;

/// Runs every item. Items that need a connection that failed are skipped (the
/// connection item already failed).
pub async fn precheck(options: &PrecheckOptions) -> Vec<CheckItem> {
    let mut items = Vec::new();
    let source = connect(
        "source connection",
        &options.source,
        &ApplyOptions {
            tls: options.source_tls.clone(),
            ..options.connect.clone()
        },
        &mut items,
    )
    .await;
    let target = connect(
        "target connection",
        &options.target,
        &ApplyOptions {
            tls: options.target_tls.clone(),
            ..options.connect.clone()
        },
        &mut items,
    )
    .await;
    let (Some(mut source), Some(mut target)) = (source, target) else {
        return items;
    };
    items.extend(source_reading(&mut source, options).await);
    items.push(eviction_policy(&mut target).await);
    items.push(free_memory(&mut source, &mut target).await);
    items.push(versions(&mut source, &mut target).await);
    items.push(target_empty(&mut target, options).await);
    if let Ok(true) = crate::cluster::is_cluster_node(&mut target).await {
        items.push(cluster_target(&mut source, &mut target, options).await);
    }
    items
}

/// The items of how the source will be read: as a replica (the account's right,
/// repl-timeout, the backlog), or key by key when `--source-mode scan` says so or
/// `auto` will fall back to it (PSYNC and SYNC renamed away or refused): then
/// whether keyspace notifications are on.
async fn source_reading(source: &mut Conn, options: &PrecheckOptions) -> Vec<CheckItem> {
    const NAME: &str = "how the source is read";
    let renamed = replication_commands_missing(source).await;
    let mode = options.source_mode;
    if mode == SourceMode::Scan || (mode == SourceMode::Auto && renamed) {
        let why = match mode {
            SourceMode::Scan => "--source-mode scan",
            _ => "PSYNC and SYNC are renamed or disabled on the source (as on managed services): --source-mode auto",
        };
        let detail = format!("{why} reads the source key by key (SCAN, DUMP and PTTL, then keyspace notifications): see docs/consistency.md, \"Scan mode\"");
        let mut items = vec![CheckItem::new(NAME, Outcome::Info, detail)];
        if options.follows_changes {
            items.push(keyspace_notifications(source).await);
        }
        return items;
    }
    // An account denied PSYNC fails here (its fix is a grant); a scan is the
    // user's choice then, not a fallback that would hide a missing grant.
    let mut right = replication_right(source).await;
    if right.outcome == Outcome::Fail {
        if let Some(fix) = right.fix.as_mut() {
            fix.push_str("; or --source-mode scan to read the source key by key");
        }
    }
    let mut items = Vec::new();
    if renamed {
        right = CheckItem::new(
            right.name,
            Outcome::Fail,
            "PSYNC and SYNC are renamed or disabled on the source",
        )
        .fix("--source-mode scan (or auto) reads it key by key");
    }
    items.push(right);
    items.push(repl_timeout(source).await);
    items.push(backlog(source, options.rate_window).await);
    items
}

/// Are both PSYNC and SYNC missing from the source's command table (renamed away
/// with `rename-command`, or removed)? `COMMAND INFO` answers nil for each.
async fn replication_commands_missing(source: &mut Conn) -> bool {
    let answer = source
        .query(&[b"COMMAND".as_slice(), b"INFO", b"PSYNC", b"SYNC"])
        .await;
    matches!(answer, Ok(Frame::Array(items)) if items.len() == 2 && items.iter().all(Frame::is_null))
}

/// A scan follows changes by keyspace notifications: `notify-keyspace-events`
/// must publish every key event (`K` and `A`).
async fn keyspace_notifications(source: &mut Conn) -> CheckItem {
    const NAME: &str = "keyspace notifications (scan mode)";
    let setting = text(
        source,
        &[b"CONFIG".as_slice(), b"GET", b"notify-keyspace-events"],
    )
    .await;
    let flags = match setting {
        Ok(answer) => answer
            .strip_prefix("notify-keyspace-events")
            .unwrap_or(&answer)
            .trim()
            .to_owned(),
        Err(e) => {
            return CheckItem::new(
                NAME,
                Outcome::Warn,
                format!("could not read notify-keyspace-events ({e}); the sync proves notifications arrive (by the heartbeat key's) before it scans, and stops with the fix if they do not"),
            )
        }
    };
    match crate::source::scan::missing_notifications(&flags) {
        None => CheckItem::new(
            NAME,
            Outcome::Pass,
            format!("notify-keyspace-events is {flags:?}: every key change is published"),
        ),
        Some(fix) => CheckItem::new(
            NAME,
            Outcome::Fail,
            format!("notify-keyspace-events is {flags:?}: a scan would miss the changes after it"),
        )
        .fix(format!("CONFIG SET notify-keyspace-events {fix} (on a managed service, the parameter notify-keyspace-events: ElastiCache and MemoryDB in the parameter group, Azure Cache for Redis in Advanced settings, Memorystore in the instance's configuration)")),
    }
}

/// A Redis Cluster target: it serves every slot, the source has no keys in a
/// database the task would write other than 0, and the source account may read
/// what a cross-slot command wrote (DUMP, PTTL, INFO: see `crate::cross_slot`).
async fn cluster_target(
    source: &mut Conn,
    target: &mut Conn,
    options: &PrecheckOptions,
) -> CheckItem {
    const NAME: &str = "cluster target";
    let state = text(target, &[b"CLUSTER".as_slice(), b"INFO"])
        .await
        .unwrap_or_default();
    let ok = info_field(&state, "cluster_state").as_deref() == Some("ok");
    let assigned = info_field(&state, "cluster_slots_assigned").unwrap_or_default();
    if !ok || assigned != "16384" {
        return CheckItem::new(
            NAME,
            Outcome::Fail,
            format!(
                "the cluster is not serving every slot (cluster_state {}, {assigned} of 16384 slots assigned)",
                info_field(&state, "cluster_state").unwrap_or_default()
            ),
        )
        .fix("assign every slot and wait for cluster_state:ok (redis-cli --cluster check)");
    }
    let keyspace = text(source, &[b"INFO".as_slice(), b"keyspace"])
        .await
        .unwrap_or_default();
    let unmapped = match &options.filter {
        Some(filter) => crate::cluster::unmapped_by_filter(&keyspace, filter),
        None => {
            crate::cluster::unmapped_source_db(&keyspace, |db| db != 0 && options.dbs.contains(&db))
        }
    };
    if let Some(db) = unmapped {
        let (detail, fix) = crate::cluster::unmapped_db_refusal(db);
        return CheckItem::new(NAME, Outcome::Fail, detail).fix(fix);
    }
    if let Ok(user) = text(source, &[b"ACL".as_slice(), b"WHOAMI"]).await {
        for (command, arg) in [
            (&b"DUMP"[..], &b"k"[..]),
            (b"PTTL", b"k"),
            (b"INFO", b"replication"),
        ] {
            let argv: Vec<&[u8]> = vec![b"ACL", b"DRYRUN", user.as_bytes(), command, arg];
            match text(source, &argv).await {
                Ok(answer) if answer == "OK" => {}
                // 6.2 has no DRYRUN: a copy will tell.
                Err(_) => break,
                Ok(answer) => {
                    return CheckItem::new(
                        NAME,
                        Outcome::Warn,
                        format!("user {user} may not read keys for cross-slot copies ({answer}): a command over several slots that cannot be split (RENAME, SMOVE...) will stop the task"),
                    )
                    .fix(format!("ACL SETUSER {user} +dump +pttl +info"))
                }
            }
        }
    }
    CheckItem::new(
        NAME,
        Outcome::Pass,
        "every slot is served; the source has keys in database 0 only (or mapped to it); cross-slot commands that cannot be split are copied from the source",
    )
}

async fn connect(
    name: &'static str,
    endpoint: &Endpoint,
    options: &ApplyOptions,
    items: &mut Vec<CheckItem>,
) -> Option<Conn> {
    let attempt = async {
        let mut conn = Conn::connect_to(
            name.trim_end_matches(" connection"),
            endpoint,
            options.clone(),
        )
        .await?;
        let pong = conn.query(&[b"PING".as_slice()]).await?;
        Ok::<_, crate::apply::ApplyError>((conn, pong))
    };
    match attempt.await {
        Ok((conn, Frame::Simple(_))) => {
            items.push(CheckItem::new(
                name,
                Outcome::Pass,
                format!("{endpoint} answers and accepts the credentials"),
            ));
            Some(conn)
        }
        Ok((_, other)) => {
            items.push(CheckItem::new(
                name,
                Outcome::Fail,
                format!("{endpoint} answered PING with {other:?}"),
            ));
            None
        }
        Err(err) => {
            let text = err.to_string();
            let mut item = CheckItem::new(name, Outcome::Fail, text.clone());
            if endpoint.tls {
                item = item.fix("check that the port speaks TLS (rediss://) and that --tls-ca-file names the CA that signed the server's certificate");
            } else if text.contains("closed the connection") {
                item = item.fix("if the server only speaks TLS, use a rediss:// URL");
            }
            items.push(item);
            None
        }
    }
}

async fn text(conn: &mut Conn, argv: &[&[u8]]) -> Result<String, String> {
    match conn.query(argv).await {
        Ok(Frame::Error(e)) => Err(String::from_utf8_lossy(&e).into_owned()),
        Ok(frame) => Ok(frame_text(&frame)),
        Err(e) => Err(e.to_string()),
    }
}

fn frame_text(frame: &Frame) -> String {
    match frame {
        Frame::Array(items) => items.iter().map(frame_text).collect::<Vec<_>>().join(" "),
        other => other
            .as_bytes()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default(),
    }
}

fn info_field(info: &str, name: &str) -> Option<String> {
    info.lines().find_map(|l| {
        l.strip_prefix(name)?
            .strip_prefix(':')
            .map(|v| v.trim().to_owned())
    })
}

async fn config_get(conn: &mut Conn, name: &str) -> Result<String, String> {
    let reply = text(conn, &[b"CONFIG".as_slice(), b"GET", name.as_bytes()]).await?;
    reply
        .split_whitespace()
        .nth(1)
        .map(str::to_owned)
        .ok_or_else(|| format!("no {name} in CONFIG GET"))
}

/// The source account may run PSYNC and SYNC (ACL DRYRUN on 7.0+; on 6.2 the
/// user's ACL rules are read when the account may, else the item warns).
async fn replication_right(source: &mut Conn) -> CheckItem {
    const NAME: &str = "source account may replicate (PSYNC/SYNC)";
    let user = match text(source, &[b"ACL".as_slice(), b"WHOAMI"]).await {
        Ok(user) => user,
        Err(e) => {
            return CheckItem::new(
                NAME,
                Outcome::Warn,
                format!("could not ask who we are: {e}"),
            )
        }
    };
    let fix = format!("ACL SETUSER {user} +psync +sync +replconf");
    for command in [&b"PSYNC"[..], b"SYNC", b"REPLCONF"] {
        let mut argv: Vec<&[u8]> = vec![b"ACL", b"DRYRUN", user.as_bytes(), command];
        if command == b"PSYNC" {
            argv.extend([&b"?"[..], b"-1"]);
        }
        if command == b"REPLCONF" {
            argv.extend([&b"ACK"[..], b"0"]);
        }
        match text(source, &argv).await {
            Ok(answer) if answer == "OK" => {}
            Ok(answer) => {
                return CheckItem::new(NAME, Outcome::Fail, format!("user {user}: {answer}"))
                    .fix(fix)
            }
            Err(e) if e.contains("unknown subcommand") || e.contains("Unknown subcommand") => {
                // 6.2: no DRYRUN. Read the user's rules if we may.
                return match text(source, &[b"ACL".as_slice(), b"GETUSER", user.as_bytes()]).await {
                    Ok(rules)
                        if rules.contains("-psync")
                            || rules.contains("-sync")
                            || rules.contains("-@all") =>
                    {
                        CheckItem::new(
                            NAME,
                            Outcome::Fail,
                            format!("user {user}'s rules deny it: {rules}"),
                        )
                        .fix(fix)
                    }
                    Ok(_) => {
                        CheckItem::new(NAME, Outcome::Pass, format!("user {user}'s rules allow it"))
                    }
                    Err(e) => CheckItem::new(
                        NAME,
                        Outcome::Warn,
                        format!("could not read user {user}'s rules ({e}); a sync will tell"),
                    ),
                };
            }
            Err(e) => {
                return CheckItem::new(
                    NAME,
                    Outcome::Warn,
                    format!("could not check ({e}); a sync will tell"),
                )
            }
        }
    }
    CheckItem::new(
        NAME,
        Outcome::Pass,
        format!("user {user} may run PSYNC, SYNC and REPLCONF"),
    )
}

async fn repl_timeout(source: &mut Conn) -> CheckItem {
    const NAME: &str = "source repl-timeout >= 600 s";
    match config_get(source, "repl-timeout")
        .await
        .map(|v| v.parse::<u64>())
    {
        Ok(Ok(secs)) if secs >= REPL_TIMEOUT_MIN_SECS => {
            CheckItem::new(NAME, Outcome::Pass, format!("repl-timeout is {secs} s"))
        }
        Ok(Ok(secs)) => CheckItem::new(
            NAME,
            Outcome::Warn,
            format!("repl-timeout is {secs} s: a long full sync may be cut by the source"),
        )
        .fix(format!("CONFIG SET repl-timeout {REPL_TIMEOUT_MIN_SECS}")),
        Ok(Err(e)) => CheckItem::new(
            NAME,
            Outcome::Warn,
            format!("repl-timeout is not a number: {e}"),
        ),
        Err(e) => CheckItem::new(NAME, Outcome::Warn, format!("cannot read it ({e})")),
    }
}

async fn backlog(source: &mut Conn, window: Duration) -> CheckItem {
    const NAME: &str = "source repl-backlog-size covers a minute of writes";
    let offset =
        |info: &str| info_field(info, "master_repl_offset").and_then(|v| v.parse::<i64>().ok());
    let first = text(source, &[b"INFO".as_slice(), b"replication"]).await;
    tokio::time::sleep(window).await;
    let second = text(source, &[b"INFO".as_slice(), b"replication"]).await;
    let size = config_get(source, "repl-backlog-size")
        .await
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    let (Ok(first), Ok(second), Some(size)) = (first, second, size) else {
        return CheckItem::new(
            NAME,
            Outcome::Warn,
            "cannot read the source's offset or backlog size",
        );
    };
    let (Some(a), Some(b)) = (offset(&first), offset(&second)) else {
        return CheckItem::new(
            NAME,
            Outcome::Warn,
            "the source reports no master_repl_offset",
        );
    };
    let rate = ((b - a).max(0) as f64 / window.as_secs_f64()) as u64;
    let wanted = rate * BACKLOG_SECONDS_MIN;
    if size >= wanted {
        CheckItem::new(
            NAME,
            Outcome::Pass,
            format!("backlog {size} bytes; writes measured at {rate} B/s"),
        )
    } else {
        let fix = wanted.next_power_of_two();
        CheckItem::new(NAME, Outcome::Warn, format!("backlog {size} bytes holds {:.0} s of writes at the measured {rate} B/s: a longer cut means a full resync", size as f64 / rate.max(1) as f64))
            .fix(format!("CONFIG SET repl-backlog-size {fix}"))
    }
}

async fn eviction_policy(target: &mut Conn) -> CheckItem {
    const NAME: &str = "target maxmemory-policy is noeviction";
    match config_get(target, "maxmemory-policy").await {
        Ok(policy) if policy == "noeviction" => CheckItem::new(NAME, Outcome::Pass, "noeviction"),
        Ok(policy) => CheckItem::new(
            NAME,
            Outcome::Warn,
            format!(
                "{policy}: the target may evict synced keys and silently differ from the source"
            ),
        )
        .fix("CONFIG SET maxmemory-policy noeviction"),
        Err(e) => CheckItem::new(NAME, Outcome::Warn, format!("cannot read it ({e})")),
    }
}

async fn free_memory(source: &mut Conn, target: &mut Conn) -> CheckItem {
    const NAME: &str = "target has room for the source's data";
    let used =
        |info: &str, field: &str| info_field(info, field).and_then(|v| v.parse::<u64>().ok());
    let (Ok(src), Ok(dst)) = (
        text(source, &[b"INFO".as_slice(), b"memory"]).await,
        text(target, &[b"INFO".as_slice(), b"memory"]).await,
    ) else {
        return CheckItem::new(NAME, Outcome::Warn, "cannot read INFO memory on both sides");
    };
    let (Some(needed), Some(target_used), Some(max)) = (
        used(&src, "used_memory"),
        used(&dst, "used_memory"),
        used(&dst, "maxmemory"),
    ) else {
        return CheckItem::new(
            NAME,
            Outcome::Warn,
            "INFO memory lacks used_memory or maxmemory",
        );
    };
    if max == 0 {
        return CheckItem::new(
            NAME,
            Outcome::Info,
            format!("the target has no maxmemory; the source uses {needed} bytes"),
        );
    }
    let free = max.saturating_sub(target_used);
    if free > needed {
        CheckItem::new(
            NAME,
            Outcome::Pass,
            format!("{free} bytes free for {needed} bytes"),
        )
    } else {
        CheckItem::new(
            NAME,
            Outcome::Fail,
            format!(
                "the target has {free} bytes free under maxmemory {max}; the source uses {needed}"
            ),
        )
        .fix(format!(
            "raise the target's maxmemory above {}",
            target_used + needed + needed / 5
        ))
    }
}

async fn versions(source: &mut Conn, target: &mut Conn) -> CheckItem {
    const NAME: &str = "source version not newer than target";
    let version = |info: &str| info_field(info, "redis_version").unwrap_or_default();
    let (Ok(src), Ok(dst)) = (
        text(source, &[b"INFO".as_slice(), b"server"]).await,
        text(target, &[b"INFO".as_slice(), b"server"]).await,
    ) else {
        return CheckItem::new(NAME, Outcome::Warn, "cannot read INFO server on both sides");
    };
    let (from, to) = (version(&src), version(&dst));
    if rdb_version_of(&from) <= rdb_version_of(&to) {
        CheckItem::new(
            NAME,
            Outcome::Pass,
            format!("{from} -> {to}: values are copied as they are"),
        )
    } else {
        CheckItem::new(NAME, Outcome::Info, format!("{from} -> {to}: values are rewritten for the older target; one it cannot hold (hash field TTLs) stops the task naming the key, and newer commands in the stream are refused by the target"))
    }
}

/// Does the task own only some keys of its target databases (prefix rules or
/// renames: [`crate::filter::ClearScope::Keys`])? Then only those can conflict.
fn by_key(filter: &crate::filter::Filter) -> bool {
    matches!(filter.clear_scope(), crate::filter::ClearScope::Keys { .. })
}

/// Keys scanned per database, at most, when looking for the task's own names on a
/// target shared with other tasks.
const OWNED_SCAN_KEYS_MAX: usize = 1_000_000;

/// With key rules, a conflict is a target key the task would write (a key it owns,
/// renamed names included: [`crate::filter::Filter::owns_key`]); keys of other tasks
/// sharing the target are not. Scans each busy database, up to
/// [`OWNED_SCAN_KEYS_MAX`] keys.
async fn owned_keys_present(
    target: &mut Conn,
    filter: &crate::filter::Filter,
    busy: &[(u32, u64)],
    precheck_conflicts: bool,
) -> CheckItem {
    const NAME: &str = "target databases are empty";
    let mut owned: Vec<(u32, String)> = Vec::new();
    let mut partial = Vec::new();
    for &(db, _) in busy {
        match scan_owned(target, filter, db).await {
            Ok((found, complete)) => {
                owned.extend(found.into_iter().map(|k| (db, k)));
                if !complete {
                    partial.push(db);
                }
            }
            Err(e) => {
                return CheckItem::new(
                    NAME,
                    Outcome::Warn,
                    format!("cannot scan db {db} of the target: {e}"),
                )
            }
        }
    }
    let total: u64 = busy.iter().map(|(_, n)| n).sum();
    if owned.is_empty() && partial.is_empty() {
        return CheckItem::new(NAME, Outcome::Pass, format!("{total} keys in the task's databases, none under a name this task writes (other tasks' keys)"));
    }
    if owned.is_empty() {
        return CheckItem::new(NAME, Outcome::Warn, format!("no key under a name this task writes among the first {OWNED_SCAN_KEYS_MAX} keys of db {partial:?}; the rest was not scanned"));
    }
    let examples: Vec<String> = owned
        .iter()
        .take(5)
        .map(|(db, k)| format!("{k} (db {db})"))
        .collect();
    let detail = format!(
        "target keys under names this task writes: {}{}",
        examples.join(", "),
        if owned.len() > 5 {
            format!(" and {} more", owned.len() - 5)
        } else {
            String::new()
        }
    );
    if precheck_conflicts {
        CheckItem::new(NAME, Outcome::Fail, detail).fix("delete those keys, change --prefix or --rename-prefix, or choose --conflict ignore to let source keys overwrite them")
    } else {
        CheckItem::new(
            NAME,
            Outcome::Warn,
            format!("{detail}: source keys will overwrite them"),
        )
    }
}

/// The keys of target database `db` the task owns (at most 100 kept), and whether
/// the scan went through the whole database.
async fn scan_owned(
    target: &mut Conn,
    filter: &crate::filter::Filter,
    db: u32,
) -> Result<(Vec<String>, bool), String> {
    target
        .query(&[b"SELECT".as_slice(), db.to_string().as_bytes()])
        .await
        .map_err(|e| e.to_string())?;
    let (mut cursor, mut scanned, mut found) = (b"0".to_vec(), 0usize, Vec::new());
    loop {
        let reply = target
            .query(&[b"SCAN".as_slice(), &cursor, b"COUNT", b"1000"])
            .await
            .map_err(|e| e.to_string())?;
        let Frame::Array(parts) = reply else {
            return Err(format!("SCAN answered {reply:?}"));
        };
        let (Some(next), Some(Frame::Array(keys))) =
            (parts.first().and_then(Frame::as_bytes), parts.get(1))
        else {
            return Err("SCAN answered an unexpected shape".into());
        };
        cursor = next.to_vec();
        for key in keys.iter().filter_map(Frame::as_bytes) {
            scanned += 1;
            if found.len() < 100 && filter.owns_key_in(db, key) {
                found.push(String::from_utf8_lossy(key).into_owned());
            }
        }
        if cursor == b"0" {
            return Ok((found, true));
        }
        if scanned >= OWNED_SCAN_KEYS_MAX {
            return Ok((found, false));
        }
    }
}

async fn target_empty(target: &mut Conn, options: &PrecheckOptions) -> CheckItem {
    const NAME: &str = "target databases are empty";
    let Ok(keyspace) = text(target, &[b"INFO".as_slice(), b"keyspace"]).await else {
        return CheckItem::new(NAME, Outcome::Warn, "cannot read INFO keyspace");
    };
    let mut busy = Vec::new();
    for &db in &options.dbs {
        let keys = info_field(&keyspace, &format!("db{db}"))
            .and_then(|v| {
                v.split(',')
                    .find_map(|kv| kv.strip_prefix("keys=")?.parse::<u64>().ok())
            })
            .unwrap_or(0);
        if keys > 0 {
            busy.push((db, keys));
        }
    }
    if busy.is_empty() {
        return CheckItem::new(NAME, Outcome::Pass, "no keys in the selected databases");
    }
    if let Some(filter) = options.filter.as_ref().filter(|f| by_key(f)) {
        return owned_keys_present(target, filter, &busy, options.precheck_conflicts).await;
    }
    let (db, count) = busy[0];
    let mut examples = String::new();
    if target
        .query(&[b"SELECT".as_slice(), db.to_string().as_bytes()])
        .await
        .is_ok()
    {
        if let Ok(Frame::Array(reply)) = target
            .query(&[b"SCAN".as_slice(), b"0", b"COUNT", b"20"])
            .await
        {
            if let Some(Frame::Array(keys)) = reply.get(1) {
                let names: Vec<String> = keys.iter().take(5).map(frame_text).collect();
                examples = format!(" (for example {})", names.join(", "));
            }
        }
    }
    let detail = format!(
        "{count} keys in db {db}{examples}; {} database(s) hold keys",
        busy.len()
    );
    if options.precheck_conflicts {
        CheckItem::new(NAME, Outcome::Fail, detail).fix("empty those databases, or choose --conflict ignore to let source keys overwrite target keys")
    } else {
        CheckItem::new(
            NAME,
            Outcome::Warn,
            format!("{detail}: source keys will overwrite target keys of the same name"),
        )
    }
}
