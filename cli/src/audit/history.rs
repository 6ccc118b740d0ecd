//! The audit history: an SQLite file (rusqlite, with SQLite bundled) of every run of
//! every pair and of every key found differing, so a trend can be read and a
//! divergence that persists told apart from lag that comes and goes.
//!
//! Tables: `runs` (pair, start, end, mode, sample window, keys compared, coverage and
//! differences by kind as JSON, verdict, the sample's statement, the error of a run
//! that could not verify) and `keys` (pair, db, key as bytes, kind, first seen, last
//! seen, consecutive runs, the last run that saw it). A key is *persistent* when it
//! differed in the pair's last run and in the run before it (2+ consecutive runs);
//! a run that could not verify neither extends nor breaks a streak.
//!
//! The file is never reset: a file that is not an SQLite database, a history of an
//! unknown version, or a file locked by another process is an error naming the file
//! and the fix. Times are milliseconds since the Unix epoch (UTC).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use rusqlite::{params, Connection, ErrorCode, OptionalExtension};

use crate::audit::config::Retention;

/// The version of the tables this build writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 1;
/// How long a write waits for another process's lock before failing.
pub const LOCK_WAIT: Duration = Duration::from_secs(5);
/// Consecutive runs after which a differing key is persistent.
pub const PERSISTENT_RUNS: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    pair TEXT NOT NULL,
    started_ms INTEGER NOT NULL,
    ended_ms INTEGER NOT NULL,
    mode TEXT NOT NULL,
    sample_window INTEGER NOT NULL,
    keys_compared INTEGER NOT NULL,
    coverage TEXT,
    differences INTEGER NOT NULL,
    by_kind TEXT NOT NULL,
    verdict TEXT NOT NULL,
    statement TEXT,
    error TEXT
);
CREATE INDEX runs_by_pair ON runs (pair, id);
CREATE TABLE keys (
    pair TEXT NOT NULL,
    db INTEGER NOT NULL,
    key BLOB NOT NULL,
    kind TEXT NOT NULL,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    consecutive INTEGER NOT NULL,
    last_run INTEGER NOT NULL,
    PRIMARY KEY (pair, db, key)
);
";

/// One run as recorded.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Run {
    pub id: i64,
    pub pair: String,
    pub started_ms: i64,
    pub ended_ms: i64,
    pub mode: String,
    pub sample_window: u64,
    pub keys_compared: u64,
    pub coverage: Option<serde_json::Value>,
    pub differences: u64,
    pub by_kind: BTreeMap<String, u64>,
    /// consistent, differences, incomplete, or could_not_verify.
    pub verdict: String,
    pub statement: Option<serde_json::Value>,
    pub error: Option<String>,
}

/// A key differing in the run being recorded.
#[derive(Clone, Debug)]
pub struct SeenKey {
    pub db: u32,
    pub key: Vec<u8>,
    pub kind: String,
}

/// A differing key as tracked.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct TrackedKey {
    pub pair: String,
    pub db: u32,
    #[serde(serialize_with = "as_report_key")]
    pub key: Vec<u8>,
    pub kind: String,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub consecutive: i64,
}

fn as_report_key<S: serde::Serializer>(key: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&lockstep_verify::output::encode_key(key))
}

/// An open history file.
pub struct History {
    conn: Connection,
    path: PathBuf,
}

impl History {
    /// Opens (or creates) the history at `path`; refuses a file that is not one.
    pub fn open(path: &Path) -> anyhow::Result<History> {
        let conn = Connection::open(path).map_err(|e| explain(path, e))?;
        conn.busy_timeout(LOCK_WAIT).map_err(|e| explain(path, e))?;
        let mut history = History {
            conn,
            path: path.to_owned(),
        };
        history.prepare().map_err(|e| explain(path, e))?;
        Ok(history)
    }

