//! `lockstep audit` as an SRE runs it, on real servers: `--once` exit codes over
//! consistent, different and unreachable pairs (the worst wins; unreachable is
//! "could not verify", never consistent); a bad config names its key and file; the
//! history records runs and marks a key corrupted on the target persistent after two
//! runs; the history survives a restart of the daemon; a corrupt or locked history
//! file is an error naming the file, and is never reset.
//!
//! The oracle is the binary's own history read back through `lockstep audit history`
//! (what a user reads) and the data written to the servers by the test; never the
//! audit's in-memory state.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::Lockstep;
use lockstep_testkit::topology::wait_until;
use lockstep_testkit::{Auth, RedisServer, RedisVersion, Run, ServerConfig};

const PASSWORD: &str = "lockstep-test-pass";

/// `lockstep <args>`: exit code and stdout + stderr.
fn lockstep(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .args(args)
        .output()
        .expect("lockstep runs");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
}

/// A source and a password-protected target holding the same 200 keys.
async fn equal_pair() -> anyhow::Result<(RedisServer, RedisServer)> {
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let target =
        RedisServer::start(ServerConfig::new(RedisVersion::V8_2).auth(Auth::password())).await?;
    let mut pipe = redis::pipe();
    for i in 0..200 {
        pipe.cmd("SET").arg(format!("user:{i}")).arg(i).ignore();
    }
    pipe.cmd("RPUSH").arg("list").arg("a").arg("b").ignore();
    pipe.query_async::<()>(&mut source.client().await?).await?;
    pipe.query_async::<()>(&mut target.client().await?).await?;
    Ok((source, target))
}

/// A `[[pair]]` auditing `source` against `target`, the target's password from a file.
fn pair(name: &str, source: &str, target_port: u16, extra: &str) -> String {
    format!(
        "[[pair]]\nname = \"{name}\"\nsource = \"{source}\"\n\
         target = \"redis://127.0.0.1:{target_port}\"\ntarget_password_file = \"pass\"\n\
         interval_secs = 1\n{extra}\n"
    )
}

/// Writes the audit file (and the password file beside it); its path.
fn write_config(dir: &Path, pairs: &[String]) -> anyhow::Result<PathBuf> {
    std::fs::write(dir.join("pass"), format!("{PASSWORD}\n"))?;
    let path = dir.join("audits.toml");
    std::fs::write(
        &path,
        format!("history = \"history.db\"\n{}", pairs.concat()),
    )?;
    Ok(path)
}

fn once(config: &Path) -> (Option<i32>, String) {
    lockstep(&["audit", "--config", &config.to_string_lossy(), "--once"])
}

fn history_json(config: &Path) -> anyhow::Result<serde_json::Value> {
    let (code, text) = lockstep(&[
        "audit",
        "history",
        "--config",
        &config.to_string_lossy(),
        "--format",
        "json",
    ]);
    anyhow::ensure!(code == Some(0), "audit history failed: {text}");
    Ok(serde_json::from_str(&text)?)
}

fn unused_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[tokio::test]
async fn once_exits_with_the_worst_pair_and_unreachable_is_never_consistent() -> anyhow::Result<()>
{
    let (source, target) = equal_pair().await?;
    let dir = tempfile::tempdir()?;
    let good = pair("good", &source.url(), target.port(), "");
    let config = write_config(dir.path(), std::slice::from_ref(&good))?;
    let (code, text) = once(&config);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("audit `good`: CONSISTENT"), "{text}");

    let sampled = pair(
        "sampled",
        &source.url(),
        target.port(),
        "mode = \"sample\"\nsample_rate = 0.5",
    );
    let config = write_config(dir.path(), &[good.clone(), sampled])?;
    let (code, text) = once(&config);
    assert_eq!(code, Some(3), "a sample is incomplete: {text}");
    assert!(
        text.contains("fewer than") && text.contains("at 95% confidence"),
        "{text}"
    );

    let nobody = unused_port()?;
    let gone = pair(
        "gone",
        &format!("redis://127.0.0.1:{nobody}"),
        target.port(),
        "",
    );
    let config = write_config(dir.path(), &[good.clone(), gone.clone()])?;
    let (code, text) = once(&config);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("audit `gone`: COULD NOT VERIFY"), "{text}");
    assert!(!text.contains("audit `gone`: CONSISTENT"), "{text}");

    target.client().await?.run::<()>("RPUSH list extra").await?;
    let config = write_config(dir.path(), &[good, gone])?;
    let (code, text) = once(&config);
    assert_eq!(
        code,
        Some(1),
        "differences outrank could-not-verify: {text}"
    );
    assert!(text.contains("audit `good`: INCONSISTENT"), "{text}");
    assert!(
        !text.contains(PASSWORD),
        "no password in the output: {text}"
    );
    Ok(())
}

