//! What the cluster router has sent to one primary and not yet seen answered, as
//! plain state without I/O: the **units** (one command, or one slot's MULTI ...
//! EXEC) in the order sent, with the sequence numbers of their commands on the
//! primary's connection, and the redirections read back for them.
//!
//! The router's I/O code ([`super::ClusterTarget`]) pushes a unit's commands
//! through the primary's [`crate::conn::Conn`], records it here with
//! [`Unanswered::sent`], and after reading replies hands over the connection's
//! redirections and answered count to [`Unanswered::collect`], which gives back the
//! units to send again. The seeded simulation (`sync/src/target/cluster/sim.rs`)
//! drives the same struct against a simulated cluster.
//!
//! Invariants (asserted): units are recorded in the order sent, each one's
//! commands right after the previous unit's; a unit is forgotten only once every
//! one of its commands is answered; a redirection always belongs to a unit
//! recorded here (one that does not is a command sent outside the router, which
//! nothing can send again: an error).
//!
//! Never: do I/O; forget a unit that has an unanswered command.

use std::collections::VecDeque;

use bytes::Bytes;

/// Whether a unit is one command (or a few independent ones) or one slot's
/// transaction: ASKING lets the next command through, or a whole MULTI ... EXEC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UnitKind {
    Commands,
    Transaction,
}

/// What the router sends to a primary as a whole and sends again as a whole when
/// redirected.
#[derive(Clone, Debug)]
pub(crate) struct Unit {
    /// In the order units were made: failed units are sent again in this order.
    pub id: u64,
    /// The slot its keys are in; `None` for keyless commands (FLUSHALL...).
    pub slot: Option<u16>,
    pub kind: UnitKind,
    pub commands: Vec<Vec<Bytes>>,
    pub bytes: usize,
    /// Its commands' sequence numbers on the primary: `first..end` (set when sent).
    pub first: u64,
    pub end: u64,
}

impl Unit {
    /// A unit not sent yet; a transaction is one whose first command is MULTI.
    pub fn new(id: u64, slot: Option<u16>, commands: Vec<Vec<Bytes>>) -> Unit {
        let transaction = commands
            .first()
            .and_then(|c| c.first())
            .is_some_and(|name| name.eq_ignore_ascii_case(b"MULTI"));
        let bytes = commands
            .iter()
            .flat_map(|argv| argv.iter().map(Bytes::len))
            .sum();
        Unit {
            id,
            slot,
            kind: if transaction {
                UnitKind::Transaction
            } else {
                UnitKind::Commands
            },
            commands,
            bytes,
            first: 0,
            end: 0,
        }
    }

    /// Whether the command at `index` goes after its own ASKING when the unit is
    /// sent to an importing node: each of independent commands, only the MULTI of
    /// a transaction (the flag lasts through it).
    pub fn asking_before(&self, index: usize) -> bool {
        index == 0 || self.kind == UnitKind::Commands
    }

    /// How many commands sending it takes (with ASKING when `asking`).
    pub fn wire_len(&self, asking: bool) -> u64 {
        let asks = if asking {
            (0..self.commands.len())
                .filter(|&i| self.asking_before(i))
                .count()
        } else {
            0
        };
        (self.commands.len() + asks) as u64
    }
}

/// A unit a primary redirected, with the reply that says where to.
#[derive(Debug)]
pub(crate) struct Failed {
    pub unit: Unit,
    pub reply: String,
}

/// A redirection for a command the router did not send (a SCAN + UNLINK on the
/// primaries): nothing can send it again.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct StrayRedirection {
    pub reply: String,
}

/// The units sent to one primary and not wholly answered (see the module doc).
#[derive(Default)]
pub(crate) struct Unanswered {
    units: VecDeque<Unit>,
    bytes: usize,
    /// Redirections read whose unit is not wholly answered yet.
    redirections: VecDeque<(u64, String)>,
}

impl Unanswered {
    /// Records `unit`, whose commands took sequence numbers `first..end`.
    pub fn sent(&mut self, mut unit: Unit, first: u64, end: u64) {
        assert!(first <= end, "a unit ends before it starts: {first}..{end}");
        debug_assert!(
            self.units.back().is_none_or(|last| last.end <= first),
            "units recorded out of order"
        );
        unit.first = first;
        unit.end = end;
        self.bytes += unit.bytes;
        self.units.push_back(unit);
    }

