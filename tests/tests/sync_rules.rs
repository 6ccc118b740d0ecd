//! The declarative rules of issue 17 end to end between real servers: filters by
//! glob, regex and type, hash field drops, and the TTL rules, each applied to the
//! churn workload in the full copy and the stream while the task is killed three
//! times.
//!
//! The oracle is independent of the sync: a *reference* server of the same version is
//! churned with the same seeds (the churn is reproducible: same seeds, same data),
//! then the rule is applied to it by plain commands, with the server's own glob
//! matching (SCAN MATCH, HSCAN MATCH) and TYPE; verify (without any rule) must then
//! find the target equal to the reference: values, counters and TTLs. The TTL cap and
//! set rules, whose expiries depend on when lockstep wrote each key, are checked by
//! reading every key's PTTL on both sides.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{caught_up, options};
use lockstep_sync::engine::SyncOptions;
use lockstep_sync::rdb::Kind;
use lockstep_sync::rules::hash_fields::HashFieldDrops;
use lockstep_sync::rules::key_match::KeyPatterns;
use lockstep_sync::rules::ttl::TtlRule;
use lockstep_sync::rules::types::TypeRules;
use lockstep_testkit::churn::{Churn, ChurnSpec};
use lockstep_testkit::harness::{verify_urls, wait_consistent, SyncTask};
use lockstep_testkit::Run;
use lockstep_testkit::{RedisServer, RedisVersion, ServerConfig};
use lockstep_verify::options::{RuleSpec, TtlRule as VerifyTtl};
use lockstep_verify::CompareOptions;

fn with_rules(rules: RuleSpec) -> CompareOptions {
    CompareOptions {
        rules,
        ..CompareOptions::default()
    }
}

fn texts(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The databases the churn writes (one above 15).
const DBS: [i64; 2] = [0, 17];

fn before() -> ChurnSpec {
    ChurnSpec::new(21)
        .rate(3000.0)
        .duration(Some(Duration::from_secs(1)))
        .multi_db(&DBS)
}

fn during() -> ChurnSpec {
    ChurnSpec::new(22)
        .rate(1500.0)
        .duration(Some(Duration::from_secs(6)))
        .multi_db(&DBS)
}

/// The churns before and during the sync: one over DBS, or several in db 0 under
/// hash tags (`{a}churn:...`), whose keys never meet in one command.
struct Workload {
    before: Vec<ChurnSpec>,
    during: Vec<ChurnSpec>,
}

fn multi_db() -> Workload {
    Workload {
        before: vec![before()],
        during: vec![during()],
    }
}

fn tagged(tags: &[&str]) -> Workload {
    let spec = |seed: u64, tag: &str, rate: f64, secs: u64| {
        ChurnSpec::new(seed)
            .rate(rate)
            .duration(Some(Duration::from_secs(secs)))
            .cluster_tag(tag)
    };
    Workload {
        before: tags
            .iter()
            .enumerate()
            .map(|(i, t)| spec(31 + i as u64, t, 2000.0, 1))
            .collect(),
        during: tags
            .iter()
            .enumerate()
            .map(|(i, t)| spec(41 + i as u64, t, 700.0, 6))
            .collect(),
    }
}

async fn churn_all(client: &redis::Client, specs: &[ChurnSpec]) -> anyhow::Result<()> {
    let mut runs = Vec::new();
    for spec in specs {
        let client = client.clone();
        let spec = spec.clone();
        runs.push(tokio::spawn(
            async move { Churn::run(&client, &spec).await },
        ));
    }
    for run in runs {
        run.await??;
    }
    Ok(())
}

fn server_config(version: RedisVersion) -> ServerConfig {
    ServerConfig::new(version).set("databases", "32")
}

/// The source and the reference hold the same data; the target is what the sync
/// wrote under `rule`, with three kills during the churn.
struct Run3 {
    source: RedisServer,
    target: RedisServer,
    reference: RedisServer,
    task: SyncTask,
    _dir: tempfile::TempDir,
}

async fn churned_sync(
    version: RedisVersion,
    workload: Workload,
    rule: impl Fn(&mut SyncOptions),
) -> anyhow::Result<Run3> {
    let source = RedisServer::start(server_config(version)).await?;
    let target = RedisServer::start(server_config(version)).await?;
    let reference = RedisServer::start(server_config(version)).await?;
    // The reference is churned beside the source, with the same seeds: the same
    // data, and relative TTLs set at (almost) the same moments.
    let clients = [source.redis_client()?, reference.redis_client()?];
    let (on_source, on_reference) = tokio::join!(
        churn_all(&clients[0], &workload.before),
        churn_all(&clients[1], &workload.before)
    );
    on_source?;
    on_reference?;
    short_ttls(&source).await?;
    short_ttls(&reference).await?;
    let dir = tempfile::tempdir()?;
    let mut o = options(&source, &target, dir.path())?;
    rule(&mut o);
    o.filter.validate()?;
    let churns: Vec<_> = clients
        .iter()
        .map(|client| {
            let client = client.clone();
            let during = workload.during.clone();
            tokio::spawn(async move { churn_all(&client, &during).await })
        })
        .collect();
    let mut task = SyncTask::spawn(o.clone());
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        task.fail_if_ended("the churn").await?;
        task.kill().await;
        task = SyncTask::spawn(o.clone());
    }
    for churn in churns {
        churn.await??;
    }
    caught_up(&mut task, &source).await?;
    Ok(Run3 {
        source,
        target,
        reference,
        task,
        _dir: dir,
    })
}

