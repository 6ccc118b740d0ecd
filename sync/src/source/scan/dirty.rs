//! The keys that changed on the source and must be read again: the scan source's
//! one piece of shared state, between the subscription (which marks keys as its
//! notifications arrive) and the change reader (which takes them to read).
//!
//! # Why a key always ends at the source's last value
//! A notification is published by the source after the write it reports. A key is
//! taken off the set *before* its read is sent, so a write the read did not see
//! happened after the read ran, hence after the take, and its notification, which
//! arrives later still, marks the key again: the key is read once more. A write the
//! read did see may also mark it again (a notification delayed past the take): one
//! read too many, never one too few. So, once writes stop and the notifications
//! are in, the last read of every key ran after its last write. Reads of one key
//! are applied in the order they ran (one connection, one stream), so the target
//! ends at that last read. `tests::a_key_ends_at_its_last_value_in_any_order`
//! checks this over seeded random interleavings.
//!
//! # Limits
//! At most `limit` keys wait (a busy source during a long snapshot marks many); one
//! more means the set can no longer say what changed, so it records that it
//! [`overflowed`](DirtyKeys::overflowed), and the source is scanned again. A key is
//! kept once however often it changes.

use std::collections::{HashSet, VecDeque};

use bytes::Bytes;

/// A key of a database.
pub type DbKey = (u32, Bytes);

/// Keys to read again, in the order they first changed, each once.
#[derive(Debug)]
pub struct DirtyKeys {
    order: VecDeque<DbKey>,
    members: HashSet<DbKey>,
    limit: usize,
    overflowed: bool,
}

impl DirtyKeys {
    /// An empty set that holds at most `limit` keys.
    pub fn new(limit: usize) -> DirtyKeys {
        assert!(limit > 0, "a dirty set must hold at least one key");
        DirtyKeys {
            order: VecDeque::new(),
            members: HashSet::new(),
            limit,
            overflowed: false,
        }
    }

    /// Marks `key` of `db` as changed. Past the limit the key is not kept and the
    /// set records that it overflowed.
    pub fn mark(&mut self, db: u32, key: Bytes) {
        let entry = (db, key);
        if self.members.contains(&entry) {
            return;
        }
        if self.members.len() >= self.limit {
            self.overflowed = true;
            return;
        }
        self.members.insert(entry.clone());
        self.order.push_back(entry);
        debug_assert_eq!(self.members.len(), self.order.len());
    }

    /// Takes up to `most` keys, oldest first: from now on a change marks them again.
    pub fn take(&mut self, most: usize) -> Vec<DbKey> {
        let n = most.min(self.order.len());
        let taken: Vec<DbKey> = self.order.drain(..n).collect();
        for entry in &taken {
            self.members.remove(entry);
        }
        debug_assert_eq!(self.members.len(), self.order.len());
        taken
    }

    /// Keys waiting to be read.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// A change could not be kept: what changed is no longer known.
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_kept_once_and_taken_oldest_first() {
        let mut dirty = DirtyKeys::new(10);
        for key in ["a", "b", "a", "c", "b"] {
            dirty.mark(0, Bytes::from(key));
        }
        dirty.mark(1, Bytes::from("a"));
        assert_eq!(dirty.len(), 4);
        let taken = dirty.take(3);
        assert_eq!(
            taken,
            [
                (0, Bytes::from("a")),
                (0, Bytes::from("b")),
                (0, Bytes::from("c"))
            ]
        );
        // Taken keys are marked again by the next change.
        dirty.mark(0, Bytes::from("a"));
        assert_eq!(dirty.len(), 2);
        assert!(!dirty.overflowed());
    }

    #[test]
    fn past_the_limit_the_set_says_it_overflowed() {
        let mut dirty = DirtyKeys::new(2);
        dirty.mark(0, Bytes::from("a"));
        dirty.mark(0, Bytes::from("b"));
        dirty.mark(0, Bytes::from("a"));
        assert!(!dirty.overflowed(), "a key already kept costs nothing");
        dirty.mark(0, Bytes::from("c"));
        assert!(dirty.overflowed());
        assert_eq!(dirty.len(), 2);
    }

    /// A seeded simulation of one key written by clients, its notifications
    /// delivered late and in bursts, and the reader taking, reading and applying
    /// in whatever order the seed draws; the target must end at the source's last
    /// value every time.
    #[test]
    fn a_key_ends_at_its_last_value_in_any_order() {
        for seed in 0..2_000u64 {
            simulate(seed);
        }
    }

    fn simulate(seed: u64) {
        let mut rng = Lcg(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut dirty = DirtyKeys::new(16);
        let key = Bytes::from("k");
        let mut source = 0u64; // the key's value on the source
        let mut notifications: VecDeque<()> = VecDeque::new(); // published, not yet delivered
        let mut reads: VecDeque<u64> = VecDeque::new(); // read, not yet applied (in order)
        let mut target = 0u64;
        let mut taken_and_unread = false;
        let writes = 1 + rng.below(20);
        let mut written = 0;
        let mut steps = 0;
        loop {
            let done = written == writes
                && notifications.is_empty()
                && reads.is_empty()
                && !taken_and_unread
                && dirty.is_empty();
            if done {
                break;
            }
            steps += 1;
            assert!(steps < 1_000_000, "seed {seed}: the simulation must end");
            match rng.below(5) {
                0 if written < writes => {
                    written += 1;
                    source = written;
                    notifications.push_back(()); // published after the write
                }
                1 if !notifications.is_empty() => {
                    notifications.pop_front();
                    dirty.mark(0, key.clone());
                }
                2 if !taken_and_unread && !dirty.is_empty() => {
                    assert_eq!(dirty.take(8).len(), 1);
                    taken_and_unread = true;
                }
                3 if taken_and_unread => {
                    // The read runs on the source now, after the take.
                    reads.push_back(source);
                    taken_and_unread = false;
                }
                4 if !reads.is_empty() => {
                    target = reads.pop_front().expect("a read");
                }
                _ => {}
            }
        }
        assert_eq!(
            target, source,
            "seed {seed}: the target must end at the source's last value"
        );
    }

    /// A small deterministic generator (the simulation must replay from its seed).
    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) % n
        }
    }
}