    /// Opens the history at `path` read-only, for `audit history`: never creates or
    /// changes it. None: the file holds no history yet (an empty SQLite file).
    pub fn open_read_only(path: &Path) -> anyhow::Result<Option<History>> {
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| explain(path, e))?;
        conn.busy_timeout(LOCK_WAIT).map_err(|e| explain(path, e))?;
        let (version, tables) = version_and_tables(&conn).map_err(|e| explain(path, e))?;
        match (version, tables) {
            (SCHEMA_VERSION, _) => Ok(Some(History {
                conn,
                path: path.to_owned(),
            })),
            (0, 0) => Ok(None),
            (other, _) => Err(explain(path, version_mismatch(other))),
        }
    }

    /// Creates the tables in a new file, or checks the version of an existing one.
    /// The check is made again inside an IMMEDIATE transaction (the write lock, waited
    /// for), so processes opening a new file at once create it once and all succeed.
    fn prepare(&mut self) -> rusqlite::Result<()> {
        if version_and_tables(&self.conn)?.0 == SCHEMA_VERSION {
            return Ok(());
        }
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        match version_and_tables(&tx)? {
            (SCHEMA_VERSION, _) => Ok(()),
            (0, 0) => {
                tx.execute_batch(SCHEMA)?;
                tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
                tx.commit()
            }
            (other, _) => Err(version_mismatch(other)),
        }
    }

    /// Records `run` and its differing keys, then applies the retention; the run's id.
    pub fn record(
        &mut self,
        run: &Run,
        keys: &[SeenKey],
        retention: Retention,
    ) -> anyhow::Result<i64> {
        let path = self.path.clone();
        self.record_inner(run, keys, retention)
            .map_err(|e| explain(&path, e))
            .with_context(|| format!("recording the audit of `{}`", run.pair))
    }

    fn record_inner(
        &mut self,
        run: &Run,
        keys: &[SeenKey],
        retention: Retention,
    ) -> rusqlite::Result<i64> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let previous: Option<i64> = tx
            .query_row(
                "SELECT max(id) FROM runs WHERE pair = ?1 AND verdict != 'could_not_verify'",
                [&run.pair],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        tx.execute(
            "INSERT INTO runs (pair, started_ms, ended_ms, mode, sample_window, keys_compared,
                coverage, differences, by_kind, verdict, statement, error)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            params![
                run.pair,
                run.started_ms,
                run.ended_ms,
                run.mode,
                run.sample_window as i64,
                run.keys_compared as i64,
                run.coverage.as_ref().map(|c| c.to_string()),
                run.differences as i64,
                serde_json::to_string(&run.by_kind).unwrap_or_default(),
                run.verdict,
                run.statement.as_ref().map(|s| s.to_string()),
                run.error,
            ],
        )?;
        let id = tx.last_insert_rowid();
        for key in keys {
            track_key(&tx, run, key, id, previous)?;
        }
        apply_retention(&tx, &run.pair, retention, run.started_ms)?;
        tx.commit()?;
        Ok(id)
    }

    /// The runs, oldest first, of `pair` or of every pair.
    pub fn runs(&self, pair: Option<&str>) -> anyhow::Result<Vec<Run>> {
        self.runs_inner(pair, -1)
            .map_err(|e| explain(&self.path, e))
    }

    /// The newest `limit` runs (-1: all), oldest first.
    fn runs_inner(&self, pair: Option<&str>, limit: i64) -> rusqlite::Result<Vec<Run>> {
        let mut statement = self.conn.prepare(
            "SELECT id, pair, started_ms, ended_ms, mode, sample_window, keys_compared,
                coverage, differences, by_kind, verdict, statement, error
             FROM runs WHERE ?1 IS NULL OR pair = ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let json = |text: Option<String>| text.and_then(|t| serde_json::from_str(&t).ok());
        let rows = statement.query_map(rusqlite::params![pair, limit], |r| {
            Ok(Run {
                id: r.get(0)?,
                pair: r.get(1)?,
                started_ms: r.get(2)?,
                ended_ms: r.get(3)?,
                mode: r.get(4)?,
                sample_window: r.get::<_, i64>(5)? as u64,
                keys_compared: r.get::<_, i64>(6)? as u64,
                coverage: json(r.get(7)?),
                differences: r.get::<_, i64>(8)? as u64,
                by_kind: r
                    .get::<_, Option<String>>(9)?
                    .and_then(|t| serde_json::from_str(&t).ok())
                    .unwrap_or_default(),
                verdict: r.get(10)?,
                statement: json(r.get(11)?),
                error: r.get(12)?,
            })
        })?;
        let mut runs = rows.collect::<rusqlite::Result<Vec<Run>>>()?;
        runs.reverse();
        Ok(runs)
    }

    /// The last run of `pair`, if any: one row read, however long the history.
    pub fn last_run(&self, pair: &str) -> anyhow::Result<Option<Run>> {
        let mut newest = self
            .runs_inner(Some(pair), 1)
            .map_err(|e| explain(&self.path, e))?;
        Ok(newest.pop())
    }

    /// The keys that differed in the last verified run of their pair, with
    /// `consecutive` runs at least `min_runs`.
    pub fn current_keys(
        &self,
        pair: Option<&str>,
        min_runs: i64,
    ) -> anyhow::Result<Vec<TrackedKey>> {
        self.current_keys_inner(pair, min_runs)
            .map_err(|e| explain(&self.path, e))
    }

    fn current_keys_inner(
        &self,
        pair: Option<&str>,
        min_runs: i64,
    ) -> rusqlite::Result<Vec<TrackedKey>> {
        let mut statement = self.conn.prepare(
            "SELECT k.pair, k.db, k.key, k.kind, k.first_seen_ms, k.last_seen_ms, k.consecutive
             FROM keys k
             WHERE (?1 IS NULL OR k.pair = ?1) AND k.consecutive >= ?2
               AND k.last_run = (SELECT max(id) FROM runs r
                                 WHERE r.pair = k.pair AND r.verdict != 'could_not_verify')
             ORDER BY k.pair, k.db, k.key",
        )?;
        let rows = statement.query_map(params![pair, min_runs], |r| {
            Ok(TrackedKey {
                pair: r.get(0)?,
                db: r.get(1)?,
                key: r.get(2)?,
                kind: r.get(3)?,
                first_seen_ms: r.get(4)?,
                last_seen_ms: r.get(5)?,
                consecutive: r.get(6)?,
            })
        })?;
        rows.collect()
    }
}