#[tokio::test]
async fn a_bad_config_names_the_key_and_the_file_never_the_password() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let base = format!(
        "history = \"h.db\"\n[[pair]]\nname = \"orders\"\n\
         source = \"redis://:{PASSWORD}@127.0.0.1:1\"\ntarget = \"redis://127.0.0.1:2\"\n"
    );
    for (extra, key) in [
        ("interval_secs = 60\nsample_rat = 0.1\n", "sample_rat"),
        ("interval_secs = 0\n", "`interval_secs`"),
        ("cron = \"every hour\"\n", "`cron`"),
        ("interval_secs = 60\nmode = \"sample\"\n", "`sample_rate`"),
    ] {
        let path = dir.path().join("audits.toml");
        std::fs::write(&path, format!("{base}{extra}"))?;
        let (code, text) = once(&path);
        assert_eq!(code, Some(2), "{text}");
        assert!(
            text.contains(key) && text.contains("audits.toml"),
            "{key}: {text}"
        );
        assert!(!text.contains(PASSWORD), "{text}");
        assert!(
            !dir.path().join("h.db").exists(),
            "nothing written before the check"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_key_corrupted_on_the_target_becomes_persistent_after_two_runs() -> anyhow::Result<()> {
    let (source, target) = equal_pair().await?;
    let dir = tempfile::tempdir()?;
    let config = write_config(
        dir.path(),
        &[pair("orders", &source.url(), target.port(), "")],
    )?;
    assert_eq!(once(&config).0, Some(0));
    target
        .client()
        .await?
        .run::<()>("SET user:7 corrupt")
        .await?;

    let (code, text) = once(&config);
    assert_eq!(code, Some(1), "{text}");
    let history = history_json(&config)?;
    let keys = history["differing_keys"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(keys.len(), 1, "{history}");
    assert_eq!(keys[0]["key"], "user:7");
    assert_eq!(keys[0]["persistent"], false, "one run: maybe lag");

    assert_eq!(once(&config).0, Some(1));
    let history = history_json(&config)?;
    let runs = history["runs"].as_array().cloned().unwrap_or_default();
    let verdicts: Vec<&str> = runs.iter().filter_map(|r| r["verdict"].as_str()).collect();
    assert_eq!(
        verdicts,
        ["consistent", "differences", "differences"],
        "{history}"
    );
    assert_eq!(runs[2]["by_kind"]["value"], 1, "{history}");
    assert!(runs[2]["keys_compared"].as_u64() >= Some(200), "{history}");
    let key = &history["differing_keys"][0];
    assert_eq!(
        (&key["persistent"], &key["consecutive"]),
        (&true.into(), &2.into())
    );
    let (code, table) = lockstep(&[
        "audit",
        "history",
        "--config",
        &config.to_string_lossy(),
        "--pair",
        "orders",
    ]);
    assert_eq!(code, Some(0), "{table}");
    assert!(
        table.contains("PERSISTENT orders db 0 key user:7"),
        "{table}"
    );
    let (code, html) = lockstep(&[
        "audit",
        "history",
        "--config",
        &config.to_string_lossy(),
        "--format",
        "html",
    ]);
    assert_eq!(code, Some(0), "{html}");
    assert_eq!(
        html.matches("<polyline").count(),
        2,
        "two charts of the one pair: {html}"
    );
    assert!(
        html.contains("class=\"persistent\"") && html.contains("user:7"),
        "{html}"
    );

    // Repaired: the next run is consistent and no key differs any more.
    target.client().await?.run::<()>("SET user:7 7").await?;
    assert_eq!(once(&config).0, Some(0));
    let history = history_json(&config)?;
    assert_eq!(
        history["differing_keys"].as_array().map(Vec::len),
        Some(0),
        "{history}"
    );
    Ok(())
}

/// The run ids recorded so far (empty before the file exists).
fn run_ids(config: &Path) -> Vec<u64> {
    let history = history_json(config).unwrap_or_default();
    let runs = history["runs"].as_array().cloned().unwrap_or_default();
    runs.iter().filter_map(|r| r["id"].as_u64()).collect()
}

async fn wait_runs(config: &Path, at_least: usize) -> anyhow::Result<Vec<u64>> {
    wait_until(
        &format!("{at_least} audit runs"),
        Duration::from_secs(40),
        || {
            let ids = run_ids(config);
            async move {
                Ok(match ids.len() >= at_least {
                    true => Ok(()),
                    false => Err(format!("{} runs", ids.len())),
                })
            }
        },
    )
    .await?;
    Ok(run_ids(config))
}

#[tokio::test]
async fn the_history_survives_a_restart_of_the_daemon() -> anyhow::Result<()> {
    let (source, target) = equal_pair().await?;
    let dir = tempfile::tempdir()?;
    let config = write_config(
        dir.path(),
        &[pair("orders", &source.url(), target.port(), "")],
    )?;
    let args = common::strings(&["audit", "--config", &config.to_string_lossy()]);
    let log = dir.path().join("daemon.log");
    let mut daemon = Lockstep::start(&args, &[], &log)?;
    let before = wait_runs(&config, 2).await?;
    daemon.signal("TERM")?;
    assert_eq!(
        daemon.exit_code(Duration::from_secs(20)).await?,
        Some(0),
        "{}",
        daemon.log_text()
    );

    let mut daemon = Lockstep::start(&args, &[], &log)?;
    let after = wait_runs(&config, before.len() + 2).await?;
    daemon.signal("INT")?;
    assert_eq!(
        daemon.exit_code(Duration::from_secs(20)).await?,
        Some(0),
        "{}",
        daemon.log_text()
    );
    assert_eq!(
        &after[..before.len()],
        &before[..],
        "the first daemon's runs are kept"
    );
    assert!(
        daemon.log_text().contains("audit `orders`: CONSISTENT"),
        "{}",
        daemon.log_text()
    );
    Ok(())
}

#[tokio::test]
async fn a_corrupt_or_locked_history_is_an_error_and_never_reset() -> anyhow::Result<()> {
    let (source, target) = equal_pair().await?;
    let dir = tempfile::tempdir()?;
    let config = write_config(
        dir.path(),
        &[pair("orders", &source.url(), target.port(), "")],
    )?;
    let history = dir.path().join("history.db");

    let garbage = b"not a database, somebody's notes\n".repeat(200);
    std::fs::write(&history, &garbage)?;
    let (code, text) = once(&config);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("history.db") && text.contains("never reset"),
        "{text}"
    );
    assert!(!text.contains("CONSISTENT"), "no audit ran: {text}");
    assert_eq!(
        std::fs::read(&history)?,
        garbage,
        "the file is left as it was"
    );

    std::fs::remove_file(&history)?;
    assert_eq!(once(&config).0, Some(0), "a new history starts");
    let lock = rusqlite::Connection::open(&history)?;
    lock.execute_batch("BEGIN EXCLUSIVE")?;
    let (code, text) = once(&config);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("history.db") && text.contains("locked"),
        "{text}"
    );
    lock.execute_batch("ROLLBACK")?;
    drop(lock);
    assert_eq!(once(&config).0, Some(0));
    assert_eq!(run_ids(&config).len(), 2, "the history kept both runs");
    Ok(())
}

/// A local webhook receiver: the body of every POST, in order.
struct Receiver {
    port: u16,
    bodies: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
}

impl Receiver {
    fn start() -> anyhow::Result<Receiver> {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let store = bodies.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream);
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    let lower = line.to_ascii_lowercase();
                    if let Some(value) = lower.strip_prefix("content-length:") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_ok() {
                    if let Ok(json) = serde_json::from_slice(&body) {
                        store.lock().expect("lock").push(json);
                    }
                }
                let _ = reader.get_mut().write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        });
        Ok(Receiver { port, bodies })
    }

    fn bodies(&self) -> Vec<serde_json::Value> {
        self.bodies.lock().expect("lock").clone()
    }

    /// Waits for an alert saying `previous` -> `verdict`.
    async fn wait_alert(&self, previous: Option<&str>, verdict: &str) -> anyhow::Result<()> {
        wait_until(
            &format!("an alert {previous:?} -> {verdict}"),
            Duration::from_secs(40),
            || {
                let bodies = self.bodies();
                async move {
                    let found = bodies.iter().any(|b| {
                        b["previous_verdict"].as_str() == previous && b["verdict"] == verdict
                    });
                    Ok(if found {
                        Ok(())
                    } else {
                        Err(format!("{bodies:?}"))
                    })
                }
            },
        )
        .await
    }
}