/// Keys with a 10-minute TTL (the churn's are an hour or more), for the TTL cap.
async fn short_ttls(server: &RedisServer) -> anyhow::Result<()> {
    let mut conn = server.client().await?;
    for i in 0..20 {
        let _: () = conn.run(&format!("SET short:{i} v{i} EX 600")).await?;
    }
    Ok(())
}

impl Run3 {
    /// verify (no rules) finds the target equal to the reference once the rule was
    /// applied to it.
    async fn assert_target_is_the_reference(&mut self, what: &str) -> anyhow::Result<()> {
        let options = CompareOptions::default();
        let result = wait_consistent(
            &self.reference.url(),
            &self.target.url(),
            std::slice::from_mut(&mut self.task),
            &options,
            Duration::from_secs(30),
        )
        .await;
        match result {
            Ok(report) => {
                assert!(report.keys_compared > 100, "{what}: {report}");
                Ok(())
            }
            Err(e) => {
                let last = verify_urls(&self.reference.url(), &self.target.url(), &options).await?;
                anyhow::bail!("{what}: {e}; differences: {:?}", last.differences)
            }
        }
    }

    /// verify given the same rules (its own implementation) finds the target
    /// consistent with the source.
    async fn assert_verify_with_the_rules(
        &mut self,
        what: &str,
        options: CompareOptions,
    ) -> anyhow::Result<()> {
        let result = wait_consistent(
            &self.source.url(),
            &self.target.url(),
            std::slice::from_mut(&mut self.task),
            &options,
            Duration::from_secs(30),
        )
        .await;
        match result {
            Ok(report) => {
                assert!(report.keys_compared > 100, "{what}: {report}");
                Ok(())
            }
            Err(e) => {
                let last = verify_urls(&self.source.url(), &self.target.url(), &options).await?;
                anyhow::bail!(
                    "{what} (verify with the rules): {e}; differences: {:?}",
                    last.differences
                )
            }
        }
    }

    /// verify without the rule between source and target finds differences (the
    /// rule did something).
    async fn assert_rule_changed_something(&self, what: &str) -> anyhow::Result<()> {
        let plain = verify_urls(
            &self.source.url(),
            &self.target.url(),
            &CompareOptions::default(),
        )
        .await?;
        assert!(
            !plain.is_consistent(),
            "{what}: the rule changed nothing: {plain}"
        );
        Ok(())
    }
}

/// Every key of `db` (SCAN, optionally MATCH and TYPE: the server's own matching).
async fn scan(
    server: &RedisServer,
    db: i64,
    pattern: &str,
    kind: Option<&str>,
) -> anyhow::Result<BTreeSet<Vec<u8>>> {
    let mut conn = server.client().await?;
    let _: () = conn.run(&format!("SELECT {db}")).await?;
    let mut keys = BTreeSet::new();
    let mut cursor = 0u64;
    loop {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000);
        if let Some(kind) = kind {
            cmd.arg("TYPE").arg(kind);
        }
        let (next, batch): (u64, Vec<Vec<u8>>) = cmd.query_async(&mut conn).await?;
        keys.extend(batch.into_iter().filter(|k| !k.starts_with(b"LOCKSTEP_")));
        if next == 0 {
            return Ok(keys);
        }
        cursor = next;
    }
}

async fn delete(server: &RedisServer, db: i64, keys: &BTreeSet<Vec<u8>>) -> anyhow::Result<()> {
    let mut conn = server.client().await?;
    let _: () = redis::cmd("SELECT").arg(db).query_async(&mut conn).await?;
    for key in keys {
        let _: i64 = redis::cmd("DEL").arg(key).query_async(&mut conn).await?;
    }
    Ok(())
}

