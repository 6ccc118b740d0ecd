//! The invariants the explorer checks besides equality:
//! - no guard expiry left: once the stream has passed the end of the full copy, no
//!   target key expires at or after 3000-01-01T00:00:00Z (the full copy's TTL guard is
//!   `3000-01-01 + t`; one left behind keeps a key forever);
//! - checkpoints monotone: the target's `LOCKSTEP_CHECKPOINT` (`<replid> <offset>
//!   <db>`), sampled every 200 ms during the episode, never goes back for one replid;
//! - an honest lag: while lockstep reports the incremental phase, its lag (`/status`
//!   `lag_ms`) is not far below the real staleness of the target, measured by the
//!   clock key (the source's time, written every 100 ms) on both sides;
//! - no password in lockstep's output.
//!
//! Counters are exact when the checker finds the target equal to the source for
//! the `cnt:` keys (INCRBY only), so they need no check of their own.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::checker::{show_key, Snapshot};
use super::shared::CLOCK_KEY;

/// 3000-01-01T00:00:00Z in unix ms: the base of the full copy's guard expiries.
pub const GUARD_BASE_MS: i64 = 32_503_680_000_000;

/// Target keys whose expiry is a guard expiry, one line each.
pub fn guard_expiries(target: &Snapshot) -> Vec<String> {
    target
        .iter()
        .filter(|(_, e)| e.expires_at_ms.is_some_and(|at| at >= GUARD_BASE_MS - 1000))
        .map(|((db, key), e)| {
            format!(
                "db {db} key {}: expires at unix ms {} (year 3000 or later: a guard expiry left behind)",
                show_key(key),
                e.expires_at_ms.unwrap_or_default()
            )
        })
        .collect()
}

/// Violations found by the samplers, shared with their tasks.
pub type Findings = Arc<Mutex<Vec<String>>>;

fn record(findings: &Findings, line: String) {
    if let Ok(mut all) = findings.lock() {
        if all.len() < 20 && !all.contains(&line) {
            all.push(line);
        }
    }
}

/// Samples the target's checkpoint key every 200 ms until stopped; a smaller offset
/// than one seen before for the same replid is a violation.
pub async fn sample_checkpoints(
    target: redis::Client,
    findings: Findings,
    mut stop: watch::Receiver<bool>,
) {
    let mut highest: BTreeMap<String, i64> = BTreeMap::new();
    let mut conn = None;
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if conn.is_none() {
            conn = target.get_multiplexed_async_connection().await.ok();
        }
        let Some(c) = conn.as_mut() else { continue };
        let read: redis::RedisResult<((), Option<String>)> = redis::pipe()
            .cmd("SELECT")
            .arg(0)
            .cmd("GET")
            .arg("LOCKSTEP_CHECKPOINT")
            .query_async(c)
            .await;
        let value = match read {
            Ok((_, value)) => value,
            Err(_) => {
                conn = None;
                continue;
            }
        };
        let Some(value) = value else { continue };
        let mut parts = value.split(' ');
        let (Some(replid), Some(Ok(offset))) = (parts.next(), parts.next().map(str::parse::<i64>))
        else {
            record(&findings, format!("checkpoint: the target's LOCKSTEP_CHECKPOINT is {value:?}, not `<replid> <offset> <db>`"));
            continue;
        };
        let seen = highest.entry(replid.to_owned()).or_insert(offset);
        if offset < *seen {
            record(
                &findings,
                format!("checkpoint went back: replid {replid} offset {seen} then {offset}"),
            );
        }
        *seen = (*seen).max(offset);
    }
}

/// What `/status` says about the first target: its phase and lag.
async fn status(port: u16) -> Option<(String, Option<i64>)> {
    let url = format!("http://127.0.0.1:{port}/status");
    let body = tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(2)))
            .build()
            .into();
        agent
            .get(&url)
            .call()
            .and_then(|mut response| response.body_mut().read_to_string())
    })
    .await
    .ok()?
    .ok()?;
    let doc: serde_json::Value = serde_json::from_str(&body).ok()?;
    let target = doc.get("targets")?.get(0)?;
    let phase = target.get("phase")?.as_str()?.to_owned();
    Some((
        phase,
        target.get("lag_ms").and_then(serde_json::Value::as_i64),
    ))
}

/// lockstep's phase per `/status`, or "unknown" when it does not answer.
pub async fn phase(port: u16) -> String {
    status(port)
        .await
        .map_or_else(|| "unknown".to_owned(), |(phase, _)| phase)
}

async fn clock(client: &redis::Client, db: u32) -> Option<i64> {
    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
    let ((), value): ((), Option<i64>) = redis::pipe()
        .cmd("SELECT")
        .arg(db)
        .cmd("GET")
        .arg(CLOCK_KEY)
        .query_async(&mut conn)
        .await
        .ok()?;
    value
}

/// Staleness above this with a reported lag under a quarter of it is a violation.
const STALE_MS: i64 = 8000;

/// Once a second until stopped: the staleness of the target (source clock minus
/// target clock) against the lag lockstep reports; one finding for all the samples
/// that disagreed, with the worst.
pub async fn sample_lag(
    source: redis::Client,
    target: redis::Client,
    target_db: u32,
    status_port: u16,
    findings: Findings,
    mut stop: watch::Receiver<bool>,
) {
    let (mut bad, mut worst) = (0u32, (0i64, 0i64));
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        let Some((phase, Some(lag_ms))) = status(status_port).await else {
            continue;
        };
        if phase != "incremental" {
            continue;
        }
        let (Some(at_source), Some(at_target)) =
            (clock(&source, 0).await, clock(&target, target_db).await)
        else {
            continue;
        };
        let stale = at_source - at_target;
        if stale > STALE_MS && lag_ms < stale / 4 {
            bad += 1;
            if stale > worst.1 {
                worst = (lag_ms, stale);
            }
        }
    }
    if bad > 0 {
        record(
            &findings,
            format!(
                "lag: in {bad} samples lockstep reported a lag far below the real one (incremental phase), at worst lag_ms={} while the target's data was {:.1} s behind the source's (clock key {CLOCK_KEY})",
                worst.0,
                worst.1 as f64 / 1000.0
            ),
        );
    }
}

/// The password, if `log` contains it.
pub fn password_in(log: &str, password: Option<&str>) -> Option<String> {
    let password = password?;
    log.lines()
        .find(|line| line.contains(password))
        .map(|line| {
            format!(
                "password: lockstep printed the source password: {}",
                line.replace(password, "<PASSWORD>")
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::explore::checker::{Entry, Value};
    use crate::chaos::explore::shared::unix_ms;

    #[test]
    fn a_year_3000_expiry_is_a_guard_left_behind() {
        let mut target = Snapshot::new();
        let entry = |at| Entry {
            value: Value::String(b"v".to_vec()),
            expires_at_ms: at,
        };
        target.insert((0, b"a".to_vec()), entry(Some(unix_ms() + 60_000)));
        target.insert((0, b"b".to_vec()), entry(None));
        target.insert((20, b"c".to_vec()), entry(Some(GUARD_BASE_MS + 5_000)));
        let found = guard_expiries(&target);
        assert_eq!(found.len(), 1);
        assert!(found[0].starts_with("db 20 key c"), "{found:?}");
    }

    #[test]
    fn a_password_is_found_and_not_repeated() {
        let line = password_in("ok\nurl redis://:s3cret@x\n", Some("s3cret")).unwrap();
        assert!(!line.contains("s3cret"));
        assert!(password_in("ok", Some("s3cret")).is_none());
    }
}
