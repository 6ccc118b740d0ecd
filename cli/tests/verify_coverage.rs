//! `lockstep verify` says CONSISTENT only over what it read (issue 14): every database
//! holding keys on either side is compared (not only 0 to 15), an account without
//! INFO or CONFIG still covers every database (probed) or says what it could not,
//! a sample is never called consistent, and a long string is compared in windows
//! without being held whole (the process's peak RSS, from `wait4`, stays far below it).

use std::process::{Command, Stdio};

use lockstep_testkit::Run;
use lockstep_testkit::{RedisServer, RedisVersion, ServerConfig};

/// Exit code, stdout and stderr of `lockstep verify`.
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

/// The last line of the output: the verdict.
fn last_line(out: &str) -> &str {
    out.lines().last().unwrap_or_default()
}

async fn server(version: RedisVersion, databases: u32) -> anyhow::Result<RedisServer> {
    RedisServer::start(ServerConfig::new(version).set("databases", &databases.to_string())).await
}

async fn set(server: &RedisServer, db: u32, key: &str, value: &str) -> anyhow::Result<()> {
    let mut conn = server.client().await?;
    redis::pipe()
        .cmd("SELECT")
        .arg(db)
        .ignore()
        .cmd("SET")
        .arg(key)
        .arg(value)
        .ignore()
        .query_async::<()>(&mut conn)
        .await?;
    Ok(())
}

fn read_summary(path: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).expect("the summary was written");
    serde_json::from_str(&text).expect("the summary is JSON")
}

/// (a) The case: `databases 32` on both sides and a key in database 20 only
/// on the source. Before the fix verify walked databases 0 to 15, printed CONSISTENT
/// and exited 0.
#[tokio::test]
async fn a_key_in_database_20_only_on_the_source_is_missing() -> anyhow::Result<()> {
    let source = server(RedisVersion::V7_0, 32).await?;
    let target = server(RedisVersion::V7_0, 32).await?;
    for s in [&source, &target] {
        set(s, 0, "both", "1").await?;
    }
    set(&source, 20, "only-in-20", "1").await?;
    let dir = tempfile::tempdir()?;
    let csv = dir.path().join("differences.csv");
    let json = dir.path().join("summary.json");
    let (code, out, err) = verify(
        &source.url(),
        &target.url(),
        &[
            "--report",
            csv.to_str().unwrap_or_default(),
            "--summary",
            json.to_str().unwrap_or_default(),
        ],
    );
    assert_eq!(code, Some(1), "{out}{err}");
    let rows = std::fs::read_to_string(&csv)?;
    assert!(
        rows.lines()
            .any(|l| l.starts_with("20,only-in-20,missing_on_target")),
        "{rows}"
    );
    let summary = read_summary(&json);
    assert_eq!(summary["coverage"]["compared"], serde_json::json!([0, 20]));
    assert_eq!(summary["verdict"], "differences", "{summary}");
    assert!(last_line(&out).starts_with("INCONSISTENT"), "{out}");
    Ok(())
}