/// `--exclude-types hash,stream` over two databases (one above 15): the reference
/// loses its hashes and streams (SCAN ... TYPE).
#[tokio::test]
async fn type_filters_under_churn_and_kills() -> anyhow::Result<()> {
    let mut run = churned_sync(RedisVersion::V7_0, multi_db(), |o| {
        o.filter.types = TypeRules::new(Vec::new(), vec![Kind::Hash, Kind::Stream]);
    })
    .await?;
    for db in DBS {
        let mut dropped = BTreeSet::new();
        for kind in ["hash", "stream"] {
            dropped.extend(scan(&run.reference, db, "*", Some(kind)).await?);
        }
        assert!(!dropped.is_empty(), "db {db}: the rule must drop some keys");
        delete(&run.reference, db, &dropped).await?;
    }
    run.assert_target_is_the_reference("types").await?;
    let rules = RuleSpec {
        exclude_types: texts(&["hash", "stream"]),
        ..RuleSpec::default()
    };
    run.assert_verify_with_the_rules("types", with_rules(rules))
        .await?;
    run.assert_rule_changed_something("types").await
}

/// Three tagged churns `{a}`, `{b}`, `{c}` and the `short:` keys, under
/// `--match \{a\}* --match \{b\}* --key-regex ^\{c\}churn: --exclude-key-regex ^\{b\}
/// --exclude-match short:1?`: `{a}` is kept by a glob, `{c}` by the regex, `{b}` is
/// dropped by the exclude regex although a glob includes it, and `short:` by having
/// no include. The reference keeps what the server's own SCAN MATCH finds.
#[tokio::test]
async fn pattern_filters_under_churn_and_kills() -> anyhow::Result<()> {
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut run = churned_sync(RedisVersion::V7_0, tagged(&["a", "b", "c"]), |o| {
        o.filter.patterns = KeyPatterns::new(
            &strings(&[r"\{a\}*", r"\{b\}*"]),
            &strings(&["short:1?"]),
            &strings(&[r"^\{c\}churn:"]),
            &strings(&[r"^\{b\}"]),
        )
        .expect("valid");
    })
    .await?;
    let all = scan(&run.reference, 0, "*", None).await?;
    let mut kept = scan(&run.reference, 0, r"\{a\}*", None).await?;
    kept.extend(scan(&run.reference, 0, r"\{c\}churn:*", None).await?);
    let dropped: BTreeSet<Vec<u8>> = all.difference(&kept).cloned().collect();
    assert!(
        dropped.len() > 50 && kept.len() > 50,
        "kept {}, dropped {}",
        kept.len(),
        dropped.len()
    );
    delete(&run.reference, 0, &dropped).await?;
    run.assert_target_is_the_reference("patterns").await?;
    let rules = RuleSpec {
        match_globs: texts(&[r"\{a\}*", r"\{b\}*"]),
        exclude_match: texts(&["short:1?"]),
        key_regex: texts(&[r"^\{c\}churn:"]),
        exclude_key_regex: texts(&[r"^\{b\}"]),
        ..RuleSpec::default()
    };
    run.assert_verify_with_the_rules("patterns", with_rules(rules))
        .await?;
    run.assert_rule_changed_something("patterns").await
}

/// `--drop-hash-field churn:hash:*=m1*` and `--drop-hash-field m3` on 8.2 (hash
/// field TTLs in the churn): the reference loses those fields (HSCAN MATCH + HDEL;
/// a hash left empty is gone, as on the target). With `--ttl-remove`: every key of
/// the reference is made persistent.
#[tokio::test]
async fn hash_field_drops_and_ttl_remove_under_churn_and_kills() -> anyhow::Result<()> {
    let mut run = churned_sync(RedisVersion::V8_2, multi_db(), |o| {
        o.filter.hash_fields =
            HashFieldDrops::parse(&["churn:hash:*=m1*".into(), "m3".into()]).expect("valid");
        o.filter.ttl_rule = TtlRule::Remove;
    })
    .await?;
    let mut conn = run.reference.client().await?;
    let mut fields_dropped = 0;
    for db in DBS {
        let _: () = conn.run(&format!("SELECT {db}")).await?;
        for key in scan(&run.reference, db, "*", Some("hash")).await? {
            for pattern in ["m1*", "m3"] {
                if pattern == "m1*" && !key.starts_with(b"churn:hash:") {
                    continue;
                }
                let (_, fields): (u64, Vec<FieldValue>) = redis::cmd("HSCAN")
                    .arg(&key)
                    .arg(0)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(10_000)
                    .query_async(&mut conn)
                    .await?;
                for (field, _) in fields {
                    let _: i64 = redis::cmd("HDEL")
                        .arg(&key)
                        .arg(field)
                        .query_async(&mut conn)
                        .await?;
                    fields_dropped += 1;
                }
            }
        }
        for key in scan(&run.reference, db, "*", None).await? {
            let _: i64 = redis::cmd("PERSIST")
                .arg(&key)
                .query_async(&mut conn)
                .await?;
        }
    }
    assert!(
        fields_dropped > 20,
        "the rule must drop fields: {fields_dropped}"
    );
    run.assert_target_is_the_reference("hash fields and ttl remove")
        .await?;
    run.assert_rule_changed_something("hash fields and ttl remove")
        .await
}

