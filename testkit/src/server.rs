//! One real `redis-server` process, owned by a test.
//!
//! [`RedisServer::start`] picks a free loopback port (and a free cluster bus port,
//! port + 10000), writes a `redis.conf` into a fresh temporary directory, starts the
//! binary of the requested [`RedisVersion`] and waits until it answers `PING`. The
//! process is killed when the value is dropped, also while a test panics; and since
//! every server is forked by one long-lived spawner thread with `PR_SET_PDEATHSIG`,
//! it also dies when the test process itself is killed. When a test panics, the tail
//! of each of its servers' logs is printed to stderr.
//!
//! Faults on the process itself live here too: [`RedisServer::kill9`],
//! [`RedisServer::pause`] / [`RedisServer::resume`] (SIGSTOP / SIGCONT) and
//! [`RedisServer::restart`] on the same port and directory, which reloads its RDB or
//! AOF when persistence is on.
//!
//! Every server of every test is one of these. It must never outlive its test (the
//! process dies with the value, or with the test process).

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use rand::Rng;
use redis::aio::MultiplexedConnection;

use crate::info::{self, Info};
use crate::tls::TlsMaterial;
use crate::version::RedisVersion;

/// How long a server may take to answer after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Lines of the log shown when a test fails.
const LOG_TAIL_LINES: usize = 40;

/// How long a test client waits for a reply before it fails the command.
/// redis-rs's default (500 ms) is shorter than a loaded 2-core CI machine's
/// occasional stall, which failed tests with "timed out" on commands that were
/// merely late. A test that means to see a frozen server fail bounds its wait
/// itself (`tokio::time::timeout`), so a longer default hides no fault.
pub const CLIENT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// The redis-rs connection settings of every test client.
pub fn client_config() -> redis::AsyncConnectionConfig {
    redis::AsyncConnectionConfig::new()
        .set_response_timeout(Some(CLIENT_RESPONSE_TIMEOUT))
        .set_connection_timeout(Some(CLIENT_RESPONSE_TIMEOUT))
}
/// Ports are drawn from [PORT_MIN, PORT_MAX); the cluster bus port (+10000) then stays
/// below Linux's ephemeral range (32768+), so outgoing connections never take it.
const PORT_MIN: u16 = 10_000;
const PORT_MAX: u16 = 22_000;

/// Who may connect, and how.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Auth {
    /// No password (the default user has `nopass`).
    #[default]
    None,
    /// `requirepass`: AUTH with a password for the default user.
    Password(String),
    /// An ACL user with all permissions; the default user is switched off.
    AclUser { user: String, password: String },
}

impl Auth {
    /// A password-protected variant with a fixed test password.
    pub fn password() -> Auth {
        Auth::Password("lockstep-test-pass".into())
    }

    /// An ACL-user variant with a fixed test user.
    pub fn acl_user() -> Auth {
        Auth::AclUser {
            user: "lockstep".into(),
            password: "lockstep-user-pass".into(),
        }
    }

    /// `user:pass@` for a URL, or "".
    pub fn url_userinfo(&self) -> String {
        match self {
            Auth::None => String::new(),
            Auth::Password(password) => format!(":{password}@"),
            Auth::AclUser { user, password } => format!("{user}:{password}@"),
        }
    }

    /// The config lines that set this auth on a server, and let its replicas log in to
    /// their primary with the same credentials.
    fn config_lines(&self) -> Vec<(String, String)> {
        match self {
            Auth::None => vec![],
            Auth::Password(password) => vec![
                ("requirepass".into(), password.clone()),
                ("masterauth".into(), password.clone()),
            ],
            Auth::AclUser { user, password } => vec![
                ("user".into(), format!("{user} on >{password} ~* &* +@all")),
                ("user".into(), "default off".into()),
                ("masteruser".into(), user.clone()),
                ("masterauth".into(), password.clone()),
            ],
        }
    }
}

/// Persistence of a server: what survives [`RedisServer::restart`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Persistence {
    /// No RDB save points, no AOF: a restart comes back empty.
    #[default]
    None,
    /// RDB snapshots (`save 1 1`, and on shutdown).
    Rdb,
    /// Append-only file with `appendfsync always`.
    Aof,
}

