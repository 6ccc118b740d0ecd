//! The churn workload on real servers of every version: every op kind is sent, the
//! achieved rate is near the asked one, `INFO commandstats` on the server counts what
//! the report says was sent, server errors are only the expected kinds (never a
//! malformed command), the same seed leaves the same data on two fresh servers, a
//! stop signal ends a run, and with a cluster tag every key lands in one slot.

use std::collections::BTreeMap;
use std::time::Duration;

use lockstep_testkit::churn::{
    commandstats_field, Churn, ChurnReport, ChurnSpec, OpKind, StopReason, EVAL_SCRIPT_CALLS,
    FUNCTION_CALLS,
};
use lockstep_testkit::Run;
use lockstep_testkit::{Cluster, ClusterSpec, RedisServer, RedisVersion, ServerConfig};
use redis::aio::MultiplexedConnection;

const DBS: [i64; 4] = [0, 1, 5, 15];

/// `calls` of every command in `INFO commandstats`, by field (`cmdstat_set`).
async fn command_calls(server: &RedisServer) -> anyhow::Result<BTreeMap<String, u64>> {
    let stats = server.info("commandstats").await?;
    let mut out = BTreeMap::new();
    for (field, value) in &stats.0 {
        let calls = value
            .split(',')
            .find_map(|part| part.strip_prefix("calls="))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        out.insert(field.clone(), calls);
    }
    Ok(out)
}

/// Error messages that mean the workload built a malformed command.
const MALFORMED: [&str; 6] = [
    "syntax error",
    "wrong number of arguments",
    "unknown command",
    "unknown subcommand",
    "NOSCRIPT",
    "not allowed",
];

fn check_errors(report: &ChurnReport) {
    for (message, count) in &report.error_messages {
        assert!(
            !MALFORMED.iter().any(|bad| message.contains(bad)),
            "{}: the workload sent a malformed command ({count}x): {message}",
            report.version
        );
    }
    let share = report.total_server_errors() as f64 / report.total_commands() as f64;
    assert!(
        share < 0.25,
        "{}: {:.0}% of commands failed: {:#?}",
        report.version,
        share * 100.0,
        report.error_messages
    );
}

#[tokio::test]
async fn every_op_kind_is_sent_at_the_asked_rate_and_counted_by_the_server() -> anyhow::Result<()> {
    for (version, rate, depth) in [
        (RedisVersion::V6_2, 400.0, 4),
        (RedisVersion::V7_0, 2000.0, 16),
        (RedisVersion::V8_2, 1000.0, 8),
    ] {
        let server = RedisServer::start(ServerConfig::new(version)).await?;
        let spec = ChurnSpec::new(20_240_601)
            .rate(rate)
            .duration(Some(Duration::from_secs(2)))
            .multi_db(&DBS)
            .flushdb(true)
            .pipeline_depth(depth);
        let before = command_calls(&server).await?;
        let report = Churn::run(&server.redis_client()?, &spec).await?;
        let after = command_calls(&server).await?;
        eprintln!("{report}\nserver errors: {:#?}", report.error_messages);

        for kind in OpKind::ALL {
            let sent = report.ops_by_kind.get(kind.name()).copied().unwrap_or(0);
            if kind.available(version, &spec) {
                assert!(sent > 0, "{version}: {} was never sent", kind.name());
            } else {
                assert_eq!(
                    sent,
                    0,
                    "{version}: {} is not for this version",
                    kind.name()
                );
            }
        }
        let achieved = report.achieved_rate();
        assert!(
            (0.75 * rate..=1.1 * rate).contains(&achieved),
            "{version}: asked {rate} ops/s, achieved {achieved:.0}"
        );
        assert!(
            report.elapsed >= Duration::from_millis(1800)
                && report.elapsed < Duration::from_secs(4),
            "{version}: ran {:?} for a 2 s run",
            report.elapsed
        );
        check_errors(&report);

        // The server's own count of each command: exact, except for the commands the
        // EVAL script and the FCALL function also call on the server side.
        let mut sent_by_field: BTreeMap<String, u64> = BTreeMap::new();
        for (command, count) in &report.commands {
            *sent_by_field
                .entry(commandstats_field(command, version))
                .or_default() += count;
        }
        let called_by_scripts: Vec<String> = EVAL_SCRIPT_CALLS
            .iter()
            .chain(FUNCTION_CALLS.iter())
            .map(|command| commandstats_field(command, version))
            .collect();
        for (field, sent) in &sent_by_field {
            let counted =
                after.get(field).copied().unwrap_or(0) - before.get(field).copied().unwrap_or(0);
            if called_by_scripts.contains(field) {
                assert!(
                    counted >= *sent,
                    "{version}: {field} sent {sent}, server counted {counted}"
                );
            } else {
                assert_eq!(
                    counted, *sent,
                    "{version}: {field} sent {sent}, server counted {counted}"
                );
            }
        }
    }
    Ok(())
}

async fn select(conn: &mut MultiplexedConnection, db: i64) -> anyhow::Result<()> {
    conn.run_args::<()>(("SELECT", db)).await?;
    Ok(())
}

