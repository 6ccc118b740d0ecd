//! The testkit's single-server life cycle on every version: start, answer, persistence
//! across restart, kill -9, SIGSTOP/SIGCONT, auth variants, TLS, and no process left.

use std::time::{Duration, Instant};

use lockstep_testkit::server::Persistence;
use lockstep_testkit::Run;
use lockstep_testkit::{Auth, RedisServer, RedisVersion, ServerConfig, TlsMaterial};

fn process_alive(pid: u32) -> bool {
    // A zombie is not alive for our purpose; /proc/<pid>/stat says 'Z'.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.contains(") Z "),
        Err(_) => false,
    }
}

#[tokio::test]
async fn each_version_starts_reports_its_version_and_leaves_no_process() -> anyhow::Result<()> {
    for version in RedisVersion::WITH_VALKEY {
        let server = RedisServer::start(ServerConfig::new(version)).await?;
        let info = server.info("server").await?;
        let field = if version.is_valkey() {
            // A Valkey keeps redis_version at the Redis it forked from.
            assert_eq!(info.get("redis_version"), Some("7.2.4"), "{version}");
            "valkey_version"
        } else {
            "redis_version"
        };
        assert_eq!(info.get(field), Some(version.full_version()), "{version}");
        let pid = server.pid().expect("running");
        assert!(process_alive(pid));
        drop(server);
        assert!(
            !process_alive(pid),
            "redis-server {version} pid {pid} survived drop"
        );
    }
    Ok(())
}

#[tokio::test]
async fn restart_keeps_data_with_rdb_and_with_aof() -> anyhow::Result<()> {
    for (version, persistence) in [
        (RedisVersion::V6_2, Persistence::Rdb),
        (RedisVersion::V7_0, Persistence::Aof),
        (RedisVersion::V8_2, Persistence::Aof),
        (RedisVersion::Valkey8_1, Persistence::Rdb),
        (RedisVersion::Valkey8_1, Persistence::Aof),
    ] {
        let mut server =
            RedisServer::start(ServerConfig::new(version).persistence(persistence)).await?;
        let port = server.port();
        let mut conn = server.client().await?;
        conn.run::<()>("SET k v").await?;
        server.restart().await?;
        assert_eq!(server.port(), port, "restart keeps the port");
        let mut conn = server.client().await?;
        let value: Option<String> = conn.run("GET k").await?;
        assert_eq!(
            value.as_deref(),
            Some("v"),
            "{version} {persistence:?} lost data over restart"
        );
    }
    Ok(())
}

#[tokio::test]
async fn without_persistence_a_kill9_and_start_comes_back_empty() -> anyhow::Result<()> {
    let mut server = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let mut conn = server.client().await?;
    conn.run::<()>("SET k v").await?;
    let pid = server.pid().expect("running");
    server.kill9();
    assert!(!process_alive(pid));
    assert!(
        server.client().await.is_err() || {
            // A connection may be accepted by nobody: a command must fail.
            let mut c = server.client().await?;
            redis::cmd("PING")
                .query_async::<String>(&mut c)
                .await
                .is_err()
        }
    );
    server.start_again().await?;
    let mut conn = server.client().await?;
    let size: i64 = conn.run("DBSIZE").await?;
    assert_eq!(size, 0);
    Ok(())
}