/// What to start: version, auth, TLS, persistence, cluster mode and any extra config.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub version: RedisVersion,
    pub auth: Auth,
    pub tls: Option<Arc<TlsMaterial>>,
    pub persistence: Persistence,
    pub cluster: bool,
    /// A fixed port; `None` picks a free one.
    pub port: Option<u16>,
    /// `replicaof` this address at start.
    pub replica_of: Option<SocketAddr>,
    /// Any other `redis.conf` directives, written after the testkit's own.
    pub extra: Vec<(String, String)>,
}

impl ServerConfig {
    /// A plain standalone server of `version`: no auth, no persistence.
    pub fn new(version: RedisVersion) -> ServerConfig {
        ServerConfig {
            version,
            auth: Auth::None,
            tls: None,
            persistence: Persistence::None,
            cluster: false,
            port: None,
            replica_of: None,
            extra: Vec::new(),
        }
    }

    pub fn auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }

    pub fn tls(mut self, tls: Arc<TlsMaterial>) -> Self {
        self.tls = Some(tls);
        self
    }

    pub fn persistence(mut self, persistence: Persistence) -> Self {
        self.persistence = persistence;
        self
    }

    pub fn cluster(mut self, on: bool) -> Self {
        self.cluster = on;
        self
    }

    pub fn replica_of(mut self, primary: SocketAddr) -> Self {
        self.replica_of = Some(primary);
        self
    }

    /// Adds a `redis.conf` directive (e.g. `("maxmemory", "10mb")`).
    pub fn set(mut self, name: &str, value: &str) -> Self {
        self.extra.push((name.to_owned(), value.to_owned()));
        self
    }

    /// The whole `redis.conf` for a server on `port` with its files in `dir`.
    fn render(&self, port: u16, dir: &Path) -> String {
        let mut lines: Vec<(String, String)> = vec![
            ("bind".into(), "127.0.0.1".into()),
            ("dir".into(), dir.display().to_string()),
            (
                "logfile".into(),
                dir.join("redis.log").display().to_string(),
            ),
            ("daemonize".into(), "no".into()),
            ("loglevel".into(), "notice".into()),
            ("dbfilename".into(), "dump.rdb".into()),
            ("databases".into(), "16".into()),
        ];
        match &self.tls {
            Some(tls) => {
                lines.push(("port".into(), "0".into()));
                lines.push(("tls-port".into(), port.to_string()));
                lines.extend(tls.server_config_lines());
            }
            None => lines.push(("port".into(), port.to_string())),
        }
        if self.version >= RedisVersion::V7_0 {
            lines.push(("enable-debug-command".into(), "yes".into()));
        }
        // A full sync starts at once instead of waiting 5 s for more replicas to
        // share a diskless transfer (tests do many full syncs); `set` overrides it.
        lines.push(("repl-diskless-sync-delay".into(), "0".into()));
        match self.persistence {
            Persistence::None => {
                lines.push(("save".into(), String::new()));
                lines.push(("appendonly".into(), "no".into()));
            }
            Persistence::Rdb => {
                lines.push(("save".into(), "1 1".into()));
                lines.push(("appendonly".into(), "no".into()));
            }
            Persistence::Aof => {
                lines.push(("save".into(), String::new()));
                lines.push(("appendonly".into(), "yes".into()));
                lines.push(("appendfsync".into(), "always".into()));
            }
        }
        if self.cluster {
            lines.push(("cluster-enabled".into(), "yes".into()));
            lines.push(("cluster-config-file".into(), "nodes.conf".into()));
            lines.push(("cluster-node-timeout".into(), "2000".into()));
            lines.push(("cluster-require-full-coverage".into(), "yes".into()));
        }
        if let Some(primary) = self.replica_of {
            lines.push((
                "replicaof".into(),
                format!("{} {}", primary.ip(), primary.port()),
            ));
        }
        lines.extend(self.auth.config_lines());
        lines.extend(self.extra.iter().cloned());
        let mut text = String::new();
        for (name, value) in lines {
            // `save ""` and `user name on >pw ...` need their own quoting rules: values
            // with spaces that are lists of words (save, user, replicaof,
            // rename-command) go raw.
            let raw_words = matches!(
                name.as_str(),
                "save" | "user" | "replicaof" | "client-output-buffer-limit" | "rename-command"
            );
            if raw_words && !value.is_empty() {
                text.push_str(&format!("{name} {value}\n"));
            } else {
                text.push_str(&format!("{name} {}\n", quote(&value)));
            }
        }
        text
    }
}