/// (b) A key only in database 40 of a `databases 64` target, the source having the
/// default 16 databases: extra on the target. With `--dbs 0` the scope is named and
/// database 40 is said to be left out: the user's choice, so exit 0, but said.
#[tokio::test]
async fn a_key_in_database_40_only_on_the_target_is_extra() -> anyhow::Result<()> {
    let source = server(RedisVersion::V6_2, 16).await?;
    let target = server(RedisVersion::V8_2, 64).await?;
    set(&target, 40, "only-in-40", "1").await?;
    let dir = tempfile::tempdir()?;
    let csv = dir.path().join("differences.csv");
    let (code, out, err) = verify(
        &source.url(),
        &target.url(),
        &["--report", csv.to_str().unwrap_or_default()],
    );
    assert_eq!(code, Some(1), "{out}{err}");
    let rows = std::fs::read_to_string(&csv)?;
    assert!(
        rows.lines()
            .any(|l| l.starts_with("40,only-in-40,extra_on_target")),
        "{rows}"
    );

    let json = dir.path().join("summary.json");
    let (code, out, err) = verify(
        &source.url(),
        &target.url(),
        &["--dbs", "0", "--summary", json.to_str().unwrap_or_default()],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    let line = last_line(&out);
    assert!(
        line.starts_with("CONSISTENT: the target equals the source in database 0 as asked"),
        "{line}"
    );
    assert!(
        line.contains("database 40 holds keys and was not compared (not asked)"),
        "{line}"
    );
    let summary = read_summary(&json);
    assert_eq!(summary["consistent"], true, "{summary}");
    assert_eq!(summary["verdict"], "consistent", "{summary}");
    assert_eq!(
        summary["coverage"]["not_asked_with_keys"],
        serde_json::json!([40])
    );
    Ok(())
}

/// An account `rules` on both servers (the default user keeps every right, to write).
async fn restricted(server: &RedisServer, rules: &[&str]) -> anyhow::Result<String> {
    let mut conn = server.client().await?;
    conn.run_args::<()>((
        "ACL",
        "SETUSER",
        "audit",
        "reset",
        "on",
        ">audit-pass",
        "~*",
        "+@all",
        rules,
    ))
    .await?;
    Ok(server
        .url()
        .replacen("redis://", "redis://audit:audit-pass@", 1))
}

/// (c) Without `+info` and `+config` the databases are probed with SELECT + DBSIZE:
/// database 20 is still compared. Without `+select` too, only database 0 can be read:
/// exit 3, naming what could not be learned (never 0); with INFO but without SELECT,
/// database 20 is named as not read.
#[tokio::test]
async fn an_account_without_info_probes_or_says_what_it_could_not_learn() -> anyhow::Result<()> {
    let source = server(RedisVersion::V7_0, 32).await?;
    let target = server(RedisVersion::V8_2, 32).await?;
    for s in [&source, &target] {
        set(s, 0, "both", "1").await?;
        set(s, 20, "in-20", "1").await?;
    }
    let dir = tempfile::tempdir()?;
    let json = dir.path().join("summary.json");
    let json_arg = json.to_str().unwrap_or_default();
    let (src, dst) = (
        restricted(&source, &["-info", "-config"]).await?,
        restricted(&target, &["-info", "-config"]).await?,
    );
    let (code, out, err) = verify(&src, &dst, &["--summary", json_arg]);
    assert_eq!(code, Some(0), "{out}{err}");
    let summary = read_summary(&json);
    assert_eq!(
        summary["coverage"]["source"]["learned"], "probed",
        "{summary}"
    );
    assert_eq!(summary["coverage"]["compared"], serde_json::json!([0, 20]));
    assert!(!out.contains("audit-pass") && !err.contains("audit-pass"));

    set(&source, 20, "in-20", "2").await?;
    let (code, out, err) = verify(&src, &dst, &[]);
    assert_eq!(code, Some(1), "a value in database 20 differs: {out}{err}");

    set(&source, 20, "in-20", "1").await?;
    let (src, dst) = (
        restricted(&source, &["-info", "-config", "-select"]).await?,
        restricted(&target, &["-info", "-config", "-select"]).await?,
    );
    let (code, out, err) = verify(&src, &dst, &["--summary", json_arg]);
    assert_eq!(code, Some(3), "{out}{err}");
    let line = last_line(&out);
    assert!(
        line.contains("could not be learned: SELECT 1 refused"),
        "{line}"
    );
    let summary = read_summary(&json);
    assert_eq!(summary["coverage"]["complete"], false, "{summary}");

    // INFO allowed, SELECT refused: database 20 is known to hold keys and named as
    // not read, with the reason.
    let (src, dst) = (
        restricted(&source, &["-select"]).await?,
        restricted(&target, &["-select"]).await?,
    );
    let (code, out, err) = verify(&src, &dst, &["--summary", json_arg]);
    assert_eq!(code, Some(3), "{out}{err}");
    let line = last_line(&out);
    assert!(
        line.contains("database 20 not read: the source refused it: SELECT 20"),
        "{line}"
    );
    let summary = read_summary(&json);
    assert_eq!(
        summary["coverage"]["compared"],
        serde_json::json!([0]),
        "{summary}"
    );
    assert!(
        summary["coverage"]["not_read"]["20"].is_string(),
        "{summary}"
    );
    Ok(())
}

/// (d) A sample is never reported as CONSISTENT: the line, the JSON and the exit code
/// say "sample".
#[tokio::test]
async fn a_sample_without_differences_says_sample_and_exits_3() -> anyhow::Result<()> {
    let source = server(RedisVersion::V7_0, 16).await?;
    let target = server(RedisVersion::V7_0, 16).await?;
    for s in [&source, &target] {
        let mut conn = s.client().await?;
        conn.run::<()>("DEBUG POPULATE 200").await?;
    }
    let dir = tempfile::tempdir()?;
    let json = dir.path().join("summary.json");
    let (code, out, err) = verify(
        &source.url(),
        &target.url(),
        &[
            "--mode",
            "sample",
            "--sample-rate",
            "0.5",
            "--summary",
            json.to_str().unwrap_or_default(),
        ],
    );
    assert_eq!(code, Some(3), "{out}{err}");
    let line = last_line(&out);
    assert!(line.starts_with("NO DIFFERENCES in a sample of"), "{line}");
    assert!(line.contains("the rest was not compared"), "{line}");
    assert!(!out.contains("CONSISTENT"), "{out}");
    let summary = read_summary(&json);
    assert_eq!(summary["consistent"], false, "{summary}");
    assert_eq!(summary["verdict"], "incomplete", "{summary}");
    assert_eq!(summary["coverage"]["sample"]["rate"], 0.5, "{summary}");
    Ok(())
}

/// Exit code and peak resident memory (kB, the child's own `ru_maxrss`) of a run.
// The child is reaped by `wait4` (which `Child::wait` cannot do: it gives no rusage).
#[allow(clippy::zombie_processes)]
fn verify_peak_rss(source: &str, target: &str, extra: &[&str]) -> (Option<i32>, i64, String) {
    let child = Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .args(["verify", "--source", source, "--target", target])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("lockstep starts");
    let pid = child.id() as libc::pid_t;
    let mut stdout = child.stdout.expect("piped stdout");
    let mut out = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut out).expect("stdout");
    let mut status = 0;
    // SAFETY: plain syscall on our own child; both pointers are to live locals.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4 on lockstep verify");
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    (code, usage.ru_maxrss, out)
}

