//! `lockstep sync` as a user runs it: passwords from a file and the environment
//! (never in logs, /status, /metrics or error messages), the status endpoint and
//! `lockstep status` (schema checked against `golden/status_schema.txt`), SIGTERM under
//! writes (exit 0, then a restart resumes with a partial resync and the target equals
//! the source), a signal during a full copy (exit 0, the next start copies again), and
//! a second signal that exits at once with 130.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{assert_equal, free_port, strings, sync_args, wait_counter, Lockstep, Writer};
use lockstep_testkit::topology::wait_until;
use lockstep_testkit::Run;
use lockstep_testkit::{Auth, RedisServer, RedisVersion, ServerConfig};

const SOURCE_PASSWORD: &str = "src-Secret-4711";
const TARGET_PASSWORD: &str = "tgt-Secret-0815";

/// `lockstep status <port> [--json]`: (exit code, stdout).
fn status(port: u16, json: bool) -> (Option<i32>, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lockstep"));
    command.args(["status", &port.to_string()]);
    if json {
        command.arg("--json");
    }
    match command.output() {
        Ok(out) => (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        ),
        Err(err) => (None, err.to_string()),
    }
}

fn metrics(port: u16) -> anyhow::Result<String> {
    Ok(ureq::get(format!("http://127.0.0.1:{port}/metrics"))
        .call()?
        .body_mut()
        .read_to_string()?)
}

/// `path: type` of every field of a JSON value (arrays by their first element).
fn schema(value: &serde_json::Value, path: &str, out: &mut Vec<(String, &'static str)>) {
    use serde_json::Value;
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(items) => {
            if let Some(first) = items.first() {
                schema(first, &format!("{path}[]"), out);
            }
            "array"
        }
        Value::Object(fields) => {
            for (name, field) in fields {
                let sub = if path.is_empty() {
                    name.clone()
                } else {
                    format!("{path}.{name}")
                };
                schema(field, &sub, out);
            }
            "object"
        }
    };
    if !path.is_empty() {
        out.push((path.to_owned(), kind));
    }
}

/// The served document has exactly the golden fields, each of an allowed type.
fn assert_schema(doc: &serde_json::Value) {
    let golden = include_str!("golden/status_schema.txt");
    let allowed: std::collections::BTreeMap<&str, Vec<&str>> = golden
        .lines()
        .filter_map(|line| line.split_once(": "))
        .map(|(path, kinds)| (path, kinds.split('|').collect()))
        .collect();
    let mut seen = Vec::new();
    schema(doc, "", &mut seen);
    for (path, kind) in &seen {
        let kinds = allowed
            .get(path.as_str())
            .unwrap_or_else(|| panic!("field {path} is not in golden/status_schema.txt"));
        assert!(
            kinds.contains(kind),
            "{path} is {kind}, golden says {kinds:?}"
        );
    }
    for path in allowed.keys() {
        // The scan object's fields exist only when it is not null (a scanned source).
        if path.starts_with("targets[].scan.") {
            continue;
        }
        assert!(
            seen.iter().any(|(p, _)| p == path),
            "field {path} is missing from /status"
        );
    }
}