/// Quotes a config value the way redis.conf's parser reads it.
fn quote(value: &str) -> String {
    let mut out = String::from("\"");
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A running (or deliberately stopped) redis-server owned by a test.
pub struct RedisServer {
    config: ServerConfig,
    port: u16,
    dir: tempfile::TempDir,
    binary: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server and waits until it answers PING.
    pub async fn start(config: ServerConfig) -> anyhow::Result<RedisServer> {
        let binary = config.version.server_binary()?;
        if config.tls.is_some() && !config.version.has_tls() {
            bail!(
                "the Redis {} build the testkit installs has no TLS support; use Redis 7.0 \
                 (RedisVersion::V7_0) for TLS tests",
                config.version
            );
        }
        let mut dir = tempfile::Builder::new()
            .prefix(&format!("lockstep-redis-{}-", config.version))
            .tempdir()
            .context("creating a temporary directory for a redis-server")?;
        let fixed_port = config.port;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let port = match fixed_port {
                Some(port) => port,
                None => free_port_pair()?,
            };
            let mut server = RedisServer {
                config: config.clone(),
                port,
                dir,
                binary: binary.clone(),
                child: None,
            };
            match server.spawn_and_wait().await {
                Ok(()) => return Ok(server),
                Err(err) => {
                    let lost_port_race = server.log_tail(20).contains("Address already in use");
                    if lost_port_race && fixed_port.is_none() && attempts < 8 {
                        // Another test took the port between our check and the bind.
                        server.kill_now();
                        dir = std::mem::replace(&mut server.dir, tempfile::tempdir()?);
                        continue;
                    }
                    return Err(err);
                }
            }
        }
    }

    /// The TCP port clients connect to (the TLS port when TLS is on).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `redis://[user:pass@]127.0.0.1:port` (or `rediss://` with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.config.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!(
            "{scheme}://{}127.0.0.1:{}",
            self.config.auth.url_userinfo(),
            self.port
        )
    }

    /// The server's working directory (its RDB, AOF, nodes.conf and log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The path of its RDB file (`dump.rdb` in [`RedisServer::dir`]).
    pub fn rdb_path(&self) -> PathBuf {
        self.dir.path().join("dump.rdb")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    pub fn version(&self) -> RedisVersion {
        self.config.version
    }

    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// The OS process id, while the process runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A redis-rs client for this server (with its credentials and TLS roots).
    pub fn redis_client(&self) -> anyhow::Result<redis::Client> {
        match &self.config.tls {
            Some(tls) => tls.redis_client(&self.url()),
            None => {
                redis::Client::open(self.url()).with_context(|| format!("bad URL {}", self.url()))
            }
        }
    }

    /// A new async connection to this server.
    pub async fn client(&self) -> anyhow::Result<MultiplexedConnection> {
        let client = self.redis_client()?;
        client
            .get_multiplexed_async_connection_with_config(&client_config())
            .await
            .with_context(|| format!("connecting to redis {} at {}", self.version(), self.addr()))
    }

    /// `INFO section` (all sections when empty).
    pub async fn info(&self, section: &str) -> anyhow::Result<Info> {
        info::info(&mut self.client().await?, section).await
    }

    /// The last `lines` lines of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let Ok(file) = std::fs::File::open(self.log_path()) else {
            return format!("(no log at {})", self.log_path().display());
        };
        let all: Vec<String> = BufReader::new(file).lines().map_while(Result::ok).collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Kills the process with SIGKILL (no save, no goodbye to clients or replicas).
    pub fn kill9(&mut self) {
        self.kill_now();
    }

    /// Stops the process with SIGTERM and waits for it (it saves first when RDB
    /// persistence is on, and flushes the AOF).
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        signal(child.id(), libc::SIGCONT);
        signal(child.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if child.try_wait()?.is_some() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "redis-server {} did not stop within 20 s of SIGTERM; killed it",
                    self.addr()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Freezes the process (SIGSTOP): its sockets stay open but nothing is answered.
    pub fn pause(&self) {
        if let Some(pid) = self.pid() {
            signal(pid, libc::SIGSTOP);
        }
    }

    /// Thaws a paused process (SIGCONT).
    pub fn resume(&self) {
        if let Some(pid) = self.pid() {
            signal(pid, libc::SIGCONT);
        }
    }

    /// Starts the server again on the same port and directory (stopping it first if it
    /// runs). With persistence on, it reloads its RDB or AOF.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        self.spawn_and_wait().await
    }

    /// Starts a server that was killed or stopped, without stopping it first.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!(
                "redis-server {} is still running; use restart()",
                self.addr()
            );
        }
        self.spawn_and_wait().await
    }

    /// Waits until the server answers PING (and is not loading), or fails with its log.
    pub async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut last_error = String::from("no attempt");
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    bail!(
                        "redis-server {} ({}) exited with {status} while starting; log tail:\n{}",
                        self.version(),
                        self.addr(),
                        self.log_tail(LOG_TAIL_LINES)
                    );
                }
            }
            match self.ping().await {
                Ok(()) => return Ok(()),
                Err(err) => last_error = format!("{err:#}"),
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        bail!(
            "redis-server {} ({}) did not answer within {:?}: {last_error}; log tail:\n{}",
            self.version(),
            self.addr(),
            START_TIMEOUT,
            self.log_tail(LOG_TAIL_LINES)
        )
    }

    async fn ping(&self) -> anyhow::Result<()> {
        let mut conn = self.client().await?;
        let pong: String = redis::cmd("PING").query_async(&mut conn).await?;
        if pong != "PONG" {
            bail!("PING answered {pong:?}");
        }
        // A server loading its RDB answers PING but not data commands.
        let loading = info::info(&mut conn, "persistence").await?;
        if loading.get("loading") == Some("1") {
            bail!("still loading");
        }
        Ok(())
    }

    async fn spawn_and_wait(&mut self) -> anyhow::Result<()> {
        let conf_path = self.dir.path().join("redis.conf");
        std::fs::write(&conf_path, self.config.render(self.port, self.dir.path()))
            .with_context(|| format!("writing {}", conf_path.display()))?;
        let mut command = Command::new(&self.binary);
        command
            .arg(&conf_path)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = spawn_tied_to_this_process(command)
            .with_context(|| format!("starting {}", self.binary.display()))?;
        self.child = Some(child);
        self.wait_ready().await
    }

    fn kill_now(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), libc::SIGKILL);
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- redis-server {} at {} (dir {}), last {LOG_TAIL_LINES} log lines ---\n{}\n---",
                self.version(),
                self.addr(),
                self.dir.path().display(),
                self.log_tail(LOG_TAIL_LINES)
            );
        }
        self.kill_now();
    }
}