fn get(url: &str) -> Option<String> {
    ureq::get(url)
        .call()
        .ok()
        .and_then(|mut response| response.body_mut().read_to_string().ok())
}

#[tokio::test]
async fn the_daemon_alerts_on_a_difference_and_its_repair_and_the_metrics_show_it(
) -> anyhow::Result<()> {
    let (source, target) = equal_pair().await?;
    let dir = tempfile::tempdir()?;
    let receiver = Receiver::start()?;
    let status_port = unused_port()?;
    let top = format!(
        "status_addr = \"127.0.0.1:{status_port}\"\n\
         webhook_url = \"http://127.0.0.1:{}/hook\"\n",
        receiver.port
    );
    let pair = top + &pair("orders", &source.url(), target.port(), "");
    let config = write_config(dir.path(), &[pair])?;
    let args = common::strings(&["audit", "--config", &config.to_string_lossy()]);
    let mut daemon = Lockstep::start(&args, &[], &dir.path().join("daemon.log"))?;
    receiver.wait_alert(None, "consistent").await?;

    target
        .client()
        .await?
        .run::<()>("SET user:7 corrupt")
        .await?;
    receiver
        .wait_alert(Some("consistent"), "differences")
        .await?;
    let metrics_url = format!("http://127.0.0.1:{status_port}/metrics");
    let line = "lockstep_audit_differences_by_kind{pair=\"orders\",kind=\"value\"} 1";
    wait_until(
        "the difference in /metrics",
        Duration::from_secs(20),
        || {
            let text = get(&metrics_url).unwrap_or_default();
            async move {
                Ok(if text.contains(line) {
                    Ok(())
                } else {
                    Err(text)
                })
            }
        },
    )
    .await?;
    let status = get(&format!("http://127.0.0.1:{status_port}/status")).unwrap_or_default();
    assert!(status.contains("\"orders\""), "{status}");

    target.client().await?.run::<()>("SET user:7 7").await?;
    receiver
        .wait_alert(Some("differences"), "consistent")
        .await?;
    daemon.signal("TERM")?;
    assert_eq!(
        daemon.exit_code(Duration::from_secs(20)).await?,
        Some(0),
        "{}",
        daemon.log_text()
    );
    let everything = format!("{:?}{status}", receiver.bodies());
    assert!(!everything.contains(PASSWORD), "{everything}");
    Ok(())
}