    pub fn is_empty(&self) -> bool {
        self.units.is_empty()
    }

    /// Bytes of the units kept (what a redirected unit is sent again from).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Takes the connection's new `redirections` (sequence number, reply) and the
    /// count of commands it has `answered`: forgets the units wholly answered and
    /// returns those of them that were redirected, in the order sent.
    pub fn collect(
        &mut self,
        redirections: impl IntoIterator<Item = (u64, String)>,
        answered: u64,
    ) -> Result<Vec<Failed>, StrayRedirection> {
        self.redirections.extend(redirections);
        let mut failed = Vec::new();
        while self.units.front().is_some_and(|u| u.end <= answered) {
            let Some(unit) = self.units.pop_front() else {
                break;
            };
            self.bytes -= unit.bytes;
            if let Some(reply) = self.redirection_within(&unit) {
                failed.push(Failed { unit, reply });
            }
        }
        match self.redirections.front() {
            Some((sequence, reply)) if self.units.front().is_none_or(|u| u.first > *sequence) => {
                Err(StrayRedirection {
                    reply: reply.clone(),
                })
            }
            _ => Ok(failed),
        }
    }

    /// The first redirection of `unit`'s commands, removing all of them.
    fn redirection_within(&mut self, unit: &Unit) -> Option<String> {
        let mut reply = None;
        while let Some((sequence, message)) = self.redirections.front() {
            if *sequence >= unit.end {
                break;
            }
            if *sequence >= unit.first && reply.is_none() {
                reply = Some(message.clone());
            }
            self.redirections.pop_front();
        }
        reply
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(id: u64, commands: &[&[&'static str]]) -> Unit {
        let commands = commands
            .iter()
            .map(|c| c.iter().map(|w| Bytes::from_static(w.as_bytes())).collect())
            .collect();
        Unit::new(id, Some(7), commands)
    }

    #[test]
    fn a_transaction_asks_once_and_independent_commands_each() {
        let txn = unit(0, &[&["MULTI"], &["SET", "a", "1"], &["EXEC"]]);
        assert_eq!(txn.kind, UnitKind::Transaction);
        assert_eq!(txn.wire_len(true), 4);
        assert_eq!(txn.wire_len(false), 3);
        let pair = unit(1, &[&["SET", "k", "v"], &["DEL", "s"]]);
        assert_eq!(pair.kind, UnitKind::Commands);
        assert_eq!(pair.wire_len(true), 4);
        assert_eq!(pair.bytes, 3 + 1 + 1 + 3 + 1);
    }

    #[test]
    fn only_wholly_answered_units_go_and_redirected_ones_come_back() {
        let mut ledger = Unanswered::default();
        ledger.sent(unit(0, &[&["SET", "a", "1"]]), 0, 1);
        ledger.sent(unit(1, &[&["MULTI"], &["SET", "b", "1"], &["EXEC"]]), 1, 4);
        ledger.sent(unit(2, &[&["SET", "c", "1"]]), 4, 5);
        let bytes = ledger.bytes();
        // The transaction's queued SET was redirected (and its EXECABORT): nothing
        // comes back before its EXEC is answered.
        let failed = ledger
            .collect(
                [(2, "ASK 7 h:1".to_owned()), (3, "EXECABORT".to_owned())],
                2,
            )
            .expect("no stray redirection");
        assert!(failed.is_empty());
        assert_eq!(ledger.bytes(), bytes - 5);
        let failed = ledger.collect([], 4).expect("no stray redirection");
        assert_eq!(failed.len(), 1);
        assert_eq!(
            (failed[0].unit.id, failed[0].reply.as_str()),
            (1, "ASK 7 h:1")
        );
        assert!(ledger.collect([], 5).expect("answered").is_empty());
        assert!(ledger.is_empty());
        assert_eq!(ledger.bytes(), 0);
    }

    #[test]
    fn a_redirection_of_what_the_router_did_not_send_is_an_error() {
        let mut ledger = Unanswered::default();
        ledger.sent(unit(0, &[&["SET", "a", "1"]]), 3, 4);
        let stray = ledger.collect([(1, "MOVED 7 h:1".to_owned())], 2);
        assert_eq!(
            stray.map(|f| f.len()),
            Err(StrayRedirection {
                reply: "MOVED 7 h:1".to_owned()
            })
        );
    }
}
