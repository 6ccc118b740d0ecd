//! The target writer against a real server: every reply is checked, and an error
//! reply names the command, its key and the reply, whether it comes back at once, at
//! queue time inside a transaction, or inside an EXEC's array of replies; positions
//! advance only with answered commands.

use lockstep_sync::apply::{ApplyError, ApplyOptions, Position};
use lockstep_sync::conn::Conn;
use lockstep_sync::endpoint::Endpoint;
use lockstep_testkit::{RedisServer, RedisVersion, ServerConfig};

async fn writer(server: &RedisServer) -> anyhow::Result<Conn> {
    let endpoint = Endpoint::parse(&server.url())?;
    Ok(Conn::connect(&endpoint, ApplyOptions::default()).await?)
}

fn at(offset: i64) -> Option<Position> {
    Some(Position { offset, db: 0 })
}

fn rejected(err: ApplyError) -> (String, String, String) {
    match err {
        ApplyError::Rejected {
            command,
            key,
            reply,
            ..
        } => (command, key, reply),
        other => panic!("expected a refused command, got: {other}"),
    }
}

#[tokio::test]
async fn replies_advance_the_position_and_errors_name_the_command() -> anyhow::Result<()> {
    let server = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let mut writer = writer(&server).await?;

    // Plain commands and a transaction, all fine: the position is the last one's.
    writer.push(&["SET", "a", "1"], at(10)).await?;
    writer.push(&["MULTI"], None).await?;
    writer.push(&["INCR", "a"], None).await?;
    writer.push(&["RPUSH", "list", "x", "y"], None).await?;
    writer.push(&["EXEC"], at(20)).await?;
    writer.drain().await?;
    assert_eq!(writer.applied(), at(20));
    assert_eq!(writer.applied_commands(), 5);

    // An error inside the EXEC's replies names the queued command that failed (the
    // second of three), not the EXEC, and the position does not advance.
    writer.push(&["MULTI"], None).await?;
    writer.push(&["SET", "b", "2"], None).await?;
    writer.push(&["LPUSH", "a", "z"], None).await?;
    writer.push(&["SET", "c", "3"], None).await?;
    writer.push(&["EXEC"], at(30)).await?;
    let (command, key, reply) = rejected(writer.drain().await.expect_err("WRONGTYPE"));
    assert_eq!((command.as_str(), key.as_str()), ("LPUSH", "a"));
    assert!(reply.starts_with("WRONGTYPE"), "{reply}");
    assert_eq!(writer.applied(), at(20));

    // A fresh writer: an error at queue time names that command.
    let mut writer = self::writer(&server).await?;
    writer.push(&["MULTI"], None).await?;
    writer.push(&["SET", "d", "4"], None).await?;
    writer.push(&["NOSUCHCOMMAND", "k"], None).await?;
    let (command, key, reply) = rejected(writer.drain().await.expect_err("unknown command"));
    assert_eq!((command.as_str(), key.as_str()), ("NOSUCHCOMMAND", "k"));
    assert!(reply.starts_with("ERR"), "{reply}");

    // A plain command refused at once; a long key is cut in the message.
    let mut writer = self::writer(&server).await?;
    let long_key = "k".repeat(500);
    writer
        .push(&["SET", long_key.as_str(), "v"], at(40))
        .await?;
    writer
        .push(&["LPUSH", long_key.as_str(), "x"], at(50))
        .await?;
    let (command, key, _) = rejected(writer.drain().await.expect_err("WRONGTYPE"));
    assert_eq!(command, "LPUSH");
    assert!(long_key.starts_with(&key) && !key.is_empty() && key.len() < 100);
    assert_eq!(writer.applied(), at(40));
    Ok(())
}

#[tokio::test]
async fn a_discarded_transaction_leaves_nothing_behind() -> anyhow::Result<()> {
    let server = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let mut writer = writer(&server).await?;
    writer.push(&["MULTI"], None).await?;
    writer.push(&["SET", "gone", "1"], None).await?;
    writer.push(&["DISCARD"], None).await?;
    // A later transaction's error is still matched to the right command.
    writer.push(&["SET", "s", "x"], None).await?;
    writer.push(&["MULTI"], None).await?;
    writer.push(&["INCR", "s"], None).await?;
    writer.push(&["EXEC"], at(5)).await?;
    let (command, key, _) = rejected(writer.drain().await.expect_err("not an integer"));
    assert_eq!((command.as_str(), key.as_str()), ("INCR", "s"));
    let reply = self::writer(&server)
        .await?
        .query(&["EXISTS", "gone"])
        .await?;
    assert_eq!(reply, lockstep_sync::resp::Frame::Integer(0));
    Ok(())
}