/// `--once` off the async runtime (the churn keeps running meanwhile).
async fn once_blocking(config: &Path) -> anyhow::Result<(Option<i32>, String)> {
    let config = config.to_owned();
    Ok(tokio::task::spawn_blocking(move || once(&config)).await?)
}

/// A live sync under the churn workload is audited as consistent (rounds tell lag
/// from divergence), and a key corrupted on the target is persistent after two runs.
#[tokio::test]
async fn a_pair_under_a_live_sync_with_churn_is_consistent_and_a_corruption_persists(
) -> anyhow::Result<()> {
    use lockstep_testkit::churn::{Churn, ChurnSpec};
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    source.client().await?.run::<()>("SET audit:kept v").await?;
    let dir = tempfile::tempdir()?;
    let args = common::sync_args(&source.url(), &[&target.url()], dir.path(), &[]);
    let sync = Lockstep::start(&args, &[], &dir.path().join("sync.log"))?;
    sync.wait_log("phase=\"incremental\"", Duration::from_secs(30))
        .await?;

    let config = dir.path().join("audits.toml");
    std::fs::write(
        &config,
        format!(
            "history = \"history.db\"\n[[pair]]\nname = \"live\"\nsource = \"{}\"\n\
             target = \"{}\"\ninterval_secs = 60\nrounds = 3\nround_pause_ms = 500\n\
             keys_per_second = 20000\n",
            source.url(),
            target.url()
        ),
    )?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let spec = ChurnSpec::new(23).rate(300.0).duration(None);
    let client = source.redis_client()?;
    let churn = tokio::spawn(async move {
        Churn::run_until(&client, &spec, async {
            let _ = stopped.await;
        })
        .await
    });
    wait_until("the churn writes keys", Duration::from_secs(20), || {
        let source = source.redis_client();
        async move {
            let mut conn = source?.get_multiplexed_async_connection().await?;
            let keys: u64 = redis::cmd("DBSIZE").query_async(&mut conn).await?;
            Ok(if keys > 50 {
                Ok(())
            } else {
                Err(format!("{keys} keys"))
            })
        }
    })
    .await?;
    let (code, text) = once_blocking(&config).await?;
    assert_eq!(code, Some(0), "a live, lagging but equal pair: {text}");

    target
        .client()
        .await?
        .run::<()>("SET audit:kept corrupt")
        .await?;
    for _ in 0..2 {
        let (code, text) = once_blocking(&config).await?;
        assert_eq!(code, Some(1), "{text}");
    }
    let _ = stop.send(());
    let report = churn.await??;
    assert!(report.ops > 100, "{report:?}");
    let history = history_json(&config)?;
    let keys = history["differing_keys"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let persistent: Vec<&serde_json::Value> =
        keys.iter().filter(|k| k["persistent"] == true).collect();
    assert_eq!(
        persistent.len(),
        1,
        "only the corrupted key persists: {history}"
    );
    assert_eq!(persistent[0]["key"], "audit:kept", "{history}");
    drop(sync);
    Ok(())
}

/// Gentle on production: a read-only ACL user (`+@read +@connection -@scripting`, as
/// verify documents) is enough to audit, and its password stays out of the output.
#[tokio::test]
async fn a_read_only_acl_user_can_audit() -> anyhow::Result<()> {
    let (source, target) = (
        RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?,
        RedisServer::start(ServerConfig::new(RedisVersion::V8_2)).await?,
    );
    for server in [&source, &target] {
        let mut conn = server.client().await?;
        conn.run::<()>("SET user:1 a").await?;
        conn.run::<()>("RPUSH list a b").await?;
        redis::cmd("ACL")
            .arg(&["SETUSER", "auditor", "on", ">audit-secret", "~*"])
            .arg(&["+@read", "+@connection", "-@scripting"])
            .query_async::<()>(&mut conn)
            .await?;
    }
    let dir = tempfile::tempdir()?;
    let url = |s: &RedisServer| format!("redis://auditor:audit-secret@127.0.0.1:{}", s.port());
    let config = dir.path().join("audits.toml");
    std::fs::write(
        &config,
        format!(
            "history = \"h.db\"\n[[pair]]\nname = \"ro\"\nsource = \"{}\"\ntarget = \"{}\"\n\
             interval_secs = 60\n",
            url(&source),
            url(&target)
        ),
    )?;
    let (code, text) = once(&config);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("CONSISTENT") && !text.contains("audit-secret"),
        "{text}"
    );
    target.client().await?.run::<()>("SET user:1 b").await?;
    let (code, text) = once(&config);
    assert_eq!(code, Some(1), "{text}");
    Ok(())
}