/// A hash field and its value, as HSCAN answers them.
type FieldValue = (Vec<u8>, Vec<u8>);

/// PTTL of every key of both sides, by db and key.
async fn pttls(server: &RedisServer) -> anyhow::Result<Vec<(i64, Vec<u8>, i64)>> {
    let mut conn = server.client().await?;
    let mut out = Vec::new();
    for db in DBS {
        let _: () = conn.run(&format!("SELECT {db}")).await?;
        for key in scan(server, db, "*", None).await? {
            let pttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut conn).await?;
            out.push((db, key, pttl));
        }
    }
    Ok(out)
}

/// `--ttl-cap 30m` on 7.0: the target holds the source's keys, every expiry is at
/// most 30 min away and the 10-minute keys keep theirs (read by PTTL on both
/// sides), and verify with `--ttl-cap 30m` finds the target consistent.
#[tokio::test]
async fn ttl_cap_under_churn_and_kills() -> anyhow::Result<()> {
    let cap = Duration::from_secs(1800);
    let mut run = churned_sync(RedisVersion::V7_0, multi_db(), |o| {
        o.filter.ttl_rule = TtlRule::Cap(cap)
    })
    .await?;
    wait_for_keys(&mut run).await?;
    let source = pttls(&run.source).await?;
    let target = pttls(&run.target).await?;
    let names = |v: &[(i64, Vec<u8>, i64)]| {
        v.iter()
            .map(|(d, k, _)| (*d, k.clone()))
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(names(&source), names(&target), "the same keys");
    let by_key: std::collections::BTreeMap<_, _> = target
        .iter()
        .map(|(d, k, t)| ((*d, k.clone()), *t))
        .collect();
    let (mut capped, mut kept) = (0, 0);
    for (db, key, source_ttl) in &source {
        let target_ttl = by_key[&(*db, key.clone())];
        let name = String::from_utf8_lossy(key);
        if *source_ttl < 0 {
            assert_eq!(target_ttl, -1, "{db}/{name}: persistent on the source");
        } else if *source_ttl > cap.as_millis() as i64 {
            assert!(
                target_ttl > 0 && target_ttl <= cap.as_millis() as i64,
                "{db}/{name}: {target_ttl} over the cap"
            );
            capped += 1;
        } else {
            assert!(
                (target_ttl - source_ttl).abs() < 5_000,
                "{db}/{name}: {source_ttl} on the source, {target_ttl} on the target"
            );
            kept += 1;
        }
    }
    assert!(capped > 10 && kept >= 20, "capped {capped}, kept {kept}");
    let options = CompareOptions {
        ttl_rule: VerifyTtl::Cap(cap),
        ..CompareOptions::default()
    };
    run.assert_verify_with_the_rules("ttl cap", options).await
}

/// `--ttl-set 2h` on 8.2: every key of the target expires within 2 h, whatever the
/// source's TTL (persistent keys included), and the target holds the source's keys.
#[tokio::test]
async fn ttl_set_under_churn_and_kills() -> anyhow::Result<()> {
    let set = Duration::from_secs(7200);
    let mut run = churned_sync(RedisVersion::V8_2, multi_db(), |o| {
        o.filter.ttl_rule = TtlRule::Set(set)
    })
    .await?;
    wait_for_keys(&mut run).await?;
    let source = pttls(&run.source).await?;
    let target = pttls(&run.target).await?;
    let names = |v: &[(i64, Vec<u8>, i64)]| {
        v.iter()
            .map(|(d, k, _)| (*d, k.clone()))
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(names(&source), names(&target), "the same keys");
    assert!(
        source.iter().any(|(_, _, t)| *t < 0),
        "some source keys are persistent"
    );
    for (db, key, ttl) in &target {
        let name = String::from_utf8_lossy(key);
        assert!(
            *ttl > 0 && *ttl <= set.as_millis() as i64,
            "{db}/{name}: {ttl}"
        );
    }
    Ok(())
}

/// Waits until the target has as many keys as the source (the TTL rules' tests
/// compare names and TTLs, not through verify).
async fn wait_for_keys(run: &mut Run3) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        run.task.fail_if_ended("the keys to arrive").await?;
        let mut same = true;
        for db in DBS {
            same &=
                scan(&run.source, db, "*", None).await? == scan(&run.target, db, "*", None).await?;
        }
        if same {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the target never held the source's keys"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `--rename-regex '\{a\}churn:(str|num|list|hash):(\d+)' 'r:$2:$1'` beside
/// `--rename-prefix {b}churn:=B:` on two tagged churns: the reference's keys are
/// renamed by the server's RENAME to the names the test computes with its own
/// replacement (the regex crate's `replace`, not the sync's code).
#[tokio::test]
async fn regex_renames_under_churn_and_kills() -> anyhow::Result<()> {
    use lockstep_sync::rename::KeyRenames;
    use lockstep_sync::rules::rename_regex::RegexRename;
    let from = r"\{a\}churn:(str|num|list|hash):(\d+)";
    let mut run = churned_sync(RedisVersion::V8_2, tagged(&["a", "b"]), |o| {
        o.filter.renames = KeyRenames::new(vec![(b"{b}churn:".to_vec(), b"B:".to_vec())])
            .with_regexes(vec![RegexRename::new(from, "r:$2:$1").expect("valid")]);
    })
    .await?;
    let whole = regex::bytes::Regex::new(&format!("^(?:{from})$"))?;
    let mut conn = run.reference.client().await?;
    let mut renamed = 0;
    for key in scan(&run.reference, 0, "*", None).await? {
        let new = if whole.is_match(&key) {
            whole.replace(&key, &b"r:$2:$1"[..]).into_owned()
        } else if let Some(rest) = key.strip_prefix(b"{b}churn:") {
            [b"B:".as_slice(), rest].concat()
        } else {
            continue;
        };
        let _: () = redis::cmd("RENAME")
            .arg(&key)
            .arg(&new)
            .query_async(&mut conn)
            .await?;
        renamed += 1;
    }
    assert!(renamed > 100, "renamed {renamed}");
    run.assert_target_is_the_reference("regex renames").await?;
    let mut options = with_rules(RuleSpec {
        rename_regex: vec![(from.to_owned(), "r:$2:$1".to_owned())],
        ..RuleSpec::default()
    });
    options.renames = vec![(b"{b}churn:".to_vec(), b"B:".to_vec())];
    run.assert_verify_with_the_rules("regex renames", options)
        .await?;
    run.assert_rule_changed_something("regex renames").await
}

/// The rules into a 3-primary cluster target: `--exclude-types list,stream` and
/// `--drop-hash-field m1*` on the churn (cross-slot RENAME, COPY, SMOVE, ... are
/// applied by copying their keys from the source, and the copier applies the rules
/// to what it reads: a value of a dropped type becomes a DEL, a hash loses its
/// dropped fields). verify with the same rules against the cluster finds it
/// consistent; without them it does not.
#[tokio::test]
async fn rules_into_a_cluster_target() -> anyhow::Result<()> {
    use common::cluster::{into_cluster, seed_url};
    use lockstep_testkit::topology::{Cluster, ClusterSpec};
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let cluster = Cluster::start(ClusterSpec::new(
        ServerConfig::new(RedisVersion::V7_0),
        3,
        0,
    ))
    .await?;
    let client = source.redis_client()?;
    let before = ChurnSpec::new(51)
        .rate(2000.0)
        .duration(Some(Duration::from_secs(1)));
    Churn::run(&client, &before).await?;
    let dir = tempfile::tempdir()?;
    let seed = seed_url(&cluster);
    let mut o = into_cluster(&source, &cluster, dir.path())?;
    o.filter.types = TypeRules::new(Vec::new(), vec![Kind::List, Kind::Stream]);
    o.filter.hash_fields = HashFieldDrops::parse(&["m1*".into()]).expect("valid");
    let mut task = SyncTask::spawn(o);
    let during = ChurnSpec::new(52)
        .rate(1500.0)
        .duration(Some(Duration::from_secs(4)));
    Churn::run(&client, &during).await?;
    caught_up(&mut task, &source).await?;
    let options = with_rules(RuleSpec {
        exclude_types: texts(&["list", "stream"]),
        drop_hash_field: texts(&["m1*"]),
        ..RuleSpec::default()
    });
    let verified = match wait_consistent(
        &source.url(),
        &seed,
        std::slice::from_mut(&mut task),
        &options,
        Duration::from_secs(30),
    )
    .await
    {
        Ok(report) => report,
        Err(e) => {
            let last = verify_urls(&source.url(), &seed, &options).await?;
            anyhow::bail!("{e}; differences: {:?}", last.differences);
        }
    };
    assert!(verified.keys_compared > 100, "{verified}");
    let plain = verify_urls(&source.url(), &seed, &CompareOptions::default()).await?;
    assert!(!plain.is_consistent(), "the rules changed nothing: {plain}");
    task.finish().await?;
    Ok(())
}

/// `--dbs 0 --route-db '{a}*=5' --route-db '{b}*=6'` over three tagged churns: `{a}`
/// keys live in target database 5, `{b}` keys in 6, the rest in 0; the reference gets
/// the same by MOVE (the server's own SCAN MATCH). Another task's keys in databases 5
/// and 6 survive the task's clears (a kill during the copy resyncs over stale data)
/// and a FLUSHDB of the source, and verify with the routes ignores them.
#[tokio::test]
async fn database_routes_under_churn_and_kills() -> anyhow::Result<()> {
    let routes = vec![("{a}*".to_string(), 5), ("{b}*".to_string(), 6)];
    let (source_routes, verify_routes) = (routes.clone(), routes.clone());
    let others = [(5, "other:five"), (6, "other:six"), (6, "{a}other")];
    let mut run = churned_sync(RedisVersion::V7_0, tagged(&["a", "b", "c"]), move |o| {
        o.filter.dbs = vec![0];
        o.filter.routes =
            lockstep_sync::rules::routes::DbRoutes::new(&source_routes).expect("valid routes");
    })
    .await?;
    for (db, key) in others {
        for server in [&run.target, &run.reference] {
            let mut conn = server.client().await?;
            let _: () = conn.run(&format!("SELECT {db}")).await?;
            // Written after the task started: a resync's clear would have seen it
            // only if it came later; the FLUSHDB below surely does.
            let _: () = conn.run(&format!("SET {key} theirs")).await?;
        }
    }
    for (glob, db) in &routes {
        let moved = scan(&run.reference, 0, glob, None).await?;
        assert!(moved.len() > 50, "{glob}: the route must move keys");
        let mut conn = run.reference.client().await?;
        for key in &moved {
            let _: i64 = redis::cmd("MOVE")
                .arg(key)
                .arg(*db)
                .query_async(&mut conn)
                .await?;
        }
    }
    run.assert_target_is_the_reference("routes").await?;
    let routed = CompareOptions {
        dbs: vec![0],
        rules: RuleSpec {
            route_db: verify_routes,
            ..RuleSpec::default()
        },
        ..CompareOptions::default()
    };
    run.assert_verify_with_the_rules("routes", routed.clone())
        .await?;
    run.assert_rule_changed_something("routes").await?;
    // A FLUSHDB of the source empties the task's keys from all three databases and
    // leaves the other task's.
    let mut conn = run.source.client().await?;
    let _: () = conn.run("FLUSHDB").await?;
    let _: () = conn.run("SET {a}after 1").await?;
    let _: () = conn.run("SET {c}after 1").await?;
    caught_up(&mut run.task, &run.source).await?;
    for db in [0, 5, 6] {
        let left = scan(&run.target, db, "*", None).await?;
        let expected: BTreeSet<Vec<u8>> = match db {
            0 => ["{c}after"].iter().map(|k| k.as_bytes().to_vec()).collect(),
            5 => ["{a}after", "other:five"]
                .iter()
                .map(|k| k.as_bytes().to_vec())
                .collect(),
            _ => ["other:six", "{a}other"]
                .iter()
                .map(|k| k.as_bytes().to_vec())
                .collect(),
        };
        assert_eq!(left, expected, "target db {db} after the source's FLUSHDB");
    }
    let report = verify_urls(&run.source.url(), &run.target.url(), &routed).await?;
    assert!(
        report.is_consistent() && report.keys_compared == 2,
        "{report}"
    );
    run.task.finish().await?;
    Ok(())
}