impl std::fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisServer")
            .field("version", &self.version())
            .field("addr", &self.addr())
            .field("pid", &self.pid())
            .finish()
    }
}

fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions; a stale pid only yields ESRCH.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// A port p such that p and p + 10000 (the cluster bus) are both free right now.
fn free_port_pair() -> anyhow::Result<u16> {
    let mut rng = rand::rng();
    for _ in 0..200 {
        let port = rng.random_range(PORT_MIN..PORT_MAX);
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 10_000) {
            return Ok(port);
        }
    }
    Err(anyhow!(
        "no free loopback port pair found in {PORT_MIN}..{PORT_MAX} after 200 tries"
    ))
}

type SpawnReply = mpsc::Sender<std::io::Result<Child>>;

/// Forks `command` from a thread that lives as long as the process, with the child
/// asked to die (SIGKILL) when that thread - and so this process - goes away.
/// PR_SET_PDEATHSIG fires when the *thread* that forked exits, so forking from a
/// tokio worker or blocking-pool thread would kill servers when the pool shrinks.
fn spawn_tied_to_this_process(command: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<(Command, SpawnReply)>>> = OnceLock::new();
    let sender = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<(Command, SpawnReply)>();
        std::thread::Builder::new()
            .name("testkit-spawner".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    // SAFETY: the closure runs between fork and exec and only calls
                    // async-signal-safe functions (prctl, getppid, _exit).
                    unsafe {
                        command.pre_exec(|| {
                            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                                return Err(std::io::Error::last_os_error());
                            }
                            Ok(())
                        });
                    }
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("the testkit spawner thread starts");
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    sender
        .lock()
        .map_err(|_| std::io::Error::other("testkit spawner lock poisoned"))?
        .send((command, reply_tx))
        .map_err(|_| std::io::Error::other("testkit spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| std::io::Error::other("testkit spawner thread dropped the request"))?
}