/// `PRAGMA user_version` and the number of schema objects.
fn version_and_tables(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    let version = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let tables = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
    Ok((version, tables))
}

fn version_mismatch(version: i64) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_MISMATCH),
        Some(format!(
            "history version {version}, this lockstep reads version {SCHEMA_VERSION}"
        )),
    )
}

/// One differing key of run `id`: its streak goes on when it differed in the
/// previous verified run, else starts again.
fn track_key(
    tx: &rusqlite::Transaction<'_>,
    run: &Run,
    key: &SeenKey,
    id: i64,
    previous: Option<i64>,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO keys (pair, db, key, kind, first_seen_ms, last_seen_ms, consecutive, last_run)
         VALUES (?1, ?2, ?3, ?4, ?5, ?5, 1, ?6)
         ON CONFLICT (pair, db, key) DO UPDATE SET
             kind = excluded.kind,
             first_seen_ms = CASE WHEN keys.last_run IS ?7 THEN keys.first_seen_ms
                                  ELSE excluded.first_seen_ms END,
             consecutive = CASE WHEN keys.last_run IS ?7 THEN keys.consecutive + 1 ELSE 1 END,
             last_seen_ms = excluded.last_seen_ms,
             last_run = excluded.last_run",
        params![
            run.pair,
            key.db,
            key.key,
            key.kind,
            run.started_ms,
            id,
            previous
        ],
    )?;
    Ok(())
}

/// Deletes the pair's runs beyond the retention, and the keys last seen before the
/// oldest run kept.
fn apply_retention(
    tx: &rusqlite::Transaction<'_>,
    pair: &str,
    retention: Retention,
    now_ms: i64,
) -> rusqlite::Result<()> {
    if let Some(days) = retention.days {
        let oldest = now_ms.saturating_sub((days as i64).saturating_mul(86_400_000));
        tx.execute(
            "DELETE FROM runs WHERE pair = ?1 AND started_ms < ?2",
            params![pair, oldest],
        )?;
    }
    if let Some(runs) = retention.runs {
        tx.execute(
            "DELETE FROM runs WHERE pair = ?1 AND id NOT IN
                (SELECT id FROM runs WHERE pair = ?1 ORDER BY id DESC LIMIT ?2)",
            params![pair, runs as i64],
        )?;
    }
    tx.execute(
        "DELETE FROM keys WHERE pair = ?1 AND last_seen_ms <
            coalesce((SELECT min(started_ms) FROM runs WHERE pair = ?1), 0)",
        [pair],
    )?;
    Ok(())
}

