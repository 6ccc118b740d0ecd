//! The replica link against real sources of every version (Valkey 8.1 too): handshake, full resync
//! (disk-based on 6.2, diskless on 7.0+), the command stream with exact offsets, ACKs
//! the source sees, partial resync from an offset, and the errors a user can cause.

use std::time::Duration;

use lockstep_sync::endpoint::Endpoint;
use lockstep_sync::link::{LinkError, LinkOptions, PsyncReply, ReplicaLink};
use lockstep_sync::rdb::{parse_all, Item, ParseOptions};
use lockstep_sync::resp::Entry;
use lockstep_testkit::{Auth, RedisServer, RedisVersion, ServerConfig};

async fn set(server: &RedisServer, key: &str, value: &str) -> anyhow::Result<()> {
    let mut conn = server.client().await?;
    redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query_async::<()>(&mut conn)
        .await?;
    Ok(())
}

#[tokio::test]
async fn full_resync_then_stream_then_partial_resync_on_every_version() -> anyhow::Result<()> {
    for version in RedisVersion::WITH_VALKEY {
        let source = RedisServer::start(ServerConfig::new(version).auth(Auth::acl_user())).await?;
        set(&source, "before", "snapshot").await?;
        let endpoint = Endpoint::parse(&source.url())?;
        let options = LinkOptions {
            listening_port: 4242,
            ..LinkOptions::default()
        };

        let mut link = ReplicaLink::connect(&endpoint, &options).await?;
        let PsyncReply::FullResync { replid, offset } = link.psync(None).await? else {
            panic!("{version}: a first PSYNC must be a full resync");
        };
        let mut transfer = link.rdb_transfer().await?;
        assert_eq!(
            transfer.is_diskless(),
            version >= RedisVersion::V7_0,
            "{version}"
        );
        let mut rdb = Vec::new();
        while let Some(chunk) = link.next_rdb_chunk(&mut transfer).await? {
            rdb.extend_from_slice(&chunk);
        }
        // The newest format the source writes (a Valkey: RDB 11, with no `REPLCONF
        // version` sent).
        let header = format!("REDIS{:04}", version.rdb_version());
        assert_eq!(
            String::from_utf8_lossy(&rdb[..header.len().min(rdb.len())]),
            header,
            "{version}: the snapshot's RDB version"
        );
        let items = parse_all(&rdb[..], ParseOptions::default())?;
        let keys: Vec<&[u8]> = items
            .iter()
            .filter_map(|item| match item {
                Item::Key(key) => Some(&key.meta.key[..]),
                _ => None,
            })
            .collect();
        assert_eq!(
            keys,
            vec![b"before".as_slice()],
            "{version}: the snapshot holds the key written before"
        );

        let (mut stream, mut acker) = link.into_stream(offset);
        acker.ack(offset).await?;
        set(&source, "after", "stream").await?;
        // SELECT, then SET: the offsets the stream reports must match the source's.
        // After a diskless transfer the source starts the stream on an ACK that comes
        // after it has seen the transfer end, so keep ACKing once a second, as a
        // replica does.
        let mut seen_set = false;
        let mut waits = 0;
        while !seen_set {
            match tokio::time::timeout(Duration::from_secs(1), stream.next()).await {
                Ok(next) => {
                    if let (Entry::Command(cmd), _) = next?.expect("stream open") {
                        seen_set = cmd.is("SET") && cmd.args()[0] == "after";
                    }
                }
                Err(_) => {
                    waits += 1;
                    assert!(waits < 10, "{version}: no SET in the stream after 10 s");
                    acker.ack(offset).await?;
                }
            }
        }
        let ours = stream.offset();
        let info = source.info("replication").await?;
        assert_eq!(
            info.int("master_repl_offset")?,
            ours,
            "{version}: our offset differs from the source's"
        );
        acker.ack(ours).await?;
        // The source sees our ACK in its replica list.
        let wanted = format!("port=4242,state=online,offset={ours}");
        lockstep_testkit::topology::wait_until(
            "the source sees our ACK",
            Duration::from_secs(5),
            || async {
                let info = source.info("replication").await?;
                let line = info.get("slave0").unwrap_or_default().to_owned();
                Ok(if line.contains(&wanted) {
                    Ok(())
                } else {
                    Err(line)
                })
            },
        )
        .await?;
        drop(stream);
        drop(acker);

        // Resume from where we stood: the source continues, and sends only what is new.
        set(&source, "while-away", "x").await?;
        let mut link = ReplicaLink::connect(&endpoint, &options).await?;
        let reply = link.psync(Some((&replid, ours))).await?;
        assert!(
            matches!(reply, PsyncReply::Continue { .. }),
            "{version}: {reply:?}"
        );
        let (mut stream, _acker) = link.into_stream(ours);
        let mut first_command = None;
        while first_command.is_none() {
            let (entry, _) = tokio::time::timeout(Duration::from_secs(10), stream.next())
                .await??
                .expect("open");
            if let Entry::Command(cmd) = entry {
                if !cmd.is("PING") && !cmd.is("SELECT") {
                    first_command = Some(cmd);
                }
            }
        }
        let cmd = first_command.expect("a command");
        assert!(
            cmd.is("SET") && cmd.args()[0] == "while-away",
            "{version}: resumed at {:?}",
            cmd.argv
        );
    }
    Ok(())
}

