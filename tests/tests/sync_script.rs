//! `--script` end to end between real servers (issue 17, the script level): a prefix
//! rename written in Lua over the churn, in the full copy and the stream, across kills,
//! proven by verify with `--rename-prefix` rules (its own mapping code) and by
//! `verify --script` (verify's own Lua runner and model, the same file); a script that drops a key pattern and one that writes two
//! commands for one; a script that errors, loops or allocates without bound stops the
//! task with a clear message and nothing of the failing command's transaction reaches
//! the target; big keys go through it in pieces, a stream key as its RESTORE; rules
//! that need a by-key clear, and a cluster target, are refused.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::cluster::into_cluster;
use common::{caught_up, options};
use lockstep_sync::engine::SyncOptions;
use lockstep_sync::script::{Script, ScriptLimits};
use lockstep_testkit::churn::{Churn, ChurnSpec};
use lockstep_testkit::harness::{verify_urls, wait_consistent, SyncTask};
use lockstep_testkit::topology::{Cluster, ClusterSpec};
use lockstep_testkit::Run;
use lockstep_testkit::{RedisServer, RedisVersion, ServerConfig};
use lockstep_verify::{CompareOptions, Report, ScriptOptions, Verdict};

/// Renames `churn:` to `c2:` by the key positions lockstep passes: the prefix
/// rename `--rename-prefix churn:=c2:` does, written as a script.
const CHURN_RENAME: &str = r#"
function transform(db, argv, at)
  for _, i in ipairs(at) do argv[i] = (argv[i]:gsub("^churn:", "c2:")) end
  return {argv}
end
"#;

fn with_script(options: &mut SyncOptions, code: &str) -> anyhow::Result<()> {
    let limits = ScriptLimits {
        timeout: Duration::from_millis(200),
        memory: 16 << 20,
    };
    options.script = Some(Arc::new(Script::load("t.lua", code.as_bytes(), limits)?));
    Ok(())
}

fn churn_rules() -> CompareOptions {
    CompareOptions {
        renames: vec![(b"churn:".to_vec(), b"c2:".to_vec())],
        ..CompareOptions::default()
    }
}

/// verify with the sync's own script (`verify --script`): it runs the script itself
/// on each source key's recreate commands and compares the result with the target.
fn scripted(code: &str) -> CompareOptions {
    CompareOptions {
        script: Some(ScriptOptions::new("t.lua", code.as_bytes().to_vec())),
        ..CompareOptions::default()
    }
}

/// Waits until `verify --script` finds no difference, and requires CONSISTENT (no
/// key NOT VERIFIED, extra keys checked).
async fn consistent_by_script(
    source: &RedisServer,
    target: &RedisServer,
    task: &mut SyncTask,
    code: &str,
) -> anyhow::Result<Report> {
    let options = scripted(code);
    let report = match wait_consistent(
        &source.url(),
        &target.url(),
        std::slice::from_mut(task),
        &options,
        Duration::from_secs(30),
    )
    .await
    {
        Ok(report) => report,
        Err(e) => {
            let last = verify_urls(&source.url(), &target.url(), &options).await?;
            anyhow::bail!("verify --script: {e}; differences: {:?}", last.differences);
        }
    };
    assert_eq!(report.verdict(), Verdict::Consistent, "{report}");
    assert!(report.scripted_keys > 0, "{report}");
    Ok(report)
}

async fn key_names(server: &RedisServer) -> anyhow::Result<BTreeSet<String>> {
    let mut conn = server.client().await?;
    let keys: Vec<String> = conn.run("KEYS *").await?;
    Ok(keys
        .into_iter()
        .filter(|k| !k.starts_with("LOCKSTEP_"))
        .collect())
}

/// The task's error message, once it has ended with one.
async fn ended(task: SyncTask) -> anyhow::Result<String> {
    match tokio::time::timeout(Duration::from_secs(20), task.handle).await?? {
        Ok(summary) => anyhow::bail!("the task did not fail: {summary:?}"),
        Err(err) => Ok(err.to_string()),
    }
}