/// An SQLite error on the history at `path`, with what it means and the fix.
fn explain(path: &Path, err: rusqlite::Error) -> anyhow::Error {
    let file = path.display();
    let fix = match err.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) | Some(ErrorCode::DatabaseCorrupt) => format!(
            "the audit history {file} is not an SQLite database or is damaged; it is never \
             reset: move it away (or restore it from a backup) and a new history starts"
        ),
        Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked) => format!(
            "the audit history {file} is locked by another process (another `lockstep \
             audit`?) and stayed locked for {} s: stop that process, or give this one \
             another history file",
            LOCK_WAIT.as_secs()
        ),
        Some(ErrorCode::TypeMismatch) => format!(
            "the audit history {file} was written by another version of lockstep; it is \
             never converted: give this one another history file"
        ),
        Some(ErrorCode::CannotOpen)
        | Some(ErrorCode::PermissionDenied)
        | Some(ErrorCode::ReadOnly) => {
            format!(
                "cannot write the audit history {file}: check the folder exists and is writable"
            )
        }
        _ => format!("the audit history {file}"),
    };
    anyhow::Error::new(err).context(fix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(pair: &str, at: i64, verdict: &str) -> Run {
        Run {
            pair: pair.to_owned(),
            started_ms: at,
            ended_ms: at + 10,
            mode: "full".into(),
            verdict: verdict.into(),
            ..Run::default()
        }
    }

    fn seen(key: &str) -> SeenKey {
        SeenKey {
            db: 0,
            key: key.as_bytes().to_vec(),
            kind: "value".into(),
        }
    }

    #[test]
    fn a_key_in_two_consecutive_runs_is_persistent_and_one_that_left_is_not() {
        let dir = tempfile::tempdir().expect("dir");
        let mut h = History::open(&dir.path().join("h.db")).expect("open");
        let none = Retention::default();
        h.record(
            &run("a", 1000, "differences"),
            &[seen("x"), seen("y")],
            none,
        )
        .expect("1");
        assert!(h
            .current_keys(None, PERSISTENT_RUNS)
            .expect("keys")
            .is_empty());
        h.record(&run("a", 2000, "could_not_verify"), &[], none)
            .expect("error run");
        h.record(&run("a", 3000, "differences"), &[seen("x")], none)
            .expect("2");
        let persistent = h.current_keys(Some("a"), PERSISTENT_RUNS).expect("keys");
        assert_eq!(persistent.len(), 1, "{persistent:?}");
        assert_eq!(
            (persistent[0].key.as_slice(), persistent[0].consecutive),
            (&b"x"[..], 2)
        );
        assert_eq!(
            (persistent[0].first_seen_ms, persistent[0].last_seen_ms),
            (1000, 3000)
        );
        h.record(&run("a", 4000, "consistent"), &[], none)
            .expect("3");
        assert!(h.current_keys(Some("a"), 1).expect("keys").is_empty());
        h.record(&run("a", 5000, "differences"), &[seen("x")], none)
            .expect("4");
        let again = h.current_keys(Some("a"), 1).expect("keys");
        assert_eq!(
            (again[0].consecutive, again[0].first_seen_ms),
            (1, 5000),
            "a new streak"
        );
    }

    #[test]
    fn retention_keeps_the_newest_runs_per_pair() {
        let dir = tempfile::tempdir().expect("dir");
        let mut h = History::open(&dir.path().join("h.db")).expect("open");
        let keep = Retention {
            days: None,
            runs: Some(2),
        };
        for i in 0..5 {
            h.record(&run("a", i * 1000, "consistent"), &[], keep)
                .expect("a");
        }
        h.record(&run("b", 0, "consistent"), &[], keep).expect("b");
        let runs = h.runs(Some("a")).expect("runs");
        assert_eq!(
            runs.iter().map(|r| r.started_ms).collect::<Vec<_>>(),
            vec![3000, 4000]
        );
        assert_eq!(h.runs(None).expect("all").len(), 3);
        let last = h.last_run("a").expect("last").expect("a run");
        assert_eq!(last.started_ms, 4000, "the newest run of its pair");
        assert!(h.last_run("none").expect("last").is_none());
        let days = Retention {
            days: Some(1),
            runs: None,
        };
        h.record(&run("a", 86_400_000 + 3500, "consistent"), &[], days)
            .expect("later");
        assert_eq!(
            h.runs(Some("a")).expect("runs").len(),
            2,
            "runs older than a day deleted"
        );
    }

    #[test]
    fn a_file_that_is_not_a_history_is_refused_and_left_as_it_was() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("h.db");
        std::fs::write(
            &path,
            b"this is no database, but somebody's notes\n".repeat(100),
        )
        .expect("write");
        let err = format!("{:#}", History::open(&path).err().expect("refused"));
        assert!(err.contains("h.db") && err.contains("never reset"), "{err}");
        let text = std::fs::read(&path).expect("read");
        assert!(text.starts_with(b"this is no database"), "left as it was");
    }
}

#[cfg(test)]
mod concurrent_open_tests {
    use super::*;

    /// Found by the daemon restart test under load: a second process opening a new
    /// history while the daemon created its tables made one of them fail
    /// ("table runs already exists", or SQLITE_BUSY without waiting: a deadlock), and
    /// the daemon exited.
    #[test]
    fn processes_opening_a_new_history_at_once_all_succeed() {
        let dir = tempfile::tempdir().expect("dir");
        for round in 0..40 {
            let path = dir.path().join(format!("h{round}.db"));
            let openers: Vec<_> = (0..3)
                .map(|_| {
                    let path = path.clone();
                    std::thread::spawn(move || History::open(&path).map(|_| ()))
                })
                .collect();
            for opener in openers {
                if let Err(err) = opener.join().expect("no panic") {
                    panic!("round {round}: {err:#}");
                }
            }
        }
    }
}