#[tokio::test]
async fn pause_stops_answers_and_resume_brings_them_back() -> anyhow::Result<()> {
    let server = RedisServer::start(ServerConfig::new(RedisVersion::V8_2)).await?;
    let mut conn = server.client().await?;
    server.pause();
    let started = Instant::now();
    let answer = tokio::time::timeout(
        Duration::from_millis(500),
        redis::cmd("PING").query_async::<String>(&mut conn),
    )
    .await;
    assert!(
        !matches!(answer, Ok(Ok(_))),
        "a SIGSTOPped server answered PING: {answer:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(500));
    server.resume();
    let mut conn = server.client().await?;
    let pong: String = conn.run("PING").await?;
    assert_eq!(pong, "PONG");
    Ok(())
}

#[tokio::test]
async fn password_and_acl_user_variants_refuse_anonymous_clients() -> anyhow::Result<()> {
    for version in RedisVersion::WITH_VALKEY {
        for auth in [Auth::password(), Auth::acl_user()] {
            let server = RedisServer::start(ServerConfig::new(version).auth(auth.clone())).await?;
            let mut conn = server.client().await?;
            let who: String = conn.run("ACL WHOAMI").await?;
            let expected = match &auth {
                Auth::AclUser { user, .. } => user.as_str(),
                _ => "default",
            };
            assert_eq!(who, expected);
            let anonymous = redis::Client::open(format!("redis://127.0.0.1:{}", server.port()))?;
            let mut anon = anonymous.get_multiplexed_async_connection().await?;
            let refused = redis::cmd("GET")
                .arg("x")
                .query_async::<Option<String>>(&mut anon)
                .await;
            let err = refused.expect_err("an unauthenticated client was served");
            assert!(
                err.to_string().contains("NOAUTH") || err.to_string().contains("NOPERM"),
                "{err}"
            );
        }
    }
    Ok(())
}

#[tokio::test]
async fn tls_server_speaks_rediss_and_refuses_plaintext() -> anyhow::Result<()> {
    let tls = std::sync::Arc::new(TlsMaterial::generate()?);
    let server = RedisServer::start(
        ServerConfig::new(RedisVersion::V7_0)
            .tls(tls)
            .auth(Auth::password()),
    )
    .await?;
    assert!(server.url().starts_with("rediss://"));
    let mut conn = server.client().await?;
    conn.run_args::<()>(("SET", "k", "over tls")).await?;
    let value: String = conn.run("GET k").await?;
    assert_eq!(value, "over tls");
    let plain = redis::Client::open(format!(
        "redis://:lockstep-test-pass@127.0.0.1:{}",
        server.port()
    ))?;
    let result = tokio::time::timeout(Duration::from_secs(3), async {
        let mut c = plain.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut c).await
    })
    .await;
    assert!(
        !matches!(result, Ok(Ok(_))),
        "a plaintext client was answered on a TLS port"
    );
    Ok(())
}

#[tokio::test]
async fn tls_on_a_build_without_tls_is_a_clear_error() -> anyhow::Result<()> {
    let tls = std::sync::Arc::new(TlsMaterial::generate()?);
    let err = RedisServer::start(ServerConfig::new(RedisVersion::V6_2).tls(tls))
        .await
        .expect_err("6.2 has no TLS");
    let text = format!("{err:#}");
    assert!(text.contains("TLS"), "{text}");
    Ok(())
}

#[test]
fn a_missing_version_says_how_to_install_it() {
    // Point the 8.2 lookup at a file that does not exist: the error names the fix.
    let err = RedisVersion::V8_2
        .server_binary_with(Some("/nonexistent/redis-server".into()))
        .expect_err("missing binary");
    assert!(format!("{err}").contains("LOCKSTEP_REDIS_8_2"), "{err}");
}

#[tokio::test]
async fn run_answers_typed_and_a_failed_command_names_itself_and_the_server() -> anyhow::Result<()>
{
    let server = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    server.run::<()>("SET k v EX 100").await?;
    let mut conn = server.client().await?;
    conn.run_args::<()>(("SET", &b"bin\xff"[..], &b"\x00\x01"[..]))
        .await?;
    let value: Vec<u8> = conn.run_args(("GET", &b"bin\xff"[..])).await?;
    assert_eq!(value, b"\x00\x01");
    assert!((1..=100).contains(&server.run::<i64>("TTL k").await?));
    let err = server
        .run::<()>("INCR k")
        .await
        .expect_err("not an integer");
    let text = format!("{err:#}");
    assert!(text.contains("`INCR k` failed"), "{text}");
    assert!(text.contains(&format!("port {}", server.port())), "{text}");
    Ok(())
}
