//! `lockstep check` on servers that fail each item reports exactly that item (and
//! passes on servers that are ready).

use std::process::Command;

use lockstep_testkit::Run;
use lockstep_testkit::{Auth, RedisServer, RedisVersion, ServerConfig};

/// Runs `lockstep check` and returns (exit code, the lines that are not `pass`).
fn check(source: &str, target: &str, extra: &[&str]) -> (Option<i32>, Vec<String>) {
    let out = Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .args(["check", "--source", source, "--target", target])
        .args(extra)
        .output()
        .expect("lockstep runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let flagged = text
        .lines()
        .filter(|l| l.starts_with("WARN") || l.starts_with("FAIL"))
        .map(str::to_owned)
        .collect();
    (out.status.code(), flagged)
}

async fn ready(version: RedisVersion) -> anyhow::Result<RedisServer> {
    RedisServer::start(
        ServerConfig::new(version)
            .set("repl-timeout", "600")
            .set("repl-backlog-size", "64mb"),
    )
    .await
}

#[tokio::test]
async fn ready_servers_pass_on_every_version() -> anyhow::Result<()> {
    for version in RedisVersion::ALL {
        let source = ready(version).await?;
        let target = ready(RedisVersion::V8_2).await?;
        let (code, flagged) = check(&source.url(), &target.url(), &[]);
        assert_eq!(
            (code, flagged.clone()),
            (Some(0), vec![]),
            "{version}: {flagged:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn each_failing_item_is_reported_and_only_it() -> anyhow::Result<()> {
    // Short repl-timeout: a warning with the exact CONFIG SET.
    let short =
        RedisServer::start(ServerConfig::new(RedisVersion::V7_0).set("repl-backlog-size", "64mb"))
            .await?;
    let target = ready(RedisVersion::V7_0).await?;
    let (code, flagged) = check(&short.url(), &target.url(), &[]);
    assert_eq!(code, Some(0), "a warning does not fail: {flagged:?}");
    assert_eq!(flagged.len(), 1, "{flagged:?}");
    assert!(flagged[0].contains("repl-timeout"), "{flagged:?}");

    // A volatile-lru target: a warning about eviction.
    let source = ready(RedisVersion::V7_0).await?;
    let evicting = RedisServer::start(
        ServerConfig::new(RedisVersion::V7_0).set("maxmemory-policy", "volatile-lru"),
    )
    .await?;
    let (_, flagged) = check(&source.url(), &evicting.url(), &[]);
    assert!(
        flagged.len() == 1 && flagged[0].contains("maxmemory-policy"),
        "{flagged:?}"
    );

    // A non-empty target: fails naming keys; with --conflict ignore, only a warning.
    let busy = ready(RedisVersion::V8_2).await?;
    let mut conn = busy.client().await?;
    conn.run::<()>("SET already-here 1").await?;
    let (code, flagged) = check(&source.url(), &busy.url(), &[]);
    assert_eq!(code, Some(1));
    assert!(
        flagged.len() == 1 && flagged[0].starts_with("FAIL") && flagged[0].contains("already-here"),
        "{flagged:?}"
    );
    let (code, flagged) = check(&source.url(), &busy.url(), &["--conflict", "ignore"]);
    assert_eq!(code, Some(0));
    assert!(
        flagged.len() == 1 && flagged[0].starts_with("WARN"),
        "{flagged:?}"
    );

    // PSYNC denied by ACL (7.0: DRYRUN; 6.2: the user's rules).
    for version in [RedisVersion::V7_0, RedisVersion::V6_2] {
        let denied = RedisServer::start(
            ServerConfig::new(version)
                .set("repl-timeout", "600")
                .set("repl-backlog-size", "64mb")
                .set("user", "syncer on >pw ~* &* +@all -psync -sync"),
        )
        .await?;
        let url = format!("redis://syncer:pw@127.0.0.1:{}", denied.port());
        let (code, flagged) = check(&url, &target.url(), &[]);
        assert_eq!(code, Some(1), "{version}: {flagged:?}");
        assert!(
            flagged.len() == 1 && flagged[0].contains("PSYNC"),
            "{version}: {flagged:?}"
        );
    }

    // A wrong password: the connection item fails, and the password is not shown.
    let locked =
        RedisServer::start(ServerConfig::new(RedisVersion::V7_0).auth(Auth::password())).await?;
    let url = format!("redis://:wrong-secret@127.0.0.1:{}", locked.port());
    let (code, flagged) = check(&url, &target.url(), &[]);
    assert_eq!(code, Some(1));
    assert!(
        flagged.len() == 1 && flagged[0].contains("source connection"),
        "{flagged:?}"
    );
    assert!(
        !flagged[0].contains("wrong-secret"),
        "the password leaked: {flagged:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_tls_mismatch_fails_the_connection_item() -> anyhow::Result<()> {
    let tls = std::sync::Arc::new(lockstep_testkit::TlsMaterial::generate()?);
    let secure = RedisServer::start(ServerConfig::new(RedisVersion::V7_0).tls(tls)).await?;
    let target = ready(RedisVersion::V7_0).await?;
    // Plain redis:// to a TLS port.
    let plain = format!("redis://127.0.0.1:{}", secure.port());
    let (code, flagged) = check(&plain, &target.url(), &[]);
    assert_eq!(code, Some(1));
    assert!(
        flagged.len() == 1 && flagged[0].contains("source connection"),
        "{flagged:?}"
    );
    Ok(())
}

/// A cluster source is checked primary by primary, and `lockstep sync --mode full`
/// copies every shard: the target ends with every key of every primary.
#[tokio::test]
async fn a_cluster_source_is_checked_and_copied_shard_by_shard() -> anyhow::Result<()> {
    use lockstep_testkit::topology::{Cluster, ClusterSpec};
    let node = ServerConfig::new(RedisVersion::V7_0)
        .set("repl-timeout", "600")
        .set("repl-backlog-size", "64mb");
    let source = Cluster::start(ClusterSpec::new(node, 3, 1)).await?;
    let target = ready(RedisVersion::V7_0).await?;
    let mut conn = source.cluster_client().await?;
    for i in 0..500 {
        conn.run_args::<()>(("SET", format!("key:{i}"), i)).await?;
    }
    // Any node's address will do: the last one is a replica.
    let seed = source
        .nodes
        .last()
        .map(RedisServer::url)
        .unwrap_or_default();

    let out = Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .args(["check", "--source", &seed, "--target", &target.url()])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_eq!(text.matches("source primary").count(), 3, "{text}");
    assert_eq!(
        text.matches("may replicate").count(),
        3,
        "each primary's replication right is checked: {text}"
    );

    let dir = tempfile::tempdir()?;
    let out = Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .args([
            "sync",
            "--mode",
            "full",
            "--source",
            &seed,
            "--target",
            &target.url(),
        ])
        .arg("--checkpoint-dir")
        .arg(dir.path())
        .output()?;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut t = target.client().await?;
    let keys: Vec<String> = t.run("KEYS key:*").await?;
    assert_eq!(keys.len(), 500, "every shard's keys on the target");
    for shard in ["shard0-5460", "shard5461-10921", "shard10922-16383"] {
        assert!(
            dir.path().join(format!("default-0/{shard}")).is_dir(),
            "no checkpoint directory for {shard}"
        );
    }
    Ok(())
}

/// A cluster target gets its own item: it passes when every slot is served and the
/// source writes database 0 only; a source with keys in database 3 fails it with
/// the mapping fix, and `lockstep sync` with that mapping passes its precheck and
/// copies database 3 into the cluster.
#[tokio::test]
async fn a_cluster_target_is_checked_for_slots_and_databases() -> anyhow::Result<()> {
    use lockstep_testkit::topology::{Cluster, ClusterSpec};
    let source = ready(RedisVersion::V7_0).await?;
    let node = ServerConfig::new(RedisVersion::V7_0).set("maxmemory-policy", "noeviction");
    let cluster = Cluster::start(ClusterSpec::new(node, 3, 0)).await?;
    let target = cluster.nodes[1].url();
    let run = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_lockstep"))
            .args(["check", "--source", &source.url(), "--target", &target])
            .args(extra)
            .output()
            .expect("lockstep runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, text) = run(&[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("cluster target") && l.contains("every slot is served")),
        "{text}"
    );

    let mut conn = source.client().await?;
    conn.run::<()>("SELECT 3").await?;
    conn.run::<()>("SET in-db-3 1").await?;
    let (code, text) = run(&[]);
    assert_eq!(code, Some(1), "{text}");
    let failed: Vec<&str> = text.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert_eq!(failed.len(), 1, "{text}");
    assert!(
        failed[0].contains("cluster target") && failed[0].contains("database 3"),
        "{text}"
    );
    assert!(text.contains("--map-db 3:0"), "the fix is named: {text}");

    let dir = tempfile::tempdir()?;
    let out = Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .args([
            "sync",
            "--mode",
            "full",
            "--source",
            &source.url(),
            "--target",
            &target,
        ])
        .args(["--dbs", "3", "--map-db", "3:0"])
        .arg("--checkpoint-dir")
        .arg(dir.path())
        .output()?;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut read = cluster.cluster_client().await?;
    let copied: Option<i64> = read.run("GET in-db-3").await?;
    assert_eq!(copied, Some(1));
    Ok(())
}

/// A source account that may not DUMP: the cluster target item warns that a
/// cross-slot command would stop the task, and names the ACL fix.
#[tokio::test]
async fn a_source_account_without_dump_is_warned_about_for_a_cluster_target() -> anyhow::Result<()>
{
    use lockstep_testkit::topology::{Cluster, ClusterSpec};
    let source = RedisServer::start(
        ServerConfig::new(RedisVersion::V7_0)
            .set("repl-timeout", "600")
            .set("repl-backlog-size", "64mb")
            .auth(Auth::acl_user()),
    )
    .await?;
    let mut admin = source.client().await?;
    admin.run::<()>("ACL SETUSER lockstep -dump").await?;
    let cluster = Cluster::start(ClusterSpec::new(
        ServerConfig::new(RedisVersion::V7_0),
        3,
        0,
    ))
    .await?;
    let (code, flagged) = check(&source.url(), &cluster.nodes[0].url(), &[]);
    assert_eq!(code, Some(0), "a warning does not fail: {flagged:?}");
    assert_eq!(flagged.len(), 1, "{flagged:?}");
    assert!(
        flagged[0].contains("cluster target") && flagged[0].contains("cross-slot"),
        "{flagged:?}"
    );
    Ok(())
}

/// A source with PSYNC and SYNC renamed away (a managed service): the check says
/// the sync will read it key by key, leaves out the replica link's items, and
/// fails on keyspace notifications that are off, with the exact CONFIG SET; with
/// them on, it passes.
#[tokio::test]
async fn a_source_that_cannot_replicate_is_checked_for_a_scan() -> anyhow::Result<()> {
    let renamed = |notify: &str| {
        ServerConfig::new(RedisVersion::V7_0)
            .set("rename-command", "PSYNC \"\"")
            .set("rename-command", "SYNC \"\"")
            .set("notify-keyspace-events", notify)
    };
    let target = ready(RedisVersion::V7_0).await?;
    let off = RedisServer::start(renamed("Ex")).await?;
    let (code, flagged) = check(&off.url(), &target.url(), &[]);
    assert_eq!(code, Some(1), "{flagged:?}");
    assert_eq!(flagged.len(), 1, "only the notifications fail: {flagged:?}");
    assert!(flagged[0].contains("keyspace notifications"), "{flagged:?}");
    let out = Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .args(["check", "--source", &off.url(), "--target", &target.url()])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("CONFIG SET notify-keyspace-events KEA"),
        "{text}"
    );
    assert!(text.contains("reads the source key by key"), "{text}");
    assert!(
        !text.contains("repl-timeout"),
        "no replica link items: {text}"
    );
    let on = RedisServer::start(renamed("KA")).await?;
    let (code, flagged) = check(&on.url(), &target.url(), &[]);
    assert_eq!((code, flagged.clone()), (Some(0), vec![]), "{flagged:?}");
    Ok(())
}
