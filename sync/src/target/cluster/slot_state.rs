//! The cluster router's exactness bookkeeping per slot, as plain state without
//! I/O: where the stream is ([`StreamCursor`]), what each slot's checkpoint holds
//! and what was last written to it ([`SlotPositions`]), the open target
//! transaction's commands per slot ([`OpenTransaction`]), and which slots have had
//! a transaction since the last drain ([`DrainEpoch`]).
//!
//! The router's I/O code ([`super::ClusterTarget`]) asks these structs what to do
//! and tells them what it did; the seeded simulation (`sim.rs` beside this file)
//! drives the same structs against a simulated cluster.
//!
//! Invariants (asserted where state changes): the stream offset never moves
//! backwards; a slot's written checkpoint never moves backwards between the
//! resets a session makes on purpose (reading the checkpoints at its start, a new
//! full copy); a slot has at most one transaction between drains (so no later one
//! can pass a redirected one); a transaction is opened only when none is open.
//!
//! Never: do I/O; count a command skipped unless its slot's checkpoint holds it.

use bytes::Bytes;

use crate::slots::SLOTS;

/// The stream offset while nothing of the stream is being applied (the full copy).
pub(crate) const OUTSIDE_STREAM: i64 = i64::MAX;

/// Where the stream is: the offset after the command being applied (or
/// [`OUTSIDE_STREAM`]), the offset after the entry before it, and the source
/// database it runs in.
pub(crate) struct StreamCursor {
    pub offset: i64,
    pub previous: i64,
    pub source_db: u32,
}

impl Default for StreamCursor {
    fn default() -> StreamCursor {
        StreamCursor {
            offset: OUTSIDE_STREAM,
            previous: OUTSIDE_STREAM,
            source_db: 0,
        }
    }
}

impl StreamCursor {
    pub fn in_stream(&self) -> bool {
        self.offset != OUTSIDE_STREAM
    }

    /// The next command to apply ends at `offset`, in source database `source_db`.
    pub fn advance(&mut self, offset: i64, source_db: u32) {
        if self.in_stream() {
            debug_assert!(
                offset >= self.offset,
                "stream offset moved backwards: {} -> {offset}",
                self.offset
            );
            self.previous = self.offset;
        }
        self.offset = offset;
        self.source_db = source_db;
    }

    /// An entry that applies nothing reached `offset`: before the stream, that is
    /// where it starts (the entry before its first command).
    pub fn mark(&mut self, offset: i64) {
        if !self.in_stream() {
            self.previous = offset;
        }
    }
}

/// Per slot: the offset its checkpoint held when the session started (stream
/// commands at or below it are in that slot already and are skipped), and the
/// offset of the last checkpoint sent to it. `-1`: none.
pub(crate) struct SlotPositions {
    holds_through: Vec<i64>,
    written: Vec<i64>,
}

impl Default for SlotPositions {
    fn default() -> SlotPositions {
        SlotPositions {
            holds_through: vec![-1; SLOTS],
            written: vec![-1; SLOTS],
        }
    }
}

impl SlotPositions {
    /// Whether `slot` holds the effect of the stream command ending at `at`.
    pub fn holds(&self, slot: u16, at: i64) -> bool {
        at <= self.holds_through[usize::from(slot)]
    }

    pub fn holds_through(&self, slot: u16) -> i64 {
        self.holds_through[usize::from(slot)]
    }

    /// The checkpoint read from `slot` at a session's start (`None`: it has none).
    pub fn loaded(&mut self, slot: u16, offset: Option<i64>) {
        let at = usize::from(slot);
        match offset {
            Some(offset) => {
                self.holds_through[at] = offset;
                self.written[at] = offset;
            }
            None => self.holds_through[at] = -1,
        }
    }

    /// A new full copy: no slot holds anything of the stream, and every slot's
    /// checkpoint is written anew.
    pub fn start_copy(&mut self) {
        self.holds_through.iter_mut().for_each(|h| *h = -1);
        self.written.iter_mut().for_each(|w| *w = -1);
    }

    /// A checkpoint at `offset` was sent to `slot`.
    pub fn wrote(&mut self, slot: u16, offset: i64) {
        let written = &mut self.written[usize::from(slot)];
        // Invariant: a slot's checkpoint never moves backwards.
        assert!(
            *written <= offset,
            "slot {slot}'s checkpoint moved backwards: {written} -> {offset}"
        );
        *written = offset;
    }

    /// Whether `slot`'s last checkpoint is behind `offset`.
    pub fn lags(&self, slot: u16, offset: i64) -> bool {
        self.written[usize::from(slot)] < offset
    }

    /// Whether every slot owned by primary `index` holds the command ending at `at`
    /// (that primary has run it already).
    pub fn primary_holds(&self, owners: &[u16], index: usize, at: i64) -> bool {
        owners
            .iter()
            .zip(&self.holds_through)
            .filter(|(owner, _)| usize::from(**owner) == index)
            .all(|(_, held)| at <= *held)
    }
}

/// The commands of the open target transaction, per slot in stream order, and the
/// slots in the order they were first written.
pub(crate) struct OpenTransaction {
    open: bool,
    queued: Vec<Vec<Vec<Bytes>>>,
    slots: Vec<u16>,
}

