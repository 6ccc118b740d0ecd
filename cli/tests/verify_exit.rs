//! `lockstep verify` as a scheduled audit relies on it: exit 0 when consistent, 1 with
//! the differences in the CSV and JSON reports, 2 when it could not verify (and why).

use std::process::Command;

use lockstep_testkit::Run;
use lockstep_testkit::{RedisServer, RedisVersion, ServerConfig};

fn verify(source: &str, target: &str, extra: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .args(["verify", "--source", source, "--target", target])
        .args(extra)
        .output()
        .expect("lockstep runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn exit_codes_and_reports_say_what_an_audit_needs() -> anyhow::Result<()> {
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V6_2)).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V8_2)).await?;
    for server in [&source, &target] {
        let mut conn = server.client().await?;
        redis::pipe()
            .cmd("SET")
            .arg("same")
            .arg("v")
            .ignore()
            .cmd("RPUSH")
            .arg("list")
            .arg("a")
            .arg("b")
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
    }
    let (code, _, err) = verify(&source.url(), &target.url(), &[]);
    assert_eq!(code, Some(0), "consistent data must exit 0: {err}");

    // A difference: exit 1, and the reports name the key and the kind.
    let mut conn = target.client().await?;
    conn.run::<()>("RPUSH list extra").await?;
    let dir = tempfile::tempdir()?;
    let csv = dir.path().join("differences.csv");
    let json = dir.path().join("summary.json");
    let (code, _, err) = verify(
        &source.url(),
        &target.url(),
        &[
            "--report",
            csv.to_str().unwrap_or_default(),
            "--summary",
            json.to_str().unwrap_or_default(),
        ],
    );
    assert_eq!(code, Some(1), "a difference must exit 1: {err}");
    let report = std::fs::read_to_string(&csv)?;
    assert!(
        report
            .lines()
            .any(|l| l.contains("list") && l.contains("value")),
        "{report}"
    );
    assert_eq!(
        report.lines().count(),
        2,
        "header and exactly one difference: {report}"
    );
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json)?)?;
    assert!(summary.to_string().contains("value"), "{summary}");

    // Nothing listens: exit 2, saying why.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let (code, _, err) = verify(&format!("redis://127.0.0.1:{port}"), &target.url(), &[]);
    assert_eq!(code, Some(2), "an unreachable side must exit 2");
    assert!(
        err.contains("could not verify") || err.contains(&port.to_string()),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn recheck_key_lists_and_ttl_extension_from_the_command_line() -> anyhow::Result<()> {
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let (mut s, mut t) = (source.client().await?, target.client().await?);
    // "ttl" expires an hour later on the target, as `lockstep sync --extend-ttl 3600`
    // writes it; "bad" differs.
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64
        + 600_000;
    for (conn, extra, value) in [(&mut s, 0, "a"), (&mut t, 3_600_000, "b")] {
        redis::pipe()
            .cmd("SET")
            .arg("same")
            .arg(1)
            .ignore()
            .cmd("SET")
            .arg("ttl")
            .arg(1)
            .arg("PXAT")
            .arg(at + extra)
            .ignore()
            .cmd("SET")
            .arg("bad")
            .arg(value)
            .ignore()
            .query_async::<()>(conn)
            .await?;
    }
    let dir = tempfile::tempdir()?;
    let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let (csv, csv2, list) = (path("first.csv"), path("again.csv"), path("keys.txt"));
    let (src, dst) = (source.url(), target.url());

    let (code, out, err) = verify(&src, &dst, &["--dbs", "0", "--report", &csv]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert_eq!(
        std::fs::read_to_string(&csv)?.lines().count(),
        3,
        "ttl and bad"
    );
    let (code, out, err) = verify(&src, &dst, &["--dbs", "0", "--extend-ttl", "3600"]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.contains("1 differences"), "only bad: {out}");

    // Re-check the report's keys: the same two, then none once they are repaired.
    let (code, out, err) = verify(&src, &dst, &["--recheck", &csv, "--report", &csv2]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert_eq!(std::fs::read_to_string(&csv2)?.lines().count(), 3, "{out}");
    t.run::<()>("SET bad a").await?;
    let (code, out, err) = verify(&src, &dst, &["--recheck", &csv, "--extend-ttl", "3600"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("2 keys compared"),
        "only the report's keys: {out}"
    );

    // A key list: one key per line.
    std::fs::write(&list, "same\nbase64:dHRs\n")?; // "ttl"
    let (code, out, err) = verify(&src, &dst, &["--dbs", "0", "--keys-from", &list]);
    assert_eq!(
        code,
        Some(1),
        "ttl differs without the extension: {out}{err}"
    );
    assert!(out.contains("2 keys compared"), "{out}");
    std::fs::write(&list, "base64:%%%\n")?;
    let (code, _, err) = verify(&src, &dst, &["--keys-from", &list]);
    assert_eq!(code, Some(2), "an unreadable key list cannot verify: {err}");
    assert!(err.contains("line 1"), "{err}");
    Ok(())
}

/// A sync written with `--map-db 3:0 --rename-prefix user:=u:`: verify given the same
/// options says CONSISTENT (exit 0), without them it does not; rules that are not
/// one-to-one are refused before any connection, naming the option and the overlap.
#[tokio::test]
async fn a_mapped_and_renamed_pair_from_the_command_line() -> anyhow::Result<()> {
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let (mut s, mut t) = (redis::pipe(), redis::pipe());
    s.cmd("SELECT").arg(3).ignore();
    for i in 0..50 {
        s.cmd("SET").arg(format!("user:{i}")).arg(i).ignore();
        t.cmd("SET").arg(format!("u:{i}")).arg(i).ignore();
        s.cmd("HSET")
            .arg(format!("order:{i}"))
            .arg("f")
            .arg(i)
            .ignore();
        t.cmd("HSET")
            .arg(format!("order:{i}"))
            .arg("f")
            .arg(i)
            .ignore();
    }
    s.query_async::<()>(&mut source.client().await?).await?;
    t.query_async::<()>(&mut target.client().await?).await?;
    let (src, dst) = (source.url(), target.url());
    let mapped = ["--map-db", "3:0", "--rename-prefix", "user:=u:"];
    let (code, out, err) = verify(&src, &dst, &mapped);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("CONSISTENT: the target equals the source in database 3"),
        "{out}"
    );
    let (code, out, _) = verify(&src, &dst, &["--map-db", "3:0"]);
    assert_eq!(code, Some(1), "the names differ without the rule: {out}");

    // A report of a renamed run names the extra keys by their target names; its
    // recheck reads each again (one by its source name, one only on the target).
    let mut t = target.client().await?;
    redis::pipe()
        .cmd("SET")
        .arg("u:7")
        .arg("changed")
        .ignore()
        .cmd("SET")
        .arg("u:999")
        .arg("x")
        .ignore()
        .cmd("SET")
        .arg("user:1")
        .arg("x")
        .ignore()
        .query_async::<()>(&mut t)
        .await?;
    let dir = tempfile::tempdir()?;
    let csv = dir.path().join("report.csv").to_string_lossy().into_owned();
    let csv2 = dir
        .path()
        .join("recheck.csv")
        .to_string_lossy()
        .into_owned();
    let keys = |path: &str| -> anyhow::Result<Vec<String>> {
        let text = std::fs::read_to_string(path)?;
        let mut rows: Vec<String> = text
            .lines()
            .skip(1)
            .map(|l| l.split(',').take(3).collect::<Vec<_>>().join(","))
            .collect();
        rows.sort();
        Ok(rows)
    };
    let (code, out, err) = verify(&src, &dst, &[&mapped[..], &["--report", &csv]].concat());
    assert_eq!(code, Some(1), "{out}{err}");
    let expected = [
        "3,u:999,extra_on_target",
        "3,user:1,extra_on_target",
        "3,user:7,value",
    ];
    assert_eq!(keys(&csv)?, expected, "{out}");
    let recheck = [&mapped[..], &["--recheck", &csv, "--report", &csv2]].concat();
    let (code, out, err) = verify(&src, &dst, &recheck);
    assert_eq!(code, Some(1), "{out}{err}");
    assert_eq!(keys(&csv2)?, expected, "{out}");
    redis::pipe()
        .cmd("SET")
        .arg("u:7")
        .arg("7")
        .ignore()
        .cmd("DEL")
        .arg("u:999")
        .arg("user:1")
        .ignore()
        .query_async::<()>(&mut t)
        .await?;
    let (code, out, err) = verify(&src, &dst, &recheck);
    assert_eq!(code, Some(0), "repaired: {out}{err}");

    let (code, _, err) = verify(
        &src,
        &dst,
        &["--rename-prefix", "a:=x:", "--rename-prefix", "b:=x:y"],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--rename-prefix") && err.contains("\"x:\" and \"x:y\" overlap"),
        "{err}"
    );
    let (code, _, err) = verify(&src, &dst, &["--map-db", "3:0", "--map-db", "4:0"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--map-db") && err.contains("target database 0"),
        "{err}"
    );
    Ok(())
}

/// A sync written with declarative rules (`--rename-regex`, `--ttl-cap`,
/// `--drop-hash-field`, `--exclude-types`, `--exclude-match`): verify given the same
/// flags says CONSISTENT (exit 0), without them it does not; a TTL over the cap is a
/// TTL difference naming the rule, a regex-renamed extra key is re-checked by its
/// target name, and invalid rules are refused at start (exit 2) naming the flag and
/// the pattern.
#[tokio::test]
async fn declarative_rules_from_the_command_line() -> anyhow::Result<()> {
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V8_2)).await?;
    let (mut s, mut t) = (redis::pipe(), redis::pipe());
    for i in 0..30 {
        s.cmd("SET").arg(format!("user:{i}")).arg(i).ignore();
        s.cmd("PEXPIRE")
            .arg(format!("user:{i}"))
            .arg(86_400_000)
            .ignore();
        t.cmd("SET").arg(format!("u:{i}")).arg(i).ignore();
        t.cmd("PEXPIRE")
            .arg(format!("u:{i}"))
            .arg(3_600_000)
            .ignore();
        s.cmd("HSET")
            .arg(format!("h:{i}"))
            .arg("f")
            .arg(i)
            .arg("ssn")
            .arg(1)
            .ignore();
        t.cmd("HSET").arg(format!("h:{i}")).arg("f").arg(i).ignore();
        s.cmd("RPUSH").arg(format!("l:{i}")).arg(i).ignore();
        s.cmd("SET").arg(format!("tmp:{i}")).arg(i).ignore();
    }
    s.query_async::<()>(&mut source.client().await?).await?;
    t.query_async::<()>(&mut target.client().await?).await?;
    let (src, dst) = (source.url(), target.url());
    let rules = [
        "--rename-regex",
        r"^user:(\d+)$",
        "u:$1",
        "--ttl-cap",
        "1h",
        "--drop-hash-field",
        "ssn",
        "--exclude-types",
        "list",
        "--exclude-match",
        "tmp:*",
    ];
    let (code, out, err) = verify(&src, &dst, &rules);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("CONSISTENT"), "{out}");
    let (code, out, _) = verify(&src, &dst, &rules[3..]);
    assert_eq!(
        code,
        Some(1),
        "the names differ without the regex rule: {out}"
    );

    let mut t = target.client().await?;
    redis::pipe()
        .cmd("PEXPIRE")
        .arg("u:3")
        .arg(7_200_000)
        .ignore()
        .cmd("SET")
        .arg("u:999")
        .arg("x")
        .ignore()
        .query_async::<()>(&mut t)
        .await?;
    let dir = tempfile::tempdir()?;
    let csv = dir.path().join("report.csv").to_string_lossy().into_owned();
    let (code, out, err) = verify(&src, &dst, &[&rules[..], &["--report", &csv]].concat());
    assert_eq!(code, Some(1), "{out}{err}");
    let text = std::fs::read_to_string(&csv)?;
    let ttl = text
        .lines()
        .find(|l| l.starts_with("0,user:3,ttl"))
        .unwrap_or_default();
    assert!(ttl.contains("--ttl-cap 1h"), "{text}");
    assert!(text.contains("0,u:999,extra_on_target"), "{text}");
    let recheck = [&rules[..], &["--recheck", &csv]].concat();
    let (code, out, err) = verify(&src, &dst, &recheck);
    assert_eq!(code, Some(1), "{out}{err}");
    redis::pipe()
        .cmd("PEXPIRE")
        .arg("u:3")
        .arg(3_600_000)
        .ignore()
        .cmd("DEL")
        .arg("u:999")
        .ignore()
        .query_async::<()>(&mut t)
        .await?;
    let (code, out, err) = verify(&src, &dst, &recheck);
    assert_eq!(code, Some(0), "repaired: {out}{err}");

    for (bad, why) in [
        (
            &["--match", "a["][..],
            "--match \"a[\": the [ at byte 1 is never closed",
        ),
        (&["--key-regex", "("][..], "--key-regex \"(\""),
        (&["--types", "blob"][..], "--types \"blob\": not a type"),
        (
            &["--rename-regex", r"user:\d+", "u"][..],
            "outside a capture group",
        ),
        (
            &["--ttl-remove", "--extend-ttl", "5"][..],
            "--extend-ttl with --ttl-remove",
        ),
        (
            &["--ttl-remove", "--ttl-cap", "1h"][..],
            "cannot be used with",
        ),
        (&["--ttl-set", "1w"][..], "unknown unit"),
    ] {
        let (code, _, err) = verify(&src, &dst, bad);
        assert_eq!(code, Some(2), "{bad:?}: {err}");
        assert!(err.contains(why), "{bad:?}: {err}");
    }
    Ok(())
}

