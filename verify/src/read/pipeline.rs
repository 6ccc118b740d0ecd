//! Pipelines whose error replies are values: a key retyped or deleted between two
//! reads answers an error that is a difference for the next round, while a failed
//! connection ends the run.

use redis::Value as Reply;

use crate::read::side::Conn;

/// Replies of one pipeline, one per command.
/// A pipeline that [`replies`] runs: error replies come back as values.
pub(crate) fn tolerant_pipe() -> redis::Pipeline {
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    pipe
}

/// Replies of one pipeline made by [`tolerant_pipe`], one per command. An error reply
/// (a key retyped between two reads: WRONGTYPE) becomes Nil, which differs from the
/// other side's reply and is read again in a later round; a failed connection is an
/// error.
pub(crate) async fn replies(mut conn: Conn, pipe: &redis::Pipeline) -> anyhow::Result<Vec<Reply>> {
    if pipe.is_empty() {
        return Ok(Vec::new());
    }
    let results: Vec<redis::RedisResult<Reply>> = pipe.query_async(&mut conn).await?;
    results
        .into_iter()
        .map(|r| match r {
            Ok(reply) => Ok(reply),
            Err(e) if e.is_io_error() || e.is_unrecoverable_error() => Err(e.into()),
            Err(_) => Ok(Reply::Nil),
        })
        .collect()
}

pub(crate) fn length_command(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "list" => "LLEN",
        "set" => "SCARD",
        "zset" => "ZCARD",
        "hash" => "HLEN",
        "stream" => "XLEN",
        _ => return None,
    })
}

/// An integer reply, or -1 for anything else (an error turned Nil, a missing reply).
pub(crate) fn as_int(reply: &Reply) -> i64 {
    match reply {
        Reply::Int(n) => *n,
        _ => -1,
    }
}