/// The churn through the rename script, copied then streamed, the task killed three
/// times while the churn runs: verify with the equivalent `--rename-prefix` rule
/// finds the target equal (counters exact, values, TTLs, streams), verify without
/// them does not, and no key keeps its source name. 7.0 -> 7.0 and 8.2 -> 8.2.
#[tokio::test]
async fn the_scripted_rename_of_the_churn_survives_kills_and_verifies() -> anyhow::Result<()> {
    for (from, to) in [
        (RedisVersion::V7_0, RedisVersion::V7_0),
        (RedisVersion::V8_2, RedisVersion::V8_2),
    ] {
        let source = RedisServer::start(ServerConfig::new(from)).await?;
        let target = RedisServer::start(ServerConfig::new(to)).await?;
        let client = source.redis_client()?;
        let before = ChurnSpec::new(41)
            .rate(3000.0)
            .duration(Some(Duration::from_secs(1)));
        Churn::run(&client, &before).await?;
        let dir = tempfile::tempdir()?;
        let mut o = options(&source, &target, dir.path())?;
        with_script(&mut o, CHURN_RENAME)?;
        let during = ChurnSpec::new(42)
            .rate(1500.0)
            .duration(Some(Duration::from_secs(6)));
        let churn = tokio::spawn({
            let client = client.clone();
            async move { Churn::run(&client, &during).await }
        });
        let mut task = SyncTask::spawn(o.clone());
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            task.fail_if_ended("the churn").await?;
            task.kill().await;
            task = SyncTask::spawn(o.clone());
        }
        let report = churn.await??;
        caught_up(&mut task, &source).await?;
        let verified = match wait_consistent(
            &source.url(),
            &target.url(),
            std::slice::from_mut(&mut task),
            &churn_rules(),
            Duration::from_secs(30),
        )
        .await
        {
            Ok(report) => report,
            Err(e) => {
                let last = verify_urls(&source.url(), &target.url(), &churn_rules()).await?;
                anyhow::bail!("{from} -> {to}: {e}; differences: {:?}", last.differences);
            }
        };
        assert!(verified.keys_compared > 100, "{verified}");
        let by_script = consistent_by_script(&source, &target, &mut task, CHURN_RENAME).await?;
        assert_eq!(
            by_script.scripted_keys, by_script.keys_compared,
            "{by_script}"
        );
        assert!(by_script.scripted_keys > 100, "{by_script}");
        let plain = verify_urls(&source.url(), &target.url(), &CompareOptions::default()).await?;
        assert!(
            !plain.is_consistent(),
            "without the rules the names differ: {plain}"
        );
        let names = key_names(&target).await?;
        let stray = names.iter().find(|k| !k.starts_with("c2:"));
        assert!(
            stray.is_none(),
            "{from} -> {to}: a key kept its source name: {stray:?}"
        );
        assert!(names.iter().any(|k| k.starts_with("c2:")), "{names:?}");
        eprintln!("{from} -> {to}: {} churn ops, {verified}", report.ops);
        eprintln!("{from} -> {to}: verify --script: {by_script}");
        task.finish().await?;
    }
    Ok(())
}

/// A script that drops `secret:*` and writes every `dup:*` SET (and the full copy's
/// SET of a `dup:` string) twice, under its name and under `copy:`: in the copy and
/// the stream alike.
#[tokio::test]
async fn a_script_drops_a_pattern_and_writes_two_commands_for_one() -> anyhow::Result<()> {
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let mut s = source.client().await?;
    for i in 0..50 {
        s.run_args::<()>(("SET", format!("secret:{i}"), "pii"))
            .await?;
        s.run_args::<()>(("SET", format!("dup:{i}"), format!("v{i}")))
            .await?;
        s.run_args::<()>(("SET", format!("plain:{i}"), "p")).await?;
    }
    s.run_args::<()>(("HSET", "secret:h", "f", "pii")).await?;
    let code = r#"
keys = {"secret:*", "dup:*"}
function transform(db, argv)
  if argv[2]:sub(1, 7) == "secret:" then return {} end
  if argv[1]:upper() == "SET" then
    local copy = {}
    for i, a in ipairs(argv) do copy[i] = a end
    copy[2] = "copy:" .. argv[2]
    return {argv, copy}
  end
  return nil
end
"#;
    let dir = tempfile::tempdir()?;
    let mut o = options(&source, &target, dir.path())?;
    with_script(&mut o, code)?;
    let mut task = SyncTask::spawn(o);
    caught_up(&mut task, &source).await?;
    s.run::<()>("SET secret:new x").await?;
    s.run::<()>("HSET secret:h g y").await?;
    s.run::<()>("SET dup:new w EX 1000").await?;
    s.run::<()>("SET plain:new q").await?;
    caught_up(&mut task, &source).await?;
    let names = key_names(&target).await?;
    assert!(!names.iter().any(|k| k.starts_with("secret:")), "{names:?}");
    let count = |p: &str| names.iter().filter(|k| k.starts_with(p)).count();
    assert_eq!(
        (count("dup:"), count("copy:dup:"), count("plain:")),
        (51, 51, 51)
    );
    let mut t = target.client().await?;
    let value: String = t.run("GET copy:dup:7").await?;
    assert_eq!(value, "v7");
    let value: String = t.run("GET copy:dup:new").await?;
    assert_eq!(value, "w");
    let ttl: i64 = t.run("TTL copy:dup:new").await?;
    assert!(ttl > 900, "the copy carries the SET's EX: {ttl}");
    // verify --script judges the target against the script's output for each key's
    // recreate commands (SET, then PEXPIREAT). This script copies a SET, so the
    // stream's `SET dup:new w EX 1000` wrote the copy with its expiry while the
    // recreate's PEXPIREAT, returned unchanged, gives the copy none: the one
    // difference, named. Everything else is the transform of the source.
    let report = verify_urls(&source.url(), &target.url(), &scripted(code)).await?;
    let found: Vec<(String, &str)> = report
        .differences
        .iter()
        .map(|d| {
            (
                String::from_utf8_lossy(&d.key).into_owned(),
                d.kind.as_str(),
            )
        })
        .collect();
    assert_eq!(found, [("copy:dup:new".to_owned(), "ttl")], "{report}");
    assert_eq!(report.scripted_keys, 103, "{report}"); // 50 + 1 secret strings, a secret hash, 51 dup
    task.finish().await?;
    Ok(())
}