/// What must be equal after two runs with one seed: per key, its type, its content
/// (`DEBUG DIGEST-VALUE`), whether it has a TTL, and for streams each group's name,
/// pending count and last-delivered ID.
async fn state(server: &RedisServer) -> anyhow::Result<BTreeMap<(i64, Vec<u8>), String>> {
    let mut conn = server.client().await?;
    let mut out = BTreeMap::new();
    for db in 0..16 {
        select(&mut conn, db).await?;
        let keys: Vec<Vec<u8>> = conn.run("KEYS *").await?;
        for key in keys {
            let (key_type, digest, pttl): (String, Vec<String>, i64) = redis::pipe()
                .cmd("TYPE")
                .arg(&key)
                .cmd("DEBUG")
                .arg("DIGEST-VALUE")
                .arg(&key)
                .cmd("PTTL")
                .arg(&key)
                .query_async(&mut conn)
                .await?;
            let mut text = format!("{key_type} {} ttl={}", digest.concat(), pttl >= 0);
            if key_type == "stream" {
                let groups: Vec<BTreeMap<String, redis::Value>> =
                    conn.run_args(("XINFO", "GROUPS", &key)).await?;
                for group in groups {
                    for field in ["name", "pending", "last-delivered-id"] {
                        text.push_str(&format!(" {field}={:?}", group.get(field)));
                    }
                }
            }
            out.insert((db, key), text);
        }
    }
    Ok(out)
}

#[tokio::test]
async fn the_same_seed_leaves_the_same_data_on_two_fresh_servers() -> anyhow::Result<()> {
    for version in RedisVersion::ALL {
        let spec = ChurnSpec::new(77)
            .rate(0.0)
            .duration(None)
            .max_ops(Some(4000))
            .key_space(30)
            .multi_db(&DBS)
            .flushdb(true);
        let mut states = Vec::new();
        for seed in [77, 77, 78] {
            let server = RedisServer::start(ServerConfig::new(version)).await?;
            let spec = ChurnSpec {
                seed,
                ..spec.clone()
            };
            let report = Churn::run(&server.redis_client()?, &spec).await?;
            eprintln!("{report}");
            assert_eq!(report.ops, 4000);
            check_errors(&report);
            states.push(state(&server).await?);
        }
        assert!(
            states[0].len() > 50,
            "{version}: only {} keys",
            states[0].len()
        );
        let differing: Vec<_> = states[0]
            .iter()
            .filter(|(key, value)| states[1].get(*key) != Some(value))
            .take(10)
            .collect();
        assert!(
            differing.is_empty() && states[0].len() == states[1].len(),
            "{version}: same seed, different data ({} vs {} keys), e.g. {differing:#?}",
            states[0].len(),
            states[1].len()
        );
        assert_ne!(states[0], states[2], "{version}: another seed, other data");
    }
    Ok(())
}

#[tokio::test]
async fn run_until_stops_when_told() -> anyhow::Result<()> {
    let server = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let spec = ChurnSpec::new(5).rate(500.0).duration(None);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let client = server.redis_client()?;
    let run = tokio::spawn(async move {
        Churn::run_until(&client, &spec, async {
            let _ = stopped.await;
        })
        .await
    });
    tokio::time::sleep(Duration::from_millis(600)).await;
    let _ = stop.send(());
    let report = run.await??;
    eprintln!("{report}");
    assert_eq!(report.stopped_by, StopReason::Stopped);
    assert!(
        (150..=400).contains(&report.ops),
        "{} ops in ~0.6 s at 500 ops/s",
        report.ops
    );
    Ok(())
}

#[tokio::test]
async fn with_a_cluster_tag_every_command_lands_in_one_slot_of_a_cluster() -> anyhow::Result<()> {
    let version = RedisVersion::V7_0;
    let cluster = Cluster::start(ClusterSpec::new(ServerConfig::new(version), 3, 0)).await?;
    let tag = "churn-tag";
    let mut any_node = cluster.nodes[0].client().await?;
    let slot: u16 = any_node
        .run_args(("CLUSTER", "KEYSLOT", format!("{{{tag}}}")))
        .await?;
    let owner = cluster.node_for_slot(slot).await?;
    let spec = ChurnSpec::new(9)
        .cluster_tag(tag)
        .rate(0.0)
        .duration(None)
        .max_ops(Some(2000));
    let report = Churn::run(&owner.redis_client()?, &spec).await?;
    eprintln!("{report}");
    check_errors(&report);
    for message in report.error_messages.keys() {
        for redirect in ["MOVED", "ASK", "CROSSSLOT"] {
            assert!(!message.contains(redirect), "{message}");
        }
    }
    let mut owner_conn = owner.client().await?;
    let (dbsize, in_slot): (u64, u64) = redis::pipe()
        .cmd("DBSIZE")
        .cmd("CLUSTER")
        .arg("COUNTKEYSINSLOT")
        .arg(slot)
        .query_async(&mut owner_conn)
        .await?;
    assert!(dbsize > 50, "only {dbsize} keys");
    assert_eq!(dbsize, in_slot, "every key is in the tag's slot {slot}");
    Ok(())
}
