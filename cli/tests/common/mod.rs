//! Helpers of the `lockstep` binary's tests: run it as a child process with its
//! stderr in a log file, send it signals, and a counted writer on a source (INCR +
//! RPUSH) whose final count the target must reach exactly.
//!
//! The binary is driven as a user would drive it (arguments, environment, signals);
//! these helpers must never reach into its state, and the counted writer's count is
//! read from the target, never from the binary's output.

#![allow(dead_code)] // each test file uses a part

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use lockstep_testkit::topology::wait_until;
use lockstep_testkit::RedisServer;
use lockstep_testkit::Run;

/// A running `lockstep` process.
pub struct Lockstep {
    pub child: Child,
    pub log: PathBuf,
}

impl Lockstep {
    /// Starts `lockstep <args>` with `env`, appending its stdout and stderr to `log`.
    pub fn start(args: &[String], env: &[(&str, &str)], log: &Path) -> anyhow::Result<Lockstep> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let mut command = Command::new(env!("CARGO_BIN_EXE_lockstep"));
        command
            .args(args)
            .env("RUST_LOG", "lockstep=info,lockstep_sync=info,warn")
            .env_remove("LOCKSTEP_SOURCE_PASSWORD")
            .env_remove("LOCKSTEP_TARGET_PASSWORD")
            .stdout(file.try_clone()?)
            .stderr(file);
        for (key, value) in env {
            command.env(key, value);
        }
        Ok(Lockstep {
            child: command.spawn()?,
            log: log.to_owned(),
        })
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log holds `needle` (e.g. `phase="incremental"`).
    pub async fn wait_log(&self, needle: &str, timeout: Duration) -> anyhow::Result<()> {
        wait_until(&format!("{needle} in the log"), timeout, || {
            let text = self.log_text();
            async move {
                Ok(match text.contains(needle) {
                    true => Ok(()),
                    false => Err(text),
                })
            }
        })
        .await
    }

    /// Sends `signal` (e.g. "TERM", "INT").
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()?;
        anyhow::ensure!(status.success(), "kill -{signal} failed");
        Ok(())
    }

    /// Waits for the exit code, at most `timeout`.
    pub async fn exit_code(&mut self, timeout: Duration) -> anyhow::Result<Option<i32>> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status.code());
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "lockstep did not exit within {timeout:?}; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Lockstep {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Strings from a list of &str.
pub fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

/// `sync --source S --target T... --checkpoint-dir DIR` and `extra`.
pub fn sync_args(source: &str, targets: &[&str], dir: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = strings(&["sync", "--source", source]);
    for target in targets {
        args.extend(strings(&["--target", target]));
    }
    args.extend(strings(&["--checkpoint-dir", &dir.to_string_lossy()]));
    args.extend(strings(extra));
    args
}

/// A free TCP port on 127.0.0.1 (bound and released).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Writes INCR counter + RPUSH events to `source` until stopped; returns how many.
pub struct Writer {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<u64>>,
}

impl Writer {
    pub fn start(source: &RedisServer) -> anyhow::Result<Writer> {
        let client = source.redis_client()?;
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut conn = client
                .get_multiplexed_async_connection_with_config(
                    &lockstep_testkit::server::client_config(),
                )
                .await?;
            let mut sent = 0u64;
            while !*stopped.borrow_and_update() {
                let mut pipe = redis::pipe();
                for _ in 0..10 {
                    pipe.cmd("INCR").arg("counter").ignore();
                    pipe.cmd("RPUSH").arg("events").arg(sent).ignore();
                    sent += 1;
                }
                pipe.query_async::<()>(&mut conn).await?;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            anyhow::Ok(sent)
        });
        Ok(Writer { stop, task })
    }

    /// Stops writing; returns the count written.
    pub async fn stop(self) -> anyhow::Result<u64> {
        self.stop.send(true)?;
        self.task.await?
    }
}

/// Waits until `server`'s `counter` key is `want`.
pub async fn wait_counter(
    server: &RedisServer,
    want: u64,
    timeout: Duration,
) -> anyhow::Result<()> {
    let conn = server.client().await?;
    wait_until("the target caught up with the writer", timeout, || {
        let mut conn = conn.clone();
        async move {
            let counter: Option<u64> = conn.run("GET counter").await?;
            Ok(if counter == Some(want) {
                Ok(())
            } else {
                Err(format!("counter {counter:?} of {want}"))
            })
        }
    })
    .await
}

/// Asserts that verify finds `source` and `target` consistent.
pub async fn assert_equal(
    source: &RedisServer,
    target: &RedisServer,
    context: &str,
) -> anyhow::Result<()> {
    let report = lockstep_verify::compare(
        &source.redis_client()?,
        &target.redis_client()?,
        &lockstep_verify::CompareOptions::default(),
    )
    .await?;
    assert!(report.is_consistent(), "{context}: {report}");
    Ok(())
}
