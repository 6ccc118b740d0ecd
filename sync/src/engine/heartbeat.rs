//! The heartbeat: a key the task writes on the source every interval, whose arrival
//! in the command stream measures end-to-end latency ([`super::Progress::lag_ms`]).
//!
//! The heartbeat key is never written to the target, and a source that refuses it
//! (a read-only account) switches it off with a warning: it never ends the sync.

use std::time::{Duration, Instant};

use crate::clock::unix_ms;
use crate::conn::Conn;
use crate::resp::Command;

use super::options::SyncOptions;

/// Keys whose name starts with this are lockstep's heartbeat keys on the source;
/// they are never written to the target.
pub const HEARTBEAT_PREFIX: &[u8] = b"LOCKSTEP_HEARTBEAT";

/// The heartbeat: a key on the source, rewritten every second with the time, whose
/// arrival in the stream measures end-to-end latency. Never written to the target.
pub(super) struct Heartbeat {
    connection: Conn,
    key: Vec<u8>,
    interval: Duration,
    /// Seconds the key lives (SETEX).
    ttl: String,
    last: Option<Instant>,
}

impl Heartbeat {
    /// The task's heartbeat key on the source.
    pub(super) fn key(options: &SyncOptions) -> Vec<u8> {
        let mut key = options.task_key(HEARTBEAT_PREFIX);
        key.extend_from_slice(format!(":{}", options.link.listening_port).as_bytes());
        if let Some(&(first, _)) = options.filter.source_slots.first() {
            // A shard's primary accepts only keys of its own slots.
            let tag = crate::slots::hash_tag_of_slot(first);
            key.extend_from_slice(format!(":{{{tag}}}").as_bytes());
        }
        key
    }

    pub(super) async fn connect(options: &SyncOptions) -> Option<Heartbeat> {
        let key = Heartbeat::key(options);
        let at = options.heartbeat_at.as_ref().unwrap_or(&options.source);
        match Conn::connect_to("source", at, options.source_connection()).await {
            Ok(connection) => Some(Heartbeat {
                connection,
                key,
                interval: options.heartbeat_interval,
                ttl: (options.heartbeat_interval.as_secs() * 3)
                    .max(60)
                    .to_string(),
                last: None,
            }),
            Err(err) => {
                tracing::warn!(
                    "heartbeat off: cannot open a second connection to the source: {err}"
                );
                None
            }
        }
    }

    /// Writes the heartbeat; false when the source refuses it (a read-only account):
    /// the heartbeat is then switched off with a warning, the sync goes on.
    pub(super) async fn beat(&mut self) -> bool {
        // The ACK tick calls every second; half a tick of slack keeps a 1 s interval
        // from skipping ticks that arrive a little early.
        let slack = Duration::from_millis(500);
        if self
            .last
            .is_some_and(|last| last.elapsed() + slack < self.interval)
        {
            return true;
        }
        self.last = Some(Instant::now());
        let now = unix_ms().to_string();
        let sent = async {
            self.connection.poll_replies().await?;
            self.connection
                .push(
                    &[
                        b"SETEX".as_slice(),
                        &self.key,
                        self.ttl.as_bytes(),
                        now.as_bytes(),
                    ],
                    None,
                )
                .await?;
            self.connection.flush().await
        };
        match sent.await {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!("heartbeat off: the source refused it ({err}); use --no-heartbeat for a read-only account");
                false
            }
        }
    }

    /// The send time in a heartbeat command as the stream carries it (SETEX key s v,
    /// or SET key v PXAT t after the source's rewrite).
    pub(super) fn sent_ms(command: &Command) -> Option<i64> {
        let value = if command.is("SETEX") {
            command.args().get(2)
        } else {
            command.args().get(1)
        };
        std::str::from_utf8(value?).ok()?.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn command(words: &[&str]) -> Command {
        Command {
            argv: words
                .iter()
                .map(|w| Bytes::copy_from_slice(w.as_bytes()))
                .collect(),
            wire_bytes: 0,
            inline: false,
        }
    }

    #[test]
    fn the_send_time_is_read_as_the_source_writes_or_rewrites_it() {
        let setex = command(&["SETEX", "LOCKSTEP_HEARTBEAT:t", "3", "1700000000123"]);
        assert_eq!(Heartbeat::sent_ms(&setex), Some(1_700_000_000_123));
        let rewritten = command(&["SET", "LOCKSTEP_HEARTBEAT:t", "1700000000123", "PXAT", "9"]);
        assert_eq!(Heartbeat::sent_ms(&rewritten), Some(1_700_000_000_123));
        // Not a time (someone else's key under the prefix): no lag figure, not zero.
        let other = command(&["SET", "LOCKSTEP_HEARTBEAT:t", "hello"]);
        assert_eq!(Heartbeat::sent_ms(&other), None);
        assert_eq!(Heartbeat::sent_ms(&command(&["SETEX", "k"])), None);
    }
}