/// (e) Two 50 MB strings, one equal and one differing in its last byte: reported
/// correctly, and verify's peak RSS stays far below the strings' size (they are read
/// in 1 MiB GETRANGE windows; before, GET/MGET held each whole on both sides).
#[tokio::test]
async fn fifty_megabyte_strings_are_compared_in_windows() -> anyhow::Result<()> {
    const LAST: u64 = 50 * 1024 * 1024 - 1;
    let source = server(RedisVersion::V7_0, 16).await?;
    let target = server(RedisVersion::V8_2, 16).await?;
    for (s, last) in [(&source, "x"), (&target, "y")] {
        let mut conn = s.client().await?;
        redis::pipe()
            .cmd("SETRANGE")
            .arg("big-same")
            .arg(LAST)
            .arg("z")
            .ignore()
            .cmd("SETRANGE")
            .arg("big-diff")
            .arg(LAST)
            .arg(last)
            .ignore()
            .cmd("SET")
            .arg("small")
            .arg("1")
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
    }
    let dir = tempfile::tempdir()?;
    let csv = dir.path().join("differences.csv");
    let (code, peak_kb, out) = verify_peak_rss(
        &source.url(),
        &target.url(),
        &["--report", csv.to_str().unwrap_or_default()],
    );
    assert_eq!(code, Some(1), "{out}");
    let rows = std::fs::read_to_string(&csv)?;
    assert_eq!(rows.lines().count(), 2, "only big-diff differs: {rows}");
    assert!(rows.contains("big-diff,value"), "{rows}");
    eprintln!("verify's peak RSS over two 50 MB strings: {peak_kb} kB");
    assert!(
        peak_kb < 40 * 1024,
        "peak RSS {peak_kb} kB: a 50 MB string was held whole"
    );
    assert!(out.contains("2 long strings in windows"), "{out}");
    Ok(())
}