#[tokio::test]
async fn wrong_password_is_a_clear_permanent_error() -> anyhow::Result<()> {
    let source =
        RedisServer::start(ServerConfig::new(RedisVersion::V7_0).auth(Auth::password())).await?;
    let endpoint = Endpoint::parse(&format!("redis://:wrong@127.0.0.1:{}", source.port()))?;
    let err = ReplicaLink::connect(&endpoint, &LinkOptions::default())
        .await
        .err()
        .expect("refused");
    assert!(matches!(err, LinkError::Auth { .. }), "{err}");
    assert!(!err.is_transient());
    assert!(err.to_string().contains("password"), "{err}");
    assert!(
        !err.to_string().contains("wrong@"),
        "the password leaked: {err}"
    );

    let no_password = Endpoint::parse(&format!("redis://127.0.0.1:{}", source.port()))?;
    let mut link = ReplicaLink::connect(&no_password, &LinkOptions::default()).await;
    if let Ok(link) = link.as_mut() {
        let err = link.psync(None).await.expect_err("PSYNC without AUTH");
        assert!(!err.is_transient(), "{err}");
        assert!(err.to_string().contains("password"), "{err}");
    }
    Ok(())
}

#[tokio::test]
async fn an_account_without_psync_and_sync_gets_an_error_naming_the_fix() -> anyhow::Result<()> {
    let source = RedisServer::start(
        ServerConfig::new(RedisVersion::V8_2).set("user", "reader on >pw ~* &* +@all -psync -sync"),
    )
    .await?;
    let endpoint = Endpoint::parse(&format!("redis://reader:pw@127.0.0.1:{}", source.port()))?;
    let mut link = ReplicaLink::connect(&endpoint, &LinkOptions::default()).await?;
    let err = link.psync(None).await.expect_err("no permission");
    assert!(matches!(err, LinkError::Refused { .. }), "{err}");
    assert!(err.to_string().contains("+psync"), "{err}");
    Ok(())
}

#[tokio::test]
async fn an_unreachable_source_is_a_transient_error_naming_it() -> anyhow::Result<()> {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.local_addr()?.port()
    };
    let endpoint = Endpoint::parse(&format!("redis://127.0.0.1:{port}"))?;
    let err = ReplicaLink::connect(&endpoint, &LinkOptions::default())
        .await
        .err()
        .expect("nothing listens");
    assert!(err.is_transient());
    assert!(err.to_string().contains(&port.to_string()), "{err}");
    Ok(())
}
