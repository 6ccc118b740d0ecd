//! One settle pass of the TTL guard ([`lockstep_sync::ttl_guard`]) against real
//! servers: it gives the task's guarded keys their real expiry, whatever database
//! and name they have now, and touches nothing outside the task's scope (another
//! task's prefix or database, a user key expiring after the guard range). Plus the
//! cost of a pass over a big target (ignored: a measurement, run by hand).
//! Judged by plain reads of the target.

use std::time::{Duration, Instant};

use lockstep_sync::apply::ApplyOptions;
use lockstep_sync::endpoint::Endpoint;
use lockstep_sync::filter::Filter;
use lockstep_sync::load::GUARD_BASE_MS;
use lockstep_sync::target::Target;
use lockstep_sync::ttl_guard::{PendingSettle, Settler};
use lockstep_testkit::{RedisServer, RedisVersion, ServerConfig};
use redis::aio::MultiplexedConnection;

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

async fn pexpireat(
    conn: &mut MultiplexedConnection,
    db: u32,
    key: &str,
    at: i64,
) -> anyhow::Result<()> {
    redis::pipe()
        .cmd("SELECT")
        .arg(db)
        .ignore()
        .cmd("SET")
        .arg(key)
        .arg("v")
        .arg("PXAT")
        .arg(at)
        .ignore()
        .query_async::<()>(conn)
        .await?;
    Ok(())
}

async fn expiry_ms(conn: &mut MultiplexedConnection, db: u32, key: &str) -> anyhow::Result<i64> {
    let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(conn).await?;
    let (pttl,): (i64,) = redis::pipe()
        .cmd("SELECT")
        .arg(db)
        .ignore()
        .cmd("PTTL")
        .arg(key)
        .query_async(conn)
        .await?;
    assert!(pttl >= 0, "db{db} {key}: PTTL {pttl}");
    Ok(secs * 1000 + micros / 1000 + pttl)
}

async fn settle_once(
    target: &RedisServer,
    filter: &Filter,
) -> anyhow::Result<lockstep_sync::ttl_guard::Settled> {
    let mut writer = Target::connect(
        &Endpoint::parse(&target.url())?,
        ApplyOptions::default(),
        b"LOCKSTEP_CHECKPOINT",
    )
    .await?;
    let settler = Settler {
        filter,
        marker_key: b"LOCKSTEP_TTL_GUARDS".to_vec(),
        pexpiretime: target.version() != RedisVersion::V6_2,
    };
    let mut pending = PendingSettle::after_copy(0, Duration::from_secs(3600));
    let settled = settler.settle(&mut writer, &mut pending, 0).await?;
    settled.ok_or_else(|| anyhow::anyhow!("a standalone pass is always trusted"))
}

#[tokio::test]
async fn a_pass_settles_the_tasks_keys_wherever_they_are_and_nothing_else() -> anyhow::Result<()> {
    for version in [RedisVersion::V6_2, RedisVersion::V8_2] {
        let target = RedisServer::start(ServerConfig::new(version)).await?;
        let mut conn = target.client().await?;
        let real = unix_ms() + 120_000;
        // The task writes prefix `app:` of source dbs 0 and 1, mapped to 5 and 6.
        let filter = Filter {
            dbs: vec![0, 1],
            db_map: vec![(0, 5), (1, 6)],
            include_prefixes: vec![b"app:".to_vec()],
            ..Filter::default()
        };
        pexpireat(&mut conn, 5, "app:renamed", GUARD_BASE_MS + real).await?;
        pexpireat(&mut conn, 6, "app:moved", GUARD_BASE_MS + real + 1).await?;
        // Outside the scope: another task's prefix, another database, and a user key
        // expiring after the guard range (year 3100).
        pexpireat(&mut conn, 5, "other:key", GUARD_BASE_MS + real).await?;
        pexpireat(&mut conn, 7, "app:elsewhere", GUARD_BASE_MS + real).await?;
        let year_3100 = GUARD_BASE_MS + 3_155_760_000_000;
        pexpireat(&mut conn, 5, "app:far", year_3100).await?;

        let settled = settle_once(&target, &filter).await?;
        assert_eq!(settled.keys, 2, "{version}: {settled:?}");
        // 6.2 reads the expiry as TIME + PTTL: within a few ms.
        let tolerance = if version == RedisVersion::V6_2 { 5 } else { 0 };
        for (db, key, want) in [(5, "app:renamed", real), (6, "app:moved", real + 1)] {
            let got = expiry_ms(&mut conn, db, key).await?;
            assert!(
                (got - want).abs() <= tolerance + 2,
                "{version} db{db} {key}: expiry {got}, want {want}"
            );
        }
        for (db, key, want) in [
            (5, "other:key", GUARD_BASE_MS + real),
            (7, "app:elsewhere", GUARD_BASE_MS + real),
            (5, "app:far", year_3100),
        ] {
            let got = expiry_ms(&mut conn, db, key).await?;
            assert!(
                (got - want).abs() <= 10,
                "{version} db{db} {key} was touched: expiry {got}, had {want}"
            );
        }
    }
    Ok(())
}

/// The cost of one pass over 500k keys of which 10% carry a guard. Run by hand:
/// `cargo test -p lockstep-sync --release --test ttl_guard_settle -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "a measurement"]
async fn settle_cost_on_a_big_target() -> anyhow::Result<()> {
    const KEYS: usize = 500_000;
    for version in [RedisVersion::V7_0, RedisVersion::V6_2] {
        let target = RedisServer::start(ServerConfig::new(version)).await?;
        let mut conn = target.client().await?;
        for start in (0..KEYS).step_by(1000) {
            let mut mset = redis::cmd("MSET");
            for i in start..start + 1000 {
                mset.arg(format!("key:{i}")).arg("value-of-sixteen");
            }
            mset.query_async::<()>(&mut conn).await?;
        }
        let real = unix_ms() + 600_000;
        for start in (0..KEYS).step_by(10_000) {
            let mut pipe = redis::pipe();
            for i in (start..start + 10_000).step_by(10) {
                // 10%: the keys a full copy guards.
                pipe.cmd("PEXPIREAT")
                    .arg(format!("key:{i}"))
                    .arg(GUARD_BASE_MS + real + i as i64)
                    .ignore();
            }
            pipe.query_async::<()>(&mut conn).await?;
        }
        let cpu = |info: &lockstep_testkit::info::Info| -> anyhow::Result<f64> {
            let field =
                |f: &str| -> anyhow::Result<f64> { Ok(info.get(f).unwrap_or("0").parse::<f64>()?) };
            Ok(field("used_cpu_sys")? + field("used_cpu_user")?)
        };
        let cpu_before = cpu(&target.info("cpu").await?)?;
        let started = Instant::now();
        let settled = settle_once(&target, &Filter::default()).await?;
        let elapsed = started.elapsed();
        let cpu_after = cpu(&target.info("cpu").await?)?;
        println!(
            "{version}: settled {} of {} scanned keys in {elapsed:?}; target CPU {:.2} s",
            settled.keys,
            settled.scanned,
            cpu_after - cpu_before
        );
        assert_eq!(settled.keys, KEYS as u64 / 10);
        assert_eq!(settled.scanned, KEYS as u64);
    }
    Ok(())
}
