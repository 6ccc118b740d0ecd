//! The processes and links of one explorer episode: the source (a replica set when
//! the plan fails over), the target, a FaultProxy in front of each for the faults and
//! one for the workload, and the `lockstep sync` child process with its log. It
//! starts them from the plan, and starts, kills and watches the child; it decides
//! nothing about the episode (the schedule does) and judges nothing (the episode,
//! checker and invariants do), and it must never reach the sync's state other than
//! as a user would (its process, its log, its `/status`).

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Instant;

use anyhow::Context;
use lockstep_testkit::{Auth, FaultProxy, RedisServer, ReplicaSet, ServerConfig};

use super::invariants;
use super::schedule::EpisodePlan;
use super::shared::DATABASES;

/// The processes and links of one episode.
pub struct World {
    /// The source: a primary, and a replica when the plan fails over.
    pub sources: ReplicaSet,
    /// In front of the source for the workload and the clock (never faulted, moved
    /// to the new primary by a failover, as a virtual IP would).
    pub load_proxy: FaultProxy,
    pub target: RedisServer,
    pub source_proxy: FaultProxy,
    pub target_proxy: FaultProxy,
    pub flows_dropped_at: Option<Instant>,
    /// When `lockstep sync` was first started, in unix ms (the TTL rules' earliest
    /// clock).
    pub sync_started_ms: i64,
    sync: Option<Child>,
    sync_args: Vec<String>,
    source_password: Option<String>,
    pub status_port: u16,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl World {
    pub async fn start(plan: &EpisodePlan) -> anyhow::Result<World> {
        let databases = DATABASES.to_string();
        let mut source_config = ServerConfig::new(plan.pair.source)
            .persistence(plan.source_persistence)
            .set("databases", &databases)
            .set("repl-diskless-sync", "yes")
            .set("repl-diskless-sync-delay", "0");
        if let Some(password) = &plan.source_password {
            source_config = source_config.auth(Auth::Password(password.clone()));
        }
        let target_config = ServerConfig::new(plan.pair.target)
            .persistence(plan.target_persistence)
            .set("databases", &databases);
        let sources = ReplicaSet::start(source_config, plan.source_replicas)
            .await
            .context("starting the source")?;
        let target = RedisServer::start(target_config)
            .await
            .context("starting the target")?;
        let source_proxy = FaultProxy::start(sources.primary().addr()).await?;
        let load_proxy = FaultProxy::start(sources.primary().addr()).await?;
        let target_proxy = FaultProxy::start(target.addr()).await?;
        let dir = tempfile::tempdir()?;
        let status_port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut sync_args: Vec<String> = ["sync", "--skip-precheck", "--retry-minutes=30"]
            .map(str::to_owned)
            .to_vec();
        sync_args.push(format!(
            "--source=redis://127.0.0.1:{}",
            source_proxy.port()
        ));
        sync_args.push(format!(
            "--target=redis://127.0.0.1:{}",
            target_proxy.port()
        ));
        sync_args.push(format!(
            "--checkpoint-dir={}",
            dir.path().join("cp").display()
        ));
        sync_args.push(format!("--status-addr=127.0.0.1:{status_port}"));
        sync_args.push(format!("--full-keys-per-sec={}", plan.copy_keys_per_sec));
        sync_args.extend(plan.options.flags());
        Ok(World {
            sources,
            load_proxy,
            target,
            source_proxy,
            target_proxy,
            flows_dropped_at: None,
            sync_started_ms: 0,
            sync: None,
            sync_args,
            source_password: plan.source_password.clone(),
            status_port,
            log: dir.path().join("lockstep.log"),
            _dir: dir,
        })
    }

    /// The source's primary now.
    pub fn source(&self) -> &RedisServer {
        self.sources.primary()
    }

    pub fn source_mut(&mut self) -> &mut RedisServer {
        let primary = self.sources.primary_index();
        &mut self.sources.servers[primary]
    }

    /// A client of the source through the load proxy (it follows a failover).
    pub fn load_client(&self) -> anyhow::Result<redis::Client> {
        Ok(redis::Client::open(self.load_proxy.url_for(self.source()))?)
    }

    /// Starts `lockstep sync` (this binary), its output appended to the log.
    pub fn start_sync(&mut self) -> anyhow::Result<()> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut command = Command::new(std::env::current_exe()?);
        command
            .args(&self.sync_args)
            .env("RUST_LOG", "lockstep=info,lockstep_sync=info,warn")
            .env_remove("LOCKSTEP_SOURCE_PASSWORD")
            .env_remove("LOCKSTEP_TARGET_PASSWORD")
            .stdout(file.try_clone()?)
            .stderr(file);
        if let Some(password) = &self.source_password {
            command.env("LOCKSTEP_SOURCE_PASSWORD", password);
        }
        if self.sync_started_ms == 0 {
            self.sync_started_ms = super::shared::unix_ms();
        }
        self.sync = Some(command.spawn().context("starting lockstep sync")?);
        Ok(())
    }

    /// kill -9 of the sync.
    pub fn kill_sync(&mut self) {
        if let Some(mut child) = self.sync.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub async fn sync_phase(&self) -> String {
        invariants::phase(self.status_port).await
    }

    /// The sync's exit code if it has ended on its own.
    pub fn sync_exited(&mut self) -> Option<String> {
        self.sync_exit().map(|status| status.to_string())
    }

    /// The sync's exit status if it has ended on its own.
    pub fn sync_exit(&mut self) -> Option<std::process::ExitStatus> {
        self.sync.as_mut()?.try_wait().ok().flatten()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.log_text();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n    ")
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.kill_sync();
    }
}