impl Default for OpenTransaction {
    fn default() -> OpenTransaction {
        OpenTransaction {
            open: false,
            queued: vec![Vec::new(); SLOTS],
            slots: Vec::new(),
        }
    }
}

impl OpenTransaction {
    pub fn begin(&mut self) {
        // Invariant: one target transaction at a time.
        assert!(
            !self.open && self.slots.is_empty(),
            "a target transaction is already open"
        );
        self.open = true;
    }

    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Queues `argv` in `slot`'s transaction.
    pub fn queue(&mut self, slot: u16, argv: Vec<Bytes>) {
        debug_assert!(self.open, "a command queued with no transaction open");
        let at = usize::from(slot);
        if self.queued[at].is_empty() {
            self.slots.push(slot);
        }
        self.queued[at].push(argv);
    }

    /// Takes every slot's queued commands, in the order the slots were first
    /// written; the transaction stays open.
    pub fn take(&mut self) -> Vec<(u16, Vec<Vec<Bytes>>)> {
        std::mem::take(&mut self.slots)
            .into_iter()
            .map(|slot| (slot, std::mem::take(&mut self.queued[usize::from(slot)])))
            .collect()
    }

    /// Ends the transaction (its commands were taken, or are dropped).
    pub fn end(&mut self) {
        for slot in std::mem::take(&mut self.slots) {
            self.queued[usize::from(slot)].clear();
        }
        self.open = false;
    }
}

/// The slots that have had a transaction sent since the last drain.
pub(crate) struct DrainEpoch {
    transacted: Vec<bool>,
    slots: Vec<u16>,
}

impl Default for DrainEpoch {
    fn default() -> DrainEpoch {
        DrainEpoch {
            transacted: vec![false; SLOTS],
            slots: Vec::new(),
        }
    }
}

impl DrainEpoch {
    /// A transaction of `slot` is sent for the first time.
    pub fn transaction(&mut self, slot: u16) {
        let seen = &mut self.transacted[usize::from(slot)];
        // Invariant: one transaction per slot between drains.
        assert!(
            !*seen,
            "slot {slot} got a second transaction before a drain"
        );
        *seen = true;
        self.slots.push(slot);
    }

    /// Everything sent is answered and nothing waits to be sent again.
    pub fn drained(&mut self) {
        for slot in self.slots.drain(..) {
            self.transacted[usize::from(slot)] = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_remembers_the_entry_before_and_where_the_stream_starts() {
        let mut cursor = StreamCursor::default();
        assert!(!cursor.in_stream());
        cursor.mark(100);
        cursor.advance(120, 0);
        assert_eq!((cursor.previous, cursor.offset), (100, 120));
        cursor.mark(130); // in the stream: a mark does not move `previous`
        cursor.advance(150, 3);
        assert_eq!(
            (cursor.previous, cursor.offset, cursor.source_db),
            (120, 150, 3)
        );
    }

    #[test]
    fn a_slot_skips_what_its_checkpoint_holds_and_lags_behind_an_answered_offset() {
        let mut slots = SlotPositions::default();
        slots.loaded(5, Some(200));
        slots.loaded(6, None);
        assert!(slots.holds(5, 200) && !slots.holds(5, 201));
        assert!(!slots.holds(6, 0));
        assert!(!slots.lags(5, 200) && slots.lags(5, 201));
        slots.wrote(5, 300);
        assert!(!slots.lags(5, 250));
        let owners = {
            let mut owners = vec![1u16; SLOTS];
            owners[5] = 0;
            owners
        };
        assert!(slots.primary_holds(&owners, 0, 150));
        assert!(!slots.primary_holds(&owners, 1, 150));
        slots.start_copy();
        slots.wrote(5, 10); // a new copy may start lower
        assert!(!slots.holds(5, 0));
    }

    #[test]
    #[should_panic(expected = "moved backwards")]
    fn a_slot_checkpoint_that_moves_backwards_is_a_bug() {
        let mut slots = SlotPositions::default();
        slots.wrote(1, 300);
        slots.wrote(1, 299);
    }

    #[test]
    fn the_open_transaction_keeps_slot_order_and_stream_order_within_a_slot() {
        let mut txn = OpenTransaction::default();
        txn.begin();
        let cmd = |s: &'static str| vec![Bytes::from_static(s.as_bytes())];
        txn.queue(9, cmd("a"));
        txn.queue(2, cmd("b"));
        txn.queue(9, cmd("c"));
        let taken = txn.take();
        assert_eq!(
            taken,
            vec![(9, vec![cmd("a"), cmd("c")]), (2, vec![cmd("b")])]
        );
        assert!(txn.is_open());
        txn.end();
        txn.begin();
        txn.queue(1, cmd("d"));
        txn.end(); // a discard
        txn.begin();
        assert!(txn.take().is_empty());
    }

    #[test]
    #[should_panic(expected = "already open")]
    fn opening_a_second_transaction_is_a_bug() {
        let mut txn = OpenTransaction::default();
        txn.begin();
        txn.begin();
    }

    #[test]
    fn a_slot_gets_one_transaction_per_drain() {
        let mut epoch = DrainEpoch::default();
        epoch.transaction(3);
        epoch.transaction(4);
        epoch.drained();
        epoch.transaction(3);
        let second = std::panic::catch_unwind(move || epoch.transaction(3));
        assert!(second.is_err());
    }
}