async fn wait_status(
    port: u16,
    what: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> anyhow::Result<serde_json::Value> {
    let mut last = serde_json::Value::Null;
    let found = wait_until(what, Duration::from_secs(60), || {
        let (_, body) = status(port, true);
        let doc: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let good = ok(&doc);
        last = doc;
        async move { Ok(if good { Ok(()) } else { Err(body) }) }
    })
    .await;
    found.map(|()| last)
}

#[tokio::test]
async fn status_secrets_sigterm_and_resume() -> anyhow::Result<()> {
    let source = RedisServer::start(
        ServerConfig::new(RedisVersion::V7_0)
            .auth(Auth::Password(SOURCE_PASSWORD.into()))
            .set("repl-backlog-size", "64mb"),
    )
    .await?;
    let target = RedisServer::start(
        ServerConfig::new(RedisVersion::V8_2).auth(Auth::Password(TARGET_PASSWORD.into())),
    )
    .await?;
    let dir = tempfile::tempdir()?;
    let password_file = dir.path().join("source.password");
    std::fs::write(&password_file, format!("{SOURCE_PASSWORD}\n"))?;
    let port = free_port()?;
    let args = strings(&[
        "sync",
        "--source",
        &format!("redis://127.0.0.1:{}", source.port()),
        "--target",
        &format!("redis://127.0.0.1:{}", target.port()),
        "--source-password-file",
        &password_file.to_string_lossy(),
        "--checkpoint-dir",
        &dir.path().join("checkpoints").to_string_lossy(),
        "--status-addr",
        &port.to_string(),
    ]);
    let env = [("LOCKSTEP_TARGET_PASSWORD", TARGET_PASSWORD)];
    let log = dir.path().join("lockstep.log");

    let writer = Writer::start(&source)?;
    let mut sync = Lockstep::start(&args, &env, &log)?;
    let doc = wait_status(port, "the incremental phase", |doc| {
        doc["targets"][0]["phase"] == "incremental"
            && doc["targets"][0]["applied_offset"].as_i64() > Some(0)
    })
    .await?;
    assert_schema(&doc);
    assert_eq!(doc["task"], "default");
    assert_eq!(doc["targets"][0]["full_syncs"], 1, "{doc}");
    let (code, person) = status(port, false);
    assert_eq!(code, Some(0), "{person}");
    assert!(person.contains("task default: incremental"), "{person}");
    let metrics = metrics(port)?;
    assert!(
        metrics.contains("lockstep_applied_offset_bytes{task=\"default\",target=\"0\"}"),
        "{metrics}"
    );

    // SIGTERM under writes: exit 0, with the checkpoint stored.
    tokio::time::sleep(Duration::from_millis(300)).await;
    sync.signal("TERM")?;
    assert_eq!(
        sync.exit_code(Duration::from_secs(20)).await?,
        Some(0),
        "{}",
        sync.log_text()
    );
    let full_before = source.info("stats").await?.int("sync_full")?;
    let first_log = sync.log_text();
    for text in [&first_log, &doc.to_string(), &person, &metrics] {
        assert!(
            !text.contains(SOURCE_PASSWORD) && !text.contains(TARGET_PASSWORD),
            "a password leaked:\n{text}"
        );
    }

    // The restart resumes where the target stands: a partial resync, no full one.
    let mut sync = Lockstep::start(&args, &env, &dir.path().join("second.log"))?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = writer.stop().await?;
    wait_counter(&target, sent, Duration::from_secs(30)).await?;
    let events: u64 = target.run("LLEN events").await?;
    assert_eq!(
        events, sent,
        "list elements lost or duplicated across the stop"
    );
    assert_equal(&source, &target, "after SIGTERM and restart").await?;
    assert_eq!(
        source.info("stats").await?.int("sync_full")?,
        full_before,
        "the restart made a full sync; log:\n{}",
        sync.log_text()
    );
    let doc = wait_status(port, "the resumed task's status", |doc| {
        doc["targets"][0]["partial_syncs"] == 1
    })
    .await?;
    assert_eq!(doc["targets"][0]["full_syncs"], 0, "{doc}");
    sync.signal("INT")?;
    assert_eq!(
        sync.exit_code(Duration::from_secs(20)).await?,
        Some(0),
        "{}",
        sync.log_text()
    );
    Ok(())
}

#[tokio::test]
async fn passwords_stay_out_of_error_messages() -> anyhow::Result<()> {
    let source = RedisServer::start(
        ServerConfig::new(RedisVersion::V7_0).auth(Auth::Password(SOURCE_PASSWORD.into())),
    )
    .await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let dir = tempfile::tempdir()?;
    let closed = free_port()?;
    let wrong = "wrong-Password-99";
    let cases = [
        // A wrong password in the URL, and for the target an unreachable host.
        (
            format!("redis://:{wrong}@127.0.0.1:{}", source.port()),
            format!("redis://:{TARGET_PASSWORD}@127.0.0.1:{closed}"),
            vec![],
        ),
        // The same without the precheck: the engine's own errors.
        (
            format!("redis://:{wrong}@127.0.0.1:{}", source.port()),
            format!("redis://:{TARGET_PASSWORD}@127.0.0.1:{closed}"),
            vec![
                "--skip-precheck",
                "--retry-minutes",
                "10",
                "--other-retry-minutes",
                "1",
                "--mode",
                "full",
            ],
        ),
        // A reachable target: the source's refusal ends the task at once.
        (
            format!("redis://:{wrong}@127.0.0.1:{}", source.port()),
            target.url(),
            vec!["--skip-precheck"],
        ),
    ];
    for (index, (source_url, target_url, extra)) in cases.iter().enumerate() {
        for command in ["sync", "check"] {
            if command == "check" && !extra.is_empty() {
                continue;
            }
            let mut args = strings(&[command, "--source", source_url, "--target", target_url]);
            if command == "sync" {
                args.extend(strings(&["--checkpoint-dir"]));
                args.push(
                    dir.path()
                        .join(format!("cp{index}"))
                        .to_string_lossy()
                        .into_owned(),
                );
                args.extend(strings(extra));
            }
            let log = dir.path().join(format!("{command}{index}.log"));
            let mut run = Lockstep::start(&args, &[], &log)?;
            // A wrong password is permanent: the sync ends (no retry window).
            let wait = if extra.is_empty() { 30 } else { 3 };
            let code = run.exit_code(Duration::from_secs(wait)).await;
            let text = run.log_text();
            if index == 2 {
                assert!(
                    matches!(code, Ok(Some(c)) if c != 0),
                    "a refused password must end the sync: {code:?}\n{text}"
                );
            }
            if code.is_err() {
                // The unreachable target is retried; what was logged so far counts.
                run.signal("KILL")?;
            }
            assert!(!text.is_empty(), "{command} {index}: nothing logged");
            assert!(
                !text.contains(wrong) && !text.contains(TARGET_PASSWORD),
                "{command} {index}: a password leaked:\n{text}"
            );
            assert!(
                text.contains("127.0.0.1"),
                "{command} {index}: the error does not name the endpoint:\n{text}"
            );
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_signal_during_the_full_copy_stops_it_and_the_next_start_copies_again(
) -> anyhow::Result<()> {
    // A slow snapshot (1 ms per key), so the signal lands inside the copy.
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let mut conn = source.client().await?;
    let mut pipe = redis::pipe();
    for i in 0..5000 {
        pipe.cmd("SET").arg(format!("key:{i}")).arg(i).ignore();
    }
    pipe.query_async::<()>(&mut conn).await?;
    let save_delay = |micros: u32| {
        let mut conn = conn.clone();
        async move {
            conn.run_args::<()>(("CONFIG", "SET", "rdb-key-save-delay", micros))
                .await
        }
    };
    save_delay(1000).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let dir = tempfile::tempdir()?;
    let args = sync_args(
        &source.url(),
        &[&target.url()],
        dir.path(),
        &["--mode", "full"],
    );
    let mut sync = Lockstep::start(&args, &[], &dir.path().join("first.log"))?;
    sync.wait_log("phase=\"full_copy\"", Duration::from_secs(20))
        .await?;
    sync.signal("INT")?;
    assert_eq!(
        sync.exit_code(Duration::from_secs(3)).await?,
        Some(0),
        "{}",
        sync.log_text()
    );
    assert!(
        sync.log_text().contains("stopped during the full copy"),
        "{}",
        sync.log_text()
    );
    // The next start flushes the partial copy and copies again.
    save_delay(0).await?;
    let mut again = Lockstep::start(&args, &[], &dir.path().join("second.log"))?;
    assert_eq!(
        again.exit_code(Duration::from_secs(30)).await?,
        Some(0),
        "{}",
        again.log_text()
    );
    assert_equal(&source, &target, "after a copy stopped by a signal").await?;
    Ok(())
}

#[tokio::test]
async fn a_second_signal_exits_at_once_with_130() -> anyhow::Result<()> {
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let dir = tempfile::tempdir()?;
    let args = sync_args(&source.url(), &[&target.url()], dir.path(), &[]);
    let writer = Writer::start(&source)?;
    let mut sync = Lockstep::start(&args, &[], &dir.path().join("lockstep.log"))?;
    sync.wait_log("phase=\"incremental\"", Duration::from_secs(20))
        .await?;
    // A frozen target: the graceful stop waits for replies that do not come. The
    // signal goes once lockstep holds unanswered writes (the source's offset runs
    // ahead of what lockstep acknowledges), not on a guess of how long that takes.
    target.pause();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let info = source.info("replication").await?;
        let master = info.int("master_repl_offset")?;
        let acked = info
            .get("slave0")
            .and_then(|line| line.split(',').find_map(|f| f.strip_prefix("offset=")))
            .and_then(|o| o.parse::<i64>().ok())
            .unwrap_or(master);
        if master - acked > 2000 {
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "lockstep never fell behind the frozen target"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    sync.signal("TERM")?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let still_running = sync.child.try_wait()?.is_none();
    assert!(
        still_running,
        "the first signal waits for the drain; log:\n{}",
        sync.log_text()
    );
    sync.signal("TERM")?;
    let code = sync.exit_code(Duration::from_secs(5)).await;
    target.resume();
    writer.stop().await?;
    assert_eq!(code?, Some(130), "{}", sync.log_text());
    Ok(())
}

#[tokio::test]
async fn the_heartbeat_interval_spaces_the_heartbeats() -> anyhow::Result<()> {
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let dir = tempfile::tempdir()?;
    let args = sync_args(
        &source.url(),
        &[&target.url()],
        dir.path(),
        &["--heartbeat-interval-secs", "3"],
    );
    let sync = Lockstep::start(&args, &[], &dir.path().join("lockstep.log"))?;
    sync.wait_log("phase=\"incremental\"", Duration::from_secs(20))
        .await?;
    // Only the heartbeat writes SETEX on the source.
    let setex_calls = || async {
        let stats = source.info("commandstats").await?;
        let calls = stats
            .get("cmdstat_setex")
            .and_then(|v| v.split(',').find_map(|kv| kv.strip_prefix("calls=")))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        anyhow::Ok(calls)
    };
    let before = setex_calls().await?;
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let beats = setex_calls().await? - before;
    assert!(
        (1..=2).contains(&beats),
        "{beats} heartbeats in 4.5 s at one per 3 s; log:\n{}",
        sync.log_text()
    );
    Ok(())
}

/// On a terminal (a pseudo-terminal from util-linux `script`), the full copy shows a
/// progress line with keys and bytes, then the incremental phase a live line with
/// commands/s and lag; off a terminal the same progress comes as log lines (the other
/// tests). The bars are checked in what the terminal received.
#[tokio::test]
async fn a_terminal_gets_progress_bars_for_both_phases() -> anyhow::Result<()> {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: no util-linux `script` to give lockstep a terminal");
        return Ok(());
    }
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let mut conn = source.client().await?;
    conn.run::<()>("DEBUG POPULATE 10000").await?;
    // A copy slow enough for the bar to be drawn (under a second).
    conn.run::<()>("CONFIG SET rdb-key-save-delay 20").await?;
    let dir = tempfile::tempdir()?;
    let args = sync_args(&source.url(), &[&target.url()], dir.path(), &[]);
    let command = format!(
        "timeout -s INT 8 {} {}",
        env!("CARGO_BIN_EXE_lockstep"),
        args.join(" ")
    );
    let typescript = dir.path().join("terminal.txt");
    let out = Command::new("script")
        .args(["-q", "-e", "-c", &command])
        .arg(&typescript)
        .output()?;
    let screen = String::from_utf8_lossy(&std::fs::read(&typescript)?).into_owned();
    // 124: `timeout` sent the signal (lockstep itself stopped cleanly on it).
    assert!(
        matches!(out.status.code(), Some(0 | 124)),
        "exit {:?}; the terminal showed:\n{screen}",
        out.status.code()
    );
    assert!(
        screen.contains("stopping: draining") && !screen.contains("ERROR"),
        "no clean stop; the terminal showed:\n{screen}"
    );
    assert!(
        screen.contains("full copy") && screen.contains("keys"),
        "no full-copy bar; the terminal showed:\n{screen}"
    );
    assert!(
        screen.contains("incremental:") && screen.contains("cmd/s"),
        "no incremental line; the terminal showed:\n{screen}"
    );
    Ok(())
}

/// An unreachable source at start: the precheck fails at once, naming it; with
/// `--skip-precheck` the task waits for the source within its retry window (as its
/// sessions would) and copies once the source answers.
#[tokio::test]
async fn an_unreachable_source_fails_the_precheck_or_is_waited_for() -> anyhow::Result<()> {
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let mut conn = source.client().await?;
    conn.run::<()>("SET k v").await?;
    let door = lockstep_testkit::FaultProxy::start(source.addr()).await?;
    door.refuse_new(true);
    let url = door.url_for(&source);

    let dir = tempfile::tempdir()?;
    // Nothing listens there: the precheck's connection item fails at once.
    let closed = format!("redis://127.0.0.1:{}", free_port()?);
    let args = sync_args(&closed, &[&target.url()], dir.path(), &["--mode", "full"]);
    let out = Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .args(&args)
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&closed),
        "the message names the source: {stderr}"
    );

    let args = sync_args(
        &url,
        &[&target.url()],
        dir.path(),
        &["--mode", "full", "--skip-precheck"],
    );
    let mut sync = Lockstep::start(&args, &[], &dir.path().join("lockstep.log"))?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        sync.child.try_wait()?.is_none(),
        "it gave up at once; log:\n{}",
        sync.log_text()
    );
    door.refuse_new(false);
    let code = sync.exit_code(Duration::from_secs(30)).await?;
    assert_eq!(code, Some(0), "{}", sync.log_text());
    let mut t = target.client().await?;
    let copied: Option<String> = t.run("GET k").await?;
    assert_eq!(copied.as_deref(), Some("v"));
    Ok(())
}