/// `rotate_sample`: four runs at rate 1/4 compare every key once, and the rotation
/// goes on from the history (each --once run is a new process).
#[tokio::test]
async fn a_rotating_sample_covers_every_key_over_its_windows() -> anyhow::Result<()> {
    let (source, target) = equal_pair().await?;
    let dir = tempfile::tempdir()?;
    let extra = "mode = \"sample\"\nsample_rate = 0.25\nrotate_sample = true";
    let config = write_config(
        dir.path(),
        &[pair("rot", &source.url(), target.port(), extra)],
    )?;
    for _ in 0..4 {
        let (code, text) = once(&config);
        assert_eq!(code, Some(3), "{text}");
    }
    let history = history_json(&config)?;
    let runs = history["runs"].as_array().cloned().unwrap_or_default();
    let windows: Vec<u64> = runs
        .iter()
        .filter_map(|r| r["sample_window"].as_u64())
        .collect();
    assert_eq!(windows, [0, 1, 2, 3], "{history}");
    let compared: u64 = runs
        .iter()
        .filter_map(|r| r["keys_compared"].as_u64())
        .sum();
    assert_eq!(compared, 201, "the 201 keys, each once: {history}");
    assert!(
        runs.iter().all(|r| r["statement"]["sentence"].is_string()),
        "{history}"
    );
    Ok(())
}

