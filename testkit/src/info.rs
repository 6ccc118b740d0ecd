//! Reading `INFO` and `CONFIG GET` answers: the measurements the testkit's
//! waits and the fault tests are judged by.
//!
//! Reads only: nothing here changes a server except [`config_set`], which a test
//! calls by name, and it must never retry or hide an error reply.

use std::collections::HashMap;

use anyhow::Context;
use redis::aio::MultiplexedConnection;

/// An `INFO` answer as field -> value.
#[derive(Clone, Debug, Default)]
pub struct Info(pub HashMap<String, String>);

impl Info {
    /// Parses the text of an `INFO` reply.
    pub fn parse(text: &str) -> Info {
        Info(
            text.lines()
                .filter(|line| !line.starts_with('#'))
                .filter_map(|line| line.trim_end().split_once(':'))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    }

    /// A field as text, if present.
    pub fn get(&self, field: &str) -> Option<&str> {
        self.0.get(field).map(String::as_str)
    }

    /// A field parsed as an integer; an error names the field when absent or not a number.
    pub fn int(&self, field: &str) -> anyhow::Result<i64> {
        let text = self
            .get(field)
            .with_context(|| format!("INFO has no field {field}"))?;
        text.parse()
            .with_context(|| format!("INFO field {field}={text} is not an integer"))
    }
}

/// Runs `INFO [section]` on a connection.
pub async fn info(conn: &mut MultiplexedConnection, section: &str) -> anyhow::Result<Info> {
    let mut cmd = redis::cmd("INFO");
    if !section.is_empty() {
        cmd.arg(section);
    }
    let text: String = cmd.query_async(conn).await.context("INFO")?;
    Ok(Info::parse(&text))
}

/// Runs `CONFIG GET name` and returns the value.
pub async fn config_get(conn: &mut MultiplexedConnection, name: &str) -> anyhow::Result<String> {
    let pairs: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg(name)
        .query_async(conn)
        .await
        .with_context(|| format!("CONFIG GET {name}"))?;
    pairs
        .get(1)
        .cloned()
        .with_context(|| format!("CONFIG GET {name}: no such parameter"))
}

/// Runs `CONFIG SET name value`.
pub async fn config_set(
    conn: &mut MultiplexedConnection,
    name: &str,
    value: &str,
) -> anyhow::Result<()> {
    redis::cmd("CONFIG")
        .arg("SET")
        .arg(name)
        .arg(value)
        .query_async::<()>(conn)
        .await
        .with_context(|| format!("CONFIG SET {name} {value}"))
}
