//! "Run this command line on this server": one Redis command in a line instead of a
//! `redis::cmd("X").arg(..).arg(..).query_async(&mut conn)` chain, with a typed reply
//! and an error that names the command (and the server, when it is known).
//!
//! Two ways in:
//! - [`Run`], on any async connection (a server's, a cluster's): the command runs on
//!   that connection, so a database it `SELECT`ed before stays selected.
//!   `conn.run::<i64>("INCR counter")`, `conn.run_args::<()>(("SET", key, value))`.
//! - [`RedisServer::run`] / [`RedisServer::run_args`]: on a fresh connection to that
//!   server (database 0), for the odd command; its error names the server too.
//!
//! A line is split on white space and has no quoting: a key or value with spaces,
//! binary bytes or a computed name goes through `run_args`, which takes anything
//! `redis::ToRedisArgs` takes (a tuple, a slice, bytes), command name first.
//! It must never retry, reconnect or swallow an error: a test sees exactly what the
//! server answered.

use std::future::Future;

use anyhow::Context;
use redis::aio::ConnectionLike;
use redis::{FromRedisValue, ToRedisArgs};

use crate::RedisServer;

/// The longest argument an error message shows whole; longer ones are cut.
const SHOWN_ARG_BYTES: usize = 40;

/// The command as it reads in a message: arguments
/// lossily decoded, long ones cut.
pub fn describe(command: &redis::Cmd) -> String {
    command
        .args_iter()
        .map(|arg| match arg {
            redis::Arg::Simple(bytes) => shown(bytes),
            _ => "<cursor>".to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn shown(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    if text.len() <= SHOWN_ARG_BYTES {
        return text.into_owned();
    }
    let mut end = SHOWN_ARG_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...({} bytes)", &text[..end], bytes.len())
}

/// The command of a line: its words, split on white space (no quoting).
pub fn line_command(line: &str) -> redis::Cmd {
    let mut command = redis::Cmd::new();
    for word in line.split_whitespace() {
        command.arg(word);
    }
    command
}

/// The command of `args`, command name first.
pub fn args_command(args: impl ToRedisArgs) -> redis::Cmd {
    let mut command = redis::Cmd::new();
    command.arg(args);
    command
}

/// Runs `command` on `conn` and converts the reply; the error names the command.
pub async fn query<T, C>(conn: &mut C, command: redis::Cmd) -> anyhow::Result<T>
where
    T: FromRedisValue,
    C: ConnectionLike + Send,
{
    command
        .query_async(conn)
        .await
        .map_err(|err| anyhow::anyhow!("`{}` failed: {err}", describe(&command)))
}

/// One command on a connection, as a line or as arguments (see the module doc).
pub trait Run: ConnectionLike + Send + Sized {
    /// Runs the command `line` (words split on white space), e.g. `"SET k v EX 10"`.
    fn run<T: FromRedisValue>(
        &mut self,
        line: &str,
    ) -> impl Future<Output = anyhow::Result<T>> + Send {
        query(self, line_command(line))
    }

    /// Runs the command of `args` (command name first), e.g. `("SET", key, value)`.
    fn run_args<T: FromRedisValue>(
        &mut self,
        args: impl ToRedisArgs,
    ) -> impl Future<Output = anyhow::Result<T>> + Send {
        query(self, args_command(args))
    }
}

impl<C: ConnectionLike + Send + Sized> Run for C {}

impl RedisServer {
    /// Runs the command `line` on a fresh connection to this server (database 0).
    pub async fn run<T: FromRedisValue>(&self, line: &str) -> anyhow::Result<T> {
        self.run_command(line_command(line)).await
    }

    /// Runs the command of `args` (command name first) on a fresh connection to this
    /// server (database 0).
    pub async fn run_args<T: FromRedisValue>(&self, args: impl ToRedisArgs) -> anyhow::Result<T> {
        self.run_command(args_command(args)).await
    }

    async fn run_command<T: FromRedisValue>(&self, command: redis::Cmd) -> anyhow::Result<T> {
        let on = || format!("on the Redis {} at port {}", self.version(), self.port());
        let mut conn = self.client().await.with_context(on)?;
        query(&mut conn, command).await.with_context(on)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_split_on_white_space() {
        assert_eq!(describe(&line_command("SET  k v\tEX 10")), "SET k v EX 10");
    }

    #[test]
    fn arguments_keep_their_bytes_and_long_ones_are_cut_in_messages() {
        let value = vec![b'x'; 100];
        let command = args_command(("SET", &b"k\xff"[..], &value[..]));
        let args: Vec<Vec<u8>> = command
            .args_iter()
            .map(|arg| match arg {
                redis::Arg::Simple(bytes) => bytes.to_vec(),
                _ => Vec::new(),
            })
            .collect();
        assert_eq!(args, [b"SET".to_vec(), b"k\xff".to_vec(), value]);
        let shown = describe(&command);
        assert!(shown.starts_with("SET k\u{fffd} xxxx"), "{shown}");
        assert!(shown.ends_with("...(100 bytes)"), "{shown}");
    }
}