/// A signal during an audit abandons it: exit 0, and nothing of it is recorded.
#[tokio::test]
async fn a_signal_during_an_audit_abandons_it_and_exits_0() -> anyhow::Result<()> {
    let (source, target) = equal_pair().await?;
    let dir = tempfile::tempdir()?;
    // 5000 keys more at 500 keys/s: an audit of about 10 s (the limit lets one SCAN
    // batch of 1000 keys through at once, then spaces the next ones).
    let mut pipe = redis::pipe();
    for i in 0..5000 {
        pipe.cmd("SET").arg(format!("bulk:{i}")).arg(i).ignore();
    }
    pipe.query_async::<()>(&mut source.client().await?).await?;
    pipe.query_async::<()>(&mut target.client().await?).await?;
    let slow = pair(
        "slow",
        &source.url(),
        target.port(),
        "keys_per_second = 500",
    );
    let config = write_config(dir.path(), &[slow])?;
    let args = common::strings(&["audit", "--config", &config.to_string_lossy()]);
    let mut daemon = Lockstep::start(&args, &[], &dir.path().join("daemon.log"))?;
    daemon
        .wait_log("audit `slow`: started", Duration::from_secs(20))
        .await?;
    daemon.signal("TERM")?;
    assert_eq!(
        daemon.exit_code(Duration::from_secs(20)).await?,
        Some(0),
        "{}",
        daemon.log_text()
    );
    let log = daemon.log_text();
    assert!(
        log.contains("the audit of `slow` in progress was abandoned"),
        "{log}"
    );
    assert_eq!(
        run_ids(&config),
        Vec::<u64>::new(),
        "nothing recorded: {log}"
    );
    Ok(())
}