/// What the target holds, to compare before and after a failure: its keys and the
/// task's checkpoint.
async fn target_state(target: &RedisServer) -> anyhow::Result<(BTreeSet<String>, String)> {
    let mut t = target.client().await?;
    let checkpoint: String = t.run("GET LOCKSTEP_CHECKPOINT").await?;
    Ok((key_names(target).await?, checkpoint))
}

const FAILING: &str = r#"
function transform(db, argv)
  local key = argv[2]
  if key == "boom" then
    error("refused here")
  elseif key == "loop" then
    while true do end
  elseif key == "mem" then
    local t, s = {}, "x"
    while true do s = s .. s; t[#t + 1] = s end
  end
  return nil
end
"#;

/// A script that errors (line 5), loops for ever, or allocates without bound, on the
/// second command of a source MULTI: the task stops, naming the command, the key and
/// the line or the limit; the target keeps neither the first command of that
/// transaction nor a newer checkpoint. A restart fails the same way: never skipped.
#[tokio::test]
async fn a_failing_script_stops_the_task_and_applies_nothing_of_the_transaction(
) -> anyhow::Result<()> {
    for (key, expected) in [
        ("boom", "t.lua:5: refused here"),
        ("loop", "longer than 200 ms (--script-timeout)"),
        ("mem", "more than 16 MiB (--script-memory)"),
    ] {
        let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
        let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
        let mut s = source.client().await?;
        s.run::<()>("SET seed 1").await?;
        let dir = tempfile::tempdir()?;
        let mut o = options(&source, &target, dir.path())?;
        // No heartbeat: its offsets would move the checkpoint under the comparison.
        o.heartbeat = false;
        with_script(&mut o, FAILING)?;
        let mut task = SyncTask::spawn(o.clone());
        caught_up(&mut task, &source).await?;
        let before = target_state(&target).await?;
        s.run::<()>("MULTI").await?;
        s.run::<()>("SET first 1").await?;
        s.run_args::<()>(("SET", key, "secret-value")).await?;
        s.run::<()>("EXEC").await?;
        let message = ended(task).await?;
        assert!(
            message.contains(expected) && message.contains(&format!("SET of key \"{key}\"")),
            "{key}: {message}"
        );
        assert!(!message.contains("secret-value"), "{message}");
        assert_eq!(
            target_state(&target).await?,
            before,
            "{key}: nothing of the transaction applied"
        );
        let again = ended(SyncTask::spawn(o)).await?;
        assert!(again.contains(expected), "{key}, on restart: {again}");
        assert_eq!(target_state(&target).await?, before, "{key}, on restart");
    }
    Ok(())
}

/// In the full copy, an error names the key; a stream key goes through the script as
/// its RESTORE (renamed here); a script with prefix rules is refused before anything
/// is written.
#[tokio::test]
async fn the_full_copy_names_the_failing_key_and_refusals_come_first() -> anyhow::Result<()> {
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let mut s = source.client().await?;
    s.run::<()>("RPUSH boom a b c").await?;
    let dir = tempfile::tempdir()?;
    let mut o = options(&source, &target, dir.path())?;
    with_script(&mut o, FAILING)?;
    let message = ended(SyncTask::spawn(o.clone())).await?;
    assert!(
        message.contains("t.lua:5: refused here") && message.contains("DEL of key \"boom\""),
        "{message}"
    );
    assert!(key_names(&target).await?.is_empty());

    o.filter.include_prefixes = vec![b"a".to_vec()];
    let message = ended(SyncTask::spawn(o.clone())).await?;
    assert!(
        message.contains("--script cannot be combined with --prefix"),
        "{message}"
    );
    assert!(key_names(&target).await?.is_empty());

    s.run::<()>("DEL boom").await?;
    s.run::<()>("XADD events 1-1 f v").await?;
    s.run::<()>("XADD events 2-1 g w").await?;
    s.run::<()>("RPUSH list a b").await?;
    o.filter.include_prefixes.clear();
    let rename = "function transform(db, argv, at)\n  for _, i in ipairs(at) do argv[i] = 'u:' .. argv[i] end\n  return {argv}\nend";
    with_script(&mut o, rename)?;
    let mut task = SyncTask::spawn(o);
    caught_up(&mut task, &source).await?;
    s.run::<()>("XADD events 3-1 h x").await?;
    caught_up(&mut task, &source).await?;
    assert_eq!(
        key_names(&target).await?,
        BTreeSet::from(["u:events".to_string(), "u:list".to_string()])
    );
    let mut t = target.client().await?;
    let length: i64 = t.run("XLEN u:events").await?;
    assert_eq!(length, 3);
    task.finish().await?;
    Ok(())
}

/// A cluster target is refused before anything is written: its cross-slot commands
/// are copied from the source by their source names, which a script's target names
/// do not lead back to.
#[tokio::test]
async fn a_script_into_a_cluster_target_is_refused() -> anyhow::Result<()> {
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let cluster = Cluster::start(ClusterSpec::new(
        ServerConfig::new(RedisVersion::V7_0),
        3,
        0,
    ))
    .await?;
    source.client().await?.run::<()>("SET k v").await?;
    let dir = tempfile::tempdir()?;
    let mut o = into_cluster(&source, &cluster, dir.path())?;
    with_script(&mut o, "function transform(db, argv) return nil end")?;
    let message = ended(SyncTask::spawn(o)).await?;
    assert!(message.contains("cluster target"), "{message}");
    Ok(())
}

/// Big keys go through the script batch by batch (a list, a hash, a sorted set, a set
/// and a string in pieces, past a small `big_key_bytes`), with their TTLs: verify with
/// the equivalent rule (`=u:`) finds the target equal.
#[tokio::test]
async fn big_keys_go_through_the_script_in_pieces() -> anyhow::Result<()> {
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let mut s = source.client().await?;
    for chunk in 0..10 {
        let items: Vec<String> = (0..500).map(|i| format!("item-{chunk}-{i:08}")).collect();
        s.run_args::<()>(("RPUSH", "biglist", &items)).await?;
        s.run_args::<()>(("SADD", "bigset", &items)).await?;
        let fields: Vec<String> = items
            .iter()
            .flat_map(|i| [i.clone(), "v".to_owned()])
            .collect();
        s.run_args::<()>(("HSET", "bighash", &fields)).await?;
        let scored: Vec<String> = items
            .iter()
            .enumerate()
            .flat_map(|(n, i)| [format!("{}.5", n + chunk * 500), i.clone()])
            .collect();
        s.run_args::<()>(("ZADD", "bigzset", &scored)).await?;
    }
    s.run_args::<()>(("SET", "bigstr", "x".repeat(3 << 20), "EX", 5000))
        .await?;
    s.run::<()>("EXPIRE biglist 7000").await?;
    s.run::<()>("SET small v").await?;
    let dir = tempfile::tempdir()?;
    let mut o = options(&source, &target, dir.path())?;
    o.load.big_key_bytes = 16 << 10;
    let rename = "function transform(db, argv, at)\n  for _, i in ipairs(at) do argv[i] = 'u:' .. argv[i] end\n  return {argv}\nend";
    with_script(&mut o, rename)?;
    let mut task = SyncTask::spawn(o);
    caught_up(&mut task, &source).await?;
    let rule = CompareOptions {
        renames: vec![(Vec::new(), b"u:".to_vec())],
        ..CompareOptions::default()
    };
    let verified = wait_consistent(
        &source.url(),
        &target.url(),
        std::slice::from_mut(&mut task),
        &rule,
        Duration::from_secs(30),
    )
    .await?;
    assert_eq!(verified.keys_compared, 6, "{verified}");
    let by_script = consistent_by_script(&source, &target, &mut task, rename).await?;
    assert_eq!(by_script.scripted_keys, 6, "{by_script}");
    let mut t = target.client().await?;
    let ttl: i64 = t.run("TTL u:biglist").await?;
    assert!(ttl > 6000, "{ttl}");
    // Written in pieces: several RPUSH batches, a SETRANGE per piece of the string.
    let stats: String = t.run("INFO commandstats").await?;
    let calls = |name: &str| -> u64 {
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{name}:calls=")))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    assert!(calls("rpush") >= 2 && calls("setrange") >= 3, "{stats}");
    task.finish().await?;
    Ok(())
}
