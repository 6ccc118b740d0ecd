//! The gate of a [`super::Conn`], as plain state without I/O: how many commands
//! already sent must be answered before what is buffered may go out.
//!
//! A standalone target opens each transaction with
//! [`super::Conn::hold_until_answered`]: the new transaction is encoded while the
//! last one executes and sent only once every earlier command is answered without
//! error, so a refused transaction is never followed by one that went through. The
//! connection first waits for an earlier gate to open, so there is **at most one
//! transaction in flight and one held** (asserted in [`Gate::hold`]).
//!
//! Never: open on an error reply (the connection fails instead, and what is held
//! is never sent); hold while an earlier gate is still shut.

/// See the module doc.
#[derive(Default, Debug)]
pub(crate) struct Gate {
    /// Commands sent that must be answered before the held bytes go out.
    waiting: usize,
}

impl Gate {
    /// Holds what is pushed from now on until the `in_flight` commands sent so far
    /// are answered. The caller has let an earlier gate open first.
    pub fn hold(&mut self, in_flight: usize) {
        // Invariant: at most one transaction in flight and one held.
        assert!(
            self.waiting == 0,
            "a transaction held while another is still held ({} replies awaited)",
            self.waiting
        );
        self.waiting = in_flight;
    }

    /// One reply arrived without error.
    pub fn answered(&mut self) {
        self.waiting = self.waiting.saturating_sub(1);
    }

    pub fn is_holding(&self) -> bool {
        self.waiting > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_opens_once_every_awaited_reply_is_in() {
        let mut gate = Gate::default();
        gate.hold(2);
        assert!(gate.is_holding());
        gate.answered();
        assert!(gate.is_holding());
        gate.answered();
        assert!(!gate.is_holding());
        gate.answered(); // replies after it opened change nothing
        gate.hold(0); // nothing in flight: open at once
        assert!(!gate.is_holding());
    }

    #[test]
    #[should_panic(expected = "still held")]
    fn holding_twice_is_a_bug() {
        let mut gate = Gate::default();
        gate.hold(3);
        gate.hold(1);
    }
}