/// A pair synced with a database mapping and a renamed prefix: the audit given the
/// same `map_db` and `rename_prefix` finds it consistent, and without them it does not.
#[tokio::test]
async fn once_audits_a_mapped_and_renamed_pair() -> anyhow::Result<()> {
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let target =
        RedisServer::start(ServerConfig::new(RedisVersion::V8_2).auth(Auth::password())).await?;
    let (mut s, mut t) = (redis::pipe(), redis::pipe());
    s.cmd("SELECT").arg(3).ignore();
    for i in 0..100 {
        s.cmd("SET").arg(format!("user:{i}")).arg(i).ignore();
        t.cmd("SET").arg(format!("u:{i}")).arg(i).ignore();
    }
    for p in [&mut s, &mut t] {
        p.cmd("RPUSH").arg("list").arg("a").arg("b").ignore();
        p.cmd("EXPIRE").arg("list").arg(3600).ignore();
    }
    s.query_async::<()>(&mut source.client().await?).await?;
    t.query_async::<()>(&mut target.client().await?).await?;
    let dir = tempfile::tempdir()?;
    let mapped = pair(
        "mapped",
        &source.url(),
        target.port(),
        "map_db = [\"3:0\"]\nrename_prefix = [\"user:=u:\"]",
    );
    let config = write_config(dir.path(), &[mapped])?;
    let (code, text) = once(&config);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("audit `mapped`: CONSISTENT"), "{text}");
    let unmapped = pair(
        "unmapped",
        &source.url(),
        target.port(),
        "map_db = [\"3:0\"]",
    );
    let config = write_config(dir.path(), &[unmapped])?;
    let (code, text) = once(&config);
    assert_eq!(code, Some(1), "{text}");
    Ok(())
}

/// A pair synced with declarative rules (a regex rename, a TTL cap, a dropped hash
/// field, a type left out): the audit given the same keys finds it consistent, and
/// without them it does not.
#[tokio::test]
async fn once_audits_a_pair_synced_with_declarative_rules() -> anyhow::Result<()> {
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let target =
        RedisServer::start(ServerConfig::new(RedisVersion::V8_2).auth(Auth::password())).await?;
    let (mut s, mut t) = (redis::pipe(), redis::pipe());
    for i in 0..100 {
        s.cmd("SET").arg(format!("user:{i}")).arg(i).ignore();
        s.cmd("EXPIRE")
            .arg(format!("user:{i}"))
            .arg(86_400)
            .ignore();
        t.cmd("SET").arg(format!("u:{i}")).arg(i).ignore();
        t.cmd("EXPIRE").arg(format!("u:{i}")).arg(3600).ignore();
        s.cmd("HSET")
            .arg(format!("h:{i}"))
            .arg("f")
            .arg(i)
            .arg("ssn")
            .arg(1)
            .ignore();
        t.cmd("HSET").arg(format!("h:{i}")).arg("f").arg(i).ignore();
    }
    s.cmd("XADD")
        .arg("events")
        .arg("*")
        .arg("f")
        .arg(1)
        .ignore();
    s.query_async::<()>(&mut source.client().await?).await?;
    t.query_async::<()>(&mut target.client().await?).await?;
    let dir = tempfile::tempdir()?;
    let rules = "rename_regex = [[\"^user:(\\\\d+)$\", \"u:$1\"]]\nttl_cap = \"1h\"\n\
                 drop_hash_field = [\"ssn\"]\nexclude_types = [\"stream\"]";
    let ruled = pair("ruled", &source.url(), target.port(), rules);
    let config = write_config(dir.path(), &[ruled])?;
    let (code, text) = once(&config);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("audit `ruled`: CONSISTENT"), "{text}");
    let without_cap = rules.replace("ttl_cap = \"1h\"\n", "");
    let plain = pair("plain", &source.url(), target.port(), &without_cap);
    let config = write_config(dir.path(), &[plain])?;
    let (code, text) = once(&config);
    assert_eq!(code, Some(1), "the expiries differ without the cap: {text}");
    Ok(())
}