/// `lockstep sync --mode full` with `route_db` from a config file: the session keys
/// land in target database 1 beside another task's key, which the sync leaves alone
/// and verify with `--route-db` does not call extra (exit 0); without the routes
/// verify finds the difference (exit 1); routes without one source database are
/// refused at start by both (exit 2, naming --dbs).
#[tokio::test]
async fn database_routes_from_the_command_line() -> anyhow::Result<()> {
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let mut s = redis::pipe();
    for i in 0..25 {
        s.cmd("SET").arg(format!("session:{i}")).arg(i).ignore();
        s.cmd("HSET")
            .arg(format!("user:{i}"))
            .arg("f")
            .arg(i)
            .ignore();
    }
    s.query_async::<()>(&mut source.client().await?).await?;
    let mut t = target.client().await?;
    redis::pipe()
        .cmd("SELECT")
        .arg(1)
        .ignore()
        .cmd("SET")
        .arg("other:task")
        .arg("theirs")
        .ignore()
        .query_async::<()>(&mut t)
        .await?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("task.toml");
    std::fs::write(
        &config,
        format!(
            "source = \"{}\"\ntarget = \"{}\"\ncheckpoint_dir = \"{}\"\nmode = \"full\"\ndbs = [0]\nroute_db = [\"session:*=1\"]\n",
            source.url(),
            target.url(),
            dir.path().join("cp").display()
        ),
    )?;
    let sync = |config: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_lockstep"))
            .args(["sync", "--config", &config.to_string_lossy()])
            .output()
            .expect("lockstep runs")
    };
    let out = sync(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (src, dst) = (source.url(), target.url());
    let routed = ["--dbs", "0", "--route-db", "session:*=1"];
    let (code, out, err) = verify(&src, &dst, &routed);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("CONSISTENT"), "{out}");
    let kept: Option<String> = redis::pipe()
        .cmd("SELECT")
        .arg(1)
        .ignore()
        .cmd("GET")
        .arg("other:task")
        .query_async::<(Option<String>,)>(&mut t)
        .await?
        .0;
    assert_eq!(kept.as_deref(), Some("theirs"));
    let (code, out, _) = verify(&src, &dst, &["--dbs", "0"]);
    assert_eq!(code, Some(1), "without the routes: {out}");
    let (code, _, err) = verify(&src, &dst, &routed[2..]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--dbs"), "{err}");
    let all_dbs = dir.path().join("all.toml");
    std::fs::write(
        &all_dbs,
        std::fs::read_to_string(&config)?.replace("dbs = [0]\n", ""),
    )?;
    let out = sync(&all_dbs);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--route-db needs exactly one source database"),
        "{err}"
    );
    Ok(())
}
